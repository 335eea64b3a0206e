//! ORU^R01 → FHIR: the HL7 v2-to-FHIR IG's segment maps, with IHE PCD-01 for device data.
//!
//! [`map_message`] walks the segments once and returns [`Mapped`]: per patient result group a
//! patient (from PID, or to be found through a device), the devices named in OBX-18 / PRT, and per
//! OBR a DiagnosticReport draft with its Observations. Nothing here touches the database; the
//! ingest step turns the drafts into one transaction Bundle.
//!
//! - `patient.rs`: PID → Patient
//! - `device.rs`: OBX-18 / PRT equipment identifiers and PCD containment OBXs → Device
//! - `report.rs`: OBR → DiagnosticReport
//! - `observation.rs`: OBX → Observation (value types, units, ranges, status, interpretation)
//! - `values.rs`: HL7 number and structured-numeric parsing shared by values and ranges
//!
//! Every problem is an [`Hl7Error`] with its ERR-2 location and a table 0357 code; messages name
//! positions, never the content.

mod device;
mod observation;
mod patient;
mod report;
mod values;

use serde_json::Value;

use super::ack::Hl7Error;
use super::codes::{Category, CodeTable, OBSERVATION_CATEGORY_SYSTEM};
use super::er7::{Message, Segment};
use super::tables;
use crate::config::Hl7Config;
pub use device::DeviceDraft;
pub use patient::PatientDraft;

/// Canonical URLs of the profiles the pipeline claims (see profiles/).
pub const PROFILE_BASE: &str = "https://fhirvault.example/StructureDefinition";

/// What mapping needs besides the message.
pub struct MapContext<'a> {
    pub codes: &'a CodeTable,
    pub config: &'a Hl7Config,
}

/// Every (system, code, display) the mapping writes with a fixed display: the measures' codings,
/// the Observation categories, interpretations, and the Holter study and its section. The search
/// index knows these displays ([`crate::search::known_displays`]).
pub fn displayed_codings(codes: &CodeTable) -> Vec<(String, String, String)> {
    let owned = |(system, code, display): (&str, &str, &str)| {
        (system.to_string(), code.to_string(), display.to_string())
    };
    let measures = codes
        .displayed_codings()
        .into_iter()
        .map(|c| (c.system.to_string(), c.code, c.display));
    let categories = Category::ALL
        .into_iter()
        .map(|c| owned((OBSERVATION_CATEGORY_SYSTEM, c.code(), c.display())));
    let interpretations = tables::interpretation_codings()
        .iter()
        .map(|&(code, display)| owned((tables::INTERPRETATION_SYSTEM, code, display)));
    let reports = report::displayed_codings().into_iter().map(owned);
    measures
        .chain(categories)
        .chain(interpretations)
        .chain(reports)
        .collect()
}

/// A whole message, mapped.
#[derive(Debug, Clone)]
pub struct Mapped {
    pub groups: Vec<PatientGroup>,
}

/// One PATIENT_RESULT group: a patient and the reports about them.
#[derive(Debug, Clone)]
pub struct PatientGroup {
    pub patient: PatientSource,
    pub devices: Vec<DeviceDraft>,
    pub reports: Vec<ReportDraft>,
}

/// Where the group's patient comes from.
#[derive(Debug, Clone)]
pub enum PatientSource {
    /// PID was present: find by identifier, or create.
    Pid(PatientDraft),
    /// No PID (a device hub): the patient the first of these devices is assigned to.
    Device,
}

/// One ORDER_OBSERVATION group.
#[derive(Debug, Clone)]
pub struct ReportDraft {
    /// The DiagnosticReport without subject and result (filled in when references are known).
    pub report: Value,
    pub observations: Vec<ObservationDraft>,
}

#[derive(Debug, Clone)]
pub struct ObservationDraft {
    /// The Observation without subject and device.
    pub resource: Value,
    /// Index into the group's devices of the device that measured it (OBX-18).
    pub device: Option<usize>,
}

/// The ERR-2 location of a segment: `SEG^sequence` (sequence counts segments of that name, from 1).
#[derive(Debug, Clone, Copy)]
pub struct Position<'a> {
    pub name: &'a str,
    pub sequence: usize,
}

impl Position<'_> {
    pub fn field(&self, field: usize) -> String {
        format!("{}^{}^{field}", self.name, self.sequence)
    }

    pub fn component(&self, field: usize, repetition: usize, component: usize) -> String {
        format!(
            "{}^{}^{field}^{}^{component}",
            self.name,
            self.sequence,
            repetition + 1
        )
    }
}

/// Map an ORU^R01 whose MSH was already checked.
pub fn map_message(message: &Message, context: &MapContext) -> Result<Mapped, Vec<Hl7Error>> {
    let mut walker = Walker {
        context,
        groups: Vec::new(),
        errors: Vec::new(),
        counts: Default::default(),
    };
    for segment in message.segments() {
        walker.segment(segment);
    }
    walker.finish()
}

