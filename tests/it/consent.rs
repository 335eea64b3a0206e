//! Consent at access time through a real server: permit and deny provisions by organisation,
//! role, purpose, resource class, data instance and period, in opt-out and opt-in deployments;
//! withdrawal on the next request; the newest Consent winning; break-the-glass. Two patients of
//! one clinic, both insured by one insurer, so that every difference is the Consent's doing.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{Backend, Reply, TestServer, fresh_store, match_ids};
use fhirvault::auth::consent::ConsentDefault;

const ROLE_SYSTEM: &str = "urn:fhirvault:role";

async fn fixture(server: &TestServer) {
    let mut resources = vec![
        json!({"resourceType": "Organization", "id": "org-a", "name": "Clinic A"}),
        json!({"resourceType": "Organization", "id": "ins-1", "name": "Insurer 1"}),
    ];
    for p in ["a", "b"] {
        let patient = format!("Patient/pat-{p}");
        resources.push(
            json!({"resourceType": "Patient", "id": format!("pat-{p}"), "gender": "female",
            "managingOrganization": {"reference": "Organization/org-a"}}),
        );
        for (kind, category) in [("hr", "vital-signs"), ("lab", "laboratory")] {
            resources.push(json!({"resourceType": "Observation", "id": format!("{kind}-{p}"), "status": "final",
                "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": category}]}],
                "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]}, "subject": {"reference": patient}}));
        }
        resources.push(json!({"resourceType": "Device", "id": format!("dev-{p}"), "owner": {"reference": "Organization/org-a"},
            "patient": {"reference": patient}}));
        resources.push(
            json!({"resourceType": "Coverage", "id": format!("cov-{p}"), "status": "active",
            "beneficiary": {"reference": patient}, "payor": [{"reference": "Organization/ins-1"}]}),
        );
        resources.push(json!({"resourceType": "Claim", "id": format!("claim-{p}"), "status": "active", "use": "claim",
            "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/claim-type", "code": "professional"}]},
            "patient": {"reference": patient}, "created": "2026-03-05",
            "provider": {"reference": "Organization/org-a"}, "insurer": {"reference": "Organization/ins-1"},
            "priority": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/processpriority", "code": "normal"}]},
            "insurance": [{"sequence": 1, "focal": true, "coverage": {"reference": format!("Coverage/cov-{p}")}}]}));
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

/// An active privacy Consent of `patient` with `provision` (recorded at `date_time`).
fn consent(patient: &str, date_time: &str, provision: Value) -> Value {
    json!({"resourceType": "Consent", "status": "active",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": format!("Patient/{patient}")},
        "dateTime": date_time,
        "provision": provision})
}

fn org_actor(id: &str) -> Value {
    json!({"role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP"}]},
        "reference": {"reference": format!("Organization/{id}")}})
}

fn role_actor(role: &str) -> Value {
    json!({"role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP"}]},
        "reference": {"identifier": {"system": ROLE_SYSTEM, "value": role}}})
}

fn class(resource_type: &str) -> Value {
    json!({"system": "http://hl7.org/fhir/resource-types", "code": resource_type})
}

struct Callers {
    clinician: String,
    crm: String,
    insurer: String,
    patient_a: String,
}

fn callers(server: &TestServer) -> Callers {
    Callers {
        clinician: server.token("clinician", "user/*.cruds", None, Some("org-a")),
        crm: server.token("crm", "user/*.rs", None, None),
        insurer: server.token("insurer", "user/*.rs", None, Some("ins-1")),
        patient_a: server.token(
            "patient",
            "patient/*.rs patient/Consent.cud",
            Some("pat-a"),
            None,
        ),
    }
}

async fn get(server: &TestServer, token: &str, path: &str, purpose: Option<&str>) -> Reply {
    let authorization = format!("Bearer {token}");
    let mut headers = vec![("authorization", authorization.as_str())];
    headers.extend(purpose.map(|p| ("x-purpose-of-use", p)));
    server.request(Method::GET, path, None, &headers).await
}

