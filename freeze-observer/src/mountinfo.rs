//! `/proc/self/mountinfo`: which mountpoint a superblock's device id belongs to.
//!
//! Parsing is the workspace's `mountinfo` crate, the same parser the agent plans its freezes
//! with (escapes undone, paths as bytes, `major:minor` parsed into a [`DevId`]). The observer
//! reads leniently: a line that does not parse is skipped rather than leaving every freeze
//! unnamed.

use std::{collections::HashMap, path::PathBuf};

pub use mountinfo::{parse_mountinfo_lenient, DevId, Mount};

/// Reads and parses the calling process's mountinfo, skipping lines that do not parse (a
/// procfs read; call off the runtime).
pub fn read_self() -> std::io::Result<Vec<Mount>> {
    Ok(parse_mountinfo_lenient(&std::fs::read(
        mountinfo::MOUNTINFO_PATH,
    )?))
}

/// Device id -> mountpoint, preferring a whole-filesystem mount (root `/`) and then the first
/// one listed, so a bind mount of a subdirectory does not hide the real mountpoint.
pub fn mountpoints_by_dev(entries: &[Mount]) -> HashMap<DevId, PathBuf> {
    let mut map: HashMap<DevId, (bool, PathBuf)> = HashMap::new();
    for e in entries {
        let whole = e.root.as_os_str() == "/";
        match map.get(&e.dev) {
            Some((true, _)) => {}
            Some((false, _)) if !whole => {}
            _ => {
                map.insert(e.dev, (whole, e.mount_point.clone()));
            }
        }
    }
    map.into_iter().map(|(k, (_, p))| (k, p)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &[u8] = b"\
22 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
35 22 7:3 /sub /srv/bind rw,relatime shared:5 - ext4 /dev/loop3 rw
36 22 7:3 / /var/tmp/obs\\040x/a rw,relatime shared:6 - ext4 /dev/loop3 rw
37 22 0:5 / /proc rw,nosuid - proc proc rw
garbage line
";

    #[test]
    fn parses_fields_and_unescapes_mountpoints() {
        let entries = parse_mountinfo_lenient(SAMPLE);
        assert_eq!(entries.len(), 4);
        assert_eq!(entries[2].mount_point, PathBuf::from("/var/tmp/obs x/a"));
        assert_eq!(entries[2].dev, DevId::new(7, 3));
        assert_eq!(entries[2].fstype, "ext4");
        assert_eq!(entries[3].fstype, "proc");
        assert_eq!(entries[1].root, PathBuf::from("/sub"));
    }

    #[test]
    fn prefers_the_whole_filesystem_mount_over_a_bind_of_a_subdirectory() {
        let map = mountpoints_by_dev(&parse_mountinfo_lenient(SAMPLE));
        assert_eq!(map[&DevId::new(7, 3)], PathBuf::from("/var/tmp/obs x/a"));
        assert_eq!(map[&DevId::new(254, 1)], PathBuf::from("/"));
    }

    #[test]
    fn optional_fields_before_the_separator_are_skipped() {
        let line = b"40 22 8:1 / /data rw shared:7 master:2 propagate_from:1 - xfs /dev/sda1 rw";
        let e = &parse_mountinfo_lenient(line)[0];
        assert_eq!(e.fstype, "xfs");
        assert_eq!(e.mount_point, PathBuf::from("/data"));
    }

    #[test]
    fn reads_the_live_table() {
        let mounts = read_self().unwrap();
        assert!(mounts.iter().any(|m| m.mount_point.as_os_str() == "/"));
    }
}
