//! Soak: `SOAK_CYCLES` Quiesce/Thaw cycles (default 100; `make soak` runs 1000) of two loop
//! filesystems (ext4 and xfs) while four writers append sequence-numbered, checksummed records
//! (fsyncing every 32) and four clients ping the agent continuously.
//!
//! Afterwards every record whose write returned is read back from the device and verified
//! (sequence, checksum, payload, nothing extra), every Ping succeeded, and the agent's RSS and
//! open file descriptors, sampled after a warm-up, in the middle and at the end, stayed flat.
//! The figures are printed (`-- --nocapture`) for RELIABILITY.md.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use system_tests::reliability::records::{self, RECORD_LEN};
use system_tests::reliability::{
    Latencies, Prng, ProcSample, RecordWriter, ThawGuard, WriterOptions,
};
use system_tests::results::summary;
use system_tests::rpc::Rpc;
use system_tests::{fsfreeze, Agent, FsType, LoopFs, Scratch};

/// Cycles when `SOAK_CYCLES` is not set.
const DEFAULT_CYCLES: u64 = 100;
const WRITERS: u32 = 4;
const PINGERS: usize = 4;
/// Largest RSS growth accepted between the post-warm-up sample and the end.
const MAX_RSS_GROWTH_KIB: u64 = 10 * 1024;
/// Largest change in open fds accepted.
const MAX_FD_DRIFT: usize = 2;
/// How long the middle cycle (the one checked against the kernel) holds the freeze.
const MIDDLE_HOLD: Duration = Duration::from_millis(150);

fn cycles() -> u64 {
    std::env::var("SOAK_CYCLES")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(DEFAULT_CYCLES)
}

/// Clients pinging in a loop until told to stop: round trips and failures.
struct PingLoad {
    stop: Arc<AtomicBool>,
    failures: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<Latencies>>,
}

