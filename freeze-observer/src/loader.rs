//! Loading and attaching the embedded `agent-ebpf` object.
//!
//! Offsets come from BTF ([`crate::btf`]) and go into the `OFFSETS` global. Freezes are seen by
//! fexit on `freeze_super`/`thaw_super` where the kernel allows trampolines; otherwise by the
//! filesystems' `sync_fs` tracepoints (ext4, XFS, btrfs), which fire inside `freeze_super` and
//! on sync/syncfs/umount but on no other path, the freeze's completion and thaw confirmed by the
//! collector's poll ([`crate::probe`]). The `sys_enter_ioctl`/`sys_exit_ioctl` tracepoints
//! (FIFREEZE/FITHAW only, and every syscall of the machine on the traced path) are an explicit
//! opt-in; `none` sees freezes only through the writers blocked on them. Stalled writers are
//! seen by tp_btf `contention_begin`/`contention_end` where aya parses the kernel's BTF anyway
//! (for fexit), else by the raw tracepoints of the same name (the same programs' logic, no
//! BTF needed). Whether fexit will work is asked of the kernel first ([`probe_fexit`]), so
//! aya's 18 MiB parse of the kernel's BTF happens only where fexit is really used.
//! Everything here blocks (bpf syscalls, BTF parsing): call it from `spawn_blocking`.

use std::{
    ffi::CString,
    fmt,
    path::{Path, PathBuf},
    str::FromStr,
    time::Instant,
};

use aya::{
    maps::{MapData, RingBuf},
    programs::{BtfTracePoint, FExit, ProgramError, RawTracePoint, TracePoint},
    Ebpf, EbpfError, EbpfLoader, Endianness,
};

use crate::{btf::Btf, probe::Probe};

/// The eBPF object built by build.rs (empty when built with `AYA_BUILD_SKIP=1`).
pub(crate) static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/agent-ebpf"));

/// `FromStr` and `Display` for a command-line choice, from one table of names; the parse error
/// lists the accepted names.
macro_rules! named_choice {
    ($ty:ident, $what:literal, { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl FromStr for $ty {
            type Err = String;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($name => Ok(Self::$variant),)+
                    other => Err(format!(
                        concat!("invalid ", $what, " `{}` (expected one of:", $(" ", $name,)+ ")"),
                        other
                    )),
                }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(match self {
                    $(Self::$variant => $name,)+
                })
            }
        }
    };
}

/// `--ebpf auto|required|off`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EbpfMode {
    /// Load; on failure log the reason once and run on without the observer.
    #[default]
    Auto,
    /// Load; on failure refuse to start.
    Required,
    /// Never load.
    Off,
}

named_choice!(EbpfMode, "eBPF mode", { Auto => "auto", Required => "required", Off => "off" });

/// Where freezes are observed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FreezeSource {
    /// fexit on `freeze_super` / `thaw_super`: every freeze path.
    Fexit,
    /// `syscalls:sys_enter_ioctl` / `sys_exit_ioctl` filtered to FIFREEZE / FITHAW.
    IoctlTracepoints,
    /// The filesystems' `sync_fs` tracepoints (inside `freeze_super`: the freezer and the
    /// start), completion and thaw confirmed by polling the frozen filesystems. Sees every
    /// freeze of ext4, XFS and btrfs on any path, at no cost to other syscalls.
    SyncFs,
    /// No freeze hook: writer stalls only. A frozen filesystem shows up (origin unknown) when
    /// a writer blocks on it, and counts as thawed when that writer resumes. Chosen only by
    /// configuration, for kernels without trampolines where the syscall tracepoints' cost on
    /// every syscall is not acceptable.
    None,
}

impl FreezeSource {
    /// Short label (`fexit`, `sync_fs`, `ioctl_tracepoints`, `none`), e.g. for a metric.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Fexit => "fexit",
            Self::SyncFs => "sync_fs",
            Self::IoctlTracepoints => "ioctl_tracepoints",
            Self::None => "none",
        }
    }
}

