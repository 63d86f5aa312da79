//! The watchdog: thaws a freeze whose Thaw never came (the host crashed or timed out after
//! Quiesce). Each freeze gets its own timer, tagged with the freeze's generation; a timer
//! whose freeze already ended does nothing.

use std::time::Instant;

use super::Freezer;

/// Pause before a failed watchdog thaw is tried again.
const RETRY: std::time::Duration = std::time::Duration::from_secs(5);

/// Starts the timer for the freeze of `generation`, due at `deadline`.
pub(super) fn spawn(freezer: Freezer, generation: u64, deadline: Instant) {
    tokio::spawn(async move {
        tokio::time::sleep_until(deadline.into()).await;
        fire(freezer, generation).await;
    });
}

async fn fire(freezer: Freezer, generation: u64) {
    // Wait for a running operation without a bound: the watchdog must not give up.
    let guard = freezer.inner.op_lock.clone().lock_owned().await;
    let mount_points = {
        let st = freezer.inner.state.lock();
        if st.generation != generation || st.held.is_empty() {
            return;
        }
        st.held
            .iter()
            .map(|h| h.fs.mount_point.clone())
            .collect::<Vec<_>>()
    };
    tracing::warn!(
        timeout_s = freezer.inner.cfg.watchdog_timeout.as_secs_f64(),
        mountpoints = ?mount_points,
        "no Thaw arrived before the watchdog deadline; thawing"
    );
    let timeout = freezer.inner.cfg.operation_timeout;
    match freezer
        .thaw_locked(guard, timeout, super::ThawCause::Watchdog)
        .await
    {
        Ok(report) => tracing::warn!(count = report.thawed_count, "watchdog thaw done"),
        Err(e) => {
            tracing::error!(error = %e, "watchdog thaw failed; filesystems may still be frozen; retrying in 5 s");
            spawn(freezer, generation, Instant::now() + RETRY);
        }
    }
}
