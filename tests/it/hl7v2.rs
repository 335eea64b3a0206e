//! HL7 v2 ingestion through the real listeners: MLLP sockets and `POST /hl7v2`, with the corpus in
//! tests/fixtures/hl7v2/. Each test asserts the ACK and the FHIR resources read back through the
//! API, on SQLite and on PostgreSQL.

use crate::common::{Backend, TestServer};
use fhirvault::hl7v2::er7::Message;
use fhirvault::hl7v2::mllp::MllpClient;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const SVNR: &str = "urn:oid:1.2.40.0.10.1.4.3.1";
const EUI64: &str = "urn:oid:1.2.840.10004.1.1.1.0.0.1.0.0.1.2680";

pub(crate) fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/hl7v2/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("fixture")
}

/// An ACK, parsed.
pub(crate) struct Ack {
    text: String,
    message: Message,
}

impl Ack {
    pub(crate) fn parse(bytes: &[u8]) -> Ack {
        let text = String::from_utf8(bytes.to_vec()).expect("ACK is UTF-8");
        let message =
            Message::parse(bytes).unwrap_or_else(|e| panic!("ACK does not parse ({e}): {text:?}"));
        Ack { text, message }
    }

    fn code(&self) -> &str {
        self.message.first("MSA").expect("MSA").text(1)
    }

    fn acknowledged(&self) -> &str {
        self.message.first("MSA").expect("MSA").text(2)
    }

    /// (ERR-2 location, ERR-3 code) of every ERR segment.
    pub(crate) fn errors(&self) -> Vec<(String, String)> {
        self.message
            .all("ERR")
            .map(|err| {
                (
                    err.field(2)
                        .map(|f| f.raw().to_string())
                        .unwrap_or_default(),
                    err.get(3, 0, 1, 1).to_string(),
                )
            })
            .collect()
    }

    pub(crate) fn assert(&self, code: &str, errors: &[(&str, &str)]) {
        assert_eq!(self.code(), code, "ACK: {:?}", self.text);
        let expected: Vec<(String, String)> = errors
            .iter()
            .map(|(l, c)| (l.to_string(), c.to_string()))
            .collect();
        assert_eq!(self.errors(), expected, "ACK: {:?}", self.text);
    }
}

async fn mllp_request(server: &TestServer, message: &[u8]) -> Ack {
    let mut client = MllpClient::connect(server.mllp)
        .await
        .expect("MLLP connect");
    Ack::parse(&client.request(message).await.expect("MLLP answer"))
}

async fn http_request(server: &TestServer, message: &[u8], content_type: &str) -> Ack {
    let reply = server
        .raw(
            Method::POST,
            &format!("http://{}/hl7v2", server.addr),
            content_type,
            message.to_vec(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert!(
        reply
            .header("content-type")
            .is_some_and(|c| c.starts_with("x-application/hl7-v2+er7"))
    );
    Ack::parse(reply.text.as_bytes())
}

/// Every resource a search finds (following `next` links), as JSON.
async fn all(server: &TestServer, query: &str) -> Vec<Value> {
    let mut found = Vec::new();
    let mut url = server.url(query);
    loop {
        let reply = server.get(&url).await;
        assert_eq!(reply.status, StatusCode::OK, "{query}: {}", reply.text);
        for entry in reply.body["entry"].as_array().into_iter().flatten() {
            found.push(entry["resource"].clone());
        }
        match reply.body["link"]
            .as_array()
            .and_then(|links| links.iter().find(|l| l["relation"] == "next"))
        {
            Some(next) => url = next["url"].as_str().unwrap().to_string(),
            None => return found,
        }
    }
}

fn with_code<'a>(observations: &'a [Value], system: &str, code: &str) -> &'a Value {
    observations
        .iter()
        .find(|o| {
            o["code"]["coding"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["system"] == system && c["code"] == code)
        })
        .unwrap_or_else(|| panic!("no Observation with {system}|{code}"))
}

const HOLTER: &str = "https://fhirvault.example/CodeSystem/holter";

/// The resource without what the server assigns (id, meta.versionId, meta.lastUpdated).
fn content(resource: &Value) -> Value {
    let mut resource = resource.clone();
    let object = resource.as_object_mut().unwrap();
    object.remove("id");
    if let Some(meta) = object.get_mut("meta").and_then(Value::as_object_mut) {
        meta.remove("versionId");
        meta.remove("lastUpdated");
    }
    resource
}

