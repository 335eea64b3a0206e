//! update (also update-as-create with a client-chosen id) and conditional update:
//! <https://hl7.org/fhir/R4/http.html#update>, <https://hl7.org/fhir/R4/http.html#cond-update>.

use serde_json::Value;

use super::conditional::Matches;
use super::write::check_body_id;
use super::{Service, WriteOutcome};
use std::sync::Arc;

use crate::audit::RestInteraction;
use crate::auth::{Caller, Permission};
use crate::error::{ApiError, ApiResult};
use crate::fhir::id::FhirId;
use crate::store::{Conn, versions};

impl Service {
    pub async fn update(
        &self,
        caller: &Arc<Caller>,
        resource_type: &str,
        id: &str,
        body: Value,
        if_match: Option<i64>,
    ) -> ApiResult<WriteOutcome> {
        self.check_resource(resource_type, &body)?;
        check_body_id(&body, id)?;
        let (this, caller, resource_type, id) = (
            self.clone(),
            caller.clone(),
            resource_type.to_string(),
            id.to_string(),
        );
        let outcome = self
            .write({
                let caller = caller.clone();
                move |conn| {
                    Box::pin(async move {
                        this.update_in(conn, &caller, &resource_type, &id, body, if_match, "PUT")
                            .await
                    })
                }
            })
            .await?;
        Ok(self.present_outcome(&caller, outcome))
    }

    /// Write a new version of `id` (or its first one). `if_match` is the version the client last
    /// saw (`If-Match: W/"n"`); a different current version is a 412.
    // The transaction, the caller and the request's parts: splitting them into a struct would
    // only move the same eight names one level down.
    #[allow(clippy::too_many_arguments)]
    pub async fn update_in(
        &self,
        conn: &mut Conn,
        caller: &Arc<Caller>,
        resource_type: &str,
        id: &str,
        mut body: Value,
        if_match: Option<i64>,
        method: &str,
    ) -> ApiResult<WriteOutcome> {
        let head = versions::head(conn, self.store.backend(), resource_type, id, true).await?;
        self.guard_before_write(conn, caller, Permission::Update, resource_type, id, head)
            .await?;
        if let Some(expected) = if_match {
            match head {
                Some(h) if h.version == expected && !h.deleted => {}
                Some(h) => {
                    return Err(ApiError::PreconditionFailed(format!(
                        "If-Match names version {expected} but the current version of {resource_type}/{id} is {}{}",
                        h.version,
                        if h.deleted { " (deleted)" } else { "" }
                    )));
                }
                None => {
                    return Err(ApiError::PreconditionFailed(format!(
                        "If-Match names version {expected} but {resource_type}/{id} does not exist"
                    )));
                }
            }
        }
        let created = head.is_none_or(|h| h.deleted);
        self.guard_security_labels(conn, caller, resource_type, id, head, &mut body)
            .await?;
        let stored = self
            .store_version(conn, resource_type, id, body, head, method)
            .await?;
        self.guard_after_write(conn, caller, created, resource_type, id)
            .await?;
        self.audit_change_in(conn, caller, RestInteraction::Update, &stored)
            .await?;
        Ok(WriteOutcome {
            stored,
            created,
            changed: true,
        })
    }

    /// PUT `[type]?criteria`: no match creates, one match is updated, several are a 412.
    pub async fn conditional_update(
        &self,
        caller: &Arc<Caller>,
        resource_type: &str,
        criteria: &str,
        body: Value,
    ) -> ApiResult<WriteOutcome> {
        self.check_resource(resource_type, &body)?;
        let (this, writer, resource_type, criteria) = (
            self.clone(),
            caller.clone(),
            resource_type.to_string(),
            criteria.to_string(),
        );
        let outcome = self
            .write(move |conn| {
                Box::pin(async move {
                    this.conditional_update_in(conn, &writer, &resource_type, &criteria, body)
                        .await
                })
            })
            .await?;
        Ok(self.present_outcome(caller, outcome))
    }

    pub async fn conditional_update_in(
        &self,
        conn: &mut Conn,
        caller: &Arc<Caller>,
        resource_type: &str,
        criteria: &str,
        body: Value,
    ) -> ApiResult<WriteOutcome> {
        self.require(caller, resource_type, Permission::Update)?;
        let body_id = body.get("id").and_then(Value::as_str).map(str::to_string);
        match self
            .conditional_matches(conn, caller, Permission::Update, resource_type, criteria)
            .await?
        {
            Matches::None if body_id.is_some() && !caller.is_unrestricted() => {
                Err(ApiError::bad_request(
                    "a conditional update that matches nothing creates the resource with a server-assigned id; leave out Resource.id",
                ))
            }
            Matches::None if !caller.is_unrestricted() => {
                self.require(caller, resource_type, Permission::Create)?;
                let id = FhirId::generate();
                self.create_in(conn, caller, resource_type, id.as_str(), body, None)
                    .await
            }
            Matches::None => {
                let id = match body_id {
                    Some(id) => self.unmatched_body_id(conn, resource_type, &id).await?,
                    None => FhirId::generate(),
                };
                self.update_in(conn, caller, resource_type, id.as_str(), body, None, "PUT")
                    .await
            }
            Matches::One(existing) => {
                if body_id.as_deref().is_some_and(|id| id != existing) {
                    return Err(ApiError::bad_request(
                        "Resource.id: the id in the body differs from the resource the conditional update matched",
                    ));
                }
                self.update_in(conn, caller, resource_type, &existing, body, None, "PUT")
                    .await
            }
            Matches::Many(n) => Err(ApiError::MultipleMatches(format!(
                "the conditional update matched {n} or more resources; it must match at most one"
            ))),
        }
    }

    /// The id a conditional update that matched nothing may create: the body's id, unless a
    /// current resource already has it (it did not match the criteria, so overwriting it would
    /// change a resource the client did not select).
    pub async fn unmatched_body_id(
        &self,
        conn: &mut Conn,
        resource_type: &str,
        id: &str,
    ) -> ApiResult<FhirId> {
        let id = FhirId::parse(id)?;
        match versions::head(
            conn,
            self.store.backend(),
            resource_type,
            id.as_str(),
            false,
        )
        .await?
        {
            Some(head) if !head.deleted => Err(ApiError::Conflict(format!(
                "{resource_type}/{id} exists but does not match the conditional update's criteria"
            ))),
            _ => Ok(id),
        }
    }
}
