//! A real Prometheus for the tests (its own config and data directory in the test's scratch
//! directory, on 127.0.0.1), child processes stopped on drop, and its HTTP API.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde_json::Value;

use super::free_port;

/// A child process stopped (SIGTERM, then SIGKILL after 5 s) on drop.
pub struct Proc(pub Child, pub &'static str);

impl Drop for Proc {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        for _ in 0..100 {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("{} ignored SIGTERM; killing it", self.1);
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Percent-encodes a query parameter.
pub fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// GET http://127.0.0.1:PORT/PATH; returns status and body.
pub async fn http_get(port: u16, path: &str) -> Result<(u16, String), String> {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    let driver = tokio::spawn(conn);
    let req = http::Request::get(path)
        .header("host", format!("127.0.0.1:{port}"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(20), tx.send_request(req))
        .await
        .map_err(|_| "timeout".to_string())?
        .map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    driver.abort();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// An instant query; the `data.result` array.
pub async fn query(port: u16, expr: &str) -> Value {
    let (status, body) = http_get(
        port,
        &format!("/api/v1/query?query={}", percent_encode(expr)),
    )
    .await
    .unwrap_or_else(|e| panic!("query {expr:?}: {e}"));
    let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(status, 200, "{expr}: {body}");
    assert_eq!(v["status"], "success", "{expr}: {body}");
    v["data"]["result"].clone()
}

/// The active targets (`/api/v1/targets`).
pub async fn active_targets(port: u16) -> Vec<Value> {
    let (_, body) = http_get(port, "/api/v1/targets?state=active")
        .await
        .unwrap_or_else(|e| panic!("targets: {e}"));
    let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    v["data"]["activeTargets"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Polls `check` every 250 ms until it is true; panics after `limit`.
pub async fn wait_for(what: &str, limit: Duration, mut check: impl AsyncFnMut() -> bool) {
    let t0 = Instant::now();
    while !check().await {
        assert!(
            t0.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Starts /usr/bin/prometheus with `config` (YAML) in `dir`; returns it and its port once
/// it is ready.
pub async fn start_prometheus(dir: &Path, config: &str) -> (Proc, u16) {
    let prom = Path::new("/usr/bin/prometheus");
    assert!(
        prom.exists(),
        "/usr/bin/prometheus is needed (scripts/setup.sh installs it)"
    );
    let port = free_port();
    let file = dir.join("prometheus.yml");
    std::fs::write(&file, config).unwrap();
    let child = Command::new(prom)
        .arg(format!("--config.file={}", file.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--log.level=warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let p = Proc(child, "prometheus");
    wait_for("prometheus ready", Duration::from_secs(30), async || {
        matches!(http_get(port, "/-/ready").await, Ok((200, _)))
    })
    .await;
    (p, port)
}
