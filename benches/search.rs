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
//! 2. Gives one patient in ten a privacy Consent, written through the API as admin
//!    (`search_data::consent`); one patient in a hundred denies the clinic.
//! 3. Runs each query type FHIRVAULT_BENCH_QUERIES times (default 200) for each client count of
//!    FHIRVAULT_BENCH_CLIENTS (default `1,8`), with random parameters (a random patient, date
//!    bound, …), and reports p50/p95/p99/max latency, queries/s and the average number of matches,
//!    included resources and `Bundle.total`, so a query that matches nothing shows up.
//!    Every query type runs as each caller of FHIRVAULT_BENCH_CALLERS (default all three):
//!    `admin` (no access rule), `clinician` (the clinic's clinician: access rule and consent
//!    condition in every query) and `etreat` (the same clinician with `X-Purpose-Of-Use: ETREAT`:
//!    the same access rule, no consent condition), against each server of FHIRVAULT_BENCH_AUDIT
//!    (default `on,off`): the service as deployed, and the same service with
//!    `Config.audit.enabled = false` on a second listener (same store, same data). The variants
//!    take turns in FHIRVAULT_BENCH_ROUNDS alternating rounds (default 2), with the same random
//!    parameters. Three tables compare them: clinician ÷ admin (authorization), clinician ÷
//!    etreat (consent) and audit on ÷ off.
//! 4. Before the queries (unless FHIRVAULT_BENCH_EXPLAIN=0), for one sample of each query type
//!    and caller, it rebuilds the server's SQL with `search::plan` and the caller's restrictions
//!    (the page query, and the COUNT behind `Bundle.total` that the server runs when the first
//!    page is full, in the shape of `service/search.rs`), prints the database's plan for the page
//!    query (the clinician's) and times both statements on their own.
//!
//! 5. FHIRVAULT_BENCH_COUNT_TIMEOUT_MS sets the server's `store.count_timeout_ms` (0: every total
//!    counted up to the statement limit); pages that came without a total are reported.
//! 6. With FHIRVAULT_BENCH_PAGES=N, each caller pages through the `_has` search: the N pages after
//!    the first, whose links carry the first page's total, against the same with
//!    `_total=accurate`, counted on every page; alternating rounds, ratio in the same run.
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

use common::{round, run_alternating};
use fhirvault::auth::Caller;
use fhirvault::config::{Config, DatabaseUrl};
use fhirvault::crypto::KeyRing;
use fhirvault::service::Service;
use fhirvault::store::{Bind, bind_all};
use futures::StreamExt;
use search_data::{Kind, Rng, Sizes};
use serde_json::{Value, json};
use sqlx::Row;

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
    /// Who searches: `admin` (no access rule in the query), `clinician` (the clinic's clinician,
    /// who sees the same resources through the access rule and the consent condition in every
    /// query) and `etreat` (the same clinician declaring `X-Purpose-Of-Use: ETREAT`: the same
    /// access rule, no consent condition).
    callers: Vec<String>,
    /// Which servers answer: `on` (the audit trail written, as deployed) and `off` (the same
    /// service with `Config.audit.enabled = false`, on a second listener).
    audit: Vec<String>,
    /// Each measurement is split into this many rounds, the variants taking turns in alternating
    /// order (A B C, C B A, …), so that the machine's drift falls on all of them alike.
    rounds: usize,
    /// `store.count_timeout_ms` of the server (unset: the default; 0: totals counted up to the
    /// statement limit, as before that setting existed).
    count_timeout_ms: Option<u64>,
    /// Pages followed after the first in the paging measurement (0: not run).
    pages: usize,
}

impl Settings {
    fn from_env() -> Settings {
        fn var<T: FromStr>(name: &str, default: T) -> T {
            match std::env::var(name) {
                Ok(v) if !v.trim().is_empty() => v
                    .trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("{name}={v:?} is not a valid value")),
                _ => default,
            }
        }
        let list = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let clients = list("FHIRVAULT_BENCH_CLIENTS")
            .unwrap_or_else(|| "1,8".into())
            .split(',')
            .map(|c| {
                c.trim()
                    .parse::<usize>()
                    .expect("FHIRVAULT_BENCH_CLIENTS: comma-separated numbers")
            })
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
            pages: var("FHIRVAULT_BENCH_PAGES", 0usize),
            count_timeout_ms: list("FHIRVAULT_BENCH_COUNT_TIMEOUT_MS").map(|v| {
                v.trim()
                    .parse()
                    .expect("FHIRVAULT_BENCH_COUNT_TIMEOUT_MS: milliseconds")
            }),
            only: list("FHIRVAULT_BENCH_ONLY")
                .map(|v| v.split(',').map(|s| s.trim().to_string()).collect()),
            callers: list("FHIRVAULT_BENCH_CALLERS")
                .unwrap_or_else(|| CALLERS.join(","))
                .split(',')
                .map(|c| c.trim().to_string())
                .inspect(|c| {
                    assert!(
                        CALLERS.contains(&c.as_str()),
                        "FHIRVAULT_BENCH_CALLERS: some of {}",
                        CALLERS.join(", ")
                    )
                })
                .collect(),
            audit: list("FHIRVAULT_BENCH_AUDIT")
                .unwrap_or_else(|| "on,off".into())
                .split(',')
                .map(|c| c.trim().to_string())
                .inspect(|c| {
                    assert!(
                        c == "on" || c == "off",
                        "FHIRVAULT_BENCH_AUDIT: on and/or off"
                    )
                })
                .collect(),
            rounds: var("FHIRVAULT_BENCH_ROUNDS", 2usize).max(1),
        }
    }
}

