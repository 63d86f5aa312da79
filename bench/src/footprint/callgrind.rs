//! Instructions per Ping, counted by callgrind: what a Ping costs the server process in its
//! own code, a figure that does not depend on how fast or how loaded the machine is (round
//! trips and CPU time do, several-fold between runs on a shared host).
//!
//! The server runs under `valgrind --tool=callgrind --instr-atstart=no`; after warm-up Pings,
//! `callgrind_control -i on` starts counting, the measured Pings run, `-i off` stops, `-d`
//! dumps, and the dump's `totals:` line is divided by the number of Pings. Every thread of
//! the process is counted (background work in that window too); the kernel's side (syscalls,
//! eBPF programs) is not.

use std::ffi::OsString;
use std::io::{self, BufRead as _, BufReader, Write as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::BenchError;
use crate::process::{log_tail, ChildGuard};

/// Longest wait for a server started under valgrind to answer (it runs ~50x slower).
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// Read timeout of the clients here (a Ping under valgrind takes about a millisecond).
const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// Unmeasured Pings first, on the same connection.
pub const WARMUP: usize = 20;

/// Instructions one server executed over a number of Pings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstrCount {
    /// The server and its configuration.
    pub label: String,
    /// The client that sent the Pings.
    pub client: String,
    /// Measured Pings.
    pub pings: usize,
    /// Instructions executed (all threads) while they ran.
    pub instructions: u64,
}

impl InstrCount {
    /// Instructions per Ping.
    pub fn per_ping(&self) -> f64 {
        self.instructions as f64 / self.pings.max(1) as f64
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

/// The sum of the `totals:` lines of a callgrind dump (one per event type; `Ir` only here).
pub fn parse_totals(dump: &str) -> Option<u64> {
    let totals: Vec<Option<u64>> = dump
        .lines()
        .filter_map(|l| l.strip_prefix("totals:"))
        .map(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
        .collect();
    if totals.is_empty() {
        return None;
    }
    totals.into_iter().sum()
}

/// A process running under callgrind with counting off until [`Callgrind::count`].
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

    /// Instructions the process executes while `work` runs.
    pub fn count(
        &mut self,
        work: impl FnOnce() -> Result<(), BenchError>,
    ) -> Result<u64, BenchError> {
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
        parse_totals(&text).ok_or_else(|| self.fail("no totals in the callgrind dump".into()))
    }
}

/// A line-delimited JSON client of qemu-ga's guest-ping.
pub struct QgaPinger {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl QgaPinger {
    /// Connects to qemu-ga's socket.
    pub fn connect(socket: &Path) -> io::Result<Self> {
        let writer = UnixStream::connect(socket)?;
        writer.set_read_timeout(Some(IO_TIMEOUT))?;
        Ok(Self {
            reader: BufReader::new(writer.try_clone()?),
            writer,
        })
    }

    /// One guest-ping; the answer must be `{"return": {}}`.
    pub fn ping(&mut self) -> io::Result<()> {
        self.writer.write_all(b"{\"execute\":\"guest-ping\"}\n")?;
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        check_qga_ping(&line)
    }
}

/// qemu-ga's answer to guest-ping: an object whose `return` is an empty object.
pub fn check_qga_ping(line: &str) -> io::Result<()> {
    let v: serde_json::Value = serde_json::from_str(line)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{e}: {line:?}")))?;
    match v.get("return") {
        Some(r) if r.as_object().is_some_and(|o| o.is_empty()) => Ok(()),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("not a guest-ping answer: {line:?}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_are_read_from_a_dump() {
        let dump = "version: 1\ncreator: callgrind-3.19.0\npart: 1\nevents: Ir\n\
                    summary: 0\n\nfn=(1) main\n0 5\ntotals: 78197608\n";
        assert_eq!(parse_totals(dump), Some(78_197_608));
        assert_eq!(parse_totals("summary: 5\n"), None);
        assert_eq!(parse_totals("totals: x\n"), None);
    }

    #[test]
    fn per_ping_divides_by_the_pings() {
        let c = InstrCount {
            label: "a".into(),
            client: "b".into(),
            pings: 1000,
            instructions: 79_132_762,
        };
        assert!((c.per_ping() - 79_132.762).abs() < 1e-6);
    }

    #[test]
    fn only_an_empty_return_is_a_guest_ping_answer() {
        assert!(check_qga_ping("{\"return\": {}}\n").is_ok());
        assert!(check_qga_ping("{\"return\": {\"x\": 1}}").is_err());
        assert!(check_qga_ping("{\"error\": {\"class\": \"GenericError\"}}").is_err());
        assert!(check_qga_ping("").is_err());
    }
}
