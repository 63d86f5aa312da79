//! Freeze order with a loop filesystem stored inside another (B's image is a file on A):
//! B must be frozen before A and thawed after it. The wrong order deadlocks (syncing B's
//! dirty data writes through the already-frozen A), so every wait here is bounded and a wrong
//! order fails the test instead of hanging it.

use std::time::{Duration, Instant};

use guest_proto::v1::FsOutcome;
use system_tests::results::{expect_entry, position, summary, with_outcome};
use system_tests::{Agent, Durability, FsType, LoopDev, LoopFs, Mount, Rpc, Scratch, Writer};

const BLOCK_WINDOW: Duration = Duration::from_millis(500);
const FINISH: Duration = Duration::from_secs(20);
/// Quiesce with the right order takes well under a second here; the bound only catches a
/// deadlock (the agent's own operation timeout is set to 10 s).
const QUIESCE_BOUND: Duration = Duration::from_secs(15);
/// Dirty data left on the inner filesystem before the freeze.
const DIRTY_LEN: usize = 24 << 20;

/// Field order is drop order: B (inside A) first, then A, then the scratch directory.
struct Nested {
    b: LoopFs,
    a: LoopFs,
    s: Scratch,
}

fn nested() -> anyhow::Result<Nested> {
    let s = Scratch::new()?;
    let a = LoopFs::new(&s, "a", FsType::Ext4, 256)?;
    let b = LoopFs::nested(&s, "b", FsType::Ext4, 64, &a)?;
    Ok(Nested { b, a, s })
}

async fn agent(s: &Scratch) -> anyhow::Result<(Agent, Rpc)> {
    let agent = Agent::start(s, &["--operation-timeout", "10"]).await?;
    let rpc = agent.rpc().await?.with_timeout(QUIESCE_BOUND);
    Ok((agent, rpc))
}

