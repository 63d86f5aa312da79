//! Validation of a `GuestInitRequest` into an [`InitPlan`], before anything is touched.
//!
//! Every check that can be made without changing the system is made here, so a request
//! that would fail half-way for a reason knowable up front is refused whole. The only
//! contact with the system is the `probe` callback (a `stat` of device paths and mount
//! points), which tests replace with a table.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::os::unix::fs::FileTypeExt;
use std::path::{Component, Path, PathBuf};

use guest_proto::v1::{volume::Source, Filesystem, GuestInitRequest, NetworkInit, Volume};
use ipnet::IpNet;

/// Longest interface name the kernel accepts (`IFNAMSIZ - 1`).
pub const MAX_INTERFACE_NAME_LEN: usize = 15;

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
    fn describe(self) -> &'static str {
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

/// One validated volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumePlan {
    /// Absolute, normalised mount point (no `.`/`..`, no trailing slash).
    pub mount_point: PathBuf,
    /// What to mount there.
    pub source: VolumeSource,
}

/// The validated source of a volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeSource {
    /// An ext4 filesystem on a block device.
    Block {
        /// Absolute path of the block device.
        device: PathBuf,
        /// Run mkfs.ext4 before mounting.
        format: bool,
        /// Run resize2fs after mounting.
        resize: bool,
    },
    /// A virtiofs share.
    Virtiofs {
        /// The virtiofs tag (the mount source).
        tag: String,
        /// Mount read-only.
        read_only: bool,
    },
}

/// Validated network configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkPlan {
    /// Interface name (checked against the kernel's naming rules).
    pub interface: String,
    /// Address with prefix to add, if any.
    pub address: Option<IpNet>,
    /// Default gateway, if any (same family as and inside `address`).
    pub gateway: Option<IpAddr>,
}

