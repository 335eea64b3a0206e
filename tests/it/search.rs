//! Search over a fixed data set, table-driven: each case is a query and the exact ids it must
//! return. Runs against both backends. (The search issue grows this into the full R4 grammar.)

use crate::common::{Backend, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// The fixed data set; ids are chosen so that expected results read naturally.
fn fixtures() -> Vec<Value> {
    vec![
        json!({"resourceType": "Patient", "id": "anna", "name": [{"family": "Müller", "given": ["Anna", "Maria"]}], "gender": "female",
               "birthDate": "1980-03-05", "identifier": [{"system": "urn:ssn", "value": "1111"},
                   {"system": "urn:klinik:mrn", "value": "12345", "type": {"coding": [{"system": V2_0203, "code": "MR"}]}}], "active": true}),
        json!({"resourceType": "Patient", "id": "bernd", "name": [{"family": "Mueller", "given": ["Bernd"]}], "gender": "male",
               "birthDate": "1975", "identifier": [{"system": "urn:ssn", "value": "2222"},
                   {"system": "urn:other", "value": "1111", "type": {"coding": [{"system": V2_0203, "code": "MR"}, {"system": V2_0203, "code": "PI"}]}}]}),
        json!({"resourceType": "Patient", "id": "chloe", "name": [{"family": "Zoë-Smith", "given": ["Chloé"]}], "gender": "female",
               "birthDate": "1990-12-31"}),
        json!({"resourceType": "Organization", "id": "klinik", "name": "Klinik Wien Nord", "active": true}),
        json!({"resourceType": "Organization", "id": "kasse", "name": "Österreichische Gesundheitskasse", "active": false}),
        json!({"resourceType": "Organization", "id": "comma", "name": "A, B & C (50%_off)"}),
        obs(
            "hr-anna-1",
            "anna",
            "8867-4",
            "72",
            "2026-03-05T10:00:00+01:00",
            "final",
        ),
        obs(
            "hr-anna-2",
            "anna",
            "8867-4",
            "95.5",
            "2026-03-06T23:30:00Z",
            "final",
        ),
        obs(
            "hr-bernd",
            "bernd",
            "8867-4",
            "61",
            "2026-04-01",
            "preliminary",
        ),
        obs("pvc-anna", "anna", "8894-5", "120", "2026-03-05", "final"),
        json!({"resourceType": "Observation", "id": "no-subject", "status": "final", "code": {"text": "Notiz"}}),
        json!({"resourceType": "Device", "id": "holter-1", "status": "active", "patient": {"reference": "Patient/anna"},
               "url": "http://devices.example/holter/1"}),
        report("dr-partial", "partial"),
        report("dr-prelim", "preliminary"),
        report("dr-final", "final"),
        report("dr-corrected", "corrected"),
        condition("cond-active", "active"),
        condition("cond-relapse", "relapse"),
        condition("cond-remission", "remission"),
        // The code `relapse`, but of another system: no hierarchy of condition-clinical reaches it.
        json!({"resourceType": "Condition", "id": "cond-other", "subject": {"reference": "Patient/anna"},
               "clinicalStatus": {"coding": [{"system": "urn:other", "code": "relapse"}]}}),
        json!({"resourceType": "Medication", "id": "med-drops", "form": {"coding": [{"system": DRUG_FORM, "code": "ORDROP"}]}}),
        json!({"resourceType": "Medication", "id": "med-tablet", "form": {"coding": [{"system": DRUG_FORM, "code": "TAB"}]}}),
    ]
}

const V2_0203: &str = "http://terminology.hl7.org/CodeSystem/v2-0203";
const DRUG_FORM: &str = "http://terminology.hl7.org/CodeSystem/v3-orderableDrugForm";

/// A DiagnosticReport with `status` (a `code`: stored without a system).
fn report(id: &str, status: &str) -> Value {
    json!({"resourceType": "DiagnosticReport", "id": id, "status": status,
           "code": {"coding": [{"system": "http://loinc.org", "code": "18754-2"}]}})
}

/// A Condition of anna's whose clinical status is `status` (a CodeableConcept with its system).
fn condition(id: &str, status: &str) -> Value {
    json!({"resourceType": "Condition", "id": id, "subject": {"reference": "Patient/anna"},
           "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": status}]}})
}

