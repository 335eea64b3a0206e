//! The service's side of the audit trail: the record of an interaction, the entities of the
//! resources it touched, and the record of a change written inside the change's transaction
//! (see [`crate::audit`] for the AuditEvent and its hash chain, and [`crate::api::audit`] for
//! the records of reads, searches and refused requests).

use std::collections::BTreeSet;
use std::sync::Arc;

use super::{Service, VersionedResource};
use crate::audit::{AuditRecord, Entity, Event, Outcome, RestInteraction};
use crate::auth::Caller;
use crate::error::ApiResult;
use crate::fhir::instant::now_micros;
use crate::store::Conn;

impl Service {
    /// A record of `event` by `caller`, now.
    pub fn audit_record(
        &self,
        caller: &Arc<Caller>,
        event: Event,
        outcome: Outcome,
        outcome_desc: Option<String>,
        entities: Vec<Entity>,
    ) -> AuditRecord {
        AuditRecord {
            recorded: now_micros(),
            event,
            outcome,
            outcome_desc,
            caller: Some(caller.clone()),
            address: caller.address.clone(),
            purpose: caller.purpose.iter().cloned().collect(),
            break_glass: caller.break_glass,
            entities,
        }
    }

    /// The entities of `resources`: each resource (at its version, when `each` is set), and every
    /// Patient they concern, once. A search records its patients, not every match.
    pub fn audit_entities<'r>(
        &self,
        resources: impl IntoIterator<Item = &'r VersionedResource>,
        each: bool,
    ) -> Vec<Entity> {
        let mut patients = BTreeSet::new();
        let mut entities = Vec::new();
        for resource in resources {
            self.add_patients(
                &mut patients,
                &resource.resource_type,
                &resource.id,
                resource.resource.as_ref(),
            );
            if each {
                entities.push(Entity::Resource {
                    reference: format!(
                        "{}/{}/_history/{}",
                        resource.resource_type, resource.id, resource.version
                    ),
                });
            }
        }
        let mut all: Vec<Entity> = patients
            .into_iter()
            .map(|id| Entity::Patient { id })
            .collect();
        all.append(&mut entities);
        all
    }

    /// The Patient entities of resources returned as JSON (a Bundle's entries, searchsets
    /// within them included).
    pub fn audit_entities_of_json<'v>(
        &self,
        resources: impl IntoIterator<Item = &'v serde_json::Value>,
    ) -> Vec<Entity> {
        let mut patients = BTreeSet::new();
        let mut pending: Vec<&serde_json::Value> = resources.into_iter().collect();
        while let Some(resource) = pending.pop() {
            let resource_type = resource
                .get("resourceType")
                .and_then(serde_json::Value::as_str)
                .unwrap_or_default();
            if resource_type == "Bundle" {
                pending.extend(
                    resource
                        .get("entry")
                        .and_then(serde_json::Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter_map(|e| e.get("resource")),
                );
                continue;
            }
            let id = resource
                .get("id")
                .and_then(serde_json::Value::as_str)
                .unwrap_or_default();
            self.add_patients(&mut patients, resource_type, id, Some(resource));
        }
        patients
            .into_iter()
            .map(|id| Entity::Patient { id })
            .collect()
    }

    /// The Patients a resource concerns: itself, or those its patient links name.
    pub(crate) fn add_patients(
        &self,
        patients: &mut BTreeSet<String>,
        resource_type: &str,
        id: &str,
        body: Option<&serde_json::Value>,
    ) {
        if resource_type == "Patient" {
            patients.insert(id.to_string());
        } else if let Some(body) = body {
            patients.extend(self.patients_named(resource_type, body));
        }
    }

    /// Record a change inside its transaction: it commits with the change or not at all.
    pub async fn audit_change_in(
        &self,
        conn: &mut Conn,
        caller: &Arc<Caller>,
        interaction: RestInteraction,
        stored: &VersionedResource,
    ) -> ApiResult<()> {
        let entities = self.audit_entities([stored], true);
        let record = self.audit_record(
            caller,
            Event::Rest(interaction),
            Outcome::Success,
            None,
            entities,
        );
        crate::audit::append(self, conn, &[record]).await?;
        Ok(())
    }
}
