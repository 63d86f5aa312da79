//! What `guestctl status` prints: the agent's own freeze (what it holds, the watchdog) and
//! what its eBPF observer sees (every frozen filesystem on the machine whoever froze it, the
//! writers blocked on each right now, and whether the observer runs at all).
//!
//! The observed part answers the SRE's question during a stall: "is something frozen, by
//! whom, since when, and which processes are stuck on it?" — also when the freeze was made
//! by `fsfreeze`, LVM or a backup tool rather than by the agent.

use guest_proto::v1::{
    BlockedWriter, EbpfStatus, FreezeStatusResponse, FrozenFilesystem, ObservedFreeze,
    WatchdogEvent,
};
use serde::Serialize;

use super::format::{fmt_ms, fmt_relative, fmt_unix_ms, table};
use super::Render;

/// One filesystem the agent holds frozen.
#[derive(Debug, Serialize, PartialEq)]
pub struct FrozenRow {
    /// Mountpoint.
    pub mountpoint: String,
    /// Filesystem type.
    pub fstype: String,
    /// Mount source.
    pub device: String,
    /// Superblock device id.
    pub dev_id: String,
    /// When its freeze completed (unix ms).
    pub frozen_since_unix_ms: u64,
}

impl From<&FrozenFilesystem> for FrozenRow {
    fn from(f: &FrozenFilesystem) -> Self {
        FrozenRow {
            mountpoint: f.mountpoint.clone(),
            fstype: f.fstype.clone(),
            device: f.device.clone(),
            dev_id: f.dev_id.clone(),
            frozen_since_unix_ms: f.frozen_since_unix_ms,
        }
    }
}

/// The last automatic thaw by the watchdog.
#[derive(Debug, Serialize, PartialEq)]
pub struct WatchdogRow {
    /// When it happened (unix ms).
    pub at_unix_ms: u64,
    /// How many filesystems it thawed.
    pub thawed_count: u32,
    /// Which.
    pub mountpoints: Vec<String>,
}

impl From<&WatchdogEvent> for WatchdogRow {
    fn from(w: &WatchdogEvent) -> Self {
        WatchdogRow {
            at_unix_ms: w.at_unix_ms,
            thawed_count: w.thawed_count,
            mountpoints: w.mountpoints.clone(),
        }
    }
}

/// The process that froze an observed filesystem.
#[derive(Debug, Serialize, PartialEq)]
pub struct FreezerRow {
    /// Its process id (in the guest).
    pub pid: u32,
    /// Its command name (`comm`, at most 15 bytes).
    pub comm: String,
}

/// A writer asleep on a frozen filesystem right now.
#[derive(Debug, Serialize, PartialEq)]
pub struct WriterRow {
    /// Process id.
    pub pid: u32,
    /// Thread id of the blocked thread.
    pub tid: u32,
    /// Command name.
    pub comm: String,
    /// Kind of write it waits to make: `WRITE` (write, create, rename, ...), `PAGEFAULT`
    /// (store to a shared mapping) or `FS` (filesystem-internal).
    pub level: String,
    /// When it started waiting (unix ms, the guest's clock).
    pub blocked_since_unix_ms: u64,
    /// The same as an ISO 8601 UTC time.
    pub blocked_since: String,
    /// How long it has waited so far, by the host's clock.
    pub waited_ms: u64,
}

impl WriterRow {
    /// The row for `w`, with the wait measured up to `now_ms`.
    pub fn new(w: &BlockedWriter, now_ms: u64) -> Self {
        WriterRow {
            pid: w.pid,
            tid: w.tid,
            comm: w.comm.clone(),
            level: w.level.clone(),
            blocked_since_unix_ms: w.blocked_since_unix_ms,
            blocked_since: fmt_unix_ms(w.blocked_since_unix_ms),
            waited_ms: now_ms.saturating_sub(w.blocked_since_unix_ms),
        }
    }
}

