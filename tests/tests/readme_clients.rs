//! The README's "Calling it from Python, Go or grpcurl" section works as printed.
//!
//! Each block between `<!-- clients:NAME -->` and `<!-- /clients:NAME -->` in README.md is run
//! with `bash` (`set -euo pipefail`, from the checkout) against a real agent started here:
//! unix socket in the test's scratch directory, `--listen tcp://127.0.0.1:<free port>`, and
//! `--freeze-only <scratch>` (the fixture always passes it). The only change made to a block
//! is the `make run` paths (scripts/run-dev.sh): its socket, its tcp address and its scratch
//! mountpoint become the test's own (a loop ext4 below the scratch directory); a block that
//! still names anything of `make run`'s after that is refused before it runs, so no block can
//! reach a development agent or its filesystem. PATH puts /opt/guest-agent-test/py/bin and
//! /opt/guest-agent-test/bin first (scripts/setup-clients-python.sh builds both), so
//! `pip install grpcio grpcio-tools` is satisfied offline by the pinned venv and `python3` and
//! `grpcurl` resolve there; TMPDIR is a directory of the scratch, so the blocks' `mktemp -d`
//! go away with it; GOCACHE is the Go conformance test's cache under cargo's target directory.
//!
//! The assertions are on what the blocks print: the agent's version; Quiesce freezing exactly
//! the test's filesystem (frozen_count 1); FreezeStatus, asked between Quiesce and Thaw,
//! listing it; Thaw thawing it (outcome THAWED means the kernel's FITHAW succeeded, so the
//! kernel held it frozen until then); grpcurl's `list` over unix and tcp naming
//! boxlite.v1.Guest, boxlite.v1.GuestMetrics, grpc.health.v1.Health and
//! grpc.reflection.v1alpha.ServerReflection; health SERVING. Before and after each block the
//! kernel is asked (`fsfreeze -f` gets EBUSY only on a frozen filesystem) and the agent too:
//! nothing frozen.
//!
//! grpcurl 1.8.6 over `-unix` sends the socket path as `:authority` (fullstorydev/grpcurl#442),
//! as grpc-core does; the block passes no `-authority`: the agent's unix transport accepts it.
//!
//! Every block runs in its own process group, killed whole at its deadline. Without root or
//! without a client's tool chain the tests skip, unless GUEST_AGENT_REQUIRE_ROOT or CI is
//! set (`make test`): then they fail.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use serde_json::Value;
use system_tests::client::free_tcp_port;
use system_tests::fsfreeze::is_frozen;
use system_tests::tools::{go_build_cache, missing_go_toolchain, required, which, PROXY_VARS};
use system_tests::{bins, Agent, FsType, LoopFs, Scratch};

/// What `make run` (scripts/run-dev.sh) uses, as the README prints it.
const DEV_SCRATCH: &str = "/var/tmp/guest-agent-dev";
const DEV_SOCKET: &str = "/var/tmp/guest-agent-dev/agent.sock";
const DEV_TCP: &str = "127.0.0.1:2695";
const DEV_MOUNT: &str = "/var/tmp/guest-agent-dev/mnt";

/// Where scripts/setup-clients-python.sh puts the pinned venv and grpcurl.
const VENV_BIN: &str = "/opt/guest-agent-test/py/bin";
const TOOLS_BIN: &str = "/opt/guest-agent-test/bin";
const GRPCURL_VERSION: &str = "grpcurl v1.8.6";

/// Bounds on one block: stub generation and imports on a busy 2-core machine (Python), a cold
/// Go build of grpc-go (Go), a dozen grpcurl calls.
const PYTHON_TIMEOUT: Duration = Duration::from_secs(180);
const GO_TIMEOUT: Duration = Duration::from_secs(420);
const GRPCURL_TIMEOUT: Duration = Duration::from_secs(120);
/// Bound on a tool probe (`grpcurl -version`, an import check).
const PROBE_TIMEOUT: Duration = Duration::from_secs(60);

const SETUP_HINT: &str = "run scripts/setup-clients-python.sh and scripts/setup-clients-go.sh \
                          (or make setup)";

