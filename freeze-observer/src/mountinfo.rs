//! `/proc/self/mountinfo`: which mountpoint a superblock's device id belongs to.

use std::{collections::HashMap, path::PathBuf};

/// One line of mountinfo, reduced to what the observer needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountEntry {
    /// Device major number (field 3).
    pub major: u32,
    /// Device minor number (field 3).
    pub minor: u32,
    /// Root of the mount within its filesystem (field 4); `/` for a whole-filesystem mount.
    pub root: String,
    /// Where it is mounted (field 5), unescaped.
    pub mountpoint: PathBuf,
    /// Filesystem type (after the ` - ` separator).
    pub fstype: String,
}

/// Parses mountinfo text; malformed lines are skipped.
pub fn parse(text: &str) -> Vec<MountEntry> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<MountEntry> {
    let mut fields = line.split(' ');
    let _id = fields.next()?;
    let _parent = fields.next()?;
    let (major, minor) = fields.next()?.split_once(':')?;
    let root = unescape(fields.next()?);
    let mountpoint = unescape(fields.next()?);
    let fstype = fields.skip_while(|f| *f != "-").nth(1)?;
    Some(MountEntry {
        major: major.parse().ok()?,
        minor: minor.parse().ok()?,
        root,
        mountpoint: PathBuf::from(mountpoint),
        fstype: fstype.to_owned(),
    })
}

/// Undoes the kernel's octal escaping of space, tab, newline and backslash (`\040` etc.).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() {
            let digits = &field[i + 1..i + 4];
            if let Ok(v) = u8::from_str_radix(digits, 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads and parses the calling process's mountinfo (a procfs read; call off the runtime).
pub fn read_self() -> std::io::Result<Vec<MountEntry>> {
    Ok(parse(&std::fs::read_to_string("/proc/self/mountinfo")?))
}

/// Device id -> mountpoint, preferring a whole-filesystem mount (root `/`) and then the first
/// one listed, so a bind mount of a subdirectory does not hide the real mountpoint.
pub fn mountpoints_by_dev(entries: &[MountEntry]) -> HashMap<(u32, u32), PathBuf> {
    let mut map: HashMap<(u32, u32), (bool, PathBuf)> = HashMap::new();
    for e in entries {
        let whole = e.root == "/";
        match map.get(&(e.major, e.minor)) {
            Some((true, _)) => {}
            Some((false, _)) if !whole => {}
            _ => {
                map.insert((e.major, e.minor), (whole, e.mountpoint.clone()));
            }
        }
    }
    map.into_iter().map(|(k, (_, p))| (k, p)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
35 22 7:3 /sub /srv/bind rw,relatime shared:5 - ext4 /dev/loop3 rw
36 22 7:3 / /var/tmp/obs\\040x/a rw,relatime shared:6 - ext4 /dev/loop3 rw
37 22 0:5 / /proc rw,nosuid - proc proc rw
garbage line
";

    #[test]
    fn parses_fields_and_unescapes_mountpoints() {
        let entries = parse(SAMPLE);
        assert_eq!(entries.len(), 4);
        assert_eq!(entries[2].mountpoint, PathBuf::from("/var/tmp/obs x/a"));
        assert_eq!((entries[2].major, entries[2].minor), (7, 3));
        assert_eq!(entries[2].fstype, "ext4");
        assert_eq!(entries[3].fstype, "proc");
        assert_eq!(entries[1].root, "/sub");
    }

    #[test]
    fn prefers_the_whole_filesystem_mount_over_a_bind_of_a_subdirectory() {
        let map = mountpoints_by_dev(&parse(SAMPLE));
        assert_eq!(map[&(7, 3)], PathBuf::from("/var/tmp/obs x/a"));
        assert_eq!(map[&(254, 1)], PathBuf::from("/"));
    }

    #[test]
    fn optional_fields_before_the_separator_are_skipped() {
        let line = "40 22 8:1 / /data rw shared:7 master:2 propagate_from:1 - xfs /dev/sda1 rw";
        let e = parse_line(line).expect("parses");
        assert_eq!(e.fstype, "xfs");
        assert_eq!(e.mountpoint, PathBuf::from("/data"));
    }
}
