//! The freeze journal: what the agent is freezing and holds frozen, kept on a non-freezable
//! filesystem (tmpfs under `/run`) so that an agent that dies while holding a freeze (SIGKILL,
//! panic, OOM) is followed by one that thaws exactly those filesystems and no others.
//!
//! Entries are written before each FIFREEZE as `pending`, turned into `frozen` when it
//! succeeds, dropped when the filesystem turns out to be frozen by someone else (EBUSY) or is
//! thawed. Writes go to a temporary file renamed over the journal (atomic on tmpfs). The
//! journal is refused on a filesystem that could itself be frozen: writing there during a
//! freeze would hang the agent (open-vm-tools#650).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::report::FsIdentity;
use crate::mounts::DevId;

/// File name inside the state directory.
pub const JOURNAL_FILE: &str = "freeze-journal.json";

/// Where an entry stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryState {
    /// FIFREEZE is about to be issued or in flight.
    Pending,
    /// FIFREEZE succeeded; the agent holds it.
    Frozen,
}

/// One filesystem in the journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Mountpoint the agent froze through.
    pub mount_point: PathBuf,
    /// Device id `maj:min`, checked again before a recovery thaw.
    pub dev: String,
    /// Filesystem type, for the log.
    pub fstype: String,
    /// Mount id, checked again before a recovery thaw.
    #[serde(default)]
    pub mount_id: Option<u32>,
    /// Pending or frozen.
    pub state: EntryState,
}

impl Entry {
    /// A journal entry for a filesystem.
    pub fn new(fs: &FsIdentity, state: EntryState) -> Self {
        Self {
            mount_point: fs.mount_point.clone(),
            dev: fs.dev.to_string(),
            fstype: fs.fstype.clone(),
            mount_id: Some(fs.mount_id),
            state,
        }
    }

    /// The device id, if it parses.
    pub fn dev_id(&self) -> Option<DevId> {
        self.dev.parse().ok()
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Document {
    /// Boot the journal was written in; a journal from another boot is stale.
    boot_id: String,
    /// Pid of the agent that wrote it.
    pid: u32,
    entries: Vec<Entry>,
}

/// Why the journal cannot be used; the agent then keeps state in memory only, with a warning.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The directory could not be created or inspected.
    #[error("state directory {0}: {1}")]
    Io(PathBuf, std::io::Error),
    /// Another live agent holds the directory's lock: its journal is not ours to recover.
    #[error("state directory {dir} is in use by another agent (pid {pid}); not recovering or journalling")]
    InUse {
        /// The directory.
        dir: PathBuf,
        /// The pid recorded by the lock holder.
        pid: String,
    },
    /// The directory is on a filesystem that could be frozen.
    #[error("state directory {dir} is on {fstype}, which can be frozen; use a tmpfs such as /run")]
    Freezable {
        /// The directory.
        dir: PathBuf,
        /// Its filesystem type.
        fstype: String,
    },
}

/// The journal, or nothing when disabled.
#[derive(Debug, Default)]
pub struct Journal {
    path: Option<PathBuf>,
    boot_id: String,
    /// The state directory's lock, held for the agent's lifetime (released by the kernel
    /// when the agent dies, however it dies).
    _lock: Option<nix::fcntl::Flock<fs::File>>,
}

/// Lock file inside the state directory.
pub const LOCK_FILE: &str = "lock";

/// Takes the directory's lock without waiting, and records our pid in it.
fn lock(dir: &Path) -> Result<nix::fcntl::Flock<fs::File>, JournalError> {
    use nix::fcntl::{Flock, FlockArg};
    let io = |e: std::io::Error| JournalError::Io(dir.to_path_buf(), e);
    let path = dir.join(LOCK_FILE);
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io)?;
    let mut locked = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(l) => l,
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
            let pid = fs::read_to_string(&path)
                .unwrap_or_default()
                .trim()
                .to_string();
            return Err(JournalError::InUse {
                dir: dir.to_path_buf(),
                pid,
            });
        }
        Err((_, e)) => return Err(io(e.into())),
    };
    locked.set_len(0).map_err(io)?;
    locked
        .write_all(std::process::id().to_string().as_bytes())
        .map_err(io)?;
    Ok(locked)
}

