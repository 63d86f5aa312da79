//! gRPC channels to an agent (unix socket or tcp) and the bounded wait every RPC in the
//! tests goes through: a wrong freeze order or a stuck agent must fail a test, not hang it.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use guest_proto::v1::guest_client::GuestClient;
use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint};

use crate::error::{FixtureError, Result};

/// Default bound on one RPC.
pub const RPC_TIMEOUT: Duration = Duration::from_secs(20);

/// Default bound on establishing a connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs `fut`, failing with [`FixtureError::Timeout`] if it takes longer than `after`.
pub async fn within<F: Future>(after: Duration, what: &str, fut: F) -> Result<F::Output> {
    tokio::time::timeout(after, fut)
        .await
        .map_err(|_| FixtureError::Timeout {
            what: what.to_string(),
            after,
        })
}

/// A channel over the unix socket at `path`.
pub async fn unix_channel(path: &Path) -> Result<Channel> {
    let path: PathBuf = path.to_path_buf();
    let uri = format!("unix://{}", path.display());
    let endpoint = Endpoint::from_static("http://agent.invalid").connect_timeout(CONNECT_TIMEOUT);
    let connect = endpoint.connect_with_connector(tower::service_fn(move |_| {
        let path = path.clone();
        async move {
            Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?))
        }
    }));
    within(CONNECT_TIMEOUT, &format!("connect to {uri}"), connect)
        .await?
        .map_err(|e| FixtureError::Connect {
            uri,
            reason: format!("{e:?}"),
        })
}

/// A channel to `127.0.0.1:port` (or any `host:port`).
pub async fn tcp_channel(addr: &str) -> Result<Channel> {
    let uri = format!("http://{addr}");
    let ep = Endpoint::from_shared(uri.clone())
        .map_err(|e| FixtureError::Connect {
            uri: uri.clone(),
            reason: e.to_string(),
        })?
        .connect_timeout(CONNECT_TIMEOUT);
    within(CONNECT_TIMEOUT, &format!("connect to {uri}"), ep.connect())
        .await?
        .map_err(|e| FixtureError::Connect {
            uri,
            reason: format!("{e:?}"),
        })
}

/// A Guest client over the unix socket at `path`.
pub async fn unix_client(path: &Path) -> Result<GuestClient<Channel>> {
    Ok(GuestClient::new(unix_channel(path).await?))
}

/// A free TCP port on 127.0.0.1 (bound and released; fine for tests that start a server
/// on it right after).
pub fn free_tcp_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| FixtureError::io("bind 127.0.0.1:0", e))?;
    Ok(l.local_addr()
        .map_err(|e| FixtureError::io("local_addr", e))?
        .port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn within_times_out() {
        let e = within(
            Duration::from_millis(50),
            "sleep",
            tokio::time::sleep(Duration::from_secs(5)),
        )
        .await
        .unwrap_err();
        assert!(matches!(e, FixtureError::Timeout { .. }), "{e}");
        assert_eq!(
            within(Duration::from_secs(1), "now", async { 7 })
                .await
                .unwrap(),
            7
        );
    }

    #[tokio::test]
    async fn connecting_to_a_missing_socket_fails_quickly() {
        let e = unix_channel(Path::new("/var/tmp/no-such-dir-gatest/x.sock"))
            .await
            .unwrap_err();
        assert!(matches!(e, FixtureError::Connect { .. }), "{e}");
    }

    #[test]
    fn free_ports_are_nonzero() {
        assert_ne!(free_tcp_port().unwrap(), 0);
    }
}
