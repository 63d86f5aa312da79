//! Harness of the VM end-to-end tests (`tests/tests/vm_e2e.rs`): boots Debian kernels under
//! qemu (TCG) with a busybox initramfs holding the static guest-agent, talks to it from the
//! host over a vhost-user vsock backend's hybrid socket, and inspects copies of the guest's
//! disks.
//!
//! One file per concern: [`cache`] (what `scripts/setup-vm.sh` fetched), [`bins`] (the static
//! guest binaries), [`initramfs`], [`vsockd`] (vhost-device-vsock), [`qemu`] (the command
//! line), [`vm`] (one VM and its teardown), [`console`] (ttyS0), [`shell`] (the command channel
//! on ttyS1), [`rpc`] (gRPC), [`metrics`] (scraping over vsock), [`proxy`] (`guestctl proxy`),
//! [`otlp`] (a span receiver for both sides), [`disk`] (images, e2fsck, debugfs), [`pybundle`]
//! (the read-only Python disk of the grpcio vsock client), [`records`] (the guest writer's
//! records), [`snapshot`] (the host's snapshot flow), [`process`], [`error`].

pub mod bins;
pub mod cache;
pub mod console;
pub mod disk;
pub mod error;
pub mod initramfs;
pub mod metrics;
pub mod otlp;
pub mod process;
pub mod proxy;
pub mod pybundle;
pub mod qemu;
pub mod records;
pub mod rpc;
pub mod shell;
pub mod snapshot;
pub mod vm;
pub mod vsockd;
