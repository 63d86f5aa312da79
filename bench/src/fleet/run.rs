//! One benchmark run: the targets, the proxy, Prometheus, the measurements.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::procs::{cpu_time, rss_kib, Child};
use super::prom::{http_get, Prometheus};
use super::standin::{Mode, Socket};
use super::{workspace_root, Args};

/// Prometheus' scrape interval.
pub const INTERVAL: Duration = Duration::from_secs(5);
/// Prometheus' scrape timeout.
pub const PROM_TIMEOUT: Duration = Duration::from_secs(4);

/// What one run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scenario {
    /// Targets.
    pub n: usize,
    /// 5 % dead, 5 % frozen, 1 % slow.
    pub faults: bool,
    /// One Prometheus target per VM (file_sd) instead of the merged /metrics.
    pub sd: bool,
}

impl Scenario {
    /// Dead, frozen and slow targets.
    pub fn fault_counts(&self) -> (usize, usize, usize) {
        if !self.faults {
            return (0, 0, 0);
        }
        let pct = |p: usize| (self.n * p).div_ceil(100);
        (pct(5), pct(5), pct(1).max(1))
    }
}

/// What one run measured.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The run.
    pub scenario: Scenario,
    /// Real guest-agent processes.
    pub real: usize,
    /// Stand-in sockets (healthy and faulty).
    pub standins: usize,
    /// Prometheus scrapes in the window (merged: of the proxy; SD: per target, mean).
    pub scrapes: usize,
    /// `scrape_duration_seconds` samples (merged: the proxy's; SD: the healthy targets').
    pub durations: Vec<f64>,
    /// SD only: the faulty targets' `scrape_duration_seconds` samples.
    pub faulty_durations: Vec<f64>,
    /// Samples per scrape (SD: all targets together).
    pub samples: f64,
    /// Prometheus' head series at the end.
    pub head_series: f64,
    /// The proxy's CPU time in the window.
    pub cpu: Duration,
    /// The window.
    pub wall: Duration,
    /// The proxy's RSS samples, KiB.
    pub rss: Vec<u64>,
    /// The proxy's peak RSS (VmHWM), KiB.
    pub hwm: u64,
    /// Healthy VMs up in every scrape of the window, of all healthy VMs.
    pub healthy_up: (usize, usize),
    /// Faulty VMs down in every scrape of the window, of all faulty VMs.
    pub faulty_down: (usize, usize),
    /// One real agent's RSS, KiB (when there were real agents).
    pub agent_rss: Option<u64>,
}

/// Runs every scenario of `args`.
pub fn all(args: &Args) -> Result<Vec<Outcome>, String> {
    preflight(args)?;
    let mut out = Vec::new();
    let largest = args.sizes.iter().copied().max().unwrap_or(0);
    for &n in &args.sizes {
        out.push(one(
            args,
            Scenario {
                n,
                faults: false,
                sd: false,
            },
        )?);
        if !args.no_faults {
            out.push(one(
                args,
                Scenario {
                    n,
                    faults: true,
                    sd: false,
                },
            )?);
        }
    }
    if largest > 0 {
        out.push(one(
            args,
            Scenario {
                n: largest,
                faults: !args.no_faults,
                sd: true,
            },
        )?);
    }
    Ok(out)
}

fn bin(name: &str) -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let p = exe
        .parent()
        .map(|d| d.join(name))
        .ok_or("no directory for the binaries")?;
    if p.exists() {
        Ok(p)
    } else {
        Err(format!(
            "{} is missing: cargo build --release -p guest-agent -p guestctl",
            p.display()
        ))
    }
}

/// The exposition the stand-ins serve.
pub fn exposition_file() -> PathBuf {
    workspace_root().join("bench/data/fleet-exposition.txt")
}

