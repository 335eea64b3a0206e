//! The database: resource versions, current heads and search index rows.
//!
//! One [`Store`] serves both backends through sqlx's `Any` driver, so every query is written once
//! and the two backends cannot drift apart; the few places where SQLite and PostgreSQL differ live
//! in [`dialect`]. The store knows nothing of FHIR rules or keys: it receives sealed bytes and index
//! rows from the service and hands sealed bytes back.
//!
//! - [`versions`]: append-only version rows and the head table (read, vread, write, history; the
//!   pages and head locks of re-indexing).
//! - [`index`]: replacing the search index rows of a resource.
//! - [`keys`]: per-key row counts and re-encryption batches for key rotation.
//! - [`write`]: writing versions with their heads and index rows, one or many per statement.
//! - [`audit`]: the audit hash chains and their heads, and removing pruned AuditEvents.
//! - [`export`]: bulk export jobs, their files and the files' sealed chunks.
//! - [`short_limit`]: one read under a shorter time limit than the connection's (a count the
//!   server may give up on).
//!
//! Callers get a connection or a transaction from [`Store`] and pass `&mut AnyConnection` to the
//! functions of those modules, so one database transaction can span a whole FHIR transaction Bundle.

pub mod audit;
mod checkpoint;
pub mod dialect;
pub mod export;
pub mod hl7v2;
pub mod index;
pub mod keys;
pub mod short_limit;
pub mod sqlite_limit;
pub mod versions;
pub mod write;

use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyPool, Executor, Transaction};

use crate::config::DatabaseUrl;
pub use dialect::Backend;

pub type Conn = sqlx::AnyConnection;
pub type Tx = Transaction<'static, Any>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the database: {0}")]
    Open(String),
    #[error("database migration failed: {0}")]
    Migrate(String),
    #[error(transparent)]
    Sqlx(#[from] sqlx::Error),
}

/// Connection pools for one database. SQLite allows one writer at a time, so writes go through a
/// pool of exactly one connection (no `SQLITE_BUSY` between our own writers) while reads use a
/// pool of their own; PostgreSQL uses one pool for both.
#[derive(Clone)]
pub struct Store {
    readers: AnyPool,
    writer: AnyPool,
    backend: Backend,
    /// SQLite: copies the WAL back into the database file, mostly off the writer's commits.
    checkpointer: Option<std::sync::Arc<checkpoint::Checkpointer>>,
}

static INSTALL_DRIVERS: std::sync::Once = std::sync::Once::new();

impl Store {
    /// Open (and for SQLite create) the database, without a time limit on statements (the
    /// command-line tools: an import or `audit verify` may run long statements on purpose).
    /// Does not migrate; call [`Store::migrate`].
    pub async fn open(url: &DatabaseUrl) -> Result<Store, StoreError> {
        Store::open_with(url, None).await
    }

