//! Original and enhanced acknowledgement mode (HL7 v2.5 chapter 2.9).
//!
//! With MSH-15 and MSH-16 both empty the sender uses original mode: one ACK, AA / AE / AR. With
//! either set, enhanced mode: an accept ACK (CA / CE / CR) under the MSH-15 condition and an
//! application ACK (AA / AE / AR) under the MSH-16 condition; an empty one of the two means AL.
//! fhirvault decides both at once (a message is accepted only once it is stored), so in enhanced
//! mode the application ACK follows the accept ACK on the same connection, as a second frame.

use super::ack::{AckCode, Echo, Hl7Error, build_ack};
use super::er7::Message;

/// When an acknowledgement is wanted (HL7 table 0155).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    Always,
    Never,
    OnError,
    OnSuccess,
}

impl When {
    fn parse(code: &str) -> When {
        match code {
            "NE" => When::Never,
            "ER" => When::OnError,
            "SU" => When::OnSuccess,
            _ => When::Always,
        }
    }

    fn wanted(self, success: bool) -> bool {
        match self {
            When::Always => true,
            When::Never => false,
            When::OnError => !success,
            When::OnSuccess => success,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckMode {
    Original,
    Enhanced { accept: When, application: When },
}

impl AckMode {
    pub fn of(message: &Message) -> AckMode {
        let Some(msh) = message.first("MSH") else {
            return AckMode::Original;
        };
        let (accept, application) = (msh.text(15), msh.text(16));
        if accept.is_empty() && application.is_empty() {
            AckMode::Original
        } else {
            AckMode::Enhanced {
                accept: When::parse(accept),
                application: When::parse(application),
            }
        }
    }
}

/// How the message ended, at both levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Stored.
    Accepted,
    /// Kept (in the dead-letter store) but not stored as FHIR resources: mapping failed.
    Failed,
    /// Not accepted at all (unsupported, unparseable, conflicting duplicate).
    Rejected,
}

/// The frames to answer with, in order (possibly none in enhanced mode).
pub fn answer_frames(
    mode: AckMode,
    echo: &Echo,
    verdict: Verdict,
    errors: &[Hl7Error],
) -> Vec<String> {
    let application = match verdict {
        Verdict::Accepted => AckCode::ApplicationAccept,
        Verdict::Failed => AckCode::ApplicationError,
        Verdict::Rejected => AckCode::ApplicationReject,
    };
    match mode {
        AckMode::Original => vec![build_ack(echo, application, errors)],
        AckMode::Enhanced {
            accept,
            application: application_when,
        } => {
            let mut frames = Vec::new();
            // A failed message is kept safely (dead letters): accepted at the commit level.
            let accepted = verdict != Verdict::Rejected;
            if accept.wanted(accepted) {
                let code = if accepted {
                    AckCode::CommitAccept
                } else {
                    AckCode::CommitReject
                };
                let errors = if accepted { &[][..] } else { errors };
                frames.push(build_ack(echo, code, errors));
            }
            if accepted && application_when.wanted(verdict == Verdict::Accepted) {
                frames.push(build_ack(echo, application, errors));
            }
            frames
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(msh15: &str, msh16: &str) -> Message {
        let text = format!("MSH|^~\\&|A|B|C|D|20260101000000||ORU^R01|1|P|2.5|||{msh15}|{msh16}\r");
        Message::parse(text.as_bytes()).unwrap()
    }

    fn codes(frames: &[String]) -> Vec<String> {
        frames
            .iter()
            .map(|f| {
                Message::parse(f.as_bytes())
                    .unwrap()
                    .first("MSA")
                    .unwrap()
                    .text(1)
                    .to_string()
            })
            .collect()
    }

    #[test]
    fn original_mode_answers_once() {
        let m = message("", "");
        assert_eq!(AckMode::of(&m), AckMode::Original);
        let echo = Echo::of(&m);
        assert_eq!(
            codes(&answer_frames(
                AckMode::of(&m),
                &echo,
                Verdict::Accepted,
                &[]
            )),
            ["AA"]
        );
        assert_eq!(
            codes(&answer_frames(AckMode::of(&m), &echo, Verdict::Failed, &[])),
            ["AE"]
        );
        assert_eq!(
            codes(&answer_frames(
                AckMode::of(&m),
                &echo,
                Verdict::Rejected,
                &[]
            )),
            ["AR"]
        );
    }

    #[test]
    fn enhanced_mode_honours_both_conditions() {
        let cases = [
            ("AL", "AL", Verdict::Accepted, vec!["CA", "AA"]),
            ("AL", "NE", Verdict::Accepted, vec!["CA"]),
            ("NE", "AL", Verdict::Accepted, vec!["AA"]),
            ("ER", "ER", Verdict::Accepted, vec![]),
            ("ER", "ER", Verdict::Failed, vec!["AE"]),
            ("ER", "ER", Verdict::Rejected, vec!["CR"]),
            ("SU", "SU", Verdict::Accepted, vec!["CA", "AA"]),
            ("SU", "SU", Verdict::Failed, vec!["CA"]),
            ("AL", "", Verdict::Failed, vec!["CA", "AE"]),
            ("NE", "NE", Verdict::Rejected, vec![]),
        ];
        for (accept, application, verdict, expected) in cases {
            let m = message(accept, application);
            let frames = answer_frames(AckMode::of(&m), &Echo::of(&m), verdict, &[]);
            assert_eq!(
                codes(&frames),
                expected,
                "{accept}/{application} {verdict:?}"
            );
        }
    }
}
