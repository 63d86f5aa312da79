//! One trace across host and guest: `guestctl snapshot --otlp-endpoint` exports its root and
//! phase spans to an in-test OTLP receiver, the real agent (started with `--otlp-endpoint`
//! to the same receiver) exports its spans, and the agent's Quiesce/Thaw/FreezeStatus spans
//! are children of the host's phase spans (the `traceparent` guestctl sends). Root: the
//! snapshot freezes the test's own loop filesystem.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use guest_transport::{bind, ListenOptions, ListenUri};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::Span;
use system_tests::{bins, Agent, FsType, LoopFs, Scratch};
use tonic::{Request, Response, Status};

/// Keeps every span with the service name of its resource.
#[derive(Clone, Default)]
struct Receiver(Arc<Mutex<Vec<(String, Span)>>>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        req: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let mut store = self.0.lock().unwrap();
        for rs in req.into_inner().resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref())
                .map(|v| format!("{:?}", v.value))
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for s in ss.spans {
                    store.push((service.clone(), s));
                }
            }
        }
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[tokio::test]
async fn host_phases_and_agent_spans_share_one_trace() {
    if let Err(e) = bins::guest_agent() {
        panic!("the guest-agent binary is needed: {e} (or `cargo build -p guest-agent`)");
    }
    let listener = bind(
        &"tcp://127.0.0.1:0".parse::<ListenUri>().unwrap(),
        &ListenOptions::default(),
    )
    .await
    .unwrap();
    let ListenUri::Tcp { addr } = listener.local_uri() else {
        panic!("tcp")
    };
    let receiver = Receiver::default();
    let server = {
        let r = receiver.clone();
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(r))
                .serve_with_incoming(listener.into_incoming())
                .await
        })
    };

    let scratch = Scratch::new().unwrap();
    let fs = LoopFs::new(&scratch, "data", FsType::Ext4, 32).unwrap();
    let otlp_agent = format!("tcp://{addr}");
    let agent = Agent::start(&scratch, &["--otlp-endpoint", &otlp_agent])
        .await
        .unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_guestctl"))
        .args([
            "--connect",
            &agent.uri(),
            "--json",
            "snapshot",
            "--mountpoint",
        ])
        .arg(fs.mountpoint())
        .args(["--otlp-endpoint", &format!("http://{addr}"), "--", "true"])
        .stdin(Stdio::null())
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), out)
        .await
        .unwrap()
        .unwrap();
    let r: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(out.status.code(), Some(0), "{r}");
    // Root, quiesce, command, thaw, confirm (pause and resume are skipped: no --pause-pid).
    assert_eq!(r["spans_exported"], 5, "{r}");
    let trace_id = r["trace_id"].as_str().unwrap().to_string();

    // The host's spans arrived at once (the export is awaited before exit); the agent's come
    // from its export queue.
    let t0 = Instant::now();
    let (host, agent_spans) = loop {
        let spans = receiver.0.lock().unwrap().clone();
        let in_trace: Vec<&(String, Span)> = spans
            .iter()
            .filter(|(_, s)| hex(&s.trace_id) == trace_id)
            .collect();
        let host: Vec<Span> = in_trace
            .iter()
            .filter(|(svc, _)| svc.contains("guestctl"))
            .map(|(_, s)| s.clone())
            .collect();
        let agent: Vec<Span> = in_trace
            .iter()
            .filter(|(svc, _)| svc.contains("guest-agent"))
            .map(|(_, s)| s.clone())
            .collect();
        let has = |n: &str| agent.iter().any(|s| s.name.ends_with(n));
        if host.len() == 5 && has("/Quiesce") && has("/Thaw") && has("/FreezeStatus") {
            break (host, agent);
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "spans in trace {trace_id} after 30s: host {:?}, agent {:?}",
            host.iter().map(|s| &s.name).collect::<Vec<_>>(),
            agent.iter().map(|s| &s.name).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    let by_name: HashMap<&str, &Span> = host.iter().map(|s| (s.name.as_str(), s)).collect();
    let root = by_name["guestctl snapshot"];
    assert!(root.parent_span_id.is_empty());
    for phase in ["quiesce", "command", "thaw", "confirm"] {
        let s = by_name
            .get(phase)
            .unwrap_or_else(|| panic!("no {phase} span: {:?}", by_name.keys()));
        assert_eq!(
            s.parent_span_id, root.span_id,
            "{phase} is a child of the root"
        );
    }
    // The agent's server spans hang under the host phase that made the call.
    let parent_of = |suffix: &str| {
        agent_spans
            .iter()
            .find(|s| s.name.ends_with(suffix))
            .map(|s| s.parent_span_id.clone())
            .unwrap()
    };
    assert_eq!(parent_of("/Quiesce"), by_name["quiesce"].span_id);
    assert_eq!(parent_of("/Thaw"), by_name["thaw"].span_id);
    assert_eq!(parent_of("/FreezeStatus"), by_name["confirm"].span_id);
    // And the agent's per-filesystem work is in the same trace.
    assert!(
        agent_spans.iter().any(|s| s.name == "fs.freeze"),
        "{:?}",
        agent_spans.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
    drop(agent);
    server.abort();
}
