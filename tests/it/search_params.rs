//! Every search parameter the server offers for Patient, Device, Observation, Organization,
//! Coverage, Claim, Consent, DiagnosticReport, Practitioner, AuditEvent and Provenance, walked
//! one by one against hand-written R4 fixtures (`tests/fixtures/search_params/<Type>[-*].json`),
//! on both backends.
//!
//! For each type the fixtures are PUT and `metadata` says which parameters the server offers
//! (at least [`MIN_OFFERED`]); for each offered parameter:
//! - some fixture, as written, must populate it (the parameter's own expression run on the
//!   fixture): "fixture lacks a value for X" otherwise;
//! - derived searches: for every value the stored resource has for it (same extraction, on what
//!   the server stored), the searches a client would build from that value must return the
//!   fixture (token `system|code` and `code`, string prefix and `:exact`, date at its written
//!   precision, quantity `value|system|code` and the bare number, reference `Type/id`, `id` and
//!   `:Type`, uri, composite `system|code$value` and `code$value`), and the same search for a
//!   slightly different value (another code, a longer prefix, an earlier date, a larger number)
//!   must not;
//! - hand-written searches ([`HAND_WRITTEN`]): at least one query typed from the fixture by
//!   hand, independent of the extraction, must return it.
//!
//! A search that answers other than 200, or 200 with a warning (a parameter ignored), fails.
//! Failures are collected and asserted once. Cases that fail because of a server defect (not a
//! fixture mistake) go in [`KNOWN_GAPS`]: they still run and are printed, but do not fail the
//! test. Parameters the specification defines but the server does not offer are printed too.
//! `SEARCH_PARAMS_VERBOSE=1` prints every search and its matches.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::common::{Backend, TestServer};
use chrono::{TimeZone, Utc};
use fhirvault::search::extract::{IndexValue, normalize_string, param_values, parse_date_range};
use fhirvault::search::phi::is_protected;
use fhirvault::search::registry::SearchParamRegistry;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::{Method, StatusCode};
use serde_json::Value;

/// The resource types whose every offered parameter is walked. AuditEvent first: every search
/// of this test is itself audited, and the fixture must stay on the first page of its searches.
const TYPES: &[&str] = &[
    "AuditEvent",
    "Patient",
    "Device",
    "Observation",
    "Organization",
    "Coverage",
    "Claim",
    "Consent",
    "DiagnosticReport",
    "Practitioner",
    "Provenance",
];

/// Fewest search parameters `metadata` must list per type: the R4 parameters of the type and the
/// six indexed Resource-level ones (`_id`, `_lastUpdated`, `_profile`, `_security`, `_source`,
/// `_tag`), less those the server does not offer by design (`_text`, `_content`, `_query`,
/// `phonetic`, composites that are not a code plus a value).
const MIN_OFFERED: &[(&str, usize)] = &[
    ("Patient", 28),
    ("Device", 18),
    ("Observation", 43),
    ("Organization", 18),
    ("Coverage", 17),
    ("Claim", 23),
    ("Consent", 21),
    ("DiagnosticReport", 22),
    ("Practitioner", 22),
    ("AuditEvent", 24),
    ("Provenance", 16),
];

/// (type, parameter, why): cases that fail because of a server defect. They run and are printed,
/// but do not fail the test.
const KNOWN_GAPS: &[(&str, &str, &str)] = &[];