fn readme() -> String {
    let path = bins::workspace_root().join("README.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// The shell code of the `sh` fence between `<!-- clients:NAME -->` and
/// `<!-- /clients:NAME -->` (each marker exactly once).
fn block(readme: &str, name: &str) -> anyhow::Result<String> {
    let open = format!("<!-- clients:{name} -->");
    let close = format!("<!-- /clients:{name} -->");
    anyhow::ensure!(
        readme.matches(&open).count() == 1 && readme.matches(&close).count() == 1,
        "README.md must hold {open} and {close} once each"
    );
    let start = readme.find(&open).expect("counted") + open.len();
    let end = readme.find(&close).expect("counted");
    anyhow::ensure!(start < end, "{close} comes before {open}");
    let inner = readme[start..end].trim();
    let code = inner
        .strip_prefix("```sh\n")
        .and_then(|r| r.strip_suffix("```"))
        .ok_or_else(|| anyhow::anyhow!("{open} must enclose exactly one ```sh fence: {inner:?}"))?;
    anyhow::ensure!(
        !code.contains("```"),
        "{open} must enclose exactly one fence"
    );
    Ok(code.to_string())
}

/// What this test's agent uses instead of `make run`'s.
struct Paths {
    socket: String,
    tcp: String,
    mount: String,
}

/// `code` with `make run`'s paths replaced by `p`'s; refuses code that still names anything
/// of `make run`'s afterwards.
fn substitute(code: &str, p: &Paths) -> anyhow::Result<String> {
    let out = code
        .replace(DEV_SOCKET, &p.socket)
        .replace(DEV_MOUNT, &p.mount)
        .replace(DEV_TCP, &p.tcp);
    anyhow::ensure!(
        !out.contains(DEV_SCRATCH) && !out.contains(":2695"),
        "a README block names a `make run` path the test does not replace:\n{out}"
    );
    Ok(out)
}

/// What a block printed.
struct Ran {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Runs `code` with bash from the checkout, `set -euo pipefail`, PATH led by the venv and
/// the tools directory, TMPDIR in the scratch directory; kills its whole process group at
/// `timeout`.
fn run_block(s: &Scratch, name: &str, code: &str, timeout: Duration) -> anyhow::Result<Ran> {
    let script = s.join(format!("readme-{name}.sh"));
    std::fs::write(&script, format!("set -euo pipefail\n{code}"))?;
    let tmp = s.subdir(format!("tmp-{name}"))?;
    let path = match std::env::var_os("PATH") {
        Some(p) => {
            let mut dirs = vec![PathBuf::from(VENV_BIN), PathBuf::from(TOOLS_BIN)];
            dirs.extend(std::env::split_paths(&p));
            std::env::join_paths(dirs)?
        }
        None => format!("{VENV_BIN}:{TOOLS_BIN}:/usr/sbin:/usr/bin:/sbin:/bin").into(),
    };
    let mut cmd = Command::new("bash");
    cmd.arg(&script)
        .current_dir(bins::workspace_root())
        .env("PATH", path)
        .env("TMPDIR", &tmp)
        .env("GOCACHE", go_build_cache())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    // An activated venv or Go settings of whoever runs the tests must not leak into the
    // blocks; grpc clients honour proxy variables for tcp targets, and the agent is here.
    for var in [
        "VIRTUAL_ENV",
        "PYTHONPATH",
        "PYTHONHOME",
        "GOFLAGS",
        "GOPATH",
        "GO111MODULE",
    ]
    .into_iter()
    .chain(PROXY_VARS)
    {
        cmd.env_remove(var);
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| anyhow::anyhow!("spawn bash {}: {e}", script.display()))?;
    let pgid = Pid::from_raw(i32::try_from(child.id())?);
    let mut out = child.stdout.take().expect("piped");
    let mut err = child.stderr.take().expect("piped");
    let out_t = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = out.read_to_end(&mut b);
        String::from_utf8_lossy(&b).into_owned()
    });
    let err_t = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = err.read_to_end(&mut b);
        String::from_utf8_lossy(&b).into_owned()
    });
    // Wait for bash without reaping it (WNOWAIT): while it is unreaped its pid, the group
    // id, cannot be reused, so the killpg below only ever reaches what this block started.
    let deadline = Instant::now() + timeout;
    let finished = loop {
        let st = waitid(
            Id::Pid(pgid),
            WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT,
        )?;
        if st != WaitStatus::StillAlive {
            break true;
        }
        if Instant::now() >= deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // At the deadline the whole block goes; after a normal exit, anything it left running.
    let _ = killpg(pgid, Signal::SIGKILL);
    let status = child.wait()?;
    let (stdout, stderr) = (
        out_t.join().unwrap_or_default(),
        err_t.join().unwrap_or_default(),
    );
    anyhow::ensure!(
        finished,
        "the README's {name} block did not finish within {timeout:?}; killed.\n\
         --- stdout ---\n{stdout}--- stderr ---\n{stderr}"
    );
    let ran = Ran {
        status,
        stdout,
        stderr,
    };
    eprintln!(
        "README {name} block: {}\n--- stdout ---\n{}--- stderr ---\n{}",
        ran.status, ran.stdout, ran.stderr
    );
    anyhow::ensure!(
        ran.status.success(),
        "the README's {name} block failed ({}):\n--- script ---\n{code}\n--- stdout ---\n{}--- stderr ---\n{}",
        ran.status,
        ran.stdout,
        ran.stderr
    );
    Ok(ran)
}