/// Why a request was refused before anything was done. Each message names the field
/// and the offending value so the host side can fix its request.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ValidationError {
    /// `mount_point` is empty.
    #[error("volumes[{index}].mount_point is empty; give an absolute path such as /data")]
    MountPointEmpty {
        /// Index of the volume in the request.
        index: usize,
    },
    /// `mount_point` is relative.
    #[error("volumes[{index}].mount_point {value:?} is not an absolute path")]
    MountPointNotAbsolute {
        /// Index of the volume in the request.
        index: usize,
        /// The value given.
        value: String,
    },
    /// `mount_point` contains a `..` component.
    #[error("volumes[{index}].mount_point {value:?} contains a '..' component")]
    MountPointDotDot {
        /// Index of the volume in the request.
        index: usize,
        /// The value given.
        value: String,
    },
    /// `mount_point` is `/`.
    #[error("volumes[{index}].mount_point {value:?} is the root directory; mounting over / is not allowed")]
    MountPointRoot {
        /// Index of the volume in the request.
        index: usize,
        /// The value given.
        value: String,
    },
    /// `mount_point` exists and is not a directory.
    #[error("volumes[{index}].mount_point {value:?} exists and is {kind}, not a directory")]
    MountPointNotDirectory {
        /// Index of the volume in the request.
        index: usize,
        /// The value given.
        value: String,
        /// What it is instead.
        kind: &'static str,
    },
    /// Two volumes name the same mount point.
    #[error("volumes[{first}] and volumes[{second}] both use mount_point {value:?}")]
    DuplicateMountPoint {
        /// Index of the first volume using it.
        first: usize,
        /// Index of the second volume using it.
        second: usize,
        /// The (normalised) mount point.
        value: String,
    },
    /// A path field contains a NUL byte.
    #[error("volumes[{index}].{field} {value:?} contains a NUL byte")]
    NulByte {
        /// Index of the volume in the request.
        index: usize,
        /// Which field.
        field: &'static str,
        /// The value given.
        value: String,
    },
    /// The volume has neither `virtiofs` nor `block_device`.
    #[error("volumes[{index}] (mount_point {mount_point:?}) has no source; set virtiofs or block_device")]
    MissingSource {
        /// Index of the volume in the request.
        index: usize,
        /// Its mount point, to identify it.
        mount_point: String,
    },
    /// `block_device.device` is empty.
    #[error("volumes[{index}].block_device.device is empty; give a device path such as /dev/vdb")]
    DeviceEmpty {
        /// Index of the volume in the request.
        index: usize,
    },
    /// `block_device.device` is relative.
    #[error("volumes[{index}].block_device.device {value:?} is not an absolute path")]
    DeviceNotAbsolute {
        /// Index of the volume in the request.
        index: usize,
        /// The value given.
        value: String,
    },
    /// The device path does not exist.
    #[error("volumes[{index}].block_device.device {value:?} does not exist")]
    DeviceMissing {
        /// Index of the volume in the request.
        index: usize,
        /// The value given.
        value: String,
    },
    /// The device path is not a block device.
    #[error("volumes[{index}].block_device.device {value:?} is {kind}, not a block device")]
    DeviceNotBlock {
        /// Index of the volume in the request.
        index: usize,
        /// The value given.
        value: String,
        /// What it is instead.
        kind: &'static str,
    },
    /// The device path could not be examined.
    #[error("volumes[{index}]: cannot examine {value:?}: {reason}")]
    PathUnreadable {
        /// Index of the volume in the request.
        index: usize,
        /// The path that could not be examined.
        value: String,
        /// The OS error.
        reason: String,
    },
    /// Two volumes use the same block device.
    #[error("volumes[{first}] and volumes[{second}] both use block device {value:?}")]
    DuplicateDevice {
        /// Index of the first volume using it.
        first: usize,
        /// Index of the second volume using it.
        second: usize,
        /// The device path.
        value: String,
    },
    /// The filesystem enum value is not ext4/unspecified.
    #[error("volumes[{index}].block_device.filesystem: unsupported filesystem {value} (only FILESYSTEM_EXT4 or FILESYSTEM_UNSPECIFIED, meaning ext4, are supported)")]
    UnsupportedFilesystem {
        /// Index of the volume in the request.
        index: usize,
        /// The enum value (name if known, number otherwise).
        value: String,
    },
    /// `virtiofs.tag` is empty.
    #[error(
        "volumes[{index}].virtiofs.tag is empty; give the tag the VMM exports the share under"
    )]
    VirtiofsTagEmpty {
        /// Index of the volume in the request.
        index: usize,
    },
    /// `network.interface` is empty.
    #[error("network.interface is empty; give an interface name such as eth0")]
    InterfaceEmpty,
    /// `network.interface` is longer than the kernel allows.
    #[error("network.interface {value:?} is {len} bytes long; at most {max} are allowed", max = MAX_INTERFACE_NAME_LEN)]
    InterfaceTooLong {
        /// The value given.
        value: String,
        /// Its length in bytes.
        len: usize,
    },
    /// `network.interface` is not a valid interface name.
    #[error("network.interface {value:?} is not a valid interface name: {reason}")]
    InterfaceInvalid {
        /// The value given.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// `network.ip` is not a CIDR.
    #[error("network.ip {value:?} is not an address with prefix length (CIDR) such as 10.0.2.15/24 or fd00::2/64")]
    IpNotCidr {
        /// The value given.
        value: String,
    },
    /// `network.ip` is a bare address.
    #[error("network.ip {value:?} has no prefix length; write it as CIDR, e.g. {suggestion}")]
    IpMissingPrefix {
        /// The value given.
        value: String,
        /// The value with a typical prefix appended.
        suggestion: String,
    },
    /// `network.ip` is not usable as a host address.
    #[error("network.ip {value:?} cannot be an interface address: {reason}")]
    IpNotHost {
        /// The value given.
        value: String,
        /// Why not.
        reason: String,
    },
    /// `network.gateway` is not an IP address.
    #[error("network.gateway {value:?} is not an IP address")]
    GatewayInvalid {
        /// The value given.
        value: String,
    },
    /// A gateway without an address.
    #[error("network.gateway {value:?} is set but network.ip is not; a gateway needs an interface address in its subnet")]
    GatewayWithoutIp {
        /// The gateway given.
        value: String,
    },
    /// Gateway and address are of different families.
    #[error("network.gateway {gateway:?} and network.ip {ip:?} are not the same IP version")]
    GatewayFamily {
        /// The gateway given.
        gateway: String,
        /// The address given.
        ip: String,
    },
    /// Gateway outside the address's subnet.
    #[error("network.gateway {gateway:?} is outside the subnet {subnet} of network.ip")]
    GatewayOutsideSubnet {
        /// The gateway given.
        gateway: String,
        /// The subnet of the address.
        subnet: String,
    },
    /// Gateway is a special address of the subnet.
    #[error(
        "network.gateway {gateway:?} is the {which} address of subnet {subnet}; use a host address"
    )]
    GatewayNotHost {
        /// The gateway given.
        gateway: String,
        /// "network" or "broadcast".
        which: &'static str,
        /// The subnet of the address.
        subnet: String,
    },
    /// Gateway equals the interface's own address.
    #[error("network.gateway {gateway:?} is the interface's own address (network.ip)")]
    GatewayIsOwnAddress {
        /// The gateway given.
        gateway: String,
    },
}

