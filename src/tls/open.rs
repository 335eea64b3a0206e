//! Established connections with a client certificate, checked again when the revocation lists
//! change, so that revoking a hub ends the connections it already has, not only its next
//! handshake.
//!
//! A connection is followed from its handshake until it is dropped ([`Followed`]). When new
//! lists come into force ([`super::revocation`]), each followed connection's chain goes through
//! the new verifier of its listener, exactly as a handshake would (chain, validity period,
//! revocation of every certificate below the root, the signature of each list); a chain the
//! verifier refuses marks its connection [`Distrust`]ed and wakes it. The connection's stream
//! ([`super::Stream`]) fails its next read, and the server closes it: an idle keep-alive or
//! MLLP connection is closed at once, and no byte the client sends after that is served. A
//! reply to a request read before is still written; everything read after is refused.
//!
//! The check runs off the lock: the chains are copied out, verified, and the refused ones
//! marked, so that handshakes registering meanwhile do not wait for signature checks.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::Context;

use futures::task::AtomicWaker;
use rustls_pki_types::{CertificateDer, UnixTime};

use super::build::{Configs, Listener};
use super::hubs::fingerprint;

/// Raised on a connection whose certificate the lists in force no longer accept.
#[derive(Debug, Default)]
pub struct Distrust {
    refused: AtomicBool,
    /// The task reading the connection, woken when the flag is raised.
    reader: AtomicWaker,
}

impl Distrust {
    fn raise(&self) {
        self.refused.store(true, Ordering::Release);
        self.reader.wake();
    }

    /// Whether the connection must end; when not, `cx`'s task is woken if it must later.
    pub fn poll_refused(&self, cx: &Context<'_>) -> bool {
        // Registered before the flag is read, so a raise in between still wakes the task.
        self.reader.register(cx.waker());
        self.refused.load(Ordering::Acquire)
    }
}

/// The connections followed, by a number of their own.
#[derive(Default)]
pub(super) struct OpenConnections {
    next: AtomicU64,
    open: Mutex<HashMap<u64, Open>>,
}

#[derive(Clone)]
struct Open {
    listener: Listener,
    /// The client's chain as presented: the leaf first, then its intermediates.
    chain: Arc<[CertificateDer<'static>]>,
    distrust: Arc<Distrust>,
}

/// A connection being followed; dropping it (with the connection) stops that.
pub struct Followed {
    number: u64,
    connections: Weak<OpenConnections>,
    distrust: Arc<Distrust>,
}

impl Followed {
    pub fn distrust(&self) -> &Distrust {
        &self.distrust
    }
}

impl Drop for Followed {
    fn drop(&mut self) {
        if let Some(connections) = self.connections.upgrade() {
            connections.lock().remove(&self.number);
        }
    }
}

impl OpenConnections {
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Open>> {
        // A panic while holding the map leaves it usable: entries are inserted and removed whole.
        self.open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Follows a connection on `listener` whose client presented `chain`.
    pub(super) fn follow(
        self: &Arc<Self>,
        listener: Listener,
        chain: Vec<CertificateDer<'static>>,
    ) -> Followed {
        let number = self.next.fetch_add(1, Ordering::Relaxed);
        let distrust = Arc::<Distrust>::default();
        let open = Open {
            listener,
            chain: chain.into(),
            distrust: Arc::clone(&distrust),
        };
        self.lock().insert(number, open);
        Followed {
            number,
            connections: Arc::downgrade(self),
            distrust,
        }
    }

    /// Checks one followed connection against `configs`: for a connection whose handshake used
    /// lists that were replaced before it was followed.
    pub(super) fn check_one(&self, followed: &Followed, configs: &Configs) {
        let open = self.lock().get(&followed.number).cloned();
        check(configs, open);
    }

    /// Checks every followed connection against `configs`; how many were refused.
    pub(super) fn check_all(&self, configs: &Configs) -> usize {
        let open: Vec<Open> = self.lock().values().cloned().collect();
        check(configs, open)
    }
}

/// Marks the connections of `open` whose chains `configs` refuse; how many.
fn check(configs: &Configs, open: impl IntoIterator<Item = Open>) -> usize {
    let now = UnixTime::now();
    let mut refused = 0;
    for connection in open {
        let Some((leaf, intermediates)) = connection.chain.split_first() else {
            continue;
        };
        let verifier = configs.verifier(connection.listener);
        if let Err(reason) = verifier.verify_client_cert(leaf, intermediates, now) {
            // Only the fingerprint: the log names no certificate content.
            tracing::warn!(
                fingerprint = %fingerprint(leaf),
                %reason,
                "a client certificate is no longer accepted under the new revocation lists; closing its connection"
            );
            connection.distrust.raise();
            refused += 1;
        }
    }
    refused
}
