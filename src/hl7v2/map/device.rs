//! Devices of a message (IHE PCD-01): the equipment identifiers of OBX-18 and PRT, and the
//! containment OBXs (MDS, VMD and channel levels of OBX-4) that describe a device rather than a
//! measurement.

use serde_json::{Map, Value, json};

use super::{MapContext, PROFILE_BASE, Position};
use crate::hl7v2::ack::Hl7Error;
use crate::hl7v2::codes::CodeTable;
use crate::hl7v2::er7::{Repetition, Segment};

/// Identifier system of IEEE EUI-64 equipment identifiers, as IHE PCD uses it in OBX-18
/// (`…^EUI-64^1.2.840.10004.1.1.1.0.0.1.0.0.1.2680^ISO`).
pub const EUI64_SYSTEM: &str = "urn:oid:1.2.840.10004.1.1.1.0.0.1.0.0.1.2680";

/// A Device to find by identifier, or create.
#[derive(Debug, Clone)]
pub struct DeviceDraft {
    /// The Device without `patient` (filled in when the patient is known).
    pub resource: Value,
    pub system: String,
    pub value: String,
}

/// The devices met so far in one patient group.
#[derive(Debug, Default)]
pub struct Devices {
    drafts: Vec<DeviceDraft>,
}

impl Devices {
    pub fn is_empty(&self) -> bool {
        self.drafts.is_empty()
    }

    pub fn into_drafts(self) -> Vec<DeviceDraft> {
        self.drafts
    }

    /// The index of the device an OBX-18 names (the first repetition that maps), adding it when
    /// new; `None` when OBX-18 is empty.
    pub fn named_in_obx18(
        &mut self,
        obx: &Segment,
        at: Position,
        context: &MapContext,
    ) -> Result<Option<usize>, Hl7Error> {
        for (index, repetition) in obx.repetitions(18).iter().enumerate() {
            match equipment_identifier(repetition, context) {
                Some(Ok((system, value))) => return Ok(Some(self.index_of(system, value))),
                Some(Err(message)) => {
                    return Err(Hl7Error::new(103, at.component(18, index, 4), message));
                }
                None => {}
            }
        }
        Ok(None)
    }

    /// A PRT segment naming equipment (PRT-4 `EQUIP`, identifier in PRT-10).
    pub fn add_participation(
        &mut self,
        prt: &Segment,
        at: Position,
        context: &MapContext,
    ) -> Result<(), Hl7Error> {
        if prt.get(4, 0, 1, 1) != "EQUIP" {
            return Ok(());
        }
        for (index, repetition) in prt.repetitions(10).iter().enumerate() {
            match equipment_identifier(repetition, context) {
                Some(Ok((system, value))) => {
                    self.index_of(system, value);
                    return Ok(());
                }
                Some(Err(message)) => {
                    return Err(Hl7Error::new(103, at.component(10, index, 4), message));
                }
                None => {}
            }
        }
        Ok(())
    }

    /// Record what an MDS-level containment OBX says about its device: its type (OBX-3).
    pub fn describe(&mut self, index: usize, obx: &Segment) {
        let Some(draft) = self.drafts.get_mut(index) else {
            return;
        };
        let (code, text, system_name) = (
            obx.get(3, 0, 1, 1),
            obx.get(3, 0, 2, 1),
            obx.get(3, 0, 3, 1),
        );
        let (Some(system), false) = (CodeTable::system_uri(system_name), code.is_empty()) else {
            return;
        };
        let mut coding = Map::new();
        coding.insert("system".into(), json!(system));
        coding.insert("code".into(), json!(code));
        if !text.is_empty() {
            coding.insert("display".into(), json!(text));
        }
        if let Some(device) = draft.resource.as_object_mut() {
            device.insert("type".into(), json!({"coding": [Value::Object(coding)]}));
        }
    }

    fn index_of(&mut self, system: String, value: String) -> usize {
        if let Some(found) = self
            .drafts
            .iter()
            .position(|d| d.system == system && d.value == value)
        {
            return found;
        }
        let resource = json!({
            "resourceType": "Device",
            "meta": {"profile": [format!("{PROFILE_BASE}/holter-device")]},
            "identifier": [{"system": system, "value": value}],
        });
        self.drafts.push(DeviceDraft {
            resource,
            system,
            value,
        });
        self.drafts.len() - 1
    }
}

/// An EI (entity id ^ namespace ^ universal id ^ universal id type) as (system, value).
fn equipment_identifier(
    ei: &Repetition,
    context: &MapContext,
) -> Option<Result<(String, String), String>> {
    let (entity, namespace, universal, universal_type) = (
        ei.component(1),
        ei.component(2),
        ei.component(3),
        ei.component(4),
    );
    if entity.is_empty() {
        return None;
    }
    if universal_type.eq_ignore_ascii_case("EUI-64") || namespace.eq_ignore_ascii_case("EUI-64") {
        if entity.len() != 16 || !entity.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Some(Err(
                "an EUI-64 equipment identifier must be 16 hexadecimal digits".into(),
            ));
        }
        return Some(Ok((EUI64_SYSTEM.to_string(), entity.to_ascii_uppercase())));
    }
    if universal_type.eq_ignore_ascii_case("ISO") && !universal.is_empty() {
        return Some(Ok((format!("urn:oid:{universal}"), entity.to_string())));
    }
    match context.config.identifier_systems.get(namespace) {
        Some(system) => Some(Ok((system.clone(), entity.to_string()))),
        None => Some(Err(
            "the equipment identifier names neither EUI-64, an ISO OID nor a configured namespace (hl7v2.identifier_systems)".into(),
        )),
    }
}

/// The containment level of an OBX-4 sub-id in the PCD `MDS.VMD.CHANNEL.METRIC` form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Mds,
    Vmd,
    Channel,
    /// A measurement (also any OBX-4 not in the four-part form).
    Metric,
}

/// Parse OBX-4: the level, and the channel prefix `MDS.VMD.CHANNEL` for grouping.
pub fn containment(sub_id: &str) -> (Level, Option<String>) {
    let parts: Vec<&str> = sub_id.split('.').collect();
    if parts.len() != 4
        || !parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    {
        return (Level::Metric, None);
    }
    let zero = |p: &str| p.bytes().all(|b| b == b'0');
    let level = if zero(parts[1]) && zero(parts[2]) && zero(parts[3]) {
        Level::Mds
    } else if zero(parts[2]) && zero(parts[3]) {
        Level::Vmd
    } else if zero(parts[3]) {
        Level::Channel
    } else {
        Level::Metric
    };
    (level, Some(parts[..3].join(".")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containment_levels() {
        assert_eq!(containment("1.0.0.0"), (Level::Mds, Some("1.0.0".into())));
        assert_eq!(containment("1.1.0.0"), (Level::Vmd, Some("1.1.0".into())));
        assert_eq!(
            containment("1.1.2.0"),
            (Level::Channel, Some("1.1.2".into()))
        );
        assert_eq!(
            containment("1.1.2.3"),
            (Level::Metric, Some("1.1.2".into()))
        );
        assert_eq!(containment("1"), (Level::Metric, None));
        assert_eq!(containment(""), (Level::Metric, None));
        assert_eq!(containment("1.a.0.0"), (Level::Metric, None));
    }
}