fn boot_id() -> String {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

impl Journal {
    /// A journal that records nothing (state in memory only).
    pub fn disabled() -> Self {
        Self::default()
    }

    /// Opens the journal in `dir`, creating the directory (0700) if needed, and takes the
    /// directory's lock. Refuses a directory on a freezable filesystem, and one whose lock a
    /// live agent holds (its freeze is not a leftover to recover).
    pub fn open(dir: &Path) -> Result<Self, JournalError> {
        use std::os::unix::fs::DirBuilderExt;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| JournalError::Io(dir.to_path_buf(), e))?;
        let st = nix::sys::statfs::statfs(dir)
            .map_err(|e| JournalError::Io(dir.to_path_buf(), e.into()))?;
        let t = st.filesystem_type();
        if t != nix::sys::statfs::TMPFS_MAGIC && t.0 != 0x8584_58f6 {
            return Err(JournalError::Freezable {
                dir: dir.to_path_buf(),
                fstype: format!("{:#x}", t.0),
            });
        }
        let lock = lock(dir)?;
        Ok(Self {
            path: Some(dir.join(JOURNAL_FILE)),
            boot_id: boot_id(),
            _lock: Some(lock),
        })
    }

    /// The state directory (checked non-freezable and locked), when the journal is enabled.
    pub fn dir(&self) -> Option<&Path> {
        self.path.as_deref().and_then(Path::parent)
    }

    /// True when entries are persisted.
    pub fn enabled(&self) -> bool {
        self.path.is_some()
    }

    /// Replaces the journal with `entries` (removes it when empty). Failures are logged: a
    /// journal that cannot be written must not fail a freeze.
    pub fn write(&self, entries: &[Entry]) {
        let Some(path) = &self.path else { return };
        if entries.is_empty() {
            if let Err(e) = fs::remove_file(path) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(path = %path.display(), error = %e, "cannot remove freeze journal");
                }
            }
            return;
        }
        let doc = Document {
            boot_id: self.boot_id.clone(),
            pid: std::process::id(),
            entries: entries.to_vec(),
        };
        let tmp = path.with_extension("tmp");
        let res = (|| -> std::io::Result<()> {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(&serde_json::to_vec(&doc)?)?;
            fs::rename(&tmp, path)
        })();
        if let Err(e) = res {
            tracing::warn!(path = %path.display(), error = %e, "cannot write freeze journal");
        }
    }

    /// Entries a previous agent left behind in this boot (empty if none or stale).
    pub fn leftovers(&self) -> Vec<Entry> {
        let Some(path) = &self.path else {
            return Vec::new();
        };
        let Ok(bytes) = fs::read(path) else {
            return Vec::new();
        };
        match serde_json::from_slice::<Document>(&bytes) {
            Ok(doc) if doc.boot_id == self.boot_id => doc.entries,
            Ok(_) => {
                tracing::info!(path = %path.display(), "ignoring a freeze journal from another boot");
                Vec::new()
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "unreadable freeze journal ignored");
                Vec::new()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fs(p: &str) -> FsIdentity {
        FsIdentity {
            mount_point: p.into(),
            fstype: "ext4".into(),
            source: "/dev/loop9".into(),
            dev: DevId { major: 7, minor: 9 },
            mount_id: 31,
        }
    }

    fn tmpfs_dir() -> Option<tempfile::TempDir> {
        // /dev/shm is a tmpfs on Debian; skip quietly elsewhere.
        tempfile::tempdir_in("/dev/shm").ok()
    }

    #[test]
    fn round_trip_and_removal() {
        let Some(dir) = tmpfs_dir() else { return };
        let j = Journal::open(dir.path()).unwrap();
        assert!(j.leftovers().is_empty());
        let entries = vec![
            Entry::new(&fs("/a"), EntryState::Frozen),
            Entry::new(&fs("/b"), EntryState::Pending),
        ];
        j.write(&entries);
        assert_eq!(j.leftovers(), entries);
        assert_eq!(entries[0].dev_id(), Some(DevId { major: 7, minor: 9 }));
        j.write(&[]);
        assert!(!dir.path().join(JOURNAL_FILE).exists());
    }

    #[test]
    fn a_second_journal_on_a_locked_directory_is_refused_until_the_first_is_gone() {
        let Some(dir) = tmpfs_dir() else { return };
        let first = Journal::open(dir.path()).unwrap();
        first.write(&[Entry::new(&fs("/a"), EntryState::Frozen)]);
        match Journal::open(dir.path()) {
            Err(JournalError::InUse { pid, .. }) => assert_eq!(pid, std::process::id().to_string()),
            other => panic!("expected InUse, got {other:?}"),
        }
        drop(first);
        let second = Journal::open(dir.path()).unwrap();
        assert_eq!(
            second.leftovers().len(),
            1,
            "a dead agent's journal is recoverable"
        );
    }

    #[test]
    fn refuses_a_freezable_directory() {
        // /var/tmp lives on the root filesystem here (ext4): not acceptable for the journal.
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        match Journal::open(dir.path()) {
            Err(JournalError::Freezable { .. }) => {}
            other => panic!("expected Freezable, got {other:?}"),
        }
    }

    #[test]
    fn stale_or_garbage_journals_are_ignored() {
        let Some(dir) = tmpfs_dir() else { return };
        let j = Journal::open(dir.path()).unwrap();
        fs::write(dir.path().join(JOURNAL_FILE), b"{not json").unwrap();
        assert!(j.leftovers().is_empty());
        let other_boot = r#"{"boot_id":"00000000-0000-0000-0000-000000000000","pid":1,"entries":[{"mount_point":"/a","dev":"7:9","fstype":"ext4","state":"frozen"}]}"#;
        fs::write(dir.path().join(JOURNAL_FILE), other_boot).unwrap();
        assert!(j.leftovers().is_empty());
    }
}
