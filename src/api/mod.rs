//! HTTP: the axum router and thin handlers. No SQL and no crypto here: handlers extract and check
//! the request, call the [`crate::service::Service`], and render the result with FHIR headers.
//!
//! - [`routes`]: every route in one place, grouped by who calls it.
//! - [`paths`]: path extractors that reject unknown resource types and malformed ids up front.
//! - [`negotiate`]: media types, body reading and limits, `Prefer` headers.
//! - [`respond`]: resources and Bundles as responses with `ETag`, `Location`, `Last-Modified`.
//! - [`handlers`]: one function per interaction.
//! - [`hl7v2`]: `POST /hl7v2`, HL7 v2 messages in, ACKs out.
//! - [`export`]: bulk export (`$export`): kick-off, status URL, NDJSON files.
//! - [`smart`]: `.well-known/smart-configuration` and the key ring's `jwks.json`.
//! - [`access_log`]: a PHI-free log line per request.
//! - [`authenticate`]: the middleware that turns a bearer token (or a hub's certificate) into
//!   the request's caller; [`caller`] is its extractor, [`token_cache`] remembers verified
//!   tokens, [`rate_limit`] caps requests per caller.

pub mod access_log;
pub mod audit;
pub mod authenticate;
pub mod caller;
pub mod export;
pub mod handlers;
pub mod hl7v2;
pub mod negotiate;
pub mod paths;
pub mod rate_limit;
pub mod respond;
pub mod routes;
pub mod smart;
pub mod token_cache;

use std::sync::Arc;

use serde_json::Value;

use crate::service::Service;

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    pub service: Service,
    /// The CapabilityStatement, generated once at start-up.
    pub capability: Arc<Value>,
    /// HL7 v2 ingestion (`POST /hl7v2`; the MLLP listener shares it).
    pub ingestor: crate::hl7v2::ingest::Ingestor,
    /// Requests per caller.
    pub rate_limiter: Arc<rate_limit::RateLimiter>,
    /// Callers of recently verified tokens.
    pub token_cache: Arc<token_cache::TokenCache>,
}

pub use routes::router;
