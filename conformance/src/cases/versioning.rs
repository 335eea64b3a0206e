//! Version-aware and conditional interactions: If-Match / If-None-Match (R4 http.html#concurrency,
//! #cread), Prefer return= (#ops), conditional create / update / delete (#ccreate, #cond-update,
//! #cdelete) and patch (#patch).

use serde_json::json;

use super::{Case, Created, Ctx};
use crate::check::{self, Outcome, ensure};
use crate::client::{Response, query};
use crate::fixtures::{self, identifier_query};

pub fn cases() -> Vec<Case> {
    vec![
        Case::new("ver-001", "update with If-Match of the current version → 200, versionId 2", if_match_current),
        Case::new("ver-002", "update with a stale If-Match W/\"1\" → 412 OperationOutcome", if_match_stale),
        Case::new("ver-003", "read with If-None-Match of the current ETag → 304, other ETag → 200", if_none_match),
        Case::new("ver-004", "create with Prefer: return=minimal → 201, empty body, Location", prefer_minimal),
        Case::new(
            "ver-005",
            "create with Prefer: return=OperationOutcome → 201 with an OperationOutcome",
            prefer_outcome,
        ),
        Case::new(
            "ver-006",
            "update with Prefer: return=minimal → 200, empty body, ETag W/\"2\"",
            prefer_minimal_update,
        ),
        Case::new(
            "ver-007",
            "conditional create: If-None-Exist matching one → 200 with the same id",
            conditional_create,
        ),
        Case::new("ver-008", "conditional create: If-None-Exist matching two → 412", conditional_create_ambiguous),
        Case::new(
            "ver-009",
            "conditional update: PUT Patient?identifier= with one match updates it",
            conditional_update,
        ),
        Case::new(
            "ver-010",
            "conditional update: PUT Patient?identifier= with no match → 201",
            conditional_update_creates,
        ),
        Case::new(
            "ver-011",
            "conditional update: PUT Patient?identifier= with two matches → 412",
            conditional_update_ambiguous,
        ),
        Case::new("ver-012", "conditional delete: DELETE Patient?identifier= removes the match", conditional_delete),
        Case::new("ver-013", "patch: JSON Patch replace /gender → 200, versionId 2", json_patch),
        Case::new("ver-014", "patch with a stale If-Match → 412 OperationOutcome", json_patch_stale),
        Case::new(
            "ver-015",
            "read with If-Modified-Since of its Last-Modified → 304, older date → 200",
            if_modified_since,
        ),
    ]
}

/// Creates a Patient and updates it once (gender → male); returns it as created.
fn patient_at_version_2(ctx: &Ctx) -> Result<Created, String> {
    let created = ctx.create(&fixtures::patient(&ctx.unique()))?;
    let mut changed = created.resource.clone();
    changed["gender"] = json!("male");
    let response = ctx.put(&created.reference()).json(&changed).send()?;
    check::status(&response, &[200]).map_err(|error| format!("setup: {error}"))?;
    Ok(created)
}

fn if_match_current(ctx: &Ctx) -> Outcome {
    let created = ctx.create(&fixtures::patient(&ctx.unique()))?;
    let mut changed = created.resource.clone();
    changed["gender"] = json!("other");
    let response = ctx
        .put(&created.reference())
        .header("If-Match", "W/\"1\"")
        .header("Prefer", "return=representation")
        .json(&changed)
        .send()?;
    check::status(&response, &[200])?;
    check::etag(&response, "2")?;
    check::str_eq(check::resource(&response, "Patient")?, "/meta/versionId", "2", &response.label)
}

fn if_match_stale(ctx: &Ctx) -> Outcome {
    let created = patient_at_version_2(ctx)?;
    let mut stale = created.resource.clone();
    stale["gender"] = json!("unknown");
    let response = ctx.put(&created.reference()).header("If-Match", "W/\"1\"").json(&stale).send()?;
    check::error(&response, &[412])?;

    let read = ctx.get(&created.reference()).send()?;
    check::status(&read, &[200])?;
    let body = check::resource(&read, "Patient")?;
    check::str_eq(body, "/meta/versionId", "2", &format!("{} after the refused update", read.label))?;
    check::str_eq(body, "/gender", "male", &format!("{} after the refused update", read.label))
}

