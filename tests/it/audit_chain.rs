//! The audit trail's core on real databases: AuditEvents appended over several chains (also by
//! concurrent tasks) verify with `fhirvault audit verify`; tampering with the database is found
//! and located; pruning exports the old prefix of each chain and leaves the chains verifiable;
//! the spool takes AuditEvents while the database refuses them, holds no plaintext, and drains.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use fhirvault::audit::{AuditRecord, Entity, Event, Outcome, RestInteraction, append};
use fhirvault::auth::{Caller, Role};
use fhirvault::config::{Config, DatabaseUrl, OnWriteFailure};
use fhirvault::service::Service;
use reqwest::StatusCode;
use serde_json::Value;
use sqlx::{AnyConnection, AssertSqlSafe, Connection, Row};

use crate::common::{Backend, TestServer, fresh_store, match_ids};

const BIN: &str = env!("CARGO_BIN_EXE_fhirvault");
/// Put into query entities; must never appear in plain text on disk.
const MARKER: &str = "name=Zebulon-Quixotic-7781";
/// 2015-06-01T00:00:00Z.
const OLD: i64 = 1_433_116_800_000_000;

both_backends!(
    chains_verify_and_tampering_is_located,
    audit_events_are_found_by_patient_and_other_parameters,
    prune_exports_the_old_prefix_of_each_chain,
    the_spool_holds_audit_events_while_the_database_refuses_them,
);

fn clinician() -> Arc<Caller> {
    Arc::new(Caller {
        subject: "dr-huber".into(),
        issuer: "https://idp.example/realms/clinic".into(),
        client_id: Some("ehr-app".into()),
        role: Role::Clinician,
        scopes: fhirvault::auth::scope::parse_scopes("user/*.rs").expect("scopes"),
        patient: None,
        org: Some("org-a".into()),
        purpose: Some("TREAT".into()),
        consent: None,
        break_glass: false,
        address: Some("127.0.0.1".into()),
    })
}

fn record(recorded: i64, interaction: RestInteraction, entities: Vec<Entity>) -> AuditRecord {
    AuditRecord {
        recorded,
        event: Event::Rest(interaction),
        outcome: Outcome::Success,
        outcome_desc: None,
        caller: Some(clinician()),
        address: Some("127.0.0.1".into()),
        purpose: vec!["TREAT".into()],
        break_glass: false,
        entities,
    }
}

/// `n` searches, each with the marker in its query entity.
fn searches(n: usize, recorded: i64) -> Vec<AuditRecord> {
    let query = Entity::Query {
        query: MARKER.into(),
        resource_type: Some("Patient".into()),
    };
    (0..n)
        .map(|_| record(recorded, RestInteraction::SearchType, vec![query.clone()]))
        .collect()
}

async fn open(dir: &Path, database: &DatabaseUrl, tweak: impl FnOnce(&mut Config)) -> Service {
    let mut config = Config::for_dir(dir, Some(database.clone()));
    tweak(&mut config);
    fhirvault::server::open_service(config, None)
        .await
        .expect("service opens")
}

/// Append `records` inside a write transaction of their own; their AuditEvent ids.
async fn append_alone(service: &Service, records: Vec<AuditRecord>) -> Vec<String> {
    let this = service.clone();
    service
        .write(move |conn| Box::pin(async move { append(&this, conn, &records).await }))
        .await
        .expect("append")
}