struct Walker<'a> {
    context: &'a MapContext<'a>,
    groups: Vec<GroupBuilder>,
    errors: Vec<Hl7Error>,
    counts: std::collections::HashMap<String, usize>,
}

#[derive(Default)]
struct GroupBuilder {
    patient: Option<PatientDraft>,
    devices: device::Devices,
    reports: Vec<ReportBuilder>,
}

struct ReportBuilder {
    obr: report::ObrFields,
    /// OBX segments of this order, with their positions, mapped when the group is complete (a
    /// waveform needs its sibling attribute OBXs; components need their channel).
    observations: Vec<(Segment, usize)>,
    /// NTE text following each OBX, by index into `observations`.
    notes: Vec<(usize, String)>,
}

impl<'a> Walker<'a> {
    fn segment(&mut self, segment: &Segment) {
        let name = segment.name().to_string();
        let count = self.counts.entry(name.clone()).or_insert(0);
        *count += 1;
        let position = Position {
            name: segment.name(),
            sequence: *count,
        };
        match segment.name() {
            "MSH" | "SFT" | "PD1" | "NK1" | "PV1" | "PV2" | "ORC" | "TQ1" | "TQ2" | "CTD"
            | "FT1" | "CTI" | "SPM" | "DSC" => {}
            "PID" => match patient::map_pid(segment, position, self.context) {
                Ok(draft) => self.groups.push(GroupBuilder {
                    patient: Some(draft),
                    ..GroupBuilder::default()
                }),
                Err(mut errors) => {
                    self.errors.append(&mut errors);
                    self.groups.push(GroupBuilder::default());
                }
            },
            "OBR" => {
                let obr = report::ObrFields::read(segment, position, self.context);
                let obr = match obr {
                    Ok(obr) => obr,
                    Err(mut errors) => {
                        self.errors.append(&mut errors);
                        report::ObrFields::placeholder()
                    }
                };
                if self.groups.is_empty() {
                    // A device hub's message: no PID, the patient comes through the device.
                    self.groups.push(GroupBuilder::default());
                }
                let group = self.groups.last_mut().expect("a group was just ensured");
                group.reports.push(ReportBuilder {
                    obr,
                    observations: Vec::new(),
                    notes: Vec::new(),
                });
            }
            "OBX" => match self.groups.last_mut().and_then(|g| g.reports.last_mut()) {
                Some(report) => report
                    .observations
                    .push((segment.clone(), position.sequence)),
                None => self.errors.push(Hl7Error::new(
                    100,
                    position.field(1),
                    "an OBX segment must follow an OBR segment",
                )),
            },
            "NTE" => {
                if let Some(report) = self.groups.last_mut().and_then(|g| g.reports.last_mut())
                    && let Some(last) = report.observations.len().checked_sub(1)
                {
                    let text: Vec<&str> = segment
                        .repetitions(3)
                        .iter()
                        .map(|r| r.component(1))
                        .collect();
                    report.notes.push((last, text.join("\n")));
                }
            }
            "PRT" => {
                if let Some(group) = self.groups.last_mut()
                    && let Err(error) =
                        group
                            .devices
                            .add_participation(segment, position, self.context)
                {
                    self.errors.push(error);
                }
            }
            other if other.starts_with('Z') => {}
            _ => self.errors.push(Hl7Error::new(
                100,
                position.field(0),
                format!(
                    "segment {} is not part of an ORU^R01 message",
                    segment.name()
                ),
            )),
        }
    }

    fn finish(mut self) -> Result<Mapped, Vec<Hl7Error>> {
        let mut groups = Vec::with_capacity(self.groups.len());
        if self.groups.iter().all(|g| g.reports.is_empty()) && self.errors.is_empty() {
            self.errors.push(Hl7Error::new(
                101,
                "OBR",
                "an ORU^R01 message needs at least one OBR segment",
            ));
        }
        for mut group in std::mem::take(&mut self.groups) {
            let mut reports = Vec::with_capacity(group.reports.len());
            for builder in group.reports {
                match observation::map_order(
                    &builder.obr,
                    &builder.observations,
                    &builder.notes,
                    &mut group.devices,
                    self.context,
                ) {
                    Ok(observations) => reports.push(ReportDraft {
                        report: report::diagnostic_report(&builder.obr),
                        observations,
                    }),
                    Err(mut errors) => self.errors.append(&mut errors),
                }
            }
            let patient = match group.patient {
                Some(draft) => PatientSource::Pid(draft),
                None => {
                    if group.devices.is_empty() && self.errors.is_empty() {
                        self.errors.push(Hl7Error::new(
                            101,
                            "PID",
                            "the message has neither a PID segment nor an equipment identifier (OBX-18 or PRT) to find the patient by",
                        ));
                    }
                    PatientSource::Device
                }
            };
            groups.push(PatientGroup {
                patient,
                devices: group.devices.into_drafts(),
                reports,
            });
        }
        if self.errors.is_empty() {
            Ok(Mapped { groups })
        } else {
            Err(self.errors)
        }
    }
}
