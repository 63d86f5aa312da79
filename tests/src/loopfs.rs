//! A real filesystem for the freezer to freeze: a sparse image, mkfs, a loop device, and a
//! mount in the test's scratch directory. The image can also live inside another LoopFs's
//! mount (a nested filesystem: the case where freeze order matters).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use crate::cmd::run_ok;
use crate::error::Result;
use crate::loopdev::LoopDev;
use crate::mount::Mount;
use crate::scratch::Scratch;

/// Filesystem types the tests create.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsType {
    /// ext4 (any size).
    Ext4,
    /// xfs (needs at least 300 MiB).
    Xfs,
}

impl FsType {
    /// The type name as mountinfo shows it.
    pub fn name(self) -> &'static str {
        match self {
            FsType::Ext4 => "ext4",
            FsType::Xfs => "xfs",
        }
    }

    /// Smallest image size mkfs accepts, in MiB.
    pub fn min_size_mib(self) -> u64 {
        match self {
            FsType::Ext4 => 8,
            FsType::Xfs => 300,
        }
    }

    fn mkfs(self, dev: &Path) -> Result<()> {
        match self {
            FsType::Ext4 => run_ok(
                "mkfs.ext4",
                &[OsStr::new("-q"), OsStr::new("-F"), dev.as_os_str()],
            ),
            FsType::Xfs => run_ok(
                "mkfs.xfs",
                &[OsStr::new("-q"), OsStr::new("-f"), dev.as_os_str()],
            ),
        }
        .map(drop)
    }
}

/// A mounted loop filesystem. Field order is drop order: unmount, then detach and delete.
#[derive(Debug)]
pub struct LoopFs {
    mount: Mount,
    dev: LoopDev,
    fstype: FsType,
}

impl LoopFs {
    /// Creates `<scratch>/<name>/<name>.img` of `size_mib` MiB (raised to the type's
    /// minimum), formats it and mounts it at `<scratch>/<name>/mnt`.
    pub fn new(scratch: &Scratch, name: &str, fstype: FsType, size_mib: u64) -> Result<Self> {
        let dir = scratch.subdir(name)?;
        Self::build(
            &dir.join(format!("{name}.img")),
            &dir.join("mnt"),
            fstype,
            size_mib,
        )
    }

    /// Like [`LoopFs::new`], but the image file is created inside `host`'s mount, so this
    /// filesystem's writes go through `host`. It is still mounted at
    /// `<scratch>/<name>/mnt`. Drop it before `host` (declare it after `host`).
    pub fn nested(
        scratch: &Scratch,
        name: &str,
        fstype: FsType,
        size_mib: u64,
        host: &LoopFs,
    ) -> Result<Self> {
        let dir = scratch.subdir(name)?;
        Self::build(
            &host.mountpoint().join(format!("{name}.img")),
            &dir.join("mnt"),
            fstype,
            size_mib,
        )
    }

    fn build(image: &Path, target: &Path, fstype: FsType, size_mib: u64) -> Result<Self> {
        let dev = LoopDev::create(image, size_mib.max(fstype.min_size_mib()))?;
        fstype.mkfs(dev.device())?;
        let mount = Mount::device(dev.device(), target)?;
        Ok(Self { mount, dev, fstype })
    }

    /// Where it is mounted.
    pub fn mountpoint(&self) -> &Path {
        self.mount.path()
    }

    /// A path inside the filesystem.
    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.mount.path().join(rel)
    }

    /// The loop device, e.g. `/dev/loop3`.
    pub fn device(&self) -> &Path {
        self.dev.device()
    }

    /// The image file.
    pub fn image(&self) -> &Path {
        self.dev.image()
    }

    /// The filesystem type.
    pub fn fstype(&self) -> FsType {
        self.fstype
    }

    /// `major:minor` of the filesystem.
    pub fn dev_id(&self) -> Result<String> {
        self.dev.dev_id()
    }

    /// Shuts the filesystem down (`xfs_io -x -c shutdown`, FS_IOC_SHUTDOWN; ext4 and xfs):
    /// it stays mounted read-write in mountinfo, but every later write, sync and FIFREEZE
    /// fails with EIO. A real, reproducible freeze failure for rollback tests.
    pub fn shut_down(&self) -> Result<()> {
        run_ok(
            "xfs_io",
            &[
                OsStr::new("-x"),
                OsStr::new("-c"),
                OsStr::new("shutdown"),
                self.mountpoint().as_os_str(),
            ],
        )
        .map(drop)
    }

    /// The mountpoint as a string, the form the RPCs take.
    pub fn mp(&self) -> String {
        self.mountpoint().display().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mountinfo;

    #[test]
    fn ext4_nested_in_ext4_mounts_and_cleans_up() {
        let s = Scratch::new().unwrap();
        let outer = LoopFs::new(&s, "a", FsType::Ext4, 64).unwrap();
        let inner = LoopFs::nested(&s, "b", FsType::Ext4, 16, &outer).unwrap();
        let m = mountinfo::at(inner.mountpoint()).unwrap().unwrap();
        assert_eq!(m.fstype, "ext4");
        assert_eq!(m.dev_id, inner.dev_id().unwrap());
        assert!(inner.image().starts_with(outer.mountpoint()));
        std::fs::write(inner.join("f"), b"data").unwrap();
        let (mi, mo) = (
            inner.mountpoint().to_path_buf(),
            outer.mountpoint().to_path_buf(),
        );
        drop(inner);
        drop(outer);
        assert!(mountinfo::at(&mi).unwrap().is_none());
        assert!(mountinfo::at(&mo).unwrap().is_none());
        assert!(crate::loopdev::devices_backed_under(s.path()).is_empty());
    }

    #[test]
    fn a_shut_down_ext4_fails_fifreeze_with_eio_and_still_cleans_up() {
        let s = Scratch::new().unwrap();
        let fs = LoopFs::new(&s, "a", FsType::Ext4, 16).unwrap();
        fs.shut_down().unwrap();
        assert!(mountinfo::at(fs.mountpoint()).unwrap().unwrap().is_rw());
        let out =
            crate::cmd::run("fsfreeze", &[OsStr::new("-f"), fs.mountpoint().as_os_str()]).unwrap();
        assert!(!out.ok());
        assert!(out.stderr.contains("Input/output error"), "{}", out.stderr);
        let mp = fs.mountpoint().to_path_buf();
        drop(fs);
        assert!(mountinfo::at(&mp).unwrap().is_none());
    }

    #[test]
    fn xfs_is_at_least_300_mib_and_mounts() {
        let s = Scratch::new().unwrap();
        let x = LoopFs::new(&s, "x", FsType::Xfs, 1).unwrap();
        assert_eq!(
            mountinfo::at(x.mountpoint()).unwrap().unwrap().fstype,
            "xfs"
        );
        assert!(std::fs::metadata(x.image()).unwrap().len() >= 300 << 20);
    }

    #[test]
    fn scratch_safety_net_releases_a_frozen_leftover() {
        // A fixture leaked (forgotten) while frozen must still be thawed and removed by the
        // scratch directory's clean-up.
        let s = Scratch::new().unwrap();
        let fs = LoopFs::new(&s, "a", FsType::Ext4, 16).unwrap();
        let (mp, root) = (fs.mountpoint().to_path_buf(), s.path().to_path_buf());
        run_ok("fsfreeze", &[OsStr::new("-f"), mp.as_os_str()]).unwrap();
        std::mem::forget(fs);
        drop(s);
        assert!(mountinfo::at(&mp).unwrap().is_none());
        assert!(!root.exists());
    }
}
