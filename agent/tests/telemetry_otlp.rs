//! OTLP export to a real OTLP/gRPC receiver (the `opentelemetry-proto` tonic services): the
//! Quiesce span continues the client's trace, has per-phase and per-filesystem children with
//! the right attributes, and the freeze-duration histogram arrives as metric points. With the
//! receiver absent or stalled, Quiesce and Thaw take as long as without any export. Pings and
//! `grpc.health.v1.Health/Check` (health checks) make a span only when the host sends a
//! `traceparent`, and are always counted.

mod telemetry_support;

use std::time::Duration;

use telemetry_support::otlp::{attr_num, attr_str, StalledReceiver};
use telemetry_support::{not_root, sample, traced, wait_for, Agent, LoopFs, OtlpReceiver};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_are_traced_only_with_the_hosts_traceparent_and_always_counted() {
    if not_root() {
        return;
    }
    let receiver = std::sync::Arc::new(OtlpReceiver::start().await);
    let scratch = tempfile::tempdir().unwrap();
    let endpoint = format!("tcp://{}", receiver.addr);
    let agent = Agent::start(
        scratch.path(),
        &["--ebpf", "off", "--otlp-endpoint", &endpoint],
    );
    let mut c = agent.client().await;
    for _ in 0..20 {
        agent.ping(&mut c).await;
    }
    let traceparent = format!("00-{TRACE_ID}-{PARENT_ID}-01");
    c.ping(traced(guest_proto::v1::PingRequest {}, Some(&traceparent)))
        .await
        .unwrap();
    for _ in 0..10 {
        agent.health_check("boxlite.v1.Guest", None).await;
    }
    agent
        .health_check("boxlite.v1.Guest", Some(&traceparent))
        .await;
    // A traced call after the Pings, so that its span is exported after any of theirs.
    agent.get_metrics().await;

    let r = receiver.clone();
    let spans = tokio::task::spawn_blocking(move || {
        wait_for(Duration::from_secs(15), || {
            let spans = r.spans();
            spans
                .iter()
                .any(|s| s.name == "boxlite.v1.GuestMetrics/GetMetrics")
                .then_some(spans)
        })
    })
    .await
    .unwrap()
    .expect("the GetMetrics span was exported");
    let pings: Vec<_> = spans
        .iter()
        .filter(|s| s.name == "boxlite.v1.Guest/Ping")
        .collect();
    let ids: Vec<String> = pings.iter().map(|s| hex(&s.trace_id)).collect();
    assert_eq!(ids, [TRACE_ID], "only the traced Ping has a span");
    assert_eq!(hex(&pings[0].parent_span_id), PARENT_ID);
    assert_eq!(
        attr_num(&pings[0].attributes, "rpc.grpc.status_code"),
        Some(0.0)
    );
    let checks: Vec<String> = spans
        .iter()
        .filter(|s| s.name == "grpc.health.v1.Health/Check")
        .map(|s| hex(&s.trace_id))
        .collect();
    assert_eq!(checks, [TRACE_ID], "only the traced Check has a span");

    // Every Ping is counted, traced or not (the start-up check Pings too).
    let text = agent.scrape();
    let count = sample(&text, "guest_ping_requests_total").expect("guest_ping_requests_total");
    assert!(count >= 21.0, "{count}\n{text}");
    let ok = sample(
        &text,
        "guest_grpc_server_requests_total{code=\"OK\",method=\"Ping\",service=\"boxlite.v1.Guest\"}",
    )
    .expect("Ping requests by code");
    assert_eq!(ok, count, "{text}");
    let checks = sample(
        &text,
        "guest_grpc_server_requests_total{code=\"OK\",method=\"Check\",service=\"grpc.health.v1.Health\"}",
    )
    .expect("Check requests by code");
    assert_eq!(checks, 11.0, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiesce_continues_the_hosts_trace_and_exports_spans_and_metric_points() {
    if not_root() {
        return;
    }
    let receiver = std::sync::Arc::new(OtlpReceiver::start().await);
    let fs = LoopFs::new(16);
    let endpoint = format!("tcp://{}", receiver.addr);
    let log_path = fs.scratch().join("agent.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let agent = Agent::start_with_stderr(
        fs.scratch(),
        &[
            "--ebpf",
            "off",
            "--otlp-endpoint",
            &endpoint,
            "--otlp-metrics-interval",
            "1",
            "--log-format",
            "json",
        ],
        log.into(),
    );
    let mp = fs.mp();
    let mut c = agent.client().await;
    let traceparent = format!("00-{TRACE_ID}-{PARENT_ID}-01");
    Agent::quiesce(&mut c, &mp, Some(&traceparent)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    Agent::thaw(&mut c).await;

    // The Quiesce and Thaw spans and their subtrees, once exported (batches leave every second).
    let r = receiver.clone();
    let spans = tokio::task::spawn_blocking(move || {
        wait_for(Duration::from_secs(15), || {
            let spans = r.spans();
            // Everything asserted below: a server span ends after its children (the Thaw's
            // after its response body), so it may come in a later batch than they do.
            let done = [
                "boxlite.v1.Guest/Quiesce",
                "phase.presync",
                "phase.freeze",
                "fs.freeze",
                "boxlite.v1.Guest/Thaw",
                "phase.thaw",
                "fs.thaw",
            ]
            .iter()
            .all(|name| spans.iter().any(|s| s.name == *name));
            done.then_some(spans)
        })
    })
    .await
    .unwrap()
    .expect("the Quiesce span and its children were exported");
    let quiesce = spans
        .iter()
        .find(|s| s.name == "boxlite.v1.Guest/Quiesce")
        .unwrap();
    assert_eq!(hex(&quiesce.trace_id), TRACE_ID, "the client's trace id");
    assert_eq!(
        hex(&quiesce.parent_span_id),
        PARENT_ID,
        "child of the client's span"
    );
    assert_eq!(attr_str(&quiesce.attributes, "rpc.system"), Some("grpc"));
    assert_eq!(
        attr_str(&quiesce.attributes, "rpc.service"),
        Some("boxlite.v1.Guest")
    );
    assert_eq!(attr_str(&quiesce.attributes, "rpc.method"), Some("Quiesce"));
    assert_eq!(
        attr_num(&quiesce.attributes, "rpc.grpc.status_code"),
        Some(0.0)
    );
    assert_eq!(attr_str(&quiesce.attributes, "trace_id"), Some(TRACE_ID));
    let child_of = |parent: &[u8], name: &str| {
        spans
            .iter()
            .find(|s| s.parent_span_id == parent && s.name == name)
            .unwrap_or_else(|| panic!("no {name} under its parent"))
            .clone()
    };
    child_of(&quiesce.span_id, "phase.presync");
    let phase = child_of(&quiesce.span_id, "phase.freeze");
    let fsf = child_of(&phase.span_id, "fs.freeze");
    assert_eq!(hex(&fsf.trace_id), TRACE_ID);
    assert_eq!(attr_str(&fsf.attributes, "mountpoint"), Some(mp.as_str()));
    assert_eq!(attr_str(&fsf.attributes, "fstype"), Some("ext4"));
    assert_eq!(attr_str(&fsf.attributes, "outcome"), Some("frozen"));
    let ms = attr_num(&fsf.attributes, "duration_ms").expect("duration_ms");
    let span_ms = (fsf.end_time_unix_nano - fsf.start_time_unix_nano) as f64 / 1e6;
    assert!(ms >= 0.0 && ms <= span_ms + 1.0, "{ms} vs span {span_ms}");
    // The Thaw started its own trace (no traceparent) with the fs.thaw child.
    let thaw = spans
        .iter()
        .find(|s| s.name == "boxlite.v1.Guest/Thaw")
        .expect("Thaw span");
    assert_ne!(hex(&thaw.trace_id), TRACE_ID);
    let tphase = child_of(&thaw.span_id, "phase.thaw");
    let fst = child_of(&tphase.span_id, "fs.thaw");
    assert_eq!(attr_str(&fst.attributes, "outcome"), Some("thawed"));
    assert!(attr_num(&fst.attributes, "frozen_ms").unwrap() >= 150.0);

    // The log line of the FIFREEZE carries the trace id (through the RPC span).
    let logs = std::fs::read_to_string(&log_path).unwrap();
    let frozen_line = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["message"] == "frozen")
        .unwrap_or_else(|| panic!("no 'frozen' log line in\n{logs}"));
    let ids: Vec<&str> = frozen_line["spans"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["trace_id"].as_str())
        .collect();
    assert_eq!(ids, vec![TRACE_ID], "{frozen_line}");

    // Metric points of the freeze-duration histogram for this mountpoint.
    let (r, m) = (receiver.clone(), mp.clone());
    let point = tokio::task::spawn_blocking(move || {
        wait_for(Duration::from_secs(10), || {
            r.histogram_points("guest.fs.freeze.duration")
                .into_iter()
                .rev()
                .find(|p| attr_str(&p.attributes, "mountpoint") == Some(m.as_str()))
        })
    })
    .await
    .unwrap()
    .expect("freeze-duration points over OTLP");
    assert_eq!(point.count, 1);
    assert_eq!(attr_str(&point.attributes, "fstype"), Some("ext4"));
    assert_eq!(attr_str(&point.attributes, "origin"), Some("agent"));
    let sum = point.sum.unwrap();
    assert!((0.15..5.0).contains(&sum), "{sum}");
    assert_eq!(point.explicit_bounds.first(), Some(&0.001));
    // The receiver has the data before the agent's exporter sees the reply and counts it.
    let exported = |text: &str, signal: &str| {
        let series =
            format!("guest_telemetry_exports_total{{result=\"success\",signal=\"{signal}\"}}");
        sample(text, &series).unwrap_or(0.0) >= 1.0
    };
    let text = wait_for(Duration::from_secs(10), || {
        let text = agent.scrape();
        (exported(&text, "traces") && exported(&text, "metrics")).then_some(text)
    })
    .unwrap_or_else(|| agent.scrape());
    assert!(
        sample(
            &text,
            "guest_telemetry_exports_total{result=\"success\",signal=\"traces\"}"
        )
        .unwrap()
            >= 1.0,
        "{text}"
    );
    assert!(
        sample(
            &text,
            "guest_telemetry_exports_total{result=\"success\",signal=\"metrics\"}"
        )
        .unwrap()
            >= 1.0,
        "{text}"
    );
}

/// Median and maximum of `n` Quiesce+Thaw cycles.
async fn cycles(agent: &Agent, mp: &str, n: usize) -> (Duration, Duration) {
    let mut c = agent.client().await;
    let mut all = Vec::with_capacity(n);
    for _ in 0..n {
        let q = Agent::quiesce(&mut c, mp, None).await;
        let t = Agent::thaw(&mut c).await;
        all.push(q + t);
    }
    all.sort();
    (all[n / 2], all[n - 1])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absent_or_stalled_receiver_does_not_slow_quiesce_or_thaw() {
    if not_root() {
        return;
    }
    let fs = LoopFs::new(16);
    let mp = fs.mp();
    let n = 7;
    let baseline = {
        let agent = Agent::start(fs.scratch(), &["--ebpf", "off"]);
        cycles(&agent, &mp, n).await
    };
    let absent = format!("tcp://127.0.0.1:{}", telemetry_support::free_port());
    let stalled = StalledReceiver::start();
    let stalled_uri = format!("tcp://{}", stalled.addr);
    for (what, endpoint) in [("absent", absent), ("stalled", stalled_uri)] {
        let agent = Agent::start(
            fs.scratch(),
            &[
                "--ebpf",
                "off",
                "--otlp-endpoint",
                &endpoint,
                "--otlp-timeout",
                "5",
                "--otlp-metrics-interval",
                "1",
                "--otlp-queue-size",
                "16",
            ],
        );
        // Let the first exports start failing (or hang) before measuring.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let (median, max) = cycles(&agent, &mp, n).await;
        eprintln!(
            "{what} receiver: median {median:?} max {max:?}; baseline median {:?} max {:?}",
            baseline.0, baseline.1
        );
        // Loose against the baseline (measured at another moment of a possibly busy
        // machine), tight against the 5 s export timeout a waiting call would show.
        assert!(
            median <= baseline.0 + Duration::from_secs(1),
            "{what}: median {median:?} vs baseline {:?}",
            baseline.0
        );
        // A call that waited for an export would take the export timeout (5 s).
        assert!(
            max < Duration::from_secs(4),
            "{what}: a cycle took {max:?}, about as long as an export timeout"
        );
        // The exports really failed meanwhile, and were counted, not waited for.
        let failed = wait_for(Duration::from_secs(15), || {
            let text = agent.scrape();
            let err = sample(
                &text,
                "guest_telemetry_exports_total{result=\"error\",signal=\"traces\"}",
            )
            .unwrap_or(0.0);
            let dropped = sample(
                &text,
                "guest_telemetry_spans_dropped_total{reason=\"export_failed\"}",
            )
            .unwrap_or(0.0);
            (err >= 1.0 && dropped >= 1.0).then_some((err, dropped))
        });
        assert!(failed.is_some(), "{what}: failed exports were not counted");
    }
}
