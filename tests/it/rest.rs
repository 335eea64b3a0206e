//! The REST interactions of R4 http.html, through a real server, on both backends.

use crate::common::{Backend, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

fn patient() -> Value {
    json!({
        "resourceType": "Patient",
        "identifier": [{"system": "urn:oid:1.2.40.0.10.1.4.3.1", "value": "1234010180"}],
        "name": [{"family": "Muster", "given": ["Maria"]}],
        "gender": "female",
        "birthDate": "1980-01-01"
    })
}

fn observation(subject: &str, value: &str) -> Value {
    let value: Value = serde_json::from_str(value).expect("number");
    json!({
        "resourceType": "Observation",
        "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}]},
        "subject": {"reference": format!("Patient/{subject}")},
        "effectiveDateTime": "2026-03-05T10:00:00+01:00",
        "valueQuantity": {"value": value, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"}
    })
}

async fn create_read_vread(backend: Backend) {
    let server = TestServer::start(backend).await;
    let reply = server.post("Patient", &patient()).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let id = reply.body["id"].as_str().unwrap().to_string();
    assert_eq!(reply.body["meta"]["versionId"], "1");
    assert_eq!(reply.header("etag"), Some("W/\"1\""));
    assert!(reply.header("last-modified").is_some());
    let location = reply.header("location").unwrap();
    assert_eq!(location, format!("{}/Patient/{id}/_history/1", server.base));
    assert!(
        reply
            .header("content-type")
            .unwrap()
            .starts_with("application/fhir+json")
    );

    let read = server.get(&format!("Patient/{id}")).await;
    assert_eq!(read.status, StatusCode::OK);
    assert_eq!(read.body["name"][0]["family"], "Muster");
    assert_eq!(
        read.body["meta"]["lastUpdated"],
        reply.body["meta"]["lastUpdated"]
    );
    let vread = server.get(&format!("Patient/{id}/_history/1")).await;
    assert_eq!(vread.status, StatusCode::OK);
    assert_eq!(vread.body, read.body);
    server
        .get(&format!("Patient/{id}/_history/9"))
        .await
        .assert_outcome(StatusCode::NOT_FOUND, "not-found", "no version 9");
    server.get("Patient/does-not-exist").await.assert_outcome(
        StatusCode::NOT_FOUND,
        "not-found",
        "does not exist",
    );
}

async fn server_sets_meta_and_ignores_client_versions(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut body = patient();
    body["id"] = json!("client-chosen");
    body["meta"] = json!({"versionId": "99", "lastUpdated": "2000-01-01T00:00:00Z", "tag": [{"system": "urn:t", "code": "keep"}]});
    let reply = server.post("Patient", &body).await;
    assert_eq!(reply.status, StatusCode::CREATED);
    assert_ne!(reply.body["id"], "client-chosen", "create assigns the id");
    assert_eq!(reply.body["meta"]["versionId"], "1");
    assert_ne!(reply.body["meta"]["lastUpdated"], "2000-01-01T00:00:00Z");
    assert_eq!(reply.body["meta"]["tag"][0]["code"], "keep");
}

async fn decimals_keep_their_precision(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (pid, _) = server.create(&patient()).await;
    for text in ["72", "1.50", "0.000100", "72.0"] {
        let (id, created) = server.create(&observation(&pid, text)).await;
        let read = server.get(&format!("Observation/{id}")).await;
        let raw = read.text.clone();
        assert!(
            raw.contains(&format!("\"value\":{text}")),
            "{text} kept in {raw}"
        );
        assert_eq!(created["valueQuantity"]["value"].to_string(), text);
    }
}

async fn update_versions_and_preconditions(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (id, mut body) = server.create(&patient()).await;
    body["gender"] = json!("other");
    let reply = server
        .request(
            Method::PUT,
            &format!("Patient/{id}"),
            Some(&body),
            &[("if-match", "W/\"1\"")],
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.body["meta"]["versionId"], "2");
    assert_eq!(reply.header("etag"), Some("W/\"2\""));
    // A stale If-Match is a 412 and writes nothing.
    let stale = server
        .request(
            Method::PUT,
            &format!("Patient/{id}"),
            Some(&body),
            &[("if-match", "W/\"1\"")],
        )
        .await;
    stale.assert_outcome(
        StatusCode::PRECONDITION_FAILED,
        "conflict",
        "current version",
    );
    assert_eq!(
        server.get(&format!("Patient/{id}")).await.body["meta"]["versionId"],
        "2"
    );
    // Body id must match the URL.
    let mut other = body.clone();
    other["id"] = json!("someone-else");
    server
        .put(&format!("Patient/{id}"), &other)
        .await
        .assert_outcome(StatusCode::BAD_REQUEST, "invalid", "does not match");
    let mut no_id = body.clone();
    no_id.as_object_mut().unwrap().remove("id");
    server
        .put(&format!("Patient/{id}"), &no_id)
        .await
        .assert_outcome(
            StatusCode::BAD_REQUEST,
            "invalid",
            "must carry the resource id",
        );
}

async fn update_as_create(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut body = patient();
    body["id"] = json!("chosen-1");
    let reply = server.put("Patient/chosen-1", &body).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    assert_eq!(reply.body["id"], "chosen-1");
    assert_eq!(reply.body["meta"]["versionId"], "1");
    let again = server.put("Patient/chosen-1", &body).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.body["meta"]["versionId"], "2");
}

async fn delete_then_gone_and_history(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (id, _) = server.create(&patient()).await;
    let reply = server.delete(&format!("Patient/{id}")).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    server.get(&format!("Patient/{id}")).await.assert_outcome(
        StatusCode::GONE,
        "deleted",
        "deleted",
    );
    // Deleting again is idempotent.
    assert_eq!(
        server.delete(&format!("Patient/{id}")).await.status,
        StatusCode::NO_CONTENT
    );
    let history = server.get(&format!("Patient/{id}/_history")).await;
    assert_eq!(history.status, StatusCode::OK);
    assert_eq!(history.body["type"], "history");
    assert_eq!(history.body["total"], 2);
    let entries = history.body["entry"].as_array().unwrap();
    assert_eq!(entries[0]["request"]["method"], "DELETE");
    assert_eq!(entries[0]["response"]["etag"], "W/\"2\"");
    assert_eq!(entries[1]["request"]["method"], "POST");
    assert_eq!(entries[1]["resource"]["name"][0]["family"], "Muster");
    // The old version is still readable; the delete marker is 410.
    assert_eq!(
        server.get(&format!("Patient/{id}/_history/1")).await.status,
        StatusCode::OK
    );
    assert_eq!(
        server.get(&format!("Patient/{id}/_history/2")).await.status,
        StatusCode::GONE
    );
    // Re-creating with PUT after delete starts version 3.
    let mut body = patient();
    body["id"] = json!(id);
    let recreated = server.put(&format!("Patient/{id}"), &body).await;
    assert_eq!(recreated.status, StatusCode::CREATED);
    assert_eq!(recreated.body["meta"]["versionId"], "3");
}

async fn history_type_system_since_and_paging(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(server.create(&patient()).await.0);
    }
    let (obs_id, _) = server.create(&observation(&ids[0], "80")).await;
    let type_history = server.get("Patient/_history?_count=2").await;
    assert_eq!(type_history.body["total"], 5);
    assert_eq!(type_history.body["entry"].as_array().unwrap().len(), 2);
    // Follow next links to the end: every version exactly once, newest first.
    let mut seen = Vec::new();
    let mut next = Some(format!("{}/Patient/_history?_count=2", server.base));
    while let Some(url) = next {
        let page = server.get(&url).await;
        for entry in page.body["entry"].as_array().cloned().unwrap_or_default() {
            seen.push(entry["resource"]["id"].as_str().unwrap().to_string());
        }
        // A write while paging must not shift the pages.
        if seen.len() == 2 {
            server.create(&patient()).await;
        }
        next = page.body["link"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["relation"] == "next")
            .map(|l| l["url"].as_str().unwrap().to_string());
    }
    let mut expected = ids.clone();
    expected.reverse();
    assert_eq!(seen, expected);
    let system = server.get("_history").await;
    assert_eq!(system.body["total"], 7);
    assert_eq!(system.body["entry"][1]["resource"]["id"], obs_id);
    let since = server
        .get(&format!(
            "_history?_since={}",
            urlencode("2999-01-01T00:00:00Z")
        ))
        .await;
    assert_eq!(since.body["total"], 0);
    server
        .get("_history?_since=yesterday")
        .await
        .assert_outcome(StatusCode::BAD_REQUEST, "invalid", "_since");
}

