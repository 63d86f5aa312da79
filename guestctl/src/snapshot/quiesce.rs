//! The Quiesce call of a snapshot, run as its own task so the host can stop *waiting* for it
//! (timeout, SIGINT) without cancelling it in the guest.
//!
//! Why not cancel: a Quiesce the host gives up on may be half-way through in the guest (a
//! freeze hook running, FIFREEZE syncing). Cancelling it then leaves the outcome to timing;
//! letting it finish means the agent serialises it before the Thaw that follows, so the end
//! state is deterministic: thawed. The call is cancelled only if it is still outstanding when
//! the thaw deadline passes, and [`PendingQuiesce::poll_settled`] lets the thaw confirmation
//! know whether a late freeze can still happen.

use std::time::Duration;

use futures::FutureExt;
use guest_proto::v1::guest_client::GuestClient;
use guest_proto::v1::{QuiesceRequest, QuiesceResponse};
use nix::sys::signal::Signal;
use opentelemetry::Context;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tonic::Status;

use super::signals::Interrupts;
use super::traced_request;

/// How a Quiesce call ended (or that it was cancelled by us).
#[derive(Debug, Clone)]
pub enum Answer {
    /// The agent froze (`frozen_count` filesystems).
    Frozen(QuiesceResponse),
    /// The agent answered with an error status.
    Failed(Status),
    /// We cancelled the call at the thaw deadline.
    Cancelled,
}

/// What waiting for the answer gave.
#[derive(Debug, Clone)]
pub enum Waited {
    /// The answer arrived in time.
    Answered(Answer),
    /// No answer within the timeout; the call goes on in the background.
    TimedOut(Duration),
    /// A signal arrived first; the call goes on in the background.
    Interrupted(Signal),
}

/// A Quiesce call in flight, or its answer.
#[derive(Debug)]
pub struct PendingQuiesce {
    task: Option<JoinHandle<Result<QuiesceResponse, Status>>>,
    answer: Option<Answer>,
    /// The answer arrived after [`PendingQuiesce::wait`] stopped waiting.
    late: bool,
}

impl PendingQuiesce {
    /// Sends Quiesce for `mountpoints` (empty: all eligible) with `cx`'s trace context. No
    /// gRPC deadline is sent: the agent bounds the operation itself (`--operation-timeout`).
    pub fn start(mut client: GuestClient<Channel>, cx: &Context, mountpoints: Vec<String>) -> Self {
        let request = traced_request(QuiesceRequest { mountpoints }, cx, None);
        let task = tokio::spawn(async move {
            client
                .quiesce(request)
                .await
                .map(tonic::Response::into_inner)
        });
        Self {
            task: Some(task),
            answer: None,
            late: false,
        }
    }

    fn settle(&mut self, joined: Result<Result<QuiesceResponse, Status>, tokio::task::JoinError>) {
        self.task = None;
        self.answer = Some(match joined {
            Ok(Ok(r)) => Answer::Frozen(r),
            Ok(Err(s)) => Answer::Failed(s),
            Err(e) if e.is_cancelled() => Answer::Cancelled,
            Err(e) => Answer::Failed(Status::internal(format!("the Quiesce task failed: {e}"))),
        });
    }

    /// Waits up to `timeout` for the answer, or until a signal arrives.
    pub async fn wait(&mut self, timeout: Duration, interrupts: &Interrupts) -> Waited {
        let Some(task) = self.task.as_mut() else {
            return Waited::Answered(self.answer.clone().unwrap_or(Answer::Cancelled));
        };
        tokio::select! {
            joined = tokio::time::timeout(timeout, task) => match joined {
                Ok(joined) => {
                    self.settle(joined);
                    Waited::Answered(self.answer.clone().unwrap_or(Answer::Cancelled))
                }
                Err(_) => {
                    self.late = true;
                    Waited::TimedOut(timeout)
                }
            },
            sig = interrupts.wait() => {
                self.late = true;
                Waited::Interrupted(sig)
            }
        }
    }

    /// True once the call has an answer (or was cancelled); never waits.
    pub fn poll_settled(&mut self) -> bool {
        if let Some(task) = self.task.as_mut() {
            if task.is_finished() {
                if let Some(joined) = task.now_or_never() {
                    self.settle(joined);
                }
            }
        }
        self.task.is_none()
    }

    /// Cancels the call if it is still outstanding (the stream is reset, so the agent drops
    /// the request if it has not started freezing yet).
    pub fn cancel(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            self.answer = Some(Answer::Cancelled);
        }
    }

    /// The answer that arrived after we stopped waiting, if any (known once settled).
    pub fn late_answer(&self) -> Option<&Answer> {
        if self.late {
            self.answer.as_ref()
        } else {
            None
        }
    }
}

impl Drop for PendingQuiesce {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}
