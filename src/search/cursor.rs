//! Keyset paging for searches: a page link carries the sort values of the row it continues
//! from, so the next page starts after that row however many resources were written or deleted
//! in between. An offset would skip or repeat rows whenever the table moved.
//!
//! The cursor is opaque to clients (base64url JSON); its values are only ever bound as query
//! parameters. Sort values are never protected (PHI) parameters: those cannot be sorted by.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult};
use crate::store::Bind;

/// Where a page lies relative to the cursor row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// The rows after it (`next`).
    After,
    /// The rows before it (`previous`).
    Before,
    /// The last page (`last`): no row, counted from the end.
    Last,
}

/// The SQL type of a sort key, for decoding and binding its values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Int,
    Real,
    Text,
}

/// One ORDER BY key of a search: a column of the ordered subquery (`id`, `k0`, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderKey {
    pub column: String,
    pub descending: bool,
    /// Sorted last in both directions when NULL (a resource without the value).
    pub nullable: bool,
    pub kind: KeyKind,
}

/// `ORDER BY` for `keys`, or for the reverse order (to read a page backwards).
pub fn order_sql(keys: &[OrderKey], reverse: bool) -> String {
    keys.iter()
        .map(|key| {
            let descending = key.descending != reverse;
            let direction = if descending { "DESC" } else { "ASC" };
            if key.nullable {
                let nulls = if reverse { "DESC" } else { "ASC" };
                format!("({c} IS NULL) {nulls}, {c} {direction}", c = key.column)
            } else {
                format!("{} {direction}", key.column)
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A decoded `_cursor`.
#[derive(Debug, Clone, PartialEq)]
pub struct Cursor {
    pub direction: Direction,
    /// The row's value for each order key (empty for [`Direction::Last`]).
    pub values: Vec<Value>,
    /// Fingerprint of the caller the page link was made for (restricted callers only): a link
    /// replayed by someone else is refused rather than paging through the first caller's view.
    pub owner: Option<String>,
    /// The total of the page the link was made on, for the pages after it: counted once per
    /// search rather than once per page (`_total=accurate` counts on every page regardless).
    pub total: Option<PageTotal>,
}

/// `Bundle.total` as a page found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageTotal {
    Counted(i64),
    /// Counting took longer than `store.count_timeout_ms`; the page had no total.
    LeftOut,
}

impl PageTotal {
    /// The number for `Bundle.total`, if there is one.
    pub fn counted(self) -> Option<i64> {
        match self {
            PageTotal::Counted(total) => Some(total),
            PageTotal::LeftOut => None,
        }
    }
}

impl Cursor {
    pub fn encode(&self) -> String {
        let direction = match self.direction {
            Direction::After => "a",
            Direction::Before => "b",
            Direction::Last => "l",
        };
        let mut cursor = json!({"d": direction, "v": self.values});
        if let Some(owner) = &self.owner {
            cursor["o"] = json!(owner);
        }
        match self.total {
            Some(PageTotal::Counted(total)) => cursor["t"] = json!(total),
            Some(PageTotal::LeftOut) => cursor["t"] = json!("-"),
            None => {}
        }
        URL_SAFE_NO_PAD.encode(cursor.to_string())
    }

    pub fn decode(text: &str) -> ApiResult<Cursor> {
        let invalid = || {
            ApiError::bad_request("_cursor is not a page cursor this server issued for this search")
        };
        let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| invalid())?;
        let value: Value = serde_json::from_slice(&bytes).map_err(|_| invalid())?;
        let direction = match value["d"].as_str() {
            Some("a") => Direction::After,
            Some("b") => Direction::Before,
            Some("l") => Direction::Last,
            _ => return Err(invalid()),
        };
        let values = value["v"].as_array().cloned().ok_or_else(invalid)?;
        let owner = value["o"].as_str().map(str::to_string);
        let total = match &value["t"] {
            Value::Null => None,
            Value::String(text) if text == "-" => Some(PageTotal::LeftOut),
            total => Some(PageTotal::Counted(total.as_i64().ok_or_else(invalid)?)),
        };
        Ok(Cursor {
            direction,
            values,
            owner,
            total,
        })
    }

    /// The condition selecting the rows on the cursor's side of its row, in the order of
    /// `keys`; `bind` turns a value into a placeholder. `None` when the cursor has no row.
    pub fn condition(
        &self,
        keys: &[OrderKey],
        bind: &mut dyn FnMut(Bind) -> String,
    ) -> ApiResult<Option<String>> {
        if self.direction == Direction::Last {
            return Ok(None);
        }
        if self.values.len() != keys.len() {
            return Err(ApiError::bad_request(
                "_cursor belongs to a search with a different _sort",
            ));
        }
        let mut binds = Vec::with_capacity(keys.len());
        for (key, value) in keys.iter().zip(&self.values) {
            binds.push(to_bind(key, value)?);
        }
        Ok(Some(beyond(
            keys,
            &binds,
            self.direction == Direction::After,
            bind,
        )))
    }
}

/// `Some(bind)` for a value of `key`'s kind, `None` for NULL.
fn to_bind(key: &OrderKey, value: &Value) -> ApiResult<Option<Bind>> {
    let invalid =
        || ApiError::bad_request("_cursor holds a value of the wrong type for its sort key");
    Ok(match (value, key.kind) {
        (Value::Null, _) if key.nullable => None,
        (Value::Number(n), KeyKind::Int) => Some(Bind::Int(n.as_i64().ok_or_else(invalid)?)),
        (Value::Number(n), KeyKind::Real) => Some(Bind::Real(n.as_f64().ok_or_else(invalid)?)),
        (Value::String(s), KeyKind::Text) => Some(Bind::Text(s.clone())),
        _ => return Err(invalid()),
    })
}

/// Rows strictly after (`after`) or before the row with `values`, in the order of `keys`, where
/// a NULL sorts after every value.
fn beyond(
    keys: &[OrderKey],
    values: &[Option<Bind>],
    after: bool,
    bind: &mut dyn FnMut(Bind) -> String,
) -> String {
    let Some((key, rest_keys)) = keys.split_first() else {
        return "1 = 0".into();
    };
    let (value, rest_values) = (&values[0], &values[1..]);
    let column = &key.column;
    let rest = if rest_keys.is_empty() {
        "1 = 0".to_string()
    } else {
        beyond(rest_keys, rest_values, after, bind)
    };
    let greater = if key.descending == after { "<" } else { ">" };
    match value {
        // Only NULLs come after a NULL; every value comes before it.
        None if after => format!("({column} IS NULL AND ({rest}))"),
        None => format!("({column} IS NOT NULL OR ({column} IS NULL AND ({rest})))"),
        Some(value) => {
            let placeholder = bind(value.clone());
            let strictly = format!("{column} {greater} {placeholder}");
            let tie = format!("({column} = {placeholder} AND ({rest}))");
            match (key.nullable, after) {
                (true, true) => format!("({column} IS NULL OR {strictly} OR {tie})"),
                _ => format!("({strictly} OR {tie})"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let cursor = Cursor {
            direction: Direction::Before,
            values: vec![json!(12), Value::Null, json!("abc")],
            owner: None,
            total: None,
        };
        assert_eq!(Cursor::decode(&cursor.encode()).unwrap(), cursor);
        for total in [
            PageTotal::Counted(0),
            PageTotal::Counted(1234),
            PageTotal::LeftOut,
        ] {
            let cursor = Cursor {
                total: Some(total),
                owner: Some("caller".into()),
                ..cursor.clone()
            };
            assert_eq!(Cursor::decode(&cursor.encode()).unwrap(), cursor);
        }
        assert!(
            Cursor::decode(&URL_SAFE_NO_PAD.encode("{\"d\":\"a\",\"v\":[],\"t\":\"x\"}")).is_err()
        );
        assert!(Cursor::decode("not base64 !").is_err());
        assert!(Cursor::decode(&URL_SAFE_NO_PAD.encode("{\"d\":\"x\",\"v\":[]}")).is_err());
    }

    #[test]
    fn reverse_order_flips_directions_and_nulls() {
        let keys = [
            OrderKey {
                column: "k0".into(),
                descending: true,
                nullable: true,
                kind: KeyKind::Int,
            },
            OrderKey {
                column: "id".into(),
                descending: false,
                nullable: false,
                kind: KeyKind::Text,
            },
        ];
        assert_eq!(order_sql(&keys, false), "(k0 IS NULL) ASC, k0 DESC, id ASC");
        assert_eq!(order_sql(&keys, true), "(k0 IS NULL) DESC, k0 ASC, id DESC");
    }
}
