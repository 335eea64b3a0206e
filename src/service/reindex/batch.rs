//! One batch of a re-index: current versions read, and their rows computed, outside any
//! transaction ([`Service::read_reindex_page`]); then written in one transaction that first
//! checks that each head still names the version read ([`Service::commit_reindex_batch`]).
//!
//! The check is what makes re-indexing safe next to a serving server: a resource updated or
//! deleted after its version was read got its rows from that write, and must not get the rows of
//! its older content back. The heads stay locked until the commit
//! ([`versions::lock_heads`]), so a writer that comes after the check waits, and then replaces
//! the rows written here with its own.

use std::collections::HashMap;
use std::sync::Arc;

use crate::error::{ApiError, ApiResult};
use crate::search::index_rows::HeadCompartment;
use crate::store::index::{self, IndexRow};
use crate::store::versions::{self, StoredVersion};
use crate::store::{Backend, Conn};

use super::super::Service;

/// What a batch does with a head another transaction holds (PostgreSQL; SQLite has no row locks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeldHeads {
    /// Leave the resource out and name it in [`BatchOutcome::held`]. A batch then never waits
    /// while holding heads that a client's transaction may want next (a deadlock PostgreSQL
    /// would end by failing one of the two, perhaps the client).
    Skip,
    /// Wait until the other transaction ends.
    Wait,
}

/// Current versions as read, with the index rows they yield under today's rules.
#[derive(Clone)]
pub struct ReindexBatch {
    resource_type: String,
    entries: Arc<[Entry]>,
    /// The last id of the page read: the next page starts after it.
    last_id: Option<String>,
    /// Consents read whose rules cannot be computed: not in `entries`, so left as they were.
    left_alone: u64,
}

struct Entry {
    id: String,
    version: i64,
    rows: Vec<IndexRow>,
    compartment: HeadCompartment,
}

impl ReindexBatch {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The last id of the page read (`None`: the page was empty).
    pub fn last_id(&self) -> Option<&str> {
        self.last_id.as_deref()
    }

    /// Consents read whose rules cannot be computed, left out of the batch.
    pub fn left_alone(&self) -> u64 {
        self.left_alone
    }
}

/// What writing a batch (or a whole re-index of a type) did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Resources whose rows were replaced.
    pub reindexed: u64,
    /// Resources updated or deleted after their version was read: left to their own write.
    pub changed_meanwhile: u64,
    /// Index rows (Consent rules included) of the re-indexed resources before and after.
    pub rows_before: u64,
    pub rows_after: u64,
    /// Re-indexed resources whose Patient compartment changed.
    pub compartments_changed: u64,
    /// Consents whose rules cannot be computed (the log names them), left as they were: writing
    /// their other rows without their rules would stop enforcing what they say.
    pub left_alone: u64,
}

impl std::ops::AddAssign for Counts {
    fn add_assign(&mut self, other: Counts) {
        self.reindexed += other.reindexed;
        self.changed_meanwhile += other.changed_meanwhile;
        self.rows_before += other.rows_before;
        self.rows_after += other.rows_after;
        self.compartments_changed += other.compartments_changed;
        self.left_alone += other.left_alone;
    }
}

/// What [`Service::commit_reindex_batch`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    pub counts: Counts,
    /// With [`HeldHeads::Skip`]: resources not written because another transaction held their
    /// head, or because their head is gone; read them again and write them alone.
    pub held: Vec<String>,
}

