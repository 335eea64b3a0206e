//! The rules of the StructureDefinition snapshots that the JSON schema cannot express, as a tree
//! built once at load time and walked once per resource.
//!
//! - Minimum cardinality of primitive and choice elements (`Observation.status`,
//!   `Extension.url`): the schema leaves them optional because `_status` may stand in for them.
//! - Required bindings on `Coding`, `CodeableConcept` and `code` elements, against the value sets
//!   the spec's own files enumerate (see [`super::terminology`]).
//! - `integer`, `positiveInt` and `unsignedInt` ranges, which the schema only types as numbers.
//!
//! Each type (resource or datatype) is a [`Node`] whose properties are keyed by their JSON name
//! (`valueCodeableConcept`, `_status`), so the walk needs one map look-up per JSON property.
//! Backbone elements get nodes of their own and `contentReference`s (`Questionnaire.item.item`)
//! point back at existing ones, so recursive structures need no special case. Resources nested
//! in elements of type `Resource` (`contained`, `Bundle.entry.resource`) are handed back to the
//! caller, which validates them as whole resources.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde_json::{Map, Value};

use super::spec::{ElementDef, SpecResource};
use super::terminology::{Terminology, ValueSetCodes};
use super::{Report, push_field, push_index};
use crate::fhir::outcome::{Issue, IssueCode};

type NodeId = usize;

/// Largest value of FHIR's 32-bit integer types.
const INT_MAX: i64 = i32::MAX as i64;

pub(super) struct ElementRules {
    nodes: Vec<Node>,
    /// Root node of each resource type and datatype, by name.
    roots: HashMap<String, NodeId>,
    /// Value sets of required bindings that are enforced, and that could not be expanded.
    bound: HashSet<String>,
    unexpandable: HashSet<String>,
}

#[derive(Default)]
struct Node {
    /// By JSON property name: `status`, `_status`, `valueQuantity`, …
    props: HashMap<Box<str>, Prop>,
    required: Vec<RequiredElement>,
}

struct Prop {
    ty: Ty,
    /// A required binding the walk can enforce (only set on code, Coding and CodeableConcept).
    binding: Option<Arc<ValueSetCodes>>,
}

#[derive(Clone, Copy)]
enum Ty {
    Primitive(Primitive),
    Complex(NodeId, Complex),
    /// A whole resource (`contained`, `Bundle.entry.resource`): validated on its own.
    Resource,
}

#[derive(Clone, Copy)]
enum Primitive {
    Code,
    Integer,
    PositiveInt,
    UnsignedInt,
    Other,
}

#[derive(Clone, Copy)]
enum Complex {
    Coding,
    CodeableConcept,
    Other,
}

/// An element with `min >= 1`.
struct RequiredElement {
    /// FHIRPath name (`value` for `value[x]`).
    name: Box<str>,
    /// As the spec writes it, for diagnostics (`value[x]`).
    label: Box<str>,
    /// The JSON properties any one of which satisfies the element (`status`, `_status`).
    keys: Vec<Box<str>>,
}

/// A resource found inside another one during the walk.
pub(super) struct NestedResource<'v> {
    pub expression: String,
    pub resource: &'v Value,
    /// Found in `contained` (which may not itself contain resources, dom-2).
    pub contained: bool,
}

impl ElementRules {
    /// Builds the tree from the StructureDefinitions of resources and complex datatypes.
    pub fn build(
        definitions: &[SpecResource],
        resource_types: &HashSet<String>,
        terminology: &mut Terminology,
    ) -> Self {
        let structures: Vec<(&str, &[ElementDef])> = definitions
            .iter()
            .filter(|sd| sd.resource_type == "StructureDefinition")
            .filter(|sd| matches!(sd.kind.as_deref(), Some("resource" | "complex-type")))
            .filter_map(|sd| {
                let elements = sd.snapshot.as_ref()?.element.as_slice();
                Some((sd.id.as_deref()?, elements)).filter(|(_, elements)| !elements.is_empty())
            })
            .collect();

        // Every type gets its root first, so elements can point at types defined later.
        let mut rules = ElementRules {
            nodes: Vec::new(),
            roots: HashMap::new(),
            bound: HashSet::new(),
            unexpandable: HashSet::new(),
        };
        for (name, _) in &structures {
            let root = rules.new_node();
            rules.roots.insert((*name).to_owned(), root);
        }
        let mut builder = Builder {
            rules,
            resource_types,
            terminology,
        };
        for (name, elements) in structures {
            builder.add_structure(name, elements);
        }
        builder.rules
    }

