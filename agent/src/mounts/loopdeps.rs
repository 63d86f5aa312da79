//! Loop dependencies: which filesystem holds the image file of a loop-mounted filesystem.
//!
//! If filesystem A lives in an image file on filesystem B, A must be frozen before B (its
//! freeze flushes through the loop device into B, which would block on a frozen B) and
//! thawed after B.
//!
//! How the real resolver finds B, and why this way:
//! 1. A's block device: its mountinfo device number, or, for anonymous numbers (btrfs), the
//!    `st_rdev` of the mount source if that is a block device node.
//! 2. The loop device under it: `/sys/dev/block/MAJ:MIN/loop/backing_file` exists only on a
//!    bound loop device. A partition of a loop device is looked up on its parent disk, and a
//!    device-mapper/md device (e.g. dm-crypt over a loop device) through its `slaves/`.
//!    sysfs needs nothing but the device number; `LOOP_GET_STATUS64` would need a device
//!    node (which may be missing or named differently in a guest) and returns the image's
//!    `st_dev`, which on btrfs matches no mount.
//! 3. The image path (a trailing " (deleted)" is dropped) is statx'ed for its mount id, which
//!    names the exact mountinfo line and so B's superblock device; `st_dev` is the fallback on
//!    kernels without `STATX_MNT_ID`.
//!
//! Limits: the path is resolved in the agent's mount namespace; an image that was deleted
//! (still open by the loop driver) is found only if a file with its path still exists.

use std::collections::HashMap;
use std::fs;
use std::hash::BuildHasher;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::statx::file_ids;
use super::DevId;
use super::Mount;

/// Finds the filesystem holding a mount's loop image; a seam so planning is testable
/// without loop devices.
pub trait BackingResolver {
    /// Device number (as in mountinfo) of the filesystem that holds the image file behind
    /// `m`'s block device, when that is a loop device; `None` when it is not or is unknown.
    fn backing_dev(&self, m: &Mount) -> Option<DevId>;
}

/// A fixed table from a mount's device to its backing filesystem's device (fakes, or a
/// resolution done earlier).
impl<S: BuildHasher> BackingResolver for HashMap<DevId, DevId, S> {
    fn backing_dev(&self, m: &Mount) -> Option<DevId> {
        self.get(&m.dev).copied()
    }
}

/// Resolves loop backing files through sysfs and statx (see the module docs).
#[derive(Debug, Clone)]
pub struct SysBackingResolver {
    sys_dev_block: PathBuf,
    dev_of_mount: HashMap<u32, DevId>,
}

/// How many device-mapper/md layers are followed down to a loop device.
const MAX_STACK_DEPTH: usize = 8;

impl SysBackingResolver {
    /// A resolver for the mount table `mounts` (the one being planned), using `/sys`.
    pub fn new(mounts: &[Mount]) -> Self {
        Self::with_sys_dev_block(mounts, "/sys/dev/block")
    }

    /// Like [`new`](Self::new) with another `/sys/dev/block` directory (for tests).
    pub fn with_sys_dev_block(mounts: &[Mount], sys_dev_block: impl Into<PathBuf>) -> Self {
        Self {
            sys_dev_block: sys_dev_block.into(),
            dev_of_mount: mounts.iter().map(|m| (m.mount_id, m.dev)).collect(),
        }
    }

    /// The block device a mount's filesystem sits on, if it has one.
    fn block_dev(&self, m: &Mount) -> Option<DevId> {
        if !m.dev.is_anonymous() {
            return Some(m.dev);
        }
        if !m.source.starts_with('/') {
            return None;
        }
        let meta = fs::metadata(&m.source).ok()?;
        meta.file_type()
            .is_block_device()
            .then(|| DevId::from_dev_t(meta.rdev()))
    }

    /// The image path of the loop device at or under `dev`.
    fn loop_image(&self, dev: DevId, depth: usize) -> Option<PathBuf> {
        let dir = self.sys_dev_block.join(dev.to_string());
        if let Some(p) = read_backing_file(&dir) {
            return Some(p);
        }
        if dir.join("partition").exists() {
            let disk = fs::canonicalize(&dir).ok()?.parent()?.to_path_buf();
            return read_backing_file(&disk);
        }
        if depth >= MAX_STACK_DEPTH {
            return None;
        }
        let mut slaves: Vec<PathBuf> = fs::read_dir(dir.join("slaves"))
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        slaves.sort();
        slaves.iter().find_map(|s| {
            let dev = fs::read_to_string(s.join("dev"))
                .ok()?
                .trim()
                .parse()
                .ok()?;
            self.loop_image(dev, depth + 1)
        })
    }

