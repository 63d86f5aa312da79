//! What a Ping costs the server process in its own code, counted by callgrind: instructions,
//! misses of a simulated cache of fixed size and mispredicted branches. These do not depend
//! on how fast or how loaded the machine is (round trips and CPU time do, several-fold between
//! runs on a shared host), and the misses show what instruction counts hide: the same number
//! of instructions costs far more time when its code does not fit the instruction cache.
//!
//! The server runs under `valgrind --tool=callgrind --instr-atstart=no` with cache and branch
//! simulation; after warm-up Pings, `callgrind_control --instr=on` starts counting, the
//! measured Pings run, `--instr=off` stops, `--dump` writes the counts, and the dump's
//! `totals:` line is divided by the number of Pings. Every thread of the process is counted
//! (background work in that window too); the kernel's side (syscalls, eBPF programs) is not.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::BenchError;
use crate::process::{log_tail, ChildGuard};

/// Longest wait for a server started under valgrind to answer (it runs ~50x slower).
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// Unmeasured Pings first, on the same connection.
pub const WARMUP: usize = 20;

/// The simulated caches: 32 KiB 8-way L1 for instructions and for data, a 2 MiB 16-way last
/// level, 64-byte lines (a server core's share; fixed, so runs on different hosts compare).
const CACHES: [&str; 3] = ["--I1=32768,8,64", "--D1=32768,8,64", "--LL=2097152,16,64"];

/// Cycles charged per event by [`Events::estimated_cycles`]: the low end of what the
/// cachegrind manual gives as typical (an L1 miss about 10 cycles, a mispredicted branch 10
/// to 30, a last-level miss up to 200).
const L1_MISS_CYCLES: u64 = 10;
const MISPREDICT_CYCLES: u64 = 10;
const LL_MISS_CYCLES: u64 = 100;

/// Counts of one callgrind dump.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Events {
    /// Instructions executed (`Ir`).
    pub instructions: u64,
    /// Instruction fetches that missed L1 (`I1mr`).
    pub i1_misses: u64,
    /// Data reads and writes that missed L1 (`D1mr + D1mw`).
    pub d1_misses: u64,
    /// Misses of the last level, instructions and data (`ILmr + DLmr + DLmw`).
    pub ll_misses: u64,
    /// Mispredicted conditional and indirect branches (`Bcm + Bim`).
    pub mispredicts: u64,
    /// Calls into the C allocator ([`ALLOCATORS`]; Rust's global allocator is malloc here).
    pub allocations: u64,
}

impl Events {
    /// Instructions plus each miss and misprediction at [`L1_MISS_CYCLES`],
    /// [`LL_MISS_CYCLES`] and [`MISPREDICT_CYCLES`]: a rough cost in cycles.
    pub fn estimated_cycles(&self) -> u64 {
        self.instructions
            + L1_MISS_CYCLES * (self.i1_misses + self.d1_misses)
            + LL_MISS_CYCLES * self.ll_misses
            + MISPREDICT_CYCLES * self.mispredicts
    }
}

/// What one server's Pings cost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PingCost {
    /// The server and its configuration.
    pub label: String,
    /// The client that sent the Pings.
    pub client: String,
    /// Measured Pings.
    pub pings: usize,
    /// Counted (all threads) while they ran.
    pub events: Events,
}

impl PingCost {
    /// `f` of the counts, per Ping.
    pub fn per_ping(&self, f: impl Fn(&Events) -> u64) -> f64 {
        f(&self.events) as f64 / self.pings.max(1) as f64
    }
}

