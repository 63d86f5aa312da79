//! A bare HTTP/2 gRPC client for Pings: a blocking unix socket and request frames encoded
//! once, no runtime, no HPACK state, no channel. It is as thin as the JSON-line client the
//! bench uses for qemu-ga, so the two round trips compare what the servers cost; the
//! tonic and grpcio figures add what a full gRPC client costs on top.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

// The frame codec below is written apart from the agent's `:authority` rewriter on purpose
// (a bench client must not share the server's bugs); only the preface constant is shared.
use guest_transport::authority::PREFACE;

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
/// The connection window granted once at the start, so no Ping needs a WINDOW_UPDATE.
const CONNECTION_WINDOW: u32 = 1 << 30;

/// One frame as read: type, flags, stream, payload.
#[derive(Debug)]
struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

/// A connection that sends unary gRPC calls with an empty request message.
#[derive(Debug)]
pub struct BareClient {
    sock: UnixStream,
    /// The request header block (literals without indexing: no HPACK state to keep).
    block: Vec<u8>,
    next_stream: u32,
    buf: Vec<u8>,
}

/// Appends a frame.
fn frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    let len = u32::try_from(payload.len()).expect("small frame");
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
}

/// Appends a header "literal without indexing" with a static-table name index below 15
/// and a plain value shorter than 127 bytes (RFC 7541 6.2.2).
fn literal(out: &mut Vec<u8>, name_index: u8, value: &[u8]) {
    out.push(name_index);
    out.push(u8::try_from(value.len()).expect("short value"));
    out.extend_from_slice(value);
}

