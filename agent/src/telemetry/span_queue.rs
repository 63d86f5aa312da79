//! A span processor with a bounded queue that drops (and counts) instead of waiting.
//!
//! Why not the SDK's `BatchSpanProcessor`: it also drops when its queue is full, but only logs
//! the number at shutdown; the agent must count drops as a metric
//! (`guest_telemetry_spans_dropped_total`) and bound every export by a timeout, so a receiver
//! that is down or stalled costs the RPC path nothing but a failed `try_send`.
//!
//! `on_end` (called on whatever thread closes a span, including RPC handlers and the freezer's
//! blocking threads) only does a non-blocking `try_send`. A tokio task drains the queue into
//! batches and exports each batch under a timeout; while an export is stuck the queue fills and
//! further spans are dropped, never waited for. The task is woken by its interval or when a
//! full batch is waiting, not by every span: a wake-up per span put a cross-thread wake on
//! every RPC's path (issue 13: Ping p50 +150-200 us with OTLP on, 2 CPUs).

use std::sync::Arc;
use std::time::Duration;

use opentelemetry::Context;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter, SpanProcessor};
use tokio::sync::{mpsc, Notify};

use super::metrics::{DropReason, ExportStats, Signal};

/// Bounds of the queue and the exports.
#[derive(Debug, Clone, Copy)]
pub struct QueueConfig {
    /// Spans waiting for export at most; more are dropped.
    pub capacity: usize,
    /// Spans per export request at most.
    pub max_batch: usize,
    /// A partial batch is exported after this long.
    pub interval: Duration,
    /// One export may take this long; then its spans count as dropped.
    pub export_timeout: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            capacity: 2048,
            max_batch: 512,
            interval: Duration::from_secs(1),
            export_timeout: Duration::from_secs(5),
        }
    }
}

enum Control {
    Flush(std::sync::mpsc::SyncSender<()>),
    Shutdown(std::sync::mpsc::SyncSender<()>),
}

/// The processor; see the module documentation.
#[derive(Debug)]
pub struct QueueingSpanProcessor {
    spans: mpsc::Sender<SpanData>,
    /// Wakes the export task once a full batch is queued.
    full: Arc<Notify>,
    max_batch: usize,
    control: mpsc::UnboundedSender<Control>,
    stats: Arc<ExportStats>,
    wait: Duration,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Control::Flush(_) => "Flush",
            Control::Shutdown(_) => "Shutdown",
        })
    }
}

impl QueueingSpanProcessor {
    /// Starts the export task on `runtime`; `exporter` must already know its resource.
    pub fn spawn<E>(
        exporter: E,
        cfg: QueueConfig,
        stats: Arc<ExportStats>,
        runtime: &tokio::runtime::Handle,
    ) -> Self
    where
        E: SpanExporter + 'static,
    {
        let (spans, rx) = mpsc::channel(cfg.capacity.max(1));
        let (control, ctl_rx) = mpsc::unbounded_channel();
        let full = Arc::new(Notify::new());
        runtime.spawn(export_loop(
            exporter,
            rx,
            ctl_rx,
            full.clone(),
            cfg,
            stats.clone(),
        ));
        Self {
            spans,
            full,
            max_batch: cfg.max_batch.max(1),
            control,
            stats,
            wait: cfg.export_timeout * 2 + Duration::from_secs(1),
        }
    }

    fn request(
        &self,
        make: fn(std::sync::mpsc::SyncSender<()>) -> Control,
        wait: Duration,
    ) -> OTelSdkResult {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.control
            .send(make(tx))
            .map_err(|_| OTelSdkError::AlreadyShutdown)?;
        rx.recv_timeout(wait)
            .map_err(|_| OTelSdkError::Timeout(wait))
    }
}

impl SpanProcessor for QueueingSpanProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        if self.spans.try_send(span).is_err() {
            self.stats.spans_dropped(DropReason::QueueFull, 1);
            return;
        }
        let queued = self.spans.max_capacity() - self.spans.capacity();
        if queued >= self.max_batch {
            self.full.notify_one();
        }
    }

    /// Blocks the calling thread until queued spans are exported (bounded); call it from a
    /// blocking context, never from an async task.
    fn force_flush(&self) -> OTelSdkResult {
        self.request(Control::Flush, self.wait)
    }

    /// Exports what is queued (bounded by `timeout`) and stops the export task.
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.request(Control::Shutdown, timeout)
    }
}

async fn export_loop<E: SpanExporter>(
    exporter: E,
    mut rx: mpsc::Receiver<SpanData>,
    mut control: mpsc::UnboundedReceiver<Control>,
    full: Arc<Notify>,
    cfg: QueueConfig,
    stats: Arc<ExportStats>,
) {
    let mut batch = Vec::with_capacity(cfg.max_batch);
    let mut failing = false;
    let mut tick = tokio::time::interval(cfg.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            ctl = control.recv() => {
                drain(&exporter, &mut rx, &mut batch, &cfg, &stats, &mut failing).await;
                export(&exporter, &mut batch, &cfg, &stats, &mut failing).await;
                match ctl {
                    Some(Control::Flush(reply)) => { let _ = reply.try_send(()); }
                    Some(Control::Shutdown(reply)) => {
                        let _ = exporter.shutdown_with_timeout(cfg.export_timeout);
                        let _ = reply.try_send(());
                        return;
                    }
                    None => return,
                }
            }
            () = full.notified() => {
                if !drain(&exporter, &mut rx, &mut batch, &cfg, &stats, &mut failing).await {
                    export(&exporter, &mut batch, &cfg, &stats, &mut failing).await;
                    return;
                }
            }
            _ = tick.tick() => {
                let open = drain(&exporter, &mut rx, &mut batch, &cfg, &stats, &mut failing).await;
                export(&exporter, &mut batch, &cfg, &stats, &mut failing).await;
                if !open {
                    return;
                }
            }
        }
    }
}