/// Searches written by hand from the fixtures, the way a client reading them would search: an
/// oracle independent of the library's extraction (which the derived searches trust). Every
/// offered parameter must appear in at least one of them. (type, fixture id, queries; a query
/// may AND several parameters with `&`, values unencoded.)
const HAND_WRITTEN: &[(&str, &str, &[&str])] = &[
    (
        "Patient",
        "sp-patient-1",
        &[
            "_id=sp-patient-1",
            "_lastUpdated=gt2020-01-01",
            "_profile=https://fhirvault.example/StructureDefinition/holter-patient",
            "_security=http://terminology.hl7.org/CodeSystem/v3-Confidentiality|R",
            "_source=hl7v2://holter-hub-1/ADT",
            "_tag=holter-study-2026",
            "active=true",
            "address=Währinger",
            "address-city=wien",
            "address-country=AT",
            "address-postalcode=1090",
            "address-state=Wien",
            "address-use=home",
            "birthdate=1948-07",
            "death-date=2026-02-11",
            "deceased=true",
            "email=johanna.grueber@example.at",
            "family=GRUBER",
            "family:exact=Grüber",
            "gender=female",
            "general-practitioner=Practitioner/sp-gp-1",
            "given=Elis",
            "identifier=urn:oid:1.2.40.0.34.99.4613.3.1|MRN-0047112",
            "language=de-AT",
            "link=Patient/sp-patient-merged",
            "name=johanna",
            "organization=sp-org-hospital",
            "phone=+43 1 4040 1234",
            "telecom=johanna.grueber@example.at",
        ],
    ),
    (
        "Patient",
        "sp-patient-2",
        &[
            "birthdate=1962",
            "deceased=false",
            "given=Tomas",
            "family:exact=Novak",
        ],
    ),
    (
        "Device",
        "sp-device-1",
        &[
            "_id=sp-device-1",
            "_lastUpdated=gt2020-01-01",
            "_profile=https://fhirvault.example/StructureDefinition/holter-recorder",
            "_security=N",
            "_source=https://inventory.example/devices",
            "_tag=https://fhirvault.example/tags|holter-study-2026",
            "device-name=medilog",
            "device-name=Holter recorder",
            "identifier=HOLTER-SN-88213",
            "location=Location/sp-loc-cardio",
            "manufacturer=Schiller",
            "model=AR12plus",
            "organization=Organization/sp-org-hospital",
            "patient=Patient/sp-patient-1",
            "status=active",
            "type=http://snomed.info/sct|86184003",
            "udi-carrier=(01)07612345000213",
            "udi-di=07612345000213",
            "url=http://devices.example/holter/88213",
        ],
    ),
    (
        "Observation",
        "sp-obs-hr-summary",
        &[
            "_id=sp-obs-hr-summary",
            "_lastUpdated=gt2020-01-01",
            "_profile=http://hl7.org/fhir/StructureDefinition/heartrate",
            "_security=R",
            "_source=hl7v2://holter-hub-1/ORU",
            "_tag=holter-study-2026",
            "based-on=ServiceRequest/sp-sr-holter",
            "category=vital-signs",
            "code=http://loinc.org|8867-4",
            "code-value-quantity=8867-4$gt70",
            "combo-code=hr-min",
            "combo-code-value-concept=dominant-rhythm$64730000",
            "combo-code-value-quantity=hr-min$lt50|http://unitsofmeasure.org|/min",
            "combo-data-absent-reason=error",
            "combo-value-concept=64730000",
            "combo-value-quantity=48",
            "component-code=st-deviation-max",
            "component-code-value-concept=https://fhirvault.example/CodeSystem/holter-metrics|dominant-rhythm$http://snomed.info/sct|64730000",
            "component-code-value-quantity=hr-min$48|http://unitsofmeasure.org|/min",
            "component-data-absent-reason=http://terminology.hl7.org/CodeSystem/data-absent-reason|error",
            "component-value-concept=http://snomed.info/sct|64730000",
            "component-value-quantity=le48",
            "date=ge2026-03-05&date=le2026-03-06",
            "derived-from=Media/sp-media-ecg-raw",
            "device=Device/sp-device-1",
            "encounter=Encounter/sp-enc-1",
            "has-member=Observation/sp-obs-rhythm",
            "identifier=HOL-2026-03-0117-HR",
            "method=164850009",
            "part-of=Procedure/sp-proc-holter",
            "patient=sp-patient-1",
            "performer=Practitioner/sp-practitioner-1",
            "status=final",
            "subject=Patient/sp-patient-1",
            "value-quantity=72",
            "value-quantity=72|http://unitsofmeasure.org|/min",
        ],
    ),
    (
        "Observation",
        "sp-obs-rhythm",
        &[
            "code-value-concept=http://loinc.org|8884-9$http://snomed.info/sct|49436004",
            "value-concept=49436004",
            "value-string=Paroxysmal",
        ],
    ),
    (
        "Observation",
        "sp-obs-af-onset",
        &[
            "code-value-date=af-first-onset$2026-03-05",
            "value-date=2026-03-05",
            "value-date=ge2026-03-05T23:00:00+01:00&value-date=lt2026-03-06",
        ],
    ),
    (
        "Observation",
        "sp-obs-signal-quality",
        &[
            "focus=Device/sp-device-1",
            "value-string=artefacts in channel 2",
            "date=2026-03-06",
        ],
    ),
    (
        "Observation",
        "sp-obs-af-episode",
        &[
            "date=2026-03-06T00:57:12.480Z",
            "date=2026-03-06",
            "value-date=ge2026-03-06T01:00:00+01:00&value-date=le2026-03-06T02:00:00+01:00",
            "code-value-date=af-episode-longest$2026-03-06",
        ],
    ),
    (
        "Observation",
        "sp-obs-potassium",
        &[
            "data-absent-reason=not-performed",
            "specimen=Specimen/sp-specimen-blood-1",
            "status=cancelled",
            "date=2026-03-05",
        ],
    ),
    (
        "Organization",
        "sp-org-cardio",
        &[
            "_id=sp-org-cardio",
            "_lastUpdated=gt2020-01-01",
            "_profile=https://fhirvault.example/StructureDefinition/care-organization",
            "_security=L",
            "_source=https://directory.example/organizations",
            "_tag=directory",
            "active=true",
            "address=Brünner",
            "address-city=Wien",
            "address-country=AT",
            "address-postalcode=1210",
            "address-state=wien",
            "address-use=work",
            "endpoint=Endpoint/sp-endpoint-fhir",
            "identifier=KH-0815-KARDIO",
            "name=Kardiologische",
            "name=Herzambulanz",
            "name:contains=ambulanz",
            "partof=Organization/sp-org-hospital",
            "type=dept",
        ],
    ),
    (
        "Coverage",
        "sp-coverage-1",
        &[
            "_id=sp-coverage-1",
            "_lastUpdated=gt2020-01-01",
            "_profile=https://fhirvault.example/StructureDefinition/statutory-coverage",
            "_security=R",
            "_source=https://billing.example/coverage-feed",
            "_tag=billing",
            "beneficiary=Patient/sp-patient-1",
            "class-type=group",
            "class-value=WGKK-ANG-07",
            "dependent=01",
            "identifier=1234190748",
            "patient=sp-patient-1",
            "payor=Organization/sp-org-insurer",
            "policy-holder=RelatedPerson/sp-related-1",
            "status=active",
            "subscriber=Patient/sp-patient-1",
            "type=EHCPOL",
        ],
    ),
    (
        "Claim",
        "sp-claim-1",
        &[
            "_id=sp-claim-1",
            "_lastUpdated=gt2020-01-01",
            "_profile=https://fhirvault.example/StructureDefinition/outpatient-claim",
            "_security=R",
            "_source=https://billing.example/claims",
            "_tag=billing",
            "care-team=Practitioner/sp-practitioner-1",
            "created=2026-03-07",
            "detail-udi=Device/sp-device-electrodes",
            "encounter=Encounter/sp-enc-1",
            "enterer=Practitioner/sp-practitioner-clerk",
            "facility=Location/sp-loc-cardio",
            "identifier=CLM-2026-000431",
            "insurer=Organization/sp-org-insurer",
            "item-udi=Device/sp-device-recorder-2",
            "patient=Patient/sp-patient-1",
            "payee=Organization/sp-org-hospital",
            "priority=normal",
            "procedure-udi=Device/sp-device-1",
            "provider=Organization/sp-org-cardio",
            "status=active",
            "subdetail-udi=Device/sp-device-electrode-lot",
            "use=claim",
        ],
    ),
    (
        "Consent",
        "sp-consent-1",
        &[
            "_id=sp-consent-1",
            "_lastUpdated=gt2020-01-01",
            "_profile=https://fhirvault.example/StructureDefinition/research-consent",
            "_security=R",
            "_source=https://consent.example/portal",
            "_tag=holter-study-2026",
            "action=access",
            "actor=Organization/sp-org-cardio",
            "category=http://loinc.org|59284-0",
            "consentor=Patient/sp-patient-1",
            "data=Observation/sp-obs-hr-summary",
            "date=2026-03-04",
            "identifier=CONS-2026-0099",
            "organization=Organization/sp-org-hospital",
            "patient=Patient/sp-patient-1",
            "period=le2026-06-01&period=ge2026-06-01",
            "purpose=TREAT",
            "scope=patient-privacy",
            "security-label=R",
            "source-reference=DocumentReference/sp-doc-consent-scan",
            "status=active",
        ],
    ),
    (
        "DiagnosticReport",
        "sp-report-1",
        &[
            "_id=sp-report-1",
            "_lastUpdated=gt2020-01-01",
            "_profile=https://fhirvault.example/StructureDefinition/holter-report",
            "_security=R",
            "_source=hl7v2://holter-hub-1/ORU",
            "_tag=holter-study-2026",
            "based-on=ServiceRequest/sp-sr-holter",
            "category=EC",
            "code=http://loinc.org|11524-6",
            "conclusion=49436004",
            "date=ge2026-03-05&date=le2026-03-06",
            "encounter=Encounter/sp-enc-1",
            "identifier=HOL-2026-03-0117",
            "issued=2026-03-07",
            "media=Media/sp-media-strip-1",
            "patient=Patient/sp-patient-1",
            "performer=Organization/sp-org-cardio",
            "result=Observation/sp-obs-rhythm",
            "results-interpreter=Practitioner/sp-practitioner-1",
            "specimen=Specimen/sp-specimen-blood-1",
            "status=final",
            "subject=Patient/sp-patient-1",
        ],
    ),
    (
        "DiagnosticReport",
        "sp-report-resting-ecg",
        &[
            "date=2026-03-05",
            "issued=2026-03-05T07:10:00Z",
            "conclusion=64730000",
            "status=preliminary",
            "performer=Practitioner/sp-practitioner-1",
        ],
    ),
    (
        "Practitioner",
        "sp-practitioner-1",
        &[
            "_id=sp-practitioner-1",
            "_lastUpdated=gt2020-01-01",
            "_profile=https://fhirvault.example/StructureDefinition/practitioner",
            "_security=N",
            "_source=https://directory.example/practitioners",
            "_tag=directory",
            "active=true",
            "address=brunner",
            "address-city=Wien",
            "address-country=AT",
            "address-postalcode=1210",
            "address-state=Wien",
            "address-use=work",
            "communication=urn:ietf:bcp:47|en",
            "email=markus.hofbauer@kardio.example.at",
            "family=Hofbauer",
            "gender=male",
            "given=Anton",
            "identifier=ARZT-20731",
            "name=Markus",
            "phone=+43 1 27700 4711",
            "telecom=markus.hofbauer@kardio.example.at",
        ],
    ),
    (
        "AuditEvent",
        "sp-audit-1",
        &[
            "_id=sp-audit-1",
            "_lastUpdated=gt2020-01-01",
            "_profile=https://fhirvault.example/StructureDefinition/rest-audit",
            "_security=R",
            "_source=https://fhirvault.example/audit",
            "_tag=audit",
            "action=R",
            "address=10.20.30.41",
            "agent=Practitioner/sp-practitioner-1",
            "agent-name=Dr. Markus",
            "agent-role=PROV",
            "altid=hofbauer.m",
            "date=2026-03-07",
            "entity=DiagnosticReport/sp-report-1",
            "entity-name=Holter-Befund",
            "entity-role=4",
            "entity-type=2",
            "outcome=0",
            "patient=Patient/sp-patient-1",
            "policy=https://fhirvault.example/policy/treatment-access",
            "site=Kardiologie Floridsdorf",
            "source=Device/sp-device-fhirvault",
            "subtype=read",
            "type=rest",
        ],
    ),
    (
        "Provenance",
        "sp-provenance-1",
        &[
            "_id=sp-provenance-1",
            "_lastUpdated=gt2020-01-01",
            "_profile=https://fhirvault.example/StructureDefinition/signed-provenance",
            "_security=R",
            "_source=https://fhirvault.example/signing",
            "_tag=holter-study-2026",
            "agent=Practitioner/sp-practitioner-1",
            "agent-role=AUT",
            "agent-type=author",
            "entity=Observation/sp-obs-hr-summary",
            "location=Location/sp-loc-cardio",
            "patient=Patient/sp-patient-1",
            "recorded=2026-03-07",
            "signature-type=1.2.840.10065.1.12.1.1",
            "target=DiagnosticReport/sp-report-1",
            "when=2026-03-07",
        ],
    ),
];

