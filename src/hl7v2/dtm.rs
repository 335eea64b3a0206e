//! HL7 v2 DTM timestamps (and the first component of the older TS) to FHIR `dateTime`, keeping the
//! sender's precision.
//!
//! # Format
//!
//! `YYYY[MM[DD[HH[MM[SS[.S[S[S[S]]]]]]]]][+/-ZZZZ]`, ASCII digits only, nothing around it. For a TS the
//! caller passes the first component; the degree-of-precision component is ignored.
//!
//! # Conversion
//!
//! - A date keeps its precision: `2026` → `2026`, `202603` → `2026-03`, `20260314` → `2026-03-14`. An
//!   offset given with a date is checked and then dropped, since a FHIR date has none.
//! - A time needs seconds and an offset in FHIR: `202603141230` → `2026-03-14T12:30:00+01:00` with
//!   [`Precision::Minute`]; hours and minutes are padded with zeros, the precision records what was sent.
//!   Fractional seconds are kept digit for digit (`.1` stays `.1`, at most 4 digits).
//! - Offsets are exact (`-0330` is minus three and a half hours) and within ±14:00; `-0000` is UTC and
//!   written `+00:00`, like `+0000`.
//! - A time without an offset is in the facility's time zone, daylight saving included. A local time in
//!   the spring-forward gap never happened and is an error. A local time in the autumn overlap happened
//!   twice; we take the earlier instant, i.e. the summer-time offset, since a device clock that is not
//!   yet adjusted still runs on summer time and because later instants cannot be taken back.
//! - The calendar is checked: February 30, month 13, hour 24, minute 60 and second 60 (leap seconds) are
//!   errors, and so is year 0000, which FHIR does not allow.
//!
//! [`DtmError`] describes what is wrong without repeating the value, which may be a birth date.

use std::fmt;

use chrono::{
    DateTime, FixedOffset, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, Offset, TimeZone,
};
use chrono_tz::Tz;

/// The facility time zone when configuration names none.
pub const DEFAULT_FACILITY_ZONE: Tz = chrono_tz::Europe::Vienna;

/// How much of a timestamp the sender gave. Ordered from coarse to fine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Precision {
    Year,
    Month,
    Day,
    Hour,
    Minute,
    Second,
    /// Seconds with this many fractional digits (1 to 4).
    Fraction(u8),
}

/// A converted timestamp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FhirDateTime {
    /// A valid FHIR `dateTime`.
    pub text: String,
    pub precision: Precision,
    /// The instant, for [`Precision::Hour`] and finer, with the offset used in `text`.
    pub instant: Option<DateTime<FixedOffset>>,
}

impl FhirDateTime {
    /// The FHIR `instant` text, when the timestamp has a time of day. For [`Precision::Hour`] and
    /// [`Precision::Minute`] it is padded (`12:00:00`, `12:30:00`), because an instant must have
    /// seconds; check [`FhirDateTime::precision`] when the difference matters. Dates give `None`.
    pub fn as_instant(&self) -> Option<String> {
        (self.precision >= Precision::Hour).then(|| self.text.clone())
    }
}

/// Why a DTM value was rejected. The text never includes the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DtmError {
    /// Not of the form `YYYY[MM[DD[HH[MM[SS[.S[S[S[S]]]]]]]]][+/-ZZZZ]`.
    Syntax(&'static str),
    /// A part out of range for the calendar or the clock.
    Calendar(&'static str),
    /// An offset that is malformed or beyond ±14:00.
    Offset(&'static str),
    /// A local time (no offset given) that does not exist in the facility time zone.
    NonexistentLocalTime,
}

impl fmt::Display for DtmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DtmError::Syntax(why) => write!(
                f,
                "not an HL7 DTM (YYYY[MM[DD[HH[MM[SS[.SSSS]]]]]][+/-ZZZZ]): {why}"
            ),
            DtmError::Calendar(why) => write!(f, "not a valid date or time: {why}"),
            DtmError::Offset(why) => write!(f, "invalid time-zone offset: {why}"),
            DtmError::NonexistentLocalTime => write!(
                f,
                "the local time falls in the facility time zone's daylight-saving gap and never happened; send an offset"
            ),
        }
    }
}

