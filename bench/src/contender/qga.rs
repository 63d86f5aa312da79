//! qemu-guest-agent from Debian, listening on a unix socket and driven with its JSON
//! protocol: `guest-sync`, `guest-fsfreeze-freeze-list` with our mountpoints,
//! `guest-fsfreeze-thaw`, `guest-ping`.
//!
//! Two fences, because qemu-ga's thaw issues FITHAW on every mount it can see and its plain
//! `guest-fsfreeze-freeze` freezes every mount: it runs in a private mount namespace that
//! shows only our scratch mounts besides `/`, `/proc`, `/sys`, `/dev` (see [`crate::child`]),
//! and `guest-fsfreeze-freeze` is disabled with `-b`; only the explicit list is ever sent.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{scratch_path, Contender, ContenderKind};
use crate::child::ChildSpec;
use crate::error::BenchError;
use crate::process::{log_tail, ChildGuard, Memory};
use crate::scratch::Scratch;

/// Deadline for one answer.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for a freshly started qemu-ga to answer `guest-sync`.
const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// A client of qemu-ga's JSON protocol on its unix socket: one command per line, one answer
/// per line.
pub struct QgaClient {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl QgaClient {
    /// Connects to `socket`; every read and write is bounded by `timeout`.
    pub fn connect(socket: &Path, timeout: Duration) -> std::io::Result<Self> {
        let stream = UnixStream::connect(socket)?;
        Self::over(stream, timeout)
    }

    fn over(stream: UnixStream, timeout: Duration) -> std::io::Result<Self> {
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        Ok(Self {
            writer: stream.try_clone()?,
            reader: BufReader::new(stream),
        })
    }

