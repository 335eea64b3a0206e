//! HL7 v2 ingestion load benchmark: realistic Holter ORU^R01 messages (25 OBX each) over MLLP
//! into the real server, with ACK-after-commit, against a raw batched insert of the same number
//! of sealed rows into the same database, measured in the same run.
//!
//! ```sh
//! cargo bench --bench ingest
//! FHIRVAULT_BENCH_DATABASE_URL=postgres://… cargo bench --bench ingest
//! ```
//!
//! Knobs (environment): FHIRVAULT_BENCH_MESSAGES (default 600), FHIRVAULT_BENCH_CONNECTIONS (8),
//! FHIRVAULT_BENCH_WINDOW (messages in flight per connection, default 4: senders pipeline, and
//! each ACK still comes only after its commit), FHIRVAULT_BENCH_PATIENTS (100),
//! FHIRVAULT_BENCH_DATABASE_URL (an empty PostgreSQL database; default a temp SQLite file).
//! Prints a table and writes target/bench-ingest.json.

mod common;

use std::collections::VecDeque;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fhirvault::config::{Config, DatabaseUrl};
use fhirvault::crypto::{Aad, KeyRing};
use fhirvault::hl7v2::codes::CodeTable;
use fhirvault::hl7v2::er7::Message;
use fhirvault::hl7v2::mllp::MllpClient;
use serde_json::{Value, json};
use sqlx::Executor;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use tokio::sync::oneshot;

use common::{OBX_PER_MESSAGE, holter_message, round};

struct Settings {
    messages: usize,
    connections: usize,
    window: usize,
    patients: usize,
    database_url: Option<String>,
}

impl Settings {
    fn from_env() -> Settings {
        fn var<T: FromStr>(name: &str, default: T) -> T {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        }
        Settings {
            messages: var("FHIRVAULT_BENCH_MESSAGES", 600),
            connections: var("FHIRVAULT_BENCH_CONNECTIONS", 8),
            window: var("FHIRVAULT_BENCH_WINDOW", 4).max(1),
            patients: var("FHIRVAULT_BENCH_PATIENTS", 100).max(1),
            database_url: std::env::var("FHIRVAULT_BENCH_DATABASE_URL").ok(),
        }
    }
}

fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1].as_secs_f64() * 1000.0
}

/// Send `messages` over one connection with up to `window` in flight; the ACK latency of each.
async fn stream(
    addr: std::net::SocketAddr,
    messages: Vec<String>,
    window: usize,
) -> Result<Vec<Duration>, String> {
    let mut client = MllpClient::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let mut pending: VecDeque<Instant> = VecDeque::new();
    let mut latencies = Vec::with_capacity(messages.len());
    let mut next = messages.into_iter();
    loop {
        while pending.len() < window {
            let Some(message) = next.next() else { break };
            client
                .send(message.as_bytes())
                .await
                .map_err(|e| format!("send: {e}"))?;
            pending.push_back(Instant::now());
        }
        let Some(sent) = pending.pop_front() else {
            return Ok(latencies);
        };
        let ack = client
            .receive()
            .await
            .map_err(|e| format!("receive: {e}"))?
            .ok_or("connection closed")?;
        latencies.push(sent.elapsed());
        let parsed = Message::parse(&ack).map_err(|e| format!("ACK does not parse: {e}"))?;
        let code = parsed
            .first("MSA")
            .map(|m| m.text(1).to_string())
            .unwrap_or_default();
        if code != "AA" {
            let errors: Vec<String> = parsed.all("ERR").map(|e| e.text(8).to_string()).collect();
            return Err(format!("ACK {code}: {errors:?}"));
        }
    }
}

