//! Command line of `guest-agent`: every flag, its help text and default, in one module.
//!
//! [`Config`] is the whole command line; [`telemetry`] holds the metrics and tracing flags
//! flattened into it; [`values`] the value types and parsers both use. Nothing here depends on
//! the parts of the agent that read the flags: they import from this module, never the other
//! way round.

pub mod telemetry;
pub mod values;

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use guest_transport::ListenUri;

pub use values::{parse_secs, LogFormat};

/// Default vsock port of the Guest service (boxlite's).
pub const DEFAULT_VSOCK_PORT: u32 = 2695;

/// Guest agent for microVMs: serves boxlite.v1.Guest (Init, Ping, Shutdown, Quiesce, Thaw,
/// FreezeStatus) so the host can take point-in-time consistent snapshots.
#[derive(Debug, Parser)]
#[command(name = "guest-agent", version, about, long_about = None)]
pub struct Config {
    /// Where to serve (repeatable): vsock://CID:PORT, unix:///path, tcp://ADDR:PORT.
    /// Default: vsock://-1:2695 when /dev/vsock exists.
    #[arg(long = "listen", value_name = "URI")]
    pub listen: Vec<ListenUri>,

    /// vsock peer CIDs allowed to connect (repeatable). Default: 2, the host.
    #[arg(long = "allow-cid", value_name = "CID")]
    pub allow_cid: Vec<u32>,

    /// Allow tcp:// listeners on non-loopback addresses.
    #[arg(long)]
    pub allow_remote: bool,

    /// TLS for tcp:// Guest listeners: this server's certificate chain (PEM). Needs
    /// --tls-key and --tls-client-ca; clients then connect with tls+tcp:// and must present
    /// a certificate signed by the client CA.
    #[arg(long, value_name = "PEM", requires_all = ["tls_key", "tls_client_ca"])]
    pub tls_cert: Option<PathBuf>,

    /// Private key (PEM) of --tls-cert.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// CA bundle (PEM) client certificates must chain to; connections without one are refused.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,

    /// Only mounts at or below these paths may be frozen (repeatable). Without it every
    /// eligible filesystem is frozen, as in a real guest. Development machines must set it.
    #[arg(long = "freeze-only", value_name = "PATH")]
    pub freeze_only: Vec<PathBuf>,

    /// Thaw automatically when no Thaw arrives this many seconds after a Quiesce.
    #[arg(long, value_name = "SECS", default_value = "60", value_parser = parse_secs)]
    pub freeze_timeout: Duration,

    /// Longest a Quiesce or Thaw call waits for the kernel before returning DeadlineExceeded.
    #[arg(long, value_name = "SECS", default_value = "30", value_parser = parse_secs)]
    pub operation_timeout: Duration,

    /// Directory for the freeze journal (what the agent holds frozen), so a restarted agent
    /// thaws what a killed one left frozen. Must be on a tmpfs (it is written during freezes);
    /// otherwise the journal is disabled with a warning.
    #[arg(long, value_name = "DIR", default_value = "/run/guest-agent")]
    pub state_dir: PathBuf,

    /// Directory of freeze/thaw hooks: executables run in name order with the argument
    /// `freeze` before filesystems are frozen and `thaw` after they are thawed.
    #[arg(long, value_name = "DIR")]
    pub hooks_dir: Option<PathBuf>,

    /// Longest a single hook may run before it is killed and counted as failed.
    #[arg(long, value_name = "SECS", default_value = "30", value_parser = parse_secs)]
    pub hook_timeout: Duration,

