//! Validation of every resource written, against the R4 definitions in `fhir-resources/`.
//!
//! [`Validator::load`] reads the spec's own files once; [`Validator::validate`] is then cheap,
//! thread-safe and returns [`Issue`]s ready for an OperationOutcome. Nothing is hand-typed here:
//! types, elements, cardinalities and code lists all come from the definitions folder.
//!
//! The pieces, and why each is needed:
//!
//! - [`schema`]: `fhir.schema.json` checks structure — unknown elements, JSON types, required
//!   complex elements and lexical forms (dates, ids, strings). One validator per resource type,
//!   compiled on first use. Where the schema contradicts the rest of the spec (its enums, its
//!   ASCII-only strings) the spec wins; its module doc lists the corrections.
//! - [`elements`]: what the schema cannot say, taken from the StructureDefinition snapshots —
//!   required primitive elements (`Observation.status`), required bindings on `code`, `Coding`
//!   and `CodeableConcept` elements (every code list comes from the ValueSets), integer ranges.
//! - [`terminology`]: expands the bound ValueSets from `valuesets.json` and the v2/v3 code
//!   system Bundles, once, so a binding check is a hash look-up.
//! - [`profile`]: this project's own profiles (`profiles/`), checked on every resource that
//!   claims one in `meta.profile` and on request ([`Validator::validate_against`]).
//! - This file: the `resourceType`/`id` checks, nested resources (`contained`,
//!   `Bundle.entry.resource`, each validated as a resource of its own type), and the [`Report`]
//!   that caps and de-duplicates issues (schema and snapshot rules often see the same fault).
//!
//! Diagnostics name the element (as FHIRPath) and the rule, never the value sent: a bad
//! `birthDate` or name is PHI, and diagnostics end up in logs and audit trails.

mod elements;
mod hierarchy;
mod profile;
mod schema;
mod spec;
mod summary;

pub use hierarchy::{Subsumption, SubsumptionError};
pub use profile::ConformanceResource;
pub use summary::{ElementSummary, Subset};
mod terminology;
#[cfg(test)]
pub(crate) mod tests;

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::{Map, Value};

use crate::fhir::outcome::{Issue, IssueCode, Severity};
use elements::ElementRules;
use profile::Profiles;
use schema::Schemas;
use spec::{Bundle, read_json, read_optional_bundle};
use terminology::Terminology;

/// At most this many issues are returned for one resource; the client fixes those first.
const MAX_ISSUES: usize = 50;

/// Deeper JSON is refused before validation: both the schema and the walk recurse per level,
/// and no FHIR resource needs this many (a Questionnaire nests two levels per item level).
const MAX_DEPTH: usize = 100;

/// Why the definitions folder could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not valid JSON of the expected shape: {source}", path.display())]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("unexpected content in the definitions: {0}")]
    Definitions(&'static str),
    #[error("{}: {message}", path.display())]
    Profile { path: PathBuf, message: String },
}

/// The R4 definitions, ready to validate resources. Shared across requests (`Send + Sync`).
pub struct Validator {
    schemas: Schemas,
    elements: ElementRules,
    summary: ElementSummary,
    /// This project's profiles, from the profiles folder (empty without one).
    profiles: Profiles,
    /// Kept for `:in` / `:not-in` searches; expansions are memoised, hence the lock.
    terminology: std::sync::Mutex<Terminology>,
}

impl Validator {
    /// Loads the definitions from `dir` (the `fhir-resources/` folder): `fhir.schema.json`,
    /// `profiles-resources.json`, `profiles-types.json`, `valuesets.json` and, if present,
    /// `v3-codesystems.json` and `v2-tables.json`. No profiles: see [`Validator::load_with_profiles`].
    pub fn load(dir: &Path) -> Result<Validator, LoadError> {
        Self::load_with_profiles(dir, None)
    }

