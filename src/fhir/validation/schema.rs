//! The spec's JSON schema (`fhir.schema.json`, draft-06), compiled per resource type on first use,
//! and its errors turned into issues that name the element and the rule, never the value.
//!
//! The root schema is a `oneOf` over all 146 resource types, whose errors say nothing useful
//! ("not valid under any of the schemas") and which is slow. Each type is compiled instead from
//! `{"$ref": "#/definitions/<Type>"}` with just the definitions it reaches. `ResourceList`
//! (`contained`, `Bundle.entry.resource`) is reduced to "an object", so a Patient does not
//! drag in all other resources; nested resources are validated on their own by the caller,
//! with their own type's schema.
//!
//! Where the schema disagrees with the spec's text or its other definitions, the spec wins:
//!
//! - `enum`s are dropped: [`super::elements`] checks every required binding from the ValueSets
//!   themselves. The schema's copies have errors (`fhirVersion` lacks `4.0.1`;
//!   `Expression.language`, an extensible binding, is enumerated as if it were required).
//! - `canonical` elements have no `_element` sibling for their id and extensions (all other
//!   primitives do): it is added (`StructureDefinition._baseDefinition`, `Meta._profile`).
//! - The `string`/`markdown` pattern `^[ \r\n\t\S]+$` rejects any Unicode space other than
//!   ASCII ones (a no-break space in an address, an ideographic space in a name). The spec's rule
//!   is only "not empty, no control characters but tab, CR and LF", which is what is checked.

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;
use std::time::Instant;

use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::{Draft, JsonType, PatternOptions, ValidationError};
use serde_json::{Map, Value, json};

use super::{LoadError, push_field, push_index};
use crate::fhir::outcome::{Issue, IssueCode};

/// The schema's pattern for `string` and `markdown` (and their inline copies, e.g. `valueString`).
const SCHEMA_STRING_PATTERN: &str = r"^[ \r\n\t\S]+$";
/// The spec's rule for strings: not empty, no control characters other than tab, CR and LF.
const FHIR_STRING_PATTERN: &str = r"^[^\x00-\x08\x0B\x0C\x0E-\x1F]+$";

pub(super) struct Schemas {
    /// `definitions` of fhir.schema.json, with `ResourceList` reduced (see the module doc).
    definitions: Map<String, Value>,
    /// The primitive type each pattern belongs to, for diagnostics (inline copies of a
    /// primitive's pattern, as in `valueDate`, carry no other trace of their type).
    patterns: HashMap<String, String>,
    /// Concrete resource types, sorted (from the schema's discriminator mapping).
    types: Vec<String>,
    /// One lazily compiled validator per entry of `types`; `None` if compiling failed (logged).
    compiled: Vec<OnceLock<Option<jsonschema::Validator>>>,
}

impl Schemas {
    pub fn new(mut schema: Value) -> Result<Self, LoadError> {
        let mut types: Vec<String> = schema
            .pointer("/discriminator/mapping")
            .and_then(Value::as_object)
            .ok_or(LoadError::Definitions(
                "fhir.schema.json has no discriminator mapping",
            ))?
            .keys()
            .cloned()
            .collect();
        types.sort();
        let Some(Value::Object(mut definitions)) = schema.get_mut("definitions").map(Value::take)
        else {
            return Err(LoadError::Definitions(
                "fhir.schema.json has no definitions",
            ));
        };
        if let Some(name) = types
            .iter()
            .find(|name| !definitions.contains_key(name.as_str()))
        {
            tracing::error!(resource_type = %name, "fhir.schema.json maps a resource type it does not define");
            return Err(LoadError::Definitions(
                "fhir.schema.json maps a resource type it does not define",
            ));
        }
        definitions.insert("ResourceList".to_owned(), json!({ "type": "object" }));
        for definition in definitions.values_mut() {
            add_canonical_extensions(definition);
        }
        let mut patterns = HashMap::new();
        for (name, definition) in &definitions {
            if let Some(pattern) = definition.get("pattern").and_then(Value::as_str) {
                patterns
                    .entry(fhir_pattern(pattern).to_owned())
                    .or_insert_with(|| name.clone());
            }
        }
        let compiled = types.iter().map(|_| OnceLock::new()).collect();
        Ok(Schemas {
            definitions,
            patterns,
            types,
            compiled,
        })
    }

