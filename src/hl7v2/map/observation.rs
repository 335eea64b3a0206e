//! OBX → Observation (v2-to-FHIR "OBX[Observation]", IHE PCD-01 for device OBXs).
//!
//! One order's OBXs are mapped together: PCD containment OBXs (MDS, VMD and channel levels of
//! OBX-4) describe devices, sample-period attribute OBXs feed the waveforms of their channel, and
//! the metrics of a channel whose channel-level OBX is itself a measurement (status other than X)
//! become components of one Observation coded by that channel. Every other OBX is an Observation.

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use super::device::{Devices, Level, containment};
use super::report::ObrFields;
use super::values::{Structured, decimal, decimal_text, reference_range, structured};
use super::{MapContext, ObservationDraft, PROFILE_BASE, Position};
use crate::hl7v2::ack::Hl7Error;
use crate::hl7v2::codes::{CodeTable, Measure, OBSERVATION_CATEGORY_SYSTEM, UCUM_SYSTEM};
use crate::hl7v2::dtm::parse_dtm;
use crate::hl7v2::er7::Segment;
use crate::hl7v2::tables;

/// Extension keeping OBX-4 (the PCD containment path `MDS.VMD.CHANNEL.METRIC`).
pub const SUB_ID_EXTENSION: &str = "https://fhirvault.example/StructureDefinition/hl7v2-obx-sub-id";

/// MDC attributes that describe a channel's sampling rather than a measurement.
const SAMPLE_PERIOD_REFID: &str = "MDC_ATTR_TIME_PD_SAMP";
const SAMPLE_RATE_REFID: &str = "MDC_ATTR_SAMP_RATE";

pub fn map_order(
    obr: &ObrFields,
    obxs: &[(Segment, usize)],
    notes: &[(usize, String)],
    devices: &mut Devices,
    context: &MapContext,
) -> Result<Vec<ObservationDraft>, Vec<Hl7Error>> {
    let mut errors = Vec::new();
    let at = |sequence: usize| Position {
        name: "OBX",
        sequence,
    };

    // First pass: devices, channel parents and sample periods.
    let mut parents: HashMap<String, usize> = HashMap::new();
    let mut sample_periods: HashMap<String, Value> = HashMap::new();
    let mut skip = vec![false; obxs.len()];
    let mut device_of = vec![None; obxs.len()];
    for (index, (obx, sequence)) in obxs.iter().enumerate() {
        match devices.named_in_obx18(obx, at(*sequence), context) {
            Ok(device) => device_of[index] = device,
            Err(error) => errors.push(error),
        }
        let (level, channel) = containment(obx.text(4));
        let containment_marker = obx.text(11) == "X";
        match level {
            Level::Mds => {
                if let Some(device) = device_of[index] {
                    devices.describe(device, obx);
                }
                skip[index] = true;
            }
            Level::Vmd => skip[index] = true,
            Level::Channel => {
                skip[index] = true;
                if !containment_marker && let Some(channel) = channel {
                    parents.insert(channel, index);
                }
            }
            Level::Metric => {
                if let Some(period) = sample_period(obx) {
                    skip[index] = true;
                    match period {
                        Some(period) => {
                            sample_periods.insert(channel.unwrap_or_default(), period);
                        }
                        None => errors.push(Hl7Error::new(
                            102,
                            at(*sequence).field(5),
                            "the sample period or rate must be a positive number in s, ms or Hz",
                        )),
                    }
                }
            }
        }
    }

    // Second pass: the observations, components gathered under their channel's parent.
    let mut drafts: Vec<ObservationDraft> = Vec::new();
    let mut parent_drafts: HashMap<usize, usize> = HashMap::new();
    for (index, (obx, sequence)) in obxs.iter().enumerate() {
        if skip[index] {
            continue;
        }
        let channel = containment(obx.text(4)).1;
        let period = channel.as_ref().and_then(|c| sample_periods.get(c));
        let parent = channel.as_ref().and_then(|c| parents.get(c)).copied();
        let note: Vec<&str> = notes
            .iter()
            .filter(|(i, _)| *i == index)
            .map(|(_, text)| text.as_str())
            .collect();
        match parent {
            Some(parent) => {
                let component = match component(obx, at(*sequence), obr, context, period) {
                    Ok(component) => component,
                    Err(error) => {
                        errors.push(error);
                        continue;
                    }
                };
                let slot = match parent_drafts.get(&parent) {
                    Some(slot) => *slot,
                    None => {
                        let (parent_obx, parent_sequence) = &obxs[parent];
                        match observation(parent_obx, at(*parent_sequence), obr, context, None, &[])
                        {
                            Ok(resource) => {
                                drafts.push(ObservationDraft {
                                    resource,
                                    device: device_of[parent].or(device_of[index]),
                                });
                                parent_drafts.insert(parent, drafts.len() - 1);
                                drafts.len() - 1
                            }
                            Err(mut more) => {
                                errors.append(&mut more);
                                continue;
                            }
                        }
                    }
                };
                if let Some(object) = drafts[slot].resource.as_object_mut() {
                    let components = object.entry("component").or_insert_with(|| json!([]));
                    if let Some(list) = components.as_array_mut() {
                        list.push(component);
                    }
                }
            }
            None => match observation(obx, at(*sequence), obr, context, period, &note) {
                Ok(resource) => drafts.push(ObservationDraft {
                    resource,
                    device: device_of[index],
                }),
                Err(mut more) => errors.append(&mut more),
            },
        }
    }
    if errors.is_empty() {
        Ok(drafts)
    } else {
        Err(errors)
    }
}

