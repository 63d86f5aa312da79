//! Which mounts may be frozen, and why the others are not.
//!
//! Each mount gets a [`Verdict`]. Checks run in this order, the first that applies wins:
//! filesystem type, device, read-only, hidden by another mount, outside the
//! `--freeze-only` roots, superblock also visible outside those roots, and finally one
//! representative per superblock (a freeze acts on the superblock, so bind mounts and repeated
//! mounts of one device are frozen once).

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use super::fstype::FsClass;
use super::paths::is_within;
use super::visibility::hidden_by;
use super::DevId;
use super::Mount;

/// Why a mount is not frozen. The `Display` text is meant for people reading a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// The filesystem type cannot or need not be frozen (virtual, remote, FUSE, overlay,
    /// read-only format, driver without freeze support).
    FsType {
        /// The mountinfo filesystem type.
        fstype: String,
        /// What that type is.
        class: FsClass,
    },
    /// An unknown filesystem type on an anonymous device: nothing says it has storage.
    NoBlockDevice {
        /// The mountinfo filesystem type.
        fstype: String,
        /// Its anonymous device number.
        dev: DevId,
    },
    /// Mounted read-only (per mount or per superblock).
    ReadOnly,
    /// Another mount sits on or above its mount point, so the path leads elsewhere.
    Shadowed {
        /// Mount point of the mount that hides it.
        by: PathBuf,
    },
    /// Its mount point is outside every `--freeze-only` root.
    OutsideFreezeOnly,
    /// Inside the `--freeze-only` roots, but the same superblock is also mounted outside
    /// them, and a freeze would stop writes there too.
    SharedOutsideFreezeOnly {
        /// A mount point of the same filesystem outside the roots.
        other: PathBuf,
    },
    /// Another mount of the same superblock was chosen to represent it.
    Duplicate {
        /// Mount point of the chosen mount.
        of: PathBuf,
    },
    /// Eligible, but the caller named other mount points.
    NotRequested,
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::FsType { fstype, class } => write!(f, "{fstype} is {class}"),
            SkipReason::NoBlockDevice { fstype, dev } => write!(
                f,
                "{fstype} is not a known freezable type and has no block device (device {dev})"
            ),
            SkipReason::ReadOnly => f.write_str("mounted read-only, so it has no unwritten data"),
            SkipReason::Shadowed { by } => write!(
                f,
                "hidden by the mount at {}; its mount point leads to another filesystem",
                by.display()
            ),
            SkipReason::OutsideFreezeOnly => f.write_str("outside the --freeze-only roots"),
            SkipReason::SharedOutsideFreezeOnly { other } => write!(
                f,
                "the same filesystem is also mounted at {}, outside the --freeze-only roots",
                other.display()
            ),
            SkipReason::Duplicate { of } => write!(
                f,
                "same filesystem as {} (bind or repeated mount); frozen once, through {}",
                of.display(),
                of.display()
            ),
            SkipReason::NotRequested => f.write_str("not among the requested mount points"),
        }
    }
}

/// The outcome of eligibility for one mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// May be frozen; the only mount of its superblock with this verdict.
    Eligible,
    /// Not frozen, and why.
    Skip(SkipReason),
}

/// Classifies every mount (result indexed like `mounts`). `freeze_only` roots must be
/// normalised absolute paths; empty means no restriction.
pub fn classify(mounts: &[Mount], freeze_only: &[PathBuf]) -> Vec<Verdict> {
    let hidden = hidden_by(mounts);
    let inside = |p: &Path| freeze_only.is_empty() || freeze_only.iter().any(|r| is_within(p, r));
    // Any mount of a superblock outside the roots makes the whole superblock off limits.
    let mut outside_at: HashMap<DevId, &Path> = HashMap::new();
    for m in mounts.iter().filter(|m| !inside(&m.mount_point)) {
        outside_at.entry(m.dev).or_insert(&m.mount_point);
    }
    let mut verdicts: Vec<Verdict> = mounts
        .iter()
        .zip(&hidden)
        .map(
            |(m, h)| match own_reason(m, *h, mounts, &inside, &outside_at) {
                Some(r) => Verdict::Skip(r),
                None => Verdict::Eligible,
            },
        )
        .collect();
    dedupe(mounts, &mut verdicts);
    verdicts
}

