//! Loading and attaching the embedded `agent-ebpf` object.
//!
//! Offsets come from BTF ([`crate::btf`]) and go into the `OFFSETS` global. Freezes are seen by
//! fexit on `freeze_super`/`thaw_super` where the kernel allows trampolines, otherwise by the
//! `sys_enter_ioctl`/`sys_exit_ioctl` tracepoints (FIFREEZE/FITHAW only: freezes made by other
//! paths such as LVM or suspend are then invisible), or by nothing when configured so (writer
//! stalls only: no per-syscall cost on kernels without trampolines). Stalled writers are seen by tp_btf
//! `contention_begin`/`contention_end`, or the raw tracepoints of the same name. Everything here
//! blocks (bpf syscalls, BTF parsing): call it from `spawn_blocking`.

use std::{
    ffi::CString,
    fmt,
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    str::FromStr,
    time::Instant,
};

use agent_common::OBSERVER_PROBE_IOCTL;
use aya::{
    maps::{MapData, RingBuf},
    programs::{BtfTracePoint, FExit, ProgramError, RawTracePoint, TracePoint},
    Ebpf, EbpfError, EbpfLoader, Endianness,
};

use crate::{btf::Btf, mountinfo};

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
    /// No freeze hook: writer stalls only. A frozen filesystem shows up (origin unknown) when
    /// a writer blocks on it, and counts as thawed when that writer resumes. Chosen only by
    /// configuration, for kernels without trampolines where the syscall tracepoints' cost on
    /// every syscall is not acceptable.
    None,
}

impl FreezeSource {
    /// Short label (`fexit`, `ioctl_tracepoints`, `none`), e.g. for a metric.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Fexit => "fexit",
            Self::IoctlTracepoints => "ioctl_tracepoints",
            Self::None => "none",
        }
    }
}

/// `--ebpf-freeze-hook auto|fexit|ioctl|none`: which freeze source to use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FreezeHook {
    /// fexit where the kernel allows trampolines, else the ioctl tracepoints.
    #[default]
    Auto,
    /// fexit only; loading fails where the kernel refuses it.
    Fexit,
    /// The FIFREEZE/FITHAW syscall tracepoints.
    Ioctl,
    /// No freeze hook (writer stalls only).
    None,
}

named_choice!(FreezeHook, "freeze hook", {
    Auto => "auto",
    Fexit => "fexit",
    Ioctl => "ioctl",
    None => "none",
});

