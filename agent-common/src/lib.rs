//! Types shared by the `agent-ebpf` kernel programs and the `freeze-observer` userspace side.
//!
//! Everything here is `#[repr(C)]` plain data so that both sides agree on the byte layout of
//! ring-buffer events, map keys/values and the load-time globals. The crate is `no_std` so the
//! eBPF crate can use it; userspace-only trait impls live behind the `user` feature.
#![no_std]

/// `FIFREEZE` ioctl request, `_IOWR('X', 119, int)`.
pub const FIFREEZE: u32 = 0xC004_5877;
/// `FITHAW` ioctl request, `_IOWR('X', 120, int)`.
pub const FITHAW: u32 = 0xC004_5878;
/// First argument of the `probe_fd` program (run through `BPF_PROG_TEST_RUN`, never attached):
/// report a filesystem found frozen as [`EventKind::FrozenFound`] (the start-up probe).
pub const PROBE_REPORT: u64 = 0;
/// `probe_fd` mode: complete or end a freeze seen by a sync_fs hook, report a thaw of a
/// filesystem known frozen (the collector's poll of filesystems it watches).
pub const PROBE_TRACK: u64 = 1;
/// `probe_fd`'s return value when the file descriptor could not be resolved to a superblock.
pub const PROBE_UNRESOLVED: u32 = 0xFF;
/// `probe_fd`'s return value when the descriptor's superblock is not the one expected (the
/// mountpoint now holds another filesystem).
pub const PROBE_OTHER_SB: u32 = 0xFE;

/// `lock:contention_begin` flags for a percpu rw-semaphore reader (`LCB_F_PERCPU | LCB_F_READ`):
/// the only kind of wait a writer on a frozen filesystem can be in.
pub const LCB_F_PERCPU_READ: u32 = 0x12;

/// Number of freeze semaphores in `struct sb_writers` (`SB_FREEZE_LEVELS`).
pub const SB_FREEZE_LEVELS: u32 = 3;
/// `sb->s_writers.frozen` once a freeze is complete (`SB_FREEZE_COMPLETE`).
pub const SB_FREEZE_COMPLETE: u32 = 4;

/// Length of a task's `comm`.
pub const COMM_LEN: usize = 16;
/// Length of `super_block.s_id` (the device name, e.g. `loop3`).
pub const SB_ID_LEN: usize = 32;
/// Bytes of `file_system_type.name` copied into events.
pub const FSTYPE_LEN: usize = 16;

/// Kernel struct offsets (in bytes) read from BTF at load time and written into the program's
/// read-only global `OFFSETS`: aya applies no CO-RE relocations to Rust programs, and
/// `struct super_block` is `__randomize_layout`, so nothing may be hard-coded.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    /// `super_block.s_dev` (a kernel `dev_t`, `major << 20 | minor`).
    pub sb_s_dev: u32,
    /// `super_block.s_id` (`char[32]`).
    pub sb_s_id: u32,
    /// `super_block.s_type` (`struct file_system_type *`).
    pub sb_s_type: u32,
    /// `super_block.s_root` (`struct dentry *`), used to validate a candidate superblock.
    pub sb_s_root: u32,
    /// `super_block.s_writers` (`struct sb_writers`).
    pub sb_s_writers: u32,
    /// `sb_writers.frozen`, relative to `s_writers` (`int` before 6.6, `unsigned short` after).
    pub sbw_frozen: u32,
    /// `sb_writers.rw_sem[0]`, relative to `s_writers`.
    pub sbw_rw_sem: u32,
    /// `sizeof(struct percpu_rw_semaphore)`: the stride of `rw_sem[]`.
    pub rw_sem_size: u32,
    /// `file_system_type.name` (`const char *`).
    pub fst_name: u32,
    /// `dentry.d_sb` (`struct super_block *`): `sb->s_root->d_sb == sb` for a live superblock.
    pub dentry_d_sb: u32,
    /// `task_struct.files` (`struct files_struct *`), for the ioctl fallback.
    pub task_files: u32,
    /// `files_struct.fdt` (`struct fdtable *`).
    pub files_fdt: u32,
    /// `fdtable.max_fds` (`unsigned int`).
    pub fdt_max_fds: u32,
    /// `fdtable.fd` (`struct file **`).
    pub fdt_fd: u32,
    /// `file.f_inode` (`struct inode *`).
    pub file_f_inode: u32,
    /// `inode.i_sb` (`struct super_block *`).
    pub inode_i_sb: u32,
    /// `xfs_mount.m_super` (`struct super_block *`), for the `xfs_fs_sync_fs` hook; 0 if the
    /// kernel has no XFS.
    pub xfs_mount_m_super: u32,
    /// `btrfs_fs_info.sb` (`struct super_block *`), for the `btrfs_sync_fs` hook; 0 if the
    /// kernel has no btrfs.
    pub btrfs_fs_info_sb: u32,
    /// Non-zero once filled in by userspace; every program is a no-op while this is zero.
    pub valid: u32,
}

