//! [`TokenVerifier`]: is this bearer token one the server accepts, and what does it claim?

use std::sync::Arc;

use super::claims::Claims;
use super::jwks::{Jwk, JwkSet};
use super::{TokenError, jwt};
use crate::config::{AuthConfig, ConfigError};
use crate::crypto::{KeyRing, SigningKey};

/// Verifies bearer tokens: signature (RS256/ES256) by a trusted key, then `iss`, `aud`, `exp`,
/// `nbf` and `iat`. Built once at start-up; its keys do not change while it lives (a new JWKS
/// file or signing key needs a restart). Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct TokenVerifier {
    keys: JwkSet,
    issuer: String,
    audience: String,
    leeway: i64,
}

impl TokenVerifier {
    /// The verifier `config` describes: the keys of `jwks_file`, and the key ring's signing key
    /// when `trust_key_ring`. Errors name the setting, as other start-up errors do.
    pub fn from_config(
        config: &AuthConfig,
        key_ring: &KeyRing,
    ) -> Result<TokenVerifier, ConfigError> {
        let mut keys = match &config.jwks_file {
            Some(path) => JwkSet::from_file(path).map_err(|e| ConfigError {
                setting: "auth.jwks_file",
                message: e.to_string(),
            })?,
            None => JwkSet::default(),
        };
        if config.trust_key_ring {
            keys.push(Jwk::from_signing_key(&*key_ring_key(key_ring)?));
        }
        Ok(TokenVerifier::new(
            keys,
            &config.issuer,
            &config.audience,
            config.leeway_seconds,
        ))
    }

    pub fn new(keys: JwkSet, issuer: &str, audience: &str, leeway_seconds: u64) -> TokenVerifier {
        TokenVerifier {
            keys,
            issuer: issuer.to_string(),
            audience: audience.to_string(),
            leeway: i64::try_from(leeway_seconds).unwrap_or(i64::MAX),
        }
    }

    /// The claims of `token` (the part after `Bearer `) if it is valid at `now_unix` (seconds).
    pub fn verify(&self, token: &str, now_unix: i64) -> Result<Claims, TokenError> {
        let claims = jwt::decode_verified(token, &self.keys)?;
        self.check(&claims, now_unix)?;
        Ok(claims)
    }

    /// The trusted keys (to publish the key ring's key, for instance).
    pub fn keys(&self) -> &JwkSet {
        &self.keys
    }

    /// RFC 7519 §4.1: issuer exactly, audience by membership, times with the leeway. `exp` is
    /// the first second the token is no longer valid.
    fn check(&self, claims: &Claims, now: i64) -> Result<(), TokenError> {
        if claims.iss != self.issuer {
            return Err(TokenError::WrongIssuer);
        }
        if !claims.aud.contains(&self.audience) {
            return Err(TokenError::WrongAudience);
        }
        if now >= claims.exp.saturating_add(self.leeway) {
            return Err(TokenError::Expired);
        }
        let latest_start = now.saturating_add(self.leeway);
        if claims.nbf.is_some_and(|nbf| nbf > latest_start) {
            return Err(TokenError::NotYetValid);
        }
        if claims.iat.is_some_and(|iat| iat > latest_start) {
            return Err(TokenError::IssuedInFuture);
        }
        Ok(())
    }
}

/// The key ring's signing key; an error naming what to do when the ring has none (a key file from
/// before tokens existed, read without `load_or_create`, e.g. from FHIRVAULT_KEY_RING).
pub(super) fn key_ring_key(key_ring: &KeyRing) -> Result<Arc<SigningKey>, ConfigError> {
    key_ring.signing_key().ok_or_else(|| ConfigError {
        setting: "key_file",
        message: "the key ring has no token-signing key; run `fhirvault keys init` to add one \
                  (with FHIRVAULT_KEY_RING: run it on the key file, then export the file again)"
            .into(),
    })
}
