//! Appending AuditEvents to hash chains.
//!
//! An AuditEvent is an ordinary resource, written through the one write path (sealed, indexed,
//! versioned). In the same transaction it becomes the next link of one of several chains:
//!
//! ```text
//! hash(seq) = SHA-256( hash(seq - 1) | chain (i64 BE) | seq (i64 BE) | len(id) (u32 BE) | id | plaintext )
//! ```
//!
//! where `plaintext` is the exact JSON that was sealed into version 1 of the AuditEvent. The
//! plaintext, not the ciphertext: `fhirvault keys rotate` re-seals bodies under a new key, and the
//! chain must stay valid through that. The first link of a chain follows its anchor (seq 0 and
//! the zero hash, until pruning moves it; see [`super::retention`]).
//!
//! Why several chains: appending reads and moves a chain's head, so on PostgreSQL each appending
//! transaction holds that head's row lock until it commits. With `audit.chains` heads, that many
//! transactions append at once; a transaction takes any head nobody holds (`SKIP LOCKED`). On
//! SQLite the single writer serialises everything anyway and chains are taken in turn.
//!
//! Append once per transaction, late (just before it commits): the head stays locked from the
//! append to the commit, and a transaction that appends twice may wait for a second head while
//! holding the first.

use std::sync::atomic::{AtomicU64, Ordering};

use ring::digest;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::record::AuditRecord;
use crate::config::OnWriteFailure;
use crate::error::{ApiError, ApiResult};
use crate::fhir::id::FhirId;
use crate::service::Service;
use crate::store::audit::{self as rows, AUDIT_EVENT, ChainHead, Link};
use crate::store::write::{VersionWrite, write_versions};
use crate::store::{Backend, Conn};

/// The hash before the first link of a chain that was never pruned.
pub const ZERO_HASH: [u8; 32] = [0; 32];

/// The hash of link `seq` of `chain` for AuditEvent `id` whose sealed plaintext is `plain`,
/// following the link (or anchor) whose hash is `previous`.
pub fn link_hash(previous: &[u8], chain: i64, seq: i64, id: &str, plain: &[u8]) -> [u8; 32] {
    let mut context = digest::Context::new(&digest::SHA256);
    context.update(previous);
    context.update(&chain.to_be_bytes());
    context.update(&seq.to_be_bytes());
    context.update(&u32::try_from(id.len()).unwrap_or(u32::MAX).to_be_bytes());
    context.update(id.as_bytes());
    context.update(plain);
    let mut hash = [0; 32];
    hash.copy_from_slice(context.finish().as_ref());
    hash
}

/// An AuditEvent with its id, not yet written (also what the spool holds).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct PendingEvent {
    pub id: String,
    pub body: Value,
}

impl PendingEvent {
    fn new(record: &AuditRecord, base_url: &str) -> PendingEvent {
        PendingEvent {
            id: FhirId::generate().into_string(),
            body: record.to_audit_event(base_url),
        }
    }
}

/// Write `records` as new AuditEvents and link them into a chain, inside the caller's
/// transaction, so that they commit (or roll back) with whatever else it writes. Returns the
/// AuditEvent ids, in order.
pub async fn append(
    service: &Service,
    conn: &mut Conn,
    records: &[AuditRecord],
) -> ApiResult<Vec<String>> {
    let events = records
        .iter()
        .map(|record| PendingEvent::new(record, &service.config.base_url))
        .collect();
    append_events(service, conn, events).await
}

/// Write and link AuditEvents whose ids are already chosen.
pub(super) async fn append_events(
    service: &Service,
    conn: &mut Conn,
    events: Vec<PendingEvent>,
) -> ApiResult<Vec<String>> {
    let sealed = seal_events(service, events)?;
    let ids = sealed.iter().map(|s| s.write.id.clone()).collect();
    write_versions(
        conn,
        &sealed.iter().map(|s| s.write.clone()).collect::<Vec<_>>(),
    )
    .await?;
    link(conn, service.config.audit.chains, &sealed).await?;
    Ok(ids)
}

