//! Validation against the real R4 definitions: valid examples pass, each kind of fault yields
//! the right issue code and FHIRPath, and diagnostics never echo what the client sent.

use std::path::Path;
use std::sync::OnceLock;
use std::time::Instant;

use serde_json::{Value, json};

use super::Validator;
use crate::fhir::outcome::{Issue, IssueCode};

/// The definitions folder of the repository.
const DEFINITIONS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fhir-resources");

/// The profiles folder of the repository.
pub(super) const PROFILES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/profiles");

/// The validator as the server loads it: the R4 definitions and this project's profiles (which
/// only apply to resources that claim them). Shared with the profile tests and other modules'
/// tests: loading takes seconds.
pub(crate) fn validator() -> &'static Validator {
    static VALIDATOR: OnceLock<Validator> = OnceLock::new();
    VALIDATOR.get_or_init(|| {
        Validator::load_with_profiles(Path::new(DEFINITIONS), Some(Path::new(PROFILES)))
            .expect("the R4 definitions load")
    })
}

fn assert_valid(resource: Value) {
    let issues = validator().validate(&resource);
    assert!(
        issues.is_empty(),
        "expected {} to be valid, got {issues:#?}",
        resource["resourceType"]
    );
}

/// The single issue at `expression`, failing with all issues shown otherwise.
fn issue_at(issues: &[Issue], expression: &str) -> Issue {
    let found: Vec<_> = issues
        .iter()
        .filter(|issue| issue.expression.as_deref() == Some(expression))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected one issue at {expression}, got {issues:#?}"
    );
    found[0].clone()
}

fn assert_no_echo(issues: &[Issue], sent: &str) {
    for issue in issues {
        assert!(
            !issue.diagnostics.contains(sent),
            "diagnostics echo the value sent: {issue:?}"
        );
        assert!(
            !issue
                .expression
                .as_deref()
                .unwrap_or_default()
                .contains(sent),
            "expression echoes the value: {issue:?}"
        );
    }
}

fn patient() -> Value {
    json!({
        "resourceType": "Patient",
        "id": "pat-1",
        "meta": { "lastUpdated": "2024-05-01T10:00:00Z" },
        "identifier": [{ "system": "urn:oid:1.2.40.0.10.1.4.3.1", "value": "1234010180" }],
        "active": true,
        "name": [{ "use": "official", "family": "Muster", "given": ["Maria", "Anna"] }],
        "telecom": [{ "system": "phone", "value": "+43 1 555 0100", "use": "mobile" }],
        "gender": "female",
        "birthDate": "1980-01-01",
        "address": [{ "line": ["Hauptstraße 1"], "city": "Wien", "postalCode": "1010", "country": "AT" }],
        "extension": [{ "url": "http://example.org/fhir/StructureDefinition/pet", "valueString": "cat" }],
        "_birthDate": { "extension": [{ "url": "http://hl7.org/fhir/StructureDefinition/patient-birthTime", "valueDateTime": "1980-01-01T04:30:00+01:00" }] }
    })
}

fn observation() -> Value {
    json!({
        "resourceType": "Observation",
        "id": "hr-1",
        "status": "final",
        "category": [{ "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs" }] }],
        "code": { "coding": [{ "system": "http://loinc.org", "code": "8867-4", "display": "Heart rate" }] },
        "subject": { "reference": "Patient/pat-1" },
        "effectivePeriod": { "start": "2024-05-01T10:00:00+02:00", "end": "2024-05-02T10:00:00+02:00" },
        "valueQuantity": { "value": 72, "unit": "beats/minute", "system": "http://unitsofmeasure.org", "code": "/min" },
        "device": { "reference": "Device/holter-7" },
        "component": [{
            "code": { "coding": [{ "system": "urn:oid:2.16.840.1.113883.6.24", "code": "131329" }] },
            "valueSampledData": {
                "origin": { "value": 0, "unit": "uV" },
                "period": 4.0,
                "factor": 1.50,
                "dimensions": 1,
                "data": "12 14 -3 E"
            }
        }]
    })
}

#[test]
fn validator_is_shared_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Validator>();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..4)
            .map(|_| scope.spawn(|| validator().validate(&observation())))
            .collect();
        for worker in workers {
            assert!(worker.join().unwrap().is_empty());
        }
    });
}

