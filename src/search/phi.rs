//! Which index values may be stored as text and which only as blind tokens. This file is the one
//! place that decides it, so a reviewer can check the policy at a glance.
//!
//! Protected (keyed, truncated HMAC tokens in `search_blind`, see [`super::index_rows`]):
//! - every parameter whose values are an `Identifier`, `ContactPoint`, `HumanName` or `Address`,
//!   on any resource type (record, accession, policy, device serial and social-security numbers,
//!   phone numbers, names, addresses) — the datatypes come from the spec's schema
//!   ([`super::sensitivity`]), not from parameter names;
//! - every string (free-text) parameter, except on the resource types listed in
//!   [`ABOUT_NO_ONE`], whose texts describe organisations, places and definitions;
//! - the dates of [`PERSON_DATES`] (birth and death dates);
//! - always: identifiers inside references (`subject:identifier`), the type codings of
//!   identifiers together with their value (`:of-type`), and the display text of every code
//!   (`:text`).
//!
//! Stored as text: codes and systems, dates of care, numbers, quantities, uris and references by
//! id, and the strings of [`ABOUT_NO_ONE`] types. Those support every search feature, including
//! ranges and `:contains`.

use super::registry::{ParamType, SearchParamRegistry};

/// Dates that identify a person.
pub const PERSON_DATES: &[(&str, &[&str])] = &[
    ("Patient", &["birthdate", "death-date"]),
    ("RelatedPerson", &["birthdate"]),
    ("Person", &["birthdate"]),
];

/// Resource types about no individual: their free text may be indexed in plain text.
pub const ABOUT_NO_ONE: &[&str] = &[
    "Organization",
    "Location",
    "HealthcareService",
    "Endpoint",
    "InsurancePlan",
    "Medication",
    "Substance",
    "ValueSet",
    "CodeSystem",
    "ConceptMap",
    "NamingSystem",
    "TerminologyCapabilities",
    "StructureDefinition",
    "StructureMap",
    "SearchParameter",
    "OperationDefinition",
    "CompartmentDefinition",
    "CapabilityStatement",
    "ImplementationGuide",
    "GraphDefinition",
    "MessageDefinition",
    "Questionnaire",
    "PlanDefinition",
    "ActivityDefinition",
    "Library",
    "Measure",
    "ObservationDefinition",
    "SpecimenDefinition",
    "ChargeItemDefinition",
    "DeviceDefinition",
    "EventDefinition",
    "ResearchDefinition",
    "ResearchElementDefinition",
    "EffectEvidenceSynthesis",
    "RiskEvidenceSynthesis",
    "Evidence",
    "EvidenceVariable",
];

/// Is parameter `code` of `resource_type` (of type `kind`) indexed as blind tokens?
pub fn is_protected(
    registry: &SearchParamRegistry,
    resource_type: &str,
    code: &str,
    kind: ParamType,
) -> bool {
    let person_date = PERSON_DATES
        .iter()
        .any(|(t, codes)| *t == resource_type && codes.contains(&code));
    let identifying = registry.datatypes.is_identifying(resource_type, code);
    let free_text = (kind == ParamType::String
        || registry.datatypes.is_free_text(resource_type, code))
        && !ABOUT_NO_ONE.contains(&resource_type)
        && code != "_id";
    person_date || identifying || free_text
}

/// The modifiers a protected parameter keeps: what its blind tokens can answer (`:missing` by
/// the presence of rows, `:exact` by its own term, `:text` and `:of-type` by their own
/// parameters). `:contains`, `:not`, `:in`, `:below`, … would need the values themselves.
pub const BLIND_MODIFIERS: &[&str] = &["missing", "exact", "text", "of-type"];

/// Types whose codings only the server writes, from fixed code tables (AuditEvents cannot be
/// written through the API): their display texts say nothing their codes do not, and an
/// AuditEvent is written for every read, so no word rows are stored for them. `:text` on these
/// types finds the words of those fixed displays through the codings' token rows
/// ([`crate::search::known_displays`]; `audit::record::displayed_codings` lists them).
pub const FIXED_DISPLAYS: &[&str] = &["AuditEvent"];

pub fn displays_indexed(resource_type: &str) -> bool {
    !FIXED_DISPLAYS.contains(&resource_type)
}

/// Protected strings made of segments (network addresses): indexed by their whole segments
/// (`10`, `10.1`, `10.1.2`, `10.1.2.3`) rather than every character prefix, so that
/// `address=10.1.2` finds a subnet with a quarter of the rows, while `address=10.1.2.3` no
/// longer finds `10.1.2.30`.
pub const SEGMENTED: &[(&str, &str)] = &[("AuditEvent", "address")];

/// What separates the segments of a [`SEGMENTED`] value (IPv4, IPv6 and host names).
pub const SEGMENT_SEPARATORS: &[char] = &['.', ':'];

pub fn is_segmented(resource_type: &str, code: &str) -> bool {
    SEGMENTED.contains(&(resource_type, code))
}

/// Parameters not indexed at all. `phonetic` has the same expression as `name` and would repeat
/// every name token; this server has no phonetic algorithm, so it says so instead (400).
pub const UNINDEXED: &[&str] = &["phonetic"];

pub fn is_unindexed(code: &str) -> bool {
    UNINDEXED.contains(&code)
}

/// The blind-index parameter name under which the display text of token parameter `code` is kept.
pub fn text_param(code: &str) -> String {
    format!("{code}:text")
}

/// The blind-index parameter name under which the (type, value) pairs of identifier parameter
/// `code` are kept, for `:of-type`.
pub fn of_type_param(code: &str) -> String {
    format!("{code}:of-type")
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
