//! The real `guest-agent` binary on loopback TCP, restricted to one scratch directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use guest_proto::v1::guest_client::GuestClient;
use guest_proto::v1::guest_metrics_client::GuestMetricsClient;
use guest_proto::v1::{GetMetricsRequest, PingRequest, QuiesceRequest, ThawRequest};
use tonic::transport::Channel;

use super::{free_ports, http_get, wait_for};

/// A running agent: gRPC on `grpc`, `/metrics` on `metrics`, state dir on tmpfs. Drop sends
/// SIGTERM (the agent thaws on the way out) and reaps it, SIGKILL after 10 s.
#[derive(Debug)]
pub struct Agent {
    child: Child,
    /// The gRPC address.
    pub grpc: SocketAddr,
    /// The `/metrics` address.
    pub metrics: SocketAddr,
    state_dir: PathBuf,
}

impl Agent {
    /// Starts the agent with `--freeze-only scratch` plus `extra` flags and waits until both
    /// listeners answer; its stderr is the test's.
    pub fn start(scratch: &Path, extra: &[&str]) -> Self {
        Self::start_with_stderr(scratch, extra, Stdio::inherit())
    }

    /// Like [`Agent::start`], with the agent's stderr (its log) going to `stderr`.
    pub fn start_with_stderr(scratch: &Path, extra: &[&str], stderr: Stdio) -> Self {
        let [g, m] = free_ports::<2>();
        let grpc: SocketAddr = format!("127.0.0.1:{g}").parse().unwrap();
        let metrics: SocketAddr = format!("127.0.0.1:{m}").parse().unwrap();
        let state_dir = PathBuf::from(format!("/run/telemetry-test-{}-{g}", std::process::id()));
        let child = Command::new(env!("CARGO_BIN_EXE_guest-agent"))
            .args(["--listen", &format!("tcp://{grpc}")])
            .args(["--metrics-listen", &format!("tcp://{metrics}")])
            .arg("--freeze-only")
            .arg(scratch)
            .arg("--state-dir")
            .arg(&state_dir)
            .args(extra)
            .stdin(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start guest-agent");
        let agent = Self {
            child,
            grpc,
            metrics,
            state_dir,
        };
        let up = wait_for(Duration::from_secs(15), || {
            (std::net::TcpStream::connect(grpc).is_ok()
                && http_get(metrics, "/metrics").is_ok_and(|(s, _)| s == 200))
            .then_some(())
        });
        assert!(up.is_some(), "the agent did not come up");
        agent
    }

    /// A Guest client.
    pub async fn client(&self) -> GuestClient<Channel> {
        GuestClient::new(self.channel().await)
    }

    async fn channel(&self) -> Channel {
        tonic::transport::Endpoint::from_shared(format!("http://{}", self.grpc))
            .unwrap()
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .unwrap()
    }

    /// `grpc.health.v1.Health/Check` of `service` on a new channel (`traceparent` as for
    /// [`traced`]); panics unless the answer is SERVING.
    pub async fn health_check(&self, service: &str, traceparent: Option<&str>) {
        use tonic_health::pb::{health_check_response::ServingStatus, health_client::HealthClient};
        let req = traced(
            tonic_health::pb::HealthCheckRequest {
                service: service.to_string(),
            },
            traceparent,
        );
        let status = HealthClient::new(self.channel().await)
            .check(req)
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
    }

    /// GET /metrics.
    pub fn scrape(&self) -> String {
        let (status, body) = http_get(self.metrics, "/metrics").unwrap();
        assert_eq!(status, 200, "{body}");
        body
    }

    /// GetMetrics over gRPC.
    pub async fn get_metrics(&self) -> String {
        GuestMetricsClient::new(self.channel().await)
            .get_metrics(GetMetricsRequest {})
            .await
            .unwrap()
            .into_inner()
            .text
    }

    /// Ping.
    pub async fn ping(&self, c: &mut GuestClient<Channel>) {
        c.ping(PingRequest {}).await.unwrap();
    }

    /// Quiesce `mp` (with an optional `traceparent`); returns how long the call took.
    pub async fn quiesce(
        c: &mut GuestClient<Channel>,
        mp: &str,
        traceparent: Option<&str>,
    ) -> Duration {
        let req = traced(
            QuiesceRequest {
                mountpoints: vec![mp.to_string()],
            },
            traceparent,
        );
        let t = Instant::now();
        let r = c.quiesce(req).await.unwrap().into_inner();
        assert_eq!(r.frozen_count, 1, "{r:?}");
        t.elapsed()
    }

    /// Thaw; returns how long the call took.
    pub async fn thaw(c: &mut GuestClient<Channel>) -> Duration {
        let t = Instant::now();
        let r = c.thaw(ThawRequest {}).await.unwrap().into_inner();
        assert_eq!(r.thawed_count, 1, "{r:?}");
        t.elapsed()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.state_dir);
    }
}

/// A request for `msg`, carrying `traceparent` as gRPC metadata when one is given.
pub fn traced<T>(msg: T, traceparent: Option<&str>) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    if let Some(tp) = traceparent {
        req.metadata_mut()
            .insert("traceparent", tp.parse().unwrap());
    }
    req
}
