//! Whole resources through the R4 registry: what the server will actually index.

use super::*;
use crate::search::registry::tests::r4;
use serde_json::json;

fn index(resource: &Value) -> Vec<IndexEntry> {
    extract(r4(), resource)
}

/// The values an Observation parameter's expression finds, whether or not they are stored.
fn evaluated(code: &str, resource: &Value) -> Vec<IndexValue> {
    let param = r4()
        .get("Observation", code)
        .expect("an Observation parameter");
    let expression = param.expression_for("Observation").expect("an expression");
    param_values(param, expression, resource).expect("evaluates")
}

/// The values indexed for one parameter code.
fn of<'e>(entries: &'e [IndexEntry], code: &str) -> Vec<&'e IndexValue> {
    entries
        .iter()
        .filter(|e| e.param_code == code)
        .map(|e| &e.value)
        .collect()
}

fn normalized<'e>(entries: &'e [IndexEntry], code: &str) -> Vec<&'e str> {
    of(entries, code)
        .into_iter()
        .filter_map(|v| match v {
            IndexValue::String { normalized, .. } => Some(normalized.as_str()),
            _ => None,
        })
        .collect()
}

fn codes<'e>(entries: &'e [IndexEntry], code: &str) -> Vec<(Option<&'e str>, Option<&'e str>)> {
    of(entries, code)
        .into_iter()
        .filter_map(|v| match v {
            IndexValue::Token { system, code, .. } => Some((system.as_deref(), code.as_deref())),
            _ => None,
        })
        .collect()
}

fn references(entries: &[IndexEntry], code: &str) -> Vec<String> {
    of(entries, code)
        .into_iter()
        .filter_map(|v| match v {
            IndexValue::Reference {
                target_type: Some(t),
                target_id: Some(id),
                ..
            } => Some(format!("{t}/{id}")),
            _ => None,
        })
        .collect()
}

fn token(system: Option<&str>, code: &str) -> IndexValue {
    IndexValue::Token {
        system: system.map(Into::into),
        code: Some(code.into()),
        text: None,
    }
}

fn micros(text: &str) -> (i64, i64) {
    parse_date_range(text).unwrap_or_else(|| panic!("{text}"))
}

