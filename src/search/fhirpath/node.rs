//! Nodes of a FHIRPath result and navigation from a node to its children.
//!
//! Navigation flattens arrays (FHIRPath collections have no nesting) and finds choice elements:
//! `value` on an Observation yields its `valueQuantity` typed as `Quantity`.

use std::borrow::Cow;

use serde_json::Value;

/// The datatypes a FHIR R4 choice element (`[x]`) can take, in their canonical spelling.
#[rustfmt::skip]
const CHOICE_TYPES: &[&str] = &[
    "base64Binary", "boolean", "canonical", "code", "date", "dateTime", "decimal", "id", "instant",
    "integer", "markdown", "oid", "positiveInt", "string", "time", "unsignedInt", "uri", "url",
    "uuid", "Address", "Age", "Annotation", "Attachment", "CodeableConcept", "Coding",
    "ContactPoint", "Count", "Distance", "Duration", "HumanName", "Identifier", "Money", "Period",
    "Quantity", "Range", "Ratio", "Reference", "SampledData", "Signature", "Timing",
    "ContactDetail", "Contributor", "DataRequirement", "Expression", "ParameterDefinition",
    "RelatedArtifact", "TriggerDefinition", "UsageContext", "Dosage", "Meta",
];

/// The canonical type name for the suffix of a choice element (`"DateTime"` → `"dateTime"`).
fn choice_type(suffix: &str) -> Option<&'static str> {
    let first = suffix.chars().next()?;
    if !first.is_ascii_uppercase() {
        return None;
    }
    CHOICE_TYPES.iter().copied().find(|t| {
        t.len() == suffix.len()
            && t[..1].eq_ignore_ascii_case(&suffix[..1])
            && t[1..] == suffix[1..]
    })
}

/// One item of a FHIRPath result: a JSON value from the resource (borrowed) or computed by the
/// expression (owned, e.g. the boolean of `exists()`), with its FHIR type when known.
#[derive(Debug, Clone, PartialEq)]
pub struct Node<'a> {
    pub value: Cow<'a, Value>,
    /// The FHIR type, when the expression revealed it (choice suffix, `as`, literal, resource).
    pub fhir_type: Option<String>,
}

impl<'a> Node<'a> {
    pub fn borrowed(value: &'a Value, fhir_type: Option<String>) -> Self {
        Node {
            value: Cow::Borrowed(value),
            fhir_type,
        }
    }

    pub fn owned(value: Value, fhir_type: Option<&str>) -> Self {
        Node {
            value: Cow::Owned(value),
            fhir_type: fhir_type.map(str::to_owned),
        }
    }

    /// A whole resource as the root of an evaluation.
    pub fn resource(resource: &'a Value) -> Self {
        let fhir_type = resource
            .get("resourceType")
            .and_then(Value::as_str)
            .map(str::to_owned);
        Node::borrowed(resource, fhir_type)
    }

    pub fn value(&self) -> &Value {
        &self.value
    }

    /// The FHIR type: the known one, or a resource's `resourceType`.
    pub fn type_name(&self) -> Option<&str> {
        self.fhir_type
            .as_deref()
            .or_else(|| self.value.get("resourceType").and_then(Value::as_str))
    }

    /// The same node borrowed for a shorter lifetime (no copy of the JSON).
    pub(super) fn reborrow(&self) -> Node<'_> {
        Node {
            value: Cow::Borrowed(&*self.value),
            fhir_type: self.fhir_type.clone(),
        }
    }
}

/// Calls `emit` for each non-null value under `value`, flattening one level of array.
fn flatten<'v>(
    value: &'v Value,
    fhir_type: Option<&str>,
    emit: &mut impl FnMut(&'v Value, Option<String>),
) {
    match value {
        Value::Null => {}
        Value::Array(items) => {
            for item in items.iter().filter(|v| !v.is_null()) {
                emit(item, fhir_type.map(str::to_owned));
            }
        }
        other => emit(other, fhir_type.map(str::to_owned)),
    }
}

/// The children called `name` of a JSON object, including the typed variants of a choice element.
fn each_child<'v>(value: &'v Value, name: &str, emit: &mut impl FnMut(&'v Value, Option<String>)) {
    let Value::Object(map) = value else { return };
    if let Some(child) = map.get(name) {
        flatten(child, None, emit);
        return;
    }
    for (key, child) in map {
        if let Some(t) = key.strip_prefix(name).and_then(choice_type) {
            flatten(child, Some(t), emit);
        }
    }
}

pub(super) fn push_children<'b>(node: &Node<'b>, name: &str, out: &mut Vec<Node<'b>>) {
    match &node.value {
        Cow::Borrowed(v) => each_child(v, name, &mut |c, t| out.push(Node::borrowed(c, t))),
        Cow::Owned(v) => each_child(v, name, &mut |c, t| {
            out.push(Node {
                value: Cow::Owned(c.clone()),
                fhir_type: t,
            })
        }),
    }
}
