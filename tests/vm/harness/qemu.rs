//! The qemu command line of a test VM (TCG: KVM does not boot nested guests on this machine
//! kind) and the running qemu process.
//!
//! Devices: a vhost-user-vsock-pci backed by [`super::vsockd::VsockDaemon`] (it needs guest
//! memory shared with the daemon: a memfd backend), one virtio-blk disk per image with
//! `cache=writethrough` (the guest's flushes reach the image file; `cache=unsafe` would drop
//! them and no freeze could make a copy consistent), then the read-only disks (`readonly=on`:
//! the guest cannot write them, and several VMs may share one image), ttyS0 to a file (the
//! console) and ttyS1 to a unix socket (the command channel).

use std::path::PathBuf;

/// What to boot and how.
#[derive(Debug, Clone)]
pub struct QemuConfig {
    /// Uncompressed kernel (ELF with a PVH note).
    pub kernel: PathBuf,
    /// The initramfs (newc cpio).
    pub initrd: PathBuf,
    /// Kernel command line.
    pub append: String,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// Raw disk images, attached in order as /dev/vda, /dev/vdb, ...
    pub disks: Vec<PathBuf>,
    /// Raw images attached read-only after `disks` (the next /dev/vdX letters).
    pub readonly_disks: Vec<PathBuf>,
    /// File receiving ttyS0.
    pub console: PathBuf,
    /// Unix socket (qemu listens) for ttyS1.
    pub command_socket: PathBuf,
    /// vhost-user socket of the vsock backend.
    pub vhost_socket: PathBuf,
    /// `-icount shift=N,sleep=off`: the guest's clocks advance by 2^N ns per instruction
    /// executed instead of with the host's time, so a CPU time measured inside the guest
    /// counts instructions and the host's load cannot move it (used by the eBPF overhead
    /// benchmark; much slower than plain TCG).
    pub icount_shift: Option<u8>,
}

impl QemuConfig {
    /// The arguments of `qemu-system-x86_64`.
    pub fn args(&self) -> Vec<String> {
        let mem = self.memory_mib;
        let mut a: Vec<String> = [
            "-machine",
            "q35,accel=tcg",
            "-cpu",
            "max",
            "-smp",
            "1",
            "-nodefaults",
            "-no-user-config",
            "-nographic",
            "-no-reboot",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut push = |k: &str, v: String| {
            a.push(k.to_string());
            a.push(v);
        };
        push("-m", format!("{mem}M"));
        if let Some(shift) = self.icount_shift {
            push("-icount", format!("shift={shift},sleep=off"));
        }
        push(
            "-object",
            format!("memory-backend-memfd,id=mem,size={mem}M,share=on"),
        );
        push("-numa", "node,memdev=mem".into());
        push("-kernel", self.kernel.display().to_string());
        push("-initrd", self.initrd.display().to_string());
        push("-append", self.append.clone());
        push(
            "-chardev",
            format!("file,id=con,path={}", self.console.display()),
        );
        push("-serial", "chardev:con".into());
        push(
            "-chardev",
            format!(
                "socket,id=cmd,path={},server=on,wait=off",
                self.command_socket.display()
            ),
        );
        push("-serial", "chardev:cmd".into());
        push(
            "-chardev",
            format!("socket,id=vsock,path={}", self.vhost_socket.display()),
        );
        push("-device", "vhost-user-vsock-pci,chardev=vsock".into());
        for (i, disk) in self.disks.iter().enumerate() {
            push(
                "-drive",
                format!(
                    "file={},format=raw,if=none,id=disk{i},cache=writethrough",
                    disk.display()
                ),
            );
            push("-device", format!("virtio-blk-pci,drive=disk{i}"));
        }
        for (i, disk) in self.readonly_disks.iter().enumerate() {
            push(
                "-drive",
                format!(
                    "file={},format=raw,if=none,id=rodisk{i},readonly=on",
                    disk.display()
                ),
            );
            push("-device", format!("virtio-blk-pci,drive=rodisk{i}"));
        }
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_has_shared_memory_vsock_and_flush_honouring_disks() {
        let cfg = QemuConfig {
            kernel: "/k/vmlinux".into(),
            initrd: "/t/initramfs.cpio".into(),
            append: "console=ttyS0".into(),
            memory_mib: 512,
            disks: vec!["/t/a.img".into(), "/t/b.img".into()],
            readonly_disks: vec!["/c/py.img".into()],
            console: "/t/console.log".into(),
            command_socket: "/t/cmd.sock".into(),
            vhost_socket: "/t/vhost.sock".into(),
            icount_shift: None,
        };
        let line = cfg.args().join(" ");
        assert!(line.contains("-m 512M"), "{line}");
        assert!(
            line.contains("memory-backend-memfd,id=mem,size=512M,share=on"),
            "{line}"
        );
        assert!(
            line.contains("vhost-user-vsock-pci,chardev=vsock"),
            "{line}"
        );
        assert!(
            line.contains("file=/t/b.img,format=raw,if=none,id=disk1,cache=writethrough"),
            "{line}"
        );
        assert!(!line.contains("cache=unsafe"), "{line}");
        // The read-only disk comes after the writable ones (so it is /dev/vdc here).
        let ro = line
            .find("file=/c/py.img,format=raw,if=none,id=rodisk0,readonly=on")
            .unwrap_or_else(|| panic!("{line}"));
        assert!(ro > line.find("id=disk1").unwrap(), "{line}");
        assert!(line.contains("virtio-blk-pci,drive=rodisk0"), "{line}");
        assert!(line.contains("-append console=ttyS0"), "{line}");
        assert!(!line.contains("-icount"), "{line}");
        let counted = QemuConfig {
            icount_shift: Some(3),
            ..cfg
        };
        let line = counted.args().join(" ");
        assert!(line.contains("-icount shift=3,sleep=off"), "{line}");
    }
}