/// An AuditEvent sealed and indexed, ready to be written and linked: everything that needs no
/// database, so that it can be done off the writer ([`crate::service::group_commit`]).
#[derive(Debug, Clone)]
pub struct SealedEvent {
    pub write: VersionWrite,
    /// The exact bytes sealed into `write`, which the link hashes.
    plain: Vec<u8>,
}

/// Seal and index the AuditEvents of `records`.
pub fn seal(service: &Service, records: &[AuditRecord]) -> ApiResult<Vec<SealedEvent>> {
    seal_events(
        service,
        records
            .iter()
            .map(|record| PendingEvent::new(record, &service.config.base_url))
            .collect(),
    )
}

pub(super) fn seal_events(
    service: &Service,
    events: Vec<PendingEvent>,
) -> ApiResult<Vec<SealedEvent>> {
    if !service.config.audit.enabled {
        return Ok(Vec::new());
    }
    let mut sealed = Vec::with_capacity(events.len());
    for event in events {
        let prepared =
            service.seal_version(AUDIT_EVENT, &event.id, event.body, None, "POST", None)?;
        sealed.push(SealedEvent {
            write: prepared.write,
            plain: prepared.plain,
        });
    }
    Ok(sealed)
}

/// Write `writes` and the AuditEvents `sealed` (sealed off the writer by [`seal`]) in one go,
/// one multi-row INSERT per table for both, and link the AuditEvents into one of `chains`
/// chains: for changes whose records were prepared with them. Call it last in the transaction,
/// as [`link`].
pub async fn write_with_events(
    conn: &mut Conn,
    chains: u32,
    writes: &[VersionWrite],
    sealed: &[SealedEvent],
) -> ApiResult<()> {
    let all: Vec<VersionWrite> = writes
        .iter()
        .chain(sealed.iter().map(|event| &event.write))
        .cloned()
        .collect();
    write_versions(conn, &all).await?;
    link(conn, chains, sealed).await
}

/// Link AuditEvents whose versions this transaction wrote into one of `chains` chains. Call it
/// last in the transaction: on PostgreSQL the chain's head stays locked until the commit.
pub async fn link(conn: &mut Conn, chains: u32, sealed: &[SealedEvent]) -> ApiResult<()> {
    if sealed.is_empty() {
        return Ok(());
    }
    let head = take_head(conn, chains).await?;
    let (mut seq, mut previous) = (head.seq, head.hash);
    let mut links = Vec::with_capacity(sealed.len());
    for event in sealed {
        seq += 1;
        let hash = link_hash(&previous, head.chain, seq, &event.write.id, &event.plain).to_vec();
        links.push(Link {
            chain: head.chain,
            seq,
            id: event.write.id.clone(),
            hash: hash.clone(),
        });
        previous = hash;
    }
    rows::insert_links(conn, &links).await?;
    rows::set_head(conn, head.chain, seq, &previous).await?;
    Ok(())
}

/// Create the heads of the configured chains that do not exist yet (at start-up, so that a
/// raised `audit.chains` takes effect at once; appending also creates them on first use).
pub async fn ensure_chains(store: &crate::store::Store, chains: u32) -> ApiResult<()> {
    let mut tx = store.begin().await?;
    rows::ensure_heads(&mut tx, chains, &ZERO_HASH).await?;
    tx.commit().await?;
    Ok(())
}

/// Chains are taken in turn where a choice is not made by the database.
static NEXT_CHAIN: AtomicU64 = AtomicU64::new(0);