#[test]
fn loads_every_resource_type() {
    let types = validator().resource_types();
    assert_eq!(types.len(), 146);
    assert!(types.windows(2).all(|pair| pair[0] < pair[1]), "sorted");
    for name in ["Patient", "Observation", "Device", "Bundle", "Consent"] {
        assert!(validator().is_resource_type(name), "{name}");
    }
    for name in ["Resource", "DomainResource", "HumanName", "patient", ""] {
        assert!(!validator().is_resource_type(name), "{name}");
    }
}

#[test]
fn every_resource_schema_compiles() {
    let schemas = &validator().schemas;
    for (index, name) in schemas.types().iter().enumerate() {
        assert!(
            schemas.validator(index).is_some(),
            "schema of {name} compiles"
        );
    }
}

#[test]
fn realistic_resources_pass() {
    assert_valid(patient());
    assert_valid(observation());
    assert_valid(json!({
        "resourceType": "Device",
        "identifier": [{ "system": "http://example.org/serial", "value": "HX-2041-0007" }],
        "status": "active",
        "manufacturer": "Example Medical",
        "deviceName": [{ "name": "Holter 7", "type": "manufacturer-name" }],
        "type": { "coding": [{ "system": "urn:iso:std:iso:11073:10101", "code": "528391" }] },
        "patient": { "reference": "Patient/pat-1" }
    }));
    assert_valid(json!({
        "resourceType": "Organization",
        "active": true,
        "type": [{ "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/organization-type", "code": "prov" }] }],
        "name": "Kardiologie Wien",
        "telecom": [{ "system": "email", "value": "info@example.org" }]
    }));
    assert_valid(json!({
        "resourceType": "Coverage",
        "status": "active",
        "beneficiary": { "reference": "Patient/pat-1" },
        "payor": [{ "reference": "Organization/insurer-1" }],
        "period": { "start": "2024-01-01" }
    }));
    assert_valid(json!({
        "resourceType": "Claim",
        "status": "active",
        "type": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/claim-type", "code": "professional" }] },
        "use": "claim",
        "patient": { "reference": "Patient/pat-1" },
        "created": "2024-05-03",
        "provider": { "reference": "Organization/clinic-1" },
        "priority": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/processpriority", "code": "normal" }] },
        "insurance": [{ "sequence": 1, "focal": true, "coverage": { "reference": "Coverage/cov-1" } }],
        "total": { "value": 120.50, "currency": "EUR" }
    }));
    assert_valid(json!({
        "resourceType": "Consent",
        "status": "active",
        "scope": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy" }] },
        "category": [{ "coding": [{ "system": "http://loinc.org", "code": "59284-0" }] }],
        "patient": { "reference": "Patient/pat-1" },
        "dateTime": "2024-05-01T09:00:00+02:00",
        "policyRule": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN" }] },
        "provision": { "type": "permit", "period": { "start": "2024-05-01" } }
    }));
    assert_valid(json!({
        "resourceType": "Condition",
        "clinicalStatus": { "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active" }] },
        "verificationStatus": { "text": "confirmed by ECG" },
        "code": { "coding": [{ "system": "http://snomed.info/sct", "code": "49436004" }] },
        "subject": { "reference": "Patient/pat-1" }
    }));
}

#[test]
fn nested_resources_pass_with_their_own_type() {
    let mut with_contained = patient();
    with_contained["contained"] =
        json!([{ "resourceType": "Organization", "id": "gp", "name": "Praxis" }]);
    with_contained["managingOrganization"] = json!({ "reference": "#gp" });
    assert_valid(with_contained);
    assert_valid(json!({
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            { "fullUrl": "urn:uuid:5f1b0b52-2f5e-4b0e-9d62-1f1a9b1d2c3e", "resource": patient(), "request": { "method": "POST", "url": "Patient" } },
            { "resource": observation(), "request": { "method": "PUT", "url": "Observation/hr-1" } }
        ]
    }));
}

#[test]
fn unknown_element_is_structure() {
    let mut resource = patient();
    resource["foo"] = json!(1);
    resource["name"][0]["nickname"] = json!("Mia");
    let issues = validator().validate(&resource);
    let issue = issue_at(&issues, "Patient.foo");
    assert_eq!(issue.code, IssueCode::Structure);
    assert_eq!(issue.diagnostics, "Patient.foo: unknown element");
    assert_eq!(
        issue_at(&issues, "Patient.name[0].nickname").code,
        IssueCode::Structure
    );
    assert_eq!(issues.len(), 2, "{issues:#?}");
}