/// `Some(Some(period in ms))` for a sample-period or sample-rate attribute OBX, `Some(None)` when
/// it is one but its value is unusable, `None` for any other OBX.
fn sample_period(obx: &Segment) -> Option<Option<Value>> {
    let names = [obx.get(3, 0, 1, 1), obx.get(3, 0, 2, 1)];
    let is = |refid: &str| names.iter().any(|n| n.eq_ignore_ascii_case(refid));
    let (is_period, is_rate) = (is(SAMPLE_PERIOD_REFID), is(SAMPLE_RATE_REFID));
    if !is_period && !is_rate {
        return None;
    }
    let value: Option<f64> = decimal_text(obx.get(5, 0, 1, 1))
        .and_then(|t| t.parse().ok())
        .filter(|v: &f64| *v > 0.0);
    let unit = [obx.get(6, 0, 1, 1), obx.get(6, 0, 2, 1)]
        .join(" ")
        .to_ascii_lowercase();
    let millis = value.and_then(|v| {
        if is_rate {
            return (unit.contains("hz") || unit.contains("mdc_dim_hz") || unit.trim().is_empty())
                .then(|| 1000.0 / v);
        }
        if unit.contains("milli_sec") || unit.split_whitespace().any(|u| u == "ms") {
            Some(v)
        } else if unit.contains("micro_sec") || unit.split_whitespace().any(|u| u == "us") {
            Some(v / 1000.0)
        } else if unit.contains("mdc_dim_sec") || unit.split_whitespace().any(|u| u == "s") {
            Some(v * 1000.0)
        } else {
            None
        }
    });
    Some(millis.and_then(|ms| serde_json::from_str(&format_millis(ms)).ok()))
}