async fn holter_message_over_mllp(backend: Backend) {
    let server = TestServer::start(backend).await;
    let ack = mllp_request(&server, &fixture("holter-pcd01.hl7")).await;
    ack.assert("AA", &[]);
    assert_eq!(ack.acknowledged(), "HOLTER-0001");
    let msh = ack.message.first("MSH").unwrap();
    assert_eq!(
        (msh.text(3), msh.text(4), msh.text(5), msh.text(6)),
        ("FHIRVAULT", "HOLTER-CO", "HOLTER-ANALYSER", "CARDIO WIEN")
    );
    assert_eq!(msh.field(9).unwrap().raw(), "ACK^R01^ACK");
    assert_eq!((msh.text(11), msh.text(12)), ("P", "2.6"));
    assert_ne!(msh.text(10), "HOLTER-0001");

    // The patient: found by the social-insurance number, with its pseudonym.
    let patients = all(&server, &format!("Patient?identifier={SVNR}|1234010180")).await;
    assert_eq!(patients.len(), 1);
    let patient = &patients[0];
    let patient_id = patient["id"].as_str().unwrap();
    assert_eq!(
        patient["name"],
        json!([{"family": "Gruber", "given": ["Anna", "Maria"], "prefix": ["Dr."], "use": "official"}])
    );
    assert_eq!(patient["birthDate"], "1980-01-01");
    assert_eq!(patient["gender"], "female");
    let identifiers = patient["identifier"].as_array().unwrap();
    assert!(
        identifiers
            .iter()
            .any(|i| i["system"] == "urn:oid:1.2.40.0.34.99.4613" && i["value"] == "MRN-5521")
    );
    assert!(
        identifiers
            .iter()
            .any(|i| i["system"] == "urn:fhirvault:pseudonym"),
        "pseudonym added: {identifiers:?}"
    );

    // The device, from OBX-18 and the MDS containment OBX.
    let devices = all(
        &server,
        &format!("Device?identifier={EUI64}|0012345678ABCDEF"),
    )
    .await;
    assert_eq!(devices.len(), 1);
    let device_id = devices[0]["id"].as_str().unwrap();
    assert_eq!(devices[0]["type"]["coding"][0]["code"], "531981");
    assert_eq!(
        devices[0]["patient"]["reference"],
        format!("Patient/{patient_id}")
    );

    // Fourteen Observations: every metric OBX, not the containment OBX.
    let observations = all(
        &server,
        &format!("Observation?subject=Patient/{patient_id}&_count=50"),
    )
    .await;
    assert_eq!(observations.len(), 14);
    let mean = with_code(&observations, "http://loinc.org", "41924-2");
    assert_eq!(mean["device"]["reference"], format!("Device/{device_id}"));
    assert_eq!(
        mean["subject"]["reference"],
        format!("Patient/{patient_id}")
    );
    let mut expected_mean = json!({
        "resourceType": "Observation",
        "meta": {"profile": ["https://fhirvault.example/StructureDefinition/holter-observation"]},
        "extension": [{"url": "https://fhirvault.example/StructureDefinition/hl7v2-obx-sub-id", "valueString": "1.1.1.1"}],
        "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs", "display": "Vital Signs"}]}],
        "code": {"coding": [
            {"system": "http://loinc.org", "code": "41924-2", "display": "Heart rate 24 hour mean"},
            {"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"},
            {"system": HOLTER, "code": "hr-mean", "display": "Mean heart rate over the analysed period"}
        ], "text": "Mean heart rate over the analysed period"},
        "effectivePeriod": {"start": "2026-03-13T08:00:00+01:00", "end": "2026-03-14T08:00:00+01:00"},
        "issued": "2026-03-14T12:00:00+01:00",
        "valueQuantity": {"value": 72, "unit": "beats per minute", "system": "http://unitsofmeasure.org", "code": "/min"},
        "interpretation": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation", "code": "N", "display": "Normal"}]}],
        "referenceRange": [{
            "low": {"value": 60, "unit": "beats per minute", "system": "http://unitsofmeasure.org", "code": "/min"},
            "high": {"value": 100, "unit": "beats per minute", "system": "http://unitsofmeasure.org", "code": "/min"}
        }],
        "subject": {"reference": format!("Patient/{patient_id}")},
        "device": {"reference": format!("Device/{device_id}")}
    });
    // Display texts come from the code tables; compare them from the stored value.
    expected_mean["valueQuantity"]["unit"] = mean["valueQuantity"]["unit"].clone();
    expected_mean["referenceRange"][0]["low"]["unit"] = mean["valueQuantity"]["unit"].clone();
    expected_mean["referenceRange"][0]["high"]["unit"] = mean["valueQuantity"]["unit"].clone();
    assert_eq!(content(mean), expected_mean);

    let minimum = with_code(&observations, "http://loinc.org", "8883-1");
    assert_eq!(minimum["interpretation"][0]["coding"][0]["code"], "L");
    let pvc = with_code(&observations, HOLTER, "pvc-count");
    assert_eq!(pvc["category"][0]["coding"][0]["code"], "procedure");
    assert_eq!(pvc["valueQuantity"]["code"], "{beats}");
    let rate = with_code(&observations, "urn:iso:std:iso:11073:10101", "148066");
    assert_eq!(rate["valueQuantity"]["code"], "/min");
    let pause = with_code(&observations, HOLTER, "pause-longest");
    assert_eq!(pause["effectiveDateTime"], "2026-03-14T03:12:15+01:00");
    assert_eq!(pause["valueQuantity"]["code"], "s");
    let sdnn = with_code(&observations, HOLTER, "hrv-sdnn");
    assert_eq!(
        sdnn["valueQuantity"]["value"].to_string(),
        "141.0",
        "decimal precision kept"
    );
    let st = with_code(&observations, "urn:iso:std:iso:11073:10101", "131840");
    assert_eq!(
        (
            st["valueQuantity"]["value"].to_string(),
            &st["valueQuantity"]["code"]
        ),
        ("-0.05".to_string(), &json!("mV"))
    );
    let duration = with_code(&observations, HOLTER, "recording-duration");
    assert_eq!(
        duration["note"],
        json!([{"text": "Artefacts between 02:00 and 02:20 excluded."}])
    );
    assert_eq!(
        with_code(&observations, HOLTER, "af-burden")["valueQuantity"]["code"],
        "%"
    );

    // The study, with every Observation as a result.
    let reports = all(
        &server,
        &format!("DiagnosticReport?subject=Patient/{patient_id}"),
    )
    .await;
    assert_eq!(reports.len(), 1);
    let report = &reports[0];
    assert_eq!(
        report["meta"]["profile"][0],
        "https://fhirvault.example/StructureDefinition/holter-diagnosticreport"
    );
    assert_eq!(report["code"]["coding"][0]["code"], "18754-2");
    assert_eq!(report["status"], "final");
    assert_eq!(
        report["effectivePeriod"],
        json!({"start": "2026-03-13T08:00:00+01:00", "end": "2026-03-14T08:00:00+01:00"})
    );
    assert_eq!(report["issued"], "2026-03-14T12:00:00+01:00");
    assert_eq!(report["result"].as_array().unwrap().len(), 14);
    assert_eq!(report["identifier"][1]["value"], "FIL-99");

    // The Provenance traces any Observation back to its message.
    let provenances = all(
        &server,
        &format!(
            "Provenance?target=Observation/{}",
            mean["id"].as_str().unwrap()
        ),
    )
    .await;
    assert_eq!(provenances.len(), 1);
    let provenance = &provenances[0];
    assert_eq!(
        provenance["entity"][0]["what"]["identifier"]["value"],
        "HOLTER-ANALYSER|CARDIO WIEN|HOLTER-0001"
    );
    assert_eq!(provenance["target"].as_array().unwrap().len(), 15);
}

