//! Accepts MLLP connections and runs each one: frames in, [`Handler`] calls, replies out in order.
//!
//! [`serve`] owns the accept loop, the connection limit and shutdown; [`serve_connection`] owns
//! one connection. Neither looks inside a payload, and neither logs one.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::{FuturesOrdered, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::{JoinError, JoinHandle, JoinSet};
use tokio::time::{sleep, timeout};
use tracing::{Instrument, debug, error, info, info_span, warn};

use super::frame::{FrameDecoder, FrameError, encode_frame_into};
use super::{Handler, MllpLimits, Peer, Reply};
use crate::tls::accept::{ACCEPT_ERROR_PAUSE, is_per_connection};
use crate::tls::{AcceptError, Acceptor};

/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 16 * 1024;

/// Longest we wait, when closing a connection ourselves, for the peer to read our last replies
/// and close its side.
const LINGER: Duration = Duration::from_secs(2);

/// Accepts connections on an already bound `listener` until `shutdown` resolves, then stops
/// accepting, lets messages in flight finish and their replies be written, and returns.
/// `acceptor` is the step before serving: [`Acceptor::plain`], or a TLS handshake whose
/// timeout should be `limits.idle_timeout` ([`crate::tls::ServerTls::mllp_acceptor`]).
///
/// Each connection runs in its own task, so an error or a panic on one never reaches another or
/// the accept loop. Over `max_connections`, a new connection is closed at once (see the module
/// docs for why). Accept errors are logged and retried, since they are about one connection or
/// are transient (e.g. out of file descriptors), so this returns `Ok` once drained.
///
/// `serve` returns only when every handler call it started has finished. A handler that never
/// finishes therefore holds up shutdown: wrap the call in a timeout if that must be bounded.
pub async fn serve(
    listener: TcpListener,
    acceptor: Acceptor,
    limits: MllpLimits,
    handler: Arc<dyn Handler>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let limits = Arc::new(limits);
    let max_connections = limits.max_connections.max(1);
    let slots = Arc::new(Semaphore::new(max_connections));
    let (stop, stopping) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    let tls = acceptor.is_tls();
    info!(addr = ?listener.local_addr().ok(), max_connections, tls, "MLLP listener started");

    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            Some(joined) = connections.join_next(), if !connections.is_empty() => {
                log_task_failure(joined);
            }
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) if is_per_connection(&e) => {
                        debug!(error = %e, "MLLP accept failed for one connection");
                        continue;
                    }
                    Err(e) => {
                        error!(error = %e, "MLLP accept failed; pausing");
                        tokio::select! {
                            () = &mut shutdown => break,
                            () = sleep(ACCEPT_ERROR_PAUSE) => continue,
                        }
                    }
                };
                let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                    warn!(%peer, max_connections, "MLLP connection limit reached; closing it");
                    continue;
                };
                // Replies are small and wanted now; Nagle's algorithm would hold them back.
                if let Err(e) = stream.set_nodelay(true) {
                    debug!(%peer, error = %e, "could not set TCP_NODELAY");
                }
                let (limits, handler, stopping, acceptor) =
                    (Arc::clone(&limits), Arc::clone(&handler), stopping.clone(), acceptor.clone());
                let span = info_span!("mllp", %peer);
                connections.spawn(
                    async move {
                        debug!("MLLP connection accepted");
                        // In this task, so a slow handshake holds up no other connection.
                        match acceptor.accept(stream, peer).await {
                            Ok((stream, peer)) => {
                                if let Some(hub) = &peer.hub {
                                    debug!(hub = %hub.name, "MLLP client is a known hub");
                                }
                                let result =
                                    serve_connection(stream, peer, &limits, handler, stopping)
                                        .await;
                                log_connection_end(result);
                            }
                            Err(e) => log_refused(&e),
                        }
                        // Held until the handlers of unanswered messages are done too.
                        drop(slot);
                    }
                    .instrument(span),
                );
            }
        }
    }

    drop(listener);
    stop.send_replace(true);
    info!(
        open_connections = connections.len(),
        "MLLP listener stopped accepting; draining"
    );
    while let Some(joined) = connections.join_next().await {
        log_task_failure(joined);
    }
    info!("MLLP listener stopped");
    Ok(())
}

