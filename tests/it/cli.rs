//! The `fhirvault` binary itself: first start on a fresh directory, import, key rotation while
//! the server serves.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_fhirvault");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Running {
    child: Child,
    base: String,
    log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `fhirvault serve` in `dir` (its working directory, so the defaults apply), waiting for /health.
fn serve(dir: &std::path::Path, extra: &[&str]) -> Running {
    let port = free_port();
    let mut child = Command::new(BIN)
        .current_dir(dir)
        .env(
            "FHIRVAULT_FHIR_RESOURCES",
            concat!(env!("CARGO_MANIFEST_DIR"), "/fhir-resources"),
        )
        .env("FHIRVAULT_LOG", "debug")
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(extra)
        .stderr(Stdio::piped())
        .spawn()
        .expect("start fhirvault");
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let stderr = child.stderr.take().unwrap();
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            sink.lock().unwrap().push_str(&line);
            sink.lock().unwrap().push('\n');
        }
    });
    // From here on the child is killed and reaped by `Running::drop`, also if we panic.
    let mut running = Running {
        child,
        base: format!("http://127.0.0.1:{port}/fhir"),
        log,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if healthy(port) {
            return running;
        }
        if let Ok(Some(status)) = running.child.try_wait() {
            panic!(
                "fhirvault exited with {status}: {}",
                running.log.lock().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "fhirvault did not become healthy: {}",
        running.log.lock().unwrap()
    );
}

impl Running {
    /// The log once it contains `text`, or after 10 s: the access log line of a request is
    /// written after its response, so the client can be faster than the log pipe.
    fn log_once_it_contains(&self, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.log.lock().unwrap().clone();
            if log.contains(text) || Instant::now() > deadline {
                return log;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A plain HTTP/1.0 GET /health over a socket: is the server up?
fn healthy(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream
        .write_all(b"GET /health HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.starts_with("HTTP/1.0 200") || response.starts_with("HTTP/1.1 200")
}

fn run(dir: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .current_dir(dir)
        .env(
            "FHIRVAULT_FHIR_RESOURCES",
            concat!(env!("CARGO_MANIFEST_DIR"), "/fhir-resources"),
        )
        .args(args)
        .output()
        .expect("run fhirvault");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// An HTTP client that sends an admin token for `server`, issued by `fhirvault token issue` from
/// the same data directory.
fn admin_client(dir: &std::path::Path, server: &Running) -> ::reqwest::Client {
    client_as(dir, server, &["--role", "admin"])
}

/// An HTTP client sending a token issued by the key ring in `dir` with `claims` (`--role` …).
fn client_as(dir: &std::path::Path, server: &Running, claims: &[&str]) -> ::reqwest::Client {
    let mut args = vec!["token", "issue", "--base-url", &server.base];
    args.extend_from_slice(claims);
    let (ok, stdout, stderr) = run(dir, &args);
    assert!(ok, "token issue: {stderr}");
    let mut headers = ::reqwest::header::HeaderMap::new();
    headers.insert(
        ::reqwest::header::AUTHORIZATION,
        format!("Bearer {}", stdout.trim_end()).parse().unwrap(),
    );
    ::reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_start_creates_store_and_key_file() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path(), &[]);
    let key_file = dir.path().join("fhirvault-data/keys.json");
    assert!(dir.path().join("fhirvault-data/fhirvault.db").exists());
    let mode = std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "key file mode");
    assert!(
        server
            .log
            .lock()
            .unwrap()
            .contains("created a new key ring"),
        "{}",
        server.log.lock().unwrap()
    );
    assert!(
        server
            .log
            .lock()
            .unwrap()
            .contains("fhirvault token issue --role admin"),
        "{}",
        server.log.lock().unwrap()
    );
    let client = admin_client(dir.path(), &server);
    let created: Value = client
        .post(format!("{}/Patient", server.base))
        .header("content-type", "application/fhir+json")
        .body(json!({"resourceType": "Patient", "name": [{"family": "Erststart"}]}).to_string())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(created["meta"]["versionId"], "1");
    let search = client
        .get(format!("{}/Patient?name=Erststart", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(search.status(), 200);
    // Even at debug level the log names routes and ids, never the patient's name or the query.
    let log = server.log_once_it_contains("/fhir/{type}");
    assert!(log.contains("/fhir/{type}"), "requests are logged: {log}");
    assert_eq!(
        log.matches("without TLS, on loopback: for development only")
            .count(),
        1,
        "plain text is announced once: {log}"
    );
    assert!(!log.contains("Erststart"), "PHI in the log: {log}");
    drop(server);
    let second = serve(dir.path(), &[]);
    assert!(
        !second
            .log
            .lock()
            .unwrap()
            .contains("created a new key ring")
    );
    assert!(!second.log.lock().unwrap().contains("token issue"));
}

#[test]
fn bad_settings_name_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, _, stderr) = run(dir.path(), &["serve", "--listen", "not-an-address"]);
    assert!(!ok);
    assert!(stderr.contains("`listen`"), "{stderr}");
    let (ok, _, stderr) = run(dir.path(), &["serve", "--database-url", "mysql://x"]);
    assert!(!ok);
    assert!(stderr.contains("`database_url`"), "{stderr}");
    // Plain text beyond loopback, and TLS files that are not there.
    let (ok, _, stderr) = run(dir.path(), &["serve", "--listen", "0.0.0.0:8080"]);
    assert!(!ok);
    assert!(
        stderr.contains("`listen`") && stderr.contains("needs TLS"),
        "{stderr}"
    );
    let (ok, _, stderr) = run(dir.path(), &["serve", "--mllp-listen", "0.0.0.0:2575"]);
    assert!(!ok);
    assert!(
        stderr.contains("`mllp_listen`") && stderr.contains("needs TLS"),
        "{stderr}"
    );
    let (ok, _, stderr) = run(
        dir.path(),
        &[
            "serve",
            "--listen",
            "0.0.0.0:8080",
            "--tls-cert",
            "missing.pem",
            "--tls-key",
            "missing-key.pem",
        ],
    );
    assert!(!ok);
    assert!(
        stderr.contains("`tls.cert_file`") && stderr.contains("cannot read missing.pem"),
        "{stderr}"
    );
    std::fs::write(dir.path().join("bad.toml"), "listen = 5\n").unwrap();
    let (ok, _, stderr) = run(dir.path(), &["--config", "bad.toml", "serve"]);
    assert!(!ok);
    assert!(stderr.contains("`config`"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_ndjson_and_bundle_then_rotate_keys_while_serving() {
    let dir = tempfile::tempdir().unwrap();
    let mut ndjson = String::new();
    for i in 0..1200 {
        ndjson.push_str(&json!({"resourceType": "Patient", "id": format!("imp-{i}"), "name": [{"family": format!("Import{i}")}]}).to_string());
        ndjson.push('\n');
    }
    ndjson.push_str("{\"resourceType\": \"Patient\", \"gender\": \"robot\"}\n");
    std::fs::write(dir.path().join("patients.ndjson"), ndjson).unwrap();
    let bundle = json!({"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": {"resourceType": "Organization", "id": "org-1", "name": "Klinik"}}
    ]});
    std::fs::write(dir.path().join("orgs.json"), bundle.to_string()).unwrap();
    let (ok, stdout, stderr) = run(dir.path(), &["import", "patients.ndjson", "orgs.json"]);
    assert!(!ok, "a rejected resource makes the import exit non-zero");
    assert!(
        stdout.contains("imported 1201 resources, rejected 1"),
        "{stdout} {stderr}"
    );
    assert!(stderr.contains("line 1201"), "{stderr}");

    let server = serve(dir.path(), &[]);
    let client = admin_client(dir.path(), &server);
    let read = client
        .get(format!("{}/Patient/imp-7", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);
    // 1201 resources, an AuditEvent per import batch (500 + 500 + 201 lines, 1 Bundle) and one
    // for the read above. The read's is in the read journal first and in the database moments
    // later (a drain every 100 ms): wait for it.
    let sealed = 1201 + 4 + 1;
    let mut stdout = String::new();
    for _ in 0..50 {
        let (ok, out, _) = run(dir.path(), &["keys", "status"]);
        assert!(ok);
        stdout = out;
        if stdout.contains(&format!("key 1 (active): {sealed} rows")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        stdout.contains(&format!("key 1 (active): {sealed} rows")),
        "{stdout}"
    );

    // Rotate while the server runs; it keeps reading and writing throughout.
    let (ok, stdout, stderr) = run(dir.path(), &["keys", "rotate"]);
    assert!(ok, "{stdout} {stderr}");
    assert!(
        stdout.contains(&format!("re-encrypted {sealed} rows under key 2")),
        "{stdout}"
    );
    for id in ["imp-0", "imp-600", "imp-1199", "org-1"] {
        let t = if id.starts_with("org") {
            "Organization"
        } else {
            "Patient"
        };
        let read = client
            .get(format!("{}/{t}/{id}", server.base))
            .send()
            .await
            .unwrap();
        assert_eq!(read.status(), 200, "{id} readable after rotation");
    }
    // Within a few seconds the server seals new writes with the new key.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let created = client
        .post(format!("{}/Patient", server.base))
        .header("content-type", "application/fhir+json")
        .body(json!({"resourceType": "Patient"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let (ok, stdout, _) = run(dir.path(), &["keys", "status"]);
    assert!(ok);
    assert!(stdout.contains("key 1: 0 rows"), "{stdout}");
    // Everything sealed before, the new Patient, and the AuditEvents of the four reads and the create.
    assert!(
        stdout.contains(&format!("key 2 (active): {} rows", sealed + 1 + 5)),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_ring_from_the_environment() {
    let keys_dir = tempfile::tempdir().unwrap();
    let (ok, _, _) = run(keys_dir.path(), &["keys", "init"]);
    assert!(ok);
    let content = std::fs::read(keys_dir.path().join("fhirvault-data/keys.json")).unwrap();
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(content);
    let dir = tempfile::tempdir().unwrap();
    // The variable is set on the child only, never on the test process.
    let port = free_port();
    let mut child = Command::new(BIN)
        .current_dir(dir.path())
        .env(
            "FHIRVAULT_FHIR_RESOURCES",
            concat!(env!("CARGO_MANIFEST_DIR"), "/fhir-resources"),
        )
        .env("FHIRVAULT_KEY_RING", &encoded)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !healthy(port) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let up = healthy(port);
    let key_file_written = dir.path().join("fhirvault-data/keys.json").exists();
    let _ = child.kill();
    let _ = child.wait();
    assert!(up, "server started with the key ring from the environment");
    assert!(
        !key_file_written,
        "no key file is created when the environment carries the key ring"
    );
}

/// The claims of `token` as a verifier for `base_url` with the keys `jwks` sees them.
fn verify_token(
    token: &str,
    jwks: &fhirvault::auth::token::JwkSet,
    base_url: &str,
) -> fhirvault::auth::token::Claims {
    let verifier = fhirvault::auth::token::TokenVerifier::new(jwks.clone(), base_url, base_url, 60);
    verifier
        .verify(token, chrono::Utc::now().timestamp())
        .unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_issue_prints_a_token_signed_by_the_key_ring() {
    let dir = tempfile::tempdir().unwrap();
    // A key file from before tokens existed gets its signing key on first use, still 0600.
    let key_file = dir.path().join("fhirvault-data/keys.json");
    std::fs::create_dir_all(key_file.parent().unwrap()).unwrap();
    let legacy = r#"{"format":1,"active":1,"index_root_key":1,"keys":[{"id":1,"created":"2025-01-01T00:00:00Z","secret":"AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="}]}"#;
    std::fs::write(&key_file, legacy).unwrap();
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();

    let (ok, stdout, stderr) = run(dir.path(), &["token", "issue", "--role", "admin"]);
    assert!(ok, "{stderr}");
    assert_eq!(
        stdout.lines().count(),
        1,
        "stdout is the token only: {stdout}"
    );
    let token = stdout.trim_end();
    assert_eq!(token.split('.').count(), 3);
    assert!(
        std::fs::read_to_string(&key_file)
            .unwrap()
            .contains("signing_key")
    );
    assert_eq!(
        std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // The server publishes the key that verifies it, and describes itself for SMART apps.
    let server = serve(dir.path(), &[]);
    let client = ::reqwest::Client::new();
    let jwks_body = client
        .get(format!("{}/.well-known/jwks.json", server.base))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let jwks = fhirvault::auth::token::JwkSet::from_json(&jwks_body).unwrap();
    // Issued for the default base URL, which `token issue` assumed (no --listen or --base-url).
    let default_base = "http://127.0.0.1:8080/fhir";
    let claims = verify_token(token, &jwks, default_base);
    let ring = fhirvault::crypto::KeyRing::load(&key_file).unwrap();
    let config = fhirvault::config::AuthConfig::for_base_url(default_base);
    let from_ring = fhirvault::auth::token::TokenVerifier::from_config(&config, &ring).unwrap();
    assert_eq!(
        from_ring
            .verify(token, chrono::Utc::now().timestamp())
            .unwrap(),
        claims
    );
    assert_eq!(
        (claims.roles.as_slice(), claims.scope.as_str()),
        (["admin".to_string()].as_slice(), "user/*.cruds")
    );
    assert_eq!(claims.exp - claims.iat.unwrap(), 3600);
    for path in [
        "/.well-known/smart-configuration",
        "/fhir/.well-known/smart-configuration",
    ] {
        let root = server.base.trim_end_matches("/fhir");
        let smart: Value = client
            .get(format!("{root}{path}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(smart["issuer"], server.base.as_str(), "{path}");
        assert_eq!(
            smart["jwks_uri"],
            format!("{}/.well-known/jwks.json", server.base)
        );
    }
    drop(server);

    let base = "https://fhir.example/fhir";
    let (ok, stdout, stderr) = run(
        dir.path(),
        &[
            "token",
            "issue",
            "--role",
            "clinician",
            "--scope",
            "patient/*.rs",
            "--patient",
            "p-1",
            "--org",
            "o-1",
            "--subject",
            "dr-1",
            "--ttl",
            "15m",
            "--base-url",
            base,
        ],
    );
    assert!(ok, "{stderr}");
    let claims = verify_token(stdout.trim_end(), &jwks, base);
    assert_eq!(
        (
            claims.sub.as_str(),
            claims.patient.as_deref(),
            claims.org.as_deref()
        ),
        ("dr-1", Some("p-1"), Some("o-1"))
    );
    assert_eq!(
        (claims.scope.as_str(), claims.exp - claims.iat.unwrap()),
        ("patient/*.rs", 900)
    );

    let (ok, stdout, stderr) = run(dir.path(), &["token", "issue", "--role", "clinician"]);
    assert!(!ok && stdout.is_empty());
    assert!(stderr.contains("--scope is required"), "{stderr}");
    let (ok, _, stderr) = run(
        dir.path(),
        &["token", "issue", "--role", "admin", "--ttl", "2x"],
    );
    assert!(!ok);
    assert!(stderr.contains("--ttl"), "{stderr}");
}

/// The commands that write beside a server (`import`, `ingest`) take its settings, so that what
/// they record names that server: every AuditEvent's source is the server's base URL, also those
/// of an import and an ingest given `--base-url` (before, they named the default base).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_and_ingest_record_the_servers_base_url() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path(), &[]);
    let auditor = client_as(
        dir.path(),
        &server,
        &["--role", "auditor", "--scope", "user/AuditEvent.rs"],
    );
    let bundle = json!({"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": {"resourceType": "Organization", "id": "org-base", "name": "Klinik"}}
    ]});
    std::fs::write(dir.path().join("orgs.json"), bundle.to_string()).unwrap();
    let message = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/hl7v2/holter-pcd01.hl7"
    );
    for command in [["import", "orgs.json"], ["ingest", message]] {
        let (ok, stdout, stderr) = run(
            dir.path(),
            &[command[0], command[1], "--base-url", &server.base],
        );
        assert!(ok, "{command:?}: {stdout} {stderr}");
    }
    let events: Value = auditor
        .get(format!("{}/AuditEvent?_count=100", server.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let sources: std::collections::BTreeSet<String> = events["entry"]
        .as_array()
        .unwrap_or_else(|| panic!("entries: {events}"))
        .iter()
        .map(|entry| {
            entry["resource"]["source"]["observer"]["identifier"]["value"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    let subtypes: Vec<&str> = events["entry"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|entry| entry["resource"]["type"]["code"].as_str())
        .collect();
    assert!(
        subtypes.contains(&"110107"),
        "the import and the ingest are recorded: {subtypes:?}"
    );
    assert_eq!(sources, [server.base.clone()].into(), "{events}");
}
