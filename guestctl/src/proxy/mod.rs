//! `guestctl proxy`: one `/metrics` on the host for many VMs.
//!
//! On every scrape of `/metrics` the proxy fetches each guest's metrics concurrently, each
//! bounded by `--scrape-timeout` (a dead or frozen VM costs only its own timeout and never
//! delays the others), pings each agent, adds `vm="NAME"` to every guest sample, merges the
//! families ([`merge`]) and appends its own series ([`host_metrics`]). A guest that fails is
//! left out and shows as `guest_agent_up{vm} 0`; the exposition stays well-formed. SIGHUP
//! reloads `--targets-file` ([`targets`]); SIGINT/SIGTERM stop the proxy.
//!
//! Each VM is also served alone on `/vm/NAME/metrics` (its samples without a `vm` label, 503
//! when the guest fails), and `GET /sd` / `--sd-file` describe those paths as one Prometheus
//! target per VM ([`sd`]), for a Prometheus that should keep each VM's own `up`.

pub mod exposition;
pub mod fetch;
pub mod host_metrics;
pub mod merge;
pub mod sd;
pub mod targets;

use std::convert::Infallible;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full, StreamBody};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};

use fetch::{FetchError, GrpcEndpoint};
use guest_transport::ClientTls;
use host_metrics::HostStats;
use merge::Merger;
use targets::{MetricsSource, Target, TargetError};

use crate::exit_code::{EXIT_AGENT_ERROR, EXIT_USAGE};

