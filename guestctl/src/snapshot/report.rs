//! What `guestctl snapshot` prints and the exit code it ends with.
//!
//! Exit codes (also in `guestctl snapshot --help`), most serious first:
//!
//! | code | meaning |
//! |---|---|
//! | 5 | the thaw was not confirmed before `--thaw-deadline`: **the VM may still be frozen** |
//! | 8 | the VMM could not be paused or resumed (SIGSTOP/SIGCONT failed) |
//! | 130 / 143 | interrupted by SIGINT / SIGTERM (the sequence still resumed and thawed) |
//! | 6 | Quiesce failed or timed out: no snapshot was taken (the VM was thawed) |
//! | 7 | COMMAND failed, could not start, or was killed (the VM was thawed) |
//! | 3 | could not connect to the agent: nothing was sent |
//! | 0 | the command ran on a frozen, paused VM, which is now resumed and confirmed thawed |

use serde::Serialize;

use crate::output::Render;

/// Exit code: the thaw could not be confirmed; the VM may still be frozen.
pub const EXIT_THAW_UNCONFIRMED: u8 = 5;
/// Exit code: Quiesce failed or timed out; no snapshot taken.
pub const EXIT_QUIESCE_FAILED: u8 = 6;
/// Exit code: the command failed.
pub const EXIT_COMMAND_FAILED: u8 = 7;
/// Exit code: SIGSTOP or SIGCONT of the VMM failed.
pub const EXIT_PAUSE_FAILED: u8 = 8;

/// How a phase ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Done.
    Ok,
    /// Failed (see the detail).
    Failed,
    /// Did not finish in time.
    Timeout,
    /// Not run (not asked for, or an earlier phase failed).
    Skipped,
    /// Stopped by SIGINT/SIGTERM.
    Interrupted,
}

impl Outcome {
    fn word(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Failed => "FAILED",
            Outcome::Timeout => "TIMEOUT",
            Outcome::Skipped => "skipped",
            Outcome::Interrupted => "INTERRUPTED",
        }
    }
}

/// One phase: quiesce, pause, command, resume, thaw, confirm.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PhaseRecord {
    /// Phase name.
    pub name: &'static str,
    /// Wall time, milliseconds.
    pub ms: f64,
    /// How it ended.
    pub outcome: Outcome,
    /// What happened, for people.
    pub detail: String,
}

impl PhaseRecord {
    /// The line printed for the phase in text mode.
    pub fn line(&self) -> String {
        format!(
            "{:<8} {:>10.1} ms  {:<11} {}",
            self.name,
            self.ms,
            self.outcome.word(),
            self.detail
        )
    }
}

/// The Quiesce call's result.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct QuiesceSummary {
    /// `ok`, `error`, `timeout`, `interrupted` or `not_sent`.
    pub result: &'static str,
    /// Filesystems frozen (when answered).
    pub frozen_count: Option<u32>,
    /// The agent's error (when it failed).
    pub error: Option<String>,
    /// What the call answered after we had stopped waiting for it (`froze N`, an error,
    /// or `cancelled`), when that happened.
    pub late_answer: Option<String>,
}

/// The command's result.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CommandSummary {
    /// Whether it was started.
    pub ran: bool,
    /// Exit code, if it exited.
    pub exit_code: Option<i32>,
    /// Signal that killed it, if any.
    pub signal: Option<i32>,
    /// Why it could not run.
    pub error: Option<String>,
}

impl CommandSummary {
    /// It ran and exited 0.
    pub fn succeeded(&self) -> bool {
        self.ran && self.exit_code == Some(0)
    }
}

/// The thaw and its confirmation.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ThawSummary {
    /// The agent confirmed nothing is frozen.
    pub confirmed: bool,
    /// Thaw calls made, including re-thaws during confirmation.
    pub attempts: u32,
    /// Filesystems thawed in total.
    pub thawed_count: u32,
    /// Filesystems found frozen again (or still) during confirmation and thawed: a freeze
    /// that landed after the Quiesce was given up.
    pub late_freeze_thawed: u32,
    /// Mountpoints the agent last reported frozen (when not confirmed).
    pub still_frozen: Vec<String>,
    /// The last problem seen (when not confirmed).
    pub error: Option<String>,
}

/// The whole result of `guestctl snapshot`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SnapshotReport {
    /// Exit code 0.
    pub ok: bool,
    /// The process exit code.
    pub exit_code: u8,
    /// The trace id of this snapshot (hex).
    pub trace_id: String,
    /// Every phase in order.
    pub phases: Vec<PhaseRecord>,
    /// Quiesce.
    pub quiesce: QuiesceSummary,
    /// The VMM pid paused, if any.
    pub pause_pid: Option<u32>,
    /// The command.
    pub command: CommandSummary,
    /// Thaw and confirmation.
    pub thaw: ThawSummary,
    /// `SIGINT` or `SIGTERM` when one interrupted the sequence.
    pub interrupted: Option<String>,
    /// Spans exported over OTLP (when an endpoint was set and the export worked).
    pub spans_exported: Option<usize>,
    /// Why the OTLP export failed (the snapshot itself is unaffected).
    pub export_error: Option<String>,
    /// One sentence saying how it ended.
    pub message: String,
}

/// The conclusions drawn from the phases; see the module table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Verdict {
    /// The agent could not be reached at all.
    pub connect_failed: bool,
    /// Thaw confirmed.
    pub thawed: bool,
    /// SIGSTOP failed.
    pub pause_failed: bool,
    /// SIGCONT failed.
    pub resume_failed: bool,
    /// Signal number that interrupted, if any.
    pub interrupted: Option<i32>,
    /// Quiesce answered with success.
    pub quiesced: bool,
    /// The command ran and exited 0.
    pub command_ok: bool,
}

