//! The proxy's own series, per VM, kept across scrapes:
//!
//! | series | type | meaning |
//! |---|---|---|
//! | `guest_agent_up{vm}` | gauge | 1 when this scrape fetched the guest's metrics, else 0 |
//! | `guestctl_scrape_duration_seconds{vm}` | gauge | how long this scrape's fetch of the guest took |
//! | `guestctl_scrape_errors_total{vm}` | counter | fetches that failed (timeout, refused, bad exposition) |
//! | `guestctl_ping_rtt_seconds{vm}` | histogram | round trip of the agent's Ping, one per scrape |
//! | `guestctl_ping_errors_total{vm}` | counter | pings that failed or timed out |
//! | `guestctl_proxy_targets` | gauge | VMs configured |
//! | `guestctl_proxy_target_reloads_total{result}` | counter | targets-file reloads (SIGHUP) |
//!
//! Counters start at 0 when a VM is added, so `rate()` sees its first error; a VM removed
//! from the targets loses its series.

use std::collections::BTreeMap;

use super::exposition::{Family, MetricType, Sample};
use super::merge::own_family;

/// Bucket bounds of `guestctl_ping_rtt_seconds`: 100 us to 5 s.
pub const PING_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// A cumulative histogram.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: vec![0; PING_BUCKETS.len()],
            sum: 0.0,
            count: 0,
        }
    }
}

impl Histogram {
    /// Records one observation in seconds.
    pub fn observe(&mut self, v: f64) {
        for (i, bound) in PING_BUCKETS.iter().enumerate() {
            if v <= *bound {
                self.counts[i] += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }
}

/// What the proxy knows about one VM.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VmStats {
    /// The last fetch succeeded.
    pub up: bool,
    /// The last fetch's duration, seconds.
    pub scrape_seconds: f64,
    /// Failed fetches.
    pub scrape_errors: u64,
    /// Ping round trips.
    pub ping: Histogram,
    /// Failed pings.
    pub ping_errors: u64,
}

/// Every VM's stats plus the proxy-wide ones.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostStats {
    /// By VM name.
    pub vms: BTreeMap<String, VmStats>,
    /// Successful targets-file reloads.
    pub reloads_ok: u64,
    /// Failed targets-file reloads.
    pub reloads_failed: u64,
}

fn sample(name: &str, labels: &[(&str, &str)], value: impl ToString) -> Sample {
    Sample {
        name: name.to_string(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        value: value.to_string(),
        timestamp: None,
    }
}

/// Formats a float the way Prometheus reads it.
fn num(v: f64) -> String {
    if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_string()
    } else {
        format!("{v}")
    }
}

impl HostStats {
    /// Keeps exactly the VMs in `names` (new ones start at zero).
    pub fn retain_vms<'a>(&mut self, names: impl IntoIterator<Item = &'a str>) {
        let keep: std::collections::BTreeSet<&str> = names.into_iter().collect();
        self.vms.retain(|k, _| keep.contains(k.as_str()));
        for n in keep {
            self.vms.entry(n.to_string()).or_default();
        }
    }

    /// The proxy's families for one exposition.
    pub fn families(&self) -> Vec<Family> {
        let mut fams = vm_families(self.vms.iter().map(|(k, v)| (Some(k.as_str()), v)));
        fams.push(own_family(
            "guestctl_proxy_targets",
            MetricType::Gauge,
            "VMs the proxy is configured to scrape.",
            vec![sample("guestctl_proxy_targets", &[], self.vms.len())],
        ));
        fams.push(own_family(
            "guestctl_proxy_target_reloads_total",
            MetricType::Counter,
            "Reloads of the targets file (SIGHUP), by result.",
            vec![
                sample(
                    "guestctl_proxy_target_reloads_total",
                    &[("result", "success")],
                    self.reloads_ok,
                ),
                sample(
                    "guestctl_proxy_target_reloads_total",
                    &[("result", "error")],
                    self.reloads_failed,
                ),
            ],
        ));
        fams
    }

    /// The per-VM families of one VM without a `vm` label, for its own endpoint
    /// (`/vm/NAME/metrics`, where Prometheus adds `vm` from the service discovery labels).
    /// Empty for an unknown VM.
    pub fn vm_only_families(&self, vm: &str) -> Vec<Family> {
        match self.vms.get(vm) {
            Some(s) => vm_families(std::iter::once((None, s))),
            None => Vec::new(),
        }
    }
}

