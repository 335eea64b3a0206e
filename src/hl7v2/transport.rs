//! The ingestor behind the MLLP listener: each frame is one message; an answer the store could not
//! back (the database failed) closes the connection without an ACK, so the sender resends.

use std::sync::Arc;

use futures::future::BoxFuture;

use super::ingest::{Disposition, Ingestor};
use super::mllp::{FrameError, Handler, MllpLimits, Peer, Reply};
use crate::config::Hl7Config;
use crate::tls::{Acceptor, ServerTls};

/// Adapts [`Ingestor`] to the MLLP listener.
///
/// Each call gets the connection's [`Peer`]: with client certificates configured, the listener
/// has already refused connections without a known hub, so `peer.hub` names the sending hub.
/// The audit record of a stored message names it (the hub, or the address of an unnamed sender).
pub struct MllpIngest {
    pub ingestor: Ingestor,
}

impl Handler for MllpIngest {
    fn message(&self, payload: Vec<u8>, peer: &Peer) -> BoxFuture<'static, Reply> {
        let ingestor = self.ingestor.clone();
        let (addr, hub) = (peer.addr, hub_name(peer));
        let sender = sender_of(peer);
        Box::pin(async move {
            let answer = ingestor.ingest_from(&payload, &sender).await;
            tracing::debug!(peer = %addr, hub, disposition = ?answer.disposition, "MLLP message answered");
            reply(answer.disposition, answer.frames)
        })
    }

    fn malformed(
        &self,
        error: FrameError,
        partial: Vec<u8>,
        peer: &Peer,
    ) -> BoxFuture<'static, Reply> {
        let ingestor = self.ingestor.clone();
        let (addr, hub) = (peer.addr, hub_name(peer));
        let sender = sender_of(peer);
        Box::pin(async move {
            tracing::warn!(peer = %addr, hub, %error, bytes = partial.len(), "malformed MLLP frame");
            let answer = ingestor
                .reject_frame(&partial, &error.to_string(), &sender)
                .await;
            reply(answer.disposition, answer.frames)
        })
    }
}

/// Who delivers the connection's messages, for their audit records: its hub, else the server
/// on behalf of the sender's address.
fn sender_of(peer: &Peer) -> Arc<crate::auth::Caller> {
    let mut sender = peer
        .hub
        .as_ref()
        .map_or_else(crate::auth::Caller::server, crate::auth::Caller::of_hub);
    sender.address = Some(peer.addr.ip().to_string());
    Arc::new(sender)
}

/// The hub for log lines (a configured name, never certificate content); `-` without one.
fn hub_name(peer: &Peer) -> String {
    peer.hub
        .as_ref()
        .map_or_else(|| "-".to_string(), |hub| hub.name.clone())
}

fn reply(disposition: Disposition, frames: Vec<String>) -> Reply {
    if disposition == Disposition::Unavailable {
        Reply::Close
    } else {
        Reply::Send(frames.into_iter().map(String::into_bytes).collect())
    }
}

/// The MLLP limits from the configuration.
pub fn limits(config: &Hl7Config) -> MllpLimits {
    MllpLimits {
        max_message_bytes: config.max_message_bytes,
        idle_timeout: config.idle_timeout,
        max_connections: config.max_connections,
        ..MllpLimits::default()
    }
}

/// Serve MLLP on `listener` until `shutdown`: over TLS when `tls` is given, with the
/// handshake bounded by the idle timeout.
pub async fn serve_mllp(
    listener: tokio::net::TcpListener,
    tls: Option<&ServerTls>,
    ingestor: Ingestor,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = limits(&ingestor.service().config.hl7v2);
    let acceptor = tls.map_or_else(Acceptor::plain, |tls| {
        tls.mllp_acceptor(limits.idle_timeout)
    });
    super::mllp::serve(
        listener,
        acceptor,
        limits,
        Arc::new(MllpIngest { ingestor }),
        shutdown,
    )
    .await
}
