//! JSON Web Key Sets (RFC 7517): the public keys tokens are verified against.
//!
//! A set comes from a file (an identity provider's published JWKS, saved) and/or from the key
//! ring's own signing key. Only signature keys this server can use are kept: RSA (`n`, `e`, at
//! least 2048 bits) and EC P-256 (`x`, `y`). Keys for encryption (`use` other than `sig`), for
//! other algorithms (`alg` other than RS256/ES256), of other types (`oct`, `OKP`, P-384…) are
//! skipped with a log line, since providers publish such keys beside their signing keys; a key of a
//! usable type that is badly encoded, or that carries private material (`d`), is an error.
//!
//! A token names its key by `kid`. A key without `kid` is accepted only in a set of one key.

use std::path::Path;

use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use serde_json::{Map, Value, json};

use super::TokenError;
use super::jwt::{Algorithm, decode_part, encode_part};
use crate::crypto::SigningKey;

/// A public key in the form `ring` verifies with.
#[derive(Clone, PartialEq, Eq)]
enum PublicKey {
    /// Big-endian modulus and exponent without leading zeros, as ring wants them.
    Rsa { n: Vec<u8>, e: Vec<u8> },
    /// Uncompressed SEC 1 point `0x04 | x | y`.
    EcP256 { point: Vec<u8> },
}

/// One usable verification key.
#[derive(Clone, PartialEq, Eq)]
pub struct Jwk {
    kid: Option<String>,
    /// The algorithm the key's `alg` pins it to; `None` lets the key type decide.
    alg: Option<Algorithm>,
    key: PublicKey,
}

/// Why a JWKS could not be used. Names the key by position and the field, not values.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct JwksError(String);

impl Jwk {
    /// The public half of the key ring's signing key, with its RFC 7638 thumbprint as `kid`.
    pub fn from_signing_key(key: &SigningKey) -> Jwk {
        let mut jwk = Jwk {
            kid: None,
            alg: Some(Algorithm::Es256),
            key: PublicKey::EcP256 {
                point: key.public_key().to_vec(),
            },
        };
        jwk.kid = Some(jwk.thumbprint());
        jwk
    }

    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// The JWK Thumbprint (RFC 7638): SHA-256 over the required members in lexicographic order,
    /// without whitespace, base64url. Stable for a key whatever else its JWK says.
    pub fn thumbprint(&self) -> String {
        let canonical = match &self.key {
            PublicKey::Rsa { n, e } => format!(
                r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
                encode_part(e),
                encode_part(n)
            ),
            PublicKey::EcP256 { point } => format!(
                r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
                encode_part(&point[1..33]),
                encode_part(&point[33..])
            ),
        };
        encode_part(ring::digest::digest(&ring::digest::SHA256, canonical.as_bytes()).as_ref())
    }

    /// The public JWK, as a `jwks.json` endpoint publishes it.
    pub fn to_json(&self) -> Value {
        let mut jwk = match &self.key {
            PublicKey::Rsa { n, e } => {
                json!({"kty": "RSA", "n": encode_part(n), "e": encode_part(e)})
            }
            PublicKey::EcP256 { point } => {
                json!({"kty": "EC", "crv": "P-256", "x": encode_part(&point[1..33]), "y": encode_part(&point[33..])})
            }
        };
        jwk["use"] = json!("sig");
        if let Some(alg) = self.alg {
            jwk["alg"] = json!(alg.name());
        }
        if let Some(kid) = &self.kid {
            jwk["kid"] = json!(kid);
        }
        jwk
    }

    fn fits(&self, alg: Algorithm) -> bool {
        let by_type = matches!(
            (&self.key, alg),
            (PublicKey::Rsa { .. }, Algorithm::Rs256)
                | (PublicKey::EcP256 { .. }, Algorithm::Es256)
        );
        by_type && self.alg.is_none_or(|pinned| pinned == alg)
    }

    fn verifies(&self, alg: Algorithm, message: &[u8], signature: &[u8]) -> bool {
        match (&self.key, alg) {
            (PublicKey::Rsa { n, e }, Algorithm::Rs256) => RsaPublicKeyComponents { n, e }
                .verify(&signature::RSA_PKCS1_2048_8192_SHA256, message, signature)
                .is_ok(),
            (PublicKey::EcP256 { point }, Algorithm::Es256) => {
                UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                    .verify(message, signature)
                    .is_ok()
            }
            _ => false,
        }
    }

    /// One member of a JWKS: `Ok(None)` for a key this server skips, `Err` for a broken one.
    fn parse(fields: &Map<String, Value>) -> Result<Option<Jwk>, String> {
        let text = |name: &str| text(fields, name);
        if text("use")?.is_some_and(|usage| usage != "sig") {
            return Ok(None);
        }
        if let Some(Value::Array(ops)) = fields.get("key_ops")
            && !ops.iter().any(|op| op == "verify")
        {
            return Ok(None);
        }
        let alg = match text("alg")? {
            None => None,
            Some(name) => match Algorithm::from_name(name) {
                Some(alg) => Some(alg),
                None => return Ok(None),
            },
        };
        let key = match text("kty")? {
            Some("RSA") => rsa_key(fields)?,
            Some("EC") if text("crv")? == Some("P-256") => ec_key(fields)?,
            _ => return Ok(None),
        };
        if fields.contains_key("d") {
            return Err("holds private key material (d); publish only the public key".into());
        }
        let jwk = Jwk {
            kid: text("kid")?.map(str::to_string),
            alg,
            key,
        };
        if alg.is_some_and(|alg| !jwk.fits(alg)) {
            return Err("its alg does not fit its kty".into());
        }
        Ok(Some(jwk))
    }
}

