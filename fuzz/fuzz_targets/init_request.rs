//! Init request validation must never panic on any decodable request, and must accept only
//! requests whose paths are absolute and free of `..`.
#![no_main]

use std::io;
use std::path::{Component, Path};

use guest_agent::init::validate::{validate, PathKind};
use guest_proto::v1::GuestInitRequest;
use libfuzzer_sys::fuzz_target;
use prost::Message;

/// A deterministic fake file system: what a path is depends only on its bytes.
fn probe(path: &Path) -> io::Result<PathKind> {
    let h = path.as_os_str().len() % 6;
    Ok(match h {
        0 => PathKind::Missing,
        1 => PathKind::Directory,
        2 => PathKind::BlockDevice,
        3 => PathKind::CharDevice,
        4 => PathKind::RegularFile,
        _ => PathKind::Other,
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(req) = GuestInitRequest::decode(data) else { return };
    if let Ok(plan) = validate(&req, &probe) {
        for v in &plan.volumes {
            assert!(v.mount_point.is_absolute());
            assert!(!v.mount_point.components().any(|c| c == Component::ParentDir));
        }
    }
});
