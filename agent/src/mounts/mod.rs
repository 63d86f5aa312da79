//! Mount discovery and freeze planning.
//!
//! Reads the mount table ([`read_mountinfo`], parsed by the `mountinfo` crate the eBPF
//! observer shares), decides which mounts can be frozen
//! ([`classify`], with a [`SkipReason`] for the others), finds loop-image dependencies
//! ([`BackingResolver`]) and turns all that into a [`FreezePlan`] ([`plan`]): one mount per
//! superblock, grouped in levels so that a filesystem stored in a loop image is frozen
//! before the filesystem holding the image and thawed after it.
//!
//! Everything here is read-only: nothing in this module freezes, mounts or writes.

mod eligibility;
mod fstype;
mod loopdeps;
mod order;
mod paths;
mod plan;
mod statx;
mod visibility;

#[cfg(test)]
pub(crate) mod test_utils;

pub use eligibility::{classify, SkipReason, Verdict};
pub use fstype::FsClass;
pub use loopdeps::{BackingResolver, SysBackingResolver};
// The workspace's one mountinfo parser (crate `mountinfo`, shared with the eBPF observer),
// re-exported so that the agent's paths stay `mounts::Mount`, `mounts::DevId`, ...
pub use mountinfo::{
    parse_mountinfo, read_mountinfo, read_mountinfo_from, DevId, DevIdParseError, Mount,
    MountsError, MOUNTINFO_PATH,
};
pub use paths::{is_within, normalise_absolute, PathProblem};
pub use plan::{plan, FreezePlan, PlanError, PlannedFs, Policy, SkippedMount};
pub use statx::{fd_ids, file_ids, FileIds};
pub use visibility::hidden_by;
