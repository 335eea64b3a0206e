//! Load benchmark: the real server in-process on 127.0.0.1:0, driven over real HTTP.
//!
//! For each client count (default 1, 8, 32 tokio tasks, each with its own request loop) it runs:
//!
//! - `create`: `POST /fhir/Observation` of a Holter heart-rate Observation (expects 201);
//! - `raw`:    one `INSERT INTO bench_raw (id, body)` per transaction of a body sealed with
//!   `KeyRing::seal` from the same stored Observation JSON, through a second sqlx pool to the same
//!   database with the same pool size and durability settings as the server's writer;
//! - `read`:   `GET /fhir/Observation/{id}` of ids created before (expects 200);
//! - `read-c`: the same reads as the clinician of the patient's organisation (the access rule).
//!
//! The audit trail: `create` and `read` run against the server as deployed (an AuditEvent per
//! create, in its transaction, and per read, batched through the group committer), and the same
//! phases against the same service with `Config.audit.enabled = false` on a second listener
//! (`create-off`, `read-off`, `read-c-off`: same store, same data, same writer). The variants run
//! in alternating rounds (on, off, then off, on, …; FHIRVAULT_BENCH_ROUNDS, default 2), and the
//! bench reports on ÷ off.
//!
//! Each phase stops after FHIRVAULT_BENCH_REQUESTS requests (default 3000) or
//! FHIRVAULT_BENCH_SECONDS seconds (default 10), whichever comes first. Prints a table and
//! writes the same figures as JSON to target/bench-load.json.
//!
//! Backend: a temp SQLite file (WAL, synchronous = FULL, as the server configures it) by default;
//! PostgreSQL when FHIRVAULT_BENCH_DATABASE_URL=postgres://… names an (empty) database.
//! Client counts: FHIRVAULT_BENCH_CLIENTS=1,8,32.
//!
//! Run: `cargo bench --bench load`. See benches/README.md.

mod common;

/// The organisation whose clinician reads in the `read-c` phase.
const CLINIC: &str = "bench-clinic";

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{run_alternating, run_phase};

use fhirvault::config::{Config, DatabaseUrl};
use fhirvault::crypto::{Aad, KeyRing};
use serde_json::{Value, json};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor};

struct Settings {
    requests: usize,
    seconds: u64,
    clients: Vec<usize>,
    database_url: Option<String>,
    /// Alternating rounds of the phases that are compared (audit on/off, admin/clinician).
    rounds: usize,
}

impl Settings {
    fn from_env() -> Settings {
        fn var<T: FromStr>(name: &str, default: T) -> T {
            match std::env::var(name) {
                Ok(v) => v
                    .trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("{name}={v:?} is not a valid value")),
                Err(_) => default,
            }
        }
        let clients = std::env::var("FHIRVAULT_BENCH_CLIENTS")
            .unwrap_or_else(|_| "1,8,32".into())
            .split(',')
            .map(|c| {
                c.trim()
                    .parse::<usize>()
                    .expect("FHIRVAULT_BENCH_CLIENTS: comma-separated numbers")
            })
            .filter(|&c| c > 0)
            .collect();
        Settings {
            requests: var("FHIRVAULT_BENCH_REQUESTS", 3000usize),
            seconds: var("FHIRVAULT_BENCH_SECONDS", 10u64),
            clients,
            database_url: std::env::var("FHIRVAULT_BENCH_DATABASE_URL")
                .ok()
                .filter(|u| !u.is_empty()),
            rounds: var("FHIRVAULT_BENCH_ROUNDS", 2usize).max(1),
        }
    }
}

type Phase = common::Phase<Option<String>>;

