//! The host's side of a snapshot: `guestctl snapshot --pause-pid <qemu> -- cp ...` (Quiesce,
//! SIGSTOP the VM, copy its disk image, SIGCONT, Thaw, confirm), as a microVM host runs it;
//! a bare Quiesce for the watchdog scenario; and the copy taken without any of that, which the
//! tests show is *not* consistent.

use std::path::Path;
use std::time::{Duration, Instant};

use super::disk;
use super::error::{Result, VmError};
use super::vm::Vm;

/// One `guestctl snapshot` run.
#[derive(Debug, Clone)]
pub struct SnapshotRun {
    /// Its JSON report.
    pub report: serde_json::Value,
    /// When it was started and when it exited (host clock).
    pub started: Instant,
    /// When it exited.
    pub ended: Instant,
}

impl SnapshotRun {
    /// The trace id it printed (every phase and the agent's spans belong to it).
    pub fn trace_id(&self) -> &str {
        self.report["trace_id"].as_str().unwrap_or_default()
    }

    /// Milliseconds the named phase took, if it ran.
    pub fn phase_ms(&self, name: &str) -> Option<f64> {
        self.report["phases"]
            .as_array()?
            .iter()
            .find(|p| p["name"] == name)?["ms"]
            .as_f64()
    }

    /// The time the guest was certainly frozen: the phases between Quiesce's answer and the
    /// Thaw (pause, command, resume).
    pub fn surely_frozen(&self) -> Duration {
        let ms: f64 = ["pause", "command", "resume"]
            .iter()
            .filter_map(|p| self.phase_ms(p))
            .sum();
        Duration::from_secs_f64(ms / 1000.0)
    }
}

/// Runs `guestctl snapshot --pause-pid <qemu> -- cp --sparse=always <disk image> <dst>`,
/// exporting its spans to the OTLP receiver at `otlp` if given. It must exit 0.
pub fn guestctl_snapshot(
    vm: &Vm,
    disk: usize,
    dst: &Path,
    otlp: Option<&Path>,
) -> Result<SnapshotRun> {
    let pid = vm.qemu().pid().to_string();
    let src = vm.disk(disk).display().to_string();
    let dst = dst.display().to_string();
    let endpoint = otlp.map(|p| format!("unix://{}", p.display()));
    let mut args = vec!["--json", "snapshot", "--pause-pid", &pid];
    if let Some(e) = endpoint.as_deref() {
        args.extend(["--otlp-endpoint", e]);
    }
    args.extend(["--", "cp", "--sparse=always", &src, &dst]);
    let started = Instant::now();
    let out = vm.guestctl(&args)?;
    let ended = Instant::now();
    let report = out
        .text
        .lines()
        .find(|l| l.starts_with('{'))
        .and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .ok_or_else(|| {
            VmError::Protocol(format!(
                "guestctl snapshot printed no JSON report: {}",
                out.text
            ))
        })?;
    if out.code != Some(0) {
        return Err(VmError::Command {
            cmd: format!("guestctl {}", args.join(" ")),
            status: format!("exit {:?}", out.code),
            output: out.text,
        });
    }
    Ok(SnapshotRun {
        report,
        started,
        ended,
    })
}

/// What a bare Quiesce did, as the host saw it.
#[derive(Debug, Clone)]
pub struct Freeze {
    /// Filesystems the agent reported frozen.
    pub frozen_count: u64,
    /// Watchdog deadline the agent reported (guest clock, ms since the epoch).
    pub watchdog_deadline_unix_ms: u64,
    /// When Quiesce returned (host clock).
    pub frozen: Instant,
}

/// Quiesces every filesystem the agent may freeze (guestctl quiesce) and sends nothing more.
pub fn quiesce(vm: &Vm) -> Result<Freeze> {
    let json = vm.guestctl_json(&["quiesce"])?;
    let frozen = Instant::now();
    let field = |name: &str| {
        json.get(name)
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| VmError::Protocol(format!("no numeric {name:?} in {json}")))
    };
    Ok(Freeze {
        frozen_count: field("frozen_count")?,
        watchdog_deadline_unix_ms: field("watchdog_deadline_unix_ms")?,
        frozen,
    })
}

/// Copies the image of disk `disk` while the guest runs and writes: no quiesce, no pause.
pub fn live_copy(vm: &Vm, disk: usize, dst: &Path) -> Result<Duration> {
    disk::copy_image(vm.disk(disk), dst)
}
