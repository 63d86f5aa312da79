//! The light stand-in for a VM: one process serving many unix sockets, each as a guest
//! agent's `/metrics` listener would (the body is a real agent's exposition, captured), over
//! a plain unix socket or as a Firecracker-style hybrid vsock socket (`CONNECT 2696\n` →
//! `OK <port>\n`, then the stream). Each socket has a [`Mode`]: a healthy guest, a dead one
//! (the socket file stays, nobody listens: connection refused), a frozen one (accepts and
//! never answers, as a SIGSTOPped VM's VMM socket does), or a slow one (the headers at once,
//! then the body in pieces over [`SLOW_BODY`]).
//!
//! Run as `fleet-bench standin SPEC_FILE EXPOSITION_FILE`; SPEC_FILE has one line per socket,
//! `MODE unix|hybrid PATH`. It prints `ready` on stdout once every socket listens and runs
//! until killed.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

/// How long a slow stand-in takes to send its body.
pub const SLOW_BODY: Duration = Duration::from_secs(3);

/// How one stand-in behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Answers at once.
    Ok,
    /// Nobody listens (connection refused).
    Dead,
    /// Accepts, never answers.
    Frozen,
    /// Answers the headers at once and dribbles the body over [`SLOW_BODY`].
    Slow,
}

impl Mode {
    /// The word in the spec file.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Ok => "ok",
            Mode::Dead => "dead",
            Mode::Frozen => "frozen",
            Mode::Slow => "slow",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [Mode::Ok, Mode::Dead, Mode::Frozen, Mode::Slow]
            .into_iter()
            .find(|m| m.as_str() == s)
    }
}

/// One socket of the stand-in process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Socket {
    /// Its behaviour.
    pub mode: Mode,
    /// Hybrid vsock (the CONNECT handshake first) or a plain unix socket.
    pub hybrid: bool,
    /// The socket file.
    pub path: PathBuf,
}

impl Socket {
    /// The spec-file line.
    pub fn line(&self) -> String {
        format!(
            "{} {} {}",
            self.mode.as_str(),
            if self.hybrid { "hybrid" } else { "unix" },
            self.path.display()
        )
    }

    /// The proxy's target spec for it: `hvsock:///PATH:2696` or `unix:///PATH`.
    pub fn target_uri(&self) -> String {
        if self.hybrid {
            format!("hvsock://{}:2696", self.path.display())
        } else {
            format!("unix://{}", self.path.display())
        }
    }
}

/// Parses a spec file.
pub fn parse_spec(text: &str) -> Result<Vec<Socket>, String> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut w = l.split_whitespace();
            let (Some(m), Some(k), Some(p)) = (w.next(), w.next(), w.next()) else {
                return Err(format!("bad line {l:?}"));
            };
            Ok(Socket {
                mode: Mode::parse(m).ok_or_else(|| format!("bad mode in {l:?}"))?,
                hybrid: match k {
                    "hybrid" => true,
                    "unix" => false,
                    _ => return Err(format!("bad kind in {l:?}")),
                },
                path: PathBuf::from(p),
            })
        })
        .collect()
}

async fn serve_conn(stream: UnixStream, mode: Mode, hybrid: bool, body: Arc<Vec<u8>>) {
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    if mode == Mode::Frozen {
        // Hold the connection, answer nothing, until the peer gives up.
        let mut sink = [0u8; 1024];
        while matches!(r.read(&mut sink).await, Ok(n) if n > 0) {}
        return;
    }
    let mut line = String::new();
    if hybrid {
        if r.read_line(&mut line).await.unwrap_or(0) == 0 || !line.starts_with("CONNECT ") {
            return;
        }
        if w.write_all(b"OK 1073741824\n").await.is_err() {
            return;
        }
    }
    // The request head, up to the blank line.
    loop {
        line.clear();
        match r.read_line(&mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) if line == "\r\n" || line == "\n" => break,
            Ok(_) => {}
        }
    }
    let head = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    if w.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    if mode == Mode::Slow {
        let pieces = 30;
        let step = body.len().div_ceil(pieces);
        for chunk in body.chunks(step.max(1)) {
            tokio::time::sleep(SLOW_BODY / pieces as u32).await;
            if w.write_all(chunk).await.is_err() {
                return;
            }
        }
    } else if w.write_all(&body).await.is_err() {
        return;
    }
    let _ = w.shutdown().await;
}

/// Serves every socket of `spec` with `body` until the process is killed.
pub fn main(spec_file: &str, exposition_file: &str) -> Result<(), String> {
    let spec = std::fs::read_to_string(spec_file).map_err(|e| format!("{spec_file}: {e}"))?;
    let sockets = parse_spec(&spec)?;
    let body =
        Arc::new(std::fs::read(exposition_file).map_err(|e| format!("{exposition_file}: {e}"))?);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let mut dead = Vec::new();
        for s in sockets {
            let _ = std::fs::remove_file(&s.path);
            let l =
                UnixListener::bind(&s.path).map_err(|e| format!("{}: {e}", s.path.display()))?;
            if s.mode == Mode::Dead {
                // The file stays, nobody accepts: connecting is refused.
                dead.push(l.into_std().map_err(|e| e.to_string())?);
                continue;
            }
            let body = body.clone();
            tokio::spawn(async move {
                loop {
                    match l.accept().await {
                        Ok((c, _)) => {
                            tokio::spawn(serve_conn(c, s.mode, s.hybrid, body.clone()));
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                    }
                }
            });
        }
        // A closed listening socket refuses; drop them (the files stay).
        drop(dead);
        println!("ready");
        std::future::pending::<()>().await;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_lines_round_trip() {
        let s = Socket {
            mode: Mode::Frozen,
            hybrid: true,
            path: PathBuf::from("/tmp/x.sock"),
        };
        assert_eq!(s.line(), "frozen hybrid /tmp/x.sock");
        assert_eq!(parse_spec(&s.line()).unwrap(), vec![s.clone()]);
        assert_eq!(s.target_uri(), "hvsock:///tmp/x.sock:2696");
        assert!(parse_spec("odd unix /x").is_err());
        assert!(parse_spec("ok tcp /x").is_err());
    }
}
