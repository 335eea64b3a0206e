//! Every route, in one place.

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware;
use axum::routing::{get, post};

use super::AppState;
use super::caller::Authenticated;
use super::export;
use super::handlers::*;
use super::negotiate::Prefer;
use super::negotiate::require_json_accept;
use super::smart;
use crate::service::export::ExportLevel;

/// Whether the router answers cross-origin (CORS) requests from browsers: it does not; a browser
/// app on another origin reaches the API through a proxy on its own origin. The
/// CapabilityStatement says so (`rest.security.cors`).
pub const CORS: bool = false;

pub fn router(state: AppState) -> Router {
    // FHIR REST API (R4 http.html): clinics, EHRs, CRM, portal, insurers, integrators.
    let mut fhir = Router::new()
        .route("/fhir", get(search_system_get).post(process_bundle))
        .route("/fhir/", get(search_system_get).post(process_bundle))
        .route("/fhir/_search", post(search_system_post))
        .route("/fhir/_history", get(history_system))
        .route(
            "/fhir/{type}",
            get(search_get)
                .post(create)
                .put(conditional_update)
                .delete(conditional_delete),
        )
        .route("/fhir/{type}/_search", post(search_post))
        .route("/fhir/{type}/_history", get(history_type))
        .route("/fhir/{type}/$validate", post(validate))
        .route(
            "/fhir/{type}/{id}",
            get(read).put(update).patch(patch).delete(delete),
        )
        .route("/fhir/{type}/{id}/_history", get(history_instance))
        .route("/fhir/Patient/{id}/$everything", get(everything))
        .route("/fhir/{type}/{id}/{search_type}", get(compartment_search))
        .route("/fhir/{type}/{id}/_history/{vid}", get(vread))
        // HL7 v2 over HTTP: analysis stations and device hubs that cannot speak MLLP.
        .route("/hl7v2", post(super::hl7v2::ingest_message))
        // Bulk export (docs/export.md): the kick-off of each level, the status URL of a job.
        .route(
            "/fhir/Group/{id}/$export",
            get(export::group_kickoff).post(export::group_kickoff),
        )
        .route(
            "/fhir/$export-status/{job}",
            get(export::status).delete(export::cancel),
        );
    for level in ExportLevel::ALL {
        let kickoff = move |state: State<AppState>,
                            caller: Authenticated,
                            prefer: Prefer,
                            request: Request| {
            export::kickoff(level, state, caller, prefer, request)
        };
        fhir = fhir.route(level.route(), get(kickoff).post(kickoff));
    }
    let fhir = fhir
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(require_json_accept));
    let fhir = protected(fhir, &state);

    // Export files are NDJSON, not FHIR JSON: their own content negotiation, the same
    // authentication and audit.
    let export_files = Router::new()
        .route("/fhir/$export-file/{job}/{file}", get(export::download))
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(export::require_ndjson_accept));
    let export_files = protected(export_files, &state);

    Router::new()
        // Operations: load balancers and monitoring.
        .route("/health", get(health))
        // The CapabilityStatement, without a token (R4 http.html#capabilities).
        .route("/fhir/metadata", get(metadata))
        // Discovery, without a token: SMART apps, and verifiers of the key ring's tokens.
        .route(
            "/.well-known/smart-configuration",
            get(smart::get_smart_configuration),
        )
        .route(
            "/fhir/.well-known/smart-configuration",
            get(smart::get_smart_configuration),
        )
        .route("/fhir/.well-known/jwks.json", get(smart::get_jwks))
        .merge(fhir)
        .merge(export_files)
        .fallback(not_found)
        .route_layer(middleware::from_fn(super::access_log::log_request))
        .with_state(state)
}

/// The layers of every protected route: outermost, authentication (nothing runs for a caller
/// without a verified token); inside it, since it needs the caller, the audit record of every
/// request.
fn protected(routes: Router<AppState>, state: &AppState) -> Router<AppState> {
    routes
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            super::audit::audit,
        ))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            super::authenticate::authenticate,
        ))
}
