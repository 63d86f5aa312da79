//! What the observer knows, as one typed interface: [`ObserverHandle::snapshot`] for the current
//! picture (per filesystem: frozen since when and by whom, writers blocked now, completed
//! stalls) and [`ObserverHandle::subscribe`] for the stream of [`ObserverEvent`]s. The agent's
//! FreezeStatus and the telemetry exporter read only this.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use agent_common::{Event, EventKind, SB_FREEZE_COMPLETE};
use tokio::{sync::broadcast, task::JoinHandle};

use crate::loader::{ContentionHook, FreezeSource};

/// How many completed stalls each filesystem keeps (oldest dropped first).
pub const STALL_HISTORY: usize = 256;

/// Who made a freeze, relative to the agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Origin {
    /// The agent itself (the freezing process is the agent's pid).
    Agent,
    /// Anyone else: `fsfreeze`, LVM, a backup tool, the kernel.
    Other,
    /// Frozen before the observer started; the freezer is unknown.
    Unknown,
}

impl Origin {
    /// Lower-case label (`agent`, `other`, `unknown`), as used in metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Agent => "agent",
            Self::Other => "other",
            Self::Unknown => "unknown",
        }
    }
}

/// The freeze level a writer waits at: which kind of write it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WriteLevel {
    /// `sb_start_write`: write(2), create, rename, truncate, setattr ...
    Write,
    /// `sb_start_pagefault`: a store to a shared writable mapping.
    PageFault,
    /// `sb_start_intwrite`: filesystem-internal writes (e.g. evicting an unlinked inode).
    Fs,
}

impl WriteLevel {
    /// From the kernel's `SB_FREEZE_*` level 1..=3.
    pub const fn from_level(level: u32) -> Option<Self> {
        match level {
            1 => Some(Self::Write),
            2 => Some(Self::PageFault),
            3 => Some(Self::Fs),
            _ => None,
        }
    }

    /// The kernel's level number (1 WRITE, 2 PAGEFAULT, 3 FS).
    pub const fn level(self) -> u32 {
        match self {
            Self::Write => 1,
            Self::PageFault => 2,
            Self::Fs => 3,
        }
    }

    /// Upper-case kernel name (`WRITE`, `PAGEFAULT`, `FS`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Write => "WRITE",
            Self::PageFault => "PAGEFAULT",
            Self::Fs => "FS",
        }
    }
}

/// Device id of a filesystem (`major:minor`, as in mountinfo): the `mountinfo` crate's, the
/// same type the agent's freezer keys its filesystems by.
pub use mountinfo::DevId;

/// A task as the kernel named it when the event happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskRef {
    /// Process id (thread-group id).
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// `comm` (up to 15 bytes).
    pub comm: String,
}

/// An ongoing freeze.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FreezeInfo {
    /// When the freeze completed; `None` if it predates the observer.
    pub since: Option<SystemTime>,
    /// Monotonic timestamp (ns) of the same instant, for exact durations.
    pub since_monotonic_ns: Option<u64>,
    /// The freezing task; `None` if unknown.
    pub by: Option<TaskRef>,
    /// Agent, other, or unknown.
    pub origin: Origin,
}

impl FreezeInfo {
    /// A freeze known only from its effect (a probe, a blocked writer): no time, no freezer.
    pub const fn unknown() -> Self {
        Self {
            since: None,
            since_monotonic_ns: None,
            by: None,
            origin: Origin::Unknown,
        }
    }
}

/// A writer asleep on a frozen filesystem right now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockedWriter {
    /// The blocked task.
    pub task: TaskRef,
    /// What kind of write it is.
    pub level: WriteLevel,
    /// When it started waiting.
    pub since: SystemTime,
    /// Monotonic timestamp (ns) of the same instant.
    pub since_monotonic_ns: u64,
}

/// A writer that waited on a frozen filesystem and has resumed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stall {
    /// The task that waited.
    pub task: TaskRef,
    /// What kind of write it was.
    pub level: WriteLevel,
    /// How long it waited (kernel timestamps at both ends).
    pub duration: Duration,
    /// When it resumed.
    pub ended: SystemTime,
}

/// A freeze that has ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompletedFreeze {
    /// Who froze (if known).
    pub by: Option<TaskRef>,
    /// Agent, other, or unknown.
    pub origin: Origin,
    /// Who thawed.
    pub thawed_by: TaskRef,
    /// How long it was frozen; `None` if the freeze predates the observer.
    pub duration: Option<Duration>,
    /// When it was thawed.
    pub thawed_at: SystemTime,
}

