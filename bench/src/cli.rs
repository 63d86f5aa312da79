//! Command line, and the effective plan after `--quick`.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::contender::{Binaries, ContenderKind};
use crate::error::BenchError;
use crate::writer::WriterConfig;

/// Freeze cost benchmark (issue 7): writer stalls, call latencies and frozen windows of
/// guest-agent, qemu-guest-agent and a raw fsfreeze loop on K loop-mounted ext4 filesystems,
/// measured by the eBPF freeze observer. Run as root; it creates and removes its own
/// filesystems under /var/tmp/freeze-bench-* and freezes nothing else.
#[derive(Debug, Parser)]
#[command(name = "freeze-bench", version, about, long_about = None)]
pub struct Args {
    /// Numbers of filesystems to freeze together (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1,4,8")]
    pub ks: Vec<usize>,
    /// Measured cycles per contender and K with writers running.
    #[arg(long, default_value_t = 20)]
    pub cycles: usize,
    /// Measured cycles per contender and K on clean filesystems.
    #[arg(long, default_value_t = 20)]
    pub clean_cycles: usize,
    /// Unmeasured warm-up cycles per contender before each phase.
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// How long the host holds the freeze between Quiesce and Thaw, ms.
    #[arg(long, default_value_t = 100)]
    pub hold_ms: u64,
    /// Pause before each freeze with writers running (they dirty pages meanwhile), ms.
    #[arg(long, default_value_t = 1000)]
    pub gap_ms: u64,
    /// Pause before each freeze on clean filesystems, ms.
    #[arg(long, default_value_t = 200)]
    pub clean_gap_ms: u64,
    /// Write rate of each filesystem's writer, MiB/s.
    #[arg(long, default_value_t = 8.0)]
    pub rate_mib: f64,
    /// Size of each write, KiB.
    #[arg(long, default_value_t = 64)]
    pub chunk_kib: usize,
    /// Size of each writer's file, MiB; the write offset wraps around it.
    #[arg(long, default_value_t = 64)]
    pub file_mib: u64,
    /// Size of each (sparse) ext4 image, MiB.
    #[arg(long, default_value_t = 256)]
    pub image_mib: u64,
    /// Attach loop devices without direct I/O (image data then also passes through the host
    /// page cache).
    #[arg(long)]
    pub buffered_loop: bool,
    /// A quick look: 5 cycles, K = 1 and 8, 500 ms gaps, 2 start-up timings.
    #[arg(long)]
    pub quick: bool,
    /// Skip the clean-filesystem phase.
    #[arg(long)]
    pub no_clean: bool,
    /// Contenders (comma-separated): agent, agent-serial, agent-normal-rcu, qemu-ga, fsfreeze.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "agent,agent-serial,agent-normal-rcu,qemu-ga,fsfreeze"
    )]
    pub contenders: Vec<ContenderKind>,
    /// Starts per process for the start-to-ready time.
    #[arg(long, default_value_t = 5)]
    pub ready_runs: usize,
    /// guest-agent binary (a release build). Default: target/release/guest-agent.
    #[arg(long)]
    pub agent_bin: Option<PathBuf>,
    /// qemu-ga binary.
    #[arg(long, default_value = "/usr/sbin/qemu-ga")]
    pub qemu_ga_bin: PathBuf,
    /// fsfreeze binary.
    #[arg(long, default_value = "/usr/sbin/fsfreeze")]
    pub fsfreeze_bin: PathBuf,
    /// Markdown file whose "Freeze cost" section is replaced. Default: BENCHMARKS.md at the
    /// workspace root.
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Print the tables only; do not write the Markdown file.
    #[arg(long)]
    pub no_write: bool,
    /// Measure the agent's footprint instead (issue 13): memory, Ping latency, start-up and
    /// binary size against qemu-ga, with eBPF, /metrics and OTLP on; writes the section
    /// "Footprint: agent vs qemu-guest-agent". `--quick`, `--ready-runs`, `--agent-bin`,
    /// `--qemu-ga-bin`, `--output` and `--no-write` apply.
    #[arg(long)]
    pub footprint: bool,
    /// Static musl agent as shipped into guests, measured by `--footprint` when it exists.
    /// Default: target/x86_64-unknown-linux-musl/release/guest-agent.
    #[arg(long)]
    pub musl_agent_bin: Option<PathBuf>,
    /// Copy the contenders' logs into this directory at the end (the scratch directory is
    /// removed). `FREEZE_BENCH_AGENT_LOG=guest_agent=debug` makes the agents log their
    /// pre-sync rounds.
    #[arg(long, value_name = "DIR")]
    pub keep_logs: Option<PathBuf>,
}

