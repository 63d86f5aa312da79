//! The collector task: reads the ring buffer through tokio's `AsyncFd` (epoll on the map fd,
//! never a blocking read on the runtime), resolves device ids to mountpoints and feeds the
//! events into [`crate::state`]. With the sync_fs freeze source it also polls the filesystems
//! it knows frozen or being frozen ([`Watch`]), which is how their completion and thaw are
//! seen; with nothing frozen it never wakes up on its own.

use std::{collections::HashMap, path::PathBuf, sync::Arc, time::Duration};

use agent_common::{Event, EventKind, PROBE_OTHER_SB, PROBE_UNRESOLVED, SB_FREEZE_COMPLETE};
use aya::{
    maps::{MapData, RingBuf},
    Ebpf,
};
use tokio::io::{unix::AsyncFd, Interest};

use crate::{
    mountinfo,
    probe::{Mode, Probe},
    state::{DevId, ObserverEvent, Shared},
};

/// Poll period while a watched freeze is under way (the sync is done; the rest takes
/// milliseconds): how late a freeze's completion is seen.
const POLL_FREEZING: Duration = Duration::from_millis(2);
/// Poll period while a filesystem frozen by another process is watched: how late its thaw is
/// seen when no blocked writer reports it first.
const POLL_FROZEN: Duration = Duration::from_millis(10);
/// Poll period while only the agent's own freezes are watched. The agent asks for a poll right
/// after each of its thaws ([`crate::ObserverHandle::poll_now`]), so this only bounds how late
/// another process's thaw of an agent freeze is seen. Polling these at [`POLL_FROZEN`] cost a
/// held freeze's Pings a third of their speed (p50 52 -> 85-104 us, BENCHMARKS.md).
const POLL_OWN_FROZEN: Duration = Duration::from_millis(200);
/// Polls in a row that may fail to open or resolve a watched filesystem before it is dropped
/// from the watch (unmounted, or hidden by another mount).
const POLL_FAILURES: u32 = 100;

/// One filesystem the poll follows.
#[derive(Debug)]
struct Watched {
    major: u32,
    minor: u32,
    /// A freeze under way (not yet seen complete).
    freezing: bool,
    /// Frozen by the agent, which says when it thaws: polled at [`POLL_OWN_FROZEN`].
    own: bool,
    failures: u32,
}

/// The filesystems known frozen or being frozen, key: superblock address. Only used with the
/// sync_fs source, whose hooks see a freeze begin but not complete or end.
#[derive(Debug)]
struct Watch {
    /// The agent's process id: freezes it makes are its own.
    agent_pid: u32,
    by_sb: HashMap<u64, Watched>,
}

impl Watch {
    fn new(agent_pid: u32) -> Self {
        Self {
            agent_pid,
            by_sb: HashMap::new(),
        }
    }

    /// Starts or updates watching after a kernel event.
    fn note(&mut self, ev: &Event) {
        let freezing = match ev.event_kind() {
            Some(EventKind::FreezeBegin) => true,
            Some(EventKind::Freeze) if ev.ret == 0 => false,
            Some(EventKind::FrozenFound) => ev.level < SB_FREEZE_COMPLETE,
            Some(EventKind::Thaw) if ev.ret == 0 && ev.level != SB_FREEZE_COMPLETE => {
                self.by_sb.remove(&ev.sb);
                return;
            }
            _ => return,
        };
        // A freeze found already frozen has no known freezer: not the agent's.
        let own = ev.event_kind() != Some(EventKind::FrozenFound) && ev.tgid == self.agent_pid;
        let w = self.by_sb.entry(ev.sb).or_insert(Watched {
            major: ev.dev_major(),
            minor: ev.dev_minor(),
            freezing,
            own,
            failures: 0,
        });
        w.freezing = freezing;
        if ev.event_kind() != Some(EventKind::FrozenFound) {
            w.own = own;
        }
    }

    /// How long to sleep before the next poll; `None` when nothing is watched.
    fn period(&self) -> Option<Duration> {
        if self.by_sb.is_empty() {
            None
        } else if self.by_sb.values().any(|w| w.freezing) {
            Some(POLL_FREEZING)
        } else if self.by_sb.values().any(|w| !w.own) {
            Some(POLL_FROZEN)
        } else {
            Some(POLL_OWN_FROZEN)
        }
    }

