//! Search index rows of a resource's current version. They are replaced wholesale on every write
//! (and removed on delete) inside the write's transaction, so old values stop matching at the
//! same instant the new version becomes visible.

// Dynamic SQL here is assembled from fixed fragments and `$n` placeholders only; every value is bound.
use super::{Backend, Bind, Conn, bind_all};
use sqlx::AssertSqlSafe;

/// One index row. Values are already in their stored form: PHI parameters arrive as
/// [`IndexRow::Blind`] tokens, never as text.
#[derive(Debug, Clone, PartialEq)]
pub enum IndexRow {
    Token {
        param: String,
        system: Option<String>,
        code: Option<String>,
        /// The coding's display is the one the server's code tables know for it, so `:text` finds
        /// the words of that display through this row ([`crate::search::known_displays`]).
        known_display: bool,
    },
    String {
        param: String,
        normalized: String,
        exact: String,
    },
    Reference {
        param: String,
        target_type: Option<String>,
        target_id: Option<String>,
        target_version: Option<String>,
        url: String,
    },
    Date {
        param: String,
        start: i64,
        end: i64,
    },
    Number {
        param: String,
        low: f64,
        high: f64,
        system: Option<String>,
        code: Option<String>,
    },
    Uri {
        param: String,
        value: String,
    },
    Blind {
        param: String,
        token: String,
    },
    /// A rule of a privacy Consent (only Consents have these).
    Consent(crate::auth::consent::rules::ConsentRow),
    /// A coding that composite rows of `param` were stored under ([`COMPOSITE_CODES_TABLE`]):
    /// an entry of a table shared by every resource, not a row this resource owns.
    CompositeCode {
        param: String,
        code: String,
        system: String,
    },
}

/// The search index tables, in the order rows are deleted and inserted.
pub const TABLES: [&str; 7] = [
    "search_token",
    "search_string",
    "search_reference",
    "search_date",
    "search_number",
    "search_uri",
    "search_blind",
];

/// The rules of privacy Consents ([`crate::auth::consent`]): index rows of Consents only.
pub const CONSENT_TABLE: &str = "consent_rules";

/// The codings composite rows are stored under, for searches that name a code without its
/// system (migration 0012). Not in [`TABLES`]: its entries belong to no resource, so they are
/// never deleted with one.
pub const COMPOSITE_CODES_TABLE: &str = "composite_codes";

/// The tables that may hold rows of a resource of `resource_type`.
fn tables_of(resource_type: &str) -> impl Iterator<Item = &'static str> {
    TABLES
        .into_iter()
        .chain((resource_type == "Consent").then_some(CONSENT_TABLE))
}

impl IndexRow {
    /// The index table this row belongs in.
    pub fn table(&self) -> &'static str {
        match self {
            IndexRow::Token { .. } => "search_token",
            IndexRow::String { .. } => "search_string",
            IndexRow::Reference { .. } => "search_reference",
            IndexRow::Date { .. } => "search_date",
            IndexRow::Number { .. } => "search_number",
            IndexRow::Uri { .. } => "search_uri",
            IndexRow::Blind { .. } => "search_blind",
            IndexRow::Consent(_) => CONSENT_TABLE,
            IndexRow::CompositeCode { .. } => COMPOSITE_CODES_TABLE,
        }
    }

    /// The row's values in [`key_columns`] order.
    fn binds(&self) -> Vec<Bind> {
        let text = |s: &str| Bind::Text(s.to_string());
        // Key columns cannot be NULL; FHIR strings are never empty, so '' stands for "absent".
        let opt = |s: &Option<String>| text(s.as_deref().unwrap_or_default());
        match self {
            IndexRow::Token {
                param,
                system,
                code,
                known_display,
            } => vec![
                text(param),
                opt(system),
                opt(code),
                Bind::Int(i64::from(*known_display)),
            ],
            IndexRow::String {
                param,
                normalized,
                exact,
            } => vec![text(param), text(normalized), text(exact)],
            IndexRow::Reference {
                param,
                target_type,
                target_id,
                target_version,
                url,
            } => {
                vec![
                    text(param),
                    opt(target_type),
                    opt(target_id),
                    opt(target_version),
                    text(url),
                ]
            }
            IndexRow::Date { param, start, end } => {
                vec![text(param), Bind::Int(*start), Bind::Int(*end)]
            }
            IndexRow::Number {
                param,
                low,
                high,
                system,
                code,
            } => {
                vec![
                    text(param),
                    Bind::Real(*low),
                    Bind::Real(*high),
                    opt(system),
                    opt(code),
                ]
            }
            IndexRow::Uri { param, value } => vec![text(param), text(value)],
            IndexRow::Blind { param, token } => vec![text(param), text(token)],
            IndexRow::CompositeCode {
                param,
                code,
                system,
            } => vec![text(param), text(code), text(system)],
            IndexRow::Consent(rule) => vec![
                text(&rule.patient),
                Bind::Int(rule.recorded),
                Bind::Int(rule.depth),
                Bind::Int(i64::from(rule.permit)),
                text(&rule.actor),
                text(&rule.purpose),
                text(&rule.class),
                text(&rule.data.0),
                text(&rule.data.1),
                Bind::Int(rule.starts),
                Bind::Int(rule.ends),
            ],
        }
    }
}

