//! Fixtures shared by the benchmarks: a realistic Holter heart-rate Observation and a Patient
//! with the PHI elements that get blind-indexed (names, identifiers, telecom, address, birth date).
//!
//! Lives in `benches/common/` so cargo does not take it for a bench target of its own.

#![allow(dead_code)]

use serde_json::{Value, json};

/// The spec definitions the server loads.
pub const DEFINITIONS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fhir-resources");

/// A heart-rate sample as a Holter analyser sends it: LOINC and MDC codes, vital-signs category,
/// subject and device references, an effective time and a UCUM quantity.
pub fn holter_observation(patient_id: &str) -> Value {
    json!({
        "resourceType": "Observation",
        "status": "final",
        "category": [{
            "coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                "code": "vital-signs",
                "display": "Vital Signs"
            }]
        }],
        "code": {
            "coding": [
                {"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"},
                {"system": "urn:iso:std:iso:11073:10101", "code": "147842", "display": "MDC_ECG_HEART_RATE"}
            ],
            "text": "Heart rate"
        },
        "subject": {"reference": format!("Patient/{patient_id}")},
        "device": {"reference": "Device/holter-hx7-000417"},
        "effectiveDateTime": "2026-03-05T10:00:00+01:00",
        "valueQuantity": {"value": 72, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"}
    })
}

/// The same sample with codes only: no `display` and no `code.text`. Text of token parameters is
/// indexed as blind prefix tokens (one row per prefix), so this shows what that text costs.
pub fn holter_observation_codes_only(patient_id: &str) -> Value {
    let mut observation = holter_observation(patient_id);
    observation["category"][0]["coding"][0].as_object_mut().expect("coding").remove("display");
    let code = observation["code"].as_object_mut().expect("code");
    code.remove("text");
    for coding in code["coding"].as_array_mut().expect("codings") {
        coding.as_object_mut().expect("coding").remove("display");
    }
    observation
}

/// A Patient with two identifiers, two names, phone and e-mail, and a postal address.
pub fn patient() -> Value {
    json!({
        "resourceType": "Patient",
        "identifier": [
            {
                "use": "official",
                "system": "urn:oid:1.2.40.0.10.1.4.3.1",
                "value": "1234010180"
            },
            {
                "use": "usual",
                "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]},
                "system": "urn:oid:1.2.40.0.34.99.4613.3",
                "value": "MRN-0042-7781"
            }
        ],
        "active": true,
        "name": [
            {"use": "official", "family": "Müller-Lüdenscheidt", "given": ["Maria", "Theresia"], "prefix": ["Dr."]},
            {"use": "maiden", "family": "Österreicher", "given": ["Maria"]}
        ],
        "telecom": [
            {"system": "phone", "value": "+43 664 1234567", "use": "mobile"},
            {"system": "email", "value": "maria.mueller@example.at", "use": "home"}
        ],
        "gender": "female",
        "birthDate": "1980-01-01",
        "address": [{
            "use": "home",
            "line": ["Mariahilfer Straße 123/4/5"],
            "city": "Wien",
            "postalCode": "1060",
            "country": "AT"
        }]
    })
}
