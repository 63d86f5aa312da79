//! Percentile summaries of latency samples (nearest-rank, so every reported value is a
//! sample that was actually measured).

use std::time::Duration;

/// p50 / p99 / max (and count) of a set of durations.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// Number of samples.
    pub n: usize,
    /// Median (nearest rank).
    pub p50: Duration,
    /// 99th percentile (nearest rank).
    pub p99: Duration,
    /// Largest sample.
    pub max: Duration,
}

impl Summary {
    /// Summarises `samples`; `None` when there are none.
    pub fn of(samples: &[Duration]) -> Option<Self> {
        if samples.is_empty() {
            return None;
        }
        let mut sorted = samples.to_vec();
        sorted.sort_unstable();
        Some(Self {
            n: sorted.len(),
            p50: percentile(&sorted, 50.0),
            p99: percentile(&sorted, 99.0),
            max: *sorted.last().expect("non-empty"),
        })
    }
}

/// Nearest-rank percentile of an ascending, non-empty slice: the smallest sample with at
/// least `q` percent of the samples at or below it.
pub fn percentile(sorted: &[Duration], q: f64) -> Duration {
    assert!(!sorted.is_empty(), "percentile of no samples");
    let rank = ((q / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Milliseconds with a precision that suits the size (`0.42`, `12.3`, `512`).
pub fn ms(d: Duration) -> String {
    let v = d.as_secs_f64() * 1e3;
    if v < 10.0 {
        format!("{v:.2}")
    } else if v < 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}

/// `a / b` of two durations as a ratio, `None` when `b` is zero.
pub fn ratio(a: Duration, b: Duration) -> Option<f64> {
    (!b.is_zero()).then(|| a.as_secs_f64() / b.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms_list(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|&m| Duration::from_millis(m)).collect()
    }

    #[test]
    fn nearest_rank_percentiles() {
        let s = Summary::of(&ms_list(&(1..=100).collect::<Vec<_>>())).unwrap();
        assert_eq!(s.n, 100);
        assert_eq!(s.p50, Duration::from_millis(50));
        assert_eq!(s.p99, Duration::from_millis(99));
        assert_eq!(s.max, Duration::from_millis(100));
        // Unsorted input, 160 samples: p99 is the second largest.
        let mut v: Vec<u64> = (1..=160).rev().collect();
        v.swap(3, 90);
        let s = Summary::of(&ms_list(&v)).unwrap();
        assert_eq!(s.p99, Duration::from_millis(159));
        assert_eq!(s.p50, Duration::from_millis(80));
    }

    #[test]
    fn single_and_empty() {
        assert!(Summary::of(&[]).is_none());
        let s = Summary::of(&ms_list(&[7])).unwrap();
        assert_eq!(
            (s.p50, s.p99, s.max),
            (s.max, s.max, Duration::from_millis(7))
        );
    }

    #[test]
    fn formatting_and_ratio() {
        assert_eq!(ms(Duration::from_micros(420)), "0.42");
        assert_eq!(ms(Duration::from_micros(12_340)), "12.3");
        assert_eq!(ms(Duration::from_millis(512)), "512");
        assert_eq!(ratio(Duration::from_millis(5), Duration::ZERO), None);
        let r = ratio(Duration::from_millis(25), Duration::from_millis(500)).unwrap();
        assert!((r - 0.05).abs() < 1e-9);
    }
}