fn if_none_match(ctx: &Ctx) -> Outcome {
    let created = ctx.create(&fixtures::patient(&ctx.unique()))?;
    let current = ctx.get(&created.reference()).header("If-None-Match", "W/\"1\"").send()?;
    check::status(&current, &[304])?;
    ensure(current.text.trim().is_empty(), || {
        format!("{}: expected no body with 304, got {}", current.label, current.describe())
    })?;

    let other = ctx.get(&created.reference()).header("If-None-Match", "W/\"99\"").send()?;
    check::status(&other, &[200])?;
    check::resource(&other, "Patient").map(|_| ())
}

fn prefer_minimal(ctx: &Ctx) -> Outcome {
    let patient = fixtures::patient(&ctx.unique());
    let response = ctx.post("Patient").header("Prefer", "return=minimal").json(&patient).send()?;
    check::status(&response, &[201])?;
    ensure(response.text.trim().is_empty(), || {
        format!("{}: expected an empty body with return=minimal, got {}", response.label, response.describe())
    })?;
    let id = check::location(&response, "Patient", "1")?;
    check::etag(&response, "1")?;
    let read = ctx.get(&format!("Patient/{id}")).send()?;
    check::status(&read, &[200])
}

fn prefer_outcome(ctx: &Ctx) -> Outcome {
    let patient = fixtures::patient(&ctx.unique());
    let response = ctx.post("Patient").header("Prefer", "return=OperationOutcome").json(&patient).send()?;
    check::status(&response, &[201])?;
    check::location(&response, "Patient", "1")?;
    check::operation_outcome(&response)
}

fn prefer_minimal_update(ctx: &Ctx) -> Outcome {
    let created = ctx.create(&fixtures::patient(&ctx.unique()))?;
    let mut changed = created.resource.clone();
    changed["gender"] = json!("male");
    let response = ctx.put(&created.reference()).header("Prefer", "return=minimal").json(&changed).send()?;
    check::status(&response, &[200])?;
    ensure(response.text.trim().is_empty(), || {
        format!("{}: expected an empty body with return=minimal, got {}", response.label, response.describe())
    })?;
    check::etag(&response, "2")
}

/// The id a create-like response names: from its body, else from its Location.
fn named_id(response: &Response) -> Option<String> {
    if let Some(id) = response.json.as_ref().and_then(|body| body["id"].as_str()) {
        return Some(id.to_string());
    }
    let location = response.header("location")?;
    check::parse_location(location).map(|(_, id, _)| id)
}

/// How many Patients carry the identifier `unique`.
fn patients_with(ctx: &Ctx, unique: &str) -> Result<Vec<String>, String> {
    let bundle = ctx.search("Patient", &[("identifier", &identifier_query(unique))])?;
    Ok(check::ids_of(&bundle, "Patient"))
}

fn conditional_create(ctx: &Ctx) -> Outcome {
    let unique = ctx.unique();
    let patient = fixtures::patient(&unique);
    let condition = format!("identifier={}", identifier_query(&unique));
    let send = || {
        ctx.post("Patient")
            .header("If-None-Exist", &condition)
            .header("Prefer", "return=representation")
            .json(&patient)
            .send()
    };
    let first = send()?;
    check::status(&first, &[201])?;
    let first_id = named_id(&first).ok_or_else(|| format!("{}: the answer names no id", first.label))?;

    let second = send()?;
    check::status(&second, &[200])?;
    let second_id = named_id(&second);
    ensure(second_id.as_deref() == Some(first_id.as_str()), || {
        format!("{} (second time): expected the existing id {first_id:?}, got {second_id:?}", second.label)
    })?;
    let ids = patients_with(ctx, &unique)?;
    ensure(ids == [first_id.clone()], || format!("search by identifier: expected only {first_id:?}, got {ids:?}"))
}

fn conditional_create_ambiguous(ctx: &Ctx) -> Outcome {
    let unique = ctx.unique();
    let patient = fixtures::patient(&unique);
    ctx.setup(patient.clone())?;
    ctx.setup(patient.clone())?;
    let condition = format!("identifier={}", identifier_query(&unique));
    let response = ctx.post("Patient").header("If-None-Exist", &condition).json(&patient).send()?;
    check::error(&response, &[412])?;
    let ids = patients_with(ctx, &unique)?;
    ensure(ids.len() == 2, || format!("search by identifier: expected the 2 setup Patients, got {}", ids.len()))
}