/// Run `fhirvault` on `database` with the key file of `dir`: (exit code, stdout, stderr).
pub(crate) fn fhirvault(
    dir: &Path,
    database: &DatabaseUrl,
    args: &[&str],
) -> (i32, String, String) {
    let url = match database {
        DatabaseUrl::Sqlite(path) => format!("sqlite:{}", path.display()),
        DatabaseUrl::Postgres(url) => url.clone(),
    };
    let key_file = dir.join("keys.json");
    let out = Command::new(BIN)
        .current_dir(dir)
        .env(
            "FHIRVAULT_FHIR_RESOURCES",
            concat!(env!("CARGO_MANIFEST_DIR"), "/fhir-resources"),
        )
        .env_remove("FHIRVAULT_KEY_RING")
        .args([
            "--data-dir",
            &dir.display().to_string(),
            "--database-url",
            &url,
            "--key-file",
            &key_file.display().to_string(),
        ])
        .args(args)
        .output()
        .expect("run fhirvault");
    let code = out.status.code().unwrap_or(-1);
    (
        code,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub(crate) async fn connect(database: &DatabaseUrl) -> AnyConnection {
    sqlx::any::install_default_drivers();
    let url = match database {
        DatabaseUrl::Sqlite(path) => format!("sqlite://{}", path.display()),
        DatabaseUrl::Postgres(url) => url.clone(),
    };
    AnyConnection::connect(&url).await.expect("connect")
}

/// The `postgres` database of the cluster `url` points into, and the database name.
fn cluster_admin(url: &str) -> (String, String) {
    let (base, name) = url.rsplit_once('/').expect("database url");
    (format!("{base}/postgres"), name.to_string())
}

/// A copy of `database` (closed by everyone) to tamper with.
async fn copy_of(database: &DatabaseUrl, into: &Path, n: usize) -> DatabaseUrl {
    match database {
        DatabaseUrl::Sqlite(path) => {
            let copy = into.join(format!("copy-{n}.db"));
            std::fs::copy(path, &copy).expect("copy the database file");
            DatabaseUrl::Sqlite(copy)
        }
        DatabaseUrl::Postgres(url) => {
            let (admin, name) = cluster_admin(url);
            let mut conn = connect(&DatabaseUrl::Postgres(admin)).await;
            let copy = format!("{name}_copy{n}");
            // The template must have no sessions; the service's pool may take a moment to go.
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let created = sqlx::query(AssertSqlSafe(format!(
                    "CREATE DATABASE {copy} TEMPLATE {name}"
                )))
                .execute(&mut conn)
                .await;
                match created {
                    Ok(_) => break,
                    Err(error) if Instant::now() < deadline => {
                        eprintln!("waiting to copy the database: {error}");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    Err(error) => panic!("copying the database: {error}"),
                }
            }
            DatabaseUrl::Postgres(format!("{}/{copy}", url.rsplit_once('/').expect("url").0))
        }
    }
}

/// Everything the database holds on disk, as text (SQLite file and WAL, or a pg_dump).
fn raw_dump(database: &DatabaseUrl) -> String {
    match database {
        DatabaseUrl::Sqlite(path) => {
            let mut bytes = Vec::new();
            for suffix in ["", "-wal", "-shm"] {
                bytes.extend(
                    std::fs::read(format!("{}{suffix}", path.display())).unwrap_or_default(),
                );
            }
            String::from_utf8_lossy(&bytes).into_owned()
        }
        DatabaseUrl::Postgres(url) => crate::common::postgres::dump(url),
    }
}

fn assert_no_marker(what: &str, text: &str) {
    let encoded = base64::engine::general_purpose::STANDARD.encode(MARKER);
    assert!(
        !text.contains("Zebulon-Quixotic"),
        "the query marker is in plain text in {what}"
    );
    assert!(
        !text.contains(&encoded),
        "the query marker is in {what}, base64-encoded"
    );
}

/// The links of every chain: (chain, seq, id), in chain and seq order.
async fn links(conn: &mut AnyConnection) -> Vec<(i64, i64, String)> {
    let rows = sqlx::query("SELECT chain, seq, id FROM audit_chain ORDER BY chain, seq")
        .fetch_all(&mut *conn)
        .await
        .expect("links");
    rows.iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect()
}

async fn chains_verify_and_tampering_is_located(backend: Backend) {
    let (dir, database) = fresh_store(backend).await;
    let service = open(dir.path(), &database, |config| config.audit.chains = 4).await;

    // Reads audit in transactions of their own, writes inside theirs; all at once.
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let service = service.clone();
        tasks.spawn(async move {
            for i in 0..10 {
                let patient = Entity::Patient {
                    id: format!("p-{i}"),
                };
                let resource = Entity::Resource {
                    reference: format!("Observation/o-{i}"),
                };
                let mut batch = searches(2, fhirvault::fhir::instant::now_micros());
                batch.push(record(
                    fhirvault::fhir::instant::now_micros(),
                    RestInteraction::Read,
                    vec![resource, patient],
                ));
                batch.push(record(
                    fhirvault::fhir::instant::now_micros(),
                    RestInteraction::Vread,
                    Vec::new(),
                ));
                service.audit(batch).await.expect("audit");
            }
        });
    }
    for _ in 0..4 {
        let service = service.clone();
        tasks.spawn(async move {
            for _ in 0..5 {
                let records: Vec<AuditRecord> = (0..3)
                    .map(|_| {
                        record(
                            fhirvault::fhir::instant::now_micros(),
                            RestInteraction::Create,
                            Vec::new(),
                        )
                    })
                    .collect();
                assert_eq!(append_alone(&service, records).await.len(), 3);
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("task");
    }
    service.store.close().await;
    let total = 8 * 10 * 4 + 4 * 5 * 3;

    let (code, stdout, stderr) = fhirvault(dir.path(), &database, &["audit", "verify"]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!("4 chains, {total} links checked, 0 broken")),
        "{stdout}"
    );
    assert_eq!(
        stdout.matches(": intact, ").count(),
        4,
        "every chain has links: {stdout}"
    );
    assert!(!stdout.contains("no chain"), "{stdout}");

    let mut conn = connect(&database).await;
    let all = links(&mut conn).await;
    assert_eq!(all.len(), total);
    for chain in 0..4 {
        let seqs: Vec<i64> = all
            .iter()
            .filter(|(c, _, _)| *c == chain)
            .map(|(_, seq, _)| *seq)
            .collect();
        assert_eq!(
            seqs,
            (1..=seqs.len() as i64).collect::<Vec<_>>(),
            "chain {chain} counts from 1 without gaps"
        );
    }
    conn.close().await.expect("close");
    assert_no_marker("the database", &raw_dump(&database));

    // Each tampering on its own copy; verify names the chain and seq.
    let (chain, seq) = (1_i64, 3_i64);
    let id = all
        .iter()
        .find(|(c, s, _)| (*c, *s) == (chain, seq))
        .map(|(_, _, id)| id.clone())
        .expect("link 1/3");
    let last_seq = all
        .iter()
        .filter(|(c, _, _)| *c == 2)
        .map(|(_, s, _)| *s)
        .max()
        .expect("chain 2 has links");
    let cases: [(&str, String, i64, &str); 5] = [
        (
            "ciphertext",
            format!(
                "UPDATE resource_versions SET ciphertext = $1 WHERE resource_type = 'AuditEvent' AND id = '{id}' AND version = 1"
            ),
            seq,
            "cannot decrypt",
        ),
        (
            "link deleted",
            format!("DELETE FROM audit_chain WHERE chain = {chain} AND seq = {seq}"),
            seq,
            "gap",
        ),
        (
            "link hash",
            format!("UPDATE audit_chain SET hash = $1 WHERE chain = {chain} AND seq = {seq}"),
            seq,
            "hash mismatch",
        ),
        (
            "version deleted",
            format!(
                "DELETE FROM resource_versions WHERE resource_type = 'AuditEvent' AND id = '{id}' AND version = 1"
            ),
            seq,
            "missing row",
        ),
        (
            "tail cut",
            format!("DELETE FROM audit_chain WHERE chain = 2 AND seq = {last_seq}"),
            last_seq,
            "head mismatch",
        ),
    ];
    for (n, (name, sql, at, problem)) in cases.into_iter().enumerate() {
        let copy = copy_of(&database, dir.path(), n).await;
        let mut conn = connect(&copy).await;
        let mut statement = sqlx::query(AssertSqlSafe(sql));
        if name == "ciphertext" {
            let row = sqlx::query("SELECT ciphertext FROM resource_versions WHERE resource_type = 'AuditEvent' AND id = $1 AND version = 1")
                .bind(&id)
                .fetch_one(&mut conn)
                .await
                .expect("ciphertext");
            let mut bytes: Vec<u8> = row.get(0);
            let middle = bytes.len() / 2;
            bytes[middle] ^= 0x01;
            statement = statement.bind(bytes);
        } else if name == "link hash" {
            statement = statement.bind(vec![0xAB_u8; 32]);
        }
        let done = statement.execute(&mut conn).await.expect("tamper");
        assert_eq!(done.rows_affected(), 1, "{name}");
        conn.close().await.expect("close");

        let (code, stdout, stderr) = fhirvault(dir.path(), &copy, &["audit", "verify"]);
        assert_eq!(code, 1, "{name}: verify must fail\n{stdout}\n{stderr}");
        let broken_chain = if name == "tail cut" { 2 } else { chain };
        let line = stdout
            .lines()
            .find(|line| line.contains("BROKEN"))
            .unwrap_or_default();
        assert!(
            line.starts_with(&format!("chain {broken_chain}: BROKEN at seq {at}")),
            "{name}: {stdout}"
        );
        assert!(line.contains(problem), "{name}: {line}");
        if matches!(name, "ciphertext" | "link hash" | "version deleted") {
            assert!(
                line.contains(&format!("(AuditEvent {id})")),
                "{name}: {line}"
            );
        }
        assert_eq!(
            stdout.matches(": intact, ").count(),
            3,
            "{name}: the other chains are intact: {stdout}"
        );
        assert!(
            stderr.contains("broken in 1 of 4 chains"),
            "{name}: {stderr}"
        );
        assert_no_marker("verify's output", &stdout);
    }

    // Key rotation re-seals every AuditEvent; the chains hash plaintext and stay valid.
    let (code, stdout, stderr) = fhirvault(dir.path(), &database, &["keys", "rotate"]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!("re-encrypted {total} rows under key 2")),
        "{stdout}"
    );
    let (code, stdout, stderr) = fhirvault(dir.path(), &database, &["audit", "verify"]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!("4 chains, {total} links checked, 0 broken")),
        "{stdout}"
    );
}

async fn audit_events_are_found_by_patient_and_other_parameters(backend: Backend) {
    let server = TestServer::start(backend).await;
    // The audit trail is the auditors' to search (not even an admin's).
    let auditor = server.token("auditor", "user/*.rs", None, None);
    let service = open(server.dir.path(), &server.database, |_| {}).await;
    let about_patient = append_alone(
        &service,
        vec![
            record(
                OLD,
                RestInteraction::Read,
                vec![
                    Entity::Resource {
                        reference: "Observation/o-9".into(),
                    },
                    Entity::Patient {
                        id: "p-audit".into(),
                    },
                ],
            ),
            record(
                fhirvault::fhir::instant::now_micros(),
                RestInteraction::SearchType,
                vec![Entity::Patient {
                    id: "p-audit".into(),
                }],
            ),
        ],
    )
    .await;
    let mut refused = record(
        fhirvault::fhir::instant::now_micros(),
        RestInteraction::Read,
        vec![Entity::Patient {
            id: "p-other".into(),
        }],
    );
    refused.outcome = Outcome::from_status(403);
    refused.outcome_desc = Some("403: the crm role may not read Claim resources".into());
    let other = append_alone(&service, vec![refused]).await;

    let sorted = |mut ids: Vec<String>| {
        ids.sort();
        ids
    };
    let found = |query: &'static str| {
        let (server, auditor) = (&server, &auditor);
        async move {
            let reply = server
                .request_as(auditor, reqwest::Method::GET, query, None)
                .await;
            assert_eq!(reply.status, StatusCode::OK, "{query}: {}", reply.text);
            sorted(match_ids(&reply.body))
        }
    };
    let contains_all = |found: &[String], ids: &[String]| ids.iter().all(|id| found.contains(id));
    let by_patient = found("AuditEvent?patient=Patient/p-audit").await;
    assert_eq!(
        by_patient,
        sorted(about_patient.clone()),
        "AuditEvent?patient finds the events with a Patient entity"
    );
    assert_eq!(found("AuditEvent?patient=p-other").await, other);
    assert_eq!(
        found("AuditEvent?entity=Observation/o-9").await,
        vec![about_patient[0].clone()]
    );
    assert_eq!(found("AuditEvent?outcome=4").await, other);
    assert_eq!(
        found("AuditEvent?date=lt2016-01-01").await,
        vec![about_patient[0].clone()]
    );
    assert!(contains_all(
        &found("AuditEvent?subtype=http://hl7.org/fhir/restful-interaction|read").await,
        &[about_patient[0].clone(), other[0].clone()]
    ));
    assert!(contains_all(
        &found("AuditEvent?agent=Organization/org-a").await,
        &[about_patient[0].clone(), other[0].clone()]
    ));
    assert!(contains_all(
        &found("AuditEvent?altid=ehr-app").await,
        &about_patient
    ));
    assert!(contains_all(
        &found("AuditEvent?agent-role=urn:fhirvault:role|clinician").await,
        &about_patient
    ));
    assert!(contains_all(
        &found("AuditEvent?type=rest").await,
        &about_patient
    ));
    // Read back as stored.
    let read = server
        .request_as(
            &auditor,
            reqwest::Method::GET,
            &format!("AuditEvent/{}", other[0]),
            None,
        )
        .await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.text);
    assert_eq!(
        read.body["outcomeDesc"],
        "403: the crm role may not read Claim resources"
    );
    assert_eq!(read.body["meta"]["versionId"], "1");
    service.store.close().await;
}

