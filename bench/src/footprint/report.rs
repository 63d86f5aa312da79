//! The footprint section of BENCHMARKS.md: Markdown tables of [`super::FootprintResults`].

use std::fmt::Write as _;
use std::time::Duration;

use super::callgrind::{self, Events, PingCost};
use super::sys::{ProcStatus, SchedTotals};
use super::{FootprintResults, ProcessRun};
use crate::machine::Machine;
use crate::stats::{ms, Summary};

/// Heading of the section in BENCHMARKS.md.
pub const SECTION: &str = "## Footprint: agent vs qemu-guest-agent";

/// Issue 13's targets.
const RSS_TARGET_MIB: f64 = 12.0;
const HWM_TARGET_MIB: f64 = 16.0;
const PING_P50_TARGET: Duration = Duration::from_micros(60);
const PING_P99_TARGET: Duration = Duration::from_micros(250);
const READY_TARGET: Duration = Duration::from_millis(150);

/// Context printed with the tables.
#[derive(Debug, Clone, Default)]
pub struct FootprintInfo {
    /// The machine (load at start and end).
    pub machine: Machine,
    /// The command that produced the figures.
    pub command: String,
    /// The workload, one paragraph.
    pub parameters: String,
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

fn mib_bytes(bytes: u64) -> String {
    let m = bytes as f64 / (1024.0 * 1024.0);
    if m < 10.0 {
        format!("{m:.2} MiB")
    } else {
        format!("{m:.1} MiB")
    }
}

/// Microseconds for short latencies, milliseconds beyond 10 ms.
pub fn us(d: Duration) -> String {
    let v = d.as_secs_f64() * 1e6;
    if v < 10_000.0 {
        format!("{v:.0} µs")
    } else {
        format!("{} ms", ms(d))
    }
}

fn lat(samples: &[Duration]) -> String {
    Summary::of(samples).map_or("–".into(), |s| {
        format!("{} / {} / {} ({})", us(s.p50), us(s.p99), us(s.max), s.n)
    })
}

fn lat_ms(samples: &[Duration]) -> String {
    Summary::of(samples).map_or("–".into(), |s| {
        format!("{} / {} / {} ms ({})", ms(s.p50), ms(s.p99), ms(s.max), s.n)
    })
}

/// "CPU / switches" per Ping over `n` Pings, e.g. `92 µs / 2.0`.
fn per_ping(sched: Option<SchedTotals>, n: usize) -> String {
    match sched {
        Some(s) if n > 0 => format!(
            "{} / {:.1}",
            us(s.cpu / n as u32),
            s.switches as f64 / n as f64
        ),
        _ => "–".into(),
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "**not met**"
    }
}

fn status_cells(s: Option<ProcStatus>) -> String {
    s.map_or("– | – | – | –".into(), |s| {
        format!(
            "{} | {} / {} | {} | {}",
            mib(s.rss_kib),
            mib(s.anon_kib),
            mib(s.file_kib),
            mib(s.hwm_kib),
            s.threads
        )
    })
}

fn targets(out: &mut String, r: &FootprintResults) {
    let agents: Vec<&ProcessRun> = r
        .runs
        .iter()
        .filter(|run| run.label.starts_with("agent"))
        .collect();
    if agents.is_empty() {
        return;
    }
    let _ = writeln!(out, "### Targets (issue 13), agent as a user runs it\n");
    let _ = writeln!(
        out,
        "| target | agent | measured | goal | |\n|---|---|---|---|---|"
    );
    for agent in &agents {
        if let Some(end) = agent.end() {
            let rss = end.rss_kib as f64 / 1024.0;
            let hwm = end.hwm_kib as f64 / 1024.0;
            let _ = writeln!(
                out,
                "| steady RSS after the workload | {} | {rss:.1} MiB | ≤ {RSS_TARGET_MIB} MiB | {} |",
                agent.label,
                verdict(rss <= RSS_TARGET_MIB)
            );
            let _ = writeln!(
                out,
                "| peak RSS (VmHWM) | {} | {hwm:.1} MiB | ≤ {HWM_TARGET_MIB} MiB | {} |",
                agent.label,
                verdict(hwm <= HWM_TARGET_MIB)
            );
        }
    }
    for agent in &agents {
        for (what, samples) in [
            ("Ping idle", &agent.ping_idle),
            (
                "Ping, filesystems frozen, writers blocked",
                &agent.ping_frozen,
            ),
            ("Ping idle from Python's grpcio", &agent.python_pings),
            ("Ping idle from a bare HTTP/2 client", &agent.bare_pings),
        ] {
            if let Some(s) = Summary::of(samples) {
                let _ = writeln!(
                    out,
                    "| {what}, p50 / p99 | {} | {} / {} | ≤ {} / ≤ {} | {} |",
                    agent.label,
                    us(s.p50),
                    us(s.p99),
                    us(PING_P50_TARGET),
                    us(PING_P99_TARGET),
                    verdict(s.p50 <= PING_P50_TARGET && s.p99 <= PING_P99_TARGET)
                );
            }
        }
    }
    for ready in r.ready.iter().filter(|t| t.label.starts_with("agent")) {
        let worst = ready.cold.iter().chain(&ready.warm).max().copied();
        if let Some(w) = worst {
            let _ = writeln!(
                out,
                "| ready (listening, eBPF attached), slowest cold or warm start | {} | {} ms | ≤ {} ms | {} |",
                ready.label,
                ms(w),
                READY_TARGET.as_millis(),
                verdict(w <= READY_TARGET)
            );
        }
    }
    out.push('\n');
}

fn memory(out: &mut String, runs: &[ProcessRun], heading: &str, intro: &str, deltas: bool) {
    let _ = writeln!(out, "### {heading}\n\n{intro}\n");
    let _ = writeln!(
        out,
        "| process | RSS after start (MiB) | RSS at end | anon / file | peak (VmHWM) | threads | CPU used |{}",
        if deltas { " Δ RSS at end / Δ peak |" } else { "" }
    );
    let _ = writeln!(
        out,
        "|---|---:|---:|---:|---:|---:|---:|{}",
        if deltas { "---:|" } else { "" }
    );
    let mut previous: Option<ProcStatus> = None;
    for r in runs {
        let delta = match (previous, r.end()) {
            (Some(p), Some(e)) if deltas => format!(
                " {:+.1} / {:+.1} |",
                (e.rss_kib as f64 - p.rss_kib as f64) / 1024.0,
                (e.hwm_kib as f64 - p.hwm_kib as f64) / 1024.0
            ),
            _ if deltas => " |".to_owned(),
            _ => String::new(),
        };
        previous = r.end();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |{delta}",
            r.label,
            r.start().map_or("–".into(), |s| mib(s.rss_kib)),
            status_cells(r.end()),
            r.cpu.map_or("–".into(), |c| format!("{} ms", ms(c)))
        );
    }
    out.push('\n');
}

