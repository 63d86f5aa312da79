//! One module per command; this file connects, dispatches, and holds the RPC wrapper that
//! applies the per-call timeout.

mod freeze;
mod init;
mod ping;
mod shutdown;

use std::future::Future;
use std::time::Duration;

use guest_proto::v1::guest_client::GuestClient;
use guest_transport::{connect_channel_with, ClientTls};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::cli::{Cli, Command};
use crate::error::CtlError;
use crate::init_spec;
use crate::{proxy, snapshot};

/// What every command needs: the client, the per-call timeout and the output mode.
pub struct Ctx {
    /// gRPC client over the chosen transport.
    pub client: GuestClient<Channel>,
    /// Per-RPC timeout.
    pub timeout: Duration,
    /// `--json` was given.
    pub json: bool,
}

/// Runs the command `cli` describes; returns the exit code of a command that ended
/// normally (0, or a snapshot's own codes).
pub async fn run(cli: Cli) -> Result<u8, CtlError> {
    // Build the init request first: a bad spec is a usage error, no agent needed.
    let init_request = match &cli.command {
        Command::Init(args) => Some(init_spec::request_from_args(args)?),
        _ => None,
    };
    let tls = match &cli.tls_ca {
        Some(ca) => Some(ClientTls::from_pem_files(
            ca,
            cli.tls_cert.as_deref(),
            cli.tls_key.as_deref(),
        )?),
        None => None,
    };
    if let Command::Proxy(args) = &cli.command {
        proxy::run(proxy::ProxyOptions {
            tls: tls.clone(),
            listen: args.listen,
            targets: args.targets.clone(),
            targets_file: args.targets_file.clone(),
            scrape_timeout: args.scrape_timeout,
            sd: proxy::SdOptions {
                address: args.sd_address.clone(),
                labels: args.sd_labels.clone(),
                file: args.sd_file.clone(),
            },
        })
        .await?;
        return Ok(0);
    }
    if let Command::OtlpRelay(args) = &cli.command {
        crate::relay::run(crate::relay::RelayOptions {
            vms: args.vms.clone(),
            vms_file: args.vms_file.clone(),
            vsock_port: args.vsock_port,
            vm_cids: args.vm_cids.clone(),
            upstream: args.upstream.clone(),
            attributes: args.attributes.clone(),
            timeout: args.timeout,
        })
        .await?;
        return Ok(0);
    }
    let connect = cli.connect.clone().ok_or(CtlError::MissingConnect)?;
    let command = match cli.command {
        Command::Snapshot(args) => {
            return Ok(snapshot::run(snapshot::SnapshotOptions {
                connect,
                connect_timeout: cli.connect_timeout,
                tls: tls.clone(),
                pause_pid: args.pause_pid,
                quiesce_timeout: args.quiesce_timeout,
                thaw_deadline: args.thaw_deadline,
                mountpoints: args.mountpoints,
                otlp_endpoint: args.otlp_endpoint,
                otlp_timeout: args.otlp_timeout,
                command: args.command,
                json: cli.json,
            })
            .await)
        }
        other => other,
    };
    let channel = connect_channel_with(&connect, cli.connect_timeout, tls.as_ref()).await?;
    let mut ctx = Ctx {
        client: GuestClient::new(channel),
        timeout: cli.timeout,
        json: cli.json,
    };
    match command {
        Command::Ping { count, interval_ms } => {
            ping::run(&mut ctx, count, Duration::from_millis(interval_ms)).await
        }
        Command::Init(_) => init::run(&mut ctx, init_request.unwrap_or_default()).await,
        Command::Quiesce { mountpoints } => freeze::quiesce(&mut ctx, mountpoints).await,
        Command::Thaw => freeze::thaw(&mut ctx).await,
        Command::Status => freeze::status(&mut ctx).await,
        Command::Shutdown => shutdown::run(&mut ctx).await,
        Command::Snapshot(_) | Command::Proxy(_) | Command::OtlpRelay(_) => Ok(()),
    }
    .map_err(|e| tls_hint(&connect, e))?;
    Ok(0)
}

