//! Conversions from the freezer's reports to wire messages.

use std::time::{SystemTime, UNIX_EPOCH};

use guest_proto::v1 as pb;

use crate::freezer::{FreezeStatus, FsReport, Outcome, QuiesceReport, ThawReport};
use crate::observer::Observer;

/// Milliseconds since the Unix epoch (0 for `None`).
pub fn unix_ms(t: Option<SystemTime>) -> u64 {
    t.and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as u64)
}

fn outcome(o: Outcome) -> pb::FsOutcome {
    match o {
        Outcome::Frozen => pb::FsOutcome::Frozen,
        Outcome::Thawed => pb::FsOutcome::Thawed,
        Outcome::Skipped => pb::FsOutcome::Skipped,
        Outcome::AlreadyFrozen => pb::FsOutcome::AlreadyFrozen,
        Outcome::Failed => pb::FsOutcome::Failed,
        Outcome::RolledBack => pb::FsOutcome::RolledBack,
        Outcome::NotFrozen => pb::FsOutcome::NotFrozen,
    }
}

/// One filesystem's result on the wire.
pub fn fs_result(r: &FsReport) -> pb::FilesystemResult {
    pb::FilesystemResult {
        mountpoint: r.fs.mount_point.display().to_string(),
        fstype: r.fs.fstype.clone(),
        device: r.fs.source.clone(),
        outcome: outcome(r.outcome) as i32,
        detail: r.detail.clone(),
        dev_id: r.fs.dev.to_string(),
        duration_us: r.duration.as_micros() as u64,
    }
}

/// QuiesceResponse from a report.
pub fn quiesce_response(r: &QuiesceReport) -> pb::QuiesceResponse {
    pb::QuiesceResponse {
        frozen_count: r.frozen_count,
        filesystems: r.filesystems.iter().map(fs_result).collect(),
        watchdog_deadline_unix_ms: unix_ms(r.watchdog_deadline),
    }
}

/// ThawResponse from a report.
pub fn thaw_response(r: &ThawReport) -> pb::ThawResponse {
    pb::ThawResponse {
        thawed_count: r.thawed_count,
        filesystems: r.filesystems.iter().map(fs_result).collect(),
    }
}

/// FreezeStatusResponse from a status snapshot.
pub fn status_response(s: &FreezeStatus) -> pb::FreezeStatusResponse {
    pb::FreezeStatusResponse {
        frozen: !s.frozen.is_empty(),
        filesystems: s
            .frozen
            .iter()
            .map(|f| pb::FrozenFilesystem {
                mountpoint: f.fs.mount_point.display().to_string(),
                fstype: f.fs.fstype.clone(),
                device: f.fs.source.clone(),
                dev_id: f.fs.dev.to_string(),
                frozen_since_unix_ms: unix_ms(Some(f.since)),
            })
            .collect(),
        frozen_since_unix_ms: unix_ms(s.frozen_since),
        watchdog_deadline_unix_ms: unix_ms(s.watchdog_deadline),
        watchdog_timeout_ms: s.watchdog_timeout.as_millis() as u64,
        operation_in_progress: s.operation_in_progress,
        last_watchdog_thaw: s.last_watchdog_thaw.as_ref().map(|w| pb::WatchdogEvent {
            at_unix_ms: unix_ms(Some(w.at)),
            thawed_count: w.mount_points.len() as u32,
            mountpoints: w
                .mount_points
                .iter()
                .map(|p| p.display().to_string())
                .collect(),
        }),
        watchdog_thaws: s.watchdog_thaws,
        recovered_thaws: s.recovered_thaws,
        observed: Vec::new(),
        ebpf: None,
    }
}

/// Adds what the eBPF observer sees (freezes by anyone, writers blocked now) to a status.
pub fn add_observer(resp: &mut pb::FreezeStatusResponse, observer: &Observer) {
    let Some(handle) = observer.handle() else {
        resp.ebpf = Some(pb::EbpfStatus {
            active: false,
            reason: observer.reason().to_string(),
            ..Default::default()
        });
        return;
    };
    let snap = handle.snapshot();
    resp.ebpf = Some(pb::EbpfStatus {
        active: true,
        freeze_source: snap.freeze_source.as_str().to_string(),
        reason: snap.freeze_source_reason.clone(),
        contention_hook: snap.contention_hook.as_str().to_string(),
    });
    resp.observed = snap
        .filesystems
        .iter()
        .filter_map(|fs| {
            let freeze = fs.frozen.as_ref()?;
            Some(pb::ObservedFreeze {
                mountpoint: fs
                    .mountpoint
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
                fstype: fs.fstype.clone(),
                dev_id: fs.dev.to_string(),
                origin: freeze.origin.as_str().to_string(),
                frozen_by_pid: freeze.by.as_ref().map_or(0, |t| t.pid),
                frozen_by_comm: freeze
                    .by
                    .as_ref()
                    .map(|t| t.comm.clone())
                    .unwrap_or_default(),
                frozen_since_unix_ms: unix_ms(freeze.since),
                blocked_writers: fs
                    .blocked_writers
                    .iter()
                    .map(|w| pb::BlockedWriter {
                        pid: w.task.pid,
                        tid: w.task.tid,
                        comm: w.task.comm.clone(),
                        level: w.level.as_str().to_string(),
                        blocked_since_unix_ms: unix_ms(Some(w.since)),
                    })
                    .collect(),
            })
        })
        .collect();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::freezer::FsIdentity;
    use crate::mounts::DevId;
    use std::time::Duration;

    #[test]
    fn fs_result_carries_every_field() {
        let r = FsReport {
            fs: FsIdentity {
                mount_point: "/data".into(),
                fstype: "ext4".into(),
                source: "/dev/vdb".into(),
                dev: DevId {
                    major: 254,
                    minor: 16,
                },
                mount_id: 40,
            },
            outcome: Outcome::AlreadyFrozen,
            detail: "busy".into(),
            duration: Duration::from_micros(1500),
        };
        let w = fs_result(&r);
        assert_eq!(w.mountpoint, "/data");
        assert_eq!(w.fstype, "ext4");
        assert_eq!(w.device, "/dev/vdb");
        assert_eq!(w.dev_id, "254:16");
        assert_eq!(w.outcome, pb::FsOutcome::AlreadyFrozen as i32);
        assert_eq!(w.duration_us, 1500);
    }

    #[test]
    fn unix_ms_of_none_is_zero() {
        assert_eq!(unix_ms(None), 0);
        assert_eq!(unix_ms(Some(UNIX_EPOCH + Duration::from_millis(42))), 42);
    }
}
