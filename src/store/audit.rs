//! The audit hash chains (`audit_chain`, `audit_chain_heads`) and the bulk removal of pruned
//! AuditEvents. What the hashes mean is `crate::audit`'s business; here they are bytes.

// Dynamic SQL here is assembled from fixed fragments and placeholders only; every value is bound.
use sqlx::AssertSqlSafe;
use sqlx::Row;

use super::index::{TABLES, fixed_chunks};
use super::write::placeholders;
use super::{Backend, Bind, Conn, bind_all};

/// The resource type the chains link.
pub const AUDIT_EVENT: &str = "AuditEvent";

/// The state of one chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainHead {
    pub chain: i64,
    /// The last link (the anchor's seq while the chain has no links).
    pub seq: i64,
    pub hash: Vec<u8>,
    /// Where the chain starts: its first link is `anchor_seq + 1`, chained to `anchor_hash`.
    pub anchor_seq: i64,
    pub anchor_hash: Vec<u8>,
}

/// One link: AuditEvent `id` is number `seq` of `chain`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub chain: i64,
    pub seq: i64,
    pub id: String,
    pub hash: Vec<u8>,
}

const HEAD_COLUMNS: &str = "chain, seq, hash, anchor_seq, anchor_hash";

fn chain_head(row: &sqlx::any::AnyRow) -> Result<ChainHead, sqlx::Error> {
    Ok(ChainHead {
        chain: row.try_get(0)?,
        seq: row.try_get(1)?,
        hash: row.try_get(2)?,
        anchor_seq: row.try_get(3)?,
        anchor_hash: row.try_get(4)?,
    })
}

/// Create the heads of chains `0..chains` that do not exist yet, each at seq 0 with `zero` as its
/// hash and anchor.
pub async fn ensure_heads(conn: &mut Conn, chains: u32, zero: &[u8]) -> Result<(), sqlx::Error> {
    let mut binds = Vec::with_capacity(chains as usize * 5);
    for chain in 0..chains {
        binds.extend([
            Bind::Int(i64::from(chain)),
            Bind::Int(0),
            Bind::Blob(zero.to_vec()),
            Bind::Int(0),
            Bind::Blob(zero.to_vec()),
        ]);
    }
    let sql = format!(
        "INSERT INTO audit_chain_heads ({HEAD_COLUMNS}) VALUES {} ON CONFLICT (chain) DO NOTHING",
        placeholders(Backend::of(conn), chains as usize, 5)
    );
    bind_all(sqlx::query(AssertSqlSafe(sql)), binds)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// The head of `chain`; on PostgreSQL locked until the transaction ends.
pub async fn lock_head(conn: &mut Conn, chain: i64) -> Result<Option<ChainHead>, sqlx::Error> {
    let lock = Backend::of(conn).for_update();
    let sql = format!("SELECT {HEAD_COLUMNS} FROM audit_chain_heads WHERE chain = $1{lock}");
    let row = sqlx::query(AssertSqlSafe(sql))
        .bind(chain)
        .fetch_optional(&mut *conn)
        .await?;
    row.as_ref().map(chain_head).transpose()
}

/// PostgreSQL: the head of a random chain among `0..chains` that no other transaction holds,
/// locked; `None` when every one is taken (or none exists yet).
pub async fn lock_free_head(
    conn: &mut Conn,
    chains: u32,
) -> Result<Option<ChainHead>, sqlx::Error> {
    let sql = format!(
        "SELECT {HEAD_COLUMNS} FROM audit_chain_heads WHERE chain < $1 ORDER BY random() LIMIT 1 FOR UPDATE SKIP LOCKED"
    );
    let row = sqlx::query(AssertSqlSafe(sql))
        .bind(i64::from(chains))
        .fetch_optional(&mut *conn)
        .await?;
    row.as_ref().map(chain_head).transpose()
}

/// Every chain's head, by chain.
pub async fn heads(conn: &mut Conn) -> Result<Vec<ChainHead>, sqlx::Error> {
    let sql = format!("SELECT {HEAD_COLUMNS} FROM audit_chain_heads ORDER BY chain");
    let rows = sqlx::query(AssertSqlSafe(sql))
        .fetch_all(&mut *conn)
        .await?;
    rows.iter().map(chain_head).collect()
}

/// The chains that have links, by chain (a chain may have links but no head if rows were lost).
pub async fn linked_chains(conn: &mut Conn) -> Result<Vec<i64>, sqlx::Error> {
    let rows = sqlx::query("SELECT DISTINCT chain FROM audit_chain ORDER BY chain")
        .fetch_all(&mut *conn)
        .await?;
    rows.iter().map(|row| row.try_get(0)).collect()
}

/// Append links (seq order within each chain).
pub async fn insert_links(conn: &mut Conn, links: &[Link]) -> Result<(), sqlx::Error> {
    let backend = Backend::of(conn);
    for chunk in fixed_chunks(links) {
        let mut binds = Vec::with_capacity(chunk.len() * 4);
        for link in chunk {
            binds.extend([
                Bind::Int(link.chain),
                Bind::Int(link.seq),
                Bind::Text(link.id.clone()),
                Bind::Blob(link.hash.clone()),
            ]);
        }
        let sql = format!(
            "INSERT INTO audit_chain (chain, seq, id, hash) VALUES {}",
            placeholders(backend, chunk.len(), 4)
        );
        bind_all(sqlx::query(AssertSqlSafe(sql)), binds)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Move the head of `chain` to its new last link.
pub async fn set_head(
    conn: &mut Conn,
    chain: i64,
    seq: i64,
    hash: &[u8],
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE audit_chain_heads SET seq = $1, hash = $2 WHERE chain = $3")
        .bind(seq)
        .bind(hash.to_vec())
        .bind(chain)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Up to `limit` links of `chain` after `after_seq`, in seq order.
pub async fn links_after(
    conn: &mut Conn,
    chain: i64,
    after_seq: i64,
    limit: i64,
) -> Result<Vec<Link>, sqlx::Error> {
    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT chain, seq, id, hash FROM audit_chain WHERE chain = $1 AND seq > $2 ORDER BY seq LIMIT {}",
        limit.max(1)
    )))
    .bind(chain)
    .bind(after_seq)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(Link {
                chain: row.try_get(0)?,
                seq: row.try_get(1)?,
                id: row.try_get(2)?,
                hash: row.try_get(3)?,
            })
        })
        .collect()
}

