use super::*;

type Headers = Vec<(Vec<u8>, Vec<u8>)>;

fn decode(d: &mut HpackDecoder, block: &[u8]) -> Result<Headers, HpackError> {
    let mut out = Vec::new();
    d.decode(block, |n, v| out.push((n.to_vec(), v.to_vec())))?;
    Ok(out)
}

fn headers(list: &[(&str, &str)]) -> Headers {
    list.iter()
        .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect()
}

/// RFC 7541 C.4: three requests on one connection, Huffman-coded, the dynamic table growing
/// to 57, 110 and 164 bytes.
#[test]
fn decodes_the_rfc_huffman_request_sequence() {
    let mut d = HpackDecoder::new();
    let first = [
        0x82, 0x86, 0x84, 0x41, 0x8c, 0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab, 0x90,
        0xf4, 0xff,
    ];
    assert_eq!(
        decode(&mut d, &first).unwrap(),
        headers(&[
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/"),
            (":authority", "www.example.com"),
        ])
    );
    assert_eq!(d.table_size(), 57);
    let second = [
        0x82, 0x86, 0x84, 0xbe, 0x58, 0x86, 0xa8, 0xeb, 0x10, 0x64, 0x9c, 0xbf,
    ];
    assert_eq!(
        decode(&mut d, &second).unwrap(),
        headers(&[
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/"),
            (":authority", "www.example.com"),
            ("cache-control", "no-cache"),
        ])
    );
    assert_eq!(d.table_size(), 110);
    let third = [
        0x82, 0x87, 0x85, 0xbf, 0x40, 0x88, 0x25, 0xa8, 0x49, 0xe9, 0x5b, 0xa9, 0x7d, 0x7f, 0x89,
        0x25, 0xa8, 0x49, 0xe9, 0x5b, 0xb8, 0xe8, 0xb4, 0xbf,
    ];
    assert_eq!(
        decode(&mut d, &third).unwrap(),
        headers(&[
            (":method", "GET"),
            (":scheme", "https"),
            (":path", "/index.html"),
            (":authority", "www.example.com"),
            ("custom-key", "custom-value"),
        ])
    );
    assert_eq!(d.table_size(), 164);
}

/// A small xorshift generator: the differential test needs no crate for randomness.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> usize {
        (self.next() % n) as usize
    }
    fn bytes(&mut self, max: u64) -> Vec<u8> {
        let len = self.below(max);
        // Printable ASCII mostly, some arbitrary bytes (HPACK carries any octet).
        (0..len)
            .map(|_| {
                if self.below(8) == 0 {
                    self.next() as u8
                } else {
                    b' ' + self.below(95) as u8
                }
            })
            .collect()
    }
}

fn put_integer(out: &mut Vec<u8>, value: usize, prefix: u8, first: u8) {
    crate::authority::rewriter::encode_integer(out, value, prefix, first);
}

fn put_string(out: &mut Vec<u8>, s: &[u8], huffman: bool) {
    if huffman {
        let mut coded = Vec::new();
        httlib_huffman::encode(s, &mut coded).unwrap();
        put_integer(out, coded.len(), 7, 0x80);
        out.extend_from_slice(&coded);
    } else {
        put_integer(out, s.len(), 7, 0x00);
        out.extend_from_slice(s);
    }
}

/// One random block using every representation: indexed (static and dynamic), literals
/// with incremental indexing, without indexing and never indexed (indexed and new names,
/// Huffman and plain), and at the start sometimes a table size update.
fn random_block(rng: &mut Rng, entries: &mut usize) -> Vec<u8> {
    let mut out = Vec::new();
    if rng.below(6) == 0 {
        let size = [0, 64, 256, 1024, 4096][rng.below(5)];
        put_integer(&mut out, size, 5, 0x20);
        if size < 256 {
            *entries = 0;
        }
    }
    for _ in 0..1 + rng.below(12) {
        let index_space = STATIC_TABLE.len() + *entries;
        match rng.below(5) {
            0 => put_integer(&mut out, 1 + rng.below(index_space as u64), 7, 0x80),
            kind => {
                let (prefix, first) = match kind {
                    1 | 2 => (6, 0x40),
                    3 => (4, 0x00),
                    _ => (4, 0x10),
                };
                if rng.below(2) == 0 {
                    put_integer(&mut out, 1 + rng.below(index_space as u64), prefix, first);
                } else {
                    put_integer(&mut out, 0, prefix, first);
                    let name = rng.bytes(24);
                    put_string(&mut out, &name, rng.below(2) == 0);
                }
                let value = rng.bytes(300);
                put_string(&mut out, &value, rng.below(2) == 0);
                if first == 0x40 {
                    *entries += 1;
                }
            }
        }
    }
    out
}

