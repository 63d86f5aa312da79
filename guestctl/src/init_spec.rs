//! Builds the `GuestInitRequest` of `guestctl init`, either from flags or from a JSON file.
//!
//! JSON format (unknown fields are rejected so typos do not pass silently):
//!
//! ```json
//! {"volumes": [
//!    {"mount_point": "/data",
//!     "block_device": {"device": "/dev/vdb", "filesystem": "ext4", "need_format": true, "need_resize": false}},
//!    {"mount_point": "/shared", "virtiofs": {"tag": "share0", "read_only": true}}],
//!  "network": {"interface": "eth0", "ip": "10.0.2.15/24", "gateway": "10.0.2.2"}}
//! ```

use std::io::Read;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use guest_proto::v1::{
    volume, BlockDeviceSource, Filesystem, GuestInitRequest, NetworkInit, VirtiofsSource, Volume,
};
use serde::Deserialize;

use crate::cli::InitArgs;

/// Why the init request could not be built (a usage error: exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum InitSpecError {
    /// The spec file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The spec file is not valid JSON of the expected shape.
    #[error("{}: invalid init spec: {source}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// serde's error (with line and column).
        source: serde_json::Error,
    },
    /// A `--volume`/`--virtiofs` argument is malformed.
    #[error("bad {flag} {value:?}: {reason}")]
    BadFlag {
        /// The flag, e.g. `--volume`.
        flag: &'static str,
        /// The argument as given.
        value: String,
        /// What is wrong.
        reason: String,
    },
    /// A volume (from either source) is invalid.
    #[error("volume {index} ({mount_point:?}): {reason}")]
    BadVolume {
        /// 1-based position in the list.
        index: usize,
        /// Its mount point.
        mount_point: String,
        /// What is wrong.
        reason: String,
    },
    /// The network section is invalid.
    #[error("network: {0}")]
    BadNetwork(String),
}

/// The JSON document of `init --file`.
#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct InitSpec {
    /// Volumes to mount, in order.
    #[serde(default)]
    pub volumes: Vec<VolumeSpec>,
    /// Network to configure; absent means none.
    #[serde(default)]
    pub network: Option<NetworkSpec>,
}

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

/// Network settings.
#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NetworkSpec {
    /// Interface name, e.g. eth0.
    pub interface: String,
    /// Address with prefix length.
    #[serde(default)]
    pub ip: Option<String>,
    /// Default gateway.
    #[serde(default)]
    pub gateway: Option<String>,
}

/// Builds the request from `guestctl init` arguments (file or flags).
pub fn request_from_args(args: &InitArgs) -> Result<GuestInitRequest, InitSpecError> {
    let spec = match &args.file {
        Some(path) => read_spec(path)?,
        None => spec_from_flags(args)?,
    };
    spec.into_request()
}

/// Reads and parses a JSON spec file; `-` is stdin.
pub fn read_spec(path: &Path) -> Result<InitSpec, InitSpecError> {
    let read_err = |source| InitSpecError::Read {
        path: path.to_path_buf(),
        source,
    };
    let text = if path == Path::new("-") {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).map_err(read_err)?;
        s
    } else {
        std::fs::read_to_string(path).map_err(read_err)?
    };
    parse_spec(&text, path)
}

