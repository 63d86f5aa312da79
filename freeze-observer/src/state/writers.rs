//! Writers stalled by a freeze: the kind of write ([`WriteLevel`]), a writer blocked right now
//! ([`BlockedWriter`]) and one that has resumed ([`Stall`]).

use std::time::{Duration, SystemTime};

use super::TaskRef;

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