    /// Like [`Validator::load`], plus the StructureDefinitions, ValueSets and CodeSystems of the
    /// `profiles` folder (its `*.json` files; a missing folder means no profiles). Every profile
    /// must compile and every resource there must itself be valid R4, or loading fails.
    pub fn load_with_profiles(dir: &Path, profiles: Option<&Path>) -> Result<Validator, LoadError> {
        let started = Instant::now();
        // The largest file parses on a second thread while this one reads the rest.
        let (schema, types, resources, value_sets) = std::thread::scope(|scope| {
            let resources =
                scope.spawn(|| read_json::<Bundle>(&dir.join("profiles-resources.json")));
            let schema = read_json::<Value>(&dir.join("fhir.schema.json"));
            let types = read_json::<Bundle>(&dir.join("profiles-types.json"));
            let value_sets = [
                read_json::<Bundle>(&dir.join("valuesets.json")).map(Some),
                read_optional_bundle(dir.join("v3-codesystems.json")),
                read_optional_bundle(dir.join("v2-tables.json")),
            ];
            let resources = resources.join().unwrap_or(Err(LoadError::Definitions(
                "reading profiles-resources.json failed unexpectedly",
            )));
            (schema, types, resources, value_sets)
        });

        let schemas = Schemas::new(schema?)?;
        let mut terminology = Terminology::default();
        for bundle in value_sets {
            if let Some(bundle) = bundle? {
                terminology.add(bundle.into_resources());
            }
        }
        let resource_types: HashSet<String> = schemas.types().iter().cloned().collect();
        let definitions: Vec<_> = types?
            .into_resources()
            .chain(resources?.into_resources())
            .collect();
        let elements = ElementRules::build(&definitions, &resource_types, &mut terminology);
        let summary = ElementSummary::build(&definitions);
        let profiles = match profiles {
            Some(folder) if folder.is_dir() => {
                Profiles::load(folder, &mut terminology, &resource_types)?
            }
            _ => Profiles::default(),
        };

        let (bindings_enforced, bindings_skipped) = elements.binding_counts();
        tracing::info!(
            resource_types = schemas.types().len(),
            bindings_enforced,
            bindings_skipped,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "loaded FHIR R4 definitions"
        );
        let validator = Validator {
            schemas,
            elements,
            summary,
            profiles,
            terminology: std::sync::Mutex::new(terminology),
        };
        validator.check_conformance_resources()?;
        Ok(validator)
    }

    /// The profiles folder's resources are served as they are, so they must be valid R4.
    fn check_conformance_resources(&self) -> Result<(), LoadError> {
        for resource in self.profiles.conformance() {
            if let Some(issue) = self
                .validate(&resource.resource)
                .into_iter()
                .find(Issue::is_error)
            {
                return Err(LoadError::Profile {
                    path: resource.source.clone(),
                    message: issue.diagnostics,
                });
            }
        }
        Ok(())
    }

    /// The code system a `code` element's values belong to, from its required binding, with
    /// the binding's codes ([`ElementRules::required_code_system`]); `steps` are the FHIRPath names below the
    /// resource type.
    pub fn required_code_system(
        &self,
        resource_type: &str,
        steps: &[String],
    ) -> Option<(String, Vec<String>)> {
        self.elements.required_code_system(resource_type, steps)
    }

    /// The codes of the spec value set at `url`, by code system, or `None` when the spec's files
    /// cannot enumerate it (filters, external terminologies such as LOINC or SNOMED CT).
    pub fn value_set_codes(&self, url: &str) -> Option<Vec<(String, Vec<String>)>> {
        let expanded = self.terminology.lock().ok()?.expand(url)?;
        Some(
            expanded
                .systems()
                .map(|(system, codes)| (system.to_string(), codes.iter().cloned().collect()))
                .collect(),
        )
    }

    /// `code` of `system` and the codes below or above it in the code system's is-a hierarchy
    /// (`:below` / `:above` token searches), from the code systems the definitions define in
    /// full. A flat code system subsumes each code by itself alone.
    pub fn subsumption(
        &self,
        system: &str,
        code: &str,
        direction: Subsumption,
    ) -> Result<Vec<String>, SubsumptionError> {
        // Only the memoised expansions change under the lock; the hierarchies are read-only, so
        // a lock poisoned by a panic elsewhere still holds them intact.
        let terminology = self
            .terminology
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        terminology
            .hierarchy(system)
            .ok_or(SubsumptionError::UnknownSystem)?
            .closure(code, direction)
    }

    /// Summary and mandatory elements per type, for `_summary` and `_elements` (read from the
    /// same StructureDefinitions as the rules).
    pub fn element_summary(&self) -> &ElementSummary {
        &self.summary
    }

    /// The resource type the profile at `url` constrains, or `None` for a profile this server
    /// does not know.
    pub fn profile_type(&self, url: &str) -> Option<&str> {
        self.profiles
            .get(url)
            .map(|profile| profile.resource_type.as_str())
    }

    /// The loaded profiles' URLs by the resource type they constrain (for the
    /// CapabilityStatement's `supportedProfile`).
    pub fn supported_profiles(&self) -> BTreeMap<String, Vec<String>> {
        self.profiles.by_type()
    }

    /// A StructureDefinition, ValueSet or CodeSystem of the profiles folder, served read-only.
    pub fn conformance_resource(
        &self,
        resource_type: &str,
        id: &str,
    ) -> Option<&ConformanceResource> {
        self.profiles.conformance_resource(resource_type, id)
    }

