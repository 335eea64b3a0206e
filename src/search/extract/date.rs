//! Date parameters: date, dateTime, instant, Period, Timing.
//!
//! Every value becomes the range of instants it covers, so the comparators (`eq`, `lt`, `sa`,
//! `eb`, `ap`, …) are range comparisons on the query side. Precision is part of the value:
//! `1980-03` covers the whole of March. Microseconds since the Unix epoch, half-open
//! `[start, end)` like `crate::fhir::instant`; values without a zone are taken as UTC.

use serde_json::Value;

use super::{IndexValue, Shape};

pub(super) fn values(shape: Shape, value: &Value) -> Option<IndexValue> {
    match shape {
        Shape::Primitive => date(value.as_str()?),
        Shape::Period => period(value),
        Shape::Timing => timing(value),
        _ => None,
    }
}

/// date, dateTime or instant: the range its precision covers.
pub fn date(text: &str) -> Option<IndexValue> {
    parse_date_range(text).map(|(start, end)| IndexValue::Date { start, end })
}

/// Period: from the start of `start` to the end of `end`; a missing end is open.
pub fn period(period: &Value) -> Option<IndexValue> {
    let (start, end) = period_range(period)?;
    Some(IndexValue::Date { start, end })
}

fn period_range(period: &Value) -> Option<(i64, i64)> {
    let start = period.get("start").and_then(Value::as_str);
    let end = period.get("end").and_then(Value::as_str);
    if start.is_none() && end.is_none() {
        return None;
    }
    let low = match start {
        Some(s) => parse_date_range(s)?.0,
        None => i64::MIN,
    };
    let high = match end {
        Some(e) => parse_date_range(e)?.1,
        None => i64::MAX,
    };
    (low < high).then_some((low, high))
}

/// Timing: from the first to the last `event`; without events, `repeat.boundsPeriod`.
pub fn timing(timing: &Value) -> Option<IndexValue> {
    let events = timing
        .get("event")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    let ranges: Vec<(i64, i64)> = events
        .iter()
        .filter_map(|e| parse_date_range(e.as_str()?))
        .collect();
    let (start, end) = match (
        ranges.iter().map(|r| r.0).min(),
        ranges.iter().map(|r| r.1).max(),
    ) {
        (Some(start), Some(end)) => (start, end),
        _ => period_range(timing.get("repeat")?.get("boundsPeriod")?)?,
    };
    Some(IndexValue::Date { start, end })
}

const MICROS_PER_SECOND: i64 = 1_000_000;

/// The instants a FHIR date, dateTime or instant covers, as µs since the Unix epoch, half-open
/// `[start, end)`: `2026` is `[2026-01-01T00:00Z, 2027-01-01T00:00Z)`.
///
/// Accepts `YYYY`, `YYYY-MM`, `YYYY-MM-DD`, and `YYYY-MM-DDThh:mm[:ss[.f…]]` with an optional
/// `Z`/`±hh:mm` (minute precision is not valid FHIR but is what people send in search values).
/// Values without a zone are UTC. `None` for anything malformed.
pub fn parse_date_range(text: &str) -> Option<(i64, i64)> {
    let (date_part, time_part) = match text.split_once('T') {
        Some((d, t)) => (d, Some(t)),
        None => (text, None),
    };
    let mut fields = date_part.split('-');
    let year: i32 = digits(fields.next()?, 4)?.try_into().ok()?;
    let month = fields
        .next()
        .map(|m| digits(m, 2))
        .map_or(Ok(None), |m| m.map(Some).ok_or(()));
    let day = fields
        .next()
        .map(|d| digits(d, 2))
        .map_or(Ok(None), |d| d.map(Some).ok_or(()));
    let (month, day) = (month.ok()?, day.ok()?);
    if fields.next().is_some() || year == 0 {
        return None;
    }
    let first = |y: i32, m: u32, d: u32| chrono::NaiveDate::from_ymd_opt(y, m, d);
    let micros = |d: chrono::NaiveDate| {
        d.and_hms_opt(0, 0, 0)
            .map(|t| t.and_utc().timestamp_micros())
    };
    let (start, next) = match (month, day, time_part) {
        (None, None, None) => (first(year, 1, 1)?, first(year + 1, 1, 1)?),
        (Some(m), None, None) => {
            let start = first(year, m, 1)?;
            (start, start.checked_add_months(chrono::Months::new(1))?)
        }
        (Some(m), Some(d), None) => {
            let start = first(year, m, d)?;
            (start, start.succ_opt()?)
        }
        (Some(m), Some(d), Some(time)) => {
            let day_start = micros(first(year, m, d)?)?;
            let (offset, width) = parse_time(time)?;
            let start = day_start.checked_add(offset)?;
            return Some((start, start.checked_add(width)?));
        }
        _ => return None,
    };
    Some((micros(start)?, micros(next)?))
}

