//! Profile validation: the project's profiles and their examples through the real validator, then
//! each kind of check, pass and fail, with the FHIRPath it reports at. Mechanics the project's
//! profiles do not exercise are tested on small profiles compiled on the spot.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use serde_json::{Value, json};

use super::check::matches_pattern;
use super::compile::{self, Context};
use super::{Profile, Step};
use crate::fhir::outcome::{Issue, IssueCode};
use crate::fhir::validation::Report;
use crate::fhir::validation::spec::SpecResource;
use crate::fhir::validation::terminology::Terminology;
use crate::fhir::validation::tests::{PROFILES, validator};

const OBSERVATION: &str = "https://fhirvault.example/StructureDefinition/holter-observation";
const REPORT: &str = "https://fhirvault.example/StructureDefinition/holter-diagnosticreport";
const DEVICE: &str = "https://fhirvault.example/StructureDefinition/holter-device";
const PATIENT: &str = "https://fhirvault.example/StructureDefinition/pseudonymous-patient";
const EUI_64: &str = "urn:oid:1.2.840.10004.1.1.1.0.0.1.0.0.1.2680";

fn example(name: &str) -> Value {
    let path = Path::new(PROFILES).join("examples").join(name);
    serde_json::from_slice(&std::fs::read(&path).expect("example readable"))
        .expect("example is JSON")
}

fn observation() -> Value {
    example("Observation-holter-heart-rate.json")
}

fn report() -> Value {
    example("DiagnosticReport-holter-report.json")
}

fn device() -> Value {
    example("Device-holter-recorder.json")
}

fn patient() -> Value {
    example("Patient-pseudonymous-example.json")
}

fn assert_valid(resource: &Value) {
    let issues = validator().validate(resource);
    assert!(
        issues.is_empty(),
        "expected a valid {}, got {issues:#?}",
        resource["resourceType"]
    );
}

/// The one issue `validate` reports, which must be at `expression` with `code` and name `profile`.
fn assert_fails(resource: &Value, expression: &str, code: IssueCode, profile: &str) {
    let issues = validator().validate(resource);
    assert_eq!(
        issues.len(),
        1,
        "expected one issue at {expression}, got {issues:#?}"
    );
    assert_issue(&issues[0], expression, code, profile);
}

fn assert_issue(issue: &Issue, expression: &str, code: IssueCode, profile: &str) {
    assert_eq!(issue.expression.as_deref(), Some(expression), "{issue:#?}");
    assert_eq!(issue.code, code, "{issue:#?}");
    assert!(
        issue.diagnostics.contains(profile),
        "diagnostics should name {profile}: {issue:#?}"
    );
    assert!(issue.diagnostics.starts_with(expression), "{issue:#?}");
}

// ---- the project's profiles -------------------------------------------------------------------

#[test]
fn profiles_load_and_are_listed_by_type() {
    let profiles = validator().supported_profiles();
    assert_eq!(profiles["Observation"], [OBSERVATION]);
    assert_eq!(profiles["DiagnosticReport"], [REPORT]);
    assert_eq!(profiles["Device"], [DEVICE]);
    assert_eq!(profiles["Patient"], [PATIENT]);
    assert_eq!(
        validator().profile_type(&format!("{DEVICE}|0.1.0")),
        Some("Device")
    );
    assert_eq!(
        validator().profile_type("https://fhirvault.example/StructureDefinition/nope"),
        None
    );

    let served = validator()
        .conformance_resource("StructureDefinition", "holter-device")
        .expect("served");
    assert_eq!(served.resource["url"], DEVICE);
    assert_eq!(served.resource["meta"]["versionId"], "1");
    assert!(
        validator()
            .conformance_resource("ValueSet", "holter-observation-category")
            .is_some()
    );
    assert!(
        validator()
            .conformance_resource("StructureDefinition", "Observation")
            .is_none()
    );
}

#[test]
fn every_example_validates_and_every_profile_has_one() {
    let mut claimed = HashSet::new();
    let folder = Path::new(PROFILES).join("examples");
    for entry in std::fs::read_dir(&folder).expect("examples folder") {
        let name = entry
            .expect("entry")
            .file_name()
            .into_string()
            .expect("utf-8 name");
        let resource = example(&name);
        let profiles = resource["meta"]["profile"]
            .as_array()
            .unwrap_or_else(|| panic!("{name} claims no profile"));
        for url in profiles {
            let url = url.as_str().expect("a URL");
            assert!(
                validator().profile_type(url).is_some(),
                "{name} claims unknown {url}"
            );
            claimed.insert(url.to_owned());
        }
        let issues = validator().validate(&resource);
        assert!(issues.is_empty(), "{name}: {issues:#?}");
    }
    let known: HashSet<String> = validator()
        .supported_profiles()
        .into_values()
        .flatten()
        .collect();
    assert_eq!(claimed, known, "one example per profile");
}