fn urlencode(text: &str) -> String {
    serde_urlencoded::to_string([("v", text)])
        .unwrap()
        .trim_start_matches("v=")
        .to_string()
}

async fn conditional_create_update_delete(backend: Backend) {
    let server = TestServer::start(backend).await;
    let criteria = "identifier=urn:oid:1.2.40.0.10.1.4.3.1|1234010180";
    let first = server
        .request(
            Method::POST,
            "Patient",
            Some(&patient()),
            &[("if-none-exist", criteria)],
        )
        .await;
    assert_eq!(first.status, StatusCode::CREATED);
    let second = server
        .request(
            Method::POST,
            "Patient",
            Some(&patient()),
            &[("if-none-exist", criteria)],
        )
        .await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.text);
    assert_eq!(second.body["id"], first.body["id"]);
    assert_eq!(server.search_ids("Patient").await.len(), 1);

    let mut changed = patient();
    changed["gender"] = json!("male");
    let updated = server.put(&format!("Patient?{criteria}"), &changed).await;
    assert_eq!(updated.status, StatusCode::OK, "{}", updated.text);
    assert_eq!(updated.body["id"], first.body["id"]);
    assert_eq!(updated.body["meta"]["versionId"], "2");
    // No match: creates.
    let mut other = patient();
    other["identifier"][0]["value"] = json!("999");
    let created = server
        .put("Patient?identifier=urn:oid:1.2.40.0.10.1.4.3.1|999", &other)
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    // Several matches: 412.
    server.create(&patient()).await;
    let conflict = server
        .request(
            Method::POST,
            "Patient",
            Some(&patient()),
            &[("if-none-exist", criteria)],
        )
        .await;
    conflict.assert_outcome(
        StatusCode::PRECONDITION_FAILED,
        "multiple-matches",
        "matched",
    );
    server
        .delete(&format!("Patient?{criteria}"))
        .await
        .assert_outcome(
            StatusCode::PRECONDITION_FAILED,
            "multiple-matches",
            "at most one",
        );
    // No match, but the body names an existing resource that did not match: refused, not overwritten.
    let (bystander, mut hijack) = server
        .create(&json!({"resourceType": "Patient", "gender": "male"}))
        .await;
    hijack["gender"] = json!("female");
    server
        .put("Patient?identifier=urn:none|0", &hijack)
        .await
        .assert_outcome(StatusCode::CONFLICT, "conflict", "does not match");
    assert_eq!(
        server.get(&format!("Patient/{bystander}")).await.body["gender"],
        "male"
    );
    server.delete(&format!("Patient/{bystander}")).await;
    // _id:not is honoured by conditional delete, never inverted.
    assert_eq!(
        server
            .delete("Patient?_id:not=nobody&identifier=urn:oid:1.2.40.0.10.1.4.3.1|999")
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    // Unknown parameters in criteria are refused rather than ignored.
    server
        .delete("Patient?unknown-param=1")
        .await
        .assert_outcome(StatusCode::BAD_REQUEST, "invalid", "unknown-param");
    assert_eq!(server.search_ids("Patient").await.len(), 2);
}

