//! Freezing from outside the agent with `fsfreeze`, to play "someone else froze it", and a
//! probe that tells whether a filesystem is frozen right now.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use crate::cmd::{run, run_checked, run_ok};
use crate::error::{FixtureError, Result};

/// A filesystem frozen by the test itself (not by the agent); thawed again on drop.
#[derive(Debug)]
pub struct ExternalFreeze {
    path: PathBuf,
    pid: u32,
}

impl ExternalFreeze {
    /// `fsfreeze -f path`.
    pub fn freeze(path: &Path) -> Result<Self> {
        let out = run_checked("fsfreeze", &[OsStr::new("-f"), path.as_os_str()])?;
        Ok(Self {
            path: path.to_path_buf(),
            pid: out.pid,
        })
    }

    /// Process id of the `fsfreeze -f` that froze it (exited since): the freezer the eBPF
    /// observer should name.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// `fsfreeze -u path` now (also happens on drop).
    pub fn thaw(self) -> Result<()> {
        run_ok("fsfreeze", &[OsStr::new("-u"), self.path.as_os_str()]).map(drop)
    }
}

impl Drop for ExternalFreeze {
    fn drop(&mut self) {
        let _ = run("fsfreeze", &[OsStr::new("-u"), self.path.as_os_str()]);
    }
}

/// Whether the filesystem at `path` is frozen now. FIFREEZE on a frozen filesystem fails
/// with EBUSY; if it succeeds instead the filesystem was not frozen, and the probe thaws it
/// again at once.
pub fn is_frozen(path: &Path) -> Result<bool> {
    let out = run("fsfreeze", &[OsStr::new("-f"), path.as_os_str()])?;
    if out.ok() {
        run_ok("fsfreeze", &[OsStr::new("-u"), path.as_os_str()])?;
        return Ok(false);
    }
    if out.stderr.contains("busy") {
        return Ok(true);
    }
    Err(FixtureError::Command {
        cmd: format!("fsfreeze -f {}", path.display()),
        status: out.status.to_string(),
        stderr: out.stderr.trim().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loopfs::{FsType, LoopFs};
    use crate::scratch::Scratch;

    #[test]
    fn probe_sees_an_external_freeze_and_its_thaw() {
        let s = Scratch::new().unwrap();
        let fs = LoopFs::new(&s, "a", FsType::Ext4, 16).unwrap();
        assert!(!is_frozen(fs.mountpoint()).unwrap());
        let f = ExternalFreeze::freeze(fs.mountpoint()).unwrap();
        assert!(is_frozen(fs.mountpoint()).unwrap());
        f.thaw().unwrap();
        assert!(!is_frozen(fs.mountpoint()).unwrap());
    }
}