/// What to run, with `--quick` and the defaults applied.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Filesystem counts, ascending.
    pub ks: Vec<usize>,
    /// Cycles with writers.
    pub cycles: usize,
    /// Cycles on clean filesystems (0: skip the phase).
    pub clean_cycles: usize,
    /// Warm-up cycles per contender and phase.
    pub warmup: usize,
    /// Freeze hold.
    pub hold: Duration,
    /// Pause before each dirty cycle.
    pub gap: Duration,
    /// Pause before each clean cycle.
    pub clean_gap: Duration,
    /// Writers.
    pub writer: WriterConfig,
    /// Image size, MiB.
    pub image_mib: u64,
    /// Loop devices with direct I/O.
    pub direct_io: bool,
    /// Contenders, in table order.
    pub contenders: Vec<ContenderKind>,
    /// Start-up timings per process.
    pub ready_runs: usize,
    /// Binaries.
    pub bins: Binaries,
    /// Where to write the section, if anywhere.
    pub output: Option<PathBuf>,
    /// Where to copy the contenders' logs, if anywhere.
    pub keep_logs: Option<PathBuf>,
}

impl Args {
    /// Validates and applies `--quick`.
    pub fn plan(&self) -> Result<Plan, BenchError> {
        let root = crate::workspace_root();
        let (mut ks, cycles, clean_cycles, gap, ready_runs) = if self.quick {
            (vec![1, 8], 5, 5, Duration::from_millis(500), 2)
        } else {
            (
                self.ks.clone(),
                self.cycles,
                self.clean_cycles,
                Duration::from_millis(self.gap_ms),
                self.ready_runs,
            )
        };
        ks.sort_unstable();
        ks.dedup();
        if ks.is_empty() || ks[0] == 0 || *ks.last().expect("non-empty") > 32 {
            return Err(BenchError::Config("K must be between 1 and 32".into()));
        }
        let chunk = self.chunk_kib << 10;
        let file_size = self.file_mib << 20;
        if chunk == 0 || file_size < chunk as u64 || !file_size.is_multiple_of(chunk as u64) {
            return Err(BenchError::Config(
                "the writer's file must be a non-zero multiple of the write size".into(),
            ));
        }
        if self.rate_mib.is_nan() || self.rate_mib <= 0.0 || self.file_mib * 2 > self.image_mib {
            return Err(BenchError::Config(
                "need a positive rate and an image at least twice the writer's file".into(),
            ));
        }
        let mut contenders = self.contenders.clone();
        contenders.sort_unstable();
        contenders.dedup();
        if contenders.is_empty() || cycles == 0 {
            return Err(BenchError::Config("nothing to run".into()));
        }
        Ok(Plan {
            ks,
            cycles,
            clean_cycles: if self.no_clean { 0 } else { clean_cycles },
            warmup: self.warmup,
            hold: Duration::from_millis(self.hold_ms),
            gap,
            clean_gap: Duration::from_millis(self.clean_gap_ms),
            writer: WriterConfig {
                rate: self.rate_mib * 1024.0 * 1024.0,
                chunk,
                file_size,
            },
            image_mib: self.image_mib,
            direct_io: !self.buffered_loop,
            contenders,
            ready_runs,
            bins: Binaries {
                agent: self
                    .agent_bin
                    .clone()
                    .unwrap_or_else(|| root.join("target/release/guest-agent")),
                qemu_ga: self.qemu_ga_bin.clone(),
                fsfreeze: self.fsfreeze_bin.clone(),
            },
            output: (!self.no_write).then(|| {
                self.output
                    .clone()
                    .unwrap_or_else(|| root.join("BENCHMARKS.md"))
            }),
            keep_logs: self.keep_logs.clone(),
        })
    }
}

