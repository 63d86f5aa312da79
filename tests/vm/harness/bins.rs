//! The static guest binaries (built for x86_64-unknown-linux-musl, so the busybox initramfs
//! needs no C library for them) and the host's guestctl.
//!
//! musl rather than glibc with `crt-static`: a static glibc binary still wants NSS shared
//! libraries at run time for name look-ups and warns at link time; musl links cleanly, and
//! the eBPF object (built for bpfel by aya-build) is embedded the same way for either target.
//!
//! The first VM of a test process runs `tests/vm/build-guest.sh` (cargo: a no-op when nothing
//! changed), so a VM never boots an agent older than the sources.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use system_tests::cmd;

use super::error::{Result, VmError};

/// Longest the static build may take (a cold build is several minutes on 2 cores).
const BUILD_TIMEOUT: Duration = Duration::from_secs(40 * 60);

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

/// Brings the static binaries up to date, once per process. Skipped when
/// `GUEST_AGENT_VM_AGENT` names a prebuilt agent.
pub fn ensure_built() -> Result<()> {
    static BUILT: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    if std::env::var_os("GUEST_AGENT_VM_AGENT").is_some() {
        return Ok(());
    }
    BUILT
        .get_or_init(|| {
            let script = vm_file("build-guest.sh");
            let out = cmd::run_with_timeout("bash", &[&script], BUILD_TIMEOUT)
                .map_err(|e| e.to_string())?;
            if out.ok() {
                Ok(())
            } else {
                Err(format!("{}\n{}", out.stdout, out.stderr))
            }
        })
        .clone()
        .map_err(|output| VmError::Command {
            cmd: vm_file("build-guest.sh").display().to_string(),
            status: "failed".into(),
            output,
        })
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
