//! The host's side of a snapshot, as boxlite's host does it: Quiesce (FIFREEZE in the guest),
//! SIGSTOP the VM, copy its disk image, SIGCONT, Thaw. Also the copy taken without any of
//! that, which the tests show is *not* consistent.

use std::path::Path;
use std::time::{Duration, Instant};

use super::disk;
use super::error::{Result, VmError};
use super::process::Paused;
use super::vm::Vm;

/// What one freeze did, as the host saw it.
#[derive(Debug, Clone)]
pub struct Freeze {
    /// Filesystems the agent reported frozen.
    pub frozen_count: u64,
    /// Watchdog deadline the agent reported (guest clock, ms since the epoch).
    pub watchdog_deadline_unix_ms: u64,
    /// When the Quiesce call was made and when it returned.
    pub requested: Instant,
    /// When Quiesce returned.
    pub frozen: Instant,
}

/// Quiesces every filesystem the agent may freeze (guestctl quiesce).
pub fn quiesce(vm: &Vm) -> Result<Freeze> {
    let requested = Instant::now();
    let json = vm.guestctl_json(&["quiesce"])?;
    let frozen = Instant::now();
    Ok(Freeze {
        frozen_count: field(&json, "frozen_count")?,
        watchdog_deadline_unix_ms: field(&json, "watchdog_deadline_unix_ms")?,
        requested,
        frozen,
    })
}

/// Thaws (guestctl thaw); returns the number of filesystems thawed.
pub fn thaw(vm: &Vm) -> Result<u64> {
    field(&vm.guestctl_json(&["thaw"])?, "thawed_count")
}

/// Pauses qemu (SIGSTOP), copies the image of disk `disk` to `dst`, resumes it (SIGCONT, also
/// when the copy fails). Returns how long the VM was paused.
pub fn paused_copy(vm: &Vm, disk: usize, dst: &Path) -> Result<Duration> {
    let t = Instant::now();
    let paused = Paused::new(vm.qemu())?;
    let copied = disk::copy_image(vm.disk(disk), dst);
    drop(paused);
    copied?;
    Ok(t.elapsed())
}

/// Copies the image of disk `disk` while the guest runs and writes: no quiesce, no pause.
pub fn live_copy(vm: &Vm, disk: usize, dst: &Path) -> Result<Duration> {
    disk::copy_image(vm.disk(disk), dst)
}

fn field(json: &serde_json::Value, name: &str) -> Result<u64> {
    json.get(name)
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| VmError::Protocol(format!("no numeric {name:?} in {json}")))
}
