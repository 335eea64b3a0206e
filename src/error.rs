//! The one error type clients ever see, and how it becomes an OperationOutcome.
//!
//! Service and API code return [`ApiError`]; each variant fixes its HTTP status and its
//! OperationOutcome `issue.code` here, in one place (Blaze's `category->status`). Store and crypto
//! errors convert through `From` impls that log the detail with `tracing` and hand the client a
//! generic message: internals (SQL, file paths, key ids) never reach `diagnostics`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::fhir::outcome::{Issue, IssueCode, operation_outcome};

#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// The request itself is malformed (syntax, parameters, headers).
    #[error("{0}")]
    BadRequest(String),
    /// The resource parses but breaks FHIR rules (schema, bindings, ids).
    #[error("resource is not valid")]
    Invalid(Vec<Issue>),
    /// Well-formed, valid FHIR that this server cannot accept (business rules, profiles).
    #[error("resource violates server rules")]
    Unprocessable(Vec<Issue>),
    /// The request asks for something this server does not offer (e.g. an unknown profile).
    #[error("{0}")]
    NotSupported(String),
    /// No bearer token was sent (RFC 6750 §3.1: the challenge carries no error code).
    #[error("this request needs a bearer token: send Authorization: Bearer <token>")]
    MissingToken,
    /// A bearer token was sent and refused; the text says why, never quoting the token.
    #[error("{0}")]
    InvalidToken(String),
    /// The caller is known but may not do this (role, consent, a resource out of reach).
    #[error("{0}")]
    Forbidden(String),
    /// The token is valid, and its role would allow this, but none of its scopes covers the
    /// interaction on the type (RFC 6750 §3.1 `insufficient_scope`). `scope` is a scope that
    /// would; scopes name types and interactions only, so saying so leaks nothing.
    #[error("{message}")]
    InsufficientScope { message: String, scope: String },
    /// The caller sent too many requests; it may retry after `retry_after_secs`.
    #[error("too many requests; retry in {retry_after_secs} seconds")]
    TooManyRequests { retry_after_secs: u64 },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Gone(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    NotAcceptable(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PreconditionFailed(String),
    /// A conditional interaction matched more than one resource.
    #[error("{0}")]
    MultipleMatches(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    /// A request the server will not run because of its size (a 400 `too-costly`), such as a
    /// search that would become a statement larger than the database takes.
    #[error("{0}")]
    TooCostly(String),
    #[error("{0}")]
    NotImplemented(String),
    /// The store cannot be reached; the client may retry.
    #[error("{0}")]
    Unavailable(String),
    /// A statement ran longer than the store's time limit (`store.statement_timeout_ms`) and the
    /// database stopped it. A 503 with `Retry-After`, not a 408 (which says the *client* was too
    /// slow to send its request, and which clients resend at once) nor a 504 (a gateway's):
    /// the server could not answer in time, usually under load, and says when to try again.
    #[error(
        "the request took longer than this server's time limit for one database statement and was stopped; retry later, or narrow it (fewer chains, _has, _include or :contains)"
    )]
    Timeout,
    /// Something went wrong inside; the detail was logged, the client gets a generic text.
    #[error("internal error")]
    Internal,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) | ApiError::NotSupported(_) | ApiError::TooCostly(_) => {
                StatusCode::BAD_REQUEST
            }
            ApiError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::MissingToken | ApiError::InvalidToken(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) | ApiError::InsufficientScope { .. } => StatusCode::FORBIDDEN,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Gone(_) => StatusCode::GONE,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
            ApiError::MultipleMatches(_) => StatusCode::PRECONDITION_FAILED,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            ApiError::Unavailable(_) | ApiError::Timeout => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn issue_code(&self) -> IssueCode {
        match self {
            ApiError::BadRequest(_) => IssueCode::Invalid,
            ApiError::NotSupported(_) => IssueCode::NotSupported,
            ApiError::Invalid(_) | ApiError::Unprocessable(_) => IssueCode::Invalid,
            ApiError::MissingToken | ApiError::InvalidToken(_) => IssueCode::Login,
            ApiError::Forbidden(_) | ApiError::InsufficientScope { .. } => IssueCode::Forbidden,
            ApiError::TooManyRequests { .. } => IssueCode::Throttled,
            ApiError::NotFound(_) => IssueCode::NotFound,
            ApiError::Gone(_) => IssueCode::Deleted,
            ApiError::MethodNotAllowed(_) | ApiError::NotAcceptable(_) => IssueCode::NotSupported,
            ApiError::UnsupportedMediaType(_) | ApiError::NotImplemented(_) => {
                IssueCode::NotSupported
            }
            ApiError::Conflict(_) | ApiError::PreconditionFailed(_) => IssueCode::Conflict,
            ApiError::MultipleMatches(_) => IssueCode::MultipleMatches,
            ApiError::PayloadTooLarge(_) => IssueCode::TooLong,
            ApiError::TooCostly(_) => IssueCode::TooCosts,
            ApiError::Unavailable(_) => IssueCode::Transient,
            ApiError::Timeout => IssueCode::Timeout,
            ApiError::Internal => IssueCode::Exception,
        }
    }

    /// The issues this error renders as.
    pub fn issues(&self) -> Vec<Issue> {
        match self {
            ApiError::Invalid(issues) | ApiError::Unprocessable(issues) => issues.clone(),
            ApiError::Internal => vec![Issue::error(
                IssueCode::Exception,
                "the server failed to process the request; the incident was logged",
            )],
            other => vec![Issue::error(other.issue_code(), other.to_string())],
        }
    }

    /// The OperationOutcome JSON for this error.
    pub fn outcome(&self) -> serde_json::Value {
        operation_outcome(&self.issues())
    }

    /// The `WWW-Authenticate` challenge (RFC 6750 §3) of a 401 — no error code for a missing
    /// token, `invalid_token` with a description otherwise — and of a 403 for want of a scope
    /// (`insufficient_scope`, with the scope that would do).
    pub fn www_authenticate(&self) -> Option<String> {
        match self {
            ApiError::MissingToken => Some(format!("Bearer realm=\"{REALM}\"")),
            ApiError::InvalidToken(why) => Some(format!(
                "Bearer realm=\"{REALM}\", error=\"invalid_token\", error_description=\"{}\"",
                quotable(why)
            )),
            ApiError::InsufficientScope { message, scope } => Some(format!(
                "Bearer realm=\"{REALM}\", error=\"insufficient_scope\", error_description=\"{}\", scope=\"{}\"",
                quotable(message),
                quotable(scope)
            )),
            _ => None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::BadRequest(message.into())
    }

    /// One structural issue at a FHIRPath location, as a 400.
    pub fn invalid_at(code: IssueCode, expression: &str, message: impl Into<String>) -> Self {
        ApiError::Invalid(vec![Issue::error(code, message).at(expression)])
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = serde_json::to_vec(&self.outcome()).unwrap_or_default();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(crate::fhir::FHIR_JSON_UTF8),
        );
        if let Some(challenge) = self
            .www_authenticate()
            .and_then(|c| HeaderValue::from_str(&c).ok())
        {
            headers.insert(header::WWW_AUTHENTICATE, challenge);
        }
        match self {
            ApiError::TooManyRequests { retry_after_secs } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
            }
            ApiError::Timeout => {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(TIMEOUT_RETRY_AFTER_SECS),
                );
            }
            _ => {}
        }
        response
            .extensions_mut()
            .insert(ErrorSummary(self.to_string()));
        response
    }
}