/// Moves every queued span into `batch`, exporting each batch that fills; false once the
/// processor is gone (nothing more will arrive).
async fn drain<E: SpanExporter>(
    exporter: &E,
    rx: &mut mpsc::Receiver<SpanData>,
    batch: &mut Vec<SpanData>,
    cfg: &QueueConfig,
    stats: &ExportStats,
    failing: &mut bool,
) -> bool {
    loop {
        match rx.try_recv() {
            Ok(s) => {
                batch.push(s);
                if batch.len() >= cfg.max_batch {
                    export(exporter, batch, cfg, stats, failing).await;
                }
            }
            Err(mpsc::error::TryRecvError::Empty) => return true,
            Err(mpsc::error::TryRecvError::Disconnected) => return false,
        }
    }
}

/// Exports `batch` (emptying it) under the timeout; logs only when the receiver goes from
/// reachable to failing and back, not for every failed export.
async fn export<E: SpanExporter>(
    exporter: &E,
    batch: &mut Vec<SpanData>,
    cfg: &QueueConfig,
    stats: &ExportStats,
    failing: &mut bool,
) {
    if batch.is_empty() {
        return;
    }
    let spans = std::mem::replace(batch, Vec::with_capacity(cfg.max_batch));
    let n = spans.len() as u64;
    let result = match tokio::time::timeout(cfg.export_timeout, exporter.export(spans)).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err(format!("timed out after {:?}", cfg.export_timeout)),
    };
    stats.export(Signal::Traces, result.is_ok());
    match result {
        Ok(()) if *failing => {
            *failing = false;
            tracing::info!("OTLP span export works again");
        }
        Ok(()) => {}
        Err(e) => {
            stats.spans_dropped(DropReason::ExportFailed, n);
            if !*failing {
                *failing = true;
                tracing::warn!(error = %e, dropped = n, "OTLP span export failed; dropping spans until it works again");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{Span as _, Tracer, TracerProvider};
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use std::sync::Mutex;
    use std::time::Instant;

    /// Records exported span names; optionally never finishes an export.
    #[derive(Debug, Clone, Default)]
    struct Recorder {
        names: Arc<Mutex<Vec<String>>>,
        stall: bool,
        /// Set when a stalling export has begun.
        stuck: Arc<std::sync::atomic::AtomicBool>,
    }

    impl SpanExporter for Recorder {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            if self.stall {
                self.stuck.store(true, std::sync::atomic::Ordering::SeqCst);
                std::future::pending::<()>().await;
            }
            self.names
                .lock()
                .unwrap()
                .extend(batch.into_iter().map(|s| s.name.into_owned()));
            Ok(())
        }
    }

    fn provider(p: QueueingSpanProcessor) -> SdkTracerProvider {
        SdkTracerProvider::builder().with_span_processor(p).build()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn exports_in_batches_and_flushes() {
        let rec = Recorder::default();
        let stats = Arc::new(ExportStats::default());
        let cfg = QueueConfig {
            max_batch: 2,
            interval: Duration::from_secs(3600),
            ..QueueConfig::default()
        };
        let p = QueueingSpanProcessor::spawn(
            rec.clone(),
            cfg,
            stats.clone(),
            &tokio::runtime::Handle::current(),
        );
        let provider = provider(p);
        let tracer = provider.tracer("t");
        for name in ["a", "b", "c"] {
            tracer.start(name).end();
        }
        tokio::task::spawn_blocking(move || provider.force_flush().unwrap())
            .await
            .unwrap();
        assert_eq!(*rec.names.lock().unwrap(), vec!["a", "b", "c"]);
        assert_eq!(stats.exports(Signal::Traces, true), 2);
        assert_eq!(stats.dropped(DropReason::QueueFull), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stalled_exporter_drops_and_counts_without_blocking() {
        let rec = Recorder {
            stall: true,
            ..Recorder::default()
        };
        let stats = Arc::new(ExportStats::default());
        // The stuck export outlasts the burst below however slow the machine is, so nothing
        // leaves the queue meanwhile and the drop count is exact.
        let cfg = QueueConfig {
            capacity: 4,
            max_batch: 1,
            interval: Duration::from_millis(10),
            export_timeout: Duration::from_secs(3),
        };
        let stuck = rec.stuck.clone();
        let p = QueueingSpanProcessor::spawn(
            rec,
            cfg,
            stats.clone(),
            &tokio::runtime::Handle::current(),
        );
        let provider = provider(p);
        let tracer = provider.tracer("t");
        tracer.start("first").end();
        // Wait until the export task has picked up the first span and is stuck exporting it.
        let waiting = Instant::now();
        while !stuck.load(std::sync::atomic::Ordering::SeqCst) {
            assert!(
                waiting.elapsed() < Duration::from_secs(5),
                "export never began"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let started = Instant::now();
        for _ in 0..100 {
            tracer.start("x").end();
        }
        // Ending a span never waits for the exporter (a blocked end would take 3 s).
        let burst = started.elapsed();
        assert!(burst < Duration::from_secs(1), "{burst:?}");
        // 4 fit in the queue, the rest is dropped at once.
        assert_eq!(stats.dropped(DropReason::QueueFull), 96);
        // The stuck export times out and its span counts as dropped.
        let waiting = Instant::now();
        while stats.dropped(DropReason::ExportFailed) == 0 {
            assert!(
                waiting.elapsed() < Duration::from_secs(10),
                "export never timed out"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(stats.exports(Signal::Traces, false) >= 1);
    }
}
