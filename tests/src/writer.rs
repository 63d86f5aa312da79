//! A writer process (`dd`) that writes known data to a file on a test filesystem. It is how
//! the tests see a freeze: while a filesystem is frozen the writer cannot finish and sleeps
//! uninterruptibly ('D' in `/proc/<pid>/stat`); after the thaw it finishes and the file holds
//! exactly the data written.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::error::{FixtureError, Result};
use crate::scratch::Scratch;

static SEQ: AtomicU64 = AtomicU64::new(1);

/// How long a freshly started writer may take to get to its first (blocking) write.
pub const REACH_D_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether the writer flushes its data to disk before exiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// `conv=fsync`: the writer finishes only once the data is on the device.
    Fsync,
    /// Page cache only: the writer finishes with the data still dirty in memory.
    Dirty,
}

/// A running (or finished) writer.
#[derive(Debug)]
pub struct Writer {
    child: Option<Child>,
    status: Option<ExitStatus>,
    target: PathBuf,
    data: Vec<u8>,
}

/// `len` bytes of deterministic pseudo-random data (xorshift), different per `seed`.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The scheduler state letter of a process (`R`, `S`, `D`, `Z`, ...), if it exists.
pub fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain spaces: the state follows the last ')'.
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

impl Writer {
    /// Starts writing `len` bytes of fresh data to `target`. The source data is staged in
    /// the scratch directory (on the root filesystem, never frozen).
    pub fn start(
        scratch: &Scratch,
        target: &Path,
        len: usize,
        durability: Durability,
    ) -> Result<Self> {
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let data = pattern(seq ^ (u64::from(std::process::id()) << 32), len);
        let source = scratch.join(format!("writer-{seq}.src"));
        std::fs::write(&source, &data)
            .map_err(|e| FixtureError::io(format!("write {}", source.display()), e))?;
        let mut cmd = Command::new("dd");
        cmd.arg(format!("if={}", source.display()))
            .arg(format!("of={}", target.display()))
            .arg("bs=64K")
            .arg("status=none");
        if durability == Durability::Fsync {
            cmd.arg("conv=fsync");
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| FixtureError::io("spawn dd", e))?;
        Ok(Self {
            child: Some(child),
            status: None,
            target: target.to_path_buf(),
            data,
        })
    }

