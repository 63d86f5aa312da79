//! Asking the kernel side about one filesystem on demand: the `probe_fd` program is loaded but
//! never attached, and run through `BPF_PROG_TEST_RUN` with a descriptor of the mountpoint
//! (opened by the caller, so the program resolves it through the caller's own file table).
//! Nothing runs on any other task's path, which is what keeps observing free for the rest of
//! the machine. Used at start-up (filesystems frozen before the observer) and by the
//! collector's poll of filesystems a sync_fs hook saw being frozen.

use std::{
    fs::File,
    io,
    os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd},
    path::Path,
};

use agent_common::{PROBE_REPORT, PROBE_TRACK};
use aya::{programs::RawTracePoint, Ebpf};

use crate::{loader::LoadError, mountinfo};

/// The program's name in the object.
const PROGRAM: &str = "probe_fd";
/// `BPF_PROG_TEST_RUN` (`enum bpf_cmd`).
const BPF_PROG_TEST_RUN: libc::c_long = 10;

/// The `test` member of `union bpf_attr` (include/uapi/linux/bpf.h), up to `batch_size`.
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

/// What to do with a filesystem found frozen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Start-up: report it as found frozen.
    Report,
    /// Poll: complete or end a freeze seen begun, report the thaw of one known frozen.
    Track,
}

/// The loaded `probe_fd` program (a descriptor of its own; the object may be dropped first).
#[derive(Debug)]
pub(crate) struct Probe {
    prog: OwnedFd,
}

impl Probe {
    /// Loads `probe_fd` from `ebpf` (without attaching it) and keeps a descriptor to it.
    pub(crate) fn load(ebpf: &mut Ebpf) -> Result<Self, LoadError> {
        let prog: &mut RawTracePoint = crate::loader::program(ebpf, PROGRAM)?;
        prog.load()
            .map_err(|e| crate::loader::program_error(PROGRAM, "loading", e))?;
        let fd = prog
            .fd()
            .map_err(|e| crate::loader::program_error(PROGRAM, "loading", e))?;
        let prog = fd
            .as_fd()
            .try_clone_to_owned()
            .map_err(|source| LoadError::Io {
                what: "duplicating the probe program's descriptor",
                source,
            })?;
        Ok(Self { prog })
    }

    /// Runs the program for `fd`. `expected_sb` (0: any) guards against a mountpoint that
    /// now holds another filesystem. Returns the frozen level 0..=4, or
    /// [`agent_common::PROBE_UNRESOLVED`] / [`agent_common::PROBE_OTHER_SB`].
    pub(crate) fn run(&self, fd: BorrowedFd<'_>, mode: Mode, expected_sb: u64) -> io::Result<u32> {
        let mode = match mode {
            Mode::Report => PROBE_REPORT,
            Mode::Track => PROBE_TRACK,
        };
        let args: [u64; 3] = [fd.as_raw_fd() as u64, mode, expected_sb];
        let mut attr = TestRunAttr {
            prog_fd: self.prog.as_raw_fd() as u32,
            ctx_size_in: std::mem::size_of_val(&args) as u32,
            ctx_in: args.as_ptr() as u64,
            ..TestRunAttr::default()
        };
        // SAFETY: `attr` is a valid, zero-padded `bpf_attr.test` of the size passed; `args`
        // outlives the call; the kernel only reads `ctx_in` and writes `retval`.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_PROG_TEST_RUN,
                &raw mut attr,
                std::mem::size_of::<TestRunAttr>(),
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(attr.retval)
    }

    /// Opens `mountpoint` read-only (no write, so it does not block on a frozen filesystem)
    /// and runs the program on it.
    pub(crate) fn run_on(
        &self,
        mountpoint: &Path,
        mode: Mode,
        expected_sb: u64,
    ) -> io::Result<u32> {
        let dir = File::open(mountpoint)?;
        self.run(dir.as_fd(), mode, expected_sb)
    }

    /// Start-up: reports every mounted filesystem that is already frozen (the kernel side
    /// emits the events and remembers their semaphores, so their writers are attributed).
    pub(crate) fn report_frozen_filesystems(&self) -> io::Result<()> {
        let mut seen = std::collections::HashSet::new();
        for e in mountinfo::read_self()?
            .iter()
            .filter(|e| probe_candidate(e))
        {
            if seen.insert(e.dev) {
                // A mountpoint we cannot open (permissions, a stale mount) is skipped.
                let _ = self.run_on(&e.mount_point, Mode::Report, 0);
            }
        }
        Ok(())
    }
}

/// Filesystem types the probe may open: block-device backed ones (major != 0) plus btrfs,
/// whose anonymous device has major 0. Network and automount filesystems are never opened.
pub(crate) fn probe_candidate(e: &mountinfo::Mount) -> bool {
    const NEVER: [&str; 7] = ["autofs", "nfs", "nfs4", "cifs", "smb3", "fuse", "9p"];
    if NEVER
        .iter()
        .any(|t| e.fstype == *t || e.fstype.starts_with("fuse."))
    {
        return false;
    }
    e.dev.major != 0 || e.fstype == "btrfs"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_run_attr_matches_the_kernel_layout() {
        assert_eq!(std::mem::size_of::<TestRunAttr>(), 80);
        assert_eq!(std::mem::offset_of!(TestRunAttr, ctx_size_in), 40);
        assert_eq!(std::mem::offset_of!(TestRunAttr, ctx_in), 48);
        assert_eq!(std::mem::offset_of!(TestRunAttr, flags), 64);
    }

    #[test]
    fn probe_skips_network_and_virtual_filesystems() {
        let entry = |major, fstype: &str| {
            let line = format!("1 0 {major}:1 / /x rw - {fstype} none rw");
            mountinfo::Mount::parse_line(line.as_bytes()).unwrap()
        };
        assert!(probe_candidate(&entry(7, "ext4")));
        assert!(probe_candidate(&entry(0, "btrfs")));
        assert!(!probe_candidate(&entry(0, "proc")));
        assert!(!probe_candidate(&entry(0, "nfs4")));
        assert!(!probe_candidate(&entry(8, "fuse.sshfs")));
        assert!(!probe_candidate(&entry(0, "autofs")));
    }
}
