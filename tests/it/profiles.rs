//! The project's profiles (`profiles/`) through a real server, on both backends: writes that claim
//! a profile are validated against it, `$validate?profile=` checks against a named one, the
//! CapabilityStatement lists them, and the StructureDefinitions can be read.

use crate::common::{Backend, Reply, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const OBSERVATION: &str = "https://fhirvault.example/StructureDefinition/holter-observation";
const REPORT: &str = "https://fhirvault.example/StructureDefinition/holter-diagnosticreport";
const DEVICE: &str = "https://fhirvault.example/StructureDefinition/holter-device";
const PATIENT: &str = "https://fhirvault.example/StructureDefinition/pseudonymous-patient";

fn example(name: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("profiles/examples")
        .join(name);
    let mut resource: Value =
        serde_json::from_slice(&std::fs::read(path).expect("example")).expect("JSON");
    resource.as_object_mut().expect("object").remove("id");
    resource
}

/// The example Observation, about `patient`, recorded by `device`.
fn observation(patient: &str, device: &str) -> Value {
    let mut resource = example("Observation-holter-heart-rate.json");
    resource["subject"] = json!({"reference": format!("Patient/{patient}")});
    resource["device"] = json!({"reference": format!("Device/{device}")});
    resource
}

/// The issue at `expression`, which must be an error with `code` naming `profile`.
fn assert_issue(reply: &Reply, expression: &str, code: &str, profile: &str) {
    assert_eq!(
        reply.body["resourceType"], "OperationOutcome",
        "{}",
        reply.text
    );
    let issues = reply.body["issue"].as_array().expect("issues");
    let issue = issues
        .iter()
        .find(|issue| issue["expression"][0] == expression)
        .unwrap_or_else(|| panic!("no issue at {expression}: {}", reply.text));
    assert_eq!(issue["severity"], "error", "{}", reply.text);
    assert_eq!(issue["code"], code, "{}", reply.text);
    assert!(
        issue["diagnostics"]
            .as_str()
            .unwrap_or_default()
            .contains(profile),
        "{}",
        reply.text
    );
}

async fn writes_claiming_a_profile_are_checked_against_it(backend: Backend) {
    let server = TestServer::start(backend).await;

    // The examples pass, in dependency order, and keep their claim.
    let (patient, stored) = server
        .create(&example("Patient-pseudonymous-example.json"))
        .await;
    assert_eq!(stored["meta"]["profile"][0], PATIENT);
    let mut recorder = example("Device-holter-recorder.json");
    recorder["patient"] = json!({"reference": format!("Patient/{patient}")});
    let (device, _) = server.create(&recorder).await;
    let (hr, _) = server.create(&observation(&patient, &device)).await;
    let mut report = example("DiagnosticReport-holter-report.json");
    report["subject"] = json!({"reference": format!("Patient/{patient}")});
    report["result"] = json!([{"reference": format!("Observation/{hr}")}]);
    server.create(&report).await;

    // Create: a missing subject and a wrong category, reported together.
    let mut bad = observation(&patient, &device);
    bad.as_object_mut().unwrap().remove("subject");
    bad["category"][0]["coding"][0]["code"] = json!("laboratory");
    let reply = server.post("Observation", &bad).await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reply.text
    );
    assert_issue(&reply, "Observation.subject", "required", OBSERVATION);
    assert_issue(
        &reply,
        "Observation.category[0].coding[0]",
        "code-invalid",
        OBSERVATION,
    );

    // A pseudonymous Patient may not carry a name; the name is not echoed.
    let mut named = example("Patient-pseudonymous-example.json");
    named["name"] = json!([{"family": "Unverwechselbar"}]);
    let reply = server.post("Patient", &named).await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reply.text
    );
    assert_issue(&reply, "Patient.name", "structure", PATIENT);
    assert!(!reply.text.contains("Unverwechselbar"));

    // Update and patch go through the same check.
    let mut wrong_target = observation(&patient, &device);
    wrong_target["id"] = json!(hr);
    wrong_target["subject"] = json!({"reference": format!("Device/{device}")});
    let reply = server
        .put(&format!("Observation/{hr}"), &wrong_target)
        .await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reply.text
    );
    assert_issue(&reply, "Observation.subject", "value", OBSERVATION);
    let patch = json!([{"op": "remove", "path": "/identifier"}]);
    let reply = server
        .raw(
            Method::PATCH,
            &format!("Device/{device}"),
            "application/json-patch+json",
            serde_json::to_vec(&patch).unwrap(),
        )
        .await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reply.text
    );
    assert_issue(&reply, "Device.identifier", "required", DEVICE);

    // A profile the server does not know is accepted, as R4 allows.
    let mut unknown = observation(&patient, &device);
    unknown["meta"]["profile"] = json!(["https://example.org/StructureDefinition/elsewhere"]);
    unknown.as_object_mut().unwrap().remove("subject");
    server.create(&unknown).await;
}

