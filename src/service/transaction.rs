//! batch and transaction Bundles: <https://hl7.org/fhir/R4/http.html#transaction>.
//!
//! A transaction runs every entry in one database transaction (all or nothing), in the spec's
//! order — DELETE, POST, PUT/PATCH, GET — after giving every created resource its id, so that
//! references to `urn:uuid:` (or any other) fullUrls can be rewritten to `Type/id` first. A batch
//! runs each entry on its own; one failing entry does not affect the others.

use std::collections::HashMap;

use serde_json::{Value, json};

use super::conditional::Matches;
use super::patch::parse_patch;
use super::write::check_body_id;
use super::{Service, WriteOutcome};
use std::sync::Arc;

use crate::auth::{Caller, Permission};
use crate::error::{ApiError, ApiResult};
use crate::fhir::bundle::{EntryResponse, read_entry_response, write_entry_response};
use crate::fhir::id::{FhirId, is_valid_id, parse_version};
use crate::store::{Conn, versions};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Get,
    Head,
    Post,
    Put,
    Patch,
    Delete,
}

impl Method {
    /// Processing order within a transaction (R4 http.html#trules).
    fn rank(self) -> u8 {
        match self {
            Method::Delete => 0,
            Method::Post => 1,
            Method::Put | Method::Patch => 2,
            Method::Get | Method::Head => 3,
        }
    }
}

/// Where an entry's request URL points.
#[derive(Debug, Clone)]
enum Target {
    Type(String),
    Instance(String, String),
    Version(String, String, i64),
    Conditional(String, String),
}

#[derive(Debug, Clone)]
struct Entry {
    index: usize,
    method: Method,
    target: Target,
    full_url: Option<String>,
    resource: Option<Value>,
    if_none_exist: Option<String>,
    if_match: Option<i64>,
}

/// The entries of a transaction Bundle, parsed and validated, not yet run.
pub struct PreparedTransaction {
    entries: Vec<Entry>,
}

/// A processed Bundle: the response entries in request order.
pub struct BundleResult {
    pub bundle_type: &'static str,
    pub entries: Vec<EntryResponse>,
}