async fn lab_message_over_http(backend: Backend) {
    let server = TestServer::start(backend).await;
    let ack = http_request(&server, &fixture("lab-oru.hl7"), "text/plain").await;
    ack.assert("AA", &[]);
    assert_eq!(ack.message.first("MSH").unwrap().text(12), "2.5.1");
    let patients = all(&server, &format!("Patient?identifier={SVNR}|1234010180")).await;
    assert_eq!(
        patients[0]["birthDate"], "1980-01",
        "partial birth date kept"
    );
    let observations = all(
        &server,
        &format!(
            "Observation?subject=Patient/{}",
            patients[0]["id"].as_str().unwrap()
        ),
    )
    .await;
    assert_eq!(observations.len(), 2);
    let potassium = with_code(&observations, "http://loinc.org", "2823-3");
    assert_eq!(potassium["category"][0]["coding"][0]["code"], "laboratory");
    assert_eq!(potassium["valueQuantity"]["value"].to_string(), "4.10");
    assert!(
        potassium
            .get("meta")
            .and_then(|m| m.get("profile"))
            .is_none(),
        "lab results claim no Holter profile"
    );
    // No offset: the facility time zone (Europe/Vienna, winter time).
    assert_eq!(
        potassium["effectivePeriod"]["start"],
        "2026-03-12T09:15:00+01:00"
    );
    let sodium = with_code(&observations, "http://loinc.org", "2951-2");
    assert_eq!(sodium["interpretation"][0]["coding"][0]["code"], "H");
    assert_eq!(sodium["referenceRange"][0]["high"]["value"], 145);
    let reports = all(&server, "DiagnosticReport?code=http://loinc.org|24323-8").await;
    assert_eq!(reports.len(), 1);
    assert!(
        reports[0]
            .get("meta")
            .and_then(|m| m.get("profile"))
            .is_none()
    );
}

async fn every_value_type(backend: Backend) {
    let server = TestServer::start(backend).await;
    mllp_request(&server, &fixture("value-types.hl7"))
        .await
        .assert("AA", &[]);
    let observations = all(&server, "Observation?_count=50").await;
    assert_eq!(
        observations.len(),
        11,
        "the sample-rate attribute OBX is not an Observation"
    );
    let by_key = |key: &str| with_code(&observations, HOLTER, key).clone();
    assert_eq!(by_key("hr-max")["valueQuantity"]["comparator"], ">");
    assert_eq!(by_key("hr-max")["valueQuantity"]["value"], 180);
    assert_eq!(by_key("hr-mean")["valueRange"]["low"]["value"], 60);
    assert_eq!(by_key("hr-mean")["valueRange"]["high"]["value"], 80);
    assert_eq!(by_key("pvc-burden")["valueRatio"]["numerator"]["value"], 1);
    assert_eq!(
        by_key("pvc-burden")["valueRatio"]["denominator"]["value"],
        128
    );
    assert_eq!(by_key("st-level")["valueString"], "not assessable");
    assert_eq!(
        by_key("af-burden")["valueString"],
        "first line\nsecond line"
    );
    assert_eq!(
        by_key("sve-runs")["valueString"],
        "Run at 02:14\n3 beats&slow"
    );
    assert_eq!(
        by_key("rr-mean")["valueCodeableConcept"],
        json!({"coding": [{"system": "http://snomed.info/sct", "code": "49436004", "display": "Atrial fibrillation"}], "text": "Atrial fibrillation"})
    );
    assert_eq!(
        by_key("pause-longest")["valueDateTime"],
        "2026-03-13T23:15:00-03:30"
    );
    let cancelled = by_key("total-beats");
    assert_eq!(cancelled["status"], "cancelled");
    assert!(cancelled["dataAbsentReason"]["coding"][0]["code"].is_string());
    let corrected = by_key("hrv-sdnn");
    assert_eq!(corrected["status"], "corrected");
    assert_eq!(corrected["effectiveDateTime"], "2026-03-14T08:00:00+01:00");
    let waveform = with_code(&observations, "urn:iso:std:iso:11073:10101", "131329");
    assert_eq!(
        waveform["valueSampledData"],
        json!({"origin": {"value": 0, "unit": waveform["valueSampledData"]["origin"]["unit"], "system": "http://unitsofmeasure.org", "code": "uV"},
               "period": 4, "dimensions": 1, "data": "0 12 -5 33 128 40"})
    );
}