/// Milliseconds as a short decimal (at most 6 fraction digits, no trailing zeros).
fn format_millis(ms: f64) -> String {
    let text = format!("{ms:.6}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    text.to_string()
}

/// One OBX as an Observation (no subject or device yet).
fn observation(
    obx: &Segment,
    at: Position,
    obr: &ObrFields,
    context: &MapContext,
    period: Option<&Value>,
    notes: &[&str],
) -> Result<Value, Vec<Hl7Error>> {
    let mut errors = Vec::new();
    let mut out = Map::new();
    out.insert("resourceType".into(), json!("Observation"));

    let (code, measure) = match observation_code(obx, at, context.codes, obr.hours()) {
        Ok(found) => found,
        Err(error) => return Err(vec![error]),
    };
    if measure.is_some() {
        out.insert(
            "meta".into(),
            json!({"profile": [format!("{PROFILE_BASE}/holter-observation")]}),
        );
    }
    let sub_id = obx.text(4);
    if !sub_id.is_empty() {
        out.insert(
            "extension".into(),
            json!([{"url": SUB_ID_EXTENSION, "valueString": sub_id}]),
        );
    }

    let (status, absent) = match obx.text(11) {
        "" => {
            errors.push(Hl7Error::new(
                101,
                at.field(11),
                "OBX-11 (observation result status) is required",
            ));
            ("unknown", None)
        }
        code => tables::observation_status(code).unwrap_or_else(|_| {
            errors.push(Hl7Error::new(
                103,
                at.field(11),
                "OBX-11 is not a result status of HL7 table 0085 that maps to FHIR",
            ));
            ("unknown", None)
        }),
    };
    out.insert("status".into(), json!(status));
    // The table decides for its measures; other codes in a Holter study are ECG analysis
    // results (procedure), outside one they are what a lab-style ORU carries.
    let (category, display) = match measure.map(|m| m.category) {
        Some(category) => (category.code(), category.display()),
        None if obr.is_holter_study => ("procedure", "Procedure"),
        None => ("laboratory", "Laboratory"),
    };
    out.insert("category".into(), json!([{"coding": [{"system": OBSERVATION_CATEGORY_SYSTEM, "code": category, "display": display}]}]));
    out.insert("code".into(), code);

    let effective = obx.text(14);
    if effective.is_empty() {
        match obr.effective() {
            Some((key, value)) => {
                out.insert(key.into(), value);
            }
            None => errors.push(Hl7Error::new(
                101,
                at.field(14),
                "OBX-14 (or OBR-7) is needed for the time of the observation",
            )),
        }
    } else {
        match parse_dtm(effective, context.config.facility_time_zone) {
            Ok(time) => {
                out.insert("effectiveDateTime".into(), json!(time.text));
            }
            Err(_) => errors.push(Hl7Error::new(
                102,
                at.field(14),
                "OBX-14 is not an HL7 date/time (YYYYMMDDHHMMSS[+ZZZZ])",
            )),
        }
    }
    if let Some(issued) = &obr.issued {
        out.insert("issued".into(), json!(issued));
    }

    let unit = match unit(obx, at, context.codes) {
        Ok(unit) => unit,
        Err(error) => {
            errors.push(error);
            None
        }
    };
    if absent.is_none() {
        match value(obx, at, context, unit.as_ref(), period) {
            Ok(Some((key, value))) => {
                out.insert(key.into(), value);
            }
            Ok(None) => {}
            Err(error) => errors.push(error),
        }
    }
    if let Some(reason) = absent {
        out.insert(
            "dataAbsentReason".into(),
            json!({"coding": [{"system": "http://terminology.hl7.org/CodeSystem/data-absent-reason", "code": reason}]}),
        );
    }

    let mut interpretations = Vec::new();
    for (index, repetition) in obx.repetitions(8).iter().enumerate() {
        let flag = repetition.component(1);
        if flag.is_empty() {
            continue;
        }
        match tables::interpretation(flag) {
            Ok((code, display)) => interpretations.push(json!({"coding": [{
                "system": tables::INTERPRETATION_SYSTEM, "code": code, "display": display
            }]})),
            Err(_) => errors.push(Hl7Error::new(
                103,
                at.component(8, index, 1),
                "OBX-8 is not an abnormal flag of HL7 table 0078",
            )),
        }
    }
    if !interpretations.is_empty() {
        out.insert("interpretation".into(), Value::Array(interpretations));
    }
    if !notes.is_empty() {
        out.insert(
            "note".into(),
            Value::Array(notes.iter().map(|text| json!({"text": text})).collect()),
        );
    }
    let range = obx.get(7, 0, 1, 1);
    if !range.is_empty() {
        let unit = unit.unwrap_or_default();
        out.insert(
            "referenceRange".into(),
            json!([reference_range(range, &unit)]),
        );
    }
    if errors.is_empty() {
        Ok(Value::Object(out))
    } else {
        Err(errors)
    }
}

/// A metric OBX as a component of its channel's Observation.
fn component(
    obx: &Segment,
    at: Position,
    obr: &ObrFields,
    context: &MapContext,
    period: Option<&Value>,
) -> Result<Value, Hl7Error> {
    let (code, _) = observation_code(obx, at, context.codes, obr.hours())?;
    let unit = unit(obx, at, context.codes)?;
    let mut out = Map::new();
    out.insert("code".into(), code);
    if let Some((key, value)) = value(obx, at, context, unit.as_ref(), period)? {
        out.insert(key.into(), value);
    }
    Ok(Value::Object(out))
}

/// OBX-3 (and its alternate triplet) as a CodeableConcept, with the table's measure if known.
/// `analysed_hours` (the order's recording period) decides whether period-specific LOINC codes fit.
fn observation_code<'t>(
    obx: &Segment,
    at: Position,
    codes: &'t CodeTable,
    analysed_hours: Option<f64>,
) -> Result<(Value, Option<&'t Measure>), Hl7Error> {
    let primary = (
        obx.get(3, 0, 1, 1),
        obx.get(3, 0, 2, 1),
        obx.get(3, 0, 3, 1),
    );
    let alternate = (
        obx.get(3, 0, 4, 1),
        obx.get(3, 0, 5, 1),
        obx.get(3, 0, 6, 1),
    );
    if primary.0.is_empty() {
        return Err(Hl7Error::new(
            101,
            at.field(3),
            "OBX-3 (observation identifier) is required",
        ));
    }
    let measure = codes.measure_cwe(&[primary, alternate]).map_err(|_| {
        Hl7Error::new(
            102,
            at.field(3),
            "the two codings of OBX-3 name different measures",
        )
    })?;
    if let Some(measure) = measure {
        let codings: Vec<Value> = measure
            .codings(analysed_hours)
            .into_iter()
            .map(|c| json!({"system": c.system, "code": c.code, "display": c.display}))
            .collect();
        return Ok((
            json!({"coding": codings, "text": measure.display}),
            Some(measure),
        ));
    }
    let mut codings = Vec::new();
    for (index, (code, text, system_name)) in [primary, alternate].into_iter().enumerate() {
        if code.is_empty() {
            continue;
        }
        let Some(system) = CodeTable::system_uri(system_name) else {
            return Err(Hl7Error::new(
                103,
                at.component(3, 0, 3 + 3 * index),
                "OBX-3 names a coding system this server does not know (HL7 table 0396)",
            ));
        };
        let mut coding = Map::new();
        coding.insert("system".into(), json!(system));
        coding.insert("code".into(), json!(code));
        if !text.is_empty() {
            coding.insert("display".into(), json!(text));
        }
        codings.push(Value::Object(coding));
    }
    Ok((json!({"coding": codings}), None))
}