/// `--ebpf-freeze-hook auto|fexit|sync-fs|ioctl|none`: which freeze source to use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FreezeHook {
    /// fexit where the kernel allows trampolines, else the sync_fs tracepoints (else none).
    #[default]
    Auto,
    /// fexit only; loading fails where the kernel refuses it.
    Fexit,
    /// The filesystems' sync_fs tracepoints plus polling of frozen filesystems.
    SyncFs,
    /// The FIFREEZE/FITHAW syscall tracepoints (every syscall takes the traced path).
    Ioctl,
    /// No freeze hook (writer stalls only).
    None,
}

named_choice!(FreezeHook, "freeze hook", {
    Auto => "auto",
    Fexit => "fexit",
    SyncFs => "sync-fs",
    Ioctl => "ioctl",
    None => "none",
});

impl FreezeHook {
    /// The forced source, or `None` for auto.
    pub const fn forced(self) -> Option<FreezeSource> {
        match self {
            Self::Auto => None,
            Self::Fexit => Some(FreezeSource::Fexit),
            Self::SyncFs => Some(FreezeSource::SyncFs),
            Self::Ioctl => Some(FreezeSource::IoctlTracepoints),
            Self::None => Some(FreezeSource::None),
        }
    }
}

/// Which hook reports writers waiting on frozen filesystems.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ContentionHook {
    /// tp_btf `lock:contention_begin` / `contention_end`.
    TpBtf,
    /// Raw tracepoints `contention_begin` / `contention_end`.
    RawTracepoint,
}

impl ContentionHook {
    /// Short label (`tp_btf`, `raw_tracepoint`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::TpBtf => "tp_btf",
            Self::RawTracepoint => "raw_tracepoint",
        }
    }
}

/// What to load and how.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Kernel BTF to read offsets from.
    pub btf_path: PathBuf,
    /// Force a freeze source instead of trying fexit first (tests, troubleshooting).
    pub freeze_source: Option<FreezeSource>,
    /// Force a contention hook instead of trying tp_btf first.
    pub contention_hook: Option<ContentionHook>,
    /// Probe mounted filesystems at start for ones already frozen.
    pub probe_frozen: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            btf_path: PathBuf::from(crate::btf::VMLINUX_BTF),
            freeze_source: None,
            contention_hook: None,
            probe_frozen: true,
        }
    }
}

/// Why loading failed, worded for an operator.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// BTF missing or unusable (see the inner message).
    #[error(transparent)]
    Btf(#[from] crate::btf::BtfError),
    /// The kernel refused for lack of privilege.
    #[error("permission denied while {what}: the observer needs root or CAP_BPF + CAP_PERFMON (+ CAP_SYS_ADMIN for tracefs)")]
    PermissionDenied {
        /// What was being done.
        what: String,
    },
    /// The kernel refused although we are root: a policy (lockdown, no BPF trampolines) rather
    /// than missing capabilities.
    #[error("the kernel refused {what} with EPERM although running as root (kernel lockdown, or no BPF trampoline/ftrace support)")]
    Refused {
        /// What was refused.
        what: String,
    },
    /// A needed kernel feature is missing.
    #[error("kernel too old or lacking a feature: {what}")]
    KernelTooOld {
        /// What is missing.
        what: String,
    },
    /// The crate was built with `AYA_BUILD_SKIP=1`.
    #[error("the eBPF object was not built into this binary (built with AYA_BUILD_SKIP)")]
    ObjectMissing,
    /// The object could not be loaded.
    #[error("loading the eBPF object: {0}")]
    Object(#[source] Box<EbpfError>),
    /// A program could not be loaded or attached.
    #[error("program {name}: {source}")]
    Program {
        /// The program.
        name: &'static str,
        /// The error.
        #[source]
        source: Box<ProgramError>,
    },
    /// A map was missing or of the wrong type.
    #[error("map {name}: {detail}")]
    Map {
        /// The map.
        name: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// tracefs could not be found or mounted.
    #[error("tracefs unavailable: {0}")]
    Tracefs(#[source] std::io::Error),
    /// Another system call failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// True if any error in the chain is an EPERM/EACCES from the kernel.
fn is_permission_error(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if matches!(io.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES)) {
                return true;
            }
        }
        cur = e.source();
    }
    false
}

/// Maps a program's load or attach error to what an operator reads.
pub(crate) fn program_error(name: &'static str, what: &str, err: ProgramError) -> LoadError {
    if is_permission_error(&err) {
        let what = format!("{what} {name}");
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            LoadError::Refused { what }
        } else {
            LoadError::PermissionDenied { what }
        }
    } else {
        LoadError::Program {
            name,
            source: Box::new(err),
        }
    }
}

