//! The measuring instrument: the eBPF freeze observer, run in this process. It sees every
//! freeze and every writer stall on the machine, whoever froze, so all contenders are measured
//! the same way. Events are recorded in arrival order; a cycle is analysed from a mark taken
//! before its Quiesce.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use freeze_observer::{
    DevId, EbpfMode, LoadOptions, ObserverConfig, ObserverEvent, ObserverHandle,
};
use tokio::runtime::Runtime;
use tokio::sync::broadcast::error::RecvError;

use crate::error::BenchError;

/// The observer plus a task that appends every event to a shared log.
pub struct Recorder {
    handle: ObserverHandle,
    log: Arc<Mutex<Vec<ObserverEvent>>>,
    lagged: Arc<Mutex<u64>>,
    task: tokio::task::JoinHandle<()>,
}

impl Recorder {
    /// Loads the observer (required: without it there are no stall figures).
    pub fn start(rt: &Runtime) -> Result<Self, BenchError> {
        let config = ObserverConfig {
            mode: EbpfMode::Required,
            load: LoadOptions {
                probe_frozen: false,
                ..LoadOptions::default()
            },
            agent_pid: None,
        };
        let handle = rt
            .block_on(freeze_observer::start(config))
            .map_err(|e| BenchError::Observer(e.to_string()))?
            .ok_or_else(|| BenchError::Observer("not started".into()))?;
        let log = Arc::new(Mutex::new(Vec::new()));
        let lagged = Arc::new(Mutex::new(0));
        let mut rx = handle.subscribe();
        let task = {
            let log = log.clone();
            let lagged = lagged.clone();
            rt.spawn(async move {
                loop {
                    match rx.recv().await {
                        Ok(ev) => log.lock().unwrap_or_else(|p| p.into_inner()).push(ev),
                        Err(RecvError::Lagged(n)) => {
                            *lagged.lock().unwrap_or_else(|p| p.into_inner()) += n;
                        }
                        Err(RecvError::Closed) => return,
                    }
                }
            })
        };
        Ok(Self {
            handle,
            log,
            lagged,
            task,
        })
    }

    /// Which hooks the observer runs on (for the report).
    pub fn describe(&self) -> String {
        let s = self.handle.snapshot();
        format!(
            "{} ({}), writer stalls via {}",
            s.freeze_source.as_str(),
            s.freeze_source_reason,
            s.contention_hook.as_str()
        )
    }

