//! Freeze/thaw hooks, the qemu-ga `fsfreeze-hook.d` convention: every executable in the hooks
//! directory runs in name order with the argument `freeze` before anything is frozen (an
//! application flushes and pauses), and with `thaw` after everything is thawed (it resumes).
//!
//! A failing freeze hook aborts the Quiesce; thaw hooks always run, even when the freeze
//! failed, so locks taken by freeze hooks are released. Hooks are never executed while their
//! own filesystem is frozen by the agent (exec could block on it, opencomputer#551).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::Command;

use crate::mounts::DevId;

/// Where hooks live and how long each may run.
#[derive(Debug, Clone)]
pub struct HooksConfig {
    /// Directory of executables.
    pub dir: PathBuf,
    /// Each hook is killed after this long.
    pub timeout: Duration,
}

/// Which argument the hooks get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Before freezing.
    Freeze,
    /// After thawing.
    Thaw,
}

impl Phase {
    fn arg(self) -> &'static str {
        match self {
            Phase::Freeze => "freeze",
            Phase::Thaw => "thaw",
        }
    }
}

/// Why hooks did not all succeed.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// The directory could not be read.
    #[error("cannot read hooks directory {0}: {1}")]
    Dir(PathBuf, std::io::Error),
    /// The hooks directory is on a filesystem the agent holds frozen.
    #[error("hooks directory {0} is on a filesystem the agent holds frozen; not executing hooks from it")]
    OnFrozenFs(PathBuf),
    /// A hook could not be started.
    #[error("hook {0} could not be started: {1}")]
    Spawn(PathBuf, std::io::Error),
    /// A hook exited unsuccessfully.
    #[error("hook {path} {phase} failed ({status}); output: {output}")]
    Failed {
        /// The hook.
        path: PathBuf,
        /// `freeze` or `thaw`.
        phase: &'static str,
        /// Exit status text.
        status: String,
        /// Last part of its combined output.
        output: String,
    },
    /// A hook ran past the timeout and was killed.
    #[error("hook {0} {1} timed out after {2:?} and was killed")]
    Timeout(PathBuf, &'static str, Duration),
}

/// Executables in `dir`, in name order (hidden files and non-executables skipped).
pub fn list(dir: &Path) -> Result<Vec<PathBuf>, HookError> {
    use std::os::unix::fs::PermissionsExt;
    let mut hooks = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| HookError::Dir(dir.to_path_buf(), e))? {
        let entry = entry.map_err(|e| HookError::Dir(dir.to_path_buf(), e))?;
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        match std::fs::metadata(&path) {
            Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => hooks.push(path),
            _ => tracing::debug!(hook = %path.display(), "not an executable file; ignored"),
        }
    }
    hooks.sort();
    Ok(hooks)
}

/// Runs every hook for `phase`. Freeze: stops at the first failure and returns it. Thaw: runs
/// them all and returns the first failure after the last one ran. `frozen` are the devices the
/// agent still holds frozen: hooks stored on one of them are not executed.
pub async fn run(cfg: &HooksConfig, phase: Phase, frozen: &[DevId]) -> Result<usize, HookError> {
    if let Ok(st) = nix::sys::stat::stat(&cfg.dir) {
        if frozen.contains(&DevId::from_dev_t(st.st_dev)) {
            return Err(HookError::OnFrozenFs(cfg.dir.clone()));
        }
    }
    let hooks = list(&cfg.dir)?;
    let mut first_err = None;
    for hook in &hooks {
        match run_one(hook, phase, cfg.timeout).await {
            Ok(()) => {}
            Err(e) if phase == Phase::Freeze => return Err(e),
            Err(e) => {
                tracing::error!(error = %e, "thaw hook failed; running the others");
                first_err.get_or_insert(e);
            }
        }
    }
    first_err.map_or(Ok(hooks.len()), Err)
}

