//! What a freeze is, as the observer reports it: who made it ([`Origin`], [`TaskRef`]),
//! since when ([`FreezeInfo`]), and how it ended ([`CompletedFreeze`]).

use std::time::{Duration, SystemTime};

use super::TaskRef;

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
