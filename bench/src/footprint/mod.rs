//! `freeze-bench --footprint` (issue 13): what the agent costs a small guest, side by side
//! with qemu-guest-agent, in one run.
//!
//! - **Memory**: VmRSS (anonymous and file-backed), VmHWM and threads of the release agent run
//!   as a user runs it (eBPF observer, `/metrics`, OTLP export to a local receiver) after a
//!   workload of Pings, Quiesce/Thaw cycles of one loop filesystem and `/metrics` scrapes;
//!   the same workload on a ladder of configurations (nothing, + eBPF, + `/metrics`, + OTLP)
//!   gives each part's share; qemu-ga gets the same Pings and freezes.
//! - **Ping latency** from a persistent client over the unix socket (tonic for the agent,
//!   line-delimited JSON for qemu-ga), idle and while K loop filesystems are frozen with a
//!   writer blocked on each.
//! - **What a Ping costs in code** ([`callgrind`]): the server's instructions, simulated cache
//!   misses and mispredicted branches per Ping, agent (from three clients) and qemu-ga;
//!   independent of the machine's speed.
//! - **Start-up**: spawn to first answer (for the agent that includes attaching eBPF: the
//!   observer is loaded before the listeners open), cold (the binary evicted from the page
//!   cache) and warm.
//! - **Binary size**: the release build, the static musl builds (the VM suite's debug build,
//!   a release build), stripped, and qemu-ga with its shared libraries.
//!
//! Safety as in the freeze-cost run: only loop filesystems this run creates are frozen; the
//! agent runs with `--freeze-only` naming exactly those mounts and every Quiesce names them;
//! qemu-ga runs in a mount namespace that shows only them; [`Rig`]'s `Drop` thaws them all
//! (also on panic) before writers are joined and processes stopped.

pub mod bare_h2;
pub mod callgrind;
pub mod otlp;
pub mod report;
pub mod sys;

use std::ffi::OsString;
use std::io::{Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::runtime::Runtime;

use crate::contender::agent::AgentContender;
use crate::contender::qga::{QgaClient, QgaContender};
use crate::contender::{scratch_path, Contender, ContenderKind};
use crate::error::BenchError;
use crate::scratch::{LoopFs, LoopFsOptions, Scratch};
use crate::writer::{self, Writer, WriterConfig};
use callgrind::{Callgrind, PingCost};
use otlp::{OtlpCounts, OtlpReceiver};
use sys::{BinarySize, ProcStatus, SchedTotals};

/// Pings are paced like the freeze-cost run's: one every this often.
const PING_INTERVAL: Duration = Duration::from_millis(4);
/// Longest wait for every writer to block after a Quiesce.
const BLOCK_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest wait for the agent's first OTLP metric export (the default interval is 10 s).
const METRIC_EXPORT_TIMEOUT: Duration = Duration::from_secs(15);
/// The writers of the frozen-Ping phase: small, so their dirty pages do not dominate.
const WRITER: WriterConfig = WriterConfig {
    rate: 4.0 * 1024.0 * 1024.0,
    chunk: 64 << 10,
    file_size: 8 << 20,
};

/// What to run.
#[derive(Debug, Clone)]
pub struct FootprintPlan {
    /// Idle Pings per process.
    pub pings: usize,
    /// Quiesce/Thaw cycles of one filesystem per process.
    pub cycles: usize,
    /// `/metrics` scrapes per agent with metrics on.
    pub scrapes: usize,
    /// Filesystems frozen (each with a blocked writer) during the frozen Pings.
    pub frozen_k: usize,
    /// Freezes of the frozen-Ping phase.
    pub frozen_rounds: usize,
    /// Pings per such freeze.
    pub frozen_pings: usize,
    /// Cold and warm starts per binary.
    pub ready_runs: usize,
    /// Size of each (sparse) ext4 image, MiB.
    pub image_mib: u64,
    /// The release agent (glibc).
    pub agent: PathBuf,
    /// The static musl agent as shipped into guests (`--release --target
    /// x86_64-unknown-linux-musl`), measured too when it exists.
    pub musl_agent: PathBuf,
    /// The VM suite's static musl agent (tests/vm/build-guest.sh: a debug build), sized only.
    pub vm_agent: PathBuf,
    /// qemu-ga.
    pub qemu_ga: PathBuf,
    /// guestctl (release), for `guestctl ping --count N` against the agent, if it exists.
    pub guestctl: PathBuf,
    /// The Python of the grpcio client venv (`make setup`), for Pings from Python's grpcio
    /// against the agent, if it exists.
    pub python: PathBuf,
    /// The workspace root: `bench/python/ping_series.py` and `proto/` are found under it.
    pub root: PathBuf,
    /// Where to write the section, if anywhere.
    pub output: Option<PathBuf>,
}

impl FootprintPlan {
    /// The workload in one sentence, for the report.
    pub fn describe(&self) -> String {
        format!(
            "Workload per process: {} Pings (one every {} ms), {} Quiesce/Thaw cycles of one \
             loop-mounted ext4 filesystem, {} `/metrics` scrapes (agents with metrics on), \
             then {} freezes of {} loop filesystems with a writer blocked on each, {} Pings \
             during each; the steady-state memory is read after the agent's first OTLP \
             metric export (where OTLP is on) and 11 s idle (the agent trims its heap every \
             10 s). Start-up: {} cold and {} warm starts per binary.",
            self.pings,
            PING_INTERVAL.as_millis(),
            self.cycles,
            self.scrapes,
            self.frozen_rounds,
            self.frozen_k,
            self.frozen_pings,
            self.ready_runs,
            self.ready_runs,
        )
    }
}

/// Which parts of the agent are on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentConfig {
    /// `--ebpf auto` (else `off`).
    pub ebpf: bool,
    /// `--metrics-listen unix://...` (else `off`).
    pub metrics: bool,
    /// `--otlp-endpoint` to the local receiver.
    pub otlp: bool,
}