fn obs(id: &str, patient: &str, loinc: &str, value: &str, date: &str, status: &str) -> Value {
    let value: Value = serde_json::from_str(value).unwrap();
    json!({
        "resourceType": "Observation", "id": id, "status": status,
        "code": {"coding": [{"system": "http://loinc.org", "code": loinc, "display": if loinc == "8867-4" { "Heart rate" } else { "PVC count" }}]},
        "subject": {"reference": format!("Patient/{patient}")},
        "effectiveDateTime": date,
        "valueQuantity": {"value": value, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"}
    })
}

/// (query, expected ids in `_id` order).
const CASES: &[(&str, &[&str])] = &[
    // _id and OR
    ("Patient?_id=anna", &["anna"]),
    ("Patient?_id=anna,chloe", &["anna", "chloe"]),
    ("Patient?_id:not=anna", &["bernd", "chloe"]),
    // token: code, system|code, |code, system|, :not, :missing
    ("Patient?gender=female", &["anna", "chloe"]),
    ("Patient?gender=female,male", &["anna", "bernd", "chloe"]),
    ("Patient?gender:not=female", &["bernd"]),
    ("Patient?active=true", &["anna"]),
    ("Patient?active:missing=true", &["bernd", "chloe"]),
    (
        "Observation?code=http://loinc.org|8867-4",
        &["hr-anna-1", "hr-anna-2", "hr-bernd"],
    ),
    ("Observation?code=8894-5", &["pvc-anna"]),
    ("Observation?code=http://snomed.info/sct|8867-4", &[]),
    (
        "Observation?code=http://loinc.org|",
        &["hr-anna-1", "hr-anna-2", "hr-bernd", "pvc-anna"],
    ),
    ("Observation?status=preliminary", &["hr-bernd"]),
    (
        "Observation?code:text=heart",
        &["hr-anna-1", "hr-anna-2", "hr-bernd"],
    ),
    ("Observation?code:text=notiz", &["no-subject"]),
    // protected identifiers (blind tokens): code, system|code
    ("Patient?identifier=1111", &["anna", "bernd"]),
    ("Patient?identifier=urn:ssn|1111", &["anna"]),
    ("Patient?identifier=urn:ssn|2222,urn:other|1111", &["bernd"]),
    // protected strings: case- and accent-insensitive starts-with, :exact
    ("Patient?name=mu", &["anna", "bernd"]),
    ("Patient?name=MÜL", &["anna"]),
    ("Patient?family=muller", &["anna"]),
    ("Patient?given=chloe", &["chloe"]),
    ("Patient?name=zoe-s", &["chloe"]),
    ("Patient?family:exact=Müller", &["anna"]),
    ("Patient?family:exact=müller", &[]),
    ("Patient?name=anna&gender=male", &[]),
    ("Patient?name=maria", &["anna"]),
    // protected date: equality at the written precision
    ("Patient?birthdate=1980", &["anna"]),
    ("Patient?birthdate=1980-03", &["anna"]),
    ("Patient?birthdate=1980-03-05", &["anna"]),
    ("Patient?birthdate=1975-06-01", &[]),
    // plain strings: starts-with, :exact, :contains, escaping of , % _
    ("Organization?name=klinik", &["klinik"]),
    ("Organization?name=alte", &[]),
    ("Organization?name=osterr", &["kasse"]),
    ("Organization?name:contains=wien", &["klinik"]),
    ("Organization?name:exact=Klinik Wien Nord", &["klinik"]),
    ("Organization?name=a\\, b", &["comma"]),
    ("Organization?name:contains=50%_", &["comma"]),
    ("Organization?name:contains=%", &["comma"]),
    ("Organization?active=false", &["kasse"]),
    // references: Type/id, id, absolute, :Type, chained targets by id
    (
        "Observation?subject=Patient/anna",
        &["hr-anna-1", "hr-anna-2", "pvc-anna"],
    ),
    ("Observation?subject=bernd", &["hr-bernd"]),
    ("Observation?subject:Patient=bernd", &["hr-bernd"]),
    (
        "Observation?patient=anna&code=8867-4",
        &["hr-anna-1", "hr-anna-2"],
    ),
    ("Observation?subject:missing=true", &["no-subject"]),
    ("Device?patient=Patient/anna", &["holter-1"]),
    // dates with precision and prefixes
    ("Observation?date=2026-03-05", &["hr-anna-1", "pvc-anna"]),
    (
        "Observation?date=2026-03",
        &["hr-anna-1", "hr-anna-2", "pvc-anna"],
    ),
    ("Observation?date=ge2026-03-06", &["hr-anna-2", "hr-bernd"]),
    ("Observation?date=gt2026-03-06", &["hr-bernd"]),
    (
        "Observation?date=lt2026-03-05T09:30:00Z",
        &["hr-anna-1", "pvc-anna"],
    ),
    ("Observation?date=lt2026-03-05T09:00:00Z", &["pvc-anna"]),
    ("Observation?date=le2026-03-05", &["hr-anna-1", "pvc-anna"]),
    ("Observation?date=sa2026-03-31", &["hr-bernd"]),
    ("Observation?date=eb2026-03-05T09:00:00Z", &[]),
    ("Observation?date=ne2026-03", &["hr-bernd"]),
    ("Observation?date=2026-03-05T09:00:00Z", &["hr-anna-1"]),
    (
        "Observation?date=ge2026-03-01&date=lt2026-04-01",
        &["hr-anna-1", "hr-anna-2", "pvc-anna"],
    ),
    // quantities: prefixes, implicit precision, units
    ("Observation?value-quantity=72", &["hr-anna-1"]),
    (
        "Observation?value-quantity=gt90",
        &["hr-anna-2", "pvc-anna"],
    ),
    (
        "Observation?value-quantity=le72",
        &["hr-anna-1", "hr-bernd"],
    ),
    (
        "Observation?value-quantity=95.5|http://unitsofmeasure.org|/min",
        &["hr-anna-2"],
    ),
    ("Observation?value-quantity=96", &["hr-anna-2"]),
    (
        "Observation?value-quantity=72|http://unitsofmeasure.org|mg",
        &[],
    ),
    ("Observation?value-quantity=ap100", &["hr-anna-2"]),
    // UCUM units compare in canonical form: 72 /min is 1.2 /s and 4320 /h; /min is {beats}/min
    (
        "Observation?value-quantity=1.2|http://unitsofmeasure.org|/s",
        &["hr-anna-1"],
    ),
    (
        "Observation?value-quantity=4320|http://unitsofmeasure.org|/h",
        &["hr-anna-1"],
    ),
    (
        "Observation?value-quantity=72|http://unitsofmeasure.org|{beats}/min",
        &["hr-anna-1"],
    ),
    (
        "Observation?value-quantity=gt1.5|http://unitsofmeasure.org|/s",
        &["hr-anna-2", "pvc-anna"],
    ),
    (
        "Observation?value-quantity=72|http://unitsofmeasure.org|/s",
        &[],
    ),
    // :in / :not-in with the spec's value sets (code elements carry no system of their own)
    (
        "Patient?gender:in=http://hl7.org/fhir/ValueSet/administrative-gender",
        &["anna", "bernd", "chloe"],
    ),
    (
        "Patient?gender:not-in=http://hl7.org/fhir/ValueSet/administrative-gender",
        &[],
    ),
    (
        "Observation?status:in=http://hl7.org/fhir/ValueSet/observation-status&code=8894-5",
        &["pvc-anna"],
    ),
    (
        "Organization?active:in=http://hl7.org/fhir/ValueSet/administrative-gender",
        &[],
    ),
    // composites: the two components must hold together in one combination
    (
        "Observation?code-value-quantity=http://loinc.org|8867-4$gt90",
        &["hr-anna-2"],
    ),
    ("Observation?code-value-quantity=8867-4$lt70", &["hr-bernd"]),
    ("Observation?code-value-quantity=8894-5$gt90", &["pvc-anna"]),
    ("Observation?code-value-quantity=8894-5$72", &[]),
    (
        "Observation?code-value-quantity=http://snomed.info/sct|8867-4$gt1",
        &[],
    ),
    (
        "Observation?code-value-quantity=8867-4$72|http://unitsofmeasure.org|/min",
        &["hr-anna-1"],
    ),
    (
        "Observation?code-value-quantity=8867-4$gt90,8894-5$gt90",
        &["hr-anna-2", "pvc-anna"],
    ),
    (
        "Observation?combo-code-value-quantity=8867-4$le72",
        &["hr-anna-1", "hr-bernd"],
    ),
    // :of-type: an identifier's type coding and its value together (blind tokens on Patient)
    (
        "Patient?identifier:of-type=http://terminology.hl7.org/CodeSystem/v2-0203|MR|12345",
        &["anna"],
    ),
    (
        "Patient?identifier:of-type=http://terminology.hl7.org/CodeSystem/v2-0203|MR|1111",
        &["bernd"],
    ),
    (
        "Patient?identifier:of-type=http://terminology.hl7.org/CodeSystem/v2-0203|PI|1111",
        &["bernd"],
    ),
    (
        "Patient?identifier:of-type=http://terminology.hl7.org/CodeSystem/v2-0203|MR|12345,http://terminology.hl7.org/CodeSystem/v2-0203|MR|1111",
        &["anna", "bernd"],
    ),
    (
        "Patient?identifier:of-type=http://terminology.hl7.org/CodeSystem/v2-0203|PI|12345",
        &[],
    ),
    (
        "Patient?identifier:of-type=http://terminology.hl7.org/CodeSystem/v2-0203|MR|2222",
        &[],
    ),
    ("Patient?identifier:of-type=urn:other|MR|1111", &[]),
    (
        "Patient?identifier:of-type=http://terminology.hl7.org/CodeSystem/v2-0203|MR|12345&gender=male",
        &[],
    ),
    // through a chain: the target's blind tokens, keyed by the target type
    (
        "Observation?subject:Patient.identifier:of-type=http://terminology.hl7.org/CodeSystem/v2-0203|MR|12345",
        &["hr-anna-1", "hr-anna-2", "pvc-anna"],
    ),
    (
        "Observation?subject:Patient.identifier:of-type=http://terminology.hl7.org/CodeSystem/v2-0203|MR|1111",
        &["hr-bernd"],
    ),
    // token :below / :above through the spec's code system hierarchies: `code` elements (stored
    // without a system), codings with one, nesting and the v3 `child` property (ORDROP sits
    // under DROP by nesting and under ORALSOL < SOL by property)
    (
        "DiagnosticReport?status:below=http://hl7.org/fhir/diagnostic-report-status|partial",
        &["dr-partial", "dr-prelim"],
    ),
    (
        "DiagnosticReport?status:below=http://hl7.org/fhir/diagnostic-report-status|amended",
        &["dr-corrected"],
    ),
    (
        "DiagnosticReport?status:below=http://hl7.org/fhir/diagnostic-report-status|final",
        &["dr-final"],
    ),
    (
        "DiagnosticReport?status:above=http://hl7.org/fhir/diagnostic-report-status|preliminary",
        &["dr-partial", "dr-prelim"],
    ),
    (
        "DiagnosticReport?status:above=http://hl7.org/fhir/diagnostic-report-status|corrected",
        &["dr-corrected"],
    ),
    (
        "Condition?clinical-status:below=http://terminology.hl7.org/CodeSystem/condition-clinical|active",
        &["cond-active", "cond-relapse"],
    ),
    (
        "Condition?clinical-status:below=http://terminology.hl7.org/CodeSystem/condition-clinical|inactive",
        &["cond-remission"],
    ),
    (
        "Condition?clinical-status:above=http://terminology.hl7.org/CodeSystem/condition-clinical|relapse",
        &["cond-active", "cond-relapse"],
    ),
    (
        "Condition?clinical-status:below=http://terminology.hl7.org/CodeSystem/condition-clinical|relapse,http://terminology.hl7.org/CodeSystem/condition-clinical|inactive",
        &["cond-relapse", "cond-remission"],
    ),
    (
        "Medication?form:below=http://terminology.hl7.org/CodeSystem/v3-orderableDrugForm|SOL",
        &["med-drops"],
    ),
    (
        "Medication?form:below=http://terminology.hl7.org/CodeSystem/v3-orderableDrugForm|DROP",
        &["med-drops"],
    ),
    (
        "Medication?form:below=http://terminology.hl7.org/CodeSystem/v3-orderableDrugForm|ORALSOL",
        &["med-drops"],
    ),
    (
        "Medication?form:below=http://terminology.hl7.org/CodeSystem/v3-orderableDrugForm|ORTAB",
        &[],
    ),
    (
        "Medication?form:above=http://terminology.hl7.org/CodeSystem/v3-orderableDrugForm|ORDROP",
        &["med-drops"],
    ),
    (
        "Medication?form:above=http://terminology.hl7.org/CodeSystem/v3-orderableDrugForm|SOL",
        &[],
    ),
    (
        "Medication?form:below=http://terminology.hl7.org/CodeSystem/v3-orderableDrugForm|TAB",
        &["med-tablet"],
    ),
    (
        "Medication?form:above=http://terminology.hl7.org/CodeSystem/v3-orderableDrugForm|ORTAB",
        &["med-tablet"],
    ),
    (
        "Medication?form:below=http://terminology.hl7.org/CodeSystem/v3-orderableDrugForm|_AdministrableDrugForm",
        &["med-drops"],
    ),
    // in a reverse chain
    (
        "Patient?_has:Condition:subject:clinical-status:below=http://terminology.hl7.org/CodeSystem/condition-clinical|inactive",
        &["anna"],
    ),
    (
        "Patient?_has:Condition:subject:clinical-status:below=http://terminology.hl7.org/CodeSystem/condition-clinical|recurrence",
        &[],
    ),
    // _contained=false is the default; _containedType only matters for contained matches
    ("Patient?gender=male&_contained=false", &["bernd"]),
    (
        "Patient?gender=male&_contained=false&_containedType=contained",
        &["bernd"],
    ),
    // uri
    ("Device?url=http://devices.example/holter/1", &["holter-1"]),
    (
        "Device?url:below=http://devices.example/holter",
        &["holter-1"],
    ),
    ("Device?url:below=HTTP://devices.example/holter", &[]),
    (
        "Device?url:above=http://devices.example/holter/1/more",
        &["holter-1"],
    ),
    // _lastUpdated
    (
        "Patient?_lastUpdated=gt2000-01-01",
        &["anna", "bernd", "chloe"],
    ),
    ("Patient?_lastUpdated=lt2000-01-01", &[]),
    // _sort by parameters of several types, both directions, several keys; no value sorts last
    (
        "Observation?code=8867-4&_sort=date",
        &["hr-anna-1", "hr-anna-2", "hr-bernd"],
    ),
    (
        "Observation?code=8867-4&_sort=-date",
        &["hr-bernd", "hr-anna-2", "hr-anna-1"],
    ),
    (
        "Observation?_sort=date",
        &[
            "pvc-anna",
            "hr-anna-1",
            "hr-anna-2",
            "hr-bernd",
            "no-subject",
        ],
    ),
    (
        "Observation?_sort=-date",
        &[
            "hr-bernd",
            "hr-anna-2",
            "hr-anna-1",
            "pvc-anna",
            "no-subject",
        ],
    ),
    (
        "Observation?code=http://loinc.org|&_sort=-value-quantity",
        &["pvc-anna", "hr-anna-2", "hr-anna-1", "hr-bernd"],
    ),
    (
        "Observation?code=http://loinc.org|&_sort=status,-date",
        &["hr-anna-2", "hr-anna-1", "pvc-anna", "hr-bernd"],
    ),
    ("Organization?_sort=name", &["comma", "klinik", "kasse"]),
    (
        "Patient?_sort=-_lastUpdated&_id=anna,chloe",
        &["chloe", "anna"],
    ),
    (
        "Observation?subject=anna&_sort=-_id",
        &["pvc-anna", "hr-anna-2", "hr-anna-1"],
    ),
];

async fn search_table(backend: Backend) {
    let server = TestServer::start(backend).await;
    for resource in fixtures() {
        let path = format!(
            "{}/{}",
            resource["resourceType"].as_str().unwrap(),
            resource["id"].as_str().unwrap()
        );
        let reply = server.put(&path, &resource).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{path}: {}", reply.text);
    }
    // A superseded version and a deleted resource never match.
    let mut superseded = fixtures()[3].clone();
    superseded["name"] = json!("Alte Klinik");
    server.put("Organization/klinik", &superseded).await;
    server.put("Organization/klinik", &fixtures()[3]).await;
    server
        .create(&json!({"resourceType": "Patient", "id": "x", "name": [{"family": "Müllerschön"}]}))
        .await;
    let (gone, _) = server.create(&json!({"resourceType": "Patient", "name": [{"family": "Mülldeponie"}], "gender": "female"})).await;
    server.delete(&format!("Patient/{gone}")).await;
    let mut failures = Vec::new();
    for (query, expected) in CASES {
        let separator = if query.contains('?') { "&" } else { "?" };
        let reply = server
            .get(&format!("{query}{separator}_sort=_id&_count=100"))
            .await;
        if reply.status != StatusCode::OK {
            failures.push(format!("{query}: status {} {}", reply.status, reply.text));
            continue;
        }
        let mut ids = crate::common::match_ids(&reply.body);
        // The extra "Müllerschön" patient (server-assigned id) matches the name prefix cases.
        ids.retain(|id| id.len() < 20);
        if ids != *expected {
            failures.push(format!("{query}: expected {expected:?}, got {ids:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} search cases failed:\n{}",
        failures.len(),
        CASES.len(),
        failures.join("\n")
    );
}

async fn paging_totals_and_summary(backend: Backend) {
    let server = TestServer::start(backend).await;
    for i in 0..7 {
        server.put(&format!("Organization/org-{i}"), &json!({"resourceType": "Organization", "id": format!("org-{i}"), "name": format!("Org {i}")})).await;
    }
    let first = server.get("Organization?_count=3&_sort=_id").await;
    assert_eq!(first.body["total"], 7);
    assert_eq!(
        crate::common::match_ids(&first.body),
        ["org-0", "org-1", "org-2"]
    );
    let mut seen = crate::common::match_ids(&first.body);
    let mut next = link(&first.body, "next");
    while let Some(url) = next {
        let page = server.get(&url).await;
        seen.extend(crate::common::match_ids(&page.body));
        next = link(&page.body, "next");
    }
    assert_eq!(seen, (0..7).map(|i| format!("org-{i}")).collect::<Vec<_>>());
    let none = server.get("Organization?_total=none").await;
    assert!(none.body.get("total").is_none());
    let count = server.get("Organization?_summary=count").await;
    assert_eq!(count.body["total"], 7);
    assert!(count.body.get("entry").is_none());
    let descending = server.get("Organization?_sort=-_id&_count=2").await;
    assert_eq!(
        crate::common::match_ids(&descending.body),
        ["org-6", "org-5"]
    );
    // GET and POST _search answer alike.
    let form = server
        .raw(
            Method::POST,
            "Organization/_search",
            "application/x-www-form-urlencoded",
            b"name=org&_sort=_id&_count=2".to_vec(),
        )
        .await;
    assert_eq!(
        crate::common::match_ids(&form.body),
        crate::common::match_ids(
            &server
                .get("Organization?name=org&_sort=_id&_count=2")
                .await
                .body
        )
    );
}

/// A search's total is counted once, on the page without a cursor, and its page links carry it
/// to the later pages (sealed, like the rest of the cursor); `_total=accurate` counts on every
/// page. A write between pages therefore shows in an accurate total and not in the carried one.
async fn page_links_carry_the_total_unless_it_must_be_accurate(backend: Backend) {
    let server = TestServer::start(backend).await;
    let create = |i: usize| json!({"resourceType": "Organization", "id": format!("paged-{i}"), "name": "paged"});
    for i in 0..5 {
        server
            .put(&format!("Organization/paged-{i}"), &create(i))
            .await;
    }
    let first = server
        .get("Organization?name=paged&_sort=_id&_count=2")
        .await;
    let accurate = server
        .get("Organization?name=paged&_sort=_id&_count=2&_total=accurate")
        .await;
    assert_eq!(
        (&first.body["total"], &accurate.body["total"]),
        (&json!(5), &json!(5))
    );
    server.put("Organization/paged-5", &create(5)).await;

    let second = server.get(&link(&first.body, "next").expect("next")).await;
    assert_eq!(second.body["total"], 5, "carried: {}", second.text);
    assert_eq!(
        crate::common::match_ids(&second.body),
        ["paged-2", "paged-3"]
    );
    let back = server
        .get(&link(&second.body, "previous").expect("previous"))
        .await;
    assert_eq!(back.body["total"], 5, "carried back: {}", back.text);
    let last = server.get(&link(&second.body, "last").expect("last")).await;
    assert_eq!(
        last.body["total"], 5,
        "carried to the last page: {}",
        last.text
    );
    // The first link has no cursor: a new count.
    let again = server
        .get(&link(&second.body, "first").expect("first"))
        .await;
    assert_eq!(again.body["total"], 6);

    let second_accurate = server
        .get(&link(&accurate.body, "next").expect("next"))
        .await;
    assert_eq!(second_accurate.body["total"], 6, "{}", second_accurate.text);
    let none = server
        .get("Organization?name=paged&_sort=_id&_count=2&_total=none")
        .await;
    let second_none = server.get(&link(&none.body, "next").expect("next")).await;
    assert_eq!(second_none.body.get("total"), None, "{}", second_none.text);
}

/// Page links are keyset cursors: writes between pages neither repeat nor skip the resources that
/// stayed, and previous/last links work from any page, with any sort.
async fn paging_is_stable_under_writes(backend: Backend) {
    let server = TestServer::start(backend).await;
    let org =
        |id: &str| json!({"resourceType": "Organization", "id": id, "name": format!("Org {id}")});
    for i in 0..7 {
        server
            .put(&format!("Organization/org-{i}"), &org(&format!("org-{i}")))
            .await;
    }
    let first = server.get("Organization?_count=3&_sort=_id").await;
    assert_eq!(
        crate::common::match_ids(&first.body),
        ["org-0", "org-1", "org-2"]
    );
    assert!(link(&first.body, "previous").is_none());
    // Between pages: one resource appears before the cursor, one after it is deleted.
    server.put("Organization/org-00", &org("org-00")).await;
    server.delete("Organization/org-4").await;
    let second = server.get(&link(&first.body, "next").expect("next")).await;
    assert_eq!(
        crate::common::match_ids(&second.body),
        ["org-3", "org-5", "org-6"]
    );
    assert!(
        link(&second.body, "next").is_none(),
        "the last page has no next link"
    );
    let back = server
        .get(&link(&second.body, "previous").expect("previous"))
        .await;
    assert_eq!(
        crate::common::match_ids(&back.body),
        ["org-00", "org-1", "org-2"]
    );
    let last = server.get(&link(&first.body, "last").expect("last")).await;
    assert_eq!(
        crate::common::match_ids(&last.body),
        ["org-3", "org-5", "org-6"]
    );
    let again = server
        .get(&link(&second.body, "first").expect("first"))
        .await;
    assert_eq!(
        crate::common::match_ids(&again.body),
        ["org-0", "org-00", "org-1"]
    );

    // A descending sort on a parameter, with ties and a resource without the value.
    for (i, date) in [
        "2026-01-01",
        "2026-03-01",
        "2026-03-01",
        "2026-02-01",
        "2026-03-01",
    ]
    .iter()
    .enumerate()
    {
        server
            .put(
                &format!("Observation/o{i}"),
                &obs(&format!("o{i}"), "p", "8867-4", "70", date, "final"),
            )
            .await;
    }
    server.put("Observation/o9", &json!({"resourceType": "Observation", "id": "o9", "status": "final", "code": {"text": "x"}})).await;
    let expected = ["o1", "o2", "o4", "o3", "o0", "o9"];
    let mut seen = Vec::new();
    let mut page = server.get("Observation?_sort=-date&_count=2").await;
    loop {
        seen.extend(crate::common::match_ids(&page.body));
        match link(&page.body, "next") {
            Some(next) => page = server.get(&next).await,
            None => break,
        }
    }
    assert_eq!(seen, expected);
    let mut backwards = Vec::new();
    loop {
        backwards.splice(0..0, crate::common::match_ids(&page.body));
        match link(&page.body, "previous") {
            Some(previous) => page = server.get(&previous).await,
            None => break,
        }
    }
    assert_eq!(backwards, expected);
    server
        .get("Organization?_cursor=garbage")
        .await
        .assert_outcome(StatusCode::BAD_REQUEST, "invalid", "_cursor");
}

async fn search_errors_and_unknown_parameters(backend: Backend) {
    let server = TestServer::start(backend).await;
    server
        .create(&json!({"resourceType": "Organization", "name": "Klinik"}))
        .await;
    // Unknown parameters are ignored (with a warning entry) by default, refused when strict.
    let lenient = server.get("Organization?nonsense=1&name=kl").await;
    assert_eq!(crate::common::match_ids(&lenient.body).len(), 1);
    let self_link = link_with(&lenient.body, "self").unwrap();
    assert!(!self_link.contains("nonsense"), "{self_link}");
    let outcome = lenient.body["entry"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["search"]["mode"] == "outcome")
        .expect("warning entry");
    assert_eq!(outcome["resource"]["issue"][0]["severity"], "warning");
    server
        .request(
            Method::GET,
            "Organization?nonsense=1",
            None,
            &[("prefer", "handling=strict")],
        )
        .await
        .assert_outcome(StatusCode::BAD_REQUEST, "invalid", "nonsense");
    // Invalid values name the parameter.
    server
        .get("Observation?date=2026-13-45")
        .await
        .assert_outcome(StatusCode::BAD_REQUEST, "invalid", "`date`");
    server
        .get("Observation?value-quantity=abc")
        .await
        .assert_outcome(StatusCode::BAD_REQUEST, "invalid", "`value-quantity`");
    server
        .get("Patient?gender:exact=female")
        .await
        .assert_outcome(StatusCode::BAD_REQUEST, "invalid", ":exact");
    server.get("Patient?_count=-1").await.assert_outcome(
        StatusCode::BAD_REQUEST,
        "invalid",
        "_count",
    );
    server
        .get("Patient?_offset=99999999999999999999")
        .await
        .assert_outcome(StatusCode::BAD_REQUEST, "invalid", "_offset");
    server.get("Observation?code=%00").await.assert_outcome(
        StatusCode::BAD_REQUEST,
        "invalid",
        "control characters",
    );
    server.get("Patient?_id:missing=true").await.assert_outcome(
        StatusCode::BAD_REQUEST,
        "invalid",
        "_id",
    );
    let many = vec!["x"; 600].join(",");
    server
        .get(&format!("Patient?_id={many}"))
        .await
        .assert_outcome(StatusCode::BAD_REQUEST, "invalid", "alternatives");
    // _count=0 answers with no entries and no endless next link.
    let zero = server.get("Organization?_count=0").await;
    assert!(link(&zero.body, "next").is_none());
    // Semantics a blind index cannot answer are refused, not answered wrongly.
    server.get("Patient?name:contains=ll").await.assert_outcome(
        StatusCode::BAD_REQUEST,
        "invalid",
        "keyed tokens",
    );
    server.get("Patient?birthdate=ge1980").await.assert_outcome(
        StatusCode::BAD_REQUEST,
        "invalid",
        "equality",
    );
    // A chain to a parameter no target type has: a warning by default, a 400 under strict.
    server
        .request(
            Method::GET,
            "Observation?subject:Patient.nonexistent=x",
            None,
            &[("prefer", "handling=strict")],
        )
        .await
        .assert_outcome(StatusCode::BAD_REQUEST, "invalid", "nonexistent");
    server
        .get("Observation?status.name=x")
        .await
        .assert_outcome(
            StatusCode::BAD_REQUEST,
            "invalid",
            "not a reference parameter",
        );
    server
        .get("Observation?subject:Organization.name=x")
        .await
        .assert_outcome(StatusCode::BAD_REQUEST, "invalid", "cannot point to");
    server
        .get("Patient?_has:Observation:subject=x")
        .await
        .assert_outcome(StatusCode::BAD_REQUEST, "invalid", "_has:[type]");
    server.get("Patient?link:Patient.link:Patient.link:Patient.link:Patient.link:Patient.link:Patient.name=x")
        .await
        .assert_outcome(StatusCode::BAD_REQUEST, "invalid", "levels deep");
    server
        .get("Organization/x/Observation?code=1")
        .await
        .assert_outcome(
            StatusCode::BAD_REQUEST,
            "invalid",
            "Patient compartment only",
        );
    server
        .get("Patient/x/Organization?name=a")
        .await
        .assert_outcome(
            StatusCode::BAD_REQUEST,
            "invalid",
            "not in the Patient compartment",
        );
    server.get("Patient/x/Nothing?name=a").await.assert_outcome(
        StatusCode::NOT_FOUND,
        "not-found",
        "Nothing",
    );
    server
        .get("Observation?code-value-quantity=8867-4")
        .await
        .assert_outcome(StatusCode::BAD_REQUEST, "invalid", "composite value");
    server
        .get("Observation?code:in=http://example.org/no-such-value-set")
        .await
        .assert_outcome(StatusCode::BAD_REQUEST, "invalid", "enumerate");
    server
        .get("Patient?identifier:in=http://hl7.org/fhir/ValueSet/administrative-gender")
        .await
        .assert_outcome(StatusCode::BAD_REQUEST, "invalid", "keyed tokens");
    server.get("Patient?_sort=birthdate").await.assert_outcome(
        StatusCode::BAD_REQUEST,
        "invalid",
        "protected",
    );
    server.get("Patient?_sort=nonsense").await.assert_outcome(
        StatusCode::BAD_REQUEST,
        "invalid",
        "nonsense",
    );
    server
        .get("Observation?_include=Observation:status")
        .await
        .assert_outcome(
            StatusCode::BAD_REQUEST,
            "invalid",
            "not a reference parameter",
        );
    server
        .get("Observation?_include=Nothing:subject")
        .await
        .assert_outcome(StatusCode::BAD_REQUEST, "invalid", "unknown resource type");
    server
        .get("Observation?_include:deep=Observation:subject")
        .await
        .assert_outcome(StatusCode::BAD_REQUEST, "invalid", ":iterate");
    search_modifier_errors(&server).await;
}

/// `:of-type`, token `:below`/`:above` and `_contained` refuse what they cannot answer, each
/// with a 400 that names the parameter and the reason, never degrading to another search.
async fn search_modifier_errors(server: &TestServer) {
    // (query, what the diagnostics say)
    let invalid = [
        (
            "Observation?code:of-type=urn:x|MR|1",
            "Identifiers, and code of Observation",
        ),
        (
            "Patient?identifier:of-type=http://terminology.hl7.org/CodeSystem/v2-0203|MR",
            "all three",
        ),
        ("Patient?identifier:of-type=|MR|1", "all three"),
        ("Patient?identifier:of-type=urn:x||1", "all three"),
        (
            "Observation?code:below=http://loinc.org|8867-4",
            "`code`: subsumption is not available for code system http://loinc.org",
        ),
        (
            "Observation?code:above=http://snomed.info/sct|22298006",
            "`code`: subsumption is not available for code system http://snomed.info/sct",
        ),
        ("Observation?status:below=final", "`status`: a :below"),
        ("Observation?status:below=a|b|c", "system|code"),
        ("Observation?status:below=|final", "system|code"),
        (
            "Observation?status:below=http://hl7.org/fhir/observation-status|nonsense",
            "`status`: code system http://hl7.org/fhir/observation-status does not define this code",
        ),
        (
            "Condition?clinical-status:above=http://terminology.hl7.org/CodeSystem/condition-clinical|Active",
            "does not define this code",
        ),
        ("Patient?identifier:below=urn:ssn|1111", "keyed tokens"),
        ("Patient?identifier:not=1111", "keyed tokens"),
        ("Patient?birthdate:above=1980", "`:above` is not supported"),
        ("Patient?_contained=yes", "false, true or both"),
        ("Patient?_containedType=both", "container or contained"),
    ];
    // Asking for contained resources is a fair question this server cannot answer.
    let not_supported = [
        ("Patient?_contained=true", "_contained=true"),
        (
            "Patient?_contained=both",
            "contained resources are not indexed",
        ),
    ];
    // Refused whatever the handling: ignoring them under lenient handling would answer another
    // question than the one asked.
    let handlings: [&[(&str, &str)]; 3] = [
        &[],
        &[("prefer", "handling=lenient")],
        &[("prefer", "handling=strict")],
    ];
    for (refused, code) in [(&invalid[..], "invalid"), (&not_supported, "not-supported")] {
        for (query, text) in refused {
            for headers in handlings {
                let reply = server.request(Method::GET, query, None, headers).await;
                reply.assert_outcome(StatusCode::BAD_REQUEST, code, text);
            }
        }
    }
    // The codes of all the values count together against the limit on one query (v3-Race
    // 1002-5 has 828 codes below it).
    let races = ["http://terminology.hl7.org/CodeSystem/v3-Race|1002-5"; 7].join(",");
    server
        .get(&format!("Observation?code:below={races}"))
        .await
        .assert_outcome(StatusCode::BAD_REQUEST, "invalid", "more than 5000 codes");
    // A blind-indexed :of-type value is never echoed back.
    let reply = server
        .get("Patient?identifier:of-type=http://terminology.hl7.org/CodeSystem/v2-0203|MR|secret-9876|x")
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text);
    assert!(!reply.text.contains("secret-9876"), "{}", reply.text);
}

fn link(bundle: &Value, relation: &str) -> Option<String> {
    link_with(bundle, relation)
}

fn link_with(bundle: &Value, relation: &str) -> Option<String> {
    bundle["link"]
        .as_array()?
        .iter()
        .find(|l| l["relation"] == relation)
        .and_then(|l| l["url"].as_str())
        .map(str::to_string)
}

/// Every write replaces the resource's index rows: after an update only the new values match,
/// after a delete nothing does, and a resurrected resource matches again. Covers every index
/// table (token, reference, date, number with a non-integral value, string, uri, blind, and the
/// blind `:of-type` tokens).
async fn writes_replace_index_rows(backend: Backend) {
    let server = TestServer::start(backend).await;
    let first = obs("o", "anna", "8867-4", "72.25", "2026-03-05", "final");
    let second = obs("o", "bernd", "8894-5", "0.1", "2027-01-01", "preliminary");
    let patient = |family: &str, ssn: &str| {
        json!({"resourceType": "Patient", "id": "p", "name": [{"family": family}],
               "identifier": [{"system": "urn:ssn", "value": ssn, "type": {"coding": [{"system": V2_0203, "code": "SS"}]}}]})
    };
    let device = |url: &str| json!({"resourceType": "Device", "id": "d", "url": url});
    let organization =
        |name: &str| json!({"resourceType": "Organization", "id": "g", "name": name});
    let old_queries = [
        "Observation?code=http://loinc.org|8867-4",
        "Observation?subject=Patient/anna",
        "Observation?date=2026-03-05",
        "Observation?value-quantity=72.25",
        "Observation?status=final",
        "Observation?code:text=heart",
        "Patient?family=huber",
        "Patient?identifier=urn:ssn|1111",
        "Patient?identifier:of-type=http://terminology.hl7.org/CodeSystem/v2-0203|SS|1111",
        "Device?url=http://a.example/1",
        "Organization?name=alpha",
    ];
    let new_queries = [
        "Observation?code=http://loinc.org|8894-5",
        "Observation?subject=Patient/bernd",
        "Observation?date=2027-01-01",
        "Observation?value-quantity=0.1",
        "Observation?status=preliminary",
        "Observation?code:text=pvc",
        "Patient?family=gruber",
        "Patient?identifier=urn:ssn|2222",
        "Patient?identifier:of-type=http://terminology.hl7.org/CodeSystem/v2-0203|SS|2222",
        "Device?url=http://b.example/2",
        "Organization?name=beta",
    ];
    let write_all = |obs: Value, family: &str, ssn: &str, url: &str, name: &str| {
        let writes = [
            ("Observation/o", obs),
            ("Patient/p", patient(family, ssn)),
            ("Device/d", device(url)),
            ("Organization/g", organization(name)),
        ];
        let server = &server;
        async move {
            for (path, body) in writes {
                let reply = server.put(path, &body).await;
                assert!(reply.status.is_success(), "{path}: {}", reply.text);
            }
        }
    };
    let matches = |queries: [&'static str; 11]| {
        let server = &server;
        async move {
            let mut found = Vec::new();
            for query in queries {
                found.push((query, !server.search_ids(query).await.is_empty()));
            }
            found
        }
    };
    let all = |found: Vec<(&str, bool)>, expected: bool| {
        let wrong: Vec<_> = found
            .into_iter()
            .filter(|(_, hit)| *hit != expected)
            .map(|(q, _)| q)
            .collect();
        assert!(
            wrong.is_empty(),
            "expected {} for {wrong:?}",
            if expected { "a match" } else { "no match" }
        );
    };

    write_all(
        first.clone(),
        "Huber",
        "1111",
        "http://a.example/1",
        "Alpha",
    )
    .await;
    all(matches(old_queries).await, true);
    write_all(
        second.clone(),
        "Gruber",
        "2222",
        "http://b.example/2",
        "Beta",
    )
    .await;
    all(matches(old_queries).await, false);
    all(matches(new_queries).await, true);
    // A patch goes through the same write path.
    let patched = server
        .raw(
            Method::PATCH,
            "Observation/o",
            "application/json-patch+json",
            br#"[{"op": "replace", "path": "/status", "value": "amended"}]"#.to_vec(),
        )
        .await;
    assert_eq!(patched.status, StatusCode::OK, "{}", patched.text);
    assert!(
        server
            .search_ids("Observation?status=preliminary")
            .await
            .is_empty()
    );
    assert_eq!(server.search_ids("Observation?status=amended").await, ["o"]);
    for path in ["Observation/o", "Patient/p", "Device/d", "Organization/g"] {
        server.delete(path).await;
    }
    all(matches(new_queries).await, false);
    write_all(first, "Huber", "1111", "http://a.example/1", "Alpha").await;
    all(matches(old_queries).await, true);
    all(matches(new_queries).await, false);
}

/// `_summary=true|text|data` and `_elements` subset the matches (tagged SUBSETTED), not the includes.
async fn summary_and_elements(backend: Backend) {
    let server = TestServer::start(backend).await;
    server
        .put(
            "Patient/p1",
            &json!({"resourceType": "Patient", "id": "p1", "name": [{"family": "Huber"}]}),
        )
        .await;
    let mut observation = obs("o1", "p1", "8867-4", "72", "2026-03-05", "final");
    observation["text"] = json!({"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">72 /min</div>"});
    observation["note"] = json!([{"text": "after exercise"}]);
    server.put("Observation/o1", &observation).await;
    let first = |query: &str| {
        let server = &server;
        let query = query.to_string();
        async move {
            let reply = server.get(&query).await;
            assert_eq!(reply.status, StatusCode::OK, "{query}: {}", reply.text);
            let entries = reply.body["entry"].as_array().cloned().unwrap_or_default();
            entries
                .into_iter()
                .map(|e| e["resource"].clone())
                .collect::<Vec<Value>>()
        }
    };
    let keys = |resource: &Value| -> Vec<String> {
        let mut keys: Vec<String> = resource.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        keys
    };
    let subsetted = |resource: &Value| {
        resource["meta"]["tag"]
            .as_array()
            .is_some_and(|tags| tags.iter().any(|t| t["code"] == "SUBSETTED"))
    };

    let summary = &first("Observation?_id=o1&_summary=true").await[0];
    assert_eq!(
        keys(summary),
        [
            "code",
            "effectiveDateTime",
            "id",
            "meta",
            "resourceType",
            "status",
            "subject",
            "valueQuantity"
        ]
    );
    assert!(subsetted(summary));
    let text = &first("Observation?_id=o1&_summary=text").await[0];
    assert_eq!(
        keys(text),
        ["code", "id", "meta", "resourceType", "status", "text"]
    );
    let data = &first("Observation?_id=o1&_summary=data").await[0];
    assert!(data.get("text").is_none() && data.get("note").is_some() && subsetted(data));
    let elements = &first("Observation?_id=o1&_elements=note,valueQuantity").await[0];
    assert_eq!(
        keys(elements),
        [
            "code",
            "id",
            "meta",
            "note",
            "resourceType",
            "status",
            "valueQuantity"
        ]
    );
    let with_include =
        first("Observation?_id=o1&_elements=status&_include=Observation:subject").await;
    assert_eq!(
        with_include[1]["name"][0]["family"], "Huber",
        "included resources are not subsetted"
    );
    assert!(!subsetted(&with_include[1]));
    let full = &first("Observation?_id=o1").await[0];
    assert!(full.get("note").is_some() && !subsetted(full));
    server
        .get("Observation?_summary=maybe")
        .await
        .assert_outcome(StatusCode::BAD_REQUEST, "invalid", "_summary");
    server
        .get("Observation?_elements=code.coding")
        .await
        .assert_outcome(StatusCode::BAD_REQUEST, "invalid", "_elements");
}

/// Run every (query, expected ids) case, sorted by `_id` unless the query sorts, and fail once
/// with the list of cases that went wrong.
async fn check_table(server: &TestServer, label: &str, cases: &[(&str, &[&str])]) {
    let mut failures = Vec::new();
    for (query, expected) in cases {
        let suffix = if query.contains("_sort=") {
            "&_count=100"
        } else {
            "&_sort=_id&_count=100"
        };
        let reply = server.get(&format!("{query}{suffix}")).await;
        if reply.status != StatusCode::OK {
            failures.push(format!("{query}: status {} {}", reply.status, reply.text));
            continue;
        }
        let ids = crate::common::match_ids(&reply.body);
        if ids != *expected {
            failures.push(format!("{query}: expected {expected:?}, got {ids:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} {label} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// The edge-case data set: dates in every precision and time zone, periods, quantities in
/// several precisions and units, repeated elements, missing values, references in every form.
fn edge_fixtures() -> Vec<Value> {
    let effective = |id: &str, field: &str, value: Value| {
        let mut o = json!({"resourceType": "Observation", "id": id, "status": "final",
                           "code": {"coding": [{"system": "http://loinc.org", "code": "8310-5"}]}});
        o[field] = value;
        o
    };
    let valued = |id: &str, quantity: Value| {
        json!({"resourceType": "Observation", "id": id, "status": "amended",
               "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]}, "valueQuantity": quantity})
    };
    let ucum = |value: Value, code: &str| json!({"value": value, "unit": code, "system": "http://unitsofmeasure.org", "code": code});
    vec![
        effective("e-dt-z", "effectiveDateTime", json!("2026-06-15T23:30:00Z")),
        effective(
            "e-dt-plus",
            "effectiveDateTime",
            json!("2026-06-16T01:30:00+02:00"),
        ),
        effective(
            "e-dt-minus",
            "effectiveDateTime",
            json!("2026-06-15T20:00:00-05:00"),
        ),
        effective("e-date", "effectiveDateTime", json!("2026-06-15")),
        effective("e-month", "effectiveDateTime", json!("2026-06")),
        effective("e-year", "effectiveDateTime", json!("2026")),
        effective(
            "e-period",
            "effectivePeriod",
            json!({"start": "2026-06-10", "end": "2026-06-20"}),
        ),
        effective(
            "e-period-open",
            "effectivePeriod",
            json!({"start": "2026-07-01"}),
        ),
        effective(
            "e-instant",
            "effectiveInstant",
            json!("2026-06-15T12:00:00.123Z"),
        ),
        json!({"resourceType": "Observation", "id": "e-none", "status": "final", "code": {"coding": [{"system": "http://loinc.org", "code": "8310-5"}]}}),
        valued("v-int", ucum(serde_json::from_str("100").unwrap(), "mg")),
        valued("v-dec", ucum(serde_json::from_str("100.0").unwrap(), "mg")),
        valued("v-sci", ucum(serde_json::from_str("1.0e2").unwrap(), "mg")),
        valued(
            "v-lt",
            json!({"value": 5, "comparator": "<", "unit": "mg", "system": "http://unitsofmeasure.org", "code": "mg"}),
        ),
        valued("v-g", ucum(serde_json::from_str("0.25").unwrap(), "g")),
        valued("v-mg", ucum(serde_json::from_str("250").unwrap(), "mg")),
        valued("v-local", json!({"value": 250, "unit": "mg", "code": "mg"})),
        json!({"resourceType": "Observation", "id": "multi", "status": "preliminary",
               "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}]},
                            {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "exam"}]}],
               "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}, {"system": "http://snomed.info/sct", "code": "364075005"}],
                        "text": "Pulse rate at rest"},
               "subject": {"reference": "http://127.0.0.1/not-our-base/Patient/p-edge"},
               "performer": [{"reference": "Practitioner/dr-1/_history/2"}, {"reference": "Organization/org-edge"}],
               "derivedFrom": [{"reference": "Observation/e-date"}]}),
        json!({"resourceType": "Observation", "id": "ref-forms", "status": "final", "code": {"text": "refs"},
               "subject": {"reference": "Patient/p-edge"},
               "hasMember": [{"reference": "Observation/multi"}],
               "focus": [{"identifier": {"system": "urn:focus", "value": "F-1"}}]}),
        json!({"resourceType": "Organization", "id": "org-edge", "name": "Zürich-Nord Kardiologie",
               "alias": ["Herzzentrum", "O'Brien Praxis"], "active": false,
               "identifier": [{"system": "urn:org", "value": "ORG-1"}], "type": [{"text": "Klinik"}]}),
        json!({"resourceType": "Organization", "id": "org-plain", "name": "Zuerich Labor"}),
    ]
}

/// (query, expected match ids in order: `_id` unless the query sorts).
const EDGE_CASES: &[(&str, &[&str])] = &[
    // date equality at every precision; time zones compare as instants
    (
        "Observation?date=2026-06-15",
        &["e-date", "e-dt-plus", "e-dt-z", "e-instant"],
    ),
    ("Observation?date=2026-06-16", &["e-dt-minus"]),
    (
        "Observation?date=2026-06",
        &[
            "e-date",
            "e-dt-minus",
            "e-dt-plus",
            "e-dt-z",
            "e-instant",
            "e-month",
            "e-period",
        ],
    ),
    (
        "Observation?date=2026",
        &[
            "e-date",
            "e-dt-minus",
            "e-dt-plus",
            "e-dt-z",
            "e-instant",
            "e-month",
            "e-period",
            "e-year",
        ],
    ),
    ("Observation?date=2025", &[]),
    (
        "Observation?date=2026-06-15T23:30:00Z",
        &["e-dt-plus", "e-dt-z"],
    ),
    (
        "Observation?date=2026-06-16T01:30:00%2B02:00",
        &["e-dt-plus", "e-dt-z"],
    ),
    (
        "Observation?date=2026-06-15T20:00:00-05:00",
        &["e-dt-minus"],
    ),
    ("Observation?date=2026-06-16T01:00:00Z", &["e-dt-minus"]),
    ("Observation?date=2026-06-15T12:00:00Z", &["e-instant"]),
    (
        "Observation?date=2026-06-15T23:30Z",
        &["e-dt-plus", "e-dt-z"],
    ),
    // date prefixes against ranges and periods (open periods run on forever)
    (
        "Observation?date=ge2026-06-16",
        &[
            "e-dt-minus",
            "e-month",
            "e-period",
            "e-period-open",
            "e-year",
        ],
    ),
    (
        "Observation?date=gt2026-06-30",
        &["e-period-open", "e-year"],
    ),
    (
        "Observation?date=lt2026-06-15",
        &["e-month", "e-period", "e-year"],
    ),
    (
        "Observation?date=le2026-06-15",
        &[
            "e-date",
            "e-dt-plus",
            "e-dt-z",
            "e-instant",
            "e-month",
            "e-period",
            "e-year",
        ],
    ),
    ("Observation?date=sa2026-06-30", &["e-period-open"]),
    ("Observation?date=eb2026-06-12", &[]),
    (
        "Observation?date=eb2026-06-25",
        &[
            "e-date",
            "e-dt-minus",
            "e-dt-plus",
            "e-dt-z",
            "e-instant",
            "e-period",
        ],
    ),
    (
        "Observation?date=ne2026-06-15&code=8310-5",
        &[
            "e-dt-minus",
            "e-month",
            "e-period",
            "e-period-open",
            "e-year",
        ],
    ),
    (
        "Observation?date=ge2026-06-12&date=le2026-06-12",
        &["e-month", "e-period", "e-year"],
    ),
    ("Observation?date=2026-06-11,2026-06-16", &["e-dt-minus"]),
    // missing values
    ("Observation?date:missing=true&code=8310-5", &["e-none"]),
    (
        "Observation?date:missing=false&code=8310-5",
        &[
            "e-date",
            "e-dt-minus",
            "e-dt-plus",
            "e-dt-z",
            "e-instant",
            "e-month",
            "e-period",
            "e-period-open",
            "e-year",
        ],
    ),
    (
        "Observation?value-quantity:missing=false",
        &["v-dec", "v-g", "v-int", "v-local", "v-lt", "v-mg", "v-sci"],
    ),
    ("Observation?subject:missing=false", &["multi", "ref-forms"]),
    ("Observation?category:missing=false", &["multi"]),
    ("Organization?identifier:missing=true", &["org-plain"]),
    ("Organization?identifier:missing=false", &["org-edge"]),
    // sorting by date across time zones and precisions; no date sorts last either way
    (
        "Observation?code=8310-5&_sort=date",
        &[
            "e-year",
            "e-month",
            "e-period",
            "e-date",
            "e-instant",
            "e-dt-plus",
            "e-dt-z",
            "e-dt-minus",
            "e-period-open",
            "e-none",
        ],
    ),
    (
        "Observation?code=8310-5&_sort=-date",
        &[
            "e-period-open",
            "e-dt-minus",
            "e-dt-plus",
            "e-dt-z",
            "e-instant",
            "e-date",
            "e-period",
            "e-month",
            "e-year",
            "e-none",
        ],
    ),
    // quantity precision, comparators, units
    (
        "Observation?value-quantity=100",
        &["v-dec", "v-int", "v-sci"],
    ),
    (
        "Observation?value-quantity=100.0",
        &["v-dec", "v-int", "v-sci"],
    ),
    (
        "Observation?value-quantity=1e2",
        &["v-dec", "v-int", "v-sci"],
    ),
    ("Observation?value-quantity=101", &[]),
    ("Observation?value-quantity=lt10", &["v-g", "v-lt"]),
    ("Observation?value-quantity=gt200", &["v-local", "v-mg"]),
    ("Observation?value-quantity=ge250", &["v-local", "v-mg"]),
    ("Observation?value-quantity=le0.25", &["v-g", "v-lt"]),
    (
        "Observation?value-quantity=ne100",
        &["v-g", "v-local", "v-lt", "v-mg"],
    ),
    (
        "Observation?value-quantity=0.25|http://unitsofmeasure.org|g",
        &["v-g", "v-mg"],
    ),
    (
        "Observation?value-quantity=250|http://unitsofmeasure.org|mg",
        &["v-g", "v-mg"],
    ),
    (
        "Observation?value-quantity=250000|http://unitsofmeasure.org|ug",
        &["v-g", "v-mg"],
    ),
    ("Observation?value-quantity=250||mg", &["v-local", "v-mg"]),
    (
        "Observation?value-quantity=0.1|http://unitsofmeasure.org|g",
        &["v-dec", "v-int", "v-sci"],
    ),
    (
        "Observation?value-quantity=gt0.2|http://unitsofmeasure.org|g",
        &["v-g", "v-mg"],
    ),
    (
        "Observation?value-quantity=250|http://unitsofmeasure.org|mL",
        &[],
    ),
    (
        "Observation?value-quantity=lt1|http://unitsofmeasure.org|g",
        &["v-dec", "v-g", "v-int", "v-lt", "v-mg", "v-sci"],
    ),
    (
        "Observation?code=2345-7&_sort=value-quantity",
        &["v-lt", "v-g", "v-dec", "v-int", "v-sci", "v-local", "v-mg"],
    ),
    // repeated elements: any repetition matches; AND needs each on some repetition
    ("Observation?code=364075005", &["multi"]),
    (
        "Observation?code=http://snomed.info/sct|364075005",
        &["multi"],
    ),
    ("Observation?code=http://loinc.org|364075005", &[]),
    ("Observation?code=8867-4&code=364075005", &["multi"]),
    ("Observation?category=exam", &["multi"]),
    ("Observation?category=exam,laboratory", &["multi"]),
    ("Observation?category=vital-signs&category=exam", &["multi"]),
    ("Observation?category=vital-signs&category=laboratory", &[]),
    ("Observation?code:text=pulse rate", &["multi"]),
    ("Observation?code:text=rest pulse", &["multi"]),
    ("Observation?code:text=pulse heart", &[]),
    ("Observation?code:not=8310-5&status=final", &["ref-forms"]),
    (
        "Observation?status=final,preliminary&code=http://loinc.org|",
        &[
            "e-date",
            "e-dt-minus",
            "e-dt-plus",
            "e-dt-z",
            "e-instant",
            "e-month",
            "e-none",
            "e-period",
            "e-period-open",
            "e-year",
            "multi",
        ],
    ),
    (
        "Observation?status:not=final&code=http://loinc.org|",
        &[
            "multi", "v-dec", "v-g", "v-int", "v-local", "v-lt", "v-mg", "v-sci",
        ],
    ),
    // references: relative, versioned, foreign absolute, bare ids, :identifier
    (
        "Observation?subject=Patient/p-edge",
        &["multi", "ref-forms"],
    ),
    ("Observation?subject=p-edge", &["multi", "ref-forms"]),
    (
        "Observation?subject=http://127.0.0.1/not-our-base/Patient/p-edge",
        &["multi"],
    ),
    ("Observation?performer=Practitioner/dr-1", &["multi"]),
    (
        "Observation?performer=Practitioner/dr-1/_history/2",
        &["multi"],
    ),
    ("Observation?performer=Practitioner/dr-1/_history/3", &[]),
    ("Observation?performer:Organization=org-edge", &["multi"]),
    ("Observation?performer:Practitioner=org-edge", &[]),
    ("Observation?derived-from=Observation/e-date", &["multi"]),
    ("Observation?has-member=multi", &["ref-forms"]),
    ("Observation?focus:identifier=urn:focus|F-1", &["ref-forms"]),
    ("Observation?focus:identifier=urn:focus|F-2", &[]),
    // chains through the edge data, and _has back
    ("Observation?has-member.category=exam", &["ref-forms"]),
    ("Observation?performer:Organization.name=zurich", &["multi"]),
    (
        "Observation?has-member.performer:Organization.active=false",
        &["ref-forms"],
    ),
    (
        "Organization?_has:Observation:performer:status=preliminary",
        &["org-edge"],
    ),
    (
        "Organization?_has:Observation:performer:_has:Observation:has-member:status=final",
        &["org-edge"],
    ),
    // strings: accents, hyphens, apostrophes, repetitions (alias), exact and contains
    ("Organization?name=zurich", &["org-edge"]),
    ("Organization?name=zürich-n", &["org-edge"]),
    ("Organization?name=ZUERICH", &["org-plain"]),
    ("Organization?name=nord", &[]),
    ("Organization?name:contains=nord", &["org-edge"]),
    (
        "Organization?name:contains=RICH",
        &["org-edge", "org-plain"],
    ),
    (
        "Organization?name:exact=Zürich-Nord Kardiologie",
        &["org-edge"],
    ),
    ("Organization?name:exact=zürich-nord kardiologie", &[]),
    ("Organization?name=herz", &["org-edge"]),
    ("Organization?name=o'brien", &["org-edge"]),
    ("Organization?name=klinik", &[]),
    ("Organization?identifier=urn:org|ORG-1", &["org-edge"]),
    ("Organization?identifier=ORG-1", &["org-edge"]),
    ("Organization?identifier=urn:other|ORG-1", &[]),
    ("Organization?active=false", &["org-edge"]),
    ("Organization?active:missing=true", &["org-plain"]),
    ("Organization?type:text=klinik", &["org-edge"]),
];

async fn edge_cases(backend: Backend) {
    let server = TestServer::start(backend).await;
    for resource in edge_fixtures() {
        let path = format!(
            "{}/{}",
            resource["resourceType"].as_str().unwrap(),
            resource["id"].as_str().unwrap()
        );
        let reply = server.put(&path, &resource).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{path}: {}", reply.text);
    }
    check_table(&server, "edge", EDGE_CASES).await;
}

/// Insurer and consent data, meta elements, and resources that were superseded or deleted.
fn insurer_fixtures() -> Vec<Value> {
    let meta = |tag: &str, profile: &str, source: &str| {
        json!({
            "tag": [{"system": "urn:fhirvault:test", "code": tag}],
            "profile": [profile],
            "security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": if tag == "vip" { "R" } else { "N" }}],
            "source": source
        })
    };
    vec![
        json!({"resourceType": "Patient", "id": "ins-p1", "name": [{"family": "Novak", "given": ["Ivana"]}], "gender": "female",
               "birthDate": "1971-04-02", "meta": meta("vip", "http://example.org/StructureDefinition/vip-patient", "urn:source:portal")}),
        json!({"resourceType": "Patient", "id": "ins-p2", "name": [{"family": "Horvat"}], "gender": "male",
               "meta": meta("regular", "http://hl7.org/fhir/StructureDefinition/Patient", "urn:source:ehr")}),
        json!({"resourceType": "Organization", "id": "ins-payor", "name": "Gesundheitskasse Süd"}),
        json!({"resourceType": "Organization", "id": "ins-payor2", "name": "Privatversicherung Nord"}),
        json!({"resourceType": "Coverage", "id": "cov-a", "status": "active", "beneficiary": {"reference": "Patient/ins-p1"},
               "payor": [{"reference": "Organization/ins-payor"}], "subscriberId": "SUB-123",
               "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "EHCPOL"}]},
               "period": {"start": "2026-01-01", "end": "2026-12-31"},
               "class": [{"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/coverage-class", "code": "group"}]}, "value": "G-7"}]}),
        json!({"resourceType": "Coverage", "id": "cov-b", "status": "cancelled", "beneficiary": {"reference": "Patient/ins-p2"},
               "payor": [{"reference": "Organization/ins-payor2"}], "period": {"start": "2025-01-01", "end": "2025-12-31"}}),
        json!({"resourceType": "Claim", "id": "claim-1", "status": "active", "use": "claim", "created": "2026-03-10",
               "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/claim-type", "code": "professional"}]},
               "patient": {"reference": "Patient/ins-p1"}, "provider": {"reference": "Organization/ins-payor"},
               "priority": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/processpriority", "code": "normal"}]},
               "insurance": [{"sequence": 1, "focal": true, "coverage": {"reference": "Coverage/cov-a"}}],
               "item": [{"sequence": 1, "productOrService": {"coding": [{"system": "urn:tarif", "code": "HOLTER-24H"}]},
                         "unitPrice": {"value": 120.5, "currency": "EUR"}}],
               "total": {"value": 120.5, "currency": "EUR"}}),
        json!({"resourceType": "Claim", "id": "claim-2", "status": "draft", "use": "preauthorization", "created": "2026-04-01T09:00:00+02:00",
               "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/claim-type", "code": "institutional"}]},
               "patient": {"reference": "Patient/ins-p2"}, "provider": {"reference": "Organization/ins-payor2"},
               "priority": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/processpriority", "code": "stat"}]},
               "insurance": [{"sequence": 1, "focal": true, "coverage": {"reference": "Coverage/cov-b"}}],
               "total": {"value": 80, "currency": "EUR"}}),
        json!({"resourceType": "Consent", "id": "consent-1", "status": "active", "dateTime": "2026-02-01",
               "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
               "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
               "patient": {"reference": "Patient/ins-p1"}, "organization": [{"reference": "Organization/ins-payor"}],
               "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}]},
               "provision": {"type": "permit", "period": {"start": "2026-02-01", "end": "2027-01-31"},
                             "actor": [{"role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP"}]},
                                        "reference": {"reference": "Organization/ins-payor"}}],
                             "purpose": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "HPAYMT"}]}}),
        json!({"resourceType": "Consent", "id": "consent-2", "status": "inactive", "dateTime": "2025-05-05",
               "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
               "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
               "patient": {"reference": "Patient/ins-p2"}, "provision": {"type": "deny"}}),
        json!({"resourceType": "Device", "id": "dev-1", "status": "active", "patient": {"reference": "Patient/ins-p1"},
               "owner": {"reference": "Organization/ins-payor"}, "manufacturer": "Holter Werke", "modelNumber": "HX-7",
               "deviceName": [{"name": "Holter HX-7", "type": "model-name"}],
               "type": {"coding": [{"system": "http://snomed.info/sct", "code": "86184003"}]},
               "udiCarrier": [{"deviceIdentifier": "UDI-0042", "carrierHRF": "(01)UDI-0042"}], "url": "http://devices.example/dev-1"}),
        json!({"resourceType": "Device", "id": "dev-2", "status": "inactive", "manufacturer": "Other GmbH",
               "type": {"coding": [{"system": "http://snomed.info/sct", "code": "86184003"}]}}),
    ]
}

