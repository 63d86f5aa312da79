//! The textual addresses the agent listens on and clients connect to.
//!
//! Listen side: `vsock://CID:PORT` (CID `-1` = any), `unix:///abs/path`,
//! `tcp://IP:PORT` (IPv6 as `[::1]:PORT`).
//! Connect side: the same plus `hvsock:///abs/path/vm.sock:PORT` (Firecracker / Cloud
//! Hypervisor hybrid vsock), `tcp://HOST:PORT` with a host name, and `tls+tcp://HOST:PORT`.
//! Both types round-trip through `Display` and `FromStr`.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::error::UriError;

/// `VMADDR_CID_ANY`: listen on every local CID. Written `-1` in URIs.
pub const CID_ANY: u32 = u32::MAX;

/// `VMADDR_CID_HOST`: the hypervisor host, the only peer the agent accepts by default.
pub const CID_HOST: u32 = 2;

/// Longest unix socket path the kernel accepts (`sun_path` is 108 bytes including NUL).
pub const MAX_UNIX_PATH: usize = 107;

const LISTEN_FORMS: &str = "vsock://CID:PORT, unix:///PATH or tcp://ADDR:PORT";
const CONNECT_FORMS: &str =
    "vsock://CID:PORT, hvsock:///PATH:PORT, unix:///PATH, tcp://HOST:PORT or tls+tcp://HOST:PORT";

/// Where the agent listens.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ListenUri {
    /// AF_VSOCK on `cid` (usually [`CID_ANY`]) and `port`.
    Vsock {
        /// Local CID to bind, [`CID_ANY`] for all.
        cid: u32,
        /// vsock port.
        port: u32,
    },
    /// A unix domain socket file at an absolute path.
    Unix {
        /// Absolute path of the socket file.
        path: PathBuf,
    },
    /// TCP on an IP address; port 0 picks a free port (see `Listener::local_uri`).
    Tcp {
        /// Address and port to bind.
        addr: SocketAddr,
    },
}

/// Where a client reaches the agent.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ConnectUri {
    /// AF_VSOCK to a guest `cid` and `port` (QEMU vhost-vsock hosts).
    Vsock {
        /// Guest CID.
        cid: u32,
        /// Guest vsock port.
        port: u32,
    },
    /// Hybrid vsock: the VMM's unix socket plus the guest port to ask for.
    Hvsock {
        /// The VMM's vsock unix socket (Firecracker `uds_path`).
        path: PathBuf,
        /// Guest vsock port sent in `CONNECT <port>`.
        port: u32,
    },
    /// A unix domain socket the agent listens on directly.
    Unix {
        /// Absolute path of the socket file.
        path: PathBuf,
    },
    /// TCP to a host name or IP address.
    Tcp {
        /// Host name or IP address (IPv6 without brackets).
        host: String,
        /// TCP port (non-zero).
        port: u16,
    },
    /// TLS over TCP (`tls+tcp://`): the server's certificate is verified for `host`, and a
    /// client certificate is presented when configured (see `crate::ClientTls`).
    TlsTcp {
        /// Host name or IP address (IPv6 without brackets); also the TLS server name.
        host: String,
        /// TCP port (non-zero).
        port: u16,
    },
}

impl FromStr for ListenUri {
    type Err = UriError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let (scheme, rest) = split_scheme(input, LISTEN_FORMS)?;
        match scheme {
            "vsock" => {
                let (cid, port) = parse_vsock(rest, input, true)?;
                Ok(ListenUri::Vsock { cid, port })
            }
            "unix" => Ok(ListenUri::Unix {
                path: parse_abs_path(rest, input)?,
            }),
            "tcp" => {
                let (host, port) = split_host_port(rest, input)?;
                let ip: IpAddr = host.parse().map_err(|_| UriError::BadHost {
                    value: host.to_string(),
                    input: input.to_string(),
                    reason: "listening needs an IP address such as 127.0.0.1 or [::1]",
                })?;
                let port = parse_tcp_port(port, input, true)?;
                Ok(ListenUri::Tcp {
                    addr: SocketAddr::new(ip, port),
                })
            }
            other => Err(UriError::UnknownScheme {
                scheme: other.to_string(),
                input: input.to_string(),
                expected: LISTEN_FORMS,
            }),
        }
    }
}

