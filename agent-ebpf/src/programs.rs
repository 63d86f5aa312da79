//! The programs, each named after the hook it serves, and the maps they share.
//!
//! Freezes come from one of three sources chosen by the loader: fexit on `freeze_super` /
//! `thaw_super` (every freeze path, where the kernel allows trampolines); the filesystems'
//! `sync_fs` tracepoints, which fire inside `freeze_super` with the freezer as current task
//! and otherwise only on sync/syncfs/umount (completion and thaw are then confirmed by the
//! collector polling `probe_fd`); or, as an explicit opt-in, the `sys_enter_ioctl` /
//! `sys_exit_ioctl` tracepoints filtered to FIFREEZE / FITHAW (which put every syscall of the
//! machine on the traced path). Stalled writers come from `lock:contention_begin` /
//! `contention_end` (tp_btf, or raw tracepoint), keeping only percpu rwsem reader waits
//! (flags 0x12) on a frozen superblock's `s_writers.rw_sem[]`.

use agent_common::{
    Event, EventKind, EventSource, Freezing, PendingIoctl, SemOwner, Waiter, COMM_LEN, FIFREEZE,
    FITHAW, LCB_F_PERCPU_READ, PROBE_OTHER_SB, PROBE_REPORT, PROBE_UNRESOLVED, SB_FREEZE_COMPLETE,
    SB_FREEZE_LEVELS,
};
use aya_ebpf::{
    bindings::{BPF_ANY, BPF_NOEXIST},
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::{btf_tracepoint, fexit, map, raw_tracepoint, tracepoint},
    maps::{HashMap, RingBuf},
    programs::{BtfTracePointContext, FExitContext, RawTracePointContext, TracePointContext},
};

use crate::{counter::Counter, kernel};

/// Events for userspace. 128 KiB hold about 960 events (136 bytes each with the record
/// header): freezes and thaws are rare, and the collector drains every event at each wake-up,
/// so only that many writers blocking in the same instant could overflow it. The agent maps
/// the data pages twice, so each KiB here is two of its resident memory (issue 13).
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(128 * 1024, 0);

/// Semaphores of superblocks seen being frozen, key: `&sb->s_writers.rw_sem[level - 1]`.
#[map]
static FROZEN_SEMS: HashMap<u64, SemOwner> = HashMap::with_max_entries(1024, 0);

/// Writers asleep on a frozen superblock, key: thread id.
#[map]
static WAITERS: HashMap<u32, Waiter> = HashMap::with_max_entries(8192, 0);

/// Freezes a sync_fs hook saw under way, key: superblock address.
#[map]
static FREEZING: HashMap<u64, Freezing> = HashMap::with_max_entries(256, 0);

/// FIFREEZE / FITHAW calls between syscall entry and exit, key: `pid_tgid`.
#[map]
static PENDING_IOCTLS: HashMap<u64, PendingIoctl> = HashMap::with_max_entries(1024, 0);

/// Number of entries in `WAITERS`: lets `contention_end`, which fires for every contended lock
/// in the system, return before any map lookup while nobody waits on a frozen filesystem.
static WAITING: Counter = Counter::new();

/// Number of entries in `PENDING_IOCTLS`, the same gate for `sys_exit_ioctl`.
static PENDING: Counter = Counter::new();

/// Offset of `cmd` in the `syscalls:sys_enter_ioctl` record (fd at 16, cmd at 24).
const IOCTL_ENTER_FD: usize = 16;
/// Offset of `cmd` in the `syscalls:sys_enter_ioctl` record.
const IOCTL_ENTER_CMD: usize = 24;
/// Offset of `ret` in the `syscalls:sys_exit_ioctl` record.
const IOCTL_EXIT_RET: usize = 16;

/// Sends `ev` to userspace; a full ring buffer drops it (userspace notices the gap).
#[inline(always)]
fn emit(ev: &Event) {
    let _ = EVENTS.output::<Event>(ev, 0);
}

/// Records the three semaphores of a frozen `sb`, so its writers are found by one lookup.
#[inline(always)]
fn remember_frozen(sb: u64) {
    let mut level = 1u32;
    while level <= SB_FREEZE_LEVELS {
        let owner = SemOwner { sb, level, _pad: 0 };
        let _ = FROZEN_SEMS.insert(kernel::sem_addr(sb, level), owner, u64::from(BPF_ANY));
        level += 1;
    }
}

/// Forgets the semaphores of a thawed `sb`.
#[inline(always)]
fn forget_frozen(sb: u64) {
    let mut level = 1u32;
    while level <= SB_FREEZE_LEVELS {
        let _ = FROZEN_SEMS.remove(kernel::sem_addr(sb, level));
        level += 1;
    }
}

