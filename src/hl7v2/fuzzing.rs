//! The ingestion pipeline without a database, with the invariants a fuzzer checks on every input.
//!
//! [`parse_map_ack`] runs what [`super::ingest::Ingestor::ingest`] runs up to the store: parse,
//! check the header, map, plan the resources (patients and devices count as new, device-sourced
//! groups get a placeholder patient instead of a database lookup), answer with ACKs. It also feeds the bytes to the MLLP
//! [`FrameDecoder`] and to [`split_batch`]. Then it asserts, panicking when one fails:
//!
//! - every ACK frame parses again, starts with MSH (`ACK` in MSH-9) then MSA, has an MSA-1 that
//!   fits the verdict and an MSA-2 equal to the incoming MSH-10 (decoded; empty when the input
//!   did not parse), swaps sender and receiver, and carries ERR segments only when it reports
//!   a problem;
//! - a refused message is refused with at least one reason;
//! - `Message::parse(message.to_er7_bytes())` gives back an equal message;
//! - the planned resources survive a JSON round trip and end with the Provenance;
//! - no ERR-2 / ERR-8 text copies a run of 6 or more bytes out of the input's PID lines (see
//!   [`check_no_pid_text_in_errors`] for how false positives are ruled out);
//! - the MLLP decoder gives the same frames and errors whether the bytes arrive at once or in
//!   small chunks, and never a payload holding a block byte;
//! - every message [`split_batch`] finds starts with MSH.
//!
//! fuzz/ (cargo-fuzz) drives this; `fuzz_corpus_never_panics` below replays the corpus the fuzzer
//! found (tests/fixtures/hl7v2/fuzz/) and the hand-written fixtures under `cargo test`.

use std::sync::OnceLock;

use serde_json::Value;

use super::ack::{Echo, Hl7Error};
use super::codes::CodeTable;
use super::er7::{Message, split_batch};
use super::ingest::check_header;
use super::map::{MapContext, PatientSource, map_message};
use super::mllp::frame::{END_BLOCK, FrameDecoder, FrameError, START_BLOCK};
use super::mode::{AckMode, Verdict, answer_frames};
use super::plan::{GroupMatches, Match, Planned, Resolved, Sender, criteria, plan};
use crate::config::Hl7Config;

/// Stands in for the patient a device is assigned to (a database lookup in ingestion).
const PLACEHOLDER_PATIENT: &str = "Patient/fuzz-placeholder";

/// The frame limit for the MLLP check: small, so that inputs of a few KiB reach `TooLarge`.
const FRAME_LIMIT: usize = 512;

/// Input runs shorter than this are not checked for in ERR texts (they occur in them naturally).
const MIN_LEAK_LEN: usize = 6;

/// Most PID runs checked per input, to keep one input's cost bounded.
const MAX_NEEDLES: usize = 32;

/// Runs `bytes` through parse → check → map → plan → ACK, the MLLP decoder and the batch
/// splitter, and panics if any invariant in the module docs does not hold.
pub fn parse_map_ack(bytes: &[u8]) {
    check_framing(bytes);
    check_batch_split(bytes);
    let outcome = run(bytes);
    check_acks(&outcome);
    check_no_pid_text_in_errors(bytes, &outcome);
}

/// What ingestion would answer.
struct Outcome {
    message: Option<Message>,
    verdict: Verdict,
    errors: Vec<Hl7Error>,
    frames: Vec<String>,
}

fn run(bytes: &[u8]) -> Outcome {
    let message = match Message::parse(bytes) {
        Ok(message) => message,
        Err(error) => {
            // As `Ingestor::ingest` answers an unparseable message.
            let errors = vec![Hl7Error::new(error.code, error.location, error.message)];
            let frames = answer_frames(
                AckMode::Original,
                &Echo::default(),
                Verdict::Rejected,
                &errors,
            );
            return Outcome {
                message: None,
                verdict: Verdict::Rejected,
                errors,
                frames,
            };
        }
    };
    let reparsed = Message::parse(&message.to_er7_bytes());
    assert_eq!(
        reparsed.as_ref(),
        Ok(&message),
        "to_er7_bytes does not parse back to the same message"
    );

    let echo = Echo::of(&message);
    let mode = AckMode::of(&message);
    let (verdict, errors) = decide(&message, &echo);
    assert!(
        verdict == Verdict::Accepted || !errors.is_empty(),
        "{verdict:?} without a reason"
    );
    let frames = answer_frames(mode, &echo, verdict, &errors);
    Outcome {
        message: Some(message),
        verdict,
        errors,
        frames,
    }
}

