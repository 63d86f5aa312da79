//! The freezers being compared, behind one interface so each is driven and measured the
//! same way: our agent (defaults; with pre-sync and parallel freezing off; with normal RCU
//! grace periods), Debian's qemu-guest-agent, and a raw `fsfreeze -f`/`-u` loop.

pub mod agent;
pub mod fsfreeze;
pub mod qga;

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::BenchError;
use crate::process::Memory;
use crate::scratch::Scratch;

/// Which freezer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, clap::ValueEnum)]
pub enum ContenderKind {
    /// guest-agent with its defaults (pre-sync, parallel freeze/thaw).
    Agent,
    /// guest-agent with `--no-presync --no-parallel-freeze`.
    AgentSerial,
    /// guest-agent with `--no-expedite-rcu`.
    AgentNormalRcu,
    /// qemu-guest-agent (`guest-fsfreeze-freeze-list` / `guest-fsfreeze-thaw`).
    QemuGa,
    /// `fsfreeze -f` then `fsfreeze -u` on each filesystem in turn.
    Fsfreeze,
}

impl ContenderKind {
    /// Label in tables.
    pub const fn label(self) -> &'static str {
        match self {
            Self::Agent => "agent",
            Self::AgentSerial => "agent --no-presync --no-parallel-freeze",
            Self::AgentNormalRcu => "agent --no-expedite-rcu",
            Self::QemuGa => "qemu-ga",
            Self::Fsfreeze => "fsfreeze loop",
        }
    }

    /// Short name (command line, log files).
    pub const fn name(self) -> &'static str {
        match self {
            Self::Agent => "agent",
            Self::AgentSerial => "agent-serial",
            Self::AgentNormalRcu => "agent-normal-rcu",
            Self::QemuGa => "qemu-ga",
            Self::Fsfreeze => "fsfreeze",
        }
    }

    /// True for our own agent in any configuration.
    pub const fn is_agent(self) -> bool {
        matches!(self, Self::Agent | Self::AgentSerial | Self::AgentNormalRcu)
    }

    /// The agent flags that make this configuration (empty for the defaults and non-agents).
    pub const fn agent_flags(self) -> &'static [&'static str] {
        match self {
            Self::AgentSerial => &["--no-presync", "--no-parallel-freeze"],
            Self::AgentNormalRcu => &["--no-expedite-rcu"],
            Self::Agent | Self::QemuGa | Self::Fsfreeze => &[],
        }
    }
}

/// A freezer the benchmark can drive. Calls block the calling thread (never a runtime
/// worker); the caller times them.
pub trait Contender {
    /// Which one it is.
    fn kind(&self) -> ContenderKind;
    /// Freezes exactly `mounts` (all of them or none).
    fn quiesce(&mut self, mounts: &[PathBuf]) -> Result<(), BenchError>;
    /// Thaws what the last quiesce froze.
    fn thaw(&mut self) -> Result<(), BenchError>;
    /// One health-check round trip; `None` if the contender has no such call.
    fn ping(&mut self) -> Option<Result<(), BenchError>>;
    /// Resident memory of its process, if it has one.
    fn memory(&self) -> Option<Memory>;
    /// CPU time its process has used so far, if it has one.
    fn cpu_time(&self) -> Option<Duration>;
}

/// Where the contender binaries are and what they may touch.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// guest-agent (release build).
    pub agent: PathBuf,
    /// qemu-ga.
    pub qemu_ga: PathBuf,
    /// fsfreeze.
    pub fsfreeze: PathBuf,
}

/// Starts a contender; also returns how long it took from spawn to its first answer.
pub fn start(
    kind: ContenderKind,
    bins: &Binaries,
    scratch: &Scratch,
    mounts: &[PathBuf],
) -> Result<(Box<dyn Contender>, Option<Duration>), BenchError> {
    for m in mounts {
        scratch.check_ours(m)?;
    }
    Ok(match kind {
        ContenderKind::Agent | ContenderKind::AgentSerial | ContenderKind::AgentNormalRcu => {
            let (c, ready) = agent::AgentContender::start(kind, &bins.agent, scratch, true)?;
            (Box::new(c), Some(ready))
        }
        ContenderKind::QemuGa => {
            let (c, ready) = qga::QgaContender::start(&bins.qemu_ga, scratch, mounts, true)?;
            (Box::new(c), Some(ready))
        }
        ContenderKind::Fsfreeze => (
            Box::new(fsfreeze::FsfreezeLoop::new(&bins.fsfreeze, scratch)),
            None,
        ),
    })
}

/// A fresh, unused path below the scratch root (sockets, state dirs, logs): neither it nor
/// its `.log` sibling exists (a process removes its socket when it exits, its log stays).
pub fn scratch_path(scratch: &Scratch, base: &str, ext: &str) -> PathBuf {
    for i in 0.. {
        let p = scratch.root.join(format!("{base}-{i}{ext}"));
        if !p.exists() && !p.with_extension("log").exists() {
            return p;
        }
    }
    unreachable!("an unbounded range always yields a free name")
}

/// Size of a file in bytes.
pub fn file_size(path: &Path) -> Option<u64> {
    std::fs::metadata(path).ok().map(|m| m.len())
}
