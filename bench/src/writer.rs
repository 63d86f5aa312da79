//! A writer that keeps dirtying pages: buffered `pwrite`s of a fixed size at a steady rate,
//! the file offset wrapping around a preallocated file (so the steady state is overwrites, no
//! block allocation). After a stall it does not burst to catch up: it resumes its rate.
//!
//! The writer also times its own `write` calls; the durations of slow ones are kept as ground
//! truth to cross-check the observer's stall records.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::BenchError;

/// A `write` that took at least this long is recorded as slow.
const SLOW_WRITE: Duration = Duration::from_millis(2);

/// Rate and shape of the writes.
#[derive(Debug, Clone, Copy)]
pub struct WriterConfig {
    /// Bytes per second.
    pub rate: f64,
    /// Bytes per write.
    pub chunk: usize,
    /// File size in bytes (a multiple of `chunk`); the offset wraps here.
    pub file_size: u64,
}

impl WriterConfig {
    /// Time between two writes.
    pub fn interval(&self) -> Duration {
        Duration::from_secs_f64(self.chunk as f64 / self.rate)
    }
}

/// One writer thread on one filesystem; stopped (and joined) on drop.
#[derive(Debug)]
pub struct Writer {
    /// Kernel thread id (what the observer reports as the stalled task).
    pub tid: u32,
    stop: Arc<AtomicBool>,
    slow: Arc<Mutex<Vec<Duration>>>,
    thread: Option<JoinHandle<Result<u64, std::io::Error>>>,
}

/// The file a writer writes in directory `dir`.
pub fn data_file(dir: &Path) -> PathBuf {
    dir.join("writer.dat")
}

/// Writes the whole file once and syncs it, so later writes are overwrites.
pub fn prefill(dir: &Path, cfg: &WriterConfig) -> Result<(), BenchError> {
    let path = data_file(dir);
    let mut f =
        File::create(&path).map_err(BenchError::io(format!("creating {}", path.display())))?;
    let block = vec![0x5au8; 1 << 20];
    let mut left = cfg.file_size;
    while left > 0 {
        let n = left.min(block.len() as u64) as usize;
        f.write_all(&block[..n])
            .map_err(BenchError::io("prefilling the writer's file"))?;
        left -= n as u64;
    }
    f.sync_all()
        .map_err(BenchError::io("syncing the writer's file"))
}

impl Writer {
    /// Starts writing to the prefilled file in `dir`.
    pub fn start(dir: &Path, cfg: WriterConfig) -> Result<Self, BenchError> {
        let path = data_file(dir);
        let file = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(BenchError::io(format!("opening {}", path.display())))?;
        let stop = Arc::new(AtomicBool::new(false));
        let slow = Arc::new(Mutex::new(Vec::new()));
        let (tid_tx, tid_rx) = mpsc::channel();
        let thread = {
            let stop = stop.clone();
            let slow = slow.clone();
            std::thread::Builder::new()
                .name("bench-writer".into())
                .spawn(move || {
                    let _ = tid_tx.send(nix::unistd::gettid().as_raw() as u32);
                    write_loop(&file, cfg, &stop, &slow)
                })
                .map_err(BenchError::io("starting a writer thread"))?
        };
        let tid = tid_rx
            .recv()
            .map_err(|_| BenchError::Config("writer thread died at start".into()))?;
        Ok(Self {
            tid,
            stop,
            slow,
            thread: Some(thread),
        })
    }

    /// How long each slow write (≥ 2 ms) since the last call took.
    pub fn take_slow(&self) -> Vec<Duration> {
        std::mem::take(&mut *self.slow.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Stops and joins the thread; returns how many writes it made. Blocks while the
    /// filesystem is frozen, so thaw first.
    pub fn stop(mut self) -> Result<u64, BenchError> {
        self.finish()
    }

    fn finish(&mut self) -> Result<u64, BenchError> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take() {
            Some(t) => t
                .join()
                .map_err(|_| BenchError::Config("writer thread panicked".into()))?
                .map_err(BenchError::io("writer")),
            None => Ok(0),
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if let Err(e) = self.finish() {
            eprintln!("{e}");
        }
    }
}

fn write_loop(
    file: &File,
    cfg: WriterConfig,
    stop: &AtomicBool,
    slow: &Mutex<Vec<Duration>>,
) -> Result<u64, std::io::Error> {
    let interval = cfg.interval();
    let mut buf = vec![0u8; cfg.chunk];
    let mut offset = 0u64;
    let mut writes = 0u64;
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        // New content each time, so every write really dirties its pages.
        buf[..8].copy_from_slice(&writes.to_le_bytes());
        let started = Instant::now();
        file.write_all_at(&buf, offset)?;
        let took = started.elapsed();
        if took >= SLOW_WRITE {
            slow.lock().unwrap_or_else(|p| p.into_inner()).push(took);
        }
        writes += 1;
        offset = (offset + cfg.chunk as u64) % cfg.file_size;
        next += interval;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else if now - next > interval {
            next = now; // behind after a stall: resume the rate, no burst
        }
    }
    Ok(writes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_at_the_configured_rate_and_wraps() {
        let dir = std::env::temp_dir().join(format!("freeze-bench-writer-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = WriterConfig {
            rate: 4.0 * 1024.0 * 1024.0,
            chunk: 64 << 10,
            file_size: 256 << 10,
        };
        assert_eq!(cfg.interval(), Duration::from_micros(15_625));
        prefill(&dir, &cfg).unwrap();
        let w = Writer::start(&dir, cfg).unwrap();
        assert!(w.tid > 0);
        std::thread::sleep(Duration::from_millis(500));
        let writes = w.stop().unwrap();
        // 32 writes in 0.5 s at 64 writes/s; generous bounds for a loaded machine.
        assert!((20..=40).contains(&writes), "{writes} writes");
        assert_eq!(std::fs::metadata(data_file(&dir)).unwrap().len(), 256 << 10);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
