//! Freeze observer: loads the `agent-ebpf` programs and reports every filesystem freeze on the
//! machine (also those made by `fsfreeze`, LVM or a backup tool) and every writer that blocks
//! on a frozen filesystem: which process, which mount, which kind of write, for how long.
//!
//! ```no_run
//! # async fn demo() -> Result<(), freeze_observer::ObserverError> {
//! use freeze_observer::{EbpfMode, ObserverConfig};
//! let config = ObserverConfig { mode: EbpfMode::Auto, ..ObserverConfig::default() };
//! if let Some(observer) = freeze_observer::start(config).await? {
//!     for fs in observer.snapshot().filesystems {
//!         println!("{:?} frozen: {:?}, blocked: {}", fs.mountpoint, fs.frozen, fs.blocked_writers.len());
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! Modules: [`btf`] (offsets), [`loader`] (choosing and attaching hooks), `probe` (asking
//! about one filesystem on demand), `collector` (the ring-buffer task and the poll of
//! filesystems being frozen), [`state`] (the typed interface), [`mountinfo`].

pub mod btf;
mod collector;
pub mod loader;
pub mod mountinfo;
mod probe;
pub mod state;

use std::sync::{Arc, Mutex};

pub use loader::{ContentionHook, EbpfMode, FreezeHook, FreezeSource, LoadError, LoadOptions};
pub use state::{
    BlockedWriter, CompletedFreeze, DevId, FilesystemState, FreezeInfo, ObserverEvent,
    ObserverHandle, ObserverSnapshot, Origin, Stall, TaskRef, WriteLevel,
};

/// How to start the observer.
#[derive(Clone, Debug, Default)]
pub struct ObserverConfig {
    /// auto / required / off.
    pub mode: EbpfMode,
    /// Load options (BTF path, own pid, forced hooks).
    pub load: LoadOptions,
    /// The agent's pid: freezes made by it are [`Origin::Agent`]. `None` = this process.
    pub agent_pid: Option<u32>,
}

/// Starting the observer failed in `required` mode.
#[derive(Debug, thiserror::Error)]
pub enum ObserverError {
    /// Loading or attaching failed.
    #[error("eBPF observer required but unavailable: {0}")]
    Load(#[from] LoadError),
    /// The ring buffer could not be registered with the runtime.
    #[error("eBPF observer: registering the ring buffer with tokio: {0}")]
    Runtime(#[source] std::io::Error),
    /// The blocking load task panicked or was cancelled.
    #[error("eBPF observer: load task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// Starts the observer according to `config.mode`: `Off` returns `Ok(None)` without loading;
/// `Auto` logs the reason once and returns `Ok(None)` if loading fails; `Required` returns the
/// error. Loading runs on the blocking pool; the collector runs as a task on the current runtime.
pub async fn start(config: ObserverConfig) -> Result<Option<ObserverHandle>, ObserverError> {
    if config.mode == EbpfMode::Off {
        tracing::info!("eBPF freeze observer disabled (--ebpf off)");
        return Ok(None);
    }
    let opts = config.load.clone();
    let loaded = match tokio::task::spawn_blocking(move || loader::load(&opts)).await? {
        Ok(loaded) => loaded,
        Err(e) if config.mode == EbpfMode::Auto => {
            tracing::warn!(error = %e, "eBPF freeze observer unavailable; running without it");
            return Ok(None);
        }
        Err(e) => return Err(e.into()),
    };
    tracing::info!(
        freeze_source = loaded.freeze_source.as_str(),
        reason = %loaded.freeze_source_reason,
        contention_hook = loaded.contention_hook.as_str(),
        load_ms = loaded.load_time.as_millis() as u64,
        "eBPF freeze observer attached"
    );
    let agent_pid = config.agent_pid.unwrap_or_else(std::process::id);
    let shared = Arc::new(state::Shared {
        state: Mutex::new(state::ObserverState::new(
            agent_pid,
            loaded.freeze_source,
            loaded.freeze_source_reason,
            loaded.contention_hook,
        )),
        events: tokio::sync::broadcast::channel(1024).0,
        poll_now: tokio::sync::Notify::new(),
    });
    // Only the sync_fs source needs the poll: its hooks see a freeze begin, not end.
    let probe = (loaded.freeze_source == FreezeSource::SyncFs).then_some(loaded.probe);
    let collector = collector::Collector::new(
        loaded.ebpf,
        loaded.events,
        probe,
        agent_pid,
        Arc::clone(&shared),
    )
    .map_err(ObserverError::Runtime)?;
    let task = tokio::spawn(collector.run());
    Ok(Some(ObserverHandle::new(shared, task)))
}