#[test]
fn wrong_json_type_is_structure_and_reported_once() {
    let mut resource = patient();
    resource["active"] = json!("yes");
    resource["name"][0]["given"][1] = json!(7);
    let issues = validator().validate(&resource);
    let issue = issue_at(&issues, "Patient.active");
    assert_eq!(issue.code, IssueCode::Structure);
    assert_eq!(
        issue.diagnostics,
        "Patient.active: wrong JSON type, expected true or false"
    );
    assert_eq!(
        issue_at(&issues, "Patient.name[0].given[1]").code,
        IssueCode::Structure
    );
    assert_eq!(issues.len(), 2, "{issues:#?}");
    assert_no_echo(&issues, "yes");
}

#[test]
fn bad_gender_names_the_allowed_codes_not_the_value() {
    let mut resource = patient();
    resource["gender"] = json!("Zorro-PHI");
    let issues = validator().validate(&resource);
    let issue = issue_at(&issues, "Patient.gender");
    assert_eq!(issue.code, IssueCode::Value);
    assert_eq!(
        issue.diagnostics,
        "Patient.gender: value is not in the required value set http://hl7.org/fhir/ValueSet/administrative-gender \
         (allowed: male, female, other, unknown)"
    );
    assert_no_echo(&issues, "Zorro-PHI");
}

#[test]
fn bad_birth_date_is_value() {
    let mut resource = patient();
    resource["birthDate"] = json!("1970-13-45-Zorro-PHI");
    let issues = validator().validate(&resource);
    let issue = issue_at(&issues, "Patient.birthDate");
    assert_eq!(issue.code, IssueCode::Value);
    assert_eq!(
        issue.diagnostics,
        "Patient.birthDate: not a valid FHIR date (YYYY, YYYY-MM or YYYY-MM-DD)"
    );
    assert_eq!(issues.len(), 1, "{issues:#?}");
    assert_no_echo(&issues, "Zorro-PHI");
}

#[test]
fn bad_id_is_value() {
    for id in ["has space", "", "a/b", &"x".repeat(65)] {
        let mut resource = patient();
        resource["id"] = json!(id);
        let issues = validator().validate(&resource);
        let issue = issue_at(&issues, "Patient.id");
        assert_eq!(issue.code, IssueCode::Value);
        assert!(
            issue.diagnostics.contains("not a valid FHIR id"),
            "{issue:?}"
        );
        assert_eq!(issues.len(), 1, "{issues:#?}");
    }
}

#[test]
fn missing_observation_status_is_required() {
    let mut resource = observation();
    resource.as_object_mut().unwrap().remove("status");
    resource.as_object_mut().unwrap().remove("code");
    let issues = validator().validate(&resource);
    let status = issue_at(&issues, "Observation.status");
    assert_eq!(status.code, IssueCode::Required);
    assert_eq!(
        status.diagnostics,
        "Observation.status: required element `status` is missing"
    );
    assert_eq!(
        issue_at(&issues, "Observation.code").code,
        IssueCode::Required
    );
    assert_eq!(issues.len(), 2, "{issues:#?}");

    // An extension in `_status` (e.g. data-absent-reason) stands in for the value.
    let mut resource = observation();
    resource.as_object_mut().unwrap().remove("status");
    resource["_status"] = json!({ "extension": [{ "url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason", "valueCode": "unknown" }] });
    assert_valid(resource);
}

#[test]
fn bad_observation_status_is_value() {
    let mut resource = observation();
    resource["status"] = json!("done");
    let issues = validator().validate(&resource);
    let issue = issue_at(&issues, "Observation.status");
    assert_eq!(issue.code, IssueCode::Value);
    assert!(
        issue
            .diagnostics
            .contains("allowed: registered, preliminary, final"),
        "{issue:?}"
    );
    assert_eq!(issues.len(), 1, "{issues:#?}");
}

