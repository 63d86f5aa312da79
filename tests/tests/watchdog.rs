//! The watchdog: a host that vanishes after Quiesce must not leave the guest frozen. With
//! `--freeze-timeout 5` the agent thaws by itself about 5 s after the freeze, records it,
//! and reports it through FreezeStatus; a Thaw in time disarms it. Timeouts are seconds long
//! so that what a test must do before the watchdog fires fits on a loaded machine.

use std::time::{Duration, Instant};

use system_tests::results::{now_ms, summary};
use system_tests::{fsfreeze, Agent, Durability, FsType, LoopFs, Scratch, Writer};

const BLOCK_WINDOW: Duration = Duration::from_millis(500);
const FINISH: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchdog_thaws_when_no_thaw_arrives() -> anyhow::Result<()> {
    let s = Scratch::new()?;
    let fs = LoopFs::new(&s, "a", FsType::Ext4, 32)?;
    let agent = Agent::start(&s, &["--freeze-timeout", "5"]).await?;
    let mut rpc = agent.rpc().await?;

    let before = now_ms();
    let started = Instant::now();
    let q = rpc.quiesce(&[fs.mp()]).await??;
    assert_eq!(q.frozen_count, 1, "{}", summary(&q.filesystems));
    let deadline = q.watchdog_deadline_unix_ms;
    assert!(
        deadline >= before + 4_900 && deadline <= now_ms() + 5_100,
        "deadline {deadline}, now {}",
        now_ms()
    );
    let st = rpc.status().await??;
    assert_eq!(st.watchdog_timeout_ms, 5_000, "{st:?}");
    assert_eq!(st.watchdog_thaws, 0, "{st:?}");

    let mut w = Writer::start(&s, &fs.join("data"), 1 << 20, Durability::Fsync)?;
    w.assert_blocked(BLOCK_WINDOW).await?;

    // No Thaw. Poll until the agent reports nothing frozen.
    let st = loop {
        let st = rpc.status().await??;
        if !st.frozen {
            break st;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "still frozen after {:?}: {st:?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let took = started.elapsed();
    println!("watchdog thawed {took:?} after the Quiesce");
    assert!(
        took >= Duration::from_millis(4_800),
        "thawed too early: {took:?}"
    );
    assert!(st.filesystems.is_empty(), "{st:?}");
    assert_eq!(st.watchdog_thaws, 1, "{st:?}");
    let ev = st
        .last_watchdog_thaw
        .as_ref()
        .expect("last_watchdog_thaw is set");
    assert_eq!(ev.thawed_count, 1, "{ev:?}");
    assert_eq!(ev.mountpoints, vec![fs.mp()], "{ev:?}");
    assert!(
        ev.at_unix_ms + 50 >= deadline,
        "watchdog fired at {} before its deadline {deadline}",
        ev.at_unix_ms
    );

    w.finish(FINISH).await?;
    assert!(!fsfreeze::is_frozen(fs.mountpoint())?);
    // A late Thaw from the host finds nothing to do.
    assert_eq!(rpc.thaw().await??.thawed_count, 0);
    assert!(
        agent.logs().to_lowercase().contains("watchdog"),
        "the watchdog thaw is logged"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thaw_in_time_disarms_the_watchdog() -> anyhow::Result<()> {
    let s = Scratch::new()?;
    let fs = LoopFs::new(&s, "a", FsType::Ext4, 32)?;
    let agent = Agent::start(&s, &["--freeze-timeout", "4"]).await?;
    let mut rpc = agent.rpc().await?;
    let first = rpc.quiesce(&[fs.mp()]).await??.watchdog_deadline_unix_ms;
    assert_eq!(rpc.thaw().await??.thawed_count, 1);
    // A new freeze before the first deadline gets a fresh deadline; the first freeze's
    // watchdog must not thaw it when the first deadline passes.
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    let q = rpc.quiesce(&[fs.mp()]).await??;
    assert_eq!(q.frozen_count, 1);
    assert!(q.watchdog_deadline_unix_ms > first + 1_000, "{q:?}");
    let past_first = first + 500;
    tokio::time::sleep(Duration::from_millis(past_first.saturating_sub(now_ms()))).await;
    let st = rpc.status().await??;
    assert!(
        now_ms() < q.watchdog_deadline_unix_ms,
        "the test itself was too slow: past the second deadline too"
    );
    assert!(
        fsfreeze::is_frozen(fs.mountpoint())?,
        "the kernel no longer holds the second freeze"
    );
    assert!(
        st.frozen,
        "the first freeze's watchdog thawed the second freeze: {st:?}"
    );
    assert_eq!(st.watchdog_thaws, 0, "{st:?}");
    assert_eq!(rpc.thaw().await??.thawed_count, 1);
    let second = q.watchdog_deadline_unix_ms + 500;
    tokio::time::sleep(Duration::from_millis(second.saturating_sub(now_ms()))).await;
    let st = rpc.status().await??;
    assert_eq!(
        st.watchdog_thaws, 0,
        "a thawed freeze must not count a watchdog thaw: {st:?}"
    );
    assert!(st.last_watchdog_thaw.is_none(), "{st:?}");
    Ok(())
}

/// A client that gives up on its Quiesce (cancels the call) after the agent started freezing
/// must not leave a freeze without a watchdog: the freeze completes, is armed, and the watchdog
/// thaws it. A slow freeze hook holds the Quiesce open long enough to cancel it mid-way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_quiesce_is_still_armed_and_thawed_by_the_watchdog() -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let s = Scratch::new()?;
    let fs = LoopFs::new(&s, "a", FsType::Ext4, 32)?;
    let hooks = s.join("hooks");
    std::fs::create_dir(&hooks)?;
    let hook = hooks.join("10-slow");
    let started_marker = s.join("hook-started");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\n[ \"$1\" = freeze ] && {{ touch {}; sleep 1; }}\nexit 0\n",
            started_marker.display()
        ),
    )?;
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755))?;
    let hooks_arg = hooks.display().to_string();
    let agent = Agent::start(&s, &["--freeze-timeout", "2", "--hooks-dir", &hooks_arg]).await?;

    // Cancel the call while the freeze hook still runs (dropping the request future resets
    // the HTTP/2 stream, which drops the server's handler).
    let mut cancelled = agent.rpc().await?;
    let selection = [fs.mp()];
    let mut call = Box::pin(cancelled.quiesce(&selection));
    let waiting = Instant::now();
    while !started_marker.exists() {
        assert!(
            waiting.elapsed() < Duration::from_secs(10),
            "the freeze hook never started"
        );
        tokio::select! {
            r = &mut call => panic!("the Quiesce should still be running: {r:?}"),
            () = tokio::time::sleep(Duration::from_millis(10)) => {}
        }
    }
    drop(call);
    drop(cancelled);

    let mut rpc = agent.rpc().await?;
    let started = Instant::now();
    // The freeze still happens, with a watchdog deadline...
    let frozen = loop {
        let st = rpc.status().await??;
        if st.frozen && !st.operation_in_progress {
            break st;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "never finished freezing: {st:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        frozen.watchdog_deadline_unix_ms > 0,
        "frozen without a watchdog: {frozen:?}"
    );
    assert!(
        fsfreeze::is_frozen(fs.mountpoint())?,
        "the cancelled Quiesce reports a freeze the kernel does not hold"
    );
    // ...and the watchdog thaws it.
    loop {
        let st = rpc.status().await??;
        if !st.frozen {
            assert_eq!(st.watchdog_thaws, 1, "{st:?}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "still frozen: {st:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!fsfreeze::is_frozen(fs.mountpoint())?);
    Ok(())
}