async fn run_one(hook: &Path, phase: Phase, timeout: Duration) -> Result<(), HookError> {
    let start = Instant::now();
    let child = Command::new(hook)
        .arg(phase.arg())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| HookError::Spawn(hook.to_path_buf(), e))?;
    let out = match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => return Err(HookError::Spawn(hook.to_path_buf(), e)),
        Err(_) => return Err(HookError::Timeout(hook.to_path_buf(), phase.arg(), timeout)),
    };
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    let text = text.trim();
    for line in text.lines() {
        tracing::info!(hook = %hook.display(), phase = phase.arg(), "{line}");
    }
    tracing::info!(hook = %hook.display(), phase = phase.arg(), status = %out.status,
        ms = start.elapsed().as_secs_f64() * 1e3, "hook finished");
    if out.status.success() {
        Ok(())
    } else {
        let tail: String = text
            .chars()
            .rev()
            .take(500)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        Err(HookError::Failed {
            path: hook.to_path_buf(),
            phase: phase.arg(),
            status: out.status.to_string(),
            output: tail,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn script(dir: &Path, name: &str, body: &str, mode: u32) {
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    fn cfg(dir: &Path, timeout: Duration) -> HooksConfig {
        HooksConfig {
            dir: dir.to_path_buf(),
            timeout,
        }
    }

    #[tokio::test]
    async fn runs_in_name_order_with_the_phase_argument() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("log");
        let hooks = d.path().join("hooks");
        std::fs::create_dir(&hooks).unwrap();
        script(
            &hooks,
            "20-b",
            &format!("echo b $1 >> {}", log.display()),
            0o755,
        );
        script(
            &hooks,
            "10-a",
            &format!("echo a $1 >> {}", log.display()),
            0o755,
        );
        script(&hooks, "30-not-exec", "exit 1", 0o644);
        script(&hooks, ".hidden", "exit 1", 0o755);
        assert_eq!(
            run(&cfg(&hooks, Duration::from_secs(5)), Phase::Freeze, &[])
                .await
                .unwrap(),
            2
        );
        assert_eq!(
            run(&cfg(&hooks, Duration::from_secs(5)), Phase::Thaw, &[])
                .await
                .unwrap(),
            2
        );
        assert_eq!(
            std::fs::read_to_string(&log).unwrap(),
            "a freeze\nb freeze\na thaw\nb thaw\n"
        );
    }

    #[tokio::test]
    async fn a_failing_freeze_hook_stops_the_rest_but_thaw_runs_all() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("log");
        let hooks = d.path().join("hooks");
        std::fs::create_dir(&hooks).unwrap();
        script(&hooks, "10-fail", "echo cannot lock db >&2; exit 3", 0o755);
        script(
            &hooks,
            "20-after",
            &format!("echo after $1 >> {}", log.display()),
            0o755,
        );
        let err = run(&cfg(&hooks, Duration::from_secs(5)), Phase::Freeze, &[])
            .await
            .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("10-fail") && msg.contains("cannot lock db") && msg.contains("3"),
            "{msg}"
        );
        assert!(
            !log.exists(),
            "hooks after a failed freeze hook must not run"
        );
        assert!(run(&cfg(&hooks, Duration::from_secs(5)), Phase::Thaw, &[])
            .await
            .is_err());
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "after thaw\n");
    }

    #[tokio::test]
    async fn a_hanging_hook_is_killed_at_the_timeout() {
        let d = tempfile::tempdir().unwrap();
        script(d.path(), "10-hang", "sleep 30", 0o755);
        let start = Instant::now();
        let err = run(
            &cfg(d.path(), Duration::from_millis(300)),
            Phase::Freeze,
            &[],
        )
        .await
        .unwrap_err();
        assert!(matches!(err, HookError::Timeout(..)), "{err}");
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn hooks_on_a_frozen_filesystem_are_not_executed() {
        let d = tempfile::tempdir().unwrap();
        let dev = DevId::from_dev_t(nix::sys::stat::stat(d.path()).unwrap().st_dev);
        let err = run(&cfg(d.path(), Duration::from_secs(1)), Phase::Thaw, &[dev])
            .await
            .unwrap_err();
        assert!(matches!(err, HookError::OnFrozenFs(_)));
    }
}
