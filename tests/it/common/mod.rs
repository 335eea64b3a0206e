//! Test harness: a real fhirvault server on a loopback port, over a real SQLite file or a real
//! PostgreSQL database, driven with real HTTP. Every test runs against both backends through
//! [`both_backends!`].

#![allow(dead_code)]

pub mod ca;
pub mod idp;
pub mod pki;
pub mod postgres;

use std::net::SocketAddr;
use std::path::PathBuf;

use fhirvault::auth::token::{IssueRequest, TokenIssuer};
use fhirvault::config::{Config, DatabaseUrl, TlsConfig};
use fhirvault::tls::ServerTls;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio::sync::oneshot;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A running server. Dropping it shuts the server down.
pub struct TestServer {
    pub addr: SocketAddr,
    /// The HL7 v2 MLLP listener.
    pub mllp: SocketAddr,
    pub base: String,
    pub client: reqwest::Client,
    pub dir: tempfile::TempDir,
    pub database: DatabaseUrl,
    pub backend: Backend,
    /// Signs test tokens with the server's key ring; `client` sends an admin token by default.
    pub issuer: TokenIssuer,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    pub async fn start(backend: Backend) -> TestServer {
        let (dir, database) = fresh_store(backend).await;
        Self::start_with(backend, dir, database, |_| {}).await
    }

    /// Start with HTTPS and MLLP over TLS, configured by `tls` (see [`pki::TestPki`]). The
    /// reqwest `client` speaks plain HTTP only: send HTTPS requests with [`pki::TestPki::get`].
    pub async fn start_tls(backend: Backend, tls: TlsConfig) -> TestServer {
        let (dir, database) = fresh_store(backend).await;
        Self::start_with(backend, dir, database, |config| {
            config.base_url = config.base_url.replacen("http://", "https://", 1);
            config.tls = Some(tls);
        })
        .await
    }

    /// Start with a configuration tweak (page sizes, body limits, TLS, …).
    pub async fn start_with(
        backend: Backend,
        dir: tempfile::TempDir,
        database: DatabaseUrl,
        tweak: impl FnOnce(&mut Config),
    ) -> TestServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mllp_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind MLLP");
        let mllp = mllp_listener.local_addr().expect("MLLP addr");
        let mut config = Config::for_dir(dir.path(), Some(database.clone()));
        config.listen = addr;
        config.base_url = format!("http://{addr}/fhir");
        config.auth = fhirvault::config::AuthConfig::for_base_url(&config.base_url);
        tweak(&mut config);
        let base = config.base_url.clone();
        // As `fhirvault serve` does: the files named in the configuration, read once.
        let tls = ServerTls::load(config.tls.as_ref()).expect("TLS files load");
        let service = fhirvault::server::open_service(config, None)
            .await
            .expect("service starts");
        let issuer = TokenIssuer::from_config(&service.config.auth, &service.keys.current())
            .expect("token issuer");
        let admin = issue(&issuer, "admin", "user/*.cruds", None, None);
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {admin}").parse().expect("header"),
        );
        let client = reqwest::Client::builder()
            .default_headers(headers)
            .build()
            .expect("client");
        let (tx, rx) = oneshot::channel::<()>();
        let listeners = fhirvault::server::Listeners {
            http: listener,
            mllp: Some(mllp_listener),
            tls,
        };
        let task = tokio::spawn(async move {
            fhirvault::server::serve_listeners(listeners, service, async {
                let _ = rx.await;
            })
            .await
            .expect("server runs");
        });
        TestServer {
            addr,
            mllp,
            base,
            client,
            issuer,
            dir,
            database,
            backend,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// Stop the server and wait until it released the database.
    pub async fn stop(mut self) -> (tempfile::TempDir, DatabaseUrl) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("temp dir"));
        (dir, self.database.clone())
    }

    pub fn url(&self, path: &str) -> String {
        if path.starts_with("http") {
            path.to_string()
        } else {
            format!("{}/{}", self.base, path.trim_start_matches('/'))
        }
    }

    /// Everything the database holds, as raw text: the SQLite file with its WAL (after stopping
    /// the server, so that nothing is in flight), or a `pg_dump`.
    pub async fn raw_database(self) -> String {
        match self.database.clone() {
            DatabaseUrl::Sqlite(path) => {
                let (dir, _) = self.stop().await;
                let mut bytes = Vec::new();
                for suffix in ["", "-wal", "-shm"] {
                    bytes.extend(
                        std::fs::read(format!("{}{suffix}", path.display())).unwrap_or_default(),
                    );
                }
                drop(dir);
                String::from_utf8_lossy(&bytes).into_owned()
            }
            DatabaseUrl::Postgres(url) => postgres::dump(&url),
        }
    }

    pub fn sqlite_path(&self) -> Option<PathBuf> {
        match &self.database {
            DatabaseUrl::Sqlite(path) => Some(path.clone()),
            DatabaseUrl::Postgres(_) => None,
        }
    }

    /// Send a request with an optional JSON body and extra headers.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut request = self.client.request(method, self.url(path));
        if let Some(body) = body {
            request = request
                .header("content-type", "application/fhir+json")
                .body(serde_json::to_vec(body).expect("json"));
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        Reply::from(request.send().await.expect("request sent")).await
    }

    /// The token settings the server runs with (issuer and audience are its base URL).
    pub fn service_auth(&self) -> fhirvault::config::AuthConfig {
        fhirvault::config::AuthConfig::for_base_url(&self.base)
    }

    /// A token of `role` with `scope` and the context claims, signed by the server's key ring.
    pub fn token(
        &self,
        role: &str,
        scope: &str,
        patient: Option<&str>,
        org: Option<&str>,
    ) -> String {
        issue(&self.issuer, role, scope, patient, org)
    }

    /// A request as the caller of `token` (instead of the default admin).
    pub async fn request_as(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Reply {
        let authorization = format!("Bearer {token}");
        self.request(
            method,
            path,
            body,
            &[("authorization", authorization.as_str())],
        )
        .await
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.request(Method::GET, path, None, &[]).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Reply {
        self.request(Method::POST, path, Some(body), &[]).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Reply {
        self.request(Method::PUT, path, Some(body), &[]).await
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.request(Method::DELETE, path, None, &[]).await
    }

    /// Send raw bytes with a content type.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Reply {
        let request = self
            .client
            .request(method, self.url(path))
            .header("content-type", content_type)
            .body(body);
        Reply::from(request.send().await.expect("request sent")).await
    }

    /// Create and return (id, body).
    pub async fn create(&self, resource: &Value) -> (String, Value) {
        let resource_type = resource["resourceType"].as_str().expect("resourceType");
        let reply = self.post(resource_type, resource).await;
        assert_eq!(
            reply.status,
            StatusCode::CREATED,
            "create {resource_type}: {}",
            reply.body
        );
        (
            reply.body["id"].as_str().expect("id").to_string(),
            reply.body,
        )
    }

    /// The ids of a searchset's match entries, in order.
    pub async fn search_ids(&self, query: &str) -> Vec<String> {
        let reply = self.get(query).await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "search {query}: {}",
            reply.body
        );
        match_ids(&reply.body)
    }
}

