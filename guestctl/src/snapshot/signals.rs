//! SIGINT and SIGTERM during a snapshot: caught and remembered, never fatal. The sequence
//! goes on to SIGCONT and the thaw (skipping what has not started yet), and the exit code
//! says it was interrupted. A second signal changes nothing: the thaw is what matters most.

use nix::sys::signal::Signal;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

/// Why the signal handlers could not be installed.
#[derive(Debug, thiserror::Error)]
#[error("cannot install the SIGINT/SIGTERM handlers: {0}")]
pub struct SignalError(#[from] std::io::Error);

/// Catches SIGINT and SIGTERM for the lifetime of the value.
#[derive(Debug)]
pub struct Interrupts {
    rx: watch::Receiver<Option<Signal>>,
    task: tokio::task::JoinHandle<()>,
}

impl Interrupts {
    /// Installs the handlers (from now on the signals no longer kill the process).
    pub fn install() -> Result<Self, SignalError> {
        let mut int = signal(SignalKind::interrupt())?;
        let mut term = signal(SignalKind::terminate())?;
        let (tx, rx) = watch::channel(None);
        let task = tokio::spawn(async move {
            loop {
                let sig = tokio::select! {
                    Some(()) = int.recv() => Signal::SIGINT,
                    Some(()) = term.recv() => Signal::SIGTERM,
                    else => return,
                };
                eprintln!(
                    "guestctl: {sig} received; finishing the snapshot sequence (resume and thaw) before exiting"
                );
                // Keep the first signal: it is the one the exit code reports.
                tx.send_if_modified(|cur| {
                    if cur.is_none() {
                        *cur = Some(sig);
                        true
                    } else {
                        false
                    }
                });
            }
        });
        Ok(Self { rx, task })
    }

    /// The first signal received, if any.
    pub fn received(&self) -> Option<Signal> {
        *self.rx.borrow()
    }

    /// Waits until a signal arrives (forever if none does).
    pub async fn wait(&self) -> Signal {
        let mut rx = self.rx.clone();
        loop {
            if let Some(sig) = *rx.borrow_and_update() {
                return sig;
            }
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

impl Drop for Interrupts {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Held by every unit test that installs [`Interrupts`]: signal listeners are process-wide,
/// so a signal one test raises would reach another test's listener.
#[cfg(test)]
pub(crate) static SIGNAL_TESTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_signal_is_remembered_not_fatal() {
        let _serial = SIGNAL_TESTS.lock().await;
        let i = Interrupts::install().unwrap();
        assert_eq!(i.received(), None);
        nix::sys::signal::raise(Signal::SIGTERM).unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), i.wait())
            .await
            .unwrap();
        assert_eq!(got, Signal::SIGTERM);
        assert_eq!(i.received(), Some(Signal::SIGTERM));
        // A second, different signal does not replace the first.
        nix::sys::signal::raise(Signal::SIGINT).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(i.received(), Some(Signal::SIGTERM));
    }
}