#[test]
fn unclaimed_profiles_are_not_applied_and_unknown_ones_are_accepted() {
    let mut bare = observation();
    bare.as_object_mut().unwrap().remove("meta");
    bare.as_object_mut().unwrap().remove("category");
    assert_valid(&bare);
    bare["meta"] = json!({"profile": ["https://example.org/StructureDefinition/not-loaded-here"]});
    assert_valid(&bare);
}

// ---- cardinality ------------------------------------------------------------------------------

#[test]
fn minimum_cardinality() {
    let mut resource = observation();
    resource.as_object_mut().unwrap().remove("category");
    assert_fails(
        &resource,
        "Observation.category",
        IssueCode::Required,
        OBSERVATION,
    );

    let mut resource = observation();
    resource.as_object_mut().unwrap().remove("subject");
    assert_fails(
        &resource,
        "Observation.subject",
        IssueCode::Required,
        OBSERVATION,
    );

    // A choice element is named without its type.
    let mut resource = observation();
    resource.as_object_mut().unwrap().remove("effectivePeriod");
    assert_fails(
        &resource,
        "Observation.effective",
        IssueCode::Required,
        OBSERVATION,
    );

    // Nested: counted within each occurrence of the parent.
    let mut resource = observation();
    resource["category"] = json!([resource["category"][0].clone(), {"text": "Holter"}]);
    assert_fails(
        &resource,
        "Observation.category[1].coding",
        IssueCode::Required,
        OBSERVATION,
    );

    let mut resource = device();
    resource["identifier"][0]
        .as_object_mut()
        .unwrap()
        .remove("value");
    assert_fails(
        &resource,
        "Device.identifier[0].value",
        IssueCode::Required,
        DEVICE,
    );
    resource.as_object_mut().unwrap().remove("identifier");
    assert_fails(&resource, "Device.identifier", IssueCode::Required, DEVICE);
    // Not every recorder has an EUI-64: OBX-18 may carry an ISO OID instead.
    let mut resource = device();
    resource["identifier"] = json!([{"system": "urn:oid:1.2.40.0.34.99.1", "value": "SN4711"}]);
    assert_valid(&resource);

    let mut resource = report();
    resource["result"] = json!([]);
    let issues = validator().validate(&resource);
    assert!(
        issues
            .iter()
            .any(|issue| issue.expression.as_deref() == Some("DiagnosticReport.result")),
        "{issues:#?}"
    );
}