fn preflight(args: &Args) -> Result<(), String> {
    bin("guest-agent")?;
    bin("guestctl")?;
    if !Path::new("/usr/bin/prometheus").exists() {
        return Err("/usr/bin/prometheus is missing (scripts/setup.sh installs it)".into());
    }
    if !exposition_file().exists() {
        return Err(format!("{} is missing", exposition_file().display()));
    }
    if args.sizes.is_empty() {
        return Err("--sizes is empty".into());
    }
    Ok(())
}

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Result<Self, String> {
        let p = std::env::temp_dir().join(format!("fleet-bench-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        Ok(Self(p))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn wait_until(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) -> Result<(), String> {
    let t0 = Instant::now();
    while !ok() {
        if t0.elapsed() > limit {
            return Err(format!("timed out after {limit:?} waiting for {what}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

fn one(args: &Args, sc: Scenario) -> Result<Outcome, String> {
    let tag = format!(
        "{}-{}{}",
        sc.n,
        if sc.faults { "faults" } else { "healthy" },
        if sc.sd { "-sd" } else { "" }
    );
    eprintln!("fleet-bench: run {tag}: starting targets");
    let scratch = Scratch::new(&tag)?;
    let dir = &scratch.0;
    let shm = Scratch(PathBuf::from(format!(
        "/dev/shm/fleet-bench-{}-{tag}",
        std::process::id()
    )));
    std::fs::create_dir_all(&shm.0).map_err(|e| e.to_string())?;
    let empty = dir.join("nothing-to-freeze");
    std::fs::create_dir_all(&empty).map_err(|e| e.to_string())?;

    let (dead, frozen, slow) = sc.fault_counts();
    let healthy = sc.n - dead - frozen - slow;
    let real = healthy.min(args.real_max);
    let mut targets = String::new();
    // Real agents first.
    let agent_bin = bin("guest-agent")?;
    let mut agents = Vec::new();
    let mut metric_socks = Vec::new();
    for i in 0..real {
        let state = shm.0.join(format!("a{i}"));
        std::fs::create_dir_all(&state).map_err(|e| e.to_string())?;
        let sock = dir.join(format!("a{i}.sock"));
        let msock = dir.join(format!("m{i}.sock"));
        let mut cmd = Command::new(&agent_bin);
        cmd.arg("--listen")
            .arg(format!("unix://{}", sock.display()))
            .arg("--metrics-listen")
            .arg(format!("unix://{}", msock.display()))
            .args(["--ebpf", "off", "--state-dir"])
            .arg(&state)
            .arg("--freeze-only")
            .arg(&empty)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        agents.push(Child::spawn(cmd, "guest-agent")?);
        let _ = writeln!(targets, "vm-{i:05}=unix://{}", msock.display());
        metric_socks.push(msock);
    }
    // Stand-ins: the other healthy VMs, then the faulty ones; half hybrid vsock.
    let mut sockets = Vec::new();
    let mut add = |name: String, mode: Mode, targets: &mut String| {
        let k = sockets.len();
        let s = Socket {
            mode,
            hybrid: k % 2 == 1,
            path: dir.join(format!("s{k}.sock")),
        };
        let _ = writeln!(targets, "{name}={}", s.target_uri());
        sockets.push(s);
    };
    for i in real..healthy {
        add(format!("vm-{i:05}"), Mode::Ok, &mut targets);
    }
    for (count, mode) in [
        (dead, Mode::Dead),
        (frozen, Mode::Frozen),
        (slow, Mode::Slow),
    ] {
        for i in 0..count {
            add(format!("{}-{i:03}", mode.as_str()), mode, &mut targets);
        }
    }
    let standins = sockets.len();
    let _standin = if sockets.is_empty() {
        None
    } else {
        let spec = dir.join("standin.spec");
        let lines: Vec<String> = sockets.iter().map(Socket::line).collect();
        std::fs::write(&spec, lines.join("\n") + "\n").map_err(|e| e.to_string())?;
        // This very binary, even if a rebuild replaced the file meanwhile.
        let mut cmd = Command::new("/proc/self/exe");
        cmd.arg("standin")
            .arg(&spec)
            .arg(exposition_file())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut c = Child::spawn(cmd, "stand-in")?;
        let line = c.first_line(Duration::from_secs(30))?;
        if line.trim() != "ready" {
            return Err(format!("stand-in said {line:?}"));
        }
        Some(c)
    };
    wait_until(
        "the real agents' metrics sockets",
        Duration::from_secs(60),
        || metric_socks.iter().all(|p| p.exists()),
    )?;
    let agent_rss = agents.first().and_then(|a| rss_kib(a.pid())).map(|r| r.0);

    let targets_file = dir.join("targets");
    std::fs::write(&targets_file, &targets).map_err(|e| e.to_string())?;
    let sd_file = dir.join("sd.json");
    let mut cmd = Command::new(bin("guestctl")?);
    cmd.args(["proxy", "--listen", "127.0.0.1:0", "--scrape-timeout"])
        .arg(args.proxy_timeout.to_string())
        .arg("--targets-file")
        .arg(&targets_file)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if sc.sd {
        cmd.arg("--sd-file").arg(&sd_file);
    }
    let mut proxy = Child::spawn(cmd, "guestctl proxy")?;
    let line = proxy.first_line(Duration::from_secs(30))?;
    let port: u16 = line
        .split("http://127.0.0.1:")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| format!("proxy printed {line:?}"))?;

    let job = if sc.sd {
        format!(
            "  - job_name: vms\n    file_sd_configs:\n      - files: ['{}']\n",
            sd_file.display()
        )
    } else {
        format!("  - job_name: proxy\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n")
    };
    let config = format!(
        "global:\n  scrape_interval: {}s\n  scrape_timeout: {}s\n  evaluation_interval: 1m\nscrape_configs:\n{job}",
        INTERVAL.as_secs(),
        PROM_TIMEOUT.as_secs()
    );
    let prom_dir = dir.join("prometheus");
    std::fs::create_dir_all(&prom_dir).map_err(|e| e.to_string())?;
    let prom = Prometheus::start(&prom_dir, &config)?;
    let job_name = if sc.sd { "vms" } else { "proxy" };
    wait_until("a first scrape", Duration::from_secs(60), || {
        prom.scalar(&format!("count(up{{job=\"{job_name}\"}})"))
            .ok()
            .flatten()
            .is_some_and(|c| c as usize >= if sc.sd { sc.n } else { 1 })
    })?;
    // Let every target see its first scrape before the window starts.
    std::thread::sleep(INTERVAL);

    eprintln!(
        "fleet-bench: run {tag}: {real} real agents, {standins} stand-ins; measuring {} s",
        args.seconds
    );
    let window = Duration::from_secs(args.seconds);
    let t0 = Instant::now();
    let cpu0 = cpu_time(proxy.pid()).unwrap_or_default();
    let mut rss = Vec::new();
    while t0.elapsed() < window {
        if let Some((r, _)) = rss_kib(proxy.pid()) {
            rss.push(r);
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let cpu = cpu_time(proxy.pid())
        .unwrap_or_default()
        .saturating_sub(cpu0);
    let wall = t0.elapsed();
    let hwm = rss_kib(proxy.pid()).map(|r| r.1).unwrap_or(0);
    let w = format!("{}s", window.as_secs());

    let faulty = dead + frozen + slow;
    let (durations, faulty_durations, scrapes, samples, healthy_up, faulty_down) = if sc.sd {
        let d = prom.range_values(&format!(
            "scrape_duration_seconds{{job=\"vms\",vm=~\"vm-.*\"}}[{w}]"
        ))?;
        let fd = if faulty > 0 {
            prom.range_values(&format!(
                "scrape_duration_seconds{{job=\"vms\",vm!~\"vm-.*\"}}[{w}]"
            ))?
        } else {
            Vec::new()
        };
        let scrapes = d.len() / healthy.max(1);
        let samples = prom
            .scalar("sum(scrape_samples_scraped{job=\"vms\"})")?
            .unwrap_or(0.0);
        let up = prom
            .scalar(&format!(
                "count(min_over_time(up{{job=\"vms\",vm=~\"vm-.*\"}}[{w}]) == 1)"
            ))?
            .unwrap_or(0.0) as usize;
        let down = prom
            .scalar(&format!(
                "count(max_over_time(up{{job=\"vms\",vm!~\"vm-.*\"}}[{w}]) == 0)"
            ))?
            .unwrap_or(0.0) as usize;
        (d, fd, scrapes, samples, up, down)
    } else {
        let d = prom.range_values(&format!("scrape_duration_seconds{{job=\"proxy\"}}[{w}]"))?;
        let scrapes = d.len();
        let samples = prom
            .scalar("scrape_samples_scraped{job=\"proxy\"}")?
            .unwrap_or(0.0);
        let up = prom
            .scalar(&format!(
                "count(min_over_time(guest_agent_up{{vm=~\"vm-.*\"}}[{w}]) == 1)"
            ))?
            .unwrap_or(0.0) as usize;
        let down = prom
            .scalar(&format!(
                "count(max_over_time(guest_agent_up{{vm!~\"vm-.*\"}}[{w}]) == 0)"
            ))?
            .unwrap_or(0.0) as usize;
        (d, Vec::new(), scrapes, samples, up, down)
    };
    let head_series = prom.head_series()?;
    // The proxy still answers (a last check that it did not wedge).
    http_get(port, "/").map_err(|e| format!("proxy gone at the end: {e}"))?;
    eprintln!("fleet-bench: run {tag}: done, stopping");
    drop(prom);
    drop(proxy);
    drop(agents);
    Ok(Outcome {
        scenario: sc,
        real,
        standins,
        scrapes,
        durations,
        faulty_durations,
        samples,
        head_series,
        cpu,
        wall,
        rss,
        hwm,
        healthy_up: (healthy_up, healthy),
        faulty_down: (faulty_down, faulty),
        agent_rss,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_counts_round_up() {
        let f = |n| {
            Scenario {
                n,
                faults: true,
                sd: false,
            }
            .fault_counts()
        };
        assert_eq!(f(50), (3, 3, 1));
        assert_eq!(f(200), (10, 10, 2));
        assert_eq!(f(500), (25, 25, 5));
        assert_eq!(
            Scenario {
                n: 50,
                faults: false,
                sd: false
            }
            .fault_counts(),
            (0, 0, 0)
        );
    }
}
