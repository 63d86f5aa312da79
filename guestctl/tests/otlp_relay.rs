//! End to end: guest agents → `guestctl otlp-relay` → a real OpenTelemetry collector
//! (Rotel, scripts/setup-otel-collector.sh says why this one) → the test's OTLP sink.
//!
//! Two real agents export their spans and metrics (`--otlp-endpoint unix://...`, the shape of
//! a Firecracker VMM's `<uds_path>_<port>` socket) to their own relay listeners (one from
//! `--vm`, one from `--vms-file`, which SIGHUP re-reads at the end); the relay
//! adds `vm` and `host.name` and forwards to the collector's OTLP/gRPC receiver, which batches
//! and exports to the sink. The sink must then hold, for each VM, the agent's server span of a
//! Ping sent with a `traceparent` (untraced Pings make no span) and its metrics, with `vm` set
//! to that VM (and the agent's own `service.name` kept).
//!
//! Needs `target/debug/guest-agent` (`cargo build -p guest-agent`) and the collector at
//! $ROTEL_AGENT or /opt/guest-agent-test/bin/rotel-agent (scripts/setup.sh).

mod support;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use support::free_port;
use support::prom::Proc;
use system_tests::{bins, Agent, Scratch};
use tonic::codec::CompressionEncoding;
use tonic::{Request, Response, Status};

#[derive(Default)]
struct Store {
    traces: Mutex<Vec<ExportTraceServiceRequest>>,
    metrics: Mutex<Vec<ExportMetricsServiceRequest>>,
}

#[derive(Clone, Default)]
struct Sink(Arc<Store>);

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        req: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        self.0.traces.lock().unwrap().push(req.into_inner());
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Sink {
    async fn export(
        &self,
        req: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        self.0.metrics.lock().unwrap().push(req.into_inner());
        Ok(Response::new(ExportMetricsServiceResponse::default()))
    }
}

fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a str> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| match &v.value {
            Some(any_value::Value::StringValue(s)) => Some(s.as_str()),
            _ => None,
        })
}

fn rotel_bin() -> PathBuf {
    let p = std::env::var_os("ROTEL_AGENT")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(
                std::env::var("GUEST_AGENT_TEST_BIN")
                    .unwrap_or_else(|_| "/opt/guest-agent-test/bin".into()),
            )
            .join("rotel-agent")
        });
    assert!(
        p.exists(),
        "{} is needed (scripts/setup-otel-collector.sh, run by scripts/setup.sh, installs it)",
        p.display()
    );
    p
}

/// What the sink saw of one VM: the span names and metric names of the exports whose
/// resource says `vm=NAME`, with `host.name` and `service.name` of the last one.
#[derive(Debug, Default)]
struct Seen {
    spans: Vec<String>,
    metrics: Vec<String>,
    host: Option<String>,
    service: Option<String>,
}

