//! The freeze plan: which filesystems to freeze, in what order, and why the rest are not.
//!
//! Order is an explicit dependency graph rather than a sorted list, so a level can later be
//! frozen in parallel: a filesystem whose loop image lives on another must be frozen before
//! it and thawed after it. Within a level, later mounts go first (reverse mountinfo order,
//! as qemu-guest-agent does), which keeps plans deterministic.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::PathBuf;

use super::eligibility::{classify, SkipReason, Verdict};
use super::loopdeps::BackingResolver;
use super::order;
use super::paths::{is_within, normalise_absolute, PathProblem};
use super::visibility::hidden_by;
use super::DevId;
use super::Mount;

/// What the caller allows and asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// Safety roots (`--freeze-only`): only mounts at or below one of them are frozen, and
    /// only if their filesystem is not also mounted outside them. Empty: no restriction.
    pub freeze_only: Vec<PathBuf>,
    /// Mount points to freeze (like qemu-ga's freeze-list). Empty: every eligible filesystem.
    pub requested: Vec<PathBuf>,
}

/// A filesystem the plan freezes, identified by the mount it is frozen through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedFs {
    /// Path opened for FIFREEZE/FITHAW.
    pub mount_point: PathBuf,
    /// Filesystem type, for reports.
    pub fstype: String,
    /// Mount source, for reports.
    pub source: String,
    /// Superblock device number from mountinfo.
    pub dev: DevId,
    /// Mount id from mountinfo (compare with statx `STATX_MNT_ID` of the opened mount point).
    pub mount_id: u32,
    /// Indices into [`FreezePlan::filesystems`] that must be frozen before this one and
    /// thawed after it: the filesystems whose loop image lives on this one.
    pub depends_on: Vec<usize>,
}

/// A mount the plan does not freeze, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedMount {
    /// The mount as read from mountinfo.
    pub mount: Mount,
    /// Why it is not frozen.
    pub reason: SkipReason,
    /// Whether the request covers it (it is one of the requested mount points, or, when none
    /// were named, inside the `--freeze-only` roots or anywhere without roots), so a report
    /// lists it. False for mounts the policy excluded on purpose.
    pub in_request: bool,
}

/// The result of planning. Every mount of the table is in exactly one of `filesystems`
/// (one per superblock) and `skipped`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FreezePlan {
    /// Filesystems to freeze, in mountinfo order.
    pub filesystems: Vec<PlannedFs>,
    /// Mounts not frozen, in mountinfo order.
    pub skipped: Vec<SkippedMount>,
    /// Indices into `filesystems` by freeze level: level k holds filesystems all of whose
    /// `depends_on` are in levels below k. Each level is in reverse mount order.
    pub levels: Vec<Vec<usize>>,
}

impl FreezePlan {
    /// Filesystems in the order to freeze them: level by level, later mounts first.
    pub fn freeze_order(&self) -> Vec<&PlannedFs> {
        self.levels
            .iter()
            .flatten()
            .map(|&i| &self.filesystems[i])
            .collect()
    }

    /// Filesystems in the order to thaw them: exactly the freeze order reversed.
    pub fn thaw_order(&self) -> Vec<&PlannedFs> {
        let mut order = self.freeze_order();
        order.reverse();
        order
    }
}

