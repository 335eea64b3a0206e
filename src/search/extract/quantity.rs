//! Number and quantity parameters: integer, decimal, Quantity (and Age, Duration, …), Money,
//! Range.
//!
//! A decimal's text carries its precision (`1.50` is not `1.5`), and R4 search compares against
//! the range that precision implies; so each value keeps its text and `[low, high)`.

use serde_json::Value;

use super::{IndexValue, Shape, text_field};

/// The value of a decimal as written and the range its significant digits imply, `[low, high)`:
/// half a unit of the last written digit either side.
pub fn decimal_range(text: &str) -> Option<(f64, f64, f64)> {
    let value: f64 = text.parse().ok().filter(|v: &f64| v.is_finite())?;
    let (mantissa, exponent) = match text.find(['e', 'E']) {
        Some(i) => (&text[..i], text[i + 1..].parse::<i32>().ok()?),
        None => (text, 0),
    };
    let decimals = mantissa.split_once('.').map_or(0, |(_, f)| f.len());
    let half = 0.5 * 10_f64.powi(exponent.saturating_sub(i32::try_from(decimals).ok()?));
    Some((value, value - half, value + half))
}

/// integer or decimal, keeping its text (`1.50` stays `1.50`).
pub fn number(value: &Value) -> Option<IndexValue> {
    let Value::Number(n) = value else { return None };
    let text = n.to_string();
    let (value, low, high) = decimal_range(&text)?;
    Some(IndexValue::Number {
        value,
        low,
        high,
        text,
    })
}

pub(super) fn values(shape: Shape, value: &Value) -> Option<IndexValue> {
    match shape {
        Shape::Quantity => quantity(value),
        Shape::Money => money(value),
        Shape::Range => range(value),
        _ => None,
    }
}

/// Quantity (and Age, Duration, …): value with its implied range, widened to the open side by a
/// comparator (`<5` covers everything below 5), plus system, code and unit.
pub fn quantity(quantity: &Value) -> Option<IndexValue> {
    let Some(IndexValue::Number {
        value,
        mut low,
        mut high,
        ..
    }) = number(quantity.get("value")?)
    else {
        return None;
    };
    match quantity.get("comparator").and_then(Value::as_str) {
        Some("<" | "<=") => low = f64::MIN,
        Some(">" | ">=") => high = f64::MAX,
        _ => {}
    }
    Some(IndexValue::Quantity {
        value,
        low,
        high,
        system: text_field(quantity, "system"),
        code: text_field(quantity, "code"),
        unit: text_field(quantity, "unit"),
    })
}

/// Money: the amount, with the currency as an ISO 4217 code.
pub fn money(money: &Value) -> Option<IndexValue> {
    let Some(IndexValue::Number {
        value, low, high, ..
    }) = number(money.get("value")?)
    else {
        return None;
    };
    let currency = text_field(money, "currency");
    Some(IndexValue::Quantity {
        value,
        low,
        high,
        system: currency.as_ref().map(|_| "urn:iso:std:iso:4217".to_owned()),
        code: currency,
        unit: None,
    })
}

