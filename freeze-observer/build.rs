//! Builds the `agent-ebpf` object with aya-build (nightly, `-Z build-std=core`, bpf-linker) and
//! leaves it in `OUT_DIR/agent-ebpf`, where `src/loader.rs` embeds it.

use std::{env, fs, path::PathBuf};

fn main() -> aya_build::Result<()> {
    // The object embeds the shared types too, so their changes must rebuild it.
    println!("cargo::rerun-if-changed=../agent-common/src");
    // aya-build runs `cargo build --release` for the BPF target, so the workspace's release
    // profile (tuned for a small agent binary) would apply to the kernel programs too. Pin the
    // settings the verifiers of 6.1, 6.12 and 6.18 were shown to accept instead; the child
    // cargo reads them from its environment.
    for (key, value) in [
        ("CARGO_PROFILE_RELEASE_OPT_LEVEL", "3"),
        ("CARGO_PROFILE_RELEASE_LTO", "thin"),
        ("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "4"),
    ] {
        env::set_var(key, value);
    }
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "agent-ebpf",
            root_dir: "../agent-ebpf",
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )?;
    // With AYA_BUILD_SKIP=1 (documentation-only builds) nothing was built: leave an empty
    // object so the crate compiles; loading then fails with a clear error.
    let object = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR")).join("agent-ebpf");
    if !object.exists() {
        fs::write(&object, [])?;
    }
    Ok(())
}