fn log_connection_end(result: io::Result<()>) {
    match result {
        Ok(()) => debug!("MLLP connection closed"),
        // Peers hanging up or going silent is routine for MLLP senders.
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::ConnectionReset
                    | io::ErrorKind::BrokenPipe
                    | io::ErrorKind::UnexpectedEof
                    | io::ErrorKind::TimedOut
            ) =>
        {
            debug!(error = %e, "MLLP connection ended")
        }
        Err(e) => warn!(error = %e, "MLLP connection failed"),
    }
}

/// A connection that never got served. Scanners and misconfigured senders fail handshakes
/// routinely, so info rather than warn; the text names no certificate content.
fn log_refused(error: &AcceptError) {
    info!(%error, "MLLP connection refused");
}

fn log_task_failure(joined: Result<(), JoinError>) {
    // Only a bug in this module gets here: handler panics are caught per message.
    if let Err(e) = joined {
        error!(panicked = e.is_panic(), "MLLP connection task failed");
    }
}

/// Serves one connection over any stream until the peer closes it, an error, a [`Reply::Close`],
/// the idle timeout, or `shutdown` turning `true` (or its sender being dropped).
///
/// On shutdown no more bytes are read; messages in flight finish and their replies are written.
/// Before returning, this waits for the handlers of unanswered messages (after a `Reply::Close`
/// or an error) to finish, with the connection already closed. Errors are the stream's: reset,
/// broken pipe, or `TimedOut` when the peer did not read a reply within the idle timeout.
pub async fn serve_connection<S>(
    stream: S,
    peer: Peer,
    limits: &MllpLimits,
    handler: Arc<dyn Handler>,
    shutdown: watch::Receiver<bool>,
) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let mut connection = Connection {
        peer: Arc::new(peer),
        limits,
        handler,
        decoder: FrameDecoder::new(limits.max_message_bytes),
        in_flight: FuturesOrdered::new(),
    };
    // `run` takes the stream, so the connection is closed when it returns.
    let result = connection.run(stream, shutdown).await;
    let unanswered = connection.in_flight.len();
    if unanswered > 0 {
        debug!(unanswered, "waiting for handlers of unanswered messages");
        while connection.in_flight.next().await.is_some() {}
    }
    result
}

/// Resolves once shutdown is requested: the value is `true`, or the sender is gone.
async fn shutdown_requested(shutdown: &mut watch::Receiver<bool>) {
    // An error means the sender was dropped: nobody can tell us to go on, so stop.
    let _ = shutdown.wait_for(|&stop| stop).await;
}

struct Connection<'a> {
    peer: Arc<Peer>,
    limits: &'a MllpLimits,
    handler: Arc<dyn Handler>,
    decoder: FrameDecoder,
    /// Handler tasks in arrival order; the head's reply is the next one written.
    in_flight: FuturesOrdered<JoinHandle<Reply>>,
}

