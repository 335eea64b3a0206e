//! The token of an `Authorization: Bearer <token>` header (RFC 6750 §2.1).

use axum::http::{HeaderMap, header};

use crate::error::ApiError;

/// The bearer token of `headers`. No `Authorization` header, or one of another scheme (Basic…), is
/// [`ApiError::MissingToken`] (RFC 6750 §3.1: a request without bearer credentials gets a
/// challenge without an error code); a Bearer header that holds no single token is
/// [`ApiError::InvalidToken`].
pub fn bearer_token(headers: &HeaderMap) -> Result<&str, ApiError> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Err(ApiError::MissingToken);
    };
    if values.next().is_some() {
        return Err(ApiError::InvalidToken(
            "send one Authorization header".into(),
        ));
    }
    let value = value
        .to_str()
        .map_err(|_| ApiError::InvalidToken("the Authorization header is not ASCII".into()))?;
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(ApiError::MissingToken);
    }
    let token = token.trim_matches(' ');
    if token.is_empty() || token.contains(' ') {
        return Err(ApiError::InvalidToken(
            "the Authorization header must be Bearer and one token".into(),
        ));
    }
    Ok(token)
}
