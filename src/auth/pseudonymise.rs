//! Pseudonymous views: what the CRM (and, where configured, an insurer) receives instead of the
//! stored resource, and which searches it may not make.
//!
//! The rules are one table, [`RULES`]; docs/security.md shows it to reviewers. A transformed
//! resource carries the security label `PSEUDED` (v3 ObservationValue) so that nobody mistakes it
//! for the original.

use serde_json::{Map, Value, json};

use crate::error::{ApiError, ApiResult};
use crate::fhir::id::truncate;
use crate::search::query::{Criterion, SearchRequest};
use crate::search::registry::SearchParamRegistry;

/// Who receives the view; each differs in what it keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// Marketing and service: the pseudonym, gender and year of birth; no direct identifier.
    Crm,
    /// Claims processing: additionally the real identifiers (the insurance number) and the full
    /// birth date, which claims need; still no names, contacts or addresses.
    Insurer,
}

/// What happens to an element.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Remove,
    /// Dates reduced to the year.
    YearOnly,
    /// Only identifiers in the pseudonym system stay.
    PseudonymOnly,
}

/// One rule: on resources of `types` (`*`: every type), element `element` gets `action` for
/// `profiles`.
pub struct Rule {
    pub types: &'static [&'static str],
    pub element: &'static str,
    pub crm: Option<Action>,
    pub insurer: Option<Action>,
}

const PEOPLE: &[&str] = &["Patient", "Person", "RelatedPerson", "Practitioner"];
const ANY: &[&str] = &["*"];

/// The reviewed table. `text` (the narrative) and free-text notes can say anything about a
/// person, so they go for every type; references lose their `display` (often a name) and their
/// `identifier` (often a real identifier).
pub const RULES: &[Rule] = &[
    Rule {
        types: ANY,
        element: "text",
        crm: Some(Action::Remove),
        insurer: Some(Action::Remove),
    },
    Rule {
        types: ANY,
        element: "note",
        crm: Some(Action::Remove),
        insurer: Some(Action::Remove),
    },
    Rule {
        types: PEOPLE,
        element: "name",
        crm: Some(Action::Remove),
        insurer: Some(Action::Remove),
    },
    Rule {
        types: PEOPLE,
        element: "telecom",
        crm: Some(Action::Remove),
        insurer: Some(Action::Remove),
    },
    Rule {
        types: PEOPLE,
        element: "address",
        crm: Some(Action::Remove),
        insurer: Some(Action::Remove),
    },
    Rule {
        types: PEOPLE,
        element: "photo",
        crm: Some(Action::Remove),
        insurer: Some(Action::Remove),
    },
    Rule {
        types: PEOPLE,
        element: "contact",
        crm: Some(Action::Remove),
        insurer: Some(Action::Remove),
    },
    Rule {
        types: PEOPLE,
        element: "identifier",
        crm: Some(Action::PseudonymOnly),
        insurer: None,
    },
    Rule {
        types: PEOPLE,
        element: "birthDate",
        crm: Some(Action::YearOnly),
        insurer: None,
    },
    Rule {
        types: PEOPLE,
        element: "deceasedDateTime",
        crm: Some(Action::YearOnly),
        insurer: None,
    },
    Rule {
        types: &["Patient"],
        element: "link",
        crm: Some(Action::Remove),
        insurer: Some(Action::Remove),
    },
    // Extensions on people carry mothers' maiden names, birth places, birth times, …
    Rule {
        types: PEOPLE,
        element: "extension",
        crm: Some(Action::Remove),
        insurer: Some(Action::Remove),
    },
    Rule {
        types: &["DiagnosticReport"],
        element: "conclusion",
        crm: Some(Action::Remove),
        insurer: Some(Action::Remove),
    },
    Rule {
        types: &["DiagnosticReport"],
        element: "presentedForm",
        crm: Some(Action::Remove),
        insurer: Some(Action::Remove),
    },
];

/// Elements of a person a pseudonymous caller may not search or sort by: the elements that the
/// table removes or generalises for it (searching them would re-identify through the answers).
const IDENTIFYING: &[&str] = &[
    "name",
    "telecom",
    "address",
    "photo",
    "contact",
    "identifier",
    "birthDate",
    "deceased",
    "link",
    "extension",
];

/// Extension value types that describe a person wherever they appear.
const PERSONAL_VALUES: &[&str] = &["valueHumanName", "valueAddress", "valueContactPoint"];

/// The v3 ObservationValue code for "pseudonymized".
pub const PSEUDED: &str = "PSEUDED";
const OBSERVATION_VALUE: &str = "http://terminology.hl7.org/CodeSystem/v3-ObservationValue";

