//! Crash safety: an agent that dies holding a freeze, a state directory that could itself be
//! frozen, and a freeze that hangs in the kernel.
//!
//! * SIGKILL while holding a freeze: the kernel keeps the filesystem frozen with nobody left
//!   to thaw it. The next agent started with the same `--state-dir` (a tmpfs) reads the
//!   freeze journal and thaws exactly what the dead agent froze, not a filesystem someone
//!   else froze, and counts it in `FreezeStatus.recovered_thaws`.
//! * `--state-dir` on a freezable filesystem: refused with a warning, the agent keeps working.
//! * A freeze stuck in the kernel (REFERENCE section 2, oVirt vdsm#160, kubevirt#16777): the
//!   inner filesystem's loop image lies on an outer filesystem the test froze, so FIFREEZE of
//!   the inner one (which must write its dirty data through the outer one) blocks until the
//!   test thaws the outer one. Quiesce returns DEADLINE_EXCEEDED, Ping keeps answering, and
//!   once the kernel returns the agent thaws what that late freeze froze. Killing the agent
//!   during the hang leaves the journal's pending entry for the next agent, and the RCU
//!   marker: the next agent puts `/sys/kernel/rcu_expedited` back.
//!
//! Every wait is bounded; a [`ThawGuard`] thaws outer then inner on every exit path.

use std::time::{Duration, Instant};

use guest_proto::v1::FsOutcome;
use nix::sys::signal::Signal;
use system_tests::reliability::{threads_in_state, Latencies, StateDir, ThawGuard};
use system_tests::results::{outcome, summary};
use system_tests::rpc::Rpc;
use system_tests::{fsfreeze, Agent, Durability, ExternalFreeze, FsType, LoopFs, Scratch, Writer};
use tonic::Code;

const BLOCK_WINDOW: Duration = Duration::from_millis(500);
const FINISH: Duration = Duration::from_secs(30);
const EXIT: Duration = Duration::from_secs(15);
/// `--operation-timeout` of the hang tests, seconds.
const OP_TIMEOUT_SECS: u64 = 2;
/// How long the test keeps the outer filesystem frozen (the kernel hang), at least.
const HANG: Duration = Duration::from_secs(4);

/// These tests run one at a time: their agents set the machine-wide `rcu_expedited` knob while
/// they freeze (for seconds when FIFREEZE is stuck), and an agent that finds it set by another
/// leaves it alone and writes no marker, which the SIGKILL test checks for.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `/sys/kernel/rcu_expedited`, which the agent sets only while its FIFREEZE calls run.
fn rcu_knob() -> String {
    std::fs::read_to_string("/sys/kernel/rcu_expedited")
        .expect("this kernel has /sys/kernel/rcu_expedited")
        .trim()
        .to_string()
}

