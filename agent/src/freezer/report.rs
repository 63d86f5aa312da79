//! What the freezer tells its callers: one report per filesystem and per operation.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use crate::mounts::DevId;

/// What happened to one filesystem during a Quiesce or Thaw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// FIFREEZE succeeded; the agent holds it frozen.
    Frozen,
    /// FITHAW succeeded.
    Thawed,
    /// Not freezable or not selected; the detail says why.
    Skipped,
    /// EBUSY on FIFREEZE: someone else froze it. Never counted, never thawed by us.
    AlreadyFrozen,
    /// The ioctl failed.
    Failed,
    /// Frozen by this operation, then thawed again because a later filesystem failed.
    RolledBack,
    /// FITHAW said EINVAL: it was no longer frozen.
    NotFrozen,
}

/// Identity of a filesystem as the freezer reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsIdentity {
    /// Where it is mounted (the representative mount when bind-mounted several times).
    pub mount_point: PathBuf,
    /// Filesystem type from mountinfo.
    pub fstype: String,
    /// Mount source, e.g. `/dev/loop3`.
    pub source: String,
    /// Device id of the superblock.
    pub dev: DevId,
    /// Mount id (mountinfo's first field): what the mountpoint must still lead to when it is
    /// opened for FIFREEZE (btrfs reports per-subvolume st_dev, so device ids cannot be used).
    pub mount_id: u32,
}

impl FsIdentity {
    /// What opening its mountpoint must find.
    pub fn expected(&self) -> super::ioctl::Expected {
        super::ioctl::Expected {
            dev: self.dev,
            mount_id: Some(self.mount_id),
        }
    }
}

/// One filesystem's line in a Quiesce or Thaw result.
#[derive(Debug, Clone)]
pub struct FsReport {
    /// Which filesystem.
    pub fs: FsIdentity,
    /// What happened to it.
    pub outcome: Outcome,
    /// Human-readable reason or errno text; empty when nothing to add.
    pub detail: String,
    /// Time spent in the ioctl.
    pub duration: Duration,
}

/// Result of a successful Quiesce.
#[derive(Debug, Clone)]
pub struct QuiesceReport {
    /// Number of filesystems the agent now holds frozen.
    pub frozen_count: u32,
    /// Every filesystem considered, in the order handled.
    pub filesystems: Vec<FsReport>,
    /// When the watchdog thaws if no Thaw arrives.
    pub watchdog_deadline: Option<SystemTime>,
}

/// Result of a Thaw.
#[derive(Debug, Clone, Default)]
pub struct ThawReport {
    /// Number of filesystems thawed by this call.
    pub thawed_count: u32,
    /// One entry per filesystem the agent held frozen.
    pub filesystems: Vec<FsReport>,
}

/// A filesystem the agent holds frozen, as FreezeStatus shows it.
#[derive(Debug, Clone)]
pub struct FrozenInfo {
    /// Which filesystem.
    pub fs: FsIdentity,
    /// When its FIFREEZE completed.
    pub since: SystemTime,
}

/// A thaw the watchdog performed because no Thaw arrived in time.
#[derive(Debug, Clone)]
pub struct WatchdogThaw {
    /// When it happened.
    pub at: SystemTime,
    /// Mountpoints it thawed.
    pub mount_points: Vec<PathBuf>,
}

/// Snapshot of the freezer for FreezeStatus; taken without waiting for any ioctl.
#[derive(Debug, Clone)]
pub struct FreezeStatus {
    /// Filesystems held frozen, in freeze order.
    pub frozen: Vec<FrozenInfo>,
    /// When the current freeze started.
    pub frozen_since: Option<SystemTime>,
    /// When the watchdog will thaw.
    pub watchdog_deadline: Option<SystemTime>,
    /// Configured watchdog timeout.
    pub watchdog_timeout: Duration,
    /// True while a Quiesce or Thaw runs.
    pub operation_in_progress: bool,
    /// Most recent watchdog thaw.
    pub last_watchdog_thaw: Option<WatchdogThaw>,
    /// Watchdog thaws since start.
    pub watchdog_thaws: u64,
    /// Filesystems thawed at start because a previous agent died holding them frozen.
    pub recovered_thaws: u64,
}