    /// The file it writes.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn err(&self, reason: impl Into<String>) -> FixtureError {
        FixtureError::Writer {
            target: self.target.clone(),
            reason: reason.into(),
        }
    }

    /// Its exit status if it has finished (reaps it).
    pub fn poll(&mut self) -> Result<Option<ExitStatus>> {
        if self.status.is_none() {
            if let Some(child) = self.child.as_mut() {
                if let Some(st) = child
                    .try_wait()
                    .map_err(|e| FixtureError::io("wait for dd", e))?
                {
                    self.status = Some(st);
                }
            }
        }
        Ok(self.status)
    }

    /// Checks that the writer is held by a frozen filesystem: it reaches uninterruptible
    /// sleep ('D') without finishing (allowing [`REACH_D_TIMEOUT`] for a slow start on a
    /// busy machine), then stays unfinished for `window` and is still in 'D' at its end.
    pub async fn assert_blocked(&mut self, window: Duration) -> Result<()> {
        let pid = self.pid().ok_or_else(|| self.err("not started"))?;
        let start = Instant::now();
        let mut seen = String::new();
        let mut blocked_since: Option<Instant> = None;
        loop {
            if let Some(st) = self.poll()? {
                return Err(self.err(format!(
                    "finished ({st}) after {:?} although its filesystem should be frozen (states seen: {seen})",
                    start.elapsed()
                )));
            }
            let state = proc_state(pid).unwrap_or('?');
            if !seen.ends_with(state) {
                seen.push(state);
            }
            match blocked_since {
                None if state == 'D' => blocked_since = Some(Instant::now()),
                None if start.elapsed() >= REACH_D_TIMEOUT => {
                    return Err(self.err(format!(
                        "never blocked in 'D' within {REACH_D_TIMEOUT:?} (states seen: {seen})"
                    )));
                }
                Some(t) if t.elapsed() >= window => {
                    if state == 'D' {
                        return Ok(());
                    }
                    return Err(self.err(format!(
                        "not finished after {window:?} but in state {state:?}, not 'D' (states seen: {seen})"
                    )));
                }
                _ => {}
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits up to `timeout` for the writer to exit; returns its status.
    pub async fn wait(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let start = Instant::now();
        loop {
            if let Some(st) = self.poll()? {
                return Ok(st);
            }
            if start.elapsed() >= timeout {
                let state = self.pid().and_then(proc_state).unwrap_or('?');
                return Err(FixtureError::Timeout {
                    what: format!(
                        "writer on {} to finish (state {state:?})",
                        self.target.display()
                    ),
                    after: timeout,
                });
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits up to `timeout` for a successful exit, then checks that the file holds
    /// exactly the data written.
    pub async fn finish(&mut self, timeout: Duration) -> Result<()> {
        let st = self.wait(timeout).await?;
        if !st.success() {
            let mut msg = String::new();
            if let Some(mut e) = self.child.as_mut().and_then(|c| c.stderr.take()) {
                let _ = e.read_to_string(&mut msg);
            }
            return Err(self.err(format!("dd failed ({st}): {}", msg.trim())));
        }
        self.verify()
    }

    /// Checks the file's content against the data written.
    pub fn verify(&self) -> Result<()> {
        let got = std::fs::read(&self.target)
            .map_err(|e| FixtureError::io(format!("read {}", self.target.display()), e))?;
        if got.len() != self.data.len() {
            return Err(self.err(format!(
                "file has {} bytes, wrote {}",
                got.len(),
                self.data.len()
            )));
        }
        if let Some(i) = got.iter().zip(&self.data).position(|(a, b)| a != b) {
            return Err(self.err(format!("content differs from the data written at byte {i}")));
        }
        Ok(())
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if self.status.is_some() || matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        // Still running (a failed test): kill it. A writer stuck on a frozen filesystem
        // dies only once the filesystem is thawed (later, by the mount's clean-up), so reap
        // it on a thread instead of waiting here.
        let _ = child.kill();
        std::thread::spawn(move || {
            let _ = child.wait();
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fsfreeze::ExternalFreeze;
    use crate::loopfs::{FsType, LoopFs};

    #[test]
    fn pattern_is_deterministic_and_seeded() {
        assert_eq!(pattern(1, 100), pattern(1, 100));
        assert_ne!(pattern(1, 100), pattern(2, 100));
        assert_eq!(pattern(3, 13).len(), 13);
    }

    #[test]
    fn proc_state_reads_a_sleeping_child() {
        let mut c = Command::new("sleep").arg("30").spawn().unwrap();
        // A child just exec'd may still be runnable for a while on a busy machine.
        let t = std::time::Instant::now();
        while proc_state(c.id()) != Some('S') && t.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(proc_state(c.id()), Some('S'));
        c.kill().unwrap();
        c.wait().unwrap();
        assert_eq!(proc_state(c.id()), None);
    }

    #[tokio::test]
    async fn writer_blocks_on_a_frozen_fs_and_completes_after_thaw() {
        let s = Scratch::new().unwrap();
        let fs = LoopFs::new(&s, "a", FsType::Ext4, 32).unwrap();
        let freeze = ExternalFreeze::freeze(fs.mountpoint()).unwrap();
        let mut w = Writer::start(&s, &fs.join("f"), 1 << 20, Durability::Fsync).unwrap();
        w.assert_blocked(Duration::from_millis(500)).await.unwrap();
        freeze.thaw().unwrap();
        w.finish(Duration::from_secs(10)).await.unwrap();
    }

    #[tokio::test]
    async fn blocked_check_fails_when_nothing_is_frozen() {
        let s = Scratch::new().unwrap();
        let fs = LoopFs::new(&s, "a", FsType::Ext4, 32).unwrap();
        // Small and not synced: nothing on an unfrozen filesystem can keep it in D state.
        let mut w = Writer::start(&s, &fs.join("f"), 4096, Durability::Dirty).unwrap();
        let e = w
            .assert_blocked(Duration::from_millis(500))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("finished"), "{e}");
        w.verify().unwrap();
    }

    #[tokio::test]
    async fn verify_detects_changed_content() {
        let s = Scratch::new().unwrap();
        let fs = LoopFs::new(&s, "a", FsType::Ext4, 32).unwrap();
        let mut w = Writer::start(&s, &fs.join("f"), 4096, Durability::Dirty).unwrap();
        w.finish(Duration::from_secs(10)).await.unwrap();
        std::fs::write(fs.join("f"), vec![0u8; 4096]).unwrap();
        assert!(w.verify().is_err());
    }
}