impl std::error::Error for DtmError {}

/// Converts an HL7 DTM value to a FHIR dateTime; see the module docs.
pub fn parse_dtm(value: &str, facility_zone: Tz) -> Result<FhirDateTime, DtmError> {
    let parts = Parts::split(value)?;
    let offset = parts.offset.map(parse_offset).transpose()?;
    let precision = parts.precision()?;
    let year = number(parts.digits, 0, 4);
    if year == 0 {
        return Err(DtmError::Calendar("year 0000 does not exist"));
    }
    let month = number(parts.digits, 4, 2);
    if precision >= Precision::Month && !(1..=12).contains(&month) {
        return Err(DtmError::Calendar("the month must be 01 to 12"));
    }
    match precision {
        Precision::Year => return Ok(date_only(format!("{year:04}"), precision)),
        Precision::Month => return Ok(date_only(format!("{year:04}-{month:02}"), precision)),
        _ => {}
    }
    let date = NaiveDate::from_ymd_opt(year as i32, month, number(parts.digits, 6, 2))
        .ok_or(DtmError::Calendar("the day does not exist in that month"))?;
    if precision == Precision::Day {
        return Ok(date_only(date.format("%Y-%m-%d").to_string(), precision));
    }
    let local = NaiveDateTime::new(date, time_of_day(&parts)?);
    let offset = match offset {
        Some(offset) => offset,
        None => facility_offset(local, facility_zone)?,
    };
    let instant = offset
        .from_local_datetime(&local)
        .single()
        .ok_or(DtmError::Offset(
            "the offset cannot be applied to this time",
        ))?;
    let text = format!(
        "{}{}{}",
        local.format("%Y-%m-%dT%H:%M:%S"),
        parts.fraction.map_or(String::new(), |f| format!(".{f}")),
        offset_text(offset)
    );
    Ok(FhirDateTime {
        text,
        precision,
        instant: Some(instant),
    })
}

fn date_only(text: String, precision: Precision) -> FhirDateTime {
    FhirDateTime {
        text,
        precision,
        instant: None,
    }
}

/// The pieces of a DTM value: the digits before any fraction, the fraction's digits, the offset.
struct Parts<'a> {
    digits: &'a str,
    fraction: Option<&'a str>,
    offset: Option<&'a str>,
}

impl<'a> Parts<'a> {
    fn split(value: &'a str) -> Result<Self, DtmError> {
        if value.is_empty() {
            return Err(DtmError::Syntax("the value is empty"));
        }
        // ASCII only from here on, so every byte index below is a char boundary.
        if !value.is_ascii() {
            return Err(DtmError::Syntax(
                "only the digits 0-9, '.', '+' and '-' may appear",
            ));
        }
        let (rest, offset) = match value.find(['+', '-']) {
            Some(i) => (&value[..i], Some(&value[i..])),
            None => (value, None),
        };
        // A sign followed by anything but digits is not an offset at all (an ISO date such as 2026-03-14).
        if offset.is_some_and(|o| !o[1..].bytes().all(|b| b.is_ascii_digit())) {
            return Err(DtmError::Syntax(
                "a '+' or '-' must be followed by the four digits of an offset",
            ));
        }
        let (digits, fraction) = match rest.split_once('.') {
            Some((digits, fraction)) => (digits, Some(fraction)),
            None => (rest, None),
        };
        if !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(DtmError::Syntax(
                "only the digits 0-9, '.', '+' and '-' may appear",
            ));
        }
        if let Some(fraction) = fraction {
            if digits.len() != 14 {
                return Err(DtmError::Syntax(
                    "fractional seconds need a full time with seconds before them",
                ));
            }
            if fraction.is_empty()
                || fraction.len() > 4
                || !fraction.bytes().all(|b| b.is_ascii_digit())
            {
                return Err(DtmError::Syntax("fractional seconds must be 1 to 4 digits"));
            }
        }
        Ok(Parts {
            digits,
            fraction,
            offset,
        })
    }

    fn precision(&self) -> Result<Precision, DtmError> {
        Ok(match (self.digits.len(), self.fraction) {
            (4, _) => Precision::Year,
            (6, _) => Precision::Month,
            (8, _) => Precision::Day,
            (10, _) => Precision::Hour,
            (12, _) => Precision::Minute,
            (14, None) => Precision::Second,
            // The fraction has 1 to 4 digits (checked in split).
            (14, Some(fraction)) => Precision::Fraction(fraction.len() as u8),
            _ => {
                return Err(DtmError::Syntax(
                    "the date and time must have 4, 6, 8, 10, 12 or 14 digits",
                ));
            }
        })
    }
}

