//! The history interactions (R4 http.html#history): instance, type and system history Bundles.

use serde_json::{Value, json};

use super::{Case, Ctx};
use crate::check::{self, Outcome, ensure};
use crate::client::{Response, query};
use crate::fixtures;

pub fn cases() -> Vec<Case> {
    vec![
        Case::new("hist-001", "instance history after create, update, delete: total 3, newest first", instance_history),
        Case::new("hist-002", "type history with _count=1 has a next link that works", type_history_paging),
        Case::new("hist-003", "system history with _count=1 → 200 history Bundle", system_history),
        Case::new("hist-004", "instance history with _since in the future is empty", instance_history_since),
    ]
}

/// A 200 Bundle of type history, taken out of its response.
fn history_bundle(response: &Response) -> Result<Value, String> {
    check::status(response, &[200])?;
    let bundle = check::resource(response, "Bundle")?;
    check::str_eq(bundle, "/type", "history", &response.label)?;
    Ok(bundle.clone())
}

fn instance_history(ctx: &Ctx) -> Outcome {
    let created = ctx.create(&fixtures::patient(&ctx.unique()))?;
    let mut changed = created.resource.clone();
    changed["gender"] = json!("male");
    let update = ctx.put(&created.reference()).json(&changed).send()?;
    check::status(&update, &[200]).map_err(|error| format!("setup: {error}"))?;
    let delete = ctx.delete(&created.reference()).send()?;
    check::status(&delete, &[200, 204]).map_err(|error| format!("setup: {error}"))?;

    let response = ctx.get(&format!("{}/_history", created.reference())).send()?;
    let bundle = history_bundle(&response)?;
    let total = check::total(&bundle);
    ensure(total == Some(3), || format!("{}: expected total 3, got {total:?}", response.label))?;
    let entries = check::entries(&bundle);
    let methods: Vec<&str> = entries.iter().map(|entry| entry["request"]["method"].as_str().unwrap_or("?")).collect();
    ensure(methods == ["DELETE", "PUT", "POST"], || {
        format!("{}: expected request.method [DELETE, PUT, POST] (newest first), got {methods:?}", response.label)
    })?;
    check::str_eq(&entries[1], "/resource/meta/versionId", "2", &format!("{} entry 1", response.label))?;
    check::str_eq(&entries[1], "/resource/gender", "male", &format!("{} entry 1", response.label))?;
    check::str_eq(&entries[2], "/resource/meta/versionId", "1", &format!("{} entry 2", response.label))
}

fn type_history_paging(ctx: &Ctx) -> Outcome {
    ctx.setup(fixtures::patient(&ctx.unique()))?;
    ctx.setup(fixtures::patient(&ctx.unique()))?;
    let first = ctx.get("Patient/_history?_count=1").send()?;
    let page1 = history_bundle(&first)?;
    let entries1 = check::entries(&page1);
    ensure(entries1.len() == 1, || format!("{}: expected 1 entry, got {}", first.label, entries1.len()))?;
    let next = check::link(&page1, "next").ok_or_else(|| format!("{}: expected a next link, got none", first.label))?;

    let second = ctx.get(next).send()?;
    let page2 = history_bundle(&second)?;
    let entries2 = check::entries(&page2);
    ensure(entries2.len() == 1, || {
        format!("{}: expected 1 entry on the next page, got {}", second.label, entries2.len())
    })?;
    let version = |entry: &Value| {
        (
            entry["resource"]["id"].as_str().map(str::to_string),
            entry["resource"]["meta"]["versionId"].as_str().map(str::to_string),
        )
    };
    ensure(version(&entries1[0]) != version(&entries2[0]), || {
        format!("{}: the next page repeats the first page's entry {:?}", second.label, version(&entries1[0]))
    })
}

fn system_history(ctx: &Ctx) -> Outcome {
    ctx.setup(fixtures::patient(&ctx.unique()))?;
    let response = ctx.get("_history?_count=1").send()?;
    let bundle = history_bundle(&response)?;
    let count = check::entries(&bundle).len();
    ensure(count == 1, || format!("{}: expected 1 entry, got {count}", response.label))
}

fn instance_history_since(ctx: &Ctx) -> Outcome {
    let created = ctx.create(&fixtures::patient(&ctx.unique()))?;
    let path = format!("{}/_history?{}", created.reference(), query(&[("_since", "2999-01-01T00:00:00Z")]));
    let response = ctx.get(&path).send()?;
    let bundle = history_bundle(&response)?;
    let count = check::entries(&bundle).len();
    ensure(count == 0, || format!("{}: expected no entries, got {count}", response.label))
}
