//! `guestctl snapshot`: Quiesce, SIGSTOP the VMM, run COMMAND, SIGCONT, Thaw, with the thaw
//! guaranteed.
//!
//! The guarantees, each in its own file:
//! * the thaw is sent whatever happened before it (Quiesce failed, timed out or was
//!   interrupted; the guest may have frozen anyway), retried until `--thaw-deadline`, and
//!   confirmed with FreezeStatus ([`thaw`]); an unconfirmed thaw exits 5 saying the VM may
//!   still be frozen ([`report`]);
//! * SIGCONT is sent whenever SIGSTOP was ([`pause`]);
//! * SIGINT/SIGTERM are caught and the sequence goes on to SIGCONT and the thaw
//!   ([`signals`], [`command`]);
//! * a Quiesce the host stops waiting for is left to finish, so the Thaw is ordered after it
//!   ([`quiesce`]).
//!
//! Every phase is timed and is a span under one trace ([`trace`]); each RPC carries the
//! phase's W3C `traceparent`, so the agent's spans become children of the host's phases.

pub mod command;
pub mod pause;
pub mod quiesce;
pub mod report;
pub mod signals;
pub mod thaw;
pub mod trace;

use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use futures::FutureExt;
use guest_proto::v1::guest_client::GuestClient;
use guest_transport::{connect_channel_with, ClientTls, ConnectUri};
use opentelemetry::trace::{Status as SpanStatus, TraceContextExt};
use opentelemetry::{Context, KeyValue};
use tonic::Request;

use crate::grpc_code::code_name;
use crate::output::Render;
use command::{CommandEnd, CommandSpec};
use pause::Paused;
use quiesce::{Answer, PendingQuiesce, Waited};
use report::{
    CommandSummary, Outcome, PhaseRecord, QuiesceSummary, SnapshotReport, ThawSummary, Verdict,
};
use signals::Interrupts;
use trace::SnapshotTrace;

/// Everything `guestctl snapshot` needs.
#[derive(Debug, Clone)]
pub struct SnapshotOptions {
    /// The agent.
    pub connect: ConnectUri,
    /// Connect (and hybrid vsock handshake) timeout.
    pub connect_timeout: Duration,
    /// TLS client settings for tls+tcp://.
    pub tls: Option<ClientTls>,
    /// The VMM process to SIGSTOP during the command.
    pub pause_pid: Option<u32>,
    /// How long to wait for Quiesce.
    pub quiesce_timeout: Duration,
    /// How long the thaw (retries and confirmation) may take in total.
    pub thaw_deadline: Duration,
    /// Mountpoints to freeze (empty: all eligible).
    pub mountpoints: Vec<String>,
    /// OTLP/gRPC receiver for the spans.
    pub otlp_endpoint: Option<String>,
    /// Bound of the span export.
    pub otlp_timeout: Duration,
    /// The command and its arguments.
    pub command: Vec<OsString>,
    /// `--json` output.
    pub json: bool,
}

/// A request carrying `cx`'s trace context and, when given, a gRPC deadline.
pub fn traced_request<T>(message: T, cx: &Context, timeout: Option<Duration>) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(t) = timeout {
        request.set_timeout(t);
    }
    trace::inject(cx, request.metadata_mut());
    request
}

/// Times one phase, ends its span with the outcome, and prints its line in text mode.
struct Phases {
    records: Vec<PhaseRecord>,
    json: bool,
}

impl Phases {
    fn record(
        &mut self,
        cx: Option<&Context>,
        name: &'static str,
        elapsed: Duration,
        outcome: Outcome,
        detail: String,
    ) {
        if let Some(cx) = cx {
            let span = cx.span();
            span.set_attribute(KeyValue::new("snapshot.outcome", format!("{outcome:?}")));
            if !matches!(outcome, Outcome::Ok | Outcome::Skipped) {
                span.set_status(SpanStatus::error(detail.clone()));
            }
            span.end();
        }
        let rec = PhaseRecord {
            name,
            ms: elapsed.as_secs_f64() * 1e3,
            outcome,
            detail,
        };
        if !self.json {
            println!("{}", rec.line());
        }
        self.records.push(rec);
    }

