//! The HTTP side of the suite: build a request against the base URL, send it, and hand back a
//! [`Response`] with the status, headers, raw text and (when it parses) the JSON body.
//!
//! Cases never touch reqwest directly, so every request carries the same defaults
//! (`Accept: application/fhir+json`, the bearer token) unless a case overrides a header on purpose.

use std::time::Duration;

use reqwest::Method;
use reqwest::blocking::Client;
use reqwest::header::HeaderMap;
use serde_json::Value;

pub const FHIR_JSON: &str = "application/fhir+json";

/// A FHIR server at one base URL.
pub struct Fhir {
    base: String,
    token: Option<String>,
    http: Client,
}

impl Fhir {
    pub fn new(base: &str, token: Option<String>, timeout: Duration) -> Result<Self, String> {
        let http = Client::builder()
            .timeout(timeout)
            // 3xx answers are part of what we test, so they are never followed silently.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|error| format!("cannot build the HTTP client: {error}"))?;
        Ok(Self { base: base.trim_end_matches('/').to_string(), token, http })
    }

    /// `path` is relative to the base (`Patient/1`, `metadata`, `` for the base itself), an
    /// absolute URL or an absolute path, as found in a Bundle's `next` link.
    pub fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            path.to_string()
        } else if path.starts_with('/') {
            // An absolute path (some servers' paging links): keep the base's scheme and host.
            let after_scheme = self.base.find("://").map_or(0, |at| at + 3);
            let origin_end = self.base[after_scheme..].find('/').map_or(self.base.len(), |at| after_scheme + at);
            format!("{}{path}", &self.base[..origin_end])
        } else if path.is_empty() {
            self.base.clone()
        } else {
            format!("{}/{}", self.base, path.trim_start_matches('/'))
        }
    }

    pub fn request(&self, method: Method, path: &str) -> Request<'_> {
        let mut headers = vec![("Accept".to_string(), FHIR_JSON.to_string())];
        if let Some(token) = &self.token {
            headers.push(("Authorization".to_string(), format!("Bearer {token}")));
        }
        Request { fhir: self, method, path: path.to_string(), headers, body: None }
    }

    pub fn get(&self, path: &str) -> Request<'_> {
        self.request(Method::GET, path)
    }
    pub fn post(&self, path: &str) -> Request<'_> {
        self.request(Method::POST, path)
    }
    pub fn put(&self, path: &str) -> Request<'_> {
        self.request(Method::PUT, path)
    }
    pub fn patch(&self, path: &str) -> Request<'_> {
        self.request(Method::PATCH, path)
    }
    pub fn delete(&self, path: &str) -> Request<'_> {
        self.request(Method::DELETE, path)
    }
}

/// A request being built; [`Request::send`] performs it.
pub struct Request<'a> {
    fhir: &'a Fhir,
    method: Method,
    path: String,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
}

impl Request<'_> {
    /// Sets a header, replacing a default of the same name.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.retain(|(existing, _)| !existing.eq_ignore_ascii_case(name));
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Send no `Authorization` header (the default token stays off this request).
    pub fn without_authorization(mut self) -> Self {
        self.headers.retain(|(name, _)| !name.eq_ignore_ascii_case("authorization"));
        self
    }

    /// A FHIR JSON body (`Content-Type: application/fhir+json`).
    pub fn json(self, body: &Value) -> Self {
        self.body("application/fhir+json", body.to_string())
    }

    /// Any body with its content type, e.g. malformed JSON or a form.
    pub fn body(mut self, content_type: &str, body: impl Into<Vec<u8>>) -> Self {
        self.body = Some(body.into());
        self.header("Content-Type", content_type)
    }

    pub fn send(self) -> Result<Response, String> {
        let url = self.fhir.url(&self.path);
        let label = format!("{} {}", self.method, short_path(&self.path));
        let mut builder = self.fhir.http.request(self.method, &url);
        for (name, value) in &self.headers {
            builder = builder.header(name, value);
        }
        if let Some(body) = self.body {
            builder = builder.body(body);
        }
        let response = builder.send().map_err(|error| format!("{label}: request failed: {}", error_chain(&error)))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().map_err(|error| format!("{label}: cannot read the body: {error}"))?;
        let json = serde_json::from_str(&text).ok();
        Ok(Response { label, status, headers, text, json })
    }
}

/// What the server answered.
pub struct Response {
    /// `METHOD path`, for messages.
    pub label: String,
    pub status: u16,
    pub headers: HeaderMap,
    /// The body exactly as received.
    pub text: String,
    /// The body parsed as JSON, when it is JSON.
    pub json: Option<Value>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    /// The parsed body, or a message saying it is not JSON.
    pub fn body(&self) -> Result<&Value, String> {
        self.json.as_ref().ok_or_else(|| format!("{}: expected a JSON body, got {}", self.label, self.describe()))
    }

    pub fn resource_type(&self) -> Option<&str> {
        self.json.as_ref()?.get("resourceType")?.as_str()
    }

    /// A one-line description of the answer for failure messages: status, content type and the
    /// gist of the body (an OperationOutcome's first issue, or a resource's type) — never the body.
    pub fn describe(&self) -> String {
        let mut out = format!("status {}", self.status);
        if let Some(content_type) = self.header("content-type") {
            out.push_str(&format!(", {content_type}"));
        }
        match (&self.json, self.resource_type()) {
            (Some(body), Some("OperationOutcome")) => {
                let issue = &body["issue"][0];
                let code = issue["code"].as_str().unwrap_or("?");
                let text = issue["diagnostics"].as_str().or_else(|| issue["details"]["text"].as_str()).unwrap_or("");
                out.push_str(&format!(", OperationOutcome [{code}] {}", clip(text, 160)));
            }
            (Some(_), Some(resource_type)) => out.push_str(&format!(", {resource_type}")),
            (Some(_), None) => out.push_str(", JSON without resourceType"),
            (None, _) if self.text.trim().is_empty() => out.push_str(", empty body"),
            (None, _) => out.push_str(&format!(", non-JSON body of {} bytes", self.text.len())),
        }
        out
    }
}

/// Shortens a path for messages: absolute URLs (next links) keep only what follows the host.
fn short_path(path: &str) -> String {
    let path = match path.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or(rest, |slash| &rest[slash..]),
        None => path,
    };
    let path = if path.starts_with('/') || path.is_empty() { path.to_string() } else { format!("/{path}") };
    clip(&path, 120)
}

/// Cuts text to `max` characters on a char boundary, marking the cut.
pub fn clip(text: &str, max: usize) -> String {
    let flat: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    if flat.chars().count() <= max {
        flat
    } else {
        let cut: String = flat.chars().take(max).collect();
        format!("{cut}…")
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        out.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    out
}

/// Percent-encodes one query-string component. Unreserved characters stay, and so do `:`, `/`
/// and `,`, which RFC 3986 allows in a query and FHIR uses (modifiers, references, OR lists);
/// `|`, `&`, `=`, `+`, spaces and non-ASCII are encoded.
pub fn encode(component: &str) -> String {
    let mut out = String::with_capacity(component.len());
    for byte in component.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b':' | b'/' | b',' => {
                out.push(byte as char)
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

/// Builds `name=value&…` with each part encoded, for query strings and form bodies alike.
pub fn query(params: &[(&str, &str)]) -> String {
    params.iter().map(|(name, value)| format!("{}={}", encode(name), encode(value))).collect::<Vec<_>>().join("&")
}