impl fmt::Display for ListenUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenUri::Vsock { cid, port } => write!(f, "vsock://{}:{port}", fmt_cid(*cid)),
            ListenUri::Unix { path } => write!(f, "unix://{}", path.display()),
            ListenUri::Tcp { addr } => write!(f, "tcp://{addr}"),
        }
    }
}

impl FromStr for ConnectUri {
    type Err = UriError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let (scheme, rest) = split_scheme(input, CONNECT_FORMS)?;
        match scheme {
            "vsock" => {
                let (cid, port) = parse_vsock(rest, input, false)?;
                Ok(ConnectUri::Vsock { cid, port })
            }
            "hvsock" => {
                let (path, port) = rest.rsplit_once(':').ok_or_else(|| UriError::MissingPort {
                    input: input.to_string(),
                })?;
                let path = parse_abs_path(path, input)?;
                let port = parse_vsock_port(port, input)?;
                Ok(ConnectUri::Hvsock { path, port })
            }
            "unix" => Ok(ConnectUri::Unix {
                path: parse_abs_path(rest, input)?,
            }),
            "tcp" | "tls+tcp" => {
                let (host, port) = split_host_port(rest, input)?;
                check_host_name(host, input)?;
                let port = parse_tcp_port(port, input, false)?;
                let host = host.to_string();
                Ok(if scheme == "tcp" {
                    ConnectUri::Tcp { host, port }
                } else {
                    ConnectUri::TlsTcp { host, port }
                })
            }
            other => Err(UriError::UnknownScheme {
                scheme: other.to_string(),
                input: input.to_string(),
                expected: CONNECT_FORMS,
            }),
        }
    }
}

impl fmt::Display for ConnectUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectUri::Vsock { cid, port } => write!(f, "vsock://{}:{port}", fmt_cid(*cid)),
            ConnectUri::Hvsock { path, port } => write!(f, "hvsock://{}:{port}", path.display()),
            ConnectUri::Unix { path } => write!(f, "unix://{}", path.display()),
            ConnectUri::Tcp { host, port } if host.contains(':') => {
                write!(f, "tcp://[{host}]:{port}")
            }
            ConnectUri::Tcp { host, port } => write!(f, "tcp://{host}:{port}"),
            ConnectUri::TlsTcp { host, port } if host.contains(':') => {
                write!(f, "tls+tcp://[{host}]:{port}")
            }
            ConnectUri::TlsTcp { host, port } => write!(f, "tls+tcp://{host}:{port}"),
        }
    }
}

fn fmt_cid(cid: u32) -> String {
    if cid == CID_ANY {
        "-1".to_string()
    } else {
        cid.to_string()
    }
}

fn split_scheme<'a>(
    input: &'a str,
    expected: &'static str,
) -> Result<(&'a str, &'a str), UriError> {
    input
        .split_once("://")
        .ok_or_else(|| UriError::MissingScheme {
            input: input.to_string(),
            expected,
        })
}

fn parse_vsock(rest: &str, input: &str, allow_any: bool) -> Result<(u32, u32), UriError> {
    let (cid, port) = rest.split_once(':').ok_or_else(|| UriError::MissingPort {
        input: input.to_string(),
    })?;
    let bad_cid = |reason| UriError::BadCid {
        value: cid.to_string(),
        input: input.to_string(),
        reason,
    };
    let cid = if cid == "-1" {
        if !allow_any {
            return Err(bad_cid("-1 (any) is only meaningful for listening"));
        }
        CID_ANY
    } else {
        parse_decimal::<u32>(cid)
            .ok_or_else(|| bad_cid("expected a decimal number, or -1 for any"))?
    };
    Ok((cid, parse_vsock_port(port, input)?))
}

