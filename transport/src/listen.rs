//! Server side: bind a [`ListenUri`] and turn it into a stream of [`Conn`]s for tonic.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use tokio::net::{TcpListener, UnixListener};
use tokio_vsock::{VsockAddr, VsockListener};

use crate::authority::RelaxedAuthority;
use crate::conn::Conn;
use crate::error::TransportError;
use crate::quiet::QuietStream;
use crate::tls::{ServerTls, HANDSHAKE_TIMEOUT};
use crate::unix_file::{bind_unix, SocketFile};
use crate::uri::{ListenUri, CID_ANY, CID_HOST};

/// Pause after a resource-exhaustion accept error (EMFILE, ENFILE, ENOBUFS, ENOMEM), so
/// the accept loop does not spin while descriptors or memory are short.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Who may connect and where the agent may be exposed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenOptions {
    /// vsock peers accepted (by CID); others are dropped right after accept and logged.
    /// [`CID_ANY`] (`u32::MAX`) in the list accepts every CID. Default: `[2]` (the host).
    pub allowed_cids: Vec<u32>,
    /// Allow TCP listening on non-loopback addresses. Off by default: a TCP agent is
    /// meant for local testing, not for the network.
    pub allow_remote: bool,
    /// TLS for tcp listeners (ignored by vsock and unix): every connection must complete a
    /// handshake with a client certificate signed by the configured CA, or it is dropped.
    pub tls: Option<ServerTls>,
}

impl Default for ListenOptions {
    fn default() -> Self {
        Self {
            allowed_cids: vec![CID_HOST],
            allow_remote: false,
            tls: None,
        }
    }
}

/// Whether a vsock peer with `peer_cid` may talk to the agent.
pub fn cid_allowed(peer_cid: u32, allowed: &[u32]) -> bool {
    allowed.iter().any(|&c| c == CID_ANY || c == peer_cid)
}

/// What the accept loop does after `accept` failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcceptAction {
    /// A problem of that one connection (aborted, reset, interrupted): log, go on.
    Retry,
    /// Out of descriptors or memory: log, sleep [`ACCEPT_BACKOFF`], go on.
    Backoff,
    /// The listener itself is broken: end the stream with the error.
    Fatal,
}

/// Classifies an accept error; only errors about the listening socket itself are fatal.
pub fn classify_accept_error(err: &io::Error) -> AcceptAction {
    match err.raw_os_error() {
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => AcceptAction::Backoff,
        Some(libc::EBADF | libc::EINVAL | libc::ENOTSOCK | libc::EOPNOTSUPP | libc::EFAULT) => {
            AcceptAction::Fatal
        }
        Some(_) => AcceptAction::Retry,
        None => match err.kind() {
            io::ErrorKind::OutOfMemory => AcceptAction::Backoff,
            io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
            | io::ErrorKind::TimedOut => AcceptAction::Retry,
            _ => AcceptAction::Fatal,
        },
    }
}

/// A bound listening socket. Accept with [`Listener::accept`] or hand
/// [`Listener::into_incoming`] to tonic. Dropping it closes the socket and, for unix
/// sockets, removes the socket file (if it is still ours).
#[derive(Debug)]
pub struct Listener {
    inner: Inner,
    uri: ListenUri,
}

#[derive(Debug)]
enum Inner {
    Unix {
        listener: UnixListener,
        _file: SocketFile,
    },
    Tcp(TcpListener),
    Tls {
        listener: Arc<TcpListener>,
        tls: ServerTls,
    },
    Vsock {
        listener: VsockListener,
        allowed_cids: Vec<u32>,
    },
}

/// Binds `uri` and starts listening.
///
/// * unix: the parent directory must exist; a stale socket file is replaced, a live one or
///   a non-socket file is an error; the socket is created with mode 0600.
/// * tcp: non-loopback addresses are refused unless `opts.allow_remote`.
/// * vsock: peers whose CID is not in `opts.allowed_cids` are dropped at accept.
pub async fn bind(uri: &ListenUri, opts: &ListenOptions) -> Result<Listener, TransportError> {
    let text = uri.to_string();
    let bind_err = |source| TransportError::Bind {
        uri: text.clone(),
        source,
    };
    let inner = match uri {
        ListenUri::Unix { path } => {
            let (std, file) = bind_unix(path, &text).await?;
            Inner::Unix {
                listener: UnixListener::from_std(std).map_err(bind_err)?,
                _file: file,
            }
        }
        ListenUri::Tcp { addr } => {
            if !addr.ip().is_loopback() && !opts.allow_remote {
                return Err(TransportError::RemoteNotAllowed { uri: text });
            }
            let listener = TcpListener::bind(addr).await.map_err(bind_err)?;
            match &opts.tls {
                Some(tls) => Inner::Tls {
                    listener: Arc::new(listener),
                    tls: tls.clone(),
                },
                None => Inner::Tcp(listener),
            }
        }
        ListenUri::Vsock { cid, port } => {
            if opts.allowed_cids.is_empty() {
                return Err(TransportError::NoAllowedCids { uri: text });
            }
            Inner::Vsock {
                listener: VsockListener::bind(VsockAddr::new(*cid, *port)).map_err(bind_err)?,
                allowed_cids: opts.allowed_cids.clone(),
            }
        }
    };
    Ok(Listener {
        inner,
        uri: uri.clone(),
    })
}

