//! The decoding half of HPACK (RFC 7541) that the `:authority` rewriter needs: header blocks
//! in, `(name, value)` pairs out, the dynamic table kept in step with the client's encoder.
//!
//! Why not a general HPACK crate: the rewriter decodes every request's header block on the
//! hot path of every unix/vsock RPC. `loona-hpack` (used before) rebuilds a Huffman lookup
//! map for every Huffman-coded string, which was ~40 % of the agent's CPU per Ping
//! (BENCHMARKS.md, Footprint); `httlib-hpack` drains its input vector field by field
//! (quadratic in the block size). h2's own decoder is private. Huffman decoding itself comes
//! from `httlib-huffman` (flattened tables, no allocation per string).
//!
//! Decoded bytes are handed out as borrowed slices into a scratch buffer the decoder reuses,
//! so a block allocates nothing once the connection is warm. Values the rewriter never
//! looks at are not decoded at all: a literal that does not enter the dynamic table and is
//! not `:authority` comes out as [`Value::Huffman`], its bytes as sent (clients send `:path`
//! like that on every request). Such a value's Huffman code is then checked only by h2.

use std::collections::VecDeque;

use httlib_huffman::DecoderSpeed;

/// The dynamic table size the server announces (h2's default SETTINGS_HEADER_TABLE_SIZE,
/// which tonic does not change): a size update above it is a decoding error.
pub const MAX_TABLE_SIZE: usize = 4096;

/// Per-entry overhead in the table size (RFC 7541 4.1).
const ENTRY_OVERHEAD: usize = 32;

/// Why a header block does not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HpackError {
    /// The block ends inside a representation.
    #[error("header block truncated")]
    Truncated,
    /// An integer longer than the decoder accepts.
    #[error("integer overflow")]
    IntegerOverflow,
    /// Index 0, or past the end of the static and dynamic tables.
    #[error("invalid table index {0}")]
    InvalidIndex(usize),
    /// A Huffman-coded string with an invalid code or padding.
    #[error("invalid Huffman code")]
    Huffman,
    /// A dynamic table size update above [`MAX_TABLE_SIZE`] or after the first field.
    #[error("invalid dynamic table size update")]
    SizeUpdate,
}

/// A header value as [`HpackDecoder::decode`] hands it out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value<'a> {
    /// The value itself.
    Decoded(&'a [u8]),
    /// The value's Huffman code as the block carries it (RFC 7541 5.2), not decoded: only
    /// for literals that neither enter the dynamic table nor are `:authority`.
    Huffman(&'a [u8]),
}

impl Value<'_> {
    /// An upper bound of the decoded length: Huffman codes are at least 5 bits long.
    pub fn max_len(&self) -> usize {
        match self {
            Value::Decoded(v) => v.len(),
            Value::Huffman(code) => code.len() * 8 / 5,
        }
    }
}

/// The name every rewrite is about.
const AUTHORITY: &[u8] = b":authority";

/// A dynamic table entry: name and value.
type Entry = (Box<[u8]>, Box<[u8]>);

/// An HPACK decoder for one connection's client-to-server header blocks.
#[derive(Debug)]
pub struct HpackDecoder {
    /// Newest entry first (index 62 of the address space).
    dynamic: VecDeque<Entry>,
    size: usize,
    max_size: usize,
    /// Decoded strings of the block being decoded.
    scratch: Vec<u8>,
}

impl Default for HpackDecoder {
    fn default() -> Self {
        Self::new()
    }
}

/// Where a decoded name or value lives while a field is assembled.
#[derive(Clone, Copy)]
enum Str {
    /// `len` bytes at `start` of the scratch buffer.
    Scratch { start: usize, len: usize },
    /// An entry of the static table.
    Static(&'static [u8]),
    /// Name or value of dynamic entry `i` (0 = newest).
    Dynamic { i: usize, name: bool },
}

impl HpackDecoder {
    /// A decoder at the start of a connection (empty dynamic table of 4096 bytes).
    pub fn new() -> Self {
        Self {
            dynamic: VecDeque::new(),
            size: 0,
            max_size: MAX_TABLE_SIZE,
            scratch: Vec::new(),
        }
    }

