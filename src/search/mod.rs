//! Search: the spec's search parameters, index values extracted at write time, and queries.
//!
//! - [`registry`]: parameters loaded from the official R4 SearchParameter bundle, keyed by
//!   (type, code) and url, plus the Patient compartment definition; [`union_params`] finds the
//!   parameters that are unions of others and are answered from their rows.
//! - [`fhirpath`]: the FHIRPath subset the parameters' expressions use.
//! - [`extract`]: index values per FHIR datatype (token, string, reference, date, …).
//! - [`phi`]: which parameters hold direct identifiers and are indexed only as blind tokens;
//!   [`sensitivity`] derives the datatypes behind that decision from the spec's schema.
//! - [`code_systems`]: the code system a `code` element's required binding implies, stored
//!   with its tokens so that `system|code` finds it.
//! - [`index_rows`]: extracted values to stored rows (plain or blind); [`known_displays`]: the
//!   displays of the server's own code tables, whose words `:text` finds without rows of their own.
//! - [`query`]: parsing a query string (parameters, chains, `_has`, includes, result controls);
//!   [`plan`]: turning it into SQL over the index tables.
//! - [`cursor`]: keyset page cursors and the ORDER BY they continue.

pub mod code_systems;
pub mod cursor;
pub mod extract;
pub mod fhirpath;
pub mod index_rows;
pub mod known_displays;
pub mod phi;
pub mod plan;
pub mod query;
pub mod registry;
pub mod sensitivity;
pub mod ucum;
pub mod union_params;
