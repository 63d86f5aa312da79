//! The one place where the agent's error types become gRPC status codes.

use tonic::{Code, Status};

use crate::freezer::FreezerError;

/// Errors the service returns as gRPC statuses (Init failures travel as GuestInitError
/// instead, as upstream's contract says).
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The freezer refused or failed.
    #[error(transparent)]
    Freezer(#[from] FreezerError),
    /// The call is not allowed while the agent holds filesystems frozen.
    #[error("{rpc} is refused while filesystems are frozen ({frozen}); only Ping, Thaw, FreezeStatus and Shutdown are served until Thaw")]
    FrozenMode {
        /// The refused RPC.
        rpc: &'static str,
        /// The frozen mountpoints.
        frozen: String,
    },
    /// The agent is shutting down.
    #[error("the agent is shutting down")]
    ShuttingDown,
}

impl From<ServiceError> for Status {
    fn from(e: ServiceError) -> Self {
        let code = match &e {
            ServiceError::Freezer(f) => freezer_code(f),
            ServiceError::FrozenMode { .. } => Code::FailedPrecondition,
            ServiceError::ShuttingDown => Code::Unavailable,
        };
        Status::new(code, elide_middle(&e.to_string(), MAX_STATUS_MESSAGE))
    }
}

/// Longest status message sent. The message travels in an HTTP/2 header: one that echoes a
/// huge request back (a megabyte of bogus mountpoints) would be refused by the client's HTTP/2
/// layer, and the caller would never learn what was wrong.
pub const MAX_STATUS_MESSAGE: usize = 4096;

/// `msg` cut to at most about `max` bytes: the beginning and the end are kept (where the
/// reason usually is: "... is not a mount point", a tool's last error line) and the middle
/// (an echoed value, a tool's progress output) is elided, on char boundaries.
pub(crate) fn elide_middle(msg: &str, max: usize) -> String {
    if msg.len() <= max {
        return msg.to_string();
    }
    let mut head = max / 2;
    while !msg.is_char_boundary(head) {
        head -= 1;
    }
    let mut tail = msg.len() - max / 4;
    while !msg.is_char_boundary(tail) {
        tail += 1;
    }
    format!(
        "{} ...({} bytes elided)... {}",
        &msg[..head],
        tail - head,
        &msg[tail..]
    )
}

fn freezer_code(e: &FreezerError) -> Code {
    match e {
        FreezerError::InvalidRequest(_) => Code::InvalidArgument,
        FreezerError::AlreadyFrozen { .. } => Code::FailedPrecondition,
        FreezerError::Busy(_) => Code::Aborted,
        FreezerError::Hook(_) => Code::FailedPrecondition,
        FreezerError::Timeout { .. } => Code::DeadlineExceeded,
        FreezerError::Freeze(_) | FreezerError::ThawFailed { .. } => Code::Internal,
        FreezerError::Mounts(_) | FreezerError::Internal(_) => Code::Internal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn huge_messages_keep_head_and_reason_on_char_boundaries() {
        let huge = format!("{} is not a mount point", "é".repeat(MAX_STATUS_MESSAGE));
        let st = Status::from(ServiceError::from(FreezerError::InvalidRequest(huge)));
        assert!(
            st.message().len() <= MAX_STATUS_MESSAGE,
            "{}",
            st.message().len()
        );
        assert!(st.message().contains("bytes elided"));
        assert!(st.message().ends_with("is not a mount point"));
    }

    #[test]
    fn short_text_is_kept_and_cuts_fall_on_char_boundaries() {
        assert_eq!(elide_middle("abc", 5), "abc");
        let cut = elide_middle(&"é".repeat(10), 13);
        assert_eq!(cut, "ééé ...(12 bytes elided)... é");
    }

    #[test]
    fn a_refused_quiesce_says_what_froze_the_held_set() {
        let e = FreezerError::AlreadyFrozen {
            held: vec!["/a".into()],
            held_selection: vec![],
            requested: vec!["/a".into()],
        };
        assert_eq!(
            e.to_string(),
            "already frozen by the agent: /a (by a Quiesce of every eligible filesystem); \
             thaw first (requested now: /a)"
        );
    }

    #[test]
    fn codes_are_the_documented_ones() {
        let cases: Vec<(ServiceError, Code)> = vec![
            (
                FreezerError::InvalidRequest("x".into()).into(),
                Code::InvalidArgument,
            ),
            (
                FreezerError::AlreadyFrozen {
                    held: vec!["/a".into()],
                    held_selection: vec![],
                    requested: vec!["/a".into()],
                }
                .into(),
                Code::FailedPrecondition,
            ),
            (
                FreezerError::Busy(Duration::from_secs(1)).into(),
                Code::Aborted,
            ),
            (
                FreezerError::Timeout {
                    op: "Quiesce",
                    after: Duration::from_secs(1),
                }
                .into(),
                Code::DeadlineExceeded,
            ),
            (
                ServiceError::FrozenMode {
                    rpc: "Init",
                    frozen: "/a".into(),
                },
                Code::FailedPrecondition,
            ),
            (ServiceError::ShuttingDown, Code::Unavailable),
        ];
        for (err, code) in cases {
            let msg = err.to_string();
            let st = Status::from(err);
            assert_eq!(st.code(), code, "{msg}");
            assert_eq!(st.message(), msg);
        }
    }
}
