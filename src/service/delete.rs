//! delete and conditional delete: <https://hl7.org/fhir/R4/http.html#delete>,
//! <https://hl7.org/fhir/R4/http.html#3.1.0.7.1>.
//!
//! A delete writes a delete marker as a new version; history keeps every earlier version.

use super::conditional::Matches;
use super::{Service, VersionedResource, WriteOutcome};
use std::sync::Arc;

use crate::audit::{Entity, Event, Outcome, RestInteraction};
use crate::auth::{Caller, Permission};
use crate::error::{ApiError, ApiResult};
use crate::store::{Conn, versions};

impl Service {
    pub async fn delete(
        &self,
        caller: &Arc<Caller>,
        resource_type: &str,
        id: &str,
    ) -> ApiResult<WriteOutcome> {
        let (this, caller, resource_type, id) = (
            self.clone(),
            caller.clone(),
            resource_type.to_string(),
            id.to_string(),
        );
        self.write(move |conn| {
            Box::pin(async move { this.delete_in(conn, &caller, &resource_type, &id).await })
        })
        .await
    }

    /// Deleting what does not exist or is already deleted succeeds without a new version (the
    /// spec lets servers answer 200/204 either way, which keeps retries idempotent).
    pub async fn delete_in(
        &self,
        conn: &mut Conn,
        caller: &Arc<Caller>,
        resource_type: &str,
        id: &str,
    ) -> ApiResult<WriteOutcome> {
        self.check_writable(resource_type, id)?;
        let head = versions::head(conn, self.store.backend(), resource_type, id, true).await?;
        self.guard_before_write(conn, caller, Permission::Delete, resource_type, id, head)
            .await?;
        match head {
            Some(head) if !head.deleted => {
                // The patient a deleted resource concerned is known from its last content only.
                let last = versions::read_current(conn, resource_type, id)
                    .await?
                    .ok_or(ApiError::Internal)?;
                let last = self.open_version(last)?;
                let stored = self.store_delete(conn, resource_type, id, head).await?;
                self.audit_delete_in(conn, caller, &last, &stored).await?;
                Ok(WriteOutcome {
                    stored,
                    created: false,
                    changed: true,
                })
            }
            _ => {
                let stored = unchanged(resource_type, id, head);
                self.audit_delete_in(conn, caller, &stored, &stored).await?;
                Ok(WriteOutcome {
                    stored,
                    created: false,
                    changed: false,
                })
            }
        }
    }

    /// DELETE `[type]?criteria`: deletes the one match; several matches are a 412 (this server
    /// does not delete multiple resources in one request).
    pub async fn conditional_delete(
        &self,
        caller: &Arc<Caller>,
        resource_type: &str,
        criteria: &str,
    ) -> ApiResult<WriteOutcome> {
        let (this, caller, resource_type, criteria) = (
            self.clone(),
            caller.clone(),
            resource_type.to_string(),
            criteria.to_string(),
        );
        self.write(move |conn| {
            Box::pin(async move {
                this.conditional_delete_in(conn, &caller, &resource_type, &criteria)
                    .await
            })
        })
        .await
    }

    pub async fn conditional_delete_in(
        &self,
        conn: &mut Conn,
        caller: &Arc<Caller>,
        resource_type: &str,
        criteria: &str,
    ) -> ApiResult<WriteOutcome> {
        self.require(caller, resource_type, Permission::Delete)?;
        match self
            .conditional_matches(conn, caller, Permission::Delete, resource_type, criteria)
            .await?
        {
            Matches::None => {
                let record = self.audit_record(
                    caller,
                    Event::Rest(RestInteraction::Delete),
                    Outcome::Success,
                    None,
                    Vec::new(),
                );
                crate::audit::append(self, conn, &[record]).await?;
                Ok(WriteOutcome {
                    stored: unchanged(resource_type, "", None),
                    created: false,
                    changed: false,
                })
            }
            Matches::One(id) => self.delete_in(conn, caller, resource_type, &id).await,
            Matches::Many(n) => Err(ApiError::MultipleMatches(format!(
                "the conditional delete matched {n} or more resources; this server deletes at most one per request"
            ))),
        }
    }
}

impl Service {
    /// A delete's record: the delete marker, and the patients of the content it removed.
    async fn audit_delete_in(
        &self,
        conn: &mut Conn,
        caller: &Arc<Caller>,
        last: &VersionedResource,
        marker: &VersionedResource,
    ) -> ApiResult<()> {
        let mut entities = self.audit_entities([last], false);
        match marker.version {
            _ if marker.id.is_empty() => {}
            0 => entities.push(Entity::Resource {
                reference: format!("{}/{}", marker.resource_type, marker.id),
            }),
            version => entities.push(Entity::Resource {
                reference: format!("{}/{}/_history/{version}", marker.resource_type, marker.id),
            }),
        }
        let record = self.audit_record(
            caller,
            Event::Rest(RestInteraction::Delete),
            Outcome::Success,
            None,
            entities,
        );
        crate::audit::append(self, conn, &[record]).await?;
        Ok(())
    }
}

fn unchanged(resource_type: &str, id: &str, head: Option<versions::Head>) -> VersionedResource {
    VersionedResource {
        resource_type: resource_type.to_string(),
        id: id.to_string(),
        version: head.map_or(0, |h| h.version),
        last_updated: head.map_or(0, |h| h.last_updated),
        resource: None,
        method: "DELETE".into(),
    }
}
