//! Byte-stream transports between the host and the guest agent.
//!
//! The agent serves gRPC over one of three listeners, and clients reach it over four
//! kinds of connections:
//!
//! | URI | listen | connect | use |
//! |---|---|---|---|
//! | `vsock://CID:PORT` | yes (`CID` `-1` = any) | yes | production guest; QEMU vhost-vsock hosts |
//! | `hvsock:///path/vm.sock:PORT` | - | yes | Firecracker / Cloud Hypervisor hybrid vsock |
//! | `unix:///abs/path` | yes (mode 0600) | yes | local testing, sidecars |
//! | `tcp://IP:PORT` | loopback unless allowed | yes (`tcp://HOST:PORT`) | local testing |
//! | `tls+tcp://HOST:PORT` | tcp with [`ListenOptions::tls`] | yes, with [`ClientTls`] | TCP with mutual TLS |
//!
//! # Server side (the agent)
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use guest_transport::{bind, ListenOptions, ListenUri};
//!
//! let uri: ListenUri = "vsock://-1:2695".parse()?;
//! // Default options: only the host (CID 2) may connect; TCP stays on loopback.
//! let listener = bind(&uri, &ListenOptions::default()).await?;
//! eprintln!("listening on {}", listener.local_uri());
//! let incoming = listener.into_incoming();
//! // tonic::transport::Server::builder()
//! //     .add_service(GuestServer::new(service))
//! //     .serve_with_incoming_shutdown(incoming, shutdown_signal)
//! //     .await?;
//! # drop(incoming); Ok(()) }
//! ```
//!
//! [`Listener::into_incoming`] yields [`Conn`]s, which implement tonic's `Connected`;
//! handlers find the peer as `request.extensions().get::<ConnInfo>()`. Transient accept
//! errors are logged and skipped, so they never end `serve_*`. Dropping the stream (tonic
//! does so when the shutdown signal fires) closes the socket and removes a unix socket file.
//!
//! # Client side (guestctl, tests)
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use guest_transport::{connect_channel, ConnectUri};
//!
//! let uri: ConnectUri = "hvsock:///run/fc/vm.sock:2695".parse()?;
//! let channel = connect_channel(&uri, Duration::from_secs(5)).await?;
//! // GuestClient::new(channel)
//! # drop(channel); Ok(()) }
//! ```
//!
//! Every failure is a [`TransportError`] whose message names the URI, e.g.
//! `connecting to unix:///x timed out after 5s`.

#![warn(missing_docs)]

pub mod authority;
mod conn;
mod connect;
mod error;
pub mod hybrid;
mod listen;
pub mod quiet;
pub mod tls;
mod unix_file;
mod uri;

pub use authority::RelaxedAuthority;
pub use conn::{Conn, ConnInfo};
pub use connect::{
    connect_channel, connect_channel_with, connect_stream, connect_stream_with, BoxedStream,
    IoStream,
};
pub use error::{fmt_duration, HandshakeError, TransportError, UriError};
pub use hybrid::parse_connect_reply;
pub use listen::{
    bind, cid_allowed, classify_accept_error, AcceptAction, Incoming, ListenOptions, Listener,
    ACCEPT_BACKOFF,
};
pub use tls::{ClientTls, ServerTls, TlsError};
pub use unix_file::SOCKET_MODE;
pub use uri::{ConnectUri, ListenUri, CID_ANY, CID_HOST, MAX_UNIX_PATH};

/// The vsock port the agent listens on by default (upstream boxlite's port).
pub const DEFAULT_VSOCK_PORT: u32 = 2695;
