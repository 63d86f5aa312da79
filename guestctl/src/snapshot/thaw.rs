//! The guaranteed thaw: Thaw until the agent answers, then FreezeStatus until it reports
//! nothing frozen and no operation in progress, thawing again whenever it still holds a
//! freeze, all until one deadline.
//!
//! Why a confirmation and not just a successful Thaw: when the host gave up on a slow
//! Quiesce, the guest may finish freezing *after* the Thaw (upstream's hours-long frozen VMs,
//! REFERENCE section 2). So the sequence only counts as thawed when (a) our own Quiesce call
//! has settled (answered, failed, or been cancelled), and (b) after that the agent says
//! `frozen == false` and `operation_in_progress == false`.

use std::time::Duration;

use guest_proto::v1::guest_client::GuestClient;
use guest_proto::v1::{FreezeStatusRequest, FreezeStatusResponse, ThawRequest};
use opentelemetry::trace::TraceContextExt;
use opentelemetry::{Context, KeyValue};
use tokio::time::Instant;
use tonic::transport::Channel;

use super::quiesce::PendingQuiesce;
use super::traced_request;
use crate::grpc_code::code_name;

/// Longest a single Thaw or FreezeStatus attempt may take; a stuck attempt is abandoned
/// and retried (on a fresh connection if needed) while the deadline allows.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// Pause between failed attempts: starts small, doubles, capped.
const BACKOFF_START: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Extra looks at the agent once the deadline has passed (after cancelling an unsettled
/// Quiesce), and the bound of each.
pub const LAST_LOOKS: u32 = 2;
/// See [`LAST_LOOKS`].
pub const LAST_LOOK_TIMEOUT: Duration = Duration::from_secs(1);

/// What the thaw phase achieved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ThawResult {
    /// A Thaw call was answered with success.
    pub thaw_ok: bool,
    /// Thaw calls made (successful or not).
    pub attempts: u32,
    /// Filesystems thawed over all successful calls.
    pub thawed_count: u32,
    /// The last failure (RPC status, timeout, connection), if any.
    pub last_error: Option<String>,
    /// Time the Thaw phase took (until the first successful Thaw or the deadline).
    pub thaw_time: Duration,
}

/// What the confirmation phase saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfirmResult {
    /// The agent reported nothing frozen, nothing in progress, after our Quiesce settled.
    pub confirmed: bool,
    /// FreezeStatus calls made.
    pub status_calls: u32,
    /// Extra Thaw calls made because the agent still (or again) held a freeze.
    pub rethaws: u32,
    /// Filesystems those extra Thaw calls thawed.
    pub rethawed_count: u32,
    /// Mountpoints the agent last reported frozen (when not confirmed).
    pub still_frozen: Vec<String>,
    /// Why it is not confirmed (last error or state).
    pub last_error: Option<String>,
    /// Time the confirmation took.
    pub confirm_time: Duration,
}

/// One bounded RPC attempt's failure as text.
fn describe(status: &tonic::Status) -> String {
    format!("{}: {}", code_name(status.code()), status.message())
}