fn conditional_update(ctx: &Ctx) -> Outcome {
    let unique = ctx.unique();
    let created = ctx.create(&fixtures::patient(&unique))?;
    let mut changed = fixtures::patient(&unique);
    changed["gender"] = json!("male");
    let path = format!("Patient?{}", query(&[("identifier", &identifier_query(&unique))]));
    let response = ctx.put(&path).header("Prefer", "return=representation").json(&changed).send()?;
    check::status(&response, &[200])?;
    let body = check::resource(&response, "Patient")?;
    check::str_eq(body, "/id", &created.id, &response.label)?;
    check::str_eq(body, "/meta/versionId", "2", &response.label)?;
    check::str_eq(body, "/gender", "male", &response.label)
}

fn conditional_update_creates(ctx: &Ctx) -> Outcome {
    let unique = ctx.unique();
    let path = format!("Patient?{}", query(&[("identifier", &identifier_query(&unique))]));
    let response = ctx.put(&path).header("Prefer", "return=representation").json(&fixtures::patient(&unique)).send()?;
    check::status(&response, &[201])?;
    let id = check::location(&response, "Patient", "1")?;
    let ids = patients_with(ctx, &unique)?;
    ensure(ids == [id.clone()], || format!("search by identifier: expected only {id:?}, got {ids:?}"))
}

fn conditional_update_ambiguous(ctx: &Ctx) -> Outcome {
    let unique = ctx.unique();
    ctx.setup(fixtures::patient(&unique))?;
    ctx.setup(fixtures::patient(&unique))?;
    let path = format!("Patient?{}", query(&[("identifier", &identifier_query(&unique))]));
    let response = ctx.put(&path).json(&fixtures::patient(&unique)).send()?;
    check::error(&response, &[412])
}

fn conditional_delete(ctx: &Ctx) -> Outcome {
    let unique = ctx.unique();
    let created = ctx.create(&fixtures::patient(&unique))?;
    let path = format!("Patient?{}", query(&[("identifier", &identifier_query(&unique))]));
    let response = ctx.delete(&path).send()?;
    check::status(&response, &[200, 204])?;
    let gone = ctx.get(&created.reference()).send()?;
    check::error(&gone, &[410])?;
    let ids = patients_with(ctx, &unique)?;
    ensure(ids.is_empty(), || format!("search by identifier after delete: expected nothing, got {ids:?}"))
}

fn patch_body() -> String {
    json!([{ "op": "replace", "path": "/gender", "value": "male" }]).to_string()
}

fn json_patch(ctx: &Ctx) -> Outcome {
    let created = ctx.create(&fixtures::patient(&ctx.unique()))?;
    let response = ctx
        .patch(&created.reference())
        .header("Prefer", "return=representation")
        .body("application/json-patch+json", patch_body())
        .send()?;
    check::status(&response, &[200])?;
    let body = check::resource(&response, "Patient")?;
    check::str_eq(body, "/meta/versionId", "2", &response.label)?;
    check::str_eq(body, "/gender", "male", &response.label)?;
    check::etag(&response, "2")?;

    let read = ctx.get(&created.reference()).send()?;
    check::status(&read, &[200])?;
    let body = check::resource(&read, "Patient")?;
    check::str_eq(body, "/gender", "male", &read.label)?;
    check::str_eq(body, "/birthDate", "1980-02-29", &read.label)
}

fn json_patch_stale(ctx: &Ctx) -> Outcome {
    let created = patient_at_version_2(ctx)?;
    let response = ctx
        .patch(&created.reference())
        .header("If-Match", "W/\"1\"")
        .body("application/json-patch+json", patch_body())
        .send()?;
    check::error(&response, &[412])
}

fn if_modified_since(ctx: &Ctx) -> Outcome {
    let created = ctx.create(&fixtures::patient(&ctx.unique()))?;
    let read = ctx.get(&created.reference()).send()?;
    check::status(&read, &[200])?;
    let last_modified = read
        .header("last-modified")
        .ok_or_else(|| format!("{}: expected a Last-Modified header, got none", read.label))?
        .to_string();
    let unchanged = ctx.get(&created.reference()).header("If-Modified-Since", &last_modified).send()?;
    check::status(&unchanged, &[304]).map_err(|error| format!("If-Modified-Since: {last_modified}: {error}"))?;
    let older = ctx.get(&created.reference()).header("If-Modified-Since", "Mon, 01 Jan 2001 00:00:00 GMT").send()?;
    check::status(&older, &[200])
}
