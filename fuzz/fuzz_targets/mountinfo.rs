//! The mountinfo parser and the freeze planner must never panic, whatever the kernel (or a
//! hostile container runtime) puts in /proc/self/mountinfo.
#![no_main]

use guest_agent::mounts::{parse_mountinfo, plan, BackingResolver, DevId, Mount, Policy};
use libfuzzer_sys::fuzz_target;

/// Resolves loop backing devices from the parsed table itself, deterministically, so the
/// dependency graph (including would-be cycles) is exercised without touching the system.
struct TableResolver;

impl BackingResolver for TableResolver {
    fn backing_dev(&self, m: &Mount) -> Option<DevId> {
        if m.source.starts_with("/dev/loop") {
            Some(DevId { major: m.dev.minor % 8, minor: m.dev.major % 8 })
        } else {
            None
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(mounts) = parse_mountinfo(data) {
        for m in &mounts {
            let _ = m.read_only();
            // Display of every parsed field must be total.
            let _ = format!("{} {} {}", m.dev, m.mount_point.display(), m.fstype);
        }
        let requested = mounts.iter().take(2).map(|m| m.mount_point.clone()).collect();
        let policy = Policy { freeze_only: vec![], requested };
        if let Ok(p) = plan(&mounts, &policy, &TableResolver) {
            // Every planned filesystem appears in exactly one level.
            let n: usize = p.levels.iter().map(|l| l.len()).sum();
            assert_eq!(n, p.filesystems.len());
        }
        let _ = plan(&mounts, &Policy { freeze_only: vec![], requested: vec![] }, &TableResolver);
    }
});
