//! Fixtures for the reliability tests (crash safety, hooks, hostile input, soak, stress):
//! things the basic fixtures do not cover.
//!
//! [`records`] writes sequence-numbered, checksummed records and verifies them afterwards
//! (data integrity across thousands of freezes), [`procstat`] samples the agent's memory and
//! open files (leaks), [`latency`] summarises RPC round trips, [`fakevmm`] plays a broken
//! Firecracker hybrid-vsock socket, [`hookdir`] writes freeze/thaw hooks and reads what they
//! logged, [`thaw_guard`] thaws a list of filesystems in a fixed order even when a test
//! panics, [`state_dir`] is a tmpfs for the freeze journal, [`prng`] a seeded generator for
//! randomised schedules that can be replayed.

pub mod fakevmm;
pub mod history;
pub mod hookdir;
pub mod latency;
pub mod prng;
pub mod procstat;
pub mod records;
pub mod state_dir;
pub mod thaw_guard;

pub use fakevmm::{FakeVmm, VmmBehaviour};
pub use latency::Latencies;
pub use prng::Prng;
pub use procstat::{threads_in_state, ProcSample};
pub use records::{RecordWriter, WriteSpan, WriterOptions};
pub use state_dir::StateDir;
pub use thaw_guard::ThawGuard;
