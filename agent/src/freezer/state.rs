//! The freezer's shared state: what the agent holds frozen, the watchdog deadline, history.
//!
//! Guarded by a plain mutex that is only ever held for a few field updates, never across an
//! ioctl, so Ping and FreezeStatus answer while a FIFREEZE is still syncing.

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::{Instant, SystemTime};

use super::journal::{Entry, EntryState, Journal};
use super::report::{FrozenInfo, FsIdentity, FsReport, WatchdogThaw};

/// One filesystem the agent froze, with the open directory used for FIFREEZE (thawing through
/// the same descriptor keeps working even if the path is over-mounted meanwhile).
#[derive(Debug)]
pub struct Held {
    /// Which filesystem.
    pub fs: FsIdentity,
    /// The descriptor FIFREEZE was issued on.
    pub fd: OwnedFd,
    /// When the freeze completed.
    pub since: SystemTime,
    /// Level in the dependency graph (0 froze first, thaws last).
    pub level: usize,
}

impl Held {
    /// What FreezeStatus shows of it.
    pub fn info(&self) -> FrozenInfo {
        FrozenInfo {
            fs: self.fs.clone(),
            since: self.since,
        }
    }
}

/// Everything the freezer remembers between operations.
#[derive(Debug, Default)]
pub struct State {
    /// Filesystems held frozen, in freeze order.
    pub held: Vec<Held>,
    /// Filesystems whose FIFREEZE is about to be issued or in flight.
    pub pending: Vec<FsIdentity>,
    /// Filesystems taken out of `held` by a thaw whose FITHAW has not returned yet: still
    /// frozen, and reported so.
    pub thawing: Vec<FrozenInfo>,
    /// When the current freeze began.
    pub frozen_since: Option<SystemTime>,
    /// Watchdog deadline, wall clock and monotonic.
    pub deadline: Option<(SystemTime, Instant)>,
    /// Bumped by every Quiesce and Thaw; a watchdog only fires for its own generation.
    pub generation: u64,
    /// The normalised mountpoint selection of the held freeze (empty = all eligible).
    pub selection: Vec<PathBuf>,
    /// The per-filesystem results of the held freeze (returned again by an idempotent Quiesce).
    pub results: Vec<FsReport>,
    /// True while a Quiesce or Thaw runs.
    pub in_progress: bool,
    /// Most recent watchdog thaw.
    pub last_watchdog: Option<WatchdogThaw>,
    /// Watchdog thaws since start.
    pub watchdog_thaws: u64,
    /// Filesystems thawed at start because a previous agent died holding them.
    pub recovered_thaws: u64,
}

impl State {
    /// Forgets the current freeze after everything was thawed.
    pub fn clear_freeze(&mut self) {
        self.frozen_since = None;
        self.deadline = None;
        self.selection.clear();
        self.results.clear();
        self.generation += 1;
    }
}

/// The mutex around [`State`], with lock poisoning treated as recoverable: the state is a set
/// of plain fields that stay consistent even if a holder panicked. The journal mirrors the
/// held and pending filesystems on a tmpfs so a successor agent can thaw them.
#[derive(Debug, Default)]
pub struct SharedState {
    state: Mutex<State>,
    journal: Journal,
}

impl SharedState {
    /// State backed by `journal`.
    pub fn new(journal: Journal) -> Self {
        Self {
            state: Mutex::default(),
            journal,
        }
    }

    /// Locks the state for a short update.
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The journal.
    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// Writes the held and pending filesystems to the journal (call with the lock held, after
    /// changing either; the journal lives on tmpfs, so this is quick and cannot block on a
    /// freeze).
    pub fn persist(&self, st: &State) {
        if !self.journal.enabled() {
            return;
        }
        let entries: Vec<Entry> = st
            .held
            .iter()
            .map(|h| Entry::new(&h.fs, EntryState::Frozen))
            .chain(
                st.pending
                    .iter()
                    .map(|f| Entry::new(f, EntryState::Pending)),
            )
            .collect();
        self.journal.write(&entries);
    }
}
