//! Index entries: what each search parameter finds in a resource, computed at write time.
//!
//! Search runs on index rows, never on decrypted resources (DESIGN.md), so everything a query can
//! match has to be taken out of the resource here. The shape follows Blaze's `token.clj`
//! `index-entries`: the registry's FHIRPath expression selects nodes, and one small function per
//! FHIR datatype turns a node into [`IndexValue`]s — so the semantics of, say, a token search on an
//! `Identifier` fit on one screen and are tested row by row.
//!
//! A node's datatype comes from the expression when it says so (`valueQuantity`, `as Period`) and
//! otherwise from the JSON shape (an object with `family` is a HumanName, one with `coding` a
//! CodeableConcept); see [`Shape`].
//!
//! Conventions, fixed here so the query side can rely on them:
//! - **Dates** are ranges of microseconds since the Unix epoch, **half-open** `[start, end)` as in
//!   `crate::fhir::instant`: `2026` is `[2026-01-01T00:00Z, 2027-01-01T00:00Z)`, `2026-03-05T10:00`
//!   is that minute, `…T10:00:00.123Z` that millisecond. Open ends of a Period are
//!   `i64::MIN` / `i64::MAX`. Values without a time zone (dates, and dateTimes that omit one) are
//!   taken as UTC. [`parse_date_range`] is public so query values get the same treatment.
//! - **Numbers and quantities** carry the range implied by their significant digits, `low`
//!   inclusive and `high` exclusive: `100` is `[99.5, 100.5)`, `100.00` is `[99.995, 100.005)`,
//!   `1e2` is `[50, 150)` (one significant digit). Unbounded ends (a `<5` quantity, a Range without
//!   `high`) are `f64::MIN` / `f64::MAX`, finite so that every database stores them.
//! - Malformed parts of a resource produce no entry; nothing here panics.

//!
//! # Layout
//!
//! One file per search parameter type, each holding the functions for the datatypes that type
//! indexes: [`string`] (string, HumanName, Address), [`token`] (code, Coding, CodeableConcept,
//! Identifier, ContactPoint), [`reference`] (Reference, canonical, embedded resources),
//! [`date`] (date, dateTime, instant, Period, Timing), [`quantity`] (number, Quantity, Money,
//! Range); `uri` is small enough to live here.

pub mod date;
pub mod quantity;
pub mod reference;
pub mod string;
pub mod token;

#[cfg(test)]
mod tests;

use serde_json::Value;
use tracing::debug;

use crate::search::fhirpath::{Expression, FhirPathError, Node};
use crate::search::registry::{ParamType, SearchParam, SearchParamRegistry};

pub use date::parse_date_range;
pub use quantity::decimal_range;
pub use string::normalize_string;

/// One value a search parameter can match.
#[derive(Debug, Clone, PartialEq)]
pub enum IndexValue {
    /// String params: `normalized` is case- and accent-folded for the default starts-with
    /// search (see [`normalize_string`]), `exact` is as written, for `:exact`.
    String {
        normalized: String,
        exact: String,
    },
    /// Token params: system and code as present; `text` is the display or text, for `:text`.
    Token {
        system: Option<String>,
        code: Option<String>,
        text: Option<String>,
    },
    /// Reference params: the target parsed from a relative or absolute literal reference
    /// (`version` from `/_history/n`, or from `|version` of a canonical); `url` is the reference
    /// as written (a canonical without its `|version`).
    Reference {
        target_type: Option<String>,
        target_id: Option<String>,
        version: Option<String>,
        url: String,
    },
    /// One coding of an Identifier's `type` with the identifier's value, for `:of-type`
    /// (`[type system]|[type code]|[value]`). Only codings with both a system and a code.
    IdentifierOfType {
        system: String,
        code: String,
        value: String,
    },
    /// A logical reference (`Reference.identifier`), for `:identifier` searches.
    ReferenceIdentifier {
        system: Option<String>,
        value: Option<String>,
    },
    /// Date params: the instants the value covers, µs since the epoch, `[start, end)`.
    Date {
        start: i64,
        end: i64,
    },
    /// Number params: the value, its implied range `[low, high)` and the decimal as written.
    Number {
        value: f64,
        low: f64,
        high: f64,
        text: String,
    },
    /// Quantity params: the value and implied range as for numbers, plus the unit.
    Quantity {
        value: f64,
        low: f64,
        high: f64,
        system: Option<String>,
        code: Option<String>,
        unit: Option<String>,
    },
    Uri {
        value: String,
    },
    /// Composite params: one entry per combination of component values, in component order.
    Composite {
        components: Vec<IndexValue>,
    },
}

/// One index row: a parameter and one value it matches.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexEntry {
    pub param_code: String,
    pub param_url: String,
    pub value: IndexValue,
}

/// Upper bound on the combinations one composite node expands to, so a resource with many
/// codings and values cannot blow up the index.
const MAX_COMPOSITE_COMBINATIONS: usize = 256;

