//! Hostile input through the real binaries, table-driven: every bad request gets the right
//! gRPC status or GuestInitError with a message naming what was wrong, AND changes nothing
//! (mount table, freeze state, the kernel's view of our filesystems, the network namespace);
//! a valid request afterwards is still accepted. guestctl facing a broken hybrid-vsock VMM
//! fails fast with exit code 3 and a clear message instead of hanging.
//!
//! Safety: nothing here names `/` or another filesystem we did not create. Paths that are not
//! mountpoints (plain directories, files, device nodes, symlinks) live inside one of the
//! test's loop filesystems, so even a buggy lookup could only reach that filesystem, and
//! the test would see it frozen.

use std::ffi::OsStr;
use std::path::Path;
use std::time::{Duration, Instant};

use guest_proto::v1::volume::Source;
use guest_proto::v1::{GuestInitRequest, VirtiofsSource, Volume};
use system_tests::cmd::run_ok;
use system_tests::reliability::{FakeVmm, ThawGuard, VmmBehaviour};
use system_tests::requests::{block_volume, init_outcome, network, volumes};
use system_tests::rpc::Rpc;
use system_tests::{
    fsfreeze, guestctl, mountinfo, Agent, FsType, LoopDev, LoopFs, Mount, NetNs, Scratch,
};
use tonic::Code;

/// Mounts below any of `roots`, as (mountpoint, fstype, source, options), read from
/// `/proc/<pid>/mountinfo` (the agent's mount namespace).
fn mounts_below(pid: u32, roots: &[&Path]) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))?;
    Ok(mountinfo::parse(&text)?
        .into_iter()
        .filter(|m| roots.iter().any(|r| m.mount_point.starts_with(r)))
        .map(|m| {
            format!(
                "{} {} {} {}",
                m.mount_point.display(),
                m.fstype,
                m.source,
                m.mount_options
            )
        })
        .collect())
}

