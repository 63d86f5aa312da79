//! End to end: the real guestctl binary against a small in-test gRPC server implementing
//! `boxlite.v1.Guest`, served through guest-transport's unix listener (and, for hvsock,
//! behind a fake Firecracker-style VMM socket).

mod support;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use guest_proto::v1::guest_init_response::Result as InitResult;
use guest_proto::v1::guest_server::{Guest, GuestServer};
use guest_proto::v1::{
    volume, FilesystemResult, FreezeStatusRequest, FreezeStatusResponse, FrozenFilesystem,
    FsOutcome, GuestInitError, GuestInitRequest, GuestInitResponse, GuestInitSuccess, PingRequest,
    PingResponse, QuiesceRequest, QuiesceResponse, ShutdownRequest, ShutdownResponse, ThawRequest,
    ThawResponse,
};
use guest_transport::{bind, ListenOptions, ListenUri};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tonic::{Request, Response, Status};

/// What the fake agent was asked.
#[derive(Default)]
struct Seen {
    init: Option<GuestInitRequest>,
    quiesce_mountpoints: Option<Vec<String>>,
    shutdown: bool,
}

#[derive(Clone, Default)]
struct FakeAgent {
    seen: Arc<Mutex<Seen>>,
    /// FreezeStatus never answers (to test --timeout).
    slow_status: bool,
}

fn fs_result(mountpoint: &str, outcome: FsOutcome, detail: &str) -> FilesystemResult {
    FilesystemResult {
        mountpoint: mountpoint.into(),
        fstype: "ext4".into(),
        device: "/dev/loop7".into(),
        outcome: outcome as i32,
        detail: detail.into(),
        dev_id: "7:7".into(),
        duration_us: 250,
    }
}

#[tonic::async_trait]
impl Guest for FakeAgent {
    async fn init(
        &self,
        request: Request<GuestInitRequest>,
    ) -> Result<Response<GuestInitResponse>, Status> {
        let req = request.into_inner();
        let result = if req.volumes.iter().any(|v| v.mount_point == "/reject") {
            InitResult::Error(GuestInitError {
                reason: "device /dev/nope does not exist".into(),
            })
        } else {
            InitResult::Success(GuestInitSuccess {})
        };
        self.seen.lock().unwrap().init = Some(req);
        Ok(Response::new(GuestInitResponse {
            result: Some(result),
        }))
    }

    async fn ping(&self, _: Request<PingRequest>) -> Result<Response<PingResponse>, Status> {
        Ok(Response::new(PingResponse {
            version: "0.1.0-test".into(),
        }))
    }

    async fn shutdown(
        &self,
        _: Request<ShutdownRequest>,
    ) -> Result<Response<ShutdownResponse>, Status> {
        self.seen.lock().unwrap().shutdown = true;
        Ok(Response::new(ShutdownResponse {}))
    }

    async fn quiesce(
        &self,
        request: Request<QuiesceRequest>,
    ) -> Result<Response<QuiesceResponse>, Status> {
        let mountpoints = request.into_inner().mountpoints;
        if mountpoints.iter().any(|m| m == "/busy") {
            return Err(Status::failed_precondition("already frozen by this agent"));
        }
        self.seen.lock().unwrap().quiesce_mountpoints = Some(mountpoints);
        Ok(Response::new(QuiesceResponse {
            frozen_count: 1,
            filesystems: vec![
                fs_result("/mnt/a", FsOutcome::Frozen, ""),
                fs_result("/proc", FsOutcome::Skipped, "virtual filesystem"),
            ],
            watchdog_deadline_unix_ms: 4_102_444_799_999,
        }))
    }

    async fn thaw(&self, _: Request<ThawRequest>) -> Result<Response<ThawResponse>, Status> {
        Ok(Response::new(ThawResponse {
            thawed_count: 1,
            filesystems: vec![fs_result("/mnt/a", FsOutcome::Thawed, "")],
        }))
    }

    async fn freeze_status(
        &self,
        _: Request<FreezeStatusRequest>,
    ) -> Result<Response<FreezeStatusResponse>, Status> {
        if self.slow_status {
            tokio::time::sleep(Duration::from_secs(60)).await;
        }
        Ok(Response::new(FreezeStatusResponse {
            frozen: true,
            filesystems: vec![FrozenFilesystem {
                mountpoint: "/mnt/a".into(),
                fstype: "ext4".into(),
                device: "/dev/loop7".into(),
                dev_id: "7:7".into(),
                frozen_since_unix_ms: 1_000,
            }],
            frozen_since_unix_ms: 1_000,
            watchdog_deadline_unix_ms: 4_102_444_799_999,
            watchdog_timeout_ms: 300_000,
            operation_in_progress: false,
            ..FreezeStatusResponse::default()
        }))
    }
}

