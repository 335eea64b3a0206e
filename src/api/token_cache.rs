//! Callers of tokens verified recently. A client sends the same token with every request until
//! it expires; checking its signature again each time (an ES256 verification is about 64 µs,
//! more than a whole read of a small resource) buys nothing, because a JWT cannot change
//! without changing its bytes. Entries are keyed by the SHA-256 of the whole token and end
//! with the token's `exp`, or as soon as the trusted keys change (their generation,
//! [`crate::auth::token::TokenVerifier::key_generation`]): a key removed from the JWKS file must
//! not live on in here.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ring::digest;

use crate::auth::Caller;

/// Tokens remembered at most; when full, the cache starts over (a burst of distinct tokens
/// costs verifications, never memory).
const MAX_ENTRIES: usize = 10_000;

#[derive(Debug, Default)]
pub struct TokenCache {
    entries: Mutex<HashMap<[u8; 32], Entry>>,
}

#[derive(Debug, Clone)]
struct Entry {
    caller: Arc<Caller>,
    /// The token's `exp` (Unix seconds).
    expires: i64,
    /// The key generation it was verified under.
    generation: u64,
}

impl TokenCache {
    /// The caller of `token` if it was verified before, under key `generation`, and has not
    /// expired at `now`.
    pub fn get(&self, token: &str, now: i64, generation: u64) -> Option<Arc<Caller>> {
        let key = key(token);
        let entries = self
            .entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        entries
            .get(&key)
            .filter(|entry| entry.expires > now && entry.generation == generation)
            .map(|entry| entry.caller.clone())
    }

    /// Remember the caller of a token that was just verified under key `generation`.
    pub fn insert(&self, token: &str, caller: Arc<Caller>, expires: i64, generation: u64) {
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(
            key(token),
            Entry {
                caller,
                expires,
                generation,
            },
        );
    }
}

fn key(token: &str) -> [u8; 32] {
    let hash = digest::digest(&digest::SHA256, token.as_bytes());
    let mut key = [0u8; 32];
    key.copy_from_slice(hash.as_ref());
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_until_expiry_and_only_the_same_bytes() {
        let cache = TokenCache::default();
        let caller = Arc::new(Caller::server());
        cache.insert("a.b.c", caller.clone(), 100, 0);
        assert_eq!(cache.get("a.b.c", 99, 0).as_deref(), Some(&*caller));
        assert!(cache.get("a.b.c", 100, 0).is_none(), "expired");
        assert!(cache.get("a.b.d", 50, 0).is_none(), "another token");
        assert!(
            cache.get("a.b.c", 99, 1).is_none(),
            "verified under keys since changed"
        );
    }
}
