//! The machine a run happened on, for the report: kernel, CPUs, load, date, source revision.

use std::process::Command;

/// Facts about the machine and the source tree.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Machine {
    /// `uname -r`.
    pub kernel: String,
    /// Online CPUs.
    pub cpus: usize,
    /// CPU model name from /proc/cpuinfo.
    pub cpu_model: String,
    /// Total memory, MiB.
    pub mem_mib: u64,
    /// UTC date and time of the run.
    pub date: String,
    /// `git describe --always --dirty` of the workspace.
    pub revision: String,
    /// 1-minute load average at the start and at the end.
    pub load: (f64, f64),
}

impl Machine {
    /// Reads everything now (the end load is filled in later).
    pub fn probe() -> Self {
        Self {
            kernel: read("/proc/sys/kernel/osrelease"),
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu_model: cpu_model(&read("/proc/cpuinfo")),
            mem_mib: mem_total_kib(&read("/proc/meminfo")) / 1024,
            date: output(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"])),
            revision: output(
                Command::new("git")
                    .args(["describe", "--always", "--dirty"])
                    .current_dir(crate::workspace_root()),
            ),
            load: (load_now(), 0.0),
        }
    }

    /// True if the machine was busy (1-minute load ≥ 1.5) at either end of the run.
    pub fn busy(&self) -> bool {
        self.load.0 >= 1.5 || self.load.1 >= 1.5
    }
}

/// The 1-minute load average.
pub fn load_now() -> f64 {
    read("/proc/loadavg")
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

fn output(cmd: &mut Command) -> String {
    cmd.output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".into())
}

/// The first `model name` in /proc/cpuinfo text.
pub fn cpu_model(cpuinfo: &str) -> String {
    cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_else(|| "unknown".into())
}

fn mem_total_kib(meminfo: &str) -> u64 {
    meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpu_model_and_memory() {
        let cpuinfo = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\n";
        assert_eq!(cpu_model(cpuinfo), "AMD EPYC 7B13");
        assert_eq!(cpu_model(""), "unknown");
        assert_eq!(
            mem_total_kib("MemTotal:       24684384 kB\nMemFree: 1 kB\n"),
            24_684_384
        );
    }

    #[test]
    fn busy_means_load_at_or_above_one_and_a_half() {
        let mut m = Machine {
            load: (0.4, 1.2),
            ..Machine::default()
        };
        assert!(!m.busy());
        m.load.1 = 1.5;
        assert!(m.busy());
    }
}
