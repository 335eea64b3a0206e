//! Checking a resource against a compiled [`Profile`]. How each rule is read:
//!
//! - Cardinality counts an element's repetitions within each occurrence of its parent; an element
//!   of an absent parent is not checked. `name` and `_name` (a primitive carrying only an id or
//!   extensions) both count as the element being present.
//! - A choice element's type is the suffix of its JSON name (`valueQuantity`: Quantity).
//! - A Reference's target type is read from `reference` (`Type/id`, `…/Type/id/_history/n`, an
//!   absolute URL ending in `Type/id`, a conditional `Type?criteria`), else from `type`.
//!   `#contained`, `urn:uuid:` / `urn:oid:` (resolved inside a transaction) and logical
//!   references (an identifier only) cannot be judged here and pass.
//! - `fixed[x]`: every occurrence equals the value exactly (JSON equality; decimals compare by
//!   their text, so `1.0` is not `1`).
//! - `pattern[x]`, as R4 ElementDefinition.pattern[x] defines it: a primitive equals the
//!   pattern; an object has every property of the pattern, matching recursively; each item of an
//!   array in the pattern matches at least one item of the instance's array. A repeating element's
//!   repetitions are read as such an array: at least one repetition must match (so
//!   `Device.identifier` can ask for one EUI-64 among other identifiers; R4 has slicing for
//!   "every repetition" and this validator has no slicing).
//! - Required bindings: a `code` is in the value set; a Coding has a system and a code from it; a
//!   CodeableConcept has at least one such Coding (text alone does not satisfy the binding).
//!
//! Diagnostics name the element, the rule and the profile, and quote only the profile's own
//! values (a fixed URI, a pattern), never the instance's.

use serde_json::{Map, Value};

use super::{Binding, BoundCodes, Profile, Rule, Step};
use crate::fhir::outcome::{Issue, IssueCode};
use crate::fhir::validation::{Report, push_field, push_index};

const BASE: &str = "http://hl7.org/fhir/StructureDefinition/";

/// One occurrence of an element: under which JSON name, its value, and its FHIRPath.
struct Occurrence<'v> {
    name: String,
    value: &'v Value,
    expression: String,
}

impl Profile {
    /// Checks `resource`, an object of the profile's type whose FHIRPath is `base`.
    pub(in crate::fhir::validation) fn check(
        &self,
        resource: &Map<String, Value>,
        base: &str,
        report: &mut Report,
    ) {
        for rule in &self.rules {
            let mut parents = vec![(resource, base.to_owned())];
            for step in &rule.parents {
                parents = parents
                    .iter()
                    .flat_map(|(object, path)| occurrences(object, step, path))
                    .filter_map(|found| Some((found.value.as_object()?, found.expression)))
                    .collect();
            }
            for (parent, path) in &parents {
                if report.is_full() {
                    return;
                }
                rule.check(&self.url, parent, path, report);
            }
        }
    }
}

impl Rule {
    /// Checks the element within one occurrence of its parent (`path` is the parent's FHIRPath).
    fn check(&self, profile: &str, parent: &Map<String, Value>, path: &str, report: &mut Report) {
        self.check_cardinality(profile, parent, path, report);
        for found in occurrences(parent, &self.last, path) {
            self.check_type(profile, &found, report);
            if let Some(fixed) = &self.fixed
                && found.value != fixed
            {
                let text = format!(
                    "must be exactly {} (fixed by profile {profile})",
                    compact(fixed)
                );
                report.push(issue(IssueCode::Value, &found.expression, &text));
            }
            if let Some(binding) = &self.binding
                && !binding.accepts(found.value)
            {
                report.push(issue(
                    IssueCode::CodeInvalid,
                    &found.expression,
                    &binding.complaint(profile),
                ));
            }
        }
        if let Some(pattern) = &self.pattern {
            self.check_pattern(profile, pattern, parent, path, report);
        }
    }

    fn check_cardinality(
        &self,
        profile: &str,
        parent: &Map<String, Value>,
        path: &str,
        report: &mut Report,
    ) {
        let count = count(parent, &self.last);
        let mut expression = path.to_owned();
        push_field(&mut expression, self.last.name());
        if let Some(min) = self.min.map(|min| min as usize)
            && count < min
        {
            let text = format!("profile {profile} requires at least {min}, found {count}");
            report.push(issue(IssueCode::Required, &expression, &text));
        }
        if let Some(Some(max)) = self.max.map(|max| max.map(|max| max as usize))
            && count > max
        {
            let text = match max {
                0 => format!("not allowed by profile {profile}"),
                _ => format!("profile {profile} allows at most {max}, found {count}"),
            };
            report.push(issue(IssueCode::Structure, &expression, &text));
        }
    }