/// (query, expected match ids in `_id` order) over [`insurer_fixtures`] after `claim-1` was
/// superseded (its old status `draft`) and `dev-gone` and `cov-gone` were deleted.
const INSURER_CASES: &[(&str, &[&str])] = &[
    // Coverage
    ("Coverage?status=active", &["cov-a"]),
    ("Coverage?status:not=active", &["cov-b"]),
    ("Coverage?beneficiary=Patient/ins-p1", &["cov-a"]),
    ("Coverage?patient=ins-p2", &["cov-b"]),
    ("Coverage?payor=Organization/ins-payor", &["cov-a"]),
    ("Coverage?payor:Organization.name=privat", &["cov-b"]),
    ("Coverage?type=EHCPOL", &["cov-a"]),
    ("Coverage?class-type=group", &["cov-a"]),
    ("Coverage?class-value=G-7", &["cov-a"]),
    ("Coverage?policy-holder:missing=true", &["cov-a", "cov-b"]),
    ("Coverage?beneficiary.gender=male", &["cov-b"]),
    ("Coverage?beneficiary:Patient.name=nov", &["cov-a"]),
    ("Coverage?beneficiary:Patient.birthdate=1971-04", &["cov-a"]),
    ("Coverage?patient._has:Claim:patient:use=claim", &["cov-a"]),
    ("Patient?_has:Claim:patient:status=draft", &["ins-p2"]),
    // Claim
    ("Claim?status=active", &["claim-1"]),
    ("Claim?use=preauthorization", &["claim-2"]),
    ("Claim?patient=ins-p1", &["claim-1"]),
    ("Claim?patient.gender=male", &["claim-2"]),
    ("Claim?created=2026-03-10", &["claim-1"]),
    ("Claim?created=2026-04-01", &["claim-2"]),
    ("Claim?created=ge2026-03-11", &["claim-2"]),
    ("Claim?created=lt2026-04-01T07:00:00Z", &["claim-1"]),
    ("Claim?created=2026-04-01T07:00:00Z", &["claim-2"]),
    ("Claim?priority=stat", &["claim-2"]),
    ("Claim?provider=Organization/ins-payor", &["claim-1"]),
    ("Claim?care-team:missing=true", &["claim-1", "claim-2"]),
    (
        "Claim?provider:Organization.name=gesundheitskasse",
        &["claim-1"],
    ),
    ("Claim?use=claim&status=active&patient=ins-p1", &["claim-1"]),
    ("Claim?use=claim&status=draft", &[]),
    ("Claim?_sort=-created", &["claim-2", "claim-1"]),
    ("Claim?_sort=created", &["claim-1", "claim-2"]),
    ("Claim?insurer:missing=true", &["claim-1", "claim-2"]),
    // Consent
    ("Consent?status=active", &["consent-1"]),
    ("Consent?patient=Patient/ins-p2", &["consent-2"]),
    ("Consent?scope=patient-privacy", &["consent-1", "consent-2"]),
    (
        "Consent?category=http://loinc.org|59284-0",
        &["consent-1", "consent-2"],
    ),
    ("Consent?date=2026-02-01", &["consent-1"]),
    ("Consent?date=lt2026", &["consent-2"]),
    ("Consent?period=ge2026-06-01", &["consent-1"]),
    ("Consent?period=2028", &[]),
    ("Consent?organization=ins-payor", &["consent-1"]),
    ("Consent?actor=Organization/ins-payor", &["consent-1"]),
    ("Consent?purpose=HPAYMT", &["consent-1"]),
    ("Consent?action:missing=true", &["consent-1", "consent-2"]),
    (
        "Consent?security-label:missing=true",
        &["consent-1", "consent-2"],
    ),
    ("Consent?patient.name=horvat", &["consent-2"]),
    // Device
    ("Device?status=active", &["dev-1"]),
    ("Device?patient=ins-p1", &["dev-1"]),
    ("Device?manufacturer=holter", &["dev-1"]),
    ("Device?manufacturer:exact=Other GmbH", &["dev-2"]),
    ("Device?model=HX-7", &["dev-1"]),
    ("Device?device-name=holter", &["dev-1"]),
    ("Device?type=86184003", &["dev-1", "dev-2"]),
    ("Device?udi-di=UDI-0042", &["dev-1"]),
    ("Device?url:below=http://devices.example", &["dev-1"]),
    ("Device?organization=ins-payor", &["dev-1"]),
    ("Device?patient:missing=true", &["dev-2"]),
    ("Device?_has:Observation:device:status=final", &[]),
    // meta: _tag, _profile, _security, _source, _lastUpdated
    ("Patient?_tag=urn:fhirvault:test|vip", &["ins-p1"]),
    ("Patient?_tag=regular", &["ins-p2"]),
    ("Patient?_tag:not=vip", &["ins-p2"]),
    (
        "Patient?_profile=http://example.org/StructureDefinition/vip-patient",
        &["ins-p1"],
    ),
    ("Patient?_security=R", &["ins-p1"]),
    (
        "Patient?_security=http://terminology.hl7.org/CodeSystem/v3-Confidentiality|N",
        &["ins-p2"],
    ),
    ("Patient?_source=urn:source:ehr", &["ins-p2"]),
    (
        "Patient?_lastUpdated=ge2020-01-01&gender=female",
        &["ins-p1"],
    ),
    ("Patient?_lastUpdated=lt2020-01-01", &[]),
    // superseded and deleted: only current versions match
    ("Claim?status=draft", &["claim-2"]),
    ("Claim?_id=claim-1&status=draft", &[]),
    ("Device?_id=dev-gone", &[]),
    ("Device?manufacturer=gone", &[]),
    ("Coverage?_id=cov-gone", &[]),
    ("Coverage?beneficiary=ins-gone", &[]),
    ("Claim?patient.name=gespenst", &[]),
    (
        "Patient?_has:Coverage:beneficiary:status=active",
        &["ins-p1"],
    ),
];

