//! The subset against hand-made resources and against every expression of the R4 bundle.

use super::*;
use serde_json::json;

fn eval_str<'a>(expr: &str, resource: &'a Value) -> Vec<Node<'a>> {
    Expression::parse(expr)
        .unwrap_or_else(|e| panic!("{expr}: {e}"))
        .evaluate(resource)
        .unwrap_or_else(|e| panic!("{expr}: {e}"))
}

fn values(expr: &str, resource: &Value) -> Vec<Value> {
    eval_str(expr, resource)
        .into_iter()
        .map(|n| n.value.into_owned())
        .collect()
}

fn observation() -> Value {
    json!({
        "resourceType": "Observation",
        "id": "o1",
        "subject": {"reference": "Patient/p1"},
        "performer": [
            {"reference": "http://example.org/fhir/Practitioner/d1"},
            {"reference": "urn:uuid:0b1c4f36-1d5b-4a4e-8c3c-123456789abc"},
            {"reference": "#pat"},
        ],
        "contained": [{"resourceType": "Patient", "id": "pat"}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "valueQuantity": {"value": 72, "unit": "/min"},
        "component": [
            {"code": {"text": "a"}, "valueQuantity": {"value": 1.50}},
            {"code": {"text": "b"}, "valueString": "x"},
        ],
    })
}

#[test]
fn navigates_paths_and_flattens_arrays() {
    let p = json!({"resourceType": "Patient", "name": [{"given": ["A", "B"]}, {"given": ["C"]}]});
    assert_eq!(
        values("Patient.name.given", &p),
        vec![json!("A"), json!("B"), json!("C")]
    );
    assert_eq!(
        values("name.given", &p),
        vec![json!("A"), json!("B"), json!("C")]
    );
    assert!(
        values("Observation.name", &p).is_empty(),
        "other root type selects nothing"
    );
    assert_eq!(values("Resource.resourceType", &p), vec![json!("Patient")]);
}

#[test]
fn choice_elements_carry_their_type() {
    let o = observation();
    let nodes = eval_str("Observation.value", &o);
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0].fhir_type.as_deref(), Some("Quantity"));
    for expr in [
        "Observation.value as Quantity",
        "Observation.value.as(Quantity)",
        "Observation.value.ofType(Quantity)",
        "(Observation.value as Quantity) | (Observation.value as SampledData)",
    ] {
        assert_eq!(
            values(expr, &o),
            vec![json!({"value": 72, "unit": "/min"})],
            "{expr}"
        );
    }
    assert!(values("Observation.value as string", &o).is_empty());
    let strings = eval_str("Observation.component.value.as(String)", &o);
    assert_eq!(strings.len(), 1);
    assert_eq!(strings[0].fhir_type.as_deref(), Some("string"));
}

#[test]
fn as_on_an_untyped_element_keeps_and_types_it() {
    let o = observation();
    let nodes = eval_str("Observation.code as CodeableConcept", &o);
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0].fhir_type.as_deref(), Some("CodeableConcept"));
}

#[test]
fn where_resolve_is_types_references() {
    let o = observation();
    assert_eq!(
        values("Observation.subject.where(resolve() is Patient)", &o),
        vec![json!({"reference": "Patient/p1"})]
    );
    assert_eq!(
        values("Observation.performer.where(resolve() is Practitioner)", &o),
        vec![json!({"reference": "http://example.org/fhir/Practitioner/d1"})]
    );
    // The contained patient resolves; the urn:uuid does not.
    assert_eq!(
        values("Observation.performer.where(resolve() is Patient)", &o),
        vec![json!({"reference": "#pat"})]
    );
    let typed_only = json!({"resourceType": "Account", "subject": [{"type": "Patient", "identifier": {"value": "1"}}]});
    assert_eq!(
        values("Account.subject.where(resolve() is Patient)", &typed_only).len(),
        1
    );
}

#[test]
fn where_with_equality() {
    let p = json!({"resourceType": "Patient", "telecom": [
        {"system": "phone", "value": "1"}, {"system": "email", "value": "a@b"}]});
    assert_eq!(
        values("Patient.telecom.where(system='email').value", &p),
        vec![json!("a@b")]
    );
    assert_eq!(
        values("Patient.telecom.where(system!='email').value", &p),
        vec![json!("1")]
    );
}

