//! The audit spool: where the AuditEvents of reads wait when the database refuses them and
//! `audit.on_write_failure = "queue"`.
//!
//! One file per refused batch under `<data_dir>/audit-spool/`, named by a time-ordered UUID. Its
//! content is the batch (AuditEvent ids and bodies, as JSON) sealed with the key ring, bound to the
//! file name (`Aad::Blob` with purpose `audit-spool`): no plaintext reaches the disk, and a file
//! renamed or swapped does not open. A file is written to a temporary name, fsynced, renamed and
//! its directory fsynced before the read that caused it is answered.
//!
//! [`drain`] writes spooled batches into the chain, oldest first, and removes each file once its
//! transaction committed. The ids were chosen when the batch was spooled, so a batch written but
//! not yet removed (a crash in between) is recognised and not written twice. The server drains
//! every few seconds ([`spawn_drain`]).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::chain::{PendingEvent, append_events};
use crate::crypto::Aad;
use crate::error::{ApiError, ApiResult};
use crate::fhir::id::FhirId;
use crate::service::Service;
use crate::store::audit as rows;

/// Folder under the data directory.
pub const SPOOL_DIR: &str = "audit-spool";
/// AAD purpose of spool files.
const PURPOSE: &str = "audit-spool";
const EXTENSION: &str = "spool";
/// How often the server looks for spooled batches.
const DRAIN_INTERVAL: Duration = Duration::from_secs(5);

/// Drains in this process run one at a time (the server's task, `fhirvault` commands, tests).
static DRAINING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

impl Service {
    /// The spool folder of this server.
    pub fn audit_spool_dir(&self) -> PathBuf {
        self.config.data_dir.join(SPOOL_DIR)
    }

    /// Seal `events` into a new spool file; returns once it is durable.
    pub(super) async fn write_to_spool(&self, events: &[PendingEvent]) -> ApiResult<()> {
        let name = FhirId::generate().into_string();
        let plain = serde_json::to_vec(events).map_err(|_| ApiError::Internal)?;
        let sealed = self.keys.current().seal(
            &Aad::Blob {
                purpose: PURPOSE,
                key: &name,
            },
            &plain,
        )?;
        let dir = self.audit_spool_dir();
        let written = tokio::task::spawn_blocking(move || write_durably(&dir, &name, &sealed))
            .await
            .map_err(|_| ApiError::Internal)?;
        written.map_err(|error| {
            tracing::error!(%error, "cannot write to the audit spool");
            ApiError::Internal
        })
    }
}

/// Write `bytes` as `<dir>/<name>.spool` so that it survives a crash once this returns.
fn write_durably(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let temporary = dir.join(format!("{name}.tmp"));
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temporary)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(&temporary, dir.join(format!("{name}.{EXTENSION}")))?;
    File::open(dir)?.sync_all()
}

/// The spool files, oldest first.
fn spooled(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    files_named(dir, EXTENSION)
}

/// The files in `dir` whose extension is `extension`, in name order (time-ordered UUID names:
/// oldest first); none when `dir` does not exist.
pub(super) fn files_named(dir: &Path, extension: &str) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = match fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| path.extension().is_some_and(|e| e == extension))
            .collect(),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(error) => return Err(error),
    };
    files.sort();
    Ok(files)
}

/// Write every spooled batch into the chain and remove its file. Returns how many AuditEvents
/// were written; stops at the first batch the database refuses (the rest stay spooled). A file
/// that does not open with the key ring is left in place and reported.
pub async fn drain(service: &Service) -> ApiResult<usize> {
    let _one_at_a_time = DRAINING.lock().await;
    let dir = service.audit_spool_dir();
    let files = spooled(&dir).map_err(|error| {
        tracing::error!(%error, "cannot read the audit spool");
        ApiError::Internal
    })?;
    let mut written = 0;
    for path in files {
        let Some(events) = read_batch(service, &path) else {
            continue;
        };
        let this = service.clone();
        written += service
            .write(move |conn| Box::pin(async move { append_new(&this, conn, events).await }))
            .await?;
        let removed = fs::remove_file(&path).and_then(|()| File::open(&dir)?.sync_all());
        if let Err(error) = removed {
            // Written already: the next drain recognises the ids and only removes the file.
            tracing::warn!(%error, file = %path.display(), "spooled AuditEvents were written but the file could not be removed");
        }
    }
    if written > 0 {
        tracing::info!(
            count = written,
            "spooled AuditEvents written to the audit chain"
        );
    }
    Ok(written)
}

/// The batch in a spool file, or `None` (logged) when it cannot be read or opened.
fn read_batch(service: &Service, path: &Path) -> Option<Vec<PendingEvent>> {
    let name = path
        .file_stem()
        .and_then(|stem| stem.to_str())
        .unwrap_or_default();
    let opened = fs::read(path)
        .map_err(|error| error.to_string())
        .and_then(|sealed| {
            service
                .keys
                .open(
                    &Aad::Blob {
                        purpose: PURPOSE,
                        key: name,
                    },
                    &sealed,
                )
                .map_err(|error| error.to_string())
        })
        .and_then(|plain| {
            serde_json::from_slice(&plain).map_err(|_| "not a spooled batch".to_string())
        });
    match opened {
        Ok(events) => Some(events),
        Err(error) => {
            tracing::error!(file = %path.display(), %error, "a spool file cannot be read; it stays in the spool");
            None
        }
    }
}

/// Append the events of a batch that are not stored yet.
async fn append_new(
    service: &Service,
    conn: &mut crate::store::Conn,
    events: Vec<PendingEvent>,
) -> ApiResult<usize> {
    let ids: Vec<String> = events.iter().map(|event| event.id.clone()).collect();
    let stored: std::collections::HashSet<String> = rows::current_versions(conn, &ids)
        .await?
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let fresh: Vec<PendingEvent> = events
        .into_iter()
        .filter(|event| !stored.contains(&event.id))
        .collect();
    Ok(append_events(service, conn, fresh).await?.len())
}

/// Drain the spool now and then, until the task is aborted.
pub fn spawn_drain(service: Service) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(DRAIN_INTERVAL);
        let mut failing = false;
        loop {
            tick.tick().await;
            let waiting = spooled(&service.audit_spool_dir())
                .map(|files| !files.is_empty())
                .unwrap_or(true);
            if !waiting {
                continue;
            }
            match drain(&service).await {
                Ok(_) => failing = false,
                Err(error) if !failing => {
                    tracing::warn!(%error, "the audit spool cannot be drained yet; retrying");
                    failing = true;
                }
                Err(_) => {}
            }
        }
    })
}