/// `resource_type = 'AuditEvent' AND id IN (…)` over `ids`, with its binds.
fn audit_events_in(backend: Backend, ids: &[String]) -> (String, Vec<Bind>) {
    let list: Vec<String> = (0..ids.len()).map(|i| backend.placeholder(i + 2)).collect();
    let condition = format!(
        "resource_type = {} AND id IN ({})",
        backend.placeholder(1),
        list.join(", ")
    );
    let binds = std::iter::once(Bind::Text(AUDIT_EVENT.into()))
        .chain(ids.iter().cloned().map(Bind::Text))
        .collect();
    (condition, binds)
}

/// `SELECT {columns} FROM {table}` for the AuditEvents `ids` (and `extra` conditions), in
/// chunks of few shapes.
async fn by_ids(
    conn: &mut Conn,
    columns: &str,
    table: &str,
    extra: &str,
    ids: &[String],
) -> Result<Vec<sqlx::any::AnyRow>, sqlx::Error> {
    let backend = Backend::of(conn);
    let mut rows = Vec::with_capacity(ids.len());
    for chunk in fixed_chunks(ids) {
        let (condition, binds) = audit_events_in(backend, chunk);
        let sql = format!("SELECT {columns} FROM {table} WHERE {condition}{extra}");
        rows.extend(
            bind_all(sqlx::query(AssertSqlSafe(sql)), binds)
                .fetch_all(&mut *conn)
                .await?,
        );
    }
    Ok(rows)
}

/// The sealed version 1 of each AuditEvent in `ids` that has one: (id, ciphertext).
pub async fn first_versions(
    conn: &mut Conn,
    ids: &[String],
) -> Result<Vec<(String, Option<Vec<u8>>)>, sqlx::Error> {
    let rows = by_ids(
        conn,
        "id, ciphertext",
        "resource_versions",
        " AND version = 1",
        ids,
    )
    .await?;
    rows.iter()
        .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
        .collect()
}

/// The current version number of each AuditEvent in `ids` that exists: (id, version).
pub async fn current_versions(
    conn: &mut Conn,
    ids: &[String],
) -> Result<Vec<(String, i64)>, sqlx::Error> {
    let rows = by_ids(conn, "id, version", "resource_heads", "", ids).await?;
    rows.iter()
        .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
        .collect()
}

