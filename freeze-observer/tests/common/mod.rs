//! Fixtures for the real-kernel tests: loop-mounted ext4 images the test creates itself, freezes
//! that are undone by a guard even on panic, and forked writer processes.
//!
//! SAFETY RULES: only filesystems created here are ever frozen; every freeze is a `FreezeGuard`
//! whose Drop thaws; a `LoopFs` Drop thaws, unmounts and detaches its loop device.

#![allow(dead_code)]

use std::{
    ffi::CString,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

/// Real-kernel tests share the machine-wide hooks; run them one at a time.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Skips (returns true) unless root ([`test_support::skip_unless_root`]).
pub fn skip_unless_root() -> bool {
    test_support::skip_unless_root("BPF, loop devices, FIFREEZE")
}

/// Starts the observer with `load`, required (a load failure fails the test), attributing
/// nothing to an agent.
pub async fn observer_with(load: freeze_observer::LoadOptions) -> freeze_observer::ObserverHandle {
    let config = freeze_observer::ObserverConfig {
        mode: freeze_observer::EbpfMode::Required,
        load,
        agent_pid: None,
    };
    freeze_observer::start(config)
        .await
        .expect("observer loads")
        .expect("observer running")
}

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("spawn {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Filesystem types the fixtures can make.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsKind {
    /// ext4, 64 MiB.
    Ext4,
    /// XFS, 300 MiB (mkfs.xfs's minimum).
    Xfs,
    /// btrfs, 256 MiB.
    Btrfs,
}

impl FsKind {
    fn mkfs(self) -> (&'static str, &'static [&'static str], u64) {
        match self {
            Self::Ext4 => ("mkfs.ext4", &["-q", "-F"], 64),
            Self::Xfs => ("mkfs.xfs", &["-q", "-f"], 300),
            Self::Btrfs => ("mkfs.btrfs", &["-q", "-f"], 256),
        }
    }
}

/// An image on a loop device (64 MiB ext4 unless made by [`LoopFs::with_kind`]), mounted
/// under a fresh directory in /var/tmp.
pub struct LoopFs {
    dir: tempfile::TempDir,
    pub mountpoint: PathBuf,
    loop_dev: String,
    mounted: bool,
}

impl LoopFs {
    /// Creates, formats (ext4) and mounts a new image.
    pub fn new(tag: &str) -> Self {
        Self::with_kind(tag, FsKind::Ext4)
    }

    /// Creates, formats and mounts a new image of `kind`.
    pub fn with_kind(tag: &str, kind: FsKind) -> Self {
        let dir = tempfile::Builder::new()
            .prefix(&format!("freeze-observer-{tag}-"))
            .tempdir_in("/var/tmp")
            .expect("scratch dir");
        let image = dir.path().join("fs.img");
        let (mkfs, flags, mib) = kind.mkfs();
        let f = std::fs::File::create(&image).expect("image");
        f.set_len(mib << 20).expect("size image");
        drop(f);
        let mut args = flags.to_vec();
        args.push(image.to_str().unwrap());
        run(mkfs, &args);
        let loop_dev = run("losetup", &["-f", "--show", image.to_str().unwrap()]);
        let mountpoint = dir.path().join("mnt");
        std::fs::create_dir(&mountpoint).expect("mountpoint");
        let mut fs = Self {
            dir,
            mountpoint,
            loop_dev,
            mounted: false,
        };
        run("mount", &[&fs.loop_dev, fs.mountpoint.to_str().unwrap()]);
        fs.mounted = true;
        fs
    }

    /// A path inside the filesystem.
    pub fn path(&self, name: &str) -> PathBuf {
        self.mountpoint.join(name)
    }

    /// Freezes it with `fsfreeze -f` (another process: origin "other").
    pub fn freeze(&self) -> FreezeGuard<'_> {
        self.freeze_by("fsfreeze").0
    }

    /// Freezes it with `tool --freeze MOUNTPOINT` (`fsfreeze` or `xfs_freeze`); also returns
    /// the pid of the process started.
    pub fn freeze_by(&self, tool: &str) -> (FreezeGuard<'_>, u32) {
        FreezeGuard::by_tool(&self.mountpoint, tool)
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        let mnt = self.mountpoint.to_str().unwrap().to_owned();
        let _ = Command::new("fsfreeze").args(["--unfreeze", &mnt]).output();
        if self.mounted {
            let _ = Command::new("umount").arg(&mnt).output();
        }
        let _ = Command::new("losetup")
            .args(["-d", &self.loop_dev])
            .output();
        let _ = self.dir.path();
    }
}

/// An active freeze of a filesystem; thawed (`fsfreeze --unfreeze`) on drop, also on panic.
/// Made only for a [`LoopFs`] or, in the coverage example, a test VM's scratch volume.
pub struct FreezeGuard<'a> {
    mountpoint: &'a Path,
    active: bool,
}

