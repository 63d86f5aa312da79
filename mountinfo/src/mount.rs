//! One line of mountinfo: [`Mount`] and [`Mount::parse_line`], with the kernel's octal
//! escapes undone.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use crate::DevId;

/// One line of mountinfo: a mount (a place in the tree) of a superblock (identified by `dev`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Unique id of this mount (may be reused after unmount).
    pub mount_id: u32,
    /// Id of the mount this one is attached to (itself, or an unlisted id, for the root).
    pub parent_id: u32,
    /// Device number of the superblock (`st_dev` the kernel reports for it in mountinfo).
    pub dev: DevId,
    /// Directory of the filesystem shown at the mount point (not `/` for bind mounts of a
    /// subdirectory and for btrfs subvolumes).
    pub root: PathBuf,
    /// Where the mount is attached, relative to the process root, unescaped.
    pub mount_point: PathBuf,
    /// Per-mount options (`rw`/`ro`, `nosuid`, `relatime`, ...), in kernel order.
    pub mount_options: Vec<String>,
    /// Filesystem type (`ext4`, `fuse.sshfs`, ...).
    pub fstype: String,
    /// Mount source as given to mount(2) (`/dev/vda1`, `tmpfs`, `none`, a share name, ...).
    pub source: String,
    /// Per-superblock options, in kernel order.
    pub super_options: Vec<String>,
}

impl Mount {
    /// True when either this mount or its superblock is read-only: nothing can be written
    /// through it, so there is nothing to flush before a snapshot.
    pub fn read_only(&self) -> bool {
        let ro = |opts: &[String]| opts.iter().any(|o| o == "ro");
        ro(&self.mount_options) || ro(&self.super_options)
    }

    /// Parses one mountinfo line (without its newline).
    pub fn parse_line(line: &[u8]) -> Result<Mount, &'static str> {
        let mut fields = line.split(|&b| b == b' ');
        let mut next = |missing: &'static str| fields.next().ok_or(missing);
        let mount_id = number(next("missing mount id")?).ok_or("mount id is not a number")?;
        let parent_id = number(next("missing parent id")?).ok_or("parent id is not a number")?;
        let dev = std::str::from_utf8(next("missing major:minor")?)
            .ok()
            .and_then(|s| s.parse::<DevId>().ok())
            .ok_or("major:minor is malformed")?;
        let root = path(next("missing root")?);
        let mount_point = path(next("missing mount point")?);
        let mount_options = options(next("missing mount options")?);
        // Optional fields (shared:N, master:N, ...) run up to a lone "-".
        while next("missing '-' separator after optional fields")? != b"-" {}
        let fstype = text(next("missing filesystem type")?);
        let source = text(next("missing mount source")?);
        let super_options = options(next("missing superblock options")?);
        // Anything after the superblock options would be a future extension: ignored.
        if fstype.is_empty() {
            return Err("empty filesystem type");
        }
        if !mount_point.is_absolute() {
            return Err("mount point is not absolute");
        }
        Ok(Mount {
            mount_id,
            parent_id,
            dev,
            root,
            mount_point,
            mount_options,
            fstype,
            source,
            super_options,
        })
    }
}

fn number(field: &[u8]) -> Option<u32> {
    if field.is_empty() || !field.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(field).ok()?.parse().ok()
}

fn path(field: &[u8]) -> PathBuf {
    PathBuf::from(OsStr::from_bytes(&unescape(field)))
}

fn text(field: &[u8]) -> String {
    String::from_utf8_lossy(&unescape(field)).into_owned()
}

fn options(field: &[u8]) -> Vec<String> {
    field
        .split(|&b| b == b',')
        .filter(|o| !o.is_empty())
        .map(text)
        .collect()
}