fn steps(out: &mut String, run: &ProcessRun) {
    let _ = writeln!(
        out,
        "Memory of `{}` after each step (MiB; threads):\n\n| after | RSS | anon / file | VmHWM | threads |\n|---|---:|---:|---:|---:|",
        run.label
    );
    for (step, s) in &run.steps {
        let _ = writeln!(out, "| {step} | {} |", status_cells(Some(*s)));
    }
    out.push('\n');
}

/// The table of what a Ping costs in code, with each row's estimated cycles against qemu-ga's.
fn ping_costs(out: &mut String, costs: &[PingCost]) {
    let Some(first) = costs.first() else {
        return;
    };
    let qga = costs
        .iter()
        .find(|c| c.label == "qemu-ga")
        .map(|c| c.per_ping(Events::estimated_cycles));
    let _ = writeln!(out, "### What a Ping costs in code\n");
    let _ = writeln!(
        out,
        "Counted by callgrind in the server process (all threads, user space) over {} \
         back-to-back Pings on one connection after {} unmeasured, per Ping: instructions, \
         misses of a simulated cache of fixed size (32 KiB L1 for instructions and for data, \
         2 MiB last level), mispredicted branches and calls into the allocator (malloc, \
         realloc, posix_memalign, ...); estimated cycles = instructions + 10 \
         per L1 miss + 100 per last-level miss + 10 per misprediction (the low end of the \
         cachegrind manual's typical costs). None of this depends on the machine's speed or \
         load, unlike the round trips and CPU times above. Equal instruction counts are not \
         equal costs: code that does not fit the instruction cache runs several times slower \
         per instruction. The kernel's side (syscalls, the eBPF programs) is not counted; the \
         eBPF observer is off (its user-space share is background polling, in the ladder's \
         CPU column). Clients are separate processes, not counted; for `guestctl` and grpcio \
         the count includes their connection set-up.\n",
        first.pings,
        callgrind::WARMUP,
    );
    let _ = writeln!(
        out,
        "| server | client | instructions | I1 misses | D1 misses | LL misses | mispredicted branches | allocations | estimated cycles | vs qemu-ga |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for c in costs {
        let cycles = c.per_ping(Events::estimated_cycles);
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} | {:.0} | {:.0} | {:.1} | {:.0} | {:.1} | {cycles:.0} | {} |",
            c.label,
            c.client,
            c.per_ping(|e| e.instructions),
            c.per_ping(|e| e.i1_misses),
            c.per_ping(|e| e.d1_misses),
            c.per_ping(|e| e.ll_misses),
            c.per_ping(|e| e.mispredicts),
            c.per_ping(|e| e.allocations),
            qga.map_or("–".into(), |q| format!("{:.2}x", cycles / q))
        );
    }
    out.push('\n');
}

