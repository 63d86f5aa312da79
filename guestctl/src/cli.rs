//! Command-line interface of guestctl (clap derive).

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use guest_transport::ConnectUri;

const LONG_ABOUT: &str = "\
Talks to the guest agent (gRPC boxlite.v1.Guest) of a microVM from the host.

--connect URI (or GUESTCTL_CONNECT) selects the transport:
  vsock://CID:PORT             AF_VSOCK to a guest (QEMU vhost-vsock), e.g. vsock://3:2695
  hvsock:///path/vm.sock:PORT  Firecracker / Cloud Hypervisor hybrid vsock socket
  unix:///abs/path             an agent listening on a unix socket
  tcp://HOST:PORT              an agent listening on TCP (testing)
  tls+tcp://HOST:PORT          TCP with TLS: --tls-ca to verify the agent (HOST is the name
                               checked), --tls-cert/--tls-key when it requires client certs

Every RPC is bounded by --timeout; connecting (including the hybrid vsock handshake) by
--connect-timeout. With --json, each command prints exactly one JSON object on stdout.

Exit codes:
  0  success
  1  the agent answered with an error (gRPC status other than OK, or an init error)
  2  usage error (bad flags, bad URI, bad init spec)
  3  could not connect to the agent (refused, missing socket, handshake failed, or
     connecting took longer than --connect-timeout)
  4  an RPC timed out (no answer within --timeout)

  5-8, 130, 143: `guestctl snapshot` outcomes, see `guestctl snapshot --help`

Errors are printed as one line on stderr, e.g.
  guestctl: quiesce failed: FAILED_PRECONDITION: already frozen";

const SNAPSHOT_ABOUT: &str = "\
Quiesce the guest, SIGSTOP the VMM (--pause-pid), run COMMAND (the disk copy), SIGCONT, Thaw.

The thaw is guaranteed: it is sent even when Quiesce failed, timed out or was interrupted
(the guest may have frozen anyway), retried until --thaw-deadline, and confirmed with
FreezeStatus (nothing frozen, nothing in progress, after our Quiesce settled). A Quiesce
that is not answered within --quiesce-timeout is not cancelled in the guest: the agent
finishes it and runs the Thaw after it. SIGINT/SIGTERM are caught: the sequence skips what
has not started, forwards the signal to COMMAND, resumes the VMM and thaws. SIGCONT is sent
whenever SIGSTOP was.

Each phase (quiesce, pause, command, resume, thaw, confirm) is timed and recorded as an
OpenTelemetry span under one trace whose id is printed; every RPC carries the phase's W3C
traceparent so the agent's spans join the trace. COMMAND gets TRACEPARENT and
GUESTCTL_TRACE_ID in its environment. With --otlp-endpoint (or OTEL_EXPORTER_OTLP_ENDPOINT)
the spans are exported over OTLP/gRPC before exit (bounded by --otlp-timeout).