/// Everything known about one filesystem (one superblock).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FilesystemState {
    /// Device id.
    pub dev: DevId,
    /// Mountpoint, if it is mounted in the agent's mount namespace.
    pub mountpoint: Option<PathBuf>,
    /// Filesystem type (`ext4`, `xfs` ...).
    pub fstype: String,
    /// Kernel's name for the superblock (`s_id`, usually the device: `loop3`, `vda1`).
    pub sb_id: String,
    /// The ongoing freeze, `None` while thawed.
    pub frozen: Option<FreezeInfo>,
    /// Writers blocked right now.
    pub blocked_writers: Vec<BlockedWriter>,
    /// The most recent completed stalls, oldest first (at most [`STALL_HISTORY`]).
    pub stalls: Vec<Stall>,
    /// All completed stalls ever seen on this filesystem.
    pub stalls_total: u64,
    /// Completed freezes seen (successful freeze, then thaw).
    pub freezes_total: u64,
    /// The last freeze that ended.
    pub last_freeze: Option<CompletedFreeze>,
}

/// A consistent copy of the observer's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObserverSnapshot {
    /// Where freezes are seen from.
    pub freeze_source: FreezeSource,
    /// Why that source was chosen (e.g. "fexit refused: EPERM").
    pub freeze_source_reason: String,
    /// Which hook reports blocked writers.
    pub contention_hook: ContentionHook,
    /// Filesystems with any freeze or stall seen, by device id.
    pub filesystems: Vec<FilesystemState>,
    /// Successful freezes made by the agent.
    pub freezes_by_agent: u64,
    /// Successful freezes made by anyone else.
    pub freezes_by_others: u64,
    /// Freeze attempts that failed (e.g. EBUSY: already frozen).
    pub failed_freezes: u64,
    /// Ring-buffer records that could not be decoded.
    pub undecodable_events: u64,
}

impl ObserverSnapshot {
    /// The filesystem mounted at `mountpoint`, if the observer has seen it.
    pub fn filesystem(&self, mountpoint: &std::path::Path) -> Option<&FilesystemState> {
        self.filesystems
            .iter()
            .find(|f| f.mountpoint.as_deref() == Some(mountpoint))
    }
}

/// A change the observer saw, as it happens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ObserverEvent {
    /// A filesystem was frozen (or found frozen at start).
    Frozen {
        /// Device id.
        dev: DevId,
        /// Mountpoint, if mounted here.
        mountpoint: Option<PathBuf>,
        /// The freeze.
        freeze: FreezeInfo,
    },
    /// A freeze attempt failed.
    FreezeFailed {
        /// Device id.
        dev: DevId,
        /// Mountpoint, if mounted here.
        mountpoint: Option<PathBuf>,
        /// Who tried.
        by: TaskRef,
        /// Agent or other.
        origin: Origin,
        /// The errno.
        errno: i32,
    },
    /// A filesystem was thawed.
    Thawed {
        /// Device id.
        dev: DevId,
        /// Mountpoint, if mounted here.
        mountpoint: Option<PathBuf>,
        /// The freeze that ended.
        freeze: CompletedFreeze,
    },
    /// A writer started waiting on a frozen filesystem.
    WriterBlocked {
        /// Device id.
        dev: DevId,
        /// Mountpoint, if mounted here.
        mountpoint: Option<PathBuf>,
        /// The writer.
        writer: BlockedWriter,
    },
    /// A writer resumed after waiting.
    WriterResumed {
        /// Device id.
        dev: DevId,
        /// Mountpoint, if mounted here.
        mountpoint: Option<PathBuf>,
        /// The completed stall.
        stall: Stall,
    },
}

/// Converts kernel monotonic timestamps to wall-clock time.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Clock;

impl Clock {
    /// `CLOCK_MONOTONIC` now, in ns (the clock `bpf_ktime_get_ns` reads).
    pub(crate) fn monotonic_ns() -> u64 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: valid pointer to a timespec; CLOCK_MONOTONIC always exists.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
    }

    /// Wall-clock time of the monotonic instant `ts_ns`.
    pub(crate) fn wall(ts_ns: u64) -> SystemTime {
        let now_mono = Self::monotonic_ns();
        let now = SystemTime::now();
        if ts_ns <= now_mono {
            now - Duration::from_nanos(now_mono - ts_ns)
        } else {
            now + Duration::from_nanos(ts_ns - now_mono)
        }
    }
}