    /// Sends one command and returns its `return` value; an `error` answer, a closed
    /// connection or an I/O error is the `Err` text.
    pub fn call(&mut self, cmd: &Value) -> Result<Value, String> {
        let mut line = cmd.to_string();
        line.push('\n');
        self.writer
            .write_all(line.as_bytes())
            .map_err(|e| e.to_string())?;
        loop {
            let mut answer = String::new();
            match self.reader.read_line(&mut answer) {
                Ok(0) => return Err("connection closed".into()),
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
            let Ok(v) = serde_json::from_str::<Value>(answer.trim()) else {
                continue; // e.g. a stray delimiter byte
            };
            if let Some(r) = v.get("return") {
                return Ok(r.clone());
            }
            if let Some(err) = v.get("error") {
                return Err(err.to_string());
            }
        }
    }

    /// `guest-ping`, whose only correct answer is an empty object.
    pub fn ping(&mut self) -> Result<(), String> {
        match self.call(&json!({"execute": "guest-ping"}))? {
            r if r == json!({}) => Ok(()),
            r => Err(format!("guest-ping answered {r}")),
        }
    }
}

/// A running qemu-ga and a connected JSON client.
pub struct QgaContender {
    proc: ChildGuard,
    client: QgaClient,
    next_id: u64,
    log: PathBuf,
    mount_root: PathBuf,
}

/// qemu-ga's command line: unix socket, state and pid file in the scratch dir, and the
/// freeze-everything command blocked.
pub fn qga_args(bin: &Path, socket: &Path, state_dir: &Path, pidfile: &Path) -> Vec<String> {
    vec![
        bin.display().to_string(),
        "-m".into(),
        "unix-listen".into(),
        "-p".into(),
        socket.display().to_string(),
        "-t".into(),
        state_dir.display().to_string(),
        "-f".into(),
        pidfile.display().to_string(),
        "-b".into(),
        "guest-fsfreeze-freeze".into(),
    ]
}

impl QgaContender {
    /// Starts qemu-ga and waits for `guest-sync`. With `isolate` it runs through the
    /// `__child` wrapper in a mount namespace showing only `mounts`; without, it is started
    /// directly and must never be asked to freeze or thaw (start-up timing only).
    pub fn start(
        bin: &Path,
        scratch: &Scratch,
        mounts: &[PathBuf],
        isolate: bool,
    ) -> Result<(Self, Duration), BenchError> {
        let socket = scratch_path(scratch, "qemu-ga", ".sock");
        let log = socket.with_extension("log");
        let state = socket.with_extension("state");
        let pidfile = socket.with_extension("pid");
        std::fs::create_dir_all(&state).map_err(BenchError::io("creating qemu-ga's statedir"))?;
        let argv = qga_args(bin, &socket, &state, &pidfile);
        let started = Instant::now();
        let mut proc = if isolate {
            let spec = ChildSpec {
                parent: std::process::id(),
                isolate,
                keep: mounts.to_vec(),
                argv: argv.into_iter().map(Into::into).collect(),
            };
            ChildGuard::spawn_wrapped("qemu-ga", &spec, &log, &[])?
        } else {
            let mut cmd = std::process::Command::new(&argv[0]);
            cmd.args(&argv[1..]);
            ChildGuard::spawn("qemu-ga", cmd, &log)?
        };
        let deadline = started + READY_TIMEOUT;
        let stream = loop {
            if let Some(status) = proc.exited() {
                return Err(BenchError::contender(
                    "qemu-ga",
                    format!("exited at start ({status}); {}", log_tail(&log, 5)),
                ));
            }
            if let Ok(s) = UnixStream::connect(&socket) {
                break s;
            }
            if Instant::now() > deadline {
                return Err(BenchError::contender("qemu-ga", "socket never appeared"));
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        let client =
            QgaClient::over(stream, IO_TIMEOUT).map_err(BenchError::io("qemu-ga socket"))?;
        let mut this = Self {
            proc,
            client,
            next_id: 1,
            log,
            mount_root: scratch.mount_root(),
        };
        this.sync()?;
        Ok((this, started.elapsed()))
    }

    /// qemu-ga's process id.
    pub fn pid(&self) -> Option<u32> {
        self.proc.pid()
    }

    /// `guest-sync`: discards anything stale and checks the echoed id.
    pub fn sync(&mut self) -> Result<(), BenchError> {
        let id = self.next_id;
        self.next_id += 1;
        let r = self.call(&json!({"execute": "guest-sync", "arguments": {"id": id}}))?;
        if r.as_u64() == Some(id) {
            Ok(())
        } else {
            Err(self.fail("guest-sync", format!("answered {r}, expected {id}")))
        }
    }

    fn fail(&mut self, what: &str, e: impl std::fmt::Display) -> BenchError {
        let exited = self
            .proc
            .exited()
            .map(|s| format!(" (qemu-ga exited: {s})"))
            .unwrap_or_default();
        BenchError::contender(
            "qemu-ga",
            format!("{what}: {e}{exited}; {}", log_tail(&self.log, 5)),
        )
    }

    /// Sends one command and returns its `return` value.
    fn call(&mut self, cmd: &Value) -> Result<Value, BenchError> {
        let answer = self.client.call(cmd);
        answer.map_err(|e| self.fail(cmd["execute"].as_str().unwrap_or("?"), e))
    }
}

impl Contender for QgaContender {
    fn kind(&self) -> ContenderKind {
        ContenderKind::QemuGa
    }

    fn quiesce(&mut self, mounts: &[PathBuf]) -> Result<(), BenchError> {
        if mounts.is_empty() {
            return Err(BenchError::Config(
                "an empty freeze list would freeze everything".into(),
            ));
        }
        for m in mounts {
            if !m.starts_with(&self.mount_root) || *m == self.mount_root {
                return Err(BenchError::OutsideScratch(m.clone()));
            }
        }
        let list: Vec<String> = mounts.iter().map(|m| m.display().to_string()).collect();
        let r = self.call(&json!({
            "execute": "guest-fsfreeze-freeze-list",
            "arguments": {"mountpoints": list},
        }))?;
        match r.as_u64() {
            Some(n) if n as usize == mounts.len() => Ok(()),
            _ => Err(self.fail(
                "guest-fsfreeze-freeze-list",
                format!("froze {r} of {} filesystems", mounts.len()),
            )),
        }
    }

    fn thaw(&mut self) -> Result<(), BenchError> {
        self.call(&json!({"execute": "guest-fsfreeze-thaw"}))
            .map(drop)
    }

    fn ping(&mut self) -> Option<Result<(), BenchError>> {
        let answer = self.client.ping();
        Some(answer.map_err(|e| self.fail("guest-ping", e)))
    }

    fn memory(&self) -> Option<Memory> {
        self.proc.memory()
    }

    fn cpu_time(&self) -> Option<Duration> {
        self.proc.cpu_time()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client over one end of a socket pair whose other end answers each line it reads
    /// with the next of `answers`, then reads one more line and hangs up without answering.
    fn scripted(answers: &'static [&'static str]) -> QgaClient {
        let (ours, theirs) = UnixStream::pair().unwrap();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(theirs.try_clone().unwrap());
            let mut writer = theirs;
            for a in answers {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
                assert!(line.ends_with('\n'), "one command per line: {line:?}");
                writer.write_all(a.as_bytes()).unwrap();
            }
            let _ = reader.read_line(&mut String::new());
        });
        QgaClient::over(ours, Duration::from_secs(5)).unwrap()
    }

    #[test]
    fn only_an_empty_return_answers_guest_ping() {
        let mut c = scripted(&[
            "{\"return\": {}}\n",
            "not json\n{\"return\": {}}\n",
            "{\"return\": {\"x\": 1}}\n",
            "{\"error\": {\"class\": \"GenericError\"}}\n",
        ]);
        assert_eq!(c.ping(), Ok(()));
        // A line that is not JSON before the answer is skipped.
        assert_eq!(c.ping(), Ok(()));
        assert!(c.ping().unwrap_err().contains("\"x\""));
        assert!(c.ping().unwrap_err().contains("GenericError"));
        assert_eq!(c.ping(), Err("connection closed".into()));
    }

    #[test]
    fn freeze_everything_is_blocked_and_state_stays_in_the_scratch_dir() {
        let a = qga_args(
            Path::new("/usr/sbin/qemu-ga"),
            Path::new("/s/q.sock"),
            Path::new("/s/q.state"),
            Path::new("/s/q.pid"),
        );
        let pos = |s: &str| a.iter().position(|x| x == s).unwrap();
        assert_eq!(a[pos("-b") + 1], "guest-fsfreeze-freeze");
        assert_eq!(a[pos("-m") + 1], "unix-listen");
        assert_eq!(a[pos("-t") + 1], "/s/q.state");
        assert_eq!(a[pos("-f") + 1], "/s/q.pid");
    }
}