impl Service {
    /// Process a `batch` or `transaction` Bundle posted to the base URL.
    pub async fn process_bundle(
        &self,
        caller: &Arc<Caller>,
        bundle: Value,
    ) -> ApiResult<BundleResult> {
        if bundle.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
            return Err(ApiError::bad_request(
                "POST to the base URL takes a Bundle of type batch or transaction",
            ));
        }
        let kind = bundle
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let raw_entries = match bundle.get("entry") {
            None => Vec::new(),
            Some(Value::Array(entries)) => entries.clone(),
            Some(_) => return Err(ApiError::bad_request("Bundle.entry must be an array")),
        };
        if raw_entries.len() > self.config.max_bundle_entries {
            return Err(ApiError::PayloadTooLarge(format!(
                "a batch or transaction may have at most {} entries; split it",
                self.config.max_bundle_entries
            )));
        }
        match kind {
            "transaction" => {
                let prepared = self.prepare_transaction(&raw_entries)?;
                let (this, caller) = (self.clone(), caller.clone());
                let entries = self
                    .write(move |conn| {
                        Box::pin(async move { this.run_prepared_in(conn, &caller, prepared).await })
                    })
                    .await?;
                Ok(BundleResult {
                    bundle_type: "transaction-response",
                    entries,
                })
            }
            "batch" => {
                let mut responses = Vec::with_capacity(raw_entries.len());
                for (index, raw) in raw_entries.iter().enumerate() {
                    let response = match self.parse_entry(index, raw) {
                        Ok(entry) => self.run_batch_entry(caller, entry).await,
                        Err(error) => Err(error),
                    };
                    responses
                        .push(response.unwrap_or_else(|error| EntryResponse::from_error(&error)));
                }
                Ok(BundleResult {
                    bundle_type: "batch-response",
                    entries: responses,
                })
            }
            _ => Err(ApiError::bad_request(
                "Bundle.type must be batch or transaction to be processed at the base URL",
            )),
        }
    }

    fn parse_entry(&self, index: usize, raw: &Value) -> ApiResult<Entry> {
        let fail =
            |message: &str| ApiError::bad_request(format!("Bundle.entry[{index}]: {message}"));
        let request = raw
            .get("request")
            .ok_or_else(|| fail("request is required in a batch or transaction"))?;
        let method = match request.get("method").and_then(Value::as_str) {
            Some("GET") => Method::Get,
            Some("HEAD") => Method::Head,
            Some("POST") => Method::Post,
            Some("PUT") => Method::Put,
            Some("PATCH") => Method::Patch,
            Some("DELETE") => Method::Delete,
            _ => {
                return Err(fail(
                    "request.method must be GET, HEAD, POST, PUT, PATCH or DELETE",
                ));
            }
        };
        let url = request
            .get("url")
            .and_then(Value::as_str)
            .ok_or_else(|| fail("request.url is required"))?;
        let local = url
            .strip_prefix(self.config.base_url.as_str())
            .map(|u| u.trim_start_matches('/'))
            .unwrap_or(url);
        let target = parse_target(local).ok_or_else(|| {
            fail("request.url must be relative, like Patient, Patient/123 or Patient?identifier=…")
        })?;
        let resource_type = match &target {
            Target::Type(t)
            | Target::Instance(t, _)
            | Target::Version(t, _, _)
            | Target::Conditional(t, _) => t.clone(),
        };
        self.check_type(&resource_type)
            .map_err(|e| fail(&e.to_string()))?;
        let resource = raw.get("resource").cloned();
        if matches!(method, Method::Post | Method::Put | Method::Patch) && resource.is_none() {
            return Err(fail("a POST, PUT or PATCH entry needs a resource"));
        }
        let if_match = match request.get("ifMatch").and_then(Value::as_str) {
            Some(etag) => Some(
                parse_etag(etag)
                    .ok_or_else(|| fail("ifMatch must be a version ETag like W/\"3\""))?,
            ),
            None => None,
        };
        Ok(Entry {
            index,
            method,
            target,
            full_url: raw
                .get("fullUrl")
                .and_then(Value::as_str)
                .map(str::to_string),
            resource,
            if_none_exist: request
                .get("ifNoneExist")
                .and_then(Value::as_str)
                .map(str::to_string),
            if_match,
        })
    }

    /// Parse and validate the entries of a transaction Bundle. Validation runs here, outside the
    /// write transaction, so the writer lock is held only for the writes.
    pub fn prepare_transaction(&self, raw_entries: &[Value]) -> ApiResult<PreparedTransaction> {
        let entries = raw_entries
            .iter()
            .enumerate()
            .map(|(i, e)| self.parse_entry(i, e))
            .collect::<ApiResult<Vec<_>>>()?;
        for entry in &entries {
            self.check_entry_resource(entry)
                .map_err(|e| in_entry(entry.index, e))?;
        }
        Ok(PreparedTransaction { entries })
    }

    /// Run a prepared transaction inside the caller's write, so that other rows (HL7 v2
    /// bookkeeping) can commit or roll back together with it.
    pub async fn run_prepared_in(
        &self,
        conn: &mut Conn,
        caller: &Arc<Caller>,
        mut prepared: PreparedTransaction,
    ) -> ApiResult<Vec<EntryResponse>> {
        self.run_transaction_in(conn, caller, &mut prepared.entries)
            .await
    }

    async fn run_transaction_in(
        &self,
        conn: &mut Conn,
        caller: &Arc<Caller>,
        entries: &mut [Entry],
    ) -> ApiResult<Vec<EntryResponse>> {
        // Every entry's interaction first, before anything is looked up on its behalf (a
        // conditional reference answers "none, one, several" even when the write is refused).
        for entry in entries.iter() {
            let permission = match entry.method {
                Method::Post => Permission::Create,
                Method::Put | Method::Patch => Permission::Update,
                Method::Delete => Permission::Delete,
                Method::Get | Method::Head => continue,
            };
            self.require(caller, resource_type_of(&entry.target), permission)
                .map_err(|e| in_entry(entry.index, e))?;
        }
        let mut ids = self.assign_ids(conn, caller, entries).await?;
        for entry in entries.iter() {
            if let Some(resource) = &entry.resource {
                self.resolve_conditional_references(conn, caller, resource, &mut ids)
                    .await
                    .map_err(|e| in_entry(entry.index, e))?;
            }
        }
        for entry in entries.iter_mut() {
            if let Some(resource) = entry.resource.as_mut() {
                rewrite_references(resource, &ids);
            }
        }
        let mut order: Vec<usize> = (0..entries.len()).collect();
        order.sort_by_key(|&i| (entries[i].method.rank(), i));
        let mut responses: Vec<Option<EntryResponse>> = vec![None; entries.len()];
        for i in order {
            let response = self
                .run_entry_in(conn, caller, entries[i].clone())
                .await
                .map_err(|e| in_entry(i, e))?;
            responses[i] = Some(response);
        }
        Ok(responses
            .into_iter()
            .map(|r| r.unwrap_or_else(|| EntryResponse::from_error(&ApiError::Internal)))
            .collect())
    }

    async fn run_batch_entry(
        &self,
        caller: &Arc<Caller>,
        entry: Entry,
    ) -> ApiResult<EntryResponse> {
        self.check_entry_resource(&entry)?;
        if matches!(entry.method, Method::Get | Method::Head) {
            let mut conn = self.reader().await?;
            return self.run_entry_in(&mut conn, caller, entry).await;
        }
        let mut entry = entry;
        if let (Method::Post, Target::Type(_)) = (entry.method, &entry.target) {
            entry.target = Target::Instance(
                resource_type_of(&entry.target).to_string(),
                FhirId::generate().into_string(),
            );
        }
        let (this, caller) = (self.clone(), caller.clone());
        self.write(move |conn| {
            Box::pin(async move { this.run_entry_in(conn, &caller, entry).await })
        })
        .await
    }

    fn check_entry_resource(&self, entry: &Entry) -> ApiResult<()> {
        match (entry.method, &entry.resource) {
            (Method::Post | Method::Put, Some(resource)) => {
                self.check_resource(resource_type_of(&entry.target), resource)
            }
            (Method::Patch, Some(resource)) => parse_patch(resource.clone()).map(|_| ()),
            _ => Ok(()),
        }
    }

    /// Give every POST its id (or its conditional match) and resolve conditional PUTs, and map
    /// each entry's fullUrl to the `Type/id` it will have.
    async fn assign_ids(
        &self,
        conn: &mut Conn,
        caller: &Arc<Caller>,
        entries: &mut [Entry],
    ) -> ApiResult<HashMap<String, String>> {
        let mut ids = HashMap::new();
        // Conditional creates are decided here, once; a second entry with the same criteria
        // stands for the resource the first one creates.
        let mut created_for: HashMap<(String, String), String> = HashMap::new();
        for entry in entries.iter_mut() {
            let resource_type = resource_type_of(&entry.target).to_string();
            let assigned = match (entry.method, &entry.target) {
                (Method::Post, Target::Type(_)) => {
                    let criteria = entry.if_none_exist.take();
                    let earlier = criteria
                        .as_ref()
                        .and_then(|c| created_for.get(&(resource_type.clone(), c.clone())))
                        .cloned();
                    let existing = match (&criteria, earlier) {
                        (_, Some(id)) => Some(id),
                        (None, None) => None,
                        (Some(criteria), None) => match self
                            .conditional_matches(
                                conn,
                                caller,
                                Permission::Create,
                                &resource_type,
                                criteria,
                            )
                            .await
                            .map_err(|e| in_entry(entry.index, e))?
                        {
                            Matches::None => None,
                            Matches::One(id) => Some(id),
                            Matches::Many(n) => {
                                return Err(in_entry(
                                    entry.index,
                                    ApiError::MultipleMatches(format!(
                                        "ifNoneExist matched {n} or more resources"
                                    )),
                                ));
                            }
                        },
                    };
                    match existing {
                        Some(id) => {
                            // The match stands in for the create: nothing is written, references point to it.
                            entry.method = Method::Get;
                            entry.target = Target::Instance(resource_type.clone(), id.clone());
                            entry.resource = None;
                            id
                        }
                        None => {
                            let id = FhirId::generate().into_string();
                            entry.target = Target::Instance(resource_type.clone(), id.clone());
                            if let Some(criteria) = criteria {
                                created_for.insert((resource_type.clone(), criteria), id.clone());
                            }
                            id
                        }
                    }
                }
                (Method::Put, Target::Conditional(_, criteria)) => {
                    let criteria = criteria.clone();
                    let body_id = entry
                        .resource
                        .as_ref()
                        .and_then(|r| r.get("id"))
                        .and_then(Value::as_str)
                        .map(str::to_string);
                    let id = match self
                        .conditional_matches(
                            conn,
                            caller,
                            Permission::Update,
                            &resource_type,
                            &criteria,
                        )
                        .await
                        .map_err(|e| in_entry(entry.index, e))?
                    {
                        Matches::None => match body_id {
                            Some(id) => self
                                .unmatched_body_id(conn, &resource_type, &id)
                                .await
                                .map_err(|e| in_entry(entry.index, e))?
                                .into_string(),
                            None => FhirId::generate().into_string(),
                        },
                        Matches::One(id) if body_id.as_deref().is_some_and(|b| b != id) => {
                            return Err(in_entry(
                                entry.index,
                                ApiError::bad_request(
                                    "Resource.id: the id in the body differs from the resource the conditional update matched",
                                ),
                            ));
                        }
                        Matches::One(id) => id,
                        Matches::Many(n) => {
                            return Err(in_entry(
                                entry.index,
                                ApiError::MultipleMatches(format!(
                                    "the conditional update matched {n} or more resources"
                                )),
                            ));
                        }
                    };
                    if !is_valid_id(&id) {
                        return Err(in_entry(
                            entry.index,
                            ApiError::bad_request("Resource.id is not a valid id"),
                        ));
                    }
                    entry.target = Target::Instance(resource_type.clone(), id.clone());
                    if let Some(resource) = entry.resource.as_mut().and_then(Value::as_object_mut) {
                        resource.insert("id".into(), json!(id));
                    }
                    id
                }
                (_, Target::Instance(_, id)) => id.clone(),
                _ => continue,
            };
            if let Some(full_url) = &entry.full_url {
                ids.insert(full_url.clone(), format!("{resource_type}/{assigned}"));
            }
        }
        Ok(ids)
    }

    /// Run one entry whose ids are settled, inside `conn`'s transaction.
    async fn run_entry_in(
        &self,
        conn: &mut Conn,
        caller: &Arc<Caller>,
        entry: Entry,
    ) -> ApiResult<EntryResponse> {
        let base = self.config.base_url.as_str();
        match (entry.method, entry.target) {
            (Method::Get | Method::Head, Target::Instance(t, id)) => {
                self.guard_read(conn, caller, &t, &id).await?;
                let stored = versions::read_current(conn, &t, &id)
                    .await?
                    .ok_or_else(|| super::read::not_found(&t, &id))?;
                if stored.deleted {
                    return Err(ApiError::Gone(format!("{t}/{id} was deleted")));
                }
                Ok(read_entry_response(&self.open_for(caller, stored)?))
            }
            (Method::Get | Method::Head, Target::Version(t, id, version)) => {
                self.guard_read(conn, caller, &t, &id).await?;
                let stored = versions::read_version(conn, &t, &id, version)
                    .await?
                    .filter(|s| !s.deleted)
                    .ok_or_else(|| {
                        ApiError::NotFound(format!("{t}/{id} has no version {version}"))
                    })?;
                let opened = self.open_for(caller, stored)?;
                let shown = self
                    .without_moved_versions(conn, caller, vec![opened])
                    .await?;
                let version = shown.first().ok_or_else(|| {
                    ApiError::NotFound(format!("{t}/{id} has no version {version}"))
                })?;
                Ok(read_entry_response(version))
            }
            (Method::Get | Method::Head, Target::Type(t)) => {
                self.search_entry(conn, caller, &t, "").await
            }
            (Method::Get | Method::Head, Target::Conditional(t, query)) => {
                self.search_entry(conn, caller, &t, &query).await
            }
            (Method::Post, Target::Instance(t, id)) => {
                let body = entry.resource.ok_or(ApiError::Internal)?;
                let outcome = self
                    .create_in(conn, caller, &t, &id, body, entry.if_none_exist.as_deref())
                    .await?;
                Ok(write_entry_response(
                    &self.present_outcome(caller, outcome),
                    base,
                ))
            }
            (Method::Put, Target::Instance(t, id)) => {
                let body = entry.resource.ok_or(ApiError::Internal)?;
                check_body_id(&body, &id)?;
                let outcome: WriteOutcome = self
                    .update_in(conn, caller, &t, &id, body, entry.if_match, "PUT")
                    .await?;
                Ok(write_entry_response(
                    &self.present_outcome(caller, outcome),
                    base,
                ))
            }
            (Method::Put, Target::Conditional(t, criteria)) => {
                let body = entry.resource.ok_or(ApiError::Internal)?;
                let outcome = self
                    .conditional_update_in(conn, caller, &t, &criteria, body)
                    .await?;
                Ok(write_entry_response(
                    &self.present_outcome(caller, outcome),
                    base,
                ))
            }
            (Method::Patch, Target::Instance(t, id)) => {
                let operations = parse_patch(entry.resource.ok_or(ApiError::Internal)?)?;
                let outcome = self
                    .patch_in(conn, caller, &t, &id, operations, entry.if_match)
                    .await?;
                Ok(write_entry_response(
                    &self.present_outcome(caller, outcome),
                    base,
                ))
            }
            (Method::Delete, Target::Instance(t, id)) => {
                let outcome = self.delete_in(conn, caller, &t, &id).await?;
                Ok(write_entry_response(
                    &self.present_outcome(caller, outcome),
                    base,
                ))
            }
            (Method::Delete, Target::Conditional(t, criteria)) => {
                let outcome = self
                    .conditional_delete_in(conn, caller, &t, &criteria)
                    .await?;
                Ok(write_entry_response(
                    &self.present_outcome(caller, outcome),
                    base,
                ))
            }
            _ => Err(ApiError::bad_request(
                "this method cannot be applied to this request.url",
            )),
        }
    }
}

