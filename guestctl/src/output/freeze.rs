//! What `guestctl quiesce` and `thaw` print: a count, then one row per filesystem the
//! agent considered (quiesce) or held (thaw), and for quiesce the watchdog's deadline.

use guest_proto::v1::{FilesystemResult, FsOutcome};
use serde::Serialize;

use super::format::{fmt_relative, fmt_unix_ms, table};
use super::Render;

/// One filesystem of a quiesce/thaw answer.
#[derive(Debug, Serialize, PartialEq)]
pub struct FsRow {
    /// Mountpoint.
    pub mountpoint: String,
    /// Filesystem type.
    pub fstype: String,
    /// Mount source.
    pub device: String,
    /// Superblock device id, major:minor.
    pub dev_id: String,
    /// Outcome, lower case (`frozen`, `skipped`, ...).
    pub outcome: String,
    /// Reason or errno text.
    pub detail: String,
    /// ioctl duration, microseconds.
    pub duration_us: u64,
}

impl From<&FilesystemResult> for FsRow {
    fn from(r: &FilesystemResult) -> Self {
        FsRow {
            mountpoint: r.mountpoint.clone(),
            fstype: r.fstype.clone(),
            device: r.device.clone(),
            dev_id: r.dev_id.clone(),
            outcome: outcome_name(r.outcome),
            detail: r.detail.clone(),
            duration_us: r.duration_us,
        }
    }
}

/// Result of `quiesce`.
#[derive(Debug, Serialize, PartialEq)]
pub struct QuiesceReport {
    /// Filesystems frozen and now held by the agent.
    pub frozen_count: u32,
    /// Every filesystem considered.
    pub filesystems: Vec<FsRow>,
    /// When the watchdog thaws (unix ms; 0 = none).
    pub watchdog_deadline_unix_ms: u64,
}

impl Render for QuiesceReport {
    fn human(&self, now_ms: u64) -> String {
        let mut out = format!("froze {} filesystem(s)\n", self.frozen_count);
        out.push_str(&fs_table(&self.filesystems));
        if self.watchdog_deadline_unix_ms == 0 {
            out.push_str("watchdog: no deadline reported\n");
        } else {
            out.push_str(&format!(
                "watchdog: thaws automatically at {} ({}) unless thawed first\n",
                fmt_unix_ms(self.watchdog_deadline_unix_ms),
                fmt_relative(self.watchdog_deadline_unix_ms, now_ms)
            ));
        }
        out
    }
}

/// Result of `thaw`.
#[derive(Debug, Serialize, PartialEq)]
pub struct ThawReport {
    /// Filesystems thawed.
    pub thawed_count: u32,
    /// Every filesystem the agent held.
    pub filesystems: Vec<FsRow>,
}

impl Render for ThawReport {
    fn human(&self, _now_ms: u64) -> String {
        format!(
            "thawed {} filesystem(s)\n{}",
            self.thawed_count,
            fs_table(&self.filesystems)
        )
    }
}

/// Lower-case outcome name: `FS_OUTCOME_ALREADY_FROZEN` -> `already_frozen`.
pub fn outcome_name(value: i32) -> String {
    match FsOutcome::try_from(value) {
        Ok(o) => o
            .as_str_name()
            .trim_start_matches("FS_OUTCOME_")
            .to_ascii_lowercase(),
        Err(_) => format!("unknown({value})"),
    }
}

fn fs_table(rows: &[FsRow]) -> String {
    if rows.is_empty() {
        return "(no filesystems)\n".to_string();
    }
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.mountpoint.clone(),
                r.fstype.clone(),
                r.device.clone(),
                r.outcome.clone(),
                format!("{:.3} ms", r.duration_us as f64 / 1000.0),
                r.detail.clone(),
            ]
        })
        .collect();
    table(
        &[
            "MOUNTPOINT",
            "FSTYPE",
            "DEVICE",
            "OUTCOME",
            "DURATION",
            "DETAIL",
        ],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_795_000_000_000;

    fn fs(mountpoint: &str, outcome: FsOutcome, detail: &str) -> FilesystemResult {
        FilesystemResult {
            mountpoint: mountpoint.into(),
            fstype: "ext4".into(),
            device: "/dev/loop3".into(),
            outcome: outcome as i32,
            detail: detail.into(),
            dev_id: "7:3".into(),
            duration_us: 1234,
        }
    }

    #[test]
    fn outcome_names_are_lowercase() {
        assert_eq!(outcome_name(FsOutcome::Frozen as i32), "frozen");
        assert_eq!(
            outcome_name(FsOutcome::AlreadyFrozen as i32),
            "already_frozen"
        );
        assert_eq!(outcome_name(FsOutcome::RolledBack as i32), "rolled_back");
        assert_eq!(outcome_name(99), "unknown(99)");
    }

    #[test]
    fn quiesce_renders_as_text_and_json() {
        let report = QuiesceReport {
            frozen_count: 1,
            filesystems: vec![
                FsRow::from(&fs("/mnt/a", FsOutcome::Frozen, "")),
                FsRow::from(&fs("/proc", FsOutcome::Skipped, "virtual filesystem")),
            ],
            watchdog_deadline_unix_ms: NOW + 300_000,
        };
        let text = report.human(NOW);
        assert_eq!(
            text,
            "froze 1 filesystem(s)\n\
             MOUNTPOINT  FSTYPE  DEVICE      OUTCOME  DURATION  DETAIL\n\
             /mnt/a      ext4    /dev/loop3  frozen   1.234 ms\n\
             /proc       ext4    /dev/loop3  skipped  1.234 ms  virtual filesystem\n\
             watchdog: thaws automatically at 2026-11-18T11:11:40.000Z (in 300.0s) unless thawed first\n"
        );
        let json: serde_json::Value = serde_json::to_value(&report).unwrap();
        assert_eq!(json["frozen_count"], 1);
        assert_eq!(json["filesystems"][0]["outcome"], "frozen");
        assert_eq!(json["filesystems"][1]["outcome"], "skipped");
        assert_eq!(json["filesystems"][1]["dev_id"], "7:3");
        assert_eq!(json["watchdog_deadline_unix_ms"], NOW + 300_000);
    }

    #[test]
    fn thaw_without_filesystems() {
        let report = ThawReport {
            thawed_count: 0,
            filesystems: vec![],
        };
        assert_eq!(
            report.human(NOW),
            "thawed 0 filesystem(s)\n(no filesystems)\n"
        );
    }
}
