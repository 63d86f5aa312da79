//! What a run measured, per phase, K and contender, and the derived comparisons (the
//! target ratios). Pure data: filled by [`crate::run`], rendered by [`crate::report`].

use std::collections::BTreeMap;
use std::time::Duration;

use crate::contender::ContenderKind;
use crate::observe::CycleObservation;
use crate::process::Memory;
use crate::stats::{ratio, Summary};

/// With writers dirtying pages, or on clean (synced, idle) filesystems.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Phase {
    /// Writers running.
    Dirty,
    /// No writers; everything synced before the cycles.
    Clean,
}

/// One freeze cycle as the benchmark saw it.
#[derive(Debug, Clone, Default)]
pub struct CycleResult {
    /// Quiesce call latency.
    pub quiesce: Duration,
    /// Thaw call latency.
    pub thaw: Duration,
    /// How long the host actually held the freeze (Quiesce returned -> Thaw sent).
    pub held: Duration,
    /// Ping round trips while frozen.
    pub pings: Vec<Duration>,
    /// The observer's view.
    pub observed: CycleObservation,
    /// Whether the observer saw every thaw and every resume in time.
    pub complete: bool,
    /// Longest `write` the writers timed themselves in this cycle.
    pub slowest_write: Option<Duration>,
    /// Why the cycle failed, if it did (its timings are then not counted).
    pub failure: Option<String>,
}

/// Everything measured for one (phase, K, contender).
#[derive(Debug, Clone, Default)]
pub struct Cell {
    /// Quiesce latencies.
    pub quiesce: Vec<Duration>,
    /// Thaw latencies.
    pub thaw: Vec<Duration>,
    /// Quiesce + Thaw per cycle.
    pub quiesce_thaw: Vec<Duration>,
    /// Writer stall minus that cycle's hold (zero if shorter).
    pub stall_beyond_hold: Vec<Duration>,
    /// Raw stall durations.
    pub stalls: Vec<Duration>,
    /// Frozen windows.
    pub windows: Vec<Duration>,
    /// Pings while frozen.
    pub pings: Vec<Duration>,
    /// Longest `write` by the writers' own clocks.
    pub slowest_write: Option<Duration>,
    /// Stalls of other tasks on our filesystems.
    pub other_stalls: usize,
    /// Cycles whose observation was incomplete.
    pub incomplete: usize,
    /// Failed cycles, with the reason.
    pub failures: Vec<String>,
}

impl Cell {
    /// Adds one cycle.
    pub fn add(&mut self, c: CycleResult) {
        if let Some(f) = c.failure {
            self.failures.push(f);
            return;
        }
        self.quiesce.push(c.quiesce);
        self.thaw.push(c.thaw);
        self.quiesce_thaw.push(c.quiesce + c.thaw);
        for s in &c.observed.writer_stalls {
            self.stalls.push(*s);
            self.stall_beyond_hold.push(s.saturating_sub(c.held));
        }
        self.windows.extend(c.observed.window);
        self.pings.extend(c.pings);
        self.slowest_write = self.slowest_write.max(c.slowest_write);
        self.other_stalls += c.observed.other_stalls;
        self.incomplete += usize::from(!c.complete);
    }

    /// Cycles that succeeded.
    pub fn cycles(&self) -> usize {
        self.quiesce.len()
    }
}

/// Per-contender facts outside the cycles.
#[derive(Debug, Clone, Default)]
pub struct ProcessFacts {
    /// Resident memory at the end of the run.
    pub memory: Option<Memory>,
    /// Spawn -> first answer, one per start.
    pub ready: Vec<Duration>,
    /// Ping round trips while nothing is frozen and no writer runs (the baseline).
    pub ping_idle: Vec<Duration>,
    /// The contender's own CPU time per idle Ping (user + system, from /proc).
    pub cpu_per_ping: Option<Duration>,
    /// Size of the binary, bytes.
    pub binary_size: Option<u64>,
}

/// All measurements of a run.
#[derive(Debug, Clone, Default)]
pub struct Results {
    /// Cycles by phase, K and contender.
    pub cells: BTreeMap<(Phase, usize, ContenderKind), Cell>,
    /// Per contender.
    pub facts: BTreeMap<ContenderKind, ProcessFacts>,
    /// Observer events lost (should be 0).
    pub lagged_events: u64,
}

/// One target of issue 7 and how the run did against it.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetCheck {
    /// What is compared.
    pub what: String,
    /// The measured value, formatted.
    pub value: String,
    /// The target, formatted.
    pub target: String,
    /// `None` when it could not be measured in this run.
    pub met: Option<bool>,
}

impl Results {
    /// The cell, if measured.
    pub fn cell(&self, phase: Phase, k: usize, kind: ContenderKind) -> Option<&Cell> {
        self.cells.get(&(phase, k, kind))
    }

    /// Adds one cycle to its cell.
    pub fn add(&mut self, phase: Phase, k: usize, kind: ContenderKind, c: CycleResult) {
        self.cells.entry((phase, k, kind)).or_default().add(c);
    }

    /// The K values measured in `phase`, ascending.
    pub fn ks(&self, phase: Phase) -> Vec<usize> {
        let mut ks: Vec<usize> = self
            .cells
            .keys()
            .filter(|(p, _, _)| *p == phase)
            .map(|(_, k, _)| *k)
            .collect();
        ks.dedup();
        ks
    }

