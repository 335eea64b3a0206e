//! Blind indexes: searchable stand-ins for PHI values.
//!
//! An index row for a PHI search parameter stores `HMAC-SHA256(K_param, value)` truncated to a few
//! bytes instead of the value. Equal values give equal tokens, so `=` search still works by
//! tokenising the query the same way; the database never sees the text. Each parameter has its own
//! key (HKDF from the index-root master with info `fhirvault/v1/blind-index/<param>`), so the same
//! surname under `Patient.family` and `Practitioner.family` gives unrelated tokens and the two
//! columns can't be joined. Like pseudonyms, these keys don't change when data keys rotate.
//!
//! Truncation is deliberate (CipherSweet's design): a short token is a Bloom-filter-like hint with
//! false positives, so two rows sharing a token do not prove they share a value. Search must
//! therefore decrypt candidates and re-check the predicate; see [`token_bits`] for the sizing.
//!
//! FHIR string search is "starts with, case- and accent-insensitive". We keep that without the text
//! by normalising (`crate::search::extract::normalize_string`) and tokenising every prefix of the normalised
//! value ([`prefix_tokens`]); a query then looks up the token of its own normalised text.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use ring::{hkdf, hmac};

use super::{INFO_BLIND_INDEX_PREFIX, expand};

/// Computes blind-index tokens. Per-parameter HMAC keys are derived on first use and cached: token
/// computation is on the write hot path (several tokens per indexed string) and an HKDF per call
/// would double its cost.
pub struct BlindIndexer {
    root: hkdf::Prk,
    keys: RwLock<HashMap<String, Arc<hmac::Key>>>,
}

impl BlindIndexer {
    /// An indexer over an HKDF pseudorandom key extracted from the index-root master secret.
    pub(super) fn new(root: hkdf::Prk) -> Self {
        Self {
            root,
            keys: RwLock::new(HashMap::new()),
        }
    }

    /// The token for `value` under `param`: HMAC-SHA256 truncated to `bits` bits (rounded up to
    /// whole bytes, the unused low bits of the last byte zeroed), lowercase hex.
    ///
    /// `bits` is clamped to 1..=256. `value` is MACed as given: string parameters must be passed
    /// through `crate::search::extract::normalize_string` first, token parameters (identifiers, codes) are
    /// case-sensitive in FHIR and must not be.
    pub fn token(&self, param: &str, value: &str, bits: u32) -> String {
        let key = self.key_for(param);
        let tag = hmac::sign(&key, value.as_bytes());
        truncate_hex(tag.as_ref(), bits)
    }

    fn key_for(&self, param: &str) -> Arc<hmac::Key> {
        // The map is only ever inserted into whole, so a poisoned lock still holds valid keys.
        if let Some(key) = self
            .keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(param)
        {
            return Arc::clone(key);
        }
        let key: hmac::Key = expand(
            &self.root,
            &[INFO_BLIND_INDEX_PREFIX, param.as_bytes()],
            hmac::HMAC_SHA256,
        );
        let mut keys = self.keys.write().unwrap_or_else(|e| e.into_inner());
        Arc::clone(
            keys.entry(param.to_owned())
                .or_insert_with(|| Arc::new(key)),
        )
    }
}

impl std::fmt::Debug for BlindIndexer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let cached = self.keys.read().map(|keys| keys.len()).unwrap_or(0);
        f.debug_struct("BlindIndexer")
            .field("cached_params", &cached)
            .finish_non_exhaustive()
    }
}

fn truncate_hex(mac: &[u8], bits: u32) -> String {
    let bits = bits.clamp(1, 256) as usize;
    let mut bytes = mac[..bits.div_ceil(8)].to_vec();
    let spare = bytes.len() * 8 - bits;
    if let Some(last) = bytes.last_mut() {
        *last &= 0xffu8 << spare;
    }
    hex::encode(bytes)
}

/// The prefixes of `normalized` of `min_len..=max_len` characters (not bytes), shortest first.
///
/// These are what get tokenised for a string parameter, so a starts-with query of any length in
/// that range is one token lookup. Queries shorter than `min_len` can't be served from the index;
/// queries longer than `max_len` look up the `max_len` prefix and re-check after decryption. A value
/// shorter than `min_len` yields nothing; zero-length prefixes are never produced.
pub fn prefix_tokens(normalized: &str, min_len: usize, max_len: usize) -> Vec<String> {
    // Byte offsets where the prefixes of 1, 2, 3, … chars end.
    normalized
        .char_indices()
        .map(|(start, c)| start + c.len_utf8())
        .take(max_len)
        .skip(min_len.max(1) - 1)
        .map(|end| normalized[..end].to_owned())
        .collect()
}

