//! Wire types for the guest agent: package `boxlite.v1`, service `Guest`.
//!
//! Field tags of upstream's messages are fixed (see `boxlite/v1/guest.proto`); our
//! extensions use tags from 10 up or new RPCs, so a client built from upstream's schema
//! talks to this agent unchanged.

#![allow(clippy::all, missing_docs)]

/// Generated messages, client and server for `boxlite.v1`.
pub mod v1 {
    tonic::include_proto!("boxlite.v1");
}

/// Encoded `FileDescriptorSet` of the proto, for tonic-reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("guest_descriptor");

/// The fully qualified gRPC service name.
pub const SERVICE_NAME: &str = "boxlite.v1.Guest";
