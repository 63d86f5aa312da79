//! The filesystem freezer: Quiesce (FIFREEZE) and Thaw (FITHAW) with a dependency-ordered
//! plan, all-or-nothing rollback, a watchdog that thaws when the host vanishes, and state
//! readable at any time without waiting for the kernel.
//!
//! Data flows one way: the service calls [`Freezer`], which plans from mountinfo
//! ([`crate::mounts`]), then hands the plan to a blocking worker ([`worker`]) that issues the
//! ioctls ([`ioctl`]). Only one Quiesce/Thaw runs at a time (the operation lock); the state
//! mutex is held only for field updates, never across an ioctl.
//!
//! The freezer imports nothing from the agent's telemetry: it reports its phases and ioctls
//! through [`events::FreezerEvents`], which the telemetry implements.

pub mod events;
pub mod hooks;
pub mod ioctl;
pub mod journal;
pub mod presync;
pub mod rcu;
pub mod recovery;
pub mod report;
pub mod state;
mod watchdog;
pub mod worker;

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::Mutex as AsyncMutex;
use tracing::Instrument;

use crate::mounts::{self, Policy};
use events::{FreezerEvents, NoEvents, Phase, PhaseGuard, ThawCause};
pub use report::{
    FreezeStatus, FrozenInfo, FsIdentity, FsReport, Outcome, QuiesceReport, ThawReport,
    WatchdogThaw,
};
use state::SharedState;
use worker::{FreezeError, Handoff, Step};

/// How the freezer behaves; from the command line.
#[derive(Debug, Clone)]
pub struct FreezerConfig {
    /// Only mounts at or below these paths are eligible; empty means every eligible mount.
    pub freeze_only: Vec<PathBuf>,
    /// Thaw automatically when no Thaw arrives within this time after a Quiesce.
    pub watchdog_timeout: Duration,
    /// Longest a Quiesce or Thaw call waits for the kernel (and for another operation).
    pub operation_timeout: Duration,
    /// Sync every filesystem in parallel before freezing (None: off).
    pub presync: Option<presync::PresyncConfig>,
    /// Freeze (and thaw) the filesystems of one dependency level concurrently.
    pub parallel: bool,
    /// Expedite RCU grace periods while FIFREEZE runs ([`rcu`]); the marker directory is
    /// filled in from the journal.
    pub expedite_rcu: bool,
    /// Freeze/thaw hooks, if configured.
    pub hooks: Option<hooks::HooksConfig>,
}

