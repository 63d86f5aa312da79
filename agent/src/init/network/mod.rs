//! Configuring the guest's network interface over rtnetlink, and undoing it.
//!
//! [`prepare`] looks up `lo` and the interface (an unknown name fails before anything
//! changes); [`PreparedNetwork::apply`] then brings `lo` up, brings the interface up,
//! adds the address and sets the default route. Each change is recorded; when a later
//! step fails, the recorded changes are undone newest first (address removed, links
//! set down again if this call brought them up).
//!
//! Default route policy: the route is added with `NLM_F_REPLACE`, so an existing
//! default route of the same family in the main table (same metric) is replaced by the
//! one the host asked for. The host's request is authoritative for the guest's
//! network; refusing because some earlier default exists would make Init fail on
//! images that ship one. It is the last step, so it never needs undoing.
//!
//! An address that is already present (EEXIST) is accepted and left alone by rollback,
//! since this call did not add it.
//!
//! The netlink socket is opened per call, in the network namespace of the calling
//! thread, and its connection task runs on the current tokio runtime.
//!
//! The request's network part is checked first, without touching anything, by
//! [`validate`].

pub mod validate;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures::TryStreamExt;
use ipnet::IpNet;
use nix::errno::Errno;
use rtnetlink::packet_route::link::LinkFlags;
use rtnetlink::{AddressMessageBuilder, Handle, LinkUnspec, RouteMessageBuilder};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use self::validate::NetworkPlan;

/// Why the network could not be configured.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// The rtnetlink socket could not be opened.
    #[error("cannot open a netlink socket: {0}")]
    Connect(std::io::Error),
    /// No interface with that name exists in the guest.
    #[error("no network interface named {name:?} in the guest")]
    NoSuchInterface {
        /// The name asked for.
        name: String,
    },
    /// A netlink request was refused.
    #[error("{operation} failed: {reason}")]
    Netlink {
        /// What was being done, e.g. "adding address 10.0.2.15/24 to eth0".
        operation: String,
        /// The kernel's answer (errno) or the library error.
        reason: String,
    },
}

/// The network step failed; what it changed before has been undone as far as possible.
#[derive(Debug)]
pub struct NetworkFailure {
    /// What failed.
    pub error: NetworkError,
    /// Undo steps that failed (empty when everything was undone).
    pub rollback_failures: Vec<String>,
}

/// A change made by [`PreparedNetwork::apply`], kept so it can be undone.
#[derive(Debug)]
enum Change {
    LinkUp {
        index: u32,
        name: String,
    },
    Address {
        index: u32,
        name: String,
        net: IpNet,
    },
}

/// A link as found by name.
#[derive(Debug, Clone, Copy)]
struct Link {
    index: u32,
    up: bool,
}

/// Aborts the netlink connection task when the call ends, however it ends.
struct ConnectionTask(JoinHandle<()>);

impl Drop for ConnectionTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// An open rtnetlink connection with the links of a plan looked up: everything that
/// can fail without changing anything has been done.
pub struct PreparedNetwork {
    handle: Handle,
    _task: ConnectionTask,
    plan: NetworkPlan,
    lo: Link,
    link: Link,
}

impl std::fmt::Debug for PreparedNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedNetwork")
            .field("plan", &self.plan)
            .field("lo", &self.lo)
            .field("link", &self.link)
            .finish_non_exhaustive()
    }
}

/// Opens a netlink connection in the network namespace of the calling thread and looks
/// up `lo` and the plan's interface. Changes nothing, so the caller can do it before
/// any irreversible step (an unknown interface then fails Init before disks are
/// formatted).
pub async fn prepare(plan: &NetworkPlan) -> Result<PreparedNetwork, NetworkError> {
    let (connection, handle, _) = rtnetlink::new_connection().map_err(NetworkError::Connect)?;
    let task = ConnectionTask(tokio::spawn(connection));
    let lo = find_link(&handle, "lo").await?;
    let link = find_link(&handle, &plan.interface).await?;
    Ok(PreparedNetwork {
        handle,
        _task: task,
        plan: plan.clone(),
        lo,
        link,
    })
}

impl PreparedNetwork {
    /// Applies the plan; on failure undoes what it changed before returning.
    pub async fn apply(self) -> Result<(), NetworkFailure> {
        let mut changes = Vec::new();
        match apply(&self.handle, &self.plan, self.lo, self.link, &mut changes).await {
            Ok(()) => Ok(()),
            Err(error) => {
                warn!(interface = %self.plan.interface, %error, "network configuration failed; rolling back");
                let rollback_failures = undo(&self.handle, changes).await;
                Err(NetworkFailure {
                    error,
                    rollback_failures,
                })
            }
        }
    }
}

