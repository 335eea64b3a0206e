//! The key ring's token-signing key: one ECDSA P-256 key pair (JOSE `ES256`).
//!
//! It lives in the key file next to the master keys, so every process that loads the same file —
//! the server, `fhirvault token issue` — signs and verifies with the same key. Unlike the data
//! keys it cannot be derived from a master secret (ring builds P-256 key pairs only from PKCS#8 or
//! from a private *and* public key), so its PKCS#8 document is stored as generated. The JOSE side
//! (public JWK, key id, compact JWS) is `auth::token`'s business; this file only holds the key.

use std::fmt;

use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};

use super::CryptoError;

/// The one algorithm the key file's `signing_key.algorithm` may name today.
pub(super) const SIGNING_ALGORITHM: &str = "ES256";

/// An ES256 key pair. `Debug` shows the algorithm and creation time, never key material.
pub struct SigningKey {
    /// The PKCS#8 document (secret): kept to write the key file back on rotation.
    pkcs8: Vec<u8>,
    created: String,
    pair: EcdsaKeyPair,
    rng: SystemRandom,
}

impl SigningKey {
    /// A fresh random key pair.
    pub(super) fn generate(created: String) -> Result<SigningKey, CryptoError> {
        let rng = SystemRandom::new();
        let document = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| CryptoError::Random)?;
        SigningKey::from_pkcs8(document.as_ref().to_vec(), created)
    }

    /// The key pair in a PKCS#8 document, as the key file stores it.
    pub(super) fn from_pkcs8(pkcs8: Vec<u8>, created: String) -> Result<SigningKey, CryptoError> {
        let rng = SystemRandom::new();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8, &rng)
            .map_err(|_| {
                CryptoError::KeyFile("signing_key: not a PKCS#8 ECDSA P-256 key".into())
            })?;
        Ok(SigningKey {
            pkcs8,
            created,
            pair,
            rng,
        })
    }

    pub(super) fn pkcs8(&self) -> &[u8] {
        &self.pkcs8
    }

    /// RFC 3339; when the key was generated.
    pub fn created(&self) -> &str {
        &self.created
    }

    /// The public key as an uncompressed SEC 1 point: `0x04 | x (32 bytes) | y (32 bytes)`.
    pub fn public_key(&self) -> &[u8] {
        self.pair.public_key().as_ref()
    }

    /// ECDSA P-256 / SHA-256 over `message`, as the 64-byte `r | s` JWS ES256 requires.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let signature = self
            .pair
            .sign(&self.rng, message)
            .map_err(|_| CryptoError::Random)?;
        Ok(signature.as_ref().to_vec())
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("algorithm", &SIGNING_ALGORITHM)
            .field("created", &self.created)
            .finish_non_exhaustive()
    }
}