/// The ids a search finds (matches and includes), sorted.
async fn found(server: &TestServer, token: &str, query: &str) -> Vec<String> {
    let reply = get(server, token, query, None).await;
    assert_eq!(reply.status, StatusCode::OK, "{query}: {}", reply.text);
    let mut ids: Vec<String> = reply.body["entry"]
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

async fn total(server: &TestServer, token: &str, query: &str) -> u64 {
    let reply = get(server, token, query, None).await;
    assert_eq!(reply.status, StatusCode::OK, "{query}: {}", reply.text);
    reply.body["total"].as_u64().expect("total")
}

async fn status(server: &TestServer, token: &str, path: &str) -> StatusCode {
    get(server, token, path, None).await.status
}

async fn record(server: &TestServer, consent: &Value) -> String {
    let reply = server.post("Consent", consent).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    reply.body["id"].as_str().expect("id").to_string()
}

async fn start(backend: Backend, default: ConsentDefault) -> TestServer {
    let (dir, database) = fresh_store(backend).await;
    let server = TestServer::start_with(backend, dir, database, |config| {
        config.consent_default = default
    })
    .await;
    fixture(&server).await;
    server
}

async fn a_denied_patient_is_absent_everywhere(backend: Backend) {
    let server = start(backend, ConsentDefault::OptOut).await;
    let c = callers(&server);
    // Opt-out: shared until denied.
    assert_eq!(
        found(&server, &c.insurer, "Coverage").await,
        ["cov-a", "cov-b"]
    );
    record(
        &server,
        &consent(
            "pat-a",
            "2026-01-01T00:00:00Z",
            json!({"type": "deny", "actor": [org_actor("ins-1")]}),
        ),
    )
    .await;
    let i = c.insurer.as_str();
    for path in [
        "Patient/pat-a",
        "Coverage/cov-a",
        "Claim/claim-a",
        "Claim/claim-a/_history/1",
        "Patient/pat-a/_history",
    ] {
        assert_eq!(
            status(&server, i, path).await,
            StatusCode::NOT_FOUND,
            "{path}"
        );
    }
    assert_eq!(status(&server, i, "Patient/pat-b").await, StatusCode::OK);
    assert_eq!(found(&server, i, "Coverage").await, ["cov-b"]);
    assert_eq!(found(&server, i, "Patient").await, ["pat-b"]);
    assert_eq!(
        found(&server, i, "Claim?_include=Claim:patient").await,
        ["claim-b", "pat-b"]
    );
    assert_eq!(
        found(&server, i, "Coverage?_include=Coverage:beneficiary").await,
        ["cov-b", "pat-b"]
    );
    assert_eq!(
        found(&server, i, "Patient?_revinclude=Claim:patient").await,
        ["claim-b", "pat-b"]
    );
    assert_eq!(
        found(&server, i, "Claim?patient.gender=female").await,
        ["claim-b"]
    );
    assert_eq!(
        found(&server, i, "Patient?_has:Claim:patient:status=active").await,
        ["pat-b"]
    );
    assert_eq!(total(&server, i, "Claim?_summary=count").await, 1);
    assert_eq!(total(&server, i, "Coverage?_total=accurate").await, 1);
    assert_eq!(
        found(&server, i, "?_type=Patient,Coverage,Claim").await,
        ["claim-b", "cov-b", "pat-b"]
    );
    assert_eq!(found(&server, i, "Claim/_history").await, ["claim-b"]);
    // Others are not named: the CRM and the clinic still see patient a.
    assert_eq!(
        found(&server, &c.crm, "Observation?subject=Patient/pat-a").await,
        ["hr-a", "lab-a"]
    );
    assert_eq!(
        status(&server, &c.clinician, "Patient/pat-a").await,
        StatusCode::OK
    );
    // Device.patient makes a recorder the patient's data too.
    record(
        &server,
        &consent(
            "pat-b",
            "2026-01-01T00:00:00Z",
            json!({"type": "deny", "actor": [role_actor("crm")]}),
        ),
    )
    .await;
    assert_eq!(found(&server, &c.crm, "Device").await, ["dev-a"]);
    assert_eq!(
        found(&server, &c.crm, "Observation").await,
        ["hr-a", "lab-a"]
    );
}

async fn withdrawal_takes_effect_on_the_next_request(backend: Backend) {
    let server = start(backend, ConsentDefault::OptOut).await;
    let c = callers(&server);
    // The patient records a refusal through the portal…
    let refusal = consent(
        "pat-a",
        "2026-02-01T00:00:00Z",
        json!({"type": "deny", "actor": [role_actor("crm")]}),
    );
    let reply = server
        .request_as(&c.patient_a, Method::POST, "Consent", Some(&refusal))
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    let id = reply.body["id"].as_str().expect("id").to_string();
    assert_eq!(
        status(&server, &c.crm, "Patient/pat-a").await,
        StatusCode::NOT_FOUND
    );
    // …withdraws it (inactive)…
    let mut withdrawn = reply.body.clone();
    withdrawn["status"] = json!("inactive");
    let reply = server
        .request_as(
            &c.patient_a,
            Method::PUT,
            &format!("Consent/{id}"),
            Some(&withdrawn),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(
        status(&server, &c.crm, "Patient/pat-a").await,
        StatusCode::OK
    );
    // …refuses again, then deletes the Consent.
    withdrawn["status"] = json!("active");
    server
        .request_as(
            &c.patient_a,
            Method::PUT,
            &format!("Consent/{id}"),
            Some(&withdrawn),
        )
        .await;
    assert_eq!(
        status(&server, &c.crm, "Observation/hr-a").await,
        StatusCode::NOT_FOUND
    );
    let reply = server
        .request_as(&c.patient_a, Method::DELETE, &format!("Consent/{id}"), None)
        .await;
    assert!(reply.status.is_success(), "{}", reply.text);
    assert_eq!(
        status(&server, &c.crm, "Observation/hr-a").await,
        StatusCode::OK
    );
    // An entered-in-error Consent decides nothing either.
    let mut mistaken = consent("pat-a", "2026-02-01T00:00:00Z", json!({"type": "deny"}));
    mistaken["status"] = json!("entered-in-error");
    record(&server, &mistaken).await;
    assert_eq!(
        status(&server, &c.crm, "Patient/pat-a").await,
        StatusCode::OK
    );
    // A patient cannot record a Consent for someone else.
    let reply = server
        .request_as(
            &c.patient_a,
            Method::POST,
            "Consent",
            Some(&consent(
                "pat-b",
                "2026-02-01T00:00:00Z",
                json!({"type": "deny"}),
            )),
        )
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.text);
}

async fn opt_in_shares_only_what_is_permitted(backend: Backend) {
    let server = start(backend, ConsentDefault::OptIn).await;
    let c = callers(&server);
    assert!(found(&server, &c.crm, "Patient").await.is_empty());
    assert!(found(&server, &c.insurer, "Coverage").await.is_empty());
    assert_eq!(
        total(&server, &c.crm, "Observation?_summary=count").await,
        0
    );
    // The clinic treating them needs no Consent.
    assert_eq!(
        found(&server, &c.clinician, "Patient").await,
        ["pat-a", "pat-b"]
    );
    // Patient a lets the CRM see its Holter data for operations, nothing else.
    record(&server, &consent("pat-a", "2026-01-01T00:00:00Z", json!({"type": "permit", "actor": [role_actor("crm")],
        "purpose": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "HOPERAT"}],
        "class": [class("Observation"), class("Device")]}))).await;
    assert_eq!(
        found(&server, &c.crm, "Observation").await,
        ["hr-a", "lab-a"]
    );
    assert_eq!(found(&server, &c.crm, "Device").await, ["dev-a"]);
    assert!(found(&server, &c.crm, "Patient").await.is_empty());
    // A more specific purpose is covered by the broader one; another purpose is not.
    assert_eq!(
        get(&server, &c.crm, "Observation/hr-a", Some("HDM"))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        get(&server, &c.crm, "Observation/hr-a", Some("HMARKT"))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    // Patient b permits its insurer, for payment, during 2026 only: covered now? The period
    // decides (a past period does not, a current one does).
    record(
        &server,
        &consent(
            "pat-b",
            "2026-01-01T00:00:00Z",
            json!({"type": "permit", "actor": [org_actor("ins-1")],
        "period": {"start": "2020-01-01", "end": "2021-01-01"}}),
        ),
    )
    .await;
    assert!(found(&server, &c.insurer, "Coverage").await.is_empty());
    record(
        &server,
        &consent(
            "pat-b",
            "2026-01-02T00:00:00Z",
            json!({"type": "permit", "actor": [org_actor("ins-1")],
        "period": {"start": "2020-01-01", "end": "2999-01-01"},
        "provision": [{"type": "deny", "class": [class("Claim")]}]}),
        ),
    )
    .await;
    assert_eq!(found(&server, &c.insurer, "Coverage").await, ["cov-b"]);
    assert!(found(&server, &c.insurer, "Claim").await.is_empty());
    assert_eq!(found(&server, &c.insurer, "Patient").await, ["pat-b"]);
}

