//! The vhost-user vsock backend: one `vhost-device-vsock` per VM. qemu connects to its
//! vhost-user socket; the host reaches the guest through its Firecracker-style hybrid socket
//! (`CONNECT <port>\n`), and guest connections to CID 2 port P arrive on `<uds>_P`.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::cache;
use super::error::{Result, VmError};
use super::process::Spawned;

/// The guest's CID.
pub const GUEST_CID: u32 = 3;

/// A running vhost-device-vsock, killed on drop.
#[derive(Debug)]
pub struct VsockDaemon {
    process: Spawned,
    /// The vhost-user socket qemu connects to.
    pub vhost_socket: PathBuf,
    /// The hybrid vsock socket for host-initiated connections.
    pub uds: PathBuf,
}

impl VsockDaemon {
    /// Starts the daemon with its sockets and log in `dir` and waits for its vhost-user socket.
    pub fn start(dir: &Path) -> Result<Self> {
        let bin = cache::vhost_device_vsock()?;
        let vhost_socket = dir.join("vhost.sock");
        let uds = dir.join("vm.sock");
        let log = dir.join("vhost-device-vsock.log");
        let log_file =
            File::create(&log).map_err(|e| VmError::io(format!("create {}", log.display()), e))?;
        let log_err = log_file
            .try_clone()
            .map_err(|e| VmError::io("clone a log handle", e))?;
        let mut process = Spawned::spawn(
            "vhost-device-vsock",
            Command::new(&bin)
                .arg("--vm")
                .arg(format!(
                    "guest-cid={GUEST_CID},socket={},uds-path={}",
                    vhost_socket.display(),
                    uds.display()
                ))
                .env("RUST_LOG", "warn")
                .stdin(Stdio::null())
                .stdout(log_file)
                .stderr(log_err),
        )?;
        let timeout = Duration::from_secs(10);
        let deadline = Instant::now() + timeout;
        while !vhost_socket.exists() {
            process.ensure_running().map_err(|e| VmError::Command {
                cmd: bin.display().to_string(),
                status: e.to_string(),
                output: std::fs::read_to_string(&log).unwrap_or_default(),
            })?;
            if Instant::now() >= deadline {
                return Err(VmError::Timeout {
                    what: format!("{} to appear", vhost_socket.display()),
                    after: timeout,
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Self {
            process,
            vhost_socket,
            uds,
        })
    }

    /// The daemon's PID.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Where a guest connection to host port `port` arrives (`<uds>_<port>`).
    pub fn guest_to_host_socket(&self, port: u32) -> PathBuf {
        PathBuf::from(format!("{}_{port}", self.uds.display()))
    }
}
