//! Writing versions: the version row, the head, and the index rows, for one resource or for many
//! at once. Many at once is how the group committer and bulk paths keep the number of statements
//! per transaction independent of the number of resources: one multi-row INSERT per table.

use sqlx::AssertSqlSafe;

use super::index::{self, IndexRow};
use super::{Backend, Bind, Conn, bind_all};
use crate::search::index_rows::HeadCompartment;

/// A version ready to be written: sealed body, index rows, everything decided.
#[derive(Debug, Clone)]
pub struct VersionWrite {
    pub resource_type: String,
    pub id: String,
    pub version: i64,
    pub last_updated: i64,
    pub deleted: bool,
    /// POST, PUT, PATCH or DELETE.
    pub method: String,
    /// Key that sealed the body (0 for a delete marker).
    pub key_id: i64,
    pub ciphertext: Option<Vec<u8>>,
    /// Patient compartment (sharding key), and whether it names every Patient the version
    /// references.
    pub compartment: HeadCompartment,
    /// The complete index rows of this version (none for a delete marker).
    pub rows: Vec<IndexRow>,
    /// No earlier version exists, so there are no old index rows to remove.
    pub is_new: bool,
}

/// Append every version, move each head, and replace each resource's index rows. A concurrent
/// writer that appended the same (type, id, version) first makes this fail with a unique
/// violation on `resource_versions_key` (a 409 upstream). Resources must be distinct.
pub async fn write_versions(conn: &mut Conn, writes: &[VersionWrite]) -> Result<(), sqlx::Error> {
    for write in writes.iter().filter(|w| !w.is_new) {
        index::delete_rows(conn, &write.resource_type, &write.id).await?;
    }
    for chunk in index::fixed_chunks(writes) {
        insert_versions(conn, chunk).await?;
        upsert_heads(conn, chunk).await?;
    }
    let rows: Vec<(&str, &str, &[IndexRow])> = writes
        .iter()
        .map(|w| (w.resource_type.as_str(), w.id.as_str(), w.rows.as_slice()))
        .collect();
    index::insert_rows(conn, &rows).await.map(|_| ())
}

/// `(…), (…)` with placeholders for `rows` tuples of `width` values, bound in order.
pub(super) fn placeholders(backend: Backend, rows: usize, width: usize) -> String {
    (0..rows)
        .map(|r| {
            format!(
                "({})",
                (1..=width)
                    .map(|c| backend.placeholder(r * width + c))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

async fn insert_versions(conn: &mut Conn, writes: &[VersionWrite]) -> Result<(), sqlx::Error> {
    let mut binds = Vec::with_capacity(writes.len() * 8);
    for w in writes {
        binds.extend([
            Bind::Text(w.resource_type.clone()),
            Bind::Text(w.id.clone()),
            Bind::Int(w.version),
            Bind::Int(w.last_updated),
            Bind::Int(i64::from(w.deleted)),
            Bind::Text(w.method.clone()),
            Bind::Int(w.key_id),
            w.ciphertext.clone().map_or(Bind::NullBlob, Bind::Blob),
        ]);
    }
    let sql = format!(
        "INSERT INTO resource_versions (resource_type, id, version, last_updated, deleted, method, key_id, ciphertext) VALUES {}",
        placeholders(Backend::of(conn), writes.len(), 8)
    );
    bind_all(sqlx::query(AssertSqlSafe(sql)), binds)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

async fn upsert_heads(conn: &mut Conn, writes: &[VersionWrite]) -> Result<(), sqlx::Error> {
    let mut binds = Vec::with_capacity(writes.len() * 7);
    for w in writes {
        binds.extend([
            Bind::Text(w.resource_type.clone()),
            Bind::Text(w.id.clone()),
            Bind::Int(w.version),
            Bind::Int(i64::from(w.deleted)),
            Bind::Int(w.last_updated),
            w.compartment.patient.clone().map_or(Bind::Null, Bind::Text),
            Bind::Int(i64::from(w.compartment.complete)),
        ]);
    }
    let sql = format!(
        "INSERT INTO resource_heads (resource_type, id, version, deleted, last_updated, compartment, compartment_complete) VALUES {} \
         ON CONFLICT (resource_type, id) DO UPDATE SET version = excluded.version, deleted = excluded.deleted, \
         last_updated = excluded.last_updated, compartment = excluded.compartment, \
         compartment_complete = excluded.compartment_complete",
        placeholders(Backend::of(conn), writes.len(), 7)
    );
    bind_all(sqlx::query(AssertSqlSafe(sql)), binds)
        .execute(&mut *conn)
        .await?;
    Ok(())
}
