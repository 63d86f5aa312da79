//! One accepted server-side connection, whatever the transport, so a single tonic server
//! can serve vsock, unix and tcp listeners alike.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_vsock::VsockStream;
use tonic::transport::server::Connected;

use crate::authority::RelaxedAuthority;
use crate::quiet::QuietStream;

/// An accepted connection. Implements tokio's `AsyncRead`/`AsyncWrite` and tonic's
/// [`Connected`], so a stream of `Conn` can be handed to `serve_with_incoming*`.
///
/// unix and vsock connections accept any HTTP/2 `:authority` (see [`RelaxedAuthority`]):
/// what grpc-core and grpc-java clients send there is a socket path, which h2 would refuse.
#[derive(Debug)]
pub enum Conn {
    /// A unix domain socket peer (a local process), watched for read readiness only
    /// ([`QuietStream`]).
    Unix(RelaxedAuthority<QuietStream>),
    /// A TCP peer.
    Tcp(TcpStream),
    /// A vsock peer (normally the host, CID 2).
    Vsock(RelaxedAuthority<VsockStream>),
    /// A TCP peer that completed a TLS handshake with a valid client certificate.
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

/// Who is on the other end of a [`Conn`]; available to RPC handlers through
/// `request.extensions().get::<ConnInfo>()` and printable for logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnInfo {
    /// Unix peer credentials (`SO_PEERCRED`), when the kernel provides them.
    Unix {
        /// Peer process id.
        pid: Option<i32>,
        /// Peer user id.
        uid: Option<u32>,
    },
    /// TCP peer address.
    Tcp {
        /// Remote address, if still known.
        peer: Option<SocketAddr>,
    },
    /// TLS-over-TCP peer, authenticated by its client certificate.
    Tls {
        /// Remote address, if still known.
        peer: Option<SocketAddr>,
    },
    /// vsock peer address.
    Vsock {
        /// Peer CID (2 = host).
        cid: Option<u32>,
        /// Peer port.
        port: Option<u32>,
    },
}

impl fmt::Display for ConnInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn opt<T: fmt::Display>(v: &Option<T>) -> String {
            v.as_ref()
                .map_or_else(|| "?".to_string(), ToString::to_string)
        }
        match self {
            ConnInfo::Unix { pid, uid } => write!(f, "unix pid {} uid {}", opt(pid), opt(uid)),
            ConnInfo::Tcp { peer } => write!(f, "tcp {}", opt(peer)),
            ConnInfo::Tls { peer } => write!(f, "tls {}", opt(peer)),
            ConnInfo::Vsock { cid, port } => write!(f, "vsock cid {} port {}", opt(cid), opt(port)),
        }
    }
}

impl Conn {
    /// Describes the peer (see [`ConnInfo`]).
    pub fn info(&self) -> ConnInfo {
        match self {
            Conn::Unix(s) => {
                let cred = nix::sys::socket::getsockopt(
                    s.get_ref().get_ref(),
                    nix::sys::socket::sockopt::PeerCredentials,
                )
                .ok();
                ConnInfo::Unix {
                    pid: cred.map(|c| c.pid()),
                    uid: cred.map(|c| c.uid()),
                }
            }
            Conn::Tcp(s) => ConnInfo::Tcp {
                peer: s.peer_addr().ok(),
            },
            Conn::Tls(s) => ConnInfo::Tls {
                peer: s.get_ref().0.peer_addr().ok(),
            },
            Conn::Vsock(s) => {
                let addr = s.get_ref().peer_addr().ok();
                ConnInfo::Vsock {
                    cid: addr.map(|a| a.cid()),
                    port: addr.map(|a| a.port()),
                }
            }
        }
    }
}

impl Connected for Conn {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.info()
    }
}

/// Forwards a method call to whichever stream the `Conn` holds (all are `Unpin`).
macro_rules! delegate {
    ($self:ident, $s:ident => $call:expr) => {
        match $self.get_mut() {
            Conn::Unix($s) => $call,
            Conn::Tcp($s) => $call,
            Conn::Vsock($s) => $call,
            Conn::Tls($s) => $call,
        }
    };
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        delegate!(self, s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, s => Pin::new(s).poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => Pin::new(s).poll_shutdown(cx))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, s => Pin::new(s).poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Unix(s) => s.is_write_vectored(),
            Conn::Tcp(s) => s.is_write_vectored(),
            Conn::Vsock(s) => s.is_write_vectored(),
            Conn::Tls(s) => s.is_write_vectored(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    #[test]
    fn conn_info_displays_the_peer() {
        let v = ConnInfo::Vsock {
            cid: Some(2),
            port: Some(1234),
        };
        assert_eq!(v.to_string(), "vsock cid 2 port 1234");
        let u = ConnInfo::Unix {
            pid: Some(7),
            uid: None,
        };
        assert_eq!(u.to_string(), "unix pid 7 uid ?");
        let t = ConnInfo::Tcp {
            peer: Some("127.0.0.1:9".parse().unwrap()),
        };
        assert_eq!(t.to_string(), "tcp 127.0.0.1:9");
    }

    #[tokio::test]
    async fn unix_conn_reports_our_own_credentials() {
        let (a, _b) = UnixStream::pair().unwrap();
        let info = Conn::Unix(RelaxedAuthority::new(QuietStream::new(a).unwrap())).connect_info();
        let me = std::process::id() as i32;
        assert_eq!(
            info,
            ConnInfo::Unix {
                pid: Some(me),
                uid: Some(nix::unistd::getuid().as_raw())
            }
        );
    }
}