#[test]
fn unknown_or_missing_resource_type() {
    let issues = validator().validate(&json!({ "resourceType": "Zorro", "id": "1" }));
    assert_eq!(issues.len(), 1);
    assert_eq!(issues[0].code, IssueCode::NotSupported);
    assert!(
        issues[0]
            .diagnostics
            .contains("not a FHIR R4 resource type"),
        "{issues:?}"
    );
    assert_no_echo(&issues, "Zorro");

    let issues = validator().validate(&json!({ "id": "1" }));
    assert_eq!(issues[0].code, IssueCode::Required);
    assert_eq!(
        validator().validate(&json!({ "resourceType": ["Patient"] }))[0].code,
        IssueCode::Structure
    );
    assert_eq!(
        validator().validate(&json!(["Patient"]))[0].code,
        IssueCode::Structure
    );
    assert_eq!(
        validator().validate(&json!({ "resourceType": "DomainResource" }))[0].code,
        IssueCode::NotSupported
    );
}

#[test]
fn required_codeable_concept_binding() {
    // Condition.clinicalStatus: CodeableConcept, required binding to condition-clinical.
    let condition = |coding: Value| {
        json!({
            "resourceType": "Condition",
            "clinicalStatus": { "coding": coding },
            "subject": { "reference": "Patient/pat-1" }
        })
    };
    let system = "http://terminology.hl7.org/CodeSystem/condition-clinical";
    let issues = validator().validate(&condition(
        json!([{ "system": system, "code": "Zorro-PHI" }]),
    ));
    let issue = issue_at(&issues, "Condition.clinicalStatus");
    assert_eq!(issue.code, IssueCode::CodeInvalid);
    assert!(
        issue
            .diagnostics
            .contains("http://hl7.org/fhir/ValueSet/condition-clinical"),
        "{issue:?}"
    );
    assert!(
        issue
            .diagnostics
            .contains("allowed: active, recurrence, relapse, inactive, remission, resolved"),
        "{issue:?}"
    );
    assert_no_echo(&issues, "Zorro-PHI");

    // Nested codes of the CodeSystem hierarchy count; one good coding is enough.
    assert_valid(condition(json!([{ "system": system, "code": "relapse" }])));
    assert_valid(condition(
        json!([{ "system": system, "code": "bad" }, { "system": system, "code": "resolved" }]),
    ));
    // Codings of systems the value set does not draw from cannot be judged.
    assert_valid(condition(
        json!([{ "system": "http://snomed.info/sct", "code": "55561003" }]),
    ));
}

#[test]
fn required_code_binding() {
    // Coverage.status is a code bound to fm-status, for which the schema has no enum.
    let issues = validator().validate(&json!({
        "resourceType": "Coverage",
        "status": "Zorro-PHI",
        "beneficiary": { "reference": "Patient/pat-1" },
        "payor": [{ "reference": "Organization/insurer-1" }]
    }));
    let issue = issue_at(&issues, "Coverage.status");
    assert_eq!(issue.code, IssueCode::Value);
    assert!(
        issue
            .diagnostics
            .contains("allowed: active, cancelled, draft, entered-in-error"),
        "{issue:?}"
    );
    assert_no_echo(&issues, "Zorro-PHI");
}

#[test]
fn snapshot_rules_reach_datatypes_and_nested_resources() {
    let mut resource = patient();
    resource["extension"][0]
        .as_object_mut()
        .unwrap()
        .remove("url");
    resource["contained"] = json!([{ "resourceType": "Observation", "code": { "text": "HR" } }]);
    let issues = validator().validate(&resource);
    assert_eq!(
        issue_at(&issues, "Patient.extension[0].url").code,
        IssueCode::Required
    );
    assert_eq!(
        issue_at(&issues, "Patient.contained[0].status").code,
        IssueCode::Required
    );
    assert_eq!(issues.len(), 2, "{issues:#?}");

    let issues = validator().validate(&json!({
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{ "resource": { "resourceType": "Patient", "gender": "x" } }, { "resource": { "resourceType": "Nope" } }]
    }));
    assert_eq!(
        issue_at(&issues, "Bundle.entry[0].resource.gender").code,
        IssueCode::Value
    );
    assert_eq!(
        issue_at(&issues, "Bundle.entry[1].resource").code,
        IssueCode::NotSupported
    );

    let mut resource = patient();
    resource["contained"] = json!([{ "resourceType": "Organization", "contained": [{ "resourceType": "Organization" }] }]);
    let issues = validator().validate(&resource);
    assert_eq!(
        issue_at(&issues, "Patient.contained[0].contained").code,
        IssueCode::Invariant
    );
}

