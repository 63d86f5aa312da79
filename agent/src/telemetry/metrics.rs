//! The one place every metric of the agent is defined (name, unit, labels, help text).
//!
//! # One set of instruments, two exports
//!
//! The instruments are OpenTelemetry SDK instruments. A single `SdkMeterProvider` feeds two
//! readers: `opentelemetry-prometheus`, which turns them into a `prometheus` crate registry for
//! `/metrics` and the `GetMetrics` RPC, and (with `--otlp-endpoint`) a periodic OTLP reader.
//! Both readers see the same aggregations, so the Prometheus and the OTLP numbers cannot drift
//! apart, which a second, hand-kept set of `prometheus` instruments could. The bridge's name
//! mapping is the OpenTelemetry-to-Prometheus compatibility rule: dots become underscores, the
//! unit becomes a suffix (`s` -> `_seconds`, `By` -> `_bytes`), monotonic counters get `_total`.
//! So every instrument here is named the OpenTelemetry way *without* a unit suffix, and its
//! Prometheus name is spelled next to it. The bridge's `otel_scope_*` labels and its
//! `target_info` family are switched off (see [`super::exposition`]); `guest_agent_build_info`
//! carries the version instead. The tests in `agent/tests/telemetry_docs.rs` keep
//! `docs/metrics.md` and the exposition in agreement.
//!
//! Label values come from closed enums ([`Origin`], [`FsOp`], [`OpResult`], [`Phase`]) or from
//! bounded sets (mountpoints and filesystem types of the guest, gRPC methods that exist);
//! never a pid, a command name or a request-controlled string.
//!
//! Gauges that describe state (what is frozen, blocked writers, eBPF status, process figures)
//! are observable instruments: their callbacks read non-blocking snapshots at collection time
//! (the freezer's [`FreezeStatus`], from
//! [`Freezer::status`](crate::freezer::Freezer::status), takes the state mutex for a field copy
//! and never waits for an ioctl), so a scrape never waits for a freeze in progress.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::metrics::{Counter, Histogram, Meter, ObservableCounter, ObservableGauge};
use opentelemetry::KeyValue;

use super::process;
use crate::freezer::FreezeStatus;

/// Histogram buckets for freeze windows, phases and writer stalls: 1 ms up to 10 minutes.
pub const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0, 600.0,
];

/// Histogram buckets for gRPC handling time: 0.5 ms up to 1 minute (Quiesce may wait for the
/// kernel for up to the operation timeout).
pub const RPC_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// Who froze a filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// This agent (Quiesce).
    Agent,
    /// Anyone else (fsfreeze, LVM/dm, suspend), seen by the eBPF observer.
    Other,
}

impl Origin {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Agent => "agent",
            Origin::Other => "other",
        }
    }
}

/// A per-filesystem freezer operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsOp {
    /// FIFREEZE.
    Freeze,
    /// FITHAW.
    Thaw,
}

impl FsOp {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            FsOp::Freeze => "freeze",
            FsOp::Thaw => "thaw",
        }
    }
}

/// How a per-filesystem operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpResult {
    /// The ioctl succeeded.
    Success,
    /// The ioctl failed.
    Error,
    /// Nothing to do: not freezable (EOPNOTSUPP), frozen by someone else (EBUSY), or no longer
    /// frozen at thaw (EINVAL).
    Skipped,
    /// A thaw done by the watchdog because no Thaw arrived in time.
    Watchdog,
}

impl OpResult {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            OpResult::Success => "success",
            OpResult::Error => "error",
            OpResult::Skipped => "skipped",
            OpResult::Watchdog => "watchdog",
        }
    }
}

/// A phase of Quiesce or Thaw, as the freezer reports it; [`Phase::as_str`] is the `phase`
/// label value and the span name suffix.
pub use crate::freezer::events::Phase;

/// Why finished spans were not delivered to the OTLP receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum DropReason {
    /// The bounded export queue was full (receiver slow or down).
    QueueFull,
    /// The export failed or timed out.
    ExportFailed,
}

impl DropReason {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::QueueFull => "queue_full",
            DropReason::ExportFailed => "export_failed",
        }
    }
}

/// Which OTLP signal an export carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Signal {
    /// Spans.
    Traces,
    /// Metric points.
    Metrics,
}

