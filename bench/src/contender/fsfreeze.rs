//! The floor: `fsfreeze -f` on each filesystem in turn, then `fsfreeze -u` in the same order,
//! one process per call, exactly what a shell loop around util-linux would do.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::{Contender, ContenderKind};
use crate::error::BenchError;
use crate::process::Memory;
use crate::scratch::{run, Scratch};

/// Sequential `fsfreeze` calls.
#[derive(Debug)]
pub struct FsfreezeLoop {
    bin: PathBuf,
    mount_root: PathBuf,
    frozen: Vec<PathBuf>,
}

impl FsfreezeLoop {
    /// Uses the `fsfreeze` binary at `bin`, only ever on mounts below the scratch mount root.
    pub fn new(bin: &Path, scratch: &Scratch) -> Self {
        Self {
            bin: bin.to_owned(),
            mount_root: scratch.mount_root(),
            frozen: Vec::new(),
        }
    }

    fn call(&self, flag: &str, mount: &Path) -> Result<(), BenchError> {
        if !mount.starts_with(&self.mount_root) || mount == self.mount_root {
            return Err(BenchError::OutsideScratch(mount.to_owned()));
        }
        run(Command::new(&self.bin).arg(flag).arg(mount)).map(drop)
    }

    fn thaw_frozen(&mut self) -> Result<(), BenchError> {
        let mut first_err = None;
        for m in std::mem::take(&mut self.frozen) {
            if let Err(e) = self.call("-u", &m) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

impl Contender for FsfreezeLoop {
    fn kind(&self) -> ContenderKind {
        ContenderKind::Fsfreeze
    }

    fn quiesce(&mut self, mounts: &[PathBuf]) -> Result<(), BenchError> {
        for m in mounts {
            if let Err(e) = self.call("-f", m) {
                let _ = self.thaw_frozen();
                return Err(e);
            }
            self.frozen.push(m.clone());
        }
        Ok(())
    }

    fn thaw(&mut self) -> Result<(), BenchError> {
        self.thaw_frozen()
    }

    fn ping(&mut self) -> Option<Result<(), BenchError>> {
        None
    }

    fn memory(&self) -> Option<Memory> {
        None
    }

    fn cpu_time(&self) -> Option<Duration> {
        None
    }
}

impl Drop for FsfreezeLoop {
    fn drop(&mut self) {
        let _ = self.thaw_frozen();
    }
}
