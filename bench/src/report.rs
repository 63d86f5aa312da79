//! The report: Markdown tables printed to stdout and written as one section of
//! BENCHMARKS.md, leaving every other section (e.g. "eBPF overhead") as it was.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use crate::contender::ContenderKind;
use crate::error::BenchError;
use crate::machine::Machine;
use crate::results::{Phase, Results};
use crate::stats::{ms, Summary};

/// Heading of our section in BENCHMARKS.md.
pub const SECTION: &str = "## Freeze cost: agent vs qemu-guest-agent";

/// Context printed with the tables.
#[derive(Debug, Clone, Default)]
pub struct RunInfo {
    /// The machine.
    pub machine: Machine,
    /// The command that produced the figures.
    pub command: String,
    /// Workload and cycle parameters, one line.
    pub parameters: String,
    /// Where freezes and stalls were observed from.
    pub observer: String,
    /// Extra remarks (failures, cross-checks).
    pub notes: Vec<String>,
}

fn load_text(m: &Machine) -> String {
    let others = m.others_cpu.map_or(String::new(), |s| {
        format!(
            ", other programs used {:.0} % of all CPU time during the run",
            s * 100.0
        )
    });
    format!(
        "1-minute load {:.2} at the start (and {:.2} at the end, which includes this benchmark's \
         own writers blocked in D state){others}",
        m.load.0, m.load.1
    )
}

fn cell_ms(s: Option<Summary>, f: impl Fn(&Summary) -> Duration) -> String {
    s.as_ref().map_or("–".into(), |s| ms(f(s)))
}

fn pair(s: Option<Summary>) -> String {
    s.map_or("–".into(), |s| format!("{} / {}", ms(s.p50), ms(s.p99)))
}

/// The whole section, heading included.
pub fn render(results: &Results, info: &RunInfo) -> String {
    let mut out = String::new();
    let m = &info.machine;
    let _ = writeln!(out, "{SECTION}\n");
    let _ = writeln!(
        out,
        "Measured {} on Linux {}, {} × {}, {} MiB RAM; source `{}`.{}",
        m.date,
        m.kernel,
        m.cpus,
        m.cpu_model,
        m.mem_mib,
        m.revision,
        if m.busy() {
            format!(
                " **The machine was busy**: {}; absolute figures are noisier than on an idle \
                 machine, the ratios come from interleaved cycles of the same run.",
                load_text(m)
            )
        } else {
            format!(" The machine was quiet: {}.", load_text(m))
        }
    );
    let _ = writeln!(out, "\nCommand: `{}`\n", info.command);
    let _ = writeln!(out, "{}\n", info.parameters);
    let _ = writeln!(out, "Observer: {}.\n", info.observer);

    let _ = writeln!(out, "### Targets\n");
    let _ = writeln!(out, "| target | measured | goal | |\n|---|---|---|---|");
    for t in results.targets() {
        let verdict = match t.met {
            Some(true) => "met",
            Some(false) => "**missed**",
            None => "not measured",
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {verdict} |",
            t.what, t.value, t.target
        );
    }

    let _ = writeln!(
        out,
        "\n### With writers (dirty pages)\n\nWriter stall beyond the hold = each writer's \
         stall on a frozen filesystem (observer) minus that cycle's actual hold; times in ms, \
         `p50 / p99`.\n"
    );
    let _ = writeln!(
        out,
        "| K | contender | stall beyond hold p50 | p99 | max | stalls | Quiesce | Thaw | frozen window | p99 vs qemu-ga |\n|---|---|---|---|---|---|---|---|---|---|"
    );
    for k in results.ks(Phase::Dirty) {
        for (&(_, _, kind), c) in results.cells.range(
            (Phase::Dirty, k, ContenderKind::Agent)..=(Phase::Dirty, k, ContenderKind::Fsfreeze),
        ) {
            let stall = Summary::of(&c.stall_beyond_hold);
            let vs = results
                .stall_ratio(k, kind)
                .map_or("–".into(), |r| format!("{r:.3}x"));
            let _ = writeln!(
                out,
                "| {k} | {} | {} | {} | {} | {} | {} | {} | {} | {vs} |",
                kind.label(),
                cell_ms(stall, |s| s.p50),
                cell_ms(stall, |s| s.p99),
                cell_ms(stall, |s| s.max),
                c.stalls.len(),
                pair(Summary::of(&c.quiesce)),
                pair(Summary::of(&c.thaw)),
                pair(Summary::of(&c.windows)),
            );
        }
    }

    if !results.ks(Phase::Clean).is_empty() {
        let _ = writeln!(
            out,
            "\n### Clean filesystems (no writers)\n\nTimes in ms, `p50 / p99`.\n\n\
             | K | contender | Quiesce+Thaw | Quiesce | Thaw | frozen window | p50 vs fsfreeze loop |\n|---|---|---|---|---|---|---|"
        );
        for k in results.ks(Phase::Clean) {
            for (&(_, _, kind), c) in results.cells.range(
                (Phase::Clean, k, ContenderKind::Agent)
                    ..=(Phase::Clean, k, ContenderKind::Fsfreeze),
            ) {
                let vs = results
                    .clean_ratio(k, kind)
                    .map_or("–".into(), |r| format!("{r:.2}x"));
                let _ = writeln!(
                    out,
                    "| {k} | {} | {} | {} | {} | {} | {vs} |",
                    kind.label(),
                    pair(Summary::of(&c.quiesce_thaw)),
                    pair(Summary::of(&c.quiesce)),
                    pair(Summary::of(&c.thaw)),
                    pair(Summary::of(&c.windows)),
                );
            }
        }
    }

    let _ = writeln!(
        out,
        "\n### Processes\n\nPing: one round trip every 4 ms during each hold; the idle baseline is the same \
         with nothing frozen and no writer running.\n\n\
         | contender | Ping while frozen p50 / p99 (n) | Ping idle p50 / p99 | its CPU per idle Ping | RSS / peak | start to ready p50 / max (n) | binary |\n|---|---|---|---|---|---|---|"
    );
    for (kind, f) in &results.facts {
        let pings: Vec<Duration> = results
            .cells
            .iter()
            .filter(|((_, _, k), _)| k == kind)
            .flat_map(|(_, c)| c.pings.iter().copied())
            .collect();
        let ping = Summary::of(&pings).map_or("–".into(), |s| {
            format!(
                "{:.3} / {:.3} ms ({})",
                s.p50.as_secs_f64() * 1e3,
                s.p99.as_secs_f64() * 1e3,
                s.n
            )
        });
        let idle = Summary::of(&f.ping_idle).map_or("–".into(), |s| {
            format!(
                "{:.3} / {:.3} ms",
                s.p50.as_secs_f64() * 1e3,
                s.p99.as_secs_f64() * 1e3
            )
        });
        let cpu = f
            .cpu_per_ping
            .map_or("–".into(), |d| format!("{:.0} µs", d.as_secs_f64() * 1e6));
        let mem = f.memory.map_or("–".into(), |m| {
            format!(
                "{:.1} / {:.1} MiB",
                m.rss_kib as f64 / 1024.0,
                m.hwm_kib as f64 / 1024.0
            )
        });
        let ready = Summary::of(&f.ready).map_or("–".into(), |s| {
            format!("{} / {} ms ({})", ms(s.p50), ms(s.max), s.n)
        });
        let size = f.binary_size.map_or("–".into(), |b| {
            format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
        });
        let _ = writeln!(
            out,
            "| {} | {ping} | {idle} | {cpu} | {mem} | {ready} | {size} |",
            kind.label()
        );
    }
    if !info.notes.is_empty() {
        let _ = writeln!(out, "\nNotes:\n");
        for n in &info.notes {
            let _ = writeln!(out, "- {n}");
        }
    }
    out
}