impl KernelOffsets {
    /// All zero: the value compiled into the object, meaning "not filled in yet".
    pub const ZERO: Self = Self {
        sb_s_dev: 0,
        sb_s_id: 0,
        sb_s_type: 0,
        sb_s_root: 0,
        sb_s_writers: 0,
        sbw_frozen: 0,
        sbw_rw_sem: 0,
        rw_sem_size: 0,
        fst_name: 0,
        dentry_d_sb: 0,
        task_files: 0,
        files_fdt: 0,
        fdt_max_fds: 0,
        fdt_fd: 0,
        file_f_inode: 0,
        inode_i_sb: 0,
        xfs_mount_m_super: 0,
        btrfs_fs_info_sb: 0,
        valid: 0,
    };
}

/// What an [`Event`] reports.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// A freeze attempt finished (`ret` says whether it succeeded).
    Freeze = 1,
    /// A thaw attempt finished (`ret` says whether it succeeded).
    Thaw = 2,
    /// A writer started waiting on a frozen superblock's semaphore.
    StallBegin = 3,
    /// A writer stopped waiting (`start_ns`..`ts_ns` is the stall).
    StallEnd = 4,
    /// A probe found a superblock frozen that no hook had reported frozen.
    FrozenFound = 5,
    /// A freeze is under way: a filesystem's `sync_fs` ran inside `freeze_super` (the frozen
    /// level was between 1 and 3). The task is the freezer; the freeze completes (a
    /// [`EventKind::Freeze`]) or fails later, which the collector's poll reports.
    FreezeBegin = 6,
}

impl EventKind {
    /// Decodes the raw `kind` field of an [`Event`].
    pub const fn from_raw(raw: u32) -> Option<Self> {
        Some(match raw {
            1 => Self::Freeze,
            2 => Self::Thaw,
            3 => Self::StallBegin,
            4 => Self::StallEnd,
            5 => Self::FrozenFound,
            6 => Self::FreezeBegin,
            _ => return None,
        })
    }
}

/// Which kernel hook produced an [`Event`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventSource {
    /// fexit on `freeze_super` / `thaw_super`.
    Fexit = 1,
    /// `syscalls:sys_enter_ioctl` / `sys_exit_ioctl` filtered to FIFREEZE / FITHAW.
    IoctlTracepoint = 2,
    /// `lock:contention_begin` / `contention_end`.
    LockContention = 3,
    /// The start-up probe (`probe_fd` run by the loader).
    Probe = 4,
    /// A filesystem's `sync_fs` tracepoint inside `freeze_super` (`ext4_sync_fs`,
    /// `xfs_fs_sync_fs`, `btrfs_sync_fs`); the freeze's completion is confirmed by a poll.
    SyncFs = 5,
    /// The collector's poll of a watched filesystem (`probe_fd` in track mode): a thaw, or a
    /// freeze found that no hook saw begin.
    Poll = 6,
}

impl EventSource {
    /// Decodes the raw `source` field of an [`Event`].
    pub const fn from_raw(raw: u32) -> Option<Self> {
        Some(match raw {
            1 => Self::Fexit,
            2 => Self::IoctlTracepoint,
            3 => Self::LockContention,
            4 => Self::Probe,
            5 => Self::SyncFs,
            6 => Self::Poll,
            _ => return None,
        })
    }
}