    /// Applies one poll result for `sb` (a frozen level, or why there is none).
    fn update(&mut self, sb: u64, result: std::io::Result<u32>) {
        let Some(w) = self.by_sb.get_mut(&sb) else {
            return;
        };
        match result {
            Ok(0) => {
                self.by_sb.remove(&sb);
            }
            Ok(level) if (1..=SB_FREEZE_COMPLETE).contains(&level) => {
                w.freezing = level < SB_FREEZE_COMPLETE;
                w.failures = 0;
            }
            other => {
                w.failures += 1;
                if w.failures >= POLL_FAILURES {
                    let why = match other {
                        Ok(PROBE_OTHER_SB) => "its mountpoint holds another filesystem".into(),
                        Ok(PROBE_UNRESOLVED) => "its mountpoint did not resolve".into(),
                        Ok(v) => format!("unexpected probe answer {v}"),
                        Err(e) => e.to_string(),
                    };
                    tracing::warn!(
                        dev = %format!("{}:{}", w.major, w.minor),
                        reason = %why,
                        "no longer following a frozen filesystem (its thaw will not be seen)"
                    );
                    self.by_sb.remove(&sb);
                }
            }
        }
    }
}

/// Sleeps for `period`, or forever when there is nothing to poll.
async fn sleep_or_never(period: Option<Duration>) {
    match period {
        Some(p) => tokio::time::sleep(p).await,
        None => std::future::pending().await,
    }
}

/// Device id -> mountpoint, refreshed from `/proc/self/mountinfo` when an unknown id shows up.
#[derive(Debug, Default)]
struct Mountpoints {
    by_dev: HashMap<DevId, PathBuf>,
}

impl Mountpoints {
    async fn lookup(&mut self, major: u32, minor: u32) -> Option<PathBuf> {
        let dev = DevId { major, minor };
        if let Some(p) = self.by_dev.get(&dev) {
            return Some(p.clone());
        }
        match tokio::task::spawn_blocking(mountinfo::read_self).await {
            Ok(Ok(entries)) => self.by_dev = mountinfo::mountpoints_by_dev(&entries),
            Ok(Err(e)) => tracing::warn!(error = %e, "reading /proc/self/mountinfo"),
            Err(e) => tracing::warn!(error = %e, "mountinfo reader task failed"),
        }
        self.by_dev.get(&dev).cloned()
    }
}

/// Owns the loaded programs (dropping it detaches them) and the ring buffer.
pub(crate) struct Collector {
    _ebpf: Ebpf,
    ring: AsyncFd<RingBuf<MapData>>,
    shared: Arc<Shared>,
    mounts: Mountpoints,
    /// The probe and what it follows; `None` unless the freeze source needs polling.
    poll: Option<(Arc<Probe>, Watch)>,
}

impl Collector {
    /// Wraps the ring buffer for async readiness. Must be called inside a tokio runtime.
    pub(crate) fn new(
        ebpf: Ebpf,
        ring: RingBuf<MapData>,
        probe: Option<Probe>,
        agent_pid: u32,
        shared: Arc<Shared>,
    ) -> std::io::Result<Self> {
        // SAFETY: the RingBuf owns its map fd, which stays open and unchanged for as long as
        // the RingBuf lives, i.e. for the whole life of this AsyncFd.
        let ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(Self {
            _ebpf: ebpf,
            ring,
            shared,
            mounts: Mountpoints::default(),
            poll: probe.map(|p| (Arc::new(p), Watch::new(agent_pid))),
        })
    }

    /// Runs until the task is aborted (the last `ObserverHandle` dropped) or epoll fails.
    pub(crate) async fn run(mut self) {
        let mut batch: Vec<Option<Event>> = Vec::new();
        let shared = Arc::clone(&self.shared);
        loop {
            let period = self.poll.as_ref().and_then(|(_, w)| w.period());
            let tick = tokio::select! {
                ready = self.ring.readable_mut() => {
                    let mut guard = match ready {
                        Ok(guard) => guard,
                        Err(e) => {
                            tracing::error!(error = %e, "eBPF ring buffer poll failed; observer stops");
                            return;
                        }
                    };
                    let ring = guard.get_inner_mut();
                    while let Some(item) = ring.next() {
                        batch.push(Event::from_bytes(&item));
                    }
                    guard.clear_ready();
                    false
                }
                () = sleep_or_never(period) => true,
                // Asked to look now (the agent thawed); with nothing watched there is no poll.
                () = shared.poll_now.notified() => period.is_some(),
            };
            for ev in batch.drain(..) {
                self.handle(ev).await;
            }
            if tick {
                self.poll_watched().await;
            }
        }
    }