async fn insurer_cases(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut fixtures = insurer_fixtures();
    // Superseded: claim-1 was first written as a draft; deleted resources never match.
    let mut draft = fixtures[6].clone();
    draft["status"] = json!("draft");
    fixtures.insert(0, draft);
    fixtures.push(
        json!({"resourceType": "Patient", "id": "ins-gone", "name": [{"family": "Gespenst"}]}),
    );
    fixtures.push(json!({"resourceType": "Device", "id": "dev-gone", "status": "active", "manufacturer": "Gone AG"}));
    fixtures.push(json!({"resourceType": "Coverage", "id": "cov-gone", "status": "active", "beneficiary": {"reference": "Patient/ins-gone"},
                         "payor": [{"reference": "Organization/ins-payor"}]}));
    fixtures.push(json!({"resourceType": "Claim", "id": "claim-gone", "status": "active", "use": "claim", "created": "2026-01-01",
                         "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/claim-type", "code": "professional"}]},
                         "patient": {"reference": "Patient/ins-gone"}, "provider": {"reference": "Organization/ins-payor"},
                         "priority": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/processpriority", "code": "normal"}]},
                         "insurance": [{"sequence": 1, "focal": true, "coverage": {"reference": "Coverage/cov-gone"}}]}));
    for resource in fixtures {
        let path = format!(
            "{}/{}",
            resource["resourceType"].as_str().unwrap(),
            resource["id"].as_str().unwrap()
        );
        let reply = server.put(&path, &resource).await;
        assert!(reply.status.is_success(), "{path}: {}", reply.text);
    }
    for gone in [
        "Patient/ins-gone",
        "Device/dev-gone",
        "Coverage/cov-gone",
        "Claim/claim-gone",
    ] {
        server.delete(gone).await;
    }
    check_table(&server, "insurer", INSURER_CASES).await;
}

