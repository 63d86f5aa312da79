//! Test fixtures: saved mount tables and scratch loop-mounted filesystems.
//!
//! Loop filesystems are only created, mounted and removed here, never frozen; each is
//! unmounted and detached in `Drop`, so a failing test cleans up too.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{parse_mountinfo, Mount};

/// Parses `agent/tests/data/mountinfo/<name>`.
pub fn fixture(name: &str) -> Vec<Mount> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/mountinfo")
        .join(name);
    let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    parse_mountinfo(&data).unwrap()
}

/// True when the tests may create loop devices and mount.
pub fn running_as_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A directory under /var/tmp (not tmpfs, so images behave like disk files), removed on drop.
pub struct Scratch(tempfile::TempDir);

impl Scratch {
    /// Creates `/var/tmp/<prefix>-XXXX`.
    pub fn new(prefix: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix(&format!("{prefix}-"))
            .tempdir_in("/var/tmp")
            .unwrap();
        Scratch(dir)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

/// An ext4 image attached to a loop device and mounted; unmounted and detached on drop.
pub struct LoopFs {
    /// The loop device node (`/dev/loopN`).
    pub device: PathBuf,
    /// Where it is mounted.
    pub mount_point: PathBuf,
}

impl LoopFs {
    /// Creates `image` (`size_mb` MiB), formats it, attaches it and mounts it at `mount_point`.
    pub fn create(image: &Path, mount_point: &Path, size_mb: u64) -> Self {
        let f = std::fs::File::create(image).unwrap();
        f.set_len(size_mb << 20).unwrap();
        drop(f);
        run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(image));
        let out = Command::new("losetup")
            .args(["-f", "--show"])
            .arg(image)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "losetup: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let device = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
        let fs = LoopFs {
            device,
            mount_point: mount_point.to_owned(),
        };
        std::fs::create_dir_all(mount_point).unwrap();
        // From here on Drop detaches the device even if mounting fails.
        run(Command::new("mount")
            .args(["-t", "ext4"])
            .arg(&fs.device)
            .arg(mount_point));
        fs
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        let umount = Command::new("umount").arg(&self.mount_point).status();
        if !matches!(umount, Ok(s) if s.success()) {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(&self.mount_point)
                .status();
        }
        let _ = Command::new("losetup").arg("-d").arg(&self.device).status();
    }
}