    pub fn types(&self) -> &[String] {
        &self.types
    }

    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.types
            .binary_search_by(|known| known.as_str().cmp(name))
            .ok()
    }

    /// The compiled validator of the type at `index`, compiling it on first use.
    pub fn validator(&self, index: usize) -> Option<&jsonschema::Validator> {
        self.compiled
            .get(index)?
            .get_or_init(|| self.compile(&self.types[index]))
            .as_ref()
    }

    fn compile(&self, name: &str) -> Option<jsonschema::Validator> {
        let started = Instant::now();
        let schema = json!({
            "$schema": "http://json-schema.org/draft-06/schema#",
            "$ref": format!("#/definitions/{name}"),
            "definitions": self.reachable(name),
        });
        // The Rust regex engine matches in linear time: no pattern can be made to backtrack.
        let compiled = jsonschema::options()
            .with_draft(Draft::Draft6)
            .with_pattern_options(PatternOptions::regex())
            .build(&schema);
        match compiled {
            Ok(validator) => {
                tracing::debug!(
                    resource_type = name,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "compiled JSON schema"
                );
                Some(validator)
            }
            Err(error) => {
                tracing::error!(resource_type = name, %error, "cannot compile the JSON schema; schema checks are skipped for this type");
                None
            }
        }
    }

    /// The definitions `name` reaches through `$ref`s, [simplified](simplify).
    fn reachable(&self, name: &str) -> Map<String, Value> {
        let mut seen = HashSet::from([name.to_owned()]);
        let mut pending = vec![name.to_owned()];
        let mut out = Map::new();
        while let Some(next) = pending.pop() {
            let Some(definition) = self.definitions.get(&next) else {
                continue;
            };
            let simplified = simplify(definition, &mut |reference| {
                if let Some(target) = reference.strip_prefix("#/definitions/")
                    && seen.insert(target.to_owned())
                {
                    pending.push(target.to_owned());
                }
            });
            out.insert(next, simplified);
        }
        out
    }
}

/// Copies a schema without `description`s (most of the schema's bytes, never checked) and
/// `enum`s, with the FHIR string rule (see the module doc), reporting each `$ref` it meets.
/// A property that happens to be called `description` stays.
fn simplify(schema: &Value, on_ref: &mut dyn FnMut(&str)) -> Value {
    let Value::Object(object) = schema else {
        return match schema {
            Value::Array(items) => {
                Value::Array(items.iter().map(|item| simplify(item, on_ref)).collect())
            }
            other => other.clone(),
        };
    };
    let kept = object
        .iter()
        .filter(|(keyword, _)| !matches!(keyword.as_str(), "description" | "enum"));
    let simplified = kept.map(|(keyword, value)| {
        let value = match (keyword.as_str(), value) {
            ("$ref", Value::String(reference)) => {
                on_ref(reference);
                value.clone()
            }
            ("pattern", Value::String(pattern)) => Value::String(fhir_pattern(pattern).to_owned()),
            ("properties", Value::Object(properties)) => Value::Object(
                properties
                    .iter()
                    .map(|(name, property)| (name.clone(), simplify(property, on_ref)))
                    .collect(),
            ),
            _ => simplify(value, on_ref),
        };
        (keyword.clone(), value)
    });
    Value::Object(simplified.collect())
}

/// Adds the `_name` property (id and extensions) that the schema leaves out for `canonical`s.
fn add_canonical_extensions(definition: &mut Value) {
    let Some(Value::Object(properties)) = definition.get_mut("properties") else {
        return;
    };
    let canonical = |schema: &Value| {
        schema.get("$ref").and_then(Value::as_str) == Some("#/definitions/canonical")
    };
    let missing: Vec<(String, Value)> = properties
        .iter()
        .filter(|(name, _)| !properties.contains_key(&format!("_{name}")))
        .filter_map(|(name, schema)| {
            let element = if canonical(schema) {
                json!({ "$ref": "#/definitions/Element" })
            } else if schema.get("items").is_some_and(canonical) {
                json!({ "type": "array", "items": { "$ref": "#/definitions/Element" } })
            } else {
                return None;
            };
            Some((format!("_{name}"), element))
        })
        .collect();
    properties.extend(missing);
}

fn fhir_pattern(pattern: &str) -> &str {
    if pattern == SCHEMA_STRING_PATTERN {
        FHIR_STRING_PATTERN
    } else {
        pattern
    }
}

/// Sort key putting type errors first: a string where a boolean belongs also fails the boolean
/// pattern, and "expected a boolean" is the message that helps.
pub(super) fn priority(error: &ValidationError<'_>) -> u8 {
    match error.kind() {
        ValidationErrorKind::Type { .. } => 0,
        _ => 1,
    }
}

// Error mapping.