/// All index entries of a resource for every indexed search parameter of its type.
///
/// Never panics; a parameter whose expression fails on this resource is logged (by url, never
/// with resource content) and skipped.
pub fn extract(registry: &SearchParamRegistry, resource: &Value) -> Vec<IndexEntry> {
    let Some(resource_type) = resource.get("resourceType").and_then(Value::as_str) else {
        return Vec::new();
    };
    let mut entries = Vec::new();
    for param in registry.params_for(resource_type) {
        // A union's values are its members' rows (see `crate::search::union_params`).
        if param.kind == ParamType::Special || registry.is_union(resource_type, &param.code) {
            continue;
        }
        let Some(expression) = param.expression_for(resource_type) else {
            continue;
        };
        let values = match param_values(param, expression, resource) {
            Ok(values) => values,
            Err(error) => {
                debug!(url = %param.url, %resource_type, %error, "search parameter not indexed");
                continue;
            }
        };
        let values = match registry.implied_systems.get(resource_type, &param.code) {
            Some(system) => with_system(values, system),
            None => values,
        };
        entries.extend(dedupe(values).into_iter().map(|value| IndexEntry {
            param_code: param.code.clone(),
            param_url: param.url.clone(),
            value,
        }));
    }
    entries
}

/// Tokens of `code` elements with the system their binding implies
/// ([`crate::search::code_systems`]).
fn with_system(mut values: Vec<IndexValue>, implied: &str) -> Vec<IndexValue> {
    for value in &mut values {
        if let IndexValue::Token {
            system: system @ None,
            ..
        } = value
        {
            *system = Some(implied.to_string());
        }
    }
    values
}

/// Drops repeated values, keeping the first of each. Hashes a rendering of the value when there
/// are many (a Group with thousands of members), since `f64` fields rule out `Hash`.
fn dedupe(values: Vec<IndexValue>) -> Vec<IndexValue> {
    const LINEAR_UP_TO: usize = 32;
    let mut unique: Vec<IndexValue> = Vec::with_capacity(values.len());
    if values.len() <= LINEAR_UP_TO {
        for value in values {
            if !unique.contains(&value) {
                unique.push(value);
            }
        }
    } else {
        let mut seen = std::collections::HashSet::with_capacity(values.len());
        unique.extend(values.into_iter().filter(|v| seen.insert(format!("{v:?}"))));
    }
    unique
}

/// The values one parameter finds in a resource (duplicates possible).
pub fn param_values(
    param: &SearchParam,
    expression: &Expression,
    resource: &Value,
) -> Result<Vec<IndexValue>, FhirPathError> {
    let nodes = expression.evaluate(resource)?;
    if param.kind != ParamType::Composite {
        return Ok(nodes
            .iter()
            .flat_map(|node| values_of(param.kind, node))
            .collect());
    }
    let mut out = Vec::new();
    'focus: for node in &nodes {
        let mut per_component = Vec::with_capacity(param.components.len());
        for component in &param.components {
            let values: Vec<IndexValue> = component
                .compiled
                .evaluate_at(node, resource)?
                .iter()
                .flat_map(|n| values_of(component.kind, n))
                .collect();
            if values.is_empty() {
                continue 'focus;
            }
            per_component.push(values);
        }
        out.extend(combinations(&per_component));
    }
    Ok(out)
}

/// The cartesian product of the component values, capped at [`MAX_COMPOSITE_COMBINATIONS`].
fn combinations(per_component: &[Vec<IndexValue>]) -> Vec<IndexValue> {
    let mut rows: Vec<Vec<IndexValue>> = vec![Vec::new()];
    for values in per_component {
        let mut next = Vec::with_capacity(rows.len() * values.len());
        'rows: for row in &rows {
            for value in values {
                if next.len() == MAX_COMPOSITE_COMBINATIONS {
                    break 'rows;
                }
                let mut row = row.clone();
                row.push(value.clone());
                next.push(row);
            }
        }
        rows = next;
    }
    rows.into_iter()
        .map(|components| IndexValue::Composite { components })
        .collect()
}

/// The index values of one node for a parameter of type `kind`.
pub fn values_of(kind: ParamType, node: &Node<'_>) -> Vec<IndexValue> {
    let value = node.value();
    let shape = Shape::of(node);
    match kind {
        ParamType::String => string::values(shape, value),
        ParamType::Token => token::values(shape, value),
        ParamType::Reference => reference::values(shape, value),
        // A choice like `Procedure.performed[x]` may be a string ("spring 2020"): only the
        // date types (or an untyped string) are read as dates.
        ParamType::Date
            if shape == Shape::Primitive && !is_date_type(node.fhir_type.as_deref()) =>
        {
            Vec::new()
        }
        ParamType::Date => date::values(shape, value).into_iter().collect(),
        ParamType::Number => quantity::number(value).into_iter().collect(),
        ParamType::Quantity => quantity::values(shape, value).into_iter().collect(),
        ParamType::Uri => uri(value).into_iter().collect(),
        ParamType::Composite | ParamType::Special => Vec::new(),
    }
}
fn is_date_type(fhir_type: Option<&str>) -> bool {
    matches!(fhir_type, None | Some("date" | "dateTime" | "instant"))
        || fhir_type.is_some_and(|t| t.eq_ignore_ascii_case("dateTime"))
}