    /// The mountinfo device of the filesystem holding `path`.
    fn dev_of_file(&self, path: &Path) -> Option<DevId> {
        let ids = file_ids(path).ok()?;
        let by_mount = ids
            .mount_id
            .and_then(|id| self.dev_of_mount.get(&id).copied());
        Some(by_mount.unwrap_or(ids.dev))
    }
}

impl BackingResolver for SysBackingResolver {
    fn backing_dev(&self, m: &Mount) -> Option<DevId> {
        let image = self.loop_image(self.block_dev(m)?, 0)?;
        self.dev_of_file(&image)
    }
}

/// Reads `<dir>/loop/backing_file`, present only while a loop device is bound.
fn read_backing_file(dir: &Path) -> Option<PathBuf> {
    let raw = fs::read(dir.join("loop/backing_file")).ok()?;
    let raw = raw.strip_suffix(b"\n").unwrap_or(&raw);
    let raw = raw.strip_suffix(b" (deleted)").unwrap_or(raw);
    if raw.is_empty() {
        return None;
    }
    Some(PathBuf::from(std::ffi::OsStr::from_bytes(raw)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mounts::test_utils::{running_as_root, LoopFs, Scratch};
    use crate::mounts::{parse_mountinfo, read_mountinfo};
    use std::os::unix::fs::symlink;

    fn mount(dev: &str, source: &str) -> Mount {
        let line = format!("90 1 {dev} / /x rw - ext4 {source} rw");
        parse_mountinfo(line.as_bytes()).unwrap().remove(0)
    }

    /// The mountinfo device of the filesystem holding `path`, found without statx: the
    /// mount with the longest mount point above the path (no over-mounts in the test dirs).
    fn holder_by_prefix(path: &Path) -> DevId {
        let path = fs::canonicalize(path).unwrap();
        read_mountinfo()
            .unwrap()
            .into_iter()
            .filter(|m| path.starts_with(&m.mount_point))
            .max_by_key(|m| m.mount_point.components().count())
            .unwrap()
            .dev
    }

    /// A fake /sys with loop0 bound to `image`, loop9p1 a partition of loop9 (bound to
    /// `image`), dm-0 stacked on loop5 (bound to `image`), and an unbound vda.
    fn fake_sys(root: &Path, image: &Path, deleted: bool) -> PathBuf {
        let suffix = if deleted { " (deleted)" } else { "" };
        let backing = format!("{}{suffix}\n", image.display());
        let devices = root.join("devices");
        for (disk, part) in [("loop0", None), ("loop9", Some("loop9p1")), ("loop5", None)] {
            fs::create_dir_all(devices.join(disk).join("loop")).unwrap();
            fs::write(devices.join(disk).join("loop/backing_file"), &backing).unwrap();
            if let Some(p) = part {
                fs::create_dir_all(devices.join(disk).join(p)).unwrap();
                fs::write(devices.join(disk).join(p).join("partition"), "1\n").unwrap();
            }
        }
        fs::write(devices.join("loop5/dev"), "7:5\n").unwrap();
        fs::create_dir_all(devices.join("dm-0/slaves")).unwrap();
        symlink("../../loop5", devices.join("dm-0/slaves/loop5")).unwrap();
        fs::create_dir_all(devices.join("vda")).unwrap();
        let block = root.join("dev/block");
        fs::create_dir_all(&block).unwrap();
        for (dev, target) in [
            ("7:0", "loop0"),
            ("259:0", "loop9/loop9p1"),
            ("7:5", "loop5"),
            ("253:0", "dm-0"),
            ("254:0", "vda"),
        ] {
            symlink(format!("../../devices/{target}"), block.join(dev)).unwrap();
        }
        block
    }

    #[test]
    fn resolves_loop_partition_and_stacked_devices_through_sysfs() {
        let tmp = tempfile::tempdir().unwrap();
        let image = tmp.path().join("disk.img");
        fs::write(&image, b"").unwrap();
        let block = fake_sys(&tmp.path().join("sys"), &image, false);
        let r = SysBackingResolver::with_sys_dev_block(&read_mountinfo().unwrap(), block);
        let want = Some(holder_by_prefix(&image));
        assert_eq!(r.backing_dev(&mount("7:0", "/dev/loop0")), want);
        assert_eq!(r.backing_dev(&mount("259:0", "/dev/loop9p1")), want);
        assert_eq!(r.backing_dev(&mount("253:0", "/dev/mapper/crypt")), want);
        assert_eq!(r.backing_dev(&mount("254:0", "/dev/vda")), None);
        assert_eq!(
            r.backing_dev(&mount("8:0", "/dev/sda")),
            None,
            "not in sysfs"
        );
    }

    #[test]
    fn deleted_suffix_is_dropped_and_missing_images_resolve_to_none() {
        let tmp = tempfile::tempdir().unwrap();
        let image = tmp.path().join("disk.img");
        fs::write(&image, b"").unwrap();
        let block = fake_sys(&tmp.path().join("sys"), &image, true);
        let r = SysBackingResolver::with_sys_dev_block(&read_mountinfo().unwrap(), block);
        assert_eq!(
            r.backing_dev(&mount("7:0", "/dev/loop0")),
            Some(holder_by_prefix(&image))
        );
        fs::remove_file(&image).unwrap();
        assert_eq!(r.backing_dev(&mount("7:0", "/dev/loop0")), None);
    }

    #[test]
    fn anonymous_devices_use_the_source_block_device() {
        let tmp = tempfile::tempdir().unwrap();
        let image = tmp.path().join("disk.img");
        fs::write(&image, b"").unwrap();
        let block = fake_sys(&tmp.path().join("sys"), &image, false);
        let r = SysBackingResolver::with_sys_dev_block(&read_mountinfo().unwrap(), block);
        // Like btrfs on /dev/loop0: mountinfo shows 0:N, the source is the loop node.
        if running_as_root() {
            let node = tmp.path().join("loop0-node");
            let kind = nix::sys::stat::SFlag::S_IFBLK;
            let mode = nix::sys::stat::Mode::from_bits_truncate(0o600);
            nix::sys::stat::mknod(&node, kind, mode, DevId::new(7, 0).to_dev_t()).unwrap();
            let m = mount("0:39", node.to_str().unwrap());
            assert_eq!(r.backing_dev(&m), Some(holder_by_prefix(&image)));
        }
        // A source that is not a block device (or not a path) gives nothing.
        assert_eq!(r.backing_dev(&mount("0:39", image.to_str().unwrap())), None);
        assert_eq!(r.backing_dev(&mount("0:39", "tmpfs")), None);
    }

    #[test]
    fn map_resolver_is_keyed_by_mount_device() {
        let map = HashMap::from([(DevId::new(7, 0), DevId::new(254, 16))]);
        assert_eq!(
            map.backing_dev(&mount("7:0", "/dev/loop0")),
            Some(DevId::new(254, 16))
        );
        assert_eq!(map.backing_dev(&mount("7:1", "/dev/loop1")), None);
    }

    /// Real loop devices, nothing frozen: an image on /var/tmp holding a second image.
    #[test]
    fn real_loop_chain_resolves_to_the_holding_filesystems() {
        if !running_as_root() {
            eprintln!("skipped: needs root for losetup and mount");
            return;
        }
        let scratch = Scratch::new("mounts-loopdeps");
        let outer = LoopFs::create(
            &scratch.path().join("outer.img"),
            &scratch.path().join("outer"),
            24,
        );
        let inner = LoopFs::create(
            &outer.mount_point.join("inner.img"),
            &scratch.path().join("inner"),
            8,
        );
        let mounts = read_mountinfo().unwrap();
        let find = |mp: &Path| mounts.iter().find(|m| m.mount_point == mp).unwrap().clone();
        let (outer_m, inner_m) = (find(&outer.mount_point), find(&inner.mount_point));
        let r = SysBackingResolver::new(&mounts);
        assert_eq!(r.backing_dev(&inner_m), Some(outer_m.dev));
        assert_eq!(
            r.backing_dev(&outer_m),
            Some(holder_by_prefix(scratch.path()))
        );
        let root = mounts
            .iter()
            .find(|m| m.mount_point == Path::new("/"))
            .unwrap();
        assert_eq!(
            r.backing_dev(root),
            None,
            "the root disk is not a loop device"
        );
        drop(inner);
        drop(outer);
    }
}
