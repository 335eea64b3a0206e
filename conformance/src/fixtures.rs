//! Minimal valid R4 resources for the cases.
//!
//! Every resource carries an identifier `ID_SYSTEM|<unique>` so a case can find exactly its own
//! data on a shared server, and references only resources the case created itself (a strict
//! server may check referential integrity).

use serde_json::{Value, json};

use crate::cases::Ctx;

/// The identifier system of everything the suite creates.
pub const ID_SYSTEM: &str = "urn:fhirvault-conformance:id";
pub const LOINC: &str = "http://loinc.org";
/// LOINC 8867-4, heart rate: the code of the suite's Observations.
pub const HEART_RATE: &str = "8867-4";

/// `identifier=` search value for a unique token.
pub fn identifier_query(unique: &str) -> String {
    format!("{ID_SYSTEM}|{unique}")
}

fn identifier(unique: &str) -> Value {
    json!([{ "system": ID_SYSTEM, "value": unique }])
}

/// The family name of the fixture Patient; starts with `Conf` so a lowercase prefix differs in case.
pub fn family(unique: &str) -> String {
    format!("Conf{unique}Doe")
}

pub fn patient(unique: &str) -> Value {
    json!({
        "resourceType": "Patient",
        "identifier": identifier(unique),
        "active": true,
        "name": [{ "family": family(unique), "given": ["Testy"] }],
        "gender": "female",
        "birthDate": "1980-02-29"
    })
}

/// A heart-rate Observation; `subject` is a reference such as `Patient/123`.
pub fn observation(unique: &str, subject: Option<&str>) -> Value {
    let mut observation = json!({
        "resourceType": "Observation",
        "identifier": identifier(unique),
        "status": "final",
        "code": { "coding": [{ "system": LOINC, "code": HEART_RATE, "display": "Heart rate" }] },
        "effectiveDateTime": "2026-03-15T10:30:00Z",
        "valueQuantity": { "value": 72, "unit": "beats/minute", "system": "http://unitsofmeasure.org", "code": "/min" }
    });
    if let Some(subject) = subject {
        observation["subject"] = json!({ "reference": subject });
    }
    observation
}

pub fn device(unique: &str) -> Value {
    json!({
        "resourceType": "Device",
        "identifier": identifier(unique),
        "status": "active",
        "manufacturer": "Conformance Devices",
        "serialNumber": format!("SN-{unique}")
    })
}

pub fn organization(unique: &str) -> Value {
    json!({
        "resourceType": "Organization",
        "identifier": identifier(unique),
        "active": true,
        "name": format!("Conformance Org {unique}")
    })
}

pub fn coverage(unique: &str, beneficiary: &str, payor: &str) -> Value {
    json!({
        "resourceType": "Coverage",
        "identifier": identifier(unique),
        "status": "active",
        "beneficiary": { "reference": beneficiary },
        "payor": [{ "reference": payor }]
    })
}

pub fn claim(unique: &str, patient: &str, provider: &str, coverage: &str) -> Value {
    json!({
        "resourceType": "Claim",
        "identifier": identifier(unique),
        "status": "active",
        "type": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/claim-type", "code": "professional" }] },
        "use": "claim",
        "patient": { "reference": patient },
        "created": "2026-01-15",
        "provider": { "reference": provider },
        "priority": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/processpriority", "code": "normal" }] },
        "insurance": [{ "sequence": 1, "focal": true, "coverage": { "reference": coverage } }]
    })
}

/// A privacy Consent: R4 requires a patient for scope `patient-privacy` (ppc-2) and a policy or
/// policyRule (ppc-1).
pub fn consent(unique: &str, patient: &str) -> Value {
    json!({
        "resourceType": "Consent",
        "identifier": identifier(unique),
        "status": "active",
        "scope": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy" }] },
        "category": [{ "coding": [{ "system": LOINC, "code": "59284-0" }] }],
        "patient": { "reference": patient },
        "dateTime": "2026-01-15T09:00:00Z",
        "policyRule": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN" }] }
    })
}

/// A resource type the CRUD cases exercise: how to build one, and one top-level string element
/// to change on update.
pub struct Kind {
    pub name: &'static str,
    /// `(element, new value)` written by the update step.
    pub change: (&'static str, &'static str),
    build: fn(&Ctx, &str) -> Result<Value, String>,
}

impl Kind {
    /// A new resource of this kind tagged with `unique`, after creating what it references.
    pub fn build(&self, ctx: &Ctx, unique: &str) -> Result<Value, String> {
        (self.build)(ctx, unique)
    }

    /// Applies the update step's change.
    pub fn change(&self, resource: &mut Value) {
        resource[self.change.0] = Value::String(self.change.1.to_string());
    }
}

/// The resource types of the CRUD cases, in case-id order (append only: ids must stay stable).
pub const KINDS: [Kind; 7] = [
    Kind { name: "Patient", change: ("gender", "male"), build: |_, u| Ok(patient(u)) },
    Kind { name: "Observation", change: ("status", "amended"), build: |_, u| Ok(observation(u, None)) },
    Kind { name: "Device", change: ("status", "inactive"), build: |_, u| Ok(device(u)) },
    Kind { name: "Organization", change: ("name", "Conformance Org renamed"), build: |_, u| Ok(organization(u)) },
    Kind { name: "Coverage", change: ("status", "cancelled"), build: build_coverage },
    Kind { name: "Claim", change: ("status", "cancelled"), build: build_claim },
    Kind { name: "Consent", change: ("status", "inactive"), build: build_consent },
];

fn build_coverage(ctx: &Ctx, unique: &str) -> Result<Value, String> {
    let patient = ctx.setup(patient(&ctx.unique()))?;
    let payor = ctx.setup(organization(&ctx.unique()))?;
    Ok(coverage(unique, &patient, &payor))
}

fn build_claim(ctx: &Ctx, unique: &str) -> Result<Value, String> {
    let patient = ctx.setup(patient(&ctx.unique()))?;
    let provider = ctx.setup(organization(&ctx.unique()))?;
    let coverage = ctx.setup(coverage(&ctx.unique(), &patient, &provider))?;
    Ok(claim(unique, &patient, &provider, &coverage))
}

fn build_consent(ctx: &Ctx, unique: &str) -> Result<Value, String> {
    let patient = ctx.setup(patient(&ctx.unique()))?;
    Ok(consent(unique, &patient))
}