impl AgentConfig {
    /// As a user runs it: everything on.
    pub const FULL: Self = Self {
        ebpf: true,
        metrics: true,
        otlp: true,
    };
}

/// The configurations whose differences give each part's share, smallest first.
pub const LADDER: [(&str, AgentConfig); 4] = [
    (
        "--ebpf off, no /metrics, no OTLP",
        AgentConfig {
            ebpf: false,
            metrics: false,
            otlp: false,
        },
    ),
    (
        "+ eBPF observer",
        AgentConfig {
            ebpf: true,
            metrics: false,
            otlp: false,
        },
    ),
    (
        "+ /metrics",
        AgentConfig {
            ebpf: true,
            metrics: true,
            otlp: false,
        },
    ),
    ("+ OTLP export (= as a user runs it)", AgentConfig::FULL),
];

/// The agent's command line for the footprint run: unix sockets, `--freeze-only` naming each
/// of `mounts` (nothing else may be frozen), state on tmpfs, and the parts `cfg` turns on.
pub fn footprint_agent_args(
    socket: &Path,
    mounts: &[PathBuf],
    state_dir: &Path,
    cfg: AgentConfig,
    otlp_endpoint: &str,
) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec![
        "--listen".into(),
        format!("unix://{}", socket.display()).into(),
        "--metrics-listen".into(),
        if cfg.metrics {
            format!("unix://{}", metrics_socket(socket).display()).into()
        } else {
            "off".into()
        },
        "--ebpf".into(),
        if cfg.ebpf { "auto" } else { "off" }.into(),
        "--state-dir".into(),
        state_dir.into(),
        "--freeze-timeout".into(),
        "30".into(),
    ];
    for m in mounts {
        args.push("--freeze-only".into());
        args.push(m.into());
    }
    if cfg.otlp {
        args.push("--otlp-endpoint".into());
        args.push(otlp_endpoint.into());
    }
    args
}

/// Where an agent listening on `socket` serves `/metrics`.
pub fn metrics_socket(socket: &Path) -> PathBuf {
    socket.with_extension("metrics.sock")
}

/// One process through the workload.
#[derive(Debug, Clone, Default)]
pub struct ProcessRun {
    /// Row label.
    pub label: String,
    /// Memory after each step, in order (`started`, `pings`, ...).
    pub steps: Vec<(&'static str, ProcStatus)>,
    /// Idle Ping round trips.
    pub ping_idle: Vec<Duration>,
    /// CPU time and context switches of the process over the idle Pings.
    pub ping_idle_sched: Option<SchedTotals>,
    /// `guestctl ping --count N` round trips (one connection, connecting not included).
    pub guestctl_pings: Vec<Duration>,
    /// Whole `guestctl ping` runs: process start, connect, one Ping, exit.
    pub guestctl_oneshot: Vec<Duration>,
    /// Round trips of Python's grpcio on one channel (`bench/python/ping_series.py`).
    pub python_pings: Vec<Duration>,
    /// Round trips of the bare HTTP/2 client ([`bare_h2`]), as thin as qemu-ga's.
    pub bare_pings: Vec<Duration>,
    /// Ping round trips while the K filesystems were frozen with writers blocked.
    pub ping_frozen: Vec<Duration>,
    /// Fewest writers seen blocked (D state) in any freeze of that phase, and K.
    pub blocked: Option<(usize, usize)>,
    /// Quiesce + Thaw of one filesystem.
    pub cycles: Vec<Duration>,
    /// `/metrics` scrapes (request to the last byte, new connection each).
    pub scrapes: Vec<Duration>,
    /// Size of the last exposition, bytes.
    pub scrape_bytes: usize,
    /// The eBPF observer as FreezeStatus reports it, with the load time from the log.
    pub ebpf: Option<String>,
    /// What the OTLP receiver got from this process.
    pub otlp: Option<OtlpCounts>,
    /// CPU time the process used.
    pub cpu: Option<Duration>,
}

impl ProcessRun {
    fn new(label: &str) -> Self {
        Self {
            label: label.to_owned(),
            ..Self::default()
        }
    }

    /// Memory at the end of the run.
    pub fn end(&self) -> Option<ProcStatus> {
        self.steps.last().map(|s| s.1)
    }

    /// Memory right after start.
    pub fn start(&self) -> Option<ProcStatus> {
        self.steps.first().map(|s| s.1)
    }