/// Reads `path` (if it exists), replaces the section headed like `section` and writes it
/// back.
pub fn write_section(path: &Path, section: &str) -> Result<(), BenchError> {
    crate::sections::write_section(path, section)
        .map_err(BenchError::io(format!("updating {}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::CycleResult;
    use crate::sections::replace_section;

    #[test]
    fn replaces_only_our_section_and_keeps_the_others() {
        let doc = "# Benchmarks\n\nIntro.\n\n## eBPF overhead\n\ntheirs 1\n\n\
                   ## Freeze cost: agent vs qemu-guest-agent\n\nold table\n\n## Later\n\nkept\n";
        let new = replace_section(doc, &format!("{SECTION}\n\nnew table\n"));
        assert!(new.contains("## eBPF overhead\n\ntheirs 1\n"));
        assert!(new.contains("new table"));
        assert!(!new.contains("old table"));
        assert!(new.ends_with("## Later\n\nkept\n"), "{new}");
        // Idempotent.
        assert_eq!(
            replace_section(&new, &format!("{SECTION}\n\nnew table")),
            new
        );
    }

    #[test]
    fn appends_when_missing_and_creates_when_empty() {
        let doc = "# Benchmarks\n\n## eBPF overhead\n\ntheirs\n";
        let new = replace_section(doc, &format!("{SECTION}\n\nt"));
        assert!(new.starts_with(doc));
        assert!(new.ends_with(&format!("\n\n{SECTION}\n\nt\n")));
        let fresh = replace_section("", &format!("{SECTION}\n\nt"));
        assert_eq!(fresh, format!("# Benchmarks\n\n{SECTION}\n\nt\n"));
    }

    #[test]
    fn render_has_every_table_and_the_machine() {
        let mut r = Results::default();
        let c = CycleResult {
            quiesce: Duration::from_millis(20),
            thaw: Duration::from_millis(1),
            held: Duration::from_millis(100),
            pings: vec![Duration::from_micros(300)],
            complete: true,
            ..CycleResult::default()
        };
        r.add(Phase::Dirty, 8, ContenderKind::Agent, c.clone());
        r.add(Phase::Clean, 8, ContenderKind::Fsfreeze, c);
        r.facts.insert(ContenderKind::Agent, Default::default());
        let info = RunInfo {
            machine: Machine {
                kernel: "6.1.0".into(),
                cpus: 2,
                load: (2.0, 0.5),
                ..Machine::default()
            },
            command: "make bench".into(),
            ..RunInfo::default()
        };
        let text = render(&r, &info);
        assert!(text.starts_with(SECTION));
        for needle in [
            "Linux 6.1.0",
            "make bench",
            "### Targets",
            "### With writers",
            "### Clean",
            "### Processes",
            "busy",
            "| 8 | agent |",
            "| 8 | fsfreeze loop |",
        ] {
            assert!(text.contains(needle), "missing {needle}:\n{text}");
        }
    }
}
