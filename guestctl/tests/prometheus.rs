//! End to end, as root: a real Prometheus (its own config and data directory in the test's
//! scratch directory, on 127.0.0.1) scrapes `guestctl proxy`, which scrapes two real agents
//! under different VM names (one over HTTP /metrics with pings on its gRPC socket, one over
//! the GetMetrics RPC) plus one dead target, while the test runs freeze cycles with blocked
//! writers on each agent's own loop filesystem. Then every PromQL expression of the Grafana
//! dashboard and of the rules must return data through Prometheus' HTTP API: a typo in a
//! metric or label name fails here. The proxy's exposition must also pass
//! `promtool check metrics`.
//!
//! Needs `target/debug/guest-agent` (`cargo build -p guest-agent`) and /usr/bin/prometheus
//! (scripts/setup.sh).

mod common;
mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use support::prom::{http_get, query, start_prometheus, wait_for, Proc};
use support::{free_port, guestctl_bin, proxy_port};

use serde_json::Value;
use system_tests::{bins, Agent, FsType, LoopFs, Scratch};

/// Thaws on drop, panics included.
struct ThawGuard(std::path::PathBuf);

impl Drop for ThawGuard {
    fn drop(&mut self) {
        let _ = Command::new("fsfreeze")
            .arg("-u")
            .arg(&self.0)
            .stderr(Stdio::null())
            .status();
    }
}

