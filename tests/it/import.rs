//! `Service::import_batch` (what `fhirvault import` runs) against a serving server: resources
//! new to the store, resources it already holds (new versions, the Patient's pseudonym kept, old
//! index rows gone), and a batch that names the same resource twice (imported in order).

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{Backend, TestServer};

both_backends!(import_creates_updates_and_repeats_in_order);

fn patient(id: &str, family: &str) -> Value {
    json!({"resourceType": "Patient", "id": id,
        "identifier": [{"system": "urn:oid:1.2.40.0.10.1.4.3.1", "value": format!("SV-{id}")}],
        "name": [{"family": family}]})
}

fn observation(id: &str, patient: &str, value: i64) -> Value {
    json!({"resourceType": "Observation", "id": id, "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": format!("Patient/{patient}")},
        "valueQuantity": {"value": value, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"}})
}

fn lines(resources: Vec<Value>) -> Vec<(String, Result<Value, String>)> {
    resources
        .into_iter()
        .enumerate()
        .map(|(i, resource)| (format!("line {}", i + 1), Ok(resource)))
        .collect()
}

async fn import_creates_updates_and_repeats_in_order(backend: Backend) {
    let server = TestServer::start(backend).await;
    let importer = crate::reindex::open(server.dir.path(), &server.database).await;
    let import = |resources| {
        let importer = importer.clone();
        async move {
            let (summary, rejections) = importer
                .import_batch(lines(resources))
                .await
                .expect("imported");
            assert!(rejections.is_empty(), "{rejections:?}");
            summary.stored
        }
    };

    assert_eq!(
        import(vec![
            patient("imp-a", "Ahorn"),
            observation("imp-o", "imp-a", 71)
        ])
        .await,
        2
    );
    let first = server.get("Patient/imp-a").await;
    assert_eq!(first.body["meta"]["versionId"], "1");
    let pseudonym = |patient: &Value| {
        patient["identifier"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|i| i["value"] != "SV-imp-a")
            .cloned()
            .expect("the server's pseudonym")
    };
    let assigned = pseudonym(&first.body);

    // Both already stored: new versions, found by their new values only.
    assert_eq!(
        import(vec![
            patient("imp-a", "Birke"),
            observation("imp-o", "imp-a", 93)
        ])
        .await,
        2
    );
    let second = server.get("Patient/imp-a").await;
    assert_eq!(second.body["meta"]["versionId"], "2");
    assert_eq!(pseudonym(&second.body), assigned, "the pseudonym stays");
    assert_eq!(
        server.get("Observation/imp-o").await.body["meta"]["versionId"],
        "2"
    );
    assert_eq!(server.search_ids("Patient?family=Birke").await, ["imp-a"]);
    assert!(server.search_ids("Patient?family=Ahorn").await.is_empty());
    assert_eq!(
        server
            .search_ids("Observation?value-quantity=93|http://unitsofmeasure.org|/min")
            .await,
        ["imp-o"]
    );
    assert!(
        server
            .search_ids("Observation?value-quantity=71|http://unitsofmeasure.org|/min")
            .await
            .is_empty()
    );

    // The same Patient twice in one batch, and one new: in the order of the lines.
    assert_eq!(
        import(vec![
            patient("imp-a", "Linde"),
            patient("imp-b", "Eiche"),
            patient("imp-a", "Ulme"),
        ])
        .await,
        3
    );
    let third = server.get("Patient/imp-a").await;
    assert_eq!(third.body["meta"]["versionId"], "4");
    assert_eq!(third.body["name"][0]["family"], "Ulme");
    assert_eq!(pseudonym(&third.body), assigned);
    let history = server.get("Patient/imp-a/_history").await;
    assert_eq!(history.status, StatusCode::OK);
    assert_eq!(history.body["total"], 4);
    assert_eq!(server.search_ids("Patient?family=Eiche").await, ["imp-b"]);
    assert!(server.search_ids("Patient?family=Linde").await.is_empty());

    // As `fhirvault import` ends: PostgreSQL's statistics describe what was loaded.
    importer
        .store
        .refresh_statistics()
        .await
        .expect("statistics");
    if backend == Backend::Postgres {
        use sqlx::Row;
        let mut conn = importer.reader().await.expect("reader");
        let analysed: i64 = sqlx::query(
            "SELECT COUNT(*) FROM pg_stat_user_tables WHERE relname IN \
             ('resource_heads', 'resource_versions', 'search_token') AND last_analyze IS NOT NULL",
        )
        .fetch_one(&mut *conn)
        .await
        .expect("statistics of the tables")
        .get(0);
        assert_eq!(analysed, 3);
    }
    // Not bounded by the statement time limit meant for requests: on a large store `ANALYZE`
    // takes longer than the default 5 s (here the limit is 1 ms, shorter than any ANALYZE).
    let limited =
        fhirvault::store::Store::open_with(&server.database, Some(Duration::from_millis(1)))
            .await
            .expect("store with a 1 ms statement time limit");
    limited
        .refresh_statistics()
        .await
        .expect("statistics refreshed past the statement time limit");
    limited.close().await;
}
