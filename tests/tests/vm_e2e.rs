//! End to end in a real VM (issue 6): the static guest-agent runs as a service of a busybox
//! init under qemu (TCG) on Debian's 6.1 and 6.12 kernels, and the host drives it over vsock
//! through a vhost-user backend's hybrid socket, as a microVM host would.
//!
//! One VM per kernel runs every scenario in order, each asserted:
//! 1. guestctl Ping over the hybrid socket (the host, CID 2, is accepted);
//! 2. a connection from another CID (the guest itself over vsock loopback, CID 1) is dropped;
//! 3. Init formats and mounts a virtio-blk volume (repeating it is a no-op, a different one is
//!    refused);
//! 4. the eBPF observer runs with a freeze_super/thaw_super (fentry/fexit) freeze source;
//! 5. snapshot: while a writer appends checksummed records, `guestctl snapshot --pause-pid
//!    <qemu> -- cp --sparse=always` copies the volume's image. The copy passes `e2fsck -fn`
//!    with no journal recovery pending and every record verifies; a copy taken the same way
//!    minus the snapshot flow needs journal recovery (so the first assertion can fail). The
//!    eBPF observer saw the freeze with a duration inside the host's bounds, `guestctl proxy`
//!    (scraping the guest's /metrics over vsock) serves the blocked writer it counted, and the
//!    agent's spans reach an OTLP receiver on the host through the guest-to-host vsock path
//!    (`<uds>_4317`) as children of guestctl's spans in the snapshot's trace;
//! 6. watchdog: after a Quiesce the host goes away; while frozen, the eBPF observer lists the
//!    writer blocked (FreezeStatus, and `guest_fs_blocked_writers` through guestctl proxy); the
//!    guest thaws itself at the deadline and the writer resumes;
//! 7. grpc-core over vsock (issue 12's `vsock:CID:PORT` row): Python grpcio (the pinned PyPI
//!    release, built from its source distribution: PyPI's binary wheel has no vsock resolver),
//!    run in the guest from a read-only disk (`tests/vm/mkpybundle.sh`), calls a second agent
//!    that accepts the guest's own CID through `grpc.insecure_channel("vsock:1:PORT")` with
//!    default options: Ping, grpc.health.v1 Check, FreezeStatus, GetMetrics,
//!    Quiesce/FreezeStatus/Thaw of the volume.
//!
//! Needs `scripts/setup-vm.sh` (part of `make setup`) and the host's guestctl (`cargo build
//! --workspace`); the static guest binaries are brought up to date by the harness
//! (`tests/vm/build-guest.sh`). A failure prints the guest console.

#[path = "../vm/harness/mod.rs"]
mod harness;

use std::time::{Duration, Instant};

use harness::disk;
use harness::error::Result;
use harness::metrics;
use harness::proxy::MetricsProxy;
use harness::pybundle;
use harness::records;
use harness::snapshot;
use harness::vm::{Vm, VmConfig};

/// The agent's watchdog in the test VMs: long enough for a snapshot on a loaded 2-core host,
/// short enough to wait for.
const FREEZE_TIMEOUT: Duration = Duration::from_secs(8);

/// Where the volume is mounted in the guest and the writer's file on it.
const VOLUME: &str = "/data";
const RECORDS: &str = "/data/records.log";

/// Host port of the OTLP receiver the agent exports to over vsock.
const OTLP_PORT: u32 = 4317;

/// Writer heartbeat: one console line per this many records.
const HEARTBEAT: u32 = 500;

fn log(vm: &Vm, msg: &str) {
    eprintln!("[{:>6.1}s] {msg}", vm.uptime().as_secs_f64());
}

/// The writer's heartbeat lines so far, as (seq, guest uptime).
fn heartbeats(vm: &Vm) -> Vec<(u64, f64)> {
    vm.console()
        .lines()
        .iter()
        .filter_map(|l| {
            let rest = l.trim().strip_prefix("writer: seq=")?;
            let (seq, up) = rest.split_once(" uptime=")?;
            Some((seq.parse().ok()?, up.trim().parse().ok()?))
        })
        .collect()
}