    fn record(&mut self, step: &'static str, pid: Option<u32>) {
        if let Some(s) = pid.and_then(ProcStatus::of) {
            self.steps.push((step, s));
        }
    }
}

/// Start-up times of one binary.
#[derive(Debug, Clone, Default)]
pub struct ReadyTimes {
    /// Row label.
    pub label: String,
    /// Spawn to first answer, the binary evicted from the page cache first.
    pub cold: Vec<Duration>,
    /// The same right after a start.
    pub warm: Vec<Duration>,
    /// Largest share of the binary still cached after eviction (0 = fully cold).
    pub cached_at_cold: Option<f64>,
    /// eBPF load + attach as the agent logged it (`load_ms`), per start.
    pub ebpf_load: Vec<Duration>,
}

/// Everything the footprint run measured.
#[derive(Debug, Clone, Default)]
pub struct FootprintResults {
    /// The headline processes: the agent as a user runs it (glibc, musl), qemu-ga.
    pub runs: Vec<ProcessRun>,
    /// The configuration ladder (same workload, no frozen Pings).
    pub ladder: Vec<ProcessRun>,
    /// Start-up.
    pub ready: Vec<ReadyTimes>,
    /// Binary sizes.
    pub sizes: Vec<BinarySize>,
    /// What a Ping costs in code, under callgrind (empty without valgrind).
    pub ping_costs: Vec<PingCost>,
    /// Irregularities worth a line.
    pub notes: Vec<String>,
}

/// What must be undone, in order: `Drop` thaws every filesystem of the run directly (whatever
/// a process holds, also when unwinding from a panic), then the fields drop: the filesystems
/// (umount, losetup -d) and the scratch directories. Writers and processes live in the
/// functions below, each behind a [`ThawGuard`] declared after them.
struct Rig {
    fss: Vec<LoopFs>,
    scratch: Scratch,
}

impl Drop for Rig {
    fn drop(&mut self) {
        for fs in &self.fss {
            fs.force_thaw();
        }
    }
}

impl Rig {
    fn mounts(&self) -> Vec<PathBuf> {
        self.fss.iter().map(|f| f.mountpoint.clone()).collect()
    }
}

/// Thaws the run's filesystems when dropped: declared after writers and processes, so it runs
/// before they are joined or stopped, on every exit path.
struct ThawGuard<'a>(&'a [LoopFs]);

impl Drop for ThawGuard<'_> {
    fn drop(&mut self) {
        for fs in self.0 {
            fs.force_thaw();
        }
    }
}

fn check_stop(stop: &AtomicBool) -> Result<(), BenchError> {
    if stop.load(Ordering::Relaxed) {
        Err(BenchError::Interrupted)
    } else {
        Ok(())
    }
}

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}

/// Does the whole footprint run.
pub fn run(
    plan: &FootprintPlan,
    rt: &Runtime,
    stop: &AtomicBool,
) -> Result<FootprintResults, BenchError> {
    let mut results = FootprintResults::default();
    let mut rig = Rig {
        fss: Vec::new(),
        scratch: Scratch::create()?,
    };
    eprintln!("scratch: {}", rig.scratch.root.display());
    let opts = LoopFsOptions {
        image_mib: plan.image_mib,
        direct_io: true,
    };
    for i in 0..plan.frozen_k.max(1) {
        check_stop(stop)?;
        let fs = LoopFs::create(&rig.scratch, &format!("fs{i}"), opts)?;
        writer::prefill(&fs.mountpoint, &WRITER)?;
        rig.fss.push(fs);
    }
    let receiver = OtlpReceiver::start(rt)?;

    eprintln!("start-up times");
    results.ready.push(agent_ready(
        plan,
        &rig,
        &plan.agent,
        "agent",
        &receiver,
        stop,
    )?);
    if plan.musl_agent.exists() {
        results.ready.push(agent_ready(
            plan,
            &rig,
            &plan.musl_agent,
            "agent (static musl)",
            &receiver,
            stop,
        )?);
    }
    results.ready.push(qga_ready(plan, &rig, stop)?);

    eprintln!("agent as a user runs it");
    let full = run_agent(
        plan,
        &rig,
        &plan.agent,
        "agent",
        AgentConfig::FULL,
        true,
        &receiver,
        stop,
    )?;
    results.runs.push(full);
    if plan.musl_agent.exists() {
        eprintln!("static musl agent as a user runs it");
        results.runs.push(run_agent(
            plan,
            &rig,
            &plan.musl_agent,
            "agent (static musl)",
            AgentConfig::FULL,
            true,
            &receiver,
            stop,
        )?);
    } else {
        results.notes.push(format!(
            "{} not found: the static musl agent was not measured (`cargo build --release \
             --target x86_64-unknown-linux-musl -p guest-agent`).",
            plan.musl_agent.display()
        ));
    }
    eprintln!("qemu-ga");
    results.runs.push(run_qga(plan, &rig, stop)?);

    for (label, cfg) in LADDER {
        eprintln!("agent configuration: {label}");
        results.ladder.push(run_agent(
            plan,
            &rig,
            &plan.agent,
            label,
            cfg,
            false,
            &receiver,
            stop,
        )?);
    }

    if callgrind::available() {
        eprintln!("what a Ping costs in code (callgrind)");
        results.ping_costs = ping_costs(plan, &rig, &receiver, stop)?;
    } else {
        results.notes.push(
            "valgrind not found: what a Ping costs in code was not counted (`apt-get install \
             valgrind`; `make bench-footprint` installs it)."
                .into(),
        );
    }

    let dir = rig.scratch.root.clone();
    for (label, path) in [
        ("agent, release (glibc, dynamic)", &plan.agent),
        (
            "agent, static musl, release (opt-level s, fat LTO, 1 codegen unit)",
            &plan.musl_agent,
        ),
        (
            "agent, static musl, as tests/vm/build-guest.sh builds it (debug)",
            &plan.vm_agent,
        ),
        ("qemu-ga (Debian)", &plan.qemu_ga),
    ] {
        if let Some(size) = sys::binary_size(label, path, &dir) {
            results.sizes.push(size);
        }
    }
    for r in results.runs.iter().chain(&results.ladder) {
        if let Some((blocked, k)) = r.blocked {
            if blocked < k {
                results.notes.push(format!(
                    "{}: in one freeze only {blocked} of {k} writers were seen blocked before \
                     the Pings began",
                    r.label
                ));
            }
        }
    }
    Ok(results)
}