// ---------------------------------------------------------------------------------------------
// Datatype detection

/// The FHIR datatypes extraction distinguishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// A JSON string, number or boolean (code, string, uri, date, decimal, boolean, …).
    Primitive,
    Coding,
    CodeableConcept,
    Identifier,
    ContactPoint,
    HumanName,
    Address,
    Reference,
    /// Quantity and its profiles Age, Duration, Distance, Count, SimpleQuantity.
    Quantity,
    Money,
    Range,
    Period,
    Timing,
    /// A whole resource (`Bundle.entry[0].resource`).
    Resource,
    /// Anything else (SampledData, Attachment, …): indexed by no parameter type.
    Other,
}

/// `ContactPoint.system` codes; an Identifier's system is a URI and never one of these.
const CONTACT_POINT_SYSTEMS: &[&str] = &["phone", "fax", "email", "pager", "url", "sms", "other"];

impl Shape {
    /// The node's datatype: its known FHIR type, else inferred from its JSON.
    pub fn of(node: &Node<'_>) -> Shape {
        node.fhir_type
            .as_deref()
            .and_then(Shape::of_type)
            .unwrap_or_else(|| Shape::infer(node.value()))
    }

    fn of_type(fhir_type: &str) -> Option<Shape> {
        Some(match fhir_type {
            "Coding" => Shape::Coding,
            "CodeableConcept" => Shape::CodeableConcept,
            "Identifier" => Shape::Identifier,
            "ContactPoint" => Shape::ContactPoint,
            "HumanName" => Shape::HumanName,
            "Address" => Shape::Address,
            "Reference" => Shape::Reference,
            "Quantity" | "Age" | "Duration" | "Distance" | "Count" | "SimpleQuantity"
            | "MoneyQuantity" => Shape::Quantity,
            "Money" => Shape::Money,
            "Range" => Shape::Range,
            "Period" => Shape::Period,
            "Timing" => Shape::Timing,
            "SampledData" | "Attachment" | "Ratio" | "Annotation" | "Signature" | "Meta"
            | "Dosage" | "UsageContext" | "RelatedArtifact" | "ContactDetail" => Shape::Other,
            t if t.starts_with(|c: char| c.is_ascii_lowercase()) => Shape::Primitive,
            // Resource types and anything unknown: look at the JSON.
            _ => return None,
        })
    }

    /// Infers the datatype from the keys an object has.
    pub fn infer(value: &Value) -> Shape {
        let map = match value {
            Value::String(_) | Value::Number(_) | Value::Bool(_) => return Shape::Primitive,
            Value::Object(map) => map,
            Value::Null | Value::Array(_) => return Shape::Other,
        };
        let has = |key: &str| map.contains_key(key);
        let any = |keys: &[&str]| keys.iter().any(|k| map.contains_key(*k));
        if has("resourceType") {
            Shape::Resource
        } else if has("coding") {
            Shape::CodeableConcept
        } else if has("reference") || map.get("identifier").is_some_and(Value::is_object) {
            Shape::Reference
        } else if any(&["family", "given", "prefix", "suffix"]) {
            Shape::HumanName
        } else if any(&["line", "city", "district", "state", "postalCode", "country"]) {
            Shape::Address
        } else if has("currency") {
            Shape::Money
        } else if any(&["low", "high"]) {
            Shape::Range
        } else if any(&["start", "end"]) {
            Shape::Period
        } else if any(&["event", "repeat"]) {
            Shape::Timing
        } else if map.get("value").is_some_and(Value::is_number) {
            Shape::Quantity
        } else if map.get("value").is_some_and(Value::is_string) {
            let system = map.get("system").and_then(Value::as_str);
            if has("rank") || system.is_some_and(|s| CONTACT_POINT_SYSTEMS.contains(&s)) {
                Shape::ContactPoint
            } else {
                Shape::Identifier
            }
        } else if any(&["type", "assigner"]) {
            Shape::Identifier
        } else if any(&["code", "system"]) {
            Shape::Coding
        } else if has("text") {
            Shape::CodeableConcept
        } else if has("display") {
            Shape::Reference
        } else {
            Shape::Other
        }
    }
}

/// A non-blank string field of an object.
pub(super) fn text_field(value: &Value, key: &str) -> Option<String> {
    value
        .get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
        .map(str::to_owned)
}

/// The non-blank strings of a field that is an array of strings (or a single one).
pub(super) fn text_list<'v>(value: &'v Value, key: &str) -> impl Iterator<Item = &'v str> {
    let items: &[Value] = match value.get(key) {
        Some(Value::Array(items)) => items,
        Some(one @ Value::String(_)) => std::slice::from_ref(one),
        _ => &[],
    };
    items
        .iter()
        .filter_map(Value::as_str)
        .filter(|s| !s.trim().is_empty())
}
// ---------------------------------------------------------------------------------------------
// uri

/// uri, url, canonical, oid, uuid: the text as written.
pub fn uri(value: &Value) -> Option<IndexValue> {
    let text = value.as_str()?.trim();
    (!text.is_empty()).then(|| IndexValue::Uri {
        value: text.to_owned(),
    })
}