/// The loaded, attached programs and the channel to read.
pub struct Loaded {
    /// The object; dropping it detaches everything.
    pub ebpf: Ebpf,
    /// The ring buffer of [`agent_common::Event`]s.
    pub events: RingBuf<MapData>,
    /// The on-demand probe (start-up, and the poll of frozen filesystems).
    pub(crate) probe: Probe,
    /// Where freezes are seen from.
    pub freeze_source: FreezeSource,
    /// Why that source.
    pub freeze_source_reason: String,
    /// Which hook reports stalls.
    pub contention_hook: ContentionHook,
    /// How long loading and attaching took.
    pub load_time: std::time::Duration,
}

impl fmt::Debug for Loaded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Loaded")
            .field("freeze_source", &self.freeze_source)
            .field("freeze_source_reason", &self.freeze_source_reason)
            .field("contention_hook", &self.contention_hook)
            .field("load_time", &self.load_time)
            .finish_non_exhaustive()
    }
}

/// Loads the object, attaches the programs and (optionally) probes for already-frozen
/// filesystems. Blocking.
///
/// The kernel's BTF is read twice at most, never both at once: our lean index
/// ([`crate::btf`], about 1 MiB) for the offsets and every decision, then aya's full parse
/// (about 18 MiB of heap) only when a program that needs it will be loaded: fexit (forced, or
/// `auto` where [`probe_fexit`] showed the kernel accepts it) or a forced tp_btf contention
/// hook. Elsewhere (kernels without BPF trampolines, `sync-fs`, `ioctl`, `none`) the writers
/// are watched through the raw tracepoints of the same name and aya parses nothing.
pub fn load(opts: &LoadOptions) -> Result<Loaded, LoadError> {
    let started = Instant::now();
    if EBPF_OBJECT.is_empty() {
        return Err(LoadError::ObjectMissing);
    }
    let btf = Btf::from_file(&opts.btf_path)?;
    let mut names: Vec<&str> = crate::btf::OFFSET_NAMES.to_vec();
    names.extend(LOADER_NAMES);
    btf.prefetch(&names)?;
    if !btf.has_named_type("btf_trace_contention_begin") {
        return Err(LoadError::KernelTooOld {
            what: "no lock:contention_begin tracepoint (needs Linux 5.19+)".to_owned(),
        });
    }
    let offsets = btf.kernel_offsets()?;
    let arity = FexitArity::read(&btf);
    let sync_fs = SyncFsHooks::read(&btf, &offsets);
    // Whether fexit can work here, asked of the kernel without aya: only then is aya's parse
    // worth its memory.
    let fexit = match opts.freeze_source {
        None => probe_fexit(&btf),
        Some(_) => Err(LoadError::KernelTooOld {
            what: "fexit not requested".to_owned(),
        }),
    };
    drop(btf);
    let fexit_wanted = match opts.freeze_source {
        None => fexit.is_ok(),
        Some(FreezeSource::Fexit) => true,
        Some(_) => false,
    };
    let aya_btf = if fexit_wanted || opts.contention_hook == Some(ContentionHook::TpBtf) {
        Some(
            aya::Btf::parse_file(&opts.btf_path, Endianness::default())
                .map_err(|e| LoadError::Object(Box::new(EbpfError::BtfError(e))))?,
        )
    } else {
        None
    };

    let mut loader = loader_without_kernel_btf();
    // Rust programs carry no CO-RE relocations (aya-rs/aya#349); aya uses the kernel BTF
    // here only for those, so it is handed over only where it exists anyway.
    let mut ebpf = loader
        .btf(aya_btf.as_ref())
        .override_global("OFFSETS", &offsets, true)
        .load(EBPF_OBJECT)
        .map_err(|e| {
            if is_permission_error(&e) {
                LoadError::PermissionDenied {
                    what: "creating eBPF maps".to_owned(),
                }
            } else {
                LoadError::Object(Box::new(e))
            }
        })?;

    let contention_hook = attach_contention(&mut ebpf, aya_btf.as_ref(), opts.contention_hook)?;
    let (freeze_source, freeze_source_reason) = attach_freeze_source(
        &mut ebpf,
        arity,
        &sync_fs,
        aya_btf.as_ref(),
        fexit,
        opts.freeze_source,
    )?;
    drop(aya_btf);

    let probe = Probe::load(&mut ebpf)?;
    if opts.probe_frozen {
        if let Err(e) = probe.report_frozen_filesystems() {
            tracing::warn!(error = %e, "could not probe for filesystems frozen before start");
        }
    }

    let events = ebpf.take_map("EVENTS").ok_or(LoadError::Map {
        name: "EVENTS",
        detail: "missing from the object".to_owned(),
    })?;
    let events = RingBuf::try_from(events).map_err(|e| LoadError::Map {
        name: "EVENTS",
        detail: e.to_string(),
    })?;
    Ok(Loaded {
        ebpf,
        events,
        probe,
        freeze_source,
        freeze_source_reason,
        contention_hook,
        load_time: started.elapsed(),
    })
}

