//! The one write path. Every create, update, patch, delete — from REST, transaction Bundles and
//! imports alike — ends here, so validation, server-managed metadata, pseudonyms, index rows and
//! encryption happen exactly once and the same way.
//!
//! Validation runs before a transaction is opened ([`Service::check_resource`]), so the writer
//! lock is held only for stamping, sealing and inserting ([`Service::store_version`]).

use serde_json::{Map, Value, json};

use super::{Service, VersionedResource};
use crate::crypto::{Aad, KeyRing};
use crate::error::{ApiError, ApiResult};
use crate::fhir::instant::format_instant;
use crate::fhir::outcome::{Issue, IssueCode};
use crate::search::index_rows::{self, HeadCompartment};
use crate::store::Conn;
use crate::store::index::IndexRow;
use crate::store::versions::{self, Head};
use crate::store::write::{VersionWrite, write_versions};

/// A version ready to be written, from [`Service::seal_version`].
pub struct PreparedVersion {
    pub write: VersionWrite,
    /// What the client will see.
    pub stored: VersionedResource,
    /// The plaintext that `write.ciphertext` seals: the body as stored, byte for byte.
    pub plain: Vec<u8>,
}

impl Service {
    /// Check a resource a client sent for `resource_type`: JSON object, matching `resourceType`,
    /// valid against the spec's schema and required bindings, and against every profile of
    /// `profiles/` it claims in `meta.profile`.
    pub fn check_resource(&self, resource_type: &str, body: &Value) -> ApiResult<()> {
        self.check_resource_against(resource_type, body, None)
    }

    /// [`Service::check_resource`], and also against `profile` (a profile URL the caller has
    /// checked is known) whether or not the resource claims it.
    pub fn check_resource_against(
        &self,
        resource_type: &str,
        body: &Value,
        profile: Option<&str>,
    ) -> ApiResult<()> {
        let Some(object) = body.as_object() else {
            return Err(ApiError::bad_request(
                "the request body must be a JSON object holding a FHIR resource",
            ));
        };
        match object.get("resourceType").and_then(Value::as_str) {
            Some(found) if found == resource_type => {}
            Some(_) => {
                return Err(ApiError::bad_request(format!(
                    "resourceType in the body does not match the endpoint; this endpoint takes {resource_type}"
                )));
            }
            None => return Err(ApiError::bad_request("the body has no resourceType")),
        }
        if let Some(path) = control_character_at(body, resource_type) {
            return Err(ApiError::Invalid(vec![Issue::error(
                IssueCode::Value,
                format!("{path}: control characters other than tab, carriage return and line feed are not allowed in FHIR strings"),
            )
            .at(path)]));
        }
        if resource_type == "Consent"
            && let Err(why) = crate::auth::consent::rules::rows_of(body, 0, &self.config.base_url)
        {
            return Err(ApiError::Invalid(vec![Issue::error(
                IssueCode::NotSupported,
                why,
            )]));
        }
        let issues = match profile {
            Some(url) => self.validator.validate_against(body, url),
            None => self.validator.validate(body),
        };
        if issues.iter().any(|issue| issue.is_error()) {
            return Err(ApiError::Invalid(issues));
        }
        Ok(())
    }

    /// Store `body` as the next version of (`resource_type`, `id`) after `head` (None: first
    /// version), inside the caller's transaction. See [`Service::prepare_version`].
    pub async fn store_version(
        &self,
        conn: &mut Conn,
        resource_type: &str,
        id: &str,
        body: Value,
        head: Option<Head>,
        method: &str,
    ) -> ApiResult<VersionedResource> {
        self.check_writable(resource_type, id)?;
        let previous_pseudonym = match head {
            Some(h) if resource_type == "Patient" && !h.deleted => {
                self.previous_pseudonym(conn, id).await?
            }
            _ => None,
        };
        let (write, stored) =
            self.prepare_version(resource_type, id, body, head, method, previous_pseudonym)?;
        write_versions(conn, std::slice::from_ref(&write)).await?;
        tracing::debug!(resource_type, id, version = write.version, "stored version");
        Ok(stored)
    }

    /// Everything about a new version that needs no database: sets `id` and
    /// `meta.versionId`/`meta.lastUpdated`, keeps (or assigns) the Patient pseudonym, extracts the
    /// index rows and seals the body to its row. Returns the write and what the client will see.
    pub fn prepare_version(
        &self,
        resource_type: &str,
        id: &str,
        body: Value,
        head: Option<Head>,
        method: &str,
        previous_pseudonym: Option<String>,
    ) -> ApiResult<(VersionWrite, VersionedResource)> {
        let prepared =
            self.seal_version(resource_type, id, body, head, method, previous_pseudonym)?;
        Ok((prepared.write, prepared.stored))
    }