/// Send `messages` over `connections` connections at once; (elapsed, latencies sorted).
async fn run(
    addr: std::net::SocketAddr,
    messages: Vec<String>,
    connections: usize,
    window: usize,
) -> (Duration, Vec<Duration>) {
    let queue = Arc::new(Mutex::new(messages));
    let per_connection = queue.lock().unwrap().len().div_ceil(connections);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let share: Vec<String> = {
            let mut queue = queue.lock().unwrap();
            let take = per_connection.min(queue.len());
            queue.drain(..take).collect()
        };
        tasks.push(tokio::spawn(stream(addr, share, window)));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(
            task.await
                .expect("sender task")
                .expect("every message acknowledged AA"),
        );
    }
    let elapsed = started.elapsed();
    latencies.sort();
    (elapsed, latencies)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let settings = Settings::from_env();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let codes = CodeTable::load().expect("code tables");

    let dir = tempfile::tempdir().expect("temp dir");
    let database = match &settings.database_url {
        Some(url) => DatabaseUrl::parse(url).expect("FHIRVAULT_BENCH_DATABASE_URL"),
        None => DatabaseUrl::Sqlite(dir.path().join("fhirvault.db")),
    };
    let backend = if matches!(database, DatabaseUrl::Sqlite(_)) {
        "sqlite"
    } else {
        "postgres"
    };
    let keys = KeyRing::from_master_secret([7; 32]);
    let http = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let mllp = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind MLLP");
    let (addr, mllp_addr) = (
        http.local_addr().expect("addr"),
        mllp.local_addr().expect("MLLP addr"),
    );
    let mut config = Config::for_dir(dir.path(), Some(database.clone()));
    config.listen = addr;
    config.base_url = format!("http://{addr}/fhir");
    let service = fhirvault::server::open_service(config, Some(keys.clone()))
        .await
        .expect("service starts");
    let admin = common::client_with(
        &common::token(&service, "admin", "user/*.cruds", None),
        Duration::from_secs(30),
    );
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        fhirvault::server::serve_with_mllp(http, Some(mllp), service, async {
            let _ = stopped.await;
        })
        .await
        .expect("server runs");
    });

    // Warm-up, not measured: the first message of every patient creates the Patient and Device.
    let warmup: Vec<String> = (0..settings.patients)
        .map(|p| holter_message(p, p, &codes))
        .collect();
    run(mllp_addr, warmup, settings.connections, 1).await;

    let messages: Vec<String> = (0..settings.messages)
        .map(|i| holter_message(settings.patients + i, i % settings.patients, &codes))
        .collect();
    let message_bytes = messages.iter().map(String::len).sum::<usize>() / messages.len().max(1);
    let (elapsed, latencies) =
        run(mllp_addr, messages, settings.connections, settings.window).await;
    let message_rate = latencies.len() as f64 / elapsed.as_secs_f64();
    let observation_rate = message_rate * OBX_PER_MESSAGE as f64;

    // The baseline: the same number of sealed Observation rows, batched raw INSERTs.
    let stored: Value = admin
        .get(format!("http://{addr}/fhir/Observation?_count=1"))
        .send()
        .await
        .expect("read")
        .json()
        .await
        .expect("json");
    let observation = &stored["entry"][0]["resource"];
    assert!(
        observation.is_object(),
        "an ingested Observation to size the baseline's rows: {stored}"
    );
    let body = serde_json::to_vec(observation).expect("json");
    let rows = settings.messages * OBX_PER_MESSAGE;
    let raw_rate = raw_insert(&database, &keys, &body, rows).await;

    let _ = stop.send(());
    let _ = server.await;

    let date = chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string();
    println!();
    println!(
        "fhirvault HL7 v2 ingest benchmark — {backend} — {date} — {cores} cores, server and senders in one process"
    );
    println!(
        "{} messages × {OBX_PER_MESSAGE} OBX ({message_bytes} B each) over {} MLLP connections, {} in flight each, {} patients",
        settings.messages, settings.connections, settings.window, settings.patients
    );
    println!();
    println!("  messages/s        {message_rate:>10.1}");
    println!("  Observations/s    {observation_rate:>10.1}");
    println!(
        "  ACK p50 ms        {:>10.2}",
        percentile_ms(&latencies, 50.0)
    );
    println!(
        "  ACK p99 ms        {:>10.2}",
        percentile_ms(&latencies, 99.0)
    );
    println!(
        "  raw sealed rows/s {raw_rate:>10.1}   ({} B per row, 500 rows per transaction)",
        body.len()
    );
    println!("  ingest ÷ raw      {:>10.3}", observation_rate / raw_rate);

    let report = json!({
        "benchmark": "ingest",
        "backend": backend,
        "date": date,
        "cores": cores,
        "messages": settings.messages,
        "obx_per_message": OBX_PER_MESSAGE,
        "connections": settings.connections,
        "window": settings.window,
        "patients": settings.patients,
        "messages_per_second": round(message_rate, 1),
        "observations_per_second": round(observation_rate, 1),
        "ack_p50_ms": round(percentile_ms(&latencies, 50.0), 2),
        "ack_p99_ms": round(percentile_ms(&latencies, 99.0), 2),
        "raw_rows_per_second": round(raw_rate, 1),
        "ratio_ingest_to_raw": round(observation_rate / raw_rate, 3),
    });
    let out = common::target_dir().join("bench-ingest.json");
    let _ = std::fs::write(&out, serde_json::to_vec_pretty(&report).expect("json"));
    println!("\nwrote {}", out.display());
}

