//! The two kernel calls of the freezer: FIFREEZE and FITHAW on an open mountpoint.
//!
//! Both block (FIFREEZE syncs the whole filesystem first) and must only be called from a
//! blocking thread, never from the async runtime.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{open, OFlag};
use nix::sys::stat::{fstat, Mode};

use crate::mounts::DevId;

// FIFREEZE = _IOWR('X', 119, int) = 0xC0045877; FITHAW = _IOWR('X', 120, int) = 0xC0045878.
mod sys {
    nix::ioctl_readwrite!(fifreeze, b'X', 119, libc::c_int);
    nix::ioctl_readwrite!(fithaw, b'X', 120, libc::c_int);
}
use sys::{fifreeze, fithaw};

/// Opens a mountpoint for the freeze ioctls and checks that it still belongs to the
/// superblock the plan chose (a remount or an over-mount since the plan is refused).
pub fn open_mountpoint(path: &Path, expected: DevId) -> Result<OwnedFd, OpenError> {
    let fd = open(
        path,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
        Mode::empty(),
    )
    .map_err(OpenError::Open)?;
    let st = fstat(&fd).map_err(OpenError::Open)?;
    let found = DevId::from_dev_t(st.st_dev);
    if found != expected {
        return Err(OpenError::DeviceChanged { expected, found });
    }
    Ok(fd)
}

/// Why a mountpoint could not be opened for freezing.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// open(2) or fstat(2) failed.
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
        assert!(open_mountpoint(dir.path(), real).is_ok());
        match open_mountpoint(dir.path(), wrong) {
            Err(OpenError::DeviceChanged { expected, found }) => {
                assert_eq!(expected, wrong);
                assert_eq!(found, real);
            }
            other => panic!("expected DeviceChanged, got {other:?}"),
        }
    }

    #[test]
    fn thaw_of_an_unfrozen_directory_is_einval_or_unsupported() {
        // FITHAW on a filesystem that is not frozen must fail harmlessly; it never freezes.
        let dir = tempfile::tempdir().unwrap();
        let dev = DevId::from_dev_t(nix::sys::stat::stat(dir.path()).unwrap().st_dev);
        let fd = open_mountpoint(dir.path(), dev).unwrap();
        let err = thaw(&fd).unwrap_err();
        assert!(
            matches!(err, Errno::EINVAL | Errno::EOPNOTSUPP | Errno::EPERM),
            "{err}"
        );
    }
}