#[test]
fn deceased_expression_three_valued() {
    let expr = "Patient.deceased.exists() and Patient.deceased != false";
    let cases = [
        (json!({"resourceType": "Patient"}), false),
        (
            json!({"resourceType": "Patient", "deceasedBoolean": false}),
            false,
        ),
        (
            json!({"resourceType": "Patient", "deceasedBoolean": true}),
            true,
        ),
        (
            json!({"resourceType": "Patient", "deceasedDateTime": "2020-01-01"}),
            true,
        ),
    ];
    for (p, expected) in cases {
        assert_eq!(values(expr, &p), vec![json!(expected)], "{p}");
    }
}

#[test]
fn indexer_first_and_functions() {
    let b = json!({"resourceType": "Bundle", "entry": [
        {"resource": {"resourceType": "Composition", "id": "c"}},
        {"resource": {"resourceType": "Patient", "id": "p"}}]});
    assert_eq!(values("Bundle.entry[0].resource.id", &b), vec![json!("c")]);
    assert_eq!(values("Bundle.entry[5].resource", &b), Vec::<Value>::new());
    assert_eq!(
        values("Bundle.entry.resource.id.first()", &b),
        vec![json!("c")]
    );
    assert_eq!(
        values("Bundle.entry.resource.id.last()", &b),
        vec![json!("p")]
    );
    assert_eq!(values("Bundle.entry.count()", &b), vec![json!(2)]);
    assert_eq!(values("Bundle.entry.empty()", &b), vec![json!(false)]);
    assert_eq!(
        values("Bundle.entry.exists(resource is Patient)", &b),
        vec![json!(true)]
    );
    assert_eq!(
        values("Bundle.entry.where(resource.id = 'p').exists().not()", &b),
        vec![json!(false)]
    );
    assert_eq!(
        values("Bundle.entry.resource.ofType(Patient).id", &b),
        vec![json!("p")]
    );
}

#[test]
fn extension_by_url() {
    let p = json!({"resourceType": "Patient", "extension": [
        {"url": "http://x/a", "valueString": "A"}, {"url": "http://x/b", "valueCode": "B"}]});
    assert_eq!(
        values("Patient.extension('http://x/b').value", &p),
        vec![json!("B")]
    );
    let typed = eval_str("Patient.extension('http://x/b').value", &p);
    assert_eq!(typed[0].fhir_type.as_deref(), Some("code"));
}

#[test]
fn union_removes_duplicates() {
    let p = json!({"resourceType": "Patient", "name": [{"family": "X"}], "contact": [{"name": {"family": "X"}}]});
    assert_eq!(
        values("Patient.name.family | Patient.contact.name.family", &p),
        vec![json!("X")]
    );
}

