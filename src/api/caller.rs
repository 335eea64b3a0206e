//! The [`Authenticated`] extractor: the caller the authentication middleware
//! ([`super::authenticate`]) verified for this request.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use crate::auth::Caller;
use crate::error::ApiError;

/// The verified caller of a request. Handlers of protected routes take it; a request that
/// reached one without passing authentication (a routing mistake) is refused, never served as
/// anyone.
pub struct Authenticated(pub Arc<Caller>);

impl<S: Send + Sync> FromRequestParts<S> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Arc<Caller>>()
            .cloned()
            .map(Authenticated)
            .ok_or(ApiError::MissingToken)
    }
}
