//! Error types of the transport crate: URI parsing, hybrid vsock handshake, and the
//! bind/connect errors that wrap them with the URI they concern.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// Why a `vsock://`, `unix://`, `tcp://` or `hvsock://` string is not a valid URI.
///
/// Every variant names the offending part, so a mistyped `--listen`/`--connect` flag
/// tells the user exactly what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UriError {
    /// The string has no `scheme://` prefix.
    #[error("{input:?} has no scheme: expected {expected}")]
    MissingScheme {
        /// The whole input.
        input: String,
        /// The accepted forms, for the message.
        expected: &'static str,
    },
    /// The scheme is not one this side understands.
    #[error("unknown scheme {scheme:?} in {input:?}: expected {expected}")]
    UnknownScheme {
        /// The scheme as written.
        scheme: String,
        /// The whole input.
        input: String,
        /// The accepted forms, for the message.
        expected: &'static str,
    },
    /// A `HOST:PORT`-style URI lacks the `:PORT` part.
    #[error("missing \":PORT\" in {input:?}")]
    MissingPort {
        /// The whole input.
        input: String,
    },
    /// The port is not a number in range.
    #[error("bad port {value:?} in {input:?}: {reason}")]
    BadPort {
        /// The port as written.
        value: String,
        /// The whole input.
        input: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The vsock CID is not a number (or `-1` where "any" is allowed).
    #[error("bad vsock CID {value:?} in {input:?}: {reason}")]
    BadCid {
        /// The CID as written.
        value: String,
        /// The whole input.
        input: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A unix socket path is empty or relative.
    #[error("socket path {path:?} in {input:?} must be absolute (write unix:///abs/path)")]
    RelativePath {
        /// The path as written.
        path: String,
        /// The whole input.
        input: String,
    },
    /// A unix socket path does not fit in `sockaddr_un.sun_path`.
    #[error("socket path {path:?} is {len} bytes long; unix sockets allow at most {max}")]
    PathTooLong {
        /// The path as written.
        path: String,
        /// Its length in bytes.
        len: usize,
        /// The kernel's limit (excluding the terminating NUL).
        max: usize,
    },
    /// The TCP host part is not usable.
    #[error("bad TCP address {value:?} in {input:?}: {reason}")]
    BadHost {
        /// The host as written.
        value: String,
        /// The whole input.
        input: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// Why the Firecracker / Cloud Hypervisor hybrid vsock handshake failed.
///
/// The handshake is `CONNECT <port>\n` from us, `OK <hostport>\n` from the VMM. Anything
/// else is reported here instead of being mistaken for the start of the gRPC stream.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The reply line is empty.
    #[error("empty hybrid vsock reply")]
    Empty,
    /// The reply has no terminating newline.
    #[error("hybrid vsock reply {line:?} is not terminated by a newline")]
    MissingNewline {
        /// The reply as received (lossy UTF-8).
        line: String,
    },
    /// The reply does not start with `OK ` (the VMM refused or is something else).
    #[error("hybrid vsock reply {line:?} is not \"OK <port>\"; the VMM refused the connection")]
    NotOk {
        /// The reply as received (lossy UTF-8).
        line: String,
    },
    /// The reply starts with `OK ` but the port is not a u32.
    #[error("hybrid vsock reply {line:?} carries a bad host port")]
    BadPort {
        /// The reply as received (lossy UTF-8).
        line: String,
    },
    /// The VMM sent more than the line limit without a newline.
    #[error("hybrid vsock reply is longer than {limit} bytes without a newline")]
    TooLong {
        /// The limit that was exceeded.
        limit: usize,
    },
    /// The VMM closed the connection before sending a full line.
    #[error(
        "the VMM closed the connection before answering CONNECT {port} (received {received:?}); \
         is the guest listening on vsock port {port}?"
    )]
    Eof {
        /// The guest port we asked for.
        port: u32,
        /// What arrived before the close (lossy UTF-8).
        received: String,
    },
    /// No complete reply arrived in time.
    #[error("no reply to CONNECT {port} within {}", fmt_duration(*timeout))]
    Timeout {
        /// The guest port we asked for.
        port: u32,
        /// How long we waited.
        timeout: Duration,
    },
    /// Reading or writing the socket failed.
    #[error("I/O error during the hybrid vsock handshake: {0}")]
    Io(#[from] io::Error),
}

/// Errors of binding a listener or connecting to an agent.
///
/// Each variant carries the URI (or path) it concerns so callers can print it as is.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The parent directory of a unix socket path does not exist.
    #[error("cannot listen on {uri}: parent directory {} does not exist", parent.display())]
    ParentMissing {
        /// The listen URI.
        uri: String,
        /// The missing directory.
        parent: PathBuf,
    },
    /// Something other than a socket exists at the unix socket path; we never delete it.
    #[error("cannot listen on {uri}: {} exists and is not a socket (refusing to remove it)", path.display())]
    NotASocket {
        /// The listen URI.
        uri: String,
        /// The path in the way.
        path: PathBuf,
    },
    /// Another process is already serving on the address.
    #[error("cannot listen on {uri}: {detail}")]
    AddressInUse {
        /// The listen URI.
        uri: String,
        /// Who or what holds it.
        detail: String,
    },
    /// A TCP listen address outside loopback was requested without opting in.
    #[error(
        "refusing to listen on non-loopback address {uri}: the agent would be reachable from the \
         network; pass --allow-remote if that is intended"
    )]
    RemoteNotAllowed {
        /// The listen URI.
        uri: String,
    },
    /// A vsock listener was asked to accept no CID at all.
    #[error("cannot listen on {uri}: the allowed CID list is empty, no peer could ever connect")]
    NoAllowedCids {
        /// The listen URI.
        uri: String,
    },
    /// The bind/listen system calls failed.
    #[error("cannot listen on {uri}: {source}")]
    Bind {
        /// The listen URI.
        uri: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Connecting failed (refused, no such file, unreachable, ...).
    #[error("connecting to {uri} failed: {source}")]
    Connect {
        /// The connect URI.
        uri: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Connecting did not finish within the timeout.
    #[error("connecting to {uri} timed out after {}", fmt_duration(*timeout))]
    ConnectTimeout {
        /// The connect URI.
        uri: String,
        /// The timeout that expired.
        timeout: Duration,
    },
    /// The hybrid vsock handshake with the VMM failed.
    #[error("hybrid vsock handshake over {uri} failed: {source}")]
    Handshake {
        /// The connect URI.
        uri: String,
        /// What went wrong.
        #[source]
        source: HandshakeError,
    },
    /// A `tls+tcp://` URI was used without TLS client settings.
    #[error("{uri} needs TLS client settings (a CA, and a client certificate if the agent asks for one)")]
    TlsNotConfigured {
        /// The connect URI.
        uri: String,
    },
    /// The TLS settings are unusable for this URI.
    #[error("TLS to {uri}: {source}")]
    Tls {
        /// The URI.
        uri: String,
        /// What is wrong.
        #[source]
        source: crate::tls::TlsError,
    },
    /// The TLS handshake failed (untrusted certificate, wrong name, refused client
    /// certificate, ...).
    #[error("TLS handshake with {uri} failed: {source}")]
    TlsHandshake {
        /// The URI.
        uri: String,
        /// rustls' error.
        #[source]
        source: io::Error,
    },
    /// tonic could not set up the HTTP/2 channel over an established stream.
    #[error("setting up the gRPC channel over {uri} failed: {source}")]
    Channel {
        /// The connect URI.
        uri: String,
        /// tonic's error.
        #[source]
        source: tonic::transport::Error,
    },
}

impl TransportError {
    /// True when the error is a timeout (callers map it to a distinct exit code).
    pub fn is_timeout(&self) -> bool {
        matches!(
            self,
            TransportError::ConnectTimeout { .. }
                | TransportError::Handshake {
                    source: HandshakeError::Timeout { .. },
                    ..
                }
        )
    }
}

/// Formats a duration for messages: `5s`, `250ms`, `1.5s`.
pub fn fmt_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else if d < Duration::from_secs(1) && d.subsec_nanos().is_multiple_of(1_000_000) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{:.3}s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_format_readably() {
        assert_eq!(fmt_duration(Duration::from_secs(5)), "5s");
        assert_eq!(fmt_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(fmt_duration(Duration::from_millis(1500)), "1.500s");
        assert_eq!(fmt_duration(Duration::from_micros(1500)), "0.002s");
    }

    #[test]
    fn timeout_message_names_uri_and_duration() {
        let e = TransportError::ConnectTimeout {
            uri: "unix:///x".into(),
            timeout: Duration::from_secs(5),
        };
        assert_eq!(e.to_string(), "connecting to unix:///x timed out after 5s");
        assert!(e.is_timeout());
    }

    #[test]
    fn remote_refusal_mentions_the_flag() {
        let e = TransportError::RemoteNotAllowed {
            uri: "tcp://0.0.0.0:1".into(),
        };
        assert!(e.to_string().contains("--allow-remote"));
        assert!(!e.is_timeout());
    }
}