    /// [`Store::open`] with a time limit for each statement (`None`: none), the server's: a
    /// statement that runs longer is stopped by the database and fails with an error that
    /// [`crate::error::ApiError`] turns into a 503 `timeout`, and its connection serves on.
    /// PostgreSQL: `statement_timeout` on every connection; SQLite: queries, through
    /// [`sqlite_limit`].
    pub async fn open_with(
        url: &DatabaseUrl,
        statement_timeout: Option<Duration>,
    ) -> Result<Store, StoreError> {
        INSTALL_DRIVERS.call_once(sqlx::any::install_default_drivers);
        sqlite_limit::install().map_err(StoreError::Open)?;
        let limit_ms = statement_timeout.map_or(0, |t| {
            u64::try_from(t.as_millis()).unwrap_or(u64::MAX).max(1)
        });
        match url {
            DatabaseUrl::Sqlite(path) => {
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent)
                        .map_err(|e| StoreError::Open(format!("{}: {e}", parent.display())))?;
                }
                let connect = format!("sqlite://{}?mode=rwc", path.display());
                let options = AnyConnectOptions::from_str(&connect)
                    .map_err(|e| StoreError::Open(e.to_string()))?;
                let writer = sqlite_pool_limited(1, limit_ms)
                    .connect_with(options.clone())
                    .await
                    .map_err(open_error)?;
                let readers = sqlite_pool_limited(4, limit_ms)
                    .connect_with(options.clone())
                    .await
                    .map_err(open_error)?;
                let checkpointer = checkpoint::Checkpointer::start(options);
                Ok(Store {
                    readers,
                    writer,
                    backend: Backend::Sqlite,
                    checkpointer: Some(std::sync::Arc::new(checkpointer)),
                })
            }
            DatabaseUrl::Postgres(connect) => {
                let pool = AnyPoolOptions::new()
                    .max_connections(16)
                    .acquire_timeout(Duration::from_secs(10))
                    .after_connect(move |conn, _meta| {
                        Box::pin(async move {
                            // Search statements are planned with their values on every run
                            // ([`with_values_planned`]); every other statement is prepared once
                            // per connection and may settle on a generic plan, which spares a
                            // read by id (with a caller's access rule: 1–4 ms to plan) its
                            // planning.
                            //
                            // No JIT compilation: our statements are index probes, and the
                            // estimated cost of a large COUNT (a `_has` over every Patient)
                            // passes `jit_above_cost`, so PostgreSQL spent about 100 ms
                            // compiling before a 500 ms probe walk that it did not speed up
                            // (benches/README.md, "Search on PostgreSQL at 1M").
                            conn.execute("SET jit = off").await?;
                            if limit_ms > 0 {
                                conn.execute(sqlx::AssertSqlSafe(format!(
                                    "SET statement_timeout = {limit_ms}"
                                )))
                                .await?;
                            }
                            Ok(())
                        })
                    })
                    .connect(connect)
                    .await
                    .map_err(open_error)?;
                Ok(Store {
                    readers: pool.clone(),
                    writer: pool,
                    backend: Backend::Postgres,
                    checkpointer: None,
                })
            }
        }
    }

    /// Bring the schema up to date (sqlx migrations, one folder per backend).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let migrator = match self.backend {
            Backend::Sqlite => sqlx::migrate!("migrations/sqlite"),
            Backend::Postgres => sqlx::migrate!("migrations/postgres"),
        };
        migrator
            .run(&self.writer)
            .await
            .map_err(|e| StoreError::Migrate(e.to_string()))
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// A connection for reads (and for searches outside a transaction).
    pub async fn reader(&self) -> Result<PoolConnection<Any>, sqlx::Error> {
        self.readers.acquire().await
    }

    /// Start a write transaction. Everything written through it commits or rolls back together.
    pub async fn begin(&self) -> Result<Tx, sqlx::Error> {
        begin_write(&self.writer, self.backend).await
    }

    /// The pool writes go through (SQLite: its single connection), for the group committer.
    pub fn writer_pool(&self) -> AnyPool {
        self.writer.clone()
    }

    /// After a bulk write (`import`, `reindex`): on PostgreSQL, `ANALYZE` the database, so that
    /// the planner's statistics describe what was just loaded. Search statements are planned with
    /// their values, from these statistics; autovacuum catches up only after a delay, and in
    /// between PostgreSQL chose plans that took seconds (benches/README.md, "search on
    /// PostgreSQL at 100k"). SQLite: nothing; our SQLite statements are written for its planner
    /// without statistics (`ANALYZE` there would change plans that were measured without it).
    ///
    /// The statement time limit is for requests: on a million Observations `ANALYZE` takes
    /// longer than its default 5 s, so it runs in a transaction of its own without the limit.
    pub async fn refresh_statistics(&self) -> Result<(), sqlx::Error> {
        if self.backend == Backend::Postgres {
            let mut tx = self.writer.begin().await?;
            tx.execute("SET LOCAL statement_timeout = 0").await?;
            tx.execute("ANALYZE").await?;
            tx.commit().await?;
        }
        Ok(())
    }

    /// Liveness of the database, for `/health`.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        self.readers
            .acquire()
            .await?
            .execute("SELECT 1")
            .await
            .map(|_| ())
    }

    pub async fn close(&self) {
        self.writer.close().await;
        if let Some(checkpointer) = &self.checkpointer {
            checkpointer.stop().await;
        }
        self.readers.close().await;
    }
}

/// `query`, a search statement, planned with its bound values on every run. Which index should
/// drive a search depends on how selective its values are (a rare code or a common one, a
/// caller's rule), and a PostgreSQL statement that stays prepared switches after five runs to a
/// generic plan that cannot see them (measured several times slower on search statements:
/// benches/README.md, "Consent: what it costs"). An unnamed statement is planned with its values
/// each time. SQLite plans without values anyway, so there the statement stays prepared.
pub fn with_values_planned<'q>(
    query: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments>,
    backend: Backend,
) -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments> {
    query.persistent(backend == Backend::Sqlite)
}

