//! Resource ids and versions as the spec defines them, checked before anything else sees them.

use crate::error::ApiError;

/// A FHIR logical id: `[A-Za-z0-9\-\.]{1,64}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FhirId(String);

impl FhirId {
    pub fn parse(value: &str) -> Result<Self, ApiError> {
        if is_valid_id(value) {
            Ok(FhirId(value.to_string()))
        } else {
            Err(ApiError::bad_request(
                "resource id must be 1-64 characters of A-Z, a-z, 0-9, '-' and '.'",
            ))
        }
    }

    /// A new server-assigned id: a time-ordered UUID (v7), which fits the id grammar. Time order
    /// matters for the store: every index keyed by id then grows at its end instead of touching a
    /// random page per insert, which is most of the cost of a write on a large table.
    pub fn generate() -> Self {
        FhirId(uuid::Uuid::now_v7().to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl std::fmt::Display for FhirId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

pub fn is_valid_id(value: &str) -> bool {
    (1..=64).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// A version id in a `_history/{vid}` path: a positive integer (the server only issues those).
pub fn parse_version(value: &str) -> Result<i64, ApiError> {
    value.parse::<i64>().ok().filter(|v| *v > 0).ok_or_else(|| {
        ApiError::NotFound(format!(
            "version `{}` does not exist; versions are positive integers",
            truncate(value)
        ))
    })
}

/// Quote client text in a message without letting it grow without bound.
pub fn truncate(value: &str) -> String {
    let mut out: String = value.chars().take(64).collect();
    if out.len() < value.len() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_grammar() {
        assert!(is_valid_id("a-1.B"));
        assert!(is_valid_id(&"x".repeat(64)));
        assert!(!is_valid_id(&"x".repeat(65)));
        assert!(!is_valid_id(""));
        assert!(!is_valid_id("a/b"));
        assert!(!is_valid_id("a_b"));
        assert!(!is_valid_id("ü"));
    }

    #[test]
    fn versions() {
        assert_eq!(parse_version("3").unwrap(), 3);
        assert!(parse_version("0").is_err());
        assert!(parse_version("x").is_err());
    }
}