    /// How many distinct value sets required bindings enforce, and how many they cannot.
    pub fn binding_counts(&self) -> (usize, usize) {
        (self.bound.len(), self.unexpandable.len())
    }

    /// The one code system of the required binding of the `code` element at `steps` below
    /// `resource_type` (FHIRPath names: `["status"]` for `Observation.status`), or `None` when
    /// the element is not a `code`, has no enforced required binding, or its value set draws
    /// on several systems. That system is what a `code` element's value means; the codes are
    /// the binding's.
    pub fn required_code_system(
        &self,
        resource_type: &str,
        steps: &[String],
    ) -> Option<(String, Vec<String>)> {
        let (last, path) = steps.split_last()?;
        let mut node = *self.roots.get(resource_type)?;
        for step in path {
            match self.nodes[node].props.get(step.as_str())?.ty {
                Ty::Complex(next, _) => node = next,
                _ => return None,
            }
        }
        let prop = self.nodes[node].props.get(last.as_str())?;
        let (Ty::Primitive(Primitive::Code), Some(codes)) = (prop.ty, &prop.binding) else {
            return None;
        };
        let mut systems = codes.systems();
        let (system, codes) = systems.next()?;
        systems
            .next()
            .is_none()
            .then(|| (system.to_string(), codes.iter().cloned().collect()))
    }

    fn new_node(&mut self) -> NodeId {
        self.nodes.push(Node::default());
        self.nodes.len() - 1
    }

    /// Checks `resource` (whose type is `type_name`) against the tree; `expression` is the
    /// FHIRPath of the resource itself. Returns the resources nested inside it.
    pub fn check<'v>(
        &self,
        type_name: &str,
        resource: &'v Map<String, Value>,
        expression: &str,
        report: &mut Report,
    ) -> Vec<NestedResource<'v>> {
        let mut walk = Walk {
            rules: self,
            report,
            nested: Vec::new(),
            expression: expression.to_owned(),
        };
        if let Some(&root) = self.roots.get(type_name) {
            walk.object(root, resource);
        }
        walk.nested
    }
}

struct Builder<'a> {
    rules: ElementRules,
    resource_types: &'a HashSet<String>,
    terminology: &'a mut Terminology,
}