async fn latin1_names_and_escapes(backend: Backend) {
    let server = TestServer::start(backend).await;
    mllp_request(&server, &fixture("latin1-escapes.hl7"))
        .await
        .assert("AA", &[]);
    let patients = all(&server, &format!("Patient?identifier={SVNR}|9876543210")).await;
    assert_eq!(patients[0]["name"][0]["family"], "Müller&Söhne");
    assert_eq!(patients[0]["name"][0]["given"], json!(["Jürgen"]));
    assert_eq!(patients[0]["birthDate"], "1975");
    assert_eq!(
        all(&server, "Patient?name=müller").await.len(),
        1,
        "string search over the decoded name"
    );
}

async fn device_hub_messages_find_the_patient_through_the_device(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (patient_id, _) = server.create(&json!({"resourceType": "Patient", "identifier": [{"system": SVNR, "value": "1111010170"}]})).await;
    let (device_id, _) = server
        .create(&json!({"resourceType": "Device", "identifier": [{"system": EUI64, "value": "00AABBCCDDEEFF11"}],
                        "patient": {"reference": format!("Patient/{patient_id}")}}))
        .await;
    // Enhanced mode, MSH-15 AL / MSH-16 NE: one accept ACK.
    let mut client = MllpClient::connect(server.mllp).await.unwrap();
    let ack = Ack::parse(&client.request(&fixture("device-hub.hl7")).await.unwrap());
    ack.assert("CA", &[]);
    let observations = all(
        &server,
        &format!("Observation?subject=Patient/{patient_id}"),
    )
    .await;
    assert_eq!(observations.len(), 1);
    assert_eq!(
        observations[0]["device"]["reference"],
        format!("Device/{device_id}")
    );
    assert_eq!(
        all(&server, "Device").await.len(),
        1,
        "the known device was matched, not created again"
    );

    let ack = mllp_request(&server, &fixture("unknown-device.hl7")).await;
    ack.assert("AE", &[("OBX^1^18", "204")]);
    let letters = dead_letters(&server).await;
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].error_code, 204);
}

