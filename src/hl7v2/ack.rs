//! Building acknowledgements (HL7 v2.5 chapter 2, "Acknowledgment messages").
//!
//! # Format
//!
//! ```text
//! MSH|^~\&|<MSH-5>|<MSH-6>|<MSH-3>|<MSH-4>|<now>||ACK^R01^ACK|<own id>|<MSH-11>|<MSH-12>
//! MSA|AA|<incoming MSH-10>
//! ERR||PID^1^3^1^4|103^Table value not found^HL70357|E||||<what to fix>
//! ```
//!
//! The receiver and sender of the incoming message swap places; processing id and version are
//! echoed; the event of MSH-9 is echoed (`ACK^R01^ACK`). ERR uses the v2.5 layout (ERR-2 location,
//! ERR-3 code from table 0357, ERR-4 severity, ERR-8 user message), whatever version came in:
//! receivers of older versions read the fields they know and ignore the rest. ERR-8 never carries
//! message content — only positions and what was expected — because the content may be PHI.

use super::er7::{Delimiters, Message};
use crate::fhir::instant::now_micros;

/// MSA-1: original mode (AA/AE/AR) and enhanced-mode accept codes (CA/CE/CR).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckCode {
    ApplicationAccept,
    ApplicationError,
    ApplicationReject,
    CommitAccept,
    CommitError,
    CommitReject,
}

impl AckCode {
    pub fn as_str(self) -> &'static str {
        match self {
            AckCode::ApplicationAccept => "AA",
            AckCode::ApplicationError => "AE",
            AckCode::ApplicationReject => "AR",
            AckCode::CommitAccept => "CA",
            AckCode::CommitError => "CE",
            AckCode::CommitReject => "CR",
        }
    }
}

/// One problem found in a message, reported in an ERR segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hl7Error {
    /// HL7 table 0357 (100 segment sequence, 101 required field missing, 102 data type error,
    /// 103 table value not found, 200 unsupported message type, 204 unknown key identifier,
    /// 205 duplicate key identifier, 207 application internal error).
    pub code: u16,
    /// ERR-2 as an ERL: `SEG^sequence^field^repetition^component^subcomponent`, trailing parts
    /// left out when not known (e.g. `OBX^3^11`). Empty when the whole message is concerned.
    pub location: String,
    /// ERR-8: what was wrong and what to do, without any of the message's content.
    pub message: String,
}

impl Hl7Error {
    pub fn new(code: u16, location: impl Into<String>, message: impl Into<String>) -> Self {
        Hl7Error {
            code,
            location: location.into(),
            message: message.into(),
        }
    }

    /// The text of an HL7 table 0357 code.
    pub fn code_text(&self) -> &'static str {
        match self.code {
            0 => "Message accepted",
            100 => "Segment sequence error",
            101 => "Required field missing",
            102 => "Data type error",
            103 => "Table value not found",
            104 => "Value too long",
            200 => "Unsupported message type",
            201 => "Unsupported event code",
            202 => "Unsupported processing id",
            203 => "Unsupported version id",
            204 => "Unknown key identifier",
            205 => "Duplicate key identifier",
            206 => "Application record locked",
            _ => "Application internal error",
        }
    }
}

/// What the ACK echoes of the message it answers. Built from a parsed MSH, or left empty when the
/// message could not be parsed far enough to have one.
#[derive(Debug, Clone, Default)]
pub struct Echo {
    pub delimiters: Option<Delimiters>,
    /// MSH-3 and MSH-4 of the incoming message, encoded (they become MSH-5 and MSH-6).
    pub sending_application: String,
    pub sending_facility: String,
    /// MSH-5 and MSH-6 of the incoming message, encoded (they become MSH-3 and MSH-4).
    pub receiving_application: String,
    pub receiving_facility: String,
    /// MSH-9.2, the trigger event; `R01` unless the message said otherwise.
    pub event: String,
    pub control_id: String,
    pub processing_id: String,
    pub version: String,
}

impl Echo {
    pub fn of(message: &Message) -> Echo {
        let delimiters = *message.delimiters();
        let Some(msh) = message.first("MSH") else {
            return Echo {
                delimiters: Some(delimiters),
                ..Echo::default()
            };
        };
        let encoded = |field: usize| encode_field(msh, field, &delimiters);
        Echo {
            sending_application: encoded(3),
            sending_facility: encoded(4),
            receiving_application: encoded(5),
            receiving_facility: encoded(6),
            event: msh.get(9, 0, 2, 1).to_string(),
            control_id: msh.text(10).to_string(),
            processing_id: encoded(11),
            version: msh.get(12, 0, 1, 1).to_string(),
            delimiters: Some(delimiters),
        }
    }
}

/// The components of the first repetition of a field, escaped again for `delimiters` (an HD or
/// PT field keeps its parts; sub-components are not used in these fields).
fn encode_field(segment: &super::er7::Segment, field: usize, delimiters: &Delimiters) -> String {
    let Some(first) = segment.repetitions(field).first() else {
        return String::new();
    };
    let parts: Vec<String> = (1..=first.components().len())
        .map(|c| escape(first.component(c), delimiters))
        .collect();
    let joined = parts.join(&delimiters.component.to_string());
    joined.trim_end_matches(delimiters.component).to_string()
}

