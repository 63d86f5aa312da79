//! `freeze-bench __child`: the wrapper every contender process is started through.
//!
//! It runs in the freshly forked child (single-threaded, before the contender's `exec`), so it
//! can do what a `pre_exec` closure in the multi-threaded benchmark could not do safely:
//! - `PR_SET_PDEATHSIG`: if the benchmark dies (even by SIGKILL), the contender gets SIGTERM
//!   and thaws what it froze instead of holding the scratch filesystems frozen;
//! - with `--isolate`, a private mount namespace in which only `/`, `/proc`, `/sys`, `/dev`
//!   and this run's scratch mounts remain. qemu-ga's `guest-fsfreeze-thaw` issues FITHAW on
//!   *every* mount it can see (it has no record of what it froze), which would thaw freezes
//!   held by other programs on this shared machine; in its own namespace it sees only ours.
//!
//! Usage: `__child --parent PID [--isolate] [--keep PATH]... -- PROGRAM ARGS...`

use std::convert::Infallible;
use std::ffi::{CString, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use freeze_observer::mountinfo::{self, Mount};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::Signal;

/// The hidden subcommand name.
pub const SUBCOMMAND: &str = "__child";

/// Why the wrapper could not exec the contender.
#[derive(Debug, thiserror::Error)]
pub enum ChildError {
    /// The command line is not `--parent PID [...] -- PROGRAM ...`.
    #[error(
        "usage: {SUBCOMMAND} --parent PID [--isolate] [--keep PATH]... -- PROGRAM ARGS...: {0}"
    )]
    Usage(String),
    /// The benchmark exited before the contender started.
    #[error("the benchmark (pid {0}) is gone")]
    Orphaned(u32),
    /// A system call failed.
    #[error("{0}: {1}")]
    Sys(&'static str, nix::errno::Errno),
    /// Reading mountinfo failed.
    #[error("reading /proc/self/mountinfo: {0}")]
    Mountinfo(std::io::Error),
    /// After isolation a foreign block-device filesystem is still visible.
    #[error("mount isolation incomplete: {0} is still visible")]
    StillVisible(PathBuf),
    /// An argument contains a NUL byte.
    #[error("argument with a NUL byte")]
    Nul,
}

/// What the wrapper was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildSpec {
    /// The benchmark's pid; the wrapper refuses to start if it is no longer the parent.
    pub parent: u32,
    /// Run in a private mount namespace with only `keep` (and system mounts) visible.
    pub isolate: bool,
    /// Mountpoints to keep visible.
    pub keep: Vec<PathBuf>,
    /// Program and its arguments.
    pub argv: Vec<OsString>,
}

impl ChildSpec {
    /// The wrapper's arguments (after the subcommand), the inverse of [`ChildSpec::parse`].
    pub fn to_args(&self) -> Vec<OsString> {
        let mut out: Vec<OsString> = vec!["--parent".into(), self.parent.to_string().into()];
        if self.isolate {
            out.push("--isolate".into());
        }
        for k in &self.keep {
            out.push("--keep".into());
            out.push(k.clone().into());
        }
        out.push("--".into());
        out.extend(self.argv.iter().cloned());
        out
    }

    /// Parses the wrapper's arguments.
    pub fn parse(args: &[OsString]) -> Result<Self, ChildError> {
        let mut parent = None;
        let mut isolate = false;
        let mut keep = Vec::new();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            match a.to_str() {
                Some("--parent") => {
                    let v = it
                        .next()
                        .and_then(|v| v.to_str())
                        .and_then(|v| v.parse().ok());
                    parent = Some(v.ok_or_else(|| ChildError::Usage("bad --parent".into()))?);
                }
                Some("--isolate") => isolate = true,
                Some("--keep") => keep
                    .push(PathBuf::from(it.next().ok_or_else(|| {
                        ChildError::Usage("--keep needs a path".into())
                    })?)),
                Some("--") => {
                    let argv: Vec<OsString> = it.cloned().collect();
                    if argv.is_empty() {
                        return Err(ChildError::Usage("no program".into()));
                    }
                    return Ok(Self {
                        parent: parent.ok_or_else(|| ChildError::Usage("no --parent".into()))?,
                        isolate,
                        keep,
                        argv,
                    });
                }
                _ => return Err(ChildError::Usage(format!("unexpected {a:?}"))),
            }
        }
        Err(ChildError::Usage("missing --".into()))
    }
}

