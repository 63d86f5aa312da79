//! A private state directory for one agent (its freeze journal), on a tmpfs so the agent
//! accepts it (`/dev/shm/gatest-<unique>`; a journal on a freezable filesystem is refused).
//!
//! Every test agent needs its own: agents sharing the default `/run/guest-agent` would read
//! each other's journals, and a starting agent thaws whatever a journal lists. It lives
//! outside the scratch directory so it never shows up among the mounts a Quiesce considers
//! (the reliability tests' `reliability::StateDir` is a tmpfs inside the scratch instead,
//! for tests about the journal itself).

use std::path::{Path, PathBuf};

use crate::error::{FixtureError, Result};
use crate::names;

/// Where state directories are created (a tmpfs on Debian).
pub const STATE_PARENT: &str = "/dev/shm";

/// A directory removed (with its content) on drop.
#[derive(Debug)]
pub struct ShmStateDir {
    path: PathBuf,
}

impl ShmStateDir {
    /// Creates a fresh, empty directory.
    pub fn new() -> Result<Self> {
        let path = Path::new(STATE_PARENT).join(names::unique("gatest-state-"));
        std::fs::create_dir(&path)
            .map_err(|e| FixtureError::io(format!("mkdir {}", path.display()), e))?;
        Ok(Self { path })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ShmStateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_on_tmpfs_and_removed() {
        let d = ShmStateDir::new().unwrap();
        let p = d.path().to_path_buf();
        std::fs::write(p.join("x"), b"1").unwrap();
        let st = nix::sys::statfs::statfs(&p).unwrap();
        assert_eq!(st.filesystem_type(), nix::sys::statfs::TMPFS_MAGIC);
        drop(d);
        assert!(!p.exists());
    }
}
