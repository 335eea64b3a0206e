//! This project's own profiles (`profiles/`): StructureDefinitions that constrain a base resource,
//! enforced on every resource that claims one in `meta.profile`, and on request by
//! `$validate?profile=`. <https://hl7.org/fhir/R4/profiling.html>
//!
//! A profile is read from its differential alone (no snapshot is generated): each element becomes
//! a [`Rule`] — a path from the resource root and the constraints the element states:
//!
//! - `min` / `max`, counted within each occurrence of the parent element;
//! - `type`: the types a choice element (`value[x]`) may take, and Reference `targetProfile`s;
//! - `fixed[x]` and `pattern[x]`;
//! - `required` bindings (weaker strengths document intent and are not enforced).
//!
//! [`compile`] turns a StructureDefinition into rules and refuses what it cannot enforce
//! (slicing other than by type on a choice, invariants, `maxLength`, …): the server never claims
//! a resource conforms to a rule it skipped. [`check`] walks a resource along the rules and says
//! how each rule is read.
//!
//! The folder also holds the ValueSets the profiles bind to; every resource in it is served
//! read-only as a [`ConformanceResource`] (`GET /fhir/StructureDefinition/holter-device`).

mod check;
mod compile;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use serde_json::{Value, json};

use super::LoadError;
use super::spec::{SpecResource, unversioned};
use super::terminology::{Terminology, ValueSetCodes};
use crate::fhir::instant::format_instant;

/// The resource types the profiles folder may hold.
const CONFORMANCE_TYPES: &[&str] = &["StructureDefinition", "ValueSet", "CodeSystem"];

/// A resource of the profiles folder, as the server serves it.
#[derive(Debug, Clone)]
pub struct ConformanceResource {
    pub resource_type: String,
    pub id: String,
    /// The file's content, with `meta.versionId` 1 and `meta.lastUpdated` set.
    pub resource: Value,
    /// The file's modification time, in microseconds since the epoch.
    pub last_updated: i64,
    /// The file it was read from, for start-up errors.
    pub(super) source: PathBuf,
}

/// The loaded profiles, by canonical URL, and the folder's resources.
#[derive(Default)]
pub(super) struct Profiles {
    by_url: HashMap<String, Profile>,
    conformance: Vec<ConformanceResource>,
}

/// One profile, compiled from its differential.
pub(super) struct Profile {
    pub url: String,
    /// The resource type it constrains.
    pub resource_type: String,
    rules: Vec<Rule>,
}

/// The constraints of one differential element.
struct Rule {
    /// Steps from the resource to the element's parent, then the element itself.
    parents: Vec<Step>,
    last: Step,
    min: Option<u32>,
    /// `None`: not constrained; `Some(None)`: `*`.
    max: Option<Option<u32>>,
    /// Empty: the differential does not constrain the types.
    types: Vec<TypeRule>,
    fixed: Option<Value>,
    pattern: Option<Value>,
    binding: Option<Binding>,
}

/// One step of an element path, by JSON property.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    /// A property by its JSON name: `subject`, or a choice renamed to one type (`valueQuantity`).
    Field(String),
    /// A choice element in any of its types: `value` matches `valueQuantity`, `valueString`, …
    Choice(String),
}

impl Step {
    /// The element's name in a FHIRPath (`value` for `value[x]`).
    fn name(&self) -> &str {
        match self {
            Step::Field(name) | Step::Choice(name) => name,
        }
    }
}

/// An allowed type, with the resource types a Reference may point to (empty: any).
#[derive(Debug)]
struct TypeRule {
    code: String,
    targets: Vec<String>,
}

/// A required binding the validator can check.
struct Binding {
    value_set: String,
    codes: BoundCodes,
}

enum BoundCodes {
    /// An enumerated value set.
    Codes(Arc<ValueSetCodes>),
    /// Any code of these systems (a value set of whole external code systems, e.g. LOINC).
    Systems(Vec<String>),
}

/// A JSON file of the profiles folder.
struct FolderFile {
    path: PathBuf,
    resource: Value,
    modified: i64,
}

