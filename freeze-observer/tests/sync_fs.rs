//! The sync_fs freeze source against ground truth: freezes of ext4, XFS and btrfs made by
//! `fsfreeze` and `xfs_freeze` with no writer waiting (what the `none` hook cannot see), each
//! with its freezer's pid and its duration, and back-to-back freezes faster than the poll, all
//! counted. Root only; every freeze is undone by a guard, also on panic (see `common`).

mod common;

use std::time::{Duration, Instant};

use common::{
    observer_with, skip_unless_root, wait_for, within, FreezeGuard, FsKind, LoopFs, SERIAL,
};
use freeze_observer::{FreezeSource, LoadOptions, ObserverHandle, Origin};

/// How late the poll may see a thaw (10 ms period) plus scheduling on a busy machine.
const TOLERANCE: Duration = Duration::from_millis(30);

async fn sync_fs_observer() -> ObserverHandle {
    let obs = observer_with(LoadOptions {
        freeze_source: Some(FreezeSource::SyncFs),
        ..LoadOptions::default()
    })
    .await;
    assert_eq!(obs.freeze_source(), FreezeSource::SyncFs);
    obs
}

/// One freeze of `fs` by `tool` with nothing writing: seen while it lasts, with the
/// freezer, then its thaw with a duration that matches what was measured here.
async fn freeze_without_writers_is_seen(obs: &ObserverHandle, fs: &LoopFs, tool: &str) {
    let before = obs.snapshot().freezes_by_others;
    let started = Instant::now();
    let (guard, pid) = fs.freeze_by(tool);
    let frozen_at = Instant::now();
    let seen = wait_for(Duration::from_secs(2), || {
        obs.snapshot()
            .filesystem(&fs.mountpoint)
            .is_some_and(|f| f.frozen.is_some())
    })
    .await;
    let snap = obs.snapshot();
    let state = snap.filesystem(&fs.mountpoint);
    assert!(seen, "{tool} freeze not seen: {snap:#?}");
    let freeze = state.unwrap().frozen.clone().unwrap();
    assert_eq!(freeze.origin, Origin::Other, "{freeze:?}");
    let by = freeze.by.expect("the freezer is known");
    if tool == "xfs_freeze" {
        // A shell script: the freeze is made by the xfs_io it starts.
        assert_eq!(by.comm, "xfs_io", "{by:?}");
    } else {
        assert_eq!((by.pid, by.comm.as_str()), (pid, tool), "{by:?}");
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    let thaw_started = Instant::now();
    guard.thaw();
    let frozen_for = (thaw_started - frozen_at)..=started.elapsed();
    let thawed = wait_for(Duration::from_secs(2), || {
        obs.snapshot()
            .filesystem(&fs.mountpoint)
            .is_some_and(|f| f.frozen.is_none())
    })
    .await;
    let snap = obs.snapshot();
    assert!(thawed, "thaw after {tool} not seen: {snap:#?}");
    let state = snap.filesystem(&fs.mountpoint).unwrap();
    let last = state.last_freeze.as_ref().expect("completed freeze");
    let took = last.duration.expect("duration known");
    assert!(
        within(took, &frozen_for, TOLERANCE),
        "{tool}: freeze of {took:?} reported, {frozen_for:?} measured"
    );
    assert_eq!(snap.freezes_by_others, before + 1, "{snap:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freezes_with_no_writer_are_seen_on_ext4_xfs_and_btrfs() {
    if skip_unless_root() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let ext4 = LoopFs::with_kind("sync-ext4", FsKind::Ext4);
    let xfs = LoopFs::with_kind("sync-xfs", FsKind::Xfs);
    let btrfs = LoopFs::with_kind("sync-btrfs", FsKind::Btrfs);
    let obs = sync_fs_observer().await;
    freeze_without_writers_is_seen(&obs, &ext4, "fsfreeze").await;
    freeze_without_writers_is_seen(&obs, &xfs, "fsfreeze").await;
    freeze_without_writers_is_seen(&obs, &xfs, "xfs_freeze").await;
    freeze_without_writers_is_seen(&obs, &btrfs, "fsfreeze").await;
    let snap = obs.snapshot();
    assert_eq!(snap.freezes_by_agent, 0, "{snap:#?}");
    assert_eq!(snap.failed_freezes, 0, "{snap:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn back_to_back_freezes_faster_than_the_poll_are_all_counted() {
    if skip_unless_root() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let fs = LoopFs::new("sync-burst");
    let obs = sync_fs_observer().await;
    const FREEZES: u64 = 20;
    for _ in 0..FREEZES {
        // Freeze and thaw in one process, with no pause: the poll sees few of these frozen.
        let mp = fs.mountpoint.to_str().unwrap().to_owned();
        let status = std::process::Command::new("sh")
            .args(["-c", "fsfreeze -f \"$1\" && fsfreeze -u \"$1\"", "sh", &mp])
            .status()
            .expect("sh");
        assert!(status.success());
    }
    let all = wait_for(Duration::from_secs(3), || {
        obs.snapshot()
            .filesystem(&fs.mountpoint)
            .is_some_and(|f| f.freezes_total == FREEZES && f.frozen.is_none())
    })
    .await;
    let snap = obs.snapshot();
    assert!(all, "expected {FREEZES} freezes, each thawed: {snap:#?}");
    assert_eq!(snap.freezes_by_others, FREEZES, "{snap:#?}");
    let last = snap
        .filesystem(&fs.mountpoint)
        .and_then(|f| f.last_freeze.clone())
        .expect("last freeze");
    assert_eq!(last.by.map(|t| t.comm), Some("fsfreeze".to_owned()));
}

/// The observer's own process (the agent) freezing: its freezes are polled only every 200 ms,
/// and `poll_now` after its thaw makes the end seen at once, so the duration reported is as
/// exact as for other freezes. Three rounds: a thaw left to the slow poll would be seen up to
/// 200 ms late, beyond the tolerance in most of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agents_thaw_is_seen_at_once_when_it_asks_for_a_poll() {
    if skip_unless_root() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let fs = LoopFs::new("sync-own");
    let obs = sync_fs_observer().await;
    for round in 0..3 {
        let before = obs.snapshot().freezes_by_agent;
        let started = Instant::now();
        // FIFREEZE from this process, which the observer takes for the agent.
        let guard = FreezeGuard::here(&fs.mountpoint);
        let frozen_at = Instant::now();
        let seen = wait_for(Duration::from_secs(2), || {
            obs.snapshot()
                .filesystem(&fs.mountpoint)
                .and_then(|f| f.frozen.clone())
                .is_some_and(|f| f.origin == Origin::Agent)
        })
        .await;
        assert!(
            seen,
            "round {round}: own freeze not seen: {:#?}",
            obs.snapshot()
        );
        tokio::time::sleep(Duration::from_millis(120)).await;
        let thaw_started = Instant::now();
        guard.thaw();
        obs.poll_now();
        let frozen_for = (thaw_started - frozen_at)..=started.elapsed();
        let thawed = wait_for(Duration::from_secs(2), || {
            obs.snapshot()
                .filesystem(&fs.mountpoint)
                .is_some_and(|f| f.frozen.is_none())
        })
        .await;
        let snap = obs.snapshot();
        assert!(thawed, "round {round}: thaw not seen: {snap:#?}");
        let last = snap.filesystem(&fs.mountpoint).unwrap().last_freeze.clone();
        let took = last.and_then(|l| l.duration).expect("duration known");
        assert!(
            within(took, &frozen_for, TOLERANCE),
            "round {round}: freeze of {took:?} reported, {frozen_for:?} measured"
        );
        assert_eq!(snap.freezes_by_agent, before + 1, "{snap:#?}");
    }
}
