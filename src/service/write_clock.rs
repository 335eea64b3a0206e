//! The clock that stamps `meta.lastUpdated`, and the instant before which every stamped version
//! is committed.
//!
//! A version is stamped before it commits: in the request task for prepared creates, inside the
//! group commit for the rest, and the commit can come a second later under load. A client that
//! polls `_history?_since=T` (or searches `_lastUpdated=ge T`) with T taken from the clock of its
//! previous poll would miss for ever a version stamped before T that committed after that poll.
//! So every write that may stamp versions is *open* from before its first stamp until its commit
//! (or rollback) is done, and [`WriteClock::complete_before`] answers the oldest instant an open
//! write may still stamp. History and search Bundles carry that instant as `meta.lastUpdated`,
//! and a bulk export as `transactionTime`: the next poll's `_since` loses nothing (it may repeat
//! versions that committed early, which a client recognises by `versionId`).
//!
//! The clock covers the writes of this process: one server per database, as the audit spool and
//! exports already assume. An `import` run by another process beside a running server is not
//! covered.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::fhir::instant::{Micros, now_micros};

#[derive(Default)]
pub struct WriteClock {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The latest instant handed out; the clock never goes back from it, even if the system
    /// clock does.
    last: Micros,
    /// The instant each open write was opened at, with how many opened at that instant.
    open: BTreeMap<Micros, usize>,
}

impl State {
    /// Now, or the latest instant handed out if the system clock stepped back.
    fn now(&mut self) -> Micros {
        self.last = self.last.max(now_micros());
        self.last
    }
}

/// A write that may stamp versions; dropping it says its commit or rollback is done. Move it
/// with the work to whatever commits it, so that a client hanging up cannot close it early.
#[must_use = "the write is open only while this is held"]
pub struct OpenWrite {
    clock: Arc<WriteClock>,
    opened_at: Micros,
}

impl WriteClock {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // The state stays consistent through any panic (each update is one statement).
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Open a write: from now until the returned value is dropped, versions may be stamped that
    /// readers cannot see yet.
    pub fn open(self: &Arc<Self>) -> OpenWrite {
        let mut state = self.state();
        let opened_at = state.now();
        *state.open.entry(opened_at).or_default() += 1;
        OpenWrite {
            clock: Arc::clone(self),
            opened_at,
        }
    }

    /// The `lastUpdated` of a new version: now, but after `not_before` (the previous version's,
    /// so that a resource's versions stay in order) and never before an instant already handed
    /// out. Only inside an open write.
    pub fn stamp(&self, not_before: Micros) -> Micros {
        let mut state = self.state();
        debug_assert!(
            !state.open.is_empty(),
            "a version was stamped outside an open write"
        );
        let now = state.now().max(not_before);
        state.last = now;
        now
    }

    /// Every version stamped before this instant is committed, and every version stamped from
    /// now on will be stamped at or after it. Take it before reading: what the read then
    /// returns is complete up to it.
    pub fn complete_before(&self) -> Micros {
        let mut state = self.state();
        let now = state.now();
        state
            .open
            .keys()
            .next()
            .map_or(now, |&oldest| oldest.min(now))
    }
}

impl Drop for OpenWrite {
    fn drop(&mut self) {
        let mut state = self.clock.state();
        if let Some(count) = state.open.get_mut(&self.opened_at) {
            *count -= 1;
            if *count == 0 {
                state.open.remove(&self.opened_at);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_open_write_holds_the_instant_back_until_it_is_done() {
        let clock = WriteClock::new();
        let slow = clock.open();
        let stamped = clock.stamp(0);
        let fast = clock.open();
        let later = clock.stamp(0);
        drop(fast);
        // The fast write committed, but the slow one may still commit its version: a reader
        // must not be told it has everything up to `later`.
        let before = clock.complete_before();
        assert!(before <= stamped, "{before} > {stamped}");
        assert!(later >= stamped);
        drop(slow);
        assert!(clock.complete_before() > later);
    }

    #[test]
    fn stamps_never_go_back_and_follow_the_previous_version() {
        let clock = WriteClock::new();
        let _open = clock.open();
        let first = clock.stamp(0);
        let far = first + 60_000_000;
        assert_eq!(clock.stamp(far), far);
        // The system clock is behind the last stamp now: stamps stay at or after it.
        assert!(clock.stamp(0) >= far);
        assert!(clock.complete_before() <= first);
    }

    #[test]
    fn writes_opened_at_the_same_instant_close_independently() {
        let clock = WriteClock::new();
        let (a, b) = (clock.open(), clock.open());
        drop(a);
        assert_eq!(clock.complete_before(), b.opened_at);
        drop(b);
        assert!(clock.state().open.is_empty());
    }
}
