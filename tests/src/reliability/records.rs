//! Sequence-numbered, checksummed records: what the soak and stress writers append to the
//! filesystems being frozen and thawed, and the check that afterwards every record whose
//! `write` returned is on disk, intact, in order, with nothing else in the file.
//!
//! A record is [`RECORD_LEN`] bytes: magic, writer id, sequence number (little endian), a
//! payload derived from (writer, sequence), and a CRC-32 of everything before it. The
//! writer is a plain thread doing blocking `write`/`fdatasync`, so it really sleeps in the
//! kernel while its filesystem is frozen, like an application would.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Size of one record in bytes.
pub const RECORD_LEN: usize = 256;
/// First four bytes of every record (`REC1`).
pub const MAGIC: u32 = u32::from_le_bytes(*b"REC1");
const PAYLOAD_AT: usize = 16;
const CRC_AT: usize = RECORD_LEN - 4;

/// Why records could not be written or did not verify.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// A file operation failed.
    #[error("{what} {}: {source}", .path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The record file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The writer thread stopped with an error.
    #[error("writer {id} on {}: {reason}", .path.display())]
    WriterFailed {
        /// Writer id.
        id: u32,
        /// The record file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The writer did not stop within the bound (stuck on a frozen filesystem?).
    #[error("writer {id} on {} did not stop within {after:?} (its filesystem is still frozen?)", .path.display())]
    Stuck {
        /// Writer id.
        id: u32,
        /// The record file.
        path: PathBuf,
        /// How long we waited.
        after: Duration,
    },
    /// The file does not hold exactly the acknowledged records.
    #[error("{}: {len} bytes on disk, but {acknowledged} records ({} bytes) were acknowledged", .path.display(), .acknowledged * RECORD_LEN as u64)]
    Length {
        /// The record file.
        path: PathBuf,
        /// File length.
        len: u64,
        /// Records whose write returned.
        acknowledged: u64,
    },
    /// A record is damaged or out of order.
    #[error("{}: record {index}: {reason}", .path.display())]
    Corrupt {
        /// The record file.
        path: PathBuf,
        /// Index of the record in the file.
        index: u64,
        /// What is wrong with it.
        reason: String,
    },
}

/// CRC-32 (IEEE 802.3, reflected, polynomial 0xEDB88320), bitwise: records are small.
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}

fn fill_payload(writer: u32, seq: u64, out: &mut [u8]) {
    let mut x = (u64::from(writer) << 40) ^ seq ^ 0x9E37_79B9_7F4A_7C15;
    for chunk in out.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
}

/// The record `seq` of writer `writer`.
pub fn encode(writer: u32, seq: u64) -> [u8; RECORD_LEN] {
    let mut r = [0u8; RECORD_LEN];
    r[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    r[4..8].copy_from_slice(&writer.to_le_bytes());
    r[8..16].copy_from_slice(&seq.to_le_bytes());
    fill_payload(writer, seq, &mut r[PAYLOAD_AT..CRC_AT]);
    let crc = crc32(&r[..CRC_AT]);
    r[CRC_AT..].copy_from_slice(&crc.to_le_bytes());
    r
}

/// Checks one record and returns its (writer, sequence number).
pub fn decode(r: &[u8]) -> Result<(u32, u64), String> {
    if r.len() != RECORD_LEN {
        return Err(format!("{} bytes, expected {RECORD_LEN}", r.len()));
    }
    let word = |a: usize| u32::from_le_bytes(r[a..a + 4].try_into().expect("4 bytes"));
    if word(0) != MAGIC {
        return Err(format!("bad magic {:#010x}", word(0)));
    }
    let stored = word(CRC_AT);
    let actual = crc32(&r[..CRC_AT]);
    if stored != actual {
        return Err(format!(
            "checksum {stored:#010x}, content has {actual:#010x}"
        ));
    }
    let writer = word(4);
    let seq = u64::from_le_bytes(r[8..16].try_into().expect("8 bytes"));
    let mut payload = [0u8; CRC_AT - PAYLOAD_AT];
    fill_payload(writer, seq, &mut payload);
    if r[PAYLOAD_AT..CRC_AT] != payload {
        return Err("payload differs from the one written (checksum collision?)".into());
    }
    Ok((writer, seq))
}

/// How a [`RecordWriter`] paces itself.
#[derive(Debug, Clone, Copy)]
pub struct WriterOptions {
    /// `fdatasync` after every this many records (0: only at the end).
    pub fsync_every: u64,
    /// Pause between records (keeps the file size bounded over a long soak).
    pub pause: Duration,
    /// Keep the wall-clock start and end of every record's `write` (see
    /// [`RecordWriter::join_logged`]), so a test can check writes against freeze windows.
    pub log_writes: bool,
}

/// One record's `write(2)`: when it was called and when it returned, in microseconds since
/// the Unix epoch (wall clock, comparable with other threads' and processes' timestamps).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteSpan {
    /// When `write` was called.
    pub start_us: u64,
    /// When it returned.
    pub end_us: u64,
}