/// Emits a freeze or thaw outcome for `sb` and keeps `FROZEN_SEMS` in step with it.
#[inline(always)]
fn freeze_outcome(
    kind: EventKind,
    source: EventSource,
    sb: u64,
    ret: i32,
    start_ns: u64,
    holder: u32,
) {
    let frozen = kernel::frozen_level(sb).unwrap_or(0);
    if ret == 0 {
        if frozen == SB_FREEZE_COMPLETE {
            remember_frozen(sb);
        } else if frozen == 0 {
            forget_frozen(sb);
        }
    }
    let mut ev = Event::ZERO;
    ev.kind = kind as u32;
    ev.source = source as u32;
    // SAFETY: the helper has no preconditions.
    ev.ts_ns = unsafe { bpf_ktime_get_ns() };
    ev.start_ns = start_ns;
    ev.ret = ret;
    ev.level = frozen;
    ev.holder = holder;
    kernel::fill_task(&mut ev);
    kernel::fill_superblock(&mut ev, sb);
    emit(&ev);
}

/// fexit `freeze_super(sb, ...)`: reads only `sb` (arg 0), valid for every signature.
#[fexit(function = "freeze_super")]
pub fn fexit_freeze_super(ctx: FExitContext) -> i32 {
    on_fexit(&ctx, EventKind::Freeze, false);
    0
}

/// fexit `freeze_super(sb, who, ...)` (6.6+): also reports the freeze holder.
#[fexit(function = "freeze_super")]
pub fn fexit_freeze_super_holder(ctx: FExitContext) -> i32 {
    on_fexit(&ctx, EventKind::Freeze, true);
    0
}

/// fexit `thaw_super(sb, ...)`: reads only `sb`.
#[fexit(function = "thaw_super")]
pub fn fexit_thaw_super(ctx: FExitContext) -> i32 {
    on_fexit(&ctx, EventKind::Thaw, false);
    0
}

/// fexit `thaw_super(sb, who, ...)` (6.6+): also reports the freeze holder.
#[fexit(function = "thaw_super")]
pub fn fexit_thaw_super_holder(ctx: FExitContext) -> i32 {
    on_fexit(&ctx, EventKind::Thaw, true);
    0
}

#[inline(always)]
fn on_fexit(ctx: &FExitContext, kind: EventKind, has_holder: bool) {
    if !kernel::offsets_valid() {
        return;
    }
    let sb: u64 = ctx.arg(0);
    let holder: u32 = if has_holder {
        ctx.arg::<u64>(1) as u32
    } else {
        0
    };
    let ret: i32 = ctx.ret::<i64>().map_or(0, |r| r as i32);
    freeze_outcome(kind, EventSource::Fexit, sb, ret, 0, holder);
}

/// `syscalls:sys_enter_ioctl`: remembers FIFREEZE / FITHAW calls and their superblock.
#[tracepoint(category = "syscalls", name = "sys_enter_ioctl")]
pub fn sys_enter_ioctl(ctx: TracePointContext) -> u32 {
    // SAFETY: offsets from the tracepoint's format file (stable syscall record layout).
    let cmd = unsafe { ctx.read_at::<u64>(IOCTL_ENTER_CMD) }.unwrap_or(0) as u32;
    if cmd != FIFREEZE && cmd != FITHAW {
        return 0;
    }
    if !kernel::offsets_valid() {
        return 0;
    }
    // SAFETY: as above.
    let fd = unsafe { ctx.read_at::<u64>(IOCTL_ENTER_FD) }.unwrap_or(u64::MAX) as u32;
    let Some(sb) = kernel::sb_of_fd(u64::from(fd)) else {
        return 0;
    };
    let pending = PendingIoctl {
        sb,
        // SAFETY: the helper has no preconditions.
        start_ns: unsafe { bpf_ktime_get_ns() },
        cmd,
        _pad: 0,
    };
    let key = bpf_get_current_pid_tgid();
    if PENDING_IOCTLS
        .insert(key, pending, u64::from(BPF_NOEXIST))
        .is_ok()
    {
        PENDING.add(1);
    } else {
        let _ = PENDING_IOCTLS.insert(key, pending, u64::from(BPF_ANY));
    }
    0
}

