//! statx(2) for the two identities a file has: the device number `stat` reports and the id
//! of the mount it was reached through.
//!
//! They differ in an important case: on btrfs, `st_dev` is a per-subvolume anonymous
//! number that matches no mountinfo line (checked on a loop-mounted btrfs: mountinfo 0:39,
//! `stat` of the top level 0:40, of a subvolume 0:41). The mount id (`STATX_MNT_ID`, Linux
//! 5.8+) always matches mountinfo's first field, so it is the exact way to tie a file or an
//! open mount point back to a [`Mount`](super::Mount).

use std::ffi::{CStr, CString};
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::DevId;

/// What statx says identifies a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileIds {
    /// `st_dev` (per-subvolume on btrfs, so not always a mountinfo device number).
    pub dev: DevId,
    /// Id of the mount the file was reached through (mountinfo's first field); `None` on
    /// kernels older than 5.8.
    pub mount_id: Option<u32>,
}

/// statx of a path (symlinks followed), asking for the mount id.
pub fn file_ids(path: &Path) -> io::Result<FileIds> {
    let c = CString::new(path.as_os_str().as_bytes())?;
    statx_ids(libc::AT_FDCWD, &c, 0)
}

/// statx of an open file descriptor (e.g. an opened mount point), asking for the mount id.
pub fn fd_ids(fd: BorrowedFd<'_>) -> io::Result<FileIds> {
    statx_ids(fd.as_raw_fd(), c"", libc::AT_EMPTY_PATH)
}

fn statx_ids(dirfd: libc::c_int, path: &CStr, flags: libc::c_int) -> io::Result<FileIds> {
    let mut buf = MaybeUninit::<libc::statx>::zeroed();
    // SAFETY: path is NUL-terminated and buf is a writable statx buffer; the raw syscall
    // avoids depending on the C library having a statx wrapper (older musl does not).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_statx,
            dirfd,
            path.as_ptr(),
            flags | libc::AT_STATX_SYNC_AS_STAT,
            libc::STATX_MNT_ID,
            buf.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel filled the buffer (it was zeroed before, so every field is defined).
    let st = unsafe { buf.assume_init() };
    let mount_id = if st.stx_mask & libc::STATX_MNT_ID != 0 {
        u32::try_from(st.stx_mnt_id).ok()
    } else {
        None
    };
    Ok(FileIds {
        dev: DevId::new(st.stx_dev_major, st.stx_dev_minor),
        mount_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mounts::read_mountinfo;
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn path_and_fd_agree_with_stat_and_mountinfo() {
        let ids = file_ids(Path::new("/proc/self/mountinfo")).unwrap();
        let st_dev = std::fs::metadata("/proc/self/mountinfo").unwrap().dev();
        assert_eq!(ids.dev, DevId::from_dev_t(st_dev));
        let proc_mount = read_mountinfo()
            .unwrap()
            .into_iter()
            .find(|m| Some(m.mount_id) == ids.mount_id)
            .expect("statx mount id names a mountinfo line");
        assert_eq!(proc_mount.fstype, "proc");

        let dir = std::fs::File::open("/proc").unwrap();
        assert_eq!(fd_ids(dir.as_fd()).unwrap(), ids);
    }

    #[test]
    fn missing_path_is_an_error() {
        let err = file_ids(Path::new("/nonexistent/file")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