impl Signal {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Traces => "traces",
            Signal::Metrics => "metrics",
        }
    }
}

/// What the eBPF freeze observer reports at scrape time (see [`WriterSource`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriterSnapshot {
    /// True when the eBPF programs are loaded and attached.
    pub up: bool,
    /// Which kernel hook reports freezes (e.g. `fexit`, `ioctl`); `None` when not up.
    pub freeze_source: Option<String>,
    /// Writers blocked right now, per mountpoint of a frozen filesystem.
    pub blocked_writers: Vec<(String, u64)>,
}

/// A non-blocking view of the eBPF freeze observer, read by the metric callbacks.
pub trait WriterSource: Send + Sync {
    /// The current state; must return quickly and never wait for a freeze.
    fn snapshot(&self) -> WriterSnapshot;
}

/// Reads the freezer's state at collection time; must not wait for an ioctl.
type StatusSource = Box<dyn Fn() -> FreezeStatus + Send + Sync>;

/// What the callbacks read: set once the parts of the agent exist.
#[derive(Default)]
struct Sources {
    freezer: OnceLock<StatusSource>,
    writers: OnceLock<Arc<dyn WriterSource>>,
    /// Unix time of the last Ping as f64 bits; 0 = never.
    last_ping: AtomicU64,
    /// Every (mountpoint, fstype) the agent ever held frozen, so `guest_fs_frozen` drops to 0
    /// after a thaw instead of vanishing.
    seen_frozen: Mutex<BTreeSet<(String, String)>>,
    /// Every mountpoint that ever had blocked writers (same reason).
    seen_blocked: Mutex<BTreeSet<String>>,
}