/// The reasons that depend on the mount itself (everything but duplicates).
fn own_reason(
    m: &Mount,
    hidden: Option<usize>,
    mounts: &[Mount],
    inside: &dyn Fn(&Path) -> bool,
    outside_at: &HashMap<DevId, &Path>,
) -> Option<SkipReason> {
    let class = FsClass::of(&m.fstype);
    match class {
        FsClass::Freezable => {}
        FsClass::Unknown if !m.dev.is_anonymous() => {}
        FsClass::Unknown => {
            return Some(SkipReason::NoBlockDevice {
                fstype: m.fstype.clone(),
                dev: m.dev,
            })
        }
        _ => {
            return Some(SkipReason::FsType {
                fstype: m.fstype.clone(),
                class,
            })
        }
    }
    if m.read_only() {
        return Some(SkipReason::ReadOnly);
    }
    if let Some(h) = hidden {
        return Some(SkipReason::Shadowed {
            by: mounts[h].mount_point.clone(),
        });
    }
    if !inside(&m.mount_point) {
        return Some(SkipReason::OutsideFreezeOnly);
    }
    outside_at
        .get(&m.dev)
        .map(|other| SkipReason::SharedOutsideFreezeOnly {
            other: other.to_path_buf(),
        })
}

/// Keeps one eligible mount per device: the one showing the filesystem's root directory,
/// then the one with the fewest path components (then shortest), then the earliest.
fn dedupe(mounts: &[Mount], verdicts: &mut [Verdict]) {
    let mut chosen: HashMap<DevId, usize> = HashMap::new();
    for (i, m) in mounts.iter().enumerate() {
        if verdicts[i] != Verdict::Eligible {
            continue;
        }
        let slot = chosen.entry(m.dev).or_insert(i);
        if preference(m) < preference(&mounts[*slot]) {
            *slot = i;
        }
    }
    for (i, m) in mounts.iter().enumerate() {
        let rep = chosen.get(&m.dev).copied();
        if verdicts[i] == Verdict::Eligible && rep != Some(i) {
            let of = mounts[rep.expect("an eligible mount has a chosen representative")]
                .mount_point
                .clone();
            verdicts[i] = Verdict::Skip(SkipReason::Duplicate { of });
        }
    }
}

