//! Stress: sixteen clients issue Quiesce (with varying selections), Thaw, FreezeStatus and
//! Ping concurrently and at random for `STRESS_SECONDS` (default 20) against two loop
//! filesystems the agent may freeze, with a checksummed-record writer on each, and a third one
//! that the test itself froze with `fsfreeze -f` (someone else's freeze, inside
//! `--freeze-only`).
//!
//! Checked from the answers alone, then against the kernel:
//! * never a double freeze: no filesystem of ours is ever reported ALREADY_FROZEN (that
//!   would be the agent's FIFREEZE hitting its own freeze); every successful Quiesce of one
//!   freeze (same watchdog deadline) reports the same set;
//! * freezes and thaws alternate: each freeze is ended by exactly one Thaw that thaws exactly
//!   its set, between it and the next freeze; no Thaw ever reports NOT_FROZEN;
//! * never a thaw of what the agent did not freeze: the test's filesystem is reported
//!   ALREADY_FROZEN, never FROZEN or thawed, and stays frozen in the kernel throughout;
//! * FreezeStatus is consistent with the freezes; refusals are FAILED_PRECONDITION only;
//! * the kernel agrees, freeze by freeze (the writers log every write's start and end): a
//!   writer is inside a blocked write(2) when the agent arms a freeze of its filesystem, and
//!   no write that started while a freeze was certainly in force (after its answer or arming,
//!   before the Thaw call that ended it or a FreezeStatus call that still saw it) returned
//!   inside that window;
//! * at the end (a last Thaw) nothing is frozen and every acknowledged record is intact.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use guest_proto::v1::{FreezeStatusResponse, FsOutcome, QuiesceResponse, ThawResponse};
use system_tests::reliability::history::{
    in_write_at, match_thaws, window_seen, Generation, WindowSeen,
};
use system_tests::reliability::records;
use system_tests::reliability::{Latencies, Prng, RecordWriter, ThawGuard, WriterOptions};
use system_tests::results::{summary, with_outcome};
use system_tests::{fsfreeze, Agent, ExternalFreeze, FsType, LoopFs, Scratch};
use tonic::{Code, Status};

const CLIENTS: u64 = 16;
const DEFAULT_SECONDS: u64 = 20;
/// Watchdog timeout: longer than the run, so only clients thaw.
const WATCHDOG_MS: u64 = 300_000;

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// One call and what it returned, with client-side start and end times (µs).
#[derive(Debug)]
enum Call {
    Quiesce(Vec<String>, Result<QuiesceResponse, Status>),
    Thaw(Result<ThawResponse, Status>),
    Status(Result<FreezeStatusResponse, Status>),
    Ping(Result<Duration, Status>),
}

#[derive(Debug)]
struct Event {
    start_us: u64,
    end_us: u64,
    call: Call,
}

fn set(v: Vec<String>) -> BTreeSet<String> {
    v.into_iter().collect()
}