    /// On shutdown, how long in-flight calls may still run; then the remaining connections
    /// are closed (a client holding a stream open, e.g. a health Watch, cannot keep the agent
    /// alive).
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = parse_secs)]
    pub drain_timeout: Duration,

    /// eBPF freeze observer: `auto` loads it and runs on without it if that fails (the reason
    /// is logged once), `required` refuses to start without it, `off` never loads it.
    #[arg(long, value_name = "MODE", default_value = "auto")]
    pub ebpf: freeze_observer::EbpfMode,

    /// How the eBPF observer sees freezes: `auto` (fexit on freeze_super/thaw_super where the
    /// kernel allows BPF trampolines, else `sync-fs`), `fexit`, `sync-fs` (the ext4/xfs/btrfs
    /// sync_fs tracepoints reached from freeze_super, then the superblock's frozen level is
    /// polled until the thaw; other filesystems are seen when a writer blocks on them),
    /// `ioctl` (the FIFREEZE/FITHAW syscall tracepoints: puts every syscall on the machine on
    /// the kernel's traced slow path, see BENCHMARKS.md), or `none` (writer stalls only).
    #[arg(long, value_name = "HOOK", default_value = "auto")]
    pub ebpf_freeze_hook: freeze_observer::FreezeHook,

    /// Do not sync filesystems in parallel before freezing (pre-sync shortens the frozen
    /// window; off only for comparison or caution).
    #[arg(long)]
    pub no_presync: bool,

    /// Freeze independent filesystems one at a time instead of concurrently.
    #[arg(long)]
    pub no_parallel_freeze: bool,

    /// Leave /sys/kernel/rcu_expedited alone. By default the agent sets it while its FIFREEZE
    /// calls run (each waits for RCU grace periods; expedited ones cut a clean freeze from
    /// tens of milliseconds to a few) and puts the old value back right after.
    #[arg(long)]
    pub no_expedite_rcu: bool,

    /// Largest request accepted, in bytes; larger ones get ResourceExhausted.
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 20)]
    pub max_message_bytes: usize,

    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,

    /// Metrics (/metrics, OTLP) and tracing.
    #[command(flatten)]
    pub telemetry: telemetry::TelemetryArgs,
}

impl Config {
    /// The listeners to open: the given ones, or the default vsock port when /dev/vsock exists.
    pub fn listeners(&self) -> Result<Vec<ListenUri>, String> {
        if !self.listen.is_empty() {
            return Ok(self.listen.clone());
        }
        if std::path::Path::new("/dev/vsock").exists() {
            return Ok(vec![format!("vsock://-1:{DEFAULT_VSOCK_PORT}")
                .parse()
                .map_err(|e| format!("{e}"))?]);
        }
        Err("no --listen given and /dev/vsock does not exist; use e.g. --listen unix:///run/guest-agent.sock".into())
    }

    /// The TLS settings of tcp:// Guest listeners, when --tls-cert is given.
    pub fn server_tls(&self) -> Result<Option<guest_transport::ServerTls>, String> {
        match (&self.tls_cert, &self.tls_key, &self.tls_client_ca) {
            (Some(c), Some(k), Some(ca)) => guest_transport::ServerTls::from_pem_files(c, k, ca)
                .map(Some)
                .map_err(|e| format!("TLS: {e}")),
            _ => Ok(None),
        }
    }

    /// The vsock CIDs allowed to connect.
    pub fn allowed_cids(&self) -> Vec<u32> {
        if self.allow_cid.is_empty() {
            vec![2]
        } else {
            self.allow_cid.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_command_line() {
        let c = Config::try_parse_from([
            "guest-agent",
            "--listen",
            "unix:///run/a.sock",
            "--listen",
            "tcp://127.0.0.1:7000",
            "--freeze-only",
            "/mnt/scratch",
            "--freeze-timeout",
            "2.5",
        ])
        .unwrap();
        assert_eq!(c.listen.len(), 2);
        assert_eq!(c.freeze_timeout, Duration::from_millis(2500));
        assert_eq!(c.freeze_only, vec![PathBuf::from("/mnt/scratch")]);
        assert_eq!(c.allowed_cids(), vec![2]);
        assert_eq!(c.listeners().unwrap().len(), 2);
    }

    #[test]
    fn tls_flags_go_together() {
        let base = ["guest-agent", "--listen", "tcp://127.0.0.1:1"];
        let with = |extra: &[&'static str]| {
            Config::try_parse_from(base.iter().chain(extra.iter()).copied())
        };
        assert!(with(&["--tls-cert", "c.pem"]).is_err());
        assert!(with(&["--tls-key", "k.pem"]).is_err());
        assert!(with(&["--tls-client-ca", "ca.pem"]).is_err());
        let c = with(&["--tls-cert", "c", "--tls-key", "k", "--tls-client-ca", "ca"]).unwrap();
        let e = c.server_tls().unwrap_err();
        assert!(e.starts_with("TLS: "), "{e}");
        assert!(with(&[]).unwrap().server_tls().unwrap().is_none());
    }

    #[test]
    fn rejects_bad_durations_and_uris() {
        assert!(Config::try_parse_from(["guest-agent", "--freeze-timeout", "0"]).is_err());
        assert!(Config::try_parse_from(["guest-agent", "--listen", "ftp://x"]).is_err());
    }
}
