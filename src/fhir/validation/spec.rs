//! Reading the spec's definition Bundles: only the fields validation uses are deserialised, the
//! rest of each (large) file is skipped without being built into a `Value`.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::LoadError;

/// A Bundle of definitions (`profiles-*.json`, `valuesets.json`, …).
#[derive(Deserialize)]
pub(super) struct Bundle {
    #[serde(default)]
    entry: Vec<Entry>,
}

#[derive(Deserialize)]
struct Entry {
    resource: Option<SpecResource>,
}

impl Bundle {
    pub(super) fn into_resources(self) -> impl Iterator<Item = SpecResource> {
        self.entry.into_iter().filter_map(|entry| entry.resource)
    }
}

/// The fields of StructureDefinition, ValueSet and CodeSystem that validation reads, in one
/// struct: the Bundles mix resource types, and an internally tagged enum would buffer every entry.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct SpecResource {
    pub resource_type: String,
    pub id: Option<String>,
    pub url: Option<String>,
    /// StructureDefinition.kind: `resource`, `complex-type`, `primitive-type`, `logical`.
    pub kind: Option<String>,
    pub snapshot: Option<Snapshot>,
    /// ValueSet.compose.
    pub compose: Option<Compose>,
    /// CodeSystem.content: only `complete` code systems can be enumerated.
    pub content: Option<String>,
    /// CodeSystem.concept (nested hierarchies).
    #[serde(default)]
    pub concept: Vec<Concept>,
    /// CodeSystem.hierarchyMeaning: whether nesting means is-a.
    pub hierarchy_meaning: Option<String>,
    /// CodeSystem.property: what the concept properties mean (which link concepts).
    #[serde(default)]
    pub property: Vec<PropertyDef>,
}

#[derive(Deserialize)]
pub(super) struct Snapshot {
    #[serde(default)]
    pub element: Vec<ElementDef>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ElementDef {
    pub path: String,
    #[serde(default)]
    pub min: u32,
    #[serde(rename = "type", default)]
    pub types: Vec<TypeRef>,
    pub content_reference: Option<String>,
    pub binding: Option<BindingDef>,
    pub slice_name: Option<String>,
    #[serde(default)]
    pub is_summary: bool,
}

#[derive(Deserialize)]
pub(super) struct TypeRef {
    pub code: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct BindingDef {
    pub strength: String,
    pub value_set: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct Compose {
    #[serde(default)]
    pub include: Vec<ConceptSet>,
    #[serde(default)]
    pub exclude: Vec<ConceptSet>,
}

/// `ValueSet.compose.include` / `exclude`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ConceptSet {
    pub system: Option<String>,
    #[serde(default)]
    pub concept: Vec<Concept>,
    #[serde(default)]
    pub filter: Vec<serde::de::IgnoredAny>,
    #[serde(default)]
    pub value_set: Vec<String>,
}

/// A code, with its children when it comes from a CodeSystem hierarchy.
#[derive(Deserialize)]
pub(super) struct Concept {
    pub code: String,
    #[serde(default)]
    pub concept: Vec<Concept>,
    /// CodeSystem.concept.property: only code-valued ones matter (links to other concepts).
    #[serde(default)]
    pub property: Vec<ConceptProperty>,
}

/// `CodeSystem.property`: a concept property's code and its formal meaning.
#[derive(Deserialize)]
pub(super) struct PropertyDef {
    pub code: String,
    pub uri: Option<String>,
}

/// `CodeSystem.concept.property`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ConceptProperty {
    pub code: String,
    pub value_code: Option<String>,
}

/// Reads and parses one JSON file of the definitions folder.
pub(super) fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T, LoadError> {
    let bytes = std::fs::read(path).map_err(|source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|source| LoadError::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// Like [`read_json`] for a Bundle the folder may leave out (the v2/v3 code systems).
pub(super) fn read_optional_bundle(path: PathBuf) -> Result<Option<Bundle>, LoadError> {
    if path.exists() {
        read_json(&path).map(Some)
    } else {
        Ok(None)
    }
}

/// Strips a `|version` suffix from a canonical URL (`…/ValueSet/x|4.0.1`).
pub(super) fn unversioned(url: &str) -> &str {
    url.split_once('|').map_or(url, |(base, _)| base)
}