/// Rows per second for `rows` sealed copies of `body`, 500 per transaction in multi-row INSERTs,
/// into a scratch table of the same database (the server's writer settings on SQLite).
async fn raw_insert(database: &DatabaseUrl, keys: &KeyRing, body: &[u8], rows: usize) -> f64 {
    let pool = match database {
        DatabaseUrl::Sqlite(path) => {
            let options =
                AnyConnectOptions::from_str(&format!("sqlite://{}?mode=rwc", path.display()))
                    .expect("sqlite url");
            fhirvault::store::sqlite_pool(1)
                .connect_with(options)
                .await
                .expect("raw sqlite pool")
        }
        DatabaseUrl::Postgres(url) => AnyPoolOptions::new()
            .max_connections(2)
            .connect(url)
            .await
            .expect("raw postgres pool"),
    };
    let blob = if matches!(database, DatabaseUrl::Sqlite(_)) {
        "BLOB"
    } else {
        "BYTEA"
    };
    pool.execute("DROP TABLE IF EXISTS bench_raw_ingest")
        .await
        .expect("drop");
    pool.execute(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE bench_raw_ingest (id TEXT PRIMARY KEY, body {blob})"
    )))
    .await
    .expect("create");
    let postgres = matches!(database, DatabaseUrl::Postgres(_));
    let started = Instant::now();
    for chunk_start in (0..rows).step_by(500) {
        let chunk = (chunk_start..(chunk_start + 500).min(rows)).collect::<Vec<_>>();
        let placeholders: Vec<String> = (0..chunk.len())
            .map(|i| {
                if postgres {
                    format!("(${}, ${})", 2 * i + 1, 2 * i + 2)
                } else {
                    "(?, ?)".to_string()
                }
            })
            .collect();
        let sql = format!(
            "INSERT INTO bench_raw_ingest (id, body) VALUES {}",
            placeholders.join(", ")
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for i in &chunk {
            let id = format!("raw-{i}");
            let sealed = keys
                .seal(
                    &Aad::Resource {
                        resource_type: "Observation",
                        id: &id,
                        version: 1,
                    },
                    body,
                )
                .expect("seal");
            query = query.bind(id).bind(sealed);
        }
        let mut tx = pool.begin().await.expect("begin");
        query.execute(&mut *tx).await.expect("raw insert");
        tx.commit().await.expect("commit");
    }
    let rate = rows as f64 / started.elapsed().as_secs_f64();
    pool.close().await;
    rate
}
