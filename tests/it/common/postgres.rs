//! A throwaway PostgreSQL cluster for the test process: initdb into a temporary directory, started
//! on a free loopback port, stopped by a watchdog when the test process exits. Each test gets a
//! fresh database in it. As root, the cluster runs as the `postgres` user (PostgreSQL refuses
//! root). The PostgreSQL 15 server binaries are found under /usr/lib/postgresql, or in
//! FHIRVAULT_PG_BIN.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

struct Cluster {
    port: u16,
    _dir: PathBuf,
}

static CLUSTER: OnceLock<Cluster> = OnceLock::new();
static DATABASES: AtomicU32 = AtomicU32::new(0);

fn bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("FHIRVAULT_PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut candidates: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL server binaries under /usr/lib/postgresql (or set FHIRVAULT_PG_BIN)")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    candidates.sort();
    candidates
        .pop()
        .expect("an initdb under /usr/lib/postgresql/*/bin")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Run a PostgreSQL binary, as the postgres user when we are root.
fn pg(binary: &Path, args: &[&str]) -> std::process::Output {
    let mut command = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(binary);
        c
    } else {
        Command::new(binary)
    };
    command
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", binary.display()))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn start_cluster() -> Cluster {
    let bin = bin_dir();
    let dir = std::env::temp_dir().join(format!(
        "fhirvault-pg-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&dir).expect("cluster dir");
    if is_root() {
        let status = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&dir)
            .status()
            .expect("chown");
        assert!(status.success(), "chown of the cluster directory");
    }
    let data = dir.join("data");
    let data_str = data.to_str().expect("utf-8 path");
    let out = pg(
        &bin.join("initdb"),
        &[
            "-D",
            data_str,
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--no-locale",
            "--no-sync",
        ],
    );
    assert!(
        out.status.success(),
        "initdb failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let port = free_port();
    let options = format!(
        "-p {port} -c listen_addresses=127.0.0.1 -k {} -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300",
        dir.display()
    );
    let log = dir.join("log");
    let out = pg(
        &bin.join("pg_ctl"),
        &[
            "-D",
            data_str,
            "-o",
            &options,
            "-l",
            log.to_str().expect("utf-8"),
            "-w",
            "start",
        ],
    );
    assert!(
        out.status.success(),
        "pg_ctl start failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Stop the cluster when this test process exits, however it exits.
    let pg_ctl = bin.join("pg_ctl");
    let stop = if is_root() {
        format!(
            "runuser -u postgres -- {} -D {data_str} -m immediate stop",
            pg_ctl.display()
        )
    } else {
        format!("{} -D {data_str} -m immediate stop", pg_ctl.display())
    };
    let script = format!(
        "while kill -0 {} 2>/dev/null; do sleep 1; done; {stop} >/dev/null 2>&1; rm -rf {}",
        std::process::id(),
        dir.display()
    );
    // The watchdog outlives this process on purpose, so it is never waited for.
    #[allow(clippy::zombie_processes)]
    Command::new("sh")
        .args(["-c", &script])
        .spawn()
        .expect("watchdog");
    Cluster { port, _dir: dir }
}

/// The URL of a new, empty database in the shared cluster.
pub async fn fresh_database() -> String {
    let cluster = CLUSTER.get_or_init(start_cluster);
    let n = DATABASES.fetch_add(1, Ordering::SeqCst);
    let name = format!("fhirvault_test_{n}");
    let admin = format!("postgres://postgres@127.0.0.1:{}/postgres", cluster.port);
    sqlx::any::install_default_drivers();
    let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&admin)
        .await
        .expect("connect to the test cluster");
    sqlx::Executor::execute(
        &mut conn,
        sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")),
    )
    .await
    .expect("create database");
    format!("postgres://postgres@127.0.0.1:{}/{name}", cluster.port)
}

/// `pg_dump` of a database, as text (for the raw-dump PHI scan).
pub fn dump(url: &str) -> String {
    let bin = bin_dir();
    let out = pg(&bin.join("pg_dump"), &["--data-only", url]);
    assert!(
        out.status.success(),
        "pg_dump failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
