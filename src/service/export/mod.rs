//! FHIR Bulk Data Access export (`$export`, <https://hl7.org/fhir/uv/bulkdata/export.html>), the
//! asynchronous request pattern: a kick-off starts a job and answers with a status URL; the job
//! runs in the background as the caller, paging through the same searches the caller could make
//! ([`plan`]); the status URL answers with the progress, then the manifest; the files it lists
//! are downloaded with the same token.
//!
//! Output is PHI, so it is stored in the database in chunks sealed with the key ring (never on
//! disk in plain text, never whole in memory) and kept until the job expires
//! (`export.expire_after_seconds`). A job belongs to its caller (issuer, subject, client, role
//! and organisation of the token): for anyone else its status and files do not exist (404).
//!
//! - [`plan`]: the kick-off's parameters, checked, as one search per resource type.
//! - [`job`]: the background job: pages, NDJSON chunks, files, the end of a job.
//! - here: the jobs of this process, the status, the manifest, downloads, cancelling, expiry.

pub mod job;
pub mod plan;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::stream::BoxStream;
use serde_json::{Value, json};

use super::Service;
use crate::auth::Caller;
use crate::crypto::Aad;
use crate::error::{ApiError, ApiResult};
use crate::fhir::instant::{format_instant, now_micros};
use crate::store::export::{self as rows, FileRow, JobRow, JobStatus};

/// AAD purposes of what a job seals.
const REQUEST_PURPOSE: &str = "export-request";
const CHUNK_PURPOSE: &str = "export-chunk";
const PATIENTS_PURPOSE: &str = "export-patients";
/// The error of a job that a stop of the server interrupted.
pub const INTERRUPTED: &str =
    "the export was interrupted because the server stopped; start it again";
/// How often expired jobs are removed.
const SWEEP_INTERVAL: Duration = Duration::from_secs(60);

/// The levels of export this server offers, with their routes and OperationDefinitions: the
/// router and the CapabilityStatement are both built from this list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportLevel {
    /// `[base]/$export`: everything the caller may search.
    System,
    /// `[base]/Patient/$export`: the Patient compartments of all patients the caller may see.
    Patient,
}

impl ExportLevel {
    pub const ALL: [ExportLevel; 2] = [ExportLevel::System, ExportLevel::Patient];

    pub fn route(self) -> &'static str {
        match self {
            ExportLevel::System => "/fhir/$export",
            ExportLevel::Patient => "/fhir/Patient/$export",
        }
    }

    /// The resource type whose CapabilityStatement entry declares it (`None`: the server's).
    pub fn resource_type(self) -> Option<&'static str> {
        match self {
            ExportLevel::System => None,
            ExportLevel::Patient => Some("Patient"),
        }
    }

    pub fn definition(self) -> &'static str {
        match self {
            ExportLevel::System => "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export",
            ExportLevel::Patient => {
                "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/patient-export"
            }
        }
    }
}

/// The jobs running in this process.
#[derive(Debug, Default)]
pub struct Exports {
    running: Mutex<HashMap<String, Arc<Running>>>,
}

/// A running job: how far it is, whether it was cancelled, its task.
#[derive(Debug, Default)]
pub struct Running {
    cancelled: AtomicBool,
    progress: Mutex<String>,
    task: Mutex<Option<tokio::task::AbortHandle>>,
}

