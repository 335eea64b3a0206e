//! The audit trail of the running server: every interaction leaves exactly the AuditEvents it
//! should, with who, what, where from, why and how it ended; refused and failed requests too;
//! break-the-glass is flagged; re-identification and HL7 v2 ingestion are recorded; the trail is
//! the auditors' alone and is never written through the API; it holds no PHI in plain text, and
//! its chains verify afterwards.

use base64::Engine;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{Backend, Reply, TestServer, match_ids};

async fn as_auditor(server: &TestServer, query: &str) -> Vec<Value> {
    let auditor = server.token("auditor", "user/*.rs", None, None);
    let reply = server
        .request_as(&auditor, Method::GET, &format!("{query}&_count=500"), None)
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{query}: {}", reply.text);
    reply.body["entry"]
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .filter(|e| e["search"]["mode"] == "match")
                .map(|e| e["resource"].clone())
                .collect()
        })
        .unwrap_or_default()
}

fn subtypes(events: &[Value]) -> Vec<String> {
    let mut codes: Vec<String> = events
        .iter()
        .flat_map(|e| e["subtype"].as_array().cloned().unwrap_or_default())
        .filter(|c| c["system"] == "http://hl7.org/fhir/restful-interaction")
        .filter_map(|c| c["code"].as_str().map(str::to_string))
        .collect();
    codes.sort();
    codes
}

fn has_entity(event: &Value, reference: &str) -> bool {
    event["entity"].as_array().is_some_and(|entities| {
        entities.iter().any(|e| {
            e["what"]["reference"]
                .as_str()
                .is_some_and(|r| r.starts_with(reference))
        })
    })
}