/// Per-superblock bookkeeping (the public [`FilesystemState`] plus indexes).
#[derive(Debug)]
struct FsEntry {
    public: FilesystemState,
    blocked: BTreeMap<u32, BlockedWriter>,
    stalls: VecDeque<Stall>,
    /// `public.frozen` is known only from a blocked writer (or a start-up probe without a
    /// freeze hook): no thaw event will come, so a writer resuming ends it.
    inferred: bool,
}

/// The observer's mutable state; events go in, snapshots and [`ObserverEvent`]s come out.
#[derive(Debug)]
pub(crate) struct ObserverState {
    agent_pid: u32,
    freeze_source: FreezeSource,
    freeze_source_reason: String,
    contention_hook: ContentionHook,
    by_sb: HashMap<u64, FsEntry>,
    freezes_by_agent: u64,
    freezes_by_others: u64,
    failed_freezes: u64,
    undecodable_events: u64,
}

fn task_of(ev: &Event) -> TaskRef {
    TaskRef {
        pid: ev.tgid,
        tid: ev.tid,
        comm: ev.comm_str().to_owned(),
    }
}

impl ObserverState {
    /// Empty state for an observer whose freezes come from `freeze_source`.
    pub(crate) fn new(
        agent_pid: u32,
        freeze_source: FreezeSource,
        freeze_source_reason: String,
        contention_hook: ContentionHook,
    ) -> Self {
        Self {
            agent_pid,
            freeze_source,
            freeze_source_reason,
            contention_hook,
            by_sb: HashMap::new(),
            freezes_by_agent: 0,
            freezes_by_others: 0,
            failed_freezes: 0,
            undecodable_events: 0,
        }
    }

    /// Counts a ring-buffer record that could not be decoded.
    pub(crate) fn note_undecodable(&mut self) {
        self.undecodable_events += 1;
    }

    /// Device ids of superblocks whose mountpoint is not known yet.
    pub(crate) fn wants_mountpoint(&self, ev: &Event) -> bool {
        self.by_sb
            .get(&ev.sb)
            .is_none_or(|fs| fs.public.mountpoint.is_none())
    }

    fn origin_of(&self, tgid: u32) -> Origin {
        if tgid == self.agent_pid {
            Origin::Agent
        } else {
            Origin::Other
        }
    }

    fn entry(&mut self, ev: &Event, mountpoint: Option<PathBuf>) -> &mut FsEntry {
        let fs = self.by_sb.entry(ev.sb).or_insert_with(|| FsEntry {
            public: FilesystemState {
                dev: DevId {
                    major: ev.dev_major(),
                    minor: ev.dev_minor(),
                },
                mountpoint: None,
                fstype: ev.fstype_str().to_owned(),
                sb_id: ev.sb_id_str().to_owned(),
                frozen: None,
                blocked_writers: Vec::new(),
                stalls: Vec::new(),
                stalls_total: 0,
                freezes_total: 0,
                last_freeze: None,
            },
            blocked: BTreeMap::new(),
            stalls: VecDeque::new(),
            inferred: false,
        });
        if fs.public.mountpoint.is_none() {
            fs.public.mountpoint = mountpoint;
        }
        fs
    }