async fn patch_with_json_patch(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (id, _) = server.create(&patient()).await;
    let patch = json!([{"op": "replace", "path": "/gender", "value": "other"}, {"op": "add", "path": "/active", "value": true}]);
    let reply = server
        .raw(
            Method::PATCH,
            &format!("Patient/{id}"),
            "application/json-patch+json",
            serde_json::to_vec(&patch).unwrap(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.body["gender"], "other");
    assert_eq!(reply.body["active"], true);
    assert_eq!(reply.body["meta"]["versionId"], "2");
    // A patch that makes the resource invalid is refused and writes nothing.
    let bad = json!([{"op": "replace", "path": "/gender", "value": "robot"}]);
    let reply = server
        .raw(
            Method::PATCH,
            &format!("Patient/{id}"),
            "application/json-patch+json",
            serde_json::to_vec(&bad).unwrap(),
        )
        .await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reply.text
    );
    let failing = json!([{"op": "test", "path": "/gender", "value": "male"}]);
    let reply = server
        .raw(
            Method::PATCH,
            &format!("Patient/{id}"),
            "application/json-patch+json",
            serde_json::to_vec(&failing).unwrap(),
        )
        .await;
    reply.assert_outcome(
        StatusCode::UNPROCESSABLE_ENTITY,
        "processing",
        "could not be applied",
    );
    let reply = server
        .raw(
            Method::PATCH,
            &format!("Patient/{id}"),
            "application/fhir+json",
            b"{}".to_vec(),
        )
        .await;
    reply.assert_outcome(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "not-supported",
        "json-patch",
    );
    assert_eq!(
        server.get(&format!("Patient/{id}")).await.body["meta"]["versionId"],
        "2"
    );
}

async fn prefer_return_and_conditional_read(backend: Backend) {
    let server = TestServer::start(backend).await;
    let minimal = server
        .request(
            Method::POST,
            "Patient",
            Some(&patient()),
            &[("prefer", "return=minimal")],
        )
        .await;
    assert_eq!(minimal.status, StatusCode::CREATED);
    assert!(minimal.text.is_empty());
    let location = minimal.header("location").unwrap().to_string();
    let id = location.split('/').rev().nth(2).unwrap().to_string();
    let outcome = server
        .request(
            Method::POST,
            "Patient",
            Some(&patient()),
            &[("prefer", "return=OperationOutcome")],
        )
        .await;
    assert_eq!(outcome.body["resourceType"], "OperationOutcome");
    assert_eq!(outcome.body["issue"][0]["severity"], "information");
    let not_modified = server
        .request(
            Method::GET,
            &format!("Patient/{id}"),
            None,
            &[("if-none-match", "W/\"1\"")],
        )
        .await;
    assert_eq!(not_modified.status, StatusCode::NOT_MODIFIED);
    let modified = server
        .request(
            Method::GET,
            &format!("Patient/{id}"),
            None,
            &[("if-none-match", "W/\"0\"")],
        )
        .await;
    assert_eq!(modified.status, StatusCode::OK);
    let since = server
        .request(
            Method::GET,
            &format!("Patient/{id}"),
            None,
            &[("if-modified-since", "Wed, 01 Jan 2999 00:00:00 GMT")],
        )
        .await;
    assert_eq!(since.status, StatusCode::NOT_MODIFIED);
}

