//! Access control, black-box: tokens in, what each caller may see out.
//!
//! The cases take their tokens from `--as NAME=TOKEN` (see the README): `clinician` for
//! organisation `conformance-org-a`, `crm`, `patient` for patient `conformance-pat-a` (with
//! `patient/Consent.cud` to record its Consents), `auditor`, and `reader`, a clinician of
//! `conformance-org-a` whose scopes only read (`user/*.rs`). The
//! main `--token` (an admin's) writes the fixture: two organisations, a patient in each, and an
//! Observation per patient, at fixed ids, so the tokens can be issued before the run. A case
//! whose token was not given is skipped.

use serde_json::{Value, json};

use super::{Case, Ctx, searchset};
use crate::check::{self, Outcome, ensure};
use crate::client::Response;

pub fn cases() -> Vec<Case> {
    vec![
        Case::new("sec-001", "no token → 401 OperationOutcome with a Bearer challenge", no_token),
        Case::new("sec-002", "a malformed token → 401 invalid_token", malformed_token),
        Case::new("sec-003", "clinician reads its organisation's patient, not the other's (404)", clinician_reads),
        Case::new(
            "sec-004",
            "clinician searches, chains and includes never reach the other organisation",
            clinician_searches,
        ),
        Case::new(
            "sec-005",
            "clinician cannot write an Observation for the other organisation's patient (403)",
            clinician_writes,
        ),
        Case::new(
            "sec-006",
            "crm reads pseudonymised Patients (PSEUDED, no name) and may not search by name",
            crm_view,
        ),
        Case::new(
            "sec-007",
            "patient sees its own compartment; its page links do not work for others",
            patient_compartment,
        ),
        Case::new(
            "sec-008",
            "a patient's Consent denying the CRM hides its data from the CRM's next request; withdrawn, it shows again",
            consent_withdrawal,
        ),
        Case::new(
            "sec-009",
            "a Consent denying the clinic applies to its clinicians; ETREAT breaks the glass; other purposes are checked",
            break_the_glass,
        ),
        Case::new(
            "sec-010",
            "a read leaves an AuditEvent the auditor finds by patient, entity and subtype",
            audit_of_a_read,
        ),
        Case::new(
            "sec-011",
            "AuditEvents are never written through the API and are the auditor's alone to read",
            audit_is_read_only,
        ),
        Case::new(
            "sec-012",
            "a write its scopes do not cover → 403 with a Bearer insufficient_scope challenge naming a scope",
            insufficient_scope,
        ),
        Case::new(
            "sec-013",
            "a refused token leaves a failed-login AuditEvent (DICOM 110114) naming what it asked for",
            audit_of_a_refused_token,
        ),
    ]
}

const ORG_A: &str = "conformance-org-a";
const ORG_B: &str = "conformance-org-b";
pub(super) const PAT_A: &str = "conformance-pat-a";
pub(super) const PAT_B: &str = "conformance-pat-b";
/// Names nobody else uses: a response that contains one leaked it.
const FAMILY_A: &str = "Konformitaetsa";
pub(super) const FAMILY_B: &str = "Konformitaetsb";

