//! A real Prometheus scrapes the agent's `/metrics` every second while the test runs a freeze
//! cycle with writers blocked on the frozen filesystem; the values are checked through
//! Prometheus' HTTP API, and the exposition through `promtool check metrics`.

mod telemetry_support;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use telemetry_support::{not_root, sample, Agent, LoopFs, Prometheus, Writer};

const WRITERS: usize = 2;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_sees_one_freeze_its_duration_the_blocked_writers_and_the_pings() {
    if not_root() {
        return;
    }
    let fs = LoopFs::new(32);
    let agent = Agent::start(fs.scratch(), &["--ebpf", "required"]);
    let prom = Prometheus::start(agent.metrics);
    let mp = fs.mp();
    let mut c = agent.client().await;
    for _ in 0..3 {
        agent.ping(&mut c).await;
    }
    let ebpf = sample(&agent.scrape(), "guest_ebpf_up") == Some(1.0);

    // The freeze window as the client sees it: it contains the agent's (end of FIFREEZE to
    // end of FITHAW), and is contained in (Quiesce sent .. Thaw answered).
    let sent = Instant::now();
    Agent::quiesce(&mut c, &mp, None).await;
    let frozen_at = Instant::now();
    let mut writers: Vec<Writer> = (0..WRITERS)
        .map(|i| Writer::start(&fs, &format!("w{i}")))
        .collect();
    // Long enough for several scrapes while frozen.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert!(
        writers.iter_mut().all(|w| w.running()),
        "writers must block while frozen"
    );
    let thaw_sent = Instant::now();
    Agent::thaw(&mut c).await;
    let (inner, outer) = (thaw_sent - frozen_at, sent.elapsed());
    for w in writers {
        assert!(w.finish(), "a writer failed after the thaw");
    }

    let sel = format!("mountpoint=\"{mp}\"");
    let limit = Duration::from_secs(15);
    let count = prom.wait_value(
        &format!("guest_fs_freeze_duration_seconds_count{{{sel},origin=\"agent\"}}"),
        1.0,
        limit,
    );
    assert_eq!(count, Some(1.0), "one freeze");
    let sum = prom
        .value(
            &format!("guest_fs_freeze_duration_seconds_sum{{{sel}}}"),
            limit,
        )
        .unwrap();
    assert!(
        sum >= inner.as_secs_f64() - 0.05 && sum <= outer.as_secs_f64() + 0.05,
        "freeze duration {sum:.3} s outside [{:.3}, {:.3}] measured by the client",
        inner.as_secs_f64(),
        outer.as_secs_f64()
    );
    assert_eq!(
        prom.value(
            &format!("max_over_time(guest_fs_frozen{{{sel}}}[5m])"),
            limit
        ),
        Some(1.0),
        "a scrape saw the filesystem frozen"
    );
    assert_eq!(
        prom.wait_value(&format!("guest_fs_frozen{{{sel}}}"), 0.0, limit),
        Some(0.0),
        "and thawed"
    );
    assert_eq!(
        prom.value("guest_ping_requests_total", limit),
        Some(3.0),
        "ping count"
    );
    assert!(
        prom.value("guest_ping_last_timestamp_seconds", limit)
            .unwrap()
            > 1.6e9
    );
    for (op, want) in [("freeze", 1.0), ("thaw", 1.0)] {
        assert_eq!(
            prom.value(
                &format!("guest_fs_freeze_operations_total{{op=\"{op}\",result=\"success\"}}"),
                limit
            ),
            Some(want),
            "{op} operations"
        );
    }
    assert_eq!(
        prom.value(
            "guest_grpc_server_requests_total{method=\"Quiesce\",code=\"OK\"}",
            limit
        ),
        Some(1.0)
    );
    assert_eq!(
        prom.value(
            "guest_freeze_phase_duration_seconds_count{phase=\"freeze\"}",
            limit
        ),
        Some(1.0)
    );
    if ebpf {
        assert_eq!(
            prom.value(
                &format!("max_over_time(guest_fs_blocked_writers{{{sel}}}[5m])"),
                limit
            ),
            Some(WRITERS as f64),
            "blocked writers seen by a scrape during the freeze"
        );
        assert_eq!(
            prom.wait_value(
                &format!("guest_fs_stalled_writers_total{{{sel}}}"),
                WRITERS as f64,
                limit
            ),
            Some(WRITERS as f64)
        );
        let longest = prom
            .value(
                &format!("max(guest_fs_writer_stall_seconds_sum{{{sel},level=\"write\"}})"),
                limit,
            )
            .unwrap();
        // Each writer blocks from its start (up to ~1.5 s after the freeze on a loaded
        // machine) until the thaw 3.5 s after the freeze.
        assert!(
            longest > 2.0 * 2.0 && longest < 2.0 * (outer.as_secs_f64() + 0.5),
            "two stalls of up to 3.5 s each, total {longest}"
        );
        assert_eq!(
            prom.value("guest_fs_freezes_observed_total{origin=\"agent\"}", limit),
            Some(1.0)
        );
    } else {
        eprintln!("eBPF observer not running here: blocked-writer metrics not checked");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_exposition_passes_promtool_and_get_metrics_returns_the_same_families() {
    if not_root() {
        return;
    }
    let fs = LoopFs::new(16);
    let agent = Agent::start(fs.scratch(), &["--ebpf", "off"]);
    let mut c = agent.client().await;
    agent.ping(&mut c).await;
    Agent::quiesce(&mut c, &fs.mp(), None).await;
    Agent::thaw(&mut c).await;
    let text = agent.scrape();
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let via_rpc = agent.get_metrics().await;
    assert_eq!(
        telemetry_support::families(&via_rpc),
        telemetry_support::families(&text)
    );
    // One Ping so far, in both.
    assert_eq!(
        sample(&via_rpc, "guest_ping_requests_total"),
        Some(1.0),
        "{via_rpc}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrapes_answer_at_once_while_a_quiesce_is_in_progress() {
    if not_root() {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let fs = LoopFs::new(16);
    // A freeze hook that takes 5 s keeps the Quiesce in progress (operation lock held).
    let hooks = fs.scratch().join("hooks");
    std::fs::create_dir_all(&hooks).unwrap();
    let hook = hooks.join("10-slow");
    std::fs::write(&hook, "#!/bin/sh\n[ \"$1\" = freeze ] && sleep 5\nexit 0\n").unwrap();
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    let agent = Agent::start(
        fs.scratch(),
        &["--ebpf", "off", "--hooks-dir", hooks.to_str().unwrap()],
    );
    let mut c = agent.client().await;
    let mp = fs.mp();
    let quiesce = tokio::spawn(async move {
        Agent::quiesce(&mut c, &mp, None).await;
        c
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!quiesce.is_finished(), "the hook keeps Quiesce in progress");
    let t = Instant::now();
    let text = agent.scrape();
    let scrape = t.elapsed();
    let t = Instant::now();
    let rpc = agent.get_metrics().await;
    let get_metrics = t.elapsed();
    assert!(!quiesce.is_finished(), "both answered during the Quiesce");
    eprintln!("during Quiesce: /metrics {scrape:?}, GetMetrics {get_metrics:?}");
    // Served at once, not after the Quiesce (seconds later); loose for a loaded machine.
    assert!(scrape < Duration::from_millis(1500), "{scrape:?}");
    assert!(get_metrics < Duration::from_millis(1500), "{get_metrics:?}");
    assert_eq!(sample(&text, "guest_fs_frozen_filesystems"), Some(0.0));
    assert_eq!(sample(&rpc, "guest_fs_frozen_filesystems"), Some(0.0));
    let mut c = quiesce.await.unwrap();
    assert_eq!(
        sample(&agent.scrape(), "guest_fs_frozen_filesystems"),
        Some(1.0)
    );
    Agent::thaw(&mut c).await;
}
