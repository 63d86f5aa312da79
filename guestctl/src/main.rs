//! guestctl: host-side client of the microVM guest agent (`boxlite.v1.Guest`).
//!
//! `guestctl --connect URI [--json] <ping|init|quiesce|thaw|status|shutdown|snapshot>`;
//! see `guestctl --help` for transports and exit codes.

mod cli;
mod commands;
mod error;
mod exit_code;
mod grpc_code;
mod init_spec;
mod output;
mod proxy;
mod relay;
mod snapshot;

use std::process::ExitCode;

use clap::Parser;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    // clap exits with 2 on usage errors (and 0 for --help/--version).
    let cli = cli::Cli::parse();
    // Diagnostics go to stderr and stay quiet unless RUST_LOG asks for more.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    match commands::run(cli).await {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("guestctl: {e}");
            e.exit_code()
        }
    }
}