/// A device hub ingests for its own devices only: a message that finds its patient through a
/// Device of another organisation, or names one, is refused exactly like one naming an unknown
/// device (AE, ERR 204 at OBX-18) and kept as a dead letter; the devices a hub's messages create
/// are its organisation's.
async fn a_hub_ingests_for_its_own_devices_only(backend: Backend) {
    let server = TestServer::start(backend).await;
    for org in ["org-a", "org-b"] {
        server
            .put(
                &format!("Organization/{org}"),
                &json!({"resourceType": "Organization", "id": org}),
            )
            .await;
    }
    let (patient_id, _) = server.create(&json!({"resourceType": "Patient", "identifier": [{"system": SVNR, "value": "1111010170"}]})).await;
    server
        .create(&json!({"resourceType": "Device", "identifier": [{"system": EUI64, "value": "00AABBCCDDEEFF11"}],
                        "owner": {"reference": "Organization/org-a"}, "patient": {"reference": format!("Patient/{patient_id}")}}))
        .await;
    let hub = |org: &str| {
        server.token(
            "device-hub",
            "system/Device.rs system/Observation.c",
            None,
            Some(org),
        )
    };
    let send = async |token: &str, message: Vec<u8>| {
        let request = server
            .client
            .post(format!("http://{}/hl7v2", server.addr))
            .bearer_auth(token)
            .header("content-type", "x-application/hl7-v2+er7");
        let reply =
            crate::common::Reply::from(request.body(message).send().await.expect("sent")).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        Ack::parse(reply.text.as_bytes())
    };
    let observations = async || {
        all(
            &server,
            &format!("Observation?subject=Patient/{patient_id}"),
        )
        .await
        .len()
    };
    // The hub's message in original mode (without MSH-15/16), so that a refusal is answered.
    let from_hub = String::from_utf8(fixture("device-hub.hl7"))
        .expect("UTF-8")
        .replacen("|2.6|||AL|NE", "|2.6", 1)
        .into_bytes();

    // The patient through the device: org-b's hub is refused, without learning that it exists.
    let refused = send(&hub("org-b"), from_hub.clone()).await;
    refused.assert("AE", &[("OBX^1^18", "204")]);
    let unknown = send(&hub("org-b"), fixture("unknown-device.hl7")).await;
    assert_eq!(refused.errors(), unknown.errors());
    assert!(
        !refused.text.contains("org-a") && !refused.text.contains(&patient_id),
        "{}",
        refused.text
    );
    assert_eq!(observations().await, 0);
    assert_eq!(
        dead_letters(&server)
            .await
            .iter()
            .filter(|l| l.error_code == 204)
            .count(),
        2
    );
    // org-a's hub owns the device.
    send(&hub("org-a"), from_hub).await.assert("AA", &[]);
    assert_eq!(observations().await, 1);

    // Devices a hub's message creates are its organisation's: its next message may name them,
    // another hub's may not.
    let holter = String::from_utf8(fixture("holter-pcd01.hl7")).expect("UTF-8");
    send(&hub("org-a"), holter.clone().into_bytes())
        .await
        .assert("AA", &[]);
    let devices = all(
        &server,
        &format!("Device?identifier={EUI64}|0012345678ABCDEF"),
    )
    .await;
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0]["owner"]["reference"], "Organization/org-a");
    let again = |control_id: &str| {
        holter
            .replacen("|HOLTER-0001|", &format!("|{control_id}|"), 1)
            .into_bytes()
    };
    send(&hub("org-a"), again("HOLTER-0002"))
        .await
        .assert("AA", &[]);
    send(&hub("org-b"), again("HOLTER-0003"))
        .await
        .assert("AE", &[("OBX^1^18", "204")]);

    // So are the patients it creates; a patient its PID names must be in the hub's reach
    // (managed by its organisation, or the patient of one of its devices), even with a device
    // of the hub's own: otherwise knowing an identifier would be enough to file results under
    // another organisation's patient.
    let created = all(&server, "Patient?identifier=1234010180").await;
    assert_eq!(created.len(), 1);
    assert_eq!(
        created[0]["managingOrganization"]["reference"],
        "Organization/org-a"
    );
    let message = |control_id: &str, pid: &str, device: &str| {
        holter
            .replacen("|HOLTER-0001|", &format!("|{control_id}|"), 1)
            .replacen(
                "1234010180^^^SVNR^SS~MRN-5521^^^&1.2.40.0.34.99.4613&ISO^MR",
                pid,
                1,
            )
            .replace("0012345678ABCDEF", device)
            .into_bytes()
    };
    let gruber = "1234010180^^^SVNR^SS";
    let first = "1111010170^^^SVNR^SS";
    let refused = send(
        &hub("org-b"),
        message("HOLTER-0004", gruber, "00000000000000B1"),
    )
    .await;
    refused.assert("AE", &[("PID^1^3", "204")]);
    assert!(!refused.text.contains("org-a"), "{}", refused.text);
    send(
        &hub("org-b"),
        message("HOLTER-0005", first, "00000000000000B2"),
    )
    .await
    .assert("AE", &[("PID^1^3", "204")]);
    assert_eq!(
        observations().await,
        1,
        "nothing filed under the first patient"
    );
    // The first patient is managed by no one, but org-a's recorder is assigned to it.
    send(
        &hub("org-a"),
        message("HOLTER-0006", first, "00000000000000A1"),
    )
    .await
    .assert("AA", &[]);
    assert!(observations().await > 1);
}

async fn dead_letters(server: &TestServer) -> Vec<fhirvault::store::hl7v2::DeadLetter> {
    let store = fhirvault::store::Store::open(&server.database)
        .await
        .unwrap();
    let mut conn = store.reader().await.unwrap();
    let letters = fhirvault::store::hl7v2::list_dead_letters(&mut conn, true)
        .await
        .unwrap();
    drop(conn);
    store.close().await;
    letters
}

async fn resends_are_answered_again_and_stored_once(backend: Backend) {
    let server = TestServer::start(backend).await;
    let message = fixture("holter-pcd01.hl7");
    let first = mllp_request(&server, &message).await;
    first.assert("AA", &[]);
    let again = http_request(&server, &message, "x-application/hl7-v2+er7").await;
    assert_eq!(again.text, first.text, "the same ACK, byte for byte");
    assert_eq!(all(&server, "Observation?_count=50").await.len(), 14);

    // The same key with other content is a conflict, kept as a dead letter.
    let changed = String::from_utf8(message.clone())
        .unwrap()
        .replace("|72|", "|73|");
    let conflict = mllp_request(&server, changed.as_bytes()).await;
    conflict.assert("AR", &[("MSH^1^10", "205")]);
    assert_eq!(all(&server, "Observation?_count=50").await.len(), 14);

    // Across a restart too.
    let (dir, database) = server.stop().await;
    let server = TestServer::start_with(backend, dir, database, |_| {}).await;
    let after_restart = mllp_request(&server, &message).await;
    assert_eq!(after_restart.text, first.text);
    assert_eq!(all(&server, "Observation?_count=50").await.len(), 14);
    assert_eq!(all(&server, "Provenance").await.len(), 1);
}