/// Every instrument of the agent. Cheap to use from any thread; recording never blocks.
pub struct Metrics {
    freeze_duration: Histogram<f64>,
    freeze_operations: Counter<u64>,
    phase_duration: Histogram<f64>,
    writer_stall: Histogram<f64>,
    stalled_writers: Counter<u64>,
    freezes_observed: Counter<u64>,
    grpc_requests: Counter<u64>,
    grpc_duration: Histogram<f64>,
    ping_requests: Counter<u64>,
    sources: Arc<Sources>,
    _gauges: Vec<ObservableGauge<f64>>,
    _counters: Vec<ObservableCounter<f64>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl Metrics {
    /// Creates every instrument on `meter`; the OTLP pipeline's own counts are read from
    /// `export`. Counters with closed label sets start at 0 for
    /// every combination, so `rate()` and `increase()` see the first event.
    pub fn new(meter: &Meter, export: Arc<ExportStats>) -> Self {
        let sources = Arc::new(Sources::default());
        let h = |name: &'static str, help: &'static str, buckets: &[f64]| {
            meter
                .f64_histogram(name)
                .with_unit("s")
                .with_description(help)
                .with_boundaries(buckets.to_vec())
                .build()
        };
        let c = |name: &'static str, help: &'static str| {
            meter.u64_counter(name).with_description(help).build()
        };
        let m = Self {
            // guest_fs_freeze_duration_seconds{mountpoint,fstype,origin}
            freeze_duration: h(
                "guest.fs.freeze.duration",
                "How long a filesystem stayed frozen, from the end of FIFREEZE to the end of FITHAW.",
                DURATION_BUCKETS,
            ),
            // guest_fs_freeze_operations_total{op,result}
            freeze_operations: c(
                "guest.fs.freeze.operations",
                "Per-filesystem FIFREEZE and FITHAW calls by the agent, by operation and result.",
            ),
            // guest_freeze_phase_duration_seconds{phase}
            phase_duration: h(
                "guest.freeze.phase.duration",
                "Duration of the phases of Quiesce (presync, freeze) and Thaw (thaw).",
                DURATION_BUCKETS,
            ),
            // guest_fs_writer_stall_seconds{mountpoint,level}
            writer_stall: h(
                "guest.fs.writer.stall",
                "How long a writer slept on a frozen filesystem (eBPF), by freeze level.",
                DURATION_BUCKETS,
            ),
            // guest_fs_stalled_writers_total{mountpoint}
            stalled_writers: c(
                "guest.fs.stalled_writers",
                "Writers that slept on a frozen filesystem until it was thawed (eBPF).",
            ),
            // guest_fs_freezes_observed_total{origin}
            freezes_observed: c(
                "guest.fs.freezes.observed",
                "Filesystem freezes seen by the eBPF observer, by who froze.",
            ),
            // guest_grpc_server_requests_total{service,method,code}
            grpc_requests: c(
                "guest.grpc.server.requests",
                "gRPC calls handled, by service, method and status code.",
            ),
            // guest_grpc_server_duration_seconds{service,method}
            grpc_duration: h(
                "guest.grpc.server.duration",
                "Time from a gRPC request's arrival to the end of its response.",
                RPC_BUCKETS,
            ),
            // guest_ping_requests_total
            ping_requests: c("guest.ping.requests", "Ping calls answered."),
            _gauges: observable_gauges(meter, &sources),
            _counters: observable_counters(meter, &sources, export),
            sources,
        };
        for (op, results) in [
            (
                FsOp::Freeze,
                &[OpResult::Success, OpResult::Error, OpResult::Skipped][..],
            ),
            (
                FsOp::Thaw,
                &[
                    OpResult::Success,
                    OpResult::Error,
                    OpResult::Skipped,
                    OpResult::Watchdog,
                ][..],
            ),
        ] {
            for r in results {
                m.freeze_operations.add(0, &op_attrs(op, *r));
            }
        }
        for o in [Origin::Agent, Origin::Other] {
            m.freezes_observed
                .add(0, &[KeyValue::new("origin", o.as_str())]);
        }
        m.ping_requests.add(0, &[]);
        m
    }

    /// Lets the state gauges read the freezer's state through `status` (call once; later calls
    /// are ignored). `status` runs at every collection, so it must return at once, e.g.
    /// [`Freezer::status`](crate::freezer::Freezer::status).
    pub fn observe_freezer(&self, status: impl Fn() -> FreezeStatus + Send + Sync + 'static) {
        let _ = self.sources.freezer.set(Box::new(status));
    }

    /// Lets the eBPF gauges read the freeze observer (call once; later calls are ignored).
    pub fn observe_writers(&self, source: Arc<dyn WriterSource>) {
        let _ = self.sources.writers.set(source);
    }

    /// A filesystem was frozen for `frozen` and is now thawed.
    pub fn record_freeze_duration(
        &self,
        mountpoint: &str,
        fstype: &str,
        origin: Origin,
        frozen: Duration,
    ) {
        self.freeze_duration.record(
            frozen.as_secs_f64(),
            &[
                KeyValue::new("mountpoint", mountpoint.to_owned()),
                KeyValue::new("fstype", fstype.to_owned()),
                KeyValue::new("origin", origin.as_str()),
            ],
        );
    }

    /// One FIFREEZE or FITHAW issued by the agent ended with `result`.
    pub fn record_fs_operation(&self, op: FsOp, result: OpResult) {
        self.freeze_operations.add(1, &op_attrs(op, result));
    }

    /// A phase of Quiesce or Thaw took `took`.
    pub fn record_phase(&self, phase: Phase, took: Duration) {
        self.phase_duration.record(
            took.as_secs_f64(),
            &[KeyValue::new("phase", phase.as_str())],
        );
    }

    /// A writer slept `stalled` on the frozen filesystem at `mountpoint`, at freeze `level`
    /// (1 = write, 2 = page fault, 3 = fs internal).
    pub fn record_writer_stall(&self, mountpoint: &str, level: u8, stalled: Duration) {
        let mp = KeyValue::new("mountpoint", mountpoint.to_owned());
        self.writer_stall.record(
            stalled.as_secs_f64(),
            &[mp.clone(), KeyValue::new("level", level_name(level))],
        );
        self.stalled_writers.add(1, &[mp]);
    }

    /// The eBPF observer saw a filesystem being frozen.
    pub fn record_freeze_observed(&self, origin: Origin) {
        self.freezes_observed
            .add(1, &[KeyValue::new("origin", origin.as_str())]);
    }

    /// A gRPC call ended with status `code` after `took`.
    pub fn record_grpc(&self, service: &str, method: &str, code: &'static str, took: Duration) {
        let attrs = [
            KeyValue::new("service", grpc_label(service)),
            KeyValue::new("method", grpc_label(method)),
            KeyValue::new("code", code),
        ];
        self.grpc_duration.record(took.as_secs_f64(), &attrs[..2]);
        self.grpc_requests.add(1, &attrs);
    }

    /// A Ping was answered now.
    pub fn record_ping(&self) {
        self.ping_requests.add(1, &[]);
        self.sources
            .last_ping
            .store(unix_now().to_bits(), Ordering::Relaxed);
    }
}

/// Service and method names the agent serves (and `other`, for methods that do not exist):
/// their label values need no allocation per call. A unit test checks the list against the
/// served services' descriptors, so a new RPC cannot be left out.
const GRPC_NAMES: [&str; 15] = [
    "boxlite.v1.Guest",
    "Init",
    "Ping",
    "Shutdown",
    "Quiesce",
    "Thaw",
    "FreezeStatus",
    "boxlite.v1.GuestMetrics",
    "GetMetrics",
    "grpc.health.v1.Health",
    "Check",
    "Watch",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
    "ServerReflectionInfo",
];

/// `name` as a label value: a static string for the names in [`GRPC_NAMES`], else a copy.
fn grpc_label(name: &str) -> opentelemetry::Value {
    match GRPC_NAMES.iter().find(|n| **n == name) {
        Some(n) => opentelemetry::Value::from(*n),
        None if name == "other" => opentelemetry::Value::from("other"),
        None => opentelemetry::Value::from(name.to_owned()),
    }
}

/// Counts kept by the OTLP pipeline itself (which cannot hold instruments of the meter
/// provider it is part of); read by observable counters at collection time.
#[derive(Debug, Default)]
pub struct ExportStats {
    spans_dropped: [AtomicU64; 2],
    /// [signal][ok]
    exports: [[AtomicU64; 2]; 2],
}

impl ExportStats {
    /// `n` finished spans were dropped for `reason`.
    pub fn spans_dropped(&self, reason: DropReason, n: u64) {
        self.spans_dropped[reason as usize].fetch_add(n, Ordering::Relaxed);
    }

