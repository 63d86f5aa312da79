//! `freeze-bench`: the benchmark of issue 7, and with `--footprint` the footprint benchmark of
//! issue 13 ([`footprint`]). See [`cli::Args`] for what it does and BENCHMARKS.md for its
//! results. `make bench` builds guest-agent in release mode and runs both.

mod child;
mod cli;
mod contender;
mod error;
mod footprint;
mod machine;
mod observe;
mod process;
mod report;
mod results;
mod run;
mod scratch;
mod sections;
mod stats;
mod writer;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use clap::Parser;

use crate::contender::ContenderKind;
use crate::error::BenchError;
use crate::report::RunInfo;

/// The workspace root (the parent of this crate), for default paths.
pub fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map_or(manifest.clone(), PathBuf::from)
}

fn main() -> ExitCode {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if argv.get(1).is_some_and(|a| a == child::SUBCOMMAND) {
        child::main(&argv[2..]);
    }
    let args = cli::Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match bench(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("freeze-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn bench(args: &cli::Args) -> Result<(), BenchError> {
    let plan = args.plan()?;
    if !nix::unistd::geteuid().is_root() {
        return Err(BenchError::NotRoot);
    }
    if !plan.bins.agent.exists() {
        return Err(BenchError::Config(format!(
            "{} not found; build it with `cargo build --release -p guest-agent`",
            plan.bins.agent.display()
        )));
    }
    let (rt, stop) = runtime()?;
    if args.footprint {
        return footprint_bench(&args.footprint_plan()?, &rt, &stop);
    }
    let mut machine = machine::Machine::probe();
    let (results, observer, mut notes) = run::run(&plan, &rt, &stop)?;
    machine.finish();
    add_notes(&results, &mut notes);
    let info = RunInfo {
        machine,
        command: command_line(),
        parameters: plan.describe(),
        observer,
        notes,
    };
    let section = report::render(&results, &info);
    println!("{section}");
    if let Some(path) = &plan.output {
        report::write_section(path, &section)?;
        eprintln!(
            "wrote the section \"{}\" of {}",
            &report::SECTION[3..],
            path.display()
        );
    }
    Ok(())
}

/// `--footprint`: runs [`footprint::run`] and writes its section.
fn footprint_bench(
    plan: &footprint::FootprintPlan,
    rt: &tokio::runtime::Runtime,
    stop: &AtomicBool,
) -> Result<(), BenchError> {
    let mut machine = machine::Machine::probe();
    let results = footprint::run(plan, rt, stop)?;
    machine.finish();
    let info = footprint::report::FootprintInfo {
        machine,
        command: command_line(),
        parameters: plan.describe(),
    };
    let section = footprint::report::render(&results, &info);
    println!("{section}");
    if let Some(path) = &plan.output {
        report::write_section(path, &section)?;
        eprintln!(
            "wrote the section \"{}\" of {}",
            &footprint::report::SECTION[3..],
            path.display()
        );
    }
    Ok(())
}

/// The benchmark's runtime, and the flag its signal task sets on SIGINT/SIGTERM/SIGHUP.
fn runtime() -> Result<(tokio::runtime::Runtime, Arc<AtomicBool>), BenchError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(BenchError::io("starting the runtime"))?;
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        rt.spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut int), Ok(mut term), Ok(mut hup)) = (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
                signal(SignalKind::hangup()),
            ) else {
                return;
            };
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
                _ = hup.recv() => {}
            }
            eprintln!("\nfreeze-bench: stopping; thawing and removing the scratch filesystems");
            stop.store(true, Ordering::Relaxed);
        });
    }
    Ok((rt, stop))
}

/// How this run was started, as a reader would retype it.
fn command_line() -> String {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut line = "sudo target/release/freeze-bench".to_owned();
    if !args.is_empty() {
        line.push(' ');
        line.push_str(&args.join(" "));
    }
    match std::env::var("FREEZE_BENCH_VIA") {
        Ok(via) if !via.trim().is_empty() => format!("{} (= {line})", via.trim()),
        _ => line,
    }
}

