//! What `scripts/setup-vm.sh` left in the VM cache: guest kernels (a plain ELF `vmlinux`, the
//! modules the guest loads and their load order) and the vhost-device-vsock daemon. Nothing is
//! downloaded at test time; a missing piece is an error that says to run the set-up.

use std::path::{Path, PathBuf};

use super::error::{Result, VmError};

/// Default cache directory (the set-up script's default too).
pub const DEFAULT_CACHE: &str = "/var/cache/guest-agent-vm";

/// The cache directory: `GUEST_AGENT_VM_CACHE`, else [`DEFAULT_CACHE`].
pub fn cache_dir() -> PathBuf {
    std::env::var_os("GUEST_AGENT_VM_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CACHE))
}

fn existing(what: &str, path: PathBuf) -> Result<PathBuf> {
    if path.exists() {
        Ok(path)
    } else {
        Err(VmError::NotSetUp {
            what: what.to_string(),
            path,
        })
    }
}

/// The vhost-user vsock backend (rust-vmm vhost-device-vsock 0.3).
pub fn vhost_device_vsock() -> Result<PathBuf> {
    existing(
        "vhost-device-vsock",
        cache_dir().join("cargo/bin/vhost-device-vsock"),
    )
}

/// A guest kernel prepared by the set-up script.
#[derive(Debug, Clone)]
pub struct GuestKernel {
    /// Series as named in the cache, e.g. "6.12".
    pub series: String,
    /// `uname -r` of the kernel, e.g. "6.12.117+deb12-amd64".
    pub release: String,
    /// Directory holding `vmlinux`, `modules/` and `modules.load`.
    pub dir: PathBuf,
}

impl GuestKernel {
    /// The cached kernel of `series`.
    pub fn load(series: &str) -> Result<Self> {
        let dir = cache_dir().join("kernels").join(series);
        existing(&format!("kernel {series}"), dir.join("ready"))?;
        let release_file = dir.join("release");
        let release = std::fs::read_to_string(&release_file)
            .map_err(|e| VmError::io(format!("read {}", release_file.display()), e))?
            .trim()
            .to_string();
        Ok(Self {
            series: series.to_string(),
            release,
            dir,
        })
    }

    /// The uncompressed kernel image qemu boots (through its PVH entry point).
    pub fn vmlinux(&self) -> PathBuf {
        self.dir.join("vmlinux")
    }

    /// The directory with `modules/*.ko` and `modules.load`, as mkinitramfs.sh expects it.
    pub fn path(&self) -> &Path {
        &self.dir
    }
}
