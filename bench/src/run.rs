//! The run: build the filesystems, start the observer and every contender, then for each K
//! run the cycles with writers and on clean filesystems, interleaving the contenders
//! round-robin so drift and background load hit them all alike. Everything runs on the
//! calling (main) thread; the multi-thread runtime only serves the observer (each agent
//! client has a current-thread runtime of its own, driven by the main thread).

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use freeze_observer::DevId;
use tokio::runtime::Runtime;

use crate::cli::Plan;
use crate::contender::{self, agent::AgentContender, qga::QgaContender, Contender, ContenderKind};
use crate::error::BenchError;
use crate::observe::Recorder;
use crate::results::{CycleResult, Phase, ProcessFacts, Results};
use crate::scratch::{LoopFs, LoopFsOptions, Scratch};
use crate::writer::{self, Writer};

/// Ping every this often while frozen.
const PING_INTERVAL: Duration = Duration::from_millis(4);
/// No ping starts closer than this to the end of the hold, so the hold stays exact.
const PING_GUARD: Duration = Duration::from_millis(2);
/// Pings of the idle baseline per contender.
const IDLE_PINGS: usize = 500;
/// Longest wait for the observer to report a cycle's thaws and resumed writers.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(3);

/// Everything that must be undone, in the order it must be undone: `Drop` first thaws every
/// scratch filesystem directly (whatever a contender holds), then the fields drop in
/// declaration order: writers (they can finish now), contenders (SIGTERM by PID), the
/// filesystems (umount, losetup -d), and the scratch directories.
struct Rig {
    writers: Vec<Writer>,
    contenders: Vec<Box<dyn Contender>>,
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
    fn mounts(&self, k: usize) -> Vec<PathBuf> {
        self.fss[..k].iter().map(|f| f.mountpoint.clone()).collect()
    }

    fn devs(&self, k: usize) -> HashSet<DevId> {
        self.fss[..k].iter().map(|f| f.dev).collect()
    }

    /// Thaws every scratch filesystem directly; returns how many were still frozen.
    fn force_thaw_all(&self) -> usize {
        self.fss
            .iter()
            .map(|f| usize::from(f.force_thaw() > 0))
            .sum()
    }
}

/// Sleeps `d` in short slices, returning early with [`BenchError::Interrupted`].
fn sleep_checked(d: Duration, stop: &AtomicBool) -> Result<(), BenchError> {
    let end = Instant::now() + d;
    loop {
        if stop.load(Ordering::Relaxed) {
            return Err(BenchError::Interrupted);
        }
        let now = Instant::now();
        if now >= end {
            return Ok(());
        }
        std::thread::sleep((end - now).min(Duration::from_millis(50)));
    }
}

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}