    /// The type of a choice element, and the target of a Reference.
    fn check_type(&self, profile: &str, found: &Occurrence, report: &mut Report) {
        let ty = match &self.last {
            Step::Choice(base) => {
                let suffix = &found.name[base.len()..];
                match self.types.iter().find(|ty| upper_first(&ty.code) == suffix) {
                    Some(ty) => ty,
                    None if self.types.is_empty() => return,
                    None => {
                        let allowed: Vec<&str> =
                            self.types.iter().map(|ty| ty.code.as_str()).collect();
                        let text = format!(
                            "this type is not allowed by profile {profile} (allowed: {})",
                            allowed.join(", ")
                        );
                        report.push(issue(IssueCode::Structure, &found.expression, &text));
                        return;
                    }
                }
            }
            Step::Field(_) => match self.types.iter().find(|ty| !ty.targets.is_empty()) {
                Some(ty) => ty,
                None => return,
            },
        };
        if ty.targets.is_empty() {
            return;
        }
        if let Value::Object(reference) = found.value
            && let Some(target) = referenced_type(reference)
            && !ty.targets.iter().any(|allowed| allowed == target)
        {
            let text = format!(
                "must refer to a {} (profile {profile})",
                ty.targets.join(" or ")
            );
            report.push(issue(IssueCode::Value, &found.expression, &text));
        }
    }

    fn check_pattern(
        &self,
        profile: &str,
        pattern: &Value,
        parent: &Map<String, Value>,
        path: &str,
        report: &mut Report,
    ) {
        for name in names(parent, &self.last) {
            let Some(value) = parent.get(&name) else {
                continue;
            };
            let (matched, what) = match value {
                Value::Array(items) => (
                    items.iter().any(|item| matches_pattern(pattern, item)),
                    "no repetition matches",
                ),
                single => (matches_pattern(pattern, single), "does not match"),
            };
            if !matched {
                let mut expression = path.to_owned();
                push_field(&mut expression, &name);
                let text = format!(
                    "{what} the pattern of profile {profile}: {}",
                    compact(pattern)
                );
                report.push(issue(IssueCode::Value, &expression, &text));
            }
        }
    }
}

/// Does `value` follow `pattern` (R4 ElementDefinition.pattern[x])?
pub(super) fn matches_pattern(pattern: &Value, value: &Value) -> bool {
    match (pattern, value) {
        (Value::Object(pattern), Value::Object(value)) => pattern.iter().all(|(key, expected)| {
            value
                .get(key)
                .is_some_and(|found| matches_pattern(expected, found))
        }),
        (Value::Array(pattern), Value::Array(value)) => pattern
            .iter()
            .all(|expected| value.iter().any(|found| matches_pattern(expected, found))),
        (pattern, value) => pattern == value,
    }
}

impl Binding {
    fn accepts(&self, value: &Value) -> bool {
        match value {
            Value::String(code) => match &self.codes {
                BoundCodes::Codes(codes) => codes.contains_code(code),
                // A `code` has no system of its own to compare.
                BoundCodes::Systems(_) => true,
            },
            Value::Object(concept)
                if concept.contains_key("coding")
                    || !(concept.contains_key("code") || concept.contains_key("system")) =>
            {
                concept
                    .get("coding")
                    .and_then(Value::as_array)
                    .is_some_and(|codings| {
                        codings
                            .iter()
                            .filter_map(Value::as_object)
                            .any(|coding| self.accepts_coding(coding))
                    })
            }
            Value::Object(coding) => self.accepts_coding(coding),
            // Wrong JSON types are the schema's to report.
            _ => true,
        }
    }

    fn accepts_coding(&self, coding: &Map<String, Value>) -> bool {
        let text = |name| coding.get(name).and_then(Value::as_str);
        let (Some(system), Some(code)) = (text("system"), text("code")) else {
            return false;
        };
        match &self.codes {
            BoundCodes::Codes(codes) => codes.contains(system, code),
            BoundCodes::Systems(systems) => systems.iter().any(|known| known == system),
        }
    }

