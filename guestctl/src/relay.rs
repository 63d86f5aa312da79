//! `guestctl otlp-relay`: the host's OTLP relay between guest agents and an OpenTelemetry
//! Collector.
//!
//! A guest agent exports its spans and metrics over OTLP/gRPC to the host
//! (`--otlp-endpoint vsock://2:PORT`). The relay accepts those connections where the VMM
//! delivers them — per VM, the unix socket a Firecracker/Cloud Hypervisor VMM opens for
//! guest-initiated connections (`<uds_path>_<PORT>`), or one AF_VSOCK port for QEMU
//! vhost-vsock guests, told apart by their CID — and forwards every export to the collector
//! with the host's resource attributes added: `vm="NAME"` (replacing any `vm` the guest set:
//! the host knows which VM a connection comes from, the guest may not) and the
//! `--attribute`s. The collector's answer (including partial success) goes back to the guest;
//! an unreachable or slow collector answers the guest UNAVAILABLE / DEADLINE_EXCEEDED within
//! `--timeout`, so the agent drops and counts that batch as it would without a relay.
//!
//! VMs come and go: `--vms-file` lists them (`NAME=LISTEN_URI` lines) and SIGHUP makes the
//! listeners match it (new ones bound, removed ones closed and their socket files removed).

use std::collections::HashMap;
use std::io::Write as _;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use guest_transport::{bind, ConnInfo, ListenOptions, ListenUri, CID_ANY};
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use tokio::signal::unix::{signal, SignalKind};
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};

use crate::exit_code::{EXIT_AGENT_ERROR, EXIT_USAGE};
use crate::proxy::targets::valid_name;

/// The resource attribute naming the VM.
pub const VM_ATTRIBUTE: &str = "vm";

/// Largest OTLP message accepted from a guest or the collector.
pub const MAX_MESSAGE: usize = 16 << 20;

/// Why the relay could not start.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// A bad flag value.
    #[error("{0}")]
    Usage(String),
    /// A listener could not be opened.
    #[error(transparent)]
    Listen(#[from] guest_transport::TransportError),
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    /// A VM's listener could not be opened at start.
    #[error("cannot listen for VM {0}")]
    Bind(String),
}

impl RelayError {
    /// The process exit code: bad flags are usage errors, the rest [`EXIT_AGENT_ERROR`].
    pub fn exit_code(&self) -> u8 {
        match self {
            RelayError::Usage(_) => EXIT_USAGE,
            RelayError::Listen(_) | RelayError::Signals(_) | RelayError::Bind(_) => {
                EXIT_AGENT_ERROR
            }
        }
    }
}

/// One VM's own listener: `NAME=LISTEN_URI` (`unix:///run/fc/vm1.sock_4317`,
/// `tcp://127.0.0.1:PORT`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayVm {
    /// The `vm` attribute value.
    pub name: String,
    /// Where its agent's exports arrive.
    pub listen: ListenUri,
}

impl FromStr for RelayVm {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, uri) = s
            .split_once('=')
            .ok_or_else(|| format!("{s:?} is not NAME=LISTEN_URI"))?;
        let name = name.trim();
        if !valid_name(name) {
            return Err(format!(
                "bad VM name {name:?}: use letters, digits, '.', '_', '-' and ':' (1 to 128 characters)"
            ));
        }
        let listen: ListenUri = uri.trim().parse().map_err(|e| format!("{name}: {e}"))?;
        if matches!(listen, ListenUri::Vsock { .. }) {
            return Err(format!(
                "{name}: vsock guests share one port: use --vsock-port and --vm-cid {name}=CID"
            ));
        }
        Ok(Self {
            name: name.to_string(),
            listen,
        })
    }
}

/// Parses a VMs file: `NAME=LISTEN_URI` lines, `#` comments and blank lines ignored.
pub fn parse_vms_file(text: &str) -> Result<Vec<RelayVm>, String> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
        .map(|(i, l)| l.parse().map_err(|e| format!("line {}: {e}", i + 1)))
        .collect()
}

