//! String parameters: string, markdown, HumanName, Address.
//!
//! FHIR string search is "starts with, ignoring case and accents", and `:exact` compares as
//! written, so each value is indexed in both forms. Names and addresses are indexed part by part
//! (`given`, `family`, `city`, …) because a query matches any one part.

use serde_json::Value;
use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

use super::{IndexValue, Shape, text_field, text_list};

pub(super) fn values(shape: Shape, value: &Value) -> Vec<IndexValue> {
    match shape {
        Shape::Primitive => value.as_str().and_then(string).into_iter().collect(),
        Shape::HumanName => human_name(value),
        Shape::Address => address(value),
        // `(Observation.value as CodeableConcept).text` arrives as a string; a bare object with
        // only `text` is a narrative-ish element: index its text.
        Shape::CodeableConcept => text_field(value, "text")
            .as_deref()
            .and_then(string)
            .into_iter()
            .collect(),
        _ => Vec::new(),
    }
}

/// Case-, accent- and space-folding for string search: lowercase, NFKD, combining marks
/// dropped, runs of whitespace collapsed to one space, trimmed. `"  Müller-Lüdenscheidt "` →
/// `"muller-ludenscheidt"`, `"Ｆｕｌｌ"` → `"full"`.
pub fn normalize_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut space = false;
    for c in s
        .chars()
        .flat_map(char::to_lowercase)
        .nfkd()
        .filter(|c| !is_combining_mark(*c))
    {
        if c.is_whitespace() {
            space = !out.is_empty();
        } else {
            if space {
                out.push(' ');
                space = false;
            }
            out.push(c);
        }
    }
    out
}

/// A string (or markdown) value; `None` when blank.
pub fn string(s: &str) -> Option<IndexValue> {
    let normalized = normalize_string(s);
    (!normalized.is_empty()).then(|| IndexValue::String {
        normalized,
        exact: s.to_owned(),
    })
}

/// HumanName: family, each given, prefix and suffix, and text, as separate entries.
pub fn human_name(name: &Value) -> Vec<IndexValue> {
    let family = text_list(name, "family");
    let parts = family
        .chain(text_list(name, "given"))
        .chain(text_list(name, "prefix"))
        .chain(text_list(name, "suffix"))
        .chain(text_list(name, "text"));
    parts.filter_map(string).collect()
}

/// Address: each line, city, district, state, postalCode, country and text.
pub fn address(address: &Value) -> Vec<IndexValue> {
    [
        "line",
        "city",
        "district",
        "state",
        "postalCode",
        "country",
        "text",
    ]
    .into_iter()
    .flat_map(|key| text_list(address, key))
    .filter_map(string)
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn s(normalized: &str, exact: &str) -> IndexValue {
        IndexValue::String {
            normalized: normalized.into(),
            exact: exact.into(),
        }
    }

    #[test]
    fn normalize_string_rows() {
        let rows = [
            ("Müller", "muller"),
            ("  Anna   Maria ", "anna maria"),
            ("ÅNGSTRÖM", "angstrom"),
            ("Zoë\tBrontë", "zoe bronte"),
            ("Ｆｕｌｌ", "full"),
            ("ﬁne", "fine"),
            ("İstanbul", "istanbul"),
            ("Straße", "straße"),
            ("Øre", "øre"),
            ("O'Brien-Smith", "o'brien-smith"),
            ("", ""),
            (" \n ", ""),
        ];
        for (input, expected) in rows {
            assert_eq!(normalize_string(input), expected, "{input:?}");
        }
    }

    #[test]
    fn string_rows() {
        assert_eq!(string("Wien"), Some(s("wien", "Wien")));
        assert_eq!(string(" Ärztin "), Some(s("arztin", " Ärztin ")));
        assert_eq!(string("   "), None);
        assert_eq!(string(""), None);
    }

    #[test]
    fn human_name_rows() {
        let rows = [
            (
                json!({"use": "official", "family": "Müller", "given": ["Jörg", "Zoë"], "prefix": ["Dr."],
                       "suffix": ["MSc"], "text": "Dr. Jörg Zoë Müller MSc"}),
                vec![
                    s("muller", "Müller"),
                    s("jorg", "Jörg"),
                    s("zoe", "Zoë"),
                    s("dr.", "Dr."),
                    s("msc", "MSc"),
                    s("dr. jorg zoe muller msc", "Dr. Jörg Zoë Müller MSc"),
                ],
            ),
            (
                json!({"text": "Jörg Müller"}),
                vec![s("jorg muller", "Jörg Müller")],
            ),
            (json!({"given": ["A", null, "", 5]}), vec![s("a", "A")]),
            (
                json!({"family": ["not", "a string"]}),
                vec![s("not", "not"), s("a string", "a string")],
            ),
            (json!({"use": "official"}), vec![]),
            (json!("just text"), vec![]),
        ];
        for (name, expected) in rows {
            assert_eq!(human_name(&name), expected, "{name}");
        }
    }

    #[test]
    fn address_rows() {
        let full = json!({"use": "home", "line": ["Hauptstraße 1", "Stiege 2"], "city": "Wien",
            "district": "Innere Stadt", "state": "W", "postalCode": "1010", "country": "AT", "text": "x"});
        assert_eq!(
            address(&full),
            vec![
                s("hauptstraße 1", "Hauptstraße 1"),
                s("stiege 2", "Stiege 2"),
                s("wien", "Wien"),
                s("innere stadt", "Innere Stadt"),
                s("w", "W"),
                s("1010", "1010"),
                s("at", "AT"),
                s("x", "x")
            ]
        );
        assert_eq!(address(&json!({"city": ""})), vec![]);
        assert_eq!(address(&json!({"period": {"start": "2020"}})), vec![]);
    }

    #[test]
    fn dispatch_rows() {
        assert_eq!(
            values(Shape::Primitive, &json!("Markdown *text*")),
            vec![s("markdown *text*", "Markdown *text*")]
        );
        assert_eq!(values(Shape::Primitive, &json!(true)), vec![]);
        assert_eq!(
            values(Shape::CodeableConcept, &json!({"text": "Fever"})),
            vec![s("fever", "Fever")]
        );
        assert_eq!(values(Shape::Reference, &json!({"display": "X"})), vec![]);
    }
}
