//! HL7 numbers (NM), structured numerics (SN) and reference ranges, as FHIR values.
//!
//! FHIR decimals keep their text (`72.0` stays `72.0`), so numbers become JSON numbers parsed from
//! their canonical text with serde_json's arbitrary precision; only what FHIR's decimal grammar
//! forbids is rewritten (`+5` → `5`, `.5` → `0.5`, `5.` → `5`).

use serde_json::{Map, Value};

/// An HL7 NM value as the text of a FHIR decimal; `None` when it is not a number.
pub fn decimal_text(nm: &str) -> Option<String> {
    let nm = nm.trim();
    let (sign, digits) = match nm.as_bytes().first()? {
        b'+' => ("", &nm[1..]),
        b'-' => ("-", &nm[1..]),
        _ => ("", nm),
    };
    let (whole, fraction) = match digits.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (digits, None),
    };
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(whole)
        || !fraction.is_none_or(all_digits)
        || (whole.is_empty() && fraction.is_none_or(str::is_empty))
    {
        return None;
    }
    // FHIR's decimal forbids leading zeros except a single one before the point.
    let whole = whole.trim_start_matches('0');
    let whole = if whole.is_empty() { "0" } else { whole };
    let text = match fraction {
        Some(fraction) if !fraction.is_empty() => format!("{sign}{whole}.{fraction}"),
        _ => format!("{sign}{whole}"),
    };
    Some(if text == "-0" { "0".into() } else { text })
}

/// A FHIR decimal as a JSON number that keeps its text.
pub fn decimal(nm: &str) -> Option<Value> {
    let text = decimal_text(nm)?;
    serde_json::from_str::<Value>(&text)
        .ok()
        .filter(Value::is_number)
}

/// An SN value (comparator ^ num1 ^ separator/suffix ^ num2), as the IG maps it.
#[derive(Debug, Clone, PartialEq)]
pub enum Structured {
    /// `[comparator]^num`: a quantity, with a FHIR comparator unless `=` or empty.
    Quantity {
        comparator: Option<&'static str>,
        value: Value,
    },
    /// `^low^-^high`: a range.
    Range { low: Value, high: Value },
    /// `^num^:^den` or `^num^/^den`: a ratio.
    Ratio {
        numerator: Value,
        denominator: Value,
    },
}

pub fn structured(
    comparator: &str,
    first: &str,
    separator: &str,
    second: &str,
) -> Option<Structured> {
    let first = decimal(first)?;
    match (separator, second.is_empty()) {
        ("", true) => {
            let comparator = match comparator {
                "" | "=" => None,
                "<" => Some("<"),
                ">" => Some(">"),
                "<=" => Some("<="),
                ">=" => Some(">="),
                // `<>` (not equal) has no FHIR comparator.
                _ => return None,
            };
            Some(Structured::Quantity {
                comparator,
                value: first,
            })
        }
        ("-", false) if comparator.is_empty() => Some(Structured::Range {
            low: first,
            high: decimal(second)?,
        }),
        (":" | "/", false) if comparator.is_empty() => Some(Structured::Ratio {
            numerator: first,
            denominator: decimal(second)?,
        }),
        _ => None,
    }
}

/// OBX-7 (`low-high`, `<high`, `>low`, `<=high`, `>=low`) as a referenceRange with `unit`
/// (a Quantity's unit, system and code); text that is not one of these forms is kept as `text`.
pub fn reference_range(text: &str, unit: &Map<String, Value>) -> Value {
    let text = text.trim();
    let quantity = |value: Value| {
        let mut q = Map::new();
        q.insert("value".into(), value);
        for (k, v) in unit {
            q.insert(k.clone(), v.clone());
        }
        Value::Object(q)
    };
    let mut range = Map::new();
    let bound = |rest: &str| decimal(rest);
    if let Some(rest) = text.strip_prefix("<=").or_else(|| text.strip_prefix('<'))
        && let Some(high) = bound(rest)
    {
        range.insert("high".into(), quantity(high));
    } else if let Some(rest) = text.strip_prefix(">=").or_else(|| text.strip_prefix('>'))
        && let Some(low) = bound(rest)
    {
        range.insert("low".into(), quantity(low));
    } else if let Some((low, high)) = split_range(text)
        && let (Some(low), Some(high)) = (bound(low), bound(high))
    {
        range.insert("low".into(), quantity(low));
        range.insert("high".into(), quantity(high));
    } else {
        range.insert("text".into(), Value::String(text.to_string()));
    }
    Value::Object(range)
}

/// Split `low-high` at the hyphen that separates them (a leading minus belongs to `low`).
fn split_range(text: &str) -> Option<(&str, &str)> {
    let start = usize::from(text.starts_with('-'));
    let at = text[start..].find('-')? + start;
    Some((&text[..at], &text[at + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decimals_keep_their_precision() {
        assert_eq!(decimal_text("72").as_deref(), Some("72"));
        assert_eq!(decimal_text("72.0").as_deref(), Some("72.0"));
        assert_eq!(decimal_text("+5").as_deref(), Some("5"));
        assert_eq!(decimal_text(".5").as_deref(), Some("0.5"));
        assert_eq!(decimal_text("-0.50").as_deref(), Some("-0.50"));
        assert_eq!(decimal_text("007").as_deref(), Some("7"));
        assert_eq!(decimal_text("5.").as_deref(), Some("5"));
        assert_eq!(decimal_text("-0").as_deref(), Some("0"));
        for bad in ["", "-", ".", "1e3", "1.2.3", "12a", " ", "+-1", "٣"] {
            assert_eq!(decimal_text(bad), None, "{bad:?}");
        }
        assert_eq!(decimal("72.0").unwrap().to_string(), "72.0");
    }

    #[test]
    fn structured_numerics() {
        assert_eq!(
            structured(">", "100", "", ""),
            Some(Structured::Quantity {
                comparator: Some(">"),
                value: json!(100)
            })
        );
        assert_eq!(
            structured("", "100", "", ""),
            Some(Structured::Quantity {
                comparator: None,
                value: json!(100)
            })
        );
        assert!(matches!(
            structured("", "10", "-", "20"),
            Some(Structured::Range { .. })
        ));
        assert!(matches!(
            structured("", "1", ":", "128"),
            Some(Structured::Ratio { .. })
        ));
        assert!(matches!(
            structured("", "1", "/", "2"),
            Some(Structured::Ratio { .. })
        ));
        assert_eq!(structured("<>", "5", "", ""), None);
        assert_eq!(structured("", "x", "", ""), None);
        assert_eq!(structured("", "2", "+", ""), None);
    }

    #[test]
    fn reference_ranges() {
        let unit = json!({"unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"});
        let unit = unit.as_object().unwrap();
        assert_eq!(reference_range("60-100", unit)["low"]["value"], json!(60));
        assert_eq!(
            reference_range("60-100", unit)["high"]["code"],
            json!("/min")
        );
        assert_eq!(
            reference_range("-1.5--0.5", unit)["high"]["value"].to_string(),
            "-0.5"
        );
        assert_eq!(reference_range("<5", unit)["high"]["value"], json!(5));
        assert_eq!(reference_range(">=3", unit)["low"]["value"], json!(3));
        assert_eq!(reference_range("normal", unit), json!({"text": "normal"}));
    }
}
