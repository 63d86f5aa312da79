//! Conformance: a Go client nobody here wrote the transport of drives the real agent.
//!
//! The client (`tests/clients/go/guestclient`) uses Debian 12's own Go gRPC
//! (golang-google-grpc-dev 1.33) with stubs that protoc-gen-go / protoc-gen-go-grpc generate
//! from `proto/boxlite/v1/guest.proto` here, at test time, into the test's scratch directory
//! (never committed). It is built offline in GOPATH mode against `/usr/share/gocode`
//! (`scripts/setup-clients-go.sh` installs the packages). Each test builds it, starts an agent
//! and asserts on the JSON lines the client prints: Ping's version, Quiesce restricted by
//! `mountpoints` (unix socket) or by `--freeze-only` (tcp 127.0.0.1) freezing exactly the
//! test's loop filesystem (the kernel and a blocked writer confirm it), FreezeStatus listing
//! it, Thaw releasing it, GetMetrics, grpc.health.v1 Check, and the status codes and messages
//! the Go client sees for a Quiesce of another set while frozen (FAILED_PRECONDITION) and of
//! a path that is not a mountpoint (INVALID_ARGUMENT).
//!
//! Target forms: grpc-go 1.33 has no `unix` resolver; `unix:///path` goes to the passthrough
//! resolver, whose default dialer recognises the `unix:` prefix and dials the socket, and
//! `:authority` is "localhost". No `WithContextDialer`, no authority override.
//!
//! Without root, or without the Go tool chain, the tests skip; under `make test`
//! (`GUEST_AGENT_REQUIRE_ROOT=1`) either fails instead.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use system_tests::client::free_tcp_port;
use system_tests::cmd::{describe, run_with_timeout, Output};
use system_tests::tools::{go_build_cache, missing_go_toolchain, DEBIAN_GOCODE};
use system_tests::{bins, fsfreeze, Agent, Durability, FsType, LoopFs, Scratch, Writer};

/// Bound on generating the stubs plus building the client (a cold Go build cache compiles
/// grpc-go and its dependencies: about 10 s on an idle 2-core machine).
const BUILD_TIMEOUT: Duration = Duration::from_secs(300);
/// Bound on one client run; the client bounds its own connect + call at `CALL_TIMEOUT`.
const RUN_TIMEOUT: Duration = Duration::from_secs(40);
const CALL_TIMEOUT: &str = "20s";
/// How long a writer must stay blocked to count as "held by the freeze".
const BLOCK_WINDOW: Duration = Duration::from_millis(500);
/// How long a writer may take to finish once its filesystem is thawed.
const FINISH: Duration = Duration::from_secs(20);

/// Go import path the stubs are generated under (the proto has no `go_package`).
const PB_IMPORT: &str = "gaclient/boxlitepb";

const SETUP_HINT: &str = "run scripts/setup-clients-go.sh (or make setup)";

/// Whether this test can run: root (loop mounts, FIFREEZE) and the Go tool chain. Returns
/// false (skip) when either is missing, except under `GUEST_AGENT_REQUIRE_ROOT=1`, where it
/// panics: CI must not pass by skipping.
fn can_run() -> bool {
    let strict = system_tests::tools::required();
    if test_support::skip_unless_root("loop devices, mount, FIFREEZE") {
        return false;
    }
    let missing = missing_go_toolchain();
    if !missing.is_empty() {
        assert!(
            !strict,
            "the Go conformance client needs {}: {SETUP_HINT}; GUEST_AGENT_REQUIRE_ROOT is set",
            missing.join(", ")
        );
        eprintln!("skipping: missing {} ({SETUP_HINT})", missing.join(", "));
        return false;
    }
    true
}

/// Fails with the full command line and both output streams unless `out` succeeded.
fn check(line: &str, out: &Output) -> anyhow::Result<()> {
    anyhow::ensure!(
        out.ok(),
        "`{line}` failed ({}):\n--- stdout ---\n{}--- stderr ---\n{}",
        out.status,
        out.stdout,
        out.stderr
    );
    Ok(())
}

/// The built Go client.
struct GoClient {
    bin: PathBuf,
}

