//! Bearer tokens: JWTs verified against trusted keys, and issued by the key ring.
//!
//! # Layout
//!
//! - `jwt.rs` — compact JWS parsing, strict base64url, the closed list of algorithms (RS256,
//!   ES256), signature checks through a [`JwkSet`], and encoding. Written on `ring`; see there why.
//! - `jwks.rs` — [`JwkSet`] and [`Jwk`]: RFC 7517 key sets from a file, the key ring's key as a
//!   JWK, RFC 7638 thumbprints (the key ring key's `kid`).
//! - `claims.rs` — [`Claims`], with the differences between identity providers evened out.
//! - `trusted.rs` — [`TrustedKeys`]: the keys of the JWKS file, read again when it changes
//!   (or, rate limited, when a token names an unknown key id), beside the key ring's.
//! - `verifier.rs` — [`TokenVerifier`]: the above plus `iss`, `aud` and the times, from config.
//! - `issuer.rs` — [`TokenIssuer`] and [`IssueRequest`]: tokens signed by the key ring
//!   (`fhirvault token issue`, tests), [`parse_ttl`], the per-role [`default_scope`].
//! - `bearer.rs` — [`bearer_token`]: the token of an `Authorization` header.
//! - `error.rs` — [`TokenError`]: why a token was refused, safe to show and log.
//!
//! The HTTP layer calls [`bearer_token`], then [`TokenVerifier::verify`]; a [`TokenError`] turns
//! into [`crate::error::ApiError::InvalidToken`] (401 with `WWW-Authenticate`) by `?`. Roles and
//! SMART scopes are left as the strings the token carries; what they allow is decided elsewhere.

mod bearer;
mod claims;
mod error;
mod issuer;
mod jwks;
mod jwt;
mod trusted;
mod verifier;

#[cfg(test)]
mod tests;

pub use bearer::bearer_token;
pub use claims::{Claims, RoleClaim};
pub use error::TokenError;
pub use issuer::{ISSUER_CLIENT_ID, IssueRequest, MAX_TTL, TokenIssuer, default_scope, parse_ttl};
pub use jwks::{Jwk, JwkSet, JwksError};
pub use jwt::{Algorithm, MAX_TOKEN_BYTES};
pub use trusted::{RECHECK, TrustedKeys};
pub use verifier::TokenVerifier;
