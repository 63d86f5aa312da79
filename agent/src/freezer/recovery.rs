//! Start-up recovery: thaws what a previous agent froze and never thawed (it was killed,
//! panicked or ran out of memory while holding a freeze), exactly those filesystems.

use nix::errno::Errno;

use super::ioctl;
use super::journal::Entry;
use super::state::SharedState;

/// What happened to one leftover journal entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovered {
    /// FITHAW succeeded: it was still frozen.
    Thawed,
    /// It was not frozen any more (EINVAL).
    NotFrozen,
    /// Not touched: the mountpoint is gone or now belongs to another device.
    Skipped(String),
    /// FITHAW failed.
    Failed(String),
}

/// Thaws every leftover entry whose mountpoint still leads to the journalled device, then
/// clears the journal. Returns each entry with its result. Blocking: call off the runtime.
pub fn recover(state: &SharedState) -> Vec<(Entry, Recovered)> {
    let leftovers = state.journal().leftovers();
    let mut out = Vec::with_capacity(leftovers.len());
    for entry in leftovers {
        let result = match entry.dev_id() {
            None => Recovered::Skipped(format!("unreadable device id {:?}", entry.dev)),
            Some(dev) => match ioctl::open_mountpoint(
                &entry.mount_point,
                ioctl::Expected {
                    dev,
                    mount_id: entry.mount_id,
                },
            ) {
                Err(e) => Recovered::Skipped(e.to_string()),
                Ok(fd) => match ioctl::thaw(&fd) {
                    Ok(()) => Recovered::Thawed,
                    Err(Errno::EINVAL) => Recovered::NotFrozen,
                    Err(e) => Recovered::Failed(ioctl::errno_text(e)),
                },
            },
        };
        match &result {
            Recovered::Thawed => tracing::warn!(mountpoint = %entry.mount_point.display(),
                "a previous agent died holding this filesystem frozen; thawed it"),
            other => tracing::info!(mountpoint = %entry.mount_point.display(), result = ?other,
                "leftover freeze journal entry"),
        }
        out.push((entry, result));
    }
    let thawed = out.iter().filter(|(_, r)| *r == Recovered::Thawed).count() as u64;
    let mut st = state.lock();
    st.recovered_thaws += thawed;
    state.persist(&st);
    drop(st);
    out
}