/// A frozen filesystem as the eBPF observer sees it, whoever froze it.
#[derive(Debug, Serialize, PartialEq)]
pub struct ObservedRow {
    /// Mountpoint (null when not mounted in the agent's mount namespace).
    pub mountpoint: Option<String>,
    /// Filesystem type.
    pub fstype: String,
    /// Superblock device id, major:minor.
    pub dev_id: String,
    /// `agent` (this agent froze it), `other` (fsfreeze, LVM, a backup tool, the kernel) or
    /// `unknown` (frozen before the observer started, or known only from a blocked writer).
    pub origin: String,
    /// The freezing process, when known (null otherwise).
    pub frozen_by: Option<FreezerRow>,
    /// When the freeze completed (unix ms; null when it predates the observer).
    pub frozen_since_unix_ms: Option<u64>,
    /// The same as an ISO 8601 UTC time.
    pub frozen_since: Option<String>,
    /// How long it has been frozen, by the host's clock (null when not known).
    pub frozen_for_ms: Option<u64>,
    /// Writers asleep on it right now, longest waiting first.
    pub blocked_writers: Vec<WriterRow>,
}

impl ObservedRow {
    /// The row for `o`, with durations measured up to `now_ms`.
    pub fn new(o: &ObservedFreeze, now_ms: u64) -> Self {
        let since = (o.frozen_since_unix_ms != 0).then_some(o.frozen_since_unix_ms);
        let mut blocked_writers: Vec<WriterRow> = o
            .blocked_writers
            .iter()
            .map(|w| WriterRow::new(w, now_ms))
            .collect();
        blocked_writers.sort_by_key(|w| (w.blocked_since_unix_ms, w.pid, w.tid));
        ObservedRow {
            mountpoint: (!o.mountpoint.is_empty()).then(|| o.mountpoint.clone()),
            fstype: o.fstype.clone(),
            dev_id: o.dev_id.clone(),
            origin: o.origin.clone(),
            frozen_by: (o.frozen_by_pid != 0).then(|| FreezerRow {
                pid: o.frozen_by_pid,
                comm: o.frozen_by_comm.clone(),
            }),
            frozen_since_unix_ms: since,
            frozen_since: since.map(fmt_unix_ms),
            frozen_for_ms: since.map(|s| now_ms.saturating_sub(s)),
            blocked_writers,
        }
    }

    /// The mountpoint, or the device id when it is not mounted where the agent looks.
    fn place(&self) -> String {
        match &self.mountpoint {
            Some(mp) => mp.clone(),
            None => format!("(dev {})", self.dev_id),
        }
    }

    /// Who froze it, in a few words: `agent`, `fsfreeze (pid 812)`, `other`, `unknown`.
    fn freezer(&self) -> String {
        match (&self.frozen_by, self.origin.as_str()) {
            (_, "agent") => "agent".to_string(),
            (Some(by), _) if by.comm.is_empty() => format!("pid {}", by.pid),
            (Some(by), _) => format!("{} (pid {})", by.comm, by.pid),
            (None, "") => "unknown".to_string(),
            (None, origin) => origin.to_string(),
        }
    }
}

/// How well the eBPF observer sees (serialised lowercase: `up`, `degraded`, `off`).
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum EbpfState {
    /// Loaded, with a freeze hook.
    Up,
    /// Running without a freeze hook: freezes nobody waits on are not seen, nor who froze
    /// what.
    Degraded,
    /// Not running.
    Off,
}

/// Whether the eBPF observer runs, and how it sees freezes and blocked writers.
#[derive(Debug, Serialize, PartialEq)]
pub struct EbpfRow {
    /// True when its programs are loaded and attached.
    pub active: bool,
    /// How well it sees.
    pub state: EbpfState,
    /// `fexit`, `sync_fs`, `ioctl_tracepoints` or `none` (null when off).
    pub freeze_source: Option<String>,
    /// Hook reporting blocked writers: `tp_btf` or `raw_tracepoint` (null when off).
    pub contention_hook: Option<String>,
    /// Why that freeze source, or why the observer is off (null when the agent gave none).
    pub reason: Option<String>,
}