impl Verdict {
    /// The exit code and the one-line message.
    pub fn conclude(&self) -> (u8, String) {
        if self.connect_failed {
            return (
                crate::exit_code::EXIT_CONNECT,
                "could not connect to the agent; nothing was frozen".into(),
            );
        }
        if !self.thawed {
            return (
                EXIT_THAW_UNCONFIRMED,
                "the thaw could not be confirmed before the deadline: THE VM MAY STILL BE FROZEN; \
                 check with `guestctl status` and thaw with `guestctl thaw` (the agent's watchdog \
                 thaws on its own after its --freeze-timeout)"
                    .into(),
            );
        }
        if self.resume_failed {
            return (
                EXIT_PAUSE_FAILED,
                "SIGCONT to the VMM failed: the VM may still be paused".into(),
            );
        }
        if let Some(sig) = self.interrupted {
            return (
                128u8.saturating_add(u8::try_from(sig).unwrap_or(0)),
                "interrupted; the VM was resumed and its thaw confirmed".into(),
            );
        }
        if !self.quiesced {
            return (
                EXIT_QUIESCE_FAILED,
                "quiesce failed: no snapshot was taken; the VM is confirmed thawed".into(),
            );
        }
        if self.pause_failed {
            return (
                EXIT_PAUSE_FAILED,
                "pausing the VMM failed: no snapshot was taken; the VM is confirmed thawed".into(),
            );
        }
        if !self.command_ok {
            return (
                EXIT_COMMAND_FAILED,
                "the command failed; the VM is resumed and confirmed thawed".into(),
            );
        }
        (
            0,
            "snapshot taken; the VM is resumed and confirmed thawed".into(),
        )
    }
}

impl Render for SnapshotReport {
    fn human(&self, _now_ms: u64) -> String {
        let mut out = String::new();
        for p in &self.phases {
            out.push_str(&p.line());
            out.push('\n');
        }
        let total: f64 = self.phases.iter().map(|p| p.ms).sum();
        out.push_str(&format!("total    {total:>10.1} ms\n"));
        out.push_str(&format!("trace_id {}\n", self.trace_id));
        if let Some(n) = self.spans_exported {
            out.push_str(&format!("exported {n} span(s) over OTLP\n"));
        }
        if let Some(e) = &self.export_error {
            out.push_str(&format!("span export failed: {e}\n"));
        }
        out.push_str(&self.message);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> Verdict {
        Verdict {
            thawed: true,
            quiesced: true,
            command_ok: true,
            ..Verdict::default()
        }
    }

    #[test]
    fn exit_codes_by_precedence() {
        assert_eq!(good().conclude().0, 0);
        let cases: &[(Verdict, u8)] = &[
            (
                Verdict {
                    thawed: false,
                    interrupted: Some(15),
                    quiesced: false,
                    ..good()
                },
                5,
            ),
            (
                Verdict {
                    resume_failed: true,
                    interrupted: Some(2),
                    ..good()
                },
                8,
            ),
            (
                Verdict {
                    interrupted: Some(2),
                    quiesced: false,
                    ..good()
                },
                130,
            ),
            (
                Verdict {
                    interrupted: Some(15),
                    ..good()
                },
                143,
            ),
            (
                Verdict {
                    quiesced: false,
                    command_ok: false,
                    ..good()
                },
                6,
            ),
            (
                Verdict {
                    pause_failed: true,
                    command_ok: false,
                    ..good()
                },
                8,
            ),
            (
                Verdict {
                    command_ok: false,
                    ..good()
                },
                7,
            ),
            (
                Verdict {
                    connect_failed: true,
                    thawed: false,
                    ..good()
                },
                3,
            ),
        ];
        for (v, code) in cases {
            assert_eq!(v.conclude().0, *code, "{v:?}");
        }
        assert!(Verdict::default()
            .conclude()
            .1
            .contains("THE VM MAY STILL BE FROZEN"));
    }

    #[test]
    fn text_and_json_rendering() {
        let r = SnapshotReport {
            ok: true,
            trace_id: "0af7651916cd43dd8448eb211c80319c".into(),
            phases: vec![
                PhaseRecord {
                    name: "quiesce",
                    ms: 12.34,
                    outcome: Outcome::Ok,
                    detail: "froze 1 filesystem(s)".into(),
                },
                PhaseRecord {
                    name: "pause",
                    ms: 0.0,
                    outcome: Outcome::Skipped,
                    detail: "no --pause-pid".into(),
                },
            ],
            message: "snapshot taken".into(),
            ..SnapshotReport::default()
        };
        let text = r.human(0);
        assert!(
            text.contains("quiesce        12.3 ms  ok          froze 1 filesystem(s)"),
            "{text}"
        );
        assert!(
            text.contains("pause           0.0 ms  skipped     no --pause-pid"),
            "{text}"
        );
        assert!(text.contains("trace_id 0af7651916cd43dd8448eb211c80319c"));
        let v: serde_json::Value = serde_json::to_value(&r).unwrap();
        assert_eq!(v["phases"][0]["outcome"], "ok");
        assert_eq!(v["phases"][0]["ms"], 12.34);
        assert_eq!(v["thaw"]["confirmed"], false);
        assert!(v["command"]["exit_code"].is_null());
    }
}
