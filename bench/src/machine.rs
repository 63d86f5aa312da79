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
    /// CPU counters at the start, to tell how busy everything else was during the run.
    pub cpu_start: Option<CpuSample>,
    /// Share of the machine's CPU time (all CPUs) used by anything but this benchmark and
    /// its children during the run, 0..1. Kernel threads doing our I/O count as others.
    pub others_cpu: Option<f64>,
}

/// Machine-wide and own CPU time, in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuSample {
    /// Busy ticks of all CPUs (everything but idle and iowait).
    pub busy: u64,
    /// All ticks of all CPUs.
    pub total: u64,
    /// This process plus its waited-for children (user + system).
    pub ours: u64,
}

impl CpuSample {
    /// Reads /proc/stat and /proc/self/stat.
    pub fn now() -> Option<Self> {
        let (busy, total) = machine_ticks(&read("/proc/stat"))?;
        Some(Self {
            busy,
            total,
            ours: own_ticks(&read("/proc/self/stat"))?,
        })
    }

    /// Share of all CPU time between `self` and `later` used by others (0..1).
    pub fn others_share(&self, later: &CpuSample) -> Option<f64> {
        let total = later.total.checked_sub(self.total)?;
        let busy = later.busy.checked_sub(self.busy)?;
        let ours = later.ours.checked_sub(self.ours)?;
        (total > 0).then(|| busy.saturating_sub(ours) as f64 / total as f64)
    }
}

/// (busy, total) ticks from the `cpu` line of /proc/stat.
pub fn machine_ticks(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal [guest guest_nice: already in user]
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4)?;
    Some((total - idle, total))
}

/// utime + stime + cutime + cstime from the text of /proc/self/stat.
pub fn own_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14..=17 of stat(5); `rest` starts at field 3.
    (11..=14).map(|i| f.get(i)?.parse::<u64>().ok()).sum()
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
            cpu_start: CpuSample::now(),
            others_cpu: None,
        }
    }

    /// Fills in the end of the run: load and the others' CPU share.
    pub fn finish(&mut self) {
        self.load.1 = load_now();
        self.others_cpu = self
            .cpu_start
            .zip(CpuSample::now())
            .and_then(|(a, b)| a.others_share(&b));
    }

    /// True if the machine was busy: a 1-minute load ≥ 1.5 when the run started, or other
    /// programs using ≥ 25 % of all CPU time during it. (The load at the end is not used: the
    /// benchmark's own writers, blocked in D state, count in it.)
    pub fn busy(&self) -> bool {
        self.load.0 >= 1.5 || self.others_cpu.is_some_and(|s| s >= 0.25)
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
    fn busy_means_a_loaded_start_or_others_using_a_quarter_of_the_cpu() {
        let mut m = Machine {
            load: (0.4, 2.2),
            others_cpu: Some(0.1),
            ..Machine::default()
        };
        assert!(!m.busy(), "the end load includes our own blocked writers");
        m.others_cpu = Some(0.3);
        assert!(m.busy());
        m.others_cpu = None;
        m.load.0 = 1.5;
        assert!(m.busy());
    }

    #[test]
    fn cpu_counters_and_the_others_share() {
        let stat = "cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 50 0 25 400 25 0 0 0 0 0\n";
        assert_eq!(machine_ticks(stat), Some((150, 1000)));
        let me = "77 (freeze bench) S 1 77 77 0 -1 0 0 0 0 0 30 10 5 5 20 0 3 0";
        assert_eq!(own_ticks(me), Some(50));
        let a = CpuSample {
            busy: 150,
            total: 1000,
            ours: 50,
        };
        let b = CpuSample {
            busy: 450,
            total: 2000,
            ours: 150,
        };
        assert_eq!(a.others_share(&b), Some(0.2));
        assert_eq!(b.others_share(&a), None);
    }
}