/// Against loona-hpack (the decoder used before) on random connections: the same headers,
/// block after block, while entries are added, evicted and the table is resized. Only
/// blocks loona accepts count: an index into entries loona evicted is an error in both.
#[test]
fn agrees_with_loona_hpack_on_random_connections() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut blocks = 0;
    for _ in 0..200 {
        let mut ours = HpackDecoder::new();
        let mut reference = loona_hpack::Decoder::new();
        let mut entries = 0usize;
        for _ in 0..30 {
            let block = random_block(&mut rng, &mut entries);
            let expected = reference.decode(&block);
            let got = decode(&mut ours, &block);
            match expected {
                Ok(list) => {
                    assert_eq!(got.as_ref(), Ok(&list), "block {block:02x?}");
                    blocks += 1;
                }
                Err(_) => {
                    assert!(got.is_err(), "loona refused {block:02x?}, we gave {got:?}");
                    break; // a connection error: the connection ends
                }
            }
        }
    }
    assert!(blocks > 1000, "only {blocks} blocks decoded");
}

#[test]
fn entries_evict_oldest_first_and_oversized_ones_empty_the_table() {
    let mut d = HpackDecoder::new();
    let mut block = Vec::new();
    put_integer(&mut block, 100, 5, 0x20); // table of 100 bytes
    for (n, v) in [("a", "1111111111"), ("b", "2222222222")] {
        put_integer(&mut block, 0, 6, 0x40);
        put_string(&mut block, n.as_bytes(), false);
        put_string(&mut block, v.as_bytes(), true);
    }
    decode(&mut d, &block).unwrap();
    // 43 + 43 > 100? no: 86 fits; both present, newest first.
    assert_eq!(d.table_size(), 86);
    assert_eq!(
        decode(&mut d, &[0x80 | 62, 0x80 | 63]).unwrap(),
        headers(&[("b", "2222222222"), ("a", "1111111111")])
    );
    // A third entry evicts "a".
    let mut third = Vec::new();
    put_integer(&mut third, 0, 6, 0x40);
    put_string(&mut third, b"c", false);
    put_string(&mut third, b"3333333333", false);
    decode(&mut d, &third).unwrap();
    assert_eq!(d.table_size(), 86);
    assert_eq!(
        decode(&mut d, &[0x80 | 63]).unwrap(),
        headers(&[("b", "2222222222")])
    );
    assert_eq!(
        decode(&mut d, &[0x80 | 64]),
        Err(HpackError::InvalidIndex(64))
    );
    // An entry larger than the table empties it and is still a header of this block.
    let mut big = Vec::new();
    put_integer(&mut big, 0, 6, 0x40);
    put_string(&mut big, b"big", false);
    put_string(&mut big, &[b'x'; 80], false);
    assert_eq!(decode(&mut d, &big).unwrap().len(), 1);
    assert_eq!(d.table_size(), 0);
    assert_eq!(
        decode(&mut d, &[0x80 | 62]),
        Err(HpackError::InvalidIndex(62))
    );
}

#[test]
fn malformed_blocks_are_errors() {
    let mut d = HpackDecoder::new();
    assert_eq!(decode(&mut d, &[0x80]), Err(HpackError::InvalidIndex(0)));
    assert_eq!(
        decode(&mut d, &[0x80 | 62]),
        Err(HpackError::InvalidIndex(62))
    );
    // Literal, new name, name length 5 but 2 bytes follow.
    assert_eq!(
        decode(&mut d, &[0x40, 0x05, b'a', b'b']),
        Err(HpackError::Truncated)
    );
    // Integer continuation that never ends, and one too long.
    assert_eq!(decode(&mut d, &[0xff, 0xff]), Err(HpackError::Truncated));
    assert_eq!(
        decode(&mut d, &[0xff, 0xff, 0xff, 0xff, 0xff, 0x01]),
        Err(HpackError::IntegerOverflow)
    );
    // Size update above 4096, and one after a field.
    let mut up = Vec::new();
    put_integer(&mut up, 4097, 5, 0x20);
    assert_eq!(decode(&mut d, &up), Err(HpackError::SizeUpdate));
    assert_eq!(decode(&mut d, &[0x82, 0x20]), Err(HpackError::SizeUpdate));
    // A Huffman-coded value holding the EOS symbol (30 one bits).
    assert_eq!(
        decode(&mut d, &[0x00, 0x01, b'a', 0x84, 0xff, 0xff, 0xff, 0xff]),
        Err(HpackError::Huffman)
    );
}

#[test]
fn the_static_table_matches_the_rfc_at_its_edges() {
    assert_eq!(STATIC_TABLE[0], (":authority", ""));
    assert_eq!(STATIC_TABLE[15], ("accept-encoding", "gzip, deflate"));
    assert_eq!(STATIC_TABLE[30], ("content-type", ""));
    assert_eq!(STATIC_TABLE[57], ("user-agent", ""));
    assert_eq!(STATIC_TABLE[60], ("www-authenticate", ""));
}