impl FreezeHook {
    /// The forced source, or `None` for auto.
    pub const fn forced(self) -> Option<FreezeSource> {
        match self {
            Self::Auto => None,
            Self::Fexit => Some(FreezeSource::Fexit),
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
    /// Our own tgid, the only process whose probe ioctls the kernel side answers.
    pub observer_tgid: u32,
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
            observer_tgid: std::process::id(),
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

fn program_error(name: &'static str, what: &str, err: ProgramError) -> LoadError {
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
pub fn load(opts: &LoadOptions) -> Result<Loaded, LoadError> {
    let started = Instant::now();
    if EBPF_OBJECT.is_empty() {
        return Err(LoadError::ObjectMissing);
    }
    let btf = Btf::from_file(&opts.btf_path)?;
    if !btf.has_named_type("btf_trace_contention_begin") {
        return Err(LoadError::KernelTooOld {
            what: "no lock:contention_begin tracepoint (needs Linux 5.19+)".to_owned(),
        });
    }
    let mut offsets = btf.kernel_offsets()?;
    offsets.observer_tgid = opts.observer_tgid;
    let arity = FexitArity::read(&btf);
    // Peak memory: each parse of the kernel's BTF holds megabytes. Ours is done with; the
    // copy `EbpfLoader::new` parses by itself goes before aya's own is parsed, so only one
    // is alive at a time.
    drop(btf);
    let mut loader = EbpfLoader::new();
    loader.btf(None);
    let aya_btf = aya::Btf::parse_file(&opts.btf_path, Endianness::default())
        .map_err(|e| LoadError::Object(Box::new(EbpfError::BtfError(e))))?;

    let mut ebpf = loader
        .btf(Some(&aya_btf))
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

    let contention_hook = attach_contention(&mut ebpf, &aya_btf, opts.contention_hook)?;
    let (freeze_source, freeze_source_reason) =
        attach_freeze_source(&mut ebpf, arity, &aya_btf, opts.freeze_source)?;

    if opts.probe_frozen {
        if let Err(e) = probe_frozen_filesystems(&mut ebpf) {
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
        freeze_source,
        freeze_source_reason,
        contention_hook,
        load_time: started.elapsed(),
    })
}

fn attach_contention(
    ebpf: &mut Ebpf,
    aya_btf: &aya::Btf,
    forced: Option<ContentionHook>,
) -> Result<ContentionHook, LoadError> {
    let tp_btf = |ebpf: &mut Ebpf| -> Result<(), LoadError> {
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

fn attach_freeze_source(
    ebpf: &mut Ebpf,
    arity: FexitArity,
    aya_btf: &aya::Btf,
    forced: Option<FreezeSource>,
) -> Result<(FreezeSource, String), LoadError> {
    match forced {
        Some(FreezeSource::IoctlTracepoints) => {
            attach_ioctl(ebpf)?;
            Ok((
                FreezeSource::IoctlTracepoints,
                "forced by configuration".to_owned(),
            ))
        }
        Some(FreezeSource::Fexit) => {
            attach_fexit(ebpf, arity, aya_btf)?;
            Ok((FreezeSource::Fexit, "forced by configuration".to_owned()))
        }
        Some(FreezeSource::None) => Ok((
            FreezeSource::None,
            "no freeze hook by configuration: writer stalls only, a frozen filesystem is \
             seen when a writer blocks on it"
                .to_owned(),
        )),
        None => match attach_fexit(ebpf, arity, aya_btf) {
            Ok(()) => Ok((
                FreezeSource::Fexit,
                "fexit on freeze_super/thaw_super accepted by the kernel".to_owned(),
            )),
            Err(e) => {
                for name in FEXIT_PROGRAMS {
                    if let Ok(p) = program::<FExit>(ebpf, name) {
                        let _ = p.unload();
                    }
                }
                attach_ioctl(ebpf)?;
                Ok((
                    FreezeSource::IoctlTracepoints,
                    format!(
                        "fexit refused ({e}); using FIFREEZE/FITHAW syscall tracepoints, \
                         freezes by other kernel paths (LVM, suspend) are not seen, and every \
                         syscall on the machine now takes the kernel's traced path \
                         (--ebpf-freeze-hook none avoids that cost)"
                    ),
                ))
            }
        },
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

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut T, LoadError>
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

/// Filesystem types the probe may open: block-device backed ones (major != 0) plus btrfs,
/// whose anonymous device has major 0. Network and automount filesystems are never opened.
fn probe_candidate(e: &mountinfo::MountEntry) -> bool {
    const NEVER: [&str; 7] = ["autofs", "nfs", "nfs4", "cifs", "smb3", "fuse", "9p"];
    if NEVER
        .iter()
        .any(|t| e.fstype == *t || e.fstype.starts_with("fuse."))
    {
        return false;
    }
    e.major != 0 || e.fstype == "btrfs"
}

/// Attaches the probe program, issues the harmless probe ioctl on each candidate mountpoint
/// (the kernel side reports the ones already frozen), then detaches it again.
fn probe_frozen_filesystems(ebpf: &mut Ebpf) -> Result<(), LoadError> {
    ensure_tracefs()?;
    let name = "probe_enter_ioctl";
    let prog: &mut TracePoint = program(ebpf, name)?;
    prog.load().map_err(|e| program_error(name, "loading", e))?;
    let link = prog
        .attach("syscalls", "sys_enter_ioctl")
        .map_err(|e| program_error(name, "attaching", e))?;
    let mut seen = std::collections::HashSet::new();
    let entries = mountinfo::read_self().map_err(LoadError::Tracefs)?;
    for e in entries.iter().filter(|e| probe_candidate(e)) {
        if !seen.insert((e.major, e.minor)) {
            continue;
        }
        // O_PATH fds do not reach the ioctl handler's fd lookup, so open read-only.
        let Ok(dir) = std::fs::File::open(&e.mountpoint) else {
            continue;
        };
        // SAFETY: an ioctl no filesystem defines, on an fd we own; it fails with ENOTTY.
        let _ = unsafe { libc::ioctl(dir.as_raw_fd(), OBSERVER_PROBE_IOCTL as _, 0) };
    }
    let prog: &mut TracePoint = program(ebpf, name)?;
    prog.detach(link)
        .map_err(|e| program_error(name, "detaching", e))?;
    let _ = prog.unload();
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
            FreezeHook::Ioctl,
            FreezeHook::None,
        ] {
            assert_eq!(h.to_string().parse::<FreezeHook>().unwrap(), h);
        }
        assert_eq!(FreezeHook::Ioctl.to_string(), "ioctl");
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
    fn probe_skips_network_and_virtual_filesystems() {
        let entry = |major, fstype: &str| mountinfo::MountEntry {
            major,
            minor: 1,
            root: "/".into(),
            mountpoint: "/x".into(),
            fstype: fstype.into(),
        };
        assert!(probe_candidate(&entry(7, "ext4")));
        assert!(probe_candidate(&entry(0, "btrfs")));
        assert!(!probe_candidate(&entry(0, "proc")));
        assert!(!probe_candidate(&entry(0, "nfs4")));
        assert!(!probe_candidate(&entry(8, "fuse.sshfs")));
        assert!(!probe_candidate(&entry(0, "autofs")));
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

    #[test]
    fn object_is_embedded() {
        assert!(
            EBPF_OBJECT.starts_with(b"\x7fELF"),
            "build.rs did not embed the object"
        );
    }
}
