//! The audit trail of the REST API: one AuditEvent per request a caller makes, written before
//! the response leaves (a request whose audit record cannot be written fails, unless the
//! deployment chose the durable spool; see docs/audit.md).
//!
//! Changes are audited by the service inside their own transaction (so a change and its record
//! commit together); this layer records everything else — reads, searches, history, bundles
//! as a whole, operations — and every request that failed or was refused, changes included.
//! Handlers tell it what they touched through an [`AuditFacts`] response extension; the path
//! adds what was asked for (all there is when an error was answered before the handler knew
//! anything).

use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::audit::{AuditRecord, Entity, Event, Outcome, RestInteraction};
use crate::auth::Caller;
use crate::auth::role::Role;
use crate::error::{ApiError, ErrorSummary};
use crate::fhir::instant::now_micros;

/// What a handler's response touched, for its audit record.
#[derive(Debug, Clone, Default)]
pub struct AuditFacts {
    pub entities: Vec<Entity>,
    /// The search as the server understood it (a POST `_search` body is not in the URL).
    pub query: Option<String>,
    /// The change was audited inside its transaction: nothing more to record.
    pub recorded: bool,
    /// A search by the pseudonym identifier: turning a pseudonym back into a person.
    pub reidentified: bool,
    /// How it ended, when the status does not say (an HL7 v2 message refused with a 200 ACK).
    pub outcome: Option<Outcome>,
}

impl AuditFacts {
    pub fn recorded() -> AuditFacts {
        AuditFacts {
            recorded: true,
            ..AuditFacts::default()
        }
    }

    /// Attach to `response`.
    pub fn attach(self, mut response: Response) -> Response {
        response.extensions_mut().insert(self);
        response
    }
}

pub async fn audit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(caller) = request.extensions().get::<Arc<Caller>>().cloned() else {
        return next.run(request).await;
    };
    let method = request.method().clone();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let path = request.uri().path().to_string();
    let query = request.uri().query().map(str::to_string);
    // Auditors read the trail: every read acknowledged so far must be in it.
    if caller.role == Role::Auditor
        && let Err(error) = state.service.flush_read_journal().await
    {
        tracing::error!(%error, "the audit journal could not be written to the database before an auditor's request");
        return ApiError::Unavailable(
            "the audit trail cannot be brought up to date right now (retry later)".into(),
        )
        .into_response();
    }
    let response = next.run(request).await;
    let facts = response
        .extensions()
        .get::<AuditFacts>()
        .cloned()
        .unwrap_or_default();
    if facts.recorded {
        return response;
    }
    let status = response.status().as_u16();
    let Some(interaction) = interaction_of(&method, &route) else {
        return response;
    };
    let event = match interaction {
        Asked::Rest(_) if facts.reidentified => Event::Reidentify,
        Asked::Rest(rest) => Event::Rest(rest),
        Asked::Ingest => Event::Ingest,
        Asked::Export => Event::Export,
    };
    let mut entities = facts.entities;
    // What the path names, unless the handler named the resource itself (with its version).
    if !entities
        .iter()
        .any(|e| matches!(e, Entity::Resource { .. }))
    {
        for named in asked_for(&route, &path) {
            if !entities.iter().any(|e| same_entity(e, &named)) {
                entities.push(named);
            }
        }
    }
    if let Some(query) = facts.query.or(query).filter(|q| !q.is_empty()) {
        let resource_type = path_segments(&path)
            .first()
            .filter(|t| !t.starts_with(['_', '$']) && !t.is_empty())
            .map(|t| t.to_string());
        entities.push(Entity::Query {
            query,
            resource_type,
        });
    }
    let summary = response
        .extensions()
        .get::<ErrorSummary>()
        .map(|s| format!("{status}: {}", s.0));
    let outcome = facts
        .outcome
        .unwrap_or_else(|| Outcome::from_status(status));
    let record = state
        .service
        .audit_record(&caller, event, outcome, summary, entities);
    match state.service.audit(vec![record]).await {
        Ok(()) => response,
        Err(error) => {
            tracing::error!(%error, status, route, "the audit record of a request could not be written; the request fails");
            ApiError::Unavailable(
                "the audit trail cannot be written right now; nothing was returned (retry later)"
                    .into(),
            )
            .into_response()
        }
    }
}

/// The record of a request refused before the server knew who sent it (by
/// [`super::authenticate`]: no token, a refused one, or one that grants nothing): a failed login,
/// with the address it came from and what it asked for. Requests the rate limiter turns away
/// (429) are not recorded one by one (`None`): the refusals that got their address turned away
/// are, and a record per request would let anyone flood the trail.
pub fn refused_login(request: &Request, refusal: &Response) -> Option<AuditRecord> {
    let status = refusal.status().as_u16();
    if !matches!(status, 401 | 403) {
        return None;
    }
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    Some(AuditRecord {
        recorded: now_micros(),
        event: Event::Login,
        outcome: Outcome::from_status(status),
        outcome_desc: refusal
            .extensions()
            .get::<ErrorSummary>()
            .map(|s| format!("{status}: {}", s.0)),
        caller: None,
        address: request
            .extensions()
            .get::<crate::tls::Peer>()
            .map(|peer| peer.addr.ip().to_string()),
        purpose: Vec::new(),
        break_glass: false,
        entities: asked_for(&route, request.uri().path()),
    })
}

/// What a route asks to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Asked {
    Rest(RestInteraction),
    Ingest,
    /// Bulk export: a kick-off, or a file handed out.
    Export,
}