/// Why a freezer operation failed. Mapped to gRPC status codes in [`crate::error`].
#[derive(Debug, thiserror::Error)]
pub enum FreezerError {
    /// The request names something that cannot be frozen (not a mount, pseudo fs, ...).
    #[error("{0}")]
    InvalidRequest(String),
    /// Reading the mount table failed.
    #[error("cannot read the mount table: {0}")]
    Mounts(String),
    /// A different set is already frozen by the agent.
    #[error("already frozen by the agent: {} (by a Quiesce of {}); thaw first (requested now: {})", paths(.held), selection(.held_selection), selection(.requested))]
    AlreadyFrozen {
        /// Mountpoints held frozen.
        held: Vec<PathBuf>,
        /// What the Quiesce that froze them asked for (empty: all eligible).
        held_selection: Vec<PathBuf>,
        /// Mountpoints requested now (empty: all eligible).
        requested: Vec<PathBuf>,
    },
    /// Another Quiesce or Thaw did not finish in time.
    #[error("another freeze operation is still in progress after {0:?}")]
    Busy(Duration),
    /// The kernel did not finish in time; the late result is undone by the worker.
    #[error("{op} did not finish within {after:?}; whatever it froze will be thawed when the kernel returns")]
    Timeout {
        /// Which operation.
        op: &'static str,
        /// How long the call waited.
        after: Duration,
    },
    /// A filesystem failed to freeze; everything frozen before it was thawed.
    #[error(transparent)]
    Freeze(#[from] FreezeError),
    /// Some filesystems could not be thawed; they stay held for a retry.
    #[error("thaw failed for {}", .failed.join(", "))]
    ThawFailed {
        /// `mountpoint: errno` for each failure.
        failed: Vec<String>,
        /// Every filesystem's outcome.
        reports: Vec<FsReport>,
    },
    /// A freeze hook failed; nothing was frozen (thaw hooks have run).
    #[error("Quiesce aborted by a freeze hook: {0}")]
    Hook(#[from] hooks::HookError),
    /// A blocking task panicked or was cancelled.
    #[error("internal error: {0}")]
    Internal(String),
}

fn paths(p: &[PathBuf]) -> String {
    p.iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A Quiesce's mountpoint selection as a person reads it.
fn selection(p: &[PathBuf]) -> String {
    if p.is_empty() {
        "every eligible filesystem".to_string()
    } else {
        paths(p)
    }
}

struct Inner {
    cfg: FreezerConfig,
    state: SharedState,
    op_lock: Arc<AsyncMutex<()>>,
    /// The RCU knob and its marker in the state directory.
    rcu: rcu::RcuExpedite,
    /// Who hears about phases, ioctls and thaws.
    events: Arc<dyn FreezerEvents>,
}

/// Handle to the freezer; cheap to clone, shared by the service, the watchdog and shutdown.
#[derive(Clone)]
pub struct Freezer {
    inner: Arc<Inner>,
}

impl Freezer {
    /// Creates a freezer that holds nothing frozen, journalling to `journal`; nobody hears
    /// its events.
    pub fn new(cfg: FreezerConfig, journal: journal::Journal) -> Self {
        Self::with_events(cfg, journal, Arc::new(NoEvents))
    }

    /// Like [`Freezer::new`], reporting every phase, ioctl and thaw to `events`.
    pub fn with_events(
        cfg: FreezerConfig,
        journal: journal::Journal,
        events: Arc<dyn FreezerEvents>,
    ) -> Self {
        let rcu = rcu::RcuExpedite::new(journal.dir());
        Self {
            inner: Arc::new(Inner {
                cfg,
                state: SharedState::new(journal),
                op_lock: Arc::new(AsyncMutex::new(())),
                rcu,
                events,
            }),
        }
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &FreezerConfig {
        &self.inner.cfg
    }

    /// True while the agent holds at least one filesystem frozen.
    pub fn is_frozen(&self) -> bool {
        !self.inner.state.lock().held.is_empty()
    }

    /// Current state, without waiting for any operation in progress.
    pub fn status(&self) -> FreezeStatus {
        let st = self.inner.state.lock();
        FreezeStatus {
            frozen: st
                .held
                .iter()
                .map(|h| h.info())
                .chain(st.thawing.iter().cloned())
                .collect(),
            frozen_since: st.frozen_since,
            watchdog_deadline: st.deadline.map(|d| d.0),
            watchdog_timeout: self.inner.cfg.watchdog_timeout,
            operation_in_progress: st.in_progress,
            last_watchdog_thaw: st.last_watchdog.clone(),
            watchdog_thaws: st.watchdog_thaws,
            recovered_thaws: st.recovered_thaws,
        }
    }

    /// Thaws what a previous agent left frozen (from the journal), and puts back an RCU knob it
    /// left expedited; call once at start.
    pub async fn recover(&self) -> Vec<(journal::Entry, recovery::Recovered)> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            this.inner.rcu.recover();
            recovery::recover(&this.inner.state)
        })
        .await
        .unwrap_or_default()
    }

    /// Freezes the requested mountpoints (empty: every eligible filesystem), all or nothing.
    /// Idempotent for the same selection while frozen.
    ///
    /// Runs as its own task: a caller that goes away (a cancelled gRPC call) does not stop it
    /// half-way, so a freeze that happened is always armed with its watchdog.
    pub async fn quiesce(&self, requested: Vec<String>) -> Result<QuiesceReport, FreezerError> {
        let this = self.clone();
        let op = async move { this.quiesce_inner(requested).await };
        tokio::spawn(op.instrument(tracing::Span::current()))
            .await
            .map_err(|e| FreezerError::Internal(e.to_string()))?
    }

    async fn quiesce_inner(&self, requested: Vec<String>) -> Result<QuiesceReport, FreezerError> {
        let requested = normalise(&requested)?;
        let timeout = self.inner.cfg.operation_timeout;
        let started = Instant::now();
        let guard = tokio::time::timeout(timeout, self.inner.op_lock.clone().lock_owned())
            .await
            .map_err(|_| FreezerError::Busy(timeout))?;
        {
            let st = self.inner.state.lock();
            if !st.held.is_empty() {
                if st.selection == requested {
                    return Ok(QuiesceReport {
                        frozen_count: st.held.len() as u32,
                        filesystems: st.results.clone(),
                        watchdog_deadline: st.deadline.map(|d| d.0),
                    });
                }
                return Err(FreezerError::AlreadyFrozen {
                    held: st.held.iter().map(|h| h.fs.mount_point.clone()).collect(),
                    held_selection: st.selection.clone(),
                    requested,
                });
            }
        }
        let policy = Policy {
            freeze_only: self.inner.cfg.freeze_only.clone(),
            requested: requested.clone(),
        };
        let (steps, skipped) = tokio::task::spawn_blocking(move || plan_steps(&policy))
            .await
            .map_err(|e| FreezerError::Internal(e.to_string()))??;

        if let Some(h) = &self.inner.cfg.hooks {
            if let Err(e) = hooks::run(h, hooks::Phase::Freeze, &[]).await {
                let _ = hooks::run(h, hooks::Phase::Thaw, &[]).await;
                return Err(e.into());
            }
        }
        let this = self.clone();
        let handoff = Arc::new(Handoff::default());
        let worker_handoff = handoff.clone();
        self.inner.state.lock().in_progress = true;
        let span = tracing::Span::current();
        let task = tokio::task::spawn_blocking(move || {
            // The operation lock travels with the worker: a timed-out caller does not let the
            // next operation start until the kernel has returned and the worker has cleaned up.
            // On success it comes back, so the freeze is armed before anyone can thaw it.
            let guard = guard;
            let _span = span.entered();
            let events = &*this.inner.events;
            if let Some(cfg) = this.inner.cfg.presync {
                let _phase = PhaseGuard::begin(events, Phase::Presync);
                let paths: Vec<_> = steps.iter().map(|s| s.fs.mount_point.clone()).collect();
                let r = presync::presync(&paths, &cfg);
                tracing::debug!(rounds = ?r.rounds, total_ms = r.total.as_secs_f64() * 1e3, "pre-sync");
            }
            // Set before the phase timer starts and put back right after the last FIFREEZE
            // (outside the phase timer, though already while frozen: a sysfs write and the
            // unlink of a marker on the tmpfs state dir). Not set when nothing is to be frozen.
            let expedited =
                (this.inner.cfg.expedite_rcu && !steps.is_empty()).then(|| this.inner.rcu.begin());
            let phase = PhaseGuard::begin(events, Phase::Freeze);
            let res = worker::freeze_all(
                &steps,
                this.inner.cfg.parallel,
                &this.inner.state,
                &worker_handoff,
                events,
            );
            drop(phase);
            drop(expedited);
            if res.is_err() {
                // On success `arm` clears it, after the watchdog is set: nobody sees a freeze
                // that is complete but not yet armed as finished.
                this.inner.state.lock().in_progress = false;
            }
            (res, guard)
        });
        let remaining = timeout.saturating_sub(started.elapsed());
        let mut task = task;
        let (res, guard) = match tokio::time::timeout(remaining, &mut task).await {
            Ok(joined) => joined.map_err(|e| FreezerError::Internal(e.to_string()))?,
            Err(_) => {
                if handoff.abandon() {
                    // The worker undoes its freeze when the kernel returns; thaw hooks follow.
                    let this = self.clone();
                    tokio::spawn(async move {
                        let _ = task.await;
                        this.run_thaw_hooks().await;
                    });
                    return Err(FreezerError::Timeout {
                        op: "Quiesce",
                        after: timeout,
                    });
                }
                // The worker finished at the same moment; its result is ours.
                task.await
                    .map_err(|e| FreezerError::Internal(e.to_string()))?
            }
        };
        let mut reports = match res {
            Ok(r) => r,
            Err(e) => {
                drop(guard);
                self.run_thaw_hooks().await;
                return Err(e.into());
            }
        };
        reports.extend(skipped);
        let report = self.arm(requested, reports);
        drop(guard);
        Ok(report)
    }

    /// Records a completed freeze and starts its watchdog.
    fn arm(&self, selection: Vec<PathBuf>, reports: Vec<FsReport>) -> QuiesceReport {
        let mut st = self.inner.state.lock();
        st.generation += 1;
        let frozen_count = st.held.len() as u32;
        let deadline = if frozen_count > 0 {
            let t = self.inner.cfg.watchdog_timeout;
            let d = (SystemTime::now() + t, Instant::now() + t);
            st.deadline = Some(d);
            watchdog::spawn(self.clone(), st.generation, d.1);
            Some(d.0)
        } else {
            None
        };
        st.selection = selection;
        st.results = reports.clone();
        st.in_progress = false;
        QuiesceReport {
            frozen_count,
            filesystems: reports,
            watchdog_deadline: deadline,
        }
    }

    /// Thaws everything the agent froze (and nothing else). Returns 0 when nothing is frozen.
    /// Runs as its own task, like [`Freezer::quiesce`].
    pub async fn thaw(&self) -> Result<ThawReport, FreezerError> {
        let this = self.clone();
        let op = async move { this.thaw_inner().await };
        tokio::spawn(op.instrument(tracing::Span::current()))
            .await
            .map_err(|e| FreezerError::Internal(e.to_string()))?
    }

    async fn thaw_inner(&self) -> Result<ThawReport, FreezerError> {
        let timeout = self.inner.cfg.operation_timeout;
        let guard = tokio::time::timeout(timeout, self.inner.op_lock.clone().lock_owned())
            .await
            .map_err(|_| FreezerError::Busy(timeout))?;
        self.thaw_locked(guard, timeout, ThawCause::Client).await
    }

    async fn thaw_locked(
        &self,
        guard: tokio::sync::OwnedMutexGuard<()>,
        timeout: Duration,
        cause: ThawCause,
    ) -> Result<ThawReport, FreezerError> {
        if self.inner.state.lock().held.is_empty() {
            return Ok(ThawReport::default());
        }
        let this = self.clone();
        self.inner.state.lock().in_progress = true;
        let span = tracing::Span::current();
        let task = tokio::task::spawn_blocking(move || {
            let _guard = guard;
            let _span = span.entered();
            let events = &*this.inner.events;
            let phase = PhaseGuard::begin(events, Phase::Thaw);
            let reports = worker::thaw_all(&this.inner.state, this.inner.cfg.parallel, events);
            drop(phase);
            events.thawed(&reports, cause);
            let mut st = this.inner.state.lock();
            st.in_progress = false;
            if cause == ThawCause::Watchdog && !reports.iter().any(|r| r.outcome == Outcome::Failed)
            {
                // Recorded with the thaw itself, so a status never shows the freeze gone
                // without the watchdog thaw that ended it.
                st.watchdog_thaws += 1;
                st.last_watchdog = Some(WatchdogThaw {
                    at: SystemTime::now(),
                    mount_points: reports.iter().map(|r| r.fs.mount_point.clone()).collect(),
                });
            }
            if st.held.is_empty() {
                st.clear_freeze();
            }
            reports
        });
        let reports = tokio::time::timeout(timeout, task)
            .await
            .map_err(|_| FreezerError::Timeout {
                op: cause.op(),
                after: timeout,
            })?
            .map_err(|e| FreezerError::Internal(e.to_string()))?;
        let failed: Vec<String> = reports
            .iter()
            .filter(|r| r.outcome == Outcome::Failed)
            .map(|r| format!("{}: {}", r.fs.mount_point.display(), r.detail))
            .collect();
        if !failed.is_empty() {
            return Err(FreezerError::ThawFailed { failed, reports });
        }
        self.run_thaw_hooks().await;
        let thawed_count = reports
            .iter()
            .filter(|r| r.outcome == Outcome::Thawed)
            .count() as u32;
        Ok(ThawReport {
            thawed_count,
            filesystems: reports,
        })
    }

    /// Runs the thaw hooks (errors are logged; thaw hooks never fail an operation).
    async fn run_thaw_hooks(&self) {
        let Some(h) = &self.inner.cfg.hooks else {
            return;
        };
        let frozen: Vec<_> = self
            .inner
            .state
            .lock()
            .held
            .iter()
            .map(|h| h.fs.dev)
            .collect();
        if let Err(e) = hooks::run(h, hooks::Phase::Thaw, &frozen).await {
            tracing::error!(error = %e, "thaw hooks");
        }
    }

    /// Thaws on the way out (Shutdown, SIGTERM): waits for a running operation as long as the
    /// operation timeout allows, then thaws whatever is held.
    pub async fn thaw_for_exit(&self) -> Result<ThawReport, FreezerError> {
        self.thaw().await
    }
}

/// Turns requested mountpoints into absolute, normalised paths; relative paths and `..` are
/// refused here so nothing reaches the mount table lookup ambiguous.
fn normalise(requested: &[String]) -> Result<Vec<PathBuf>, FreezerError> {
    let mut out = Vec::with_capacity(requested.len());
    for raw in requested {
        let p = Path::new(raw);
        if raw.is_empty() || !p.is_absolute() {
            return Err(FreezerError::InvalidRequest(format!(
                "mountpoint {raw:?} is not an absolute path"
            )));
        }
        if p.components().any(|c| c == Component::ParentDir) {
            return Err(FreezerError::InvalidRequest(format!(
                "mountpoint {raw:?} contains '..'; give the mountpoint itself"
            )));
        }
        out.push(p.components().collect::<PathBuf>());
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Reads the mount table and turns the plan into ordered steps plus skipped reports.
fn plan_steps(policy: &Policy) -> Result<(Vec<Step>, Vec<FsReport>), FreezerError> {
    let table = mounts::read_mountinfo().map_err(|e| FreezerError::Mounts(e.to_string()))?;
    let resolver = mounts::SysBackingResolver::new(&table);
    let plan = mounts::plan(&table, policy, &resolver)
        .map_err(|e| FreezerError::InvalidRequest(e.to_string()))?;
    let mut steps = Vec::with_capacity(plan.filesystems.len());
    for (level, members) in plan.levels.iter().enumerate() {
        for &i in members {
            let p = &plan.filesystems[i];
            steps.push(Step {
                fs: FsIdentity {
                    mount_point: p.mount_point.clone(),
                    fstype: p.fstype.clone(),
                    source: p.source.clone(),
                    dev: p.dev,
                    mount_id: p.mount_id,
                },
                level,
            });
        }
    }
    let skipped = plan
        .skipped
        .iter()
        .filter(|s| s.in_request)
        .map(|s| FsReport {
            fs: FsIdentity {
                mount_point: s.mount.mount_point.clone(),
                fstype: s.mount.fstype.clone(),
                source: s.mount.source.clone(),
                dev: s.mount.dev,
                mount_id: s.mount.mount_id,
            },
            outcome: Outcome::Skipped,
            detail: s.reason.to_string(),
            duration: Duration::ZERO,
        })
        .collect();
    Ok((steps, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::Mutex;

    use events::{CallScope, PhaseScope};
    use worker::Handoff;

    use crate::mounts::test_utils::{running_as_root, LoopFs, Scratch};
    use crate::mounts::DevId;

    /// One event as the test sink records it.
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Event {
        PhaseBegun(Phase),
        PhaseEnded(Phase),
        FreezeBegun(PathBuf),
        ThawBegun(PathBuf),
        CallEnded(PathBuf, Outcome),
        Thawed(Vec<(PathBuf, Outcome)>, ThawCause),
    }

    /// A sink that records every event, in order.
    #[derive(Debug, Clone, Default)]
    struct Recorder(Arc<Mutex<Vec<Event>>>);

    impl Recorder {
        fn push(&self, e: Event) {
            self.0.lock().unwrap().push(e);
        }

        fn events(&self) -> Vec<Event> {
            self.0.lock().unwrap().clone()
        }
    }

    /// A phase or call in progress: records its end.
    struct Recorded(Recorder, Event);

    impl PhaseScope for Recorded {
        fn ended(self: Box<Self>) {
            if let Event::PhaseBegun(p) = self.1 {
                self.0.push(Event::PhaseEnded(p));
            }
        }
    }

    impl CallScope for Recorded {
        fn ended(self: Box<Self>, outcome: Outcome) {
            if let Event::FreezeBegun(mp) | Event::ThawBegun(mp) = self.1 {
                self.0.push(Event::CallEnded(mp, outcome));
            }
        }
    }

    impl FreezerEvents for Recorder {
        fn phase_begun(&self, phase: Phase) -> Box<dyn PhaseScope> {
            self.begun(Event::PhaseBegun(phase))
        }

        fn freeze_begun(&self, fs: &FsIdentity) -> Box<dyn CallScope> {
            self.begun(Event::FreezeBegun(fs.mount_point.clone()))
        }

        fn thaw_begun(&self, fs: &FsIdentity, _since: SystemTime) -> Box<dyn CallScope> {
            self.begun(Event::ThawBegun(fs.mount_point.clone()))
        }

        fn thawed(&self, reports: &[FsReport], cause: ThawCause) {
            let r = reports
                .iter()
                .map(|r| (r.fs.mount_point.clone(), r.outcome))
                .collect();
            self.push(Event::Thawed(r, cause));
        }
    }

    impl Recorder {
        fn begun(&self, e: Event) -> Box<Recorded> {
            self.push(e.clone());
            Box::new(Recorded(self.clone(), e))
        }
    }

    /// FITHAWs the test's own loop filesystem when dropped, whatever the test did; a thaw of a
    /// filesystem that is not frozen is a harmless EINVAL. Declare it after the [`LoopFs`], so
    /// it runs before the unmount.
    struct ThawOnDrop(PathBuf);

    impl Drop for ThawOnDrop {
        fn drop(&mut self) {
            if let Ok(dir) = std::fs::File::open(&self.0) {
                let _ = ioctl::thaw(&dir.into());
            }
        }
    }

    #[test]
    fn a_failed_freeze_reports_its_call_and_an_empty_rollback() {
        // The identity does not match the directory, so nothing is ever frozen.
        let dir = tempfile::tempdir().unwrap();
        let real = DevId::from_dev_t(nix::sys::stat::stat(dir.path()).unwrap().st_dev);
        let step = Step {
            fs: FsIdentity {
                mount_point: dir.path().to_owned(),
                fstype: "ext4".into(),
                source: "/dev/loop99".into(),
                dev: DevId {
                    major: real.major + 1,
                    minor: real.minor,
                },
                mount_id: u32::MAX,
            },
            level: 0,
        };
        let rec = Recorder::default();
        let res = worker::freeze_all(
            &[step],
            false,
            &SharedState::default(),
            &Handoff::default(),
            &rec,
        );
        assert!(matches!(res, Err(FreezeError::Failed { .. })), "{res:?}");
        let mp = dir.path().to_owned();
        assert_eq!(
            rec.events(),
            vec![
                Event::FreezeBegun(mp.clone()),
                Event::CallEnded(mp, Outcome::Failed),
                Event::Thawed(vec![], ThawCause::Rollback),
            ]
        );
    }

    #[tokio::test]
    async fn quiesce_and_thaw_emit_their_phases_and_calls_in_order() {
        if !running_as_root() {
            return;
        }
        let scratch = Scratch::new("freezer-events");
        let mp = scratch.path().join("mnt");
        let _fs = LoopFs::create(&scratch.path().join("fs.img"), &mp, 16);
        let _thaw = ThawOnDrop(mp.clone());
        let rec = Recorder::default();
        let freezer = Freezer::with_events(
            FreezerConfig {
                // Only the test's own loop filesystem can be frozen.
                freeze_only: vec![mp.clone()],
                watchdog_timeout: Duration::from_secs(60),
                operation_timeout: Duration::from_secs(30),
                presync: Some(presync::PresyncConfig::default()),
                parallel: false,
                expedite_rcu: false,
                hooks: None,
            },
            journal::Journal::disabled(),
            Arc::new(rec.clone()),
        );
        let q = freezer
            .quiesce(vec![mp.display().to_string()])
            .await
            .unwrap();
        assert_eq!(q.frozen_count, 1, "{q:?}");
        let t = freezer.thaw().await.unwrap();
        assert_eq!(t.thawed_count, 1, "{t:?}");
        assert_eq!(
            rec.events(),
            vec![
                Event::PhaseBegun(Phase::Presync),
                Event::PhaseEnded(Phase::Presync),
                Event::PhaseBegun(Phase::Freeze),
                Event::FreezeBegun(mp.clone()),
                Event::CallEnded(mp.clone(), Outcome::Frozen),
                Event::PhaseEnded(Phase::Freeze),
                Event::PhaseBegun(Phase::Thaw),
                Event::ThawBegun(mp.clone()),
                Event::CallEnded(mp.clone(), Outcome::Thawed),
                Event::PhaseEnded(Phase::Thaw),
                Event::Thawed(vec![(mp, Outcome::Thawed)], ThawCause::Client),
            ]
        );
    }

    #[test]
    fn normalise_refuses_relative_and_dotdot() {
        assert!(matches!(
            normalise(&["mnt".into()]),
            Err(FreezerError::InvalidRequest(_))
        ));
        assert!(matches!(
            normalise(&["".into()]),
            Err(FreezerError::InvalidRequest(_))
        ));
        let e = normalise(&["/mnt/../etc".into()]).unwrap_err().to_string();
        assert!(e.contains("'..'"), "{e}");
    }

    #[test]
    fn normalise_sorts_dedups_and_strips_trailing_slashes() {
        let n = normalise(&["/b/".into(), "/a".into(), "/b".into(), "/a/./".into()]).unwrap();
        assert_eq!(n, vec![PathBuf::from("/a"), PathBuf::from("/b")]);
    }
}