/// What a Ping costs in code, under callgrind: the release agent without eBPF (valgrind runs the
/// user space only; the observer's share is in the ladder) from three clients, the agent
/// with `/metrics` and OTLP export on from the bare client, and qemu-ga from its JSON-line
/// client; `plan.pings` Pings each, back to back on one connection.
fn ping_costs(
    plan: &FootprintPlan,
    rig: &Rig,
    receiver: &OtlpReceiver,
    stop: &AtomicBool,
) -> Result<Vec<PingCost>, BenchError> {
    let n = plan.pings;
    let mut out = Vec::new();
    let configs = [
        ("agent, --ebpf off, no /metrics, no OTLP", LADDER[0].1, true),
        (
            "agent, --ebpf off, /metrics and OTLP export on",
            AgentConfig {
                ebpf: false,
                ..AgentConfig::FULL
            },
            false,
        ),
    ];
    for (label, cfg, all_clients) in configs {
        check_stop(stop)?;
        let socket = scratch_path(&rig.scratch, "cg-agent", ".sock");
        let state = state_dir(&rig.scratch, &socket)?;
        let mut argv = vec![plan.agent.clone().into_os_string()];
        argv.extend(footprint_agent_args(
            &socket,
            &rig.mounts(),
            &state,
            cfg,
            &receiver.endpoint,
        ));
        let mut cg = Callgrind::spawn(label, &argv, &rig.scratch.root)?;
        let bare_err = |e: std::io::Error| BenchError::contender("bare HTTP/2 client", e);
        let mut client = cg.wait_for(|| {
            let mut c =
                bare_h2::BareClient::connect(&socket, bare_h2::PING_PATH, Duration::from_secs(30))?;
            c.ping().map(|()| c)
        })?;
        let count = cg.count_pings(n, || client.ping().map_err(bare_err))?;
        out.push(PingCost {
            label: label.into(),
            client: "bare HTTP/2 client".into(),
            pings: n,
            events: count,
        });
        if !all_clients {
            continue;
        }
        let connect = format!("unix://{}", socket.display());
        if plan.guestctl.exists() {
            let mut guestctl = std::process::Command::new(&plan.guestctl);
            guestctl
                .args(["--connect", &connect, "ping", "--count"])
                .arg(n.to_string())
                .args(["--interval-ms", "0"]);
            let count = cg.count(|| crate::scratch::run(&mut guestctl).map(drop))?;
            out.push(PingCost {
                label: label.into(),
                client: "`guestctl ping --count N` (tonic; connecting included)".into(),
                pings: n,
                events: count,
            });
        }
        if plan.python.exists() {
            let gen_dir = scratch_path(&rig.scratch, "py-stubs", "");
            let mut python = std::process::Command::new(&plan.python);
            python
                .arg(plan.root.join("bench/python/ping_series.py"))
                .args(["--agent", &connect])
                .arg("--proto-root")
                .arg(plan.root.join("proto"))
                .arg("--gen-dir")
                .arg(&gen_dir)
                .args(["--count", &n.to_string(), "--interval-ms", "0"])
                .args(["--warmup", "0"])
                .env("PYTHONDONTWRITEBYTECODE", "1");
            let count = cg.count(|| crate::scratch::run(&mut python).map(drop))?;
            out.push(PingCost {
                label: label.into(),
                client: "Python's grpcio, one channel (connecting included)".into(),
                pings: n,
                events: count,
            });
        }
    }
    check_stop(stop)?;
    let socket = scratch_path(&rig.scratch, "cg-qemu-ga", ".sock");
    let state = socket.with_extension("state");
    std::fs::create_dir_all(&state).map_err(BenchError::io("creating qemu-ga's statedir"))?;
    let argv: Vec<OsString> = crate::contender::qga::qga_args(
        &plan.qemu_ga,
        &socket,
        &state,
        &socket.with_extension("pid"),
    )
    .into_iter()
    .map(Into::into)
    .collect();
    let mut cg = Callgrind::spawn("qemu-ga", &argv, &rig.scratch.root)?;
    let qga_err = |e: String| BenchError::contender("qemu-ga", e);
    let mut client = cg.wait_for(|| {
        let mut c = QgaClient::connect(&socket, Duration::from_secs(30))?;
        c.ping().map_err(std::io::Error::other).map(|()| c)
    })?;
    let count = cg.count_pings(n, || client.ping().map_err(qga_err))?;
    out.push(PingCost {
        label: "qemu-ga".into(),
        client: "JSON-line client".into(),
        pings: n,
        events: count,
    });
    Ok(out)
}

