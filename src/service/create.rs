//! create, and conditional create with `If-None-Exist`:
//! <https://hl7.org/fhir/R4/http.html#create>, <https://hl7.org/fhir/R4/http.html#ccreate>.

use serde_json::Value;

use super::conditional::Matches;
use super::{Service, WriteOutcome};
use std::sync::Arc;

use crate::audit::{Event, Outcome, RestInteraction};
use crate::auth::{Caller, Permission};
use crate::error::{ApiError, ApiResult};
use crate::fhir::id::FhirId;
use crate::store::{Conn, versions};

impl Service {
    pub async fn create(
        &self,
        caller: &Arc<Caller>,
        resource_type: &str,
        body: Value,
        if_none_exist: Option<&str>,
    ) -> ApiResult<WriteOutcome> {
        self.require(caller, resource_type, Permission::Create)?;
        self.check_resource(resource_type, &body)?;
        let id = FhirId::generate();
        // Restricted callers go the general way: their write is checked inside its transaction.
        if if_none_exist.is_none() && caller.is_unrestricted() {
            // A plain create reads nothing: prepare it here, off the writer, and let the group
            // committer insert it with everything else that is waiting.
            let open = self.clock.open();
            let (write, stored) =
                self.prepare_version(resource_type, id.as_str(), body, None, "POST", None)?;
            let entities = self.audit_entities([&stored], true);
            let record = self.audit_record(
                caller,
                Event::Rest(RestInteraction::Create),
                Outcome::Success,
                None,
                entities,
            );
            let audits = crate::audit::chain::seal(self, &[record])?;
            self.committer.create(open, vec![write], audits).await?;
            return Ok(WriteOutcome {
                stored,
                created: true,
                changed: true,
            });
        }
        let (this, writer, resource_type, criteria) = (
            self.clone(),
            caller.clone(),
            resource_type.to_string(),
            if_none_exist.map(str::to_string),
        );
        let outcome = self
            .write(move |conn| {
                Box::pin(async move {
                    this.create_in(
                        conn,
                        &writer,
                        &resource_type,
                        id.as_str(),
                        body,
                        criteria.as_deref(),
                    )
                    .await
                })
            })
            .await?;
        Ok(self.present_outcome(caller, outcome))
    }

    /// Create with the given new id inside a transaction. The body was checked by the caller.
    /// With `if_none_exist`, one match returns that resource unchanged (200), several are a 412.
    pub async fn create_in(
        &self,
        conn: &mut Conn,
        caller: &Arc<Caller>,
        resource_type: &str,
        id: &str,
        mut body: Value,
        if_none_exist: Option<&str>,
    ) -> ApiResult<WriteOutcome> {
        self.require(caller, resource_type, Permission::Create)?;
        if let Some(criteria) = if_none_exist {
            match self
                .conditional_matches(conn, caller, Permission::Create, resource_type, criteria)
                .await?
            {
                Matches::None => {}
                Matches::One(existing) => {
                    let stored = versions::read_current(conn, resource_type, &existing)
                        .await?
                        .ok_or(ApiError::Internal)?;
                    let stored = self.open_version(stored)?;
                    self.audit_change_in(conn, caller, RestInteraction::Create, &stored)
                        .await?;
                    return Ok(WriteOutcome {
                        stored,
                        created: false,
                        changed: false,
                    });
                }
                Matches::Many(n) => {
                    return Err(ApiError::MultipleMatches(format!(
                        "If-None-Exist matched {n} or more resources; make the criteria selective enough to match at most one"
                    )));
                }
            }
        }
        self.guard_security_labels(conn, caller, resource_type, id, None, &mut body)
            .await?;
        let stored = self
            .store_version(conn, resource_type, id, body, None, "POST")
            .await?;
        self.guard_after_write(conn, caller, true, resource_type, id)
            .await?;
        self.audit_change_in(conn, caller, RestInteraction::Create, &stored)
            .await?;
        Ok(WriteOutcome {
            stored,
            created: true,
            changed: true,
        })
    }
}