/// `hh:mm[:ss[.fff]][Z|±hh:mm]` → (µs from midnight UTC of that date, width of the precision).
fn parse_time(time: &str) -> Option<(i64, i64)> {
    let zone_at = time.find(['Z', '+', '-']).unwrap_or(time.len());
    let (clock, zone) = time.split_at(zone_at);
    let zone_offset = match zone {
        "" | "Z" => 0,
        _ => {
            let sign = if zone.starts_with('-') { -1 } else { 1 };
            let (h, m) = zone[1..].split_once(':')?;
            let (h, m) = (digits(h, 2)?, digits(m, 2)?);
            if h > 14 || m > 59 {
                return None;
            }
            sign * (i64::from(h) * 3600 + i64::from(m) * 60) * MICROS_PER_SECOND
        }
    };
    let mut fields = clock.split(':');
    let hour = digits(fields.next()?, 2)?;
    let minute = digits(fields.next()?, 2)?;
    let (second, fraction) = match fields.next() {
        Some(s) => match s.split_once('.') {
            Some((s, f)) => (Some(digits(s, 2)?), Some(f)),
            None => (Some(digits(s, 2)?), None),
        },
        None => (None, None),
    };
    if fields.next().is_some() || hour > 23 || minute > 59 || second.is_some_and(|s| s > 60) {
        return None;
    }
    // A leap second is folded into the second before it.
    let second = second.map(|s| s.min(59));
    let (fraction_micros, width) = match (second, fraction) {
        (None, _) => (0, 60 * MICROS_PER_SECOND),
        (Some(_), None) => (0, MICROS_PER_SECOND),
        (Some(_), Some(f)) => {
            if f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let kept = &f[..f.len().min(6)];
            let scale = 10_i64.pow(6 - kept.len() as u32);
            (kept.parse::<i64>().ok()? * scale, scale)
        }
    };
    let local = (i64::from(hour) * 3600 + i64::from(minute) * 60 + i64::from(second.unwrap_or(0)))
        * MICROS_PER_SECOND
        + fraction_micros;
    Some((local - zone_offset, width))
}

