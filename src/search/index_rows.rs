//! From extracted index values to stored index rows. Plain values for ordinary parameters;
//! blind tokens for what [`super::phi`] protects. The query side builds its tokens with the
//! same [`BlindTerm`], so what is written and what is looked up cannot disagree.

use std::collections::{HashMap, HashSet};

use chrono::{Datelike, TimeZone, Utc};
use serde_json::Value;

use super::extract::{IndexEntry, IndexValue, extract, normalize_string};
use super::phi::{
    BLIND_TOKEN_BITS, MAX_PREFIX_CHARS, SEGMENT_SEPARATORS, displays_indexed, is_protected,
    is_segmented, is_unindexed, of_type_param, reference_identifier_param, text_param,
};
use super::registry::SearchParamRegistry;
use super::ucum;
use crate::crypto::{KeyRing, prefix_tokens};
use crate::store::index::IndexRow;

/// What a blind token stands for. Each kind gets its own tag so equal text in different roles
/// (a code and a name prefix) never share a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlindTerm<'a> {
    /// A starts-with prefix of a case- and accent-folded string.
    Prefix(&'a str),
    /// A string exactly as written (`:exact`).
    Exact(&'a str),
    /// A token code, whatever its system.
    Code(&'a str),
    /// `system|code`.
    SystemCode(&'a str, &'a str),
    /// A code that has no system (`|code`).
    CodeWithoutSystem(&'a str),
    /// A calendar date at one precision: `1980`, `1980-03` or `1980-03-05`.
    Date(&'a str),
    /// One whole word of a code's folded display text (`:text`).
    Word(&'a str),
    /// An identifier's type system, type code and value together (`:of-type`).
    OfType(&'a str, &'a str, &'a str),
}

impl BlindTerm<'_> {
    fn tagged(&self) -> String {
        match self {
            BlindTerm::Prefix(p) => format!("p:{p}"),
            BlindTerm::Exact(e) => format!("e:{e}"),
            BlindTerm::Code(c) => format!("c:{c}"),
            BlindTerm::SystemCode(s, c) => format!("s:{s}|{c}"),
            BlindTerm::CodeWithoutSystem(c) => format!("n:{c}"),
            BlindTerm::Date(d) => format!("d:{d}"),
            BlindTerm::Word(w) => format!("w:{w}"),
            // U+001F cannot occur in a stored value, so the three parts cannot run together.
            BlindTerm::OfType(s, c, v) => format!("t:{s}\u{1f}{c}\u{1f}{v}"),
        }
    }

    /// The token stored for this term of parameter `code` on `resource_type`.
    pub fn token(&self, keys: &KeyRing, resource_type: &str, code: &str) -> String {
        keys.blind_token(
            &format!("{resource_type}.{code}"),
            &self.tagged(),
            BLIND_TOKEN_BITS,
        )
    }
}

/// Every index row of `resource`.
pub fn rows_for(
    registry: &SearchParamRegistry,
    keys: &KeyRing,
    resource_type: &str,
    resource: &Value,
) -> Vec<IndexRow> {
    let mut rows = Vec::new();
    let mut blind = |param: &str, term: &OwnedTerm| {
        let token = term.as_term().token(keys, resource_type, param);
        rows.push(IndexRow::Blind {
            param: param.to_string(),
            token,
        });
    };
    let mut plain = Vec::new();
    let entries = extract(registry, resource);
    let known_words = known_display_words(registry, resource_type, &entries);
    for entry in entries {
        let code = entry.param_code;
        if is_unindexed(&code) {
            continue;
        }
        let Some(kind) = registry.get(resource_type, &code).map(|p| p.kind) else {
            continue;
        };
        match entry.value {
            // Identifiers inside references and display texts are always protected.
            IndexValue::ReferenceIdentifier { system, value } => {
                let token = IndexValue::Token {
                    system,
                    code: value,
                    text: None,
                };
                for term in blind_terms(&token, false) {
                    blind(&reference_identifier_param(&code), &term);
                }
            }
            // An identifier's type and value identify as much as the identifier itself.
            IndexValue::IdentifierOfType {
                system,
                code: type_code,
                value,
            } => blind(
                &of_type_param(&code),
                &OwnedTerm::OfType(system, type_code, value),
            ),
            value if is_protected(registry, resource_type, &code, kind) => {
                for term in blind_terms(&value, is_segmented(resource_type, &code)) {
                    blind(&code, &term);
                }
                if let IndexValue::Token {
                    text: Some(text), ..
                } = &value
                    && displays_indexed(resource_type)
                {
                    for term in text_terms(text) {
                        blind(&text_param(&code), &term);
                    }
                }
            }
            IndexValue::Token {
                system,
                code: token_code,
                text,
            } => {
                let known_display = has_known_display(
                    registry,
                    system.as_deref(),
                    token_code.as_deref(),
                    text.as_deref(),
                );
                if let Some(text) = text.as_ref().filter(|_| displays_indexed(resource_type)) {
                    let known = known_words.get(code.as_str());
                    let normalized = normalize_string(text);
                    for word in text_words(&normalized) {
                        if !known.is_some_and(|known| known.contains(word)) {
                            blind(&text_param(&code), &OwnedTerm::Word(word.to_string()));
                        }
                    }
                }
                plain.push(IndexRow::Token {
                    param: code,
                    system,
                    code: token_code,
                    known_display,
                });
            }
            value => plain.extend(plain_rows(&code, value)),
        }
    }
    // A concept's `text` alone is a token row without system and code: it says only that the
    // parameter has a value (`:missing=false`), which its codings' rows already say.
    let coded: HashSet<String> = plain
        .iter()
        .filter_map(|row| match row {
            IndexRow::Token {
                param,
                system,
                code,
                ..
            } if system.is_some() || code.is_some() => Some(param.clone()),
            _ => None,
        })
        .collect();
    plain.retain(|row| {
        !matches!(row, IndexRow::Token { param, system: None, code: None, .. } if coded.contains(param))
    });
    // The same value can be reached twice (a coding listed twice, `name` and `given` of one
    // part); store it once. Rows per resource are few, so a linear check is cheapest.
    let mut unique: Vec<IndexRow> = Vec::with_capacity(rows.len() + plain.len());
    for row in rows.into_iter().chain(plain) {
        match unique.iter_mut().find(|kept| same_row(kept, &row)) {
            // A coding written twice, once with its known display: the row says it has it.
            Some(IndexRow::Token { known_display, .. }) => {
                if let IndexRow::Token {
                    known_display: true,
                    ..
                } = row
                {
                    *known_display = true;
                }
            }
            Some(_) => {}
            None => unique.push(row),
        }
    }
    unique
}

/// Whether two rows are the same stored row (token rows that differ only in `known_display` are).
fn same_row(a: &IndexRow, b: &IndexRow) -> bool {
    match (a, b) {
        (
            IndexRow::Token {
                param,
                system,
                code,
                ..
            },
            IndexRow::Token {
                param: p,
                system: s,
                code: c,
                ..
            },
        ) => param == p && system == s && code == c,
        _ => a == b,
    }
}

/// Whether `system|code` is catalogued and `display` has exactly the words of its known display.
fn has_known_display(
    registry: &SearchParamRegistry,
    system: Option<&str>,
    code: Option<&str>,
    display: Option<&str>,
) -> bool {
    let (Some(system), Some(code), Some(display)) = (system, code, display) else {
        return false;
    };
    let known: Vec<&str> = registry.known_displays.words_of(system, code).collect();
    // Both sorted and without repeats: `words_of` from a set, `text_words` by construction.
    !known.is_empty() && text_words(&normalize_string(display)) == known
}

/// Per plain token parameter, the words of the known displays of the resource's codings under it
/// that carry exactly that display ([`crate::search::known_displays`]): `:text` finds those words
/// through the codings' token rows, so they need no blind rows of their own.
fn known_display_words<'r>(
    registry: &'r SearchParamRegistry,
    resource_type: &str,
    entries: &[IndexEntry],
) -> HashMap<&'r str, HashSet<&'r str>> {
    let mut words: HashMap<&str, HashSet<&str>> = HashMap::new();
    if registry.known_displays.is_empty() {
        return words;
    }
    for entry in entries {
        let IndexValue::Token {
            system: Some(system),
            code: Some(code),
            text,
        } = &entry.value
        else {
            continue;
        };
        if !has_known_display(registry, Some(system), Some(code), text.as_deref()) {
            continue;
        }
        let Some(param) = registry.get(resource_type, &entry.param_code) else {
            continue;
        };
        if is_protected(registry, resource_type, &param.code, param.kind) {
            continue;
        }
        words
            .entry(param.code.as_str())
            .or_default()
            .extend(registry.known_displays.words_of(system, code));
    }
    words
}

/// The patient compartment a resource belongs to (its sharding key): a Patient is its own; other
/// resources take the first Patient of this server their compartment parameters reference
/// (relative, or absolute on `base_url`). A Patient on another server is another person, even
/// with the same id: it puts the resource in no compartment of ours (its `$everything`, its
/// Consents).
pub fn patient_compartment(
    registry: &SearchParamRegistry,
    resource_type: &str,
    id: &str,
    rows: &[IndexRow],
    base_url: &str,
) -> Option<String> {
    if resource_type == "Patient" {
        return Some(id.to_string());
    }
    let params = registry.patient_links(resource_type);
    rows.iter().find_map(|row| match row {
        IndexRow::Reference {
            param,
            target_type: Some(t),
            target_id: Some(target),
            url,
            ..
        } if t == "Patient"
            && params.iter().any(|p| p == param)
            && is_on_this_server(url, base_url) =>
        {
            Some(target.clone())
        }
        _ => None,
    })
}

/// A reference that is relative, or absolute on `base_url` (`base_url` without a trailing `/`):
/// what the planner's `local_reference` (src/search/plan.rs) checks in SQL.
fn is_on_this_server(url: &str, base_url: &str) -> bool {
    !url.contains("://")
        || url
            .strip_prefix(base_url)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// What a resource's head records of its Patient compartment (`resource_heads.compartment` and
/// `compartment_complete`), as every writer of a head computes it from the version's rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeadCompartment {
    /// [`patient_compartment`].
    pub patient: Option<String>,
    /// [`compartment_is_complete`].
    pub complete: bool,
}

impl HeadCompartment {
    /// `base_url`: this server's, against which absolute references are local or not.
    pub fn of(
        registry: &SearchParamRegistry,
        resource_type: &str,
        id: &str,
        rows: &[IndexRow],
        base_url: &str,
    ) -> Self {
        let patient = patient_compartment(registry, resource_type, id, rows, base_url);
        let complete = compartment_is_complete(patient.as_deref(), rows);
        Self { patient, complete }
    }

    /// A delete marker's: no rows, no patient, so nothing to follow
    /// ([`compartment_is_complete`] of no rows).
    pub fn of_delete_marker() -> Self {
        Self {
            patient: None,
            complete: true,
        }
    }
}

/// Whether `compartment` (from [`patient_compartment`]) names every Patient a resource with `rows`
/// references: each of its reference rows to a Patient, through any parameter (a patient link or
/// not), is relative and points at `compartment`; vacuously true when it has none. The head row
/// records this next to the compartment (`resource_heads.compartment_complete`), so that the
/// clinician's rule ("some patient link points at a Patient of the organisation") can be answered
/// by checking the compartment's Patient alone (`Criterion::PatientLink` in the planner): the
/// compartment is the first Patient a patient link points at, so when it is the only Patient
/// referenced, every link that points at a Patient points at it.
///
/// `false` only costs speed (the planner then follows every link, as it always did); a wrong
/// `true` could answer from the wrong Patient, so every doubt is `false`: a second Patient; a
/// Patient named by an absolute URL, even one on our own base (the link-by-link check takes
/// those, this function does not know the base, and they are rare); a reference typed `Patient`
/// without a literal id (`urn:uuid:…` or `#contained` with `type`). References that are no rows
/// here (a logical `identifier` only, an unparsable literal) are invisible to the link-by-link
/// check as well. Migration 0011 computes the same from stored rows.
pub fn compartment_is_complete(compartment: Option<&str>, rows: &[IndexRow]) -> bool {
    rows.iter().all(|row| match row {
        IndexRow::Reference {
            target_type: Some(t),
            target_id,
            url,
            ..
        } if t == "Patient" => {
            compartment.is_some() && target_id.as_deref() == compartment && !url.contains("://")
        }
        _ => true,
    })
}

/// Owned form of [`BlindTerm`], for building rows.
enum OwnedTerm {
    Prefix(String),
    Exact(String),
    Code(String),
    SystemCode(String, String),
    CodeWithoutSystem(String),
    Date(String),
    Word(String),
    OfType(String, String, String),
}

impl OwnedTerm {
    fn as_term(&self) -> BlindTerm<'_> {
        match self {
            OwnedTerm::Prefix(p) => BlindTerm::Prefix(p),
            OwnedTerm::Exact(e) => BlindTerm::Exact(e),
            OwnedTerm::Code(c) => BlindTerm::Code(c),
            OwnedTerm::SystemCode(s, c) => BlindTerm::SystemCode(s, c),
            OwnedTerm::CodeWithoutSystem(c) => BlindTerm::CodeWithoutSystem(c),
            OwnedTerm::Date(d) => BlindTerm::Date(d),
            OwnedTerm::Word(w) => BlindTerm::Word(w),
            OwnedTerm::OfType(s, c, v) => BlindTerm::OfType(s, c, v),
        }
    }
}

/// The terms that make a PHI value findable with the search semantics kept on blind indexes:
/// string starts-with and exact, token code and system|code, date equality at its precision.
/// The blind terms of a protected value; a `segmented` string's prefixes end only at whole
/// segments ([`super::phi::SEGMENTED`]).
fn blind_terms(value: &IndexValue, segmented: bool) -> Vec<OwnedTerm> {
    match value {
        IndexValue::String { normalized, exact } => {
            let prefixes = if segmented {
                segment_prefixes(normalized)
            } else {
                prefix_tokens(normalized, 1, MAX_PREFIX_CHARS)
            };
            let mut terms: Vec<OwnedTerm> = prefixes.into_iter().map(OwnedTerm::Prefix).collect();
            terms.push(OwnedTerm::Exact(exact.clone()));
            terms
        }
        IndexValue::Token {
            system,
            code: Some(code),
            ..
        } => {
            let mut terms = vec![OwnedTerm::Code(code.clone())];
            match system {
                Some(system) => terms.push(OwnedTerm::SystemCode(system.clone(), code.clone())),
                None => terms.push(OwnedTerm::CodeWithoutSystem(code.clone())),
            }
            terms
        }
        IndexValue::Date { start, end } => date_terms(*start, *end)
            .into_iter()
            .map(OwnedTerm::Date)
            .collect(),
        _ => Vec::new(),
    }
}

/// The prefixes of `normalized` that end before a segment separator, and the whole value (up to
/// [`MAX_PREFIX_CHARS`] characters, like every prefix).
pub fn segment_prefixes(normalized: &str) -> Vec<String> {
    let limit = normalized
        .char_indices()
        .nth(MAX_PREFIX_CHARS)
        .map_or(normalized.len(), |(end, _)| end);
    let value = &normalized[..limit];
    let mut prefixes: Vec<String> = value
        .match_indices(SEGMENT_SEPARATORS)
        .map(|(end, _)| &value[..end])
        .filter(|prefix| !prefix.is_empty())
        .map(str::to_owned)
        .collect();
    prefixes.push(value.to_owned());
    prefixes.dedup();
    prefixes
}

/// Terms of a code's display text (`:text` search).
///
/// Whole words rather than every prefix: a display text is indexed once per coding and parameter,
/// and all prefixes of "Ambulatory ECG heart rate" would be two dozen rows for one code. `:text`
/// therefore matches when every word of the query is a word of the text.
fn text_terms(text: &str) -> Vec<OwnedTerm> {
    text_words(&normalize_string(text))
        .into_iter()
        .map(|w| OwnedTerm::Word(w.to_string()))
        .collect()
}

/// The distinct words of a folded text, as `:text` matches them.
pub fn text_words(normalized: &str) -> Vec<&str> {
    let mut words: Vec<&str> = normalized
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    words.sort_unstable();
    words.dedup();
    words
}

/// Calendar terms of a date range that covers a whole year, month or day (how birth dates are
/// written): the range's own precision and every coarser one, so `birthdate=1980` finds
/// `1980-03-05` while `birthdate=1980-03-05` does not find a value known only as `1980-03`.
pub fn date_terms(start: i64, end: i64) -> Vec<String> {
    let Some(first) = Utc.timestamp_micros(start).single() else {
        return Vec::new();
    };
    let (y, m, d) = (first.year(), first.month(), first.day());
    let day = 86_400_000_000_i64;
    let span = end - start;
    let mut terms = vec![format!("{y:04}")];
    if span <= 31 * day {
        terms.push(format!("{y:04}-{m:02}"));
    }
    if span <= day {
        terms.push(format!("{y:04}-{m:02}-{d:02}"));
    }
    terms
}

/// The form of a literal reference that may be stored as text: `Type/id[/_history/v]`, a local
/// `#id`, a `urn:uuid:`/`urn:oid:`, or an absolute URL without its query and fragment. Anything
/// else (a conditional reference's search, free text typed into `reference`) could carry PHI and
/// is not indexed.
pub fn safe_reference_url(url: &str) -> Option<String> {
    let is_id = |s: &str| crate::fhir::id::is_valid_id(s);
    let is_type = |s: &str| {
        !s.is_empty()
            && s.starts_with(|c: char| c.is_ascii_uppercase())
            && s.chars().all(|c| c.is_ascii_alphanumeric())
    };
    if let Some(local) = url.strip_prefix('#') {
        return (local.is_empty() || is_id(local)).then(|| url.to_string());
    }
    if url.starts_with("urn:uuid:") || url.starts_with("urn:oid:") {
        return url
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '-' | '.'))
            .then(|| url.to_string());
    }
    if let Some((scheme, rest)) = url.split_once("://") {
        let without_query = rest.split(['?', '#']).next().unwrap_or_default();
        let plausible =
            matches!(scheme, "http" | "https") && !without_query.chars().any(char::is_whitespace);
        return plausible.then(|| format!("{scheme}://{without_query}"));
    }
    match url.split('/').collect::<Vec<_>>().as_slice() {
        [t, id] if is_type(t) && is_id(id) => Some(url.to_string()),
        [t, id, "_history", v] if is_type(t) && is_id(id) && is_id(v) => Some(url.to_string()),
        _ => None,
    }
}

/// Rows for a non-PHI value.
fn plain_rows(code: &str, value: IndexValue) -> Vec<IndexRow> {
    let param = code.to_string();
    match value {
        IndexValue::String { normalized, exact } => vec![IndexRow::String {
            param,
            normalized,
            exact,
        }],
        IndexValue::Token { system, code, .. } => vec![IndexRow::Token {
            param,
            system,
            code,
            known_display: false,
        }],
        // Always protected; handled by `rows_for`.
        IndexValue::ReferenceIdentifier { .. } | IndexValue::IdentifierOfType { .. } => Vec::new(),
        IndexValue::Reference {
            target_type,
            target_id,
            version,
            url,
        } => match safe_reference_url(&url) {
            Some(url) => vec![IndexRow::Reference {
                param,
                target_type,
                target_id,
                target_version: version,
                url,
            }],
            None => Vec::new(),
        },
        IndexValue::Date { start, end } => vec![IndexRow::Date { param, start, end }],
        IndexValue::Number { low, high, .. } => vec![IndexRow::Number {
            param,
            low,
            high,
            system: None,
            code: None,
        }],
        IndexValue::Quantity {
            low,
            high,
            system,
            code: unit_code,
            ..
        } => {
            let canonical =
                canonical_quantity(&param, low, high, system.as_deref(), unit_code.as_deref());
            let mut rows = vec![IndexRow::Number {
                param,
                low,
                high,
                system,
                code: unit_code,
            }];
            rows.extend(canonical);
            rows
        }
        IndexValue::Uri { value } => vec![IndexRow::Uri { param, value }],
        IndexValue::Composite { components } => composite_rows(code, components),
    }
}

/// A UCUM quantity also in canonical units (`5 mg` as `0.005 g`), so that quantity searches in
/// any convertible unit compare like with like (see [`crate::search::ucum`]).
fn canonical_quantity(
    param: &str,
    low: f64,
    high: f64,
    system: Option<&str>,
    code: Option<&str>,
) -> Option<IndexRow> {
    if system != Some(ucum::UCUM) {
        return None;
    }
    let (factor, unit) = ucum::canonical(code?)?;
    // An open bound (from a comparator) stays finite: the stored keys must round-trip as JSON.
    let scale = |v: f64| (v * factor).clamp(f64::MIN, f64::MAX);
    let param = ucum::canonical_param(param);
    Some(IndexRow::Number {
        param,
        low: scale(low),
        high: scale(high),
        system: Some(ucum::UCUM.into()),
        code: Some(unit),
    })
}

/// A composite of a token and one more value (`code-value-quantity`, `combo-code-value-concept`,
/// …) is stored as a row of the second value's kind under a parameter name that carries the
/// token with its system ([`composite_param`]), so that a query naming `system|code` is a key
/// lookup and the second value uses its own table's comparisons. A query naming the code alone
/// finds the systems to look under in the composite codings ([`IndexRow::CompositeCode`], one
/// shared entry per coding rather than a second copy of every row). Other shapes (three
/// components, a reference first) are not indexed and not offered.
fn composite_rows(code: &str, components: Vec<IndexValue>) -> Vec<IndexRow> {
    let [
        IndexValue::Token {
            system,
            code: Some(first),
            ..
        },
        second,
    ] = components.as_slice()
    else {
        return Vec::new();
    };
    if !is_composite_value(second) {
        return Vec::new();
    }
    let system = system.as_deref().unwrap_or_default();
    let mut rows = plain_rows(&composite_param(code, Some(system), first), second.clone());
    rows.push(IndexRow::CompositeCode {
        param: code.to_string(),
        code: first.clone(),
        system: system.to_string(),
    });
    rows
}

/// Second components a composite is indexed for: never free text (which could be PHI).
fn is_composite_value(value: &IndexValue) -> bool {
    matches!(
        value,
        IndexValue::Token { .. }
            | IndexValue::Quantity { .. }
            | IndexValue::Number { .. }
            | IndexValue::Date { .. }
    )
}

/// The stored parameter name of a composite row: the composite's code, then its first (token)
/// component's code, with or without its system (`""` for a coding that has none). The separator
/// is U+001F, a control character no stored resource can contain, so keys cannot collide.
pub fn composite_param(param: &str, system: Option<&str>, code: &str) -> String {
    match system {
        None => format!("{param}\u{1f}{code}"),
        Some(system) => format!("{param}\u{1f}{system}\u{1f}{code}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_safe_reference_forms_are_stored() {
        assert_eq!(
            safe_reference_url("Patient/1").as_deref(),
            Some("Patient/1")
        );
        assert_eq!(
            safe_reference_url("Patient/1/_history/2").as_deref(),
            Some("Patient/1/_history/2")
        );
        assert_eq!(safe_reference_url("#c1").as_deref(), Some("#c1"));
        assert_eq!(
            safe_reference_url("http://x.org/fhir/Patient/1?name=Jo#f").as_deref(),
            Some("http://x.org/fhir/Patient/1")
        );
        assert_eq!(safe_reference_url("Patient?identifier=urn:ssn|1234"), None);
        assert_eq!(safe_reference_url("John Smith"), None);
        assert_eq!(
            safe_reference_url("urn:uuid:0f1e-2a"),
            Some("urn:uuid:0f1e-2a".into())
        );
    }

    #[test]
    fn date_terms_follow_precision() {
        let (s, e) = crate::search::extract::parse_date_range("1980-03-05").unwrap();
        assert_eq!(date_terms(s, e), ["1980", "1980-03", "1980-03-05"]);
        let (s, e) = crate::search::extract::parse_date_range("1980-03").unwrap();
        assert_eq!(date_terms(s, e), ["1980", "1980-03"]);
        let (s, e) = crate::search::extract::parse_date_range("1980").unwrap();
        assert_eq!(date_terms(s, e), ["1980"]);
    }

    #[test]
    fn segmented_values_are_indexed_by_whole_segments() {
        assert_eq!(
            segment_prefixes("10.1.2.3"),
            ["10", "10.1", "10.1.2", "10.1.2.3"]
        );
        assert_eq!(segment_prefixes("fe80::1"), ["fe80", "fe80:", "fe80::1"]);
        assert_eq!(segment_prefixes("host"), ["host"]);
        assert_eq!(segment_prefixes(".x"), [".x"]);
        let long = "a.".repeat(40);
        assert!(
            segment_prefixes(&long)
                .iter()
                .all(|p| p.chars().count() <= MAX_PREFIX_CHARS)
        );
    }

    /// The base URL the compartment tests' server has.
    const BASE: &str = "http://127.0.0.1:8080/fhir";

    /// `(compartment, compartment_is_complete)` of `resource` as a write computes them.
    fn compartment_of(resource: serde_json::Value) -> (Option<String>, bool) {
        let registry = crate::search::registry::tests::r4();
        let keys = KeyRing::from_master_secret([42; 32]);
        let resource_type = resource["resourceType"].as_str().expect("type").to_string();
        let id = resource["id"].as_str().unwrap_or("x");
        let rows = rows_for(registry, &keys, &resource_type, &resource);
        let HeadCompartment { patient, complete } =
            HeadCompartment::of(registry, &resource_type, id, &rows, BASE);
        (patient, complete)
    }

    fn observation(extra: serde_json::Value) -> serde_json::Value {
        let mut observation = serde_json::json!({
            "resourceType": "Observation", "id": "o1", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
            "subject": {"reference": "Patient/a"}
        });
        for (key, value) in extra.as_object().expect("object") {
            observation[key] = value.clone();
        }
        observation
    }

    /// The compartment names every Patient only when no other Patient is referenced, by any
    /// parameter, and each reference is relative: otherwise the planner must follow the links.
    #[test]
    fn the_compartment_is_complete_only_when_it_names_every_patient() {
        use serde_json::json;
        let some_a = Some("a".to_string());
        // One Patient, through one link or two, plain or versioned; other targets do not count.
        assert_eq!(
            compartment_of(observation(json!({}))),
            (some_a.clone(), true)
        );
        assert_eq!(
            compartment_of(observation(json!({
                "performer": [{"reference": "Patient/a"}, {"reference": "Practitioner/doc"}],
                "device": {"reference": "Device/d1"},
                "hasMember": [{"reference": "Observation/o2"}]
            }))),
            (some_a.clone(), true)
        );
        assert_eq!(
            compartment_of(observation(
                json!({"subject": {"reference": "Patient/a/_history/3"}})
            )),
            (some_a.clone(), true)
        );
        // A second Patient through a second link (either may be the compartment: the first
        // link in the registry's order), or through a parameter that is no link.
        let (compartment, complete) = compartment_of(observation(
            json!({"performer": [{"reference": "Patient/b"}]}),
        ));
        assert!(compartment.is_some() && !complete);
        assert_eq!(
            compartment_of(observation(json!({"focus": [{"reference": "Patient/b"}]}))),
            (some_a.clone(), false)
        );
        // Absolute URLs, on another server (the same id there is another person: no
        // compartment of ours) or on ours (the same Patient); either way the links decide.
        for (base, compartment) in [
            ("https://elsewhere.example/fhir", None),
            ("https://elsewhere.example/fhir-2", None),
            (BASE, some_a.clone()),
        ] {
            let subject = json!({"subject": {"reference": format!("{base}/Patient/a")}});
            assert_eq!(
                compartment_of(observation(subject)),
                (compartment, false),
                "{base}"
            );
            let performer = json!({"performer": [{"reference": format!("{base}/Patient/a")}]});
            assert_eq!(
                compartment_of(observation(performer)),
                (some_a.clone(), false)
            );
        }
        // A server whose base merely starts like ours is another server.
        let longer = json!({"subject": {"reference": format!("{BASE}x/Patient/a")}});
        assert_eq!(compartment_of(observation(longer)), (None, false));
        // A reference typed Patient without a literal id: the link-by-link check decides.
        for literal in ["urn:uuid:0b1c4f36-1d5b-4a4e-8c3c-123456789abc", "#p1"] {
            let typed = json!({"performer": [{"reference": literal, "type": "Patient"}]});
            assert_eq!(compartment_of(observation(typed)), (some_a.clone(), false));
        }
        // No Patient at all (a contained one is no stored Patient): nothing to follow, and no
        // compartment, which no rule matches.
        let contained = observation(json!({
            "contained": [{"resourceType": "Patient", "id": "p1"}],
            "subject": {"reference": "#p1"}
        }));
        assert_eq!(compartment_of(contained), (None, true));
        let logical = observation(json!({
            "subject": {"type": "Patient", "identifier": {"system": "urn:test", "value": "1"}}
        }));
        assert_eq!(compartment_of(logical), (None, true));
        let unsubjected = json!({"resourceType": "Organization", "id": "org-a", "name": "A"});
        assert_eq!(compartment_of(unsubjected), (None, true));
        assert!(compartment_is_complete(None, &[]), "a delete marker");
        // Links that point at no Patient: no compartment, but a Patient is referenced elsewhere.
        let general = observation(
            json!({"subject": {"reference": "Group/g1"}, "focus": [{"reference": "Patient/b"}]}),
        );
        assert_eq!(compartment_of(general), (None, false));
        // Devices (their `patient` counts as a link) and Patients (their own compartment).
        let device = json!({"resourceType": "Device", "id": "d1", "patient": {"reference": "Patient/a"},
            "owner": {"reference": "Organization/org-a"}});
        assert_eq!(compartment_of(device), (some_a.clone(), true));
        let patient = json!({"resourceType": "Patient", "id": "a",
            "managingOrganization": {"reference": "Organization/org-a"}});
        assert_eq!(compartment_of(patient), (some_a.clone(), true));
        let linked = json!({"resourceType": "Patient", "id": "a",
            "link": [{"other": {"reference": "Patient/b"}, "type": "seealso"}]});
        assert_eq!(compartment_of(linked), (some_a, false));
    }

    #[test]
    fn words_of_known_displays_are_found_through_token_rows_not_stored_again() {
        let mut registry = crate::search::registry::tests::r4().clone();
        registry.known_displays = crate::search::known_displays::KnownDisplays::from_codings([
            ("http://loinc.org", "8867-4", "Heart rate"),
            (
                "http://terminology.hl7.org/CodeSystem/observation-category",
                "vital-signs",
                "Vital Signs",
            ),
        ]);
        let keys = KeyRing::from_master_secret([42; 32]);
        let rows_of = |code: Value| {
            let observation = json!({"resourceType": "Observation", "id": "o1", "status": "final",
                "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                          "code": "vital-signs", "display": "Vital Signs"}]}],
                "code": code});
            rows_for(&registry, &keys, "Observation", &observation)
        };
        let word_rows = |rows: &[IndexRow], param: &str| -> Vec<String> {
            let words = [
                "heart", "rate", "at", "rest", "hr", "pulse", "vital", "signs",
            ];
            words
                .into_iter()
                .filter(|w| {
                    let token = BlindTerm::Word(w).token(&keys, "Observation", param);
                    rows.iter().any(|r| matches!(r, IndexRow::Blind { param: p, token: t } if p == param && *t == token))
                })
                .map(str::to_string)
                .collect()
        };
        let flag_of = |rows: &[IndexRow], code: &str| {
            rows.iter().find_map(|r| match r {
                IndexRow::Token {
                    code: Some(c),
                    known_display,
                    ..
                } if c == code => Some(*known_display),
                _ => None,
            })
        };

        // The known display, and a text that repeats two of its words: only the others are rows.
        let rows = rows_of(json!({"coding": [
                {"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"},
                {"system": "http://snomed.info/sct", "code": "364075005", "display": "Pulse"}],
            "text": "Heart rate at rest"}));
        assert_eq!(flag_of(&rows, "8867-4"), Some(true));
        assert_eq!(flag_of(&rows, "364075005"), Some(false));
        assert_eq!(flag_of(&rows, "vital-signs"), Some(true));
        assert_eq!(word_rows(&rows, "code:text"), ["at", "rest", "pulse"]);
        assert!(word_rows(&rows, "category:text").is_empty());

        // Another display, or none, for a known code: its words are the resource's own.
        let rows = rows_of(
            json!({"coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "HR"}]}),
        );
        assert_eq!(flag_of(&rows, "8867-4"), Some(false));
        assert_eq!(word_rows(&rows, "code:text"), ["hr"]);
        let rows = rows_of(
            json!({"coding": [{"system": "http://loinc.org", "code": "8867-4"}],
            "text": "Pulse rate at rest"}),
        );
        assert_eq!(flag_of(&rows, "8867-4"), Some(false));
        assert_eq!(
            word_rows(&rows, "code:text"),
            ["rate", "at", "rest", "pulse"]
        );

        // The same coding twice, with and without its display: one row, flagged.
        let rows = rows_of(json!({"coding": [
            {"system": "http://loinc.org", "code": "8867-4"},
            {"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}]}));
        let tokens = rows
            .iter()
            .filter(|r| matches!(r, IndexRow::Token { code: Some(c), .. } if c == "8867-4"))
            .count();
        assert_eq!((tokens, flag_of(&rows, "8867-4")), (1, Some(true)));
    }

    #[test]
    fn a_concepts_text_alone_is_a_row_only_without_codings() {
        let registry = crate::search::registry::tests::r4();
        let keys = KeyRing::from_master_secret([42; 32]);
        let empty_code_rows = |code: Value| {
            let observation =
                json!({"resourceType": "Observation", "id": "o1", "status": "final", "code": code});
            rows_for(registry, &keys, "Observation", &observation)
                .into_iter()
                .filter(|r| {
                    matches!(r, IndexRow::Token { param, system: None, code: None, .. } if param == "code")
                })
                .count()
        };
        let coded =
            json!({"coding": [{"system": "http://loinc.org", "code": "8867-4"}], "text": "Puls"});
        assert_eq!(empty_code_rows(coded), 0);
        assert_eq!(
            empty_code_rows(json!({"text": "Puls"})),
            1,
            "code:missing=false"
        );
    }
}
