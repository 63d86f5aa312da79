//! `guestctl quiesce`, `thaw` and `status`: the freeze life cycle.

use guest_proto::v1::{FreezeStatusRequest, QuiesceRequest, ThawRequest};

use super::{request, rpc, Ctx};
use crate::error::CtlError;
use crate::output::{emit, now_unix_ms, FsRow, QuiesceReport, StatusReport, ThawReport};

/// Freezes all eligible filesystems, or only `mountpoints` when given.
pub async fn quiesce(ctx: &mut Ctx, mountpoints: Vec<String>) -> Result<(), CtlError> {
    let msg = QuiesceRequest { mountpoints };
    let r = rpc(
        "quiesce",
        ctx.timeout,
        ctx.client.quiesce(request(msg, ctx.timeout)),
    )
    .await?;
    let report = QuiesceReport {
        frozen_count: r.frozen_count,
        filesystems: r.filesystems.iter().map(FsRow::from).collect(),
        watchdog_deadline_unix_ms: r.watchdog_deadline_unix_ms,
    };
    Ok(emit(&report, ctx.json)?)
}

/// Thaws what the agent froze.
pub async fn thaw(ctx: &mut Ctx) -> Result<(), CtlError> {
    let r = rpc(
        "thaw",
        ctx.timeout,
        ctx.client.thaw(request(ThawRequest {}, ctx.timeout)),
    )
    .await?;
    let report = ThawReport {
        thawed_count: r.thawed_count,
        filesystems: r.filesystems.iter().map(FsRow::from).collect(),
    };
    Ok(emit(&report, ctx.json)?)
}

/// Shows the agent's freeze state.
pub async fn status(ctx: &mut Ctx) -> Result<(), CtlError> {
    let call = ctx
        .client
        .freeze_status(request(FreezeStatusRequest {}, ctx.timeout));
    let r = rpc("status", ctx.timeout, call).await?;
    Ok(emit(&StatusReport::new(&r, now_unix_ms()), ctx.json)?)
}
