//! Parameters that are exactly the union of other parameters of the same type.
//!
//! R4 defines Observation's `combo-*` parameters as unions of two others: `combo-code` is
//! `Observation.code | Observation.component.code`, which are `code` and `component-code`;
//! `combo-code-value-quantity` is `code-value-quantity` on the Observation and on each component.
//! Storing their rows again would copy every code, value and composite of an Observation (about
//! 20 of the 53 index rows of a Holter Observation), so they are not stored: the search layer
//! answers them from their members' rows. Found from the definitions, not listed by hand, so a
//! parameter only counts as a union when its alternatives are, one for one, the alternatives of
//! its members.

use std::collections::{BTreeSet, HashMap};

use super::registry::{ParamType, SearchParam, split_top_level_union};

/// (resource type, union parameter code) → the codes of its members, sorted.
pub type Unions = HashMap<(String, String), Vec<String>>;

/// What a parameter indexes on one resource type: its kind, its components (a composite's
/// parts apply to each node of its expression) and the set of its expression's alternatives.
struct Shape<'p> {
    code: &'p str,
    kind: ParamType,
    components: Vec<&'p str>,
    alternatives: BTreeSet<String>,
}

fn shape<'p>(param: &'p SearchParam, resource_type: &str) -> Option<Shape<'p>> {
    if !param.is_indexed() || param.kind == ParamType::Reference {
        // References are followed by chains, includes and compartments under their own code.
        return None;
    }
    let expression = param.expressions.get(resource_type)?;
    Some(Shape {
        code: &param.code,
        kind: param.kind,
        components: param
            .components
            .iter()
            .map(|c| c.expression.as_str())
            .collect(),
        alternatives: split_top_level_union(expression)
            .into_iter()
            .map(normalise)
            .collect(),
    })
}

/// Alternatives compared without their outer parentheses, with single spaces.
fn normalise(alternative: &str) -> String {
    let mut text = alternative.trim();
    while text.starts_with('(') && text.ends_with(')') && balanced(&text[1..text.len() - 1]) {
        text = text[1..text.len() - 1].trim();
    }
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn balanced(text: &str) -> bool {
    let mut depth = 0i32;
    for c in text.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            _ => {}
        }
        if depth < 0 {
            return false;
        }
    }
    depth == 0
}

/// The unions among the parameters of one resource type.
pub fn unions_of<'p>(
    resource_type: &str,
    params: impl IntoIterator<Item = &'p SearchParam>,
) -> Unions {
    let shapes: Vec<Shape> = params
        .into_iter()
        .filter_map(|p| shape(p, resource_type))
        .collect();
    let mut unions = Unions::new();
    for candidate in shapes.iter().filter(|s| s.alternatives.len() > 1) {
        // Members: same kind and components, alternatives a proper subset of the candidate's.
        let members: Vec<&Shape> = shapes
            .iter()
            .filter(|m| {
                m.code != candidate.code
                    && m.kind == candidate.kind
                    && m.components == candidate.components
                    && m.alternatives.len() < candidate.alternatives.len()
                    && m.alternatives.is_subset(&candidate.alternatives)
            })
            .collect();
        let covered: BTreeSet<&String> = members.iter().flat_map(|m| &m.alternatives).collect();
        if !members.is_empty() && covered.len() == candidate.alternatives.len() {
            let mut codes: Vec<String> = members.iter().map(|m| m.code.to_string()).collect();
            codes.sort();
            unions.insert(
                (resource_type.to_string(), candidate.code.to_string()),
                codes,
            );
        }
    }
    unions
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::registry::tests::r4;

    #[test]
    fn observations_combo_parameters_are_unions_of_their_parts() {
        let reg = r4();
        let member = |code: &'static str| reg.stored_codes("Observation", code);
        assert_eq!(member("combo-code"), ["code", "component-code"]);
        assert_eq!(
            member("combo-value-quantity"),
            ["component-value-quantity", "value-quantity"]
        );
        assert_eq!(
            member("combo-code-value-quantity"),
            ["code-value-quantity", "component-code-value-quantity"]
        );
        assert_eq!(
            member("combo-code-value-concept"),
            ["code-value-concept", "component-code-value-concept"]
        );
        assert_eq!(
            member("combo-data-absent-reason"),
            ["component-data-absent-reason", "data-absent-reason"]
        );
        assert_eq!(
            member("combo-value-concept"),
            ["component-value-concept", "value-concept"]
        );
        // Everything else is stored under its own code.
        assert_eq!(member("code"), ["code"]);
        assert_eq!(member("value-quantity"), ["value-quantity"]);
        assert!(!reg.is_union("Observation", "code"));
    }

    #[test]
    fn only_observation_has_unions_in_r4() {
        let reg = r4();
        for ty in reg.resource_types() {
            for param in reg.params_for(ty) {
                if reg.is_union(ty, &param.code) {
                    assert_eq!(ty, "Observation", "{ty}.{}", param.code);
                    assert!(param.code.starts_with("combo-"), "{}", param.code);
                }
            }
        }
    }

    #[test]
    fn alternatives_compare_without_spacing_or_outer_parentheses() {
        assert_eq!(
            normalise("( Observation.value  as Quantity )"),
            "Observation.value as Quantity"
        );
        assert_eq!(normalise("(a) | (b)"), "(a) | (b)");
        assert_eq!(normalise("Observation.code"), "Observation.code");
    }
}