/// A string member of a JWK, `None` when absent.
fn text<'a>(fields: &'a Map<String, Value>, name: &str) -> Result<Option<&'a str>, String> {
    match fields.get(name) {
        None => Ok(None),
        Some(Value::String(value)) => Ok(Some(value)),
        Some(_) => Err(format!("{name} is not a string")),
    }
}

fn required_bytes(fields: &Map<String, Value>, name: &str) -> Result<Vec<u8>, String> {
    let value = text(fields, name)?.ok_or_else(|| format!("{name} is missing"))?;
    decode_part(value, name).map_err(|_| format!("{name} is not unpadded base64url"))
}

fn rsa_key(fields: &Map<String, Value>) -> Result<PublicKey, String> {
    let n = strip_leading_zeros(required_bytes(fields, "n")?);
    let e = strip_leading_zeros(required_bytes(fields, "e")?);
    let bits = n.first().map_or(0, |top| {
        (n.len() - 1) * 8 + (8 - top.leading_zeros() as usize)
    });
    if !(2048..=8192).contains(&bits) {
        return Err(format!(
            "an RSA modulus of {bits} bits is outside 2048 to 8192"
        ));
    }
    if e.is_empty() || e.len() > 8 {
        return Err("the RSA exponent e is out of range".into());
    }
    Ok(PublicKey::Rsa { n, e })
}

fn ec_key(fields: &Map<String, Value>) -> Result<PublicKey, String> {
    let (x, y) = (required_bytes(fields, "x")?, required_bytes(fields, "y")?);
    if x.len() != 32 || y.len() != 32 {
        return Err("P-256 coordinates x and y must be 32 bytes each".into());
    }
    Ok(PublicKey::EcP256 {
        point: [&[0x04][..], &x, &y].concat(),
    })
}

fn strip_leading_zeros(mut bytes: Vec<u8>) -> Vec<u8> {
    let zeros = bytes.iter().take_while(|b| **b == 0).count();
    bytes.drain(..zeros);
    bytes
}

/// The keys a verifier trusts.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct JwkSet {
    keys: Vec<Jwk>,
}

impl JwkSet {
    pub fn new(keys: Vec<Jwk>) -> JwkSet {
        JwkSet { keys }
    }

    /// Parse a JWKS document (`{"keys": [...]}`).
    pub fn from_json(json: &[u8]) -> Result<JwkSet, JwksError> {
        let members = match serde_json::from_slice::<Value>(json) {
            Ok(Value::Object(mut set)) => match set.remove("keys") {
                Some(Value::Array(members)) => members,
                _ => return Err(JwksError("a JWKS needs a \"keys\" array".into())),
            },
            _ => return Err(JwksError("not a JSON object".into())),
        };
        let mut keys = Vec::new();
        for (position, member) in members.iter().enumerate() {
            let Value::Object(fields) = member else {
                return Err(JwksError(format!("key {position} is not a JSON object")));
            };
            match Jwk::parse(fields).map_err(|why| JwksError(format!("key {position}: {why}")))? {
                Some(jwk) => keys.push(jwk),
                None => tracing::warn!(
                    position,
                    "JWKS: skipping a key that is not an RS256 or ES256 signature key"
                ),
            }
        }
        if keys.is_empty() {
            return Err(JwksError("holds no RS256 or ES256 signature key".into()));
        }
        if keys.len() > 1 && keys.iter().any(|key| key.kid.is_none()) {
            return Err(JwksError("holds several keys, so each needs a kid".into()));
        }
        Ok(JwkSet { keys })
    }

    /// Read and parse a JWKS file; errors name the file.
    pub fn from_file(path: &Path) -> Result<JwkSet, JwksError> {
        let bytes = std::fs::read(path)
            .map_err(|e| JwksError(format!("cannot read {}: {e}", path.display())))?;
        JwkSet::from_json(&bytes)
            .map_err(|JwksError(why)| JwksError(format!("{}: {why}", path.display())))
    }

    pub fn keys(&self) -> &[Jwk] {
        &self.keys
    }

    pub fn push(&mut self, jwk: Jwk) {
        self.keys.push(jwk);
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The public JWKS document.
    pub fn to_json(&self) -> Value {
        json!({"keys": self.keys.iter().map(Jwk::to_json).collect::<Vec<_>>()})
    }

    /// Verify `signature` over `message` with a key that has the token's `kid` and fits `alg`.
    /// A token without `kid` is matched only when there is a single key.
    pub(super) fn verify(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), TokenError> {
        let mut candidates = self
            .keys
            .iter()
            .filter(|key| key.fits(alg) && self.kid_matches(key, kid))
            .peekable();
        if candidates.peek().is_none() {
            return Err(TokenError::NoMatchingKey);
        }
        if candidates.any(|key| key.verifies(alg, message, signature)) {
            Ok(())
        } else {
            Err(TokenError::BadSignature)
        }
    }

    fn kid_matches(&self, key: &Jwk, kid: Option<&str>) -> bool {
        match (key.kid.as_deref(), kid) {
            (None, _) => true,
            (Some(ours), Some(theirs)) => ours == theirs,
            (Some(_), None) => self.keys.len() == 1,
        }
    }
}

impl std::fmt::Debug for JwkSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.keys.iter().map(|key| (key.kid.as_deref(), key.alg)))
            .finish()
    }
}
