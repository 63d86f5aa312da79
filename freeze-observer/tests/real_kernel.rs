//! Real-kernel tests: load the programs, freeze loop filesystems this test created, and check
//! what the observer reports against ground truth measured here. Root only; every freeze is
//! undone by a guard, also on panic (see `common`).

mod common;

use std::{
    os::fd::AsRawFd as _,
    sync::atomic::{AtomicBool, Ordering},
    sync::Arc,
    time::{Duration, Instant},
};

use common::{
    close_to, observer_with, skip_unless_root, wait_for, within, FreezeGuard, LoopFs, Writer,
    WriterKind, SERIAL,
};
use freeze_observer::{
    start, ContentionHook, EbpfMode, FreezeSource, LoadOptions, ObserverConfig, ObserverHandle,
    Origin, WriteLevel,
};

const TOLERANCE: Duration = Duration::from_millis(20);

async fn observer(probe_frozen: bool) -> ObserverHandle {
    observer_with(LoadOptions {
        probe_frozen,
        ..LoadOptions::default()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fsfreeze_and_four_kinds_of_writers_are_seen_exactly() {
    if skip_unless_root() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let a = LoopFs::new("a");
    let b = LoopFs::new("b");
    let obs = observer(true).await;
    eprintln!(
        "source: {:?} ({})",
        obs.snapshot().freeze_source,
        obs.snapshot().freeze_source_reason
    );

    let kinds = [
        WriterKind::Write,
        WriterKind::Create,
        WriterKind::MmapStore,
        WriterKind::Rename,
    ];
    let mut on_a: Vec<Writer> = kinds
        .iter()
        .map(|&k| Writer::spawn(k, &a.mountpoint))
        .collect();
    let mut on_b: Vec<Writer> = kinds
        .iter()
        .map(|&k| Writer::spawn(k, &b.mountpoint))
        .collect();

    let freeze_started = Instant::now();
    let freeze = a.freeze();
    let frozen_at = Instant::now();
    for w in on_a.iter_mut().chain(on_b.iter_mut()) {
        w.go();
    }
    // The writers on b finish at once; the ones on a block until the thaw.
    let b_times: Vec<Duration> = on_b.iter_mut().map(Writer::finish).collect();
    assert!(
        b_times.iter().all(|t| *t < Duration::from_millis(500)),
        "{b_times:?}"
    );

    let blocked_now = wait_for(Duration::from_secs(2), || {
        obs.snapshot()
            .filesystem(&a.mountpoint)
            .is_some_and(|fs| fs.blocked_writers.len() == 4)
    })
    .await;
    let snap = obs.snapshot();
    let fs_a = snap.filesystem(&a.mountpoint).expect("frozen fs seen");
    assert!(blocked_now, "blocked writers: {:?}", fs_a.blocked_writers);
    let freeze_info = fs_a.frozen.as_ref().expect("a is frozen");
    assert_eq!(freeze_info.origin, Origin::Other);
    assert_eq!(freeze_info.by.as_ref().unwrap().comm, "fsfreeze");
    tokio::time::sleep(Duration::from_millis(300)).await;

    let thaw_started = Instant::now();
    freeze.thaw();
    // The kernel's freeze lies between the two fsfreeze runs: at least from the end of the
    // first to the start of the second, at most from the start of one to the end of the other.
    let frozen_for = (thaw_started - frozen_at)..=freeze_started.elapsed();
    let truth: Vec<(u32, WriterKind, Duration)> = on_a
        .iter_mut()
        .map(|w| (w.pid, w.kind, w.finish()))
        .collect();

    assert!(
        wait_for(Duration::from_secs(2), || {
            obs.snapshot()
                .filesystem(&a.mountpoint)
                .is_some_and(|fs| fs.frozen.is_none() && fs.stalls.len() >= 4)
        })
        .await,
        "thaw and stalls not seen: {:#?}",
        obs.snapshot()
    );
    let snap = obs.snapshot();
    let fs_a = snap.filesystem(&a.mountpoint).unwrap();
    let last = fs_a.last_freeze.as_ref().expect("completed freeze");
    assert_eq!(last.origin, Origin::Other);
    let observed = last.duration.expect("duration known");
    assert!(
        within(observed, &frozen_for, TOLERANCE),
        "freeze {observed:?} vs measured {frozen_for:?}"
    );

    assert_eq!(
        fs_a.stalls.len(),
        4,
        "exactly four stalls: {:#?}",
        fs_a.stalls
    );
    assert!(fs_a.blocked_writers.is_empty());
    for (pid, kind, took) in truth {
        let stall = fs_a
            .stalls
            .iter()
            .find(|s| s.task.pid == pid)
            .unwrap_or_else(|| panic!("no stall for {kind:?} (pid {pid}): {:#?}", fs_a.stalls));
        assert_eq!(stall.task.comm, kind.comm());
        assert_eq!(
            stall.level,
            WriteLevel::from_level(kind.level()).unwrap(),
            "{kind:?}"
        );
        assert!(
            close_to(stall.duration, took, TOLERANCE),
            "{kind:?}: {:?} vs {took:?}",
            stall.duration
        );
    }
    let b_pids: Vec<u32> = on_b.iter().map(|w| w.pid).collect();
    for fs in &snap.filesystems {
        assert!(
            fs.stalls.iter().all(|s| !b_pids.contains(&s.task.pid)),
            "writer on the unfrozen fs reported: {fs:#?}"
        );
    }
    if let Some(fs_b) = snap.filesystem(&b.mountpoint) {
        assert_eq!(fs_b.stalls_total, 0, "{fs_b:#?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agents_own_freeze_is_attributed_to_the_agent() {
    if skip_unless_root() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let a = LoopFs::new("own");
    let obs = observer(false).await;
    let mnt = a.mountpoint.clone();
    let dir = std::fs::File::open(&mnt).unwrap();
    struct Thaw(i32);
    impl Drop for Thaw {
        fn drop(&mut self) {
            // SAFETY: FITHAW on our own scratch mount's fd.
            unsafe { libc::ioctl(self.0, agent_common::FITHAW as _, 0) };
        }
    }
    // SAFETY: FIFREEZE on our own scratch mount's fd, undone by the guard.
    assert_eq!(
        unsafe { libc::ioctl(dir.as_raw_fd(), agent_common::FIFREEZE as _, 0) },
        0
    );
    let guard = Thaw(dir.as_raw_fd());
    assert!(
        wait_for(Duration::from_secs(2), || {
            obs.snapshot()
                .filesystem(&mnt)
                .and_then(|f| f.frozen.clone())
                .is_some()
        })
        .await
    );
    let info = obs
        .snapshot()
        .filesystem(&mnt)
        .unwrap()
        .frozen
        .clone()
        .unwrap();
    assert_eq!(info.origin, Origin::Agent);
    assert_eq!(info.by.unwrap().pid, std::process::id());
    drop(guard);
    assert!(
        wait_for(Duration::from_secs(2), || {
            obs.snapshot()
                .filesystem(&mnt)
                .is_some_and(|f| f.frozen.is_none())
        })
        .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_before_load_still_attributes_writers() {
    if skip_unless_root() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let a = LoopFs::new("early");
    let mut writer = Writer::spawn(WriterKind::Write, &a.mountpoint);
    let freeze = a.freeze();

    // No probe: only the in-kernel validation of the superblock can attribute this writer.
    let obs = observer(false).await;
    writer.go();
    assert!(
        writer_seen_blocked(&obs, &a, &writer).await,
        "writer on a fs frozen before load not seen: {:#?}",
        obs.snapshot()
    );

    // With the probe, a second observer knows the filesystem is frozen (freezer unknown).
    let probing = observer(true).await;
    assert!(
        wait_for(Duration::from_secs(2), || {
            probing
                .snapshot()
                .filesystem(&a.mountpoint)
                .and_then(|f| f.frozen.clone())
                .is_some_and(|f| f.origin == Origin::Unknown)
        })
        .await,
        "probe did not report the frozen fs: {:#?}",
        probing.snapshot()
    );

    thaw_and_check_the_stall(&obs, &a, freeze, &mut writer).await;
}

/// Waits until the observer lists `writer` blocked on `fs`.
async fn writer_seen_blocked(obs: &ObserverHandle, fs: &LoopFs, writer: &Writer) -> bool {
    wait_for(Duration::from_secs(5), || {
        obs.snapshot()
            .filesystem(&fs.mountpoint)
            .is_some_and(|f| f.blocked_writers.iter().any(|w| w.task.pid == writer.pid))
    })
    .await
}

/// Thaws, lets `writer` finish and checks the observer's one completed stall on `fs` against
/// the writer's own clock (pid, the level of its kind of write, duration within
/// [`TOLERANCE`]); also waits until the observer no longer reports the filesystem frozen.
async fn thaw_and_check_the_stall(
    obs: &ObserverHandle,
    fs: &LoopFs,
    freeze: FreezeGuard<'_>,
    writer: &mut Writer,
) {
    freeze.thaw();
    let took = writer.finish();
    assert!(
        wait_for(Duration::from_secs(2), || {
            obs.snapshot()
                .filesystem(&fs.mountpoint)
                .is_some_and(|f| f.stalls.len() == 1 && f.frozen.is_none())
        })
        .await,
        "stall not completed or freeze not ended: {:#?}",
        obs.snapshot()
    );
    let stall = obs.snapshot().filesystem(&fs.mountpoint).unwrap().stalls[0].clone();
    assert_eq!(
        (stall.task.pid, stall.level),
        (
            writer.pid,
            WriteLevel::from_level(writer.kind.level()).unwrap()
        )
    );
    assert!(
        close_to(stall.duration, took, TOLERANCE),
        "{:?} vs {took:?}",
        stall.duration
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_freeze_hook_a_stalled_writer_still_shows_the_freeze() {
    if skip_unless_root() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let a = LoopFs::new("nohook");
    let obs = observer_with(LoadOptions {
        probe_frozen: false,
        freeze_source: Some(FreezeSource::None),
        ..LoadOptions::default()
    })
    .await;
    assert_eq!(obs.freeze_source(), FreezeSource::None);
    let mut writer = Writer::spawn(WriterKind::Write, &a.mountpoint);
    let freeze = a.freeze();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        obs.snapshot()
            .filesystem(&a.mountpoint)
            .is_none_or(|f| f.frozen.is_none()),
        "no freeze hook, no writer yet: nothing can know about the freeze: {:#?}",
        obs.snapshot()
    );
    writer.go();
    assert!(
        wait_for(Duration::from_secs(2), || {
            obs.snapshot().filesystem(&a.mountpoint).is_some_and(|f| {
                f.blocked_writers.iter().any(|w| w.task.pid == writer.pid)
                    && f.frozen
                        .as_ref()
                        .is_some_and(|z| z.origin == Origin::Unknown)
            })
        })
        .await,
        "blocked writer (and the freeze it proves) not seen: {:#?}",
        obs.snapshot()
    );
    thaw_and_check_the_stall(&obs, &a, freeze, &mut writer).await;
    let snap = obs.snapshot();
    assert_eq!(
        (snap.freezes_by_others, snap.freezes_by_agent),
        (0, 0),
        "no freeze hook is attached, yet freeze events arrived"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_tracepoint_fallback_sees_the_same_stall() {
    if skip_unless_root() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let a = LoopFs::new("raw");
    let obs = observer_with(LoadOptions {
        contention_hook: Some(ContentionHook::RawTracepoint),
        probe_frozen: false,
        ..LoadOptions::default()
    })
    .await;
    assert_eq!(
        obs.snapshot().contention_hook,
        ContentionHook::RawTracepoint
    );
    let mut writer = Writer::spawn(WriterKind::MmapStore, &a.mountpoint);
    let freeze = a.freeze();
    writer.go();
    assert!(
        writer_seen_blocked(&obs, &a, &writer).await,
        "the writer never blocked: {:#?}",
        obs.snapshot()
    );
    thaw_and_check_the_stall(&obs, &a, freeze, &mut writer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heavy_lock_contention_with_nothing_frozen_reports_nothing() {
    if skip_unless_root() {
        return;
    }
    let _serial = SERIAL.lock().await;
    let a = LoopFs::new("busy");
    let obs = observer(false).await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    // Threads fighting over one mutex.
    let shared = Arc::new(std::sync::Mutex::new(0u64));
    for _ in 0..4 {
        let (stop, shared) = (stop.clone(), shared.clone());
        threads.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                *shared.lock().unwrap() += 1;
            }
        }));
    }
    // Many small writes and renames in one directory (i_rwsem and journal contention).
    for t in 0..4 {
        let (stop, dir) = (stop.clone(), a.mountpoint.clone());
        threads.push(std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let from = dir.join(format!("f{t}-{i}"));
                std::fs::write(&from, b"x").unwrap();
                std::fs::rename(&from, dir.join(format!("g{t}"))).unwrap();
                i += 1;
            }
        }));
    }
    // File locks against /proc/locks readers: contention on file_rwsem, a percpu rwsem whose
    // reader waits carry the same flags (0x12) as a frozen superblock's.
    for t in 0..2 {
        let (stop, dir) = (stop.clone(), a.mountpoint.clone());
        threads.push(std::thread::spawn(move || {
            let f = std::fs::File::create(dir.join(format!("lock{t}"))).unwrap();
            while !stop.load(Ordering::Relaxed) {
                // SAFETY: flock on our own fd.
                unsafe {
                    libc::flock(f.as_raw_fd(), libc::LOCK_EX);
                    libc::flock(f.as_raw_fd(), libc::LOCK_UN);
                }
            }
        }));
    }
    {
        let stop = stop.clone();
        threads.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let _ = std::fs::read_to_string("/proc/locks");
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let snap = obs.snapshot();
    let me = std::process::id();
    for fs in &snap.filesystems {
        assert!(
            fs.stalls.iter().all(|s| s.task.pid != me)
                && fs.blocked_writers.iter().all(|w| w.task.pid != me),
            "false positive: {fs:#?}"
        );
    }
    assert!(snap.filesystem(&a.mountpoint).is_none(), "{snap:#?}");
    assert_eq!(snap.undecodable_events, 0);
}

#[tokio::test]
async fn off_and_failed_loads_leave_the_caller_running() {
    let off = start(ObserverConfig {
        mode: EbpfMode::Off,
        ..ObserverConfig::default()
    })
    .await
    .expect("off never fails");
    assert!(off.is_none());

    let broken = LoadOptions {
        btf_path: "/nonexistent/vmlinux".into(),
        ..LoadOptions::default()
    };
    let auto = start(ObserverConfig {
        mode: EbpfMode::Auto,
        load: broken.clone(),
        agent_pid: None,
    })
    .await
    .expect("auto swallows the failure");
    assert!(auto.is_none());

    let err = start(ObserverConfig {
        mode: EbpfMode::Required,
        load: broken,
        agent_pid: None,
    })
    .await
    .expect_err("required fails");
    assert!(err.to_string().contains("CONFIG_DEBUG_INFO_BTF"), "{err}");
}