impl GoClient {
    /// Generates the stubs from the project's proto and builds the client into
    /// `<scratch>/go/`, bounded by [`BUILD_TIMEOUT`].
    fn build(s: &Scratch) -> anyhow::Result<Self> {
        let root = bins::workspace_root();
        let dir = s.subdir("go")?;
        let gopath = dir.join("gopath");
        let src = gopath.join("src");
        std::fs::create_dir_all(&src)?;
        let m = format!("Mboxlite/v1/guest.proto={PB_IMPORT};boxlitepb");
        let protoc_args: Vec<OsString> = vec![
            "-I".into(),
            root.join("proto").into(),
            format!("--go_out={}", src.display()).into(),
            format!("--go_opt={m}").into(),
            format!("--go-grpc_out={}", src.display()).into(),
            format!("--go-grpc_opt={m}").into(),
            root.join("proto/boxlite/v1/guest.proto").into(),
        ];
        let out = run_with_timeout("protoc", &protoc_args, BUILD_TIMEOUT)?;
        check(&describe("protoc", &protoc_args), &out)?;
        for f in ["guest.pb.go", "guest_grpc.pb.go"] {
            let p = src.join(PB_IMPORT).join(f);
            anyhow::ensure!(p.is_file(), "protoc did not generate {}", p.display());
        }

        // The client's sources go next to the stubs: GOPATH mode builds by import path.
        let client_src = root.join("tests/clients/go/guestclient");
        let client_dst = src.join("gaclient/guestclient");
        std::fs::create_dir_all(&client_dst)?;
        for e in std::fs::read_dir(&client_src)? {
            let p = e?.path();
            if p.extension().is_some_and(|x| x == "go") {
                std::fs::copy(&p, client_dst.join(p.file_name().expect("a file name")))?;
            }
        }

        // GOPATH mode, offline: Debian's sources and the generated package, nothing else.
        // `env` carries the environment so the build stays bounded by run_with_timeout.
        let bin = dir.join("guestclient");
        let go_args: Vec<OsString> = vec![
            "GO111MODULE=off".into(),
            "GOFLAGS=".into(),
            "GOPROXY=off".into(),
            "GOENV=off".into(),
            format!("GOPATH={}:{DEBIAN_GOCODE}", gopath.display()).into(),
            format!("GOCACHE={}", go_build_cache().display()).into(),
            "go".into(),
            "build".into(),
            "-o".into(),
            bin.clone().into(),
            "gaclient/guestclient".into(),
        ];
        let out = run_with_timeout("env", &go_args, BUILD_TIMEOUT)?;
        check(&describe("env", &go_args), &out)?;
        anyhow::ensure!(bin.is_file(), "go build produced no {}", bin.display());
        Ok(Self { bin })
    }

    /// Runs one command against `target`; returns the JSON line it printed (also on a gRPC
    /// error, which exits 1). Echoes it on stderr, for the test log.
    fn run(&self, target: &str, cmd: &[&str]) -> anyhow::Result<Value> {
        let mut args: Vec<&str> = vec!["-timeout", CALL_TIMEOUT, target];
        args.extend_from_slice(cmd);
        let bin = self.bin.display().to_string();
        let line = describe(&bin, &args);
        let out = run_with_timeout(&bin, &args, RUN_TIMEOUT)?;
        eprintln!(
            "go client: {line}\n  -> {}",
            abbreviate(out.stdout.trim_end())
        );
        let code = out.status.code();
        anyhow::ensure!(
            matches!(code, Some(0 | 1)),
            "`{line}` exited {:?}: {}{}",
            out.status,
            out.stdout,
            out.stderr
        );
        let lines: Vec<&str> = out.stdout.lines().collect();
        anyhow::ensure!(
            lines.len() == 1,
            "`{line}`: expected one JSON line, got {lines:?} (stderr: {})",
            out.stderr
        );
        let v: Value = serde_json::from_str(lines[0])
            .map_err(|e| anyhow::anyhow!("`{line}` printed {:?}: {e}", lines[0]))?;
        anyhow::ensure!(
            v["cmd"] == cmd[0] && v["ok"] == (code == Some(0)),
            "`{line}`: result does not match the command or exit status {code:?}: {v}"
        );
        Ok(v)
    }

    /// Runs a command that must succeed; returns its response.
    fn ok(&self, target: &str, cmd: &[&str]) -> anyhow::Result<Value> {
        let v = self.run(target, cmd)?;
        anyhow::ensure!(v["ok"] == true, "{cmd:?} over {target} failed: {v}");
        Ok(v["response"].clone())
    }