impl From<&EbpfStatus> for EbpfRow {
    fn from(e: &EbpfStatus) -> Self {
        let some = |s: &str| (!s.is_empty()).then(|| s.to_string());
        let state = match (e.active, e.freeze_source.as_str()) {
            (false, _) => EbpfState::Off,
            (true, "none") => EbpfState::Degraded,
            (true, _) => EbpfState::Up,
        };
        EbpfRow {
            active: e.active,
            state,
            freeze_source: some(&e.freeze_source).filter(|_| e.active),
            contention_hook: some(&e.contention_hook).filter(|_| e.active),
            reason: some(&e.reason),
        }
    }
}

impl EbpfRow {
    /// One line: `eBPF observer: up (freeze source fexit, writers via tp_btf)`, or
    /// `eBPF observer: off: <reason>`; a degraded observer says why too.
    fn line(&self) -> String {
        let or_unknown = |s: &Option<String>| s.clone().unwrap_or_else(|| "unknown".into());
        let reason = self.reason.as_deref().unwrap_or("no reason given");
        let sees = format!(
            "(freeze source {}, writers via {})",
            or_unknown(&self.freeze_source),
            or_unknown(&self.contention_hook)
        );
        match self.state {
            EbpfState::Off => format!("eBPF observer: off: {reason}"),
            EbpfState::Degraded => format!("eBPF observer: degraded {sees}: {reason}"),
            EbpfState::Up => format!("eBPF observer: up {sees}"),
        }
    }
}

/// Result of `status`.
#[derive(Debug, Serialize, PartialEq)]
pub struct StatusReport {
    /// Whether the agent holds anything frozen.
    pub frozen: bool,
    /// When the current freeze started (unix ms; 0 when not frozen).
    pub frozen_since_unix_ms: u64,
    /// When the watchdog thaws (unix ms; 0 when not frozen).
    pub watchdog_deadline_unix_ms: u64,
    /// Time left until the watchdog thaws, by the host's clock (null when not frozen).
    pub watchdog_remaining_ms: Option<u64>,
    /// Configured watchdog timeout.
    pub watchdog_timeout_ms: u64,
    /// A quiesce or thaw is running right now.
    pub operation_in_progress: bool,
    /// What is frozen.
    pub filesystems: Vec<FrozenRow>,
    /// The most recent watchdog thaw, if any.
    pub last_watchdog_thaw: Option<WatchdogRow>,
    /// Watchdog thaws since the agent started.
    pub watchdog_thaws: u64,
    /// Filesystems thawed at agent start-up because a previous agent died holding them.
    pub recovered_thaws: u64,
    /// Every frozen filesystem the eBPF observer sees, whoever froze it, with its blocked
    /// writers (empty when the observer is off or nothing is frozen).
    pub observed: Vec<ObservedRow>,
    /// The observer's state (null when the agent does not report it).
    pub ebpf: Option<EbpfRow>,
}

impl StatusReport {
    /// Builds the report; `now_ms` computes the remaining watchdog time and how long each
    /// writer has waited.
    pub fn new(s: &FreezeStatusResponse, now_ms: u64) -> Self {
        StatusReport {
            frozen: s.frozen,
            frozen_since_unix_ms: s.frozen_since_unix_ms,
            watchdog_deadline_unix_ms: s.watchdog_deadline_unix_ms,
            watchdog_remaining_ms: (s.watchdog_deadline_unix_ms != 0)
                .then(|| s.watchdog_deadline_unix_ms.saturating_sub(now_ms)),
            watchdog_timeout_ms: s.watchdog_timeout_ms,
            operation_in_progress: s.operation_in_progress,
            filesystems: s.filesystems.iter().map(FrozenRow::from).collect(),
            last_watchdog_thaw: s.last_watchdog_thaw.as_ref().map(WatchdogRow::from),
            watchdog_thaws: s.watchdog_thaws,
            recovered_thaws: s.recovered_thaws,
            observed: s
                .observed
                .iter()
                .map(|o| ObservedRow::new(o, now_ms))
                .collect(),
            ebpf: s.ebpf.as_ref().map(EbpfRow::from),
        }
    }