fn patient() -> Value {
    json!({
        "resourceType": "Patient",
        "id": "p1",
        "meta": {
            "lastUpdated": "2026-03-05T10:00:00.000Z",
            "profile": ["https://fhirvault.example/StructureDefinition/pseudonymous-patient"],
            "tag": [{"system": "https://fhirvault.example/tags", "code": "holter"}],
            "security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}],
            "source": "hl7v2://holter-hub-1"
        },
        "identifier": [
            {"system": "urn:oid:1.2.40.0.10.1.4.3.1", "value": "1234010180",
             "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "SS"}]}},
            {"system": "https://fhirvault.example/pseudonym", "value": "psn-7f3a"}
        ],
        "active": true,
        "name": [
            {"use": "official", "family": "Müller", "given": ["Jörg", "Zoë"], "prefix": ["Dr."]},
            {"text": "Jörg Müller"}
        ],
        "telecom": [
            {"system": "phone", "value": "+43 1 234567", "use": "home"},
            {"system": "email", "value": "joerg@example.org"}
        ],
        "gender": "male",
        "birthDate": "1980-03",
        "address": [{"use": "home", "line": ["Hauptstraße 1"], "city": "Wien", "postalCode": "1010", "country": "AT"}],
        "generalPractitioner": [{"reference": "Practitioner/gp1"}],
        "managingOrganization": {"reference": "Organization/org1"},
        "link": [{"other": {"reference": "Patient/p0"}, "type": "replaces"}],
        "communication": [{"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "de-AT"}]}}]
    })
}

#[test]
fn patient_entries() {
    let e = index(&patient());
    assert_eq!(
        normalized(&e, "name"),
        ["muller", "jorg", "zoe", "dr.", "jorg muller"]
    );
    assert_eq!(normalized(&e, "family"), ["muller"]);
    assert_eq!(normalized(&e, "given"), ["jorg", "zoe"]);
    assert!(of(&e, "name").contains(&&IndexValue::String {
        normalized: "muller".into(),
        exact: "Müller".into()
    }));
    assert_eq!(
        codes(&e, "identifier"),
        [
            (Some("urn:oid:1.2.40.0.10.1.4.3.1"), Some("1234010180")),
            (
                Some("https://fhirvault.example/pseudonym"),
                Some("psn-7f3a")
            )
        ]
    );
    assert_eq!(codes(&e, "phone"), [(None, Some("+43 1 234567"))]);
    assert_eq!(codes(&e, "email"), [(None, Some("joerg@example.org"))]);
    assert_eq!(codes(&e, "telecom").len(), 2);
    assert_eq!(codes(&e, "gender"), [(None, Some("male"))]);
    assert_eq!(codes(&e, "active"), [(None, Some("true"))]);
    assert_eq!(codes(&e, "deceased"), [(None, Some("false"))]);
    assert_eq!(
        codes(&e, "language"),
        [(Some("urn:ietf:bcp:47"), Some("de-AT"))]
    );
    let (start, end) = micros("1980-03");
    assert_eq!(of(&e, "birthdate"), [&IndexValue::Date { start, end }]);
    assert_eq!(normalized(&e, "address-city"), ["wien"]);
    assert_eq!(normalized(&e, "address-postalcode"), ["1010"]);
    assert_eq!(normalized(&e, "address-country"), ["at"]);
    assert_eq!(
        normalized(&e, "address"),
        ["hauptstraße 1", "wien", "1010", "at"]
    );
    assert_eq!(codes(&e, "address-use"), [(None, Some("home"))]);
    assert_eq!(references(&e, "general-practitioner"), ["Practitioner/gp1"]);
    assert_eq!(references(&e, "organization"), ["Organization/org1"]);
    assert_eq!(references(&e, "link"), ["Patient/p0"]);
    // Resource-level parameters.
    assert_eq!(codes(&e, "_id"), [(None, Some("p1"))]);
    let (start, end) = micros("2026-03-05T10:00:00.000Z");
    assert_eq!(of(&e, "_lastUpdated"), [&IndexValue::Date { start, end }]);
    assert_eq!(end - start, 1000, "millisecond precision");
    assert_eq!(
        of(&e, "_profile"),
        [&IndexValue::Uri {
            value: "https://fhirvault.example/StructureDefinition/pseudonymous-patient".into()
        }]
    );
    assert_eq!(
        codes(&e, "_tag"),
        [(Some("https://fhirvault.example/tags"), Some("holter"))]
    );
    assert_eq!(codes(&e, "_security").len(), 1);
    assert_eq!(
        of(&e, "_source"),
        [&IndexValue::Uri {
            value: "hl7v2://holter-hub-1".into()
        }]
    );
    assert!(of(&e, "_text").is_empty() && of(&e, "_content").is_empty());
    for entry in &e {
        assert!(
            entry
                .param_url
                .starts_with("http://hl7.org/fhir/SearchParameter/"),
            "{}",
            entry.param_url
        );
    }
}

#[test]
fn deceased_patient() {
    let mut p = patient();
    p["deceasedDateTime"] = json!("2025-01-01");
    assert_eq!(codes(&index(&p), "deceased"), [(None, Some("true"))]);
    p.as_object_mut().unwrap().remove("deceasedDateTime");
    p["deceasedBoolean"] = json!(false);
    assert_eq!(codes(&index(&p), "deceased"), [(None, Some("false"))]);
}

fn observation() -> Value {
    let mut o = observation_with_json_macro();
    // `json!` turns the literal 1.50 into 1.5; the stored text keeps the trailing zero.
    o["component"][1]["valueQuantity"]["value"] = serde_json::from_str("1.50").unwrap_or_default();
    o
}

fn observation_with_json_macro() -> Value {
    json!({
        "resourceType": "Observation",
        "id": "o1",
        "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}], "text": "HR"},
        "subject": {"reference": "Patient/p1"},
        "performer": [{"reference": "Practitioner/d1"}, {"reference": "Organization/org1"}],
        "device": {"reference": "Device/holter-7"},
        "effectiveDateTime": "2026-03-05T10:00:00+01:00",
        "valueQuantity": {"value": 72, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"},
        "component": [
            {"code": {"coding": [{"system": "urn:iso:std:iso:11073:10101", "code": "147842"}]},
             "valueQuantity": {"value": 58, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"}},
            {"code": {"coding": [{"system": "urn:iso:std:iso:11073:10101", "code": "8410608"}]},
             "valueQuantity": {"value": 1.50, "unit": "s", "system": "http://unitsofmeasure.org", "code": "s"}},
            {"code": {"text": "rhythm"}, "valueCodeableConcept": {"coding": [{"system": "http://snomed.info/sct", "code": "64730000"}]}}
        ]
    })
}

#[test]
fn observation_entries() {
    let e = index(&observation());
    assert_eq!(
        codes(&e, "code"),
        [(Some("http://loinc.org"), Some("8867-4")), (None, None)]
    );
    assert!(of(&e, "code").contains(&&IndexValue::Token {
        system: None,
        code: None,
        text: Some("HR".into())
    }));
    assert_eq!(codes(&e, "status"), [(None, Some("final"))]);
    assert_eq!(codes(&e, "category").len(), 1);
    assert_eq!(references(&e, "subject"), ["Patient/p1"]);
    assert_eq!(references(&e, "patient"), ["Patient/p1"]);
    assert_eq!(
        references(&e, "performer"),
        ["Practitioner/d1", "Organization/org1"]
    );
    assert_eq!(references(&e, "device"), ["Device/holter-7"]);
    let heart_rate = IndexValue::Quantity {
        value: 72.0,
        low: 71.5,
        high: 72.5,
        system: Some("http://unitsofmeasure.org".into()),
        code: Some("/min".into()),
        unit: Some("/min".into()),
    };
    assert_eq!(of(&e, "value-quantity"), [&heart_rate]);
    // 10:00 at +01:00 is 09:00 UTC, to the second.
    assert_eq!(
        of(&e, "date"),
        [&IndexValue::Date {
            start: 1_772_701_200_000_000,
            end: 1_772_701_201_000_000
        }]
    );
    assert_eq!(of(&e, "component-value-quantity").len(), 2);
    assert_eq!(
        codes(&e, "component-code").len(),
        3,
        "two codings and one text"
    );
    assert_eq!(
        codes(&e, "component-value-concept"),
        [(Some("http://snomed.info/sct"), Some("64730000"))]
    );
    // `combo-code` is `code | component-code`: stored as its members' rows, evaluated it finds
    // exactly their values.
    assert!(codes(&e, "combo-code").is_empty(), "a union has no rows");
    assert_eq!(
        evaluated("combo-code", &observation()).len(),
        codes(&e, "code").len() + codes(&e, "component-code").len()
    );

    // Composites: one entry per (code, value) combination of each focus node.
    let cvq = of(&e, "code-value-quantity");
    assert_eq!(cvq.len(), 2, "LOINC coding and text, each with the value");
    let loinc_hr = IndexValue::Token {
        system: Some("http://loinc.org".into()),
        code: Some("8867-4".into()),
        text: Some("Heart rate".into()),
    };
    assert_eq!(
        cvq[0],
        &IndexValue::Composite {
            components: vec![loinc_hr, heart_rate.clone()]
        }
    );
    let component_pairs = of(&e, "component-code-value-quantity");
    assert_eq!(component_pairs.len(), 2);
    match component_pairs[1] {
        IndexValue::Composite { components } => {
            assert_eq!(
                components[0],
                token(Some("urn:iso:std:iso:11073:10101"), "8410608")
            );
            assert!(
                matches!(&components[1], IndexValue::Quantity { low, high, .. } if (*low - 1.495).abs() < 1e-9 && (*high - 1.505).abs() < 1e-9)
            );
        }
        other => panic!("{other:?}"),
    }
    assert!(of(&e, "combo-code-value-quantity").is_empty());
    assert_eq!(
        evaluated("combo-code-value-quantity", &observation()).len(),
        cvq.len() + component_pairs.len()
    );
    assert_eq!(of(&e, "component-code-value-concept").len(), 1);
    assert!(
        of(&e, "code-value-concept").is_empty(),
        "the value is a Quantity"
    );
    assert!(of(&e, "value-concept").is_empty());
    assert!(of(&e, "value-string").is_empty());
}

#[test]
fn observation_choice_values_index_by_their_type() {
    let mut o = observation();
    let map = o.as_object_mut().unwrap();
    map.remove("valueQuantity");
    map.remove("effectiveDateTime");
    map.insert("valueString".into(), json!("Sinusrhythmus"));
    map.insert(
        "effectivePeriod".into(),
        json!({"start": "2026-03-05T10:00:00Z", "end": "2026-03-06T10:00:00Z"}),
    );
    let e = index(&o);
    assert_eq!(normalized(&e, "value-string"), ["sinusrhythmus"]);
    assert!(of(&e, "value-quantity").is_empty());
    let (start, _) = micros("2026-03-05T10:00:00Z");
    let (_, end) = micros("2026-03-06T10:00:00Z");
    assert_eq!(of(&e, "date"), [&IndexValue::Date { start, end }]);
    assert_eq!(of(&e, "code-value-string").len(), 2);
}

#[test]
fn claim_entries() {
    let claim = json!({
        "resourceType": "Claim", "id": "c1", "status": "active", "use": "claim",
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/claim-type", "code": "professional"}]},
        "patient": {"reference": "Patient/p1"},
        "created": "2026-03-06T08:15:00+01:00",
        "provider": {"reference": "Organization/clinic"},
        "insurer": {"reference": "Organization/insurer"},
        "priority": {"coding": [{"code": "normal"}]},
        "insurance": [{"sequence": 1, "focal": true, "coverage": {"reference": "Coverage/cov1"}}],
        "item": [{"sequence": 1, "encounter": [{"reference": "Encounter/e1"}],
                  "udi": [{"reference": "Device/holter-7"}],
                  "net": {"value": 120.00, "currency": "EUR"}}]
    });
    let e = index(&claim);
    assert_eq!(references(&e, "patient"), ["Patient/p1"]);
    assert_eq!(references(&e, "provider"), ["Organization/clinic"]);
    assert_eq!(references(&e, "insurer"), ["Organization/insurer"]);
    assert_eq!(references(&e, "encounter"), ["Encounter/e1"]);
    assert_eq!(references(&e, "item-udi"), ["Device/holter-7"]);
    assert_eq!(
        of(&e, "created"),
        [&{
            let (start, end) = micros("2026-03-06T07:15:00Z");
            IndexValue::Date { start, end }
        }]
    );
    assert_eq!(codes(&e, "use"), [(None, Some("claim"))]);
    assert_eq!(codes(&e, "priority"), [(None, Some("normal"))]);
    // R4 has no Claim parameter on insurance.coverage: it is reachable only by a custom one.
    assert!(e.iter().all(|entry| !matches!(&entry.value,
        IndexValue::Reference { target_type: Some(t), .. } if t == "Coverage")));
}

#[test]
fn coverage_entries() {
    let coverage = json!({
        "resourceType": "Coverage", "id": "cov1", "status": "active",
        "identifier": [{"system": "https://insurer.example/policies", "value": "POL-1"}],
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "EHCPOL"}]},
        "subscriber": {"reference": "Patient/p1"},
        "subscriberId": "SUB-77",
        "beneficiary": {"reference": "Patient/p1"},
        "policyHolder": {"reference": "RelatedPerson/rp1"},
        "dependent": "01",
        "payor": [{"reference": "Organization/insurer"}, {"identifier": {"system": "urn:oid:1.2.40", "value": "OEGK"}}],
        "class": [{"type": {"coding": [{"code": "plan"}]}, "value": "Basis Tarif"}]
    });
    let e = index(&coverage);
    assert_eq!(references(&e, "beneficiary"), ["Patient/p1"]);
    assert_eq!(references(&e, "patient"), ["Patient/p1"]);
    assert_eq!(references(&e, "subscriber"), ["Patient/p1"]);
    assert_eq!(references(&e, "policy-holder"), ["RelatedPerson/rp1"]);
    assert_eq!(references(&e, "payor"), ["Organization/insurer"]);
    assert!(of(&e, "payor").contains(&&IndexValue::ReferenceIdentifier {
        system: Some("urn:oid:1.2.40".into()),
        value: Some("OEGK".into()),
    }));
    assert_eq!(
        codes(&e, "identifier"),
        [(Some("https://insurer.example/policies"), Some("POL-1"))]
    );
    assert_eq!(codes(&e, "class-type"), [(None, Some("plan"))]);
    assert_eq!(normalized(&e, "class-value"), ["basis tarif"]);
    assert_eq!(normalized(&e, "dependent"), ["01"]);
    // `subscriberId` has no search parameter in R4 (a custom one would index it as a token).
    assert!(of(&e, "subscriber-id").is_empty());
}

#[test]
fn consent_entries() {
    let consent = json!({
        "resourceType": "Consent", "id": "cons1", "status": "active",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": "Patient/p1"},
        "dateTime": "2026-03-01",
        "performer": [{"reference": "Patient/p1"}],
        "organization": [{"reference": "Organization/clinic"}],
        "sourceReference": {"reference": "DocumentReference/signed-form"},
        "provision": {
            "type": "permit",
            "period": {"start": "2026-03-01", "end": "2027-03-01"},
            "actor": [{"role": {"coding": [{"code": "IRCP"}]}, "reference": {"reference": "Organization/insurer"}}],
            "action": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentaction", "code": "access"}]}],
            "purpose": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "HPAYMT"}],
            "data": [{"meaning": "related", "reference": {"reference": "Observation/o1"}}]
        }
    });
    let e = index(&consent);
    assert_eq!(references(&e, "patient"), ["Patient/p1"]);
    assert_eq!(references(&e, "consentor"), ["Patient/p1"]);
    assert_eq!(references(&e, "organization"), ["Organization/clinic"]);
    assert_eq!(
        references(&e, "source-reference"),
        ["DocumentReference/signed-form"]
    );
    assert_eq!(references(&e, "actor"), ["Organization/insurer"]);
    assert_eq!(references(&e, "data"), ["Observation/o1"]);
    assert_eq!(codes(&e, "scope").len(), 1);
    assert_eq!(
        codes(&e, "action"),
        [(
            Some("http://terminology.hl7.org/CodeSystem/consentaction"),
            Some("access")
        )]
    );
    assert_eq!(
        codes(&e, "purpose"),
        [(
            Some("http://terminology.hl7.org/CodeSystem/v3-ActReason"),
            Some("HPAYMT")
        )]
    );
    let (start, _) = micros("2026-03-01");
    let (_, end) = micros("2027-03-01");
    assert_eq!(of(&e, "period"), [&IndexValue::Date { start, end }]);
    assert_eq!(of(&e, "date").len(), 1);
}

#[test]
fn device_entries() {
    let device = json!({
        "resourceType": "Device", "id": "holter-7", "status": "active",
        "identifier": [{"system": "https://maker.example/serial", "value": "HX-2026-0007"}],
        "udiCarrier": [{"deviceIdentifier": "09504000059118", "carrierHRF": "(01)09504000059118(21)HX0007"}],
        "manufacturer": "Holter Maker GmbH",
        "modelNumber": "HX-3",
        "deviceName": [{"name": "Holter HX-3", "type": "model-name"}],
        "type": {"coding": [{"system": "http://snomed.info/sct", "code": "86184003", "display": "Electrocardiographic monitor"}]},
        "patient": {"reference": "Patient/p1"},
        "owner": {"reference": "Organization/clinic"},
        "url": "https://maker.example/devices/holter-7"
    });
    let e = index(&device);
    assert_eq!(
        codes(&e, "identifier"),
        [(Some("https://maker.example/serial"), Some("HX-2026-0007"))]
    );
    assert_eq!(references(&e, "patient"), ["Patient/p1"]);
    assert_eq!(references(&e, "organization"), ["Organization/clinic"]);
    assert_eq!(
        normalized(&e, "device-name"),
        ["holter hx-3", "electrocardiographic monitor"]
    );
    assert_eq!(normalized(&e, "manufacturer"), ["holter maker gmbh"]);
    assert_eq!(normalized(&e, "model"), ["hx-3"]);
    assert_eq!(normalized(&e, "udi-di"), ["09504000059118"]);
    assert_eq!(
        codes(&e, "type"),
        [(Some("http://snomed.info/sct"), Some("86184003"))]
    );
    assert_eq!(codes(&e, "status"), [(None, Some("active"))]);
    assert_eq!(
        of(&e, "url"),
        [&IndexValue::Uri {
            value: "https://maker.example/devices/holter-7".into()
        }]
    );
}

#[test]
fn organization_entries() {
    let org = json!({
        "resourceType": "Organization", "id": "clinic", "active": true,
        "identifier": [{"system": "urn:oid:1.2.40.0.34", "value": "GDA-4711"}],
        "type": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/organization-type", "code": "prov"}]}],
        "name": "Kardiologie Ordination Dr. Öz",
        "alias": ["Herzpraxis"],
        "telecom": [{"system": "phone", "value": "+43 1 999"}],
        "address": [{"line": ["Ringstraße 5"], "city": "Graz", "state": "Steiermark", "postalCode": "8010", "country": "AT"}],
        "partOf": {"reference": "Organization/group"},
        "endpoint": [{"reference": "Endpoint/ep1"}]
    });
    let e = index(&org);
    assert_eq!(
        normalized(&e, "name"),
        ["kardiologie ordination dr. oz", "herzpraxis"]
    );
    assert_eq!(
        normalized(&e, "phonetic"),
        ["kardiologie ordination dr. oz"]
    );
    assert_eq!(normalized(&e, "address-state"), ["steiermark"]);
    assert_eq!(codes(&e, "active"), [(None, Some("true"))]);
    assert_eq!(
        codes(&e, "type"),
        [(
            Some("http://terminology.hl7.org/CodeSystem/organization-type"),
            Some("prov")
        )]
    );
    assert_eq!(references(&e, "partof"), ["Organization/group"]);
    assert_eq!(references(&e, "endpoint"), ["Endpoint/ep1"]);
    assert_eq!(
        codes(&e, "identifier"),
        [(Some("urn:oid:1.2.40.0.34"), Some("GDA-4711"))]
    );
}

#[test]
fn bundle_composition_is_a_reference_to_the_first_entry() {
    let bundle = json!({"resourceType": "Bundle", "type": "document", "identifier": {"system": "urn:x", "value": "b1"},
        "entry": [{"resource": {"resourceType": "Composition", "id": "c1"}}]});
    let e = index(&bundle);
    assert_eq!(references(&e, "composition"), ["Composition/c1"]);
    assert_eq!(codes(&e, "type"), [(None, Some("document"))]);
}

#[test]
fn insurance_plan_name_has_an_untyped_expression() {
    let plan =
        json!({"resourceType": "InsurancePlan", "name": "Sonderklasse", "alias": ["SK Plus"]});
    assert_eq!(
        normalized(&index(&plan), "name"),
        ["sonderklasse", "sk plus"]
    );
}

#[test]
fn duplicates_are_indexed_once() {
    let p = json!({"resourceType": "Patient", "name": [{"given": ["Anna"]}, {"given": ["Anna"]}]});
    assert_eq!(normalized(&index(&p), "given"), ["anna"]);
    let members: Vec<Value> = (0..20_000)
        .map(|i| json!({"entity": {"reference": format!("Patient/p{}", i % 5_000)}}))
        .collect();
    let group = json!({"resourceType": "Group", "member": members});
    assert_eq!(references(&index(&group), "member").len(), 5_000);
}

#[test]
fn malformed_resources_produce_what_they_can_and_never_panic() {
    let odd = [
        json!(null),
        json!([]),
        json!({"resourceType": 7}),
        json!({"resourceType": "NoSuchType", "id": "x"}),
        json!({"resourceType": "Patient", "name": "not an array", "birthDate": "yesterday", "telecom": [null, 5, {}],
               "identifier": {"value": ["x"]}, "link": [{"other": "Patient/1"}], "gender": {"code": "male"},
               "meta": {"lastUpdated": 12}}),
        json!({"resourceType": "Observation", "valueQuantity": {"value": "NaN"}, "component": [{"code": null}],
               "effectivePeriod": {"start": "2026-13-01"}, "subject": {"reference": "Patient/" }}),
    ];
    for resource in &odd {
        let _ = index(resource);
    }
    // Unknown types still get the Resource-level parameters.
    assert_eq!(codes(&index(&odd[3]), "_id"), [(None, Some("x"))]);
}

#[test]
fn shape_inference_rows() {
    let rows = [
        (json!("x"), Shape::Primitive),
        (json!(true), Shape::Primitive),
        (json!({"resourceType": "Patient"}), Shape::Resource),
        (json!({"coding": []}), Shape::CodeableConcept),
        (json!({"text": "only"}), Shape::CodeableConcept),
        (
            json!({"system": "http://loinc.org", "code": "1"}),
            Shape::Coding,
        ),
        (json!({"reference": "Patient/1"}), Shape::Reference),
        (
            json!({"identifier": {"value": "1"}, "display": "x"}),
            Shape::Reference,
        ),
        (json!({"family": "X"}), Shape::HumanName),
        (json!({"city": "Wien"}), Shape::Address),
        (json!({"value": 1, "currency": "EUR"}), Shape::Money),
        (json!({"low": {"value": 1}}), Shape::Range),
        (json!({"start": "2020"}), Shape::Period),
        (json!({"event": ["2020"]}), Shape::Timing),
        (json!({"value": 72, "unit": "/min"}), Shape::Quantity),
        (
            json!({"system": "phone", "value": "1"}),
            Shape::ContactPoint,
        ),
        (json!({"value": "1", "rank": 1}), Shape::ContactPoint),
        (
            json!({"system": "urn:oid:1.2", "value": "1"}),
            Shape::Identifier,
        ),
        (json!({"value": "1"}), Shape::Identifier),
        (
            json!({"contentType": "application/pdf", "url": "x"}),
            Shape::Other,
        ),
        (json!(null), Shape::Other),
    ];
    for (value, expected) in rows {
        assert_eq!(Shape::infer(&value), expected, "{value}");
    }
    let typed = Node::owned(json!({"value": 3}), Some("Age"));
    assert_eq!(Shape::of(&typed), Shape::Quantity);
    let sampled = Node::owned(
        json!({"origin": {"value": 0}, "period": 10, "dimensions": 1}),
        Some("SampledData"),
    );
    assert_eq!(Shape::of(&sampled), Shape::Other);
}

#[test]
fn a_string_choice_is_not_read_as_a_date() {
    let condition = json!({"resourceType": "Condition", "onsetString": "2020", "subject": {"reference": "Patient/p1"}});
    let e = index(&condition);
    assert!(of(&e, "onset-date").is_empty());
    assert_eq!(normalized(&e, "onset-info"), ["2020"]);
}

/// Every search parameter of the types this server cares most about evaluates on an empty and
/// on a populated resource without error, and the FHIRPath subset supports all of them.
#[test]
fn every_param_of_the_core_types_is_supported() {
    let reg = r4();
    let (mut total, mut unsupported) = (0, Vec::new());
    for ty in [
        "Patient",
        "Device",
        "Observation",
        "Organization",
        "Coverage",
        "Claim",
        "Consent",
    ] {
        for param in reg.params_for(ty) {
            total += 1;
            let Some(expr) = param.expression_for(ty) else {
                // `_text` and `_content`: full-text parameters, not extracted.
                assert!(!param.is_indexed(), "{ty}.{} has no expression", param.code);
                continue;
            };
            let empty = json!({"resourceType": ty});
            if let Err(e) = expr
                .check_supported()
                .and_then(|()| param_values(param, expr, &empty).map(drop))
            {
                unsupported.push(format!("{ty}.{}: {e}", param.code));
            }
            for component in &param.components {
                if let Err(e) = component.compiled.check_supported() {
                    unsupported.push(format!("{ty}.{} component: {e}", param.code));
                }
            }
        }
    }
    for resource in [patient(), observation()] {
        let ty = resource["resourceType"].as_str().unwrap_or_default();
        for param in reg.params_for(ty) {
            if let Some(expr) = param.expression_for(ty)
                && let Err(e) = param_values(param, expr, &resource)
            {
                unsupported.push(format!("{ty}.{} on a full resource: {e}", param.code));
            }
        }
    }
    println!(
        "core types: {total} parameters, {} unsupported: {unsupported:#?}",
        unsupported.len()
    );
    assert!(unsupported.is_empty(), "{unsupported:#?}");
    assert!(total > 150, "{total}");
}

/// Every node of the fixtures replaced by every kind of odd JSON: extraction must carry on.
#[test]
fn odd_values_anywhere_never_panic() {
    fn pointers(value: &Value, at: String, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => map
                .iter()
                .for_each(|(k, v)| pointers(v, format!("{at}/{k}"), out)),
            Value::Array(items) => items
                .iter()
                .enumerate()
                .for_each(|(i, v)| pointers(v, format!("{at}/{i}"), out)),
            _ => {}
        }
        out.push(at);
    }
    let odd = [
        json!(null),
        json!(true),
        json!(0),
        json!(-1.5),
        json!(""),
        json!("x"),
        json!([]),
        json!({}),
        json!([null]),
        json!([[1]]),
        json!({"reference": 5}),
        json!("9999-99-99T99:99"),
    ];
    for fixture in [patient(), observation()] {
        let mut paths = Vec::new();
        pointers(&fixture, String::new(), &mut paths);
        for path in paths
            .iter()
            .filter(|p| !p.is_empty() && !p.ends_with("/resourceType"))
        {
            for replacement in &odd {
                let mut mutated = fixture.clone();
                if let Some(slot) = mutated.pointer_mut(path) {
                    *slot = replacement.clone();
                }
                let _ = index(&mutated);
            }
        }
    }
}