/// `syscalls:sys_exit_ioctl`: reports the outcome of a remembered FIFREEZE / FITHAW.
#[tracepoint(category = "syscalls", name = "sys_exit_ioctl")]
pub fn sys_exit_ioctl(ctx: TracePointContext) -> u32 {
    if PENDING.get() == 0 {
        return 0;
    }
    let key = bpf_get_current_pid_tgid();
    // SAFETY: the value is copied out before the entry is removed.
    let Some(pending) = (unsafe { PENDING_IOCTLS.get(key) }).copied() else {
        return 0;
    };
    if PENDING_IOCTLS.remove(key).is_ok() {
        PENDING.sub(1);
    }
    // SAFETY: offset from the tracepoint's format file.
    let ret = unsafe { ctx.read_at::<i64>(IOCTL_EXIT_RET) }.unwrap_or(0) as i32;
    let kind = if pending.cmd == FIFREEZE {
        EventKind::Freeze
    } else {
        EventKind::Thaw
    };
    freeze_outcome(
        kind,
        EventSource::IoctlTracepoint,
        pending.sb,
        ret,
        pending.start_ns,
        0,
    );
    0
}

/// Never attached: run by userspace through `BPF_PROG_TEST_RUN` with
/// `(fd, mode, expected_sb)`, in the caller's own context, so `fd` is one of its descriptors
/// (a mountpoint it opened). Returns the superblock's frozen level, [`PROBE_UNRESOLVED`] or
/// [`PROBE_OTHER_SB`]. Mode [`PROBE_REPORT`] (start-up) reports a frozen filesystem as found;
/// mode [`PROBE_TRACK`] (the collector's poll) completes or ends a freeze a sync_fs hook saw
/// begin and reports the thaw of a filesystem known frozen. Nothing here runs on any other
/// task's path: the cost is the poller's alone.
///
/// Written out instead of `#[raw_tracepoint]`, whose wrapper discards the return value.
#[unsafe(no_mangle)]
#[unsafe(link_section = "raw_tp/probe_fd")]
pub fn probe_fd(ctx: *mut core::ffi::c_void) -> u32 {
    probe(&RawTracePointContext::new(ctx))
}

/// The body of [`probe_fd`].
#[inline(always)]
fn probe(ctx: &RawTracePointContext) -> u32 {
    let fd: u64 = ctx.arg(0);
    let mode: u64 = ctx.arg(1);
    let expected: u64 = ctx.arg(2);
    if !kernel::offsets_valid() {
        return PROBE_UNRESOLVED;
    }
    let Some(sb) = kernel::sb_of_fd(fd) else {
        return PROBE_UNRESOLVED;
    };
    if expected != 0 && expected != sb {
        return PROBE_OTHER_SB;
    }
    let frozen = kernel::frozen_level(sb).unwrap_or(0);
    if mode == PROBE_REPORT {
        if frozen != 0 {
            if frozen == SB_FREEZE_COMPLETE {
                remember_frozen(sb);
            }
            emit_found(sb, frozen, EventSource::Probe);
        }
    } else {
        track(sb, frozen);
    }
    frozen
}

/// The collector's poll of one watched superblock.
#[inline(always)]
fn track(sb: u64, frozen: u32) {
    // SAFETY: the value is copied out immediately.
    let freezing = unsafe { FREEZING.get(sb) }.copied();
    let known_frozen = is_known_frozen(sb);
    if frozen == SB_FREEZE_COMPLETE {
        if let Some(f) = freezing {
            let _ = FREEZING.remove(sb);
            remember_frozen(sb);
            emit_freeze_by(sb, &f);
        } else if !known_frozen {
            remember_frozen(sb);
            emit_found(sb, frozen, EventSource::Poll);
        }
    } else if frozen == 0 {
        if let Some(f) = freezing {
            // Completed and thawed again between two polls (or failed after its sync, which
            // the kernel does not say): report the freeze and its end.
            let _ = FREEZING.remove(sb);
            emit_freeze_by(sb, &f);
            emit_thaw_seen(sb, EventSource::Poll);
        } else if known_frozen {
            forget_frozen(sb);
            emit_thaw_seen(sb, EventSource::Poll);
        }
    }
}

/// True if `FROZEN_SEMS` holds `sb` (a freeze reported and not yet thawed).
#[inline(always)]
fn is_known_frozen(sb: u64) -> bool {
    // SAFETY: only presence is checked.
    unsafe { FROZEN_SEMS.get(kernel::sem_addr(sb, 1)) }.is_some()
}