impl Connection<'_> {
    async fn run<S>(&mut self, mut stream: S, mut shutdown: watch::Receiver<bool>) -> io::Result<()>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let max_in_flight = self.limits.max_in_flight.max(1);
        let mut buf = vec![0; READ_CHUNK];
        // The peer closed its side: answer what it sent, then close.
        let mut eof = false;
        // We take no more messages (shutdown, or an oversized frame): answer those in flight,
        // then close.
        let mut draining = *shutdown.borrow();

        loop {
            if !draining {
                draining = self.dispatch_ready_frames(max_in_flight);
            }
            if self.in_flight.is_empty() && (draining || eof) {
                if eof && !draining && self.decoder.buffered() > 0 {
                    warn!(
                        bytes = self.decoder.buffered(),
                        "MLLP peer closed in the middle of a frame"
                    );
                }
                break;
            }
            // While the read-ahead limit is reached we stop reading, and TCP flow control holds
            // the sender back; the decoder meanwhile keeps any frames it already has.
            let read_more = !draining && !eof && self.in_flight.len() < max_in_flight;
            let idle = !draining && !eof && self.in_flight.is_empty();

            tokio::select! {
                biased;
                Some(joined) = self.in_flight.next(), if !self.in_flight.is_empty() => {
                    match joined {
                        Ok(Reply::Send(payloads)) => {
                            let limit = self.limits.idle_timeout;
                            write_replies(&mut stream, &payloads, limit).await?;
                        }
                        Ok(Reply::Close) => {
                            let unanswered = self.in_flight.len();
                            debug!(unanswered, "MLLP handler closed the connection");
                            break;
                        }
                        Err(e) => {
                            // Not the panic message: it may quote the payload.
                            let panicked = e.is_panic();
                            error!(panicked, "MLLP handler failed; closing without answering");
                            break;
                        }
                    }
                }
                () = shutdown_requested(&mut shutdown), if !draining => {
                    debug!(in_flight = self.in_flight.len(), "MLLP connection draining");
                    draining = true;
                }
                read = stream.read(&mut buf), if read_more => match read? {
                    0 => eof = true,
                    n => self.decoder.push(&buf[..n]),
                },
                // Recreated each turn, so any activity (bytes in, a reply out) restarts it.
                () = sleep(self.limits.idle_timeout), if idle => {
                    debug!(timeout = ?self.limits.idle_timeout, "MLLP connection idle; closing");
                    break;
                }
                // Unreachable by the conditions above; here so a mistake ends the connection
                // instead of panicking.
                else => break,
            }
        }

        close_gracefully(&mut stream, &mut buf, self.limits).await;
        Ok(())
    }

    /// Starts a handler task for each frame the decoder has ready, up to `max_in_flight` running.
    /// Returns `true` when the connection must take no more messages (an oversized frame).
    fn dispatch_ready_frames(&mut self, max_in_flight: usize) -> bool {
        let mut stop = false;
        while !stop && self.in_flight.len() < max_in_flight {
            match self.decoder.next_frame() {
                None => break,
                Some(Ok(payload)) => {
                    self.spawn(move |handler, peer| handler.message(payload, peer))
                }
                Some(Err(error)) => {
                    let partial = self.decoder.take_partial();
                    warn!(%error, partial_bytes = partial.len(), "malformed MLLP frame");
                    stop = matches!(error, FrameError::TooLarge { .. });
                    self.spawn(move |handler, peer| handler.malformed(error, partial, peer));
                }
            }
        }
        let discarded = self.decoder.discarded();
        if discarded > 0 {
            warn!(bytes = discarded, "dropped bytes outside MLLP frames");
        }
        stop
    }

    /// Runs one handler call in its own task: pipelined messages are handled in parallel, a
    /// panic comes back as a `JoinError` instead of unwinding through the connection, and the
    /// call is never cancelled half-way, as dropping its future would.
    fn spawn<F>(&mut self, call: F)
    where
        F: FnOnce(&dyn Handler, &Peer) -> BoxFuture<'static, Reply> + Send + 'static,
    {
        let handler = Arc::clone(&self.handler);
        let peer = Arc::clone(&self.peer);
        // The call itself happens inside the task, so a panic before the future exists is
        // caught too.
        let task = async move { call(&*handler, &peer).await }.in_current_span();
        self.in_flight.push_back(tokio::spawn(task));
    }
}

/// Writes the frames of one reply in a single write. A peer that stops reading would otherwise
/// hold the connection, and its slot, for ever.
async fn write_replies<S>(stream: &mut S, payloads: &[Vec<u8>], limit: Duration) -> io::Result<()>
where
    S: AsyncWrite + Unpin,
{
    if payloads.is_empty() {
        return Ok(());
    }
    let mut out = Vec::with_capacity(payloads.iter().map(|p| p.len() + 3).sum());
    for payload in payloads {
        encode_frame_into(payload, &mut out);
    }
    let write = async {
        stream.write_all(&out).await?;
        stream.flush().await
    };
    timeout(limit, write).await.unwrap_or_else(|_| {
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "MLLP peer did not read the reply in time",
        ))
    })
}

