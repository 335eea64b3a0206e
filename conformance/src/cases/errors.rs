//! Error answers (R4 http.html#summary, #read, #create, #update, #mime-type): each must be an
//! OperationOutcome served as application/fhir+json with the status the spec names.

use serde_json::{Value, json};

use super::{Case, Ctx};
use crate::check::{self, Outcome, ensure};
use crate::fixtures;

pub fn cases() -> Vec<Case> {
    vec![
        Case::new("err-001", "unknown resource type → 404 OperationOutcome", unknown_type),
        Case::new("err-002", "malformed JSON body → 400 OperationOutcome", malformed_json),
        Case::new("err-003", "Content-Type application/fhir+xml → 415 OperationOutcome", xml_content_type),
        Case::new("err-004", "Accept: application/fhir+xml only → 406 OperationOutcome", xml_accept),
        Case::new("err-005", "invalid gender → 400/422 with an issue at Patient.gender", invalid_gender),
        Case::new("err-006", "read of an unknown id → 404 OperationOutcome", unknown_id),
        Case::new("err-007", "read with invalid id characters → 400 OperationOutcome", invalid_id_characters),
        Case::new("err-008", "resourceType differs from the endpoint → 400 OperationOutcome", type_mismatch),
        Case::new("err-009", "update whose body id differs from the URL id → 400 OperationOutcome", update_id_mismatch),
        Case::new("err-010", "update without an id in the body → 400 OperationOutcome", update_without_id),
        Case::new("err-011", "vread of a version that does not exist → 404 OperationOutcome", unknown_version),
        Case::new("err-012", "update-as-create with a 65-character id → 400 OperationOutcome", id_too_long),
        Case::new("err-013", "a JSON array instead of a resource → 400 OperationOutcome", json_array_body),
    ]
}

fn unknown_type(ctx: &Ctx) -> Outcome {
    let response = ctx.get(&format!("NoSuchType/{}", ctx.unique())).send()?;
    check::error(&response, &[404])?;
    let search = ctx.get("NoSuchType").send()?;
    check::error(&search, &[404])
}

fn malformed_json(ctx: &Ctx) -> Outcome {
    let response =
        ctx.post("Patient").body("application/fhir+json", "{\"resourceType\": \"Patient\", \"gender\": ").send()?;
    check::error(&response, &[400])
}

fn xml_content_type(ctx: &Ctx) -> Outcome {
    let xml = "<Patient xmlns=\"http://hl7.org/fhir\"><gender value=\"female\"/></Patient>";
    let response = ctx.post("Patient").body("application/fhir+xml", xml).send()?;
    check::error(&response, &[415])
}

fn xml_accept(ctx: &Ctx) -> Outcome {
    let created = ctx.create(&fixtures::patient(&ctx.unique()))?;
    let response = ctx.get(&created.reference()).header("Accept", "application/fhir+xml").send()?;
    check::error(&response, &[406])
}

fn invalid_gender(ctx: &Ctx) -> Outcome {
    let mut patient = fixtures::patient(&ctx.unique());
    patient["gender"] = json!("not-a-gender");
    let response = ctx.post("Patient").json(&patient).send()?;
    check::error(&response, &[400, 422])?;
    let body = response.body()?;
    let expressions: Vec<&str> = body["issue"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|issue| issue["expression"].as_array().into_iter().flatten().filter_map(Value::as_str))
        .collect();
    ensure(expressions.contains(&"Patient.gender"), || {
        format!("{}: expected an issue with expression Patient.gender, got expressions {expressions:?}", response.label)
    })
}

fn unknown_id(ctx: &Ctx) -> Outcome {
    let response = ctx.get(&format!("Patient/missing-{}", ctx.unique())).send()?;
    check::error(&response, &[404])
}

fn invalid_id_characters(ctx: &Ctx) -> Outcome {
    // R4 ids are [A-Za-z0-9\-\.]{1,64}: the underscore and the bang are outside it.
    let response = ctx.get(&format!("Patient/bad_id!{}", ctx.unique())).send()?;
    check::error(&response, &[400])
}

fn type_mismatch(ctx: &Ctx) -> Outcome {
    let observation = fixtures::observation(&ctx.unique(), None);
    let response = ctx.post("Patient").json(&observation).send()?;
    check::error(&response, &[400])
}

fn update_id_mismatch(ctx: &Ctx) -> Outcome {
    let created = ctx.create(&fixtures::patient(&ctx.unique()))?;
    let mut changed = created.resource.clone();
    changed["id"] = json!(format!("other-{}", ctx.unique()));
    let response = ctx.put(&created.reference()).json(&changed).send()?;
    check::error(&response, &[400])
}

fn update_without_id(ctx: &Ctx) -> Outcome {
    let created = ctx.create(&fixtures::patient(&ctx.unique()))?;
    let mut changed = created.resource.clone();
    if let Some(object) = changed.as_object_mut() {
        object.remove("id");
    }
    let response = ctx.put(&created.reference()).json(&changed).send()?;
    check::error(&response, &[400])
}

fn unknown_version(ctx: &Ctx) -> Outcome {
    let created = ctx.create(&fixtures::patient(&ctx.unique()))?;
    let response = ctx.get(&format!("{}/_history/99", created.reference())).send()?;
    check::error(&response, &[404])
}

fn id_too_long(ctx: &Ctx) -> Outcome {
    let unique = ctx.unique();
    let id = format!("{unique}{}", "a".repeat(65 - unique.len()));
    let mut patient = fixtures::patient(&unique);
    patient["id"] = json!(id);
    let response = ctx.put(&format!("Patient/{id}")).json(&patient).send()?;
    check::error(&response, &[400])
}

fn json_array_body(ctx: &Ctx) -> Outcome {
    let body = json!([fixtures::patient(&ctx.unique())]);
    let response = ctx.post("Patient").json(&body).send()?;
    check::error(&response, &[400])
}