async fn apply(
    handle: &Handle,
    plan: &NetworkPlan,
    lo: Link,
    link: Link,
    changes: &mut Vec<Change>,
) -> Result<(), NetworkError> {
    let name = plan.interface.as_str();
    if !lo.up && lo.index != link.index {
        set_up(handle, lo.index, "lo").await?;
        changes.push(Change::LinkUp {
            index: lo.index,
            name: "lo".into(),
        });
    }
    if !link.up {
        set_up(handle, link.index, name).await?;
        changes.push(Change::LinkUp {
            index: link.index,
            name: name.into(),
        });
    }
    if let Some(net) = plan.address {
        match handle
            .address()
            .add(link.index, net.addr(), net.prefix_len())
            .execute()
            .await
        {
            Ok(()) => {
                info!(interface = name, address = %net, "address added");
                changes.push(Change::Address {
                    index: link.index,
                    name: name.into(),
                    net,
                });
            }
            Err(e) if errno_of(&e) == Some(Errno::EEXIST) => {
                info!(interface = name, address = %net, "address already present");
            }
            Err(e) => return Err(netlink_error(format!("adding address {net} to {name}"), &e)),
        }
    }
    if let Some(gateway) = plan.gateway {
        let route = match gateway {
            IpAddr::V4(gw) => RouteMessageBuilder::<Ipv4Addr>::new()
                .gateway(gw)
                .output_interface(link.index)
                .build(),
            IpAddr::V6(gw) => RouteMessageBuilder::<Ipv6Addr>::new()
                .gateway(gw)
                .output_interface(link.index)
                .build(),
        };
        handle
            .route()
            .add(route)
            .replace()
            .execute()
            .await
            .map_err(|e| {
                netlink_error(
                    format!("setting default route via {gateway} dev {name}"),
                    &e,
                )
            })?;
        info!(interface = name, %gateway, "default route set");
    }
    Ok(())
}

/// Undoes `changes` newest first; returns a description of each undo that failed.
async fn undo(handle: &Handle, changes: Vec<Change>) -> Vec<String> {
    let mut failures = Vec::new();
    for change in changes.into_iter().rev() {
        let result =
            match &change {
                Change::Address { index, name, net } => {
                    let msg = match net.addr() {
                        IpAddr::V4(a) => AddressMessageBuilder::<Ipv4Addr>::new()
                            .index(*index)
                            .address(a, net.prefix_len())
                            .build(),
                        IpAddr::V6(a) => AddressMessageBuilder::<Ipv6Addr>::new()
                            .index(*index)
                            .address(a, net.prefix_len())
                            .build(),
                    };
                    handle.address().del(msg).execute().await.map_err(|e| {
                        format!("address {net} on {name} not removed: {}", describe(&e))
                    })
                }
                Change::LinkUp { index, name } => handle
                    .link()
                    .set(LinkUnspec::new_with_index(*index).down().build())
                    .execute()
                    .await
                    .map_err(|e| format!("link {name} not set down again: {}", describe(&e))),
            };
        match result {
            Ok(()) => info!(?change, "rolled back"),
            Err(e) => failures.push(e),
        }
    }
    failures
}

async fn find_link(handle: &Handle, name: &str) -> Result<Link, NetworkError> {
    let no_such = || NetworkError::NoSuchInterface { name: name.into() };
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(Some(msg)) => Ok(Link {
            index: msg.header.index,
            up: msg.header.flags.contains(LinkFlags::Up),
        }),
        Ok(None) => Err(no_such()),
        Err(e) if errno_of(&e) == Some(Errno::ENODEV) => Err(no_such()),
        Err(e) => Err(netlink_error(format!("looking up interface {name}"), &e)),
    }
}

async fn set_up(handle: &Handle, index: u32, name: &str) -> Result<(), NetworkError> {
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(|e| netlink_error(format!("bringing {name} up"), &e))?;
    info!(interface = name, "link up");
    Ok(())
}

/// The errno of a netlink error reply, if it is one.
fn errno_of(e: &rtnetlink::Error) -> Option<Errno> {
    match e {
        rtnetlink::Error::NetlinkError(msg) => msg.code.map(|c| Errno::from_raw(-c.get())),
        _ => None,
    }
}

/// The errno as `EEXIST: File exists`, or the library's text for other errors.
fn describe(e: &rtnetlink::Error) -> String {
    match errno_of(e) {
        Some(errno) => errno.to_string(),
        None => e.to_string(),
    }
}

fn netlink_error(operation: String, e: &rtnetlink::Error) -> NetworkError {
    NetworkError::Netlink {
        operation,
        reason: describe(e),
    }
}