async fn the_newest_consent_wins_where_they_conflict(backend: Backend) {
    let server = start(backend, ConsentDefault::OptOut).await;
    let c = callers(&server);
    record(
        &server,
        &consent(
            "pat-a",
            "2026-01-01T00:00:00Z",
            json!({"type": "deny", "actor": [org_actor("ins-1")]}),
        ),
    )
    .await;
    let newer = record(
        &server,
        &consent(
            "pat-a",
            "2026-06-01T00:00:00Z",
            json!({"type": "permit", "actor": [org_actor("ins-1")],
        "class": [class("Coverage")]}),
        ),
    )
    .await;
    // The newer Consent speaks about Coverage only: there it wins; elsewhere the older decides.
    assert_eq!(
        found(&server, &c.insurer, "Coverage").await,
        ["cov-a", "cov-b"]
    );
    assert_eq!(found(&server, &c.insurer, "Claim").await, ["claim-b"]);
    // Dated before the refusal, the same permit loses.
    let mut older = consent(
        "pat-a",
        "2025-06-01T00:00:00Z",
        json!({"type": "permit", "actor": [org_actor("ins-1")], "class": [class("Coverage")]}),
    );
    older["id"] = json!(newer);
    assert!(
        server
            .put(&format!("Consent/{newer}"), &older)
            .await
            .status
            .is_success()
    );
    assert_eq!(found(&server, &c.insurer, "Coverage").await, ["cov-b"]);
    // One data instance can be singled out.
    record(&server, &consent("pat-b", "2026-01-01T00:00:00Z", json!({"type": "permit", "provision": [{"type": "deny",
        "actor": [role_actor("crm")], "data": [{"meaning": "instance", "reference": {"reference": "Observation/hr-b"}}]}]}))).await;
    assert_eq!(
        found(&server, &c.crm, "Observation?subject=Patient/pat-b").await,
        ["lab-b"]
    );
}