fn seen(store: &Store, vm: &str) -> Seen {
    let mut s = Seen::default();
    for e in store.traces.lock().unwrap().iter() {
        for rs in &e.resource_spans {
            let attrs = rs.resource.as_ref().map_or(&[][..], |r| &r.attributes[..]);
            if attr(attrs, "vm") != Some(vm) {
                continue;
            }
            s.host = attr(attrs, "host.name").map(str::to_string);
            s.service = attr(attrs, "service.name").map(str::to_string);
            s.spans.extend(
                rs.scope_spans
                    .iter()
                    .flat_map(|ss| &ss.spans)
                    .map(|sp| sp.name.clone()),
            );
        }
    }
    for e in store.metrics.lock().unwrap().iter() {
        for rm in &e.resource_metrics {
            let attrs = rm.resource.as_ref().map_or(&[][..], |r| &r.attributes[..]);
            if attr(attrs, "vm") != Some(vm) {
                continue;
            }
            s.metrics.extend(
                rm.scope_metrics
                    .iter()
                    .flat_map(|sm| &sm.metrics)
                    .map(|m| m.name.clone()),
            );
        }
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_spans_and_metrics_reach_a_real_collector_with_the_vm_attribute() {
    if let Err(e) = bins::guest_agent() {
        panic!("the guest-agent binary is needed: {e} (or `cargo build -p guest-agent`)");
    }
    let rotel = rotel_bin();
    let scratch = Scratch::new().unwrap();

    // The sink behind the collector.
    let sink = Sink::default();
    let store = sink.0.clone();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sink_addr = l.local_addr().unwrap();
    let sink_task = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(
                TraceServiceServer::new(sink.clone()).accept_compressed(CompressionEncoding::Gzip),
            )
            .add_service(
                MetricsServiceServer::new(sink).accept_compressed(CompressionEncoding::Gzip),
            )
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(l))
            .await
            .unwrap();
    });

    // The collector: OTLP/gRPC in, OTLP/gRPC out to the sink.
    let grpc_port = free_port();
    let http_port = free_port();
    let collector = Command::new(&rotel)
        .arg("start")
        .args(["--otlp-grpc-endpoint", &format!("127.0.0.1:{grpc_port}")])
        .args(["--otlp-http-endpoint", &format!("127.0.0.1:{http_port}")])
        .args(["--exporter", "otlp", "--otlp-exporter-protocol", "grpc"])
        .args(["--otlp-exporter-endpoint", &format!("http://{sink_addr}")])
        .args(["--batch-timeout", "100ms"])
        .arg("--pid-file")
        .arg(scratch.join("rotel.pid"))
        .arg("--log-file")
        .arg(scratch.join("rotel.log"))
        .args(["--debug-log", "traces", "--debug-log", "metrics"])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(scratch.join("rotel.out")).unwrap())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let _collector = Proc(collector, "rotel-agent");

    // The relay: one listener per VM, as a VMM's guest-connection sockets.
    let sock_a = scratch.join("vm-a.sock_4317");
    let sock_b = scratch.join("vm-b.sock_4317");
    let vms_file = scratch.join("relay-vms");
    std::fs::write(
        &vms_file,
        format!("# VMs come and go\nvm-b=unix://{}\n", sock_b.display()),
    )
    .unwrap();
    let mut relay = Command::new(support::guestctl_bin())
        .args([
            "otlp-relay",
            "--upstream",
            &format!("http://127.0.0.1:{grpc_port}"),
        ])
        .args(["--vm", &format!("vm-a=unix://{}", sock_a.display())])
        .arg("--vms-file")
        .arg(&vms_file)
        .args(["--attribute", "host.name=test-host", "--timeout", "3"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(relay.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert!(line.contains("relaying 2 VM(s)"), "{line:?}");
    let _relay = Proc(relay, "guestctl otlp-relay");

    // Two agents exporting through the relay, each sent one traced Ping (a server span).
    let mut agents = Vec::new();
    for sock in [&sock_a, &sock_b] {
        let a = Agent::start(
            &scratch,
            &[
                "--otlp-endpoint",
                &format!("unix://{}", sock.display()),
                "--otlp-metrics-interval",
                "1",
            ],
        )
        .await
        .unwrap();
        // A health check is traced only when the host sends a trace context.
        let mut ping = tonic::Request::new(guest_proto::v1::PingRequest {});
        ping.metadata_mut().insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                .parse()
                .unwrap(),
        );
        a.client().await.unwrap().ping(ping).await.unwrap();
        agents.push(a);
    }

    let t0 = Instant::now();
    loop {
        let a = seen(&store, "vm-a");
        let b = seen(&store, "vm-b");
        let done = |s: &Seen| {
            s.spans.iter().any(|n| n == "boxlite.v1.Guest/Ping")
                && s.metrics.iter().any(|n| n == "guest.ping.requests")
        };
        if done(&a) && done(&b) {
            for s in [&a, &b] {
                assert_eq!(s.host.as_deref(), Some("test-host"), "{s:?}");
                assert_eq!(s.service.as_deref(), Some("guest-agent"), "{s:?}");
            }
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the collector did not deliver both VMs' spans and metrics within 60 s:\nvm-a {a:?}\nvm-b {b:?}\ncollector log:\n{}\nagent logs:\n{}\n{}",
            std::fs::read_to_string(scratch.join("rotel.out")).unwrap_or_default(),
            agents[0].logs(),
            agents[1].logs(),
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Nothing arrived without a vm attribute: every export went through the relay.
    let untagged = store
        .traces
        .lock()
        .unwrap()
        .iter()
        .flat_map(|e| &e.resource_spans)
        .filter(|rs| attr(rs.resource.as_ref().map_or(&[], |r| &r.attributes), "vm").is_none())
        .count();
    assert_eq!(untagged, 0);

    // VMs come and go: after SIGHUP the file's new VM has its socket, the removed one not.
    let sock_c = scratch.join("vm-c.sock_4317");
    std::fs::write(&vms_file, format!("vm-c=unix://{}\n", sock_c.display())).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(_relay.0.id() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    let t0 = Instant::now();
    while !sock_c.exists() || sock_b.exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "after SIGHUP: vm-c socket {}, vm-b socket {}",
            sock_c.exists(),
            sock_b.exists()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(sock_a.exists(), "a --vm listener stays");
    drop(agents);
    sink_task.abort();
}

#[test]
fn missing_or_bad_vms_are_usage_errors() {
    let run = |args: &[&str]| {
        Command::new(support::guestctl_bin())
            .arg("otlp-relay")
            .args(args)
            .output()
            .unwrap()
    };
    let o = run(&["--upstream", "http://127.0.0.1:4317"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no VMs"));
    let o = run(&[
        "--upstream",
        "http://127.0.0.1:4317",
        "--vm",
        "a=vsock://-1:4317",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--vm-cid"));
    let o = run(&["--upstream", "ftp://x", "--vm", "a=tcp://127.0.0.1:0"]);
    assert_eq!(o.status.code(), Some(2));
    let o = run(&[
        "--upstream",
        "http://127.0.0.1:4317",
        "--vms-file",
        "/nonexistent/relay-vms",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent/relay-vms"));
}