    /// [`Service::prepare_version`], also handing back the exact bytes that were sealed (the
    /// audit chain hashes them, so that re-sealing under a new key keeps the chain valid).
    pub fn seal_version(
        &self,
        resource_type: &str,
        id: &str,
        mut body: Value,
        head: Option<Head>,
        method: &str,
        previous_pseudonym: Option<String>,
    ) -> ApiResult<PreparedVersion> {
        let (version, last_updated) = self.next_version(head);
        if let Some(reference) = unresolved_conditional_reference(&body) {
            return Err(ApiError::bad_request(format!(
                "{reference}: conditional references (Type?criteria) are resolved only inside a transaction Bundle"
            )));
        }
        let object = body
            .as_object_mut()
            .ok_or_else(|| ApiError::bad_request("a resource must be a JSON object"))?;
        object.insert("id".into(), json!(id));
        stamp_meta(object, version, last_updated);
        if resource_type == "Patient" {
            self.apply_pseudonym(object, id, previous_pseudonym);
        }

        let keys = self.keys.current();
        let (mut rows, compartment) = self.search_rows(&keys, resource_type, id, &body);
        if resource_type == "Consent" {
            let rules =
                crate::auth::consent::rules::rows_of(&body, last_updated, &self.config.base_url)
                    .map_err(|why| {
                        ApiError::Invalid(vec![Issue::error(IssueCode::NotSupported, why)])
                    })?;
            rows.extend(rules.into_iter().map(IndexRow::Consent));
        }
        let plain = serde_json::to_vec(&body).map_err(|_| ApiError::Internal)?;
        let sealed = keys.seal(
            &Aad::Resource {
                resource_type,
                id,
                version,
            },
            &plain,
        )?;
        let write = VersionWrite {
            resource_type: resource_type.to_string(),
            id: id.to_string(),
            version,
            last_updated,
            deleted: false,
            method: method.to_string(),
            key_id: i64::from(keys.active_key_id()),
            ciphertext: Some(sealed),
            compartment,
            rows,
            is_new: head.is_none(),
        };
        let stored = VersionedResource {
            resource_type: resource_type.to_string(),
            id: id.to_string(),
            version,
            last_updated,
            resource: Some(body),
            method: method.to_string(),
        };
        Ok(PreparedVersion {
            write,
            stored,
            plain,
        })
    }

    /// The search index rows of `body`, a version as stored (id, `meta` and pseudonym set), and
    /// the Patient compartment they put it in (with whether it names every Patient referenced). Writes and re-indexing
    /// ([`Service::reindex`](super::reindex)) both come here, so a re-indexed resource gets the
    /// rows a write of the same version would give it now.
    pub fn search_rows(
        &self,
        keys: &KeyRing,
        resource_type: &str,
        id: &str,
        body: &Value,
    ) -> (Vec<IndexRow>, HeadCompartment) {
        let rows = index_rows::rows_for(&self.registry, keys, resource_type, body);
        let compartment = HeadCompartment::of(
            &self.registry,
            resource_type,
            id,
            &rows,
            &self.config.base_url,
        );
        (rows, compartment)
    }

    /// Write a delete marker after `head` and drop the resource's index rows.
    pub async fn store_delete(
        &self,
        conn: &mut Conn,
        resource_type: &str,
        id: &str,
        head: Head,
    ) -> ApiResult<VersionedResource> {
        let (version, last_updated) = self.next_version(Some(head));
        let write = VersionWrite {
            resource_type: resource_type.to_string(),
            id: id.to_string(),
            version,
            last_updated,
            deleted: true,
            method: "DELETE".into(),
            key_id: 0,
            ciphertext: None,
            compartment: HeadCompartment::of_delete_marker(),
            rows: Vec::new(),
            is_new: false,
        };
        write_versions(conn, std::slice::from_ref(&write)).await?;
        Ok(VersionedResource {
            resource_type: resource_type.to_string(),
            id: id.to_string(),
            version,
            last_updated,
            resource: None,
            method: "DELETE".into(),
        })
    }

    /// The version number and lastUpdated of the version after `head`. lastUpdated stays strictly
    /// increasing per resource even if the clock steps back. Only inside an open write
    /// ([`super::write_clock`]).
    fn next_version(&self, head: Option<Head>) -> (i64, i64) {
        let version = head.map_or(1, |h| h.version + 1);
        let last_updated = self
            .clock
            .stamp(head.map_or(i64::MIN, |h| h.last_updated + 1));
        (version, last_updated)
    }

    /// The profiles folder's StructureDefinitions and ValueSets are served read-only: a stored
    /// version under the same id would never be read.
    pub fn check_writable(&self, resource_type: &str, id: &str) -> ApiResult<()> {
        match self.validator.conformance_resource(resource_type, id) {
            Some(_) => Err(ApiError::MethodNotAllowed(format!(
                "{resource_type}/{id} is a read-only conformance resource of this server (profiles folder)"
            ))),
            None => Ok(()),
        }
    }

