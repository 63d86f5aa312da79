//! Round-trip times of many RPCs, summarised as count, median, p99 and maximum, so soak and
//! hang tests can print and bound them.

use std::fmt;
use std::time::Duration;

/// Collected round-trip times.
#[derive(Debug, Clone, Default)]
pub struct Latencies {
    samples: Vec<Duration>,
}

impl Latencies {
    /// Records one round trip.
    pub fn push(&mut self, d: Duration) {
        self.samples.push(d);
    }

    /// Adds every sample of `other`.
    pub fn merge(&mut self, other: &Latencies) {
        self.samples.extend_from_slice(&other.samples);
    }

    /// Number of samples.
    pub fn count(&self) -> usize {
        self.samples.len()
    }

    /// The `p`-th percentile (0..=100), zero without samples.
    pub fn percentile(&self, p: f64) -> Duration {
        if self.samples.is_empty() {
            return Duration::ZERO;
        }
        let mut s = self.samples.clone();
        s.sort_unstable();
        let rank = ((p / 100.0) * (s.len() - 1) as f64).round() as usize;
        s[rank.min(s.len() - 1)]
    }

    /// The largest sample, zero without samples.
    pub fn max(&self) -> Duration {
        self.samples.iter().copied().max().unwrap_or_default()
    }
}

impl fmt::Display for Latencies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        write!(
            f,
            "n={} p50={:.2}ms p99={:.2}ms max={:.2}ms",
            self.count(),
            ms(self.percentile(50.0)),
            ms(self.percentile(99.0)),
            ms(self.max())
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_set() {
        let mut l = Latencies::default();
        for ms in 1..=100 {
            l.push(Duration::from_millis(ms));
        }
        assert_eq!(l.count(), 100);
        assert_eq!(l.percentile(0.0), Duration::from_millis(1));
        assert_eq!(l.percentile(50.0), Duration::from_millis(51));
        assert_eq!(l.percentile(99.0), Duration::from_millis(99));
        assert_eq!(l.max(), Duration::from_millis(100));
        assert!(l.to_string().starts_with("n=100 p50=51.00ms"), "{l}");
    }

    #[test]
    fn empty_is_zero() {
        let l = Latencies::default();
        assert_eq!(l.percentile(99.0), Duration::ZERO);
        assert_eq!(l.max(), Duration::ZERO);
    }
}