/// The decimal number in `digits[start..start + len]`, 0 where the digits are absent (callers only
/// read positions that the precision says are present). `digits` is ASCII digits only.
fn number(digits: &str, start: usize, len: usize) -> u32 {
    digits.get(start..start + len).map_or(0, |part| {
        part.bytes().fold(0, |n, b| n * 10 + u32::from(b - b'0'))
    })
}

fn time_of_day(parts: &Parts<'_>) -> Result<NaiveTime, DtmError> {
    let (hour, minute, second) = (
        number(parts.digits, 8, 2),
        number(parts.digits, 10, 2),
        number(parts.digits, 12, 2),
    );
    if hour > 23 {
        return Err(DtmError::Calendar("the hour must be 00 to 23"));
    }
    if minute > 59 {
        return Err(DtmError::Calendar("the minute must be 00 to 59"));
    }
    if second > 59 {
        return Err(DtmError::Calendar(
            "the second must be 00 to 59 (leap seconds are not accepted)",
        ));
    }
    let nanos = parts
        .fraction
        .map_or(0, |f| number(f, 0, f.len()) * 10u32.pow(9 - f.len() as u32));
    NaiveTime::from_hms_nano_opt(hour, minute, second, nanos)
        .ok_or(DtmError::Calendar("the time of day is out of range"))
}

/// `+HHMM` / `-HHMM`, within ±14:00.
fn parse_offset(text: &str) -> Result<FixedOffset, DtmError> {
    let (sign, digits) = text.split_at(1);
    if digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(DtmError::Offset(
            "it must be + or - followed by four digits HHMM",
        ));
    }
    let (hours, minutes) = (number(digits, 0, 2), number(digits, 2, 2));
    if minutes > 59 {
        return Err(DtmError::Offset("the minutes must be 00 to 59"));
    }
    let seconds = (hours * 60 + minutes) * 60;
    if seconds > 14 * 3600 {
        return Err(DtmError::Offset("it must lie within -14:00 and +14:00"));
    }
    let seconds = seconds as i32;
    let offset = if sign == "-" {
        FixedOffset::west_opt(seconds)
    } else {
        FixedOffset::east_opt(seconds)
    };
    offset.ok_or(DtmError::Offset("it must lie within -14:00 and +14:00"))
}

/// The facility zone's offset at a local time: earlier instant when ambiguous, error when skipped.
fn facility_offset(local: NaiveDateTime, zone: Tz) -> Result<FixedOffset, DtmError> {
    let offset = match zone.from_local_datetime(&local) {
        LocalResult::Single(t) => t.offset().fix(),
        LocalResult::Ambiguous(a, b) => if a <= b { a } else { b }.offset().fix(),
        LocalResult::None => return Err(DtmError::NonexistentLocalTime),
    };
    // Before standard time (Vienna: 1893) zones ran on local mean time, e.g. +01:05:21, which a FHIR
    // offset (whole minutes) cannot express; rounding would silently move the instant.
    if offset.local_minus_utc() % 60 != 0 {
        return Err(DtmError::Offset(
            "the facility time zone had no whole-minute offset at that date (local mean time); send an offset",
        ));
    }
    Ok(offset)
}

