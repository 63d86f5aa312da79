//! The Python client of the conformance tests: where its interpreter is, the process that
//! speaks line-delimited JSON (tests/clients/python/guest_client.py), and the TLS
//! certificates for `tls+tcp` (made with openssl).
//!
//! Every exchange with the process is bounded: each RPC carries a deadline inside Python,
//! and the Rust side waits for the answer line at most that long plus a margin, so a
//! wedged client or agent fails the test instead of hanging it.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use system_tests::cmd::run_ok;
use system_tests::tools::{required, PROXY_VARS};

/// Where `scripts/setup-clients-python.sh` builds the venv (`GUEST_AGENT_PY_VENV` moves it).
pub const DEFAULT_VENV: &str = "/opt/guest-agent-test/py";

/// Deadline of one RPC made by the Python client.
pub const RPC_DEADLINE: Duration = Duration::from_secs(20);

/// How much longer than a command's own deadline the test waits for its answer line.
const ANSWER_MARGIN: Duration = Duration::from_secs(15);

/// How long the client may take to generate its stubs, import grpc and say hello (two
/// cores, other builds and tests running).
const HELLO_TIMEOUT: Duration = Duration::from_secs(90);

/// The interpreter the tests run: `GUEST_AGENT_PYTHON`, else the venv's.
pub fn interpreter() -> PathBuf {
    if let Some(p) = std::env::var_os("GUEST_AGENT_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = std::env::var_os("GUEST_AGENT_PY_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_VENV));
    venv.join("bin/python")
}

/// The interpreter, or `None` (after saying why) when this machine cannot run the test
/// and nothing requires it to. Panics where the test is required.
pub fn prerequisites(test: &str) -> Option<PathBuf> {
    let skip = |why: String| -> Option<PathBuf> {
        assert!(
            !required(),
            "{test}: {why} (GUEST_AGENT_REQUIRE_ROOT or CI is set, so this fails instead of skipping)"
        );
        eprintln!("{test}: skipped: {why}");
        None
    };
    if !nix::unistd::Uid::effective().is_root() {
        return skip("needs root (loop devices, mount, FIFREEZE)".into());
    }
    let py = interpreter();
    if !py.exists() {
        return skip(format!(
            "no Python client interpreter at {}: run scripts/setup-clients-python.sh \
             (or set GUEST_AGENT_PYTHON / GUEST_AGENT_PY_VENV)",
            py.display()
        ));
    }
    Some(py)
}

fn workspace_path(rel: &str) -> PathBuf {
    system_tests::bins::workspace_root().join(rel)
}

/// What the Python client connects to, and how.
#[derive(Debug, Clone)]
pub enum Target {
    /// `grpc.insecure_channel("unix:///abs/path")`, default options.
    Unix(PathBuf),
    /// `grpc.insecure_channel("127.0.0.1:PORT")`.
    Tcp(String),
    /// `grpc.secure_channel(ADDR, ssl_channel_credentials(ca, key, chain))`.
    Tls {
        /// `host:port`.
        addr: String,
        /// CA that signed the agent's certificate.
        ca: PathBuf,
        /// Client certificate and key, if the client presents one.
        client: Option<(PathBuf, PathBuf)>,
    },
}

impl Target {
    fn args(&self) -> Vec<String> {
        match self {
            Target::Unix(p) => vec!["--target".into(), format!("unix://{}", p.display())],
            Target::Tcp(addr) => vec!["--target".into(), addr.clone()],
            Target::Tls { addr, ca, client } => {
                let mut v = vec![
                    "--target".into(),
                    addr.clone(),
                    "--tls-ca".into(),
                    ca.display().to_string(),
                ];
                if let Some((cert, key)) = client {
                    v.extend([
                        "--tls-cert".into(),
                        cert.display().to_string(),
                        "--tls-key".into(),
                        key.display().to_string(),
                    ]);
                }
                v
            }
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Unix(p) => write!(f, "unix://{}", p.display()),
            Target::Tcp(a) => write!(f, "tcp {a}"),
            Target::Tls { addr, client, .. } => write!(
                f,
                "tls {addr} ({})",
                if client.is_some() {
                    "with a client certificate"
                } else {
                    "without a client certificate"
                }
            ),
        }
    }
}

/// What one Python call produced.
#[derive(Debug, Clone)]
pub enum Reply {
    /// The RPC succeeded: the response message (protobuf JSON mapping, proto field names,
    /// default values included) or, for health, `{"status": NAME}`.
    Ok(Value),
    /// The RPC failed with this status, as grpcio reports it.
    Failed {
        /// `grpc.StatusCode` name, e.g. `FAILED_PRECONDITION`.
        code: String,
        /// `RpcError.details()`.
        details: String,
    },
}

impl Reply {
    fn from_json(v: Value) -> Self {
        if v["ok"] == true {
            let body = v.get("response").cloned().unwrap_or(v);
            Reply::Ok(body)
        } else {
            Reply::Failed {
                code: v["code"].as_str().unwrap_or("<none>").to_string(),
                details: v["details"].as_str().unwrap_or_default().to_string(),
            }
        }
    }

