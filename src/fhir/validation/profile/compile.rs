//! A StructureDefinition's differential, turned into [`Rule`]s. Every element property either
//! becomes part of a rule, only documents (`short`, `definition`, `mustSupport`, `mapping`, …),
//! or is refused with a message naming the element and the property.
//!
//! Element paths: the element `id` is read when it names the element (it carries type-slice names:
//! `Observation.value[x]:valueQuantity.system`), else the `path`; the renamed form
//! (`Observation.valueQuantity.system`) and a `sliceName` on a choice element are read the same way.

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value};

use super::{Binding, BoundCodes, Profile, Rule, Step, TypeRule};
use crate::fhir::validation::spec::unversioned;
use crate::fhir::validation::terminology::Terminology;

/// Element properties whose rules this validator does not enforce (by prefix, for the `[x]` ones).
const UNSUPPORTED: &[&str] = &[
    "constraint",
    "contentReference",
    "maxLength",
    "minValue",
    "maxValue",
    "defaultValue",
];

const BASE: &str = "http://hl7.org/fhir/StructureDefinition/";

/// What compiling one profile needs to know about the others and about the base spec.
pub(in crate::fhir::validation) struct Context<'a> {
    pub resource_types: &'a HashSet<String>,
    /// The resource type of every profile in the folder, by URL (for `targetProfile`).
    pub profile_types: &'a HashMap<String, String>,
}

/// Compiles one StructureDefinition; the error says what is wrong or unsupported, and where.
pub(super) fn profile(
    definition: &Value,
    context: &Context,
    terminology: &mut Terminology,
) -> Result<Profile, String> {
    let text = |name: &str| {
        definition[name]
            .as_str()
            .ok_or_else(|| format!("StructureDefinition.{name} is missing"))
    };
    let url = text("url")?;
    let resource_type = text("type")?;
    if definition["derivation"] != "constraint" {
        return Err("only constraint profiles are supported (derivation = constraint)".into());
    }
    if definition["kind"] != "resource" || !context.resource_types.contains(resource_type) {
        return Err("only profiles of R4 resource types are supported (kind = resource)".into());
    }
    if definition["fhirVersion"]
        .as_str()
        .is_some_and(|version| !version.starts_with("4.0."))
    {
        return Err("fhirVersion must be 4.0.x".into());
    }
    let base = format!("{BASE}{resource_type}");
    if definition["baseDefinition"].as_str().map(unversioned) != Some(base.as_str()) {
        return Err(format!(
            "baseDefinition must be {base}: profiles of profiles are not supported"
        ));
    }
    let elements = definition["differential"]["element"]
        .as_array()
        .ok_or("the differential has no elements")?;
    let mut rules = Vec::new();
    for (index, element) in elements.iter().enumerate() {
        let element = element
            .as_object()
            .ok_or_else(|| format!("differential element {index} is not an object"))?;
        let label = element
            .get("id")
            .or_else(|| element.get("path"))
            .and_then(Value::as_str)
            .unwrap_or("?");
        if let Some(rule) = compile_element(element, resource_type, context, terminology)
            .map_err(|why| format!("element {label}: {why}"))?
        {
            rules.push(rule);
        }
    }
    Ok(Profile {
        url: url.to_owned(),
        resource_type: resource_type.to_owned(),
        rules,
    })
}

/// One differential element; `None` for the root element, which only documents.
fn compile_element(
    element: &Map<String, Value>,
    resource_type: &str,
    context: &Context,
    terminology: &mut Terminology,
) -> Result<Option<Rule>, String> {
    if let Some(key) = element
        .keys()
        .find(|key| UNSUPPORTED.iter().any(|prefix| key.starts_with(prefix)))
    {
        return Err(format!(
            "`{key}` is not supported by this server's profile validation"
        ));
    }
    let mut parents = steps(element, resource_type)?;
    let Some(last) = parents.pop() else {
        return Ok(None);
    };
    if let Some(slicing) = element.get("slicing")
        && !(matches!(last, Step::Choice(_)) && slices_by_type(slicing))
    {
        return Err("slicing is not supported (only slicing a choice element by type)".into());
    }
    Ok(Some(Rule {
        parents,
        last,
        min: element
            .get("min")
            .map(|min| {
                min.as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or("min must be a whole number")
            })
            .transpose()?,
        max: element.get("max").map(max).transpose()?,
        types: types(element, context)?,
        fixed: value_of(element, "fixed")?,
        pattern: value_of(element, "pattern")?,
        binding: binding(element, terminology)?,
    }))
}

/// The steps from the resource root to the element (empty for the root itself).
fn steps(element: &Map<String, Value>, resource_type: &str) -> Result<Vec<Step>, String> {
    let path = element
        .get("path")
        .and_then(Value::as_str)
        .ok_or("path is missing")?;
    let names_element = |id: &&str| id.split('.').next() == Some(resource_type);
    let name = element
        .get("id")
        .and_then(Value::as_str)
        .filter(names_element)
        .unwrap_or(path);
    let mut segments = name.split('.');
    if segments.next() != Some(resource_type) {
        return Err(format!("the path must start with {resource_type}"));
    }
    let mut steps = segments.map(step).collect::<Result<Vec<_>, _>>()?;
    if let Some(slice) = element.get("sliceName").and_then(Value::as_str) {
        let rename = match steps.last() {
            Some(Step::Choice(base)) if is_type_slice(base, slice) => true,
            // The id already named the slice (`Observation.value[x]:valueQuantity`).
            Some(Step::Field(field)) if field == slice => false,
            _ => {
                return Err(format!(
                    "slice {slice}: slicing is not supported (only type slices of a choice element)"
                ));
            }
        };
        if let (true, Some(last)) = (rename, steps.last_mut()) {
            *last = Step::Field(slice.to_owned());
        }
    }
    Ok(steps)
}