/// A running fake agent on a unix socket in its own temp dir.
struct Agent {
    dir: tempfile::TempDir,
    uri: String,
    seen: Arc<Mutex<Seen>>,
}

async fn start(fake: FakeAgent) -> Agent {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.sock");
    let listener = bind(
        &ListenUri::Unix { path: path.clone() },
        &ListenOptions::default(),
    )
    .await
    .unwrap();
    let seen = fake.seen.clone();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(GuestServer::new(fake))
            .serve_with_incoming(listener.into_incoming()),
    );
    Agent {
        uri: format!("unix://{}", path.display()),
        dir,
        seen,
    }
}

async fn guestctl(args: &[&str]) -> Output {
    support::guestctl(args, Duration::from_secs(60)).await
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json(o: &Output) -> serde_json::Value {
    assert_eq!(o.status.code(), Some(0), "stderr: {}", stderr(o));
    let text = stdout(o);
    assert_eq!(
        text.lines().count(),
        1,
        "one JSON object on one line: {text}"
    );
    serde_json::from_str(&text).unwrap()
}

#[tokio::test]
async fn ping_json_and_text() {
    let agent = start(FakeAgent::default()).await;
    let o = guestctl(&[
        "--connect",
        &agent.uri,
        "--json",
        "ping",
        "--count",
        "3",
        "--interval-ms",
        "10",
    ])
    .await;
    let v = json(&o);
    assert_eq!(v["version"], "0.1.0-test");
    let rtts = v["rtt_ms"].as_array().unwrap();
    assert_eq!(rtts.len(), 3);
    assert!(rtts.iter().all(|r| r.as_f64().unwrap() > 0.0));

    let o = guestctl(&["--connect", &agent.uri, "ping"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.starts_with("pong from guest-agent 0.1.0-test in ") && out.ends_with(" ms\n"),
        "{out}"
    );
}

#[tokio::test]
async fn connect_uri_from_environment() {
    let agent = start(FakeAgent::default()).await;
    let o = tokio::process::Command::new(env!("CARGO_BIN_EXE_guestctl"))
        .args(["--json", "ping"])
        .env("GUESTCTL_CONNECT", &agent.uri)
        .output()
        .await
        .unwrap();
    assert_eq!(json(&o)["version"], "0.1.0-test");
}

#[tokio::test]
async fn quiesce_thaw_status_shutdown() {
    let agent = start(FakeAgent::default()).await;
    let o = guestctl(&[
        "--connect",
        &agent.uri,
        "--json",
        "quiesce",
        "--mountpoint",
        "/mnt/a",
        "--mountpoint",
        "/mnt/b",
    ])
    .await;
    let v = json(&o);
    assert_eq!(v["frozen_count"], 1);
    assert_eq!(v["filesystems"][0]["outcome"], "frozen");
    assert_eq!(v["filesystems"][1]["outcome"], "skipped");
    assert_eq!(v["filesystems"][1]["detail"], "virtual filesystem");
    assert_eq!(
        agent.seen.lock().unwrap().quiesce_mountpoints.as_deref(),
        Some(&["/mnt/a".to_string(), "/mnt/b".to_string()][..])
    );

    let o = guestctl(&["--connect", &agent.uri, "quiesce"]).await;
    assert_eq!(o.status.code(), Some(0));
    let out = stdout(&o);
    assert!(
        out.starts_with(
            "froze 1 filesystem(s)\nMOUNTPOINT  FSTYPE  DEVICE      OUTCOME  DURATION  DETAIL\n"
        ),
        "{out}"
    );
    assert!(
        out.contains("watchdog: thaws automatically at 2099-12-31T23:59:59.999Z"),
        "{out}"
    );

    let v = json(&guestctl(&["--connect", &agent.uri, "--json", "thaw"]).await);
    assert_eq!(v["thawed_count"], 1);
    assert_eq!(v["filesystems"][0]["outcome"], "thawed");

    let v = json(&guestctl(&["--connect", &agent.uri, "--json", "status"]).await);
    assert_eq!(v["frozen"], true);
    assert_eq!(v["filesystems"][0]["mountpoint"], "/mnt/a");
    assert!(v["watchdog_remaining_ms"].as_u64().unwrap() > 0);
    let o = guestctl(&["--connect", &agent.uri, "status"]).await;
    assert!(
        stdout(&o).starts_with(
            "frozen by the agent: yes, 1 filesystem(s) since 1970-01-01T00:00:01.000Z"
        ),
        "{}",
        stdout(&o)
    );

    let v = json(&guestctl(&["--connect", &agent.uri, "--json", "shutdown"]).await);
    assert_eq!(v["shutdown"], true);
    assert!(agent.seen.lock().unwrap().shutdown);
}

#[tokio::test]
async fn agent_error_exits_1_with_one_line() {
    let agent = start(FakeAgent::default()).await;
    let o = guestctl(&["--connect", &agent.uri, "quiesce", "--mountpoint", "/busy"]).await;
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stderr(&o),
        "guestctl: quiesce failed: FAILED_PRECONDITION: already frozen by this agent\n"
    );
    assert!(o.stdout.is_empty());
}

#[tokio::test]
async fn init_from_flags_and_file() {
    let agent = start(FakeAgent::default()).await;
    let o = guestctl(&[
        "--connect",
        &agent.uri,
        "init",
        "--volume",
        "/data=/dev/vdb,format",
        "--virtiofs",
        "/shared=share0,ro",
        "--interface",
        "eth0",
        "--ip",
        "10.0.2.15/24",
        "--gateway",
        "10.0.2.2",
    ])
    .await;
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        "guest initialised: 2 volume(s), network configured\n"
    );
    let sent = agent.seen.lock().unwrap().init.clone().unwrap();
    assert_eq!(sent.volumes.len(), 2);
    assert!(matches!(
        &sent.volumes[0].source,
        Some(volume::Source::BlockDevice(b)) if b.device == "/dev/vdb" && b.need_format && b.filesystem == 1
    ));
    assert_eq!(sent.network.unwrap().gateway.as_deref(), Some("10.0.2.2"));

    let file = agent.dir.path().join("reject.json");
    std::fs::write(
        &file,
        r#"{"volumes":[{"mount_point":"/reject","block_device":{"device":"/dev/nope"}}]}"#,
    )
    .unwrap();
    let o = guestctl(&[
        "--connect",
        &agent.uri,
        "init",
        "--file",
        file.to_str().unwrap(),
    ])
    .await;
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stderr(&o),
        "guestctl: init failed: device /dev/nope does not exist\n"
    );
}