// -- Prerequisites -------------------------------------------------------------------------------

/// Which client a test drives, for its prerequisites.
#[derive(Clone, Copy, Debug)]
enum Client {
    Python,
    Go,
    Grpcurl,
}

/// Whether this test can run here; panics where it is required and cannot.
fn can_run(client: Client) -> bool {
    let skip = |why: String| {
        assert!(
            !required(),
            "README {client:?} block: {why} (GUEST_AGENT_REQUIRE_ROOT or CI is set, so this \
             fails instead of skipping)"
        );
        eprintln!("README {client:?} block: skipped: {why}");
        false
    };
    if !nix::unistd::Uid::effective().is_root() {
        return skip("needs root (loop devices, mount, FIFREEZE)".into());
    }
    let missing = missing_tools(client);
    if !missing.is_empty() {
        return skip(format!("missing {}: {SETUP_HINT}", missing.join(", ")));
    }
    true
}

/// Runs a probe command, bounded; its stdout and stderr together when it exits 0.
fn probe(program: &Path, args: &[&str]) -> Option<String> {
    let out =
        system_tests::cmd::run_with_timeout(&program.display().to_string(), args, PROBE_TIMEOUT)
            .ok()?;
    out.ok().then(|| format!("{}{}", out.stdout, out.stderr))
}

fn missing_tools(client: Client) -> Vec<String> {
    let mut missing = Vec::new();
    if which("fsfreeze").is_none() {
        missing.push("fsfreeze".to_string());
    }
    match client {
        Client::Python => {
            let py = Path::new(VENV_BIN).join("python3");
            let pip = Path::new(VENV_BIN).join("pip");
            if !pip.is_file() {
                missing.push(pip.display().to_string());
            }
            if probe(&py, &["-c", "import grpc, grpc_tools.protoc"]).is_none() {
                missing.push(format!("{} with grpcio and grpcio-tools", py.display()));
            }
        }
        Client::Go => missing.extend(missing_go_toolchain()),
        Client::Grpcurl => {
            let g = Path::new(TOOLS_BIN).join("grpcurl");
            match probe(&g, &["-version"]) {
                Some(v) if v.trim() == GRPCURL_VERSION => {}
                Some(v) => missing.push(format!(
                    "{} printing {GRPCURL_VERSION:?} (it prints {:?})",
                    g.display(),
                    v.trim()
                )),
                None => missing.push(g.display().to_string()),
            }
        }
    }
    missing
}

// -- The agent -----------------------------------------------------------------------------------

/// An agent on a unix socket and 127.0.0.1:<free port>, a loop ext4 below the scratch
/// directory for the blocks to freeze, and the paths that replace `make run`'s.
struct Setup {
    // Field order is drop order: the agent (it thaws what it froze) before the filesystem,
    // the filesystem before the scratch directory.
    agent: Agent,
    fs: LoopFs,
    s: Scratch,
    paths: Paths,
}

async fn setup() -> anyhow::Result<Setup> {
    let s = Scratch::new()?;
    let fs = LoopFs::new(&s, "dev", FsType::Ext4, 32)?;
    let tcp = format!("127.0.0.1:{}", free_tcp_port()?);
    let agent = Agent::builder(&s)
        .args(["--listen".to_string(), format!("tcp://{tcp}")])
        .start()
        .await?;
    let paths = Paths {
        socket: agent.socket().display().to_string(),
        tcp,
        mount: fs.mp(),
    };
    Ok(Setup {
        agent,
        fs,
        s,
        paths,
    })
}

