//! This run's scratch space: a directory under /var/tmp holding the images, mountpoints and
//! logs, a tmpfs directory under /dev/shm for state that is written while frozen, and the
//! loop-mounted ext4 filesystems. Every filesystem is thawed, unmounted and detached in
//! `Drop`, also on panic; nothing outside the scratch directory is ever frozen.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use freeze_observer::DevId;
use nix::errno::Errno;
use nix::fcntl::{open, OFlag};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::Mode;

use crate::error::BenchError;

// FIFREEZE = _IOWR('X', 119, int), FITHAW = _IOWR('X', 120, int).
mod sys {
    nix::ioctl_readwrite!(fifreeze, b'X', 119, libc::c_int);
    nix::ioctl_readwrite!(fithaw, b'X', 120, libc::c_int);
}

/// The scratch directories of one run.
#[derive(Debug)]
pub struct Scratch {
    /// `/var/tmp/freeze-bench-XXXXXX`: images, mountpoints (`mnt/fsN`), logs.
    pub root: PathBuf,
    /// `/dev/shm/freeze-bench-XXXXXX`: agent state dirs (tmpfs, never frozen).
    pub state: PathBuf,
}

impl Scratch {
    /// Creates both directories with unique names.
    pub fn create() -> Result<Self, BenchError> {
        let root = nix::unistd::mkdtemp("/var/tmp/freeze-bench-XXXXXX")
            .map_err(BenchError::nix("creating the scratch directory"))?;
        let state = match nix::unistd::mkdtemp("/dev/shm/freeze-bench-XXXXXX") {
            Ok(s) => s,
            Err(e) => {
                let _ = std::fs::remove_dir(&root);
                return Err(BenchError::nix("creating the tmpfs state directory")(e));
            }
        };
        let scratch = Self { root, state };
        std::fs::create_dir(scratch.mount_root())
            .map_err(BenchError::io("creating the mount directory"))?;
        Ok(scratch)
    }

    /// Parent of every mountpoint of this run (what agents get as `--freeze-only`).
    pub fn mount_root(&self) -> PathBuf {
        self.root.join("mnt")
    }

    /// Fails unless `path` is strictly inside the mount root: the guard before any freeze.
    pub fn check_ours(&self, path: &Path) -> Result<(), BenchError> {
        let root = self.mount_root();
        if path != root && path.starts_with(&root) && path.is_absolute() {
            Ok(())
        } else {
            Err(BenchError::OutsideScratch(path.to_owned()))
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // Never recurse into a directory that still has something mounted below it.
        let busy = freeze_observer::mountinfo::read_self()
            .map(|m| m.iter().any(|e| e.mount_point.starts_with(&self.root)))
            .unwrap_or(true);
        if busy {
            eprintln!(
                "leaving {} in place: something is still mounted below it",
                self.root.display()
            );
        } else if let Err(e) = std::fs::remove_dir_all(&self.root) {
            eprintln!("removing {}: {e}", self.root.display());
        }
        if let Err(e) = std::fs::remove_dir_all(&self.state) {
            eprintln!("removing {}: {e}", self.state.display());
        }
    }
}

/// How to build each filesystem.
#[derive(Debug, Clone, Copy)]
pub struct LoopFsOptions {
    /// Sparse image size, MiB.
    pub image_mib: u64,
    /// Attach the loop device with direct I/O (no double caching in the host page cache).
    pub direct_io: bool,
}

/// A sparse image, its loop device and its ext4 mount; undone in reverse in `Drop`.
#[derive(Debug)]
pub struct LoopFs {
    /// The image file.
    pub image: PathBuf,
    /// Where it is mounted.
    pub mountpoint: PathBuf,
    /// `/dev/loopN`, once attached.
    pub device: Option<PathBuf>,
    /// Device id of the mounted superblock (what the observer reports).
    pub dev: DevId,
    mounted: bool,
}

impl LoopFs {
    /// Creates `<root>/<name>.img`, formats it (inode tables initialised now, so no
    /// background `ext4lazyinit` writes disturb the measurements), attaches and mounts it at
    /// `<root>/mnt/<name>`.
    pub fn create(scratch: &Scratch, name: &str, opts: LoopFsOptions) -> Result<Self, BenchError> {
        let image = scratch.root.join(format!("{name}.img"));
        let mountpoint = scratch.mount_root().join(name);
        scratch.check_ours(&mountpoint)?;
        let file = std::fs::File::create(&image)
            .map_err(BenchError::io(format!("creating {}", image.display())))?;
        file.set_len(opts.image_mib << 20)
            .map_err(BenchError::io("sizing the image"))?;
        drop(file);
        run(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0"])
            .arg(&image))?;
        let mut fs = Self {
            image,
            mountpoint,
            device: None,
            dev: DevId { major: 0, minor: 0 },
            mounted: false,
        };
        let mut losetup = Command::new("losetup");
        losetup.args(["-f", "--show"]);
        if opts.direct_io {
            losetup.arg("--direct-io=on");
        }
        let out = run(losetup.arg(&fs.image))?;
        fs.device = Some(PathBuf::from(out.trim()));
        std::fs::create_dir(&fs.mountpoint).map_err(BenchError::io(format!(
            "creating {}",
            fs.mountpoint.display()
        )))?;
        mount(
            fs.device.as_deref(),
            &fs.mountpoint,
            Some("ext4"),
            MsFlags::empty(),
            None::<&str>,
        )
        .map_err(BenchError::nix(format!(
            "mounting {}",
            fs.mountpoint.display()
        )))?;
        fs.mounted = true;
        let st = nix::sys::stat::stat(&fs.mountpoint)
            .map_err(BenchError::nix("stat of the mountpoint"))?;
        fs.dev = DevId {
            major: nix::sys::stat::major(st.st_dev) as u32,
            minor: nix::sys::stat::minor(st.st_dev) as u32,
        };
        Ok(fs)
    }