    /// Runs a command that must fail with gRPC status `code` (grpc-go's name, e.g.
    /// "InvalidArgument", and number); returns the message the client saw.
    fn err(&self, target: &str, cmd: &[&str], code: &str, num: u64) -> anyhow::Result<String> {
        let v = self.run(target, cmd)?;
        anyhow::ensure!(
            v["ok"] == false && v["code"] == code && v["code_num"] == num,
            "{cmd:?} over {target}: expected {code} ({num}), got {v}"
        );
        Ok(v["message"].as_str().unwrap_or_default().to_string())
    }
}

/// `s`, cut to a length a test log stays readable with (GetMetrics returns kilobytes).
fn abbreviate(s: &str) -> String {
    const MAX: usize = 800;
    match s.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}... ({} bytes in all)", &s[..i], s.len()),
        None => s.to_string(),
    }
}

/// A protojson integer: uint32 is a JSON number, uint64 a JSON string.
fn uint(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| v.as_str()?.parse().ok())
}

/// The entry for `mp` in a FilesystemResult list.
fn entry<'a>(list: &'a Value, mp: &str) -> Option<&'a Value> {
    list.as_array()?.iter().find(|f| f["mountpoint"] == mp)
}

/// How the Quiesce under test selects the filesystem.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Selection {
    /// `QuiesceRequest.mountpoints = [fs]` (field 10); another filesystem sits beside it.
    Mountpoint,
    /// An empty request, restricted by the agent's `--freeze-only <scratch>` to the one
    /// filesystem below it.
    FreezeOnly,
}

