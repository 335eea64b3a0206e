//! MLLP framing: bytes ↔ frames, with no I/O.
//!
//! # Format
//!
//! ```text
//! <SB> payload <EB><CR>        SB = 0x0B, EB = 0x1C, CR = 0x0D
//! ```
//!
//! [`FrameDecoder`] is a state machine over the byte stream: it is fed whatever the socket
//! delivered ([`FrameDecoder::push`]) and hands out whole frames ([`FrameDecoder::next_frame`]).
//! "Not enough bytes yet" is `None`, the normal outcome, not an error. Since the machine only ever
//! looks at one byte at a time, how the stream was chunked never changes what comes out; the
//! tests check that on random input.
//!
//! Memory is bounded by the bytes pushed and not yet consumed plus one frame of at most
//! `max_message_bytes`: an oversized frame is reported when it crosses the limit, and the rest of
//! it is skipped without being stored.

use std::mem;

use thiserror::Error;

/// Start block: the byte before each payload.
pub const START_BLOCK: u8 = 0x0B;
/// End block: the first of the two bytes after each payload.
pub const END_BLOCK: u8 = 0x1C;
/// The byte that must follow [`END_BLOCK`].
pub const CARRIAGE_RETURN: u8 = 0x0D;

/// A frame that broke the framing rules. Carries no payload bytes, so it is safe to log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum FrameError {
    /// The payload grew past the limit; the bytes after the limit were not kept.
    #[error("MLLP frame larger than the {limit}-byte limit")]
    TooLarge { limit: usize },
    /// An end block (0x1C) not followed by a carriage return (0x0D).
    #[error("MLLP end block not followed by a carriage return")]
    BadTrailer,
    /// A start block (0x0B) before the previous frame's end block: the previous frame is
    /// truncated, and a new frame starts at the new start block.
    #[error("MLLP frame interrupted by a new start block")]
    Interrupted,
}

/// Wraps `payload` in a frame. The payload must not contain 0x0B or 0x1C (HL7 v2 text never does).
pub fn encode_frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 3);
    encode_frame_into(payload, &mut out);
    out
}

/// Appends the frame for `payload` to `out`, so several replies can go out in one write.
pub fn encode_frame_into(payload: &[u8], out: &mut Vec<u8>) {
    out.reserve(payload.len() + 3);
    out.push(START_BLOCK);
    out.extend_from_slice(payload);
    out.extend_from_slice(&[END_BLOCK, CARRIAGE_RETURN]);
}

/// Where the decoder is in the byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Outside a frame: dropping bytes until a start block.
    Seeking,
    /// After a start block: collecting payload bytes until an end block.
    Payload,
    /// After an end block: the next byte must be a carriage return.
    Trailer,
    /// Inside a frame that went over the limit: dropping bytes until its end block (or a start
    /// block, which begins a new frame).
    Skipping,
}

/// Incremental MLLP decoder: push bytes, pop frames. Pure: no I/O, no clock, no logging, and no
/// panics whatever the input.
#[derive(Debug)]
pub struct FrameDecoder {
    max_message_bytes: usize,
    /// Bytes pushed; those before `pos` have been consumed.
    input: Vec<u8>,
    pos: usize,
    state: State,
    /// Payload of the frame being read; never longer than `max_message_bytes`.
    frame: Vec<u8>,
    /// Payload of the frame the last error was about, until [`FrameDecoder::take_partial`].
    partial: Vec<u8>,
    discarded: usize,
}

impl FrameDecoder {
    pub fn new(max_message_bytes: usize) -> Self {
        FrameDecoder {
            max_message_bytes,
            input: Vec::new(),
            pos: 0,
            state: State::Seeking,
            frame: Vec::new(),
            partial: Vec::new(),
            discarded: 0,
        }
    }

    /// Adds bytes from the peer. Nothing is decoded until [`FrameDecoder::next_frame`].
    pub fn push(&mut self, bytes: &[u8]) {
        // Drop what was consumed, so the buffer holds only bytes still to be decoded.
        if self.pos > 0 {
            self.input.drain(..self.pos);
            self.pos = 0;
        }
        self.input.extend_from_slice(bytes);
    }

