//! guestctl's failures and the exit code each maps to (documented in `--help`).
//!
//! The codes themselves live in [`crate::exit_code`]; the proxy classifies its own
//! failures ([`ProxyError::exit_code`]), this module only wraps them.

use std::process::ExitCode;
use std::time::Duration;

use guest_transport::{fmt_duration, TransportError};
use tonic::{Code, Status};

use crate::exit_code::{EXIT_AGENT_ERROR, EXIT_CONNECT, EXIT_TIMEOUT, EXIT_USAGE};
use crate::grpc_code::code_name;
use crate::init_spec::InitSpecError;
use crate::proxy::ProxyError;
use crate::relay::RelayError;

/// Everything that can make a guestctl command fail.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// Connecting to the agent failed or timed out.
    #[error("{0}")]
    Connect(#[from] TransportError),
    /// The agent returned a non-OK gRPC status.
    #[error("{op} failed: {}: {}", code_name(status.code()), status.message())]
    Rpc {
        /// The command, e.g. `quiesce`.
        op: &'static str,
        /// The status returned.
        status: Status,
    },
    /// The RPC did not complete in time.
    #[error("{op} timed out after {}", fmt_duration(*after))]
    Timeout {
        /// The command.
        op: &'static str,
        /// The per-call timeout.
        after: Duration,
    },
    /// The agent rejected the init request.
    #[error("init failed: {reason}")]
    InitRejected {
        /// The agent's reason.
        reason: String,
    },
    /// The agent's answer was not usable.
    #[error("{op} failed: {detail}")]
    BadResponse {
        /// The command.
        op: &'static str,
        /// What was wrong with it.
        detail: String,
    },
    /// The init request could not be built.
    #[error("{0}")]
    InitSpec(#[from] InitSpecError),
    /// The command needs `--connect` and none was given.
    #[error("--connect URI (or GUESTCTL_CONNECT) is required for this command")]
    MissingConnect,
    /// The agent closed a TLS connection right after the handshake.
    #[error(
        "{op} failed: {uri} closed the connection after the TLS handshake; the agent most likely \
         refused our client certificate (check --tls-cert/--tls-key against its --tls-client-ca)"
    )]
    TlsRefused {
        /// The command.
        op: &'static str,
        /// The URI.
        uri: String,
    },
    /// The connection broke before the agent answered: the peer is not a gRPC agent (e.g. a
    /// VMM socket that forwarded us to something else) or it went away.
    #[error("{op} failed: the connection to {uri} broke before any answer; is a guest agent serving there? ({detail})")]
    ConnectionBroken {
        /// The command.
        op: &'static str,
        /// The URI.
        uri: String,
        /// The transport's words.
        detail: String,
    },
    /// The TLS files are unusable.
    #[error("{0}")]
    Tls(#[from] guest_transport::TlsError),
    /// The metrics proxy could not start.
    #[error("proxy: {0}")]
    Proxy(#[from] ProxyError),
    /// `guestctl otlp-relay` could not run.
    #[error(transparent)]
    Relay(#[from] RelayError),
    /// Writing the output failed (e.g. closed stdout).
    #[error("writing output failed: {0}")]
    Output(#[from] std::io::Error),
}

impl CtlError {
    /// Maps an RPC status to an error; deadline expiry counts as a timeout.
    pub fn from_status(op: &'static str, status: Status, timeout: Duration) -> Self {
        if is_deadline(&status) {
            CtlError::Timeout { op, after: timeout }
        } else {
            CtlError::Rpc { op, status }
        }
    }

    /// The process exit code for this error.
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(match self {
            CtlError::Connect(_)
            | CtlError::TlsRefused { .. }
            | CtlError::ConnectionBroken { .. } => EXIT_CONNECT,
            CtlError::Timeout { .. } => EXIT_TIMEOUT,
            CtlError::Rpc { .. } | CtlError::InitRejected { .. } | CtlError::BadResponse { .. } => {
                EXIT_AGENT_ERROR
            }
            CtlError::InitSpec(_) | CtlError::MissingConnect | CtlError::Tls(_) => EXIT_USAGE,
            CtlError::Output(_) => EXIT_AGENT_ERROR,
            CtlError::Proxy(e) => e.exit_code(),
            CtlError::Relay(e) => e.exit_code(),
        })
    }
}

/// True when the status reports that the call's deadline passed. tonic reports its own
/// `grpc-timeout` expiry as CANCELLED "Timeout expired", so that counts too.
fn is_deadline(status: &Status) -> bool {
    match status.code() {
        Code::DeadlineExceeded => true,
        Code::Cancelled => status.message().contains("Timeout expired"),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpc_error_line_and_code() {
        let e = CtlError::from_status(
            "quiesce",
            Status::failed_precondition("already frozen"),
            Duration::from_secs(30),
        );
        assert_eq!(
            e.to_string(),
            "quiesce failed: FAILED_PRECONDITION: already frozen"
        );
        assert_eq!(e.exit_code(), ExitCode::from(1));
    }

    #[test]
    fn deadline_statuses_are_timeouts() {
        for status in [
            Status::deadline_exceeded("x"),
            Status::cancelled("Timeout expired"),
        ] {
            let e = CtlError::from_status("thaw", status, Duration::from_secs(30));
            assert_eq!(e.to_string(), "thaw timed out after 30s");
            assert_eq!(e.exit_code(), ExitCode::from(4));
        }
        let e = CtlError::from_status(
            "thaw",
            Status::cancelled("client went away"),
            Duration::from_secs(1),
        );
        assert_eq!(e.exit_code(), ExitCode::from(1));
    }

    #[test]
    fn connect_errors_exit_3() {
        let e = CtlError::from(TransportError::ConnectTimeout {
            uri: "vsock://3:2695".into(),
            timeout: Duration::from_secs(5),
        });
        assert_eq!(
            e.to_string(),
            "connecting to vsock://3:2695 timed out after 5s"
        );
        assert_eq!(e.exit_code(), ExitCode::from(3));
    }

    #[test]
    fn proxy_errors_keep_their_exit_codes() {
        assert_eq!(
            CtlError::from(ProxyError::NoTargets).exit_code(),
            ExitCode::from(2)
        );
        let bind = ProxyError::Bind {
            addr: "127.0.0.1:9".parse().unwrap(),
            source: std::io::Error::from(std::io::ErrorKind::AddrInUse),
        };
        assert_eq!(CtlError::from(bind).exit_code(), ExitCode::from(1));
    }
}