async fn wait_settled(rpc: &mut Rpc, bound: Duration) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        let st = rpc.status().await??;
        if !st.operation_in_progress && !st.frozen {
            return Ok(());
        }
        anyhow::ensure!(
            start.elapsed() < bound,
            "agent still busy or frozen {bound:?} after the kernel was released: {st:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_while_frozen_next_agent_thaws_exactly_those() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let s = Scratch::new()?;
    let state = StateDir::tmpfs(&s, "state")?;
    let ours = LoopFs::new(&s, "ours", FsType::Ext4, 32)?;
    let theirs = LoopFs::new(&s, "theirs", FsType::Ext4, 32)?;
    let _guard = ThawGuard::new(&[ours.mountpoint(), theirs.mountpoint()]);
    let someone_else = ExternalFreeze::freeze(theirs.mountpoint())?;

    let mut first = Agent::builder(&s).state_dir(state.path()).start().await?;
    let mut rpc = first.rpc().await?;
    assert_eq!(rcu_knob(), "0", "rcu_expedited set before the test");
    let q = rpc.quiesce(&[]).await??;
    assert_eq!(q.frozen_count, 1, "{}", summary(&q.filesystems));
    assert_eq!(
        rcu_knob(),
        "0",
        "the agent holds a freeze, but its FIFREEZE calls are over: the knob must be back"
    );
    assert!(!state.path().join("rcu-expedited").exists());
    assert_eq!(outcome(&q.filesystems, &ours.mp()), Some(FsOutcome::Frozen));
    assert_eq!(
        outcome(&q.filesystems, &theirs.mp()),
        Some(FsOutcome::AlreadyFrozen),
        "{}",
        summary(&q.filesystems)
    );
    let journal = state
        .journal()?
        .expect("a journal while the agent holds a freeze");
    assert!(
        journal.contains(&ours.mp()),
        "journal lacks {}: {journal}",
        ours.mp()
    );
    assert!(
        !journal.contains(&theirs.mp()),
        "journal lists a freeze that is not ours: {journal}"
    );

    let mut w = Writer::start(&s, &ours.join("data"), 1 << 20, Durability::Fsync)?;
    w.assert_blocked(BLOCK_WINDOW).await?;

    first.signal(Signal::SIGKILL)?;
    let st = first.wait_exit(EXIT).await?;
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(st.signal(), Some(9), "{st}");
    // Nobody holds the freeze any more, but the kernel keeps it.
    assert!(
        fsfreeze::is_frozen(ours.mountpoint())?,
        "the kernel thawed on holder death?"
    );
    w.assert_blocked(Duration::from_millis(200)).await?;

    let second = Agent::builder(&s).state_dir(state.path()).start().await?;
    let mut rpc = second.rpc().await?;
    let st = rpc.status().await??;
    assert_eq!(st.recovered_thaws, 1, "{st:?}\n{}", second.logs());
    assert!(!st.frozen, "{st:?}");
    w.finish(FINISH).await?;
    assert!(!fsfreeze::is_frozen(ours.mountpoint())?);
    assert!(
        fsfreeze::is_frozen(theirs.mountpoint())?,
        "the recovering agent thawed a filesystem it never froze"
    );
    assert_eq!(state.journal()?, None, "journal left after recovery");
    let logs = second.logs();
    assert!(
        logs.contains("previous agent died") && logs.contains(&ours.mp()),
        "recovery is not logged with the mountpoint:\n{logs}"
    );
    someone_else.thaw()?;
    assert!(!fsfreeze::is_frozen(theirs.mountpoint())?);
    drop(rpc);
    drop(second);

    // A journal emptied by recovery is not replayed again.
    let third = Agent::builder(&s).state_dir(state.path()).start().await?;
    let st = third.rpc().await?.status().await??;
    assert_eq!(st.recovered_thaws, 0, "{st:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_dir_on_a_freezable_fs_is_refused_and_the_agent_keeps_working() -> anyhow::Result<()>
{
    let _serial = SERIAL.lock().await;
    let s = Scratch::new()?;
    let fs = LoopFs::new(&s, "a", FsType::Ext4, 32)?;
    let _guard = ThawGuard::new(&[fs.mountpoint()]);
    // The worst place: on the very filesystem the agent will freeze. Journalling there
    // during the freeze would block the agent on its own write (open-vm-tools#650).
    let state_dir = fs.join("state");
    let agent = Agent::builder(&s).state_dir(&state_dir).start().await?;
    let logs = agent.logs();
    assert!(
        logs.contains("freeze journal disabled") && logs.contains("tmpfs"),
        "no warning about the state directory:\n{logs}"
    );
    let mut rpc = agent.rpc().await?.with_timeout(Duration::from_secs(10));
    let q = rpc.quiesce(&[fs.mp()]).await??;
    assert_eq!(q.frozen_count, 1, "{}", summary(&q.filesystems));
    let t = Instant::now();
    rpc.ping().await??;
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "ping took {:?}",
        t.elapsed()
    );
    assert!(rpc.status().await??.frozen);
    assert_eq!(rpc.thaw().await??.thawed_count, 1);
    let left: Vec<_> = std::fs::read_dir(&state_dir)
        .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        left.is_empty(),
        "the agent wrote {left:?} to a freezable state directory"
    );

    // The same with a plain directory on the scratch disk.
    let disk = StateDir::on_disk(&s, "state-disk")?;
    let agent = Agent::builder(&s).state_dir(disk.path()).start().await?;
    assert!(
        agent.logs().contains("freeze journal disabled"),
        "{}",
        agent.logs()
    );
    let mut rpc = agent.rpc().await?;
    assert_eq!(rpc.quiesce(&[fs.mp()]).await??.frozen_count, 1);
    assert_eq!(disk.files()?, Vec::<String>::new());
    assert_eq!(rpc.thaw().await??.thawed_count, 1);
    Ok(())
}

/// An outer filesystem, an inner one whose image lies on it, dirty data on the inner one,
/// and an agent allowed to freeze below the scratch directory.
struct Nested {
    // Field order is drop order: guard (outer, then inner), agent, inner, outer.
    _guard: ThawGuard,
    agent: Agent,
    inner: LoopFs,
    outer: LoopFs,
    dirty: Writer,
    s: Scratch,
}

