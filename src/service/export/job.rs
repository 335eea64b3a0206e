//! The background job of an export: for each type, page through its search (keyset cursor, as
//! page links do), write the matches as NDJSON lines into sealed chunks of about
//! [`CHUNK_BYTES`], start a new file every `export.max_resources_per_file` resources, and note
//! the Patients each file concerns for the audit record of its download. At most one page and
//! one chunk are in memory at a time.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::Value;

use super::plan::ExportPlan;
use super::{CHUNK_PURPOSE, PATIENTS_PURPOSE, REQUEST_PURPOSE, Running, patient_list};
use crate::auth::Caller;
use crate::crypto::Aad;
use crate::error::{ApiError, ApiResult};
use crate::fhir::instant::now_micros;
use crate::fhir::outcome::operation_outcome;
use crate::search::cursor::{Cursor, Direction};
use crate::service::Service;
use crate::store::export::{self as rows, FileRow, JobStatus};

/// Plain NDJSON gathered before a chunk is sealed and written.
pub const CHUNK_BYTES: usize = 1024 * 1024;

/// Why a job stopped early.
enum Stop {
    /// Its owner deleted it.
    Cancelled,
    Failed(ApiError),
}

impl From<ApiError> for Stop {
    fn from(error: ApiError) -> Self {
        Stop::Failed(error)
    }
}

impl Service {
    /// Record job `id` and start it in the background.
    pub(super) async fn start_job(
        &self,
        caller: &Arc<Caller>,
        id: &str,
        request_url: &str,
        plan: ExportPlan,
        running: Arc<Running>,
    ) -> ApiResult<()> {
        let owner = self.export_owner(caller);
        let request = self.keys.current().seal(
            &Aad::Blob {
                purpose: REQUEST_PURPOSE,
                key: id,
            },
            request_url.as_bytes(),
        )?;
        // Every version stamped before it is committed, so a next export `_since` it misses
        // nothing that commits later ([`crate::service::write_clock`]).
        let (job, transaction_time) = (id.to_string(), self.clock.complete_before());
        self.write(move |conn| {
            Box::pin(async move {
                Ok(rows::insert_job(conn, &job, &owner, &request, transaction_time).await?)
            })
        })
        .await?;
        let (service, job) = (self.clone(), id.to_string());
        let handle = running.clone();
        let task = tokio::spawn(async move {
            let types = plan.searches.len();
            tracing::info!(job = %job, types, "export job started");
            let result = match service.run_job(&job, plan, &handle).await {
                Ok(()) => Ok(()),
                Err(Stop::Cancelled) => {
                    // Deleted meanwhile: remove what was written after the delete.
                    if let Err(error) = service.delete_export(&job).await {
                        tracing::warn!(job = %job, %error, "removing a cancelled export's output failed; it expires with the job");
                    }
                    service.exports.release(&job);
                    return;
                }
                Err(Stop::Failed(error)) => {
                    tracing::error!(job = %job, %error, "export job failed");
                    Err(format!("the export failed: {error}"))
                }
            };
            if let Err(error) = service.end_job(&job, result).await {
                tracing::error!(job = %job, %error, "an export job's end could not be recorded");
            }
            service.exports.release(&job);
        });
        *running.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(task.abort_handle());
        Ok(())
    }

    /// Record how job `id` ended: completed, or failed with a message (its output removed).
    /// A job that is no longer running (deleted meanwhile) loses what it wrote.
    pub(super) async fn end_job(&self, id: &str, result: Result<(), String>) -> ApiResult<()> {
        let job = id.to_string();
        let now = now_micros();
        let expires = now.saturating_add(
            i64::try_from(self.config.export.expire_after.as_micros()).unwrap_or(i64::MAX),
        );
        let ended = self
            .write(move |conn| {
                Box::pin(async move {
                    let (status, error) = match &result {
                        Ok(()) => (JobStatus::Completed, None),
                        Err(error) => {
                            rows::delete_output(conn, &job).await?;
                            (JobStatus::Failed, Some(error.as_str()))
                        }
                    };
                    let ended = rows::finish_job(conn, &job, status, error, now, expires).await?;
                    if !ended {
                        rows::delete_output(conn, &job).await?;
                    }
                    Ok(ended)
                })
            })
            .await?;
        if ended {
            tracing::info!(job = id, "export job ended");
        }
        Ok(())
    }

