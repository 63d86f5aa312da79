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
//!
//! This module holds the spec document and its loading; [`volume`] and [`network`] parse and
//! check their sections, [`error`] says what went wrong.

use std::io::Read;
use std::path::Path;

use guest_proto::v1::GuestInitRequest;
use serde::Deserialize;

use crate::cli::InitArgs;

mod error;
mod network;
mod volume;

pub use error::InitSpecError;
pub use network::NetworkSpec;
pub use volume::VolumeSpec;

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
        volumes.push(volume::parse_volume_flag(v)?);
    }
    for v in &args.virtiofs {
        volumes.push(volume::parse_virtiofs_flag(v)?);
    }
    let network = args.interface.as_ref().map(|interface| NetworkSpec {
        interface: interface.clone(),
        ip: args.ip.clone(),
        gateway: args.gateway.clone(),
    });
    Ok(InitSpec { volumes, network })
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

/// Parses and converts a JSON spec, as `init --file` does; errors name `spec.json`.
#[cfg(test)]
fn from_json(text: &str) -> Result<GuestInitRequest, InitSpecError> {
    parse_spec(text, Path::new("spec.json"))?.into_request()
}

#[cfg(test)]
mod tests {
    use guest_proto::v1::{
        volume, BlockDeviceSource, Filesystem, NetworkInit, VirtiofsSource, Volume,
    };

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
}
