//! Client side: open a byte stream or a tonic `Channel` to a [`ConnectUri`], bounded by a
//! timeout so a missing guest or a silent VMM never hangs the caller.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};
use tokio::time::Instant;
use tokio_vsock::{VsockAddr, VsockStream};
use tonic::transport::{Channel, Endpoint};

use crate::error::{HandshakeError, TransportError};
use crate::hybrid;
use crate::quiet::QuietStream;
use crate::tls::ClientTls;
use crate::uri::ConnectUri;

/// A connected bidirectional byte stream of any transport.
pub trait IoStream: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> IoStream for T {}

/// A boxed [`IoStream`], as returned by [`connect_stream`].
pub type BoxedStream = Box<dyn IoStream>;

/// Connects to `uri` (including the hybrid vsock handshake for `hvsock://`), all within
/// `timeout`. `tls+tcp://` needs [`connect_stream_with`].
pub async fn connect_stream(
    uri: &ConnectUri,
    timeout: Duration,
) -> Result<BoxedStream, TransportError> {
    connect_stream_with(uri, timeout, None).await
}

/// Like [`connect_stream`], with the TLS client settings that `tls+tcp://` needs (ignored
/// by the other transports).
pub async fn connect_stream_with(
    uri: &ConnectUri,
    timeout: Duration,
    tls: Option<&ClientTls>,
) -> Result<BoxedStream, TransportError> {
    let text = uri.to_string();
    let deadline = Instant::now() + timeout;
    let connect_err = |source| TransportError::Connect {
        uri: text.clone(),
        source,
    };
    let timed_out = || TransportError::ConnectTimeout {
        uri: text.clone(),
        timeout,
    };
    match uri {
        ConnectUri::Vsock { cid, port } => {
            let s = tokio::time::timeout_at(
                deadline,
                VsockStream::connect(VsockAddr::new(*cid, *port)),
            )
            .await
            .map_err(|_| timed_out())?
            .map_err(connect_err)?;
            Ok(Box::new(s))
        }
        ConnectUri::Unix { path } => {
            let s = tokio::time::timeout_at(deadline, UnixStream::connect(path))
                .await
                .map_err(|_| timed_out())?
                .map_err(connect_err)?;
            Ok(Box::new(quiet(s).map_err(connect_err)?))
        }
        ConnectUri::Tcp { host, port } => {
            let s = tokio::time::timeout_at(deadline, TcpStream::connect((host.as_str(), *port)))
                .await
                .map_err(|_| timed_out())?
                .map_err(connect_err)?;
            let _ = s.set_nodelay(true);
            Ok(Box::new(s))
        }
        ConnectUri::TlsTcp { host, port } => {
            let tls = tls.ok_or_else(|| TransportError::TlsNotConfigured { uri: text.clone() })?;
            let (connector, name) = tls.connector(host).map_err(|source| TransportError::Tls {
                uri: text.clone(),
                source,
            })?;
            let s = tokio::time::timeout_at(deadline, TcpStream::connect((host.as_str(), *port)))
                .await
                .map_err(|_| timed_out())?
                .map_err(connect_err)?;
            let _ = s.set_nodelay(true);
            let s = tokio::time::timeout_at(deadline, connector.connect(name, s))
                .await
                .map_err(|_| timed_out())?
                .map_err(|source| TransportError::TlsHandshake {
                    uri: text.clone(),
                    source,
                })?;
            Ok(Box::new(s))
        }
        ConnectUri::Hvsock { path, port } => {
            let mut s = tokio::time::timeout_at(deadline, UnixStream::connect(path))
                .await
                .map_err(|_| timed_out())?
                .map_err(connect_err)?;
            let remaining = deadline.saturating_duration_since(Instant::now());
            match hybrid::handshake(&mut s, *port, remaining).await {
                Ok(host_port) => {
                    tracing::debug!(uri = %text, host_port, "hybrid vsock connected");
                    Ok(Box::new(quiet(s).map_err(connect_err)?))
                }
                // Report the caller's timeout, not the remainder left for the handshake.
                Err(HandshakeError::Timeout { port, .. }) => Err(TransportError::Handshake {
                    uri: text.clone(),
                    source: HandshakeError::Timeout { port, timeout },
                }),
                Err(source) => Err(TransportError::Handshake {
                    uri: text.clone(),
                    source,
                }),
            }
        }
    }
}