impl Builder<'_> {
    fn add_structure(&mut self, name: &str, elements: &[ElementDef]) {
        let (Some(&root), Some((first, rest))) =
            (self.rules.roots.get(name), elements.split_first())
        else {
            return;
        };
        // Elements with children (backbone elements) get a node of their own.
        let parents: HashSet<&str> = elements
            .iter()
            .filter_map(|element| element.path.rsplit_once('.'))
            .map(|(parent, _)| parent)
            .collect();
        let mut path_nodes: HashMap<&str, NodeId> = HashMap::from([(first.path.as_str(), root)]);
        for element in rest {
            if parents.contains(element.path.as_str())
                && !path_nodes.contains_key(element.path.as_str())
            {
                let node = self.rules.new_node();
                path_nodes.insert(element.path.as_str(), node);
            }
        }
        for element in rest {
            // The base spec has no slices; a profile's would need its discriminators.
            if element.slice_name.is_none() {
                self.add_element(element, &path_nodes);
            }
        }
    }

    /// Adds the JSON properties of one element to its parent's node.
    fn add_element(&mut self, element: &ElementDef, path_nodes: &HashMap<&str, NodeId>) {
        let Some((parent, label)) = element.path.rsplit_once('.') else {
            return;
        };
        let Some(&parent_node) = path_nodes.get(parent) else {
            return;
        };
        let name = label.strip_suffix("[x]").unwrap_or(label);
        let variants = self.variants(element, name, path_nodes);

        let binding = element
            .binding
            .as_ref()
            .filter(|binding| binding.strength == "required")
            .and_then(|binding| binding.value_set.as_deref())
            .filter(|_| variants.iter().any(|(_, ty)| ty.is_coded()))
            .and_then(|url| self.bind(url));

        let element_node = self.rules.roots.get("Element").copied();
        let mut keys = Vec::new();
        for (key, ty) in variants {
            if let (Ty::Primitive(_), Some(element_node)) = (ty, element_node) {
                // `_status` carries the id and extensions of primitive `status`.
                let extension_key = format!("_{key}");
                keys.push(extension_key.clone().into_boxed_str());
                let prop = Prop {
                    ty: Ty::Complex(element_node, Complex::Other),
                    binding: None,
                };
                self.insert(parent_node, extension_key, prop);
            }
            keys.push(key.clone().into_boxed_str());
            let binding = binding.clone().filter(|_| ty.is_coded());
            self.insert(parent_node, key, Prop { ty, binding });
        }
        if element.min >= 1 && !keys.is_empty() {
            let required = RequiredElement {
                name: name.into(),
                label: label.into(),
                keys,
            };
            self.rules.nodes[parent_node].required.push(required);
        }
    }

    /// The JSON properties an element may appear as, with their types: one for most elements,
    /// one per type for a choice (`value[x]` → `valueQuantity`, `valueString`, …).
    fn variants(
        &self,
        element: &ElementDef,
        name: &str,
        path_nodes: &HashMap<&str, NodeId>,
    ) -> Vec<(String, Ty)> {
        if let Some(&own) = path_nodes.get(element.path.as_str()) {
            return vec![(name.to_owned(), Ty::Complex(own, Complex::Other))];
        }
        if let Some(reference) = &element.content_reference {
            let target = path_nodes.get(reference.trim_start_matches('#'));
            let ty = target.map_or(Ty::Primitive(Primitive::Other), |&node| {
                Ty::Complex(node, Complex::Other)
            });
            return vec![(name.to_owned(), ty)];
        }
        let choice = element.path.ends_with("[x]");
        let key = |code: &str| {
            if choice {
                format!("{name}{}", upper_first(code))
            } else {
                name.to_owned()
            }
        };
        element
            .types
            .iter()
            .map(|ty| (key(&ty.code), self.ty_of(&ty.code)))
            .collect()
    }

    fn bind(&mut self, url: &str) -> Option<Arc<ValueSetCodes>> {
        let codes = self.terminology.expand(url);
        let seen = if codes.is_some() {
            &mut self.rules.bound
        } else {
            &mut self.rules.unexpandable
        };
        seen.insert(super::spec::unversioned(url).to_owned());
        codes
    }

    fn insert(&mut self, node: NodeId, key: String, prop: Prop) {
        self.rules.nodes[node]
            .props
            .entry(key.into_boxed_str())
            .or_insert(prop);
    }

    fn ty_of(&self, code: &str) -> Ty {
        match code {
            "code" => Ty::Primitive(Primitive::Code),
            "integer" => Ty::Primitive(Primitive::Integer),
            "positiveInt" => Ty::Primitive(Primitive::PositiveInt),
            "unsignedInt" => Ty::Primitive(Primitive::UnsignedInt),
            // FHIRPath system types are the values inside primitives (`Patient.id`, `Extension.url`).
            _ if code.starts_with("http://hl7.org/fhirpath/System.") => {
                Ty::Primitive(Primitive::Other)
            }
            _ if code.starts_with(|c: char| c.is_ascii_lowercase()) => {
                Ty::Primitive(Primitive::Other)
            }
            "Resource" | "DomainResource" => Ty::Resource,
            _ if self.resource_types.contains(code) => Ty::Resource,
            _ => match self.rules.roots.get(code) {
                Some(&node) => Ty::Complex(
                    node,
                    match code {
                        "Coding" => Complex::Coding,
                        "CodeableConcept" => Complex::CodeableConcept,
                        _ => Complex::Other,
                    },
                ),
                None => Ty::Primitive(Primitive::Other),
            },
        }
    }
}

impl Ty {
    fn is_coded(self) -> bool {
        matches!(
            self,
            Ty::Primitive(Primitive::Code)
                | Ty::Complex(_, Complex::Coding | Complex::CodeableConcept)
        )
    }
}

fn upper_first(code: &str) -> String {
    let mut chars = code.chars();
    chars
        .next()
        .map(|first| first.to_ascii_uppercase().to_string() + chars.as_str())
        .unwrap_or_default()
}

/// One pass over a resource. `expression` is the FHIRPath of the current position and grows and
/// shrinks as the walk descends, so it is only copied when an issue is reported.
struct Walk<'r, 'v> {
    rules: &'r ElementRules,
    report: &'r mut Report,
    nested: Vec<NestedResource<'v>>,
    expression: String,
}

