//! The two kernel calls of the freezer: FIFREEZE and FITHAW on an open mountpoint.
//!
//! Both block (FIFREEZE syncs the whole filesystem first) and must only be called from a
//! blocking thread, never from the async runtime.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{open, OFlag};
use nix::sys::stat::Mode;

use crate::mounts::{fd_ids, DevId};

// FIFREEZE = _IOWR('X', 119, int) = 0xC0045877; FITHAW = _IOWR('X', 120, int) = 0xC0045878.
mod sys {
    nix::ioctl_readwrite!(fifreeze, b'X', 119, libc::c_int);
    nix::ioctl_readwrite!(fithaw, b'X', 120, libc::c_int);
}
use sys::{fifreeze, fithaw};

/// Opens a mountpoint for the freeze ioctls and checks that it still is the mount the plan
/// chose (a remount or an over-mount since the plan is refused). The check uses the mount id
/// from statx where the kernel reports it (5.8+), because btrfs gives every subvolume its own
/// st_dev that never matches mountinfo; otherwise the device id.
pub fn open_mountpoint(path: &Path, expected: Expected) -> Result<OwnedFd, OpenError> {
    let fd = open(
        path,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
        Mode::empty(),
    )
    .map_err(OpenError::Open)?;
    let ids = fd_ids(fd.as_fd())
        .map_err(|e| OpenError::Open(Errno::from_raw(e.raw_os_error().unwrap_or(0))))?;
    match (ids.mount_id, expected.mount_id) {
        (Some(found), Some(want)) if found != want => Err(OpenError::MountChanged {
            expected: want,
            found,
        }),
        (Some(_), Some(_)) => Ok(fd),
        _ if ids.dev != expected.dev => Err(OpenError::DeviceChanged {
            expected: expected.dev,
            found: ids.dev,
        }),
        _ => Ok(fd),
    }
}

/// What an opened mountpoint must turn out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expected {
    /// Device id of the superblock (used when the mount id is unknown).
    pub dev: DevId,
    /// Mount id from mountinfo, if known.
    pub mount_id: Option<u32>,
}

/// Why a mountpoint could not be opened for freezing.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// open(2) or statx(2) failed.
    #[error("cannot open mountpoint: {0}")]
    Open(Errno),
    /// The path now leads to another filesystem than the one planned.
    #[error("mountpoint now belongs to device {found}, expected {expected} (remounted?)")]
    DeviceChanged {
        /// Device id the plan saw in mountinfo.
        expected: DevId,
        /// Device id the open directory reports.
        found: DevId,
    },
    /// The path now leads to another mount than the one planned.
    #[error("mountpoint now leads to mount {found}, expected mount {expected} (remounted or over-mounted?)")]
    MountChanged {
        /// Mount id the plan saw in mountinfo.
        expected: u32,
        /// Mount id the open directory reports.
        found: u32,
    },
}

/// FIFREEZE: flushes the filesystem and blocks new writes. `EBUSY` means it is already
/// frozen (by someone else), `EOPNOTSUPP` that the filesystem cannot be frozen.
pub fn freeze(fd: &OwnedFd) -> Result<(), Errno> {
    let mut arg: libc::c_int = 0;
    // SAFETY: fd is a valid open descriptor and arg a valid int for the ioctl to read/write.
    unsafe { fifreeze(fd.as_raw_fd(), &mut arg) }.map(|_| ())
}

/// FITHAW: releases a frozen filesystem. `EINVAL` means it was not frozen.
pub fn thaw(fd: &OwnedFd) -> Result<(), Errno> {
    let mut arg: libc::c_int = 0;
    // SAFETY: as in `freeze`.
    unsafe { fithaw(fd.as_raw_fd(), &mut arg) }.map(|_| ())
}

/// Text for an errno as people read it: `EIO (Input/output error)`.
pub fn errno_text(e: Errno) -> String {
    format!("{e:?} ({})", e.desc())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_match_the_kernel_abi() {
        assert_eq!(nix::request_code_readwrite!(b'X', 119, 4), 0xC004_5877);
        assert_eq!(nix::request_code_readwrite!(b'X', 120, 4), 0xC004_5878);
    }

    #[test]
    fn open_refuses_a_device_mismatch() {
        let dir = tempfile::tempdir().unwrap();
        let real = DevId::from_dev_t(nix::sys::stat::stat(dir.path()).unwrap().st_dev);
        let wrong = DevId {
            major: real.major + 1,
            minor: real.minor,
        };
        let by_dev = |dev| Expected {
            dev,
            mount_id: None,
        };
        assert!(open_mountpoint(dir.path(), by_dev(real)).is_ok());
        match open_mountpoint(dir.path(), by_dev(wrong)) {
            Err(OpenError::DeviceChanged { expected, found }) => {
                assert_eq!(expected, wrong);
                assert_eq!(found, real);
            }
            other => panic!("expected DeviceChanged, got {other:?}"),
        }
        // With a mount id, that is what counts (btrfs: st_dev differs from mountinfo).
        let ids = crate::mounts::file_ids(dir.path()).unwrap();
        if let Some(mid) = ids.mount_id {
            let ok = Expected {
                dev: wrong,
                mount_id: Some(mid),
            };
            assert!(open_mountpoint(dir.path(), ok).is_ok());
            let bad = Expected {
                dev: real,
                mount_id: Some(mid + 1000),
            };
            assert!(matches!(
                open_mountpoint(dir.path(), bad),
                Err(OpenError::MountChanged { .. })
            ));
        }
    }

    #[test]
    fn thaw_of_an_unfrozen_directory_is_einval_or_unsupported() {
        // FITHAW on a filesystem that is not frozen must fail harmlessly; it never freezes.
        let dir = tempfile::tempdir().unwrap();
        let dev = DevId::from_dev_t(nix::sys::stat::stat(dir.path()).unwrap().st_dev);
        let fd = open_mountpoint(
            dir.path(),
            Expected {
                dev,
                mount_id: None,
            },
        )
        .unwrap();
        let err = thaw(&fd).unwrap_err();
        assert!(
            matches!(err, Errno::EINVAL | Errno::EOPNOTSUPP | Errno::EPERM),
            "{err}"
        );
    }
}
