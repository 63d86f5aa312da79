//! Fixtures for the system tests: they run the real `guest-agent` and `guestctl` binaries
//! against real loop-mounted filesystems, writers, network namespaces and the real kernel,
//! as root.
//!
//! Every fixture owns what it creates and removes it in `Drop`, so clean-up also happens
//! when a test panics; every wait is bounded, so a wrong freeze order fails a test instead of
//! hanging it. Nothing outside a test's scratch directory (`/var/tmp/gatest-*`) is ever
//! frozen: the agent always runs with `--freeze-only <scratch>`.
//!
//! Running them: `cargo build --workspace && cargo test -p system-tests` as root (the tests
//! use the binaries in `target/debug`, or `GUEST_AGENT_BIN` / `GUESTCTL_BIN`; a stale build
//! tests stale code). They need util-linux (losetup, mount, fsfreeze), e2fsprogs, xfsprogs
//! (mkfs.xfs, xfs_io), iproute2, coreutils `dd`, python3 (the writers of `status_observed`),
//! veth support in the kernel and a tmpfs at `/dev/shm` (per-agent journal directories).
//! Tests run in parallel: names of directories, sockets, namespaces and ports are unique per
//! test.
//!
//! The tests by topic (`tests/*.rs`): `freeze` (Quiesce/Thaw over gRPC and guestctl, ext4 and
//! xfs, idempotence, conflicts, bad requests, bind mounts, tmpfs, Ping latency), `ordering`
//! (a loop filesystem inside another, snapshot consistency), `rollback` (EBUSY and real EIO
//! failures), `watchdog`, `init` (volumes), `network` (NetworkInit in a namespace),
//! `transport` (unix/tcp, health, reflection, limits), `lifecycle` (Shutdown, SIGTERM, journal
//! recovery), `guestctl` (exit codes, JSON), `observer` and `status_observed` (the eBPF
//! observer through FreezeStatus and `guestctl status`).
//!
//! One file per concept: [`scratch`] (the test's directory and last-resort clean-up),
//! [`loopdev`] / [`loopfs`] / [`mount`] (block devices and filesystems), [`fsfreeze`]
//! (freezing from outside the agent), [`writer`] (a process that blocks on a frozen
//! filesystem), [`agent`] (the agent process), [`client`] / [`rpc`] (bounded gRPC calls),
//! [`guestctl`] (the CLI), [`netns`] (network namespaces), [`requests`] / [`results`]
//! (building requests, reading reports),
//! [`statedir`] (the agent's journal directory), [`mountinfo`], [`cmd`], [`names`],
//! [`bins`].

pub mod agent;
pub mod bins;
pub mod client;
pub mod cmd;
pub mod error;
pub mod fsfreeze;
pub mod guestctl;
pub mod loopdev;
pub mod loopfs;
pub mod mount;
pub mod mountinfo;
pub mod names;
pub mod netns;
pub mod reliability;
pub mod requests;
pub mod results;
pub mod rpc;
pub mod scratch;
pub mod statedir;
pub mod tools;
pub mod writer;

pub use agent::Agent;
pub use error::{FixtureError, Result};
pub use fsfreeze::ExternalFreeze;
pub use loopdev::LoopDev;
pub use loopfs::{FsType, LoopFs};
pub use mount::Mount;
pub use netns::NetNs;
pub use rpc::Rpc;
pub use scratch::Scratch;
pub use writer::{Durability, Writer};
