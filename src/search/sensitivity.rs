//! Which search parameters index person-identifying datatypes, derived from the spec itself.
//!
//! A parameter name says little (`accession`, `requisition`, `udi-carrier` are identifiers too),
//! so the decision follows the datatype each parameter's FHIRPath expression reaches in the
//! official JSON schema: `Specimen.accessionIdentifier` is an `Identifier`, `Device.udiCarrier.
//! carrierHRF` a `string`. [`phi`](super::phi) turns these datatypes into the protection policy.

use std::collections::HashSet;

use serde_json::{Map, Value};

use super::registry::{ParamType, SearchParamRegistry};

/// Datatypes whose values identify a person wherever they occur.
pub const IDENTIFYING_TYPES: &[&str] = &["Identifier", "ContactPoint", "HumanName", "Address"];

/// Datatypes holding free text.
pub const TEXT_TYPES: &[&str] = &["string", "markdown"];

/// The datatypes each (resource type, parameter code) reaches, for token and string parameters.
#[derive(Debug, Default, Clone)]
pub struct ParamDatatypes {
    identifying: HashSet<(String, String)>,
    free_text: HashSet<(String, String)>,
    /// Token parameters that reach `Identifier` elements (`:of-type` applies to them).
    identifiers: HashSet<(String, String)>,
}

impl ParamDatatypes {
    /// Work out the datatypes of every token and string parameter of every type in `registry`,
    /// from the `definitions` of the official `fhir.schema.json`.
    pub fn from_schema(
        schema: &Value,
        registry: &SearchParamRegistry,
        resource_types: &[String],
    ) -> ParamDatatypes {
        let mut result = ParamDatatypes::default();
        let Some(definitions) = schema.get("definitions").and_then(Value::as_object) else {
            return result;
        };
        for resource_type in resource_types {
            for param in registry.params_for(resource_type) {
                if !matches!(param.kind, ParamType::Token | ParamType::String) {
                    continue;
                }
                let Some(expression) = param.expression_text_for(resource_type) else {
                    continue;
                };
                let types = expression_datatypes(definitions, resource_type, expression);
                let key = (resource_type.clone(), param.code.clone());
                if param.kind == ParamType::Token && types.iter().any(|t| t == "Identifier") {
                    result.identifiers.insert(key.clone());
                }
                if types
                    .iter()
                    .any(|t| IDENTIFYING_TYPES.contains(&t.as_str()))
                {
                    result.identifying.insert(key.clone());
                }
                // A string parameter whose path cannot be resolved is assumed to be free text.
                if types.iter().any(|t| TEXT_TYPES.contains(&t.as_str()))
                    || (types.is_empty() && param.kind == ParamType::String)
                {
                    result.free_text.insert(key);
                }
            }
        }
        result
    }

    pub fn is_identifying(&self, resource_type: &str, code: &str) -> bool {
        self.identifying
            .contains(&(resource_type.to_string(), code.to_string()))
    }

    /// Whether token parameter `code` of `resource_type` reaches `Identifier` elements.
    pub fn reaches_identifier(&self, resource_type: &str, code: &str) -> bool {
        self.identifiers
            .contains(&(resource_type.to_string(), code.to_string()))
    }

    pub fn is_free_text(&self, resource_type: &str, code: &str) -> bool {
        self.free_text
            .contains(&(resource_type.to_string(), code.to_string()))
    }
}

/// The datatypes at the end of each alternative of `expression` on `resource_type`; empty when
/// no alternative could be resolved.
pub fn expression_datatypes(
    definitions: &Map<String, Value>,
    resource_type: &str,
    expression: &str,
) -> Vec<String> {
    let mut out = Vec::new();
    for alternative in split_top_level(expression, '|') {
        out.extend(path_datatypes(
            definitions,
            resource_type,
            &simplify(alternative),
        ));
    }
    out.sort();
    out.dedup();
    out
}

/// The element path of each alternative of `expression` on `resource_type`, as FHIRPath names
/// below the resource (`Observation.status` → `["status"]`), ignoring `where(…)` filters; `None`
/// when an alternative is anything but such a path (a cast, a function, another root).
pub fn element_paths(resource_type: &str, expression: &str) -> Option<Vec<Vec<String>>> {
    split_top_level(expression, '|')
        .into_iter()
        .map(|alternative| {
            let path = simplify(alternative);
            let mut steps = path.split('.').map(str::trim);
            let root = steps.next()?;
            let plain = |step: &str| {
                !step.is_empty() && step.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            };
            let steps: Vec<String> = steps.map(str::to_string).collect();
            (matches!(root, "Resource" | "DomainResource") || root == resource_type)
                .then_some(())
                .filter(|_| !steps.is_empty() && steps.iter().all(|s| plain(s)))
                .map(|_| steps)
        })
        .collect()
}