/// Appended to a value to make one that must not match.
const NO_MATCH: &str = "qxzj";

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/search_params")
}

/// The fixtures of a type: `<Type>.json` and `<Type>-<variant>.json`, in name order.
fn fixtures(resource_type: &str) -> Vec<(String, Value)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(fixture_dir())
        .expect("fixture folder")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| {
            let stem = p.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
            p.extension().is_some_and(|e| e == "json")
                && (stem == resource_type
                    || stem
                        .strip_prefix(resource_type)
                        .is_some_and(|rest| rest.starts_with('-')))
        })
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "no fixture for {resource_type} in {}",
        fixture_dir().display()
    );
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).expect("read fixture");
            let value: Value =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(value["resourceType"], resource_type, "{}", path.display());
            (
                path.file_name().unwrap().to_string_lossy().into_owned(),
                value,
            )
        })
        .collect()
}

/// The registry the server itself uses (same loader, same folder, cached per process).
fn registry() -> std::sync::Arc<SearchParamRegistry> {
    let local = PathBuf::from("fhir-resources");
    let dir = if local.join("search-parameters.json").is_file() {
        local
    } else {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fhir-resources")
    };
    fhirvault::server::load_definitions(&dir)
        .expect("FHIR definitions load")
        .1
}

/// Every parameter code the R4 specification defines for a type (including `Resource` and
/// `DomainResource` ones), for the "not offered" summary.
fn spec_codes(resource_type: &str) -> BTreeSet<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fhir-resources/search-parameters.json");
    let bundle: Value =
        serde_json::from_slice(&std::fs::read(path).expect("search-parameters.json"))
            .expect("json");
    bundle["entry"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| &e["resource"])
        .filter(|p| {
            p["base"].as_array().is_some_and(|b| {
                b.iter()
                    .any(|b| b == resource_type || b == "Resource" || b == "DomainResource")
            })
        })
        .filter_map(|p| p["code"].as_str().map(str::to_string))
        .collect()
}