/// Checks `req` completely and turns it into a plan. `probe` tells what exists at a
/// path (use [`probe_path`]); nothing else on the system is looked at or changed.
pub fn validate(
    req: &GuestInitRequest,
    probe: &dyn Fn(&Path) -> io::Result<PathKind>,
) -> Result<InitPlan, ValidationError> {
    let mut volumes = Vec::with_capacity(req.volumes.len());
    let mut mount_points: HashMap<PathBuf, usize> = HashMap::new();
    let mut devices: HashMap<PathBuf, usize> = HashMap::new();
    for (index, vol) in req.volumes.iter().enumerate() {
        let plan = validate_volume(index, vol, probe)?;
        if let Some(&first) = mount_points.get(&plan.mount_point) {
            return Err(ValidationError::DuplicateMountPoint {
                first,
                second: index,
                value: plan.mount_point.display().to_string(),
            });
        }
        mount_points.insert(plan.mount_point.clone(), index);
        if let VolumeSource::Block { device, .. } = &plan.source {
            if let Some(&first) = devices.get(device) {
                return Err(ValidationError::DuplicateDevice {
                    first,
                    second: index,
                    value: device.display().to_string(),
                });
            }
            devices.insert(device.clone(), index);
        }
        volumes.push(plan);
    }
    let network = req.network.as_ref().map(validate_network).transpose()?;
    Ok(InitPlan { volumes, network })
}

fn validate_volume(
    index: usize,
    vol: &Volume,
    probe: &dyn Fn(&Path) -> io::Result<PathKind>,
) -> Result<VolumePlan, ValidationError> {
    let mount_point = validate_mount_point(index, &vol.mount_point)?;
    let probe_at = |path: &Path| {
        probe(path).map_err(|e| ValidationError::PathUnreadable {
            index,
            value: path.display().to_string(),
            reason: e.to_string(),
        })
    };
    match probe_at(&mount_point)? {
        PathKind::Missing | PathKind::Directory => {}
        other => {
            return Err(ValidationError::MountPointNotDirectory {
                index,
                value: vol.mount_point.clone(),
                kind: other.describe(),
            })
        }
    }
    let source = match &vol.source {
        None => {
            return Err(ValidationError::MissingSource {
                index,
                mount_point: vol.mount_point.clone(),
            })
        }
        Some(Source::Virtiofs(fs)) => {
            if fs.tag.is_empty() {
                return Err(ValidationError::VirtiofsTagEmpty { index });
            }
            if fs.tag.contains('\0') {
                return Err(ValidationError::NulByte {
                    index,
                    field: "virtiofs.tag",
                    value: fs.tag.clone(),
                });
            }
            VolumeSource::Virtiofs {
                tag: fs.tag.clone(),
                read_only: fs.read_only,
            }
        }
        Some(Source::BlockDevice(bd)) => {
            match Filesystem::try_from(bd.filesystem) {
                Ok(Filesystem::Unspecified | Filesystem::Ext4) => {}
                Err(_) => {
                    return Err(ValidationError::UnsupportedFilesystem {
                        index,
                        value: bd.filesystem.to_string(),
                    })
                }
            }
            let value = bd.device.clone();
            if value.is_empty() {
                return Err(ValidationError::DeviceEmpty { index });
            }
            if value.contains('\0') {
                return Err(ValidationError::NulByte {
                    index,
                    field: "block_device.device",
                    value,
                });
            }
            let device = PathBuf::from(&value);
            if !device.is_absolute() {
                return Err(ValidationError::DeviceNotAbsolute { index, value });
            }
            match probe_at(&device)? {
                PathKind::BlockDevice => {}
                PathKind::Missing => return Err(ValidationError::DeviceMissing { index, value }),
                other => {
                    return Err(ValidationError::DeviceNotBlock {
                        index,
                        value,
                        kind: other.describe(),
                    })
                }
            }
            VolumeSource::Block {
                device,
                format: bd.need_format,
                resize: bd.need_resize,
            }
        }
    };
    Ok(VolumePlan {
        mount_point,
        source,
    })
}

