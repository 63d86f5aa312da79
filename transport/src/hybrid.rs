//! Host side of the Firecracker / Cloud Hypervisor "hybrid vsock" handshake.
//!
//! The VMM exposes the guest's vsock device as a unix socket. A host client connects to it,
//! writes `CONNECT <guest port>\n` and reads one line `OK <host port>\n`; from then on the
//! unix stream carries the guest connection. Anything else (another line, EOF, an endless
//! line, silence) is an error, and the reply is read byte by byte so no byte of the guest's
//! stream is consumed by the handshake.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::error::HandshakeError;

/// Longest reply line accepted, newline included. `OK 4294967295\n` is 14 bytes; anything
/// near this limit is not a VMM speaking the protocol.
pub const MAX_REPLY_LEN: usize = 64;

/// The request line sent to the VMM for guest port `port`.
pub fn connect_request(port: u32) -> String {
    format!("CONNECT {port}\n")
}

/// Parses the VMM's complete reply line (newline included) into the host-side port.
///
/// Accepts exactly `OK <decimal u32>\n`; everything else is an error naming what was wrong.
/// Pure and total, so it can be fuzzed.
pub fn parse_connect_reply(line: &[u8]) -> Result<u32, HandshakeError> {
    if line.is_empty() {
        return Err(HandshakeError::Empty);
    }
    if line.len() > MAX_REPLY_LEN {
        return Err(HandshakeError::TooLong {
            limit: MAX_REPLY_LEN,
        });
    }
    let lossy = || String::from_utf8_lossy(line).into_owned();
    let Some(content) = line.strip_suffix(b"\n") else {
        return Err(HandshakeError::MissingNewline { line: lossy() });
    };
    let Some(port) = content.strip_prefix(b"OK ") else {
        return Err(HandshakeError::NotOk { line: lossy() });
    };
    if port.is_empty() || !port.iter().all(u8::is_ascii_digit) {
        return Err(HandshakeError::BadPort { line: lossy() });
    }
    // All ASCII digits, so valid UTF-8; only overflow can fail here.
    std::str::from_utf8(port)
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        .ok_or_else(|| HandshakeError::BadPort { line: lossy() })
}

/// Performs the handshake on an already connected VMM socket, returning the host port.
///
/// The whole exchange (write and reply) must finish within `timeout`; the function never
/// waits longer. On success the stream is positioned at the first byte of the guest's data.
pub async fn handshake<S>(
    stream: &mut S,
    port: u32,
    timeout: Duration,
) -> Result<u32, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let exchange = async {
        stream.write_all(connect_request(port).as_bytes()).await?;
        stream.flush().await?;
        let line = read_reply_line(stream, port).await?;
        parse_connect_reply(&line)
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| HandshakeError::Timeout { port, timeout })?
}

/// Reads up to and including the first `\n`, one byte at a time, at most
/// [`MAX_REPLY_LEN`] bytes.
async fn read_reply_line<S: AsyncRead + Unpin>(
    stream: &mut S,
    port: u32,
) -> Result<Vec<u8>, HandshakeError> {
    let mut line = Vec::with_capacity(16);
    loop {
        let mut byte = [0u8; 1];
        if stream.read(&mut byte).await? == 0 {
            return Err(HandshakeError::Eof {
                port,
                received: String::from_utf8_lossy(&line).into_owned(),
            });
        }
        line.push(byte[0]);
        if byte[0] == b'\n' {
            return Ok(line);
        }
        if line.len() >= MAX_REPLY_LEN {
            return Err(HandshakeError::TooLong {
                limit: MAX_REPLY_LEN,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::duplex;

    #[test]
    fn reply_parser_table() {
        let ok: &[(&[u8], u32)] = &[
            (b"OK 1073741824\n", 1_073_741_824),
            (b"OK 0\n", 0),
            (b"OK 4294967295\n", u32::MAX),
        ];
        for (line, port) in ok {
            assert_eq!(parse_connect_reply(line).unwrap(), *port, "{line:?}");
        }
        type Check = fn(&HandshakeError) -> bool;
        let bad: &[(&[u8], Check)] = &[
            (b"", |e| matches!(e, HandshakeError::Empty)),
            (b"OK 5", |e| {
                matches!(e, HandshakeError::MissingNewline { .. })
            }),
            (b"ok 5\n", |e| matches!(e, HandshakeError::NotOk { .. })),
            (b"ERR no listener\n", |e| {
                matches!(e, HandshakeError::NotOk { .. })
            }),
            (b"OK5\n", |e| matches!(e, HandshakeError::NotOk { .. })),
            (b"\n", |e| matches!(e, HandshakeError::NotOk { .. })),
            (b"OK \n", |e| matches!(e, HandshakeError::BadPort { .. })),
            (b"OK 12a\n", |e| matches!(e, HandshakeError::BadPort { .. })),
            (b"OK -1\n", |e| matches!(e, HandshakeError::BadPort { .. })),
            (b"OK 5\r\n", |e| matches!(e, HandshakeError::BadPort { .. })),
            (b"OK  5\n", |e| matches!(e, HandshakeError::BadPort { .. })),
            (b"OK 4294967296\n", |e| {
                matches!(e, HandshakeError::BadPort { .. })
            }),
            (b"OK 5\nOK 6\n", |e| {
                matches!(e, HandshakeError::BadPort { .. })
            }),
            (b"OK \xff\n", |e| {
                matches!(e, HandshakeError::BadPort { .. })
            }),
        ];
        for (line, check) in bad {
            let err = parse_connect_reply(line).expect_err(&format!("{line:?}"));
            assert!(check(&err), "{line:?} gave {err:?}");
        }
        let long = [b'9'; MAX_REPLY_LEN + 1];
        assert!(matches!(
            parse_connect_reply(&long),
            Err(HandshakeError::TooLong { .. })
        ));
    }

    #[test]
    fn request_line_format() {
        assert_eq!(connect_request(2695), "CONNECT 2695\n");
    }

    #[tokio::test]
    async fn handshake_leaves_guest_bytes_unread() {
        let (mut client, mut vmm) = duplex(256);
        let vmm_side = tokio::spawn(async move {
            let mut buf = [0u8; 13];
            vmm.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"CONNECT 2695\n");
            // Reply and the guest's first bytes arrive in one write.
            vmm.write_all(b"OK 1073741824\nHELLO").await.unwrap();
            vmm
        });
        let port = handshake(&mut client, 2695, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(port, 1_073_741_824);
        let mut rest = [0u8; 5];
        client.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"HELLO");
        drop(vmm_side.await.unwrap());
    }

    #[tokio::test]
    async fn endless_line_is_refused_without_reading_more() {
        let (mut client, mut vmm) = duplex(4096);
        vmm.write_all(&[b'x'; 1000]).await.unwrap();
        let err = handshake(&mut client, 1, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(
            matches!(err, HandshakeError::TooLong { limit: 64 }),
            "{err}"
        );
    }

    #[tokio::test]
    async fn silence_times_out() {
        let (mut client, _vmm) = duplex(256);
        let err = handshake(&mut client, 9, Duration::from_millis(100))
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "no reply to CONNECT 9 within 100ms");
    }
}