    /// The pseudonym the current version of Patient `id` carries, if any.
    pub(crate) async fn previous_pseudonym(
        &self,
        conn: &mut Conn,
        id: &str,
    ) -> ApiResult<Option<String>> {
        let Some(stored) = versions::read_current(conn, "Patient", id).await? else {
            return Ok(None);
        };
        let current = self.open_version(stored)?;
        Ok(current
            .resource
            .as_ref()
            .and_then(|patient| pseudonym_of(patient, &self.config.pseudonym_system)))
    }

    /// Replace whatever the client put under the pseudonym system by the server's pseudonym: the
    /// one already assigned, or a new one from the patient's stable identity (its first business
    /// identifier, else its resource id). Clients cannot forge or drop it.
    fn apply_pseudonym(
        &self,
        patient: &mut Map<String, Value>,
        id: &str,
        previous: Option<String>,
    ) {
        let system = self.config.pseudonym_system.as_str();
        let pseudonym = previous.unwrap_or_else(|| {
            let identity = patient
                .get("identifier")
                .and_then(Value::as_array)
                .and_then(|ids| {
                    ids.iter().find_map(|identifier| {
                        let s = identifier.get("system")?.as_str()?;
                        let v = identifier.get("value")?.as_str()?;
                        (s != system).then(|| format!("{s}|{v}"))
                    })
                })
                .unwrap_or_else(|| format!("Patient/{id}"));
            self.keys.current().pseudonym(&identity)
        });
        let identifiers = patient.entry("identifier").or_insert_with(|| json!([]));
        if let Some(list) = identifiers.as_array_mut() {
            list.retain(|identifier| {
                identifier.get("system").and_then(Value::as_str) != Some(system)
            });
            list.push(json!({
                "use": "secondary",
                "system": system,
                "value": pseudonym,
            }));
        }
    }
}

/// The pseudonym identifier value of a Patient, if it has one.
pub fn pseudonym_of(patient: &Value, system: &str) -> Option<String> {
    patient
        .get("identifier")?
        .as_array()?
        .iter()
        .find_map(|identifier| {
            (identifier.get("system")?.as_str()? == system)
                .then(|| identifier.get("value")?.as_str().map(str::to_string))?
        })
}

/// Set the server-managed `meta.versionId` and `meta.lastUpdated`; keep the rest of `meta`.
fn stamp_meta(resource: &mut Map<String, Value>, version: i64, last_updated: i64) {
    let meta = resource.entry("meta").or_insert_with(|| json!({}));
    if !meta.is_object() {
        *meta = json!({});
    }
    if let Some(meta) = meta.as_object_mut() {
        meta.insert("versionId".into(), json!(version.to_string()));
        meta.insert("lastUpdated".into(), json!(format_instant(last_updated)));
    }
}

/// Where the first string holding a forbidden control character is (FHIR strings allow only tab,
/// CR and LF; PostgreSQL cannot even store NUL in text).
fn control_character_at(value: &Value, root: &str) -> Option<String> {
    fn walk(value: &Value, path: &str) -> Option<String> {
        match value {
            Value::String(s) => s
                .chars()
                .any(|c| c.is_control() && !matches!(c, '\t' | '\r' | '\n'))
                .then(|| path.to_string()),
            Value::Object(map) => map
                .iter()
                .find_map(|(k, v)| walk(v, &format!("{path}.{k}"))),
            Value::Array(items) => items
                .iter()
                .enumerate()
                .find_map(|(i, v)| walk(v, &format!("{path}[{i}]"))),
            _ => None,
        }
    }
    walk(value, root)
}

/// The FHIRPath-ish location of the first `reference` that is still a search (`Type?criteria`).
fn unresolved_conditional_reference(value: &Value) -> Option<String> {
    fn walk(value: &Value, path: &mut Vec<String>) -> Option<String> {
        match value {
            Value::Object(map) => {
                for (key, child) in map {
                    if key == "reference"
                        && child
                            .as_str()
                            .is_some_and(|r| r.contains('?') && !r.contains("://"))
                    {
                        return Some(format!("{}.reference", path.join(".")));
                    }
                    path.push(key.clone());
                    let found = walk(child, path);
                    path.pop();
                    if found.is_some() {
                        return found;
                    }
                }
                None
            }
            Value::Array(items) => items.iter().find_map(|item| walk(item, path)),
            _ => None,
        }
    }
    let root = value
        .get("resourceType")
        .and_then(Value::as_str)
        .unwrap_or("Resource")
        .to_string();
    walk(value, &mut vec![root])
}

/// The body id must match the URL id on update (R4 3.1.0.4.1).
pub fn check_body_id(body: &Value, id: &str) -> ApiResult<()> {
    match body.get("id").and_then(Value::as_str) {
        Some(found) if found == id => Ok(()),
        Some(_) => Err(ApiError::bad_request(
            "Resource.id: the id in the body does not match the id in the URL",
        )),
        None => Err(ApiError::bad_request(
            "Resource.id: an update must carry the resource id in the body",
        )),
    }
}
