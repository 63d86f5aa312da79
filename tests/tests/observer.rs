//! The eBPF observer through the agent's own interface: `--ebpf required` with each freeze
//! hook the operator can choose, seen through FreezeStatus while `fsfreeze` (not the agent)
//! holds a loop filesystem frozen and a `dd` writer is blocked on it.
//!
//! * `--ebpf-freeze-hook ioctl` and `sync-fs` (the default on kernels without trampolines):
//!   the freeze itself is seen (origin "other", by fsfreeze), with or without a writer.
//! * `--ebpf-freeze-hook none` (no syscall tracepoint: no per-syscall cost): nothing is known
//!   until a writer blocks; then the freeze shows up with origin "unknown" and the writer.
//! * A bad hook name is refused at start-up with a message naming the choices.

use std::time::{Duration, Instant};

use guest_proto::v1::FreezeStatusResponse;
use system_tests::reliability::ThawGuard;
use system_tests::rpc::Rpc;
use system_tests::{Agent, Durability, ExternalFreeze, FsType, LoopFs, Scratch, Writer};

const SEEN: Duration = Duration::from_secs(5);
const FINISH: Duration = Duration::from_secs(30);

/// Polls FreezeStatus until `pred` holds; returns the last answer either way.
async fn status_until(
    rpc: &mut Rpc,
    pred: impl Fn(&FreezeStatusResponse) -> bool,
) -> anyhow::Result<(bool, FreezeStatusResponse)> {
    let start = Instant::now();
    loop {
        let st = rpc.status().await??;
        if pred(&st) {
            return Ok((true, st));
        }
        if start.elapsed() > SEEN {
            return Ok((false, st));
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn observed<'a>(
    st: &'a FreezeStatusResponse,
    mp: &str,
) -> Option<&'a guest_proto::v1::ObservedFreeze> {
    st.observed.iter().find(|o| o.mountpoint == mp)
}

async fn external_freeze_seen(hook: &str) -> anyhow::Result<()> {
    let s = Scratch::new()?;
    let fs = LoopFs::new(&s, "obs", FsType::Ext4, 32)?;
    let _guard = ThawGuard::new(&[fs.mountpoint()]);
    let agent = Agent::builder(&s)
        .args(["--ebpf", "required", "--ebpf-freeze-hook", hook])
        .start()
        .await?;
    let mut rpc = agent.rpc().await?.with_timeout(Duration::from_secs(10));
    let st = rpc.status().await??;
    let ebpf = st.ebpf.clone().unwrap_or_default();
    let want = match hook {
        "ioctl" => "ioctl_tracepoints",
        "sync-fs" => "sync_fs",
        other => other,
    };
    let sees_freezes = hook != "none";
    assert!(ebpf.active, "{ebpf:?}\n{}", agent.logs());
    assert_eq!(ebpf.freeze_source, want, "{ebpf:?}");

    let mp = fs.mp();
    let freeze = ExternalFreeze::freeze(fs.mountpoint())?;
    let before_writer = if sees_freezes {
        // The collector reports the freeze event when it gets to it.
        status_until(&mut rpc, |st| observed(st, &mp).is_some())
            .await?
            .1
    } else {
        // Nothing can report it; give a wrong report time to show up.
        tokio::time::sleep(Duration::from_millis(200)).await;
        rpc.status().await??
    };
    match sees_freezes {
        true => {
            let o = observed(&before_writer, &mp).unwrap_or_else(|| {
                panic!("fsfreeze not seen by the {hook} hook: {before_writer:?}")
            });
            assert_eq!(
                (o.origin.as_str(), o.frozen_by_comm.as_str()),
                ("other", "fsfreeze")
            );
            assert_eq!(o.frozen_by_pid, freeze.pid(), "{o:?}");
        }
        false => assert!(
            observed(&before_writer, &mp).is_none(),
            "no freeze hook and no writer, yet the freeze is known: {before_writer:?}"
        ),
    }

    let mut w = Writer::start(&s, &fs.join("blocked"), 256 << 10, Durability::Dirty)?;
    let pid = w.pid().expect("writer running");
    let (seen, st) = status_until(&mut rpc, |st| {
        observed(st, &mp).is_some_and(|o| o.blocked_writers.iter().any(|b| b.pid == pid))
    })
    .await?;
    assert!(
        seen,
        "writer {pid} not reported blocked: {st:?}\n{}",
        agent.logs()
    );
    let o = observed(&st, &mp).expect("observed");
    let origin = if sees_freezes { "other" } else { "unknown" };
    assert_eq!(o.origin, origin, "{o:?}");
    let ours = o
        .blocked_writers
        .iter()
        .find(|b| b.pid == pid)
        .expect("our writer");
    assert_eq!(
        (ours.level.as_str(), ours.comm.as_str()),
        ("WRITE", "dd"),
        "{o:?}"
    );
    // The writer the observer reports really sleeps in the kernel (held in D state).
    w.assert_blocked(Duration::from_millis(300)).await?;

    freeze.thaw()?;
    w.finish(FINISH).await?;
    let (gone, st) = status_until(&mut rpc, |st| observed(st, &mp).is_none()).await?;
    assert!(gone, "still reported frozen after the thaw: {st:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ioctl_hook_sees_an_external_freeze_and_its_blocked_writer() -> anyhow::Result<()> {
    external_freeze_seen("ioctl").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_fs_hook_sees_an_external_freeze_and_its_blocked_writer() -> anyhow::Result<()> {
    external_freeze_seen("sync-fs").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_freeze_hook_a_blocked_writer_reveals_the_freeze() -> anyhow::Result<()> {
    external_freeze_seen("none").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_freeze_hook_is_refused_at_start() -> anyhow::Result<()> {
    let s = Scratch::new()?;
    let mut agent = Agent::builder(&s)
        .args(["--ebpf-freeze-hook", "kprobe"])
        .spawn()?;
    let status = agent.wait_exit(Duration::from_secs(10)).await?;
    assert_eq!(status.code(), Some(2), "{}", agent.logs());
    let logs = agent.logs();
    assert!(
        logs.contains(
            "invalid freeze hook `kprobe` (expected one of: auto fexit sync-fs ioctl none)"
        ),
        "the refusal should name the choices: {logs}"
    );
    Ok(())
}
