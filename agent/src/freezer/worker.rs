//! The blocking half of the freezer: walks the plan's levels issuing FIFREEZE, rolls back on
//! failure, and thaws in reverse. Runs on a blocking thread only.

use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Instant, SystemTime};

use nix::errno::Errno;

use super::events::{FreezerEvents, ThawCause};
use super::ioctl::{self, errno_text};
use super::report::{FsIdentity, FsReport, Outcome};
use super::state::{Held, SharedState};

/// One filesystem to freeze and its level in the dependency graph.
#[derive(Debug, Clone)]
pub struct Step {
    /// Which filesystem.
    pub fs: FsIdentity,
    /// Dependency level: level 0 is frozen first and thawed last.
    pub level: usize,
}

/// Hand-off between the async caller and the blocking worker, so exactly one of them decides
/// what happens to a freeze that finishes after the caller gave up waiting.
#[derive(Debug, Default)]
pub struct Handoff(AtomicU8);

const RUNNING: u8 = 0;
const DONE: u8 = 1;
const ABANDONED: u8 = 2;

impl Handoff {
    /// Called by the caller on timeout. True if the worker had not finished: it will then
    /// undo its own work when it does.
    pub fn abandon(&self) -> bool {
        self.0
            .compare_exchange(RUNNING, ABANDONED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    fn finish(&self) -> bool {
        self.0
            .compare_exchange(RUNNING, DONE, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    fn abandoned(&self) -> bool {
        self.0.load(Ordering::Acquire) == ABANDONED
    }
}

/// Why a freeze did not complete.
#[derive(Debug, thiserror::Error)]
pub enum FreezeError {
    /// A filesystem failed; everything frozen before it was thawed again.
    #[error("freezing {} ({} on {}) failed: {detail}; rolled back {rolled_back} filesystem(s) frozen before it", .fs.mount_point.display(), .fs.fstype, .fs.source)]
    Failed {
        /// The filesystem that failed.
        fs: Box<FsIdentity>,
        /// errno text or reason.
        detail: String,
        /// How many were thawed again.
        rolled_back: usize,
        /// Every filesystem's outcome.
        reports: Vec<FsReport>,
    },
    /// The caller gave up waiting; whatever was frozen has been thawed.
    #[error(
        "freeze abandoned after the caller's deadline; {rolled_back} filesystem(s) thawed again"
    )]
    Abandoned {
        /// How many were thawed again.
        rolled_back: usize,
    },
}

/// Freezes `steps` level by level (steps must be sorted by level): the members of one level do
/// not depend on each other, so with `parallel` they are frozen concurrently, one thread each.
/// Each success is published to `state` at once, so FreezeStatus sees progress; every ioctl
/// (and a rollback's thaw) is reported to `events`.
pub fn freeze_all(
    steps: &[Step],
    parallel: bool,
    state: &SharedState,
    handoff: &Handoff,
    events: &dyn FreezerEvents,
) -> Result<Vec<FsReport>, FreezeError> {
    let mut reports = Vec::with_capacity(steps.len());
    for level in steps.chunk_by(|a, b| a.level == b.level) {
        if handoff.abandoned() {
            break;
        }
        {
            let mut st = state.lock();
            st.pending = level.iter().map(|s| s.fs.clone()).collect();
            state.persist(&st);
        }
        let results: Vec<_> = if parallel && level.len() > 1 {
            std::thread::scope(|s| {
                let handles: Vec<_> = level
                    .iter()
                    .map(|step| {
                        // The per-filesystem spans are children of the caller's span.
                        let parent = tracing::Span::current();
                        s.spawn(move || parent.in_scope(|| freeze_one(step, state, events)))
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().expect("freeze thread panicked"))
                    .collect()
            })
        } else {
            let mut out = Vec::with_capacity(level.len());
            for step in level {
                if handoff.abandoned() {
                    break;
                }
                let r = freeze_one(step, state, events);
                let failed = r.0 == Outcome::Failed;
                out.push(r);
                if failed {
                    break;
                }
            }
            out
        };
        {
            let mut st = state.lock();
            st.pending.clear();
            state.persist(&st);
        }
        let mut failure = None;
        for (step, (outcome, detail, duration)) in level.iter().zip(results) {
            if outcome == Outcome::Failed && failure.is_none() {
                failure = Some((Box::new(step.fs.clone()), detail.clone()));
            }
            reports.push(FsReport {
                fs: step.fs.clone(),
                outcome,
                detail,
                duration,
            });
        }
        if let Some((fs, detail)) = failure {
            let rolled_back = rollback(state, &mut reports, events);
            handoff.finish();
            return Err(FreezeError::Failed {
                fs,
                detail,
                rolled_back,
                reports,
            });
        }
    }
    if !handoff.finish() {
        let rolled_back = rollback(state, &mut reports, events);
        tracing::warn!(
            rolled_back,
            "freeze finished after its caller gave up; thawed it again"
        );
        return Err(FreezeError::Abandoned { rolled_back });
    }
    Ok(reports)
}

/// FIFREEZE of one filesystem, between its begin and end events.
fn freeze_one(
    step: &Step,
    state: &SharedState,
    events: &dyn FreezerEvents,
) -> (Outcome, String, std::time::Duration) {
    let call = events.freeze_begun(&step.fs);
    let r = freeze_ioctl(step, state);
    call.ended(r.0);
    r
}

fn freeze_ioctl(step: &Step, state: &SharedState) -> (Outcome, String, std::time::Duration) {
    let start = Instant::now();
    let fd = match ioctl::open_mountpoint(&step.fs.mount_point, step.fs.expected()) {
        Ok(fd) => fd,
        Err(e) => return (Outcome::Failed, e.to_string(), start.elapsed()),
    };
    let res = ioctl::freeze(&fd);
    let took = start.elapsed();
    match res {
        Ok(()) => {
            tracing::info!(mountpoint = %step.fs.mount_point.display(), fstype = %step.fs.fstype,
                ms = took.as_secs_f64() * 1e3, "frozen");
            let held = Held {
                fs: step.fs.clone(),
                fd,
                since: SystemTime::now(),
                level: step.level,
            };
            let mut st = state.lock();
            st.frozen_since.get_or_insert(held.since);
            st.pending.retain(|p| p.dev != held.fs.dev);
            st.held.push(held);
            state.persist(&st);
            (Outcome::Frozen, String::new(), took)
        }
        Err(Errno::EBUSY) => (
            Outcome::AlreadyFrozen,
            "already frozen by someone else (EBUSY); not counted, will not be thawed by the agent"
                .into(),
            took,
        ),
        Err(Errno::EOPNOTSUPP) => (
            Outcome::Skipped,
            "filesystem does not support freezing (EOPNOTSUPP)".into(),
            took,
        ),
        Err(e) => (Outcome::Failed, errno_text(e), took),
    }
}

/// Thaws everything held (the whole freeze is this operation's) and marks the reports.
fn rollback(state: &SharedState, reports: &mut [FsReport], events: &dyn FreezerEvents) -> usize {
    let thawed = thaw_all(state, true, events);
    events.thawed(&thawed, ThawCause::Rollback);
    for t in &thawed {
        if let Some(r) = reports
            .iter_mut()
            .find(|r| r.fs.dev == t.fs.dev && r.outcome == Outcome::Frozen)
        {
            r.outcome = Outcome::RolledBack;
            if t.outcome != Outcome::Thawed {
                r.detail = format!("rollback thaw: {}", t.detail);
            }
        }
    }
    state.lock().clear_freeze();
    thawed.len()
}

/// Thaws every held filesystem, highest level first (the reverse of the freeze order; within
/// a level the last frozen first, or all at once with `parallel`). Filesystems whose FITHAW
/// fails with anything but EINVAL stay held so a retry can try again. Every FITHAW is reported
/// to `events`.
pub fn thaw_all(state: &SharedState, parallel: bool, events: &dyn FreezerEvents) -> Vec<FsReport> {
    let mut held = {
        let mut st = state.lock();
        let held = std::mem::take(&mut st.held);
        st.thawing = held.iter().map(Held::info).collect();
        held
    };
    held.reverse();
    // Stable: within a level the reverse freeze order is kept.
    held.sort_by_key(|h| std::cmp::Reverse(h.level));
    let mut reports = Vec::with_capacity(held.len());
    let mut keep = Vec::new();
    let mut rest = held;
    while !rest.is_empty() {
        let level = rest[0].level;
        let split = rest
            .iter()
            .position(|h| h.level != level)
            .unwrap_or(rest.len());
        let tail = rest.split_off(split);
        let group = std::mem::replace(&mut rest, tail);
        let results: Vec<_> = if parallel && group.len() > 1 {
            std::thread::scope(|s| {
                let handles: Vec<_> = group
                    .iter()
                    .map(|h| {
                        let parent = tracing::Span::current();
                        s.spawn(move || parent.in_scope(|| thaw_one(h, events)))
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|j| j.join().expect("thaw thread panicked"))
                    .collect()
            })
        } else {
            group.iter().map(|h| thaw_one(h, events)).collect()
        };
        for (h, report) in group.into_iter().zip(results) {
            if report.outcome == Outcome::Failed {
                keep.push(h);
            }
            reports.push(report);
        }
    }
    let mut st = state.lock();
    st.thawing.clear();
    if !keep.is_empty() {
        keep.reverse();
        st.held.extend(keep);
    }
    state.persist(&st);
    reports
}

/// FITHAW of one filesystem, between its begin and end events.
fn thaw_one(h: &Held, events: &dyn FreezerEvents) -> FsReport {
    let call = events.thaw_begun(&h.fs, h.since);
    let report = thaw_ioctl(h);
    call.ended(report.outcome);
    report
}

fn thaw_ioctl(h: &Held) -> FsReport {
    let start = Instant::now();
    let res = ioctl::thaw(&h.fd);
    let duration = start.elapsed();
    let (outcome, detail) = match res {
        Ok(()) => (Outcome::Thawed, String::new()),
        Err(Errno::EINVAL) => (
            Outcome::NotFrozen,
            "was no longer frozen (EINVAL): thawed by someone else".into(),
        ),
        Err(e) => (Outcome::Failed, errno_text(e)),
    };
    tracing::info!(mountpoint = %h.fs.mount_point.display(), ?outcome,
        ms = duration.as_secs_f64() * 1e3, "thaw");
    FsReport {
        fs: h.fs.clone(),
        outcome,
        detail,
        duration,
    }
}
