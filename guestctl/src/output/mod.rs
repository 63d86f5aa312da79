//! What each command prints: one serde report per command, rendered either as JSON (one
//! object on one line) or as text for people. Rendering is pure (the current time is a
//! parameter) so it is unit tested.
//!
//! One module per command: [`ping`], [`init`], [`shutdown`], [`freeze`] (`quiesce` and
//! `thaw`), [`status`]; [`format`] holds the table and time formatting they share.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

mod format;
mod freeze;
mod init;
mod ping;
mod shutdown;
mod status;

pub use freeze::{FsRow, QuiesceReport, ThawReport};
pub use init::InitReport;
pub use ping::{ping_line, PingReport};
pub use shutdown::ShutdownReport;
pub use status::StatusReport;

/// Human-readable rendering of a report.
pub trait Render {
    /// The text printed without `--json`; `now_ms` is the host's unix time in ms.
    fn human(&self, now_ms: u64) -> String;
}

/// Prints `report` on stdout as one JSON line or as text.
pub fn emit<R: Serialize + Render>(report: &R, json: bool) -> std::io::Result<()> {
    let text = if json {
        serde_json::to_string(report).map_err(std::io::Error::other)?
    } else {
        report.human(now_unix_ms())
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", text.trim_end())?;
    out.flush()
}

/// The host's current unix time in milliseconds.
pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