/// Names the loader looks up in BTF besides [`crate::btf::OFFSET_NAMES`], resolved together.
const LOADER_NAMES: [&str; 6] = [
    "btf_trace_contention_begin",
    "btf_trace_ext4_sync_fs",
    "btf_trace_xfs_fs_sync_fs",
    "btf_trace_btrfs_sync_fs",
    "freeze_super",
    "thaw_super",
];

/// An `EbpfLoader` holding no kernel BTF, built without parsing any.
///
/// aya 0.14's `EbpfLoader::new()` parses `/sys/kernel/btf/vmlinux` unconditionally (about
/// 18 MiB of heap, dropped again by `.btf(None)`, but the peak stays in VmHWM), and the
/// loader has no other constructor. So it is built on a short-lived thread whose root
/// directory is `/sys/kernel/btf` (`unshare(CLONE_FS)` gives that thread its own root, the
/// rest of the process is untouched), where `/sys/kernel/btf/vmlinux` does not resolve and
/// aya's parse fails at once. Without `CAP_SYS_CHROOT` this falls back to the plain
/// constructor and its transient parse.
fn loader_without_kernel_btf() -> EbpfLoader<'static> {
    let built = std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: unshare(CLONE_FS) affects only this thread's root, cwd and umask.
            if unsafe { libc::unshare(libc::CLONE_FS) } != 0 {
                return None;
            }
            let root = CString::new("/sys/kernel/btf").expect("no NUL");
            // SAFETY: a valid NUL-terminated path; the changed root is this thread's own
            // (after the unshare above) and ends with it.
            if unsafe { libc::chroot(root.as_ptr()) } != 0 {
                return None;
            }
            Some(EbpfLoader::new())
        })
        .join()
        .ok()
        .flatten()
    });
    let mut loader = built.unwrap_or_else(|| {
        tracing::debug!("cannot isolate the loader's root; aya parses the kernel BTF once");
        EbpfLoader::new()
    });
    loader.btf(None);
    loader
}

