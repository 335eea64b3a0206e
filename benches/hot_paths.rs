//! Criterion benchmarks of the write hot path, step by step and whole:
//!
//! parse (JSON bytes → `Value`) → validate (schema + required bindings) → index rows (FHIRPath
//! extraction, blind tokens for PHI) → serialize → seal (AES-256-GCM bound to the row) → and the
//! whole `Service::create` into a real SQLite file (WAL, `synchronous = FULL`) in a temp dir.
//!
//! Run: `cargo bench --bench hot_paths` (about 1½ minutes). Filter: `cargo bench --bench hot_paths -- seal`.
//! See benches/README.md for what each figure means and the numbers measured.

mod common;

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use fhirvault::config::Config;
use fhirvault::crypto::{Aad, KeyRing};
use fhirvault::search::index_rows::rows_for;
use fhirvault::store::index::IndexRow;
use serde_json::Value;

use common::{DEFINITIONS, holter_observation, holter_observation_codes_only, patient};

fn keys() -> KeyRing {
    KeyRing::from_master_secret([7; 32])
}

/// (name, resource type, the resource as a client sends it, as bytes).
fn fixtures() -> Vec<(&'static str, &'static str, Value, Vec<u8>)> {
    let observation = holter_observation("f001");
    let codes_only = holter_observation_codes_only("f001");
    let patient = patient();
    vec![
        (
            "observation",
            "Observation",
            observation.clone(),
            serde_json::to_vec(&observation).expect("json"),
        ),
        (
            "observation_codes_only",
            "Observation",
            codes_only.clone(),
            serde_json::to_vec(&codes_only).expect("json"),
        ),
        (
            "patient",
            "Patient",
            patient.clone(),
            serde_json::to_vec(&patient).expect("json"),
        ),
    ]
}

