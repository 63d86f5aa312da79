//! Init's network configuration inside throwaway network namespaces (needs root).
//! `Initializer::apply` runs in a thread that joined the namespace; the results are
//! checked independently with `ip -n <ns> -j`. The host's own namespace is never touched.

mod init_support;

use guest_agent::init::{InitError, InitOptions, InitOutcome, Initializer};
use guest_proto::v1::{
    volume::Source, BlockDeviceSource, Filesystem, GuestInitRequest, NetworkInit, Volume,
};
use init_support::{mounts_at, not_root, NetNs, Scratch};

fn net_request(interface: &str, ip: Option<&str>, gateway: Option<&str>) -> GuestInitRequest {
    GuestInitRequest {
        volumes: vec![],
        network: Some(NetworkInit {
            interface: interface.into(),
            ip: ip.map(Into::into),
            gateway: gateway.map(Into::into),
        }),
    }
}

/// Applies `req` inside `ns` with a fresh initializer.
fn apply_in(ns: &NetNs, req: GuestInitRequest) -> Result<InitOutcome, InitError> {
    ns.run_inside(move || async move { Initializer::new(InitOptions::default()).apply(&req).await })
}

/// Asserts the namespace is as `NetNs::new` + `add_veth("eth0", ..)` left it.
fn assert_untouched(ns: &NetNs) {
    assert!(!ns.is_up("lo"), "lo was brought up");
    assert!(!ns.is_up("eth0"), "eth0 was brought up");
    assert!(
        ns.addresses("eth0").is_empty(),
        "{:?}",
        ns.addresses("eth0")
    );
    assert!(ns.default_routes("-4").is_empty());
    assert!(ns.default_routes("-6").is_empty());
}

#[test]
fn configures_ipv4_link_address_and_default_route() {
    if not_root() {
        return;
    }
    let ns = NetNs::new();
    ns.add_veth("eth0", "peer0");
    let req = net_request("eth0", Some("10.77.0.2/24"), Some("10.77.0.1"));
    let again = req.clone();
    let (first, second) = ns.run_inside(move || async move {
        let init = Initializer::new(InitOptions::default());
        let first = init.apply(&req).await;
        let second = init.apply(&again).await;
        (first, second)
    });
    assert_eq!(first.unwrap(), InitOutcome::Applied);
    assert_eq!(second.unwrap(), InitOutcome::AlreadyApplied);
    assert!(ns.is_up("lo"));
    assert!(ns.is_up("eth0"));
    assert_eq!(ns.addresses("eth0"), vec!["10.77.0.2/24"]);
    assert_eq!(
        ns.default_routes("-4"),
        vec![("10.77.0.1".to_string(), "eth0".to_string())]
    );
}

#[test]
fn configures_ipv6() {
    if not_root() {
        return;
    }
    let ns = NetNs::new();
    ns.add_veth("eth0", "peer0");
    let outcome = apply_in(
        &ns,
        net_request("eth0", Some("fd00:77::2/64"), Some("fd00:77::1")),
    );
    assert_eq!(outcome.unwrap(), InitOutcome::Applied);
    assert!(ns.is_up("eth0"));
    assert_eq!(ns.addresses("eth0"), vec!["fd00:77::2/64"]);
    assert_eq!(
        ns.default_routes("-6"),
        vec![("fd00:77::1".to_string(), "eth0".to_string())]
    );
}

#[test]
fn link_only_request_brings_interface_up() {
    if not_root() {
        return;
    }
    let ns = NetNs::new();
    ns.add_veth("eth0", "peer0");
    apply_in(&ns, net_request("eth0", None, None)).unwrap();
    assert!(ns.is_up("eth0"));
    assert!(ns.is_up("lo"));
    assert!(ns.addresses("eth0").is_empty());
}

#[test]
fn existing_default_route_is_replaced() {
    if not_root() {
        return;
    }
    let ns = NetNs::new();
    ns.add_veth("eth0", "peer0");
    ns.add_veth("eth1", "peer1");
    ns.ip(&["link", "set", "eth1", "up"]);
    ns.ip(&["addr", "add", "10.88.0.2/24", "dev", "eth1"]);
    ns.ip(&["route", "add", "default", "via", "10.88.0.1", "dev", "eth1"]);
    apply_in(
        &ns,
        net_request("eth0", Some("10.77.0.2/24"), Some("10.77.0.1")),
    )
    .unwrap();
    assert_eq!(
        ns.default_routes("-4"),
        vec![("10.77.0.1".to_string(), "eth0".to_string())]
    );
}

#[test]
fn unknown_interface_fails_and_changes_nothing() {
    if not_root() {
        return;
    }
    let ns = NetNs::new();
    ns.add_veth("eth0", "peer0");
    let err = apply_in(
        &ns,
        net_request("eth7", Some("10.77.0.2/24"), Some("10.77.0.1")),
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("no network interface named \"eth7\""), "{msg}");
    assert_untouched(&ns);
}