With --json, stdout carries one JSON object (COMMAND's stdout goes to stderr).

Exit codes, most serious first:
  5    the thaw was not confirmed before --thaw-deadline: THE VM MAY STILL BE FROZEN
  8    SIGSTOP or SIGCONT of --pause-pid failed
  130  interrupted by SIGINT (143: SIGTERM); the VM was still resumed and thawed
  6    Quiesce failed or timed out: no snapshot taken, VM thawed
  7    COMMAND failed, could not start or was killed: VM resumed and thawed
  3    could not connect: nothing was frozen
  0    COMMAND ran on the frozen (and paused) VM, which is resumed and confirmed thawed";

/// guestctl: host-side client of the guest agent.
#[derive(Debug, Parser)]
#[command(name = "guestctl", version, about = "Host-side client of the microVM guest agent", long_about = LONG_ABOUT)]
pub struct Cli {
    /// Where the agent is: vsock://CID:PORT, hvsock:///path/vm.sock:PORT, unix:///path or tcp://HOST:PORT.
    /// Required by every command except `proxy`.
    #[arg(long, env = "GUESTCTL_CONNECT", value_name = "URI")]
    pub connect: Option<ConnectUri>,

    /// CA bundle (PEM) the agent's certificate must chain to, for tls+tcp:// (also for
    /// tls+tcp:// proxy targets).
    #[arg(long, global = true, value_name = "PEM")]
    pub tls_ca: Option<PathBuf>,

    /// Client certificate (PEM) presented to agents started with --tls-client-ca.
    #[arg(long, global = true, value_name = "PEM", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// Private key (PEM) of --tls-cert.
    #[arg(long, global = true, value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Print one JSON object on stdout instead of human-readable text.
    #[arg(long, global = true)]
    pub json: bool,

    /// Seconds allowed for connecting (and the hybrid vsock handshake).
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = parse_secs)]
    pub connect_timeout: Duration,

    /// Seconds allowed for each RPC.
    #[arg(long, value_name = "SECS", default_value = "30", value_parser = parse_secs)]
    pub timeout: Duration,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands, one per agent RPC.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check the agent is alive; prints its version and the round-trip time.
    Ping {
        /// Number of pings.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        count: u32,
        /// Pause between pings, milliseconds.
        #[arg(long, value_name = "MS", default_value_t = 1000)]
        interval_ms: u64,
    },
    /// Initialise the guest: mount volumes, configure the network.
    Init(InitArgs),
    /// Freeze filesystems (FIFREEZE) for a consistent snapshot.
    Quiesce {
        /// Freeze only this mountpoint (repeatable); default: every eligible filesystem.
        #[arg(long = "mountpoint", value_name = "PATH")]
        mountpoints: Vec<String>,
    },
    /// Thaw (FITHAW) what the agent froze.
    Thaw,
    /// Show what the agent holds frozen and the watchdog state.
    Status,
    /// Ask the agent to thaw, drain and exit.
    Shutdown,
    /// Freeze, pause the VMM, run COMMAND, resume, thaw (guaranteed) and confirm.
    #[command(long_about = SNAPSHOT_ABOUT)]
    Snapshot(SnapshotArgs),
    /// Serve one Prometheus /metrics on the host for many VMs (no --connect needed).
    #[command(long_about = PROXY_ABOUT)]
    Proxy(ProxyArgs),
    /// Relay the guests' OTLP exports to a collector, adding vm="NAME" (no --connect needed).
    #[command(long_about = RELAY_ABOUT)]
    OtlpRelay(RelayArgs),
}

const RELAY_ABOUT: &str = "\
Relays guest agents' OTLP/gRPC exports (traces, metrics, logs) to an OpenTelemetry Collector,
adding the resource attribute vm=\"NAME\" (replacing any the guest set) and each --attribute.
The collector's answer goes back to the guest; a missing or slow collector fails the export
within --timeout, and the agent drops and counts that batch.

