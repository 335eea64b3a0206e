//! Access control, black-box: tokens in, what each caller may see out.
//!
//! The cases take their tokens from `--as NAME=TOKEN` (see the README): `clinician` for
//! organisation `conformance-org-a`, `crm`, and `patient` for patient `conformance-pat-a`. The
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
        Case::new("sec-004", "clinician searches, chains and includes never reach the other organisation", clinician_searches),
        Case::new("sec-005", "clinician cannot write an Observation for the other organisation's patient (403)", clinician_writes),
        Case::new("sec-006", "crm reads pseudonymised Patients (PSEUDED, no name) and may not search by name", crm_view),
        Case::new("sec-007", "patient sees its own compartment; its page links do not work for others", patient_compartment),
    ]
}

const ORG_A: &str = "conformance-org-a";
const ORG_B: &str = "conformance-org-b";
const PAT_A: &str = "conformance-pat-a";
const PAT_B: &str = "conformance-pat-b";
/// Names nobody else uses: a response that contains one leaked it.
const FAMILY_A: &str = "Konformitaetsa";
const FAMILY_B: &str = "Konformitaetsb";

/// The admin writes the fixture (idempotent PUTs at fixed ids).
fn fixture(ctx: &Ctx) -> Outcome {
    let mut resources = vec![
        json!({"resourceType": "Organization", "id": ORG_A, "name": "Conformance clinic A"}),
        json!({"resourceType": "Organization", "id": ORG_B, "name": "Conformance clinic B"}),
    ];
    for (patient, org, family) in [(PAT_A, ORG_A, FAMILY_A), (PAT_B, ORG_B, FAMILY_B)] {
        resources.push(json!({"resourceType": "Patient", "id": patient, "name": [{"family": family}], "birthDate": "1970-07-07",
            "managingOrganization": {"reference": format!("Organization/{org}")}}));
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
        let path = format!("{}/{}", resource["resourceType"].as_str().unwrap_or("?"), resource["id"].as_str().unwrap_or("?"));
        let response = ctx.put(&path).json(&resource).send()?;
        check::status(&response, &[200, 201]).map_err(|error| format!("setup: {error}"))?;
    }
    Ok(())
}

/// The token named `name`, or the case is skipped.
fn token<'c>(ctx: &'c Ctx, name: &str) -> Result<&'c str, String> {
    match ctx.token_for(name) {
        Some(token) => Ok(token),
        None => check::skip(format!("needs --as {name}=TOKEN")).map(|()| ""),
    }
}

fn get_as(ctx: &Ctx, token: &str, path: &str) -> Result<Response, String> {
    ctx.get(path).header("Authorization", &format!("Bearer {token}")).send()
}

fn ids(bundle: &Value) -> Vec<String> {
    let mut ids: Vec<String> = check::entries(bundle).iter().filter_map(|e| e["resource"]["id"].as_str().map(str::to_string)).collect();
    ids.sort();
    ids
}

fn challenge(response: &Response, error: Option<&str>) -> Outcome {
    check::status(response, &[401])?;
    check::operation_outcome(response)?;
    let header = response.header("www-authenticate").unwrap_or_default();
    ensure(header.starts_with("Bearer"), || format!("{}: expected a Bearer WWW-Authenticate challenge, got {header:?}", response.label))?;
    match error {
        Some(code) => ensure(header.contains(code), || format!("{}: expected error={code} in {header:?}", response.label)),
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
        ensure(check::entries(&bundle).is_empty(), || format!("{}: expected no entries, got {:?}", response.label, ids(&bundle)))?;
    }
    let response = get_as(ctx, clinician, &format!("Observation?subject=Patient/{PAT_A}&_include=Observation:subject"))?;
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
    let response = ctx.post("Observation").header("Authorization", &format!("Bearer {clinician}")).json(&observation).send()?;
    check::error(&response, &[403])
}

fn crm_view(ctx: &Ctx) -> Outcome {
    let crm = token(ctx, "crm")?;
    fixture(ctx)?;
    let response = get_as(ctx, crm, &format!("Patient/{PAT_A}"))?;
    let patient = check::resource(&response, "Patient")?;
    ensure(patient.get("name").is_none() && !response.text.contains(FAMILY_A), || format!("{}: the crm view shows the name", response.label))?;
    let labelled = patient["meta"]["security"].as_array().is_some_and(|labels| labels.iter().any(|l| l["code"] == "PSEUDED"));
    ensure(labelled, || format!("{}: expected a PSEUDED security label", response.label))?;
    check::error(&get_as(ctx, crm, &format!("Patient?family={FAMILY_A}"))?, &[403])
}

fn patient_compartment(ctx: &Ctx) -> Outcome {
    let patient = token(ctx, "patient")?;
    fixture(ctx)?;
    let response = get_as(ctx, patient, "Observation?_count=1&_sort=_id")?;
    let bundle = searchset(&response)?;
    ensure(check::total(&bundle) == Some(2), || format!("{}: expected total 2 (own Observations only), got {:?}", response.label, check::total(&bundle)))?;
    check::error(&get_as(ctx, patient, &format!("Patient/{PAT_B}"))?, &[404])?;
    let next = check::link(&bundle, "next").ok_or_else(|| format!("{}: expected a next link", response.label))?.to_string();
    check::status(&get_as(ctx, patient, &next)?, &[200])?;
    // The admin's token is a different caller: the patient's page link is not its to follow.
    check::error(&ctx.get(&next).send()?, &[403])
}
