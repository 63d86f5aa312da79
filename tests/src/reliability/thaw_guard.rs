//! Last-resort thawing of filesystems a test froze (or may have left frozen), in a fixed
//! order, on every exit path including a panic.
//!
//! Order matters for nested filesystems: thawing a filesystem writes its superblock, and for
//! one whose loop image lies on a frozen filesystem that write blocks until the outer one is
//! thawed. So list the outer (image-holding) filesystem first, then the inner ones: the same
//! order the agent thaws in (the reverse of the freeze order). A freeze that was still stuck in
//! the kernel completes once the outer filesystem thaws, so the guard makes a second pass.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cmd::run_with_timeout;

/// Bound on one `fsfreeze -u` in the guard.
pub const GUARD_THAW_TIMEOUT: Duration = Duration::from_secs(30);

/// Thaws its filesystems, in the order given, when dropped.
#[derive(Debug)]
pub struct ThawGuard {
    paths: Vec<PathBuf>,
}

impl ThawGuard {
    /// A guard thawing `paths` in this order (outer filesystems first).
    pub fn new<P: AsRef<Path>>(paths: &[P]) -> Self {
        Self {
            paths: paths.iter().map(|p| p.as_ref().to_path_buf()).collect(),
        }
    }

    /// Thaws every path now (best effort) and reports which ones were frozen.
    pub fn thaw_now(&self) -> Vec<PathBuf> {
        let mut thawed = Vec::new();
        for p in &self.paths {
            match run_with_timeout(
                "fsfreeze",
                &[OsStr::new("-u"), p.as_os_str()],
                GUARD_THAW_TIMEOUT,
            ) {
                Ok(o) if o.ok() => thawed.push(p.clone()),
                Ok(_) => {} // Not frozen (EINVAL) or not mounted: nothing to do.
                Err(e) => eprintln!("thaw guard: {e}"),
            }
        }
        thawed
    }
}

impl Drop for ThawGuard {
    fn drop(&mut self) {
        let first = self.thaw_now();
        // A freeze blocked behind a frozen outer filesystem lands after the first pass.
        std::thread::sleep(Duration::from_millis(200));
        let second = self.thaw_now();
        if !first.is_empty() || !second.is_empty() {
            eprintln!("thaw guard thawed {first:?} then {second:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fsfreeze::{is_frozen, ExternalFreeze};
    use crate::loopfs::{FsType, LoopFs};
    use crate::scratch::Scratch;

    #[test]
    fn thaws_outer_then_inner_on_drop() {
        let s = Scratch::new().unwrap();
        let outer = LoopFs::new(&s, "outer", FsType::Ext4, 64).unwrap();
        let inner = LoopFs::nested(&s, "inner", FsType::Ext4, 16, &outer).unwrap();
        // The right freeze order: inner first, then outer.
        std::mem::forget(ExternalFreeze::freeze(inner.mountpoint()).unwrap());
        std::mem::forget(ExternalFreeze::freeze(outer.mountpoint()).unwrap());
        let g = ThawGuard::new(&[outer.mountpoint(), inner.mountpoint()]);
        drop(g);
        assert!(!is_frozen(outer.mountpoint()).unwrap());
        assert!(!is_frozen(inner.mountpoint()).unwrap());
    }

    #[test]
    fn thaw_now_reports_only_what_was_frozen() {
        let s = Scratch::new().unwrap();
        let a = LoopFs::new(&s, "a", FsType::Ext4, 16).unwrap();
        let b = LoopFs::new(&s, "b", FsType::Ext4, 16).unwrap();
        std::mem::forget(ExternalFreeze::freeze(b.mountpoint()).unwrap());
        let g = ThawGuard::new(&[a.mountpoint(), b.mountpoint()]);
        assert_eq!(g.thaw_now(), vec![b.mountpoint().to_path_buf()]);
        assert!(g.thaw_now().is_empty());
    }
}
