//! What the workspace's tests share: the rule for a test whose prerequisite (root, a tool
//! chain) is missing. A developer's `cargo test` as an ordinary user skips such a test with
//! a line on stderr; under `make test` (which sets [`REQUIRE_ENV`]) and in CI it fails, so a
//! run cannot pass by skipping.

/// Set by `make test`: a missing prerequisite fails the test instead of skipping it.
pub const REQUIRE_ENV: &str = "GUEST_AGENT_REQUIRE_ROOT";

/// Whether a missing prerequisite must fail the test: under `make test` ([`REQUIRE_ENV`])
/// and in CI (`CI` set and not empty).
pub fn required() -> bool {
    std::env::var_os(REQUIRE_ENV).is_some() || std::env::var_os("CI").is_some_and(|v| !v.is_empty())
}

/// True when running as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Skips (returns true, with a line on stderr) unless running as root; `needs` says what
/// for, e.g. "loop devices, mount, FIFREEZE". Panics instead of skipping when
/// [`required`].
pub fn skip_unless_root(needs: &str) -> bool {
    skip_unless(is_root(), needs, required())
}

fn skip_unless(root: bool, needs: &str, required: bool) -> bool {
    if root {
        return false;
    }
    assert!(
        !required,
        "needs root ({needs}); {REQUIRE_ENV} or CI is set"
    );
    eprintln!("skipped: needs root ({needs})");
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_runs_and_a_user_skips() {
        assert!(!skip_unless(true, "x", true));
        assert!(!skip_unless(true, "x", false));
        assert!(skip_unless(false, "x", false));
    }

    #[test]
    #[should_panic(expected = "needs root (loop devices)")]
    fn a_required_run_without_root_fails() {
        skip_unless(false, "loop devices", true);
    }
}
