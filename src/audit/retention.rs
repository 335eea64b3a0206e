//! Retention (`fhirvault audit prune`): AuditEvents recorded before a cutoff are exported to an
//! NDJSON file and then removed, without breaking the chains.
//!
//! Per chain only the prefix from the anchor is pruned, up to the first AuditEvent recorded at or
//! after the cutoff: a chain never gets a hole. The links pruned are checked on the way (a broken
//! chain is not pruned: that would destroy the evidence). The export holds each AuditEvent's
//! exact sealed plaintext, one per line, chain after chain in seq order; it is created with mode
//! 0600 and fsynced before anything is deleted.
//!
//! Then one transaction moves each chain's anchor to its last pruned link (seq and hash), removes
//! the links and the AuditEvents (every version, head and index row), and appends an AuditEvent
//! of the prune itself, naming the count and the export's SHA-256. `verify` walks from the new
//! anchors, so it still passes.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use ring::digest;

use super::chain::append;
use super::record::{AuditRecord, Event, Outcome};
use super::verify::Walk;
use crate::config::AuditConfig;
use crate::error::ApiError;
use crate::fhir::instant::{Micros, format_instant};
use crate::service::Service;
use crate::store::audit as rows;

const MICROS_PER_DAY: i64 = 86_400 * 1_000_000;

/// `now` minus the configured retention.
pub fn default_cutoff(config: &AuditConfig, now: Micros) -> Micros {
    now - i64::from(config.retention_days) * MICROS_PER_DAY
}

/// A `--before` value: an RFC 3339 instant (`2020-01-01T00:00:00Z`) or a date (`2020-01-01`,
/// midnight UTC).
pub fn parse_cutoff(text: &str) -> Result<Micros, String> {
    if let Ok(instant) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(instant.timestamp_micros());
    }
    chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|date| date.and_hms_opt(0, 0, 0))
        .map(|midnight| midnight.and_utc().timestamp_micros())
        .ok_or_else(|| format!("`{text}` is neither an instant like 2020-01-01T00:00:00Z nor a date like 2020-01-01"))
}

/// What was pruned from one chain.
#[derive(Debug, Clone)]
pub struct PrunedChain {
    pub chain: i64,
    /// The anchor before the prune.
    pub old_anchor_seq: i64,
    /// The pruned links: `old_anchor_seq + 1 ..= anchor_seq`.
    pub anchor_seq: i64,
    /// The new anchor's hash (of link `anchor_seq`).
    pub anchor_hash: Vec<u8>,
}

/// The result of [`prune`].
#[derive(Debug, Clone)]
pub struct PruneSummary {
    pub cutoff: Micros,
    pub pruned: usize,
    /// SHA-256 (hex) of the export file; `None` when nothing was old enough (no file written).
    pub export_sha256: Option<String>,
    pub chains: Vec<PrunedChain>,
    /// The AuditEvent that records the prune.
    pub event_id: Option<String>,
}

/// Export to `export_path` (a new file) and remove every AuditEvent recorded before `cutoff` that
/// starts its chain, then record the prune. Nothing is written when nothing is old enough.
pub async fn prune(
    service: &Service,
    export_path: &Path,
    cutoff: Micros,
) -> anyhow::Result<PruneSummary> {
    let keys = service.keys.current();
    let mut conn = service.reader().await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut file: Option<Export> = None;
    let mut ids = Vec::new();
    let mut chains = Vec::new();
    for head in rows::heads(&mut conn).await? {
        let mut walk = Walk::new(&head);
        let mut pruned: Option<PrunedChain> = None;
        while let Some(step) = walk.next(&mut conn, &keys).await? {
            let link = match step {
                Ok(link) => link,
                Err(broken) => bail!(
                    "chain {} is broken at seq {} ({}); nothing was pruned (see `fhirvault audit verify`)",
                    head.chain,
                    broken.seq,
                    broken.problem
                ),
            };
            let recorded = recorded(&link.plain)
                .with_context(|| format!("chain {} seq {}", head.chain, link.seq))?;
            if recorded >= cutoff {
                break;
            }
            if file.is_none() {
                file = Some(Export::create(export_path)?);
            }
            if let Some(out) = file.as_mut() {
                out.line(&link.plain)?;
            }
            ids.push(link.id);
            let chain = pruned.get_or_insert_with(|| PrunedChain {
                chain: head.chain,
                old_anchor_seq: head.anchor_seq,
                anchor_seq: head.anchor_seq,
                anchor_hash: head.anchor_hash.clone(),
            });
            chain.anchor_seq = link.seq;
            chain.anchor_hash = link.hash;
        }
        chains.extend(pruned);
    }
    drop(conn);
    let Some(file) = file else {
        return Ok(PruneSummary {
            cutoff,
            pruned: 0,
            export_sha256: None,
            chains,
            event_id: None,
        });
    };
    let export_sha256 = file.finish()?;
    let pruned = ids.len();
    let record = AuditRecord::record_management(
        Event::Prune,
        Outcome::Success,
        format!(
            "pruned {pruned} AuditEvents recorded before {}; export SHA-256 {export_sha256}",
            format_instant(cutoff)
        ),
    );
    let (this, plan) = (service.clone(), chains.clone());
    let event_id = service
        .write(move |conn| {
            Box::pin(async move {
                for chain in &plan {
                    if !rows::move_anchor(
                        conn,
                        chain.chain,
                        chain.old_anchor_seq,
                        chain.anchor_seq,
                        &chain.anchor_hash,
                    )
                    .await?
                    {
                        return Err(ApiError::Conflict(format!(
                            "chain {} was pruned by someone else meanwhile",
                            chain.chain
                        )));
                    }
                    rows::delete_links(conn, chain.chain, chain.anchor_seq).await?;
                }
                rows::purge(conn, &ids).await?;
                Ok(append(&this, conn, std::slice::from_ref(&record))
                    .await?
                    .pop())
            })
        })
        .await
        .map_err(|error| {
            anyhow::anyhow!(
                "nothing was pruned: {error} (the export file stays; delete it before trying again)"
            )
        })?;
    Ok(PruneSummary {
        cutoff,
        pruned,
        export_sha256: Some(export_sha256),
        chains,
        event_id,
    })
}

