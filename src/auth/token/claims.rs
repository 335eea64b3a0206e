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
//! - the role is wherever the provider puts it ([`RoleClaim`]): our `role` claim, Entra ID's
//!   `roles` array (app roles), Keycloak's `realm_access.roles`, a custom claim; a string or an
//!   array of strings. [`Claims::roles`] lists what is there.
//!
//! Unknown claims are ignored. Roles and `scope` stay plain strings: what they allow is decided
//! where roles and SMART scopes are parsed, not here.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

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
    /// The values of the role claim ([`RoleClaim`]); empty when the token has none. A token is
    /// meant to carry one role; whether it does is decided by whoever reads the roles.
    #[serde(skip)]
    pub roles: Vec<String>,
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
            .field("roles", &self.roles)
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
    /// Parse a JWS payload, reading the role where `role_claim` says. It must be a JSON object
    /// (serde would also take an array, by position); errors name the claim, never its value.
    pub fn from_json(payload: &[u8], role_claim: &RoleClaim) -> Result<Claims, TokenError> {
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
        let fields: Map<String, Value> = serde_json::from_slice(payload)
            .map_err(|_| TokenError::Malformed("the payload is not a JSON object".into()))?;
        Ok(Claims {
            iss: raw.iss,
            sub: raw.sub,
            aud: raw.aud.map(OneOrMany::into_vec).unwrap_or_default(),
            exp: raw.exp,
            nbf: raw.nbf,
            iat: raw.iat,
            jti: raw.jti,
            roles: role_claim.read(&fields)?,
            scope,
            patient: raw.patient,
            org: raw.org,
            client_id: raw.client_id.or(raw.azp),
            purpose: raw.purpose,
        })
    }
}

/// Where a token carries its role: a claim name, or a dotted path into nested objects
/// (`realm_access.roles`). A name that is itself a claim (`https://example.org/role`, as some
/// providers namespace custom claims) is taken as it is before it is split at its dots. The
/// default reads our `role` claim and, when a token has none, Entra ID's `roles`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleClaim {
    /// Tried in order; the first one present in a token is its role claim.
    names: Vec<String>,
}

impl Default for RoleClaim {
    fn default() -> Self {
        RoleClaim {
            names: vec!["role".into(), "roles".into()],
        }
    }
}

impl fmt::Display for RoleClaim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.names.join("` or `"))
    }
}

impl RoleClaim {
    /// The claim named `path` (a setting): not empty, no empty segment between dots, no spaces.
    pub fn parse(path: &str) -> Result<RoleClaim, String> {
        if path.is_empty()
            || path.split('.').any(str::is_empty)
            || path.contains(char::is_whitespace)
        {
            return Err("must be a claim name or a dotted path of claim names, such as role, roles or realm_access.roles".into());
        }
        Ok(RoleClaim {
            names: vec![path.to_string()],
        })
    }

    /// The claim (or path) tokens the key ring issues carry their role in.
    pub fn primary(&self) -> &str {
        &self.names[0]
    }

    /// The role values of a token's claims: a string, or an array of strings, at the first name
    /// present; none when no name is.
    fn read(&self, claims: &Map<String, Value>) -> Result<Vec<String>, TokenError> {
        let Some((name, value)) = self
            .names
            .iter()
            .find_map(|name| Some((name, lookup(claims, name)?)))
        else {
            return Ok(Vec::new());
        };
        let wrong = || {
            TokenError::InvalidClaims(format!(
                "the role claim {name} is neither a string nor an array of strings"
            ))
        };
        match value {
            Value::Null => Ok(Vec::new()),
            Value::String(role) => Ok(vec![role.clone()]),
            Value::Array(roles) => roles
                .iter()
                .map(|role| role.as_str().map(str::to_string).ok_or_else(wrong))
                .collect(),
            _ => Err(wrong()),
        }
    }

    /// Put `role` where this claim is read, as a string (tokens the key ring issues).
    pub fn write(&self, payload: &mut Value, role: &str) {
        let mut segments: Vec<&str> = self.primary().split('.').collect();
        let last = segments.pop().unwrap_or("role");
        let mut object = payload;
        for segment in segments {
            if !object[segment].is_object() {
                object[segment] = Value::Object(Map::new());
            }
            object = &mut object[segment];
        }
        object[last] = Value::String(role.to_string());
    }
}

/// The value at `name` in `claims`: the claim of that exact name, else the dotted path.
fn lookup<'a>(claims: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    if let Some(value) = claims.get(name) {
        return Some(value);
    }
    let mut segments = name.split('.');
    let mut value = claims.get(segments.next()?)?;
    for segment in segments {
        value = value.as_object()?.get(segment)?;
    }
    Some(value)
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
