//! `fleet-bench`: `guestctl proxy` at fleet scale (issue 15), scraped by a real Prometheus.
//!
//! For each N (default 50, 200, 500) it starts N targets: real `guest-agent` processes
//! (`--ebpf off`, metrics on a unix socket, nothing to freeze) up to `--real-max`, the rest
//! light stand-ins ([`standin`]) serving a real agent's exposition (captured from an agent
//! after freeze cycles with blocked writers and the eBPF observer on, nine filesystems seen
//! frozen: `bench/data/fleet-exposition.txt`, mountpoints renamed) over unix sockets and hybrid vsock sockets, half each.
//! The release `guestctl proxy` scrapes them (`--scrape-timeout 0.5`) and a real Prometheus
//! scrapes the proxy every 5 s (scrape timeout 4 s) for `--seconds` (default 120) per run.
//!
//! Runs per N: every target healthy, then 5 % dead (connection refused), 5 % frozen (accept,
//! never answer) and 1 % slow (body dribbled over 3 s), all merged on `/metrics`; at the
//! largest N the faulty run once more through service discovery (`--sd-file`: one
//! Prometheus target per VM). Reported: Prometheus' `scrape_duration_seconds` p50/p99/max,
//! samples per scrape and head series, the proxy's CPU per scrape and RSS, and whether every
//! healthy VM was up in every scrape while the faulty ones were down. The section
//! "## Fleet scale" of BENCHMARKS.md is replaced with the results.

mod procs;
mod prom;
mod report;
mod run;
#[path = "../sections.rs"]
mod sections;
mod standin;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Command line of `fleet-bench`.
#[derive(Debug, Parser)]
#[command(about = "guestctl proxy at fleet scale, scraped by a real Prometheus (issue 15)")]
pub struct Args {
    /// Internal: the stand-in process.
    #[command(subcommand)]
    pub command: Option<Sub>,

    /// Numbers of targets, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "50,200,500")]
    pub sizes: Vec<usize>,

    /// Seconds Prometheus scrapes in each run.
    #[arg(long, default_value_t = 120)]
    pub seconds: u64,

    /// Most real guest-agent processes in one run; the other targets are stand-ins.
    #[arg(long, default_value_t = 100)]
    pub real_max: usize,

    /// The proxy's --scrape-timeout (the bound of each VM's fetch), seconds.
    #[arg(long, default_value_t = 0.5)]
    pub proxy_timeout: f64,

    /// Skip the fault runs.
    #[arg(long)]
    pub no_faults: bool,

    /// The file whose "## Fleet scale" section is replaced (with --write).
    #[arg(long, default_value = "BENCHMARKS.md")]
    pub output: PathBuf,

    /// Write the section into --output.
    #[arg(long)]
    pub write: bool,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Sub {
    /// Serve stand-in sockets (see the standin module).
    Standin {
        /// `MODE unix|hybrid PATH` lines.
        spec: String,
        /// The exposition text to serve.
        exposition: String,
    },
}

/// The workspace root (the parent of this crate).
pub fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map_or(manifest.clone(), PathBuf::from)
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(Sub::Standin { spec, exposition }) = &args.command {
        return match standin::main(spec, exposition) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("fleet-bench standin: {e}");
                ExitCode::FAILURE
            }
        };
    }
    match run::all(&args) {
        Ok(results) => {
            let section = report::render(&results, &args);
            println!("{section}");
            if args.write {
                if let Err(e) = report::write_section(&args.output, &section) {
                    eprintln!("fleet-bench: {e}");
                    return ExitCode::FAILURE;
                }
                eprintln!(
                    "fleet-bench: wrote the section into {}",
                    args.output.display()
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("fleet-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
