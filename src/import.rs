//! Bulk import of NDJSON files (one resource per line) and Bundle files, through the same write
//! path as the REST API. Resources with an id keep it (update-as-create); those without get one.
//! Resources are validated first and written in batches, one database transaction per batch, so
//! a large import is fast and a failed batch leaves nothing half-written.

use serde_json::Value;

use crate::audit::{Event, Outcome};
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::fhir::id::{FhirId, is_valid_id};
use crate::service::{Service, VersionedResource};
use crate::store::write::{VersionWrite, write_versions};
use crate::store::{Backend, versions};

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
        match self.import_prepared(valid.clone()).await? {
            Prepared::Written => {}
            // Ids repeated within the batch, or a head that moved meanwhile: one by one.
            Prepared::OneByOne => self.import_one_by_one(valid).await?,
        }
        Ok((
            ImportSummary {
                stored,
                rejected: rejections.len() as u64,
            },
            rejections,
        ))
    }
}

/// How [`Service::import_prepared`] ended.
enum Prepared {
    Written,
    /// Nothing was written: the batch must be imported one resource after another.
    OneByOne,
}

/// A resource of a batch, checked: its type, id and body.
type Checked = (String, String, Value);

/// A resource of a batch with what a reader found for it: its head, and the pseudonym its
/// current version carries (Patients).
struct Planned {
    resource_type: String,
    id: String,
    body: Value,
    head: Option<versions::Head>,
    pseudonym: Option<String>,
}

impl Service {
    /// Import `valid` the way the group committer writes plain creates: every version prepared
    /// (stamped, indexed, sealed) off the writer, on every core, against the heads a reader saw;
    /// then one transaction that checks those heads are still current and writes every version
    /// with one multi-row INSERT per table. On a fresh import the writer thus spends its time on
    /// rows, not on indexing and sealing one resource after another.
    async fn import_prepared(&self, valid: Vec<Checked>) -> ApiResult<Prepared> {
        let mut seen = std::collections::HashSet::with_capacity(valid.len());
        if !valid
            .iter()
            .all(|(resource_type, id, _)| seen.insert((resource_type.as_str(), id.as_str())))
        {
            return Ok(Prepared::OneByOne);
        }
        let mut planned = Vec::with_capacity(valid.len());
        {
            let mut conn = self.reader().await?;
            for (resource_type, id, body) in valid {
                self.check_writable(&resource_type, &id)?;
                let head =
                    versions::head(&mut conn, self.store.backend(), &resource_type, &id, false)
                        .await?;
                let pseudonym = match head {
                    Some(h) if resource_type == "Patient" && !h.deleted => {
                        self.previous_pseudonym(&mut conn, &id).await?
                    }
                    _ => None,
                };
                planned.push(Planned {
                    resource_type,
                    id,
                    body,
                    head,
                    pseudonym,
                });
            }
        }
        let heads: Vec<(String, String, Option<versions::Head>)> = planned
            .iter()
            .map(|p| (p.resource_type.clone(), p.id.clone(), p.head))
            .collect();
        let open = self.clock.open();
        let prepared = self.prepare_in_parallel(planned).await?;
        let imported: Vec<VersionedResource> =
            prepared.iter().map(|(_, stored)| stored.clone()).collect();
        let writes: Vec<VersionWrite> = prepared.into_iter().map(|(write, _)| write).collect();
        let this = self.clone();
        self.write_opened(open, move |conn| {
            Box::pin(async move {
                let backend = Backend::of(conn);
                for (resource_type, id, seen) in &heads {
                    if versions::head(conn, backend, resource_type, id, true).await? != *seen {
                        return Ok(Prepared::OneByOne);
                    }
                }
                write_versions(conn, &writes).await?;
                this.audit_import(conn, &imported).await?;
                Ok(Prepared::Written)
            })
        })
        .await
    }

    /// [`Service::prepare_version`] of every planned resource, in chunks on blocking threads (one
    /// per core); in order.
    async fn prepare_in_parallel(
        &self,
        planned: Vec<Planned>,
    ) -> ApiResult<Vec<(VersionWrite, VersionedResource)>> {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let chunk = planned.len().div_ceil(cores).max(1);
        let mut planned = planned.into_iter();
        let mut tasks = Vec::new();
        loop {
            let part: Vec<_> = planned.by_ref().take(chunk).collect();
            if part.is_empty() {
                break;
            }
            let this = self.clone();
            tasks.push(tokio::task::spawn_blocking(move || {
                part.into_iter()
                    .map(|p| {
                        let method = if p.head.is_some() { "PUT" } else { "POST" };
                        this.prepare_version(
                            &p.resource_type,
                            &p.id,
                            p.body,
                            p.head,
                            method,
                            p.pseudonym,
                        )
                    })
                    .collect::<ApiResult<Vec<_>>>()
            }));
        }
        let mut prepared = Vec::new();
        for task in tasks {
            prepared.extend(task.await.map_err(|_| ApiError::Internal)??);
        }
        Ok(prepared)
    }

    /// The batch one resource after another, each against the head it finds in the transaction.
    async fn import_one_by_one(&self, valid: Vec<Checked>) -> ApiResult<()> {
        let this = self.clone();
        self.write(move |conn| {
            Box::pin(async move {
                let mut imported = Vec::with_capacity(valid.len());
                for (resource_type, id, resource) in valid {
                    imported.push(this.import_one(conn, &resource_type, &id, resource).await?);
                }
                this.audit_import(conn, &imported).await
            })
        })
        .await
    }

    /// One record per batch, in the batch's transaction: what was imported, and whose.
    async fn audit_import(
        &self,
        conn: &mut crate::store::Conn,
        imported: &[VersionedResource],
    ) -> ApiResult<()> {
        let entities = self.audit_entities(imported, true);
        let record = self.audit_record(
            &Caller::server_shared(),
            Event::Ingest,
            Outcome::Success,
            None,
            entities,
        );
        crate::audit::append(self, conn, &[record]).await?;
        Ok(())
    }

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