async fn client(
    agent_rpc: system_tests::rpc::Rpc,
    mut prng: Prng,
    selections: Vec<Vec<String>>,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<Vec<Event>> {
    let mut rpc = agent_rpc.with_timeout(Duration::from_secs(60));
    let mut events = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let start_us = now_us();
        let call = match prng.below(100) {
            0..=29 => {
                let sel = selections[prng.below(selections.len() as u64) as usize].clone();
                let r = rpc.quiesce(&sel).await?;
                Call::Quiesce(sel, r)
            }
            30..=54 => Call::Thaw(rpc.thaw().await?),
            55..=79 => Call::Status(rpc.status().await?),
            _ => {
                let t = Instant::now();
                Call::Ping(rpc.ping().await?.map(|_| t.elapsed()))
            }
        };
        events.push(Event {
            start_us,
            end_us: now_us(),
            call,
        });
        tokio::time::sleep(Duration::from_millis(prng.below(6))).await;
    }
    Ok(events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_clients_at_random_never_double_freeze_or_thaw_foreign() -> anyhow::Result<()> {
    let secs: u64 = std::env::var("STRESS_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_SECONDS);
    let seed = Prng::seed_from_env();
    println!("stress: {CLIENTS} clients for {secs} s, seed {seed} (TEST_SEED={seed} replays the choices)");
    let s = Scratch::new()?;
    let a = LoopFs::new(&s, "a", FsType::Ext4, 256)?;
    let b = LoopFs::new(&s, "b", FsType::Ext4, 256)?;
    let foreign = LoopFs::new(&s, "foreign", FsType::Ext4, 32)?;
    let _guard = ThawGuard::new(&[a.mountpoint(), b.mountpoint(), foreign.mountpoint()]);
    let someone_else = ExternalFreeze::freeze(foreign.mountpoint())?;
    let secs_arg = (WATCHDOG_MS / 1000).to_string();
    let agent = Agent::start(&s, &["--freeze-timeout", &secs_arg]).await?;
    let ours: BTreeSet<String> = [a.mp(), b.mp()].into();

    let writers = [&a, &b]
        .iter()
        .enumerate()
        .map(|(id, fs)| {
            let opts = WriterOptions {
                log_writes: true,
                ..WriterOptions::default()
            };
            RecordWriter::start(&fs.join("records"), id as u32, opts)
        })
        .collect::<Result<Vec<_>, _>>()?;

    // Selections: everything eligible, both explicitly, one of them, or including the
    // foreign filesystem explicitly.
    let selections = vec![
        vec![],
        vec![a.mp(), b.mp()],
        vec![a.mp()],
        vec![b.mp()],
        vec![a.mp(), b.mp(), foreign.mp()],
    ];
    let expected = |sel: &[String]| -> BTreeSet<String> {
        if sel.is_empty() {
            ours.clone()
        } else {
            sel.iter().filter(|m| ours.contains(*m)).cloned().collect()
        }
    };

    let stop = Arc::new(AtomicBool::new(false));
    let root = Prng::new(seed);
    let mut tasks = Vec::new();
    for i in 0..CLIENTS {
        let rpc = agent.rpc().await?;
        tasks.push(tokio::spawn(client(
            rpc,
            root.fork(i),
            selections.clone(),
            stop.clone(),
        )));
    }
    // Someone else's freeze holds throughout (checked in the kernel every second).
    let started = Instant::now();
    let mut foreign_checks = 0;
    while started.elapsed() < Duration::from_secs(secs) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(
            fsfreeze::is_frozen(foreign.mountpoint())?,
            "the foreign freeze was thawed after {:?}",
            started.elapsed()
        );
        foreign_checks += 1;
    }
    stop.store(true, Ordering::Relaxed);
    let mut events = Vec::new();
    for t in tasks {
        events.extend(t.await??);
    }
    // The last word: a Thaw after every client stopped.
    let mut rpc = agent.rpc().await?;
    let start_us = now_us();
    let last = rpc.thaw().await?;
    events.push(Event {
        start_us,
        end_us: now_us(),
        call: Call::Thaw(last),
    });

    // --- Check every answer ------------------------------------------------------------
    // Violations are collected (not asserted one by one) so a failure shows all of them.
    let mut bad: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    macro_rules! check {
        ($kind:literal, $cond:expr, $($fmt:tt)+) => {
            if !$cond {
                bad.entry($kind).or_default().push(format!($($fmt)+));
            }
        };
    }
    let mut generations: BTreeMap<u64, Generation> = BTreeMap::new();
    let mut thaws: Vec<(u64, u64, BTreeSet<String>)> = Vec::new();
    let mut statuses = Vec::new();
    let mut pings = Latencies::default();
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for ev in &events {
        let at = ev.end_us;
        let key = match &ev.call {
            Call::Quiesce(sel, Ok(q)) => {
                let frozen = set(with_outcome(&q.filesystems, FsOutcome::Frozen));
                let already = set(with_outcome(&q.filesystems, FsOutcome::AlreadyFrozen));
                let d = q.watchdog_deadline_unix_ms;
                let report = format!(
                    "Quiesce {sel:?} answered at {at} us: frozen_count {}, deadline {d}, {}",
                    q.frozen_count,
                    summary(&q.filesystems)
                );
                check!(
                    "Quiesce: wrong FROZEN set",
                    frozen == expected(sel),
                    "{report}"
                );
                check!(
                    "Quiesce: frozen_count differs from the FROZEN entries",
                    q.frozen_count as usize == frozen.len(),
                    "{report}"
                );
                check!(
                    "Quiesce: double freeze (own filesystem ALREADY_FROZEN)",
                    already.iter().all(|m| *m == foreign.mp()),
                    "{report}"
                );
                if sel.is_empty() || sel.contains(&foreign.mp()) {
                    check!(
                        "Quiesce: the foreign freeze is not reported ALREADY_FROZEN",
                        already.contains(&foreign.mp()),
                        "{report}"
                    );
                }
                check!(
                    "Quiesce: success without a watchdog deadline",
                    d > 0,
                    "{report}"
                );
                if d > 0 {
                    let g = generations.entry(d).or_insert_with(|| Generation {
                        armed_us: (d - WATCHDOG_MS) * 1000,
                        answered_us: at,
                        frozen: frozen.clone(),
                    });
                    g.answered_us = g.answered_us.min(at);
                    check!(
                        "Quiesce: two answers for one freeze differ",
                        g.frozen == frozen,
                        "{report}"
                    );
                }
                "quiesce ok"
            }
            Call::Quiesce(sel, Err(e)) => {
                check!(
                    "Quiesce: unexpected error",
                    e.code() == Code::FailedPrecondition
                        && e.message().contains("already frozen by the agent"),
                    "Quiesce {sel:?}: {e:?}"
                );
                "quiesce refused (other set frozen)"
            }
            Call::Thaw(Ok(t)) => {
                let thawed = set(with_outcome(&t.filesystems, FsOutcome::Thawed));
                let report = summary(&t.filesystems);
                check!(
                    "Thaw: an outcome other than THAWED",
                    t.filesystems.len() == thawed.len(),
                    "{report}"
                );
                check!(
                    "Thaw: thawed the foreign freeze",
                    !thawed.contains(&foreign.mp()),
                    "{report}"
                );
                check!(
                    "Thaw: thawed_count differs from the THAWED entries",
                    t.thawed_count as usize == thawed.len(),
                    "{report}"
                );
                if thawed.is_empty() {
                    "thaw (nothing frozen)"
                } else {
                    thaws.push((ev.start_us, ev.end_us, thawed));
                    "thaw ok"
                }
            }
            Call::Thaw(Err(e)) => {
                bad.entry("Thaw: failed")
                    .or_default()
                    .push(format!("{e:?}"));
                "thaw failed"
            }
            Call::Status(Ok(st)) => {
                statuses.push((ev.start_us, st.clone()));
                "status"
            }
            Call::Status(Err(e)) => {
                bad.entry("FreezeStatus: failed")
                    .or_default()
                    .push(format!("{e:?}"));
                "status failed"
            }
            Call::Ping(Ok(d)) => {
                pings.push(*d);
                "ping"
            }
            Call::Ping(Err(e)) => {
                bad.entry("Ping: failed")
                    .or_default()
                    .push(format!("{e:?}"));
                "ping failed"
            }
        };
        *counts.entry(key.to_string()).or_default() += 1;
    }

    // Freezes and thaws alternate: every freeze is ended by its own Thaw, which thawed
    // exactly its set, and every Thaw that thawed something ended a freeze a Quiesce reported.
    // Each pair gives a window, from the freeze's first answer to the start of the Thaw call
    // that ended it, in which its filesystems were certainly frozen.
    let gens: Vec<&Generation> = generations.values().collect();
    let deadlines: Vec<u64> = generations.keys().copied().collect();
    let matching = match_thaws(&gens, &thaws);
    for &g in &matching.unended {
        bad.entry("timeline: a freeze no Thaw of its set could have ended (double freeze?)")
            .or_default()
            .push(format!(
                "armed at {} us: {:?}",
                gens[g].armed_us, gens[g].frozen
            ));
    }
    for &t in &matching.unmatched {
        let (start, end, set) = &thaws[t];
        bad.entry("timeline: a thaw of a freeze no Quiesce reported")
            .or_default()
            .push(format!("{start}..{end} us: thawed {set:?}"));
    }
    let freezes = generations.len();
    // FreezeStatus agrees with the freezes.
    let mut in_progress_views = 0;
    // Per freeze, the latest start of a FreezeStatus call that saw it held: it was still
    // frozen at some instant of that call, so at least until the call started.
    let mut seen_held_us: BTreeMap<u64, u64> = BTreeMap::new();
    for (start_us, st) in &statuses {
        let held = set(st
            .filesystems
            .iter()
            .map(|f| f.mountpoint.clone())
            .collect());
        check!(
            "FreezeStatus: frozen flag disagrees with the list",
            st.frozen != held.is_empty(),
            "{st:?}"
        );
        check!(
            "FreezeStatus: lists a filesystem not ours",
            held.is_subset(&ours),
            "{st:?}"
        );
        if st.frozen && st.watchdog_deadline_unix_ms != 0 {
            match generations.get(&st.watchdog_deadline_unix_ms) {
                None => bad
                    .entry("FreezeStatus: a freeze no Quiesce reported")
                    .or_default()
                    .push(format!("{st:?}")),
                Some(g) if !st.operation_in_progress => {
                    check!(
                        "FreezeStatus: set differs from its freeze",
                        g.frozen == held,
                        "{st:?}"
                    );
                    let seen = seen_held_us
                        .entry(st.watchdog_deadline_unix_ms)
                        .or_default();
                    *seen = (*seen).max(*start_us);
                }
                Some(_) => {}
            }
        } else if st.frozen {
            check!(
                "FreezeStatus: frozen, no deadline, no operation running",
                st.operation_in_progress,
                "{st:?}"
            );
            in_progress_views += 1;
        }
    }
    // Windows in which a freeze was certainly in force in the kernel: from its first answer
    // or its arming (after its FIFREEZEs; the deadline has millisecond precision, so 1 ms
    // later), whichever is earlier, to the later of the start of the Thaw that ended it and of the last FreezeStatus call
    // that saw it held.
    let windows: Vec<(u64, u64, &BTreeSet<String>)> = matching
        .pairs
        .iter()
        .map(|&(g, _)| {
            let gen = gens[g];
            let seen = seen_held_us.get(&deadlines[g]).copied().unwrap_or(0);
            let frozen_by = gen.answered_us.min(gen.armed_us + 1000);
            // The pairing may be wrong when calls overlap; the Thaw that really ended this
            // freeze is among those of its set answered after it was armed, so the earliest
            // start among them is no later than the real thaw.
            let thawed_after = thaws
                .iter()
                .filter(|(_, end, set)| *end > gen.armed_us && *set == gen.frozen)
                .map(|(start, _, _)| *start)
                .min()
                .unwrap_or(0);
            (frozen_by, thawed_after.max(seen), &gen.frozen)
        })
        .filter(|(from, to, _)| from < to)
        .collect();
    println!("stress: {} calls in {secs} s: {counts:?}", events.len());
    println!("stress: Ping {pings}");
    // --- Final state -------------------------------------------------------------------
    let st = rpc.status().await??;
    assert!(!st.frozen && !st.operation_in_progress, "{st:?}");
    assert!(!fsfreeze::is_frozen(a.mountpoint())?);
    assert!(!fsfreeze::is_frozen(b.mountpoint())?);
    assert!(
        fsfreeze::is_frozen(foreign.mountpoint())?,
        "the foreign freeze did not survive"
    );
    let mut verified = 0;
    let mut held = 0;
    // Per filesystem: (freezes of it, freezes where its writer was inside a write at arming).
    let mut arming: Vec<(String, usize, usize)> = Vec::new();
    for (w, fs) in writers.into_iter().zip([&a, &b]) {
        let (id, path) = (w.id(), w.path().to_path_buf());
        let (stats, log) = w.join_logged(Duration::from_secs(30))?;
        verified += records::verify(&path, id, stats.records)?;
        let armings: Vec<u64> = matching
            .pairs
            .iter()
            .map(|&(g, _)| gens[g])
            .filter(|g| g.frozen.contains(&fs.mp()))
            .map(|g| g.armed_us)
            .collect();
        let caught = armings.iter().filter(|&&at| in_write_at(&log, at)).count();
        arming.push((fs.mp(), armings.len(), caught));
        for (from, to, set) in windows.iter().filter(|(_, _, set)| set.contains(&fs.mp())) {
            match window_seen(&log, *from, *to) {
                WindowSeen::Held => held += 1,
                WindowSeen::Escaped(w) => bad
                    .entry("kernel: a write returned while the agent held its filesystem frozen")
                    .or_default()
                    .push(format!(
                        "{} frozen {from}..{to} us ({set:?}): write {w:?}",
                        fs.mp()
                    )),
                WindowSeen::Quiet => {}
            }
        }
    }
    someone_else.thaw()?;

    println!(
        "stress: {freezes} freezes answered with a deadline, {} thaws that thawed something; {in_progress_views} FreezeStatus views mid-operation; foreign freeze checked frozen {foreign_checks} times; {} violations",
        thaws.len(),
        bad.values().map(Vec::len).sum::<usize>()
    );
    println!("stress: {verified} records verified from disk");
    println!(
        "stress: (filesystem, freezes, writer inside a write(2) at arming): {arming:?}; {} certainly-frozen windows, held through {held}",
        windows.len()
    );
    // A freeze in force blocks the writer from its first write after FIFREEZE until the
    // thaw, so it is almost always caught inside a write at arming (all of them here on a
    // quiet machine); without a real freeze a write takes microseconds and the writer sleeps
    // 500 us between records (1 % with FIFREEZE made a no-op).
    for (mp, pairs, caught) in &arming {
        assert!(
            *pairs > 0 && caught * 2 >= *pairs,
            "{mp}: the writer was inside a write at only {caught} of {pairs} armings: was it really frozen?"
        );
    }
    assert!(
        freezes >= 10,
        "too few freezes to mean anything: {counts:?}"
    );
    assert!(
        counts
            .get("quiesce refused (other set frozen)")
            .copied()
            .unwrap_or(0)
            > 0,
        "{counts:?}"
    );
    if !bad.is_empty() {
        let total: usize = bad.values().map(Vec::len).sum();
        let mut text = String::new();
        for (kind, all) in &bad {
            text.push_str(&format!("\n== {} x {kind}\n", all.len()));
            for b in all.iter().take(3) {
                text.push_str(b);
                text.push('\n');
            }
        }
        panic!(
            "{total} violations of {} kinds (seed {seed}):{text}",
            bad.len()
        );
    }

    Ok(())
}
