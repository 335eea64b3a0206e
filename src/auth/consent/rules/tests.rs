use serde_json::{Value, json};

use super::*;

const BASE: &str = "http://127.0.0.1:8080/fhir";

fn consent(provision: Value) -> Value {
    json!({
        "resourceType": "Consent",
        "status": "active",
        "scope": {"coding": [{"system": SCOPE_SYSTEM, "code": PRIVACY_SCOPE}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": "Patient/p1"},
        "dateTime": "2026-01-01T00:00:00Z",
        "provision": provision
    })
}

fn org(id: &str) -> Value {
    json!({"role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP"}]}, "reference": {"reference": format!("Organization/{id}")}})
}

fn role(name: &str) -> Value {
    json!({"role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP"}]}, "reference": {"identifier": {"system": ROLE_SYSTEM, "value": name}}})
}

fn summary(rows: &[ConsentRow]) -> Vec<(i64, bool, &str, &str, &str)> {
    rows.iter()
        .map(|r| {
            (
                r.depth,
                r.permit,
                r.actor.as_str(),
                r.purpose.as_str(),
                r.class.as_str(),
            )
        })
        .collect()
}

#[test]
fn nested_provisions_inherit_their_parents_conditions() {
    let rows = rows_of(
        &consent(json!({
            "type": "deny",
            "provision": [{
                "type": "permit",
                "actor": [org("clinic-b")],
                "purpose": [{"system": PURPOSE_SYSTEM, "code": "TREAT"}],
                "provision": [{"type": "deny", "class": [{"system": RESOURCE_TYPES, "code": "Observation"}]}]
            }]
        })),
        0,
        BASE,
    )
    .unwrap();
    assert_eq!(
        summary(&rows),
        [
            (0, false, "*", "*", "*"),
            (1, true, "Organization/clinic-b", "TREAT", "*"),
            (2, false, "Organization/clinic-b", "TREAT", "Observation"),
        ]
    );
    assert!(
        rows.iter()
            .all(|r| r.patient == "p1" && r.recorded == 1_767_225_600_000_000)
    );
}

#[test]
fn roles_periods_and_instances_become_columns() {
    let rows = rows_of(
        &consent(json!({
            "type": "permit",
            "period": {"start": "2026-01-01", "end": "2026-12-31"},
            "actor": [role("crm"), org("ins-1")],
            "data": [{"meaning": "instance", "reference": {"reference": format!("{BASE}/Observation/o1")}}]
        })),
        0,
        BASE,
    )
    .unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].actor, "Organization/ins-1");
    assert_eq!(rows[1].actor, "role:crm");
    assert_eq!(rows[0].data, ("Observation".to_string(), "o1".to_string()));
    let (start, _) = parse_date_range("2026-01-01").unwrap();
    let (_, end) = parse_date_range("2026-12-31").unwrap();
    assert_eq!((rows[0].starts, rows[0].ends), (start, end));
}

#[test]
fn disjoint_children_and_non_access_actions_yield_nothing() {
    let rows = rows_of(
        &consent(json!({
            "type": "permit",
            "actor": [org("a")],
            "provision": [
                {"type": "deny", "actor": [org("b")]},
                {"type": "deny", "action": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentaction", "code": "collect"}]}]}
            ]
        })),
        0,
        BASE,
    )
    .unwrap();
    assert_eq!(summary(&rows), [(0, true, "Organization/a", "*", "*")]);
}

#[test]
fn only_active_privacy_consents_decide() {
    let mut inactive = consent(json!({"type": "deny"}));
    inactive["status"] = json!("inactive");
    assert!(rows_of(&inactive, 0, BASE).unwrap().is_empty());
    let mut research = consent(json!({"type": "deny"}));
    research["scope"] = json!({"coding": [{"system": SCOPE_SYSTEM, "code": "research"}]});
    assert!(rows_of(&research, 0, BASE).unwrap().is_empty());
    let mut error = consent(json!({"type": "deny"}));
    error["status"] = json!("entered-in-error");
    assert!(rows_of(&error, 0, BASE).unwrap().is_empty());
}

#[test]
fn policy_rule_gives_the_root_its_effect() {
    let mut opt_out = consent(json!(null));
    opt_out.as_object_mut().unwrap().remove("provision");
    opt_out["policyRule"] = json!({"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTOUT"}]});
    assert_eq!(
        summary(&rows_of(&opt_out, 0, BASE).unwrap()),
        [(0, false, "*", "*", "*")]
    );
}

#[test]
fn missing_date_time_falls_back_to_last_updated() {
    let mut undated = consent(json!({"type": "deny"}));
    undated.as_object_mut().unwrap().remove("dateTime");
    assert_eq!(rows_of(&undated, 42, BASE).unwrap()[0].recorded, 42);
}

#[test]
fn conditions_that_cannot_be_queried_fail_safe() {
    let unqueryable = [
        json!({"code": [{"coding": [{"system": "http://loinc.org", "code": "8867-4"}]}]}),
        json!({"securityLabel": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}]}),
        json!({"class": [{"system": "http://example.org", "code": "x"}]}),
        json!({"data": [{"meaning": "related", "reference": {"reference": "Observation/o1"}}]}),
        json!({"purpose": [{"system": "http://example.org", "code": "TREAT"}]}),
    ];
    for condition in unqueryable {
        // A deny applies without the condition: it denies more.
        let mut deny = json!({"type": "deny", "actor": [role("crm")]});
        deny.as_object_mut()
            .unwrap()
            .extend(condition.as_object().unwrap().clone());
        assert_eq!(
            summary(&rows_of(&consent(deny), 0, BASE).unwrap()),
            [(0, false, "role:crm", "*", "*")],
            "{condition}"
        );
        // A permit does not apply at all (its nested denies still do): it permits less.
        let mut permit = json!({"type": "permit", "actor": [role("crm")], "provision": [{"type": "deny", "class": [class("Claim")]}]});
        permit
            .as_object_mut()
            .unwrap()
            .extend(condition.as_object().unwrap().clone());
        assert_eq!(
            summary(&rows_of(&consent(permit), 0, BASE).unwrap()),
            [(1, false, "role:crm", "*", "Claim")],
            "{condition}"
        );
    }
}

#[test]
fn actors_that_cannot_be_matched_are_refused() {
    for actor in [
        json!({"role": {"text": "x"}, "reference": {"reference": "Practitioner/x"}}),
        role("no-such-role"),
    ] {
        assert!(
            rows_of(
                &consent(json!({"type": "deny", "actor": [actor.clone()]})),
                0,
                BASE
            )
            .is_err(),
            "{actor}"
        );
    }
    let mut foreign = consent(json!({"type": "deny"}));
    foreign["patient"] = json!({"reference": "https://elsewhere.example/fhir/Patient/p1"});
    assert!(rows_of(&foreign, 0, BASE).is_err());
}

fn class(resource_type: &str) -> Value {
    json!({"system": RESOURCE_TYPES, "code": resource_type})
}
