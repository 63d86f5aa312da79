//! A real h2 server (the HTTP/2 stack under tonic) fed the bytes a grpc-core client sends
//! on a unix socket: refused as they are, served through `RelaxedAuthority`.

use std::time::Duration;

use guest_transport::RelaxedAuthority;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// HPACK literal without indexing, new name, no Huffman (lengths < 127).
fn literal(out: &mut Vec<u8>, name: &str, value: &str) {
    out.push(0);
    for s in [name, value] {
        out.push(s.len() as u8);
        out.extend_from_slice(s.as_bytes());
    }
}

/// Preface, empty SETTINGS, and one complete gRPC-style request with `authority`.
fn client_bytes(authority: &str) -> Vec<u8> {
    let mut out = PREFACE.to_vec();
    out.extend(frame(0x4, 0, 0, &[]));
    out.extend(request_frame(1, authority));
    out
}

/// Serves one connection with h2 and returns the authority of the first request, or the
/// error h2 ended with.
async fn first_request_authority<S>(io: S) -> Result<String, String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut conn = h2::server::handshake(io).await.map_err(|e| e.to_string())?;
    match tokio::time::timeout(Duration::from_secs(5), conn.accept()).await {
        Ok(Some(Ok((req, _respond)))) => Ok(req.uri().authority().unwrap().to_string()),
        Ok(Some(Err(e))) => Err(e.to_string()),
        Ok(None) => Err("connection closed without a request".into()),
        Err(_) => Err("no request within 5 s".into()),
    }
}

/// Writes the client's bytes, then reads what the server sends until it has reset stream 1,
/// closed the connection, or 10 s have passed.
fn client(mut io: tokio::io::DuplexStream, bytes: Vec<u8>) -> tokio::task::JoinHandle<Vec<u8>> {
    tokio::spawn(async move {
        io.write_all(&bytes).await.unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while rst_stream_code(&got).is_none() {
            match tokio::time::timeout_at(deadline, io.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
                _ => break,
            }
        }
        got
    })
}

/// Finds an RST_STREAM on stream 1 in the server's bytes and returns its error code.
fn rst_stream_code(mut bytes: &[u8]) -> Option<u32> {
    while bytes.len() >= 9 {
        let len = usize::from(bytes[0]) << 16 | usize::from(bytes[1]) << 8 | usize::from(bytes[2]);
        if bytes[3] == 0x3 && bytes[5..9] == [0, 0, 0, 1] {
            return Some(u32::from_be_bytes(bytes[9..13].try_into().unwrap()));
        }
        bytes = &bytes[(9 + len).min(bytes.len())..];
    }
    None
}

#[tokio::test]
async fn h2_refuses_a_socket_path_authority_without_the_wrapper() {
    let (server, peer) = tokio::io::duplex(1 << 16);
    let sent = client(peer, client_bytes("%2Fvar%2Ftmp%2Fagent.sock"));
    let served = tokio::spawn(first_request_authority(server));
    let got = sent.await.unwrap();
    // h2 resets the stream with PROTOCOL_ERROR (1): what grpc-core reports as
    // "Received RST_STREAM with error code 1".
    assert_eq!(rst_stream_code(&got), Some(1), "server sent {got:?}");
    served.abort();
}

#[tokio::test]
async fn the_wrapper_serves_it_as_localhost() {
    // grpc-core's unix form; grpc-java's and grpcurl's raw path.
    for authority in ["%2Fvar%2Ftmp%2Fagent.sock", "/var/tmp/agent.sock"] {
        let (server, peer) = tokio::io::duplex(1 << 16);
        let sent = client(peer, client_bytes(authority));
        let got = first_request_authority(RelaxedAuthority::new(server)).await;
        assert_eq!(got.as_deref(), Ok("localhost"), "authority {authority}");
        drop(sent);
    }
}

#[tokio::test]
async fn a_valid_authority_is_kept() {
    // tonic's and grpc-go's, and grpc-core's for the target `vsock:1:2697`.
    for authority in ["localhost:2695", "localhost", "1:2697"] {
        let (server, peer) = tokio::io::duplex(1 << 16);
        let _sent = client(peer, client_bytes(authority));
        let got = first_request_authority(RelaxedAuthority::new(server)).await;
        assert_eq!(got.as_deref(), Ok(authority));
    }
}

/// HEADERS (END_STREAM) of a request on `stream` with `authority`, literals only.
fn request_frame(stream: u32, authority: &str) -> Vec<u8> {
    let mut block = Vec::new();
    for (n, v) in [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/boxlite.v1.Guest/Ping"),
        (":authority", authority),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ] {
        literal(&mut block, n, v);
    }
    frame(0x1, 0x4 | 0x1, stream, &block)
}

#[tokio::test]
async fn after_a_valid_first_request_the_connection_is_read_straight_through() {
    // The second request arrives in a later read, after the first settled the connection:
    // it reaches h2 unchanged (served), and a third with a socket-path authority is
    // refused by h2 itself, as it would be on TCP.
    let (server, mut peer) = tokio::io::duplex(1 << 16);
    let (accepted, wait) = tokio::sync::oneshot::channel::<()>();
    let client = tokio::spawn(async move {
        peer.write_all(&client_bytes("localhost")).await.unwrap();
        wait.await.unwrap();
        peer.write_all(&request_frame(3, "localhost:2695"))
            .await
            .unwrap();
        peer.write_all(&request_frame(5, "%2Fvar%2Ftmp%2Fagent.sock"))
            .await
            .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while rst_stream_on(&got, 5).is_none() {
            match tokio::time::timeout_at(deadline, peer.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
                _ => break,
            }
        }
        // The connection stays open (the peer is returned) until the server side is done.
        (got, peer)
    });
    let mut conn = h2::server::handshake(RelaxedAuthority::new(server))
        .await
        .unwrap();
    let mut authorities = Vec::new();
    let mut accepted = Some(accepted);
    let serve = async {
        while let Some(Ok((req, _respond))) = conn.accept().await {
            authorities.push(req.uri().authority().unwrap().to_string());
            if let Some(tx) = accepted.take() {
                tx.send(()).unwrap();
            }
        }
    };
    let (got, _peer) = tokio::select! {
        done = client => done.unwrap(),
        () = serve => panic!("the connection ended early"),
    };
    assert_eq!(authorities, ["localhost", "localhost:2695"]);
    assert_eq!(rst_stream_on(&got, 5), Some(1), "server sent {got:?}");
}

/// The error code of an RST_STREAM on `stream` in the server's bytes.
fn rst_stream_on(mut bytes: &[u8], stream: u32) -> Option<u32> {
    while bytes.len() >= 13 {
        let len = usize::from(bytes[0]) << 16 | usize::from(bytes[1]) << 8 | usize::from(bytes[2]);
        if bytes[3] == 0x3 && bytes[5..9] == stream.to_be_bytes() {
            return Some(u32::from_be_bytes(bytes[9..13].try_into().unwrap()));
        }
        bytes = &bytes[(9 + len).min(bytes.len())..];
    }
    None
}
