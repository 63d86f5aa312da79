//! `guest-agent`: runs inside the VM and serves boxlite.v1.Guest.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use guest_agent::config::Config;
use guest_agent::freezer::events::ThenAfterThaw;
use guest_agent::freezer::hooks::HooksConfig;
use guest_agent::freezer::journal::Journal;
use guest_agent::freezer::presync::PresyncConfig;
use guest_agent::freezer::{Freezer, FreezerConfig};
use guest_agent::init::{InitOptions, Initializer};
use guest_agent::observer::Observer;
use guest_agent::server::{serve, ServeOptions};
use guest_agent::service::{GuestService, VERSION};
use guest_agent::shutdown::Shutdown;
use guest_agent::telemetry;
use guest_transport::ListenOptions;

fn main() -> ExitCode {
    let cfg = Config::parse();
    limit_malloc_arenas();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("guest-agent: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Metrics and traces first (inside the runtime: the OTLP exporters live on it), then the
    // logger, whose tracing layer needs the tracer.
    let otlp = telemetry::otel::OtlpConfig::from_args(&cfg.telemetry);
    let telemetry = match runtime.block_on(async { telemetry::install(otlp) }) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("guest-agent: {e}");
            return ExitCode::FAILURE;
        }
    };
    telemetry::subscriber::init(cfg.log_format, telemetry.tracer());
    match runtime.block_on(run(cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cfg: Config) -> Result<(), String> {
    let listen = cfg.listeners()?;
    // Bad TLS files fail start-up before recovery, the eBPF load and the listeners.
    let tls = cfg.server_tls()?;
    if cfg.freeze_only.is_empty() {
        tracing::warn!(
            "no --freeze-only given: every eligible filesystem will be frozen by Quiesce"
        );
    }
    let journal = match Journal::open(&cfg.state_dir) {
        Ok(j) => j,
        Err(e) => {
            tracing::warn!(error = %e, "freeze journal disabled; state is kept in memory only");
            Journal::disabled()
        }
    };
    // The observer first: the freezer tells it when it has thawed (also a recovered freeze).
    let observer = Observer::start(cfg.ebpf, cfg.ebpf_freeze_hook)
        .await
        .map_err(|e| format!("{e} (--ebpf required)"))?;
    let poll_target = observer.handle().cloned();
    let events = ThenAfterThaw::new(telemetry::freezer::FreezerTelemetry, move || {
        if let Some(h) = &poll_target {
            h.poll_now();
        }
    });
    let freezer = Freezer::with_events(
        FreezerConfig {
            freeze_only: cfg.freeze_only.clone(),
            watchdog_timeout: cfg.freeze_timeout,
            operation_timeout: cfg.operation_timeout,
            presync: (!cfg.no_presync).then(PresyncConfig::default),
            parallel: !cfg.no_parallel_freeze,
            expedite_rcu: !cfg.no_expedite_rcu,
            hooks: cfg.hooks_dir.clone().map(|dir| HooksConfig {
                dir,
                timeout: cfg.hook_timeout,
            }),
        },
        journal,
        Arc::new(events),
    );
    for (entry, result) in freezer.recover().await {
        tracing::info!(mountpoint = %entry.mount_point.display(), ?result, "recovered freeze journal entry");
    }
    let status = freezer.clone();
    telemetry::metrics().observe_freezer(move || status.status());
    let shutdown = Shutdown::new();
    // glibc keeps freed heap pages mapped unless told otherwise (start-up and each OTLP
    // export free hundreds of KiB); musl returns them by itself.
    #[cfg(target_env = "gnu")]
    tokio::spawn(trim_heap_periodically());
    if let Some(handle) = observer.handle() {
        telemetry::writers::watch(handle.clone());
    }
    if let Some(uri) = cfg.telemetry.metrics_listen(cfg.listen.is_empty()) {
        // /metrics stays plain HTTP (read-only; TLS applies to the Guest service).
        let opts = ListenOptions {
            allowed_cids: cfg.allowed_cids(),
            allow_remote: cfg.allow_remote,
            tls: None,
        };
        let expo = telemetry::global().exposition().clone();
        telemetry::http::serve(&uri, &opts, expo, shutdown.clone())
            .await
            .map_err(|e| e.to_string())?;
    }
    let service = GuestService::new(
        freezer.clone(),
        Arc::new(Initializer::new(InitOptions::default())),
        shutdown.clone(),
        observer.clone(),
    );
    tokio::spawn(on_signals(shutdown.clone()));
    tracing::info!(
        version = VERSION,
        pid = std::process::id(),
        "guest-agent starting"
    );
    let opts = ServeOptions {
        listen,
        listen_options: ListenOptions {
            allowed_cids: cfg.allowed_cids(),
            allow_remote: cfg.allow_remote,
            tls,
        },
        max_message_bytes: cfg.max_message_bytes,
        drain_timeout: cfg.drain_timeout,
    };
    let served = serve(opts, service, shutdown).await;
    // Whatever happened, never exit holding a freeze.
    match freezer.thaw().await {
        Ok(r) if r.thawed_count > 0 => tracing::info!(count = r.thawed_count, "thawed on exit"),
        Ok(_) => {}
        Err(e) => {
            tracing::error!(error = %e, "thaw on exit failed; filesystems may still be frozen")
        }
    }
    // Bounded: an OTLP receiver that is gone costs at most this on the way out.
    telemetry::global()
        .shutdown(std::time::Duration::from_secs(2))
        .await;
    served.map_err(|e| e.to_string())?;
    tracing::info!("guest-agent stopped");
    Ok(())
}

/// SIGTERM and SIGINT end the agent cleanly (the exit path thaws).
async fn on_signals(shutdown: Shutdown) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM"),
        _ = int.recv() => tracing::info!("SIGINT"),
    }
    shutdown.trigger();
}

/// glibc gives every thread that allocates an arena of its own, up to 8 per CPU, and returns
/// little of their freed memory; the agent's threads (runtime, blocking pool, per-filesystem
/// freeze threads, the OTLP metric reader) allocate little and rarely at once, so two arenas
/// serve them (measured: about 0.5 MiB less steady RSS). Not needed with musl.
fn limit_malloc_arenas() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets an allocator parameter; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Returns glibc's free heap pages to the kernel now and every 10 s, on the blocking pool.
#[cfg(target_env = "gnu")]
async fn trim_heap_periodically() {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(10));
    loop {
        tick.tick().await;
        // SAFETY: malloc_trim only releases free pages of glibc's heap; it takes no pointers.
        let _ = tokio::task::spawn_blocking(|| unsafe { libc::malloc_trim(0) }).await;
    }
}
