//! Nothing a client wrote appears in plain text in the database: the raw SQLite file (with its
//! WAL) and a `pg_dump` are scanned for every recognisable PHI string of a realistic data set.

use crate::common::{Backend, TestServer};
use serde_json::json;

/// Strings that must never be found in the database. Each has a character outside 0-9a-f, so a
/// hex-encoded ciphertext or token in a `pg_dump` cannot contain it by chance.
const PHI: &[&str] = &[
    "Wolfgang",
    "Amadeus",
    "Zauberflöte",
    "Getreidegasse",
    "Salzburg-Altstadt",
    "A-5020",
    "1756010127",
    "+43 662 844313",
    "wolfgang.mozart@example.at",
    "Konstanze",
    "Ambulanz-Notiz-Geheim",
    "POLICY-7788-XY",
    "1756-01-27",
    "ACC-5566-LAB",
    "UDI-HRF-0042",
    "Holter-Wolfgang-Geraet",
    "Befund-fuer-Konstanze",
    "+43 1 999 0000",
];

async fn raw_database_holds_no_phi(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (pid, _) = server
        .create(&json!({
            "resourceType": "Patient",
            "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">Wolfgang Amadeus, Ambulanz-Notiz-Geheim</div>"},
            "identifier": [{"system": "urn:oid:1.2.40.0.10.1.4.3.1", "value": "1756010127"}],
            "name": [{"family": "Zauberflöte", "given": ["Wolfgang", "Amadeus"]}],
            "telecom": [{"system": "phone", "value": "+43 662 844313"}, {"system": "email", "value": "wolfgang.mozart@example.at"}],
            "address": [{"line": ["Getreidegasse 9"], "city": "Salzburg-Altstadt", "postalCode": "A-5020", "country": "AT"}],
            "birthDate": "1756-01-27",
            "contact": [{"name": {"given": ["Konstanze"]}}]
        }))
        .await;
    server
        .create(&json!({
            "resourceType": "Observation", "status": "final",
            "code": {"text": "Ambulanz-Notiz-Geheim"},
            "subject": {"reference": format!("Patient/{pid}"), "display": "Wolfgang Amadeus"},
            "note": [{"text": "Konstanze called about Wolfgang"}],
            "valueString": "Zauberflöte"
        }))
        .await;
    server
        .create(&json!({
            "resourceType": "Coverage", "status": "active",
            "identifier": [{"system": "urn:insurer", "value": "POLICY-7788-XY"}],
            "beneficiary": {"reference": format!("Patient/{pid}")},
            "payor": [{"display": "Salzburg-Altstadt Kasse"}]
        }))
        .await;
    // Identifiers, device serials, free text and contact details of other resource types too.
    server.create(&json!({"resourceType": "Specimen", "accessionIdentifier": {"system": "urn:lab", "value": "ACC-5566-LAB"},
        "subject": {"reference": format!("Patient/{pid}")}})).await;
    server.create(&json!({"resourceType": "Device", "udiCarrier": [{"carrierHRF": "UDI-HRF-0042", "deviceIdentifier": "UDI-HRF-0042"}],
        "deviceName": [{"name": "Holter-Wolfgang-Geraet", "type": "user-friendly-name"}], "patient": {"reference": format!("Patient/{pid}")}})).await;
    server.create(&json!({"resourceType": "ServiceRequest", "status": "active", "intent": "order", "subject": {"reference": format!("Patient/{pid}")},
        "orderDetail": [{"text": "Befund-fuer-Konstanze"}], "requisition": {"system": "urn:req", "value": "ACC-5566-LAB"}})).await;
    server.create(&json!({"resourceType": "PractitionerRole", "telecom": [{"system": "phone", "value": "+43 1 999 0000"}]})).await;
    // A search typed into a reference outside a transaction is refused, not stored as text.
    let conditional = server
        .post(
            "Observation",
            &json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
        "subject": {"reference": "Patient?identifier=urn:oid:1.2.40.0.10.1.4.3.1|1756010127"}}),
        )
        .await;
    assert_eq!(
        conditional.status,
        reqwest::StatusCode::BAD_REQUEST,
        "{}",
        conditional.text
    );
    server
        .create(
            &json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
        "subject": {"reference": "Wolfgang Amadeus"}}),
        )
        .await;
    assert_eq!(
        server
            .search_ids("Specimen?accession=ACC-5566-LAB")
            .await
            .len(),
        1
    );
    assert_eq!(
        server.search_ids("Device?udi-carrier=udi-hrf").await.len(),
        1
    );
    assert_eq!(
        server
            .search_ids("PractitionerRole?phone=%2B43%201%20999%200000")
            .await
            .len(),
        1
    );

    // The data stays searchable.
    assert_eq!(
        server.search_ids("Patient?name=wolf").await,
        vec![pid.clone()]
    );
    assert_eq!(
        server.search_ids("Patient?family=ZAUBERFLOTE").await,
        vec![pid.clone()]
    );
    assert_eq!(
        server.search_ids("Patient?birthdate=1756-01").await,
        vec![pid.clone()]
    );
    assert_eq!(
        server
            .search_ids("Patient?identifier=urn:oid:1.2.40.0.10.1.4.3.1|1756010127")
            .await,
        vec![pid.clone()]
    );
    assert_eq!(
        server
            .search_ids("Coverage?identifier=POLICY-7788-XY")
            .await
            .len(),
        1
    );

    let dump = server.raw_database().await;
    assert!(dump.len() > 1000, "the dump has content");
    for phi in PHI {
        assert!(
            !dump.contains(phi),
            "{phi:?} found in plain text in the {backend:?} database"
        );
        let lower = phi.to_lowercase();
        assert!(
            !dump.contains(&lower),
            "{lower:?} (normalised) found in the {backend:?} database"
        );
    }
}

both_backends!(raw_database_holds_no_phi);
