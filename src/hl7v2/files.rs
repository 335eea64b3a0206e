//! `fhirvault ingest FILE…` and `fhirvault hl7 dead-letters …`: the same ingestion as MLLP, from
//! message and batch files (FHS/BHS … BTS/FTS), and the operator's view of the dead letters.

use std::path::Path;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};

use super::er7::split_batch;
use super::ingest::{Disposition, Ingestor};
use crate::fhir::instant::format_instant;
use crate::store::hl7v2 as rows;

/// How the messages of some files fared.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct IngestSummary {
    pub stored: u64,
    pub duplicates: u64,
    /// Answered AE or AR; kept as dead letters.
    pub rejected: u64,
}

/// Ingest every message of `file` (a single message, several, or a batch file).
pub async fn ingest_file(
    ingestor: &Ingestor,
    file: &Path,
    summary: &mut IngestSummary,
) -> anyhow::Result<()> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let messages = split_batch(&bytes)
        .map_err(|e| anyhow::anyhow!("{}: {} ({})", file.display(), e.message, e.location))?;
    let progress = ProgressBar::new(messages.len() as u64);
    progress.set_style(
        ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} ({per_sec}, eta {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    progress.set_message(file.display().to_string());
    for (index, message) in messages.iter().enumerate() {
        let answer = ingestor.ingest(message).await;
        match answer.disposition {
            Disposition::Stored => summary.stored += 1,
            Disposition::Duplicate => summary.duplicates += 1,
            Disposition::DeadLettered | Disposition::Rejected => {
                summary.rejected += 1;
                let reason = answer
                    .frames
                    .iter()
                    .flat_map(|f| err_texts(f))
                    .collect::<Vec<_>>()
                    .join("; ");
                let letter = answer.dead_letter.as_deref().unwrap_or("-");
                progress.suspend(|| {
                    eprintln!(
                        "{}: message {}: not stored (dead letter {letter}): {reason}",
                        file.display(),
                        index + 1
                    )
                });
            }
            Disposition::Unavailable => {
                progress.finish_and_clear();
                anyhow::bail!(
                    "{}: message {}: the database is unavailable; nothing after it was ingested",
                    file.display(),
                    index + 1
                );
            }
        }
        progress.inc(1);
    }
    progress.finish_and_clear();
    Ok(())
}

/// The ERR-8 texts of an ACK (never PHI by construction).
fn err_texts(ack: &str) -> Vec<String> {
    super::er7::Message::parse(ack.as_bytes())
        .map(|m| {
            m.segments()
                .iter()
                .filter(|s| s.name() == "ERR")
                .map(|s| format!("{} {}", s.get(3, 0, 1, 1), s.text(8)))
                .collect()
        })
        .unwrap_or_default()
}

/// Lines describing the dead letters (id, first and last seen, attempts, code, reason).
pub async fn dead_letter_lines(
    ingestor: &Ingestor,
    include_resolved: bool,
) -> anyhow::Result<Vec<String>> {
    let mut conn = ingestor
        .service()
        .reader()
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let letters = rows::list_dead_letters(&mut conn, include_resolved).await?;
    Ok(letters
        .iter()
        .map(|l| {
            let state = match l.resolved_at {
                Some(at) => format!("resolved {}", format_instant(at)),
                None => "open".to_string(),
            };
            format!(
                "{}  first {}  last {}  attempts {}  {}  ERR {}: {}",
                l.id,
                format_instant(l.first_seen),
                format_instant(l.last_seen),
                l.attempts,
                state,
                l.error_code,
                l.reason
            )
        })
        .collect())
}
