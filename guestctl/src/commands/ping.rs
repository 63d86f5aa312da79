//! `guestctl ping`: liveness and round-trip time.

use std::time::{Duration, Instant};

use guest_proto::v1::PingRequest;

use super::{request, rpc, Ctx};
use crate::error::CtlError;
use crate::output::{emit, ping_line, PingReport};

/// Sends `count` pings `interval` apart (a zero interval sends each as soon as the previous
/// one is answered); text mode prints each answer as it arrives.
pub async fn run(ctx: &mut Ctx, count: u32, interval: Duration) -> Result<(), CtlError> {
    let mut report = PingReport {
        version: String::new(),
        rtt_ms: Vec::with_capacity(count as usize),
    };
    for i in 0..count {
        if i > 0 {
            pace(interval).await;
        }
        let started = Instant::now();
        let pong = rpc(
            "ping",
            ctx.timeout,
            ctx.client.ping(request(PingRequest {}, ctx.timeout)),
        )
        .await?;
        let rtt_ms = started.elapsed().as_secs_f64() * 1000.0;
        if !ctx.json {
            println!("{}", ping_line(&pong.version, rtt_ms));
        }
        report.version = pong.version;
        report.rtt_ms.push(rtt_ms);
    }
    if ctx.json {
        emit(&report, true)?;
    }
    Ok(())
}

/// The wait between two Pings. A zero interval does not wait at all: tokio's timer has a
/// 1 ms resolution, and even a zero sleep waits for its next tick.
async fn pace(interval: Duration) {
    if !interval.is_zero() {
        tokio::time::sleep(interval).await;
    }
}

#[cfg(test)]
mod tests {
    use futures::FutureExt as _;

    use super::*;

    #[tokio::test]
    async fn a_zero_interval_does_not_wait_for_the_timer() {
        assert_eq!(pace(Duration::ZERO).now_or_never(), Some(()));
        assert_eq!(pace(Duration::from_millis(50)).now_or_never(), None);
    }
}