/// Emits a completed freeze of `sb` made by the task a sync_fs hook recorded.
#[inline(always)]
fn emit_freeze_by(sb: u64, f: &Freezing) {
    let mut ev = Event::ZERO;
    ev.kind = EventKind::Freeze as u32;
    ev.source = EventSource::SyncFs as u32;
    // SAFETY: the helper has no preconditions.
    ev.ts_ns = unsafe { bpf_ktime_get_ns() };
    ev.start_ns = f.start_ns;
    ev.level = SB_FREEZE_COMPLETE;
    ev.tgid = f.tgid;
    ev.tid = f.tid;
    ev.comm = f.comm;
    kernel::fill_superblock(&mut ev, sb);
    emit(&ev);
}

/// Emits a thaw of `sb` noticed after the fact: the thawing task is unknown (zero).
#[inline(always)]
fn emit_thaw_seen(sb: u64, source: EventSource) {
    let mut ev = Event::ZERO;
    ev.kind = EventKind::Thaw as u32;
    ev.source = source as u32;
    // SAFETY: the helper has no preconditions.
    ev.ts_ns = unsafe { bpf_ktime_get_ns() };
    kernel::fill_superblock(&mut ev, sb);
    emit(&ev);
}

/// Emits "found frozen at `frozen`" for `sb` (no freezer known).
#[inline(always)]
fn emit_found(sb: u64, frozen: u32, source: EventSource) {
    let mut ev = Event::ZERO;
    ev.kind = EventKind::FrozenFound as u32;
    ev.source = source as u32;
    // SAFETY: the helper has no preconditions.
    ev.ts_ns = unsafe { bpf_ktime_get_ns() };
    ev.level = frozen;
    kernel::fill_superblock(&mut ev, sb);
    emit(&ev);
}

/// Raw tracepoint `ext4_sync_fs(sb, wait)`.
#[raw_tracepoint(tracepoint = "ext4_sync_fs")]
pub fn sync_fs_ext4(ctx: RawTracePointContext) -> i32 {
    on_sync_fs(ctx.arg(0), ctx.arg(1));
    0
}

/// Raw tracepoint `xfs_fs_sync_fs(mp, caller_ip)`.
#[raw_tracepoint(tracepoint = "xfs_fs_sync_fs")]
pub fn sync_fs_xfs(ctx: RawTracePointContext) -> i32 {
    if let Some(sb) = kernel::sb_of_xfs_mount(ctx.arg(0)) {
        on_sync_fs(sb, ctx.arg(1));
    }
    0
}

/// Raw tracepoint `btrfs_sync_fs(fs_info, wait)`.
#[raw_tracepoint(tracepoint = "btrfs_sync_fs")]
pub fn sync_fs_btrfs(ctx: RawTracePointContext) -> i32 {
    if let Some(sb) = kernel::sb_of_btrfs(ctx.arg(0)) {
        on_sync_fs(sb, ctx.arg(1));
    }
    0
}

