//! Bulk export (`$export`) through a real server: what each caller's export holds is what its
//! searches find (roles, organisations, patient compartments, Consents, pseudonymous views);
//! `_type`, `_since` and `_typeFilter`; jobs belong to their caller, can be cancelled, expire and
//! fail cleanly after a restart; kick-offs and downloads are audited; nothing exported is left in
//! the database in plain text.

use std::time::{Duration, Instant};

use base64::Engine;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{Backend, Reply, TestServer, fresh_store};
use fhirvault::auth::token::IssueRequest;

/// Strings that identify the fixture's patients: none may leave the server in a pseudonymous
/// export, nor stay in the database in plain text.
const PHI: &[&str] = &[
    "Exportwolf",
    "Exportluchs",
    "Exportdachs",
    "4711010180",
    "+43 1 555 0101",
    "Export-Notiz-Geheim",
];

/// Three patients (a and b of clinic A, c of clinic B), two Observations each, a Device each, a
/// Coverage by insurer 1 for a and b, and an Observation of no patient.
async fn fixture(server: &TestServer) {
    let mut resources = vec![
        json!({"resourceType": "Organization", "id": "org-a", "name": "Clinic A"}),
        json!({"resourceType": "Organization", "id": "org-b", "name": "Clinic B"}),
        json!({"resourceType": "Organization", "id": "ins-1", "name": "Insurer 1"}),
        json!({"resourceType": "Observation", "id": "obs-loose", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]}}),
    ];
    for (p, org, family) in [
        ("a", "org-a", "Exportwolf"),
        ("b", "org-a", "Exportluchs"),
        ("c", "org-b", "Exportdachs"),
    ] {
        let patient = format!("Patient/pat-{p}");
        let mut body = json!({"resourceType": "Patient", "id": format!("pat-{p}"), "name": [{"family": family, "given": ["Maria"]}],
            "managingOrganization": {"reference": format!("Organization/{org}")}, "birthDate": "1980-01-01"});
        if p == "a" {
            body["identifier"] =
                json!([{"system": "urn:oid:1.2.40.0.10.1.4.3.1", "value": "4711010180"}]);
            body["telecom"] = json!([{"system": "phone", "value": "+43 1 555 0101"}]);
        }
        resources.push(body);
        for (kind, code) in [("hr", "8867-4"), ("rr", "9279-1")] {
            resources.push(json!({"resourceType": "Observation", "id": format!("{kind}-{p}"), "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": code}]}, "subject": {"reference": patient, "display": family},
                "note": [{"text": "Export-Notiz-Geheim"}]}));
        }
        resources.push(json!({"resourceType": "Device", "id": format!("dev-{p}"), "patient": {"reference": patient}}));
        if p != "c" {
            resources.push(json!({"resourceType": "Coverage", "id": format!("cov-{p}"), "status": "active",
                "beneficiary": {"reference": patient}, "payor": [{"reference": "Organization/ins-1"}]}));
        }
    }
    for resource in resources {
        let path = format!(
            "{}/{}",
            resource["resourceType"].as_str().expect("type"),
            resource["id"].as_str().expect("id")
        );
        let reply = server.put(&path, &resource).await;
        assert!(reply.status.is_success(), "{path}: {}", reply.text);
    }
}

async fn start(backend: Backend) -> TestServer {
    let server = TestServer::start(backend).await;
    fixture(&server).await;
    server
}

/// A kick-off as `token` (`None`: the admin), with `Prefer: respond-async`.
async fn kickoff(server: &TestServer, token: Option<&str>, path: &str) -> Reply {
    request(
        server,
        token,
        Method::GET,
        path,
        &[("prefer", "respond-async")],
    )
    .await
}

async fn request(
    server: &TestServer,
    token: Option<&str>,
    method: Method,
    path: &str,
    extra: &[(&str, &str)],
) -> Reply {
    let authorization = token.map(|t| format!("Bearer {t}"));
    let mut headers: Vec<(&str, &str)> = authorization
        .iter()
        .map(|a| ("authorization", a.as_str()))
        .collect();
    headers.extend_from_slice(extra);
    server.request(method, path, None, &headers).await
}