/// Start-up of the agent as a user runs it: cold then warm, `ready_runs` times each.
fn agent_ready(
    plan: &FootprintPlan,
    rig: &Rig,
    bin: &Path,
    label: &str,
    receiver: &OtlpReceiver,
    stop: &AtomicBool,
) -> Result<ReadyTimes, BenchError> {
    let mut out = ReadyTimes {
        label: label.to_owned(),
        ..ReadyTimes::default()
    };
    let mounts = rig.mounts();
    for _ in 0..plan.ready_runs {
        for cold in [true, false] {
            check_stop(stop)?;
            if cold {
                sys::evict(bin)?;
                let cached = sys::cached_fraction(bin).unwrap_or(0.0);
                out.cached_at_cold = Some(out.cached_at_cold.unwrap_or(0.0).max(cached));
            }
            let socket = scratch_path(&rig.scratch, "ready-agent", ".sock");
            let state = state_dir(&rig.scratch, &socket)?;
            let args = footprint_agent_args(
                &socket,
                &mounts,
                &state,
                AgentConfig::FULL,
                &receiver.endpoint,
            );
            // Not wrapped: the wrapper's own exec would be timed too, and this agent is
            // never asked to freeze.
            let (mut agent, ready) =
                AgentContender::start_with_args(ContenderKind::Agent, bin, &socket, args, false)?;
            let status = agent.ebpf_status()?;
            if !status.as_ref().is_some_and(|s| s.active) {
                return Err(BenchError::contender(
                    label,
                    format!("eBPF observer not attached at start-up: {status:?}"),
                ));
            }
            if let Some(ms) = logged_load_ms(agent.log()) {
                out.ebpf_load.push(Duration::from_millis(ms));
            }
            if cold {
                out.cold.push(ready);
            } else {
                out.warm.push(ready);
            }
        }
    }
    Ok(out)
}

/// Start-up of qemu-ga (never asked to freeze, so started without mount isolation).
fn qga_ready(plan: &FootprintPlan, rig: &Rig, stop: &AtomicBool) -> Result<ReadyTimes, BenchError> {
    let mut out = ReadyTimes {
        label: "qemu-ga".to_owned(),
        ..ReadyTimes::default()
    };
    for _ in 0..plan.ready_runs {
        for cold in [true, false] {
            check_stop(stop)?;
            if cold {
                sys::evict(&plan.qemu_ga)?;
                let cached = sys::cached_fraction(&plan.qemu_ga).unwrap_or(0.0);
                out.cached_at_cold = Some(out.cached_at_cold.unwrap_or(0.0).max(cached));
            }
            let (_qga, ready) = QgaContender::start(&plan.qemu_ga, &rig.scratch, &[], false)?;
            if cold {
                out.cold.push(ready);
            } else {
                out.warm.push(ready);
            }
        }
    }
    Ok(out)
}

/// A fresh agent state directory on tmpfs, named after the socket.
fn state_dir(scratch: &Scratch, socket: &Path) -> Result<PathBuf, BenchError> {
    let name = socket
        .file_stem()
        .map_or_else(|| "agent".into(), |s| s.to_owned());
    let dir = scratch.state.join(name);
    std::fs::create_dir_all(&dir).map_err(BenchError::io("creating the agent state dir"))?;
    Ok(dir)
}

/// The `load_ms=N` the agent logs when the observer is attached.
pub fn logged_load_ms(log: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(log).ok()?;
    parse_load_ms(&text)
}

