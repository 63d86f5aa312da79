//! Building Init requests and reading Init answers in tests.

use std::path::Path;

use guest_proto::v1::guest_init_response::Result as InitResult;
use guest_proto::v1::volume::Source;
use guest_proto::v1::{
    BlockDeviceSource, Filesystem, GuestInitRequest, GuestInitResponse, NetworkInit, Volume,
};

/// A block-device volume: `device` mounted at `mount_point` as ext4, optionally formatted
/// first and/or grown to the device size.
pub fn block_volume(
    mount_point: &str,
    device: &Path,
    need_format: bool,
    need_resize: bool,
) -> Volume {
    Volume {
        mount_point: mount_point.to_string(),
        source: Some(Source::BlockDevice(BlockDeviceSource {
            device: device.display().to_string(),
            filesystem: Filesystem::Ext4 as i32,
            need_format,
            need_resize,
        })),
        container_id: String::new(),
    }
}

/// An Init request with only volumes.
pub fn volumes(v: Vec<Volume>) -> GuestInitRequest {
    GuestInitRequest {
        volumes: v,
        network: None,
    }
}

/// An Init request with only a network configuration.
pub fn network(interface: &str, ip: Option<&str>, gateway: Option<&str>) -> GuestInitRequest {
    GuestInitRequest {
        volumes: Vec::new(),
        network: Some(NetworkInit {
            interface: interface.to_string(),
            ip: ip.map(str::to_string),
            gateway: gateway.map(str::to_string),
        }),
    }
}

/// `Ok(())` for GuestInitSuccess, `Err(reason)` for GuestInitError, `Err` also for an
/// answer with neither (a protocol violation).
pub fn init_outcome(resp: &GuestInitResponse) -> Result<(), String> {
    match &resp.result {
        Some(InitResult::Success(_)) => Ok(()),
        Some(InitResult::Error(e)) => Err(e.reason.clone()),
        None => Err("<GuestInitResponse without a result>".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use guest_proto::v1::{GuestInitError, GuestInitSuccess};

    #[test]
    fn builds_and_reads() {
        let v = block_volume("/data", Path::new("/dev/vdb"), true, false);
        match v.source {
            Some(Source::BlockDevice(b)) => {
                assert_eq!(b.device, "/dev/vdb");
                assert!(b.need_format && !b.need_resize);
                assert_eq!(b.filesystem, Filesystem::Ext4 as i32);
            }
            other => panic!("{other:?}"),
        }
        let ok = GuestInitResponse {
            result: Some(InitResult::Success(GuestInitSuccess {})),
        };
        assert_eq!(init_outcome(&ok), Ok(()));
        let err = GuestInitResponse {
            result: Some(InitResult::Error(GuestInitError {
                reason: "why".into(),
            })),
        };
        assert_eq!(init_outcome(&err), Err("why".into()));
        assert!(init_outcome(&GuestInitResponse { result: None }).is_err());
        assert_eq!(
            network("eth0", Some("10.0.0.2/24"), None)
                .network
                .unwrap()
                .ip
                .as_deref(),
            Some("10.0.0.2/24")
        );
    }
}
