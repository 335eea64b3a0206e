//! A time limit for SQLite queries, as PostgreSQL's `statement_timeout` gives one.
//!
//! SQLite has no statement timeout, but it calls a *progress handler* every few hundred virtual
//! machine instructions, and a handler that returns non-zero interrupts the running statement
//! (`SQLITE_INTERRUPT`, "interrupted"); the connection stays usable. sqlx offers that handler
//! only on a `SqliteConnection` (`LockedSqliteHandle::set_progress_handler`), and the store holds
//! `AnyConnection`s, which do not give theirs out. So every SQLite connection this process opens
//! gets the handler from an *auto-extension* (`sqlite3_auto_extension`, run by `sqlite3_open`
//! on the new connection's own handle), together with:
//!
//! - a trace hook (`SQLITE_TRACE_STMT`, `SQLITE_TRACE_PROFILE`) that notes when a query starts
//!   and ends, so the handler knows how long the current one has run;
//! - a SQL function, `fhirvault_statement_timeout(ms)`, through which the pool's `after_connect`
//!   sets the connection's limit. Until it is called the limit is 0, off: connections opened by
//!   anything else in the process (tools, tests) are not limited.
//!
//! One query can ask for a shorter limit than its connection's by starting with a comment,
//! [`with_query_limit`] (`/*fhirvault_limit_ms=1000*/ SELECT …`), which the trace hook reads when
//! the query starts. The limit travels in the query's text rather than in the connection's state,
//! so nothing has to be set back afterwards: a request dropped halfway (its client went away)
//! cannot leave a connection of the pool with the shorter limit.
//!
//! Only queries are timed: statements that SQLite reports read-only and that begin with
//! `SELECT`, `WITH` or `VALUES`. Interrupting a write inside a transaction makes SQLite roll
//! back the whole transaction behind the driver's back, and a `COMMIT` interrupted after its
//! commit would report a failure that did not happen; the server's writes are short keyed
//! statements, and what can run long is the search SQL the planner builds.
//!
//! The state of one connection is owned by its SQL function, which SQLite destroys when the
//! connection closes; the hooks only run while statements run, which is never after that.

use std::ffi::{CStr, c_char, c_int, c_uint, c_void};
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use libsqlite3_sys as ffi;

/// The SQL function that sets the calling connection's limit, in milliseconds (0: off).
pub const SET_LIMIT_FUNCTION: &str = "fhirvault_statement_timeout";
const SET_LIMIT_FUNCTION_C: &CStr = c"fhirvault_statement_timeout";

/// Virtual machine instructions between two calls of the progress handler. Few, because one
/// instruction can take long (a `LIKE` over a long text, once per row), so a query may be slow
/// after only a few hundred; a clock read per hundred instructions costs nothing measurable
/// (a recursive count to three million ran as fast with the limit on as off).
const INSTRUCTIONS_PER_CHECK: c_int = 100;

/// The reference point of the start times below (0 means "no query running").
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

/// The comment that starts a query with a limit of its own; the milliseconds and `*/` follow.
const QUERY_LIMIT_MARK: &str = "/*fhirvault_limit_ms=";

/// `sql` (a query) stopped after `limit_ms` milliseconds, or at its connection's limit if that is
/// shorter.
pub fn with_query_limit(sql: &str, limit_ms: u64) -> String {
    format!("{QUERY_LIMIT_MARK}{}*/ {sql}", limit_ms.max(1))
}

/// The limit a query's text asks for ([`with_query_limit`]), and the text after that comment.
fn query_limit(sql: &[u8]) -> (Option<u64>, &[u8]) {
    let Some(rest) = sql.strip_prefix(QUERY_LIMIT_MARK.as_bytes()) else {
        return (None, sql);
    };
    let Some(end) = rest.windows(2).position(|w| w == b"*/") else {
        return (None, sql);
    };
    let limit = std::str::from_utf8(&rest[..end])
        .ok()
        .and_then(|digits| digits.parse().ok());
    (limit, &rest[end + 2..])
}