/// The header check, the mapping and the plan, as `Ingestor::ingest` runs them.
fn decide(message: &Message, echo: &Echo) -> (Verdict, Vec<Hl7Error>) {
    if let Err(error) = check_header(message) {
        return (Verdict::Rejected, vec![error]);
    }
    let mapped = match map_message(message, &context()) {
        Ok(mapped) => mapped,
        Err(errors) => return (Verdict::Failed, errors),
    };
    // Every patient and device counts as new; device-sourced groups get a placeholder patient.
    let matches: Vec<GroupMatches> = mapped
        .groups
        .iter()
        .zip(criteria(&mapped))
        .enumerate()
        .map(|(g, (group, (patient, devices)))| GroupMatches {
            patient: patient.map(|criteria| Match {
                resource_type: "Patient",
                criteria,
                resolved: Resolved::New(format!("p{g}")),
            }),
            patient_through_device: matches!(group.patient, PatientSource::Device)
                .then(|| PLACEHOLDER_PATIENT.to_string()),
            devices: devices
                .into_iter()
                .enumerate()
                .map(|(d, criteria)| Match {
                    resource_type: "Device",
                    criteria,
                    resolved: Resolved::New(format!("d{g}-{d}")),
                })
                .collect(),
        })
        .collect();
    let sender = format!("{}|{}", echo.sending_application, echo.sending_facility);
    let planned = plan(
        &mapped,
        &matches,
        &Sender {
            sender: &sender,
            control_id: &echo.control_id,
            owner: None,
        },
    );
    check_planned(&planned);
    (Verdict::Accepted, Vec::new())
}

/// The shared code table and the default HL7 settings, loaded once per process.
fn context() -> MapContext<'static> {
    static CONFIG: OnceLock<Hl7Config> = OnceLock::new();
    let codes = CodeTable::shared().expect("the compiled-in code tables load");
    MapContext {
        codes,
        config: CONFIG.get_or_init(Hl7Config::default),
    }
}

fn check_planned(planned: &[Planned]) {
    for resource in planned {
        let text = serde_json::to_string(&resource.body).expect("resources serialise");
        let back: Value = serde_json::from_str(&text).expect("serialised resources are JSON");
        assert_eq!(
            back, resource.body,
            "a resource changes in a JSON round trip"
        );
        assert_eq!(
            resource.body["resourceType"], resource.resource_type,
            "resourceType of a planned resource"
        );
    }
    let last = planned.last().expect("at least the Provenance");
    assert_eq!(
        last.resource_type, "Provenance",
        "the last resource is the Provenance"
    );
}

fn check_acks(outcome: &Outcome) {
    let incoming_msh = outcome.message.as_ref().and_then(|m| m.first("MSH"));
    let control_id = incoming_msh.map_or("", |msh| msh.text(10));
    let allowed: &[&str] = match outcome.verdict {
        Verdict::Accepted => &["AA", "CA"],
        Verdict::Failed => &["AE", "CA"],
        Verdict::Rejected => &["AR", "CR"],
    };
    for frame in &outcome.frames {
        let ack = Message::parse(frame.as_bytes())
            .unwrap_or_else(|e| panic!("an ACK does not parse: {e}"));
        let names: Vec<&str> = ack.segments().iter().map(|s| s.name()).collect();
        assert_eq!(
            names.get(..2),
            Some(&["MSH", "MSA"][..]),
            "an ACK starts with MSH and MSA"
        );
        let msh = ack.first("MSH").expect("checked above");
        let msa = ack.first("MSA").expect("checked above");
        assert_eq!(msh.get(9, 0, 1, 1), "ACK", "ACK MSH-9");
        let code = msa.text(1);
        assert!(
            allowed.contains(&code),
            "MSA-1 {code} for {:?}",
            outcome.verdict
        );
        assert_eq!(msa.text(2), control_id, "MSA-2 is not the incoming MSH-10");
        let reports_errors = code != "AA" && code != "CA";
        assert_eq!(
            ack.all("ERR").count(),
            if reports_errors {
                outcome.errors.len()
            } else {
                0
            },
            "ERR segments of {code}"
        );
        if let Some(incoming) = incoming_msh {
            for (ours, theirs) in [(3, 5), (4, 6), (5, 3), (6, 4)] {
                let width = incoming
                    .repetitions(theirs)
                    .first()
                    .map_or(0, |r| r.components().len());
                for c in 1..=width.max(
                    msh.repetitions(ours)
                        .first()
                        .map_or(0, |r| r.components().len()),
                ) {
                    assert_eq!(
                        msh.get(ours, 0, c, 1),
                        incoming.get(theirs, 0, c, 1),
                        "ACK MSH-{ours}.{c} is not MSH-{theirs}.{c}"
                    );
                }
            }
        }
    }
}

