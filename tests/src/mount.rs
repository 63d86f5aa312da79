//! A mount owned by a test (a loop device, a bind mount, a tmpfs). Dropping it thaws the
//! filesystem (in case a failing test left it frozen), then unmounts, retrying while busy
//! and falling back to a lazy unmount so a failing test never leaves a mount behind.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cmd::{run, run_ok};
use crate::error::{FixtureError, Result};

/// A mount at `target` that is unmounted when dropped.
#[derive(Debug)]
pub struct Mount {
    target: PathBuf,
}

fn mkdir(p: &Path) -> Result<()> {
    std::fs::create_dir_all(p).map_err(|e| FixtureError::io(format!("mkdir {}", p.display()), e))
}

impl Mount {
    /// Mounts block device `dev` at `target` (created if missing).
    pub fn device(dev: &Path, target: &Path) -> Result<Self> {
        mkdir(target)?;
        run_ok("mount", &[dev.as_os_str(), target.as_os_str()])?;
        Ok(Self {
            target: target.to_path_buf(),
        })
    }

    /// Mounts block device `dev` at `target` (created if missing) with mount options
    /// `opts` (e.g. `ro,noload`).
    pub fn device_with(dev: &Path, target: &Path, opts: &str) -> Result<Self> {
        mkdir(target)?;
        run_ok(
            "mount",
            &[
                OsStr::new("-o"),
                OsStr::new(opts),
                dev.as_os_str(),
                target.as_os_str(),
            ],
        )?;
        Ok(Self {
            target: target.to_path_buf(),
        })
    }

    /// Bind-mounts `src` at `target` (created if missing): a second mount of the same
    /// superblock.
    pub fn bind(src: &Path, target: &Path) -> Result<Self> {
        mkdir(target)?;
        run_ok(
            "mount",
            &[OsStr::new("--bind"), src.as_os_str(), target.as_os_str()],
        )?;
        Ok(Self {
            target: target.to_path_buf(),
        })
    }

    /// Mounts a small tmpfs at `target` (created if missing).
    pub fn tmpfs(target: &Path) -> Result<Self> {
        mkdir(target)?;
        run_ok(
            "mount",
            &[
                OsStr::new("-t"),
                OsStr::new("tmpfs"),
                OsStr::new("-o"),
                OsStr::new("size=4m"),
                OsStr::new("tmpfs"),
                target.as_os_str(),
            ],
        )?;
        Ok(Self {
            target: target.to_path_buf(),
        })
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.target
    }
}

/// Unmounts `target`: up to ~3 s of retries while busy, then a lazy unmount. Best effort.
pub fn unmount(target: &Path) {
    for _ in 0..30 {
        match run("umount", &[target.as_os_str()]) {
            Ok(o) if o.ok() => return,
            Ok(o) if o.stderr.contains("not mounted") || o.stderr.contains("no mount point") => {
                return
            }
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    match run("umount", &[OsStr::new("-l"), target.as_os_str()]) {
        Ok(o) if o.ok() => eprintln!("mount: {} was busy; unmounted lazily", target.display()),
        Ok(o) => eprintln!(
            "mount: cannot unmount {}: {}",
            target.display(),
            o.stderr.trim()
        ),
        Err(e) => eprintln!("mount: cannot unmount {}: {e}", target.display()),
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = run("fsfreeze", &[OsStr::new("-u"), self.target.as_os_str()]);
        unmount(&self.target);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mountinfo;
    use crate::scratch::Scratch;

    #[test]
    fn tmpfs_and_bind_are_mounted_and_gone_after_drop() {
        let s = Scratch::new().unwrap();
        let t = Mount::tmpfs(&s.join("t")).unwrap();
        assert_eq!(mountinfo::at(t.path()).unwrap().unwrap().fstype, "tmpfs");
        let b = Mount::bind(t.path(), &s.join("b")).unwrap();
        let (mt, mb) = (
            mountinfo::at(t.path()).unwrap().unwrap(),
            mountinfo::at(b.path()).unwrap().unwrap(),
        );
        assert_eq!(mt.dev_id, mb.dev_id, "a bind mount shares the superblock");
        let paths = (t.path().to_path_buf(), b.path().to_path_buf());
        drop(b);
        drop(t);
        assert!(mountinfo::at(&paths.0).unwrap().is_none());
        assert!(mountinfo::at(&paths.1).unwrap().is_none());
    }
}
