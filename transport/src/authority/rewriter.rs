//! The client-to-server half of an HTTP/2 connection, frame by frame: every header block is
//! HPACK-decoded, and one whose `:authority` is not a valid URI authority is re-encoded with
//! `localhost` in its place. Everything else passes through byte for byte.
//!
//! Why: grpc-core (Python, C++, Ruby, C#, PHP) sends the percent-encoded socket path as
//! `:authority` on unix sockets (e.g. `%2Frun%2Fagent.sock`), grpc-java the raw path; the
//! HTTP/2 stack under tonic (h2) refuses such a request with `RST_STREAM(PROTOCOL_ERROR)`
//! before any handler runs (grpc/grpc#38142, hyperium/tonic#742). On a unix or vsock
//! listener the authority names nothing the agent routes on, so any value is accepted.
//!
//! Header blocks are forwarded verbatim, so the server's HPACK table mirrors the client's,
//! until the first block that needs a rewrite. From then on every block is re-encoded with
//! literals that do not touch the dynamic table (RFC 7541 6.2.2), so the server's table
//! stays as it was and nothing refers to it again; the rewriter's own decoder keeps
//! following the client's table. A connection that does not start with the HTTP/2 preface
//! (HTTP/1.1 on the metrics listener, say) is passed through untouched.
//!
//! A client sends the same `:authority` on every call of a channel (grpc-go and tonic
//! `localhost`, grpc-core the encoded path, grpc-java the path), so once a connection's
//! first block carries a valid one and went through unchanged, the rest of the connection is
//! passed through untouched too, and its later requests cost nothing here (h2's own limits
//! on header lists and CONTINUATION floods still apply to them). A client that switched to
//! an invalid authority after that would get h2's `RST_STREAM(PROTOCOL_ERROR)` for that
//! call, as on TCP.

use super::hpack::{HpackDecoder, Value};

/// The HTTP/2 client connection preface (RFC 9113 3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The authority put in place of an invalid one.
pub const REPLACEMENT: &str = "localhost";

/// Largest header block (all fragments of one HEADERS + CONTINUATION run) or decoded header
/// list accepted; beyond it the connection is closed (a CONTINUATION flood must not grow
/// memory without bound). Far above what h2 itself accepts by default (16 KiB lists).
pub const MAX_HEADER_BLOCK: usize = 1 << 20;

/// Largest payload of a frame the rewriter emits: the smallest SETTINGS_MAX_FRAME_SIZE a
/// peer may advertise (RFC 9113 4.2), so it needs no knowledge of the server's settings.
const MAX_EMIT_FRAME: usize = 16_384;

const FRAME_HEADER_LEN: usize = 9;
const TYPE_HEADERS: u8 = 0x1;
const TYPE_CONTINUATION: u8 = 0x9;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;

/// Why the byte stream cannot be forwarded; the connection is then closed (h2 itself would
/// answer each of these with a connection error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RewriteError {
    /// A header block or its decoded list exceeds [`MAX_HEADER_BLOCK`].
    #[error("HTTP/2 header block larger than {MAX_HEADER_BLOCK} bytes")]
    HeaderBlockTooLarge,
    /// A frame other than CONTINUATION on the same stream interrupted a header block.
    #[error("HTTP/2 protocol error: header block interrupted by a frame of type {0:#x}")]
    InterruptedHeaderBlock(u8),
    /// A CONTINUATION frame with no header block open.
    #[error("HTTP/2 protocol error: CONTINUATION without HEADERS")]
    StrayContinuation,
    /// Padding or priority fields longer than the frame.
    #[error("HTTP/2 protocol error: malformed HEADERS frame")]
    MalformedHeaders,
    /// The HPACK block does not decode.
    #[error("HPACK decoding failed: {0}")]
    Hpack(String),
}

/// The frame being read.
#[derive(Debug)]
enum State {
    /// Matching the connection preface; `0..n` bytes of it seen.
    Preface(usize),
    /// Forward everything: not HTTP/2 with prior knowledge, or a first header block with
    /// a valid authority was forwarded unchanged.
    Passthrough,
    /// Reading a 9-byte frame header.
    Header {
        buf: [u8; FRAME_HEADER_LEN],
        have: usize,
    },
    /// Forwarding the payload of a frame that is not part of a header block.
    Forward(usize),
    /// Collecting the payload of a HEADERS or CONTINUATION frame.
    Collect {
        frame: FrameHeader,
        payload: Vec<u8>,
    },
}

