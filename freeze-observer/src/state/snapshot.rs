//! What [`ObserverHandle::snapshot`](super::ObserverHandle::snapshot) returns: a consistent
//! copy of the state, per filesystem ([`FilesystemState`]) and in total ([`ObserverSnapshot`]).

use std::path::PathBuf;

use super::{BlockedWriter, CompletedFreeze, DevId, FreezeInfo, Stall};
use crate::loader::{ContentionHook, FreezeSource};

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
    /// The most recent completed stalls, oldest first (at most [`STALL_HISTORY`](super::STALL_HISTORY)).
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
