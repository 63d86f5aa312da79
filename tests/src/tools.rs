//! The outside tools the client conformance tests drive (python3, go, protoc, grpcurl):
//! finding them, where a missing one fails instead of skipping, and the environment they run
//! in.

use std::path::{Path, PathBuf};

use crate::bins;

/// Proxy variables that grpc-core and grpc-go honour for tcp targets; the agent under test is
/// on this machine, so they are removed from a client's environment.
pub const PROXY_VARS: [&str; 5] = [
    "http_proxy",
    "https_proxy",
    "grpc_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
];

pub use test_support::required;

/// `tool`'s path on `PATH`, if it is there.
pub fn which(tool: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// A persistent Go build cache beside cargo's build output (`$GOCACHE` when set), so that
/// a second build of a Go client is a link step.
pub fn go_build_cache() -> PathBuf {
    if let Some(c) = std::env::var_os("GOCACHE").filter(|c| !c.is_empty()) {
        return PathBuf::from(c);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|d| {
            if d.is_absolute() {
                d
            } else {
                bins::workspace_root().join(d)
            }
        })
        .unwrap_or_else(|| bins::workspace_root().join("target"));
    target.join("go-build-cache")
}

/// Where Debian's golang-*-dev packages put their Go sources (a GOPATH entry).
pub const DEBIAN_GOCODE: &str = "/usr/share/gocode";

/// What of the Go tool chain the Go client needs (Debian's go, protoc and its Go plugins,
/// grpc-go and the protobuf runtimes in [`DEBIAN_GOCODE`]) is not installed.
pub fn missing_go_toolchain() -> Vec<String> {
    let mut missing: Vec<String> = ["go", "protoc", "protoc-gen-go", "protoc-gen-go-grpc"]
        .into_iter()
        .filter(|t| which(t).is_none())
        .map(String::from)
        .collect();
    for pkg in [
        "google.golang.org/grpc",
        "google.golang.org/protobuf",
        "github.com/golang/protobuf",
    ] {
        if !Path::new(DEBIAN_GOCODE).join("src").join(pkg).is_dir() {
            missing.push(format!("{DEBIAN_GOCODE}/src/{pkg}"));
        }
    }
    missing
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_finds_a_shell_and_not_a_made_up_name() {
        assert!(which("sh").is_some());
        assert!(which("no-such-tool-guest-agent").is_none());
    }
}
