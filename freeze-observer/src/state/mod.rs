//! What the observer knows, as one typed interface: [`ObserverHandle::snapshot`] for the current
//! picture (per filesystem: frozen since when and by whom, writers blocked now, completed
//! stalls) and [`ObserverHandle::subscribe`] for the stream of [`ObserverEvent`]s. The agent's
//! FreezeStatus and the telemetry exporter read only this.
//!
//! One file per concern: `freeze` and `writers` (what a freeze and a stalled writer are),
//! `table` (the frozen-filesystem table and its counters), `apply` (how a kernel event
//! changes it), `snapshot` and `event` (what comes out), `handle` (the state shared with the
//! collector task, and [`ObserverHandle`]), `clock` (kernel timestamps to wall-clock time).

mod apply;
mod clock;
mod event;
mod freeze;
mod handle;
mod snapshot;
mod table;
mod writers;

pub use event::ObserverEvent;
pub use freeze::{CompletedFreeze, FreezeInfo, Origin};
pub use handle::ObserverHandle;
pub(crate) use handle::Shared;
pub use snapshot::{FilesystemState, ObserverSnapshot};
pub(crate) use table::ObserverState;
pub use writers::{BlockedWriter, Stall, WriteLevel};

/// How many completed stalls each filesystem keeps (oldest dropped first).
pub const STALL_HISTORY: usize = 256;

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
