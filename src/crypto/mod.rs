//! Keys, envelope encryption, pseudonyms and blind indexes: everything that turns PHI into bytes the
//! database may hold.
//!
//! # Layout
//!
//! - `keyring.rs` — [`KeyRing`]: loads, creates and rotates the key file, derives every working key from
//!   the master secrets, and is the one handle callers use for all of the operations below.
//! - `envelope.rs` — [`Aad`] and the sealed-blob format (`version | key id | nonce | ciphertext+tag`):
//!   AES-256-GCM with the ciphertext bound to the row it belongs to.
//! - `pseudonym.rs` — the HMAC pseudonym given to a patient's identity, for the CRM.
//! - `signing.rs` — [`SigningKey`], the ES256 key pair in the key file that signs bearer tokens
//!   (`auth::token` turns it into JWKs and JWTs).
//! - `blind_index.rs` — [`BlindIndexer`] (per-parameter HMAC tokens) plus the string normalisation,
//!   prefix expansion and token sizing that search needs to stay "starts with, case- and
//!   accent-insensitive" without ever storing the text.
//!
//! Callers hold a [`KeyRing`] (cheap to clone, `Send + Sync`) and call `seal`/`open` for stored
//! resources and blobs, `pseudonym` when a patient is written, and `blind_token` (with
//! `search::extract::normalize_string` and [`prefix_tokens`] for string parameters) when index rows are
//! built or a search is planned. Nothing here does I/O on the hot path; only loading, creating and
//! rotating the key file touch the disk.
//!
//! Errors ([`CryptoError`]) never carry key material or plaintext: they name a key id, a file path
//! or what was wrong with the shape of the input, nothing more.

mod blind_index;
mod envelope;
mod keyring;
mod pseudonym;
mod signing;

pub use blind_index::{BlindIndexer, prefix_tokens, token_bits};
pub use envelope::Aad;
pub(crate) use keyring::describe_json_error;
pub use keyring::{KeyId, KeyRing};
pub use signing::SigningKey;

use ring::hkdf;

/// Everything that can go wrong in this module. Messages are safe to log: no secrets, no PHI.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// The key file (or key material from the environment) is missing, unreadable, badly formed
    /// or has unsafe permissions. The message says what to fix.
    #[error("key file: {0}")]
    KeyFile(String),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// A sealed blob names a key id this ring does not hold (a key removed too early, or a blob
    /// from another deployment).
    #[error("sealed data names key id {0}, which is not in the key ring")]
    UnknownKeyId(KeyId),
    /// Not a sealed blob of a format this build understands (too short, unknown version).
    #[error("sealed data is malformed")]
    Malformed,
    /// Authentication failed: the blob was altered, or it belongs to another row (AAD mismatch).
    #[error("sealed data failed authentication")]
    Decrypt,
    /// The plaintext exceeds what AES-GCM can seal in one message (about 64 GiB).
    #[error("plaintext too large to seal")]
    TooLarge,
    /// The operating system's random source failed; nothing can be sealed or created safely.
    #[error("system random number generator failed")]
    Random,
}

/// HKDF salt shared by every derivation; the `info` strings below keep the derived keys apart.
const HKDF_SALT: &[u8] = b"fhirvault/v1";
const INFO_DATA_KEY: &[u8] = b"fhirvault/v1/data-key";
const INFO_PSEUDONYM: &[u8] = b"fhirvault/v1/pseudonym";
const INFO_BLIND_INDEX_PREFIX: &[u8] = b"fhirvault/v1/blind-index/";

/// HKDF-SHA256 extract step over one master secret.
fn extract(master: &[u8; 32]) -> hkdf::Prk {
    hkdf::Salt::new(hkdf::HKDF_SHA256, HKDF_SALT).extract(master)
}

/// HKDF expand into a key type `K` (an AEAD or HMAC key).
///
/// `expand` fails only when the requested length exceeds 255 hash blocks; every key type used here
/// is 32 bytes, so the failure is unreachable whatever `info` holds.
fn expand<K, L>(prk: &hkdf::Prk, info: &[&[u8]], len: L) -> K
where
    L: hkdf::KeyType,
    K: for<'a> From<hkdf::Okm<'a, L>>,
{
    prk.expand(info, len)
        .expect("HKDF output of one key length is always within the HKDF limit")
        .into()
}
