//! Literal references (`Patient/1`, `https://x/fhir/Patient/1/_history/2`) split into parts.

/// A literal reference split into its parts: `Patient/1`, `Patient/1/_history/2`, or the same
/// after a base URL (`https://x/fhir/Patient/1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiteralReference {
    pub target_type: String,
    pub id: String,
    pub version: Option<String>,
    /// The base URL before `Type/id` for an absolute reference, `None` for a relative one.
    pub base: Option<String>,
}

/// Parses a literal reference; `None` for anything that does not end in `Type/id` (contained
/// `#id`, `urn:uuid:…`, malformed text).
pub fn parse_literal_reference(reference: &str) -> Option<LiteralReference> {
    let reference = reference
        .split(['?', '#'])
        .next()
        .unwrap_or(reference)
        .trim_end_matches('/');
    let segments: Vec<&str> = reference.split('/').collect();
    let (type_at, version) = match segments.as_slice() {
        [.., _, _, "_history", v] if is_fhir_id(v) => (segments.len() - 4, Some((*v).to_owned())),
        [.., _, _] => (segments.len() - 2, None),
        _ => return None,
    };
    let (target_type, id) = (segments[type_at], segments[type_at + 1]);
    if !is_resource_type_name(target_type) || !is_fhir_id(id) {
        return None;
    }
    let base = (type_at > 0).then(|| segments[..type_at].join("/"));
    if let Some(base) = &base {
        // Only an absolute URL may stand before Type/id; `a/Patient/1` is not a reference.
        if !base.contains("://") {
            return None;
        }
    }
    Some(LiteralReference {
        target_type: target_type.to_owned(),
        id: id.to_owned(),
        version,
        base,
    })
}

fn is_resource_type_name(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_uppercase()) && s.chars().all(|c| c.is_ascii_alphanumeric())
}

/// FHIR ids: `[A-Za-z0-9\-\.]{1,64}`.
pub fn is_fhir_id(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_references_parse() {
        let r = parse_literal_reference("Patient/1").unwrap();
        assert_eq!(
            (r.target_type.as_str(), r.id.as_str(), r.version, r.base),
            ("Patient", "1", None, None)
        );
        let r = parse_literal_reference("http://x/fhir/Patient/1/_history/3").unwrap();
        assert_eq!(r.version.as_deref(), Some("3"));
        assert_eq!(r.base.as_deref(), Some("http://x/fhir"));
        for bad in [
            "#p1",
            "urn:uuid:abc",
            "Patient",
            "patient/1",
            "a/Patient/1",
            "Patient/ab cd",
            "",
        ] {
            assert_eq!(parse_literal_reference(bad), None, "{bad}");
        }
    }
}