/// Exactly `len` ASCII digits.
fn digits(s: &str, len: usize) -> Option<u32> {
    (s.len() == len && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// µs since the epoch of an RFC 3339 instant.
    fn at(rfc3339: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(rfc3339)
            .map(|t| t.timestamp_micros())
            .expect("valid test instant")
    }

    #[test]
    fn parse_date_range_rows() {
        let rows = [
            ("2026", "2026-01-01T00:00:00Z", "2027-01-01T00:00:00Z"),
            ("1980-03", "1980-03-01T00:00:00Z", "1980-04-01T00:00:00Z"),
            ("2024-02", "2024-02-01T00:00:00Z", "2024-03-01T00:00:00Z"),
            ("2026-12", "2026-12-01T00:00:00Z", "2027-01-01T00:00:00Z"),
            ("2026-03-05", "2026-03-05T00:00:00Z", "2026-03-06T00:00:00Z"),
            (
                "2026-03-05T10:00",
                "2026-03-05T10:00:00Z",
                "2026-03-05T10:01:00Z",
            ),
            (
                "2026-03-05T10:00:00Z",
                "2026-03-05T10:00:00Z",
                "2026-03-05T10:00:01Z",
            ),
            (
                "2026-03-05T10:00:00",
                "2026-03-05T10:00:00Z",
                "2026-03-05T10:00:01Z",
            ),
            (
                "2026-03-05T10:00:00+01:00",
                "2026-03-05T09:00:00Z",
                "2026-03-05T09:00:01Z",
            ),
            (
                "2026-03-05T10:00:00-03:30",
                "2026-03-05T13:30:00Z",
                "2026-03-05T13:30:01Z",
            ),
            (
                "2026-03-05T00:30:00+01:00",
                "2026-03-04T23:30:00Z",
                "2026-03-04T23:30:01Z",
            ),
            (
                "2026-03-05T10:00:00.123Z",
                "2026-03-05T10:00:00.123Z",
                "2026-03-05T10:00:00.124Z",
            ),
            (
                "2026-03-05T10:00:00.1234567Z",
                "2026-03-05T10:00:00.123456Z",
                "2026-03-05T10:00:00.123457Z",
            ),
            (
                "2016-12-31T23:59:60Z",
                "2016-12-31T23:59:59Z",
                "2017-01-01T00:00:00Z",
            ),
            ("0001-01-01", "0001-01-01T00:00:00Z", "0001-01-02T00:00:00Z"),
        ];
        for (text, start, end) in rows {
            assert_eq!(parse_date_range(text), Some((at(start), at(end))), "{text}");
        }
        let last_year = parse_date_range("9999").map(|(_, end)| end);
        assert_eq!(last_year, Some(at("9999-12-31T23:59:59.999999Z") + 1));
        // Fixed numbers, independent of chrono.
        assert_eq!(parse_date_range("1970-01-01"), Some((0, 86_400_000_000)));
        assert_eq!(
            parse_date_range("2026-03-05T10:00:00+01:00"),
            Some((1_772_701_200_000_000, 1_772_701_201_000_000))
        );
        assert_eq!(
            parse_date_range("2026-03-05T10:00:00-03:30"),
            Some((1_772_717_400_000_000, 1_772_717_401_000_000))
        );
    }

    #[test]
    fn parse_date_range_rejects_malformed_rows() {
        for text in [
            "",
            "26",
            "0000",
            "2026-13",
            "2026-00",
            "2026-02-30",
            "2026-3-5",
            "2026-03-05-01",
            "abcd",
            "2026-03-05T",
            "2026-03-05T10",
            "2026-03-05T25:00",
            "2026-03-05T10:60",
            "2026-03-05T10:00:61",
            "2026-03-05T10:00:00+15:00",
            "2026-03-05T10:00:00+01",
            "2026-03-05T10:00:00.Z",
            "2026-03-05T10:00:00.1a",
            "2026T10:00",
            "2026-03T10:00",
            "+2026",
            "２０２６",
        ] {
            assert_eq!(parse_date_range(text), None, "{text}");
        }
    }

    #[test]
    fn period_rows() {
        let d = |start, end| Some(IndexValue::Date { start, end });
        let rows = [
            (
                json!({"start": "2026-03-05", "end": "2026-03-06"}),
                d(at("2026-03-05T00:00:00Z"), at("2026-03-07T00:00:00Z")),
            ),
            (
                json!({"start": "2026-03-05T10:00:00+01:00"}),
                d(at("2026-03-05T09:00:00Z"), i64::MAX),
            ),
            (
                json!({"end": "2026"}),
                d(i64::MIN, at("2027-01-01T00:00:00Z")),
            ),
            (
                json!({"start": "2026-03-05T10:00:00Z", "end": "2026-03-05T10:00:00Z"}),
                d(at("2026-03-05T10:00:00Z"), at("2026-03-05T10:00:01Z")),
            ),
            (json!({}), None),
            (json!({"start": "2026-03-06", "end": "2026-03-05"}), None),
            (json!({"start": "yesterday"}), None),
            (json!({"start": 2026}), None),
        ];
        for (value, expected) in rows {
            assert_eq!(period(&value), expected, "{value}");
        }
    }

    #[test]
    fn timing_rows() {
        let events = json!({"event": ["2026-03-05T10:00:00Z", "2026-03-01", "bad"]});
        assert_eq!(
            timing(&events),
            Some(IndexValue::Date {
                start: at("2026-03-01T00:00:00Z"),
                end: at("2026-03-05T10:00:01Z")
            })
        );
        let bounds = json!({"repeat": {"boundsPeriod": {"start": "2026-03-01"}, "frequency": 1}});
        assert_eq!(
            timing(&bounds),
            Some(IndexValue::Date {
                start: at("2026-03-01T00:00:00Z"),
                end: i64::MAX
            })
        );
        assert_eq!(timing(&json!({"code": {"text": "BID"}})), None);
    }

    #[test]
    fn dispatch_rows() {
        assert_eq!(values(Shape::Primitive, &json!("2026")), date("2026"));
        assert_eq!(values(Shape::Primitive, &json!(2026)), None);
        assert_eq!(values(Shape::Quantity, &json!({"value": 3})), None);
    }
}
