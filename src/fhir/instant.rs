//! Time as the server stores it (microseconds since the Unix epoch, UTC) and as FHIR and HTTP
//! write it. Parsing FHIR dates into ranges lives with search (`search::extract::parse_date_range`).

use chrono::{NaiveDateTime, TimeZone, Utc};

/// Microseconds since the Unix epoch, UTC: the unit of `last_updated` in the store and of date
/// index ranges, so that comparisons are plain integer comparisons in both SQL dialects.
pub type Micros = i64;

pub fn now_micros() -> Micros {
    Utc::now().timestamp_micros()
}

/// `meta.lastUpdated` text: an R4 instant with microsecond precision in UTC.
pub fn format_instant(micros: Micros) -> String {
    match Utc.timestamp_micros(micros).single() {
        Some(t) => t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
        None => "1970-01-01T00:00:00Z".to_string(),
    }
}

/// HTTP date for `Last-Modified`.
pub fn format_http_date(micros: Micros) -> String {
    match Utc.timestamp_micros(micros).single() {
        Some(t) => t.format("%a, %d %b %Y %H:%M:%S GMT").to_string(),
        None => "Thu, 01 Jan 1970 00:00:00 GMT".to_string(),
    }
}

/// Parse an HTTP date (`If-Modified-Since`).
/// The weekday is not checked: a client that names the wrong one still means the date.
pub fn parse_http_date(text: &str) -> Option<Micros> {
    let text = text.trim();
    let without_weekday = text.split_once(", ").map_or(text, |(_, rest)| rest);
    NaiveDateTime::parse_from_str(without_weekday, "%d %b %Y %H:%M:%S GMT")
        .ok()
        .map(|t| t.and_utc().timestamp_micros())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates_round_trip() {
        let t = 1_700_000_000_000_000;
        assert_eq!(parse_http_date(&format_http_date(t)), Some(t));
    }
}
