//! The freezer made observable: [`FreezerTelemetry`] receives the freezer's events and turns
//! them into a span and metrics per filesystem operation and per phase, so a trace of Quiesce
//! shows where its time went (pre-sync, each level's FIFREEZE) and the metrics count every
//! ioctl.
//!
//! The freezer runs its ioctls on blocking threads; it enters the caller's span there, so the
//! spans made here are children of the RPC span (and of the host's span through it).

use std::time::{Duration, Instant, SystemTime};

use tracing::field::Empty;
use tracing::span::EnteredSpan;

use super::metrics::{FsOp, OpResult, Origin, Phase};
use crate::freezer::events::{CallScope, FreezerEvents, PhaseScope, ThawCause};
use crate::freezer::{FsIdentity, FsReport, Outcome};

/// The agent's telemetry as the freezer's observer: give it to
/// [`Freezer::with_events`](crate::freezer::Freezer::with_events).
#[derive(Debug, Clone, Copy, Default)]
pub struct FreezerTelemetry;

impl FreezerEvents for FreezerTelemetry {
    fn phase_begun(&self, phase: Phase) -> Box<dyn PhaseScope> {
        Box::new(PhaseGuard::start(phase))
    }

    fn freeze_begun(&self, fs: &FsIdentity) -> Box<dyn CallScope> {
        Box::new(FsCall::start(FsOp::Freeze, fs, None))
    }

    fn thaw_begun(&self, fs: &FsIdentity, frozen_since: SystemTime) -> Box<dyn CallScope> {
        Box::new(FsCall::start(FsOp::Thaw, fs, Some(frozen_since)))
    }

    fn thawed(&self, reports: &[FsReport], cause: ThawCause) {
        thawed(reports, cause == ThawCause::Watchdog);
    }
}

/// One FIFREEZE or FITHAW in progress: a span named `fs.freeze` / `fs.thaw` with the
/// filesystem's mountpoint and type; [`FsCall::finish`] adds the outcome and duration. A thaw
/// span also summarises the writers the freeze blocked (`blocked_writers`, `longest_stall_ms`)
/// when the eBPF observer runs.
struct FsCall {
    span: EnteredSpan,
    op: FsOp,
    start: Instant,
    mountpoint: String,
    fstype: String,
    frozen_since: Option<SystemTime>,
}

impl FsCall {
    fn start(op: FsOp, fs: &FsIdentity, frozen_since: Option<SystemTime>) -> Self {
        let mountpoint = fs.mount_point.display().to_string();
        let span = match op {
            FsOp::Freeze => tracing::info_span!(
                "fs.freeze",
                mountpoint = %mountpoint,
                fstype = %fs.fstype,
                device = %fs.source,
                outcome = Empty,
                duration_ms = Empty,
            ),
            FsOp::Thaw => tracing::info_span!(
                "fs.thaw",
                mountpoint = %mountpoint,
                fstype = %fs.fstype,
                device = %fs.source,
                outcome = Empty,
                duration_ms = Empty,
                frozen_ms = Empty,
                blocked_writers = Empty,
                longest_stall_ms = Empty,
            ),
        };
        if op == FsOp::Thaw {
            // Writers blocked by a freeze wait until its thaw: the ones blocked now are all of
            // them (as far as the eBPF observer saw).
            if let Some((n, longest)) = super::writers::blocked_now(&fs.mount_point) {
                span.record("blocked_writers", n as u64);
                span.record("longest_stall_ms", longest.as_secs_f64() * 1e3);
            }
        }
        Self {
            span: span.entered(),
            op,
            start: Instant::now(),
            mountpoint,
            fstype: fs.fstype.clone(),
            frozen_since,
        }
    }

    /// Ends the span with `outcome`. A freeze also counts its result; a successful thaw
    /// records how long the filesystem was frozen.
    fn finish(self, outcome: Outcome) {
        let took = self.start.elapsed();
        self.span.record("outcome", outcome_name(outcome));
        self.span.record("duration_ms", took.as_secs_f64() * 1e3);
        let m = super::metrics();
        match self.op {
            FsOp::Freeze => m.record_fs_operation(FsOp::Freeze, freeze_result(outcome)),
            FsOp::Thaw => {
                if let (Outcome::Thawed, Some(since)) = (outcome, self.frozen_since) {
                    let frozen = since.elapsed().unwrap_or(Duration::ZERO);
                    self.span.record("frozen_ms", frozen.as_secs_f64() * 1e3);
                    m.record_freeze_duration(&self.mountpoint, &self.fstype, Origin::Agent, frozen);
                }
            }
        }
    }
}

impl CallScope for FsCall {
    fn ended(self: Box<Self>, outcome: Outcome) {
        self.finish(outcome);
    }
}

/// Counts the thaws in `reports` (by the watchdog or not).
fn thawed(reports: &[FsReport], by_watchdog: bool) {
    let m = super::metrics();
    for r in reports {
        let result = match r.outcome {
            Outcome::Thawed if by_watchdog => OpResult::Watchdog,
            Outcome::Thawed => OpResult::Success,
            Outcome::Failed => OpResult::Error,
            _ => OpResult::Skipped,
        };
        m.record_fs_operation(FsOp::Thaw, result);
    }
}

fn freeze_result(outcome: Outcome) -> OpResult {
    match outcome {
        Outcome::Frozen => OpResult::Success,
        Outcome::Failed => OpResult::Error,
        _ => OpResult::Skipped,
    }
}

/// The outcome as span attributes show it.
pub fn outcome_name(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Frozen => "frozen",
        Outcome::Thawed => "thawed",
        Outcome::Skipped => "skipped",
        Outcome::AlreadyFrozen => "already_frozen",
        Outcome::Failed => "failed",
        Outcome::RolledBack => "rolled_back",
        Outcome::NotFrozen => "not_frozen",
    }
}

/// A phase of Quiesce or Thaw: a span `phase.<name>` entered until drop, when the phase's
/// duration is recorded.
struct PhaseGuard {
    _span: EnteredSpan,
    phase: Phase,
    start: Instant,
}

impl PhaseGuard {
    /// Starts `phase` on this thread, as a child of the current span.
    fn start(phase: Phase) -> Self {
        let span = match phase {
            Phase::Presync => tracing::info_span!("phase.presync"),
            Phase::Freeze => tracing::info_span!("phase.freeze"),
            Phase::Thaw => tracing::info_span!("phase.thaw"),
        };
        Self {
            _span: span.entered(),
            phase,
            start: Instant::now(),
        }
    }
}

impl PhaseScope for PhaseGuard {
    fn ended(self: Box<Self>) {
        // Dropping it records the phase and leaves its span.
    }
}

impl Drop for PhaseGuard {
    fn drop(&mut self) {
        super::metrics().record_phase(self.phase, self.start.elapsed());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_map_outcomes() {
        assert_eq!(freeze_result(Outcome::Frozen), OpResult::Success);
        assert_eq!(freeze_result(Outcome::AlreadyFrozen), OpResult::Skipped);
        assert_eq!(freeze_result(Outcome::Failed), OpResult::Error);
        assert_eq!(outcome_name(Outcome::RolledBack), "rolled_back");
    }
}
