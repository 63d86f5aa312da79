//! Checking and normalising the paths a caller hands in (requested mount points,
//! `--freeze-only` roots). Matching is literal and component-wise, like mountinfo's own
//! paths: no symlink is followed, so a path is never resolved on a filesystem that may be
//! frozen.

use std::path::{Component, Path, PathBuf};

/// What is wrong with a caller's path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathProblem {
    /// Not starting at `/`.
    #[error("is not an absolute path")]
    Relative,
    /// Contains `..`, which cannot be resolved without following the tree.
    #[error("contains '..'; give the normalised absolute path")]
    ParentComponent,
}

/// Returns `path` with `.` components and repeated or trailing slashes removed, or why it
/// cannot be used: it must be absolute and free of `..`.
pub fn normalise_absolute(path: &Path) -> Result<PathBuf, PathProblem> {
    if !path.is_absolute() {
        return Err(PathProblem::Relative);
    }
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::RootDir | Component::Normal(_) => out.push(c),
            Component::CurDir => {}
            Component::ParentDir => return Err(PathProblem::ParentComponent),
            Component::Prefix(_) => return Err(PathProblem::Relative),
        }
    }
    Ok(out)
}

/// True when `path` is `root` or lies below it, comparing whole components:
/// `/mnt/a/b` is within `/mnt/a`, `/mnt/ab` is not.
pub fn is_within(path: &Path, root: &Path) -> bool {
    path.starts_with(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_dots_and_slashes() {
        for (input, want) in [
            ("/", "/"),
            ("/data/", "/data"),
            ("//data//x/./y/", "/data/x/y"),
            ("/./mnt", "/mnt"),
        ] {
            assert_eq!(
                normalise_absolute(Path::new(input)).unwrap(),
                Path::new(want),
                "{input}"
            );
        }
    }

    #[test]
    fn refuses_relative_and_parent() {
        assert_eq!(
            normalise_absolute(Path::new("data")),
            Err(PathProblem::Relative)
        );
        assert_eq!(
            normalise_absolute(Path::new("")),
            Err(PathProblem::Relative)
        );
        assert_eq!(
            normalise_absolute(Path::new("./data")),
            Err(PathProblem::Relative)
        );
        assert_eq!(
            normalise_absolute(Path::new("/data/../etc")),
            Err(PathProblem::ParentComponent)
        );
    }

    #[test]
    fn within_compares_components() {
        assert!(is_within(Path::new("/mnt/a"), Path::new("/mnt/a")));
        assert!(is_within(Path::new("/mnt/a/b"), Path::new("/mnt/a")));
        assert!(!is_within(Path::new("/mnt/ab"), Path::new("/mnt/a")));
        assert!(!is_within(Path::new("/mnt"), Path::new("/mnt/a")));
        assert!(is_within(Path::new("/anything"), Path::new("/")));
    }
}