#[derive(Debug, Clone, Copy)]
struct FrameHeader {
    len: usize,
    kind: u8,
    flags: u8,
    stream: u32,
}

impl FrameHeader {
    fn parse(b: &[u8; FRAME_HEADER_LEN]) -> Self {
        Self {
            len: usize::from(b[0]) << 16 | usize::from(b[1]) << 8 | usize::from(b[2]),
            kind: b[3],
            flags: b[4],
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff,
        }
    }

    fn write(out: &mut Vec<u8>, len: usize, kind: u8, flags: u8, stream: u32) {
        out.extend_from_slice(&(len as u32).to_be_bytes()[1..]);
        out.extend_from_slice(&[kind, flags]);
        out.extend_from_slice(&stream.to_be_bytes());
    }
}

/// A header block being assembled from HEADERS and CONTINUATION fragments.
#[derive(Debug)]
struct OpenBlock {
    stream: u32,
    end_stream: bool,
    priority: Option<[u8; 5]>,
    fragments: Vec<u8>,
    /// The frames as received, forwarded unchanged when no rewrite is needed.
    raw: Vec<u8>,
}

/// Rewrites invalid `:authority` values in the client-to-server bytes of one connection.
/// Feed it what was read; take what the server may read from [`AuthorityRewriter::output`].
pub struct AuthorityRewriter {
    state: State,
    decoder: HpackDecoder,
    block: Option<OpenBlock>,
    /// True once a block was re-encoded: every later block is re-encoded too.
    reencode: bool,
    rewritten: u64,
    out: Vec<u8>,
    /// The current block re-encoded with literals (a field only to keep its allocation).
    encoded: Vec<u8>,
}

impl std::fmt::Debug for AuthorityRewriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthorityRewriter")
            .field("state", &self.state)
            .field("reencode", &self.reencode)
            .field("rewritten", &self.rewritten)
            .finish_non_exhaustive()
    }
}

impl Default for AuthorityRewriter {
    fn default() -> Self {
        Self::new()
    }
}

impl AuthorityRewriter {
    /// A rewriter at the start of a connection.
    pub fn new() -> Self {
        Self {
            state: State::Preface(0),
            decoder: HpackDecoder::new(),
            block: None,
            reencode: false,
            rewritten: 0,
            out: Vec::new(),
            encoded: Vec::new(),
        }
    }

    /// How many header blocks had their `:authority` replaced so far.
    pub fn rewritten(&self) -> u64 {
        self.rewritten
    }

    /// True once everything is forwarded as it comes (see [`State::Passthrough`]): a reader
    /// may then skip [`Self::feed`] once [`Self::output`] is drained.
    pub fn is_passthrough(&self) -> bool {
        matches!(self.state, State::Passthrough)
    }

    /// Bytes ready for the server; drain what was consumed.
    pub fn output(&mut self) -> &mut Vec<u8> {
        &mut self.out
    }

    /// Consumes bytes read from the client.
    pub fn feed(&mut self, mut input: &[u8]) -> Result<(), RewriteError> {
        while !input.is_empty() {
            let used = self.step(input)?;
            input = &input[used..];
        }
        Ok(())
    }

    /// Advances the state machine over a prefix of `input`; returns how much it used.
    fn step(&mut self, input: &[u8]) -> Result<usize, RewriteError> {
        match &mut self.state {
            State::Passthrough => {
                self.out.extend_from_slice(input);
                Ok(input.len())
            }
            State::Preface(seen) => {
                let want = &PREFACE[*seen..];
                let n = want.len().min(input.len());
                if input[..n] != want[..n] {
                    // Not HTTP/2 prior knowledge: give back what was held, forward the rest.
                    self.out.extend_from_slice(&PREFACE[..*seen]);
                    self.state = State::Passthrough;
                    return Ok(0);
                }
                *seen += n;
                if *seen == PREFACE.len() {
                    self.out.extend_from_slice(PREFACE);
                    self.state = State::Header {
                        buf: [0; FRAME_HEADER_LEN],
                        have: 0,
                    };
                }
                Ok(n)
            }
            State::Header { buf, have } => {
                let n = (FRAME_HEADER_LEN - *have).min(input.len());
                buf[*have..*have + n].copy_from_slice(&input[..n]);
                *have += n;
                if *have == FRAME_HEADER_LEN {
                    let raw = *buf;
                    self.begin_frame(raw)?;
                }
                Ok(n)
            }
            State::Forward(left) => {
                let n = (*left).min(input.len());
                self.out.extend_from_slice(&input[..n]);
                *left -= n;
                if *left == 0 {
                    self.expect_header();
                }
                Ok(n)
            }
            State::Collect { frame, payload } => {
                let n = (frame.len - payload.len()).min(input.len());
                payload.extend_from_slice(&input[..n]);
                if payload.len() == frame.len {
                    let (frame, payload) = (*frame, std::mem::take(payload));
                    self.expect_header();
                    self.end_frame(frame, payload)?;
                }
                Ok(n)
            }
        }
    }

