//! The guest agent: a `boxlite.v1.Guest` gRPC service that lets the host take point-in-time
//! consistent snapshots of a microVM.
//!
//! Modules, in the direction data flows: [`server`] (listeners, gRPC) -> [`service`] (the RPCs,
//! frozen-mode discipline) -> [`freezer`] (plan, freeze, rollback, watchdog) -> [`mounts`]
//! (mountinfo, eligibility, dependency graph) and the kernel; [`init`] mounts volumes and
//! configures the network. [`error`] is the one place errors become gRPC status codes.

#![warn(missing_docs)]

pub mod config;
pub mod error;
pub mod freezer;
pub mod init;
pub mod mounts;
pub mod observer;
pub mod server;
pub mod service;
pub mod shutdown;
pub mod telemetry;
