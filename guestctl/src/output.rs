//! What each command prints: one serde report per command, rendered either as JSON (one
//! object on one line) or as text for people. Rendering is pure (the current time is a
//! parameter) so it is unit tested. `status`, the largest, has its own module.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use guest_proto::v1::{FilesystemResult, FsOutcome};
use serde::Serialize;

mod status;

pub use status::StatusReport;

/// Human-readable rendering of a report.
pub trait Render {
    /// The text printed without `--json`; `now_ms` is the host's unix time in ms.
    fn human(&self, now_ms: u64) -> String;
}

/// Prints `report` on stdout as one JSON line or as text.
pub fn emit<R: Serialize + Render>(report: &R, json: bool) -> std::io::Result<()> {
    let text = if json {
        serde_json::to_string(report).map_err(std::io::Error::other)?
    } else {
        report.human(now_unix_ms())
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", text.trim_end())?;
    out.flush()
}

/// The host's current unix time in milliseconds.
pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// One line per answered ping (printed as they arrive in text mode).
pub fn ping_line(version: &str, rtt_ms: f64) -> String {
    format!("pong from guest-agent {version} in {rtt_ms:.3} ms")
}

/// Result of `ping`.
#[derive(Debug, Serialize, PartialEq)]
pub struct PingReport {
    /// Agent version.
    pub version: String,
    /// Round-trip time of each ping, milliseconds.
    pub rtt_ms: Vec<f64>,
}

impl Render for PingReport {
    fn human(&self, _now_ms: u64) -> String {
        self.rtt_ms
            .iter()
            .map(|rtt| ping_line(&self.version, *rtt))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Result of `init`.
#[derive(Debug, Serialize, PartialEq)]
pub struct InitReport {
    /// Always true (failures are errors).
    pub initialised: bool,
    /// Number of volumes requested.
    pub volumes: usize,
    /// Whether a network section was sent.
    pub network: bool,
}

impl Render for InitReport {
    fn human(&self, _now_ms: u64) -> String {
        let net = if self.network {
            ", network configured"
        } else {
            ""
        };
        format!("guest initialised: {} volume(s){net}", self.volumes)
    }
}

/// Result of `shutdown`.
#[derive(Debug, Serialize, PartialEq)]
pub struct ShutdownReport {
    /// Always true (failures are errors).
    pub shutdown: bool,
}

impl Render for ShutdownReport {
    fn human(&self, _now_ms: u64) -> String {
        "agent is shutting down".to_string()
    }
}

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

/// Left-aligned columns separated by two spaces; no trailing blanks.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i > 0 {
                s.push_str("  ");
            }
            s.push_str(cell);
            s.extend(std::iter::repeat_n(' ', w - cell.chars().count()));
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// `2026-11-28T23:15:00.123Z` from unix milliseconds (UTC).
pub fn fmt_unix_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

/// Gregorian date of a day count since 1970-01-01 (proleptic, era-based arithmetic).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // day of era, 0..=146096
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // year of era
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of year from March 1
    let mp = (5 * doy + 2) / 153; // month from March = 0
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// `in 4.5s` / `12.0s ago` relative to `now_ms`.
pub fn fmt_relative(at_ms: u64, now_ms: u64) -> String {
    if at_ms >= now_ms {
        format!("in {:.1}s", (at_ms - now_ms) as f64 / 1000.0)
    } else {
        format!("{:.1}s ago", (now_ms - at_ms) as f64 / 1000.0)
    }
}

/// `300s`, `1.5s` for a millisecond count.
pub fn fmt_ms(ms: u64) -> String {
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{:.3}s", ms as f64 / 1000.0)
    }
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
    fn dates_are_utc_iso8601() {
        assert_eq!(fmt_unix_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(fmt_unix_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(fmt_unix_ms(1_795_000_000_123), "2026-11-18T11:06:40.123Z");
        assert_eq!(fmt_unix_ms(4_102_444_799_999), "2099-12-31T23:59:59.999Z");
    }

    #[test]
    fn relative_times() {
        assert_eq!(fmt_relative(NOW + 4_500, NOW), "in 4.5s");
        assert_eq!(fmt_relative(NOW - 12_000, NOW), "12.0s ago");
        assert_eq!(fmt_ms(300_000), "300s");
        assert_eq!(fmt_ms(1_500), "1.500s");
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
    fn table_aligns_columns() {
        let t = table(
            &["A", "LONGER"],
            &[
                vec!["wide cell".into(), "x".into()],
                vec!["y".into(), "".into()],
            ],
        );
        assert_eq!(t, "A          LONGER\nwide cell  x\ny\n");
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

    #[test]
    fn ping_renders() {
        let r = PingReport {
            version: "0.1.0".into(),
            rtt_ms: vec![0.412, 1.0],
        };
        assert_eq!(
            r.human(NOW),
            "pong from guest-agent 0.1.0 in 0.412 ms\npong from guest-agent 0.1.0 in 1.000 ms"
        );
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"version":"0.1.0","rtt_ms":[0.412,1.0]}"#
        );
    }
}
