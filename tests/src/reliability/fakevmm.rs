//! A fake Firecracker / Cloud Hypervisor hybrid-vsock socket that answers `CONNECT <port>`
//! wrongly (garbage, nothing, an endless line, EOF), to show that guestctl fails quickly and
//! clearly instead of hanging or misreading the stream.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::error::{FixtureError, Result};

/// What the fake VMM does after reading the client's request line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmmBehaviour {
    /// Writes these bytes and keeps the connection open.
    Reply(Vec<u8>),
    /// Writes these bytes and closes the connection.
    ReplyAndClose(Vec<u8>),
    /// Never answers; keeps the connection open.
    Silent,
    /// Closes the connection without answering.
    Close,
}

/// A listening fake VMM socket; stops and removes the socket when dropped.
#[derive(Debug)]
pub struct FakeVmm {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    requests: Arc<Mutex<Vec<String>>>,
    thread: Option<JoinHandle<()>>,
}

fn read_request(s: &mut UnixStream) -> String {
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while line.len() < 128 {
        match s.read(&mut b) {
            Ok(1) => {
                line.push(b[0]);
                if b[0] == b'\n' {
                    break;
                }
            }
            _ => break,
        }
    }
    String::from_utf8_lossy(&line).into_owned()
}

fn serve(
    listener: UnixListener,
    behaviour: VmmBehaviour,
    stop: &AtomicBool,
    requests: &Mutex<Vec<String>>,
) {
    let mut open = Vec::new();
    while !stop.load(Ordering::Acquire) {
        let mut s = match listener.accept() {
            Ok((s, _)) => s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            Err(_) => break,
        };
        let _ = s.set_nonblocking(false);
        let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
        let req = read_request(&mut s);
        requests.lock().unwrap_or_else(|p| p.into_inner()).push(req);
        match &behaviour {
            VmmBehaviour::Reply(bytes) => {
                let _ = s.write_all(bytes);
                open.push(s);
            }
            VmmBehaviour::ReplyAndClose(bytes) => {
                let _ = s.write_all(bytes);
            }
            VmmBehaviour::Silent => open.push(s),
            VmmBehaviour::Close => {}
        }
    }
}

impl FakeVmm {
    /// Listens on the unix socket `path` and treats every connection as `behaviour` says.
    pub fn start(path: &Path, behaviour: VmmBehaviour) -> Result<Self> {
        let listener = UnixListener::bind(path)
            .map_err(|e| FixtureError::io(format!("bind {}", path.display()), e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| FixtureError::io("set_nonblocking", e))?;
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (st, rq) = (stop.clone(), requests.clone());
        let thread = std::thread::spawn(move || serve(listener, behaviour, &st, &rq));
        Ok(Self {
            path: path.to_path_buf(),
            stop,
            requests,
            thread: Some(thread),
        })
    }

    /// `hvsock://<socket>:<port>`, the guestctl URI for guest port `port`.
    pub fn uri(&self, port: u32) -> String {
        format!("hvsock://{}:{port}", self.path.display())
    }

    /// The request lines received so far (`CONNECT 2695\n`).
    pub fn requests(&self) -> Vec<String> {
        self.requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Drop for FakeVmm {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scratch::Scratch;

    fn exchange(path: &Path) -> (Vec<u8>, bool) {
        let mut c = UnixStream::connect(path).unwrap();
        c.write_all(b"CONNECT 5\n").unwrap();
        c.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut buf = vec![0u8; 64];
        match c.read(&mut buf) {
            Ok(n) => {
                buf.truncate(n);
                (buf, n == 0)
            }
            Err(_) => (Vec::new(), false),
        }
    }

    #[test]
    fn behaves_as_told_and_records_the_request() {
        let s = Scratch::new().unwrap();
        let p = s.join("garbage.sock");
        let v = FakeVmm::start(&p, VmmBehaviour::Reply(b"HELLO\n".to_vec())).unwrap();
        assert_eq!(exchange(&p), (b"HELLO\n".to_vec(), false));
        assert_eq!(v.requests(), vec!["CONNECT 5\n".to_string()]);
        assert_eq!(v.uri(5), format!("hvsock://{}:5", p.display()));

        let p = s.join("silent.sock");
        let _v = FakeVmm::start(&p, VmmBehaviour::Silent).unwrap();
        assert_eq!(exchange(&p), (Vec::new(), false), "silent: read times out");

        let p = s.join("close.sock");
        let _v = FakeVmm::start(&p, VmmBehaviour::Close).unwrap();
        assert_eq!(exchange(&p), (Vec::new(), true), "close: EOF");
    }

    #[test]
    fn drop_removes_the_socket() {
        let s = Scratch::new().unwrap();
        let p = s.join("x.sock");
        drop(FakeVmm::start(&p, VmmBehaviour::Close).unwrap());
        assert!(!p.exists());
    }
}