/// Asserts the agent holds nothing frozen and is not busy.
async fn assert_unfrozen(rpc: &mut Rpc, case: &str) -> anyhow::Result<()> {
    let st = rpc.status().await??;
    assert!(
        !st.frozen && st.filesystems.is_empty() && !st.operation_in_progress,
        "{case}: {st:?}"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Quiesce
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiesce_rejects_bad_mountpoints_and_freezes_nothing() -> anyhow::Result<()> {
    let s = Scratch::new()?;
    let other = Scratch::new()?;
    let a = LoopFs::new(&s, "a", FsType::Ext4, 32)?;
    let b = LoopFs::new(&s, "b", FsType::Ext4, 32)?;
    let outside = LoopFs::new(&other, "x", FsType::Ext4, 32)?;
    let _guard = ThawGuard::new(&[a.mountpoint(), b.mountpoint(), outside.mountpoint()]);
    let tmpfs = Mount::tmpfs(&s.join("tmpfs"))?;
    let procfs = s.subdir("proc")?;
    run_ok(
        "mount",
        &[
            OsStr::new("-t"),
            OsStr::new("proc"),
            OsStr::new("proc"),
            procfs.as_os_str(),
        ],
    )?;
    let ro_dev = LoopDev::create(&s.join("ro.img"), 16)?;
    run_ok(
        "mkfs.ext4",
        &[OsStr::new("-q"), ro_dev.device().as_os_str()],
    )?;
    let ro = Mount::device_with(ro_dev.device(), &s.join("ro"), "ro")?;
    // Things that are not mountpoints, inside filesystem a.
    std::fs::create_dir(a.join("plain"))?;
    std::fs::write(a.join("file"), b"x")?;
    run_ok(
        "mknod",
        &[
            a.join("null").as_os_str(),
            OsStr::new("c"),
            OsStr::new("1"),
            OsStr::new("3"),
        ],
    )?;
    std::os::unix::fs::symlink(b.mountpoint(), a.join("link-to-b"))?;

    let agent = Agent::start(&s, &[]).await?;
    let mut rpc = agent.rpc().await?;
    let roots = [s.path(), other.path()];
    let before = mounts_below(agent.pid(), &roots)?;

    let sp = |rel: &str| s.join(rel).display().to_string();
    let long = format!("{}/{}", a.mp(), "d/".repeat(4000));
    let many: Vec<String> = (0..500).map(|i| format!("{}/nope{i}", a.mp())).collect();
    let cases: Vec<(&str, Vec<String>, Code, String)> = vec![
        (
            "relative",
            vec!["a/mnt".into()],
            Code::InvalidArgument,
            "not an absolute path".into(),
        ),
        (
            "dot-relative",
            vec!["./a/mnt".into()],
            Code::InvalidArgument,
            "not an absolute path".into(),
        ),
        (
            "empty string",
            vec![String::new()],
            Code::InvalidArgument,
            "not an absolute path".into(),
        ),
        (
            "dot-dot",
            vec![format!("{}/../a/mnt", sp("b"))],
            Code::InvalidArgument,
            "'..'".into(),
        ),
        (
            "dot-dot escaping",
            vec![format!("{}/../../../..", a.mp())],
            Code::InvalidArgument,
            "'..'".into(),
        ),
        (
            "plain directory",
            vec![a.join("plain").display().to_string()],
            Code::InvalidArgument,
            "is not a mount point".into(),
        ),
        (
            "regular file",
            vec![a.join("file").display().to_string()],
            Code::InvalidArgument,
            "is not a mount point".into(),
        ),
        (
            "character device",
            vec![a.join("null").display().to_string()],
            Code::InvalidArgument,
            "is not a mount point".into(),
        ),
        (
            "missing path",
            vec![a.join("missing").display().to_string()],
            Code::InvalidArgument,
            "is not a mount point".into(),
        ),
        (
            "symlink to a mount",
            vec![a.join("link-to-b").display().to_string()],
            Code::InvalidArgument,
            "is not a mount point".into(),
        ),
        (
            "NUL byte",
            vec![format!("{}\0/x", a.mp())],
            Code::InvalidArgument,
            "".into(),
        ),
        (
            "tmpfs",
            vec![tmpfs.path().display().to_string()],
            Code::InvalidArgument,
            "cannot be frozen".into(),
        ),
        (
            "proc",
            vec![procfs.display().to_string()],
            Code::InvalidArgument,
            "cannot be frozen".into(),
        ),
        (
            "read-only",
            vec![ro.path().display().to_string()],
            Code::InvalidArgument,
            "cannot be frozen".into(),
        ),
        (
            "outside --freeze-only",
            vec![outside.mp()],
            Code::InvalidArgument,
            "cannot be frozen".into(),
        ),
        (
            "valid then invalid",
            vec![a.mp(), b.mp(), tmpfs.path().display().to_string()],
            Code::InvalidArgument,
            "cannot be frozen".into(),
        ),
        (
            "invalid then valid",
            vec![a.join("plain").display().to_string(), a.mp()],
            Code::InvalidArgument,
            "is not a mount point".into(),
        ),
        (
            "very long path",
            vec![long],
            Code::InvalidArgument,
            "is not a mount point".into(),
        ),
        (
            "500 bad entries",
            many,
            Code::InvalidArgument,
            "is not a mount point".into(),
        ),
    ];
    for (case, mps, code, fragment) in cases {
        let res = rpc.quiesce(&mps).await?;
        let err = match res {
            Ok(q) => panic!("{case}: Quiesce {mps:.200?} succeeded: {q:?}"),
            Err(e) => e,
        };
        assert_eq!(err.code(), code, "{case}: {err:?}");
        assert!(
            err.message().contains(fragment.as_str()),
            "{case}: message {:?} lacks {fragment:?}",
            err.message()
        );
        assert_unfrozen(&mut rpc, case).await?;
        for fs in [&a, &b, &outside] {
            assert!(
                !fsfreeze::is_frozen(fs.mountpoint())?,
                "{case}: {} is frozen",
                fs.mp()
            );
        }
        assert_eq!(
            mounts_below(agent.pid(), &roots)?,
            before,
            "{case}: mounts changed"
        );
        println!(
            "{case}: {:?} {}",
            err.code(),
            err.message().chars().take(160).collect::<String>()
        );
    }
    // Errors name the offending value.
    let e = rpc
        .quiesce(&[tmpfs.path().display().to_string()])
        .await?
        .unwrap_err();
    assert!(
        e.message().contains(&tmpfs.path().display().to_string()),
        "{e:?}"
    );

    // The same connection still works, and a valid Quiesce is accepted.
    let q = rpc.quiesce(&[a.mp(), b.mp()]).await??;
    assert_eq!(q.frozen_count, 2);
    assert_eq!(rpc.thaw().await??.thawed_count, 2);
    Ok(())
}

/// Sends a Quiesce and an Init of about `len` bytes; both must get RESOURCE_EXHAUSTED (the
/// gRPC code for a message over the size limit) and change nothing.
async fn assert_oversize_refused(rpc: &mut Rpc, len: usize, case: &str) -> anyhow::Result<()> {
    let big = format!("/{}", "v".repeat(len));
    let q = rpc.quiesce(std::slice::from_ref(&big)).await?.unwrap_err();
    let req = volumes(vec![block_volume(
        &big,
        Path::new("/dev/null"),
        false,
        false,
    )]);
    let i = rpc.init(req).await?.unwrap_err();
    for (rpc_name, err) in [("Quiesce", q), ("Init", i)] {
        assert_eq!(
            err.code(),
            Code::ResourceExhausted,
            "{case}: {rpc_name} of {len} bytes: {err:?}"
        );
    }
    assert_unfrozen(rpc, case).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_messages_get_resource_exhausted() -> anyhow::Result<()> {
    let s = Scratch::new()?;
    let a = LoopFs::new(&s, "a", FsType::Ext4, 32)?;
    let _guard = ThawGuard::new(&[a.mountpoint()]);
    for (limit, arg) in [(1usize << 20, None), (65_536, Some("65536"))] {
        let agent = Agent::builder(&s)
            .args(
                arg.map(|v| ["--max-message-bytes", v])
                    .into_iter()
                    .flatten(),
            )
            .start()
            .await?;
        let mut rpc = agent.rpc().await?;
        let case = format!("limit {limit}");
        assert_oversize_refused(&mut rpc, limit + 1, &case).await?;
        assert_oversize_refused(&mut rpc, 2 * limit, &case).await?;
        // Just under the limit is not refused for its size but for what it says, and the
        // answer reaches the client: the status message travels in an HTTP/2 header, so an
        // agent that echoes the whole (near 1 MiB) path there breaks the connection
        // (hyper: GOAWAY too_many_continuations) instead of answering.
        let near = format!("{}/{}", a.mp(), "y".repeat(limit - 4096));
        let err = rpc.quiesce(&[near]).await?.unwrap_err();
        let shown: String = format!("{err:?}").chars().take(600).collect();
        assert_eq!(err.code(), Code::InvalidArgument, "{case}: {shown}");
        assert!(
            err.message().len() <= 4096,
            "{case}: a {} byte status message echoes the request; keep echoed values short",
            err.message().len()
        );
        // The same connection keeps working.
        assert!(rpc.ping().await?.is_ok());
        assert_eq!(rpc.quiesce(&[a.mp()]).await??.frozen_count, 1);
        assert_eq!(rpc.thaw().await??.thawed_count, 1);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Init: volumes (in the test's mount namespace, below the scratch directory)
// ---------------------------------------------------------------------------------------

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_rejects_bad_volumes_and_changes_nothing() -> anyhow::Result<()> {
    let s = Scratch::new()?;
    let dev = LoopDev::create(&s.join("disk.img"), 64)?;
    let blank = LoopDev::create(&s.join("blank.img"), 16)?;
    std::fs::write(s.join("file"), b"not a device")?;
    let agent = Agent::start(&s, &[]).await?;
    let mut rpc = agent.rpc().await?;
    let sp = |rel: &str| s.join(rel).display().to_string();
    let vol = sp("vol");
    let good = block_volume(&vol, dev.device(), true, false);
    let with_device = |d: &str| block_volume(&vol, Path::new(d), true, false);
    let mut unsupported = good.clone();
    if let Some(Source::BlockDevice(bd)) = unsupported.source.as_mut() {
        bd.filesystem = 7;
    }
    let mut no_source = good.clone();
    no_source.source = None;
    let with_mp = |mp: &str| block_volume(mp, dev.device(), true, false);
    let devs = dev.device().display().to_string();
    let cases: Vec<(&str, GuestInitRequest, String)> = vec![
        (
            "relative mount_point",
            volumes(vec![with_mp("vol")]),
            "is not an absolute path".into(),
        ),
        (
            "empty mount_point",
            volumes(vec![with_mp("")]),
            "mount_point is empty".into(),
        ),
        (
            "'..' in mount_point",
            volumes(vec![with_mp(&format!("{}/x/../vol", s.path().display()))]),
            "'..'".into(),
        ),
        (
            "mount over /",
            volumes(vec![with_mp("/")]),
            "root directory".into(),
        ),
        (
            "mount_point is a file",
            volumes(vec![with_mp(&sp("file"))]),
            "not a directory".into(),
        ),
        (
            "NUL in mount_point",
            volumes(vec![with_mp(&format!("{vol}\0x"))]),
            "NUL".into(),
        ),
        (
            "relative device",
            volumes(vec![with_device("dev/loop0")]),
            "is not an absolute path".into(),
        ),
        (
            "empty device",
            volumes(vec![with_device("")]),
            "device is empty".into(),
        ),
        (
            "device is a regular file",
            volumes(vec![with_device(&sp("file"))]),
            "a regular file, not a block device".into(),
        ),
        (
            "device is a char device",
            volumes(vec![with_device("/dev/null")]),
            "a character device, not a block device".into(),
        ),
        (
            "device is a directory",
            volumes(vec![with_device(&sp(""))]),
            "a directory, not a block device".into(),
        ),
        (
            "device missing",
            volumes(vec![with_device(&sp("nodev"))]),
            "does not exist".into(),
        ),
        (
            "unsupported filesystem",
            volumes(vec![unsupported]),
            "unsupported filesystem".into(),
        ),
        (
            "no source",
            volumes(vec![no_source]),
            "has no source".into(),
        ),
        (
            "duplicate mount_point",
            volumes(vec![
                good.clone(),
                block_volume(&format!("{vol}/"), blank.device(), true, false),
            ]),
            "both use mount_point".into(),
        ),
        (
            "duplicate device",
            volumes(vec![
                good.clone(),
                block_volume(&sp("vol2"), dev.device(), true, false),
            ]),
            format!("both use block device {devs:?}"),
        ),
        (
            "empty virtiofs tag",
            volumes(vec![virtiofs(&sp("vfs"), "")]),
            "tag is empty".into(),
        ),
        // Valid in form, fails while being applied: the first volume (formatted and mounted)
        // must be rolled back when the second cannot be mounted.
        (
            "second volume has no filesystem",
            volumes(vec![
                good.clone(),
                block_volume(&sp("vol2"), blank.device(), false, false),
            ]),
            "volume 1".into(),
        ),
        (
            "unknown virtiofs tag",
            volumes(vec![good.clone(), virtiofs(&sp("vfs"), "no-such-tag")]),
            "volume 1".into(),
        ),
    ];
    let roots = [s.path()];
    let before = mounts_below(agent.pid(), &roots)?;
    assert!(before.is_empty(), "{before:?}");
    for (case, req, fragment) in cases {
        let resp = rpc.init(req).await??;
        let reason = match init_outcome(&resp) {
            Ok(()) => panic!("{case}: Init succeeded"),
            Err(r) => r,
        };
        assert!(
            reason.contains(fragment.as_str()),
            "{case}: reason {reason:?} lacks {fragment:?}"
        );
        assert_eq!(
            mounts_below(agent.pid(), &roots)?,
            before,
            "{case}: mounts changed ({reason})"
        );
        let leftover = mountinfo::read()?
            .into_iter()
            .filter(|m| {
                Path::new(&m.source) == dev.device() || Path::new(&m.source) == blank.device()
            })
            .map(|m| m.mount_point)
            .collect::<Vec<_>>();
        assert!(
            leftover.is_empty(),
            "{case}: our devices are mounted at {leftover:?}"
        );
        assert_unfrozen(&mut rpc, case).await?;
        println!("{case}: {reason}");
    }

    // After all that, a valid Init is still accepted (refused requests are not remembered).
    let resp = rpc.init(volumes(vec![good.clone()])).await??;
    assert_eq!(init_outcome(&resp), Ok(()));
    let m = mountinfo::at(Path::new(&vol))?.expect("the volume is mounted");
    assert_eq!(m.fstype, "ext4");
    assert_eq!(Path::new(&m.source), dev.device());
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Init: network (agent inside a network namespace the test owns)
// ---------------------------------------------------------------------------------------

const IF: &str = "eth0";

/// (case, interface, ip, gateway, fragment the reason must contain).
type NetCase<'a> = (&'a str, &'a str, Option<&'a str>, Option<&'a str>, &'a str);

/// Everything NetworkInit could change in the namespace.
fn net_state(ns: &NetNs) -> anyhow::Result<String> {
    let mut out = String::new();
    for args in [
        &["-j", "link", "show", "dev", IF][..],
        &["-j", "addr", "show", "dev", IF],
        &["-j", "-4", "route", "show", "table", "all"],
        &["-j", "-6", "route", "show", "table", "all"],
    ] {
        out.push_str(&ns.ip(args)?);
        out.push('\n');
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_rejects_bad_network_settings_and_changes_nothing() -> anyhow::Result<()> {
    let s = Scratch::new()?;
    let ns = NetNs::new()?;
    ns.add_veth(IF, "eth0p")?;
    let agent = Agent::builder(&s).netns(ns.name()).start().await?;
    let mut rpc = agent.rpc().await?;
    let before = net_state(&ns)?;

    let long_if = "e".repeat(200);
    let v4 = "10.77.0.2/24";
    let v6 = "fd00:77::2/64";
    #[rustfmt::skip]
    let cases: Vec<NetCase> = vec![
        ("empty interface", "", Some(v4), None, "network.interface is empty"),
        ("interface 16 bytes", "abcdefghijklmnop", Some(v4), None, "at most 15"),
        ("interface 200 bytes", &long_if, None, None, "at most 15"),
        ("interface with /", "eth0/1", Some(v4), None, "'/'"),
        ("interface with :", "eth0:1", Some(v4), None, "':'"),
        ("interface with space", "eth 0", Some(v4), None, "whitespace"),
        ("interface ..", "..", Some(v4), None, "reserved"),
        ("unknown interface", "nosuch0", Some(v4), None, "nosuch0"),
        ("prefix 33", IF, Some("10.0.0.1/33"), None, "\"10.0.0.1/33\""),
        ("prefix 129", IF, Some("::1/129"), None, "\"::1/129\""),
        ("three octets", IF, Some("1.2.3/24"), None, "\"1.2.3/24\""),
        ("empty ip", IF, Some(""), None, "network.ip \"\""),
        ("network address", IF, Some("10.0.0.0/24"), None, "network address"),
        ("broadcast address", IF, Some("10.0.0.255/24"), None, "broadcast address"),
        ("v6 subnet address", IF, Some("fd00:77::/64"), None, "network address"),
        ("no prefix", IF, Some("10.0.0.1"), None, "no prefix length"),
        ("multicast", IF, Some("224.0.0.1/24"), None, "multicast"),
        ("unspecified", IF, Some("0.0.0.0/0"), None, "unspecified"),
        ("two prefixes", IF, Some("10.0.0.1/24/8"), None, "CIDR"),
        ("negative prefix", IF, Some("10.0.0.1/-1"), None, "CIDR"),
        ("octet 256", IF, Some("10.0.0.256/24"), None, "CIDR"),
        ("leading space", IF, Some(" 10.0.0.1/24"), None, "CIDR"),
        ("zone id", IF, Some("fe80::1%eth0/64"), None, "CIDR"),
        ("gateway outside subnet", IF, Some(v4), Some("10.77.1.1"), "outside the subnet 10.77.0.0/24"),
        ("v6 gateway outside subnet", IF, Some(v6), Some("fd00:78::1"), "outside the subnet"),
        ("gateway other family", IF, Some(v4), Some("fd00:77::1"), "not the same IP version"),
        ("gateway is own address", IF, Some(v4), Some("10.77.0.2"), "own address"),
        ("gateway is network address", IF, Some(v4), Some("10.77.0.0"), "network address"),
        ("gateway is broadcast", IF, Some(v4), Some("10.77.0.255"), "broadcast address"),
        ("gateway not an address", IF, Some(v4), Some("10.77.0.300"), "not an IP address"),
        ("empty gateway", IF, Some(v4), Some(""), "not an IP address"),
        ("gateway without ip", IF, None, Some("10.77.0.1"), "network.ip is not"),
    ];
    for (case, ifname, ip, gw, fragment) in cases {
        let resp = rpc.init(network(ifname, ip, gw)).await??;
        let reason = match init_outcome(&resp) {
            Ok(()) => panic!("{case}: Init({ifname:?}, {ip:?}, {gw:?}) succeeded"),
            Err(r) => r,
        };
        assert!(
            reason.contains(fragment),
            "{case}: reason {reason:?} lacks {fragment:?}"
        );
        assert_eq!(
            net_state(&ns)?,
            before,
            "{case}: the namespace changed ({reason})"
        );
        assert_unfrozen(&mut rpc, case).await?;
        println!("{case}: {reason}");
    }

    let resp = rpc.init(network(IF, Some(v4), Some("10.77.0.1"))).await??;
    assert_eq!(
        init_outcome(&resp),
        Ok(()),
        "a valid Init after the refused ones"
    );
    assert_eq!(ns.ipv4_addrs(IF)?, vec![v4.to_string()]);
    assert_eq!(
        ns.default_route()?,
        Some(("10.77.0.1".to_string(), IF.to_string()))
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_while_frozen_is_refused_without_touching_anything() -> anyhow::Result<()> {
    let s = Scratch::new()?;
    let a = LoopFs::new(&s, "a", FsType::Ext4, 32)?;
    let _guard = ThawGuard::new(&[a.mountpoint()]);
    let dev = LoopDev::create(&s.join("disk.img"), 32)?;
    let agent = Agent::start(&s, &[]).await?;
    let mut rpc = agent.rpc().await?;
    assert_eq!(rpc.quiesce(&[a.mp()]).await??.frozen_count, 1);
    let vol = s.join("vol").display().to_string();
    let req = volumes(vec![block_volume(&vol, dev.device(), true, false)]);
    let err = rpc.init(req.clone()).await?.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains(&a.mp()),
        "names what is frozen: {err:?}"
    );
    assert!(mountinfo::at(Path::new(&vol))?.is_none());
    assert!(rpc.status().await??.frozen, "a refused Init must not thaw");
    assert_eq!(rpc.thaw().await??.thawed_count, 1);
    assert_eq!(
        init_outcome(&rpc.init(req).await??),
        Ok(()),
        "accepted after the thaw"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// guestctl against a broken hybrid-vsock VMM
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guestctl_fails_fast_on_a_broken_hybrid_vsock_handshake() -> anyhow::Result<()> {
    let s = Scratch::new()?;
    let long = vec![b'A'; 100_000];
    let reply = |b: &[u8]| VmmBehaviour::Reply(b.to_vec());
    let cases: Vec<(&str, VmmBehaviour, &str)> = vec![
        (
            "garbage line",
            reply(b"HELLO\n"),
            "\"HELLO\\n\" is not \"OK <port>\"; the VMM refused",
        ),
        (
            "refusal",
            reply(b"ERR no such port\n"),
            "refused the connection",
        ),
        ("OK without port", reply(b"OK\n"), "refused the connection"),
        ("non-numeric port", reply(b"OK abc\n"), "bad host port"),
        ("port overflow", reply(b"OK 99999999999\n"), "bad host port"),
        ("negative port", reply(b"OK -1\n"), "bad host port"),
        ("CRLF", reply(b"OK 5\r\n"), "bad host port"),
        ("lower case", reply(b"ok 5\n"), "refused"),
        ("empty line", reply(b"\n"), "refused"),
        ("binary", reply(b"\x00\xff\xfe\x01\n"), "refused"),
        ("endless line", reply(&long), "longer than 64 bytes"),
        (
            "no newline, then silence",
            reply(b"OK 5"),
            "no reply to CONNECT 2695 within 1s",
        ),
        (
            "silence",
            VmmBehaviour::Silent,
            "no reply to CONNECT 2695 within 1s",
        ),
        (
            "closed at once",
            VmmBehaviour::Close,
            "closed the connection before answering CONNECT 2695",
        ),
        (
            "partial reply then close",
            VmmBehaviour::ReplyAndClose(b"OK 1".to_vec()),
            "(received \"OK 1\")",
        ),
    ];
    for (i, (case, behaviour, fragment)) in cases.into_iter().enumerate() {
        let vmm = FakeVmm::start(&s.join(format!("vm{i}.sock")), behaviour)?;
        let uri = vmm.uri(2695);
        let t = Instant::now();
        let out = guestctl::run_with_timeout(
            &[
                "--connect",
                &uri,
                "--connect-timeout",
                "1",
                "--timeout",
                "2",
                "ping",
            ],
            Duration::from_secs(10),
        )
        .await?;
        let took = t.elapsed();
        assert_eq!(out.code, Some(3), "{case}: {out}");
        assert!(took < Duration::from_secs(8), "{case}: took {took:?}");
        let err = out.stderr.trim();
        assert_eq!(err.lines().count(), 1, "{case}: one line on stderr: {out}");
        assert!(err.starts_with("guestctl:"), "{case}: {out}");
        assert!(
            err.contains("hvsock://") && err.contains(fragment),
            "{case}: {err:?} lacks {fragment:?}"
        );
        assert!(out.stdout.is_empty(), "{case}: {out}");
        assert_eq!(vmm.requests(), vec!["CONNECT 2695\n".to_string()], "{case}");
        println!("{case}: exit 3 after {took:?}: {err}");
    }

    // No VMM at all, and a path that is not a socket.
    std::fs::write(s.join("not-a-socket"), b"")?;
    for (case, path) in [
        ("missing socket", s.join("nope.sock")),
        ("regular file", s.join("not-a-socket")),
    ] {
        let uri = format!("hvsock://{}:2695", path.display());
        let out = guestctl::run_with_timeout(
            &["--connect", &uri, "--connect-timeout", "1", "ping"],
            Duration::from_secs(10),
        )
        .await?;
        assert_eq!(out.code, Some(3), "{case}: {out}");
        assert!(out.stderr.contains("connecting to"), "{case}: {out}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guestctl_fails_fast_when_the_stream_after_the_handshake_is_not_grpc() -> anyhow::Result<()>
{
    let s = Scratch::new()?;
    let cases: Vec<(&str, VmmBehaviour)> = vec![
        (
            "OK then HTTP/1.1",
            VmmBehaviour::Reply(b"OK 1073741824\nHTTP/1.1 400 Bad Request\r\n\r\n".to_vec()),
        ),
        (
            "OK then close",
            VmmBehaviour::ReplyAndClose(b"OK 1073741824\n".to_vec()),
        ),
    ];
    let mut wrong = Vec::new();
    for (i, (case, behaviour)) in cases.into_iter().enumerate() {
        let vmm = FakeVmm::start(&s.join(format!("vm{i}.sock")), behaviour)?;
        let t = Instant::now();
        let out = guestctl::run_with_timeout(
            &[
                "--connect",
                &vmm.uri(2695),
                "--connect-timeout",
                "1",
                "--timeout",
                "2",
                "ping",
            ],
            Duration::from_secs(15),
        )
        .await?;
        let took = t.elapsed();
        let err = out.stderr.trim().to_string();
        println!("{case}: exit {:?} after {took:?}: {err}", out.code);
        // Not a hang, one line, and "could not connect" (3): no agent ever answered.
        assert!(took < Duration::from_secs(8), "{case}: took {took:?}");
        assert_eq!(err.lines().count(), 1, "{case}: {out}");
        assert!(err.starts_with("guestctl:"), "{case}: {out}");
        if out.code != Some(3) {
            wrong.push(format!("{case}: exit {:?}: {err}", out.code));
        }
    }
    assert!(
        wrong.is_empty(),
        "a peer that is not a gRPC server must give exit code 3 (could not connect):\n{}",
        wrong.join("\n")
    );

    // A peer that accepts the handshake and then says nothing: the call times out (4).
    let vmm = FakeVmm::start(
        &s.join("silent.sock"),
        VmmBehaviour::Reply(b"OK 1073741824\n".to_vec()),
    )?;
    let t = Instant::now();
    let out = guestctl::run_with_timeout(
        &[
            "--connect",
            &vmm.uri(2695),
            "--connect-timeout",
            "1",
            "--timeout",
            "2",
            "ping",
        ],
        Duration::from_secs(15),
    )
    .await?;
    assert!(matches!(out.code, Some(3) | Some(4)), "{out}");
    assert!(out.stderr.contains("timed out"), "{out}");
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "took {:?}",
        t.elapsed()
    );
    Ok(())
}
