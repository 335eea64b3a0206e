//! Expanding the base spec's ValueSets into plain code lists, once, at load time.
//!
//! Only what can be enumerated from the spec's own files is expanded: explicit `concept` lists,
//! whole CodeSystems with `content = complete` (nested concepts included) and imports of other
//! such value sets. A value set that needs a filter or an external terminology (SNOMED CT,
//! LOINC, UCUM, MIME types, …) is not expandable; bindings to it are not enforced.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::hierarchy::Hierarchy;
use super::spec::{Compose, ConceptSet, SpecResource, unversioned};

/// How many codes a diagnostics text lists before it says "and N more".
const LISTED_CODES: usize = 20;

/// The codes of one expanded value set, grouped by code system.
#[derive(Debug)]
pub(super) struct ValueSetCodes {
    /// Canonical URL of the value set, without version.
    pub url: String,
    systems: Vec<(String, HashSet<String>)>,
    /// The allowed codes, for diagnostics ("active, inactive, … and 3 more").
    pub listing: String,
}

impl ValueSetCodes {
    /// Does the value set draw codes from `system`?
    pub fn covers(&self, system: &str) -> bool {
        self.systems.iter().any(|(known, _)| known == system)
    }

    pub fn contains(&self, system: &str, code: &str) -> bool {
        self.systems
            .iter()
            .any(|(known, codes)| known == system && codes.contains(code))
    }

    /// Each code system with its codes.
    pub fn systems(&self) -> impl Iterator<Item = (&str, &HashSet<String>)> {
        self.systems
            .iter()
            .map(|(system, codes)| (system.as_str(), codes))
    }

    /// For `code`-typed elements, whose system is implied by the binding.
    pub fn contains_code(&self, code: &str) -> bool {
        self.systems.iter().any(|(_, codes)| codes.contains(code))
    }
}

/// The ValueSets and CodeSystems of the definitions folder, with memoised expansions.
#[derive(Default)]
pub(super) struct Terminology {
    value_sets: HashMap<String, Compose>,
    /// Complete code systems only: their codes in definition order and their hierarchy.
    code_systems: HashMap<String, Hierarchy>,
    expanded: HashMap<String, Option<Arc<ValueSetCodes>>>,
}

impl Terminology {
    /// Takes the ValueSets and CodeSystems out of a definitions Bundle; the first definition of a
    /// URL wins.
    pub fn add(&mut self, resources: impl Iterator<Item = SpecResource>) {
        for resource in resources {
            let Some(url) = resource.url else { continue };
            match resource.resource_type.as_str() {
                "ValueSet" => {
                    if let Some(compose) = resource.compose {
                        self.value_sets.entry(url).or_insert(compose);
                    }
                }
                "CodeSystem" if resource.content.as_deref() == Some("complete") => {
                    self.code_systems.entry(url).or_insert_with(|| {
                        Hierarchy::build(
                            &resource.concept,
                            &resource.property,
                            resource.hierarchy_meaning.as_deref(),
                        )
                    });
                }
                _ => {}
            }
        }
    }

    /// The codes of the value set at `url` (a `|version` suffix is ignored), or `None` when the
    /// spec's files cannot enumerate it.
    pub fn expand(&mut self, url: &str) -> Option<Arc<ValueSetCodes>> {
        let url = unversioned(url);
        if let Some(known) = self.expanded.get(url) {
            return known.clone();
        }
        let mut visiting = HashSet::new();
        let codes = self.expand_uncached(url, &mut visiting);
        if codes.is_none() {
            tracing::debug!(
                value_set = url,
                "required binding not enforced: value set cannot be expanded from the spec files"
            );
        }
        let codes = codes.map(|systems| Arc::new(ValueSetCodes::new(url, systems)));
        self.expanded.insert(url.to_owned(), codes.clone());
        codes
    }

