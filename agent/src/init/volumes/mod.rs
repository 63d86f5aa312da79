//! Mounting the volumes of an Init request, and undoing it.
//!
//! Everything here blocks (mkdir, mkfs, mount, resize2fs): call it from
//! `tokio::task::spawn_blocking`. Each step that changes the system is recorded, so a
//! failure can undo exactly what this request did: unmount what it mounted and remove
//! the directories it created, newest first. Formatting cannot be undone; it only runs
//! on devices the host marked `need_format`.
//!
//! The request's volumes are checked first, without touching anything, by [`validate`].

pub mod validate;

use std::ffi::OsStr;
use std::fs::DirBuilder;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use tracing::{info, warn};

use self::validate::{VolumePlan, VolumeSource};
use crate::error::elide_middle;

/// Longest tool output kept in an error message.
const MAX_TOOL_OUTPUT: usize = 2000;

/// Programs used to prepare ext4 filesystems.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ext4Tools {
    /// `mkfs.ext4`, run as `<mkfs> -F -q <device>` for `need_format`.
    pub mkfs: PathBuf,
    /// `resize2fs`, run as `<resize2fs> <device>` before mounting for `need_resize`.
    pub resize2fs: PathBuf,
    /// `e2fsck`, run as `<e2fsck> -f -p <device>` before an offline resize (resize2fs
    /// requires a freshly checked filesystem).
    pub e2fsck: PathBuf,
}

impl Default for Ext4Tools {
    fn default() -> Self {
        Self {
            mkfs: PathBuf::from("mkfs.ext4"),
            resize2fs: PathBuf::from("resize2fs"),
            e2fsck: PathBuf::from("e2fsck"),
        }
    }
}

