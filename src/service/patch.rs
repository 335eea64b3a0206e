//! patch with JSON Patch (RFC 6902): <https://hl7.org/fhir/R4/http.html#patch>.
//!
//! The patch applies to the current version; the result goes through the same checks and the same
//! write path as an update, so a patch cannot produce what an update could not.

use serde_json::Value;

use super::write::check_body_id;
use super::{Service, WriteOutcome};
use std::sync::Arc;

use crate::audit::RestInteraction;
use crate::auth::{Caller, Permission};
use crate::error::{ApiError, ApiResult};
use crate::store::{Conn, versions};

impl Service {
    pub async fn patch(
        &self,
        caller: &Arc<Caller>,
        resource_type: &str,
        id: &str,
        patch: Value,
        if_match: Option<i64>,
    ) -> ApiResult<WriteOutcome> {
        self.guard_patch(caller)?;
        let operations = parse_patch(patch)?;
        let (this, caller, resource_type, id) = (
            self.clone(),
            caller.clone(),
            resource_type.to_string(),
            id.to_string(),
        );
        self.write(move |conn| {
            Box::pin(async move {
                this.patch_in(conn, &caller, &resource_type, &id, operations, if_match)
                    .await
            })
        })
        .await
    }

    pub async fn patch_in(
        &self,
        conn: &mut Conn,
        caller: &Arc<Caller>,
        resource_type: &str,
        id: &str,
        operations: json_patch::Patch,
        if_match: Option<i64>,
    ) -> ApiResult<WriteOutcome> {
        self.check_writable(resource_type, id)?;
        self.guard_patch(caller)?;
        let head = versions::head(conn, self.store.backend(), resource_type, id, true)
            .await?
            .ok_or_else(|| super::read::not_found(resource_type, id))?;
        if head.deleted && !caller.is_unrestricted() {
            // Whether it ever existed is not for a restricted caller to learn.
            return Err(super::read::not_found(resource_type, id));
        }
        self.guard_before_write(
            conn,
            caller,
            Permission::Update,
            resource_type,
            id,
            Some(head),
        )
        .await?;
        if head.deleted {
            return Err(ApiError::Gone(format!(
                "{resource_type}/{id} was deleted; it cannot be patched"
            )));
        }
        if let Some(expected) = if_match.filter(|v| *v != head.version) {
            return Err(ApiError::PreconditionFailed(format!(
                "If-Match names version {expected} but the current version of {resource_type}/{id} is {}",
                head.version
            )));
        }
        let stored = versions::read_current(conn, resource_type, id)
            .await?
            .ok_or(ApiError::Internal)?;
        let mut resource = self
            .open_version(stored)?
            .resource
            .ok_or(ApiError::Internal)?;
        json_patch::patch(&mut resource, &operations).map_err(|error| {
            // The error names the failing operation and path, never a value.
            ApiError::Unprocessable(vec![crate::fhir::outcome::Issue::error(
                crate::fhir::outcome::IssueCode::Processing,
                format!("the JSON Patch could not be applied: {error}"),
            )])
        })?;
        self.check_resource(resource_type, &resource)?;
        check_body_id(&resource, id)?;
        self.guard_security_labels(conn, caller, resource_type, id, Some(head), &mut resource)
            .await?;
        let stored = self
            .store_version(conn, resource_type, id, resource, Some(head), "PATCH")
            .await?;
        self.guard_after_write(conn, caller, false, resource_type, id)
            .await?;
        self.audit_change_in(conn, caller, RestInteraction::Patch, &stored)
            .await?;
        Ok(WriteOutcome {
            stored,
            created: false,
            changed: true,
        })
    }
}

/// A JSON Patch document: an array of operations.
pub fn parse_patch(patch: Value) -> ApiResult<json_patch::Patch> {
    if !patch.is_array() {
        return Err(ApiError::bad_request(
            "a JSON Patch body must be an array of operations (RFC 6902)",
        ));
    }
    // serde's message may quote the offending value; say only what the rule is.
    serde_json::from_value(patch).map_err(|_| {
        ApiError::bad_request("the JSON Patch is malformed: each operation needs `op` (add, remove, replace, move, copy, test) and `path`, and `value` or `from` as the operation requires")
    })
}
