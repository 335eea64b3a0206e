//! The concept hierarchy of one code system, for `:below` / `:above` token searches
//! (subsumption, R4 search.html#modifiers) and for enumerating its codes.
//!
//! Read from the CodeSystem itself: nested `concept` arrays, and the concept properties that
//! link concepts across branches (the v3 code systems give a concept its second parent with a
//! `child` property). What a concept property means is its declared `CodeSystem.property.uri`;
//! a property declared without one is read by its code (`parent` and `subsumedBy` name a
//! parent, `child` a child).
//!
//! Whether the links mean subsumption is the code system's `hierarchyMeaning`. `grouped-by`,
//! `part-of` and `classified-with` do not, and such a code system offers no subsumption. R4
//! gives no default when it is unstated; the core code systems that leave it out nest subtypes
//! under their parent (`condition-clinical`: `recurrence` under `active`), so unstated is read as
//! `is-a`, as terminology servers commonly do.

use std::collections::{HashMap, HashSet, VecDeque};

use super::spec::{Concept, PropertyDef};

/// The formal meanings (`CodeSystem.property.uri`) of the properties that link concepts.
const PARENT_URI: &str = "http://hl7.org/fhir/concept-properties#parent";
const CHILD_URI: &str = "http://hl7.org/fhir/concept-properties#child";
/// Property codes read as links when the code system declares no uri for them.
const PARENT_CODES: &[&str] = &["parent", "subsumedBy"];
const CHILD_CODES: &[&str] = &["child"];

/// Which way a subsumption search walks from its code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subsumption {
    /// `:below`: the code and every code it subsumes.
    Below,
    /// `:above`: the code and every code that subsumes it.
    Above,
}

/// Why a subsumption search cannot be answered from the definitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubsumptionError {
    /// The code system is not defined in full in the definitions (LOINC, SNOMED CT, …).
    UnknownSystem,
    /// Its hierarchy groups concepts rather than classifying them (`hierarchyMeaning`).
    NotIsA,
    /// The code system does not define the code.
    UnknownCode,
}

/// Which end of a link a concept property names.
#[derive(Clone, Copy)]
enum Link {
    Parent,
    Child,
}

/// The codes of a code system, in definition order, with their is-a links.
#[derive(Debug, Default)]
pub(super) struct Hierarchy {
    codes: Vec<String>,
    children: HashMap<String, Vec<String>>,
    parents: HashMap<String, Vec<String>>,
    /// The links mean subsumption (`hierarchyMeaning` is `is-a` or unstated).
    is_a: bool,
}

impl Hierarchy {
    /// From a CodeSystem's `concept`, `property` (the declared meanings of concept properties)
    /// and `hierarchyMeaning`.
    pub fn build(
        concepts: &[Concept],
        properties: &[PropertyDef],
        hierarchy_meaning: Option<&str>,
    ) -> Hierarchy {
        let mut hierarchy = Hierarchy {
            is_a: matches!(hierarchy_meaning, None | Some("is-a")),
            ..Hierarchy::default()
        };
        hierarchy.add(concepts, None, &link_properties(properties));
        for links in [&mut hierarchy.children, &mut hierarchy.parents] {
            for linked in links.values_mut() {
                let mut seen = HashSet::new();
                linked.retain(|code| seen.insert(code.clone()));
            }
        }
        hierarchy
    }

    fn add(&mut self, concepts: &[Concept], parent: Option<&str>, links: &HashMap<&str, Link>) {
        for concept in concepts {
            self.codes.push(concept.code.clone());
            if let Some(parent) = parent {
                self.link(parent, &concept.code);
            }
            for property in &concept.property {
                let Some(other) = property.value_code.as_deref() else {
                    continue;
                };
                match links.get(property.code.as_str()) {
                    Some(Link::Parent) => self.link(other, &concept.code),
                    Some(Link::Child) => self.link(&concept.code, other),
                    None => {}
                }
            }
            self.add(&concept.concept, Some(&concept.code), links);
        }
    }

    fn link(&mut self, parent: &str, child: &str) {
        self.children
            .entry(parent.to_owned())
            .or_default()
            .push(child.to_owned());
        self.parents
            .entry(child.to_owned())
            .or_default()
            .push(parent.to_owned());
    }

    /// Every code, in definition order.
    pub fn codes(&self) -> &[String] {
        &self.codes
    }

    /// `code` and the codes it subsumes (`Below`) or that subsume it (`Above`), nearest first.
    pub fn closure(
        &self,
        code: &str,
        direction: Subsumption,
    ) -> Result<Vec<String>, SubsumptionError> {
        if !self.is_a {
            return Err(SubsumptionError::NotIsA);
        }
        if !self.codes.iter().any(|known| known == code) {
            return Err(SubsumptionError::UnknownCode);
        }
        let links = match direction {
            Subsumption::Below => &self.children,
            Subsumption::Above => &self.parents,
        };
        // Breadth first, each code once: a code reached through two parents is one code, and a
        // cycle in a malformed code system ends.
        let mut seen = HashSet::from([code.to_owned()]);
        let mut closure = vec![code.to_owned()];
        let mut queue = VecDeque::from([code]);
        while let Some(next) = queue.pop_front() {
            for linked in links.get(next).into_iter().flatten() {
                if seen.insert(linked.clone()) {
                    closure.push(linked.clone());
                    queue.push_back(linked);
                }
            }
        }
        Ok(closure)
    }
}