impl Listener {
    /// The address actually bound: like the requested URI, but with the port the kernel
    /// picked when TCP port 0 was asked for.
    pub fn local_uri(&self) -> ListenUri {
        match &self.inner {
            Inner::Tcp(l) => match l.local_addr() {
                Ok(addr) => ListenUri::Tcp { addr },
                Err(_) => self.uri.clone(),
            },
            Inner::Tls { listener, .. } => match listener.local_addr() {
                Ok(addr) => ListenUri::Tcp { addr },
                Err(_) => self.uri.clone(),
            },
            _ => self.uri.clone(),
        }
    }

    /// True when connections are TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self.inner, Inner::Tls { .. })
    }

    /// Accepts the next connection. vsock peers with a CID outside the allowed list are
    /// dropped (and logged) without being returned; errors are returned as they come. On a
    /// TLS listener this includes the handshake (bounded by [`HANDSHAKE_TIMEOUT`]); a failed
    /// handshake is an error of kind `ConnectionAborted`.
    pub async fn accept(&self) -> io::Result<Conn> {
        match &self.inner {
            Inner::Tls { listener, tls } => {
                let (stream, peer) = listener.accept().await?;
                let _ = stream.set_nodelay(true);
                handshake(tls, stream, peer).await
            }
            Inner::Unix { listener, .. } => {
                let stream = listener.accept().await?.0.into_std()?;
                Ok(Conn::Unix(RelaxedAuthority::new(QuietStream::new(stream)?)))
            }
            Inner::Tcp(l) => {
                let (stream, _) = l.accept().await?;
                // gRPC messages are small request/response pairs: do not delay them.
                let _ = stream.set_nodelay(true);
                Ok(Conn::Tcp(stream))
            }
            Inner::Vsock {
                listener,
                allowed_cids,
            } => loop {
                let (stream, peer) = listener.accept().await?;
                if cid_allowed(peer.cid(), allowed_cids) {
                    return Ok(Conn::Vsock(RelaxedAuthority::new(stream)));
                }
                tracing::warn!(
                    peer_cid = peer.cid(),
                    peer_port = peer.port(),
                    allowed = ?allowed_cids,
                    "dropping vsock connection from a CID that is not allowed"
                );
            },
        }
    }

    /// Turns the listener into an endless stream of connections for
    /// `tonic::transport::Server::serve_with_incoming_shutdown`.
    ///
    /// Transient accept errors (aborted connections, EMFILE, ...) are logged and skipped,
    /// with a short pause when resources are exhausted, so they never stop the server;
    /// only an error of the listening socket itself is yielded (and ends tonic's serve).
    pub fn into_incoming(self) -> Incoming {
        if let Inner::Tls { listener, tls } = &self.inner {
            return tls_incoming(listener.clone(), tls.clone(), self.uri.clone());
        }
        let stream = futures::stream::unfold(self, |listener| async move {
            loop {
                match listener.accept().await {
                    Ok(conn) => return Some((Ok(conn), listener)),
                    Err(e) => match classify_accept_error(&e) {
                        AcceptAction::Retry => {
                            tracing::warn!(uri = %listener.uri, error = %e, "accept failed; continuing");
                        }
                        AcceptAction::Backoff => {
                            tracing::warn!(
                                uri = %listener.uri, error = %e,
                                "accept failed for lack of resources; pausing {}ms",
                                ACCEPT_BACKOFF.as_millis()
                            );
                            tokio::time::sleep(ACCEPT_BACKOFF).await;
                        }
                        AcceptAction::Fatal => {
                            tracing::error!(uri = %listener.uri, error = %e, "listener failed");
                            return Some((Err(e), listener));
                        }
                    },
                }
            }
        });
        Incoming {
            inner: Box::pin(stream),
        }
    }
}

/// Completes a server-side TLS handshake within [`HANDSHAKE_TIMEOUT`].
async fn handshake(
    tls: &ServerTls,
    stream: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
) -> io::Result<Conn> {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.acceptor().accept(stream)).await {
        Ok(Ok(s)) => Ok(Conn::Tls(Box::new(s))),
        Ok(Err(e)) => Err(io::Error::new(
            io::ErrorKind::ConnectionAborted,
            format!("TLS handshake with {peer} failed: {e}"),
        )),
        Err(_) => Err(io::Error::new(
            io::ErrorKind::ConnectionAborted,
            format!("TLS handshake with {peer} did not finish within {HANDSHAKE_TIMEOUT:?}"),
        )),
    }
}

