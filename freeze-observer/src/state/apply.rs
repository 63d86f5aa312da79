//! Applying one kernel event to the table: freezes (completed, found at start, under way),
//! thaws, writers blocking and resuming; each change comes out as an [`ObserverEvent`].

use std::{path::PathBuf, time::Duration};

use agent_common::{Event, EventKind, SB_FREEZE_COMPLETE};

use super::clock::Clock;
use super::table::ObserverState;
use super::{
    BlockedWriter, CompletedFreeze, FreezeInfo, ObserverEvent, Origin, Stall, TaskRef, WriteLevel,
    STALL_HISTORY,
};
use crate::loader::FreezeSource;

fn task_of(ev: &Event) -> TaskRef {
    TaskRef {
        pid: ev.tgid,
        tid: ev.tid,
        comm: ev.comm_str().to_owned(),
    }
}

impl ObserverState {
    /// Applies one kernel event; `mountpoint` is where its device is mounted, if known.
    pub(crate) fn apply(
        &mut self,
        ev: &Event,
        mountpoint: Option<PathBuf>,
    ) -> Option<ObserverEvent> {
        let kind = ev.event_kind()?;
        let origin = self.origin_of(ev.tgid);
        match kind {
            EventKind::Freeze if ev.ret != 0 => {
                self.failed_freezes += 1;
                let fs = self.entry(ev, mountpoint);
                Some(ObserverEvent::FreezeFailed {
                    dev: fs.public.dev,
                    mountpoint: fs.public.mountpoint.clone(),
                    by: task_of(ev),
                    origin,
                    errno: -ev.ret,
                })
            }
            // A freeze under way counts as frozen from its start: writers are shut out from
            // level 1 on. Its completion (a Freeze event) then only counts it.
            EventKind::Freeze | EventKind::FrozenFound | EventKind::FreezeBegin => {
                let found = kind == EventKind::FrozenFound;
                if kind == EventKind::Freeze {
                    match origin {
                        Origin::Agent => self.freezes_by_agent += 1,
                        _ => self.freezes_by_others += 1,
                    }
                }
                let no_hook = self.freeze_source == FreezeSource::None;
                let fs = self.entry(ev, mountpoint);
                if fs.public.frozen.is_some() && !fs.inferred {
                    // A nested freeze by another holder: the first one still defines "since".
                    return None;
                }
                fs.inferred = found && no_hook;
                let freeze = if found {
                    FreezeInfo::unknown()
                } else {
                    FreezeInfo {
                        since: Some(Clock::wall(ev.ts_ns)),
                        since_monotonic_ns: Some(ev.ts_ns),
                        by: Some(task_of(ev)),
                        origin,
                    }
                };
                fs.public.frozen = Some(freeze.clone());
                Some(ObserverEvent::Frozen {
                    dev: fs.public.dev,
                    mountpoint: fs.public.mountpoint.clone(),
                    freeze,
                })
            }
            EventKind::Thaw => {
                if ev.ret != 0 || ev.level == SB_FREEZE_COMPLETE {
                    // Failed, or another freeze holder keeps the filesystem frozen.
                    return None;
                }
                let fs = self.entry(ev, mountpoint);
                fs.inferred = false;
                let freeze = fs.public.frozen.take();
                let completed = CompletedFreeze {
                    by: freeze.as_ref().and_then(|f| f.by.clone()),
                    origin: freeze.as_ref().map_or(Origin::Unknown, |f| f.origin),
                    thawed_by: task_of(ev),
                    duration: freeze
                        .as_ref()
                        .and_then(|f| f.since_monotonic_ns)
                        .map(|since| Duration::from_nanos(ev.ts_ns.saturating_sub(since))),
                    thawed_at: Clock::wall(ev.ts_ns),
                };
                fs.public.freezes_total += 1;
                fs.public.last_freeze = Some(completed.clone());
                Some(ObserverEvent::Thawed {
                    dev: fs.public.dev,
                    mountpoint: fs.public.mountpoint.clone(),
                    freeze: completed,
                })
            }
            EventKind::StallBegin => {
                let level = WriteLevel::from_level(ev.level)?;
                let fs = self.entry(ev, mountpoint);
                let writer = BlockedWriter {
                    task: task_of(ev),
                    level,
                    since: Clock::wall(ev.start_ns),
                    since_monotonic_ns: ev.start_ns,
                };
                fs.blocked.insert(ev.tid, writer.clone());
                if fs.public.frozen.is_none() {
                    // Frozen by a path no hook sees (or no freeze hook at all): the kernel
                    // checked the frozen level before reporting this writer.
                    fs.public.frozen = Some(FreezeInfo::unknown());
                    fs.inferred = true;
                }
                Some(ObserverEvent::WriterBlocked {
                    dev: fs.public.dev,
                    mountpoint: fs.public.mountpoint.clone(),
                    writer,
                })
            }
            EventKind::StallEnd => {
                let level = WriteLevel::from_level(ev.level)?;
                let fs = self.entry(ev, mountpoint);
                fs.blocked.remove(&ev.tid);
                if fs.inferred && fs.blocked.is_empty() {
                    // The last writer got its level back: the filesystem was thawed. (While
                    // another writer is still blocked it is frozen again, or still: a writer
                    // woken by one thaw may report after a writer blocked by the next freeze.)
                    fs.public.frozen = None;
                    fs.inferred = false;
                }
                let stall = Stall {
                    task: task_of(ev),
                    level,
                    duration: Duration::from_nanos(ev.ts_ns.saturating_sub(ev.start_ns)),
                    ended: Clock::wall(ev.ts_ns),
                };
                if fs.stalls.len() == STALL_HISTORY {
                    fs.stalls.pop_front();
                }
                fs.stalls.push_back(stall.clone());
                fs.public.stalls_total += 1;
                Some(ObserverEvent::WriterResumed {
                    dev: fs.public.dev,
                    mountpoint: fs.public.mountpoint.clone(),
                    stall,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loader::ContentionHook;
    use crate::state::DevId;
    use agent_common::EventSource;

    const AGENT: u32 = 100;

    fn state() -> ObserverState {
        ObserverState::new(
            AGENT,
            FreezeSource::IoctlTracepoints,
            "test".into(),
            ContentionHook::TpBtf,
        )
    }

    fn ev(kind: EventKind, tgid: u32, ts_ms: u64) -> Event {
        let mut e = Event::ZERO;
        e.kind = kind as u32;
        e.source = EventSource::IoctlTracepoint as u32;
        e.tgid = tgid;
        e.tid = tgid;
        e.ts_ns = ts_ms * 1_000_000;
        e.sb = 0xffff_8880_0000_1000;
        e.dev = (7 << 20) | 3;
        e.comm[..8].copy_from_slice(b"fsfreeze");
        e.fstype[..4].copy_from_slice(b"ext4");
        e.sb_id[..5].copy_from_slice(b"loop3");
        e
    }

    #[test]
    fn freeze_then_thaw_by_another_process() {
        let mut st = state();
        let mut f = ev(EventKind::Freeze, 42, 1_000);
        f.level = 4;
        let out = st.apply(&f, Some("/mnt/a".into())).expect("event");
        assert!(
            matches!(out, ObserverEvent::Frozen { ref freeze, .. } if freeze.origin == Origin::Other)
        );
        let snap = st.snapshot();
        let fs = snap.filesystem(std::path::Path::new("/mnt/a")).expect("fs");
        assert_eq!(fs.dev, DevId { major: 7, minor: 3 });
        assert_eq!(
            fs.frozen.as_ref().unwrap().by.as_ref().unwrap().comm,
            "fsfreeze"
        );
        assert_eq!(snap.freezes_by_others, 1);

        let t = ev(EventKind::Thaw, 43, 1_750);
        let Some(ObserverEvent::Thawed { freeze, .. }) = st.apply(&t, None) else {
            panic!("expected a thaw");
        };
        assert_eq!(freeze.duration, Some(Duration::from_millis(750)));
        assert_eq!(freeze.origin, Origin::Other);
        assert_eq!(freeze.thawed_by.pid, 43);
        let fs = &st.snapshot().filesystems[0];
        assert!(fs.frozen.is_none());
        assert_eq!(fs.freezes_total, 1);
    }

    #[test]
    fn agent_freezes_are_attributed_to_the_agent() {
        let mut st = state();
        let mut f = ev(EventKind::Freeze, AGENT, 5);
        f.level = 4;
        st.apply(&f, None);
        let snap = st.snapshot();
        assert_eq!(snap.freezes_by_agent, 1);
        assert_eq!(
            snap.filesystems[0].frozen.as_ref().unwrap().origin,
            Origin::Agent
        );
    }

    #[test]
    fn failed_freeze_and_partial_thaw_leave_state_alone() {
        let mut st = state();
        let mut f = ev(EventKind::Freeze, 42, 1);
        f.ret = -16;
        assert!(matches!(
            st.apply(&f, None),
            Some(ObserverEvent::FreezeFailed { errno: 16, .. })
        ));
        assert!(st.snapshot().filesystems[0].frozen.is_none());
        let mut f = ev(EventKind::Freeze, 42, 2);
        f.level = 4;
        st.apply(&f, None);
        let mut t = ev(EventKind::Thaw, 42, 3);
        t.level = 4; // another holder keeps it frozen
        assert!(st.apply(&t, None).is_none());
        assert!(st.snapshot().filesystems[0].frozen.is_some());
    }

    #[test]
    fn stalls_move_from_blocked_to_completed() {
        let mut st = state();
        let mut b = ev(EventKind::StallBegin, 7, 10);
        b.level = 2;
        b.start_ns = b.ts_ns;
        b.tid = 8;
        st.apply(&b, None);
        let snap = st.snapshot();
        assert_eq!(snap.filesystems[0].blocked_writers.len(), 1);
        assert_eq!(
            snap.filesystems[0].blocked_writers[0].level,
            WriteLevel::PageFault
        );
        let mut e = ev(EventKind::StallEnd, 7, 1_010);
        e.level = 2;
        e.tid = 8;
        e.start_ns = 10_000_000;
        let Some(ObserverEvent::WriterResumed { stall, .. }) = st.apply(&e, None) else {
            panic!("expected a resume");
        };
        assert_eq!(stall.duration, Duration::from_secs(1));
        assert_eq!((stall.task.pid, stall.task.tid), (7, 8));
        let fs = &st.snapshot().filesystems[0];
        assert!(fs.blocked_writers.is_empty());
        assert_eq!(fs.stalls_total, 1);
        assert_eq!(fs.stalls[0].level, WriteLevel::PageFault);
    }

    #[test]
    fn found_frozen_has_unknown_origin_and_no_duration_on_thaw() {
        let mut st = state();
        let mut f = ev(EventKind::FrozenFound, 999, 1);
        f.level = 4;
        st.apply(&f, None);
        assert_eq!(
            st.snapshot().filesystems[0].frozen.as_ref().unwrap().origin,
            Origin::Unknown
        );
        assert_eq!(st.snapshot().freezes_by_others, 0);
        let Some(ObserverEvent::Thawed { freeze, .. }) = st.apply(&ev(EventKind::Thaw, 5, 9), None)
        else {
            panic!("expected a thaw");
        };
        assert_eq!(freeze.duration, None);
    }

    #[test]
    fn stall_history_is_bounded() {
        let mut st = state();
        for i in 0..(STALL_HISTORY as u64 + 10) {
            let mut e = ev(EventKind::StallEnd, 7, i + 1);
            e.level = 1;
            e.start_ns = i * 1_000_000;
            st.apply(&e, None);
        }
        let fs = &st.snapshot().filesystems[0];
        assert_eq!(fs.stalls.len(), STALL_HISTORY);
        assert_eq!(fs.stalls_total, STALL_HISTORY as u64 + 10);
    }

    #[test]
    fn unknown_kinds_and_levels_are_ignored() {
        let mut st = state();
        let mut e = ev(EventKind::StallBegin, 7, 1);
        e.level = 9;
        assert!(st.apply(&e, None).is_none());
        e.kind = 77;
        assert!(st.apply(&e, None).is_none());
    }

    #[test]
    fn a_sync_fs_freeze_is_frozen_from_its_begin_and_counted_once_at_completion() {
        let mut st = ObserverState::new(
            AGENT,
            FreezeSource::SyncFs,
            String::new(),
            ContentionHook::RawTracepoint,
        );
        let mut begin = ev(EventKind::FreezeBegin, 42, 1_000);
        begin.source = EventSource::SyncFs as u32;
        let Some(ObserverEvent::Frozen { freeze, .. }) = st.apply(&begin, Some("/mnt/a".into()))
        else {
            panic!("a freeze under way is reported at once");
        };
        assert_eq!(freeze.by.as_ref().map(|t| t.pid), Some(42));
        assert_eq!(st.snapshot().freezes_by_others, 0, "not complete yet");
        let mut done = ev(EventKind::Freeze, 42, 1_012);
        done.source = EventSource::SyncFs as u32;
        assert_eq!(st.apply(&done, None), None, "already reported");
        assert_eq!(st.snapshot().freezes_by_others, 1);
        // The poll's thaw: no thawing task known.
        let mut thaw = ev(EventKind::Thaw, 0, 1_500);
        thaw.source = EventSource::Poll as u32;
        let Some(ObserverEvent::Thawed { freeze, .. }) = st.apply(&thaw, None) else {
            panic!("thaw not reported");
        };
        assert_eq!(
            freeze.duration,
            Some(Duration::from_millis(500)),
            "from the begin"
        );
        assert_eq!(freeze.origin, Origin::Other);
        let fs = &st.snapshot().filesystems[0];
        assert_eq!((fs.freezes_total, fs.frozen.is_none()), (1, true));
    }

    fn stall(kind: EventKind, ts_ms: u64) -> Event {
        let mut e = ev(kind, 7, ts_ms);
        e.level = 1;
        e.tid = 8;
        e.start_ns = 10_000_000;
        e
    }

    #[test]
    fn without_a_freeze_hook_a_blocked_writer_shows_the_freeze_until_it_resumes() {
        let mut st =
            ObserverState::new(AGENT, FreezeSource::None, "t".into(), ContentionHook::TpBtf);
        st.apply(&stall(EventKind::StallBegin, 10), Some("/mnt/a".into()));
        let fs = &st.snapshot().filesystems[0];
        let frozen = fs
            .frozen
            .as_ref()
            .expect("a blocked writer proves a freeze");
        assert_eq!((frozen.origin, frozen.since), (Origin::Unknown, None));
        st.apply(&stall(EventKind::StallEnd, 500), None);
        let fs = &st.snapshot().filesystems[0];
        assert!(fs.frozen.is_none(), "the writer resumed, so it was thawed");
        assert_eq!(fs.stalls_total, 1);
    }

    #[test]
    fn an_inferred_freeze_lasts_while_any_writer_is_blocked() {
        let mut st =
            ObserverState::new(AGENT, FreezeSource::None, "t".into(), ContentionHook::TpBtf);
        let mut other = stall(EventKind::StallBegin, 20);
        other.tid = 9;
        st.apply(&stall(EventKind::StallBegin, 10), Some("/mnt/a".into()));
        st.apply(&other, None);
        // The first writer resumes (woken by a thaw) after the second blocked (on the next
        // freeze): the filesystem is still frozen.
        st.apply(&stall(EventKind::StallEnd, 30), None);
        let fs = &st.snapshot().filesystems[0];
        assert!(fs.frozen.is_some(), "writer 9 still proves a freeze");
        other.kind = EventKind::StallEnd as u32;
        other.ts_ns = 40_000_000;
        st.apply(&other, None);
        assert!(st.snapshot().filesystems[0].frozen.is_none());
    }

    #[test]
    fn a_freeze_event_after_the_first_stall_replaces_the_inferred_freeze() {
        // With the ioctl hook the writer blocks inside FIFREEZE, before its exit event.
        let mut st = state();
        st.apply(&stall(EventKind::StallBegin, 10), None);
        let mut f = ev(EventKind::Freeze, 42, 20);
        f.level = 4;
        let out = st.apply(&f, None);
        assert!(
            matches!(out, Some(ObserverEvent::Frozen { ref freeze, .. }) if freeze.origin == Origin::Other)
        );
        st.apply(&stall(EventKind::StallEnd, 30), None);
        let fs = &st.snapshot().filesystems[0];
        assert_eq!(
            fs.frozen.as_ref().map(|f| f.origin),
            Some(Origin::Other),
            "a seen freeze ends with its thaw event, not with a writer"
        );
        let t = ev(EventKind::Thaw, 43, 40);
        assert!(matches!(
            st.apply(&t, None),
            Some(ObserverEvent::Thawed { .. })
        ));
        assert!(st.snapshot().filesystems[0].frozen.is_none());
    }
}