/// `AuditEvent.recorded` of a sealed plaintext.
fn recorded(plain: &[u8]) -> anyhow::Result<Micros> {
    let event: serde_json::Value =
        serde_json::from_slice(plain).context("the AuditEvent is not JSON")?;
    let text = event
        .get("recorded")
        .and_then(|r| r.as_str())
        .context("the AuditEvent has no recorded instant")?;
    Ok(chrono::DateTime::parse_from_rfc3339(text)
        .context("AuditEvent.recorded is not an instant")?
        .timestamp_micros())
}

/// The export file being written, and the SHA-256 of what was written.
struct Export {
    path: PathBuf,
    out: BufWriter<File>,
    digest: digest::Context,
}

impl Export {
    /// A new file, readable by its owner only; never an existing one.
    fn create(path: &Path) -> anyhow::Result<Export> {
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .with_context(|| {
                format!(
                    "cannot create the export file {} (it must not exist yet)",
                    path.display()
                )
            })?;
        Ok(Export {
            path: path.to_path_buf(),
            out: BufWriter::new(file),
            digest: digest::Context::new(&digest::SHA256),
        })
    }

    fn line(&mut self, plain: &[u8]) -> anyhow::Result<()> {
        for bytes in [plain, b"\n"] {
            self.out
                .write_all(bytes)
                .with_context(|| format!("writing {}", self.path.display()))?;
            self.digest.update(bytes);
        }
        Ok(())
    }

    /// Flush and fsync the file and its directory; the SHA-256 of the file, hex.
    fn finish(self) -> anyhow::Result<String> {
        let context = || format!("writing {}", self.path.display());
        let file = self
            .out
            .into_inner()
            .map_err(|e| e.into_error())
            .with_context(context)?;
        file.sync_all().with_context(context)?;
        let dir = self
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        File::open(dir)
            .and_then(|d| d.sync_all())
            .with_context(context)?;
        Ok(hex::encode(self.digest.finish()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cutoffs() {
        assert_eq!(
            parse_cutoff("2020-01-01T00:00:00Z"),
            Ok(1_577_836_800_000_000)
        );
        assert_eq!(
            parse_cutoff("2020-01-01T01:00:00+01:00"),
            Ok(1_577_836_800_000_000)
        );
        assert_eq!(parse_cutoff("2020-01-01"), Ok(1_577_836_800_000_000));
        assert!(parse_cutoff("last year").unwrap_err().contains("last year"));
        let config = AuditConfig {
            retention_days: 2,
            ..AuditConfig::default()
        };
        assert_eq!(default_cutoff(&config, 3 * MICROS_PER_DAY), MICROS_PER_DAY);
    }

    #[test]
    fn recorded_instants() {
        assert_eq!(
            recorded(br#"{"recorded":"2020-01-01T00:00:00.000001Z"}"#).unwrap(),
            1_577_836_800_000_001
        );
        assert!(recorded(br#"{"resourceType":"AuditEvent"}"#).is_err());
    }
}