impl Setup {
    /// Neither the kernel nor the agent has the test's filesystem frozen.
    async fn assert_nothing_frozen(&self, when: &str) -> anyhow::Result<()> {
        assert!(
            !is_frozen(self.fs.mountpoint())?,
            "{when}: the kernel has {} frozen",
            self.fs.mp()
        );
        let st = self.agent.rpc().await?.status().await??;
        assert!(
            !st.frozen && st.filesystems.is_empty(),
            "{when}: the agent reports {st:?}"
        );
        Ok(())
    }

    /// Runs README block `name` against this agent; checks nothing is frozen before and after.
    async fn run(&self, name: &str, timeout: Duration) -> anyhow::Result<Ran> {
        let code = substitute(&block(&readme(), name)?, &self.paths)?;
        self.assert_nothing_frozen(&format!("before the {name} block"))
            .await?;
        let s = self.s.clone();
        let owned = (name.to_string(), code);
        let ran = tokio::task::spawn_blocking(move || run_block(&s, &owned.0, &owned.1, timeout))
            .await??;
        self.assert_nothing_frozen(&format!("after the {name} block"))
            .await?;
        Ok(ran)
    }
}

fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

// -- The blocks ----------------------------------------------------------------------------------

#[test]
fn readme_blocks_name_the_paths_make_run_uses() {
    // scripts/run-dev.sh's defaults are what the README prints.
    let run_dev =
        std::fs::read_to_string(bins::workspace_root().join("scripts/run-dev.sh")).unwrap();
    for line in [
        format!("scratch=\"${{GUEST_AGENT_SCRATCH:-{DEV_SCRATCH}}}\""),
        "sock=\"$scratch/agent.sock\"".to_string(),
        format!("tcp=\"${{GUEST_AGENT_TCP:-{DEV_TCP}}}\""),
        "mnt=\"$scratch/mnt\"".to_string(),
    ] {
        assert!(
            run_dev.lines().any(|l| l.trim() == line),
            "scripts/run-dev.sh no longer says `{line}`: update the README's client section \
             and this test"
        );
    }
    assert_eq!(DEV_SOCKET, format!("{DEV_SCRATCH}/agent.sock"));
    assert_eq!(DEV_MOUNT, format!("{DEV_SCRATCH}/mnt"));

    let readme = readme();
    let fake = Paths {
        socket: "/S/agent.sock".into(),
        tcp: "127.0.0.1:1".into(),
        mount: "/S/mnt".into(),
    };
    for (name, must_name) in [
        ("python", vec![DEV_SOCKET, DEV_MOUNT]),
        ("go", vec![DEV_SOCKET, DEV_MOUNT]),
        ("grpcurl", vec![DEV_SOCKET, DEV_MOUNT, DEV_TCP]),
    ] {
        let code = block(&readme, name).unwrap();
        for p in must_name {
            assert!(code.contains(p), "the {name} block does not use {p}");
        }
        substitute(&code, &fake).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_python_block() -> anyhow::Result<()> {
    if !can_run(Client::Python) {
        return Ok(());
    }
    let t = setup().await?;
    let ran = t.run("python", PYTHON_TIMEOUT).await?;
    let mp = &t.paths.mount;

    // pip's lines, then the client's five.
    let lines: Vec<&str> = ran.stdout.lines().collect();
    let (pip, printed) = lines.split_at(lines.len().saturating_sub(5));
    assert_eq!(
        printed,
        [
            format!("ping {}", version()),
            format!("quiesce 1 ['{mp}']"),
            format!("status True ['{mp}']"),
            "thaw 1".to_string(),
            "status False".to_string(),
        ],
        "what the Python block printed:\n{}",
        ran.stdout
    );
    // pip found both packages in the pinned venv: nothing was fetched or installed.
    for pkg in ["grpcio", "grpcio-tools"] {
        assert!(
            pip.iter()
                .any(|l| l.starts_with(&format!("Requirement already satisfied: {pkg} "))),
            "pip install should find {pkg} in the venv:\n{}",
            ran.stdout
        );
    }
    assert!(
        !pip.iter().any(|l| l.starts_with("Collecting")
            || l.starts_with("Downloading")
            || l.starts_with("Successfully installed")),
        "pip install fetched or installed something:\n{}",
        ran.stdout
    );
    // The stubs went to a temporary directory, not into the checkout.
    let root = bins::workspace_root();
    assert!(
        !root.join("boxlite").exists(),
        "stubs generated into the checkout"
    );
    assert!(
        !root.join("proto/boxlite/v1/guest_pb2.py").exists(),
        "stubs generated into proto/"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_go_block() -> anyhow::Result<()> {
    if !can_run(Client::Go) {
        return Ok(());
    }
    let t = setup().await?;
    let ran = t.run("go", GO_TIMEOUT).await?;
    let mp = &t.paths.mount;

    let lines: Vec<Value> = ran
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let cmds: Vec<&str> = lines.iter().filter_map(|v| v["cmd"].as_str()).collect();
    assert_eq!(cmds, ["ping", "quiesce", "status", "thaw"], "{lines:?}");
    for v in &lines {
        assert_eq!(v["ok"], true, "{v}");
        assert_eq!(v["target"], format!("unix://{}", t.paths.socket), "{v}");
    }
    let r = |i: usize| &lines[i]["response"];
    assert_eq!(r(0)["version"], version(), "{}", lines[0]);

    assert_eq!(r(1)["frozen_count"], 1, "{}", lines[1]);
    let fss = r(1)["filesystems"].as_array().cloned().unwrap_or_default();
    assert_eq!(fss.len(), 1, "{}", lines[1]);
    assert_eq!(fss[0]["mountpoint"], mp.as_str(), "{}", lines[1]);
    assert_eq!(fss[0]["outcome"], "FS_OUTCOME_FROZEN", "{}", lines[1]);
    assert_eq!(fss[0]["dev_id"], t.fs.dev_id()?, "{}", lines[1]);

    assert_eq!(r(2)["frozen"], true, "{}", lines[2]);
    let frozen: Vec<&str> = r(2)["filesystems"]
        .as_array()
        .map(|a| a.iter().filter_map(|f| f["mountpoint"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(frozen, [mp.as_str()], "{}", lines[2]);

    assert_eq!(r(3)["thawed_count"], 1, "{}", lines[3]);
    assert_eq!(
        r(3)["filesystems"][0]["mountpoint"],
        mp.as_str(),
        "{}",
        lines[3]
    );
    assert_eq!(
        r(3)["filesystems"][0]["outcome"],
        "FS_OUTCOME_THAWED",
        "{}",
        lines[3]
    );
    Ok(())
}

/// One piece of grpcurl's output: a pretty-printed JSON response (from a line `{` to a line
/// `}`), or a line of text (`list`, `describe`).
#[derive(Debug)]
enum Piece {
    Json(Value),
    Text(String),
}

fn pieces(stdout: &str) -> Vec<Piece> {
    let mut out = Vec::new();
    let mut json: Option<String> = None;
    for line in stdout.lines() {
        match json.as_mut() {
            Some(buf) => {
                buf.push_str(line);
                buf.push('\n');
                if line == "}" {
                    let text = json.take().expect("some");
                    let v = serde_json::from_str(&text)
                        .unwrap_or_else(|e| panic!("grpcurl printed bad JSON ({e}):\n{text}"));
                    out.push(Piece::Json(v));
                }
            }
            None if line == "{" => json = Some("{\n".to_string()),
            None => out.push(Piece::Text(line.to_string())),
        }
    }
    assert!(
        json.is_none(),
        "unterminated JSON in grpcurl's output:\n{stdout}"
    );
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_grpcurl_block() -> anyhow::Result<()> {
    if !can_run(Client::Grpcurl) {
        return Ok(());
    }
    let t = setup().await?;
    let ran = t.run("grpcurl", GRPCURL_TIMEOUT).await?;
    let mp = &t.paths.mount;
    let pieces = pieces(&ran.stdout);

    // `list` over unix, then over tcp: the same four services, in this order.
    let services = [
        "boxlite.v1.Guest",
        "boxlite.v1.GuestMetrics",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    ];
    let text: Vec<&str> = pieces
        .iter()
        .filter_map(|p| match p {
            Piece::Text(t) => Some(t.as_str()),
            Piece::Json(_) => None,
        })
        .collect();
    assert_eq!(&text[..4], services, "`list` over unix:\n{}", ran.stdout);
    // `describe boxlite.v1.Guest` follows, with every RPC.
    assert_eq!(text[4], "boxlite.v1.Guest is a service:", "{}", ran.stdout);
    for rpc in [
        "FreezeStatus",
        "Init",
        "Ping",
        "Quiesce",
        "Shutdown",
        "Thaw",
    ] {
        assert!(
            text.iter()
                .any(|l| l.trim_start().starts_with(&format!("rpc {rpc} ("))),
            "describe shows {rpc}:\n{}",
            ran.stdout
        );
    }
    assert_eq!(
        &text[text.len() - 4..],
        services,
        "`list` over tcp:\n{}",
        ran.stdout
    );

    let json: Vec<&Value> = pieces
        .iter()
        .filter_map(|p| match p {
            Piece::Json(v) => Some(v),
            Piece::Text(_) => None,
        })
        .collect();
    // Ping, Quiesce, FreezeStatus (unix); Thaw, Health/Check, FreezeStatus (tcp).
    let [ping, quiesce, frozen, thaw, health, after] = json[..] else {
        panic!("six JSON responses expected:\n{}", ran.stdout);
    };
    assert_eq!(ping["version"], version(), "Ping: {ping}");

    // grpcurl prints lowerCamelCase names and leaves out default values.
    assert_eq!(quiesce["frozenCount"], 1, "Quiesce: {quiesce}");
    let fss = quiesce["filesystems"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(fss.len(), 1, "Quiesce: {quiesce}");
    assert_eq!(fss[0]["mountpoint"], mp.as_str(), "Quiesce: {quiesce}");
    assert_eq!(fss[0]["outcome"], "FS_OUTCOME_FROZEN", "Quiesce: {quiesce}");
    assert_eq!(fss[0]["devId"], t.fs.dev_id()?, "Quiesce: {quiesce}");

    assert_eq!(
        frozen["frozen"], true,
        "FreezeStatus while frozen: {frozen}"
    );
    assert_eq!(
        frozen["filesystems"][0]["mountpoint"],
        mp.as_str(),
        "FreezeStatus while frozen: {frozen}"
    );
    assert_eq!(
        frozen["filesystems"].as_array().map(Vec::len),
        Some(1),
        "FreezeStatus while frozen: {frozen}"
    );

    assert_eq!(thaw["thawedCount"], 1, "Thaw over tcp: {thaw}");
    assert_eq!(thaw["filesystems"][0]["mountpoint"], mp.as_str(), "{thaw}");
    assert_eq!(
        thaw["filesystems"][0]["outcome"], "FS_OUTCOME_THAWED",
        "{thaw}"
    );

    assert_eq!(
        *health,
        serde_json::json!({"status": "SERVING"}),
        "Health/Check"
    );

    assert!(
        after.get("frozen").is_none() && after.get("filesystems").is_none(),
        "FreezeStatus after Thaw (over tcp) shows nothing frozen: {after}"
    );
    Ok(())
}

#[test]
fn a_block_past_its_deadline_is_killed_with_everything_it_started() {
    let s = Scratch::new().unwrap();
    let pidfile = s.join("bg.pid");
    let code = format!("sleep 300 & echo $! > {}\nsleep 300\n", pidfile.display());
    let start = Instant::now();
    let e = match run_block(&s, "hang", &code, Duration::from_secs(1)) {
        Ok(_) => panic!("a block sleeping 300 s finished within 1 s"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("did not finish within 1s; killed"), "{e}");
    assert!(start.elapsed() < Duration::from_secs(30));
    let pid = std::fs::read_to_string(&pidfile).unwrap();
    let proc = PathBuf::from(format!("/proc/{}", pid.trim()));
    let gone = Instant::now() + Duration::from_secs(10);
    // Killed, then reaped by init (or at least a zombie, no longer running).
    while proc.exists()
        && !std::fs::read_to_string(proc.join("stat")).is_ok_and(|st| st.contains(") Z "))
    {
        assert!(
            Instant::now() < gone,
            "the block's background sleep {} survived the kill",
            pid.trim()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
