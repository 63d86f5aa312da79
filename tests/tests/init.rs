//! Init with real loop block devices: format and mount at a new mount point, grow after the
//! disk grew, errors a person can act on that leave nothing half-done, and the
//! accepted-once rule (identical repeat: success; different: error).

use std::path::Path;

use system_tests::mountinfo;
use system_tests::requests::{block_volume, init_outcome, volumes};
use system_tests::{guestctl, Agent, LoopDev, Mount, Scratch};

/// Size of the filesystem mounted at `mp`, in MiB.
fn fs_size_mib(mp: &Path) -> anyhow::Result<u64> {
    let st = nix::sys::statvfs::statvfs(mp)?;
    Ok(st.blocks() * st.fragment_size() / (1 << 20))
}

fn assert_not_mounted(mp: &Path) -> anyhow::Result<()> {
    let m = mountinfo::at(mp)?;
    assert!(m.is_none(), "{} is mounted: {m:?}", mp.display());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn formats_and_mounts_a_block_device_once() -> anyhow::Result<()> {
    let s = Scratch::new()?;
    let disk = LoopDev::create(&s.join("disk.img"), 64)?;
    let agent = Agent::start(&s, &[]).await?;
    let mut rpc = agent.rpc().await?;
    // A mount point that does not exist yet, two levels deep.
    let mp = s.join("volumes/data");
    let mps = mp.display().to_string();
    let req = volumes(vec![block_volume(&mps, disk.device(), true, false)]);

    let r = rpc.init(req.clone()).await??;
    assert_eq!(init_outcome(&r), Ok(()));
    let m = mountinfo::at(&mp)?.expect("mounted");
    assert_eq!(m.fstype, "ext4", "{m:?}");
    assert_eq!(Path::new(&m.source), disk.device(), "{m:?}");
    assert!(m.is_rw(), "{m:?}");
    std::fs::write(mp.join("hello"), b"written after Init")?;

    // Identical request: success, nothing new mounted, data kept.
    let r = rpc.init(req).await??;
    assert_eq!(init_outcome(&r), Ok(()), "an identical repeat succeeds");
    assert_eq!(
        mountinfo::read()?
            .iter()
            .filter(|m| m.mount_point == mp)
            .count(),
        1
    );
    assert_eq!(std::fs::read(mp.join("hello"))?, b"written after Init");

    // A different request: GuestInitError, and it changes nothing.
    let other = s.join("volumes/other");
    let r = rpc
        .init(volumes(vec![block_volume(
            &other.display().to_string(),
            disk.device(),
            true,
            false,
        )]))
        .await??;
    let reason = init_outcome(&r).expect_err("a second, different Init is refused");
    assert!(!reason.is_empty());
    assert_not_mounted(&other)?;
    assert_eq!(
        std::fs::read(mp.join("hello"))?,
        b"written after Init",
        "not reformatted"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn need_resize_grows_the_filesystem_to_the_grown_disk() -> anyhow::Result<()> {
    let s = Scratch::new()?;
    let disk = LoopDev::create(&s.join("disk.img"), 64)?;
    system_tests::cmd::run_ok(
        "mkfs.ext4",
        &["-q", "-F", &disk.device().display().to_string()],
    )?;
    {
        let m = Mount::device(disk.device(), &s.join("prep"))?;
        std::fs::write(m.path().join("marker"), b"before resize")?;
    }
    disk.grow(192)?;
    assert_eq!(disk.size_bytes()?, 192 << 20);

    let agent = Agent::start(&s, &[]).await?;
    let mut rpc = agent.rpc().await?;
    let mp = s.join("grown");
    let r = rpc
        .init(volumes(vec![block_volume(
            &mp.display().to_string(),
            disk.device(),
            false,
            true,
        )]))
        .await??;
    // The agent grows the filesystem offline (e2fsck + resize2fs before mounting), which
    // needs no CAP_SYS_RESOURCE, so this must work in sandboxes too.
    assert_eq!(init_outcome(&r), Ok(()));
    let size = fs_size_mib(&mp)?;
    println!("filesystem size after need_resize: {size} MiB (disk 192 MiB, was 64)");
    assert!(
        size > 150,
        "filesystem is {size} MiB after need_resize on a 192 MiB disk"
    );
    assert_eq!(
        std::fs::read(mp.join("marker"))?,
        b"before resize",
        "resize keeps the data"
    );
    Ok(())
}

/// Starts a fresh agent, sends `req`, expects a GuestInitError whose reason contains
/// `mention`, and checks that nothing got mounted at `mount_points`.
async fn expect_init_error(
    s: &Scratch,
    req: guest_proto::v1::GuestInitRequest,
    mention: &str,
    mount_points: &[&Path],
) -> anyhow::Result<String> {
    let agent = Agent::start(s, &[]).await?;
    let mut rpc = agent.rpc().await?;
    let r = rpc.init(req.clone()).await??;
    let reason = init_outcome(&r).expect_err(&format!("Init must fail: {req:?}"));
    println!("Init error: {reason}");
    assert!(
        reason.contains(mention),
        "the reason should name {mention:?}: {reason}"
    );
    for mp in mount_points {
        assert_not_mounted(mp)?;
    }
    Ok(reason)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_volumes_are_guest_init_errors_that_change_nothing() -> anyhow::Result<()> {
    let s = Scratch::new()?;
    let disk = LoopDev::create(&s.join("disk.img"), 32)?;
    let mp = s.join("vol");
    let mps = mp.display().to_string();

    // A relative mount point.
    expect_init_error(
        &s,
        volumes(vec![block_volume(
            "relative/vol",
            disk.device(),
            true,
            false,
        )]),
        "relative/vol",
        &[],
    )
    .await?;
    // A device that does not exist.
    let missing = Path::new("/dev/gatest-no-such-device");
    expect_init_error(
        &s,
        volumes(vec![block_volume(&mps, missing, true, false)]),
        "/dev/gatest-no-such-device",
        &[&mp],
    )
    .await?;
    // A regular file is not a block device.
    let file = s.join("plain-file.img");
    std::fs::write(&file, vec![0u8; 1 << 20])?;
    expect_init_error(
        &s,
        volumes(vec![block_volume(&mps, &file, true, false)]),
        "plain-file.img",
        &[&mp],
    )
    .await?;
    assert_eq!(
        std::fs::read(&file)?,
        vec![0u8; 1 << 20],
        "the regular file was not formatted"
    );
    // A good volume followed by a bad one: the good one must not stay mounted.
    let mp2 = s.join("vol2");
    let req = volumes(vec![
        block_volume(&mps, disk.device(), true, false),
        block_volume(&mp2.display().to_string(), missing, true, false),
    ]);
    expect_init_error(&s, req, "/dev/gatest-no-such-device", &[&mp, &mp2]).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guestctl_init_volume_formats_and_mounts() -> anyhow::Result<()> {
    let s = Scratch::new()?;
    let disk = LoopDev::create(&s.join("disk.img"), 32)?;
    let agent = Agent::start(&s, &[]).await?;
    let mp = s.join("ctl-vol");
    let spec = format!("{}={},format", mp.display(), disk.device().display());
    let c = guestctl::run(&[
        "--connect",
        &agent.uri(),
        "--json",
        "init",
        "--volume",
        &spec,
    ])
    .await?;
    assert_eq!(c.code, Some(0), "{c}");
    assert!(c.json()?.is_object(), "{c}");
    let m = mountinfo::at(&mp)?.expect("mounted");
    assert_eq!(m.fstype, "ext4");
    assert_eq!(Path::new(&m.source), disk.device());
    Ok(())
}
