//! `fhirvault reindex` on real databases: index rows an earlier version did not write come back
//! (the real binary, against a stopped server's database), searches find the resources again, a
//! second run changes nothing; a resource written while its batch was prepared keeps the rows of
//! its own write, also when the server updates and deletes throughout a run (a second process,
//! for SQLite).

use fhirvault::config::{Config, DatabaseUrl};
use fhirvault::service::Service;
use fhirvault::service::reindex::{BATCH_SIZE, HeldHeads};
use serde_json::{Value, json};
use sqlx::{AnyConnection, AssertSqlSafe, Connection, Row};

use crate::audit_chain::{connect, fhirvault};
use crate::common::{Backend, TestServer};

both_backends!(
    reindex_restores_rows_an_earlier_version_did_not_write,
    a_write_during_a_batch_keeps_its_own_rows,
    reindex_while_the_server_writes,
    composite_rows_stored_without_their_codings_still_match,
);

const MR: &str = "http://terminology.hl7.org/CodeSystem/v2-0203|MR";
const GENDER: &str = "http://hl7.org/fhir/administrative-gender";
/// PHI that must never show in the command's output.
const FAMILY: &str = "Reindexmann";
const MRN: &str = "MRN-REINDEX-4711";

fn patient(mrn: &str, gender: &str) -> Value {
    json!({
        "resourceType": "Patient",
        "name": [{"family": FAMILY, "given": ["Ida"]}],
        "gender": gender,
        "identifier": [{
            "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]},
            "system": "urn:oid:1.2.40.0.10.1.4.3.1",
            "value": mrn
        }]
    })
}

/// Rows per index table, consent rules, and heads that have a compartment: what a re-index
/// computes, counted.
async fn row_counts(conn: &mut AnyConnection) -> Vec<(String, i64)> {
    let mut counts = Vec::new();
    for table in fhirvault::store::index::TABLES
        .into_iter()
        .chain([fhirvault::store::index::CONSENT_TABLE])
    {
        let count: i64 = sqlx::query(AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
            .fetch_one(&mut *conn)
            .await
            .expect("count")
            .get(0);
        counts.push((table.to_string(), count));
    }
    let compartments: i64 =
        sqlx::query("SELECT COUNT(*) FROM resource_heads WHERE compartment IS NOT NULL")
            .fetch_one(&mut *conn)
            .await
            .expect("count")
            .get(0);
    counts.push(("compartments".into(), compartments));
    counts
}

async fn execute(conn: &mut AnyConnection, sql: &str) -> u64 {
    sqlx::query(AssertSqlSafe(sql.to_string()))
        .execute(&mut *conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .rows_affected()
}

/// The line of `stdout` about `resource_type`.
pub(crate) fn line_of<'a>(stdout: &'a str, resource_type: &str) -> &'a str {
    stdout
        .lines()
        .find(|line| line.starts_with(&format!("{resource_type}: ")))
        .unwrap_or_else(|| panic!("no line for {resource_type}: {stdout}"))
}