#[test]
fn maximum_cardinality_and_prohibited_elements() {
    for (element, value) in [
        ("name", json!([{"family": "Muster"}])),
        (
            "telecom",
            json!([{"system": "phone", "value": "+43 1 555 0100"}]),
        ),
        ("address", json!([{"city": "Wien"}])),
        ("birthDate", json!("1980-01-01")),
        ("photo", json!([{"contentType": "image/png"}])),
        ("contact", json!([{"relationship": [{"text": "sister"}]}])),
        (
            "text",
            json!({"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">Maria</div>"}),
        ),
    ] {
        let mut resource = patient();
        resource[element] = value;
        assert_fails(
            &resource,
            &format!("Patient.{element}"),
            IssueCode::Structure,
            PATIENT,
        );
    }
    // `_birthDate` alone is still a birthDate element.
    let mut resource = patient();
    resource["_birthDate"] = json!({"extension": [{"url": "http://hl7.org/fhir/StructureDefinition/patient-birthTime", "valueDateTime": "1980-01-01T04:30:00+01:00"}]});
    assert_fails(
        &resource,
        "Patient.birthDate",
        IssueCode::Structure,
        PATIENT,
    );
}

#[test]
fn diagnostics_do_not_echo_the_instance() {
    let mut resource = patient();
    resource["name"] = json!([{"family": "Unverwechselbar"}]);
    resource["identifier"][0]["system"] = json!("urn:oid:1.2.40.0.10.1.4.3.1");
    resource["identifier"][0]["value"] = json!("1234010180");
    let issues = validator().validate(&resource);
    assert_eq!(issues.len(), 2, "{issues:#?}");
    for issue in issues {
        for sent in ["Unverwechselbar", "1234010180", "1.2.40.0.10.1.4.3.1"] {
            assert!(!issue.diagnostics.contains(sent), "{issue:#?}");
        }
    }
}

// ---- types and references ---------------------------------------------------------------------

#[test]
fn choice_types() {
    let mut resource = observation();
    resource.as_object_mut().unwrap().remove("valueQuantity");
    for (key, value) in [
        ("valueString", json!("sinus rhythm")),
        ("valueCodeableConcept", json!({"text": "sinus rhythm"})),
        ("valueDateTime", json!("2026-03-05T09:12:00+01:00")),
        (
            "valueRange",
            json!({"low": {"value": 40}, "high": {"value": 130}}),
        ),
        (
            "valueRatio",
            json!({"numerator": {"value": 3}, "denominator": {"value": 1000}}),
        ),
        (
            "valueSampledData",
            json!({"origin": {"value": 0}, "period": 4, "dimensions": 1, "data": "1 2 3"}),
        ),
    ] {
        let mut allowed = resource.clone();
        allowed[key] = value;
        assert_valid(&allowed);
    }
    let mut wrong = resource.clone();
    wrong["valueBoolean"] = json!(true);
    assert_fails(
        &wrong,
        "Observation.valueBoolean",
        IssueCode::Structure,
        OBSERVATION,
    );

    let mut wrong = observation();
    wrong.as_object_mut().unwrap().remove("effectivePeriod");
    wrong["effectiveInstant"] = json!("2026-03-05T09:12:00.000+01:00");
    assert_fails(
        &wrong,
        "Observation.effectiveInstant",
        IssueCode::Structure,
        OBSERVATION,
    );

    let mut wrong = observation();
    wrong["component"][1]
        .as_object_mut()
        .unwrap()
        .remove("valueQuantity");
    wrong["component"][1]["valueInteger"] = json!(131);
    assert_fails(
        &wrong,
        "Observation.component[1].valueInteger",
        IssueCode::Structure,
        OBSERVATION,
    );

    let mut wrong = report();
    wrong.as_object_mut().unwrap().remove("effectivePeriod");
    wrong["effectiveDateTime"] = json!("2026-03-05");
    assert_fails(
        &wrong,
        "DiagnosticReport.effectiveDateTime",
        IssueCode::Structure,
        REPORT,
    );
}

#[test]
fn reference_targets() {
    for passes in [
        json!({"reference": "Patient/p1"}),
        json!({"reference": "Patient/p1/_history/2"}),
        json!({"reference": "https://other.example/fhir/Patient/p1"}),
        json!({"reference": "Patient?identifier=urn:fhirvault:pseudonym|psn-1"}),
        json!({"reference": "urn:uuid:8e9c3f36-0f5d-4c52-9a8c-1d0f8f0e0001"}),
        json!({"identifier": {"system": "urn:fhirvault:pseudonym", "value": "psn-1"}}),
        json!({"type": "Patient", "identifier": {"system": "urn:fhirvault:pseudonym", "value": "psn-1"}}),
    ] {
        let mut resource = observation();
        resource["subject"] = passes;
        assert_valid(&resource);
    }
    for fails in [
        json!({"reference": "Group/g1"}),
        json!({"reference": "https://other.example/fhir/Device/d1/_history/1"}),
        json!({"reference": "Group?identifier=x"}),
        json!({"type": "Group", "identifier": {"value": "g1"}}),
    ] {
        let mut resource = observation();
        resource["subject"] = fails;
        assert_fails(
            &resource,
            "Observation.subject",
            IssueCode::Value,
            OBSERVATION,
        );
    }
    // A contained target passes: its type is checked where it is defined.
    let mut resource = observation();
    resource["contained"] = json!([{"resourceType": "Patient", "id": "p", "gender": "female"}]);
    resource["subject"] = json!({"reference": "#p"});
    assert_valid(&resource);

    let mut resource = report();
    resource["result"] = json!([{"reference": "Observation/o1"}, {"reference": "Patient/p1"}]);
    assert_fails(
        &resource,
        "DiagnosticReport.result[1]",
        IssueCode::Value,
        REPORT,
    );

    let mut resource = device();
    resource["patient"] = json!({"reference": "Device/other"});
    assert_fails(&resource, "Device.patient", IssueCode::Value, DEVICE);
}

// ---- fixed and pattern values -----------------------------------------------------------------

#[test]
fn fixed_values() {
    let mut resource = observation();
    resource["valueQuantity"]["system"] = json!("urn:iso:std:iso:11073:10101");
    assert_fails(
        &resource,
        "Observation.valueQuantity.system",
        IssueCode::Value,
        OBSERVATION,
    );
    // Only when present.
    resource["valueQuantity"]
        .as_object_mut()
        .unwrap()
        .remove("system");
    resource["valueQuantity"]
        .as_object_mut()
        .unwrap()
        .remove("code");
    assert_valid(&resource);

    let mut resource = patient();
    resource["identifier"] = json!([resource["identifier"][0].clone(), {"system": "urn:oid:1.2.40.0.10.1.4.3.1", "value": "1234010180"}]);
    assert_fails(
        &resource,
        "Patient.identifier[1].system",
        IssueCode::Value,
        PATIENT,
    );
}

#[test]
fn pattern_values() {
    // Extra codings, display and text are fine; the pattern's coding must be among them.
    let mut resource = report();
    resource["code"]["coding"] = json!([
        {"system": "https://fhirvault.example/CodeSystem/holter", "code": "report"},
        {"system": "http://loinc.org", "code": "18754-2", "display": "Holter study"}
    ]);
    assert_valid(&resource);
    resource["code"]["coding"][1]["code"] = json!("11524-6");
    assert_fails(&resource, "DiagnosticReport.code", IssueCode::Value, REPORT);
}

#[test]
fn a_pattern_on_a_repeating_element_needs_one_matching_repetition() {
    let profile = compile(
        "Device",
        json!([{"path": "Device.identifier", "patternIdentifier": {"system": EUI_64}}]),
    )
    .unwrap();
    let mut resource = json!({"resourceType": "Device", "identifier": [
        {"system": "urn:example:serial", "value": "SN-1"},
        {"system": EUI_64, "value": "0012A7FFFE3C4D5E"}
    ]});
    assert!(check(&profile, &resource).is_empty());
    resource["identifier"][1]["system"] = json!("urn:example:asset");
    let issues = check(&profile, &resource);
    assert_eq!(expressions(&issues), ["Device.identifier"]);
    assert!(
        issues[0]
            .diagnostics
            .contains("no repetition matches the pattern"),
        "{issues:#?}"
    );
    assert!(
        check(&profile, &json!({"resourceType": "Device"})).is_empty(),
        "a pattern does not make the element required"
    );
}

#[test]
fn pattern_matching_follows_r4() {
    let concept = json!({"coding": [{"system": "http://loinc.org", "code": "18754-2"}]});
    assert!(matches_pattern(
        &concept,
        &json!({"coding": [{"system": "x", "code": "y"}, {"system": "http://loinc.org", "code": "18754-2", "display": "d"}], "text": "t"})
    ));
    assert!(!matches_pattern(
        &concept,
        &json!({"coding": [{"system": "http://loinc.org"}, {"code": "18754-2"}]})
    ));
    assert!(!matches_pattern(&concept, &json!({"text": "Holter"})));
    assert!(matches_pattern(&json!("a"), &json!("a")));
    assert!(!matches_pattern(&json!("a"), &json!("A")));
    assert!(!matches_pattern(&json!([1, 2]), &json!([2, 3])));
    assert!(matches_pattern(&json!([2]), &json!([2, 3])));
    assert!(!matches_pattern(
        &json!({"value": 1}),
        &json!({"value": "1"})
    ));
}

// ---- bindings ---------------------------------------------------------------------------------

#[test]
fn required_bindings() {
    // Every category coding is vital-signs or procedure.
    let mut resource = observation();
    resource["category"][0]["coding"][0]["code"] = json!("procedure");
    assert_valid(&resource);
    resource["category"][0]["coding"][0]["code"] = json!("laboratory");
    assert_fails(
        &resource,
        "Observation.category[0].coding[0]",
        IssueCode::CodeInvalid,
        OBSERVATION,
    );

    // Every code coding is from LOINC, MDC or the Holter code system.
    let mut resource = observation();
    resource["code"]["coding"][1] =
        json!({"system": "http://snomed.info/sct", "code": "364075005"});
    assert_fails(
        &resource,
        "Observation.code.coding[1]",
        IssueCode::CodeInvalid,
        OBSERVATION,
    );
    resource["code"]["coding"][1] =
        json!({"system": "https://fhirvault.example/CodeSystem/holter", "code": "hr-mean"});
    assert_valid(&resource);
    resource["code"] = json!({"text": "heart rate"});
    assert_fails(
        &resource,
        "Observation.code.coding",
        IssueCode::Required,
        OBSERVATION,
    );

    // interpretation: required (the base binding is only extensible); one coding from the value set.
    let mut resource = observation();
    resource["interpretation"][0]["coding"] = json!([{"system": "urn:example:lab", "code": "ok"}, {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation", "code": "H"}]);
    assert_valid(&resource);
    resource["interpretation"][0]["coding"][1]["code"] = json!("very-high");
    assert_fails(
        &resource,
        "Observation.interpretation[0]",
        IssueCode::CodeInvalid,
        OBSERVATION,
    );
    resource["interpretation"][0] = json!({"text": "normal"});
    assert_fails(
        &resource,
        "Observation.interpretation[0]",
        IssueCode::CodeInvalid,
        OBSERVATION,
    );
}

// ---- claims, nesting and $validate -------------------------------------------------------------

#[test]
fn a_claim_for_another_type_is_an_error() {
    let mut resource = patient();
    resource["meta"]["profile"] = json!([PATIENT, OBSERVATION]);
    assert_fails(
        &resource,
        "Patient.meta.profile[1]",
        IssueCode::Invalid,
        OBSERVATION,
    );
}

#[test]
fn nested_resources_are_checked_against_their_claims() {
    let mut contained = patient();
    contained["name"] = json!([{"family": "Muster"}]);
    let mut resource = report();
    resource["contained"] = json!([contained]);
    assert_fails(
        &resource,
        "DiagnosticReport.contained[0].name",
        IssueCode::Structure,
        PATIENT,
    );
}

#[test]
fn validate_against_a_named_profile() {
    let mut resource = observation();
    resource.as_object_mut().unwrap().remove("meta");
    resource.as_object_mut().unwrap().remove("subject");
    assert!(validator().validate(&resource).is_empty());
    let issues = validator().validate_against(&resource, OBSERVATION);
    assert_eq!(issues.len(), 1, "{issues:#?}");
    assert_issue(
        &issues[0],
        "Observation.subject",
        IssueCode::Required,
        OBSERVATION,
    );

    // Named and claimed: reported once.
    resource["meta"] = json!({"profile": [OBSERVATION]});
    assert_eq!(
        validator().validate_against(&resource, OBSERVATION).len(),
        1
    );

    let issues = validator().validate_against(&patient(), OBSERVATION);
    assert_eq!(issues.len(), 1, "{issues:#?}");
    assert_eq!(issues[0].code, IssueCode::Invalid);
    assert!(
        issues[0].diagnostics.contains("constrains Observation"),
        "{issues:#?}"
    );

    let issues = validator().validate_against(
        &patient(),
        "https://example.org/StructureDefinition/unknown|2",
    );
    assert_eq!(issues.len(), 1, "{issues:#?}");
    assert_eq!(issues[0].code, IssueCode::NotSupported);
}

// ---- compiling: paths, supported and refused features -----------------------------------------

const TEST_URL: &str = "https://test.example/StructureDefinition/t";

fn definition(resource_type: &str, elements: Value) -> Value {
    json!({
        "resourceType": "StructureDefinition",
        "url": TEST_URL,
        "type": resource_type,
        "kind": "resource",
        "derivation": "constraint",
        "baseDefinition": format!("http://hl7.org/fhir/StructureDefinition/{resource_type}"),
        "differential": {"element": elements}
    })
}

fn compile_with(definition: &Value, terminology: &mut Terminology) -> Result<Profile, String> {
    let resource_types: HashSet<String> = ["Observation", "Patient", "Device", "Group"]
        .map(String::from)
        .into();
    let profile_types = HashMap::from([(DEVICE.to_owned(), "Device".to_owned())]);
    compile::profile(
        definition,
        &Context {
            resource_types: &resource_types,
            profile_types: &profile_types,
        },
        terminology,
    )
}

fn compile(resource_type: &str, elements: Value) -> Result<Profile, String> {
    compile_with(
        &definition(resource_type, elements),
        &mut Terminology::default(),
    )
}

fn check(profile: &Profile, resource: &Value) -> Vec<Issue> {
    let mut report = Report::default();
    let object = resource.as_object().expect("an object");
    profile.check(
        object,
        resource["resourceType"].as_str().expect("a type"),
        &mut report,
    );
    report.finish()
}

fn expressions(issues: &[Issue]) -> Vec<&str> {
    issues
        .iter()
        .filter_map(|issue| issue.expression.as_deref())
        .collect()
}

#[test]
fn the_three_ways_of_naming_a_type_specific_child() {
    let sliced = json!([
        {"id": "Observation.value[x]", "path": "Observation.value[x]",
         "slicing": {"discriminator": [{"type": "type", "path": "$this"}], "rules": "open"}},
        {"id": "Observation.value[x]:valueQuantity", "path": "Observation.value[x]", "sliceName": "valueQuantity"},
        {"id": "Observation.value[x]:valueQuantity.unit", "path": "Observation.value[x].unit", "min": 1}
    ]);
    let renamed = json!([{"path": "Observation.valueQuantity.unit", "min": 1}]);
    let as_path = json!([{"path": "Observation.value[x]:valueQuantity.unit", "min": 1}]);
    for elements in [sliced, renamed, as_path] {
        let profile = compile("Observation", elements).expect("compiles");
        let last = profile.rules.last().expect("a rule");
        assert_eq!(last.parents, [Step::Field("valueQuantity".into())]);
        assert_eq!(last.last, Step::Field("unit".into()));
        let issues = check(
            &profile,
            &json!({"resourceType": "Observation", "valueQuantity": {"value": 1}}),
        );
        assert_eq!(expressions(&issues), ["Observation.valueQuantity.unit"]);
        assert!(
            check(
                &profile,
                &json!({"resourceType": "Observation", "valueString": "x"})
            )
            .is_empty()
        );
    }
    // Without a type, a child of a choice applies to whichever type is present.
    let profile = compile(
        "Observation",
        json!([{"path": "Observation.value[x].unit", "min": 1}]),
    )
    .unwrap();
    let issues = check(
        &profile,
        &json!({"resourceType": "Observation", "valueQuantity": {"value": 1}}),
    );
    assert_eq!(expressions(&issues), ["Observation.valueQuantity.unit"]);
}

#[test]
fn maximum_above_zero_counts_repetitions_and_primitive_extensions() {
    let profile = compile(
        "Patient",
        json!([
            {"path": "Patient.name", "max": "1"},
            {"path": "Patient.name.given", "min": 1, "max": "2"}
        ]),
    )
    .unwrap();
    let ok = json!({"resourceType": "Patient", "name": [{"given": ["A", "B"]}]});
    assert!(check(&profile, &ok).is_empty());
    let too_many = json!({"resourceType": "Patient", "name": [{"given": ["A"]}, {"given": ["A", null, "C"], "_given": [null, {"extension": []}, null]}]});
    assert_eq!(
        expressions(&check(&profile, &too_many)),
        ["Patient.name", "Patient.name[1].given"]
    );
    // `_given` alone makes a given name present.
    let extension_only = json!({"resourceType": "Patient", "name": [{"_given": [{"id": "g"}]}]});
    assert!(check(&profile, &extension_only).is_empty());
}

#[test]
fn fixed_values_compare_exactly() {
    let profile = compile("Observation", json!([{"path": "Observation.valueQuantity", "fixedQuantity": {"value": 1.0, "code": "mV"}}])).unwrap();
    let exact =
        json!({"resourceType": "Observation", "valueQuantity": {"value": 1.0, "code": "mV"}});
    assert!(check(&profile, &exact).is_empty());
    for other in [
        json!({"value": 1.0, "code": "mV", "unit": "mV"}),
        json!({"value": 1, "code": "mV"}),
    ] {
        let resource = json!({"resourceType": "Observation", "valueQuantity": other});
        assert_eq!(
            expressions(&check(&profile, &resource)),
            ["Observation.valueQuantity"]
        );
    }
}

#[test]
fn reference_targets_may_name_profiles() {
    let profile = compile("Observation", json!([{"path": "Observation.device", "type": [{"code": "Reference", "targetProfile": [DEVICE]}]}])).unwrap();
    assert!(
        check(
            &profile,
            &json!({"resourceType": "Observation", "device": {"reference": "Device/d"}})
        )
        .is_empty()
    );
    let wrong = json!({"resourceType": "Observation", "device": {"reference": "Group/g"}});
    assert_eq!(
        expressions(&check(&profile, &wrong)),
        ["Observation.device"]
    );
}

#[test]
fn bindings_only_required_and_only_when_expandable() {
    let value_set: SpecResource = serde_json::from_value(json!({
        "resourceType": "ValueSet", "url": "https://test.example/ValueSet/units",
        "compose": {"include": [{"system": "http://unitsofmeasure.org", "concept": [{"code": "mV"}, {"code": "ms"}]}]}
    }))
    .unwrap();
    let mut terminology = Terminology::default();
    terminology.add(std::iter::once(value_set));
    let elements = |strength: &str, url: &str| {
        json!([{"path": "Observation.valueQuantity", "binding": {"strength": strength, "valueSet": url}},
               {"path": "Observation.status", "binding": {"strength": strength, "valueSet": url}}])
    };
    let wrong = json!({"resourceType": "Observation", "status": "s", "valueQuantity": {"system": "http://unitsofmeasure.org", "code": "kg"}});
    let right = json!({"resourceType": "Observation", "status": "ms", "valueQuantity": {"system": "http://unitsofmeasure.org", "code": "mV"}});

    let profile = compile_with(
        &definition(
            "Observation",
            elements("required", "https://test.example/ValueSet/units"),
        ),
        &mut terminology,
    )
    .unwrap();
    assert!(check(&profile, &right).is_empty());
    let issues = check(&profile, &wrong);
    assert_eq!(
        expressions(&issues),
        ["Observation.valueQuantity", "Observation.status"]
    );
    assert!(issues[0].diagnostics.contains("mV, ms"), "{issues:#?}");

    for (strength, url) in [
        ("extensible", "https://test.example/ValueSet/units"),
        ("required", "https://test.example/ValueSet/unknown"),
    ] {
        let profile = compile_with(
            &definition("Observation", elements(strength, url)),
            &mut terminology,
        )
        .unwrap();
        assert!(check(&profile, &wrong).is_empty(), "{strength} {url}");
    }
}

#[test]
fn unsupported_features_are_refused() {
    for (elements, complaint) in [
        (
            json!([{"path": "Observation.category", "slicing": {"discriminator": [{"type": "pattern", "path": "$this"}], "rules": "open"}}]),
            "slicing",
        ),
        (
            json!([{"id": "Observation.category:vs", "path": "Observation.category", "sliceName": "vs", "min": 1}]),
            "slicing",
        ),
        (
            json!([{"path": "Observation.status", "constraint": [{"key": "x-1", "severity": "error", "human": "h", "expression": "true"}]}]),
            "constraint",
        ),
        (
            json!([{"path": "Observation.valueString", "maxLength": 10}]),
            "maxLength",
        ),
        (
            json!([{"path": "Observation.valueInteger", "minValueInteger": 0}]),
            "minValueInteger",
        ),
        (
            json!([{"path": "Observation.subject", "type": [{"code": "Reference", "targetProfile": ["https://elsewhere.example/StructureDefinition/x"]}]}]),
            "targetProfile",
        ),
        (
            json!([{"path": "Observation.code", "type": [{"code": "CodeableConcept", "profile": ["https://elsewhere.example/x"]}]}]),
            "type.profile",
        ),
        (
            json!([{"path": "Patient.name", "max": "0"}]),
            "must start with Observation",
        ),
        (
            json!([{"path": "Observation.status", "max": "many"}]),
            "max",
        ),
    ] {
        let error = compile("Observation", elements)
            .err()
            .unwrap_or_else(|| panic!("{complaint} should be refused"));
        assert!(error.contains(complaint), "{complaint}: {error}");
    }
    let mut specialization = definition("Observation", json!([]));
    specialization["derivation"] = json!("specialization");
    assert!(compile_with(&specialization, &mut Terminology::default()).is_err());
    let mut on_a_profile = definition("Observation", json!([]));
    on_a_profile["baseDefinition"] = json!("http://hl7.org/fhir/StructureDefinition/vitalsigns");
    let error = compile_with(&on_a_profile, &mut Terminology::default())
        .err()
        .expect("refused");
    assert!(error.contains("profiles of profiles"), "{error}");
}