    /// One OTLP export of `signal` ended (`ok`: accepted by the receiver).
    pub fn export(&self, signal: Signal, ok: bool) {
        self.exports[signal as usize][ok as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Spans dropped so far for `reason`.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.spans_dropped[reason as usize].load(Ordering::Relaxed)
    }

    /// Exports of `signal` so far that ended `ok` (or not).
    pub fn exports(&self, signal: Signal, ok: bool) -> u64 {
        self.exports[signal as usize][ok as usize].load(Ordering::Relaxed)
    }
}

fn op_attrs(op: FsOp, result: OpResult) -> [KeyValue; 2] {
    [
        KeyValue::new("op", op.as_str()),
        KeyValue::new("result", result.as_str()),
    ]
}

/// The `level` label: the kernel's `SB_FREEZE_*` level a writer waited at.
fn level_name(level: u8) -> &'static str {
    match level {
        1 => "write",
        2 => "pagefault",
        3 => "fs",
        _ => "other",
    }
}

/// The state gauges, each read from a snapshot at collection time.
fn observable_gauges(meter: &Meter, sources: &Arc<Sources>) -> Vec<ObservableGauge<f64>> {
    let mut out = Vec::new();
    let s = sources.clone();
    // guest_fs_frozen_filesystems
    out.push(
        meter
            .f64_observable_gauge("guest.fs.frozen.filesystems")
            .with_description("Filesystems the agent holds frozen now.")
            .with_callback(move |o| {
                let n = s.freezer.get().map_or(0, |status| status().frozen.len());
                o.observe(n as f64, &[]);
            })
            .build(),
    );
    let s = sources.clone();
    // guest_fs_frozen{mountpoint,fstype}
    out.push(
        meter
            .f64_observable_gauge("guest.fs.frozen")
            .with_description(
                "1 while the agent holds the filesystem frozen, 0 after it was thawed.",
            )
            .with_callback(move |o| {
                let Some(status) = s.freezer.get() else {
                    return;
                };
                let now: BTreeSet<(String, String)> = status()
                    .frozen
                    .iter()
                    .map(|i| (i.fs.mount_point.display().to_string(), i.fs.fstype.clone()))
                    .collect();
                let mut seen = s.seen_frozen.lock().unwrap_or_else(|p| p.into_inner());
                seen.extend(now.iter().cloned());
                for key in seen.iter() {
                    let v = if now.contains(key) { 1.0 } else { 0.0 };
                    o.observe(
                        v,
                        &[
                            KeyValue::new("mountpoint", key.0.clone()),
                            KeyValue::new("fstype", key.1.clone()),
                        ],
                    );
                }
            })
            .build(),
    );
    let s = sources.clone();
    // guest_fs_blocked_writers{mountpoint}
    out.push(
        meter
            .f64_observable_gauge("guest.fs.blocked_writers")
            .with_description("Writers blocked right now on a frozen filesystem (eBPF).")
            .with_callback(move |o| {
                let Some(w) = s.writers.get() else { return };
                let snap = w.snapshot();
                let mut seen = s.seen_blocked.lock().unwrap_or_else(|p| p.into_inner());
                seen.extend(snap.blocked_writers.iter().map(|(m, _)| m.clone()));
                for mp in seen.iter() {
                    let n = snap
                        .blocked_writers
                        .iter()
                        .filter(|(m, _)| m == mp)
                        .map(|(_, n)| *n)
                        .sum::<u64>();
                    o.observe(n as f64, &[KeyValue::new("mountpoint", mp.clone())]);
                }
            })
            .build(),
    );
    let s = sources.clone();
    // guest_ebpf_up
    out.push(
        meter
            .f64_observable_gauge("guest.ebpf.up")
            .with_description("1 when the eBPF freeze observer is loaded and attached, else 0.")
            .with_callback(move |o| {
                let up = s.writers.get().is_some_and(|w| w.snapshot().up);
                o.observe(if up { 1.0 } else { 0.0 }, &[]);
            })
            .build(),
    );
    let s = sources.clone();
    // guest_ebpf_freeze_source_info{source}
    out.push(
        meter
            .f64_observable_gauge("guest.ebpf.freeze_source_info")
            .with_description(
                "Which kernel hook reports freezes to the eBPF observer (none when it is down).",
            )
            .with_callback(move |o| {
                let source = s
                    .writers
                    .get()
                    .and_then(|w| w.snapshot().freeze_source)
                    .unwrap_or_else(|| "none".to_string());
                o.observe(1.0, &[KeyValue::new("source", source)]);
            })
            .build(),
    );
    let s = sources.clone();
    // guest_ping_last_timestamp_seconds
    out.push(
        meter
            .f64_observable_gauge("guest.ping.last_timestamp")
            .with_unit("s")
            .with_description("Unix time of the last Ping answered (0: none yet).")
            .with_callback(move |o| {
                o.observe(f64::from_bits(s.last_ping.load(Ordering::Relaxed)), &[]);
            })
            .build(),
    );
    // guest_agent_build_info{version}
    out.push(
        meter
            .f64_observable_gauge("guest.agent.build_info")
            .with_description("Always 1; the labels describe the running agent.")
            .with_callback(|o| {
                o.observe(1.0, &[KeyValue::new("version", env!("CARGO_PKG_VERSION"))])
            })
            .build(),
    );
    // process_resident_memory_bytes, process_virtual_memory_bytes, process_open_fds,
    // process_max_fds, process_threads, process_start_time_seconds
    let proc_gauge = |name: &'static str,
                      unit: &'static str,
                      help: &'static str,
                      read: fn(&process::Sample) -> Option<f64>| {
        meter
            .f64_observable_gauge(name)
            .with_unit(unit)
            .with_description(help)
            .with_callback(move |o| {
                if let Some(v) = process::Sample::read().as_ref().and_then(read) {
                    o.observe(v, &[]);
                }
            })
            .build()
    };
    out.push(proc_gauge(
        "process.resident_memory",
        "By",
        "Resident memory size of the agent.",
        |s| Some(s.resident_bytes),
    ));
    out.push(proc_gauge(
        "process.virtual_memory",
        "By",
        "Virtual memory size of the agent.",
        |s| Some(s.virtual_bytes),
    ));
    out.push(proc_gauge(
        "process.open_fds",
        "",
        "Open file descriptors of the agent.",
        |s| s.open_fds,
    ));
    out.push(proc_gauge(
        "process.max_fds",
        "",
        "Soft limit on open file descriptors of the agent.",
        |s| s.max_fds,
    ));
    out.push(proc_gauge(
        "process.threads",
        "",
        "Threads of the agent.",
        |s| Some(s.threads),
    ));
    out.push(proc_gauge(
        "process.start_time",
        "s",
        "Start time of the agent since the Unix epoch.",
        |s| s.start_time_unix,
    ));
    out
}

/// Counters kept elsewhere and read at collection time.
fn observable_counters(
    meter: &Meter,
    sources: &Arc<Sources>,
    export: Arc<ExportStats>,
) -> Vec<ObservableCounter<f64>> {
    let s = sources.clone();
    let e = export.clone();
    vec![
        // guest_telemetry_spans_dropped_total{reason}
        meter
            .f64_observable_counter("guest.telemetry.spans.dropped")
            .with_description(
                "Finished spans not delivered to the OTLP receiver (queue full or export failed).",
            )
            .with_callback(move |o| {
                for r in [DropReason::QueueFull, DropReason::ExportFailed] {
                    o.observe(e.dropped(r) as f64, &[KeyValue::new("reason", r.as_str())]);
                }
            })
            .build(),
        // guest_telemetry_exports_total{signal,result}
        meter
            .f64_observable_counter("guest.telemetry.exports")
            .with_description("OTLP export attempts, by signal and result.")
            .with_callback(move |o| {
                for signal in [Signal::Traces, Signal::Metrics] {
                    for ok in [true, false] {
                        o.observe(
                            export.exports(signal, ok) as f64,
                            &[
                                KeyValue::new("signal", signal.as_str()),
                                KeyValue::new("result", if ok { "success" } else { "error" }),
                            ],
                        );
                    }
                }
            })
            .build(),
        // guest_fs_watchdog_thaws_total
        meter
            .f64_observable_counter("guest.fs.watchdog.thaws")
            .with_description("Times the watchdog thawed because no Thaw arrived in time.")
            .with_callback(move |o| {
                let n = s.freezer.get().map_or(0, |status| status().watchdog_thaws);
                o.observe(n as f64, &[]);
            })
            .build(),
        // process_cpu_seconds_total
        meter
            .f64_observable_counter("process.cpu")
            .with_unit("s")
            .with_description("User and system CPU time of the agent.")
            .with_callback(|o| {
                if let Some(s) = process::Sample::read() {
                    o.observe(s.cpu_seconds, &[]);
                }
            })
            .build(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_the_documented_ones() {
        assert_eq!(Origin::Other.as_str(), "other");
        assert_eq!(OpResult::Watchdog.as_str(), "watchdog");
        assert_eq!(Phase::Presync.as_str(), "presync");
        assert_eq!(level_name(1), "write");
        assert_eq!(level_name(2), "pagefault");
        assert_eq!(level_name(9), "other");
    }

    #[test]
    fn buckets_span_one_millisecond_to_minutes_and_increase() {
        assert_eq!(DURATION_BUCKETS[0], 0.001);
        assert!(*DURATION_BUCKETS.last().unwrap() >= 300.0);
        assert!(DURATION_BUCKETS.windows(2).all(|w| w[0] < w[1]));
        assert!(RPC_BUCKETS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn grpc_labels_of_served_methods_are_the_static_names() {
        let local = String::from("Ping");
        let opentelemetry::Value::String(v) = grpc_label(&local) else {
            panic!("not a string")
        };
        assert_eq!(v.as_str(), "Ping");
        assert_eq!(
            v.as_str().as_ptr(),
            GRPC_NAMES[2].as_ptr(),
            "copied, not the static name"
        );
        let opentelemetry::Value::String(v) = grpc_label("NotServed") else {
            panic!("not a string")
        };
        assert_eq!(v.as_str(), "NotServed");
    }

    #[test]
    fn grpc_names_are_exactly_the_served_services_and_methods() {
        use prost::Message;
        let mut served = BTreeSet::new();
        for fds in [
            guest_proto::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
        ] {
            let set = prost_types::FileDescriptorSet::decode(fds).unwrap();
            for file in set.file {
                for svc in &file.service {
                    served.insert(format!("{}.{}", file.package(), svc.name()));
                    served.extend(svc.method.iter().map(|m| m.name().to_owned()));
                }
            }
        }
        let listed: BTreeSet<String> = GRPC_NAMES.iter().map(|s| s.to_string()).collect();
        assert_eq!(listed, served);
    }
}
