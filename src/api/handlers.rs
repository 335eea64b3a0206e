//! One handler per interaction: extract, call the service, render. Anything longer belongs in
//! the service.

use axum::extract::{RawQuery, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use std::sync::Arc;

use super::AppState;
use super::audit::AuditFacts;
use super::caller::Authenticated;
use super::negotiate::{FhirJson, JsonPatchBody, Prefer, query_pairs, read_form};
use super::paths::{CompartmentPath, InstancePath, TypePath, VersionPath};
use super::respond;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::fhir::bundle::{self, Link};
use crate::fhir::instant::parse_http_date;
use crate::service::transaction::parse_etag;

pub async fn health(State(state): State<AppState>) -> Response {
    match state.service.store.ping().await {
        Ok(()) => (StatusCode::OK, axum::Json(json!({"status": "ok"}))).into_response(),
        Err(error) => ApiError::from(error).into_response(),
    }
}

pub async fn metadata(State(state): State<AppState>) -> Response {
    respond::json(StatusCode::OK, &state.capability)
}

pub async fn read(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    path: InstancePath,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let stored = state
        .service
        .read(&caller, &path.resource_type, path.id.as_str())
        .await?;
    let etag_matches = header_text(&headers, header::IF_NONE_MATCH).is_some_and(|tags| {
        tags.split(',')
            .any(|tag| tag.trim() == "*" || parse_etag(tag) == Some(stored.version))
    });
    let unmodified = header_text(&headers, header::IF_MODIFIED_SINCE)
        .and_then(|since| parse_http_date(&since))
        .is_some_and(|since| stored.last_updated / 1_000_000 <= since / 1_000_000);
    let facts = AuditFacts {
        entities: state.service.audit_entities([&stored], true),
        ..AuditFacts::default()
    };
    if etag_matches || (unmodified && !headers.contains_key(header::IF_NONE_MATCH)) {
        return Ok(facts.attach(respond::not_modified(&stored)));
    }
    Ok(facts.attach(respond::resource(&stored)))
}

pub async fn vread(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    path: VersionPath,
) -> ApiResult<Response> {
    let stored = state
        .service
        .vread(&caller, &path.resource_type, path.id.as_str(), path.version)
        .await?;
    let facts = AuditFacts {
        entities: state.service.audit_entities([&stored], true),
        ..AuditFacts::default()
    };
    Ok(facts.attach(respond::resource(&stored)))
}

pub async fn create(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    TypePath(resource_type): TypePath,
    prefer: Prefer,
    headers: HeaderMap,
    FhirJson(body): FhirJson,
) -> ApiResult<Response> {
    let if_none_exist = header_text(&headers, "if-none-exist");
    let outcome = state
        .service
        .create(&caller, &resource_type, body, if_none_exist.as_deref())
        .await?;
    Ok(AuditFacts::recorded().attach(respond::written(
        &outcome,
        &state.service.config.base_url,
        prefer.return_preference,
    )))
}

pub async fn update(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    path: InstancePath,
    prefer: Prefer,
    headers: HeaderMap,
    FhirJson(body): FhirJson,
) -> ApiResult<Response> {
    let if_match = if_match(&headers)?;
    let outcome = state
        .service
        .update(
            &caller,
            &path.resource_type,
            path.id.as_str(),
            body,
            if_match,
        )
        .await?;
    Ok(AuditFacts::recorded().attach(respond::written(
        &outcome,
        &state.service.config.base_url,
        prefer.return_preference,
    )))
}

pub async fn conditional_update(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    TypePath(resource_type): TypePath,
    RawQuery(query): RawQuery,
    prefer: Prefer,
    FhirJson(body): FhirJson,
) -> ApiResult<Response> {
    let criteria = query.ok_or_else(|| {
        ApiError::MethodNotAllowed(
            "PUT needs an id in the path, or search criteria for a conditional update".into(),
        )
    })?;
    let outcome = state
        .service
        .conditional_update(&caller, &resource_type, &criteria, body)
        .await?;
    Ok(AuditFacts::recorded().attach(respond::written(
        &outcome,
        &state.service.config.base_url,
        prefer.return_preference,
    )))
}

pub async fn patch(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    path: InstancePath,
    prefer: Prefer,
    headers: HeaderMap,
    JsonPatchBody(body): JsonPatchBody,
) -> ApiResult<Response> {
    let if_match = if_match(&headers)?;
    let outcome = state
        .service
        .patch(
            &caller,
            &path.resource_type,
            path.id.as_str(),
            body,
            if_match,
        )
        .await?;
    Ok(AuditFacts::recorded().attach(respond::written(
        &outcome,
        &state.service.config.base_url,
        prefer.return_preference,
    )))
}

pub async fn delete(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    path: InstancePath,
    prefer: Prefer,
) -> ApiResult<Response> {
    let outcome = state
        .service
        .delete(&caller, &path.resource_type, path.id.as_str())
        .await?;
    Ok(AuditFacts::recorded().attach(respond::deleted(&outcome, prefer.return_preference)))
}

pub async fn conditional_delete(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    TypePath(resource_type): TypePath,
    RawQuery(query): RawQuery,
    prefer: Prefer,
) -> ApiResult<Response> {
    let criteria = query.ok_or_else(|| {
        ApiError::MethodNotAllowed(
            "DELETE needs an id in the path, or search criteria for a conditional delete".into(),
        )
    })?;
    let outcome = state
        .service
        .conditional_delete(&caller, &resource_type, &criteria)
        .await?;
    Ok(AuditFacts::recorded().attach(respond::deleted(&outcome, prefer.return_preference)))
}

pub async fn search_get(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    TypePath(resource_type): TypePath,
    RawQuery(query): RawQuery,
    prefer: Prefer,
) -> ApiResult<Response> {
    let pairs = query_pairs(query.as_deref())?;
    search(&state, &caller, &resource_type, pairs, prefer).await
}

/// `POST [type]/_search`: form parameters, plus any in the URL, answer exactly like GET.
pub async fn search_post(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    TypePath(resource_type): TypePath,
    prefer: Prefer,
    request: Request,
) -> ApiResult<Response> {
    let mut pairs = query_pairs(request.uri().query())?;
    pairs.extend(read_form(request, state.service.config.max_body_bytes).await?);
    search(&state, &caller, &resource_type, pairs, prefer).await
}

/// `GET [base]?…`: a search across resource types (`_type` picks them).
pub async fn search_system_get(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    RawQuery(query): RawQuery,
    prefer: Prefer,
) -> ApiResult<Response> {
    let pairs = query_pairs(query.as_deref())?;
    search_system(&state, &caller, pairs, prefer).await
}

/// `POST [base]/_search`: form parameters, plus any in the URL, answer exactly like GET.
pub async fn search_system_post(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    prefer: Prefer,
    request: Request,
) -> ApiResult<Response> {
    let mut pairs = query_pairs(request.uri().query())?;
    pairs.extend(read_form(request, state.service.config.max_body_bytes).await?);
    search_system(&state, &caller, pairs, prefer).await
}

async fn search_system(
    state: &AppState,
    caller: &Arc<Caller>,
    pairs: Vec<(String, String)>,
    prefer: Prefer,
) -> ApiResult<Response> {
    let mut request = state.service.parse_system_search(&pairs, prefer.strict)?;
    state.service.restrict_search(caller, &mut request)?;
    let page = state.service.search(request).await?;
    Ok(searched(state, caller, &pairs, &page))
}

/// `GET [compartment type]/[id]/[type]?…`: a search confined to one compartment (R4 compartmentdefinition.html).
pub async fn compartment_search(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    path: CompartmentPath,
    RawQuery(query): RawQuery,
    prefer: Prefer,
) -> ApiResult<Response> {
    let pairs = query_pairs(query.as_deref())?;
    let mut request = state
        .service
        .parse_search(&path.resource_type, &pairs, prefer.strict)?;
    state
        .service
        .confine_to_compartment(&mut request, &path.compartment_type, path.id.as_str())?;
    state.service.restrict_search(&caller, &mut request)?;
    let page = state.service.search(request).await?;
    Ok(searched(&state, &caller, &pairs, &page))
}

/// A searchset, with what the audit trail records of it: the query and the patients whose data
/// it returned (a search by pseudonym from someone who sees names re-identifies).
fn searched(
    state: &AppState,
    caller: &Caller,
    pairs: &[(String, String)],
    page: &crate::service::search::SearchPage,
) -> Response {
    let service = &state.service;
    let facts = AuditFacts {
        entities: service.audit_entities(page.matches.iter().chain(&page.included), false),
        query: serde_urlencoded::to_string(pairs).ok(),
        recorded: false,
        outcome: None,
        reidentified: service.view(caller).is_none()
            && pairs
                .iter()
                .any(|(_, v)| v.contains(service.config.pseudonym_system.as_str())),
    };
    facts.attach(respond::json(StatusCode::OK, &service.searchset(page)))
}

/// `GET Patient/[id]/$everything`.
pub async fn everything(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    axum::extract::Path(id): axum::extract::Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    let pairs = query_pairs(query.as_deref())?;
    let id = crate::fhir::id::FhirId::parse(&id)?;
    let page = state
        .service
        .everything(&caller, id.as_str(), &pairs)
        .await?;
    Ok(searched(&state, &caller, &pairs, &page))
}

async fn search(
    state: &AppState,
    caller: &Arc<Caller>,
    resource_type: &str,
    pairs: Vec<(String, String)>,
    prefer: Prefer,
) -> ApiResult<Response> {
    let mut request = state
        .service
        .parse_search(resource_type, &pairs, prefer.strict)?;
    state.service.restrict_search(caller, &mut request)?;
    let page = state.service.search(request).await?;
    Ok(searched(state, caller, &pairs, &page))
}

pub async fn history_instance(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    path: InstancePath,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    let url = format!("{}/{}/_history", path.resource_type, path.id);
    history(
        &state,
        &caller,
        Some(&path.resource_type),
        Some(path.id.as_str()),
        &url,
        query,
    )
    .await
}

pub async fn history_type(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    TypePath(resource_type): TypePath,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    let url = format!("{resource_type}/_history");
    history(&state, &caller, Some(&resource_type), None, &url, query).await
}

pub async fn history_system(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    history(&state, &caller, None, None, "_history", query).await
}

async fn history(
    state: &AppState,
    caller: &Arc<Caller>,
    resource_type: Option<&str>,
    id: Option<&str>,
    url: &str,
    query: Option<String>,
) -> ApiResult<Response> {
    let pairs = query_pairs(query.as_deref())?;
    let page = state
        .service
        .history(caller, resource_type, id, &pairs)
        .await?;
    let base = &state.service.config.base_url;
    let link = |cursor: Option<i64>| {
        let mut pairs = page.used.clone();
        if let Some(cursor) = cursor {
            pairs.push(("_page".into(), cursor.to_string()));
        }
        let query = serde_urlencoded::to_string(&pairs).unwrap_or_default();
        if query.is_empty() {
            format!("{base}/{url}")
        } else {
            format!("{base}/{url}?{query}")
        }
    };
    let current = pairs
        .iter()
        .find(|(n, _)| n == "_page")
        .and_then(|(_, v)| v.parse().ok());
    let mut links = vec![Link {
        relation: "self",
        url: link(current),
    }];
    if current.is_some() {
        links.push(Link {
            relation: "first",
            url: link(None),
        });
    }
    if let Some(next) = page.next_page {
        links.push(Link {
            relation: "next",
            url: link(Some(next)),
        });
    }
    let facts = AuditFacts {
        entities: state.service.audit_entities(&page.entries, false),
        ..AuditFacts::default()
    };
    Ok(facts.attach(respond::json(
        StatusCode::OK,
        &bundle::history(
            base,
            page.complete_before,
            &page.entries,
            page.total,
            &links,
        ),
    )))
}

pub async fn process_bundle(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    FhirJson(body): FhirJson,
) -> ApiResult<Response> {
    let result = state.service.process_bundle(&caller, body).await?;
    let returned = result
        .entries
        .iter()
        .filter_map(|entry| entry.resource.as_ref());
    let facts = AuditFacts {
        entities: state.service.audit_entities_of_json(returned),
        ..AuditFacts::default()
    };
    Ok(facts.attach(respond::json(
        StatusCode::OK,
        &bundle::response_bundle(result.bundle_type, &result.entries),
    )))
}

pub async fn validate(
    State(state): State<AppState>,
    Authenticated(caller): Authenticated,
    TypePath(resource_type): TypePath,
    RawQuery(query): RawQuery,
    FhirJson(body): FhirJson,
) -> ApiResult<Response> {
    let pairs = query_pairs(query.as_deref())?;
    let profile = pairs
        .iter()
        .find(|(name, _)| name == "profile")
        .map(|(_, url)| url.as_str());
    let outcome = state
        .service
        .validate_operation(&caller, &resource_type, body, profile)?;
    Ok(respond::json(StatusCode::OK, &outcome))
}

pub async fn not_found() -> ApiError {
    ApiError::NotFound("no FHIR endpoint at this path; the FHIR base is /fhir".into())
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed("this HTTP method is not supported on this path".into())
}

fn header_text(headers: &HeaderMap, name: impl axum::http::header::AsHeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn if_match(headers: &HeaderMap) -> ApiResult<Option<i64>> {
    match header_text(headers, header::IF_MATCH) {
        None => Ok(None),
        Some(tag) => parse_etag(&tag).map(Some).ok_or_else(|| {
            ApiError::bad_request("If-Match must be a version ETag such as W/\"3\"")
        }),
    }
}