    fn skip(&mut self, name: &'static str, why: &str) {
        self.record(
            None,
            name,
            Duration::ZERO,
            Outcome::Skipped,
            why.to_string(),
        );
    }
}

fn status_text(s: &tonic::Status) -> String {
    format!("{}: {}", code_name(s.code()), s.message())
}

/// Runs the snapshot sequence and prints the report; returns the exit code.
pub async fn run(opts: SnapshotOptions) -> u8 {
    let interrupts = match Interrupts::install() {
        Ok(i) => i,
        Err(e) => {
            eprintln!(
                "guestctl: {e}; not starting a snapshot that could not be interrupted safely"
            );
            return crate::exit_code::EXIT_AGENT_ERROR;
        }
    };
    let tracer = SnapshotTrace::new();
    let root = tracer.root(
        "guestctl snapshot",
        vec![
            KeyValue::new("guest.connect", opts.connect.to_string()),
            KeyValue::new(
                "snapshot.command",
                opts.command
                    .iter()
                    .map(|a| a.to_string_lossy())
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
            KeyValue::new("snapshot.pause_pid", opts.pause_pid.map_or(-1, i64::from)),
        ],
    );
    let trace_id = trace::span_context(&root).trace_id().to_string();
    if !opts.json {
        println!("snapshot trace_id {trace_id}");
    }
    let mut report = SnapshotReport {
        trace_id,
        pause_pid: opts.pause_pid,
        ..SnapshotReport::default()
    };
    let mut verdict = Verdict::default();
    let mut phases = Phases {
        records: Vec::new(),
        json: opts.json,
    };

    let channel =
        match connect_channel_with(&opts.connect, opts.connect_timeout, opts.tls.as_ref()).await {
            Ok(c) => c,
            Err(e) => {
                verdict.connect_failed = true;
                report.quiesce.result = "not_sent";
                report.quiesce.error = Some(e.to_string());
                root.span().set_status(SpanStatus::error(e.to_string()));
                root.span().end();
                return finish(&opts, &tracer, report, verdict).await;
            }
        };
    let mut client = GuestClient::new(channel);

    // Quiesce.
    let qcx = tracer.child(&root, "quiesce");
    let started = Instant::now();
    let mut pending = PendingQuiesce::start(client.clone(), &qcx, opts.mountpoints.clone());
    let waited = pending.wait(opts.quiesce_timeout, &interrupts).await;
    let (outcome, detail) = match &waited {
        Waited::Answered(Answer::Frozen(r)) => {
            verdict.quiesced = true;
            report.quiesce = QuiesceSummary {
                result: "ok",
                frozen_count: Some(r.frozen_count),
                ..QuiesceSummary::default()
            };
            qcx.span().set_attribute(KeyValue::new(
                "guest.frozen_count",
                i64::from(r.frozen_count),
            ));
            (
                Outcome::Ok,
                format!("froze {} filesystem(s)", r.frozen_count),
            )
        }
        Waited::Answered(Answer::Failed(s)) => {
            report.quiesce = QuiesceSummary {
                result: "error",
                error: Some(status_text(s)),
                ..QuiesceSummary::default()
            };
            (Outcome::Failed, status_text(s))
        }
        Waited::Answered(Answer::Cancelled) => {
            report.quiesce.result = "error";
            (Outcome::Failed, "cancelled".to_string())
        }
        Waited::TimedOut(t) => {
            report.quiesce.result = "timeout";
            report.quiesce.error = Some(format!("no answer within {t:?}"));
            (
                Outcome::Timeout,
                format!("no answer within {t:?}; the guest may freeze anyway, thawing"),
            )
        }
        Waited::Interrupted(sig) => {
            report.quiesce.result = "interrupted";
            (Outcome::Interrupted, format!("{sig} while waiting"))
        }
    };
    phases.record(Some(&qcx), "quiesce", started.elapsed(), outcome, detail);

    // Pause, command, resume. A panic in here (a bug) must not skip the thaw: it is caught,
    // the pause guard has sent SIGCONT while unwinding, and the sequence goes on.
    let middle = std::panic::AssertUnwindSafe(async {
        let mut proceed = verdict.quiesced && interrupts.received().is_none();
        let mut paused: Option<Paused> = None;
        match opts.pause_pid {
            None => phases.skip("pause", "no --pause-pid"),
            Some(_) if !proceed => phases.skip("pause", "quiesce did not succeed"),
            Some(pid) => {
                let pcx = tracer.child(&root, "pause");
                pcx.span()
                    .set_attribute(KeyValue::new("process.pid", i64::from(pid)));
                let started = Instant::now();
                match Paused::stop(pid).await {
                    Ok(p) => {
                        paused = Some(p);
                        phases.record(
                            Some(&pcx),
                            "pause",
                            started.elapsed(),
                            Outcome::Ok,
                            format!("SIGSTOP pid {pid}: stopped"),
                        );
                    }
                    Err(e) => {
                        verdict.pause_failed = true;
                        proceed = false;
                        phases.record(
                            Some(&pcx),
                            "pause",
                            started.elapsed(),
                            Outcome::Failed,
                            e.to_string(),
                        );
                    }
                }
            }
        }

        // The command.
        if proceed && interrupts.received().is_none() {
            let ccx = tracer.child(&root, "command");
            let spec = CommandSpec {
                argv: opts.command.clone(),
                stdout_to_stderr: opts.json,
                env: vec![
                    ("TRACEPARENT".into(), trace::traceparent(&ccx)),
                    ("GUESTCTL_TRACE_ID".into(), report.trace_id.clone()),
                ],
            };
            let started = Instant::now();
            let end = command::run(&spec, &interrupts).await;
            let (outcome, detail) = match &end {
                CommandEnd::Exited(st) => {
                    report.command = CommandSummary {
                        ran: true,
                        exit_code: st.code(),
                        signal: st.signal(),
                        error: None,
                    };
                    match (st.code(), st.signal()) {
                        (Some(0), _) => (Outcome::Ok, "exit 0".to_string()),
                        (Some(c), _) => (Outcome::Failed, format!("exit {c}")),
                        (None, Some(s)) => (Outcome::Failed, format!("killed by signal {s}")),
                        (None, None) => (Outcome::Failed, st.to_string()),
                    }
                }
                CommandEnd::SpawnFailed(e) => {
                    report.command.error = Some(e.clone());
                    (Outcome::Failed, e.clone())
                }
            };
            verdict.command_ok = report.command.succeeded();
            let outcome = match (outcome, interrupts.received()) {
                (Outcome::Failed, Some(_)) => Outcome::Interrupted,
                (o, _) => o,
            };
            phases.record(Some(&ccx), "command", started.elapsed(), outcome, detail);
        } else {
            let why = if interrupts.received().is_some() {
                "interrupted"
            } else if verdict.pause_failed {
                "the VMM could not be paused"
            } else {
                "quiesce did not succeed"
            };
            phases.skip("command", why);
        }

        // Resume the VMM.
        match paused.as_mut() {
            None => phases.skip("resume", "not paused"),
            Some(p) => {
                let rcx = tracer.child(&root, "resume");
                let started = Instant::now();
                let pid = p.pid();
                match p.resume() {
                    Ok(()) => phases.record(
                        Some(&rcx),
                        "resume",
                        started.elapsed(),
                        Outcome::Ok,
                        format!("SIGCONT pid {pid}"),
                    ),
                    Err(e) => {
                        verdict.resume_failed = true;
                        phases.record(
                            Some(&rcx),
                            "resume",
                            started.elapsed(),
                            Outcome::Failed,
                            e.to_string(),
                        );
                    }
                }
            }
        }
        drop(paused);
    })
    .catch_unwind()
    .await;
    if let Err(panic) = middle {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        verdict.command_ok = false;
        phases.record(
            None,
            "internal",
            Duration::ZERO,
            Outcome::Failed,
            format!("guestctl failed internally ({what}); the VMM was resumed, thawing now"),
        );
    }

    // Thaw, then confirm, within one deadline.
    let deadline = tokio::time::Instant::now() + opts.thaw_deadline;
    let tcx = tracer.child(&root, "thaw");
    let t = thaw::thaw(&mut client, &tcx, deadline).await;
    let detail = match (&t.thaw_ok, &t.last_error) {
        (true, _) => format!(
            "thawed {} filesystem(s) ({} attempt(s))",
            t.thawed_count, t.attempts
        ),
        (false, Some(e)) => format!("no Thaw succeeded in {} attempt(s): {e}", t.attempts),
        (false, None) => "no Thaw attempt fit in the deadline".to_string(),
    };
    let outcome = if t.thaw_ok {
        Outcome::Ok
    } else {
        Outcome::Failed
    };
    phases.record(Some(&tcx), "thaw", t.thaw_time, outcome, detail);

    let ccx = tracer.child(&root, "confirm");
    let c = thaw::confirm(&mut client, &ccx, &mut pending, deadline).await;
    verdict.thawed = c.confirmed;
    let detail = if c.confirmed && c.rethaws > 0 {
        format!(
            "a freeze landed after the Quiesce was given up; thawed {} more filesystem(s); the agent now reports nothing frozen",
            c.rethawed_count
        )
    } else if c.confirmed {
        "the agent reports nothing frozen".to_string()
    } else {
        format!(
            "NOT CONFIRMED: {}",
            c.last_error.clone().unwrap_or_else(|| "unknown".into())
        )
    };
    let outcome = if c.confirmed {
        Outcome::Ok
    } else {
        Outcome::Failed
    };
    phases.record(Some(&ccx), "confirm", c.confirm_time, outcome, detail);

    report.quiesce.late_answer = pending.late_answer().map(|a| match a {
        Answer::Frozen(r) => format!("froze {} filesystem(s)", r.frozen_count),
        Answer::Failed(s) => status_text(s),
        Answer::Cancelled => "cancelled".to_string(),
    });
    report.thaw = ThawSummary {
        confirmed: c.confirmed,
        attempts: t.attempts + c.rethaws,
        thawed_count: t.thawed_count + c.rethawed_count,
        late_freeze_thawed: c.rethawed_count,
        still_frozen: c.still_frozen,
        error: if c.confirmed {
            None
        } else {
            c.last_error.or(t.last_error)
        },
    };
    verdict.interrupted = interrupts.received().map(|s| s as i32);
    report.interrupted = interrupts.received().map(|s| s.to_string());
    report.phases = phases.records;
    root.span().end();
    finish(&opts, &tracer, report, verdict).await
}

/// Exports the spans (bounded), prints the report and returns the exit code.
async fn finish(
    opts: &SnapshotOptions,
    tracer: &SnapshotTrace,
    mut report: SnapshotReport,
    verdict: Verdict,
) -> u8 {
    let (code, message) = verdict.conclude();
    report.exit_code = code;
    report.ok = code == 0;
    report.message = message;
    if let Some(endpoint) = opts.otlp_endpoint.as_deref().filter(|e| !e.is_empty()) {
        match tracer.export(endpoint, opts.otlp_timeout).await {
            Ok(n) => report.spans_exported = Some(n),
            Err(e) => report.export_error = Some(e.to_string()),
        }
    }
    let text = if opts.json {
        serde_json::to_string(&report).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    } else {
        // The phase lines were printed as they happened; print the rest.
        let full = report.human(0);
        full.lines()
            .skip(report.phases.len())
            .collect::<Vec<_>>()
            .join("\n")
    };
    println!("{text}");
    if code != 0 {
        eprintln!("guestctl: snapshot: {}", report.message);
    }
    code
}