    /// Decodes one complete header block, calling `field(name, value)` for each header in
    /// order (see [`Value`] for which values stay Huffman-coded). On error the dynamic table
    /// may be part-updated: the connection must be closed.
    pub fn decode(
        &mut self,
        mut block: &[u8],
        mut field: impl FnMut(&[u8], Value<'_>),
    ) -> Result<(), HpackError> {
        let mut first = true;
        while let Some(&b) = block.first() {
            self.scratch.clear();
            if b & 0x80 != 0 {
                // Indexed header field (6.1).
                let index = integer(&mut block, 7)?;
                let (name, value) = self.entry(index)?;
                let (name, value) = (self.resolve(name), self.resolve(value));
                field(name, Value::Decoded(value));
            } else if b & 0xe0 == 0x20 {
                // Dynamic table size update (6.3): only at the start of a block.
                let size = integer(&mut block, 5)?;
                if !first || size > MAX_TABLE_SIZE {
                    return Err(HpackError::SizeUpdate);
                }
                self.max_size = size;
                self.evict(0);
                continue;
            } else {
                // Literal with incremental indexing (6.2.1): 6-bit prefix; without
                // indexing (6.2.2) or never indexed (6.2.3): 4-bit prefix.
                let indexing = b & 0x40 != 0;
                let index = integer(&mut block, if indexing { 6 } else { 4 })?;
                let name = if index == 0 {
                    self.string(&mut block)?
                } else {
                    self.entry(index)?.0
                };
                if indexing {
                    let value = self.string(&mut block)?;
                    let entry: Entry = (self.resolve(name).into(), self.resolve(value).into());
                    field(&entry.0, Value::Decoded(&entry.1));
                    self.insert(entry);
                } else if self.resolve(name) == AUTHORITY {
                    let value = self.string(&mut block)?;
                    field(self.resolve(name), Value::Decoded(self.resolve(value)));
                } else {
                    let (huffman, raw) = string_raw(&mut block)?;
                    let value = if huffman {
                        Value::Huffman(raw)
                    } else {
                        Value::Decoded(raw)
                    };
                    field(self.resolve(name), value);
                }
            }
            first = false;
        }
        Ok(())
    }

    /// The name and value at `index` of the combined address space (2.3.3).
    fn entry(&self, index: usize) -> Result<(Str, Str), HpackError> {
        match index {
            0 => Err(HpackError::InvalidIndex(0)),
            i if i <= STATIC_TABLE.len() => {
                let (n, v) = STATIC_TABLE[i - 1];
                Ok((Str::Static(n.as_bytes()), Str::Static(v.as_bytes())))
            }
            i => {
                let d = i - STATIC_TABLE.len() - 1;
                if d >= self.dynamic.len() {
                    return Err(HpackError::InvalidIndex(i));
                }
                Ok((
                    Str::Dynamic { i: d, name: true },
                    Str::Dynamic { i: d, name: false },
                ))
            }
        }
    }

    fn resolve(&self, s: Str) -> &[u8] {
        match s {
            Str::Scratch { start, len } => &self.scratch[start..start + len],
            Str::Static(b) => b,
            Str::Dynamic { i, name: true } => &self.dynamic[i].0,
            Str::Dynamic { i, name: false } => &self.dynamic[i].1,
        }
    }

    /// Reads a string literal (5.2) into the scratch buffer.
    fn string(&mut self, block: &mut &[u8]) -> Result<Str, HpackError> {
        let (huffman, raw) = string_raw(block)?;
        let start = self.scratch.len();
        if huffman {
            httlib_huffman::decode(raw, &mut self.scratch, DecoderSpeed::FourBits)
                .map_err(|_| HpackError::Huffman)?;
        } else {
            self.scratch.extend_from_slice(raw);
        }
        Ok(Str::Scratch {
            start,
            len: self.scratch.len() - start,
        })
    }

    /// Adds an entry (4.4): older entries are evicted to make room; an entry larger than
    /// the whole table empties it and is not added.
    fn insert(&mut self, entry: Entry) {
        let size = entry.0.len() + entry.1.len() + ENTRY_OVERHEAD;
        self.evict(size);
        if size <= self.max_size {
            self.size += size;
            self.dynamic.push_front(entry);
        }
    }

    /// Evicts the oldest entries until `room` more bytes fit (or the table is empty).
    fn evict(&mut self, room: usize) {
        while self.size + room > self.max_size {
            let Some((n, v)) = self.dynamic.pop_back() else {
                break;
            };
            self.size -= n.len() + v.len() + ENTRY_OVERHEAD;
        }
    }

    /// The dynamic table's size in the RFC's accounting.
    #[cfg(test)]
    pub(crate) fn table_size(&self) -> usize {
        self.size
    }
}

/// Reads a string literal (5.2) as it is coded: whether it is Huffman-coded, and its bytes.
fn string_raw<'a>(block: &mut &'a [u8]) -> Result<(bool, &'a [u8]), HpackError> {
    let huffman = block.first().ok_or(HpackError::Truncated)? & 0x80 != 0;
    let len = integer(block, 7)?;
    if len > block.len() {
        return Err(HpackError::Truncated);
    }
    let (raw, rest) = block.split_at(len);
    *block = rest;
    Ok((huffman, raw))
}

/// Reads an integer with an `n`-bit prefix (5.1). Values above 2^28 are refused (no header
/// block the rewriter accepts needs more).
fn integer(block: &mut &[u8], n: u8) -> Result<usize, HpackError> {
    let (&first, mut rest) = block.split_first().ok_or(HpackError::Truncated)?;
    let max = (1usize << n) - 1;
    let mut value = usize::from(first) & max;
    if value == max {
        let mut shift = 0u32;
        loop {
            let (&b, r) = rest.split_first().ok_or(HpackError::Truncated)?;
            rest = r;
            value += usize::from(b & 0x7f) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                break;
            }
            if shift > 21 {
                return Err(HpackError::IntegerOverflow);
            }
        }
    }
    *block = rest;
    Ok(value)
}

/// RFC 7541 Appendix A.
const STATIC_TABLE: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

#[cfg(test)]
#[path = "hpack_tests.rs"]
mod tests;