/// `load_ms=N` (human log format) or `"load_ms":N` (JSON) in a log's text (the last one).
pub fn parse_load_ms(text: &str) -> Option<u64> {
    let line = text
        .lines()
        .rev()
        .find(|l| l.contains("observer attached"))?;
    let at = line.find("load_ms")? + "load_ms".len();
    let digits: String = line[at..]
        .trim_start_matches(['=', '"', ':', ' '])
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// One agent through the workload.
#[allow(clippy::too_many_arguments)]
fn run_agent(
    plan: &FootprintPlan,
    rig: &Rig,
    bin: &Path,
    label: &str,
    cfg: AgentConfig,
    frozen: bool,
    receiver: &OtlpReceiver,
    stop: &AtomicBool,
) -> Result<ProcessRun, BenchError> {
    let mut run = ProcessRun::new(label);
    let socket = scratch_path(&rig.scratch, "fp-agent", ".sock");
    let state = state_dir(&rig.scratch, &socket)?;
    let args = footprint_agent_args(&socket, &rig.mounts(), &state, cfg, &receiver.endpoint);
    let before = receiver.counts();
    let (mut agent, _) =
        AgentContender::start_with_args(ContenderKind::Agent, bin, &socket, args, true)?;
    let _thaw = ThawGuard(&rig.fss);
    let pid = agent.pid();
    run.record("started", pid);
    if cfg.ebpf {
        let status = agent.ebpf_status()?;
        let load =
            logged_load_ms(agent.log()).map_or(String::new(), |ms| format!(", loaded in {ms} ms"));
        run.ebpf = Some(match status {
            Some(s) if s.active => format!(
                "freeze source {}, writers via {}{load}",
                s.freeze_source, s.contention_hook
            ),
            Some(s) => format!("not attached: {}", s.reason),
            None => "no eBPF status".to_owned(),
        });
    }
    workload(plan, rig, &mut agent, pid, &mut run, stop)?;
    if frozen {
        check_stop(stop)?;
        run.bare_pings = bare_h2::ping_series(&socket, plan.pings, PING_INTERVAL)
            .map_err(|e| BenchError::contender("bare HTTP/2 client", e.to_string()))?;
    }
    if frozen && plan.guestctl.exists() {
        guestctl_pings(plan, &socket, &mut run)?;
    }
    if frozen && plan.python.exists() {
        python_pings(plan, rig, &socket, &mut run)?;
    }
    if cfg.metrics {
        check_stop(stop)?;
        let path = metrics_socket(&socket);
        for _ in 0..plan.scrapes {
            let t = Instant::now();
            let body = scrape(&path)?;
            run.scrapes.push(t.elapsed());
            run.scrape_bytes = body;
        }
        run.record("scrapes", pid);
    }
    if frozen {
        frozen_pings(plan, rig, &mut agent, &mut run, stop)?;
        run.record("frozen Pings", pid);
    }
    if cfg.otlp {
        let deadline = Instant::now() + METRIC_EXPORT_TIMEOUT;
        while receiver.counts().since(&before).metric_exports == 0 && Instant::now() < deadline {
            check_stop(stop)?;
            std::thread::sleep(Duration::from_millis(100));
        }
        run.otlp = Some(receiver.counts().since(&before));
        run.record("first OTLP metric export", pid);
    }
    settle(stop)?;
    run.cpu = agent.cpu_time();
    run.record("end (idle 11 s)", pid);
    keep_smaps(pid, label);
    Ok(run)
}

/// Idle time before the steady-state reading: longer than the agent's 10 s heap-trim
/// interval, so memory freed by the workload (and by the last OTLP export) is returned to
/// the kernel as it would be on an idle guest.
const SETTLE: Duration = Duration::from_secs(11);

fn settle(stop: &AtomicBool) -> Result<(), BenchError> {
    let end = Instant::now() + SETTLE;
    while Instant::now() < end {
        check_stop(stop)?;
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// Environment variable naming a directory: the footprint run copies each measured process's
/// `/proc/PID/smaps` there at the end (where memory goes, mapping by mapping).
pub const SMAPS_ENV: &str = "FREEZE_BENCH_SMAPS";

fn keep_smaps(pid: Option<u32>, label: &str) {
    let (Some(pid), Some(dir)) = (pid, std::env::var_os(SMAPS_ENV)) else {
        return;
    };
    let name: String = label
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let to = Path::new(&dir).join(format!("{name}.smaps"));
    if let Err(e) = std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::copy(format!("/proc/{pid}/smaps"), &to))
    {
        eprintln!("copying the smaps of {label} to {}: {e}", to.display());
    }
}

/// `guestctl ping`: `pings` round trips on one connection (paced like the others), then 20
/// whole runs of one Ping each (start, connect, Ping, exit).
fn guestctl_pings(
    plan: &FootprintPlan,
    socket: &Path,
    run: &mut ProcessRun,
) -> Result<(), BenchError> {
    let connect = format!("unix://{}", socket.display());
    let out = crate::scratch::run(
        std::process::Command::new(&plan.guestctl)
            .args(["--connect", &connect, "ping", "--json", "--count"])
            .arg(plan.pings.to_string())
            .args(["--interval-ms", &PING_INTERVAL.as_millis().to_string()]),
    )?;
    run.guestctl_pings = round_trips(&out, "rtt_ms", 1e-3)
        .map_err(|e| BenchError::contender("guestctl", format!("ping --json: {e}")))?;
    for _ in 0..20 {
        let t = Instant::now();
        crate::scratch::run(std::process::Command::new(&plan.guestctl).args([
            "--connect",
            &connect,
            "ping",
        ]))?;
        run.guestctl_oneshot.push(t.elapsed());
    }
    Ok(())
}

/// Pings from Python's grpcio (`bench/python/ping_series.py`): one channel, paced like the
/// others, after 20 unmeasured ones.
fn python_pings(
    plan: &FootprintPlan,
    rig: &Rig,
    socket: &Path,
    run: &mut ProcessRun,
) -> Result<(), BenchError> {
    let gen_dir = scratch_path(&rig.scratch, "py-stubs", "");
    let out = crate::scratch::run(
        std::process::Command::new(&plan.python)
            .arg(plan.root.join("bench/python/ping_series.py"))
            .arg("--agent")
            .arg(format!("unix://{}", socket.display()))
            .arg("--proto-root")
            .arg(plan.root.join("proto"))
            .arg("--gen-dir")
            .arg(&gen_dir)
            .args(["--count", &plan.pings.to_string()])
            .args(["--interval-ms", &PING_INTERVAL.as_millis().to_string()])
            .env("PYTHONDONTWRITEBYTECODE", "1"),
    )?;
    run.python_pings = round_trips(&out, "rtt_us", 1e-6)
        .map_err(|e| BenchError::contender("python", format!("ping_series.py: {e}")))?;
    if run.python_pings.len() != plan.pings {
        return Err(BenchError::contender(
            "python",
            format!(
                "{} round trips of {}: {out}",
                run.python_pings.len(),
                plan.pings
            ),
        ));
    }
    Ok(())
}

/// The round trips a client printed as one JSON object: the numbers of its array `key`, each
/// `unit` seconds.
fn round_trips(out: &str, key: &str, unit: f64) -> Result<Vec<Duration>, String> {
    let v: serde_json::Value =
        serde_json::from_str(out.trim()).map_err(|e| format!("{e}: {out}"))?;
    v[key]
        .as_array()
        .ok_or_else(|| format!("no array {key:?}: {out}"))?
        .iter()
        .map(|n| {
            n.as_f64()
                .map(|x| Duration::from_secs_f64(x * unit))
                .ok_or_else(|| format!("{n} in {key:?} is not a number"))
        })
        .collect()
}

/// qemu-ga through the same Pings and freezes.
fn run_qga(plan: &FootprintPlan, rig: &Rig, stop: &AtomicBool) -> Result<ProcessRun, BenchError> {
    let mut run = ProcessRun::new("qemu-ga");
    let mounts = rig.mounts();
    let (mut qga, _) = QgaContender::start(&plan.qemu_ga, &rig.scratch, &mounts, true)?;
    let _thaw = ThawGuard(&rig.fss);
    let pid = qga.pid();
    run.record("started", pid);
    workload(plan, rig, &mut qga, pid, &mut run, stop)?;
    frozen_pings(plan, rig, &mut qga, &mut run, stop)?;
    run.record("frozen Pings", pid);
    settle(stop)?;
    run.cpu = qga.cpu_time();
    run.record("end (idle 11 s)", pid);
    keep_smaps(pid, "qemu-ga");
    Ok(run)
}

/// Idle Pings, then Quiesce/Thaw cycles of the first filesystem.
fn workload(
    plan: &FootprintPlan,
    rig: &Rig,
    c: &mut dyn Contender,
    pid: Option<u32>,
    run: &mut ProcessRun,
    stop: &AtomicBool,
) -> Result<(), BenchError> {
    let before = pid.and_then(SchedTotals::of);
    for i in 0..plan.pings {
        if i % 100 == 0 {
            check_stop(stop)?;
        }
        let t = Instant::now();
        if let Some(r) = c.ping() {
            r?;
        }
        run.ping_idle.push(t.elapsed());
        sleep_until(t + PING_INTERVAL);
    }
    let after = pid.and_then(SchedTotals::of);
    run.ping_idle_sched = before.zip(after).map(|(b, a)| a.since(&b));
    run.record("Pings", pid);
    let one = [rig.fss[0].mountpoint.clone()];
    rig.scratch.check_ours(&one[0])?;
    for i in 0..plan.cycles {
        if i % 10 == 0 {
            check_stop(stop)?;
        }
        let t = Instant::now();
        if let Err(e) = c.quiesce(&one) {
            let _ = c.thaw();
            return Err(e);
        }
        c.thaw()?;
        run.cycles.push(t.elapsed());
    }
    run.record("Quiesce/Thaw cycles", pid);
    Ok(())
}

/// Freezes all filesystems with a writer on each, waits until every writer is blocked, pings
/// paced through the freeze, thaws; `frozen_rounds` times.
fn frozen_pings(
    plan: &FootprintPlan,
    rig: &Rig,
    c: &mut dyn Contender,
    run: &mut ProcessRun,
    stop: &AtomicBool,
) -> Result<(), BenchError> {
    let mounts = rig.mounts();
    for m in &mounts {
        rig.scratch.check_ours(m)?;
    }
    let mut writers = Vec::new();
    for fs in &rig.fss {
        writers.push(Writer::start(&fs.mountpoint, WRITER)?);
    }
    // After the writers: dropped first, so they are never joined while frozen.
    let _thaw = ThawGuard(&rig.fss);
    let mut fewest = usize::MAX;
    for _ in 0..plan.frozen_rounds {
        check_stop(stop)?;
        std::thread::sleep(Duration::from_millis(200));
        if let Err(e) = c.quiesce(&mounts) {
            let _ = c.thaw();
            return Err(e);
        }
        let deadline = Instant::now() + BLOCK_TIMEOUT;
        let blocked = loop {
            let n = writers
                .iter()
                .filter(|w| sys::thread_state(w.tid) == Some('D'))
                .count();
            if n == writers.len() || Instant::now() > deadline {
                break n;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        fewest = fewest.min(blocked);
        for _ in 0..plan.frozen_pings {
            let t = Instant::now();
            match c.ping() {
                Some(Ok(())) => run.ping_frozen.push(t.elapsed()),
                Some(Err(e)) => {
                    let _ = c.thaw();
                    return Err(e);
                }
                None => break,
            }
            sleep_until(t + PING_INTERVAL);
        }
        c.thaw()?;
    }
    run.blocked = Some((fewest, writers.len()));
    drop(_thaw);
    for w in writers {
        w.stop()?;
    }
    Ok(())
}

/// `GET /metrics` over the unix socket, on a new connection; returns the body's length.
pub fn scrape(socket: &Path) -> Result<usize, BenchError> {
    let what = || format!("scraping {}", socket.display());
    let mut s = UnixStream::connect(socket).map_err(BenchError::io(what()))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(BenchError::io(what()))?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .map_err(BenchError::io(what()))?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).map_err(BenchError::io(what()))?;
    let head_end = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| BenchError::contender("agent", format!("{}: no HTTP header", what())))?;
    if !resp.starts_with(b"HTTP/1.1 200") {
        return Err(BenchError::contender(
            "agent",
            format!("{}: {}", what(), String::from_utf8_lossy(&resp[..head_end])),
        ));
    }
    Ok(resp.len() - head_end - 4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agent_may_freeze_only_the_named_mounts() {
        let mounts = vec![
            PathBuf::from("/var/tmp/fb/mnt/fs0"),
            PathBuf::from("/var/tmp/fb/mnt/fs1"),
        ];
        let args = footprint_agent_args(
            Path::new("/s/a.sock"),
            &mounts,
            Path::new("/dev/shm/x"),
            AgentConfig::FULL,
            "tcp://127.0.0.1:4317",
        );
        let text: Vec<String> = args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let only: Vec<&str> = text
            .iter()
            .enumerate()
            .filter(|(_, a)| *a == "--freeze-only")
            .map(|(i, _)| text[i + 1].as_str())
            .collect();
        assert_eq!(only, ["/var/tmp/fb/mnt/fs0", "/var/tmp/fb/mnt/fs1"]);
        let after = |flag: &str| text[text.iter().position(|a| a == flag).unwrap() + 1].clone();
        assert_eq!(after("--ebpf"), "auto");
        assert_eq!(after("--metrics-listen"), "unix:///s/a.metrics.sock");
        assert_eq!(after("--otlp-endpoint"), "tcp://127.0.0.1:4317");
        let base = footprint_agent_args(
            Path::new("/s/a.sock"),
            &mounts,
            Path::new("/x"),
            LADDER[0].1,
            "tcp://127.0.0.1:4317",
        );
        let base: Vec<String> = base
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert!(!base.iter().any(|a| a == "--otlp-endpoint"));
        assert!(base.windows(2).any(|w| w[0] == "--ebpf" && w[1] == "off"));
        assert!(base
            .windows(2)
            .any(|w| w[0] == "--metrics-listen" && w[1] == "off"));
    }

    #[test]
    fn the_ladder_adds_one_part_at_a_time() {
        let on =
            |c: AgentConfig| usize::from(c.ebpf) + usize::from(c.metrics) + usize::from(c.otlp);
        for (i, (_, cfg)) in LADDER.iter().enumerate() {
            assert_eq!(on(*cfg), i);
        }
        assert_eq!(LADDER[3].1, AgentConfig::FULL);
    }

    #[test]
    fn round_trips_are_read_in_their_unit() {
        let got = round_trips(r#"{"rtt_us": [250, 1.5]}"#, "rtt_us", 1e-6).unwrap();
        assert_eq!(
            got,
            [Duration::from_micros(250), Duration::from_nanos(1500)]
        );
        let got = round_trips("{\"version\":\"x\",\"rtt_ms\":[0.5]}\n", "rtt_ms", 1e-3).unwrap();
        assert_eq!(got, [Duration::from_micros(500)]);
        assert!(round_trips(r#"{"rtt_ms": [1]}"#, "rtt_us", 1e-6).is_err());
        assert!(round_trips(r#"{"rtt_us": ["x"]}"#, "rtt_us", 1e-6).is_err());
        assert!(round_trips("not json", "rtt_us", 1e-6).is_err());
    }

    #[test]
    fn load_time_is_read_from_either_log_format() {
        let human = "2026-12-05T05:00:00Z  INFO guest_agent::observer: eBPF freeze observer attached freeze_source=\"sync_fs\" contention_hook=\"raw_tracepoint\" load_ms=21\n";
        assert_eq!(parse_load_ms(human), Some(21));
        let json = r#"{"fields":{"message":"eBPF freeze observer attached","load_ms":54}}"#;
        assert_eq!(parse_load_ms(json), Some(54));
        assert_eq!(parse_load_ms(&format!("{human}{json}\n")), Some(54));
        assert_eq!(parse_load_ms("nothing here\n"), None);
    }
}
