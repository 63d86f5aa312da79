//! Expedited RCU grace periods for the duration of the FIFREEZE calls.
//!
//! `freeze_super` takes each of a superblock's three `s_writers` percpu rw-semaphores for
//! writing, and every `percpu_down_write` starts with `rcu_sync_enter`, which waits for a full
//! RCU grace period. With normal grace periods (HZ=250, preemptible RCU) that is most of a
//! clean FIFREEZE: measured here, 48 ms per `fsfreeze -f` with normal grace periods and 6 ms
//! with `/sys/kernel/rcu_expedited` set. Writers block from the first level on, so the
//! grace periods of the second and third levels are pure stall time for them.
//!
//! The agent therefore sets `rcu_expedited` just before its first FIFREEZE and puts the old
//! value back when the last one has returned (the guard below, which also runs on panic).
//! Thaw needs nothing: `percpu_up_write` does not wait for a grace period. An expedited grace
//! period interrupts the other CPUs briefly; that happens only while the agent freezes.
//!
//! A marker file in the state directory (tmpfs) records that the agent changed the value, so
//! that an agent killed in between has its successor put it back at start-up. The knob is
//! left alone when it is already set (by an administrator or another agent), and the kernel's
//! `rcu_normal=1` overrides it (then nothing is gained, nothing breaks).

use std::fs;
use std::path::{Path, PathBuf};

/// The kernel's switch.
pub const SYSFS_KNOB: &str = "/sys/kernel/rcu_expedited";
/// Marker file inside the state directory while the agent holds the knob set.
pub const MARKER_FILE: &str = "rcu-expedited";

/// Where the knob and the marker live (tests point both at a scratch directory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RcuExpedite {
    /// The sysfs file, normally [`SYSFS_KNOB`].
    pub knob: PathBuf,
    /// The marker file, inside the state directory; `None` when the journal is disabled.
    pub marker: Option<PathBuf>,
}

/// Holds `rcu_expedited` set; puts the old value back when dropped.
#[derive(Debug)]
#[must_use = "grace periods are expedited only while the guard lives"]
pub struct ExpediteGuard<'a> {
    /// The knob this guard set, `None` when it changed nothing.
    set: Option<&'a RcuExpedite>,
}

impl RcuExpedite {
    /// The real knob, with the marker in `state_dir` (if any).
    pub fn new(state_dir: Option<&Path>) -> Self {
        Self {
            knob: PathBuf::from(SYSFS_KNOB),
            marker: state_dir.map(|d| d.join(MARKER_FILE)),
        }
    }

    /// Sets the knob if it is clear. Never fails: a knob that cannot be read or written
    /// (no sysfs, read-only sysfs in a container) only costs speed, and is logged at debug.
    pub fn begin(&self) -> ExpediteGuard<'_> {
        let unchanged = ExpediteGuard { set: None };
        match fs::read_to_string(&self.knob) {
            Ok(v) if v.trim() == "0" => {}
            Ok(_) => return unchanged,
            Err(e) => {
                tracing::debug!(knob = %self.knob.display(), error = %e, "rcu_expedited unavailable");
                return unchanged;
            }
        }
        if let Some(m) = &self.marker {
            if let Err(e) = fs::write(m, b"") {
                tracing::debug!(marker = %m.display(), error = %e, "cannot write rcu marker");
            }
        }
        if let Err(e) = fs::write(&self.knob, b"1") {
            tracing::debug!(knob = %self.knob.display(), error = %e, "cannot set rcu_expedited");
            self.remove_marker();
            return unchanged;
        }
        ExpediteGuard { set: Some(self) }
    }

    /// Puts the knob back to 0, then drops the marker (kept when the write fails, so the next
    /// agent tries again).
    fn restore(&self) -> std::io::Result<()> {
        fs::write(&self.knob, b"0")?;
        self.remove_marker();
        Ok(())
    }

    /// Start-up: a marker left by an agent that died with the knob set means the knob is
    /// ours to clear. Returns true when it was put back.
    pub fn recover(&self) -> bool {
        let Some(m) = &self.marker else { return false };
        if !m.exists() {
            return false;
        }
        match self.restore() {
            Ok(()) => {
                tracing::warn!(knob = %self.knob.display(),
                    "a previous agent died with RCU grace periods expedited; put the knob back to 0");
                true
            }
            Err(e) => {
                tracing::warn!(knob = %self.knob.display(), error = %e,
                    "cannot put rcu_expedited back after a previous agent died");
                false
            }
        }
    }

    fn remove_marker(&self) {
        if let Some(m) = &self.marker {
            let _ = fs::remove_file(m);
        }
    }
}

impl ExpediteGuard<'_> {
    /// True when this guard changed the knob (and will put it back).
    pub fn active(&self) -> bool {
        self.set.is_some()
    }
}

impl Drop for ExpediteGuard<'_> {
    fn drop(&mut self) {
        if let Some(r) = self.set.take() {
            if let Err(e) = r.restore() {
                tracing::warn!(knob = %r.knob.display(), error = %e, "cannot put rcu_expedited back to 0");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(knob: &str) -> (tempfile::TempDir, RcuExpedite) {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("knob"), knob).unwrap();
        let r = RcuExpedite {
            knob: d.path().join("knob"),
            marker: Some(d.path().join(MARKER_FILE)),
        };
        (d, r)
    }

    fn read(p: &Path) -> String {
        fs::read_to_string(p).unwrap().trim().to_string()
    }

    #[test]
    fn sets_while_held_and_restores_on_drop() {
        let (_d, r) = scratch("0\n");
        let g = r.begin();
        assert!(g.active());
        assert_eq!(read(&r.knob), "1");
        assert!(r.marker.as_ref().unwrap().exists());
        drop(g);
        assert_eq!(read(&r.knob), "0");
        assert!(!r.marker.as_ref().unwrap().exists());
    }

    #[test]
    fn leaves_a_knob_someone_else_set() {
        let (_d, r) = scratch("1\n");
        let g = r.begin();
        assert!(!g.active());
        drop(g);
        assert_eq!(read(&r.knob), "1");
        assert!(!r.marker.as_ref().unwrap().exists());
    }

    #[test]
    fn missing_knob_is_not_an_error() {
        let (d, mut r) = scratch("0");
        r.knob = d.path().join("absent");
        let g = r.begin();
        assert!(!g.active());
        drop(g);
        assert!(!r.knob.exists());
    }

    #[test]
    fn restores_on_panic() {
        let (_d, r) = scratch("0");
        let r2 = r.clone();
        let res = std::panic::catch_unwind(move || {
            let _g = r2.begin();
            panic!("freeze worker panicked");
        });
        assert!(res.is_err());
        assert_eq!(read(&r.knob), "0");
    }

    #[test]
    fn recovery_clears_a_leftover_only_with_a_marker() {
        let (_d, r) = scratch("1");
        assert!(!r.recover(), "no marker: the knob is not ours");
        assert_eq!(read(&r.knob), "1");
        fs::write(r.marker.as_ref().unwrap(), "").unwrap();
        assert!(r.recover());
        assert_eq!(read(&r.knob), "0");
        assert!(!r.marker.as_ref().unwrap().exists());
    }
}
