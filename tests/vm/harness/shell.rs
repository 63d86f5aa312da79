//! The guest's command channel: the init script runs a loop on the second serial port (ttyS1),
//! which qemu exposes as a unix socket. Each request is one line `<id> <command>`; the guest
//! runs the command in a subshell and answers with its output and a line `@@done <id> <status>`.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use super::error::{Result, VmError};

/// What a guest command printed and how it exited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShellOutput {
    /// Exit status of the command.
    pub status: i32,
    /// Its standard output and standard error.
    pub output: String,
}

/// A connection to the guest's command loop.
#[derive(Debug)]
pub struct GuestShell {
    stream: UnixStream,
    pending: Vec<u8>,
    next_id: u64,
}

impl GuestShell {
    /// Connects to qemu's socket for ttyS1.
    pub fn connect(path: &Path) -> Result<Self> {
        let stream = UnixStream::connect(path)
            .map_err(|e| VmError::io(format!("connect to {}", path.display()), e))?;
        Ok(Self {
            stream,
            pending: Vec::new(),
            next_id: 1,
        })
    }

    /// Runs `command` (one line of `sh`) in the guest and waits for it to finish.
    pub fn run(&mut self, command: &str, timeout: Duration) -> Result<ShellOutput> {
        if command.contains('\n') {
            return Err(VmError::Protocol(format!(
                "a guest command must be one line: {command:?}"
            )));
        }
        let id = self.next_id;
        self.next_id += 1;
        self.stream
            .write_all(format!("{id} {command}\n").as_bytes())
            .map_err(|e| VmError::io("write to the guest command channel", e))?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some((out, rest)) = take_reply(&self.pending, id)? {
                self.pending = rest;
                return Ok(out);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(VmError::Timeout {
                    what: format!("guest command {command:?}"),
                    after: timeout,
                });
            }
            self.stream
                .set_read_timeout(Some(deadline - now))
                .map_err(|e| VmError::io("set a read timeout", e))?;
            let mut buf = [0u8; 4096];
            match self.stream.read(&mut buf) {
                Ok(0) => return Err(VmError::Protocol("qemu closed the command channel".into())),
                Ok(n) => self.pending.extend_from_slice(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(VmError::io("read the guest command channel", e)),
            }
        }
    }

    /// Runs `command` and fails unless it exits 0; returns its output.
    pub fn run_ok(&mut self, command: &str, timeout: Duration) -> Result<String> {
        let out = self.run(command, timeout)?;
        if out.status != 0 {
            return Err(VmError::Command {
                cmd: format!("(guest) {command}"),
                status: format!("exit {}", out.status),
                output: out.output,
            });
        }
        Ok(out.output)
    }
}

/// Finds the reply to request `id` in `buf`: the output before its `@@done` line (output of
/// earlier, abandoned requests included) and what follows it.
fn take_reply(buf: &[u8], id: u64) -> Result<Option<(ShellOutput, Vec<u8>)>> {
    let text = String::from_utf8_lossy(buf);
    let marker = format!("@@done {id} ");
    let mut start = 0;
    for line in text.split_inclusive('\n') {
        let end = start + line.len();
        if !line.ends_with('\n') {
            break;
        }
        if let Some(status) = line.trim_end().strip_prefix(&marker) {
            let status = status
                .parse()
                .map_err(|_| VmError::Protocol(format!("bad status line {line:?}")))?;
            let output = text[..start].to_string();
            // Output of earlier requests that timed out ends with their own markers.
            let output = match output.rfind("@@done ") {
                Some(i) => output[i..]
                    .split_once('\n')
                    .map(|(_, rest)| rest.to_string())
                    .unwrap_or_default(),
                None => output,
            };
            return Ok(Some((
                ShellOutput { status, output },
                text[end..].as_bytes().to_vec(),
            )));
        }
        start = end;
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_is_found_only_when_its_marker_line_is_complete() {
        assert_eq!(take_reply(b"hello\n@@done 3 0", 3).unwrap(), None);
        let (out, rest) = take_reply(b"hello\nworld\n@@done 3 7\nnext", 3)
            .unwrap()
            .unwrap();
        assert_eq!(
            out,
            ShellOutput {
                status: 7,
                output: "hello\nworld\n".into()
            }
        );
        assert_eq!(rest, b"next");
    }

    #[test]
    fn output_of_an_abandoned_request_is_dropped() {
        let (out, _) = take_reply(b"old\n@@done 1 0\nnew\n@@done 2 0\n", 2)
            .unwrap()
            .unwrap();
        assert_eq!(out.output, "new\n");
        assert!(take_reply(b"@@done 2 zero\n", 2).is_err());
    }
}
