//! Search benchmark: FHIR search over real HTTP against a generated Holter data set.
//!
//! 1. Generates the data set of `benches/search_data/` (FHIRVAULT_BENCH_OBSERVATIONS Observations,
//!    default 100,000; one Patient per 100 Observations, 3 Devices, 1 Coverage and 3 Claims per
//!    Patient, 11 Organizations) and loads it through the import path
//!    (`Service::import_batch`, 500 resources per transaction, FHIRVAULT_BENCH_IMPORT_CONCURRENCY
//!    batches in flight, default 2), reporting resources/s. With FHIRVAULT_BENCH_DATA_DIR the
//!    SQLite database lives in that folder and a later run that finds the same data set there
//!    (same counts per type) skips the load. On PostgreSQL the same check runs against the
//!    database.
//! 2. Runs each query type FHIRVAULT_BENCH_QUERIES times (default 200) for each client count of
//!    FHIRVAULT_BENCH_CLIENTS (default `1,8`), with random parameters (a random patient, date
//!    bound, …), and reports p50/p95/p99/max latency, queries/s and the average number of matches,
//!    included resources and `Bundle.total`, so a query that matches nothing shows up.
//! 3. Before that (unless FHIRVAULT_BENCH_EXPLAIN=0), for one sample of each query type, it
//!    rebuilds the server's SQL with `search::plan` (the page query, and the COUNT behind
//!    `Bundle.total` that the server runs when the first page is full, in the shape of
//!    `service/search.rs`), prints the database's plan for the page query and times both
//!    statements on their own.
//!
//! Prints a table and writes the same figures as JSON to `$CARGO_TARGET_DIR/bench-search.json`
//! (or target/bench-search.json). Backend: SQLite (temp dir, or FHIRVAULT_BENCH_DATA_DIR), or
//! PostgreSQL with FHIRVAULT_BENCH_DATABASE_URL=postgres://… (an empty database, or one this bench
//! loaded before with the same sizes).
//!
//! Run: `cargo bench --bench search`. See benches/README.md.

mod common;
mod search_data;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fhirvault::config::{Config, DatabaseUrl};
use fhirvault::crypto::KeyRing;
use fhirvault::service::Service;
use fhirvault::store::{Bind, bind_all};
use futures::StreamExt;
use common::{round, run_phase};
use search_data::{Kind, Rng, Sizes};
use serde_json::{Value, json};
use sqlx::Row;
use tokio::sync::oneshot;

struct Settings {
    observations: usize,
    queries: usize,
    seconds: u64,
    clients: Vec<usize>,
    database_url: Option<String>,
    data_dir: Option<PathBuf>,
    import_concurrency: usize,
    explain: bool,
    only: Option<Vec<String>>,
    /// Who searches: `admin` (no access rule in the query) and `clinician` (the clinic's
    /// clinician, who sees the same resources through the access rule in every query).
    callers: Vec<String>,
}

