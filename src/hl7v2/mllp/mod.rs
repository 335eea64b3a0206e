//! MLLP, the transport HL7 v2 messages travel on: the framing codec, the listener and a client.
//!
//! # Layout
//!
//! - [`frame`]: bytes ↔ frames and nothing else. [`FrameDecoder`] is pure (no I/O, no clock), never
//!   panics on peer bytes, and is what a fuzzer should drive. [`encode_frame`] wraps a payload.
//! - [`listener`]: [`serve`] (accept loop, connection limit, graceful shutdown, the TLS step of
//!   [`crate::tls::Acceptor`]) and [`serve_connection`] (one connection over any stream:
//!   read-ahead, pipelining, in-order replies, idle timeout). It moves frames between the socket
//!   and the [`Handler`] and never looks inside a payload.
//! - [`client`]: [`MllpClient`], a small client (plain or TLS) for tests, the CLI and benchmarks.
//!
//! Callers implement [`Handler`]: it gets each payload (an HL7 v2 message, unparsed) and returns
//! the [`Reply`] frames. Parsing, storing and building the ACK all live behind it, so this module
//! knows nothing about HL7 segments.
//!
//! # Format
//!
//! MLLP release 1 framing (HL7 v2.x, appendix C "Lower layer protocols"; the same block format
//! as the MLLP release 2 transport specification):
//!
//! ```text
//! <SB> payload <EB><CR>
//!
//! SB = 0x0B (vertical tab)     start block
//! EB = 0x1C (file separator)   end block
//! CR = 0x0D (carriage return)  trailer
//! ```
//!
//! The payload is the message as-is (segments separated by CR) in the character set the message
//! declares; it never contains SB or EB, since HL7 v2 forbids those characters in message text.
//! A reply (usually an ACK) is framed the same way on the same connection. There is no length
//! prefix, so a receiver has to scan for the end block and must bound how much it buffers.
//!
//! # Behaviour on bad input
//!
//! - Bytes before a start block, and between an end block and the next start block, are dropped;
//!   their count (never their content, which may be patient data) is logged at warn.
//! - An end block not followed by CR is [`FrameError::BadTrailer`]; a start block before the end
//!   block is [`FrameError::Interrupted`], and the new frame starts there. Both go to
//!   [`Handler::malformed`] with the bytes received so far, and the connection carries on.
//! - A payload over [`MllpLimits::max_message_bytes`] is [`FrameError::TooLarge`], reported as soon
//!   as the limit is crossed (the rest is never buffered). The handler gets the first
//!   `max_message_bytes` bytes, enough to read MSH and answer with a reject; the reply is written,
//!   and the connection is then closed. We close rather than skip ahead to the end block because
//!   the remainder has no bound: skipping it would let one peer keep a connection busy with
//!   data we only throw away, and a peer that overran the limit may not be speaking MLLP at all.
//!
//! # Connections
//!
//! - With TLS, the handshake runs in the connection's task, under
//!   [`MllpLimits::idle_timeout`], and holds a connection slot like any connection. A failed
//!   handshake, or a client certificate that maps to no hub where one is required, closes that
//!   connection (logged at info, naming the reason and at most the certificate's fingerprint).
//!   The handler learns who sent each message from the [`Peer`], including the hub identity.
//! - Messages on one connection are answered in the order they arrived. Up to
//!   [`MllpLimits::max_in_flight`] messages are read ahead and handled concurrently; replies are
//!   written strictly in arrival order.
//! - Every handler call runs in its own task and always runs to completion: a handler is never
//!   cancelled half-way (it may be in the middle of a commit), and a handler that panics closes
//!   its connection without an answer but affects nothing else.
//! - [`Reply::Close`] closes the connection once earlier replies are written; messages read after
//!   it are not answered. Their handlers may already be running and still complete: the sender,
//!   having no ACK, resends them, and the receiving side's idempotency (a repeated MSH-10 gets
//!   the same answer) makes that safe.
//! - A connection with nothing in flight and no bytes for [`MllpLimits::idle_timeout`] is closed
//!   (logged at debug). The same timeout bounds a reply write to a peer that stopped reading.
//! - Over [`MllpLimits::max_connections`], a new connection is accepted and closed at once, with a
//!   warn log. Leaving it in the kernel's backlog instead would look like a hung server to the
//!   sender; a prompt close makes it retry later, which MLLP senders do.
//! - On shutdown, [`serve`] stops accepting, connections stop reading, messages in flight finish
//!   and their replies are written, then [`serve`] returns. Frames received but not yet handed to
//!   the handler are dropped unanswered; their senders resend them.
//! - When we close a connection, we half-close it and read and drop what the peer still sends
//!   until it closes too, for at most 2 s (or the idle timeout, if shorter). Closing with unread
//!   input would make the kernel send a reset, which can make the peer lose our last replies.
//!
//! Memory per connection is bounded by one read buffer, one frame being decoded and the payloads
//! in flight: at worst `max_connections × max_in_flight × max_message_bytes` in all.

pub mod client;
pub mod frame;
pub mod listener;

use std::time::Duration;

use futures::future::BoxFuture;

pub use crate::tls::Peer;

pub use client::MllpClient;
pub use frame::{FrameDecoder, FrameError, encode_frame, encode_frame_into};
pub use listener::{serve, serve_connection};

/// Limits for one listener. Zero for `max_connections` or `max_in_flight` is taken as one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MllpLimits {
    /// Largest payload accepted, framing bytes not counted. Default 1 MiB: an ORU^R01 with a
    /// Holter summary is a few KiB, and a frame carrying a whole waveform should come over HTTP.
    pub max_message_bytes: usize,
    /// How long a connection may stay silent with nothing in flight. Default 60 s.
    pub idle_timeout: Duration,
    /// Open connections at one time. Default 256.
    pub max_connections: usize,
    /// Messages read ahead and handled concurrently on one connection. Default 16.
    pub max_in_flight: usize,
}

impl Default for MllpLimits {
    fn default() -> Self {
        MllpLimits {
            max_message_bytes: 1024 * 1024,
            idle_timeout: Duration::from_secs(60),
            max_connections: 256,
            max_in_flight: 16,
        }
    }
}

/// What to do after a message (or a malformed frame).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Payloads to frame and send, in this order. Empty: send nothing and carry on.
    Send(Vec<Vec<u8>>),
    /// Close the connection without answering; the sender will resend.
    Close,
}

/// What the listener calls for each frame. Implemented by the HL7 v2 layer.
///
/// Each call runs in its own task and is polled to completion even if the connection goes away,
/// so implementations need not be cancel-safe. Payloads are patient data: do not log them.
pub trait Handler: Send + Sync + 'static {
    /// A complete frame: `payload` is the message between the start block and the end block;
    /// `peer` is the connection it came on (address, TLS, hub identity).
    fn message(&self, payload: Vec<u8>, peer: &Peer) -> BoxFuture<'static, Reply>;

    /// A frame that broke the rules; answer (e.g. an HL7 reject) or close. `partial` holds the
    /// payload bytes received before the error, at most `max_message_bytes` of them.
    fn malformed(
        &self,
        error: FrameError,
        partial: Vec<u8>,
        peer: &Peer,
    ) -> BoxFuture<'static, Reply>;
}
