//! [`ObserverHandle`]: the observer as the agent and telemetry see it, over the state the
//! collector task writes ([`Shared`]).

use std::sync::{Arc, Mutex};

use tokio::{
    sync::{broadcast, Notify},
    task::JoinHandle,
};

use super::table::ObserverState;
use super::{ObserverEvent, ObserverSnapshot};
use crate::loader::FreezeSource;

/// State shared between the collector task and every handle.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) state: Mutex<ObserverState>,
    pub(crate) events: broadcast::Sender<ObserverEvent>,
    /// Wakes the collector to poll the watched filesystems now ([`ObserverHandle::poll_now`]).
    pub(crate) poll_now: Notify,
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

    /// Asks the collector to look at the filesystems it follows now instead of at its next
    /// poll: the agent calls it right after its own thaws, so their end is seen at once even
    /// though its freezes are polled only every 200 ms. Cheap, never blocks; a no-op for
    /// freeze sources that need no poll. Several calls before the collector wakes make one
    /// poll.
    pub fn poll_now(&self) {
        self.shared.poll_now.notify_one();
    }

    /// Where freezes are seen from (fexit, sync_fs, ioctl tracepoints or none).
    pub fn freeze_source(&self) -> FreezeSource {
        self.snapshot().freeze_source
    }
}
