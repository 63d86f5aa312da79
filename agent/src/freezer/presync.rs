//! Pre-sync: flush dirty data while writers still run, so the frozen window is short.
//!
//! FIFREEZE syncs the filesystem itself, and every writer is blocked while it does. Syncing
//! first (in parallel across filesystems, with `syncfs`) leaves little for FIFREEZE to flush.
//! Like iterative pre-copy in live migration, rounds repeat while they keep getting faster,
//! until one finishes under `settle` or `max_rounds`/`budget` is reached; a writer that dirties
//! faster than the disk drains therefore cannot postpone the freeze for long.
//!
//! When the whole machine has next to no dirty page cache, there is nothing to pre-sync and a
//! round would only add a cache flush per filesystem to Quiesce: the pre-sync is skipped.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::fcntl::{open, OFlag};
use nix::sys::stat::Mode;

/// Bounds of the pre-sync.
#[derive(Debug, Clone, Copy)]
pub struct PresyncConfig {
    /// A round faster than this ends the pre-sync: little is left for FIFREEZE.
    pub settle: Duration,
    /// At most this many rounds.
    pub max_rounds: u32,
    /// Do not start another round after this much time in total.
    pub budget: Duration,
    /// Skip the pre-sync when the machine's dirty plus under-writeback page cache
    /// (`/proc/meminfo`, all filesystems) is below this many bytes: FIFREEZE then writes
    /// next to nothing, while a syncfs round still costs a cache flush per filesystem.
    pub skip_below_dirty: u64,
}

impl Default for PresyncConfig {
    fn default() -> Self {
        Self {
            settle: Duration::from_millis(10),
            max_rounds: 5,
            budget: Duration::from_secs(3),
            skip_below_dirty: 256 << 10,
        }
    }
}

/// What the pre-sync did.
#[derive(Debug, Clone, Default)]
pub struct PresyncReport {
    /// Duration of each round.
    pub rounds: Vec<Duration>,
    /// Total time spent.
    pub total: Duration,
    /// Machine-wide dirty + writeback bytes before starting, if `/proc/meminfo` was readable.
    pub dirty_before: Option<u64>,
    /// True if skipped because `dirty_before` was under `skip_below_dirty`.
    pub skipped: bool,
}

/// Syncs every mountpoint in parallel, round after round, within the configured bounds.
/// Errors are logged and ignored: the pre-sync is an optimisation, FIFREEZE still syncs.
pub fn presync(mount_points: &[PathBuf], cfg: &PresyncConfig) -> PresyncReport {
    let start = Instant::now();
    let mut report = PresyncReport::default();
    if mount_points.is_empty() {
        return report;
    }
    report.dirty_before = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| dirty_bytes(&m));
    if report
        .dirty_before
        .is_some_and(|d| d < cfg.skip_below_dirty)
    {
        tracing::debug!(
            dirty_bytes = report.dirty_before,
            "pre-sync skipped: no dirty page cache to speak of"
        );
        report.skipped = true;
        report.total = start.elapsed();
        return report;
    }
    let fds: Vec<_> = mount_points
        .iter()
        .filter_map(|p| {
            match open(
                p,
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                Mode::empty(),
            ) {
                Ok(fd) => Some(fd),
                Err(e) => {
                    tracing::debug!(mountpoint = %p.display(), error = %e, "pre-sync: cannot open");
                    None
                }
            }
        })
        .collect();
    let mut previous: Option<Duration> = None;
    while (report.rounds.len() as u32) < cfg.max_rounds && start.elapsed() < cfg.budget {
        let round_start = Instant::now();
        std::thread::scope(|s| {
            for fd in &fds {
                s.spawn(move || {
                    if let Err(e) = nix::unistd::syncfs(fd) {
                        tracing::debug!(error = %e, "pre-sync: syncfs failed");
                    }
                });
            }
        });
        let took = round_start.elapsed();
        report.rounds.push(took);
        if took < cfg.settle || previous.is_some_and(|p| took >= p) {
            break;
        }
        previous = Some(took);
    }
    report.total = start.elapsed();
    report
}

/// `Dirty` + `Writeback` of `/proc/meminfo` text, in bytes.
fn dirty_bytes(meminfo: &str) -> Option<u64> {
    let kib = |name: &str| -> Option<u64> {
        let line = meminfo.lines().find(|l| l.starts_with(name))?;
        line[name.len()..].split_whitespace().next()?.parse().ok()
    };
    Some((kib("Dirty:")? + kib("Writeback:")?) * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_set_does_nothing() {
        let r = presync(&[], &PresyncConfig::default());
        assert!(r.rounds.is_empty());
    }

    #[test]
    fn respects_the_round_limit_and_stops_once_settled() {
        // A tmpfs-backed or idle directory syncs almost instantly: one round settles it.
        let dir = tempfile::tempdir().unwrap();
        let cfg = PresyncConfig {
            settle: Duration::from_secs(10),
            max_rounds: 3,
            budget: Duration::from_secs(5),
            skip_below_dirty: 0,
        };
        let r = presync(&[dir.path().to_path_buf()], &cfg);
        assert_eq!(r.rounds.len(), 1, "{r:?}");
        assert!(!r.skipped);
        let cfg = PresyncConfig {
            settle: Duration::ZERO,
            max_rounds: 0,
            budget: Duration::from_secs(5),
            skip_below_dirty: 0,
        };
        assert!(presync(&[dir.path().to_path_buf()], &cfg).rounds.is_empty());
    }

    #[test]
    fn skipped_when_the_machine_has_less_dirty_cache_than_the_threshold() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = PresyncConfig {
            skip_below_dirty: u64::MAX,
            ..PresyncConfig::default()
        };
        let r = presync(&[dir.path().to_path_buf()], &cfg);
        assert!(r.skipped, "{r:?}");
        assert!(r.rounds.is_empty());
        assert!(r.dirty_before.is_some(), "/proc/meminfo unreadable?");
    }

    #[test]
    fn dirty_bytes_adds_dirty_and_writeback() {
        let meminfo =
            "MemTotal:       24684384 kB\nDirty:              84 kB\nWriteback:          16 kB\n";
        assert_eq!(dirty_bytes(meminfo), Some(100 * 1024));
        assert_eq!(dirty_bytes("MemTotal: 1 kB\n"), None);
    }
}
