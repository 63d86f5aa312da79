//! `guestctl shutdown`: ask the agent to thaw, drain and exit.

use guest_proto::v1::ShutdownRequest;

use super::{request, rpc, Ctx};
use crate::error::CtlError;
use crate::output::{emit, ShutdownReport};

/// Sends `shutdown`.
pub async fn run(ctx: &mut Ctx) -> Result<(), CtlError> {
    let call = ctx
        .client
        .shutdown(request(ShutdownRequest {}, ctx.timeout));
    rpc("shutdown", ctx.timeout, call).await?;
    Ok(emit(&ShutdownReport { shutdown: true }, ctx.json)?)
}