async fn broken_messages_are_answered_and_kept(backend: Backend) {
    let server = TestServer::start(backend).await;
    let adt = mllp_request(&server, &fixture("adt-a01.hl7")).await;
    adt.assert("AR", &[("MSH^1^9^1^1", "200")]);
    assert_eq!(adt.acknowledged(), "ADT-0001");

    let truncated = mllp_request(&server, &fixture("truncated.hl7")).await;
    assert_eq!(truncated.code(), "AE");
    assert!(
        truncated
            .errors()
            .contains(&("OBX^3^11".to_string(), "101".to_string())),
        "{:?}",
        truncated.text
    );
    assert!(
        all(&server, "Patient").await.is_empty(),
        "nothing of a failed message is stored"
    );

    let garbage = http_request(&server, b"this is not HL7", "text/plain").await;
    assert_eq!(garbage.code(), "AR");
    assert_eq!(garbage.errors()[0].1, "100");

    let letters = dead_letters(&server).await;
    assert_eq!(letters.len(), 3);
    assert!(
        letters
            .iter()
            .all(|l| !l.reason.contains("Gruber") && !l.reason.contains("1234010180")),
        "no PHI in reasons"
    );
    // Each refusal is in the audit trail, over MLLP as over HTTP: failed, with its control id
    // and the reason, from the address that sent it.
    let auditor = server.token("auditor", "user/*.rs", None, None);
    let reply = server
        .request_as(
            &auditor,
            Method::GET,
            "AuditEvent?type=http://dicom.nema.org/resources/ontology/DCM|110107&outcome=4",
            None,
        )
        .await;
    let refused: Vec<&Value> = reply.body["entry"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| &e["resource"])
        .collect();
    assert_eq!(refused.len(), 3, "{}", reply.text);
    assert!(
        refused
            .iter()
            .all(|e| e["agent"][0]["network"]["address"] == "127.0.0.1")
    );
    let described: Vec<&str> = refused
        .iter()
        .filter_map(|e| e["outcomeDesc"].as_str())
        .collect();
    assert!(
        described.iter().any(|d| d.starts_with("rejected: 200")),
        "{described:?}"
    );
    assert!(
        described.iter().any(|d| d.starts_with("not stored: 101")),
        "{described:?}"
    );
    assert!(
        refused
            .iter()
            .any(|e| e["entity"][0]["what"]["identifier"]["value"] == "ADT-0001")
    );
    assert!(
        !reply.text.contains("Gruber") && !reply.text.contains("1234010180"),
        "no PHI in the records"
    );

    let wrong_type = server
        .raw(
            Method::POST,
            &format!("http://{}/hl7v2", server.addr),
            "application/json",
            b"{}".to_vec(),
        )
        .await;
    wrong_type.assert_outcome(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "not-supported",
        "x-application/hl7-v2+er7",
    );
}

async fn malformed_framing(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut socket = tokio::net::TcpStream::connect(server.mllp).await.unwrap();
    // Bytes before the start block are discarded; the frame after them is answered.
    let mut bytes = b"noise before the frame".to_vec();
    bytes.push(0x0b);
    bytes.extend_from_slice(&fixture("lab-oru.hl7"));
    bytes.extend_from_slice(&[0x1c, 0x0d]);
    // A frame whose end block is not followed by a carriage return is rejected.
    bytes.push(0x0b);
    bytes.extend_from_slice(&fixture("adt-a01.hl7"));
    bytes.extend_from_slice(&[0x1c, b'X']);
    socket.write_all(&bytes).await.unwrap();
    let mut client = MllpClient::new(socket);
    let first = Ack::parse(&client.receive().await.unwrap().unwrap());
    first.assert("AA", &[]);
    let second = Ack::parse(&client.receive().await.unwrap().unwrap());
    assert_eq!(second.code(), "AR");
    assert_eq!(second.errors()[0].1, "100");
    let _ = client.get_mut().shutdown().await;
    let mut rest = Vec::new();
    let _ = client.get_mut().read_to_end(&mut rest).await;
}

