//! What a filesystem type says about freezing it.
//!
//! FIFREEZE succeeds only on superblocks whose driver implements `freeze_fs` or
//! `freeze_super` (`ioctl_fsfreeze` in fs/ioctl.c returns EOPNOTSUPP otherwise). The lists
//! below name types whose answer is known; anything else with a real block device is tried
//! and the ioctl's EOPNOTSUPP has the last word.

use std::fmt;

/// The freeze-relevant class of a filesystem type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsClass {
    /// In-memory or kernel-interface filesystem: no storage to make consistent.
    Virtual,
    /// Network or host-shared filesystem: its storage lives outside this guest's disks.
    Remote,
    /// FUSE: served by a user-space process; the kernel cannot freeze it.
    Userspace,
    /// Stacked on other filesystems (overlay): frozen through the filesystems below it.
    Stacked,
    /// A read-only image format (squashfs, iso9660, erofs, ...): never has dirty data.
    ReadOnlyFormat,
    /// A disk filesystem whose kernel driver has no freeze support (fat, exfat).
    NoFreezeSupport,
    /// A disk filesystem whose driver implements freeze.
    Freezable,
    /// Not in any list: eligible only when it has a block device.
    Unknown,
}

impl FsClass {
    /// Classifies a mountinfo filesystem type (`ext4`, `fuse.sshfs`, ...).
    pub fn of(fstype: &str) -> FsClass {
        if fstype == "fuse" || fstype == "fuseblk" || fstype.starts_with("fuse.") {
            return FsClass::Userspace;
        }
        let lists: [(&[&str], FsClass); 6] = [
            (VIRTUAL, FsClass::Virtual),
            (REMOTE, FsClass::Remote),
            (STACKED, FsClass::Stacked),
            (READ_ONLY_FORMATS, FsClass::ReadOnlyFormat),
            (NO_FREEZE_SUPPORT, FsClass::NoFreezeSupport),
            (FREEZABLE, FsClass::Freezable),
        ];
        lists
            .iter()
            .find(|(names, _)| names.contains(&fstype))
            .map_or(FsClass::Unknown, |&(_, class)| class)
    }
}

impl fmt::Display for FsClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FsClass::Virtual => "a virtual filesystem with no storage to quiesce",
            FsClass::Remote => {
                "a network or host-shared filesystem whose storage is not on this guest's disks"
            }
            FsClass::Userspace => {
                "a FUSE filesystem served by a user-space process; the kernel cannot freeze it"
            }
            FsClass::Stacked => {
                "a stacked filesystem; the filesystems holding its layers are frozen instead"
            }
            FsClass::ReadOnlyFormat => "a read-only image format that never has unwritten data",
            FsClass::NoFreezeSupport => {
                "a filesystem whose kernel driver cannot freeze (FIFREEZE returns EOPNOTSUPP)"
            }
            FsClass::Freezable => "a freezable disk filesystem",
            FsClass::Unknown => "a filesystem type the agent does not know",
        })
    }
}

/// Kernel-interface and memory-backed filesystems.
const VIRTUAL: &[&str] = &[
    "proc",
    "sysfs",
    "tmpfs",
    "devtmpfs",
    "devpts",
    "cgroup",
    "cgroup2",
    "cpuset",
    "ramfs",
    "rootfs",
    "securityfs",
    "debugfs",
    "tracefs",
    "bpf",
    "pstore",
    "mqueue",
    "hugetlbfs",
    "configfs",
    "autofs",
    "efivarfs",
    "binfmt_misc",
    "rpc_pipefs",
    "nsfs",
    "fusectl",
    "selinuxfs",
    "pipefs",
    "sockfs",
    "anon_inodefs",
    "nfsd",
    "sunrpc",
    "resctrl",
    "devfs",
    "usbfs",
    "xenfs",
    "openpromfs",
    "smackfs",
    "apparmorfs",
    "ipathfs",
    "qibfs",
    "spufs",
    "gadgetfs",
    "functionfs",
    "ocfs2_dlmfs",
    "dlmfs",
    "hostfs",
    "secretmem",
];

/// Filesystems whose data lives on another machine or on the host.
const REMOTE: &[&str] = &[
    "nfs",
    "nfs4",
    "cifs",
    "smb3",
    "smbfs",
    "virtiofs",
    "9p",
    "ceph",
    "glusterfs",
    "afs",
    "lustre",
    "beegfs",
    "gpfs",
    "vboxsf",
    "vmhgfs",
    "ncpfs",
    "coda",
    "orangefs",
    "davfs",
];

/// Filesystems layered over directories of other filesystems.
const STACKED: &[&str] = &[
    "overlay",
    "overlayfs",
    "aufs",
    "ecryptfs",
    "shiftfs",
    "wrapfs",
];

/// Image formats that cannot be written.
const READ_ONLY_FORMATS: &[&str] = &["squashfs", "iso9660", "erofs", "cramfs", "romfs"];

/// Disk filesystems checked to lack `freeze_fs`/`freeze_super` in their super_operations
/// (fs/fat/inode.c `fat_sops`, fs/exfat/super.c `exfat_sops`).
const NO_FREEZE_SUPPORT: &[&str] = &["vfat", "msdos", "exfat"];

/// Disk filesystems whose drivers implement freeze. btrfs and bcachefs show anonymous
/// (major 0) device numbers, so they must be listed to be eligible at all.
const FREEZABLE: &[&str] = &[
    "ext2", "ext3", "ext4", "ext4dev", "xfs", "btrfs", "f2fs", "jfs", "reiserfs", "nilfs2", "gfs2",
    "ocfs2", "bcachefs",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_the_common_types() {
        for (t, c) in [
            ("ext4", FsClass::Freezable),
            ("xfs", FsClass::Freezable),
            ("btrfs", FsClass::Freezable),
            ("proc", FsClass::Virtual),
            ("cgroup2", FsClass::Virtual),
            ("tmpfs", FsClass::Virtual),
            ("virtiofs", FsClass::Remote),
            ("nfs4", FsClass::Remote),
            ("9p", FsClass::Remote),
            ("fuse", FsClass::Userspace),
            ("fuseblk", FsClass::Userspace),
            ("fuse.sshfs", FsClass::Userspace),
            ("overlay", FsClass::Stacked),
            ("squashfs", FsClass::ReadOnlyFormat),
            ("vfat", FsClass::NoFreezeSupport),
            ("zfs", FsClass::Unknown),
            ("ntfs3", FsClass::Unknown),
        ] {
            assert_eq!(FsClass::of(t), c, "{t}");
        }
    }

    #[test]
    fn lists_do_not_overlap() {
        let all = [
            VIRTUAL,
            REMOTE,
            STACKED,
            READ_ONLY_FORMATS,
            NO_FREEZE_SUPPORT,
            FREEZABLE,
        ];
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                for t in a.iter() {
                    assert!(!b.contains(t), "{t} is in two lists");
                }
            }
        }
    }

    #[test]
    fn display_explains() {
        assert!(FsClass::Userspace.to_string().contains("user-space"));
        assert!(FsClass::NoFreezeSupport.to_string().contains("EOPNOTSUPP"));
    }
}