#[tokio::test]
async fn bad_init_spec_is_a_usage_error_without_connecting() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.json");
    std::fs::write(
        &file,
        r#"{"volumes":[{"mount_point":"/d","blockdevice":{}}]}"#,
    )
    .unwrap();
    // The agent URI does not exist: the spec must be rejected before connecting.
    let o = guestctl(&[
        "--connect",
        "unix:///nonexistent/a.sock",
        "init",
        "--file",
        file.to_str().unwrap(),
    ])
    .await;
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(
        err.starts_with("guestctl: ") && err.contains("unknown field `blockdevice`"),
        "{err}"
    );
}

#[tokio::test]
async fn usage_errors_exit_2() {
    let o = guestctl(&["--connect", "vsock://three:2695", "ping"]).await;
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("bad vsock CID \"three\""),
        "{}",
        stderr(&o)
    );
    let o = guestctl(&["ping"]).await;
    assert_eq!(o.status.code(), Some(2), "missing --connect");
    let o = guestctl(&["--help"]).await;
    assert_eq!(o.status.code(), Some(0));
    assert!(
        stdout(&o).contains("4  an RPC timed out"),
        "exit codes documented"
    );
}

#[tokio::test]
async fn unreachable_agent_exits_3() {
    let o = guestctl(&["--connect", "unix:///nonexistent/a.sock", "ping"]).await;
    assert_eq!(o.status.code(), Some(3));
    let err = stderr(&o);
    assert!(
        err.starts_with("guestctl: connecting to unix:///nonexistent/a.sock failed: "),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1);
}

