//! Compact JWS (RFC 7515 §7.1) as JWTs use it: parsing, signature verification, and encoding.
//!
//! Written on `ring` rather than a JWT crate: `ring` is already the project's one cryptography
//! package (AES-GCM, HKDF, HMAC), and what is needed here is small — two algorithms, one
//! serialization. Owning the parser lets every refusal be explicit: the algorithm comes from a
//! closed list and must fit the key (so `none`, HS256-with-an-RSA-public-key and ES/RS swaps fail
//! before any cryptography runs), base64url is strict, `crit` is refused, and the size is bounded.
//!
//! # Format
//!
//! ```text
//! BASE64URL(header JSON) '.' BASE64URL(payload JSON) '.' BASE64URL(signature)
//! ```
//!
//! The signature covers the ASCII of the first two parts with their dot. base64url has no padding
//! and no other alphabet (RFC 7515 §2); non-canonical trailing bits are refused too.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

use super::TokenError;
use super::claims::{Claims, RoleClaim};
use super::jwks::JwkSet;

/// Tokens longer than this are refused before any parsing. Real access tokens are well under
/// 4 KiB; the bound keeps a hostile header from costing more than a bounded amount of work.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// The JWS algorithms this server accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256, RSA keys of 2048 to 8192 bits.
    Rs256,
    /// ECDSA on P-256 with SHA-256, the 64-byte `r | s` signature form.
    Es256,
}

impl Algorithm {
    /// The algorithm an `alg` value names; `None` for everything not accepted (`none`, HS*, …).
    pub fn from_name(name: &str) -> Option<Algorithm> {
        match name {
            "RS256" => Some(Algorithm::Rs256),
            "ES256" => Some(Algorithm::Es256),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Rs256 => "RS256",
            Algorithm::Es256 => "ES256",
        }
    }
}

/// The JOSE header fields verification uses.
#[derive(Debug)]
pub struct Header {
    pub alg: Algorithm,
    pub kid: Option<String>,
}

impl Header {
    fn parse(json: &[u8]) -> Result<Header, TokenError> {
        let fields = json_object(json, "header")?;
        if fields.contains_key("crit") {
            return Err(TokenError::CriticalHeader);
        }
        let alg = match fields.get("alg") {
            Some(Value::String(name)) => {
                Algorithm::from_name(name).ok_or(TokenError::UnsupportedAlgorithm)?
            }
            Some(_) => return Err(malformed("the header's alg is not a string")),
            None => return Err(malformed("the header has no alg")),
        };
        match fields.get("typ") {
            None => {}
            Some(Value::String(typ)) if is_jwt_type(typ) => {}
            Some(_) => return Err(TokenError::WrongType),
        }
        let kid = match fields.get("kid") {
            None => None,
            Some(Value::String(kid)) => Some(kid.clone()),
            Some(_) => return Err(malformed("the header's kid is not a string")),
        };
        Ok(Header { alg, kid })
    }
}

/// `JWT` (RFC 7519 §5.1) or `at+jwt` (RFC 9068 §2.1), case-insensitive, with or without the
/// `application/` prefix RFC 7515 §4.1.9 lets senders omit.
fn is_jwt_type(typ: &str) -> bool {
    let lower = typ.to_ascii_lowercase();
    let short = lower.strip_prefix("application/").unwrap_or(&lower);
    matches!(short, "jwt" | "at+jwt")
}

/// Check the compact JWS `token` against `keys` and return its claims. Only the signature and
/// the shape are checked here; times, issuer and audience are the verifier's.
pub fn decode_verified(
    token: &str,
    keys: &JwkSet,
    role_claim: &RoleClaim,
) -> Result<Claims, TokenError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::TooLarge(MAX_TOKEN_BYTES));
    }
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed("a JWS has three dot-separated parts"));
    };
    let header_fields = Header::parse(&decode_part(header, "header")?)?;
    let signature = decode_part(signature, "signature")?;
    let signing_input = &token[..header.len() + 1 + payload.len()];
    keys.verify(
        header_fields.kid.as_deref(),
        header_fields.alg,
        signing_input.as_bytes(),
        &signature,
    )?;
    Claims::from_json(&decode_part(payload, "payload")?, role_claim)
}

/// The compact JWS of `header` and `payload`, signed by `sign` (which receives the signing input).
pub fn encode<E>(
    header: &Value,
    payload: &Value,
    sign: impl FnOnce(&[u8]) -> Result<Vec<u8>, E>,
) -> Result<String, E> {
    let mut token = format!(
        "{}.{}",
        encode_part(header.to_string().as_bytes()),
        encode_part(payload.to_string().as_bytes())
    );
    let signature = sign(token.as_bytes())?;
    token.push('.');
    token.push_str(&encode_part(&signature));
    Ok(token)
}

/// Strict base64url: no padding, no whitespace, no standard-alphabet characters, canonical.
pub(super) fn decode_part(text: &str, what: &str) -> Result<Vec<u8>, TokenError> {
    URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| TokenError::Malformed(format!("the {what} is not unpadded base64url")))
}

pub(super) fn encode_part(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn json_object(json: &[u8], what: &str) -> Result<Map<String, Value>, TokenError> {
    match serde_json::from_slice(json) {
        Ok(Value::Object(fields)) => Ok(fields),
        _ => Err(TokenError::Malformed(format!(
            "the {what} is not a JSON object"
        ))),
    }
}

fn malformed(what: &str) -> TokenError {
    TokenError::Malformed(what.to_string())
}