Where the exports arrive, per VM:
  --vm NAME=unix:///run/fc/vm1.sock_4317  Firecracker / Cloud Hypervisor: the unix socket the VMM
                                         opens for guest connections to host port 4317
                                         (agent: --otlp-endpoint vsock://2:4317)
  --vm NAME=tcp://127.0.0.1:PORT          a TCP port (tests, or a VMM that forwards to TCP)
  --vsock-port 4317 --vm-cid NAME=CID     QEMU vhost-vsock: one AF_VSOCK port, VMs told apart
                                         by CID (others are refused)
--vms-file FILE holds more NAME=LISTEN_URI lines; SIGHUP re-reads it (VMs come and go).

The first line on stdout says how many VMs are relayed.";

/// Flags of `guestctl otlp-relay`.
#[derive(Debug, Args)]
pub struct RelayArgs {
    /// A VM and where its agent's exports arrive: NAME=LISTEN_URI (unix:// or tcp://; repeatable).
    #[arg(long = "vm", value_name = "NAME=URI")]
    pub vms: Vec<crate::relay::RelayVm>,

    /// File of NAME=LISTEN_URI lines (# comments), re-read on SIGHUP.
    #[arg(long, value_name = "FILE")]
    pub vms_file: Option<PathBuf>,

    /// AF_VSOCK port for vhost-vsock guests (with --vm-cid).
    #[arg(long, value_name = "PORT")]
    pub vsock_port: Option<u32>,

    /// A vhost-vsock VM by CID: NAME=CID (repeatable; with --vsock-port).
    #[arg(long = "vm-cid", value_name = "NAME=CID", value_parser = crate::relay::parse_vm_cid)]
    pub vm_cids: Vec<(String, u32)>,

    /// The collector's OTLP/gRPC endpoint, http://HOST:PORT.
    #[arg(long, value_name = "URL")]
    pub upstream: String,

    /// A resource attribute for every export, e.g. host.name=$(hostname) (repeatable).
    #[arg(long = "attribute", value_name = "KEY=VALUE", value_parser = crate::relay::parse_attribute)]
    pub attributes: Vec<(String, String)>,

    /// Seconds each forwarded export may take, connecting included.
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = parse_secs)]
    pub timeout: Duration,
}

const PROXY_ABOUT: &str = "\
Serves /metrics on a host address for any number of VMs. On every scrape each guest's
metrics are fetched concurrently, each bounded by --scrape-timeout (a dead or frozen VM never
delays the others), every guest sample gets vm=\"NAME\", and the proxy adds per VM:
guest_agent_up, guestctl_scrape_duration_seconds, guestctl_scrape_errors_total,
guestctl_ping_rtt_seconds (histogram), guestctl_ping_errors_total. A failing guest is left
out (up 0); the exposition stays well-formed.

