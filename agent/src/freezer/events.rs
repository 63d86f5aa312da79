//! What the freezer tells an observer while it works: each phase of a Quiesce or Thaw, each
//! FIFREEZE and FITHAW with its outcome, and each set of filesystems thawed (by a Thaw, a
//! rollback or the watchdog).
//!
//! The freezer only emits; whoever wants to watch (the agent's telemetry: spans and metrics)
//! implements [`FreezerEvents`] and is handed to [`super::Freezer::with_events`]. Without one
//! the freezer runs with [`NoEvents`], so it needs no telemetry to work or to be tested.
//!
//! Every call is made on the thread doing the work, and a phase or an ioctl ends on the thread
//! it began on: an observer may enter a tracing span at the beginning and keep it entered in
//! the scope it returns, so that what is logged meanwhile belongs to it.

use std::time::SystemTime;

use super::report::{FsIdentity, FsReport, Outcome};

/// A phase of Quiesce or Thaw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Parallel `syncfs` rounds before FIFREEZE.
    Presync,
    /// The FIFREEZE walk over every dependency level.
    Freeze,
    /// The FITHAW walk.
    Thaw,
}

impl Phase {
    /// The phase's name: `presync`, `freeze`, `thaw`.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Presync => "presync",
            Phase::Freeze => "freeze",
            Phase::Thaw => "thaw",
        }
    }
}

/// Who asked for a thaw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThawCause {
    /// A Thaw call (the RPC, or the thaw on the way out).
    Client,
    /// A Quiesce that failed part-way, undoing what it had frozen.
    Rollback,
    /// The watchdog, because no Thaw arrived before its deadline.
    Watchdog,
}

impl ThawCause {
    /// The operation's name in errors and logs.
    pub const fn op(self) -> &'static str {
        match self {
            Self::Client => "Thaw",
            Self::Rollback => "rollback thaw",
            Self::Watchdog => "watchdog thaw",
        }
    }
}

/// A phase in progress, as the observer tracks it.
pub trait PhaseScope {
    /// The phase ended.
    fn ended(self: Box<Self>);
}

/// A FIFREEZE or FITHAW in progress, as the observer tracks it.
pub trait CallScope {
    /// The ioctl returned (or could not be issued) with `outcome`.
    fn ended(self: Box<Self>, outcome: Outcome);
}

/// Receives the freezer's events. Every method has a do-nothing default, so an observer
/// implements only what it needs. Calls must return quickly and never block: they run in the
/// middle of a freeze.
pub trait FreezerEvents: Send + Sync {
    /// `phase` begins on the calling thread; the returned scope is ended when it is over.
    fn phase_begun(&self, phase: Phase) -> Box<dyn PhaseScope> {
        let _ = phase;
        Box::new(Unobserved)
    }

    /// A FIFREEZE of `fs` begins on the calling thread; the returned scope is ended with its
    /// outcome.
    fn freeze_begun(&self, fs: &FsIdentity) -> Box<dyn CallScope> {
        let _ = fs;
        Box::new(Unobserved)
    }

    /// A FITHAW of `fs`, frozen since `frozen_since`, begins on the calling thread; the
    /// returned scope is ended with its outcome.
    fn thaw_begun(&self, fs: &FsIdentity, frozen_since: SystemTime) -> Box<dyn CallScope> {
        let _ = (fs, frozen_since);
        Box::new(Unobserved)
    }

    /// A thaw for `cause` is done: one report per filesystem it tried to thaw (empty when a
    /// rollback found nothing frozen).
    fn thawed(&self, reports: &[FsReport], cause: ThawCause) {
        let _ = (reports, cause);
    }
}

/// The observer used when nobody watches: ignores every event.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoEvents;

impl FreezerEvents for NoEvents {}

/// `events`, then `after_thaw` once each set of thaws is done (after [`FreezerEvents::thawed`]
/// of `events`): e.g. to have the eBPF observer look at the filesystems now rather than at its
/// next poll.
#[derive(Debug, Clone)]
pub struct ThenAfterThaw<E, F> {
    events: E,
    after_thaw: F,
}

impl<E: FreezerEvents, F: Fn() + Send + Sync> ThenAfterThaw<E, F> {
    /// `events`, followed by `after_thaw` after each set of thaws.
    pub fn new(events: E, after_thaw: F) -> Self {
        Self { events, after_thaw }
    }
}

impl<E: FreezerEvents, F: Fn() + Send + Sync> FreezerEvents for ThenAfterThaw<E, F> {
    fn phase_begun(&self, phase: Phase) -> Box<dyn PhaseScope> {
        self.events.phase_begun(phase)
    }

    fn freeze_begun(&self, fs: &FsIdentity) -> Box<dyn CallScope> {
        self.events.freeze_begun(fs)
    }

    fn thaw_begun(&self, fs: &FsIdentity, frozen_since: SystemTime) -> Box<dyn CallScope> {
        self.events.thaw_begun(fs, frozen_since)
    }

    fn thawed(&self, reports: &[FsReport], cause: ThawCause) {
        self.events.thawed(reports, cause);
        (self.after_thaw)();
    }
}

/// The scope of a phase or call nobody watches.
struct Unobserved;

impl PhaseScope for Unobserved {
    fn ended(self: Box<Self>) {}
}

impl CallScope for Unobserved {
    fn ended(self: Box<Self>, _outcome: Outcome) {}
}

/// A phase begun on `events`, ended when dropped (also when the work in between panics).
pub(super) struct PhaseGuard(Option<Box<dyn PhaseScope>>);

impl PhaseGuard {
    /// Begins `phase` on `events`.
    pub(super) fn begin(events: &dyn FreezerEvents, phase: Phase) -> Self {
        Self(Some(events.phase_begun(phase)))
    }
}

impl Drop for PhaseGuard {
    fn drop(&mut self) {
        if let Some(scope) = self.0.take() {
            scope.ended();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Records which `thawed` ran, in order.
    #[derive(Clone, Default)]
    struct Log(Arc<Mutex<Vec<&'static str>>>);

    impl FreezerEvents for Log {
        fn thawed(&self, _reports: &[FsReport], _cause: ThawCause) {
            self.0.lock().unwrap().push("events");
        }
    }

    #[test]
    fn after_thaw_runs_once_per_set_of_thaws_after_the_events() {
        let log = Log::default();
        let after = log.clone();
        let tee = ThenAfterThaw::new(log.clone(), move || after.0.lock().unwrap().push("after"));
        // Phases and ioctls pass through without calling it.
        tee.phase_begun(Phase::Thaw).ended();
        assert!(log.0.lock().unwrap().is_empty());
        tee.thawed(&[], ThawCause::Client);
        tee.thawed(&[], ThawCause::Watchdog);
        assert_eq!(
            *log.0.lock().unwrap(),
            ["events", "after", "events", "after"]
        );
    }
}