    /// Page through every search of `plan`, writing files as they fill.
    async fn run_job(&self, id: &str, plan: ExportPlan, running: &Running) -> Result<(), Stop> {
        let types = plan.searches.len();
        let mut files = FileNumbers::default();
        let mut written = 0_u64;
        for (n, mut request) in plan.searches.into_iter().enumerate() {
            let resource_type = request.resource_type.clone();
            let mut file: Option<FileWriter> = None;
            loop {
                if running.is_cancelled() {
                    return Err(Stop::Cancelled);
                }
                running.set_progress(format!(
                    "exporting {resource_type} (type {} of {types}), {written} resources written",
                    n + 1
                ));
                let page = self.search(request).await?;
                for matched in &page.matches {
                    let Some(resource) = &matched.resource else {
                        continue;
                    };
                    let writer = file.get_or_insert_with(|| {
                        FileWriter::new(id, &resource_type, files.next(), false)
                    });
                    writer.push(self, resource).await?;
                    written += 1;
                    if writer.count >= self.config.export.max_resources_per_file as i64
                        && let Some(full) = file.take()
                    {
                        full.finish(self).await?;
                    }
                }
                request = page.request;
                match (page.has_next, page.last_row) {
                    (true, Some(values)) => {
                        request.cursor = Some(Cursor {
                            direction: Direction::After,
                            values,
                            owner: request.owner.clone(),
                            total: None,
                        })
                    }
                    _ => break,
                }
            }
            if let Some(last) = file {
                last.finish(self).await?;
            }
        }
        if !plan.warnings.is_empty() {
            let mut errors = FileWriter::new(id, "OperationOutcome", files.next(), true);
            errors
                .push(self, &operation_outcome(&plan.warnings))
                .await?;
            errors.finish(self).await?;
        }
        if running.is_cancelled() {
            return Err(Stop::Cancelled);
        }
        tracing::info!(
            job = id,
            types,
            resources = written,
            files = files.0,
            "export job wrote its files"
        );
        Ok(())
    }
}

/// Files are numbered 0, 1, … across a job, in manifest order.
#[derive(Default)]
struct FileNumbers(i64);

impl FileNumbers {
    fn next(&mut self) -> i64 {
        self.0 += 1;
        self.0 - 1
    }
}

/// One file being written: its current chunk and the Patients its lines concern.
struct FileWriter {
    job: String,
    row: FileRow,
    count: i64,
    buffer: Vec<u8>,
    patients: BTreeSet<String>,
}

impl FileWriter {
    fn new(job: &str, resource_type: &str, file_no: i64, is_error: bool) -> FileWriter {
        let row = FileRow {
            file_no,
            resource_type: resource_type.to_string(),
            is_error,
            count: 0,
            chunks: 0,
            patients: Vec::new(),
        };
        FileWriter {
            job: job.to_string(),
            row,
            count: 0,
            buffer: Vec::with_capacity(CHUNK_BYTES + CHUNK_BYTES / 8),
            patients: BTreeSet::new(),
        }
    }

    /// Add one line; a full chunk is sealed and written.
    async fn push(&mut self, service: &Service, resource: &Value) -> ApiResult<()> {
        serde_json::to_writer(&mut self.buffer, resource).map_err(|error| {
            tracing::error!(job = %self.job, %error, "a resource could not be written as JSON");
            ApiError::Internal
        })?;
        self.buffer.push(b'\n');
        self.count += 1;
        let resource_type = resource
            .get("resourceType")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let id = resource
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default();
        service.add_patients(&mut self.patients, resource_type, id, Some(resource));
        if self.buffer.len() >= CHUNK_BYTES {
            self.flush(service).await?;
        }
        Ok(())
    }

    async fn flush(&mut self, service: &Service) -> ApiResult<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let (file_no, chunk_no) = (self.row.file_no, self.row.chunks);
        let keys = service.keys.current();
        let sealed = keys.seal(
            &Aad::Blob {
                purpose: CHUNK_PURPOSE,
                key: &format!("{}/{file_no}/{chunk_no}", self.job),
            },
            &self.buffer,
        )?;
        self.buffer.clear();
        let (job, key_id) = (self.job.clone(), i64::from(keys.active_key_id()));
        service
            .write(move |conn| {
                Box::pin(async move {
                    Ok(rows::insert_chunk(conn, &job, file_no, chunk_no, key_id, &sealed).await?)
                })
            })
            .await?;
        self.row.chunks += 1;
        Ok(())
    }

    /// Write the last chunk and the file's row.
    async fn finish(mut self, service: &Service) -> ApiResult<()> {
        self.flush(service).await?;
        let aad = Aad::Blob {
            purpose: PATIENTS_PURPOSE,
            key: &format!("{}/{}", self.job, self.row.file_no),
        };
        self.row.patients = service
            .keys
            .current()
            .seal(&aad, &patient_list(&self.patients))?;
        self.row.count = self.count;
        let (job, row) = (self.job, self.row);
        service
            .write(move |conn| {
                Box::pin(async move { Ok(rows::insert_file(conn, &job, &row).await?) })
            })
            .await
    }
}