/// One connection's limit and the start of its running query.
#[derive(Default)]
struct Watch {
    limit_ms: AtomicU64,
    /// The running query's own limit ([`with_query_limit`]; 0: none).
    query_limit_ms: AtomicU64,
    /// Microseconds since [`EPOCH`] (plus one, so that 0 stays "none") when the running query
    /// started.
    started: AtomicU64,
}

impl Watch {
    fn now() -> u64 {
        u64::try_from(EPOCH.elapsed().as_micros())
            .unwrap_or(u64::MAX)
            .saturating_add(1)
    }

    fn expired(&self) -> bool {
        let limit = match (
            self.limit_ms.load(Ordering::Relaxed),
            self.query_limit_ms.load(Ordering::Relaxed),
        ) {
            (0, query) => query,
            (connection, 0) => connection,
            (connection, query) => connection.min(query),
        };
        let started = self.started.load(Ordering::Relaxed);
        limit > 0
            && started > 0
            && Watch::now().saturating_sub(started) > limit.saturating_mul(1000)
    }
}

/// Install the auto-extension, once per process, before the first SQLite connection is opened.
/// Fails only if SQLite cannot record it (out of memory).
pub fn install() -> Result<(), String> {
    static INSTALLED: LazyLock<c_int> = LazyLock::new(|| {
        LazyLock::force(&EPOCH);
        // SAFETY: `attach` has the signature SQLite calls auto-extensions with; the registration
        // is process-wide and never undone, and `attach` touches only the handle it is given.
        unsafe { ffi::sqlite3_auto_extension(Some(attach)) }
    });
    match *INSTALLED {
        ffi::SQLITE_OK => Ok(()),
        code => Err(format!(
            "cannot register the SQLite statement time limit (SQLite error {code})"
        )),
    }
}

/// The auto-extension: runs inside `sqlite3_open` for each new connection.
unsafe extern "C" fn attach(
    db: *mut ffi::sqlite3,
    _error: *mut *mut c_char,
    _api: *const ffi::sqlite3_api_routines,
) -> c_int {
    let watch = Box::into_raw(Box::<Watch>::default()).cast::<c_void>();
    // SAFETY: `db` is the connection being opened. The function owns `watch` and frees it with
    // `release` when the connection closes (or at once, if it cannot be created); the hooks get
    // the same pointer and run only while a statement of this connection runs.
    unsafe {
        let created = ffi::sqlite3_create_function_v2(
            db,
            SET_LIMIT_FUNCTION_C.as_ptr(),
            1,
            ffi::SQLITE_UTF8 | ffi::SQLITE_DIRECTONLY,
            watch,
            Some(set_limit),
            None,
            None,
            Some(release),
        );
        if created != ffi::SQLITE_OK {
            // The limit cannot be set on this connection; `after_connect` reports that.
            return ffi::SQLITE_OK;
        }
        ffi::sqlite3_trace_v2(
            db,
            ffi::SQLITE_TRACE_STMT | ffi::SQLITE_TRACE_PROFILE,
            Some(trace),
            watch,
        );
        ffi::sqlite3_progress_handler(db, INSTRUCTIONS_PER_CHECK, Some(progress), watch);
    }
    ffi::SQLITE_OK
}

/// `fhirvault_statement_timeout(ms)`: set this connection's limit; returns it.
unsafe extern "C" fn set_limit(
    context: *mut ffi::sqlite3_context,
    count: c_int,
    arguments: *mut *mut ffi::sqlite3_value,
) {
    // SAFETY: SQLite passes `count` arguments and the user data given at registration, a `Watch`
    // that lives as long as the function.
    unsafe {
        let watch = &*ffi::sqlite3_user_data(context).cast::<Watch>();
        let milliseconds = if count == 1 {
            ffi::sqlite3_value_int64(*arguments)
        } else {
            0
        };
        let milliseconds = u64::try_from(milliseconds).unwrap_or(0);
        watch.limit_ms.store(milliseconds, Ordering::Relaxed);
        ffi::sqlite3_result_int64(context, i64::try_from(milliseconds).unwrap_or(i64::MAX));
    }
}

