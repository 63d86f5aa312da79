//! A `--hooks-dir` with shell hooks that log each run (hook name, argument count, arguments,
//! time in ms) to a file outside the directory, so tests can check which hooks ran, in which
//! order, with which arguments, and when relative to the freeze.

use std::path::{Path, PathBuf};

use crate::error::{FixtureError, Result};
use crate::scratch::Scratch;

/// One logged hook run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookRun {
    /// File name of the hook.
    pub hook: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Unix time in ms when it ran.
    pub at_ms: u64,
}

/// A hooks directory and the log its logging hooks append to.
#[derive(Debug)]
pub struct HookDir {
    dir: PathBuf,
    log: PathBuf,
}

fn write_mode(path: &Path, text: &str, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text)
        .map_err(|e| FixtureError::io(format!("write {}", path.display()), e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| FixtureError::io(format!("chmod {}", path.display()), e))
}

impl HookDir {
    /// Creates `<scratch>/<name>` and the log path `<scratch>/<name>.log`.
    pub fn new(scratch: &Scratch, name: &str) -> Result<Self> {
        Ok(Self {
            dir: scratch.subdir(name)?,
            log: scratch.join(format!("{name}.log")),
        })
    }

    /// The directory, for `--hooks-dir`.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The log file the logging hooks append to.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Writes an executable `/bin/sh` hook `name` with `body`.
    pub fn add(&self, name: &str, body: &str) -> Result<PathBuf> {
        let p = self.dir.join(name);
        write_mode(&p, &format!("#!/bin/sh\n{body}\n"), 0o755)?;
        Ok(p)
    }

    /// Writes a file that is not executable (the agent must ignore it).
    pub fn add_plain(&self, name: &str, body: &str) -> Result<PathBuf> {
        let p = self.dir.join(name);
        write_mode(&p, &format!("#!/bin/sh\n{body}\n"), 0o644)?;
        Ok(p)
    }

    /// Writes an executable hook that first logs its run, then executes `then`.
    pub fn add_logging(&self, name: &str, then: &str) -> Result<PathBuf> {
        let log = self.log.display();
        self.add(
            name,
            &format!("echo \"$(basename \"$0\")|$#|$*|$(date +%s%3N)\" >> '{log}'\n{then}"),
        )
    }

    /// Every logged run, in order.
    pub fn runs(&self) -> Result<Vec<HookRun>> {
        let text = match std::fs::read_to_string(&self.log) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(FixtureError::io(format!("read {}", self.log.display()), e)),
        };
        text.lines().map(parse_line).collect()
    }

    /// The logged runs as `hook arg...` strings, for compact assertions.
    pub fn run_names(&self) -> Result<Vec<String>> {
        Ok(self
            .runs()?
            .into_iter()
            .map(|r| format!("{} {}", r.hook, r.args.join(" ")))
            .collect())
    }
}

fn parse_line(line: &str) -> Result<HookRun> {
    let bad = || FixtureError::Parse {
        what: "hook log line".into(),
        reason: format!("{line:?}"),
    };
    let parts: Vec<&str> = line.split('|').collect();
    let [hook, argc, args, at] = parts[..] else {
        return Err(bad());
    };
    let argc: usize = argc.parse().map_err(|_| bad())?;
    let args: Vec<String> = args.split_whitespace().map(str::to_string).collect();
    if args.len() != argc {
        return Err(bad());
    }
    Ok(HookRun {
        hook: hook.to_string(),
        args,
        at_ms: at.parse().map_err(|_| bad())?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn logging_hook_records_name_args_and_time() {
        let s = Scratch::new().unwrap();
        let h = HookDir::new(&s, "hooks").unwrap();
        let p = h.add_logging("10-a", "exit 0").unwrap();
        assert!(Command::new(&p).arg("freeze").status().unwrap().success());
        assert!(Command::new(&p)
            .args(["thaw", "x"])
            .status()
            .unwrap()
            .success());
        let runs = h.runs().unwrap();
        assert_eq!(runs.len(), 2);
        assert_eq!(runs[0].hook, "10-a");
        assert_eq!(runs[0].args, vec!["freeze"]);
        assert_eq!(runs[1].args, vec!["thaw", "x"]);
        assert!(runs[1].at_ms >= runs[0].at_ms && runs[0].at_ms > 1_600_000_000_000);
        assert_eq!(h.run_names().unwrap(), vec!["10-a freeze", "10-a thaw x"]);
    }

    #[test]
    fn plain_files_are_not_executable_and_bad_lines_are_errors() {
        let s = Scratch::new().unwrap();
        let h = HookDir::new(&s, "hooks").unwrap();
        let p = h.add_plain("README", "exit 0").unwrap();
        assert!(Command::new(&p).status().is_err());
        assert!(h.runs().unwrap().is_empty());
        assert!(parse_line("a|2|x|5").is_err());
        assert!(parse_line("a|1|x").is_err());
    }
}
