//! fhirvault: a FHIR R4 server whose health data is encrypted before it reaches the database.
//!
//! # Layout
//!
//! - [`config`]: typed settings from flags, `FHIRVAULT_*` variables and an optional TOML file.
//! - [`error`]: [`error::ApiError`], the one error enum; each variant fixes its HTTP status and
//!   OperationOutcome issue code, and renders itself as an OperationOutcome.
//! - [`fhir`]: FHIR-level types and helpers: ids, instants, OperationOutcome issues, Bundles,
//!   the CapabilityStatement, and validation against the spec's own definitions and this
//!   project's profiles (`profiles/`).
//! - [`crypto`]: key ring, AES-256-GCM envelopes bound to their row, pseudonyms, blind indexes.
//! - [`search`]: the search-parameter registry built from the spec, the FHIRPath subset that
//!   extracts index values at write time, query parsing and SQL planning.
//! - [`store`]: the database (SQLite embedded, PostgreSQL for scale) behind one [`store::Store`].
//! - [`auth`]: access control: bearer JWTs verified and issued ([`auth::token`]), callers,
//!   SMART scopes, roles, the access rules that become query conditions, and the pseudonymous
//!   views.
//! - [`service`]: the rules of each FHIR interaction, one file each; the one write path.
//! - [`audit`]: AuditEvents in hash chains: recording, verifying, pruning, and the spool for
//!   when the database refuses them.
//! - [`hl7v2`]: HL7 v2 ORU^R01 ingestion over MLLP and HTTP: parsing, mapping to FHIR, ACKs,
//!   resend detection and dead letters.
//! - [`api`]: axum routes and thin handlers: extract, call the service, render.
//! - [`server`]: serving (our HTTP accept loop, the MLLP listener) and graceful shutdown,
//!   shared by `main` and the tests.
//! - [`tls`]: HTTPS and MLLP over TLS, client certificates of device hubs, and [`tls::Peer`],
//!   who is on the other end of a connection.
//! - [`import`]: bulk loading of NDJSON and Bundle files through the service.
//! - [`watch`]: files that are read again when they change (the JWKS, revocation lists).

pub mod api;
pub mod audit;
pub mod auth;
pub mod config;
pub mod crypto;
pub mod error;
pub mod fhir;
pub mod hl7v2;
pub mod import;
pub mod search;
pub mod server;
pub mod service;
pub mod store;
pub mod tls;
pub mod watch;