impl<'a> FreezeGuard<'a> {
    /// Freezes `mountpoint` by running `tool` (`fsfreeze` or `xfs_freeze`); also returns the
    /// pid of the process started. util-linux and busybox `fsfreeze` both take `--freeze`;
    /// `xfs_freeze` only `-f`.
    pub fn by_tool(mountpoint: &'a Path, tool: &str) -> (Self, u32) {
        // The guard exists before the tool runs, so even a failed run is thawed on drop.
        let guard = Self {
            mountpoint,
            active: true,
        };
        let flag = if tool == "fsfreeze" { "--freeze" } else { "-f" };
        let child = Command::new(tool)
            .arg(flag)
            .arg(mountpoint)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {tool}: {e}"));
        let pid = child.id();
        let out = child.wait_with_output().expect("wait");
        assert!(out.status.success(), "{tool} {flag} {mountpoint:?} failed");
        (guard, pid)
    }

    /// Freezes `mountpoint` with FIFREEZE from this process, as the agent does.
    pub fn here(mountpoint: &'a Path) -> Self {
        let guard = Self {
            mountpoint,
            active: true,
        };
        let dir = std::fs::File::open(mountpoint).expect("open mountpoint");
        // SAFETY: FIFREEZE (_IOWR('X', 119, int)) on a directory fd; the argument is unused.
        // The request's C type differs between glibc and musl, hence the inferred cast.
        let rc = unsafe { libc::ioctl(dir.as_raw_fd(), 0xC004_5877_u32 as _, 0) };
        assert_eq!(rc, 0, "FIFREEZE: {}", std::io::Error::last_os_error());
        guard
    }

    /// Thaws now; panics if the thaw fails.
    pub fn thaw(mut self) {
        self.active = false;
        run(
            "fsfreeze",
            &["--unfreeze", self.mountpoint.to_str().unwrap()],
        );
    }
}

impl Drop for FreezeGuard<'_> {
    fn drop(&mut self) {
        if self.active {
            let _ = Command::new("fsfreeze")
                .arg("--unfreeze")
                .arg(self.mountpoint)
                .output();
        }
    }
}

/// What a forked writer does once told to go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriterKind {
    /// write(2) to a file opened before the freeze (level WRITE).
    Write,
    /// open(O_CREAT) of a new file (level WRITE).
    Create,
    /// A store to a shared writable mapping of a file (level PAGEFAULT).
    MmapStore,
    /// rename(2) of an existing file (level WRITE, through `mnt_want_write`).
    ///
    /// (A level-FS writer is not reachable from a plain syscall here: on 6.18 ext4 the close of
    /// an unlinked file does not block on a frozen fs, checked by hand.)
    Rename,
}

impl WriterKind {
    /// The `comm` the child gives itself.
    pub fn comm(self) -> &'static str {
        match self {
            Self::Write => "w-write",
            Self::Create => "w-creat",
            Self::MmapStore => "w-mmap",
            Self::Rename => "w-rename",
        }
    }

    /// The freeze level it blocks at.
    pub fn level(self) -> u32 {
        match self {
            Self::Write | Self::Create | Self::Rename => 1,
            Self::MmapStore => 2,
        }
    }
}

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: valid array of two ints.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: fresh fds we own.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A forked child that prepared its write and waits for [`Writer::go`]; it reports the
/// monotonic time just before and just after its (possibly blocking) write.
pub struct Writer {
    pub pid: u32,
    pub kind: WriterKind,
    go: Option<OwnedFd>,
    done: OwnedFd,
    reaped: bool,
}

