//! The `guestctl proxy` process: serves /metrics from fake guests, reloads its targets file
//! on SIGHUP (a broken file keeps the old targets), answers 404 elsewhere, and stops on
//! SIGTERM. No root needed.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A guest serving `body` on every request.
async fn fake_guest(body: &'static str) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let _ = s.read(&mut buf).await;
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    port
}

/// GET path on the proxy with a plain HTTP/1.0 request.
async fn get(port: u16, path: &str) -> (String, String) {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_string(&mut out))
        .await
        .unwrap()
        .unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    (head.to_string(), body.to_string())
}

struct Proxy(Child);

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn signal(child: &Child, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig).unwrap();
}

async fn wait_for_body(port: u16, want: &str) -> String {
    let t0 = Instant::now();
    loop {
        let (_, body) = get(port, "/metrics").await;
        if body.contains(want) {
            return body;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "no {want:?} in:\n{body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn serves_reloads_on_sighup_and_stops_on_sigterm() {
    let a = fake_guest("# TYPE guest_fs_frozen_filesystems gauge\nguest_fs_frozen_filesystems 0\n")
        .await;
    let b = fake_guest("# TYPE guest_fs_frozen_filesystems gauge\nguest_fs_frozen_filesystems 1\n")
        .await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("targets");
    std::fs::write(&file, format!("# one VM\nvm-a=tcp://127.0.0.1:{a}\n")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_guestctl"))
        .args(["proxy", "--listen", "127.0.0.1:0", "--targets-file"])
        .arg(&file)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let port = support::proxy_port(&mut child);
    let proxy = Proxy(child);

    let (head, body) = get(port, "/metrics").await;
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    assert!(
        body.contains("guest_fs_frozen_filesystems{vm=\"vm-a\"} 0\n"),
        "{body}"
    );
    assert!(!body.contains("vm-b"));

    // Add a VM as JSON and reload.
    std::fs::write(
        &file,
        format!(r#"{{"vm-a": "tcp://127.0.0.1:{a}", "vm-b": "tcp://127.0.0.1:{b}"}}"#),
    )
    .unwrap();
    signal(&proxy.0, nix::sys::signal::Signal::SIGHUP);
    let body = wait_for_body(port, "guest_fs_frozen_filesystems{vm=\"vm-b\"} 1\n").await;
    assert_eq!(
        body.matches("# TYPE guest_fs_frozen_filesystems gauge")
            .count(),
        1
    );
    assert!(body.contains("guestctl_proxy_targets 2\n"));

    // A broken file keeps the targets and counts the failure.
    std::fs::write(&file, "this is not a target\n").unwrap();
    signal(&proxy.0, nix::sys::signal::Signal::SIGHUP);
    let body = wait_for_body(
        port,
        "guestctl_proxy_target_reloads_total{result=\"error\"} 1\n",
    )
    .await;
    assert!(body.contains("guestctl_proxy_targets 2\n"));

    let (head, _) = get(port, "/nope").await;
    assert!(
        head.starts_with("HTTP/1.0 404") || head.starts_with("HTTP/1.1 404"),
        "{head}"
    );

    let mut child = proxy;
    signal(&child.0, nix::sys::signal::Signal::SIGTERM);
    let t0 = Instant::now();
    let status = loop {
        if let Some(st) = child.0.try_wait().unwrap() {
            break st;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "proxy ignored SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.0.stderr.take().unwrap(), &mut err).unwrap();
    assert!(err.contains("SIGHUP: reloaded, 2 VM(s)"), "{err}");
    assert!(
        err.contains("reload failed, keeping the current targets"),
        "{err}"
    );
}

#[test]
fn no_targets_or_bad_targets_are_usage_errors() {
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_guestctl"))
            .args(args)
            .output()
            .unwrap()
    };
    let o = run(&["proxy", "--listen", "127.0.0.1:0"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no targets"));
    let o = run(&[
        "proxy",
        "--listen",
        "127.0.0.1:0",
        "--target",
        "a=ftp://x:1",
    ]);
    assert_eq!(o.status.code(), Some(2));
    let o = run(&[
        "proxy",
        "--listen",
        "127.0.0.1:0",
        "--targets-file",
        "/nonexistent/targets",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent/targets"));
}