/// Rows per INSERT statement, largest first. Only these few statement shapes exist per table, so
/// their prepared statements stay cached instead of being parsed again for every row count; the
/// largest keeps the bind count far below both databases' limits.
const CHUNK_SIZES: [usize; 4] = [64, 16, 4, 1];

/// Split `items` into chunks of the sizes in [`CHUNK_SIZES`].
pub fn fixed_chunks<T>(items: &[T]) -> Vec<&[T]> {
    let mut chunks = Vec::new();
    let mut rest = items;
    for size in CHUNK_SIZES {
        while rest.len() >= size {
            let (chunk, tail) = rest.split_at(size);
            chunks.push(chunk);
            rest = tail;
        }
    }
    chunks
}

/// The value columns of each table besides `resource_type` and `id`, in the order
/// [`IndexRow::binds`] gives them.
fn key_columns(table: &str) -> &'static [&'static str] {
    match table {
        "search_token" => &["param", "system", "code", "known_display"],
        "search_string" => &["param", "normalized", "exact"],
        "search_reference" => &["param", "target_type", "target_id", "target_version", "url"],
        "search_date" => &["param", "start_us", "end_us"],
        "search_number" => &["param", "low", "high", "system", "code"],
        "search_uri" => &["param", "value"],
        COMPOSITE_CODES_TABLE => &["param", "code", "system"],
        CONSENT_TABLE => &[
            "patient_id",
            "recorded",
            "depth",
            "permit",
            "actor",
            "purpose",
            "class",
            "data_type",
            "data_id",
            "starts",
            "ends",
        ],
        _ => &["param", "token"],
    }
}

/// Remove every index row of (`resource_type`, `id`), through each table's owner index.
pub async fn delete_rows(
    conn: &mut Conn,
    resource_type: &str,
    id: &str,
) -> Result<(), sqlx::Error> {
    delete_rows_of(conn, resource_type, &[id]).await.map(|_| ())
}

/// Remove every index row of the resources `ids` of `resource_type`; returns how many rows there
/// were.
pub async fn delete_rows_of(
    conn: &mut Conn,
    resource_type: &str,
    ids: &[&str],
) -> Result<u64, sqlx::Error> {
    let backend = Backend::of(conn);
    let mut deleted = 0;
    for table in tables_of(resource_type) {
        for chunk in fixed_chunks(ids) {
            let listed: Vec<String> = (2..=chunk.len() + 1)
                .map(|n| backend.placeholder(n))
                .collect();
            let sql = format!(
                "DELETE FROM {table} WHERE resource_type = {} AND id IN ({})",
                backend.placeholder(1),
                listed.join(", ")
            );
            let mut query = sqlx::query(AssertSqlSafe(sql)).bind(resource_type);
            for id in chunk {
                query = query.bind(*id);
            }
            deleted += query.execute(&mut *conn).await?.rows_affected();
        }
    }
    Ok(deleted)
}

/// Insert the index rows of many resources: one multi-row INSERT per table (per chunk). Returns
/// how many rows were stored (a value a resource yields twice is one row), not counting the
/// composite codings, which are shared entries ([`COMPOSITE_CODES_TABLE`]) most of which exist.
pub async fn insert_rows(
    conn: &mut Conn,
    resources: &[(&str, &str, &[IndexRow])],
) -> Result<u64, sqlx::Error> {
    let mut inserted = 0;
    for table in TABLES.into_iter().chain([CONSENT_TABLE]) {
        let of_table: Vec<(&str, &str, &IndexRow)> = resources
            .iter()
            .flat_map(|(t, id, rows)| {
                rows.iter()
                    .filter(|row| row.table() == table)
                    .map(move |row| (*t, *id, row))
            })
            .collect();
        for chunk in fixed_chunks(&of_table) {
            inserted += insert_chunk(conn, chunk).await?;
        }
    }
    // Resources of one batch mostly share their codings: each goes in once. In key order, so
    // that two PostgreSQL transactions adding the same new codings cannot wait for each other
    // crosswise (a deadlock).
    let codings: std::collections::BTreeMap<(&str, &str, &str, &str), &IndexRow> = resources
        .iter()
        .flat_map(|(t, _, rows)| rows.iter().map(move |row| (*t, row)))
        .filter_map(|(t, row)| match row {
            IndexRow::CompositeCode {
                param,
                code,
                system,
            } => Some(((t, param.as_str(), code.as_str(), system.as_str()), row)),
            _ => None,
        })
        .collect();
    let codings: Vec<(&str, &str, &IndexRow)> = codings
        .into_iter()
        .map(|((t, ..), row)| (t, "", row))
        .collect();
    for chunk in fixed_chunks(&codings) {
        insert_chunk(conn, chunk).await?;
    }
    Ok(inserted)
}

