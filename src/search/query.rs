//! Parsing a search query string into typed parts: result controls (`_count`, `_sort`, …) and the
//! parameter filters (ANDed parameters, each with ORed values).
//! <https://hl7.org/fhir/R4/search.html>

use super::registry::{ParamType, SearchParamRegistry};
use crate::error::{ApiError, ApiResult};
use crate::fhir::id::truncate;
use crate::fhir::outcome::{Issue, IssueCode, Severity};

/// One parameter of the query: all its values are ORed; separate parameters are ANDed.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamFilter {
    pub code: String,
    pub modifier: Option<String>,
    pub kind: ParamType,
    /// The raw (still escaped) values, split on unescaped commas.
    pub values: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TotalMode {
    None,
    Estimate,
    Accurate,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SortKey {
    pub code: String,
    pub descending: bool,
}

/// A parsed search.
#[derive(Debug, Clone)]
pub struct SearchRequest {
    pub resource_type: String,
    pub filters: Vec<ParamFilter>,
    pub count: usize,
    pub offset: usize,
    pub sort: Vec<SortKey>,
    pub total: TotalMode,
    pub summary_count: bool,
    /// The parameters that were used, in order, for the `self` link.
    pub used: Vec<(String, String)>,
    /// Parameters that were ignored (unknown or unsupported), reported as a warning.
    pub warnings: Vec<Issue>,
}

/// Most comma-separated alternatives one parameter may have (keeps every query far below the
/// databases' bind-parameter limits).
pub const MAX_OR_VALUES: usize = 500;

/// Deepest offset a page may start at; deeper pages would make the database skip that many rows.
pub const MAX_OFFSET: usize = 100_000;

/// Parameters that shape the result rather than select resources.
const RESULT_PARAMS: &[&str] = &["_count", "_offset", "_sort", "_total", "_summary", "_format", "_pretty", "_elements"];

impl SearchRequest {
    /// Parse `pairs` for a search on `resource_type`. With `strict` (`Prefer: handling=strict`),
    /// unknown or unsupported parameters are an error instead of a warning.
    pub fn parse(
        registry: &SearchParamRegistry,
        resource_type: &str,
        pairs: &[(String, String)],
        strict: bool,
        default_count: usize,
        max_count: usize,
    ) -> ApiResult<SearchRequest> {
        let mut request = SearchRequest {
            resource_type: resource_type.to_string(),
            filters: Vec::new(),
            count: default_count,
            offset: 0,
            sort: Vec::new(),
            total: TotalMode::Accurate,
            summary_count: false,
            used: Vec::new(),
            warnings: Vec::new(),
        };
        for (name, value) in pairs {
            if name.chars().chain(value.chars()).any(char::is_control) {
                return Err(ApiError::bad_request(format!(
                    "search parameter `{}` contains control characters",
                    truncate(&name.replace(char::is_control, "?"))
                )));
            }
            if RESULT_PARAMS.contains(&name.as_str()) {
                request.apply_result_param(name, value, max_count)?;
                continue;
            }
            let (code, modifier) = match name.split_once(':') {
                Some((code, modifier)) => (code, Some(modifier.to_string())),
                None => (name.as_str(), None),
            };
            let unsupported = |why: &str| -> ApiResult<Option<Issue>> {
                let text = format!("search parameter `{}` was ignored: {why}", truncate(name));
                if strict {
                    Err(ApiError::bad_request(text))
                } else {
                    Ok(Some(Issue { severity: Severity::Warning, code: IssueCode::NotSupported, diagnostics: text, expression: None }))
                }
            };
            let warning = if name.contains('.') || code.starts_with("_has") {
                unsupported("chained and reverse-chained parameters are not supported yet")?
            } else if matches!(code, "_include" | "_revinclude" | "_contained" | "_containedType") {
                unsupported("this result parameter is not supported yet")?
            } else {
                match registry.get(resource_type, code) {
                    None => unsupported(&format!("{resource_type} has no such search parameter"))?,
                    Some(param) if matches!(param.kind, ParamType::Composite | ParamType::Special) => {
                        unsupported("composite and special parameters are not supported yet")?
                    }
                    Some(param) if !param.is_indexed() || crate::search::phi::is_unindexed(code) => {
                        unsupported("this parameter has no index here (full-text and phonetic search are not offered)")?
                    }
                    Some(param) => {
                        check_modifier(param.kind, modifier.as_deref(), name)?;
                        let values = split_unescaped(value, ',');
                        if values.len() > MAX_OR_VALUES {
                            return Err(ApiError::bad_request(format!(
                                "search parameter `{}` has more than {MAX_OR_VALUES} alternatives",
                                truncate(name)
                            )));
                        }
                        request.filters.push(ParamFilter { code: code.to_string(), modifier, kind: param.kind, values });
                        request.used.push((name.clone(), value.clone()));
                        None
                    }
                }
            };
            request.warnings.extend(warning);
        }
        Ok(request)
    }

    fn apply_result_param(&mut self, name: &str, value: &str, max_count: usize) -> ApiResult<()> {
        match name {
            "_count" => {
                let count: usize = value
                    .parse()
                    .map_err(|_| ApiError::bad_request("_count must be a non-negative integer"))?;
                self.count = count.min(max_count);
                self.used.push((name.into(), self.count.to_string()));
            }
            "_offset" => {
                self.offset = value
                    .parse()
                    .ok()
                    .filter(|offset| *offset <= MAX_OFFSET)
                    .ok_or_else(|| ApiError::bad_request(format!("_offset must be an integer from 0 to {MAX_OFFSET}")))?;
            }
            "_sort" => {
                for key in value.split(',').filter(|k| !k.is_empty()) {
                    let (code, descending) = match key.strip_prefix('-') {
                        Some(code) => (code, true),
                        None => (key, false),
                    };
                    if !matches!(code, "_id" | "_lastUpdated") {
                        return Err(ApiError::bad_request(format!(
                            "_sort: sorting by `{}` is not supported yet; use _id or _lastUpdated",
                            truncate(code)
                        )));
                    }
                    self.sort.push(SortKey { code: code.to_string(), descending });
                }
                self.used.push((name.into(), value.into()));
            }
            "_total" => {
                self.total = match value {
                    "none" => TotalMode::None,
                    "estimate" => TotalMode::Estimate,
                    "accurate" => TotalMode::Accurate,
                    _ => return Err(ApiError::bad_request("_total must be none, estimate or accurate")),
                };
                self.used.push((name.into(), value.into()));
            }
            "_summary" => {
                match value {
                    "count" => self.summary_count = true,
                    "false" => {}
                    _ => return Err(ApiError::bad_request("_summary: only count and false are supported yet")),
                }
                self.used.push((name.into(), value.into()));
            }
            // The middleware already refused other formats; JSON is all this server speaks.
            "_format" if !matches!(value, "json" | "application/json" | "application/fhir+json") => {
                return Err(ApiError::NotAcceptable("_format: this server speaks JSON only (json, application/fhir+json)".into()));
            }
            _ => {} // _pretty, _elements: accepted, output unchanged
        }
        Ok(())
    }
}

/// Modifiers each parameter type accepts here (R4 search.html, "Modifiers").
fn check_modifier(kind: ParamType, modifier: Option<&str>, name: &str) -> ApiResult<()> {
    let Some(modifier) = modifier else { return Ok(()) };
    let allowed: &[&str] = match kind {
        ParamType::String => &["missing", "exact", "contains"],
        ParamType::Token => &["missing", "not", "text"],
        ParamType::Reference => &["missing", "identifier"],
        ParamType::Uri => &["missing", "below", "above"],
        ParamType::Date | ParamType::Number | ParamType::Quantity => &["missing"],
        ParamType::Composite | ParamType::Special => &[],
    };
    let is_type_modifier = kind == ParamType::Reference && modifier.chars().next().is_some_and(|c| c.is_ascii_uppercase());
    if allowed.contains(&modifier) || is_type_modifier {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "search parameter `{}`: modifier `:{}` is not supported for this parameter type",
            truncate(name),
            truncate(modifier)
        )))
    }
}

/// Split on `separator` where it is not escaped with a backslash, and unescape `\,` `\|` `\$` `\\`.
pub fn split_unescaped(value: &str, separator: char) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(escaped @ (',' | '|' | '$' | '\\')) if escaped != separator => {
                    current.push('\\');
                    current.push(escaped);
                }
                Some(escaped) if escaped == separator => current.push(escaped),
                Some(other) => {
                    current.push('\\');
                    current.push(other);
                }
                None => current.push('\\'),
            },
            c if c == separator => parts.push(std::mem::take(&mut current)),
            c => current.push(c),
        }
    }
    parts.push(current);
    parts
}

/// Remove the remaining escapes of a value part.
pub fn unescape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping() {
        assert_eq!(split_unescaped("a,b\\,c", ','), ["a", "b,c"]);
        assert_eq!(split_unescaped("http://x|a\\|b", '|'), ["http://x", "a|b"]);
        assert_eq!(unescape("a\\|b"), "a|b");
        assert_eq!(split_unescaped("", ','), [""]);
    }
}