async fn nested(args: &[&str], state: Option<&StateDir>) -> anyhow::Result<Nested> {
    let s = Scratch::new()?;
    let outer = LoopFs::new(&s, "outer", FsType::Ext4, 128)?;
    let inner = LoopFs::nested(&s, "inner", FsType::Ext4, 32, &outer)?;
    let guard = ThawGuard::new(&[outer.mountpoint(), inner.mountpoint()]);
    let mut builder = Agent::builder(&s)
        .args(["--operation-timeout", &OP_TIMEOUT_SECS.to_string()])
        .args(args.iter().copied());
    if let Some(st) = state {
        builder = builder.state_dir(st.path());
    }
    let agent = builder.start().await?;
    // Dirty data on the inner filesystem, only in the page cache: freezing the inner one
    // must write it through the loop device into the outer filesystem.
    let mut dirty = Writer::start(&s, &inner.join("dirty"), 8 << 20, Durability::Dirty)?;
    dirty.wait(FINISH).await?;
    Ok(Nested {
        _guard: guard,
        agent,
        inner,
        outer,
        dirty,
        s,
    })
}

/// Quiesce of the inner filesystem while the test holds the outer one frozen: returns
/// DEADLINE_EXCEEDED after the operation timeout. Returns the agent's stuck thread count.
async fn quiesce_stuck(n: &Nested, rpc: &mut Rpc) -> anyhow::Result<usize> {
    let t0 = Instant::now();
    let res = rpc.quiesce(&[n.inner.mp()]).await?;
    let took = t0.elapsed();
    let err = match res {
        Ok(q) => anyhow::bail!(
            "Quiesce succeeded although its sync is stuck: {}",
            summary(&q.filesystems)
        ),
        Err(e) => e,
    };
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert!(
        err.message().contains("thawed"),
        "the message should say the late freeze will be undone: {}",
        err.message()
    );
    let op = Duration::from_secs(OP_TIMEOUT_SECS);
    assert!(
        took >= op - Duration::from_millis(100) && took < op + Duration::from_secs(2),
        "DEADLINE_EXCEEDED after {took:?}, operation timeout {op:?}"
    );
    println!("stuck Quiesce returned {:?} after {took:?}", err.code());
    Ok(threads_in_state(n.agent.pid(), 'D').len())
}

