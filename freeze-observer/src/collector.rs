//! The collector task: reads the ring buffer through tokio's `AsyncFd` (epoll on the map fd,
//! never a blocking read on the runtime), resolves device ids to mountpoints and feeds the
//! events into [`crate::state`].

use std::{collections::HashMap, path::PathBuf, sync::Arc};

use agent_common::Event;
use aya::{
    maps::{MapData, RingBuf},
    Ebpf,
};
use tokio::io::{unix::AsyncFd, Interest};

use crate::{
    mountinfo,
    state::{ObserverEvent, Shared},
};

/// Device id -> mountpoint, refreshed from `/proc/self/mountinfo` when an unknown id shows up.
#[derive(Debug, Default)]
struct Mountpoints {
    by_dev: HashMap<(u32, u32), PathBuf>,
}

impl Mountpoints {
    async fn lookup(&mut self, major: u32, minor: u32) -> Option<PathBuf> {
        if let Some(p) = self.by_dev.get(&(major, minor)) {
            return Some(p.clone());
        }
        match tokio::task::spawn_blocking(mountinfo::read_self).await {
            Ok(Ok(entries)) => self.by_dev = mountinfo::mountpoints_by_dev(&entries),
            Ok(Err(e)) => tracing::warn!(error = %e, "reading /proc/self/mountinfo"),
            Err(e) => tracing::warn!(error = %e, "mountinfo reader task failed"),
        }
        self.by_dev.get(&(major, minor)).cloned()
    }
}

/// Owns the loaded programs (dropping it detaches them) and the ring buffer.
pub(crate) struct Collector {
    _ebpf: Ebpf,
    ring: AsyncFd<RingBuf<MapData>>,
    shared: Arc<Shared>,
    mounts: Mountpoints,
}

impl Collector {
    /// Wraps the ring buffer for async readiness. Must be called inside a tokio runtime.
    pub(crate) fn new(
        ebpf: Ebpf,
        ring: RingBuf<MapData>,
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
        })
    }

    /// Runs until the task is aborted (the last `ObserverHandle` dropped) or epoll fails.
    pub(crate) async fn run(mut self) {
        let mut batch: Vec<Option<Event>> = Vec::new();
        loop {
            let mut guard = match self.ring.readable_mut().await {
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
            drop(guard);
            for ev in batch.drain(..) {
                self.handle(ev).await;
            }
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
