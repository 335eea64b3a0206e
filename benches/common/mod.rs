//! Fixtures shared by the benchmarks: a realistic Holter heart-rate Observation and a Patient
//! with the PHI elements that get blind-indexed (names, identifiers, telecom, address, birth date).
//!
//! Lives in `benches/common/` so cargo does not take it for a bench target of its own.

#![allow(dead_code)]

use serde_json::{Value, json};

/// The spec definitions the server loads.
pub const DEFINITIONS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fhir-resources");

/// A heart-rate sample as a Holter analyser sends it: LOINC and MDC codes, vital-signs category,
/// subject and device references, an effective time and a UCUM quantity.
pub fn holter_observation(patient_id: &str) -> Value {
    json!({
        "resourceType": "Observation",
        "status": "final",
        "category": [{
            "coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                "code": "vital-signs",
                "display": "Vital Signs"
            }]
        }],
        "code": {
            "coding": [
                {"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"},
                {"system": "urn:iso:std:iso:11073:10101", "code": "147842", "display": "MDC_ECG_HEART_RATE"}
            ],
            "text": "Heart rate"
        },
        "subject": {"reference": format!("Patient/{patient_id}")},
        "device": {"reference": "Device/holter-hx7-000417"},
        "effectiveDateTime": "2026-03-05T10:00:00+01:00",
        "valueQuantity": {"value": 72, "unit": "/min", "system": "http://unitsofmeasure.org", "code": "/min"}
    })
}

/// The same sample with codes only: no `display` and no `code.text`. Text of token parameters is
/// indexed as blind prefix tokens (one row per prefix), so this shows what that text costs.
pub fn holter_observation_codes_only(patient_id: &str) -> Value {
    let mut observation = holter_observation(patient_id);
    observation["category"][0]["coding"][0]
        .as_object_mut()
        .expect("coding")
        .remove("display");
    let code = observation["code"].as_object_mut().expect("code");
    code.remove("text");
    for coding in code["coding"].as_array_mut().expect("codings") {
        coding.as_object_mut().expect("coding").remove("display");
    }
    observation
}

/// A Patient with two identifiers, two names, phone and e-mail, and a postal address.
pub fn patient() -> Value {
    json!({
        "resourceType": "Patient",
        "identifier": [
            {
                "use": "official",
                "system": "urn:oid:1.2.40.0.10.1.4.3.1",
                "value": "1234010180"
            },
            {
                "use": "usual",
                "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]},
                "system": "urn:oid:1.2.40.0.34.99.4613.3",
                "value": "MRN-0042-7781"
            }
        ],
        "active": true,
        "name": [
            {"use": "official", "family": "Müller-Lüdenscheidt", "given": ["Maria", "Theresia"], "prefix": ["Dr."]},
            {"use": "maiden", "family": "Österreicher", "given": ["Maria"]}
        ],
        "telecom": [
            {"system": "phone", "value": "+43 664 1234567", "use": "mobile"},
            {"system": "email", "value": "maria.mueller@example.at", "use": "home"}
        ],
        "gender": "female",
        "birthDate": "1980-01-01",
        "address": [{
            "use": "home",
            "line": ["Mariahilfer Straße 123/4/5"],
            "city": "Wien",
            "postalCode": "1060",
            "country": "AT"
        }]
    })
}

/// One phase of a load benchmark: the same operation from several client tasks at once.
pub struct Phase<T> {
    pub name: &'static str,
    pub clients: usize,
    pub errors: usize,
    pub first_error: Option<String>,
    pub elapsed: std::time::Duration,
    /// Latencies of successful requests, sorted.
    pub latencies: Vec<std::time::Duration>,
    /// What each successful request returned.
    pub results: Vec<T>,
}

impl<T> Phase<T> {
    pub fn ok(&self) -> usize {
        self.latencies.len()
    }

    pub fn rate(&self) -> f64 {
        self.ok() as f64 / self.elapsed.as_secs_f64()
    }

    pub fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let rank = ((p / 100.0) * self.latencies.len() as f64).ceil() as usize;
        self.latencies[rank.clamp(1, self.latencies.len()) - 1].as_secs_f64() * 1000.0
    }

    pub fn max_ms(&self) -> f64 {
        self.latencies
            .last()
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
    }

    /// Add `later`, a later round of the same operation, to this phase: its requests, errors and
    /// time. Alternating rounds of two variants (A B B A …) cancels a drift of the machine's speed
    /// that back-to-back phases would book on one of them.
    pub fn absorb(&mut self, later: Phase<T>) {
        self.errors += later.errors;
        if self.first_error.is_none() {
            self.first_error = later.first_error;
        }
        self.elapsed += later.elapsed;
        self.latencies.extend(later.latencies);
        self.latencies.sort_unstable();
        self.results.extend(later.results);
    }

    /// The timing fields every phase reports, under `label` for its name.
    pub fn timing_json(&self, label: &str) -> serde_json::Map<String, Value> {
        let value = json!({
            label: self.name,
            "clients": self.clients,
            "ok": self.ok(),
            "errors": self.errors,
            "first_error": self.first_error,
            "seconds": round(self.elapsed.as_secs_f64(), 3),
            "per_second": round(self.rate(), 1),
            "p50_ms": round(self.percentile_ms(50.0), 3),
            "p95_ms": round(self.percentile_ms(95.0), 3),
            "p99_ms": round(self.percentile_ms(99.0), 3),
            "max_ms": round(self.max_ms(), 3),
        });
        match value {
            Value::Object(map) => map,
            _ => serde_json::Map::new(),
        }
    }
}