    /// Applies one kernel event; `mountpoint` is where its device is mounted, if known.
    pub(crate) fn apply(
        &mut self,
        ev: &Event,
        mountpoint: Option<PathBuf>,
    ) -> Option<ObserverEvent> {
        let kind = ev.event_kind()?;
        let origin = self.origin_of(ev.tgid);
        match kind {
            EventKind::Freeze if ev.ret != 0 => {
                self.failed_freezes += 1;
                let fs = self.entry(ev, mountpoint);
                Some(ObserverEvent::FreezeFailed {
                    dev: fs.public.dev,
                    mountpoint: fs.public.mountpoint.clone(),
                    by: task_of(ev),
                    origin,
                    errno: -ev.ret,
                })
            }
            // A freeze under way counts as frozen from its start: writers are shut out from
            // level 1 on. Its completion (a Freeze event) then only counts it.
            EventKind::Freeze | EventKind::FrozenFound | EventKind::FreezeBegin => {
                let found = kind == EventKind::FrozenFound;
                if kind == EventKind::Freeze {
                    match origin {
                        Origin::Agent => self.freezes_by_agent += 1,
                        _ => self.freezes_by_others += 1,
                    }
                }
                let no_hook = self.freeze_source == FreezeSource::None;
                let fs = self.entry(ev, mountpoint);
                if fs.public.frozen.is_some() && !fs.inferred {
                    // A nested freeze by another holder: the first one still defines "since".
                    return None;
                }
                fs.inferred = found && no_hook;
                let freeze = if found {
                    FreezeInfo::unknown()
                } else {
                    FreezeInfo {
                        since: Some(Clock::wall(ev.ts_ns)),
                        since_monotonic_ns: Some(ev.ts_ns),
                        by: Some(task_of(ev)),
                        origin,
                    }
                };
                fs.public.frozen = Some(freeze.clone());
                Some(ObserverEvent::Frozen {
                    dev: fs.public.dev,
                    mountpoint: fs.public.mountpoint.clone(),
                    freeze,
                })
            }
            EventKind::Thaw => {
                if ev.ret != 0 || ev.level == SB_FREEZE_COMPLETE {
                    // Failed, or another freeze holder keeps the filesystem frozen.
                    return None;
                }
                let fs = self.entry(ev, mountpoint);
                fs.inferred = false;
                let freeze = fs.public.frozen.take();
                let completed = CompletedFreeze {
                    by: freeze.as_ref().and_then(|f| f.by.clone()),
                    origin: freeze.as_ref().map_or(Origin::Unknown, |f| f.origin),
                    thawed_by: task_of(ev),
                    duration: freeze
                        .as_ref()
                        .and_then(|f| f.since_monotonic_ns)
                        .map(|since| Duration::from_nanos(ev.ts_ns.saturating_sub(since))),
                    thawed_at: Clock::wall(ev.ts_ns),
                };
                fs.public.freezes_total += 1;
                fs.public.last_freeze = Some(completed.clone());
                Some(ObserverEvent::Thawed {
                    dev: fs.public.dev,
                    mountpoint: fs.public.mountpoint.clone(),
                    freeze: completed,
                })
            }
            EventKind::StallBegin => {
                let level = WriteLevel::from_level(ev.level)?;
                let fs = self.entry(ev, mountpoint);
                let writer = BlockedWriter {
                    task: task_of(ev),
                    level,
                    since: Clock::wall(ev.start_ns),
                    since_monotonic_ns: ev.start_ns,
                };
                fs.blocked.insert(ev.tid, writer.clone());
                if fs.public.frozen.is_none() {
                    // Frozen by a path no hook sees (or no freeze hook at all): the kernel
                    // checked the frozen level before reporting this writer.
                    fs.public.frozen = Some(FreezeInfo::unknown());
                    fs.inferred = true;
                }
                Some(ObserverEvent::WriterBlocked {
                    dev: fs.public.dev,
                    mountpoint: fs.public.mountpoint.clone(),
                    writer,
                })
            }
            EventKind::StallEnd => {
                let level = WriteLevel::from_level(ev.level)?;
                let fs = self.entry(ev, mountpoint);
                fs.blocked.remove(&ev.tid);
                if fs.inferred && fs.blocked.is_empty() {
                    // The last writer got its level back: the filesystem was thawed. (While
                    // another writer is still blocked it is frozen again, or still: a writer
                    // woken by one thaw may report after a writer blocked by the next freeze.)
                    fs.public.frozen = None;
                    fs.inferred = false;
                }
                let stall = Stall {
                    task: task_of(ev),
                    level,
                    duration: Duration::from_nanos(ev.ts_ns.saturating_sub(ev.start_ns)),
                    ended: Clock::wall(ev.ts_ns),
                };
                if fs.stalls.len() == STALL_HISTORY {
                    fs.stalls.pop_front();
                }
                fs.stalls.push_back(stall.clone());
                fs.public.stalls_total += 1;
                Some(ObserverEvent::WriterResumed {
                    dev: fs.public.dev,
                    mountpoint: fs.public.mountpoint.clone(),
                    stall,
                })
            }
        }
    }

