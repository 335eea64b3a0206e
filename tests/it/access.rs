//! Access control through a real server: every role against the interactions and search
//! features that could leak, on a two-patient, two-organisation fixture. The fixture's PHI
//! strings are unusual on purpose, so that finding one in a response can only be a leak.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{Backend, Reply, TestServer, match_ids};

/// Direct identifiers of the two patients: none may reach the CRM.
const PHI_A: &[&str] = &[
    "Zirbenwald",
    "Annaberg",
    "1111010180",
    "1980-01-01",
    "+43 660 1111111",
    "Amselgasse",
];
const PHI_B: &[&str] = &[
    "Quellenhof",
    "Bertram",
    "2222020290",
    "1990-02-02",
    "+43 660 2222222",
    "Birkenweg",
];
const SVNR: &str = "urn:oid:1.2.40.0.10.1.4.3.1";
const PSEUDONYM: &str = "urn:fhirvault:pseudonym";

fn patient(id: &str, org: &str, phi: &[&str]) -> Value {
    json!({
        "resourceType": "Patient", "id": id,
        "text": {"status": "generated", "div": format!("<div xmlns=\"http://www.w3.org/1999/xhtml\">{} {}</div>", phi[1], phi[0])},
        "identifier": [{"system": SVNR, "value": phi[2]}],
        "name": [{"family": phi[0], "given": [phi[1]]}],
        "telecom": [{"system": "phone", "value": phi[4]}],
        "address": [{"line": [format!("{} 1", phi[5])], "city": "Wien"}],
        "gender": "female",
        "birthDate": phi[3],
        "managingOrganization": {"reference": format!("Organization/{org}")}
    })
}

fn observation(id: &str, patient: &str, category: &str, display: &str) -> Value {
    json!({
        "resourceType": "Observation", "id": id, "status": "final",
        "identifier": [{"system": "urn:test:obs", "value": id}],
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": category}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": format!("Patient/{patient}"), "display": display},
        "effectiveDateTime": "2026-03-05T10:00:00+01:00",
        "valueQuantity": {"value": 72, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"}
    })
}

/// Two clinics (org-a, org-b), two insurers (ins-1 pays for patient a, ins-2 for b), and for
/// each patient: a heart-rate and a lab Observation, a Device, a Coverage, a Claim, a Consent.
async fn fixture(server: &TestServer) {
    let mut resources = vec![
        json!({"resourceType": "Organization", "id": "org-a", "name": "Clinic A"}),
        json!({"resourceType": "Organization", "id": "org-b", "name": "Clinic B"}),
        json!({"resourceType": "Organization", "id": "ins-1", "name": "Insurer 1"}),
        json!({"resourceType": "Organization", "id": "ins-2", "name": "Insurer 2"}),
        patient("pat-a", "org-a", PHI_A),
        patient("pat-b", "org-b", PHI_B),
    ];
    for (p, org, ins, phi) in [
        ("a", "org-a", "ins-1", PHI_A),
        ("b", "org-b", "ins-2", PHI_B),
    ] {
        let display = format!("{} {}", phi[1], phi[0]);
        resources.push(observation(
            &format!("hr-{p}"),
            &format!("pat-{p}"),
            "vital-signs",
            &display,
        ));
        resources.push(observation(
            &format!("lab-{p}"),
            &format!("pat-{p}"),
            "laboratory",
            &display,
        ));
        resources.push(json!({"resourceType": "Device", "id": format!("dev-{p}"), "owner": {"reference": format!("Organization/{org}")},
            "patient": {"reference": format!("Patient/pat-{p}"), "display": display}}));
        resources.push(json!({"resourceType": "Coverage", "id": format!("cov-{p}"), "status": "active",
            "beneficiary": {"reference": format!("Patient/pat-{p}")}, "payor": [{"reference": format!("Organization/{ins}")}]}));
        resources.push(json!({"resourceType": "Claim", "id": format!("claim-{p}"), "status": "active", "use": "claim",
            "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/claim-type", "code": "professional"}]},
            "patient": {"reference": format!("Patient/pat-{p}")}, "created": "2026-03-05",
            "provider": {"reference": format!("Organization/{org}")}, "insurer": {"reference": format!("Organization/{ins}")},
            "priority": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/processpriority", "code": "normal"}]},
            "insurance": [{"sequence": 1, "focal": true, "coverage": {"reference": format!("Coverage/cov-{p}")}}]}));
        resources.push(consent(&format!("consent-{p}"), &format!("pat-{p}")));
        resources.push(json!({"resourceType": "Provenance", "id": format!("prov-{p}"), "recorded": "2026-03-05T10:00:00Z",
            "target": [{"reference": format!("Observation/hr-{p}")}, {"reference": format!("Patient/pat-{p}")}], "agent": [{"who": {"reference": format!("Organization/{org}")}}]}));
    }
    for resource in resources {
        let path = format!(
            "{}/{}",
            resource["resourceType"].as_str().expect("type"),
            resource["id"].as_str().expect("id")
        );
        let reply = server.put(&path, &resource).await;
        assert!(reply.status.is_success(), "{path}: {}", reply.text);
    }
}

