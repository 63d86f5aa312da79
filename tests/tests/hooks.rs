//! Freeze/thaw hooks (`--hooks-dir`, the qemu-ga fsfreeze-hook.d convention): executables run
//! in name order with the single argument `freeze` before anything is frozen and `thaw` after
//! the thaw, with their output in the agent's log. A failing or hanging freeze hook aborts the
//! Quiesce with FAILED_PRECONDITION and nothing frozen, and the thaw hooks still run so that
//! whatever the freeze hooks locked is released. A failing thaw hook does not fail the Thaw.

use std::time::{Duration, Instant};

use system_tests::reliability::hookdir::HookDir;
use system_tests::reliability::ThawGuard;
use system_tests::results::{now_ms, summary};
use system_tests::{fsfreeze, Agent, Durability, FsType, LoopFs, Scratch, Writer};
use tonic::Code;

const FINISH: Duration = Duration::from_secs(20);

/// A hook body that writes `<fs>/hook-<phase>` (on the filesystem being frozen) and says so.
fn marker_body(fs: &LoopFs) -> String {
    format!(
        "echo \"marker $1\" > '{}/hook-'\"$1\"\necho \"hello from $(basename \"$0\") $1\"",
        fs.mountpoint().display()
    )
}

async fn agent_with_hooks(
    s: &Scratch,
    hooks: &HookDir,
    timeout_secs: &str,
) -> anyhow::Result<Agent> {
    Ok(Agent::builder(s)
        .arg("--hooks-dir")
        .arg(hooks.path().display().to_string())
        .args(["--hook-timeout", timeout_secs])
        .start()
        .await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_run_in_name_order_with_one_argument_around_the_freeze() -> anyhow::Result<()> {
    let s = Scratch::new()?;
    let fs = LoopFs::new(&s, "a", FsType::Ext4, 32)?;
    let _guard = ThawGuard::new(&[fs.mountpoint()]);
    let hooks = HookDir::new(&s, "hooks")?;
    hooks.add_logging("20-second", "exit 0")?;
    hooks.add_logging("10-flush", &marker_body(&fs))?;
    hooks.add_plain(
        "05-not-executable",
        &format!("echo ran > '{}/bad'", s.path().display()),
    )?;
    hooks.add(
        ".10-hidden",
        &format!("echo ran > '{}/bad'", s.path().display()),
    )?;
    let agent = agent_with_hooks(&s, &hooks, "5").await?;
    let mut rpc = agent.rpc().await?;

    let before = now_ms();
    let q = rpc.quiesce(&[fs.mp()]).await??;
    assert_eq!(q.frozen_count, 1, "{}", summary(&q.filesystems));
    let st = rpc.status().await??;
    assert!(st.frozen, "{st:?}");
    let runs = hooks.runs()?;
    assert_eq!(
        hooks.run_names()?,
        ["10-flush freeze", "20-second freeze"],
        "freeze hooks in name order, one argument each"
    );
    for r in &runs {
        assert_eq!(r.args, ["freeze"], "{r:?}");
        assert!(
            r.at_ms >= before && r.at_ms <= st.frozen_since_unix_ms,
            "freeze hook {r:?} did not run before the freeze at {}",
            st.frozen_since_unix_ms
        );
    }
    // The freeze hook could write to the filesystem: it ran before the freeze.
    assert_eq!(
        std::fs::read_to_string(fs.join("hook-freeze"))?,
        "marker freeze\n"
    );
    assert!(fsfreeze::is_frozen(fs.mountpoint())?);

    let t = Instant::now();
    assert_eq!(rpc.thaw().await??.thawed_count, 1);
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "Thaw took {:?}",
        t.elapsed()
    );
    assert_eq!(
        hooks.run_names()?,
        [
            "10-flush freeze",
            "20-second freeze",
            "10-flush thaw",
            "20-second thaw"
        ]
    );
    // The thaw hook wrote to the filesystem without blocking: it ran after the thaw.
    assert_eq!(
        std::fs::read_to_string(fs.join("hook-thaw"))?,
        "marker thaw\n"
    );
    assert!(
        !s.join("bad").exists(),
        "a non-executable or hidden file was run as a hook"
    );
    let logs = agent.logs();
    for line in ["hello from 10-flush freeze", "hello from 10-flush thaw"] {
        assert!(
            logs.contains(line),
            "hook output {line:?} not in the agent log:\n{logs}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_freeze_hook_aborts_quiesce_and_thaw_hooks_still_run() -> anyhow::Result<()> {
    let s = Scratch::new()?;
    let fs = LoopFs::new(&s, "a", FsType::Ext4, 32)?;
    let _guard = ThawGuard::new(&[fs.mountpoint()]);
    let hooks = HookDir::new(&s, "hooks")?;
    hooks.add_logging("10-lock", "exit 0")?;
    let failing = hooks.add_logging(
        "15-fail",
        "if [ \"$1\" = freeze ]; then echo 'cannot lock the database' >&2; exit 3; fi",
    )?;
    hooks.add_logging("20-never-on-freeze", "exit 0")?;
    let agent = agent_with_hooks(&s, &hooks, "5").await?;
    let mut rpc = agent.rpc().await?;

    let err = match rpc.quiesce(&[]).await? {
        Ok(q) => anyhow::bail!(
            "Quiesce succeeded despite a failing hook: {}",
            summary(&q.filesystems)
        ),
        Err(e) => e,
    };
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    let msg = err.message();
    for part in [
        "15-fail",
        "freeze",
        "cannot lock the database",
        "exit status: 3",
    ] {
        assert!(msg.contains(part), "error message lacks {part:?}: {msg}");
    }
    let st = rpc.status().await??;
    assert!(!st.frozen && st.filesystems.is_empty(), "{st:?}");
    assert!(
        !fsfreeze::is_frozen(fs.mountpoint())?,
        "frozen although a freeze hook failed"
    );
    assert_eq!(
        hooks.run_names()?,
        [
            "10-lock freeze",
            "15-fail freeze",
            "10-lock thaw",
            "15-fail thaw",
            "20-never-on-freeze thaw"
        ],
        "freeze stops at the failing hook; every thaw hook runs"
    );
    let mut w = Writer::start(&s, &fs.join("data"), 1 << 20, Durability::Fsync)?;
    w.finish(FINISH).await?;

    // Nothing is stuck: with the failing hook disabled the next Quiesce works.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&failing, std::fs::Permissions::from_mode(0o644))?;
    let q = rpc.quiesce(&[]).await??;
    assert_eq!(q.frozen_count, 1, "{}", summary(&q.filesystems));
    assert_eq!(rpc.thaw().await??.thawed_count, 1);
    Ok(())
}

/// Children of `pid` whose command name is `comm`.
fn children_named(pid: u32, comm: &str) -> Vec<u32> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
                return false;
            };
            let Some((head, tail)) = stat.rsplit_once(')') else {
                return false;
            };
            let name = head.split_once('(').map(|x| x.1).unwrap_or("");
            let ppid = tail
                .split_whitespace()
                .nth(1)
                .and_then(|x| x.parse::<u32>().ok());
            name == comm && ppid == Some(pid)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hanging_freeze_hook_is_killed_after_the_hook_timeout() -> anyhow::Result<()> {
    let s = Scratch::new()?;
    let fs = LoopFs::new(&s, "a", FsType::Ext4, 32)?;
    let _guard = ThawGuard::new(&[fs.mountpoint()]);
    let hooks = HookDir::new(&s, "hooks")?;
    hooks.add_logging("10-slow", "if [ \"$1\" = freeze ]; then exec sleep 300; fi")?;
    // Long enough to look at the running hook on a loaded machine.
    let agent = agent_with_hooks(&s, &hooks, "5").await?;
    let mut rpc = agent.rpc().await?;

    let mut q_rpc = rpc.clone();
    let t = Instant::now();
    let quiesce = tokio::spawn(async move { q_rpc.quiesce(&[]).await });
    let running = Instant::now();
    while children_named(agent.pid(), "sleep").len() != 1 {
        assert!(
            running.elapsed() < Duration::from_secs(4),
            "the hook is not running"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The agent answers while a hook runs (not after it: that would take seconds).
    let p = Instant::now();
    rpc.ping().await??;
    assert!(
        p.elapsed() < Duration::from_secs(1),
        "Ping took {:?}",
        p.elapsed()
    );

    let err = match quiesce.await?? {
        Ok(q) => anyhow::bail!(
            "Quiesce succeeded despite a hanging hook: {}",
            summary(&q.filesystems)
        ),
        Err(e) => e,
    };
    let took = t.elapsed();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains("10-slow") && err.message().contains("timed out"),
        "{err:?}"
    );
    assert!(
        took >= Duration::from_millis(4900) && took < Duration::from_secs(10),
        "hook timeout 5 s, Quiesce failed after {took:?}"
    );
    assert!(!rpc.status().await??.frozen);
    assert!(!fsfreeze::is_frozen(fs.mountpoint())?);
    assert_eq!(hooks.run_names()?, ["10-slow freeze", "10-slow thaw"]);
    // The hook process was killed, not left behind.
    let start = Instant::now();
    while !children_named(agent.pid(), "sleep").is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "the timed-out hook still runs"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_thaw_hook_is_logged_but_does_not_fail_the_thaw() -> anyhow::Result<()> {
    let s = Scratch::new()?;
    let fs = LoopFs::new(&s, "a", FsType::Ext4, 32)?;
    let _guard = ThawGuard::new(&[fs.mountpoint()]);
    let hooks = HookDir::new(&s, "hooks")?;
    hooks.add_logging(
        "10-resume",
        "if [ \"$1\" = thaw ]; then echo 'resume failed' >&2; exit 4; fi",
    )?;
    hooks.add_logging("20-after", "exit 0")?;
    let agent = agent_with_hooks(&s, &hooks, "5").await?;
    let mut rpc = agent.rpc().await?;
    assert_eq!(rpc.quiesce(&[fs.mp()]).await??.frozen_count, 1);
    let t = rpc.thaw().await??;
    assert_eq!(t.thawed_count, 1, "{}", summary(&t.filesystems));
    assert!(!fsfreeze::is_frozen(fs.mountpoint())?);
    assert_eq!(
        hooks.run_names()?,
        [
            "10-resume freeze",
            "20-after freeze",
            "10-resume thaw",
            "20-after thaw"
        ],
        "a failing thaw hook does not stop the others"
    );
    let logs = agent.logs();
    assert!(
        logs.contains("10-resume") && logs.contains("resume failed"),
        "the failing thaw hook is not logged:\n{logs}"
    );
    Ok(())
}