impl Service {
    /// A search entry: its searchset Bundle as the entry's resource. Inside a transaction it runs
    /// last, on the transaction's connection, so it sees the Bundle's own writes.
    async fn search_entry(
        &self,
        conn: &mut Conn,
        caller: &Arc<Caller>,
        resource_type: &str,
        query: &str,
    ) -> ApiResult<EntryResponse> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query)
            .map_err(|_| ApiError::bad_request("request.url has a malformed query string"))?;
        let mut request = self.parse_search(resource_type, &pairs, false)?;
        self.restrict_search(caller, &mut request)?;
        let page = self.search_in(conn, request).await?;
        Ok(EntryResponse {
            status: "200 OK".into(),
            location: None,
            etag: None,
            last_modified: None,
            resource: Some(self.searchset(&page)),
            outcome: None,
        })
    }

    /// Conditional references (`Patient?identifier=…`) in a transaction resolve to the one
    /// resource they match; no match or several fail the transaction (R4 http.html#trules).
    async fn resolve_conditional_references(
        &self,
        conn: &mut Conn,
        caller: &Arc<Caller>,
        resource: &Value,
        ids: &mut HashMap<String, String>,
    ) -> ApiResult<()> {
        let mut references = Vec::new();
        collect_references(resource, &mut references);
        for reference in references {
            let Some((resource_type, criteria)) = reference.split_once('?') else {
                continue;
            };
            if ids.contains_key(&reference) || !self.validator.is_resource_type(resource_type) {
                continue;
            }
            let id = match self
                .conditional_matches(conn, caller, Permission::Search, resource_type, criteria)
                .await?
            {
                Matches::One(id) => id,
                Matches::None => {
                    return Err(ApiError::PreconditionFailed(format!(
                        "the conditional reference to {resource_type} matches no resource"
                    )));
                }
                Matches::Many(_) => {
                    return Err(ApiError::PreconditionFailed(format!(
                        "the conditional reference to {resource_type} matches more than one resource"
                    )));
                }
            };
            ids.insert(reference.clone(), format!("{resource_type}/{id}"));
        }
        Ok(())
    }
}