/// The incoming stream of a TLS listener: handshakes run concurrently in their own tasks,
/// so a slow or silent client never holds up the others; failed handshakes are logged and
/// dropped. Dropping the stream stops the accept task and closes the socket.
fn tls_incoming(listener: Arc<TcpListener>, tls: ServerTls, uri: ListenUri) -> Incoming {
    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Conn>>(64);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = tx.closed() => return,
                a = listener.accept() => a,
            };
            match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let (tx, tls) = (tx.clone(), tls.clone());
                    tokio::spawn(async move {
                        match handshake(&tls, stream, peer).await {
                            Ok(conn) => {
                                let _ = tx.send(Ok(conn)).await;
                            }
                            Err(e) => tracing::warn!(error = %e, "refused a TLS connection"),
                        }
                    });
                }
                Err(e) => match classify_accept_error(&e) {
                    AcceptAction::Retry => {
                        tracing::warn!(uri = %uri, error = %e, "accept failed; continuing");
                    }
                    AcceptAction::Backoff => {
                        tracing::warn!(uri = %uri, error = %e, "accept failed for lack of resources");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                    }
                    AcceptAction::Fatal => {
                        tracing::error!(uri = %uri, error = %e, "listener failed");
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                },
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Incoming {
        inner: Box::pin(stream),
    }
}

/// Stream of accepted connections, see [`Listener::into_incoming`]. Dropping it closes
/// the listening socket (and removes a unix socket file).
pub struct Incoming {
    inner: Pin<Box<dyn Stream<Item = io::Result<Conn>> + Send>>,
}

impl std::fmt::Debug for Incoming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Incoming").finish_non_exhaustive()
    }
}

impl Stream for Incoming {
    type Item = io::Result<Conn>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use std::os::unix::fs::PermissionsExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn cid_check() {
        assert!(cid_allowed(2, &[2]));
        assert!(!cid_allowed(3, &[2]));
        assert!(!cid_allowed(2, &[]));
        assert!(cid_allowed(3, &[2, 3]));
        assert!(cid_allowed(77, &[CID_ANY]));
        assert_eq!(ListenOptions::default().allowed_cids, vec![2]);
    }

    #[test]
    fn accept_errors_are_classified() {
        let os = io::Error::from_raw_os_error;
        assert_eq!(
            classify_accept_error(&os(libc::EMFILE)),
            AcceptAction::Backoff
        );
        assert_eq!(
            classify_accept_error(&os(libc::ENFILE)),
            AcceptAction::Backoff
        );
        assert_eq!(
            classify_accept_error(&os(libc::ECONNABORTED)),
            AcceptAction::Retry
        );
        assert_eq!(
            classify_accept_error(&os(libc::EPROTO)),
            AcceptAction::Retry
        );
        assert_eq!(classify_accept_error(&os(libc::EINTR)), AcceptAction::Retry);
        assert_eq!(classify_accept_error(&os(libc::EBADF)), AcceptAction::Fatal);
        assert_eq!(
            classify_accept_error(&os(libc::EINVAL)),
            AcceptAction::Fatal
        );
        let kind = |k| io::Error::new(k, "x");
        assert_eq!(
            classify_accept_error(&kind(io::ErrorKind::ConnectionAborted)),
            AcceptAction::Retry
        );
        assert_eq!(
            classify_accept_error(&kind(io::ErrorKind::Other)),
            AcceptAction::Fatal
        );
    }

    #[tokio::test]
    async fn tcp_non_loopback_is_refused_without_allow_remote() {
        let uri: ListenUri = "tcp://0.0.0.0:0".parse().unwrap();
        let err = bind(&uri, &ListenOptions::default()).await.unwrap_err();
        assert!(
            matches!(err, TransportError::RemoteNotAllowed { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("--allow-remote"));
        let opts = ListenOptions {
            allow_remote: true,
            ..ListenOptions::default()
        };
        let l = bind(&uri, &opts).await.unwrap();
        assert!(matches!(l.local_uri(), ListenUri::Tcp { addr } if addr.port() != 0));
    }

    #[tokio::test]
    async fn unix_listener_is_0600_and_streams_connections() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.sock");
        let uri = ListenUri::Unix { path: path.clone() };
        let listener = bind(&uri, &ListenOptions::default()).await.unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(listener.local_uri(), uri);

        let mut incoming = listener.into_incoming();
        let mut client = tokio::net::UnixStream::connect(&path).await.unwrap();
        let mut conn = incoming.next().await.unwrap().unwrap();
        assert!(matches!(conn, Conn::Unix(_)));
        client.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        conn.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
        drop(incoming);
        assert!(!path.exists(), "socket file removed with the listener");
    }

    #[tokio::test]
    async fn vsock_bind_any_cid() {
        // A per-process port so parallel test runs do not collide.
        let port = 40_000 + std::process::id() % 20_000;
        let uri = ListenUri::Vsock { cid: CID_ANY, port };
        match bind(&uri, &ListenOptions::default()).await {
            Ok(l) => assert_eq!(l.local_uri(), uri),
            Err(TransportError::Bind { source, .. }) => {
                // No vsock transport module loaded here: nothing to test.
                println!("skipping: AF_VSOCK bind unavailable on this machine: {source}");
            }
            Err(e) => panic!("unexpected error: {e}"),
        }
        let opts = ListenOptions {
            allowed_cids: vec![],
            ..ListenOptions::default()
        };
        let err = bind(&uri, &opts).await.unwrap_err();
        assert!(matches!(err, TransportError::NoAllowedCids { .. }), "{err}");
    }
}