/// `+01:00`, `-03:30`, `+00:00`.
fn offset_text(offset: FixedOffset) -> String {
    let seconds = offset.local_minus_utc();
    let sign = if seconds < 0 { '-' } else { '+' };
    let minutes = seconds.unsigned_abs() / 60;
    format!("{sign}{:02}:{:02}", minutes / 60, minutes % 60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn vienna(value: &str) -> Result<FhirDateTime, DtmError> {
        parse_dtm(value, DEFAULT_FACILITY_ZONE)
    }

    fn text(value: &str) -> String {
        vienna(value)
            .unwrap_or_else(|e| panic!("{value}: {e}"))
            .text
    }

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn dates_keep_their_precision() {
        for (value, expected, precision) in [
            ("2026", "2026", Precision::Year),
            ("202603", "2026-03", Precision::Month),
            ("20260314", "2026-03-14", Precision::Day),
            ("0001", "0001", Precision::Year),
        ] {
            let dt = vienna(value).unwrap();
            assert_eq!(
                (dt.text.as_str(), dt.precision, dt.instant),
                (expected, precision, None),
                "{value}"
            );
            assert_eq!(dt.as_instant(), None);
        }
    }

    #[test]
    fn times_are_padded_and_keep_their_precision() {
        for (value, expected, precision) in [
            ("2026031412", "2026-03-14T12:00:00+01:00", Precision::Hour),
            (
                "202603141230",
                "2026-03-14T12:30:00+01:00",
                Precision::Minute,
            ),
            (
                "20260314123005",
                "2026-03-14T12:30:05+01:00",
                Precision::Second,
            ),
            (
                "20260314123005.1",
                "2026-03-14T12:30:05.1+01:00",
                Precision::Fraction(1),
            ),
            (
                "20260314123005.10",
                "2026-03-14T12:30:05.10+01:00",
                Precision::Fraction(2),
            ),
            (
                "20260314123005.1234",
                "2026-03-14T12:30:05.1234+01:00",
                Precision::Fraction(4),
            ),
            (
                "20260714123005",
                "2026-07-14T12:30:05+02:00",
                Precision::Second,
            ),
        ] {
            let dt = vienna(value).unwrap();
            assert_eq!(
                (dt.text.as_str(), dt.precision),
                (expected, precision),
                "{value}"
            );
            assert_eq!(
                dt.instant.map(|i| i.with_timezone(&Utc)),
                Some(utc(expected)),
                "{value}"
            );
            assert_eq!(dt.as_instant().as_deref(), Some(expected));
        }
    }

    #[test]
    fn fraction_becomes_nanoseconds() {
        let dt = vienna("20260314123005.0042").unwrap();
        assert_eq!(dt.instant.unwrap().timestamp_subsec_nanos(), 4_200_000);
    }

    #[test]
    fn explicit_offsets_are_exact() {
        for (value, expected, utc_text) in [
            (
                "202603141230-0330",
                "2026-03-14T12:30:00-03:30",
                "2026-03-14T16:00:00Z",
            ),
            (
                "202603141230+0545",
                "2026-03-14T12:30:00+05:45",
                "2026-03-14T06:45:00Z",
            ),
            (
                "202603141230+0000",
                "2026-03-14T12:30:00+00:00",
                "2026-03-14T12:30:00Z",
            ),
            (
                "202603141230-0000",
                "2026-03-14T12:30:00+00:00",
                "2026-03-14T12:30:00Z",
            ),
            (
                "202603141230+1400",
                "2026-03-14T12:30:00+14:00",
                "2026-03-13T22:30:00Z",
            ),
            (
                "202603141230-1400",
                "2026-03-14T12:30:00-14:00",
                "2026-03-15T02:30:00Z",
            ),
            (
                "20260314123005.5-0330",
                "2026-03-14T12:30:05.5-03:30",
                "2026-03-14T16:00:05.5Z",
            ),
            (
                "2026071412+0100",
                "2026-07-14T12:00:00+01:00",
                "2026-07-14T11:00:00Z",
            ),
        ] {
            let dt = vienna(value).unwrap();
            assert_eq!(dt.text, expected, "{value}");
            assert_eq!(
                dt.instant.unwrap().with_timezone(&Utc),
                utc(utc_text),
                "{value}"
            );
        }
    }

    #[test]
    fn invalid_offsets_are_errors() {
        for value in [
            "202603141230+2460",
            "202603141230+1500",
            "202603141230-1401",
            "202603141230+1460",
            "202603141230+0160",
            "202603141230+01",
            "202603141230+01000",
            "202603141230+",
            "20260314+2460",
            "2026-03",
        ] {
            assert!(
                matches!(vienna(value), Err(DtmError::Offset(_))),
                "{value}: {:?}",
                vienna(value)
            );
        }
    }

    #[test]
    fn an_offset_on_a_date_is_dropped() {
        assert_eq!(text("20260314+0100"), "2026-03-14");
        assert_eq!(text("202603-0330"), "2026-03");
        assert_eq!(text("2026+1400"), "2026");
    }

    #[test]
    fn calendar_is_validated() {
        for value in ["20240229", "20000229", "20261231235959"] {
            assert!(vienna(value).is_ok(), "{value}");
        }
        for value in [
            "0000",
            "20260230",
            "20250229",
            "21000229",
            "20261301",
            "202600",
            "20260001",
            "20260100",
            "20260431",
            "2026031424",
            "202603141260",
            "20260314123060",
            "20260314996000",
        ] {
            assert!(
                matches!(vienna(value), Err(DtmError::Calendar(_))),
                "{value}: {:?}",
                vienna(value)
            );
        }
    }

    #[test]
    fn syntax_errors() {
        for value in [
            "",
            " 2026",
            "2026 ",
            "26",
            "20260",
            "2026031",
            "2026031412305",
            "202603141230050",
            "2026-03-14",
            "202603141230+0a00",
            "202603141230++0100",
            "202603141230+01:00",
            "2026+-0100",
            "20260314T1230",
            "２０２６",
            "2026ü",
            "20260314123005.",
            "20260314123005.12345",
            "202603141230.5",
            "20260314123005.1a",
            "20260314123005..1",
            "20260314123005.-1",
            "^2026",
        ] {
            assert!(
                matches!(vienna(value), Err(DtmError::Syntax(_))),
                "{value:?}: {:?}",
                vienna(value)
            );
        }
    }

    #[test]
    fn vienna_spring_forward_gap_is_an_error() {
        // 2026-03-29: clocks go from 02:00 CET to 03:00 CEST.
        assert_eq!(text("202603290159"), "2026-03-29T01:59:00+01:00");
        assert_eq!(vienna("202603290200"), Err(DtmError::NonexistentLocalTime));
        assert_eq!(vienna("2026032902"), Err(DtmError::NonexistentLocalTime));
        assert_eq!(
            vienna("20260329025959.9999"),
            Err(DtmError::NonexistentLocalTime)
        );
        assert_eq!(text("202603290300"), "2026-03-29T03:00:00+02:00");
        // An explicit offset says which instant was meant: no gap.
        assert_eq!(text("202603290230+0100"), "2026-03-29T02:30:00+01:00");
    }

    #[test]
    fn vienna_autumn_overlap_takes_summer_time() {
        // 2026-10-25: clocks go from 03:00 CEST back to 02:00 CET; 02:00-02:59 happens twice.
        assert_eq!(text("202610250159"), "2026-10-25T01:59:00+02:00");
        assert_eq!(text("202610250200"), "2026-10-25T02:00:00+02:00");
        assert_eq!(text("202610250259"), "2026-10-25T02:59:00+02:00");
        assert_eq!(text("202610250300"), "2026-10-25T03:00:00+01:00");
        assert_eq!(text("202610250230+0100"), "2026-10-25T02:30:00+01:00");
    }

    #[test]
    fn other_facility_zones() {
        let st_johns = parse_dtm("202601151200", chrono_tz::America::St_Johns).unwrap();
        assert_eq!(st_johns.text, "2026-01-15T12:00:00-03:30");
        let kathmandu = parse_dtm("202601151200", chrono_tz::Asia::Kathmandu).unwrap();
        assert_eq!(kathmandu.text, "2026-01-15T12:00:00+05:45");
        let utc_zone = parse_dtm("202607151200", chrono_tz::UTC).unwrap();
        assert_eq!(utc_zone.text, "2026-07-15T12:00:00+00:00");
        // Local mean time before standard time has no whole-minute offset.
        assert!(matches!(vienna("189001011200"), Err(DtmError::Offset(_))));
        assert_eq!(text("18900101"), "1890-01-01");
        assert_eq!(text("189001011200+0100"), "1890-01-01T12:00:00+01:00");
        // New York's gap is at a different date and hour than Vienna's.
        assert!(parse_dtm("202603080230", chrono_tz::America::New_York).is_err());
        assert!(parse_dtm("202603290230", chrono_tz::America::New_York).is_ok());
    }

    #[test]
    fn precision_is_ordered() {
        assert!(Precision::Year < Precision::Month);
        assert!(Precision::Minute < Precision::Second);
        assert!(Precision::Second < Precision::Fraction(1));
        assert!(Precision::Fraction(1) < Precision::Fraction(4));
    }

    #[test]
    fn errors_never_quote_the_value() {
        for value in [
            "19800230",
            "19800101+2460",
            "1980-01-01",
            "198001012400",
            "202603290230",
        ] {
            let message = vienna(value).unwrap_err().to_string();
            assert!(
                !message.contains("1980") && !message.contains("2026"),
                "{message}"
            );
        }
    }

    use crate::hl7v2::test_rng::next;

    #[test]
    fn property_never_panics_and_output_is_rfc3339() {
        const ALPHABET: &[u8] = b"0123456789012345678901234567890123456789.+-";
        let mut state = 0xD1B5_4A32_D192_ED03_u64;
        let mut accepted = 0;
        for _ in 0..50_000 {
            let len = (next(&mut state) % 24) as usize;
            let value: String = (0..len)
                .map(|_| char::from(ALPHABET[(next(&mut state) % ALPHABET.len() as u64) as usize]))
                .collect();
            let Ok(dt) = vienna(&value) else { continue };
            accepted += 1;
            if let Some(instant) = dt.instant {
                assert_eq!(
                    DateTime::parse_from_rfc3339(&dt.text),
                    Ok(instant),
                    "{value}"
                );
            } else {
                assert!(matches!(dt.text.len(), 4 | 7 | 10), "{value}");
            }
        }
        assert!(accepted > 100, "accepted {accepted}");
    }

    #[test]
    fn every_minute_of_a_dst_year_converts_consistently() {
        // A walk over 2026 in 7-minute steps: every local time either converts to an instant whose
        // Vienna wall-clock time is the input, or lies in the one spring gap.
        let mut local = NaiveDate::from_ymd_opt(2026, 1, 1)
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap();
        let end = NaiveDate::from_ymd_opt(2027, 1, 1)
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap();
        let mut gaps = 0;
        while local < end {
            match vienna(&local.format("%Y%m%d%H%M").to_string()) {
                Ok(dt) => {
                    let wall = dt
                        .instant
                        .unwrap()
                        .with_timezone(&DEFAULT_FACILITY_ZONE)
                        .naive_local();
                    assert_eq!(wall, local);
                }
                Err(DtmError::NonexistentLocalTime) => gaps += 1,
                Err(e) => panic!("{local}: {e}"),
            }
            local += chrono::Duration::minutes(7);
        }
        assert!(
            (8..=9).contains(&gaps),
            "60 minutes of gap in 7-minute steps: {gaps}"
        );
    }
}
