//! A mapped message as the entries of one transaction Bundle: conditional creates for patients
//! and devices, plain creates for Observations and DiagnosticReports, and a Provenance that
//! records the message. References between them use `urn:uuid:` fullUrls, which the transaction
//! rewrites to the ids it assigns.

use serde_json::{Value, json};

use super::map::{Mapped, PatientSource};
use crate::fhir::instant::{format_instant, now_micros};
use crate::search::query::token_criteria;

/// Identifier system of the messages a Provenance records: `sending application|facility|MSH-10`.
pub const MESSAGE_SYSTEM: &str = "urn:fhirvault:hl7v2:message";
/// Identifier system of senders: `sending application|facility` (MSH-3|MSH-4, encoded).
pub const SENDER_SYSTEM: &str = "urn:fhirvault:hl7v2:sender";

/// Who sent a message, for the Provenance.
pub struct Sender<'a> {
    /// `MSH-3|MSH-4` as sent (encoded).
    pub sender: &'a str,
    pub control_id: &'a str,
}

/// The Bundle entries for `mapped`. `patients[i]` is the `Patient/id` reference of group `i`
/// when it came through a device (`PatientSource::Device`), resolved by the caller.
pub fn transaction_entries(mapped: &Mapped, patients: &[Option<String>], sender: &Sender) -> Vec<Value> {
    let mut entries = Vec::new();
    let mut targets = Vec::new();
    let mut device_refs_for_agent = Vec::new();
    for (group, resolved) in mapped.groups.iter().zip(patients) {
        let patient_ref = match (&group.patient, resolved) {
            (PatientSource::Pid(draft), _) => {
                let url = new_urn();
                let (system, value) = &draft.match_identifier;
                entries.push(conditional_create(&url, "Patient", &draft.resource, &token_criteria("identifier", system, value)));
                url
            }
            (PatientSource::Device, Some(reference)) => reference.clone(),
            // The caller resolves every device-sourced patient first; nothing to link otherwise.
            (PatientSource::Device, None) => continue,
        };
        let mut device_urls = Vec::with_capacity(group.devices.len());
        for device in &group.devices {
            let url = new_urn();
            let mut resource = device.resource.clone();
            resource["patient"] = json!({"reference": patient_ref});
            entries.push(conditional_create(&url, "Device", &resource, &token_criteria("identifier", &device.system, &device.value)));
            device_refs_for_agent.push(url.clone());
            device_urls.push(url);
        }
        for report in &group.reports {
            let mut results = Vec::with_capacity(report.observations.len());
            for observation in &report.observations {
                let url = new_urn();
                let mut resource = observation.resource.clone();
                resource["subject"] = json!({"reference": patient_ref});
                if let Some(device) = observation.device.and_then(|i| device_urls.get(i)) {
                    resource["device"] = json!({"reference": device});
                }
                entries.push(create(&url, "Observation", resource));
                results.push(json!({"reference": url}));
                targets.push(json!({"reference": url}));
            }
            let url = new_urn();
            let mut resource = report.report.clone();
            resource["subject"] = json!({"reference": patient_ref});
            if !results.is_empty() {
                resource["result"] = Value::Array(results);
            }
            entries.push(create(&url, "DiagnosticReport", resource));
            targets.push(json!({"reference": url}));
        }
    }
    entries.push(create(&new_urn(), "Provenance", provenance(targets, &device_refs_for_agent, sender)));
    entries
}

/// The Provenance of a message: what it created, who sent it, which message it was.
fn provenance(targets: Vec<Value>, devices: &[String], sender: &Sender) -> Value {
    let mut agents = vec![json!({
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type", "code": "author"}]},
        "who": {"identifier": {"system": SENDER_SYSTEM, "value": sender.sender}},
    })];
    for device in devices {
        agents.push(json!({
            "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type", "code": "performer"}]},
            "who": {"reference": device},
        }));
    }
    json!({
        "resourceType": "Provenance",
        "target": targets,
        "recorded": format_instant(now_micros()),
        "activity": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-DataOperation", "code": "CREATE"}]},
        "agent": agents,
        "entity": [{
            "role": "source",
            "what": {"identifier": {"system": MESSAGE_SYSTEM, "value": format!("{}|{}", sender.sender, sender.control_id)}},
        }],
    })
}

fn new_urn() -> String {
    format!("urn:uuid:{}", uuid::Uuid::new_v4())
}

fn create(url: &str, resource_type: &str, resource: Value) -> Value {
    json!({"fullUrl": url, "resource": resource, "request": {"method": "POST", "url": resource_type}})
}

fn conditional_create(url: &str, resource_type: &str, resource: &Value, criteria: &str) -> Value {
    json!({"fullUrl": url, "resource": resource, "request": {"method": "POST", "url": resource_type, "ifNoneExist": criteria}})
}
