//! Fixtures for the Init integration tests (run as root): scratch directories with loop
//! devices, network namespaces, and running code inside a namespace. Every fixture
//! cleans up in `Drop`, so a failing assertion leaves nothing behind.
//!
//! Shelling out to `ip`, `losetup` and `mkfs.ext4` is fine here: it is the independent
//! check of what the code under test did.

#![allow(dead_code)] // Each test binary uses a different subset.

use std::fs::File;
use std::future::Future;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use nix::mount::{umount2, MntFlags};
use nix::sched::{setns, CloneFlags};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A unique suffix per fixture in this process.
fn unique() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs a command and returns its stdout; panics with its stderr on failure.
pub fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Skips (returns true) unless root ([`test_support::skip_unless_root`]).
pub fn not_root() -> bool {
    test_support::skip_unless_root("mount, loop devices, network namespaces")
}

/// One mount from /proc/self/mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// Mount point.
    pub mount_point: PathBuf,
    /// Filesystem type.
    pub fstype: String,
    /// Mount source (device).
    pub source: String,
    /// Per-mount options (rw/ro, ...).
    pub options: String,
}

/// All mounts of this process's mount namespace, in mount order.
pub fn mounts() -> Vec<MountEntry> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let sep = fields.iter().position(|f| *f == "-")?;
            Some(MountEntry {
                mount_point: PathBuf::from(unescape(fields[4])),
                options: fields[5].to_string(),
                fstype: fields[sep + 1].to_string(),
                source: unescape(fields[sep + 2]),
            })
        })
        .collect()
}

fn unescape(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// The mounts at exactly `path`.
pub fn mounts_at(path: &Path) -> Vec<MountEntry> {
    mounts()
        .into_iter()
        .filter(|m| m.mount_point == path)
        .collect()
}

/// A directory under /var/tmp with loop devices; on drop unmounts everything below
/// it (newest first), detaches its loop devices, then removes it.
pub struct Scratch {
    /// The directory.
    pub dir: PathBuf,
    loops: Vec<String>,
}

impl Scratch {
    /// Creates a fresh scratch directory.
    pub fn new(tag: &str) -> Self {
        let dir = PathBuf::from(format!("/var/tmp/gainit-{tag}-{}", unique()));
        std::fs::create_dir(&dir).unwrap();
        Self {
            dir,
            loops: Vec::new(),
        }
    }

    /// A path inside the scratch directory (not created).
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    /// Creates a sparse image of `mib` MiB and attaches it to a loop device.
    /// Returns (image path, loop device).
    pub fn loop_device(&mut self, name: &str, mib: u64) -> (PathBuf, String) {
        let image = self.dir.join(name);
        File::create(&image).unwrap().set_len(mib << 20).unwrap();
        let dev = run("losetup", &["-f", "--show", image.to_str().unwrap()])
            .trim()
            .to_string();
        assert!(
            std::fs::metadata(&dev)
                .unwrap()
                .file_type()
                .is_block_device(),
            "{dev}"
        );
        self.loops.push(dev.clone());
        (image, dev)
    }

    /// Grows an image and tells its loop device to pick up the new size.
    pub fn grow(&self, image: &Path, dev: &str, mib: u64) {
        File::options()
            .write(true)
            .open(image)
            .unwrap()
            .set_len(mib << 20)
            .unwrap();
        run("losetup", &["-c", dev]);
    }

    /// Unmounts every mount at or below the scratch directory, newest first.
    pub fn unmount_all(&self) {
        let mut below: Vec<MountEntry> = mounts()
            .into_iter()
            .filter(|m| m.mount_point.starts_with(&self.dir))
            .collect();
        below.reverse();
        for m in below {
            if umount2(&m.mount_point, MntFlags::empty()).is_err() {
                let _ = umount2(&m.mount_point, MntFlags::MNT_DETACH);
            }
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        self.unmount_all();
        for dev in self.loops.iter().rev() {
            let _ = Command::new("losetup").args(["-d", dev]).status();
        }
        let still_mounted = mounts()
            .iter()
            .any(|m| m.mount_point.starts_with(&self.dir));
        if still_mounted {
            eprintln!("not removing {}: still mounted", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A network namespace created for one test; deleted on drop.
pub struct NetNs {
    /// Its name (under /run/netns).
    pub name: String,
}

impl NetNs {
    /// Creates `gatest-<pid>-<n>`.
    pub fn new() -> Self {
        let name = format!("gatest-{}", unique());
        run("ip", &["netns", "add", &name]);
        Self { name }
    }

    /// Runs `ip -n <ns> args...` and returns stdout.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// Runs `ip -n <ns> -j args...` and parses the JSON.
    pub fn ip_json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["-j"];
        all.extend_from_slice(args);
        let out = self.ip(&all);
        if out.trim().is_empty() {
            return serde_json::Value::Array(vec![]);
        }
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("ip -j {args:?}: {e}: {out}"))
    }

    /// Creates a veth pair `name` <-> `peer` in the namespace and brings the peer up
    /// (so `name` gets a carrier once it is up). `name` stays down.
    pub fn add_veth(&self, name: &str, peer: &str) {
        self.ip(&["link", "add", name, "type", "veth", "peer", "name", peer]);
        self.ip(&["link", "set", peer, "up"]);
    }

    /// Puts `addr/128` on a second interface `eth1` (up, no DAD), so that a default
    /// route via `addr` on another link is refused by the kernel ("gateway can not
    /// be a local address").
    pub fn make_local_v6(&self, addr: &str) {
        self.add_veth("eth1", "peer1");
        self.ip(&["link", "set", "eth1", "up"]);
        self.ip(&[
            "addr",
            "add",
            &format!("{addr}/128"),
            "dev",
            "eth1",
            "nodad",
        ]);
    }

    /// Runs `sysctl -w key=value` inside the namespace.
    pub fn sysctl(&self, key: &str, value: &str) {
        run(
            "ip",
            &[
                "netns",
                "exec",
                &self.name,
                "sysctl",
                "-qw",
                &format!("{key}={value}"),
            ],
        );
    }

    /// Whether the link has IFF_UP.
    pub fn is_up(&self, link: &str) -> bool {
        let v = self.ip_json(&["link", "show", "dev", link]);
        v[0]["flags"].as_array().unwrap().iter().any(|f| f == "UP")
    }

    /// The `local/prefixlen` addresses of a link (global scope, any family).
    pub fn addresses(&self, link: &str) -> Vec<String> {
        let v = self.ip_json(&["addr", "show", "dev", link, "scope", "global"]);
        // No entry at all when the filter leaves nothing.
        let Some(info) = v[0]["addr_info"].as_array() else {
            return Vec::new();
        };
        info.iter()
            // iproute2 emits `{}` for addresses its scope filter dropped.
            .filter_map(|a| Some(format!("{}/{}", a["local"].as_str()?, a["prefixlen"])))
            .collect()
    }

    /// The default routes of a family ("-4" or "-6") as (gateway, dev) pairs.
    pub fn default_routes(&self, family: &str) -> Vec<(String, String)> {
        let v = self.ip_json(&[family, "route", "show", "default"]);
        v.as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["gateway"].as_str().unwrap_or("").to_string(),
                    r["dev"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    }

    /// Runs `f` to completion on a current-thread runtime in a thread that has joined
    /// this namespace; the test's own thread (and the host's network) are untouched.
    pub fn run_inside<F, Fut, T>(&self, f: F) -> T
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T>,
        T: Send + 'static,
    {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let ns = File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            setns(&ns, CloneFlags::CLONE_NEWNET).expect("setns");
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(f())
        })
        .join()
        .expect("namespace thread panicked")
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}
