//! The "## Fleet scale" section of BENCHMARKS.md.

use std::fmt::Write as _;
use std::path::Path;

use super::run::{exposition_file, Outcome, INTERVAL, PROM_TIMEOUT};
use super::standin::SLOW_BODY;
use super::Args;

/// Heading of the section.
pub const SECTION: &str = "## Fleet scale";

/// The `q` quantile (0..=1) of `v` (nearest rank), or NaN when empty.
pub fn quantile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len());
    s[rank - 1]
}

fn ms(s: f64) -> String {
    if s.is_nan() {
        "-".into()
    } else if s < 0.01 {
        format!("{:.2} ms", s * 1e3)
    } else {
        format!("{:.0} ms", s * 1e3)
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn label(o: &Outcome) -> String {
    let s = o.scenario;
    let (d, f, sl) = s.fault_counts();
    let mode = if s.sd {
        "per-VM targets (file_sd)"
    } else {
        "merged /metrics"
    };
    if s.faults {
        format!("{mode}, {d} dead + {f} frozen + {sl} slow")
    } else {
        format!("{mode}, all healthy")
    }
}

/// CPU time of the proxy per scrape of every target, ms (SD: per round of all targets).
fn cpu_per_round(o: &Outcome) -> f64 {
    let rounds = o.wall.as_secs_f64() / INTERVAL.as_secs_f64();
    o.cpu.as_secs_f64() * 1e3 / rounds.max(1e-9)
}

/// The section for `results`.
pub fn render(results: &[Outcome], args: &Args) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{SECTION}\n");
    let expo = std::fs::read_to_string(exposition_file()).unwrap_or_default();
    let expo_samples = expo
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .count();
    let _ = writeln!(
        out,
        "`make bench-fleet` (`fleet-bench`, bench/src/fleet/): the release `guestctl proxy \
         --scrape-timeout {}` scraped by Debian's Prometheus 2.42 every {} s (scrape timeout {} s), \
         {} s per run. Targets: real `guest-agent` processes (`--ebpf off`, metrics on a unix \
         socket, nothing to freeze) up to {}, the rest stand-ins (one process) serving a real \
         agent's exposition captured after freeze cycles with blocked writers and eBPF on, 9 \
         filesystems seen frozen (bench/data/fleet-exposition.txt, mountpoints renamed: {} bytes, {} samples), half over unix sockets, half \
         over hybrid vsock (`CONNECT 2696`). Faults are stand-ins: dead = socket refuses, frozen = \
         accepts and never answers (a SIGSTOPped VMM), slow = headers at once, body over {} s. \
         Scrape duration = Prometheus' `scrape_duration_seconds` (merged: of the proxy's \
         /metrics; per-VM: of each healthy VM's target). Proxy CPU per round = its CPU time over \
         the window divided by the scrape rounds; RSS sampled every second.\n",
        args.proxy_timeout,
        INTERVAL.as_secs(),
        PROM_TIMEOUT.as_secs(),
        args.seconds,
        args.real_max,
        expo.len(),
        expo_samples,
        SLOW_BODY.as_secs(),
    );
    let _ = writeln!(
        out,
        "| N | run | real agents + stand-ins | scrapes | scrape p50 | p99 | max | samples/scrape | head series | proxy CPU/round | per 1,000 samples | proxy RSS mean / max (HWM) | healthy VMs up every scrape | faulty VMs down |"
    );
    let _ = writeln!(
        out,
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for o in results {
        let n = o.scenario.n;
        let rss_mean = if o.rss.is_empty() {
            0
        } else {
            o.rss.iter().sum::<u64>() / o.rss.len() as u64
        };
        let rss_max = o.rss.iter().copied().max().unwrap_or(0);
        let cpu = cpu_per_round(o);
        let _ = writeln!(
            out,
            "| {n} | {} | {} + {} | {} | {} | {} | {} | {:.0} | {:.0} | {:.1} ms | {:.2} ms | {} / {} ({}) | {}/{} | {}/{} |",
            label(o),
            o.real,
            o.standins,
            o.scrapes,
            ms(quantile(&o.durations, 0.5)),
            ms(quantile(&o.durations, 0.99)),
            ms(quantile(&o.durations, 1.0)),
            o.samples,
            o.head_series,
            cpu,
            cpu / (o.samples / 1000.0).max(1e-9),
            mib(rss_mean),
            mib(rss_max),
            mib(o.hwm),
            o.healthy_up.0,
            o.healthy_up.1,
            o.faulty_down.0,
            o.faulty_down.1,
        );
    }
    for o in results
        .iter()
        .filter(|o| o.scenario.sd && !o.faulty_durations.is_empty())
    {
        let _ = writeln!(
            out,
            "\nPer-VM targets at N = {}: the faulty VMs' own scrapes took p50 {} / max {} \
             (each bounded by the proxy's per-VM timeout, answered 503: up 0), while the \
             healthy VMs' scrapes above stayed at p99 {}.",
            o.scenario.n,
            ms(quantile(&o.faulty_durations, 0.5)),
            ms(quantile(&o.faulty_durations, 1.0)),
            ms(quantile(&o.durations, 0.99)),
        );
    }
    if let Some(agent) = results.iter().find_map(|o| o.agent_rss) {
        let _ = writeln!(
            out,
            "\nOne real agent (`--ebpf off`, idle) held {} RSS.",
            mib(agent)
        );
    }
    let _ = writeln!(
        out,
        "\nHow to read it: the merged scrape waits for the slowest VM up to the per-VM bound \
         (`--scrape-timeout`, shortened to Prometheus' own timeout when that is shorter), so \
         faults add that bound whatever their number, and the healthy VMs are merged while the \
         faulty ones are awaited. As per-VM targets, each faulty VM costs only its own target. \
         CPU per 1,000 samples includes the per-connection cost, so targets with few samples \
         (idle real agents) cost more per sample."
    );
    // Verdicts at the largest N, merged.
    let largest = results.iter().map(|o| o.scenario.n).max().unwrap_or(0);
    let smallest = results.iter().map(|o| o.scenario.n).min().unwrap_or(0);
    let merged = |n: usize, faults: bool| {
        results
            .iter()
            .find(|o| o.scenario.n == n && o.scenario.faults == faults && !o.scenario.sd)
    };
    let _ = writeln!(out, "\nTargets (issue 15):\n");
    for o in results.iter().filter(|o| o.scenario.n == largest) {
        let p99 = quantile(&o.durations, 0.99);
        let rss_max = o.rss.iter().copied().max().unwrap_or(0).max(o.hwm);
        let _ = writeln!(
            out,
            "- N = {largest}, {}: p99 scrape {} (target < 1 s: {}), proxy RSS peak {} (target < 50 MiB: {})",
            label(o),
            ms(p99),
            if p99 < 1.0 { "met" } else { "NOT met" },
            mib(rss_max),
            if rss_max < 50 * 1024 { "met" } else { "NOT met" },
        );
    }
    if let (Some(a), Some(b)) = (merged(smallest, false), merged(largest, false)) {
        let per_a = cpu_per_round(a) / (a.samples / 1000.0).max(1e-9);
        let per_b = cpu_per_round(b) / (b.samples / 1000.0).max(1e-9);
        let _ = writeln!(
            out,
            "- work per scrape grows linearly: proxy CPU per 1,000 samples merged {per_a:.2} ms at N = {smallest} and {per_b:.2} ms at N = {largest} (ratio {:.2}; {:.0} → {:.0} samples per scrape for {:.0}× the targets)",
            per_b / per_a,
            a.samples,
            b.samples,
            largest as f64 / smallest as f64,
        );
    }
    out
}

/// Replaces the section in the file at `path`.
pub fn write_section(path: &Path, section: &str) -> Result<(), String> {
    crate::sections::write_section(path, section).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sections::replace_section;

    #[test]
    fn quantiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), 50.0);
        assert_eq!(quantile(&v, 0.99), 99.0);
        assert_eq!(quantile(&v, 1.0), 100.0);
        assert!(quantile(&[], 0.5).is_nan());
    }

    #[test]
    fn replaces_only_its_section() {
        let doc = "# B\n\n## A\n\na\n\n## Fleet scale\n\nold\n\n## C\n\nc\n";
        let new = replace_section(doc, "## Fleet scale\n\nnew\n");
        assert_eq!(
            new,
            "# B\n\n## A\n\na\n\n## Fleet scale\n\nnew\n\n## C\n\nc\n"
        );
        assert_eq!(replace_section(&new, "## Fleet scale\n\nnew\n"), new);
        let appended = replace_section("# B\n", "## Fleet scale\n\nx\n");
        assert_eq!(appended, "# B\n\n## Fleet scale\n\nx\n");
    }
}
