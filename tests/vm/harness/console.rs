//! The guest's serial console (ttyS0), which qemu writes to a file: kernel messages, the
//! init script's lines, the agent's log and the writer's heartbeats. Tests wait for lines on
//! it, and the whole text is printed when a test fails.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::error::{Result, VmError};

/// The console log of one VM.
#[derive(Debug, Clone)]
pub struct Console {
    path: PathBuf,
}

impl Console {
    /// The console written to `path`.
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
        }
    }

    /// Everything printed so far, with terminal escape sequences removed.
    pub fn text(&self) -> String {
        let raw = std::fs::read(&self.path).unwrap_or_default();
        strip_escapes(&String::from_utf8_lossy(&raw))
    }

    /// The lines printed so far.
    pub fn lines(&self) -> Vec<String> {
        self.text().lines().map(str::to_string).collect()
    }

    /// Waits until some line satisfies `pred` and returns it.
    pub fn wait_line(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.lines().into_iter().find(|l| pred(l)) {
                return Ok(line);
            }
            if Instant::now() >= deadline {
                return Err(VmError::Timeout {
                    what: format!("console line: {what}"),
                    after: timeout,
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Removes ANSI escape sequences (the agent's log colours, SeaBIOS's screen codes) and
/// carriage returns.
pub fn strip_escapes(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => {
                if chars.peek() == Some(&'[') {
                    chars.next();
                    // Parameters and intermediates, then one final byte in '@'..='~'.
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                } else {
                    chars.next();
                }
            }
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_are_removed() {
        let s = "\u{1b}[2m2026\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m x\u{1b}cy\r\nz";
        assert_eq!(strip_escapes(s), "2026  INFO xy\nz");
    }

    #[test]
    fn waiting_for_a_line_that_never_comes_times_out() {
        let dir = std::env::temp_dir().join(format!("vm-console-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("console.log");
        std::fs::write(&path, "init: ready\n").unwrap();
        let c = Console::new(&path);
        assert_eq!(
            c.wait_line("ready", Duration::from_secs(1), |l| l.contains("ready"))
                .unwrap(),
            "init: ready"
        );
        let e = c
            .wait_line("never", Duration::from_millis(200), |l| l.contains("never"))
            .unwrap_err();
        assert!(matches!(e, VmError::Timeout { .. }), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
