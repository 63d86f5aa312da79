//! guestctl's general exit codes (documented in `--help`; `snapshot` adds its own in
//! [`crate::snapshot::report`]).
//!
//! A leaf module, so that any module can classify its own failures without importing
//! [`crate::error`] (which wraps those failures).

/// Exit code: the agent answered with an error.
pub const EXIT_AGENT_ERROR: u8 = 1;
/// Exit code: usage error (clap uses 2 as well).
pub const EXIT_USAGE: u8 = 2;
/// Exit code: could not connect.
pub const EXIT_CONNECT: u8 = 3;
/// Exit code: an RPC timed out.
pub const EXIT_TIMEOUT: u8 = 4;