async fn reindex_restores_rows_an_earlier_version_did_not_write(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (id, _) = server.create(&patient(MRN, "female")).await;
    for i in 0..3 {
        server
            .create(&patient(&format!("MRN-OTHER-{i}"), "male"))
            .await;
    }
    let (observation, _) = server
        .create(&json!({
            "resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
            "subject": {"reference": format!("Patient/{id}")}
        }))
        .await;
    let of_type = format!("Patient?identifier:of-type={MR}|{MRN}");
    let female = format!("Patient?gender={GENDER}|female");
    assert_eq!(server.search_ids(&of_type).await, [id.as_str()]);
    let (dir, database) = server.stop().await;

    // What the server wrote, then rows taken away as if an earlier version had never written
    // them: the `:of-type` tokens, gender tokens, an Observation's compartment.
    let mut conn = connect(&database).await;
    let written = row_counts(&mut conn).await;
    let removed = execute(
        &mut conn,
        "DELETE FROM search_blind WHERE resource_type = 'Patient' AND param = 'identifier:of-type'",
    )
    .await;
    assert!(removed >= 4, "of-type rows removed: {removed}");
    execute(
        &mut conn,
        "DELETE FROM search_token WHERE resource_type = 'Patient' AND param = 'gender'",
    )
    .await;
    execute(
        &mut conn,
        "UPDATE resource_heads SET compartment = NULL WHERE resource_type = 'Observation'",
    )
    .await;
    assert_ne!(row_counts(&mut conn).await, written);

    // Only the types asked for.
    let (code, stdout, stderr) =
        fhirvault(dir.path(), &database, &["reindex", "--type", "Observation"]);
    assert_eq!(code, 0, "{stdout} {stderr}");
    assert!(
        line_of(&stdout, "Observation").starts_with("Observation: 1 re-indexed")
            && line_of(&stdout, "Observation").contains("1 compartments changed"),
        "{stdout}"
    );
    assert!(!stdout.contains("Patient:"), "{stdout}");
    let compartment: Option<String> = sqlx::query(
        "SELECT compartment FROM resource_heads WHERE resource_type = 'Observation' AND id = $1",
    )
    .bind(&observation)
    .fetch_one(&mut conn)
    .await
    .expect("head")
    .get(0);
    assert_eq!(compartment.as_deref(), Some(id.as_str()));

    // Everything: the rows are the server's own again.
    let (code, stdout, stderr) = fhirvault(dir.path(), &database, &["reindex"]);
    assert_eq!(code, 0, "{stdout} {stderr}");
    assert!(
        line_of(&stdout, "Patient").starts_with("Patient: 4 re-indexed, 0 changed meanwhile"),
        "{stdout}"
    );
    assert!(
        line_of(&stdout, "AuditEvent").contains("re-indexed"),
        "{stdout}"
    );
    assert!(stdout.contains("total: "), "{stdout}");
    for phi in [FAMILY, MRN] {
        assert!(
            !stdout.contains(phi) && !stderr.contains(phi),
            "PHI in the output: {stdout} {stderr}"
        );
    }
    assert_eq!(row_counts(&mut conn).await, written);

    // A second run finds nothing to change.
    let (code, again, stderr) = fhirvault(dir.path(), &database, &["reindex"]);
    assert_eq!(code, 0, "{again} {stderr}");
    assert_eq!(row_counts(&mut conn).await, written);
    for line in again.lines() {
        let rows = line
            .split("index rows ")
            .nth(1)
            .unwrap_or_else(|| panic!("{line}"));
        let (before, after) = rows.split_once(" -> ").expect("before -> after");
        let after = after.split(',').next().unwrap_or_default();
        assert_eq!(before, after, "{line}");
    }

    // Without the key ring the rows were written with, nothing runs (a new ring would make
    // blind tokens no search finds).
    let elsewhere = tempfile::tempdir().expect("temp dir");
    let (code, _, stderr) = fhirvault(elsewhere.path(), &database, &["reindex"]);
    assert_ne!(code, 0);
    assert!(stderr.contains("no key file"), "{stderr}");
    assert!(!elsewhere.path().join("keys.json").exists());

    // A type the server does not serve is refused, and nothing runs.
    let (code, _, stderr) = fhirvault(dir.path(), &database, &["reindex", "--type", "Nonsense"]);
    assert_ne!(code, 0);
    assert!(stderr.contains("Nonsense"), "{stderr}");
    conn.close().await.expect("closed");

    let server = TestServer::start_with(backend, dir, database, |_| {}).await;
    assert_eq!(server.search_ids(&of_type).await, [id.as_str()]);
    assert!(server.search_ids(&female).await.contains(&id));
    assert_eq!(
        server
            .search_ids(&format!("Observation?patient=Patient/{id}"))
            .await,
        [observation.as_str()]
    );
    let everything = server.get(&format!("Patient/{id}/$everything")).await;
    assert!(
        everything.text.contains(&observation),
        "{}",
        everything.text
    );
}