fn steps(c: &mut Criterion) {
    let (validator, registry) =
        fhirvault::server::load_definitions(Path::new(DEFINITIONS)).expect("definitions load");
    let keys = keys();
    let fixtures = fixtures();
    for (name, _, value, _) in &fixtures {
        let issues = validator.validate(value);
        assert!(
            !issues.iter().any(|i| i.is_error()),
            "the {name} fixture must be valid: {issues:?}"
        );
    }

    let mut group = c.benchmark_group("parse");
    for (name, _, _, bytes) in &fixtures {
        group.bench_function(*name, |b| {
            b.iter(|| serde_json::from_slice::<Value>(black_box(bytes)).expect("json"))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("validate");
    for (name, _, value, _) in &fixtures {
        group.bench_function(*name, |b| b.iter(|| validator.validate(black_box(value))));
    }
    group.finish();

    let mut group = c.benchmark_group("index_rows");
    for (name, resource_type, value, _) in &fixtures {
        let rows = rows_for(&registry, &keys, resource_type, value);
        assert!(!rows.is_empty(), "{name} yields index rows");
        let mut per_table = std::collections::BTreeMap::<&str, usize>::new();
        let mut blind_params = std::collections::BTreeMap::<&str, usize>::new();
        for row in &rows {
            if let IndexRow::Blind { param, .. } = row {
                *blind_params.entry(param.as_str()).or_default() += 1;
            }
            *per_table
                .entry(row.table().trim_start_matches("search_"))
                .or_default() += 1;
        }
        eprintln!(
            "{name}: {} index rows {per_table:?}; blind rows by parameter {blind_params:?}",
            rows.len()
        );
        group.bench_function(*name, |b| {
            b.iter(|| rows_for(&registry, &keys, resource_type, black_box(value)))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("serialize");
    for (name, _, value, _) in &fixtures {
        group.bench_function(*name, |b| {
            b.iter(|| serde_json::to_vec(black_box(value)).expect("json"))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("seal");
    for (name, resource_type, _, bytes) in &fixtures {
        let aad = Aad::Resource {
            resource_type,
            id: "0196f3b2-5c1e-7a3d-9e4f-1a2b3c4d5e6f",
            version: 1,
        };
        group.bench_function(*name, |b| {
            b.iter(|| keys.seal(black_box(&aad), black_box(bytes)).expect("seal"))
        });
    }
    group.finish();

    // Every CPU step of a create together, without the database: what a create costs before the
    // writer lock is taken (validation) and while it is held (rows, serialize, seal).
    let mut group = c.benchmark_group("cpu_total");
    for (name, resource_type, _, bytes) in &fixtures {
        group.bench_function(*name, |b| {
            b.iter(|| {
                let value: Value = serde_json::from_slice(black_box(bytes)).expect("json");
                let issues = validator.validate(&value);
                let rows = rows_for(&registry, &keys, resource_type, &value);
                let plain = serde_json::to_vec(&value).expect("json");
                let aad = Aad::Resource {
                    resource_type,
                    id: "0196f3b2-5c1e-7a3d-9e4f-1a2b3c4d5e6f",
                    version: 1,
                };
                let sealed = keys.seal(&aad, &plain).expect("seal");
                black_box((issues, rows, sealed))
            })
        });
    }
    group.finish();
}

/// A runtime like the server's on these machines: two workers.
fn two_workers() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// A service on a new SQLite database in a temp dir, which lives as long as the returned guard.
/// On the same disk as the checkout here (not tmpfs), so a commit's fsync is real.
fn sqlite_service(
    runtime: &tokio::runtime::Runtime,
) -> (tempfile::TempDir, fhirvault::service::Service) {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = Config::for_dir(dir.path(), None);
    let service = runtime
        .block_on(fhirvault::server::open_service(config, Some(keys())))
        .expect("service opens");
    (dir, service)
}

/// The whole create through the service into SQLite: validation, stamping, pseudonym (Patient),
/// index rows, sealing, the version/head/index INSERTs and the fsync'd commit.
fn create(c: &mut Criterion) {
    let runtime = two_workers();
    let (_dir, service) = sqlite_service(&runtime);

    let mut group = c.benchmark_group("create_sqlite");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));
    for (name, resource_type, value, _) in fixtures() {
        group.bench_function(name, |b| {
            b.iter(|| {
                runtime
                    .block_on(service.create(
                        &fhirvault::auth::Caller::server_shared(),
                        resource_type,
                        value.clone(),
                        None,
                    ))
                    .expect("create")
            })
        });
    }
    group.finish();

    // 32 creates at once, as 32 clients would send them: what the group committer makes of a
    // full queue (one iteration = 32 creates; divide by 32 for the cost of one).
    let mut group = c.benchmark_group("create_sqlite_32_concurrent");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));
    for (name, resource_type, value, _) in fixtures() {
        group.bench_function(name, |b| {
            b.iter(|| {
                runtime.block_on(async {
                    let creates = (0..32).map(|_| {
                        let (service, value) = (service.clone(), value.clone());
                        tokio::spawn(async move {
                            service
                                .create(
                                    &fhirvault::auth::Caller::server_shared(),
                                    resource_type,
                                    value,
                                    None,
                                )
                                .await
                                .map(|_| ())
                        })
                    });
                    for create in futures::future::join_all(creates).await {
                        create.expect("task").expect("create");
                    }
                })
            })
        });
    }
    group.finish();
    runtime.block_on(service.store.close());
}

/// One Holter ORU^R01 (25 OBX) through the CPU side of ingestion, step by step: parse, map, plan
/// (ids, references, Provenance), validate every resource, prepare every version (index rows,
/// pseudonym, seal). Patients and devices count as new, as on a first message.
fn hl7v2(c: &mut Criterion) {
    use fhirvault::hl7v2::codes::CodeTable;
    use fhirvault::hl7v2::er7::Message;
    use fhirvault::hl7v2::map::{MapContext, map_message};
    use fhirvault::hl7v2::plan::{GroupMatches, Match, Resolved, Sender, criteria, plan};

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (_dir, service) = sqlite_service(&runtime);
    let codes = CodeTable::load().expect("code tables");
    let text = common::holter_message(1, 1, &codes);
    let context = MapContext {
        codes: &codes,
        config: &service.config.hl7v2,
    };
    let message = Message::parse(text.as_bytes()).expect("parses");
    let mapped = map_message(&message, &context).expect("maps");
    let matches: Vec<GroupMatches> = criteria(&mapped)
        .into_iter()
        .map(|(patient, devices)| GroupMatches {
            patient: patient.map(|criteria| Match {
                resource_type: "Patient",
                criteria,
                resolved: Resolved::New("p1".into()),
            }),
            patient_through_device: None,
            devices: devices
                .into_iter()
                .map(|criteria| Match {
                    resource_type: "Device",
                    criteria,
                    resolved: Resolved::New("d1".into()),
                })
                .collect(),
        })
        .collect();
    let sender = Sender {
        sender: "HOLTER-ANALYSER|CARDIO WIEN",
        control_id: "BENCH",
        owner: None,
    };
    let planned = plan(&mapped, &matches, &sender);
    println!("hl7v2: one message plans {} resources", planned.len());
    if let Some(observation) = planned.iter().find(|p| p.resource_type == "Observation") {
        let rows = rows_for(&service.registry, &keys(), "Observation", &observation.body);
        let mut by_param: std::collections::BTreeMap<String, usize> =
            std::collections::BTreeMap::new();
        for row in &rows {
            let param = match row {
                IndexRow::Token { param, .. }
                | IndexRow::String { param, .. }
                | IndexRow::Reference { param, .. } => param,
                IndexRow::Date { param, .. }
                | IndexRow::Number { param, .. }
                | IndexRow::Uri { param, .. } => param,
                IndexRow::Blind { param, .. } => param,
                // Only Consents have these; composite codings are shared entries, not rows.
                IndexRow::Consent(_) | IndexRow::CompositeCode { .. } => continue,
            };
            *by_param
                .entry(format!("{}:{}", row.table(), param.replace('\u{1f}', "/")))
                .or_default() += 1;
        }
        println!(
            "hl7v2: a Holter Observation has {} index rows: {by_param:?}",
            rows.len()
        );
    }

    let mut group = c.benchmark_group("hl7v2_message");
    group.bench_function("parse", |b| {
        b.iter(|| Message::parse(black_box(text.as_bytes())).expect("parses"))
    });
    group.bench_function("map", |b| {
        b.iter(|| map_message(black_box(&message), &context).expect("maps"))
    });
    group.bench_function("plan", |b| {
        b.iter(|| plan(black_box(&mapped), &matches, &sender))
    });
    group.bench_function("validate_all", |b| {
        b.iter(|| {
            for p in &planned {
                service
                    .check_resource(p.resource_type, black_box(&p.body))
                    .expect("valid");
            }
        })
    });
    group.bench_function("prepare_all", |b| {
        b.iter(|| {
            for p in &planned {
                service
                    .prepare_version(p.resource_type, &p.id, p.body.clone(), None, "POST", None)
                    .expect("prepared");
            }
        })
    });
    group.finish();
}

/// What authorization costs per request outside the query: verifying the bearer token (one
/// ES256 signature check and the claim checks) and turning it into a caller.
fn authorization(c: &mut Criterion) {
    let ring = keys();
    let config = fhirvault::config::AuthConfig::for_base_url("http://127.0.0.1:8080/fhir");
    let issuer = fhirvault::auth::token::TokenIssuer::from_config(&config, &ring).expect("issuer");
    let verifier =
        fhirvault::auth::token::TokenVerifier::from_config(&config, &ring).expect("verifier");
    let request = fhirvault::auth::token::IssueRequest {
        role: "clinician".into(),
        scope: "user/*.cruds patient/Observation.rs?category=vital-signs".into(),
        patient: None,
        org: Some("org-a".into()),
        subject: None,
        purpose: None,
        ttl: Duration::from_secs(3600),
    };
    let token = issuer.issue(&request).expect("token");
    let now = chrono::Utc::now().timestamp();
    let mut group = c.benchmark_group("authorization");
    group.bench_function("token_verify", |b| {
        b.iter(|| verifier.verify(black_box(&token), now).expect("valid"))
    });
    group.bench_function("token_to_caller", |b| {
        b.iter(|| {
            let claims = verifier.verify(black_box(&token), now).expect("valid");
            fhirvault::api::authenticate::caller_from_claims(claims).expect("caller")
        })
    });
    group.finish();
}

/// What the access rule costs on a read, without HTTP: `Service::read` of one Observation by an
/// admin (no rule) and by the clinician of the organisation that manages its patient (the rule
/// and the consent condition in the statement, planned at the first read and reused after it:
/// `service::read_plans`), against a small SQLite database; and the clinician's statement being
/// planned (`plan_read_clinician`: parse `_id`, compile the rule into SQL, CPU only), which is
/// what the reuse saves per read.
fn authorized_read(c: &mut Criterion) {
    use fhirvault::auth::{Caller, Permission};
    use std::sync::Arc;
    let runtime = two_workers();
    let (_dir, service) = sqlite_service(&runtime);
    let server = Caller::server_shared();
    let mut managed = patient();
    managed["managingOrganization"] = serde_json::json!({"reference": "Organization/clinic"});
    let patient_id = runtime
        .block_on(service.create(&server, "Patient", managed, None))
        .expect("patient")
        .stored
        .id;
    let observation_id = runtime
        .block_on(service.create(
            &server,
            "Observation",
            holter_observation(&patient_id),
            None,
        ))
        .expect("observation")
        .stored
        .id;
    let token = common::token(&service, "clinician", "user/*.cruds", Some("clinic"));
    let claims = fhirvault::auth::token::TokenVerifier::from_config(
        &service.config.auth,
        &service.keys.current(),
    )
    .expect("verifier")
    .verify(&token, chrono::Utc::now().timestamp())
    .expect("valid");
    let clinician = Arc::new(
        fhirvault::api::authenticate::caller_from_claims(claims)
            .expect("caller")
            .for_request(
                None,
                None,
                &service.purposes,
                service.config.consent_default,
            )
            .expect("caller for the request"),
    );

    let mut group = c.benchmark_group("authorization");
    for (name, caller) in [("read_admin", &server), ("read_clinician", &clinician)] {
        group.bench_function(name, |b| {
            b.iter(|| {
                runtime
                    .block_on(service.read(caller, "Observation", black_box(&observation_id)))
                    .expect("read")
            })
        });
    }
    group.bench_function("plan_read_clinician", |b| {
        b.iter(|| {
            let pairs = [("_id".to_string(), black_box(observation_id.clone()))];
            let mut request = service
                .parse_search("Observation", &pairs, true)
                .expect("parses");
            request.visibility = fhirvault::auth::access::visibility(
                &clinician,
                &service.registry,
                Permission::Read,
            );
            service.plan_search(&request).expect("plans")
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(1500));
    targets = steps, create, hl7v2, authorization, authorized_read
}
criterion_main!(benches);