/// POST one Observation; the new id from the Location header (`…/Observation/{id}/_history/1`).
async fn create(
    client: &reqwest::Client,
    url: &str,
    body: &Arc<Vec<u8>>,
) -> Result<Option<String>, String> {
    let response = client
        .post(url)
        .header("content-type", "application/fhir+json")
        .body(body.as_ref().clone())
        .send()
        .await
        .map_err(|e| format!("create: {e}"))?;
    let status = response.status();
    let location = response
        .headers()
        .get("location")
        .and_then(|l| l.to_str().ok())
        .map(str::to_string);
    let text = response
        .bytes()
        .await
        .map_err(|e| format!("create body: {e}"))?;
    if status != reqwest::StatusCode::CREATED {
        return Err(format!(
            "create: {status}: {}",
            String::from_utf8_lossy(&text[..text.len().min(300)])
        ));
    }
    let id = location
        .as_deref()
        .and_then(|l| l.split("/Observation/").nth(1))
        .and_then(|rest| rest.split('/').next())
        .ok_or("create: no Location header")?;
    Ok(Some(id.to_string()))
}

async fn read(client: &reqwest::Client, url: String) -> Result<Option<String>, String> {
    let response = client
        .get(url)
        .send()
        .await
        .map_err(|e| format!("read: {e}"))?;
    let status = response.status();
    let body = response
        .bytes()
        .await
        .map_err(|e| format!("read body: {e}"))?;
    if status != reqwest::StatusCode::OK || body.is_empty() {
        return Err(format!("read: {status}"));
    }
    Ok(None)
}

/// A pool to the same database with the same shape as the server's writer (src/store/mod.rs):
/// SQLite — `store::sqlite_pool(1)`, the writer's own settings; PostgreSQL — 16 connections.
async fn raw_pool(database: &DatabaseUrl) -> AnyPool {
    match database {
        DatabaseUrl::Sqlite(path) => {
            let options =
                AnyConnectOptions::from_str(&format!("sqlite://{}?mode=rwc", path.display()))
                    .expect("sqlite url");
            // Exactly the server's writer settings.
            fhirvault::store::sqlite_pool(1)
                .connect_with(options)
                .await
                .expect("raw sqlite pool")
        }
        DatabaseUrl::Postgres(url) => AnyPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await
            .expect("raw postgres pool"),
    }
}

