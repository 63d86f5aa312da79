//! Our guest-agent, started as a separate process on a unix socket and driven over gRPC
//! exactly as a host would (Quiesce with the mountpoints, Thaw, Ping).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use guest_proto::v1::guest_client::GuestClient;
use guest_proto::v1::{EbpfStatus, FreezeStatusRequest, PingRequest, QuiesceRequest, ThawRequest};
use guest_transport::{connect_channel, ConnectUri};
use tokio::runtime::Runtime;
use tonic::transport::Channel;

use super::{scratch_path, Contender, ContenderKind};
use crate::child::ChildSpec;
use crate::error::BenchError;
use crate::process::{log_tail, ChildGuard, Memory};
use crate::scratch::Scratch;

/// Deadline of every RPC.
const RPC_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for a freshly started agent to answer Ping.
const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// A running guest-agent and a connected client. Fields drop in order: the client and its
/// runtime first (closing the connection), then the process. The agent drains connections
/// before it exits, so an open connection nobody polls would hold up its SIGTERM.
pub struct AgentContender {
    kind: ContenderKind,
    client: GuestClient<Channel>,
    /// A current-thread runtime of its own, driven only by this (the main) thread: the
    /// HTTP/2 connection then runs on the calling thread, so a round trip costs no
    /// cross-thread wake-ups in the client and Ping measures mostly the agent.
    rt: Runtime,
    proc: ChildGuard,
    log: PathBuf,
    held: usize,
}

/// The agent's command line: unix sockets (service and metrics), `--freeze-only` the scratch
/// mounts, no eBPF (the benchmark runs its own observer), state on tmpfs, then `flags` (the
/// contender's configuration).
pub fn agent_args(
    socket: &Path,
    freeze_only: &Path,
    state_dir: &Path,
    flags: &[&str],
) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec![
        "--listen".into(),
        format!("unix://{}", socket.display()).into(),
        // Metrics are served as in production, but on a socket of its own (the default
        // vsock port can be bound by one agent only).
        "--metrics-listen".into(),
        format!("unix://{}", socket.with_extension("metrics.sock").display()).into(),
        "--freeze-only".into(),
        freeze_only.into(),
        "--ebpf".into(),
        "off".into(),
        "--state-dir".into(),
        state_dir.into(),
        "--freeze-timeout".into(),
        "30".into(),
    ];
    args.extend(flags.iter().map(OsString::from));
    args
}

impl AgentContender {
    /// Starts the agent (through the `__child` wrapper when `wrapped`, so it thaws and exits
    /// if the benchmark dies) and waits until Ping answers; returns the time that took.
    pub fn start(
        kind: ContenderKind,
        bin: &Path,
        scratch: &Scratch,
        wrapped: bool,
    ) -> Result<(Self, Duration), BenchError> {
        let socket = scratch_path(scratch, kind.name(), ".sock");
        let state = scratch
            .state
            .join(socket.file_stem().unwrap_or(kind.name().as_ref()));
        std::fs::create_dir_all(&state).map_err(BenchError::io("creating the agent state dir"))?;
        let args = agent_args(&socket, &scratch.mount_root(), &state, kind.agent_flags());
        Self::start_with_args(kind, bin, &socket, args, wrapped)
    }

    /// Starts the agent with the command line `args`, which must make it listen on the unix
    /// socket `socket` (its log goes next to it, `.log`), and waits until Ping answers;
    /// returns the time from spawn to that answer.
    pub fn start_with_args(
        kind: ContenderKind,
        bin: &Path,
        socket: &Path,
        args: Vec<OsString>,
        wrapped: bool,
    ) -> Result<(Self, Duration), BenchError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(BenchError::io("starting the client runtime"))?;
        let log = socket.with_extension("log");
        let started = Instant::now();
        let mut proc = if wrapped {
            let mut argv = vec![bin.as_os_str().to_owned()];
            argv.extend(args);
            let spec = ChildSpec {
                parent: std::process::id(),
                isolate: false,
                keep: Vec::new(),
                argv,
            };
            ChildGuard::spawn_wrapped(kind.name(), &spec, &log, &agent_env())?
        } else {
            let mut cmd = std::process::Command::new(bin);
            cmd.args(args).envs(agent_env());
            ChildGuard::spawn(kind.name(), cmd, &log)?
        };
        let client = wait_ready(&rt, socket, &mut proc, &log, kind)?;
        let ready = started.elapsed();
        Ok((
            Self {
                kind,
                proc,
                client,
                rt,
                log,
                held: 0,
            },
            ready,
        ))
    }

    /// The agent's process id.
    pub fn pid(&self) -> Option<u32> {
        self.proc.pid()
    }

    /// Its log file (stdout and stderr).
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// The eBPF observer's state, from FreezeStatus.
    pub fn ebpf_status(&mut self) -> Result<Option<EbpfStatus>, BenchError> {
        let mut client = self.client.clone();
        let res = self
            .rt
            .block_on(client.freeze_status(request(FreezeStatusRequest {})));
        match res {
            Ok(r) => Ok(r.into_inner().ebpf),
            Err(e) => Err(self.fail("FreezeStatus", e)),
        }
    }

    fn fail(&mut self, what: &str, e: impl std::fmt::Display) -> BenchError {
        let exited = self
            .proc
            .exited()
            .map(|s| format!(" (agent exited: {s})"))
            .unwrap_or_default();
        BenchError::contender(
            self.kind.label(),
            format!("{what}: {e}{exited}; {}", log_tail(&self.log, 5)),
        )
    }
}

