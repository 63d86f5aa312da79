//! A scratch directory with a loop-mounted ext4, and writer processes that block on it while
//! it is frozen.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use super::run;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// `<scratch>/mnt` is an ext4 on a loop device backed by `<scratch>/fs.img`. Drop thaws (in
/// case), unmounts, detaches and removes the directory.
#[derive(Debug)]
pub struct LoopFs {
    dir: PathBuf,
    mnt: PathBuf,
    dev: String,
}

impl LoopFs {
    /// Creates and mounts a `size_mib` MiB ext4 under `/var/tmp/telemetry-<pid>-<n>`.
    pub fn new(size_mib: u64) -> Self {
        let dir = PathBuf::from(format!(
            "/var/tmp/telemetry-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let img = dir.join("fs.img");
        let f = std::fs::File::create(&img).unwrap();
        f.set_len(size_mib << 20).unwrap();
        drop(f);
        let img_s = img.to_str().unwrap();
        run("mkfs.ext4", &["-q", "-F", img_s]);
        let dev = run("losetup", &["-f", "--show", img_s]).trim().to_string();
        let mnt = dir.join("mnt");
        std::fs::create_dir_all(&mnt).unwrap();
        let fs = Self { dir, mnt, dev };
        run("mount", &[&fs.dev, fs.mnt.to_str().unwrap()]);
        fs
    }

    /// The scratch directory (what the agent gets as `--freeze-only`).
    pub fn scratch(&self) -> &Path {
        &self.dir
    }

    /// Where the filesystem is mounted.
    pub fn mountpoint(&self) -> &Path {
        &self.mnt
    }

    /// The mountpoint as the RPCs and labels spell it.
    pub fn mp(&self) -> String {
        self.mnt.display().to_string()
    }
}

/// Thaws the scratch mount if anything left it frozen (EINVAL when not frozen is ignored).
pub fn thaw_quietly(mnt: &Path) {
    let _ = Command::new("fsfreeze")
        .arg("-u")
        .arg(mnt)
        .stderr(Stdio::null())
        .status();
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        thaw_quietly(&self.mnt);
        let _ = Command::new("umount").arg(&self.mnt).status();
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A process that creates and writes a file on `mnt`; on a frozen filesystem it sleeps in the
/// kernel until the thaw. Drop thaws the mount first, then reaps the process.
#[derive(Debug)]
pub struct Writer {
    child: Child,
    mnt: PathBuf,
}

impl Writer {
    /// Starts `sh -c 'echo data > <mnt>/<name>'`.
    pub fn start(fs: &LoopFs, name: &str) -> Self {
        let target = fs.mountpoint().join(name);
        let child = Command::new("sh")
            .arg("-c")
            .arg(format!("echo data > '{}'", target.display()))
            .spawn()
            .unwrap();
        Self {
            child,
            mnt: fs.mountpoint().to_path_buf(),
        }
    }

    /// True while the process has not finished.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Waits for the process (after the thaw).
    pub fn finish(mut self) -> bool {
        self.child.wait().unwrap().success()
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            thaw_quietly(&self.mnt);
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