/// Sort key for representatives; the strict `<` above keeps the earliest on ties.
fn preference(m: &Mount) -> (bool, usize, usize) {
    (
        m.root != Path::new("/"),
        m.mount_point.components().count(),
        m.mount_point.as_os_str().len(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mounts::parse_mountinfo;
    use crate::mounts::test_utils::fixture;

    fn verdict_of<'a>(mounts: &[Mount], v: &'a [Verdict], mp: &str) -> &'a Verdict {
        let i = mounts
            .iter()
            .rposition(|m| m.mount_point == Path::new(mp))
            .unwrap_or_else(|| panic!("no mount at {mp}"));
        &v[i]
    }

    fn skip(r: SkipReason) -> Verdict {
        Verdict::Skip(r)
    }

    #[test]
    fn vm_guest_verdicts() {
        let mounts = fixture("vm-guest.txt");
        let v = classify(&mounts, &[]);
        let at = |mp| verdict_of(&mounts, &v, mp).clone();
        for mp in [
            "/",
            "/data",
            "/mnt/images/app",
            "/mnt/my disk",
            "/mnt/nested",
            "/mnt/deep",
            "/mnt/btr",
        ] {
            assert_eq!(at(mp), Verdict::Eligible, "{mp}");
        }
        let fs = |t: &str, class| {
            skip(SkipReason::FsType {
                fstype: t.into(),
                class,
            })
        };
        assert_eq!(at("/proc"), fs("proc", FsClass::Virtual));
        assert_eq!(at("/sys"), fs("sysfs", FsClass::Virtual));
        assert_eq!(at("/sys/fs/cgroup"), fs("cgroup2", FsClass::Virtual));
        assert_eq!(at("/tmp"), fs("tmpfs", FsClass::Virtual));
        assert_eq!(at("/boot"), fs("vfat", FsClass::NoFreezeSupport));
        assert_eq!(at("/mnt/shared"), fs("virtiofs", FsClass::Remote));
        assert_eq!(at("/mnt/nfs"), fs("nfs4", FsClass::Remote));
        assert_eq!(at("/mnt/sshfs"), fs("fuse.sshfs", FsClass::Userspace));
        assert_eq!(
            at("/var/lib/containers/merged"),
            fs("overlay", FsClass::Stacked)
        );
        assert_eq!(at("/snap/tool/1"), fs("squashfs", FsClass::ReadOnlyFormat));
        assert_eq!(at("/mnt/ro"), skip(SkipReason::ReadOnly));
        let dup = |of: &str| skip(SkipReason::Duplicate { of: of.into() });
        assert_eq!(at("/srv/data"), dup("/data"));
        assert_eq!(at("/export"), dup("/data"));
        // btrfs: the subvolume at /home loses to the mount of the filesystem root.
        assert_eq!(at("/home"), dup("/mnt/btr"));
        // /mnt/old's ext4 is under a tmpfs mounted on the same point.
        let old = mounts
            .iter()
            .position(|m| m.fstype == "ext4" && m.mount_point == Path::new("/mnt/old"))
            .unwrap();
        assert_eq!(
            v[old],
            skip(SkipReason::Shadowed {
                by: "/mnt/old".into()
            })
        );
        // Exactly one eligible mount per device.
        let mut devs: Vec<DevId> = mounts
            .iter()
            .zip(&v)
            .filter(|(_, v)| **v == Verdict::Eligible)
            .map(|(m, _)| m.dev)
            .collect();
        let n = devs.len();
        devs.sort();
        devs.dedup();
        assert_eq!(devs.len(), n);
    }

    #[test]
    fn freeze_only_is_component_wise_and_guards_shared_superblocks() {
        let mounts = fixture("vm-guest.txt");
        let v = classify(
            &mounts,
            &["/mnt/my".into(), "/mnt/images".into(), "/mnt/btr".into()],
        );
        let at = |mp| verdict_of(&mounts, &v, mp).clone();
        assert_eq!(at("/mnt/images/app"), Verdict::Eligible);
        // "/mnt/my" is not a component prefix of "/mnt/my disk".
        assert_eq!(at("/mnt/my disk"), skip(SkipReason::OutsideFreezeOnly));
        assert_eq!(at("/"), skip(SkipReason::OutsideFreezeOnly));
        assert_eq!(at("/mnt/nested"), skip(SkipReason::OutsideFreezeOnly));
        // The btrfs filesystem is also mounted at /home, outside the roots.
        assert_eq!(
            at("/mnt/btr"),
            skip(SkipReason::SharedOutsideFreezeOnly {
                other: "/home".into()
            })
        );
        // Virtual filesystems keep their own reason even outside the roots.
        assert!(matches!(
            at("/proc"),
            Verdict::Skip(SkipReason::FsType { .. })
        ));
    }

    #[test]
    fn a_bind_mount_inside_the_roots_cannot_reach_a_filesystem_outside() {
        let mounts = parse_mountinfo(
            b"27 1 254:0 / / rw - ext4 /dev/vda rw\n\
              40 27 254:0 /var/tmp/me/src /var/tmp/me/mnt rw - ext4 /dev/vda rw\n",
        )
        .unwrap();
        let v = classify(&mounts, &["/var/tmp/me".into()]);
        assert_eq!(v[0], skip(SkipReason::OutsideFreezeOnly));
        assert_eq!(
            v[1],
            skip(SkipReason::SharedOutsideFreezeOnly { other: "/".into() })
        );
    }

    #[test]
    fn unknown_types_need_a_block_device() {
        let mounts = parse_mountinfo(
            b"1 0 254:0 / / rw - ext4 /dev/vda rw\n\
              2 1 0:55 / /tank rw - zfs tank rw\n\
              3 1 259:3 / /win rw - ntfs3 /dev/nvme0n1p3 rw\n",
        )
        .unwrap();
        let v = classify(&mounts, &[]);
        assert_eq!(
            v[1],
            skip(SkipReason::NoBlockDevice {
                fstype: "zfs".into(),
                dev: DevId::new(0, 55)
            })
        );
        assert_eq!(v[2], Verdict::Eligible);
    }

    #[test]
    fn representative_ties_go_to_the_earliest_mount() {
        let mounts = parse_mountinfo(
            b"1 0 254:0 / / rw - ext4 /dev/vda rw\n\
              2 1 8:1 / /b rw - ext4 /dev/sda rw\n\
              3 1 8:1 / /a rw - ext4 /dev/sda rw\n\
              4 1 8:1 / /cc rw - ext4 /dev/sda rw\n",
        )
        .unwrap();
        let v = classify(&mounts, &[]);
        assert_eq!(v[1], Verdict::Eligible);
        assert_eq!(v[2], skip(SkipReason::Duplicate { of: "/b".into() }));
        assert_eq!(v[3], skip(SkipReason::Duplicate { of: "/b".into() }));
    }

    #[test]
    fn a_read_only_bind_does_not_hide_the_writable_mount() {
        let mounts = parse_mountinfo(
            b"1 0 254:0 / / rw - ext4 /dev/vda rw\n\
              2 1 8:1 / /a ro - ext4 /dev/sda rw\n\
              3 1 8:1 / /data/x rw - ext4 /dev/sda rw\n",
        )
        .unwrap();
        let v = classify(&mounts, &[]);
        assert_eq!(v[1], skip(SkipReason::ReadOnly));
        assert_eq!(v[2], Verdict::Eligible);
    }

    #[test]
    fn docker_host_keeps_only_the_disks() {
        let mounts = fixture("docker-host.txt");
        let v = classify(&mounts, &[]);
        let eligible: Vec<&Path> = mounts
            .iter()
            .zip(&v)
            .filter(|(_, v)| **v == Verdict::Eligible)
            .map(|(m, _)| m.mount_point.as_path())
            .collect();
        assert_eq!(eligible, [Path::new("/"), Path::new("/var/lib/docker")]);
        let overlays = mounts
            .iter()
            .zip(&v)
            .filter(|(m, v)| {
                m.fstype == "overlay"
                    && matches!(
                        v,
                        Verdict::Skip(SkipReason::FsType {
                            class: FsClass::Stacked,
                            ..
                        })
                    )
            })
            .count();
        assert!(overlays >= 20, "{overlays}");
    }

    #[test]
    fn this_machine_only_the_root_disk_is_eligible() {
        let mounts = fixture("this-machine.txt");
        let v = classify(&mounts, &[]);
        let eligible: Vec<&Mount> = mounts
            .iter()
            .zip(&v)
            .filter(|(_, v)| **v == Verdict::Eligible)
            .map(|(m, _)| m)
            .collect();
        assert_eq!(eligible.len(), 1);
        assert_eq!(eligible[0].mount_point, Path::new("/"));
        // With --freeze-only, the root disk is out.
        let v = classify(&mounts, &["/var/tmp/scratch".into()]);
        assert!(!v.contains(&Verdict::Eligible));
    }

    #[test]
    fn reasons_read_well_and_scope() {
        let r = SkipReason::Duplicate { of: "/data".into() };
        assert_eq!(
            r.to_string(),
            "same filesystem as /data (bind or repeated mount); frozen once, through /data"
        );
        let r = SkipReason::FsType {
            fstype: "proc".into(),
            class: FsClass::Virtual,
        };
        assert_eq!(
            r.to_string(),
            "proc is a virtual filesystem with no storage to quiesce"
        );
    }
}