/// The whole conversation over `target`: health, Ping, Quiesce, a blocked writer,
/// FreezeStatus, a refused Quiesce of another set, GetMetrics while frozen, Thaw, a refused
/// Quiesce of a plain directory.
async fn conversation(
    go: &GoClient,
    target: &str,
    s: &Scratch,
    fs: &LoopFs,
    other: Option<&LoopFs>,
    sel: Selection,
) -> anyhow::Result<()> {
    let mp = fs.mp();

    for service in ["", "boxlite.v1.Guest"] {
        let h = go.ok(target, &["health", service])?;
        assert_eq!(h["status"], "SERVING", "health {service:?}: {h}");
    }

    let p = go.ok(target, &["ping"])?;
    assert_eq!(
        p["version"],
        env!("CARGO_PKG_VERSION"),
        "Ping returns the agent's version: {p}"
    );

    let q = match sel {
        Selection::Mountpoint => go.ok(target, &["quiesce", &mp])?,
        Selection::FreezeOnly => go.ok(target, &["quiesce"])?,
    };
    assert_eq!(uint(&q["frozen_count"]), Some(1), "{sel:?}: {q}");
    let me = entry(&q["filesystems"], &mp).unwrap_or_else(|| panic!("{mp} not reported: {q}"));
    assert_eq!(me["outcome"], "FS_OUTCOME_FROZEN", "{q}");
    assert_eq!(me["fstype"], "ext4", "{q}");
    assert_eq!(me["device"], fs.device().display().to_string(), "{q}");
    assert_eq!(me["dev_id"], fs.dev_id()?, "{q}");
    assert!(
        uint(&q["watchdog_deadline_unix_ms"]).unwrap_or(0) > system_tests::results::now_ms(),
        "watchdog deadline in the future: {q}"
    );
    if let Some(o) = other {
        assert!(
            entry(&q["filesystems"], &o.mp()).is_none(),
            "{} was not asked for: {q}",
            o.mp()
        );
    }

    // Really frozen: the kernel refuses a second FIFREEZE, and a writer blocks.
    assert!(
        fsfreeze::is_frozen(fs.mountpoint())?,
        "the kernel must see {mp} frozen after the Go client's Quiesce"
    );
    let mut w = Writer::start(s, &fs.join("data"), 1 << 20, Durability::Fsync)?;
    w.assert_blocked(BLOCK_WINDOW).await?;

    let st = go.ok(target, &["status"])?;
    assert_eq!(st["frozen"], true, "{st}");
    let frozen: Vec<&str> = st["filesystems"]
        .as_array()
        .map(|a| a.iter().filter_map(|f| f["mountpoint"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(frozen, vec![mp.as_str()], "FreezeStatus lists it: {st}");
    assert_eq!(st["filesystems"][0]["dev_id"], fs.dev_id()?, "{st}");
    assert_eq!(
        uint(&st["watchdog_deadline_unix_ms"]),
        uint(&q["watchdog_deadline_unix_ms"]),
        "{st}"
    );

    // Another set while frozen: refused, naming what is held.
    let another: Vec<String> = match (sel, other) {
        (Selection::Mountpoint, Some(o)) => vec![o.mp()],
        (Selection::Mountpoint, None) => vec![],
        (Selection::FreezeOnly, _) => vec![mp.clone()],
    };
    let mut cmd = vec!["quiesce"];
    cmd.extend(another.iter().map(String::as_str));
    let msg = go.err(target, &cmd, "FailedPrecondition", 9)?;
    assert!(
        msg.contains("already frozen") && msg.contains(&mp),
        "the message names the held filesystem: {msg:?}"
    );
    // Ping and metrics are served while frozen.
    go.ok(target, &["ping"])?;
    let m = go.ok(target, &["metrics"])?;
    let text = m["text"].as_str().unwrap_or_default();
    assert!(
        text.lines().any(|l| l == "guest_fs_frozen_filesystems 1"),
        "GetMetrics while frozen shows one frozen filesystem: {}",
        text.lines()
            .filter(|l| l.contains("frozen_filesystems"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    if let Some(o) = other {
        // The other filesystem stayed writable.
        let mut wo = Writer::start(s, &o.join("data"), 1 << 20, Durability::Fsync)?;
        wo.finish(FINISH).await?;
    }

    let t = go.ok(target, &["thaw"])?;
    assert_eq!(uint(&t["thawed_count"]), Some(1), "{t}");
    let me = entry(&t["filesystems"], &mp).unwrap_or_else(|| panic!("{mp} not reported: {t}"));
    assert_eq!(me["outcome"], "FS_OUTCOME_THAWED", "{t}");
    w.finish(FINISH).await?;
    assert!(
        !fsfreeze::is_frozen(fs.mountpoint())?,
        "thawed after the Go client's Thaw"
    );
    let st = go.ok(target, &["status"])?;
    assert_eq!(st["frozen"], false, "{st}");
    assert_eq!(st["filesystems"], serde_json::json!([]), "{st}");
    let t = go.ok(target, &["thaw"])?;
    assert_eq!(
        uint(&t["thawed_count"]),
        Some(0),
        "nothing left to thaw: {t}"
    );

    // A path that is not a mountpoint: INVALID_ARGUMENT, nothing frozen.
    let plain = s.subdir("plain")?.display().to_string();
    let msg = go.err(target, &["quiesce", &plain], "InvalidArgument", 3)?;
    assert!(
        msg.contains(&plain),
        "the message names the bad path: {msg:?}"
    );
    let st = go.ok(target, &["status"])?;
    assert_eq!(st["frozen"], false, "a refused Quiesce froze nothing: {st}");
    assert!(!fsfreeze::is_frozen(fs.mountpoint())?);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_client_over_unix_socket() -> anyhow::Result<()> {
    if !can_run() {
        return Ok(());
    }
    let s = Scratch::new()?;
    let go = GoClient::build(&s)?;
    let a = LoopFs::new(&s, "a", FsType::Ext4, 32)?;
    let b = LoopFs::new(&s, "b", FsType::Ext4, 32)?;
    let agent = Agent::builder(&s).start().await?;
    // grpc-go's own handling of the target: no custom dialer, no authority override.
    let target = agent.uri();
    assert!(target.starts_with("unix:///"), "{target}");
    conversation(&go, &target, &s, &a, Some(&b), Selection::Mountpoint).await?;
    drop(agent);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_client_over_tcp_loopback() -> anyhow::Result<()> {
    if !can_run() {
        return Ok(());
    }
    let s = Scratch::new()?;
    let go = GoClient::build(&s)?;
    let a = LoopFs::new(&s, "a", FsType::Ext4, 32)?;
    let addr = format!("127.0.0.1:{}", free_tcp_port()?);
    let agent = Agent::builder(&s)
        .args(["--listen".to_string(), format!("tcp://{addr}")])
        .start()
        .await?;
    conversation(&go, &addr, &s, &a, None, Selection::FreezeOnly).await?;
    drop(agent);
    Ok(())
}