fn wall_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

impl Default for WriterOptions {
    fn default() -> Self {
        Self {
            fsync_every: 32,
            pause: Duration::from_micros(500),
            log_writes: false,
        }
    }
}

/// What a writer did.
#[derive(Debug, Clone, Copy, Default)]
pub struct WriterStats {
    /// Records whose write returned.
    pub records: u64,
    /// `fdatasync` calls that returned.
    pub fsyncs: u64,
    /// The longest single write or fdatasync (how long a freeze held the writer).
    pub longest_stall: Duration,
}

/// What a writer thread returns: its counts and write log, or why it failed.
type WriterOutcome = Result<(WriterStats, Vec<WriteSpan>), String>;

/// A thread appending records to one file until told to stop.
#[derive(Debug)]
pub struct RecordWriter {
    id: u32,
    path: PathBuf,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    handle: Option<JoinHandle<WriterOutcome>>,
}

/// Runs `f`, keeping the longest time any call took in `stats`.
fn timed(
    stats: &mut WriterStats,
    f: &mut dyn FnMut() -> std::io::Result<()>,
) -> std::io::Result<()> {
    let t = Instant::now();
    let r = f();
    stats.longest_stall = stats.longest_stall.max(t.elapsed());
    r
}

fn write_loop(
    mut file: File,
    id: u32,
    opts: WriterOptions,
    stop: &AtomicBool,
    acked: &AtomicU64,
) -> WriterOutcome {
    let mut stats = WriterStats::default();
    let mut log = Vec::new();
    while !stop.load(Ordering::Acquire) {
        let rec = encode(id, stats.records);
        let start_us = opts.log_writes.then(wall_us);
        timed(&mut stats, &mut || file.write_all(&rec))
            .map_err(|e| format!("write of record {}: {e}", stats.records))?;
        if let Some(start_us) = start_us {
            log.push(WriteSpan {
                start_us,
                end_us: wall_us(),
            });
        }
        stats.records += 1;
        acked.store(stats.records, Ordering::Release);
        if opts.fsync_every > 0 && stats.records % opts.fsync_every == 0 {
            timed(&mut stats, &mut || file.sync_data()).map_err(|e| format!("fdatasync: {e}"))?;
            stats.fsyncs += 1;
        }
        if !opts.pause.is_zero() {
            std::thread::sleep(opts.pause);
        }
    }
    file.sync_data()
        .map_err(|e| format!("final fdatasync: {e}"))?;
    stats.fsyncs += 1;
    Ok((stats, log))
}