/// Does the whole run and returns the measurements (and notes for the report).
pub fn run(
    plan: &Plan,
    rt: &Runtime,
    stop: &AtomicBool,
) -> Result<(Results, String, Vec<String>), BenchError> {
    let mut notes = Vec::new();
    let kmax = *plan.ks.last().expect("validated non-empty");
    let mut rig = Rig {
        writers: Vec::new(),
        contenders: Vec::new(),
        fss: Vec::new(),
        scratch: Scratch::create()?,
    };
    eprintln!("scratch: {}", rig.scratch.root.display());
    let opts = LoopFsOptions {
        image_mib: plan.image_mib,
        direct_io: plan.direct_io,
    };
    for i in 0..kmax {
        if stop.load(Ordering::Relaxed) {
            return Err(BenchError::Interrupted);
        }
        let fs = LoopFs::create(&rig.scratch, &format!("fs{i}"), opts)?;
        writer::prefill(&fs.mountpoint, &plan.writer)?;
        rig.fss.push(fs);
    }
    let recorder = Recorder::start(rt)?;
    let observer = recorder.describe();
    eprintln!("observer: {observer}");
    let all = rig.mounts(kmax);
    let mut results = Results::default();
    for &kind in &plan.contenders {
        let (mut c, _) = contender::start(kind, &plan.bins, &rig.scratch, &all)?;
        let cpu_before = c.cpu_time();
        let pings = ping_idle(c.as_mut())?;
        let cpu_per_ping = match (cpu_before, c.cpu_time()) {
            (Some(a), Some(b)) if !pings.is_empty() => Some((b - a) / pings.len() as u32),
            _ => None,
        };
        let facts = ProcessFacts {
            ping_idle: pings,
            cpu_per_ping,
            ..ProcessFacts::default()
        };
        rig.contenders.push(c);
        results.facts.insert(kind, facts);
    }

    for &k in &plan.ks {
        let mounts = rig.mounts(k);
        let devs = rig.devs(k);
        // With writers.
        for fs in &rig.fss[..k] {
            rig.writers
                .push(Writer::start(&fs.mountpoint, plan.writer)?);
        }
        let tids: HashSet<u32> = rig.writers.iter().map(|w| w.tid).collect();
        let ctx = Ctx {
            recorder: &recorder,
            mounts: &mounts,
            devs: &devs,
            tids: &tids,
            hold: plan.hold,
            stop,
        };
        eprintln!("K = {k}: {} cycles with writers", plan.cycles);
        phase(
            &mut rig,
            &ctx,
            &mut results,
            Phase::Dirty,
            k,
            plan.cycles,
            plan.warmup,
            plan.gap,
            &mut notes,
        )?;
        for w in std::mem::take(&mut rig.writers) {
            w.stop()?;
        }
        // Clean.
        if plan.clean_cycles > 0 {
            for fs in &rig.fss[..k] {
                fs.sync()?;
            }
            sleep_checked(Duration::from_secs(1), stop)?;
            let no_writers = HashSet::new();
            let ctx = Ctx {
                tids: &no_writers,
                ..ctx
            };
            eprintln!("K = {k}: {} cycles on clean filesystems", plan.clean_cycles);
            phase(
                &mut rig,
                &ctx,
                &mut results,
                Phase::Clean,
                k,
                plan.clean_cycles,
                plan.warmup,
                plan.clean_gap,
                &mut notes,
            )?;
        }
    }

    for c in &rig.contenders {
        if let Some(f) = results.facts.get_mut(&c.kind()) {
            f.memory = c.memory();
        }
    }
    results.lagged_events = recorder.lagged();
    drop(recorder);
    measure_startup(plan, &rig.scratch, &mut results, stop)?;
    if let Some(dir) = &plan.keep_logs {
        keep_logs(&rig.scratch, dir)?;
    }
    if results.facts.contains_key(&ContenderKind::Fsfreeze) {
        results
            .facts
            .get_mut(&ContenderKind::Fsfreeze)
            .expect("present")
            .binary_size = contender::file_size(&plan.bins.fsfreeze);
    }
    Ok((results, observer, notes))
}

/// What every cycle of a phase shares.
#[derive(Clone, Copy)]
struct Ctx<'a> {
    recorder: &'a Recorder,
    mounts: &'a [PathBuf],
    devs: &'a HashSet<DevId>,
    tids: &'a HashSet<u32>,
    hold: Duration,
    stop: &'a AtomicBool,
}

#[allow(clippy::too_many_arguments)]
fn phase(
    rig: &mut Rig,
    ctx: &Ctx<'_>,
    results: &mut Results,
    phase: Phase,
    k: usize,
    cycles: usize,
    warmup: usize,
    gap: Duration,
    notes: &mut Vec<String>,
) -> Result<(), BenchError> {
    let n = rig.contenders.len();
    for round in 0..warmup + cycles {
        for j in 0..n {
            let idx = (round + j) % n;
            sleep_checked(gap, ctx.stop)?;
            let (writers, contenders) = (&rig.writers, &mut rig.contenders);
            let c = &mut contenders[idx];
            let kind = c.kind();
            let result = cycle(ctx, c.as_mut(), writers);
            let leftover = rig.force_thaw_all();
            if leftover > 0 {
                notes.push(format!(
                    "{} left {leftover} filesystem(s) frozen after a {phase:?} cycle at K = {k}; thawed by the benchmark",
                    kind.label()
                ));
            }
            if let Some(f) = &result.failure {
                eprintln!("  {} cycle failed: {f}", kind.label());
            }
            if round >= warmup {
                results.add(phase, k, kind, result);
            }
        }
        if round >= warmup {
            eprint!("\r  cycle {}/{cycles}", round + 1 - warmup);
        }
    }
    eprintln!();
    Ok(())
}