    /// Every concrete R4 resource type name, sorted.
    pub fn resource_types(&self) -> &[String] {
        self.schemas.types()
    }

    pub fn is_resource_type(&self, name: &str) -> bool {
        self.schemas.index_of(name).is_some()
    }

    /// Validates one resource; its `resourceType` picks the definition. Returns every problem
    /// found, at most [`MAX_ISSUES`] (plus a note when there were more); empty means valid.
    pub fn validate(&self, resource: &Value) -> Vec<Issue> {
        let mut report = Report::default();
        self.validate_into(resource, &mut report);
        report.finish()
    }

    /// [`Validator::validate`], and also against the profile at `url` whether or not the resource
    /// claims it (`$validate?profile=`). A profile this server does not know is an error issue
    /// (`not-supported`); callers that must tell that apart ask [`Validator::profile_type`] first.
    pub fn validate_against(&self, resource: &Value, url: &str) -> Vec<Issue> {
        let mut report = Report::default();
        self.validate_into(resource, &mut report);
        match (self.profiles.get(url), resource) {
            (None, _) => report.push(Issue::error(
                IssueCode::NotSupported,
                format!("profile {} is not known to this server (see the CapabilityStatement's supportedProfile)", spec::unversioned(url)),
            )),
            (Some(profile), Value::Object(object)) if !claimed_profiles(object).any(|claimed| claimed == profile.url) => {
                match object.get("resourceType").and_then(Value::as_str) {
                    Some(found) if found == profile.resource_type => profile.check(object, found, &mut report),
                    _ => report.push(Issue::error(
                        IssueCode::Invalid,
                        format!("profile {} constrains {}, not this resource type", profile.url, profile.resource_type),
                    )),
                }
            }
            // Claimed profiles were checked with the rest.
            _ => {}
        }
        report.finish()
    }

    fn validate_into(&self, resource: &Value, report: &mut Report) {
        if !resource.is_object() {
            report.push(Issue::error(
                IssueCode::Structure,
                "the body must be a JSON object holding one FHIR resource",
            ));
        } else if depth(resource) > MAX_DEPTH {
            report.push(Issue::error(
                IssueCode::Structure,
                format!("the resource is nested more than {MAX_DEPTH} levels deep"),
            ));
        } else {
            self.check_resource(resource, None, report);
        }
    }

    /// The type named by `resourceType` and its index, or why there is none. The value is never
    /// echoed: it is whatever the client put there.
    fn resource_type<'v>(
        &self,
        object: &'v Map<String, Value>,
    ) -> Result<(&'v str, usize), (IssueCode, &'static str)> {
        match object.get("resourceType") {
            Some(Value::String(name)) => match self.schemas.index_of(name) {
                Some(index) => Ok((name, index)),
                None => Err((
                    IssueCode::NotSupported,
                    "resourceType is not a FHIR R4 resource type (see the CapabilityStatement)",
                )),
            },
            Some(_) => Err((IssueCode::Structure, "resourceType must be a string")),
            None => Err((
                IssueCode::Required,
                "resourceType is missing: it names the type of the resource",
            )),
        }
    }

    /// Checks one resource; `at` is its FHIRPath when it is nested in another one.
    fn check_resource(&self, resource: &Value, at: Option<&str>, report: &mut Report) {
        let Value::Object(object) = resource else {
            return;
        };
        if report.is_full() {
            return;
        }
        let (type_name, index) = match self.resource_type(object) {
            Ok(found) => found,
            Err((code, text)) => {
                report.push(resource_issue(code, at, text));
                return;
            }
        };
        let base = at.unwrap_or(type_name);

        if let Some(Value::String(id)) = object.get("id")
            && !is_fhir_id(id)
        {
            let expression = format!("{base}.id");
            report.push(
                Issue::error(
                    IssueCode::Value,
                    format!(
                        "{expression}: not a valid FHIR id (1 to 64 letters, digits, '-' or '.')"
                    ),
                )
                .at(expression),
            );
        }

        if let Some(validator) = self.schemas.validator(index) {
            // Enough errors to fill the report even after de-duplication, and no more.
            let mut errors: Vec<_> = validator
                .iter_errors(resource)
                .take(2 * MAX_ISSUES)
                .collect();
            errors.sort_by_key(schema::priority);
            for error in &errors {
                for issue in self.schemas.issues(error, resource, base) {
                    report.push(issue);
                }
            }
        }

        let nested = self.elements.check(type_name, object, base, report);
        self.check_claimed_profiles(type_name, object, base, report);
        for nested in nested {
            if nested.contained && nested.resource.get("contained").is_some() {
                let expression = format!("{}.contained", nested.expression);
                report.push(
                    Issue::error(
                        IssueCode::Invariant,
                        format!(
                            "{expression}: a contained resource must not contain resources (dom-2)"
                        ),
                    )
                    .at(expression),
                );
            }
            self.check_resource(nested.resource, Some(&nested.expression), report);
        }
    }
}