/// Waits until the writer printed `n` more heartbeats than `after`.
fn wait_heartbeats(vm: &Vm, after: usize, n: usize, timeout: Duration) -> Result<usize> {
    let deadline = Instant::now() + timeout;
    loop {
        let now = heartbeats(vm).len();
        if now >= after + n {
            return Ok(now);
        }
        if Instant::now() >= deadline {
            return Err(harness::error::VmError::Timeout {
                what: format!("{n} writer heartbeats after {after} (have {now})"),
                after: timeout,
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn ping(vm: &Vm) -> Result<()> {
    let out = vm.guestctl(&["ping"])?;
    assert_eq!(out.code, Some(0), "ping failed: {}", out.text);
    assert!(out.text.contains("pong from guest-agent"), "{}", out.text);
    Ok(())
}

/// The agent drops a vsock peer whose CID is not the host's: the guest connects to itself
/// over vsock loopback (CID 1) with the static guestctl.
fn foreign_cid_is_dropped(vm: &mut Vm) -> Result<()> {
    let out = vm.shell().run(
        "guestctl --connect vsock://1:2695 --connect-timeout 3 --timeout 3 ping",
        Duration::from_secs(30),
    )?;
    assert_ne!(out.status, 0, "a ping from CID 1 must fail: {}", out.output);
    let line = vm.wait_console("not allowed", Duration::from_secs(10))?;
    assert!(
        line.contains("peer_cid=1") && line.contains("allowed=[2]"),
        "the agent must log the dropped peer: {line}"
    );
    // The host (CID 2) still gets in.
    ping(vm)
}

fn init_volume(vm: &mut Vm) -> Result<()> {
    let spec = format!("{VOLUME}=/dev/vda,format");
    let out = vm.guestctl(&["init", "--volume", &spec])?;
    assert_eq!(out.code, Some(0), "init failed: {}", out.text);
    let mounts = vm.sh("cat /proc/mounts")?;
    assert!(
        mounts
            .lines()
            .any(|l| l.starts_with(&format!("/dev/vda {VOLUME} ext4 rw"))),
        "{VOLUME} is not an ext4 on /dev/vda:\n{mounts}"
    );
    // Init is applied once: repeating it is a no-op, anything else is refused.
    let same = vm.guestctl(&["init", "--volume", &spec])?;
    assert_eq!(
        same.code,
        Some(0),
        "a repeated Init must succeed: {}",
        same.text
    );
    let other = vm.guestctl(&["init", "--volume", "/other=/dev/vda"])?;
    assert_eq!(
        other.code,
        Some(1),
        "a different second Init must be refused: {}",
        other.text
    );
    Ok(())
}

fn start_writer(vm: &mut Vm) -> Result<()> {
    vm.sh(&format!(
        "(writer {RECORDS} {HEARTBEAT} >/dev/console 2>&1 &)"
    ))?;
    wait_heartbeats(vm, 0, 2, Duration::from_secs(30))?;
    Ok(())
}

fn ebpf_source(vm: &Vm) -> Result<String> {
    let status = vm.rpc().freeze_status()?;
    let ebpf = status.ebpf.unwrap_or_default();
    log(vm, &format!("eBPF observer: {ebpf:?}"));
    assert!(ebpf.active, "the eBPF observer is not running: {ebpf:?}");
    assert!(
        matches!(ebpf.freeze_source.as_str(), "fentry" | "fexit"),
        "freezes must be seen at freeze_super/thaw_super (fentry family) on {}: {ebpf:?}",
        vm.kernel().release
    );
    Ok(ebpf.freeze_source)
}

/// Polls FreezeStatus while frozen until the observer lists the writer blocked on the volume.
fn writer_seen_blocked(vm: &Vm) -> Result<()> {
    // Well inside the watchdog's FREEZE_TIMEOUT, loose for an emulated CPU shared by two VMs.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let status = vm.rpc().freeze_status()?;
        assert!(
            status.frozen,
            "the agent must hold {VOLUME} frozen: {status:?}"
        );
        let observed = status.observed.iter().find(|o| o.mountpoint == VOLUME);
        if let Some(o) = observed {
            assert_eq!(o.origin, "agent", "{o:?}");
            if o.blocked_writers.iter().any(|w| w.comm == "writer") {
                log(
                    vm,
                    &format!("observer sees blocked writers: {:?}", o.blocked_writers),
                );
                return Ok(());
            }
        }
        assert!(
            Instant::now() < deadline,
            "the eBPF observer never listed the writer blocked on {VOLUME}: {:?}",
            status.observed
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The eBPF observer's frozen time of the last freeze of the volume, from its log line.
fn observed_frozen_ms(vm: &Vm) -> Option<u64> {
    vm.console()
        .lines()
        .iter()
        .rev()
        .find(|l| l.contains("filesystem thawed") && l.contains(&format!("\"{VOLUME}\"")))
        .and_then(|l| {
            let v = l.split("frozen_ms=").nth(1)?;
            v.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
        })
}

fn snapshot_is_consistent(vm: &mut Vm) -> Result<()> {
    let source = ebpf_source(vm)?;
    let dir = vm.dir().to_path_buf();
    let (snap, live) = (dir.join("snapshot.img"), dir.join("live-copy.img"));
    let before = heartbeats(vm).last().copied().unwrap_or_default();
    let otlp = vm
        .otlp()
        .expect("the VM has an OTLP receiver")
        .socket()
        .to_path_buf();

    let run = snapshot::guestctl_snapshot(vm, 0, &snap, Some(&otlp))?;
    let r = &run.report;
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(
        r["quiesce"]["frozen_count"], 1,
        "only {VOLUME} is eligible: {r}"
    );
    assert_eq!(r["pause_pid"], vm.qemu().pid(), "{r}");
    assert_eq!(r["command"]["exit_code"], 0, "{r}");
    assert_eq!(r["thaw"]["confirmed"], true, "{r}");
    log(
        vm,
        &format!(
            "guestctl snapshot: trace {}, phases {}",
            run.trace_id(),
            r["phases"]
        ),
    );

    // The same copy without quiesce, while the writer keeps writing.
    let seen = heartbeats(vm).len();
    wait_heartbeats(vm, seen, 2, Duration::from_secs(30))?;
    snapshot::live_copy(vm, 0, &live)?;

    let fsck = disk::fsck(&snap)?;
    assert!(fsck.clean(), "the quiesced copy is not clean:\n{fsck}");
    let report = records::verify(&disk::read_file(&snap, "/records.log", &dir)?);
    assert!(
        report.consistent(),
        "records in the quiesced copy: {report:?}"
    );
    assert!(
        report.valid >= before.0,
        "the copy holds {} records but the writer had written {} before the snapshot",
        report.valid,
        before.0
    );
    log(
        vm,
        &format!("quiesced copy: clean, {} records verify", report.valid),
    );

    let fsck_live = disk::fsck(&live)?;
    let live_report = records::verify(&disk::read_file(&live, "/records.log", &dir)?);
    log(
        vm,
        &format!(
            "unquiesced copy: needs_recovery={}, e2fsck exit {:?}, records {} valid, {} problems {:?}",
            fsck_live.needs_recovery,
            fsck_live.code,
            live_report.valid,
            live_report.problem_count,
            live_report.problems
        ),
    );
    assert!(
        fsck_live.needs_recovery && !fsck_live.clean(),
        "a copy of the live volume should need journal recovery:\n{fsck_live}"
    );

    // The observer measured the freeze; it lies between what the host saw frozen for sure
    // (pause, copy, resume) and the whole `guestctl snapshot` run.
    let frozen_ms = vm
        .console()
        .wait_line("the observer's thaw line", Duration::from_secs(5), |l| {
            l.contains("filesystem thawed")
        })
        .ok()
        .and_then(|_| observed_frozen_ms(vm))
        .expect("the eBPF observer logged no thaw of the volume");
    let low = run.surely_frozen().as_millis() as u64;
    let high = (run.ended - run.started).as_millis() as u64;
    log(
        vm,
        &format!("eBPF freeze duration {frozen_ms} ms; host bounds {low}..{high} ms"),
    );
    // The guest clock under TCG drifts a little against the host's: 5% + 100 ms of slack.
    assert!(
        frozen_ms * 100 + 10_000 >= low * 95 && frozen_ms * 95 <= high * 100 + 10_000,
        "eBPF saw a freeze of {frozen_ms} ms; the host saw between {low} and {high} ms"
    );
    freeze_metrics(vm, &source, frozen_ms, high)?;
    snapshot_trace(vm, run.trace_id())
}

/// `guestctl proxy` serving the test VM (as vm="e2e") from its /metrics on vsock port 2696.
fn proxy_for(vm: &Vm) -> Result<MetricsProxy> {
    let spec = format!(
        "hvsock://{}:{}",
        vm.vsockd().uds.display(),
        metrics::METRICS_PORT
    );
    MetricsProxy::start("e2e", &spec)
}

/// The value of a sample of the test VM in what the proxy served; panics if it is missing.
fn vm_sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut all = vec![("vm", "e2e")];
    all.extend_from_slice(labels);
    metrics::sample(text, name, &all)
        .unwrap_or_else(|| panic!("no sample {name}{all:?} in what guestctl proxy served:\n{text}"))
}

/// After the snapshot, `guestctl proxy` (scraping the guest's /metrics over vsock) serves the
/// writer the eBPF program saw blocked and the freeze with the duration it measured. A writer
/// blocks from the start of the freeze (before it completes) until after the thaw, so its stall
/// is bounded by the host's outer window `host_ms`, not by the frozen time.
fn freeze_metrics(vm: &Vm, source: &str, ebpf_frozen_ms: u64, host_ms: u64) -> Result<()> {
    let text = proxy_for(vm)?.scrape()?;
    let get = |name: &str, labels: &[(&str, &str)]| vm_sample(&text, name, labels);
    let data = [("mountpoint", VOLUME)];
    assert_eq!(get("guest_agent_up", &[]), 1.0);
    assert_eq!(get("guest_ebpf_up", &[]), 1.0);
    assert_eq!(
        get("guest_ebpf_freeze_source_info", &[("source", source)]),
        1.0
    );
    assert_eq!(
        get("guest_fs_freezes_observed_total", &[("origin", "agent")]),
        1.0
    );
    let stalled = get("guest_fs_stalled_writers_total", &data);
    let stall_s = get("guest_fs_writer_stall_seconds_sum", &data);
    assert!(stalled >= 1.0, "no stalled writer counted");
    let agent_ms = 1000.0
        * get(
            "guest_fs_freeze_duration_seconds_sum",
            &[("mountpoint", VOLUME), ("origin", "agent")],
        );
    log(
        vm,
        &format!(
            "metrics via guestctl proxy: {stalled} stalled writer(s), {:.0} ms stalled; \
             frozen {agent_ms:.0} ms (agent) vs {ebpf_frozen_ms} ms (eBPF)",
            stall_s * 1000.0
        ),
    );
    // Both clocks are the guest's: the two measurements of one freeze agree closely, and no
    // writer waited longer than the host held the volume frozen.
    let ebpf = ebpf_frozen_ms as f64;
    assert!(
        (ebpf - agent_ms).abs() <= 100.0 + 0.2 * agent_ms,
        "the eBPF observer saw {ebpf} ms frozen, the agent {agent_ms:.0} ms"
    );
    assert!(
        stall_s > 0.0 && stall_s * 1000.0 <= host_ms as f64 * 1.05 + 100.0,
        "writers stalled {stall_s} s; the host held the volume frozen at most {host_ms} ms"
    );
    // The same registry answers the GuestMetrics RPC.
    let rpc_text = vm.rpc().metrics()?;
    assert_eq!(metrics::sample(&rpc_text, "guest_ebpf_up", &[]), Some(1.0));
    Ok(())
}

/// The agent's spans of the snapshot reach the host's receiver over the guest-to-host vsock
/// path (its only OTLP endpoint is vsock://2:PORT) in the trace `guestctl snapshot` started,
/// as children of guestctl's spans.
fn snapshot_trace(vm: &Vm, trace_id: &str) -> Result<()> {
    assert_eq!(trace_id.len(), 32, "guestctl snapshot printed no trace id");
    let receiver = vm.otlp().expect("the VM has an OTLP receiver");
    // The agent's batch exporter may send a phase span before the server span that is its
    // parent (and the child of guestctl's span): wait for the link itself, not the first span.
    let spans = receiver.wait_spans(
        "an agent span in the snapshot's trace whose parent is a guestctl span",
        Duration::from_secs(30),
        |spans| {
            let in_trace = || spans.iter().filter(|s| s.trace_id == trace_id);
            in_trace().filter(|s| s.service.contains("agent")).any(|g| {
                in_trace().any(|h| !h.service.contains("agent") && h.span_id == g.parent_span_id)
            })
        },
    )?;
    let in_trace: Vec<_> = spans.iter().filter(|s| s.trace_id == trace_id).collect();
    let host_ids: Vec<&str> = in_trace
        .iter()
        .filter(|s| !s.service.contains("agent"))
        .map(|s| s.span_id.as_str())
        .collect();
    let guest: Vec<_> = in_trace
        .iter()
        .filter(|s| s.service.contains("agent"))
        .collect();
    log(
        vm,
        &format!(
            "trace {trace_id}: {} host span(s), guest spans {:?}",
            host_ids.len(),
            guest.iter().map(|s| s.name.as_str()).collect::<Vec<_>>()
        ),
    );
    assert!(
        !host_ids.is_empty(),
        "guestctl exported no span: {in_trace:#?}"
    );
    assert!(
        guest
            .iter()
            .any(|s| host_ids.contains(&s.parent_span_id.as_str())),
        "no agent span is a child of a guestctl span: {in_trace:#?}"
    );
    // Its OTLP metrics take the same path (pushed every 2 s here) and carry the freeze just
    // made: the cumulative freeze-duration histogram counts it.
    let freezes = receiver.wait_metric(
        "agent",
        "guest.fs.freeze.duration",
        1.0,
        Duration::from_secs(15),
    )?;
    log(
        vm,
        &format!("OTLP metrics: guest.fs.freeze.duration count {freezes}"),
    );
    Ok(())
}

fn watchdog_thaws_when_the_host_is_gone(vm: &mut Vm) -> Result<()> {
    let proxy = proxy_for(vm)?;
    let freeze = snapshot::quiesce(vm)?;
    assert_eq!(freeze.frozen_count, 1);
    // While the VM runs frozen, the eBPF observer lists the writer blocked on the volume, and
    // the host's monitoring sees it through guestctl proxy.
    writer_seen_blocked(vm)?;
    let text = proxy.scrape()?;
    let data = [("mountpoint", VOLUME)];
    assert!(
        vm_sample(&text, "guest_fs_blocked_writers", &data) >= 1.0,
        "{text}"
    );
    assert_eq!(
        vm_sample(&text, "guest_fs_frozen_filesystems", &[]),
        1.0,
        "{text}"
    );
    // The host that quiesced is gone: nobody sends Thaw. The writer, blocked on its next
    // record, prints nothing more until the watchdog thaws.
    let h0 = heartbeats(vm).len();
    let until = freeze.frozen + FREEZE_TIMEOUT - Duration::from_millis(1500);
    std::thread::sleep(until.saturating_duration_since(Instant::now()));
    let h1 = heartbeats(vm).len();
    assert_eq!(
        h0, h1,
        "the writer went on while frozen: {h0} heartbeats after the quiesce, {h1} later"
    );
    let resumed = wait_heartbeats(vm, h1, 2, FREEZE_TIMEOUT + Duration::from_secs(20))?;
    let after = freeze.frozen.elapsed();
    log(
        vm,
        &format!("writer resumed {after:?} after the quiesce ({h1} -> {resumed} heartbeats)"),
    );
    assert!(
        after >= FREEZE_TIMEOUT - Duration::from_secs(1),
        "the writer resumed after {after:?}, before the {FREEZE_TIMEOUT:?} watchdog"
    );

    let status = vm.rpc().freeze_status()?;
    assert!(!status.frozen, "{status:?}");
    assert_eq!(status.watchdog_thaws, 1, "{status:?}");
    let event = status
        .last_watchdog_thaw
        .expect("a watchdog thaw is recorded");
    assert_eq!(event.mountpoints, vec![VOLUME.to_string()], "{event:?}");
    let text = proxy.scrape()?;
    assert_eq!(vm_sample(&text, "guest_fs_watchdog_thaws_total", &[]), 1.0);
    assert_eq!(vm_sample(&text, "guest_fs_blocked_writers", &data), 0.0);
    assert_eq!(vm_sample(&text, "guest_fs_frozen_filesystems", &[]), 0.0);
    let late = event.at_unix_ms as i64 - freeze.watchdog_deadline_unix_ms as i64;
    assert!(
        (0..5000).contains(&late),
        "the watchdog thawed {late} ms after its deadline"
    );
    Ok(())
}

/// The vsock port of the guest's second agent, the one that accepts its own CID (1).
const LOOPBACK_AGENT_PORT: u32 = 2697;

/// Bound on the Python client's whole run in the guest: starting the interpreter and importing
/// grpc from a virtio disk under TCG takes seconds, each of its calls has its own deadline.
const PY_CLIENT_TIMEOUT: Duration = Duration::from_secs(300);

/// Deadline of each call the Python client makes.
const PY_CALL_TIMEOUT_SECS: u32 = 60;

/// The second agent in the guest: same binary, vsock port [`LOOPBACK_AGENT_PORT`], accepting
/// CID 1 (the guest talking to itself over vsock loopback), its own state directory, no eBPF
/// and no metrics listener (the first agent keeps those), allowed to freeze only the volume.
/// Stopped (SIGTERM by its PID, which thaws anything it holds) when dropped.
struct LoopbackAgent<'a> {
    vm: &'a mut Vm,
}

const LOOPBACK_LOG: &str = "/tmp/agent-loopback.log";
const LOOPBACK_PID: &str = "/run/agent-loopback.pid";

impl<'a> LoopbackAgent<'a> {
    fn start(vm: &'a mut Vm) -> Result<Self> {
        vm.sh(&format!(
            "guest-agent --listen vsock://-1:{LOOPBACK_AGENT_PORT} --allow-cid 1 \
             --metrics-listen off --ebpf off --state-dir /run/agent-loopback \
             --freeze-only {VOLUME} --freeze-timeout 60 >{LOOPBACK_LOG} 2>&1 & echo $! >{LOOPBACK_PID}"
        ))?;
        let mut agent = Self { vm };
        // Ready when the static guestctl (tonic) gets a pong over the same loopback path.
        let out = agent.vm.shell().run(
            &format!(
                "i=0; until guestctl --connect vsock://1:{LOOPBACK_AGENT_PORT} --connect-timeout 3 \
                 --timeout 5 ping; do i=$((i+1)); [ $i -lt 40 ] || exit 1; \
                 kill -0 $(cat {LOOPBACK_PID}) || exit 2; sleep 1; done"
            ),
            Duration::from_secs(240),
        )?;
        assert_eq!(
            out.status,
            0,
            "the loopback agent never answered guestctl over vsock://1:{LOOPBACK_AGENT_PORT}: {}\n{}",
            out.output,
            agent.log()
        );
        Ok(agent)
    }

    fn log(&mut self) -> String {
        match self.vm.sh(&format!("cat {LOOPBACK_LOG}")) {
            Ok(text) => format!("--- {LOOPBACK_LOG} (the loopback agent) ---\n{text}"),
            Err(e) => format!("(no log of the loopback agent: {e})"),
        }
    }
}

impl Drop for LoopbackAgent<'_> {
    fn drop(&mut self) {
        let stop = format!(
            "pid=$(cat {LOOPBACK_PID}); kill $pid; i=0; while kill -0 $pid 2>/dev/null; do \
             i=$((i+1)); [ $i -lt 100 ] || exit 1; sleep 0.1; done"
        );
        if let Err(e) = self.vm.shell().run_ok(&stop, Duration::from_secs(30)) {
            eprintln!("stopping the loopback agent: {e}");
        }
    }
}

/// One call as the Python client reported it.
fn py_call<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["calls"]
        .as_array()
        .and_then(|calls| calls.iter().find(|c| c["call"] == name))
        .unwrap_or_else(|| panic!("the Python client made no call {name}: {report}"))
}

/// Issue 12's `vsock:CID:PORT` row: a grpc-core client (Python grpcio) inside the guest calls
/// the agent over AF_VSOCK through grpc-core's own vsock resolver, with default channel options
/// (no authority override; grpc-core sends `:authority: 1:2697`).
fn python_grpcio_over_vsock(vm: &mut Vm) -> Result<()> {
    let version = vm.rpc().ping()?.version;
    let dev = vm.python_device().expect("the VM has the Python disk");
    let mp = pybundle::MOUNTPOINT;
    vm.sh(&format!(
        "[ \"$(cat /sys/block/{dev}/ro)\" = 1 ] && mkdir -p {mp} && mount -t ext4 -o ro /dev/{dev} {mp}"
    ))?;
    let mut agent = LoopbackAgent::start(vm)?;
    let target = format!("vsock:1:{LOOPBACK_AGENT_PORT}");
    let started = Instant::now();
    let out = agent.vm.shell().run(
        &format!(
            "{} {} --target {target} --volume {VOLUME} --timeout {PY_CALL_TIMEOUT_SECS} 2>&1",
            pybundle::PYTHON,
            pybundle::CLIENT
        ),
        PY_CLIENT_TIMEOUT,
    )?;
    let took = started.elapsed();
    let Some(report) = out
        .output
        .lines()
        .find_map(|l| l.trim().strip_prefix("PYCLIENT_JSON "))
        .and_then(|j| serde_json::from_str::<serde_json::Value>(j).ok())
    else {
        panic!(
            "the Python client printed no report (exit {}):\n{}\n{}",
            out.status,
            out.output,
            agent.log()
        );
    };
    log(
        agent.vm,
        &format!(
            "Python {} grpcio {} protobuf {} over {target}: import {} s, run {took:?}",
            report["python"], report["grpcio"], report["protobuf"], report["import_s"]
        ),
    );
    for call in report["calls"].as_array().into_iter().flatten() {
        log(agent.vm, &format!("  {call}"));
    }
    let failed: Vec<_> = report["calls"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["ok"] != true)
        .collect();
    if !failed.is_empty() || out.status != 0 {
        let log = agent.log();
        let hint = if report["vsock_resolver"] == false {
            "\nThis grpcio's grpc-core has no vsock resolver (`vsock:` falls through to DNS): \
             PyPI's manylinux2014 wheel is built against glibc 2.17 and grpc-core compiles the \
             resolver only for glibc >= 2.18. Build the pinned version from its source \
             distribution: GUEST_AGENT_PY_GRPCIO=sdist tests/vm/mkpybundle.sh"
        } else {
            ""
        };
        panic!(
            "grpc-core (Python grpcio {}) over {target} with default options: {} of {} calls \
             failed (exit {}):\n{}{hint}\n{log}",
            report["grpcio"],
            failed.len(),
            report["calls"].as_array().map_or(0, Vec::len),
            out.status,
            failed
                .iter()
                .map(|c| format!(
                    "  {}: {} {} [{}]",
                    c["call"], c["code"], c["details"], c["debug"]
                ))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    assert_eq!(py_call(&report, "Ping")["version"], version.as_str());
    for check in ["Health.Check()", "Health.Check(boxlite.v1.Guest)"] {
        assert_eq!(py_call(&report, check)["status"], "SERVING", "{check}");
    }
    assert_eq!(py_call(&report, "FreezeStatus")["frozen"], false);
    let metrics = py_call(&report, "GetMetrics");
    assert!(
        metrics["bytes"].as_u64().unwrap_or(0) > 0
            && metrics["build_info"].as_array().is_some_and(|l| l
                .iter()
                .any(|l| l.as_str().unwrap_or("").contains(&version))),
        "GetMetrics must carry guest_agent_build_info with version {version}: {metrics}"
    );
    let volume_only = serde_json::json!([{
        "mountpoint": VOLUME, "fstype": "ext4", "outcome": "FS_OUTCOME_FROZEN"
    }]);
    let quiesce = py_call(&report, "Quiesce");
    assert_eq!(quiesce["count"], 1, "{quiesce}");
    assert_eq!(quiesce["filesystems"], volume_only, "{quiesce}");
    let frozen = py_call(&report, "FreezeStatus(frozen)");
    assert_eq!(frozen["frozen"], true, "{frozen}");
    assert_eq!(
        frozen["mountpoints"],
        serde_json::json!([VOLUME]),
        "{frozen}"
    );
    let thaw = py_call(&report, "Thaw");
    assert_eq!(thaw["count"], 1, "{thaw}");
    assert_eq!(
        thaw["filesystems"][0]["outcome"], "FS_OUTCOME_THAWED",
        "{thaw}"
    );
    assert_eq!(py_call(&report, "FreezeStatus(thawed)")["frozen"], false);
    drop(agent);
    vm.sh(&format!("umount {mp}"))?;
    Ok(())
}

/// One scenario, run against a booted VM.
type Step = fn(&mut Vm) -> Result<()>;

fn end_to_end(series: &str) {
    let t = Instant::now();
    let mut cfg = VmConfig::new(series);
    cfg.freeze_timeout_secs = FREEZE_TIMEOUT.as_secs() as u32;
    cfg.otlp_port = Some(OTLP_PORT);
    cfg.agent_args = vec!["--otlp-metrics-interval".into(), "2".into()];
    cfg.python = true;
    let mut vm = Vm::boot(cfg).unwrap_or_else(|e| panic!("boot {series}: {e}"));
    log(
        &vm,
        &format!(
            "booted {} ({:?}; qemu pid {}, vhost-device-vsock pid {}); initramfs {:?}, \
             init ready {:?}, agent answering {:?}",
            series,
            vm.kernel().release,
            vm.qemu().pid(),
            vm.vsockd().pid(),
            vm.boot_times.initramfs,
            vm.boot_times.init,
            vm.boot_times.agent
        ),
    );
    let steps: [(&str, Step); 8] = [
        ("ping", |vm| ping(vm)),
        ("foreign CID dropped", foreign_cid_is_dropped),
        ("init formats and mounts", init_volume),
        ("writer", start_writer),
        ("eBPF freeze source", |vm| ebpf_source(vm).map(drop)),
        ("consistent snapshot", snapshot_is_consistent),
        ("watchdog", watchdog_thaws_when_the_host_is_gone),
        ("grpcio over vsock", python_grpcio_over_vsock),
    ];
    for (name, step) in steps {
        let s = Instant::now();
        step(&mut vm).unwrap_or_else(|e| panic!("{series}: step {name:?}: {e}"));
        log(&vm, &format!("step {name:?} ok in {:?}", s.elapsed()));
    }
    log(
        &vm,
        &format!("kernel {series}: all scenarios passed in {:?}", t.elapsed()),
    );
}

#[test]
fn vm_debian_6_1() {
    end_to_end("6.1");
}

#[test]
fn vm_debian_6_12() {
    end_to_end("6.12");
}

/// The eBPF freeze hooks inside a guest whose kernel allows fexit (the figures BENCHMARKS.md
/// reports for the 6.1 and 6.12 kernels): the observer's overhead benchmark
/// (`freeze-observer/examples/overhead.rs`) and its freeze coverage count
/// (`examples/coverage.rs`, on the guest's scratch volume `/data`), with the guest's own agent
/// started with `--ebpf off` so that "detached" really is detached. `FREEZE_HOOK` (default
/// `auto`) picks the hook, `ROUNDS` the overhead rounds. Prints figures; asserts that they were
/// produced with the hook asked for (auto: fexit on these kernels) and that every freeze was
/// seen. Run by `scripts/vm-overhead.sh`, which builds both static binaries and names them in
/// `GUEST_AGENT_VM_EXTRA_BINS`.
#[test]
#[ignore = "benchmark: run by scripts/vm-overhead.sh"]
fn ebpf_hooks_in_a_guest() {
    let series = std::env::var("GUEST_AGENT_VM_SERIES").unwrap_or_else(|_| "6.12".into());
    let rounds = std::env::var("ROUNDS").unwrap_or_else(|_| "6".into());
    let hook = std::env::var("FREEZE_HOOK").unwrap_or_else(|_| "auto".into());
    assert!(
        std::env::var("GUEST_AGENT_VM_EXTRA_BINS")
            .is_ok_and(|b| b.contains("overhead") && b.contains("coverage")),
        "GUEST_AGENT_VM_EXTRA_BINS must name the static overhead and coverage examples \
         (scripts/vm-overhead.sh)"
    );
    let mut cfg = VmConfig::new(&series);
    cfg.agent_args = vec!["--ebpf".into(), "off".into()];
    cfg.icount_shift = std::env::var("GUEST_AGENT_VM_ICOUNT").ok().map(|s| {
        s.parse()
            .unwrap_or_else(|_| panic!("GUEST_AGENT_VM_ICOUNT={s:?}: want a shift, e.g. 3"))
    });
    let clock = match cfg.icount_shift {
        Some(shift) => format!("qemu TCG, icount shift={shift}: guest time counts instructions"),
        None => "qemu TCG".to_string(),
    };
    let mut vm = Vm::boot(cfg).unwrap_or_else(|e| panic!("boot {series}: {e}"));
    init_volume(&mut vm).unwrap_or_else(|e| panic!("volume in the {series} guest: {e}"));
    let release = vm.kernel().release.clone();
    let overhead = vm
        .shell()
        .run_ok(
            &format!("ROUNDS={rounds} FREEZE_HOOK={hook} /bin/overhead 1 /tmp 2>&1"),
            Duration::from_secs(1800),
        )
        .unwrap_or_else(|e| panic!("overhead benchmark in the {series} guest: {e}"));
    println!("--- eBPF overhead in the {series} guest ({release:?}, {clock}) ---\n{overhead}");
    let coverage = vm
        .shell()
        .run_ok(
            &format!("COVERAGE_MOUNT={VOLUME} FREEZE_HOOK={hook} /bin/coverage 10 2>&1"),
            Duration::from_secs(600),
        )
        .unwrap_or_else(|e| panic!("coverage count in the {series} guest: {e}"));
    println!("--- freeze coverage in the {series} guest ({release:?}) ---\n{coverage}");
    let source = if hook == "auto" {
        "fexit"
    } else {
        hook.as_str()
    };
    let source = source.replace('-', "_");
    assert!(overhead.contains(&format!("hooks: {source}")), "{overhead}");
    assert!(
        coverage.contains("30 freezes made, 30 seen frozen, 30 counted"),
        "{coverage}"
    );
}