/// OBX-6 as a Quantity's unit/system/code; `None` when OBX-6 is empty.
fn unit(
    obx: &Segment,
    at: Position,
    codes: &CodeTable,
) -> Result<Option<Map<String, Value>>, Hl7Error> {
    let (id, text, system) = (
        obx.get(6, 0, 1, 1),
        obx.get(6, 0, 2, 1),
        obx.get(6, 0, 3, 1),
    );
    if id.is_empty() && text.is_empty() {
        return Ok(None);
    }
    let Some((code, display)) = codes.ucum_unit(id, text, system) else {
        return Err(Hl7Error::new(
            103,
            at.field(6),
            "OBX-6 is a unit this server cannot map to UCUM (see docs/holter-codes.md)",
        ));
    };
    let mut unit = Map::new();
    unit.insert("unit".into(), json!(display));
    unit.insert("system".into(), json!(UCUM_SYSTEM));
    unit.insert("code".into(), json!(code));
    Ok(Some(unit))
}

/// OBX-5 as `value[x]` by OBX-2; `None` when OBX-5 is empty.
fn value(
    obx: &Segment,
    at: Position,
    context: &MapContext,
    unit: Option<&Map<String, Value>>,
    period: Option<&Value>,
) -> Result<Option<(&'static str, Value)>, Hl7Error> {
    let repetitions = obx.repetitions(5);
    if repetitions.iter().all(|r| r.is_empty()) {
        return Ok(None);
    }
    let first = &repetitions[0];
    let bad = |what: &str| {
        Hl7Error::new(
            102,
            at.field(5),
            format!("OBX-5 is not a valid {what} value for OBX-2"),
        )
    };
    let quantity = |value: Value, comparator: Option<&str>| {
        let mut q = Map::new();
        q.insert("value".into(), value);
        if let Some(comparator) = comparator {
            q.insert("comparator".into(), json!(comparator));
        }
        for (k, v) in unit.into_iter().flatten() {
            q.insert(k.clone(), v.clone());
        }
        Value::Object(q)
    };
    let value = match obx.text(2) {
        "NM" => (
            "valueQuantity",
            quantity(decimal(first.component(1)).ok_or_else(|| bad("NM"))?, None),
        ),
        "SN" => match structured(
            first.component(1),
            first.component(2),
            first.component(3),
            first.component(4),
        ) {
            Some(Structured::Quantity { comparator, value }) => {
                ("valueQuantity", quantity(value, comparator))
            }
            Some(Structured::Range { low, high }) => (
                "valueRange",
                json!({"low": quantity(low, None), "high": quantity(high, None)}),
            ),
            Some(Structured::Ratio {
                numerator,
                denominator,
            }) => (
                "valueRatio",
                json!({"numerator": quantity(numerator, None), "denominator": {"value": denominator}}),
            ),
            None => return Err(bad("SN")),
        },
        "ST" | "TX" | "FT" => {
            let texts: Vec<&str> = repetitions.iter().map(|r| r.component(1)).collect();
            ("valueString", json!(texts.join("\n")))
        }
        "CWE" | "CE" | "CNE" => {
            let (code, text, system_name) =
                (first.component(1), first.component(2), first.component(3));
            let mut coding = Map::new();
            if !system_name.is_empty() {
                let system = CodeTable::system_uri(system_name).ok_or_else(|| {
                    Hl7Error::new(
                        103,
                        at.component(5, 0, 3),
                        "OBX-5.3 names a coding system this server does not know (HL7 table 0396)",
                    )
                })?;
                coding.insert("system".into(), json!(system));
            }
            if !code.is_empty() {
                coding.insert("code".into(), json!(code));
            }
            if !text.is_empty() {
                coding.insert("display".into(), json!(text));
            }
            let mut concept = Map::new();
            if coding.contains_key("code") {
                concept.insert("coding".into(), json!([coding]));
            }
            if !text.is_empty() {
                concept.insert("text".into(), json!(text));
            }
            if concept.is_empty() {
                return Err(bad("CWE"));
            }
            ("valueCodeableConcept", Value::Object(concept))
        }
        "DTM" | "TS" | "DT" => {
            let time = parse_dtm(first.component(1), context.config.facility_time_zone)
                .map_err(|_| bad("DTM"))?;
            ("valueDateTime", json!(time.text))
        }
        "NA" => {
            let Some(period) = period else {
                return Err(Hl7Error::new(
                    101,
                    at.field(5),
                    "a waveform (NA) needs the sample period of its channel (an MDC_ATTR_TIME_PD_SAMP or MDC_ATTR_SAMP_RATE OBX)",
                ));
            };
            let samples: Option<Vec<String>> = (1..=first.components().len())
                .map(|c| decimal_text(first.component(c)))
                .collect();
            let samples = samples.filter(|s| !s.is_empty()).ok_or_else(|| bad("NA"))?;
            let origin = quantity(json!(0), None);
            (
                "valueSampledData",
                json!({"origin": origin, "period": period, "dimensions": 1, "data": samples.join(" ")}),
            )
        }
        other => {
            return Err(Hl7Error::new(
                102,
                at.field(2),
                format!(
                    "OBX-2 value type {} is not supported (NM, SN, ST, TX, FT, CWE, CE, CNE, DTM, TS, DT, NA are)",
                    short(other)
                ),
            ));
        }
    };
    Ok(Some(value))
}

/// A value type code for an error message: table 0125 codes are short and not PHI, but cap it.
fn short(code: &str) -> String {
    code.chars()
        .take(3)
        .filter(char::is_ascii_alphanumeric)
        .collect()
}