impl Settings {
    fn from_env() -> Settings {
        fn var<T: FromStr>(name: &str, default: T) -> T {
            match std::env::var(name) {
                Ok(v) if !v.trim().is_empty() => {
                    v.trim().parse().unwrap_or_else(|_| panic!("{name}={v:?} is not a valid value"))
                }
                _ => default,
            }
        }
        let list = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let clients = list("FHIRVAULT_BENCH_CLIENTS")
            .unwrap_or_else(|| "1,8".into())
            .split(',')
            .map(|c| c.trim().parse::<usize>().expect("FHIRVAULT_BENCH_CLIENTS: comma-separated numbers"))
            .filter(|&c| c > 0)
            .collect();
        Settings {
            observations: var("FHIRVAULT_BENCH_OBSERVATIONS", 100_000usize),
            queries: var("FHIRVAULT_BENCH_QUERIES", 200usize),
            seconds: var("FHIRVAULT_BENCH_SECONDS", 60u64),
            clients,
            database_url: list("FHIRVAULT_BENCH_DATABASE_URL"),
            data_dir: list("FHIRVAULT_BENCH_DATA_DIR").map(PathBuf::from),
            import_concurrency: var("FHIRVAULT_BENCH_IMPORT_CONCURRENCY", 2usize).max(1),
            explain: var("FHIRVAULT_BENCH_EXPLAIN", 1u8) != 0,
            only: list("FHIRVAULT_BENCH_ONLY").map(|v| v.split(',').map(|s| s.trim().to_string()).collect()),
            callers: list("FHIRVAULT_BENCH_CALLERS")
                .unwrap_or_else(|| "admin,clinician".into())
                .split(',')
                .map(|c| c.trim().to_string())
                .inspect(|c| assert!(c == "admin" || c == "clinician", "FHIRVAULT_BENCH_CALLERS: admin and/or clinician"))
                .collect(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The query mix

/// What a query is built from.
struct Ctx {
    sizes: Sizes,
    keys: KeyRing,
    pseudonym_system: String,
}

type Pairs = Vec<(String, String)>;

struct QueryType {
    name: &'static str,
    /// The query as the issue writes it, with placeholders.
    shape: &'static str,
    resource_type: &'static str,
    make: fn(&mut Rng, &Ctx) -> Pairs,
}

fn pairs(items: &[(&str, String)]) -> Pairs {
    items.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
}

fn random_patient(rng: &mut Rng, ctx: &Ctx) -> usize {
    rng.below(ctx.sizes.patients as u64) as usize
}

const QUERY_TYPES: &[QueryType] = &[
    QueryType {
        name: "obs_subject_code_date",
        shape: "Observation?subject=Patient/X&code=http://loinc.org|8867-4&date=geD&_sort=-date&_count=50",
        resource_type: "Observation",
        make: |rng, ctx| {
            let p = random_patient(rng, ctx);
            // A bound in the first nine months, so most pages hold something.
            let bound = search_data::date(rng.below(search_data::YEAR_SECONDS * 3 / 4));
            pairs(&[
                ("subject", format!("Patient/{}", search_data::patient_id(p))),
                ("code", format!("{}|{}", search_data::LOINC, search_data::HEART_RATE)),
                ("date", format!("ge{bound}")),
                ("_sort", "-date".into()),
                ("_count", "50".into()),
            ])
        },
    },
    QueryType {
        name: "obs_chain_pseudonym",
        shape: "Observation?subject:Patient.identifier=urn:fhirvault:pseudonym|P&_count=50",
        resource_type: "Observation",
        make: |rng, ctx| {
            let p = random_patient(rng, ctx);
            let pseudonym = ctx.keys.pseudonym(&search_data::pseudonym_identity(p));
            pairs(&[
                ("subject:Patient.identifier", format!("{}|{pseudonym}", ctx.pseudonym_system)),
                ("_count", "50".into()),
            ])
        },
    },
    QueryType {
        name: "patient_name_mei",
        shape: "Patient?name=mei",
        resource_type: "Patient",
        make: |_, _| pairs(&[("name", "mei".into())]),
    },
    QueryType {
        name: "patient_identifier",
        shape: "Patient?identifier=urn:oid:1.2.40.0.10.1.4.3.1|V",
        resource_type: "Patient",
        make: |rng, ctx| {
            let p = random_patient(rng, ctx);
            pairs(&[("identifier", format!("{}|{}", search_data::SVNR_SYSTEM, search_data::svnr(p)))])
        },
    },
    QueryType {
        // R4 defines no Claim `coverage` search parameter, so the issue's `_include=Claim:coverage`
        // is refused (400; probed and reported at start). Claim:insurer is the include that exists
        // and pulls in one resource per patient, as the Coverage would.
        name: "claim_include",
        shape: "Claim?patient=Patient/X&_include=Claim:insurer",
        resource_type: "Claim",
        make: |rng, ctx| {
            let p = random_patient(rng, ctx);
            pairs(&[
                ("patient", format!("Patient/{}", search_data::patient_id(p))),
                ("_include", "Claim:insurer".into()),
            ])
        },
    },
    QueryType {
        name: "patient_has_obs_code",
        shape: "Patient?_has:Observation:subject:code=http://loinc.org|C (C: 8867-4 or 8894-5)",
        resource_type: "Patient",
        make: |rng, _| {
            let code = if rng.below(2) == 0 { search_data::HEART_RATE } else { search_data::PVC_COUNT };
            pairs(&[("_has:Observation:subject:code", format!("{}|{code}", search_data::LOINC))])
        },
    },
];

fn url_of(base: &str, resource_type: &str, pairs: &Pairs) -> String {
    format!("{base}/{resource_type}?{}", serde_urlencoded::to_string(pairs).expect("query string"))
}

// ---------------------------------------------------------------------------------------------
// Measuring

/// What one search returned.
#[derive(Default, Clone, Copy)]
struct Outcome {
    matches: usize,
    included: usize,
    total: Option<i64>,
}

type Phase = common::Phase<Outcome>;

/// The per-search figures of a phase: average matches and included resources per page, the
/// average total, and how many pages matched nothing.
fn outcome_json(phase: &Phase) -> Value {
    let ok = phase.ok().max(1) as f64;
    let matches: usize = phase.results.iter().map(|o| o.matches).sum();
    let included: usize = phase.results.iter().map(|o| o.included).sum();
    let totals: Vec<i64> = phase.results.iter().filter_map(|o| o.total).collect();
    let average_total = if totals.is_empty() { f64::NAN } else { totals.iter().sum::<i64>() as f64 / totals.len() as f64 };
    let mut row = phase.timing_json("query");
    row.insert("avg_matches".into(), round(matches as f64 / ok, 2));
    row.insert("avg_included".into(), round(included as f64 / ok, 2));
    row.insert("avg_total".into(), round(average_total, 1));
    row.insert("empty_pages".into(), json!(phase.results.iter().filter(|o| o.matches == 0).count()));
    Value::Object(row)
}


/// GET a search; the whole body is read and parsed (part of the measured latency).
async fn search(client: &reqwest::Client, url: String) -> Result<Outcome, String> {
    let response = client.get(&url).send().await.map_err(|e| format!("search: {e}"))?;
    let status = response.status();
    let body = response.bytes().await.map_err(|e| format!("search body: {e}"))?;
    if status != reqwest::StatusCode::OK {
        return Err(format!("{status}: {}", String::from_utf8_lossy(&body[..body.len().min(300)])));
    }
    let bundle: Value = serde_json::from_slice(&body).map_err(|e| format!("bundle json: {e}"))?;
    let mut outcome = Outcome { total: bundle.get("total").and_then(Value::as_i64), ..Outcome::default() };
    for entry in bundle.get("entry").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default() {
        match entry.pointer("/search/mode").and_then(Value::as_str) {
            Some("match") => outcome.matches += 1,
            Some("include") => outcome.included += 1,
            _ => {}
        }
    }
    Ok(outcome)
}

// ---------------------------------------------------------------------------------------------
// The data set

/// Live resources of each kind, by `_summary=count`.
async fn counts(client: &reqwest::Client, base: &str, sizes: &Sizes) -> Vec<(Kind, usize, i64)> {
    let mut out = Vec::new();
    for (kind, expected) in sizes.kinds() {
        let url = format!("{base}/{}?_summary=count", kind.resource_type());
        let bundle: Value = client.get(&url).send().await.expect("count").json().await.expect("count json");
        out.push((kind, expected, bundle["total"].as_i64().expect("Bundle.total")));
    }
    out
}

/// Load the data set through `Service::import_batch`, 500 resources per batch (the CLI's batch
/// size), `concurrency` batches in flight. Each batch is generated on its own task, so generation
/// and validation of the next batches overlap the write of the current one.
async fn load(service: &Service, sizes: Sizes, concurrency: usize) -> Value {
    let batch_size = fhirvault::import::BATCH_SIZE;
    let started = Instant::now();
    let mut per_type = Vec::new();
    eprintln!("loading {} resources through Service::import_batch ({batch_size} per batch, {concurrency} in flight)", sizes.total());
    for (kind, count) in sizes.kinds() {
        let kind_started = Instant::now();
        let batches = count.div_ceil(batch_size);
        let mut done = 0usize;
        let mut last_report = Instant::now();
        let mut stream = futures::stream::iter(0..batches)
            .map(|b| {
                let service = service.clone();
                tokio::spawn(async move {
                    let batch: Vec<(String, Result<Value, String>)> = (b * batch_size..((b + 1) * batch_size).min(count))
                        .map(|i| (format!("{} {i}", kind.resource_type()), Ok(search_data::resource(kind, i, &sizes))))
                        .collect();
                    service.import_batch(batch).await
                })
            })
            .buffer_unordered(concurrency);
        while let Some(result) = stream.next().await {
            let (summary, rejections) = result.expect("import task").unwrap_or_else(|e| panic!("import failed: {e}"));
            if let Some(first) = rejections.first() {
                panic!("{} {} rejected, first: {}: {}", summary.rejected, kind.resource_type(), first.position, first.reason);
            }
            done += summary.stored as usize;
            if last_report.elapsed() > Duration::from_secs(15) {
                last_report = Instant::now();
                let s = kind_started.elapsed().as_secs_f64();
                eprintln!("  {:<12} {done:>9}/{count} ({:.0}/s)", kind.resource_type(), done as f64 / s);
            }
        }
        let seconds = kind_started.elapsed().as_secs_f64();
        eprintln!("  {:<12} {count:>9} in {seconds:.1} s ({:.0}/s)", kind.resource_type(), count as f64 / seconds);
        per_type.push(json!({
            "type": kind.resource_type(),
            "count": count,
            "seconds": round(seconds, 1),
            "per_second": round(count as f64 / seconds, 0),
        }));
    }
    let seconds = started.elapsed().as_secs_f64();
    eprintln!("loaded {} resources in {seconds:.1} s ({:.0}/s)", sizes.total(), sizes.total() as f64 / seconds);
    json!({
        "resources": sizes.total(),
        "seconds": round(seconds, 1),
        "per_second": round(sizes.total() as f64 / seconds, 0),
        "batch_size": batch_size,
        "concurrency": concurrency,
        "per_type": per_type,
    })
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

// ---------------------------------------------------------------------------------------------
// Plans: the server's SQL rebuilt with `search::plan`, explained and timed on its own

async fn explain(service: &Service, query: &QueryType, pairs: &Pairs, postgres: bool) -> Value {
    let request = match service.parse_search(query.resource_type, pairs, false) {
        Ok(r) => r,
        Err(e) => return json!({"query": query.name, "error": e.to_string()}),
    };
    let plan = match fhirvault::search::plan::plan(
        &request,
        &service.registry,
        &service.validator,
        &service.keys.current(),
        &service.config.base_url,
    ) {
        Ok(p) => p,
        Err(e) => return json!({"query": query.name, "error": e.to_string()}),
    };
    // The shape of service/search.rs `matching_rows` (first page, no cursor) and `count`.
    let keys: String = plan.sort_keys.iter().enumerate().map(|(n, key)| format!(", {key} AS k{n}")).collect();
    let columns: String = (0..plan.sort_keys.len()).map(|n| format!(", k{n}")).collect();
    let page_sql = format!(
        "SELECT id, resource_type{columns} FROM (SELECT h.id AS id, h.resource_type AS resource_type{keys} FROM resource_heads h \
         WHERE {}) s ORDER BY {} LIMIT {} OFFSET 0",
        plan.where_sql,
        fhirvault::search::cursor::order_sql(&plan.order, false),
        request.count + 1
    );
    let count_sql = format!("SELECT COUNT(*) FROM resource_heads h WHERE {}", plan.where_sql);
    let mut conn = service.store.reader().await.expect("reader");
    let explain_sql = if postgres { format!("EXPLAIN {page_sql}") } else { format!("EXPLAIN QUERY PLAN {page_sql}") };
    let rows = bind_all(sqlx::query(sqlx::AssertSqlSafe(explain_sql)), plan.binds.clone())
        .fetch_all(&mut *conn)
        .await
        .expect("explain");
    let lines: Vec<String> = rows
        .iter()
        .map(|row| {
            if postgres {
                row.try_get::<String, _>(0).unwrap_or_default()
            } else {
                let (id, parent): (i64, i64) = (row.try_get(0).unwrap_or(0), row.try_get(1).unwrap_or(0));
                format!("{id:>3} {parent:>3} {}", row.try_get::<String, _>(3).unwrap_or_default())
            }
        })
        .collect();
    let mut time = async |sql: &str, binds: &[Bind]| -> (f64, usize) {
        let mut best = Vec::new();
        let mut n = 0;
        for _ in 0..3 {
            let t = Instant::now();
            n = bind_all(sqlx::query(sqlx::AssertSqlSafe(sql.to_string())), binds.to_vec())
                .fetch_all(&mut *conn)
                .await
                .expect("timed query")
                .len();
            best.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        best.sort_by(f64::total_cmp);
        (best[1], n)
    };
    let (page_ms, page_rows) = time(&page_sql, &plan.binds).await;
    let (count_ms, _) = time(&count_sql, &plan.binds[..plan.where_binds]).await;
    json!({
        "query": query.name,
        "sample": serde_urlencoded::to_string(pairs).unwrap_or_default(),
        "page_sql": page_sql,
        "count_sql": count_sql,
        "plan": lines,
        "page_ms_median_of_3": round(page_ms, 2),
        "page_rows": page_rows,
        "count_ms_median_of_3": round(count_ms, 2),
        // service/search.rs runs the COUNT for Bundle.total only when the first page is full.
        "server_runs_count": page_rows > request.count,
    })
}

/// For each (clients, query) measured as both callers: the clinician's figures over the admin's.
fn authorization_overhead(rows: &[Value]) -> Vec<Value> {
    let find = |caller: &str, clients: &Value, name: &Value| {
        rows.iter().find(|r| r["caller"] == caller && &r["clients"] == clients && &r["query"] == name)
    };
    rows.iter()
        .filter(|r| r["caller"] == "admin")
        .filter_map(|admin| {
            let clinician = find("clinician", &admin["clients"], &admin["query"])?;
            let ratio = |key: &str| clinician[key].as_f64().unwrap_or(f64::NAN) / admin[key].as_f64().unwrap_or(f64::NAN);
            Some(json!({
                "clients": admin["clients"], "query": admin["query"],
                "p50_ratio": round(ratio("p50_ms"), 3), "p95_ratio": round(ratio("p95_ms"), 3), "rate_ratio": round(ratio("per_second"), 3),
            }))
        })
        .collect()
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let settings = Settings::from_env();
    let sizes = Sizes::for_observations(settings.observations);
    let cap = Duration::from_secs(settings.seconds);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let query_types: Vec<&QueryType> = QUERY_TYPES
        .iter()
        .filter(|q| settings.only.as_ref().is_none_or(|only| only.iter().any(|o| o == q.name)))
        .collect();

    // The server, as benches/load.rs starts it.
    let temp = tempfile::tempdir().expect("temp dir");
    let dir = match &settings.data_dir {
        Some(d) => {
            std::fs::create_dir_all(d).expect("FHIRVAULT_BENCH_DATA_DIR");
            d.clone()
        }
        None => temp.path().to_path_buf(),
    };
    let database = match &settings.database_url {
        Some(url) => DatabaseUrl::parse(url).expect("FHIRVAULT_BENCH_DATABASE_URL"),
        None => DatabaseUrl::Sqlite(dir.join("fhirvault.db")),
    };
    let postgres = matches!(database, DatabaseUrl::Postgres(_));
    let backend = if postgres { "postgres" } else { "sqlite" };
    let keys = KeyRing::from_master_secret([7; 32]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let mut config = Config::for_dir(&dir, Some(database.clone()));
    config.listen = addr;
    config.base_url = format!("http://{addr}/fhir");
    config.auth = fhirvault::config::AuthConfig::for_base_url(&config.base_url);
    // One caller sends everything here: no per-caller limit.
    config.rate_limit_per_second = 0;
    let base = config.base_url.clone();
    let service = fhirvault::server::open_service(config, Some(keys.clone())).await.expect("service starts");
    let (stop, stopped) = oneshot::channel::<()>();
    let server = {
        let service = service.clone();
        tokio::spawn(async move {
            fhirvault::server::serve(listener, service, async {
                let _ = stopped.await;
            })
            .await
            .expect("server runs");
        })
    };
    let client = common::client_with(&common::token(&service, "admin", "user/*.cruds", None), Duration::from_secs(300));
    let clinician = common::token(&service, "clinician", "user/*.cruds", Some(&search_data::clinic_id(&sizes)));
    let client_for = |caller: &str| if caller == "admin" { client.clone() } else { common::client_with(&clinician, Duration::from_secs(300)) };

    // The data set: reuse it if it is there, load it if the database is empty.
    let found = counts(&client, &base, &sizes).await;
    let import_file = dir.join("bench-search-import.json");
    let import = if found.iter().all(|(_, expected, n)| *n == *expected as i64) {
        eprintln!("the database already holds this data set ({} resources); not loading", sizes.total());
        let previous = std::fs::read(&import_file).ok().and_then(|b| serde_json::from_slice::<Value>(&b).ok());
        json!({"reused": true, "loading_run": previous})
    } else if found.iter().all(|(_, _, n)| *n == 0) {
        let mut report = load(&service, sizes, settings.import_concurrency).await;
        if postgres {
            // What autovacuum does some time after such a load (statistics, and the visibility
            // map that index-only scans need); makes the first run's plans and timings repeatable.
            // Measured with ANALYZE alone, the first run right after the load had
            // obs_subject_code_date p95 355 ms against 8 ms in a second run on the same database.
            let mut conn = service.store.reader().await.expect("reader");
            sqlx::Executor::execute(&mut *conn, "VACUUM ANALYZE").await.expect("VACUUM ANALYZE");
            eprintln!("ran VACUUM ANALYZE");
        }
        if !postgres {
            let db = dir.join("fhirvault.db");
            let mut wal = db.clone().into_os_string();
            wal.push("-wal");
            report["sqlite_bytes"] = json!(file_size(&db) + file_size(Path::new(&wal)));
        }
        if settings.data_dir.is_some() {
            let _ = std::fs::write(&import_file, serde_json::to_vec_pretty(&report).expect("json"));
        }
        report
    } else {
        let found: Vec<String> = found.iter().map(|(k, e, n)| format!("{} {n} (want {e})", k.resource_type())).collect();
        panic!(
            "the database holds a different data set: {}. Use an empty database or another FHIRVAULT_BENCH_DATA_DIR.",
            found.join(", ")
        );
    };

    let ctx = Arc::new(Ctx { sizes, keys: keys.clone(), pseudonym_system: service.config.pseudonym_system.clone() });

    // The pseudonyms the chain query looks for are computed here; check one against the server.
    {
        let patient: Value = client
            .get(format!("{base}/Patient/{}", search_data::patient_id(0)))
            .send()
            .await
            .expect("read patient")
            .json()
            .await
            .expect("patient json");
        let stored = patient["identifier"]
            .as_array()
            .and_then(|ids| ids.iter().find(|i| i["system"] == ctx.pseudonym_system.as_str()))
            .and_then(|i| i["value"].as_str())
            .expect("Patient has a pseudonym identifier")
            .to_string();
        assert_eq!(stored, keys.pseudonym(&search_data::pseudonym_identity(0)), "pseudonym as the server assigns it");
    }

    // The literal Claim query, once.
    let literal_claim = {
        let url = format!(
            "{base}/Claim?patient=Patient/{}&_include=Claim:coverage",
            search_data::patient_id(0)
        );
        let response = client.get(&url).send().await.expect("claim probe");
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        let diagnostics = body.pointer("/issue/0/diagnostics").and_then(Value::as_str).unwrap_or("").to_string();
        json!({"query": "Claim?patient=Patient/p000001&_include=Claim:coverage", "status": status, "diagnostics": diagnostics})
    };

    let date = chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string();
    println!();
    println!("fhirvault search benchmark — {backend} — {date} — {cores} cores, server and clients in one process");
    println!(
        "data set: {} Observations, {} Patients, {} Devices, {} Coverages, {} Claims, {} Organizations ({} resources)",
        sizes.observations, sizes.patients, sizes.devices, sizes.coverages, sizes.claims, sizes.organizations, sizes.total()
    );
    if let Some(rate) = import["per_second"].as_f64() {
        println!("import: {} s, {rate} resources/s", import["seconds"]);
    } else if let Some(rate) = import.pointer("/loading_run/per_second").and_then(Value::as_f64) {
        println!("import (earlier run that loaded this data set): {} s, {rate} resources/s", import["loading_run"]["seconds"]);
    }
    println!(
        "literal `{}`: HTTP {} {}",
        literal_claim["query"].as_str().unwrap_or_default(),
        literal_claim["status"],
        literal_claim["diagnostics"].as_str().unwrap_or_default()
    );

    // Warm-up (not measured): caches and connections, a few queries of each type (at most 10 s
    // of them per type).
    for (t, query) in query_types.iter().enumerate() {
        let warm = (settings.queries / 10).clamp(1, 20);
        let started = Instant::now();
        for i in 0..warm {
            if started.elapsed() > Duration::from_secs(10) {
                break;
            }
            let mut rng = Rng::new(0xFFFF_0000 ^ ((t as u64) << 20) ^ i as u64);
            let url = url_of(&base, query.resource_type, &(query.make)(&mut rng, &ctx));
            if let Err(e) = search(&client, url).await {
                println!("warm-up {}: {e}", query.name);
                break;
            }
        }
    }

    let mut plans = Vec::new();
    if settings.explain {
        println!();
        println!("the server's SQL for one sample of each query, timed on its own (median of 3):");
        for (t, query) in query_types.iter().enumerate() {
            let mut rng = Rng::new(0xEEEE_0000 ^ t as u64);
            let sample = (query.make)(&mut rng, &ctx);
            let explained = explain(&service, query, &sample, postgres).await;
            println!(
                "\n{}  page query {} ms ({} rows), COUNT {} ms ({})",
                query.name,
                explained["page_ms_median_of_3"],
                explained["page_rows"],
                explained["count_ms_median_of_3"],
                if explained["server_runs_count"] == true { "run for Bundle.total: the page is full" } else { "not run: the page holds every match" }
            );
            for line in explained["plan"].as_array().into_iter().flatten() {
                println!("    {}", line.as_str().unwrap_or_default());
            }
            if let Some(e) = explained.get("error") {
                println!("    error: {e}");
            }
            plans.push(explained);
        }
    }

    println!();
    println!(
        "{} queries per type and client count, cap {} s per phase; latency = request sent to Bundle parsed",
        settings.queries, settings.seconds
    );
    println!();
    println!(
        "{:>7}  {:<9}  {:<22}  {:>5}  {:>3}  {:>8}  {:>8}  {:>8}  {:>8}  {:>8}  {:>7}  {:>6}  {:>8}",
        "clients", "caller", "query", "ok", "err", "q/s", "p50 ms", "p95 ms", "p99 ms", "max ms", "matches", "incl", "total"
    );
    let mut rows = Vec::new();
    for &clients in &settings.clients {
        for (t, query) in query_types.iter().enumerate() {
          for caller in &settings.callers {
            let phase = {
                let (client, base, ctx) = (client_for(caller), Arc::new(base.clone()), ctx.clone());
                let (resource_type, make) = (query.resource_type, query.make);
                run_phase(query.name, clients, settings.queries, cap, move |i| {
                    let mut rng = Rng::new(((t as u64) << 40) ^ ((clients as u64) << 32) ^ i as u64);
                    let url = url_of(&base, resource_type, &make(&mut rng, &ctx));
                    let client = client.clone();
                    async move { search(&client, url).await }
                })
                .await
            };
            let mut row = outcome_json(&phase);
            let figure = |key: &str| row[key].as_f64().unwrap_or(f64::NAN);
            println!(
                "{:>7}  {:<9}  {:<22}  {:>5}  {:>3}  {:>8.1}  {:>8.2}  {:>8.2}  {:>8.2}  {:>8.2}  {:>7.1}  {:>6.1}  {:>8.0}",
                phase.clients,
                caller,
                phase.name,
                phase.ok(),
                phase.errors,
                phase.rate(),
                phase.percentile_ms(50.0),
                phase.percentile_ms(95.0),
                phase.percentile_ms(99.0),
                phase.max_ms(),
                figure("avg_matches"),
                figure("avg_included"),
                figure("avg_total"),
            );
            if let Some(e) = &phase.first_error {
                println!("         first error: {e}");
            }
            let empty = row["empty_pages"].as_u64().unwrap_or(0);
            if empty > 0 {
                println!("         {empty} of {} pages had no match", phase.ok());
            }
            row["shape"] = json!(query.shape);
            row["caller"] = json!(caller);
            rows.push(row);
          }
        }
    }
    let overhead = authorization_overhead(&rows);
    if !overhead.is_empty() {
        println!();
        println!("authorization overhead (same run): clinician (access rule in every query) ÷ admin (none)");
        println!("{:>7}  {:<22}  {:>10}  {:>10}  {:>10}", "clients", "query", "p50 ratio", "p95 ratio", "q/s ratio");
        for row in &overhead {
            println!(
                "{:>7}  {:<22}  {:>10.3}  {:>10.3}  {:>10.3}",
                row["clients"], row["query"].as_str().unwrap_or_default(), row["p50_ratio"].as_f64().unwrap_or(f64::NAN),
                row["p95_ratio"].as_f64().unwrap_or(f64::NAN), row["rate_ratio"].as_f64().unwrap_or(f64::NAN)
            );
        }
    }

    let report = json!({
        "date": date,
        "backend": backend,
        "cores": cores,
        "sizes": {
            "observations": sizes.observations,
            "patients": sizes.patients,
            "devices": sizes.devices,
            "coverages": sizes.coverages,
            "claims": sizes.claims,
            "organizations": sizes.organizations,
            "total": sizes.total(),
        },
        "import": import,
        "queries_per_phase": settings.queries,
        "seconds_cap": settings.seconds,
        "literal_claim_coverage": literal_claim,
        "plans": plans,
        "phases": rows,
        "authorization_overhead": overhead,
    });
    let out = common::target_dir().join("bench-search.json");
    if let Some(parent) = out.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    match std::fs::write(&out, serde_json::to_vec_pretty(&report).expect("json")) {
        Ok(()) => println!("\nwrote {}", out.display()),
        Err(e) => eprintln!("\ncould not write {}: {e}", out.display()),
    }

    let _ = stop.send(());
    let _ = server.await;
    service.store.close().await;
}
