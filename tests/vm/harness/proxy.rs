//! `guestctl proxy`, the host's one /metrics for many VMs, run against the test VM: it
//! scrapes the guest's /metrics over vsock (through the hybrid socket) and labels every
//! sample with the VM's name.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use super::bins;
use super::error::{Result, VmError};
use super::metrics::http_get_on;
use super::process::Spawned;

/// A running `guestctl proxy`, killed on drop.
#[derive(Debug)]
pub struct MetricsProxy {
    _process: Spawned,
    addr: String,
}

impl MetricsProxy {
    /// Starts `guestctl proxy --listen 127.0.0.1:0 --target NAME=SPEC` and waits for the URL it
    /// prints first.
    pub fn start(name: &str, spec: &str) -> Result<Self> {
        let bin = bins::host_guestctl()?;
        let mut process = Spawned::spawn(
            "guestctl proxy",
            Command::new(&bin)
                .args(["proxy", "--listen", "127.0.0.1:0", "--scrape-timeout", "10"])
                .arg("--target")
                .arg(format!("{name}={spec}"))
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit()),
        )?;
        let stdout = process
            .take_stdout()
            .ok_or_else(|| VmError::Protocol("guestctl proxy has no stdout".into()))?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let timeout = Duration::from_secs(10);
        let line = rx.recv_timeout(timeout).map_err(|_| VmError::Timeout {
            what: "guestctl proxy to print its URL".into(),
            after: timeout,
        })?;
        // "guestctl proxy serving http://127.0.0.1:PORT/metrics for 1 VM(s)"
        let addr = line
            .split_once("http://")
            .and_then(|(_, rest)| rest.split('/').next())
            .unwrap_or_default()
            .to_string();
        if addr.is_empty() {
            process.ensure_running()?;
            return Err(VmError::Protocol(format!(
                "guestctl proxy printed {line:?} instead of its URL"
            )));
        }
        Ok(Self {
            _process: process,
            addr,
        })
    }

    /// GET /metrics from the proxy.
    pub fn scrape(&self) -> Result<String> {
        let what = format!("GET /metrics from guestctl proxy at {}", self.addr);
        let stream = TcpStream::connect(&self.addr).map_err(|e| VmError::io(what.clone(), e))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(|e| VmError::io(what.clone(), e))?;
        http_get_on(stream, &what, "/metrics")
    }
}
