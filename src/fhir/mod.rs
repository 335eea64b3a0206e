//! FHIR-level types and helpers, independent of HTTP and of the database.
//!
//! - [`id`]: validated resource ids and type names (used by the path extractors).
//! - [`instant`]: `meta.lastUpdated` as microseconds, and FHIR date/instant parsing for `_since`/`_at`.
//! - [`outcome`]: OperationOutcome issues.
//! - [`bundle`]: building searchset, history and transaction/batch-response Bundles.
//! - [`validation`]: the spec's JSON schema and required bindings, checked on every write, and
//!   the profiles of `profiles/` a resource claims.
//! - [`capability`]: the CapabilityStatement, generated from what the server really supports.

pub mod bundle;
pub mod capability;
pub mod id;
pub mod instant;
pub mod outcome;
pub mod validation;

pub const FHIR_JSON: &str = "application/fhir+json";
pub const FHIR_JSON_UTF8: &str = "application/fhir+json; charset=utf-8";
pub const FHIR_VERSION: &str = "4.0.1";