    fn expect_header(&mut self) {
        self.state = State::Header {
            buf: [0; FRAME_HEADER_LEN],
            have: 0,
        };
    }

    /// A frame header is complete: decide whether its payload is forwarded or collected.
    fn begin_frame(&mut self, raw: [u8; FRAME_HEADER_LEN]) -> Result<(), RewriteError> {
        let frame = FrameHeader::parse(&raw);
        let in_block = self.block.is_some();
        let header_frame = match frame.kind {
            TYPE_HEADERS if !in_block => true,
            TYPE_CONTINUATION if in_block => true,
            TYPE_CONTINUATION => return Err(RewriteError::StrayContinuation),
            other if in_block => return Err(RewriteError::InterruptedHeaderBlock(other)),
            _ => false,
        };
        if !header_frame {
            self.out.extend_from_slice(&raw);
            self.state = if frame.len == 0 {
                State::Header {
                    buf: [0; FRAME_HEADER_LEN],
                    have: 0,
                }
            } else {
                State::Forward(frame.len)
            };
            return Ok(());
        }
        let held = self.block.as_ref().map_or(0, |b| b.raw.len());
        if held + FRAME_HEADER_LEN + frame.len > MAX_HEADER_BLOCK {
            return Err(RewriteError::HeaderBlockTooLarge);
        }
        match &mut self.block {
            Some(b) if b.stream != frame.stream => {
                return Err(RewriteError::InterruptedHeaderBlock(frame.kind))
            }
            Some(b) => b.raw.extend_from_slice(&raw),
            None => {
                self.block = Some(OpenBlock {
                    stream: frame.stream,
                    end_stream: frame.flags & FLAG_END_STREAM != 0,
                    priority: None,
                    fragments: Vec::new(),
                    raw: raw.to_vec(),
                })
            }
        }
        let payload = Vec::with_capacity(frame.len);
        if frame.len == 0 {
            self.expect_header();
            return self.end_frame(frame, payload);
        }
        self.state = State::Collect { frame, payload };
        Ok(())
    }

    /// A HEADERS or CONTINUATION payload is complete.
    fn end_frame(&mut self, frame: FrameHeader, payload: Vec<u8>) -> Result<(), RewriteError> {
        let block = self.block.as_mut().expect("a header frame opens a block");
        block.raw.extend_from_slice(&payload);
        let fragment = if frame.kind == TYPE_HEADERS {
            let (priority, fragment) = split_headers_payload(frame.flags, &payload)?;
            block.priority = priority;
            fragment
        } else {
            &payload[..]
        };
        block.fragments.extend_from_slice(fragment);
        if frame.flags & FLAG_END_HEADERS != 0 {
            let block = self.block.take().expect("checked above");
            self.end_block(block)?;
        }
        Ok(())
    }

    /// A whole header block is in: decode it, then forward it or its rewrite.
    fn end_block(&mut self, block: OpenBlock) -> Result<(), RewriteError> {
        // Every field is re-encoded as it is decoded (a copy), so the block that first needs
        // the rewrite is not decoded twice (the decoder's table cannot be rewound).
        let encoded = &mut self.encoded;
        encoded.clear();
        let mut decoded = 0usize;
        let mut changed = false;
        let mut authority_kept = false;
        self.decoder
            .decode(&block.fragments, |name, value| {
                // Values left Huffman-coded count at their longest decoding.
                decoded += name.len() + value.max_len() + 32;
                if decoded > MAX_HEADER_BLOCK {
                    return;
                }
                match value {
                    Value::Decoded(v) if name == b":authority" && !valid_authority(v) => {
                        tracing::debug!(
                            authority = %String::from_utf8_lossy(v),
                            "HTTP/2 :authority is not a URI authority; serving it as {REPLACEMENT}"
                        );
                        encode_literal(encoded, name, Value::Decoded(REPLACEMENT.as_bytes()));
                        changed = true;
                    }
                    value => {
                        authority_kept |= name == b":authority";
                        encode_literal(encoded, name, value);
                    }
                }
            })
            .map_err(|e| RewriteError::Hpack(e.to_string()))?;
        if decoded > MAX_HEADER_BLOCK {
            return Err(RewriteError::HeaderBlockTooLarge);
        }
        if changed {
            self.rewritten += 1;
            self.reencode = true;
        }
        if self.reencode {
            emit_block(&mut self.out, &block, &self.encoded);
        } else {
            self.out.extend_from_slice(&block.raw);
            if authority_kept {
                // The server's table mirrors the client's and stays so: nothing more to do
                // (see the module docs). The decoder's table and buffers are freed.
                self.state = State::Passthrough;
                self.decoder = HpackDecoder::new();
                self.encoded = Vec::new();
            }
        }
        Ok(())
    }
}