fn consent(id: &str, patient: &str) -> Value {
    json!({"resourceType": "Consent", "id": id, "status": "active",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": format!("Patient/{patient}")},
        "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}]}})
}

struct Tokens {
    clinician_a: String,
    crm: String,
    insurer_1: String,
    patient_a: String,
    hub_a: String,
    auditor: String,
}

fn tokens(server: &TestServer) -> Tokens {
    Tokens {
        clinician_a: server.token(
            "clinician",
            "user/*.cruds",
            None,
            Some("Organization/org-a"),
        ),
        crm: server.token("crm", "user/*.rs", None, None),
        insurer_1: server.token("insurer", "user/*.cruds", None, Some("ins-1")),
        patient_a: server.token(
            "patient",
            "patient/*.rs patient/Consent.cud",
            Some("pat-a"),
            None,
        ),
        hub_a: server.token(
            "device-hub",
            "system/Device.rs system/Observation.c",
            None,
            Some("org-a"),
        ),
        auditor: server.token("auditor", "user/*.rs", None, None),
    }
}

async fn ids(server: &TestServer, token: &str, query: &str) -> Vec<String> {
    let reply = server.request_as(token, Method::GET, query, None).await;
    assert_eq!(reply.status, StatusCode::OK, "{query}: {}", reply.text);
    let mut ids = match_ids(&reply.body);
    ids.sort();
    ids
}

/// Ids of every resource in a Bundle, matches and includes.
fn all_ids(bundle: &Value) -> Vec<String> {
    let mut ids: Vec<String> = bundle["entry"]
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .filter_map(|e| e["resource"]["id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    ids
}

async fn tokens_are_required(backend: Backend) {
    let server = TestServer::start(backend).await;
    let anonymous = reqwest::Client::new();
    for path in ["Patient", "Patient/pat-a", "_history", ""] {
        let reply = Reply::from(anonymous.get(server.url(path)).send().await.expect("sent")).await;
        reply.assert_outcome(StatusCode::UNAUTHORIZED, "login", "bearer token");
        assert!(
            reply
                .header("www-authenticate")
                .is_some_and(|h| h.starts_with("Bearer")),
            "{path}"
        );
    }
    let reply = Reply::from(
        anonymous
            .get(server.url("Patient"))
            .bearer_auth("not.a.token")
            .send()
            .await
            .expect("sent"),
    )
    .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert!(
        reply
            .header("www-authenticate")
            .is_some_and(|h| h.contains("invalid_token"))
    );
    for open in ["metadata", ".well-known/smart-configuration"] {
        let reply = Reply::from(anonymous.get(server.url(open)).send().await.expect("sent")).await;
        assert_eq!(reply.status, StatusCode::OK, "{open}: {}", reply.text);
    }
    let health = anonymous
        .get(format!("http://{}/health", server.addr))
        .send()
        .await
        .expect("sent");
    assert_eq!(health.status(), StatusCode::OK);
    // Tokens the server must refuse, each a 401 with an invalid_token challenge.
    let now = chrono::Utc::now().timestamp();
    let request = fhirvault::auth::token::IssueRequest {
        role: "admin".into(),
        scope: "user/*.cruds".into(),
        patient: None,
        org: None,
        subject: None,
        purpose: None,
        ttl: std::time::Duration::from_secs(600),
    };
    let expired = server.issuer.issue_at(&request, now - 7200).expect("token");
    let from_the_future = server.issuer.issue_at(&request, now + 7200).expect("token");
    let mut elsewhere = server.service_auth();
    elsewhere.audience = "https://another-server.example/fhir".into();
    let keys =
        fhirvault::crypto::KeyRing::load(&server.dir.path().join("keys.json")).expect("key ring");
    let wrong_audience = fhirvault::auth::token::TokenIssuer::from_config(&elsewhere, &keys)
        .expect("issuer")
        .issue(&request)
        .expect("token");
    let mut elsewhere = server.service_auth();
    elsewhere.issuer = "https://idp.example".into();
    let wrong_issuer = fhirvault::auth::token::TokenIssuer::from_config(&elsewhere, &keys)
        .expect("issuer")
        .issue(&request)
        .expect("token");
    let parts: Vec<&str> = expired.split('.').collect();
    let unsigned = {
        use base64::Engine;
        let none = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"alg":"none","typ":"JWT"}"#);
        let payload = server
            .issuer
            .issue(&request)
            .expect("token")
            .split('.')
            .nth(1)
            .expect("payload")
            .to_string();
        format!("{none}.{payload}.")
    };
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        parts[1],
        parts[2].chars().rev().collect::<String>()
    );
    for (what, token) in [
        ("expired", expired.as_str()),
        ("issued in the future", &from_the_future),
        ("wrong audience", &wrong_audience),
        ("wrong issuer", &wrong_issuer),
        ("alg none", &unsigned),
        ("bad signature", &tampered),
    ] {
        let reply = Reply::from(
            anonymous
                .get(server.url("Patient"))
                .bearer_auth(token)
                .send()
                .await
                .expect("sent"),
        )
        .await;
        assert_eq!(
            reply.status,
            StatusCode::UNAUTHORIZED,
            "{what}: {}",
            reply.text
        );
        assert_eq!(reply.body["resourceType"], "OperationOutcome", "{what}");
        assert!(
            reply
                .header("www-authenticate")
                .is_some_and(|h| h.contains("invalid_token")),
            "{what}"
        );
    }
    // A genuine token without a role grants nothing.
    let no_role = server.token("nobody", "user/*.rs", None, None);
    server
        .request_as(&no_role, Method::GET, "Patient", None)
        .await
        .assert_outcome(StatusCode::FORBIDDEN, "forbidden", "role");
}

async fn clinician_sees_its_organisation_only(backend: Backend) {
    let server = TestServer::start(backend).await;
    fixture(&server).await;
    let t = tokens(&server);
    let c = t.clinician_a.as_str();
    assert_eq!(
        server
            .request_as(c, Method::GET, "Patient/pat-a", None)
            .await
            .status,
        StatusCode::OK
    );
    for hidden in [
        "Patient/pat-b",
        "Observation/hr-b",
        "Patient/pat-b/_history",
        "Patient/pat-b/_history/1",
        "Device/dev-b",
    ] {
        server
            .request_as(c, Method::GET, hidden, None)
            .await
            .assert_outcome(StatusCode::NOT_FOUND, "not-found", "does not exist");
    }
    assert_eq!(ids(&server, c, "Observation").await, ["hr-a", "lab-a"]);
    assert_eq!(ids(&server, c, "Patient").await, ["pat-a"]);
    // Chains, _has, compartments and system search cannot reach the other clinic's patient.
    assert!(
        ids(&server, c, "Observation?subject:Patient.family=Quellenhof")
            .await
            .is_empty()
    );
    assert!(
        ids(&server, c, "Observation?subject=Patient/pat-b")
            .await
            .is_empty()
    );
    assert_eq!(
        ids(&server, c, "Patient?_has:Observation:subject:code=8867-4").await,
        ["pat-a"]
    );
    assert!(
        ids(&server, c, "Patient/pat-b/Observation")
            .await
            .is_empty()
    );
    assert_eq!(
        ids(&server, c, "?_type=Patient,Observation").await,
        ["hr-a", "lab-a", "pat-a"]
    );
    // Includes bring nothing of the other clinic, totals count only what is visible.
    let reply = server.request_as(c, Method::GET, "Patient?_revinclude=Observation:subject&_revinclude:iterate=Provenance:target&_include=Patient:organization", None).await;
    assert_eq!(
        all_ids(&reply.body),
        ["hr-a", "lab-a", "org-a", "pat-a", "prov-a"]
    );
    assert_eq!(reply.body["total"], 1);
    let count = server
        .request_as(c, Method::GET, "Observation?_summary=count", None)
        .await;
    assert_eq!(count.body["total"], 2);
    // History at type and system level.
    let history = server
        .request_as(c, Method::GET, "Observation/_history", None)
        .await;
    assert_eq!(
        history.body["entry"].as_array().map(Vec::len),
        Some(2),
        "{}",
        history.text
    );
    assert!(
        history.body.get("total").is_none(),
        "a restricted history page has no total that could count hidden versions"
    );
    assert!(!history.text.contains("hr-b") && !history.text.contains("Quellenhof"));
    // Writes stay inside the clinic: no writing for the other clinic's patient, nor moving one there.
    let mut for_b = observation("new-b", "pat-b", "vital-signs", "x");
    for_b.as_object_mut().expect("object").remove("id");
    server
        .request_as(c, Method::POST, "Observation", Some(&for_b))
        .await
        .assert_outcome(StatusCode::FORBIDDEN, "forbidden", "outside");
    let mut moved = observation("hr-a", "pat-b", "vital-signs", "x");
    server
        .request_as(c, Method::PUT, "Observation/hr-a", Some(&moved))
        .await
        .assert_outcome(StatusCode::FORBIDDEN, "forbidden", "outside");
    moved["subject"]["reference"] = json!("Patient/pat-a");
    assert_eq!(
        server
            .request_as(c, Method::PUT, "Observation/hr-a", Some(&moved))
            .await
            .status,
        StatusCode::OK
    );
    server
        .request_as(
            c,
            Method::PUT,
            "Observation/hr-b",
            Some(&observation("hr-b", "pat-b", "vital-signs", "x")),
        )
        .await
        .assert_outcome(StatusCode::NOT_FOUND, "not-found", "does not exist");
    server
        .request_as(c, Method::DELETE, "Observation/hr-b", None)
        .await
        .assert_outcome(StatusCode::NOT_FOUND, "not-found", "does not exist");
    // A conditional delete matches only what the caller may delete.
    let reply = server
        .request_as(
            c,
            Method::DELETE,
            "Observation?identifier=urn:test:obs|hr-b",
            None,
        )
        .await;
    assert!(reply.status.is_success());
    assert_eq!(
        server.get("Observation/hr-b").await.status,
        StatusCode::OK,
        "the other clinic's observation survives"
    );
    // Organisations are shared reference data: readable, not writable.
    assert_eq!(
        server
            .request_as(c, Method::GET, "Organization/org-b", None)
            .await
            .status,
        StatusCode::OK
    );
    let org = json!({"resourceType": "Organization", "id": "org-b", "name": "Renamed"});
    server
        .request_as(c, Method::PUT, "Organization/org-b", Some(&org))
        .await
        .assert_outcome(StatusCode::FORBIDDEN, "forbidden", "clinician");
    // Security labels are the admin's.
    let mut labelled = patient("pat-a", "org-a", PHI_A);
    labelled["meta"] = json!({"security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "N"}]});
    server
        .request_as(c, Method::PUT, "Patient/pat-a", Some(&labelled))
        .await
        .assert_outcome(StatusCode::FORBIDDEN, "forbidden", "meta.security");
    server
        .request_as(c, Method::GET, "AuditEvent", None)
        .await
        .assert_outcome(StatusCode::FORBIDDEN, "forbidden", "AuditEvent");
    // Types outside the compartment that may hold whole records are not reference data.
    for admin_only in ["Bundle", "Binary", "Linkage"] {
        assert_eq!(
            server
                .request_as(c, Method::GET, admin_only, None)
                .await
                .status,
            StatusCode::FORBIDDEN,
            "{admin_only}"
        );
    }
    server
        .request_as(c, Method::DELETE, "Provenance/prov-a", None)
        .await
        .assert_outcome(StatusCode::FORBIDDEN, "forbidden", "Provenance");
    // Absent, deleted and unreachable ids answer alike: no update-as-create, no delete of nothing.
    let absent = observation("never-was", "pat-a", "vital-signs", "x");
    server
        .request_as(c, Method::PUT, "Observation/never-was", Some(&absent))
        .await
        .assert_outcome(StatusCode::NOT_FOUND, "not-found", "does not exist");
    server
        .request_as(c, Method::DELETE, "Observation/never-was", None)
        .await
        .assert_outcome(StatusCode::NOT_FOUND, "not-found", "does not exist");
    let mut with_id = observation("chosen", "pat-a", "vital-signs", "x");
    with_id["identifier"] = json!([{"system": "urn:test:obs", "value": "fresh"}]);
    server
        .request_as(
            c,
            Method::PUT,
            "Observation?identifier=urn:test:obs|fresh",
            Some(&with_id),
        )
        .await
        .assert_outcome(StatusCode::BAD_REQUEST, "invalid", "server-assigned id");
    // A token whose context claim would widen a rule is refused.
    let widened = server.token(
        "clinician",
        "user/*.rs",
        None,
        Some("org-a,Organization/org-b"),
    );
    server
        .request_as(&widened, Method::GET, "Patient", None)
        .await
        .assert_outcome(StatusCode::FORBIDDEN, "forbidden", "org");
    // `_has` on a visible patient's Observations skips their (implied) rule, but not the rule of
    // what a chain inside it reaches: the other clinic's recorder stays out of reach.
    let mut recorded_by_b = observation("cross-a", "pat-a", "vital-signs", "x");
    recorded_by_b["device"] = json!({"reference": "Device/dev-b"});
    assert!(
        server
            .put("Observation/cross-a", &recorded_by_b)
            .await
            .status
            .is_success()
    );
    let through_device =
        "Patient?_has:Observation:subject:device:Device.organization=Organization/org-b";
    assert_eq!(
        match_ids(&server.get(through_device).await.body),
        ["pat-a"],
        "as admin"
    );
    assert!(ids(&server, c, through_device).await.is_empty());
    let bearer = format!("Bearer {c}");
    let break_glass = server
        .request(
            Method::GET,
            through_device,
            None,
            &[("authorization", &bearer), ("x-purpose-of-use", "ETREAT")],
        )
        .await;
    assert!(
        match_ids(&break_glass.body).is_empty(),
        "break-the-glass lifts consent, not the role rule: {}",
        break_glass.text
    );
}

/// Observations that point at the fixture's patients in the ways the clinician's rule must tell
/// apart, with whether clinic a's and clinic b's clinicians may see each. The rule: some patient
/// link (`subject`, `performer`) points, on this server, at a patient the clinic manages. It is
/// answered from the head row's compartment where that names every Patient the resource
/// references (`compartment_complete`), else link by link; these are the cases where the two
/// could differ.
fn linked_observations(server: &TestServer) -> Vec<(&'static str, Value, bool, bool)> {
    let performer = |reference: &str| json!({"performer": [{"reference": reference}]});
    let focus = |reference: &str| json!({"focus": [{"reference": reference}]});
    let own_base = format!("{}/Patient/pat-a", server.base);
    let elsewhere = "https://elsewhere.example/fhir/Patient/pat-a";
    let contained = json!({"contained": [{"resourceType": "Patient", "id": "p1",
        "managingOrganization": {"reference": "Organization/org-a"}}]});
    // (id, subject, more elements, seen by clinic a, seen by clinic b)
    let cases = [
        // A second patient through a second link: each clinic sees it through its own.
        (
            "links-ab",
            "Patient/pat-a",
            performer("Patient/pat-b"),
            true,
            true,
        ),
        (
            "links-ba",
            "Patient/pat-b",
            performer("Patient/pat-a"),
            true,
            true,
        ),
        // A patient named outside the patient links (`focus`) gives no clinic access.
        (
            "focus-b",
            "Patient/pat-a",
            focus("Patient/pat-b"),
            true,
            false,
        ),
        (
            "focus-a",
            "Patient/pat-b",
            focus("Patient/pat-a"),
            false,
            true,
        ),
        // `pat-a` on another server is another person, even as the compartment.
        ("elsewhere", elsewhere, json!({}), false, false),
        (
            "elsewhere-performer",
            "Patient/pat-b",
            performer(elsewhere),
            false,
            true,
        ),
        // Our own base spelled out, and a versioned reference, are pat-a.
        ("own-base", &own_base, json!({}), true, false),
        (
            "own-base-performer",
            "Patient/pat-b",
            performer(&own_base),
            true,
            true,
        ),
        (
            "versioned",
            "Patient/pat-a/_history/1",
            json!({}),
            true,
            false,
        ),
        // A contained patient is no patient of this server, whatever clinic it names.
        ("contained", "#p1", contained, false, false),
    ];
    cases
        .into_iter()
        .map(|(id, subject, extra, clinic_a, clinic_b)| {
            let mut body = observation(id, "pat-a", "vital-signs", "x");
            body["subject"] = json!({"reference": subject});
            for (key, value) in extra.as_object().expect("object") {
                body[key] = value.clone();
            }
            (id, body, clinic_a, clinic_b)
        })
        .collect()
}

/// `PUT path` as admin, which must succeed.
async fn put_ok(server: &TestServer, path: &str, body: &Value) {
    let reply = server.put(path, body).await;
    assert!(reply.status.is_success(), "{path}: {}", reply.text);
}

/// Store [`linked_observations`] (as admin).
async fn put_linked_observations(server: &TestServer) -> Vec<(&'static str, Value, bool, bool)> {
    let cases = linked_observations(server);
    for (id, body, ..) in &cases {
        put_ok(server, &format!("Observation/{id}"), body).await;
    }
    cases
}

fn clinician_b(server: &TestServer) -> String {
    server.token(
        "clinician",
        "user/*.cruds",
        None,
        Some("Organization/org-b"),
    )
}

/// Whether `token` may read `Observation/{id}`: a read, a search by id and the instance history
/// must agree.
async fn sees(server: &TestServer, token: &str, id: &str) -> bool {
    let read = server
        .request_as(token, Method::GET, &format!("Observation/{id}"), None)
        .await;
    assert!(
        matches!(read.status, StatusCode::OK | StatusCode::NOT_FOUND),
        "{id}: {}",
        read.text
    );
    let found = ids(server, token, &format!("Observation?_id={id}")).await;
    let history = server
        .request_as(
            token,
            Method::GET,
            &format!("Observation/{id}/_history"),
            None,
        )
        .await;
    let listed = history.status == StatusCode::OK
        && history.body["entry"]
            .as_array()
            .is_some_and(|e| !e.is_empty());
    assert_eq!(
        (read.status == StatusCode::OK, listed),
        (!found.is_empty(), !found.is_empty()),
        "{id}: read, search and history disagree"
    );
    !found.is_empty()
}

async fn clinicians_see_what_a_patient_link_reaches(backend: Backend) {
    let server = TestServer::start(backend).await;
    fixture(&server).await;
    let t = tokens(&server);
    let (a, b) = (t.clinician_a.clone(), clinician_b(&server));
    let cases = put_linked_observations(&server).await;
    for (id, _, for_a, for_b) in &cases {
        assert_eq!(sees(&server, &a, id).await, *for_a, "clinic a, {id}");
        assert_eq!(sees(&server, &b, id).await, *for_b, "clinic b, {id}");
    }
    // The same through a type search, a system search and a chain.
    let expect = |clinic_a: bool, own: &str| {
        let mut expected: Vec<String> = cases
            .iter()
            .filter(|(_, _, for_a, for_b)| if clinic_a { *for_a } else { *for_b })
            .map(|(id, ..)| id.to_string())
            .chain([format!("hr-{own}"), format!("lab-{own}")])
            .collect();
        expected.sort();
        expected
    };
    assert_eq!(ids(&server, &a, "Observation").await, expect(true, "a"));
    assert_eq!(ids(&server, &b, "Observation").await, expect(false, "b"));
    assert_eq!(
        ids(&server, &b, "?_type=Observation").await,
        expect(false, "b")
    );
    // A chain follows links to the patients the caller may see only, and local ones only.
    assert_eq!(
        ids(
            &server,
            &a,
            "Observation?performer:Patient.family=Zirbenwald"
        )
        .await,
        ["links-ba", "own-base-performer"]
    );
    assert!(
        ids(
            &server,
            &a,
            "Observation?performer:Patient.family=Quellenhof"
        )
        .await
        .is_empty()
    );

    // Every way of writing keeps the head's flag current. Update: a second patient added and
    // taken away again.
    let single = observation("single", "pat-a", "vital-signs", "x");
    put_ok(&server, "Observation/single", &single).await;
    assert!(!sees(&server, &b, "single").await);
    let mut shared = single.clone();
    shared["performer"] = json!([{"reference": "Patient/pat-b"}]);
    put_ok(&server, "Observation/single", &shared).await;
    assert!(sees(&server, &b, "single").await);
    put_ok(&server, "Observation/single", &single).await;
    assert!(!sees(&server, &b, "single").await);
    assert!(sees(&server, &a, "single").await);
    // Patch.
    let patch =
        json!([{"op": "add", "path": "/performer", "value": [{"reference": "Patient/pat-b"}]}]);
    let reply = server
        .raw(
            Method::PATCH,
            "Observation/single",
            "application/json-patch+json",
            serde_json::to_vec(&patch).expect("json"),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert!(sees(&server, &b, "single").await);
    // Delete, and re-create for the other clinic's patient alone.
    assert!(
        server
            .delete("Observation/links-ab")
            .await
            .status
            .is_success()
    );
    assert!(!sees(&server, &a, "links-ab").await);
    assert!(!sees(&server, &b, "links-ab").await);
    let recreated = observation("links-ab", "pat-b", "vital-signs", "x");
    put_ok(&server, "Observation/links-ab", &recreated).await;
    assert!(!sees(&server, &a, "links-ab").await);
    assert!(sees(&server, &b, "links-ab").await);
    // A transaction; a plain create (the group committer's path); a clinician's create, checked
    // against the rule inside its transaction, so against the flag it has just written.
    let mut in_tx = observation("x", "pat-b", "vital-signs", "x");
    in_tx.as_object_mut().expect("object").remove("id");
    in_tx["performer"] = json!([{"reference": "Patient/pat-a"}]);
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": in_tx, "request": {"method": "POST", "url": "Observation"}}]});
    let reply = server.post("", &bundle).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let location = reply.body["entry"][0]["response"]["location"]
        .as_str()
        .expect("location");
    let tx_id = location.split('/').nth(1).expect("id").to_string();
    assert!(sees(&server, &a, &tx_id).await && sees(&server, &b, &tx_id).await);
    let (committed, _) = server.create(&in_tx).await;
    assert!(sees(&server, &a, &committed).await && sees(&server, &b, &committed).await);
    let reply = server
        .request_as(&b, Method::POST, "Observation", Some(&in_tx))
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let created = reply.body["id"].as_str().expect("id").to_string();
    assert!(sees(&server, &a, &created).await && sees(&server, &b, &created).await);
    in_tx["performer"] = json!([{"reference": "Patient/pat-b"}]);
    let reply = server
        .request_as(&b, Method::POST, "Observation", Some(&in_tx))
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let only_b = reply.body["id"].as_str().expect("id").to_string();
    assert!(!sees(&server, &a, &only_b).await && sees(&server, &b, &only_b).await);
}

/// A clinician's read statement is planned once and kept (`service::read_plans`), but what it
/// checks is read when it runs: a patient moved to another clinic leaves the first one's reach at
/// the next read, and a read of another id is about that id.
async fn kept_read_plans_follow_the_data(backend: Backend) {
    let server = TestServer::start(backend).await;
    fixture(&server).await;
    let t = tokens(&server);
    let (a, b) = (t.clinician_a.clone(), clinician_b(&server));
    let read = async |token: &str, path: &str| {
        server
            .request_as(token, Method::GET, path, None)
            .await
            .status
    };
    for _ in 0..2 {
        assert_eq!(read(&a, "Observation/hr-a").await, StatusCode::OK);
        assert_eq!(read(&a, "Observation/hr-b").await, StatusCode::NOT_FOUND);
        assert_eq!(read(&a, "Patient/pat-a").await, StatusCode::OK);
        assert_eq!(read(&b, "Observation/hr-a").await, StatusCode::NOT_FOUND);
    }
    put_ok(&server, "Patient/pat-a", &patient("pat-a", "org-b", PHI_A)).await;
    assert_eq!(read(&a, "Observation/hr-a").await, StatusCode::NOT_FOUND);
    assert_eq!(read(&a, "Patient/pat-a").await, StatusCode::NOT_FOUND);
    assert_eq!(read(&b, "Observation/hr-a").await, StatusCode::OK);
    assert_eq!(read(&b, "Observation/hr-b").await, StatusCode::OK);
}

/// What each clinic's clinician sees, by a few queries that all go through the rule.
async fn seen_by_clinicians(server: &TestServer) -> Vec<Vec<String>> {
    let t = tokens(server);
    let mut seen = Vec::new();
    for token in [t.clinician_a, clinician_b(server)] {
        for query in [
            "Observation",
            "Device",
            "?_type=Observation,Device,Provenance,Claim,Coverage,Consent",
            "Patient?_has:Observation:performer:code=8867-4",
        ] {
            seen.push(ids(server, &token, query).await);
        }
    }
    seen
}

/// Every head's `compartment_complete` by (type, id).
async fn completeness(database: &fhirvault::config::DatabaseUrl) -> Vec<(String, String, i64)> {
    use sqlx::{Connection, Row};
    let mut conn = crate::audit_chain::connect(database).await;
    let rows = sqlx::query(
        "SELECT resource_type, id, compartment_complete FROM resource_heads ORDER BY resource_type, id",
    )
    .fetch_all(&mut conn)
    .await
    .expect("heads");
    conn.close().await.expect("closed");
    rows.iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

/// The server again on `database`, with the base URL it had (the `own-base` references name it),
/// although it listens on a new port.
async fn restart(
    backend: Backend,
    dir: tempfile::TempDir,
    database: fhirvault::config::DatabaseUrl,
    base: &str,
) -> TestServer {
    let mut server = TestServer::start_with(backend, dir, database, |config| {
        config.base_url = base.to_string();
    })
    .await;
    server.base = format!("http://{}/fhir", server.addr);
    server
}

/// A stopped server's database holding the fixture and [`linked_observations`], what the
/// clinicians saw while it ran, and every head's flag as written.
struct Stored {
    seen: Vec<Vec<String>>,
    base: String,
    dir: tempfile::TempDir,
    database: fhirvault::config::DatabaseUrl,
    written: Vec<(String, String, i64)>,
}

async fn stored_linked_observations(backend: Backend) -> Stored {
    let server = TestServer::start(backend).await;
    fixture(&server).await;
    put_linked_observations(&server).await;
    let seen = seen_by_clinicians(&server).await;
    let base = server.base.clone();
    let (dir, database) = server.stop().await;
    let written = completeness(&database).await;
    Stored {
        seen,
        base,
        dir,
        database,
        written,
    }
}

/// The flag of `Observation/id` among [`completeness`]'s heads.
fn observation_flag(heads: &[(String, String, i64)], id: &str) -> Option<i64> {
    heads
        .iter()
        .find(|(ty, i, _)| ty == "Observation" && i == id)
        .map(|(.., c)| *c)
}

/// Run `statements` on a stopped server's database.
async fn execute(database: &fhirvault::config::DatabaseUrl, statements: &[&str]) {
    use sqlx::Connection;
    let mut conn = crate::audit_chain::connect(database).await;
    for &statement in statements {
        sqlx::query(sqlx::AssertSqlSafe(statement.to_string()))
            .execute(&mut conn)
            .await
            .expect(statement);
    }
    conn.close().await.expect("closed");
}

/// Migration 0011 gives the heads stored before it the flag a write gives them, and the rule
/// answers alike whether it reads the flag or follows every link (all flags 0).
async fn the_compartment_flag_is_backfilled(backend: Backend) {
    let Stored {
        seen,
        base,
        dir,
        database,
        written,
    } = stored_linked_observations(backend).await;
    let flag = |id: &str| observation_flag(&written, id);
    for (id, complete) in [
        ("hr-a", 1),
        ("versioned", 1),
        ("links-ab", 0),
        ("focus-b", 0),
        ("elsewhere", 0),
        ("own-base", 0),
        ("contained", 1),
    ] {
        assert_eq!(flag(id), Some(complete), "{id}");
    }
    // Every head link by link.
    execute(
        &database,
        &["UPDATE resource_heads SET compartment_complete = 0"],
    )
    .await;
    let server = restart(backend, dir, database, &base).await;
    assert_eq!(seen_by_clinicians(&server).await, seen, "link by link");
    let (dir, database) = server.stop().await;
    // As before the migration: no column, the migration not applied.
    execute(
        &database,
        &[
            "ALTER TABLE resource_heads DROP COLUMN compartment_complete",
            "DELETE FROM _sqlx_migrations WHERE version = 11",
        ],
    )
    .await;
    let server = restart(backend, dir, database, &base).await;
    let (dir, database) = server.stop().await;
    let migrated = completeness(&database).await;
    let before: std::collections::BTreeSet<_> = written.iter().collect();
    let also_written: Vec<_> = migrated.iter().filter(|h| before.contains(h)).collect();
    assert_eq!(
        also_written.len(),
        written.len(),
        "the same flags as written"
    );
    let server = restart(backend, dir, database, &base).await;
    assert_eq!(
        seen_by_clinicians(&server).await,
        seen,
        "after the migration"
    );
}

/// References a transaction resolves (`urn:uuid:` full URLs) are stored as the relative
/// references they become, so the head's flag is computed from those: a resource that names only
/// the new Patient is answered from its compartment, one that also names another clinic's
/// Patient is not, and a contained Patient counts for no clinic.
async fn transaction_references_count_as_resolved(backend: Backend) {
    let server = TestServer::start(backend).await;
    fixture(&server).await;
    let t = tokens(&server);
    let (a, b) = (t.clinician_a.clone(), clinician_b(&server));
    let new_patient = "urn:uuid:6c1f1d52-0d0a-4d47-9a8f-3f1d7e0c2a11";
    let observation_entry = |subject: &str, more: Value| {
        let mut body = observation("x", "pat-a", "vital-signs", "x");
        body.as_object_mut().expect("object").remove("id");
        body["subject"] = json!({"reference": subject});
        for (key, value) in more.as_object().expect("object") {
            body[key] = value.clone();
        }
        json!({"resource": body, "request": {"method": "POST", "url": "Observation"}})
    };
    let mut managed = patient("x", "org-a", PHI_A);
    managed.as_object_mut().expect("object").remove("id");
    let performer = |reference: &str| json!({"performer": [{"reference": reference}]});
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": new_patient, "resource": managed,
         "request": {"method": "POST", "url": "Patient"}},
        observation_entry(new_patient, json!({})),
        observation_entry(new_patient, performer("Patient/pat-b")),
        observation_entry("Patient/pat-b", performer(new_patient)),
        observation_entry("#p1", json!({
            "contained": [{"resourceType": "Patient", "id": "p1",
                "managingOrganization": {"reference": "Organization/org-b"}}],
            "performer": [{"reference": new_patient}]
        })),
    ]});
    let reply = server.post("", &bundle).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let created: Vec<String> = reply.body["entry"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| {
            let location = e["response"]["location"].as_str().expect("location");
            location.split('/').nth(1).expect("id").to_string()
        })
        .collect();
    // (id, seen by clinic a, by clinic b, flag)
    let expected = [
        (&created[1], true, false, 1),
        (&created[2], true, true, 0),
        (&created[3], true, true, 0),
        (&created[4], true, false, 1),
    ];
    let flags = completeness(&server.database).await;
    for (id, for_a, for_b, flag) in expected {
        assert_eq!(sees(&server, &a, id).await, for_a, "clinic a, {id}");
        assert_eq!(sees(&server, &b, id).await, for_b, "clinic b, {id}");
        assert_eq!(observation_flag(&flags, id), Some(flag), "{id}");
    }
}

/// `fhirvault reindex` recomputes the flag with the rows and the compartment: heads whose flags
/// went wrong (every one inverted, so `links-ab`, which names `pat-a` and `pat-b`, claims to be
/// answered from its compartment alone, and one of the clinics no longer sees it) get the flags
/// a write gives them, and the clinicians see what they saw before. A wrong flag can hide a
/// resource but not show one: the compartment is a Patient of this server that a patient link
/// points at, so the resource naming another server's `pat-a` stays out of clinic a's sight.
async fn reindex_recomputes_the_compartment_flag(backend: Backend) {
    let Stored {
        seen,
        base,
        dir,
        database,
        written,
    } = stored_linked_observations(backend).await;
    execute(
        &database,
        &["UPDATE resource_heads SET compartment_complete = 1 - compartment_complete"],
    )
    .await;
    let server = restart(backend, dir, database, &base).await;
    let (clinic_a, clinic_b) = (tokens(&server).clinician_a, clinician_b(&server));
    assert!(
        !(sees(&server, &clinic_a, "links-ab").await && sees(&server, &clinic_b, "links-ab").await),
        "a wrong flag is what the rule then reads"
    );
    assert!(
        !sees(&server, &clinic_a, "elsewhere").await,
        "another server's Patient is in no compartment here, whatever the flag says"
    );
    let (dir, database) = server.stop().await;

    let (code, stdout, stderr) = crate::audit_chain::fhirvault(
        dir.path(),
        &database,
        // The server's base: absolute references on it are local (docs: give reindex the
        // settings serve runs with).
        &["reindex", "--base-url", &base],
    );
    assert_eq!(code, 0, "{stdout} {stderr}");
    assert!(
        crate::reindex::line_of(&stdout, "Observation").contains(" 0 compartments changed"),
        "only flags changed: {stdout}"
    );
    let reindexed = completeness(&database).await;
    let live: std::collections::BTreeSet<_> = reindexed.iter().collect();
    for head in &written {
        // Delete markers are not re-indexed; the fixture has none.
        assert!(live.contains(head), "{head:?} as written");
    }
    let server = restart(backend, dir, database, &base).await;
    assert_eq!(seen_by_clinicians(&server).await, seen, "after reindex");
}

/// Versions from before a resource was moved to another patient stay with that patient.
async fn moved_resources_keep_their_past(backend: Backend) {
    let server = TestServer::start(backend).await;
    fixture(&server).await;
    let t = tokens(&server);
    // Recorded for the wrong patient (b), then corrected to patient a.
    let wrong = observation("moved", "pat-b", "vital-signs", "Bertram Quellenhof");
    assert!(
        server
            .put("Observation/moved", &wrong)
            .await
            .status
            .is_success()
    );
    assert!(
        server
            .put(
                "Observation/moved",
                &observation("moved", "pat-a", "vital-signs", "x")
            )
            .await
            .status
            .is_success()
    );
    let c = t.clinician_a.as_str();
    assert_eq!(
        server
            .request_as(c, Method::GET, "Observation/moved/_history/2", None)
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        server
            .request_as(c, Method::GET, "Observation/moved/_history/1", None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let history = server
        .request_as(c, Method::GET, "Observation/moved/_history", None)
        .await;
    assert_eq!(
        history.body["entry"].as_array().map(Vec::len),
        Some(1),
        "{}",
        history.text
    );
    assert!(!history.text.contains("Quellenhof"));
    let all = server.request_as(c, Method::GET, "_history", None).await;
    assert!(
        !all.text.contains("Quellenhof") && !all.text.contains("pat-b"),
        "{}",
        all.text
    );
}

async fn transactions_are_authorised_entry_by_entry(backend: Backend) {
    let server = TestServer::start(backend).await;
    fixture(&server).await;
    let t = tokens(&server);
    let mut entry_b = observation("x", "pat-b", "vital-signs", "x");
    entry_b.as_object_mut().expect("object").remove("id");
    let mut entry_a = entry_b.clone();
    entry_a["subject"]["reference"] = json!("Patient/pat-a");
    let bundle = |entries: Vec<Value>| json!({"resourceType": "Bundle", "type": "transaction", "entry": entries.into_iter().map(|r| json!({"resource": r, "request": {"method": "POST", "url": "Observation"}})).collect::<Vec<_>>()});
    let reply = server
        .request_as(
            &t.clinician_a,
            Method::POST,
            "",
            Some(&bundle(vec![entry_a.clone(), entry_b.clone()])),
        )
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.text);
    assert_eq!(
        ids(&server, &t.clinician_a, "Observation").await.len(),
        2,
        "nothing of the refused transaction was written"
    );
    let reply = server
        .request_as(
            &t.clinician_a,
            Method::POST,
            "",
            Some(&bundle(vec![entry_a.clone()])),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    // A batch answers each entry on its own; reads inside it are filtered like any read.
    let batch = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": "Patient/pat-b"}},
        {"request": {"method": "GET", "url": "Patient/pat-a"}},
        {"request": {"method": "GET", "url": "Observation?subject=Patient/pat-b"}}]});
    let reply = server
        .request_as(&t.clinician_a, Method::POST, "", Some(&batch))
        .await;
    assert_eq!(
        reply.body["entry"][0]["response"]["status"], "404 Not Found",
        "{}",
        reply.text
    );
    assert_eq!(reply.body["entry"][1]["response"]["status"], "200 OK");
    assert_eq!(reply.body["entry"][2]["resource"]["total"], 0);
}

async fn crm_sees_pseudonyms_only(backend: Backend) {
    let server = TestServer::start(backend).await;
    fixture(&server).await;
    let t = tokens(&server);
    let crm = t.crm.as_str();
    let patient = server
        .request_as(crm, Method::GET, "Patient/pat-a", None)
        .await;
    assert_eq!(patient.status, StatusCode::OK);
    assert_eq!(patient.body["birthDate"], "1980");
    assert!(
        patient.body["meta"]["security"]
            .as_array()
            .expect("labels")
            .iter()
            .any(|l| l["code"] == "PSEUDED")
    );
    let pseudonym = patient.body["identifier"][0]["value"]
        .as_str()
        .expect("pseudonym")
        .to_string();
    assert_eq!(patient.body["identifier"][0]["system"], PSEUDONYM);
    // Standard searches by pseudonym work; searches by what the view hides are refused.
    assert_eq!(
        ids(
            &server,
            crm,
            &format!("Patient?identifier={PSEUDONYM}|{pseudonym}")
        )
        .await,
        ["pat-a"]
    );
    assert_eq!(
        ids(
            &server,
            crm,
            &format!("Observation?subject:Patient.identifier={PSEUDONYM}|{pseudonym}&_sort=-date")
        )
        .await,
        ["hr-a", "lab-a"]
    );
    for refused in [
        "Patient?family=Zirbenwald".to_string(),
        format!("Patient?identifier={SVNR}|1111010180"),
        // An identifier's type and value find the person as well as the identifier does.
        "Patient?identifier:of-type=http://terminology.hl7.org/CodeSystem/v2-0203|SS|1111010180"
            .into(),
        "Observation?subject:Patient.identifier:of-type=http://terminology.hl7.org/CodeSystem/v2-0203|SS|1111010180"
            .into(),
        "Patient?birthdate=1980-01-01".into(),
        "Patient?phone=%2B43".into(),
        "Patient?address-city=Wien".into(),
        "Observation?subject:Patient.name=Zirbenwald".into(),
        "Observation?subject:identifier=1111010180".into(),
        "Patient?_sort=family".into(),
        "Patient?_has:Observation:subject:subject:Patient.birthdate=1980".into(),
    ] {
        let reply = server.request_as(crm, Method::GET, &refused, None).await;
        assert_eq!(
            reply.status,
            StatusCode::FORBIDDEN,
            "{refused}: {}",
            reply.text
        );
    }
    let patch = json!([{"op": "copy", "from": "/birthDate", "path": "/gender"}]);
    let request = server
        .client
        .patch(server.url("Patient/pat-a"))
        .bearer_auth(crm)
        .header("content-type", "application/json-patch+json");
    let reply = Reply::from(request.body(patch.to_string()).send().await.expect("sent")).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.text);
    for denied in ["Claim", "Coverage", "Consent", "AuditEvent", "Provenance"] {
        assert_eq!(
            server
                .request_as(crm, Method::GET, denied, None)
                .await
                .status,
            StatusCode::FORBIDDEN,
            "{denied}"
        );
    }
    let mut write = observation("crm-obs", "pat-a", "vital-signs", "x");
    write.as_object_mut().expect("object").remove("id");
    assert_eq!(
        server
            .request_as(crm, Method::POST, "Observation", Some(&write))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
}

/// Everything the CRM can reach — every type it may search, with every include, every page,
/// every history, every read — and not one fixture PHI string in it.
async fn nothing_the_crm_can_reach_holds_phi(backend: Backend) {
    let server = TestServer::start(backend).await;
    fixture(&server).await;
    let crm = tokens(&server).crm;
    let mut seen = String::new();
    let mut ids_seen = Vec::new();
    for resource_type in [
        "Patient",
        "Observation",
        "DiagnosticReport",
        "Device",
        "Organization",
    ] {
        let revincludes: String = [
            "Observation",
            "Device",
            "DiagnosticReport",
            "Provenance",
            "Claim",
            "Coverage",
            "Consent",
        ]
        .iter()
        .map(|source| format!("&_revinclude={source}:*"))
        .collect();
        let mut next = Some(format!(
            "{resource_type}?_include={resource_type}:*{revincludes}&_include:iterate=Observation:*&_include:iterate=Device:*&_count=1"
        ));
        while let Some(url) = next.take() {
            let reply = server.request_as(&crm, Method::GET, &url, None).await;
            assert_eq!(reply.status, StatusCode::OK, "{url}: {}", reply.text);
            seen.push_str(&reply.text);
            ids_seen.extend(
                all_ids(&reply.body)
                    .into_iter()
                    .map(|id| (resource_type, id)),
            );
            next = reply.body["link"]
                .as_array()
                .and_then(|links| links.iter().find(|l| l["relation"] == "next"))
                .and_then(|l| l["url"].as_str())
                .map(str::to_string);
        }
        seen.push_str(
            &server
                .request_as(
                    &crm,
                    Method::GET,
                    &format!("{resource_type}/_history"),
                    None,
                )
                .await
                .text,
        );
    }
    seen.push_str(
        &server
            .request_as(&crm, Method::GET, "_history", None)
            .await
            .text,
    );
    seen.push_str(
        &server
            .request_as(&crm, Method::GET, "?_type=Patient,Observation,Device", None)
            .await
            .text,
    );
    for id in ["pat-a", "pat-b"] {
        seen.push_str(
            &server
                .request_as(&crm, Method::GET, &format!("Patient/{id}"), None)
                .await
                .text,
        );
        seen.push_str(
            &server
                .request_as(&crm, Method::GET, &format!("Patient/{id}/_history"), None)
                .await
                .text,
        );
        seen.push_str(
            &server
                .request_as(&crm, Method::GET, &format!("Patient/{id}/_history/1"), None)
                .await
                .text,
        );
        seen.push_str(
            &server
                .request_as(
                    &crm,
                    Method::GET,
                    &format!("Patient/{id}/Observation?_include=Observation:subject"),
                    None,
                )
                .await
                .text,
        );
    }
    assert!(
        ids_seen.iter().any(|(_, id)| id == "pat-b"),
        "the crm sees every patient (pseudonymised)"
    );
    for phi in PHI_A.iter().chain(PHI_B) {
        assert!(!seen.contains(phi), "PHI `{phi}` reached the crm");
    }
}

async fn insurer_sees_what_it_pays_for(backend: Backend) {
    let server = TestServer::start(backend).await;
    fixture(&server).await;
    let t = tokens(&server);
    let i = t.insurer_1.as_str();
    assert_eq!(ids(&server, i, "Coverage").await, ["cov-a"]);
    assert_eq!(ids(&server, i, "Claim").await, ["claim-a"]);
    assert_eq!(ids(&server, i, "Patient").await, ["pat-a"]);
    let patient = server
        .request_as(i, Method::GET, "Patient/pat-a", None)
        .await;
    assert_eq!(patient.status, StatusCode::OK);
    assert!(
        patient.body.get("name").is_none() && patient.body.get("telecom").is_none(),
        "{}",
        patient.text
    );
    assert!(
        patient.text.contains("1111010180"),
        "claims need the insurance number"
    );
    assert_eq!(
        server
            .request_as(i, Method::GET, "Patient/pat-b", None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        server
            .request_as(i, Method::GET, "Claim/claim-b", None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        server
            .request_as(i, Method::GET, "Observation", None)
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    // It cannot grant itself a patient by writing a Coverage that names one.
    let grab = json!({"resourceType": "Coverage", "status": "active", "beneficiary": {"reference": "Patient/pat-b"},
        "payor": [{"reference": "Organization/ins-1"}]});
    assert_eq!(
        server
            .request_as(i, Method::POST, "Coverage", Some(&grab))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        server
            .request_as(i, Method::GET, "Patient/pat-b", None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let reply = server
        .request_as(
            i,
            Method::GET,
            "Claim?_include=Claim:patient&_include=Claim:insurer",
            None,
        )
        .await;
    assert!(
        !reply.text.contains("pat-b") && !reply.text.contains("Zirbenwald"),
        "{}",
        reply.text
    );
}

async fn patient_sees_its_own_compartment(backend: Backend) {
    let server = TestServer::start(backend).await;
    fixture(&server).await;
    let t = tokens(&server);
    let p = t.patient_a.as_str();
    assert_eq!(ids(&server, p, "Observation").await, ["hr-a", "lab-a"]);
    assert_eq!(ids(&server, p, "Patient").await, ["pat-a"]);
    assert_eq!(
        server
            .request_as(p, Method::GET, "Patient/pat-b", None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        server
            .request_as(
                p,
                Method::GET,
                "Observation?_has:Provenance:target:agent=Organization/org-b",
                None
            )
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        server
            .request_as(p, Method::GET, "Provenance", None)
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    // Its own Consent, not someone else's.
    let mut own = consent("x", "pat-a");
    own.as_object_mut().expect("object").remove("id");
    assert_eq!(
        server
            .request_as(p, Method::POST, "Consent", Some(&own))
            .await
            .status,
        StatusCode::CREATED
    );
    let mut other = own.clone();
    other["patient"]["reference"] = json!("Patient/pat-b");
    server
        .request_as(p, Method::POST, "Consent", Some(&other))
        .await
        .assert_outcome(StatusCode::FORBIDDEN, "forbidden", "outside");
    server
        .request_as(p, Method::DELETE, "Consent/consent-b", None)
        .await
        .assert_outcome(StatusCode::NOT_FOUND, "not-found", "does not exist");
    let mut write = observation("x", "pat-a", "vital-signs", "x");
    write.as_object_mut().expect("object").remove("id");
    assert_eq!(
        server
            .request_as(p, Method::POST, "Observation", Some(&write))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    // A page link is bound to the caller that got it.
    let page = server
        .request_as(p, Method::GET, "Observation?_count=1", None)
        .await;
    let next = page.body["link"]
        .as_array()
        .expect("links")
        .iter()
        .find(|l| l["relation"] == "next")
        .expect("next")["url"]
        .as_str()
        .expect("url")
        .to_string();
    assert_eq!(
        server.request_as(p, Method::GET, &next, None).await.status,
        StatusCode::OK
    );
    server
        .request_as(&t.clinician_a, Method::GET, &next, None)
        .await
        .assert_outcome(StatusCode::FORBIDDEN, "forbidden", "another caller");
    // Page links are sealed: an edited one is refused, and sort values never show in a URL.
    let edited = next.replacen("_cursor=", "_cursor=A", 1);
    server
        .request_as(p, Method::GET, &edited, None)
        .await
        .assert_outcome(StatusCode::BAD_REQUEST, "invalid", "_cursor");
    let by_date = server.get("Observation?_sort=-date&_count=1").await;
    let link = by_date.body["link"]
        .as_array()
        .expect("links")
        .iter()
        .find(|l| l["relation"] == "next")
        .expect("next")["url"]
        .as_str()
        .expect("url")
        .to_string();
    let token = link
        .split("_cursor=")
        .nth(1)
        .expect("cursor")
        .split('&')
        .next()
        .expect("value");
    use base64::Engine;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .expect("base64url");
    let inner = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(&bytes)
        .unwrap_or_default();
    assert!(
        serde_json::from_slice::<Value>(&bytes).is_err()
            && serde_json::from_slice::<Value>(&inner).is_err(),
        "a readable cursor"
    );
}

async fn scopes_narrow_what_roles_allow(backend: Backend) {
    let server = TestServer::start(backend).await;
    fixture(&server).await;
    let vitals = server.token(
        "clinician",
        "user/Observation.rs?category=vital-signs",
        None,
        Some("org-a"),
    );
    assert_eq!(ids(&server, &vitals, "Observation").await, ["hr-a"]);
    assert_eq!(
        server
            .request_as(&vitals, Method::GET, "Observation/lab-a", None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        server
            .request_as(&vitals, Method::GET, "Patient", None)
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    let read_only = server.token("clinician", "user/*.read", None, Some("org-a"));
    let mut write = observation("x", "pat-a", "vital-signs", "x");
    write.as_object_mut().expect("object").remove("id");
    server
        .request_as(&read_only, Method::POST, "Observation", Some(&write))
        .await
        .assert_outcome(StatusCode::FORBIDDEN, "forbidden", "scope");
    // A patient/ scope confines even an admin to the token's patient.
    let admin_for_b = server.token("admin", "patient/*.rs", Some("Patient/pat-b"), None);
    assert_eq!(
        ids(&server, &admin_for_b, "Observation").await,
        ["hr-b", "lab-b"]
    );
}

/// A token whose role allows an interaction but whose scopes do not is a 403 with an RFC 6750
/// `insufficient_scope` challenge naming the scope that would do; refusals by role, and reads
/// a scope's query excludes (404), carry no such challenge.
async fn insufficient_scope_names_the_scope(backend: Backend) {
    let server = TestServer::start(backend).await;
    fixture(&server).await;
    let challenge = |reply: &Reply| reply.header("www-authenticate").map(str::to_string);
    let read_only = server.token("clinician", "user/*.rs", None, Some("org-a"));
    let mut write = observation("x", "pat-a", "vital-signs", "x");
    write.as_object_mut().expect("object").remove("id");
    let refused = server
        .request_as(&read_only, Method::POST, "Observation", Some(&write))
        .await;
    refused.assert_outcome(
        StatusCode::FORBIDDEN,
        "forbidden",
        "`user/Observation.c` scope is needed",
    );
    let header = challenge(&refused).expect("a challenge");
    assert!(
        header.starts_with(
            "Bearer realm=\"fhirvault\", error=\"insufficient_scope\", error_description=\""
        ),
        "{header}"
    );
    assert!(
        header.ends_with(", scope=\"user/Observation.c\""),
        "{header}"
    );
    // A transaction refused for one entry's scope: the same answer.
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"request": {"method": "GET", "url": "Patient/pat-a"}},
        {"resource": write, "request": {"method": "POST", "url": "Observation"}}]});
    let refused = server
        .request_as(&read_only, Method::POST, "", Some(&bundle))
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.text);
    assert!(
        challenge(&refused).is_some_and(|h| h.contains("scope=\"user/Observation.c\"")),
        "{:?}",
        refused.headers
    );
    // The context of the token's scopes is kept: a patient app asks for a patient/ scope.
    let patient = server.token("patient", "patient/*.rs", Some("pat-a"), None);
    let consent = json!({"resourceType": "Consent", "status": "active",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}], "patient": {"reference": "Patient/pat-a"}});
    let refused = server
        .request_as(&patient, Method::POST, "Consent", Some(&consent))
        .await;
    assert!(
        challenge(&refused).is_some_and(|h| h.ends_with("scope=\"patient/Consent.c\"")),
        "{}: {:?}",
        refused.text,
        refused.headers
    );
    // HL7 v2 over HTTP needs Observation.c.
    let hub = server.token("device-hub", "system/Device.rs", None, Some("org-a"));
    let message = std::fs::read(format!(
        "{}/tests/fixtures/hl7v2/holter-pcd01.hl7",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("fixture");
    let sent = server
        .client
        .post(format!("http://{}/hl7v2", server.addr))
        .bearer_auth(hub)
        .header("content-type", "x-application/hl7-v2+er7")
        .body(message);
    let refused = Reply::from(sent.send().await.expect("sent")).await;
    refused.assert_outcome(StatusCode::FORBIDDEN, "forbidden", "Observation");
    assert!(
        challenge(&refused).is_some_and(|h| h.ends_with("scope=\"system/Observation.c\"")),
        "{:?}",
        refused.headers
    );
    // Not a matter of scopes: the role refuses (403 without a challenge), or the resource is out
    // of the scope's query (404, as if it did not exist).
    let refused = server
        .request_as(&read_only, Method::GET, "AuditEvent", None)
        .await;
    refused.assert_outcome(StatusCode::FORBIDDEN, "forbidden", "role");
    assert_eq!(challenge(&refused), None);
    let vitals = server.token(
        "clinician",
        "user/Observation.rs?category=vital-signs",
        None,
        Some("org-a"),
    );
    let hidden = server
        .request_as(&vitals, Method::GET, "Observation/lab-a", None)
        .await;
    assert_eq!(
        (hidden.status, challenge(&hidden)),
        (StatusCode::NOT_FOUND, None)
    );
}

async fn hubs_ingest_and_auditors_audit(backend: Backend) {
    let server = TestServer::start(backend).await;
    fixture(&server).await;
    let t = tokens(&server);
    assert_eq!(ids(&server, &t.hub_a, "Device").await, ["dev-a"]);
    assert_eq!(
        server
            .request_as(&t.hub_a, Method::GET, "Observation/hr-a", None)
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        server
            .request_as(&t.hub_a, Method::GET, "Patient", None)
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    // The fixture's writes left their audit trail, which auditors (and only they) search.
    let reply = server
        .request_as(
            &t.auditor,
            Method::GET,
            "AuditEvent?patient=Patient/pat-a&subtype=update",
            None,
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert!(
        reply.body["entry"]
            .as_array()
            .is_some_and(|e| !e.is_empty()),
        "{}",
        reply.text
    );
    assert_eq!(
        server.get("AuditEvent").await.status,
        StatusCode::FORBIDDEN,
        "not even an admin"
    );
    assert_eq!(
        ids(&server, &t.auditor, "Provenance").await,
        ["prov-a", "prov-b"]
    );
    assert_eq!(
        server
            .request_as(&t.auditor, Method::GET, "Patient/pat-a", None)
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    // Only the ingesting roles may send HL7 v2.
    let message = std::fs::read(format!(
        "{}/tests/fixtures/hl7v2/holter-pcd01.hl7",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("fixture");
    let send = |token: String| {
        let request = server
            .client
            .post(format!("http://{}/hl7v2", server.addr))
            .bearer_auth(token)
            .header("content-type", "x-application/hl7-v2+er7")
            .body(message.clone());
        async move { request.send().await.expect("sent").status() }
    };
    assert_eq!(send(t.hub_a.clone()).await, StatusCode::OK);
    assert_eq!(send(t.clinician_a.clone()).await, StatusCode::FORBIDDEN);
}

async fn request_rates_are_capped(backend: Backend) {
    let dir = tempfile::tempdir().expect("dir");
    let database = match backend {
        Backend::Sqlite => fhirvault::config::DatabaseUrl::Sqlite(dir.path().join("fhirvault.db")),
        Backend::Postgres => fhirvault::config::DatabaseUrl::Postgres(
            crate::common::postgres::fresh_database().await,
        ),
    };
    let server = TestServer::start_with(backend, dir, database, |config| {
        config.rate_limit_per_second = 1;
        config.rate_limit_burst = 3;
    })
    .await;
    let statuses = futures::future::join_all((0..5).map(|_| server.get("Patient"))).await;
    let limited: Vec<&Reply> = statuses
        .iter()
        .filter(|r| r.status == StatusCode::TOO_MANY_REQUESTS)
        .collect();
    assert_eq!(limited.len(), 2, "3 of 5 pass the burst");
    limited[0].assert_outcome(
        StatusCode::TOO_MANY_REQUESTS,
        "throttled",
        "too many requests",
    );
    assert!(limited[0].header("retry-after").is_some());
    // Another caller has its own budget.
    let other = server.token("auditor", "user/*.rs", None, None);
    assert_eq!(
        server
            .request_as(&other, Method::GET, "AuditEvent", None)
            .await
            .status,
        StatusCode::OK
    );
}

async fn limits_are_clear_errors(backend: Backend) {
    let (dir, database) = crate::common::fresh_store(backend).await;
    let server = TestServer::start_with(backend, dir, database, |config| {
        config.max_bundle_entries = 2
    })
    .await;
    server.get("Patient?_count=1001").await.assert_outcome(
        StatusCode::BAD_REQUEST,
        "invalid",
        "_count may be at most 1000",
    );
    server.get("_history?_count=1001").await.assert_outcome(
        StatusCode::BAD_REQUEST,
        "invalid",
        "_count may be at most 1000",
    );
    let deep = "Observation?subject:Patient.organization:Organization.partof:Organization.partof:Organization.partof:Organization.name=x";
    server
        .get(deep)
        .await
        .assert_outcome(StatusCode::BAD_REQUEST, "invalid", "at most 4 levels");
    let entry = json!({"request": {"method": "GET", "url": "Patient"}});
    let bundle = json!({"resourceType": "Bundle", "type": "batch", "entry": [entry, entry, entry]});
    server.post("", &bundle).await.assert_outcome(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too-long",
        "at most 2 entries",
    );
}

both_backends!(
    limits_are_clear_errors,
    moved_resources_keep_their_past,
    tokens_are_required,
    clinician_sees_its_organisation_only,
    clinicians_see_what_a_patient_link_reaches,
    kept_read_plans_follow_the_data,
    the_compartment_flag_is_backfilled,
    transaction_references_count_as_resolved,
    reindex_recomputes_the_compartment_flag,
    transactions_are_authorised_entry_by_entry,
    crm_sees_pseudonyms_only,
    nothing_the_crm_can_reach_holds_phi,
    insurer_sees_what_it_pays_for,
    patient_sees_its_own_compartment,
    scopes_narrow_what_roles_allow,
    insufficient_scope_names_the_scope,
    hubs_ingest_and_auditors_audit,
    request_rates_are_capped,
);