/// `expedite`: the agent's default; without it (`--no-expedite-rcu`) the knob must stay 0.
async fn stuck_freeze_is_undone(presync: bool, expedite: bool) -> anyhow::Result<()> {
    let mut args = Vec::new();
    if !presync {
        args.push("--no-presync");
    }
    if !expedite {
        args.push("--no-expedite-rcu");
    }
    assert_eq!(rcu_knob(), "0", "rcu_expedited set before the test");
    let n = nested(&args, None).await?;
    let mut rpc = n.agent.rpc().await?.with_timeout(Duration::from_secs(15));
    let outer_freeze = ExternalFreeze::freeze(n.outer.mountpoint())?;
    let hang_start = Instant::now();

    let stuck = quiesce_stuck(&n, &mut rpc).await?;
    assert!(
        stuck >= 1,
        "no agent thread is blocked in the kernel: the hang is not real"
    );
    // Grace periods are expedited exactly while FIFREEZE runs: not during the pre-sync, not
    // when switched off.
    let expected = if !presync && expedite { "1" } else { "0" };
    assert_eq!(
        rcu_knob(),
        expected,
        "rcu_expedited while stuck (presync={presync}, expedite={expedite})"
    );

    // The agent stays responsive while one of its threads is stuck in the kernel.
    let mut pings = Latencies::default();
    for _ in 0..50 {
        let t = Instant::now();
        rpc.ping().await??;
        pings.push(t.elapsed());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!("Ping during the stuck freeze (presync={presync}): {pings}");
    assert!(
        pings.percentile(50.0) < Duration::from_millis(10),
        "{pings}"
    );
    assert!(pings.max() < Duration::from_secs(1), "{pings}");
    let st = rpc.status().await??;
    assert!(st.operation_in_progress, "{st:?}");
    assert!(
        !st.frozen,
        "nothing is held while the freeze is stuck: {st:?}"
    );
    // Thaw and a second Quiesce wait at most the operation timeout for the stuck one, then
    // say why they gave up.
    let thaw = rpc.thaw().await?.err();
    let again = rpc.quiesce(&[n.inner.mp()]).await?.err();
    for (name, err) in [("Thaw", thaw), ("Quiesce", again)] {
        let err = err.unwrap_or_else(|| panic!("{name} succeeded during a stuck freeze"));
        assert_eq!(err.code(), Code::Aborted, "{name}: {err:?}");
        assert!(err.message().contains("in progress"), "{name}: {err:?}");
    }

    let left = HANG.saturating_sub(hang_start.elapsed());
    tokio::time::sleep(left).await;
    outer_freeze.thaw()?;
    wait_settled(&mut rpc, Duration::from_secs(20)).await?;
    println!(
        "kernel released after {:?}; agent settled",
        hang_start.elapsed()
    );
    assert!(
        !fsfreeze::is_frozen(n.inner.mountpoint())?,
        "the late freeze was not undone"
    );
    assert!(!fsfreeze::is_frozen(n.outer.mountpoint())?);
    assert_eq!(rcu_knob(), "0", "knob not put back after the late freeze");
    let logs = n.agent.logs();
    assert!(
        logs.contains("caller gave up"),
        "late completion not logged:\n{logs}"
    );
    if !presync {
        // FIFREEZE itself was stuck, so it did freeze in the end, and was thawed again.
        assert!(
            logs.contains("rolled_back=1"),
            "the late freeze was not rolled back:\n{logs}"
        );
    }
    let mut w = Writer::start(&n.s, &n.inner.join("after"), 1 << 20, Durability::Fsync)?;
    w.finish(FINISH).await?;
    n.dirty.verify()?;

    // Healthy again: both freeze (inner before outer) and thaw.
    let q = rpc.quiesce(&[]).await??;
    assert_eq!(q.frozen_count, 2, "{}", summary(&q.filesystems));
    assert_eq!(rpc.thaw().await??.thawed_count, 2);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freeze_stuck_in_fifreeze_times_out_and_is_undone() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    stuck_freeze_is_undone(false, true).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_expedited_rcu_a_stuck_fifreeze_leaves_the_knob_alone() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    stuck_freeze_is_undone(false, false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freeze_stuck_in_presync_times_out_and_is_undone() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    stuck_freeze_is_undone(true, true).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_a_stuck_freeze_next_agent_thaws_it() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let s0 = Scratch::new()?;
    let state = StateDir::tmpfs(&s0, "state")?;
    let mut n = nested(&["--no-presync"], Some(&state)).await?;
    let mut rpc = n.agent.rpc().await?.with_timeout(Duration::from_secs(15));
    let outer_freeze = ExternalFreeze::freeze(n.outer.mountpoint())?;
    assert!(quiesce_stuck(&n, &mut rpc).await? >= 1);
    let journal = state.journal()?.expect("a journal entry before FIFREEZE");
    assert!(
        journal.contains(&n.inner.mp()) && journal.contains("pending"),
        "{journal}"
    );
    // RCU grace periods are expedited while FIFREEZE runs, and the state directory says so.
    let marker = state.path().join("rcu-expedited");
    assert_eq!(
        rcu_knob(),
        "1",
        "grace periods not expedited during FIFREEZE"
    );
    assert!(
        marker.exists(),
        "no RCU marker in the state directory during a stuck FIFREEZE\n{}",
        n.agent.logs()
    );

    // SIGKILL cannot end a thread blocked in the kernel: the agent dies when FIFREEZE
    // returns, holding the freeze it just got.
    n.agent.signal(Signal::SIGKILL)?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        n.agent.poll()?.is_none(),
        "died while its FIFREEZE was still stuck?"
    );
    outer_freeze.thaw()?;
    n.agent.wait_exit(EXIT).await?;
    assert!(
        fsfreeze::is_frozen(n.inner.mountpoint())?,
        "the killed agent's late FIFREEZE did not leave the inner filesystem frozen"
    );

    let next = Agent::builder(&n.s).state_dir(state.path()).start().await?;
    let st = next.rpc().await?.status().await??;
    assert_eq!(st.recovered_thaws, 1, "{st:?}\n{}", next.logs());
    assert!(
        rcu_knob() == "0" && next.logs().contains("put the knob back to 0") && !marker.exists(),
        "the next agent did not restore rcu_expedited left set by the killed one\n{}",
        next.logs()
    );
    assert!(!fsfreeze::is_frozen(n.inner.mountpoint())?);
    assert!(!fsfreeze::is_frozen(n.outer.mountpoint())?);
    let mut w = Writer::start(&n.s, &n.inner.join("after"), 1 << 20, Durability::Fsync)?;
    w.finish(FINISH).await?;
    n.dirty.verify()?;
    assert_eq!(state.journal()?, None);
    Ok(())
}
