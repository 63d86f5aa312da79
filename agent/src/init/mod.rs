//! The Init RPC's work: mount the volumes and configure the network the host asks for.
//!
//! [`Initializer::apply`] validates the whole request first ([`validate`]) and looks up
//! the network interface, then mounts the volumes in order ([`volumes`]) and configures
//! the network ([`network`]). It is
//! all-or-nothing: when a step fails, what this request did is undone (mounts, created
//! directories, address, links brought up) and the request is not remembered, so the
//! host may fix it and retry. The first request that succeeds is remembered: repeating
//! it succeeds without doing anything ([`InitOutcome::AlreadyApplied`]), any other
//! request is refused ([`InitError::AlreadyInitialised`]).
//!
//! Blocking work (stat, mkdir, mkfs, mount, resize2fs) runs on tokio's blocking pool.
//! Netlink runs on the runtime, in the network namespace of the thread driving it.

mod error;
pub mod network;
pub mod validate;
pub mod volumes;

use std::sync::Arc;

use guest_proto::v1::GuestInitRequest;
use tokio::sync::Mutex;
use tokio::task::{spawn_blocking, JoinError};
use tracing::info;

pub use error::InitError;
pub use volumes::Ext4Tools;

/// Settings of an [`Initializer`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InitOptions {
    /// Programs that format and grow ext4 volumes (default: `mkfs.ext4`, `resize2fs`
    /// from `PATH`).
    pub ext4_tools: Ext4Tools,
}

/// What a successful [`Initializer::apply`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitOutcome {
    /// The request was carried out now.
    Applied,
    /// The same request had already been applied; nothing was done.
    AlreadyApplied,
}

/// Applies Init requests, accepting one per lifetime of the agent.
///
/// Clones share the same state (what was accepted). Concurrent calls are serialised.
#[derive(Debug, Clone)]
pub struct Initializer {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    opts: InitOptions,
    /// The request that succeeded, once one has.
    accepted: Mutex<Option<GuestInitRequest>>,
}

impl Initializer {
    /// Creates an initializer that has accepted nothing yet.
    pub fn new(opts: InitOptions) -> Self {
        Self {
            inner: Arc::new(Inner {
                opts,
                accepted: Mutex::new(None),
            }),
        }
    }

    /// Validates and applies `req` (see the module docs for the contract).
    ///
    /// The work runs in its own task, so dropping the returned future (a client that
    /// hangs up) does not stop it half-way: it still completes or rolls back, and a
    /// success is remembered. Must be called within a tokio runtime.
    pub async fn apply(&self, req: &GuestInitRequest) -> Result<InitOutcome, InitError> {
        let inner = Arc::clone(&self.inner);
        let req = req.clone();
        tokio::spawn(async move { inner.apply(req).await })
            .await
            .map_err(internal)?
    }

    /// Whether a request has been applied successfully.
    pub async fn is_initialised(&self) -> bool {
        self.inner.accepted.lock().await.is_some()
    }
}

impl Inner {
    async fn apply(&self, req: GuestInitRequest) -> Result<InitOutcome, InitError> {
        let mut accepted = self.accepted.lock().await;
        if let Some(previous) = accepted.as_ref() {
            return if *previous == req {
                info!("init: identical request already applied");
                Ok(InitOutcome::AlreadyApplied)
            } else {
                Err(InitError::AlreadyInitialised)
            };
        }

        let to_check = req.clone();
        let plan = spawn_blocking(move || validate::validate(&to_check, &validate::probe_path))
            .await
            .map_err(internal)??;

        // Look the interface up before formatting anything: an unknown name must not
        // cost the host its disks' contents.
        let network = match &plan.network {
            Some(net) => Some(network::prepare(net).await?),
            None => None,
        };

        let volume_plans = plan.volumes.clone();
        let tools = self.opts.ext4_tools.clone();
        let mounted = spawn_blocking(move || volumes::apply_volumes(&volume_plans, &tools))
            .await
            .map_err(internal)?
            .map_err(|f| {
                InitError::Volume {
                    index: f.index,
                    mount_point: f.mount_point.display().to_string(),
                    source: Box::new(f.error),
                }
                .with_rollback(f.rollback_failures)
            })?;

        if let Some(net) = network {
            if let Err(failure) = net.apply().await {
                let mut failures = failure.rollback_failures;
                match spawn_blocking(move || mounted.rollback()).await {
                    Ok(volume_failures) => failures.extend(volume_failures),
                    Err(e) => failures.push(format!("volume rollback did not run: {e}")),
                }
                return Err(InitError::Network(failure.error).with_rollback(failures));
            }
        }

        info!(
            volumes = plan.volumes.len(),
            network = plan.network.is_some(),
            "init applied"
        );
        *accepted = Some(req);
        Ok(InitOutcome::Applied)
    }
}

fn internal(e: JoinError) -> InitError {
    InitError::Internal(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use guest_proto::v1::NetworkInit;

    fn bad_request() -> GuestInitRequest {
        GuestInitRequest {
            volumes: vec![],
            network: Some(NetworkInit {
                interface: String::new(),
                ip: None,
                gateway: None,
            }),
        }
    }

    #[tokio::test]
    async fn accepts_once_and_only_after_success() {
        let init = Initializer::new(InitOptions::default());
        let empty = GuestInitRequest::default();

        // A failed request is not remembered.
        let err = init.apply(&bad_request()).await.unwrap_err();
        assert!(matches!(err, InitError::Invalid(_)), "{err}");
        assert!(!init.is_initialised().await);

        assert_eq!(init.apply(&empty).await.unwrap(), InitOutcome::Applied);
        assert!(init.is_initialised().await);
        // Clones share the state.
        let clone = init.clone();
        assert_eq!(
            clone.apply(&empty).await.unwrap(),
            InitOutcome::AlreadyApplied
        );
        // Anything else is refused before validation (even an invalid request).
        let err = init.apply(&bad_request()).await.unwrap_err();
        assert!(matches!(err, InitError::AlreadyInitialised), "{err}");
        assert!(err.to_string().contains("already initialised"));
    }
}
