//! Media types, request bodies and `Prefer`.
//!
//! fhirvault speaks FHIR JSON (`application/fhir+json`, also `application/json`). Asking for
//! anything else (XML, Turtle) is a 406; sending anything else is a 415. Bodies are read up to the
//! configured limit (413 beyond it) and must parse as JSON (400 otherwise, naming the position but
//! never quoting the content, which may be PHI).

use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::AppState;
use crate::error::ApiError;

/// `Prefer: return=…`
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReturnPreference {
    Minimal,
    Representation,
    OperationOutcome,
}

/// The `Prefer` header.
#[derive(Debug, Clone, Copy)]
pub struct Prefer {
    pub return_preference: ReturnPreference,
    /// `handling=strict`: unknown search parameters are errors.
    pub strict: bool,
    /// `respond-async`: the asynchronous request pattern (bulk export requires it).
    pub respond_async: bool,
}

impl Prefer {
    pub fn from_headers(headers: &HeaderMap) -> Prefer {
        let mut prefer = Prefer {
            return_preference: ReturnPreference::Representation,
            strict: false,
            respond_async: false,
        };
        for value in headers
            .get_all("prefer")
            .iter()
            .filter_map(|v| v.to_str().ok())
        {
            for token in value.split([',', ';']).map(str::trim) {
                match token {
                    "return=minimal" => prefer.return_preference = ReturnPreference::Minimal,
                    "return=representation" => {
                        prefer.return_preference = ReturnPreference::Representation
                    }
                    "return=OperationOutcome" => {
                        prefer.return_preference = ReturnPreference::OperationOutcome
                    }
                    "handling=strict" => prefer.strict = true,
                    "handling=lenient" => prefer.strict = false,
                    "respond-async" => prefer.respond_async = true,
                    _ => {}
                }
            }
        }
        prefer
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Prefer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Prefer::from_headers(&parts.headers))
    }
}

/// Middleware for the FHIR routes: refuse `Accept` and `_format` values we cannot produce.
pub async fn require_json_accept(request: Request, next: Next) -> Response {
    if let Some(accept) = request
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        && !accepts_json(accept)
    {
        return ApiError::NotAcceptable(
            "this server produces FHIR JSON only; accept application/fhir+json".into(),
        )
        .into_response();
    }
    if let Some(query) = request.uri().query() {
        let format = serde_urlencoded::from_str::<Vec<(String, String)>>(query)
            .unwrap_or_default()
            .into_iter()
            .find(|(name, _)| name == "_format");
        if let Some((_, format)) = format
            && !matches!(
                format.as_str(),
                "json" | "application/json" | "application/fhir+json"
            )
        {
            return ApiError::NotAcceptable(
                "_format: this server produces FHIR JSON only (json, application/fhir+json)".into(),
            )
            .into_response();
        }
    }
    next.run(request).await
}

fn accepts_json(accept: &str) -> bool {
    accepts_any(
        accept,
        &[
            "*/*",
            "application/*",
            "application/json",
            "application/fhir+json",
            "application/json+fhir",
            "",
        ],
    )
}

/// Whether an `Accept` header lists one of `media` (lower case; parameters such as `q` ignored).
pub fn accepts_any(accept: &str, media: &[&str]) -> bool {
    accept.split(',').any(|range| {
        let asked = range
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        media.contains(&asked.as_str())
    })
}

fn media_type(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        })
}

/// A FHIR JSON request body.
pub struct FhirJson(pub Value);

/// A JSON Patch request body (`application/json-patch+json`).
pub struct JsonPatchBody(pub Value);

impl FromRequest<AppState> for FhirJson {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        match media_type(request.headers()).as_deref() {
            None | Some("application/fhir+json" | "application/json" | "application/json+fhir") => {
            }
            Some(_) => {
                return Err(ApiError::UnsupportedMediaType(
                    "send resources as application/fhir+json (or application/json); XML and other formats are not supported".into(),
                ));
            }
        }
        Ok(FhirJson(
            read_json(request.into_body(), state.service.config.max_body_bytes).await?,
        ))
    }
}

impl FromRequest<AppState> for JsonPatchBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        match media_type(request.headers()).as_deref() {
            Some("application/json-patch+json") => {}
            Some("application/fhir+json" | "application/json") => {
                return Err(ApiError::UnsupportedMediaType(
                    "PATCH takes a JSON Patch document as application/json-patch+json (FHIRPath Patch is not supported)".into(),
                ));
            }
            _ => {
                return Err(ApiError::UnsupportedMediaType(
                    "PATCH takes application/json-patch+json".into(),
                ));
            }
        }
        Ok(JsonPatchBody(
            read_json(request.into_body(), state.service.config.max_body_bytes).await?,
        ))
    }
}

/// Read at most `limit` bytes and parse them as JSON.
pub async fn read_json(body: Body, limit: usize) -> Result<Value, ApiError> {
    let bytes = read_limited(body, limit).await?;
    parse_json(&bytes)
}

pub async fn read_limited(body: Body, limit: usize) -> Result<axum::body::Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::PayloadTooLarge(format!(
            "the request body is larger than this server accepts ({limit} bytes)"
        ))
    })
}

/// Parse JSON; the error names the position, never the content. Nesting deeper than serde_json's
/// recursion limit (128) is refused the same way, so a hostile body cannot exhaust the stack.
pub fn parse_json(bytes: &[u8]) -> Result<Value, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "the request body is empty; send a FHIR JSON resource",
        ));
    }
    serde_json::from_slice(bytes).map_err(|error| {
        let what = if error.to_string().contains("recursion limit") {
            "the JSON is nested too deeply"
        } else if error.is_eof() {
            "the JSON ends early"
        } else {
            "the body is not valid JSON"
        };
        ApiError::bad_request(format!(
            "{what} (line {}, column {})",
            error.line(),
            error.column()
        ))
    })
}

/// Form-encoded search parameters of `POST [type]/_search`.
pub async fn read_form(request: Request, limit: usize) -> Result<Vec<(String, String)>, ApiError> {
    match media_type(request.headers()).as_deref() {
        Some("application/x-www-form-urlencoded") | None => {}
        Some(_) => {
            return Err(ApiError::UnsupportedMediaType(
                "_search takes application/x-www-form-urlencoded".into(),
            ));
        }
    }
    let bytes = read_limited(request.into_body(), limit).await?;
    serde_urlencoded::from_bytes(&bytes)
        .map_err(|_| ApiError::bad_request("the form body is not valid x-www-form-urlencoded"))
}

/// Query pairs in order (repeated names kept: they AND).
pub fn query_pairs(query: Option<&str>) -> Result<Vec<(String, String)>, ApiError> {
    match query {
        None | Some("") => Ok(Vec::new()),
        Some(query) => serde_urlencoded::from_str(query)
            .map_err(|_| ApiError::bad_request("the query string is malformed")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_ranges() {
        assert!(accepts_json("application/fhir+json"));
        assert!(accepts_json("application/xml, application/json;q=0.5"));
        assert!(accepts_json("*/*"));
        assert!(!accepts_json("application/fhir+xml"));
        assert!(!accepts_json("text/html"));
    }

    #[test]
    fn json_errors_do_not_quote_content() {
        let error = parse_json(br#"{"name": "Secret Person"#).unwrap_err();
        assert!(!error.to_string().contains("Secret"));
        let deep = "[".repeat(10_000);
        assert!(
            parse_json(deep.as_bytes())
                .unwrap_err()
                .to_string()
                .contains("nested too deeply")
        );
    }
}