/// `x` rounded to `digits` decimals, or null when it is not a number (no requests succeeded).
pub fn round(x: f64, digits: i32) -> Value {
    if x.is_finite() {
        let f = 10f64.powi(digits);
        json!((x * f).round() / f)
    } else {
        Value::Null
    }
}

/// Run `op(i)` for i in 0..requests from `clients` concurrent tasks, each its own loop, until the
/// requests are used up or `cap` has passed. `op` returns what the request produced, or an error.
pub async fn run_phase<T, F, Fut>(
    name: &'static str,
    clients: usize,
    requests: usize,
    cap: std::time::Duration,
    op: F,
) -> Phase<T>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<T, String>> + Send,
{
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Instant;

    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let deadline = start + cap;
    let mut tasks = Vec::with_capacity(clients);
    for _ in 0..clients {
        let (next, op) = (next.clone(), op.clone());
        tasks.push(tokio::spawn(async move {
            let (mut done, mut errors, mut first_error) = (Vec::new(), 0usize, None);
            while Instant::now() < deadline {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= requests {
                    break;
                }
                let t = Instant::now();
                match op(i).await {
                    Ok(result) => done.push((t.elapsed(), result)),
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert(e);
                    }
                }
            }
            (done, errors, first_error)
        }));
    }
    let mut phase = Phase {
        name,
        clients,
        errors: 0,
        first_error: None,
        elapsed: std::time::Duration::ZERO,
        latencies: Vec::new(),
        results: Vec::new(),
    };
    for task in tasks {
        let (done, errors, first_error) = task.await.expect("client task");
        for (latency, result) in done {
            phase.latencies.push(latency);
            phase.results.push(result);
        }
        phase.errors += errors;
        if phase.first_error.is_none() {
            phase.first_error = first_error;
        }
    }
    phase.elapsed = start.elapsed();
    phase.latencies.sort_unstable();
    phase
}

/// Run variants of one operation (`op(variant, i)`, variant in 0..names.len()) with the same
/// `requests` each, in `rounds` rounds whose order alternates (A B, B A, A B, …), and merge each
/// variant's rounds into one phase. Request `i` has the same number in every variant, so variants
/// that derive their parameters from it do the same work. `cap` is the time cap per variant,
/// shared out over the rounds.
pub async fn run_alternating<T, F, Fut>(
    names: &[&'static str],
    clients: usize,
    requests: usize,
    rounds: usize,
    cap: std::time::Duration,
    op: F,
) -> Vec<Phase<T>>
where
    T: Send + 'static,
    F: Fn(usize, usize) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<T, String>> + Send,
{
    let rounds = rounds.max(1);
    let per_round = requests.div_ceil(rounds);
    let cap = (cap / rounds as u32).max(std::time::Duration::from_secs(1));
    let mut phases: Vec<Option<Phase<T>>> = names.iter().map(|_| None).collect();
    for round in 0..rounds {
        let offset = round * per_round;
        let count = per_round.min(requests.saturating_sub(offset));
        if count == 0 {
            break;
        }
        let order: Vec<usize> = if round % 2 == 0 {
            (0..names.len()).collect()
        } else {
            (0..names.len()).rev().collect()
        };
        for v in order {
            let op = op.clone();
            let phase = run_phase(names[v], clients, count, cap, move |i| op(v, offset + i)).await;
            match &mut phases[v] {
                Some(merged) => merged.absorb(phase),
                slot => *slot = Some(phase),
            }
        }
    }
    phases.into_iter().flatten().collect()
}

/// Where cargo builds (`CARGO_TARGET_DIR`, else `target/`): the benches write their JSON there.
pub fn target_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"))
}

/// OBX per message: every measure of the Holter code table, plus heart-rate samples to make 25.
pub const OBX_PER_MESSAGE: usize = 25;