async fn errors_are_operation_outcomes(backend: Backend) {
    let server = TestServer::start(backend).await;
    server
        .get("NotAType/1")
        .await
        .assert_outcome(StatusCode::NOT_FOUND, "not-found", "NotAType");
    server.get("Patient/bad_id!").await.assert_outcome(
        StatusCode::BAD_REQUEST,
        "invalid",
        "resource id",
    );
    server
        .get(&format!("Patient/{}", "x".repeat(65)))
        .await
        .assert_outcome(StatusCode::BAD_REQUEST, "invalid", "1-64");
    server
        .raw(
            Method::POST,
            "Patient",
            "application/fhir+json",
            b"{not json".to_vec(),
        )
        .await
        .assert_outcome(StatusCode::BAD_REQUEST, "invalid", "not valid JSON");
    server
        .raw(
            Method::POST,
            "Patient",
            "application/fhir+json",
            b"{\"resourceType\": \"Pat".to_vec(),
        )
        .await
        .assert_outcome(StatusCode::BAD_REQUEST, "invalid", "ends early");
    let deep = format!(
        "{{\"resourceType\":\"Patient\",\"extension\":{}{}}}",
        "[".repeat(5000),
        "]".repeat(5000)
    );
    server
        .raw(
            Method::POST,
            "Patient",
            "application/fhir+json",
            deep.into_bytes(),
        )
        .await
        .assert_outcome(StatusCode::BAD_REQUEST, "invalid", "nested too deeply");
    server
        .raw(
            Method::POST,
            "Patient",
            "application/fhir+xml",
            b"<Patient/>".to_vec(),
        )
        .await
        .assert_outcome(StatusCode::UNSUPPORTED_MEDIA_TYPE, "not-supported", "XML");
    server
        .request(
            Method::GET,
            "Patient",
            None,
            &[("accept", "application/fhir+xml")],
        )
        .await
        .assert_outcome(StatusCode::NOT_ACCEPTABLE, "not-supported", "JSON only");
    server.get("Patient?_format=xml").await.assert_outcome(
        StatusCode::NOT_ACCEPTABLE,
        "not-supported",
        "JSON only",
    );
    server.post("Observation", &patient()).await.assert_outcome(
        StatusCode::BAD_REQUEST,
        "invalid",
        "does not match the endpoint",
    );
    server.post("Patient", &json!([1, 2])).await.assert_outcome(
        StatusCode::BAD_REQUEST,
        "invalid",
        "JSON object",
    );
    server
        .request(Method::POST, "Patient/123", Some(&patient()), &[])
        .await
        .assert_outcome(
            StatusCode::METHOD_NOT_ALLOWED,
            "not-supported",
            "not supported",
        );
    server.get("/../nowhere").await;
    let unknown = server
        .client
        .get(format!("http://{}/nowhere", server.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    // Invalid content: 422 with the FHIRPath of each problem, and no echo of the (PHI) value.
    let mut bad = patient();
    bad["gender"] = json!("Zorro-PHI");
    bad["birthDate"] = json!("1980-13-45");
    bad["unknownElement"] = json!(1);
    let reply = server.post("Patient", &bad).await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reply.text
    );
    assert!(!reply.text.contains("Zorro-PHI"));
    let expressions: Vec<String> = reply.body["issue"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["expression"][0].as_str().map(str::to_string))
        .collect();
    assert!(
        expressions.contains(&"Patient.gender".to_string()),
        "{expressions:?}"
    );
    assert!(
        expressions.contains(&"Patient.birthDate".to_string()),
        "{expressions:?}"
    );
    assert!(
        expressions.iter().any(|e| e.contains("unknownElement")),
        "{expressions:?}"
    );
    let missing_status = json!({"resourceType": "Observation", "code": {"text": "x"}});
    let reply = server.post("Observation", &missing_status).await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(reply.text.contains("Observation.status"), "{}", reply.text);
    // Nothing of the failed writes was stored.
    assert!(server.search_ids("Patient").await.is_empty());
}

async fn body_size_limit(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let database = match backend {
        Backend::Sqlite => fhirvault::config::DatabaseUrl::Sqlite(dir.path().join("db.sqlite")),
        Backend::Postgres => fhirvault::config::DatabaseUrl::Postgres(
            crate::common::postgres::fresh_database().await,
        ),
    };
    let server = TestServer::start_with(backend, dir, database, |c| c.max_body_bytes = 4096).await;
    let mut big = patient();
    big["name"][0]["text"] = json!("x".repeat(10_000));
    server.post("Patient", &big).await.assert_outcome(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too-long",
        "larger than",
    );
}

async fn validate_operation(backend: Backend) {
    let server = TestServer::start(backend).await;
    let ok = server.post("Patient/$validate", &patient()).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text);
    assert_eq!(ok.body["issue"][0]["severity"], "information");
    let mut bad = patient();
    bad["gender"] = json!("robot");
    let reply = server.post("Patient/$validate", &bad).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body["issue"][0]["severity"], "error");
    assert_eq!(reply.body["issue"][0]["expression"][0], "Patient.gender");
    let wrapped = json!({"resourceType": "Parameters", "parameter": [{"name": "resource", "resource": patient()}]});
    assert_eq!(
        server.post("Patient/$validate", &wrapped).await.body["issue"][0]["severity"],
        "information"
    );
    assert!(
        server.search_ids("Patient").await.is_empty(),
        "$validate stores nothing"
    );
}