/// Parses `NAME=CID` of `--vm-cid`.
pub fn parse_vm_cid(s: &str) -> Result<(String, u32), String> {
    let (name, cid) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not NAME=CID"))?;
    let name = name.trim();
    if !valid_name(name) {
        return Err(format!("bad VM name {name:?}"));
    }
    let cid: u32 = cid
        .trim()
        .parse()
        .map_err(|_| format!("{cid:?} is not a CID"))?;
    if cid <= 2 || cid == CID_ANY {
        return Err(format!("{cid} is not a guest CID (3 and up)"));
    }
    Ok((name.to_string(), cid))
}

/// Parses `KEY=VALUE` of `--attribute`.
pub fn parse_attribute(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))?;
    let k = k.trim();
    if k.is_empty() || k == VM_ATTRIBUTE {
        return Err(format!(
            "{k:?}: give a non-empty key other than {VM_ATTRIBUTE} (set per VM)"
        ));
    }
    Ok((k.to_string(), v.to_string()))
}

/// `guestctl otlp-relay` settings.
#[derive(Debug, Clone)]
pub struct RelayOptions {
    /// VMs with their own listener (`--vm`).
    pub vms: Vec<RelayVm>,
    /// A file of more `NAME=LISTEN_URI` lines, re-read on SIGHUP.
    pub vms_file: Option<std::path::PathBuf>,
    /// The AF_VSOCK port for vhost-vsock guests, if any.
    pub vsock_port: Option<u32>,
    /// vhost-vsock guests by CID.
    pub vm_cids: Vec<(String, u32)>,
    /// The collector's OTLP/gRPC endpoint, `http://HOST:PORT`.
    pub upstream: String,
    /// Resource attributes added to every export besides `vm`.
    pub attributes: Vec<(String, String)>,
    /// Bound of each forwarded export (connect included).
    pub timeout: Duration,
}

/// Sets `key` to the string `value` in `attrs`, replacing an existing value.
pub fn set_attribute(attrs: &mut Vec<KeyValue>, key: &str, value: &str) {
    let v = Some(AnyValue {
        value: Some(any_value::Value::StringValue(value.to_string())),
    });
    match attrs.iter_mut().find(|kv| kv.key == key) {
        Some(kv) => kv.value = v,
        None => attrs.push(KeyValue {
            key: key.to_string(),
            value: v,
            ..Default::default()
        }),
    }
}

/// Who a connection belongs to: one VM (its own listener) or a CID table (vsock).
#[derive(Debug, Clone)]
enum Who {
    Vm(Arc<str>),
    ByCid(Arc<HashMap<u32, Arc<str>>>),
}

/// The OTLP services of one listener.
#[derive(Debug, Clone)]
struct Relay {
    who: Who,
    /// The last forward worked (failures are logged as warnings on the change only).
    upstream_ok: Arc<std::sync::atomic::AtomicBool>,
    attributes: Arc<Vec<(String, String)>>,
    upstream: Channel,
    timeout: Duration,
}

impl Relay {
    fn vm<T>(&self, req: &Request<T>) -> Result<Arc<str>, Status> {
        match &self.who {
            Who::Vm(v) => Ok(v.clone()),
            Who::ByCid(table) => {
                let cid = match req.extensions().get::<ConnInfo>() {
                    Some(ConnInfo::Vsock { cid: Some(c), .. }) => *c,
                    _ => return Err(Status::permission_denied("unknown peer")),
                };
                table
                    .get(&cid)
                    .cloned()
                    .ok_or_else(|| Status::permission_denied(format!("CID {cid} is no known VM")))
            }
        }
    }

