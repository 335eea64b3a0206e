//! HL7 v2 bookkeeping: the messages already stored (idempotency across restarts) and the
//! dead-letter store (messages kept, sealed, for a replay). The service seals and keys the rows;
//! this module only moves them.

use sqlx::Row;

use super::Conn;
use crate::fhir::instant::Micros;

/// A stored message, found by its key.
#[derive(Debug, Clone)]
pub struct StoredMessage {
    pub content_hash: String,
    /// The ACK that was sent, sealed.
    pub ack: Vec<u8>,
    pub provenance_id: String,
}

/// The stored message with this key, if any.
pub async fn find_message(
    conn: &mut Conn,
    message_key: &str,
) -> Result<Option<StoredMessage>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT content_hash, ack, provenance_id FROM hl7_messages WHERE message_key = $1",
    )
    .bind(message_key)
    .fetch_optional(&mut *conn)
    .await?;
    row.map(|row| {
        Ok(StoredMessage {
            content_hash: row.try_get(0)?,
            ack: row.try_get(1)?,
            provenance_id: row.try_get(2)?,
        })
    })
    .transpose()
}

/// Record a stored message. Fails with a unique violation when another writer stored the same key
/// first; the caller then answers from that row.
pub async fn insert_message(
    conn: &mut Conn,
    message_key: &str,
    message: &StoredMessage,
    received_at: Micros,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO hl7_messages (message_key, content_hash, received_at, ack, provenance_id) VALUES ($1, $2, $3, $4, $5)")
        .bind(message_key)
        .bind(&message.content_hash)
        .bind(received_at)
        .bind(&message.ack)
        .bind(&message.provenance_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// A message that could not be stored.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub id: String,
    pub content_hash: String,
    pub first_seen: Micros,
    pub last_seen: Micros,
    pub attempts: i64,
    pub error_code: i64,
    pub reason: String,
    pub key_id: i64,
    /// The raw bytes as received, sealed.
    pub message: Vec<u8>,
    pub resolved_at: Option<Micros>,
}

/// Keep a failed message. The same bytes arriving again update the existing row (one more
/// attempt, the latest reason, open again if it had been resolved). Returns the row's id.
pub async fn keep_dead_letter(conn: &mut Conn, letter: &DeadLetter) -> Result<String, sqlx::Error> {
    let row = sqlx::query(
        "INSERT INTO hl7_dead_letters \
         (id, content_hash, first_seen, last_seen, attempts, error_code, reason, key_id, message, resolved_at) \
         VALUES ($1, $2, $3, $4, 1, $5, $6, $7, $8, NULL) \
         ON CONFLICT (content_hash) DO UPDATE SET last_seen = excluded.last_seen, \
         attempts = hl7_dead_letters.attempts + 1, error_code = excluded.error_code, \
         reason = excluded.reason, resolved_at = NULL \
         RETURNING id",
    )
    .bind(&letter.id)
    .bind(&letter.content_hash)
    .bind(letter.first_seen)
    .bind(letter.last_seen)
    .bind(letter.error_code)
    .bind(&letter.reason)
    .bind(letter.key_id)
    .bind(&letter.message)
    .fetch_one(&mut *conn)
    .await?;
    row.try_get(0)
}

const LETTER_COLUMNS: &str = "id, content_hash, first_seen, last_seen, attempts, error_code, reason, key_id, message, resolved_at";

fn dead_letter(row: &sqlx::any::AnyRow) -> Result<DeadLetter, sqlx::Error> {
    Ok(DeadLetter {
        id: row.try_get(0)?,
        content_hash: row.try_get(1)?,
        first_seen: row.try_get(2)?,
        last_seen: row.try_get(3)?,
        attempts: row.try_get(4)?,
        error_code: row.try_get(5)?,
        reason: row.try_get(6)?,
        key_id: row.try_get(7)?,
        message: row.try_get(8)?,
        resolved_at: row.try_get(9)?,
    })
}

/// Dead letters in order of first arrival; resolved ones only with `include_resolved`.
pub async fn list_dead_letters(
    conn: &mut Conn,
    include_resolved: bool,
) -> Result<Vec<DeadLetter>, sqlx::Error> {
    let sql = if include_resolved {
        format!("SELECT {LETTER_COLUMNS} FROM hl7_dead_letters ORDER BY id")
    } else {
        format!(
            "SELECT {LETTER_COLUMNS} FROM hl7_dead_letters WHERE resolved_at IS NULL ORDER BY id"
        )
    };
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .fetch_all(&mut *conn)
        .await?;
    rows.iter().map(dead_letter).collect()
}

pub async fn find_dead_letter(
    conn: &mut Conn,
    id: &str,
) -> Result<Option<DeadLetter>, sqlx::Error> {
    let sql = format!("SELECT {LETTER_COLUMNS} FROM hl7_dead_letters WHERE id = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    row.as_ref().map(dead_letter).transpose()
}

/// Mark a dead letter as handled (its replay stored the message).
pub async fn resolve_dead_letter(conn: &mut Conn, id: &str, at: Micros) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE hl7_dead_letters SET resolved_at = $1 WHERE id = $2")
        .bind(at)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}