async fn batch_file_through_the_cli(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (dir, database) = server.stop().await;
    let database_url = match &database {
        fhirvault::config::DatabaseUrl::Sqlite(path) => format!("sqlite:{}", path.display()),
        fhirvault::config::DatabaseUrl::Postgres(url) => url.clone(),
    };
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_fhirvault"))
            .args([
                "--data-dir",
                dir.path().to_str().unwrap(),
                "--database-url",
                &database_url,
            ])
            .args(args)
            .env(
                "FHIRVAULT_FHIR_RESOURCES",
                concat!(env!("CARGO_MANIFEST_DIR"), "/fhir-resources"),
            )
            .output()
            .expect("run fhirvault")
    };
    let batch = format!(
        "{}/tests/fixtures/hl7v2/batch.hl7",
        env!("CARGO_MANIFEST_DIR")
    );
    let adt = format!(
        "{}/tests/fixtures/hl7v2/adt-a01.hl7",
        env!("CARGO_MANIFEST_DIR")
    );
    let output = run(&["ingest", &batch, &adt]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        !output.status.success(),
        "a rejected message makes the command fail"
    );
    assert!(
        stdout.contains("stored 3 messages, 0 already stored before, rejected 1"),
        "{stdout}"
    );

    let output = run(&["hl7", "dead-letters", "list"]);
    let listing = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success());
    assert_eq!(listing.lines().count(), 1, "{listing}");
    assert!(listing.contains("ERR 200"), "{listing}");
    let id = listing.split_whitespace().next().unwrap();
    let output = run(&["hl7", "dead-letters", "replay", id]);
    assert!(
        !output.status.success(),
        "an ADT message still cannot be stored"
    );

    let output = run(&["ingest", &batch]);
    assert!(
        String::from_utf8_lossy(&output.stdout)
            .contains("stored 0 messages, 3 already stored before, rejected 0")
    );

    let server = TestServer::start_with(backend, dir, database, |_| {}).await;
    assert_eq!(all(&server, "Observation").await.len(), 3);
}

/// A message of the kill test: one patient, its own control id and filler order number.
fn numbered_message(i: usize) -> String {
    [
        format!("MSH|^~\\&|HOLTER-ANALYSER|CARDIO WIEN|FHIRVAULT|HOLTER-CO|20260314123000+0100||ORU^R01^ORU_R01|KILL-{i:04}|P|2.6"),
        "PID|1||1234010180^^^SVNR^SS||Gruber^Anna||19800101|F".to_string(),
        format!("OBR|1||FIL-{i}|18754-2^Holter study^LN|||20260313080000+0100|20260314080000+0100|||||||||||||||||F"),
        format!("OBX|1|NM|hr-mean^Mean HR^99HOLTER|1.1.1.1|{}|bpm|||||F", 60 + i % 40),
    ]
    .join("\r")
        + "\r"
}

/// `fhirvault serve` as a child process with MLLP on, killed (SIGKILL) when dropped.
struct Process {
    child: std::process::Child,
    http: u16,
    mllp: u16,
    /// An admin token for the HTTP checks, from `fhirvault token issue`.
    token: String,
}

