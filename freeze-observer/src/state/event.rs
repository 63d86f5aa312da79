//! What [`ObserverHandle::subscribe`](super::ObserverHandle::subscribe) streams: one
//! [`ObserverEvent`] per change the observer saw.

use std::path::PathBuf;

use super::{BlockedWriter, CompletedFreeze, DevId, FreezeInfo, Origin, Stall, TaskRef};

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
