//! The HTTP accept loop, plain and TLS alike: accept, run the [`Acceptor`] step in the
//! connection's task, put the [`crate::tls::Peer`] into every request's extensions, serve HTTP/1.1 or
//! HTTP/2 with hyper, and on shutdown let requests in flight finish.
//!
//! It is our own loop rather than `axum::serve` because axum's serves plain TCP only; one loop
//! for both keeps plain development serving and production TLS serving the same code.

use std::future::Future;
use std::io;
use std::net::SocketAddr;

use axum::Router;
use axum::extract::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::ServiceExt;
use tracing::{debug, error};

use crate::tls::accept::{ACCEPT_ERROR_PAUSE, is_per_connection};
use crate::tls::{AcceptError, Acceptor};

/// Serves `app` on `listener` until `shutdown` completes, then stops accepting and waits for
/// open connections to finish their requests in flight (idle keep-alive connections close).
pub async fn serve(
    listener: TcpListener,
    acceptor: Acceptor,
    app: Router,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // With a timer, HTTP/1 closes a connection that sends no complete header within 30 s
    // (hyper's default), so idle or trickling clients do not hold sockets for ever.
    builder.http1().timer(TokioTimer::new());
    builder.http2().timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);

    loop {
        let (tcp, addr) = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) if is_per_connection(&e) => {
                    debug!(error = %e, "HTTP accept failed for one connection");
                    continue;
                }
                Err(e) => {
                    error!(error = %e, "HTTP accept failed; pausing");
                    tokio::select! {
                        () = &mut shutdown => break,
                        () = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => continue,
                    }
                }
            },
        };
        // Responses are written whole; Nagle's algorithm would only delay their last segment.
        if let Err(e) = tcp.set_nodelay(true) {
            debug!(%addr, error = %e, "could not set TCP_NODELAY");
        }
        // Taken before the handshake, so shutdown also waits for connections still in it.
        let watcher = graceful.watcher();
        let (acceptor, app, builder) = (acceptor.clone(), app.clone(), builder.clone());
        tokio::spawn(async move {
            let (stream, peer) = match acceptor.accept(tcp, addr).await {
                Ok(accepted) => accepted,
                Err(e) => return log_refused(addr, &e),
            };
            let service = TowerToHyperService::new(tower::service_fn(
                move |mut request: Request<Incoming>| {
                    request.extensions_mut().insert(peer.clone());
                    app.clone().oneshot(request)
                },
            ));
            let connection = builder
                .serve_connection(TokioIo::new(stream), service)
                .into_owned();
            if let Err(e) = watcher.watch(connection).await {
                debug!(%addr, error = %e, "HTTP connection ended with an error");
            }
        });
    }

    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// A connection that never got served: a failed or timed-out handshake. Scanners, port checks
/// and clients that do not trust our certificate do this routinely, so debug; the text names
/// no certificate content.
fn log_refused(addr: SocketAddr, error: &AcceptError) {
    debug!(%addr, %error, "HTTPS connection refused");
}
