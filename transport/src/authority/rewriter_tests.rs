use super::*;
use loona_hpack::{Decoder, Encoder};

const SOCKET_AUTHORITY: &[u8] = b"%2Fvar%2Ftmp%2Fagent.sock";

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    FrameHeader::write(&mut out, payload.len(), kind, flags, stream);
    out.extend_from_slice(payload);
    out
}

fn request_headers(authority: &[u8]) -> Vec<(&'static [u8], Vec<u8>)> {
    vec![
        (b":method", b"POST".to_vec()),
        (b":scheme", b"http".to_vec()),
        (b":path", b"/boxlite.v1.Guest/Ping".to_vec()),
        (b":authority", authority.to_vec()),
        (b"content-type", b"application/grpc".to_vec()),
        (b"te", b"trailers".to_vec()),
    ]
}

fn encode(enc: &mut Encoder<'static>, headers: &[(&'static [u8], Vec<u8>)]) -> Vec<u8> {
    enc.encode(headers.iter().map(|(n, v)| (*n, v.as_slice())))
}

/// Runs `input` through a rewriter, fed in chunks of `chunk` bytes.
fn rewrite(input: &[u8], chunk: usize) -> Result<Vec<u8>, RewriteError> {
    let mut rw = AuthorityRewriter::new();
    for part in input.chunks(chunk) {
        rw.feed(part)?;
    }
    Ok(std::mem::take(rw.output()))
}

/// One decoded header list.
type Headers = Vec<(Vec<u8>, Vec<u8>)>;

/// A header block as the server decodes it: stream, HEADERS flags, headers.
type Block = (u32, u8, Headers);

/// What a server sees: the frames after the preface, header blocks decoded with one
/// decoder for the connection (as h2 does). Returns (stream, flags, headers) per block and
/// the non-header frames verbatim.
fn server_view(bytes: &[u8]) -> (Vec<Block>, Vec<Vec<u8>>) {
    assert_eq!(&bytes[..PREFACE.len()], PREFACE);
    let mut rest = &bytes[PREFACE.len()..];
    let mut dec = Decoder::new();
    let (mut blocks, mut others) = (Vec::new(), Vec::new());
    let mut open: Option<(u32, u8, Vec<u8>)> = None;
    while !rest.is_empty() {
        let h = FrameHeader::parse(rest[..9].try_into().unwrap());
        let payload = &rest[9..9 + h.len];
        assert!(h.len <= MAX_EMIT_FRAME, "frame of {} bytes", h.len);
        match h.kind {
            TYPE_HEADERS => {
                let (_, frag) = split_headers_payload(h.flags, payload).unwrap();
                open = Some((h.stream, h.flags, frag.to_vec()));
            }
            TYPE_CONTINUATION => open.as_mut().unwrap().2.extend_from_slice(payload),
            _ => others.push(rest[..9 + h.len].to_vec()),
        }
        if matches!(h.kind, TYPE_HEADERS | TYPE_CONTINUATION) && h.flags & FLAG_END_HEADERS != 0 {
            let (stream, flags, block) = open.take().unwrap();
            blocks.push((stream, flags, dec.decode(&block).unwrap()));
        }
        rest = &rest[9 + h.len..];
    }
    (blocks, others)
}

fn authority_of(headers: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    headers
        .iter()
        .find(|(n, _)| n == b":authority")
        .map(|(_, v)| v.clone())
        .unwrap()
}

/// A connection as grpc-core opens it: preface, SETTINGS, two requests whose second block
/// refers to the first's dynamic-table entries, a DATA frame each.
fn connection(authority: &[u8]) -> Vec<u8> {
    let mut enc = Encoder::new();
    let mut c = PREFACE.to_vec();
    c.extend(frame(0x4, 0, 0, &[0, 3, 0, 0, 0, 100]));
    for stream in [1, 3] {
        let block = encode(&mut enc, &request_headers(authority));
        c.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS, stream, &block));
        c.extend(frame(0x0, FLAG_END_STREAM, stream, &[0, 0, 0, 0, 0]));
    }
    c
}

#[test]
fn a_valid_authority_passes_through_byte_for_byte() {
    let input = connection(b"localhost:2695");
    for chunk in [1, 7, 9, 24, 1000] {
        assert_eq!(rewrite(&input, chunk).unwrap(), input, "chunk {chunk}");
    }
}

