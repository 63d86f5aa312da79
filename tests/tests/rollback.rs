//! Partial failures, for real: a filesystem someone else froze (EBUSY: reported, not
//! counted, never thawed by the agent) and a filesystem whose FIFREEZE fails (a shut-down
//! ext4 or xfs: EIO), where everything frozen before it must be thawed again and the call
//! must fail with INTERNAL naming the filesystem and the errno.

use std::time::Duration;

use guest_proto::v1::FsOutcome;
use system_tests::results::{outcome, summary};
use system_tests::{fsfreeze, Agent, Durability, ExternalFreeze, FsType, LoopFs, Scratch, Writer};
use tonic::Code;

const BLOCK_WINDOW: Duration = Duration::from_millis(500);
const FINISH: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn someone_elses_freeze_is_reported_not_counted_and_never_thawed() -> anyhow::Result<()> {
    let s = Scratch::new()?;
    let mine = LoopFs::new(&s, "mine", FsType::Ext4, 32)?;
    let theirs = LoopFs::new(&s, "theirs", FsType::Ext4, 32)?;
    let external = ExternalFreeze::freeze(theirs.mountpoint())?;
    let agent = Agent::start(&s, &[]).await?;
    let mut rpc = agent.rpc().await?;

    let q = rpc.quiesce(&[]).await??;
    let all = summary(&q.filesystems);
    assert_eq!(q.frozen_count, 1, "EBUSY is not counted: {all}");
    assert_eq!(
        outcome(&q.filesystems, &mine.mp()),
        Some(FsOutcome::Frozen),
        "{all}"
    );
    assert_eq!(
        outcome(&q.filesystems, &theirs.mp()),
        Some(FsOutcome::AlreadyFrozen),
        "{all}"
    );
    let st = rpc.status().await??;
    let held: Vec<&str> = st
        .filesystems
        .iter()
        .map(|f| f.mountpoint.as_str())
        .collect();
    assert_eq!(held, vec![mine.mp().as_str()], "{st:?}");

    let t = rpc.thaw().await??;
    let all = summary(&t.filesystems);
    assert_eq!(t.thawed_count, 1, "{all}");
    assert_eq!(
        outcome(&t.filesystems, &mine.mp()),
        Some(FsOutcome::Thawed),
        "{all}"
    );
    assert_ne!(
        outcome(&t.filesystems, &theirs.mp()),
        Some(FsOutcome::Thawed),
        "{all}"
    );

    // Still frozen by its owner: a writer blocks, the kernel says EBUSY to another freeze.
    let mut w = Writer::start(&s, &theirs.join("data"), 1 << 20, Durability::Fsync)?;
    w.assert_blocked(BLOCK_WINDOW).await?;
    assert!(
        fsfreeze::is_frozen(theirs.mountpoint())?,
        "the agent thawed a freeze that was not its own"
    );
    let mut wm = Writer::start(&s, &mine.join("data"), 1 << 20, Durability::Fsync)?;
    wm.finish(FINISH).await?;

    external.thaw()?;
    w.finish(FINISH).await?;
    Ok(())
}

/// True when `msg` says EIO (as errno name, text or number).
fn names_eio(msg: &str) -> bool {
    msg.contains("EIO") || msg.contains("Input/output error") || msg.contains("os error 5")
}

/// The number after "rolled back " in `msg`, if any.
fn rolled_back_count(msg: &str) -> Option<u32> {
    let rest = &msg[msg.find("rolled back ")? + "rolled back ".len()..];
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// `bad` is mounted first and shut down; `good` is mounted after it, so in reverse mount
/// order `good` is frozen first. Quiesce must fail on `bad`, and `good` must end up thawed.
async fn hard_failure(bad_type: FsType, extra: &[&str]) -> anyhow::Result<(String, String)> {
    let s = Scratch::new()?;
    let bad = LoopFs::new(&s, "bad", bad_type, 32)?;
    let good = LoopFs::new(&s, "good", FsType::Ext4, 32)?;
    bad.shut_down()?;
    let agent = Agent::start(&s, extra).await?;
    let mut rpc = agent.rpc().await?;

    let e = rpc.quiesce(&[]).await?.unwrap_err();
    let msg = e.message().to_string();
    assert_eq!(e.code(), Code::Internal, "{e:?}");
    assert!(
        msg.contains(&bad.mp()),
        "the status names the failing filesystem: {msg}"
    );
    assert!(names_eio(&msg), "the status names the errno: {msg}");

    let st = rpc.status().await??;
    assert!(
        !st.frozen && st.filesystems.is_empty(),
        "everything rolled back: {st:?}"
    );
    assert!(
        !fsfreeze::is_frozen(good.mountpoint())?,
        "{} left frozen",
        good.mp()
    );
    let mut w = Writer::start(&s, &good.join("data"), 1 << 20, Durability::Fsync)?;
    w.finish(FINISH).await?;
    // The agent keeps working: a Quiesce of the good one alone succeeds.
    let q = rpc.quiesce(&[good.mp()]).await??;
    assert_eq!(q.frozen_count, 1, "{}", summary(&q.filesystems));
    rpc.thaw().await??;
    Ok((msg, agent.logs()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifreeze_failure_rolls_back_what_was_frozen_before_it() -> anyhow::Result<()> {
    // One filesystem at a time, so `good` is certainly frozen before `bad` fails.
    let (msg, logs) = hard_failure(FsType::Ext4, &["--no-parallel-freeze"]).await?;
    assert_eq!(
        rolled_back_count(&msg),
        Some(1),
        "good was frozen first and rolled back: {msg}\n{logs}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifreeze_failure_with_parallel_freeze_leaves_nothing_frozen() -> anyhow::Result<()> {
    hard_failure(FsType::Ext4, &[]).await.map(drop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shut_down_xfs_fails_the_quiesce_and_rolls_back() -> anyhow::Result<()> {
    // On xfs even opening the mountpoint fails with EIO once it is shut down.
    hard_failure(FsType::Xfs, &["--no-parallel-freeze"])
        .await
        .map(drop)
}

#[test]
fn rolled_back_count_reads_the_number() {
    assert_eq!(
        rolled_back_count("x failed: EIO; rolled back 2 filesystem(s)"),
        Some(2)
    );
    assert_eq!(rolled_back_count("nothing"), None);
    assert!(names_eio("EIO (Input/output error)"));
    assert!(!names_eio("EBUSY"));
}