/// `subject`, `value[x]`, `value[x]:valueQuantity` or `valueQuantity`.
fn step(segment: &str) -> Result<Step, String> {
    if segment.is_empty() {
        return Err("the path has an empty segment".into());
    }
    match segment.split_once(':') {
        None => Ok(match segment.strip_suffix("[x]") {
            Some(base) => Step::Choice(base.to_owned()),
            None => Step::Field(segment.to_owned()),
        }),
        Some((name, slice)) => match name.strip_suffix("[x]") {
            Some(base) if is_type_slice(base, slice) => Ok(Step::Field(slice.to_owned())),
            _ => Err(format!(
                "slice {slice}: slicing is not supported (only type slices of a choice element, such as value[x]:valueQuantity)"
            )),
        },
    }
}

/// Is `slice` the name of `base[x]` renamed to one type (`value` + `Quantity`)?
fn is_type_slice(base: &str, slice: &str) -> bool {
    slice
        .strip_prefix(base)
        .is_some_and(|ty| ty.starts_with(|c: char| c.is_ascii_uppercase()))
}

/// Slicing by type (`discriminator: [{type: type, path: $this}]`), the one slicing a choice
/// element's type slices need.
fn slices_by_type(slicing: &Value) -> bool {
    slicing["discriminator"].as_array().is_some_and(|list| {
        list.iter()
            .all(|d| d["type"] == "type" && d["path"] == "$this")
    })
}

fn max(value: &Value) -> Result<Option<u32>, String> {
    match value.as_str() {
        Some("*") => Ok(None),
        Some(number) => number
            .parse()
            .map(Some)
            .map_err(|_| "max must be a whole number or *".into()),
        None => Err("max must be a string".into()),
    }
}

fn types(element: &Map<String, Value>, context: &Context) -> Result<Vec<TypeRule>, String> {
    let Some(list) = element.get("type") else {
        return Ok(Vec::new());
    };
    let list = list.as_array().ok_or("type must be a list")?;
    list.iter()
        .map(|ty| {
            let code = ty["code"].as_str().ok_or("type.code is missing")?;
            for unsupported in ["profile", "aggregation"] {
                if ty.get(unsupported).is_some() {
                    return Err(format!(
                        "type.{unsupported} is not supported by this server's profile validation"
                    ));
                }
            }
            let mut targets = Vec::new();
            for url in ty["targetProfile"].as_array().into_iter().flatten() {
                let url = url.as_str().ok_or("targetProfile must hold URLs")?;
                match target_type(url, context)? {
                    Some(target) => targets.push(target),
                    // `Resource`: any type is allowed, so the element is not constrained.
                    None => {
                        return Ok(TypeRule {
                            code: code.to_owned(),
                            targets: Vec::new(),
                        });
                    }
                }
            }
            Ok(TypeRule {
                code: code.to_owned(),
                targets,
            })
        })
        .collect()
}

/// The resource type a `targetProfile` names; `None` for `Resource` (anything).
fn target_type(url: &str, context: &Context) -> Result<Option<String>, String> {
    let url = unversioned(url);
    match url.strip_prefix(BASE) {
        Some("Resource" | "DomainResource") => Ok(None),
        Some(name) if context.resource_types.contains(name) => Ok(Some(name.to_owned())),
        _ => context
            .profile_types
            .get(url)
            .map(|ty| Some(ty.clone()))
            .ok_or_else(|| {
                format!(
                    "targetProfile {url} is neither an R4 resource nor a profile in this folder"
                )
            }),
    }
}

/// The value of `fixed[x]` or `pattern[x]` (`fixedUri`, `patternCodeableConcept`, …).
fn value_of(element: &Map<String, Value>, prefix: &str) -> Result<Option<Value>, String> {
    let mut found = element.iter().filter(|(key, _)| {
        key.strip_prefix(prefix)
            .is_some_and(|ty| ty.starts_with(|c: char| c.is_ascii_uppercase()))
    });
    let first = found.next().map(|(_, value)| value.clone());
    if found.next().is_some() {
        return Err(format!("more than one {prefix}[x]"));
    }
    Ok(first)
}

/// A required binding whose value set the validator can check; weaker strengths are not
/// enforced, and a value set neither the spec's files nor the folder can expand is skipped
/// with a warning.
fn binding(
    element: &Map<String, Value>,
    terminology: &mut Terminology,
) -> Result<Option<Binding>, String> {
    let Some(binding) = element.get("binding") else {
        return Ok(None);
    };
    if binding["strength"] != "required" {
        return Ok(None);
    }
    let url = binding["valueSet"]
        .as_str()
        .ok_or("a required binding needs a valueSet")?;
    let codes = match (terminology.expand(url), terminology.whole_systems(url)) {
        (Some(codes), _) => BoundCodes::Codes(codes),
        (None, Some(systems)) => BoundCodes::Systems(systems),
        (None, None) => {
            tracing::warn!(
                value_set = url,
                "required binding of a profile not enforced: the value set cannot be expanded"
            );
            return Ok(None);
        }
    };
    Ok(Some(Binding {
        value_set: unversioned(url).to_owned(),
        codes,
    }))
}
