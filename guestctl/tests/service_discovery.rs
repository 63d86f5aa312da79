//! Service discovery with the real Prometheus: `guestctl proxy` keeps an `--sd-file` and
//! serves `/sd`; a Prometheus with one `file_sd_configs` job and one `http_sd_configs` job
//! must then show every VM as its own target of each job, with the labels of the targets
//! (`vm`, the `--sd-label`), health up for the three real agents (HTTP /metrics with pings,
//! GetMetrics, a second HTTP one) and down (`up` 0) for the dead VM; a VM added to the
//! targets file and announced with SIGHUP becomes a new target of both jobs.
//!
//! Needs `target/debug/guest-agent` (`cargo build -p guest-agent`) and /usr/bin/prometheus
//! (scripts/setup.sh).

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::prom::{active_targets, query, start_prometheus, wait_for, Proc};
use support::{guestctl_bin, proxy_port};
use system_tests::{bins, Agent, Scratch};

/// Active targets of `job`, as (vm, health, host label).
async fn job_targets(prom: u16, job: &str) -> Vec<(String, String, String)> {
    let mut out: Vec<_> = active_targets(prom)
        .await
        .into_iter()
        .filter(|t| t["labels"]["job"] == job)
        .map(|t: Value| {
            let s = |v: &Value| v.as_str().unwrap_or("").to_string();
            (
                s(&t["labels"]["vm"]),
                s(&t["health"]),
                s(&t["labels"]["host"]),
            )
        })
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_vm_is_its_own_prometheus_target_with_its_own_up() {
    if let Err(e) = bins::guest_agent() {
        panic!("the guest-agent binary is needed: {e} (or `cargo build -p guest-agent`)");
    }
    let scratch = Scratch::new().unwrap();
    let m0 = scratch.join("m0.sock");
    let m2 = scratch.join("m2.sock");
    let a0 = Agent::start(
        &scratch,
        &["--metrics-listen", &format!("unix://{}", m0.display())],
    )
    .await
    .unwrap();
    let a1 = Agent::start(&scratch, &[]).await.unwrap();
    let _a2 = Agent::start(
        &scratch,
        &["--metrics-listen", &format!("unix://{}", m2.display())],
    )
    .await
    .unwrap();
    let targets_file = scratch.join("targets");
    let mut targets = format!(
        "vm-0=unix://{},ping={}\nvm-1=grpc+{}\nvm-2=unix://{}\nvm-dead=unix://{}\n",
        m0.display(),
        a0.uri(),
        a1.uri(),
        m2.display(),
        scratch.join("nobody.sock").display()
    );
    std::fs::write(&targets_file, &targets).unwrap();
    let sd_file = scratch.join("sd.json");
    let mut child = Command::new(guestctl_bin())
        .args(["proxy", "--listen", "127.0.0.1:0", "--scrape-timeout", "2"])
        .arg("--targets-file")
        .arg(&targets_file)
        .arg("--sd-file")
        .arg(&sd_file)
        .args(["--sd-label", "host=test-host"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let port = proxy_port(&mut child);
    let proxy = Proc(child, "guestctl proxy");
    let written: Value = serde_json::from_str(&std::fs::read_to_string(&sd_file).unwrap()).unwrap();
    assert_eq!(written.as_array().unwrap().len(), 4, "{written}");
    assert_eq!(written[0]["targets"][0], format!("127.0.0.1:{port}"));

    let prom_dir = scratch.subdir("prometheus").unwrap();
    let config = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
         scrape_configs:\n\
         \x20 - job_name: vms-file\n    file_sd_configs:\n      - files: ['{}']\n        refresh_interval: 1s\n\
         \x20 - job_name: vms-http\n    http_sd_configs:\n      - url: http://127.0.0.1:{port}/sd\n        refresh_interval: 1s\n",
        sd_file.display()
    );
    let (_prom, prom) = start_prometheus(&prom_dir, &config).await;

    let want = |vms: &[&str]| -> Vec<(String, String, String)> {
        vms.iter()
            .map(|vm| {
                let health = if *vm == "vm-dead" { "down" } else { "up" };
                (vm.to_string(), health.to_string(), "test-host".to_string())
            })
            .collect()
    };
    let four = want(&["vm-0", "vm-1", "vm-2", "vm-dead"]);
    for job in ["vms-file", "vms-http"] {
        let mut last = Vec::new();
        wait_for(
            &format!("every VM a target of {job}"),
            Duration::from_secs(60),
            async || {
                last = job_targets(prom, job).await;
                last == four
            },
        )
        .await;
        // up per VM: 1 for the agents, 0 for the dead one.
        let ups = query(prom, &format!("up{{job=\"{job}\"}}")).await;
        let mut ups: Vec<(String, String)> = ups
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["metric"]["vm"].as_str().unwrap().to_string(),
                    r["value"][1].as_str().unwrap().to_string(),
                )
            })
            .collect();
        ups.sort();
        assert_eq!(
            ups,
            [
                ("vm-0", "1"),
                ("vm-1", "1"),
                ("vm-2", "1"),
                ("vm-dead", "0")
            ]
            .map(|(a, b)| (a.to_string(), b.to_string())),
            "{job}"
        );
        // The agents' own series carry the target labels, with no exported_vm.
        let build = query(
            prom,
            &format!("guest_agent_build_info{{job=\"{job}\",host=\"test-host\"}}"),
        )
        .await;
        assert_eq!(build.as_array().unwrap().len(), 3, "{job}: {build}");
        let clash = query(prom, "count({exported_vm!=\"\"})").await;
        assert!(clash.as_array().unwrap().is_empty(), "{clash}");
        // The proxy's per-VM series come along (ping only where a gRPC endpoint is known).
        let pings = query(
            prom,
            &format!("guestctl_ping_rtt_seconds_count{{job=\"{job}\"}} > 0"),
        )
        .await;
        let mut ping_vms: Vec<&str> = pings
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["metric"]["vm"].as_str().unwrap())
            .collect();
        ping_vms.sort();
        assert_eq!(ping_vms, ["vm-0", "vm-1"], "{job}");
    }

    // A VM added to the targets file becomes a target of both jobs after SIGHUP.
    targets.push_str(&format!("vm-3=grpc+{}\n", a1.uri()));
    std::fs::write(&targets_file, &targets).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(proxy.0.id() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    let five = want(&["vm-0", "vm-1", "vm-2", "vm-3", "vm-dead"]);
    for job in ["vms-file", "vms-http"] {
        wait_for(
            &format!("vm-3 a target of {job}"),
            Duration::from_secs(60),
            async || job_targets(prom, job).await == five,
        )
        .await;
    }
}