async fn every_interaction_leaves_its_record(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (patient, _) = server
        .create(&json!({"resourceType": "Patient", "gender": "female",
        "managingOrganization": {"reference": "Organization/org-a"}}))
        .await;
    let (obs, _) = server.create(&json!({"resourceType": "Observation", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": format!("Patient/{patient}")}, "valueQuantity": {"value": 72, "unit": "/min"}})).await;
    let path = format!("Observation/{obs}");
    assert_eq!(server.get(&path).await.status, StatusCode::OK);
    assert_eq!(
        server.get(&format!("{path}/_history/1")).await.status,
        StatusCode::OK
    );
    let mut body = server.get(&path).await.body;
    body["status"] = json!("amended");
    assert_eq!(server.put(&path, &body).await.status, StatusCode::OK);
    let patch = json!([{"op": "replace", "path": "/status", "value": "corrected"}]);
    let reply = server
        .raw(
            Method::PATCH,
            &path,
            "application/json-patch+json",
            serde_json::to_vec(&patch).unwrap(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(
        server
            .get(&format!("Observation?subject=Patient/{patient}"))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        server.get(&format!("{path}/_history")).await.status,
        StatusCode::OK
    );
    assert!(server.delete(&path).await.status.is_success());
    // Failures and refusals are recorded too.
    assert_eq!(
        server.get("Observation/no-such-id").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        server
            .post("Observation", &json!({"resourceType": "Observation"}))
            .await
            .status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let stranger = server.token("clinician", "user/*.rs", None, Some("org-b"));
    assert_eq!(
        server
            .request_as(&stranger, Method::GET, &format!("Patient/{patient}"), None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );

    // Exactly one record per interaction on the Observation, in order of what happened.
    let about_obs = as_auditor(&server, &format!("AuditEvent?entity={path}")).await;
    // (Read twice: once to check, once to take the body to update.)
    assert_eq!(
        subtypes(&about_obs),
        [
            "create",
            "delete",
            "history-instance",
            "patch",
            "read",
            "read",
            "update",
            "vread"
        ],
        "{about_obs:#?}"
    );
    // The network address is found by whole segments (a subnet), not by any prefix.
    for (address, found) in [
        ("127.0.0.1", 8),
        ("127.0.0", 8),
        ("127.0.", 8),
        ("127", 8),
        ("127.0.0.2", 0),
        ("127.0.0.", 8),
        ("12", 0),
    ] {
        let matched = as_auditor(
            &server,
            &format!("AuditEvent?entity={path}&address={address}"),
        )
        .await;
        assert_eq!(matched.len(), found, "address={address}");
    }
    let read = about_obs
        .iter()
        .find(|e| subtypes(std::slice::from_ref(e)) == ["read"])
        .expect("read event");
    assert_eq!(read["action"], "R");
    assert_eq!(read["outcome"], "0");
    assert_eq!(read["type"]["code"], "rest");
    let user = &read["agent"][0];
    assert_eq!(user["who"]["identifier"]["value"], "fhirvault-cli/admin");
    assert_eq!(user["who"]["identifier"]["system"], server.base.as_str());
    assert_eq!(user["role"][0]["coding"][0]["code"], "admin");
    assert_eq!(user["network"]["address"], "127.0.0.1");
    assert_eq!(user["requestor"], true);
    assert_eq!(read["purposeOfEvent"][0]["coding"][0]["code"], "HSYSADMIN");
    assert_eq!(
        read["source"]["observer"]["identifier"]["value"],
        server.base.as_str()
    );
    assert!(
        has_entity(read, &format!("Patient/{patient}")),
        "the patient it concerns"
    );
    assert!(
        has_entity(read, &format!("{path}/_history/")),
        "the version read"
    );

    // The search: its query (sealed with the event) and the patients it returned.
    // (The auditor's own searches concern the patient too: they returned its AuditEvents.)
    let searches = as_auditor(&server, &format!("AuditEvent?patient=Patient/{patient}&subtype=search-type&agent-role=urn:fhirvault:role|admin")).await;
    assert_eq!(searches.len(), 1, "{searches:#?}");
    assert_eq!(searches[0]["action"], "E");
    let query = searches[0]["entity"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|e| e["query"].as_str())
        .expect("query entity");
    let query = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(query)
            .unwrap(),
    )
    .unwrap();
    assert!(
        query.contains(&format!("subject=Patient%2F{patient}")),
        "{query}"
    );

    // Three requests failed or were refused; each says how, with the caller it was.
    let failed = as_auditor(&server, "AuditEvent?outcome=4").await;
    assert_eq!(failed.len(), 3, "{failed:#?}");
    let descriptions: Vec<&str> = failed
        .iter()
        .filter_map(|e| e["outcomeDesc"].as_str())
        .collect();
    assert!(
        descriptions.iter().any(|d| d.starts_with("404:"))
            && descriptions.iter().any(|d| d.starts_with("422:")),
        "{descriptions:?}"
    );
    let refused = failed
        .iter()
        .find(|e| e["agent"][0]["role"][0]["coding"][0]["code"] == "clinician")
        .expect("the clinician's refusal");
    assert!(has_entity(refused, &format!("Patient/{patient}")));
    assert!(
        refused["agent"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["who"]["reference"] == "Organization/org-b")
    );

    // The codings of AuditEvents are the server's fixed ones: no word rows are stored for their
    // displays, and `:text` finds those words through the codings themselves.
    let searches_by_text = as_auditor(
        &server,
        &format!("AuditEvent?patient=Patient/{patient}&subtype:text=SEARCH type&type:text=restful operation&agent-role=urn:fhirvault:role|admin"),
    )
    .await;
    assert_eq!(
        searches_by_text
            .iter()
            .map(|e| &e["id"])
            .collect::<Vec<_>>(),
        searches.iter().map(|e| &e["id"]).collect::<Vec<_>>()
    );
    let rest = as_auditor(&server, "AuditEvent?type:text=restful").await;
    assert!(!rest.is_empty() && rest.iter().all(|e| e["type"]["code"] == "rest"));
    assert!(
        as_auditor(&server, "AuditEvent?type:text=restful nonsense")
            .await
            .is_empty()
    );
    // The chains hold every one of them.
    let (dir, database) = server.stop().await;
    let (code, stdout, stderr) =
        crate::audit_chain::fhirvault(dir.path(), &database, &["audit", "verify"]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stdout.contains(" 0 broken"), "{stdout}");
}

async fn the_trail_is_the_auditors_and_never_written_through_the_api(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (patient, _) = server.create(&json!({"resourceType": "Patient"})).await;
    let events = as_auditor(&server, &format!("AuditEvent?patient=Patient/{patient}")).await;
    let id = events[0]["id"].as_str().expect("id").to_string();
    let auditor = server.token("auditor", "user/*.cruds", None, None);
    // Nobody writes it: not the auditor, not an admin, not inside a Bundle.
    let event = &events[0];
    for (token, method, path) in [
        (auditor.as_str(), Method::PUT, format!("AuditEvent/{id}")),
        (auditor.as_str(), Method::DELETE, format!("AuditEvent/{id}")),
        (auditor.as_str(), Method::POST, "AuditEvent".to_string()),
    ] {
        let reply = server
            .request_as(token, method.clone(), &path, Some(event))
            .await;
        reply.assert_outcome(
            StatusCode::METHOD_NOT_ALLOWED,
            "not-supported",
            "written by the server only",
        );
    }
    server
        .put(&format!("AuditEvent/{id}"), event)
        .await
        .assert_outcome(
            StatusCode::METHOD_NOT_ALLOWED,
            "not-supported",
            "server only",
        );
    server
        .delete(&format!("AuditEvent/{id}"))
        .await
        .assert_outcome(
            StatusCode::METHOD_NOT_ALLOWED,
            "not-supported",
            "server only",
        );
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "AuditEvent", "recorded": "2026-01-01T00:00:00Z",
            "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest"},
            "agent": [{"requestor": true, "who": {"display": "x"}}], "source": {"observer": {"display": "x"}}},
         "request": {"method": "POST", "url": "AuditEvent"}}]});
    assert!(!server.post("", &bundle).await.status.is_success());
    // Nor does an admin read it, directly or across types.
    server
        .get(&format!("AuditEvent/{id}"))
        .await
        .assert_outcome(StatusCode::FORBIDDEN, "forbidden", "AuditEvent");
    server
        .get("AuditEvent")
        .await
        .assert_outcome(StatusCode::FORBIDDEN, "forbidden", "AuditEvent");
    for query in ["?_type=AuditEvent,Patient", "_history"] {
        let reply = server.get(query).await;
        assert_eq!(reply.status, StatusCode::OK, "{query}: {}", reply.text);
        let types: Vec<&str> = reply.body["entry"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["resource"]["resourceType"].as_str())
            .collect();
        assert!(
            !types.contains(&"AuditEvent") && !types.is_empty(),
            "{query}: {types:?}"
        );
    }
    let reply = server
        .get(&format!(
            "Patient?_id={patient}&_revinclude=AuditEvent:patient"
        ))
        .await;
    assert_eq!(match_ids(&reply.body), std::slice::from_ref(&patient));
    assert_eq!(
        reply.body["entry"].as_array().unwrap().len(),
        1,
        "no AuditEvent included"
    );
    // The auditor's own reads are recorded like anyone's.
    let read = server
        .request_as(&auditor, Method::GET, &format!("AuditEvent/{id}"), None)
        .await;
    assert_eq!(read.status, StatusCode::OK);
    let about = as_auditor(
        &server,
        &format!("AuditEvent?entity=AuditEvent/{id}&outcome=0"),
    )
    .await;
    assert_eq!(subtypes(&about), ["read"]);
    // Every attempt to change it (or, for the admin, to read it) is on record, refused.
    let attempts = as_auditor(
        &server,
        &format!("AuditEvent?entity=AuditEvent/{id}&outcome=4"),
    )
    .await;
    assert_eq!(
        subtypes(&attempts),
        ["delete", "delete", "read", "update", "update"]
    );
}

