//! OBR → DiagnosticReport: the Holter study (LOINC 18754-2 unless OBR-4 names the service),
//! recording period from OBR-7/OBR-8, issued from OBR-22, status through table 0123.

use serde_json::{Map, Value, json};

use super::{MapContext, PROFILE_BASE, Position};
use crate::hl7v2::ack::Hl7Error;
use crate::hl7v2::codes::{CodeTable, LOINC_SYSTEM};
use crate::hl7v2::dtm::{FhirDateTime, parse_dtm};
use crate::hl7v2::er7::Segment;
use crate::hl7v2::tables;

/// The LOINC code of a Holter study, used when OBR-4 is empty.
pub const HOLTER_STUDY_LOINC: &str = "18754-2";
const HOLTER_STUDY_DISPLAY: &str = "Ambulatory cardiac rhythm monitor (Holter) study";
/// HL7 table 0074 (diagnostic service section), and its code for a Holter study's section.
const SECTION_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/v2-0074";
const ELECTROCARDIAC: (&str, &str) = ("EC", "Electrocardiac (e.g., EKG,  EEC, Holter)");

/// The (system, code, display) of the codings this module writes with a display.
pub(super) fn displayed_codings() -> [(&'static str, &'static str, &'static str); 2] {
    [
        (LOINC_SYSTEM, HOLTER_STUDY_LOINC, HOLTER_STUDY_DISPLAY),
        (SECTION_SYSTEM, ELECTROCARDIAC.0, ELECTROCARDIAC.1),
    ]
}

/// What an OBR says, checked.
#[derive(Debug, Clone)]
pub struct ObrFields {
    pub code: Value,
    pub is_holter_study: bool,
    pub status: &'static str,
    pub start: Option<FhirDateTime>,
    pub end: Option<FhirDateTime>,
    pub issued: Option<String>,
    pub category: Value,
    pub identifiers: Vec<Value>,
}

impl ObrFields {
    pub fn read(
        obr: &Segment,
        at: Position,
        context: &MapContext,
    ) -> Result<ObrFields, Vec<Hl7Error>> {
        let mut errors = Vec::new();
        let zone = context.config.facility_time_zone;
        let mut time = |field: usize, name: &str| -> Option<FhirDateTime> {
            let text = obr.text(field);
            if text.is_empty() {
                return None;
            }
            parse_dtm(text, zone)
                .map_err(|_| {
                    errors.push(Hl7Error::new(
                        102,
                        at.field(field),
                        format!("{name} is not an HL7 date/time (YYYYMMDDHHMMSS[+ZZZZ])"),
                    ))
                })
                .ok()
        };
        let start = time(7, "OBR-7");
        let end = time(8, "OBR-8");
        let issued = time(22, "OBR-22").and_then(|t| t.as_instant());
        if obr.text(7).is_empty() {
            errors.push(Hl7Error::new(
                101,
                at.field(7),
                "OBR-7 (observation date/time, the start of the recording) is required",
            ));
        }

        let status = match obr.text(25) {
            "" => {
                errors.push(Hl7Error::new(
                    101,
                    at.field(25),
                    "OBR-25 (result status) is required",
                ));
                "unknown"
            }
            code => tables::report_status(code).unwrap_or_else(|_| {
                errors.push(Hl7Error::new(
                    103,
                    at.field(25),
                    "OBR-25 is not a result status of HL7 table 0123",
                ));
                "unknown"
            }),
        };

        let (code, is_holter_study) = match service_code(obr, at) {
            Ok(Some((coding, is_holter))) => (json!({"coding": [coding]}), is_holter),
            Ok(None) => (json!({"coding": [holter_study_coding()]}), true),
            Err(error) => {
                errors.push(error);
                (json!({}), false)
            }
        };

        let section = obr.text(24);
        let category = if section.is_empty() && is_holter_study {
            json!([{"coding": [{"system": SECTION_SYSTEM, "code": ELECTROCARDIAC.0, "display": ELECTROCARDIAC.1}]}])
        } else if section.is_empty() {
            json!([])
        } else {
            json!([{"coding": [{"system": SECTION_SYSTEM, "code": section}]}])
        };

        let mut identifiers = Vec::new();
        for (field, type_code) in [(2, "PLAC"), (3, "FILL")] {
            let value = obr.get(field, 0, 1, 1);
            if value.is_empty() {
                continue;
            }
            let mut identifier = Map::new();
            identifier.insert(
                "type".into(),
                json!({"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": type_code}]}),
            );
            let (universal, universal_type) = (obr.get(field, 0, 3, 1), obr.get(field, 0, 4, 1));
            if universal_type.eq_ignore_ascii_case("ISO") && !universal.is_empty() {
                identifier.insert("system".into(), json!(format!("urn:oid:{universal}")));
            }
            identifier.insert("value".into(), json!(value));
            identifiers.push(Value::Object(identifier));
        }

        if errors.is_empty() {
            Ok(ObrFields {
                code,
                is_holter_study,
                status,
                start,
                end,
                issued,
                category,
                identifiers,
            })
        } else {
            Err(errors)
        }
    }

    /// Stands in for an OBR that failed, so its OBXs are still checked and reported.
    pub fn placeholder() -> ObrFields {
        ObrFields {
            code: json!({"coding": [holter_study_coding()]}),
            is_holter_study: true,
            status: "unknown",
            start: None,
            end: None,
            issued: None,
            category: json!([]),
            identifiers: Vec::new(),
        }
    }

    /// The length of the recording period in hours, when both ends are known to the second.
    pub fn hours(&self) -> Option<f64> {
        let (start, end) = (self.start.as_ref()?.instant?, self.end.as_ref()?.instant?);
        Some((end - start).num_seconds() as f64 / 3600.0)
    }

    /// The recording period as FHIR `effective[x]` (a Period; a dateTime when only the start is known
    /// for an order that is not a Holter study).
    pub fn effective(&self) -> Option<(&'static str, Value)> {
        let start = self.start.as_ref()?;
        let mut period = Map::new();
        period.insert("start".into(), json!(start.text));
        if let Some(end) = &self.end {
            period.insert("end".into(), json!(end.text));
        }
        Some(("effectivePeriod", Value::Object(period)))
    }
}