/// Asks the kernel whether it accepts a fexit program on `freeze_super`, without aya (whose
/// BTF parse costs ~18 MiB): `BPF_PROG_LOAD` of a two-instruction `BPF_PROG_TYPE_TRACING`
/// program, `expected_attach_type = BPF_TRACE_FEXIT`, `attach_btf_id` from our index. Kernels
/// without BPF trampolines (no ftrace direct calls) refuse it with EPERM even for root, as
/// they refuse the real program; the probe's program is closed at once and never attached.
pub fn probe_fexit(btf: &Btf) -> Result<(), LoadError> {
    const BPF_PROG_LOAD: libc::c_long = 5;
    const BPF_PROG_TYPE_TRACING: u32 = 26;
    const BPF_TRACE_FEXIT: u32 = 25;
    /// The leading fields of `union bpf_attr` for `BPF_PROG_LOAD`, up to `attach_btf_obj_fd`
    /// (the kernel accepts a shorter attribute and zero-fills the rest).
    #[repr(C)]
    #[derive(Default)]
    struct ProgLoadAttr {
        prog_type: u32,
        insn_cnt: u32,
        insns: u64,
        license: u64,
        log_level: u32,
        log_size: u32,
        log_buf: u64,
        kern_version: u32,
        prog_flags: u32,
        prog_name: [u8; 16],
        prog_ifindex: u32,
        expected_attach_type: u32,
        prog_btf_fd: u32,
        func_info_rec_size: u32,
        func_info: u64,
        func_info_cnt: u32,
        line_info_rec_size: u32,
        line_info: u64,
        line_info_cnt: u32,
        attach_btf_id: u32,
        attach_btf_obj_fd: u32,
    }
    // 120 bytes, no padding: every byte the kernel reads is initialised.
    const _: () = assert!(std::mem::size_of::<ProgLoadAttr>() == 120);
    let attach_btf_id = btf.func_id("freeze_super")?;
    // r0 = 0; exit
    let insns: [u64; 2] = [0x0000_0000_0000_00b7, 0x0000_0000_0000_0095];
    let license = b"GPL\0";
    let mut name = [0u8; 16];
    name[..11].copy_from_slice(b"probe_fexit");
    let attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_TRACING,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        prog_name: name,
        expected_attach_type: BPF_TRACE_FEXIT,
        attach_btf_id,
        ..ProgLoadAttr::default()
    };
    // SAFETY: `attr` is a valid, fully initialised prefix of `union bpf_attr` whose pointers
    // (`insns`, `license`) outlive the call; the size passed is its size.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            &attr as *const ProgLoadAttr,
            std::mem::size_of::<ProgLoadAttr>(),
        )
    };
    if fd >= 0 {
        // SAFETY: the kernel just returned this fd to us; nothing else owns it.
        unsafe { libc::close(fd as libc::c_int) };
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    let what = "loading a fexit program on freeze_super".to_owned();
    Err(match err.raw_os_error() {
        // SAFETY: geteuid has no preconditions.
        Some(libc::EPERM) if unsafe { libc::geteuid() } == 0 => LoadError::Refused { what },
        Some(libc::EPERM | libc::EACCES) => LoadError::PermissionDenied { what },
        _ => LoadError::Io {
            what: "probing fexit (BPF_PROG_LOAD)",
            source: err,
        },
    })
}

/// Attaches the contention hooks: the forced ones, else tp_btf where aya's BTF was parsed
/// anyway (falling back to the raw tracepoints), else the raw tracepoints.
fn attach_contention(
    ebpf: &mut Ebpf,
    aya_btf: Option<&aya::Btf>,
    forced: Option<ContentionHook>,
) -> Result<ContentionHook, LoadError> {
    let tp_btf = |ebpf: &mut Ebpf| -> Result<(), LoadError> {
        let aya_btf = aya_btf.ok_or(LoadError::KernelTooOld {
            what: "tp_btf needs the kernel BTF parsed by aya".to_owned(),
        })?;
        for (name, tp) in [
            ("tp_btf_contention_begin", "contention_begin"),
            ("tp_btf_contention_end", "contention_end"),
        ] {
            let prog: &mut BtfTracePoint = program(ebpf, name)?;
            prog.load(tp, aya_btf)
                .map_err(|e| program_error(name, "loading", e))?;
            prog.attach()
                .map_err(|e| program_error(name, "attaching", e))?;
        }
        Ok(())
    };
    let raw = |ebpf: &mut Ebpf| -> Result<(), LoadError> {
        for (name, tp) in [
            ("raw_tp_contention_begin", "contention_begin"),
            ("raw_tp_contention_end", "contention_end"),
        ] {
            let prog: &mut RawTracePoint = program(ebpf, name)?;
            prog.load().map_err(|e| program_error(name, "loading", e))?;
            prog.attach(tp)
                .map_err(|e| program_error(name, "attaching", e))?;
        }
        Ok(())
    };
    match forced {
        Some(ContentionHook::RawTracepoint) => raw(ebpf).map(|()| ContentionHook::RawTracepoint),
        Some(ContentionHook::TpBtf) => tp_btf(ebpf).map(|()| ContentionHook::TpBtf),
        None if aya_btf.is_none() => raw(ebpf).map(|()| ContentionHook::RawTracepoint),
        None => match tp_btf(ebpf) {
            Ok(()) => Ok(ContentionHook::TpBtf),
            Err(e) => {
                tracing::info!(error = %e, "tp_btf contention hooks unavailable, using raw tracepoints");
                for name in ["tp_btf_contention_begin", "tp_btf_contention_end"] {
                    if let Ok(p) = program::<BtfTracePoint>(ebpf, name) {
                        let _ = p.unload();
                    }
                }
                raw(ebpf).map(|()| ContentionHook::RawTracepoint)
            }
        },
    }
}