    fn open_dir(&self) -> Result<OwnedFd, Errno> {
        open(
            &self.mountpoint,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
    }

    /// FITHAW until the kernel says it is not frozen (EINVAL), so no freeze of ours survives
    /// whatever a contender did. Returns how many FITHAWs succeeded.
    pub fn force_thaw(&self) -> usize {
        if !self.mounted {
            return 0;
        }
        let Ok(fd) = self.open_dir() else {
            return 0;
        };
        let mut thawed = 0;
        for _ in 0..8 {
            let mut arg: libc::c_int = 0;
            // SAFETY: FITHAW on an fd of this run's own scratch mount; `arg` is a valid int.
            match unsafe { sys::fithaw(fd.as_raw_fd(), &mut arg) } {
                Ok(_) => thawed += 1,
                Err(_) => break,
            }
        }
        thawed
    }

    /// `syncfs` of this filesystem (blocking; call from a plain thread).
    pub fn sync(&self) -> Result<(), BenchError> {
        let fd = self.open_dir().map_err(BenchError::nix(format!(
            "opening {}",
            self.mountpoint.display()
        )))?;
        nix::unistd::syncfs(&fd).map_err(BenchError::nix("syncfs"))
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        if self.mounted {
            self.force_thaw();
            let mut result = Err(Errno::EBUSY);
            for _ in 0..20 {
                result = umount2(&self.mountpoint, MntFlags::empty());
                if result != Err(Errno::EBUSY) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            if let Err(e) = result {
                eprintln!(
                    "umount {}: {e}; detaching lazily",
                    self.mountpoint.display()
                );
                let _ = umount2(&self.mountpoint, MntFlags::MNT_DETACH);
            }
            self.mounted = false;
        }
        if let Some(dev) = self.device.take() {
            if let Err(e) = run(Command::new("losetup").arg("-d").arg(&dev)) {
                eprintln!("{e}");
            }
        }
    }
}

/// Freezes one of our filesystems in-process (used only by tests of the guard).
#[cfg(test)]
fn freeze(fs: &LoopFs) -> Result<(), Errno> {
    let fd = fs.open_dir()?;
    let mut arg: libc::c_int = 0;
    // SAFETY: FIFREEZE on an fd of this test's own scratch mount.
    unsafe { sys::fifreeze(fd.as_raw_fd(), &mut arg) }.map(drop)
}

/// Runs a command to completion; its stdout on success, stderr in the error otherwise.
pub fn run(cmd: &mut Command) -> Result<String, BenchError> {
    let line = format!("{cmd:?}").replace('"', "");
    let out = cmd.output().map_err(|e| BenchError::Command {
        cmd: line.clone(),
        detail: e.to_string(),
    })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(BenchError::Command {
            cmd: line,
            detail: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    #[test]
    fn only_paths_below_the_mount_root_are_ours() {
        let s = Scratch {
            root: "/var/tmp/freeze-bench-abc".into(),
            state: "/dev/shm/freeze-bench-abc".into(),
        };
        assert!(s
            .check_ours(Path::new("/var/tmp/freeze-bench-abc/mnt/fs0"))
            .is_ok());
        for bad in [
            "/",
            "/var/tmp",
            "/var/tmp/freeze-bench-abc/mnt",
            "/var/tmp/freeze-bench-abc/x",
            "mnt/fs0",
        ] {
            assert!(s.check_ours(Path::new(bad)).is_err(), "{bad}");
        }
        std::mem::forget(s); // nothing was created
    }

    #[test]
    fn a_frozen_filesystem_is_thawed_and_everything_removed_on_drop() {
        if !root() {
            eprintln!("not root: skipped");
            return;
        }
        let scratch = Scratch::create().unwrap();
        let root = scratch.root.clone();
        let fs = LoopFs::create(
            &scratch,
            "fs0",
            LoopFsOptions {
                image_mib: 64,
                direct_io: true,
            },
        )
        .unwrap();
        let device = fs.device.clone().unwrap();
        assert!(fs.dev.major != 0);
        freeze(&fs).unwrap();
        assert_eq!(freeze(&fs), Err(Errno::EBUSY), "frozen twice?");
        drop(fs);
        let mounts = freeze_observer::mountinfo::read_self().unwrap();
        assert!(!mounts.iter().any(|m| m.mount_point.starts_with(&root)));
        let loops = run(Command::new("losetup").arg("-a")).unwrap();
        assert!(
            !loops.contains(root.to_str().unwrap()),
            "{device:?} still attached: {loops}"
        );
        drop(scratch);
        assert!(!root.exists());
    }
}