/// No ERR text (location or message) may carry input from a PID line: an error message names
/// positions and what was expected, never content (ack.rs).
///
/// Needles are the literal runs of at least [`MIN_LEAK_LEN`] bytes between delimiters on lines
/// starting with `PID`; a hit means the run occurs in an ERR text. A hit alone could be a
/// coincidence (a family name `message` occurs in many of our texts), so it is confirmed by a
/// second run over the input with every occurrence of the run replaced by a shifted copy (each
/// ASCII letter and digit rotated by one, `Gruber` → `Hsvcfs`): only when that copy then shows up
/// in the ERR texts in its place did the text come from the input. Inputs whose needle has no
/// letter or digit to shift are not checked. The check can miss a leak (when the replacement
/// changes which errors are raised) but never reports one that is not there.
fn check_no_pid_text_in_errors(bytes: &[u8], outcome: &Outcome) {
    let texts = error_texts(&outcome.errors);
    if texts.is_empty() {
        return;
    }
    for needle in pid_runs(bytes, outcome.message.as_ref()) {
        if !texts.iter().any(|t| contains(t.as_bytes(), &needle)) {
            continue;
        }
        let shifted = shift(&needle);
        let replaced = replace_all(bytes, &needle, &shifted);
        let again = error_texts(&run(&replaced).errors);
        assert!(
            !again.iter().any(|t| contains(t.as_bytes(), &shifted)),
            "an ERR text copies {} bytes of a PID line: {:?}",
            needle.len(),
            String::from_utf8_lossy(&needle),
        );
    }
}

fn error_texts(errors: &[Hl7Error]) -> Vec<String> {
    errors
        .iter()
        .map(|e| format!("{}\n{}", e.location, e.message))
        .collect()
}

/// The runs of at least [`MIN_LEAK_LEN`] bytes between delimiters on the input's PID lines, with
/// a letter or digit in them; split at `|^~\&` and at the message's own delimiters when it parsed.
fn pid_runs(bytes: &[u8], message: Option<&Message>) -> Vec<Vec<u8>> {
    let mut delimiters = b"|^~\\&".to_vec();
    if let Some(d) = message.map(Message::delimiters) {
        let own = [
            Some(d.field),
            Some(d.component),
            Some(d.repetition),
            d.escape,
            Some(d.subcomponent),
            d.truncation,
        ];
        delimiters.extend(
            own.into_iter()
                .flatten()
                .filter_map(|c| u8::try_from(c).ok()),
        );
    }
    let mut runs: Vec<Vec<u8>> = Vec::new();
    for line in bytes
        .split(|&b| b == b'\r' || b == b'\n')
        .filter(|l| l.starts_with(b"PID"))
    {
        for run in line[3..].split(|b| delimiters.contains(b)) {
            let useful = run.len() >= MIN_LEAK_LEN && run.iter().any(u8::is_ascii_alphanumeric);
            if useful && !runs.iter().any(|r| r == run) {
                runs.push(run.to_vec());
                if runs.len() == MAX_NEEDLES {
                    return runs;
                }
            }
        }
    }
    runs
}