async fn transactions_check_claimed_profiles(backend: Backend) {
    let server = TestServer::start(backend).await;
    let patient_url = "urn:uuid:0b7a6c1e-2d3f-4a5b-8c9d-0e1f2a3b4c5d";
    let mut observation = example("Observation-holter-heart-rate.json");
    observation["subject"] = json!({"reference": patient_url});
    observation.as_object_mut().unwrap().remove("device");
    let bundle = |observation: &Value| {
        json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"fullUrl": patient_url, "resource": example("Patient-pseudonymous-example.json"), "request": {"method": "POST", "url": "Patient"}},
            {"resource": observation, "request": {"method": "POST", "url": "Observation"}}
        ]})
    };
    let reply = server.post("", &bundle(&observation)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);

    observation
        .as_object_mut()
        .unwrap()
        .remove("effectivePeriod");
    let reply = server.post("", &bundle(&observation)).await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        reply.text
    );
    assert_issue(&reply, "Observation.effective", "required", OBSERVATION);
    assert_eq!(
        server.search_ids("Observation").await.len(),
        1,
        "the failed transaction stored nothing"
    );
}

async fn validate_with_a_named_profile(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut unclaimed = observation("p1", "d1");
    unclaimed.as_object_mut().unwrap().remove("meta");
    unclaimed.as_object_mut().unwrap().remove("subject");

    // Without a profile only the base rules apply.
    let reply = server.post("Observation/$validate", &unclaimed).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(
        reply.body["issue"][0]["severity"], "information",
        "{}",
        reply.text
    );

    let url = format!("Observation/$validate?profile={OBSERVATION}");
    let reply = server.post(&url, &unclaimed).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_issue(&reply, "Observation.subject", "required", OBSERVATION);
    let reply = server.post(&url, &observation("p1", "d1")).await;
    assert_eq!(
        reply.body["issue"][0]["severity"], "information",
        "{}",
        reply.text
    );

    // The profile as a parameter of a Parameters body.
    let parameters = json!({"resourceType": "Parameters", "parameter": [
        {"name": "resource", "resource": unclaimed},
        {"name": "profile", "valueUri": OBSERVATION}
    ]});
    let reply = server.post("Observation/$validate", &parameters).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_issue(&reply, "Observation.subject", "required", OBSERVATION);

    // A profile of another type is a finding; an unknown profile cannot be validated against.
    let reply = server
        .post(
            &format!("Patient/$validate?profile={DEVICE}"),
            &example("Patient-pseudonymous-example.json"),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.body["issue"][0]["code"], "invalid", "{}", reply.text);
    assert!(
        reply.body["issue"][0]["diagnostics"]
            .as_str()
            .unwrap()
            .contains("constrains Device"),
        "{}",
        reply.text
    );
    server
        .post(
            "Observation/$validate?profile=https://example.org/StructureDefinition/unknown",
            &unclaimed,
        )
        .await
        .assert_outcome(
            StatusCode::BAD_REQUEST,
            "not-supported",
            "not a profile this server knows",
        );
    let parameters = json!({"resourceType": "Parameters", "parameter": [
        {"name": "resource", "resource": unclaimed},
        {"name": "profile", "valueCanonical": "https://example.org/StructureDefinition/unknown"}
    ]});
    server
        .post("Observation/$validate", &parameters)
        .await
        .assert_outcome(StatusCode::BAD_REQUEST, "not-supported", "supportedProfile");
}

async fn capability_statement_lists_the_profiles(backend: Backend) {
    let server = TestServer::start(backend).await;
    let reply = server.get("metadata").await;
    assert_eq!(reply.status, StatusCode::OK);
    let resources = reply.body["rest"][0]["resource"].as_array().unwrap();
    for (resource_type, url) in [
        ("Observation", OBSERVATION),
        ("DiagnosticReport", REPORT),
        ("Device", DEVICE),
        ("Patient", PATIENT),
    ] {
        let resource = resources
            .iter()
            .find(|r| r["type"] == resource_type)
            .unwrap();
        assert_eq!(
            resource["supportedProfile"],
            json!([url]),
            "{resource_type}"
        );
    }
    let organization = resources
        .iter()
        .find(|r| r["type"] == "Organization")
        .unwrap();
    assert!(organization.get("supportedProfile").is_none());
}