/// Every `reference` string in a resource.
fn collect_references(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                match child {
                    Value::String(reference) if key == "reference" => out.push(reference.clone()),
                    _ => collect_references(child, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| collect_references(item, out)),
        _ => {}
    }
}

fn resource_type_of(target: &Target) -> &str {
    match target {
        Target::Type(t)
        | Target::Instance(t, _)
        | Target::Version(t, _, _)
        | Target::Conditional(t, _) => t,
    }
}

fn parse_target(url: &str) -> Option<Target> {
    if let Some((t, query)) = url.split_once('?') {
        return Some(Target::Conditional(t.to_string(), query.to_string()));
    }
    let parts: Vec<&str> = url.split('/').collect();
    match parts.as_slice() {
        [t] if !t.is_empty() => Some(Target::Type(t.to_string())),
        [t, id] if is_valid_id(id) => Some(Target::Instance(t.to_string(), id.to_string())),
        [t, id, "_history", v] if is_valid_id(id) => Some(Target::Version(
            t.to_string(),
            id.to_string(),
            parse_version(v).ok()?,
        )),
        _ => None,
    }
}

/// `W/"3"` (or `"3"`, or `3`) → 3.
pub fn parse_etag(etag: &str) -> Option<i64> {
    etag.trim()
        .trim_start_matches("W/")
        .trim_matches('"')
        .parse()
        .ok()
}