fn parse_vsock_port(port: &str, input: &str) -> Result<u32, UriError> {
    parse_decimal::<u32>(port).ok_or_else(|| UriError::BadPort {
        value: port.to_string(),
        input: input.to_string(),
        reason: "expected a decimal number from 0 to 4294967295".to_string(),
    })
}

fn parse_tcp_port(port: &str, input: &str, allow_zero: bool) -> Result<u16, UriError> {
    let bad = |reason: &str| UriError::BadPort {
        value: port.to_string(),
        input: input.to_string(),
        reason: reason.to_string(),
    };
    let n = parse_decimal::<u16>(port)
        .ok_or_else(|| bad("expected a decimal number from 1 to 65535"))?;
    if n == 0 && !allow_zero {
        return Err(bad("port 0 cannot be connected to"));
    }
    Ok(n)
}

/// Parses plain ASCII digits only (no sign, no whitespace), so `+5` or ` 5` are rejected.
fn parse_decimal<T: FromStr>(s: &str) -> Option<T> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn parse_abs_path(path: &str, input: &str) -> Result<PathBuf, UriError> {
    if !path.starts_with('/') {
        return Err(UriError::RelativePath {
            path: path.to_string(),
            input: input.to_string(),
        });
    }
    if path.len() > MAX_UNIX_PATH {
        return Err(UriError::PathTooLong {
            path: path.to_string(),
            len: path.len(),
            max: MAX_UNIX_PATH,
        });
    }
    Ok(Path::new(path).to_path_buf())
}

/// Splits `host:port` or `[v6]:port`, returning the host without brackets.
fn split_host_port<'a>(rest: &'a str, input: &str) -> Result<(&'a str, &'a str), UriError> {
    let bad_host = |value: &str, reason| UriError::BadHost {
        value: value.to_string(),
        input: input.to_string(),
        reason,
    };
    if let Some(bracketed) = rest.strip_prefix('[') {
        let (host, after) = bracketed
            .split_once(']')
            .ok_or_else(|| bad_host(rest, "unterminated '[' in IPv6 address"))?;
        host.parse::<Ipv6Addr>()
            .map_err(|_| bad_host(host, "not an IPv6 address"))?;
        let port = after
            .strip_prefix(':')
            .ok_or_else(|| UriError::MissingPort {
                input: input.to_string(),
            })?;
        return Ok((host, port));
    }
    let (host, port) = rest.rsplit_once(':').ok_or_else(|| UriError::MissingPort {
        input: input.to_string(),
    })?;
    if host.contains(':') {
        return Err(bad_host(
            host,
            "IPv6 addresses must be bracketed, e.g. [::1]:50051",
        ));
    }
    if host.is_empty() {
        return Err(bad_host(host, "the host is empty"));
    }
    Ok((host, port))
}

