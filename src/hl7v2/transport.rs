//! The ingestor behind the MLLP listener: each frame is one message; an answer the store could not
//! back (the database failed) closes the connection without an ACK, so the sender resends.

use std::net::SocketAddr;
use std::sync::Arc;

use futures::future::BoxFuture;

use super::ingest::{Disposition, Ingestor};
use super::mllp::{FrameError, Handler, MllpLimits, Reply};
use crate::config::Hl7Config;

/// Adapts [`Ingestor`] to the MLLP listener.
pub struct MllpIngest {
    pub ingestor: Ingestor,
}

impl Handler for MllpIngest {
    fn message(&self, payload: Vec<u8>, peer: SocketAddr) -> BoxFuture<'static, Reply> {
        let ingestor = self.ingestor.clone();
        Box::pin(async move {
            let answer = ingestor.ingest(&payload).await;
            tracing::debug!(%peer, disposition = ?answer.disposition, "MLLP message answered");
            reply(answer.disposition, answer.frames)
        })
    }

    fn malformed(&self, error: FrameError, partial: Vec<u8>, peer: SocketAddr) -> BoxFuture<'static, Reply> {
        let ingestor = self.ingestor.clone();
        Box::pin(async move {
            tracing::warn!(%peer, %error, bytes = partial.len(), "malformed MLLP frame");
            let answer = ingestor.reject_frame(&partial, &error.to_string()).await;
            reply(answer.disposition, answer.frames)
        })
    }
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

/// Serve MLLP on `listener` until `shutdown`.
pub async fn serve_mllp(
    listener: tokio::net::TcpListener,
    ingestor: Ingestor,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = limits(&ingestor.service().config.hl7v2);
    super::mllp::serve(listener, limits, Arc::new(MllpIngest { ingestor }), shutdown).await
}