unsafe extern "C" fn release(watch: *mut c_void) {
    // SAFETY: the pointer came from `Box::into_raw` in `attach`; SQLite calls this exactly once.
    drop(unsafe { Box::from_raw(watch.cast::<Watch>()) });
}

/// A statement starts (`SQLITE_TRACE_STMT`: `statement`, and its SQL text in `text`) or ends
/// (`SQLITE_TRACE_PROFILE`).
unsafe extern "C" fn trace(
    event: c_uint,
    watch: *mut c_void,
    statement: *mut c_void,
    text: *mut c_void,
) -> c_int {
    // SAFETY: `watch` is this connection's `Watch`; for TRACE_STMT, `statement` is the running
    // statement and `text` its NUL-terminated SQL (a `--` comment for trigger programs).
    unsafe {
        let watch = &*watch.cast::<Watch>();
        if event == ffi::SQLITE_TRACE_STMT {
            let sql = CStr::from_ptr(text.cast::<c_char>()).to_bytes();
            if sql.starts_with(b"--") {
                return 0; // a trigger inside the running statement
            }
            let (own_limit, sql) = query_limit(sql);
            let timed = is_query(sql) && ffi::sqlite3_stmt_readonly(statement.cast()) != 0;
            watch
                .query_limit_ms
                .store(own_limit.filter(|_| timed).unwrap_or(0), Ordering::Relaxed);
            watch
                .started
                .store(if timed { Watch::now() } else { 0 }, Ordering::Relaxed);
        } else {
            watch.started.store(0, Ordering::Relaxed);
        }
    }
    0
}

/// Non-zero interrupts the running statement.
unsafe extern "C" fn progress(watch: *mut c_void) -> c_int {
    // SAFETY: `watch` is this connection's `Watch`.
    let watch = unsafe { &*watch.cast::<Watch>() };
    c_int::from(watch.expired())
}

