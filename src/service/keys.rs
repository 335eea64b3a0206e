//! The server's view of the key ring, which `fhirvault keys rotate` may change underneath it.
//!
//! Rotation runs in another process: it adds a key to the key file and re-encrypts rows under it
//! while the server keeps serving. The server therefore re-reads the key file when it changes
//! (checked every few seconds, and at once when a row names a key id it does not hold), so it
//! starts sealing with the new key and can open rows the rotation already moved.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use crate::crypto::{Aad, CryptoError, KeyRing};

#[derive(Clone)]
pub struct SharedKeys {
    inner: Arc<RwLock<Loaded>>,
    /// None for an in-memory ring (tests, benches).
    path: Option<PathBuf>,
}

struct Loaded {
    ring: KeyRing,
    modified: Option<SystemTime>,
}

impl SharedKeys {
    pub fn new(ring: KeyRing, path: Option<PathBuf>) -> Self {
        let modified = path
            .as_ref()
            .and_then(|p| std::fs::metadata(p).ok()?.modified().ok());
        SharedKeys {
            inner: Arc::new(RwLock::new(Loaded { ring, modified })),
            path,
        }
    }

    /// The ring as it is now (cheap: the ring is reference-counted inside).
    pub fn current(&self) -> KeyRing {
        match self.inner.read() {
            Ok(loaded) => loaded.ring.clone(),
            Err(poisoned) => poisoned.into_inner().ring.clone(),
        }
    }

    /// Reload the key file if it changed since it was read. Returns whether it did.
    pub fn reload_if_changed(&self) -> bool {
        let Some(path) = &self.path else { return false };
        let modified = std::fs::metadata(path).ok().and_then(|m| m.modified().ok());
        let current = self.inner.read().map(|l| l.modified).unwrap_or(None);
        if modified.is_none() || modified == current {
            return false;
        }
        match KeyRing::load(path) {
            Ok(ring) => {
                let active = ring.active_key_id();
                if let Ok(mut loaded) = self.inner.write() {
                    *loaded = Loaded { ring, modified };
                }
                tracing::info!(
                    active_key_id = active,
                    "key file changed; key ring reloaded"
                );
                true
            }
            Err(error) => {
                tracing::error!(%error, "key file changed but could not be loaded; keeping the previous key ring");
                false
            }
        }
    }

    /// Open a sealed blob, re-reading the key file once if the blob names a key we do not hold yet.
    pub fn open(&self, aad: &Aad, sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        match self.current().open(aad, sealed) {
            Err(CryptoError::UnknownKeyId(_)) if self.reload_if_changed() => {
                self.current().open(aad, sealed)
            }
            other => other,
        }
    }
}