async fn capability_statement(backend: Backend) {
    let server = TestServer::start(backend).await;
    let reply = server.get("metadata").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body["resourceType"], "CapabilityStatement");
    assert_eq!(reply.body["fhirVersion"], "4.0.1");
    let resources = reply.body["rest"][0]["resource"].as_array().unwrap();
    let interactions_of = |t: &str| -> Vec<String> {
        let resource = resources
            .iter()
            .find(|r| r["type"] == t)
            .unwrap_or_else(|| panic!("{t} listed"));
        resource["interaction"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["code"].as_str().unwrap().to_string())
            .collect()
    };
    for t in [
        "Patient",
        "Device",
        "Observation",
        "Organization",
        "Coverage",
        "Claim",
        "Consent",
        "Provenance",
    ] {
        let interactions = interactions_of(t);
        for code in [
            "read",
            "vread",
            "update",
            "patch",
            "delete",
            "create",
            "search-type",
            "history-instance",
        ] {
            assert!(interactions.iter().any(|i| i == code), "{t} {code}");
        }
    }
    // The audit trail is written by the server alone: clients read and search it.
    assert_eq!(
        interactions_of("AuditEvent"),
        [
            "read",
            "vread",
            "history-instance",
            "history-type",
            "search-type"
        ]
    );
    let patient_operations =
        &resources.iter().find(|r| r["type"] == "Patient").unwrap()["operation"];
    assert!(
        patient_operations
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["name"] == "everything"),
        "{patient_operations}"
    );
    let patient = resources.iter().find(|r| r["type"] == "Patient").unwrap();
    let params: Vec<&str> = patient["searchParam"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for p in [
        "_id",
        "_lastUpdated",
        "identifier",
        "name",
        "birthdate",
        "gender",
    ] {
        assert!(
            params.contains(&p),
            "Patient search param {p} in {params:?}"
        );
    }
    // Each parameter's documentation lists the modifiers it takes (R4 has no element for them):
    // the same list parsing enforces.
    let documentation = |resource_type: &str, name: &str| -> String {
        let resource = resources.iter().find(|r| r["type"] == resource_type);
        let params = resource.and_then(|r| r["searchParam"].as_array());
        let param = params.and_then(|ps| ps.iter().find(|p| p["name"] == name));
        let text = param.and_then(|p| p["documentation"].as_str());
        text.unwrap_or_else(|| panic!("{resource_type} {name}: documentation"))
            .to_string()
    };
    let identifier = documentation("Patient", "identifier");
    assert!(
        identifier.contains("Modifiers: :missing, :text, :of-type."),
        "{identifier}"
    );
    let code = documentation("Observation", "code");
    assert!(
        code.contains(":in, :not-in, :below, :above.") && !code.contains(":of-type"),
        "{code}"
    );
    let health = server
        .client
        .get(format!("http://{}/health", server.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    // rest.security: SMART on FHIR, no CORS, and no oauth-uris (no identity provider is configured
    // and this server has no authorize or token endpoint of its own).
    let security = &reply.body["rest"][0]["security"];
    assert_eq!(security["cors"], false);
    assert_eq!(
        security["service"][0]["coding"][0]["system"],
        "http://terminology.hl7.org/CodeSystem/restful-security-service"
    );
    assert_eq!(security["service"][0]["coding"][0]["code"], "SMART-on-FHIR");
    assert!(security.get("extension").is_none(), "{security}");
    let description = security["description"].as_str().unwrap_or_default();
    assert!(
        description.contains(&format!("{}/.well-known/smart-configuration", server.base)),
        "{description}"
    );
}

/// The identity provider's endpoints, when configured, are in `rest.security` as the SMART
/// oauth-uris extension, the same as in `.well-known/smart-configuration`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capability_statement_names_the_configured_oauth_endpoints() {
    let (dir, database) = crate::common::fresh_store(Backend::Sqlite).await;
    let server = TestServer::start_with(Backend::Sqlite, dir, database, |config| {
        config.auth.authorization_endpoint =
            Some("https://idp.example/realms/x/protocol/openid-connect/auth".into());
        config.auth.token_endpoint =
            Some("https://idp.example/realms/x/protocol/openid-connect/token".into());
    })
    .await;
    let statement = server.get("metadata").await.body;
    let smart = server.get(".well-known/smart-configuration").await.body;
    let uris = &statement["rest"][0]["security"]["extension"][0];
    assert_eq!(
        uris["url"],
        "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
    );
    assert_eq!(
        uris["extension"],
        json!([{"url": "authorize", "valueUri": smart["authorization_endpoint"]}, {"url": "token", "valueUri": smart["token_endpoint"]}])
    );
}

async fn seven_core_types_round_trip(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (pid, _) = server.create(&patient()).await;
    let (org, _) = server.create(&json!({"resourceType": "Organization", "name": "Klinik Wien", "identifier": [{"system": "urn:org", "value": "K1"}]})).await;
    let (device, _) = server
        .create(&json!({
            "resourceType": "Device",
            "identifier": [{"system": "urn:ieee:eui64", "value": "00-1B-C5-00-00-00-00-01"}],
            "status": "active",
            "patient": {"reference": format!("Patient/{pid}")}
        }))
        .await;
    server.create(&observation(&pid, "61")).await;
    let (coverage, _) = server
        .create(&json!({
            "resourceType": "Coverage", "status": "active",
            "beneficiary": {"reference": format!("Patient/{pid}")},
            "payor": [{"reference": format!("Organization/{org}")}]
        }))
        .await;
    server.create(&json!({
        "resourceType": "Claim", "status": "active",
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/claim-type", "code": "professional"}]},
        "use": "claim", "patient": {"reference": format!("Patient/{pid}")}, "created": "2026-03-05",
        "provider": {"reference": format!("Organization/{org}")},
        "priority": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/processpriority", "code": "normal"}]},
        "insurance": [{"sequence": 1, "focal": true, "coverage": {"reference": format!("Coverage/{coverage}")}}]
    })).await;
    server.create(&json!({
        "resourceType": "Consent", "status": "active",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": format!("Patient/{pid}")},
        "provision": {"type": "deny", "actor": [{"role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP"}]}, "reference": {"reference": format!("Organization/{org}")}}]}
    })).await;
    for (t, query) in [
        ("Device", format!("Device?patient={pid}")),
        ("Observation", format!("Observation?subject=Patient/{pid}")),
        ("Coverage", format!("Coverage?beneficiary={pid}")),
        ("Claim", format!("Claim?patient={pid}")),
        ("Consent", format!("Consent?patient={pid}")),
    ] {
        assert_eq!(server.search_ids(&query).await.len(), 1, "{t}");
    }
    assert_eq!(
        server.search_ids(&format!("Device?_id={device}")).await,
        vec![device]
    );
}