/// Apply the table to `resource` (and its contained resources) for `profile`.
pub fn pseudonymise(resource: &mut Value, profile: Profile, pseudonym_system: &str) {
    let Some(object) = resource.as_object_mut() else {
        return;
    };
    let resource_type = object
        .get("resourceType")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    for rule in RULES
        .iter()
        .filter(|r| r.types == ANY || r.types.contains(&resource_type.as_str()))
    {
        let action = match profile {
            Profile::Crm => rule.crm,
            Profile::Insurer => rule.insurer,
        };
        if let Some(action) = action {
            apply(object, rule.element, action, pseudonym_system);
        }
    }
    strip_reference_details(object);
    if let Some(Value::Array(contained)) = object.get_mut("contained") {
        for inner in contained {
            pseudonymise(inner, profile, pseudonym_system);
        }
    }
    label(object);
}

fn apply(object: &mut Map<String, Value>, element: &str, action: Action, pseudonym_system: &str) {
    // The element's `_element` sibling (ids and extensions of a primitive, e.g. a birth time on
    // `_birthDate`) goes whatever happens to the value.
    object.remove(&format!("_{element}"));
    match action {
        Action::Remove => {
            object.remove(element);
        }
        Action::YearOnly => {
            if let Some(Value::String(date)) = object.get_mut(element) {
                // By characters: `truncate` at a byte index would panic inside a multi-byte one.
                if let Some((end, _)) = date.char_indices().nth(4) {
                    date.truncate(end);
                }
            }
        }
        Action::PseudonymOnly => {
            if let Some(Value::Array(identifiers)) = object.get_mut(element) {
                identifiers.retain(|i| i["system"] == pseudonym_system);
                if identifiers.is_empty() {
                    object.remove(element);
                }
            }
        }
    }
}

/// Every Reference in the resource (outside contained resources, handled on their own) loses
/// `display` and `identifier`; the literal reference stays, so the views still link up.
fn strip_reference_details(object: &mut Map<String, Value>) {
    drop_personal_extensions(object);
    for (key, value) in object.iter_mut() {
        if key != "contained" {
            strip_in(value);
        }
    }
}