impl Args {
    /// The footprint run's plan (`--footprint`), with `--quick` applied.
    pub fn footprint_plan(&self) -> Result<crate::footprint::FootprintPlan, BenchError> {
        let root = crate::workspace_root();
        let (pings, cycles, scrapes, frozen_rounds, ready_runs) = if self.quick {
            (200, 20, 20, 2, 2)
        } else {
            (1000, 100, 100, 5, self.ready_runs)
        };
        if ready_runs == 0 {
            return Err(BenchError::Config("--ready-runs must be at least 1".into()));
        }
        Ok(crate::footprint::FootprintPlan {
            pings,
            cycles,
            scrapes,
            frozen_k: 8,
            frozen_rounds,
            frozen_pings: 100,
            ready_runs,
            image_mib: 64,
            agent: self
                .agent_bin
                .clone()
                .unwrap_or_else(|| root.join("target/release/guest-agent")),
            musl_agent: self.musl_agent_bin.clone().unwrap_or_else(|| {
                root.join("target/x86_64-unknown-linux-musl/release/guest-agent")
            }),
            vm_agent: root.join("target/x86_64-unknown-linux-musl/debug/guest-agent"),
            qemu_ga: self.qemu_ga_bin.clone(),
            guestctl: root.join("target/release/guestctl"),
            python: std::env::var_os("GUEST_AGENT_PY_VENV")
                .map_or_else(|| PathBuf::from("/opt/guest-agent-test/py"), PathBuf::from)
                .join("bin/python"),
            root: root.clone(),
            output: (!self.no_write).then(|| {
                self.output
                    .clone()
                    .unwrap_or_else(|| root.join("BENCHMARKS.md"))
            }),
        })
    }
}

impl Plan {
    /// The workload in one sentence, for the report.
    pub fn describe(&self) -> String {
        format!(
            "Set-up: K ext4 filesystems on separate sparse {} MiB images, loop devices {}; \
             one writer per filesystem doing buffered {} KiB writes at {:.0} MiB/s over a \
             {} MiB file; Quiesce, hold {} ms, Thaw; {} ms between cycles with writers \
             ({} measured cycles per contender and K, interleaved round-robin, after {} \
             warm-up), {} ms on clean filesystems ({} cycles).",
            self.image_mib,
            if self.direct_io {
                "with direct I/O"
            } else {
                "buffered"
            },
            self.writer.chunk >> 10,
            self.writer.rate / (1024.0 * 1024.0),
            self.writer.file_size >> 20,
            self.hold.as_millis(),
            self.gap.as_millis(),
            self.cycles,
            self.warmup,
            self.clean_gap.as_millis(),
            self.clean_cycles,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_issue_and_quick_shrinks_the_run() {
        let a = Args::try_parse_from(["freeze-bench"]).unwrap();
        let p = a.plan().unwrap();
        assert_eq!(p.ks, vec![1, 4, 8]);
        assert_eq!((p.cycles, p.clean_cycles), (20, 20));
        assert_eq!(p.hold, Duration::from_millis(100));
        assert_eq!(p.writer.chunk, 64 << 10);
        assert_eq!(p.writer.rate, 8.0 * 1024.0 * 1024.0);
        assert_eq!(p.contenders.len(), 5);
        assert!(p.bins.agent.ends_with("target/release/guest-agent"));
        assert!(p.output.unwrap().ends_with("BENCHMARKS.md"));
        let q = Args::try_parse_from(["freeze-bench", "--quick", "--no-write", "--no-clean"])
            .unwrap()
            .plan()
            .unwrap();
        assert_eq!((q.ks.clone(), q.cycles, q.clean_cycles), (vec![1, 8], 5, 0));
        assert!(q.output.is_none());
    }

    #[test]
    fn the_footprint_plan_follows_the_issue() {
        let p = Args::try_parse_from(["freeze-bench", "--footprint"])
            .unwrap()
            .footprint_plan()
            .unwrap();
        assert_eq!(
            (p.pings, p.cycles, p.scrapes, p.frozen_k),
            (1000, 100, 100, 8)
        );
        assert!(p
            .musl_agent
            .ends_with("x86_64-unknown-linux-musl/release/guest-agent"));
        assert!(p
            .vm_agent
            .ends_with("x86_64-unknown-linux-musl/debug/guest-agent"));
        assert!(p.output.unwrap().ends_with("BENCHMARKS.md"));
        let q = Args::try_parse_from(["freeze-bench", "--footprint", "--quick", "--no-write"])
            .unwrap()
            .footprint_plan()
            .unwrap();
        assert_eq!((q.pings, q.cycles, q.ready_runs), (200, 20, 2));
        assert!(q.output.is_none());
    }

    #[test]
    fn rejects_unworkable_settings() {
        for args in [
            &["freeze-bench", "--ks", "0"][..],
            &["freeze-bench", "--file-mib", "200"],
            &["freeze-bench", "--chunk-kib", "0"],
            &["freeze-bench", "--cycles", "0"],
        ] {
            let a = Args::try_parse_from(args).unwrap();
            assert!(a.plan().is_err(), "{args:?}");
        }
        assert!(Args::try_parse_from(["freeze-bench", "--contenders", "vmware"]).is_err());
    }
}
