//! HL7 v2 ingestion over HTTP (`POST /hl7v2` at the server's origin, ER7 body, ACK back): an
//! ORU^R01 becomes Observations that standard FHIR searches find; resends are answered again and
//! stored once; what cannot be taken is answered AR/AE with an ERR segment.
//!
//! These cases are specific to servers that ingest HL7 v2 (fhirvault does); against a server
//! without the endpoint (404) they are skipped.

use super::{Case, Ctx};
use crate::check::{self, Outcome, ensure, skip};
use crate::client::Response;

pub fn cases() -> Vec<Case> {
    vec![
        Case::new(
            "hl7v2-001",
            "ORU^R01 → ACK AA echoing MSH-10; its Observation found by subject identifier",
            oru_stored,
        ),
        Case::new("hl7v2-002", "the same message again → the same ACK, stored once", resend_same_answer),
        Case::new("hl7v2-003", "same MSH-10 with other content → AR with ERR 205", conflicting_resend),
        Case::new("hl7v2-004", "ADT^A01 → AR with ERR 200 (unsupported message type)", unsupported_type),
        Case::new("hl7v2-005", "a body that is not HL7 → AR with ERR 100", not_hl7),
        Case::new("hl7v2-006", "a JSON body → 415 OperationOutcome", wrong_media_type),
        Case::new("hl7v2-007", "the message's Provenance targets its Observation", provenance_traces_message),
    ]
}

const PATH: &str = "/hl7v2";
const ER7: &str = "x-application/hl7-v2+er7";
const IDENTIFIER_SYSTEM: &str = "urn:oid:1.2.40.0.10.1.4.3.1";

/// An ORU^R01 with one heart-rate OBX for patient `patient`, control id `control`.
fn oru(control: &str, patient: &str, value: &str) -> String {
    [
        format!("MSH|^~\\&|CONFORMANCE|SUITE|FHIRVAULT|TEST|20260314123000+0100||ORU^R01^ORU_R01|{control}|P|2.6"),
        format!("PID|1||{patient}^^^&1.2.40.0.10.1.4.3.1&ISO^SS||Conformance^Case||19800101|F"),
        "OBR|1||FIL-1|18754-2^Holter study^LN|||20260313080000+0100|20260314080000+0100|||||||||||||||||F".to_string(),
        format!("OBX|1|NM|8867-4^Heart rate^LN|1|{value}|/min^/min^UCUM|||||F|||20260314080000+0100"),
    ]
    .join("\r")
        + "\r"
}

/// Segments and fields of an ACK (ER7 with `|`), enough to read MSA and ERR.
struct Ack {
    segments: Vec<Vec<String>>,
    text: String,
}

impl Ack {
    fn of(response: &Response) -> Result<Ack, String> {
        check::status(response, &[200])?;
        let text = response.text.clone();
        let segments: Vec<Vec<String>> = text
            .split(['\r', '\n'])
            .filter(|s| !s.is_empty())
            .map(|s| s.split('|').map(str::to_string).collect())
            .collect();
        ensure(segments.first().is_some_and(|s| s[0] == "MSH"), || {
            format!("{}: the answer is not an HL7 message", response.label)
        })?;
        Ok(Ack { segments, text })
    }

    fn field(&self, segment: &str, n: usize) -> &str {
        self.segments.iter().find(|s| s[0] == segment).and_then(|s| s.get(n)).map_or("", String::as_str)
    }

    /// ERR-3.1 of every ERR segment.
    fn error_codes(&self) -> Vec<&str> {
        self.segments
            .iter()
            .filter(|s| s[0] == "ERR")
            .map(|s| s.get(3).map_or("", |f| f.split('^').next().unwrap_or("")))
            .collect()
    }

    fn expect(&self, code: &str, error: Option<&str>, label: &str) -> Outcome {
        ensure(self.field("MSA", 1) == code, || {
            format!("{label}: expected MSA-1 {code}, got {:?}", self.field("MSA", 1))
        })?;
        if let Some(error) = error {
            ensure(self.error_codes().contains(&error), || {
                format!("{label}: expected an ERR with code {error}, got {:?}", self.error_codes())
            })?;
        }
        Ok(())
    }
}

/// POST a message; `None` when the server has no HL7 v2 endpoint.
fn send(ctx: &Ctx, body: &str) -> Result<Option<Response>, String> {
    let response = ctx.post(PATH).body(ER7, body.as_bytes().to_vec()).send()?;
    Ok(if response.status == 404 { None } else { Some(response) })
}