    /// Runs the probe on every watched filesystem (off the runtime: it opens mountpoints). The
    /// kernel side emits the completions and thaws it finds into the ring buffer.
    async fn poll_watched(&mut self) {
        let Some((probe, watch)) = &self.poll else {
            return;
        };
        let probe = Arc::clone(probe);
        let mut targets = Vec::with_capacity(watch.by_sb.len());
        let devs: Vec<(u64, u32, u32)> = watch
            .by_sb
            .iter()
            .map(|(&sb, w)| (sb, w.major, w.minor))
            .collect();
        for (sb, major, minor) in devs {
            targets.push((sb, self.mounts.lookup(major, minor).await));
        }
        let results = tokio::task::spawn_blocking(move || {
            targets
                .into_iter()
                .map(|(sb, mp)| {
                    let result = match mp {
                        Some(mp) => probe.run_on(&mp, Mode::Track, sb),
                        None => Err(std::io::Error::other("not mounted here")),
                    };
                    (sb, result)
                })
                .collect::<Vec<_>>()
        })
        .await;
        let Some((_, watch)) = &mut self.poll else {
            return;
        };
        match results {
            Ok(results) => {
                for (sb, result) in results {
                    watch.update(sb, result);
                }
            }
            Err(e) => tracing::warn!(error = %e, "observer poll task failed"),
        }
    }

    async fn handle(&mut self, ev: Option<Event>) {
        let Some(ev) = ev else {
            self.lock().note_undecodable();
            return;
        };
        let wants_mount = self.lock().wants_mountpoint(&ev);
        let mountpoint = if wants_mount {
            self.mounts.lookup(ev.dev_major(), ev.dev_minor()).await
        } else {
            None
        };
        if let Some((_, watch)) = &mut self.poll {
            watch.note(&ev);
        }
        let out = self.lock().apply(&ev, mountpoint);
        if let Some(out) = out {
            log_event(&out);
            // No receivers is fine: the snapshot still has everything.
            let _ = self.shared.events.send(out);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, crate::state::ObserverState> {
        self.shared
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// One log line per freeze/thaw (stall lines at debug: there can be many).
fn log_event(ev: &ObserverEvent) {
    match ev {
        ObserverEvent::Frozen {
            dev,
            mountpoint,
            freeze,
        } => tracing::info!(
            %dev,
            mountpoint = ?mountpoint,
            origin = freeze.origin.as_str(),
            pid = freeze.by.as_ref().map(|t| t.pid),
            comm = freeze.by.as_ref().map(|t| t.comm.as_str()),
            "filesystem frozen"
        ),
        ObserverEvent::Thawed {
            dev,
            mountpoint,
            freeze,
        } => tracing::info!(
            %dev,
            mountpoint = ?mountpoint,
            origin = freeze.origin.as_str(),
            frozen_ms = freeze.duration.map(|d| d.as_millis() as u64),
            "filesystem thawed"
        ),
        ObserverEvent::FreezeFailed {
            dev,
            mountpoint,
            errno,
            by,
            ..
        } => tracing::debug!(
            %dev, mountpoint = ?mountpoint, errno, pid = by.pid, "freeze attempt failed"
        ),
        ObserverEvent::WriterBlocked { dev, writer, .. } => tracing::debug!(
            %dev, pid = writer.task.pid, comm = %writer.task.comm, level = writer.level.as_str(),
            "writer blocked on frozen filesystem"
        ),
        ObserverEvent::WriterResumed { dev, stall, .. } => tracing::debug!(
            %dev, pid = stall.task.pid, comm = %stall.task.comm, level = stall.level.as_str(),
            stalled_ms = stall.duration.as_millis() as u64, "writer resumed"
        ),
    }
}