/// Moves a connected unix stream to a [`QuietStream`]: the agent reading our request then
/// does not wake this process (see [`crate::quiet`]).
fn quiet(s: UnixStream) -> std::io::Result<QuietStream> {
    QuietStream::new(s.into_std()?)
}

/// Opens a tonic `Channel` to the agent at `uri`.
///
/// The first connection is made here, so an unreachable agent is reported now with a
/// clear [`TransportError`] rather than at the first RPC. Later reconnects (after the
/// connection drops) use the same URI and timeout. Per-RPC deadlines are the caller's
/// business (`Request::set_timeout`).
pub async fn connect_channel(
    uri: &ConnectUri,
    connect_timeout: Duration,
) -> Result<Channel, TransportError> {
    connect_channel_with(uri, connect_timeout, None).await
}

/// Like [`connect_channel`], with TLS client settings for `tls+tcp://`.
pub async fn connect_channel_with(
    uri: &ConnectUri,
    connect_timeout: Duration,
    tls: Option<&ClientTls>,
) -> Result<Channel, TransportError> {
    let first = Arc::new(Mutex::new(Some(
        connect_stream_with(uri, connect_timeout, tls).await?,
    )));
    let target = uri.clone();
    let tls = tls.cloned();
    let connector = tower::service_fn(move |_: http::Uri| {
        let ready = first.lock().unwrap_or_else(|p| p.into_inner()).take();
        let target = target.clone();
        let tls = tls.clone();
        async move {
            let stream = match ready {
                Some(s) => s,
                None => connect_stream_with(&target, connect_timeout, tls.as_ref()).await?,
            };
            Ok::<_, TransportError>(TokioIo::new(stream))
        }
    });
    Endpoint::from_static("http://guest.invalid")
        .connect_with_connector(connector)
        .await
        .map_err(|source| TransportError::Channel {
            uri: uri.to_string(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::listen::{bind, ListenOptions};
    use crate::uri::ListenUri;
    use std::path::Path;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::UnixListener;

    /// Echoes one 4-byte message on the first accepted connection.
    async fn echo_once(listener: crate::Listener) {
        let mut conn = listener.accept().await.unwrap();
        let mut buf = [0u8; 4];
        conn.read_exact(&mut buf).await.unwrap();
        conn.write_all(&buf).await.unwrap();
    }

    async fn round_trip(listen: ListenUri, connect: ConnectUri) {
        let listener = bind(&listen, &ListenOptions::default()).await.unwrap();
        let connect = match (connect, listener.local_uri()) {
            (ConnectUri::Tcp { host, .. }, ListenUri::Tcp { addr }) => ConnectUri::Tcp {
                host,
                port: addr.port(),
            },
            (c, _) => c,
        };
        let server = tokio::spawn(echo_once(listener));
        let mut s = connect_stream(&connect, Duration::from_secs(5))
            .await
            .unwrap();
        s.write_all(b"abcd").await.unwrap();
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"abcd");
        server.await.unwrap();
    }

    #[tokio::test]
    async fn unix_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rt.sock");
        round_trip(
            ListenUri::Unix { path: path.clone() },
            ConnectUri::Unix { path },
        )
        .await;
    }

    #[tokio::test]
    async fn tcp_round_trip() {
        round_trip(
            "tcp://127.0.0.1:0".parse().unwrap(),
            "tcp://localhost:1".parse().unwrap(),
        )
        .await;
    }

    #[tokio::test]
    async fn missing_unix_socket_is_a_connect_error() {
        let uri: ConnectUri = "unix:///nonexistent/guest.sock".parse().unwrap();
        let err = connect_stream(&uri, Duration::from_secs(1))
            .await
            .err()
            .unwrap();
        assert!(matches!(err, TransportError::Connect { .. }), "{err}");
        assert!(err
            .to_string()
            .starts_with("connecting to unix:///nonexistent/guest.sock failed"));
    }

    /// A fake VMM: accepts one connection, checks the CONNECT line, then behaves as told.
    async fn fake_vmm(
        path: &Path,
        reply: &'static [u8],
        close: bool,
    ) -> tokio::task::JoinHandle<()> {
        let listener = UnixListener::bind(path).unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut req = [0u8; 13];
            s.read_exact(&mut req).await.unwrap();
            assert_eq!(&req, b"CONNECT 2695\n");
            s.write_all(reply).await.unwrap();
            if close {
                return;
            }
            // Echo afterwards, as the guest would answer on the connection.
            let mut buf = [0u8; 4];
            if s.read_exact(&mut buf).await.is_ok() {
                let _ = s.write_all(&buf).await;
            }
        })
    }

    fn hvsock(path: &Path) -> ConnectUri {
        ConnectUri::Hvsock {
            path: path.to_path_buf(),
            port: 2695,
        }
    }

    #[tokio::test]
    async fn hybrid_good_reply_then_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vm.sock");
        let vmm = fake_vmm(&path, b"OK 1073741824\n", false).await;
        let mut s = connect_stream(&hvsock(&path), Duration::from_secs(5))
            .await
            .unwrap();
        s.write_all(b"wxyz").await.unwrap();
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"wxyz");
        vmm.await.unwrap();
    }

    #[tokio::test]
    async fn hybrid_garbage_reply_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vm.sock");
        let vmm = fake_vmm(&path, b"HTTP/1.1 400 Bad Request\r\n", true).await;
        let err = connect_stream(&hvsock(&path), Duration::from_secs(5))
            .await
            .err()
            .unwrap();
        assert!(
            matches!(
                err,
                TransportError::Handshake {
                    source: HandshakeError::NotOk { .. },
                    ..
                }
            ),
            "{err}"
        );
        vmm.await.unwrap();
    }

    #[tokio::test]
    async fn hybrid_eof_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vm.sock");
        let vmm = fake_vmm(&path, b"", true).await;
        let err = connect_stream(&hvsock(&path), Duration::from_secs(5))
            .await
            .err()
            .unwrap();
        assert!(
            matches!(
                err,
                TransportError::Handshake {
                    source: HandshakeError::Eof { port: 2695, .. },
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("vsock port 2695"), "{err}");
        vmm.await.unwrap();
    }

    #[tokio::test]
    async fn hybrid_silence_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vm.sock");
        let listener = UnixListener::bind(&path).unwrap();
        // Accepts, reads the request, never answers (held open until the test ends).
        let vmm = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut req = [0u8; 13];
            s.read_exact(&mut req).await.unwrap();
            tokio::time::sleep(Duration::from_secs(30)).await;
        });
        let started = std::time::Instant::now();
        let err = connect_stream(&hvsock(&path), Duration::from_millis(300))
            .await
            .err()
            .unwrap();
        assert!(started.elapsed() < Duration::from_secs(3));
        assert!(err.is_timeout(), "{err}");
        assert_eq!(
            err.to_string(),
            format!(
                "hybrid vsock handshake over hvsock://{}:2695 failed: no reply to CONNECT 2695 within 300ms",
                path.display()
            )
        );
        vmm.abort();
    }

    #[tokio::test]
    async fn channel_to_missing_agent_fails_clearly() {
        let uri: ConnectUri = "unix:///nonexistent/guest.sock".parse().unwrap();
        let err = connect_channel(&uri, Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(matches!(err, TransportError::Connect { .. }), "{err}");
    }
}
