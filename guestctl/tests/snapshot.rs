//! `guestctl snapshot` against the real `guest-agent` on real loop filesystems (root only).
//!
//! Each test has its own scratch directory under /var/tmp; the agent runs with
//! `--freeze-only <scratch>`, and every filesystem is thawed by a guard that also runs when a
//! test panics (plus the fixtures' own clean-up). The agent binary is
//! `<workspace>/target/debug/guest-agent`: build it first with `cargo build -p guest-agent`.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::guestctl;
use system_tests::fsfreeze::is_frozen;
use system_tests::{bins, Agent, FsType, LoopFs, Scratch};
use tokio::process::Command;

/// Thaws the filesystem when dropped (panic included); the agent may be dead by then.
struct ThawGuard(PathBuf);

impl Drop for ThawGuard {
    fn drop(&mut self) {
        let _ = std::process::Command::new("fsfreeze")
            .arg("-u")
            .arg(&self.0)
            .stderr(Stdio::null())
            .status();
    }
}

fn agent_bin_or_panic() {
    if let Err(e) = bins::guest_agent() {
        panic!("the guest-agent binary is needed: {e} (or `cargo build -p guest-agent`)");
    }
}

/// One loop filesystem, an agent allowed to freeze only below the scratch directory.
async fn setup(extra_agent_args: &[&str]) -> (Scratch, LoopFs, ThawGuard, Agent) {
    agent_bin_or_panic();
    let scratch = Scratch::new().expect("scratch directory");
    let fs = LoopFs::new(&scratch, "data", FsType::Ext4, 32).expect("loop filesystem");
    let guard = ThawGuard(fs.mountpoint().to_path_buf());
    let agent = Agent::start(&scratch, extra_agent_args)
        .await
        .expect("agent starts");
    (scratch, fs, guard, agent)
}

fn snapshot_args(agent: &Agent, mp: &Path, flags: &[&str], command: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = vec![
        "--connect".into(),
        agent.uri(),
        "--json".into(),
        "snapshot".into(),
        "--mountpoint".into(),
        mp.display().to_string(),
    ];
    v.extend(flags.iter().map(|s| s.to_string()));
    v.push("--".into());
    v.extend(command.iter().map(|s| s.to_string()));
    v
}

fn report(out: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON object ({e}):\n{stdout}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn phase<'a>(r: &'a Value, name: &str) -> &'a Value {
    r["phases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no phase {name} in {r}"))
}

async fn agent_status(agent: &Agent) -> Value {
    let out = guestctl(
        &[
            "--connect".into(),
            agent.uri(),
            "--json".into(),
            "status".into(),
        ],
        Duration::from_secs(10),
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    report(&out)
}

/// A command that proves, from inside, that `mp` is frozen (FIFREEZE answers EBUSY) and the
/// fake VMM `pid` is stopped, and writes the trace context it was given to `env_out`.
fn verifying_command(mp: &Path, pid: u32, env_out: &Path) -> String {
    format!(
        r#"echo "$TRACEPARENT $GUESTCTL_TRACE_ID" > {env}
state=$(sed 's/.*) //' /proc/{pid}/stat | cut -c1)
[ "$state" = T ] || {{ echo "VMM state $state, not stopped" >&2; exit 10; }}
if fsfreeze -f {mp} 2>{err}; then fsfreeze -u {mp}; echo "NOT FROZEN" >&2; exit 11; fi
grep -qi busy {err} || {{ cat {err} >&2; exit 12; }}
echo "verified: frozen and paused""#,
        env = env_out.display(),
        mp = mp.display(),
        err = env_out.with_extension("err").display(),
    )
}

/// A child process standing in for the VMM, killed on drop.
struct FakeVmm(std::process::Child);

impl Drop for FakeVmm {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            nix::sys::signal::Signal::SIGCONT,
        );
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn proc_state(pid: u32) -> char {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    stat.rsplit_once(')')
        .unwrap()
        .1
        .trim_start()
        .chars()
        .next()
        .unwrap()
}

#[tokio::test]
async fn normal_path_runs_the_command_frozen_and_paused_then_thaws() {
    let (scratch, fs, _guard, agent) = setup(&[]).await;
    let vmm = FakeVmm(
        std::process::Command::new("sleep")
            .arg("120")
            .spawn()
            .unwrap(),
    );
    let vmm_pid = vmm.0.id();
    let env_out = scratch.join("cmd-env.txt");
    let script = verifying_command(fs.mountpoint(), vmm_pid, &env_out);
    let pid = vmm_pid.to_string();
    let args = snapshot_args(
        &agent,
        fs.mountpoint(),
        &["--pause-pid", &pid],
        &["sh", "-c", &script],
    );
    let out = guestctl(&args, Duration::from_secs(60)).await;
    let r = report(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{r}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(r["ok"], true);
    assert_eq!(r["quiesce"]["result"], "ok");
    assert_eq!(r["quiesce"]["frozen_count"], 1);
    assert_eq!(r["command"]["exit_code"], 0);
    assert_eq!(r["thaw"]["confirmed"], true);
    assert_eq!(r["thaw"]["thawed_count"], 1);
    let names: Vec<&str> = r["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["quiesce", "pause", "command", "resume", "thaw", "confirm"]
    );
    for p in r["phases"].as_array().unwrap() {
        assert_eq!(p["outcome"], "ok", "{p}");
        assert!(p["ms"].as_f64().unwrap() >= 0.0);
    }
    // The command's output went to stderr, so stdout is just the report.
    assert!(String::from_utf8_lossy(&out.stderr).contains("verified: frozen and paused"));
    // The command got this snapshot's trace context.
    let trace_id = r["trace_id"].as_str().unwrap();
    assert_eq!(trace_id.len(), 32);
    let env = std::fs::read_to_string(&env_out).unwrap();
    let (traceparent, id) = env.trim().split_once(' ').unwrap();
    assert_eq!(id, trace_id);
    assert!(
        traceparent.starts_with(&format!("00-{trace_id}-")),
        "{traceparent}"
    );
    // Afterwards: resumed, thawed, writable.
    assert_ne!(proc_state(vmm_pid), 'T');
    assert!(!is_frozen(fs.mountpoint()).unwrap());
    std::fs::write(fs.join("after"), b"ok").unwrap();
    assert_eq!(agent_status(&agent).await["frozen"], false);
}

#[tokio::test]
async fn human_output_prints_every_phase_and_the_trace_id() {
    let (_scratch, fs, _guard, agent) = setup(&[]).await;
    let mut args = snapshot_args(&agent, fs.mountpoint(), &[], &["true"]);
    args.retain(|a| a != "--json");
    let out = guestctl(&args, Duration::from_secs(60)).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.starts_with("snapshot trace_id "), "{text}");
    for name in [
        "quiesce", "pause", "command", "resume", "thaw", "confirm", "total",
    ] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(name) && l.contains(" ms")),
            "no {name} line in:\n{text}"
        );
    }
    assert!(text.contains("confirmed thawed"), "{text}");
}

