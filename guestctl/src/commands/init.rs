//! `guestctl init`: send the initialisation request.

use guest_proto::v1::guest_init_response::Result as InitResult;
use guest_proto::v1::GuestInitRequest;

use super::{request, rpc, Ctx};
use crate::error::CtlError;
use crate::output::{emit, InitReport};

/// Sends `init`; a `GuestInitError` answer becomes [`CtlError::InitRejected`].
pub async fn run(ctx: &mut Ctx, init: GuestInitRequest) -> Result<(), CtlError> {
    let report = InitReport {
        initialised: true,
        volumes: init.volumes.len(),
        network: init.network.is_some(),
    };
    let answer = rpc(
        "init",
        ctx.timeout,
        ctx.client.init(request(init, ctx.timeout)),
    )
    .await?;
    match answer.result {
        Some(InitResult::Success(_)) => Ok(emit(&report, ctx.json)?),
        Some(InitResult::Error(e)) => Err(CtlError::InitRejected { reason: e.reason }),
        None => Err(CtlError::BadResponse {
            op: "init",
            detail: "the agent's answer carries neither success nor error".into(),
        }),
    }
}