#[test]
fn large_collections_stay_linear() {
    let members: Vec<Value> = (0..20_000)
        .map(|i| json!({"entity": {"reference": format!("Patient/p{}", i % 10_000)}}))
        .collect();
    let group = json!({"resourceType": "Group", "member": members});
    let started = std::time::Instant::now();
    let union = eval_str("Group.member.entity | Group.member.entity", &group);
    assert_eq!(union.len(), 10_000);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn percent_resource_and_evaluate_at() {
    let m = json!({"resourceType": "MolecularSequence", "referenceSeq": {"chromosome": {"text": "1"}},
        "variant": [{"start": 5}, {"start": 9}]});
    let focus = eval_str("MolecularSequence.variant", &m);
    let component = Expression::parse("%resource.referenceSeq.chromosome").unwrap();
    let start = Expression::parse("start").unwrap();
    for node in &focus {
        assert_eq!(component.evaluate_at(node, &m).unwrap().len(), 1);
        assert_eq!(start.evaluate_at(node, &m).unwrap().len(), 1);
    }
}

#[test]
fn composite_focus_includes_the_resource_itself() {
    let o = observation();
    let focus = eval_str("Observation | Observation.component", &o);
    assert_eq!(focus.len(), 3);
    let code = Expression::parse("value.as(Quantity)").unwrap();
    let n: usize = focus
        .iter()
        .map(|f| code.evaluate_at(f, &o).unwrap().len())
        .sum();
    assert_eq!(n, 2);
}

#[test]
fn syntax_errors_and_unsupported_constructs() {
    for bad in [
        "Patient.",
        "Patient.name.where(",
        "(a",
        "a |",
        "'open",
        "a.as()",
        "a ? b",
        "where(a, b)",
    ] {
        assert!(
            matches!(Expression::parse(bad), Err(FhirPathError::Parse { .. })),
            "{bad}"
        );
    }
    for unsupported in [
        "a.memberOf('x')",
        "a + b",
        "a.b.where(c.matches('x'))",
        "$index",
        "4 'mg'",
    ] {
        let e = Expression::parse(unsupported).unwrap_or_else(|e| panic!("{unsupported}: {e}"));
        assert!(
            matches!(e.check_supported(), Err(FhirPathError::Unsupported(_))),
            "{unsupported}"
        );
    }
    let e = Expression::parse("Patient.name.memberOf('x')").unwrap();
    assert!(matches!(
        e.evaluate(&json!({"resourceType": "Patient"})),
        Err(FhirPathError::Unsupported(_))
    ));
}

#[test]
fn string_literal_escapes() {
    let p = json!({"resourceType": "Patient", "id": "a'b"});
    assert_eq!(values(r"Patient.id = 'a\'b'", &p), vec![json!(true)]);
    assert_eq!(values(r"Patient.`id` = 'a\u0027b'", &p), vec![json!(true)]);
}

/// Every expression of the R4 SearchParameter bundle parses and is supported, and
/// evaluates on an empty resource of each base type without error.
#[test]
fn every_r4_search_parameter_expression_parses_and_evaluates() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fhir-resources/search-parameters.json");
    let bundle: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let entries = bundle["entry"].as_array().unwrap();
    let (mut parsed, mut evaluated, mut failures) = (0, 0, Vec::new());
    for entry in entries {
        let param = &entry["resource"];
        let url = param["url"].as_str().unwrap_or_default();
        let mut sources: Vec<&str> = param["expression"].as_str().into_iter().collect();
        let components = param["component"].as_array().map_or(&[][..], Vec::as_slice);
        sources.extend(components.iter().filter_map(|c| c["expression"].as_str()));
        for source in sources {
            let expr = match Expression::parse(source) {
                Ok(e) => e,
                Err(e) => {
                    failures.push(format!("{url}: {e}"));
                    continue;
                }
            };
            parsed += 1;
            if let Err(e) = expr.check_supported() {
                failures.push(format!("{url}: {e}"));
                continue;
            }
            let bases = param["base"].as_array().map_or(&[][..], Vec::as_slice);
            let all_ok = bases.iter().filter_map(Value::as_str).all(|base| {
                let empty = json!({"resourceType": base});
                match expr.evaluate(&empty) {
                    Ok(_) => true,
                    Err(e) => {
                        failures.push(format!("{url} on {base}: {e}"));
                        false
                    }
                }
            });
            evaluated += usize::from(all_ok);
        }
    }
    println!("R4 search parameter expressions: {parsed} parsed, {evaluated} evaluated");
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(parsed > 1_400, "{parsed}");
}

#[test]
fn never_panics_on_odd_json() {
    let odd = [
        json!(null),
        json!([]),
        json!("x"),
        json!({"resourceType": 5}),
        json!({"resourceType": "Patient", "name": null, "link": [null, 1, "x"]}),
    ];
    let exprs = [
        "Patient.name.given",
        "Patient.link.other.where(resolve() is Patient)",
        "Bundle.entry[0].resource",
        "name.exists() and name != false",
    ];
    for r in &odd {
        for e in exprs {
            let _ = Expression::parse(e).unwrap().evaluate(r);
        }
    }
}

#[test]
fn parser_never_panics_on_truncated_or_garbled_expressions() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fhir-resources/search-parameters.json");
    let bundle: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let resource = json!({"resourceType": "Observation", "valueQuantity": {"value": 1}});
    let expressions = bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["resource"]["expression"].as_str());
    for expr in expressions.take(300) {
        for cut in (0..expr.len()).filter(|&i| expr.is_char_boundary(i)) {
            for garbled in [
                expr[..cut].to_owned(),
                format!("{}é∑'{}", &expr[..cut], &expr[cut..]),
                format!("{}`{}", &expr[..cut], &expr[cut..]),
                format!("{}\\u12{}", &expr[..cut], &expr[cut..]),
            ] {
                if let Ok(e) = Expression::parse(&garbled) {
                    let _ = e.evaluate(&resource);
                }
            }
        }
    }
}