async fn profiles_are_read_only_conformance_resources(backend: Backend) {
    let server = TestServer::start(backend).await;
    let reply = server.get("StructureDefinition/holter-observation").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.body["url"], OBSERVATION);
    assert_eq!(reply.body["meta"]["versionId"], "1");
    assert_eq!(reply.header("etag"), Some("W/\"1\""));
    assert_eq!(
        server
            .get("StructureDefinition/holter-observation/_history/1")
            .await
            .body["url"],
        OBSERVATION
    );
    let value_set = server.get("ValueSet/holter-observation-category").await;
    assert_eq!(value_set.status, StatusCode::OK, "{}", value_set.text);
    server
        .get("StructureDefinition/not-here")
        .await
        .assert_outcome(StatusCode::NOT_FOUND, "not-found", "does not exist");

    let mut changed = reply.body.clone();
    changed["status"] = json!("retired");
    server
        .put("StructureDefinition/holter-observation", &changed)
        .await
        .assert_outcome(StatusCode::METHOD_NOT_ALLOWED, "not-supported", "read-only");
    server
        .delete("StructureDefinition/holter-observation")
        .await
        .assert_outcome(StatusCode::METHOD_NOT_ALLOWED, "not-supported", "read-only");
    assert_eq!(
        server
            .get("StructureDefinition/holter-observation")
            .await
            .body["status"],
        "active"
    );
}

/// What the HL7v2 pipeline produces from a PCD-01 Holter ORU claims the profiles, is stored (the
/// claims were checked on the way in), and validates against each claimed profile.
async fn the_pipelines_resources_conform(backend: Backend) {
    let server = TestServer::start(backend).await;
    let message = std::fs::read(format!(
        "{}/tests/fixtures/hl7v2/holter-pcd01.hl7",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("fixture");
    let ack = server
        .raw(
            Method::POST,
            &format!("http://{}/hl7v2", server.addr),
            "text/plain",
            message,
        )
        .await;
    assert_eq!(ack.status, StatusCode::OK, "{}", ack.text);
    assert!(ack.text.contains("MSA|AA|"), "{}", ack.text);
    for (resource_type, url) in [
        ("Observation", OBSERVATION),
        ("DiagnosticReport", REPORT),
        ("Device", DEVICE),
    ] {
        let bundle = server
            .get(&format!("{resource_type}?_profile={url}&_count=100"))
            .await;
        let entries = bundle.body["entry"].as_array().cloned().unwrap_or_default();
        assert!(
            !entries.is_empty(),
            "the pipeline produced no {resource_type} claiming {url}"
        );
        for entry in entries {
            let reply = server
                .post(
                    &format!("{resource_type}/$validate?profile={url}"),
                    &entry["resource"],
                )
                .await;
            assert_eq!(
                reply.body["issue"][0]["severity"], "information",
                "{}",
                reply.text
            );
        }
    }
}

/// A recorder identified by an ISO OID in OBX-18 (not an EUI-64) still yields a Holter Device.
async fn a_device_without_an_eui64_conforms(backend: Backend) {
    let server = TestServer::start(backend).await;
    let message = std::fs::read_to_string(format!(
        "{}/tests/fixtures/hl7v2/holter-pcd01.hl7",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("fixture");
    let message = message.replace(
        "0012345678ABCDEF^^0012345678ABCDEF^EUI-64",
        "SN4711^^1.2.40.0.34.99.1^ISO",
    );
    let ack = server
        .raw(
            Method::POST,
            &format!("http://{}/hl7v2", server.addr),
            "text/plain",
            message.into_bytes(),
        )
        .await;
    assert!(ack.text.contains("MSA|AA|"), "{}", ack.text);
    let devices = server.get(&format!("Device?_profile={DEVICE}")).await;
    assert_eq!(
        devices.body["entry"][0]["resource"]["identifier"][0]["system"], "urn:oid:1.2.40.0.34.99.1",
        "{}",
        devices.text
    );
}

both_backends!(
    the_pipelines_resources_conform,
    a_device_without_an_eui64_conforms,
    writes_claiming_a_profile_are_checked_against_it,
    transactions_check_claimed_profiles,
    validate_with_a_named_profile,
    capability_statement_lists_the_profiles,
    profiles_are_read_only_conformance_resources,
);
