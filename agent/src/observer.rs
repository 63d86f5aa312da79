//! The eBPF freeze observer as the agent uses it: started per `--ebpf auto|required|off`,
//! remembered together with why it is not running, and read (never waited on) by FreezeStatus
//! and telemetry. The kernel side and the collector live in the `freeze-observer` crate.

use freeze_observer::{
    EbpfMode, FreezeHook, LoadOptions, ObserverConfig, ObserverError, ObserverHandle,
};

/// The observer, or the reason there is none.
#[derive(Clone, Debug)]
pub struct Observer {
    handle: Option<ObserverHandle>,
    reason: String,
}

impl Observer {
    /// Starts the observer with freezes seen through `hook`. `Auto` logs the failure once and
    /// runs without it; `Required` returns the error (the agent refuses to start); `Off` never
    /// loads.
    pub async fn start(mode: EbpfMode, hook: FreezeHook) -> Result<Self, ObserverError> {
        if mode == EbpfMode::Off {
            tracing::info!("eBPF observer disabled (--ebpf off)");
            return Ok(Self::disabled("disabled (--ebpf off)"));
        }
        let config = ObserverConfig {
            mode: EbpfMode::Required,
            agent_pid: Some(std::process::id()),
            load: LoadOptions {
                freeze_source: hook.forced(),
                ..LoadOptions::default()
            },
        };
        match freeze_observer::start(config).await {
            Ok(Some(handle)) => {
                let snap = handle.snapshot();
                let reason = snap.freeze_source_reason.clone();
                tracing::info!(
                    freeze_source = snap.freeze_source.as_str(),
                    contention_hook = snap.contention_hook.as_str(),
                    %reason,
                    "eBPF observer running"
                );
                Ok(Self {
                    handle: Some(handle),
                    reason,
                })
            }
            Ok(None) => Ok(Self::disabled("not loaded")),
            Err(e) if mode == EbpfMode::Auto => {
                tracing::warn!(error = %e, "eBPF observer unavailable; the agent runs without it (--ebpf auto)");
                Ok(Self::disabled(&e.to_string()))
            }
            Err(e) => Err(e),
        }
    }

    /// No observer, for the given reason.
    pub fn disabled(reason: &str) -> Self {
        Self {
            handle: None,
            reason: reason.to_string(),
        }
    }

    /// The running observer, if any.
    pub fn handle(&self) -> Option<&ObserverHandle> {
        self.handle.as_ref()
    }

    /// Why the observer uses its freeze source, or why it is not running.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}