fn in_entry(index: usize, error: ApiError) -> ApiError {
    match error {
        ApiError::BadRequest(m) if m.starts_with("Bundle.entry[") => ApiError::BadRequest(m),
        ApiError::BadRequest(m) => ApiError::BadRequest(format!("Bundle.entry[{index}]: {m}")),
        ApiError::NotFound(m) => ApiError::NotFound(format!("Bundle.entry[{index}]: {m}")),
        ApiError::Gone(m) => ApiError::Gone(format!("Bundle.entry[{index}]: {m}")),
        ApiError::Conflict(m) => ApiError::Conflict(format!("Bundle.entry[{index}]: {m}")),
        ApiError::PreconditionFailed(m) => {
            ApiError::PreconditionFailed(format!("Bundle.entry[{index}]: {m}"))
        }
        ApiError::MultipleMatches(m) => {
            ApiError::MultipleMatches(format!("Bundle.entry[{index}]: {m}"))
        }
        ApiError::Invalid(issues) => ApiError::Invalid(
            issues
                .into_iter()
                .map(|mut issue| {
                    issue.diagnostics = format!("Bundle.entry[{index}]: {}", issue.diagnostics);
                    issue
                })
                .collect(),
        ),
        other => other,
    }
}

/// Replace every `reference` that names a fullUrl of this Bundle with the `Type/id` it received.
fn rewrite_references(value: &mut Value, ids: &HashMap<String, String>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map.iter_mut() {
                match child {
                    Value::String(reference) if key == "reference" => {
                        if let Some(local) = ids.get(reference.as_str()) {
                            *reference = local.clone();
                        }
                    }
                    _ => rewrite_references(child, ids),
                }
            }
        }
        Value::Array(items) => items
            .iter_mut()
            .for_each(|item| rewrite_references(item, ids)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert!(matches!(parse_target("Patient"), Some(Target::Type(_))));
        assert!(matches!(
            parse_target("Patient/1"),
            Some(Target::Instance(..))
        ));
        assert!(matches!(
            parse_target("Patient/1/_history/2"),
            Some(Target::Version(_, _, 2))
        ));
        assert!(matches!(
            parse_target("Patient?identifier=a|b"),
            Some(Target::Conditional(..))
        ));
        assert!(parse_target("Patient/a b").is_none());
    }

    #[test]
    fn references_are_rewritten_everywhere() {
        let ids = HashMap::from([("urn:uuid:1".to_string(), "Patient/p1".to_string())]);
        let mut obs = json!({"subject": {"reference": "urn:uuid:1"}, "contained": [{"x": [{"reference": "urn:uuid:1"}]}]});
        rewrite_references(&mut obs, &ids);
        assert_eq!(obs["subject"]["reference"], "Patient/p1");
        assert_eq!(obs["contained"][0]["x"][0]["reference"], "Patient/p1");
    }

    #[test]
    fn etags() {
        assert_eq!(parse_etag("W/\"3\""), Some(3));
        assert_eq!(parse_etag("\"4\""), Some(4));
        assert_eq!(parse_etag("x"), None);
    }
}
