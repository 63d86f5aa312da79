//! Prometheus service discovery: one scrape target per VM, each scraped through the proxy.
//!
//! Instead of (or beside) the merged `/metrics`, the proxy serves each VM on its own path,
//! `/vm/NAME/metrics`, and describes those paths as Prometheus targets, in the JSON shape
//! both `file_sd_configs` and `http_sd_configs` read:
//!
//! ```json
//! [{"targets": ["127.0.0.1:9465"],
//!   "labels": {"vm": "vm1", "__metrics_path__": "/vm/vm1/metrics", "host": "h1"}}]
//! ```
//!
//! `GET /sd` serves it (`http_sd_configs`), `--sd-file` writes it (`file_sd_configs`, written
//! atomically at start and after every reload). Prometheus then keeps one target per VM, with
//! its own `up`, `scrape_duration_seconds` and the labels of the file; a dead VM's path
//! answers 503, so its `up` is 0 and no other VM's scrape waits for it.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::Path;

use serde::Serialize;

use super::exposition::valid_label_name;
use super::merge::VM_LABEL;

/// The path one VM is served on.
pub fn vm_path(name: &str) -> String {
    format!("/vm/{name}/metrics")
}

/// The VM name in a `/vm/NAME/metrics` path, if it is one.
pub fn vm_from_path(path: &str) -> Option<&str> {
    path.strip_prefix("/vm/")?
        .strip_suffix("/metrics")
        .filter(|n| !n.is_empty() && !n.contains('/'))
}

/// Parses one `--sd-label KEY=VALUE`: a valid label name that Prometheus does not reserve
/// (no leading `__`) and is not `vm` (set per target).
pub fn parse_label(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))?;
    let k = k.trim();
    if !valid_label_name(k) || k.starts_with("__") {
        return Err(format!(
            "{k:?} is not a usable label name ([a-zA-Z_][a-zA-Z0-9_]*, no leading __)"
        ));
    }
    if k == VM_LABEL {
        return Err("the vm label is set per target from the VM name".to_string());
    }
    Ok((k.to_string(), v.to_string()))
}

#[derive(Serialize)]
struct Group<'a> {
    targets: [&'a str; 1],
    labels: BTreeMap<&'a str, String>,
}

/// The target groups, one per VM, reaching the proxy at `address` (`HOST:PORT`), each with
/// `vm`, `__metrics_path__` and the `extra` labels.
pub fn targets_json<'a>(
    address: &str,
    vms: impl IntoIterator<Item = &'a str>,
    extra: &[(String, String)],
) -> String {
    let groups: Vec<Group<'_>> = vms
        .into_iter()
        .map(|vm| {
            let mut labels: BTreeMap<&str, String> =
                extra.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
            labels.insert(VM_LABEL, vm.to_string());
            labels.insert("__metrics_path__", vm_path(vm));
            Group {
                targets: [address],
                labels,
            }
        })
        .collect();
    serde_json::to_string_pretty(&groups).unwrap_or_else(|_| "[]".to_string()) + "\n"
}

/// The address to put in a targets file for a proxy bound to `bound`: the address itself,
/// or this machine's host name with its port when bound to every address (0.0.0.0, ::).
pub fn default_address(bound: SocketAddr) -> String {
    if bound.ip().is_unspecified() {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".to_string());
        format!("{host}:{}", bound.port())
    } else {
        bound.to_string()
    }
}

/// Writes `json` to `path` atomically (a temporary file in the same directory, then a
/// rename), so Prometheus never reads half a file.
pub fn write_file(path: &Path, json: &str) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("the --sd-file path has no file name"))?;
    let tmp = dir.join(format!(".{}.tmp", name.to_string_lossy()));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(json.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_round_trip() {
        assert_eq!(vm_path("vm-1"), "/vm/vm-1/metrics");
        assert_eq!(vm_from_path("/vm/vm-1/metrics"), Some("vm-1"));
        for bad in [
            "/vm//metrics",
            "/vm/a/b/metrics",
            "/vm/a",
            "/metrics",
            "/vm/a/metricsx",
        ] {
            assert_eq!(vm_from_path(bad), None, "{bad}");
        }
    }

    #[test]
    fn labels_parse_and_refuse_reserved_names() {
        assert_eq!(
            parse_label("host=h1").unwrap(),
            ("host".to_string(), "h1".to_string())
        );
        assert_eq!(parse_label("dc=").unwrap().1, "");
        for bad in ["host", "__x=1", "vm=a", "1a=b", "a-b=c"] {
            assert!(parse_label(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn targets_json_has_one_group_per_vm() {
        let json = targets_json(
            "127.0.0.1:9465",
            ["a", "b"],
            &[("host".to_string(), "h1".to_string())],
        );
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        let groups = v.as_array().unwrap();
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[1]["targets"][0], "127.0.0.1:9465");
        assert_eq!(groups[1]["labels"]["vm"], "b");
        assert_eq!(groups[1]["labels"]["__metrics_path__"], "/vm/b/metrics");
        assert_eq!(groups[1]["labels"]["host"], "h1");
        assert_eq!(targets_json("x:1", [], &[]).trim(), "[]");
    }

    #[test]
    fn default_address_names_the_host_for_wildcards() {
        assert_eq!(
            default_address("127.0.0.1:9465".parse().unwrap()),
            "127.0.0.1:9465"
        );
        let a = default_address("0.0.0.0:9465".parse().unwrap());
        assert!(a.ends_with(":9465") && !a.starts_with("0.0.0.0"), "{a}");
    }

    #[test]
    fn file_is_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("vms.json");
        write_file(&f, "[1]\n").unwrap();
        write_file(&f, "[2]\n").unwrap();
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "[2]\n");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