/// The concept property codes that link concepts: by their declared uri, else by their code. A
/// property declared with another uri (`partOf`, …) is not a link, whatever its code.
fn link_properties(declared: &[PropertyDef]) -> HashMap<&str, Link> {
    let mut links: HashMap<&str, Link> = PARENT_CODES
        .iter()
        .map(|code| (*code, Link::Parent))
        .chain(CHILD_CODES.iter().map(|code| (*code, Link::Child)))
        .collect();
    for property in declared {
        match property.uri.as_deref() {
            Some(PARENT_URI) => {
                links.insert(&property.code, Link::Parent);
            }
            Some(CHILD_URI) => {
                links.insert(&property.code, Link::Child);
            }
            Some(_) => {
                links.remove(property.code.as_str());
            }
            // Declared without a meaning: read by its code, as above.
            None => {}
        }
    }
    links
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fhir::validation::spec::ConceptProperty;

    fn concept(code: &str, children: Vec<Concept>) -> Concept {
        Concept {
            code: code.into(),
            concept: children,
            property: Vec::new(),
        }
    }

    fn with_property(mut concept: Concept, code: &str, value: &str) -> Concept {
        concept.property.push(ConceptProperty {
            code: code.into(),
            value_code: Some(value.into()),
        });
        concept
    }

    fn declared(code: &str, uri: Option<&str>) -> PropertyDef {
        PropertyDef {
            code: code.into(),
            uri: uri.map(Into::into),
        }
    }

    /// a ─┬─ b ── c
    ///    └─ d        and e, whose parent is b by property; d lists c as a child too.
    fn sample(meaning: Option<&str>) -> Hierarchy {
        let concepts = vec![
            concept(
                "a",
                vec![
                    concept("b", vec![concept("c", vec![])]),
                    with_property(concept("d", vec![]), "child", "c"),
                ],
            ),
            with_property(concept("e", vec![]), "subsumedBy", "b"),
        ];
        Hierarchy::build(&concepts, &[], meaning)
    }

    #[test]
    fn below_and_above_follow_nesting_and_properties() {
        let h = sample(None);
        assert_eq!(h.codes(), ["a", "b", "c", "d", "e"]);
        let below = |code| h.closure(code, Subsumption::Below);
        let above = |code| h.closure(code, Subsumption::Above);
        assert_eq!(below("a").unwrap(), ["a", "b", "d", "c", "e"]);
        assert_eq!(below("b").unwrap(), ["b", "c", "e"]);
        assert_eq!(below("c").unwrap(), ["c"]);
        assert_eq!(above("c").unwrap(), ["c", "b", "d", "a"]);
        assert_eq!(above("e").unwrap(), ["e", "b", "a"]);
        assert_eq!(above("a").unwrap(), ["a"]);
        assert_eq!(below("zz"), Err(SubsumptionError::UnknownCode));
    }

    #[test]
    fn only_is_a_hierarchies_subsume() {
        for meaning in [None, Some("is-a")] {
            assert!(sample(meaning).closure("a", Subsumption::Below).is_ok());
        }
        for meaning in ["grouped-by", "part-of", "classified-with"] {
            let h = sample(Some(meaning));
            assert_eq!(
                h.closure("a", Subsumption::Below),
                Err(SubsumptionError::NotIsA)
            );
            // The codes are still the code system's, for `:in`.
            assert_eq!(h.codes().len(), 5);
        }
    }

    /// A property means what its declared uri says, not what its code suggests.
    #[test]
    fn declared_property_meanings_win() {
        let concepts = vec![
            concept("a", vec![]),
            with_property(concept("b", vec![]), "broader", "a"),
            with_property(concept("c", vec![]), "parent", "a"),
        ];
        let properties = [
            declared("broader", Some(PARENT_URI)),
            declared("parent", Some("http://example.org/part-of")),
        ];
        let h = Hierarchy::build(&concepts, &properties, None);
        assert_eq!(h.closure("a", Subsumption::Below).unwrap(), ["a", "b"]);
        // Declared without a uri: read by its code.
        let h = Hierarchy::build(&concepts, &[declared("parent", None)], None);
        assert_eq!(h.closure("a", Subsumption::Below).unwrap(), ["a", "c"]);
    }

    #[test]
    fn cycles_end() {
        let concepts = vec![with_property(
            concept("a", vec![concept("b", vec![])]),
            "parent",
            "b",
        )];
        let h = Hierarchy::build(&concepts, &[], None);
        assert_eq!(h.closure("a", Subsumption::Below).unwrap(), ["a", "b"]);
        assert_eq!(h.closure("b", Subsumption::Above).unwrap(), ["b", "a"]);
    }
}