impl RecordWriter {
    /// Creates `path` (it must not exist) and starts appending records as writer `id`.
    pub fn start(path: &Path, id: u32, opts: WriterOptions) -> Result<Self, RecordError> {
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .mode(0o644)
            .open(path)
            .map_err(|source| RecordError::Io {
                what: "create",
                path: path.to_path_buf(),
                source,
            })?;
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicU64::new(0));
        let (s, a) = (stop.clone(), acked.clone());
        let handle = std::thread::Builder::new()
            .name(format!("records-{id}"))
            .spawn(move || write_loop(file, id, opts, &s, &a))
            .map_err(|source| RecordError::Io {
                what: "spawn writer for",
                path: path.to_path_buf(),
                source,
            })?;
        Ok(Self {
            id,
            path: path.to_path_buf(),
            stop,
            acked,
            handle: Some(handle),
        })
    }

    /// Writer id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The record file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records whose write has returned so far.
    pub fn acknowledged(&self) -> u64 {
        self.acked.load(Ordering::Acquire)
    }

    /// Asks the writer to stop after its current record.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
    }

    /// Stops the writer and waits up to `timeout` for it; returns what it did.
    pub fn join(self, timeout: Duration) -> Result<WriterStats, RecordError> {
        self.join_logged(timeout).map(|(stats, _)| stats)
    }

    /// Like [`join`](Self::join), also returning every record's write span (empty unless
    /// [`WriterOptions::log_writes`] was set), in order.
    pub fn join_logged(
        mut self,
        timeout: Duration,
    ) -> Result<(WriterStats, Vec<WriteSpan>), RecordError> {
        self.stop();
        let start = Instant::now();
        let handle = self.handle.take().expect("joined once");
        while !handle.is_finished() {
            if start.elapsed() >= timeout {
                // Leave the thread; it ends when its filesystem is thawed.
                return Err(RecordError::Stuck {
                    id: self.id,
                    path: self.path.clone(),
                    after: timeout,
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let res = handle.join().map_err(|_| RecordError::WriterFailed {
            id: self.id,
            path: self.path.clone(),
            reason: "thread panicked".into(),
        })?;
        res.map_err(|reason| RecordError::WriterFailed {
            id: self.id,
            path: self.path.clone(),
            reason,
        })
    }
}

impl Drop for RecordWriter {
    fn drop(&mut self) {
        // A failed test: let the thread end on its own (it may be blocked on a frozen fs).
        self.stop();
    }
}

/// Checks that `path` holds exactly records 0..`acknowledged` of writer `id`, read from the
/// device (the file's cached pages are dropped first), each intact. Returns the count.
pub fn verify(path: &Path, id: u32, acknowledged: u64) -> Result<u64, RecordError> {
    let io = |what, source| RecordError::Io {
        what,
        path: path.to_path_buf(),
        source,
    };
    let mut f = File::open(path).map_err(|e| io("open", e))?;
    f.sync_all().map_err(|e| io("fsync", e))?;
    // SAFETY: plain syscall on an fd we own; advice only, cannot affect memory safety.
    let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if rc != 0 {
        return Err(io("posix_fadvise", std::io::Error::from_raw_os_error(rc)));
    }
    let mut data = Vec::new();
    f.read_to_end(&mut data).map_err(|e| io("read", e))?;
    let len = data.len() as u64;
    if len != acknowledged * RECORD_LEN as u64 {
        return Err(RecordError::Length {
            path: path.to_path_buf(),
            len,
            acknowledged,
        });
    }
    for (index, r) in data.chunks(RECORD_LEN).enumerate() {
        let index = index as u64;
        let corrupt = |reason| RecordError::Corrupt {
            path: path.to_path_buf(),
            index,
            reason,
        };
        let (w, seq) = decode(r).map_err(corrupt)?;
        if w != id {
            return Err(corrupt(format!("written by writer {w}, expected {id}")));
        }
        if seq != index {
            return Err(corrupt(format!("sequence number {seq}, expected {index}")));
        }
    }
    Ok(acknowledged)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scratch::Scratch;

    #[test]
    fn crc32_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn encode_decode_round_trip_and_damage_is_detected() {
        let r = encode(3, 41);
        assert_eq!(decode(&r), Ok((3, 41)));
        assert_ne!(encode(3, 41), encode(3, 42));
        for at in [0, 5, 9, 100, RECORD_LEN - 1] {
            let mut bad = r;
            bad[at] ^= 0x40;
            assert!(decode(&bad).is_err(), "flip at {at} not detected");
        }
        assert!(decode(&r[..100]).is_err());
    }

    #[test]
    fn writer_output_verifies_and_damage_fails_verification() {
        let s = Scratch::new().unwrap();
        let path = s.join("w0");
        let w = RecordWriter::start(
            &path,
            7,
            WriterOptions {
                fsync_every: 4,
                pause: Duration::ZERO,
                log_writes: true,
            },
        )
        .unwrap();
        while w.acknowledged() < 100 {
            std::thread::sleep(Duration::from_millis(1));
        }
        let (stats, log) = w.join_logged(Duration::from_secs(10)).unwrap();
        assert!(stats.records >= 100 && stats.fsyncs >= 25, "{stats:?}");
        // One span per record, each well-formed, in order.
        assert_eq!(log.len() as u64, stats.records);
        assert!(log.iter().all(|w| w.start_us <= w.end_us));
        assert!(log.windows(2).all(|p| p[0].end_us <= p[1].start_us));
        assert_eq!(verify(&path, 7, stats.records).unwrap(), stats.records);
        // Wrong writer id, a missing record, a flipped byte, a trailing partial record.
        assert!(verify(&path, 8, stats.records).is_err());
        assert!(matches!(
            verify(&path, 7, stats.records + 1),
            Err(RecordError::Length { .. })
        ));
        let mut data = std::fs::read(&path).unwrap();
        data[RECORD_LEN * 50 + 20] ^= 1;
        std::fs::write(&path, &data).unwrap();
        let e = verify(&path, 7, stats.records).unwrap_err();
        assert!(matches!(e, RecordError::Corrupt { index: 50, .. }), "{e}");
        data[RECORD_LEN * 50 + 20] ^= 1;
        data.extend_from_slice(&[0u8; 10]);
        std::fs::write(&path, &data).unwrap();
        assert!(matches!(
            verify(&path, 7, stats.records),
            Err(RecordError::Length { .. })
        ));
    }

    #[test]
    fn records_out_of_order_fail_verification() {
        let s = Scratch::new().unwrap();
        let path = s.join("w");
        let mut data = Vec::new();
        for seq in [0, 1, 3, 2] {
            data.extend_from_slice(&encode(1, seq));
        }
        std::fs::write(&path, &data).unwrap();
        let e = verify(&path, 1, 4).unwrap_err();
        assert!(e.to_string().contains("record 2: sequence number 3"), "{e}");
    }

    #[test]
    fn start_refuses_an_existing_file() {
        let s = Scratch::new().unwrap();
        std::fs::write(s.join("x"), b"").unwrap();
        assert!(RecordWriter::start(&s.join("x"), 0, WriterOptions::default()).is_err());
    }
}