impl Running {
    fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }

    fn set_progress(&self, text: String) {
        *self.progress.lock().unwrap_or_else(|p| p.into_inner()) = text;
    }

    fn progress(&self) -> String {
        self.progress
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Exports {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Running>>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Take a slot for job `id`, unless `limit` jobs run already.
    fn reserve(&self, id: &str, limit: usize) -> Option<Arc<Running>> {
        let mut running = self.lock();
        if running.len() >= limit {
            return None;
        }
        let job = Arc::new(Running::default());
        running.insert(id.to_string(), job.clone());
        Some(job)
    }

    fn get(&self, id: &str) -> Option<Arc<Running>> {
        self.lock().get(id).cloned()
    }

    fn release(&self, id: &str) {
        self.lock().remove(id);
    }

    /// Stop every running job's task (the server is stopping; the next start marks them failed).
    pub fn abort_all(&self) {
        for job in self.lock().values() {
            if let Some(task) = job.task.lock().unwrap_or_else(|p| p.into_inner()).take() {
                task.abort();
            }
        }
    }
}

/// What the status URL answers.
#[derive(Debug)]
pub enum ExportStatus {
    /// Still running: what it is doing (no PHI: types and counts).
    Running { progress: String },
    /// Done: the manifest.
    Completed { manifest: Value },
    /// Failed: why (no PHI).
    Failed { error: String },
}

/// One file, ready to be sent.
pub struct Download {
    pub file: FileRow,
    pub url: String,
    /// The Patients the file concerns, for the audit record of the download.
    pub patients: Vec<String>,
    /// The NDJSON content, chunk by chunk.
    pub body: BoxStream<'static, Result<Vec<u8>, std::io::Error>>,
}

impl Service {
    /// Check and plan an export for `caller`, start its job, and return the job's id.
    /// `request_url` is the kick-off URL, for the manifest.
    pub async fn export_kickoff(
        &self,
        caller: &Arc<Caller>,
        level: ExportLevel,
        pairs: &[(String, String)],
        request_url: &str,
        strict: bool,
    ) -> ApiResult<String> {
        let plan = self.plan_export(caller, level, pairs, strict)?;
        let id = uuid::Uuid::new_v4().to_string();
        let Some(running) = self
            .exports
            .reserve(&id, self.config.export.max_concurrent_jobs)
        else {
            return Err(ApiError::TooManyRequests {
                retry_after_secs: 30,
            });
        };
        let started = self
            .start_job(caller, &id, request_url, plan, running)
            .await;
        if started.is_err() {
            self.exports.release(&id);
        }
        started.map(|()| id)
    }

    /// The keyed fingerprint of who owns a job: the token's issuer, subject, client, role and
    /// organisation (a new token of the same client and user may follow its export).
    fn export_owner(&self, caller: &Caller) -> String {
        let facts = [
            caller.issuer.as_str(),
            &caller.subject,
            caller.client_id.as_deref().unwrap_or(""),
            caller.role.name(),
            caller.org.as_deref().unwrap_or(""),
        ];
        self.keys
            .current()
            .blind_token("export/owner", &facts.join("\u{1f}"), 256)
    }

    /// The job `id`, if it exists, has not expired and belongs to `caller`; a 404 otherwise, alike.
    async fn own_job(&self, caller: &Caller, id: &str) -> ApiResult<JobRow> {
        let mut conn = self.reader().await?;
        let job = rows::find_job(&mut conn, id).await?;
        let owner = self.export_owner(caller);
        match job {
            Some(job)
                if job.owner == owner && job.expires_at.is_none_or(|at| at > now_micros()) =>
            {
                Ok(job)
            }
            _ => Err(ApiError::NotFound(
                "no export job of this token at this URL (it may have expired or been deleted)"
                    .into(),
            )),
        }
    }

    pub async fn export_status(&self, caller: &Caller, id: &str) -> ApiResult<ExportStatus> {
        let job = self.own_job(caller, id).await?;
        Ok(match job.status {
            JobStatus::Running => {
                let progress = self
                    .exports
                    .get(id)
                    .map(|r| r.progress())
                    .unwrap_or_default();
                ExportStatus::Running {
                    progress: if progress.is_empty() {
                        "starting".into()
                    } else {
                        progress
                    },
                }
            }
            JobStatus::Failed => ExportStatus::Failed {
                error: job.error.unwrap_or_else(|| "the export failed".into()),
            },
            JobStatus::Completed => ExportStatus::Completed {
                manifest: self.manifest(&job).await?,
            },
        })
    }

    /// The completion manifest (<https://hl7.org/fhir/uv/bulkdata/export.html#response---complete-status>).
    async fn manifest(&self, job: &JobRow) -> ApiResult<Value> {
        let request = self.keys.open(
            &Aad::Blob {
                purpose: REQUEST_PURPOSE,
                key: &job.id,
            },
            &job.request,
        )?;
        let files = rows::files(&mut *self.reader().await?, &job.id).await?;
        let entry = |file: &FileRow| json!({"type": file.resource_type, "url": self.export_file_url(&job.id, file.file_no), "count": file.count});
        Ok(json!({
            "transactionTime": format_instant(job.transaction_time),
            "request": String::from_utf8_lossy(&request),
            "requiresAccessToken": true,
            "output": files.iter().filter(|f| !f.is_error).map(entry).collect::<Vec<_>>(),
            "error": files.iter().filter(|f| f.is_error).map(entry).collect::<Vec<_>>(),
        }))
    }

    pub fn export_status_url(&self, id: &str) -> String {
        format!("{}/$export-status/{id}", self.config.base_url)
    }

    fn export_file_url(&self, id: &str, file_no: i64) -> String {
        format!("{}/$export-file/{id}/{file_no}", self.config.base_url)
    }

    /// Cancel a running job, or delete a finished one, with its files.
    pub async fn export_cancel(&self, caller: &Caller, id: &str) -> ApiResult<()> {
        self.own_job(caller, id).await?;
        if let Some(running) = self.exports.get(id) {
            // The job stops before its next page and removes what it wrote since.
            running.cancelled.store(true, Ordering::Relaxed);
        }
        self.delete_export(id).await?;
        tracing::info!(job = id, "export job cancelled and deleted");
        Ok(())
    }

    /// File `file_no` of job `id`, as a stream of its opened chunks.
    pub async fn export_download(
        &self,
        caller: &Caller,
        id: &str,
        file_no: i64,
    ) -> ApiResult<Download> {
        let job = self.own_job(caller, id).await?;
        let missing = || ApiError::NotFound("no such file in this export".into());
        if job.status != JobStatus::Completed {
            return Err(missing());
        }
        let files = rows::files(&mut *self.reader().await?, id).await?;
        let file = files
            .into_iter()
            .find(|f| f.file_no == file_no)
            .ok_or_else(missing)?;
        let key = format!("{id}/{file_no}");
        let patients: Vec<String> = serde_json::from_slice(&self.keys.open(
            &Aad::Blob {
                purpose: PATIENTS_PURPOSE,
                key: &key,
            },
            &file.patients,
        )?)
        .map_err(|_| ApiError::Internal)?;
        let (service, job_id, chunks) = (self.clone(), id.to_string(), file.chunks);
        let body = futures::stream::try_unfold(0_i64, move |chunk_no| {
            let (service, job_id) = (service.clone(), job_id.clone());
            async move {
                if chunk_no >= chunks {
                    return Ok(None);
                }
                let content = service
                    .export_chunk(&job_id, file_no, chunk_no)
                    .await
                    .map_err(std::io::Error::other)?;
                Ok(Some((content, chunk_no + 1)))
            }
        });
        Ok(Download {
            url: self.export_file_url(id, file_no),
            file,
            patients,
            body: Box::pin(body),
        })
    }

    /// One chunk of a file, opened.
    async fn export_chunk(&self, id: &str, file_no: i64, chunk_no: i64) -> ApiResult<Vec<u8>> {
        let sealed = rows::chunk(&mut *self.reader().await?, id, file_no, chunk_no)
            .await?
            .ok_or_else(|| {
                tracing::warn!(
                    job = id,
                    file_no,
                    chunk_no,
                    "an export chunk disappeared during a download (the job was deleted)"
                );
                ApiError::NotFound("the export was deleted during the download".into())
            })?;
        Ok(self.keys.open(
            &Aad::Blob {
                purpose: CHUNK_PURPOSE,
                key: &format!("{id}/{file_no}/{chunk_no}"),
            },
            &sealed,
        )?)
    }

    /// At start-up: the jobs a stop interrupted are failed (their partial output removed), so
    /// that their clients get an answer instead of a job that never ends.
    pub async fn fail_interrupted_exports(&self) -> ApiResult<()> {
        let interrupted = rows::running_jobs(&mut *self.reader().await?).await?;
        for id in interrupted {
            tracing::warn!(job = %id, "export job interrupted by a stop of the server; marked failed");
            self.end_job(&id, Err(INTERRUPTED.to_string())).await?;
        }
        Ok(())
    }

    /// Remove the jobs that expired, with their files.
    pub async fn remove_expired_exports(&self) -> ApiResult<usize> {
        let expired = rows::expired_jobs(&mut *self.reader().await?, now_micros()).await?;
        for id in &expired {
            self.delete_export(id).await?;
            tracing::info!(job = %id, "export job expired and removed");
        }
        Ok(expired.len())
    }

    /// Remove job `id` with its files and chunks.
    async fn delete_export(&self, id: &str) -> ApiResult<()> {
        let job = id.to_string();
        self.write(move |conn| Box::pin(async move { Ok(rows::delete_job(conn, &job).await?) }))
            .await
    }

    /// Remove expired jobs every minute, until the task is aborted.
    pub fn spawn_export_sweeper(&self) -> tokio::task::JoinHandle<()> {
        let service = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SWEEP_INTERVAL);
            loop {
                tick.tick().await;
                if let Err(error) = service.remove_expired_exports().await {
                    tracing::warn!(%error, "removing expired export jobs failed; trying again later");
                }
            }
        })
    }
}

/// The Patients a set of ids is, as the sealed JSON list kept with a file.
fn patient_list(patients: &BTreeSet<String>) -> Vec<u8> {
    serde_json::to_vec(patients).unwrap_or_else(|_| b"[]".to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_jobs_are_limited() {
        let exports = Exports::default();
        assert!(exports.reserve("a", 2).is_some());
        assert!(exports.reserve("b", 2).is_some());
        assert!(exports.reserve("c", 2).is_none(), "a third job waits (429)");
        exports.release("a");
        assert!(exports.reserve("c", 2).is_some());
        assert!(exports.get("b").is_some() && exports.get("a").is_none());
    }

    #[test]
    fn levels_route_and_declare_themselves() {
        assert_eq!(
            ExportLevel::ALL.map(ExportLevel::route),
            ["/fhir/$export", "/fhir/Patient/$export"]
        );
        assert_eq!(
            ExportLevel::ALL.map(ExportLevel::resource_type),
            [None, Some("Patient")]
        );
    }
}