/// Entry point of the wrapper: never returns on success (the contender replaces it).
pub fn main(args: &[OsString]) -> ! {
    let err = match ChildSpec::parse(args).and_then(|spec| exec(&spec)) {
        Ok(never) => match never {},
        Err(e) => e,
    };
    eprintln!("freeze-bench {SUBCOMMAND}: {err}");
    std::process::exit(127)
}

fn exec(spec: &ChildSpec) -> Result<Infallible, ChildError> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGTERM)
        .map_err(|e| ChildError::Sys("prctl(PR_SET_PDEATHSIG)", e))?;
    // The parent may have died between fork and prctl; then nobody would ever signal us.
    if nix::unistd::getppid().as_raw() as u32 != spec.parent {
        return Err(ChildError::Orphaned(spec.parent));
    }
    if spec.isolate {
        isolate(&spec.keep)?;
    }
    let argv: Vec<CString> = spec
        .argv
        .iter()
        .map(|a| CString::new(a.as_bytes()).map_err(|_| ChildError::Nul))
        .collect::<Result<_, _>>()?;
    nix::unistd::execvp(&argv[0], &argv).map_err(|e| ChildError::Sys("execvp", e))
}

/// Enters a private mount namespace and detaches every mount not needed, then checks that
/// no block-device filesystem other than the root's and `keep` remains visible.
fn isolate(keep: &[PathBuf]) -> Result<(), ChildError> {
    unshare(CloneFlags::CLONE_NEWNS).map_err(|e| ChildError::Sys("unshare(CLONE_NEWNS)", e))?;
    // Private first: without it the detaches below would propagate to the real namespace.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| ChildError::Sys("making / recursively private", e))?;
    let entries = mountinfo::read_self().map_err(ChildError::Mountinfo)?;
    for path in detach_plan(&entries, keep) {
        // EINVAL: already gone with a detached parent. Anything else is caught by the check.
        let _ = umount2(&path, MntFlags::MNT_DETACH);
    }
    let entries = mountinfo::read_self().map_err(ChildError::Mountinfo)?;
    if let Some(p) = still_visible(&entries, keep) {
        return Err(ChildError::StillVisible(p));
    }
    Ok(())
}

/// True for mounts the contender needs to run at all: `/`, procfs, sysfs, devices.
fn is_system(path: &Path) -> bool {
    path == Path::new("/")
        || ["/proc", "/sys", "/dev"]
            .iter()
            .any(|p| path.starts_with(p))
}

/// The mountpoints to detach, deepest first, each listed once per stacked mount: everything
/// except system mounts, the `keep` mounts and their ancestors.
pub fn detach_plan(entries: &[Mount], keep: &[PathBuf]) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = entries
        .iter()
        .map(|e| e.mount_point.clone())
        .filter(|p| !is_system(p) && !keep.iter().any(|k| k.starts_with(p)))
        .collect();
    out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    out
}

