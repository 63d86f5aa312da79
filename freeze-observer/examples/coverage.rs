//! Freeze coverage of a freeze hook (prints figures; not a timed test): which freezes on the
//! machine the observer sees, and whether it knows who made them.
//!
//! Makes its own loop-mounted ext4, XFS and btrfs images under /var/tmp (skipping a type whose
//! mkfs is missing) and freezes only those, or only the filesystem mounted at `COVERAGE_MOUNT`
//! (a scratch volume of a test VM; refused for `/` and for a path that is not a mountpoint),
//! each freeze undone by a guard (also on panic):
//! * `fsfreeze --freeze` / `--unfreeze` with nothing writing;
//! * `xfs_freeze -f` (XFS only: a shell script whose `xfs_io` makes the freeze);
//! * FIFREEZE from this process (as the agent does);
//! * `fsfreeze --freeze` with a writer blocked on the frozen filesystem until the thaw.
//!
//! Per cell: how many freezes were listed as frozen while they lasted (within 100 ms), counted
//! as completed freezes after their thaw, and with the process that froze named.
//!
//! Usage (root): `FREEZE_HOOK=auto|fexit|sync-fs|ioctl|none cargo run --release -p
//! freeze-observer --example coverage -- [freezes per kind]` (default 10).

#[path = "../tests/common/mod.rs"]
mod common;

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{wait_for, FreezeGuard, FsKind, LoopFs, Writer, WriterKind};
use freeze_observer::{EbpfMode, FreezeHook, LoadOptions, ObserverConfig, ObserverHandle};

/// How a freeze is made.
#[derive(Clone, Copy, Debug)]
enum Maker {
    Fsfreeze,
    XfsFreeze,
    Ioctl,
    FsfreezeWithWriter,
}

impl Maker {
    fn label(self) -> &'static str {
        match self {
            Self::Fsfreeze => "fsfreeze, no writer",
            Self::XfsFreeze => "xfs_freeze, no writer",
            Self::Ioctl => "FIFREEZE in-process",
            Self::FsfreezeWithWriter => "fsfreeze + blocked writer",
        }
    }
}

/// Counts of one (filesystem, maker) cell.
#[derive(Default)]
struct Cell {
    made: u32,
    frozen_seen: u32,
    seen: u32,
    pid_known: u32,
}

/// Makes one freeze of `mountpoint`, holds it 20 ms, thaws, and checks what the observer
/// recorded.
async fn one_freeze(obs: &ObserverHandle, mountpoint: &Path, maker: Maker, cell: &mut Cell) {
    let before = obs
        .snapshot()
        .filesystem(mountpoint)
        .map_or(0, |f| f.freezes_total);
    // The writer opens its file before the freeze and writes once it is frozen.
    let mut writer = matches!(maker, Maker::FsfreezeWithWriter)
        .then(|| Writer::spawn(WriterKind::Write, mountpoint));
    let (guard, pid, comm) = match maker {
        Maker::Fsfreeze | Maker::FsfreezeWithWriter => {
            let (g, pid) = FreezeGuard::by_tool(mountpoint, "fsfreeze");
            (g, pid, "fsfreeze")
        }
        Maker::XfsFreeze => {
            let (g, _) = FreezeGuard::by_tool(mountpoint, "xfs_freeze");
            (g, 0, "xfs_io")
        }
        Maker::Ioctl => (FreezeGuard::here(mountpoint), std::process::id(), ""),
    };
    if let Some(w) = writer.as_mut() {
        w.go();
    }
    let frozen_seen = wait_for(Duration::from_millis(100), || {
        obs.snapshot()
            .filesystem(mountpoint)
            .is_some_and(|f| f.frozen.is_some())
    })
    .await;
    cell.frozen_seen += u32::from(frozen_seen);
    tokio::time::sleep(Duration::from_millis(20)).await;
    guard.thaw();
    if let Some(mut w) = writer {
        w.finish();
    }
    cell.made += 1;
    let seen = wait_for(Duration::from_millis(500), || {
        obs.snapshot()
            .filesystem(mountpoint)
            .is_some_and(|f| f.freezes_total > before && f.frozen.is_none())
    })
    .await;
    if !seen {
        return;
    }
    cell.seen += 1;
    let snap = obs.snapshot();
    let by = snap
        .filesystem(mountpoint)
        .and_then(|f| f.last_freeze.as_ref())
        .and_then(|l| l.by.clone());
    let known = by.is_some_and(|t| {
        if pid == 0 {
            t.comm == comm
        } else {
            t.pid == pid
        }
    });
    cell.pid_known += u32::from(known);
}