    /// The agent's own freeze and watchdog, as text.
    fn agent_part(&self, now_ms: u64) -> String {
        let mut out = String::new();
        if self.frozen {
            out.push_str(&format!(
                "frozen by the agent: yes, {} filesystem(s) since {} ({})\n",
                self.filesystems.len(),
                fmt_unix_ms(self.frozen_since_unix_ms),
                fmt_relative(self.frozen_since_unix_ms, now_ms)
            ));
        } else {
            out.push_str("frozen by the agent: no\n");
        }
        out.push_str(&format!(
            "watchdog: timeout {}",
            fmt_ms(self.watchdog_timeout_ms)
        ));
        if self.watchdog_deadline_unix_ms != 0 {
            out.push_str(&format!(
                ", thaws at {} ({})",
                fmt_unix_ms(self.watchdog_deadline_unix_ms),
                fmt_relative(self.watchdog_deadline_unix_ms, now_ms)
            ));
        }
        out.push('\n');
        if !self.filesystems.is_empty() {
            let rows: Vec<Vec<String>> = self
                .filesystems
                .iter()
                .map(|f| {
                    vec![
                        f.mountpoint.clone(),
                        f.fstype.clone(),
                        f.device.clone(),
                        f.dev_id.clone(),
                        fmt_unix_ms(f.frozen_since_unix_ms),
                    ]
                })
                .collect();
            out.push_str(&table(
                &["MOUNTPOINT", "FSTYPE", "DEVICE", "DEV", "FROZEN SINCE"],
                &rows,
            ));
        }
        out.push_str(&format!(
            "operation in progress: {}\n",
            if self.operation_in_progress {
                "yes"
            } else {
                "no"
            }
        ));
        out.push_str(&format!(
            "watchdog thaws since agent start: {}",
            self.watchdog_thaws
        ));
        if let Some(w) = &self.last_watchdog_thaw {
            out.push_str(&format!(
                "; last at {} ({}), {} filesystem(s): {}",
                fmt_unix_ms(w.at_unix_ms),
                fmt_relative(w.at_unix_ms, now_ms),
                w.thawed_count,
                w.mountpoints.join(", ")
            ));
        }
        out.push('\n');
        if self.recovered_thaws > 0 {
            out.push_str(&format!(
                "recovered at agent start: {} filesystem(s) left frozen by a previous agent were thawed\n",
                self.recovered_thaws
            ));
        }
        out
    }

    /// What the eBPF observer sees, as text: its state, then the frozen filesystems and the
    /// writers blocked on them. Nothing when the agent reports neither.
    fn observed_part(&self, now_ms: u64) -> String {
        let mut out = String::new();
        if let Some(ebpf) = &self.ebpf {
            out.push_str(&ebpf.line());
            out.push('\n');
            if ebpf.active && self.observed.is_empty() {
                out.push_str("observed frozen filesystems: none\n");
            }
        }
        if self.observed.is_empty() {
            return out;
        }
        let rows: Vec<Vec<String>> = self
            .observed
            .iter()
            .map(|o| {
                vec![
                    o.place(),
                    o.fstype.clone(),
                    o.freezer(),
                    match o.frozen_since_unix_ms {
                        Some(t) => format!("{} ({})", fmt_unix_ms(t), fmt_relative(t, now_ms)),
                        None => "before the observer".to_string(),
                    },
                    o.blocked_writers.len().to_string(),
                ]
            })
            .collect();
        out.push_str("observed frozen filesystems (any freezer):\n");
        out.push_str(&table(
            &["MOUNTPOINT", "FSTYPE", "FROZEN-BY", "SINCE", "WRITERS"],
            &rows,
        ));
        let mut writers: Vec<(&WriterRow, String)> = self
            .observed
            .iter()
            .flat_map(|o| o.blocked_writers.iter().map(move |w| (w, o.place())))
            .collect();
        if writers.is_empty() {
            out.push_str("blocked writers: none\n");
            return out;
        }
        // Longest waiting first, across filesystems.
        writers.sort_by_key(|(w, _)| (w.blocked_since_unix_ms, w.pid, w.tid));
        let rows: Vec<Vec<String>> = writers
            .into_iter()
            .map(|(w, place)| {
                vec![
                    w.pid.to_string(),
                    w.comm.clone(),
                    w.level.clone(),
                    format!("{:.1}s", w.waited_ms as f64 / 1000.0),
                    place,
                ]
            })
            .collect();
        out.push_str("blocked writers:\n");
        out.push_str(&table(
            &["PID", "COMM", "KIND", "WAITED", "MOUNTPOINT"],
            &rows,
        ));
        out
    }
}

