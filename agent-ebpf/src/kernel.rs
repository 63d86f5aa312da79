//! Reading kernel structs by the offsets in the `OFFSETS` global (filled from BTF by userspace).
//!
//! Every read goes through `bpf_probe_read_kernel`, so a wrong guess (for instance a candidate
//! superblock computed from an unrelated lock address) fails or yields garbage but never faults.

use agent_common::{Event, KernelOffsets, SB_FREEZE_COMPLETE};
use aya_ebpf::helpers::{
    bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_task, bpf_probe_read_kernel,
    bpf_probe_read_kernel_buf, bpf_probe_read_kernel_str_bytes,
};

/// Struct offsets written by the loader (`EbpfLoader::override_global("OFFSETS", ..)`).
#[unsafe(no_mangle)]
static OFFSETS: KernelOffsets = KernelOffsets::ZERO;

/// Reads one field of `OFFSETS` without letting the compiler fold the compiled-in zero.
macro_rules! off {
    ($field:ident) => {
        // SAFETY: reading a field of a static; volatile keeps the load-time value visible.
        u64::from(crate::kernel::read_offset(&raw const OFFSETS.$field))
    };
}

/// Volatile read of one `OFFSETS` field (kept out of the macro so no `unsafe` nests).
#[inline(always)]
pub(crate) fn read_offset(field: *const u32) -> u32 {
    // SAFETY: `field` points into the `OFFSETS` static.
    unsafe { core::ptr::read_volatile(field) }
}

/// True once userspace has filled in the offsets.
#[inline(always)]
pub(crate) fn offsets_valid() -> bool {
    off!(valid) != 0
}

/// Reads a `T` from kernel memory at `addr`.
#[inline(always)]
pub(crate) fn read<T>(addr: u64) -> Option<T> {
    // SAFETY: bpf_probe_read_kernel copies with fault handling; any address is acceptable.
    unsafe { bpf_probe_read_kernel(addr as *const T) }.ok()
}

/// `sb->s_writers.frozen`: 0 unfrozen, 1..=3 freeze in progress at that level, 4 complete.
///
/// The field is an `int` before 6.6 and an `unsigned short` after; on little-endian either way
/// the low byte holds the whole value.
#[inline(always)]
pub(crate) fn frozen_level(sb: u64) -> Option<u32> {
    read::<u8>(sb + off!(sb_s_writers) + off!(sbw_frozen)).map(u32::from)
}

/// The superblock of an XFS mount (`mp->m_super`), or `None` without XFS offsets.
#[inline(always)]
pub(crate) fn sb_of_xfs_mount(mp: u64) -> Option<u64> {
    let off = off!(xfs_mount_m_super);
    if off == 0 {
        return None;
    }
    read::<u64>(mp + off).filter(|&sb| sb != 0)
}

/// The superblock of a btrfs filesystem (`fs_info->sb`), or `None` without btrfs offsets.
#[inline(always)]
pub(crate) fn sb_of_btrfs(fs_info: u64) -> Option<u64> {
    let off = off!(btrfs_fs_info_sb);
    if off == 0 {
        return None;
    }
    read::<u64>(fs_info + off).filter(|&sb| sb != 0)
}

/// Address of `&sb->s_writers.rw_sem[level - 1]`.
#[inline(always)]
pub(crate) fn sem_addr(sb: u64, level: u32) -> u64 {
    sb + off!(sb_s_writers) + off!(sbw_rw_sem) + u64::from(level - 1) * off!(rw_sem_size)
}

/// True if `sb` looks like a live superblock: `sb->s_root->d_sb == sb`.
#[inline(always)]
pub(crate) fn is_live_superblock(sb: u64) -> bool {
    let Some(root) = read::<u64>(sb + off!(sb_s_root)) else {
        return false;
    };
    root != 0 && read::<u64>(root + off!(dentry_d_sb)) == Some(sb)
}

/// Finds the frozen superblock whose `rw_sem[level - 1]` is `lock`, by trying each level and
/// validating the candidate (frozen at least that far, and a live superblock). This attributes
/// writers on filesystems frozen before the programs were loaded, which no freeze hook saw.
#[inline(always)]
pub(crate) fn frozen_sb_of_lock(lock: u64) -> Option<(u64, u32)> {
    let base = off!(sb_s_writers) + off!(sbw_rw_sem);
    let stride = off!(rw_sem_size);
    let mut level = 1u32;
    while level <= 3 {
        let sb = lock.wrapping_sub(base + u64::from(level - 1) * stride);
        if let Some(frozen) = frozen_level(sb) {
            if frozen >= level && frozen <= SB_FREEZE_COMPLETE && is_live_superblock(sb) {
                return Some((sb, level));
            }
        }
        level += 1;
    }
    None
}

/// Superblock of the current task's file descriptor `fd`:
/// `current->files->fdt->fd[fd]->f_inode->i_sb`.
#[inline(always)]
pub(crate) fn sb_of_fd(fd: u64) -> Option<u64> {
    // SAFETY: the helper has no preconditions.
    let task = unsafe { bpf_get_current_task() };
    let files = read::<u64>(task + off!(task_files))?;
    let fdt = read::<u64>(files + off!(files_fdt))?;
    let max_fds = read::<u32>(fdt + off!(fdt_max_fds))?;
    if fd >= u64::from(max_fds) {
        return None;
    }
    let fd_array = read::<u64>(fdt + off!(fdt_fd))?;
    let file = read::<u64>(fd_array + fd * 8)?;
    if file == 0 {
        return None;
    }
    let inode = read::<u64>(file + off!(file_f_inode))?;
    let sb = read::<u64>(inode + off!(inode_i_sb))?;
    (sb != 0).then_some(sb)
}

/// Fills the superblock identity fields of `ev` (address, dev, s_id, fs type name).
#[inline(always)]
pub(crate) fn fill_superblock(ev: &mut Event, sb: u64) {
    ev.sb = sb;
    ev.dev = read::<u32>(sb + off!(sb_s_dev)).unwrap_or(0);
    // SAFETY: fault-handled copy into a buffer we own.
    let _ = unsafe { bpf_probe_read_kernel_buf((sb + off!(sb_s_id)) as *const u8, &mut ev.sb_id) };
    if let Some(fs_type) = read::<u64>(sb + off!(sb_s_type)) {
        if let Some(name) = read::<u64>(fs_type + off!(fst_name)) {
            // SAFETY: fault-handled string copy into a buffer we own.
            let _ = unsafe { bpf_probe_read_kernel_str_bytes(name as *const u8, &mut ev.fstype) };
        }
    }
}

/// Fills the task fields of `ev` (tgid, tid, comm) from the current task.
#[inline(always)]
pub(crate) fn fill_task(ev: &mut Event) {
    let pid_tgid = bpf_get_current_pid_tgid();
    ev.tgid = (pid_tgid >> 32) as u32;
    ev.tid = pid_tgid as u32;
    if let Ok(comm) = bpf_get_current_comm() {
        ev.comm = comm;
    }
}