/// One snapshot of `fs` through `agent` with a writer started inside the frozen window, so it
/// blocks until the thaw.
async fn freeze_cycle(agent: &Agent, fs: &LoopFs, i: usize) {
    let script = format!(
        "dd if=/dev/zero of={}/w{i} bs=64k count=8 conv=fsync status=none & sleep 1.2",
        fs.mountpoint().display()
    );
    let out = tokio::process::Command::new(guestctl_bin())
        .args([
            "--connect",
            &agent.uri(),
            "--json",
            "snapshot",
            "--mountpoint",
        ])
        .arg(fs.mountpoint())
        .args(["--", "sh", "-c", &script])
        .stdin(Stdio::null())
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), out)
        .await
        .expect("snapshot finishes")
        .unwrap();
    assert!(
        out.status.success(),
        "snapshot {i}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn start_proxy(targets: &[String]) -> (Proc, u16) {
    let mut cmd = Command::new(guestctl_bin());
    cmd.args(["proxy", "--listen", "127.0.0.1:0", "--scrape-timeout", "2"]);
    for t in targets {
        cmd.args(["--target", t]);
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let port = proxy_port(&mut child);
    (Proc(child, "guestctl proxy"), port)
}

/// Prometheus scraping the proxy every second, with the project's recording and alert rules.
fn prometheus_config(proxy_port: u16) -> String {
    let rules = common::dashboards_dir().join("prometheus/rules.yml");
    format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
         rule_files:\n  - {}\n\
         scrape_configs:\n  - job_name: guest-agents\n    static_configs:\n      - targets: ['127.0.0.1:{proxy_port}']\n        labels: {{host: test-host}}\n",
        rules.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_and_rule_expression_returns_data_from_real_agents() {
    if let Err(e) = bins::guest_agent() {
        panic!("the guest-agent binary is needed: {e} (or `cargo build -p guest-agent`)");
    }
    let scratch = Scratch::new().unwrap();
    let fs_a = LoopFs::new(&scratch, "a", FsType::Ext4, 64).unwrap();
    let _ga = ThawGuard(fs_a.mountpoint().to_path_buf());
    let fs_b = LoopFs::new(&scratch, "b", FsType::Ext4, 64).unwrap();
    let _gb = ThawGuard(fs_b.mountpoint().to_path_buf());
    let metrics_port = free_port();
    let metrics_listen = format!("tcp://127.0.0.1:{metrics_port}");
    let agent_a = Agent::start(
        &scratch,
        &["--metrics-listen", &metrics_listen, "--ebpf", "required"],
    )
    .await
    .unwrap();
    let agent_b = Agent::start(&scratch, &["--ebpf", "required"])
        .await
        .unwrap();
    let (_proxy, proxy_port) = start_proxy(&[
        format!("vm-a={metrics_listen},ping={}", agent_a.uri()),
        format!("vm-b=grpc+{}", agent_b.uri()),
        format!("vm-dead=unix://{}", scratch.join("nobody.sock").display()),
    ]);

    // The proxy's exposition is well-formed (promtool) even with a dead target.
    let (status, text) = http_get(proxy_port, "/metrics").await.unwrap();
    assert_eq!(status, 200);
    assert!(text.contains("guest_agent_up{vm=\"vm-a\"} 1"), "{text}");
    assert!(text.contains("guest_agent_up{vm=\"vm-b\"} 1"), "{text}");
    assert!(text.contains("guest_agent_up{vm=\"vm-dead\"} 0"), "{text}");
    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut check.stdin.take().unwrap(), text.as_bytes()).unwrap();
    let checked = check.wait_with_output().unwrap();
    assert!(
        checked.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );

    let prom_dir = scratch.subdir("prometheus").unwrap();
    let (_prom, prom_port) = start_prometheus(&prom_dir, &prometheus_config(proxy_port)).await;
    wait_for("a first scrape", Duration::from_secs(30), async || {
        !query(prom_port, "guest_agent_up{vm=\"vm-b\"}")
            .await
            .as_array()
            .unwrap()
            .is_empty()
    })
    .await;

    // An RPC error, so the error-rate series exist.
    let bad = Command::new(guestctl_bin())
        .args([
            "--connect",
            &agent_b.uri(),
            "quiesce",
            "--mountpoint",
            "/nonexistent-mount",
        ])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    // Freeze cycles with writers blocked in each frozen window, both VMs at once.
    for i in 0..6 {
        tokio::join!(
            freeze_cycle(&agent_a, &fs_a, i),
            freeze_cycle(&agent_b, &fs_b, i)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // The recording group runs every 15s: wait for its series.
    wait_for("the recording rules", Duration::from_secs(60), async || {
        !query(prom_port, "vm_level:guest_fs_writer_stall_seconds:p99_5m")
            .await
            .as_array()
            .unwrap()
            .is_empty()
    })
    .await;

    // Every label name the expressions use exists in the scraped data.
    let (_, labels) = http_get(prom_port, "/api/v1/labels").await.unwrap();
    let labels: Value = serde_json::from_str(&labels).unwrap();
    let known: Vec<&str> = labels["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let mut unknown = Vec::new();

    let mut empty = Vec::new();
    let exprs: Vec<_> = common::dashboard_exprs()
        .into_iter()
        .chain(common::rule_exprs())
        .collect();
    for e in &exprs {
        let q = if e.alert {
            common::alert_as_bool(&e.expr)
        } else {
            common::substitute(&e.expr)
        };
        for l in common::label_names(&q) {
            if !known.contains(&l.as_str()) {
                unknown.push(format!("{}: label {l:?} in {q}", e.origin));
            }
        }
        let result = query(prom_port, &q).await;
        if result.as_array().is_none_or(|r| r.is_empty()) {
            empty.push(format!("{}: {q}", e.origin));
        }
    }
    assert!(
        unknown.is_empty(),
        "label names no series has:\n{}",
        unknown.join("\n")
    );
    assert!(
        empty.is_empty(),
        "{} of {} expressions returned no data:\n{}",
        empty.len(),
        exprs.len(),
        empty.join("\n")
    );
    // Both VMs are there, with their own label.
    let frozen_ops = query(
        prom_port,
        "sum by (vm) (guest_fs_freeze_operations_total{op=\"freeze\",result=\"success\"})",
    )
    .await;
    let vms: Vec<&str> = frozen_ops
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["metric"]["vm"].as_str().unwrap())
        .collect();
    assert!(
        vms.contains(&"vm-a") && vms.contains(&"vm-b"),
        "{frozen_ops}"
    );
}