/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The targets are unusable.
    #[error(transparent)]
    Targets(#[from] TargetError),
    /// Neither --target nor --targets-file.
    #[error("no targets: give --target NAME=URI (repeatable) or --targets-file FILE")]
    NoTargets,
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    /// The service discovery file could not be written.
    #[error("cannot write the service discovery file {path}: {source}")]
    SdFile {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

impl ProxyError {
    /// The process exit code for this failure: bad or missing targets are usage errors
    /// ([`EXIT_USAGE`]); not being able to serve is [`EXIT_AGENT_ERROR`].
    pub fn exit_code(&self) -> u8 {
        match self {
            ProxyError::Targets(_) | ProxyError::NoTargets => EXIT_USAGE,
            ProxyError::Bind { .. } | ProxyError::Signals(_) | ProxyError::SdFile { .. } => {
                EXIT_AGENT_ERROR
            }
        }
    }
}

/// `guestctl proxy` settings.
#[derive(Debug, Clone)]
pub struct ProxyOptions {
    /// Host address to serve on.
    pub listen: SocketAddr,
    /// Targets from `--target`.
    pub targets: Vec<Target>,
    /// Targets file, reloaded on SIGHUP.
    pub targets_file: Option<PathBuf>,
    /// Bound of each guest's fetch (and ping).
    pub scrape_timeout: Duration,
    /// TLS client settings for tls+tcp:// targets.
    pub tls: Option<ClientTls>,
    /// Service discovery output.
    pub sd: SdOptions,
}

/// How the proxy describes its VMs to Prometheus' service discovery ([`sd`]).
#[derive(Debug, Clone, Default)]
pub struct SdOptions {
    /// `HOST:PORT` Prometheus reaches the proxy at. Default: for `/sd` the request's Host
    /// header, for the file the bound address ([`sd::default_address`]).
    pub address: Option<String>,
    /// Labels added to every VM's target (`--sd-label KEY=VALUE`).
    pub labels: Vec<(String, String)>,
    /// A `file_sd_configs` file to keep up to date.
    pub file: Option<PathBuf>,
}

/// A target with its kept connections.
#[derive(Debug)]
struct TargetState {
    target: Target,
    metrics_grpc: Option<GrpcEndpoint>,
    ping: Option<GrpcEndpoint>,
}

impl TargetState {
    fn new(target: Target, tls: Option<&ClientTls>) -> Self {
        Self {
            metrics_grpc: match &target.metrics {
                MetricsSource::Grpc(u) => Some(GrpcEndpoint::new(u.clone(), tls.cloned())),
                MetricsSource::Http(_) => None,
            },
            ping: target
                .ping
                .clone()
                .map(|u| GrpcEndpoint::new(u, tls.cloned())),
            target,
        }
    }
}

/// What one guest's scrape gave.
struct GuestResult {
    name: String,
    metrics: Result<Vec<exposition::Family>, String>,
    duration: Duration,
    ping: Option<Result<Duration, FetchError>>,
}

/// The proxy's state, shared by the connections.
#[derive(Debug)]
pub struct Proxy {
    flag_targets: Vec<Target>,
    targets_file: Option<PathBuf>,
    scrape_timeout: Duration,
    tls: Option<ClientTls>,
    targets: RwLock<Arc<Vec<Arc<TargetState>>>>,
    stats: Mutex<HostStats>,
    sd: SdOptions,
    bound: OnceLock<SocketAddr>,
}

impl Proxy {
    /// Builds the proxy from the flags and (if given) the targets file.
    pub fn new(opts: &ProxyOptions) -> Result<Self, ProxyError> {
        let targets = Self::combine(&opts.targets, opts.targets_file.as_deref())?;
        if targets.is_empty() && opts.targets_file.is_none() {
            return Err(ProxyError::NoTargets);
        }
        let proxy = Self {
            flag_targets: opts.targets.clone(),
            targets_file: opts.targets_file.clone(),
            scrape_timeout: opts.scrape_timeout,
            tls: opts.tls.clone(),
            targets: RwLock::new(Arc::new(Vec::new())),
            stats: Mutex::new(HostStats::default()),
            sd: opts.sd.clone(),
            bound: OnceLock::new(),
        };
        proxy.install(targets);
        Ok(proxy)
    }

    fn combine(
        flags: &[Target],
        file: Option<&std::path::Path>,
    ) -> Result<Vec<Target>, TargetError> {
        let mut all = flags.to_vec();
        if let Some(f) = file {
            all.extend(targets::load_file(f)?);
        }
        targets::check_unique(all)
    }

    fn install(&self, targets: Vec<Target>) {
        let current = self.targets();
        // Keep the connections of targets that did not change.
        let states: Vec<Arc<TargetState>> = targets
            .into_iter()
            .map(|t| {
                current
                    .iter()
                    .find(|s| s.target == t)
                    .cloned()
                    .unwrap_or_else(|| Arc::new(TargetState::new(t, self.tls.as_ref())))
            })
            .collect();
        self.lock_stats()
            .retain_vms(states.iter().map(|s| s.target.name.as_str()));
        *self.targets.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(states);
    }

    fn targets(&self) -> Arc<Vec<Arc<TargetState>>> {
        self.targets
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn lock_stats(&self) -> std::sync::MutexGuard<'_, HostStats> {
        self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Re-reads the targets file; on error the current targets stay.
    pub async fn reload(self: &Arc<Self>) -> Result<usize, TargetError> {
        let this = self.clone();
        let loaded = tokio::task::spawn_blocking(move || {
            Self::combine(&this.flag_targets, this.targets_file.as_deref())
        })
        .await
        .unwrap_or_else(|e| Err(TargetError::Syntax(format!("reload task failed: {e}"))));
        match loaded {
            Ok(t) => {
                let n = t.len();
                self.install(t);
                self.lock_stats().reloads_ok += 1;
                if let Err(e) = self.write_sd_file() {
                    eprintln!("guestctl proxy: {e}");
                }
                Ok(n)
            }
            Err(e) => {
                self.lock_stats().reloads_failed += 1;
                Err(e)
            }
        }
    }

    /// The bound of each guest's fetch: `--scrape-timeout`, shortened to finish before
    /// Prometheus gives up when its scrape timeout (`X-Prometheus-Scrape-Timeout-Seconds`)
    /// is shorter.
    fn fetch_timeout(&self, prometheus: Option<Duration>) -> Duration {
        match prometheus {
            Some(p) => {
                let margin = Duration::from_millis(100).min(p / 4);
                self.scrape_timeout.min(p - margin)
            }
            None => self.scrape_timeout,
        }
    }

    async fn scrape_one(&self, t: &TargetState, timeout: Duration) -> GuestResult {
        let fetch = async {
            let started = Instant::now();
            let text = match (&t.target.metrics, &t.metrics_grpc) {
                (MetricsSource::Grpc(_), Some(ep)) => ep.metrics(timeout).await,
                (MetricsSource::Http(uri), _) => {
                    fetch::http_metrics(uri, timeout, self.tls.as_ref()).await
                }
                (MetricsSource::Grpc(_), None) => Err(FetchError::Http("no endpoint".into())),
            };
            let parsed = text
                .map_err(|e| e.to_string())
                .and_then(|t| exposition::parse(&t).map_err(|e| format!("bad exposition: {e}")));
            (parsed, started.elapsed())
        };
        let ping = async {
            match &t.ping {
                Some(ep) => Some(ep.ping(timeout).await),
                None => None,
            }
        };
        let ((metrics, duration), ping) = tokio::join!(fetch, ping);
        GuestResult {
            name: t.target.name.clone(),
            metrics,
            duration,
            ping,
        }
    }

    /// Records one guest's result in the stats; returns its families when it is up.
    fn record(stats: &mut HostStats, r: GuestResult) -> Result<Vec<exposition::Family>, String> {
        let Some(vm) = stats.vms.get_mut(&r.name) else {
            // Removed by a reload during this scrape.
            return Err("removed from the targets".to_string());
        };
        vm.scrape_seconds = r.duration.as_secs_f64();
        match r.ping {
            Some(Ok(rtt)) => vm.ping.observe(rtt.as_secs_f64()),
            Some(Err(e)) => {
                vm.ping_errors += 1;
                tracing::debug!(vm = %r.name, error = %e, "ping failed");
            }
            None => {}
        }
        match r.metrics {
            Ok(families) => {
                vm.up = true;
                Ok(families)
            }
            Err(e) => {
                // Warn when a guest goes down (or is down from the start), not on
                // every scrape while it stays down.
                if vm.up || vm.scrape_errors == 0 {
                    tracing::warn!(vm = %r.name, error = %e, "fetching the guest's metrics failed");
                } else {
                    tracing::debug!(vm = %r.name, error = %e, "fetching the guest's metrics failed");
                }
                vm.up = false;
                vm.scrape_errors += 1;
                Err(e)
            }
        }
    }

    /// Scrapes every guest concurrently and renders the merged exposition.
    #[cfg(test)]
    pub async fn scrape(&self) -> String {
        let chunks = self.scrape_within(None).await;
        chunks
            .iter()
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect()
    }

    /// Scrapes every guest concurrently, for a Prometheus whose scrape timeout is
    /// `prometheus`, and returns the merged exposition as chunks.
    ///
    /// Each guest's result is merged as soon as it arrives (parsed, relabelled into one
    /// buffer, the parsed form and the fetched text dropped), so the work overlaps the wait
    /// for slow guests and memory holds about one copy of the output.
    async fn scrape_within(&self, prometheus: Option<Duration>) -> Vec<Bytes> {
        use futures::StreamExt as _;
        let timeout = self.fetch_timeout(prometheus);
        let targets = self.targets();
        let mut pending: futures::stream::FuturesUnordered<_> = targets
            .iter()
            .map(|t| self.scrape_one(t, timeout))
            .collect();
        let mut merger = Merger::new();
        while let Some(r) = pending.next().await {
            let name = r.name.clone();
            let merged = Self::record(&mut self.lock_stats(), r);
            if let Ok(families) = merged {
                for c in merger.add_guest(&name, families) {
                    tracing::warn!(vm = %c.vm, family = %c.family, reason = %c.reason, "family dropped");
                }
            }
        }
        for f in self.lock_stats().families() {
            if let Err(c) = merger.add_own(f) {
                tracing::warn!(family = %c.family, "a guest exports a family the proxy owns; the guest's was kept");
            }
        }
        merger.into_chunks()
    }

    /// Scrapes one VM for its own endpoint: `None` for an unknown VM, else its exposition
    /// without `vm` labels (plus its per-VM proxy series) or why the guest failed.
    pub async fn scrape_vm(
        &self,
        name: &str,
        prometheus: Option<Duration>,
    ) -> Option<Result<String, String>> {
        let target = self
            .targets()
            .iter()
            .find(|t| t.target.name == name)
            .cloned()?;
        let r = self
            .scrape_one(&target, self.fetch_timeout(prometheus))
            .await;
        let mut stats = self.lock_stats();
        let families = match Self::record(&mut stats, r) {
            Ok(f) => f,
            Err(e) => return Some(Err(e)),
        };
        let mut merger = Merger::new();
        for c in merger.add_guest_unlabelled(name, families) {
            tracing::warn!(vm = %c.vm, family = %c.family, reason = %c.reason, "family dropped");
        }
        for f in stats.vm_only_families(name) {
            if let Err(c) = merger.add_own(f) {
                tracing::warn!(family = %c.family, "a guest exports a family the proxy owns; the guest's was kept");
            }
        }
        Some(Ok(merger.render()))
    }

    /// The service discovery JSON, with `host` (e.g. the request's Host header) as the
    /// address unless `--sd-address` was given.
    pub fn sd_json(&self, host: Option<&str>) -> String {
        let address = self
            .sd
            .address
            .clone()
            .or_else(|| host.map(str::to_string))
            .or_else(|| self.bound.get().map(|a| sd::default_address(*a)))
            .unwrap_or_else(|| "localhost".to_string());
        let targets = self.targets();
        sd::targets_json(
            &address,
            targets.iter().map(|t| t.target.name.as_str()),
            &self.sd.labels,
        )
    }

    /// Writes `--sd-file`, if given.
    fn write_sd_file(&self) -> Result<(), ProxyError> {
        let Some(path) = &self.sd.file else {
            return Ok(());
        };
        sd::write_file(path, &self.sd_json(None)).map_err(|source| ProxyError::SdFile {
            path: path.display().to_string(),
            source,
        })
    }

    fn index(&self) -> String {
        let mut out = String::from(
            "guestctl proxy: GET /metrics (every VM), /vm/NAME/metrics (one VM), /sd (targets)\n\ntargets:\n",
        );
        for t in self.targets().iter() {
            out.push_str(&format!("  {}\n", t.target));
        }
        out
    }
}

/// Prometheus' scrape timeout for this request, if it sent one.
fn prometheus_timeout(req: &http::Request<hyper::body::Incoming>) -> Option<Duration> {
    req.headers()
        .get("x-prometheus-scrape-timeout-seconds")?
        .to_str()
        .ok()?
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s > 0.0)
        .map(Duration::from_secs_f64)
}

const TEXT: &str = "text/plain; charset=utf-8";

/// The response body: one buffer, or the merged exposition's chunks.
type Body = BoxBody<Bytes, Infallible>;

async fn handle(
    proxy: Arc<Proxy>,
    req: http::Request<hyper::body::Incoming>,
) -> Result<http::Response<Body>, Infallible> {
    let path = req.uri().path();
    if req.method() == http::Method::GET && path == "/metrics" {
        let chunks = proxy.scrape_within(prometheus_timeout(&req)).await;
        let len: usize = chunks.iter().map(Bytes::len).sum();
        let frames = futures::stream::iter(
            chunks
                .into_iter()
                .map(|c| Ok::<_, Infallible>(hyper::body::Frame::data(c))),
        );
        let mut resp = http::Response::new(StreamBody::new(frames).boxed());
        let h = resp.headers_mut();
        h.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static(CONTENT_TYPE),
        );
        h.insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(len));
        return Ok(resp);
    }
    let (status, ctype, body) = match (req.method(), path) {
        (&http::Method::GET, "/sd") => {
            let host = req
                .headers()
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok());
            (
                http::StatusCode::OK,
                "application/json",
                proxy.sd_json(host),
            )
        }
        (&http::Method::GET, "/") => (http::StatusCode::OK, TEXT, proxy.index()),
        (&http::Method::GET, p) => match sd::vm_from_path(p) {
            Some(vm) => match proxy.scrape_vm(vm, prometheus_timeout(&req)).await {
                Some(Ok(text)) => (http::StatusCode::OK, CONTENT_TYPE, text),
                Some(Err(e)) => (
                    http::StatusCode::SERVICE_UNAVAILABLE,
                    TEXT,
                    format!("VM {vm}: {e}\n"),
                ),
                None => (
                    http::StatusCode::NOT_FOUND,
                    TEXT,
                    format!("no VM named {vm:?}\n"),
                ),
            },
            None => (
                http::StatusCode::NOT_FOUND,
                TEXT,
                "not found; try /metrics, /vm/NAME/metrics or /sd\n".to_string(),
            ),
        },
        _ => (
            http::StatusCode::METHOD_NOT_ALLOWED,
            TEXT,
            "only GET\n".to_string(),
        ),
    };
    let mut resp = http::Response::new(Full::new(Bytes::from(body)).boxed());
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(ctype),
    );
    Ok(resp)
}

