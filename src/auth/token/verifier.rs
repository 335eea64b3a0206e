//! [`TokenVerifier`]: is this bearer token one the server accepts, and what does it claim?

use std::sync::Arc;
use std::time::Instant;

use super::claims::{Claims, RoleClaim};
use super::jwks::{Jwk, JwkSet};
use super::trusted::TrustedKeys;
use super::{TokenError, jwt};
use crate::config::{AuthConfig, ConfigError};
use crate::crypto::{KeyRing, SigningKey};

/// Verifies bearer tokens: signature (RS256/ES256) by a trusted key, then `iss`, `aud`, `exp`,
/// `nbf` and `iat`. Built once at start-up; the keys of `auth.jwks_file` follow the file
/// ([`TrustedKeys`]), the key ring's key stays what it was at start-up. Cheap to share behind an
/// `Arc`.
#[derive(Debug)]
pub struct TokenVerifier {
    keys: TrustedKeys,
    issuer: String,
    audience: String,
    leeway: i64,
    role_claim: RoleClaim,
}

impl TokenVerifier {
    /// The verifier `config` describes: the keys of `jwks_file`, and the key ring's signing key
    /// when `trust_key_ring`. Errors name the setting, as other start-up errors do.
    pub fn from_config(
        config: &AuthConfig,
        key_ring: &KeyRing,
    ) -> Result<TokenVerifier, ConfigError> {
        let mut own = Vec::new();
        if config.trust_key_ring {
            own.push(Jwk::from_signing_key(&*key_ring_key(key_ring)?));
        }
        let keys = match &config.jwks_file {
            Some(path) => TrustedKeys::watching(path.clone(), own).map_err(|e| ConfigError {
                setting: "auth.jwks_file",
                message: e.to_string(),
            })?,
            None => TrustedKeys::fixed(JwkSet::new(own)),
        };
        let mut verifier = TokenVerifier::new(
            JwkSet::default(),
            &config.issuer,
            &config.audience,
            config.leeway_seconds,
        );
        verifier.keys = keys;
        Ok(verifier.with_role_claim(config.role_claim.clone()))
    }

    pub fn new(keys: JwkSet, issuer: &str, audience: &str, leeway_seconds: u64) -> TokenVerifier {
        TokenVerifier {
            keys: TrustedKeys::fixed(keys),
            issuer: issuer.to_string(),
            audience: audience.to_string(),
            leeway: i64::try_from(leeway_seconds).unwrap_or(i64::MAX),
            role_claim: RoleClaim::default(),
        }
    }

    /// Read the role from `role_claim` instead of the default (`role`, else `roles`).
    pub fn with_role_claim(mut self, role_claim: RoleClaim) -> TokenVerifier {
        self.role_claim = role_claim;
        self
    }

    /// The claims of `token` (the part after `Bearer `) if it is valid at `now_unix` (seconds).
    /// A token whose key id no trusted key has makes the JWKS file be read again first (rate
    /// limited), so that a key the identity provider just started to sign with is found.
    pub fn verify(&self, token: &str, now_unix: i64) -> Result<Claims, TokenError> {
        self.keys.refresh_if_due(Instant::now());
        let claims = match jwt::decode_verified(token, &self.keys.current(), &self.role_claim) {
            Err(TokenError::NoMatchingKey) if self.keys.reload_for_unknown_key(Instant::now()) => {
                jwt::decode_verified(token, &self.keys.current(), &self.role_claim)?
            }
            other => other?,
        };
        self.check(&claims, now_unix)?;
        Ok(claims)
    }

    /// Look at the JWKS file if that is due ([`TrustedKeys::refresh_if_due`]); for callers that
    /// answer from a cache of verified tokens and must notice a key that was removed.
    pub fn refresh_keys(&self) {
        self.keys.refresh_if_due(Instant::now());
    }

    /// Counts the changes of the trusted keys; a token verified under another generation must be
    /// verified again.
    pub fn key_generation(&self) -> u64 {
        self.keys.generation()
    }

    /// The trusted keys now (to publish the key ring's key, for instance).
    pub fn keys(&self) -> Arc<JwkSet> {
        self.keys.current()
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