fn holter_study_coding() -> Value {
    json!({"system": LOINC_SYSTEM, "code": HOLTER_STUDY_LOINC, "display": HOLTER_STUDY_DISPLAY})
}

/// OBR-4 (universal service identifier) as a Coding, and whether it is the Holter study.
fn service_code(obr: &Segment, at: Position) -> Result<Option<(Value, bool)>, Hl7Error> {
    let (code, text, system_name) = (
        obr.get(4, 0, 1, 1),
        obr.get(4, 0, 2, 1),
        obr.get(4, 0, 3, 1),
    );
    if code.is_empty() {
        return Ok(None);
    }
    let Some(system) = CodeTable::system_uri(system_name) else {
        return Err(Hl7Error::new(
            103,
            at.component(4, 0, 3),
            "OBR-4.3 names a coding system this server does not know (HL7 table 0396)",
        ));
    };
    if system == LOINC_SYSTEM && code == HOLTER_STUDY_LOINC {
        return Ok(Some((holter_study_coding(), true)));
    }
    let mut coding = Map::new();
    coding.insert("system".into(), json!(system));
    coding.insert("code".into(), json!(code));
    if !text.is_empty() {
        coding.insert("display".into(), json!(text));
    }
    Ok(Some((Value::Object(coding), false)))
}

/// The DiagnosticReport of an order, without subject and result.
pub fn diagnostic_report(obr: &ObrFields) -> Value {
    let mut report = Map::new();
    report.insert("resourceType".into(), json!("DiagnosticReport"));
    if obr.is_holter_study {
        report.insert(
            "meta".into(),
            json!({"profile": [format!("{PROFILE_BASE}/holter-diagnosticreport")]}),
        );
    }
    if !obr.identifiers.is_empty() {
        report.insert("identifier".into(), Value::Array(obr.identifiers.clone()));
    }
    report.insert("status".into(), json!(obr.status));
    if obr.category.as_array().is_some_and(|c| !c.is_empty()) {
        report.insert("category".into(), obr.category.clone());
    }
    report.insert("code".into(), obr.code.clone());
    if let Some((key, value)) = obr.effective() {
        report.insert(key.into(), value);
    }
    if let Some(issued) = &obr.issued {
        report.insert("issued".into(), json!(issued));
    }
    Value::Object(report)
}
