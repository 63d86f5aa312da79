//! The volumes of an init spec: parsing (`--volume`, `--virtiofs` or the JSON `volumes`
//! list) and the checks that hold on any guest.

use guest_proto::v1::{volume, BlockDeviceSource, Filesystem, VirtiofsSource, Volume};
use serde::Deserialize;

use super::InitSpecError;

/// One volume: a mount point and exactly one source.
#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct VolumeSpec {
    /// Absolute path in the guest.
    pub mount_point: String,
    /// Owning container, passed through (upstream field).
    #[serde(default)]
    pub container_id: String,
    /// A block device source.
    #[serde(default)]
    pub block_device: Option<BlockSpec>,
    /// A virtiofs source.
    #[serde(default)]
    pub virtiofs: Option<VirtiofsSpec>,
}

/// A block device source.
#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BlockSpec {
    /// Absolute device path, e.g. /dev/vdb.
    pub device: String,
    /// Filesystem; only ext4 is supported.
    #[serde(default)]
    pub filesystem: FsKind,
    /// Run mkfs first.
    #[serde(default)]
    pub need_format: bool,
    /// Grow the filesystem after mounting.
    #[serde(default)]
    pub need_resize: bool,
}

/// Filesystems the agent can create and mount on block devices.
#[derive(Debug, Deserialize, PartialEq, Default, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub enum FsKind {
    /// ext4 (the default).
    #[default]
    Ext4,
}

/// A virtiofs share.
#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct VirtiofsSpec {
    /// The virtiofs tag exported by the VMM.
    pub tag: String,
    /// Mount read-only.
    #[serde(default)]
    pub read_only: bool,
}

/// `MOUNT=DEVICE[,format][,resize]`
pub(super) fn parse_volume_flag(value: &str) -> Result<VolumeSpec, InitSpecError> {
    let bad = |reason: &str| InitSpecError::BadFlag {
        flag: "--volume",
        value: value.to_string(),
        reason: reason.to_string(),
    };
    let (mount, rest) = value
        .split_once('=')
        .ok_or_else(|| bad("expected MOUNT=DEVICE[,format][,resize]"))?;
    let mut parts = rest.split(',');
    let device = parts.next().unwrap_or_default();
    let (mut need_format, mut need_resize) = (false, false);
    for opt in parts {
        match opt {
            "format" => need_format = true,
            "resize" => need_resize = true,
            other => {
                return Err(bad(&format!(
                    "unknown option {other:?} (expected format or resize)"
                )))
            }
        }
    }
    Ok(VolumeSpec {
        mount_point: mount.to_string(),
        container_id: String::new(),
        block_device: Some(BlockSpec {
            device: device.to_string(),
            filesystem: FsKind::Ext4,
            need_format,
            need_resize,
        }),
        virtiofs: None,
    })
}

/// `MOUNT=TAG[,ro]`
pub(super) fn parse_virtiofs_flag(value: &str) -> Result<VolumeSpec, InitSpecError> {
    let bad = |reason: &str| InitSpecError::BadFlag {
        flag: "--virtiofs",
        value: value.to_string(),
        reason: reason.to_string(),
    };
    let (mount, rest) = value
        .split_once('=')
        .ok_or_else(|| bad("expected MOUNT=TAG[,ro]"))?;
    let mut parts = rest.split(',');
    let tag = parts.next().unwrap_or_default();
    let mut read_only = false;
    for opt in parts {
        match opt {
            "ro" => read_only = true,
            other => return Err(bad(&format!("unknown option {other:?} (expected ro)"))),
        }
    }
    Ok(VolumeSpec {
        mount_point: mount.to_string(),
        container_id: String::new(),
        block_device: None,
        virtiofs: Some(VirtiofsSpec {
            tag: tag.to_string(),
            read_only,
        }),
    })
}

