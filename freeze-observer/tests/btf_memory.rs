//! What parsing the kernel's BTF costs in memory and time: the lean index of
//! `freeze_observer::btf` against aya's `Btf::parse_file`, on `/sys/kernel/btf/vmlinux`, and
//! (as root) the observer's whole `loader::load` with its default choices.
//!
//! Each measurement runs in a fresh process (this test re-executes itself), so none reuses
//! another's freed memory. Reported: the peak live heap above the start (counted by this
//! binary's allocator), the heap still held while the result is alive, the VmHWM growth above
//! the VmRSS at the start, and the wall time. A measurement for issue 13 and for `btf.rs`'s
//! module doc; it checks that each ran, and that the lean index stays below 4 MiB of heap.
//!
//! `cargo test -p freeze-observer --test btf_memory -- --nocapture`

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use freeze_observer::btf::{Btf, VMLINUX_BTF};

/// The system allocator, counting live bytes and their high-water mark.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator; only adds counters.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's layout is passed on unchanged.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract is passed on unchanged.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                let grow = new_size - layout.size();
                let live = LIVE.fetch_add(grow, Ordering::Relaxed) + grow;
                PEAK.fetch_max(live, Ordering::Relaxed);
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Which parser a child process measures.
const CHILD_ENV: &str = "BTF_MEMORY_PARSER";

/// A `/proc/self/status` field in KiB.
fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap()
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// Runs `parse` (which returns what it keeps alive) and prints what it cost on one line.
fn measure<T>(name: &str, parse: impl FnOnce() -> T) {
    let rss_before = status_kib("VmRSS:");
    let live_before = LIVE.load(Ordering::Relaxed);
    PEAK.store(live_before, Ordering::Relaxed);
    let started = Instant::now();
    let kept = parse();
    let elapsed = started.elapsed();
    let heap_peak = PEAK.load(Ordering::Relaxed) - live_before;
    let heap_held = LIVE.load(Ordering::Relaxed) - live_before;
    let hwm_growth = (status_kib("VmHWM:") - rss_before) * 1024;
    drop(kept);
    println!(
        "{name:22} heap peak {:>9}  heap held {:>9}  VmHWM growth {:>9}  {:>4} ms",
        mib(heap_peak as u64),
        mib(heap_held as u64),
        mib(hwm_growth),
        elapsed.as_millis()
    );
}

/// The "heap peak N MiB" figure of a measurement line.
fn heap_peak_mib(line: &str) -> f64 {
    line.split("heap peak")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("heap peak in MiB")
}

#[test]
fn btf_parse_memory() {
    let path = Path::new(VMLINUX_BTF);
    if !path.exists() {
        eprintln!("no {VMLINUX_BTF}: skipped");
        return;
    }
    match std::env::var(CHILD_ENV).as_deref() {
        Ok("hand") => {
            return measure("hand parser (btf.rs)", || {
                let btf = Btf::from_file(path).expect("hand parser");
                let offsets = btf.kernel_offsets().expect("offsets");
                (btf, offsets.valid)
            })
        }
        Ok("aya") => {
            return measure("aya::Btf::parse_file", || {
                aya::Btf::parse_file(path, aya::Endianness::default()).expect("aya parser")
            })
        }
        Ok("load") => {
            return measure("loader::load (default)", || {
                let loaded = freeze_observer::loader::load(&freeze_observer::LoadOptions {
                    probe_frozen: false,
                    ..freeze_observer::LoadOptions::default()
                })
                .expect("load");
                println!(
                    "(freeze source {}, writers via {})",
                    loaded.freeze_source.as_str(),
                    loaded.contention_hook.as_str()
                );
                loaded
            })
        }
        _ => {}
    }
    // Warm the page cache so neither child pays for the first read from disk.
    drop(std::fs::read(path).unwrap());
    println!(
        "{VMLINUX_BTF}: {}",
        mib(std::fs::metadata(path).unwrap().len())
    );
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let parsers: &[&str] = if root {
        &["hand", "aya", "load"]
    } else {
        &["hand", "aya"]
    };
    for &parser in parsers {
        let out = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "btf_parse_memory",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, parser)
            .output()
            .unwrap();
        assert!(out.status.success(), "{parser}: {out:?}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = stdout
            .lines()
            .find(|l| l.contains("heap peak"))
            .unwrap_or_else(|| panic!("{parser} printed no measurement: {stdout}"));
        // The harness prints "test btf_parse_memory ... " before the child's own output.
        println!("{}", line.rsplit("... ").next().unwrap_or(line));
        if let Some(choice) = stdout.lines().find(|l| l.contains("(freeze source")) {
            println!("  {}", choice.rsplit("... ").next().unwrap_or(choice));
            if !choice.contains("freeze source fexit") {
                // Without fexit aya must not parse the kernel's BTF (its parse alone is 18 MiB).
                let peak = heap_peak_mib(line);
                assert!(peak < 8.0, "load without fexit used {peak} MiB of heap");
            }
        }
        if parser == "hand" {
            let peak = heap_peak_mib(line);
            assert!(peak < 4.0, "the lean BTF index used {peak} MiB of heap");
        }
    }
}
