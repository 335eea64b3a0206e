//! The `$validate` operation: <https://hl7.org/fhir/R4/resource-operation-validate.html>.
//! Runs the same checks as a write, stores nothing, and always answers with an OperationOutcome.

use serde_json::Value;

use super::Service;
use crate::error::{ApiError, ApiResult};
use crate::fhir::outcome::{Issue, IssueCode, Severity, operation_outcome};

impl Service {
    /// Validate `body` as a `resource_type`; the body may also be a Parameters resource with the
    /// resource in a `resource` parameter, as the operation defines.
    pub fn validate_operation(&self, resource_type: &str, body: Value) -> ApiResult<Value> {
        let resource = if body.get("resourceType").and_then(Value::as_str) == Some("Parameters") && resource_type != "Parameters" {
            body.get("parameter")
                .and_then(Value::as_array)
                .and_then(|params| params.iter().find(|p| p.get("name").and_then(Value::as_str) == Some("resource")))
                .and_then(|p| p.get("resource"))
                .cloned()
                .ok_or_else(|| ApiError::bad_request("the Parameters resource has no `resource` parameter"))?
        } else {
            body
        };
        match self.check_resource(resource_type, &resource) {
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