async fn raw_insert(
    pool: &AnyPool,
    id: String,
    body: &Arc<Vec<u8>>,
) -> Result<Option<String>, String> {
    let mut tx = pool.begin().await.map_err(|e| format!("raw begin: {e}"))?;
    sqlx::query("INSERT INTO bench_raw (id, body) VALUES ($1, $2)")
        .bind(id)
        .bind(body.as_ref().clone())
        .execute(&mut *tx)
        .await
        .map_err(|e| format!("raw insert: {e}"))?;
    tx.commit().await.map_err(|e| format!("raw commit: {e}"))?;
    Ok(None)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    // `cargo bench` passes `--bench`; this harness has no options of its own.
    let settings = Settings::from_env();
    let cap = Duration::from_secs(settings.seconds);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());

    // The server, as tests/it/common/mod.rs starts it.
    let dir = tempfile::tempdir().expect("temp dir");
    let database = match &settings.database_url {
        Some(url) => DatabaseUrl::parse(url).expect("FHIRVAULT_BENCH_DATABASE_URL"),
        None => DatabaseUrl::Sqlite(dir.path().join("fhirvault.db")),
    };
    let backend = match &database {
        DatabaseUrl::Sqlite(_) => "sqlite",
        DatabaseUrl::Postgres(_) => "postgres",
    };
    let keys = KeyRing::from_master_secret([7; 32]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let mut config = Config::for_dir(dir.path(), Some(database.clone()));
    config.listen = addr;
    config.base_url = format!("http://{addr}/fhir");
    config.auth = fhirvault::config::AuthConfig::for_base_url(&config.base_url);
    // One caller sends everything here: no per-caller limit.
    config.rate_limit_per_second = 0;
    // The `read` phases measure reads whose AuditEvents commit to the database; `read-j` the
    // read journal (the default), on a service of its own (`common::with_read_journal`).
    config.audit.read_records = fhirvault::config::ReadRecords::Database;
    let base = config.base_url.clone();
    let service = fhirvault::server::open_service(config, Some(keys.clone()))
        .await
        .expect("service starts");
    let admin = common::token(&service, "admin", "user/*.cruds", None);
    // The clinic's clinician reads the same Observations through the access rule (its patients'
    // compartments) that admin reads without one: the difference is the cost of authorization.
    let clinician = common::token(&service, "clinician", "user/*.cruds", Some(CLINIC));
    // The same service without the audit trail, on a second listener (same base URL, store and
    // writer): the `-off` phases.
    let quiet_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let quiet_base = format!("http://{}/fhir", quiet_listener.local_addr().expect("addr"));
    // And with the read journal, on a third: the `read-j` phase.
    let journal_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let journal_url = Arc::new(format!(
        "http://{}/fhir/Observation",
        journal_listener.local_addr().expect("addr")
    ));
    let journal_service = common::with_read_journal(&service);
    let servers = [
        common::spawn_server(quiet_listener, common::without_audit(&service)),
        common::spawn_server(journal_listener, journal_service.clone()),
        common::spawn_server(listener, service),
    ];

    let client = common::client_with(&admin, Duration::from_secs(30));
    let clinician_client = common::client_with(&clinician, Duration::from_secs(30));

    // A patient for the observations to point at, and one observation to learn the stored size.
    let patient = client
        .post(format!("{base}/Patient"))
        .header("content-type", "application/fhir+json")
        .body(
            serde_json::to_vec(&{
                let mut patient = common::patient();
                patient["managingOrganization"] =
                    json!({"reference": format!("Organization/{CLINIC}")});
                patient
            })
            .expect("json"),
        )
        .send()
        .await
        .expect("create patient");
    assert_eq!(
        patient.status(),
        reqwest::StatusCode::CREATED,
        "patient create"
    );
    let patient: Value = patient.json().await.expect("patient json");
    let patient_id = patient["id"].as_str().expect("patient id").to_string();
    let observation =
        Arc::new(serde_json::to_vec(&common::holter_observation(&patient_id)).expect("json"));
    let url = Arc::new(format!("{base}/Observation"));
    let quiet_url = Arc::new(format!("{quiet_base}/Observation"));
    // Per audit variant (on, off): where creates and reads go.
    let urls = Arc::new([url.clone(), quiet_url.clone()]);
    let first = create(&client, &url, &observation)
        .await
        .expect("first create")
        .expect("id");
    let stored: Value = client
        .get(format!("{url}/{first}"))
        .send()
        .await
        .expect("read")
        .json()
        .await
        .expect("json");
    let plain = serde_json::to_vec(&stored).expect("json");
    let sealed = Arc::new(
        keys.seal(
            &Aad::Resource {
                resource_type: "Observation",
                id: &first,
                version: 1,
            },
            &plain,
        )
        .expect("seal"),
    );

    // The raw-insert baseline: a scratch table in the same database.
    let raw = raw_pool(&database).await;
    let blob = if backend == "postgres" {
        "BYTEA"
    } else {
        "BLOB"
    };
    raw.execute("DROP TABLE IF EXISTS bench_raw")
        .await
        .expect("drop bench_raw");
    raw.execute(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE bench_raw (id TEXT PRIMARY KEY, body {blob})"
    )))
    .await
    .expect("create bench_raw");

    // Warm-up (not measured): connections, caches, the JIT-free but cold paths, both servers.
    for url in urls.iter() {
        let (client, url, body) = (client.clone(), url.clone(), observation.clone());
        run_phase("warmup", 4, 100, cap, move |_| {
            let (client, url, body) = (client.clone(), url.clone(), body.clone());
            async move { create(&client, &url, &body).await }
        })
        .await;
    }

    let date = chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string();
    println!();
    println!(
        "fhirvault load benchmark — {backend} — {date} — {cores} cores, server and clients in one process"
    );
    println!(
        "{} requests per phase in {} alternating rounds, cap {} s; Observation body {} B, sealed {} B",
        settings.requests,
        settings.rounds,
        settings.seconds,
        observation.len(),
        sealed.len()
    );
    println!();
    println!(
        "{:>7}  {:<10}  {:>6}  {:>4}  {:>9}  {:>8}  {:>8}  {:>8}  {:>8}",
        "clients", "phase", "ok", "err", "req/s", "p50 ms", "p95 ms", "p99 ms", "max ms"
    );

    let mut created = vec![first];
    let mut rows = Vec::new();
    let mut ratios = Vec::new();
    let print = |p: &Phase| {
        println!(
            "{:>7}  {:<10}  {:>6}  {:>4}  {:>9.1}  {:>8.2}  {:>8.2}  {:>8.2}  {:>8.2}",
            p.clients,
            p.name,
            p.ok(),
            p.errors,
            p.rate(),
            p.percentile_ms(50.0),
            p.percentile_ms(95.0),
            p.percentile_ms(99.0),
            p.latencies
                .last()
                .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
        );
        if let Some(e) = &p.first_error {
            println!("         first error: {e}");
        }
    };
    for &clients in &settings.clients {
        let [create_phase, create_off] = two(run_alternating(
            &["create", "create-off"],
            clients,
            settings.requests,
            settings.rounds,
            cap,
            {
                let (client, urls, body) = (client.clone(), urls.clone(), observation.clone());
                move |v, _| {
                    let (client, url, body) = (client.clone(), urls[v].clone(), body.clone());
                    async move { create(&client, &url, &body).await }
                }
            },
        )
        .await);
        print(&create_phase);
        print(&create_off);

        let raw_phase = {
            let (pool, body) = (raw.clone(), sealed.clone());
            run_phase("raw", clients, settings.requests, cap, move |i| {
                let (pool, body) = (pool.clone(), body.clone());
                async move { raw_insert(&pool, format!("c{clients}-{i}"), &body).await }
            })
            .await
        };
        print(&raw_phase);

        created.extend(
            create_phase
                .results
                .iter()
                .chain(&create_off.results)
                .flatten()
                .cloned(),
        );
        let ids = Arc::new(created.clone());
        // Admin and clinician reads, each against both servers, taking turns.
        let reads = run_alternating(
            &["read", "read-off", "read-c", "read-c-off"],
            clients,
            settings.requests,
            settings.rounds,
            cap,
            {
                let targets = Arc::new([
                    (client.clone(), url.clone()),
                    (client.clone(), quiet_url.clone()),
                    (clinician_client.clone(), url.clone()),
                    (clinician_client.clone(), quiet_url.clone()),
                ]);
                let ids = ids.clone();
                move |v, i| {
                    let (client, url) = (
                        targets[v].0.clone(),
                        format!("{}/{}", targets[v].1, ids[i % ids.len()]),
                    );
                    async move { read(&client, url).await }
                }
            },
        )
        .await;
        let Ok(
            [
                read_phase,
                read_off,
                clinician_read_phase,
                clinician_read_off,
            ],
        ) = <[Phase; 4]>::try_from(reads)
        else {
            panic!("four read phases")
        };
        for phase in [
            &read_phase,
            &read_off,
            &clinician_read_phase,
            &clinician_read_off,
        ] {
            print(phase);
        }
        // Reads whose AuditEvents go through the journal: the phase, then what is left to drain
        // when it ends (timed), so that the rate including the drain is what a server keeps up.
        let journal_phase = {
            let (client, url, ids) = (client.clone(), journal_url.clone(), ids.clone());
            run_phase("read-j", clients, settings.requests, cap, move |i| {
                let (client, url) = (client.clone(), format!("{url}/{}", ids[i % ids.len()]));
                async move { read(&client, url).await }
            })
            .await
        };
        let drain_started = Instant::now();
        journal_service
            .flush_read_journal()
            .await
            .expect("the journal drains");
        let drain = drain_started.elapsed();
        print(&journal_phase);
        let journal_sustained =
            journal_phase.ok() as f64 / (journal_phase.elapsed + drain).as_secs_f64();
        println!(
            "         then {:.0} ms to drain the journal: {:.1} reads/s including the drain",
            drain.as_secs_f64() * 1000.0,
            journal_sustained
        );

        let ratio = create_phase.rate() / raw_phase.rate();
        ratios.push(json!({
            "clients": clients,
            "create_per_raw": common::round(ratio, 3),
            "clinician_reads_per_admin_reads": common::round(clinician_read_phase.rate() / read_phase.rate(), 3),
            "clinician_reads_per_admin_reads_audit_off": common::round(clinician_read_off.rate() / read_off.rate(), 3),
            "creates_audit_on_per_off": common::round(create_phase.rate() / create_off.rate(), 3),
            "reads_audit_on_per_off": common::round(read_phase.rate() / read_off.rate(), 3),
            "journal_reads_per_off": common::round(journal_phase.rate() / read_off.rate(), 3),
            "journal_reads_with_drain_per_off": common::round(journal_sustained / read_off.rate(), 3),
            "journal_drain_ms": common::round(drain.as_secs_f64() * 1000.0, 1),
            "clinician_reads_audit_on_per_off": common::round(clinician_read_phase.rate() / clinician_read_off.rate(), 3),
        }));
        for phase in [
            create_phase,
            create_off,
            raw_phase,
            read_phase,
            read_off,
            clinician_read_phase,
            clinician_read_off,
            journal_phase,
        ] {
            rows.push(Value::Object(phase.timing_json("phase")));
        }
    }

    println!();
    println!(
        "our creates/s ÷ raw inserts/s of the same sealed bytes (one row per transaction, same database):"
    );
    for r in &ratios {
        println!("  {:>2} clients: {}", r["clients"], r["create_per_raw"]);
    }
    println!(
        "reads/s as the clinic's clinician (access rule checked per read) ÷ reads/s as admin (none), same run:"
    );
    for r in &ratios {
        println!(
            "  {:>2} clients: {} with the audit trail, {} without",
            r["clients"],
            r["clinician_reads_per_admin_reads"],
            r["clinician_reads_per_admin_reads_audit_off"]
        );
    }
    println!(
        "the audit trail, same run and data: with ÷ without (Config.audit.enabled), creates/s, admin reads/s, clinician reads/s:"
    );
    for r in &ratios {
        println!(
            "  {:>2} clients: creates {}, reads {}, clinician reads {}",
            r["clients"],
            r["creates_audit_on_per_off"],
            r["reads_audit_on_per_off"],
            r["clinician_reads_audit_on_per_off"]
        );
    }
    println!(
        "reads with the read journal (audit.read_records = journal) ÷ reads without the trail, same run: the phase alone, and including the drain after it:"
    );
    for r in &ratios {
        println!(
            "  {:>2} clients: {} alone, {} with the drain ({} ms)",
            r["clients"],
            r["journal_reads_per_off"],
            r["journal_reads_with_drain_per_off"],
            r["journal_drain_ms"]
        );
    }

    let report = json!({
        "date": date,
        "backend": backend,
        "cores": cores,
        "requests_per_phase": settings.requests,
        "seconds_cap": settings.seconds,
        "alternating_rounds": settings.rounds,
        "observation_bytes": observation.len(),
        "sealed_bytes": sealed.len(),
        "phases": rows,
        "ratios": ratios,
    });
    let out = common::target_dir().join("bench-load.json");
    if let Some(parent) = out.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    match std::fs::write(&out, serde_json::to_vec_pretty(&report).expect("json")) {
        Ok(()) => println!("\nwrote {}", out.display()),
        Err(e) => eprintln!("\ncould not write {}: {e}", out.display()),
    }

    raw.execute("DROP TABLE IF EXISTS bench_raw")
        .await
        .expect("drop bench_raw");
    raw.close().await;
    common::stop_servers(servers).await;
}

/// The two phases of an on/off pair.
fn two(phases: Vec<Phase>) -> [Phase; 2] {
    phases.try_into().unwrap_or_else(|_| panic!("two phases"))
}
