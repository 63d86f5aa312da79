//! Validation of the volumes of an Init request into [`VolumePlan`]s, before anything
//! is mounted.
//!
//! Mount points must be absolute, free of `..`, not `/` and (when they exist)
//! directories; each source must be a virtiofs tag or an existing block device holding
//! (or to be formatted as) ext4. No two volumes may share a mount point or a device.
//! The only contact with the system is the `probe` callback (see
//! [`crate::init::validate::probe_path`]).

use std::collections::HashMap;
use std::io;
use std::path::{Component, Path, PathBuf};

use guest_proto::v1::{volume::Source, Filesystem, Volume};

use crate::init::validate::PathKind;

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

/// Why a volume of the request was refused. Each message names the field and the
/// offending value so the host side can fix its request.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VolumeValidationError {
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
}

/// Checks every volume of a request, in order, and refuses duplicate mount points and
/// devices. `probe` tells what exists at a path.
pub fn validate_volumes(
    volumes: &[Volume],
    probe: &dyn Fn(&Path) -> io::Result<PathKind>,
) -> Result<Vec<VolumePlan>, VolumeValidationError> {
    let mut plans = Vec::with_capacity(volumes.len());
    let mut mount_points: HashMap<PathBuf, usize> = HashMap::new();
    let mut devices: HashMap<PathBuf, usize> = HashMap::new();
    for (index, vol) in volumes.iter().enumerate() {
        let plan = validate_volume(index, vol, probe)?;
        if let Some(&first) = mount_points.get(&plan.mount_point) {
            return Err(VolumeValidationError::DuplicateMountPoint {
                first,
                second: index,
                value: plan.mount_point.display().to_string(),
            });
        }
        mount_points.insert(plan.mount_point.clone(), index);
        if let VolumeSource::Block { device, .. } = &plan.source {
            if let Some(&first) = devices.get(device) {
                return Err(VolumeValidationError::DuplicateDevice {
                    first,
                    second: index,
                    value: device.display().to_string(),
                });
            }
            devices.insert(device.clone(), index);
        }
        plans.push(plan);
    }
    Ok(plans)
}

fn validate_volume(
    index: usize,
    vol: &Volume,
    probe: &dyn Fn(&Path) -> io::Result<PathKind>,
) -> Result<VolumePlan, VolumeValidationError> {
    let mount_point = validate_mount_point(index, &vol.mount_point)?;
    let probe_at = |path: &Path| {
        probe(path).map_err(|e| VolumeValidationError::PathUnreadable {
            index,
            value: path.display().to_string(),
            reason: e.to_string(),
        })
    };
    match probe_at(&mount_point)? {
        PathKind::Missing | PathKind::Directory => {}
        other => {
            return Err(VolumeValidationError::MountPointNotDirectory {
                index,
                value: vol.mount_point.clone(),
                kind: other.describe(),
            })
        }
    }
    let source = match &vol.source {
        None => {
            return Err(VolumeValidationError::MissingSource {
                index,
                mount_point: vol.mount_point.clone(),
            })
        }
        Some(Source::Virtiofs(fs)) => {
            if fs.tag.is_empty() {
                return Err(VolumeValidationError::VirtiofsTagEmpty { index });
            }
            if fs.tag.contains('\0') {
                return Err(VolumeValidationError::NulByte {
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
                    return Err(VolumeValidationError::UnsupportedFilesystem {
                        index,
                        value: bd.filesystem.to_string(),
                    })
                }
            }
            let value = bd.device.clone();
            if value.is_empty() {
                return Err(VolumeValidationError::DeviceEmpty { index });
            }
            if value.contains('\0') {
                return Err(VolumeValidationError::NulByte {
                    index,
                    field: "block_device.device",
                    value,
                });
            }
            let device = PathBuf::from(&value);
            if !device.is_absolute() {
                return Err(VolumeValidationError::DeviceNotAbsolute { index, value });
            }
            match probe_at(&device)? {
                PathKind::BlockDevice => {}
                PathKind::Missing => {
                    return Err(VolumeValidationError::DeviceMissing { index, value })
                }
                other => {
                    return Err(VolumeValidationError::DeviceNotBlock {
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
fn validate_mount_point(index: usize, value: &str) -> Result<PathBuf, VolumeValidationError> {
    if value.is_empty() {
        return Err(VolumeValidationError::MountPointEmpty { index });
    }
    if value.contains('\0') {
        return Err(VolumeValidationError::NulByte {
            index,
            field: "mount_point",
            value: value.to_string(),
        });
    }
    let path = Path::new(value);
    if !path.is_absolute() {
        return Err(VolumeValidationError::MountPointNotAbsolute {
            index,
            value: value.to_string(),
        });
    }
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(VolumeValidationError::MountPointDotDot {
            index,
            value: value.to_string(),
        });
    }
    let normalised: PathBuf = path.components().collect();
    if normalised == Path::new("/") {
        return Err(VolumeValidationError::MountPointRoot {
            index,
            value: value.to_string(),
        });
    }
    Ok(normalised)
}

#[cfg(test)]
mod tests {
    use guest_proto::v1::{volume::Source, Volume};

    use crate::init::validate::fixtures::{block, check, req, virtiofs};

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
}