/// Parses the JSON text of a spec; `path` only labels errors.
pub fn parse_spec(text: &str, path: &Path) -> Result<InitSpec, InitSpecError> {
    serde_json::from_str(text).map_err(|source| InitSpecError::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// Builds a spec from `--volume`, `--virtiofs`, `--interface`, `--ip`, `--gateway`.
pub fn spec_from_flags(args: &InitArgs) -> Result<InitSpec, InitSpecError> {
    let mut volumes = Vec::new();
    for v in &args.volumes {
        volumes.push(parse_volume_flag(v)?);
    }
    for v in &args.virtiofs {
        volumes.push(parse_virtiofs_flag(v)?);
    }
    let network = args.interface.as_ref().map(|interface| NetworkSpec {
        interface: interface.clone(),
        ip: args.ip.clone(),
        gateway: args.gateway.clone(),
    });
    Ok(InitSpec { volumes, network })
}

/// `MOUNT=DEVICE[,format][,resize]`
fn parse_volume_flag(value: &str) -> Result<VolumeSpec, InitSpecError> {
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
fn parse_virtiofs_flag(value: &str) -> Result<VolumeSpec, InitSpecError> {
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

impl InitSpec {
    /// Validates the spec and converts it to the wire request.
    ///
    /// Checks only what is wrong on any guest (relative paths, empty names, malformed
    /// addresses); whether devices exist is the agent's business.
    pub fn into_request(self) -> Result<GuestInitRequest, InitSpecError> {
        let mut volumes = Vec::with_capacity(self.volumes.len());
        for (i, v) in self.volumes.into_iter().enumerate() {
            volumes.push(v.into_volume(i + 1)?);
        }
        let network = self.network.map(NetworkSpec::into_network).transpose()?;
        Ok(GuestInitRequest { volumes, network })
    }
}

impl VolumeSpec {
    fn into_volume(self, index: usize) -> Result<Volume, InitSpecError> {
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

impl NetworkSpec {
    fn into_network(self) -> Result<NetworkInit, InitSpecError> {
        if self.interface.is_empty() {
            return Err(InitSpecError::BadNetwork(
                "the interface name is empty".into(),
            ));
        }
        if let Some(ip) = &self.ip {
            check_cidr(ip).map_err(InitSpecError::BadNetwork)?;
        }
        match (&self.ip, &self.gateway) {
            (None, Some(_)) => {
                return Err(InitSpecError::BadNetwork("a gateway needs an ip".into()));
            }
            (_, Some(gw)) => {
                gw.parse::<IpAddr>().map_err(|_| {
                    InitSpecError::BadNetwork(format!("gateway {gw:?} is not an IP address"))
                })?;
            }
            _ => {}
        }
        Ok(NetworkInit {
            interface: self.interface,
            ip: self.ip,
            gateway: self.gateway,
        })
    }
}

/// Checks `ADDR/PREFIX` syntax (the agent checks the gateway lies in the subnet).
fn check_cidr(ip: &str) -> Result<(), String> {
    let (addr, prefix) = ip
        .split_once('/')
        .ok_or_else(|| format!("ip {ip:?} lacks a prefix length (write e.g. 10.0.2.15/24)"))?;
    let addr: IpAddr = addr
        .parse()
        .map_err(|_| format!("ip {ip:?}: {addr:?} is not an IP address"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    match prefix.parse::<u8>() {
        Ok(p) if p <= max => Ok(()),
        _ => Err(format!(
            "ip {ip:?}: prefix length {prefix:?} is not 0..={max}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"{"volumes":[{"mount_point":"/data","block_device":{"device":"/dev/vdb","filesystem":"ext4","need_format":true,"need_resize":false}},{"mount_point":"/shared","virtiofs":{"tag":"share0","read_only":true}}],"network":{"interface":"eth0","ip":"10.0.2.15/24","gateway":"10.0.2.2"}}"#;

    fn expected() -> GuestInitRequest {
        GuestInitRequest {
            volumes: vec![
                Volume {
                    mount_point: "/data".into(),
                    container_id: String::new(),
                    source: Some(volume::Source::BlockDevice(BlockDeviceSource {
                        device: "/dev/vdb".into(),
                        filesystem: Filesystem::Ext4 as i32,
                        need_format: true,
                        need_resize: false,
                    })),
                },
                Volume {
                    mount_point: "/shared".into(),
                    container_id: String::new(),
                    source: Some(volume::Source::Virtiofs(VirtiofsSource {
                        tag: "share0".into(),
                        read_only: true,
                    })),
                },
            ],
            network: Some(NetworkInit {
                interface: "eth0".into(),
                ip: Some("10.0.2.15/24".into()),
                gateway: Some("10.0.2.2".into()),
            }),
        }
    }

    fn from_json(text: &str) -> Result<GuestInitRequest, InitSpecError> {
        parse_spec(text, Path::new("spec.json"))?.into_request()
    }

    #[test]
    fn json_example_builds_the_request() {
        assert_eq!(from_json(EXAMPLE).unwrap(), expected());
    }

    #[test]
    fn flags_build_the_same_request() {
        let args = InitArgs {
            volumes: vec!["/data=/dev/vdb,format".into()],
            virtiofs: vec!["/shared=share0,ro".into()],
            interface: Some("eth0".into()),
            ip: Some("10.0.2.15/24".into()),
            gateway: Some("10.0.2.2".into()),
            ..InitArgs::default()
        };
        assert_eq!(request_from_args(&args).unwrap(), expected());
    }

    #[test]
    fn file_is_read_from_disk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("init.json");
        std::fs::write(&path, EXAMPLE).unwrap();
        let args = InitArgs {
            file: Some(path),
            ..InitArgs::default()
        };
        assert_eq!(request_from_args(&args).unwrap(), expected());
        let missing = InitArgs {
            file: Some(dir.path().join("nope.json")),
            ..InitArgs::default()
        };
        let err = request_from_args(&missing).unwrap_err();
        assert!(err.to_string().starts_with("cannot read "), "{err}");
    }

    #[test]
    fn defaults_apply() {
        let req =
            from_json(r#"{"volumes":[{"mount_point":"/d","block_device":{"device":"/dev/vdc"}}]}"#)
                .unwrap();
        let Some(volume::Source::BlockDevice(b)) = &req.volumes[0].source else {
            panic!("{req:?}")
        };
        assert_eq!(b.filesystem, Filesystem::Ext4 as i32);
        assert!(!b.need_format && !b.need_resize);
        assert!(req.network.is_none());
        assert_eq!(from_json("{}").unwrap(), GuestInitRequest::default());
        let resize = request_from_args(&InitArgs {
            volumes: vec!["/d=/dev/vdc,resize,format".into()],
            ..InitArgs::default()
        })
        .unwrap();
        let Some(volume::Source::BlockDevice(b)) = &resize.volumes[0].source else {
            panic!()
        };
        assert!(b.need_format && b.need_resize);
    }

    #[test]
    fn bad_json_is_explained() {
        let cases: &[(&str, &str)] = &[
            ("{", "EOF while parsing"),
            (r#"{"volume":[]}"#, "unknown field `volume`"),
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
            (
                r#"{"network":{"interface":"eth0","ip":"10.0.2.15"}}"#,
                "lacks a prefix length",
            ),
            (
                r#"{"network":{"interface":"eth0","ip":"10.0.2.15/33"}}"#,
                "prefix length \"33\"",
            ),
            (
                r#"{"network":{"interface":"eth0","gateway":"10.0.2.2"}}"#,
                "a gateway needs an ip",
            ),
            (
                r#"{"network":{"interface":"eth0","ip":"10.0.2.15/24","gateway":"gw"}}"#,
                "is not an IP address",
            ),
            (r#"{"network":{"interface":""}}"#, "interface name is empty"),
        ];
        for (text, want) in cases {
            let err = from_json(text).expect_err(text).to_string();
            assert!(err.contains(want), "{text}: {err:?} lacks {want:?}");
        }
        let err = from_json("{\n  \"volumes\": 5\n}").unwrap_err().to_string();
        assert!(
            err.starts_with("spec.json: invalid init spec:") && err.contains("line 2"),
            "{err}"
        );
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