#[tokio::test]
async fn failing_command_still_thaws_and_exits_7() {
    let (_scratch, fs, _guard, agent) = setup(&[]).await;
    let args = snapshot_args(&agent, fs.mountpoint(), &[], &["sh", "-c", "exit 3"]);
    let out = guestctl(&args, Duration::from_secs(60)).await;
    let r = report(&out);
    assert_eq!(out.status.code(), Some(7), "{r}");
    assert_eq!(r["command"]["exit_code"], 3);
    assert_eq!(phase(&r, "command")["outcome"], "failed");
    assert_eq!(r["thaw"]["confirmed"], true);
    assert_eq!(r["thaw"]["thawed_count"], 1);
    assert!(!is_frozen(fs.mountpoint()).unwrap());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("the command failed"), "{stderr}");
}

#[tokio::test]
async fn missing_command_still_thaws_and_exits_7() {
    let (_scratch, fs, _guard, agent) = setup(&[]).await;
    let args = snapshot_args(&agent, fs.mountpoint(), &[], &["/nonexistent/copy-tool"]);
    let out = guestctl(&args, Duration::from_secs(60)).await;
    let r = report(&out);
    assert_eq!(out.status.code(), Some(7), "{r}");
    assert_eq!(r["command"]["ran"], false);
    assert!(r["command"]["error"]
        .as_str()
        .unwrap()
        .contains("/nonexistent/copy-tool"));
    assert_eq!(r["thaw"]["confirmed"], true);
    assert!(!is_frozen(fs.mountpoint()).unwrap());
}