/// Why a volume could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// Creating the mount point (or a parent) failed.
    #[error("cannot create directory {path}: {source}")]
    CreateDir {
        /// The directory that could not be created.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A helper program could not be started.
    #[error("cannot run {program}: {source} (is e2fsprogs installed in the guest?)")]
    Spawn {
        /// The program.
        program: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// A helper program ran and failed.
    #[error("{program} {device} failed ({status}): {output}")]
    Tool {
        /// The program.
        program: PathBuf,
        /// The device it ran on.
        device: PathBuf,
        /// Exit status text.
        status: String,
        /// Its stderr (or stdout when stderr is empty), trimmed.
        output: String,
    },
    /// Mounting an unformatted device as ext4 failed.
    #[error("{device} has no ext4 filesystem (mount returned EINVAL); set block_device.need_format to format it")]
    NoFilesystem {
        /// The device.
        device: PathBuf,
    },
    /// mount(2) failed.
    #[error("mounting {source_name} ({fstype}) at {target} failed: {errno}{hint}")]
    Mount {
        /// Device path or virtiofs tag.
        source_name: String,
        /// Filesystem type.
        fstype: &'static str,
        /// Mount point.
        target: PathBuf,
        /// The errno.
        errno: Errno,
        /// Extra advice for the common causes, or empty.
        hint: &'static str,
    },
}

/// What this request did for one volume, so it can be undone.
#[derive(Debug)]
struct Record {
    mount_point: PathBuf,
    /// Directories created, parents first.
    created_dirs: Vec<PathBuf>,
    mounted: bool,
}

/// The volumes one request set up, in order; [`AppliedVolumes::rollback`] undoes them.
#[derive(Debug, Default)]
#[must_use = "dropping AppliedVolumes keeps the mounts; call rollback() to undo them"]
pub struct AppliedVolumes {
    records: Vec<Record>,
}

/// A volume failed; what was done before it has already been rolled back.
#[derive(Debug)]
pub struct VolumeFailure {
    /// Index of the failing volume.
    pub index: usize,
    /// Its mount point.
    pub mount_point: PathBuf,
    /// What failed.
    pub error: VolumeError,
    /// Steps of the rollback that failed (empty when everything was undone).
    pub rollback_failures: Vec<String>,
}

/// Sets up `plans` in order. On a failure, undoes everything done so far (including
/// the failing volume's own steps) before returning.
pub fn apply_volumes(
    plans: &[VolumePlan],
    tools: &Ext4Tools,
) -> Result<AppliedVolumes, Box<VolumeFailure>> {
    let mut applied = AppliedVolumes::default();
    for (index, plan) in plans.iter().enumerate() {
        applied.records.push(Record {
            mount_point: plan.mount_point.clone(),
            created_dirs: Vec::new(),
            mounted: false,
        });
        let record = applied.records.last_mut().expect("just pushed");
        if let Err(error) = apply_one(plan, tools, record) {
            warn!(index, mount_point = %plan.mount_point.display(), %error, "volume failed; rolling back");
            let rollback_failures = applied.rollback();
            return Err(Box::new(VolumeFailure {
                index,
                mount_point: plan.mount_point.clone(),
                error,
                rollback_failures,
            }));
        }
    }
    Ok(applied)
}

impl AppliedVolumes {
    /// Undoes everything recorded, newest first: unmount (lazily when busy), then remove
    /// the directories created for it. Returns a description of each step that failed.
    pub fn rollback(self) -> Vec<String> {
        let mut failures = Vec::new();
        for record in self.records.into_iter().rev() {
            if record.mounted {
                if let Err(e) = unmount(&record.mount_point) {
                    failures.push(e);
                    // Its directories are busy; removing them would fail too.
                    continue;
                }
                info!(mount_point = %record.mount_point.display(), "rolled back mount");
            }
            for dir in record.created_dirs.iter().rev() {
                if let Err(e) = std::fs::remove_dir(dir) {
                    failures.push(format!("directory {} not removed: {e}", dir.display()));
                }
            }
        }
        failures
    }

    /// Number of volumes set up.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether no volume was set up.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

fn apply_one(plan: &VolumePlan, tools: &Ext4Tools, record: &mut Record) -> Result<(), VolumeError> {
    create_missing_dirs(&plan.mount_point, &mut record.created_dirs)?;
    match &plan.source {
        VolumeSource::Block {
            device,
            format,
            resize,
        } => {
            if *format {
                info!(device = %device.display(), "formatting ext4");
                run_tool(
                    &tools.mkfs,
                    &[OsStr::new("-F"), OsStr::new("-q"), device.as_os_str()],
                    device,
                )?;
            }
            if *resize {
                // Grow offline, before mounting: online growth (EXT4_IOC_RESIZE_FS) needs
                // CAP_SYS_RESOURCE, which sandboxed or container-like guests may lack, and an
                // unmounted filesystem can be checked first.
                run_fsck(&tools.e2fsck, device)?;
                run_tool(&tools.resize2fs, &[device.as_os_str()], device)?;
                info!(device = %device.display(), "grew filesystem to device size");
            }
            match mount(
                Some(device.as_path()),
                &plan.mount_point,
                Some("ext4"),
                MsFlags::empty(),
                None::<&str>,
            ) {
                Ok(()) => {}
                Err(Errno::EINVAL) if !*format => {
                    return Err(VolumeError::NoFilesystem {
                        device: device.clone(),
                    })
                }
                Err(errno) => {
                    return Err(VolumeError::Mount {
                        source_name: device.display().to_string(),
                        fstype: "ext4",
                        target: plan.mount_point.clone(),
                        errno,
                        hint: match errno {
                            Errno::EBUSY => "; is the device already mounted elsewhere?",
                            Errno::ENODEV => "; the guest kernel has no ext4 support",
                            _ => "",
                        },
                    })
                }
            }
            record.mounted = true;
            info!(device = %device.display(), mount_point = %plan.mount_point.display(), "mounted ext4");
        }
        VolumeSource::Virtiofs { tag, read_only } => {
            let flags = if *read_only {
                MsFlags::MS_RDONLY
            } else {
                MsFlags::empty()
            };
            mount(
                Some(tag.as_str()),
                &plan.mount_point,
                Some("virtiofs"),
                flags,
                None::<&str>,
            )
            .map_err(|errno| VolumeError::Mount {
                source_name: format!("virtiofs tag {tag:?}"),
                fstype: "virtiofs",
                target: plan.mount_point.clone(),
                errno,
                hint: match errno {
                    Errno::ENODEV => "; the guest kernel has no virtiofs support",
                    Errno::EINVAL | Errno::ENOENT => {
                        "; is a virtiofs device with this tag attached to the VM?"
                    }
                    _ => "",
                },
            })?;
            record.mounted = true;
            info!(%tag, mount_point = %plan.mount_point.display(), read_only, "mounted virtiofs");
        }
    }
    Ok(())
}

/// Creates `path` and any missing parents (mode 0755), appending each directory it
/// created to `created`, parents first. Directories that appear concurrently are
/// treated as pre-existing (not ours to remove).
fn create_missing_dirs(path: &Path, created: &mut Vec<PathBuf>) -> Result<(), VolumeError> {
    let mut missing = Vec::new();
    for ancestor in path.ancestors() {
        match std::fs::symlink_metadata(ancestor) {
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::NotFound => missing.push(ancestor.to_path_buf()),
            Err(source) => {
                return Err(VolumeError::CreateDir {
                    path: ancestor.to_path_buf(),
                    source,
                })
            }
        }
    }
    let mut builder = DirBuilder::new();
    builder.mode(0o755);
    for dir in missing.into_iter().rev() {
        match builder.create(&dir) {
            Ok(()) => created.push(dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => {}
            Err(source) => return Err(VolumeError::CreateDir { path: dir, source }),
        }
    }
    Ok(())
}

/// Runs `e2fsck -f -p` (preen: fixes only what is safe without questions). Exit codes 0
/// (clean), 1 (errors corrected) and 2 (corrected, reboot advised: only meaningful for a
/// mounted root) are success; anything else is an error with e2fsck's output.
fn run_fsck(program: &Path, device: &Path) -> Result<(), VolumeError> {
    let args = [OsStr::new("-f"), OsStr::new("-p"), device.as_os_str()];
    run_tool_accepting(program, &args, device, |code| matches!(code, Some(0..=2)))
}

/// Runs `program args...`, capturing its output for the error.
fn run_tool(program: &Path, args: &[&OsStr], device: &Path) -> Result<(), VolumeError> {
    run_tool_accepting(program, args, device, |code| code == Some(0))
}

/// Runs `program args...`; an exit code `ok` refuses is an error carrying the status and the
/// tool's output (stderr, then stdout), bounded.
fn run_tool_accepting(
    program: &Path,
    args: &[&OsStr],
    device: &Path,
    ok: impl Fn(Option<i32>) -> bool,
) -> Result<(), VolumeError> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| VolumeError::Spawn {
            program: program.to_path_buf(),
            source,
        })?;
    if ok(out.status.code()) {
        return Ok(());
    }
    // The error is usually on stderr; e2fsck reports on stdout. One line apart, so they
    // do not run together.
    let mut text = String::from_utf8_lossy(&out.stderr).trim_end().to_string();
    text.push('\n');
    text.push_str(&String::from_utf8_lossy(&out.stdout));
    Err(VolumeError::Tool {
        program: program.to_path_buf(),
        device: device.to_path_buf(),
        status: out.status.to_string(),
        output: elide_middle(text.trim(), MAX_TOOL_OUTPUT),
    })
}

/// Unmounts `path`; when it is busy, detaches it lazily (it disappears from the
/// namespace now, the filesystem is released when the last user goes).
fn unmount(path: &Path) -> Result<(), String> {
    match umount2(path, MntFlags::empty()) {
        Ok(()) => Ok(()),
        Err(Errno::EBUSY) => {
            warn!(mount_point = %path.display(), "busy; detaching lazily");
            umount2(path, MntFlags::MNT_DETACH)
                .map_err(|e| format!("{} still mounted: lazy unmount failed: {e}", path.display()))
        }
        Err(e) => Err(format!(
            "{} still mounted: unmount failed: {e}",
            path.display()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_only_missing_dirs_and_records_them_parents_first() {
        let root = tempfile::tempdir().unwrap();
        let target = root.path().join("a/b/c");
        let mut created = Vec::new();
        create_missing_dirs(&target, &mut created).unwrap();
        assert!(target.is_dir());
        assert_eq!(
            created,
            vec![
                root.path().join("a"),
                root.path().join("a/b"),
                target.clone()
            ]
        );
        let mut again = Vec::new();
        create_missing_dirs(&target, &mut again).unwrap();
        assert!(again.is_empty(), "existing dirs must not be recorded");
    }

    #[test]
    fn rollback_removes_created_dirs_newest_first() {
        let root = tempfile::tempdir().unwrap();
        let existing = root.path().join("keep");
        std::fs::create_dir(&existing).unwrap();
        let mut applied = AppliedVolumes::default();
        for mp in [existing.join("x/y"), root.path().join("z")] {
            let mut record = Record {
                mount_point: mp.clone(),
                created_dirs: Vec::new(),
                mounted: false,
            };
            create_missing_dirs(&mp, &mut record.created_dirs).unwrap();
            applied.records.push(record);
        }
        assert_eq!(applied.len(), 2);
        assert!(applied.rollback().is_empty());
        assert!(existing.is_dir(), "pre-existing dir removed");
        assert!(!existing.join("x").exists());
        assert!(!root.path().join("z").exists());
    }

    #[test]
    fn rollback_reports_dirs_it_cannot_remove() {
        let root = tempfile::tempdir().unwrap();
        let mp = root.path().join("m");
        let mut record = Record {
            mount_point: mp.clone(),
            created_dirs: Vec::new(),
            mounted: false,
        };
        create_missing_dirs(&mp, &mut record.created_dirs).unwrap();
        std::fs::write(mp.join("someone-elses-file"), b"x").unwrap();
        let failures = AppliedVolumes {
            records: vec![record],
        }
        .rollback();
        assert_eq!(failures.len(), 1);
        assert!(
            failures[0].contains(&mp.display().to_string()),
            "{failures:?}"
        );
        assert!(
            mp.join("someone-elses-file").exists(),
            "non-empty dir must be kept"
        );
    }

    #[test]
    fn tool_failure_carries_stderr_and_status() {
        let err = run_tool(
            Path::new("sh"),
            &[
                OsStr::new("-c"),
                OsStr::new("echo 'bad superblock' >&2; exit 3"),
            ],
            Path::new("/dev/vdx"),
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("bad superblock"), "{msg}");
        assert!(msg.contains("/dev/vdx"), "{msg}");
        assert!(msg.contains("3"), "{msg}");
    }

    #[test]
    fn fsck_exit_codes_up_to_2_mean_repaired_and_higher_ones_fail() {
        // `sh -f -p SCRIPT` stands in for `e2fsck -f -p DEVICE`: the script is the "device".
        let fake = |code: i32| {
            let dir = tempfile::tempdir().unwrap();
            let script = dir.path().join("fsck.sh");
            std::fs::write(&script, format!("echo preened \"$0\"\nexit {code}\n")).unwrap();
            run_fsck(Path::new("/bin/sh"), &script)
        };
        assert!(fake(0).is_ok());
        assert!(fake(2).is_ok());
        let err = fake(4).unwrap_err().to_string();
        assert!(err.contains("preened") && err.contains("fsck.sh"), "{err}");
        assert!(err.contains('4'), "{err}");
    }

    #[test]
    fn missing_tool_is_reported() {
        let err = run_tool(
            Path::new("/nonexistent/mkfs.ext4"),
            &[],
            Path::new("/dev/vdx"),
        )
        .unwrap_err();
        assert!(matches!(err, VolumeError::Spawn { .. }));
        assert!(err.to_string().contains("/nonexistent/mkfs.ext4"));
    }
}
