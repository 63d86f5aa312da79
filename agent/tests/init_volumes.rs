//! Init's volume handling against real loop devices (needs root). Images and mount
//! points live in a fresh directory under /var/tmp, torn down by `Scratch` on drop.

mod init_support;

use std::path::{Path, PathBuf};

use guest_agent::init::{Ext4Tools, InitError, InitOptions, InitOutcome, Initializer};
use guest_proto::v1::{
    volume::Source, BlockDeviceSource, Filesystem, GuestInitRequest, VirtiofsSource, Volume,
};
use init_support::{mounts_at, not_root, run, Scratch};

fn block(mount_point: &Path, device: &str, format: bool, resize: bool) -> Volume {
    Volume {
        mount_point: mount_point.to_str().unwrap().into(),
        source: Some(Source::BlockDevice(BlockDeviceSource {
            device: device.into(),
            filesystem: Filesystem::Unspecified as i32,
            need_format: format,
            need_resize: resize,
        })),
        container_id: String::new(),
    }
}

fn request(volumes: Vec<Volume>) -> GuestInitRequest {
    GuestInitRequest {
        volumes,
        network: None,
    }
}

fn fs_size_bytes(path: &Path) -> u64 {
    let st = nix::sys::statvfs::statvfs(path).unwrap();
    st.blocks() as u64 * st.fragment_size() as u64
}

fn initializer() -> Initializer {
    Initializer::new(InitOptions::default())
}

#[tokio::test]
async fn formats_mounts_then_grows_ext4() {
    if not_root() {
        return;
    }
    let mut scratch = Scratch::new("vol");
    let (image, dev) = scratch.loop_device("data.img", 64);
    let mp = scratch.path("mnt/data");

    let req = request(vec![block(&mp, &dev, true, false)]);
    let init = initializer();
    assert_eq!(init.apply(&req).await.unwrap(), InitOutcome::Applied);
    let m = mounts_at(&mp);
    assert_eq!(m.len(), 1, "{m:?}");
    assert_eq!(m[0].fstype, "ext4");
    assert_eq!(m[0].source, dev);
    assert!(m[0].options.starts_with("rw"), "{m:?}");
    std::fs::write(mp.join("hello.txt"), b"kept across resize").unwrap();
    let small = fs_size_bytes(&mp);

    // Same request again: success, nothing done (still exactly one mount, file intact).
    assert_eq!(init.apply(&req).await.unwrap(), InitOutcome::AlreadyApplied);
    assert_eq!(mounts_at(&mp).len(), 1);
    // A different request: refused.
    let other = request(vec![block(&scratch.path("other"), &dev, false, false)]);
    let err = init.apply(&other).await.unwrap_err();
    assert!(matches!(err, InitError::AlreadyInitialised), "{err}");
    assert!(!scratch.path("other").exists());

    // "Reboot": unmount, grow the disk, initialise again with need_resize.
    scratch.unmount_all();
    scratch.grow(&image, &dev, 192);
    let mp2 = scratch.path("mnt/data2");
    let fresh = initializer();
    let req2 = request(vec![block(&mp2, &dev, false, true)]);
    // The resize is offline (e2fsck + resize2fs before mounting), so it works without
    // CAP_SYS_RESOURCE too.
    assert_eq!(fresh.apply(&req2).await.unwrap(), InitOutcome::Applied);
    assert_eq!(mounts_at(&mp2).len(), 1);
    assert_eq!(
        std::fs::read(mp2.join("hello.txt")).unwrap(),
        b"kept across resize",
        "need_resize must not reformat"
    );
    let big = fs_size_bytes(&mp2);
    assert!(
        big > small + (100 << 20),
        "filesystem did not grow: {small} -> {big}"
    );
}

#[tokio::test]
async fn failure_on_second_volume_unmounts_first_and_removes_created_dirs() {
    if not_root() {
        return;
    }
    let mut scratch = Scratch::new("vol");
    let (_, good) = scratch.loop_device("good.img", 32);
    let (_, blank) = scratch.loop_device("blank.img", 32);
    let first = scratch.path("a/b/first");
    let second = scratch.path("a/second");

    // The second device has no filesystem and need_format is not set: mount fails
    // after the first volume was formatted and mounted.
    let init = initializer();
    let req = request(vec![
        block(&first, &good, true, false),
        block(&second, &blank, false, false),
    ]);
    let err = init.apply(&req).await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, InitError::Volume { index: 1, .. }), "{msg}");
    assert!(msg.contains(&blank) && msg.contains("need_format"), "{msg}");
    assert!(mounts_at(&first).is_empty(), "first volume still mounted");
    assert!(
        !scratch.path("a").exists(),
        "created directories left behind"
    );
    assert!(!init.is_initialised().await);

    // A failed Init is not remembered: the corrected request is applied.
    let fixed = request(vec![
        block(&first, &good, false, false),
        block(&second, &blank, true, false),
    ]);
    assert_eq!(init.apply(&fixed).await.unwrap(), InitOutcome::Applied);
    assert_eq!(mounts_at(&first).len(), 1);
    assert_eq!(mounts_at(&second).len(), 1);
}