/// Whether `valgrind` and `callgrind_control` can be run.
pub fn available() -> bool {
    ["valgrind", "callgrind_control"].iter().all(|tool| {
        Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// The C allocator's allocating entry points, whose calls [`Events::allocations`] counts.
pub const ALLOCATORS: [&str; 6] = [
    "malloc",
    "calloc",
    "realloc",
    "posix_memalign",
    "aligned_alloc",
    "memalign",
];

/// Calls of [`ALLOCATORS`] in a callgrind dump: the `calls=N` line after each `cfn=` naming
/// one. Function names may be compressed: `(id) name` defines an id, `(id)` refers to it.
pub fn parse_allocations(dump: &str) -> u64 {
    let mut names: HashMap<&str, &str> = HashMap::new();
    let mut callee: Option<&str> = None;
    let mut total = 0;
    for line in dump.lines() {
        if let Some(spec) = line.strip_prefix("fn=") {
            resolve(&mut names, spec);
        } else if let Some(spec) = line.strip_prefix("cfn=") {
            callee = resolve(&mut names, spec);
        } else if let Some(rest) = line.strip_prefix("calls=") {
            if callee.is_some_and(|name| ALLOCATORS.contains(&name)) {
                total += rest
                    .split_whitespace()
                    .next()
                    .and_then(|n| n.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
    }
    total
}

/// The function name of a `fn=`/`cfn=` value, recording a compressed name's id.
fn resolve<'a>(names: &mut HashMap<&'a str, &'a str>, spec: &'a str) -> Option<&'a str> {
    match spec.strip_prefix('(').and_then(|s| s.split_once(')')) {
        Some((id, rest)) => match rest.trim_start() {
            "" => names.get(id).copied(),
            name => {
                names.insert(id, name);
                Some(name)
            }
        },
        None => Some(spec),
    }
}

/// The counts of a callgrind dump: its `events:` line names the columns of its `totals:`
/// line, allocations come from its call records. `None` without both lines or without
/// `Ir`; events not simulated count 0.
pub fn parse_events(dump: &str) -> Option<Events> {
    let line = |key: &str| dump.lines().find_map(|l| l.strip_prefix(key));
    let names: Vec<&str> = line("events:")?.split_whitespace().collect();
    let values: Vec<u64> = line("totals:")?
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    let get = |name: &str| {
        names
            .iter()
            .position(|n| *n == name)
            .and_then(|i| values.get(i).copied())
    };
    let sum = |list: &[&str]| list.iter().filter_map(|n| get(n)).sum();
    Some(Events {
        instructions: get("Ir")?,
        i1_misses: sum(&["I1mr"]),
        d1_misses: sum(&["D1mr", "D1mw"]),
        ll_misses: sum(&["ILmr", "DLmr", "DLmw"]),
        mispredicts: sum(&["Bcm", "Bim"]),
        allocations: parse_allocations(dump),
    })
}

/// A process running under callgrind (cache and branch simulation on) with counting off
/// until [`Callgrind::count`].
pub struct Callgrind {
    proc: ChildGuard,
    out: PathBuf,
    log: PathBuf,
    name: String,
    /// Dumps written so far: the k-th is `out.k`.
    dumps: usize,
}

impl Callgrind {
    /// Starts `argv` under callgrind; its dumps and log go to `dir`.
    pub fn spawn(name: &str, argv: &[OsString], dir: &Path) -> Result<Self, BenchError> {
        let stem: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let out = dir.join(format!("{stem}.callgrind"));
        let log = dir.join(format!("{stem}.callgrind.log"));
        let mut cmd = Command::new("valgrind");
        cmd.arg("--tool=callgrind")
            .arg("--instr-atstart=no")
            .args(["--cache-sim=yes", "--branch-sim=yes"])
            .args(CACHES)
            .arg(format!("--callgrind-out-file={}", out.display()))
            .args(argv);
        let proc = ChildGuard::spawn(name, cmd, &log)?;
        Ok(Self {
            proc,
            out,
            log,
            name: name.to_owned(),
            dumps: 0,
        })
    }

    /// Retries `connect` until it succeeds, the process exits or [`READY_TIMEOUT`] passes.
    pub fn wait_for<T>(
        &mut self,
        mut connect: impl FnMut() -> io::Result<T>,
    ) -> Result<T, BenchError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.proc.exited() {
                return Err(self.fail(format!("exited under valgrind ({status})")));
            }
            match connect() {
                Ok(t) => return Ok(t),
                Err(e) if Instant::now() > deadline => {
                    return Err(self.fail(format!("not answering under valgrind: {e}")))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    fn fail(&self, what: String) -> BenchError {
        BenchError::contender(&self.name, format!("{what}; {}", log_tail(&self.log, 5)))
    }

    fn control(&self, args: &[&str]) -> Result<(), BenchError> {
        let pid = self
            .proc
            .pid()
            .ok_or_else(|| self.fail("no process".into()))?;
        let out = Command::new("callgrind_control")
            .args(args)
            .arg(pid.to_string())
            .stdin(Stdio::null())
            .output()
            .map_err(BenchError::io("running callgrind_control"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(self.fail(format!(
                "callgrind_control {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )))
        }
    }

    /// What the process executes while `work` runs.
    pub fn count(
        &mut self,
        work: impl FnOnce() -> Result<(), BenchError>,
    ) -> Result<Events, BenchError> {
        self.control(&["--instr=on"])?;
        let worked = work();
        self.control(&["--instr=off"])?;
        worked?;
        self.control(&["--dump"])?;
        self.dumps += 1;
        // The k-th dump of `--callgrind-out-file=F` is `F.k` (counters are zeroed after
        // each), written before the command returns; a short wait covers a slow file system.
        let dump = PathBuf::from(format!("{}.{}", self.out.display(), self.dumps));
        let deadline = Instant::now() + Duration::from_secs(10);
        let text = loop {
            match std::fs::read_to_string(&dump) {
                Ok(t) if t.contains("totals:") => break t,
                _ if Instant::now() > deadline => {
                    return Err(self.fail(format!("no callgrind dump at {}", dump.display())))
                }
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        };
        match parse_events(&text) {
            // A window with work in it executed something: zero means counting never
            // started (callgrind_control reached no process).
            Some(e) if e.instructions > 0 => Ok(e),
            Some(_) => Err(self.fail(format!("nothing counted in {}", dump.display()))),
            None => Err(self.fail("no totals in the callgrind dump".into())),
        }
    }

    /// [`WARMUP`] unmeasured calls of `ping`, then what the process executes over `n` more.
    pub fn count_pings(
        &mut self,
        n: usize,
        mut ping: impl FnMut() -> Result<(), BenchError>,
    ) -> Result<Events, BenchError> {
        for _ in 0..WARMUP {
            ping()?;
        }
        self.count(|| (0..n).try_for_each(|_| ping()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_read_by_their_event_names() {
        let dump = "version: 1\ncreator: callgrind-3.19.0\npart: 1\n\
                    events: Ir Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw Bc Bcm Bi Bim\n\
                    summary: 0\n\nfn=(1) main\n0 5\n\
                    totals: 1000 1 2 30 4 5 6 7 8 100 9 50 11\n";
        let e = parse_events(dump).unwrap();
        assert_eq!(
            e,
            Events {
                instructions: 1000,
                i1_misses: 30,
                d1_misses: 9,
                ll_misses: 21,
                mispredicts: 20,
                allocations: 0,
            }
        );
        assert_eq!(e.estimated_cycles(), 1000 + 10 * 39 + 100 * 21 + 10 * 20);
        // Without simulation only Ir is there; the misses count 0.
        let plain = parse_events("events: Ir\ntotals: 78197608\n").unwrap();
        assert_eq!(plain.instructions, 78_197_608);
        assert_eq!(plain.estimated_cycles(), 78_197_608);
        assert_eq!(parse_events("events: Ir\nsummary: 5\n"), None);
        assert_eq!(parse_events("events: Ir\ntotals: x\n"), None);
        assert_eq!(parse_events("events: Dr\ntotals: 5\n"), None);
    }

    #[test]
    fn allocations_are_the_calls_into_the_allocator() {
        let dump = "events: Ir\n\
                    fn=(1) main\n\
                    cfn=(2) malloc\ncalls=3 0\n0 30\n\
                    cfn=(3) free\ncalls=3 0\n0 20\n\
                    cfn=(4) h2::poll\ncalls=1 0\n0 500\n\
                    fn=(4)\n\
                    cfn=(2)\ncalls=4 0\n0 40\n\
                    cfn=realloc\ncalls=1 0\n0 9\n\
                    cfn=(5) posix_memalign\ncalls=2 0\n0 9\n\
                    fn=(2)\n0 70\n\
                    totals: 600\n";
        assert_eq!(parse_allocations(dump), 3 + 4 + 1 + 2);
        assert_eq!(parse_events(dump).unwrap().allocations, 10);
        assert_eq!(parse_allocations("events: Ir\ntotals: 5\n"), 0);
    }

    #[test]
    fn per_ping_divides_by_the_pings() {
        let c = PingCost {
            label: "a".into(),
            client: "b".into(),
            pings: 1000,
            events: Events {
                instructions: 79_132_762,
                ..Events::default()
            },
        };
        assert!((c.per_ping(|e| e.instructions) - 79_132.762).abs() < 1e-6);
    }
}