/// Attaches the freeze source: the forced one, else (`auto`) fexit where `fexit_probe` said
/// the kernel accepts it, falling back to the sync_fs tracepoints, then to none.
fn attach_freeze_source(
    ebpf: &mut Ebpf,
    arity: FexitArity,
    sync_fs: &SyncFsHooks,
    aya_btf: Option<&aya::Btf>,
    fexit_probe: Result<(), LoadError>,
    forced: Option<FreezeSource>,
) -> Result<(FreezeSource, String), LoadError> {
    let forced_reason = || "forced by configuration".to_owned();
    let fexit = |ebpf: &mut Ebpf, arity| match aya_btf {
        Some(b) => attach_fexit(ebpf, arity, b),
        None => Err(LoadError::KernelTooOld {
            what: "fexit needs the kernel BTF parsed by aya".to_owned(),
        }),
    };
    match forced {
        Some(FreezeSource::IoctlTracepoints) => {
            attach_ioctl(ebpf)?;
            Ok((
                FreezeSource::IoctlTracepoints,
                format!(
                    "{}: every syscall on the machine takes the kernel's traced path",
                    forced_reason()
                ),
            ))
        }
        Some(FreezeSource::Fexit) => {
            fexit(ebpf, arity)?;
            Ok((FreezeSource::Fexit, forced_reason()))
        }
        Some(FreezeSource::SyncFs) => {
            let covered = attach_sync_fs(ebpf, sync_fs)?;
            Ok((
                FreezeSource::SyncFs,
                format!("{}: {}", forced_reason(), sync_fs_reason(&covered)),
            ))
        }
        Some(FreezeSource::None) => Ok((
            FreezeSource::None,
            "no freeze hook by configuration: writer stalls only, a frozen filesystem is \
             seen when a writer blocks on it"
                .to_owned(),
        )),
        None => {
            let fexit_err = match fexit_probe.and_then(|()| fexit(ebpf, arity)) {
                Ok(()) => {
                    return Ok((
                        FreezeSource::Fexit,
                        "fexit on freeze_super/thaw_super accepted by the kernel".to_owned(),
                    ))
                }
                Err(e) => e,
            };
            for name in FEXIT_PROGRAMS {
                if let Ok(p) = program::<FExit>(ebpf, name) {
                    let _ = p.unload();
                }
            }
            match attach_sync_fs(ebpf, sync_fs) {
                Ok(covered) => Ok((
                    FreezeSource::SyncFs,
                    format!("fexit refused ({fexit_err}); {}", sync_fs_reason(&covered)),
                )),
                Err(e) => Ok((
                    FreezeSource::None,
                    format!(
                        "fexit refused ({fexit_err}) and no sync_fs tracepoint usable ({e}): \
                         writer stalls only, a frozen filesystem is seen when a writer blocks \
                         on it (--ebpf-freeze-hook ioctl sees FIFREEZE calls at a cost to \
                         every syscall)"
                    ),
                )),
            }
        }
    }
}

/// The operator's explanation of the sync_fs source, naming the filesystems it covers.
fn sync_fs_reason(covered: &[&str]) -> String {
    format!(
        "filesystem sync_fs tracepoints ({}) see freezes of those filesystems by any path, \
         with the freezer; other filesystems' freezes are seen when a writer blocks on them",
        covered.join(", ")
    )
}

/// The `sync_fs` tracepoints: (program, tracepoint, filesystem).
const SYNC_FS_HOOKS: [(&str, &str, &str); 3] = [
    ("sync_fs_ext4", "ext4_sync_fs", "ext4"),
    ("sync_fs_xfs", "xfs_fs_sync_fs", "xfs"),
    ("sync_fs_btrfs", "btrfs_sync_fs", "btrfs"),
];

/// Which `sync_fs` tracepoints the running kernel has (read from BTF before it is dropped),
/// and whether the offsets their programs need were found.
struct SyncFsHooks {
    present: Vec<&'static str>,
}

