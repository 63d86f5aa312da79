//! Validation of a `GuestInitRequest` into an [`InitPlan`], before anything is touched.
//!
//! Every check that can be made without changing the system is made here, so a request
//! that would fail half-way for a reason knowable up front is refused whole. The only
//! contact with the system is the `probe` callback (a `stat` of device paths and mount
//! points), which tests replace with a table.
//!
//! This module holds what is common to both parts: the plan, the error, and how paths
//! are probed. The checks themselves live beside the code that applies them: volumes
//! in [`super::volumes::validate`], the network in [`super::network::validate`].

use std::io;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use guest_proto::v1::GuestInitRequest;

use super::network::validate::validate_network;
pub use super::network::validate::{NetworkPlan, NetworkValidationError, MAX_INTERFACE_NAME_LEN};
use super::volumes::validate::validate_volumes;
pub use super::volumes::validate::{VolumePlan, VolumeSource, VolumeValidationError};

/// What a path refers to, as far as validation cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathKind {
    /// Nothing exists at the path.
    Missing,
    /// A directory.
    Directory,
    /// A block device node.
    BlockDevice,
    /// A character device node.
    CharDevice,
    /// A regular file.
    RegularFile,
    /// Anything else (socket, fifo).
    Other,
}

impl PathKind {
    /// Human-readable description used in error messages.
    pub(crate) fn describe(self) -> &'static str {
        match self {
            PathKind::Missing => "missing",
            PathKind::Directory => "a directory",
            PathKind::BlockDevice => "a block device",
            PathKind::CharDevice => "a character device",
            PathKind::RegularFile => "a regular file",
            PathKind::Other => "a socket or fifo",
        }
    }
}

/// Looks at `path` on the real filesystem (following symlinks, so `/dev/disk/by-id/...`
/// works). This is the probe the agent uses; tests pass their own.
pub fn probe_path(path: &Path) -> io::Result<PathKind> {
    match std::fs::metadata(path) {
        Ok(meta) => {
            let ft = meta.file_type();
            Ok(if ft.is_dir() {
                PathKind::Directory
            } else if ft.is_block_device() {
                PathKind::BlockDevice
            } else if ft.is_char_device() {
                PathKind::CharDevice
            } else if ft.is_file() {
                PathKind::RegularFile
            } else {
                PathKind::Other
            })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(PathKind::Missing),
        Err(e) => Err(e),
    }
}

/// A validated request: what Init will do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitPlan {
    /// Volumes to mount, in request order.
    pub volumes: Vec<VolumePlan>,
    /// Network configuration, if the request has one.
    pub network: Option<NetworkPlan>,
}

