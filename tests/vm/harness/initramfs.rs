//! The guest's initramfs, assembled per VM by `tests/vm/mkinitramfs.sh` from the cached kernel's
//! modules, busybox-static, mke2fs, the init and writer scripts and the static binaries (about
//! a second; the agent changes with every build, so nothing is cached).

use std::path::{Path, PathBuf};

use super::bins;
use super::cache::GuestKernel;
use super::error::Result;
use super::process::run_tool_ok;

/// Builds the initramfs for `kernel` at `out`.
pub fn build(kernel: &GuestKernel, out: &Path) -> Result<PathBuf> {
    bins::ensure_built()?;
    let agent = bins::guest_agent()?;
    let guestctl = bins::guest_guestctl()?;
    let script = bins::vm_file("mkinitramfs.sh");
    run_tool_ok(
        "bash",
        &[
            script.as_os_str(),
            kernel.path().as_os_str(),
            agent.as_os_str(),
            guestctl.as_os_str(),
            out.as_os_str(),
        ],
    )?;
    Ok(out.to_path_buf())
}
