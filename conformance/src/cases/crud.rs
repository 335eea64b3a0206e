//! create, read, update, delete and vread for each resource type (R4 http.html#create, #read,
//! #update, #delete, #vread), plus update-as-create and decimal fidelity.

use serde_json::{Value, json};

use super::{Case, Created, Ctx};
use crate::check::{self, Outcome, ensure};
use crate::fixtures::{self, KINDS, Kind};

pub fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for (index, kind) in KINDS.iter().enumerate() {
        let n = index * 4;
        let name = kind.name;
        let id = |step: usize| format!("crud-{:03}", n + step);
        cases.push(Case::new(
            id(1),
            format!("{name} create: 201, Location …/_history/1, ETag W/\"1\", versionId 1"),
            |ctx| create(ctx, kind),
        ));
        cases.push(Case::new(id(2), format!("{name} read: 200 with the created body and ETag"), |ctx| read(ctx, kind)));
        cases
            .push(Case::new(id(3), format!("{name} update: 200, versionId 2, change stored"), |ctx| update(ctx, kind)));
        cases.push(Case::new(id(4), format!("{name} delete: 200/204, then read 410, vread of version 1 200"), |ctx| {
            delete(ctx, kind)
        }));
    }
    cases.push(Case::new("crud-029", "update-as-create: PUT Patient/<new id> → 201 with that id", update_as_create));
    cases.push(Case::new(
        "crud-030",
        "decimal fidelity: valueQuantity 1.50 reads back as 1.50",
        decimal_keeps_trailing_zero,
    ));
    cases.push(Case::new(
        "crud-031",
        "decimal fidelity: valueQuantity 72 reads back as 72, not 72.0",
        decimal_keeps_integer_form,
    ));
    cases.push(Case::new(
        "crud-032",
        "create ignores a client-supplied id and meta.versionId",
        create_ignores_id_and_version,
    ));
    cases
}

/// Creates a resource of `kind` after its dependencies; returns what was sent and the result.
fn create_kind(ctx: &Ctx, kind: &Kind) -> Result<(Value, Created), String> {
    let sent = kind.build(ctx, &ctx.unique())?;
    let created = ctx.create(&sent)?;
    Ok((sent, created))
}

fn create(ctx: &Ctx, kind: &Kind) -> Outcome {
    let (sent, created) = create_kind(ctx, kind)?;
    let response = &created.response;
    let location_id = check::location(response, kind.name, "1")?;
    ensure(location_id == created.id, || {
        format!("{}: Location names id {location_id:?}, the body id {:?}", response.label, created.id)
    })?;
    check::etag(response, "1")?;
    check::str_eq(&created.resource, "/meta/versionId", "1", "created resource")?;
    ensure(check::str_at(&created.resource, "/meta/lastUpdated").is_some(), || {
        "created resource: expected meta.lastUpdated, got nothing".to_string()
    })?;
    check::kept_elements(&sent, &created.resource, "created resource")
}

fn read(ctx: &Ctx, kind: &Kind) -> Outcome {
    let (sent, created) = create_kind(ctx, kind)?;
    let response = ctx.get(&created.reference()).send()?;
    check::status(&response, &[200])?;
    let body = check::resource(&response, kind.name)?;
    check::etag(&response, "1")?;
    check::same_json(&created.resource, body, &format!("{} vs the create response", response.label))?;
    check::kept_elements(&sent, body, &response.label)
}

fn update(ctx: &Ctx, kind: &Kind) -> Outcome {
    let (_, created) = create_kind(ctx, kind)?;
    let mut changed = created.resource.clone();
    kind.change(&mut changed);
    let response = ctx.put(&created.reference()).header("Prefer", "return=representation").json(&changed).send()?;
    check::status(&response, &[200])?;
    let body = check::resource(&response, kind.name)?;
    check::etag(&response, "2")?;
    check::str_eq(body, "/meta/versionId", "2", &response.label)?;
    check::str_eq(body, "/id", &created.id, &response.label)?;
    let (element, value) = kind.change;
    check::str_eq(body, &format!("/{element}"), value, &response.label)?;

    let reread = ctx.get(&created.reference()).send()?;
    check::status(&reread, &[200])?;
    let body = check::resource(&reread, kind.name)?;
    check::str_eq(body, "/meta/versionId", "2", &reread.label)?;
    check::str_eq(body, &format!("/{element}"), value, &reread.label)
}

