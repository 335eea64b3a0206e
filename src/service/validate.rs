//! The `$validate` operation: <https://hl7.org/fhir/R4/resource-operation-validate.html>.
//! Runs the same checks as a write, stores nothing, and always answers with an OperationOutcome.
//! `profile` (a query parameter, or a parameter of a Parameters body) names a profile to check
//! the resource against as well; it must be one this server knows.

use std::sync::Arc;

use serde_json::Value;

use super::Service;
use crate::auth::{Caller, Permission};
use crate::error::{ApiError, ApiResult};
use crate::fhir::outcome::{Issue, IssueCode, Severity, operation_outcome};

impl Service {
    /// Validate `body` as a `resource_type`; the body may also be a Parameters resource with the
    /// resource in a `resource` parameter (and a profile in `profile`), as the operation defines.
    /// `profile` from the query string wins over the body's.
    /// Validating is a dry run of a write: the caller must be allowed to create or update the type.
    pub fn validate_operation(
        &self,
        caller: &Arc<Caller>,
        resource_type: &str,
        body: Value,
        profile: Option<&str>,
    ) -> ApiResult<Value> {
        if let Err(refused) = self.require(caller, resource_type, Permission::Create) {
            self.require(caller, resource_type, Permission::Update)
                .map_err(|_| refused)?;
        }
        let is_parameters = body.get("resourceType").and_then(Value::as_str) == Some("Parameters")
            && resource_type != "Parameters";
        let (resource, body_profile) = if is_parameters {
            let resource = parameter(&body, "resource")
                .and_then(|p| p.get("resource"))
                .cloned()
                .ok_or_else(|| {
                    ApiError::bad_request("the Parameters resource has no `resource` parameter")
                })?;
            let profile = parameter(&body, "profile").and_then(|p| {
                ["valueUri", "valueCanonical", "valueString"]
                    .iter()
                    .find_map(|key| p.get(*key)?.as_str().map(str::to_owned))
            });
            (resource, profile)
        } else {
            (body, None)
        };
        let profile = profile.or(body_profile.as_deref());
        if let Some(url) = profile
            && self.validator.profile_type(url).is_none()
        {
            return Err(ApiError::NotSupported(format!(
                "profile: {} is not a profile this server knows; the CapabilityStatement lists them under supportedProfile",
                url.chars().take(200).collect::<String>()
            )));
        }
        match self.check_resource_against(resource_type, &resource, profile) {
            Ok(()) => Ok(operation_outcome(&[Issue {
                severity: Severity::Information,
                code: IssueCode::Informational,
                diagnostics: "the resource is valid".into(),
                expression: None,
            }])),
            // The validation ran: 200 with the problems found (the operation's own result).
            Err(ApiError::Invalid(issues)) => Ok(operation_outcome(&issues)),
            Err(other) => Err(other),
        }
    }
}

/// The first parameter called `name` of a Parameters resource.
fn parameter<'b>(body: &'b Value, name: &str) -> Option<&'b Value> {
    body.get("parameter")?
        .as_array()?
        .iter()
        .find(|p| p.get("name").and_then(Value::as_str) == Some(name))
}