#[test]
fn strings_follow_the_spec_rule_not_the_schema_regex() {
    let mut resource = patient();
    // A no-break space and an ideographic space are legal in FHIR strings.
    resource["address"][0]["line"][0] = json!("Hauptstraße\u{a0}1");
    resource["name"][0]["family"] = json!("山田\u{3000}太郎");
    assert_valid(resource.clone());

    resource["name"][0]["family"] = json!("Muster\u{1}");
    resource["address"][0]["city"] = json!("");
    let issues = validator().validate(&resource);
    for expression in ["Patient.name[0].family", "Patient.address[0].city"] {
        let issue = issue_at(&issues, expression);
        assert_eq!(issue.code, IssueCode::Value);
        assert!(
            issue.diagnostics.contains("not a valid FHIR string"),
            "{issue:?}"
        );
    }
    assert_eq!(issues.len(), 2, "{issues:#?}");

    let mut resource = observation();
    resource["component"][0]["valueString"] = json!("\u{1}");
    resource["component"][0]
        .as_object_mut()
        .unwrap()
        .remove("valueSampledData");
    let issue = issue_at(
        &validator().validate(&resource),
        "Observation.component[0].valueString",
    );
    assert!(
        issue.diagnostics.contains("not a valid FHIR string"),
        "{issue:?}"
    );
}

/// The spec's own definitions are FHIR resources too: they must pass (this caught the schema's
/// missing `4.0.1` fhirVersion, its missing `_baseDefinition`, and its ASCII-only string rule).
#[test]
fn the_specs_own_definitions_pass() {
    for file in [
        "profiles-types.json",
        "search-parameters.json",
        "valuesets.json",
    ] {
        let bytes = std::fs::read(Path::new(DEFINITIONS).join(file)).unwrap();
        let bundle: Value = serde_json::from_slice(&bytes).unwrap();
        for entry in bundle["entry"].as_array().unwrap() {
            let issues = validator().validate(&entry["resource"]);
            assert!(
                issues.is_empty(),
                "{file} {}: {issues:#?}",
                entry["fullUrl"]
            );
        }
    }
    let bytes =
        std::fs::read(Path::new(DEFINITIONS).join("compartmentdefinition-patient.json")).unwrap();
    assert_valid(serde_json::from_slice(&bytes).unwrap());
}

#[test]
fn integer_ranges() {
    let mut resource = observation();
    resource["component"][0]["valueSampledData"]["dimensions"] = json!(0);
    let issues = validator().validate(&resource);
    let issue = issue_at(
        &issues,
        "Observation.component[0].valueSampledData.dimensions",
    );
    assert_eq!(issue.code, IssueCode::Value);
    assert!(issue.diagnostics.contains("positiveInt"), "{issue:?}");

    let mut resource = observation();
    resource["component"][0]["valueSampledData"]["dimensions"] = json!(1.5);
    assert_eq!(validator().validate(&resource).len(), 1);
}

#[test]
fn odd_property_names_are_quoted_in_expressions() {
    let mut resource = patient();
    resource["first name"] = json!("x");
    resource["0"] = json!("x");
    let issues = validator().validate(&resource);
    assert_eq!(
        issue_at(&issues, "Patient.`first name`").code,
        IssueCode::Structure
    );
    assert_eq!(issue_at(&issues, "Patient.`0`").code, IssueCode::Structure);
}

#[test]
fn issues_are_capped() {
    let mut resource = patient();
    for n in 0..200 {
        resource[format!("unknown{n}")] = json!(n);
    }
    let issues = validator().validate(&resource);
    assert_eq!(issues.len(), 51);
    assert!(issues[..50].iter().all(Issue::is_error));
    assert!(!issues[50].is_error());
}

#[test]
fn hostile_shapes_do_not_panic() {
    let mut deep = json!({ "resourceType": "Patient" });
    for _ in 0..200 {
        deep = json!({ "resourceType": "Patient", "contained": [deep] });
    }
    assert_eq!(validator().validate(&deep)[0].code, IssueCode::Structure);
    let huge: Value = serde_json::from_str("1e999999").unwrap();
    let long: Value = serde_json::from_str(&format!("-{}", "9".repeat(500))).unwrap();
    let hostile = [
        json!(null),
        json!("Patient"),
        json!({ "resourceType": "Patient", "name": "x", "_gender": 3, "contained": [1, null, {}] }),
        json!({ "resourceType": "Patient", "name": [{ "given": [null], "_given": [null, { "id": 1 }] }], "birthDate": "x".repeat(100_000) }),
        json!({ "resourceType": "Claim", "insurance": [{ "sequence": huge }, { "sequence": long }, { "sequence": -0.0 }] }),
        json!({ "resourceType": "Observation", "status": 3, "code": [], "component": { "code": null }, "valueQuantity": { "value": huge } }),
        json!({ "resourceType": "Condition", "clinicalStatus": { "coding": { "system": 1 } }, "verificationStatus": [] }),
    ];
    for body in hostile {
        let _ = validator().validate(&body);
    }
    let mut resource = patient();
    resource["a/b~c"] = json!(1);
    issue_at(&validator().validate(&resource), "Patient.`a/b~c`");
}

