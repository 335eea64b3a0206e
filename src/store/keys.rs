//! Rows per key id, and the batches `keys rotate` re-encrypts while the server keeps serving.
//! Version rows are immutable except for this: the same plaintext sealed again under a newer key.

use sqlx::Row;

use super::Conn;

/// (key id, number of version rows it protects), delete markers (key 0) left out.
pub async fn rows_per_key(conn: &mut Conn) -> Result<Vec<(i64, i64)>, sqlx::Error> {
    let rows = sqlx::query("SELECT key_id, COUNT(*) FROM resource_versions WHERE ciphertext IS NOT NULL GROUP BY key_id ORDER BY key_id")
        .fetch_all(&mut *conn)
        .await?;
    rows.iter()
        .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
        .collect()
}

/// A sealed row waiting to be re-encrypted.
pub struct SealedRow {
    pub seq: i64,
    pub resource_type: String,
    pub id: String,
    pub version: i64,
    pub key_id: i64,
    pub ciphertext: Vec<u8>,
}

/// Up to `limit` rows sealed under a key other than `active`, after sequence `after_seq`.
pub async fn rows_not_under(
    conn: &mut Conn,
    active: i64,
    after_seq: i64,
    limit: i64,
) -> Result<Vec<SealedRow>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT seq, resource_type, id, version, key_id, ciphertext FROM resource_versions \
         WHERE ciphertext IS NOT NULL AND key_id <> $1 AND seq > $2 ORDER BY seq LIMIT $3",
    )
    .bind(active)
    .bind(after_seq)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(SealedRow {
                seq: row.try_get(0)?,
                resource_type: row.try_get(1)?,
                id: row.try_get(2)?,
                version: row.try_get(3)?,
                key_id: row.try_get(4)?,
                ciphertext: row.try_get(5)?,
            })
        })
        .collect()
}

/// Store a re-sealed body, only if the row is still under the key it was read with.
pub async fn rewrap(
    conn: &mut Conn,
    seq: i64,
    old_key: i64,
    new_key: i64,
    ciphertext: Vec<u8>,
) -> Result<bool, sqlx::Error> {
    let result = sqlx::query(
        "UPDATE resource_versions SET key_id = $1, ciphertext = $2 WHERE seq = $3 AND key_id = $4",
    )
    .bind(new_key)
    .bind(ciphertext)
    .bind(seq)
    .bind(old_key)
    .execute(&mut *conn)
    .await?;
    Ok(result.rows_affected() == 1)
}
