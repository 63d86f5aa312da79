//! The scratch directory of one test: `/var/tmp/gatest-<unique>` (not /tmp, which may be a
//! tmpfs we must never touch). Every loop filesystem, socket and file of the test lives
//! below it, and the agent gets it as `--freeze-only`, so nothing outside can be frozen.
//!
//! Dropping the last handle is a safety net behind the per-fixture clean-up: whatever is
//! still mounted below it is thawed and unmounted, loop devices backed by files below it are
//! detached, and only then is the directory removed (never while something is mounted, so
//! removal can never walk into a filesystem that is not ours).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::cmd::run;
use crate::error::{FixtureError, Result};
use crate::{loopdev, mountinfo, names};

/// Where scratch directories are created.
pub const SCRATCH_PARENT: &str = "/var/tmp";

#[derive(Debug)]
struct Inner {
    path: PathBuf,
}

/// A shared handle to a test's scratch directory; the directory goes away with the last
/// clone.
#[derive(Debug, Clone)]
pub struct Scratch {
    inner: Arc<Inner>,
}

impl Scratch {
    /// Creates a fresh, empty scratch directory.
    pub fn new() -> Result<Self> {
        for _ in 0..16 {
            let path = Path::new(SCRATCH_PARENT).join(names::unique("gatest-"));
            match std::fs::create_dir(&path) {
                Ok(()) => {
                    return Ok(Self {
                        inner: Arc::new(Inner { path }),
                    })
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(FixtureError::io(format!("mkdir {}", path.display()), e)),
            }
        }
        Err(FixtureError::io(
            "create a scratch directory",
            std::io::Error::other("names exhausted"),
        ))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// A path below the scratch directory.
    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.inner.path.join(rel)
    }

    /// Creates (if needed) and returns a subdirectory.
    pub fn subdir(&self, rel: impl AsRef<Path>) -> Result<PathBuf> {
        let p = self.join(rel);
        std::fs::create_dir_all(&p)
            .map_err(|e| FixtureError::io(format!("mkdir {}", p.display()), e))?;
        Ok(p)
    }
}

/// Thaws and unmounts everything mounted below `root` (innermost first), detaching loop
/// devices whose image lives below `root` as soon as their mount is gone. Best effort;
/// returns what could not be unmounted.
pub fn release_all_under(root: &Path) -> Vec<PathBuf> {
    let mounts = mountinfo::under(root).unwrap_or_default();
    for m in mounts.iter().rev() {
        let _ = run(
            "fsfreeze",
            &[std::ffi::OsStr::new("-u"), m.mount_point.as_os_str()],
        );
        crate::mount::unmount(&m.mount_point);
        if m.source.starts_with("/dev/loop") && !source_still_mounted(&m.source) {
            if let Some(backing) = loopdev::backing_file(Path::new(&m.source)) {
                if backing.starts_with(root) {
                    let _ = run("losetup", &["-d", m.source.as_str()]);
                }
            }
        }
    }
    for dev in loopdev::devices_backed_under(root) {
        let _ = run("losetup", &[std::ffi::OsStr::new("-d"), dev.as_os_str()]);
    }
    mountinfo::under(root)
        .unwrap_or_default()
        .into_iter()
        .map(|m| m.mount_point)
        .collect()
}

fn source_still_mounted(source: &str) -> bool {
    mountinfo::read()
        .map(|ms| ms.iter().any(|m| m.source == source))
        .unwrap_or(true)
}

impl Drop for Inner {
    fn drop(&mut self) {
        let left = release_all_under(&self.path);
        if left.is_empty() {
            if let Err(e) = std::fs::remove_dir_all(&self.path) {
                eprintln!("scratch: cannot remove {}: {e}", self.path.display());
            }
        } else {
            eprintln!(
                "scratch: {} left in place, still mounted below it: {left:?}",
                self.path.display()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lives_under_var_tmp_and_goes_away_with_the_last_handle() {
        let s = Scratch::new().unwrap();
        let p = s.path().to_path_buf();
        assert!(p.starts_with(SCRATCH_PARENT));
        std::fs::write(s.join("f"), b"x").unwrap();
        let s2 = s.clone();
        drop(s);
        assert!(p.exists(), "a clone still holds it");
        drop(s2);
        assert!(!p.exists());
    }

    #[test]
    fn two_scratches_differ() {
        let a = Scratch::new().unwrap();
        let b = Scratch::new().unwrap();
        assert_ne!(a.path(), b.path());
    }
}