async fn insert_chunk(
    conn: &mut Conn,
    chunk: &[(&str, &str, &IndexRow)],
) -> Result<u64, sqlx::Error> {
    let Some((_, _, first)) = chunk.first() else {
        return Ok(0);
    };
    let backend = Backend::of(conn);
    let table = first.table();
    // Every table's rows name the resource that owns them, but the shared composite codings.
    let owned = table != COMPOSITE_CODES_TABLE;
    let mut binds = Vec::new();
    let mut tuples = Vec::with_capacity(chunk.len());
    for (resource_type, id, row) in chunk {
        let mut placeholders = Vec::new();
        for bind in [Bind::Text(resource_type.to_string())]
            .into_iter()
            .chain(row.binds())
            .chain(owned.then(|| Bind::Text(id.to_string())))
        {
            binds.push(bind);
            placeholders.push(backend.placeholder(binds.len()));
        }
        tuples.push(format!("({})", placeholders.join(", ")));
    }
    // Rows are keys: a value a resource yields twice (two codings alike, two blind terms whose
    // truncated tokens coincide) is one row. SQLite's `OR IGNORE` rather than `ON CONFLICT DO
    // NOTHING`: with it no row of the statement can abort it (NOT NULL included, and no value is
    // ever NULL), so SQLite opens no statement journal, which would copy every page the
    // statement touches inside a transaction.
    let (insert, on_conflict) = match backend {
        Backend::Sqlite => ("INSERT OR IGNORE", ""),
        Backend::Postgres => ("INSERT", " ON CONFLICT DO NOTHING"),
    };
    let sql = format!(
        "{insert} INTO {table} (resource_type, {}{}) VALUES {}{on_conflict}",
        key_columns(table).join(", "),
        if owned { ", id" } else { "" },
        tuples.join(", ")
    );
    Ok(bind_all(sqlx::query(AssertSqlSafe(sql)), binds)
        .execute(&mut *conn)
        .await?
        .rows_affected())
}

/// Give the token rows of `param` on `resource_type` stored without a system (`code` elements
/// indexed before their implied system was, see [`crate::search::code_systems`]) that system.
/// `codes` are the only codes such rows can hold, so the statement seeks each `(code, '')` key
/// instead of scanning the parameter's rows; once done it finds nothing, cheaply.
pub async fn set_implied_system(
    conn: &mut Conn,
    resource_type: &str,
    param: &str,
    system: &str,
    codes: &[String],
) -> Result<u64, sqlx::Error> {
    let mut updated = 0;
    for chunk in codes.chunks(500) {
        let listed: Vec<String> = (0..chunk.len()).map(|i| format!("${}", i + 4)).collect();
        let sql = format!(
            "UPDATE search_token SET system = $1 WHERE resource_type = $2 AND param = $3 \
             AND code IN ({}) AND system = ''",
            listed.join(", ")
        );
        let mut binds = vec![
            Bind::Text(system.to_string()),
            Bind::Text(resource_type.to_string()),
            Bind::Text(param.to_string()),
        ];
        binds.extend(chunk.iter().cloned().map(Bind::Text));
        updated += bind_all(sqlx::query(AssertSqlSafe(sql)), binds)
            .execute(&mut *conn)
            .await?
            .rows_affected();
    }
    Ok(updated)
}

#[cfg(test)]
mod tests {
    use super::fixed_chunks;

    #[test]
    fn chunks_use_few_shapes_and_cover_everything() {
        let items: Vec<u32> = (0..150).collect();
        let chunks = fixed_chunks(&items);
        assert_eq!(
            chunks.iter().map(|c| c.len()).collect::<Vec<_>>(),
            [64, 64, 16, 4, 1, 1]
        );
        assert_eq!(chunks.concat(), items);
        assert!(fixed_chunks::<u32>(&[]).is_empty());
    }
}