/// The freeze hook sleeps 2 s, the client waits 0.5 s: the guest freezes after the client gave
/// up. The Thaw is queued behind the Quiesce in the agent, and the VM ends thawed.
#[tokio::test]
async fn quiesce_timeout_with_a_late_freeze_ends_thawed() {
    agent_bin_or_panic();
    let scratch = Scratch::new().unwrap();
    let hooks = scratch.subdir("hooks").unwrap();
    let hook = hooks.join("10-slow");
    std::fs::write(&hook, "#!/bin/sh\n[ \"$1\" = freeze ] && sleep 2\nexit 0\n").unwrap();
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    let fs = LoopFs::new(&scratch, "data", FsType::Ext4, 32).unwrap();
    let _guard = ThawGuard(fs.mountpoint().to_path_buf());
    let hooks_arg = hooks.display().to_string();
    let agent = Agent::start(&scratch, &["--hooks-dir", &hooks_arg])
        .await
        .unwrap();
    let marker = scratch.join("command-ran");
    let touch = format!("touch {}", marker.display());
    let args = snapshot_args(
        &agent,
        fs.mountpoint(),
        &["--quiesce-timeout", "0.5", "--thaw-deadline", "20"],
        &["sh", "-c", &touch],
    );
    let started = Instant::now();
    let out = guestctl(&args, Duration::from_secs(60)).await;
    let r = report(&out);
    assert_eq!(out.status.code(), Some(6), "{r}");
    assert_eq!(r["quiesce"]["result"], "timeout");
    assert_eq!(phase(&r, "quiesce")["outcome"], "timeout");
    assert_eq!(phase(&r, "command")["outcome"], "skipped");
    assert!(
        !marker.exists(),
        "the command must not run without a freeze"
    );
    // The guest did freeze after the client gave up, and guestctl thawed that freeze. (The
    // late answer's count may be 0: the agent releases its operation lock before it builds
    // the answer, so the queued Thaw can empty the set first.)
    assert!(
        r["quiesce"]["late_answer"]
            .as_str()
            .is_some_and(|a| a.starts_with("froze ")),
        "{r}"
    );
    assert_eq!(r["thaw"]["confirmed"], true, "{r}");
    assert!(r["thaw"]["thawed_count"].as_u64().unwrap() >= 1, "{r}");
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "the confirmation waited for the late freeze"
    );
    assert!(!is_frozen(fs.mountpoint()).unwrap());
    let st = agent_status(&agent).await;
    assert_eq!(st["frozen"], false, "{st}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("quiesce failed"), "{stderr}");
    assert!(stderr.contains("confirmed thawed"), "{stderr}");
}

/// The command kills the agent while the filesystem is frozen: no thaw can be confirmed, and
/// guestctl says so clearly, within the deadline.
#[tokio::test]
async fn agent_killed_mid_sequence_is_a_clear_exit_5() {
    let (_scratch, fs, _guard, agent) = setup(&[]).await;
    let kill = format!("kill -KILL {}; sleep 0.2", agent.pid());
    let args = snapshot_args(
        &agent,
        fs.mountpoint(),
        &["--thaw-deadline", "2"],
        &["sh", "-c", &kill],
    );
    let started = Instant::now();
    let out = guestctl(&args, Duration::from_secs(30)).await;
    let elapsed = started.elapsed();
    let r = report(&out);
    assert_eq!(out.status.code(), Some(5), "{r}");
    assert_eq!(r["ok"], false);
    assert_eq!(r["thaw"]["confirmed"], false);
    assert!(r["thaw"]["attempts"].as_u64().unwrap() >= 2, "retried: {r}");
    assert!(r["thaw"]["error"].as_str().is_some(), "{r}");
    assert!(
        elapsed < Duration::from_secs(10),
        "bounded by the deadline: {elapsed:?}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.to_lowercase().contains("the vm may still be frozen"),
        "{stderr}"
    );
    // Indeed: the dead agent left it frozen (the guard thaws it).
    assert!(is_frozen(fs.mountpoint()).unwrap());
}

/// SIGTERM while the command runs: forwarded to the command, the sequence still resumes and
/// thaws, exit 143.
#[tokio::test]
async fn sigterm_during_the_command_still_thaws() {
    let (scratch, fs, _guard, agent) = setup(&[]).await;
    let started_marker = scratch.join("command-started");
    let script = format!("touch {}; sleep 30", started_marker.display());
    let args = snapshot_args(&agent, fs.mountpoint(), &[], &["sh", "-c", &script]);
    let child = Command::new(env!("CARGO_BIN_EXE_guestctl"))
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap() as i32;
    let t0 = Instant::now();
    while !started_marker.exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "command never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(is_frozen(fs.mountpoint()).unwrap());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("guestctl exits after SIGTERM")
        .unwrap();
    let r = report(&out);
    assert_eq!(out.status.code(), Some(143), "{r}");
    assert_eq!(r["interrupted"], "SIGTERM");
    assert_eq!(phase(&r, "command")["outcome"], "interrupted");
    assert_eq!(r["command"]["signal"], 15);
    assert_eq!(r["thaw"]["confirmed"], true);
    assert!(!is_frozen(fs.mountpoint()).unwrap());
}

#[tokio::test]
async fn unreachable_agent_is_exit_3_and_nothing_runs() {
    let scratch = Scratch::new().unwrap();
    let marker = scratch.join("ran");
    let touch = format!("touch {}", marker.display());
    let args: Vec<String> = [
        "--connect",
        &format!("unix://{}", scratch.join("nobody.sock").display()),
        "--json",
        "snapshot",
        "--",
        "sh",
        "-c",
        &touch,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let out = guestctl(&args, Duration::from_secs(30)).await;
    let r = report(&out);
    assert_eq!(out.status.code(), Some(3), "{r}");
    assert_eq!(r["quiesce"]["result"], "not_sent");
    assert!(!marker.exists());
}