    /// Adds the host's attributes to one resource.
    fn stamp(&self, resource: &mut Option<Resource>, vm: &str) {
        let r = resource.get_or_insert_with(Resource::default);
        set_attribute(&mut r.attributes, VM_ATTRIBUTE, vm);
        for (k, v) in self.attributes.iter() {
            set_attribute(&mut r.attributes, k, v);
        }
    }

    /// Forwards one export within the timeout.
    async fn forward<F, R>(&self, vm: &str, signal: &str, call: F) -> Result<Response<R>, Status>
    where
        F: std::future::Future<Output = Result<Response<R>, Status>>,
    {
        let result = match tokio::time::timeout(self.timeout, call).await {
            Ok(r) => r,
            Err(_) => Err(Status::deadline_exceeded(format!(
                "the collector did not answer within {:?}",
                self.timeout
            ))),
        };
        let ok = result.is_ok();
        let was_ok = self
            .upstream_ok
            .swap(ok, std::sync::atomic::Ordering::Relaxed);
        match (&result, was_ok) {
            (Err(s), true) => {
                tracing::warn!(vm, signal, code = ?s.code(), message = s.message(), "forwarding to the collector failed (further failures are logged at debug level until it works again)");
            }
            (Err(s), false) => {
                tracing::debug!(vm, signal, code = ?s.code(), message = s.message(), "forwarding to the collector failed");
            }
            (Ok(_), false) => tracing::warn!(vm, signal, "forwarding to the collector works again"),
            (Ok(_), true) => {}
        }
        result.map(|r| Response::new(r.into_inner()))
    }

    fn request<T>(&self, body: T) -> Request<T> {
        let mut r = Request::new(body);
        r.set_timeout(self.timeout);
        r
    }
}

#[tonic::async_trait]
impl TraceService for Relay {
    async fn export(
        &self,
        req: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let vm = self.vm(&req)?;
        let mut body = req.into_inner();
        for r in &mut body.resource_spans {
            self.stamp(&mut r.resource, &vm);
        }
        let mut client =
            TraceServiceClient::new(self.upstream.clone()).max_decoding_message_size(MAX_MESSAGE);
        self.forward(&vm, "traces", client.export(self.request(body)))
            .await
    }
}

#[tonic::async_trait]
impl MetricsService for Relay {
    async fn export(
        &self,
        req: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        let vm = self.vm(&req)?;
        let mut body = req.into_inner();
        for r in &mut body.resource_metrics {
            self.stamp(&mut r.resource, &vm);
        }
        let mut client =
            MetricsServiceClient::new(self.upstream.clone()).max_decoding_message_size(MAX_MESSAGE);
        self.forward(&vm, "metrics", client.export(self.request(body)))
            .await
    }
}

#[tonic::async_trait]
impl LogsService for Relay {
    async fn export(
        &self,
        req: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        let vm = self.vm(&req)?;
        let mut body = req.into_inner();
        for r in &mut body.resource_logs {
            self.stamp(&mut r.resource, &vm);
        }
        let mut client =
            LogsServiceClient::new(self.upstream.clone()).max_decoding_message_size(MAX_MESSAGE);
        self.forward(&vm, "logs", client.export(self.request(body)))
            .await
    }
}

/// The collector channel: `http://HOST:PORT` (or `tcp://HOST:PORT`), connected lazily and
/// reconnected by tonic after failures.
pub fn upstream_channel(url: &str, timeout: Duration) -> Result<Channel, RelayError> {
    let url = match url.strip_prefix("tcp://") {
        Some(rest) => format!("http://{rest}"),
        None => url.to_string(),
    };
    if !url.starts_with("http://") {
        return Err(RelayError::Usage(format!(
            "--upstream {url:?}: give http://HOST:PORT (the collector's OTLP/gRPC port)"
        )));
    }
    let ep = Endpoint::from_shared(url.clone())
        .map_err(|e| RelayError::Usage(format!("--upstream {url:?}: {e}")))?
        .connect_timeout(timeout);
    Ok(ep.connect_lazy())
}