#[test]
fn after_a_first_valid_authority_the_connection_is_not_inspected() {
    // A valid first request settles the connection: a later invalid authority is forwarded
    // as sent (h2 then refuses that call, as on TCP), and so is anything that would have
    // been a protocol error for the rewriter; the output is the input, however it arrives.
    let mut enc = Encoder::new();
    let mut input = PREFACE.to_vec();
    let b1 = encode(&mut enc, &request_headers(b"localhost"));
    input.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, &b1));
    input.extend(frame(0x0, FLAG_END_STREAM, 1, &[0, 0, 0, 0, 0]));
    let b2 = encode(&mut enc, &request_headers(SOCKET_AUTHORITY));
    input.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS, 3, &b2));
    input.extend(frame(TYPE_CONTINUATION, FLAG_END_HEADERS, 3, &[0xff; 8]));
    for chunk in [1, 9, 50, 4096] {
        let mut rw = AuthorityRewriter::new();
        for part in input.chunks(chunk) {
            rw.feed(part).unwrap();
        }
        assert!(rw.is_passthrough(), "chunk {chunk}");
        assert_eq!(rw.rewritten(), 0);
        assert_eq!(*rw.output(), input, "chunk {chunk}");
    }
    // Settled exactly at the end of the first block: the frame after it is not inspected.
    let mut rw = AuthorityRewriter::new();
    rw.feed(&input[..PREFACE.len() + 9 + b1.len()]).unwrap();
    assert!(rw.is_passthrough());
}

#[test]
fn a_block_without_an_authority_or_with_a_rewritten_one_does_not_settle() {
    // No :authority (e.g. a request carrying only `host`): still inspected, so a later
    // socket-path authority is replaced.
    let mut enc = Encoder::new();
    let mut input = PREFACE.to_vec();
    let no_authority: Vec<_> = request_headers(b"")
        .into_iter()
        .filter(|(n, _)| *n != b":authority")
        .collect();
    let b1 = encode(&mut enc, &no_authority);
    input.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, &b1));
    let mut rw = AuthorityRewriter::new();
    rw.feed(&input).unwrap();
    assert!(!rw.is_passthrough());
    let b2 = encode(&mut enc, &request_headers(SOCKET_AUTHORITY));
    input.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS, 3, &b2));
    let mut rw = AuthorityRewriter::new();
    rw.feed(&input).unwrap();
    assert_eq!(rw.rewritten(), 1);
    assert!(!rw.is_passthrough());
    let (blocks, _) = server_view(rw.output());
    assert_eq!(authority_of(&blocks[1].2), b"localhost");
    // A rewritten connection stays inspected: every later block must be re-encoded.
    let mut rw = AuthorityRewriter::new();
    rw.feed(&connection(SOCKET_AUTHORITY)).unwrap();
    assert!(!rw.is_passthrough());
    assert_eq!(rw.rewritten(), 2);
}

#[test]
fn http1_is_not_touched() {
    let input = b"GET /metrics HTTP/1.1\r\nHost: /weird path\r\n\r\n".to_vec();
    for chunk in [1, 3, 100] {
        assert_eq!(rewrite(&input, chunk).unwrap(), input);
    }
    // A prefix of the preface that then diverges is given back whole.
    let input = b"PRI * HTTP/1.1\r\n".to_vec();
    assert_eq!(rewrite(&input, 1).unwrap(), input);
}

#[test]
fn a_socket_path_authority_becomes_localhost_and_later_blocks_still_decode() {
    let input = connection(SOCKET_AUTHORITY);
    for chunk in [1, 5, 9, 4096] {
        let out = rewrite(&input, chunk).unwrap();
        let (blocks, others) = server_view(&out);
        assert_eq!(blocks.len(), 2);
        for (i, (stream, flags, headers)) in blocks.iter().enumerate() {
            assert_eq!(*stream, [1, 3][i]);
            assert_eq!(flags & FLAG_END_STREAM, 0);
            assert_eq!(authority_of(headers), b"localhost");
            let names: Vec<_> = headers.iter().map(|(n, _)| n.as_slice()).collect();
            assert_eq!(names[..3], [&b":method"[..], b":scheme", b":path"]);
            assert!(headers.contains(&(b"te".to_vec(), b"trailers".to_vec())));
        }
        assert_eq!(others.len(), 3, "SETTINGS and two DATA frames, unchanged");
        assert_eq!(others[1], frame(0x0, FLAG_END_STREAM, 1, &[0, 0, 0, 0, 0]));
    }
    let mut rw = AuthorityRewriter::new();
    rw.feed(&input).unwrap();
    assert_eq!(rw.rewritten(), 2);
}