async fn pseudonym_is_assigned_and_kept(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (id, created) = server.create(&patient()).await;
    let system = fhirvault::config::DEFAULT_PSEUDONYM_SYSTEM;
    let pseudonym = created["identifier"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["system"] == system)
        .expect("pseudonym identifier")["value"]
        .clone();
    assert_eq!(pseudonym.as_str().unwrap().len(), 32);
    // A second patient with the same real identifier gets the same pseudonym; another does not.
    let (_, twin) = server.create(&patient()).await;
    assert_eq!(
        twin["identifier"].as_array().unwrap().last().unwrap()["value"],
        pseudonym
    );
    // An update that drops or forges it gets the assigned one back.
    let mut forged = created.clone();
    forged["identifier"] = json!([{"system": system, "value": "forged"}]);
    let updated = server.put(&format!("Patient/{id}"), &forged).await;
    let values: Vec<&Value> = updated.body["identifier"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["system"] == system)
        .map(|i| &i["value"])
        .collect();
    assert_eq!(values, vec![&pseudonym]);
    // The CRM finds the patient by pseudonym with a standard search.
    let found = server
        .search_ids(&format!(
            "Patient?identifier={system}|{}",
            pseudonym.as_str().unwrap()
        ))
        .await;
    assert_eq!(found.len(), 2);
    assert!(found.contains(&id));
}

/// A minimal valid example of each of the seven resource types the product centres on.
fn core_examples(pid: &str, org: &str) -> Vec<Value> {
    vec![
        patient(),
        json!({"resourceType": "Organization", "name": "Holter GmbH", "active": true}),
        json!({"resourceType": "Device", "status": "active", "identifier": [{"system": "urn:ieee:eui64", "value": "00-1B-C5-00-00-00-00-02"}],
               "patient": {"reference": format!("Patient/{pid}")}}),
        observation(pid, "58"),
        json!({"resourceType": "Coverage", "status": "active", "beneficiary": {"reference": format!("Patient/{pid}")},
               "payor": [{"reference": format!("Organization/{org}")}]}),
        json!({"resourceType": "Claim", "status": "active", "use": "claim", "created": "2026-03-05",
               "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/claim-type", "code": "professional"}]},
               "patient": {"reference": format!("Patient/{pid}")}, "provider": {"reference": format!("Organization/{org}")},
               "priority": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/processpriority", "code": "normal"}]},
               "insurance": [{"sequence": 1, "focal": true, "coverage": {"display": "Kasse"}}]}),
        json!({"resourceType": "Consent", "status": "active",
               "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
               "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
               "patient": {"reference": format!("Patient/{pid}")}}),
    ]
}

