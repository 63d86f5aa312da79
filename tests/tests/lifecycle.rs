//! Stopping the agent while it holds filesystems frozen: the Shutdown RPC, guestctl
//! shutdown and SIGTERM all thaw first and exit with status 0; the blocked writer resumes.
//! An agent killed while frozen is followed by one that thaws exactly what it left (the
//! freeze journal), and never a live agent's freeze.

use std::time::Duration;

use nix::sys::signal::Signal;
use system_tests::results::summary;
use system_tests::statedir::ShmStateDir;
use system_tests::{fsfreeze, guestctl, Agent, Durability, FsType, LoopFs, Scratch, Writer};

const BLOCK_WINDOW: Duration = Duration::from_millis(500);
const FINISH: Duration = Duration::from_secs(20);
const EXIT: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, Copy)]
enum Stop {
    Rpc,
    Guestctl,
    Sigterm,
}

async fn stop_while_frozen(how: Stop) -> anyhow::Result<()> {
    let s = Scratch::new()?;
    let a = LoopFs::new(&s, "a", FsType::Ext4, 32)?;
    let b = LoopFs::new(&s, "b", FsType::Xfs, 300)?;
    let mut agent = Agent::start(&s, &[]).await?;
    let mut rpc = agent.rpc().await?;
    let q = rpc.quiesce(&[]).await??;
    assert_eq!(q.frozen_count, 2, "{}", summary(&q.filesystems));
    let mut wa = Writer::start(&s, &a.join("data"), 1 << 20, Durability::Fsync)?;
    let mut wb = Writer::start(&s, &b.join("data"), 1 << 20, Durability::Fsync)?;
    wa.assert_blocked(BLOCK_WINDOW).await?;
    wb.assert_blocked(BLOCK_WINDOW).await?;

    match how {
        Stop::Rpc => {
            rpc.shutdown().await??;
        }
        Stop::Guestctl => {
            let c = guestctl::run(&["--connect", &agent.uri(), "shutdown"]).await?;
            assert_eq!(c.code, Some(0), "{c}");
        }
        Stop::Sigterm => agent.signal(Signal::SIGTERM)?,
    }
    let st = agent.wait_exit(EXIT).await?;
    assert_eq!(st.code(), Some(0), "{how:?}: agent exit status {st}");
    wa.finish(FINISH).await?;
    wb.finish(FINISH).await?;
    assert!(!fsfreeze::is_frozen(a.mountpoint())?);
    assert!(!fsfreeze::is_frozen(b.mountpoint())?);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_rpc_while_frozen_thaws_and_exits_0() -> anyhow::Result<()> {
    stop_while_frozen(Stop::Rpc).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guestctl_shutdown_while_frozen_thaws_and_exits_0() -> anyhow::Result<()> {
    stop_while_frozen(Stop::Guestctl).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_while_frozen_thaws_and_exits_0() -> anyhow::Result<()> {
    stop_while_frozen(Stop::Sigterm).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_when_idle_exits_0_and_stops_serving() -> anyhow::Result<()> {
    let s = Scratch::new()?;
    let mut agent = Agent::start(&s, &[]).await?;
    let mut rpc = agent.rpc().await?;
    rpc.shutdown().await??;
    let st = agent.wait_exit(EXIT).await?;
    assert_eq!(st.code(), Some(0), "{st}");
    let c = guestctl::run(&["--connect", &agent.uri(), "ping"]).await?;
    assert_eq!(c.code, Some(3), "nothing listens any more: {c}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_agent_thaws_what_a_killed_one_left_frozen() -> anyhow::Result<()> {
    let s = Scratch::new()?;
    let fs = LoopFs::new(&s, "a", FsType::Ext4, 32)?;
    let state = ShmStateDir::new()?;
    let mut first = Agent::builder(&s).state_dir(state.path()).start().await?;
    first.rpc().await?.quiesce(&[fs.mp()]).await??;
    let mut w = Writer::start(&s, &fs.join("data"), 1 << 20, Durability::Fsync)?;
    w.assert_blocked(BLOCK_WINDOW).await?;
    // The host's worst case: the agent dies holding the freeze, no chance to thaw.
    first.signal(Signal::SIGKILL)?;
    first.wait_exit(EXIT).await?;
    w.assert_blocked(BLOCK_WINDOW).await?;

    let second = Agent::builder(&s).state_dir(state.path()).start().await?;
    w.finish(FINISH).await?;
    assert!(!fsfreeze::is_frozen(fs.mountpoint())?);
    let st = second.rpc().await?.status().await??;
    assert!(!st.frozen, "{st:?}");
    assert_eq!(st.recovered_thaws, 1, "{st:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_agent_on_the_same_state_dir_leaves_a_live_freeze_alone() -> anyhow::Result<()> {
    // Start-up recovery may only thaw what a dead agent left, never a live agent's freeze
    // (only thaw what you froze). A second agent on the same state directory finds the
    // directory's lock held, says by whom, and runs without journal or recovery.
    let s = Scratch::new()?;
    let fs = LoopFs::new(&s, "a", FsType::Ext4, 32)?;
    let state = ShmStateDir::new()?;
    let first = Agent::builder(&s).state_dir(state.path()).start().await?;
    let mut rpc = first.rpc().await?;
    rpc.quiesce(&[fs.mp()]).await??;
    // `start` returns once it answers Ping: its start-up recovery is over.
    let second = Agent::builder(&s).state_dir(state.path()).start().await?;
    let in_use = format!("is in use by another agent (pid {})", first.pid());
    assert!(
        second.logs().contains(&in_use),
        "the second agent did not report the lock holder:\n{}",
        second.logs()
    );
    let st = second.rpc().await?.status().await??;
    assert_eq!(st.recovered_thaws, 0, "{st:?}");
    assert!(
        !st.frozen,
        "the second agent claims a freeze it did not make: {st:?}"
    );
    assert!(
        fsfreeze::is_frozen(fs.mountpoint())?,
        "a second agent's start-up thawed a live agent's freeze"
    );
    assert!(rpc.status().await??.frozen);
    assert_eq!(rpc.thaw().await??.thawed_count, 1);
    drop(second);
    Ok(())
}
