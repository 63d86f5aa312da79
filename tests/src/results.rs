//! Reading the agent's per-filesystem reports in assertions, with messages that show the
//! whole report when something is missing.

use std::time::{SystemTime, UNIX_EPOCH};

use guest_proto::v1::{FilesystemResult, FsOutcome};

/// Unix time in milliseconds, the unit of the agent's timestamps.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The report for mountpoint `mp`.
pub fn entry<'a>(list: &'a [FilesystemResult], mp: &str) -> Option<&'a FilesystemResult> {
    list.iter().find(|r| r.mountpoint == mp)
}

/// The report for `mp`; panics with the whole list when there is none.
pub fn expect_entry<'a>(list: &'a [FilesystemResult], mp: &str) -> &'a FilesystemResult {
    entry(list, mp).unwrap_or_else(|| panic!("no report for {mp} in {}", summary(list)))
}

/// Outcome reported for `mp`, if any.
pub fn outcome(list: &[FilesystemResult], mp: &str) -> Option<FsOutcome> {
    entry(list, mp).map(FilesystemResult::outcome)
}

/// Mountpoints with the given outcome, in report order.
pub fn with_outcome(list: &[FilesystemResult], o: FsOutcome) -> Vec<String> {
    list.iter()
        .filter(|r| r.outcome() == o)
        .map(|r| r.mountpoint.clone())
        .collect()
}

/// Position of `mp` in the report list (the agent lists filesystems in the order it acted
/// on them).
pub fn position(list: &[FilesystemResult], mp: &str) -> Option<usize> {
    list.iter().position(|r| r.mountpoint == mp)
}

/// One line per filesystem: `mountpoint fstype device dev_id OUTCOME detail`.
pub fn summary(list: &[FilesystemResult]) -> String {
    let mut s = String::from("[");
    for r in list {
        s.push_str(&format!(
            "\n  {} {} {} {} {:?} {:?}",
            r.mountpoint,
            r.fstype,
            r.device,
            r.dev_id,
            r.outcome(),
            r.detail
        ));
    }
    s.push_str("\n]");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(mp: &str, o: FsOutcome) -> FilesystemResult {
        FilesystemResult {
            mountpoint: mp.into(),
            outcome: o as i32,
            ..Default::default()
        }
    }

    #[test]
    fn finds_entries_by_mountpoint_and_outcome() {
        let l = vec![
            r("/a", FsOutcome::Frozen),
            r("/b", FsOutcome::Skipped),
            r("/c", FsOutcome::Frozen),
        ];
        assert_eq!(outcome(&l, "/b"), Some(FsOutcome::Skipped));
        assert_eq!(outcome(&l, "/x"), None);
        assert_eq!(
            with_outcome(&l, FsOutcome::Frozen),
            vec!["/a".to_string(), "/c".to_string()]
        );
        assert_eq!(position(&l, "/c"), Some(2));
        assert!(summary(&l).contains("/b"));
        assert!(now_ms() > 1_600_000_000_000);
    }
}
