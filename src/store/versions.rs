//! Version rows (append-only) and head rows (the current version of each resource).

// Dynamic SQL here is assembled from fixed fragments and `$n` placeholders only; every value is bound.
use sqlx::AssertSqlSafe;
use sqlx::Row;

use super::{Backend, Bind, Conn, bind_all, with_values_planned};
use crate::fhir::instant::Micros;
use crate::search::index_rows::HeadCompartment;

/// One stored version, body still sealed.
#[derive(Debug, Clone)]
pub struct StoredVersion {
    pub seq: i64,
    pub resource_type: String,
    pub id: String,
    pub version: i64,
    pub last_updated: Micros,
    pub deleted: bool,
    pub method: String,
    pub ciphertext: Option<Vec<u8>>,
}

/// The current state of a resource, enough to decide an update or delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub version: i64,
    pub deleted: bool,
    pub last_updated: Micros,
}

const VERSION_COLUMNS: &str =
    "v.seq, v.resource_type, v.id, v.version, v.last_updated, v.deleted, v.method, v.ciphertext";

fn stored_version(row: &sqlx::any::AnyRow) -> Result<StoredVersion, sqlx::Error> {
    Ok(StoredVersion {
        seq: row.try_get(0)?,
        resource_type: row.try_get(1)?,
        id: row.try_get(2)?,
        version: row.try_get(3)?,
        last_updated: row.try_get(4)?,
        deleted: row.try_get::<i64, _>(5)? != 0,
        method: row.try_get(6)?,
        ciphertext: row.try_get(7)?,
    })
}

/// The head of a resource; with `lock`, the row stays locked until the transaction ends
/// (PostgreSQL), so concurrent updates of one resource queue instead of racing.
pub async fn head(
    conn: &mut Conn,
    backend: Backend,
    resource_type: &str,
    id: &str,
    lock: bool,
) -> Result<Option<Head>, sqlx::Error> {
    let lock = if lock { backend.for_update() } else { "" };
    let sql = format!(
        "SELECT version, deleted, last_updated FROM resource_heads WHERE resource_type = $1 AND id = $2{lock}"
    );
    let row = sqlx::query(AssertSqlSafe(sql))
        .bind(resource_type)
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    row.map(|row| {
        Ok(Head {
            version: row.try_get(0)?,
            deleted: row.try_get::<i64, _>(1)? != 0,
            last_updated: row.try_get(2)?,
        })
    })
    .transpose()
}

/// The current version (which may be a delete marker).
pub async fn read_current(
    conn: &mut Conn,
    resource_type: &str,
    id: &str,
) -> Result<Option<StoredVersion>, sqlx::Error> {
    let sql = format!(
        "SELECT {VERSION_COLUMNS} FROM resource_heads h JOIN resource_versions v \
         ON v.resource_type = h.resource_type AND v.id = h.id AND v.version = h.version \
         WHERE h.resource_type = $1 AND h.id = $2"
    );
    let row = sqlx::query(AssertSqlSafe(sql))
        .bind(resource_type)
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    row.as_ref().map(stored_version).transpose()
}

/// The current version if it is live and its head row meets `condition` (SQL over
/// `resource_heads h` whose placeholders are numbered from `$1` for `binds`): a read and the
/// caller's access rule in one statement.
pub async fn read_current_where(
    conn: &mut Conn,
    condition: &str,
    binds: Vec<Bind>,
) -> Result<Option<StoredVersion>, sqlx::Error> {
    let sql = format!(
        "SELECT {VERSION_COLUMNS} FROM resource_heads h JOIN resource_versions v \
         ON v.resource_type = h.resource_type AND v.id = h.id AND v.version = h.version WHERE {condition}"
    );
    let row = bind_all(sqlx::query(AssertSqlSafe(sql)), binds)
        .fetch_optional(&mut *conn)
        .await?;
    row.as_ref().map(stored_version).transpose()
}

/// Where [`of_type_and_ids`] puts the placeholders of the ids.
const IDS: &str = "{ids}";

/// `sql` about resources `ids` of `resource_type`: the type bound to `$1`, the ids to `$2…`,
/// whose placeholders replace [`IDS`].
fn of_type_and_ids<'q, S: AsRef<str>>(
    sql: &str,
    resource_type: &'q str,
    ids: &'q [S],
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    let listed: Vec<String> = (0..ids.len()).map(|i| format!("${}", i + 2)).collect();
    let mut query =
        sqlx::query(AssertSqlSafe(sql.replace(IDS, &listed.join(", ")))).bind(resource_type);
    for id in ids {
        query = query.bind(id.as_ref());
    }
    query
}

