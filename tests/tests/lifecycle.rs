//! Stopping the agent while it holds filesystems frozen: the Shutdown RPC, guestctl
//! shutdown and SIGTERM all thaw first and exit with status 0; the blocked writer resumes.

use std::time::Duration;

use nix::sys::signal::Signal;
use system_tests::results::summary;
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