/// `GET [base]?…`: across types, with `_type`, paging across types that share an id.
async fn system_search(backend: Backend) {
    let server = TestServer::start(backend).await;
    for resource in [
        json!({"resourceType": "Patient", "id": "anna", "name": [{"family": "Anna"}]}),
        json!({"resourceType": "Organization", "id": "klinik", "name": "Klinik"}),
        obs("o1", "anna", "8867-4", "72", "2026-03-05", "final"),
        json!({"resourceType": "Patient", "id": "same"}),
        json!({"resourceType": "Organization", "id": "same", "name": "Same"}),
    ] {
        let path = format!(
            "{}/{}",
            resource["resourceType"].as_str().unwrap(),
            resource["id"].as_str().unwrap()
        );
        server.put(&path, &resource).await;
    }
    let typed = |bundle: &Value| -> Vec<String> {
        bundle["entry"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["search"]["mode"] == "match")
            .map(|e| {
                format!(
                    "{}/{}",
                    e["resource"]["resourceType"].as_str().unwrap(),
                    e["resource"]["id"].as_str().unwrap()
                )
            })
            .collect()
    };
    let all = server.get("?_id=anna,klinik&_sort=_id").await;
    assert_eq!(
        typed(&all.body),
        ["Patient/anna", "Organization/klinik"],
        "{}",
        all.text
    );
    let some = server
        .get("?_type=Patient,Organization&_lastUpdated=gt2000-01-01&_sort=_id&_count=10")
        .await;
    assert_eq!(
        typed(&some.body),
        [
            "Patient/anna",
            "Organization/klinik",
            "Organization/same",
            "Patient/same"
        ]
    );
    assert_eq!(some.body["total"], 4);
    let one_type = server.get("?_type=Patient&name=anna").await;
    assert_eq!(
        typed(&one_type.body),
        ["Patient/anna"],
        "one _type is that type's search"
    );
    server
        .request(
            Method::GET,
            "?_type=Patient,Organization&name=x",
            None,
            &[("prefer", "handling=strict")],
        )
        .await
        .assert_outcome(StatusCode::BAD_REQUEST, "invalid", "name");
    server
        .get("?_type=Nothing")
        .await
        .assert_outcome(StatusCode::BAD_REQUEST, "invalid", "_type");
    let mut seen = Vec::new();
    let mut page = server.get("?_id=same&_count=1").await;
    loop {
        seen.extend(typed(&page.body));
        match link(&page.body, "next") {
            Some(next) => page = server.get(&next).await,
            None => break,
        }
    }
    assert_eq!(seen, ["Organization/same", "Patient/same"]);
    let form = server
        .raw(
            Method::POST,
            "_search",
            "application/x-www-form-urlencoded",
            b"_id=anna".to_vec(),
        )
        .await;
    assert_eq!(typed(&form.body), ["Patient/anna"], "{}", form.text);
}