/// Current versions of many resources of one type, in no particular order; deleted ones left out.
pub async fn read_current_many(
    conn: &mut Conn,
    resource_type: &str,
    ids: &[String],
) -> Result<Vec<StoredVersion>, sqlx::Error> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT {VERSION_COLUMNS} FROM resource_heads h JOIN resource_versions v \
         ON v.resource_type = h.resource_type AND v.id = h.id AND v.version = h.version \
         WHERE h.resource_type = $1 AND h.deleted = 0 AND h.id IN ({IDS})"
    );
    of_type_and_ids(&sql, resource_type, ids)
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(stored_version)
        .collect()
}

/// Up to `limit` current versions of live resources of `resource_type` whose ids sort after
/// `after` (`""`: from the first), by id: a keyset page, so that resources written meanwhile move
/// no page boundary.
pub async fn read_current_page(
    conn: &mut Conn,
    resource_type: &str,
    after: &str,
    limit: i64,
) -> Result<Vec<StoredVersion>, sqlx::Error> {
    let sql = format!(
        "SELECT {VERSION_COLUMNS} FROM resource_heads h JOIN resource_versions v \
         ON v.resource_type = h.resource_type AND v.id = h.id AND v.version = h.version \
         WHERE h.resource_type = $1 AND h.deleted = 0 AND h.id > $2 ORDER BY h.id LIMIT $3"
    );
    sqlx::query(AssertSqlSafe(sql))
        .bind(resource_type)
        .bind(after)
        .bind(limit)
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(stored_version)
        .collect()
}

/// The ids of the live resources of `resource_type`.
pub async fn live_ids(conn: &mut Conn, resource_type: &str) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT id FROM resource_heads WHERE resource_type = $1 AND deleted = 0")
        .bind(resource_type)
        .fetch_all(&mut *conn)
        .await
}

/// How many live resources each type has, by type.
pub async fn live_counts(conn: &mut Conn) -> Result<Vec<(String, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT resource_type, COUNT(*) FROM resource_heads WHERE deleted = 0 \
         GROUP BY resource_type ORDER BY resource_type",
    )
    .fetch_all(&mut *conn)
    .await
}

/// A head as a maintenance job checks it before writing derived rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockedHead {
    pub id: String,
    pub version: i64,
    pub deleted: bool,
    pub compartment: HeadCompartment,
}

/// The heads of `ids` (of `resource_type`), kept from changing until the transaction ends, for a
/// transaction that checks them before it writes rows derived from them. PostgreSQL locks them
/// (`FOR UPDATE`, by id so that two such transactions lock in the same order); with `skip_held`,
/// heads another transaction holds are left out instead of waited for. On SQLite the write
/// transaction holds the database's write lock from its start ([`super::begin_write`]).
pub async fn lock_heads(
    conn: &mut Conn,
    resource_type: &str,
    ids: &[&str],
    skip_held: bool,
) -> Result<Vec<LockedHead>, sqlx::Error> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let backend = Backend::of(conn);
    let lock = if skip_held {
        backend.for_update_skip_locked()
    } else {
        backend.for_update()
    };
    let sql = format!(
        "SELECT id, version, deleted, compartment, compartment_complete FROM resource_heads \
         WHERE resource_type = $1 AND id IN ({IDS}) ORDER BY id{lock}"
    );
    of_type_and_ids(&sql, resource_type, ids)
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|row| {
            Ok(LockedHead {
                id: row.try_get(0)?,
                version: row.try_get(1)?,
                deleted: row.try_get::<i64, _>(2)? != 0,
                compartment: HeadCompartment {
                    patient: row.try_get(3)?,
                    complete: row.try_get::<i64, _>(4)? != 0,
                },
            })
        })
        .collect()
}

