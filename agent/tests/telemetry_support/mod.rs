//! Fixtures for the telemetry integration tests (run as root): a loop-mounted ext4 in a scratch
//! directory, the real `guest-agent` binary restricted to it with `--freeze-only`, writers that
//! block on the frozen filesystem, a real Prometheus server and an OTLP/gRPC receiver.
//!
//! Every fixture cleans up in `Drop`, thaw first, so a failing assertion never leaves a
//! filesystem frozen: the agent thaws on SIGTERM, and the loop filesystem and each writer run
//! `fsfreeze -u` on the scratch mount before anything else.

#![allow(dead_code, unused_imports)] // Each test binary uses a different subset.

pub mod agent;
pub mod loopfs;
pub mod otlp;
pub mod prometheus;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

pub use agent::{traced, Agent};
pub use loopfs::{LoopFs, Writer};
pub use otlp::OtlpReceiver;
pub use prometheus::Prometheus;

/// Skips (returns true) unless root ([`test_support::skip_unless_root`]).
pub fn not_root() -> bool {
    test_support::skip_unless_root("loop devices, mount, FIFREEZE")
}

/// Runs a command and returns its stdout; panics with its stderr on failure.
pub fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    free_ports::<1>()[0]
}

/// `N` distinct free TCP ports on 127.0.0.1 (all held while they are picked, so no two are
/// the same).
pub fn free_ports<const N: usize>() -> [u16; N] {
    let held: Vec<TcpListener> = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    std::array::from_fn(|i| held[i].local_addr().unwrap().port())
}

/// A plain HTTP/1.0 GET; returns the status code and the body.
pub fn http_get(addr: SocketAddr, path_and_query: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path_and_query} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((status, body.to_string()))
}

/// Polls `f` every 100 ms until it returns Some, for at most `limit`.
pub fn wait_for<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `# TYPE` of every family in a Prometheus text exposition, by name.
pub fn families(text: &str) -> std::collections::BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| {
            let (name, ty) = l.split_once(' ')?;
            Some((name.to_string(), ty.trim().to_string()))
        })
        .collect()
}

/// The value of the sample `series` (name plus labels exactly as exposed, e.g.
/// `guest_ping_requests_total` or `x{a="b"}`) in a text exposition.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}