/// Range: one entry spanning `low` to `high` (either may be open); `value` is the lower bound
/// when there is one, else the upper; the unit is taken from the same bound.
pub fn range(range: &Value) -> Option<IndexValue> {
    let low = range.get("low").and_then(quantity);
    let high = range.get("high").and_then(quantity);
    let lower = match &low {
        Some(IndexValue::Quantity { low, .. }) => *low,
        _ => f64::MIN,
    };
    let upper = match &high {
        Some(IndexValue::Quantity { high, .. }) => *high,
        _ => f64::MAX,
    };
    match low.or(high)? {
        IndexValue::Quantity {
            value,
            system,
            code,
            unit,
            ..
        } => Some(IndexValue::Quantity {
            value,
            low: lower,
            high: upper,
            system,
            code,
            unit,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
    }

    #[test]
    fn decimal_range_rows() {
        let rows = [
            ("100", (100.0, 99.5, 100.5)),
            ("100.00", (100.0, 99.995, 100.005)),
            ("1e2", (100.0, 50.0, 150.0)),
            ("1.5e2", (150.0, 145.0, 155.0)),
            ("1E-3", (0.001, 0.0005, 0.0015)),
            ("0.1", (0.1, 0.05, 0.15)),
            ("-3", (-3.0, -3.5, -2.5)),
            ("72", (72.0, 71.5, 72.5)),
            ("1.50", (1.5, 1.495, 1.505)),
        ];
        for (text, (v, lo, hi)) in rows {
            let (value, low, high) = decimal_range(text).unwrap_or_else(|| panic!("{text}"));
            assert!(
                close(value, v) && close(low, lo) && close(high, hi),
                "{text}: {value} [{low}, {high})"
            );
        }
        for bad in ["", "abc", "1e999", "NaN", "1.2.3"] {
            assert_eq!(decimal_range(bad), None, "{bad}");
        }
    }

    #[test]
    fn number_keeps_its_text() {
        let value: Value = serde_json::from_str("1.50").unwrap();
        match number(&value) {
            Some(IndexValue::Number { text, value, .. }) => {
                assert_eq!(text, "1.50");
                assert!(close(value, 1.5));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(number(&json!("1.5")), None, "a string is not a number");
    }

    fn q(
        value: f64,
        low: f64,
        high: f64,
        system: Option<&str>,
        code: Option<&str>,
        unit: Option<&str>,
    ) -> IndexValue {
        IndexValue::Quantity {
            value,
            low,
            high,
            system: system.map(Into::into),
            code: code.map(Into::into),
            unit: unit.map(Into::into),
        }
    }

    #[test]
    fn quantity_rows() {
        let ucum = Some("http://unitsofmeasure.org");
        let rows = [
            (
                json!({"value": 72, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"}),
                Some(q(72.0, 71.5, 72.5, ucum, Some("/min"), Some("/min"))),
            ),
            (
                json!({"value": 5, "comparator": "<", "unit": "mg"}),
                Some(q(5.0, f64::MIN, 5.5, None, None, Some("mg"))),
            ),
            (
                json!({"value": 5, "comparator": ">="}),
                Some(q(5.0, 4.5, f64::MAX, None, None, None)),
            ),
            (json!({"unit": "mg"}), None),
            (json!({"value": "72"}), None),
        ];
        for (value, expected) in rows {
            assert_eq!(quantity(&value), expected, "{value}");
        }
    }

    #[test]
    fn money_rows() {
        let iso = Some("urn:iso:std:iso:4217");
        assert_eq!(
            money(&json!({"value": 120, "currency": "EUR"})),
            Some(q(120.0, 119.5, 120.5, iso, Some("EUR"), None))
        );
        assert_eq!(
            money(&json!({"value": 120})),
            Some(q(120.0, 119.5, 120.5, None, None, None))
        );
        assert_eq!(money(&json!({"currency": "EUR"})), None);
    }

    #[test]
    fn range_rows() {
        let rows = [
            (
                json!({"low": {"value": 10, "unit": "a"}, "high": {"value": 20, "unit": "a"}}),
                Some(q(10.0, 9.5, 20.5, None, None, Some("a"))),
            ),
            (
                json!({"low": {"value": 10}}),
                Some(q(10.0, 9.5, f64::MAX, None, None, None)),
            ),
            (
                json!({"high": {"value": 20, "code": "a"}}),
                Some(q(20.0, f64::MIN, 20.5, None, Some("a"), None)),
            ),
            (json!({}), None),
        ];
        for (value, expected) in rows {
            assert_eq!(range(&value), expected, "{value}");
        }
    }

    #[test]
    fn dispatch_rows() {
        assert!(values(Shape::Quantity, &json!({"value": 1})).is_some());
        assert!(values(Shape::Money, &json!({"value": 1, "currency": "EUR"})).is_some());
        assert!(values(Shape::Range, &json!({"low": {"value": 1}})).is_some());
        assert!(
            values(Shape::Other, &json!({"origin": {"value": 1}, "period": 10})).is_none(),
            "SampledData"
        );
    }
}
