//! Token parameters: code-like primitives, Coding, CodeableConcept, Identifier, ContactPoint.
//!
//! Each value keeps system and code apart, as written; the query side derives Blaze's four
//! forms (`code`, `system|`, `system|code`, `|code`) from them.

use serde_json::Value;

use super::{IndexValue, Shape, text_field};

pub(super) fn values(shape: Shape, value: &Value) -> Vec<IndexValue> {
    match shape {
        Shape::Primitive => code(value).into_iter().collect(),
        Shape::Coding => coding(value).into_iter().collect(),
        Shape::CodeableConcept => codeable_concept(value),
        Shape::Identifier => identifier(value)
            .into_iter()
            .chain(identifier_types(value))
            .collect(),
        Shape::ContactPoint => contact_point(value).into_iter().collect(),
        _ => Vec::new(),
    }
}

/// A primitive as a token without system: code, id, string, uri, boolean (`true`/`false`),
/// integer. Elements bound to a required value set keep `system` empty; the query side matches
/// `code` alone for them.
pub fn code(value: &Value) -> Option<IndexValue> {
    let code = match value {
        Value::String(s) if !s.trim().is_empty() => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    Some(IndexValue::Token {
        system: None,
        code: Some(code),
        text: None,
    })
}

/// Coding: system and code, display as text. `None` when it has none of them.
pub fn coding(coding: &Value) -> Option<IndexValue> {
    let (system, code, text) = (
        text_field(coding, "system"),
        text_field(coding, "code"),
        text_field(coding, "display"),
    );
    (system.is_some() || code.is_some() || text.is_some()).then_some(IndexValue::Token {
        system,
        code,
        text,
    })
}

/// CodeableConcept: each coding, plus its `text` as a token with only text (for `:text`).
pub fn codeable_concept(concept: &Value) -> Vec<IndexValue> {
    let codings = concept
        .get("coding")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    let mut out: Vec<IndexValue> = codings.iter().filter_map(coding).collect();
    if let Some(text) = text_field(concept, "text") {
        out.push(IndexValue::Token {
            system: None,
            code: None,
            text: Some(text),
        });
    }
    out
}

/// Identifier: system and value, `type.text` as text. Without a value there is nothing to match.
pub fn identifier(identifier: &Value) -> Option<IndexValue> {
    let value = text_field(identifier, "value")?;
    Some(IndexValue::Token {
        system: text_field(identifier, "system"),
        code: Some(value),
        text: identifier.get("type").and_then(|t| text_field(t, "text")),
    })
}

/// Identifier for `:of-type`: each coding of its `type` that has a system and a code, with its
/// value. `:of-type` names all three, so a coding without a system could never match.
pub fn identifier_types(identifier: &Value) -> Vec<IndexValue> {
    let Some(value) = text_field(identifier, "value") else {
        return Vec::new();
    };
    let codings = identifier
        .get("type")
        .and_then(|t| t.get("coding"))
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    codings
        .iter()
        .filter_map(|coding| {
            Some(IndexValue::IdentifierOfType {
                system: text_field(coding, "system")?,
                code: text_field(coding, "code")?,
                value: value.clone(),
            })
        })
        .collect()
}

/// ContactPoint: the value as code. Its `system` (phone, email) is not a code system, and
/// the `phone`/`email` parameters already select by it, so it is not indexed.
pub fn contact_point(contact: &Value) -> Option<IndexValue> {
    let value = text_field(contact, "value")?;
    Some(IndexValue::Token {
        system: None,
        code: Some(value),
        text: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn t(system: Option<&str>, code: Option<&str>, text: Option<&str>) -> IndexValue {
        IndexValue::Token {
            system: system.map(Into::into),
            code: code.map(Into::into),
            text: text.map(Into::into),
        }
    }

    #[test]
    fn code_rows() {
        let rows = [
            (json!("final"), Some(t(None, Some("final"), None))),
            (json!(true), Some(t(None, Some("true"), None))),
            (json!(false), Some(t(None, Some("false"), None))),
            (json!(3), Some(t(None, Some("3"), None))),
            (json!(""), None),
            (json!(null), None),
            (json!({"code": "x"}), None),
        ];
        for (value, expected) in rows {
            assert_eq!(code(&value), expected, "{value}");
        }
    }

    #[test]
    fn coding_rows() {
        let loinc = Some("http://loinc.org");
        let rows = [
            (
                json!({"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}),
                Some(t(loinc, Some("8867-4"), Some("Heart rate"))),
            ),
            (
                json!({"code": "8867-4"}),
                Some(t(None, Some("8867-4"), None)),
            ),
            (
                json!({"system": "http://loinc.org"}),
                Some(t(loinc, None, None)),
            ),
            (
                json!({"display": "Heart rate"}),
                Some(t(None, None, Some("Heart rate"))),
            ),
            (json!({"system": "", "code": " "}), None),
            (json!({}), None),
            (json!({"code": 5}), None),
        ];
        for (value, expected) in rows {
            assert_eq!(coding(&value), expected, "{value}");
        }
    }

    #[test]
    fn codeable_concept_rows() {
        let cc = json!({"coding": [
            {"system": "http://loinc.org", "code": "8867-4"},
            {"system": "urn:iso:std:iso:11073:10101", "code": "147842", "display": "MDC_ECG_HEART_RATE"},
            "garbage"], "text": "Heart rate"});
        assert_eq!(
            codeable_concept(&cc),
            vec![
                t(Some("http://loinc.org"), Some("8867-4"), None),
                t(
                    Some("urn:iso:std:iso:11073:10101"),
                    Some("147842"),
                    Some("MDC_ECG_HEART_RATE")
                ),
                t(None, None, Some("Heart rate")),
            ]
        );
        assert_eq!(
            codeable_concept(&json!({"text": "only text"})),
            vec![t(None, None, Some("only text"))]
        );
        assert_eq!(codeable_concept(&json!({"coding": "not an array"})), vec![]);
    }

    #[test]
    fn identifier_rows() {
        let svnr = json!({"use": "official", "system": "urn:oid:1.2.40.0.10.1.4.3.1", "value": "1234010180",
            "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "SS"}],
                     "text": "Sozialversicherungsnummer"}});
        let rows = [
            (
                svnr,
                Some(t(
                    Some("urn:oid:1.2.40.0.10.1.4.3.1"),
                    Some("1234010180"),
                    Some("Sozialversicherungsnummer"),
                )),
            ),
            (json!({"value": "42"}), Some(t(None, Some("42"), None))),
            (json!({"system": "urn:x"}), None),
            (json!({"system": "urn:x", "value": ""}), None),
            (json!({"value": 42}), None),
        ];
        for (value, expected) in rows {
            assert_eq!(identifier(&value), expected, "{value}");
        }
    }

    #[test]
    fn identifier_type_rows() {
        let v2 = "http://terminology.hl7.org/CodeSystem/v2-0203";
        let of_type = |code: &str| IndexValue::IdentifierOfType {
            system: v2.into(),
            code: code.into(),
            value: "12345".into(),
        };
        let mr = json!({"system": "urn:x", "value": "12345", "type": {"coding": [
            {"system": v2, "code": "MR"}, {"system": v2, "code": "PI"},
            {"code": "no-system"}, {"system": v2}, "garbage"], "text": "Record"}});
        assert_eq!(identifier_types(&mr), vec![of_type("MR"), of_type("PI")]);
        assert_eq!(
            identifier_types(&json!({"type": {"coding": [{"system": v2, "code": "MR"}]}})),
            vec![]
        );
        assert_eq!(
            identifier_types(&json!({"value": "1", "type": {"text": "x"}})),
            vec![]
        );
        assert_eq!(
            values(Shape::Identifier, &mr),
            vec![
                t(Some("urn:x"), Some("12345"), Some("Record")),
                of_type("MR"),
                of_type("PI")
            ]
        );
    }

    #[test]
    fn contact_point_rows() {
        let rows = [
            (
                json!({"system": "phone", "value": "+43 1 234567", "use": "home"}),
                Some(t(None, Some("+43 1 234567"), None)),
            ),
            (
                json!({"system": "email", "value": "a@example.org"}),
                Some(t(None, Some("a@example.org"), None)),
            ),
            (json!({"system": "phone"}), None),
        ];
        for (value, expected) in rows {
            assert_eq!(contact_point(&value), expected, "{value}");
        }
    }

    #[test]
    fn dispatch_rows() {
        assert_eq!(values(Shape::Quantity, &json!({"value": 1})), vec![]);
        assert_eq!(
            values(Shape::Reference, &json!({"reference": "Patient/1"})),
            vec![]
        );
        assert_eq!(
            values(Shape::Primitive, &json!("male")),
            vec![t(None, Some("male"), None)]
        );
    }
}