/// The per-VM families for `vms`; a `None` name leaves the `vm` label out.
fn vm_families<'a>(vms: impl Iterator<Item = (Option<&'a str>, &'a VmStats)>) -> Vec<Family> {
    let mut up = Vec::new();
    let mut dur = Vec::new();
    let mut errs = Vec::new();
    let mut ping = Vec::new();
    let mut ping_errs = Vec::new();
    for (vm, s) in vms {
        let l: Vec<(&str, &str)> = vm.map(|v| ("vm", v)).into_iter().collect();
        let with_le = |le: &str| -> Vec<(String, String)> {
            l.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .chain(std::iter::once(("le".to_string(), le.to_string())))
                .collect()
        };
        up.push(sample("guest_agent_up", &l, u8::from(s.up)));
        dur.push(sample(
            "guestctl_scrape_duration_seconds",
            &l,
            num(s.scrape_seconds),
        ));
        errs.push(sample("guestctl_scrape_errors_total", &l, s.scrape_errors));
        let bucket = |le: &str, count: u64| Sample {
            name: "guestctl_ping_rtt_seconds_bucket".to_string(),
            labels: with_le(le),
            value: count.to_string(),
            timestamp: None,
        };
        for (bound, count) in PING_BUCKETS.iter().zip(&s.ping.counts) {
            ping.push(bucket(&num(*bound), *count));
        }
        ping.push(bucket("+Inf", s.ping.count));
        ping.push(sample("guestctl_ping_rtt_seconds_sum", &l, num(s.ping.sum)));
        ping.push(sample("guestctl_ping_rtt_seconds_count", &l, s.ping.count));
        ping_errs.push(sample("guestctl_ping_errors_total", &l, s.ping_errors));
    }
    vec![
        own_family(
            "guest_agent_up",
            MetricType::Gauge,
            "1 when the proxy fetched the guest agent's metrics in this scrape, 0 when it failed or timed out.",
            up,
        ),
        own_family(
            "guestctl_scrape_duration_seconds",
            MetricType::Gauge,
            "How long the proxy's fetch of the guest's metrics took in this scrape.",
            dur,
        ),
        own_family(
            "guestctl_scrape_errors_total",
            MetricType::Counter,
            "Fetches of the guest's metrics that failed: connection, timeout, HTTP or RPC error, malformed exposition.",
            errs,
        ),
        own_family(
            "guestctl_ping_rtt_seconds",
            MetricType::Histogram,
            "Round-trip time of the guest agent's Ping RPC, measured by the proxy once per scrape.",
            ping,
        ),
        own_family(
            "guestctl_ping_errors_total",
            MetricType::Counter,
            "Pings of the guest agent that failed or timed out.",
            ping_errs,
        ),
]
}

#[cfg(test)]
mod tests {
    use super::super::exposition::{parse, write_family};
    use super::*;

    #[test]
    fn histogram_is_cumulative() {
        let mut h = Histogram::default();
        h.observe(0.0003);
        h.observe(0.002);
        h.observe(10.0);
        assert_eq!(h.count, 3);
        assert_eq!(h.counts[0], 0); // <= 100us
        assert_eq!(h.counts[2], 1); // <= 500us
        assert_eq!(h.counts[4], 2); // <= 2.5ms
        assert_eq!(*h.counts.last().unwrap(), 2); // <= 5s; the 10s one only in +Inf
        assert!((h.sum - 10.0023).abs() < 1e-9);
    }

    #[test]
    fn families_render_and_parse_back() {
        let mut st = HostStats::default();
        st.retain_vms(["a", "b"]);
        let a = st.vms.get_mut("a").unwrap();
        a.up = true;
        a.scrape_seconds = 0.012;
        a.ping.observe(0.0004);
        st.vms.get_mut("b").unwrap().scrape_errors = 2;
        let mut out = String::new();
        for f in st.families() {
            write_family(&mut out, &f);
        }
        assert!(out.contains("guest_agent_up{vm=\"a\"} 1\n"), "{out}");
        assert!(out.contains("guest_agent_up{vm=\"b\"} 0\n"));
        assert!(out.contains("guestctl_scrape_errors_total{vm=\"b\"} 2\n"));
        assert!(out.contains("guestctl_ping_rtt_seconds_bucket{vm=\"a\",le=\"0.0005\"} 1\n"));
        assert!(out.contains("guestctl_ping_rtt_seconds_bucket{vm=\"a\",le=\"+Inf\"} 1\n"));
        assert!(out.contains("guestctl_ping_rtt_seconds_count{vm=\"b\"} 0\n"));
        assert!(out.contains("guestctl_proxy_targets 2\n"));
        assert_eq!(parse(&out).unwrap().len(), 7);
        st.retain_vms(["b"]);
        assert_eq!(st.vms.len(), 1);
        assert_eq!(st.vms["b"].scrape_errors, 2, "kept VMs keep their counters");
        // One VM alone, without the vm label and without the proxy-wide series.
        let mut one = String::new();
        for f in st.vm_only_families("b") {
            write_family(&mut one, &f);
        }
        assert!(one.contains("guest_agent_up 0\n"), "{one}");
        assert!(one.contains("guestctl_scrape_errors_total 2\n"), "{one}");
        assert!(one.contains("guestctl_ping_rtt_seconds_bucket{le=\"+Inf\"} 0\n"));
        assert!(!one.contains("vm="));
        assert!(!one.contains("guestctl_proxy_targets"));
        assert_eq!(parse(&one).unwrap().len(), 5);
        assert!(st.vm_only_families("nope").is_empty());
    }
}