    fn complaint(&self, profile: &str) -> String {
        let allowed = match &self.codes {
            BoundCodes::Codes(codes) => codes.listing.clone(),
            BoundCodes::Systems(systems) => format!("any code of {}", systems.join(", ")),
        };
        format!(
            "not in value set {} required by profile {profile} (allowed: {allowed})",
            self.value_set
        )
    }
}

/// The JSON names an element appears under in `parent`: its own, or each type of a choice
/// (`valueQuantity`), whether present as `name` or only as `_name`.
fn names(parent: &Map<String, Value>, step: &Step) -> Vec<String> {
    match step {
        Step::Field(name) => vec![name.clone()],
        Step::Choice(base) => {
            let mut names: Vec<String> = parent
                .keys()
                .map(|key| key.strip_prefix('_').unwrap_or(key))
                .filter(|key| {
                    key.strip_prefix(base.as_str())
                        .is_some_and(|ty| ty.starts_with(|c: char| c.is_ascii_uppercase()))
                })
                .map(str::to_owned)
                .collect();
            names.sort();
            names.dedup();
            names
        }
    }
}

/// Every occurrence of the element in `parent`, array items one by one.
fn occurrences<'v>(parent: &'v Map<String, Value>, step: &Step, path: &str) -> Vec<Occurrence<'v>> {
    let mut found = Vec::new();
    for name in names(parent, step) {
        let mut expression = path.to_owned();
        push_field(&mut expression, &name);
        match parent.get(&name) {
            Some(Value::Array(items)) => {
                for (index, value) in items.iter().enumerate() {
                    let mut expression = expression.clone();
                    push_index(&mut expression, index);
                    found.push(Occurrence {
                        name: name.clone(),
                        value,
                        expression,
                    });
                }
            }
            None | Some(Value::Null) => {}
            Some(value) => found.push(Occurrence {
                name,
                value,
                expression,
            }),
        }
    }
    found
}

/// How many times the element is present in `parent`.
fn count(parent: &Map<String, Value>, step: &Step) -> usize {
    let len = |value: Option<&Value>| match value {
        None | Some(Value::Null) => 0,
        Some(Value::Array(items)) => items.len(),
        Some(_) => 1,
    };
    names(parent, step)
        .iter()
        .map(|name| len(parent.get(name)).max(len(parent.get(&format!("_{name}")))))
        .sum()
}

/// The resource type a Reference points to, when the reference itself tells.
fn referenced_type(reference: &Map<String, Value>) -> Option<&str> {
    match reference.get("reference").and_then(Value::as_str) {
        Some(text) => type_in_reference(text),
        None => reference
            .get("type")
            .and_then(Value::as_str)
            .map(|ty| ty.strip_prefix(BASE).unwrap_or(ty)),
    }
}

/// `Patient/1`, `Patient/1/_history/2`, `https://host/fhir/Patient/1`, `Patient?identifier=…`.
fn type_in_reference(text: &str) -> Option<&str> {
    if text.starts_with('#') || text.starts_with("urn:") {
        return None;
    }
    if let Some((search, _)) = text.split_once('?') {
        let ty = search.rsplit('/').next()?;
        return is_type_name(ty).then_some(ty);
    }
    let mut parts: Vec<&str> = text.split('/').filter(|part| !part.is_empty()).collect();
    if parts.len() >= 4 && parts[parts.len() - 2] == "_history" {
        parts.truncate(parts.len() - 2);
    }
    let ty = *parts.get(parts.len().checked_sub(2)?)?;
    is_type_name(ty).then_some(ty)
}

fn is_type_name(text: &str) -> bool {
    text.starts_with(|c: char| c.is_ascii_uppercase())
        && text.chars().all(|c| c.is_ascii_alphanumeric())
}

fn upper_first(code: &str) -> String {
    let mut chars = code.chars();
    chars
        .next()
        .map(|first| first.to_ascii_uppercase().to_string() + chars.as_str())
        .unwrap_or_default()
}

/// The profile's own values in a diagnostics text.
fn compact(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

fn issue(code: IssueCode, expression: &str, text: &str) -> Issue {
    Issue::error(code, format!("{expression}: {text}")).at(expression)
}