fn protocol(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// The gRPC path of Ping.
pub const PING_PATH: &str = "/boxlite.v1.Guest/Ping";

impl BareClient {
    /// Connects to `socket` and sends the preface, empty SETTINGS and the window grant;
    /// `path` is the gRPC method to call (`/boxlite.v1.Guest/Ping`).
    pub fn connect(socket: &Path, path: &str, timeout: Duration) -> io::Result<Self> {
        let sock = UnixStream::connect(socket)?;
        sock.set_read_timeout(Some(timeout))?;
        let mut start = PREFACE.to_vec();
        frame(&mut start, SETTINGS, 0, 0, &[]);
        frame(
            &mut start,
            WINDOW_UPDATE,
            0,
            0,
            &CONNECTION_WINDOW.to_be_bytes(),
        );
        (&sock).write_all(&start)?;
        let mut block = vec![0x83, 0x86]; // :method POST, :scheme http
        literal(&mut block, 4, path.as_bytes()); // :path
        literal(&mut block, 1, b"localhost"); // :authority
        block.extend_from_slice(&[0x0f, 0x10]); // content-type (static 31)
        block.push(16);
        block.extend_from_slice(b"application/grpc");
        block.extend_from_slice(&[0x00, 0x02]); // te: trailers (new name)
        block.extend_from_slice(b"te");
        block.push(8);
        block.extend_from_slice(b"trailers");
        Ok(Self {
            sock,
            block,
            next_stream: 1,
            buf: Vec::with_capacity(4096),
        })
    }

    /// One Ping ([`Self::call`] on a client connected with the Ping path): the answer must
    /// be a `PingResponse` carrying a version.
    pub fn ping(&mut self) -> io::Result<()> {
        ping_version(&self.call()?).map(drop)
    }

    /// One call: HEADERS and an empty message in one write, then frames until the
    /// trailers end the stream. Returns the response message (without its 5-byte prefix).
    pub fn call(&mut self) -> io::Result<Vec<u8>> {
        let stream = self.next_stream;
        self.next_stream += 2;
        let mut out = Vec::with_capacity(self.block.len() + 32);
        frame(&mut out, HEADERS, END_HEADERS, stream, &self.block);
        frame(&mut out, DATA, END_STREAM, stream, &[0, 0, 0, 0, 0]);
        (&self.sock).write_all(&out)?;
        let mut body = Vec::new();
        loop {
            let f = self.read_frame()?;
            match f.kind {
                SETTINGS if f.flags & ACK == 0 => self.send(SETTINGS, ACK, 0, &[])?,
                PING if f.flags & ACK == 0 => self.send(PING, ACK, 0, &f.payload)?,
                GOAWAY => return Err(protocol("server sent GOAWAY".into())),
                RST_STREAM if f.stream == stream => {
                    return Err(protocol(format!(
                        "stream {stream} reset: {:02x?}",
                        f.payload
                    )))
                }
                DATA if f.stream == stream => body.extend_from_slice(&f.payload),
                HEADERS if f.stream == stream && f.flags & END_STREAM != 0 => break,
                _ => {}
            }
        }
        // One gRPC message: uncompressed flag, 4-byte length, the bytes.
        if body.len() < 5 || body[0] != 0 {
            return Err(protocol(format!("no gRPC message in {body:02x?}")));
        }
        let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        if body.len() != 5 + len {
            return Err(protocol(format!(
                "message of {len} bytes in {} bytes",
                body.len()
            )));
        }
        Ok(body.split_off(5))
    }

    fn send(&self, kind: u8, flags: u8, stream: u32, payload: &[u8]) -> io::Result<()> {
        let mut out = Vec::new();
        frame(&mut out, kind, flags, stream, payload);
        (&self.sock).write_all(&out)
    }

    fn read_frame(&mut self) -> io::Result<Frame> {
        loop {
            if self.buf.len() >= 9 {
                let len = u32::from_be_bytes([0, self.buf[0], self.buf[1], self.buf[2]]) as usize;
                if self.buf.len() >= 9 + len {
                    let stream =
                        u32::from_be_bytes([self.buf[5], self.buf[6], self.buf[7], self.buf[8]])
                            & 0x7fff_ffff;
                    let f = Frame {
                        kind: self.buf[3],
                        flags: self.buf[4],
                        stream,
                        payload: self.buf[9..9 + len].to_vec(),
                    };
                    self.buf.drain(..9 + len);
                    return Ok(f);
                }
            }
            let mut chunk = [0u8; 4096];
            let n = (&self.sock).read(&mut chunk)?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// The version a `PingResponse` carries (`string version = 1`, shorter than 128 bytes).
fn ping_version(msg: &[u8]) -> io::Result<&str> {
    match msg {
        [0x0a, len, rest @ ..] if usize::from(*len) == rest.len() && !rest.is_empty() => {
            std::str::from_utf8(rest).map_err(|e| protocol(format!("version not UTF-8: {e}")))
        }
        _ => Err(protocol(format!(
            "not a PingResponse with a version: {msg:02x?}"
        ))),
    }
}

/// `n` Pings on one connection, one every `interval`, after 20 unmeasured ones; each must
/// answer a `PingResponse` with a version.
pub fn ping_series(socket: &Path, n: usize, interval: Duration) -> io::Result<Vec<Duration>> {
    let mut c = BareClient::connect(socket, PING_PATH, Duration::from_secs(5))?;
    for _ in 0..20 {
        c.ping()?;
    }
    let mut rtts = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        c.ping()?;
        rtts.push(t.elapsed());
        let next = t + interval;
        if let Some(d) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
    }
    Ok(rtts)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scripted server on the other end of `socket`: reads the preface, answers SETTINGS
    /// and a PING before the response, and ends each stream with trailers.
    fn serve(listener: std::os::unix::net::UnixListener, reply: Vec<u8>, calls: usize) {
        let (mut s, _) = listener.accept().unwrap();
        let mut got = vec![0u8; PREFACE.len()];
        s.read_exact(&mut got).unwrap();
        assert_eq!(got, PREFACE);
        let mut c = BareClient {
            sock: s.try_clone().unwrap(),
            block: Vec::new(),
            next_stream: 1,
            buf: Vec::new(),
        };
        let mut out = Vec::new();
        frame(&mut out, SETTINGS, 0, 0, &[]);
        s.write_all(&out).unwrap();
        let mut served = 0;
        while served < calls {
            let f = c.read_frame().unwrap();
            if f.kind == DATA && f.flags & END_STREAM != 0 {
                let mut out = Vec::new();
                frame(&mut out, PING, 0, 0, &[7; 8]);
                frame(&mut out, HEADERS, END_HEADERS, f.stream, &[0x88]);
                let mut msg = vec![0, 0, 0, 0, u8::try_from(reply.len()).unwrap()];
                msg.extend_from_slice(&reply);
                frame(&mut out, DATA, 0, f.stream, &msg);
                frame(
                    &mut out,
                    HEADERS,
                    END_HEADERS | END_STREAM,
                    f.stream,
                    &[0x40],
                );
                s.write_all(&out).unwrap();
                served += 1;
            }
        }
        // Stay until the client hangs up: it still answers the last PING.
        while c.read_frame().is_ok() {}
    }

    #[test]
    fn calls_return_the_message_and_streams_advance() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || serve(listener, b"\x0a\x050.1.0".to_vec(), 3));
        let mut c = BareClient::connect(&path, PING_PATH, Duration::from_secs(5)).unwrap();
        for stream in [1, 3, 5] {
            assert_eq!(c.next_stream, stream);
            assert_eq!(c.call().unwrap(), b"\x0a\x050.1.0");
        }
        drop(c);
        server.join().unwrap();
    }

    #[test]
    fn only_a_ping_response_with_a_version_is_accepted() {
        assert_eq!(ping_version(b"\x0a\x050.1.0").unwrap(), "0.1.0");
        for bad in [
            &b""[..],
            b"\x0a\x00",
            b"\x0a\x050.1",
            b"\x12\x01x",
            b"\x0a\x01\xff",
        ] {
            assert!(ping_version(bad).is_err(), "{bad:02x?}");
        }
    }

    #[test]
    fn a_reset_stream_or_a_closed_socket_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut out = Vec::new();
            frame(&mut out, RST_STREAM, 0, 1, &[0, 0, 0, 1]);
            s.write_all(&out).unwrap();
        });
        let mut c = BareClient::connect(&path, "/x/y", Duration::from_secs(5)).unwrap();
        let e = c.call().unwrap_err();
        assert!(e.to_string().contains("stream 1 reset"), "{e}");
        server.join().unwrap();
        let closed = c.call().unwrap_err().kind();
        assert!(
            matches!(
                closed,
                io::ErrorKind::UnexpectedEof
                    | io::ErrorKind::BrokenPipe
                    | io::ErrorKind::ConnectionReset
            ),
            "{closed:?}"
        );
    }
}