async fn clinicians_and_break_the_glass(backend: Backend) {
    let server = start(backend, ConsentDefault::OptIn).await;
    let c = callers(&server);
    record(
        &server,
        &consent(
            "pat-a",
            "2026-01-01T00:00:00Z",
            json!({"type": "deny", "actor": [org_actor("org-a")]}),
        ),
    )
    .await;
    // A deny naming the clinic applies to it…
    assert_eq!(
        status(&server, &c.clinician, "Patient/pat-a").await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        found(&server, &c.clinician, "Observation").await,
        ["hr-b", "lab-b"]
    );
    // …unless a clinician declares an emergency.
    let emergency = get(&server, &c.clinician, "Patient/pat-a", Some("ETREAT")).await;
    assert_eq!(emergency.status, StatusCode::OK, "{}", emergency.text);
    let reply = get(
        &server,
        &c.clinician,
        "Observation",
        Some("http://terminology.hl7.org/CodeSystem/v3-ActReason|ETREAT"),
    )
    .await;
    let mut all = match_ids(&reply.body);
    all.sort();
    assert_eq!(all, ["hr-a", "hr-b", "lab-a", "lab-b"]);
    // Only clinicians may; and the purpose must be a PurposeOfUse code.
    get(&server, &c.insurer, "Coverage", Some("ETREAT"))
        .await
        .assert_outcome(StatusCode::FORBIDDEN, "forbidden", "clinicians only");
    get(&server, &c.crm, "Patient", Some("no-such-purpose"))
        .await
        .assert_outcome(StatusCode::BAD_REQUEST, "invalid", "PurposeOfUse");
    // A token that fixes its purpose cannot be used for another.
    let request = fhirvault::auth::token::IssueRequest {
        role: "insurer".into(),
        scope: "user/*.rs".into(),
        patient: None,
        org: Some("ins-1".into()),
        subject: None,
        purpose: Some("HPAYMT".into()),
        ttl: std::time::Duration::from_secs(600),
    };
    let fixed = server.issuer.issue(&request).expect("token");
    assert_eq!(
        get(&server, &fixed, "Coverage", None).await.status,
        StatusCode::OK
    );
    assert_eq!(
        get(&server, &fixed, "Coverage", Some("HPAYMT"))
            .await
            .status,
        StatusCode::OK
    );
    get(&server, &fixed, "Coverage", Some("HOPERAT"))
        .await
        .assert_outcome(StatusCode::FORBIDDEN, "forbidden", "purpose of use HPAYMT");
}