// -------------------------------------------------------------------------------------------
// Query values from index values

/// Escape the characters the search syntax gives a meaning to inside one value part.
fn escape(part: &str) -> String {
    let mut out = String::with_capacity(part.len());
    for c in part.chars() {
        if matches!(c, '\\' | ',' | '|' | '$') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn token_query(system: Option<&str>, code: &str) -> String {
    match system {
        Some(system) => format!("{}|{}", escape(system), escape(code)),
        None => escape(code),
    }
}

fn micros_text(micros: i64, format: &str) -> Option<String> {
    Utc.timestamp_micros(micros)
        .single()
        .map(|t| t.format(format).to_string())
}

/// A date at the finest written precision whose range holds `[start, end)`: what a client would
/// type for this value with `eq`. Protected dates only know YYYY, YYYY-MM and YYYY-MM-DD.
/// A range longer than a year (or open) gets `ge` of its start (or `le` of its end).
fn date_query(start: i64, end: i64, protected: bool) -> String {
    let all = [
        "%Y-%m-%dT%H:%M:%S%.6fZ",
        "%Y-%m-%dT%H:%M:%S%.3fZ",
        "%Y-%m-%dT%H:%M:%SZ",
        "%Y-%m-%dT%H:%MZ",
        "%Y-%m-%d",
        "%Y-%m",
        "%Y",
    ];
    let formats = if protected { &all[4..] } else { &all[..] };
    for format in formats {
        let Some(text) = micros_text(start, format) else {
            break;
        };
        if let Some((qs, qe)) = parse_date_range(&text)
            && qs <= start
            && end <= qe
        {
            return text;
        }
    }
    match micros_text(start, all[0]) {
        Some(text) if start != i64::MIN => format!("ge{text}"),
        _ => format!("le{}", micros_text(end - 1, all[0]).unwrap_or_default()),
    }
}

/// A date query that none of `ranges` (all values of the parameter in the resource) matches:
/// `lt` the earliest start, else `gt` the latest end; a far-away day for protected dates.
fn date_negative(ranges: &[(i64, i64)], protected: bool) -> String {
    let micro = "%Y-%m-%dT%H:%M:%S%.6fZ";
    if !protected {
        if ranges.iter().all(|r| r.0 != i64::MIN)
            && let Some(text) = ranges
                .iter()
                .map(|r| r.0)
                .min()
                .and_then(|s| micros_text(s, micro))
        {
            return format!("lt{text}");
        }
        if ranges.iter().all(|r| r.1 != i64::MAX)
            && let Some(text) = ranges
                .iter()
                .map(|r| r.1)
                .max()
                .and_then(|e| micros_text(e - 1, micro))
        {
            return format!("gt{text}");
        }
    }
    "1901-01-01".to_string()
}

fn mid(low: f64, high: f64) -> f64 {
    (low + high) / 2.0
}

/// A number query that none of `mids` matches: above the largest, else below the smallest.
fn number_negative(mids: &[f64]) -> Option<String> {
    let max = mids.iter().copied().fold(f64::MIN, f64::max);
    let min = mids.iter().copied().fold(f64::MAX, f64::min);
    if max < 1e300 {
        Some(format!("gt{max}"))
    } else if min > -1e300 {
        Some(format!("lt{min}"))
    } else {
        None
    }
}

fn quantity_query(low: f64, high: f64, system: Option<&str>, code: Option<&str>) -> String {
    let number = mid(low, high);
    match (system, code) {
        (Some(system), Some(code)) => format!("{number}|{}|{}", escape(system), escape(code)),
        (None, Some(code)) => format!("{number}||{}", escape(code)),
        _ => format!("{number}"),
    }
}

/// Searches built from one index value: each of `positives` must find the fixture, `negative`
/// (a slightly different value) must not. Each search is (parameter as sent, value).
#[derive(Debug, Clone, Default)]
struct Probe {
    positives: Vec<(String, String)>,
    negative: Option<(String, String)>,
}

/// The searches for one index value of parameter `code`; `all` holds every value the parameter
/// has in the same resource (so the negative avoids all of them). `None` for a value no query
/// form reaches (a concept with text only).
///
/// The first positive is the canonical form (token `system|code`, string prefix, date at its
/// written precision, quantity `value|system|code`, reference `Type/id`, uri as is, composite
/// `system|code$value`); the others are the further forms R4 gives the same value (`code` alone,
/// `:exact`, a bare id, `:Type`, a number without unit, a composite keyed by the code alone).
fn probe(code: &str, protected: bool, value: &IndexValue, all: &[&IndexValue]) -> Option<Probe> {
    let named = |v: String| (code.to_string(), v);
    let mut probe = Probe::default();
    match value {
        IndexValue::Token {
            system,
            code: Some(token),
            ..
        } => {
            probe
                .positives
                .push(named(token_query(system.as_deref(), token)));
            if system.is_some() {
                probe.positives.push(named(escape(token)));
            }
            probe.negative = Some(named(token_query(
                system.as_deref(),
                &format!("{token}{NO_MATCH}"),
            )));
        }
        IndexValue::Token { code: None, .. } => return None,
        IndexValue::String { normalized, exact } => {
            let prefix: String = normalized.chars().take(12).collect();
            probe.positives.push(named(escape(&prefix)));
            probe
                .positives
                .push((format!("{code}:exact"), escape(exact)));
            let negative = format!("{}{NO_MATCH}", prefix.trim_end());
            let folded = normalize_string(&negative);
            let clash = all.iter().any(|v| matches!(v, IndexValue::String { normalized, .. } if normalized.starts_with(&folded)));
            probe.negative = (!clash).then(|| named(escape(&negative)));
        }
        IndexValue::Reference {
            target_type: Some(t),
            target_id: Some(id),
            ..
        } => {
            probe.positives.push(named(format!("{t}/{}", escape(id))));
            probe.positives.push(named(escape(id)));
            probe.positives.push((format!("{code}:{t}"), escape(id)));
            probe.negative = Some(named(format!("{t}/{}{NO_MATCH}", escape(id))));
        }
        IndexValue::Reference { url, .. } => {
            probe.positives.push(named(escape(url)));
            probe.negative = Some(named(escape(&format!("{url}{NO_MATCH}"))));
        }
        IndexValue::ReferenceIdentifier {
            system,
            value: Some(v),
        } => {
            let name = format!("{code}:identifier");
            probe
                .positives
                .push((name.clone(), token_query(system.as_deref(), v)));
            probe.negative = Some((
                name,
                token_query(system.as_deref(), &format!("{v}{NO_MATCH}")),
            ));
        }
        IndexValue::ReferenceIdentifier { value: None, .. } => return None,
        IndexValue::IdentifierOfType {
            system,
            code: type_code,
            value,
        } => {
            let name = format!("{code}:of-type");
            let query =
                |value: &str| format!("{}|{}", token_query(Some(system), type_code), escape(value));
            probe.positives.push((name.clone(), query(value)));
            probe.negative = Some((name, query(&format!("{value}{NO_MATCH}"))));
        }
        IndexValue::Date { start, end } => {
            let ranges: Vec<(i64, i64)> = all
                .iter()
                .filter_map(|v| {
                    if let IndexValue::Date { start, end } = v {
                        Some((*start, *end))
                    } else {
                        None
                    }
                })
                .collect();
            probe
                .positives
                .push(named(date_query(*start, *end, protected)));
            probe.negative = Some(named(date_negative(&ranges, protected)));
        }
        IndexValue::Number { low, high, .. } | IndexValue::Quantity { low, high, .. } => {
            let mids: Vec<f64> = all
                .iter()
                .filter_map(|v| match v {
                    IndexValue::Number { low, high, .. }
                    | IndexValue::Quantity { low, high, .. } => Some(mid(*low, *high)),
                    _ => None,
                })
                .collect();
            if let IndexValue::Quantity {
                system, code: unit, ..
            } = value
                && unit.is_some()
            {
                probe.positives.push(named(quantity_query(
                    *low,
                    *high,
                    system.as_deref(),
                    unit.as_deref(),
                )));
            }
            probe.positives.push(named(format!("{}", mid(*low, *high))));
            probe.negative = number_negative(&mids).map(named);
        }
        IndexValue::Uri { value } => {
            probe.positives.push(named(escape(value)));
            probe.negative = Some(named(escape(&format!("{value}{NO_MATCH}"))));
        }
        IndexValue::Composite { components } => {
            let [
                IndexValue::Token {
                    system,
                    code: Some(first),
                    ..
                },
                second,
            ] = components.as_slice()
            else {
                return None;
            };
            let second = match second {
                IndexValue::Token {
                    system,
                    code: Some(c),
                    ..
                } => token_query(system.as_deref(), c),
                IndexValue::Quantity {
                    low,
                    high,
                    system,
                    code,
                    ..
                } => quantity_query(*low, *high, system.as_deref(), code.as_deref()),
                IndexValue::Number { low, high, .. } => format!("{}", mid(*low, *high)),
                IndexValue::Date { start, end } => date_query(*start, *end, false),
                _ => return None,
            };
            probe.positives.push(named(format!(
                "{}${second}",
                token_query(system.as_deref(), first)
            )));
            if system.is_some() {
                probe
                    .positives
                    .push(named(format!("{}${second}", escape(first))));
            }
            probe.negative = Some(named(format!(
                "{}${second}",
                token_query(system.as_deref(), &format!("{first}{NO_MATCH}"))
            )));
        }
    }
    Some(probe)
}

/// The literal an index value was read from, when it is one (codes, reference ids, uris), so a
/// value extraction made up is caught: it must occur in the stored resource.
fn literal(value: &IndexValue) -> Option<&str> {
    match value {
        IndexValue::Token {
            code: Some(code), ..
        } if code != "true" && code != "false" => Some(code),
        IndexValue::Reference {
            target_id: Some(id),
            ..
        } => Some(id),
        IndexValue::ReferenceIdentifier { value: Some(v), .. } => Some(v),
        IndexValue::Uri { value } => Some(value),
        _ => None,
    }
}

// -------------------------------------------------------------------------------------------
// The walk

#[derive(Default)]
struct TypeReport {
    offered: usize,
    walked: usize,
    searches: usize,
    not_offered: Vec<String>,
}

/// A token that may search `resource_type`: the audit trail is the auditors' alone.
fn reader_of(server: &TestServer, resource_type: &str) -> String {
    match resource_type {
        "AuditEvent" => server.token("auditor", "user/*.rs", None, None),
        _ => server.token("admin", "user/*.cruds", None, None),
    }
}

/// Store `fixture` as the server itself stores what no client may write (an AuditEvent):
/// through the library's write path, on the server's own database and key ring.
async fn store_as_server(
    server: &TestServer,
    resource_type: &str,
    id: &str,
    fixture: Value,
) -> Value {
    let mut config =
        fhirvault::config::Config::for_dir(server.dir.path(), Some(server.database.clone()));
    config.base_url = server.base.clone();
    config.auth = server.service_auth();
    let service = fhirvault::server::open_service(config, None)
        .await
        .expect("a second service on the same store");
    let (this, resource_type, id) = (service.clone(), resource_type.to_string(), id.to_string());
    let stored = service
        .write(move |conn| {
            Box::pin(async move {
                this.store_version(conn, &resource_type, &id, fixture, None, "PUT")
                    .await
            })
        })
        .await
        .expect("stored");
    stored.resource.expect("body")
}

/// Run one search and say what is wrong with its answer, if anything.
/// The values a parameter's own definition finds in a resource, which its searches must match:
/// the same extraction the server runs, without its storage choices (a union such as
/// Observation's `combo-code` is stored as its members' rows and has none of its own).
fn defined_values(
    registry: &SearchParamRegistry,
    resource_type: &str,
    code: &str,
    resource: &Value,
) -> Vec<IndexValue> {
    let Some(param) = registry.get(resource_type, code) else {
        return Vec::new();
    };
    let Some(expression) = param.expression_for(resource_type) else {
        return Vec::new();
    };
    param_values(param, expression, resource).unwrap_or_default()
}

async fn search(
    server: &TestServer,
    resource_type: &str,
    name: &str,
    value: &str,
    id: &str,
    must_match: bool,
) -> Option<String> {
    search_pairs(server, resource_type, &[(name, value)], id, must_match).await
}

/// Like [`search`], for several parameters at once (ANDed), values unencoded.
async fn search_pairs(
    server: &TestServer,
    resource_type: &str,
    pairs: &[(&str, &str)],
    id: &str,
    must_match: bool,
) -> Option<String> {
    let encoded: Vec<String> = pairs
        .iter()
        .map(|(name, value)| format!("{name}={}", utf8_percent_encode(value, NON_ALPHANUMERIC)))
        .collect();
    let shown_pairs: Vec<String> = pairs
        .iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect();
    let query_url = format!("{resource_type}?{}&_count=500", encoded.join("&"));
    let shown = format!("GET {resource_type}?{}", shown_pairs.join("&"));
    let reply = server
        .request_as(
            &reader_of(server, resource_type),
            Method::GET,
            &query_url,
            None,
        )
        .await;
    if std::env::var_os("SEARCH_PARAMS_VERBOSE").is_some() {
        println!(
            "{} {shown} → {} {:?}",
            if must_match { "+" } else { "-" },
            reply.status.as_u16(),
            crate::common::match_ids(&reply.body)
        );
    }
    let snippet = |text: &str| text.chars().take(400).collect::<String>();
    if reply.status != StatusCode::OK {
        return Some(format!(
            "{shown} → {} {}",
            reply.status,
            snippet(&reply.text)
        ));
    }
    let outcomes: Vec<String> = reply.body["entry"]
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .filter(|e| e["search"]["mode"] == "outcome")
                .map(|e| e["resource"]["issue"].to_string())
                .collect()
        })
        .unwrap_or_default();
    if !outcomes.is_empty() {
        return Some(format!(
            "{shown} → 200 with warnings {}",
            snippet(&outcomes.join(" "))
        ));
    }
    let ids = crate::common::match_ids(&reply.body);
    match (must_match, ids.iter().any(|m| m == id)) {
        (true, false) => Some(format!("{shown} → 200, {id} not among the matches {ids:?}")),
        (false, true) => Some(format!(
            "{shown} → 200, must not match {id} but did (matches {ids:?})"
        )),
        _ => None,
    }
}

