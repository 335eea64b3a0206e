//! A stand-in identity provider: P-256 keys by key id, the JWKS file the server is configured
//! with (`auth.jwks_file`), and ES256 tokens signed with any of its keys.

use std::collections::BTreeMap;
use std::path::PathBuf;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use serde_json::{Value, json};

/// Entra ID's shape of issuer (v2 tokens) and an application id URI as the audience.
pub const ISSUER: &str =
    "https://login.microsoftonline.com/3f6e1c52-0000-4000-8000-00000000c0de/v2.0";
pub const AUDIENCE: &str = "api://fhirvault";

pub struct Idp {
    keys: BTreeMap<String, EcdsaKeyPair>,
    pub jwks_file: PathBuf,
}

fn encode(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

impl Idp {
    /// A provider with keys `kids`, all published in `jwks_file`.
    pub fn new(jwks_file: PathBuf, kids: &[&str]) -> Idp {
        let mut idp = Idp {
            keys: BTreeMap::new(),
            jwks_file,
        };
        for kid in kids {
            idp.add_key(kid);
        }
        idp.publish(kids);
        idp
    }

    pub fn add_key(&mut self, kid: &str) {
        let rng = SystemRandom::new();
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("key");
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .expect("key");
        self.keys.insert(kid.to_string(), key);
    }

    /// Write the JWKS file with the public keys `kids`, as a provider's rotation would leave it.
    pub fn publish(&self, kids: &[&str]) {
        let members: Vec<Value> = kids
            .iter()
            .map(|kid| {
                let point = self.keys[*kid].public_key().as_ref();
                json!({"kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid, "x": encode(&point[1..33]), "y": encode(&point[33..])})
            })
            .collect();
        std::fs::write(&self.jwks_file, json!({"keys": members}).to_string()).expect("write JWKS");
    }

    /// An Entra ID v2 access token signed with key `kid`, valid for an hour, with `extra` claims
    /// (`roles`, `scp`, …) over the standard ones.
    pub fn token(&self, kid: &str, extra: Value) -> String {
        let now = chrono::Utc::now().timestamp();
        let mut claims = json!({"iss": ISSUER, "aud": AUDIENCE, "sub": "AAAAAAAAAAAAAAAAAAAAAIkzqFVrSaSaFHy782bbtaQ",
            "oid": "00000000-0000-0000-66f3-3332eca7ea81", "tid": "3f6e1c52-0000-4000-8000-00000000c0de",
            "azp": "6e74172b-be56-4843-9ff4-e66a39bb12e3", "ver": "2.0", "iat": now, "nbf": now, "exp": now + 3600});
        for (name, value) in extra.as_object().expect("claims") {
            claims[name] = value.clone();
        }
        let header = json!({"alg": "ES256", "typ": "JWT", "kid": kid});
        let input = format!(
            "{}.{}",
            encode(header.to_string().as_bytes()),
            encode(claims.to_string().as_bytes())
        );
        let signature = self.keys[kid]
            .sign(&SystemRandom::new(), input.as_bytes())
            .expect("sign");
        format!("{input}.{}", encode(signature.as_ref()))
    }
}
