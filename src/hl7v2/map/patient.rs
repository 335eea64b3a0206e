//! PID → Patient (v2-to-FHIR "PID[Patient]"): identifiers through the configured assigning
//! authority table, name, birth date with the sender's precision, administrative gender.

use serde_json::{Map, Value, json};

use super::{MapContext, Position};
use crate::hl7v2::ack::Hl7Error;
use crate::hl7v2::dtm::parse_dtm;
use crate::hl7v2::er7::{Repetition, Segment};
use crate::hl7v2::tables;

/// A Patient from PID and the identifier to find it by.
#[derive(Debug, Clone)]
pub struct PatientDraft {
    pub resource: Value,
    /// `system|value` of the first mapped identifier: the conditional-create criterion.
    pub match_identifier: (String, String),
}

pub fn map_pid(
    pid: &Segment,
    at: Position,
    context: &MapContext,
) -> Result<PatientDraft, Vec<Hl7Error>> {
    let mut errors = Vec::new();
    let mut patient = Map::new();
    patient.insert("resourceType".into(), json!("Patient"));

    let mut identifiers = Vec::new();
    for (index, repetition) in pid.repetitions(3).iter().enumerate() {
        match identifier(repetition, context) {
            Some(Ok(identifier)) => identifiers.push(identifier),
            Some(Err(message)) => {
                errors.push(Hl7Error::new(103, at.component(3, index, 4), message))
            }
            None => {}
        }
    }
    let Some(first) = identifiers.first() else {
        if errors.is_empty() {
            errors.push(Hl7Error::new(
                101,
                at.field(3),
                "PID-3 needs at least one patient identifier with an assigning authority",
            ));
        }
        return Err(errors);
    };
    let match_identifier = (
        first["system"].as_str().unwrap_or_default().to_string(),
        first["value"].as_str().unwrap_or_default().to_string(),
    );
    patient.insert("identifier".into(), Value::Array(identifiers));

    let names: Vec<Value> = pid.repetitions(5).iter().filter_map(human_name).collect();
    if !names.is_empty() {
        patient.insert("name".into(), Value::Array(names));
    }

    let birth = pid.text(7);
    if !birth.is_empty() {
        match parse_dtm(birth, context.config.facility_time_zone) {
            // birthDate is a FHIR date: keep the date part at the precision sent.
            Ok(parsed) => {
                let date = parsed
                    .text
                    .split('T')
                    .next()
                    .unwrap_or_default()
                    .to_string();
                patient.insert("birthDate".into(), json!(date));
            }
            Err(_) => errors.push(Hl7Error::new(
                102,
                at.field(7),
                "PID-7 is not a date (YYYY[MM[DD]])",
            )),
        }
    }

    let gender = pid.text(8);
    if !gender.is_empty() {
        match tables::gender(gender) {
            Ok(code) => {
                patient.insert("gender".into(), json!(code));
            }
            Err(_) => errors.push(Hl7Error::new(
                103,
                at.field(8),
                "PID-8 is not a code of HL7 table 0001 (F, M, O, U, A, N)",
            )),
        }
    }

    if errors.is_empty() {
        Ok(PatientDraft {
            resource: Value::Object(patient),
            match_identifier,
        })
    } else {
        Err(errors)
    }
}

/// A CX repetition as a FHIR Identifier: `None` for an empty repetition, an error when its
/// assigning authority has no configured system.
fn identifier(cx: &Repetition, context: &MapContext) -> Option<Result<Value, String>> {
    let value = cx.component(1).trim();
    if value.is_empty() {
        return None;
    }
    let (namespace, universal, universal_type) = (cx.sub(4, 1), cx.sub(4, 2), cx.sub(4, 3));
    let systems = &context.config.identifier_systems;
    let system = systems
        .get(namespace)
        .or_else(|| systems.get(universal))
        .cloned()
        .or_else(|| {
            (universal_type.eq_ignore_ascii_case("ISO") && is_oid(universal))
                .then(|| format!("urn:oid:{universal}"))
        });
    let Some(system) = system else {
        return Some(Err(
            "the assigning authority of this identifier has no configured identifier system (hl7v2.identifier_systems) and no ISO OID"
                .to_string(),
        ));
    };
    let mut identifier = Map::new();
    let type_code = cx.component(5);
    if !type_code.is_empty() {
        identifier.insert(
            "type".into(),
            json!({"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": type_code}]}),
        );
    }
    identifier.insert("system".into(), json!(system));
    identifier.insert("value".into(), json!(value));
    Some(Ok(Value::Object(identifier)))
}

fn is_oid(text: &str) -> bool {
    !text.is_empty()
        && text
            .split('.')
            .all(|arc| !arc.is_empty() && arc.bytes().all(|b| b.is_ascii_digit()))
}

/// An XPN repetition as a HumanName (family, given and middle names, prefix, suffix, use).
fn human_name(xpn: &Repetition) -> Option<Value> {
    let mut name = Map::new();
    let family = xpn.sub(1, 1);
    if !family.is_empty() {
        name.insert("family".into(), json!(family));
    }
    let given: Vec<&str> = [xpn.component(2), xpn.component(3)]
        .into_iter()
        .filter(|g| !g.is_empty())
        .collect();
    if !given.is_empty() {
        name.insert("given".into(), json!(given));
    }
    if !xpn.component(4).is_empty() {
        name.insert("suffix".into(), json!([xpn.component(4)]));
    }
    if !xpn.component(5).is_empty() {
        name.insert("prefix".into(), json!([xpn.component(5)]));
    }
    if name.is_empty() {
        return None;
    }
    // HL7 table 0200 → FHIR name-use, as the v2-to-FHIR IG's concept map has it.
    let name_use = match xpn.component(7) {
        "L" => Some("official"),
        "D" => Some("usual"),
        "M" => Some("maiden"),
        "N" => Some("nickname"),
        "S" => Some("anonymous"),
        "T" => Some("temp"),
        _ => None,
    };
    if let Some(name_use) = name_use {
        name.insert("use".into(), json!(name_use));
    }
    Some(Value::Object(name))
}