#[tokio::test]
async fn missing_second_device_touches_nothing() {
    if not_root() {
        return;
    }
    let mut scratch = Scratch::new("vol");
    let (_, good) = scratch.loop_device("good.img", 32);
    let first = scratch.path("m/first");
    let missing = scratch.path("no-such-device");
    let req = request(vec![
        block(&first, &good, true, false),
        block(
            &scratch.path("m/second"),
            missing.to_str().unwrap(),
            false,
            false,
        ),
    ]);
    let err = initializer().apply(&req).await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, InitError::Invalid(_)), "{msg}");
    assert!(
        msg.contains(missing.to_str().unwrap()) && msg.contains("does not exist"),
        "{msg}"
    );
    assert!(mounts_at(&first).is_empty());
    assert!(!scratch.path("m").exists());
    // Validation came first, so the first device was not formatted either.
    let blkid = std::process::Command::new("blkid")
        .arg(&good)
        .output()
        .unwrap();
    assert!(blkid.stdout.is_empty(), "device was formatted: {blkid:?}");
}

#[tokio::test]
async fn regular_file_as_device_is_rejected() {
    if not_root() {
        return;
    }
    let mut scratch = Scratch::new("vol");
    let (image, _) = scratch.loop_device("img", 16);
    let mp = scratch.path("mnt");
    let err = initializer()
        .apply(&request(vec![block(
            &mp,
            image.to_str().unwrap(),
            true,
            false,
        )]))
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("regular file") && msg.contains(image.to_str().unwrap()),
        "{msg}"
    );
    assert!(!mp.exists());
}

#[tokio::test]
async fn failed_resize_leaves_nothing_mounted_or_created() {
    if not_root() {
        return;
    }
    let mut scratch = Scratch::new("vol");
    let (_, dev) = scratch.loop_device("img", 32);
    run("mkfs.ext4", &["-F", "-q", &dev]);
    let mp = scratch.path("mnt");
    let init = Initializer::new(InitOptions {
        ext4_tools: Ext4Tools {
            resize2fs: PathBuf::from("false"),
            ..Ext4Tools::default()
        },
    });
    let err = init
        .apply(&request(vec![block(&mp, &dev, false, true)]))
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("false") && msg.contains(&dev), "{msg}");
    assert!(mounts_at(&mp).is_empty(), "mounted after failed resize");
    assert!(!mp.exists());
}

#[tokio::test]
async fn mkfs_stderr_is_reported() {
    if not_root() {
        return;
    }
    let mut scratch = Scratch::new("vol");
    let (_, dev) = scratch.loop_device("img", 32);
    let fake = scratch.path("fake-mkfs");
    std::fs::write(
        &fake,
        "#!/bin/sh\necho \"mkfs: device $3 is on fire\" >&2\nexit 1\n",
    )
    .unwrap();
    run("chmod", &["+x", fake.to_str().unwrap()]);
    let mp = scratch.path("mnt");
    let init = Initializer::new(InitOptions {
        ext4_tools: Ext4Tools {
            mkfs: fake,
            ..Ext4Tools::default()
        },
    });
    let err = init
        .apply(&request(vec![block(&mp, &dev, true, false)]))
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(&format!("device {dev} is on fire")), "{msg}");
    assert!(!mp.exists());
}

/// No virtiofs device with this tag exists on the test machine (nor, usually, virtiofs
/// support): the mount fails with the tag in the message, and the block volume
/// mounted before it is rolled back.
#[tokio::test]
async fn failing_virtiofs_mount_rolls_back_earlier_volumes() {
    if not_root() {
        return;
    }
    let mut scratch = Scratch::new("vol");
    let (_, dev) = scratch.loop_device("img", 32);
    let first = scratch.path("mnt/block");
    let share = scratch.path("mnt/share");
    let req = request(vec![
        block(&first, &dev, true, false),
        Volume {
            mount_point: share.to_str().unwrap().into(),
            source: Some(Source::Virtiofs(VirtiofsSource {
                tag: "gainit-no-such-tag".into(),
                read_only: true,
            })),
            container_id: String::new(),
        },
    ]);
    let err = initializer().apply(&req).await.unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, InitError::Volume { index: 1, .. }), "{msg}");
    assert!(msg.contains("virtiofs tag \"gainit-no-such-tag\""), "{msg}");
    assert!(msg.contains(share.to_str().unwrap()), "{msg}");
    assert!(mounts_at(&first).is_empty());
    assert!(!scratch.path("mnt").exists());
}