impl Service {
    /// Up to `limit` live resources of `resource_type` whose ids sort after `after` (`""`: from
    /// the first), read and indexed.
    pub async fn read_reindex_page(
        &self,
        resource_type: &str,
        after: &str,
        limit: usize,
    ) -> ApiResult<ReindexBatch> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let stored =
            versions::read_current_page(&mut *self.reader().await?, resource_type, after, limit)
                .await?;
        let last_id = stored.last().map(|version| version.id.clone());
        self.batch_of(resource_type, stored, last_id).await
    }

    /// The live resources among `ids` of `resource_type`, read and indexed.
    pub async fn read_reindex_ids(
        &self,
        resource_type: &str,
        ids: &[String],
    ) -> ApiResult<ReindexBatch> {
        let stored =
            versions::read_current_many(&mut *self.reader().await?, resource_type, ids).await?;
        self.batch_of(resource_type, stored, None).await
    }

    async fn batch_of(
        &self,
        resource_type: &str,
        stored: Vec<StoredVersion>,
        last_id: Option<String>,
    ) -> ApiResult<ReindexBatch> {
        // Decrypting and extracting is CPU work: off the async workers, which may be serving.
        let this = self.clone();
        let read = stored.len();
        let entries = tokio::task::spawn_blocking(move || this.entries_of(stored))
            .await
            .map_err(|_| ApiError::Internal)??;
        Ok(ReindexBatch {
            resource_type: resource_type.to_string(),
            left_alone: (read - entries.len()) as u64,
            entries: entries.into(),
            last_id,
        })
    }

    /// The rows of each version as a write of it would compute them now
    /// ([`Service::search_rows`], and the rules of a Consent). A Consent whose rules cannot be
    /// computed is left out.
    fn entries_of(&self, stored: Vec<StoredVersion>) -> ApiResult<Vec<Entry>> {
        let keys = self.keys.current();
        let mut entries = Vec::with_capacity(stored.len());
        for version in stored {
            let opened = self.open_version(version)?;
            // Only delete markers have no body, and none is read here.
            let Some(body) = opened.resource else {
                continue;
            };
            let (mut rows, compartment) =
                self.search_rows(&keys, &opened.resource_type, &opened.id, &body);
            if opened.resource_type == "Consent" {
                // Its rules as they are (from its write, or none if it predates enforcement)
                // are safer than none: a deny would stop counting.
                let Some(rules) = self.stored_consent_rules(&opened.id, &body, opened.last_updated)
                else {
                    continue;
                };
                rows.extend(rules);
            }
            entries.push(Entry {
                id: opened.id,
                version: opened.version,
                rows,
                compartment,
            });
        }
        Ok(entries)
    }

    /// Replace the rows of the batch's resources whose head still names the version read, in one
    /// transaction. A concurrent transaction that made the database refuse it (SQLite busy past
    /// its timeout, a PostgreSQL deadlock) is [`ApiError::Unavailable`]: the same batch may be
    /// committed again.
    pub async fn commit_reindex_batch(
        &self,
        batch: &ReindexBatch,
        held: HeldHeads,
    ) -> ApiResult<BatchOutcome> {
        if batch.is_empty() {
            return Ok(BatchOutcome::default());
        }
        let batch = batch.clone();
        let backend = self.store.backend();
        self.write(move |conn| {
            Box::pin(async move {
                write_batch(conn, &batch, held)
                    .await
                    .map_err(|error| refused_or_failed(backend, error))
            })
        })
        .await
    }
}

async fn write_batch(
    conn: &mut Conn,
    batch: &ReindexBatch,
    held: HeldHeads,
) -> Result<BatchOutcome, sqlx::Error> {
    let resource_type = batch.resource_type.as_str();
    let ids: Vec<&str> = batch
        .entries
        .iter()
        .map(|entry| entry.id.as_str())
        .collect();
    let heads = versions::lock_heads(conn, resource_type, &ids, held == HeldHeads::Skip).await?;
    let heads: HashMap<&str, &versions::LockedHead> =
        heads.iter().map(|head| (head.id.as_str(), head)).collect();
    let mut outcome = BatchOutcome::default();
    let mut current = Vec::with_capacity(batch.len());
    for entry in batch.entries.iter() {
        match heads.get(entry.id.as_str()) {
            Some(head) if head.version == entry.version && !head.deleted => {
                current.push((entry, &head.compartment));
            }
            Some(_) => outcome.counts.changed_meanwhile += 1,
            None if held == HeldHeads::Skip => outcome.held.push(entry.id.clone()),
            None => outcome.counts.changed_meanwhile += 1,
        }
    }
    let current_ids: Vec<&str> = current.iter().map(|(entry, _)| entry.id.as_str()).collect();
    let rows: Vec<(&str, &str, &[IndexRow])> = current
        .iter()
        .map(|(entry, _)| (resource_type, entry.id.as_str(), entry.rows.as_slice()))
        .collect();
    outcome.counts.rows_before = index::delete_rows_of(conn, resource_type, &current_ids).await?;
    outcome.counts.rows_after = index::insert_rows(conn, &rows).await?;
    for (entry, stored) in &current {
        // `complete` is derived from the rows just replaced, so it is set with them: a head whose
        // flag said "no other Patient" while its new rows name one would answer the clinician's
        // rule from the wrong Patient.
        if **stored != entry.compartment {
            versions::set_compartment(conn, resource_type, &entry.id, &entry.compartment).await?;
        }
        if stored.patient != entry.compartment.patient {
            outcome.counts.compartments_changed += 1;
        }
    }
    outcome.counts.reindexed = current.len() as u64;
    Ok(outcome)
}

/// A refusal because of a concurrent transaction becomes [`ApiError::Unavailable`] (try again);
/// anything else fails as usual.
fn refused_or_failed(backend: Backend, error: sqlx::Error) -> ApiError {
    if backend.is_transient(&error) {
        ApiError::Unavailable("a concurrent transaction held rows a re-index batch needed".into())
    } else {
        error.into()
    }
}
