//! guestctl as scripts use it: exit codes that mean something (0 ok, 1 the agent said no,
//! 2 usage, 3 cannot connect, 4 timeout) and `--json` output that parses.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use system_tests::{guestctl, Agent, FsType, LoopFs, Scratch};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_socket_exits_3() -> anyhow::Result<()> {
    let s = Scratch::new()?;
    let uri = format!("unix://{}", s.join("nobody-listens.sock").display());
    let c = guestctl::run(&["--connect", &uri, "ping"]).await?;
    assert_eq!(c.code, Some(3), "{c}");
    assert!(!c.stderr.trim().is_empty(), "says why: {c}");
    let c = guestctl::run(&["--connect", &uri, "--json", "status"]).await?;
    assert_eq!(c.code, Some(3), "{c}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_errors_exit_2() -> anyhow::Result<()> {
    let s = Scratch::new()?;
    let uri = format!("unix://{}", s.join("x.sock").display());
    for args in [
        vec!["--connect", uri.as_str(), "no-such-command"],
        vec!["--connect", "ftp://example.invalid", "ping"],
        vec![
            "--connect",
            uri.as_str(),
            "init",
            "--volume",
            "no-equals-sign",
        ],
        vec!["ping"],
    ] {
        let c = guestctl::run(&args).await?;
        assert_eq!(c.code, Some(2), "{c}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_errors_exit_1() -> anyhow::Result<()> {
    let s = Scratch::new()?;
    let a = LoopFs::new(&s, "a", FsType::Ext4, 32)?;
    let b = LoopFs::new(&s, "b", FsType::Ext4, 32)?;
    let agent = Agent::start(&s, &[]).await?;
    let uri = agent.uri();
    let c = guestctl::run(&["--connect", &uri, "quiesce", "--mountpoint", &a.mp()]).await?;
    assert_eq!(c.code, Some(0), "{c}");
    // A different set while frozen: FAILED_PRECONDITION.
    let c = guestctl::run(&["--connect", &uri, "quiesce", "--mountpoint", &b.mp()]).await?;
    assert_eq!(c.code, Some(1), "{c}");
    assert!(
        c.stderr.contains("FAILED_PRECONDITION") || c.stderr.contains("FailedPrecondition"),
        "{c}"
    );
    // An invalid mountpoint: INVALID_ARGUMENT, also 1.
    let c = guestctl::run(&["--connect", &uri, "thaw"]).await?;
    assert_eq!(c.code, Some(0), "{c}");
    let c = guestctl::run(&[
        "--connect",
        &uri,
        "quiesce",
        "--mountpoint",
        "relative/path",
    ])
    .await?;
    assert_eq!(c.code, Some(1), "{c}");
    // An Init error (missing device) is an agent error too.
    let mp = s.join("vol").display().to_string();
    let spec = format!("{mp}=/dev/gatest-no-such-device");
    let c = guestctl::run(&["--connect", &uri, "init", "--volume", &spec]).await?;
    assert_eq!(c.code, Some(1), "{c}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_call_exits_4() -> anyhow::Result<()> {
    let s = Scratch::new()?;
    let agent = Agent::start(&s, &[]).await?;
    // A stopped agent accepts connections (the kernel queues them) but never answers.
    agent.signal(Signal::SIGSTOP)?;
    let t = Instant::now();
    let c = guestctl::run(&[
        "--connect",
        &agent.uri(),
        "--connect-timeout",
        "5",
        "--timeout",
        "1",
        "ping",
    ])
    .await;
    agent.signal(Signal::SIGCONT)?;
    let c = c?;
    assert_eq!(c.code, Some(4), "{c}");
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "took {:?} with --timeout 1",
        t.elapsed()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_output_parses_for_every_command() -> anyhow::Result<()> {
    let s = Scratch::new()?;
    let fs = LoopFs::new(&s, "a", FsType::Ext4, 32)?;
    let agent = Agent::start(&s, &[]).await?;
    let uri = agent.uri();

    let c = guestctl::run(&["--connect", &uri, "--json", "ping", "--count", "3"]).await?;
    assert_eq!(c.code, Some(0), "{c}");
    let j = c.json()?;
    assert!(j["version"].as_str().is_some_and(|v| !v.is_empty()), "{c}");
    assert_eq!(j["rtt_ms"].as_array().map(Vec::len), Some(3), "{c}");

    for args in [
        vec!["status"],
        vec!["quiesce", "--mountpoint", fs.mp().as_str()],
        vec!["status"],
        vec!["thaw"],
    ] {
        let mut full = vec!["--connect", uri.as_str(), "--json"];
        full.extend(args);
        let c = guestctl::run(&full).await?;
        assert_eq!(c.code, Some(0), "{c}");
        assert!(c.json()?.is_object(), "{c}");
        assert_eq!(
            c.stdout.trim().lines().count(),
            1,
            "one JSON object on one line: {c}"
        );
    }
    // Errors under --json keep stdout parseable or empty; the exit code carries the result.
    let c = guestctl::run(&[
        "--connect",
        &uri,
        "--json",
        "quiesce",
        "--mountpoint",
        "relative",
    ])
    .await?;
    assert_eq!(c.code, Some(1), "{c}");
    assert!(c.stdout.trim().is_empty() || c.json().is_ok(), "{c}");

    let c = guestctl::run(&["--connect", &uri, "--json", "shutdown"]).await?;
    assert_eq!(c.code, Some(0), "{c}");
    assert!(c.json()?.is_object(), "{c}");
    Ok(())
}