/// `RUST_LOG` for the agents, from `FREEZE_BENCH_AGENT_LOG` (e.g. `guest_agent=debug` to
/// log the pre-sync rounds); otherwise the agent's default level.
fn agent_env() -> Vec<(&'static str, String)> {
    std::env::var(AGENT_LOG_ENV)
        .ok()
        .filter(|v| !v.is_empty())
        .map(|v| ("RUST_LOG", v))
        .into_iter()
        .collect()
}

/// Environment variable whose value becomes the agents' `RUST_LOG`.
pub const AGENT_LOG_ENV: &str = "FREEZE_BENCH_AGENT_LOG";

fn request<T>(msg: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.set_timeout(RPC_TIMEOUT);
    req
}

/// Connects and pings until the agent answers, the process exits, or [`READY_TIMEOUT`].
fn wait_ready(
    rt: &Runtime,
    socket: &Path,
    proc: &mut ChildGuard,
    log: &Path,
    kind: ContenderKind,
) -> Result<GuestClient<Channel>, BenchError> {
    let uri = ConnectUri::Unix {
        path: socket.to_owned(),
    };
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut last = String::from("socket never appeared");
    while Instant::now() < deadline {
        if let Some(status) = proc.exited() {
            return Err(BenchError::contender(
                kind.label(),
                format!("exited at start ({status}); {}", log_tail(log, 5)),
            ));
        }
        if socket.exists() {
            let attempt = rt.block_on(async {
                let channel = connect_channel(&uri, Duration::from_millis(200))
                    .await
                    .map_err(|e| e.to_string())?;
                let mut client = GuestClient::new(channel);
                client
                    .ping(request(PingRequest {}))
                    .await
                    .map_err(|e| e.to_string())?;
                Ok::<_, String>(client)
            });
            match attempt {
                Ok(client) => return Ok(client),
                Err(e) => last = e,
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Err(BenchError::contender(
        kind.label(),
        format!(
            "not ready after {READY_TIMEOUT:?}: {last}; {}",
            log_tail(log, 5)
        ),
    ))
}

impl Contender for AgentContender {
    fn kind(&self) -> ContenderKind {
        self.kind
    }

    fn quiesce(&mut self, mounts: &[PathBuf]) -> Result<(), BenchError> {
        let req = request(QuiesceRequest {
            mountpoints: mounts.iter().map(|m| m.display().to_string()).collect(),
        });
        let mut client = self.client.clone();
        let res = self.rt.block_on(client.quiesce(req));
        match res {
            Ok(r) => {
                self.held = r.get_ref().frozen_count as usize;
                if self.held != mounts.len() {
                    return Err(self.fail(
                        "Quiesce",
                        format!("froze {} of {} filesystems", self.held, mounts.len()),
                    ));
                }
                Ok(())
            }
            Err(e) => Err(self.fail("Quiesce", e)),
        }
    }

    fn thaw(&mut self) -> Result<(), BenchError> {
        let mut client = self.client.clone();
        let res = self.rt.block_on(client.thaw(request(ThawRequest {})));
        let expected = std::mem::take(&mut self.held);
        match res {
            Ok(r) if r.get_ref().thawed_count as usize == expected => Ok(()),
            Ok(r) => Err(self.fail(
                "Thaw",
                format!("thawed {} of {expected}", r.get_ref().thawed_count),
            )),
            Err(e) => Err(self.fail("Thaw", e)),
        }
    }

    fn ping(&mut self) -> Option<Result<(), BenchError>> {
        let mut client = self.client.clone();
        let res = self.rt.block_on(client.ping(request(PingRequest {})));
        Some(res.map(drop).map_err(|e| self.fail("Ping", e)))
    }

    fn memory(&self) -> Option<Memory> {
        self.proc.memory()
    }

    fn cpu_time(&self) -> Option<Duration> {
        self.proc.cpu_time()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_agents_turn_off_both_optimisations_and_all_are_fenced_in() {
        let args = agent_args(
            Path::new("/s/a.sock"),
            Path::new("/s/mnt"),
            Path::new("/dev/shm/x"),
            ContenderKind::AgentSerial.agent_flags(),
        );
        let text: Vec<String> = args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let pos = |s: &str| text.iter().position(|a| a == s).unwrap();
        assert_eq!(text[pos("--freeze-only") + 1], "/s/mnt");
        assert_eq!(text[pos("--ebpf") + 1], "off");
        assert_eq!(text[pos("--listen") + 1], "unix:///s/a.sock");
        assert_eq!(
            text[pos("--metrics-listen") + 1],
            "unix:///s/a.metrics.sock"
        );
        assert!(text.contains(&"--no-presync".to_string()));
        assert!(text.contains(&"--no-parallel-freeze".to_string()));
        let defaults = agent_args(
            Path::new("/s/a.sock"),
            Path::new("/s/mnt"),
            Path::new("/x"),
            ContenderKind::Agent.agent_flags(),
        );
        assert!(!defaults
            .iter()
            .any(|a| a.to_string_lossy().starts_with("--no-")));
        let normal_rcu = agent_args(
            Path::new("/s/a.sock"),
            Path::new("/s/mnt"),
            Path::new("/x"),
            ContenderKind::AgentNormalRcu.agent_flags(),
        );
        assert_eq!(
            normal_rcu.last().map(|a| a.to_string_lossy().into_owned()),
            Some("--no-expedite-rcu".to_string())
        );
        assert!(!normal_rcu.iter().any(|a| a == "--no-presync"));
    }
}