impl Writer {
    /// Forks a writer working in `dir` (a directory on the filesystem under test).
    pub fn spawn(kind: WriterKind, dir: &Path) -> Self {
        let name = CString::new(kind.comm()).unwrap();
        let file = CString::new(
            dir.join(format!("{}-{}", kind.comm(), std::process::id()))
                .to_str()
                .unwrap(),
        )
        .unwrap();
        let new_file = CString::new(
            dir.join(format!("{}-new-{}", kind.comm(), std::process::id()))
                .to_str()
                .unwrap(),
        )
        .unwrap();
        let (go_r, go_w) = pipe();
        let (done_r, done_w) = pipe();
        let (ready_r, ready_w) = pipe();
        let buf = [0x5au8; 4096];
        // SAFETY: the child only makes async-signal-safe syscalls and leaves with _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            // Child.
            unsafe {
                libc::prctl(libc::PR_SET_NAME, name.as_ptr() as libc::c_ulong, 0, 0, 0);
                let mut fd = -1;
                let mut map: *mut u8 = std::ptr::null_mut();
                match kind {
                    WriterKind::Write => {
                        fd = libc::open(
                            file.as_ptr(),
                            libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
                            0o644,
                        );
                    }
                    WriterKind::Create => {}
                    WriterKind::MmapStore => {
                        fd = libc::open(
                            file.as_ptr(),
                            libc::O_RDWR | libc::O_CREAT | libc::O_TRUNC,
                            0o644,
                        );
                        libc::ftruncate(fd, 4096);
                        libc::fsync(fd);
                        map = libc::mmap(
                            std::ptr::null_mut(),
                            4096,
                            libc::PROT_READ | libc::PROT_WRITE,
                            libc::MAP_SHARED,
                            fd,
                            0,
                        )
                        .cast();
                    }
                    WriterKind::Rename => {
                        fd = libc::open(
                            file.as_ptr(),
                            libc::O_RDWR | libc::O_CREAT | libc::O_TRUNC,
                            0o644,
                        );
                        libc::fsync(fd);
                        libc::close(fd);
                    }
                }
                let b = 1u8;
                libc::write(ready_w.as_raw_fd(), (&raw const b).cast(), 1);
                let mut g = 0u8;
                libc::read(go_r.as_raw_fd(), (&raw mut g).cast(), 1);
                let before = mono_ns();
                match kind {
                    WriterKind::Write => {
                        libc::write(fd, buf.as_ptr().cast(), buf.len());
                    }
                    WriterKind::Create => {
                        let nfd =
                            libc::open(new_file.as_ptr(), libc::O_WRONLY | libc::O_CREAT, 0o644);
                        libc::close(nfd);
                    }
                    WriterKind::MmapStore => {
                        if !map.is_null() && map != libc::MAP_FAILED.cast() {
                            std::ptr::write_volatile(map, 1);
                        }
                    }
                    WriterKind::Rename => {
                        libc::rename(file.as_ptr(), new_file.as_ptr());
                    }
                }
                let after = mono_ns();
                let times = [before, after];
                libc::write(done_w.as_raw_fd(), times.as_ptr().cast(), 16);
                libc::_exit(0);
            }
        }
        drop((go_r, done_w, ready_w));
        let mut b = 0u8;
        // SAFETY: reading one byte into a local.
        let n = unsafe { libc::read(ready_r.as_raw_fd(), (&raw mut b).cast(), 1) };
        assert_eq!(n, 1, "writer {kind:?} did not get ready");
        Self {
            pid: pid as u32,
            kind,
            go: Some(go_w),
            done: done_r,
            reaped: false,
        }
    }

    /// Lets the writer do its write now.
    pub fn go(&mut self) {
        let go = self.go.take().expect("go once");
        let b = 1u8;
        // SAFETY: writing one byte from a local.
        assert_eq!(
            unsafe { libc::write(go.as_raw_fd(), (&raw const b).cast(), 1) },
            1
        );
    }

    /// Waits for the write to finish and the child to exit; returns how long the write took
    /// as the child measured it.
    pub fn finish(&mut self) -> Duration {
        let mut times = [0u64; 2];
        // SAFETY: reading 16 bytes into a local array.
        let n = unsafe { libc::read(self.done.as_raw_fd(), times.as_mut_ptr().cast(), 16) };
        assert_eq!(n, 16, "writer {:?} reported no times", self.kind);
        let mut status = 0;
        // SAFETY: our own child.
        unsafe { libc::waitpid(self.pid as i32, &mut status, 0) };
        self.reaped = true;
        Duration::from_nanos(times[1] - times[0])
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if !self.reaped {
            // SAFETY: our own child; it may be blocked on a frozen fs that the guards thaw.
            unsafe {
                libc::kill(self.pid as i32, libc::SIGKILL);
                let mut status = 0;
                libc::waitpid(self.pid as i32, &mut status, 0);
            }
        }
    }
}

/// Polls `cond` every 10 ms until it holds or `timeout` passes.
pub async fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cond()
}

/// |a - b| <= tolerance.
pub fn close_to(a: Duration, b: Duration, tolerance: Duration) -> bool {
    a.abs_diff(b) <= tolerance
}

/// Whether `a` lies in `range` widened by `tolerance` on both sides.
pub fn within(
    a: Duration,
    range: &std::ops::RangeInclusive<Duration>,
    tolerance: Duration,
) -> bool {
    a + tolerance >= *range.start() && a <= *range.end() + tolerance
}
