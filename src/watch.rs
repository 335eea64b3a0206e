//! [`WatchedFiles`]: files read at start-up that the server reads again when they change, so
//! that replacing one needs no restart: the identity provider's JWKS (`auth.jwks_file`, see
//! [`crate::auth::token::TrustedKeys`]), the client certificate revocation lists
//! (`tls.client_crl_files`, see [`crate::tls`]) and the key file (see
//! [`crate::service::keys::SharedKeys`], which `fhirvault keys rotate` changes).
//!
//! There is no file-system notification: the user of the files asks, on its hot path (a token,
//! a handshake, a row under an unknown key) or from a timer of its own (the key file and the
//! revocation lists, so that a change applies while nobody asks), and at most every [`RECHECK`]
//! that costs one `stat` per file. A file counts as changed when its modification time or size
//! differs from when it was last read. Stamps are taken *before* a read, so a file written while
//! it is being read shows a new stamp at the next look and is read again.
//!
//! What was read, and what to do with a file that cannot be used, is the user's business; this
//! module only tells it when to read and whether the files changed since the last read, so that
//! it can warn about a broken file once rather than at every look.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant, SystemTime};

/// How often watched files are looked at, and how often a read on demand may happen.
pub const RECHECK: Duration = Duration::from_secs(2);

/// A set of files read together, and when they were last looked at and read.
#[derive(Debug)]
pub struct WatchedFiles {
    paths: Vec<PathBuf>,
    state: Mutex<Looks>,
}

#[derive(Debug)]
struct Looks {
    /// Modification time and size of each file when the files were last read, good or bad;
    /// `None` for a file that could not be looked at.
    read: Vec<Option<Stamp>>,
    /// The last look at the stamps (or read).
    checked: Instant,
    /// The last read on demand ([`WatchedFiles::read_now`]), which has its own rate limit.
    forced: Option<Instant>,
}

type Stamp = (SystemTime, u64);

impl WatchedFiles {
    /// Watches `paths` as they are at `now`. Create it before the first read of the files, so
    /// that a change made during that read is noticed at the next look.
    pub fn new(paths: Vec<PathBuf>, now: Instant) -> WatchedFiles {
        let read = stamps_of(&paths);
        WatchedFiles {
            paths,
            state: Mutex::new(Looks {
                read,
                checked: now,
                forced: None,
            }),
        }
    }

    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// When [`RECHECK`] has passed since the last look and a file has changed since the last
    /// read (or cannot be looked at), calls `read` with whether the files changed since the last
    /// read. Cheap when nothing is due. Never waits: when another thread is looking already,
    /// returns at once, and that thread's read serves both.
    pub fn read_if_changed(&self, now: Instant, read: impl FnOnce(bool)) {
        let mut looks = match self.state.try_lock() {
            Ok(looks) => looks,
            // A panic in an earlier `read` leaves the stamps as they were; look again.
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return,
        };
        if now.saturating_duration_since(looks.checked) < RECHECK {
            return;
        }
        looks.checked = now;
        let stamps = stamps_of(&self.paths);
        if stamps.iter().all(Option::is_some) && stamps == looks.read {
            return;
        }
        Self::read_with(&mut looks, stamps, read);
    }

    /// Calls `read` now, whatever the stamps say (e.g. for a token that names a key no trusted
    /// key has), unless that was done less than [`RECHECK`] ago, so that requests made up to
    /// force reads cost at most one every few seconds. Whether `read` was called.
    pub fn read_now(&self, now: Instant, read: impl FnOnce(bool)) -> bool {
        let mut looks = self.lock();
        if looks
            .forced
            .is_some_and(|forced| now.saturating_duration_since(forced) < RECHECK)
        {
            return false;
        }
        looks.forced = Some(now);
        looks.checked = now;
        let stamps = stamps_of(&self.paths);
        Self::read_with(&mut looks, stamps, read);
        true
    }

    /// Records `stamps` as those of the read, then reads; under the lock, so reads never overlap.
    fn read_with(looks: &mut Looks, stamps: Vec<Option<Stamp>>, read: impl FnOnce(bool)) {
        let changed = stamps != looks.read;
        looks.read = stamps;
        read(changed);
    }

    fn lock(&self) -> MutexGuard<'_, Looks> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn stamps_of(paths: &[PathBuf]) -> Vec<Option<Stamp>> {
    paths.iter().map(|path| stamp_of(path)).collect()
}

fn stamp_of(path: &Path) -> Option<Stamp> {
    let metadata = std::fs::metadata(path).ok()?;
    Some((metadata.modified().ok()?, metadata.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    /// What `read_if_changed` did: `None` when it did not call `read`, else `Some(changed)`.
    fn look(files: &WatchedFiles, at: Instant) -> Option<bool> {
        let called = Cell::new(None);
        files.read_if_changed(at, |changed| called.set(Some(changed)));
        called.get()
    }

    #[test]
    fn changed_files_are_read_at_most_every_recheck() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, "one").unwrap();
        std::fs::write(&b, "one").unwrap();
        let start = Instant::now();
        let files = WatchedFiles::new(vec![a.clone(), b.clone()], start);
        assert_eq!(files.paths(), [a.clone(), b.clone()]);

        assert_eq!(look(&files, start + RECHECK), None, "nothing changed");
        std::fs::write(&b, "two!").unwrap();
        assert_eq!(look(&files, start + RECHECK), None, "not due yet");
        assert_eq!(look(&files, start + RECHECK * 2), Some(true));
        assert_eq!(look(&files, start + RECHECK * 3), None, "read already");

        // A file that cannot be looked at is tried at every look, but is news only once.
        std::fs::remove_file(&a).unwrap();
        assert_eq!(look(&files, start + RECHECK * 4), Some(true));
        assert_eq!(look(&files, start + RECHECK * 5), Some(false));
        std::fs::write(&a, "back").unwrap();
        assert_eq!(look(&files, start + RECHECK * 6), Some(true));
    }

    #[test]
    fn reads_on_demand_are_rate_limited() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a");
        std::fs::write(&path, "one").unwrap();
        let start = Instant::now();
        let files = WatchedFiles::new(vec![path.clone()], start);
        let called = Cell::new(None);
        assert!(files.read_now(start, |changed| called.set(Some(changed))));
        assert_eq!(called.get(), Some(false), "the same file as at start");
        assert!(!files.read_now(start + RECHECK / 2, |_| unreachable!()));
        std::fs::write(&path, "two!").unwrap();
        assert!(files.read_now(start + RECHECK, |changed| called.set(Some(changed))));
        assert_eq!(called.get(), Some(true));
        // A read on demand is a look too.
        assert_eq!(look(&files, start + RECHECK * 3 / 2), None);
    }
}
