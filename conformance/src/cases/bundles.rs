//! batch and transaction (R4 http.html#transaction): `POST [base]` with a Bundle.

use serde_json::{Value, json};

use super::{Case, Ctx};
use crate::check::{self, Outcome, ensure};
use crate::client::Response;
use crate::fixtures::{self, identifier_query};

pub fn cases() -> Vec<Case> {
    vec![
        Case::new(
            "bundle-001",
            "transaction: urn:uuid reference rewritten to Patient/<id>",
            transaction_urn_references,
        ),
        Case::new("bundle-002", "transaction with one invalid entry → 4xx, nothing stored", transaction_all_or_nothing),
        Case::new(
            "bundle-003",
            "batch with a good and a bad entry → batch-response with 201 and 4xx",
            batch_independent_entries,
        ),
        Case::new(
            "bundle-004",
            "transaction with PUT, DELETE and POST entries answers each in order",
            transaction_mixed_methods,
        ),
        Case::new(
            "bundle-005",
            "transaction entry with ifNoneExist matching one → 200, existing id",
            transaction_conditional_create,
        ),
        Case::new("bundle-006", "POST [base] with a non-Bundle body → 400 OperationOutcome", post_base_not_a_bundle),
        Case::new(
            "bundle-007",
            "transaction: conditional reference Patient?identifier= resolved",
            transaction_conditional_reference,
        ),
    ]
}

fn urn() -> String {
    format!("urn:uuid:{}", uuid::Uuid::new_v4())
}

fn post_entry(full_url: &str, resource: Value) -> Value {
    let resource_type = resource["resourceType"].as_str().unwrap_or("Unknown").to_string();
    json!({ "fullUrl": full_url, "resource": resource, "request": { "method": "POST", "url": resource_type } })
}

fn bundle(kind: &str, entries: Vec<Value>) -> Value {
    json!({ "resourceType": "Bundle", "type": kind, "entry": entries })
}

/// Posts a batch or transaction; expects 200 and the matching response Bundle with one entry per
/// request entry.
fn process(ctx: &Ctx, request: &Value) -> Result<(Response, Value), String> {
    let response = ctx.post("").header("Prefer", "return=representation").json(request).send()?;
    check::status(&response, &[200])?;
    let body = check::resource(&response, "Bundle")?.clone();
    let expected_type = format!("{}-response", request["type"].as_str().unwrap_or("?"));
    check::str_eq(&body, "/type", &expected_type, &response.label)?;
    let (sent, got) = (check::entries(request).len(), check::entries(&body).len());
    ensure(sent == got, || format!("{}: expected {sent} response entries, got {got}", response.label))?;
    Ok((response, body))
}

/// Entry `index`'s response.status starts with `prefix` (`201`, `4`).
fn entry_status(body: &Value, index: usize, prefix: &str, label: &str) -> Outcome {
    let status = check::str_at(body, &format!("/entry/{index}/response/status"));
    ensure(status.is_some_and(|status| status.starts_with(prefix)), || {
        format!("{label}: expected entry {index} response.status {prefix}…, got {status:?}")
    })
}

/// Entry `index`'s response.location as `(type, id)`.
fn entry_location(body: &Value, index: usize, label: &str) -> Result<(String, String), String> {
    let location = check::str_at(body, &format!("/entry/{index}/response/location"));
    location.and_then(check::parse_location).map(|(resource_type, id, _)| (resource_type, id)).ok_or_else(|| {
        format!("{label}: expected entry {index} response.location …/Type/id/_history/n, got {location:?}")
    })
}

fn patients_with(ctx: &Ctx, unique: &str) -> Result<Vec<String>, String> {
    let found = ctx.search("Patient", &[("identifier", &identifier_query(unique))])?;
    Ok(check::ids_of(&found, "Patient"))
}

fn transaction_urn_references(ctx: &Ctx) -> Outcome {
    let patient_urn = urn();
    let request = bundle(
        "transaction",
        vec![
            post_entry(&patient_urn, fixtures::patient(&ctx.unique())),
            post_entry(&urn(), fixtures::observation(&ctx.unique(), Some(&patient_urn))),
        ],
    );
    let (response, body) = process(ctx, &request)?;
    entry_status(&body, 0, "201", &response.label)?;
    entry_status(&body, 1, "201", &response.label)?;
    let (patient_type, patient_id) = entry_location(&body, 0, &response.label)?;
    let (observation_type, observation_id) = entry_location(&body, 1, &response.label)?;
    ensure(patient_type == "Patient" && observation_type == "Observation", || {
        format!(
            "{}: expected locations Patient then Observation, got {patient_type} then {observation_type}",
            response.label
        )
    })?;

    let read = ctx.get(&format!("Observation/{observation_id}")).send()?;
    check::status(&read, &[200])?;
    let observation = check::resource(&read, "Observation")?;
    check::str_eq(observation, "/subject/reference", &format!("Patient/{patient_id}"), &read.label)?;
    let patient = ctx.get(&format!("Patient/{patient_id}")).send()?;
    check::status(&patient, &[200])
}