async fn unenforceable_consents_fail_safe(backend: Backend) {
    let server = start(backend, ConsentDefault::OptOut).await;
    let c = callers(&server);
    // A deny on codes (not indexed for consent) denies the whole class instead.
    record(&server, &consent("pat-a", "2026-01-01T00:00:00Z", json!({"type": "deny", "actor": [role_actor("crm")],
        "class": [class("Observation")], "code": [{"coding": [{"system": "http://loinc.org", "code": "8867-4"}]}]}))).await;
    assert!(
        found(&server, &c.crm, "Observation?subject=Patient/pat-a")
            .await
            .is_empty()
    );
    assert_eq!(
        status(&server, &c.crm, "Patient/pat-a").await,
        StatusCode::OK
    );
    // An actor no token can be matched to is refused, saying what would work.
    let reply = server
        .post(
            "Consent",
            &consent(
                "pat-a",
                "2026-01-01T00:00:00Z",
                json!({"type": "deny",
            "actor": [{"role": {"text": "x"}, "reference": {"reference": "Practitioner/dr-x"}}]}),
            ),
        )
        .await;
    reply.assert_outcome(StatusCode::UNPROCESSABLE_ENTITY, "not-supported", "actor");
}

/// `Patient/[id]/$everything`: the patient's resources, each type within the caller's reach,
/// and nothing at all of a patient whose Consent denies the caller.
async fn everything_honours_roles_and_consent(backend: Backend) {
    let server = start(backend, ConsentDefault::OptOut).await;
    let c = callers(&server);
    assert_eq!(
        found(&server, &server_admin(&server), "Patient/pat-a/$everything").await,
        ["claim-a", "cov-a", "dev-a", "hr-a", "lab-a", "pat-a"]
    );
    assert_eq!(
        found(&server, &c.insurer, "Patient/pat-a/$everything").await,
        ["claim-a", "cov-a", "pat-a"]
    );
    assert_eq!(
        found(
            &server,
            &c.crm,
            "Patient/pat-a/$everything?_type=Observation,Device"
        )
        .await,
        ["dev-a", "hr-a", "lab-a"]
    );
    // Paged: the next link carries on where the first page stopped.
    let first = get(
        &server,
        &c.clinician,
        "Patient/pat-a/$everything?_count=4",
        None,
    )
    .await;
    assert_eq!(
        first.body["entry"].as_array().map(Vec::len),
        Some(4),
        "{}",
        first.text
    );
    let next = first.body["link"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["relation"] == "next")
        .expect("next link")["url"]
        .as_str()
        .unwrap()
        .to_string();
    let next = next.split_once("/fhir/").unwrap().1.to_string();
    assert_eq!(
        get(&server, &c.clinician, &next, None).await.body["entry"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    record(
        &server,
        &consent(
            "pat-a",
            "2026-01-01T00:00:00Z",
            json!({"type": "deny", "actor": [org_actor("ins-1")]}),
        ),
    )
    .await;
    assert_eq!(
        status(&server, &c.insurer, "Patient/pat-a/$everything").await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        found(&server, &c.insurer, "Patient/pat-b/$everything").await,
        ["claim-b", "cov-b", "pat-b"]
    );
    get(
        &server,
        &c.clinician,
        "Patient/pat-a/$everything?start=2026-01-01",
        None,
    )
    .await
    .assert_outcome(StatusCode::BAD_REQUEST, "not-supported", "_since");
}

/// A resource whose subject is a Patient on another server, with the same id as one of ours, is
/// no resource of our Patient: not in its `$everything`. One naming our Patient by an absolute
/// URL on our own base is.
async fn everything_holds_no_other_servers_patient(backend: Backend) {
    let server = start(backend, ConsentDefault::OptOut).await;
    for (id, subject) in [
        (
            "hr-elsewhere",
            "https://elsewhere.example/fhir/Patient/pat-a".to_string(),
        ),
        ("hr-own-base", format!("{}/Patient/pat-a", server.base)),
    ] {
        let observation = json!({"resourceType": "Observation", "id": id, "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
            "subject": {"reference": subject}});
        let reply = server.put(&format!("Observation/{id}"), &observation).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    }
    let everything = found(&server, &server_admin(&server), "Patient/pat-a/$everything").await;
    assert!(
        everything.contains(&"hr-own-base".to_string()),
        "{everything:?}"
    );
    assert!(
        !everything.contains(&"hr-elsewhere".to_string()),
        "{everything:?}"
    );
}

fn server_admin(server: &TestServer) -> String {
    server.token("admin", "user/*.cruds", None, None)
}

/// Consents stored before enforcement existed (their rules missing) are enforced after the next
/// start, which writes their rules.
async fn consents_stored_before_an_upgrade_are_enforced(backend: Backend) {
    let server = start(backend, ConsentDefault::OptOut).await;
    record(
        &server,
        &consent(
            "pat-a",
            "2026-01-01T00:00:00Z",
            json!({"type": "deny", "actor": [role_actor("crm")]}),
        ),
    )
    .await;
    let device =
        json!({"resourceType": "Device", "id": "dev-a", "patient": {"reference": "Patient/pat-a"}});
    assert!(
        server
            .put("Device/dev-a", &device)
            .await
            .status
            .is_success()
    );
    let (dir, database) = server.stop().await;
    {
        use sqlx::Connection;
        let mut conn = crate::audit_chain::connect(&database).await;
        sqlx::query("DELETE FROM consent_rules")
            .execute(&mut conn)
            .await
            .expect("rules removed, as before the upgrade");
        // A Device written before `Device.patient` counted for the compartment, and the
        // migration that fills it in not yet run.
        sqlx::query("UPDATE resource_heads SET compartment = NULL WHERE resource_type = 'Device'")
            .execute(&mut conn)
            .await
            .expect("compartment cleared");
        sqlx::query("DELETE FROM _sqlx_migrations WHERE version = 7")
            .execute(&mut conn)
            .await
            .expect("migration 7 not applied yet");
        conn.close().await.expect("closed");
    }
    let server = TestServer::start_with(backend, dir, database, |_| {}).await;
    let c = callers(&server); // a new port is a new issuer
    assert_eq!(
        status(&server, &c.crm, "Patient/pat-a").await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        status(&server, &c.crm, "Patient/pat-b").await,
        StatusCode::OK
    );
    let everything = server.get("Patient/pat-a/$everything").await;
    assert!(
        everything.text.contains("\"Device/dev-a\"")
            || everything.text.contains("\"id\":\"dev-a\""),
        "{}",
        everything.text
    );
}

/// A signed consent document travels as the Consent's sourceAttachment: stored sealed like any
/// resource, read back byte for byte; or referenced by URL and hash.
async fn signed_documents_are_stored_encrypted(backend: Backend) {
    use base64::Engine;
    let server = start(backend, ConsentDefault::OptOut).await;
    let marker = "SIGNED-CONSENT-PDF-Hohenwarth-4711";
    let pdf = format!("%PDF-1.7\n1 0 obj << /Title ({marker}) >> endobj\n%%EOF\n");
    let data = base64::engine::general_purpose::STANDARD.encode(pdf.as_bytes());
    let mut signed = consent("pat-a", "2026-01-01T00:00:00Z", json!({"type": "permit"}));
    signed["sourceAttachment"] =
        json!({"contentType": "application/pdf", "data": data, "title": "Einwilligung"});
    let id = record(&server, &signed).await;
    let read = server.get(&format!("Consent/{id}")).await;
    assert_eq!(read.body["sourceAttachment"]["data"], json!(data));
    let mut by_reference = consent("pat-b", "2026-01-01T00:00:00Z", json!({"type": "permit"}));
    by_reference["sourceAttachment"] = json!({"contentType": "application/pdf", "url": "https://esign.example/documents/77",
        "hash": "2jmj7l5rSw0yVb/vlWAYkK/YBwk=", "size": 4096});
    let other = record(&server, &by_reference).await;
    assert_eq!(
        server.get(&format!("Consent/{other}")).await.body["sourceAttachment"]["hash"],
        "2jmj7l5rSw0yVb/vlWAYkK/YBwk="
    );
    if let Some(path) = server.sqlite_path() {
        let (dir, _) = server.stop().await;
        let mut bytes = Vec::new();
        for entry in std::fs::read_dir(dir.path()).expect("dir") {
            let path = entry.expect("entry").path();
            if path.to_string_lossy().contains("fhirvault.db") {
                bytes.extend(std::fs::read(&path).expect("db file"));
            }
        }
        assert!(path.exists());
        for needle in [marker.as_bytes(), data.as_bytes(), b"Einwilligung"] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "plain text in the database"
            );
        }
    }
}

both_backends!(
    everything_holds_no_other_servers_patient,
    a_denied_patient_is_absent_everywhere,
    withdrawal_takes_effect_on_the_next_request,
    opt_in_shares_only_what_is_permitted,
    the_newest_consent_wins_where_they_conflict,
    clinicians_and_break_the_glass,
    unenforceable_consents_fail_safe,
    signed_documents_are_stored_encrypted,
    consents_stored_before_an_upgrade_are_enforced,
    everything_honours_roles_and_consent,
);