/// Cross-checks and irregularities worth a line in the report.
fn add_notes(results: &results::Results, notes: &mut Vec<String>) {
    use crate::stats::ms;
    for ((phase, k, kind), c) in &results.cells {
        if !c.failures.is_empty() {
            notes.push(format!(
                "{phase:?} K = {k}, {}: {} of {} cycle(s) failed, first: {}",
                kind.label(),
                c.failures.len(),
                c.failures.len() + c.cycles(),
                c.failures[0]
            ));
        }
        if c.incomplete > 0 {
            notes.push(format!(
                "{phase:?} K = {k}, {}: the observer's account of {} cycle(s) was incomplete after 3 s",
                kind.label(),
                c.incomplete
            ));
        }
    }
    let mut worst: Option<(i128, String)> = None;
    for ((_, k, kind), c) in &results.cells {
        if let (Some(stall), Some(write)) = (c.stalls.iter().max(), c.slowest_write) {
            let diff = stall.as_micros() as i128 - write.as_micros() as i128;
            if worst.as_ref().is_none_or(|(d, _)| diff.abs() > d.abs()) {
                worst = Some((
                    diff,
                    format!(
                        "K = {k}, {}: longest stall {} ms (observer) vs longest write() {} ms (writer's clock)",
                        kind.label(),
                        ms(*stall),
                        ms(write)
                    ),
                ));
            }
        }
    }
    if let Some((_, text)) = worst {
        notes.push(format!(
            "Cross-check of the observer against the writers' own clocks, largest difference: {text}."
        ));
    }
    let single = results.ks(results::Phase::Clean).first().copied();
    if let Some(cell) =
        single.and_then(|k| results.cell(results::Phase::Clean, k, ContenderKind::Fsfreeze))
    {
        if let Some(s) = stats::Summary::of(&cell.quiesce) {
            let agent_clean = results
                .cell(
                    results::Phase::Clean,
                    single.unwrap_or(1),
                    ContenderKind::Agent,
                )
                .and_then(|c| stats::Summary::of(&c.quiesce));
            notes.push(format!(
                "Floor: one `fsfreeze -f` of a clean, idle filesystem takes {} ms (p50, K = {}) \
                 here, and writers wait through most of it (FIFREEZE blocks them once it holds \
                 the first of its three percpu rw-semaphores, then syncs, takes the other two \
                 and writes the journal and superblock). Each semaphore waits for an RCU grace \
                 period; the agent expedites them while it freezes (`--no-expedite-rcu` turns \
                 that off), which is why its clean Quiesce takes {} ms.",
                ms(s.p50),
                single.unwrap_or(1),
                agent_clean.map_or_else(|| "–".to_string(), |a| ms(a.p50)),
            ));
            if let Some(note) = stall_target_note(results, s.p50) {
                notes.push(note);
            }
        }
    }
    let others: usize = results.cells.values().map(|c| c.other_stalls).sum();
    if others > 0 {
        notes.push(format!(
            "{others} stall(s) of other tasks (kernel flushers etc.) on the scratch filesystems were seen and not counted as writer stalls."
        ));
    }
    if results.lagged_events > 0 {
        notes.push(format!(
            "{} observer events were lost (receiver lagged).",
            results.lagged_events
        ));
    }
}

/// What the stall target means in milliseconds on this machine, next to the FIFREEZE floor.
fn stall_target_note(results: &results::Results, floor: std::time::Duration) -> Option<String> {
    use crate::stats::{ms, Summary};
    let k = *results.ks(results::Phase::Dirty).iter().max()?;
    let stall = |kind| {
        Summary::of(
            &results
                .cell(results::Phase::Dirty, k, kind)?
                .stall_beyond_hold,
        )
    };
    let qemu = stall(ContenderKind::QemuGa)?;
    let agent = stall(ContenderKind::Agent)?;
    let allowed = qemu.p99.mul_f64(0.05);
    Some(format!(
        "At K = {k} the stall target allows the agent a p99 of {} ms beyond the hold (0.05 × \
         qemu-ga's {} ms); {} the fsfreeze floor. The agent's stall beyond the hold is {} ms \
         at p50 ({:.2}× that floor) and {} ms at p99.",
        ms(allowed),
        ms(qemu.p99),
        if allowed < floor {
            "that is below"
        } else {
            "that is above"
        },
        ms(agent.p50),
        agent.p50.as_secs_f64() / floor.as_secs_f64().max(1e-9),
        ms(agent.p99),
    ))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::observe::CycleObservation;
    use crate::results::{CycleResult, Phase, Results};

    fn cycle(stall_ms: u64) -> CycleResult {
        CycleResult {
            held: Duration::from_millis(100),
            observed: CycleObservation {
                writer_stalls: vec![Duration::from_millis(100 + stall_ms)],
                ..CycleObservation::default()
            },
            complete: true,
            ..CycleResult::default()
        }
    }

    #[test]
    fn the_stall_target_is_put_in_milliseconds_against_the_floor() {
        let mut r = Results::default();
        r.add(Phase::Dirty, 8, ContenderKind::QemuGa, cycle(400));
        r.add(Phase::Dirty, 8, ContenderKind::Agent, cycle(40));
        let note = stall_target_note(&r, Duration::from_millis(34)).unwrap();
        assert!(note.contains("p99 of 20.0 ms"), "{note}");
        assert!(note.contains("below the fsfreeze floor"), "{note}");
        assert!(note.contains("1.18× that floor"), "{note}");
        let above = stall_target_note(&r, Duration::from_millis(10)).unwrap();
        assert!(above.contains("above the fsfreeze floor"), "{above}");
        assert!(stall_target_note(&Results::default(), Duration::from_millis(34)).is_none());
    }
}