Service discovery, for one Prometheus target per VM (its own up, labels from the targets):
each VM is also served alone at /vm/NAME/metrics (no vm label: Prometheus adds it; 503 when
the guest fails, so up is 0), GET /sd answers http_sd_configs, and --sd-file FILE is kept
up to date for file_sd_configs:
  [{\"targets\": [\"HOST:PORT\"], \"labels\": {\"vm\": \"NAME\", \"__metrics_path__\": \"/vm/NAME/metrics\"}}]

Targets: --target NAME=SPEC (repeatable) and/or --targets-file F (NAME=SPEC lines, or JSON
{\"NAME\": \"SPEC\"} / [{\"name\": .., \"target\": ..}]), reloaded on SIGHUP. SPEC is
  URI or http+URI[,ping=GRPC_URI]  GET /metrics over URI (the agent's --metrics-listen);
                                   ,ping= names the agent's gRPC endpoint for the pings
  grpc+URI                         the GetMetrics RPC on the agent's gRPC endpoint (also
                                   pinged): one port per VM is enough
where URI is vsock://CID:PORT, hvsock:///vm.sock:PORT, unix:///PATH or tcp://HOST:PORT.

The first line on stdout is the URL served.";

/// Flags of `guestctl proxy`.
#[derive(Debug, Args)]
pub struct ProxyArgs {
    /// Host address to serve /metrics on, e.g. 127.0.0.1:9465 (port 0: pick one).
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: std::net::SocketAddr,

    /// A VM: NAME=URI, NAME=http+URI[,ping=URI] or NAME=grpc+URI (repeatable).
    #[arg(long = "target", value_name = "NAME=SPEC")]
    pub targets: Vec<crate::proxy::targets::Target>,

    /// File of targets (NAME=SPEC lines or JSON), re-read on SIGHUP.
    #[arg(long, value_name = "FILE")]
    pub targets_file: Option<PathBuf>,

    /// Seconds allowed for each VM's fetch (and ping) per scrape (shortened to Prometheus'
    /// own scrape timeout when that is shorter).
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = parse_secs)]
    pub scrape_timeout: Duration,

    /// Keep FILE up to date for Prometheus' file_sd_configs: one target per VM, scraped at
    /// /vm/NAME/metrics on this proxy (written at start and after each reload).
    #[arg(long, value_name = "FILE")]
    pub sd_file: Option<PathBuf>,

    /// HOST:PORT Prometheus reaches this proxy at, for the targets of --sd-file and /sd.
    /// Default: the listen address (the host name for 0.0.0.0); /sd uses the request's Host.
    #[arg(long, value_name = "HOST:PORT")]
    pub sd_address: Option<String>,

    /// A label for every VM's service discovery target, e.g. host=$(hostname) (repeatable).
    #[arg(long = "sd-label", value_name = "KEY=VALUE", value_parser = crate::proxy::sd::parse_label)]
    pub sd_labels: Vec<(String, String)>,
}

/// Flags of `guestctl snapshot`.
#[derive(Debug, Args)]
pub struct SnapshotArgs {
    /// The VMM process (firecracker, cloud-hypervisor, qemu) to SIGSTOP while COMMAND runs.
    #[arg(long, value_name = "PID")]
    pub pause_pid: Option<u32>,

    /// Seconds to wait for Quiesce (upstream's host uses 5).
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = parse_secs)]
    pub quiesce_timeout: Duration,

    /// Seconds the thaw may take in total: retries and confirmation.
    #[arg(long, value_name = "SECS", default_value = "30", value_parser = parse_secs)]
    pub thaw_deadline: Duration,

    /// Freeze only this mountpoint (repeatable); default: every eligible filesystem.
    #[arg(long = "mountpoint", value_name = "PATH")]
    pub mountpoints: Vec<String>,

    /// OTLP/gRPC receiver for the spans: http://HOST:PORT, or tcp://, unix://, vsock://.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", value_name = "URL")]
    pub otlp_endpoint: Option<String>,

    /// Seconds the span export may take.
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = parse_secs)]
    pub otlp_timeout: Duration,

    /// The command to run while the guest is frozen, after `--`.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

/// Flags of `guestctl init`: either `--file` or the individual flags.
#[derive(Debug, Args, Default)]
pub struct InitArgs {
    /// Read the whole request from a JSON file ("-" for stdin).
    #[arg(long, value_name = "F.json", conflicts_with_all = ["volumes", "virtiofs", "interface", "ip", "gateway"])]
    pub file: Option<PathBuf>,

    /// A block device volume: MOUNT=DEVICE[,format][,resize] (ext4), e.g. /data=/dev/vdb,format.
    #[arg(long = "volume", value_name = "SPEC")]
    pub volumes: Vec<String>,

    /// A virtiofs share: MOUNT=TAG[,ro], e.g. /shared=share0,ro.
    #[arg(long = "virtiofs", value_name = "SPEC")]
    pub virtiofs: Vec<String>,

    /// Network interface to configure, e.g. eth0.
    #[arg(long, value_name = "IF")]
    pub interface: Option<String>,

    /// Address with prefix length, e.g. 10.0.2.15/24 (needs --interface).
    #[arg(long, value_name = "CIDR", requires = "interface")]
    pub ip: Option<String>,

    /// Default gateway, e.g. 10.0.2.2 (needs --ip).
    #[arg(long, value_name = "IP", requires = "ip")]
    pub gateway: Option<String>,
}