/// The type of the filesystem mounted at `mp`, after checking that it is a mountpoint other
/// than `/` (the only filesystem this example freezes that it did not make itself).
fn fstype_of(mp: &Path) -> String {
    let dev = |p: &Path| std::fs::metadata(p).expect("stat").dev();
    let parent = mp.parent().expect("COVERAGE_MOUNT must not be /");
    assert!(
        dev(mp) != dev(parent),
        "COVERAGE_MOUNT {mp:?} is not a mountpoint"
    );
    let mounts = std::fs::read_to_string("/proc/self/mounts").expect("mounts");
    mounts
        .lines()
        .rev()
        .map(|l| l.split(' ').collect::<Vec<_>>())
        .find(|f| f.len() > 2 && Path::new(f[1]) == mp)
        .map(|f| f[2].to_owned())
        .expect("COVERAGE_MOUNT in /proc/self/mounts")
}

fn has(tool: &str) -> bool {
    std::process::Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let per_kind: u32 = std::env::args()
        .nth(1)
        .map_or(10, |n| n.parse().expect("freezes per kind"));
    let hook: FreezeHook = std::env::var("FREEZE_HOOK")
        .ok()
        .map_or(FreezeHook::Auto, |h| h.parse().expect("FREEZE_HOOK"));
    let existing = std::env::var_os("COVERAGE_MOUNT").map(PathBuf::from);
    let kinds: Vec<(FsKind, &str)> = [
        (FsKind::Ext4, "ext4", "mkfs.ext4"),
        (FsKind::Xfs, "xfs", "mkfs.xfs"),
        (FsKind::Btrfs, "btrfs", "mkfs.btrfs"),
    ]
    .into_iter()
    .filter(|(_, _, mkfs)| existing.is_none() && has(mkfs))
    .map(|(k, name, _)| (k, name))
    .collect();
    let made: Vec<_> = kinds
        .iter()
        .map(|(k, name)| (LoopFs::with_kind(&format!("cov-{name}"), *k), *name, *k))
        .collect();
    let mut targets: Vec<(PathBuf, String, Option<FsKind>)> = made
        .iter()
        .map(|(fs, name, k)| (fs.mountpoint.clone(), (*name).to_owned(), Some(*k)))
        .collect();
    if let Some(mp) = existing {
        targets.push((mp.clone(), fstype_of(&mp), None));
    }
    let config = ObserverConfig {
        mode: EbpfMode::Required,
        load: LoadOptions {
            freeze_source: hook.forced(),
            ..LoadOptions::default()
        },
        agent_pid: None,
    };
    let obs = freeze_observer::start(config)
        .await
        .expect("load")
        .expect("running");
    let snap = obs.snapshot();
    println!(
        "freeze coverage, hook {hook:?}: source {} + {} ({}); {per_kind} freezes per cell, each held 20 ms",
        snap.freeze_source.as_str(),
        snap.contention_hook.as_str(),
        snap.freeze_source_reason
    );
    println!(
        "{:<6} {:<28} {:>6} {:>8} {:>8} {:>10}",
        "fs", "freeze made by", "made", "frozen", "counted", "pid known"
    );
    let (mut made, mut frozen, mut seen, mut known) = (0, 0, 0, 0);
    for (mountpoint, name, kind) in &targets {
        let mut makers = vec![Maker::Fsfreeze, Maker::Ioctl, Maker::FsfreezeWithWriter];
        if *kind == Some(FsKind::Xfs) && has("xfs_freeze") {
            makers.insert(1, Maker::XfsFreeze);
        }
        for maker in makers {
            let mut cell = Cell::default();
            for _ in 0..per_kind {
                one_freeze(&obs, mountpoint, maker, &mut cell).await;
            }
            println!(
                "{name:<6} {:<28} {:>6} {:>8} {:>8} {:>10}",
                maker.label(),
                cell.made,
                cell.frozen_seen,
                cell.seen,
                cell.pid_known
            );
            made += cell.made;
            frozen += cell.frozen_seen;
            seen += cell.seen;
            known += cell.pid_known;
        }
    }
    println!(
        "total: {made} freezes made, {frozen} seen frozen, {seen} counted, freezer's pid known for {known}"
    );
}