/// The callers a run can search as, in the order they take turns.
const CALLERS: [&str; 3] = ["admin", "clinician", "etreat"];

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
    items
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
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
                (
                    "code",
                    format!("{}|{}", search_data::LOINC, search_data::HEART_RATE),
                ),
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
                (
                    "subject:Patient.identifier",
                    format!("{}|{pseudonym}", ctx.pseudonym_system),
                ),
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
            pairs(&[(
                "identifier",
                format!("{}|{}", search_data::SVNR_SYSTEM, search_data::svnr(p)),
            )])
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
            let code = if rng.below(2) == 0 {
                search_data::HEART_RATE
            } else {
                search_data::PVC_COUNT
            };
            pairs(&[(
                "_has:Observation:subject:code",
                format!("{}|{code}", search_data::LOINC),
            )])
        },
    },
];

fn url_of(base: &str, resource_type: &str, pairs: &Pairs) -> String {
    format!(
        "{base}/{resource_type}?{}",
        serde_urlencoded::to_string(pairs).expect("query string")
    )
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
/// average total, how many pages matched nothing and how many came without a total.
fn outcome_json(phase: &Phase) -> Value {
    let ok = phase.ok().max(1) as f64;
    let matches: usize = phase.results.iter().map(|o| o.matches).sum();
    let included: usize = phase.results.iter().map(|o| o.included).sum();
    let totals: Vec<i64> = phase.results.iter().filter_map(|o| o.total).collect();
    let average_total = if totals.is_empty() {
        f64::NAN
    } else {
        totals.iter().sum::<i64>() as f64 / totals.len() as f64
    };
    let mut row = phase.timing_json("query");
    row.insert("avg_matches".into(), round(matches as f64 / ok, 2));
    row.insert("avg_included".into(), round(included as f64 / ok, 2));
    row.insert("avg_total".into(), round(average_total, 1));
    row.insert(
        "empty_pages".into(),
        json!(phase.results.iter().filter(|o| o.matches == 0).count()),
    );
    // Pages whose total the server did not count in `store.count_timeout_ms` (and left out).
    row.insert(
        "pages_without_total".into(),
        json!(phase.results.iter().filter(|o| o.total.is_none()).count()),
    );
    Value::Object(row)
}

/// GET a search; the whole body is read and parsed (part of the measured latency).
async fn search(client: &reqwest::Client, url: String) -> Result<Outcome, String> {
    let response = client
        .get(&url)
        .send()
        .await
        .map_err(|e| format!("search: {e}"))?;
    let status = response.status();
    let body = response
        .bytes()
        .await
        .map_err(|e| format!("search body: {e}"))?;
    if status != reqwest::StatusCode::OK {
        return Err(format!(
            "{status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(300)])
        ));
    }
    let bundle: Value = serde_json::from_slice(&body).map_err(|e| format!("bundle json: {e}"))?;
    let mut outcome = Outcome {
        total: bundle.get("total").and_then(Value::as_i64),
        ..Outcome::default()
    };
    for entry in bundle
        .get("entry")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
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
        let bundle: Value = client
            .get(&url)
            .send()
            .await
            .expect("count")
            .json()
            .await
            .expect("count json");
        out.push((
            kind,
            expected,
            bundle["total"].as_i64().expect("Bundle.total"),
        ));
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
    eprintln!(
        "loading {} resources through Service::import_batch ({batch_size} per batch, {concurrency} in flight)",
        sizes.total()
    );
    for (kind, count) in sizes.kinds() {
        let kind_started = Instant::now();
        let batches = count.div_ceil(batch_size);
        let mut done = 0usize;
        let mut last_report = Instant::now();
        let mut stream = futures::stream::iter(0..batches)
            .map(|b| {
                let service = service.clone();
                tokio::spawn(async move {
                    let batch: Vec<(String, Result<Value, String>)> = (b * batch_size
                        ..((b + 1) * batch_size).min(count))
                        .map(|i| {
                            (
                                format!("{} {i}", kind.resource_type()),
                                Ok(search_data::resource(kind, i, &sizes)),
                            )
                        })
                        .collect();
                    service.import_batch(batch).await
                })
            })
            .buffer_unordered(concurrency);
        while let Some(result) = stream.next().await {
            let (summary, rejections) = result
                .expect("import task")
                .unwrap_or_else(|e| panic!("import failed: {e}"));
            if let Some(first) = rejections.first() {
                panic!(
                    "{} {} rejected, first: {}: {}",
                    summary.rejected,
                    kind.resource_type(),
                    first.position,
                    first.reason
                );
            }
            done += summary.stored as usize;
            if last_report.elapsed() > Duration::from_secs(15) {
                last_report = Instant::now();
                let s = kind_started.elapsed().as_secs_f64();
                eprintln!(
                    "  {:<12} {done:>9}/{count} ({:.0}/s)",
                    kind.resource_type(),
                    done as f64 / s
                );
            }
        }
        let seconds = kind_started.elapsed().as_secs_f64();
        eprintln!(
            "  {:<12} {count:>9} in {seconds:.1} s ({:.0}/s)",
            kind.resource_type(),
            count as f64 / seconds
        );
        per_type.push(json!({
            "type": kind.resource_type(),
            "count": count,
            "seconds": round(seconds, 1),
            "per_second": round(count as f64 / seconds, 0),
        }));
    }
    // As `fhirvault import` does when it is done.
    service
        .store
        .refresh_statistics()
        .await
        .expect("statistics refreshed");
    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "loaded {} resources in {seconds:.1} s ({:.0}/s)",
        sizes.total(),
        sizes.total() as f64 / seconds
    );
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

/// A bind value as JSON, so that a statement of the report can be replayed (blobs as hex).
fn bind_json(bind: &Bind) -> Value {
    match bind {
        Bind::Text(t) => json!(t),
        Bind::Int(i) => json!(i),
        Bind::Real(r) => json!(r),
        Bind::Blob(b) => json!({"hex": hex::encode(b)}),
        Bind::Null | Bind::NullBlob => Value::Null,
    }
}

/// The caller a token names, for one request that declares `purpose` (as the HTTP layer makes it).
fn caller_of(service: &Service, token: &str, purpose: Option<&str>) -> Arc<Caller> {
    let claims = service
        .verifier
        .verify(token, chrono::Utc::now().timestamp())
        .expect("bench token verifies");
    let caller =
        fhirvault::api::authenticate::caller_from_claims(claims).expect("bench token's caller");
    Arc::new(
        caller
            .for_request(
                purpose,
                None,
                &service.purposes,
                service.config.consent_default,
            )
            .expect("bench caller"),
    )
}

async fn explain(
    service: &Service,
    query: &QueryType,
    pairs: &Pairs,
    postgres: bool,
    caller: &Arc<Caller>,
) -> Value {
    let mut request = match service.parse_search(query.resource_type, pairs, false) {
        Ok(r) => r,
        Err(e) => return json!({"query": query.name, "error": e.to_string()}),
    };
    // The caller's access rule and consent condition, as the server puts them into the query.
    if let Err(e) = service.restrict_search(caller, &mut request) {
        return json!({"query": query.name, "error": e.to_string()});
    }
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
    let keys: String = plan
        .sort_keys
        .iter()
        .enumerate()
        .map(|(n, key)| format!(", {key} AS k{n}"))
        .collect();
    let columns: String = (0..plan.sort_keys.len())
        .map(|n| format!(", k{n}"))
        .collect();
    let page_sql = format!(
        "SELECT id, resource_type{columns} FROM (SELECT h.id AS id, h.resource_type AS resource_type{keys} FROM resource_heads h \
         WHERE {}) s ORDER BY {} LIMIT {} OFFSET 0",
        plan.where_sql,
        fhirvault::search::cursor::order_sql(&plan.order, false),
        request.count + 1
    );
    let count_sql = format!(
        "SELECT COUNT(*) FROM resource_heads h WHERE {}",
        plan.where_sql
    );
    let mut conn = service.store.reader().await.expect("reader");
    let explain_sql = if postgres {
        format!("EXPLAIN {page_sql}")
    } else {
        format!("EXPLAIN QUERY PLAN {page_sql}")
    };
    let rows = bind_all(
        sqlx::query(sqlx::AssertSqlSafe(explain_sql)),
        plan.binds.clone(),
    )
    .fetch_all(&mut *conn)
    .await
    .expect("explain");
    let lines: Vec<String> = rows
        .iter()
        .map(|row| {
            if postgres {
                row.try_get::<String, _>(0).unwrap_or_default()
            } else {
                let (id, parent): (i64, i64) =
                    (row.try_get(0).unwrap_or(0), row.try_get(1).unwrap_or(0));
                format!(
                    "{id:>3} {parent:>3} {}",
                    row.try_get::<String, _>(3).unwrap_or_default()
                )
            }
        })
        .collect();
    let mut time = async |sql: &str, binds: &[Bind]| -> (f64, usize) {
        let mut best = Vec::new();
        let mut n = 0;
        for _ in 0..3 {
            let t = Instant::now();
            n = bind_all(
                sqlx::query(sqlx::AssertSqlSafe(sql.to_string())),
                binds.to_vec(),
            )
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
        "binds": plan.binds.iter().map(bind_json).collect::<Vec<_>>(),
        "plan": lines,
        "page_ms_median_of_3": round(page_ms, 2),
        "page_rows": page_rows,
        "count_ms_median_of_3": round(count_ms, 2),
        // service/search.rs runs the COUNT for Bundle.total only when the first page is full.
        "server_runs_count": page_rows > request.count,
    })
}

/// The query paged through by the paging measurement: the `_has` search, whose COUNT is the
/// most costly of the query types.
fn paging_query(base: &str) -> String {
    let pairs = pairs(&[
        (
            "_has:Observation:subject:code",
            format!("{}|{}", search_data::LOINC, search_data::HEART_RATE),
        ),
        ("_count", "50".into()),
    ]);
    url_of(base, "Patient", &pairs)
}

/// One page: how long it took, its total and its next link.
async fn page(client: &reqwest::Client, url: &str) -> (Duration, Option<i64>, Option<String>) {
    let started = Instant::now();
    let bundle: Value = client
        .get(url)
        .send()
        .await
        .expect("page")
        .json()
        .await
        .expect("page json");
    let elapsed = started.elapsed();
    let next = bundle["link"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|link| link["relation"] == "next")
        .and_then(|link| link["url"].as_str())
        .map(str::to_string);
    (elapsed, bundle["total"].as_i64(), next)
}

/// Paging through [`paging_query`] as `caller`: the `pages` pages after the first, whose links
/// carry the first page's total (`carried`), against the same with `_total=accurate`, which
/// counts on every page (`accurate`, what each page cost before totals were carried). The first
/// pages are not timed. `rounds` rounds, the order alternating.
async fn paging(
    client: &reqwest::Client,
    base: &str,
    caller: &str,
    pages: usize,
    rounds: usize,
) -> Value {
    // [carried, accurate]
    let mut latencies: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
    for round in 0..rounds {
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for mode in order {
            let mut url = paging_query(base);
            if mode == 1 {
                url.push_str("&_total=accurate");
            }
            let (_, _, mut next) = page(client, &url).await;
            for _ in 0..pages {
                let Some(url) = next.take() else { break };
                let (elapsed, total, following) = page(client, &url).await;
                assert!(total.is_some(), "a later page without a total");
                latencies[mode].push(elapsed);
                next = following;
            }
        }
    }
    // Sorted latencies make a phase, for its percentiles.
    let phase = |mut latencies: Vec<Duration>| {
        latencies.sort();
        common::Phase::<()> {
            name: "paging",
            clients: 1,
            errors: 0,
            first_error: None,
            elapsed: latencies.iter().sum(),
            latencies,
            results: Vec::new(),
        }
    };
    let [carried, accurate] = latencies.map(phase);
    let row = json!({
        "caller": caller,
        "pages": carried.ok(),
        "carried_p50_ms": round(carried.percentile_ms(50.0), 2),
        "carried_p95_ms": round(carried.percentile_ms(95.0), 2),
        "accurate_p50_ms": round(accurate.percentile_ms(50.0), 2),
        "accurate_p95_ms": round(accurate.percentile_ms(95.0), 2),
        "p50_ratio_carried_to_accurate": round(carried.percentile_ms(50.0) / accurate.percentile_ms(50.0), 3),
    });
    println!(
        "  {caller:<9}  {:>4} later pages  carried p50/p95 {:>8.2} / {:>8.2} ms  accurate p50/p95 {:>8.2} / {:>8.2} ms  ratio {:.3}",
        row["pages"],
        row["carried_p50_ms"].as_f64().unwrap_or(f64::NAN),
        row["carried_p95_ms"].as_f64().unwrap_or(f64::NAN),
        row["accurate_p50_ms"].as_f64().unwrap_or(f64::NAN),
        row["accurate_p95_ms"].as_f64().unwrap_or(f64::NAN),
        row["p50_ratio_carried_to_accurate"]
            .as_f64()
            .unwrap_or(f64::NAN),
    );
    row
}

/// What tells the rows of a run apart.
const DIMENSIONS: [&str; 4] = ["clients", "query", "caller", "audit"];

/// For each pair of rows that differ only in `key`, `slow` against `fast`: slow's p50, p95 and
/// q/s over fast's, and the overhead q/s(fast) ÷ q/s(slow) (1.10: the slow variant answers 10 %
/// fewer queries per second).
fn compare(rows: &[Value], key: &str, slow: &str, fast: &str) -> Vec<Value> {
    rows.iter()
        .filter(|r| r[key] == slow)
        .filter_map(|s| {
            let f = rows.iter().find(|r| {
                r[key] == fast
                    && DIMENSIONS
                        .iter()
                        .filter(|d| **d != key)
                        .all(|d| r[*d] == s[*d])
            })?;
            let ratio =
                |k: &str| s[k].as_f64().unwrap_or(f64::NAN) / f[k].as_f64().unwrap_or(f64::NAN);
            let mut out = serde_json::Map::new();
            for d in DIMENSIONS.iter().filter(|d| **d != key) {
                out.insert(d.to_string(), s[*d].clone());
            }
            out.insert("p50_ratio".into(), round(ratio("p50_ms"), 3));
            out.insert("p95_ratio".into(), round(ratio("p95_ms"), 3));
            out.insert("rate_ratio".into(), round(ratio("per_second"), 3));
            out.insert("overhead".into(), round(1.0 / ratio("per_second"), 3));
            Some(Value::Object(out))
        })
        .collect()
}

/// Print a [`compare`] table; `other` is the dimension that is neither compared nor the query.
fn print_comparison(title: &str, other: &str, table: &[Value]) {
    if table.is_empty() {
        return;
    }
    println!();
    println!("{title}");
    println!(
        "{:>7}  {:<9}  {:<22}  {:>10}  {:>10}  {:>10}  {:>9}",
        "clients", other, "query", "p50 ratio", "p95 ratio", "q/s ratio", "overhead"
    );
    for row in table {
        let figure = |k: &str| row[k].as_f64().unwrap_or(f64::NAN);
        println!(
            "{:>7}  {:<9}  {:<22}  {:>10.3}  {:>10.3}  {:>10.3}  {:>9.3}",
            row["clients"].as_u64().unwrap_or_default(),
            row[other].as_str().unwrap_or_default(),
            row["query"].as_str().unwrap_or_default(),
            figure("p50_ratio"),
            figure("p95_ratio"),
            figure("rate_ratio"),
            figure("overhead")
        );
    }
}

/// Write the data set's privacy Consents ([`search_data::consent`]) through the API, as admin
/// with PUT and the bench's ids, 8 at a time, so `consent_rules` is filled by the server's own
/// write path. A database that already holds them all (a reused data set) is left as it is.
async fn write_consents(
    service: &Service,
    client: &reqwest::Client,
    base: &str,
    sizes: &Sizes,
) -> Value {
    let (holders, deny_clinic) = search_data::consent_counts(sizes);
    let url = format!("{base}/Consent?_summary=count");
    let found: Value = client
        .get(&url)
        .send()
        .await
        .expect("count Consents")
        .json()
        .await
        .expect("count json");
    let found = found["total"].as_i64().expect("Bundle.total");
    let started = Instant::now();
    let written = if found == holders as i64 {
        eprintln!("the database already holds the {holders} Consents; not writing them");
        0
    } else {
        let results: Vec<Result<(), String>> = futures::stream::iter(
            (0..sizes.patients).filter_map(|i| search_data::consent(i, sizes)),
        )
        .map(|consent| {
            let url = format!("{base}/Consent/{}", consent["id"].as_str().expect("id"));
            let client = client.clone();
            async move {
                let response = client
                    .put(&url)
                    .header("content-type", "application/fhir+json")
                    .body(serde_json::to_vec(&consent).expect("json"))
                    .send()
                    .await
                    .map_err(|e| format!("PUT Consent: {e}"))?;
                let status = response.status();
                let body = response.text().await.unwrap_or_default();
                if status.is_success() {
                    Ok(())
                } else {
                    Err(format!("PUT Consent: {status}: {body}"))
                }
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
        if let Some(Err(e)) = results.iter().find(|r| r.is_err()) {
            panic!("writing the Consents: {e}");
        }
        results.len()
    };
    let seconds = started.elapsed().as_secs_f64();
    let mut conn = service.store.reader().await.expect("reader");
    let (rules, patients): (i64, i64) =
        sqlx::query_as("SELECT COUNT(*), COUNT(DISTINCT patient_id) FROM consent_rules")
            .fetch_one(&mut *conn)
            .await
            .expect("count consent_rules");
    eprintln!(
        "Consents: {holders} patients of {} ({deny_clinic} deny the clinic); {rules} consent_rules rows",
        sizes.patients
    );
    json!({
        "patients_with_consent": holders,
        "deny_clinic": deny_clinic,
        "written": written,
        "write_seconds": round(seconds, 2),
        "consent_rules_rows": rules,
        "consent_rules_patients": patients,
    })
}

/// One way of sending the workload: which server (audit on or off) and which caller.
struct Variant {
    audit: String,
    caller: String,
    base: Arc<String>,
    client: reqwest::Client,
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let settings = Settings::from_env();
    let sizes = Sizes::for_observations(settings.observations);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let query_types: Vec<&QueryType> = QUERY_TYPES
        .iter()
        .filter(|q| {
            settings
                .only
                .as_ref()
                .is_none_or(|only| only.iter().any(|o| o == q.name))
        })
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
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let mut config = Config::for_dir(&dir, Some(database.clone()));
    config.listen = addr;
    config.base_url = format!("http://{addr}/fhir");
    config.auth = fhirvault::config::AuthConfig::for_base_url(&config.base_url);
    // One caller sends everything here: no per-caller limit.
    config.rate_limit_per_second = 0;
    if let Some(ms) = settings.count_timeout_ms {
        config.store.count_timeout = (ms > 0).then(|| Duration::from_millis(ms));
    }
    let base = config.base_url.clone();
    let service = fhirvault::server::open_service(config, Some(keys.clone()))
        .await
        .expect("service starts");
    // The same service without the audit trail, on a second listener: same store, same data,
    // same base URL (so the same SQL); only `Config.audit.enabled` differs.
    let mut servers = vec![common::spawn_server(listener, service.clone())];
    let mut bases = vec![("on", Arc::new(base.clone()))];
    if settings.audit.iter().any(|a| a == "off") {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let quiet_base = format!("http://{}/fhir", listener.local_addr().expect("addr"));
        servers.push(common::spawn_server(
            listener,
            common::without_audit(&service),
        ));
        bases.push(("off", Arc::new(quiet_base)));
    }
    let admin = common::token(&service, "admin", "user/*.cruds", None);
    let clinician = common::token(
        &service,
        "clinician",
        "user/*.cruds",
        Some(&search_data::clinic_id(&sizes)),
    );
    let client = common::client_with(&admin, Duration::from_secs(300));
    let client_for = |caller: &str| match caller {
        "admin" => client.clone(),
        "clinician" => common::client_with(&clinician, Duration::from_secs(300)),
        _ => common::client_with_headers(
            &clinician,
            &[("x-purpose-of-use", "ETREAT")],
            Duration::from_secs(300),
        ),
    };
    let token_and_purpose = |caller: &str| match caller {
        "admin" => (admin.as_str(), None),
        "clinician" => (clinician.as_str(), None),
        _ => (clinician.as_str(), Some("ETREAT")),
    };

    // The data set: reuse it if it is there, load it if the database is empty.
    let found = counts(&client, &base, &sizes).await;
    let import_file = dir.join("bench-search-import.json");
    let import = if found.iter().all(|(_, expected, n)| *n == *expected as i64) {
        eprintln!(
            "the database already holds this data set ({} resources); not loading",
            sizes.total()
        );
        let previous = std::fs::read(&import_file)
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok());
        json!({"reused": true, "loading_run": previous})
    } else if found.iter().all(|(_, _, n)| *n == 0) {
        let mut report = load(&service, sizes, settings.import_concurrency).await;
        if postgres {
            // What autovacuum does some time after such a load (statistics, and the visibility
            // map that index-only scans need); makes the first run's plans and timings repeatable.
            // Measured with ANALYZE alone, the first run right after the load had
            // obs_subject_code_date p95 355 ms against 8 ms in a second run on the same database.
            let mut conn = service.store.reader().await.expect("reader");
            sqlx::Executor::execute(&mut *conn, "VACUUM ANALYZE")
                .await
                .expect("VACUUM ANALYZE");
            eprintln!("ran VACUUM ANALYZE");
        }
        if !postgres {
            let db = dir.join("fhirvault.db");
            let mut wal = db.clone().into_os_string();
            wal.push("-wal");
            report["sqlite_bytes"] = json!(file_size(&db) + file_size(Path::new(&wal)));
        }
        if settings.data_dir.is_some() {
            let _ = std::fs::write(
                &import_file,
                serde_json::to_vec_pretty(&report).expect("json"),
            );
        }
        report
    } else {
        let found: Vec<String> = found
            .iter()
            .map(|(k, e, n)| format!("{} {n} (want {e})", k.resource_type()))
            .collect();
        panic!(
            "the database holds a different data set: {}. Use an empty database or another FHIRVAULT_BENCH_DATA_DIR.",
            found.join(", ")
        );
    };
    let consents = write_consents(&service, &client, &base, &sizes).await;
    if postgres {
        // The planner's statistics for the consent_rules rows just written.
        let mut conn = service.store.reader().await.expect("reader");
        sqlx::Executor::execute(&mut *conn, "ANALYZE consent_rules")
            .await
            .expect("ANALYZE consent_rules");
    }

    let ctx = Arc::new(Ctx {
        sizes,
        keys: keys.clone(),
        pseudonym_system: service.config.pseudonym_system.clone(),
    });

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
            .and_then(|ids| {
                ids.iter()
                    .find(|i| i["system"] == ctx.pseudonym_system.as_str())
            })
            .and_then(|i| i["value"].as_str())
            .expect("Patient has a pseudonym identifier")
            .to_string();
        assert_eq!(
            stored,
            keys.pseudonym(&search_data::pseudonym_identity(0)),
            "pseudonym as the server assigns it"
        );
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
        let diagnostics = body
            .pointer("/issue/0/diagnostics")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        json!({"query": "Claim?patient=Patient/p000001&_include=Claim:coverage", "status": status, "diagnostics": diagnostics})
    };

    let date = chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string();
    println!();
    println!(
        "fhirvault search benchmark — {backend} — {date} — {cores} cores, server and clients in one process"
    );
    println!(
        "data set: {} Observations, {} Patients, {} Devices, {} Coverages, {} Claims, {} Organizations ({} resources)",
        sizes.observations,
        sizes.patients,
        sizes.devices,
        sizes.coverages,
        sizes.claims,
        sizes.organizations,
        sizes.total()
    );
    println!(
        "consents: {} patients hold a privacy Consent, {} of them deny the clinic; {} consent_rules rows",
        consents["patients_with_consent"], consents["deny_clinic"], consents["consent_rules_rows"]
    );
    if let Some(rate) = import["per_second"].as_f64() {
        println!("import: {} s, {rate} resources/s", import["seconds"]);
    } else if let Some(rate) = import
        .pointer("/loading_run/per_second")
        .and_then(Value::as_f64)
    {
        println!(
            "import (earlier run that loaded this data set): {} s, {rate} resources/s",
            import["loading_run"]["seconds"]
        );
    }
    println!(
        "literal `{}`: HTTP {} {}",
        literal_claim["query"].as_str().unwrap_or_default(),
        literal_claim["status"],
        literal_claim["diagnostics"].as_str().unwrap_or_default()
    );

    // Every (server, caller) the run measures, in the order they take turns.
    let variants: Vec<Variant> = bases
        .iter()
        .filter(|(audit, _)| settings.audit.iter().any(|a| a == audit))
        .flat_map(|(audit, base)| {
            settings.callers.iter().map(|caller| Variant {
                audit: audit.to_string(),
                caller: caller.clone(),
                base: base.clone(),
                client: client_for(caller),
            })
        })
        .collect();

    // Warm-up (not measured): caches, connections and each server's token cache, a few queries
    // of each type per variant (at most 5 s of them per type and variant).
    for variant in &variants {
        for (t, query) in query_types.iter().enumerate() {
            let warm = (settings.queries / 10).clamp(1, 10);
            let started = Instant::now();
            for i in 0..warm {
                if started.elapsed() > Duration::from_secs(5) {
                    break;
                }
                let mut rng = Rng::new(0xFFFF_0000 ^ ((t as u64) << 20) ^ i as u64);
                let url = url_of(
                    &variant.base,
                    query.resource_type,
                    &(query.make)(&mut rng, &ctx),
                );
                if let Err(e) = search(&variant.client, url).await {
                    println!(
                        "warm-up {} as {} (audit {}): {e}",
                        query.name, variant.caller, variant.audit
                    );
                    break;
                }
            }
        }
    }

    let mut plans = Vec::new();
    if settings.explain {
        println!();
        println!(
            "the server's SQL for one sample of each query and caller, timed on its own (median of 3);"
        );
        println!(
            "the plan shown is the clinician's (access rule and consent condition) when it is measured:"
        );
        let callers: Vec<(String, Arc<Caller>)> = settings
            .callers
            .iter()
            .map(|c| {
                let (token, purpose) = token_and_purpose(c);
                (c.clone(), caller_of(&service, token, purpose))
            })
            .collect();
        for (t, query) in query_types.iter().enumerate() {
            let mut rng = Rng::new(0xEEEE_0000 ^ t as u64);
            let sample = (query.make)(&mut rng, &ctx);
            println!("\n{}", query.name);
            let mut shown = None;
            for (name, caller) in &callers {
                let mut explained = explain(&service, query, &sample, postgres, caller).await;
                explained["caller"] = json!(name);
                println!(
                    "  {:<9}  page query {} ms ({} rows), COUNT {} ms ({})",
                    name,
                    explained["page_ms_median_of_3"],
                    explained["page_rows"],
                    explained["count_ms_median_of_3"],
                    if explained["server_runs_count"] == true {
                        "run for Bundle.total: the page is full"
                    } else {
                        "not run: the page holds every match"
                    }
                );
                if let Some(e) = explained.get("error") {
                    println!("    error: {e}");
                }
                if shown.is_none() || name == "clinician" {
                    shown = Some(plans.len());
                }
                plans.push(explained);
            }
            for line in shown
                .and_then(|n| plans[n]["plan"].as_array())
                .into_iter()
                .flatten()
            {
                println!("    {}", line.as_str().unwrap_or_default());
            }
        }
    }

    println!();
    println!(
        "{} queries per type, client count and variant, in {} alternating rounds, cap {} s per variant; \
         latency = request sent to Bundle parsed",
        settings.queries, settings.rounds, settings.seconds
    );
    println!(
        "callers: admin (no access rule), clinician (access rule + consent), etreat (clinician with X-Purpose-Of-Use: ETREAT: access rule, no consent)"
    );
    println!(
        "audit: on (an AuditEvent per search, as deployed), off (the same service with Config.audit.enabled = false)"
    );
    println!();
    println!(
        "{:>7}  {:<5}  {:<9}  {:<22}  {:>5}  {:>3}  {:>8}  {:>8}  {:>8}  {:>8}  {:>8}  {:>7}  {:>6}  {:>8}",
        "clients",
        "audit",
        "caller",
        "query",
        "ok",
        "err",
        "q/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "max ms",
        "matches",
        "incl",
        "total"
    );
    let cap = Duration::from_secs(settings.seconds);
    let mut rows = Vec::new();
    for &clients in &settings.clients {
        for (t, query) in query_types.iter().enumerate() {
            let phases = {
                // The same parameters for every variant: the seed depends on the query type, the
                // client count and the request's number only.
                let targets: Arc<Vec<(reqwest::Client, Arc<String>)>> = Arc::new(
                    variants
                        .iter()
                        .map(|v| (v.client.clone(), v.base.clone()))
                        .collect(),
                );
                let (ctx, resource_type, make) = (ctx.clone(), query.resource_type, query.make);
                let names = vec![query.name; variants.len()];
                run_alternating(
                    &names,
                    clients,
                    settings.queries,
                    settings.rounds,
                    cap,
                    move |v, i| {
                        let mut rng =
                            Rng::new(((t as u64) << 40) ^ ((clients as u64) << 32) ^ i as u64);
                        let (client, base) = targets[v].clone();
                        let url = url_of(&base, resource_type, &make(&mut rng, &ctx));
                        async move { search(&client, url).await }
                    },
                )
                .await
            };
            for (variant, phase) in variants.iter().zip(phases) {
                let mut row = outcome_json(&phase);
                let figure = |key: &str| row[key].as_f64().unwrap_or(f64::NAN);
                println!(
                    "{:>7}  {:<5}  {:<9}  {:<22}  {:>5}  {:>3}  {:>8.1}  {:>8.2}  {:>8.2}  {:>8.2}  {:>8.2}  {:>7.1}  {:>6.1}  {:>8.0}",
                    phase.clients,
                    variant.audit,
                    variant.caller,
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
                let uncounted = row["pages_without_total"].as_u64().unwrap_or(0);
                if uncounted > 0 {
                    println!(
                        "         {uncounted} of {} pages came without Bundle.total (count past store.count_timeout_ms)",
                        phase.ok()
                    );
                }
                row["shape"] = json!(query.shape);
                row["caller"] = json!(variant.caller);
                row["audit"] = json!(variant.audit);
                rows.push(row);
            }
        }
    }

    let mut paged = Vec::new();
    if settings.pages > 0 {
        println!(
            "\npaging through Patient?_has:Observation:subject:code=…&_count=50, {} pages after the first, {} alternating rounds, server of audit {}:",
            settings.pages,
            settings.rounds,
            bases.last().map_or("on", |(audit, _)| *audit)
        );
        let base = bases
            .last()
            .map(|(_, base)| base.clone())
            .expect("a server");
        for caller in &settings.callers {
            paged.push(
                paging(
                    &client_for(caller),
                    &base,
                    caller,
                    settings.pages,
                    settings.rounds,
                )
                .await,
            );
        }
    }

    let authorization = compare(&rows, "caller", "clinician", "admin");
    let consent = compare(&rows, "caller", "clinician", "etreat");
    let audit = compare(&rows, "audit", "on", "off");
    print_comparison(
        "authorization overhead (same run): clinician (access rule + consent in every query) ÷ admin (none)",
        "audit",
        &authorization,
    );
    print_comparison(
        "consent overhead (same run): clinician (consent condition) ÷ the same clinician with ETREAT (none); overhead = q/s(ETREAT) ÷ q/s(consent)",
        "audit",
        &consent,
    );
    print_comparison(
        "audit trail (same run, same data): audit on ÷ audit off (Config.audit.enabled); overhead = q/s(off) ÷ q/s(on)",
        "caller",
        &audit,
    );

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
        "consents": consents,
        "queries_per_phase": settings.queries,
        "rounds": settings.rounds,
        "seconds_cap": settings.seconds,
        "literal_claim_coverage": literal_claim,
        "plans": plans,
        "phases": rows,
        "authorization_overhead": authorization,
        "consent_overhead": consent,
        "audit_overhead": audit,
        "paging": paged,
    });
    let out = common::target_dir().join("bench-search.json");
    if let Some(parent) = out.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    match std::fs::write(&out, serde_json::to_vec_pretty(&report).expect("json")) {
        Ok(()) => println!("\nwrote {}", out.display()),
        Err(e) => eprintln!("\ncould not write {}: {e}", out.display()),
    }

    common::stop_servers(servers).await;
    service.store.close().await;
}
