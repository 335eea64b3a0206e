//! Search index rows of a resource's current version. They are replaced wholesale on every write
//! (and removed on delete) inside the write's transaction, so old values stop matching at the
//! same instant the new version becomes visible.

// Dynamic SQL here is assembled from fixed fragments and `$n` placeholders only; every value is bound.
use sqlx::AssertSqlSafe;
use super::{Bind, Conn, bind_all};

/// One index row. Values are already in their stored form: PHI parameters arrive as
/// [`IndexRow::Blind`] tokens, never as text.
#[derive(Debug, Clone, PartialEq)]
pub enum IndexRow {
    Token { param: String, system: Option<String>, code: Option<String> },
    String { param: String, normalized: String, exact: String },
    Reference { param: String, target_type: Option<String>, target_id: Option<String>, target_version: Option<String>, url: String },
    Date { param: String, start: i64, end: i64 },
    Number { param: String, low: f64, high: f64, system: Option<String>, code: Option<String> },
    Uri { param: String, value: String },
    Blind { param: String, token: String },
}

/// The index tables, in the order rows are deleted and inserted.
pub const TABLES: [&str; 7] =
    ["search_token", "search_string", "search_reference", "search_date", "search_number", "search_uri", "search_blind"];

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
        }
    }

    /// The row's values in [`key_columns`] order.
    fn binds(&self) -> Vec<Bind> {
        let text = |s: &str| Bind::Text(s.to_string());
        // Key columns cannot be NULL; FHIR strings are never empty, so '' stands for "absent".
        let opt = |s: &Option<String>| text(s.as_deref().unwrap_or_default());
        match self {
            IndexRow::Token { param, system, code } => vec![text(param), opt(system), opt(code)],
            IndexRow::String { param, normalized, exact } => vec![text(param), text(normalized), text(exact)],
            IndexRow::Reference { param, target_type, target_id, target_version, url } => {
                vec![text(param), opt(target_type), opt(target_id), opt(target_version), text(url)]
            }
            IndexRow::Date { param, start, end } => vec![text(param), Bind::Int(*start), Bind::Int(*end)],
            IndexRow::Number { param, low, high, system, code } => {
                vec![text(param), Bind::Real(*low), Bind::Real(*high), opt(system), opt(code)]
            }
            IndexRow::Uri { param, value } => vec![text(param), text(value)],
            IndexRow::Blind { param, token } => vec![text(param), text(token)],
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

/// The columns of each table's primary key besides `resource_type` and `id`, in the order
/// [`IndexRow::binds`] gives them. The primary key is the only index of a table: it serves searches (by value) and removal of a
/// resource's rows (by the exact keys its [`manifest`] recorded), so each row costs one b-tree
/// insert on SQLite (`WITHOUT ROWID`) and a heap row plus one index entry on PostgreSQL.
fn key_columns(table: &str) -> &'static [&'static str] {
    match table {
        "search_token" => &["param", "system", "code"],
        "search_string" => &["param", "normalized", "exact"],
        "search_reference" => &["param", "target_type", "target_id", "target_version", "url"],
        "search_date" => &["param", "start_us", "end_us"],
        "search_number" => &["param", "low", "high", "system", "code"],
        "search_uri" => &["param", "value"],
        _ => &["param", "token"],
    }
}

/// The stored index rows of a version, as JSON `[[table, value…], …]` with the values in
/// [`key_columns`] order, kept with the version so the next write can remove exactly these rows.
/// Values are codes and blind tokens only, never PHI (that is what the index tables hold too).
pub fn manifest(rows: &[IndexRow]) -> Option<String> {
    if rows.is_empty() {
        return None;
    }
    let entries: Vec<serde_json::Value> = rows
        .iter()
        .map(|row| {
            let table = TABLES.iter().position(|t| *t == row.table()).unwrap_or_default();
            let mut entry = vec![serde_json::Value::from(table)];
            entry.extend(row.binds().into_iter().map(|bind| match bind {
                Bind::Int(int) => serde_json::Value::from(int),
                Bind::Real(real) => serde_json::Value::from(real),
                Bind::Text(text) => serde_json::Value::from(text),
                Bind::Null | Bind::NullBlob | Bind::Blob(_) => serde_json::Value::Null,
            }));
            serde_json::Value::Array(entry)
        })
        .collect();
    Some(serde_json::Value::Array(entries).to_string())
}

/// The keys a [`manifest`] recorded, by table: each row's values in [`key_columns`] order.
fn manifest_keys(manifest: &str) -> Result<Vec<(&'static str, Vec<Bind>)>, sqlx::Error> {
    let corrupt = || sqlx::Error::Protocol("a stored index manifest is unreadable".into());
    let entries: Vec<Vec<serde_json::Value>> = serde_json::from_str(manifest).map_err(|_| corrupt())?;
    entries
        .into_iter()
        .map(|entry| {
            let (table, values) = entry.split_first().ok_or_else(corrupt)?;
            let table = table.as_u64().and_then(|t| TABLES.get(t as usize)).ok_or_else(corrupt)?;
            let binds = values
                .iter()
                .map(|value| match value {
                    serde_json::Value::String(text) => Ok(Bind::Text(text.clone())),
                    serde_json::Value::Number(n) if *table == "search_number" => n.as_f64().map(Bind::Real).ok_or_else(corrupt),
                    serde_json::Value::Number(n) => n.as_i64().map(Bind::Int).ok_or_else(corrupt),
                    _ => Err(corrupt()),
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok((*table, binds))
        })
        .collect()
}

/// Remove the index rows a version's [`manifest`] recorded for (`resource_type`, `id`).
pub async fn delete_rows(conn: &mut Conn, resource_type: &str, id: &str, manifest: &str) -> Result<(), sqlx::Error> {
    let keys = manifest_keys(manifest)?;
    let backend = super::Backend::of(conn);
    for table in TABLES {
        let of_table: Vec<&Vec<Bind>> = keys.iter().filter(|(t, _)| *t == table).map(|(_, binds)| binds).collect();
        for chunk in fixed_chunks(&of_table) {
            let mut binds = Vec::new();
            let mut terms = Vec::with_capacity(chunk.len());
            for values in chunk {
                let columns = ["resource_type"].iter().chain(key_columns(table)).chain(&["id"]);
                let row_binds = [Bind::Text(resource_type.to_string())].into_iter().chain(values.iter().cloned()).chain([Bind::Text(id.to_string())]);
                let mut conditions = Vec::new();
                for (column, bind) in columns.zip(row_binds) {
                    binds.push(bind);
                    conditions.push(format!("{column} = {}", backend.placeholder(binds.len())));
                }
                terms.push(format!("({})", conditions.join(" AND ")));
            }
            let sql = format!("DELETE FROM {table} WHERE {}", terms.join(" OR "));
            bind_all(sqlx::query(AssertSqlSafe(sql)), binds).execute(&mut *conn).await?;
        }
    }
    Ok(())
}

/// Insert the index rows of many resources: one multi-row INSERT per table (per chunk).
pub async fn insert_rows(conn: &mut Conn, resources: &[(&str, &str, &[IndexRow])]) -> Result<(), sqlx::Error> {
    for table in TABLES {
        let of_table: Vec<(&str, &str, &IndexRow)> = resources
            .iter()
            .flat_map(|(t, id, rows)| rows.iter().filter(|row| row.table() == table).map(move |row| (*t, *id, row)))
            .collect();
        for chunk in fixed_chunks(&of_table) {
            insert_chunk(conn, chunk).await?;
        }
    }
    Ok(())
}

async fn insert_chunk(conn: &mut Conn, chunk: &[(&str, &str, &IndexRow)]) -> Result<(), sqlx::Error> {
    let Some((_, _, first)) = chunk.first() else { return Ok(()) };
    let backend = super::Backend::of(conn);
    let mut binds = Vec::new();
    let mut tuples = Vec::with_capacity(chunk.len());
    for (resource_type, id, row) in chunk {
        let mut placeholders = Vec::new();
        for bind in [Bind::Text(resource_type.to_string())].into_iter().chain(row.binds()).chain([Bind::Text(id.to_string())]) {
            binds.push(bind);
            placeholders.push(backend.placeholder(binds.len()));
        }
        tuples.push(format!("({})", placeholders.join(", ")));
    }
    // Rows are keys: a value a resource yields twice (two codings alike, two blind terms whose
    // truncated tokens coincide) is one row.
    let sql = format!(
        "INSERT INTO {} (resource_type, {}, id) VALUES {} ON CONFLICT DO NOTHING",
        first.table(),
        key_columns(first.table()).join(", "),
        tuples.join(", ")
    );
    bind_all(sqlx::query(AssertSqlSafe(sql)), binds).execute(&mut *conn).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{Bind, IndexRow, fixed_chunks, manifest, manifest_keys};

    #[test]
    fn manifest_gives_back_the_exact_keys_that_were_written() {
        let rows = vec![
            IndexRow::Token { param: "code".into(), system: None, code: Some("8867-4".into()) },
            IndexRow::Number { param: "value-quantity".into(), low: 0.1 + 0.2, high: 1e300, system: None, code: Some("/min".into()) },
            IndexRow::Date { param: "date".into(), start: -62_135_596_800_000_000, end: i64::MAX },
            IndexRow::Blind { param: "name".into(), token: "a1b2c3d4e5f6".into() },
        ];
        let keys = manifest_keys(&manifest(&rows).expect("rows")).expect("readable");
        let expected: Vec<(&str, Vec<Bind>)> = rows.iter().map(|row| (row.table(), row.binds())).collect();
        assert_eq!(keys, expected);
        assert_eq!(keys[0].1[1], Bind::Text(String::new()), "an absent system is stored as ''");
        assert!(manifest(&[]).is_none());
        assert!(manifest_keys("[[99, \"x\"]]").is_err());
    }

    #[test]
    fn chunks_use_few_shapes_and_cover_everything() {
        let items: Vec<u32> = (0..150).collect();
        let chunks = fixed_chunks(&items);
        assert_eq!(chunks.iter().map(|c| c.len()).collect::<Vec<_>>(), [64, 64, 16, 4, 1, 1]);
        assert_eq!(chunks.concat(), items);
        assert!(fixed_chunks::<u32>(&[]).is_empty());
    }
}