fn transaction_all_or_nothing(ctx: &Ctx) -> Outcome {
    let unique = ctx.unique();
    let mut invalid = fixtures::patient(&ctx.unique());
    invalid["gender"] = json!("not-a-gender");
    let request =
        bundle("transaction", vec![post_entry(&urn(), fixtures::patient(&unique)), post_entry(&urn(), invalid)]);
    let response = ctx.post("").json(&request).send()?;
    check::client_error(&response)?;
    check::operation_outcome(&response)?;
    let stored = patients_with(ctx, &unique)?;
    ensure(stored.is_empty(), || {
        format!("after the failed transaction: expected its valid Patient not stored, found {stored:?}")
    })
}

fn batch_independent_entries(ctx: &Ctx) -> Outcome {
    let unique = ctx.unique();
    let mut invalid = fixtures::patient(&ctx.unique());
    invalid["gender"] = json!("not-a-gender");
    let request = bundle("batch", vec![post_entry(&urn(), fixtures::patient(&unique)), post_entry(&urn(), invalid)]);
    let (response, body) = process(ctx, &request)?;
    entry_status(&body, 0, "201", &response.label)?;
    entry_status(&body, 1, "4", &response.label)?;
    let stored = patients_with(ctx, &unique)?;
    ensure(stored.len() == 1, || {
        format!("after the batch: expected its valid Patient stored once, found {}", stored.len())
    })
}

fn transaction_mixed_methods(ctx: &Ctx) -> Outcome {
    let kept = ctx.create(&fixtures::patient(&ctx.unique()))?;
    let removed = ctx.create(&fixtures::patient(&ctx.unique()))?;
    let mut changed = kept.resource.clone();
    changed["gender"] = json!("male");
    let request = bundle(
        "transaction",
        vec![
            json!({ "fullUrl": ctx.url(&kept.reference()), "resource": changed, "request": { "method": "PUT", "url": kept.reference() } }),
            json!({ "request": { "method": "DELETE", "url": removed.reference() } }),
            post_entry(&urn(), fixtures::patient(&ctx.unique())),
        ],
    );
    let (response, body) = process(ctx, &request)?;
    entry_status(&body, 0, "200", &response.label)?;
    entry_status(&body, 1, "2", &response.label)?;
    entry_status(&body, 2, "201", &response.label)?;
    let (_, new_id) = entry_location(&body, 2, &response.label)?;

    let read = ctx.get(&kept.reference()).send()?;
    check::status(&read, &[200])?;
    let patient = check::resource(&read, "Patient")?;
    check::str_eq(patient, "/meta/versionId", "2", &read.label)?;
    check::str_eq(patient, "/gender", "male", &read.label)?;
    let gone = ctx.get(&removed.reference()).send()?;
    check::error(&gone, &[410])?;
    let new = ctx.get(&format!("Patient/{new_id}")).send()?;
    check::status(&new, &[200])
}

fn transaction_conditional_create(ctx: &Ctx) -> Outcome {
    let unique = ctx.unique();
    let existing = ctx.create(&fixtures::patient(&unique))?;
    let mut entry = post_entry(&urn(), fixtures::patient(&unique));
    entry["request"]["ifNoneExist"] = json!(format!("identifier={}", identifier_query(&unique)));
    let (response, body) = process(ctx, &bundle("transaction", vec![entry]))?;
    entry_status(&body, 0, "200", &response.label)?;
    // The existing resource is named by response.location or, failing that, by the entry's resource.
    let id = match entry_location(&body, 0, &response.label) {
        Ok((_, id)) => id,
        Err(error) => check::str_at(&body, "/entry/0/resource/id").map(str::to_string).ok_or(error)?,
    };
    ensure(id == existing.id, || {
        format!("{}: expected the existing id {:?}, got {id:?}", response.label, existing.id)
    })?;
    let stored = patients_with(ctx, &unique)?;
    ensure(stored.len() == 1, || {
        format!("after the transaction: expected 1 Patient with the identifier, found {}", stored.len())
    })
}

fn post_base_not_a_bundle(ctx: &Ctx) -> Outcome {
    let response = ctx.post("").json(&fixtures::patient(&ctx.unique())).send()?;
    check::error(&response, &[400])
}

fn transaction_conditional_reference(ctx: &Ctx) -> Outcome {
    let unique = ctx.unique();
    let patient = ctx.create(&fixtures::patient(&unique))?;
    let reference = format!("Patient?identifier={}", identifier_query(&unique));
    let request =
        bundle("transaction", vec![post_entry(&urn(), fixtures::observation(&ctx.unique(), Some(&reference)))]);
    let (response, body) = process(ctx, &request)?;
    entry_status(&body, 0, "201", &response.label)?;
    let (_, id) = entry_location(&body, 0, &response.label)?;
    let read = ctx.get(&format!("Observation/{id}")).send()?;
    check::status(&read, &[200])?;
    check::str_eq(check::resource(&read, "Observation")?, "/subject/reference", &patient.reference(), &read.label)
}
