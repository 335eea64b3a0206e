//! A small MLLP client for tests, the CLI and benchmarks: frame a payload, send it, read replies.
//!
//! It does no retries and has no timeouts of its own; wrap calls in `tokio::time::timeout` where
//! a bound matters.

use std::io;
use std::sync::Arc;

use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, ToSocketAddrs};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::MllpLimits;
use super::frame::{FrameDecoder, encode_frame};

/// An MLLP connection seen from the sending side. Generic over the stream so it can run over TLS
/// or an in-memory pipe; [`MllpClient::connect`] makes the plain TCP one,
/// [`MllpClient::connect_tls`] the TLS one.
#[derive(Debug)]
pub struct MllpClient<S = TcpStream> {
    stream: S,
    decoder: FrameDecoder,
    buf: Vec<u8>,
}

impl MllpClient<TcpStream> {
    pub async fn connect(addr: impl ToSocketAddrs) -> io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        // Each message is one small write that should leave now.
        stream.set_nodelay(true)?;
        Ok(MllpClient::new(stream))
    }
}

impl MllpClient<TlsStream<TcpStream>> {
    /// Connects over TLS. The server's certificate must be valid for `server_name` (a DNS name
    /// or an IP address) under the roots of `config`, which also carries the client certificate,
    /// if any (see [`crate::tls::client_config`]).
    pub async fn connect_tls(
        addr: impl ToSocketAddrs,
        server_name: &str,
        config: Arc<rustls::ClientConfig>,
    ) -> io::Result<Self> {
        let name = ServerName::try_from(server_name.to_owned())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let stream = TlsConnector::from(config).connect(name, stream).await?;
        Ok(MllpClient::new(stream))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> MllpClient<S> {
    /// Wraps a connected stream. Replies up to the default `max_message_bytes` are accepted.
    pub fn new(stream: S) -> Self {
        MllpClient::with_max_message_bytes(stream, MllpLimits::default().max_message_bytes)
    }

    pub fn with_max_message_bytes(stream: S, max_message_bytes: usize) -> Self {
        MllpClient {
            stream,
            decoder: FrameDecoder::new(max_message_bytes),
            buf: vec![0; 8192],
        }
    }

    /// Frames `payload` and sends it.
    pub async fn send(&mut self, payload: &[u8]) -> io::Result<()> {
        self.stream.write_all(&encode_frame(payload)).await?;
        self.stream.flush().await
    }

    /// The next reply frame; `None` when the server closed the connection between frames.
    /// A malformed reply is an `InvalidData` error; bytes outside frames are ignored.
    pub async fn receive(&mut self) -> io::Result<Option<Vec<u8>>> {
        loop {
            match self.decoder.next_frame() {
                Some(Ok(payload)) => return Ok(Some(payload)),
                Some(Err(e)) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
                None => {}
            }
            let n = self.stream.read(&mut self.buf).await?;
            if n == 0 {
                if self.decoder.buffered() > 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "MLLP connection closed in the middle of a frame",
                    ));
                }
                return Ok(None);
            }
            self.decoder.push(&self.buf[..n]);
        }
    }

    /// Sends `payload` and waits for the next reply frame (one request at a time; for
    /// pipelining call [`MllpClient::send`] several times, then [`MllpClient::receive`]).
    pub async fn request(&mut self, payload: &[u8]) -> io::Result<Vec<u8>> {
        self.send(payload).await?;
        self.receive().await?.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "MLLP connection closed before the reply",
            )
        })
    }

    /// The stream, e.g. to send raw bytes in tests of malformed input.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.stream
    }

    pub fn into_inner(self) -> S {
        self.stream
    }
}
