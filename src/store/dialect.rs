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