impl Schemas {
    /// Issues for one schema error. `resource` is the validated instance and `base` its FHIRPath.
    pub fn issues(&self, error: &ValidationError<'_>, resource: &Value, base: &str) -> Vec<Issue> {
        let expression = expression(base, error.instance_path().as_str(), resource);
        let issue = |code, text: String| {
            Issue::error(code, format!("{expression}: {text}")).at(&expression)
        };
        match error.kind() {
            ValidationErrorKind::AdditionalProperties { unexpected } => unexpected
                .iter()
                .map(|name| {
                    let mut element = expression.clone();
                    push_field(&mut element, name);
                    Issue::error(IssueCode::Structure, format!("{element}: unknown element"))
                        .at(element)
                })
                .collect(),
            ValidationErrorKind::Required { property } => {
                let mut element = expression.clone();
                let name = property.as_str().unwrap_or_default();
                push_field(&mut element, name);
                vec![
                    Issue::error(
                        IssueCode::Required,
                        format!("{element}: required element `{name}` is missing"),
                    )
                    .at(element),
                ]
            }
            ValidationErrorKind::Type { kind } => {
                vec![issue(
                    IssueCode::Structure,
                    format!("wrong JSON type, expected {}", expected(kind)),
                )]
            }
            ValidationErrorKind::Pattern { pattern } => {
                vec![issue(
                    IssueCode::Value,
                    format_rule(self.patterns.get(pattern).map(String::as_str)),
                )]
            }
            ValidationErrorKind::Constant { expected_value } => match expected_value.as_str() {
                Some(expected) => vec![issue(IssueCode::Value, format!("must be `{expected}`"))],
                None => vec![issue(
                    IssueCode::Value,
                    "does not have the value the specification fixes".to_owned(),
                )],
            },
            kind => vec![issue(
                IssueCode::Structure,
                format!(
                    "violates the `{}` rule of the FHIR JSON schema",
                    kind.keyword()
                ),
            )],
        }
    }
}

fn expected(kind: &TypeKind) -> String {
    fn one(ty: JsonType) -> &'static str {
        match ty {
            JsonType::Array => "an array (this element repeats)",
            JsonType::Object => "an object",
            JsonType::Boolean => "true or false",
            JsonType::String => "a string",
            JsonType::Number => "a number",
            JsonType::Integer => "a whole number",
            JsonType::Null => "null",
        }
    }
    match kind {
        TypeKind::Single(ty) => one(*ty).to_owned(),
        TypeKind::Multiple(types) => types.iter().map(one).collect::<Vec<_>>().join(" or "),
    }
}

/// Describes the lexical rule of a FHIR primitive type.
fn format_rule(primitive: Option<&str>) -> String {
    let rule = match primitive {
        Some("id") => "not a valid FHIR id (1 to 64 letters, digits, '-' or '.')",
        Some("date") => "not a valid FHIR date (YYYY, YYYY-MM or YYYY-MM-DD)",
        Some("dateTime") => {
            "not a valid FHIR dateTime (YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDThh:mm:ss[.fff] with a time zone)"
        }
        Some("instant") => "not a valid FHIR instant (YYYY-MM-DDThh:mm:ss[.fff] with a time zone)",
        Some("time") => "not a valid FHIR time (hh:mm:ss[.fff])",
        Some("code") => "not a valid FHIR code (no leading, trailing or repeated whitespace)",
        Some("string" | "markdown") => {
            "not a valid FHIR string (it must not be empty, nor hold control characters other than tab, CR and LF)"
        }
        Some("uri" | "url" | "canonical") => {
            "not a valid FHIR uri (it must not contain whitespace)"
        }
        Some("oid") => "not a valid FHIR oid (urn:oid: followed by a dotted number)",
        Some("uuid") => "not a valid FHIR uuid (urn:uuid: followed by a lowercase UUID)",
        Some("boolean") => "not a valid FHIR boolean (true or false)",
        Some(other) => return format!("not a valid FHIR {other}"),
        None => "does not have the format the FHIR JSON schema requires",
    };
    rule.to_owned()
}

/// Turns the JSON pointer `/name/0/given/1` into the FHIRPath `Patient.name[0].given[1]`.
///
/// The instance decides whether a segment is an array index: a property can be called `0`.
fn expression(base: &str, pointer: &str, resource: &Value) -> String {
    let mut expression = base.to_owned();
    let mut current = Some(resource);
    for raw in pointer.split('/').skip(1) {
        let segment = raw.replace("~1", "/").replace("~0", "~");
        match (current, segment.parse::<usize>()) {
            (Some(Value::Array(items)), Ok(index)) => {
                push_index(&mut expression, index);
                current = items.get(index);
            }
            (Some(Value::Object(object)), _) => {
                push_field(&mut expression, &segment);
                current = object.get(&segment);
            }
            _ => {
                push_field(&mut expression, &segment);
                current = None;
            }
        }
    }
    expression
}