async fn every_offered_parameter_finds_its_fixture(backend: Backend) {
    let started = Instant::now();
    let registry = registry();
    let server = TestServer::start(backend).await;
    let metadata = server.get("metadata").await;
    assert_eq!(
        metadata.status,
        StatusCode::OK,
        "metadata: {}",
        metadata.text
    );

    // (type, param) → problems
    let mut failures: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    let mut reports: BTreeMap<&str, TypeReport> = BTreeMap::new();
    let mut structural = Vec::new();

    for &resource_type in TYPES {
        let mut report = TypeReport::default();
        // PUT the fixtures; what the server stored (meta, pseudonym) is what it indexed.
        let mut stored: Vec<(String, Value, Value)> = Vec::new(); // (id, as written, as stored)
        for (file, fixture) in fixtures(resource_type) {
            let id = fixture["id"]
                .as_str()
                .unwrap_or_else(|| panic!("{file}: no id"))
                .to_string();
            if resource_type == "AuditEvent" {
                let body = store_as_server(&server, resource_type, &id, fixture.clone()).await;
                stored.push((id, fixture, body));
                continue;
            }
            let reply = server.put(&format!("{resource_type}/{id}"), &fixture).await;
            assert!(
                reply.status == StatusCode::CREATED || reply.status == StatusCode::OK,
                "PUT {resource_type}/{id} ({file}) → {}: {}",
                reply.status,
                reply.text
            );
            let body = if reply.body["resourceType"] == resource_type {
                reply.body.clone()
            } else {
                server.get(&format!("{resource_type}/{id}")).await.body
            };
            stored.push((id, fixture, body));
        }

        let offered: Vec<(String, String)> = metadata.body["rest"][0]["resource"]
            .as_array()
            .expect("rest[0].resource")
            .iter()
            .find(|r| r["type"] == resource_type)
            .unwrap_or_else(|| panic!("metadata lists no {resource_type}"))["searchParam"]
            .as_array()
            .map(|params| {
                params
                    .iter()
                    .map(|p| {
                        (
                            p["name"].as_str().unwrap_or_default().to_string(),
                            p["type"].as_str().unwrap_or_default().to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        report.offered = offered.len();
        let offered_names: BTreeSet<String> = offered.iter().map(|(n, _)| n.clone()).collect();
        report.not_offered = spec_codes(resource_type)
            .into_iter()
            .filter(|c| !offered_names.contains(c))
            .collect();
        let minimum = MIN_OFFERED
            .iter()
            .find(|(t, _)| *t == resource_type)
            .map_or(0, |(_, n)| *n);
        if offered.len() < minimum {
            structural.push(format!("{resource_type}: metadata offers {} search parameters, expected at least {minimum}", offered.len()));
        }

        for (code, kind_name) in &offered {
            report.walked += 1;
            let mut problems = Vec::new();
            let Some(param) = registry.get(resource_type, code) else {
                problems.push(format!(
                    "metadata offers `{code}` but the registry has no such parameter"
                ));
                failures.insert((resource_type.to_string(), code.clone()), problems);
                continue;
            };
            if param.kind.code() != kind_name {
                problems.push(format!(
                    "metadata says type {kind_name}, the definition says {}",
                    param.kind.code()
                ));
            }
            let protected = is_protected(&registry, resource_type, code, param.kind);
            // Some fixture, as written, must populate the parameter (lastUpdated is the server's).
            let written = stored.iter().any(|(_, fixture, _)| {
                !defined_values(&registry, resource_type, code, fixture).is_empty()
            });
            if !written && code != "_lastUpdated" {
                problems.push(format!("fixture lacks a value for {code}"));
            }
            let mut probes = 0;
            for (id, _, body) in &stored {
                let defined = defined_values(&registry, resource_type, code, body);
                let values: Vec<&IndexValue> = defined.iter().collect();
                let text = body.to_string();
                let mut seen = BTreeSet::new();
                for value in &values {
                    if let Some(literal) = literal(value)
                        && !text.contains(literal)
                    {
                        problems.push(format!(
                            "{id}: extracted value {literal:?} does not occur in the resource"
                        ));
                    }
                    let Some(p) = probe(code, protected, value, &values) else {
                        continue;
                    };
                    probes += 1;
                    for (name, positive) in &p.positives {
                        if !seen.insert((name.clone(), positive.clone(), true)) {
                            continue;
                        }
                        report.searches += 1;
                        if let Some(problem) =
                            search(&server, resource_type, name, positive, id, true).await
                        {
                            problems.push(problem);
                        }
                    }
                    if let Some((name, negative)) = &p.negative
                        && seen.insert((name.clone(), negative.clone(), false))
                    {
                        report.searches += 1;
                        if let Some(problem) =
                            search(&server, resource_type, name, negative, id, false).await
                        {
                            problems.push(problem);
                        }
                    }
                }
            }
            // The hand-written searches for this parameter.
            let mut by_hand = 0;
            for (_, id, queries) in HAND_WRITTEN.iter().filter(|(t, _, _)| *t == resource_type) {
                for query in queries
                    .iter()
                    .filter(|q| q.split(['=', ':']).next() == Some(code.as_str()))
                {
                    by_hand += 1;
                    report.searches += 1;
                    let pairs: Vec<(&str, &str)> = query
                        .split('&')
                        .map(|p| p.split_once('=').unwrap_or((p, "")))
                        .collect();
                    if let Some(problem) =
                        search_pairs(&server, resource_type, &pairs, id, true).await
                    {
                        problems.push(format!("{problem} (hand-written)"));
                    }
                }
            }
            if by_hand == 0 {
                problems.push(format!("no hand-written search for {code} in HAND_WRITTEN"));
            }
            if probes == 0 && written {
                problems.push(format!(
                    "no stored value of {code} can be searched for (no code, id or value)"
                ));
            }
            if !problems.is_empty() {
                failures.insert((resource_type.to_string(), code.clone()), problems);
            }
        }
        reports.insert(resource_type, report);
    }

    // Report.
    let mut summary = format!(
        "search parameter walk on {backend:?} ({:.1} s)\n",
        started.elapsed().as_secs_f64()
    );
    for (resource_type, report) in &reports {
        summary.push_str(&format!(
            "  {resource_type:<17} offered {:>3}, walked {:>3}, searches {:>4}; not offered: {}\n",
            report.offered,
            report.walked,
            report.searches,
            if report.not_offered.is_empty() {
                "-".to_string()
            } else {
                report.not_offered.join(", ")
            }
        ));
    }
    let mut known = Vec::new();
    let mut unexpected = structural;
    for ((resource_type, code), problems) in &failures {
        match KNOWN_GAPS
            .iter()
            .find(|(t, c, _)| t == resource_type && c == code)
        {
            Some((_, _, why)) => known.push(format!(
                "{resource_type}.{code} [known gap: {why}]\n      {}",
                problems.join("\n      ")
            )),
            None => unexpected.push(format!(
                "{resource_type}.{code}:\n      {}",
                problems.join("\n      ")
            )),
        }
    }
    for (resource_type, code, why) in KNOWN_GAPS {
        if !failures.contains_key(&(resource_type.to_string(), code.to_string())) {
            summary.push_str(&format!(
                "  KNOWN_GAPS entry {resource_type}.{code} ({why}) passes now: remove it\n"
            ));
        }
    }
    if !known.is_empty() {
        summary.push_str(&format!(
            "  {} known gap(s), skipped:\n    {}\n",
            known.len(),
            known.join("\n    ")
        ));
    }
    println!("{summary}");
    let walked: usize = reports.values().map(|r| r.walked).sum();
    assert!(
        unexpected.is_empty(),
        "{} of {walked} search parameters failed on {backend:?}:\n    {}\n{summary}",
        unexpected.len(),
        unexpected.join("\n    ")
    );
}

both_backends!(every_offered_parameter_finds_its_fixture);
