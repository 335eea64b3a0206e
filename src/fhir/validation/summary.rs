//! `_summary` and `_elements`: which top-level elements of a resource a subsetted answer keeps,
//! read from the base StructureDefinitions (`isSummary`, `min`) loaded with the validator.
//! <https://hl7.org/fhir/R4/search.html#summary>, <https://hl7.org/fhir/R4/search.html#elements>

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use super::spec::SpecResource;

/// What a subsetted answer keeps of each resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subset {
    /// `_summary=true`: the elements the base definition marks `isSummary`.
    Summary,
    /// `_summary=text`: `text` and the mandatory elements.
    Text,
    /// `_summary=data`: everything but `text`.
    Data,
    /// `_elements=a,b`: those elements and the mandatory ones.
    Elements(Vec<String>),
}

/// Top-level element names of one resource type; a choice element keeps its `[x]`.
#[derive(Debug, Default)]
struct TypeElements {
    summary: Vec<String>,
    mandatory: Vec<String>,
}

/// Per resource type, its summary and mandatory top-level elements.
#[derive(Debug, Default)]
pub struct ElementSummary {
    by_type: HashMap<String, TypeElements>,
}

/// The tag a subsetted resource carries (R4 search.html#summary).
const SUBSETTED: (&str, &str) = (
    "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
    "SUBSETTED",
);

impl ElementSummary {
    pub(super) fn build(definitions: &[SpecResource]) -> ElementSummary {
        let mut by_type = HashMap::new();
        for definition in definitions {
            if definition.resource_type != "StructureDefinition"
                || definition.kind.as_deref() != Some("resource")
            {
                continue;
            }
            let (Some(resource_type), Some(snapshot)) =
                (definition.id.as_deref(), &definition.snapshot)
            else {
                continue;
            };
            let mut elements = TypeElements::default();
            for element in &snapshot.element {
                let Some(name) = element
                    .path
                    .strip_prefix(resource_type)
                    .and_then(|rest| rest.strip_prefix('.'))
                else {
                    continue;
                };
                if name.contains('.') {
                    continue;
                }
                if element.is_summary {
                    elements.summary.push(name.to_string());
                }
                if element.min > 0 {
                    elements.mandatory.push(name.to_string());
                }
            }
            by_type.insert(resource_type.to_string(), elements);
        }
        ElementSummary { by_type }
    }

    /// Reduce `resource` to what `subset` keeps, and tag it SUBSETTED. `id`, `meta` and
    /// `resourceType` always stay; a primitive's `_name` sibling goes with its element.
    pub fn apply(&self, resource: &mut Value, subset: &Subset) {
        let Some(object) = resource.as_object_mut() else {
            return;
        };
        let resource_type = object
            .get("resourceType")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let elements = self.by_type.get(&resource_type);
        let listed =
            |names: &[String], key: &str| names.iter().any(|name| element_matches(name, key));
        let mandatory = |key: &str| elements.is_some_and(|e| listed(&e.mandatory, key));
        let keep = |key: &str| -> bool {
            let key = key.strip_prefix('_').unwrap_or(key);
            if matches!(key, "resourceType" | "id" | "meta") {
                return true;
            }
            match subset {
                Subset::Summary => {
                    elements.is_some_and(|e| listed(&e.summary, key)) || mandatory(key)
                }
                Subset::Text => key == "text" || mandatory(key),
                Subset::Data => key != "text",
                Subset::Elements(names) => listed(names, key) || mandatory(key),
            }
        };
        object.retain(|key, _| keep(key));
        tag_subsetted(object);
    }
}

/// Whether JSON property `key` is the element `name` (`value[x]` matches `valueQuantity`).
fn element_matches(name: &str, key: &str) -> bool {
    match name.strip_suffix("[x]") {
        Some(stem) => key
            .strip_prefix(stem)
            .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_uppercase())),
        None => name == key,
    }
}

fn tag_subsetted(object: &mut Map<String, Value>) {
    let meta = object.entry("meta").or_insert_with(|| json!({}));
    let Some(meta) = meta.as_object_mut() else {
        return;
    };
    let tags = meta.entry("tag").or_insert_with(|| json!([]));
    if let Some(tags) = tags.as_array_mut()
        && !tags
            .iter()
            .any(|t| t["system"] == SUBSETTED.0 && t["code"] == SUBSETTED.1)
    {
        tags.push(json!({"system": SUBSETTED.0, "code": SUBSETTED.1, "display": "subsetted"}));
    }
}

#[cfg(test)]
mod tests {
    use super::element_matches;

    #[test]
    fn choice_elements_match_their_typed_names() {
        assert!(element_matches("value[x]", "valueQuantity"));
        assert!(!element_matches("value[x]", "values"));
        assert!(element_matches("status", "status"));
        assert!(!element_matches("status", "statusReason"));
    }
}
