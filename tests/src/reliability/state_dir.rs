//! A `--state-dir` for the agent's freeze journal: a private tmpfs mounted in the test's
//! scratch directory (what the agent requires: it must never be frozen), or a plain
//! directory on the scratch's disk filesystem (what the agent must refuse, with a warning).

use std::path::{Path, PathBuf};

use crate::error::{FixtureError, Result};
use crate::mount::Mount;
use crate::scratch::Scratch;

/// Name of the journal file the agent keeps in its state directory.
pub const JOURNAL_FILE: &str = "freeze-journal.json";

/// A state directory; a tmpfs one is unmounted when dropped.
#[derive(Debug)]
pub struct StateDir {
    path: PathBuf,
    _mount: Option<Mount>,
}

impl StateDir {
    /// A fresh tmpfs at `<scratch>/<name>`.
    pub fn tmpfs(scratch: &Scratch, name: &str) -> Result<Self> {
        let path = scratch.join(name);
        let mount = Mount::tmpfs(&path)?;
        Ok(Self {
            path,
            _mount: Some(mount),
        })
    }

    /// A plain directory `<scratch>/<name>` on the disk filesystem holding the scratch
    /// directory (freezable, so the agent must not journal there).
    pub fn on_disk(scratch: &Scratch, name: &str) -> Result<Self> {
        Ok(Self {
            path: scratch.subdir(name)?,
            _mount: None,
        })
    }

    /// The directory, for `--state-dir`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The directory as a string argument.
    pub fn arg(&self) -> String {
        self.path.display().to_string()
    }

    /// The journal's contents, if the agent has one now.
    pub fn journal(&self) -> Result<Option<String>> {
        let p = self.path.join(JOURNAL_FILE);
        match std::fs::read_to_string(&p) {
            Ok(s) => Ok(Some(s)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(FixtureError::io(format!("read {}", p.display()), e)),
        }
    }

    /// Every file name in the directory (to show that nothing was written to it).
    pub fn files(&self) -> Result<Vec<String>> {
        let rd = std::fs::read_dir(&self.path)
            .map_err(|e| FixtureError::io(format!("read {}", self.path.display()), e))?;
        let mut names: Vec<String> = rd
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        Ok(names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mountinfo;

    #[test]
    fn tmpfs_state_dir_is_a_tmpfs_and_goes_away() {
        let s = Scratch::new().unwrap();
        let d = StateDir::tmpfs(&s, "state").unwrap();
        assert_eq!(mountinfo::at(d.path()).unwrap().unwrap().fstype, "tmpfs");
        assert_eq!(d.journal().unwrap(), None);
        std::fs::write(d.path().join(JOURNAL_FILE), "{}").unwrap();
        assert_eq!(d.journal().unwrap().as_deref(), Some("{}"));
        assert_eq!(d.files().unwrap(), vec![JOURNAL_FILE.to_string()]);
        let p = d.path().to_path_buf();
        drop(d);
        assert!(mountinfo::at(&p).unwrap().is_none());
    }

    #[test]
    fn disk_state_dir_is_not_a_mount() {
        let s = Scratch::new().unwrap();
        let d = StateDir::on_disk(&s, "state").unwrap();
        assert!(d.path().is_dir());
        assert!(mountinfo::at(d.path()).unwrap().is_none());
    }
}