async fn prune_exports_the_old_prefix_of_each_chain(backend: Backend) {
    let (dir, database) = fresh_store(backend).await;
    let service = open(dir.path(), &database, |config| config.audit.chains = 3).await;
    let mut old = Vec::new();
    let mut recent = Vec::new();
    for i in 0..12 {
        let at = OLD + i * 1_000_000;
        old.extend(append_alone(&service, searches(1 + (i as usize % 3), at)).await);
    }
    for _ in 0..30 {
        recent.extend(
            append_alone(
                &service,
                searches(2, fhirvault::fhir::instant::now_micros()),
            )
            .await,
        );
    }
    // Old, but behind recent ones in their chains: kept, or the chains would get holes.
    let mut stuck = Vec::new();
    for _ in 0..6 {
        stuck.extend(append_alone(&service, searches(1, OLD)).await);
    }
    service.store.close().await;
    let total = old.len() + recent.len() + stuck.len();

    // What must go: per chain, the links up to the first one that is not old.
    let mut conn = connect(&database).await;
    let chained = links(&mut conn).await;
    conn.close().await.expect("close");
    let is_old = |id: &String| old.contains(id) || stuck.contains(id);
    let mut expected = Vec::new();
    for chain in 0..3 {
        let ids = chained
            .iter()
            .filter(|(c, _, _)| *c == chain)
            .map(|(_, _, id)| id);
        expected.extend(ids.take_while(|id| is_old(id)).cloned());
    }
    assert!(
        expected.len() >= old.len() && expected.len() < old.len() + stuck.len(),
        "the test needs old events behind recent ones"
    );

    let export = dir.path().join("audit-2015.ndjson");
    let export_arg = export.display().to_string();
    let (code, stdout, stderr) = fhirvault(
        dir.path(),
        &database,
        &[
            "audit",
            "prune",
            "--export",
            &export_arg,
            "--before",
            "2020-01-01T00:00:00Z",
        ],
    );
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!(
            "exported {} AuditEvents recorded before 2020-01-01T00:00:00",
            expected.len()
        )),
        "{stdout}"
    );
    assert_no_marker("prune's output", &stdout);

    // The export: one AuditEvent per line, exactly the pruned ones, 0600, with the printed hash.
    let bytes = std::fs::read(&export).expect("export file");
    let exported: Vec<Value> = bytes
        .split(|b| *b == b'\n')
        .filter(|line| !line.is_empty())
        .map(|line| serde_json::from_slice(line).expect("JSON line"))
        .collect();
    assert_eq!(exported.len(), expected.len());
    let mut exported_ids: Vec<String> = exported
        .iter()
        .map(|event| event["id"].as_str().expect("id").to_string())
        .collect();
    exported_ids.sort();
    let mut expected_sorted = expected.clone();
    expected_sorted.sort();
    assert_eq!(exported_ids, expected_sorted);
    assert!(
        exported
            .iter()
            .all(|event| event["resourceType"] == "AuditEvent"
                && event["recorded"].as_str().unwrap().starts_with("2015-"))
    );
    assert_eq!(
        std::fs::metadata(&export)
            .expect("metadata")
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    let sha256 = hex::encode(ring::digest::digest(&ring::digest::SHA256, &bytes));
    assert!(
        stdout.contains(&format!("export SHA-256: {sha256}")),
        "{stdout}"
    );

    // The chains still verify from their new anchors, the prune event included.
    let (code, verified, stderr) = fhirvault(dir.path(), &database, &["audit", "verify"]);
    assert_eq!(code, 0, "{verified}\n{stderr}");
    assert!(
        verified.contains(&format!(
            "{} links checked, 0 broken",
            total - expected.len() + 1
        )),
        "{verified}"
    );

    // The pruned AuditEvents are gone entirely; the prune is itself an AuditEvent.
    let event_id = stdout
        .lines()
        .find_map(|line| line.strip_prefix("the prune is recorded as AuditEvent/"))
        .expect("prune event id")
        .to_string();
    let mut conn = connect(&database).await;
    for (table, column) in [
        ("resource_versions", "id"),
        ("resource_heads", "id"),
        ("search_date", "id"),
        ("search_token", "id"),
        ("audit_chain", "id"),
    ] {
        let sql = format!("SELECT COUNT(*) FROM {table} WHERE {column} = $1");
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(&expected[0])
            .fetch_one(&mut conn)
            .await
            .expect("count");
        assert_eq!(
            row.get::<i64, _>(0),
            0,
            "{table} still holds a pruned AuditEvent"
        );
    }
    let row = sqlx::query("SELECT COUNT(*) FROM resource_heads WHERE resource_type = 'AuditEvent'")
        .fetch_one(&mut conn)
        .await
        .expect("count");
    assert_eq!(row.get::<i64, _>(0) as usize, total - expected.len() + 1);
    conn.close().await.expect("close");
    let service = open(dir.path(), &database, |_| {}).await;
    let stored = fhirvault::store::versions::read_current(
        &mut service.reader().await.expect("reader"),
        "AuditEvent",
        &event_id,
    )
    .await
    .expect("read")
    .expect("the prune event exists");
    let event = service
        .open_version(stored)
        .expect("opens")
        .resource
        .expect("body");
    assert_eq!(event["type"]["code"], "110101");
    assert_eq!(event["subtype"][0]["code"], "destroy");
    assert_eq!(event["action"], "D");
    let description = event["outcomeDesc"].as_str().expect("outcomeDesc");
    assert!(
        description.contains(&format!("pruned {} AuditEvents", expected.len()))
            && description.contains(&sha256),
        "{description}"
    );
    service.store.close().await;

    // Nothing old is left at the start of a chain: a second prune finds nothing and writes no file.
    let again = dir.path().join("again.ndjson");
    let (code, stdout, stderr) = fhirvault(
        dir.path(),
        &database,
        &[
            "audit",
            "prune",
            "--export",
            &again.display().to_string(),
            "--before",
            "2020-01-01",
        ],
    );
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stdout.contains("nothing recorded before"), "{stdout}");
    assert!(!again.exists());
    // An existing export file is never overwritten.
    let (code, _, stderr) = fhirvault(
        dir.path(),
        &database,
        &[
            "audit",
            "prune",
            "--export",
            &export_arg,
            "--before",
            "2030-01-01",
        ],
    );
    assert_eq!(code, 1);
    assert!(stderr.contains("must not exist yet"), "{stderr}");
}