/// Runs the proxy until SIGINT/SIGTERM. Prints the served URL on stdout first.
pub async fn run(opts: ProxyOptions) -> Result<(), ProxyError> {
    let proxy = Arc::new(Proxy::new(&opts)?);
    let listener = TcpListener::bind(opts.listen)
        .await
        .map_err(|source| ProxyError::Bind {
            addr: opts.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ProxyError::Bind {
        addr: opts.listen,
        source,
    })?;
    let _ = proxy.bound.set(addr);
    proxy.write_sd_file()?;
    let mut hup = signal(SignalKind::hangup()).map_err(ProxyError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(ProxyError::Signals)?;
    let mut term = signal(SignalKind::terminate()).map_err(ProxyError::Signals)?;
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "guestctl proxy serving http://{addr}/metrics for {} VM(s)",
            proxy.targets().len()
        );
        let _ = out.flush();
    }
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let proxy = proxy.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| handle(proxy.clone(), req));
                    if let Err(e) = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await
                    {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
            }
            _ = hup.recv() => match proxy.reload().await {
                Ok(n) => eprintln!("guestctl proxy: SIGHUP: reloaded, {n} VM(s)"),
                Err(e) => eprintln!("guestctl proxy: SIGHUP: reload failed, keeping the current targets: {e}"),
            },
            _ = int.recv() => break,
            _ = term.recv() => break,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Serves `body` on GET /metrics forever, after `delay`.
    async fn fake_guest(body: &'static str, delay: Duration) -> String {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let _ = s.read(&mut buf).await;
                    tokio::time::sleep(delay).await;
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = s.write_all(resp.as_bytes()).await;
                });
            }
        });
        format!("tcp://127.0.0.1:{port}")
    }

    fn opts(targets: Vec<Target>, timeout: Duration) -> ProxyOptions {
        ProxyOptions {
            listen: "127.0.0.1:0".parse().unwrap(),
            targets,
            targets_file: None,
            scrape_timeout: timeout,
            tls: None,
            sd: SdOptions::default(),
        }
    }

    #[tokio::test]
    async fn a_slow_guest_costs_only_its_own_timeout() {
        let fast = fake_guest(
            "# TYPE guest_fs_frozen gauge\nguest_fs_frozen{mountpoint=\"/a\"} 0\n",
            Duration::ZERO,
        )
        .await;
        let slow = fake_guest("guest_fs_frozen 1\n", Duration::from_secs(30)).await;
        let bad = fake_guest("this is { not metrics\n", Duration::ZERO).await;
        let targets = vec![
            Target::new("fast", &fast).unwrap(),
            Target::new("slow", &slow).unwrap(),
            Target::new("bad", &bad).unwrap(),
            Target::new("gone", "unix:///nonexistent/metrics.sock").unwrap(),
        ];
        let proxy = Proxy::new(&opts(targets, Duration::from_millis(500))).unwrap();
        let started = Instant::now();
        let out = proxy.scrape().await;
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
        assert!(
            out.contains("guest_fs_frozen{vm=\"fast\",mountpoint=\"/a\"} 0\n"),
            "{out}"
        );
        assert!(out.contains("guest_agent_up{vm=\"fast\"} 1\n"));
        for vm in ["slow", "bad", "gone"] {
            assert!(
                out.contains(&format!("guest_agent_up{{vm=\"{vm}\"}} 0\n")),
                "{vm}: {out}"
            );
            assert!(out.contains(&format!("guestctl_scrape_errors_total{{vm=\"{vm}\"}} 1\n")));
        }
        // Well-formed: parses back, one TYPE per family.
        let fams = exposition::parse(&out).unwrap();
        let mut names: Vec<&str> = fams.iter().map(|f| f.name.as_str()).collect();
        let n = names.len();
        names.dedup();
        assert_eq!(names.len(), n);
        // Counters accumulate across scrapes.
        let out = proxy.scrape().await;
        assert!(
            out.contains("guestctl_scrape_errors_total{vm=\"gone\"} 2\n"),
            "{out}"
        );
    }

    #[tokio::test]
    async fn reload_swaps_targets_and_keeps_them_on_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("targets");
        std::fs::write(&file, "a=tcp://127.0.0.1:1\n").unwrap();
        let mut o = opts(vec![], Duration::from_millis(200));
        o.targets_file = Some(file.clone());
        let proxy = Arc::new(Proxy::new(&o).unwrap());
        assert_eq!(proxy.targets().len(), 1);
        std::fs::write(
            &file,
            "{\"a\": \"tcp://127.0.0.1:1\", \"b\": \"tcp://127.0.0.1:2\"}",
        )
        .unwrap();
        assert_eq!(proxy.reload().await.unwrap(), 2);
        std::fs::write(&file, "broken line\n").unwrap();
        assert!(proxy.reload().await.is_err());
        assert_eq!(proxy.targets().len(), 2);
        let out = proxy.scrape().await;
        assert!(
            out.contains("guestctl_proxy_target_reloads_total{result=\"success\"} 1\n"),
            "{out}"
        );
        assert!(out.contains("guestctl_proxy_target_reloads_total{result=\"error\"} 1\n"));
        assert!(out.contains("guest_agent_up{vm=\"b\"} 0\n"));
    }

    #[tokio::test]
    async fn each_vm_alone_and_as_service_discovery_targets() {
        let fast = fake_guest(
            "# TYPE guest_fs_frozen gauge\nguest_fs_frozen{mountpoint=\"/a\"} 0\n",
            Duration::ZERO,
        )
        .await;
        let slow = fake_guest("guest_fs_frozen 1\n", Duration::from_secs(30)).await;
        let targets = vec![
            Target::new("fast", &fast).unwrap(),
            Target::new("slow", &slow).unwrap(),
        ];
        let mut o = opts(targets, Duration::from_secs(5));
        o.sd.labels = vec![("host".into(), "h1".into())];
        let proxy = Proxy::new(&o).unwrap();
        let one = proxy.scrape_vm("fast", None).await.unwrap().unwrap();
        assert!(
            one.contains("guest_fs_frozen{mountpoint=\"/a\"} 0\n"),
            "{one}"
        );
        assert!(one.contains("guest_agent_up 1\n"), "{one}");
        assert!(!one.contains("vm="), "{one}");
        assert!(!one.contains("guestctl_proxy_targets"), "{one}");
        exposition::parse(&one).unwrap();
        // Prometheus' shorter scrape timeout bounds the fetch (less a margin).
        let started = Instant::now();
        let e = proxy
            .scrape_vm("slow", Some(Duration::from_millis(400)))
            .await
            .unwrap()
            .unwrap_err();
        assert!(e.contains("no answer within 300ms"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(proxy.scrape_vm("nope", None).await.is_none());
        // The failure shows in the merged view's counters too.
        assert_eq!(proxy.lock_stats().vms["slow"].scrape_errors, 1);

        let v: serde_json::Value = serde_json::from_str(&proxy.sd_json(Some("p:9"))).unwrap();
        assert_eq!(v.as_array().unwrap().len(), 2);
        assert_eq!(v[0]["targets"][0], "p:9");
        assert_eq!(v[0]["labels"]["vm"], "fast");
        assert_eq!(v[0]["labels"]["__metrics_path__"], "/vm/fast/metrics");
        assert_eq!(v[0]["labels"]["host"], "h1");
    }

    #[tokio::test]
    async fn sd_file_follows_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("targets");
        let sd_file = dir.path().join("sd.json");
        std::fs::write(&file, "a=tcp://127.0.0.1:1\n").unwrap();
        let mut o = opts(vec![], Duration::from_millis(200));
        o.targets_file = Some(file.clone());
        o.sd.file = Some(sd_file.clone());
        o.sd.address = Some("10.0.0.1:9465".into());
        let proxy = Arc::new(Proxy::new(&o).unwrap());
        proxy.write_sd_file().unwrap();
        let read = || -> serde_json::Value {
            serde_json::from_str(&std::fs::read_to_string(&sd_file).unwrap()).unwrap()
        };
        assert_eq!(read().as_array().unwrap().len(), 1);
        assert_eq!(read()[0]["targets"][0], "10.0.0.1:9465");
        std::fs::write(&file, "a=tcp://127.0.0.1:1\nb=tcp://127.0.0.1:2\n").unwrap();
        proxy.reload().await.unwrap();
        assert_eq!(read()[1]["labels"]["vm"], "b");
    }

    #[test]
    fn needs_targets() {
        assert!(matches!(
            Proxy::new(&opts(vec![], Duration::from_secs(1))),
            Err(ProxyError::NoTargets)
        ));
    }
}