/// The one-line text of the error a response carries, for the audit trail's `outcomeDesc`
/// (the summary, not the issues: the variants' texts never quote submitted values).
#[derive(Debug, Clone)]
pub struct ErrorSummary(pub String);

/// When a client whose request hit the statement time limit may try again: long enough for a
/// burst of load to pass, short enough for an interactive client.
const TIMEOUT_RETRY_AFTER_SECS: u64 = 5;

/// The realm of this server's bearer challenges.
const REALM: &str = "fhirvault";

/// `text` as the inside of an RFC 6750 quoted `error_description`: printable ASCII without `"`
/// and `\`; anything else becomes a space.
fn quotable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if (' '..='~').contains(&c) && c != '"' && c != '\\' {
                c
            } else {
                ' '
            }
        })
        .collect()
}

impl From<crate::auth::token::TokenError> for ApiError {
    fn from(error: crate::auth::token::TokenError) -> Self {
        ApiError::InvalidToken(error.to_string())
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        match &error {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
                tracing::error!(error = %error, "database unavailable");
                ApiError::Unavailable("the database is temporarily unavailable; retry later".into())
            }
            _ if crate::store::is_statement_timeout(&error) => {
                // The statement is not logged: search SQL carries blind tokens and ids.
                tracing::warn!(
                    "a database statement ran past store.statement_timeout_ms and was stopped"
                );
                ApiError::Timeout
            }
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                // Two writers raced for the same version row; the loser retries from a fresh read.
                tracing::info!(constraint = ?db.constraint(), "concurrent write conflict");
                ApiError::Conflict(
                    "the resource was changed concurrently; read it again and retry".into(),
                )
            }
            _ => {
                tracing::error!(error = %error, "database error");
                ApiError::Internal
            }
        }
    }
}

impl From<crate::crypto::CryptoError> for ApiError {
    fn from(error: crate::crypto::CryptoError) -> Self {
        tracing::error!(error = %error, "crypto failure");
        ApiError::Internal
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