impl Render for StatusReport {
    fn human(&self, now_ms: u64) -> String {
        self.agent_part(now_ms) + &self.observed_part(now_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_795_000_000_000;

    fn writer(pid: u32, comm: &str, level: &str, waited_ms: u64) -> BlockedWriter {
        BlockedWriter {
            pid,
            tid: pid,
            comm: comm.into(),
            level: level.into(),
            blocked_since_unix_ms: NOW - waited_ms,
        }
    }

    /// An external `fsfreeze` with three writers blocked on it, and a filesystem frozen
    /// before the observer started, not mounted where the agent looks.
    fn observed_status() -> FreezeStatusResponse {
        FreezeStatusResponse {
            watchdog_timeout_ms: 300_000,
            observed: vec![
                ObservedFreeze {
                    mountpoint: "/var/tmp/gatest-1/mnt/obs".into(),
                    fstype: "ext4".into(),
                    dev_id: "7:3".into(),
                    origin: "other".into(),
                    frozen_by_pid: 4242,
                    frozen_by_comm: "fsfreeze".into(),
                    frozen_since_unix_ms: NOW - 12_000,
                    blocked_writers: vec![
                        writer(5003, "w-mmap", "PAGEFAULT", 2_500),
                        writer(5001, "w-pwrite", "WRITE", 9_000),
                        writer(5002, "w-creat", "WRITE", 4_000),
                    ],
                },
                ObservedFreeze {
                    mountpoint: String::new(),
                    fstype: "xfs".into(),
                    dev_id: "253:1".into(),
                    origin: "unknown".into(),
                    frozen_by_pid: 0,
                    frozen_by_comm: String::new(),
                    frozen_since_unix_ms: 0,
                    blocked_writers: vec![],
                },
            ],
            ebpf: Some(EbpfStatus {
                active: true,
                freeze_source: "ioctl_tracepoints".into(),
                reason: "fexit refused (EPERM)".into(),
                contention_hook: "tp_btf".into(),
            }),
            ..FreezeStatusResponse::default()
        }
    }

    #[test]
    fn status_renders_frozen_and_idle() {
        let frozen = FreezeStatusResponse {
            frozen: true,
            filesystems: vec![FrozenFilesystem {
                mountpoint: "/mnt/a".into(),
                fstype: "ext4".into(),
                device: "/dev/loop3".into(),
                dev_id: "7:3".into(),
                frozen_since_unix_ms: NOW - 10_000,
            }],
            frozen_since_unix_ms: NOW - 10_000,
            watchdog_deadline_unix_ms: NOW + 290_000,
            watchdog_timeout_ms: 300_000,
            last_watchdog_thaw: Some(WatchdogEvent {
                at_unix_ms: NOW - 3_600_000,
                thawed_count: 2,
                mountpoints: vec!["/a".into(), "/b".into()],
            }),
            watchdog_thaws: 1,
            recovered_thaws: 2,
            ..FreezeStatusResponse::default()
        };
        let report = StatusReport::new(&frozen, NOW);
        assert_eq!(report.watchdog_remaining_ms, Some(290_000));
        let text = report.human(NOW);
        assert!(
            text.starts_with(
                "frozen by the agent: yes, 1 filesystem(s) since 2026-11-18T11:06:30.000Z (10.0s ago)\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "watchdog: timeout 300s, thaws at 2026-11-18T11:11:30.000Z (in 290.0s)\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("/mnt/a      ext4    /dev/loop3  7:3  2026-11-18T11:06:30.000Z\n"),
            "{text}"
        );
        assert!(text.contains("watchdog thaws since agent start: 1; last at 2026-11-18T10:06:40.000Z (3600.0s ago), 2 filesystem(s): /a, /b\n"), "{text}");
        assert!(text.ends_with("recovered at agent start: 2 filesystem(s) left frozen by a previous agent were thawed\n"), "{text}");
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["last_watchdog_thaw"]["mountpoints"][1], "/b");

        let idle = StatusReport::new(
            &FreezeStatusResponse {
                watchdog_timeout_ms: 300_000,
                ..FreezeStatusResponse::default()
            },
            NOW,
        );
        assert_eq!(idle.watchdog_remaining_ms, None);
        assert_eq!(
            idle.human(NOW),
            "frozen by the agent: no\nwatchdog: timeout 300s\noperation in progress: no\nwatchdog thaws since agent start: 0\n"
        );
        let json = serde_json::to_value(&idle).unwrap();
        assert!(json["last_watchdog_thaw"].is_null() && json["watchdog_remaining_ms"].is_null());
        assert!(json["ebpf"].is_null(), "{json}");
        assert_eq!(json["observed"], serde_json::json!([]));
    }

    #[test]
    fn observed_freezes_render_as_json_with_every_writer() {
        let report = StatusReport::new(&observed_status(), NOW);
        let json = serde_json::to_value(&report).unwrap();
        // The agent's own view is unchanged: it holds nothing.
        assert_eq!(json["frozen"], false);
        assert_eq!(json["filesystems"], serde_json::json!([]));

        let fs = &json["observed"][0];
        assert_eq!(fs["mountpoint"], "/var/tmp/gatest-1/mnt/obs");
        assert_eq!(fs["fstype"], "ext4");
        assert_eq!(fs["dev_id"], "7:3");
        assert_eq!(fs["origin"], "other");
        assert_eq!(fs["frozen_by"]["pid"], 4242);
        assert_eq!(fs["frozen_by"]["comm"], "fsfreeze");
        assert_eq!(fs["frozen_since_unix_ms"], NOW - 12_000);
        assert_eq!(fs["frozen_since"], "2026-11-18T11:06:28.000Z");
        assert_eq!(fs["frozen_for_ms"], 12_000);
        let writers = fs["blocked_writers"].as_array().unwrap();
        let got: Vec<(u64, &str, &str, u64)> = writers
            .iter()
            .map(|w| {
                (
                    w["pid"].as_u64().unwrap(),
                    w["comm"].as_str().unwrap(),
                    w["level"].as_str().unwrap(),
                    w["waited_ms"].as_u64().unwrap(),
                )
            })
            .collect();
        // Longest waiting first.
        assert_eq!(
            got,
            [
                (5001, "w-pwrite", "WRITE", 9_000),
                (5002, "w-creat", "WRITE", 4_000),
                (5003, "w-mmap", "PAGEFAULT", 2_500),
            ]
        );
        assert_eq!(writers[0]["tid"], 5001);
        assert_eq!(writers[0]["blocked_since_unix_ms"], NOW - 9_000);
        assert_eq!(writers[0]["blocked_since"], "2026-11-18T11:06:31.000Z");

        // Frozen before the observer, not mounted here: nulls, not zeros or empty strings.
        let old = &json["observed"][1];
        assert!(old["mountpoint"].is_null(), "{old}");
        assert!(old["frozen_by"].is_null(), "{old}");
        assert!(old["frozen_since_unix_ms"].is_null() && old["frozen_since"].is_null());
        assert_eq!(old["origin"], "unknown");

        assert_eq!(
            json["ebpf"],
            serde_json::json!({
                "active": true,
                "state": "up",
                "freeze_source": "ioctl_tracepoints",
                "contention_hook": "tp_btf",
                "reason": "fexit refused (EPERM)",
            })
        );
    }

    #[test]
    fn observed_freezes_render_as_tables() {
        let text = StatusReport::new(&observed_status(), NOW).human(NOW);
        let expected = "\
eBPF observer: up (freeze source ioctl_tracepoints, writers via tp_btf)
observed frozen filesystems (any freezer):
MOUNTPOINT                 FSTYPE  FROZEN-BY            SINCE                                 WRITERS
/var/tmp/gatest-1/mnt/obs  ext4    fsfreeze (pid 4242)  2026-11-18T11:06:28.000Z (12.0s ago)  3
(dev 253:1)                xfs     unknown              before the observer                   0
blocked writers:
PID   COMM      KIND       WAITED  MOUNTPOINT
5001  w-pwrite  WRITE      9.0s    /var/tmp/gatest-1/mnt/obs
5002  w-creat   WRITE      4.0s    /var/tmp/gatest-1/mnt/obs
5003  w-mmap    PAGEFAULT  2.5s    /var/tmp/gatest-1/mnt/obs
";
        assert!(
            text.starts_with("frozen by the agent: no\nwatchdog: timeout 300s\n"),
            "{text}"
        );
        assert!(text.ends_with(expected), "{text}\n---\n{expected}");
    }

    #[test]
    fn ebpf_line_says_off_degraded_or_up() {
        let line = |e: EbpfStatus| EbpfRow::from(&e).line();
        assert_eq!(
            line(EbpfStatus {
                active: false,
                reason: "disabled (--ebpf off)".into(),
                ..EbpfStatus::default()
            }),
            "eBPF observer: off: disabled (--ebpf off)"
        );
        assert_eq!(
            line(EbpfStatus {
                active: true,
                freeze_source: "none".into(),
                contention_hook: "raw_tracepoint".into(),
                reason: "no freeze hook by configuration".into(),
            }),
            "eBPF observer: degraded (freeze source none, writers via raw_tracepoint): no freeze hook by configuration"
        );
        assert_eq!(
            line(EbpfStatus {
                active: true,
                freeze_source: "fexit".into(),
                contention_hook: "tp_btf".into(),
                reason: String::new(),
            }),
            "eBPF observer: up (freeze source fexit, writers via tp_btf)"
        );
        let off = EbpfRow::from(&EbpfStatus {
            active: false,
            freeze_source: "stale".into(),
            ..EbpfStatus::default()
        });
        assert_eq!(
            (off.state, off.freeze_source, off.reason),
            (EbpfState::Off, None, None)
        );

        // An observer that is off prints its line and no tables.
        let report = StatusReport::new(
            &FreezeStatusResponse {
                ebpf: Some(EbpfStatus {
                    active: false,
                    reason: "BTF not found".into(),
                    ..EbpfStatus::default()
                }),
                ..FreezeStatusResponse::default()
            },
            NOW,
        );
        assert!(
            report
                .human(NOW)
                .ends_with("\neBPF observer: off: BTF not found\n"),
            "{}",
            report.human(NOW)
        );
        // Running, nothing frozen.
        let mut idle = observed_status();
        idle.observed.clear();
        assert!(StatusReport::new(&idle, NOW)
            .human(NOW)
            .ends_with("tp_btf)\nobserved frozen filesystems: none\n"));
        // Frozen, nobody waiting.
        let mut quiet = observed_status();
        quiet.observed[0].blocked_writers.clear();
        assert!(StatusReport::new(&quiet, NOW)
            .human(NOW)
            .ends_with("before the observer                   0\nblocked writers: none\n"));
    }

    #[test]
    fn freezer_names() {
        let row = |origin: &str, pid: u32, comm: &str| {
            ObservedRow::new(
                &ObservedFreeze {
                    origin: origin.into(),
                    frozen_by_pid: pid,
                    frozen_by_comm: comm.into(),
                    ..ObservedFreeze::default()
                },
                NOW,
            )
            .freezer()
        };
        assert_eq!(row("agent", 77, "guest-agent"), "agent");
        assert_eq!(row("other", 812, "lvcreate"), "lvcreate (pid 812)");
        assert_eq!(row("other", 812, ""), "pid 812");
        assert_eq!(row("other", 0, ""), "other");
        assert_eq!(row("unknown", 0, ""), "unknown");
        assert_eq!(row("", 0, ""), "unknown");
    }
}