/// A temporary directory and an empty database on `backend`.
pub async fn fresh_store(backend: Backend) -> (tempfile::TempDir, DatabaseUrl) {
    let dir = tempfile::tempdir().expect("temp dir");
    let database = match backend {
        Backend::Sqlite => DatabaseUrl::Sqlite(dir.path().join("fhirvault.db")),
        Backend::Postgres => DatabaseUrl::Postgres(postgres::fresh_database().await),
    };
    (dir, database)
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

pub fn match_ids(bundle: &Value) -> Vec<String> {
    bundle["entry"]
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .filter(|e| e["search"]["mode"] == "match")
                .filter_map(|e| e["resource"]["id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Reply {
    pub async fn from(response: reqwest::Response) -> Reply {
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            body,
            text,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Assert this is an OperationOutcome with `status`, whose first issue has `code` and whose
    /// diagnostics contain `text`.
    pub fn assert_outcome(&self, status: StatusCode, code: &str, text: &str) {
        assert_eq!(self.status, status, "status; body: {}", self.text);
        assert_eq!(
            self.body["resourceType"], "OperationOutcome",
            "body: {}",
            self.text
        );
        let issue = &self.body["issue"][0];
        assert_eq!(issue["code"], code, "issue code; body: {}", self.text);
        let diagnostics = issue["diagnostics"].as_str().unwrap_or_default();
        assert!(
            diagnostics.contains(text),
            "diagnostics {diagnostics:?} should contain {text:?}"
        );
        assert!(
            self.header("content-type")
                .is_some_and(|c| c.starts_with("application/fhir+json")),
            "content type {:?}",
            self.header("content-type")
        );
    }
}

/// Generate a `#[tokio::test]` per backend for each listed `async fn name(backend: Backend)`.
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Backend::Postgres).await
                }
            )*
        }
    };
}

fn issue(
    issuer: &TokenIssuer,
    role: &str,
    scope: &str,
    patient: Option<&str>,
    org: Option<&str>,
) -> String {
    let request = IssueRequest {
        role: role.to_string(),
        scope: scope.to_string(),
        patient: patient.map(str::to_string),
        org: org.map(str::to_string),
        subject: None,
        purpose: None,
        ttl: std::time::Duration::from_secs(3600),
    };
    issuer.issue(&request).expect("token")
}