#[tokio::test]
async fn slow_rpc_exits_4() {
    let agent = start(FakeAgent {
        slow_status: true,
        ..FakeAgent::default()
    })
    .await;
    let started = Instant::now();
    let o = guestctl(&["--connect", &agent.uri, "--timeout", "0.3", "status"]).await;
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert_eq!(stderr(&o), "guestctl: status timed out after 300ms\n");
}

/// A fake Firecracker VMM: answers `CONNECT <port>` with `OK`, then splices the
/// connection to the agent's unix socket; or closes right away when `refuse`.
async fn fake_vmm(dir: &Path, agent: PathBuf, refuse: bool) -> PathBuf {
    let path = dir.join("vm.sock");
    let listener = UnixListener::bind(&path).unwrap();
    tokio::spawn(async move {
        loop {
            let (mut host, _) = listener.accept().await.unwrap();
            let agent = agent.clone();
            tokio::spawn(async move {
                let mut line = Vec::new();
                let mut b = [0u8; 1];
                while host.read_exact(&mut b).await.is_ok() && b[0] != b'\n' {
                    line.push(b[0]);
                }
                assert_eq!(line, b"CONNECT 2695");
                if refuse {
                    return;
                }
                host.write_all(b"OK 1073741824\n").await.unwrap();
                let mut guest = UnixStream::connect(agent).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut host, &mut guest).await;
            });
        }
    });
    path
}

#[tokio::test]
async fn hybrid_vsock_end_to_end() {
    let agent = start(FakeAgent::default()).await;
    let agent_path = agent.dir.path().join("agent.sock");
    let vmm_dir = tempfile::tempdir().unwrap();
    let vm_sock = fake_vmm(vmm_dir.path(), agent_path.clone(), false).await;
    let uri = format!("hvsock://{}:2695", vm_sock.display());
    let v = json(&guestctl(&["--connect", &uri, "--json", "ping"]).await);
    assert_eq!(v["version"], "0.1.0-test");

    let refusing_dir = tempfile::tempdir().unwrap();
    let vm_sock = fake_vmm(refusing_dir.path(), agent_path, true).await;
    let uri = format!("hvsock://{}:2695", vm_sock.display());
    let o = guestctl(&["--connect", &uri, "ping"]).await;
    assert_eq!(o.status.code(), Some(3));
    let err = stderr(&o);
    assert!(
        err.contains("hybrid vsock handshake over hvsock://")
            && err.contains("closed the connection"),
        "{err}"
    );
}

/// A VMM socket that answers `reply` to the CONNECT line (or nothing at all when `None`),
/// then holds the connection open.
async fn malformed_vmm(dir: &Path, reply: Option<&'static [u8]>) -> PathBuf {
    let path = dir.join("bad-vm.sock");
    let listener = UnixListener::bind(&path).unwrap();
    tokio::spawn(async move {
        loop {
            let (mut host, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut b = [0u8; 1];
                while host.read_exact(&mut b).await.is_ok() && b[0] != b'\n' {}
                if let Some(r) = reply {
                    let _ = host.write_all(r).await;
                }
                tokio::time::sleep(Duration::from_secs(30)).await;
            });
        }
    });
    path
}

#[tokio::test]
async fn malformed_hybrid_vsock_handshake_is_a_clear_error_not_a_hang() {
    let cases: [(Option<&'static [u8]>, &str); 4] = [
        (
            Some(b"HTTP/1.1 400 Bad Request\r\n"),
            "is not \"OK <port>\"",
        ),
        (Some(b"OK notaport\n"), "carries a bad host port"),
        (Some(&[b'x'; 200]), "longer than 64 bytes"),
        (None, "no reply to CONNECT 2695 within 500ms"),
    ];
    for (reply, want) in cases {
        let dir = tempfile::tempdir().unwrap();
        let sock = malformed_vmm(dir.path(), reply).await;
        let uri = format!("hvsock://{}:2695", sock.display());
        // The silent case needs the short timeout; the fake VMM answers the others at once,
        // but on a busy machine not always within half a second.
        let timeout = if reply.is_none() { "0.5" } else { "5" };
        let started = Instant::now();
        let o = guestctl(&["--connect", &uri, "--connect-timeout", timeout, "ping"]).await;
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{want}: took {:?}",
            started.elapsed()
        );
        assert_eq!(o.status.code(), Some(3), "{want}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(
            err.starts_with("guestctl: hybrid vsock handshake over hvsock://")
                && err.contains(want),
            "{want}: {err}"
        );
    }
}