/// A chain head to append to, locked for this transaction on PostgreSQL. Heads are created on
/// first use.
async fn take_head(conn: &mut Conn, chains: u32) -> ApiResult<ChainHead> {
    let backend = Backend::of(conn);
    for attempt in 0..2 {
        if backend == Backend::Postgres
            && let Some(head) = rows::lock_free_head(conn, chains).await?
        {
            return Ok(head);
        }
        // SQLite, or every PostgreSQL head is held by another transaction: wait for one in turn.
        let chain = NEXT_CHAIN.fetch_add(1, Ordering::Relaxed) % u64::from(chains);
        if let Some(head) = rows::lock_head(conn, chain as i64).await? {
            return Ok(head);
        }
        if attempt == 0 {
            rows::ensure_heads(conn, chains, &ZERO_HASH).await?;
        }
    }
    tracing::error!("audit chain heads are missing after creating them");
    Err(ApiError::Internal)
}

impl Service {
    /// Record `records` (the AuditEvents of a read) and return once they are durable: appended to
    /// the read journal when the server runs one ([`super::journal`]), otherwise in a
    /// transaction of their own, batched by the group committer with other AuditEvents and plain
    /// creates. When they cannot be written the error comes back, so the read fails too, unless
    /// `audit.on_write_failure = "queue"`: then they go to the sealed spool ([`super::spool`])
    /// and are written later.
    pub async fn audit(&self, records: Vec<AuditRecord>) -> ApiResult<()> {
        if records.is_empty() || !self.config.audit.enabled {
            return Ok(());
        }
        let events: Vec<PendingEvent> = records
            .iter()
            .map(|record| PendingEvent::new(record, &self.config.base_url))
            .collect();
        let events = match self.journal_read(events).await {
            Ok(()) => return Ok(()),
            Err(events) => events,
        };
        let spare =
            (self.config.audit.on_write_failure == OnWriteFailure::Queue).then(|| events.clone());
        let this = self.clone();
        // Batched with other audit records and plain creates: one multi-row insert per table.
        let open = self.clock.open();
        let written = match seal_events(&this, events) {
            Ok(sealed) => self.committer.create(open, Vec::new(), sealed).await,
            Err(error) => Err(error),
        };
        match (written, spare) {
            (Err(error), Some(events)) => match self.write_to_spool(&events).await {
                Ok(()) => {
                    tracing::warn!(%error, count = events.len(), "AuditEvents could not be written; queued in the audit spool");
                    Ok(())
                }
                Err(spool_error) => {
                    tracing::error!(%error, %spool_error, "AuditEvents could be neither written nor queued");
                    Err(error)
                }
            },
            (written, _) => written,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_hashes_cover_every_input() {
        let base = link_hash(&ZERO_HASH, 1, 1, "a", b"{}");
        assert_eq!(
            base,
            link_hash(&ZERO_HASH, 1, 1, "a", b"{}"),
            "deterministic"
        );
        let mut other_previous = ZERO_HASH;
        other_previous[31] = 1;
        for changed in [
            link_hash(&other_previous, 1, 1, "a", b"{}"),
            link_hash(&ZERO_HASH, 2, 1, "a", b"{}"),
            link_hash(&ZERO_HASH, 1, 2, "a", b"{}"),
            link_hash(&ZERO_HASH, 1, 1, "b", b"{}"),
            link_hash(&ZERO_HASH, 1, 1, "a", b"{ }"),
            // The id is length-prefixed: moving a byte between id and body changes the hash.
            link_hash(&ZERO_HASH, 1, 1, "a{", b"}"),
        ] {
            assert_ne!(base, changed);
        }
    }

    #[test]
    fn link_hash_is_sha256_of_the_documented_layout() {
        let mut input = Vec::new();
        input.extend_from_slice(&[7; 32]);
        input.extend_from_slice(&3_i64.to_be_bytes());
        input.extend_from_slice(&42_i64.to_be_bytes());
        input.extend_from_slice(&2_u32.to_be_bytes());
        input.extend_from_slice(b"id");
        input.extend_from_slice(br#"{"resourceType":"AuditEvent"}"#);
        let expected = digest::digest(&digest::SHA256, &input);
        assert_eq!(
            link_hash(&[7; 32], 3, 42, "id", br#"{"resourceType":"AuditEvent"}"#).as_slice(),
            expected.as_ref()
        );
    }
}
