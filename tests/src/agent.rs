//! A real `guest-agent` process for one test: listening on a unix socket in the test's
//! scratch directory, allowed to freeze only below that directory, with a private state
//! directory (freeze journal), no metrics listener and no eBPF observer unless the test
//! passes `--metrics-listen` / `--ebpf` itself, its log captured.
//!
//! Dropping it stops it the way an init system would (SIGTERM, a bounded wait, SIGKILL),
//! thaws every filesystem below the scratch directory as a safety net, and prints the
//! agent's log (libtest shows it only for failing tests).

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use guest_proto::v1::guest_client::GuestClient;
use guest_proto::v1::PingRequest;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tonic::transport::Channel;

use crate::bins;
use crate::client::{unix_client, within};
use crate::cmd::run;
use crate::error::{FixtureError, Result};
use crate::rpc::Rpc;
use crate::scratch::Scratch;
use crate::statedir::ShmStateDir;
use crate::{mountinfo, names};

/// How long the agent may take to answer its first Ping (loading eBPF costs seconds of CPU,
/// and two agents may start at once on two cores): an upper bound, not an expectation.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a stopping agent may take to thaw and exit before it is killed.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything the agent wrote to stdout and stderr, shared with the reader threads.
#[derive(Debug, Clone, Default)]
pub struct Logs {
    text: Arc<Mutex<String>>,
    /// Pipes not yet at end of file.
    open: Arc<std::sync::atomic::AtomicUsize>,
}

/// How long [`Agent::wait_exit`] waits, once the agent has exited, for the last lines of its
/// pipes (a hook it started may still hold them open: then it gives up).
const LOG_EOF_TIMEOUT: Duration = Duration::from_secs(2);

