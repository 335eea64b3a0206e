//! Building the Bundles the server returns: searchset, history, and batch/transaction responses.
//! <https://hl7.org/fhir/R4/bundle.html>

use serde_json::{Map, Value, json};

use super::instant::{Micros, format_instant, now_micros};
use crate::error::ApiError;
use crate::service::{VersionedResource, WriteOutcome};

/// `Bundle.entry.response` of a batch or transaction, plus the resource or outcome it carries.
#[derive(Debug, Clone)]
pub struct EntryResponse {
    pub status: String,
    pub location: Option<String>,
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    pub resource: Option<Value>,
    pub outcome: Option<Value>,
}

impl EntryResponse {
    pub fn from_error(error: &ApiError) -> Self {
        let status = error.status();
        EntryResponse {
            status: format!(
                "{} {}",
                status.as_u16(),
                status.canonical_reason().unwrap_or_default()
            ),
            location: None,
            etag: None,
            last_modified: None,
            resource: None,
            outcome: Some(error.outcome()),
        }
    }

    pub fn to_json(&self) -> Value {
        let mut response = Map::new();
        response.insert("status".into(), json!(self.status));
        if let Some(location) = &self.location {
            response.insert("location".into(), json!(location));
        }
        if let Some(etag) = &self.etag {
            response.insert("etag".into(), json!(etag));
        }
        if let Some(last_modified) = &self.last_modified {
            response.insert("lastModified".into(), json!(last_modified));
        }
        if let Some(outcome) = &self.outcome {
            response.insert("outcome".into(), outcome.clone());
        }
        let mut entry = Map::new();
        if let Some(resource) = &self.resource {
            entry.insert("resource".into(), resource.clone());
        }
        entry.insert("response".into(), Value::Object(response));
        Value::Object(entry)
    }
}

/// Location of a version: `Type/id/_history/n` (relative, as Bundle responses use).
pub fn version_location(stored: &VersionedResource) -> String {
    format!(
        "{}/{}/_history/{}",
        stored.resource_type, stored.id, stored.version
    )
}

pub fn read_entry_response(stored: &VersionedResource) -> EntryResponse {
    EntryResponse {
        status: "200 OK".into(),
        location: None,
        etag: Some(stored.etag()),
        last_modified: Some(format_instant(stored.last_updated)),
        resource: stored.resource.clone(),
        outcome: None,
    }
}

pub fn write_entry_response(outcome: &WriteOutcome, _base_url: &str) -> EntryResponse {
    let stored = &outcome.stored;
    let is_delete = stored.method == "DELETE";
    let status = match (is_delete, outcome.created) {
        (true, _) => "204 No Content",
        (false, true) => "201 Created",
        (false, false) => "200 OK",
    };
    let has_version = stored.version > 0 && !stored.id.is_empty();
    EntryResponse {
        status: status.into(),
        location: (has_version && !is_delete).then(|| version_location(stored)),
        etag: has_version.then(|| stored.etag()),
        last_modified: has_version.then(|| format_instant(stored.last_updated)),
        resource: stored.resource.clone(),
        outcome: None,
    }
}

/// A Bundle link relation and URL.
pub struct Link {
    pub relation: &'static str,
    pub url: String,
}

fn links_json(links: &[Link]) -> Value {
    Value::Array(
        links
            .iter()
            .map(|l| json!({"relation": l.relation, "url": l.url}))
            .collect(),
    )
}

/// A Bundle's envelope. `last_updated` is its `meta.lastUpdated`: for a search or history, the
/// instant up to which it is complete (see [`crate::service::write_clock`]).
fn new_bundle(
    kind: &str,
    last_updated: Micros,
    total: Option<i64>,
    links: &[Link],
) -> Map<String, Value> {
    let mut bundle = Map::new();
    bundle.insert("resourceType".into(), json!("Bundle"));
    bundle.insert("id".into(), json!(uuid::Uuid::new_v4().to_string()));
    bundle.insert(
        "meta".into(),
        json!({"lastUpdated": format_instant(last_updated)}),
    );
    bundle.insert("type".into(), json!(kind));
    if let Some(total) = total {
        bundle.insert("total".into(), json!(total));
    }
    if !links.is_empty() {
        bundle.insert("link".into(), links_json(links));
    }
    bundle
}

/// A searchset Bundle: matches (mode `match`) and an optional OperationOutcome (mode `outcome`)
/// for parameters that were ignored.
pub fn searchset(
    base_url: &str,
    complete_before: Micros,
    matches: &[VersionedResource],
    included: &[VersionedResource],
    total: Option<i64>,
    links: &[Link],
    outcome: Option<Value>,
) -> Value {
    let mut bundle = new_bundle("searchset", complete_before, total, links);
    let entry = |resource: &VersionedResource, mode: &str| {
        Some(json!({
            "fullUrl": format!("{base_url}/{}/{}", resource.resource_type, resource.id),
            "resource": resource.resource.clone()?,
            "search": {"mode": mode},
        }))
    };
    let mut entries: Vec<Value> = matches.iter().filter_map(|m| entry(m, "match")).collect();
    entries.extend(included.iter().filter_map(|i| entry(i, "include")));
    if let Some(outcome) = outcome {
        entries.push(json!({"resource": outcome, "search": {"mode": "outcome"}}));
    }
    if !entries.is_empty() {
        bundle.insert("entry".into(), Value::Array(entries));
    }
    Value::Object(bundle)
}

/// A history Bundle: each version with its request method and response status.
pub fn history(
    base_url: &str,
    complete_before: Micros,
    versions: &[VersionedResource],
    total: Option<i64>,
    links: &[Link],
) -> Value {
    let mut bundle = new_bundle("history", complete_before, total, links);
    let entries: Vec<Value> = versions
        .iter()
        .map(|v| {
            let url = format!("{}/{}", v.resource_type, v.id);
            let (request_url, status) = match v.method.as_str() {
                "POST" => (v.resource_type.clone(), "201 Created"),
                "DELETE" => (url.clone(), "204 No Content"),
                _ => (url.clone(), "200 OK"),
            };
            let mut entry = json!({
                "fullUrl": format!("{base_url}/{url}"),
                "request": {"method": v.method, "url": request_url},
                "response": {
                    "status": status,
                    "etag": v.etag(),
                    "lastModified": format_instant(v.last_updated),
                },
            });
            if let Some(resource) = &v.resource {
                entry["resource"] = resource.clone();
            }
            entry
        })
        .collect();
    if !entries.is_empty() {
        bundle.insert("entry".into(), Value::Array(entries));
    }
    Value::Object(bundle)
}

/// A batch-response or transaction-response Bundle.
pub fn response_bundle(kind: &str, entries: &[EntryResponse]) -> Value {
    let mut bundle = new_bundle(kind, now_micros(), None, &[]);
    bundle.insert(
        "entry".into(),
        Value::Array(entries.iter().map(EntryResponse::to_json).collect()),
    );
    Value::Object(bundle)
}
