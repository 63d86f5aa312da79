//! What the footprint run reads from the system: a process's memory and threads from
//! `/proc/PID/status`, how much of a file is in the page cache (and evicting it, for cold
//! starts), binary sizes (as built, stripped, and a dynamic binary's shared libraries).

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::error::BenchError;

/// Memory and threads of a process, from `/proc/PID/status` (sizes in KiB).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcStatus {
    /// Resident set (VmRSS).
    pub rss_kib: u64,
    /// Peak resident set since exec (VmHWM).
    pub hwm_kib: u64,
    /// Anonymous resident memory (heap, stacks): RssAnon.
    pub anon_kib: u64,
    /// File-backed resident memory (the binary's and libraries' pages): RssFile.
    pub file_kib: u64,
    /// Threads.
    pub threads: u64,
}

impl ProcStatus {
    /// Reads `/proc/PID/status`.
    pub fn of(pid: u32) -> Option<Self> {
        parse_status(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
    }
}

/// The fields of [`ProcStatus`] from the text of `/proc/PID/status`.
pub fn parse_status(status: &str) -> Option<ProcStatus> {
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        line[name.len()..].split_whitespace().next()?.parse().ok()
    };
    Some(ProcStatus {
        rss_kib: field("VmRSS:")?,
        hwm_kib: field("VmHWM:")?,
        anon_kib: field("RssAnon:").unwrap_or(0),
        file_kib: field("RssFile:").unwrap_or(0),
        threads: field("Threads:")?,
    })
}

/// The scheduler state letter of a thread of this process (`R`, `S`, `D`, ...).
pub fn thread_state(tid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..].trim_start().chars().next()
}

/// Share (0..1) of `path`'s pages that are in the page cache.
pub fn cached_fraction(path: &Path) -> Option<f64> {
    let file = std::fs::File::open(path).ok()?;
    let len = file.metadata().ok()?.len() as usize;
    if len == 0 {
        return Some(1.0);
    }
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
    // SAFETY: a private read-only mapping of a file we hold open, unmapped below; mincore
    // only reports residency into `vec`, sized for every page of the mapping.
    unsafe {
        let addr = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_PRIVATE,
            file.as_raw_fd(),
            0,
        );
        if addr == libc::MAP_FAILED {
            return None;
        }
        let pages = len.div_ceil(page);
        let mut vec = vec![0u8; pages];
        let rc = libc::mincore(addr, len, vec.as_mut_ptr());
        libc::munmap(addr, len);
        (rc == 0).then(|| vec.iter().filter(|&&b| b & 1 == 1).count() as f64 / pages as f64)
    }
}

/// Drops `path`'s clean pages from the page cache (`POSIX_FADV_DONTNEED` after writing back
/// what is dirty), so the next exec reads the binary from disk as the first start after a
/// boot does. Pages another process has mapped stay.
pub fn evict(path: &Path) -> Result<(), BenchError> {
    let file =
        std::fs::File::open(path).map_err(BenchError::io(format!("opening {}", path.display())))?;
    file.sync_all()
        .map_err(BenchError::io(format!("syncing {}", path.display())))?;
    // SAFETY: a valid fd; advice only.
    let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if rc != 0 {
        return Err(BenchError::io(format!("evicting {}", path.display()))(
            std::io::Error::from_raw_os_error(rc),
        ));
    }
    Ok(())
}

/// Size of a binary as it is and stripped of symbols and debug info (`strip` on a copy in
/// `scratch_dir`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinarySize {
    /// What the row is.
    pub label: String,
    /// The file.
    pub path: PathBuf,
    /// Bytes as built.
    pub bytes: u64,
    /// Bytes after `strip`, if that worked.
    pub stripped: Option<u64>,
    /// Bytes of the shared libraries it loads (dynamic binaries), from `ldd`.
    pub shared_libs: Option<u64>,
    /// Statically linked (no `ldd` dependencies).
    pub is_static: bool,
}

/// Measures `path`, or `None` if it does not exist.
pub fn binary_size(label: &str, path: &Path, scratch_dir: &Path) -> Option<BinarySize> {
    let bytes = std::fs::metadata(path).ok()?.len();
    let out = scratch_dir.join(format!("stripped-{}", path.file_name()?.to_string_lossy()));
    let stripped = Command::new("strip")
        .arg("-o")
        .arg(&out)
        .arg(path)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|_| std::fs::metadata(&out).ok())
        .map(|m| m.len());
    let _ = std::fs::remove_file(&out);
    let libs = shared_libraries(path);
    Some(BinarySize {
        label: label.to_owned(),
        path: path.to_owned(),
        bytes,
        stripped,
        is_static: libs.as_ref().is_some_and(Vec::is_empty),
        shared_libs: libs.filter(|l| !l.is_empty()).map(|l| {
            l.iter()
                .filter_map(|p| std::fs::metadata(p).ok())
                .map(|m| m.len())
                .sum()
        }),
    })
}

