//! Transports and the standard gRPC services: the unix socket is private (0600), loopback
//! TCP works, a non-loopback TCP listener is refused without `--allow-remote`, gRPC health
//! says SERVING, reflection lists the Guest service, oversized requests are refused.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::time::Duration;

use guest_proto::v1::guest_client::GuestClient;
use guest_proto::v1::{PingRequest, QuiesceRequest};
use system_tests::client::{free_tcp_port, tcp_channel, unix_channel, within, RPC_TIMEOUT};
use system_tests::{guestctl, Agent, NetNs, Scratch};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::ServerReflectionRequest;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_socket_is_mode_0600() -> anyhow::Result<()> {
    let s = Scratch::new()?;
    let agent = Agent::start(&s, &[]).await?;
    let meta = std::fs::metadata(agent.socket())?;
    assert!(meta.file_type().is_socket());
    assert_eq!(
        meta.permissions().mode() & 0o7777,
        0o600,
        "mode {:o}",
        meta.permissions().mode()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_tcp_serves_grpc_and_guestctl() -> anyhow::Result<()> {
    let s = Scratch::new()?;
    let port = free_tcp_port()?;
    let addr = format!("127.0.0.1:{port}");
    let agent = Agent::start(&s, &["--listen", &format!("tcp://{addr}")]).await?;
    let mut c = GuestClient::new(tcp_channel(&addr).await?);
    let v = within(RPC_TIMEOUT, "Ping over tcp", c.ping(PingRequest {}))
        .await??
        .into_inner();
    assert!(!v.version.is_empty());
    let ctl = guestctl::run(&["--connect", &format!("tcp://{addr}"), "--json", "ping"]).await?;
    assert_eq!(ctl.code, Some(0), "{ctl}");
    assert_eq!(ctl.json()?["version"], v.version.as_str(), "{ctl}");
    drop(agent);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_loopback_tcp_is_refused_without_allow_remote() -> anyhow::Result<()> {
    let s = Scratch::new()?;
    let port = free_tcp_port()?;
    let mut agent = Agent::builder(&s)
        .args(["--listen".to_string(), format!("tcp://0.0.0.0:{port}")])
        .spawn()?;
    let st = agent.wait_exit(Duration::from_secs(10)).await?;
    assert!(
        !st.success(),
        "an agent listening on 0.0.0.0 without --allow-remote must not start"
    );
    let logs = agent.logs();
    assert!(
        logs.contains("--allow-remote") || logs.contains("loopback"),
        "the refusal says why:\n{logs}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_remote_permits_a_wildcard_listener() -> anyhow::Result<()> {
    // Inside a private network namespace, so the wildcard listener is reachable from nowhere.
    let s = Scratch::new()?;
    let ns = NetNs::new()?;
    ns.ip(&["link", "set", "lo", "up"])?;
    let agent = Agent::builder(&s)
        .netns(ns.name())
        .args(["--listen", "tcp://0.0.0.0:2695", "--allow-remote"])
        .start()
        .await?;
    let mut rpc = agent.rpc().await?;
    rpc.ping().await??;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_health_says_serving() -> anyhow::Result<()> {
    let s = Scratch::new()?;
    let agent = Agent::start(&s, &[]).await?;
    let mut h = HealthClient::new(unix_channel(agent.socket()).await?);
    for service in ["", guest_proto::SERVICE_NAME] {
        let r = within(
            RPC_TIMEOUT,
            "Health/Check",
            h.check(HealthCheckRequest {
                service: service.to_string(),
            }),
        )
        .await??
        .into_inner();
        assert_eq!(r.status(), ServingStatus::Serving, "service {service:?}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_lists_the_guest_service() -> anyhow::Result<()> {
    let s = Scratch::new()?;
    let agent = Agent::start(&s, &[]).await?;
    let mut r = ServerReflectionClient::new(unix_channel(agent.socket()).await?);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = within(
        RPC_TIMEOUT,
        "ServerReflectionInfo",
        r.server_reflection_info(tokio_stream::iter(vec![req])),
    )
    .await??
    .into_inner();
    let msg = within(RPC_TIMEOUT, "reflection answer", stream.message())
        .await??
        .expect("one answer");
    let Some(MessageResponse::ListServicesResponse(list)) = msg.message_response else {
        panic!("unexpected reflection answer: {msg:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(names.iter().any(|n| n == "boxlite.v1.Guest"), "{names:?}");
    assert!(
        names.iter().any(|n| n == "grpc.health.v1.Health"),
        "{names:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_request_is_resource_exhausted_and_the_agent_survives() -> anyhow::Result<()> {
    let s = Scratch::new()?;
    let agent = Agent::start(&s, &["--max-message-bytes", "1024"]).await?;
    let mut c = agent.client().await?;
    let big: Vec<String> = (0..100)
        .map(|i| format!("{}/{i:0>40}", s.path().display()))
        .collect();
    let e = within(
        RPC_TIMEOUT,
        "oversized Quiesce",
        c.quiesce(QuiesceRequest { mountpoints: big }),
    )
    .await?
    .expect_err("a request over --max-message-bytes is refused");
    // The agent's --help promises ResourceExhausted (the gRPC code for a message over a limit).
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    let mut rpc = agent.rpc().await?;
    rpc.ping().await??;
    assert!(!rpc.status().await??.frozen);
    Ok(())
}