impl Process {
    async fn start(dir: &std::path::Path, database_url: &str) -> Process {
        let free = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        };
        let (http, mllp) = (free(), free());
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_fhirvault"))
            .args([
                "--data-dir",
                dir.to_str().unwrap(),
                "--database-url",
                database_url,
                "serve",
            ])
            .args([
                "--listen",
                &format!("127.0.0.1:{http}"),
                "--mllp-listen",
                &format!("127.0.0.1:{mllp}"),
            ])
            .env(
                "FHIRVAULT_FHIR_RESOURCES",
                concat!(env!("CARGO_MANIFEST_DIR"), "/fhir-resources"),
            )
            .env("FHIRVAULT_LOG", "warn")
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start fhirvault");
        let issued = std::process::Command::new(env!("CARGO_BIN_EXE_fhirvault"))
            .args([
                "--data-dir",
                dir.to_str().unwrap(),
                "--database-url",
                database_url,
                "token",
                "issue",
                "--role",
                "admin",
            ])
            .args(["--listen", &format!("127.0.0.1:{http}")])
            .env(
                "FHIRVAULT_FHIR_RESOURCES",
                concat!(env!("CARGO_MANIFEST_DIR"), "/fhir-resources"),
            )
            .output()
            .expect("token issue");
        assert!(
            issued.status.success(),
            "token issue: {}",
            String::from_utf8_lossy(&issued.stderr)
        );
        let token = String::from_utf8(issued.stdout)
            .expect("token")
            .trim_end()
            .to_string();
        let process = Process {
            child,
            http,
            mllp,
            token,
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while std::time::Instant::now() < deadline {
            if reqwest::get(format!("http://127.0.0.1:{http}/health"))
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return process;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        panic!("fhirvault did not start");
    }

    async fn count(&self, query: &str) -> u64 {
        let url = format!("http://127.0.0.1:{}/fhir/{query}", self.http);
        let body: Value = reqwest::Client::new()
            .get(url)
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        body["total"]
            .as_u64()
            .unwrap_or_else(|| body["entry"].as_array().map_or(0, |e| e.len() as u64))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Kill the server (SIGKILL) in the middle of a pipelined MLLP stream, restart it, and resend
/// everything: every message acknowledged before the kill is there, and nothing is stored twice.
async fn acknowledged_messages_survive_a_kill(backend: Backend) {
    const MESSAGES: usize = 120;
    let dir = tempfile::tempdir().unwrap();
    let database_url = match backend {
        Backend::Sqlite => format!("sqlite:{}", dir.path().join("fhirvault.db").display()),
        Backend::Postgres => crate::common::postgres::fresh_database().await,
    };
    let mut server = Process::start(dir.path(), &database_url).await;

    let mut client = MllpClient::connect(("127.0.0.1", server.mllp))
        .await
        .unwrap();
    let writer = {
        let mut socket = tokio::net::TcpStream::connect(("127.0.0.1", server.mllp))
            .await
            .unwrap();
        // A second connection streams the rest without waiting, so messages are in flight at the kill.
        tokio::spawn(async move {
            for i in MESSAGES / 2..MESSAGES {
                let frame = fhirvault::hl7v2::mllp::encode_frame(numbered_message(i).as_bytes());
                if socket.write_all(&frame).await.is_err() {
                    break;
                }
            }
            socket
        })
    };
    let mut acknowledged = Vec::new();
    for i in 0..MESSAGES / 2 {
        if i == 20 {
            server.child.kill().unwrap();
            server.child.wait().unwrap();
        }
        match client.request(numbered_message(i).as_bytes()).await {
            Ok(bytes) => {
                let ack = Ack::parse(&bytes);
                ack.assert("AA", &[]);
                acknowledged.push(i);
            }
            Err(_) => break,
        }
    }
    drop(writer.await);
    assert!(
        acknowledged.len() >= 20,
        "the first 20 messages were acknowledged before the kill"
    );

    drop(server);
    let server = Process::start(dir.path(), &database_url).await;
    for i in &acknowledged {
        assert_eq!(
            server
                .count(&format!("DiagnosticReport?identifier=FIL-{i}"))
                .await,
            1,
            "acknowledged message {i} is stored"
        );
    }
    // The senders resend everything they have no ACK for (here: everything); each is answered AA.
    let mut client = MllpClient::connect(("127.0.0.1", server.mllp))
        .await
        .unwrap();
    for i in 0..MESSAGES {
        Ack::parse(
            &client
                .request(numbered_message(i).as_bytes())
                .await
                .unwrap(),
        )
        .assert("AA", &[]);
    }
    let total = MESSAGES as u64;
    assert_eq!(
        server.count("DiagnosticReport?_summary=count").await,
        total,
        "every message stored exactly once"
    );
    assert_eq!(server.count("Observation?_summary=count").await, total);
    assert_eq!(server.count("Provenance?_summary=count").await, total);
    assert_eq!(
        server.count("Patient?_summary=count").await,
        1,
        "one patient, matched by identifier every time"
    );
}

/// The displays an ingested Holter Observation carries come from the server's code tables:
/// `:text` finds their words through the codings' token rows, and no word row is stored for
/// them. A client's own display of the same code still gets its word rows.
async fn text_search_finds_known_displays_without_word_rows(backend: Backend) {
    let server = TestServer::start(backend).await;
    mllp_request(&server, &fixture("holter-pcd01.hl7"))
        .await
        .assert("AA", &[]);
    let codes = |query: &'static str| {
        let server = &server;
        async move {
            let mut found: Vec<String> = all(server, query)
                .await
                .iter()
                .map(|o| {
                    let codings = o["code"]["coding"].as_array().unwrap();
                    codings.last().unwrap()["code"]
                        .as_str()
                        .unwrap()
                        .to_string()
                })
                .collect();
            found.sort();
            found
        }
    };
    // The three heart-rate statistics, by the words of their LOINC and Holter displays.
    assert_eq!(
        codes("Observation?code:text=heart rate 24 hour").await,
        ["hr-max", "hr-mean", "hr-min"]
    );
    // "Root mean square" of the RMSSD display, but it is a procedure, not a vital sign.
    assert_eq!(
        codes("Observation?code:text=mean heart").await,
        ["hr-mean", "hrv-rmssd"]
    );
    assert_eq!(
        codes("Observation?code:text=mean heart&category:text=vital signs").await,
        ["hr-mean"]
    );
    assert_eq!(
        codes("Observation?code:text=heart pvc").await,
        Vec::<String>::new()
    );
    assert_eq!(
        all(&server, "DiagnosticReport?code:text=holter study")
            .await
            .len(),
        1
    );

    // A client's Observation with its own display of a known code.
    server
        .create(&json!({"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Puls"}]}}))
        .await;
    assert_eq!(all(&server, "Observation?code:text=puls").await.len(), 1);
    // The three statistics and the two heart-rate-variability measures; not the client's.
    assert_eq!(
        all(&server, "Observation?code:text=heart rate").await.len(),
        5
    );

    // The rows: no word row of `code:text` or `category:text` for the ingested Observations,
    // one for the client's word.
    use sqlx::{Connection, Row};
    let mut conn = crate::audit_chain::connect(&server.database).await;
    let rows = sqlx::query(
        "SELECT param, COUNT(*) FROM search_blind WHERE resource_type = 'Observation' \
         AND param IN ('code:text', 'category:text') GROUP BY param",
    )
    .fetch_all(&mut conn)
    .await
    .expect("word rows");
    let counted: Vec<(String, i64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(counted, [("code:text".to_string(), 1)]);
    conn.close().await.expect("closed");
}

both_backends!(
    text_search_finds_known_displays_without_word_rows,
    acknowledged_messages_survive_a_kill,
    holter_message_over_mllp,
    lab_message_over_http,
    every_value_type,
    latin1_names_and_escapes,
    device_hub_messages_find_the_patient_through_the_device,
    a_hub_ingests_for_its_own_devices_only,
    resends_are_answered_again_and_stored_once,
    broken_messages_are_answered_and_kept,
    malformed_framing,
    batch_file_through_the_cli,
);
