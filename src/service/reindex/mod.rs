//! Re-indexing (`fhirvault reindex`): the search index rows, the Patient compartment and, for
//! Consents, the consent rules of every live resource's current version, computed again as a
//! write computes them now. Index rows are otherwise written only when a resource is written, so
//! after an upgrade that changed the indexing rules (new rows such as `:of-type` tokens, implied
//! code systems) resources stored before it would get the new rows only on their next write.
//!
//! Type by type, in pages of [`BATCH_SIZE`] by id, one transaction each ([`batch`]); safe while
//! a server writes to the same database. Rows come from the same code as a write's
//! ([`Service::search_rows`]): blind tokens for PHI, never plaintext. Running it twice gives the
//! same rows.
//!
//! Not audited: like `keys rotate`, it changes no resource and shows nothing of one; it only
//! derives again what the server derives from each write (docs/audit.md).

mod batch;

use std::time::{Duration, Instant};

use crate::error::{ApiError, ApiResult};
use crate::store::versions;

use super::Service;
pub use batch::{BatchOutcome, Counts, HeldHeads, ReindexBatch};

/// Resources per transaction.
pub const BATCH_SIZE: usize = 500;

/// Attempts at a batch the database refused because of a concurrent transaction.
const ATTEMPTS: u32 = 5;

/// What a re-index did, type by type.
#[derive(Debug, Clone, Default)]
pub struct ReindexSummary {
    pub types: Vec<(String, Counts)>,
    pub elapsed: Duration,
}

impl ReindexSummary {
    /// All types together.
    pub fn total(&self) -> Counts {
        let mut total = Counts::default();
        for (_, counts) in &self.types {
            total += *counts;
        }
        total
    }

    /// The summary as printed: a line per type, then the total and the rate (counts only).
    pub fn lines(&self) -> Vec<String> {
        let mut lines: Vec<String> = self
            .types
            .iter()
            .map(|(resource_type, counts)| {
                let mut line = format!(
                    "{resource_type}: {} re-indexed, {} changed meanwhile (indexed by their own write), index rows {} -> {}, {} compartments changed",
                    counts.reindexed,
                    counts.changed_meanwhile,
                    counts.rows_before,
                    counts.rows_after,
                    counts.compartments_changed
                );
                if counts.left_alone > 0 {
                    line.push_str(&format!(
                        ", {} left as they were (their rules cannot be computed: see the log)",
                        counts.left_alone
                    ));
                }
                line
            })
            .collect();
        let total = self.total();
        let seconds = self.elapsed.as_secs_f64();
        lines.push(format!(
            "total: {} resources re-indexed in {seconds:.2} s ({:.0} per second), index rows {} -> {}",
            total.reindexed,
            total.reindexed as f64 / seconds.max(1e-3),
            total.rows_before,
            total.rows_after
        ));
        lines
    }
}

impl Service {
    /// The types to re-index and how many live resources each has now: those in `only` (each
    /// checked to be a type this server serves), else every type that has live resources.
    pub async fn reindex_plan(&self, only: &[String]) -> ApiResult<Vec<(String, u64)>> {
        let live = versions::live_counts(&mut *self.reader().await?).await?;
        let count_of = |resource_type: &str| {
            live.iter()
                .find(|(t, _)| t == resource_type)
                .map_or(0, |(_, n)| u64::try_from(*n).unwrap_or(0))
        };
        if only.is_empty() {
            return Ok(live.iter().map(|(t, _)| (t.clone(), count_of(t))).collect());
        }
        let mut plan: Vec<(String, u64)> = Vec::with_capacity(only.len());
        for resource_type in only {
            self.check_type(resource_type)?;
            if !plan.iter().any(|(t, _)| t == resource_type) {
                plan.push((resource_type.clone(), count_of(resource_type)));
            }
        }
        Ok(plan)
    }

    /// Re-index every live resource of `types`, in the order given; `progress` hears how many
    /// resources each batch covered.
    pub async fn reindex(
        &self,
        types: &[String],
        mut progress: impl FnMut(u64),
    ) -> ApiResult<ReindexSummary> {
        let started = Instant::now();
        let mut summary = ReindexSummary::default();
        for resource_type in types {
            self.check_type(resource_type)?;
            let counts = self.reindex_type(resource_type, &mut progress).await?;
            tracing::debug!(
                resource_type = %resource_type,
                reindexed = counts.reindexed,
                changed_meanwhile = counts.changed_meanwhile,
                rows_before = counts.rows_before,
                rows_after = counts.rows_after,
                "re-indexed"
            );
            summary.types.push((resource_type.clone(), counts));
        }
        summary.elapsed = started.elapsed();
        Ok(summary)
    }

    async fn reindex_type(
        &self,
        resource_type: &str,
        progress: &mut impl FnMut(u64),
    ) -> ApiResult<Counts> {
        let mut counts = Counts::default();
        let mut after = String::new();
        loop {
            let batch = self
                .read_reindex_page(resource_type, &after, BATCH_SIZE)
                .await?;
            let Some(last) = batch.last_id() else {
                return Ok(counts);
            };
            after = last.to_string();
            counts.left_alone += batch.left_alone();
            let outcome = self.commit_retrying(&batch, HeldHeads::Skip).await?;
            counts += outcome.counts;
            // Each alone, waiting for its head: holding only that one, the wait cannot deadlock.
            for id in outcome.held {
                let single = self
                    .read_reindex_ids(resource_type, std::slice::from_ref(&id))
                    .await?;
                counts.left_alone += single.left_alone();
                if single.is_empty() && single.left_alone() == 0 {
                    counts.changed_meanwhile += 1; // deleted meanwhile
                }
                counts += self.commit_retrying(&single, HeldHeads::Wait).await?.counts;
            }
            progress(batch.len() as u64 + batch.left_alone());
        }
    }

    /// [`Service::commit_reindex_batch`], again after a pause while the database refuses it
    /// because of a concurrent transaction. The batch need not be read again: the version check
    /// inside the commit leaves out whatever changed in between.
    pub(in crate::service) async fn commit_retrying(
        &self,
        batch: &ReindexBatch,
        held: HeldHeads,
    ) -> ApiResult<BatchOutcome> {
        let mut attempt = 1;
        loop {
            match self.commit_reindex_batch(batch, held).await {
                Err(ApiError::Unavailable(why)) if attempt < ATTEMPTS => {
                    tracing::info!(attempt, %why, "re-index batch refused; trying again");
                    tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }
}
