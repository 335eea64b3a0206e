//! Where SQLite and PostgreSQL differ. Everything else is written once in portable SQL with `$n`
//! placeholders (SQLite reads `$1` as parameter 1 too).

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// Row lock for read-modify-write of a head row. SQLite has no row locks; its single writer
    /// connection already serialises writers.
    pub fn for_update(self) -> &'static str {
        match self {
            Backend::Sqlite => "",
            Backend::Postgres => " FOR UPDATE",
        }
    }

    /// [`Backend::for_update`] for a job that must not wait while holding locks (re-indexing):
    /// rows another transaction holds are left out of the result instead of waited for.
    pub fn for_update_skip_locked(self) -> &'static str {
        match self {
            Backend::Sqlite => "",
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
        }
    }

    /// Did the database refuse a statement only because of a concurrent transaction, so that the
    /// same work may succeed when tried again? SQLite: `SQLITE_BUSY` and `SQLITE_LOCKED` with their
    /// extended codes (another process held the write lock past the busy timeout, or committed
    /// since this transaction's snapshot); PostgreSQL: `40P01` deadlock and `40001` serialization
    /// failure.
    pub fn is_transient(self, error: &sqlx::Error) -> bool {
        const SQLITE_BUSY: i64 = 5;
        const SQLITE_LOCKED: i64 = 6;
        let sqlx::Error::Database(db) = error else {
            return false;
        };
        let code = db.code();
        match self {
            Backend::Postgres => matches!(code.as_deref(), Some("40P01" | "40001")),
            // Extended codes keep the primary code in their low byte.
            Backend::Sqlite => code
                .and_then(|code| code.parse::<i64>().ok())
                .is_some_and(|code| matches!(code & 0xff, SQLITE_BUSY | SQLITE_LOCKED)),
        }
    }

    /// The backend a connection talks to.
    pub fn of(conn: &super::Conn) -> Backend {
        if conn.backend_name().eq_ignore_ascii_case("sqlite") {
            Backend::Sqlite
        } else {
            Backend::Postgres
        }
    }

    /// The `n`th (1-based) bind placeholder of a statement. SQLite gets anonymous `?`: sqlx looks up
    /// the name of every numbered parameter, which SQLite finds by a linear scan, so a multi-row
    /// INSERT with hundreds of `$n` spends its time there. PostgreSQL needs `$n`.
    pub fn placeholder(self, n: usize) -> String {
        match self {
            Backend::Sqlite => "?".to_string(),
            Backend::Postgres => format!("${n}"),
        }
    }
}
