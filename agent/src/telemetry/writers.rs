//! The eBPF freeze observer (`freeze-observer`) as a metric source: gauges read its snapshot at
//! scrape time, and a task turns its events into counters and histograms (writer stalls,
//! freezes by origin, how long other processes kept a filesystem frozen). The thaw spans of the
//! freezer also read it, to summarise the writers a freeze blocked.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use freeze_observer::{ObserverEvent, ObserverHandle, ObserverSnapshot, Origin as ObsOrigin};
use tokio::sync::broadcast::error::RecvError;

use super::metrics::{Metrics, Origin, WriterSnapshot, WriterSource};

static OBSERVER: OnceLock<ObserverHandle> = OnceLock::new();

struct Source(ObserverHandle);

impl WriterSource for Source {
    fn snapshot(&self) -> WriterSnapshot {
        to_writer_snapshot(&self.0.snapshot())
    }
}

/// The gauges' view of an observer snapshot.
pub fn to_writer_snapshot(snap: &ObserverSnapshot) -> WriterSnapshot {
    WriterSnapshot {
        up: true,
        freeze_source: Some(snap.freeze_source.as_str().to_string()),
        blocked_writers: snap
            .filesystems
            .iter()
            .filter_map(|f| {
                let mp = f.mountpoint.as_ref()?;
                Some((mp.display().to_string(), f.blocked_writers.len() as u64))
            })
            .collect(),
    }
}

/// Feeds the eBPF metrics from `observer` for as long as it runs (call once, in the runtime).
pub fn watch(observer: ObserverHandle) {
    let metrics = super::metrics();
    metrics.observe_writers(Arc::new(Source(observer.clone())));
    if OBSERVER.set(observer.clone()).is_err() {
        return;
    }
    let mut events = observer.subscribe();
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(ev) => record(metrics, &observer, &ev),
                Err(RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "telemetry fell behind the eBPF observer's events; some stalls are not counted");
                }
                Err(RecvError::Closed) => break,
            }
        }
    });
}

/// Records one observer event.
pub fn record(metrics: &Metrics, observer: &ObserverHandle, ev: &ObserverEvent) {
    match ev {
        ObserverEvent::Frozen { freeze, .. } => match freeze.origin {
            ObsOrigin::Agent => metrics.record_freeze_observed(Origin::Agent),
            ObsOrigin::Other => metrics.record_freeze_observed(Origin::Other),
            // Found frozen when the observer started: not a freeze it saw happen.
            ObsOrigin::Unknown => {}
        },
        ObserverEvent::Thawed {
            dev,
            mountpoint: Some(mp),
            freeze,
        } if freeze.origin == ObsOrigin::Other => {
            // The agent's own freezes are timed by the freezer; here only the others'.
            if let Some(d) = freeze.duration {
                let snap = observer.snapshot();
                let fstype = snap
                    .filesystems
                    .iter()
                    .find(|f| f.dev == *dev)
                    .map_or("unknown", |f| f.fstype.as_str());
                metrics.record_freeze_duration(&mp.display().to_string(), fstype, Origin::Other, d);
            }
        }
        ObserverEvent::WriterResumed {
            mountpoint: Some(mp),
            stall,
            ..
        } => metrics.record_writer_stall(
            &mp.display().to_string(),
            stall.level.level() as u8,
            stall.duration,
        ),
        _ => {}
    }
}

/// Writers blocked on the filesystem at `mountpoint` right now, and the longest of their
/// waits: at thaw time that is every writer the freeze blocked. None without an observer.
pub fn blocked_now(mountpoint: &std::path::Path) -> Option<(usize, Duration)> {
    let snap = OBSERVER.get()?.snapshot();
    let fs = snap.filesystem(mountpoint)?;
    let now = SystemTime::now();
    let longest = fs
        .blocked_writers
        .iter()
        .map(|w| now.duration_since(w.since).unwrap_or_default())
        .max()
        .unwrap_or_default();
    Some((fs.blocked_writers.len(), longest))
}
