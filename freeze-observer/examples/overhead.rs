//! eBPF overhead benchmark (prints figures; not a timed test).
//!
//! Runs five loops with the programs detached and attached, alternating, and prints the
//! throughput of each (operations per CPU-second used by the loop's threads, so other jobs on
//! the machine distort it less) and the median ratio:
//! * 4 KiB `pwrite` to one file (the writer fast path: no freeze, nothing should fire);
//! * `getpid` and 4 KiB `read` of /dev/zero (syscall-heavy: what a per-syscall hook costs);
//! * threads fighting over one userspace mutex (futex wake/wait; contended kernel spinlocks
//!   fire `lock:contention_begin`, which the program must drop at its first comparison);
//! * threads creating and unlinking files in one directory (contended `i_rwsem`: more
//!   `contention_begin`/`contention_end` hits).
//!
//! Usage (root): `cargo run --release -p freeze-observer --example overhead -- [seconds] [dir]`
//! `dir` defaults to a new directory under /var/tmp; nothing is frozen. `ROUNDS=n` sets the
//! number of rounds (default 6), `FREEZE_HOOK=auto|fexit|sync-fs|ioctl|none` the freeze hook (default
//! auto, as the agent's `--ebpf-freeze-hook`).

use std::{
    os::unix::fs::FileExt as _,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use freeze_observer::{EbpfMode, FreezeHook, LoadOptions, ObserverConfig};

const THREADS: usize = 4;

/// A named benchmark loop returning operations per CPU-second.
type Loop<'a> = (&'a str, Box<dyn Fn() -> f64>);

/// CPU time (user + system) the calling thread has used. Dividing work by CPU time rather than
/// wall time keeps the figures meaningful when other jobs share the machine.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn pwrite_loop(dir: &Path, secs: f64) -> f64 {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(dir.join("pwrite.dat"))
        .expect("open");
    let buf = [0xa5u8; 4096];
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let cpu0 = thread_cpu();
    let mut n = 0u64;
    while Instant::now() < deadline {
        for i in 0..256u64 {
            f.write_at(&buf, (i % 256) * 4096).expect("pwrite");
        }
        n += 256;
    }
    n as f64 / (thread_cpu() - cpu0).as_secs_f64()
}

fn getpid_loop(secs: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let cpu0 = thread_cpu();
    let mut n = 0u64;
    while Instant::now() < deadline {
        for _ in 0..1024 {
            // SAFETY: no arguments; a real syscall (glibc and musl do not cache getpid).
            std::hint::black_box(unsafe { libc::syscall(libc::SYS_getpid) });
        }
        n += 1024;
    }
    n as f64 / (thread_cpu() - cpu0).as_secs_f64()
}

fn read_zero_loop(secs: f64) -> f64 {
    use std::io::Read as _;
    let mut f = std::fs::File::open("/dev/zero").expect("open /dev/zero");
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let cpu0 = thread_cpu();
    let mut n = 0u64;
    while Instant::now() < deadline {
        for _ in 0..256 {
            f.read_exact(&mut buf).expect("read /dev/zero");
        }
        n += 256;
    }
    n as f64 / (thread_cpu() - cpu0).as_secs_f64()
}

fn threaded(
    secs: f64,
    work: impl Fn(usize, &AtomicBool, &AtomicU64) + Send + Sync + 'static,
) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let cpu_ns = Arc::new(AtomicU64::new(0));
    let work = Arc::new(work);
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let (stop, count, work, cpu_ns) =
                (stop.clone(), count.clone(), work.clone(), cpu_ns.clone());
            std::thread::spawn(move || {
                let cpu0 = thread_cpu();
                work(t, &stop, &count);
                cpu_ns.fetch_add((thread_cpu() - cpu0).as_nanos() as u64, Ordering::Relaxed);
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().expect("worker");
    }
    count.load(Ordering::Relaxed) as f64 / (cpu_ns.load(Ordering::Relaxed) as f64 / 1e9)
}

fn mutex_loop(secs: f64) -> f64 {
    let m = Arc::new(Mutex::new(0u64));
    threaded(secs, move |_, stop, count| {
        let mut local = 0;
        while !stop.load(Ordering::Relaxed) {
            let mut g = m.lock().expect("lock");
            *g += 1;
            drop(g);
            local += 1;
        }
        count.fetch_add(local, Ordering::Relaxed);
    })
}

