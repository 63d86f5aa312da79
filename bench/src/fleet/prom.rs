//! The real Prometheus of the benchmark (Debian's /usr/bin/prometheus, its own config and
//! data directory, on 127.0.0.1) and a small blocking client for its HTTP API.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::procs::Child;

/// GET `path` on 127.0.0.1:`port` (HTTP/1.0, so the body ends with the connection);
/// returns status and body.
pub fn http_get(port: u16, path: &str) -> Result<(u16, String), String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(|e| e.to_string())?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no HTTP head in {:?}", &text[..text.len().min(200)]))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("bad status line {head:?}"))?;
    Ok((status, body.to_string()))
}

/// Percent-encodes a query parameter.
pub fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A running Prometheus.
#[derive(Debug)]
pub struct Prometheus {
    _child: Child,
    /// Its HTTP port on 127.0.0.1.
    pub port: u16,
}

impl Prometheus {
    /// Starts Prometheus with `config` in `dir` and waits until it is ready.
    pub fn start(dir: &Path, config: &str) -> Result<Self, String> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let file = dir.join("prometheus.yml");
        std::fs::write(&file, config).map_err(|e| e.to_string())?;
        let mut cmd = Command::new("/usr/bin/prometheus");
        cmd.arg(format!("--config.file={}", file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=error")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        let child = Child::spawn(cmd, "prometheus")?;
        let p = Self {
            _child: child,
            port,
        };
        let t0 = Instant::now();
        while !matches!(http_get(port, "/-/ready"), Ok((200, _))) {
            if t0.elapsed() > Duration::from_secs(60) {
                return Err("prometheus not ready within 60 s".into());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(p)
    }

    /// An instant query; the `data.result` array.
    pub fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let (status, body) = http_get(self.port, &format!("/api/v1/query?query={}", encode(expr)))?;
        let v: Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
        if status != 200 || v["status"] != "success" {
            return Err(format!("query {expr}: {status} {body}"));
        }
        Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
    }

    /// The first value of an instant query, if any.
    pub fn scalar(&self, expr: &str) -> Result<Option<f64>, String> {
        Ok(self
            .query(expr)?
            .first()
            .and_then(|r| r["value"][1].as_str())
            .and_then(|v| v.parse().ok()))
    }

    /// Series in the head block (`/api/v1/status/tsdb`: Prometheus does not scrape itself
    /// here).
    pub fn head_series(&self) -> Result<f64, String> {
        let (_, body) = http_get(self.port, "/api/v1/status/tsdb")?;
        let v: Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
        v["data"]["headStats"]["numSeries"]
            .as_f64()
            .ok_or_else(|| format!("no headStats.numSeries in {body}"))
    }

    /// Every sample value of a range-vector query (`metric[5m]`), all series together.
    pub fn range_values(&self, expr: &str) -> Result<Vec<f64>, String> {
        let mut out = Vec::new();
        for series in self.query(expr)? {
            for pair in series["values"].as_array().into_iter().flatten() {
                if let Some(v) = pair[1].as_str().and_then(|v| v.parse().ok()) {
                    out.push(v);
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_queries() {
        assert_eq!(encode("up{a=\"b\"}[1m]"), "up%7Ba%3D%22b%22%7D%5B1m%5D");
    }
}