/// Parses a positive number of seconds, fractions allowed ("0.5").
pub fn parse_secs(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if secs.is_nan() || secs <= 0.0 {
        return Err(format!("{s:?}: the timeout must be greater than 0"));
    }
    Duration::try_from_secs_f64(secs).map_err(|_| format!("{s:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn seconds_parse() {
        assert_eq!(parse_secs("5").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_secs("0.25").unwrap(), Duration::from_millis(250));
        assert!(parse_secs("0").is_err());
        assert!(parse_secs("-1").is_err());
        assert!(parse_secs("NaN").is_err());
        assert!(parse_secs("five").is_err());
    }

    #[test]
    fn flags_parse() {
        let cli = Cli::try_parse_from([
            "guestctl",
            "--connect",
            "hvsock:///run/vm.sock:2695",
            "--timeout",
            "2",
            "quiesce",
            "--mountpoint",
            "/a",
            "--mountpoint",
            "/b",
            "--json",
        ])
        .unwrap();
        assert!(cli.json);
        assert_eq!(cli.timeout, Duration::from_secs(2));
        assert_eq!(cli.connect_timeout, Duration::from_secs(5));
        match cli.command {
            Command::Quiesce { mountpoints } => assert_eq!(mountpoints, ["/a", "/b"]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn snapshot_flags_parse() {
        let cli = Cli::try_parse_from([
            "guestctl",
            "--connect",
            "unix:///run/a.sock",
            "snapshot",
            "--pause-pid",
            "42",
            "--quiesce-timeout",
            "0.5",
            "--json",
            "--",
            "cp",
            "--sparse=always",
            "a",
            "b",
        ])
        .unwrap();
        assert!(cli.json);
        let Command::Snapshot(s) = cli.command else {
            panic!("not a snapshot")
        };
        assert_eq!(s.pause_pid, Some(42));
        assert_eq!(s.quiesce_timeout, Duration::from_millis(500));
        assert_eq!(s.thaw_deadline, Duration::from_secs(30));
        assert_eq!(s.command, ["cp", "--sparse=always", "a", "b"]);
        // COMMAND is required and must follow `--`.
        for args in [
            &["guestctl", "--connect", "unix:///s", "snapshot"][..],
            &["guestctl", "--connect", "unix:///s", "snapshot", "cp"][..],
        ] {
            assert!(Cli::try_parse_from(args).is_err(), "{args:?}");
        }
    }

    #[test]
    fn proxy_flags_parse_without_connect() {
        let cli = Cli::try_parse_from([
            "guestctl",
            "proxy",
            "--listen",
            "127.0.0.1:0",
            "--target",
            "a=grpc+unix:///run/a.sock",
            "--target",
            "b=tcp://127.0.0.1:9100,ping=tcp://127.0.0.1:50051",
            "--scrape-timeout",
            "2",
        ])
        .unwrap();
        assert!(cli.connect.is_none());
        let Command::Proxy(p) = cli.command else {
            panic!("not proxy")
        };
        assert_eq!(p.targets.len(), 2);
        assert_eq!(p.scrape_timeout, Duration::from_secs(2));
        assert!(Cli::try_parse_from([
            "guestctl",
            "proxy",
            "--listen",
            "x",
            "--target",
            "a=tcp://h:1"
        ])
        .is_err());
        assert!(Cli::try_parse_from([
            "guestctl",
            "proxy",
            "--listen",
            "127.0.0.1:1",
            "--target",
            "a"
        ])
        .is_err());
    }

    #[test]
    fn usage_errors_are_rejected() {
        let bad: &[&[&str]] = &[
            &["guestctl", "--connect", "vsock://x:1", "ping"],
            &["guestctl", "--connect", "unix:///s", "ping", "--count", "0"],
            &[
                "guestctl",
                "--connect",
                "unix:///s",
                "init",
                "--file",
                "f.json",
                "--interface",
                "eth0",
            ],
            &[
                "guestctl",
                "--connect",
                "unix:///s",
                "init",
                "--ip",
                "10.0.0.2/24",
            ],
            &["guestctl", "--connect", "unix:///s", "frobnicate"],
        ];
        for args in bad {
            let err = Cli::try_parse_from(*args).expect_err(&args.join(" "));
            assert_eq!(err.exit_code(), 2, "{}", args.join(" "));
        }
    }
}