    /// The response; panics naming `step` and the status when the RPC failed.
    #[track_caller]
    pub fn ok(self, step: &str) -> Value {
        match self {
            Reply::Ok(v) => v,
            Reply::Failed { code, details } => {
                panic!("{step}: the Python client got {code}: {details:?}")
            }
        }
    }

    /// The status code and message; panics naming `step` when the RPC succeeded.
    #[track_caller]
    pub fn failed(self, step: &str) -> (String, String) {
        match self {
            Reply::Failed { code, details } => (code, details),
            Reply::Ok(v) => panic!("{step}: expected an error status, the Python client got {v}"),
        }
    }
}

/// A running `guest_client.py` with one grpc channel to `target`.
pub struct PyClient {
    label: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    stderr: Arc<Mutex<String>>,
    /// Its first line: interpreter, package versions, where the stubs were generated.
    pub hello: Value,
}

impl PyClient {
    /// Starts the client; it generates the stubs from `proto/boxlite/v1/guest.proto` into
    /// `gen_dir` with grpc_tools.protoc and opens its channel.
    pub fn start(python: &Path, gen_dir: &Path, target: &Target) -> anyhow::Result<Self> {
        let script = workspace_path("tests/clients/python/guest_client.py");
        let mut cmd = Command::new(python);
        cmd.arg(&script)
            .arg("--proto-root")
            .arg(workspace_path("proto"))
            .arg("--gen-dir")
            .arg(gen_dir)
            .args(target.args())
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // grpc-core honours proxy variables for tcp targets; the agent is on this machine.
        for var in PROXY_VARS {
            cmd.env_remove(var);
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| anyhow::anyhow!("spawn {} {}: {e}", python.display(), script.display()))?;
        let stdin = child.stdin.take();
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().expect("piped");
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err = child.stderr.take().expect("piped");
        let sink = Arc::clone(&stderr);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let mut s = sink.lock().unwrap_or_else(|p| p.into_inner());
                s.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let mut client = Self {
            label: target.to_string(),
            child,
            stdin,
            lines,
            stderr,
            hello: Value::Null,
        };
        let hello = client.read_line(HELLO_TIMEOUT, "hello (stub generation, channel)")?;
        if let Some(fatal) = hello.get("fatal") {
            anyhow::bail!(
                "the Python client over {} could not start:\n{}\nstderr:\n{}",
                client.label,
                fatal.as_str().unwrap_or_default(),
                client.stderr()
            );
        }
        client.hello = hello["hello"].clone();
        Ok(client)
    }

    /// What the process wrote to stderr so far (grpc-core's own log lines included).
    pub fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn read_line(&mut self, wait: Duration, what: &str) -> anyhow::Result<Value> {
        let got = tokio::task::block_in_place(|| self.lines.recv_timeout(wait));
        match got {
            Ok(line) => serde_json::from_str(&line).map_err(|e| {
                anyhow::anyhow!(
                    "the Python client over {} answered {what} with a line that is not JSON ({e}): {line}",
                    self.label
                )
            }),
            Err(RecvTimeoutError::Timeout) => anyhow::bail!(
                "the Python client over {} did not answer {what} within {wait:?}; stderr:\n{}",
                self.label,
                self.stderr()
            ),
            Err(RecvTimeoutError::Disconnected) => {
                let status = self.child.try_wait().ok().flatten();
                anyhow::bail!(
                    "the Python client over {} exited ({status:?}) instead of answering {what}; stderr:\n{}",
                    self.label,
                    self.stderr()
                )
            }
        }
    }

    /// Sends one command and waits for its answer (its own deadline plus a margin).
    #[track_caller]
    fn exchange(&mut self, cmd: Value, deadline: Duration) -> Value {
        let what = cmd.to_string();
        let line = format!("{what}\n");
        let sent = self
            .stdin
            .as_mut()
            .map(|s| s.write_all(line.as_bytes()).and_then(|()| s.flush()));
        if !matches!(sent, Some(Ok(()))) {
            panic!(
                "cannot send {what} to the Python client over {} ({sent:?}); stderr:\n{}",
                self.label,
                self.stderr()
            );
        }
        let v = self
            .read_line(deadline + ANSWER_MARGIN, &what)
            .unwrap_or_else(|e| panic!("{e}"));
        if v["ok"] == false && v["code"].is_null() && v.get("details").is_some() {
            panic!(
                "the Python client over {} failed on {what} by itself: {}",
                self.label,
                v["details"].as_str().unwrap_or_default()
            );
        }
        v
    }

    /// `service`/`method` through the generated stub, e.g. `("boxlite.v1.Guest", "Ping")`;
    /// `request` in the protobuf JSON mapping.
    #[track_caller]
    pub fn call(&mut self, service: &str, method: &str, request: Value) -> Reply {
        let v = self.exchange(
            json!({"op": "call", "service": service, "method": method, "request": request,
                   "timeout": RPC_DEADLINE.as_secs_f64()}),
            RPC_DEADLINE,
        );
        Reply::from_json(v)
    }

