//! batch and transaction Bundles, through a real server, on both backends.

use crate::common::{Backend, TestServer};
use reqwest::StatusCode;
use serde_json::{Value, json};

fn patient_entry(full_url: &str, value: &str) -> Value {
    json!({
        "fullUrl": full_url,
        "resource": {"resourceType": "Patient", "identifier": [{"system": "urn:test", "value": value}], "name": [{"family": "Bundle"}]},
        "request": {"method": "POST", "url": "Patient"}
    })
}

fn observation_entry(subject: &str) -> Value {
    json!({
        "resource": {
            "resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
            "subject": {"reference": subject},
            "valueQuantity": {"value": 64, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"}
        },
        "request": {"method": "POST", "url": "Observation"}
    })
}

async fn transaction_resolves_urn_uuids(backend: Backend) {
    let server = TestServer::start(backend).await;
    let bundle = json!({
        "resourceType": "Bundle", "type": "transaction",
        "entry": [
            observation_entry("urn:uuid:11111111-1111-1111-1111-111111111111"),
            patient_entry("urn:uuid:11111111-1111-1111-1111-111111111111", "t1"),
        ]
    });
    let reply = server.post("", &bundle).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.body["type"], "transaction-response");
    let entries = reply.body["entry"].as_array().unwrap();
    assert_eq!(entries[0]["response"]["status"], "201 Created");
    assert_eq!(entries[1]["response"]["status"], "201 Created");
    let patient_location = entries[1]["response"]["location"].as_str().unwrap();
    let patient_id = patient_location.split('/').nth(1).unwrap();
    let obs_location = entries[0]["response"]["location"]
        .as_str()
        .unwrap()
        .to_string();
    let obs = server
        .get(obs_location.split("/_history").next().unwrap())
        .await;
    assert_eq!(
        obs.body["subject"]["reference"],
        format!("Patient/{patient_id}")
    );
}

async fn transaction_is_atomic(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut bad = observation_entry("Patient/x");
    bad["resource"]["status"] = json!("not-a-status");
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [patient_entry("urn:uuid:a", "t2"), bad]});
    let reply = server.post("", &bundle).await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reply.text
    );
    assert!(reply.text.contains("Bundle.entry[1]"), "{}", reply.text);
    assert!(
        server.search_ids("Patient").await.is_empty(),
        "nothing of a failed transaction is stored"
    );

    // A failure found only while writing (a stale ifMatch) also rolls everything back.
    let (id, mut existing) = server
        .create(&json!({"resourceType": "Patient", "name": [{"family": "Old"}]}))
        .await;
    existing["name"][0]["family"] = json!("New");
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        patient_entry("urn:uuid:b", "t3"),
        {"resource": existing, "request": {"method": "PUT", "url": format!("Patient/{id}"), "ifMatch": "W/\"7\""}}
    ]});
    let reply = server.post("", &bundle).await;
    reply.assert_outcome(
        StatusCode::PRECONDITION_FAILED,
        "conflict",
        "Bundle.entry[1]",
    );
    assert_eq!(server.search_ids("Patient").await, vec![id.clone()]);
    assert_eq!(
        server.get(&format!("Patient/{id}")).await.body["name"][0]["family"],
        "Old"
    );
}

async fn transaction_order_and_conditional_entries(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (old, _) = server.create(&json!({"resourceType": "Patient", "identifier": [{"system": "urn:test", "value": "keep"}]})).await;
    let (doomed, _) = server
        .create(&json!({"resourceType": "Patient", "name": [{"family": "Doomed"}]}))
        .await;
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"request": {"method": "GET", "url": format!("Patient/{old}")}},
        {"fullUrl": "urn:uuid:c", "resource": {"resourceType": "Patient", "identifier": [{"system": "urn:test", "value": "keep"}]},
         "request": {"method": "POST", "url": "Patient", "ifNoneExist": "identifier=urn:test|keep"}},
        observation_entry("urn:uuid:c"),
        {"resource": {"resourceType": "Patient", "identifier": [{"system": "urn:test", "value": "cond"}], "gender": "female"},
         "request": {"method": "PUT", "url": "Patient?identifier=urn:test|cond"}},
        {"request": {"method": "DELETE", "url": format!("Patient/{doomed}")}}
    ]});
    let reply = server.post("", &bundle).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let entries = reply.body["entry"].as_array().unwrap();
    assert_eq!(entries[0]["response"]["status"], "200 OK");
    assert_eq!(
        entries[1]["response"]["status"], "200 OK",
        "ifNoneExist matched"
    );
    assert_eq!(entries[2]["response"]["status"], "201 Created");
    assert_eq!(entries[3]["response"]["status"], "201 Created");
    assert_eq!(entries[4]["response"]["status"], "204 No Content");
    let obs_ids = server
        .search_ids(&format!("Observation?subject=Patient/{old}"))
        .await;
    assert_eq!(
        obs_ids.len(),
        1,
        "the urn:uuid of a matched conditional create points to the match"
    );
    assert_eq!(
        server.get(&format!("Patient/{doomed}")).await.status,
        StatusCode::GONE
    );
}