/// Checks a mount point and returns it normalised (`.` components and trailing or
/// doubled slashes removed), so `/data/` and `/data` count as duplicates.
fn validate_mount_point(index: usize, value: &str) -> Result<PathBuf, ValidationError> {
    if value.is_empty() {
        return Err(ValidationError::MountPointEmpty { index });
    }
    if value.contains('\0') {
        return Err(ValidationError::NulByte {
            index,
            field: "mount_point",
            value: value.to_string(),
        });
    }
    let path = Path::new(value);
    if !path.is_absolute() {
        return Err(ValidationError::MountPointNotAbsolute {
            index,
            value: value.to_string(),
        });
    }
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(ValidationError::MountPointDotDot {
            index,
            value: value.to_string(),
        });
    }
    let normalised: PathBuf = path.components().collect();
    if normalised == Path::new("/") {
        return Err(ValidationError::MountPointRoot {
            index,
            value: value.to_string(),
        });
    }
    Ok(normalised)
}

fn validate_network(net: &NetworkInit) -> Result<NetworkPlan, ValidationError> {
    validate_interface_name(&net.interface)?;
    let address = net.ip.as_deref().map(parse_cidr).transpose()?;
    let gateway = match (&net.gateway, address) {
        (None, _) => None,
        (Some(gw), None) => return Err(ValidationError::GatewayWithoutIp { value: gw.clone() }),
        (Some(gw), Some(addr)) => {
            Some(validate_gateway(gw, net.ip.as_deref().unwrap_or(""), addr)?)
        }
    };
    Ok(NetworkPlan {
        interface: net.interface.clone(),
        address,
        gateway,
    })
}

/// Mirrors the kernel's `dev_valid_name`: 1..=15 bytes, not `.`/`..`, no `/`, `:`,
/// whitespace or NUL.
fn validate_interface_name(name: &str) -> Result<(), ValidationError> {
    if name.is_empty() {
        return Err(ValidationError::InterfaceEmpty);
    }
    if name.len() > MAX_INTERFACE_NAME_LEN {
        return Err(ValidationError::InterfaceTooLong {
            value: name.to_string(),
            len: name.len(),
        });
    }
    let invalid = |reason| ValidationError::InterfaceInvalid {
        value: name.to_string(),
        reason,
    };
    if name == "." || name == ".." {
        return Err(invalid("'.' and '..' are reserved"));
    }
    if name.contains('/') {
        return Err(invalid("it contains '/'"));
    }
    if name.contains(':') {
        return Err(invalid("it contains ':'"));
    }
    if name.chars().any(|c| c.is_whitespace() || c == '\0') {
        return Err(invalid("it contains whitespace or NUL"));
    }
    Ok(())
}

