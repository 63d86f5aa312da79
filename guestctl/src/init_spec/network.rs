//! The network section of an init spec: parsing (`--interface`/`--ip`/`--gateway` or the
//! JSON `network` object) and the checks that hold on any guest.

use std::net::IpAddr;

use guest_proto::v1::NetworkInit;
use serde::Deserialize;

use super::InitSpecError;

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

impl NetworkSpec {
    /// Validates the section and converts it to the wire message.
    pub(super) fn into_network(self) -> Result<NetworkInit, InitSpecError> {
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
    use super::super::from_json;

    #[test]
    fn bad_network_is_explained() {
        let cases: &[(&str, &str)] = &[
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
    }
}
