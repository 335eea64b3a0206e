//! One read under a shorter time limit than its connection's (`store.statement_timeout_ms`),
//! for work the server may give up on and answer without: counting every match of a search for
//! `Bundle.total` when the client did not ask for an accurate one.
//!
//! - PostgreSQL: `SET LOCAL statement_timeout` in a transaction of its own (a savepoint when the
//!   connection is in a transaction already, such as a transaction Bundle's), rolled back after
//!   the read. The read changed nothing, and the rollback ends the `SET LOCAL` with it; a
//!   statement stopped inside a savepoint does not abort the transaction around it.
//! - SQLite: the query carries its limit in a leading comment ([`sqlite_limit::with_query_limit`]).

use std::time::Duration;

use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, Connection, Executor};

use super::{
    Backend, Bind, Conn, bind_all, is_statement_timeout, sqlite_limit, with_values_planned,
};

/// The one row of a read (`sql` with `binds`, planned with its values), or `None` when the
/// database stopped it at `limit`.
pub async fn fetch_one_within(
    conn: &mut Conn,
    limit: Duration,
    sql: &str,
    binds: Vec<Bind>,
) -> Result<Option<AnyRow>, sqlx::Error> {
    let limit_ms = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX).max(1);
    let backend = Backend::of(conn);
    match backend {
        Backend::Sqlite => {
            let sql = sqlite_limit::with_query_limit(sql, limit_ms);
            let query =
                with_values_planned(bind_all(sqlx::query(AssertSqlSafe(sql)), binds), backend);
            stopped_is_none(query.fetch_one(&mut *conn).await)
        }
        Backend::Postgres => {
            let set = format!("SET LOCAL statement_timeout = {limit_ms}");
            let mut tx = if conn.is_in_transaction() {
                let mut savepoint = conn.begin().await?;
                savepoint.execute(AssertSqlSafe(set)).await?;
                savepoint
            } else {
                // One round trip for both.
                conn.begin_with(AssertSqlSafe(format!("BEGIN; {set}")))
                    .await?
            };
            let query = with_values_planned(
                bind_all(sqlx::query(AssertSqlSafe(sql.to_owned())), binds),
                backend,
            );
            let row = query.fetch_one(&mut *tx).await;
            tx.rollback().await?;
            stopped_is_none(row)
        }
    }
}

fn stopped_is_none(row: Result<AnyRow, sqlx::Error>) -> Result<Option<AnyRow>, sqlx::Error> {
    match row {
        Ok(row) => Ok(Some(row)),
        Err(error) if is_statement_timeout(&error) => Ok(None),
        Err(error) => Err(error),
    }
}