/// Why a request was refused before anything was done. Each message names the field
/// and the offending value so the host side can fix its request.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ValidationError {
    /// A volume is invalid.
    #[error(transparent)]
    Volume(#[from] VolumeValidationError),
    /// The network configuration is invalid.
    #[error(transparent)]
    Network(#[from] NetworkValidationError),
}

/// Checks `req` completely and turns it into a plan. `probe` tells what exists at a
/// path (use [`probe_path`]); nothing else on the system is looked at or changed.
pub fn validate(
    req: &GuestInitRequest,
    probe: &dyn Fn(&Path) -> io::Result<PathKind>,
) -> Result<InitPlan, ValidationError> {
    let volumes = validate_volumes(&req.volumes, probe)?;
    let network = req.network.as_ref().map(validate_network).transpose()?;
    Ok(InitPlan { volumes, network })
}

/// Requests and a fake filesystem shared by the validation tests of this module and of
/// [`super::volumes::validate`] and [`super::network::validate`].
#[cfg(test)]
pub(crate) mod fixtures {
    use std::io;
    use std::path::Path;

    use guest_proto::v1::{
        volume::Source, BlockDeviceSource, Filesystem, GuestInitRequest, NetworkInit,
        VirtiofsSource, Volume,
    };

    use super::{validate, InitPlan, PathKind, ValidationError};

    /// A fake filesystem: /dev/vd* are block devices, /dev/null a char device,
    /// /etc/passwd a regular file, /srv and /mnt directories, /secret unreadable.
    pub(crate) fn fake_probe(path: &Path) -> io::Result<PathKind> {
        let p = path.to_str().unwrap();
        Ok(match p {
            "/dev/vdb" | "/dev/vdc" | "/dev/disk/by-id/virtio-data" => PathKind::BlockDevice,
            "/dev/null" => PathKind::CharDevice,
            "/etc/passwd" => PathKind::RegularFile,
            "/run/sock" => PathKind::Other,
            "/srv" | "/mnt" => PathKind::Directory,
            "/secret" => return Err(io::Error::from_raw_os_error(libc::EACCES)),
            _ => PathKind::Missing,
        })
    }

    pub(crate) fn block(mount_point: &str, device: &str) -> Volume {
        Volume {
            mount_point: mount_point.into(),
            source: Some(Source::BlockDevice(BlockDeviceSource {
                device: device.into(),
                filesystem: Filesystem::Ext4 as i32,
                need_format: false,
                need_resize: false,
            })),
            container_id: String::new(),
        }
    }

    pub(crate) fn virtiofs(mount_point: &str, tag: &str) -> Volume {
        Volume {
            mount_point: mount_point.into(),
            source: Some(Source::Virtiofs(VirtiofsSource {
                tag: tag.into(),
                read_only: false,
            })),
            container_id: String::new(),
        }
    }

    pub(crate) fn net(interface: &str, ip: Option<&str>, gateway: Option<&str>) -> NetworkInit {
        NetworkInit {
            interface: interface.into(),
            ip: ip.map(Into::into),
            gateway: gateway.map(Into::into),
        }
    }

    pub(crate) fn req(volumes: Vec<Volume>, network: Option<NetworkInit>) -> GuestInitRequest {
        GuestInitRequest { volumes, network }
    }

    pub(crate) fn check(r: &GuestInitRequest) -> Result<InitPlan, ValidationError> {
        validate(r, &fake_probe)
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use guest_proto::v1::{volume::Source, Filesystem};

    use super::fixtures::{block, check, net, req, virtiofs};
    use super::*;

    #[test]
    fn accepts_good_requests() {
        let mut fmt = block("/data/", "/dev/vdb");
        if let Some(Source::BlockDevice(bd)) = &mut fmt.source {
            bd.filesystem = Filesystem::Unspecified as i32;
            bd.need_format = true;
            bd.need_resize = true;
        }
        let r = req(
            vec![
                fmt,
                virtiofs("/srv", "share"),
                block("/mnt/./x", "/dev/disk/by-id/virtio-data"),
            ],
            Some(net(
                "abcdefghijklmno",
                Some("10.0.2.15/24"),
                Some("10.0.2.2"),
            )),
        );
        let plan = check(&r).unwrap();
        assert_eq!(
            plan.volumes[0],
            VolumePlan {
                mount_point: "/data".into(),
                source: VolumeSource::Block {
                    device: "/dev/vdb".into(),
                    format: true,
                    resize: true
                },
            }
        );
        assert_eq!(
            plan.volumes[1].source,
            VolumeSource::Virtiofs {
                tag: "share".into(),
                read_only: false
            }
        );
        assert_eq!(plan.volumes[2].mount_point, PathBuf::from("/mnt/x"));
        let n = plan.network.unwrap();
        assert_eq!(n.address, Some("10.0.2.15/24".parse().unwrap()));
        assert_eq!(n.gateway, Some("10.0.2.2".parse().unwrap()));

        for (ip, gw) in [
            ("fd00::2/64", Some("fd00::1")),
            ("10.0.0.0/31", Some("10.0.0.1")),
            ("192.168.1.7/32", None),
            ("fd00::1/128", None),
        ] {
            check(&req(vec![], Some(net("eth0", Some(ip), gw))))
                .unwrap_or_else(|e| panic!("{ip} {gw:?}: {e}"));
        }
        // Link only: no address, no gateway.
        let plan = check(&req(vec![], Some(net("eth0", None, None)))).unwrap();
        assert_eq!(plan.network.unwrap().address, None);
        // No network at all.
        assert_eq!(check(&req(vec![], None)).unwrap().network, None);
    }

    #[test]
    fn real_probe_classifies_paths() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        assert_eq!(probe_path(dir.path()).unwrap(), PathKind::Directory);
        assert_eq!(probe_path(&file).unwrap(), PathKind::RegularFile);
        assert_eq!(
            probe_path(&dir.path().join("nope")).unwrap(),
            PathKind::Missing
        );
        assert_eq!(
            probe_path(Path::new("/dev/null")).unwrap(),
            PathKind::CharDevice
        );
    }
}