fn delete(ctx: &Ctx, kind: &Kind) -> Outcome {
    let (_, created) = create_kind(ctx, kind)?;
    let response = ctx.delete(&created.reference()).send()?;
    check::status(&response, &[200, 204])?;

    let gone = ctx.get(&created.reference()).send()?;
    check::error(&gone, &[410])?;

    let vread = ctx.get(&format!("{}/_history/1", created.reference())).send()?;
    check::status(&vread, &[200])?;
    let body = check::resource(&vread, kind.name)?;
    check::str_eq(body, "/meta/versionId", "1", &vread.label)?;
    check::same_json(&created.resource, body, &format!("{} vs the create response", vread.label))
}

fn update_as_create(ctx: &Ctx) -> Outcome {
    let id = format!("conf-{}", ctx.unique());
    let mut patient = fixtures::patient(&ctx.unique());
    patient["id"] = json!(id);
    let path = format!("Patient/{id}");
    let response = ctx.put(&path).header("Prefer", "return=representation").json(&patient).send()?;
    check::status(&response, &[201])?;
    let location_id = check::location(&response, "Patient", "1")?;
    ensure(location_id == id, || {
        format!("{}: expected Location to name id {id:?}, got {location_id:?}", response.label)
    })?;
    check::etag(&response, "1")?;

    let read = ctx.get(&path).send()?;
    check::status(&read, &[200])?;
    let body = check::resource(&read, "Patient")?;
    check::str_eq(body, "/id", &id, &read.label)?;
    check::str_eq(body, "/meta/versionId", "1", &read.label)
}

/// Creates an Observation whose valueQuantity.value is written as `number`, then checks that the
/// create and read responses carry the same text on the wire.
fn decimal_round_trip(ctx: &Ctx, number: &str) -> Outcome {
    let mut observation = fixtures::observation(&ctx.unique(), None);
    observation["valueQuantity"]["value"] =
        serde_json::from_str(number).map_err(|error| format!("bad test number {number}: {error}"))?;
    let body = serde_json::to_string(&observation).map_err(|error| error.to_string())?;
    ensure(check::raw_numbers(&body, "value") == [number], || format!("the suite failed to write {number} as is"))?;

    let response =
        ctx.post("Observation").header("Prefer", "return=representation").body("application/fhir+json", body).send()?;
    check::status(&response, &[201])?;
    let id = check::resource(&response, "Observation")?["id"].as_str().unwrap_or_default().to_string();
    wire_value(&response.text, number, &response.label)?;

    let read = ctx.get(&format!("Observation/{id}")).send()?;
    check::status(&read, &[200])?;
    wire_value(&read.text, number, &read.label)
}

fn wire_value(text: &str, expected: &str, label: &str) -> Outcome {
    let written = check::raw_numbers(text, "value");
    ensure(written.iter().any(|number| number == expected), || {
        format!("{label}: expected valueQuantity.value written as {expected}, got {written:?}")
    })
}

fn decimal_keeps_trailing_zero(ctx: &Ctx) -> Outcome {
    decimal_round_trip(ctx, "1.50")
}

fn decimal_keeps_integer_form(ctx: &Ctx) -> Outcome {
    decimal_round_trip(ctx, "72")
}

fn create_ignores_id_and_version(ctx: &Ctx) -> Outcome {
    let client_id = format!("client-{}", ctx.unique());
    let mut patient = fixtures::patient(&ctx.unique());
    patient["id"] = json!(client_id);
    patient["meta"] = json!({ "versionId": "7", "lastUpdated": "2001-01-01T00:00:00Z" });
    let created = ctx.create(&patient)?;
    ensure(created.id != client_id, || {
        format!("{}: expected a server-assigned id, got the client's {client_id:?}", created.response.label)
    })?;
    check::str_eq(&created.resource, "/meta/versionId", "1", &created.response.label)?;
    let last_updated = check::str_at(&created.resource, "/meta/lastUpdated").unwrap_or_default();
    ensure(!last_updated.starts_with("2001-"), || {
        format!("{}: expected a fresh meta.lastUpdated, got the client's {last_updated:?}", created.response.label)
    })
}