impl Profiles {
    /// Reads every `*.json` file directly in `dir` (its `examples/` are not loaded), adds the
    /// ValueSets and CodeSystems to `terminology` and compiles the StructureDefinitions.
    pub(super) fn load(
        dir: &Path,
        terminology: &mut Terminology,
        resource_types: &HashSet<String>,
    ) -> Result<Profiles, LoadError> {
        let files = read_folder(dir)?;
        let mut conformance = Vec::new();
        for file in &files {
            let (resource_type, id) = identify(file)?;
            if resource_type != "StructureDefinition" {
                let resource: SpecResource = serde_json::from_value(file.resource.clone())
                    .map_err(|source| LoadError::Json {
                        path: file.path.clone(),
                        source,
                    })?;
                terminology.add(std::iter::once(resource));
            }
            conformance.push(ConformanceResource {
                resource_type: resource_type.to_owned(),
                id: id.to_owned(),
                resource: with_meta(&file.resource, file.modified),
                last_updated: file.modified,
                source: file.path.clone(),
            });
        }

        let structures: Vec<&FolderFile> = files
            .iter()
            .filter(|file| file.resource["resourceType"] == "StructureDefinition")
            .collect();
        // Profiles may name each other as Reference targets, so every URL is known first.
        let mut profile_types = HashMap::new();
        for file in &structures {
            if let (Some(url), Some(ty)) = (
                file.resource["url"].as_str(),
                file.resource["type"].as_str(),
            ) {
                profile_types.insert(url.to_owned(), ty.to_owned());
            }
        }
        let mut by_url = HashMap::new();
        for file in structures {
            let context = compile::Context {
                resource_types,
                profile_types: &profile_types,
            };
            let profile =
                compile::profile(&file.resource, &context, terminology).map_err(|message| {
                    LoadError::Profile {
                        path: file.path.clone(),
                        message,
                    }
                })?;
            if by_url.contains_key(&profile.url) {
                let message = format!("a second StructureDefinition has the url {}", profile.url);
                return Err(LoadError::Profile {
                    path: file.path.clone(),
                    message,
                });
            }
            by_url.insert(profile.url.clone(), profile);
        }
        tracing::info!(folder = %dir.display(), profiles = by_url.len(), resources = conformance.len(), "loaded profiles");
        Ok(Profiles {
            by_url,
            conformance,
        })
    }

    /// The profile at `url` (a `|version` suffix is ignored).
    pub(super) fn get(&self, url: &str) -> Option<&Profile> {
        self.by_url.get(unversioned(url))
    }

    /// Profile URLs by the resource type they constrain, sorted.
    pub(super) fn by_type(&self) -> BTreeMap<String, Vec<String>> {
        let mut by_type: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for profile in self.by_url.values() {
            by_type
                .entry(profile.resource_type.clone())
                .or_default()
                .push(profile.url.clone());
        }
        by_type.values_mut().for_each(|urls| urls.sort());
        by_type
    }

    pub(super) fn conformance(&self) -> &[ConformanceResource] {
        &self.conformance
    }

    pub(super) fn conformance_resource(
        &self,
        resource_type: &str,
        id: &str,
    ) -> Option<&ConformanceResource> {
        self.conformance
            .iter()
            .find(|found| found.resource_type == resource_type && found.id == id)
    }
}

/// The `*.json` files directly in `dir`, in name order.
fn read_folder(dir: &Path) -> Result<Vec<FolderFile>, LoadError> {
    let io = |source| LoadError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.is_file() && path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let resource = super::spec::read_json::<Value>(&path)?;
            let modified = std::fs::metadata(&path)
                .and_then(|meta| meta.modified())
                .map_err(|source| LoadError::Io {
                    path: path.clone(),
                    source,
                })?
                .duration_since(UNIX_EPOCH)
                .map_or(0, |since| {
                    i64::try_from(since.as_micros()).unwrap_or(i64::MAX)
                });
            Ok(FolderFile {
                path,
                resource,
                modified,
            })
        })
        .collect()
}

/// The type and id of a folder file; only conformance resources with an id belong there.
fn identify(file: &FolderFile) -> Result<(&str, &str), LoadError> {
    let error = |message: &str| LoadError::Profile {
        path: file.path.clone(),
        message: message.to_owned(),
    };
    let resource_type = file.resource["resourceType"]
        .as_str()
        .ok_or_else(|| error("not a FHIR resource (no resourceType)"))?;
    if !CONFORMANCE_TYPES.contains(&resource_type) {
        return Err(error(
            "the profiles folder holds StructureDefinitions, ValueSets and CodeSystems only",
        ));
    }
    let id = file.resource["id"]
        .as_str()
        .ok_or_else(|| error("a conformance resource needs an id to be served"))?;
    Ok((resource_type, id))
}

/// The resource with `meta.versionId` and `meta.lastUpdated` as a stored version would carry.
fn with_meta(resource: &Value, modified: i64) -> Value {
    let mut resource = resource.clone();
    if let Some(object) = resource.as_object_mut() {
        let meta = object.entry("meta").or_insert_with(|| json!({}));
        if let Some(meta) = meta.as_object_mut() {
            meta.insert("versionId".into(), json!("1"));
            meta.insert("lastUpdated".into(), json!(format_instant(modified)));
        }
    }
    resource
}