    /// Events lost because the recorder fell behind (should stay 0).
    pub fn lagged(&self) -> u64 {
        *self.lagged.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A position in the log; [`Recorder::since`] returns what came after it.
    pub fn mark(&self) -> usize {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Events recorded after `mark`.
    pub fn since(&self, mark: usize) -> Vec<ObserverEvent> {
        let log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        log.get(mark..).map(<[_]>::to_vec).unwrap_or_default()
    }

    /// Waits (polling, on the calling thread) until the cycle that began at `mark` has
    /// thawed `expected` filesystems and every writer blocked on them has resumed; returns
    /// its analysis. After `timeout`, returns what there is.
    pub fn settle(
        &self,
        mark: usize,
        expected: usize,
        devs: &HashSet<DevId>,
        writers: &HashSet<u32>,
        timeout: Duration,
    ) -> (CycleObservation, bool) {
        let deadline = Instant::now() + timeout;
        loop {
            let obs = analyse(&self.since(mark), devs, writers);
            let done = obs.thawed >= expected && obs.resumed >= obs.blocked;
            if done || Instant::now() >= deadline {
                return (obs, done);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the observer saw in one cycle, restricted to this run's filesystems.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CycleObservation {
    /// Stalls of the benchmark's writer threads.
    pub writer_stalls: Vec<Duration>,
    /// Stalls of other tasks on our filesystems (kernel flushers, ...), not counted above.
    pub other_stalls: usize,
    /// Writers that started waiting (any task).
    pub blocked: usize,
    /// Writers that resumed (any task).
    pub resumed: usize,
    /// Freezes that completed.
    pub frozen: usize,
    /// Thaws.
    pub thawed: usize,
    /// First freeze completed -> last thaw, by kernel timestamps.
    pub window: Option<Duration>,
}

/// Reduces a cycle's events to the figures of [`CycleObservation`].
pub fn analyse(
    events: &[ObserverEvent],
    devs: &HashSet<DevId>,
    writers: &HashSet<u32>,
) -> CycleObservation {
    let mut obs = CycleObservation::default();
    let mut frozen_at: HashMap<DevId, u64> = HashMap::new();
    let mut thawed_at: Vec<u64> = Vec::new();
    for ev in events {
        match ev {
            ObserverEvent::Frozen { dev, freeze, .. } if devs.contains(dev) => {
                obs.frozen += 1;
                if let Some(ns) = freeze.since_monotonic_ns {
                    frozen_at.insert(*dev, ns);
                }
            }
            ObserverEvent::Thawed { dev, freeze, .. } if devs.contains(dev) => {
                obs.thawed += 1;
                if let (Some(since), Some(d)) = (frozen_at.get(dev), freeze.duration) {
                    thawed_at.push(since + d.as_nanos() as u64);
                }
            }
            ObserverEvent::WriterBlocked { dev, .. } if devs.contains(dev) => obs.blocked += 1,
            ObserverEvent::WriterResumed { dev, stall, .. } if devs.contains(dev) => {
                obs.resumed += 1;
                if writers.contains(&stall.task.tid) {
                    obs.writer_stalls.push(stall.duration);
                } else {
                    obs.other_stalls += 1;
                }
            }
            _ => {}
        }
    }
    if let (Some(first), Some(last)) = (frozen_at.values().min(), thawed_at.iter().max()) {
        obs.window = Some(Duration::from_nanos(last.saturating_sub(*first)));
    }
    obs
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::SystemTime;

    use freeze_observer::{
        BlockedWriter, CompletedFreeze, FreezeInfo, Origin, Stall, TaskRef, WriteLevel,
    };

    use super::*;

    fn dev(minor: u32) -> DevId {
        DevId { major: 7, minor }
    }

    fn task(tid: u32) -> TaskRef {
        TaskRef {
            pid: 1,
            tid,
            comm: "bench-writer".into(),
        }
    }

    fn frozen(minor: u32, ms: u64) -> ObserverEvent {
        ObserverEvent::Frozen {
            dev: dev(minor),
            mountpoint: None,
            freeze: FreezeInfo {
                since: None,
                since_monotonic_ns: Some(ms * 1_000_000),
                by: None,
                origin: Origin::Other,
            },
        }
    }

    fn thawed(minor: u32, after_ms: u64) -> ObserverEvent {
        ObserverEvent::Thawed {
            dev: dev(minor),
            mountpoint: None,
            freeze: CompletedFreeze {
                by: None,
                origin: Origin::Other,
                thawed_by: task(0),
                duration: Some(Duration::from_millis(after_ms)),
                thawed_at: SystemTime::now(),
            },
        }
    }

    fn stall(minor: u32, tid: u32, ms: u64) -> [ObserverEvent; 2] {
        [
            ObserverEvent::WriterBlocked {
                dev: dev(minor),
                mountpoint: Some(PathBuf::from("/x")),
                writer: BlockedWriter {
                    task: task(tid),
                    level: WriteLevel::Write,
                    since: SystemTime::now(),
                    since_monotonic_ns: 0,
                },
            },
            ObserverEvent::WriterResumed {
                dev: dev(minor),
                mountpoint: None,
                stall: Stall {
                    task: task(tid),
                    level: WriteLevel::Write,
                    duration: Duration::from_millis(ms),
                    ended: SystemTime::now(),
                },
            },
        ]
    }

    #[test]
    fn window_runs_from_first_freeze_to_last_thaw_of_our_filesystems_only() {
        let devs: HashSet<DevId> = [dev(1), dev(2)].into();
        let writers: HashSet<u32> = [10, 20].into();
        let mut events = vec![frozen(1, 1000), frozen(2, 1040), frozen(9, 900)];
        events.extend(stall(1, 10, 190));
        events.extend(stall(2, 20, 150));
        events.extend(stall(2, 99, 120)); // a kernel flusher, not one of our writers
        events.extend(stall(9, 10, 500)); // someone else's filesystem
        events.extend([thawed(1, 160), thawed(2, 130), thawed(9, 900)]);
        let obs = analyse(&events, &devs, &writers);
        assert_eq!(obs.frozen, 2);
        assert_eq!(obs.thawed, 2);
        assert_eq!((obs.blocked, obs.resumed), (3, 3));
        assert_eq!(
            obs.writer_stalls,
            vec![Duration::from_millis(190), Duration::from_millis(150)]
        );
        assert_eq!(obs.other_stalls, 1);
        // fs2 thawed at 1040 + 130 = 1170 ms; first freeze at 1000 ms.
        assert_eq!(obs.window, Some(Duration::from_millis(170)));
    }

    #[test]
    fn an_incomplete_cycle_has_no_window() {
        let devs: HashSet<DevId> = [dev(1)].into();
        let obs = analyse(&[frozen(1, 5)], &devs, &HashSet::new());
        assert_eq!((obs.frozen, obs.thawed, obs.window), (1, 0, None));
    }
}