#[test]
fn once_rewritten_every_later_block_is_reencoded_even_with_a_valid_authority() {
    // Block 1 indexes a bad authority; block 2 (valid, indexed entries) must not be
    // forwarded verbatim: its indices refer to entries the server never saw.
    let mut enc = Encoder::new();
    let mut input = PREFACE.to_vec();
    let b1 = encode(&mut enc, &request_headers(SOCKET_AUTHORITY));
    input.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, &b1));
    let b2 = encode(&mut enc, &request_headers(b"localhost"));
    input.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS, 3, &b2));
    let (blocks, _) = server_view(&rewrite(&input, 3).unwrap());
    let expected: Headers = request_headers(b"localhost")
        .into_iter()
        .map(|(n, v)| (n.to_vec(), v))
        .collect();
    assert_eq!(blocks.len(), 2);
    for (_, _, headers) in &blocks {
        assert_eq!(headers, &expected);
    }
}

/// Appends a Huffman-coded string literal (RFC 7541 5.2).
fn huffman_string(out: &mut Vec<u8>, s: &[u8]) {
    let mut code = Vec::new();
    httlib_huffman::encode(s, &mut code).unwrap();
    encode_integer(out, code.len(), 7, 0x80);
    out.extend_from_slice(&code);
}

#[test]
fn huffman_coded_values_left_coded_reach_the_server_intact_when_rewritten() {
    // As grpc-core codes a request: `:path` a Huffman literal without indexing (never
    // decoded by the rewriter), the socket path as `:authority` entering the table, and
    // the second request referring to that entry.
    let path = b"/boxlite.v1.Guest/Ping";
    let mut input = PREFACE.to_vec();
    for stream in [1u32, 3] {
        let mut block = vec![0x83, 0x86, 0x04];
        huffman_string(&mut block, path);
        if stream == 1 {
            block.push(0x41);
            huffman_string(&mut block, SOCKET_AUTHORITY);
        } else {
            block.push(0xbe);
        }
        input.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS, stream, &block));
    }
    for chunk in [1, 4, 4096] {
        let (blocks, _) = server_view(&rewrite(&input, chunk).unwrap());
        assert_eq!(blocks.len(), 2);
        for (_, _, headers) in &blocks {
            let expected: Headers = [
                (&b":method"[..], &b"POST"[..]),
                (b":scheme", b"http"),
                (b":path", path),
                (b":authority", b"localhost"),
            ]
            .iter()
            .map(|(n, v)| (n.to_vec(), v.to_vec()))
            .collect();
            assert_eq!(headers, &expected, "chunk {chunk}");
        }
    }
}

#[test]
fn padding_priority_and_continuations_are_handled() {
    let mut enc = Encoder::new();
    let mut headers = request_headers(SOCKET_AUTHORITY);
    headers.push((b"x-big", vec![b'a'; 40_000]));
    let block = encode(&mut enc, &headers);
    // HEADERS (padded, with priority, END_STREAM) carrying 100 bytes, the rest in
    // CONTINUATION frames.
    let mut payload = vec![4u8];
    payload.extend_from_slice(&[0x80, 0, 0, 0, 15]);
    payload.extend_from_slice(&block[..100]);
    payload.extend_from_slice(&[0; 4]);
    let mut input = PREFACE.to_vec();
    input.extend(frame(
        TYPE_HEADERS,
        FLAG_PADDED | FLAG_PRIORITY | FLAG_END_STREAM,
        5,
        &payload,
    ));
    let chunks: Vec<_> = block[100..].chunks(16_000).collect();
    for (i, c) in chunks.iter().enumerate() {
        let flags = if i + 1 == chunks.len() {
            FLAG_END_HEADERS
        } else {
            0
        };
        input.extend(frame(TYPE_CONTINUATION, flags, 5, c));
    }
    let out = rewrite(&input, 777).unwrap();
    let (blocks, _) = server_view(&out);
    assert_eq!(blocks.len(), 1);
    let (stream, flags, decoded) = &blocks[0];
    assert_eq!(*stream, 5);
    assert_ne!(flags & FLAG_END_STREAM, 0);
    assert_ne!(flags & FLAG_PRIORITY, 0);
    assert_eq!(authority_of(decoded), b"localhost");
    assert_eq!(decoded.last().unwrap().1.len(), 40_000);
    // The priority fields survive.
    let first = FrameHeader::parse(out[PREFACE.len()..PREFACE.len() + 9].try_into().unwrap());
    assert_eq!(first.flags & FLAG_PADDED, 0);
    let p = PREFACE.len() + 9;
    assert_eq!(out[p..p + 5], [0x80, 0, 0, 0, 15]);
}