/// With TLS 1.3 a server that refuses our client certificate says so only after the
/// client's side of the handshake is done, so the refusal surfaces as a transport error of
/// the first call. On a `tls+tcp://` connection such an error is reported as a connection
/// failure that names the likely cause.
fn tls_hint(uri: &guest_transport::ConnectUri, e: CtlError) -> CtlError {
    match (uri, e) {
        (guest_transport::ConnectUri::TlsTcp { .. }, CtlError::Rpc { op, status })
            if matches!(
                status.code(),
                tonic::Code::Unknown | tonic::Code::Unavailable | tonic::Code::Cancelled
            ) && (status.message().contains("transport error")
                // hyper reports a connection the server closed before answering as a
                // cancelled request, depending on when the TLS alert arrives.
                || status.message().contains("operation was canceled")) =>
        {
            CtlError::TlsRefused {
                op,
                uri: uri.to_string(),
            }
        }
        (_, CtlError::Rpc { op, status })
            if matches!(
                status.code(),
                tonic::Code::Unknown | tonic::Code::Unavailable | tonic::Code::Cancelled
            ) && (status.message().contains("transport error")
                || status.message().contains("operation was canceled")) =>
        {
            CtlError::ConnectionBroken {
                op,
                uri: uri.to_string(),
                detail: format!("{:?}: {}", status.code(), status.message()),
            }
        }
        (_, e) => e,
    }
}

/// Wraps a message in a request carrying the deadline (sent as `grpc-timeout`).
pub fn request<T>(message: T, timeout: Duration) -> Request<T> {
    let mut request = Request::new(message);
    request.set_timeout(timeout);
    request
}

/// Awaits an RPC, bounded locally by `timeout` as well, so a silent agent or a stuck
/// connection cannot hang guestctl even if the server ignores the deadline.
pub async fn rpc<R>(
    op: &'static str,
    timeout: Duration,
    call: impl Future<Output = Result<Response<R>, Status>>,
) -> Result<R, CtlError> {
    match tokio::time::timeout(timeout, call).await {
        Err(_) => Err(CtlError::Timeout { op, after: timeout }),
        Ok(Err(status)) => Err(CtlError::from_status(op, status, timeout)),
        Ok(Ok(response)) => Ok(response.into_inner()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn rpc_times_out_locally() {
        let never = std::future::pending::<Result<Response<()>, Status>>();
        let err = rpc("thaw", Duration::from_millis(50), never)
            .await
            .unwrap_err();
        assert!(matches!(err, CtlError::Timeout { op: "thaw", .. }), "{err}");
    }

    #[tokio::test]
    async fn rpc_maps_status_and_value() {
        let err = rpc("quiesce", Duration::from_secs(1), async {
            Err::<Response<()>, _>(Status::invalid_argument("/x is not a mountpoint"))
        })
        .await
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "quiesce failed: INVALID_ARGUMENT: /x is not a mountpoint"
        );
        let v = rpc("ping", Duration::from_secs(1), async {
            Ok(Response::new(7))
        })
        .await
        .unwrap();
        assert_eq!(v, 7);
    }

    #[test]
    fn transport_errors_on_tls_name_the_client_certificate() {
        let tls: guest_transport::ConnectUri = "tls+tcp://agent:1".parse().unwrap();
        let plain: guest_transport::ConnectUri = "tcp://agent:1".parse().unwrap();
        let rpc = |s| CtlError::Rpc {
            op: "ping",
            status: s,
        };
        let e = tls_hint(&tls, rpc(Status::unknown("transport error")));
        assert!(matches!(e, CtlError::TlsRefused { .. }), "{e}");
        assert_eq!(e.exit_code(), std::process::ExitCode::from(3));
        assert!(e.to_string().contains("refused our client certificate"));
        let e = tls_hint(&tls, rpc(Status::cancelled("operation was canceled")));
        assert!(matches!(e, CtlError::TlsRefused { .. }), "{e}");
        // Without TLS, a connection that breaks before any answer is a connection failure.
        for status in [
            Status::cancelled("operation was canceled"),
            Status::unknown("transport error"),
        ] {
            let e = tls_hint(&plain, rpc(status));
            assert!(matches!(e, CtlError::ConnectionBroken { .. }), "{e}");
            assert_eq!(e.exit_code(), std::process::ExitCode::from(3));
        }
        let e = tls_hint(&tls, rpc(Status::failed_precondition("already frozen")));
        assert!(matches!(e, CtlError::Rpc { .. }));
    }

    #[test]
    fn requests_carry_the_deadline() {
        let r = request((), Duration::from_secs(3));
        assert_eq!(r.metadata().get("grpc-timeout").unwrap(), "3000000u");
    }
}
