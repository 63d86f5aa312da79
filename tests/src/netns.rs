//! A network namespace created (and deleted on drop) by one test, so NetworkInit changes
//! links, addresses and routes only where nothing else lives.

use crate::cmd::{run, run_ok};
use crate::error::{FixtureError, Result};
use crate::names;

/// A named network namespace (`ip netns add`).
#[derive(Debug)]
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Creates a fresh namespace with a unique name.
    pub fn new() -> Result<Self> {
        let name = names::unique("gat");
        run_ok("ip", &["netns", "add", name.as_str()])?;
        Ok(Self { name })
    }

    /// Its name, for `ip netns exec`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip -n <ns> args...` and returns stdout.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        run_ok("ip", &full)
    }

    /// Runs `ip -n <ns> -j args...` and parses the JSON.
    pub fn ip_json(&self, args: &[&str]) -> Result<serde_json::Value> {
        let mut full = vec!["-j"];
        full.extend_from_slice(args);
        let out = self.ip(&full)?;
        let text = if out.trim().is_empty() {
            "[]"
        } else {
            out.trim()
        };
        serde_json::from_str(text).map_err(|e| FixtureError::Parse {
            what: format!("ip {full:?}"),
            reason: format!("{e}: {out}"),
        })
    }

    /// Adds a veth pair `ifname` <-> `peer` (this kernel has no dummy driver). `ifname`
    /// stays down with no address, the way a guest NIC looks before Init; `peer` is set up
    /// so `ifname` gets a carrier once it is brought up.
    pub fn add_veth(&self, ifname: &str, peer: &str) -> Result<()> {
        self.ip(&["link", "add", ifname, "type", "veth", "peer", "name", peer])?;
        self.ip(&["link", "set", peer, "up"]).map(drop)
    }

    /// IPv4 addresses (`a.b.c.d/len`) of `ifname`.
    pub fn ipv4_addrs(&self, ifname: &str) -> Result<Vec<String>> {
        let v = self.ip_json(&["-4", "addr", "show", "dev", ifname])?;
        let mut out = Vec::new();
        for link in v.as_array().into_iter().flatten() {
            for a in link["addr_info"].as_array().into_iter().flatten() {
                if let (Some(ip), Some(len)) = (a["local"].as_str(), a["prefixlen"].as_u64()) {
                    out.push(format!("{ip}/{len}"));
                }
            }
        }
        Ok(out)
    }

    /// True when `ifname` is administratively up.
    pub fn is_up(&self, ifname: &str) -> Result<bool> {
        let v = self.ip_json(&["link", "show", "dev", ifname])?;
        let flags = &v[0]["flags"];
        Ok(flags
            .as_array()
            .into_iter()
            .flatten()
            .any(|f| f.as_str() == Some("UP")))
    }

    /// The IPv4 default route's gateway and device, if there is one.
    pub fn default_route(&self) -> Result<Option<(String, String)>> {
        let v = self.ip_json(&["-4", "route", "show", "default"])?;
        Ok(v.as_array().and_then(|a| a.first()).map(|r| {
            (
                r["gateway"].as_str().unwrap_or("").to_string(),
                r["dev"].as_str().unwrap_or("").to_string(),
            )
        }))
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        match run("ip", &["netns", "del", self.name.as_str()]) {
            Ok(o) if o.ok() => {}
            Ok(o) => eprintln!("netns: cannot delete {}: {}", self.name, o.stderr.trim()),
            Err(e) => eprintln!("netns: cannot delete {}: {e}", self.name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn veth_interface_lives_and_dies_with_the_namespace() {
        let ns = NetNs::new().unwrap();
        ns.add_veth("eth0", "eth0p").unwrap();
        assert!(!ns.is_up("eth0").unwrap());
        assert!(ns.ipv4_addrs("eth0").unwrap().is_empty());
        assert!(ns.default_route().unwrap().is_none());
        ns.ip(&["link", "set", "eth0", "up"]).unwrap();
        ns.ip(&["addr", "add", "10.99.0.2/24", "dev", "eth0"])
            .unwrap();
        ns.ip(&["route", "add", "default", "via", "10.99.0.1"])
            .unwrap();
        assert!(ns.is_up("eth0").unwrap());
        assert_eq!(
            ns.ipv4_addrs("eth0").unwrap(),
            vec!["10.99.0.2/24".to_string()]
        );
        assert_eq!(
            ns.default_route().unwrap(),
            Some(("10.99.0.1".into(), "eth0".into()))
        );
        let name = ns.name().to_string();
        drop(ns);
        let list = run_ok("ip", &["netns", "list"]).unwrap();
        assert!(!list.contains(&name), "{list}");
    }
}