#[test]
fn protocol_violations_and_floods_are_errors() {
    let mut enc = Encoder::new();
    let block = encode(&mut enc, &request_headers(SOCKET_AUTHORITY));
    let open = |flags| {
        let mut v = PREFACE.to_vec();
        v.extend(frame(TYPE_HEADERS, flags, 1, &block));
        v
    };
    let mut stray = PREFACE.to_vec();
    stray.extend(frame(TYPE_CONTINUATION, FLAG_END_HEADERS, 1, &block));
    assert_eq!(rewrite(&stray, 64), Err(RewriteError::StrayContinuation));

    let mut interrupted = open(0);
    interrupted.extend(frame(0x0, 0, 1, b"x"));
    assert_eq!(
        rewrite(&interrupted, 64),
        Err(RewriteError::InterruptedHeaderBlock(0))
    );

    let mut other_stream = open(0);
    other_stream.extend(frame(TYPE_CONTINUATION, FLAG_END_HEADERS, 3, &[]));
    assert!(matches!(
        rewrite(&other_stream, 64),
        Err(RewriteError::InterruptedHeaderBlock(_))
    ));

    let mut flood = open(0);
    for _ in 0..100 {
        flood.extend(frame(TYPE_CONTINUATION, 0, 1, &[0x80; 16_000]));
    }
    assert_eq!(
        rewrite(&flood, 4096),
        Err(RewriteError::HeaderBlockTooLarge)
    );

    // Small block, huge decoded list: one entry referenced many times.
    let mut e = Encoder::new();
    let mut bomb = e.encode([(&b"x-a"[..], &[b'a'; 4000][..])]);
    bomb.extend(std::iter::repeat_n(0xbe, 300)); // indexed: dynamic entry 62
    let mut input = PREFACE.to_vec();
    input.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, &bomb));
    assert_eq!(
        rewrite(&input, 4096),
        Err(RewriteError::HeaderBlockTooLarge)
    );

    let mut garbage = PREFACE.to_vec();
    garbage.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, &[0xff; 8]));
    assert!(matches!(rewrite(&garbage, 5), Err(RewriteError::Hpack(_))));

    let mut bad_pad = PREFACE.to_vec();
    bad_pad.extend(frame(
        TYPE_HEADERS,
        FLAG_PADDED | FLAG_END_HEADERS,
        1,
        &[9, 1],
    ));
    assert_eq!(rewrite(&bad_pad, 5), Err(RewriteError::MalformedHeaders));
}

#[test]
fn hpack_integers_round_trip_through_the_decoder() {
    for len in [0usize, 1, 126, 127, 128, 255, 16_383, 70_000] {
        let value = vec![b'v'; len];
        let mut block = Vec::new();
        encode_literal(&mut block, b"x-n", Value::Decoded(&value));
        let decoded = Decoder::new().decode(&block).unwrap();
        assert_eq!(decoded, vec![(b"x-n".to_vec(), value)], "length {len}");
    }
}

#[test]
fn authorities_h2_refuses_are_the_ones_replaced() {
    for ok in [
        &b"localhost"[..],
        b"localhost:2695",
        b"127.0.0.1:9",
        b"[::1]:80",
        b"vsock",
        // What grpc-core sends for the target `vsock:1:2697`.
        b"1:2697",
    ] {
        assert!(valid_authority(ok), "{}", String::from_utf8_lossy(ok));
    }
    for bad in [SOCKET_AUTHORITY, b"/var/tmp/agent.sock", b"a b", b""] {
        assert!(!valid_authority(bad), "{}", String::from_utf8_lossy(bad));
    }
}