/// One record in the `EVENTS` ring buffer. The kernel side only stamps and copies; all
/// interpretation happens in userspace.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// [`EventKind`] as `u32`.
    pub kind: u32,
    /// [`EventSource`] as `u32`.
    pub source: u32,
    /// `bpf_ktime_get_ns()` when the event happened (CLOCK_MONOTONIC).
    pub ts_ns: u64,
    /// For `StallEnd`: when the wait began; for ioctl freezes/thaws: syscall entry; else 0.
    pub start_ns: u64,
    /// Thread-group id (the userspace "pid") of the task.
    pub tgid: u32,
    /// Thread id of the task.
    pub tid: u32,
    /// Return value of the freeze/thaw (0 = success, negative errno); 0 for other kinds.
    pub ret: i32,
    /// Stall level (1 WRITE, 2 PAGEFAULT, 3 FS) for stalls; `s_writers.frozen` after the
    /// operation for freezes/thaws/probes (0 unfrozen .. 4 complete).
    pub level: u32,
    /// `enum freeze_holder` of the freeze/thaw where the kernel has it (6.6+ fexit), else 0.
    pub holder: u32,
    /// `sb->s_dev` (kernel `dev_t`: `major << 20 | minor`).
    pub dev: u32,
    /// Superblock address: the identity of the filesystem while it is mounted.
    pub sb: u64,
    /// Semaphore address for stalls, 0 otherwise.
    pub lock: u64,
    /// Task `comm`, NUL padded.
    pub comm: [u8; COMM_LEN],
    /// `sb->s_id`, NUL padded.
    pub sb_id: [u8; SB_ID_LEN],
    /// `sb->s_type->name`, NUL padded (truncated to [`FSTYPE_LEN`]).
    pub fstype: [u8; FSTYPE_LEN],
}

impl Event {
    /// An all-zero event, the starting point the kernel side fills in.
    pub const ZERO: Self = Self {
        kind: 0,
        source: 0,
        ts_ns: 0,
        start_ns: 0,
        tgid: 0,
        tid: 0,
        ret: 0,
        level: 0,
        holder: 0,
        dev: 0,
        sb: 0,
        lock: 0,
        comm: [0; COMM_LEN],
        sb_id: [0; SB_ID_LEN],
        fstype: [0; FSTYPE_LEN],
    };

    /// Decodes an event from ring-buffer bytes; `None` if `bytes` is too short.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() < core::mem::size_of::<Self>() {
            return None;
        }
        // SAFETY: the length was checked, `Event` is plain old data valid for any bit pattern,
        // and `read_unaligned` places no alignment requirement on the source.
        Some(unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast::<Self>()) })
    }

    /// Decoded [`EventKind`], `None` for an unknown value.
    pub const fn event_kind(&self) -> Option<EventKind> {
        EventKind::from_raw(self.kind)
    }

    /// Decoded [`EventSource`], `None` for an unknown value.
    pub const fn event_source(&self) -> Option<EventSource> {
        EventSource::from_raw(self.source)
    }

    /// The task name (up to the first NUL; lossy bytes are cut at the first invalid one).
    pub fn comm_str(&self) -> &str {
        c_str(&self.comm)
    }

    /// The superblock id (`s_id`).
    pub fn sb_id_str(&self) -> &str {
        c_str(&self.sb_id)
    }

    /// The filesystem type name.
    pub fn fstype_str(&self) -> &str {
        c_str(&self.fstype)
    }

    /// Major number of [`Event::dev`] (kernel `MAJOR()`).
    pub const fn dev_major(&self) -> u32 {
        self.dev >> 20
    }

    /// Minor number of [`Event::dev`] (kernel `MINOR()`).
    pub const fn dev_minor(&self) -> u32 {
        self.dev & 0xF_FFFF
    }
}

/// The longest valid UTF-8 prefix of `bytes` before the first NUL.
fn c_str(bytes: &[u8]) -> &str {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    let bytes = &bytes[..end];
    match core::str::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => core::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or(""),
    }
}

/// Value of the `FROZEN_SEMS` map (key: semaphore address): which superblock and freeze level
/// a semaphore belongs to.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SemOwner {
    /// Superblock address.
    pub sb: u64,
    /// Freeze level 1..=3 of this semaphore (`rw_sem[level - 1]`).
    pub level: u32,
    /// Padding to 8 bytes.
    pub _pad: u32,
}

