//! Reference parameters: Reference, canonical and uri targets, and resources embedded in
//! another (`Bundle.entry[0].resource`).
//!
//! A literal reference is split into type, id and version so that `subject=Patient/1`,
//! `subject=1` with `:Patient`, and an absolute URL on our own base all match one row;
//! a logical reference (`identifier`) is kept apart for `:identifier`.

use serde_json::Value;

use super::{IndexValue, Shape, text_field};
use crate::search::fhirpath::{is_fhir_id, parse_literal_reference};

pub(super) fn values(shape: Shape, value: &Value) -> Vec<IndexValue> {
    match shape {
        Shape::Reference => reference(value),
        Shape::Primitive => value.as_str().and_then(canonical).into_iter().collect(),
        Shape::Resource => embedded_resource(value).into_iter().collect(),
        _ => Vec::new(),
    }
}

/// Reference: the literal reference (typed when it parses as `[base/]Type/id[/_history/v]`,
/// else kept as url only: `#contained`, `urn:uuid:…`) and the logical identifier.
pub fn reference(reference: &Value) -> Vec<IndexValue> {
    let mut out = Vec::new();
    if let Some(literal) = text_field(reference, "reference") {
        let declared_type = text_field(reference, "type");
        out.push(match parse_literal_reference(&literal) {
            Some(parsed) => IndexValue::Reference {
                target_type: Some(parsed.target_type),
                target_id: Some(parsed.id),
                version: parsed.version,
                url: literal,
            },
            None => IndexValue::Reference {
                target_type: declared_type,
                target_id: None,
                version: None,
                url: literal,
            },
        });
    }
    if let Some(id) = reference.get("identifier") {
        let (system, value) = (text_field(id, "system"), text_field(id, "value"));
        if value.is_some() {
            out.push(IndexValue::ReferenceIdentifier { system, value });
        }
    }
    out
}

/// canonical or uri used as a reference: `http://x/fhir/ValueSet/vs|1.0` is ValueSet/vs,
/// version `1.0`, url without the version.
pub fn canonical(text: &str) -> Option<IndexValue> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let (url, version) = match text.split_once('|') {
        Some((url, version)) => (url, Some(version.to_owned()).filter(|v| !v.is_empty())),
        None => (text, None),
    };
    let parsed = parse_literal_reference(url);
    Some(IndexValue::Reference {
        target_type: parsed.as_ref().map(|p| p.target_type.clone()),
        target_id: parsed.as_ref().map(|p| p.id.clone()),
        version: version.or_else(|| parsed.and_then(|p| p.version)),
        url: url.to_owned(),
    })
}

/// A resource inside another (`Bundle.entry[0].resource`), referenced by its type and id.
fn embedded_resource(resource: &Value) -> Option<IndexValue> {
    let target_type = resource.get("resourceType")?.as_str()?;
    let id = resource.get("id")?.as_str().filter(|id| is_fhir_id(id))?;
    Some(IndexValue::Reference {
        target_type: Some(target_type.to_owned()),
        target_id: Some(id.to_owned()),
        version: None,
        url: format!("{target_type}/{id}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn r(
        target_type: Option<&str>,
        id: Option<&str>,
        version: Option<&str>,
        url: &str,
    ) -> IndexValue {
        IndexValue::Reference {
            target_type: target_type.map(Into::into),
            target_id: id.map(Into::into),
            version: version.map(Into::into),
            url: url.into(),
        }
    }

    #[test]
    fn reference_rows() {
        let rows = [
            (
                json!({"reference": "Patient/p1"}),
                vec![r(Some("Patient"), Some("p1"), None, "Patient/p1")],
            ),
            (
                json!({"reference": "Patient/p1/_history/4"}),
                vec![r(
                    Some("Patient"),
                    Some("p1"),
                    Some("4"),
                    "Patient/p1/_history/4",
                )],
            ),
            (
                json!({"reference": "https://fhir.example.org/r4/Patient/p1"}),
                vec![r(
                    Some("Patient"),
                    Some("p1"),
                    None,
                    "https://fhir.example.org/r4/Patient/p1",
                )],
            ),
            (
                json!({"reference": "urn:uuid:0b1c4f36-1d5b-4a4e-8c3c-123456789abc"}),
                vec![r(
                    None,
                    None,
                    None,
                    "urn:uuid:0b1c4f36-1d5b-4a4e-8c3c-123456789abc",
                )],
            ),
            (
                json!({"reference": "urn:uuid:0b1c", "type": "Patient"}),
                vec![r(Some("Patient"), None, None, "urn:uuid:0b1c")],
            ),
            (
                json!({"reference": "#contained-1"}),
                vec![r(None, None, None, "#contained-1")],
            ),
            (
                json!({"identifier": {"system": "https://fhirvault.example/pseudonym", "value": "psn-7f3a"}}),
                vec![IndexValue::ReferenceIdentifier {
                    system: Some("https://fhirvault.example/pseudonym".into()),
                    value: Some("psn-7f3a".into()),
                }],
            ),
            (
                json!({"reference": "Patient/p1", "identifier": {"value": "x"}}),
                vec![
                    r(Some("Patient"), Some("p1"), None, "Patient/p1"),
                    IndexValue::ReferenceIdentifier {
                        system: None,
                        value: Some("x".into()),
                    },
                ],
            ),
            (json!({"display": "Dr. House"}), vec![]),
            (json!({"reference": ""}), vec![]),
            (json!({"reference": 7}), vec![]),
        ];
        for (value, expected) in rows {
            assert_eq!(reference(&value), expected, "{value}");
        }
    }

    #[test]
    fn canonical_rows() {
        let rows = [
            (
                "http://hl7.org/fhir/ValueSet/my-vs|4.0.1",
                Some(r(
                    Some("ValueSet"),
                    Some("my-vs"),
                    Some("4.0.1"),
                    "http://hl7.org/fhir/ValueSet/my-vs",
                )),
            ),
            (
                "http://example.org/Library/lib",
                Some(r(
                    Some("Library"),
                    Some("lib"),
                    None,
                    "http://example.org/Library/lib",
                )),
            ),
            (
                "http://example.org/profiles/holter",
                Some(r(None, None, None, "http://example.org/profiles/holter")),
            ),
            ("urn:oid:1.2.3|", Some(r(None, None, None, "urn:oid:1.2.3"))),
            ("  ", None),
        ];
        for (text, expected) in rows {
            assert_eq!(canonical(text), expected, "{text}");
        }
    }

    #[test]
    fn dispatch_rows() {
        let composition = json!({"resourceType": "Composition", "id": "c1"});
        assert_eq!(
            values(Shape::Resource, &composition),
            vec![r(Some("Composition"), Some("c1"), None, "Composition/c1")]
        );
        assert_eq!(
            values(Shape::Resource, &json!({"resourceType": "Composition"})),
            vec![]
        );
        assert_eq!(
            values(Shape::Other, &json!({"url": "http://x/a.pdf"})),
            vec![],
            "Attachment is not a reference"
        );
        assert_eq!(
            values(Shape::Primitive, &json!("http://x/Library/l")).len(),
            1
        );
    }
}