/// Poll the status URL until the job is no longer running; the final answer.
async fn wait(server: &TestServer, token: Option<&str>, status_url: &str) -> Reply {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let reply = request(server, token, Method::GET, status_url, &[]).await;
        if reply.status != StatusCode::ACCEPTED {
            return reply;
        }
        assert!(
            reply.header("x-progress").is_some() && reply.header("retry-after").is_some(),
            "{:?}",
            reply.headers
        );
        assert!(
            Instant::now() < deadline,
            "the export did not finish in time"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A finished export: its status URL, manifest, and every output file's lines by type.
struct Export {
    status_url: String,
    manifest: Value,
    /// (type, url, lines) per output file.
    files: Vec<(String, String, Vec<Value>)>,
}

impl Export {
    /// The ids of the exported resources of `resource_type`, sorted.
    fn ids(&self, resource_type: &str) -> Vec<String> {
        let mut ids: Vec<String> = self
            .files
            .iter()
            .filter(|(t, _, _)| t == resource_type)
            .flat_map(|(_, _, lines)| {
                lines
                    .iter()
                    .filter_map(|l| l["id"].as_str().map(str::to_string))
            })
            .collect();
        ids.sort();
        ids
    }

    fn types(&self) -> Vec<String> {
        let mut types: Vec<String> = self.files.iter().map(|(t, _, _)| t.clone()).collect();
        types.sort();
        types.dedup();
        types
    }

    fn text(&self) -> String {
        self.files
            .iter()
            .flat_map(|(_, _, lines)| lines.iter().map(Value::to_string))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Run an export to the end as `token` and download its files.
async fn export(server: &TestServer, token: Option<&str>, path: &str) -> Export {
    let reply = kickoff(server, token, path).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{path}: {}", reply.text);
    let status_url = reply
        .header("content-location")
        .expect("Content-Location")
        .to_string();
    assert!(
        status_url.starts_with(&format!("{}/$export-status/", server.base)),
        "{status_url}"
    );
    let done = wait(server, token, &status_url).await;
    assert_eq!(done.status, StatusCode::OK, "{path}: {}", done.text);
    let manifest = done.body;
    let mut files = Vec::new();
    for entry in manifest["output"].as_array().expect("output") {
        let url = entry["url"].as_str().expect("url").to_string();
        let (status, lines) = download(server, token, &url).await;
        assert_eq!(status, StatusCode::OK, "{url}");
        assert_eq!(
            lines.len() as u64,
            entry["count"].as_u64().expect("count"),
            "{url}: count"
        );
        let resource_type = entry["type"].as_str().expect("type").to_string();
        assert!(
            lines
                .iter()
                .all(|l| l["resourceType"] == resource_type.as_str()),
            "{url}"
        );
        files.push((resource_type, url, lines));
    }
    Export {
        status_url,
        manifest,
        files,
    }
}

/// Download a file: its status and NDJSON lines.
async fn download(server: &TestServer, token: Option<&str>, url: &str) -> (StatusCode, Vec<Value>) {
    let reply = request(
        server,
        token,
        Method::GET,
        url,
        &[("accept", "application/fhir+ndjson")],
    )
    .await;
    if reply.status != StatusCode::OK {
        return (reply.status, Vec::new());
    }
    assert_eq!(
        reply.header("content-type"),
        Some("application/fhir+ndjson")
    );
    let lines = reply
        .text
        .lines()
        .map(|line| serde_json::from_str(line).expect("an NDJSON line is JSON"))
        .collect();
    (reply.status, lines)
}

fn query(pairs: &[(&str, &str)]) -> String {
    serde_urlencoded::to_string(pairs).expect("query")
}

async fn admin_exports_what_it_may_search(backend: Backend) {
    let (dir, database) = fresh_store(backend).await;
    // Three resources per file: the seven Observations take three files.
    let server = TestServer::start_with(backend, dir, database, |config| {
        config.export.max_resources_per_file = 3
    })
    .await;
    fixture(&server).await;
    let all = export(&server, None, "$export").await;
    assert_eq!(
        all.types(),
        [
            "Coverage",
            "Device",
            "Observation",
            "Organization",
            "Patient"
        ],
        "no AuditEvents for an admin"
    );
    assert_eq!(all.ids("Patient"), ["pat-a", "pat-b", "pat-c"]);
    assert_eq!(
        all.ids("Observation"),
        ["hr-a", "hr-b", "hr-c", "obs-loose", "rr-a", "rr-b", "rr-c"]
    );
    assert_eq!(all.ids("Organization").len(), 3);
    assert_eq!(all.ids("Device").len(), 3);
    assert_eq!(all.ids("Coverage").len(), 2);
    assert_eq!(
        all.files
            .iter()
            .filter(|(t, _, _)| t == "Observation")
            .count(),
        3
    );
    let manifest = &all.manifest;
    assert_eq!(manifest["requiresAccessToken"], true);
    assert_eq!(manifest["request"], format!("{}/$export", server.base));
    assert!(
        manifest["transactionTime"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')),
        "{manifest}"
    );
    assert_eq!(manifest["error"], json!([]));
    // The full view: the admin sees names.
    assert!(all.text().contains("Exportwolf"));

    // _type, and the Patient level: only resources of some patient.
    let some = export(
        &server,
        None,
        &format!(
            "$export?{}",
            query(&[
                ("_type", "Patient,Observation"),
                ("_outputFormat", "application/fhir+ndjson")
            ])
        ),
    )
    .await;
    assert_eq!(some.types(), ["Observation", "Patient"]);
    assert!(
        some.manifest["request"]
            .as_str()
            .unwrap()
            .contains("_type=Patient%2CObservation"),
        "{}",
        some.manifest
    );
    let patients = export(&server, None, "Patient/$export?_type=Observation").await;
    assert_eq!(
        patients.ids("Observation"),
        ["hr-a", "hr-b", "hr-c", "rr-a", "rr-b", "rr-c"],
        "obs-loose has no patient"
    );
    let patients = export(&server, None, "Patient/$export").await;
    assert_eq!(
        patients.types(),
        ["Coverage", "Device", "Observation", "Patient"]
    );

    // _typeFilter: one filter, and two alternatives of a type.
    let heart = export(
        &server,
        None,
        &format!(
            "$export?{}",
            query(&[
                ("_type", "Observation"),
                ("_typeFilter", "Observation?code=http://loinc.org|8867-4")
            ])
        ),
    )
    .await;
    assert_eq!(
        heart.ids("Observation"),
        ["hr-a", "hr-b", "hr-c", "obs-loose"]
    );
    let either = export(
        &server,
        None,
        &format!(
            "$export?{}",
            query(&[
                ("_type", "Observation,Patient"),
                (
                    "_typeFilter",
                    "Observation?code=http://loinc.org|8867-4&subject=Patient/pat-a"
                ),
                (
                    "_typeFilter",
                    "Observation?code=9279-1&subject=Patient/pat-b"
                ),
            ])
        ),
    )
    .await;
    assert_eq!(either.ids("Observation"), ["hr-a", "rr-b"]);
    assert_eq!(
        either.ids("Patient").len(),
        3,
        "a type without a filter is exported whole"
    );

    // _since: what changed since then.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let since = fhirvault::fhir::instant::format_instant(fhirvault::fhir::instant::now_micros());
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut changed = server.get("Observation/hr-b").await.body;
    changed["status"] = json!("amended");
    assert_eq!(
        server.put("Observation/hr-b", &changed).await.status,
        StatusCode::OK
    );
    let recent = export(
        &server,
        None,
        &format!("$export?{}", query(&[("_since", &since)])),
    )
    .await;
    assert_eq!(recent.types(), ["Observation"]);
    assert_eq!(recent.ids("Observation"), ["hr-b"]);

    // POST with a Parameters body does the same.
    let body = json!({"resourceType": "Parameters", "parameter": [
        {"name": "_type", "valueString": "Observation"}, {"name": "_since", "valueInstant": since}]});
    let reply = server
        .request(
            Method::POST,
            "$export",
            Some(&body),
            &[("prefer", "respond-async")],
        )
        .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
    let done = wait(&server, None, reply.header("content-location").unwrap()).await;
    assert_eq!(
        done.body["output"].as_array().unwrap().len(),
        1,
        "{}",
        done.text
    );
    assert_eq!(done.body["output"][0]["count"], 1);
}

async fn clinicians_and_patients_export_what_they_may_see(backend: Backend) {
    let server = start(backend).await;
    let clinician = server.token("clinician", "user/*.rs", None, Some("org-a"));
    let own = export(&server, Some(&clinician), "$export").await;
    assert_eq!(own.ids("Patient"), ["pat-a", "pat-b"]);
    assert_eq!(own.ids("Observation"), ["hr-a", "hr-b", "rr-a", "rr-b"]);
    assert_eq!(own.ids("Device"), ["dev-a", "dev-b"]);
    assert!(
        !own.text().contains("pat-c") && !own.text().contains("Exportdachs"),
        "nothing of clinic B's patient"
    );
    assert!(own.types().iter().all(|t| t != "AuditEvent"));
    let compartments = export(&server, Some(&clinician), "Patient/$export").await;
    assert_eq!(
        compartments.ids("Observation"),
        ["hr-a", "hr-b", "rr-a", "rr-b"]
    );
    assert!(
        compartments.ids("Organization").is_empty(),
        "Organizations are not in the Patient compartment"
    );
    // A type the role cannot search: 403, as for a search.
    let reply = kickoff(&server, Some(&clinician), "$export?_type=AuditEvent").await;
    reply.assert_outcome(StatusCode::FORBIDDEN, "forbidden", "AuditEvent");

    // A patient's token: its own compartment, whatever the level.
    let patient = server.token("patient", "patient/*.rs", Some("pat-a"), None);
    for path in ["Patient/$export", "$export"] {
        let mine = export(&server, Some(&patient), path).await;
        assert_eq!(mine.ids("Patient"), ["pat-a"], "{path}");
        assert_eq!(mine.ids("Observation"), ["hr-a", "rr-a"], "{path}");
        assert_eq!(mine.ids("Device"), ["dev-a"], "{path}");
        assert_eq!(mine.ids("Coverage"), ["cov-a"], "{path}");
        assert!(
            !mine.text().contains("pat-b") && !mine.text().contains("pat-c"),
            "{path}"
        );
    }
    // A patient/ scope confines any role to the token patient's compartment.
    let narrowed = server.token("clinician", "patient/*.rs", Some("pat-b"), Some("org-a"));
    let theirs = export(&server, Some(&narrowed), "Patient/$export").await;
    assert_eq!(theirs.ids("Observation"), ["hr-b", "rr-b"]);
}

async fn pseudonymous_views_and_consents_apply(backend: Backend) {
    let server = start(backend).await;
    let crm = server.token("crm", "user/*.rs", None, None);
    let seen = export(&server, Some(&crm), "$export").await;
    assert_eq!(
        seen.types(),
        ["Device", "Observation", "Organization", "Patient"]
    );
    assert_eq!(seen.ids("Patient"), ["pat-a", "pat-b", "pat-c"]);
    let text = seen.text();
    for phi in PHI {
        assert!(!text.contains(phi), "{phi} in the CRM's export");
    }
    for (_, _, lines) in seen.files.iter().filter(|(t, _, _)| t == "Patient") {
        for patient in lines {
            assert!(
                patient["meta"]["security"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|l| l["code"] == "PSEUDED"),
                "{patient}"
            );
            assert!(
                patient["identifier"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|i| i["system"] == "urn:fhirvault:pseudonym"),
                "{patient}"
            );
        }
    }
    // Searching people by name is refused in a filter as in a search.
    let reply = kickoff(
        &server,
        Some(&crm),
        &format!(
            "$export?{}",
            query(&[
                ("_type", "Patient"),
                ("_typeFilter", "Patient?family=Exportwolf")
            ])
        ),
    )
    .await;
    reply.assert_outcome(StatusCode::FORBIDDEN, "forbidden", "pseudonymised");

    // Patient a denies the CRM, patient b its insurer.
    let consent = |patient: &str, actor: Value| {
        json!({"resourceType": "Consent", "status": "active",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": format!("Patient/{patient}")}, "dateTime": "2026-01-01T00:00:00Z",
        "provision": {"type": "deny", "actor": [{"role": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP"}]},
            "reference": actor}]}})
    };
    server
        .create(&consent(
            "pat-a",
            json!({"identifier": {"system": "urn:fhirvault:role", "value": "crm"}}),
        ))
        .await;
    server
        .create(&consent(
            "pat-b",
            json!({"reference": "Organization/ins-1"}),
        ))
        .await;
    let seen = export(&server, Some(&crm), "$export").await;
    assert_eq!(seen.ids("Patient"), ["pat-b", "pat-c"]);
    assert_eq!(
        seen.ids("Observation"),
        ["hr-b", "hr-c", "obs-loose", "rr-b", "rr-c"]
    );
    assert_eq!(seen.ids("Device"), ["dev-b", "dev-c"]);
    let insurer = server.token("insurer", "user/*.rs", None, Some("ins-1"));
    let paid = export(&server, Some(&insurer), "$export").await;
    assert_eq!(paid.ids("Coverage"), ["cov-a"]);
    assert_eq!(paid.ids("Patient"), ["pat-a"]);
    let text = paid.text();
    assert!(
        !text.contains("Exportwolf") && !text.contains("Export-Notiz-Geheim"),
        "the insurer's view is pseudonymised"
    );
}

async fn jobs_belong_to_their_caller(backend: Backend) {
    let server = start(backend).await;
    let clinician = server.token("clinician", "user/*.rs", None, Some("org-a"));
    let done = export(&server, Some(&clinician), "$export?_type=Patient").await;
    let file = done.files[0].1.clone();
    // The same user and client with a new token follows its export…
    let again = server.token("clinician", "user/*.rs", None, Some("org-a"));
    assert_eq!(
        request(&server, Some(&again), Method::GET, &done.status_url, &[])
            .await
            .status,
        StatusCode::OK
    );
    // …anyone else finds nothing there: another user of the same clinic, another clinic, the
    // CRM, an admin.
    let colleague = server
        .issuer
        .issue(&IssueRequest {
            role: "clinician".into(),
            scope: "user/*.rs".into(),
            patient: None,
            org: Some("org-a".into()),
            subject: Some("dr-other".into()),
            purpose: None,
            ttl: Duration::from_secs(600),
        })
        .expect("token");
    let others = [
        colleague,
        server.token("clinician", "user/*.rs", None, Some("org-b")),
        server.token("crm", "user/*.rs", None, None),
    ];
    for other in others.iter().map(String::as_str).map(Some).chain([None]) {
        request(&server, other, Method::GET, &done.status_url, &[])
            .await
            .assert_outcome(StatusCode::NOT_FOUND, "not-found", "no export job");
        assert_eq!(
            download(&server, other, &file).await.0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            request(&server, other, Method::DELETE, &done.status_url, &[])
                .await
                .status,
            StatusCode::NOT_FOUND
        );
    }
    assert_eq!(
        download(&server, Some(&clinician), &file).await.0,
        StatusCode::OK
    );
    let reply = request(
        &server,
        Some(&clinician),
        Method::GET,
        &format!("{file}x"),
        &[],
    )
    .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);

    // DELETE cancels (or removes) a job and its files.
    let reply = request(
        &server,
        Some(&clinician),
        Method::DELETE,
        &done.status_url,
        &[],
    )
    .await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
    assert_eq!(
        request(
            &server,
            Some(&clinician),
            Method::GET,
            &done.status_url,
            &[]
        )
        .await
        .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        download(&server, Some(&clinician), &file).await.0,
        StatusCode::NOT_FOUND
    );
    let started = kickoff(&server, Some(&clinician), "$export").await;
    let status_url = started.header("content-location").unwrap().to_string();
    let reply = request(&server, Some(&clinician), Method::DELETE, &status_url, &[]).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text);
    assert_eq!(
        request(&server, Some(&clinician), Method::GET, &status_url, &[])
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

async fn bad_kickoffs_are_operation_outcomes(backend: Backend) {
    let server = start(backend).await;
    let reply = server.get("$export").await;
    reply.assert_outcome(StatusCode::BAD_REQUEST, "invalid", "Prefer: respond-async");
    for (path, code, text) in [
        ("$export?_outputFormat=text/csv", "invalid", "_outputFormat"),
        ("$export?_type=Nonsense", "invalid", "Nonsense"),
        ("$export?_type=", "invalid", "_type"),
        (
            "Patient/$export?_type=Organization",
            "invalid",
            "Patient compartment",
        ),
        ("$export?_since=yesterday", "invalid", "_since"),
        (
            "$export?patient=Patient/pat-a",
            "not-supported",
            "`patient`",
        ),
        ("$export?_elements=id", "not-supported", "`_elements`"),
        (
            "$export?includeAssociatedData=LatestProvenanceResources",
            "not-supported",
            "`includeAssociatedData`",
        ),
        ("$export?_typeFilter=Observation", "invalid", "_typeFilter"),
        (
            "$export?_typeFilter=Observation%3F_count%3D5",
            "invalid",
            "_count",
        ),
        (
            "$export?_typeFilter=Observation%3Fdate%3Dnot-a-date",
            "invalid",
            "",
        ),
        (
            "$export?_type=Patient&_typeFilter=Observation%3Fcode%3D1",
            "invalid",
            "_typeFilter",
        ),
        ("Group/g-1/$export", "not-supported", "Group"),
    ] {
        let reply = kickoff(&server, None, path).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{path}: {}",
            reply.text
        );
        reply.assert_outcome(StatusCode::BAD_REQUEST, code, text);
    }
    let reply = request(
        &server,
        None,
        Method::GET,
        "$export",
        &[
            ("prefer", "respond-async"),
            ("accept", "application/fhir+xml"),
        ],
    )
    .await;
    reply.assert_outcome(StatusCode::NOT_ACCEPTABLE, "not-supported", "JSON");
    let reply = server
        .request(
            Method::POST,
            "$export",
            Some(&json!({"resourceType": "Patient"})),
            &[("prefer", "respond-async")],
        )
        .await;
    reply.assert_outcome(StatusCode::BAD_REQUEST, "invalid", "Parameters");
    // An unknown filter parameter: refused under strict handling, reported in `error` otherwise.
    let unknown = format!(
        "$export?{}",
        query(&[
            ("_type", "Observation"),
            ("_typeFilter", "Observation?nonsense=1")
        ])
    );
    let reply = request(
        &server,
        None,
        Method::GET,
        &unknown,
        &[("prefer", "respond-async, handling=strict")],
    )
    .await;
    reply.assert_outcome(StatusCode::BAD_REQUEST, "invalid", "nonsense");
    let lenient = export(&server, None, &unknown).await;
    assert_eq!(
        lenient.ids("Observation").len(),
        7,
        "the unknown parameter was ignored"
    );
    let errors = lenient.manifest["error"].as_array().expect("error");
    assert_eq!(errors.len(), 1, "{}", lenient.manifest);
    assert_eq!(errors[0]["type"], "OperationOutcome");
    let (status, lines) = download(&server, None, errors[0]["url"].as_str().unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(lines[0]["resourceType"], "OperationOutcome");
    assert!(
        lines[0]["issue"][0]["diagnostics"]
            .as_str()
            .unwrap()
            .contains("nonsense"),
        "{}",
        lines[0]
    );
    // Unknown jobs and files.
    server
        .get("$export-status/00000000-0000-0000-0000-000000000000")
        .await
        .assert_outcome(StatusCode::NOT_FOUND, "not-found", "no export job");
    assert_eq!(
        download(
            &server,
            None,
            &format!("{}/$export-file/nope/0", server.base)
        )
        .await
        .0,
        StatusCode::NOT_FOUND
    );
    // The CapabilityStatement declares both levels.
    let capability = server.get("metadata").await.body;
    let system: Vec<&Value> = capability["rest"][0]["operation"]
        .as_array()
        .unwrap()
        .iter()
        .collect();
    assert!(
        system.iter().any(|o| o["name"] == "export"
            && o["definition"] == "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export"),
        "{system:?}"
    );
    let patient = capability["rest"][0]["resource"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["type"] == "Patient")
        .unwrap();
    assert!(
        patient["operation"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["definition"]
                == "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/patient-export")
    );
}

async fn kickoffs_and_downloads_are_audited(backend: Backend) {
    let server = start(backend).await;
    let clinician = server.token("clinician", "user/*.rs", None, Some("org-a"));
    let path = format!(
        "Patient/$export?{}",
        query(&[
            ("_type", "Patient,Observation"),
            ("_typeFilter", "Observation?code=http://loinc.org|8867-4")
        ])
    );
    let done = export(&server, Some(&clinician), &path).await;
    assert_eq!(done.files.len(), 2);
    let job = done.status_url.rsplit('/').next().unwrap().to_string();
    let auditor = server.token("auditor", "user/*.rs", None, None);
    let reply = request(
        &server,
        Some(&auditor),
        Method::GET,
        "AuditEvent?type=http://dicom.nema.org/resources/ontology/DCM|110106&_count=100",
        &[],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let events: Vec<Value> = reply.body["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"].clone())
        .collect();
    assert_eq!(
        events.len(),
        3,
        "the kick-off and two downloads: {events:#?}"
    );
    for event in &events {
        assert_eq!(event["subtype"][0]["code"], "disclose");
        assert_eq!(event["outcome"], "0");
        assert_eq!(
            event["agent"][0]["role"][0]["coding"][0]["code"],
            "clinician"
        );
        let entities = event["entity"].as_array().unwrap();
        assert!(
            entities
                .iter()
                .any(|e| e["what"]["identifier"]["value"] == job.as_str()
                    && e["role"]["code"] == "20"),
            "{event}"
        );
    }
    let kicked = events
        .iter()
        .find(|e| {
            e["entity"]
                .as_array()
                .unwrap()
                .iter()
                .any(|x| x["role"]["code"] == "24")
        })
        .expect("the kick-off");
    let query_entity = kicked["entity"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["role"]["code"] == "24")
        .unwrap();
    let sent = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(query_entity["query"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert!(
        sent.contains("_typeFilter=Observation%3Fcode%3Dhttp%3A%2F%2Floinc.org%7C8867-4"),
        "{sent}"
    );
    assert_eq!(query_entity["detail"][0]["valueString"], "Patient");
    for (resource_type, url, _) in &done.files {
        let downloaded = events
            .iter()
            .find(|e| {
                e["entity"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|x| x["what"]["identifier"]["value"] == url.as_str())
            })
            .unwrap_or_else(|| panic!("no record of the download of {url}"));
        let entities = downloaded["entity"].as_array().unwrap();
        let file = entities.iter().find(|x| x["role"]["code"] == "3").unwrap();
        assert_eq!(file["detail"][0]["valueString"], resource_type.as_str());
        assert_eq!(file["detail"][1]["valueString"], "2");
        let mut patients: Vec<&str> = entities
            .iter()
            .filter(|x| x["role"]["code"] == "1")
            .filter_map(|x| x["what"]["reference"].as_str())
            .collect();
        patients.sort();
        assert_eq!(patients, ["Patient/pat-a", "Patient/pat-b"], "{downloaded}");
    }
    // Refused kick-offs and status requests are on record too.
    kickoff(&server, Some(&clinician), "$export?_type=AuditEvent").await;
    let reply = request(
        &server,
        Some(&auditor),
        Method::GET,
        "AuditEvent?type=http://dicom.nema.org/resources/ontology/DCM|110106&outcome=4",
        &[],
    )
    .await;
    assert_eq!(
        reply.body["entry"].as_array().map_or(0, Vec::len),
        1,
        "{}",
        reply.text
    );
    let reply = request(
        &server,
        Some(&auditor),
        Method::GET,
        "AuditEvent?subtype=operation&agent-role=urn:fhirvault:role|clinician",
        &[],
    )
    .await;
    assert!(
        reply.body["entry"]
            .as_array()
            .is_some_and(|e| !e.is_empty()),
        "the status requests: {}",
        reply.text
    );
}

/// The output is sealed: a raw dump of the database after exports (the files still there, a
/// `_typeFilter` naming a patient in the request) holds none of the exported PHI.
async fn no_phi_in_the_database_after_an_export(backend: Backend) {
    let server = start(backend).await;
    let everything = export(&server, None, "$export").await;
    assert!(
        everything.text().contains("Exportwolf")
            && everything.text().contains("Export-Notiz-Geheim")
    );
    let named = export(
        &server,
        None,
        &format!(
            "$export?{}",
            query(&[
                ("_type", "Patient"),
                ("_typeFilter", "Patient?family=Exportwolf")
            ])
        ),
    )
    .await;
    assert_eq!(named.ids("Patient"), ["pat-a"]);
    let dump = server.raw_database().await;
    assert!(dump.len() > 1000);
    for phi in PHI {
        assert!(
            !dump.contains(phi),
            "{phi:?} in plain text in the {backend:?} database"
        );
        assert!(
            !dump.contains(&phi.to_lowercase()),
            "{phi:?} (normalised) in the {backend:?} database"
        );
    }
}

async fn jobs_expire_and_restarts_fail_running_jobs(backend: Backend) {
    let (dir, database) = fresh_store(backend).await;
    let server = TestServer::start_with(backend, dir, database, |config| {
        config.export.expire_after = Duration::from_secs(1)
    })
    .await;
    fixture(&server).await;
    let done = export(&server, None, "$export?_type=Patient").await;
    let job = done.status_url.rsplit('/').next().unwrap().to_string();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    server.get(&done.status_url).await.assert_outcome(
        StatusCode::NOT_FOUND,
        "not-found",
        "expired",
    );
    assert_eq!(
        download(&server, None, &done.files[0].1).await.0,
        StatusCode::NOT_FOUND
    );
    // The sweeper removes what expired (here called at once rather than waiting for it).
    let service = fhirvault::server::open_service(
        fhirvault::config::Config::for_dir(server.dir.path(), Some(server.database.clone())),
        None,
    )
    .await
    .expect("service");
    assert!(service.remove_expired_exports().await.expect("sweep") >= 1);
    let store = service.store.clone();
    assert_eq!(count(&store, "SELECT COUNT(*) FROM export_chunks").await, 0);

    // A job the server was running when it stopped is failed at the next start, its output gone.
    let another = export(&server, None, "$export?_type=Patient").await;
    let interrupted = another.status_url.rsplit('/').next().unwrap().to_string();
    assert_ne!(interrupted, job);
    let (dir, database) = server.stop().await;
    execute(&store, &format!("UPDATE export_jobs SET status = 'running', expires_at = NULL WHERE id = '{interrupted}'")).await;
    store.close().await;
    let server = TestServer::start_with(backend, dir, database, |_| {}).await;
    // The server answers once its start-up (which fails interrupted jobs) is done.
    assert_eq!(server.get("metadata").await.status, StatusCode::OK);
    let store = fhirvault::store::Store::open(&server.database)
        .await
        .expect("store");
    assert_eq!(
        count(
            &store,
            &format!(
                "SELECT COUNT(*) FROM export_jobs WHERE id = '{interrupted}' AND status = 'failed'"
            )
        )
        .await,
        1
    );
    assert_eq!(
        count(
            &store,
            &format!("SELECT COUNT(*) FROM export_files WHERE job_id = '{interrupted}'")
        )
        .await,
        0
    );
    // Its owner (the admin, at this server's new address) is told why, with a 500.
    let fresh = kickoff(&server, None, "$export?_type=Organization").await;
    let fresh = fresh
        .header("content-location")
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();
    execute(&store, &format!("UPDATE export_jobs SET owner = (SELECT owner FROM export_jobs WHERE id = '{fresh}') WHERE id = '{interrupted}'")).await;
    let reply = server.get(&format!("$export-status/{interrupted}")).await;
    reply.assert_outcome(
        StatusCode::INTERNAL_SERVER_ERROR,
        "exception",
        "interrupted because the server stopped",
    );
    store.close().await;
}

async fn count(store: &fhirvault::store::Store, sql: &str) -> i64 {
    use sqlx::Row;
    let mut conn = store.reader().await.expect("connection");
    sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
        .fetch_one(&mut *conn)
        .await
        .expect("query")
        .try_get(0)
        .expect("count")
}

async fn execute(store: &fhirvault::store::Store, sql: &str) {
    let mut tx = store.begin().await.expect("transaction");
    sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
        .execute(&mut *tx)
        .await
        .expect("statement");
    tx.commit().await.expect("commit");
}

both_backends!(
    admin_exports_what_it_may_search,
    clinicians_and_patients_export_what_they_may_see,
    pseudonymous_views_and_consents_apply,
    jobs_belong_to_their_caller,
    bad_kickoffs_are_operation_outcomes,
    kickoffs_and_downloads_are_audited,
    no_phi_in_the_database_after_an_export,
    jobs_expire_and_restarts_fail_running_jobs,
);