/// A block-device mount (major != 0) that is neither the root filesystem nor kept.
pub fn still_visible(entries: &[Mount], keep: &[PathBuf]) -> Option<PathBuf> {
    let root = entries
        .iter()
        .rev()
        .find(|e| e.mount_point == Path::new("/"))
        .map(|e| e.dev);
    entries
        .iter()
        .find(|e| e.dev.major != 0 && Some(e.dev) != root && !keep.contains(&e.mount_point))
        .map(|e| e.mount_point.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 1 254:0 / / rw - ext4 /dev/vda rw
23 22 0:21 / /proc rw - proc proc rw
24 22 0:22 / /sys rw - sysfs sysfs rw
25 24 0:30 / /sys/fs/cgroup rw - tmpfs tmpfs rw
26 22 0:5 / /dev rw - devtmpfs udev rw
27 26 0:23 / /dev/shm rw - tmpfs tmpfs rw
28 22 254:0 /run/netns /run/netns rw - ext4 /dev/vda rw
29 22 7:0 / /var/tmp/other-1/mnt rw - ext4 /dev/loop0 rw
30 22 7:0 / /var/tmp/other-1/bind rw - ext4 /dev/loop0 rw
31 22 7:3 / /var/tmp/freeze-bench-x/mnt/fs0 rw - ext4 /dev/loop3 rw
32 22 7:4 / /var/tmp/freeze-bench-x/mnt/fs1 rw - ext4 /dev/loop4 rw
33 29 0:40 / /var/tmp/other-1/mnt/sub rw - tmpfs tmpfs rw
34 22 0:41 / /work rw - tmpfs tmpfs rw
";

    fn keep() -> Vec<PathBuf> {
        vec![
            "/var/tmp/freeze-bench-x/mnt/fs0".into(),
            "/var/tmp/freeze-bench-x/mnt/fs1".into(),
        ]
    }

    #[test]
    fn plan_detaches_foreign_mounts_deepest_first_and_keeps_ours() {
        let plan = detach_plan(
            &mountinfo::parse_mountinfo_lenient(SAMPLE.as_bytes()),
            &keep(),
        );
        let names: Vec<&str> = plan.iter().map(|p| p.to_str().unwrap()).collect();
        assert_eq!(names[0], "/var/tmp/other-1/mnt/sub");
        for p in [
            "/run/netns",
            "/var/tmp/other-1/mnt",
            "/var/tmp/other-1/bind",
            "/work",
        ] {
            assert!(names.contains(&p), "{p} not detached: {names:?}");
        }
        for p in ["/", "/proc", "/sys/fs/cgroup", "/dev/shm"] {
            assert!(!names.contains(&p), "{p} detached: {names:?}");
        }
        assert!(
            !names.iter().any(|n| n.contains("freeze-bench")),
            "{names:?}"
        );
    }

    #[test]
    fn a_keep_path_under_a_foreign_mount_keeps_its_ancestor() {
        let text = "22 1 254:0 / / rw - ext4 /dev/vda rw\n\
                    40 22 0:50 / /var rw - tmpfs tmpfs rw\n\
                    41 40 7:3 / /var/tmp/fb/mnt/fs0 rw - ext4 /dev/loop3 rw\n";
        let keep = vec![PathBuf::from("/var/tmp/fb/mnt/fs0")];
        assert!(
            detach_plan(&mountinfo::parse_mountinfo_lenient(text.as_bytes()), &keep).is_empty()
        );
    }

    #[test]
    fn visibility_check_flags_foreign_block_devices_only() {
        let all = mountinfo::parse_mountinfo_lenient(SAMPLE.as_bytes());
        assert_eq!(
            still_visible(&all, &keep()),
            Some(PathBuf::from("/var/tmp/other-1/mnt"))
        );
        let isolated: Vec<Mount> = all
            .into_iter()
            .filter(|e| !e.mount_point.starts_with("/var/tmp/other-1"))
            .collect();
        // /run/netns is the root's own superblock: FITHAW there is the root's, never frozen.
        assert_eq!(still_visible(&isolated, &keep()), None);
    }

    #[test]
    fn arguments_round_trip() {
        let spec = ChildSpec {
            parent: 42,
            isolate: true,
            keep: keep(),
            argv: vec![
                "/usr/sbin/qemu-ga".into(),
                "-m".into(),
                "unix-listen".into(),
            ],
        };
        assert_eq!(ChildSpec::parse(&spec.to_args()).unwrap(), spec);
        assert!(ChildSpec::parse(&["--parent".into(), "1".into()]).is_err());
        assert!(ChildSpec::parse(&["--".into(), "x".into()]).is_err());
    }
}