fn parse_cidr(value: &str) -> Result<IpNet, ValidationError> {
    let net: IpNet = match value.parse() {
        Ok(net) => net,
        Err(_) => {
            return Err(match value.parse::<IpAddr>() {
                Ok(IpAddr::V4(_)) => ValidationError::IpMissingPrefix {
                    value: value.to_string(),
                    suggestion: format!("{value}/24"),
                },
                Ok(IpAddr::V6(_)) => ValidationError::IpMissingPrefix {
                    value: value.to_string(),
                    suggestion: format!("{value}/64"),
                },
                Err(_) => ValidationError::IpNotCidr {
                    value: value.to_string(),
                },
            })
        }
    };
    let not_host = |reason: String| ValidationError::IpNotHost {
        value: value.to_string(),
        reason,
    };
    let addr = net.addr();
    if addr.is_unspecified() {
        return Err(not_host("it is the unspecified address".into()));
    }
    if addr.is_multicast() {
        return Err(not_host("it is a multicast address".into()));
    }
    if has_special_addresses(&net) {
        if addr == net.network() {
            return Err(not_host(format!(
                "it is the network address of {}",
                net.trunc()
            )));
        }
        if net.addr().is_ipv4() && addr == net.broadcast() {
            return Err(not_host(format!(
                "it is the broadcast address of {}",
                net.trunc()
            )));
        }
    }
    Ok(net)
}

/// Whether the subnet reserves its first (and, for IPv4, last) address: not for /31,
/// /32 (RFC 3021 point-to-point) and their IPv6 counterparts /127, /128.
fn has_special_addresses(net: &IpNet) -> bool {
    net.prefix_len() + 1 < net.max_prefix_len()
}

