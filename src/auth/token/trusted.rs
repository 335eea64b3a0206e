//! [`TrustedKeys`]: the keys tokens are verified against, kept in step with the JWKS file.
//!
//! An identity provider rotates its signing keys: it publishes the new key beside the old one,
//! signs with the new one, and later drops the old one. The operator (or a cron job) saves the
//! provider's JWKS to `auth.jwks_file`; the server notices without a restart:
//!
//! - at most every [`RECHECK`], on the next token, the file's modification time and size are
//!   compared with those of the last read, and a changed file is read again
//!   ([`crate::watch::WatchedFiles`], which the client certificate revocation lists use too);
//! - a token that names a key id no trusted key has makes the file be read at once, whatever
//!   its time stamp says, but at most once per [`RECHECK`], so that tokens with made-up key ids
//!   cost no more than one small file read every few seconds.
//!
//! A file that cannot be read or holds no usable key leaves the last good keys in place and logs
//! a warning once per change of the file (the message names the file and the key's position,
//! never key material). The key ring's own key, when trusted, is kept beside the file's.
//! Each change of the keys counts up [`TrustedKeys::generation`], which the token cache
//! compares, so that a token of a removed key is not served from the cache.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use super::jwks::{Jwk, JwkSet, JwksError};
use crate::watch::WatchedFiles;

/// How often the file is looked at, and how often a token with an unknown key id may make the
/// server read it.
pub use crate::watch::RECHECK;

#[derive(Debug)]
pub struct TrustedKeys {
    current: RwLock<Arc<JwkSet>>,
    generation: AtomicU64,
    file: Option<KeyFile>,
}

#[derive(Debug)]
struct KeyFile {
    /// The one file, `auth.jwks_file`.
    watched: WatchedFiles,
    /// Trusted beside the file's keys (the key ring's).
    fixed: JwkSet,
}

impl TrustedKeys {
    /// Keys that never change.
    pub fn fixed(keys: JwkSet) -> TrustedKeys {
        TrustedKeys {
            current: RwLock::new(Arc::new(keys)),
            generation: AtomicU64::new(0),
            file: None,
        }
    }

    /// The keys of the JWKS file at `path` and `fixed`; the file must be good now (start-up).
    pub fn watching(path: PathBuf, fixed: Vec<Jwk>) -> Result<TrustedKeys, JwksError> {
        let watched = WatchedFiles::new(vec![path.clone()], Instant::now());
        let set = with_fixed(JwkSet::from_file(&path)?, &fixed);
        Ok(TrustedKeys {
            current: RwLock::new(Arc::new(set)),
            generation: AtomicU64::new(0),
            file: Some(KeyFile {
                watched,
                fixed: JwkSet::new(fixed),
            }),
        })
    }

    /// The keys trusted now.
    pub fn current(&self) -> Arc<JwkSet> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Counts the changes of the keys since start-up.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Read the file again if [`RECHECK`] has passed since the last look and it has changed.
    /// Cheap when nothing is due; when another thread is looking already, returns at once.
    pub fn refresh_if_due(&self, now: Instant) {
        let Some(file) = &self.file else { return };
        file.watched
            .read_if_changed(now, |changed| self.reload(file, changed));
    }

    /// Read the file now, for a token whose key id no trusted key has, unless that was done
    /// less than [`RECHECK`] ago. True when the keys changed.
    pub fn reload_for_unknown_key(&self, now: Instant) -> bool {
        let Some(file) = &self.file else { return false };
        let before = self.generation();
        file.watched
            .read_now(now, |changed| self.reload(file, changed));
        self.generation() != before
    }