    /// A `boxlite.v1.Guest` method.
    #[track_caller]
    pub fn guest(&mut self, method: &str, request: Value) -> Reply {
        self.call("boxlite.v1.Guest", method, request)
    }

    /// `grpc.health.v1.Health/Check` through grpcio-health-checking's stub.
    #[track_caller]
    pub fn health_check(&mut self, service: &str) -> Reply {
        let v = self.exchange(
            json!({"op": "health_check", "service": service,
                   "timeout": RPC_DEADLINE.as_secs_f64()}),
            RPC_DEADLINE,
        );
        Reply::from_json(v)
    }

    /// Starts `Health/Watch` in the background; the whole stream is bounded by `deadline`.
    #[track_caller]
    pub fn watch_start(&mut self, service: &str, deadline: Duration) {
        let v = self.exchange(
            json!({"op": "watch_start", "service": service, "timeout": deadline.as_secs_f64()}),
            RPC_DEADLINE,
        );
        assert_eq!(v["ok"], true, "Watch did not start: {v}");
    }

    /// The next Watch event within `wait`: `{"ok": true, "status": ...}`, a failure of the
    /// stream, its clean end, or `{"ok": false, "waited": S}`.
    #[track_caller]
    pub fn watch_next(&mut self, wait: Duration) -> Value {
        self.exchange(
            json!({"op": "watch_next", "timeout": wait.as_secs_f64()}),
            wait,
        )
    }

    /// What grpcio-reflection's client lists and resolves over reflection v1alpha and v1;
    /// `methods` as `service/method`.
    #[track_caller]
    pub fn reflection(&mut self, methods: &[&str]) -> Value {
        // Several streams (list, then one per file): allow each its deadline.
        self.exchange(
            json!({"op": "reflection", "methods": methods,
                   "timeout": RPC_DEADLINE.as_secs_f64()}),
            RPC_DEADLINE * 4,
        )
    }
}

impl Drop for PyClient {
    fn drop(&mut self) {
        if let Some(mut s) = self.stdin.take() {
            let _ = s.write_all(b"{\"op\": \"quit\"}\n");
        }
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        eprintln!(
            "python client over {} (pid {}) did not quit; killing it",
            self.label,
            self.child.id()
        );
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A CA, a server certificate for `localhost` / 127.0.0.1, and a client certificate, as
/// PEM files in one directory (openssl; ECDSA P-256, valid two days).
#[derive(Debug)]
pub struct Pki {
    /// The CA certificate (the agent's --tls-client-ca, the client's root).
    pub ca: PathBuf,
    /// The agent's certificate and key.
    pub server: (PathBuf, PathBuf),
    /// The client's certificate and key.
    pub client: (PathBuf, PathBuf),
}

impl Pki {
    /// Creates the files in `dir`.
    pub fn create(dir: &Path) -> anyhow::Result<Self> {
        let p = |f: &str| dir.join(f).display().to_string();
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let mut ca_args = vec!["req", "-x509"];
        ca_args.extend(ec);
        let (ca_key, ca_pem) = (p("ca.key"), p("ca.pem"));
        ca_args.extend([
            "-keyout",
            &ca_key,
            "-out",
            &ca_pem,
            "-subj",
            "/CN=gatest python client CA",
            "-days",
            "2",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        run_ok("openssl", &ca_args)?;
        let leaf = |name: &str, usage: &str, san: &str| -> anyhow::Result<(PathBuf, PathBuf)> {
            let (key, csr, pem, ext) = (
                p(&format!("{name}.key")),
                p(&format!("{name}.csr")),
                p(&format!("{name}.pem")),
                p(&format!("{name}.ext")),
            );
            std::fs::write(
                &ext,
                format!(
                    "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
                     extendedKeyUsage={usage}\nsubjectAltName={san}\n"
                ),
            )?;
            let subj = format!("/CN={name}");
            let mut req = vec!["req", "-new"];
            req.extend(ec);
            req.extend(["-keyout", &key, "-out", &csr, "-subj", &subj]);
            run_ok("openssl", &req)?;
            let serial = format!("0x{:016x}", rand_serial());
            run_ok(
                "openssl",
                &[
                    "x509",
                    "-req",
                    "-in",
                    &csr,
                    "-CA",
                    &ca_pem,
                    "-CAkey",
                    &ca_key,
                    "-set_serial",
                    &serial,
                    "-days",
                    "2",
                    "-extfile",
                    &ext,
                    "-out",
                    &pem,
                ],
            )?;
            Ok((PathBuf::from(pem), PathBuf::from(key)))
        };
        Ok(Self {
            server: leaf("server", "serverAuth", "DNS:localhost,IP:127.0.0.1")?,
            client: leaf("client", "clientAuth", "DNS:host")?,
            ca: PathBuf::from(ca_pem),
        })
    }
}

fn rand_serial() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (t.as_nanos() as u64 ^ (u64::from(std::process::id()) << 32)) | 1
}