/// Did the database stop a statement for running too long? PostgreSQL: SQLSTATE 57014
/// (`query_canceled`, which only `statement_timeout` causes here); SQLite: `SQLITE_INTERRUPT`
/// (9), which only the statement time limit raises ([`sqlite_limit`]).
pub fn is_statement_timeout(error: &sqlx::Error) -> bool {
    let sqlx::Error::Database(error) = error else {
        return false;
    };
    match error.code().as_deref() {
        Some("57014") => true,
        Some("9") => error.message().contains("interrupt"),
        _ => false,
    }
}

/// Start a write transaction on `pool`. On SQLite it takes the database's write lock at once
/// (`BEGIN IMMEDIATE`), waiting for the busy timeout while another process (`import`, `keys
/// rotate`, `reindex`, a second server) holds it. A deferred transaction that reads first cannot
/// wait later: once another process has committed since its first read, its first write fails
/// at once with `SQLITE_BUSY`. Our own writers are serialised by the single writer connection
/// anyway, so taking the lock early costs them nothing.
pub async fn begin_write(pool: &AnyPool, backend: Backend) -> Result<Tx, sqlx::Error> {
    match backend {
        Backend::Sqlite => pool.begin_with("BEGIN IMMEDIATE").await,
        Backend::Postgres => pool.begin().await,
    }
}

fn open_error(error: sqlx::Error) -> StoreError {
    StoreError::Open(error.to_string())
}

/// SQLite pools: WAL so readers never block the writer, full fsync on commit (an acknowledged
/// write survives a power cut), a busy timeout for other processes (import, keys rotate)
/// that share the file, and a checkpoint inside a commit only past 64 MiB of log: the
/// [`Store`]'s checkpointer copies the WAL back in between ([`checkpoint`]).
pub fn sqlite_pool(size: u32) -> AnyPoolOptions {
    sqlite_pool_limited(size, 0)
}

/// [`sqlite_pool`] whose connections stop queries after `limit_ms` milliseconds (0: never).
fn sqlite_pool_limited(size: u32, limit_ms: u64) -> AnyPoolOptions {
    AnyPoolOptions::new()
        .max_connections(size)
        .min_connections(1)
        .acquire_timeout(Duration::from_secs(30))
        .after_connect(move |conn, _meta| {
            Box::pin(async move {
                conn.execute("PRAGMA busy_timeout = 10000").await?;
                conn.execute("PRAGMA journal_mode = WAL").await?;
                conn.execute("PRAGMA synchronous = FULL").await?;
                // Savepoints of a group commit spill to temp files otherwise; 64 MiB page cache.
                conn.execute("PRAGMA temp_store = MEMORY").await?;
                conn.execute("PRAGMA cache_size = -65536").await?;
                for pragma in checkpoint::WRITER_PRAGMAS {
                    conn.execute(pragma).await?;
                }
                let limit = i64::try_from(limit_ms).unwrap_or(i64::MAX);
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT {}($1)",
                    sqlite_limit::SET_LIMIT_FUNCTION
                )))
                .bind(limit)
                .execute(&mut *conn)
                .await?;
                Ok(())
            })
        })
}

/// A value bound to a `$n` placeholder of SQL built at run time (history filters, search plans).
#[derive(Debug, Clone, PartialEq)]
pub enum Bind {
    Text(String),
    Int(i64),
    Real(f64),
    Blob(Vec<u8>),
    /// NULL in a text column.
    Null,
    /// NULL in a binary column (PostgreSQL types its NULLs).
    NullBlob,
}

/// Bind `binds` in order to `query`.
pub fn bind_all<'q>(
    mut query: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments>,
    binds: Vec<Bind>,
) -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments> {
    for bind in binds {
        query = match bind {
            Bind::Text(text) => query.bind(text),
            Bind::Int(int) => query.bind(int),
            Bind::Real(real) => query.bind(real),
            Bind::Blob(blob) => query.bind(blob),
            Bind::Null => query.bind(Option::<String>::None),
            Bind::NullBlob => query.bind(Option::<Vec<u8>>::None),
        };
    }
    query
}
