//! Bulk import of NDJSON files (one resource per line) and Bundle files, through the same write
//! path as the REST API. Resources with an id keep it (update-as-create); those without get one.
//! Resources are validated first and written in batches, one database transaction per batch, so
//! a large import is fast and a failed batch leaves nothing half-written.

use serde_json::Value;

use crate::audit::{Event, Outcome};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::fhir::id::{FhirId, is_valid_id};
use crate::service::Service;
use crate::store::versions;

/// Resources per transaction.
pub const BATCH_SIZE: usize = 500;

#[derive(Debug, Default, Clone, Copy)]
pub struct ImportSummary {
    pub stored: u64,
    pub rejected: u64,
}

/// One rejected resource: where it was and why (no content, which may be PHI).
#[derive(Debug, Clone)]
pub struct Rejection {
    pub position: String,
    pub reason: String,
}

/// The resources in one file's text: NDJSON lines, or the entries of a Bundle (a transaction or
/// batch Bundle is imported as its entries' resources).
pub fn resources_in(text: &str) -> Vec<(String, Result<Value, String>)> {
    // A whole-file JSON document is a Bundle (or a single resource); anything else is NDJSON,
    // which fails this parse quickly at the start of its second line.
    if let Ok(document) = serde_json::from_str::<Value>(text) {
        if document.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
            return vec![("resource".into(), Ok(document))];
        }
        let entries = document
            .get("entry")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        return entries
            .into_iter()
            .enumerate()
            .map(|(i, entry)| {
                (
                    format!("entry {i}"),
                    entry
                        .get("resource")
                        .cloned()
                        .ok_or_else(|| "entry has no resource".to_string()),
                )
            })
            .collect();
    }
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(n, line)| {
            let parsed =
                crate::api::negotiate::parse_json(line.as_bytes()).map_err(|e| e.to_string());
            (format!("line {}", n + 1), parsed)
        })
        .collect()
}

impl Service {
    /// Import one batch: every resource checked, the valid ones written in one transaction.
    pub async fn import_batch(
        &self,
        batch: Vec<(String, Result<Value, String>)>,
    ) -> ApiResult<(ImportSummary, Vec<Rejection>)> {
        let mut rejections = Vec::new();
        let mut valid = Vec::with_capacity(batch.len());
        for (position, parsed) in batch {
            let checked = parsed.and_then(|resource| {
                let resource_type = resource.get("resourceType").and_then(Value::as_str).unwrap_or_default().to_string();
                self.check_type(&resource_type).map_err(|e| e.to_string())?;
                if resource_type == crate::auth::role::AUDIT_EVENT {
                    return Err("AuditEvents are written by the server only; a legacy audit trail cannot be imported into its chains".to_string());
                }
                self.check_resource(&resource_type, &resource).map_err(|e| describe(&e))?;
                let id = match resource.get("id").and_then(Value::as_str) {
                    Some(id) if is_valid_id(id) => id.to_string(),
                    Some(_) => return Err("Resource.id is not a valid id".to_string()),
                    None => FhirId::generate().into_string(),
                };
                Ok((resource_type, id, resource))
            });
            match checked {
                Ok(item) => valid.push(item),
                Err(reason) => rejections.push(Rejection { position, reason }),
            }
        }
        let stored = valid.len() as u64;
        let this = self.clone();
        self.write(move |conn| {
            Box::pin(async move {
                let mut imported = Vec::with_capacity(valid.len());
                for (resource_type, id, resource) in valid {
                    imported.push(this.import_one(conn, &resource_type, &id, resource).await?);
                }
                // One record per batch, in the batch's transaction: what was imported, and whose.
                let entities = this.audit_entities(&imported, true);
                let record = this.audit_record(
                    &Caller::server_shared(),
                    Event::Ingest,
                    Outcome::Success,
                    None,
                    entities,
                );
                crate::audit::append(&this, conn, &[record]).await?;
                Ok(())
            })
        })
        .await?;
        Ok((
            ImportSummary {
                stored,
                rejected: rejections.len() as u64,
            },
            rejections,
        ))
    }
}

impl Service {
    async fn import_one(
        &self,
        conn: &mut crate::store::Conn,
        resource_type: &str,
        id: &str,
        resource: Value,
    ) -> ApiResult<crate::service::VersionedResource> {
        let head = versions::head(conn, self.store.backend(), resource_type, id, true).await?;
        let method = if head.is_some() { "PUT" } else { "POST" };
        self.store_version(conn, resource_type, id, resource, head, method)
            .await
    }
}

fn describe(error: &ApiError) -> String {
    error
        .issues()
        .iter()
        .map(|issue| issue.diagnostics.clone())
        .collect::<Vec<_>>()
        .join("; ")
}