/// A filesystem's `sync_fs` ran. Outside a freeze (sync, syncfs, umount) the frozen level is 0
/// and nothing happens; inside `freeze_super` it is 2 (`SB_FREEZE_PAGEFAULT`: writers are
/// already shut out), and the current task is the freezer. The first of `sync_filesystem`'s
/// two calls records the freeze and reports it begun; `tag` tells the calls apart (`wait`,
/// or the XFS call site), so a first call that finds a record with its own tag is the next
/// freeze: the recorded one completed and was thawed between two polls.
#[inline(always)]
fn on_sync_fs(sb: u64, tag: u64) {
    if !kernel::offsets_valid() {
        return;
    }
    let frozen = kernel::frozen_level(sb).unwrap_or(0);
    if frozen == 0 || frozen >= SB_FREEZE_COMPLETE {
        return;
    }
    if is_known_frozen(sb) {
        // It was thawed and is being frozen again before a poll saw the thaw.
        forget_frozen(sb);
        emit_thaw_seen(sb, EventSource::SyncFs);
    }
    // SAFETY: the value is copied out immediately.
    if let Some(prev) = unsafe { FREEZING.get(sb) }.copied() {
        if prev.tag != tag {
            return; // the second call of the same freeze
        }
        emit_freeze_by(sb, &prev);
        emit_thaw_seen(sb, EventSource::SyncFs);
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let mut f = Freezing {
        // SAFETY: the helper has no preconditions.
        start_ns: unsafe { bpf_ktime_get_ns() },
        tgid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
        comm: [0; COMM_LEN],
        tag,
    };
    if let Ok(comm) = bpf_get_current_comm() {
        f.comm = comm;
    }
    if FREEZING.insert(sb, f, u64::from(BPF_ANY)).is_err() {
        return;
    }
    let mut ev = Event::ZERO;
    ev.kind = EventKind::FreezeBegin as u32;
    ev.source = EventSource::SyncFs as u32;
    ev.ts_ns = f.start_ns;
    ev.start_ns = f.start_ns;
    ev.level = frozen;
    kernel::fill_task(&mut ev);
    kernel::fill_superblock(&mut ev, sb);
    emit(&ev);
}

/// tp_btf `lock:contention_begin(void *lock, unsigned int flags)`.
#[btf_tracepoint(function = "contention_begin")]
pub fn tp_btf_contention_begin(ctx: BtfTracePointContext) -> i32 {
    let flags: u64 = ctx.arg(1);
    if flags as u32 != LCB_F_PERCPU_READ {
        return 0;
    }
    on_percpu_read_wait(ctx.arg(0));
    0
}

/// tp_btf `lock:contention_end(void *lock, int ret)`.
#[btf_tracepoint(function = "contention_end")]
pub fn tp_btf_contention_end(ctx: BtfTracePointContext) -> i32 {
    if WAITING.get() == 0 {
        return 0;
    }
    on_wait_end(ctx.arg(0));
    0
}

/// Raw tracepoint `contention_begin`, for kernels where tp_btf cannot attach.
#[raw_tracepoint(tracepoint = "contention_begin")]
pub fn raw_tp_contention_begin(ctx: RawTracePointContext) -> i32 {
    let flags: u64 = ctx.arg(1);
    if flags as u32 != LCB_F_PERCPU_READ {
        return 0;
    }
    on_percpu_read_wait(ctx.arg(0));
    0
}

/// Raw tracepoint `contention_end`.
#[raw_tracepoint(tracepoint = "contention_end")]
pub fn raw_tp_contention_end(ctx: RawTracePointContext) -> i32 {
    if WAITING.get() == 0 {
        return 0;
    }
    on_wait_end(ctx.arg(0));
    0
}

/// A percpu rwsem reader is about to sleep on `lock`: if it is a frozen superblock's
/// semaphore, remember the waiter and tell userspace.
#[inline(always)]
fn on_percpu_read_wait(lock: u64) {
    if !kernel::offsets_valid() {
        return;
    }
    // SAFETY: the value is copied out immediately.
    let (sb, level) = match unsafe { FROZEN_SEMS.get(lock) } {
        Some(owner) => (owner.sb, owner.level),
        None => match kernel::frozen_sb_of_lock(lock) {
            Some(found) => found,
            None => return,
        },
    };
    // Validate even a map hit: the superblock must still be frozen at least this far.
    let frozen = kernel::frozen_level(sb).unwrap_or(0);
    if frozen < level || frozen > SB_FREEZE_COMPLETE {
        return;
    }
    // SAFETY: the helper has no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    let tid = bpf_get_current_pid_tgid() as u32;
    let waiter = Waiter {
        lock,
        sb,
        start_ns: now,
        level,
        _pad: 0,
    };
    if WAITERS.insert(tid, waiter, u64::from(BPF_NOEXIST)).is_ok() {
        WAITING.add(1);
    } else if WAITERS.insert(tid, waiter, u64::from(BPF_ANY)).is_err() {
        return;
    }
    let mut ev = Event::ZERO;
    ev.kind = EventKind::StallBegin as u32;
    ev.source = EventSource::LockContention as u32;
    ev.ts_ns = now;
    ev.start_ns = now;
    ev.level = level;
    ev.lock = lock;
    kernel::fill_task(&mut ev);
    kernel::fill_superblock(&mut ev, sb);
    emit(&ev);
}

/// A contended wait on `lock` ended: if it was a remembered frozen-fs writer, report the stall.
#[inline(always)]
fn on_wait_end(lock: u64) {
    let tid = bpf_get_current_pid_tgid() as u32;
    // SAFETY: the value is copied out before the entry is removed.
    let Some(waiter) = (unsafe { WAITERS.get(tid) }).copied() else {
        return;
    };
    if waiter.lock != lock {
        return;
    }
    if WAITERS.remove(tid).is_ok() {
        WAITING.sub(1);
    }
    let mut ev = Event::ZERO;
    ev.kind = EventKind::StallEnd as u32;
    ev.source = EventSource::LockContention as u32;
    // SAFETY: the helper has no preconditions.
    ev.ts_ns = unsafe { bpf_ktime_get_ns() };
    ev.start_ns = waiter.start_ns;
    ev.level = waiter.level;
    ev.lock = lock;
    kernel::fill_task(&mut ev);
    kernel::fill_superblock(&mut ev, waiter.sb);
    emit(&ev);
}
