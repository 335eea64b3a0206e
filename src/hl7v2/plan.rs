//! A mapped message as the concrete resources to write, with their ids decided up front.
//!
//! Patients and devices are matched by identifier before the write ([`Resolved`]): an existing one
//! is referenced by its id, a new one gets a fresh id. Every other resource (Observations,
//! DiagnosticReports, the Provenance) is new. With every id known, each resource can be validated,
//! indexed and sealed outside the database's write lock; the write then only re-checks that the
//! matches still hold (see `ingest.rs`) and inserts everything in one batch.

use serde_json::{Value, json};

use super::map::{Mapped, PatientSource};
use crate::fhir::id::FhirId;
use crate::fhir::instant::{format_instant, now_micros};
use crate::search::query::token_criteria;

/// Identifier system of the messages a Provenance records: `sending application|facility|MSH-10`.
pub const MESSAGE_SYSTEM: &str = "urn:fhirvault:hl7v2:message";
/// Identifier system of senders: `sending application|facility` (MSH-3|MSH-4, encoded).
pub const SENDER_SYSTEM: &str = "urn:fhirvault:hl7v2:sender";

/// How a patient or device of the message was matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// Already stored under this id.
    Existing(String),
    /// Not stored yet: it will be created with this id.
    New(String),
}

impl Resolved {
    pub fn id(&self) -> &str {
        match self {
            Resolved::Existing(id) | Resolved::New(id) => id,
        }
    }
}

/// A match made before the write, to be confirmed inside it.
#[derive(Debug, Clone)]
pub struct Match {
    pub resource_type: &'static str,
    /// The search criteria (`identifier=system|value`), as a conditional create would use them.
    pub criteria: String,
    pub resolved: Resolved,
}

/// The matches of one patient group: its patient (when it came through PID) and its devices.
#[derive(Debug, Clone, Default)]
pub struct GroupMatches {
    pub patient: Option<Match>,
    /// For groups without PID: the `Patient/id` found through a device.
    pub patient_through_device: Option<String>,
    pub devices: Vec<Match>,
}

/// The criteria to match a group's patient and devices by.
pub fn criteria(mapped: &Mapped) -> Vec<(Option<String>, Vec<String>)> {
    mapped
        .groups
        .iter()
        .map(|group| {
            let patient = match &group.patient {
                PatientSource::Pid(draft) => Some(token_criteria(
                    "identifier",
                    &draft.match_identifier.0,
                    &draft.match_identifier.1,
                )),
                PatientSource::Device => None,
            };
            let devices = group
                .devices
                .iter()
                .map(|d| token_criteria("identifier", &d.system, &d.value))
                .collect();
            (patient, devices)
        })
        .collect()
}

/// One resource to write.
#[derive(Debug, Clone)]
pub struct Planned {
    pub resource_type: &'static str,
    pub id: String,
    pub body: Value,
}

/// Who sent a message, for the Provenance.
pub struct Sender<'a> {
    /// `MSH-3|MSH-4` as sent (encoded).
    pub sender: &'a str,
    pub control_id: &'a str,
    /// The organisation (id) of the device hub that delivered it: it owns the devices this
    /// message creates (`Device.owner`) and manages the patients it creates
    /// (`Patient.managingOrganization`), so that the hub's later messages may name them
    /// ([`crate::auth::role`]'s `OwnedDevices`, `Ingestor::patient_of_sender`). `None` leaves
    /// both unassigned.
    pub owner: Option<&'a str>,
}

/// The resources to write for `mapped`: new patients and devices, every Observation and
/// DiagnosticReport, and the Provenance (last).
pub fn plan(mapped: &Mapped, matches: &[GroupMatches], sender: &Sender) -> Vec<Planned> {
    let mut planned = Vec::new();
    // A patient or device named twice in one message is created once.
    let mut created = std::collections::HashSet::new();
    let mut targets = Vec::new();
    let mut device_agents = Vec::new();
    for (group, matched) in mapped.groups.iter().zip(matches) {
        let patient_ref = match (
            &group.patient,
            &matched.patient,
            &matched.patient_through_device,
        ) {
            (PatientSource::Pid(draft), Some(found), _) => {
                if let Resolved::New(id) = &found.resolved
                    && created.insert(id.clone())
                {
                    let mut body = draft.resource.clone();
                    if let Some(org) = sender.owner {
                        body["managingOrganization"] =
                            json!({"reference": format!("Organization/{org}")});
                    }
                    planned.push(Planned {
                        resource_type: "Patient",
                        id: id.clone(),
                        body,
                    });
                }
                format!("Patient/{}", found.resolved.id())
            }
            (_, _, Some(reference)) => reference.clone(),
            // The caller resolves every patient before planning; nothing to link otherwise.
            _ => continue,
        };
        let mut device_refs = Vec::with_capacity(group.devices.len());
        for (device, found) in group.devices.iter().zip(&matched.devices) {
            if let Resolved::New(id) = &found.resolved
                && created.insert(id.clone())
            {
                let mut body = device.resource.clone();
                body["patient"] = json!({"reference": patient_ref});
                if let Some(org) = sender.owner {
                    body["owner"] = json!({"reference": format!("Organization/{org}")});
                }
                planned.push(Planned {
                    resource_type: "Device",
                    id: id.clone(),
                    body,
                });
            }
            let reference = format!("Device/{}", found.resolved.id());
            device_agents.push(reference.clone());
            device_refs.push(reference);
        }
        for report in &group.reports {
            let mut results = Vec::with_capacity(report.observations.len());
            for observation in &report.observations {
                let id = FhirId::generate().into_string();
                let mut body = observation.resource.clone();
                body["subject"] = json!({"reference": patient_ref});
                if let Some(device) = observation.device.and_then(|i| device_refs.get(i)) {
                    body["device"] = json!({"reference": device});
                }
                results.push(json!({"reference": format!("Observation/{id}")}));
                targets.push(json!({"reference": format!("Observation/{id}")}));
                planned.push(Planned {
                    resource_type: "Observation",
                    id,
                    body,
                });
            }
            let id = FhirId::generate().into_string();
            let mut body = report.report.clone();
            body["subject"] = json!({"reference": patient_ref});
            if !results.is_empty() {
                body["result"] = Value::Array(results);
            }
            targets.push(json!({"reference": format!("DiagnosticReport/{id}")}));
            planned.push(Planned {
                resource_type: "DiagnosticReport",
                id,
                body,
            });
        }
    }
    device_agents.dedup();
    let provenance = provenance(targets, &device_agents, sender);
    planned.push(Planned {
        resource_type: "Provenance",
        id: FhirId::generate().into_string(),
        body: provenance,
    });
    planned
}

/// The Provenance of a message: what it created, who sent it, which message it was.
fn provenance(targets: Vec<Value>, devices: &[String], sender: &Sender) -> Value {
    let participant = |code: &str| json!({"coding": [{"system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type", "code": code}]});
    let mut agents = vec![json!({
        "type": participant("author"),
        "who": {"identifier": {"system": SENDER_SYSTEM, "value": sender.sender}},
    })];
    for device in devices {
        agents.push(json!({"type": participant("performer"), "who": {"reference": device}}));
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