fn strip_in(value: &mut Value) {
    match value {
        Value::Object(object) => {
            if is_reference(object) {
                object.remove("display");
                object.remove("_display");
                object.remove("identifier");
            }
            drop_personal_extensions(object);
            for inner in object.values_mut() {
                strip_in(inner);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(strip_in),
        _ => {}
    }
}

/// Extensions whose value is a name, an address or a contact point, wherever they are.
fn drop_personal_extensions(object: &mut Map<String, Value>) {
    if let Some(Value::Array(extensions)) = object.get_mut("extension") {
        extensions.retain(|e| !PERSONAL_VALUES.iter().any(|v| e.get(*v).is_some()));
    }
}

/// Whether `object` is shaped like a Reference: a literal `reference`, a logical `identifier`
/// (an object; elsewhere `identifier` is a list), or a bare `display` that is not a Coding's.
fn is_reference(object: &Map<String, Value>) -> bool {
    object.contains_key("reference")
        || object.get("identifier").is_some_and(Value::is_object)
        || (object.contains_key("display")
            && !object.contains_key("code")
            && !object.contains_key("system"))
}

fn label(object: &mut Map<String, Value>) {
    let meta = object.entry("meta").or_insert_with(|| json!({}));
    let Some(meta) = meta.as_object_mut() else {
        return;
    };
    let security = meta.entry("security").or_insert_with(|| json!([]));
    if let Some(labels) = security.as_array_mut()
        && !labels.iter().any(|l| l["code"] == PSEUDED)
    {
        labels.push(
            json!({"system": OBSERVATION_VALUE, "code": PSEUDED, "display": "pseudonymized"}),
        );
    }
}

/// Refuse a search that a pseudonymous caller could use to re-identify: one that filters or
/// sorts people by an element the view hides, at any depth of chains and `_has`. Searching by
/// the pseudonym (`identifier=<pseudonym system>|…`) is what the view is for, and allowed.
pub fn check_search(
    request: &SearchRequest,
    registry: &SearchParamRegistry,
    pseudonym_system: &str,
) -> ApiResult<()> {
    for criterion in &request.criteria {
        check_criterion(
            criterion,
            &request.resource_type,
            registry,
            pseudonym_system,
        )?;
    }
    for key in &request.sort {
        if identifying(registry, &request.resource_type, &key.code) {
            return Err(refusal(&request.resource_type, &key.code));
        }
    }
    Ok(())
}

fn check_criterion(
    criterion: &Criterion,
    resource_type: &str,
    registry: &SearchParamRegistry,
    pseudonym_system: &str,
) -> ApiResult<()> {
    match criterion {
        Criterion::Param(filter) => {
            let by_pseudonym = filter.code == "identifier"
                && filter.modifier.is_none()
                && filter.values.iter().all(|v| {
                    v.split_once('|')
                        .is_some_and(|(system, _)| system == pseudonym_system)
                });
            let hidden_detail = matches!(filter.modifier.as_deref(), Some("text" | "identifier"));
            if matches!(filter.code.as_str(), "_text" | "_content")
                || hidden_detail
                || (identifying(registry, resource_type, &filter.code) && !by_pseudonym)
            {
                return Err(refusal(resource_type, &filter.code));
            }
            Ok(())
        }
        Criterion::Chain { branches, .. } => branches.iter().try_for_each(|(target, inner)| {
            check_criterion(inner, target, registry, pseudonym_system)
        }),
        Criterion::Has {
            source_type, inner, ..
        } => check_criterion(inner, source_type, registry, pseudonym_system),
        Criterion::AnyOf(groups) => groups
            .iter()
            .flatten()
            .try_for_each(|c| check_criterion(c, resource_type, registry, pseudonym_system)),
        Criterion::PatientLink { patient, .. } => {
            check_criterion(patient, "Patient", registry, pseudonym_system)
        }
        Criterion::Consent(_) => Ok(()),
    }
}

/// Does parameter `code` of `resource_type` read an element of a person the view hides?
fn identifying(registry: &SearchParamRegistry, resource_type: &str, code: &str) -> bool {
    if !PEOPLE.contains(&resource_type) {
        return false;
    }
    let Some(param) = registry.get(resource_type, code) else {
        return false;
    };
    let Some(expression) = param.expressions.get(resource_type) else {
        return false;
    };
    IDENTIFYING.iter().any(|element| {
        expression
            .match_indices(element)
            .any(|(at, _)| at > 0 && expression.as_bytes()[at - 1] == b'.')
    })
}

fn refusal(resource_type: &str, code: &str) -> ApiError {
    ApiError::Forbidden(format!(
        "this token sees pseudonymised data only: searching {resource_type} by `{}` could re-identify a person; search by the pseudonym identifier instead",
        truncate(code)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SYSTEM: &str = "urn:fhirvault:pseudonym";

    fn patient() -> Value {
        json!({
            "resourceType": "Patient",
            "id": "p1",
            "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">Maria Muster</div>"},
            "identifier": [{"system": "urn:oid:1.2.40.0.10.1.4.3.1", "value": "1234010180"}, {"system": SYSTEM, "value": "psn-1"}],
            "name": [{"family": "Muster"}],
            "telecom": [{"system": "phone", "value": "+43 1 234"}],
            "address": [{"city": "Wien"}],
            "gender": "female",
            "birthDate": "1980-01-01",
            "managingOrganization": {"reference": "Organization/org-a", "display": "Ordination Dr. Huber"},
            "contained": [{"resourceType": "RelatedPerson", "name": [{"family": "Muster"}], "patient": {"reference": "#"}}]
        })
    }

    #[test]
    fn crm_keeps_the_pseudonym_gender_and_year() {
        let mut p = patient();
        pseudonymise(&mut p, Profile::Crm, SYSTEM);
        let text = p.to_string();
        for secret in ["Muster", "1234010180", "+43", "Wien", "1980-01-01", "Huber"] {
            assert!(!text.contains(secret), "{secret} left in {text}");
        }
        assert_eq!(
            p["identifier"],
            json!([{"system": SYSTEM, "value": "psn-1"}])
        );
        assert_eq!(p["birthDate"], "1980");
        assert_eq!(p["gender"], "female");
        assert_eq!(p["managingOrganization"]["reference"], "Organization/org-a");
        assert_eq!(p["meta"]["security"][0]["code"], PSEUDED);
        assert_eq!(p["contained"][0]["meta"]["security"][0]["code"], PSEUDED);
    }

    #[test]
    fn references_extensions_and_primitive_siblings_lose_what_names_a_person() {
        let mut observation = json!({
            "resourceType": "Observation",
            "performer": [{"display": "Dr. Maria Huber"}],
            "subject": {"identifier": {"system": "urn:oid:1.2.40.0.10.1.4.3.1", "value": "1234010180"}},
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}]},
            "extension": [{"url": "urn:x", "valueHumanName": {"family": "Muster"}}]
        });
        pseudonymise(&mut observation, Profile::Crm, SYSTEM);
        let text = observation.to_string();
        for secret in ["Huber", "1234010180", "Muster"] {
            assert!(!text.contains(secret), "{secret} left in {text}");
        }
        assert_eq!(
            observation["code"]["coding"][0]["display"], "Heart rate",
            "codings keep their display"
        );
        let mut patient = patient();
        patient["_birthDate"] = json!({"extension": [{"url": "http://hl7.org/fhir/StructureDefinition/patient-birthTime", "valueDateTime": "1980-01-01T04:30:00+01:00"}]});
        patient["extension"] = json!([{"url": "http://hl7.org/fhir/StructureDefinition/patient-mothersMaidenName", "valueString": "Geheim"}]);
        pseudonymise(&mut patient, Profile::Crm, SYSTEM);
        let text = patient.to_string();
        assert!(
            !text.contains("04:30") && !text.contains("Geheim"),
            "{text}"
        );
    }

    #[test]
    fn insurer_keeps_what_claims_need() {
        let mut p = patient();
        pseudonymise(&mut p, Profile::Insurer, SYSTEM);
        assert_eq!(p["identifier"].as_array().map(Vec::len), Some(2));
        assert_eq!(p["birthDate"], "1980-01-01");
        assert!(p.get("name").is_none() && p.get("telecom").is_none() && p.get("text").is_none());
    }
}