/// The whole section, heading included.
pub fn render(r: &FootprintResults, info: &FootprintInfo) -> String {
    let mut out = String::new();
    let m = &info.machine;
    let _ = writeln!(out, "{SECTION}\n");
    let _ = writeln!(
        out,
        "Measured {} on Linux {}, {} × {}, {} MiB RAM; source `{}`. 1-minute load {:.2} at the \
         start and {:.2} at the end{}{}.\n",
        m.date,
        m.kernel,
        m.cpus,
        m.cpu_model,
        m.mem_mib,
        m.revision,
        m.load.0,
        m.load.1,
        m.others_cpu.map_or(String::new(), |s| format!(
            "; other programs used {:.0} % of all CPU time during the run",
            s * 100.0
        )),
        if m.busy() {
            " (**busy machine**: latencies are noisier than on an idle one)"
        } else {
            ""
        }
    );
    let _ = writeln!(out, "Command: `{}`\n", info.command);
    let _ = writeln!(out, "{}\n", info.parameters);
    targets(&mut out, r);
    memory(
        &mut out,
        &r.runs,
        "Memory",
        "The agent with eBPF observer, `/metrics` and OTLP export to a local receiver; \
         qemu-ga with its defaults. MiB; anon = heap and stacks, file = mapped pages of the \
         binary and libraries.",
        false,
    );
    if let Some(agent) = r.runs.first() {
        steps(&mut out, agent);
    }
    memory(
        &mut out,
        &r.ladder,
        "What each part costs",
        "The same release agent and workload (no frozen-Ping phase), one part switched on per \
         row; the difference between rows is that part's share.",
        true,
    );
    let _ = writeln!(out, "### Ping\n");
    let _ = writeln!(
        out,
        "Round trip from a persistent client on the unix socket (tonic/HTTP/2 for the agent, \
         a line of JSON for qemu-ga's guest-ping), p50 / p99 / max (n). Frozen: all loop \
         filesystems of the run frozen by the process itself, one writer blocked on each. \
         Per idle Ping: the server process's CPU time (all threads, from schedstat) and its \
         context switches over the idle Pings, divided by their number; these depend far \
         less on how fast the machine wakes a process than the round trips do.\n"
    );
    let _ = writeln!(
        out,
        "| process | idle | per idle Ping: CPU / context switches | frozen, writers blocked | writers blocked (fewest) | Quiesce+Thaw of 1 fs p50 / p99 / max | /metrics scrape |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|");
    for run in r.runs.iter().chain(&r.ladder) {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} |",
            run.label,
            lat(&run.ping_idle),
            per_ping(run.ping_idle_sched, run.ping_idle.len()),
            lat(&run.ping_frozen),
            run.blocked
                .map_or("–".into(), |(b, k)| format!("{b} of {k}")),
            lat_ms(&run.cycles),
            if run.scrapes.is_empty() {
                "–".into()
            } else {
                format!("{} ({} bytes)", lat_ms(&run.scrapes), run.scrape_bytes)
            }
        );
    }
    out.push('\n');
    for run in r.runs.iter().filter(|run| !run.guestctl_pings.is_empty()) {
        let _ = writeln!(
            out,
            "`guestctl ping --count {n} --interval-ms 4` against `{}` (one connection; \
             connecting not included): {}. A whole `guestctl ping` (process start, connect, \
             one Ping, exit): {}.\n",
            run.label,
            lat(&run.guestctl_pings),
            lat_ms(&run.guestctl_oneshot),
            n = run.guestctl_pings.len(),
        );
    }
    let qga = r
        .runs
        .iter()
        .find(|run| run.label == "qemu-ga")
        .and_then(|q| Summary::of(&q.ping_idle));
    for run in r.runs.iter().filter(|run| !run.bare_pings.is_empty()) {
        let ratio = match (Summary::of(&run.bare_pings), &qga) {
            (Some(b), Some(q)) => format!(
                "; against qemu-ga's idle Ping from its JSON-line client in the same run, p50 \
                 {:.2}x, p99 {:.2}x",
                b.p50.as_secs_f64() / q.p50.as_secs_f64(),
                b.p99.as_secs_f64() / q.p99.as_secs_f64()
            ),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "A bare HTTP/2 client (`bench/src/footprint/bare_h2.rs`: blocking socket, request \
             frames encoded once, no runtime; as thin as the JSON-line client used for qemu-ga, \
             so this is what the agent's side costs) against `{}`, {n} Pings one every 4 ms \
             after 20 unmeasured: {}{ratio}.\n",
            run.label,
            lat(&run.bare_pings),
            n = run.bare_pings.len(),
        );
    }
    for run in r.runs.iter().filter(|run| !run.python_pings.is_empty()) {
        let _ = writeln!(
            out,
            "Python's grpcio (`bench/python/ping_series.py`: one channel, stubs generated \
             from the .proto, {n} Pings one every 4 ms after 20 unmeasured) against `{}`: {}.\n",
            run.label,
            lat(&run.python_pings),
            n = run.python_pings.len(),
        );
    }
    ping_costs(&mut out, &r.ping_costs);
    let _ = writeln!(out, "### Start-up\n");
    let _ = writeln!(
        out,
        "Spawn to the first answer (agent: Ping; its eBPF observer is loaded and attached \
         before the listeners open; qemu-ga: guest-sync). Cold: the executable's pages \
         evicted from the page cache just before (`POSIX_FADV_DONTNEED`; shared libraries \
         others have mapped stay cached). p50 / max (n) in ms.\n"
    );
    let _ = writeln!(
        out,
        "| process | cold | warm | eBPF load + attach (agent's log) | binary still cached at a cold start |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|");
    for t in &r.ready {
        let pm = |v: &[Duration]| {
            Summary::of(v).map_or("–".into(), |s| {
                format!("{} / {} ({})", ms(s.p50), ms(s.max), s.n)
            })
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            t.label,
            pm(&t.cold),
            pm(&t.warm),
            pm(&t.ebpf_load),
            t.cached_at_cold
                .map_or("–".into(), |c| format!("{:.0} %", c * 100.0))
        );
    }
    out.push('\n');
    let _ = writeln!(out, "### Binary size\n");
    let _ = writeln!(
        out,
        "| binary | size | stripped | linking |\n|---|---:|---:|---|"
    );
    for b in &r.sizes {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            b.label,
            mib_bytes(b.bytes),
            b.stripped.map_or("–".into(), mib_bytes),
            if b.is_static {
                "static".to_owned()
            } else {
                b.shared_libs.map_or("dynamic".into(), |l| {
                    format!("dynamic, + {} of shared libraries", mib_bytes(l))
                })
            }
        );
    }
    out.push('\n');
    let mut notes: Vec<String> = Vec::new();
    for run in r.runs.iter().chain(&r.ladder) {
        if let Some(e) = &run.ebpf {
            notes.push(format!("{}: eBPF {e}.", run.label));
        }
        if let Some(o) = run.otlp {
            notes.push(format!(
                "{}: the OTLP receiver got {} span exports ({} spans) and {} metric exports \
                 from it.",
                run.label, o.span_exports, o.spans, o.metric_exports
            ));
        }
    }
    notes.extend(r.notes.iter().cloned());
    if !notes.is_empty() {
        let _ = writeln!(out, "Notes:\n");
        for n in notes {
            let _ = writeln!(out, "- {n}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::footprint::ReadyTimes;

    #[test]
    fn renders_targets_and_tables() {
        let st = |rss_mib: u64, hwm_mib: u64| ProcStatus {
            rss_kib: rss_mib * 1024,
            hwm_kib: hwm_mib * 1024,
            anon_kib: 1024,
            file_kib: rss_mib * 1024 - 1024,
            threads: 3,
        };
        let agent = ProcessRun {
            label: "agent".into(),
            steps: vec![("started", st(9, 20)), ("end", st(10, 20))],
            ping_idle: vec![Duration::from_micros(50); 10],
            ping_idle_sched: Some(SchedTotals {
                cpu: Duration::from_micros(920),
                switches: 20,
            }),
            ping_frozen: vec![Duration::from_micros(300); 10],
            python_pings: vec![Duration::from_micros(120); 10],
            bare_pings: vec![Duration::from_micros(45); 10],
            blocked: Some((8, 8)),
            ..ProcessRun::default()
        };
        let qga = ProcessRun {
            label: "qemu-ga".into(),
            ping_idle: vec![Duration::from_micros(30); 10],
            ..ProcessRun::default()
        };
        let r = FootprintResults {
            runs: vec![agent, qga],
            ready: vec![ReadyTimes {
                label: "agent".into(),
                cold: vec![Duration::from_millis(40)],
                warm: vec![Duration::from_millis(20)],
                ..ReadyTimes::default()
            }],
            ping_costs: vec![
                PingCost {
                    label: "agent".into(),
                    client: "bare".into(),
                    pings: 1000,
                    events: Events {
                        instructions: 60_000_000,
                        i1_misses: 3_000_000,
                        d1_misses: 500_000,
                        ll_misses: 10_000,
                        mispredicts: 1_000_000,
                        allocations: 40_500,
                    },
                },
                PingCost {
                    label: "qemu-ga".into(),
                    client: "JSON".into(),
                    pings: 1000,
                    events: Events {
                        instructions: 80_000_000,
                        ..Events::default()
                    },
                },
            ],
            ..FootprintResults::default()
        };
        let text = render(&r, &FootprintInfo::default());
        // 60000 + 10 * (3000 + 500) + 100 * 10 + 10 * 1000 = 106000 cycles per Ping.
        assert!(
            text.contains(
                "| agent | bare | 60000 | 3000 | 500 | 10.0 | 1000 | 40.5 | 106000 | 1.32x |"
            ),
            "{text}"
        );
        assert!(
            text.contains("| qemu-ga | JSON | 80000 | 0 | 0 | 0.0 | 0 | 0.0 | 80000 | 1.00x |"),
            "{text}"
        );
        assert!(text.contains("over 1000 back-to-back Pings"), "{text}");
        assert!(text.starts_with(SECTION));
        assert!(
            text.contains("| steady RSS after the workload | agent | 10.0 MiB | ≤ 12 MiB | met |"),
            "{text}"
        );
        assert!(
            text.contains("| peak RSS (VmHWM) | agent | 20.0 MiB | ≤ 16 MiB | **not met** |"),
            "{text}"
        );
        assert!(
            text.contains("| Ping idle, p50 / p99 | agent | 50 µs / 50 µs |"),
            "{text}"
        );
        assert!(
            text.contains("| agent | 50 µs / 50 µs / 50 µs (10) | 92 µs / 2.0 | 300 µs"),
            "{text}"
        );
        assert!(
            text.contains("| qemu-ga | 30 µs / 30 µs / 30 µs (10) | – |"),
            "{text}"
        );
        assert!(
            text.contains(
                "frozen, writers blocked, p50 / p99 | agent | 300 µs / 300 µs | ≤ 60 µs / ≤ 250 µs | **not met**"
            ),
            "{text}"
        );
        assert!(
            text.contains("| agent | 40.0 ms | ≤ 150 ms | met |"),
            "{text}"
        );
        assert!(text.contains("| 8 of 8 |"), "{text}");
        assert!(
            text.contains(
                "| Ping idle from Python's grpcio, p50 / p99 | agent | 120 µs / 120 µs |"
            ),
            "{text}"
        );
        assert!(
            text.contains("10 Pings one every 4 ms after 20 unmeasured) against `agent`: 120 µs"),
            "{text}"
        );
        assert!(
            text.contains("| Ping idle from a bare HTTP/2 client, p50 / p99 | agent | 45 µs / 45 µs | ≤ 60 µs / ≤ 250 µs | met |"),
            "{text}"
        );
        assert!(
            text.contains("after 20 unmeasured: 45 µs / 45 µs / 45 µs (10); against qemu-ga's idle Ping from its JSON-line client in the same run, p50 1.50x, p99 1.50x."),
            "{text}"
        );
    }

    #[test]
    fn latencies_switch_to_milliseconds_when_long() {
        assert_eq!(us(Duration::from_micros(57)), "57 µs");
        assert_eq!(us(Duration::from_millis(12)), "12.0 ms");
    }
}