async fn full_lifecycle_of_each_core_type(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (pid, _) = server.create(&patient()).await;
    let (org, _) = server
        .create(&json!({"resourceType": "Organization", "name": "Kasse"}))
        .await;
    for example in core_examples(&pid, &org) {
        let t = example["resourceType"].as_str().unwrap().to_string();
        let (id, created) = server.create(&example).await;
        // Everything the client sent comes back unchanged (the server adds id, meta and, for a
        // Patient, the pseudonym identifier).
        for (key, value) in example.as_object().unwrap() {
            if key != "identifier" || t != "Patient" {
                assert_eq!(&created[key], value, "{t}.{key} kept");
            }
        }
        let read = server.get(&format!("{t}/{id}")).await;
        assert_eq!(read.status, StatusCode::OK, "{t} read");
        let mut changed = read.body.clone();
        changed["meta"]["tag"] = json!([{"system": "urn:test", "code": "updated"}]);
        let updated = server
            .request(
                Method::PUT,
                &format!("{t}/{id}"),
                Some(&changed),
                &[("if-match", "W/\"1\"")],
            )
            .await;
        assert_eq!(
            updated.status,
            StatusCode::OK,
            "{t} update: {}",
            updated.text
        );
        assert_eq!(updated.body["meta"]["versionId"], "2");
        assert_eq!(
            server.get(&format!("{t}/{id}/_history/1")).await.body["meta"]["versionId"],
            "1",
            "{t} vread 1"
        );
        assert_eq!(
            server.get(&format!("{t}/{id}/_history/2")).await.body["meta"]["tag"][0]["code"],
            "updated"
        );
        assert_eq!(
            server.search_ids(&format!("{t}?_id={id}")).await,
            vec![id.clone()],
            "{t} search by _id"
        );
        let patch = json!([{"op": "add", "path": "/meta/tag/-", "value": {"system": "urn:test", "code": "patched"}}]);
        let patched = server
            .raw(
                Method::PATCH,
                &format!("{t}/{id}"),
                "application/json-patch+json",
                serde_json::to_vec(&patch).unwrap(),
            )
            .await;
        assert_eq!(
            patched.status,
            StatusCode::OK,
            "{t} patch: {}",
            patched.text
        );
        assert_eq!(
            server.delete(&format!("{t}/{id}")).await.status,
            StatusCode::NO_CONTENT,
            "{t} delete"
        );
        server.get(&format!("{t}/{id}")).await.assert_outcome(
            StatusCode::GONE,
            "deleted",
            "deleted",
        );
        assert!(
            server.search_ids(&format!("{t}?_id={id}")).await.is_empty(),
            "{t} deleted drops out of search"
        );
        let history = server.get(&format!("{t}/{id}/_history")).await;
        assert_eq!(history.body["total"], 4, "{t} history");
    }
}

async fn concurrent_writes_keep_every_version(backend: Backend) {
    let server = std::sync::Arc::new(TestServer::start(backend).await);
    let (id, body) = server.create(&patient()).await;
    let mut tasks = Vec::new();
    for i in 0..20 {
        let (updater, id, mut body) = (server.clone(), id.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            body["active"] = json!(i % 2 == 0);
            let reply = updater.put(&format!("Patient/{id}"), &body).await;
            (
                reply.status,
                reply.body["meta"]["versionId"].as_str().map(str::to_string),
            )
        }));
        let creator = server.clone();
        tasks.push(tokio::spawn(async move {
            let reply = creator.post("Patient", &patient()).await;
            (reply.status, None)
        }));
    }
    let mut versions = Vec::new();
    for task in tasks {
        let (status, version) = task.await.unwrap();
        // PostgreSQL may report a concurrent update as a 409 the client retries; never a 5xx.
        assert!(
            status == StatusCode::OK
                || status == StatusCode::CREATED
                || status == StatusCode::CONFLICT,
            "{status}"
        );
        versions.extend(version);
    }
    let unique: std::collections::BTreeSet<_> = versions.iter().collect();
    assert_eq!(
        unique.len(),
        versions.len(),
        "no version number was handed out twice"
    );
    let history = server
        .get(&format!("Patient/{id}/_history?_count=100"))
        .await;
    assert_eq!(history.body["total"], versions.len() + 1);
    assert_eq!(server.search_ids("Patient?_count=100").await.len(), 21);
}