impl SyncFsHooks {
    fn read(btf: &Btf, offsets: &agent_common::KernelOffsets) -> Self {
        let present = SYNC_FS_HOOKS
            .iter()
            .filter(|(_, tp, fs)| {
                btf.has_named_type(&format!("btf_trace_{tp}"))
                    && match *fs {
                        "xfs" => offsets.xfs_mount_m_super != 0,
                        "btrfs" => offsets.btrfs_fs_info_sb != 0,
                        _ => true,
                    }
            })
            .map(|(_, tp, _)| *tp)
            .collect();
        Self { present }
    }
}

/// Attaches every present sync_fs tracepoint; returns the filesystems covered. An error if
/// none could be attached.
fn attach_sync_fs(ebpf: &mut Ebpf, hooks: &SyncFsHooks) -> Result<Vec<&'static str>, LoadError> {
    let mut covered = Vec::new();
    let mut last_err = None;
    for (name, tp, fs) in SYNC_FS_HOOKS {
        if !hooks.present.contains(&tp) {
            continue;
        }
        let prog: &mut RawTracePoint = program(ebpf, name)?;
        let attached = prog
            .load()
            .map_err(|e| program_error(name, "loading", e))
            .and_then(|()| {
                prog.attach(tp)
                    .map(drop)
                    .map_err(|e| program_error(name, "attaching", e))
            });
        match attached {
            Ok(()) => covered.push(fs),
            Err(e) => {
                tracing::debug!(error = %e, tracepoint = tp, "sync_fs hook unavailable");
                last_err = Some(e);
            }
        }
    }
    match (covered.is_empty(), last_err) {
        (false, _) => Ok(covered),
        (true, Some(e)) => Err(e),
        (true, None) => Err(LoadError::KernelTooOld {
            what: "no ext4_sync_fs, xfs_fs_sync_fs or btrfs_sync_fs tracepoint in vmlinux BTF \
                   (the sync-fs hook needs those filesystems built into the kernel; as modules \
                   their tracepoints are in module BTF, not read yet)"
                .to_owned(),
        }),
    }
}

const FEXIT_PROGRAMS: [&str; 4] = [
    "fexit_freeze_super",
    "fexit_freeze_super_holder",
    "fexit_thaw_super",
    "fexit_thaw_super_holder",
];

/// How many parameters `freeze_super` and `thaw_super` take in the running kernel (read from
/// BTF before it is dropped; an error when the function is not in BTF).
struct FexitArity {
    freeze_super: Result<usize, crate::btf::BtfError>,
    thaw_super: Result<usize, crate::btf::BtfError>,
}

impl FexitArity {
    fn read(btf: &Btf) -> Self {
        Self {
            freeze_super: btf.func_param_count("freeze_super"),
            thaw_super: btf.func_param_count("thaw_super"),
        }
    }
}

/// Attaches fexit to both functions, choosing per function the program that reads the freeze
/// holder (6.6+, where the function has a second parameter) or only the superblock (6.1-6.5).
fn attach_fexit(ebpf: &mut Ebpf, arity: FexitArity, aya_btf: &aya::Btf) -> Result<(), LoadError> {
    for (func, params, plain, holder) in [
        (
            "freeze_super",
            arity.freeze_super,
            "fexit_freeze_super",
            "fexit_freeze_super_holder",
        ),
        (
            "thaw_super",
            arity.thaw_super,
            "fexit_thaw_super",
            "fexit_thaw_super_holder",
        ),
    ] {
        let name = if params? >= 2 { holder } else { plain };
        let prog: &mut FExit = program(ebpf, name)?;
        prog.load(func, aya_btf)
            .map_err(|e| program_error(name, "loading", e))?;
        prog.attach()
            .map_err(|e| program_error(name, "attaching", e))?;
    }
    Ok(())
}

fn attach_ioctl(ebpf: &mut Ebpf) -> Result<(), LoadError> {
    ensure_tracefs()?;
    for (name, tp) in [
        ("sys_enter_ioctl", "sys_enter_ioctl"),
        ("sys_exit_ioctl", "sys_exit_ioctl"),
    ] {
        let prog: &mut TracePoint = program(ebpf, name)?;
        prog.load().map_err(|e| program_error(name, "loading", e))?;
        prog.attach("syscalls", tp)
            .map_err(|e| program_error(name, "attaching", e))?;
    }
    Ok(())
}