/// `:below` / `:above` read the hierarchies of the spec's own code systems: nested concepts
/// (FHIR and v3), the v3 `child` property (a second parent), flat v2 tables; other systems and
/// unknown codes are errors, never an exact match.
#[test]
fn subsumption_from_the_spec_code_systems() {
    use super::{Subsumption, SubsumptionError};
    let v = validator();
    let sorted = |system: &str, code: &str, direction| {
        let mut codes = v.subsumption(system, code, direction).unwrap();
        codes.sort();
        codes
    };
    let clinical = "http://terminology.hl7.org/CodeSystem/condition-clinical";
    assert_eq!(
        sorted(clinical, "active", Subsumption::Below),
        ["active", "recurrence", "relapse"]
    );
    assert_eq!(
        sorted(clinical, "relapse", Subsumption::Above),
        ["active", "relapse"]
    );
    let forms = "http://terminology.hl7.org/CodeSystem/v3-orderableDrugForm";
    // DROP is nested under _AdministrableDrugForm and a `child` of SOL by property.
    let below_solution = sorted(forms, "SOL", Subsumption::Below);
    for code in ["SOL", "ORALSOL", "DROP", "ORDROP", "SYRUP"] {
        assert!(
            below_solution.iter().any(|c| c == code),
            "{code}: {below_solution:?}"
        );
    }
    assert!(!below_solution.iter().any(|c| c == "TAB"));
    assert!(sorted(forms, "ORALSOL", Subsumption::Below).len() < below_solution.len());
    let above_drops = sorted(forms, "ORDROP", Subsumption::Above);
    for ancestor in [
        "DROP",
        "ORALSOL",
        "SOL",
        "_AdministrableDrugForm",
        "_Liquid",
    ] {
        assert!(
            above_drops.iter().any(|c| c == ancestor),
            "{ancestor}: {above_drops:?}"
        );
    }
    let v2 = "http://terminology.hl7.org/CodeSystem/v2-0203";
    assert_eq!(sorted(v2, "MR", Subsumption::Below), ["MR"]);
    assert_eq!(
        v.subsumption("http://loinc.org", "8867-4", Subsumption::Below),
        Err(SubsumptionError::UnknownSystem)
    );
    assert_eq!(
        v.subsumption(clinical, "no-such-code", Subsumption::Below),
        Err(SubsumptionError::UnknownCode)
    );
    // Both ends of a polyhierarchy are one code once.
    let below_forms = v
        .subsumption(forms, "_AdministrableDrugForm", Subsumption::Below)
        .unwrap();
    let mut unique = below_forms.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), below_forms.len());
}

/// Timings for the report: `cargo test --release -- --ignored --nocapture timings`.
#[test]
#[ignore]
fn timings() {
    let started = Instant::now();
    let fresh = Validator::load(Path::new(DEFINITIONS)).unwrap();
    println!("load: {:?}", started.elapsed());
    for (name, resource) in [("Patient", patient()), ("Observation", observation())] {
        let started = Instant::now();
        assert!(fresh.validate(&resource).is_empty());
        println!(
            "{name}: first validation (compiles the schema): {:?}",
            started.elapsed()
        );
        let rounds = 2000;
        let started = Instant::now();
        for _ in 0..rounds {
            assert!(fresh.validate(&resource).is_empty());
        }
        println!("{name}: validation: {:?} each", started.elapsed() / rounds);
    }
    let started = Instant::now();
    for index in 0..fresh.schemas.types().len() {
        fresh.schemas.validator(index);
    }
    println!(
        "compiling the other {} schemas: {:?}",
        fresh.schemas.types().len() - 2,
        started.elapsed()
    );
}
