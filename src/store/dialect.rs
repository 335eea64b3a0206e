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

    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}