    /// Reads the file; `changed` says whether it changed since the last read.
    fn reload(&self, file: &KeyFile, changed: bool) {
        match JwkSet::from_file(&file.watched.paths()[0]) {
            Ok(keys) => {
                let set = with_fixed(keys, file.fixed.keys());
                let mut current = self
                    .current
                    .write()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                if **current != set {
                    tracing::info!(
                        keys = set.keys().len(),
                        "auth.jwks_file changed; the trusted keys were replaced"
                    );
                    *current = Arc::new(set);
                    self.generation.fetch_add(1, Ordering::AcqRel);
                }
            }
            // Warned once per change of the file; a forced read of the same broken file is quiet.
            Err(error) if changed => {
                tracing::warn!(%error, "auth.jwks_file cannot be used; the keys read before stay trusted");
            }
            Err(_) => {}
        }
    }
}

fn with_fixed(mut set: JwkSet, fixed: &[Jwk]) -> JwkSet {
    for jwk in fixed {
        set.push(jwk.clone());
    }
    set
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ec_member(kid: &str, seed: u8) -> serde_json::Value {
        // Any point of the right length parses; these keys verify nothing, which is not tested here.
        let x = super::super::jwt::encode_part(&[seed; 32]);
        json!({"kty": "EC", "crv": "P-256", "kid": kid, "x": x, "y": x})
    }

    fn kids(keys: &TrustedKeys) -> Vec<String> {
        keys.current()
            .keys()
            .iter()
            .filter_map(|k| k.kid().map(str::to_string))
            .collect()
    }

    #[test]
    fn the_file_is_followed_and_a_broken_one_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwks.json");
        let write = |members: Vec<serde_json::Value>| {
            std::fs::write(&path, json!({"keys": members}).to_string()).unwrap()
        };
        write(vec![ec_member("k1", 1)]);
        let keys = TrustedKeys::watching(path.clone(), Vec::new()).unwrap();
        let start = Instant::now();
        assert_eq!(
            (kids(&keys), keys.generation()),
            (vec!["k1".to_string()], 0)
        );

        write(vec![ec_member("k1", 1), ec_member("k2", 2)]);
        keys.refresh_if_due(start);
        assert_eq!(kids(&keys), ["k1"], "not due yet");
        keys.refresh_if_due(start + RECHECK);
        assert_eq!(
            (kids(&keys), keys.generation()),
            (vec!["k1".to_string(), "k2".to_string()], 1)
        );

        std::fs::write(&path, "{\"keys\": [").unwrap();
        keys.refresh_if_due(start + RECHECK * 2);
        assert_eq!(
            (kids(&keys), keys.generation()),
            (vec!["k1".to_string(), "k2".to_string()], 1),
            "a broken file keeps the keys"
        );

        // An unknown key id reads the file at once, then not again within RECHECK.
        write(vec![ec_member("k3", 3)]);
        let at = start + RECHECK * 2;
        assert!(keys.reload_for_unknown_key(at));
        assert_eq!(kids(&keys), ["k3"]);
        write(vec![ec_member("k4", 4)]);
        assert!(
            !keys.reload_for_unknown_key(at + RECHECK / 2),
            "rate limited"
        );
        assert!(keys.reload_for_unknown_key(at + RECHECK));
        assert_eq!(
            (kids(&keys), keys.generation()),
            (vec!["k4".to_string()], 3)
        );
        assert!(
            !keys.reload_for_unknown_key(at + RECHECK * 2),
            "the same keys: no change"
        );
    }

    #[test]
    fn fixed_keys_stay_beside_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwks.json");
        std::fs::write(&path, json!({"keys": [ec_member("idp", 1)]}).to_string()).unwrap();
        let ring = JwkSet::from_json(
            json!({"keys": [ec_member("ring", 9)]})
                .to_string()
                .as_bytes(),
        )
        .unwrap()
        .keys()[0]
            .clone();
        let keys = TrustedKeys::watching(path.clone(), vec![ring]).unwrap();
        std::fs::write(&path, json!({"keys": [ec_member("idp-2", 2)]}).to_string()).unwrap();
        assert!(keys.reload_for_unknown_key(Instant::now()));
        assert_eq!(kids(&keys), ["idp-2", "ring"]);
        assert!(!TrustedKeys::fixed(JwkSet::default()).reload_for_unknown_key(Instant::now()));
    }
}