impl Validator {
    /// Checks a resource against each profile it claims in `meta.profile` that this server
    /// knows; R4 lets a resource claim profiles a server does not know, and those are accepted.
    fn check_claimed_profiles(
        &self,
        type_name: &str,
        object: &Map<String, Value>,
        base: &str,
        report: &mut Report,
    ) {
        for (index, url) in claimed_profiles(object).enumerate() {
            let Some(profile) = self.profiles.get(url) else {
                continue;
            };
            if profile.resource_type == type_name {
                profile.check(object, base, report);
            } else {
                let mut expression = format!("{base}.meta.profile");
                push_index(&mut expression, index);
                report.push(
                    Issue::error(
                        IssueCode::Invalid,
                        format!(
                            "{expression}: profile {} constrains {}, not {type_name}",
                            profile.url, profile.resource_type
                        ),
                    )
                    .at(expression),
                );
            }
        }
    }
}

/// The canonical URLs in `meta.profile`, without `|version`.
fn claimed_profiles(object: &Map<String, Value>) -> impl Iterator<Item = &str> {
    object
        .get("meta")
        .and_then(|meta| meta.get("profile"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(spec::unversioned)
}

/// An issue about a resource as a whole; `at` is its FHIRPath when it is nested.
fn resource_issue(code: IssueCode, at: Option<&str>, text: &str) -> Issue {
    match at {
        Some(at) => Issue::error(code, format!("{at}: {text}")).at(at),
        None => Issue::error(code, text),
    }
}

/// Collects issues: at most [`MAX_ISSUES`], one per element (the schema and the snapshot rules
/// can both see the same fault, e.g. a bad `id` or a missing `Narrative.div`).
#[derive(Default)]
pub(super) struct Report {
    issues: Vec<Issue>,
    reported: HashSet<String>,
    overflowed: bool,
}

impl Report {
    pub(super) fn push(&mut self, issue: Issue) {
        if let Some(expression) = &issue.expression
            && !self.reported.insert(expression.clone())
        {
            return;
        }
        if self.issues.len() < MAX_ISSUES {
            self.issues.push(issue);
        } else {
            self.overflowed = true;
        }
    }

    pub(super) fn is_full(&self) -> bool {
        self.issues.len() >= MAX_ISSUES
    }

    fn finish(mut self) -> Vec<Issue> {
        if self.overflowed {
            self.issues.push(Issue {
                severity: Severity::Information,
                code: IssueCode::Informational,
                diagnostics: format!(
                    "more problems were found; only the first {MAX_ISSUES} are listed"
                ),
                expression: None,
            });
        }
        self.issues
    }
}

/// Appends `.name` to a FHIRPath, quoting names that are not FHIRPath identifiers (unknown
/// properties are client input: `.`\`first name\``). Overlong names are cut.
pub(super) fn push_field(expression: &mut String, name: &str) {
    const LONGEST: usize = 64;
    let plain = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    expression.push('.');
    if plain && name.len() <= LONGEST {
        expression.push_str(name);
        return;
    }
    expression.push('`');
    for (count, c) in name.chars().enumerate() {
        if count == LONGEST {
            expression.push('…');
            break;
        }
        match c {
            '`' | '\\' => {
                expression.push('\\');
                expression.push(c);
            }
            c if c.is_control() => expression.push('?'),
            c => expression.push(c),
        }
    }
    expression.push('`');
}

/// Appends `[index]` to a FHIRPath.
pub(super) fn push_index(expression: &mut String, index: usize) {
    let _ = write!(expression, "[{index}]");
}

/// FHIR `id`: 1 to 64 of `[A-Za-z0-9\-\.]`.
fn is_fhir_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// Nesting depth of a JSON value, without recursion.
fn depth(value: &Value) -> usize {
    let mut deepest = 0;
    let mut pending = vec![(value, 1)];
    while let Some((value, level)) = pending.pop() {
        deepest = deepest.max(level);
        match value {
            Value::Array(items) => pending.extend(items.iter().map(|item| (item, level + 1))),
            Value::Object(object) => pending.extend(object.values().map(|item| (item, level + 1))),
            _ => {}
        }
    }
    deepest
}