    /// The code systems of a value set made only of whole code systems (`include: [{system}]`
    /// with no concepts, filters, imports or excludes), or `None`. Such a value set cannot be
    /// enumerated when its systems are external (LOINC, MDC), but a binding to it can still be
    /// checked system by system; profiles use this, `:in` searches do not.
    pub fn whole_systems(&self, url: &str) -> Option<Vec<String>> {
        let compose = self.value_sets.get(unversioned(url))?;
        if !compose.exclude.is_empty() || compose.include.is_empty() {
            return None;
        }
        compose
            .include
            .iter()
            .map(|set| {
                let whole =
                    set.concept.is_empty() && set.filter.is_empty() && set.value_set.is_empty();
                set.system
                    .as_deref()
                    .filter(|_| whole)
                    .map(|system| unversioned(system).to_owned())
            })
            .collect()
    }

    /// The hierarchy of the complete code system `system` (a `|version` suffix is ignored).
    pub fn hierarchy(&self, system: &str) -> Option<&Hierarchy> {
        self.code_systems.get(unversioned(system))
    }

    fn expand_uncached(
        &mut self,
        url: &str,
        visiting: &mut HashSet<String>,
    ) -> Option<Vec<(String, Vec<String>)>> {
        if !visiting.insert(url.to_owned()) {
            return None; // an import cycle: treat as not expandable
        }
        // Take the compose out while expanding imports, which need `&mut self`.
        let compose = self.value_sets.remove(url)?;
        let expanded = self.expand_compose(&compose, visiting);
        self.value_sets.insert(url.to_owned(), compose);
        expanded
    }

    fn expand_compose(
        &mut self,
        compose: &Compose,
        visiting: &mut HashSet<String>,
    ) -> Option<Vec<(String, Vec<String>)>> {
        let mut systems: Vec<(String, Vec<String>)> = Vec::new();
        for include in &compose.include {
            for (system, codes) in self.concept_set(include, visiting)? {
                match systems.iter_mut().find(|(known, _)| *known == system) {
                    Some((_, known)) => known.extend(codes),
                    None => systems.push((system, codes)),
                }
            }
        }
        for exclude in &compose.exclude {
            // Only explicit code lists can be subtracted without a terminology server.
            let system = exclude.system.as_deref()?;
            if !exclude.filter.is_empty()
                || !exclude.value_set.is_empty()
                || exclude.concept.is_empty()
            {
                return None;
            }
            if let Some((_, codes)) = systems.iter_mut().find(|(known, _)| known == system) {
                codes.retain(|code| {
                    !exclude
                        .concept
                        .iter()
                        .any(|excluded| excluded.code == *code)
                });
            }
        }
        Some(systems)
    }

    fn concept_set(
        &mut self,
        set: &ConceptSet,
        visiting: &mut HashSet<String>,
    ) -> Option<Vec<(String, Vec<String>)>> {
        if !set.filter.is_empty() {
            return None;
        }
        match (&set.system, set.value_set.is_empty()) {
            (Some(system), true) if !set.concept.is_empty() => Some(vec![(
                system.clone(),
                set.concept
                    .iter()
                    .map(|concept| concept.code.clone())
                    .collect(),
            )]),
            (Some(system), true) => {
                let codes = self.hierarchy(system)?.codes();
                Some(vec![(unversioned(system).to_owned(), codes.to_vec())])
            }
            (None, false) => {
                let mut all = Vec::new();
                for imported in &set.value_set {
                    all.extend(self.expand_uncached(unversioned(imported), visiting)?);
                }
                Some(all)
            }
            // A system intersected with value sets, or an empty include: not worth guessing.
            _ => None,
        }
    }
}

impl ValueSetCodes {
    fn new(url: &str, systems: Vec<(String, Vec<String>)>) -> Self {
        let all: Vec<&str> = systems
            .iter()
            .flat_map(|(_, codes)| codes.iter().map(String::as_str))
            .collect();
        let mut listing = all
            .iter()
            .take(LISTED_CODES)
            .copied()
            .collect::<Vec<_>>()
            .join(", ");
        if all.len() > LISTED_CODES {
            listing.push_str(&format!(" and {} more", all.len() - LISTED_CODES));
        }
        let systems = systems
            .into_iter()
            .map(|(system, codes)| (system, codes.into_iter().collect()))
            .collect();
        ValueSetCodes {
            url: url.to_owned(),
            systems,
            listing,
        }
    }
}
