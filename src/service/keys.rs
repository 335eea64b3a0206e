//! The server's view of the key ring, which `fhirvault keys rotate` may change underneath it.
//!
//! Rotation runs in another process: it adds a key to the key file and re-encrypts rows under it
//! while the server keeps serving. The server therefore re-reads the key file when it changes
//! (checked every few seconds, and at once when a row names a key id it does not hold), so it
//! starts sealing with the new key and can open rows the rotation already moved.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use crate::crypto::{Aad, CryptoError, KeyRing};
use crate::watch::WatchedFiles;

#[derive(Clone)]
pub struct SharedKeys {
    ring: Arc<RwLock<KeyRing>>,
    /// The key file, looked at as the JWKS and revocation lists are ([`WatchedFiles`]); `None`
    /// for an in-memory ring (tests, benches).
    file: Option<Arc<WatchedFiles>>,
}

impl SharedKeys {
    /// `ring` as read from `path` just now.
    pub fn new(ring: KeyRing, path: Option<PathBuf>) -> Self {
        SharedKeys {
            ring: Arc::new(RwLock::new(ring)),
            file: path.map(|path| Arc::new(WatchedFiles::new(vec![path], Instant::now()))),
        }
    }

    /// The ring as it is now (cheap: the ring is reference-counted inside).
    pub fn current(&self) -> KeyRing {
        match self.ring.read() {
            Ok(ring) => ring.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Reload the key file if it changed since it was read (looked at most every
    /// [`RECHECK`](crate::watch::RECHECK)). Returns whether a new ring is in use.
    pub fn reload_if_changed(&self) -> bool {
        let Some(file) = &self.file else { return false };
        let mut reloaded = false;
        file.read_if_changed(Instant::now(), |changed| {
            reloaded = self.reload(file, changed);
        });
        reloaded
    }

    /// Reads the key file; a file that cannot be loaded keeps the ring in use, with an error
    /// logged once per change of the file (`changed`), not at every look.
    fn reload(&self, file: &WatchedFiles, changed: bool) -> bool {
        let Some(path) = file.paths().first() else {
            return false;
        };
        match KeyRing::load(path) {
            Ok(ring) => {
                let active = ring.active_key_id();
                match self.ring.write() {
                    Ok(mut in_use) => *in_use = ring,
                    Err(poisoned) => *poisoned.into_inner() = ring,
                }
                if changed {
                    tracing::info!(
                        active_key_id = active,
                        "key file changed; key ring reloaded"
                    );
                }
                true
            }
            Err(error) => {
                if changed {
                    tracing::error!(%error, "key file changed but could not be loaded; keeping the previous key ring");
                }
                false
            }
        }
    }

    /// Open a sealed blob. When the blob names a key we do not hold yet (a rotation in another
    /// process added it), the key file is read again at once, at most once per
    /// [`RECHECK`](crate::watch::RECHECK) for such reads, so that blobs naming unknown keys
    /// cannot make the server read the file for every row.
    pub fn open(&self, aad: &Aad, sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        match self.current().open(aad, sealed) {
            Err(CryptoError::UnknownKeyId(id)) => {
                let mut reloaded = false;
                if let Some(file) = &self.file {
                    file.read_now(Instant::now(), |changed| {
                        reloaded = changed && self.reload(file, changed);
                    });
                }
                if reloaded {
                    self.current().open(aad, sealed)
                } else {
                    Err(CryptoError::UnknownKeyId(id))
                }
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AAD: Aad<'static> = Aad::Blob {
        purpose: "test",
        key: "k",
    };

    #[test]
    fn a_blob_under_a_key_added_by_a_rotation_opens_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        let (ring, _) = KeyRing::load_or_create(&path).unwrap();
        let keys = SharedKeys::new(ring, Some(path.clone()));

        // Another process rotates: the file gains a key, and a row is sealed under it.
        let mut rotating = KeyRing::load(&path).unwrap();
        rotating.rotate(&path).unwrap();
        let sealed = rotating.seal(&AAD, b"moved").unwrap();
        assert_eq!(keys.open(&AAD, &sealed).unwrap(), b"moved");
        assert_eq!(keys.current().active_key_id(), rotating.active_key_id());
    }

    #[test]
    fn a_broken_key_file_keeps_the_ring_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        let (ring, _) = KeyRing::load_or_create(&path).unwrap();
        let sealed = ring.seal(&AAD, b"kept").unwrap();
        let keys = SharedKeys::new(ring, Some(path.clone()));
        std::fs::write(&path, "not a key ring").unwrap();
        let file = keys.file.clone().unwrap();
        assert!(!keys.reload(&file, true), "a broken file is not loaded");
        assert_eq!(keys.open(&AAD, &sealed).unwrap(), b"kept");
        // A blob under a key nobody has stays unknown, and does not replace the ring.
        let other = KeyRing::from_master_secret([7; 32])
            .seal(&AAD, b"x")
            .unwrap();
        assert!(keys.open(&AAD, &other).is_err());
        assert_eq!(keys.open(&AAD, &sealed).unwrap(), b"kept");
    }
}
