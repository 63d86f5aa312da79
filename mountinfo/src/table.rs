//! A whole mountinfo table: reading it, and parsing it strictly (the agent plans freezes
//! from it, so one malformed line refuses the table) or leniently (the observer only names
//! mountpoints, so it skips what it cannot read).

use std::path::{Path, PathBuf};

use crate::Mount;

/// Where a process reads its own mount table.
pub const MOUNTINFO_PATH: &str = "/proc/self/mountinfo";

/// Why the mount table could not be read.
#[derive(Debug, thiserror::Error)]
pub enum MountsError {
    /// The file could not be read (no /proc mounted, permission, ...).
    #[error("cannot read the mount table {path}: {source}")]
    Read {
        /// The file that was read.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A line does not have the mountinfo format; the whole table is refused rather than
    /// planning a freeze from a partial view.
    #[error("mount table line {line} is malformed ({reason}): {text:?}")]
    Parse {
        /// 1-based line number.
        line: usize,
        /// What was wrong.
        reason: &'static str,
        /// The line, lossily decoded.
        text: String,
    },
}

/// Parses a whole mountinfo text; empty lines are ignored, order is kept (it is the
/// kernel's mount order, which the freeze ordering relies on).
pub fn parse_mountinfo(data: &[u8]) -> Result<Vec<Mount>, MountsError> {
    data.split(|&b| b == b'\n')
        .enumerate()
        .filter(|(_, line)| !line.is_empty())
        .map(|(i, line)| {
            Mount::parse_line(line).map_err(|reason| MountsError::Parse {
                line: i + 1,
                reason,
                text: String::from_utf8_lossy(line).into_owned(),
            })
        })
        .collect()
}

/// Reads and parses the calling process's own mount table, `/proc/self/mountinfo`.
pub fn read_mountinfo() -> Result<Vec<Mount>, MountsError> {
    read_mountinfo_from(Path::new(MOUNTINFO_PATH))
}

/// Reads and parses a mountinfo file (another process's, or a saved sample).
pub fn read_mountinfo_from(path: &Path) -> Result<Vec<Mount>, MountsError> {
    // One read of the whole file: the kernel generates it as one seq_file walk.
    let data = std::fs::read(path).map_err(|source| MountsError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_mountinfo(&data)
}

/// Parses a whole mountinfo text, skipping lines that do not parse (for readers that only
/// look things up and would rather miss one mount than see none); order is kept.
pub fn parse_mountinfo_lenient(data: &[u8]) -> Vec<Mount> {
    data.split(|&b| b == b'\n')
        .filter(|line| !line.is_empty())
        .filter_map(|line| Mount::parse_line(line).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_error_names_the_line() {
        let err = parse_mountinfo(b"1 0 8:1 / / rw - ext4 /dev/sda rw\n\nbroken\n").unwrap_err();
        match err {
            MountsError::Parse { line, ref text, .. } => {
                assert_eq!((line, text.as_str()), (3, "broken"))
            }
            ref other => panic!("unexpected {other}"),
        }
        assert!(err.to_string().contains("line 3"), "{err}");
    }

    #[test]
    fn reads_the_live_table() {
        let mounts = read_mountinfo().unwrap();
        let root = mounts
            .iter()
            .find(|m| m.mount_point == Path::new("/"))
            .expect("a / mount");
        assert!(!root.fstype.is_empty());
        assert!(mounts.iter().any(|m| m.fstype == "proc"));
    }

    #[test]
    fn missing_file_is_a_read_error() {
        let err = read_mountinfo_from(Path::new("/nonexistent/mountinfo")).unwrap_err();
        assert!(matches!(err, MountsError::Read { .. }), "{err}");
    }

    #[test]
    fn lenient_parse_skips_what_it_cannot_read() {
        let mounts = parse_mountinfo_lenient(
            b"1 0 8:1 / / rw - ext4 /dev/sda rw\n\ngarbage line\n2 1 7:3 / /b rw - xfs /dev/loop3 rw",
        );
        let points: Vec<&Path> = mounts.iter().map(|m| m.mount_point.as_path()).collect();
        assert_eq!(points, [Path::new("/"), Path::new("/b")]);
    }
}
