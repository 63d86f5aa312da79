//! Quiesce and Thaw against real loop-mounted ext4 and xfs, through gRPC and through
//! guestctl: a writer really blocks while frozen and completes with its data intact after
//! the thaw; FreezeStatus shows the frozen set and the watchdog deadline; idempotence,
//! conflicts, bad requests, bind-mount dedupe, tmpfs skipping, Ping latency while frozen.

use std::time::{Duration, Instant};

use guest_proto::v1::{FsOutcome, GuestInitRequest};
use system_tests::results::{expect_entry, now_ms, outcome, summary, with_outcome};
use system_tests::{
    fsfreeze, guestctl, Agent, Durability, FsType, LoopFs, Mount, Rpc, Scratch, Writer,
};
use tonic::Code;

/// How long a writer must stay blocked to count as "held by the freeze".
const BLOCK_WINDOW: Duration = Duration::from_millis(500);
/// How long a writer may take to finish once its filesystem is thawed.
const FINISH: Duration = Duration::from_secs(20);
/// Bytes each writer writes.
const WRITE_LEN: usize = 4 << 20;

async fn grpc_cycle(fstype: FsType, size_mib: u64) -> anyhow::Result<()> {
    let s = Scratch::new()?;
    let fs = LoopFs::new(&s, "a", fstype, size_mib)?;
    let agent = Agent::start(&s, &[]).await?;
    let mut rpc = agent.rpc().await?;

    let before = now_ms();
    let q = rpc.quiesce(&[]).await??;
    let after = now_ms();
    assert_eq!(q.frozen_count, 1, "{}", summary(&q.filesystems));
    let r = expect_entry(&q.filesystems, &fs.mp());
    assert_eq!(
        r.outcome(),
        FsOutcome::Frozen,
        "{}",
        summary(&q.filesystems)
    );
    assert_eq!(r.fstype, fstype.name());
    assert_eq!(r.device, fs.device().display().to_string());
    assert_eq!(r.dev_id, fs.dev_id()?);
    // Default watchdog: 60 s.
    assert!(
        q.watchdog_deadline_unix_ms >= before + 55_000,
        "deadline {} vs now {after}",
        q.watchdog_deadline_unix_ms
    );
    assert!(
        q.watchdog_deadline_unix_ms <= after + 65_000,
        "deadline {} vs now {after}",
        q.watchdog_deadline_unix_ms
    );

    let st = rpc.status().await??;
    assert!(st.frozen, "{st:?}");
    let frozen: Vec<&str> = st
        .filesystems
        .iter()
        .map(|f| f.mountpoint.as_str())
        .collect();
    assert_eq!(frozen, vec![fs.mp().as_str()], "{st:?}");
    assert_eq!(st.filesystems[0].dev_id, fs.dev_id()?);
    assert!(
        st.frozen_since_unix_ms >= before.saturating_sub(5) && st.frozen_since_unix_ms <= after + 5,
        "{st:?}"
    );
    assert_eq!(
        st.watchdog_deadline_unix_ms, q.watchdog_deadline_unix_ms,
        "{st:?}"
    );
    assert_eq!(st.watchdog_timeout_ms, 60_000, "{st:?}");
    assert!(
        fsfreeze::is_frozen(fs.mountpoint())?,
        "the kernel must see the filesystem frozen"
    );

    let mut w = Writer::start(&s, &fs.join("data"), WRITE_LEN, Durability::Fsync)?;
    w.assert_blocked(BLOCK_WINDOW).await?;

    let t = rpc.thaw().await??;
    assert_eq!(t.thawed_count, 1, "{}", summary(&t.filesystems));
    assert_eq!(
        outcome(&t.filesystems, &fs.mp()),
        Some(FsOutcome::Thawed),
        "{}",
        summary(&t.filesystems)
    );
    w.finish(FINISH).await?;

    let st = rpc.status().await??;
    assert!(!st.frozen && st.filesystems.is_empty(), "{st:?}");
    assert_eq!(st.watchdog_deadline_unix_ms, 0, "{st:?}");
    assert!(!fsfreeze::is_frozen(fs.mountpoint())?);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_quiesce_thaw_ext4() -> anyhow::Result<()> {
    grpc_cycle(FsType::Ext4, 64).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_quiesce_thaw_xfs() -> anyhow::Result<()> {
    grpc_cycle(FsType::Xfs, 300).await
}

async fn guestctl_cycle(fstype: FsType, size_mib: u64) -> anyhow::Result<()> {
    let s = Scratch::new()?;
    let fs = LoopFs::new(&s, "a", fstype, size_mib)?;
    let agent = Agent::start(&s, &[]).await?;
    let uri = agent.uri();

    let q = guestctl::run(&[
        "--connect",
        &uri,
        "--json",
        "quiesce",
        "--mountpoint",
        &fs.mp(),
    ])
    .await?;
    assert_eq!(q.code, Some(0), "{q}");
    let j = q.json()?;
    assert_eq!(j["frozen_count"], 1, "{q}");
    let fss = j["filesystems"].as_array().cloned().unwrap_or_default();
    let me = fss
        .iter()
        .find(|f| f["mountpoint"] == fs.mp().as_str())
        .unwrap_or_else(|| panic!("{q}"));
    assert_eq!(me["outcome"], "frozen", "{q}");
    assert_eq!(me["fstype"], fstype.name(), "{q}");

    let st = guestctl::run(&["--connect", &uri, "--json", "status"]).await?;
    assert_eq!(st.code, Some(0), "{st}");
    let j = st.json()?;
    assert_eq!(j["frozen"], true, "{st}");
    assert_eq!(j["filesystems"][0]["mountpoint"], fs.mp().as_str(), "{st}");
    assert!(
        j["watchdog_deadline_unix_ms"].as_u64().unwrap_or(0) > now_ms(),
        "{st}"
    );

    let mut w = Writer::start(&s, &fs.join("data"), WRITE_LEN, Durability::Fsync)?;
    w.assert_blocked(BLOCK_WINDOW).await?;

    let t = guestctl::run(&["--connect", &uri, "--json", "thaw"]).await?;
    assert_eq!(t.code, Some(0), "{t}");
    assert_eq!(t.json()?["thawed_count"], 1, "{t}");
    w.finish(FINISH).await?;

    let st = guestctl::run(&["--connect", &uri, "--json", "status"]).await?;
    assert_eq!(st.json()?["frozen"], false, "{st}");
    // Human output too: exit 0 and says it is not frozen.
    let h = guestctl::run(&["--connect", &uri, "status"]).await?;
    assert_eq!(h.code, Some(0), "{h}");
    assert!(h.stdout.contains("frozen by the agent: no"), "{h}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guestctl_quiesce_thaw_ext4() -> anyhow::Result<()> {
    guestctl_cycle(FsType::Ext4, 64).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guestctl_quiesce_thaw_xfs() -> anyhow::Result<()> {
    guestctl_cycle(FsType::Xfs, 300).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thaw_with_nothing_frozen_returns_zero() -> anyhow::Result<()> {
    let s = Scratch::new()?;
    let _fs = LoopFs::new(&s, "a", FsType::Ext4, 32)?;
    let agent = Agent::start(&s, &[]).await?;
    let mut rpc = agent.rpc().await?;
    let t = rpc.thaw().await??;
    assert_eq!(t.thawed_count, 0);
    assert!(t.filesystems.is_empty(), "{}", summary(&t.filesystems));
    let c = guestctl::run(&["--connect", &agent.uri(), "--json", "thaw"]).await?;
    assert_eq!(c.code, Some(0), "{c}");
    assert_eq!(c.json()?["thawed_count"], 0, "{c}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiesce_same_set_is_idempotent_and_a_different_set_is_refused() -> anyhow::Result<()> {
    let s = Scratch::new()?;
    let a = LoopFs::new(&s, "a", FsType::Ext4, 32)?;
    let b = LoopFs::new(&s, "b", FsType::Ext4, 32)?;
    let agent = Agent::start(&s, &[]).await?;
    let mut rpc = agent.rpc().await?;

    let q1 = rpc.quiesce(&[a.mp()]).await??;
    assert_eq!(q1.frozen_count, 1, "{}", summary(&q1.filesystems));
    assert_eq!(outcome(&q1.filesystems, &a.mp()), Some(FsOutcome::Frozen));
    assert_eq!(
        outcome(&q1.filesystems, &b.mp()),
        None,
        "b was not asked for: {}",
        summary(&q1.filesystems)
    );

    let q2 = rpc.quiesce(&[a.mp()]).await??;
    assert_eq!(q2.frozen_count, 1, "{}", summary(&q2.filesystems));
    assert_eq!(
        with_outcome(&q2.filesystems, FsOutcome::Frozen),
        vec![a.mp()]
    );
    assert_eq!(
        q2.watchdog_deadline_unix_ms, q1.watchdog_deadline_unix_ms,
        "an idempotent repeat does not re-arm"
    );

    for other in [vec![b.mp()], vec![], vec![a.mp(), b.mp()]] {
        let e = rpc.quiesce(&other).await?.unwrap_err();
        assert_eq!(e.code(), Code::FailedPrecondition, "{other:?}: {e:?}");
    }
    let e = rpc.init(GuestInitRequest::default()).await?.unwrap_err();
    assert_eq!(
        e.code(),
        Code::FailedPrecondition,
        "Init while frozen: {e:?}"
    );

    // b stayed writable the whole time; a is still frozen.
    let mut wb = Writer::start(&s, &b.join("data"), 1 << 20, Durability::Fsync)?;
    wb.finish(FINISH).await?;
    let st = rpc.status().await??;
    assert_eq!(st.filesystems.len(), 1, "{st:?}");
    assert_eq!(st.filesystems[0].mountpoint, a.mp());

    assert_eq!(rpc.thaw().await??.thawed_count, 1);
    assert_eq!(
        rpc.thaw().await??.thawed_count,
        0,
        "second thaw has nothing to do"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_mountpoints_are_invalid_argument_and_freeze_nothing() -> anyhow::Result<()> {
    let s = Scratch::new()?;
    let fs = LoopFs::new(&s, "a", FsType::Ext4, 32)?;
    let tmp = Mount::tmpfs(&s.join("tmp"))?;
    let plain_dir = s.subdir("plain")?;
    let agent = Agent::start(&s, &[]).await?;
    let mut rpc = agent.rpc().await?;
    let cases = [
        vec!["relative/mnt".to_string()],
        vec![plain_dir.display().to_string()],
        vec![s.join("does-not-exist").display().to_string()],
        vec![tmp.path().display().to_string()],
        // One good and one bad: all or nothing, the good one must not stay frozen.
        vec![fs.mp(), plain_dir.display().to_string()],
    ];
    for req in cases {
        let e = rpc.quiesce(&req).await?.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{req:?}: {e:?}");
        let st = rpc.status().await??;
        assert!(!st.frozen, "{req:?} left something frozen: {st:?}");
    }
    assert!(!fsfreeze::is_frozen(fs.mountpoint())?);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_mount_is_frozen_once() -> anyhow::Result<()> {
    let s = Scratch::new()?;
    let fs = LoopFs::new(&s, "a", FsType::Ext4, 32)?;
    let bind = Mount::bind(fs.mountpoint(), &s.join("bind"))?;
    let bind_mp = bind.path().display().to_string();
    let agent = Agent::start(&s, &[]).await?;
    let mut rpc = agent.rpc().await?;

    for req in [vec![], vec![fs.mp(), bind_mp.clone()]] {
        let q = rpc.quiesce(&req).await??;
        let all = summary(&q.filesystems);
        assert_eq!(q.frozen_count, 1, "{req:?}: {all}");
        let frozen = with_outcome(&q.filesystems, FsOutcome::Frozen);
        assert_eq!(frozen.len(), 1, "{all}");
        let skipped = with_outcome(&q.filesystems, FsOutcome::Skipped);
        let mut both = vec![
            frozen[0].clone(),
            skipped.first().cloned().unwrap_or_default(),
        ];
        both.sort();
        let mut expected = vec![fs.mp(), bind_mp.clone()];
        expected.sort();
        assert_eq!(
            both, expected,
            "one mount frozen, its duplicate reported as skipped: {all}"
        );
        let dup = expect_entry(&q.filesystems, &skipped[0]);
        assert_eq!(dup.dev_id, fs.dev_id()?, "{all}");
        let st = rpc.status().await??;
        assert_eq!(st.filesystems.len(), 1, "{st:?}");
        let t = rpc.thaw().await??;
        assert_eq!(t.thawed_count, 1, "{}", summary(&t.filesystems));
    }
    assert!(!fsfreeze::is_frozen(fs.mountpoint())?);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tmpfs_in_scope_is_not_an_error() -> anyhow::Result<()> {
    let s = Scratch::new()?;
    let fs = LoopFs::new(&s, "a", FsType::Ext4, 32)?;
    let tmp = Mount::tmpfs(&s.join("tmp"))?;
    let tmp_mp = tmp.path().display().to_string();
    let agent = Agent::start(&s, &[]).await?;
    let mut rpc = agent.rpc().await?;
    let q = rpc.quiesce(&[]).await??;
    let all = summary(&q.filesystems);
    assert_eq!(q.frozen_count, 1, "{all}");
    assert_eq!(
        outcome(&q.filesystems, &fs.mp()),
        Some(FsOutcome::Frozen),
        "{all}"
    );
    assert_ne!(
        outcome(&q.filesystems, &tmp_mp),
        Some(FsOutcome::Frozen),
        "{all}"
    );
    // The tmpfs stays writable.
    std::fs::write(tmp.path().join("f"), b"still writable")?;
    assert_eq!(rpc.thaw().await??.thawed_count, 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tmpfs_in_scope_is_reported_as_skipped() -> anyhow::Result<()> {
    // The issue: "pseudo and virtual filesystems (proc, sysfs, tmpfs, ...) are skipped and
    // reported as skipped".
    let s = Scratch::new()?;
    let _fs = LoopFs::new(&s, "a", FsType::Ext4, 32)?;
    let tmp = Mount::tmpfs(&s.join("tmp"))?;
    let tmp_mp = tmp.path().display().to_string();
    let agent = Agent::start(&s, &[]).await?;
    let mut rpc = agent.rpc().await?;
    let q = rpc.quiesce(&[]).await??;
    rpc.thaw().await??;
    let all = summary(&q.filesystems);
    let t = expect_entry(&q.filesystems, &tmp_mp);
    assert_eq!(t.outcome(), FsOutcome::Skipped, "{all}");
    assert_eq!(t.fstype, "tmpfs", "{all}");
    assert!(!t.detail.is_empty(), "a skip says why: {all}");
    Ok(())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// p50 and p99 of `n` Ping and `n` FreezeStatus round trips on one connection.
async fn measure(rpc: &mut Rpc, n: usize, expect_frozen: bool) -> anyhow::Result<[Duration; 4]> {
    let mut pings = Vec::with_capacity(n);
    let mut stats = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        rpc.ping().await??;
        pings.push(t.elapsed());
        let t = Instant::now();
        let st = rpc.status().await??;
        stats.push(t.elapsed());
        assert_eq!(st.frozen, expect_frozen);
    }
    pings.sort();
    stats.sort();
    Ok([
        percentile(&pings, 0.50),
        percentile(&pings, 0.99),
        percentile(&stats, 0.50),
        percentile(&stats, 0.99),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_and_status_stay_fast_while_frozen() -> anyhow::Result<()> {
    const LIMIT: Duration = Duration::from_millis(10);
    let s = Scratch::new()?;
    let fs = LoopFs::new(&s, "a", FsType::Ext4, 32)?;
    let agent = Agent::start(&s, &[]).await?;
    let mut rpc = agent.rpc().await?;
    for _ in 0..10 {
        rpc.ping().await??;
    }
    let [b50, b99, _, _] = measure(&mut rpc, 200, false).await?;
    println!("baseline, not frozen (200 calls): Ping p50 {b50:?}, p99 {b99:?}");
    rpc.quiesce(&[fs.mp()]).await??;
    // A writer stuck on the frozen filesystem, as in a busy guest.
    let mut w = Writer::start(&s, &fs.join("data"), 1 << 20, Durability::Fsync)?;
    w.assert_blocked(BLOCK_WINDOW).await?;
    // An agent that serves Ping behind the freeze is slow in every round; a busy machine
    // (parallel builds on 2 cores) makes single rounds slow at random. Up to 3 rounds of
    // 200 calls each; the best one must meet the limit.
    let mut rounds = Vec::new();
    for round in 1..=3 {
        let [p50, p99, s50, s99] = measure(&mut rpc, 200, true).await?;
        println!(
            "round {round}, frozen (200 calls each): Ping p50 {p50:?}, p99 {p99:?}; FreezeStatus p50 {s50:?}, p99 {s99:?}"
        );
        rounds.push((p99, s99));
        if p99 < LIMIT.max(b99 * 2) && s99 < LIMIT.max(b99 * 2) {
            break;
        }
    }
    // On a machine so loaded that even the unfrozen baseline misses the limit, "as fast as
    // when not frozen" is what can be asserted: twice the baseline p99. A Ping served behind
    // the freeze would take the whole freeze (seconds) and still fail.
    let limit = LIMIT.max(b99 * 2);
    let ok = rounds.iter().any(|(p, s)| *p < limit && *s < limit);
    assert!(ok, "Ping/FreezeStatus p99 >= {limit:?} while frozen in every round: {rounds:?} (baseline p99 {b99:?})");
    rpc.thaw().await??;
    w.finish(FINISH).await?;
    Ok(())
}
