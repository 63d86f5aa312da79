//! A real Prometheus (Debian's `/usr/bin/prometheus`) on loopback, scraping one target every
//! second, with its own configuration and data directory; queried through its HTTP API.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{free_port, http_get, wait_for};

/// The Prometheus server; Drop kills it and removes its directory.
#[derive(Debug)]
pub struct Prometheus {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts Prometheus scraping `target` (`/metrics`) every second; waits until ready.
    pub fn start(target: SocketAddr) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("telemetry-prom-")
            .tempdir_in("/var/tmp")
            .unwrap();
        let cfg = dir.path().join("prometheus.yml");
        std::fs::write(
            &cfg,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n\
                 scrape_configs:\n  - job_name: guest-agent\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let child = Command::new("/usr/bin/prometheus")
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("start /usr/bin/prometheus");
        let p = Self { child, addr, dir };
        let ready = wait_for(Duration::from_secs(30), || {
            http_get(p.addr, "/-/ready")
                .is_ok_and(|(s, _)| s == 200)
                .then_some(())
        });
        assert!(ready.is_some(), "prometheus did not become ready");
        // Target discovery reaches the scrape loop only after a few seconds: wait until two
        // scrapes happened, so the test's events fall between regular scrapes.
        let scraping = wait_for(Duration::from_secs(30), || {
            p.query("count_over_time(up[1m])")
                .first()
                .is_some_and(|n| *n >= 2.0)
                .then_some(())
        });
        assert!(scraping.is_some(), "prometheus does not scrape {target}");
        p
    }

    /// The values of an instant query, one per series.
    pub fn query(&self, expr: &str) -> Vec<f64> {
        let q: String = expr
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        let (status, body) = http_get(self.addr, &format!("/api/v1/query?query={q}")).unwrap();
        assert_eq!(status, 200, "{expr}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["data"]["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["value"][1].as_str().unwrap().parse().unwrap())
            .collect()
    }

    /// The single value of `expr`, once Prometheus has one (waits up to `limit`).
    pub fn value(&self, expr: &str, limit: Duration) -> Option<f64> {
        wait_for(limit, || self.query(expr).first().copied())
    }

    /// Waits until `expr` evaluates to `want`; returns the last value seen.
    pub fn wait_value(&self, expr: &str, want: f64, limit: Duration) -> Option<f64> {
        let mut last = None;
        wait_for(limit, || {
            last = self.query(expr).first().copied();
            (last == Some(want)).then_some(())
        });
        last
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = &self.dir;
    }
}