fn observations_of(ctx: &Ctx, patient: &str) -> Result<Vec<serde_json::Value>, String> {
    let identifier = format!("{IDENTIFIER_SYSTEM}|{patient}");
    let bundle = ctx.search("Observation", &[("subject:Patient.identifier", &identifier)])?;
    Ok(bundle["entry"].as_array().cloned().unwrap_or_default().into_iter().map(|e| e["resource"].clone()).collect())
}

fn oru_stored(ctx: &Ctx) -> Outcome {
    let (control, patient) = (ctx.unique(), ctx.unique());
    let Some(response) = send(ctx, &oru(&control, &patient, "72"))? else { return skip("no POST /hl7v2 endpoint") };
    let ack = Ack::of(&response)?;
    ack.expect("AA", None, &response.label)?;
    ensure(ack.field("MSA", 2) == control, || {
        format!("MSA-2 should echo MSH-10 {control}, got {:?}", ack.field("MSA", 2))
    })?;
    ensure(ack.field("MSH", 8).starts_with("ACK"), || {
        format!("MSH-9 of the answer should be ACK, got {:?}", ack.field("MSH", 8))
    })?;
    let found = observations_of(ctx, &patient)?;
    ensure(found.len() == 1, || format!("expected 1 Observation for the message's patient, found {}", found.len()))?;
    let value = &found[0]["valueQuantity"];
    ensure(value["value"] == 72 && value["code"] == "/min", || format!("expected 72 /min, got {value}"))
}

fn resend_same_answer(ctx: &Ctx) -> Outcome {
    let (control, patient) = (ctx.unique(), ctx.unique());
    let message = oru(&control, &patient, "64");
    let Some(first) = send(ctx, &message)? else { return skip("no POST /hl7v2 endpoint") };
    let first = Ack::of(&first)?;
    let Some(second) = send(ctx, &message)? else { return skip("no POST /hl7v2 endpoint") };
    let second = Ack::of(&second)?;
    ensure(first.text == second.text, || "a resent message should get the same ACK again".to_string())?;
    let found = observations_of(ctx, &patient)?;
    ensure(found.len() == 1, || format!("a resent message must be stored once, found {} Observations", found.len()))
}

fn conflicting_resend(ctx: &Ctx) -> Outcome {
    let (control, patient) = (ctx.unique(), ctx.unique());
    let Some(first) = send(ctx, &oru(&control, &patient, "64"))? else { return skip("no POST /hl7v2 endpoint") };
    Ack::of(&first)?.expect("AA", None, &first.label)?;
    let Some(second) = send(ctx, &oru(&control, &patient, "99"))? else { return skip("no POST /hl7v2 endpoint") };
    Ack::of(&second)?.expect("AR", Some("205"), &second.label)
}

fn unsupported_type(ctx: &Ctx) -> Outcome {
    let message = format!(
        "MSH|^~\\&|CONFORMANCE|SUITE|FHIRVAULT|TEST|20260314123000+0100||ADT^A01^ADT_A01|{}|P|2.5\rPID|1||{}^^^&1.2.40.0.10.1.4.3.1&ISO\r",
        ctx.unique(),
        ctx.unique()
    );
    let Some(response) = send(ctx, &message)? else { return skip("no POST /hl7v2 endpoint") };
    Ack::of(&response)?.expect("AR", Some("200"), &response.label)
}

fn not_hl7(ctx: &Ctx) -> Outcome {
    let Some(response) = send(ctx, "hello, this is not a message")? else { return skip("no POST /hl7v2 endpoint") };
    Ack::of(&response)?.expect("AR", Some("100"), &response.label)
}

fn wrong_media_type(ctx: &Ctx) -> Outcome {
    let response = ctx.post(PATH).body("application/json", b"{}".to_vec()).send()?;
    if response.status == 404 {
        return skip("no POST /hl7v2 endpoint");
    }
    check::status(&response, &[415])?;
    check::operation_outcome(&response)
}

fn provenance_traces_message(ctx: &Ctx) -> Outcome {
    let (control, patient) = (ctx.unique(), ctx.unique());
    let Some(response) = send(ctx, &oru(&control, &patient, "70"))? else { return skip("no POST /hl7v2 endpoint") };
    Ack::of(&response)?.expect("AA", None, &response.label)?;
    let found = observations_of(ctx, &patient)?;
    let id = found.first().and_then(|o| o["id"].as_str()).ok_or("the message's Observation was not found")?;
    let bundle = ctx.search("Provenance", &[("target", &format!("Observation/{id}"))])?;
    let entries = bundle["entry"].as_array().cloned().unwrap_or_default();
    ensure(entries.len() == 1, || format!("expected one Provenance for the Observation, found {}", entries.len()))?;
    let text = entries[0]["resource"].to_string();
    ensure(text.contains(&control), || "the Provenance should name the message control id".to_string())
}
