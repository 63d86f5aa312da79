//! The freezer's metrics against the real agent: a watchdog thaw is counted as such, and gRPC
//! errors are counted by their code.

mod telemetry_support;

use std::time::Duration;

use guest_proto::v1::{PingRequest, PingResponse, QuiesceRequest};
use telemetry_support::{not_root, sample, wait_for, Agent, LoopFs};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watchdog_thaw_is_counted_with_result_watchdog() {
    if not_root() {
        return;
    }
    let fs = LoopFs::new(16);
    let agent = Agent::start(fs.scratch(), &["--ebpf", "off", "--freeze-timeout", "1"]);
    let mut c = agent.client().await;
    Agent::quiesce(&mut c, &fs.mp(), None).await;
    let text = tokio::task::spawn_blocking(move || {
        let text = wait_for(Duration::from_secs(10), || {
            let t = agent.scrape();
            (sample(&t, "guest_fs_watchdog_thaws_total") == Some(1.0)).then_some(t)
        });
        drop(agent);
        text
    })
    .await
    .unwrap()
    .expect("the watchdog thawed");
    let mp = fs.mp();
    for (series, want) in [
        (
            "guest_fs_freeze_operations_total{op=\"thaw\",result=\"watchdog\"}".to_string(),
            1.0,
        ),
        (
            "guest_fs_freeze_operations_total{op=\"thaw\",result=\"success\"}".to_string(),
            0.0,
        ),
        ("guest_fs_frozen_filesystems".to_string(), 0.0),
        (
            format!("guest_fs_frozen{{fstype=\"ext4\",mountpoint=\"{mp}\"}}"),
            0.0,
        ),
        (
            format!(
                "guest_fs_freeze_duration_seconds_count{{fstype=\"ext4\",mountpoint=\"{mp}\",origin=\"agent\"}}"
            ),
            1.0,
        ),
    ] {
        assert_eq!(sample(&text, &series), Some(want), "{series}\n{text}");
    }
    let frozen = sample(
        &text,
        &format!(
            "guest_fs_freeze_duration_seconds_sum{{fstype=\"ext4\",mountpoint=\"{mp}\",origin=\"agent\"}}"
        ),
    )
    .unwrap();
    assert!((1.0..5.0).contains(&frozen), "frozen for {frozen} s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_errors_are_counted_by_code_and_unknown_methods_as_other() {
    if not_root() {
        return;
    }
    let fs = LoopFs::new(16);
    let agent = Agent::start(fs.scratch(), &["--ebpf", "off"]);
    let mut c = agent.client().await;
    let err = c
        .quiesce(QuiesceRequest {
            mountpoints: vec!["relative/path".into()],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    // A method the server does not have.
    let mut grpc = tonic::client::Grpc::new(
        tonic::transport::Endpoint::from_shared(format!("http://{}", agent.grpc))
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );
    grpc.ready().await.unwrap();
    let unknown = grpc
        .unary(
            tonic::Request::new(PingRequest {}),
            "/boxlite.v1.Guest/NoSuchMethod".parse().unwrap(),
            tonic_prost::ProstCodec::<PingRequest, PingResponse>::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::Unimplemented);
    let text = agent.scrape();
    assert_eq!(
        sample(
            &text,
            "guest_grpc_server_requests_total{code=\"InvalidArgument\",method=\"Quiesce\",service=\"boxlite.v1.Guest\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "guest_grpc_server_requests_total{code=\"Unimplemented\",method=\"other\",service=\"other\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert!(!text.contains("NoSuchMethod"), "{text}");
}