/// CPU time and context switches of all of a process's threads so far: what a phase of
/// the workload cost the process, independent of how fast the machine wakes it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SchedTotals {
    /// Time on a CPU (`/proc/PID/task/TID/schedstat`, nanoseconds, summed over threads).
    pub cpu: Duration,
    /// Voluntary and involuntary context switches (`/proc/PID/task/TID/status`).
    pub switches: u64,
}

impl SchedTotals {
    /// Sums the threads of `pid` (threads that already exited are not counted).
    pub fn of(pid: u32) -> Option<Self> {
        let mut total = SchedTotals::default();
        for task in std::fs::read_dir(format!("/proc/{pid}/task"))
            .ok()?
            .flatten()
        {
            let read = |f: &str| std::fs::read_to_string(task.path().join(f)).ok();
            let (Some(schedstat), Some(status)) = (read("schedstat"), read("status")) else {
                continue; // the thread ended meanwhile
            };
            let t = parse_task(&schedstat, &status)?;
            total.cpu += t.cpu;
            total.switches += t.switches;
        }
        Some(total)
    }

    /// What was used between `earlier` and `self`.
    pub fn since(&self, earlier: &SchedTotals) -> SchedTotals {
        SchedTotals {
            cpu: self.cpu.saturating_sub(earlier.cpu),
            switches: self.switches.saturating_sub(earlier.switches),
        }
    }
}

/// One thread's totals from its `schedstat` ("RUN_NS WAIT_NS SLICES") and `status` text.
pub fn parse_task(schedstat: &str, status: &str) -> Option<SchedTotals> {
    let run_ns: u64 = schedstat.split_whitespace().next()?.parse().ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        line[name.len()..].trim().parse().ok()
    };
    Some(SchedTotals {
        cpu: Duration::from_nanos(run_ns),
        switches: field("voluntary_ctxt_switches:")? + field("nonvoluntary_ctxt_switches:")?,
    })
}

/// The shared libraries `ldd` resolves for `path` (empty for a static binary).
fn shared_libraries(path: &Path) -> Option<Vec<PathBuf>> {
    let out = Command::new("ldd").arg(path).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // "not a dynamic executable"
        return Some(Vec::new());
    }
    Some(parse_ldd(&text))
}

/// Library paths in `ldd` output (`name => /path (addr)` and `/path (addr)` lines).
pub fn parse_ldd(text: &str) -> Vec<PathBuf> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            let target = l.split("=>").nth(1).unwrap_or(l).trim();
            let p = target.split_whitespace().next()?;
            p.starts_with('/').then(|| PathBuf::from(p))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_fields_and_threads() {
        let s = "Name:\tguest-agent\nVmHWM:\t   16384 kB\nVmRSS:\t   12288 kB\n\
                 RssAnon:\t    4096 kB\nRssFile:\t    8192 kB\nRssShmem:\t       0 kB\n\
                 Threads:\t4\n";
        assert_eq!(
            parse_status(s),
            Some(ProcStatus {
                rss_kib: 12288,
                hwm_kib: 16384,
                anon_kib: 4096,
                file_kib: 8192,
                threads: 4
            })
        );
        assert_eq!(parse_status("VmRSS:\t1 kB\n"), None);
    }

    #[test]
    fn task_totals_come_from_schedstat_and_both_switch_counts() {
        let status = "Name:\tguest-agent\nvoluntary_ctxt_switches:\t1470\n\
                      nonvoluntary_ctxt_switches:\t1944\n";
        let t = parse_task("123456789 5000 42\n", status).unwrap();
        assert_eq!(t.cpu, Duration::from_nanos(123_456_789));
        assert_eq!(t.switches, 3414);
        assert_eq!(parse_task("x 1 2", status), None);
        assert_eq!(parse_task("1 2 3", "voluntary_ctxt_switches:\t1\n"), None);
        let later = SchedTotals {
            cpu: Duration::from_millis(5),
            switches: 10,
        };
        let earlier = SchedTotals {
            cpu: Duration::from_millis(2),
            switches: 4,
        };
        assert_eq!(
            later.since(&earlier),
            SchedTotals {
                cpu: Duration::from_millis(3),
                switches: 6
            }
        );
    }

    #[test]
    fn our_own_totals_are_read() {
        let t = SchedTotals::of(std::process::id()).unwrap();
        assert!(t.cpu > Duration::ZERO && t.switches > 0, "{t:?}");
    }

    #[test]
    fn ldd_lines_give_library_paths() {
        let text = "\tlinux-vdso.so.1 (0x00007ffc)\n\
                    \tlibglib-2.0.so.0 => /lib/x86_64-linux-gnu/libglib-2.0.so.0 (0x00007f)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
        assert_eq!(
            parse_ldd(text),
            vec![
                PathBuf::from("/lib/x86_64-linux-gnu/libglib-2.0.so.0"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2")
            ]
        );
    }

    #[test]
    fn own_thread_is_running_and_own_binary_is_cached() {
        let tid = nix::unistd::gettid().as_raw() as u32;
        assert_eq!(thread_state(tid), Some('R'));
        let me = std::env::current_exe().unwrap();
        assert!(cached_fraction(&me).unwrap() > 0.0);
    }
}
