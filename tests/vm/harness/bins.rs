//! The static guest binaries (built for x86_64-unknown-linux-musl, so the busybox initramfs
//! needs no C library for them) and the host's guestctl.
//!
//! musl rather than glibc with `crt-static`: a static glibc binary still wants NSS shared
//! libraries at run time for name look-ups and warns at link time; musl links cleanly, and
//! the eBPF object (built for bpfel by aya-build) is embedded the same way for either target.

use std::path::PathBuf;

use super::error::{Result, VmError};

/// Target triple of the guest binaries.
pub const GUEST_TARGET: &str = "x86_64-unknown-linux-musl";

fn target_dir() -> PathBuf {
    let root = workspace_root();
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => {
            let d = PathBuf::from(d);
            if d.is_absolute() {
                d
            } else {
                root.join(d)
            }
        }
        None => root.join("target"),
    }
}

/// The workspace root (the parent of the tests crate).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

fn locate(env: &str, path: PathBuf) -> Result<PathBuf> {
    let path = std::env::var_os(env).map(PathBuf::from).unwrap_or(path);
    if path.is_file() {
        Ok(path)
    } else {
        Err(VmError::MissingBinary { path })
    }
}

/// The static guest-agent (`GUEST_AGENT_VM_AGENT` overrides).
pub fn guest_agent() -> Result<PathBuf> {
    locate(
        "GUEST_AGENT_VM_AGENT",
        target_dir().join(GUEST_TARGET).join("debug/guest-agent"),
    )
}

/// The static guestctl run inside the guest (`GUEST_AGENT_VM_GUESTCTL` overrides).
pub fn guest_guestctl() -> Result<PathBuf> {
    locate(
        "GUEST_AGENT_VM_GUESTCTL",
        target_dir().join(GUEST_TARGET).join("debug/guestctl"),
    )
}

/// The host's guestctl (`GUESTCTL_BIN` overrides).
pub fn host_guestctl() -> Result<PathBuf> {
    locate("GUESTCTL_BIN", target_dir().join("debug/guestctl"))
}

/// A file under `tests/vm/` (scripts shipped with the harness).
pub fn vm_file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("vm")
        .join(name)
}