/// Value of the `WAITERS` map (key: thread id): a writer currently asleep on a frozen
/// superblock's semaphore.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Waiter {
    /// Semaphore address the thread waits on.
    pub lock: u64,
    /// Superblock address.
    pub sb: u64,
    /// When the wait began (`bpf_ktime_get_ns`).
    pub start_ns: u64,
    /// Freeze level 1..=3.
    pub level: u32,
    /// Padding to 8 bytes.
    pub _pad: u32,
}

/// Value of the `PENDING_IOCTLS` map (key: `pid_tgid`): a FIFREEZE/FITHAW between syscall
/// entry and exit.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PendingIoctl {
    /// Superblock the ioctl's file descriptor belongs to.
    pub sb: u64,
    /// Syscall entry time.
    pub start_ns: u64,
    /// FIFREEZE or FITHAW.
    pub cmd: u32,
    /// Padding to 8 bytes.
    pub _pad: u32,
}

/// Value of the `FREEZING` map (key: superblock address): a freeze seen under way by a
/// `sync_fs` hook, kept until a poll sees it complete or end.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Freezing {
    /// When the hook fired (`bpf_ktime_get_ns`).
    pub start_ns: u64,
    /// The freezer's thread-group id.
    pub tgid: u32,
    /// The freezer's thread id.
    pub tid: u32,
    /// The freezer's `comm`.
    pub comm: [u8; COMM_LEN],
    /// Which of `sync_filesystem`'s two `sync_fs` calls recorded it (`wait` for ext4 and
    /// btrfs, the call site for XFS): a call with the same tag is the next freeze's first.
    pub tag: u64,
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: all of these are `#[repr(C)]`, contain only integers and byte arrays, have no
    // implicit padding (every struct is laid out to multiples of its alignment) and are valid
    // for any bit pattern.
    unsafe impl aya::Pod for super::KernelOffsets {}
    unsafe impl aya::Pod for super::Event {}
    unsafe impl aya::Pod for super::SemOwner {}
    unsafe impl aya::Pod for super::Waiter {}
    unsafe impl aya::Pod for super::PendingIoctl {}
    unsafe impl aya::Pod for super::Freezing {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of};

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<Event>(), 128);
        assert_eq!(offset_of!(Event, sb), 48);
        assert_eq!(offset_of!(Event, comm), 64);
        assert_eq!(size_of::<KernelOffsets>(), 19 * 4);
        assert_eq!(size_of::<SemOwner>(), 16);
        assert_eq!(size_of::<Waiter>(), 32);
        assert_eq!(size_of::<PendingIoctl>(), 24);
        assert_eq!(size_of::<Freezing>(), 40);
    }

    #[test]
    fn decodes_event_bytes() {
        let mut ev = Event::ZERO;
        ev.kind = EventKind::StallEnd as u32;
        ev.source = EventSource::LockContention as u32;
        ev.dev = (7 << 20) | 3;
        ev.comm[..5].copy_from_slice(b"dd\0xx");
        ev.sb_id[..5].copy_from_slice(b"loop3");
        ev.fstype[..4].copy_from_slice(b"ext4");
        // SAFETY: Event is plain old data; viewing it as bytes is sound.
        let bytes = unsafe {
            core::slice::from_raw_parts((&raw const ev).cast::<u8>(), size_of::<Event>())
        };
        let back = Event::from_bytes(bytes).expect("long enough");
        assert_eq!(back, ev);
        assert_eq!(back.event_kind(), Some(EventKind::StallEnd));
        assert_eq!(back.event_source(), Some(EventSource::LockContention));
        assert_eq!(back.comm_str(), "dd");
        assert_eq!(back.sb_id_str(), "loop3");
        assert_eq!(back.fstype_str(), "ext4");
        assert_eq!((back.dev_major(), back.dev_minor()), (7, 3));
        assert!(Event::from_bytes(&bytes[..127]).is_none());
    }

    #[test]
    fn unknown_raw_values_are_rejected() {
        assert_eq!(EventKind::from_raw(0), None);
        assert_eq!(EventKind::from_raw(7), None);
        assert_eq!(EventSource::from_raw(9), None);
        let mut ev = Event::ZERO;
        ev.comm = [0xff; COMM_LEN];
        assert_eq!(ev.comm_str(), "");
    }
}