/// The program `name` of `ebpf`, as the program type `T`.
pub(crate) fn program<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, LoadError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    let prog = ebpf.program_mut(name).ok_or(LoadError::Map {
        name,
        detail: "program missing from the object".to_owned(),
    })?;
    prog.try_into().map_err(|e| LoadError::Program {
        name,
        source: Box::new(e),
    })
}

/// Classic tracepoints are attached through tracefs; mount it if nothing has.
fn ensure_tracefs() -> Result<(), LoadError> {
    const TRACEFS: &str = "/sys/kernel/tracing";
    for dir in [TRACEFS, "/sys/kernel/debug/tracing"] {
        if Path::new(dir).join("events").is_dir() {
            return Ok(());
        }
    }
    let target = CString::new(TRACEFS).expect("no NUL");
    let fstype = CString::new("tracefs").expect("no NUL");
    // SAFETY: valid NUL-terminated strings; no data argument.
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        if matches!(err.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES)) {
            return Err(LoadError::PermissionDenied {
                what: "mounting tracefs".to_owned(),
            });
        }
        return Err(LoadError::Tracefs(err));
    }
    tracing::info!("mounted tracefs at {TRACEFS} for the syscall tracepoints");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_and_hooks_parse_and_print() {
        for m in [EbpfMode::Auto, EbpfMode::Required, EbpfMode::Off] {
            assert_eq!(m.to_string().parse::<EbpfMode>().unwrap(), m);
        }
        for h in [
            FreezeHook::Auto,
            FreezeHook::Fexit,
            FreezeHook::SyncFs,
            FreezeHook::Ioctl,
            FreezeHook::None,
        ] {
            assert_eq!(h.to_string().parse::<FreezeHook>().unwrap(), h);
        }
        assert_eq!(FreezeHook::Ioctl.to_string(), "ioctl");
        assert_eq!(FreezeHook::SyncFs.to_string(), "sync-fs");
        assert_eq!(
            "kprobe".parse::<FreezeHook>().unwrap_err(),
            "invalid freeze hook `kprobe` (expected one of: auto fexit sync-fs ioctl none)"
        );
        assert_eq!(
            "sometimes".parse::<EbpfMode>().unwrap_err(),
            "invalid eBPF mode `sometimes` (expected one of: auto required off)"
        );
    }

    #[test]
    fn permission_errors_are_recognised_through_the_chain() {
        let err = ProgramError::SyscallError(aya::sys::SyscallError {
            call: "bpf_prog_load",
            io_error: std::io::Error::from_raw_os_error(libc::EPERM),
        });
        let expected_root = unsafe { libc::geteuid() } == 0;
        match program_error("x", "loading", err) {
            LoadError::Refused { .. } => assert!(expected_root),
            LoadError::PermissionDenied { .. } => assert!(!expected_root),
            other => panic!("unexpected {other}"),
        }
        let err = ProgramError::SyscallError(aya::sys::SyscallError {
            call: "bpf_prog_load",
            io_error: std::io::Error::from_raw_os_error(libc::EINVAL),
        });
        assert!(matches!(
            program_error("x", "loading", err),
            LoadError::Program { .. }
        ));
    }

    #[test]
    fn missing_btf_is_reported_as_such() {
        let opts = LoadOptions {
            btf_path: "/nonexistent/btf".into(),
            ..LoadOptions::default()
        };
        let err = load(&opts).unwrap_err();
        assert!(err.to_string().contains("CONFIG_DEBUG_INFO_BTF"), "{err}");
    }

    /// The probe's attribute is well-formed: the running kernel either accepts the program or
    /// refuses it for policy (EPERM), never as invalid (EINVAL would mean a wrong layout).
    #[test]
    fn fexit_probe_is_accepted_or_refused_for_policy_only() {
        let Ok(btf) = Btf::from_sys_fs() else {
            eprintln!("no kernel BTF: skipped");
            return;
        };
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("not root: skipped");
            return;
        }
        match probe_fexit(&btf) {
            Ok(()) => eprintln!("fexit accepted by this kernel"),
            Err(LoadError::Refused { what }) => assert!(what.contains("freeze_super"), "{what}"),
            Err(other) => panic!("unexpected probe result: {other}"),
        }
    }

    #[test]
    fn object_is_embedded() {
        assert!(
            EBPF_OBJECT.starts_with(b"\x7fELF"),
            "build.rs did not embed the object"
        );
    }
}