    /// A consistent copy of everything, filesystems ordered by device id.
    pub(crate) fn snapshot(&self) -> ObserverSnapshot {
        let mut filesystems: Vec<FilesystemState> = self
            .by_sb
            .values()
            .map(|fs| {
                let mut public = fs.public.clone();
                public.blocked_writers = fs.blocked.values().cloned().collect();
                public.stalls = fs.stalls.iter().cloned().collect();
                public
            })
            .collect();
        filesystems.sort_by(|a, b| a.dev.cmp(&b.dev).then(a.sb_id.cmp(&b.sb_id)));
        ObserverSnapshot {
            freeze_source: self.freeze_source,
            freeze_source_reason: self.freeze_source_reason.clone(),
            contention_hook: self.contention_hook,
            filesystems,
            freezes_by_agent: self.freezes_by_agent,
            freezes_by_others: self.freezes_by_others,
            failed_freezes: self.failed_freezes,
            undecodable_events: self.undecodable_events,
        }
    }
}

/// State shared between the collector task and every handle.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) state: Mutex<ObserverState>,
    pub(crate) events: broadcast::Sender<ObserverEvent>,
}

/// Aborts the collector task (detaching the programs) when the last handle is dropped.
#[derive(Debug)]
struct TaskGuard(JoinHandle<()>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The observer as the agent and telemetry see it. Cheap to clone; when the last clone is
/// dropped the collector stops and the eBPF programs are detached.
#[derive(Clone, Debug)]
pub struct ObserverHandle {
    shared: Arc<Shared>,
    _task: Arc<TaskGuard>,
}

impl ObserverHandle {
    pub(crate) fn new(shared: Arc<Shared>, task: JoinHandle<()>) -> Self {
        Self {
            shared,
            _task: Arc::new(TaskGuard(task)),
        }
    }

    /// The current state: per filesystem, the ongoing freeze (since when, by whom, agent or
    /// other), the writers blocked right now and the completed stalls.
    pub fn snapshot(&self) -> ObserverSnapshot {
        self.shared
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .snapshot()
    }

    /// Every change from now on. A receiver that falls more than 1024 events behind gets
    /// `RecvError::Lagged` and can resynchronise from [`ObserverHandle::snapshot`].
    pub fn subscribe(&self) -> broadcast::Receiver<ObserverEvent> {
        self.shared.events.subscribe()
    }

    /// Where freezes are seen from (fexit or ioctl tracepoints).
    pub fn freeze_source(&self) -> FreezeSource {
        self.snapshot().freeze_source
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_common::EventSource;

    const AGENT: u32 = 100;

    fn state() -> ObserverState {
        ObserverState::new(
            AGENT,
            FreezeSource::IoctlTracepoints,
            "test".into(),
            ContentionHook::TpBtf,
        )
    }

    fn ev(kind: EventKind, tgid: u32, ts_ms: u64) -> Event {
        let mut e = Event::ZERO;
        e.kind = kind as u32;
        e.source = EventSource::IoctlTracepoint as u32;
        e.tgid = tgid;
        e.tid = tgid;
        e.ts_ns = ts_ms * 1_000_000;
        e.sb = 0xffff_8880_0000_1000;
        e.dev = (7 << 20) | 3;
        e.comm[..8].copy_from_slice(b"fsfreeze");
        e.fstype[..4].copy_from_slice(b"ext4");
        e.sb_id[..5].copy_from_slice(b"loop3");
        e
    }

    #[test]
    fn freeze_then_thaw_by_another_process() {
        let mut st = state();
        let mut f = ev(EventKind::Freeze, 42, 1_000);
        f.level = 4;
        let out = st.apply(&f, Some("/mnt/a".into())).expect("event");
        assert!(
            matches!(out, ObserverEvent::Frozen { ref freeze, .. } if freeze.origin == Origin::Other)
        );
        let snap = st.snapshot();
        let fs = snap.filesystem(std::path::Path::new("/mnt/a")).expect("fs");
        assert_eq!(fs.dev, DevId { major: 7, minor: 3 });
        assert_eq!(
            fs.frozen.as_ref().unwrap().by.as_ref().unwrap().comm,
            "fsfreeze"
        );
        assert_eq!(snap.freezes_by_others, 1);

        let t = ev(EventKind::Thaw, 43, 1_750);
        let Some(ObserverEvent::Thawed { freeze, .. }) = st.apply(&t, None) else {
            panic!("expected a thaw");
        };
        assert_eq!(freeze.duration, Some(Duration::from_millis(750)));
        assert_eq!(freeze.origin, Origin::Other);
        assert_eq!(freeze.thawed_by.pid, 43);
        let fs = &st.snapshot().filesystems[0];
        assert!(fs.frozen.is_none());
        assert_eq!(fs.freezes_total, 1);
    }

    #[test]
    fn agent_freezes_are_attributed_to_the_agent() {
        let mut st = state();
        let mut f = ev(EventKind::Freeze, AGENT, 5);
        f.level = 4;
        st.apply(&f, None);
        let snap = st.snapshot();
        assert_eq!(snap.freezes_by_agent, 1);
        assert_eq!(
            snap.filesystems[0].frozen.as_ref().unwrap().origin,
            Origin::Agent
        );
    }

    #[test]
    fn failed_freeze_and_partial_thaw_leave_state_alone() {
        let mut st = state();
        let mut f = ev(EventKind::Freeze, 42, 1);
        f.ret = -16;
        assert!(matches!(
            st.apply(&f, None),
            Some(ObserverEvent::FreezeFailed { errno: 16, .. })
        ));
        assert!(st.snapshot().filesystems[0].frozen.is_none());
        let mut f = ev(EventKind::Freeze, 42, 2);
        f.level = 4;
        st.apply(&f, None);
        let mut t = ev(EventKind::Thaw, 42, 3);
        t.level = 4; // another holder keeps it frozen
        assert!(st.apply(&t, None).is_none());
        assert!(st.snapshot().filesystems[0].frozen.is_some());
    }

    #[test]
    fn stalls_move_from_blocked_to_completed() {
        let mut st = state();
        let mut b = ev(EventKind::StallBegin, 7, 10);
        b.level = 2;
        b.start_ns = b.ts_ns;
        b.tid = 8;
        st.apply(&b, None);
        let snap = st.snapshot();
        assert_eq!(snap.filesystems[0].blocked_writers.len(), 1);
        assert_eq!(
            snap.filesystems[0].blocked_writers[0].level,
            WriteLevel::PageFault
        );
        let mut e = ev(EventKind::StallEnd, 7, 1_010);
        e.level = 2;
        e.tid = 8;
        e.start_ns = 10_000_000;
        let Some(ObserverEvent::WriterResumed { stall, .. }) = st.apply(&e, None) else {
            panic!("expected a resume");
        };
        assert_eq!(stall.duration, Duration::from_secs(1));
        assert_eq!((stall.task.pid, stall.task.tid), (7, 8));
        let fs = &st.snapshot().filesystems[0];
        assert!(fs.blocked_writers.is_empty());
        assert_eq!(fs.stalls_total, 1);
        assert_eq!(fs.stalls[0].level, WriteLevel::PageFault);
    }

    #[test]
    fn found_frozen_has_unknown_origin_and_no_duration_on_thaw() {
        let mut st = state();
        let mut f = ev(EventKind::FrozenFound, 999, 1);
        f.level = 4;
        st.apply(&f, None);
        assert_eq!(
            st.snapshot().filesystems[0].frozen.as_ref().unwrap().origin,
            Origin::Unknown
        );
        assert_eq!(st.snapshot().freezes_by_others, 0);
        let Some(ObserverEvent::Thawed { freeze, .. }) = st.apply(&ev(EventKind::Thaw, 5, 9), None)
        else {
            panic!("expected a thaw");
        };
        assert_eq!(freeze.duration, None);
    }

    #[test]
    fn stall_history_is_bounded() {
        let mut st = state();
        for i in 0..(STALL_HISTORY as u64 + 10) {
            let mut e = ev(EventKind::StallEnd, 7, i + 1);
            e.level = 1;
            e.start_ns = i * 1_000_000;
            st.apply(&e, None);
        }
        let fs = &st.snapshot().filesystems[0];
        assert_eq!(fs.stalls.len(), STALL_HISTORY);
        assert_eq!(fs.stalls_total, STALL_HISTORY as u64 + 10);
    }

    #[test]
    fn unknown_kinds_and_levels_are_ignored() {
        let mut st = state();
        let mut e = ev(EventKind::StallBegin, 7, 1);
        e.level = 9;
        assert!(st.apply(&e, None).is_none());
        e.kind = 77;
        assert!(st.apply(&e, None).is_none());
    }

    #[test]
    fn a_sync_fs_freeze_is_frozen_from_its_begin_and_counted_once_at_completion() {
        let mut st = ObserverState::new(
            AGENT,
            FreezeSource::SyncFs,
            String::new(),
            ContentionHook::RawTracepoint,
        );
        let mut begin = ev(EventKind::FreezeBegin, 42, 1_000);
        begin.source = EventSource::SyncFs as u32;
        let Some(ObserverEvent::Frozen { freeze, .. }) = st.apply(&begin, Some("/mnt/a".into()))
        else {
            panic!("a freeze under way is reported at once");
        };
        assert_eq!(freeze.by.as_ref().map(|t| t.pid), Some(42));
        assert_eq!(st.snapshot().freezes_by_others, 0, "not complete yet");
        let mut done = ev(EventKind::Freeze, 42, 1_012);
        done.source = EventSource::SyncFs as u32;
        assert_eq!(st.apply(&done, None), None, "already reported");
        assert_eq!(st.snapshot().freezes_by_others, 1);
        // The poll's thaw: no thawing task known.
        let mut thaw = ev(EventKind::Thaw, 0, 1_500);
        thaw.source = EventSource::Poll as u32;
        let Some(ObserverEvent::Thawed { freeze, .. }) = st.apply(&thaw, None) else {
            panic!("thaw not reported");
        };
        assert_eq!(
            freeze.duration,
            Some(Duration::from_millis(500)),
            "from the begin"
        );
        assert_eq!(freeze.origin, Origin::Other);
        let fs = &st.snapshot().filesystems[0];
        assert_eq!((fs.freezes_total, fs.frozen.is_none()), (1, true));
    }

    fn stall(kind: EventKind, ts_ms: u64) -> Event {
        let mut e = ev(kind, 7, ts_ms);
        e.level = 1;
        e.tid = 8;
        e.start_ns = 10_000_000;
        e
    }

    #[test]
    fn without_a_freeze_hook_a_blocked_writer_shows_the_freeze_until_it_resumes() {
        let mut st =
            ObserverState::new(AGENT, FreezeSource::None, "t".into(), ContentionHook::TpBtf);
        st.apply(&stall(EventKind::StallBegin, 10), Some("/mnt/a".into()));
        let fs = &st.snapshot().filesystems[0];
        let frozen = fs
            .frozen
            .as_ref()
            .expect("a blocked writer proves a freeze");
        assert_eq!((frozen.origin, frozen.since), (Origin::Unknown, None));
        st.apply(&stall(EventKind::StallEnd, 500), None);
        let fs = &st.snapshot().filesystems[0];
        assert!(fs.frozen.is_none(), "the writer resumed, so it was thawed");
        assert_eq!(fs.stalls_total, 1);
    }

    #[test]
    fn an_inferred_freeze_lasts_while_any_writer_is_blocked() {
        let mut st =
            ObserverState::new(AGENT, FreezeSource::None, "t".into(), ContentionHook::TpBtf);
        let mut other = stall(EventKind::StallBegin, 20);
        other.tid = 9;
        st.apply(&stall(EventKind::StallBegin, 10), Some("/mnt/a".into()));
        st.apply(&other, None);
        // The first writer resumes (woken by a thaw) after the second blocked (on the next
        // freeze): the filesystem is still frozen.
        st.apply(&stall(EventKind::StallEnd, 30), None);
        let fs = &st.snapshot().filesystems[0];
        assert!(fs.frozen.is_some(), "writer 9 still proves a freeze");
        other.kind = EventKind::StallEnd as u32;
        other.ts_ns = 40_000_000;
        st.apply(&other, None);
        assert!(st.snapshot().filesystems[0].frozen.is_none());
    }

    #[test]
    fn a_freeze_event_after_the_first_stall_replaces_the_inferred_freeze() {
        // With the ioctl hook the writer blocks inside FIFREEZE, before its exit event.
        let mut st = state();
        st.apply(&stall(EventKind::StallBegin, 10), None);
        let mut f = ev(EventKind::Freeze, 42, 20);
        f.level = 4;
        let out = st.apply(&f, None);
        assert!(
            matches!(out, Some(ObserverEvent::Frozen { ref freeze, .. }) if freeze.origin == Origin::Other)
        );
        st.apply(&stall(EventKind::StallEnd, 30), None);
        let fs = &st.snapshot().filesystems[0];
        assert_eq!(
            fs.frozen.as_ref().map(|f| f.origin),
            Some(Origin::Other),
            "a seen freeze ends with its thaw event, not with a writer"
        );
        let t = ev(EventKind::Thaw, 43, 40);
        assert!(matches!(
            st.apply(&t, None),
            Some(ObserverEvent::Thawed { .. })
        ));
        assert!(st.snapshot().filesystems[0].frozen.is_none());
    }
}