/// Set the Patient compartment of a resource's head, and whether it names every Patient.
pub async fn set_compartment(
    conn: &mut Conn,
    resource_type: &str,
    id: &str,
    compartment: &HeadCompartment,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE resource_heads SET compartment = $1, compartment_complete = $2 \
         WHERE resource_type = $3 AND id = $4",
    )
    .bind(compartment.patient.as_deref())
    .bind(i64::from(compartment.complete))
    .bind(resource_type)
    .bind(id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub async fn read_version(
    conn: &mut Conn,
    resource_type: &str,
    id: &str,
    version: i64,
) -> Result<Option<StoredVersion>, sqlx::Error> {
    let sql = format!(
        "SELECT {VERSION_COLUMNS} FROM resource_versions v WHERE v.resource_type = $1 AND v.id = $2 AND v.version = $3"
    );
    let row = sqlx::query(AssertSqlSafe(sql))
        .bind(resource_type)
        .bind(id)
        .bind(version)
        .fetch_optional(&mut *conn)
        .await?;
    row.as_ref().map(stored_version).transpose()
}

/// Which versions a history request covers.
#[derive(Debug, Clone, Default)]
pub struct HistoryQuery<'a> {
    pub resource_type: Option<&'a str>,
    pub id: Option<&'a str>,
    /// Only versions written at or after this instant (`_since`).
    pub since: Option<i64>,
    /// Only versions that were current at some time in `[start, end)` (`_at`).
    pub current_during: Option<(i64, i64)>,
    /// Keyset cursor: only versions older than this sequence number (the last one of the previous page).
    pub before_seq: Option<i64>,
    pub limit: i64,
    /// Only resources the caller may see: a condition over their head row `h` and its binds
    /// (numbered from `$1`), from the search planner.
    pub visible: Option<(&'a str, &'a [Bind])>,
}

/// The WHERE clause and binds shared by [`history`] and [`history_count`].
fn history_filter(query: &HistoryQuery<'_>, with_cursor: bool) -> (String, Vec<Bind>) {
    let mut conditions = Vec::new();
    let mut binds = Vec::new();
    // The visibility condition comes first: its placeholders are already numbered from $1.
    if let Some((visible, visible_binds)) = query.visible {
        conditions.push(format!(
            "EXISTS (SELECT 1 FROM resource_heads h WHERE h.resource_type = v.resource_type AND h.id = v.id AND {visible})"
        ));
        binds.extend(visible_binds.iter().cloned());
    }
    // Each condition names its placeholder `$?`; it becomes the bind's number.
    let mut push = |condition: &str, bind: Bind| {
        binds.push(bind);
        conditions.push(condition.replace("$?", &format!("${}", binds.len())));
    };
    if let Some(t) = query.resource_type {
        push("v.resource_type = $?", Bind::Text(t.to_string()));
    }
    if let Some(id) = query.id {
        push("v.id = $?", Bind::Text(id.to_string()));
    }
    if let Some(since) = query.since {
        push("v.last_updated >= $?", Bind::Int(since));
    }
    if let Some((start, end)) = query.current_during {
        // A version is current from its own lastUpdated until the next version's.
        push("v.last_updated < $?", Bind::Int(end));
        push(
            "NOT EXISTS (SELECT 1 FROM resource_versions n WHERE n.resource_type = v.resource_type \
             AND n.id = v.id AND n.version = v.version + 1 AND n.last_updated <= $?)",
            Bind::Int(start),
        );
    }
    if let (true, Some(seq)) = (with_cursor, query.before_seq) {
        push("v.seq < $?", Bind::Int(seq));
    }
    let filter = if conditions.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conditions.join(" AND "))
    };
    (filter, binds)
}

/// Versions newest first, as the history interaction returns them.
pub async fn history(
    conn: &mut Conn,
    query: &HistoryQuery<'_>,
) -> Result<Vec<StoredVersion>, sqlx::Error> {
    let (filter, binds) = history_filter(query, true);
    let sql = format!(
        "SELECT {VERSION_COLUMNS} FROM resource_versions v {filter} ORDER BY v.seq DESC LIMIT {}",
        query.limit.max(0)
    );
    // A history is a search over versions: which index drives it depends on its values.
    let backend = Backend::of(conn);
    let rows = with_values_planned(bind_all(sqlx::query(AssertSqlSafe(sql)), binds), backend)
        .fetch_all(&mut *conn)
        .await?;
    rows.iter().map(stored_version).collect()
}

/// How many versions a history request covers (for `Bundle.total`).
pub async fn history_count(conn: &mut Conn, query: &HistoryQuery<'_>) -> Result<i64, sqlx::Error> {
    let (filter, binds) = history_filter(query, false);
    let sql = format!("SELECT COUNT(*) FROM resource_versions v {filter}");
    let backend = Backend::of(conn);
    let row = with_values_planned(bind_all(sqlx::query(AssertSqlSafe(sql)), binds), backend)
        .fetch_one(&mut *conn)
        .await?;
    row.try_get(0)
}