/// Extra resources for chains, `_has` and includes, on top of [`fixtures`].
fn linked_fixtures() -> Vec<Value> {
    let mut with_device = obs("hr-anna-dev", "anna", "8867-4", "70", "2026-05-01", "final");
    with_device["device"] = json!({"reference": "Device/holter-1"});
    let mut foreign = obs("hr-foreign", "anna", "8867-4", "80", "2026-05-02", "final");
    foreign["subject"] = json!({"reference": "http://other.example/fhir/Patient/bernd"});
    vec![
        with_device,
        foreign,
        json!({"resourceType": "Patient", "id": "ghost", "name": [{"family": "Gespenst"}]}),
        obs("hr-ghost", "ghost", "8867-4", "50", "2026-05-03", "final"),
        json!({"resourceType": "DiagnosticReport", "id": "dr-1", "status": "final", "code": {"text": "Holter"},
               "subject": {"reference": "Patient/anna"}, "result": [{"reference": "Observation/hr-anna-2"}]}),
        json!({"resourceType": "Observation", "id": "glucose", "status": "final", "subject": {"reference": "Patient/chloe"},
               "code": {"coding": [{"system": "http://loinc.org", "code": "2339-0"}]},
               "valueQuantity": {"value": 1, "unit": "g/L", "system": "http://unitsofmeasure.org", "code": "g/L"}}),
        json!({"resourceType": "Coverage", "id": "cov-1", "status": "active", "beneficiary": {"reference": "Patient/anna"},
               "payor": [{"reference": "Organization/kasse"}]}),
    ]
}