fn check_host_name(host: &str, input: &str) -> Result<(), UriError> {
    let ok = host.contains(':') // already validated as bracketed IPv6
        || host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(UriError::BadHost {
            value: host.to_string(),
            input: input.to_string(),
            reason: "a host name may contain only letters, digits, '.', '-' and '_'",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_uris_parse_and_round_trip() {
        let cases: &[(&str, ListenUri)] = &[
            (
                "vsock://-1:2695",
                ListenUri::Vsock {
                    cid: CID_ANY,
                    port: 2695,
                },
            ),
            ("vsock://3:1024", ListenUri::Vsock { cid: 3, port: 1024 }),
            (
                "unix:///run/guest-agent.sock",
                ListenUri::Unix {
                    path: "/run/guest-agent.sock".into(),
                },
            ),
            (
                "tcp://127.0.0.1:50051",
                ListenUri::Tcp {
                    addr: "127.0.0.1:50051".parse().unwrap(),
                },
            ),
            (
                "tcp://[::1]:0",
                ListenUri::Tcp {
                    addr: "[::1]:0".parse().unwrap(),
                },
            ),
        ];
        for (text, want) in cases {
            let got: ListenUri = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(&got, want, "{text}");
            assert_eq!(got.to_string(), *text, "display of {text}");
        }
    }

    #[test]
    fn bad_listen_uris_name_the_bad_part() {
        let cases: &[(&str, &str)] = &[
            ("2695", "has no scheme"),
            ("http://x:1", "unknown scheme \"http\""),
            ("vsock://3", "missing \":PORT\""),
            ("vsock://x:1", "bad vsock CID \"x\""),
            ("vsock://-2:1", "bad vsock CID \"-2\""),
            ("vsock://3:-1", "bad port \"-1\""),
            ("vsock://3:+5", "bad port \"+5\""),
            ("vsock://3:99999999999", "bad port \"99999999999\""),
            ("unix://rel/path", "must be absolute"),
            ("unix://", "must be absolute"),
            ("tcp://localhost:1", "bad TCP address \"localhost\""),
            ("tcp://127.0.0.1", "missing \":PORT\""),
            ("tcp://127.0.0.1:70000", "bad port \"70000\""),
            ("tcp://::1:80", "must be bracketed"),
            ("tcp://[::1:80", "unterminated"),
            ("tcp://[zz]:80", "not an IPv6 address"),
            ("tcp://[::1]80", "missing \":PORT\""),
            ("hvsock:///vm.sock:1", "unknown scheme \"hvsock\""),
        ];
        for (text, want) in cases {
            let err = text.parse::<ListenUri>().expect_err(text).to_string();
            assert!(err.contains(want), "{text}: {err:?} lacks {want:?}");
        }
        let long = format!("unix:///{}", "a".repeat(200));
        let err = long.parse::<ListenUri>().unwrap_err();
        assert!(
            matches!(err, UriError::PathTooLong { len: 201, .. }),
            "{err}"
        );
    }

    #[test]
    fn connect_uris_parse_and_round_trip() {
        let cases: &[(&str, ConnectUri)] = &[
            ("vsock://3:2695", ConnectUri::Vsock { cid: 3, port: 2695 }),
            (
                "hvsock:///run/fc/vm.sock:2695",
                ConnectUri::Hvsock {
                    path: "/run/fc/vm.sock".into(),
                    port: 2695,
                },
            ),
            (
                "hvsock:///odd:name/v.sock:7",
                ConnectUri::Hvsock {
                    path: "/odd:name/v.sock".into(),
                    port: 7,
                },
            ),
            (
                "unix:///tmp/a.sock",
                ConnectUri::Unix {
                    path: "/tmp/a.sock".into(),
                },
            ),
            (
                "tcp://localhost:50051",
                ConnectUri::Tcp {
                    host: "localhost".into(),
                    port: 50051,
                },
            ),
            (
                "tcp://[::1]:50051",
                ConnectUri::Tcp {
                    host: "::1".into(),
                    port: 50051,
                },
            ),
            (
                "tls+tcp://agent.example:50051",
                ConnectUri::TlsTcp {
                    host: "agent.example".into(),
                    port: 50051,
                },
            ),
            (
                "tls+tcp://[::1]:1",
                ConnectUri::TlsTcp {
                    host: "::1".into(),
                    port: 1,
                },
            ),
        ];
        for (text, want) in cases {
            let got: ConnectUri = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(&got, want, "{text}");
            assert_eq!(got.to_string(), *text, "display of {text}");
        }
    }

    #[test]
    fn bad_connect_uris_name_the_bad_part() {
        let cases: &[(&str, &str)] = &[
            ("vsock://-1:2695", "only meaningful for listening"),
            ("hvsock:///vm.sock", "missing \":PORT\""),
            ("hvsock://vm.sock:5", "must be absolute"),
            ("hvsock:///vm.sock:port", "bad port \"port\""),
            ("tcp://host:0", "port 0 cannot be connected to"),
            ("tcp://ho st:1", "bad TCP address \"ho st\""),
            ("tcp://:1", "the host is empty"),
            ("tls+tcp://h:0", "port 0 cannot be connected to"),
            ("ftp://x:1", "expected vsock://CID:PORT, hvsock://"),
        ];
        for (text, want) in cases {
            let err = text.parse::<ConnectUri>().expect_err(text).to_string();
            assert!(err.contains(want), "{text}: {err:?} lacks {want:?}");
        }
    }
}
