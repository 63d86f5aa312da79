//! The frozen-filesystem table: one entry per superblock seen (its public state plus the
//! indexes behind it), the observer-wide counters, and the snapshot taken of them.
//! Events are applied to it in `apply.rs`.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    path::PathBuf,
};

use agent_common::Event;

use super::{BlockedWriter, DevId, FilesystemState, ObserverSnapshot, Origin, Stall};
use crate::loader::{ContentionHook, FreezeSource};

/// Per-superblock bookkeeping (the public [`FilesystemState`] plus indexes).
#[derive(Debug)]
pub(super) struct FsEntry {
    pub(super) public: FilesystemState,
    pub(super) blocked: BTreeMap<u32, BlockedWriter>,
    pub(super) stalls: VecDeque<Stall>,
    /// `public.frozen` is known only from a blocked writer (or a start-up probe without a
    /// freeze hook): no thaw event will come, so a writer resuming ends it.
    pub(super) inferred: bool,
}

/// The observer's mutable state; events go in, snapshots and [`ObserverEvent`](super::ObserverEvent)s come out.
#[derive(Debug)]
pub(crate) struct ObserverState {
    agent_pid: u32,
    pub(super) freeze_source: FreezeSource,
    freeze_source_reason: String,
    contention_hook: ContentionHook,
    by_sb: HashMap<u64, FsEntry>,
    pub(super) freezes_by_agent: u64,
    pub(super) freezes_by_others: u64,
    pub(super) failed_freezes: u64,
    undecodable_events: u64,
}

impl ObserverState {
    /// Empty state for an observer whose freezes come from `freeze_source`.
    pub(crate) fn new(
        agent_pid: u32,
        freeze_source: FreezeSource,
        freeze_source_reason: String,
        contention_hook: ContentionHook,
    ) -> Self {
        Self {
            agent_pid,
            freeze_source,
            freeze_source_reason,
            contention_hook,
            by_sb: HashMap::new(),
            freezes_by_agent: 0,
            freezes_by_others: 0,
            failed_freezes: 0,
            undecodable_events: 0,
        }
    }

    /// Counts a ring-buffer record that could not be decoded.
    pub(crate) fn note_undecodable(&mut self) {
        self.undecodable_events += 1;
    }

    /// Device ids of superblocks whose mountpoint is not known yet.
    pub(crate) fn wants_mountpoint(&self, ev: &Event) -> bool {
        self.by_sb
            .get(&ev.sb)
            .is_none_or(|fs| fs.public.mountpoint.is_none())
    }

    pub(super) fn origin_of(&self, tgid: u32) -> Origin {
        if tgid == self.agent_pid {
            Origin::Agent
        } else {
            Origin::Other
        }
    }

    pub(super) fn entry(&mut self, ev: &Event, mountpoint: Option<PathBuf>) -> &mut FsEntry {
        let fs = self.by_sb.entry(ev.sb).or_insert_with(|| FsEntry {
            public: FilesystemState {
                dev: DevId {
                    major: ev.dev_major(),
                    minor: ev.dev_minor(),
                },
                mountpoint: None,
                fstype: ev.fstype_str().to_owned(),
                sb_id: ev.sb_id_str().to_owned(),
                frozen: None,
                blocked_writers: Vec::new(),
                stalls: Vec::new(),
                stalls_total: 0,
                freezes_total: 0,
                last_freeze: None,
            },
            blocked: BTreeMap::new(),
            stalls: VecDeque::new(),
            inferred: false,
        });
        if fs.public.mountpoint.is_none() {
            fs.public.mountpoint = mountpoint;
        }
        fs
    }

    /// A consistent copy of everything, filesystems ordered by device id.
    pub(crate) fn snapshot(&self) -> ObserverSnapshot {
        let mut filesystems: Vec<FilesystemState> = self
            .by_sb
            .values()
            .map(|fs| {
                let mut public = fs.public.clone();
                public.blocked_writers = fs.blocked.values().cloned().collect();
                public.stalls = fs.stalls.iter().cloned().collect();
                public
            })
            .collect();
        filesystems.sort_by(|a, b| a.dev.cmp(&b.dev).then(a.sb_id.cmp(&b.sb_id)));
        ObserverSnapshot {
            freeze_source: self.freeze_source,
            freeze_source_reason: self.freeze_source_reason.clone(),
            contention_hook: self.contention_hook,
            filesystems,
            freezes_by_agent: self.freezes_by_agent,
            freezes_by_others: self.freezes_by_others,
            failed_freezes: self.failed_freezes,
            undecodable_events: self.undecodable_events,
        }
    }
}