/// Composite rows stored before migration 0012 have a key without the coding's system as well,
/// and no entry in `composite_codes`: a search by code alone still finds them, and a re-index
/// replaces them with the rows and entry of today.
async fn composite_rows_stored_without_their_codings_still_match(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (observation, _) = server
        .create(&json!({
            "resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
            "valueQuantity": {"value": 72, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"}
        }))
        .await;
    let by_code = "Observation?code-value-quantity=8867-4$gt70";
    let by_coding = "Observation?code-value-quantity=http://loinc.org|8867-4$gt70";
    assert_eq!(server.search_ids(by_code).await, [observation.as_str()]);
    let (dir, database) = server.stop().await;

    // As an earlier version stored it: a second row without the system, no coding entry.
    let with_system = "code-value-quantity\u{1f}http://loinc.org\u{1f}8867-4";
    let without_system = "code-value-quantity\u{1f}8867-4";
    let mut conn = connect(&database).await;
    assert_eq!(execute(&mut conn, "DELETE FROM composite_codes").await, 1);
    let copied = sqlx::query(
        "INSERT INTO search_number (resource_type, param, low, high, system, code, id) \
         SELECT resource_type, $1, low, high, system, code, id FROM search_number WHERE param = $2",
    )
    .bind(without_system)
    .bind(with_system)
    .execute(&mut conn)
    .await
    .expect("legacy row")
    .rows_affected();
    assert_eq!(copied, 1);
    conn.close().await.expect("closed");

    let server = TestServer::start_with(backend, dir, database.clone(), |_| {}).await;
    assert_eq!(server.search_ids(by_code).await, [observation.as_str()]);
    assert_eq!(server.search_ids(by_coding).await, [observation.as_str()]);
    let (dir, database) = server.stop().await;

    let (code, stdout, stderr) =
        fhirvault(dir.path(), &database, &["reindex", "--type", "Observation"]);
    assert_eq!(code, 0, "{stdout} {stderr}");
    let mut conn = connect(&database).await;
    let legacy: i64 = sqlx::query("SELECT COUNT(*) FROM search_number WHERE param = $1")
        .bind(without_system)
        .fetch_one(&mut conn)
        .await
        .expect("count")
        .get(0);
    assert_eq!(legacy, 0, "the row without a system is gone");
    let codings: i64 = sqlx::query(
        "SELECT COUNT(*) FROM composite_codes WHERE param = 'code-value-quantity' AND code = '8867-4' AND system = 'http://loinc.org'",
    )
    .fetch_one(&mut conn)
    .await
    .expect("count")
    .get(0);
    assert_eq!(codings, 1);
    conn.close().await.expect("closed");

    let server = TestServer::start_with(backend, dir, database, |_| {}).await;
    assert_eq!(server.search_ids(by_code).await, [observation.as_str()]);
    assert!(
        server
            .search_ids("Observation?code-value-quantity=8867-4$lt70")
            .await
            .is_empty()
    );
}

pub(crate) async fn open(dir: &std::path::Path, database: &DatabaseUrl) -> Service {
    let config = Config::for_dir(dir, Some(database.clone()));
    fhirvault::server::open_service(config, None)
        .await
        .expect("service opens")
}

/// A batch reads a Patient; the server updates it before the batch commits. The batch must leave
/// it alone: its old gender must not be findable again.
async fn a_write_during_a_batch_keeps_its_own_rows(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (changing, _) = server.create(&patient("MRN-CHANGING", "female")).await;
    let (steady, _) = server.create(&patient("MRN-STEADY", "female")).await;
    // A second service on the same database: another process, for SQLite.
    let reindexer = open(server.dir.path(), &server.database).await;

    let batch = reindexer
        .read_reindex_page("Patient", "", BATCH_SIZE)
        .await
        .expect("batch read");
    assert_eq!(batch.len(), 2);
    let mut update = patient("MRN-CHANGING", "male");
    update["id"] = json!(changing);
    assert!(
        server
            .put(&format!("Patient/{changing}"), &update)
            .await
            .status
            .is_success()
    );
    let outcome = reindexer
        .commit_reindex_batch(&batch, HeldHeads::Skip)
        .await
        .expect("batch written");
    let female = server
        .search_ids(&format!("Patient?gender={GENDER}|female"))
        .await;
    assert_eq!(female, [steady.as_str()], "no stale row of the old version");
    let male = server
        .search_ids(&format!("Patient?gender={GENDER}|male"))
        .await;
    assert_eq!(male, [changing.as_str()]);
    assert_eq!(
        (
            outcome.counts.reindexed,
            outcome.counts.changed_meanwhile,
            outcome.held.len()
        ),
        (1, 1, 0)
    );
    assert_eq!(
        outcome.counts.rows_before, outcome.counts.rows_after,
        "the steady Patient's rows are the same"
    );

    // PostgreSQL: a head a client's transaction holds is skipped, not waited for, and named.
    if backend == Backend::Postgres {
        let mut client = connect(&server.database).await;
        let mut transaction = client.begin().await.expect("begin");
        sqlx::query(
            "SELECT version FROM resource_heads WHERE resource_type = 'Patient' AND id = $1 FOR UPDATE",
        )
        .bind(&steady)
        .fetch_one(&mut *transaction)
        .await
        .expect("head locked");
        let batch = reindexer
            .read_reindex_page("Patient", "", BATCH_SIZE)
            .await
            .expect("batch read");
        let outcome = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            reindexer.commit_reindex_batch(&batch, HeldHeads::Skip),
        )
        .await
        .expect("the batch does not wait for the held head")
        .expect("batch written");
        assert_eq!(outcome.held, [steady.as_str()]);
        assert_eq!(outcome.counts.reindexed, 1);
        transaction.rollback().await.expect("rollback");
    }

    // A whole run: both current, rows unchanged (idempotent).
    let summary = reindexer
        .reindex(&["Patient".to_string()], |_| {})
        .await
        .expect("reindex");
    let total = summary.total();
    assert_eq!((total.reindexed, total.changed_meanwhile), (2, 0));
    assert_eq!(total.rows_before, total.rows_after);
    reindexer.store.close().await;
}

