//! `guestctl status` shows what the eBPF observer sees: a loop ext4 frozen by `fsfreeze -f`
//! (not by the agent) with three writers blocked on it, one of each way a process meets a
//! frozen filesystem:
//!
//! * `pwrite(2)` to a file opened before the freeze (kind WRITE),
//! * `open(O_CREAT)` of a new file (kind WRITE, through `mnt_want_write`),
//! * a store into a `MAP_SHARED` mapping made before the freeze (kind PAGEFAULT).
//!
//! `guestctl --json status` must list the filesystem (origin "other", frozen by the
//! `fsfreeze` pid, since when) and those three pids with their kinds; the human output must
//! name the same pids. The writers are small python3 programs that set up before the freeze,
//! then make their one write when told to.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use guest_proto::v1::FreezeStatusResponse;
use serde_json::Value;
use system_tests::reliability::ThawGuard;
use system_tests::results::now_ms;
use system_tests::rpc::Rpc;
use system_tests::writer::proc_state;
use system_tests::{guestctl, Agent, ExternalFreeze, FsType, LoopFs, Scratch};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// How long the agent may take to report all three writers (an upper bound).
const SEEN: Duration = Duration::from_secs(10);
/// How long a writer may take to get ready, or to finish after the thaw.
const WRITER_STEP: Duration = Duration::from_secs(20);

/// The writer: sets its `comm`, prepares, says `ready`, waits for one byte on stdin, makes
/// its write, says `done`.
const WRITER_PY: &str = r#"
import mmap, os, sys
kind, path, comm = sys.argv[1:4]
with open("/proc/self/comm", "w") as f:
    f.write(comm)
if kind == "pwrite":
    fd = os.open(path, os.O_WRONLY)
elif kind == "mmap":
    fd = os.open(path, os.O_RDWR)
    m = mmap.mmap(fd, 4096, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
print("ready", flush=True)
sys.stdin.buffer.read(1)
if kind == "pwrite":
    os.pwrite(fd, b"x" * 4096, 0)
elif kind == "creat":
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o644))
elif kind == "mmap":
    m[0] = 0x5A
    m.flush()
print("done", flush=True)
"#;

/// What a writer does, and what the observer should call it.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Pwrite,
    Creat,
    MmapStore,
}

impl Kind {
    fn arg(self) -> &'static str {
        match self {
            Kind::Pwrite => "pwrite",
            Kind::Creat => "creat",
            Kind::MmapStore => "mmap",
        }
    }

    /// The `comm` it gives itself (shown by the observer).
    fn comm(self) -> &'static str {
        match self {
            Kind::Pwrite => "w-pwrite",
            Kind::Creat => "w-creat",
            Kind::MmapStore => "w-mmap",
        }
    }

    /// The kind of write the observer reports.
    fn level(self) -> &'static str {
        match self {
            Kind::Pwrite | Kind::Creat => "WRITE",
            Kind::MmapStore => "PAGEFAULT",
        }
    }
}

/// A python3 writer process; killed on drop (it dies once its filesystem is thawed, and
/// tokio reaps it).
struct PyWriter {
    kind: Kind,
    pid: u32,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Lines<BufReader<ChildStdout>>,
}

fn python() -> &'static str {
    // The distribution's interpreter when present: no version-manager shim in between.
    if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

impl PyWriter {
    /// Starts a writer on `path` and waits until it is ready to write.
    async fn start(kind: Kind, path: &Path, cwd: &Path) -> anyhow::Result<Self> {
        let mut child = Command::new(python())
            .args(["-c", WRITER_PY, kind.arg()])
            .arg(path)
            .arg(kind.comm())
            .current_dir(cwd)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()?;
        let pid = child.id().expect("just spawned");
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("piped")).lines();
        let mut w = Self {
            kind,
            pid,
            child,
            stdin,
            stdout,
        };
        w.expect_line("ready").await?;
        Ok(w)
    }

    async fn expect_line(&mut self, want: &str) -> anyhow::Result<()> {
        let line = tokio::time::timeout(WRITER_STEP, self.stdout.next_line())
            .await
            .map_err(|_| {
                anyhow::anyhow!("{:?} writer {}: no {want:?} in time", self.kind, self.pid)
            })??;
        anyhow::ensure!(
            line.as_deref() == Some(want),
            "{:?} writer {}: expected {want:?}, got {line:?}",
            self.kind,
            self.pid
        );
        Ok(())
    }

    /// Tells it to make its write (which blocks while the filesystem is frozen).
    async fn go(&mut self) -> anyhow::Result<()> {
        let mut stdin = self.stdin.take().expect("go once");
        stdin.write_all(b"g").await?;
        stdin.flush().await?;
        Ok(())
    }

    /// Waits for the write to complete and the process to exit 0.
    async fn finish(&mut self) -> anyhow::Result<()> {
        self.expect_line("done").await?;
        let st = tokio::time::timeout(WRITER_STEP, self.child.wait()).await??;
        anyhow::ensure!(st.success(), "{:?} writer {}: {st}", self.kind, self.pid);
        Ok(())
    }
}