/// The interaction of `method` on the route template `route` (`None`: not a FHIR interaction).
fn interaction_of(method: &Method, route: &str) -> Option<Asked> {
    use RestInteraction::*;
    let route = route.trim_end_matches('/');
    let rest = match (method.as_str(), route) {
        (_, "/hl7v2") => return Some(Asked::Ingest),
        (
            "GET" | "POST",
            "/fhir/$export" | "/fhir/Patient/$export" | "/fhir/Group/{id}/$export",
        )
        | ("GET", "/fhir/$export-file/{job}/{file}") => {
            return Some(Asked::Export);
        }
        ("GET" | "DELETE", "/fhir/$export-status/{job}") => Operation,
        ("GET", "/fhir") | ("POST", "/fhir/_search") => SearchSystem,
        ("POST", "/fhir") => Transaction,
        ("GET", "/fhir/_history") => HistorySystem,
        ("GET", "/fhir/{type}")
        | ("POST", "/fhir/{type}/_search")
        | ("GET", "/fhir/{type}/{id}/{search_type}") => SearchType,
        ("POST", "/fhir/{type}") => Create,
        ("PUT", "/fhir/{type}" | "/fhir/{type}/{id}") => Update,
        ("DELETE", "/fhir/{type}" | "/fhir/{type}/{id}") => Delete,
        ("PATCH", "/fhir/{type}/{id}") => Patch,
        ("GET", "/fhir/{type}/_history") => HistoryType,
        ("GET", "/fhir/{type}/{id}") => Read,
        ("GET", "/fhir/{type}/{id}/_history") => HistoryInstance,
        ("GET", "/fhir/{type}/{id}/_history/{vid}") => Vread,
        ("POST", "/fhir/{type}/$validate") | ("GET", "/fhir/Patient/{id}/$everything") => Operation,
        _ => return None,
    };
    Some(Asked::Rest(rest))
}

/// The path's segments after `/fhir`.
fn path_segments(path: &str) -> Vec<&str> {
    path.trim_start_matches("/fhir")
        .split('/')
        .filter(|s| !s.is_empty())
        .collect()
}

fn same_entity(a: &Entity, b: &Entity) -> bool {
    match (a, b) {
        (Entity::Patient { id: x }, Entity::Patient { id: y }) => x == y,
        (Entity::Resource { reference: x }, Entity::Resource { reference: y }) => x == y,
        _ => false,
    }
}

/// What the path names, for a request whose handler said nothing: `Type/id[/_history/v]`, and
/// the Patient it is when it is one.
fn asked_for(route: &str, path: &str) -> Vec<Entity> {
    let segments = path_segments(path);
    let named = match (route.trim_end_matches('/'), segments.as_slice()) {
        ("/fhir/{type}/{id}/_history/{vid}", [t, id, _, v]) => {
            Some(format!("{t}/{id}/_history/{v}"))
        }
        (
            "/fhir/{type}/{id}" | "/fhir/{type}/{id}/_history" | "/fhir/{type}/{id}/{search_type}",
            [t, id, ..],
        ) => Some(format!("{t}/{id}")),
        ("/fhir/Patient/{id}/$everything", [_, id, ..]) => Some(format!("Patient/{id}")),
        _ => None,
    };
    let mut entities = Vec::new();
    if let Some(reference) = named {
        if let Some(id) = reference
            .strip_prefix("Patient/")
            .and_then(|rest| rest.split('/').next())
        {
            entities.push(Entity::Patient { id: id.to_string() });
        }
        entities.push(Entity::Resource { reference });
    }
    entities
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_map_to_interactions() {
        use RestInteraction::*;
        for (method, route, expected) in [
            (Method::GET, "/fhir/{type}/{id}", Asked::Rest(Read)),
            (
                Method::GET,
                "/fhir/{type}/{id}/_history/{vid}",
                Asked::Rest(Vread),
            ),
            (
                Method::POST,
                "/fhir/{type}/_search",
                Asked::Rest(SearchType),
            ),
            (Method::GET, "/fhir/", Asked::Rest(SearchSystem)),
            (Method::POST, "/fhir", Asked::Rest(Transaction)),
            (Method::PUT, "/fhir/{type}", Asked::Rest(Update)),
            (Method::POST, "/hl7v2", Asked::Ingest),
            (Method::GET, "/fhir/$export", Asked::Export),
            (Method::POST, "/fhir/Patient/$export", Asked::Export),
            (
                Method::GET,
                "/fhir/$export-file/{job}/{file}",
                Asked::Export,
            ),
            (
                Method::DELETE,
                "/fhir/$export-status/{job}",
                Asked::Rest(Operation),
            ),
        ] {
            assert_eq!(
                interaction_of(&method, route),
                Some(expected),
                "{method} {route}"
            );
        }
        assert_eq!(interaction_of(&Method::GET, "/health"), None);
    }

    #[test]
    fn paths_name_their_resource_and_patient() {
        let entities = asked_for(
            "/fhir/{type}/{id}/_history/{vid}",
            "/fhir/Patient/p1/_history/2",
        );
        assert!(matches!(&entities[0], Entity::Patient { id } if id == "p1"));
        assert!(
            matches!(&entities[1], Entity::Resource { reference } if reference == "Patient/p1/_history/2")
        );
        assert!(asked_for("/fhir/{type}", "/fhir/Observation").is_empty());
    }
}
