//! The code system of token parameters over `code` elements.
//!
//! A `code` element (`Observation.status`, `Patient.gender`) carries no system: its required
//! binding implies one (`http://hl7.org/fhir/observation-status`). R4 token search matches
//! `system|code` against that implied system, so `Patient?gender=http://hl7.org/fhir/
//! administrative-gender|female` must find a female Patient. Index rows of such parameters are
//! therefore written with the implied system, taken from the definitions: a parameter gets one
//! only when every alternative of its expression is a plain path to a `code` element whose
//! required binding draws on one code system, all the same. A parameter that mixes codes with
//! Codings (whose missing system means "no system") or with unbound codes keeps them as they are.

use std::collections::HashMap;

use super::registry::{ParamType, SearchParamRegistry};
use super::sensitivity::element_paths;

/// (resource type, parameter code) → the code system its `code` values belong to.
#[derive(Debug, Default, Clone)]
pub struct ImpliedSystems(HashMap<(String, String), Implied>);

/// The implied system of one parameter and the codes its binding allows.
#[derive(Debug, Clone)]
pub struct Implied {
    pub system: String,
    /// Sorted; the only codes a valid resource can hold there.
    pub codes: Vec<String>,
}

impl ImpliedSystems {
    /// The implied systems of every token parameter of `resource_types` in `registry`;
    /// `bound_system(type, steps)` is the one system of the required binding of the `code`
    /// element at `steps`, with the binding's codes (see `Validator::required_code_system`).
    pub fn from_bindings(
        registry: &SearchParamRegistry,
        resource_types: &[String],
        bound_system: impl Fn(&str, &[String]) -> Option<(String, Vec<String>)>,
    ) -> ImpliedSystems {
        let mut systems = HashMap::new();
        for resource_type in resource_types {
            for param in registry.params_for(resource_type) {
                if param.kind != ParamType::Token {
                    continue;
                }
                let Some(paths) = param
                    .expression_text_for(resource_type)
                    .and_then(|expression| element_paths(resource_type, expression))
                else {
                    continue;
                };
                let found: Option<Vec<(String, Vec<String>)>> = paths
                    .iter()
                    .map(|steps| bound_system(resource_type, steps))
                    .collect();
                let Some(found) = found else { continue };
                let Some((system, _)) = found.first() else {
                    continue;
                };
                if found.iter().all(|(other, _)| other == system) {
                    let mut codes: Vec<String> =
                        found.iter().flat_map(|(_, codes)| codes.clone()).collect();
                    codes.sort();
                    codes.dedup();
                    let system = system.clone();
                    systems.insert(
                        (resource_type.clone(), param.code.clone()),
                        Implied { system, codes },
                    );
                }
            }
        }
        ImpliedSystems(systems)
    }

    /// The system the values of token parameter `code` of `resource_type` imply, if any.
    pub fn get(&self, resource_type: &str, code: &str) -> Option<&str> {
        self.0
            .get(&(resource_type.to_string(), code.to_string()))
            .map(|implied| implied.system.as_str())
    }

    /// Every (resource type, parameter code) with its implied system, for upgrading rows
    /// written without it.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str, &Implied)> {
        self.0
            .iter()
            .map(|((ty, code), implied)| (ty.as_str(), code.as_str(), implied))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fhir::validation::tests::validator;
    use crate::search::registry::tests::r4;

    fn implied() -> ImpliedSystems {
        let validator = validator();
        ImpliedSystems::from_bindings(r4(), validator.resource_types(), |ty, steps| {
            validator.required_code_system(ty, steps)
        })
    }

    #[test]
    fn code_elements_with_a_required_binding_imply_its_system() {
        let implied = implied();
        for (ty, code, system) in [
            (
                "Patient",
                "gender",
                "http://hl7.org/fhir/administrative-gender",
            ),
            (
                "Observation",
                "status",
                "http://hl7.org/fhir/observation-status",
            ),
            (
                "Consent",
                "status",
                "http://hl7.org/fhir/consent-state-codes",
            ),
            ("Claim", "use", "http://hl7.org/fhir/claim-use"),
            ("Coverage", "status", "http://hl7.org/fhir/fm-status"),
            ("Device", "status", "http://hl7.org/fhir/device-status"),
        ] {
            assert_eq!(implied.get(ty, code), Some(system), "{ty}.{code}");
        }
        let (_, _, status) = implied
            .iter()
            .find(|(ty, code, _)| (*ty, *code) == ("Observation", "status"))
            .expect("Observation.status");
        assert!(status.codes.iter().any(|c| c == "amended"));
    }

    #[test]
    fn codings_identifiers_and_other_types_imply_nothing() {
        let implied = implied();
        for (ty, code) in [
            ("Observation", "code"), // CodeableConcept: its codings say their system
            ("Observation", "combo-code"), // CodeableConcepts, and a union
            ("Patient", "identifier"), // Identifier
            ("Patient", "_id"),      // not a code element
            ("Patient", "active"),   // boolean
        ] {
            assert_eq!(implied.get(ty, code), None, "{ty}.{code}");
        }
    }
}