/// Closes our side, then reads and drops what the peer still sends until it closes too, for a
/// short while. Closing a socket with unread input makes the kernel send a reset, and a peer
/// that gets a reset may throw away our last replies before it has read them. Best effort.
async fn close_gracefully<S>(stream: &mut S, buf: &mut [u8], limits: &MllpLimits)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let linger = async {
        stream.shutdown().await?;
        let mut budget = limits.max_message_bytes.max(buf.len());
        loop {
            let n = stream.read(buf).await?;
            if n == 0 || n >= budget {
                return Ok::<_, io::Error>(());
            }
            budget -= n;
        }
    };
    if let Ok(Err(e)) = timeout(LINGER.min(limits.idle_timeout), linger).await {
        debug!(error = %e, "MLLP connection did not close cleanly");
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use futures::FutureExt;
    use tokio::net::TcpStream;
    use tokio::sync::oneshot;

    use super::super::MllpClient;
    use super::*;

    /// Generous bound on every test, so a bug fails the test instead of hanging the suite.
    const TEST_TIMEOUT: Duration = Duration::from_secs(10);

    /// Echo-style handler driven by the payload text:
    /// `sleep:<ms>:<tag>` answers `ok:<tag>` after `ms` milliseconds; `close` closes; `panic`
    /// panics; `silent` answers nothing; `twice:<tag>` answers `ok:<tag>` twice; anything else
    /// is answered `ok:<payload>`. Malformed frames are answered `reject:<error>:<partial len>`.
    #[derive(Default)]
    struct TestHandler {
        counts: Arc<Counts>,
    }

    #[derive(Default)]
    struct Counts {
        started: AtomicUsize,
        running: AtomicUsize,
        most_running: AtomicUsize,
    }

    fn ok(tag: &str) -> Reply {
        Reply::Send(vec![format!("ok:{tag}").into_bytes()])
    }

    impl Handler for TestHandler {
        fn message(&self, payload: Vec<u8>, _peer: &Peer) -> BoxFuture<'static, Reply> {
            let counts = Arc::clone(&self.counts);
            async move {
                counts.started.fetch_add(1, Ordering::SeqCst);
                let running = counts.running.fetch_add(1, Ordering::SeqCst) + 1;
                counts.most_running.fetch_max(running, Ordering::SeqCst);
                let text = String::from_utf8_lossy(&payload).into_owned();
                let reply = if let Some(rest) = text.strip_prefix("sleep:") {
                    let (ms, tag) = rest.split_once(':').unwrap();
                    sleep(Duration::from_millis(ms.parse().unwrap())).await;
                    ok(tag)
                } else if let Some(tag) = text.strip_prefix("twice:") {
                    let reply = format!("ok:{tag}").into_bytes();
                    Reply::Send(vec![reply.clone(), reply])
                } else {
                    match text.as_str() {
                        "close" => Reply::Close,
                        "panic" => panic!("test handler panics on purpose"),
                        "silent" => Reply::Send(Vec::new()),
                        _ => ok(&text),
                    }
                };
                counts.running.fetch_sub(1, Ordering::SeqCst);
                reply
            }
            .boxed()
        }

        fn malformed(
            &self,
            error: FrameError,
            partial: Vec<u8>,
            _peer: &Peer,
        ) -> BoxFuture<'static, Reply> {
            let name = match error {
                FrameError::TooLarge { limit } => format!("TooLarge({limit})"),
                FrameError::BadTrailer => "BadTrailer".to_owned(),
                FrameError::Interrupted => "Interrupted".to_owned(),
            };
            let reply = format!("reject:{name}:{}", partial.len()).into_bytes();
            async move { Reply::Send(vec![reply]) }.boxed()
        }
    }

    /// A listener on a loopback port 0, served in the background.
    struct TestServer {
        addr: SocketAddr,
        counts: Arc<Counts>,
        shutdown: Option<oneshot::Sender<()>>,
        served: JoinHandle<io::Result<()>>,
    }

    impl TestServer {
        async fn start(limits: MllpLimits) -> TestServer {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let handler = TestHandler::default();
            let counts = Arc::clone(&handler.counts);
            let (shutdown, stop) = oneshot::channel::<()>();
            let served = tokio::spawn(serve(
                listener,
                Acceptor::plain(),
                limits,
                Arc::new(handler),
                async {
                    let _ = stop.await;
                },
            ));
            TestServer {
                addr,
                counts,
                shutdown: Some(shutdown),
                served,
            }
        }

        async fn client(&self) -> MllpClient {
            MllpClient::connect(self.addr).await.unwrap()
        }

        fn started(&self) -> usize {
            self.counts.started.load(Ordering::SeqCst)
        }

        fn most_running(&self) -> usize {
            self.counts.most_running.load(Ordering::SeqCst)
        }

        async fn stop(mut self) -> io::Result<()> {
            let _ = self.shutdown.take().unwrap().send(());
            self.served.await.unwrap()
        }
    }

    fn limits() -> MllpLimits {
        MllpLimits {
            idle_timeout: Duration::from_secs(5),
            ..MllpLimits::default()
        }
    }

    async fn within<T>(test: impl Future<Output = T>) -> T {
        timeout(TEST_TIMEOUT, test).await.expect("test timed out")
    }

    /// Sends `payloads` framed, in one write, so the server sees them pipelined.
    async fn send_all(client: &mut MllpClient, payloads: &[&str]) {
        let mut bytes = Vec::new();
        for payload in payloads {
            encode_frame_into(payload.as_bytes(), &mut bytes);
        }
        client.get_mut().write_all(&bytes).await.unwrap();
    }

    async fn receive_text(client: &mut MllpClient) -> Option<String> {
        let reply = client.receive().await.unwrap();
        reply.map(|bytes| String::from_utf8(bytes).unwrap())
    }

    async fn wait_until(mut condition: impl FnMut() -> bool) {
        while !condition() {
            sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn answers_a_request() {
        within(async {
            let server = TestServer::start(limits()).await;
            let mut client = server.client().await;
            assert_eq!(client.request(b"MSH|hello").await.unwrap(), b"ok:MSH|hello");
            assert_eq!(client.request(b"again").await.unwrap(), b"ok:again");
            drop(client);
            server.stop().await.unwrap();
        })
        .await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pipelined_replies_come_in_arrival_order_though_handlers_finish_out_of_order() {
        within(async {
            let server = TestServer::start(limits()).await;
            let mut client = server.client().await;
            send_all(
                &mut client,
                &[
                    "sleep:400:1",
                    "sleep:300:2",
                    "sleep:200:3",
                    "sleep:0:4",
                    "5",
                    "twice:6",
                ],
            )
            .await;
            for expected in ["ok:1", "ok:2", "ok:3", "ok:4", "ok:5", "ok:6", "ok:6"] {
                assert_eq!(receive_text(&mut client).await.as_deref(), Some(expected));
            }
            // The first handler sleeps long enough for the others to start: they ran together.
            assert!(server.most_running() >= 2, "handlers ran one at a time");
        })
        .await
    }

    #[tokio::test]
    async fn read_ahead_stops_at_max_in_flight() {
        within(async {
            let server = TestServer::start(MllpLimits {
                max_in_flight: 2,
                ..limits()
            })
            .await;
            let mut client = server.client().await;
            let messages: Vec<String> = (0..8).map(|i| format!("sleep:30:{i}")).collect();
            send_all(
                &mut client,
                &messages.iter().map(String::as_str).collect::<Vec<_>>(),
            )
            .await;
            for i in 0..8 {
                assert_eq!(receive_text(&mut client).await, Some(format!("ok:{i}")));
            }
            assert!(
                server.most_running() <= 2,
                "more than max_in_flight handlers ran at once"
            );
        })
        .await
    }

    #[tokio::test]
    async fn empty_reply_sends_nothing_and_the_next_message_is_answered() {
        within(async {
            let server = TestServer::start(limits()).await;
            let mut client = server.client().await;
            send_all(&mut client, &["silent", "after"]).await;
            assert_eq!(receive_text(&mut client).await.as_deref(), Some("ok:after"));
        })
        .await
    }

    #[tokio::test]
    async fn empty_frame_reaches_the_handler() {
        within(async {
            let server = TestServer::start(limits()).await;
            let mut client = server.client().await;
            assert_eq!(client.request(b"").await.unwrap(), b"ok:");
        })
        .await
    }

    #[tokio::test]
    async fn reply_close_answers_earlier_messages_and_not_later_ones() {
        within(async {
            let server = TestServer::start(limits()).await;
            let mut client = server.client().await;
            send_all(&mut client, &["before", "close", "after"]).await;
            assert_eq!(
                receive_text(&mut client).await.as_deref(),
                Some("ok:before")
            );
            assert_eq!(
                receive_text(&mut client).await,
                None,
                "closed without answering"
            );
            // The listener goes on.
            let mut other = server.client().await;
            assert_eq!(other.request(b"x").await.unwrap(), b"ok:x");
        })
        .await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn handler_panic_closes_only_its_connection() {
        within(async {
            let server = TestServer::start(limits()).await;
            let mut bystander = server.client().await;
            assert_eq!(bystander.request(b"first").await.unwrap(), b"ok:first");

            let mut client = server.client().await;
            send_all(&mut client, &["before", "panic", "after"]).await;
            assert_eq!(
                receive_text(&mut client).await.as_deref(),
                Some("ok:before")
            );
            assert!(matches!(client.receive().await, Ok(None) | Err(_)));

            assert_eq!(bystander.request(b"second").await.unwrap(), b"ok:second");
            let mut fresh = server.client().await;
            assert_eq!(fresh.request(b"fresh").await.unwrap(), b"ok:fresh");
            drop((client, bystander, fresh));
            server.stop().await.unwrap();
        })
        .await
    }

    #[tokio::test]
    async fn garbage_between_frames_is_skipped() {
        within(async {
            let server = TestServer::start(limits()).await;
            let mut client = server.client().await;
            let mut bytes = b"\r\nnoise".to_vec();
            encode_frame_into(b"a", &mut bytes);
            bytes.extend(b"\n");
            encode_frame_into(b"b", &mut bytes);
            client.get_mut().write_all(&bytes).await.unwrap();
            assert_eq!(receive_text(&mut client).await.as_deref(), Some("ok:a"));
            assert_eq!(receive_text(&mut client).await.as_deref(), Some("ok:b"));
        })
        .await
    }

    #[tokio::test]
    async fn bad_trailer_and_interrupted_frames_are_rejected_and_the_connection_goes_on() {
        within(async {
            let server = TestServer::start(limits()).await;
            let mut client = server.client().await;
            let mut bytes = b"\x0babc\x1cX\x0bde".to_vec();
            encode_frame_into(b"good", &mut bytes);
            client.get_mut().write_all(&bytes).await.unwrap();
            for expected in ["reject:BadTrailer:3", "reject:Interrupted:2", "ok:good"] {
                assert_eq!(receive_text(&mut client).await.as_deref(), Some(expected));
            }
            assert_eq!(client.request(b"more").await.unwrap(), b"ok:more");
        })
        .await
    }

    #[tokio::test]
    async fn oversized_frame_is_rejected_then_the_connection_closes() {
        within(async {
            let server = TestServer::start(MllpLimits {
                max_message_bytes: 64,
                ..limits()
            })
            .await;
            let mut client = server.client().await;
            send_all(&mut client, &["small", &"x".repeat(100), "after"]).await;
            assert_eq!(receive_text(&mut client).await.as_deref(), Some("ok:small"));
            assert_eq!(
                receive_text(&mut client).await.as_deref(),
                Some("reject:TooLarge(64):64")
            );
            assert_eq!(receive_text(&mut client).await, None);
        })
        .await
    }

    #[tokio::test]
    async fn oversized_frame_is_rejected_without_waiting_for_its_end() {
        within(async {
            let server = TestServer::start(MllpLimits {
                max_message_bytes: 64,
                ..limits()
            })
            .await;
            let mut client = server.client().await;
            // A start block and more than the limit, with no end in sight.
            let mut bytes = vec![0x0B];
            bytes.extend([b'x'; 200]);
            client.get_mut().write_all(&bytes).await.unwrap();
            assert_eq!(
                receive_text(&mut client).await.as_deref(),
                Some("reject:TooLarge(64):64")
            );
            assert_eq!(receive_text(&mut client).await, None);
        })
        .await
    }

    #[tokio::test]
    async fn idle_connection_is_closed() {
        within(async {
            let idle = MllpLimits {
                idle_timeout: Duration::from_millis(200),
                ..limits()
            };
            let server = TestServer::start(idle).await;
            let mut client = server.client().await;
            assert_eq!(client.request(b"a").await.unwrap(), b"ok:a");
            assert_eq!(receive_text(&mut client).await, None);
        })
        .await
    }

    #[tokio::test]
    async fn idle_timeout_does_not_cut_off_a_slow_handler() {
        within(async {
            let idle = MllpLimits {
                idle_timeout: Duration::from_millis(200),
                ..limits()
            };
            let server = TestServer::start(idle).await;
            let mut client = server.client().await;
            assert_eq!(client.request(b"sleep:600:slow").await.unwrap(), b"ok:slow");
        })
        .await
    }

    #[tokio::test]
    async fn idle_timeout_closes_a_connection_stuck_mid_frame() {
        within(async {
            let idle = MllpLimits {
                idle_timeout: Duration::from_millis(200),
                ..limits()
            };
            let server = TestServer::start(idle).await;
            let mut client = server.client().await;
            client
                .get_mut()
                .write_all(b"\x0bMSH|never ends")
                .await
                .unwrap();
            assert_eq!(receive_text(&mut client).await, None);
            assert_eq!(server.started(), 0);
        })
        .await
    }

    #[tokio::test]
    async fn connections_over_the_limit_are_closed_until_a_slot_frees() {
        within(async {
            let server = TestServer::start(MllpLimits {
                max_connections: 1,
                ..limits()
            })
            .await;
            let mut first = server.client().await;
            assert_eq!(first.request(b"first").await.unwrap(), b"ok:first");

            let mut second = server.client().await;
            assert!(
                matches!(second.receive().await, Ok(None) | Err(_)),
                "second was served"
            );
            assert_eq!(first.request(b"still").await.unwrap(), b"ok:still");

            drop(first);
            // The slot frees once the server has seen the close; retry until it has.
            loop {
                let mut third = server.client().await;
                match third.request(b"third").await {
                    Ok(reply) => break assert_eq!(reply, b"ok:third"),
                    Err(_) => sleep(Duration::from_millis(20)).await,
                }
            }
        })
        .await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shutdown_lets_messages_in_flight_finish_and_answers_them() {
        within(async {
            let server = TestServer::start(limits()).await;
            let addr = server.addr;
            let mut busy = server.client().await;
            let mut idle = server.client().await;
            assert_eq!(idle.request(b"hi").await.unwrap(), b"ok:hi");
            send_all(&mut busy, &["sleep:300:a", "sleep:100:b"]).await;
            wait_until(|| server.started() == 3).await;

            let stopped = tokio::spawn(server.stop());
            assert_eq!(receive_text(&mut busy).await.as_deref(), Some("ok:a"));
            assert_eq!(receive_text(&mut busy).await.as_deref(), Some("ok:b"));
            assert_eq!(receive_text(&mut busy).await, None);
            assert_eq!(receive_text(&mut idle).await, None);
            drop((busy, idle));
            stopped.await.unwrap().unwrap();

            // The listener is gone.
            assert!(TcpStream::connect(addr).await.is_err());
        })
        .await
    }

    #[tokio::test]
    async fn serves_any_stream_and_stops_when_asked() {
        within(async {
            let (ours, theirs) = tokio::io::duplex(64);
            let (stop, stopping) = watch::channel(false);
            let peer = Peer::plain("192.0.2.1:2575".parse().unwrap());
            let limits = limits();
            let handler: Arc<dyn Handler> = Arc::new(TestHandler::default());
            let served = tokio::spawn(async move {
                serve_connection(ours, peer, &limits, handler, stopping).await
            });

            let mut client = MllpClient::new(theirs);
            // Bigger than the pipe's buffer, so both directions have to wait on each other.
            let long = "y".repeat(500);
            assert_eq!(
                client.request(long.as_bytes()).await.unwrap(),
                format!("ok:{long}").as_bytes()
            );
            stop.send(true).unwrap();
            assert_eq!(client.receive().await.unwrap(), None);
            drop(client);
            served.await.unwrap().unwrap();
        })
        .await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn random_bytes_never_break_the_connection_loop() {
        within(async {
            // xorshift64, favouring the framing bytes so every error path comes up.
            let mut state = 0x2545_F491_4F6C_DD1Du64;
            let mut next = move || crate::hl7v2::test_rng::next(&mut state);
            for _ in 0..25 {
                let bytes: Vec<u8> = (0..3000)
                    .map(|_| match next() % 10 {
                        0 | 1 => 0x0B,
                        2 | 3 => 0x1C,
                        4 => 0x0D,
                        n => b'a' + n as u8,
                    })
                    .collect();
                let (ours, theirs) = tokio::io::duplex(256);
                // Kept alive: a dropped sender means shutdown.
                let (_stop, stopping) = watch::channel(false);
                let limits = MllpLimits {
                    max_message_bytes: 32,
                    max_in_flight: 3,
                    ..limits()
                };
                let handler: Arc<dyn Handler> = Arc::new(TestHandler::default());
                let peer = Peer::plain("192.0.2.1:2575".parse().unwrap());
                let served = tokio::spawn(async move {
                    serve_connection(ours, peer, &limits, handler, stopping).await
                });
                let (mut from_server, mut to_server) = tokio::io::split(theirs);
                let send = async {
                    // Fails once the server closes after an oversized frame; that is expected.
                    let _ = to_server.write_all(&bytes).await;
                    let _ = to_server.shutdown().await;
                };
                let mut replies = Vec::new();
                let (_, read) = tokio::join!(send, from_server.read_to_end(&mut replies));
                read.unwrap();
                served
                    .await
                    .expect("the connection task must not panic")
                    .unwrap();

                // Whatever came in, what went out is well-formed frames from the handler.
                let mut decoder = FrameDecoder::new(1024);
                decoder.push(&replies);
                while let Some(reply) = decoder.next_frame() {
                    let reply = reply.unwrap();
                    assert!(reply.starts_with(b"ok:") || reply.starts_with(b"reject:"));
                }
                assert_eq!((decoder.buffered(), decoder.discarded()), (0, 0));
            }
        })
        .await
    }

    #[tokio::test]
    async fn client_reports_a_malformed_reply() {
        within(async {
            let (mut server_side, client_side) = tokio::io::duplex(64);
            let mut client = MllpClient::new(client_side);
            server_side.write_all(b"\x0bACK\x1cX").await.unwrap();
            let error = client.receive().await.unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::InvalidData);
            server_side.write_all(b"\x0bAC").await.unwrap();
            drop(server_side);
            let error = client.receive().await.unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
        })
        .await
    }
}
