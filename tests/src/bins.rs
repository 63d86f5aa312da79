//! Where the binaries under test are: `GUEST_AGENT_BIN` / `GUESTCTL_BIN` override, else the
//! workspace's `target/debug` (built by `cargo build --workspace` before the tests run).

use std::path::{Path, PathBuf};

use crate::error::{FixtureError, Result};

/// The workspace root: the parent of this crate's manifest directory.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The directory cargo builds into: `CARGO_TARGET_DIR` when set, else `<root>/target`.
fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => {
            let d = PathBuf::from(d);
            if d.is_absolute() {
                d
            } else {
                workspace_root().join(d)
            }
        }
        None => workspace_root().join("target"),
    }
}

fn locate(env: &str, name: &str) -> Result<PathBuf> {
    let path = match std::env::var_os(env) {
        Some(p) => PathBuf::from(p),
        None => target_dir().join("debug").join(name),
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(FixtureError::MissingBinary { path })
    }
}

/// Path of the `guest-agent` binary.
pub fn guest_agent() -> Result<PathBuf> {
    locate("GUEST_AGENT_BIN", "guest-agent")
}

/// Path of the `guestctl` binary.
pub fn guestctl() -> Result<PathBuf> {
    locate("GUESTCTL_BIN", "guestctl")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workspace_root_holds_the_workspace_manifest() {
        let manifest = std::fs::read_to_string(workspace_root().join("Cargo.toml")).unwrap();
        assert!(manifest.contains("[workspace]"));
    }

    #[test]
    fn a_missing_binary_says_how_to_build_it() {
        let e = locate("SYSTEM_TESTS_NO_SUCH_VAR", "no-such-binary")
            .unwrap_err()
            .to_string();
        assert!(e.contains("run `cargo build --workspace` first"), "{e}");
    }
}