async fn break_the_glass_reidentification_and_ingestion_are_recorded(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (patient, stored) = server.create(&json!({"resourceType": "Patient", "managingOrganization": {"reference": "Organization/org-a"},
        "identifier": [{"system": "urn:oid:1.2.40.0.10.1.4.3.1", "value": "1234010180"}]})).await;
    let clinician = server.token("clinician", "user/*.rs", None, Some("org-a"));
    let authorization = format!("Bearer {clinician}");
    let reply = server
        .request(
            Method::GET,
            &format!("Patient/{patient}"),
            None,
            &[
                ("authorization", &authorization),
                ("x-purpose-of-use", "ETREAT"),
            ],
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let flagged = as_auditor(
        &server,
        "AuditEvent?_security=http://terminology.hl7.org/CodeSystem/v3-ActReason|BTG",
    )
    .await;
    assert_eq!(flagged.len(), 1, "{flagged:#?}");
    assert!(has_entity(&flagged[0], &format!("Patient/{patient}")));
    assert!(
        flagged[0]["purposeOfEvent"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["coding"][0]["code"] == "ETREAT")
    );
    // A clinician finding a person by the pseudonym the CRM knows: re-identification.
    let pseudonym = stored["identifier"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["system"] == "urn:fhirvault:pseudonym")
        .unwrap()["value"]
        .as_str()
        .unwrap()
        .to_string();
    let query = format!("Patient?identifier=urn:fhirvault:pseudonym|{pseudonym}");
    let reply = server
        .request_as(&clinician, Method::GET, &query, None)
        .await;
    assert_eq!(match_ids(&reply.body), std::slice::from_ref(&patient));
    let reidentified = as_auditor(
        &server,
        &format!("AuditEvent?patient=Patient/{patient}&subtype=reidentify"),
    )
    .await;
    assert_eq!(reidentified.len(), 1, "{reidentified:#?}");
    // An HL7 v2 message: one record, in the transaction that stored what it mapped to.
    let message = std::fs::read(format!(
        "{}/tests/fixtures/hl7v2/holter-pcd01.hl7",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("fixture");
    let post_hl7 = async |message: &[u8]| {
        let response = server
            .client
            .post(format!("http://{}/hl7v2", server.addr))
            .header("content-type", "x-application/hl7-v2+er7")
            .body(message.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    };
    post_hl7(&message).await;
    let ingested = as_auditor(
        &server,
        "AuditEvent?type=http://dicom.nema.org/resources/ontology/DCM|110107",
    )
    .await;
    assert_eq!(ingested.len(), 1, "{ingested:#?}");
    assert_eq!(
        ingested[0]["agent"][0]["role"][0]["coding"][0]["code"], "admin",
        "the sender, not the server"
    );
    assert_eq!(ingested[0]["agent"][0]["network"]["address"], "127.0.0.1");
    let entities = ingested[0]["entity"].as_array().unwrap();
    assert!(
        entities
            .iter()
            .any(|e| e["what"]["identifier"]["value"].is_string()),
        "the message control id"
    );
    assert!(entities.iter().any(|e| {
        e["what"]["reference"]
            .as_str()
            .is_some_and(|r| r.starts_with("Observation/"))
    }));
    // Resends are answered from the store, and each answer is recorded once, over HTTP (not
    // twice: the ingestor records it, the HTTP layer does not) and over MLLP alike.
    post_hl7(&message).await;
    let mut mllp = fhirvault::hl7v2::mllp::MllpClient::connect(server.mllp)
        .await
        .expect("MLLP connect");
    let ack = mllp.request(&message).await.expect("MLLP answer");
    assert!(String::from_utf8_lossy(&ack).contains("MSA|AA|"), "{ack:?}");
    let ingested = as_auditor(
        &server,
        "AuditEvent?type=http://dicom.nema.org/resources/ontology/DCM|110107",
    )
    .await;
    assert_eq!(ingested.len(), 3, "{ingested:#?}");
    let resends: Vec<&Value> = ingested
        .iter()
        .filter(|e| {
            e["outcomeDesc"]
                .as_str()
                .is_some_and(|d| d.contains("resend"))
        })
        .collect();
    assert_eq!(resends.len(), 2, "{ingested:#?}");
    for resend in resends {
        assert_eq!(resend["outcome"], "0");
        let entities = resend["entity"].as_array().unwrap();
        assert!(entities.iter().any(|e| {
            e["what"]["reference"]
                .as_str()
                .is_some_and(|r| r.starts_with("Provenance/"))
        }));
        assert!(
            entities
                .iter()
                .any(|e| e["what"]["identifier"]["value"].is_string())
        );
    }
}

/// The query of a search may hold PHI (`family=…`): it is in the sealed AuditEvent only.
async fn no_phi_in_the_audit_tables(backend: Backend) {
    if backend != Backend::Sqlite {
        return; // PostgreSQL's dump is checked in audit_chain.rs; the file check is SQLite's.
    }
    let server = TestServer::start(backend).await;
    let marker = "Hohenwarther";
    assert_eq!(
        server.get(&format!("Patient?family={marker}")).await.status,
        StatusCode::OK
    );
    let reply: Reply = server
        .get(&format!("Patient?name={marker}x&birthdate=1970-01-01"))
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let (dir, _) = server.stop().await;
    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("fhirvault.db"))
        {
            bytes.extend(std::fs::read(&path).unwrap());
        }
    }
    assert!(!bytes.is_empty());
    for needle in [
        marker.to_string(),
        base64::engine::general_purpose::STANDARD.encode(format!("family={marker}")),
    ] {
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
            "{needle} in the database file"
        );
    }
}

/// Requests refused before the server knows who sent them are failed logins: where they came
/// from, what they asked for, why they were refused.
async fn refused_logins_are_recorded(backend: Backend) {
    let server = TestServer::start(backend).await;
    let no_token = server
        .client
        .get(server.url("Patient/p-17"))
        .header("authorization", "")
        .send()
        .await
        .expect("sent");
    assert_eq!(no_token.status(), StatusCode::UNAUTHORIZED);
    let forged = server
        .request(
            Method::GET,
            "Observation?code=8867-4",
            None,
            &[("authorization", "Bearer not.a.token")],
        )
        .await;
    assert_eq!(forged.status, StatusCode::UNAUTHORIZED);
    let roleless = server.token("no-such-role", "user/*.rs", None, None);
    assert_eq!(
        server
            .request_as(&roleless, Method::GET, "Patient", None)
            .await
            .status,
        StatusCode::FORBIDDEN
    );

    let logins = as_auditor(
        &server,
        "AuditEvent?type=http://dicom.nema.org/resources/ontology/DCM|110114",
    )
    .await;
    assert_eq!(logins.len(), 3, "{logins:#?}");
    for login in &logins {
        assert_eq!(login["subtype"][0]["code"], "110122");
        assert_eq!(login["outcome"], "4");
        assert_eq!(login["agent"][0]["who"]["display"], "unauthenticated");
        assert_eq!(login["agent"][0]["network"]["address"], "127.0.0.1");
    }
    let descriptions: Vec<&str> = logins
        .iter()
        .filter_map(|e| e["outcomeDesc"].as_str())
        .collect();
    assert_eq!(
        descriptions
            .iter()
            .filter(|d| d.starts_with("401:"))
            .count(),
        2,
        "{descriptions:?}"
    );
    assert_eq!(
        descriptions
            .iter()
            .filter(|d| d.starts_with("403:"))
            .count(),
        1,
        "{descriptions:?}"
    );
    assert!(
        logins.iter().any(|e| has_entity(e, "Patient/p-17")),
        "what the refused request asked for"
    );
    // Found by address too, like every record.
    assert_eq!(
        as_auditor(
            &server,
            "AuditEvent?subtype=http://dicom.nema.org/resources/ontology/DCM|110122&address=127.0.0"
        )
        .await
        .len(),
        3
    );
}

both_backends!(
    refused_logins_are_recorded,
    every_interaction_leaves_its_record,
    the_trail_is_the_auditors_and_never_written_through_the_api,
    break_the_glass_reidentification_and_ingestion_are_recorded,
    no_phi_in_the_audit_tables,
);