/// One Quiesce, hold (pinging), Thaw; then waits for the observer's account of it.
fn cycle(ctx: &Ctx<'_>, c: &mut dyn Contender, writers: &[Writer]) -> CycleResult {
    for w in writers {
        w.take_slow();
    }
    let mark = ctx.recorder.mark();
    let mut result = CycleResult::default();
    let t0 = Instant::now();
    let frozen = c.quiesce(ctx.mounts);
    result.quiesce = t0.elapsed();
    let hold_start = Instant::now();
    if let Err(e) = frozen {
        let _ = c.thaw();
        result.failure = Some(format!("Quiesce: {e}"));
        return result;
    }
    let hold_end = hold_start + ctx.hold;
    while Instant::now() + PING_GUARD < hold_end {
        let t = Instant::now();
        match c.ping() {
            None => break,
            Some(Ok(())) => result.pings.push(t.elapsed()),
            Some(Err(e)) => {
                result.failure = Some(format!("Ping while frozen: {e}"));
                break;
            }
        }
        sleep_until((t + PING_INTERVAL).min(hold_end));
    }
    sleep_until(hold_end);
    result.held = hold_start.elapsed();
    let t1 = Instant::now();
    let thawed = c.thaw();
    result.thaw = t1.elapsed();
    if let Err(e) = thawed {
        result.failure = Some(format!("Thaw: {e}"));
        return result;
    }
    let (observed, complete) =
        ctx.recorder
            .settle(mark, ctx.mounts.len(), ctx.devs, ctx.tids, SETTLE_TIMEOUT);
    result.observed = observed;
    result.complete = complete;
    result.slowest_write = writers.iter().flat_map(|w| w.take_slow()).max();
    result
}

/// Pings paced like those during a hold, with nothing frozen and no writer running: the
/// baseline that shows what a freeze adds.
fn ping_idle(c: &mut dyn Contender) -> Result<Vec<Duration>, BenchError> {
    let mut out = Vec::with_capacity(IDLE_PINGS);
    for _ in 0..IDLE_PINGS {
        let t = Instant::now();
        match c.ping() {
            None => break,
            Some(r) => r?,
        }
        out.push(t.elapsed());
        sleep_until(t + PING_INTERVAL);
    }
    Ok(out)
}

/// Start-to-ready of fresh processes (never asked to freeze), and binary sizes.
fn measure_startup(
    plan: &Plan,
    scratch: &Scratch,
    results: &mut Results,
    stop: &AtomicBool,
) -> Result<(), BenchError> {
    for (&kind, facts) in results.facts.iter_mut() {
        let bin = match kind {
            ContenderKind::QemuGa => &plan.bins.qemu_ga,
            ContenderKind::Fsfreeze => continue,
            ContenderKind::Agent | ContenderKind::AgentSerial | ContenderKind::AgentNormalRcu => {
                &plan.bins.agent
            }
        };
        facts.binary_size = contender::file_size(bin);
        for _ in 0..plan.ready_runs {
            if stop.load(Ordering::Relaxed) {
                return Err(BenchError::Interrupted);
            }
            let ready = if kind.is_agent() {
                AgentContender::start(kind, bin, scratch, false)?.1
            } else {
                QgaContender::start(bin, scratch, &[], false)?.1
            };
            facts.ready.push(ready);
        }
    }
    Ok(())
}

/// Copies every `*.log` of the scratch directory into `dir`.
fn keep_logs(scratch: &Scratch, dir: &std::path::Path) -> Result<(), BenchError> {
    std::fs::create_dir_all(dir).map_err(BenchError::io(format!("creating {}", dir.display())))?;
    let entries = std::fs::read_dir(&scratch.root).map_err(BenchError::io("listing the logs"))?;
    for e in entries.flatten() {
        let path = e.path();
        if path.extension().is_some_and(|x| x == "log") {
            let to = dir.join(e.file_name());
            std::fs::copy(&path, &to)
                .map_err(BenchError::io(format!("copying {}", path.display())))?;
        }
    }
    eprintln!("logs copied to {}", dir.display());
    Ok(())
}