/// Drop what does not change the datatype (`where(…)`, `exists()`, parentheses) and turn casts
/// (`as X`, `.as(X)`, `.ofType(X)`) into a `::X` step.
fn simplify(expression: &str) -> String {
    let mut text = expression.trim().to_string();
    for (from, to) in [(" as ", "::"), (".as(", "::("), (".ofType(", "::(")] {
        text = text.replace(from, to);
    }
    let mut out = String::new();
    let mut depth = 0usize;
    let mut skipping = 0usize;
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let rest: String = chars[i..].iter().collect();
        if skipping == 0
            && (rest.starts_with(".where(")
                || rest.starts_with(".exists(")
                || rest.starts_with(".first("))
        {
            skipping = depth + 1;
            i += rest.find('(').unwrap_or(0) + 1;
            depth += 1;
            continue;
        }
        match chars[i] {
            '(' => depth += 1,
            ')' => {
                depth = depth.saturating_sub(1);
                if skipping > 0 && depth < skipping {
                    skipping = 0;
                    i += 1;
                    continue;
                }
            }
            _ => {}
        }
        if skipping == 0 && chars[i] != '(' && chars[i] != ')' {
            out.push(chars[i]);
        }
        i += 1;
    }
    out
}

fn split_top_level(expression: &str, separator: char) -> Vec<&str> {
    let (mut parts, mut depth, mut start) = (Vec::new(), 0usize, 0usize);
    for (i, c) in expression.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            c if c == separator && depth == 0 => {
                parts.push(&expression[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&expression[start..]);
    parts
}

/// Walk `Type.a.b::Cast` through the schema definitions.
fn path_datatypes(
    definitions: &Map<String, Value>,
    resource_type: &str,
    path: &str,
) -> Vec<String> {
    let mut steps = path.split('.').map(str::trim).filter(|s| !s.is_empty());
    let Some(root) = steps.next() else {
        return Vec::new();
    };
    let root = root.split("::").next().unwrap_or(root);
    let start = if root == "Resource" || root == "DomainResource" {
        resource_type
    } else {
        root
    };
    if start != resource_type {
        return Vec::new();
    }
    let mut current = vec![start.to_string()];
    for step in steps {
        let (name, cast) = match step.split_once("::") {
            Some((name, cast)) => (name, Some(cast.trim())),
            None => (step, None),
        };
        let mut next = Vec::new();
        for definition in &current {
            let Some(properties) = definitions
                .get(definition)
                .and_then(|d| d.get("properties"))
                .and_then(Value::as_object)
            else {
                continue;
            };
            match properties.get(name) {
                Some(property) => next.extend(referenced_type(property)),
                None => {
                    // A choice element `value[x]`: `valueQuantity`, `valueString`, …
                    for (key, property) in properties {
                        let is_choice = key
                            .strip_prefix(name)
                            .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_uppercase()));
                        if is_choice {
                            next.extend(referenced_type(property));
                        }
                    }
                }
            }
        }
        if let Some(cast) = cast {
            next.retain(|t| t.eq_ignore_ascii_case(cast));
            if next.is_empty() {
                next.push(cast.to_string());
            }
        }
        if next.is_empty() {
            return Vec::new();
        }
        current = next;
    }
    current
}

fn referenced_type(property: &Value) -> Option<String> {
    let reference = property
        .get("$ref")
        .or_else(|| property.get("items").and_then(|i| i.get("$ref")))?;
    reference
        .as_str()?
        .strip_prefix("#/definitions/")
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn definitions() -> Map<String, Value> {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fhir-resources/fhir.schema.json"
        );
        let schema: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        schema["definitions"].as_object().unwrap().clone()
    }

    #[test]
    fn datatypes_of_real_expressions() {
        let d = definitions();
        assert_eq!(
            expression_datatypes(&d, "Specimen", "Specimen.accessionIdentifier"),
            ["Identifier"]
        );
        assert_eq!(
            expression_datatypes(&d, "Patient", "Patient.name"),
            ["HumanName"]
        );
        assert_eq!(
            expression_datatypes(&d, "Device", "Device.udiCarrier.carrierHRF"),
            ["string"]
        );
        assert_eq!(
            expression_datatypes(&d, "ServiceRequest", "ServiceRequest.orderDetail.text"),
            ["string"]
        );
        assert_eq!(
            expression_datatypes(
                &d,
                "Observation",
                "(Observation.value as CodeableConcept).text"
            ),
            ["string"]
        );
        assert_eq!(
            expression_datatypes(&d, "Observation", "Observation.code"),
            ["CodeableConcept"]
        );
        assert_eq!(
            expression_datatypes(&d, "Patient", "Patient.telecom.where(system='phone')"),
            ["ContactPoint"]
        );
        assert_eq!(expression_datatypes(&d, "Patient", "Resource.id"), ["id"]);
        assert!(expression_datatypes(&d, "Patient", "Patient.extension('x').value").is_empty());
    }
}