impl VolumeSpec {
    /// Validates the volume (`index` is its 1-based position, for errors) and converts it
    /// to the wire message.
    pub(super) fn into_volume(self, index: usize) -> Result<Volume, InitSpecError> {
        let bad = |reason: &str| InitSpecError::BadVolume {
            index,
            mount_point: self.mount_point.clone(),
            reason: reason.to_string(),
        };
        if !self.mount_point.starts_with('/') {
            return Err(bad("the mount point must be an absolute path"));
        }
        let source = match (&self.block_device, &self.virtiofs) {
            (Some(b), None) => {
                if !b.device.starts_with('/') {
                    return Err(bad(&format!(
                        "device {:?} must be an absolute path such as /dev/vdb",
                        b.device
                    )));
                }
                let filesystem = match b.filesystem {
                    FsKind::Ext4 => Filesystem::Ext4,
                };
                volume::Source::BlockDevice(BlockDeviceSource {
                    device: b.device.clone(),
                    filesystem: filesystem as i32,
                    need_format: b.need_format,
                    need_resize: b.need_resize,
                })
            }
            (None, Some(v)) => {
                if v.tag.is_empty() {
                    return Err(bad("the virtiofs tag is empty"));
                }
                volume::Source::Virtiofs(VirtiofsSource {
                    tag: v.tag.clone(),
                    read_only: v.read_only,
                })
            }
            _ => {
                return Err(bad(
                    "exactly one of \"block_device\" or \"virtiofs\" is required",
                ))
            }
        };
        Ok(Volume {
            mount_point: self.mount_point,
            container_id: self.container_id,
            source: Some(source),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::{from_json, request_from_args};
    use crate::cli::InitArgs;

    #[test]
    fn bad_volumes_are_explained() {
        let cases: &[(&str, &str)] = &[
            (
                r#"{"volumes":[{"mount_point":"/d","block_device":{"device":"/dev/vdb","filesystem":"xfs"}}]}"#,
                "unknown variant `xfs`",
            ),
            (
                r#"{"volumes":[{"mount_point":"/d","block_device":{"device":"/dev/vdb","fromat":true}}]}"#,
                "unknown field `fromat`",
            ),
            (r#"{"volumes":[{"mount_point":"/d"}]}"#, "exactly one of"),
            (
                r#"{"volumes":[{"mount_point":"/d","block_device":{"device":"/dev/vdb"},"virtiofs":{"tag":"t"}}]}"#,
                "exactly one of",
            ),
            (
                r#"{"volumes":[{"mount_point":"d","virtiofs":{"tag":"t"}}]}"#,
                "volume 1 (\"d\"): the mount point must be an absolute path",
            ),
            (
                r#"{"volumes":[{"mount_point":"/d","block_device":{"device":"vdb"}}]}"#,
                "must be an absolute path such as /dev/vdb",
            ),
        ];
        for (text, want) in cases {
            let err = from_json(text).expect_err(text).to_string();
            assert!(err.contains(want), "{text}: {err:?} lacks {want:?}");
        }
    }

    #[test]
    fn bad_flags_are_explained() {
        let cases: &[(InitArgs, &str)] = &[
            (
                InitArgs {
                    volumes: vec!["/dev/vdb".into()],
                    ..InitArgs::default()
                },
                "bad --volume \"/dev/vdb\": expected MOUNT=DEVICE",
            ),
            (
                InitArgs {
                    volumes: vec!["/d=/dev/vdb,fromat".into()],
                    ..InitArgs::default()
                },
                "unknown option \"fromat\"",
            ),
            (
                InitArgs {
                    virtiofs: vec!["/s=tag,rw".into()],
                    ..InitArgs::default()
                },
                "bad --virtiofs \"/s=tag,rw\": unknown option \"rw\"",
            ),
            (
                InitArgs {
                    virtiofs: vec!["/s=".into()],
                    ..InitArgs::default()
                },
                "the virtiofs tag is empty",
            ),
        ];
        for (args, want) in cases {
            let err = request_from_args(args).expect_err(want).to_string();
            assert!(err.contains(want), "{err:?} lacks {want:?}");
        }
    }
}