    /// p99 of `of`'s stall beyond the hold divided by qemu-ga's, at K = `k`.
    pub fn stall_ratio(&self, k: usize, of: ContenderKind) -> Option<f64> {
        let p99 =
            |kind| Summary::of(&self.cell(Phase::Dirty, k, kind)?.stall_beyond_hold).map(|s| s.p99);
        ratio(p99(of)?, p99(ContenderKind::QemuGa)?)
    }

    /// Median Quiesce+Thaw of `of` divided by the fsfreeze loop's, clean, at K = `k`.
    pub fn clean_ratio(&self, k: usize, of: ContenderKind) -> Option<f64> {
        let p50 =
            |kind| Summary::of(&self.cell(Phase::Clean, k, kind)?.quiesce_thaw).map(|s| s.p50);
        ratio(p50(of)?, p50(ContenderKind::Fsfreeze)?)
    }

    /// The three targets of issue 7 for our agent (defaults).
    pub fn targets(&self) -> Vec<TargetCheck> {
        let agent = ContenderKind::Agent;
        let mut out = Vec::new();
        let dirty_ks = self.ks(Phase::Dirty);
        if let Some(&k) = dirty_ks.iter().max() {
            let r = self.stall_ratio(k, agent);
            out.push(TargetCheck {
                what: format!("writer stall beyond the hold, p99, agent / qemu-ga, K = {k}"),
                value: r.map_or("n/a".into(), |r| format!("{r:.3}x")),
                target: "≤ 0.05x".into(),
                met: r.map(|r| r <= 0.05),
            });
        }
        for k in self.ks(Phase::Clean) {
            let r = self.clean_ratio(k, agent);
            out.push(TargetCheck {
                what: format!(
                    "Quiesce+Thaw on clean filesystems, p50, agent / fsfreeze loop, K = {k}"
                ),
                value: r.map_or("n/a".into(), |r| format!("{r:.2}x")),
                target: "≤ 1.1x".into(),
                met: r.map(|r| r <= 1.1),
            });
        }
        let pings: Vec<Duration> = self
            .cells
            .iter()
            .filter(|((_, _, kind), _)| *kind == agent)
            .flat_map(|(_, c)| c.pings.iter().copied())
            .collect();
        let p99 = Summary::of(&pings).map(|s| s.p99);
        out.push(TargetCheck {
            what: "Ping p99 while frozen, agent".into(),
            value: p99.map_or("n/a".into(), |d| format!("{:.3} ms", d.as_secs_f64() * 1e3)),
            target: "< 1 ms".into(),
            met: p99.map(|d| d < Duration::from_millis(1)),
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    fn cycle(q: u64, t: u64, held: u64, stalls: &[u64]) -> CycleResult {
        CycleResult {
            quiesce: ms(q),
            thaw: ms(t),
            held: ms(held),
            observed: CycleObservation {
                writer_stalls: stalls.iter().map(|&s| ms(s)).collect(),
                window: Some(ms(q + held + t)),
                ..CycleObservation::default()
            },
            complete: true,
            ..CycleResult::default()
        }
    }

    #[test]
    fn stalls_are_counted_beyond_each_cycles_own_hold() {
        let mut c = Cell::default();
        c.add(cycle(10, 2, 100, &[130, 90]));
        c.add(cycle(10, 2, 105, &[110]));
        c.add(CycleResult {
            failure: Some("boom".into()),
            ..cycle(1, 1, 1, &[999])
        });
        assert_eq!(c.cycles(), 2);
        assert_eq!(c.stall_beyond_hold, vec![ms(30), ms(0), ms(5)]);
        assert_eq!(c.quiesce_thaw, vec![ms(12), ms(12)]);
        assert_eq!(c.failures, vec!["boom".to_string()]);
        assert_eq!(c.incomplete, 0);
    }

    #[test]
    fn targets_compare_agent_with_qemu_ga_and_fsfreeze() {
        let mut r = Results::default();
        for _ in 0..10 {
            r.add(
                Phase::Dirty,
                8,
                ContenderKind::Agent,
                cycle(30, 2, 100, &[120]),
            );
            r.add(
                Phase::Dirty,
                8,
                ContenderKind::QemuGa,
                cycle(400, 5, 100, &[600]),
            );
            r.add(Phase::Clean, 8, ContenderKind::Agent, cycle(8, 2, 100, &[]));
            r.add(
                Phase::Clean,
                8,
                ContenderKind::Fsfreeze,
                cycle(9, 2, 100, &[]),
            );
        }
        r.add(
            Phase::Dirty,
            1,
            ContenderKind::Agent,
            cycle(1, 1, 100, &[100]),
        );
        assert_eq!(r.ks(Phase::Dirty), vec![1, 8]);
        assert!((r.stall_ratio(8, ContenderKind::Agent).unwrap() - 0.04).abs() < 1e-9);
        assert!(
            r.stall_ratio(1, ContenderKind::Agent).is_none(),
            "no qemu-ga at K=1"
        );
        let t = r.targets();
        assert_eq!(t.len(), 3);
        assert_eq!(t[0].met, Some(true));
        assert!(t[0].what.contains("K = 8"));
        assert_eq!(t[1].met, Some(true), "{:?}", t[1]);
        assert_eq!(t[2].met, None, "no pings recorded");
    }
}