/// Undoes the kernel's `\ooo` escapes; a backslash not followed by three octal digits
/// (value <= 0o377) is kept as is.
fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if field[i] == b'\\' {
            if let Some(&[a, b, c]) = field.get(i + 1..i + 4) {
                let octal = |d: u8| (b'0'..=b'7').contains(&d);
                if (b'0'..=b'3').contains(&a) && octal(b) && octal(c) {
                    out.push((a - b'0') * 64 + (b - b'0') * 8 + (c - b'0'));
                    i += 4;
                    continue;
                }
            }
        }
        out.push(field[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn parse(line: &str) -> Mount {
        Mount::parse_line(line.as_bytes()).unwrap()
    }

    #[test]
    fn parses_the_proc5_example() {
        let m = parse(
            "36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 - ext3 /dev/root rw,errors=continue",
        );
        assert_eq!((m.mount_id, m.parent_id), (36, 35));
        assert_eq!(m.dev, DevId::new(98, 0));
        assert_eq!(m.root, Path::new("/mnt1"));
        assert_eq!(m.mount_point, Path::new("/mnt/parent"));
        assert_eq!(m.mount_options, ["rw", "noatime"]);
        assert_eq!(m.fstype, "ext3");
        assert_eq!(m.source, "/dev/root");
        assert_eq!(m.super_options, ["rw", "errors=continue"]);
        assert!(!m.read_only());
    }

    #[test]
    fn zero_or_many_optional_fields() {
        let none = parse("27 1 254:0 / / rw,relatime - ext4 /dev/vda rw");
        assert_eq!(none.fstype, "ext4");
        let many = parse(
            "40 27 8:1 / /a rw shared:5 master:2 propagate_from:1 unbindable - xfs /dev/sda1 rw",
        );
        assert_eq!(
            (many.fstype.as_str(), many.source.as_str()),
            ("xfs", "/dev/sda1")
        );
    }

    #[test]
    fn unescapes_octal_in_paths_source_and_options() {
        let m = parse(
            r"50 27 8:2 /dir\040x /mnt/my\040disk\011tab\012nl\134bs rw - ext4 /dev/disk\040one rw,opt=a\054b",
        );
        assert_eq!(m.root, Path::new("/dir x"));
        assert_eq!(m.mount_point, Path::new("/mnt/my disk\ttab\nnl\\bs"));
        assert_eq!(m.source, "/dev/disk one");
        // The escaped comma stays inside its option.
        assert_eq!(m.super_options, ["rw", "opt=a,b"]);
    }

    #[test]
    fn keeps_backslashes_that_are_not_escapes() {
        assert_eq!(unescape(br"a\04"), br"a\04");
        assert_eq!(unescape(br"a\400b"), br"a\400b");
        assert_eq!(unescape(br"a\08x"), br"a\08x");
        assert_eq!(unescape(br"\\134"), br"\\");
        assert_eq!(unescape(br"end\"), br"end\");
    }

    #[test]
    fn non_utf8_mount_points_survive() {
        let m = Mount::parse_line(b"51 27 8:3 / /mnt/\xff\xfe rw - ext4 /dev/sdb rw").unwrap();
        assert_eq!(m.mount_point.as_os_str().as_bytes(), b"/mnt/\xff\xfe");
    }

    #[test]
    fn read_only_from_either_option_set() {
        assert!(parse("1 0 8:1 / /a ro,relatime - ext4 /dev/sda rw").read_only());
        assert!(parse("1 0 8:1 / /a rw,relatime - ext4 /dev/sda ro,errors=remount-ro").read_only());
        // "errors=remount-ro" alone is not read-only.
        assert!(!parse("1 0 8:1 / /a rw - ext4 /dev/sda rw,errors=remount-ro").read_only());
    }

    #[test]
    fn rejects_malformed_lines() {
        for (line, why) in [
            (
                "x 1 8:1 / /a rw - ext4 /dev/sda rw",
                "mount id is not a number",
            ),
            (
                "1 -1 8:1 / /a rw - ext4 /dev/sda rw",
                "parent id is not a number",
            ),
            (
                "1 0 8 / /a rw - ext4 /dev/sda rw",
                "major:minor is malformed",
            ),
            (
                "1 0 8:1 / /a rw shared:1 ext4 /dev/sda rw",
                "missing '-' separator after optional fields",
            ),
            ("1 0 8:1 / /a rw -", "missing filesystem type"),
            (
                "1 0 8:1 / /a rw - ext4 /dev/sda",
                "missing superblock options",
            ),
            (
                "1 0 8:1 / a rw - ext4 /dev/sda rw",
                "mount point is not absolute",
            ),
            ("1 0 8:1", "missing root"),
        ] {
            assert_eq!(Mount::parse_line(line.as_bytes()), Err(why), "{line}");
        }
    }
}