async fn serve(relay: Relay, listener: guest_transport::Listener) {
    let uri = listener.local_uri();
    let r = tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(relay.clone()).max_decoding_message_size(MAX_MESSAGE))
        .add_service(
            MetricsServiceServer::new(relay.clone()).max_decoding_message_size(MAX_MESSAGE),
        )
        .add_service(LogsServiceServer::new(relay).max_decoding_message_size(MAX_MESSAGE))
        .serve_with_incoming(listener.into_incoming())
        .await;
    if let Err(e) = r {
        tracing::error!(%uri, error = %e, "relay listener failed");
    }
}

/// The per-VM listeners that run, by VM name.
struct Listeners {
    make: Box<dyn Fn(Who) -> Relay + Send>,
    running: HashMap<String, (ListenUri, tokio::task::JoinHandle<()>)>,
}

impl Listeners {
    /// Makes the running listeners exactly `vms`: stops the ones gone or moved (their
    /// socket files are removed), binds the new ones. Returns why some could not be bound.
    async fn sync(&mut self, vms: &[RelayVm]) -> Vec<String> {
        let wanted: HashMap<&str, &ListenUri> =
            vms.iter().map(|v| (v.name.as_str(), &v.listen)).collect();
        let gone: Vec<String> = self
            .running
            .iter()
            .filter(|(name, (uri, _))| wanted.get(name.as_str()) != Some(&uri))
            .map(|(name, _)| name.clone())
            .collect();
        for name in gone {
            if let Some((_, task)) = self.running.remove(&name) {
                task.abort();
                // Wait until its listener is closed (and its socket file removed), so a new
                // VM may bind the same path right away.
                let _ = task.await;
            }
        }
        let mut errors = Vec::new();
        for vm in vms {
            if self.running.contains_key(&vm.name) {
                continue;
            }
            match bind(&vm.listen, &ListenOptions::default()).await {
                Ok(l) => {
                    let relay = (self.make)(Who::Vm(vm.name.as_str().into()));
                    self.running.insert(
                        vm.name.clone(),
                        (vm.listen.clone(), tokio::spawn(serve(relay, l))),
                    );
                }
                Err(e) => errors.push(format!("{}: {e}", vm.name)),
            }
        }
        errors
    }
}

fn wanted_vms(opts: &RelayOptions) -> Result<Vec<RelayVm>, String> {
    let mut vms = opts.vms.clone();
    if let Some(f) = &opts.vms_file {
        let text =
            std::fs::read_to_string(f).map_err(|e| format!("cannot read {}: {e}", f.display()))?;
        vms.extend(parse_vms_file(&text).map_err(|e| format!("{}: {e}", f.display()))?);
    }
    let mut names = std::collections::HashSet::new();
    for n in vms
        .iter()
        .map(|v| v.name.as_str())
        .chain(opts.vm_cids.iter().map(|(n, _)| n.as_str()))
    {
        if !names.insert(n) {
            return Err(format!("VM name {n:?} is used twice"));
        }
    }
    Ok(vms)
}