/// (query, expected match ids in `_id` order, expected included `Type/id`s sorted).
const LINKED_CASES: &[(&str, &[&str], &[&str])] = &[
    // chains: typed and untyped, protected and plain target parameters, two links deep
    (
        "Observation?subject:Patient.name=müller",
        &["hr-anna-1", "hr-anna-2", "hr-anna-dev", "pvc-anna"],
        &[],
    ),
    (
        "Observation?subject.identifier=urn:ssn|2222",
        &["hr-bernd"],
        &[],
    ),
    ("Observation?patient.gender=male", &["hr-bernd"], &[]),
    (
        "Observation?subject:Patient.birthdate=1980&code=8894-5",
        &["pvc-anna"],
        &[],
    ),
    (
        "Observation?device.patient.name=anna",
        &["hr-anna-dev"],
        &[],
    ),
    (
        "Observation?device.url=http://devices.example/holter/1",
        &["hr-anna-dev"],
        &[],
    ),
    ("Observation?subject._id=bernd", &["hr-bernd"], &[]),
    (
        "Observation?subject.gender:not=female&code=8867-4",
        &["hr-bernd"],
        &[],
    ),
    // a chain never passes through a deleted resource, nor through a reference to another server
    ("Observation?subject.name=gespenst", &[], &[]),
    (
        "Observation?subject.identifier=urn:ssn|2222&date=2026-05-02",
        &[],
        &[],
    ),
    // _has, plain and nested, and combined with other parameters
    (
        "Patient?_has:Observation:subject:code=8894-5",
        &["anna"],
        &[],
    ),
    (
        "Patient?_has:Observation:patient:status=preliminary",
        &["bernd"],
        &[],
    ),
    (
        "Patient?_has:Observation:subject:_has:DiagnosticReport:result:status=final",
        &["anna"],
        &[],
    ),
    (
        "Patient?_has:Observation:subject:code=8867-4&gender=male",
        &["bernd"],
        &[],
    ),
    (
        "Patient?_has:Coverage:beneficiary:payor.name=osterr",
        &["anna"],
        &[],
    ),
    (
        "Device?_has:Observation:device:subject.name=anna",
        &["holter-1"],
        &[],
    ),
    // _include: one parameter, a target type, *, a foreign reference (not included), a deleted target
    (
        "Observation?_id=hr-anna-1&_include=Observation:subject",
        &["hr-anna-1"],
        &["Patient/anna"],
    ),
    (
        "Observation?code=8867-4&date=lt2026-05&_include=Observation:subject:Patient",
        &["hr-anna-1", "hr-anna-2", "hr-bernd"],
        &["Patient/anna", "Patient/bernd"],
    ),
    (
        "Observation?_id=hr-anna-dev&_include=Observation:*",
        &["hr-anna-dev"],
        &["Device/holter-1", "Patient/anna"],
    ),
    (
        "Observation?_id=hr-foreign&_include=Observation:subject",
        &["hr-foreign"],
        &[],
    ),
    (
        "Observation?_id=hr-ghost&_include=Observation:subject",
        &["hr-ghost"],
        &[],
    ),
    // _revinclude, and :iterate across two hops
    (
        "Patient?_id=bernd&_revinclude=Observation:subject",
        &["bernd"],
        &["Observation/hr-bernd"],
    ),
    (
        "Patient?_id=anna&_revinclude=DiagnosticReport:subject&_revinclude=Coverage:beneficiary",
        &["anna"],
        &["Coverage/cov-1", "DiagnosticReport/dr-1"],
    ),
    (
        "Observation?_id=hr-anna-2&_revinclude=DiagnosticReport:result&_include:iterate=DiagnosticReport:subject",
        &["hr-anna-2"],
        &["DiagnosticReport/dr-1", "Patient/anna"],
    ),
    (
        "Coverage?_id=cov-1&_include=Coverage:beneficiary&_revinclude:iterate=Device:patient",
        &["cov-1"],
        &["Device/holter-1", "Patient/anna"],
    ),
    // UCUM: the same mass concentration in other units, alone and inside a composite
    (
        "Observation?value-quantity=100|http://unitsofmeasure.org|mg/dL",
        &["glucose"],
        &[],
    ),
    (
        "Observation?value-quantity=1000|http://unitsofmeasure.org|mg/L",
        &["glucose"],
        &[],
    ),
    (
        "Observation?value-quantity=1|http://unitsofmeasure.org|mg/L",
        &[],
        &[],
    ),
    (
        "Observation?value-quantity=1|http://unitsofmeasure.org|g/L",
        &["glucose"],
        &[],
    ),
    (
        "Observation?code-value-quantity=2339-0$100|http://unitsofmeasure.org|mg/dL",
        &["glucose"],
        &[],
    ),
    (
        "Observation?code-value-quantity=8867-4$100|http://unitsofmeasure.org|mg/dL",
        &[],
        &[],
    ),
    // compartment search: the compartment definition's parameters, only references to this server,
    // the Patient itself; membership follows references even to a deleted Patient
    (
        "Patient/anna/Observation?code=8867-4",
        &["hr-anna-1", "hr-anna-2", "hr-anna-dev"],
        &[],
    ),
    (
        "Patient/bernd/Observation?status=final,preliminary",
        &["hr-bernd"],
        &[],
    ),
    ("Patient/anna/DiagnosticReport?status=final", &["dr-1"], &[]),
    (
        "Patient/anna/Coverage?status=active&_include=Coverage:payor",
        &["cov-1"],
        &["Organization/kasse"],
    ),
    ("Patient/anna/Patient?_id=anna,bernd", &["anna"], &[]),
    ("Patient/chloe/Observation?code=8867-4", &[], &[]),
    ("Patient/ghost/Observation?code=8867-4", &["hr-ghost"], &[]),
];

