//! Names unique across parallel tests and concurrent test processes (directories, network
//! namespaces, sockets): process id plus a per-process counter plus a clock-derived salt.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A short name `<prefix><pid>x<n><salt>` that no other test in any process uses at the
/// same time. Kept short (< 16 bytes for prefix up to 4) so it also fits interface and
/// namespace name limits.
pub fn unique(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let salt = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}{}x{n}{:03x}", std::process::id(), salt & 0xfff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_differ_and_are_short() {
        let a = unique("ga");
        let b = unique("ga");
        assert_ne!(a, b);
        assert!(a.starts_with("ga"));
        assert!(a.len() <= 20, "{a}");
    }
}
