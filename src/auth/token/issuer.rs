//! [`TokenIssuer`]: tokens signed by the key ring, for deployments without an identity provider
//! and for tests (`fhirvault token issue`).

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::claims::{Claims, RoleClaim};
use super::jwks::Jwk;
use super::jwt;
use super::verifier::key_ring_key;
use crate::config::{AuthConfig, ConfigError};
use crate::crypto::{CryptoError, KeyRing, SigningKey};

/// The longest `--ttl`: these tokens cannot be revoked one by one (only all at once, by replacing
/// the signing key), so they should not outlive a month.
pub const MAX_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// The `client_id` of every token the key ring issues, so audit records show where it came from.
pub const ISSUER_CLIENT_ID: &str = "fhirvault-cli";

/// What a token should say. `scope` is space-separated SMART scopes.
#[derive(Debug, Clone)]
pub struct IssueRequest {
    pub role: String,
    pub scope: String,
    pub patient: Option<String>,
    pub org: Option<String>,
    /// `sub`; default `fhirvault-cli/<role>`.
    pub subject: Option<String>,
    /// `purpose`: the v3 PurposeOfUse code the token is limited to.
    pub purpose: Option<String>,
    pub ttl: Duration,
}

/// Signs tokens with the key ring's ES256 key, for the issuer and audience of the configuration.
#[derive(Debug)]
pub struct TokenIssuer {
    key: Arc<SigningKey>,
    kid: String,
    issuer: String,
    audience: String,
    /// Where the verifier reads the role, so that is where the token carries it.
    role_claim: RoleClaim,
}

impl TokenIssuer {
    /// Refuses when the server would not accept the tokens (`auth.trust_key_ring` is false) or the
    /// ring has no signing key.
    pub fn from_config(
        config: &AuthConfig,
        key_ring: &KeyRing,
    ) -> Result<TokenIssuer, ConfigError> {
        if !config.trust_key_ring {
            return Err(ConfigError {
                setting: "auth.trust_key_ring",
                message: "is false: the server accepts only tokens of the identity provider (auth.jwks_file)".into(),
            });
        }
        let key = key_ring_key(key_ring)?;
        Ok(TokenIssuer {
            kid: Jwk::from_signing_key(&key).thumbprint(),
            key,
            issuer: config.issuer.clone(),
            audience: config.audience.clone(),
            role_claim: config.role_claim.clone(),
        })
    }

    /// A token valid from now for `request.ttl`.
    pub fn issue(&self, request: &IssueRequest) -> Result<String, CryptoError> {
        self.issue_at(request, chrono::Utc::now().timestamp())
    }

    /// A token as if issued at `now_unix` (tests make expired and future tokens with it).
    pub fn issue_at(&self, request: &IssueRequest, now_unix: i64) -> Result<String, CryptoError> {
        let ttl = i64::try_from(request.ttl.as_secs()).unwrap_or(i64::MAX);
        let claims = Claims {
            iss: self.issuer.clone(),
            sub: request
                .subject
                .clone()
                .unwrap_or_else(|| format!("{ISSUER_CLIENT_ID}/{}", request.role)),
            aud: vec![self.audience.clone()],
            exp: now_unix.saturating_add(ttl),
            nbf: None,
            iat: Some(now_unix),
            jti: Some(uuid::Uuid::new_v4().to_string()),
            roles: Vec::new(),
            scope: request.scope.clone(),
            patient: request.patient.clone(),
            org: request.org.clone(),
            client_id: Some(ISSUER_CLIENT_ID.to_string()),
            purpose: request.purpose.clone(),
        };
        let mut payload = json!(claims);
        self.role_claim.write(&mut payload, &request.role);
        let header = json!({"alg": "ES256", "typ": "JWT", "kid": self.kid});
        jwt::encode(&header, &payload, |input| self.key.sign(input))
    }
}

/// The scope a role gets when `token issue` is given none: only `admin` has one
/// (`user/*.cruds`, everything); every other role must name its scopes.
pub fn default_scope(role: &str) -> Option<&'static str> {
    (role == "admin").then_some("user/*.cruds")
}

/// A `--ttl` such as `90s`, `15m`, `1h` or `7d`: a positive whole number and a unit, at most
/// [`MAX_TTL`].
pub fn parse_ttl(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let unit_seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(
                "a duration is a number and a unit: s, m, h or d (e.g. 90s, 15m, 1h, 7d)".into(),
            );
        }
    };
    let count: u64 = digits
        .parse()
        .map_err(|_| "a duration starts with a whole number, e.g. 1h".to_string())?;
    let ttl = Duration::from_secs(count.saturating_mul(unit_seconds));
    if ttl.is_zero() || ttl > MAX_TTL {
        return Err("a token lives between 1 second and 30 days".into());
    }
    Ok(ttl)
}