/// Runs the relay until SIGINT/SIGTERM; SIGHUP re-reads `--vms-file`. Prints what it relays
/// on stdout first.
pub async fn run(opts: RelayOptions) -> Result<(), RelayError> {
    if opts.vms.is_empty() && opts.vms_file.is_none() && opts.vm_cids.is_empty() {
        return Err(RelayError::Usage(
            "no VMs: give --vm NAME=LISTEN_URI, --vms-file FILE and/or --vsock-port PORT --vm-cid NAME=CID".into(),
        ));
    }
    if opts.vm_cids.is_empty() != opts.vsock_port.is_none() {
        return Err(RelayError::Usage(
            "--vsock-port and --vm-cid go together".into(),
        ));
    }
    let vms = wanted_vms(&opts).map_err(RelayError::Usage)?;
    let upstream = upstream_channel(&opts.upstream, opts.timeout)?;
    let attributes = Arc::new(opts.attributes.clone());
    let timeout = opts.timeout;
    let upstream_ok = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let make = move |who| Relay {
        who,
        upstream_ok: upstream_ok.clone(),
        attributes: attributes.clone(),
        upstream: upstream.clone(),
        timeout,
    };
    let mut vsock_task = None;
    if let Some(port) = opts.vsock_port {
        let table: HashMap<u32, Arc<str>> = opts
            .vm_cids
            .iter()
            .map(|(n, c)| (*c, Arc::from(n.as_str())))
            .collect();
        let lo = ListenOptions {
            allowed_cids: table.keys().copied().collect(),
            ..ListenOptions::default()
        };
        let l = bind(&ListenUri::Vsock { cid: CID_ANY, port }, &lo).await?;
        vsock_task = Some(tokio::spawn(serve(make(Who::ByCid(Arc::new(table))), l)));
    }
    let mut listeners = Listeners {
        make: Box::new(make),
        running: HashMap::new(),
    };
    if let Some(e) = listeners.sync(&vms).await.into_iter().next() {
        return Err(RelayError::Bind(e));
    }
    let mut hup = signal(SignalKind::hangup()).map_err(RelayError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(RelayError::Signals)?;
    let mut term = signal(SignalKind::terminate()).map_err(RelayError::Signals)?;
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "guestctl otlp-relay relaying {} VM(s) to {}",
            listeners.running.len() + opts.vm_cids.len(),
            opts.upstream
        );
        let _ = out.flush();
    }
    loop {
        tokio::select! {
            _ = hup.recv() => match wanted_vms(&opts) {
                Ok(vms) => {
                    let errors = listeners.sync(&vms).await;
                    for e in &errors {
                        eprintln!("guestctl otlp-relay: SIGHUP: cannot listen for VM {e}");
                    }
                    eprintln!(
                        "guestctl otlp-relay: SIGHUP: reloaded, {} VM(s)",
                        listeners.running.len() + opts.vm_cids.len()
                    );
                }
                Err(e) => eprintln!("guestctl otlp-relay: SIGHUP: reload failed, keeping the current VMs: {e}"),
            },
            _ = int.recv() => break,
            _ = term.recv() => break,
        }
    }
    for (_, (_, t)) in listeners.running.drain() {
        t.abort();
    }
    if let Some(t) = vsock_task {
        t.abort();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse() {
        let v: RelayVm = "vm1=unix:///run/fc/vm1.sock_4317".parse().unwrap();
        assert_eq!(v.name, "vm1");
        assert!("vm1=vsock://-1:4317".parse::<RelayVm>().is_err());
        assert!("bad name=unix:///x".parse::<RelayVm>().is_err());
        assert!("novalue".parse::<RelayVm>().is_err());
        assert_eq!(parse_vm_cid("a=7").unwrap(), ("a".to_string(), 7));
        assert!(parse_vm_cid("a=2").is_err());
        assert!(parse_vm_cid("a=x").is_err());
        assert_eq!(
            parse_attribute("host.name=h1").unwrap(),
            ("host.name".to_string(), "h1".to_string())
        );
        assert!(parse_attribute("vm=x").is_err());
        assert!(upstream_channel("ftp://x", Duration::from_secs(1)).is_err());
        let f =
            parse_vms_file("# vms\n\na=unix:///r/a.sock_4317\n b=tcp://127.0.0.1:1 \n").unwrap();
        assert_eq!(f.len(), 2);
        assert_eq!(f[1].name, "b");
        let e = parse_vms_file("a=unix:///x\nbroken\n").unwrap_err();
        assert!(e.contains("line 2"), "{e}");
    }

    #[derive(Clone, Default)]
    struct Sink(Arc<std::sync::Mutex<Vec<ExportTraceServiceRequest>>>);

    #[tonic::async_trait]
    impl TraceService for Sink {
        async fn export(
            &self,
            req: Request<ExportTraceServiceRequest>,
        ) -> Result<Response<ExportTraceServiceResponse>, Status> {
            self.0.lock().unwrap().push(req.into_inner());
            Ok(Response::new(ExportTraceServiceResponse::default()))
        }
    }

    async fn relay_on_tcp(upstream: &str, timeout: Duration) -> String {
        let l = bind(
            &"tcp://127.0.0.1:0".parse().unwrap(),
            &ListenOptions::default(),
        )
        .await
        .unwrap();
        let addr = match l.local_uri() {
            ListenUri::Tcp { addr } => addr,
            other => panic!("{other}"),
        };
        let relay = Relay {
            who: Who::Vm("vm-7".into()),
            upstream_ok: Arc::new(std::sync::atomic::AtomicBool::new(true)),
            attributes: Arc::new(vec![("host.name".into(), "h1".into())]),
            upstream: upstream_channel(upstream, timeout).unwrap(),
            timeout,
        };
        tokio::spawn(serve(relay, l));
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn exports_reach_the_collector_with_the_vm_attribute() {
        let sink = Sink::default();
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sink_addr = l.local_addr().unwrap();
        let s = sink.clone();
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(s))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(l))
                .await
                .unwrap();
        });
        let relay = relay_on_tcp(&format!("http://{sink_addr}"), Duration::from_secs(5)).await;
        let mut client = TraceServiceClient::connect(relay).await.unwrap();
        let mut resource = Resource::default();
        set_attribute(&mut resource.attributes, "vm", "spoofed");
        set_attribute(&mut resource.attributes, "service.name", "guest-agent");
        let req = ExportTraceServiceRequest {
            resource_spans: vec![
                opentelemetry_proto::tonic::trace::v1::ResourceSpans {
                    resource: Some(resource),
                    ..Default::default()
                },
                Default::default(),
            ],
        };
        client.export(req).await.unwrap();
        let got = sink.0.lock().unwrap().clone();
        assert_eq!(got.len(), 1);
        for rs in &got[0].resource_spans {
            let attrs = &rs.resource.as_ref().unwrap().attributes;
            let get = |k: &str| {
                attrs
                    .iter()
                    .find(|kv| kv.key == k)
                    .and_then(|kv| kv.value.clone())
                    .and_then(|v| v.value)
            };
            let s = |v: &str| Some(any_value::Value::StringValue(v.into()));
            assert_eq!(get("vm"), s("vm-7"));
            assert_eq!(get("host.name"), s("h1"));
        }
        let first = &got[0].resource_spans[0]
            .resource
            .as_ref()
            .unwrap()
            .attributes;
        assert!(first.iter().any(|kv| kv.key == "service.name"));
        assert_eq!(first.iter().filter(|kv| kv.key == "vm").count(), 1);
    }

    #[tokio::test]
    async fn a_missing_collector_fails_the_export_quickly() {
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dead = format!("http://{}", free.local_addr().unwrap());
        drop(free);
        let relay = relay_on_tcp(&dead, Duration::from_millis(500)).await;
        let mut client = TraceServiceClient::connect(relay).await.unwrap();
        let started = std::time::Instant::now();
        let e = client
            .export(ExportTraceServiceRequest::default())
            .await
            .unwrap_err();
        assert!(
            matches!(
                e.code(),
                tonic::Code::Unavailable | tonic::Code::DeadlineExceeded
            ),
            "{e:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    #[test]
    fn attributes_are_set_or_replaced() {
        let mut a = Vec::new();
        set_attribute(&mut a, "vm", "guest-says");
        set_attribute(&mut a, "service.name", "guest-agent");
        set_attribute(&mut a, "vm", "vm1");
        assert_eq!(a.len(), 2);
        let vm = a.iter().find(|kv| kv.key == "vm").unwrap();
        assert_eq!(
            vm.value.as_ref().unwrap().value,
            Some(any_value::Value::StringValue("vm1".into()))
        );
    }
}
