//! Responses with the FHIR headers: `Content-Type`, `ETag`, `Last-Modified`, `Location`.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::negotiate::ReturnPreference;
use crate::fhir::FHIR_JSON_UTF8;
use crate::fhir::instant::format_http_date;
use crate::fhir::outcome::success_outcome;
use crate::service::{VersionedResource, WriteOutcome};

pub fn json(status: StatusCode, body: &Value) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut response = (status, bytes).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(FHIR_JSON_UTF8),
    );
    response
}

fn version_headers(headers: &mut HeaderMap, stored: &VersionedResource) {
    if let Ok(etag) = HeaderValue::from_str(&stored.etag()) {
        headers.insert(header::ETAG, etag);
    }
    if let Ok(modified) = HeaderValue::from_str(&format_http_date(stored.last_updated)) {
        headers.insert(header::LAST_MODIFIED, modified);
    }
}

/// A read or vread.
pub fn resource(stored: &VersionedResource) -> Response {
    let body = stored.resource.clone().unwrap_or(Value::Null);
    let mut response = json(StatusCode::OK, &body);
    version_headers(response.headers_mut(), stored);
    response
}

/// `304 Not Modified` for a conditional read whose version the client already has.
pub fn not_modified(stored: &VersionedResource) -> Response {
    let mut response = StatusCode::NOT_MODIFIED.into_response();
    version_headers(response.headers_mut(), stored);
    response
}

/// The answer to a create, update or patch, shaped by `Prefer: return=`.
pub fn written(outcome: &WriteOutcome, base_url: &str, preference: ReturnPreference) -> Response {
    let stored = &outcome.stored;
    let status = if outcome.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let mut response = match preference {
        ReturnPreference::Representation => {
            json(status, stored.resource.as_ref().unwrap_or(&Value::Null))
        }
        ReturnPreference::Minimal => status.into_response(),
        ReturnPreference::OperationOutcome => {
            let text = match (outcome.created, outcome.changed) {
                (true, _) => format!(
                    "created {}/{} version {}",
                    stored.resource_type, stored.id, stored.version
                ),
                (false, true) => format!(
                    "updated {}/{} to version {}",
                    stored.resource_type, stored.id, stored.version
                ),
                (false, false) => format!(
                    "{}/{} already matched; nothing was written",
                    stored.resource_type, stored.id
                ),
            };
            json(status, &success_outcome(text))
        }
    };
    version_headers(response.headers_mut(), stored);
    let location = format!(
        "{base_url}/{}/{}/_history/{}",
        stored.resource_type, stored.id, stored.version
    );
    if let Ok(location) = HeaderValue::from_str(&location) {
        response
            .headers_mut()
            .insert(header::LOCATION, location.clone());
        if outcome.created {
            response
                .headers_mut()
                .insert(header::CONTENT_LOCATION, location);
        }
    }
    response
}

/// The answer to a delete: 204, or 200 with an OperationOutcome when asked for one.
pub fn deleted(outcome: &WriteOutcome, preference: ReturnPreference) -> Response {
    let stored = &outcome.stored;
    let mut response = match preference {
        ReturnPreference::OperationOutcome => {
            let text = if outcome.changed {
                format!("deleted {}/{}", stored.resource_type, stored.id)
            } else {
                "nothing to delete".to_string()
            };
            json(StatusCode::OK, &success_outcome(text))
        }
        _ => StatusCode::NO_CONTENT.into_response(),
    };
    if outcome.changed
        && let Ok(etag) = HeaderValue::from_str(&stored.etag())
    {
        response.headers_mut().insert(header::ETAG, etag);
    }
    response
}