/// `text` with the delimiters escaped (an ACK without an escape character cannot carry them; they
/// are then replaced by spaces).
fn escape(text: &str, delimiters: &Delimiters) -> String {
    super::escape::encode(text, delimiters).unwrap_or_else(|| {
        let d = delimiters;
        text.chars()
            .map(|c| {
                if [d.field, d.component, d.repetition, d.subcomponent].contains(&c) {
                    ' '
                } else {
                    c
                }
            })
            .collect()
    })
}

/// Build an ACK answering `echo` with `code` and the problems in `errors`.
pub fn build_ack(echo: &Echo, code: AckCode, errors: &[Hl7Error]) -> String {
    let d = echo.delimiters.unwrap_or_default();
    let (f, c) = (d.field, d.component);
    let event = if echo.event.is_empty() {
        "R01"
    } else {
        echo.event.as_str()
    };
    let version = if echo.version.is_empty() {
        "2.5.1"
    } else {
        echo.version.as_str()
    };
    let processing = if echo.processing_id.is_empty() {
        "P"
    } else {
        echo.processing_id.as_str()
    };
    let mut out = String::with_capacity(256);
    out.push_str(&format!(
        "MSH{f}{}{f}{}{f}{}{f}{}{f}{}{f}{}{f}{f}ACK{c}{}{c}ACK{f}{}{f}{}{f}{}",
        d.encoding_characters(),
        echo.receiving_application,
        echo.receiving_facility,
        echo.sending_application,
        echo.sending_facility,
        hl7_timestamp(now_micros()),
        escape(event, &d),
        own_control_id(),
        processing,
        escape(version, &d),
    ));
    out.push('\r');
    out.push_str(&format!(
        "MSA{f}{}{f}{}",
        code.as_str(),
        escape(&echo.control_id, &d)
    ));
    for error in errors {
        out.push('\r');
        let severity = "E";
        out.push_str(&format!(
            "ERR{f}{f}{}{f}{}{c}{}{c}HL70357{f}{severity}{f}{f}{f}{f}{}",
            error.location,
            error.code,
            error.code_text(),
            escape(&error.message, &d),
        ));
    }
    out.push('\r');
    out
}

/// A control id of our own for MSH-10: 20 characters (the v2.5 length), time-ordered and unique.
fn own_control_id() -> String {
    uuid::Uuid::now_v7().simple().to_string()[..20].to_uppercase()
}

/// An HL7 DTM with seconds and an explicit UTC offset.
pub fn hl7_timestamp(micros: i64) -> String {
    let time = chrono::DateTime::from_timestamp_micros(micros).unwrap_or_default();
    time.format("%Y%m%d%H%M%S%.3f+0000").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MESSAGE: &str = "MSH|^~\\&|HOLTER^1.2.3^ISO|WARD 3|FHIRVAULT|HOSP|20260314123000+0100||ORU^R01^ORU_R01|MSG00042|P|2.6\rPID|1||123^^^SVNR\r";

    fn segments(ack: &str) -> Vec<Vec<String>> {
        ack.split('\r')
            .filter(|s| !s.is_empty())
            .map(|s| s.split('|').map(str::to_string).collect())
            .collect()
    }

    #[test]
    fn swaps_sender_and_receiver_and_echoes_the_control_id() {
        let message = Message::parse(MESSAGE.as_bytes()).unwrap();
        let ack = build_ack(&Echo::of(&message), AckCode::ApplicationAccept, &[]);
        let segs = segments(&ack);
        assert_eq!(segs.len(), 2);
        let msh = &segs[0];
        assert_eq!(msh[1], "^~\\&");
        assert_eq!(msh[2], "FHIRVAULT");
        assert_eq!(msh[3], "HOSP");
        assert_eq!(msh[4], "HOLTER^1.2.3^ISO");
        assert_eq!(msh[5], "WARD 3");
        assert_eq!(msh[8], "ACK^R01^ACK");
        assert_eq!(msh[9].len(), 20);
        assert_ne!(msh[9], "MSG00042");
        assert_eq!(msh[10], "P");
        assert_eq!(msh[11], "2.6");
        assert_eq!(segs[1], ["MSA", "AA", "MSG00042"]);
    }

    #[test]
    fn errors_carry_location_code_severity_and_an_escaped_message() {
        let message = Message::parse(MESSAGE.as_bytes()).unwrap();
        let error = Hl7Error::new(
            103,
            "PID^1^3^1^4",
            "assigning authority not configured | see README",
        );
        let ack = build_ack(&Echo::of(&message), AckCode::ApplicationError, &[error]);
        let err = ack.split('\r').find(|s| s.starts_with("ERR")).unwrap();
        assert_eq!(
            err,
            "ERR||PID^1^3^1^4|103^Table value not found^HL70357|E||||assigning authority not configured \\F\\ see README"
        );
    }

    #[test]
    fn an_unparsed_message_still_gets_a_well_formed_ack() {
        let ack = build_ack(
            &Echo::default(),
            AckCode::ApplicationReject,
            &[Hl7Error::new(100, "", "no MSH segment")],
        );
        let parsed = Message::parse(ack.as_bytes()).unwrap();
        assert_eq!(parsed.first("MSA").unwrap().text(1), "AR");
        assert_eq!(parsed.first("ERR").unwrap().get(3, 0, 1, 1), "100");
    }

    #[test]
    fn timestamps_are_utc_with_an_offset() {
        assert_eq!(
            hl7_timestamp(1_773_491_400_123_000),
            "20260314123000.123+0000"
        );
    }
}