/// Every index row of the Patients, as text, sorted: what a re-index must leave as it found it
/// when nothing changed in between.
async fn patient_rows(conn: &mut AnyConnection) -> Vec<String> {
    let text = |column: &str| format!("COALESCE(CAST({column} AS TEXT), '')");
    let tables: [(&str, &[&str]); 8] = [
        ("search_token", &["param", "system", "code"]),
        ("search_string", &["param", "normalized", "exact"]),
        (
            "search_reference",
            &["param", "target_type", "target_id", "target_version", "url"],
        ),
        ("search_date", &["param", "start_us", "end_us"]),
        ("search_number", &["param", "low", "high", "system", "code"]),
        ("search_uri", &["param", "value"]),
        ("search_blind", &["param", "token"]),
        ("resource_heads", &["version", "deleted", "compartment"]),
    ];
    let mut rows = Vec::new();
    for (table, columns) in tables {
        let fields: Vec<String> = columns.iter().map(|c| text(c)).collect();
        let sql = format!(
            "SELECT '{table}' || '|' || id || '|' || {} FROM {table} WHERE resource_type = 'Patient'",
            fields.join(" || '|' || ")
        );
        for row in sqlx::query(AssertSqlSafe(sql))
            .fetch_all(&mut *conn)
            .await
            .expect("rows")
        {
            rows.push(row.get::<String, _>(0));
        }
    }
    rows.sort();
    rows
}

/// A re-index of three batches while the server updates and deletes some of the Patients it
/// covers: afterwards every Patient has the rows of its current version (a quiet second run
/// finds nothing to change), updated ones are found by their new gender only, and deleted ones
/// have no rows at all.
async fn reindex_while_the_server_writes(backend: Backend) {
    let server = TestServer::start(backend).await;
    let reindexer = open(server.dir.path(), &server.database).await;
    let ids: Vec<String> = (0..2 * BATCH_SIZE + 100)
        .map(|i| format!("busy-{i:04}"))
        .collect();
    for chunk in ids.chunks(BATCH_SIZE) {
        let lines = chunk
            .iter()
            .map(|id| {
                let mut body = patient(&format!("MRN-{id}"), "female");
                body["id"] = json!(id);
                (id.clone(), Ok(body))
            })
            .collect();
        let (imported, _) = reindexer.import_batch(lines).await.expect("imported");
        assert_eq!(imported.rejected, 0);
    }
    let updated: Vec<&String> = ids.iter().step_by(7).collect();
    let deleted: Vec<&String> = ids
        .iter()
        .skip(3)
        .step_by(11)
        .filter(|id| !updated.contains(id))
        .collect();
    let writes = async {
        for (i, id) in updated.iter().enumerate() {
            let mut body = patient(&format!("MRN-{id}"), "male");
            body["id"] = json!(id);
            let reply = server.put(&format!("Patient/{id}"), &body).await;
            assert!(reply.status.is_success(), "{}", reply.text);
            if let Some(id) = deleted.get(i) {
                let reply = server.delete(&format!("Patient/{id}")).await;
                assert!(reply.status.is_success(), "{}", reply.text);
            }
        }
    };
    let patients = ["Patient".to_string()];
    let (summary, ()) = tokio::join!(reindexer.reindex(&patients, |_| {}), writes);
    let summary = summary.expect("reindex");
    let total = summary.total();
    assert!(
        total.reindexed + total.changed_meanwhile >= (ids.len() - deleted.len()) as u64,
        "{total:?}"
    );

    let mut conn = connect(&server.database).await;
    let settled = patient_rows(&mut conn).await;
    let again = reindexer.reindex(&patients, |_| {}).await.expect("reindex");
    assert_eq!(again.total().changed_meanwhile, 0);
    assert_eq!(
        patient_rows(&mut conn).await,
        settled,
        "the concurrent run left rows of a version that was no longer current"
    );
    let deleted_rows: Vec<&String> = settled
        .iter()
        .filter(|row| !row.starts_with("resource_heads|"))
        .filter(|row| deleted.iter().any(|id| row.contains(&format!("|{id}|"))))
        .collect();
    assert!(
        deleted_rows.is_empty(),
        "index rows of deleted Patients: {:?}",
        &deleted_rows[..deleted_rows.len().min(5)]
    );
    let mut found = server
        .search_ids(&format!("Patient?gender={GENDER}|male&_count=1000"))
        .await;
    let mut expected: Vec<String> = updated
        .iter()
        .filter(|id| !deleted.contains(id))
        .map(|id| id.to_string())
        .collect();
    found.sort();
    expected.sort();
    assert_eq!(found, expected);
    conn.close().await.expect("closed");
    reindexer.store.close().await;
}