/// Each ASCII letter and digit rotated by one within its class; other bytes unchanged.
fn shift(run: &[u8]) -> Vec<u8> {
    run.iter()
        .map(|&b| match b {
            b'z' => b'a',
            b'Z' => b'A',
            b'9' => b'0',
            b if b.is_ascii_alphanumeric() => b + 1,
            b => b,
        })
        .collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

fn replace_all(bytes: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

/// What the MLLP decoder makes of a byte stream: frames, errors with their partial payloads, and
/// the count of bytes dropped outside frames.
type Decoded = (Vec<Result<Vec<u8>, (FrameError, Vec<u8>)>>, usize);

fn decode_chunks<'a>(chunks: impl IntoIterator<Item = &'a [u8]>) -> Decoded {
    let mut decoder = FrameDecoder::new(FRAME_LIMIT);
    let (mut out, mut discarded) = (Vec::new(), 0);
    for chunk in chunks {
        decoder.push(chunk);
        while let Some(item) = decoder.next_frame() {
            out.push(item.map_err(|e| (e, decoder.take_partial())));
            assert!(
                decoder.buffered() <= FRAME_LIMIT + chunk.len(),
                "the MLLP decoder holds too much"
            );
        }
        discarded += decoder.discarded();
    }
    (out, discarded)
}

/// The same bytes at once and in chunks of 1 to 16 bytes (sizes taken from the bytes themselves)
/// decode to the same frames.
fn check_framing(bytes: &[u8]) {
    let whole = decode_chunks([bytes]);
    let mut chunks = Vec::new();
    let mut rest = bytes;
    for size in bytes.iter().cycle().map(|b| usize::from(b % 16) + 1) {
        if rest.is_empty() {
            break;
        }
        let (chunk, tail) = rest.split_at(size.min(rest.len()));
        chunks.push(chunk);
        rest = tail;
    }
    assert_eq!(
        decode_chunks(chunks),
        whole,
        "the MLLP decoder depends on how the bytes were chunked"
    );
    for payload in whole.0.iter().flatten() {
        assert!(
            payload.len() <= FRAME_LIMIT
                && !payload.iter().any(|&b| b == START_BLOCK || b == END_BLOCK)
        );
    }
}

fn check_batch_split(bytes: &[u8]) {
    if let Ok(messages) = split_batch(bytes) {
        for message in &messages {
            assert!(
                message.starts_with(b"MSH"),
                "split_batch gave a message that does not start with MSH"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture_files(dir: &str) -> Vec<std::path::PathBuf> {
        let dir = format!("{}/tests/fixtures/hl7v2/{dir}", env!("CARGO_MANIFEST_DIR"));
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{dir}: {e}"))
            .map(|entry| entry.expect("directory entry").path())
            .filter(|path| path.is_file())
            .collect();
        files.sort();
        files
    }

    /// Replays the corpus the fuzzer kept (crashes it found included) and the hand-written
    /// fixtures; any panic names the file.
    #[test]
    fn fuzz_corpus_never_panics() {
        let fixtures: Vec<_> = fixture_files("")
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "hl7"))
            .collect();
        let corpus = fixture_files("fuzz");
        assert!(
            fixtures.len() >= 9 && corpus.len() >= 20,
            "fixtures or the fuzz corpus went missing"
        );
        for path in fixtures.iter().chain(&corpus) {
            let bytes = std::fs::read(path).expect("readable fixture");
            if std::panic::catch_unwind(|| parse_map_ack(&bytes)).is_err() {
                panic!("parse_map_ack panicked on {}", path.display());
            }
        }
    }

    #[test]
    fn a_fixture_is_accepted_and_a_broken_one_rejected() {
        let holter = std::fs::read(format!(
            "{}/tests/fixtures/hl7v2/holter-pcd01.hl7",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        let outcome = run(&holter);
        assert_eq!(outcome.verdict, Verdict::Accepted);
        assert_eq!(run(b"PID|1").verdict, Verdict::Rejected);
        assert_eq!(
            run(b"MSH|^~\\&|A|B|C|D|20260101||ADT^A01|1|P|2.5\r").verdict,
            Verdict::Rejected
        );
    }

    #[test]
    fn a_pid_run_in_an_error_text_is_a_leak_only_when_it_follows_the_input() {
        // `message` occurs in the ERR text naturally: the shifted copy does not, so no leak.
        let outcome = Outcome {
            message: None,
            verdict: Verdict::Rejected,
            errors: vec![Hl7Error::new(
                100,
                "",
                "the message does not start with an MSH segment",
            )],
            frames: Vec::new(),
        };
        check_no_pid_text_in_errors(b"PID|1||x||message\r", &outcome);
        assert_eq!(shift(b"Gruber-9z"), b"Hsvcfs-0a");
        assert_eq!(replace_all(b"abcabc", b"bc", b"xyz"), b"axyzaxyz");
        assert_eq!(
            pid_runs(b"MSH|x\rPID|1||1234010180^^^SVNR||Gruber^Anna\r", None),
            [b"1234010180".to_vec(), b"Gruber".to_vec()]
        );
    }
}