async fn batch_entries_fail_independently(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut bad = patient_entry("urn:uuid:x", "b1");
    bad["resource"]["gender"] = json!("robot");
    let bundle = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        patient_entry("urn:uuid:y", "b2"),
        bad,
        {"request": {"method": "GET", "url": "Patient/missing"}},
        {"request": {"method": "FETCH", "url": "Patient"}}
    ]});
    let reply = server.post("", &bundle).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.body["type"], "batch-response");
    let entries = reply.body["entry"].as_array().unwrap();
    assert_eq!(entries[0]["response"]["status"], "201 Created");
    assert_eq!(entries[1]["response"]["status"], "422 Unprocessable Entity");
    assert_eq!(
        entries[1]["response"]["outcome"]["resourceType"],
        "OperationOutcome"
    );
    assert_eq!(entries[2]["response"]["status"], "404 Not Found");
    assert_eq!(entries[3]["response"]["status"], "400 Bad Request");
    assert_eq!(server.search_ids("Patient").await.len(), 1);
}

async fn malformed_bundles(backend: Backend) {
    let server = TestServer::start(backend).await;
    server
        .post("", &json!({"resourceType": "Patient"}))
        .await
        .assert_outcome(StatusCode::BAD_REQUEST, "invalid", "Bundle");
    server
        .post("", &json!({"resourceType": "Bundle", "type": "collection"}))
        .await
        .assert_outcome(StatusCode::BAD_REQUEST, "invalid", "batch or transaction");
    let no_request = json!({"resourceType": "Bundle", "type": "transaction", "entry": [{"resource": {"resourceType": "Patient"}}]});
    server.post("", &no_request).await.assert_outcome(
        StatusCode::BAD_REQUEST,
        "invalid",
        "Bundle.entry[0]",
    );
    let bad_type = json!({"resourceType": "Bundle", "type": "transaction", "entry": [{"resource": {}, "request": {"method": "POST", "url": "Nope"}}]});
    server.post("", &bad_type).await.assert_outcome(
        StatusCode::BAD_REQUEST,
        "invalid",
        "Bundle.entry[0]",
    );
}

async fn conditional_references_resolve(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (pid, _) = server.create(&json!({"resourceType": "Patient", "identifier": [{"system": "urn:test", "value": "cr-1"}]})).await;
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [observation_entry("Patient?identifier=urn:test|cr-1")]});
    let reply = server.post("", &bundle).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(
        server
            .search_ids(&format!("Observation?subject=Patient/{pid}"))
            .await
            .len(),
        1
    );
    let none = json!({"resourceType": "Bundle", "type": "transaction", "entry": [observation_entry("Patient?identifier=urn:test|nobody")]});
    server.post("", &none).await.assert_outcome(
        StatusCode::PRECONDITION_FAILED,
        "conflict",
        "matches no resource",
    );
    server.create(&json!({"resourceType": "Patient", "identifier": [{"system": "urn:test", "value": "cr-1"}]})).await;
    let many = json!({"resourceType": "Bundle", "type": "transaction", "entry": [observation_entry("Patient?identifier=urn:test|cr-1")]});
    server.post("", &many).await.assert_outcome(
        StatusCode::PRECONDITION_FAILED,
        "conflict",
        "more than one",
    );
    assert_eq!(
        server.search_ids("Observation").await.len(),
        1,
        "failed transactions stored nothing"
    );
}

async fn repeated_conditional_creates_share_one_resource(backend: Backend) {
    let server = TestServer::start(backend).await;
    let practitioner = |full_url: &str| {
        json!({
            "fullUrl": full_url,
            "resource": {"resourceType": "Practitioner", "identifier": [{"system": "urn:lanr", "value": "777"}]},
            "request": {"method": "POST", "url": "Practitioner", "ifNoneExist": "identifier=urn:lanr|777"}
        })
    };
    let with_performer = |reference: &str| {
        let mut entry = observation_entry("Patient/p");
        entry["resource"]["performer"] = json!([{"reference": reference}]);
        entry["resource"].as_object_mut().unwrap().remove("subject");
        entry
    };
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        practitioner("urn:uuid:a1"), practitioner("urn:uuid:b2"), with_performer("urn:uuid:a1"), with_performer("urn:uuid:b2")
    ]});
    let reply = server.post("", &bundle).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let practitioners = server.search_ids("Practitioner").await;
    assert_eq!(practitioners.len(), 1);
    let performed = server
        .search_ids(&format!(
            "Observation?performer=Practitioner/{}",
            practitioners[0]
        ))
        .await;
    assert_eq!(
        performed.len(),
        2,
        "both references point to the one practitioner"
    );
}

async fn searches_inside_a_batch(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (pid, _) = server.create(&json!({"resourceType": "Patient", "identifier": [{"system": "urn:test", "value": "s-1"}]})).await;
    let bundle = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": "Patient?identifier=urn:test|s-1"}},
        {"request": {"method": "GET", "url": "Patient?birthdate=notadate"}}
    ]});
    let reply = server.post("", &bundle).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let searchset = &reply.body["entry"][0]["resource"];
    assert_eq!(searchset["type"], "searchset");
    assert_eq!(crate::common::match_ids(searchset), vec![pid]);
    assert_eq!(
        reply.body["entry"][1]["response"]["status"],
        "400 Bad Request"
    );
}

both_backends!(
    transaction_resolves_urn_uuids,
    transaction_is_atomic,
    transaction_order_and_conditional_entries,
    batch_entries_fail_independently,
    malformed_bundles,
    conditional_references_resolve,
    searches_inside_a_batch,
    repeated_conditional_creates_share_one_resource,
);
