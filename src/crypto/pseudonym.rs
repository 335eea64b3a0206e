//! Pseudonyms: the name a patient goes by outside the clinical circle (the CRM, analytics).
//!
//! A pseudonym is HMAC-SHA256 over the patient's stable identity string (e.g.
//! `urn:oid:1.2.40.0.10.1.4.3.1|1234010180`) under a key of its own, never a plain hash: an Austrian
//! social-insurance number has ten digits, so an unkeyed hash of it is reversed by trying all 10^10
//! candidates in seconds. The first 160 bits of the MAC are written as lowercase base32 (RFC 4648
//! alphabet, no padding), which gives exactly 32 characters that are safe in FHIR identifiers,
//! URLs and spreadsheets.
//!
//! The key derives from the index-root master key, not from the data keys, so rotating data keys
//! leaves every pseudonym the CRM already holds unchanged. The identity string is MACed byte for
//! byte: callers must build it the same way every time (system, `|`, value, trimmed).

use ring::hmac;

/// Bytes of the MAC kept: 160 bits, enough that no two patients collide in practice.
const PSEUDONYM_BYTES: usize = 20;
const BASE32_ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// Computes pseudonyms under one pseudonym key.
pub(super) struct Pseudonymizer {
    key: hmac::Key,
}

impl Pseudonymizer {
    pub(super) fn new(key: hmac::Key) -> Self {
        Self { key }
    }

    pub(super) fn pseudonym(&self, identity: &str) -> String {
        let tag = hmac::sign(&self.key, identity.as_bytes());
        base32_lower(&tag.as_ref()[..PSEUDONYM_BYTES])
    }
}

/// RFC 4648 base32 in lowercase, without padding.
fn base32_lower(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let mut buffer: u16 = 0;
    let mut bits = 0u32;
    for &byte in bytes {
        buffer = (buffer << 8) | u16::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(
                BASE32_ALPHABET[usize::from((buffer >> bits) & 0x1f)],
            ));
        }
        buffer &= (1 << bits) - 1;
    }
    if bits > 0 {
        out.push(char::from(
            BASE32_ALPHABET[usize::from((buffer << (5 - bits)) & 0x1f)],
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base32_matches_rfc4648_vectors() {
        // RFC 4648 section 10, lowercased and without padding.
        let cases = [
            ("", ""),
            ("f", "my"),
            ("fo", "mzxq"),
            ("foo", "mzxw6"),
            ("foob", "mzxw6yq"),
            ("fooba", "mzxw6ytb"),
            ("foobar", "mzxw6ytboi"),
        ];
        for (input, expected) in cases {
            assert_eq!(base32_lower(input.as_bytes()), expected, "input {input:?}");
        }
    }

    #[test]
    fn pseudonym_shape_and_determinism() {
        let p = Pseudonymizer::new(hmac::Key::new(hmac::HMAC_SHA256, &[7; 32]));
        let a = p.pseudonym("urn:oid:1.2.40.0.10.1.4.3.1|1234010180");
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|b| BASE32_ALPHABET.contains(&b)));
        assert_eq!(a, p.pseudonym("urn:oid:1.2.40.0.10.1.4.3.1|1234010180"));
        assert_ne!(a, p.pseudonym("urn:oid:1.2.40.0.10.1.4.3.1|1234010181"));
    }
}