async fn hostile_bodies_are_refused_cleanly(backend: Backend) {
    let server = TestServer::start(backend).await;
    let bodies: Vec<Vec<u8>> = vec![
        b"null".to_vec(),
        b"\"Patient\"".to_vec(),
        b"{\"resourceType\": null}".to_vec(),
        b"{\"resourceType\": \"Patient\", \"name\": [{\"family\": \"a\\u0000b\"}]}".to_vec(),
        b"{\"resourceType\": \"Patient\", \"multipleBirthInteger\": 1e400}".to_vec(),
        b"{\"resourceType\": \"Patient\", \"multipleBirthInteger\": 99999999999999999999999}".to_vec(),
        b"{\"resourceType\": \"Patient\", \"id\": \"x\", \"id\": \"y\"}".to_vec(),
        vec![0xff, 0xfe, 0x00],
        b"{\"resourceType\": \"Patient\", \"contained\": [{\"resourceType\": \"Patient\", \"contained\": [{\"resourceType\": \"Patient\"}]}]}".to_vec(),
        format!("{{\"resourceType\": \"Patient\", \"name\": [{}]}}", vec!["{\"family\": \"x\"}"; 20_000].join(",")).into_bytes(),
    ];
    for body in bodies {
        let reply = server
            .raw(
                Method::POST,
                "Patient",
                "application/fhir+json",
                body.clone(),
            )
            .await;
        assert!(
            reply.status.is_client_error() || reply.status == StatusCode::CREATED,
            "{} for {:?}",
            reply.status,
            String::from_utf8_lossy(&body[..body.len().min(80)])
        );
        if reply.status.is_client_error() {
            assert_eq!(reply.body["resourceType"], "OperationOutcome");
        }
    }
    let health = server
        .client
        .get(format!("http://{}/health", server.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
}

async fn history_at_a_point_in_time(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (id, body) = server.create(&patient()).await;
    let first_updated = body["meta"]["lastUpdated"].as_str().unwrap().to_string();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    server.put(&format!("Patient/{id}"), &body).await;
    let at = server
        .get(&format!(
            "Patient/{id}/_history?_at={}",
            urlencode(&first_updated)
        ))
        .await;
    assert_eq!(at.status, StatusCode::OK, "{}", at.text);
    assert_eq!(at.body["total"], 1);
    assert_eq!(at.body["entry"][0]["resource"]["meta"]["versionId"], "1");
    // With three versions, _at at the last one's time gives only the version current then.
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let third = server.put(&format!("Patient/{id}"), &body).await;
    let third_updated = third.body["meta"]["lastUpdated"]
        .as_str()
        .unwrap()
        .to_string();
    let at = server
        .get(&format!(
            "Patient/{id}/_history?_at={}",
            urlencode(&third_updated)
        ))
        .await;
    assert_eq!(at.body["total"], 1, "{}", at.text);
    assert_eq!(at.body["entry"][0]["resource"]["meta"]["versionId"], "3");
}

/// A poll that takes `_since` from the previous answer's `meta.lastUpdated` must not miss a
/// version that was stamped before that answer but committed after it (a slow commit).
async fn polling_from_a_bundles_last_updated_misses_no_slow_commit(backend: Backend) {
    use sqlx::{AssertSqlSafe, Connection};
    let (dir, database) = crate::common::fresh_store(backend).await;
    // Read AuditEvents go to the journal: the reads below must not wait for the held lock.
    let server = TestServer::start_with(backend, dir, database, |config| {
        config.audit.read_records = fhirvault::config::ReadRecords::Journal;
    })
    .await;
    let (first, _) = server.create(&patient()).await;
    // Another connection holds the write lock: the next create is stamped, then waits to commit.
    let mut holder = crate::audit_chain::connect(&server.database).await;
    let hold: &[&str] = match backend {
        Backend::Sqlite => &["BEGIN IMMEDIATE"],
        Backend::Postgres => &[
            "BEGIN",
            "LOCK TABLE resource_versions IN SHARE ROW EXCLUSIVE MODE",
        ],
    };
    for sql in hold {
        sqlx::query(AssertSqlSafe(*sql))
            .execute(&mut holder)
            .await
            .expect("hold the write lock");
    }
    let slow = {
        let (client, url, body) = (server.client.clone(), server.url("Patient"), patient());
        tokio::spawn(async move { client.post(url).json(&body).send().await })
    };
    // Give the create time to be stamped (if it is not yet, the poll below proves less).
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let history = server.get("_history").await;
    assert_eq!(history.status, StatusCode::OK, "{}", history.text);
    assert_eq!(history.body["entry"][0]["resource"]["id"], first.as_str());
    let history_mark = history.body["meta"]["lastUpdated"]
        .as_str()
        .unwrap()
        .to_string();
    let search = server.get("Patient").await;
    assert_eq!(search.body["total"], 1, "{}", search.text);
    let search_mark = search.body["meta"]["lastUpdated"]
        .as_str()
        .unwrap()
        .to_string();
    sqlx::query("ROLLBACK")
        .execute(&mut holder)
        .await
        .expect("release the write lock");
    holder.close().await.expect("close");
    let created = slow.await.expect("task").expect("create answered");
    assert_eq!(created.status(), reqwest::StatusCode::CREATED);
    let created: Value = created.json().await.expect("JSON");
    let id = created["id"].as_str().unwrap();
    // The next polls, from the marks, see the slow version.
    let next = server
        .get(&format!("_history?_since={}", urlencode(&history_mark)))
        .await;
    let polled: Vec<&str> = next.body["entry"]
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .filter_map(|e| e["resource"]["id"].as_str())
                .collect()
        })
        .unwrap_or_default();
    assert!(polled.contains(&id), "{history_mark}: {}", next.text);
    let searched = server
        .search_ids(&format!(
            "Patient?_lastUpdated=ge{}",
            urlencode(&search_mark)
        ))
        .await;
    assert!(
        searched.iter().any(|s| s == id),
        "{search_mark}: {searched:?}"
    );
}

both_backends!(
    create_read_vread,
    server_sets_meta_and_ignores_client_versions,
    decimals_keep_their_precision,
    update_versions_and_preconditions,
    update_as_create,
    delete_then_gone_and_history,
    history_type_system_since_and_paging,
    conditional_create_update_delete,
    patch_with_json_patch,
    prefer_return_and_conditional_read,
    errors_are_operation_outcomes,
    body_size_limit,
    validate_operation,
    capability_statement,
    seven_core_types_round_trip,
    pseudonym_is_assigned_and_kept,
    full_lifecycle_of_each_core_type,
    concurrent_writes_keep_every_version,
    hostile_bodies_are_refused_cleanly,
    history_at_a_point_in_time,
    polling_from_a_bundles_last_updated_misses_no_slow_commit,
);