fn validate_gateway(value: &str, ip_value: &str, net: IpNet) -> Result<IpAddr, ValidationError> {
    let gw: IpAddr = value.parse().map_err(|_| ValidationError::GatewayInvalid {
        value: value.to_string(),
    })?;
    if gw.is_ipv4() != net.addr().is_ipv4() {
        return Err(ValidationError::GatewayFamily {
            gateway: value.to_string(),
            ip: ip_value.to_string(),
        });
    }
    let subnet = net.trunc();
    if !subnet.contains(&gw) {
        return Err(ValidationError::GatewayOutsideSubnet {
            gateway: value.to_string(),
            subnet: subnet.to_string(),
        });
    }
    if gw == net.addr() {
        return Err(ValidationError::GatewayIsOwnAddress {
            gateway: value.to_string(),
        });
    }
    if has_special_addresses(&net) {
        let which = if gw == net.network() {
            Some("network")
        } else if gw.is_ipv4() && gw == net.broadcast() {
            Some("broadcast")
        } else {
            None
        };
        if let Some(which) = which {
            return Err(ValidationError::GatewayNotHost {
                gateway: value.to_string(),
                which,
                subnet: subnet.to_string(),
            });
        }
    }
    Ok(gw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use guest_proto::v1::{BlockDeviceSource, VirtiofsSource};

    /// A fake filesystem: /dev/vd* are block devices, /dev/null a char device,
    /// /etc/passwd a regular file, /srv and /mnt directories, /secret unreadable.
    fn fake_probe(path: &Path) -> io::Result<PathKind> {
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

    fn block(mount_point: &str, device: &str) -> Volume {
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

    fn virtiofs(mount_point: &str, tag: &str) -> Volume {
        Volume {
            mount_point: mount_point.into(),
            source: Some(Source::Virtiofs(VirtiofsSource {
                tag: tag.into(),
                read_only: false,
            })),
            container_id: String::new(),
        }
    }

    fn net(interface: &str, ip: Option<&str>, gateway: Option<&str>) -> NetworkInit {
        NetworkInit {
            interface: interface.into(),
            ip: ip.map(Into::into),
            gateway: gateway.map(Into::into),
        }
    }

    fn req(volumes: Vec<Volume>, network: Option<NetworkInit>) -> GuestInitRequest {
        GuestInitRequest { volumes, network }
    }

    fn check(r: &GuestInitRequest) -> Result<InitPlan, ValidationError> {
        validate(r, &fake_probe)
    }

    #[test]
    fn rejects_bad_volumes_naming_the_value() {
        let with_fs = |fs: i32| {
            let mut v = block("/data", "/dev/vdb");
            if let Some(Source::BlockDevice(bd)) = &mut v.source {
                bd.filesystem = fs;
            }
            v
        };
        let no_source = Volume {
            mount_point: "/nosrc".into(),
            source: None,
            container_id: String::new(),
        };
        // (name, volumes, text the message must contain, expected variant check)
        let cases: Vec<(&str, Vec<Volume>, &str)> = vec![
            (
                "empty mount point",
                vec![block("", "/dev/vdb")],
                "volumes[0].mount_point",
            ),
            (
                "relative mount point",
                vec![block("data", "/dev/vdb")],
                "\"data\"",
            ),
            (
                "dotdot",
                vec![block("/data/../etc", "/dev/vdb")],
                "\"/data/../etc\"",
            ),
            ("root", vec![block("/", "/dev/vdb")], "\"/\""),
            ("root via dot", vec![block("/./", "/dev/vdb")], "\"/./\""),
            (
                "nul in mount point",
                vec![block("/da\0ta", "/dev/vdb")],
                "NUL",
            ),
            (
                "mount point is a file",
                vec![block("/etc/passwd", "/dev/vdb")],
                "\"/etc/passwd\"",
            ),
            (
                "mount point unreadable",
                vec![block("/secret", "/dev/vdb")],
                "\"/secret\"",
            ),
            (
                "duplicate mount point",
                vec![block("/data", "/dev/vdb"), virtiofs("/data/", "share")],
                "\"/data\"",
            ),
            (
                "duplicate device",
                vec![block("/a", "/dev/vdb"), block("/b", "/dev/vdb")],
                "\"/dev/vdb\"",
            ),
            ("no source", vec![no_source], "\"/nosrc\""),
            (
                "empty device",
                vec![block("/data", "")],
                "block_device.device",
            ),
            ("relative device", vec![block("/data", "vdb")], "\"vdb\""),
            (
                "missing device",
                vec![block("/data", "/dev/vdz")],
                "\"/dev/vdz\"",
            ),
            (
                "char device",
                vec![block("/data", "/dev/null")],
                "\"/dev/null\"",
            ),
            (
                "regular file",
                vec![block("/data", "/etc/passwd")],
                "\"/etc/passwd\"",
            ),
            ("directory device", vec![block("/data", "/srv")], "\"/srv\""),
            (
                "socket device",
                vec![block("/data", "/run/sock")],
                "\"/run/sock\"",
            ),
            (
                "unsupported fs",
                vec![with_fs(7)],
                "unsupported filesystem 7",
            ),
            (
                "negative fs",
                vec![with_fs(-1)],
                "unsupported filesystem -1",
            ),
            (
                "empty tag",
                vec![virtiofs("/share", "")],
                "volumes[0].virtiofs.tag",
            ),
            ("nul tag", vec![virtiofs("/share", "a\0b")], "NUL"),
            (
                "second volume bad",
                vec![block("/ok", "/dev/vdb"), block("rel", "/dev/vdc")],
                "volumes[1]",
            ),
        ];
        for (name, volumes, needle) in cases {
            let err = check(&req(volumes, None)).expect_err(name);
            let msg = err.to_string();
            assert!(msg.contains(needle), "{name}: {msg:?} lacks {needle:?}");
        }
    }

    #[test]
    fn device_kinds_produce_specific_reasons() {
        let msg = |dev| {
            check(&req(vec![block("/d", dev)], None))
                .unwrap_err()
                .to_string()
        };
        assert!(msg("/dev/null").contains("is a character device, not a block device"));
        assert!(msg("/etc/passwd").contains("is a regular file, not a block device"));
        assert!(msg("/dev/vdz").contains("does not exist"));
        assert!(msg("/secret").contains("cannot examine"));
    }

    #[test]
    fn rejects_bad_network_naming_the_value() {
        let long = "abcdefghijklmnop"; // 16 bytes
        let cases: Vec<(&str, NetworkInit, &str)> = vec![
            ("empty iface", net("", None, None), "network.interface"),
            ("long iface", net(long, None, None), long),
            ("slash", net("eth/0", None, None), "\"eth/0\""),
            ("colon", net("eth0:1", None, None), "\"eth0:1\""),
            ("space", net("eth 0", None, None), "\"eth 0\""),
            ("tab", net("eth\t0", None, None), "eth\\t0"),
            ("dot", net(".", None, None), "\".\""),
            ("dotdot", net("..", None, None), "\"..\""),
            (
                "garbage ip",
                net("eth0", Some("ten.0.0.1/24"), None),
                "\"ten.0.0.1/24\"",
            ),
            (
                "bad prefix",
                net("eth0", Some("10.0.0.2/33"), None),
                "\"10.0.0.2/33\"",
            ),
            ("empty ip", net("eth0", Some(""), None), "network.ip \"\""),
            (
                "bare v4",
                net("eth0", Some("10.0.2.15"), None),
                "10.0.2.15/24",
            ),
            ("bare v6", net("eth0", Some("fd00::2"), None), "fd00::2/64"),
            (
                "unspecified",
                net("eth0", Some("0.0.0.0/8"), None),
                "\"0.0.0.0/8\"",
            ),
            (
                "multicast",
                net("eth0", Some("224.0.0.1/24"), None),
                "\"224.0.0.1/24\"",
            ),
            (
                "network addr",
                net("eth0", Some("10.0.2.0/24"), None),
                "\"10.0.2.0/24\"",
            ),
            (
                "broadcast addr",
                net("eth0", Some("10.0.2.255/24"), None),
                "\"10.0.2.255/24\"",
            ),
            (
                "gw no ip",
                net("eth0", None, Some("10.0.2.2")),
                "\"10.0.2.2\"",
            ),
            (
                "gw garbage",
                net("eth0", Some("10.0.2.15/24"), Some("gw")),
                "\"gw\"",
            ),
            (
                "gw with prefix",
                net("eth0", Some("10.0.2.15/24"), Some("10.0.2.2/24")),
                "\"10.0.2.2/24\"",
            ),
            (
                "gw outside",
                net("eth0", Some("10.0.2.15/24"), Some("10.0.3.1")),
                "\"10.0.3.1\"",
            ),
            (
                "gw outside v6",
                net("eth0", Some("fd00::2/64"), Some("fd01::1")),
                "\"fd01::1\"",
            ),
            (
                "gw family",
                net("eth0", Some("10.0.2.15/24"), Some("fd00::1")),
                "\"fd00::1\"",
            ),
            (
                "gw network",
                net("eth0", Some("10.0.2.15/24"), Some("10.0.2.0")),
                "\"10.0.2.0\"",
            ),
            (
                "gw broadcast",
                net("eth0", Some("10.0.2.15/24"), Some("10.0.2.255")),
                "\"10.0.2.255\"",
            ),
            (
                "gw v6 network",
                net("eth0", Some("fd00::2/64"), Some("fd00::")),
                "\"fd00::\"",
            ),
            (
                "gw own addr",
                net("eth0", Some("10.0.2.15/24"), Some("10.0.2.15")),
                "\"10.0.2.15\"",
            ),
            (
                "gw /32",
                net("eth0", Some("10.0.2.15/32"), Some("10.0.2.1")),
                "\"10.0.2.1\"",
            ),
        ];
        for (name, n, needle) in cases {
            let err = check(&req(vec![], Some(n))).expect_err(name);
            let msg = err.to_string();
            assert!(msg.contains(needle), "{name}: {msg:?} lacks {needle:?}");
        }
    }

    #[test]
    fn specific_network_variants() {
        let err = |n| check(&req(vec![], Some(n))).unwrap_err();
        assert!(matches!(
            err(net("eth0", Some("10.0.2.15"), None)),
            ValidationError::IpMissingPrefix { .. }
        ));
        assert!(matches!(
            err(net("eth0", Some("10.0.2.15/24"), Some("10.0.3.1"))),
            ValidationError::GatewayOutsideSubnet { ref subnet, .. } if subnet == "10.0.2.0/24"
        ));
        assert!(matches!(
            err(net("eth0", Some("10.0.2.15/24"), Some("10.0.2.255"))),
            ValidationError::GatewayNotHost {
                which: "broadcast",
                ..
            }
        ));
        assert!(matches!(
            err(net("abcdefghijklmnop", None, None)),
            ValidationError::InterfaceTooLong { len: 16, .. }
        ));
    }

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