impl<'v> Walk<'_, 'v> {
    fn object(&mut self, node: NodeId, object: &'v Map<String, Value>) {
        let rules = self.rules;
        let node = &rules.nodes[node];
        for (key, value) in object {
            if self.report.is_full() {
                return;
            }
            let Some(prop) = node.props.get(key.as_str()) else {
                continue;
            };
            let len = self.expression.len();
            push_field(&mut self.expression, key);
            match value {
                Value::Array(items) => {
                    for (index, item) in items.iter().enumerate() {
                        let len = self.expression.len();
                        push_index(&mut self.expression, index);
                        self.value(prop, key == "contained", item);
                        self.expression.truncate(len);
                    }
                }
                _ => self.value(prop, key == "contained", value),
            }
            self.expression.truncate(len);
        }
        for required in &node.required {
            if !required.keys.iter().any(|key| object.contains_key(&**key)) {
                let len = self.expression.len();
                push_field(&mut self.expression, &required.name);
                let text = format!("required element `{}` is missing", required.label);
                self.issue(IssueCode::Required, &text);
                self.expression.truncate(len);
            }
        }
    }

    fn value(&mut self, prop: &Prop, contained: bool, value: &'v Value) {
        match (prop.ty, value) {
            (Ty::Primitive(kind), Value::Number(number)) => self.integer(kind, number),
            (Ty::Primitive(Primitive::Code), Value::String(code)) => {
                if let Some(codes) = &prop.binding
                    && !codes.contains_code(code)
                {
                    self.not_in_value_set(
                        IssueCode::Value,
                        codes,
                        "value is not in the required value set",
                    );
                }
            }
            (Ty::Complex(node, kind), Value::Object(object)) => {
                if let Some(codes) = &prop.binding {
                    match kind {
                        Complex::Coding => self.coding(codes, object),
                        Complex::CodeableConcept => self.codeable_concept(codes, object),
                        Complex::Other => {}
                    }
                }
                self.object(node, object);
            }
            (Ty::Resource, Value::Object(_)) => {
                self.nested.push(NestedResource {
                    expression: self.expression.clone(),
                    resource: value,
                    contained,
                });
            }
            // Wrong JSON types are the schema's to report.
            _ => {}
        }
    }

    fn integer(&mut self, kind: Primitive, number: &serde_json::Number) {
        let (low, name) = match kind {
            Primitive::Integer => (
                i64::from(i32::MIN),
                "integer (a whole number from -2147483648 to 2147483647)",
            ),
            Primitive::PositiveInt => (1, "positiveInt (a whole number from 1 to 2147483647)"),
            Primitive::UnsignedInt => (0, "unsignedInt (a whole number from 0 to 2147483647)"),
            Primitive::Code | Primitive::Other => return,
        };
        if !number
            .as_i64()
            .is_some_and(|value| (low..=INT_MAX).contains(&value))
        {
            self.issue(IssueCode::Value, &format!("not a valid FHIR {name}"));
        }
    }

    /// A Coding is judged only when its system is one the value set draws from.
    fn coding(&mut self, codes: &ValueSetCodes, coding: &Map<String, Value>) {
        if let (Some(Value::String(system)), Some(Value::String(code))) =
            (coding.get("system"), coding.get("code"))
            && codes.covers(system)
            && !codes.contains(system, code)
        {
            self.not_in_value_set(
                IssueCode::CodeInvalid,
                codes,
                "code is not in the required value set",
            );
        }
    }

    /// A CodeableConcept passes when one of its codings is in the value set, or when none of them
    /// uses a system the value set draws from (text-only or other terminologies cannot be judged).
    fn codeable_concept(&mut self, codes: &ValueSetCodes, concept: &Map<String, Value>) {
        let Some(Value::Array(codings)) = concept.get("coding") else {
            return;
        };
        let mut judged = false;
        for coding in codings.iter().filter_map(Value::as_object) {
            if let (Some(Value::String(system)), Some(Value::String(code))) =
                (coding.get("system"), coding.get("code"))
                && codes.covers(system)
            {
                if codes.contains(system, code) {
                    return;
                }
                judged = true;
            }
        }
        if judged {
            self.not_in_value_set(
                IssueCode::CodeInvalid,
                codes,
                "no coding is in the required value set",
            );
        }
    }

    /// A `code` element outside its value set is a `value` issue; a Coding or CodeableConcept
    /// outside it is `code-invalid`.
    fn not_in_value_set(&mut self, code: IssueCode, codes: &ValueSetCodes, what: &str) {
        self.issue(
            code,
            &format!("{what} {} (allowed: {})", codes.url, codes.listing),
        );
    }

    fn issue(&mut self, code: IssueCode, text: &str) {
        self.report
            .push(Issue::error(code, format!("{}: {text}", self.expression)).at(&self.expression));
    }
}
