//! One test VM: a scratch directory, the vsock backend, qemu, the console and the command
//! channel, all torn down when the [`Vm`] is dropped (processes killed by PID, the directory
//! removed). When a test panics, the drop prints the guest console and the daemons' logs.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::bins;
use super::cache::GuestKernel;
use super::console::Console;
use super::disk;
use super::error::{Result, VmError};
use super::initramfs;
use super::otlp::OtlpReceiver;
use super::process::{run_tool, Spawned, ToolOutput};
use super::pybundle;
use super::qemu::QemuConfig;
use super::rpc::AgentRpc;
use super::shell::GuestShell;
use super::vsockd::VsockDaemon;

/// The agent's vsock port.
pub const AGENT_PORT: u32 = 2695;

/// Longest a boot may take until the agent answers (TCG on a busy 2-core machine).
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(120);

/// What a VM boots with.
#[derive(Debug, Clone)]
pub struct VmConfig {
    /// Kernel series from the cache ("6.1", "6.12").
    pub series: String,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// The agent's --freeze-timeout in seconds (the watchdog).
    pub freeze_timeout_secs: u32,
    /// Extra agent arguments (no spaces or commas inside one).
    pub agent_args: Vec<String>,
    /// Sizes in MiB of blank raw disks, attached as /dev/vda, /dev/vdb, ...
    pub disks_mib: Vec<u64>,
    /// Host port of an OTLP receiver the agent exports to over vsock
    /// (`--otlp-endpoint vsock://2:PORT`), if any.
    pub otlp_port: Option<u32>,
    /// Attach the read-only Python disk ([`pybundle`]) after the blank disks.
    pub python: bool,
    /// Run qemu with `-icount shift=N` (see [`QemuConfig::icount_shift`]).
    pub icount_shift: Option<u8>,
}

impl VmConfig {
    /// Defaults for `series`: 512 MiB, watchdog 60 s, one 64 MiB disk.
    pub fn new(series: &str) -> Self {
        Self {
            series: series.to_string(),
            memory_mib: 512,
            freeze_timeout_secs: 60,
            agent_args: Vec::new(),
            disks_mib: vec![64],
            otlp_port: None,
            python: false,
            icount_shift: None,
        }
    }

    /// The kernel command line: quiet console on ttyS0, panic = power off (with -no-reboot),
    /// and the init script's settings.
    pub fn kernel_cmdline(&self) -> String {
        let mut s = format!(
            "console=ttyS0 quiet panic=-1 ga_freeze_timeout={}",
            self.freeze_timeout_secs
        );
        let mut args = self.agent_args.clone();
        if let Some(port) = self.otlp_port {
            args.push("--otlp-endpoint".into());
            args.push(format!("vsock://2:{port}"));
        }
        if !args.is_empty() {
            s.push_str(&format!(" ga_args={}", args.join(",")));
        }
        s
    }
}

/// How long the phases of a boot took.
#[derive(Debug, Clone, Copy)]
pub struct BootTimes {
    /// Building the initramfs.
    pub initramfs: Duration,
    /// qemu start until init printed "ready".
    pub init: Duration,
    /// qemu start until the agent answered a Ping over vsock.
    pub agent: Duration,
}

/// A running test VM.
pub struct Vm {
    config: VmConfig,
    kernel: GuestKernel,
    dir: PathBuf,
    console: Console,
    disks: Vec<PathBuf>,
    readonly_disks: Vec<PathBuf>,
    shell: Option<GuestShell>,
    qemu: Option<Spawned>,
    vsockd: Option<VsockDaemon>,
    rpc: AgentRpc,
    otlp: Option<OtlpReceiver>,
    started: Instant,
    /// Boot phase durations.
    pub boot_times: BootTimes,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Prefix of every VM directory: `<prefix><series>-<test pid>-<n>`.
const DIR_PREFIX: &str = "/var/tmp/gavm-";

/// Removes the directories of VMs whose test process is gone (killed before its drops ran;
/// its qemu and daemons died with it, see [`Spawned::spawn`]).
fn remove_stale_dirs() {
    let Ok(entries) = std::fs::read_dir("/var/tmp") else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(name) = path.to_str().and_then(|p| p.strip_prefix(DIR_PREFIX)) else {
            continue;
        };
        // <series>-<pid>-<n>
        let owner = name.rsplit('-').nth(1).and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = owner {
            if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = std::fs::remove_dir_all(&path);
            }
        }
    }
}

