//! [`Claims`]: what a verified token says about its bearer.
//!
//! Parsed from the JWS payload after its signature was checked. Identity providers differ in the
//! shape of a few claims, and this is the one place that evens them out:
//!
//! - `aud` is a string or an array (RFC 7519 §4.1.3); [`Claims::aud`] is always a list.
//! - scopes come as `scope`, a space-separated string (RFC 8693, SMART, Keycloak), or as `scp`, a
//!   string or an array (Entra ID); [`Claims::scope`] is always the space-separated string, `""`
//!   when neither is present. `scope` wins when both are.
//! - the client is `client_id` (RFC 9068) or `azp` (OpenID Connect, Keycloak, Entra ID v2).
//! - NumericDates may carry a fraction (RFC 7519 §2); it is dropped.
//!
//! Unknown claims are ignored. `role` and `scope` stay plain strings: what they allow is decided
//! where roles and SMART scopes are parsed, not here.

use serde::{Deserialize, Deserializer, Serialize};

use super::TokenError;

/// The claims of a verified token. `iss`, `sub` and `exp` are required.
///
/// `Debug` leaves out `sub`, which some providers fill with an e-mail address or a name, so that
/// a `?claims` in a log line stays free of PHI; the other claims are ids, codes and times.
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub aud: Vec<String>,
    pub exp: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Space-separated scopes; `""` when the token has none.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub scope: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patient: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub org: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
}

impl std::fmt::Debug for Claims {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Claims")
            .field("iss", &self.iss)
            .field("aud", &self.aud)
            .field("exp", &self.exp)
            .field("nbf", &self.nbf)
            .field("iat", &self.iat)
            .field("jti", &self.jti)
            .field("role", &self.role)
            .field("scope", &self.scope)
            .field("patient", &self.patient)
            .field("org", &self.org)
            .field("client_id", &self.client_id)
            .field("purpose", &self.purpose)
            .finish_non_exhaustive()
    }
}

/// The payload as providers send it, before the variants are evened out.
#[derive(Deserialize)]
struct RawClaims {
    iss: String,
    sub: String,
    #[serde(default)]
    aud: Option<OneOrMany>,
    #[serde(deserialize_with = "numeric_date")]
    exp: i64,
    #[serde(default, deserialize_with = "optional_numeric_date")]
    nbf: Option<i64>,
    #[serde(default, deserialize_with = "optional_numeric_date")]
    iat: Option<i64>,
    jti: Option<String>,
    role: Option<String>,
    scope: Option<String>,
    scp: Option<OneOrMany>,
    patient: Option<String>,
    org: Option<String>,
    client_id: Option<String>,
    azp: Option<String>,
    purpose: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(one) => vec![one],
            OneOrMany::Many(many) => many,
        }
    }
}

impl Claims {
    /// Parse a JWS payload. It must be a JSON object (serde would also take an array, by
    /// position); errors name the claim, never its value.
    pub fn from_json(payload: &[u8]) -> Result<Claims, TokenError> {
        if payload.trim_ascii_start().first() != Some(&b'{') {
            return Err(TokenError::Malformed(
                "the payload is not a JSON object".into(),
            ));
        }
        let raw: RawClaims = serde_json::from_slice(payload)
            .map_err(|e| TokenError::InvalidClaims(crate::crypto::describe_json_error(&e)))?;
        let scope = match (raw.scope, raw.scp) {
            (Some(scope), _) => scope,
            (None, Some(scp)) => scp.into_vec().join(" "),
            (None, None) => String::new(),
        };
        Ok(Claims {
            iss: raw.iss,
            sub: raw.sub,
            aud: raw.aud.map(OneOrMany::into_vec).unwrap_or_default(),
            exp: raw.exp,
            nbf: raw.nbf,
            iat: raw.iat,
            jti: raw.jti,
            role: raw.role,
            scope,
            patient: raw.patient,
            org: raw.org,
            client_id: raw.client_id.or(raw.azp),
            purpose: raw.purpose,
        })
    }
}

/// A NumericDate: seconds since the epoch, an integer or (rarely) with a fraction.
fn numeric_date<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    let number = serde_json::Number::deserialize(deserializer)?;
    if let Some(seconds) = number.as_i64() {
        return Ok(seconds);
    }
    match number.as_f64() {
        Some(seconds) if seconds.is_finite() && seconds.abs() < 1e15 => Ok(seconds.floor() as i64),
        _ => Err(serde::de::Error::custom("a NumericDate is out of range")),
    }
}

fn optional_numeric_date<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<i64>, D::Error> {
    numeric_date(deserializer).map(Some)
}