/// The pids blocked on `mp`, by FreezeStatus.
fn blocked_pids(st: &FreezeStatusResponse, mp: &str) -> Vec<u32> {
    st.observed
        .iter()
        .filter(|o| o.mountpoint == mp)
        .flat_map(|o| o.blocked_writers.iter().map(|w| w.pid))
        .collect()
}

/// Polls FreezeStatus until every pid in `pids` is reported blocked on `mp`.
async fn wait_blocked(rpc: &mut Rpc, mp: &str, pids: &[u32]) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        let st = rpc.status().await??;
        let seen = blocked_pids(&st, mp);
        if pids.iter().all(|p| seen.contains(p)) {
            return Ok(());
        }
        anyhow::ensure!(
            start.elapsed() < SEEN,
            "writers {pids:?} not all reported blocked on {mp} within {SEEN:?}: {st:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn file_with_data(path: &PathBuf) -> anyhow::Result<()> {
    std::fs::write(path, vec![0u8; 4096])?;
    std::fs::File::open(path)?.sync_all()?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_lists_an_external_freeze_and_its_three_blocked_writers() -> anyhow::Result<()> {
    let s = Scratch::new()?;
    let fs = LoopFs::new(&s, "obs", FsType::Ext4, 32)?;
    // Thaws on any exit, panics included (so do the ExternalFreeze and the mount).
    let _guard = ThawGuard::new(&[fs.mountpoint()]);
    let mp = fs.mp();
    file_with_data(&fs.join("existing"))?;
    file_with_data(&fs.join("mapped"))?;

    let agent = Agent::builder(&s)
        .args(["--ebpf", "required"])
        .start()
        .await?;
    let uri = agent.uri();
    let mut rpc = agent.rpc().await?.with_timeout(Duration::from_secs(10));
    let ebpf = rpc.status().await??.ebpf.unwrap_or_default();
    assert!(ebpf.active, "{ebpf:?}\n{}", agent.logs());

    let mut writers = Vec::new();
    for (kind, file) in [
        (Kind::Pwrite, "existing"),
        (Kind::Creat, "created"),
        (Kind::MmapStore, "mapped"),
    ] {
        writers.push(PyWriter::start(kind, &fs.join(file), s.path()).await?);
    }
    // Declared after the writers: dropped (thawed) before they are killed.
    let freeze = ExternalFreeze::freeze(fs.mountpoint())?;
    let frozen_at = now_ms();
    for w in &mut writers {
        w.go().await?;
    }
    let pids: Vec<u32> = writers.iter().map(|w| w.pid).collect();
    wait_blocked(&mut rpc, &mp, &pids).await?;
    // The kernel's word, not only the observer's: each writer sleeps uninterruptibly.
    for w in &writers {
        assert_eq!(
            proc_state(w.pid),
            Some('D'),
            "{:?} writer {} is not blocked in the kernel",
            w.kind,
            w.pid
        );
    }

    // JSON: the filesystem, who froze it, since when, and each writer with its kind.
    let st = guestctl::run(&["--connect", &uri, "--json", "status"]).await?;
    assert_eq!(st.code, Some(0), "{st}");
    let j = st.json()?;
    assert_eq!(j["frozen"], false, "the agent itself holds nothing: {st}");
    let observed = j["observed"].as_array().cloned().unwrap_or_default();
    let o = observed
        .iter()
        .find(|o| o["mountpoint"] == mp.as_str())
        .unwrap_or_else(|| panic!("{mp} not in observed: {st}"));
    assert_eq!(o["fstype"], "ext4", "{st}");
    assert_eq!(o["dev_id"], fs.dev_id()?.as_str(), "{st}");
    assert_eq!(o["origin"], "other", "{st}");
    // The default freeze hook (fexit, or the sync_fs tracepoints where fexit is refused) sees the
    // FIFREEZE caller; only `--ebpf-freeze-hook none` would not, and it is not asked for here.
    assert_ne!(ebpf.freeze_source, "none", "{ebpf:?}");
    assert_eq!(o["frozen_by"]["pid"], freeze.pid(), "{st}");
    assert_eq!(o["frozen_by"]["comm"], "fsfreeze", "{st}");
    let since = o["frozen_since_unix_ms"].as_u64().expect("frozen since");
    assert!(
        since.abs_diff(frozen_at) < 5_000,
        "frozen since {since}, fsfreeze returned at {frozen_at}: {st}"
    );
    assert!(o["frozen_since"].as_str().is_some_and(|t| t.ends_with('Z')));
    let reported: BTreeMap<u64, &Value> = o["blocked_writers"]
        .as_array()
        .map(|ws| {
            ws.iter()
                .map(|w| (w["pid"].as_u64().unwrap_or(0), w))
                .collect()
        })
        .unwrap_or_default();
    for w in &writers {
        let r = reported
            .get(&u64::from(w.pid))
            .unwrap_or_else(|| panic!("{:?} writer {} not listed: {st}", w.kind, w.pid));
        assert_eq!(r["tid"], w.pid, "single-threaded writer: {st}");
        assert_eq!(r["comm"], w.kind.comm(), "{st}");
        assert_eq!(r["level"], w.kind.level(), "{:?} writer: {st}", w.kind);
        let since = r["blocked_since_unix_ms"].as_u64().unwrap_or(0);
        assert!(
            since + 1_000 >= frozen_at,
            "blocked before the freeze? {st}"
        );
        assert!(r["waited_ms"].as_u64().is_some(), "{st}");
    }
    assert_eq!(j["ebpf"]["active"], true, "{st}");
    assert_eq!(
        j["ebpf"]["freeze_source"],
        ebpf.freeze_source.as_str(),
        "{st}"
    );
    assert_eq!(
        j["ebpf"]["contention_hook"],
        ebpf.contention_hook.as_str(),
        "{st}"
    );

    // Human: the eBPF line, the freezer, and a writers-table row per pid with its kind.
    let h = guestctl::run(&["--connect", &uri, "status"]).await?;
    assert_eq!(h.code, Some(0), "{h}");
    assert!(
        h.stdout.contains(&format!(
            "eBPF observer: up (freeze source {}, writers via {})",
            ebpf.freeze_source, ebpf.contention_hook
        )),
        "{h}"
    );
    if ebpf.freeze_source != "none" {
        assert!(
            h.stdout
                .contains(&format!("fsfreeze (pid {})", freeze.pid())),
            "{h}"
        );
    }
    for w in &writers {
        let row = h
            .stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(&w.pid.to_string()))
            .unwrap_or_else(|| panic!("no row for writer {}: {h}", w.pid));
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cells[1..3], [w.kind.comm(), w.kind.level()], "{row}\n{h}");
        assert_eq!(cells.last(), Some(&mp.as_str()), "{row}\n{h}");
    }

    // Thawed, every writer completes and the observer forgets the freeze.
    freeze.thaw()?;
    for w in &mut writers {
        w.finish().await?;
    }
    // Each write really landed once thawed.
    assert_eq!(std::fs::read(fs.join("existing"))?[0], b'x');
    assert!(fs.join("created").exists());
    assert_eq!(std::fs::read(fs.join("mapped"))?[0], 0x5A);
    let start = Instant::now();
    loop {
        let st = rpc.status().await??;
        if !st.observed.iter().any(|o| o.mountpoint == mp) {
            break;
        }
        assert!(
            start.elapsed() < SEEN,
            "still observed after the thaw: {st:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}