impl Vm {
    /// Boots a VM and waits until the agent answers over vsock.
    pub fn boot(config: VmConfig) -> Result<Self> {
        remove_stale_dirs();
        let kernel = GuestKernel::load(&config.series)?;
        let dir = PathBuf::from(format!(
            "{DIR_PREFIX}{}-{}-{}",
            config.series,
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .map_err(|e| VmError::io(format!("create {}", dir.display()), e))?;
        let console = Console::new(&dir.join("console.log"));
        let uri = format!("hvsock://{}:{AGENT_PORT}", dir.join("vm.sock").display());
        let mut vm = Self {
            rpc: AgentRpc::new(&uri)?,
            config,
            kernel,
            console,
            disks: Vec::new(),
            readonly_disks: Vec::new(),
            shell: None,
            qemu: None,
            vsockd: None,
            otlp: None,
            started: Instant::now(),
            boot_times: BootTimes {
                initramfs: Duration::ZERO,
                init: Duration::ZERO,
                agent: Duration::ZERO,
            },
            dir,
        };
        if let Err(e) = vm.start() {
            // Not a panic (yet): print what the guest said before the Vm is dropped.
            vm.dump();
            return Err(e);
        }
        Ok(vm)
    }

    fn start(&mut self) -> Result<()> {
        let t = Instant::now();
        let initrd = initramfs::build(&self.kernel, &self.dir.join("initramfs.cpio"))?;
        self.boot_times.initramfs = t.elapsed();
        for (i, size) in self.config.disks_mib.iter().enumerate() {
            let path = self.dir.join(format!("disk{i}.img"));
            disk::create_image(&path, *size)?;
            self.disks.push(path);
        }
        if self.config.python {
            self.readonly_disks.push(pybundle::image()?);
        }
        let vsockd = VsockDaemon::start(&self.dir)?;
        if let Some(port) = self.config.otlp_port {
            self.otlp = Some(OtlpReceiver::start(&vsockd.guest_to_host_socket(port))?);
        }
        let qemu_cfg = QemuConfig {
            kernel: self.kernel.vmlinux(),
            initrd,
            append: self.config.kernel_cmdline(),
            memory_mib: self.config.memory_mib,
            disks: self.disks.clone(),
            readonly_disks: self.readonly_disks.clone(),
            console: self.dir.join("console.log"),
            command_socket: self.dir.join("cmd.sock"),
            vhost_socket: vsockd.vhost_socket.clone(),
            icount_shift: self.config.icount_shift,
        };
        self.vsockd = Some(vsockd);
        let log = self.dir.join("qemu.log");
        let out = File::create(&log).map_err(|e| VmError::io("create qemu.log", e))?;
        let err = out
            .try_clone()
            .map_err(|e| VmError::io("clone a log handle", e))?;
        self.started = Instant::now();
        self.qemu = Some(Spawned::spawn(
            "qemu-system-x86_64",
            Command::new("qemu-system-x86_64")
                .args(qemu_cfg.args())
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err),
        )?);
        self.wait_console("init: ready", BOOT_TIMEOUT)?;
        self.boot_times.init = self.started.elapsed();
        self.shell = Some(GuestShell::connect(&self.dir.join("cmd.sock"))?);
        self.wait_for_agent(BOOT_TIMEOUT.saturating_sub(self.started.elapsed()))?;
        self.boot_times.agent = self.started.elapsed();
        Ok(())
    }

    /// Waits for a console line containing `needle`, failing early if qemu exits.
    pub fn wait_console(&mut self, needle: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let step =
                Duration::from_millis(500).min(deadline.saturating_duration_since(Instant::now()));
            match self.console.wait_line(needle, step, |l| l.contains(needle)) {
                Ok(line) => return Ok(line),
                Err(VmError::Timeout { .. }) if Instant::now() < deadline => {
                    if let Some(q) = self.qemu.as_mut() {
                        q.ensure_running()?;
                    }
                }
                Err(VmError::Timeout { .. }) => {
                    return Err(VmError::Timeout {
                        what: format!("console line {needle:?}"),
                        after: timeout,
                    })
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Retries Ping until the agent answers (it listens a few seconds after init is ready).
    fn wait_for_agent(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.rpc.ping() {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() >= deadline => {
                    return Err(VmError::Timeout {
                        what: format!("the agent to answer Ping (last error: {e})"),
                        after: timeout,
                    })
                }
                Err(e) => {
                    if let Some(q) = self.qemu.as_mut() {
                        q.ensure_running()?;
                    }
                    if let Some(line) = self
                        .console
                        .lines()
                        .into_iter()
                        .find(|l| l.starts_with("init: guest-agent exited"))
                    {
                        return Err(VmError::Exited {
                            what: "guest-agent in the VM".into(),
                            status: format!("{line} (last Ping error: {e})"),
                        });
                    }
                    std::thread::sleep(Duration::from_millis(250));
                }
            }
        }
    }

    /// The kernel it runs.
    pub fn kernel(&self) -> &GuestKernel {
        &self.kernel
    }

    /// Its scratch directory (removed on drop).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The guest console.
    pub fn console(&self) -> &Console {
        &self.console
    }

    /// Time since qemu started.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// The raw image behind /dev/vd<a + i>.
    pub fn disk(&self, i: usize) -> &Path {
        &self.disks[i]
    }

    /// The guest device of the read-only Python disk (with [`VmConfig::python`]), e.g.
    /// `vdb`: it follows the blank disks.
    pub fn python_device(&self) -> Option<String> {
        self.config.python.then(|| {
            let letter = char::from(b'a' + self.disks.len() as u8);
            format!("vd{letter}")
        })
    }

    /// The qemu process.
    pub fn qemu(&self) -> &Spawned {
        self.qemu.as_ref().expect("qemu runs while the Vm exists")
    }

    /// The vsock backend.
    pub fn vsockd(&self) -> &VsockDaemon {
        self.vsockd
            .as_ref()
            .expect("the vsock backend runs while the Vm exists")
    }

    /// The agent's address for guestctl: `hvsock:///<dir>/vm.sock:2695`.
    pub fn agent_uri(&self) -> String {
        format!("hvsock://{}:{AGENT_PORT}", self.vsockd().uds.display())
    }

    /// The OTLP receiver the agent exports to (with [`VmConfig::otlp_port`]).
    pub fn otlp(&self) -> Option<&OtlpReceiver> {
        self.otlp.as_ref()
    }

    /// A gRPC client of the agent.
    pub fn rpc(&self) -> &AgentRpc {
        &self.rpc
    }

    /// The guest's command channel.
    pub fn shell(&mut self) -> &mut GuestShell {
        self.shell
            .as_mut()
            .expect("the command channel is connected after boot")
    }

    /// Runs one guest shell command that must succeed; returns its output.
    pub fn sh(&mut self, command: &str) -> Result<String> {
        self.shell().run_ok(command, Duration::from_secs(60))
    }

    /// Runs the host's guestctl against the agent (`--connect` is added), whatever its exit
    /// code.
    pub fn guestctl(&self, args: &[&str]) -> Result<ToolOutput> {
        let bin = bins::host_guestctl()?;
        let uri = self.agent_uri();
        let mut all = vec!["--connect", uri.as_str()];
        all.extend_from_slice(args);
        let out = run_tool(&bin.to_string_lossy(), &all)?;
        eprintln!(
            "[{:>6.1}s] guestctl {} -> exit {:?}\n{}",
            self.uptime().as_secs_f64(),
            args.join(" "),
            out.code,
            out.text.trim_end()
        );
        Ok(out)
    }

    /// Runs `guestctl --json args...`, which must exit 0, and parses its JSON.
    pub fn guestctl_json(&self, args: &[&str]) -> Result<serde_json::Value> {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.guestctl(&all)?;
        if out.code != Some(0) {
            return Err(VmError::Command {
                cmd: format!("guestctl {}", all.join(" ")),
                status: format!("exit {:?}", out.code),
                output: out.text,
            });
        }
        let json_line = out.text.lines().find(|l| l.starts_with('{')).unwrap_or("");
        serde_json::from_str(json_line).map_err(|e| {
            VmError::Protocol(format!(
                "guestctl {} printed no JSON object ({e}): {}",
                all.join(" "),
                out.text
            ))
        })
    }

    /// Prints everything that helps understand a failure.
    pub fn dump(&self) {
        eprintln!(
            "===== guest console ({} {}, {:.1}s after qemu start) =====\n{}",
            self.kernel.series,
            self.kernel.release,
            self.uptime().as_secs_f64(),
            self.console.text()
        );
        for log in ["qemu.log", "vhost-device-vsock.log"] {
            let text = std::fs::read_to_string(self.dir.join(log)).unwrap_or_default();
            if !text.trim().is_empty() {
                eprintln!("===== {log} =====\n{text}");
            }
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump();
        }
        self.shell = None;
        // qemu first (it holds the vhost-user connection), then its backend.
        self.qemu = None;
        self.vsockd = None;
        self.otlp = None;
        if std::env::var_os("GUEST_AGENT_VM_KEEP").is_some() {
            eprintln!("kept {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