/// Writes a re-encoded block as one HEADERS frame and as many CONTINUATION frames as
/// [`MAX_EMIT_FRAME`] requires.
fn emit_block(out: &mut Vec<u8>, block: &OpenBlock, encoded: &[u8]) {
    let prio_len = block.priority.map_or(0, |p| p.len());
    let first = encoded.len().min(MAX_EMIT_FRAME - prio_len);
    let mut flags = if block.end_stream { FLAG_END_STREAM } else { 0 };
    if block.priority.is_some() {
        flags |= FLAG_PRIORITY;
    }
    if first == encoded.len() {
        flags |= FLAG_END_HEADERS;
    }
    FrameHeader::write(out, prio_len + first, TYPE_HEADERS, flags, block.stream);
    if let Some(p) = block.priority {
        out.extend_from_slice(&p);
    }
    out.extend_from_slice(&encoded[..first]);
    let mut rest = &encoded[first..];
    while !rest.is_empty() {
        let n = rest.len().min(MAX_EMIT_FRAME);
        let flags = if n == rest.len() { FLAG_END_HEADERS } else { 0 };
        FrameHeader::write(out, n, TYPE_CONTINUATION, flags, block.stream);
        out.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
    }
}

/// Splits a HEADERS payload into its priority fields and its header block fragment,
/// dropping padding (RFC 9113 6.2).
fn split_headers_payload(
    flags: u8,
    payload: &[u8],
) -> Result<(Option<[u8; 5]>, &[u8]), RewriteError> {
    let mut body = payload;
    if flags & FLAG_PADDED != 0 {
        let (&pad, rest) = body.split_first().ok_or(RewriteError::MalformedHeaders)?;
        let keep = rest
            .len()
            .checked_sub(usize::from(pad))
            .ok_or(RewriteError::MalformedHeaders)?;
        body = &rest[..keep];
    }
    let mut priority = None;
    if flags & FLAG_PRIORITY != 0 {
        if body.len() < 5 {
            return Err(RewriteError::MalformedHeaders);
        }
        let mut p = [0u8; 5];
        p.copy_from_slice(&body[..5]);
        priority = Some(p);
        body = &body[5..];
    }
    Ok((priority, body))
}

/// Whether h2 accepts `value` as `:authority` (it parses it as a URI authority).
fn valid_authority(value: &[u8]) -> bool {
    http::uri::Authority::try_from(value).is_ok()
}

/// Appends a "literal header field without indexing, new name" (RFC 7541 6.2.2): it neither
/// reads nor changes the receiver's dynamic table. The name and a decoded value are written
/// plain, a value left Huffman-coded keeps its code.
fn encode_literal(out: &mut Vec<u8>, name: &[u8], value: Value<'_>) {
    out.push(0x00);
    encode_integer(out, name.len(), 7, 0x00);
    out.extend_from_slice(name);
    let (h, bytes) = match value {
        Value::Decoded(v) => (0x00, v),
        Value::Huffman(code) => (0x80, code),
    };
    encode_integer(out, bytes.len(), 7, h);
    out.extend_from_slice(bytes);
}

/// Appends an HPACK integer with an `n`-bit prefix (RFC 7541 5.1); `first` carries the
/// bits above the prefix.
pub(super) fn encode_integer(out: &mut Vec<u8>, mut value: usize, prefix_bits: u8, first: u8) {
    let max = (1usize << prefix_bits) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    value -= max;
    while value >= 0x80 {
        out.push((value & 0x7f) as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

#[cfg(test)]
#[path = "rewriter_tests.rs"]
mod tests;