/// Why no plan could be made. Nothing is frozen when planning fails.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// A `--freeze-only` root is unusable.
    #[error("--freeze-only root {} {problem}", .path.display())]
    InvalidFreezeOnly {
        /// The root as given.
        path: PathBuf,
        /// What is wrong with it.
        problem: PathProblem,
    },
    /// A requested mount point is not a normalised absolute path.
    #[error("requested mount point {} {problem}", .path.display())]
    InvalidPath {
        /// The path as given.
        path: PathBuf,
        /// What is wrong with it.
        problem: PathProblem,
    },
    /// A requested path is not a mount point.
    #[error("{} is not a mount point (paths are matched as listed in /proc/self/mountinfo, symlinks are not followed)", .path.display())]
    NotAMountpoint {
        /// The normalised path.
        path: PathBuf,
    },
    /// A requested mount point exists but may not be frozen.
    #[error("{} cannot be frozen: {reason}", .path.display())]
    NotFreezable {
        /// The normalised path.
        path: PathBuf,
        /// Why.
        reason: SkipReason,
    },
    /// Loop images form a cycle, so no order is safe (cannot normally happen).
    #[error("loop images form a cycle through {}; refusing to order the freeze", PathList(.mount_points))]
    Cycle {
        /// Mount points on or behind the cycle.
        mount_points: Vec<PathBuf>,
    },
}

/// Displays paths comma-separated.
struct PathList<'a>(&'a [PathBuf]);

impl fmt::Display for PathList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{}", p.display())?;
        }
        Ok(())
    }
}