fn remaining(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

async fn thaw_once(
    client: &mut GuestClient<Channel>,
    cx: &Context,
    deadline: Instant,
) -> Result<u32, String> {
    let t = remaining(deadline).min(ATTEMPT_TIMEOUT);
    if t.is_zero() {
        return Err("deadline reached".into());
    }
    match tokio::time::timeout(t, client.thaw(traced_request(ThawRequest {}, cx, Some(t)))).await {
        Err(_) => Err(format!("Thaw timed out after {t:?}")),
        Ok(Err(s)) => Err(format!("Thaw failed: {}", describe(&s))),
        Ok(Ok(r)) => Ok(r.into_inner().thawed_count),
    }
}

async fn status_once(
    client: &mut GuestClient<Channel>,
    cx: &Context,
    deadline: Instant,
) -> Result<FreezeStatusResponse, String> {
    let t = remaining(deadline).min(ATTEMPT_TIMEOUT);
    if t.is_zero() {
        return Err("deadline reached".into());
    }
    let call = client.freeze_status(traced_request(FreezeStatusRequest {}, cx, Some(t)));
    match tokio::time::timeout(t, call).await {
        Err(_) => Err(format!("FreezeStatus timed out after {t:?}")),
        Ok(Err(s)) => Err(format!("FreezeStatus failed: {}", describe(&s))),
        Ok(Ok(r)) => Ok(r.into_inner()),
    }
}

/// Sends Thaw until one succeeds or `deadline` passes.
pub async fn thaw(
    client: &mut GuestClient<Channel>,
    cx: &Context,
    deadline: Instant,
) -> ThawResult {
    let started = Instant::now();
    let mut r = ThawResult::default();
    let mut backoff = BACKOFF_START;
    while !remaining(deadline).is_zero() {
        r.attempts += 1;
        match thaw_once(client, cx, deadline).await {
            Ok(n) => {
                r.thaw_ok = true;
                r.thawed_count += n;
                cx.span().add_event(
                    "thawed",
                    vec![
                        KeyValue::new("attempt", i64::from(r.attempts)),
                        KeyValue::new("thawed_count", i64::from(n)),
                    ],
                );
                break;
            }
            Err(e) => {
                cx.span().add_event(
                    "thaw attempt failed",
                    vec![
                        KeyValue::new("attempt", i64::from(r.attempts)),
                        KeyValue::new("error", e.clone()),
                    ],
                );
                r.last_error = Some(e);
                tokio::time::sleep(backoff.min(remaining(deadline))).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
    r.thaw_time = started.elapsed();
    r
}

/// Polls FreezeStatus (thawing again when needed) until the agent is confirmed thawed after
/// `pending` settled, or `deadline` passes. Past the deadline an unsettled Quiesce is
/// cancelled and the agent is looked at [`LAST_LOOKS`] more times, each bounded by
/// [`LAST_LOOK_TIMEOUT`], so the whole call ends shortly after the deadline.
pub async fn confirm(
    client: &mut GuestClient<Channel>,
    cx: &Context,
    pending: &mut PendingQuiesce,
    deadline: Instant,
) -> ConfirmResult {
    let started = Instant::now();
    let mut r = ConfirmResult::default();
    let mut backoff = BACKOFF_START;
    let mut last_looks = LAST_LOOKS;
    loop {
        // Each call gets at least a short window, so the agent is looked at even when the
        // thaw used up the whole deadline.
        let window = deadline.max(Instant::now() + LAST_LOOK_TIMEOUT);
        // Settled before the status call, so a freeze it made is visible in the answer.
        let settled = pending.poll_settled();
        r.status_calls += 1;
        let mut retry_now = false;
        match status_once(client, cx, window).await {
            Ok(st) if !st.frozen && !st.operation_in_progress && settled => {
                r.confirmed = true;
                r.still_frozen.clear();
                r.last_error = None;
                cx.span().add_event(
                    "confirmed thawed",
                    vec![KeyValue::new("status_calls", i64::from(r.status_calls))],
                );
                break;
            }
            Ok(st) => {
                r.still_frozen = st
                    .filesystems
                    .iter()
                    .map(|f| f.mountpoint.clone())
                    .collect();
                r.last_error = Some(if st.frozen {
                    format!(
                        "the agent still holds {} filesystem(s) frozen",
                        st.filesystems.len()
                    )
                } else if st.operation_in_progress {
                    "a freeze operation is still in progress in the agent".to_string()
                } else {
                    "our Quiesce call has not settled yet".to_string()
                });
                if st.frozen {
                    r.rethaws += 1;
                    retry_now = true;
                    match thaw_once(client, cx, window).await {
                        Ok(n) => {
                            r.rethawed_count += n;
                            cx.span().add_event(
                                "thawed a late freeze",
                                vec![KeyValue::new("thawed_count", i64::from(n))],
                            );
                        }
                        Err(e) => r.last_error = Some(e),
                    }
                }
            }
            Err(e) => r.last_error = Some(e),
        }
        if remaining(deadline).is_zero() {
            if last_looks == 0 {
                break;
            }
            last_looks -= 1;
            if !pending.poll_settled() {
                // Stop the Quiesce so it cannot freeze after we leave, then look again.
                pending.cancel();
            }
            continue;
        }
        if !retry_now {
            tokio::time::sleep(backoff.min(remaining(deadline))).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }
    r.confirm_time = started.elapsed();
    r
}