/// Bits per token for a blind index, following CipherSweet's planning rule.
///
/// CipherSweet (paragonie/ciphersweet, `docs/SECURITY.md`, "Blind Index Information Leaks") counts
/// the expected *coincidences* — rows sharing a token without sharing a value — as
/// `C = R / 2^min(L, K)` for `R` rows, `L` token bits and `K` bits of input keyspace, and
/// recommends `2 <= C < sqrt(R)`: at least two coincidences so a shared token never proves a shared
/// value, but not so many that the index stops narrowing the search.
///
/// We take the population that can collide as `N = min(distinct values, rows)` (there can't be more
/// distinct tokens in use than either) and pick the largest `L` with `N / 2^L >= 2`, i.e.
/// `L = floor(log2 N) - 1`. That puts `N / 2^L` in `[2, 4)`: each token is shared by two to four
/// distinct values, and since `L < K` the CipherSweet count is `C = R / 2^L >= 2`. The result is
/// clamped to `[16, 64]`: below 16 bits a lookup returns too large a share of the table to be worth
/// an index, above 64 there is nothing left to gain (with `u64` inputs the formula tops out at 62). Size for the row count the deployment expects
/// to reach, since changing bits later means rebuilding the index.
pub fn token_bits(estimated_distinct_values: u64, rows: u64) -> u32 {
    let population = estimated_distinct_values.min(rows);
    let bits = population.checked_ilog2().unwrap_or(0).saturating_sub(1);
    bits.clamp(16, 64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn indexer() -> BlindIndexer {
        BlindIndexer::new(super::super::extract(&[9; 32]))
    }

    #[test]
    fn token_is_deterministic_and_per_param() {
        let ix = indexer();
        let a = ix.token("Patient.family", "muller", 32);
        assert_eq!(a, ix.token("Patient.family", "muller", 32));
        assert_ne!(a, ix.token("Practitioner.family", "muller", 32));
        assert_ne!(a, ix.token("Patient.family", "mueller", 32));
    }

    #[test]
    fn token_length_follows_bits() {
        let ix = indexer();
        for (bits, hex_len) in [
            (0, 2),
            (1, 2),
            (8, 2),
            (16, 4),
            (20, 6),
            (64, 16),
            (256, 64),
            (999, 64),
        ] {
            assert_eq!(ix.token("p", "v", bits).len(), hex_len, "bits {bits}");
        }
        // Unused low bits of the last byte are zero: 20 bits = 5 hex digits then a 0.
        let t = ix.token("p", "v", 20);
        assert!(t.ends_with('0'));
        assert_eq!(&t[..5], &ix.token("p", "v", 24)[..5]);
    }

    #[test]
    fn truncation_masks_low_bits() {
        assert_eq!(truncate_hex(&[0xff; 32], 12), "fff0");
        assert_eq!(truncate_hex(&[0xff; 32], 1), "80");
        assert_eq!(truncate_hex(&[0xab, 0xcd], 16), "abcd");
    }

    #[test]
    fn prefixes_are_by_chars() {
        assert_eq!(prefix_tokens("zoë", 1, 10), ["z", "zo", "zoë"]);
        assert_eq!(prefix_tokens("muller", 2, 4), ["mu", "mul", "mull"]);
        assert_eq!(prefix_tokens("ab", 3, 5), Vec::<String>::new());
        assert_eq!(prefix_tokens("abc", 0, 1), ["a"]);
        assert_eq!(prefix_tokens("abc", 3, 2), Vec::<String>::new());
        assert_eq!(prefix_tokens("", 1, 5), Vec::<String>::new());
        assert_eq!(prefix_tokens("日本語", 2, 2), ["日本"]);
    }

    #[test]
    fn token_bits_keeps_two_to_four_values_per_token() {
        // 10^10 possible SSNs, 10^7 rows: population 10^7, 2^23 = 8.4M ≤ 10^7 < 2^24 → 22 bits.
        assert_eq!(token_bits(10_000_000_000, 10_000_000), 22);
        let population = 10_000_000u64;
        let per_token = population as f64 / 2f64.powi(22);
        assert!((2.0..4.0).contains(&per_token));
        // Few distinct values cap the bits even with many rows.
        assert_eq!(token_bits(1 << 20, 1 << 40), 19);
        // Small or empty inputs clamp to the floor, huge ones to the ceiling.
        assert_eq!(token_bits(0, 0), 16);
        assert_eq!(token_bits(100, 1_000_000), 16);
        assert_eq!(token_bits(u64::MAX, u64::MAX), 62);
    }

    #[test]
    fn indexer_is_shareable_across_threads() {
        let ix = Arc::new(indexer());
        let handles: Vec<_> = (0..4)
            .map(|i| {
                let ix = Arc::clone(&ix);
                std::thread::spawn(move || ix.token(&format!("p{}", i % 2), "v", 32))
            })
            .collect();
        let tokens: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert_eq!(tokens[0], tokens[2]);
        assert_eq!(tokens[1], tokens[3]);
        assert_ne!(tokens[0], tokens[1]);
    }
}