impl PingLoad {
    async fn start(agent: &Agent, clients: usize) -> anyhow::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let failures = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for _ in 0..clients {
            let mut rpc = agent.rpc().await?.with_timeout(Duration::from_secs(5));
            let (stop, failures) = (stop.clone(), failures.clone());
            tasks.push(tokio::spawn(async move {
                let mut lat = Latencies::default();
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    match rpc.ping().await {
                        Ok(Ok(_)) => lat.push(t.elapsed()),
                        other => {
                            eprintln!("ping failed: {other:?}");
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                lat
            }));
        }
        Ok(Self {
            stop,
            failures,
            tasks,
        })
    }

    async fn finish(self) -> anyhow::Result<(Latencies, u64)> {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Latencies::default();
        for t in self.tasks {
            all.merge(&t.await?);
        }
        Ok((all, self.failures.load(Ordering::Relaxed)))
    }
}

async fn cycle(
    rpc: &mut Rpc,
    fss: &[&LoopFs],
    quiesce: &mut Latencies,
    thaw: &mut Latencies,
    hold: Duration,
    kernel_check: bool,
) -> anyhow::Result<()> {
    let t = Instant::now();
    let q = rpc.quiesce(&[]).await??;
    quiesce.push(t.elapsed());
    assert_eq!(
        q.frozen_count as usize,
        fss.len(),
        "{}",
        summary(&q.filesystems)
    );
    if kernel_check {
        for fs in fss {
            assert!(
                fsfreeze::is_frozen(fs.mountpoint())?,
                "{} not frozen",
                fs.mp()
            );
        }
        let st = rpc.status().await??;
        assert_eq!(st.filesystems.len(), fss.len(), "{st:?}");
    }
    tokio::time::sleep(hold).await;
    let t = Instant::now();
    let th = rpc.thaw().await??;
    thaw.push(t.elapsed());
    assert_eq!(
        th.thawed_count as usize,
        fss.len(),
        "{}",
        summary(&th.filesystems)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn soak_quiesce_thaw_cycles_keep_every_record_and_resources_flat() -> anyhow::Result<()> {
    let n = cycles();
    let seed = Prng::seed_from_env();
    let mut prng = Prng::new(seed);
    println!("soak: {n} cycles, seed {seed} (TEST_SEED={seed} replays the schedule)");
    let s = Scratch::new()?;
    let ext4 = LoopFs::new(&s, "ext4", FsType::Ext4, 512)?;
    let xfs = LoopFs::new(&s, "xfs", FsType::Xfs, 512)?;
    let _guard = ThawGuard::new(&[ext4.mountpoint(), xfs.mountpoint()]);
    let fss = [&ext4, &xfs];
    let agent = Agent::start(&s, &[]).await?;
    let mut rpc = agent.rpc().await?;

    let writers = (0..WRITERS)
        .map(|id| {
            let fs = fss[id as usize % fss.len()];
            RecordWriter::start(&fs.join(format!("w{id}.rec")), id, WriterOptions::default())
        })
        .collect::<Result<Vec<_>, _>>()?;
    let pings = PingLoad::start(&agent, PINGERS).await?;

    let warmup = (n / 10).clamp(1, 10);
    let middle = n / 2;
    let mut samples: Vec<(u64, ProcSample)> = Vec::new();
    let (mut quiesce, mut thaw) = (Latencies::default(), Latencies::default());
    let started = Instant::now();
    for c in 0..n {
        if c == warmup || c == middle {
            samples.push((c, ProcSample::of(agent.pid())?));
        }
        // The middle cycle holds long enough that every writer must block for most of it.
        let hold = if c == middle {
            MIDDLE_HOLD
        } else {
            Duration::from_millis(prng.below(21))
        };
        cycle(&mut rpc, &fss, &mut quiesce, &mut thaw, hold, c == middle).await?;
        tokio::time::sleep(Duration::from_millis(prng.below(21))).await;
    }
    let duration = started.elapsed();
    samples.push((n, ProcSample::of(agent.pid())?));
    let (pinged, ping_failures) = pings.finish().await?;

    let mut total = 0u64;
    let mut longest_stall = Duration::ZERO;
    let mut fsyncs = 0;
    for w in writers {
        let (id, path) = (w.id(), w.path().to_path_buf());
        let stats = w.join(Duration::from_secs(30))?;
        assert!(
            stats.records >= n,
            "writer {id} wrote only {} records in {n} cycles",
            stats.records
        );
        total += records::verify(&path, id, stats.records)?;
        longest_stall = longest_stall.max(stats.longest_stall);
        fsyncs += stats.fsyncs;
    }
    assert!(!rpc.status().await??.frozen);

    println!(
        "soak: {n} Quiesce/Thaw cycles of 2 filesystems (ext4+xfs) in {:.1} s",
        duration.as_secs_f64()
    );
    println!("soak: Quiesce {quiesce}");
    println!("soak: Thaw {thaw}");
    println!("soak: Ping from {PINGERS} clients {pinged}, failures {ping_failures}");
    println!(
        "soak: {WRITERS} writers: {total} records ({:.1} MiB) verified from disk, {fsyncs} fdatasyncs, longest blocked write/fsync {:.1} ms",
        (total * RECORD_LEN as u64) as f64 / 1048576.0,
        longest_stall.as_secs_f64() * 1e3
    );
    for (c, smp) in &samples {
        println!("soak: agent after cycle {c}: {smp}");
    }

    assert_eq!(ping_failures, 0, "Pings failed during the soak");
    assert!(pinged.count() as u64 >= n, "too few pings: {pinged}");
    assert!(
        pinged.max() < Duration::from_secs(1),
        "a Ping waited behind a freeze: {pinged}"
    );
    assert!(
        longest_stall >= MIDDLE_HOLD * 2 / 3,
        "no write blocked through the middle cycle's {MIDDLE_HOLD:?} hold (longest {longest_stall:?}): \
         were the filesystems really frozen?"
    );
    let (first, last) = (samples[0].1, samples[samples.len() - 1].1);
    let growth = last.rss_kib.saturating_sub(first.rss_kib);
    assert!(
        growth < MAX_RSS_GROWTH_KIB,
        "agent RSS grew by {growth} KiB: {first} -> {last}"
    );
    assert!(
        last.fds.abs_diff(first.fds) <= MAX_FD_DRIFT,
        "agent open fds changed: {first} -> {last}"
    );
    Ok(())
}