/// A Holter analyser's result message for patient `patient`: one study, 25 numeric OBX.
pub fn holter_message(
    sequence: usize,
    patient: usize,
    codes: &fhirvault::hl7v2::codes::CodeTable,
) -> String {
    let eui = format!("00{:014X}", 0x1000 + patient);
    let mut segments = vec![
        format!(
            "MSH|^~\\&|HOLTER-ANALYSER|CARDIO WIEN|FHIRVAULT|HOLTER-CO|20260314123000+0100||ORU^R01^ORU_R01|BENCH-{sequence:08}|P|2.6"
        ),
        format!(
            "PID|1||{:010}^^^SVNR^SS||Patient{patient}^Bench||19800101|F",
            5_000_000_000u64 + patient as u64
        ),
        format!(
            "OBR|1||FIL-{sequence}|18754-2^Holter study^LN|||20260313080000+0100|20260314080000+0100|||||||||||||||||F"
        ),
    ];
    let mut obx = 0;
    let measures = codes.measures().iter().filter(|m| m.ucum.is_some()).cycle();
    for measure in measures.take(OBX_PER_MESSAGE) {
        obx += 1;
        let unit = measure.ucum.as_deref().unwrap_or_default();
        segments.push(format!(
            "OBX|{obx}|NM|{key}^{key}^99HOLTER|1.1.{obx}.1|{value}|{unit}^{unit}^UCUM|||||F|||20260314080000+0100||||{eui}^^{eui}^EUI-64",
            key = measure.key,
            value = 40 + (sequence * 7 + obx) % 100,
        ));
    }
    segments.join("\r") + "\r"
}

/// A token for `role` signed by the server's key ring, as `fhirvault token issue` makes them.
pub fn token(
    service: &fhirvault::service::Service,
    role: &str,
    scope: &str,
    org: Option<&str>,
) -> String {
    let issuer = fhirvault::auth::token::TokenIssuer::from_config(
        &service.config.auth,
        &service.keys.current(),
    )
    .expect("token issuer");
    let request = fhirvault::auth::token::IssueRequest {
        role: role.to_string(),
        scope: scope.to_string(),
        patient: None,
        org: org.map(str::to_string),
        subject: None,
        purpose: None,
        ttl: std::time::Duration::from_secs(24 * 3600),
    };
    issuer.issue(&request).expect("token")
}

/// An HTTP client that sends `token` with every request.
pub fn client_with(token: &str, timeout: std::time::Duration) -> reqwest::Client {
    client_with_headers(token, &[], timeout)
}

/// An HTTP client that sends `token` and `extra` headers (`X-Purpose-Of-Use`, …) with every request.
pub fn client_with_headers(
    token: &str,
    extra: &[(&'static str, &str)],
    timeout: std::time::Duration,
) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {token}").parse().expect("header"),
    );
    for (name, value) in extra {
        headers.insert(*name, value.parse().expect("header value"));
    }
    reqwest::Client::builder()
        .timeout(timeout)
        .default_headers(headers)
        .build()
        .expect("http client")
}

/// The same service with the audit trail off (`Config.audit.enabled = false`, a switch the
/// library offers for benchmarks only). It shares the store, the writer, the keys and the caches
/// with `service`, so serving both side by side compares the trail and nothing else.
pub fn without_audit(service: &fhirvault::service::Service) -> fhirvault::service::Service {
    let mut config = (*service.config).clone();
    config.audit.enabled = false;
    fhirvault::service::Service {
        config: std::sync::Arc::new(config),
        ..service.clone()
    }
}

/// `service` with the read journal (`audit.read_records = "journal"`): its reads' AuditEvents are
/// journaled and drained in batches instead of committed one small batch at a time. It shares the
/// store, the writer and the keys with `service`; the journal is its own (started by `serve`).
pub fn with_read_journal(service: &fhirvault::service::Service) -> fhirvault::service::Service {
    let mut config = (*service.config).clone();
    config.audit.read_records = fhirvault::config::ReadRecords::Journal;
    fhirvault::service::Service {
        config: std::sync::Arc::new(config),
        read_journal: std::sync::Arc::default(),
        ..service.clone()
    }
}

/// Serve `service` over plain HTTP on `listener` in a task of its own, until the returned sender
/// fires (or is dropped). The server closes the store when it stops: stop every server that
/// shares it together, at the end.
pub fn spawn_server(
    listener: tokio::net::TcpListener,
    service: fhirvault::service::Service,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        fhirvault::server::serve(listener, service, async {
            let _ = stopped.await;
        })
        .await
        .expect("server runs");
    });
    (stop, task)
}

/// Stop every server [`spawn_server`] started (all asked first, then each awaited).
pub async fn stop_servers(
    servers: impl IntoIterator<
        Item = (
            tokio::sync::oneshot::Sender<()>,
            tokio::task::JoinHandle<()>,
        ),
    >,
) {
    let stopping: Vec<_> = servers
        .into_iter()
        .map(|(stop, server)| {
            let _ = stop.send(());
            server
        })
        .collect();
    for server in stopping {
        let _ = server.await;
    }
}