    /// The next complete frame, or the next framing error; `None` when more bytes are needed.
    ///
    /// After an error, [`FrameDecoder::take_partial`] returns the payload bytes of the broken
    /// frame. Decoding goes on after every error: after `TooLarge` the rest of the oversized frame
    /// is skipped (and counted in [`FrameDecoder::discarded`]); whether to keep reading is the
    /// caller's decision.
    pub fn next_frame(&mut self) -> Option<Result<Vec<u8>, FrameError>> {
        loop {
            let rest = &self.input[self.pos..];
            if rest.is_empty() {
                self.input.clear();
                self.pos = 0;
                return None;
            }
            match self.state {
                State::Seeking => match rest.iter().position(|&b| b == START_BLOCK) {
                    Some(i) => {
                        self.discarded += i;
                        self.pos += i + 1;
                        self.state = State::Payload;
                    }
                    None => {
                        self.discarded += rest.len();
                        self.pos += rest.len();
                    }
                },
                State::Payload => {
                    let end = rest
                        .iter()
                        .position(|&b| b == START_BLOCK || b == END_BLOCK);
                    let body = &rest[..end.unwrap_or(rest.len())];
                    // `frame` never exceeds the limit, so this cannot underflow.
                    let room = self.max_message_bytes - self.frame.len();
                    if body.len() > room {
                        self.frame.extend_from_slice(&body[..room]);
                        self.pos += room;
                        self.state = State::Skipping;
                        self.partial = mem::take(&mut self.frame);
                        let limit = self.max_message_bytes;
                        return Some(Err(FrameError::TooLarge { limit }));
                    }
                    self.frame.extend_from_slice(body);
                    self.pos += body.len();
                    if let Some(i) = end {
                        self.pos += 1;
                        if rest[i] == END_BLOCK {
                            self.state = State::Trailer;
                        } else {
                            // The new start block is consumed: we stay in `Payload` for the
                            // frame it begins.
                            self.partial = mem::take(&mut self.frame);
                            return Some(Err(FrameError::Interrupted));
                        }
                    }
                }
                State::Trailer => {
                    self.state = State::Seeking;
                    if rest[0] == CARRIAGE_RETURN {
                        self.pos += 1;
                        return Some(Ok(mem::take(&mut self.frame)));
                    }
                    // Leave the byte to `Seeking`: if it is a start block, the next frame
                    // begins right here.
                    self.partial = mem::take(&mut self.frame);
                    return Some(Err(FrameError::BadTrailer));
                }
                State::Skipping => {
                    match rest
                        .iter()
                        .position(|&b| b == START_BLOCK || b == END_BLOCK)
                    {
                        Some(i) if rest[i] == START_BLOCK => {
                            // Left for `Seeking`, which starts the new frame.
                            self.discarded += i;
                            self.pos += i;
                            self.state = State::Seeking;
                        }
                        Some(i) => {
                            // The end block of the oversized frame; `Seeking` drops its CR.
                            self.discarded += i + 1;
                            self.pos += i + 1;
                            self.state = State::Seeking;
                        }
                        None => {
                            self.discarded += rest.len();
                            self.pos += rest.len();
                        }
                    }
                }
            }
        }
    }

    /// The payload bytes received of the frame the last error was about (at most
    /// `max_message_bytes`); empty once taken. Kept apart from [`FrameError`] so the error stays
    /// a small value that is safe to log.
    pub fn take_partial(&mut self) -> Vec<u8> {
        mem::take(&mut self.partial)
    }

    /// Bytes dropped outside frames since the last call: before a start block, after a frame's
    /// trailer, and the skipped rest of an oversized frame. For logging the count.
    pub fn discarded(&mut self) -> usize {
        mem::take(&mut self.discarded)
    }

