//! Which index values may be stored as text and which only as blind tokens. This file is the one
//! place that decides it, so a reviewer can check the policy at a glance.
//!
//! Protected (keyed, truncated HMAC tokens in `search_blind`, see [`super::index_rows`]):
//! - the direct identifiers of people: the parameters listed in [`DIRECT_IDENTIFIERS`];
//! - every `identifier` parameter, and identifiers inside references (`subject:identifier`):
//!   record, case, policy and social-security numbers all lead to a person;
//! - every string parameter of a resource about a person or their care (the Patient compartment
//!   and the person types), since free text there can hold anything;
//! - the display text of every code (`:text`), for the same reason.
//!
//! Stored as text: codes and systems, dates, numbers, quantities, uris and references by id,
//! and strings of resources that are about no one (Organization, Location, ValueSet, …). Those
//! support every search feature, including ranges and `:contains`.

use super::registry::{ParamType, SearchParamRegistry};

/// Parameters that index a person's direct identifiers even where the rules below would not
/// catch them (tokens and dates rather than strings).
pub const DIRECT_IDENTIFIERS: &[(&str, &[&str])] = &[
    ("Patient", &["telecom", "phone", "email", "birthdate", "death-date"]),
    ("Practitioner", &["telecom", "phone", "email"]),
    ("RelatedPerson", &["telecom", "phone", "email", "birthdate"]),
    ("Person", &["telecom", "phone", "email", "birthdate"]),
];

/// Resource types that describe a person directly.
const PERSON_TYPES: &[&str] = &["Patient", "Practitioner", "PractitionerRole", "RelatedPerson", "Person"];

/// Is parameter `code` of `resource_type` (of type `kind`) indexed as blind tokens?
pub fn is_protected(registry: &SearchParamRegistry, resource_type: &str, code: &str, kind: ParamType) -> bool {
    let listed = DIRECT_IDENTIFIERS.iter().any(|(t, codes)| *t == resource_type && codes.contains(&code));
    let identifier = code == "identifier" || code.ends_with("-identifier");
    let about_a_person = PERSON_TYPES.contains(&resource_type) || !registry.patient_compartment_params(resource_type).is_empty();
    listed || identifier || (kind == ParamType::String && about_a_person)
}

/// The blind-index parameter name under which the display text of token parameter `code` is kept.
pub fn text_param(code: &str) -> String {
    format!("{code}:text")
}

/// The blind-index parameter name under which identifiers of reference parameter `code` are kept.
pub fn reference_identifier_param(code: &str) -> String {
    format!("{code}:identifier")
}

/// Token size for blind indexes. With at most a few million distinct values per parameter,
/// 48 bits keep accidental matches below one in a million per lookup while the token alone says
/// nothing; the search issue refines this per parameter (CipherSweet-style planning) with
/// verification of candidates after decryption.
pub const BLIND_TOKEN_BITS: u32 = 48;

/// Longest prefix (in characters) indexed for starts-with search on a protected string.
pub const MAX_PREFIX_CHARS: usize = 64;