impl Logs {
    fn follow(&self, pipe: impl Read + Send + 'static) {
        let (buf, open) = (self.text.clone(), self.open.clone());
        open.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                let mut b = buf.lock().unwrap_or_else(|p| p.into_inner());
                b.push_str(&line);
                b.push('\n');
            }
            open.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        });
    }

    /// Waits (bounded) until every pipe reached end of file, so that the log of an exited
    /// agent is complete.
    async fn wait_for_eof(&self, timeout: Duration) {
        let start = Instant::now();
        while self.open.load(std::sync::atomic::Ordering::SeqCst) > 0 && start.elapsed() < timeout {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// The log so far.
    pub fn text(&self) -> String {
        self.text.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// How to start an agent; see [`Agent::builder`].
#[derive(Debug)]
pub struct AgentBuilder {
    scratch: Scratch,
    args: Vec<String>,
    netns: Option<String>,
    freeze_only: bool,
    state_dir: Option<PathBuf>,
}

impl AgentBuilder {
    /// Adds a command-line argument.
    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self
    }

    /// Adds command-line arguments.
    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Runs the agent inside network namespace `name` (`ip netns exec`); its unix socket
    /// stays reachable because it is a path in the shared filesystem.
    pub fn netns(mut self, name: &str) -> Self {
        self.netns = Some(name.to_string());
        self
    }

    /// Leaves out the default `--freeze-only <scratch>`: only for tests that pass their own
    /// `--freeze-only` (one that is still inside the scratch directory).
    pub fn own_freeze_only(mut self) -> Self {
        self.freeze_only = false;
        self
    }

    /// Uses `dir` as the agent's `--state-dir` (its freeze journal) instead of a private
    /// one, e.g. to let a restarted agent find what a killed one left frozen.
    pub fn state_dir(mut self, dir: &Path) -> Self {
        self.state_dir = Some(dir.to_path_buf());
        self
    }

    /// Starts the process without waiting for it to serve (for tests that expect it to
    /// refuse to start).
    pub fn spawn(self) -> Result<Agent> {
        let bin = bins::guest_agent()?;
        let socket = self.scratch.join(format!("{}.sock", names::unique("ag")));
        let mut argv: Vec<String> = vec!["--listen".into(), format!("unix://{}", socket.display())];
        if self.freeze_only {
            argv.push("--freeze-only".into());
            argv.push(self.scratch.path().display().to_string());
        }
        let own_state = if self.state_dir.is_none() {
            Some(ShmStateDir::new()?)
        } else {
            None
        };
        let state_path = match (&self.state_dir, &own_state) {
            (Some(p), _) => p.clone(),
            (None, Some(d)) => d.path().to_path_buf(),
            (None, None) => unreachable!("a private state directory was just created"),
        };
        argv.push("--state-dir".into());
        argv.push(state_path.display().to_string());
        // Machine-wide resources stay off unless a test asks: the default metrics listener
        // (vsock port 2696) would collide between parallel agents, and loading the eBPF
        // observer costs seconds of CPU per agent on a 2-core machine.
        let has = |flag: &str| {
            self.args
                .iter()
                .any(|a| a == flag || a.starts_with(&format!("{flag}=")))
        };
        if !has("--metrics-listen") {
            argv.extend(["--metrics-listen".to_string(), "off".to_string()]);
        }
        if !has("--ebpf") {
            argv.extend(["--ebpf".to_string(), "off".to_string()]);
        }
        argv.extend(self.args);
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        cmd.args(&argv)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| FixtureError::io(format!("spawn {}", bin.display()), e))?;
        let logs = Logs::default();
        logs.follow(child.stdout.take().expect("piped"));
        logs.follow(child.stderr.take().expect("piped"));
        let pid = child.id();
        Ok(Agent {
            child: Some(child),
            status: None,
            pid,
            socket,
            logs,
            scratch: self.scratch,
            argv,
            _state: own_state,
        })
    }

    /// Starts the agent and waits until it answers Ping.
    pub async fn start(self) -> Result<Agent> {
        let mut agent = self.spawn()?;
        agent.wait_ready().await?;
        Ok(agent)
    }
}

/// A running `guest-agent`.
#[derive(Debug)]
pub struct Agent {
    child: Option<Child>,
    status: Option<ExitStatus>,
    pid: u32,
    socket: PathBuf,
    logs: Logs,
    scratch: Scratch,
    argv: Vec<String>,
    _state: Option<ShmStateDir>,
}

impl Agent {
    /// An agent on a unix socket in `scratch`, with `--freeze-only <scratch>`.
    pub fn builder(scratch: &Scratch) -> AgentBuilder {
        AgentBuilder {
            scratch: scratch.clone(),
            args: Vec::new(),
            netns: None,
            freeze_only: true,
            state_dir: None,
        }
    }

    /// Starts an agent with the default set-up and extra `args`; waits until it serves.
    pub async fn start(scratch: &Scratch, args: &[&str]) -> Result<Self> {
        Self::builder(scratch)
            .args(args.iter().copied())
            .start()
            .await
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let start = Instant::now();
        let mut last = String::from("socket not created yet");
        while start.elapsed() < READY_TIMEOUT {
            if let Some(st) = self.poll()? {
                return Err(FixtureError::AgentStart {
                    reason: format!("exited with {st}"),
                    logs: self.logs(),
                });
            }
            if self.socket.exists() {
                match unix_client(&self.socket).await {
                    Ok(mut c) => {
                        match within(Duration::from_secs(2), "Ping", c.ping(PingRequest {})).await {
                            Ok(Ok(_)) => return Ok(()),
                            Ok(Err(s)) => last = format!("Ping failed: {s}"),
                            Err(e) => last = e.to_string(),
                        }
                    }
                    Err(e) => last = e.to_string(),
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(FixtureError::AgentStart {
            reason: format!("no Ping answer within {READY_TIMEOUT:?}: {last}"),
            logs: self.logs(),
        })
    }

    /// Process id (of `ip netns exec`, which execs the agent: the same process).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The unix socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The unix socket as a URI, for `guestctl --connect`.
    pub fn uri(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// The arguments it was started with.
    pub fn argv(&self) -> &[String] {
        &self.argv
    }

    /// Everything it logged so far.
    pub fn logs(&self) -> String {
        self.logs.text()
    }

    /// A new gRPC client over the unix socket.
    pub async fn client(&self) -> Result<GuestClient<Channel>> {
        unix_client(&self.socket).await
    }

    /// A new client whose every call is bounded (see [`Rpc`]).
    pub async fn rpc(&self) -> Result<Rpc> {
        Ok(Rpc::new(self.client().await?))
    }

    /// Sends a signal to the agent.
    pub fn signal(&self, sig: Signal) -> Result<()> {
        let pid = i32::try_from(self.pid).expect("pid fits i32");
        kill(Pid::from_raw(pid), sig)
            .map_err(|e| FixtureError::io(format!("kill -{sig} {pid}"), e.into()))
    }

    /// Its exit status, if it has exited (reaps it).
    pub fn poll(&mut self) -> Result<Option<ExitStatus>> {
        if self.status.is_none() {
            if let Some(c) = self.child.as_mut() {
                self.status = c
                    .try_wait()
                    .map_err(|e| FixtureError::io("wait for guest-agent", e))?;
            }
        }
        Ok(self.status)
    }

    /// Waits up to `timeout` for the agent to exit.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let start = Instant::now();
        loop {
            if let Some(st) = self.poll()? {
                // Exited: its last lines may still be in the pipes.
                self.logs.wait_for_eof(LOG_EOF_TIMEOUT).await;
                return Ok(st);
            }
            if start.elapsed() >= timeout {
                return Err(FixtureError::Timeout {
                    what: "guest-agent to exit".into(),
                    after: timeout,
                });
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn wait_blocking(&mut self, timeout: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if matches!(self.poll(), Ok(Some(_))) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }
}

/// Thaws every filesystem mounted below `root` (best effort).
pub fn thaw_all_under(root: &Path) {
    for m in mountinfo::under(root).unwrap_or_default() {
        let _ = run(
            "fsfreeze",
            &[std::ffi::OsStr::new("-u"), m.mount_point.as_os_str()],
        );
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if !matches!(self.poll(), Ok(Some(_))) {
            let _ = self.signal(Signal::SIGCONT);
            let _ = self.signal(Signal::SIGTERM);
            if !self.wait_blocking(STOP_TIMEOUT) {
                eprintln!(
                    "guest-agent {} ignored SIGTERM for {STOP_TIMEOUT:?}; killing it",
                    self.pid
                );
                let _ = self.signal(Signal::SIGKILL);
                self.wait_blocking(Duration::from_secs(2));
            }
        }
        // Safety net: an agent that died holding a freeze (or is stuck in the kernel on
        // one) must not leave the test's filesystems frozen.
        thaw_all_under(self.scratch.path());
        if !matches!(self.poll(), Ok(Some(_))) && !self.wait_blocking(Duration::from_secs(5)) {
            thaw_all_under(self.scratch.path());
            if let Some(mut c) = self.child.take() {
                std::thread::spawn(move || {
                    let _ = c.wait();
                });
            }
        }
        // Let the reader threads drain the pipes.
        std::thread::sleep(Duration::from_millis(20));
        eprintln!(
            "--- guest-agent pid {} {:?} exit {:?} ---\n{}--- end of guest-agent log ---",
            self.pid,
            self.argv,
            self.status,
            self.logs()
        );
    }
}
