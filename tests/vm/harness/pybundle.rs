//! The read-only Python disk of the test VMs (issue 12's `vsock:CID:PORT` row): Debian's
//! python3 with its own loader and libraries, its standard library, grpcio + protobuf from
//! PyPI at the versions `scripts/setup-clients-python.sh` pins (grpcio built from its source
//! distribution), the stubs generated from `proto/boxlite/v1/guest.proto`, and
//! `tests/vm/vsock_client.py`, in an ext4 image that the guest mounts at [`MOUNTPOINT`] (the
//! busybox initramfs has no C library of its own; growing it by ~65 MB would cost every boot
//! and guest RAM).
//!
//! `tests/vm/mkpybundle.sh` builds it into the VM cache, keyed by its inputs: grpcio from its
//! source distribution (PyPI's binary wheel lacks grpc-core's vsock resolver; ~25 minutes, once
//! per machine) and the runtime (pip) by `scripts/setup-vm.sh`, the image when the client, the
//! .proto or the script change (a second or two, no network). The first VM of a test process
//! that wants it runs the script; with nothing changed it only hashes the inputs.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use system_tests::cmd;

use super::bins;
use super::error::{Result, VmError};

/// Where the guest mounts the image.
pub const MOUNTPOINT: &str = "/py";

/// The interpreter wrapper inside the image (sets the loader, PYTHONHOME and PYTHONPATH).
pub const PYTHON: &str = "/py/bin/python";

/// The client script inside the image.
pub const CLIENT: &str = "/py/app/vsock_client.py";

/// Longest building the bundle may take: normally seconds, but on a machine whose set-up never
/// ran it includes compiling grpcio from source.
const BUILD_TIMEOUT: Duration = Duration::from_secs(75 * 60);

/// The image, built or found once per test process.
pub fn image() -> Result<PathBuf> {
    static IMAGE: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    let script = bins::vm_file("mkpybundle.sh");
    IMAGE
        .get_or_init(|| {
            let out = cmd::run_with_timeout("bash", &[&script], BUILD_TIMEOUT)
                .map_err(|e| e.to_string())?;
            let path = out.stdout.lines().last().unwrap_or("").trim().to_string();
            if out.ok() && path.ends_with(".img") {
                Ok(PathBuf::from(path))
            } else {
                Err(format!("{}\n{}", out.stdout, out.stderr))
            }
        })
        .clone()
        .map_err(|output| VmError::Command {
            cmd: script.display().to_string(),
            status: "failed".into(),
            output,
        })
}
