//! Validation of the network part of an Init request into a [`NetworkPlan`], before
//! any link is touched.
//!
//! The interface name follows the kernel's naming rules; the address must be a host
//! address written as CIDR; the gateway must be a host address inside that subnet.
//! Nothing on the system is looked at here (whether the interface exists is checked
//! by [`super::prepare`]).

use std::net::IpAddr;

use guest_proto::v1::NetworkInit;
use ipnet::IpNet;

/// Longest interface name the kernel accepts (`IFNAMSIZ - 1`).
pub const MAX_INTERFACE_NAME_LEN: usize = 15;

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

/// Why the network part of the request was refused. Each message names the field and
/// the offending value so the host side can fix its request.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NetworkValidationError {
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

/// Checks the network part of a request and turns it into a plan.
pub fn validate_network(net: &NetworkInit) -> Result<NetworkPlan, NetworkValidationError> {
    validate_interface_name(&net.interface)?;
    let address = net.ip.as_deref().map(parse_cidr).transpose()?;
    let gateway = match (&net.gateway, address) {
        (None, _) => None,
        (Some(gw), None) => {
            return Err(NetworkValidationError::GatewayWithoutIp { value: gw.clone() })
        }
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
fn validate_interface_name(name: &str) -> Result<(), NetworkValidationError> {
    if name.is_empty() {
        return Err(NetworkValidationError::InterfaceEmpty);
    }
    if name.len() > MAX_INTERFACE_NAME_LEN {
        return Err(NetworkValidationError::InterfaceTooLong {
            value: name.to_string(),
            len: name.len(),
        });
    }
    let invalid = |reason| NetworkValidationError::InterfaceInvalid {
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

fn parse_cidr(value: &str) -> Result<IpNet, NetworkValidationError> {
    let net: IpNet = match value.parse() {
        Ok(net) => net,
        Err(_) => {
            return Err(match value.parse::<IpAddr>() {
                Ok(IpAddr::V4(_)) => NetworkValidationError::IpMissingPrefix {
                    value: value.to_string(),
                    suggestion: format!("{value}/24"),
                },
                Ok(IpAddr::V6(_)) => NetworkValidationError::IpMissingPrefix {
                    value: value.to_string(),
                    suggestion: format!("{value}/64"),
                },
                Err(_) => NetworkValidationError::IpNotCidr {
                    value: value.to_string(),
                },
            })
        }
    };
    let not_host = |reason: String| NetworkValidationError::IpNotHost {
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

fn validate_gateway(
    value: &str,
    ip_value: &str,
    net: IpNet,
) -> Result<IpAddr, NetworkValidationError> {
    let gw: IpAddr = value
        .parse()
        .map_err(|_| NetworkValidationError::GatewayInvalid {
            value: value.to_string(),
        })?;
    if gw.is_ipv4() != net.addr().is_ipv4() {
        return Err(NetworkValidationError::GatewayFamily {
            gateway: value.to_string(),
            ip: ip_value.to_string(),
        });
    }
    let subnet = net.trunc();
    if !subnet.contains(&gw) {
        return Err(NetworkValidationError::GatewayOutsideSubnet {
            gateway: value.to_string(),
            subnet: subnet.to_string(),
        });
    }
    if gw == net.addr() {
        return Err(NetworkValidationError::GatewayIsOwnAddress {
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
            return Err(NetworkValidationError::GatewayNotHost {
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
    use guest_proto::v1::NetworkInit;

    use super::NetworkValidationError;
    use crate::init::validate::fixtures::{check, net, req};
    use crate::init::validate::ValidationError;

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
            ValidationError::Network(NetworkValidationError::IpMissingPrefix { .. })
        ));
        assert!(matches!(
            err(net("eth0", Some("10.0.2.15/24"), Some("10.0.3.1"))),
            ValidationError::Network(NetworkValidationError::GatewayOutsideSubnet { ref subnet, .. }) if subnet == "10.0.2.0/24"
        ));
        assert!(matches!(
            err(net("eth0", Some("10.0.2.15/24"), Some("10.0.2.255"))),
            ValidationError::Network(NetworkValidationError::GatewayNotHost {
                which: "broadcast",
                ..
            })
        ));
        assert!(matches!(
            err(net("abcdefghijklmnop", None, None)),
            ValidationError::Network(NetworkValidationError::InterfaceTooLong { len: 16, .. })
        ));
    }
}