fn dir_loop(dir: &Path, secs: f64) -> f64 {
    let dir = dir.to_path_buf();
    threaded(secs, move |t, stop, count| {
        let mut local = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let p = dir.join(format!("d{t}-{}", local % 64));
            std::fs::File::create(&p).expect("create");
            std::fs::remove_file(&p).expect("unlink");
            local += 1;
        }
        count.fetch_add(local, Ordering::Relaxed);
    })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let secs: f64 = args.next().map_or(2.0, |s| s.parse().expect("seconds"));
    let scratch;
    let dir: PathBuf = match args.next() {
        Some(d) => d.into(),
        None => {
            scratch = tempfile::Builder::new()
                .prefix("freeze-observer-bench-")
                .tempdir_in("/var/tmp")
                .expect("scratch");
            scratch.path().to_path_buf()
        }
    };
    let loops: [Loop<'_>; 5] = [
        (
            "pwrite 4KiB (ops per CPU-s)",
            Box::new({
                let d = dir.clone();
                move || pwrite_loop(&d, secs)
            }),
        ),
        (
            "getpid (calls per CPU-s)",
            Box::new(move || getpid_loop(secs)),
        ),
        (
            "read 4KiB /dev/zero (ops per CPU-s)",
            Box::new(move || read_zero_loop(secs)),
        ),
        (
            "mutex contention, 4 thr (locks per CPU-s)",
            Box::new(move || mutex_loop(secs)),
        ),
        (
            "create+unlink 1 dir, 4 thr (ops per CPU-s)",
            Box::new({
                let d = dir.clone();
                move || dir_loop(&d, secs)
            }),
        ),
    ];
    // Alternate detached/attached phases (and their order) so drift from other load on the
    // machine hits both sides; report the median of the per-round ratios.
    let rounds: u32 = std::env::var("ROUNDS")
        .ok()
        .map_or(6, |r| r.parse().expect("ROUNDS"));
    let hook: FreezeHook = std::env::var("FREEZE_HOOK")
        .ok()
        .map_or(FreezeHook::Auto, |h| h.parse().expect("FREEZE_HOOK"));
    let mut off = vec![Vec::new(); loops.len()];
    let mut on = vec![Vec::new(); loops.len()];
    let mut load_ms = 0;
    let mut source = String::new();
    let mut prog_stats: std::collections::BTreeMap<String, (u64, u128)> = Default::default();
    let run_all = |into: &mut Vec<Vec<f64>>| {
        for (i, (_, run)) in loops.iter().enumerate() {
            into[i].push(tokio::task::block_in_place(run));
        }
    };
    for round in 0..rounds {
        let attached_first = round % 2 == 1;
        if !attached_first {
            run_all(&mut off);
        }
        let config = ObserverConfig {
            mode: EbpfMode::Required,
            load: LoadOptions {
                probe_frozen: false,
                freeze_source: hook.forced(),
                ..LoadOptions::default()
            },
            agent_pid: None,
        };
        let started = Instant::now();
        let attached_at = std::time::SystemTime::now() - Duration::from_secs(1);
        let handle = freeze_observer::start(config)
            .await
            .expect("load")
            .expect("running");
        load_ms = started.elapsed().as_millis();
        let snap = handle.snapshot();
        source = format!(
            "{} + {}",
            snap.freeze_source.as_str(),
            snap.contention_hook.as_str()
        );
        // Count runs and in-kernel run time of our programs while attached (BPF_STATS_RUN_TIME).
        let stats_fd = aya::sys::enable_stats(aya::sys::Stats::RunTime).ok();
        run_all(&mut on);
        if stats_fd.is_some() {
            for info in aya::programs::loaded_programs().flatten() {
                let name = info.name_as_str().unwrap_or_default().to_owned();
                let ours = name.starts_with("tp_btf_conten")
                    || name.starts_with("raw_tp_conten")
                    || name.starts_with("sys_e")
                    || name.starts_with("sync_fs")
                    || name.starts_with("fexit_");
                if ours && info.loaded_at().is_some_and(|t| t >= attached_at) {
                    let e = prog_stats.entry(name).or_insert((0u64, 0u128));
                    e.0 += info.run_count();
                    e.1 += info.run_time().as_nanos();
                }
            }
        }
        drop(stats_fd);
        drop(handle);
        tokio::time::sleep(Duration::from_millis(200)).await;
        if attached_first {
            run_all(&mut off);
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let median_ratio = |a: &[f64], b: &[f64]| {
        let mut r: Vec<f64> = a.iter().zip(b).map(|(on, off)| on / off).collect();
        r.sort_by(f64::total_cmp);
        let n = r.len();
        if n % 2 == 1 {
            r[n / 2]
        } else {
            (r[n / 2 - 1] + r[n / 2]) / 2.0
        }
    };
    println!(
        "eBPF overhead ({rounds} alternating rounds of {secs} s per loop and side; hooks: {source}; load+attach {load_ms} ms)"
    );
    println!(
        "{:<44} {:>14} {:>14} {:>16}",
        "loop", "detached", "attached", "median ratio"
    );
    for (i, (name, _)) in loops.iter().enumerate() {
        let ratio = median_ratio(&on[i], &off[i]);
        println!(
            "{:<44} {:>14.0} {:>14.0} {:>7.3}x ({:+.2}%)",
            name,
            mean(&off[i]),
            mean(&on[i]),
            ratio,
            (ratio - 1.0) * 100.0
        );
    }
    println!("in-kernel cost while attached (BPF_STATS_RUN_TIME; names truncated to 15 chars):");
    for (name, (runs, ns)) in &prog_stats {
        let avg = if *runs == 0 {
            0.0
        } else {
            *ns as f64 / *runs as f64
        };
        println!("  {name:<16} {runs:>12} runs {avg:>8.1} ns/run");
    }
}
