//! The step between accepting a TCP connection and serving it: a TLS handshake (when TLS is
//! on) under a timeout, with the configuration in force when it starts (the revocation lists
//! may have changed since the last one), and the hub lookup of the client certificate. Both
//! accept loops, HTTP and MLLP, run it inside the connection's own task, so a slow or failed
//! handshake holds up no other connection.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use super::Peer;
use super::build::Listener;
use super::hubs::{HubTable, Unmatched, fingerprint};
use super::revocation::LiveConfigs;

/// How long an HTTPS client has for its handshake. Longer than any real handshake, short
/// enough that idle sockets do not pile up.
pub const HTTP_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Pause after an accept error that is not about one connection (typically out of file
/// descriptors), so an accept loop does not spin while it lasts.
pub(crate) const ACCEPT_ERROR_PAUSE: Duration = Duration::from_secs(1);

/// Accept errors that concern one connection only; the next accept is unaffected.
pub(crate) fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
    )
}

/// Turns accepted TCP connections into [`Stream`]s with their [`Peer`]. Cheap to clone.
#[derive(Clone)]
pub struct Acceptor {
    tls: Option<TlsStep>,
}

#[derive(Clone)]
struct TlsStep {
    /// Asked for the configuration at every handshake, so that a new revocation list applies.
    configs: Arc<LiveConfigs>,
    listener: Listener,
    hubs: Arc<HubTable>,
    timeout: Duration,
    /// Refuse connections without a known hub (MLLP with a client CA).
    require_hub: bool,
}

/// Why a connection was not taken. The texts are fit for logs: no certificate content, only
/// a fingerprint.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    #[error("TLS handshake failed: {0}")]
    Handshake(io::Error),
    #[error("TLS handshake timed out after {0:?}")]
    TimedOut(Duration),
    #[error("client certificate sha256:{fingerprint} refused: {reason}")]
    UnknownClient {
        fingerprint: String,
        reason: Unmatched,
    },
}

impl Acceptor {
    /// No TLS: every connection is taken as it is.
    pub fn plain() -> Acceptor {
        Acceptor { tls: None }
    }

    pub(super) fn tls(
        configs: Arc<LiveConfigs>,
        listener: Listener,
        hubs: Arc<HubTable>,
        timeout: Duration,
        require_hub: bool,
    ) -> Acceptor {
        Acceptor {
            tls: Some(TlsStep {
                configs,
                listener,
                hubs,
                timeout,
                require_hub,
            }),
        }
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Completes the connection from `addr`: the handshake, then who the client is. A client
    /// certificate that maps to no hub leaves `Peer::hub` empty, or, where a hub is required,
    /// closes the connection and is an [`AcceptError::UnknownClient`].
    pub async fn accept(
        &self,
        tcp: TcpStream,
        addr: SocketAddr,
    ) -> Result<(Stream, Peer), AcceptError> {
        let Some(step) = &self.tls else {
            return Ok((Stream::Plain(tcp), Peer::plain(addr)));
        };
        let acceptor = TlsAcceptor::from(step.configs.for_handshake(step.listener));
        let mut stream = match tokio::time::timeout(step.timeout, acceptor.accept(tcp)).await {
            Err(_) => return Err(AcceptError::TimedOut(step.timeout)),
            Ok(Err(e)) => return Err(AcceptError::Handshake(e)),
            Ok(Ok(stream)) => stream,
        };
        // rustls has verified the chain against the client CA; only the leaf names the client.
        let leaf = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .cloned();
        let hub = match leaf.map(|leaf| (step.hubs.identify(&leaf), leaf)) {
            Some((Ok(hub), _)) => Some(hub),
            Some((Err(reason), leaf)) => {
                let fingerprint = fingerprint(&leaf);
                if step.require_hub {
                    // Best effort: tell the peer we are done (close_notify) before dropping it.
                    let _ = tokio::time::timeout(step.timeout, stream.shutdown()).await;
                    return Err(AcceptError::UnknownClient {
                        fingerprint,
                        reason,
                    });
                }
                tracing::debug!(%addr, fingerprint, %reason, "client certificate maps to no hub; serving without one");
                None
            }
            None => None,
        };
        Ok((
            Stream::Tls(Box::new(stream)),
            Peer {
                addr,
                hub,
                tls: true,
            },
        ))
    }
}

/// A served connection: plain TCP or TLS over TCP.
pub enum Stream {
    Plain(TcpStream),
    // Boxed: a rustls connection is a few hundred bytes, a TcpStream a few.
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }
}