/// AuditEvents that no chain links: written around the audit trail (REST, SQL).
pub async fn count_unchained(conn: &mut Conn) -> Result<i64, sqlx::Error> {
    let row = sqlx::query(
        "SELECT COUNT(*) FROM resource_heads h WHERE h.resource_type = $1 \
         AND NOT EXISTS (SELECT 1 FROM audit_chain c WHERE c.id = h.id)",
    )
    .bind(AUDIT_EVENT)
    .fetch_one(&mut *conn)
    .await?;
    row.try_get(0)
}

/// Move the anchor of `chain` from `old_anchor_seq` to (`seq`, `hash`), the last pruned link.
/// False when the anchor is no longer at `old_anchor_seq` (another prune got there first).
pub async fn move_anchor(
    conn: &mut Conn,
    chain: i64,
    old_anchor_seq: i64,
    seq: i64,
    hash: &[u8],
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("UPDATE audit_chain_heads SET anchor_seq = $1, anchor_hash = $2 WHERE chain = $3 AND anchor_seq = $4")
        .bind(seq)
        .bind(hash.to_vec())
        .bind(chain)
        .bind(old_anchor_seq)
        .execute(&mut *conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Remove the links of `chain` up to and including `seq`.
pub async fn delete_links(conn: &mut Conn, chain: i64, seq: i64) -> Result<u64, sqlx::Error> {
    let done = sqlx::query("DELETE FROM audit_chain WHERE chain = $1 AND seq <= $2")
        .bind(chain)
        .bind(seq)
        .execute(&mut *conn)
        .await?;
    Ok(done.rows_affected())
}

/// Remove AuditEvents entirely: every version, the head, every index row.
pub async fn purge(conn: &mut Conn, ids: &[String]) -> Result<(), sqlx::Error> {
    let backend = Backend::of(conn);
    for table in ["resource_versions", "resource_heads"]
        .into_iter()
        .chain(TABLES)
    {
        for chunk in fixed_chunks(ids) {
            let (condition, binds) = audit_events_in(backend, chunk);
            let sql = format!("DELETE FROM {table} WHERE {condition}");
            bind_all(sqlx::query(AssertSqlSafe(sql)), binds)
                .execute(&mut *conn)
                .await?;
        }
    }
    Ok(())
}

/// The read journal segment the drain wrote last, and the bytes of whole frames it read from it.
pub async fn journal_state(conn: &mut Conn) -> Result<Option<(String, i64)>, sqlx::Error> {
    let row = sqlx::query("SELECT last_segment, last_bytes FROM audit_journal_state WHERE id = 1")
        .fetch_optional(&mut *conn)
        .await?;
    row.map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
        .transpose()
}

/// Record that the drain wrote segment `name` (`bytes` of whole frames).
pub async fn set_journal_state(conn: &mut Conn, name: &str, bytes: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO audit_journal_state (id, last_segment, last_bytes) VALUES (1, $1, $2) \
         ON CONFLICT (id) DO UPDATE SET last_segment = excluded.last_segment, last_bytes = excluded.last_bytes",
    )
    .bind(name)
    .bind(bytes)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The read journal segments that may hold acknowledged reads: the newest the journal opened
/// and the one it prepared next (none before the first, or once their loss was reported).
pub async fn journal_opened(conn: &mut Conn) -> Result<Vec<String>, sqlx::Error> {
    let row = sqlx::query("SELECT segment, next FROM audit_journal_opened WHERE id = 1")
        .fetch_optional(&mut *conn)
        .await?;
    let Some(row) = row else {
        return Ok(Vec::new());
    };
    let names: [String; 2] = [row.try_get(0)?, row.try_get(1)?];
    Ok(names.into_iter().filter(|name| !name.is_empty()).collect())
}

/// Record `segment` as the newest the read journal opened and `next` ('' for none) as the one
/// it prepared; both '' to forget them.
pub async fn set_journal_opened(
    conn: &mut Conn,
    segment: &str,
    next: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO audit_journal_opened (id, segment, next) VALUES (1, $1, $2) \
         ON CONFLICT (id) DO UPDATE SET segment = excluded.segment, next = excluded.next",
    )
    .bind(segment)
    .bind(next)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