/// Plans a freeze of `mounts` (a mountinfo table, in kernel order) under `policy`, using
/// `resolver` to find loop image dependencies.
pub fn plan(
    mounts: &[Mount],
    policy: &Policy,
    resolver: &dyn BackingResolver,
) -> Result<FreezePlan, PlanError> {
    let roots = policy
        .freeze_only
        .iter()
        .map(|p| {
            normalise_absolute(p).map_err(|problem| PlanError::InvalidFreezeOnly {
                path: p.clone(),
                problem,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut verdicts = classify(mounts, &roots);
    let selected = if policy.requested.is_empty() {
        (0..mounts.len())
            .filter(|&i| verdicts[i] == Verdict::Eligible)
            .collect()
    } else {
        select_requested(mounts, &verdicts, &policy.requested)?
    };
    for (i, v) in verdicts.iter_mut().enumerate() {
        if *v == Verdict::Eligible && !selected.contains(&i) {
            *v = Verdict::Skip(SkipReason::NotRequested);
        }
    }

    let planned_of: HashMap<DevId, usize> = selected
        .iter()
        .enumerate()
        .map(|(p, &i)| (mounts[i].dev, p))
        .collect();
    let mut depends_on = vec![Vec::new(); selected.len()];
    for (p, &i) in selected.iter().enumerate() {
        if let Some(outer) = nearest_planned_outer(mounts, i, &planned_of, resolver) {
            depends_on[outer].push(p);
        }
    }
    let levels = order::levels(&depends_on).map_err(|stuck| PlanError::Cycle {
        mount_points: stuck
            .iter()
            .map(|&p| mounts[selected[p]].mount_point.clone())
            .collect(),
    })?;

    let filesystems = selected
        .iter()
        .zip(depends_on)
        .map(|(&i, depends_on)| {
            let m = &mounts[i];
            PlannedFs {
                mount_point: m.mount_point.clone(),
                fstype: m.fstype.clone(),
                source: m.source.clone(),
                dev: m.dev,
                mount_id: m.mount_id,
                depends_on,
            }
        })
        .collect();
    // select_requested has refused any requested path that does not normalise.
    let named: Vec<PathBuf> = policy
        .requested
        .iter()
        .filter_map(|r| normalise_absolute(r).ok())
        .collect();
    let covered = |m: &Mount, reason: &SkipReason| {
        let excluded = matches!(
            reason,
            SkipReason::OutsideFreezeOnly | SkipReason::NotRequested
        );
        let asked = if named.is_empty() {
            roots.is_empty() || roots.iter().any(|r| is_within(&m.mount_point, r))
        } else {
            named.contains(&m.mount_point)
        };
        asked && !excluded
    };
    let skipped = mounts
        .iter()
        .zip(verdicts)
        .filter_map(|(m, v)| match v {
            Verdict::Skip(reason) => Some(SkippedMount {
                mount: m.clone(),
                in_request: covered(m, &reason),
                reason,
            }),
            Verdict::Eligible => None,
        })
        .collect();
    Ok(FreezePlan {
        filesystems,
        skipped,
        levels,
    })
}

/// Maps requested paths to eligible mounts (ascending, deduplicated). Naming a bind-mount
/// duplicate selects the mount chosen for its superblock.
fn select_requested(
    mounts: &[Mount],
    verdicts: &[Verdict],
    requested: &[PathBuf],
) -> Result<Vec<usize>, PlanError> {
    let hidden = hidden_by(mounts);
    let mut out = Vec::new();
    for raw in requested {
        let path = normalise_absolute(raw).map_err(|problem| PlanError::InvalidPath {
            path: raw.clone(),
            problem,
        })?;
        let at: Vec<usize> = (0..mounts.len())
            .filter(|&i| mounts[i].mount_point == path)
            .collect();
        // The mount a lookup of the path reaches is the visible one.
        let Some(&i) = at.iter().find(|&&i| hidden[i].is_none()).or(at.last()) else {
            return Err(PlanError::NotAMountpoint { path });
        };
        let chosen = match &verdicts[i] {
            Verdict::Eligible => i,
            Verdict::Skip(SkipReason::Duplicate { .. }) => (0..mounts.len())
                .find(|&j| verdicts[j] == Verdict::Eligible && mounts[j].dev == mounts[i].dev)
                .expect("a duplicate has an eligible representative"),
            Verdict::Skip(reason) => {
                return Err(PlanError::NotFreezable {
                    path,
                    reason: reason.clone(),
                })
            }
        };
        out.push(chosen);
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// Follows loop images outward from mount `i` (through filesystems that are not planned)
/// to the first planned filesystem holding one of them.
fn nearest_planned_outer(
    mounts: &[Mount],
    i: usize,
    planned_of: &HashMap<DevId, usize>,
    resolver: &dyn BackingResolver,
) -> Option<usize> {
    let mut seen = HashSet::from([mounts[i].dev]);
    let mut cur = &mounts[i];
    loop {
        let outer = resolver.backing_dev(cur)?;
        if let Some(&p) = planned_of.get(&outer) {
            return Some(p);
        }
        if !seen.insert(outer) {
            return None;
        }
        cur = mounts.iter().find(|m| m.dev == outer)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mounts::fstype::FsClass;
    use crate::mounts::parse_mountinfo;
    use crate::mounts::test_utils::fixture;
    use std::path::Path;

    /// The vm-guest fixture's loops: app's image on /data, nested's on app, deep's on nested.
    fn vm_loops() -> HashMap<DevId, DevId> {
        HashMap::from([
            (DevId::new(7, 0), DevId::new(254, 32)),
            (DevId::new(7, 1), DevId::new(7, 0)),
            (DevId::new(7, 2), DevId::new(7, 1)),
        ])
    }

    fn policy(freeze_only: &[&str], requested: &[&str]) -> Policy {
        Policy {
            freeze_only: freeze_only.iter().map(PathBuf::from).collect(),
            requested: requested.iter().map(PathBuf::from).collect(),
        }
    }

    fn names(fs: &[&PlannedFs]) -> Vec<String> {
        fs.iter()
            .map(|f| f.mount_point.display().to_string())
            .collect()
    }

    fn level_names(p: &FreezePlan) -> Vec<Vec<String>> {
        p.levels
            .iter()
            .map(|l| {
                l.iter()
                    .map(|&i| p.filesystems[i].mount_point.display().to_string())
                    .collect()
            })
            .collect()
    }

    fn reason_at(p: &FreezePlan, mp: &str) -> SkipReason {
        p.skipped
            .iter()
            .rev()
            .find(|s| s.mount.mount_point == Path::new(mp))
            .unwrap()
            .reason
            .clone()
    }

    fn listed(p: &FreezePlan) -> Vec<String> {
        let mut out: Vec<String> = p
            .skipped
            .iter()
            .filter(|s| s.in_request)
            .map(|s| s.mount.mount_point.display().to_string())
            .collect();
        out.sort();
        out
    }

    #[test]
    fn skipped_mounts_are_listed_only_when_the_request_covers_them() {
        let mounts = fixture("vm-guest.txt");
        // Roots: pseudo filesystems and read-only mounts inside them are listed, nothing else.
        let p = plan(&mounts, &policy(&["/mnt"], &[]), &vm_loops()).unwrap();
        let l = listed(&p);
        assert!(l.iter().all(|m| m.starts_with("/mnt/")), "{l:?}");
        for m in ["/mnt/ro", "/mnt/shared", "/mnt/nfs", "/mnt/old"] {
            assert!(l.iter().any(|x| x == m), "{m} missing from {l:?}");
        }
        assert!(!l.iter().any(|x| x == "/proc" || x == "/tmp"), "{l:?}");
        // Names: only the named mount points, and among them only the skipped ones.
        let p = plan(&mounts, &policy(&[], &["/data", "/srv/data"]), &vm_loops()).unwrap();
        assert_eq!(
            reason_at(&p, "/srv/data"),
            SkipReason::Duplicate { of: "/data".into() }
        );
        assert_eq!(listed(&p), ["/srv/data"]);
        // Neither: every skipped mount is covered, so listed.
        let p = plan(&mounts, &Policy::default(), &vm_loops()).unwrap();
        assert!(p.skipped.iter().all(|s| s.in_request));
    }

    #[test]
    fn vm_guest_orders_loop_chains_inner_first() {
        let mounts = fixture("vm-guest.txt");
        let p = plan(&mounts, &Policy::default(), &vm_loops()).unwrap();
        assert_eq!(p.filesystems.len() + p.skipped.len(), mounts.len());
        let planned: Vec<&PlannedFs> = p.filesystems.iter().collect();
        assert_eq!(
            names(&planned),
            [
                "/",
                "/data",
                "/mnt/images/app",
                "/mnt/my disk",
                "/mnt/nested",
                "/mnt/deep",
                "/mnt/btr"
            ]
        );
        assert_eq!(
            p.filesystems[1].depends_on,
            [2],
            "/data waits for the app image's fs"
        );
        assert_eq!(p.filesystems[2].depends_on, [4]);
        assert_eq!(p.filesystems[4].depends_on, [5]);
        assert_eq!(
            level_names(&p),
            [
                vec!["/mnt/btr", "/mnt/deep", "/mnt/my disk", "/"],
                vec!["/mnt/nested"],
                vec!["/mnt/images/app"],
                vec!["/data"],
            ]
        );
        let freeze = names(&p.freeze_order());
        assert_eq!(
            freeze,
            [
                "/mnt/btr",
                "/mnt/deep",
                "/mnt/my disk",
                "/",
                "/mnt/nested",
                "/mnt/images/app",
                "/data"
            ]
        );
        let mut thaw = names(&p.thaw_order());
        thaw.reverse();
        assert_eq!(thaw, freeze);
        assert_eq!(p.filesystems[0].mount_id, 26);
        assert_eq!(
            (
                p.filesystems[0].fstype.as_str(),
                p.filesystems[0].source.as_str()
            ),
            ("ext4", "/dev/vda1")
        );
    }

    #[test]
    fn without_loops_the_order_is_reverse_mount_order() {
        let mounts = fixture("vm-guest.txt");
        let p = plan(&mounts, &Policy::default(), &HashMap::new()).unwrap();
        assert_eq!(p.levels.len(), 1);
        assert_eq!(
            names(&p.freeze_order()),
            [
                "/mnt/btr",
                "/mnt/deep",
                "/mnt/nested",
                "/mnt/my disk",
                "/mnt/images/app",
                "/data",
                "/"
            ]
        );
    }

    #[test]
    fn freeze_only_limits_the_plan_and_its_edges() {
        let mounts = fixture("vm-guest.txt");
        let p = plan(
            &mounts,
            &policy(&["/mnt/images", "/mnt/nested/", "/mnt/deep"], &[]),
            &vm_loops(),
        )
        .unwrap();
        // /data is outside, so the app image's fs has nothing planned beneath it.
        assert_eq!(
            level_names(&p),
            [
                vec!["/mnt/deep"],
                vec!["/mnt/nested"],
                vec!["/mnt/images/app"]
            ]
        );
        assert_eq!(reason_at(&p, "/data"), SkipReason::OutsideFreezeOnly);
        assert_eq!(reason_at(&p, "/mnt/my disk"), SkipReason::OutsideFreezeOnly);
    }

    #[test]
    fn dependencies_pass_through_filesystems_that_are_not_planned() {
        let mounts = fixture("vm-guest.txt");
        // nested (the middle of the chain) is not planned; deep must still precede app.
        let p = plan(
            &mounts,
            &policy(&["/mnt/images", "/mnt/deep"], &[]),
            &vm_loops(),
        )
        .unwrap();
        assert_eq!(
            level_names(&p),
            [vec!["/mnt/deep"], vec!["/mnt/images/app"]]
        );
        let p = plan(
            &mounts,
            &policy(&[], &["/mnt/deep", "/srv/data"]),
            &vm_loops(),
        )
        .unwrap();
        assert_eq!(level_names(&p), [vec!["/mnt/deep"], vec!["/data"]]);
    }

    #[test]
    fn requested_mount_points_select_and_dedupe() {
        let mounts = fixture("vm-guest.txt");
        let p = plan(
            &mounts,
            &policy(&[], &["/srv/data", "/data/", "/export", "/mnt/my disk"]),
            &vm_loops(),
        )
        .unwrap();
        let planned: Vec<&PlannedFs> = p.filesystems.iter().collect();
        assert_eq!(names(&planned), ["/data", "/mnt/my disk"]);
        assert_eq!(reason_at(&p, "/"), SkipReason::NotRequested);
        assert_eq!(
            reason_at(&p, "/srv/data"),
            SkipReason::Duplicate { of: "/data".into() }
        );
        assert_eq!(p.filesystems.len() + p.skipped.len(), mounts.len());
    }

    #[test]
    fn requested_mount_point_errors() {
        let mounts = fixture("vm-guest.txt");
        let err = |req: &str, only: &[&str]| {
            plan(&mounts, &policy(only, &[req]), &vm_loops()).unwrap_err()
        };
        assert_eq!(
            err("data", &[]),
            PlanError::InvalidPath {
                path: "data".into(),
                problem: PathProblem::Relative
            }
        );
        assert_eq!(
            err("/data/../mnt", &[]),
            PlanError::InvalidPath {
                path: "/data/../mnt".into(),
                problem: PathProblem::ParentComponent
            }
        );
        assert_eq!(
            err("/data/sub", &[]),
            PlanError::NotAMountpoint {
                path: "/data/sub".into()
            }
        );
        let virt = |t: &str, class| SkipReason::FsType {
            fstype: t.into(),
            class,
        };
        assert_eq!(
            err("/proc", &[]),
            PlanError::NotFreezable {
                path: "/proc".into(),
                reason: virt("proc", FsClass::Virtual)
            }
        );
        assert_eq!(
            err("/mnt/ro", &[]),
            PlanError::NotFreezable {
                path: "/mnt/ro".into(),
                reason: SkipReason::ReadOnly
            }
        );
        // /mnt/old leads to the tmpfs on top, not the hidden ext4.
        assert_eq!(
            err("/mnt/old", &[]),
            PlanError::NotFreezable {
                path: "/mnt/old".into(),
                reason: virt("tmpfs", FsClass::Virtual)
            }
        );
        assert_eq!(
            err("/data", &["/mnt"]),
            PlanError::NotFreezable {
                path: "/data".into(),
                reason: SkipReason::OutsideFreezeOnly
            }
        );
        assert_eq!(
            err("/mnt/btr", &["/mnt"]),
            PlanError::NotFreezable {
                path: "/mnt/btr".into(),
                reason: SkipReason::SharedOutsideFreezeOnly {
                    other: "/home".into()
                }
            }
        );
    }

    #[test]
    fn invalid_freeze_only_roots_are_refused() {
        let mounts = fixture("vm-guest.txt");
        let e = plan(&mounts, &policy(&["var/tmp"], &[]), &HashMap::new()).unwrap_err();
        assert_eq!(
            e,
            PlanError::InvalidFreezeOnly {
                path: "var/tmp".into(),
                problem: PathProblem::Relative
            }
        );
        assert_eq!(
            e.to_string(),
            "--freeze-only root var/tmp is not an absolute path"
        );
    }

    #[test]
    fn cycles_are_refused_and_unplanned_cycles_ignored() {
        let mounts = parse_mountinfo(
            b"1 0 254:0 / / rw - ext4 /dev/vda rw\n\
              2 1 7:0 / /a rw - ext4 /dev/loop0 rw\n\
              3 1 7:1 / /b rw - ext4 /dev/loop1 rw\n",
        )
        .unwrap();
        let cyclic = HashMap::from([
            (DevId::new(7, 0), DevId::new(7, 1)),
            (DevId::new(7, 1), DevId::new(7, 0)),
        ]);
        let e = plan(&mounts, &Policy::default(), &cyclic).unwrap_err();
        assert_eq!(
            e,
            PlanError::Cycle {
                mount_points: vec!["/a".into(), "/b".into()]
            }
        );
        assert_eq!(
            e.to_string(),
            "loop images form a cycle through /a, /b; refusing to order the freeze"
        );
        // Only /a planned: the walk through unplanned /b comes back to /a's own device.
        let p = plan(&mounts, &policy(&["/a"], &[]), &cyclic);
        assert!(matches!(p, Err(PlanError::Cycle { .. })), "{p:?}");
        // Only / planned: the loop cycle is among unplanned filesystems and is left alone.
        let p = plan(&mounts, &policy(&[], &["/"]), &cyclic).unwrap();
        assert_eq!(p.levels, [vec![0]]);
    }

    #[test]
    fn docker_host_plans_the_two_disks() {
        let mounts = fixture("docker-host.txt");
        let p = plan(&mounts, &Policy::default(), &HashMap::new()).unwrap();
        assert_eq!(names(&p.freeze_order()), ["/var/lib/docker", "/"]);
        assert_eq!(
            reason_at(&p, "/srv/pgdata"),
            SkipReason::Duplicate {
                of: "/var/lib/docker".into()
            }
        );
        // Without roots or names every skipped mount is covered by the request, so listed.
        assert!(p.skipped.iter().all(|s| s.in_request));
    }

    #[test]
    fn this_machine_with_a_scratch_root_plans_nothing() {
        let mounts = fixture("this-machine.txt");
        let p = plan(
            &mounts,
            &policy(&["/var/tmp/scratch"], &[]),
            &HashMap::new(),
        )
        .unwrap();
        assert!(p.filesystems.is_empty() && p.levels.is_empty());
        assert_eq!(reason_at(&p, "/"), SkipReason::OutsideFreezeOnly);
        let p = plan(&mounts, &Policy::default(), &HashMap::new()).unwrap();
        assert_eq!(names(&p.freeze_order()), ["/"]);
    }

    #[test]
    fn error_texts_name_the_path() {
        let e = PlanError::NotFreezable {
            path: "/proc".into(),
            reason: SkipReason::ReadOnly,
        };
        assert_eq!(
            e.to_string(),
            "/proc cannot be frozen: mounted read-only, so it has no unwritten data"
        );
        let e = PlanError::NotAMountpoint { path: "/x".into() };
        assert!(e.to_string().starts_with("/x is not a mount point"));
    }
}