/// Make the database refuse AuditEvents, and undo it. SQLite: another connection holds the write
/// lock. PostgreSQL: the service's role (`role`) loses INSERT on `audit_chain`.
struct Refusal {
    conn: AnyConnection,
    undo: String,
}

impl Refusal {
    async fn start(database: &DatabaseUrl, role: Option<&str>) -> Refusal {
        let mut conn = connect(database).await;
        let (refuse, undo) = match role {
            None => ("BEGIN IMMEDIATE".to_string(), "ROLLBACK".to_string()),
            Some(role) => (
                format!("REVOKE INSERT ON audit_chain FROM {role}"),
                format!("GRANT INSERT ON audit_chain TO {role}"),
            ),
        };
        sqlx::query(AssertSqlSafe(refuse))
            .execute(&mut conn)
            .await
            .expect("refuse writes");
        Refusal { conn, undo }
    }

    async fn end(mut self) {
        sqlx::query(AssertSqlSafe(self.undo))
            .execute(&mut self.conn)
            .await
            .expect("take writes again");
        self.conn.close().await.expect("close");
    }
}

fn spool_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default()
}

async fn the_spool_holds_audit_events_while_the_database_refuses_them(backend: Backend) {
    let (dir, database) = fresh_store(backend).await;
    // On PostgreSQL the service runs as a role of its own (a superuser ignores privileges).
    let (service_database, role) = match &database {
        DatabaseUrl::Sqlite(_) => (database.clone(), None),
        DatabaseUrl::Postgres(url) => {
            let (admin, name) = cluster_admin(url);
            let role = format!("{name}_app");
            let mut conn = connect(&DatabaseUrl::Postgres(admin)).await;
            for sql in [
                format!("CREATE ROLE {role} LOGIN"),
                format!("ALTER DATABASE {name} OWNER TO {role}"),
            ] {
                sqlx::query(AssertSqlSafe(sql))
                    .execute(&mut conn)
                    .await
                    .expect("role");
            }
            conn.close().await.expect("close");
            (
                DatabaseUrl::Postgres(url.replacen("postgres@", &format!("{role}@"), 1)),
                Some(role),
            )
        }
    };
    let service = open(dir.path(), &service_database, |config| {
        config.audit.on_write_failure = OnWriteFailure::Queue
    })
    .await;
    service
        .audit(searches(1, fhirvault::fhir::instant::now_micros()))
        .await
        .expect("the database takes AuditEvents");
    let spool = service.audit_spool_dir();
    assert!(spool_files(&spool).is_empty());

    let refusal = Refusal::start(&database, role.as_deref()).await;
    // With the default (`fail`) the read fails with its AuditEvents.
    let mut failing_config = (*service.config).clone();
    failing_config.audit.on_write_failure = OnWriteFailure::Fail;
    let failing = Service {
        config: Arc::new(failing_config),
        ..service.clone()
    };
    assert!(
        failing
            .audit(searches(1, fhirvault::fhir::instant::now_micros()))
            .await
            .is_err(),
        "fail mode fails the read"
    );
    assert!(spool_files(&spool).is_empty(), "fail mode spools nothing");
    // With `queue` it succeeds, once the batch is durable in the spool.
    service
        .audit(searches(3, fhirvault::fhir::instant::now_micros()))
        .await
        .expect("queued");
    let files = spool_files(&spool);
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(
        files[0].extension().is_some_and(|e| e == "spool"),
        "{files:?}"
    );
    let bytes = std::fs::read(&files[0]).expect("spool file");
    let text = String::from_utf8_lossy(&bytes);
    assert_no_marker("the spool file", &text);
    assert!(
        !text.contains("AuditEvent")
            && !text.contains("dr-huber")
            && !text.contains("resourceType"),
        "the spool file holds plaintext"
    );
    assert_eq!(
        std::fs::metadata(&files[0])
            .expect("metadata")
            .permissions()
            .mode()
            & 0o777,
        0o600
    );

    // Once the database takes writes again, the server's drain task writes the batch.
    refusal.end().await;
    let drain = fhirvault::audit::spool::spawn_drain(service.clone());
    let deadline = Instant::now() + Duration::from_secs(30);
    while !spool_files(&spool).is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drain.abort();
    assert!(spool_files(&spool).is_empty(), "the spool was drained");
    let mut conn = service.reader().await.expect("reader");
    let row = sqlx::query("SELECT COUNT(*) FROM audit_chain")
        .fetch_one(&mut *conn)
        .await
        .expect("count");
    assert_eq!(
        row.get::<i64, _>(0),
        4,
        "the first AuditEvent and the three spooled ones"
    );
    drop(conn);
    // Draining again writes nothing twice.
    assert_eq!(
        fhirvault::audit::spool::drain(&service)
            .await
            .expect("drain"),
        0
    );
    service.store.close().await;

    let (code, stdout, stderr) = fhirvault(dir.path(), &database, &["audit", "verify"]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stdout.contains("4 links checked, 0 broken"), "{stdout}");
    assert_no_marker("the database", &raw_dump(&database));
}
