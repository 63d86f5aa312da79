use super::*;

type Headers = Vec<(Vec<u8>, Vec<u8>)>;

/// Decodes a block to its headers, also decoding the values the decoder left coded (a
/// bad code in one of those is reported as h2 would: [`HpackError::Huffman`]).
fn decode(d: &mut HpackDecoder, block: &[u8]) -> Result<Headers, HpackError> {
    let mut out = Vec::new();
    let mut bad_code = false;
    d.decode(block, |n, v| {
        let value = match v {
            Value::Decoded(v) => v.to_vec(),
            Value::Huffman(code) => {
                let mut plain = Vec::new();
                bad_code |=
                    httlib_huffman::decode(code, &mut plain, DecoderSpeed::FourBits).is_err();
                plain
            }
        };
        out.push((n.to_vec(), value))
    })?;
    if bad_code {
        return Err(HpackError::Huffman);
    }
    Ok(out)
}

fn headers(list: &[(&str, &str)]) -> Headers {
    list.iter()
        .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect()
}

/// A header block, the headers it decodes to and the dynamic table size after it.
type Step = (&'static [u8], Vec<(&'static str, &'static str)>, usize);

/// RFC 7541 C.4: three requests on one connection, Huffman-coded: the headers of each and
/// the dynamic table growing to 57, 110 and 164 bytes.
#[test]
fn decodes_the_rfc_huffman_request_sequence() {
    let authority = (":authority", "www.example.com");
    let steps: [Step; 3] = [
        (
            &[
                0x82, 0x86, 0x84, 0x41, 0x8c, 0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab,
                0x90, 0xf4, 0xff,
            ],
            vec![
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                authority,
            ],
            57,
        ),
        (
            &[
                0x82, 0x86, 0x84, 0xbe, 0x58, 0x86, 0xa8, 0xeb, 0x10, 0x64, 0x9c, 0xbf,
            ],
            vec![
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                authority,
                ("cache-control", "no-cache"),
            ],
            110,
        ),
        (
            &[
                0x82, 0x87, 0x85, 0xbf, 0x40, 0x88, 0x25, 0xa8, 0x49, 0xe9, 0x5b, 0xa9, 0x7d, 0x7f,
                0x89, 0x25, 0xa8, 0x49, 0xe9, 0x5b, 0xb8, 0xe8, 0xb4, 0xbf,
            ],
            vec![
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/index.html"),
                authority,
                ("custom-key", "custom-value"),
            ],
            164,
        ),
    ];
    let mut d = HpackDecoder::new();
    for (i, (block, expected, table_size)) in steps.iter().enumerate() {
        assert_eq!(
            decode(&mut d, block).unwrap(),
            headers(expected),
            "request {i}"
        );
        assert_eq!(d.table_size(), *table_size, "request {i}");
    }
}

/// Random bytes: printable ASCII mostly, some arbitrary octets (HPACK carries any).
fn random_bytes(rng: &mut fastrand::Rng, max: usize) -> Vec<u8> {
    (0..rng.usize(..max))
        .map(|_| {
            if rng.u8(..8) == 0 {
                rng.u8(..)
            } else {
                rng.u8(b' '..=b'~')
            }
        })
        .collect()
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
fn random_block(rng: &mut fastrand::Rng, entries: &mut usize) -> Vec<u8> {
    let mut out = Vec::new();
    if rng.usize(..6) == 0 {
        let size = [0, 64, 256, 1024, 4096][rng.usize(..5)];
        put_integer(&mut out, size, 5, 0x20);
        if size < 256 {
            *entries = 0;
        }
    }
    for _ in 0..1 + rng.usize(..12) {
        let index_space = STATIC_TABLE.len() + *entries;
        match rng.usize(..5) {
            0 => put_integer(&mut out, 1 + rng.usize(..index_space), 7, 0x80),
            kind => {
                let (prefix, first) = match kind {
                    1 | 2 => (6, 0x40),
                    3 => (4, 0x00),
                    _ => (4, 0x10),
                };
                if rng.bool() {
                    put_integer(&mut out, 1 + rng.usize(..index_space), prefix, first);
                } else {
                    put_integer(&mut out, 0, prefix, first);
                    let name = random_bytes(rng, 24);
                    put_string(&mut out, &name, rng.bool());
                }
                let value = random_bytes(rng, 300);
                put_string(&mut out, &value, rng.bool());
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
    let mut rng = fastrand::Rng::with_seed(0x9e37_79b9_7f4a_7c15);
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
    // A Huffman-coded value holding the EOS symbol (30 one bits), entering the table.
    assert_eq!(
        d.decode(&[0x40, 0x01, b'a', 0x84, 0xff, 0xff, 0xff, 0xff], |_, _| {}),
        Err(HpackError::Huffman)
    );
}

/// Only values that enter the table or are `:authority` are decoded; other literals come
/// out as their code, so a Ping's `:path` costs no Huffman decoding.
#[test]
fn only_indexed_and_authority_values_are_decoded() {
    let mut coded = Vec::new();
    httlib_huffman::encode(b"/boxlite.v1.Guest/Ping", &mut coded).unwrap();
    let mut block = vec![0x04]; // without indexing, name :path (static 4)
    put_integer(&mut block, coded.len(), 7, 0x80);
    block.extend_from_slice(&coded);
    block.push(0x01); // without indexing, name :authority (static 1)
    put_string(&mut block, b"%2Frun%2Fagent.sock", true);
    block.push(0x40 | 0x3a); // incremental indexing, name user-agent (static 58)
    put_string(&mut block, b"grpc-python/1.0", true);
    let mut got = Vec::new();
    HpackDecoder::new()
        .decode(&block, |n, v| {
            got.push((n.to_vec(), v.max_len(), matches!(v, Value::Huffman(_))))
        })
        .unwrap();
    assert_eq!(
        got,
        [
            (b":path".to_vec(), coded.len() * 8 / 5, true),
            (b":authority".to_vec(), 19, false),
            (b"user-agent".to_vec(), 15, false),
        ]
    );
    // An invalid code in a value left coded is h2's to find: it decodes every value.
    let mut d = HpackDecoder::new();
    assert_eq!(
        d.decode(&[0x00, 0x01, b'a', 0x84, 0xff, 0xff, 0xff, 0xff], |_, _| {}),
        Ok(())
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
