//! Bulk export over HTTP (<https://hl7.org/fhir/uv/bulkdata/export.html>): the kick-off
//! (`GET` or `POST` with a Parameters body), the status URL (`GET`, `DELETE`) and the files.
//! Each tells the audit layer what it touched: the kick-off its query and job, a download its
//! file, type and the Patients the file concerns.

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::AppState;
use super::audit::AuditFacts;
use super::caller::Authenticated;
use super::negotiate::{Prefer, query_pairs, read_json};
use super::respond;
use crate::audit::Entity;
use crate::error::{ApiError, ApiResult};
use crate::fhir::outcome::{Issue, IssueCode, operation_outcome, success_outcome};
use crate::service::export::{ExportLevel, ExportStatus};

/// How long a client should wait before polling a running job again (seconds).
const RETRY_AFTER_SECONDS: u32 = 2;

/// `[base]/$export` or `[base]/Patient/$export`.
pub async fn kickoff(
    level: ExportLevel,
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    prefer: Prefer,
    request: Request,
) -> ApiResult<Response> {
    if !prefer.respond_async {
        return Err(ApiError::bad_request(
            "$export runs asynchronously: send the header `Prefer: respond-async`",
        ));
    }
    let service = &state.service;
    let path = request.uri().path().trim_start_matches("/fhir").to_string();
    let query = request.uri().query().map(str::to_string);
    let mut pairs = query_pairs(query.as_deref())?;
    if request.method() == axum::http::Method::POST {
        let body = read_json(request.into_body(), service.config.max_body_bytes).await?;
        pairs.extend(parameters(&body)?);
    }
    let url = match query.filter(|q| !q.is_empty()) {
        Some(query) => format!("{}{path}?{query}", service.config.base_url),
        None => format!("{}{path}", service.config.base_url),
    };
    let id = service
        .export_kickoff(&caller, level, &pairs, &url, prefer.strict)
        .await?;
    let mut response = respond::json(
        StatusCode::ACCEPTED,
        &success_outcome("the export was started; poll the URL in Content-Location"),
    );
    if let Ok(location) = HeaderValue::from_str(&service.export_status_url(&id)) {
        response
            .headers_mut()
            .insert(header::CONTENT_LOCATION, location);
    }
    let facts = AuditFacts {
        entities: vec![Entity::ExportJob { id }],
        query: serde_urlencoded::to_string(&pairs).ok(),
        ..AuditFacts::default()
    };
    Ok(facts.attach(response))
}

/// The kick-off parameters of a `POST` body: a Parameters resource whose parameters carry
/// string-like values (`valueString`, `valueInstant`, …).
fn parameters(body: &Value) -> ApiResult<Vec<(String, String)>> {
    if body.get("resourceType").and_then(Value::as_str) != Some("Parameters") {
        return Err(ApiError::bad_request(
            "a POST to $export takes a Parameters resource",
        ));
    }
    let mut pairs = Vec::new();
    for parameter in body
        .get("parameter")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = parameter
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                ApiError::bad_request("every parameter of the Parameters needs a name")
            })?;
        let value = parameter
            .as_object()
            .into_iter()
            .flatten()
            .find_map(|(key, value)| key.starts_with("value").then(|| value.as_str()).flatten())
            .ok_or_else(|| {
                ApiError::NotSupported(format!(
                    "$export: parameter `{}` needs a string value (valueString, valueInstant, …)",
                    crate::fhir::id::truncate(name)
                ))
            })?;
        pairs.push((name.to_string(), value.to_string()));
    }
    Ok(pairs)
}

/// `Group/[id]/$export`: this server keeps no patient groups to export by.
pub async fn group_kickoff() -> ApiError {
    ApiError::NotSupported("Group/[id]/$export is not supported: this server does not export by Group; use [base]/Patient/$export (all patients this token may see) or [base]/$export".into())
}

/// `GET` on the status URL: 202 with the progress while running, 200 with the manifest when
/// done, 500 with an OperationOutcome when the job failed.
pub async fn status(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let facts = AuditFacts {
        entities: vec![Entity::ExportJob { id: id.clone() }],
        ..AuditFacts::default()
    };
    let response = match state.service.export_status(&caller, &id).await? {
        ExportStatus::Running { progress } => {
            let mut response = StatusCode::ACCEPTED.into_response();
            let headers = response.headers_mut();
            headers.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
            if let Ok(progress) = HeaderValue::from_str(&progress) {
                headers.insert("x-progress", progress);
            }
            response
        }
        ExportStatus::Completed { manifest } => {
            let mut response = respond::json(StatusCode::OK, &manifest);
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response
                .headers_mut()
                .insert(header::EXPIRES, HeaderValue::from_static("0"));
            response
        }
        ExportStatus::Failed { error } => {
            let outcome = operation_outcome(&[Issue::error(IssueCode::Exception, error.clone())]);
            let mut response = respond::json(StatusCode::INTERNAL_SERVER_ERROR, &outcome);
            response
                .extensions_mut()
                .insert(crate::error::ErrorSummary(error));
            response
        }
    };
    Ok(facts.attach(response))
}

/// `DELETE` on the status URL: cancel the job (or remove a finished one) and its files.
pub async fn cancel(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    state.service.export_cancel(&caller, &id).await?;
    let facts = AuditFacts {
        entities: vec![Entity::ExportJob { id }],
        ..AuditFacts::default()
    };
    Ok(facts.attach(respond::json(
        StatusCode::ACCEPTED,
        &success_outcome("the export was cancelled and its files deleted"),
    )))
}

/// `GET` on a file URL: the NDJSON, streamed chunk by chunk.
pub async fn download(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    Path((id, file)): Path<(String, String)>,
) -> ApiResult<Response> {
    let file_no = file
        .parse::<i64>()
        .map_err(|_| ApiError::NotFound("no such file in this export".into()))?;
    let download = state.service.export_download(&caller, &id, file_no).await?;
    let mut entities = vec![
        Entity::ExportJob { id },
        Entity::ExportFile {
            url: download.url,
            resource_type: download.file.resource_type.clone(),
            count: download.file.count,
        },
    ];
    entities.extend(
        download
            .patients
            .into_iter()
            .map(|id| Entity::Patient { id }),
    );
    let mut response = Response::new(Body::from_stream(download.body));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(NDJSON));
    Ok(AuditFacts {
        entities,
        ..AuditFacts::default()
    }
    .attach(response))
}

const NDJSON: &str = "application/fhir+ndjson";

/// Middleware of the file routes: they produce NDJSON, so that is what `Accept` may ask for.
pub async fn require_ndjson_accept(request: Request, next: Next) -> Response {
    if let Some(accept) = request
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
    {
        let acceptable = super::negotiate::accepts_any(
            accept,
            &["", "*/*", "application/*", NDJSON, "application/ndjson"],
        );
        if !acceptable {
            return ApiError::NotAcceptable(
                "export files are NDJSON; accept application/fhir+ndjson".into(),
            )
            .into_response();
        }
    }
    next.run(request).await
}
