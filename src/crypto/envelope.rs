//! The sealed-blob format and what a ciphertext is bound to.
//!
//! # Format
//!
//! ```text
//! +---------+------------------+-------------------+----------------------------+
//! | version | key id (u32, BE) | nonce (12 bytes)  | AES-256-GCM ciphertext+tag |
//! | 1 byte  | 4 bytes          | random per seal   | len(plaintext) + 16 bytes  |
//! +---------+------------------+-------------------+----------------------------+
//! ```
//!
//! The key id travels in clear so that several data keys can be live at once: rotation seals new
//! rows under the new key while old rows keep opening under theirs until the background re-seal
//! reaches them. The header (version and key id) is authenticated as part of the associated data,
//! and so is the row identity from [`Aad`]: moving a ciphertext to another row, another version or
//! another resource makes `open` fail instead of returning someone else's data.
//!
//! Nonces are 96 random bits from the OS. With random nonces one key should seal no more than about
//! 2^32 messages (NIST SP 800-38D); rotate long before that.

use ring::aead::{self, LessSafeKey, NONCE_LEN, Nonce};
use ring::rand::{SecureRandom, SystemRandom};

use super::{CryptoError, KeyId};

/// The only format this build writes and reads.
const FORMAT_VERSION: u8 = 1;
const HEADER_LEN: usize = 1 + 4;
const PREFIX_LEN: usize = HEADER_LEN + NONCE_LEN;
const TAG_LEN: usize = 16;
/// Domain tag at the front of every AAD, so our ciphertexts can't be confused with another system's.
const AAD_DOMAIN: &[u8] = b"fhirvault/v1";

/// What a ciphertext is bound to, so a row cannot be swapped for another one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aad<'a> {
    /// A stored resource version: "fhirvault/v1" | "resource" | type | id | version.
    Resource {
        resource_type: &'a str,
        id: &'a str,
        version: i64,
    },
    /// Any other sealed blob (transaction scratch, import staging, dead letters, audit detail):
    /// "fhirvault/v1" | "blob" | purpose | key.
    Blob { purpose: &'a str, key: &'a str },
}

impl Aad<'_> {
    /// The canonical byte form. Every field is length-prefixed (u32 BE length, then the bytes), so
    /// fields cannot run into each other, and each variant carries its own tag, so no `Blob` can
    /// ever encode like a `Resource`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        push_field(&mut out, AAD_DOMAIN);
        match self {
            Aad::Resource {
                resource_type,
                id,
                version,
            } => {
                push_field(&mut out, b"resource");
                push_field(&mut out, resource_type.as_bytes());
                push_field(&mut out, id.as_bytes());
                push_field(&mut out, &version.to_be_bytes());
            }
            Aad::Blob { purpose, key } => {
                push_field(&mut out, b"blob");
                push_field(&mut out, purpose.as_bytes());
                push_field(&mut out, key.as_bytes());
            }
        }
        out
    }
}

fn push_field(out: &mut Vec<u8>, field: &[u8]) {
    // Fields longer than 4 GiB can't occur (ids and type names are short); saturating keeps this
    // total without a panic path, and AES-GCM would refuse such input anyway.
    let len = u32::try_from(field.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(field);
}

/// The associated data handed to AES-GCM: the blob header followed by the row identity.
fn gcm_aad(header: &[u8], aad: &Aad) -> Vec<u8> {
    let mut bytes = header.to_vec();
    bytes.extend_from_slice(&aad.to_bytes());
    bytes
}

/// Seal `plaintext` under `key`, naming `key_id` in the header.
pub(super) fn seal(
    key: &LessSafeKey,
    key_id: KeyId,
    rng: &SystemRandom,
    aad: &Aad,
    plaintext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill(&mut nonce).map_err(|_| CryptoError::Random)?;

    let mut out = Vec::with_capacity(PREFIX_LEN + plaintext.len() + TAG_LEN);
    out.push(FORMAT_VERSION);
    out.extend_from_slice(&key_id.to_be_bytes());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plaintext);

    let aad_bytes = gcm_aad(&out[..HEADER_LEN], aad);
    let (_, body) = out.split_at_mut(PREFIX_LEN);
    let tag = key
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            aead::Aad::from(aad_bytes),
            body,
        )
        // Only fails for inputs beyond GCM's per-message limit.
        .map_err(|_| CryptoError::TooLarge)?;
    out.extend_from_slice(tag.as_ref());
    Ok(out)
}

/// The key id a sealed blob names, or `None` if it is not a blob of our format.
pub(super) fn sealed_key_id(sealed: &[u8]) -> Option<KeyId> {
    if sealed.len() < PREFIX_LEN + TAG_LEN || sealed[0] != FORMAT_VERSION {
        return None;
    }
    let id: [u8; 4] = sealed[1..HEADER_LEN].try_into().ok()?;
    Some(KeyId::from_be_bytes(id))
}

/// Open a sealed blob, looking its key up by the id in its header.
pub(super) fn open<'k>(
    key_for: impl FnOnce(KeyId) -> Option<&'k LessSafeKey>,
    aad: &Aad,
    sealed: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let key_id = sealed_key_id(sealed).ok_or(CryptoError::Malformed)?;
    let key = key_for(key_id).ok_or(CryptoError::UnknownKeyId(key_id))?;

    let (header, rest) = sealed.split_at(HEADER_LEN);
    let (nonce, body) = rest.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| CryptoError::Malformed)?;

    let mut buf = body.to_vec();
    let plaintext_len = key
        .open_in_place(nonce, aead::Aad::from(gcm_aad(header, aad)), &mut buf)
        .map_err(|_| CryptoError::Decrypt)?
        .len();
    buf.truncate(plaintext_len);
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aad_fields_cannot_run_together() {
        let a = Aad::Blob {
            purpose: "ab",
            key: "c",
        }
        .to_bytes();
        let b = Aad::Blob {
            purpose: "a",
            key: "bc",
        }
        .to_bytes();
        assert_ne!(a, b);
    }

    #[test]
    fn aad_variants_are_distinct() {
        // A blob whose purpose/key mimic a resource's id and version bytes still differs.
        let resource = Aad::Resource {
            resource_type: "blob",
            id: "x",
            version: 1,
        }
        .to_bytes();
        let version = 1i64.to_be_bytes();
        let key = std::str::from_utf8(&version).unwrap();
        let blob = Aad::Blob { purpose: "x", key }.to_bytes();
        assert_ne!(resource, blob);
    }

    #[test]
    fn aad_resource_layout() {
        let bytes = Aad::Resource {
            resource_type: "Patient",
            id: "p1",
            version: 3,
        }
        .to_bytes();
        let mut expected = Vec::new();
        for field in [
            &b"fhirvault/v1"[..],
            b"resource",
            b"Patient",
            b"p1",
            &3i64.to_be_bytes(),
        ] {
            expected.extend_from_slice(&(field.len() as u32).to_be_bytes());
            expected.extend_from_slice(field);
        }
        assert_eq!(bytes, expected);
    }

    #[test]
    fn sealed_key_id_rejects_short_and_unknown_versions() {
        assert_eq!(sealed_key_id(&[]), None);
        assert_eq!(sealed_key_id(&[1, 0, 0, 0, 7]), None);
        let mut blob = vec![0u8; PREFIX_LEN + TAG_LEN];
        blob[0] = 1;
        blob[4] = 7;
        assert_eq!(sealed_key_id(&blob), Some(7));
        blob[0] = 2;
        assert_eq!(sealed_key_id(&blob), None);
    }
}