/// Quiesces `req`, checks that `inner` was frozen before `outer` (report order and
/// freeze times), thaws, checks that `outer` was thawed before `inner`, and that writers
/// blocked on both complete afterwards.
async fn freeze_in_order(
    s: &Scratch,
    rpc: &mut Rpc,
    req: &[String],
    outer: &str,
    inner: &str,
    outer_file: std::path::PathBuf,
    inner_file: std::path::PathBuf,
) -> anyhow::Result<()> {
    let t = Instant::now();
    let q = rpc.quiesce(req).await??;
    let took = t.elapsed();
    let all = summary(&q.filesystems);
    println!("nested Quiesce took {took:?}: {all}");
    assert!(took < Duration::from_secs(10), "Quiesce took {took:?}");
    assert_eq!(q.frozen_count, 2, "{all}");
    let frozen = with_outcome(&q.filesystems, FsOutcome::Frozen);
    let (pi, po) = (
        position(&q.filesystems, inner),
        position(&q.filesystems, outer),
    );
    assert!(
        pi.is_some() && po.is_some() && pi < po,
        "inner {inner} must be frozen before outer {outer}: {all}"
    );
    assert!(
        frozen.contains(&inner.to_string()) && frozen.contains(&outer.to_string()),
        "{all}"
    );
    let st = rpc.status().await??;
    let since = |mp: &str| {
        st.filesystems
            .iter()
            .find(|f| f.mountpoint == mp)
            .map(|f| f.frozen_since_unix_ms)
    };
    assert!(since(inner) <= since(outer), "freeze times: {st:?}");

    let mut wa = Writer::start(s, &outer_file, 1 << 20, Durability::Fsync)?;
    let mut wb = Writer::start(s, &inner_file, 1 << 20, Durability::Fsync)?;
    wa.assert_blocked(BLOCK_WINDOW).await?;
    wb.assert_blocked(BLOCK_WINDOW).await?;

    let th = rpc.thaw().await??;
    let all = summary(&th.filesystems);
    assert_eq!(th.thawed_count, 2, "{all}");
    let (pi, po) = (
        position(&th.filesystems, inner),
        position(&th.filesystems, outer),
    );
    assert!(
        pi.is_some() && po.is_some() && po < pi,
        "outer {outer} must be thawed before inner {inner}: {all}"
    );
    wa.finish(FINISH).await?;
    wb.finish(FINISH).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inner_fs_with_dirty_data_is_frozen_before_its_host() -> anyhow::Result<()> {
    let n = nested()?;
    // Dirty data on both, not synced: freezing B flushes it through A.
    let mut dirty_b = Writer::start(&n.s, &n.b.join("dirty"), DIRTY_LEN, Durability::Dirty)?;
    dirty_b.finish(FINISH).await?;
    let mut dirty_a = Writer::start(&n.s, &n.a.join("dirty"), DIRTY_LEN, Durability::Dirty)?;
    dirty_a.finish(FINISH).await?;
    let (_agent, mut rpc) = agent(&n.s).await?;
    freeze_in_order(
        &n.s,
        &mut rpc,
        &[],
        &n.a.mp(),
        &n.b.mp(),
        n.a.join("w"),
        n.b.join("w"),
    )
    .await?;
    dirty_b.verify()?;
    dirty_a.verify()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dependency_beats_mount_order() -> anyhow::Result<()> {
    // A second mount of A, made after B's: reverse mount order alone would freeze A first
    // and deadlock. Request it in the wrong order too.
    let n = nested()?;
    let a2 = Mount::device(n.a.device(), &n.s.join("a2"))?;
    let a2_mp = a2.path().display().to_string();
    let mut dirty_b = Writer::start(&n.s, &n.b.join("dirty"), DIRTY_LEN, Durability::Dirty)?;
    dirty_b.finish(FINISH).await?;
    let (_agent, mut rpc) = agent(&n.s).await?;
    let req = vec![a2_mp.clone(), n.b.mp()];
    freeze_in_order(
        &n.s,
        &mut rpc,
        &req,
        &a2_mp,
        &n.b.mp(),
        a2.path().join("w"),
        n.b.join("w"),
    )
    .await?;
    dirty_b.verify()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_copied_while_frozen_holds_the_dirty_data() -> anyhow::Result<()> {
    // What the host does: Quiesce, copy the disk image, Thaw. The copy of A, which contains
    // B's image, must contain the data that was only dirty in B's page cache before.
    let n = nested()?;
    let mut dirty_b = Writer::start(&n.s, &n.b.join("dirty"), DIRTY_LEN, Durability::Dirty)?;
    dirty_b.finish(FINISH).await?;
    let (_agent, mut rpc) = agent(&n.s).await?;
    let q = rpc.quiesce(&[]).await??;
    assert_eq!(q.frozen_count, 2, "{}", summary(&q.filesystems));
    expect_entry(&q.filesystems, &n.b.mp());
    let snap_img = n.s.join("snapshot-a.img");
    let copy = {
        let (from, to) = (n.a.image().to_path_buf(), snap_img.clone());
        tokio::task::spawn_blocking(move || std::fs::copy(from, to))
    };
    let copied = tokio::time::timeout(FINISH, copy).await???;
    assert!(copied >= 256 << 20);
    let th = rpc.thaw().await??;
    assert_eq!(th.thawed_count, 2, "{}", summary(&th.filesystems));

    // Open the snapshot: A's copy read-only, then B's image inside it.
    let snap_a = LoopDev::attach_read_only(&snap_img)?;
    let snap_a_mnt = Mount::device_with(snap_a.device(), &n.s.join("snap-a"), "ro,noload")?;
    let snap_b = LoopDev::attach_read_only(&snap_a_mnt.path().join("b.img"))?;
    let snap_b_mnt = Mount::device_with(snap_b.device(), &n.s.join("snap-b"), "ro,noload")?;
    let got = std::fs::read(snap_b_mnt.path().join("dirty"))?;
    let want = std::fs::read(dirty_b.target())?;
    assert_eq!(got.len(), want.len(), "file size in the snapshot");
    assert!(
        got == want,
        "the snapshot's copy of B's dirty file differs from what was written"
    );
    drop(snap_b_mnt);
    drop(snap_b);
    Ok(())
}