    /// Bytes held: of the frame being read plus those pushed and not yet decoded. After
    /// `next_frame` returned `None` this is the size of an unfinished frame, e.g. at end of stream.
    pub fn buffered(&self) -> usize {
        self.frame.len() + (self.input.len() - self.pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SB: u8 = START_BLOCK;
    const EB: u8 = END_BLOCK;
    const CR: u8 = CARRIAGE_RETURN;

    /// Everything the decoder says about `chunks`, fed one after the other, with the partial bytes
    /// of each error, and the total of discarded bytes.
    type Output = (Vec<Result<Vec<u8>, (FrameError, Vec<u8>)>>, usize);

    fn decode_chunks<'a>(max: usize, chunks: impl IntoIterator<Item = &'a [u8]>) -> Output {
        let mut decoder = FrameDecoder::new(max);
        let mut out = Vec::new();
        let mut discarded = 0;
        for chunk in chunks {
            decoder.push(chunk);
            while let Some(item) = decoder.next_frame() {
                out.push(item.map_err(|e| (e, decoder.take_partial())));
                assert!(
                    decoder.buffered() <= max + chunk.len(),
                    "decoder holds too much"
                );
            }
            discarded += decoder.discarded();
        }
        (out, discarded)
    }

    fn decode(max: usize, bytes: &[u8]) -> Output {
        decode_chunks(max, [bytes])
    }

    fn frames(payloads: &[&[u8]]) -> Vec<u8> {
        payloads.iter().flat_map(|p| encode_frame(p)).collect()
    }

    #[test]
    fn encodes_start_payload_end_and_cr() {
        assert_eq!(encode_frame(b"MSH|x"), b"\x0bMSH|x\x1c\x0d");
        let mut out = encode_frame(b"a");
        encode_frame_into(b"b", &mut out);
        assert_eq!(out, b"\x0ba\x1c\x0d\x0bb\x1c\x0d");
    }

    #[test]
    fn decodes_one_frame() {
        let (out, discarded) = decode(100, b"\x0bMSH|^~\\&|A\rPID|1\r\x1c\x0d");
        assert_eq!(out, vec![Ok(b"MSH|^~\\&|A\rPID|1\r".to_vec())]);
        assert_eq!(discarded, 0);
    }

    #[test]
    fn incomplete_input_is_none_not_an_error() {
        let mut decoder = FrameDecoder::new(100);
        assert_eq!(decoder.next_frame(), None);
        decoder.push(b"\x0bMSH");
        assert_eq!(decoder.next_frame(), None);
        decoder.push(&[EB]);
        assert_eq!(decoder.next_frame(), None);
        assert_eq!(decoder.buffered(), 3);
        decoder.push(&[CR]);
        assert_eq!(decoder.next_frame(), Some(Ok(b"MSH".to_vec())));
        assert_eq!(decoder.next_frame(), None);
        assert_eq!(decoder.buffered(), 0);
    }

    #[test]
    fn byte_by_byte_gives_the_same_frames() {
        let stream = frames(&[b"first", b"", b"third\rsegment"]);
        let whole = decode(100, &stream);
        let bytewise = decode_chunks(100, stream.chunks(1));
        assert_eq!(whole, bytewise);
        assert_eq!(
            whole.0,
            vec![
                Ok(b"first".to_vec()),
                Ok(Vec::new()),
                Ok(b"third\rsegment".to_vec())
            ]
        );
    }

    #[test]
    fn several_frames_in_one_push() {
        let (out, _) = decode(100, &frames(&[b"a", b"b", b"c"]));
        assert_eq!(
            out,
            vec![Ok(b"a".to_vec()), Ok(b"b".to_vec()), Ok(b"c".to_vec())]
        );
    }

    #[test]
    fn empty_frame_is_a_frame() {
        assert_eq!(decode(100, &[SB, EB, CR]).0, vec![Ok(Vec::new())]);
        // Even with no room at all.
        assert_eq!(decode(0, &[SB, EB, CR]).0, vec![Ok(Vec::new())]);
    }

    #[test]
    fn garbage_before_and_after_frames_is_counted_and_dropped() {
        let mut stream = b"GET / HTTP/1.1\r\n".to_vec();
        stream.extend(encode_frame(b"a"));
        stream.extend(b"\n\x1c\x0d");
        stream.extend(encode_frame(b"b"));
        stream.extend(b"tail");
        let (out, discarded) = decode(100, &stream);
        assert_eq!(out, vec![Ok(b"a".to_vec()), Ok(b"b".to_vec())]);
        assert_eq!(discarded, 16 + 3 + 4);
    }

    #[test]
    fn discarded_resets_when_read() {
        let mut decoder = FrameDecoder::new(100);
        decoder.push(b"xyz");
        assert_eq!(decoder.next_frame(), None);
        assert_eq!(decoder.discarded(), 3);
        assert_eq!(decoder.discarded(), 0);
    }

    #[test]
    fn bad_trailer_reports_the_frame_then_resyncs_at_the_next_start_block() {
        let mut stream = b"\x0babc\x1cX junk".to_vec();
        stream.extend(encode_frame(b"def"));
        let (out, discarded) = decode(100, &stream);
        assert_eq!(
            out,
            vec![
                Err((FrameError::BadTrailer, b"abc".to_vec())),
                Ok(b"def".to_vec())
            ]
        );
        assert_eq!(discarded, 6, "`X junk` is dropped");
    }

    #[test]
    fn bad_trailer_followed_directly_by_a_start_block() {
        let mut stream = b"\x0babc\x1c".to_vec();
        stream.extend(encode_frame(b"def"));
        let (out, discarded) = decode(100, &stream);
        assert_eq!(
            out,
            vec![
                Err((FrameError::BadTrailer, b"abc".to_vec())),
                Ok(b"def".to_vec())
            ]
        );
        assert_eq!(discarded, 0);
    }

    #[test]
    fn interrupted_frame_is_reported_and_the_new_one_starts() {
        let (out, discarded) = decode(100, b"\x0babc\x0bdef\x1c\x0d");
        assert_eq!(
            out,
            vec![
                Err((FrameError::Interrupted, b"abc".to_vec())),
                Ok(b"def".to_vec())
            ]
        );
        assert_eq!(discarded, 0);
    }

    #[test]
    fn too_large_keeps_the_limit_skips_the_rest_and_resyncs() {
        let mut stream = vec![SB];
        stream.extend([b'x'; 25]);
        stream.extend([EB, CR]);
        stream.extend(encode_frame(b"next"));
        let expected = vec![
            Err((FrameError::TooLarge { limit: 10 }, vec![b'x'; 10])),
            Ok(b"next".to_vec()),
        ];
        let (out, discarded) = decode(10, &stream);
        assert_eq!(out, expected);
        assert_eq!(
            discarded,
            15 + 2,
            "the rest of the payload, its end block and CR"
        );
        assert_eq!(decode_chunks(10, stream.chunks(1)).0, expected);
    }

    #[test]
    fn too_large_is_reported_before_the_end_block_arrives() {
        let mut decoder = FrameDecoder::new(4);
        decoder.push(b"\x0b12345");
        assert_eq!(
            decoder.next_frame(),
            Some(Err(FrameError::TooLarge { limit: 4 }))
        );
        assert_eq!(decoder.take_partial(), b"1234");
        assert_eq!(decoder.take_partial(), b"", "taken once");
        // Skipping stores nothing, however much arrives.
        decoder.push(&[b'z'; 10_000]);
        assert_eq!(decoder.next_frame(), None);
        assert_eq!(decoder.buffered(), 0);
    }

    #[test]
    fn too_large_frame_cut_short_by_a_start_block() {
        let (out, _) = decode(3, b"\x0babcdef\x0bok\x1c\x0d");
        assert_eq!(
            out,
            vec![
                Err((FrameError::TooLarge { limit: 3 }, b"abc".to_vec())),
                Ok(b"ok".to_vec())
            ]
        );
    }

    #[test]
    fn payload_of_exactly_the_limit_is_accepted() {
        let (out, _) = decode(5, &frames(&[b"12345"]));
        assert_eq!(out, vec![Ok(b"12345".to_vec())]);
        let (out, _) = decode(5, &frames(&[b"123456"]));
        assert_eq!(
            out,
            vec![Err((FrameError::TooLarge { limit: 5 }, b"12345".to_vec()))]
        );
    }

    #[test]
    fn error_messages_carry_no_payload() {
        assert_eq!(
            FrameError::TooLarge { limit: 1024 }.to_string(),
            "MLLP frame larger than the 1024-byte limit"
        );
    }

    /// xorshift64 (deterministic, so a failure reproduces from the printed seed) with the
    /// draws these tests need.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            crate::hl7v2::test_rng::next(&mut self.0)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        /// Mostly the bytes the decoder cares about, so odd sequences of them come up often.
        fn byte(&mut self) -> u8 {
            match self.below(8) {
                0 => START_BLOCK,
                1 => END_BLOCK,
                2 => CARRIAGE_RETURN,
                _ => self.next() as u8,
            }
        }
        fn chunks<'a>(&mut self, bytes: &'a [u8]) -> Vec<&'a [u8]> {
            let mut out = Vec::new();
            let mut rest = bytes;
            while !rest.is_empty() {
                let n = 1 + self.below(rest.len().min(40));
                let (head, tail) = rest.split_at(n);
                out.push(head);
                rest = tail;
            }
            out
        }
    }

    #[test]
    fn random_input_never_panics_and_chunking_never_matters() {
        for seed in 1..=2_000u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let max = rng.below(40);
            let len = rng.below(400);
            let bytes: Vec<u8> = (0..len).map(|_| rng.byte()).collect();

            let whole = decode(max, &bytes);
            let chunked = decode_chunks(max, rng.chunks(&bytes));
            assert_eq!(whole, chunked, "seed {seed}");
            for item in &whole.0 {
                let payload = match item {
                    Ok(payload) => payload,
                    Err((_, partial)) => partial,
                };
                assert!(payload.len() <= max, "seed {seed}");
                assert!(!payload.contains(&START_BLOCK) && !payload.contains(&END_BLOCK));
            }
        }
    }

    #[test]
    fn random_valid_streams_decode_to_their_payloads_however_chunked() {
        for seed in 1..=1_000u64 {
            let mut rng = Rng(seed.wrapping_mul(0xD1B5_4A32_D192_ED03));
            let max = 64;
            let mut payloads = Vec::new();
            let mut stream = Vec::new();
            for _ in 0..rng.below(8) {
                // Garbage between frames: anything but a start block.
                for _ in 0..rng.below(3) {
                    let b = rng.byte();
                    stream.push(if b == START_BLOCK { b'g' } else { b });
                }
                let payload: Vec<u8> = (0..rng.below(max + 1))
                    .map(|_| rng.byte())
                    .filter(|&b| b != START_BLOCK && b != END_BLOCK)
                    .collect();
                encode_frame_into(&payload, &mut stream);
                payloads.push(Ok(payload));
            }
            let (out, _) = decode_chunks(max, rng.chunks(&stream));
            assert_eq!(out, payloads, "seed {seed}");
        }
    }
}
