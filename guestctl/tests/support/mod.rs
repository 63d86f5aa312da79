//! Running the guestctl binary from integration tests: one bounded way to run a command, to
//! find a free port and to learn the port `guestctl proxy --listen 127.0.0.1:0` chose.
//! Each test binary uses a subset, hence the `dead_code` allowance.
#![allow(dead_code)]

pub mod prom;

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::process::{Child, Output, Stdio};
use std::time::Duration;

/// The guestctl binary cargo built for these tests.
pub fn guestctl_bin() -> &'static str {
    env!("CARGO_BIN_EXE_guestctl")
}

/// Runs `guestctl args...` (no stdin, output captured, `GUESTCTL_CONNECT`/`RUST_LOG` from the
/// test's environment removed); kills it and panics if it takes longer than `limit`.
pub async fn guestctl<S: AsRef<OsStr>>(args: &[S], limit: Duration) -> Output {
    let child = tokio::process::Command::new(guestctl_bin())
        .args(args)
        .env_remove("GUESTCTL_CONNECT")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn guestctl");
    let argv: Vec<_> = args.iter().map(|a| a.as_ref().to_owned()).collect();
    tokio::time::timeout(limit, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("guestctl {argv:?} did not finish within {limit:?}"))
        .expect("guestctl output")
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The port a `guestctl proxy --listen 127.0.0.1:0` child (stdout piped) reports on its first
/// line (`... http://127.0.0.1:PORT/metrics`).
pub fn proxy_port(child: &mut Child) -> u16 {
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("proxy stdout is piped"))
        .read_line(&mut line)
        .unwrap();
    line.split("http://127.0.0.1:")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("proxy did not print its URL: {line:?}"))
}
