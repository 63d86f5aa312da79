//! A small reader of /proc/self/mountinfo for assertions ("is it mounted, with which
//! filesystem") and for clean-up ("what is still mounted under my scratch directory").

use std::path::{Path, PathBuf};

use crate::error::{FixtureError, Result};

/// One line of mountinfo, the fields the tests need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// `major:minor` of the superblock.
    pub dev_id: String,
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// Per-mount options (`rw,relatime`).
    pub mount_options: String,
    /// Filesystem type (`ext4`, `tmpfs`).
    pub fstype: String,
    /// Mount source (`/dev/loop3`).
    pub source: String,
}

impl MountEntry {
    /// True when mounted read-write.
    pub fn is_rw(&self) -> bool {
        self.mount_options.split(',').any(|o| o == "rw")
    }
}

/// Undoes mountinfo's octal escapes (`\040` for a space, ...).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses mountinfo text; lines that do not have the expected shape are an error.
pub fn parse(text: &str) -> Result<Vec<MountEntry>> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let bad = || FixtureError::Parse {
            what: "mountinfo".into(),
            reason: format!("line {line:?}"),
        };
        let (pre, post) = line.split_once(" - ").ok_or_else(bad)?;
        let pre: Vec<&str> = pre.split(' ').collect();
        let post: Vec<&str> = post.split(' ').collect();
        if pre.len() < 6 || post.len() < 2 {
            return Err(bad());
        }
        out.push(MountEntry {
            dev_id: pre[2].to_string(),
            mount_point: PathBuf::from(unescape(pre[4])),
            mount_options: pre[5].to_string(),
            fstype: post[0].to_string(),
            source: unescape(post[1]),
        });
    }
    Ok(out)
}

/// The current mount table of this process's mount namespace, in mount order.
pub fn read() -> Result<Vec<MountEntry>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| FixtureError::io("read /proc/self/mountinfo", e))?;
    parse(&text)
}

/// The topmost mount at exactly `path`, if `path` is a mountpoint.
pub fn at(path: &Path) -> Result<Option<MountEntry>> {
    Ok(read()?.into_iter().rev().find(|m| m.mount_point == path))
}

/// Every mount strictly below `root`, in mount order.
pub fn under(root: &Path) -> Result<Vec<MountEntry>> {
    Ok(read()?
        .into_iter()
        .filter(|m| m.mount_point.starts_with(root) && m.mount_point != root)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
44 22 7:0 / /var/tmp/gatest-1/a/mnt rw,relatime shared:20 - ext4 /dev/loop0 rw
45 22 7:0 / /var/tmp/gatest-1/bind\\040dir rw,relatime shared:20 - ext4 /dev/loop0 rw
46 22 0:55 / /var/tmp/gatest-1/t ro,nosuid master:3 - tmpfs tmpfs ro,size=1024k
";

    #[test]
    fn parses_fields_and_escapes() {
        let m = parse(SAMPLE).unwrap();
        assert_eq!(m.len(), 4);
        assert_eq!(m[1].dev_id, "7:0");
        assert_eq!(m[1].source, "/dev/loop0");
        assert_eq!(
            m[2].mount_point,
            PathBuf::from("/var/tmp/gatest-1/bind dir")
        );
        assert_eq!(m[3].fstype, "tmpfs");
        assert!(m[1].is_rw());
        assert!(!m[3].is_rw());
    }

    #[test]
    fn rejects_lines_without_separator() {
        assert!(parse("1 2 3:4 / /x rw ext4 /dev/x rw\n").is_err());
    }

    #[test]
    fn the_live_table_has_a_root() {
        let m = read().unwrap();
        assert!(m.iter().any(|e| e.mount_point == Path::new("/")));
        assert!(at(Path::new("/")).unwrap().is_some());
    }
}