/// The admin writes the fixture (idempotent PUTs at fixed ids).
pub(super) fn fixture(ctx: &Ctx) -> Outcome {
    let mut resources = vec![
        json!({"resourceType": "Organization", "id": ORG_A, "name": "Conformance clinic A"}),
        json!({"resourceType": "Organization", "id": ORG_B, "name": "Conformance clinic B"}),
    ];
    for (patient, org, family) in [(PAT_A, ORG_A, FAMILY_A), (PAT_B, ORG_B, FAMILY_B)] {
        resources.push(
            json!({"resourceType": "Patient", "id": patient, "name": [{"family": family}], "birthDate": "1970-07-07",
            "managingOrganization": {"reference": format!("Organization/{org}")}}),
        );
        resources.push(json!({"resourceType": "Observation", "id": format!("{patient}-hr"), "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
            "subject": {"reference": format!("Patient/{patient}")}, "effectiveDateTime": "2026-03-15T10:30:00Z",
            "valueQuantity": {"value": 72, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"}}));
        resources.push(json!({"resourceType": "Observation", "id": format!("{patient}-rr"), "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "9279-1"}]},
            "subject": {"reference": format!("Patient/{patient}")}, "effectiveDateTime": "2026-03-15T10:31:00Z",
            "valueQuantity": {"value": 16, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"}}));
    }
    for resource in resources {
        let path =
            format!("{}/{}", resource["resourceType"].as_str().unwrap_or("?"), resource["id"].as_str().unwrap_or("?"));
        let response = ctx.put(&path).json(&resource).send()?;
        check::status(&response, &[200, 201]).map_err(|error| format!("setup: {error}"))?;
    }
    Ok(())
}

/// The token named `name`, or the case is skipped.
pub(super) fn token<'c>(ctx: &'c Ctx, name: &str) -> Result<&'c str, String> {
    match ctx.token_for(name) {
        Some(token) => Ok(token),
        None => check::skip(format!("needs --as {name}=TOKEN")).map(|()| ""),
    }
}

fn get_as(ctx: &Ctx, token: &str, path: &str) -> Result<Response, String> {
    ctx.get(path).header("Authorization", &format!("Bearer {token}")).send()
}

fn ids(bundle: &Value) -> Vec<String> {
    let mut ids: Vec<String> =
        check::entries(bundle).iter().filter_map(|e| e["resource"]["id"].as_str().map(str::to_string)).collect();
    ids.sort();
    ids
}

fn challenge(response: &Response, error: Option<&str>) -> Outcome {
    check::status(response, &[401])?;
    check::operation_outcome(response)?;
    let header = response.header("www-authenticate").unwrap_or_default();
    ensure(header.starts_with("Bearer"), || {
        format!("{}: expected a Bearer WWW-Authenticate challenge, got {header:?}", response.label)
    })?;
    match error {
        Some(code) => {
            ensure(header.contains(code), || format!("{}: expected error={code} in {header:?}", response.label))
        }
        None => Ok(()),
    }
}

fn no_token(ctx: &Ctx) -> Outcome {
    let response = ctx.get("Patient").without_authorization().send()?;
    challenge(&response, None)
}

fn malformed_token(ctx: &Ctx) -> Outcome {
    let response = ctx.get("Patient").header("Authorization", "Bearer not-a-jwt").send()?;
    challenge(&response, Some("invalid_token"))
}

fn clinician_reads(ctx: &Ctx) -> Outcome {
    let clinician = token(ctx, "clinician")?;
    fixture(ctx)?;
    check::status(&get_as(ctx, clinician, &format!("Patient/{PAT_A}"))?, &[200])?;
    check::error(&get_as(ctx, clinician, &format!("Patient/{PAT_B}"))?, &[404])
}

fn clinician_searches(ctx: &Ctx) -> Outcome {
    let clinician = token(ctx, "clinician")?;
    fixture(ctx)?;
    for query in [
        format!("Observation?subject:Patient.family={FAMILY_B}"),
        format!("Observation?subject=Patient/{PAT_B}"),
        format!("Patient?_has:Observation:subject:code=8867-4&family={FAMILY_B}"),
        format!("Patient/{PAT_B}/Observation"),
    ] {
        let response = get_as(ctx, clinician, &query)?;
        let bundle = searchset(&response)?;
        ensure(check::entries(&bundle).is_empty(), || {
            format!("{}: expected no entries, got {:?}", response.label, ids(&bundle))
        })?;
    }
    let response =
        get_as(ctx, clinician, &format!("Observation?subject=Patient/{PAT_A}&_include=Observation:subject"))?;
    let bundle = searchset(&response)?;
    ensure(ids(&bundle) == [PAT_A.to_string(), format!("{PAT_A}-hr"), format!("{PAT_A}-rr")], || {
        format!("{}: expected the two Observations and their Patient, got {:?}", response.label, ids(&bundle))
    })?;
    ensure(!response.text.contains(FAMILY_B), || format!("{}: the other organisation's patient leaked", response.label))
}

fn clinician_writes(ctx: &Ctx) -> Outcome {
    let clinician = token(ctx, "clinician")?;
    fixture(ctx)?;
    let observation = json!({"resourceType": "Observation", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": format!("Patient/{PAT_B}")}, "effectiveDateTime": "2026-03-15T10:30:00Z"});
    let response =
        ctx.post("Observation").header("Authorization", &format!("Bearer {clinician}")).json(&observation).send()?;
    check::error(&response, &[403])
}

fn crm_view(ctx: &Ctx) -> Outcome {
    let crm = token(ctx, "crm")?;
    fixture(ctx)?;
    let response = get_as(ctx, crm, &format!("Patient/{PAT_A}"))?;
    let patient = check::resource(&response, "Patient")?;
    ensure(patient.get("name").is_none() && !response.text.contains(FAMILY_A), || {
        format!("{}: the crm view shows the name", response.label)
    })?;
    let labelled =
        patient["meta"]["security"].as_array().is_some_and(|labels| labels.iter().any(|l| l["code"] == "PSEUDED"));
    ensure(labelled, || format!("{}: expected a PSEUDED security label", response.label))?;
    check::error(&get_as(ctx, crm, &format!("Patient?family={FAMILY_A}"))?, &[403])
}

fn patient_compartment(ctx: &Ctx) -> Outcome {
    let patient = token(ctx, "patient")?;
    fixture(ctx)?;
    let response = get_as(ctx, patient, "Observation?_count=1&_sort=_id")?;
    let bundle = searchset(&response)?;
    ensure(check::total(&bundle) == Some(2), || {
        format!("{}: expected total 2 (own Observations only), got {:?}", response.label, check::total(&bundle))
    })?;
    check::error(&get_as(ctx, patient, &format!("Patient/{PAT_B}"))?, &[404])?;
    let next =
        check::link(&bundle, "next").ok_or_else(|| format!("{}: expected a next link", response.label))?.to_string();
    check::status(&get_as(ctx, patient, &next)?, &[200])?;
    // The admin's token is a different caller: the patient's page link is not its to follow.
    check::error(&ctx.get(&next).send()?, &[403])
}

/// An active privacy Consent of `patient` that denies `actor` (an Organization reference or a
/// `urn:fhirvault:role` identifier).
fn denying(patient: &str, actor: Value) -> Value {
    json!({"resourceType": "Consent", "status": "active", "dateTime": "2026-11-23T10:00:00Z",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": format!("Patient/{patient}")},
        "provision": {"type": "deny", "actor": [{"role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP"}]},
            "reference": actor}]}})
}

/// Send `request` as the caller of `token`.
fn with_token<'r>(request: crate::client::Request<'r>, token: &str) -> crate::client::Request<'r> {
    request.header("Authorization", &format!("Bearer {token}"))
}

fn consent_withdrawal(ctx: &Ctx) -> Outcome {
    let (crm, patient) = (token(ctx, "crm")?, token(ctx, "patient")?);
    fixture(ctx)?;
    let path = format!("Observation/{PAT_A}-hr");
    check::status(&get_as(ctx, crm, &path)?, &[200])?;
    let refusal = denying(PAT_A, json!({"identifier": {"system": "urn:fhirvault:role", "value": "crm"}}));
    let response = with_token(ctx.post("Consent"), patient).json(&refusal).send()?;
    check::status(&response, &[201])?;
    let stored = check::resource(&response, "Consent")?;
    let id = stored["id"].as_str().ok_or("the created Consent has no id")?.to_string();
    let denied = get_as(ctx, crm, &path);
    let found = get_as(ctx, crm, &format!("Observation?subject=Patient/{PAT_A}"));
    let mut withdrawn = stored.clone();
    withdrawn["status"] = json!("inactive");
    let withdrawal = with_token(ctx.put(&format!("Consent/{id}")), patient).json(&withdrawn).send()?;
    // Checked after the withdrawal, so that a failure leaves no refusal behind for other cases.
    check::status(&withdrawal, &[200])?;
    check::error(&denied?, &[404])?;
    let found = found?;
    let bundle = searchset(&found)?;
    ensure(check::entries(&bundle).is_empty(), || {
        format!("{}: expected nothing while denied, got {:?}", found.label, ids(&bundle))
    })?;
    check::status(&get_as(ctx, crm, &path)?, &[200])
}

fn break_the_glass(ctx: &Ctx) -> Outcome {
    let clinician = token(ctx, "clinician")?;
    fixture(ctx)?;
    let refusal = denying(PAT_A, json!({"reference": format!("Organization/{ORG_A}")}));
    let response = ctx.post("Consent").json(&refusal).send()?;
    check::status(&response, &[201])?;
    let id = check::resource(&response, "Consent")?["id"].as_str().unwrap_or_default().to_string();
    let path = format!("Patient/{PAT_A}");
    let denied = get_as(ctx, clinician, &path);
    let emergency = with_token(ctx.get(&path), clinician).header("X-Purpose-Of-Use", "ETREAT").send();
    let nonsense = with_token(ctx.get(&path), clinician).header("X-Purpose-Of-Use", "NOT-A-PURPOSE").send();
    check::status(&ctx.delete(&format!("Consent/{id}")).send()?, &[200, 204])?;
    check::error(&denied?, &[404])?;
    check::status(&emergency?, &[200])?;
    check::error(&nonsense?, &[400])
}

fn audit_of_a_read(ctx: &Ctx) -> Outcome {
    let auditor = token(ctx, "auditor")?;
    fixture(ctx)?;
    check::status(&ctx.get(&format!("Patient/{PAT_A}")).send()?, &[200])?;
    let response = get_as(
        ctx,
        auditor,
        &format!("AuditEvent?patient=Patient/{PAT_A}&entity=Patient/{PAT_A}&subtype=read&_sort=-date&_count=1"),
    )?;
    let bundle = searchset(&response)?;
    let event = check::entries(&bundle)
        .first()
        .map(|e| e["resource"].clone())
        .ok_or_else(|| format!("{}: no AuditEvent for the read", response.label))?;
    ensure(event["action"] == "R" && event["outcome"] == "0", || {
        format!("{}: expected action R, outcome 0: {event}", response.label)
    })?;
    let requestor = event["agent"]
        .as_array()
        .and_then(|agents| agents.iter().find(|a| a["requestor"] == true))
        .cloned()
        .unwrap_or_default();
    ensure(requestor["network"]["address"].is_string(), || {
        format!("{}: the requesting agent has no network address", response.label)
    })
}

fn audit_is_read_only(ctx: &Ctx) -> Outcome {
    let auditor = token(ctx, "auditor")?;
    let event = json!({"resourceType": "AuditEvent", "recorded": "2026-01-01T00:00:00Z",
        "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest"},
        "agent": [{"requestor": true, "who": {"display": "forger"}}], "source": {"observer": {"display": "forger"}}});
    check::error(&ctx.post("AuditEvent").json(&event).send()?, &[405])?;
    check::error(&with_token(ctx.post("AuditEvent"), auditor).json(&event).send()?, &[403, 405])?;
    check::error(&ctx.get("AuditEvent").send()?, &[403])?;
    let response = get_as(ctx, auditor, "AuditEvent?_count=1")?;
    let bundle = searchset(&response)?;
    let Some(id) = check::entries(&bundle).first().and_then(|e| e["resource"]["id"].as_str()).map(str::to_string)
    else {
        return Err(format!("{}: the auditor found no AuditEvent at all", response.label));
    };
    check::error(&ctx.delete(&format!("AuditEvent/{id}")).send()?, &[405])?;
    check::error(&with_token(ctx.delete(&format!("AuditEvent/{id}")), auditor).send()?, &[403, 405])
}

/// RFC 6750 §3.1: a valid token whose scopes do not cover the request gets 403 and a challenge
/// with `error="insufficient_scope"` and the `scope` that would do.
fn insufficient_scope(ctx: &Ctx) -> Outcome {
    let reader = token(ctx, "reader")?;
    fixture(ctx)?;
    check::status(&get_as(ctx, reader, &format!("Patient/{PAT_A}"))?, &[200])?;
    let observation = json!({"resourceType": "Observation", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": format!("Patient/{PAT_A}")}, "effectiveDateTime": "2026-03-15T10:30:00Z"});
    let response =
        ctx.post("Observation").header("Authorization", &format!("Bearer {reader}")).json(&observation).send()?;
    check::error(&response, &[403])?;
    let header = response.header("www-authenticate").unwrap_or_default();
    ensure(
        header.starts_with("Bearer") && header.contains("error=\"insufficient_scope\"") && header.contains("scope=\""),
        || {
            format!(
                "{}: expected a Bearer challenge with error=\"insufficient_scope\" and scope=, got {header:?}",
                response.label
            )
        },
    )
}

fn audit_of_a_refused_token(ctx: &Ctx) -> Outcome {
    let auditor = token(ctx, "auditor")?;
    // An id no earlier run asked for, so that the record found is this run's.
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let asked = format!("Patient/conformance-refused-{nanos}");
    challenge(&ctx.get(&asked).header("Authorization", "Bearer not-a-jwt").send()?, Some("invalid_token"))?;
    let response = get_as(
        ctx,
        auditor,
        &format!("AuditEvent?type=http://dicom.nema.org/resources/ontology/DCM|110114&entity={asked}"),
    )?;
    let bundle = searchset(&response)?;
    let events = check::entries(&bundle);
    ensure(events.len() == 1, || {
        format!("{}: expected one failed-login AuditEvent, found {}", response.label, events.len())
    })?;
    let event = &events[0]["resource"];
    ensure(event["outcome"] == "4" && event["action"] == "E", || {
        format!("{}: expected outcome 4 and action E: {event}", response.label)
    })?;
    ensure(event["agent"][0]["network"]["address"].is_string(), || {
        format!("{}: the refused request's address is missing: {event}", response.label)
    })
}