/// A statement that only reads: `SELECT`, `WITH` or `VALUES` first (any case, after spaces).
fn is_query(sql: &[u8]) -> bool {
    let start = sql
        .iter()
        .position(|b| !b.is_ascii_whitespace() && *b != b'(')
        .unwrap_or(sql.len());
    let head = &sql[start..];
    ["select", "with", "values"].iter().any(|word| {
        head.len() >= word.len() && head[..word.len()].eq_ignore_ascii_case(word.as_bytes())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_recognised() {
        for sql in [
            "SELECT 1",
            "  select * from t",
            "WITH x AS (SELECT 1) SELECT * FROM x",
            "(SELECT 1)",
            "VALUES (1)",
        ] {
            assert!(is_query(sql.as_bytes()), "{sql}");
        }
        for sql in [
            "INSERT INTO t SELECT 1",
            "COMMIT",
            "BEGIN",
            "PRAGMA busy_timeout = 1",
            "UPDATE t SET a = 1",
            "",
            "SEL",
        ] {
            assert!(!is_query(sql.as_bytes()), "{sql}");
        }
    }

    /// A query that counts to a billion: seconds without a limit.
    const ENDLESS: &str = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000000000) SELECT count(*) FROM n";

    #[tokio::test]
    async fn a_limited_connection_stops_long_queries_and_serves_on() {
        use sqlx::{Connection, Row};
        install().unwrap();
        sqlx::any::install_default_drivers();
        let mut conn = sqlx::AnyConnection::connect("sqlite::memory:")
            .await
            .unwrap();
        let set = format!("SELECT {SET_LIMIT_FUNCTION}($1)");
        let limit: i64 = sqlx::query(sqlx::AssertSqlSafe(set.clone()))
            .bind(50_i64)
            .fetch_one(&mut conn)
            .await
            .unwrap()
            .get(0);
        assert_eq!(limit, 50);
        let started = Instant::now();
        let Err(error) = sqlx::query(ENDLESS).fetch_one(&mut conn).await else {
            panic!("not stopped")
        };
        assert!(
            started.elapsed() < std::time::Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        let sqlx::Error::Database(error) = error else {
            panic!("{error}")
        };
        assert_eq!(
            (error.code().as_deref(), error.message()),
            (Some("9"), "interrupted")
        );
        let one: i64 = sqlx::query("SELECT 1")
            .fetch_one(&mut conn)
            .await
            .unwrap()
            .get(0);
        assert_eq!(one, 1, "the connection serves on");
        // Writes are not timed, nor is anything once the limit is off.
        sqlx::query(sqlx::AssertSqlSafe(set))
            .bind(0_i64)
            .execute(&mut conn)
            .await
            .unwrap();
        let small = ENDLESS.replace("1000000000", "100000");
        sqlx::query(sqlx::AssertSqlSafe(small))
            .fetch_one(&mut conn)
            .await
            .unwrap();
    }

    #[test]
    fn a_watch_expires_only_with_a_limit_and_a_running_query() {
        let watch = Watch::default();
        assert!(!watch.expired());
        watch.started.store(1, Ordering::Relaxed);
        assert!(!watch.expired(), "no limit");
        watch.limit_ms.store(1, Ordering::Relaxed);
        std::thread::sleep(std::time::Duration::from_millis(3));
        assert!(watch.expired());
        watch.started.store(0, Ordering::Relaxed);
        assert!(!watch.expired(), "nothing running");
    }

    #[test]
    fn a_query_limit_is_read_from_the_query_and_only_shortens() {
        let sql = with_query_limit("SELECT count(*) FROM t", 250);
        let (limit, rest) = query_limit(sql.as_bytes());
        assert_eq!((limit, rest), (Some(250), &b" SELECT count(*) FROM t"[..]));
        assert!(is_query(rest));
        assert_eq!(query_limit(b"SELECT 1"), (None, &b"SELECT 1"[..]));
        assert_eq!(
            query_limit(b"/*fhirvault_limit_ms=12"),
            (None, &b"/*fhirvault_limit_ms=12"[..])
        );

        let watch = Watch::default();
        watch.started.store(1, Ordering::Relaxed);
        watch.limit_ms.store(60_000, Ordering::Relaxed);
        assert!(!watch.expired());
        watch.query_limit_ms.store(1, Ordering::Relaxed);
        std::thread::sleep(std::time::Duration::from_millis(3));
        assert!(watch.expired(), "the query's shorter limit applies");
        watch.limit_ms.store(0, Ordering::Relaxed);
        assert!(watch.expired(), "also on a connection without a limit");
    }

    #[tokio::test]
    async fn a_query_with_its_own_limit_is_stopped_there_and_the_next_one_is_not() {
        use sqlx::Connection;
        install().unwrap();
        sqlx::any::install_default_drivers();
        let mut conn = sqlx::AnyConnection::connect("sqlite::memory:")
            .await
            .unwrap();
        let started = Instant::now();
        let limited = with_query_limit(ENDLESS, 50);
        let Err(sqlx::Error::Database(error)) = sqlx::query(sqlx::AssertSqlSafe(limited))
            .fetch_one(&mut conn)
            .await
        else {
            panic!("not stopped")
        };
        assert_eq!(error.message(), "interrupted");
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        // The connection has no limit of its own: the next query (longer than 50 ms) runs to its end.
        let small = ENDLESS.replace("1000000000", "2000000");
        sqlx::query(sqlx::AssertSqlSafe(small))
            .fetch_one(&mut conn)
            .await
            .unwrap();
    }
}
