//! Transport security for both listeners: HTTPS and MLLP over TLS (rustls on ring, TLS 1.2 and
//! 1.3 only), optional client certificates for device hubs, and [`Peer`], which tells the layers
//! above who is on the other end of a connection.
//!
//! # Layout
//!
//! - [`load`]: [`ServerTls::load`] reads the PEM files named in [`TlsConfig`] at start-up;
//!   every error names its setting.
//! - `build`: one rustls configuration per listener, from those files and the revocation lists.
//! - `revocation`: the configurations in force, rebuilt when a file of
//!   `tls.client_crl_files` changes (checked at most every few seconds, on handshakes), so that
//!   revoking a hub's certificate needs no restart; a broken file keeps the lists in force.
//! - [`hubs`]: [`HubTable`] maps a verified client certificate to a configured [`HubIdentity`].
//! - [`accept`]: [`Acceptor`] turns an accepted TCP connection into a [`Stream`] and a [`Peer`]:
//!   the handshake under a timeout, then the hub lookup. The HTTP and MLLP accept loops share it.
//! - [`client`]: rustls client configurations for the TLS [`crate::hl7v2::mllp::MllpClient`]
//!   and for tests.
//!
//! # Policy
//!
//! - Without TLS configured the server speaks plain text, and `serve` allows that only on
//!   loopback addresses ([`crate::config::Config::check_transport`]).
//! - With a client CA (`tls.client_ca_file`), HTTPS asks for a client certificate but does not
//!   require one (EHRs and browsers use bearer tokens); a certificate that is presented must
//!   verify against the CA. MLLP requires one, and closes connections whose certificate maps to
//!   no configured hub: MLLP has no other way to say who is sending.
//! - A certificate that maps to a hub gives the connection that [`HubIdentity`]. Over HTTP one
//!   that maps to none leaves the request without a hub; bearer-token rules apply.
//! - Logs name a client certificate only by its SHA-256 fingerprint.

pub mod accept;
mod build;
pub mod client;
pub mod hubs;
pub mod load;
mod revocation;

use std::net::SocketAddr;
use std::sync::Arc;

use rustls::SupportedProtocolVersion;

pub use accept::{AcceptError, Acceptor, Stream};
pub use client::client_config;
pub use hubs::{HubIdentity, HubTable};

pub use crate::config::{HubConfig, TlsConfig};

/// The protocol versions both listeners and [`client_config`] speak. TLS 1.0 and 1.1 are
/// deprecated (RFC 8996); rustls does not implement them either.
pub static PROTOCOL_VERSIONS: &[&SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// The TLS side of the server, loaded at start-up; the revocation lists follow their files.
#[derive(Clone)]
pub struct ServerTls {
    /// The rustls configurations of both listeners, as the revocation lists have them now.
    configs: Arc<revocation::LiveConfigs>,
    hubs: Arc<HubTable>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("client_auth", &self.client_auth())
            .field("hubs", &self.hubs.len())
            .finish()
    }
}

impl ServerTls {
    /// Whether client certificates are asked for (a client CA is configured).
    pub fn client_auth(&self) -> bool {
        self.configs.client_auth()
    }

    /// The accept step of the HTTPS listener.
    pub fn http_acceptor(&self) -> Acceptor {
        Acceptor::tls(
            Arc::clone(&self.configs),
            build::Listener::Http,
            Arc::clone(&self.hubs),
            accept::HTTP_HANDSHAKE_TIMEOUT,
            false,
        )
    }

    /// The accept step of the MLLP listener; the handshake has `handshake_timeout` (the MLLP
    /// idle timeout). With a client CA, connections without a known hub are refused.
    pub fn mllp_acceptor(&self, handshake_timeout: std::time::Duration) -> Acceptor {
        Acceptor::tls(
            Arc::clone(&self.configs),
            build::Listener::Mllp,
            Arc::clone(&self.hubs),
            handshake_timeout,
            self.client_auth(),
        )
    }
}

/// Who is on the other end of a connection, for every request and MLLP message.
///
/// The HTTP accept loop puts one into every request's extensions (plain and TLS alike, so
/// middleware can rely on it: `Extension<Peer>`); MLLP hands it to each
/// [`crate::hl7v2::mllp::Handler`] call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub addr: SocketAddr,
    /// The device hub whose verified client certificate opened the connection.
    pub hub: Option<HubIdentity>,
    /// Whether the connection is TLS.
    pub tls: bool,
}

impl Peer {
    /// A plain-text connection from `addr`.
    pub fn plain(addr: SocketAddr) -> Peer {
        Peer {
            addr,
            hub: None,
            tls: false,
        }
    }
}