async fn chains_has_and_includes(backend: Backend) {
    let server = TestServer::start(backend).await;
    for resource in fixtures().into_iter().chain(linked_fixtures()) {
        let path = format!(
            "{}/{}",
            resource["resourceType"].as_str().unwrap(),
            resource["id"].as_str().unwrap()
        );
        let reply = server.put(&path, &resource).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{path}: {}", reply.text);
    }
    server.delete("Patient/ghost").await;
    let mut failures = Vec::new();
    for (query, expected, expected_included) in LINKED_CASES {
        let reply = server.get(&format!("{query}&_sort=_id&_count=100")).await;
        if reply.status != StatusCode::OK {
            failures.push(format!("{query}: status {} {}", reply.status, reply.text));
            continue;
        }
        let ids = crate::common::match_ids(&reply.body);
        let mut included: Vec<String> = reply.body["entry"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["search"]["mode"] == "include")
            .map(|e| {
                format!(
                    "{}/{}",
                    e["resource"]["resourceType"].as_str().unwrap(),
                    e["resource"]["id"].as_str().unwrap()
                )
            })
            .collect();
        included.sort();
        if ids != *expected || included != *expected_included {
            failures.push(format!(
                "{query}: expected {expected:?} + {expected_included:?}, got {ids:?} + {included:?}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        LINKED_CASES.len(),
        failures.join("\n")
    );
}

/// A `code` element's system is the one its required binding implies: `system|code` finds it,
/// another system does not; and rows stored before they carried it are given it at start-up.
async fn code_elements_have_their_bound_system(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (patient, _) = server
        .create(&json!({"resourceType": "Patient", "gender": "female"}))
        .await;
    let (report, _) = server
        .create(
            &json!({"resourceType": "DiagnosticReport", "status": "final",
                        "code": {"text": "Holter"}}),
        )
        .await;
    let gender = "http://hl7.org/fhir/administrative-gender";
    let cases = [
        (
            format!("Patient?gender={gender}|female"),
            vec![patient.clone()],
        ),
        ("Patient?gender=female".to_string(), vec![patient.clone()]),
        (format!("Patient?gender={gender}|male"), vec![]),
        (
            "Patient?gender=http://example.org/other|female".to_string(),
            vec![],
        ),
        (
            "DiagnosticReport?status=http://hl7.org/fhir/diagnostic-report-status|final"
                .to_string(),
            vec![report.clone()],
        ),
        // The same code in another code system is another concept.
        (
            "DiagnosticReport?status=http://hl7.org/fhir/observation-status|final".to_string(),
            vec![],
        ),
        (
            "DiagnosticReport?status:below=http://hl7.org/fhir/observation-status|final"
                .to_string(),
            vec![],
        ),
        (
            "DiagnosticReport?status:below=http://hl7.org/fhir/diagnostic-report-status|final"
                .to_string(),
            vec![report.clone()],
        ),
    ];
    let check = async |server: &TestServer| {
        for (query, expected) in &cases {
            let reply = server.get(query).await;
            assert_eq!(reply.status, StatusCode::OK, "{query}: {}", reply.text);
            assert_eq!(&crate::common::match_ids(&reply.body), expected, "{query}");
        }
    };
    check(&server).await;

    // As an earlier version stored them: without a system. A restart upgrades them.
    let (dir, database) = server.stop().await;
    let store = fhirvault::store::Store::open(&database).await.unwrap();
    let mut tx = store.begin().await.unwrap();
    let cleared = sqlx::query(
        "UPDATE search_token SET system = '' WHERE param IN ('gender', 'status') \
         AND resource_type IN ('Patient', 'DiagnosticReport')",
    )
    .execute(&mut *tx)
    .await
    .unwrap()
    .rows_affected();
    tx.commit().await.unwrap();
    store.close().await;
    assert_eq!(cleared, 2);
    let server = TestServer::start_with(backend, dir, database, |_| {}).await;
    check(&server).await;
}

/// Large searches, up to the limits the server states: a parameter may list 500 values (each
/// its own comparison: SQLite refused a list of them as an expression deeper than 1,000), and
/// several such parameters together are answered; a search with more values than one database
/// statement can bind (80 parameters of 500 codes; SQLite takes 32,766) is a 400 `too-costly`
/// saying so, on both databases, not the database's error. Sent by POST, as such forms are.
async fn large_searches_run_or_are_too_costly(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (observation, _) = server
        .create(&json!({"resourceType": "Observation", "status": "final",
                        "code": {"coding": [{"system": "http://loinc.org", "code": "c-7"}]}}))
        .await;
    let (patient, _) = server
        .create(&json!({"resourceType": "Patient", "name": [{"family": "n-7"}]}))
        .await;
    // `parameters` times `name=` followed by 500 values `prefix0,prefix1,…`.
    let search = async |path: &str, name: &str, prefix: &str, parameters: usize| {
        let values = (0..500)
            .map(|i| format!("{prefix}{i}"))
            .collect::<Vec<_>>()
            .join(",");
        server
            .raw(
                Method::POST,
                path,
                "application/x-www-form-urlencoded",
                vec![format!("{name}={values}"); parameters]
                    .join("&")
                    .into_bytes(),
            )
            .await
    };
    for (path, name, prefix, parameters, expected) in [
        ("Observation/_search", "code", "c-", 1, &observation),
        (
            "Observation/_search",
            "code",
            "http://loinc.org|c-",
            1,
            &observation,
        ),
        ("Observation/_search", "code", "c-", 4, &observation),
        ("Patient/_search", "name", "n-", 1, &patient),
    ] {
        let reply = search(path, name, prefix, parameters).await;
        let case = format!("{name}={prefix}… ×{parameters}");
        assert_eq!(reply.status, StatusCode::OK, "{case}: {}", reply.text);
        assert_eq!(
            crate::common::match_ids(&reply.body),
            std::slice::from_ref(expected),
            "{case}"
        );
    }
    search("Observation/_search", "code", "c-", 80)
        .await
        .assert_outcome(StatusCode::BAD_REQUEST, "too-costly", "too large");
}

both_backends!(
    large_searches_run_or_are_too_costly,
    code_elements_have_their_bound_system,
    search_table,
    paging_totals_and_summary,
    page_links_carry_the_total_unless_it_must_be_accurate,
    search_errors_and_unknown_parameters,
    paging_is_stable_under_writes,
    writes_replace_index_rows,
    chains_has_and_includes,
    summary_and_elements,
    system_search,
    edge_cases,
    insurer_cases
);