#[test]
fn gateway_outside_subnet_is_rejected_before_any_change() {
    if not_root() {
        return;
    }
    let ns = NetNs::new();
    ns.add_veth("eth0", "peer0");
    let err = apply_in(
        &ns,
        net_request("eth0", Some("10.77.0.2/24"), Some("10.78.0.1")),
    )
    .unwrap_err();
    assert!(matches!(err, InitError::Invalid(_)), "{err}");
    assert!(err.to_string().contains("10.78.0.1"), "{err}");
    assert_untouched(&ns);
}

/// A local address as gateway makes the kernel refuse the default route, the last
/// step: the address must be removed and both links set down again. Retrying after
/// the obstacle is gone succeeds (a failed Init is not remembered).
#[test]
fn route_failure_rolls_back_address_and_links() {
    if not_root() {
        return;
    }
    let ns = NetNs::new();
    ns.add_veth("eth0", "peer0");
    ns.make_local_v6("fd00:77::1");
    let req = net_request("eth0", Some("fd00:77::2/64"), Some("fd00:77::1"));
    let retry = req.clone();
    let (init, first) = ns.run_inside(move || async move {
        let init = Initializer::new(InitOptions::default());
        let first = init.apply(&req).await;
        (init, first)
    });
    let err = first.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, InitError::Network(_)), "{msg}");
    assert!(
        msg.contains("default route via fd00:77::1 dev eth0"),
        "{msg}"
    );
    assert_untouched(&ns);

    ns.ip(&["addr", "del", "fd00:77::1/128", "dev", "eth1"]);
    let outcome = ns.run_inside(move || async move { init.apply(&retry).await });
    assert_eq!(outcome.unwrap(), InitOutcome::Applied);
    assert_eq!(ns.addresses("eth0"), vec!["fd00:77::2/64"]);
    assert_eq!(
        ns.default_routes("-6"),
        vec![("fd00:77::1".to_string(), "eth0".to_string())]
    );
}

/// IPv6 disabled on the interface makes adding the address fail after the links were
/// brought up: both go down again.
#[test]
fn address_failure_sets_links_down_again() {
    if not_root() {
        return;
    }
    let ns = NetNs::new();
    ns.add_veth("eth0", "peer0");
    ns.sysctl("net.ipv6.conf.eth0.disable_ipv6", "1");
    let err = apply_in(&ns, net_request("eth0", Some("fd00:77::2/64"), None)).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("adding address fd00:77::2/64 to eth0"),
        "{msg}"
    );
    assert_untouched(&ns);
}

/// When the network fails after the volumes were mounted, the volumes are rolled
/// back too.
#[test]
fn network_failure_unmounts_volumes() {
    if not_root() {
        return;
    }
    let mut scratch = Scratch::new("net");
    let (_, dev) = scratch.loop_device("img", 32);
    let mp = scratch.path("mnt/vol");
    let ns = NetNs::new();
    ns.add_veth("eth0", "peer0");
    ns.make_local_v6("fd00:77::1");
    let mut req = net_request("eth0", Some("fd00:77::2/64"), Some("fd00:77::1"));
    req.volumes.push(Volume {
        mount_point: mp.to_str().unwrap().into(),
        source: Some(Source::BlockDevice(BlockDeviceSource {
            device: dev.clone(),
            filesystem: Filesystem::Ext4 as i32,
            need_format: true,
            need_resize: false,
        })),
        container_id: String::new(),
    });
    let err = apply_in(&ns, req).unwrap_err();
    assert!(matches!(err, InitError::Network(_)), "{err}");
    assert!(mounts_at(&mp).is_empty(), "volume still mounted");
    assert!(!scratch.path("mnt").exists(), "mount point left behind");
    assert_untouched(&ns);
}

/// An unknown interface is found out before any volume is touched: the disk is not
/// formatted and no mount point is created.
#[test]
fn unknown_interface_fails_before_formatting() {
    if not_root() {
        return;
    }
    let mut scratch = Scratch::new("net");
    let (_, dev) = scratch.loop_device("img", 32);
    let mp = scratch.path("mnt/vol");
    let ns = NetNs::new();
    ns.add_veth("eth0", "peer0");
    let mut req = net_request("eth9", None, None);
    req.volumes.push(Volume {
        mount_point: mp.to_str().unwrap().into(),
        source: Some(Source::BlockDevice(BlockDeviceSource {
            device: dev.clone(),
            filesystem: Filesystem::Ext4 as i32,
            need_format: true,
            need_resize: false,
        })),
        container_id: String::new(),
    });
    let err = apply_in(&ns, req).unwrap_err();
    assert!(err.to_string().contains("\"eth9\""), "{err}");
    assert!(!scratch.path("mnt").exists());
    let blkid = std::process::Command::new("blkid")
        .arg(&dev)
        .output()
        .unwrap();
    assert!(blkid.stdout.is_empty(), "device was formatted: {blkid:?}");
    assert_untouched(&ns);
}
