//! Rebuild the eBPF object whenever the `bpf-linker` on PATH changes: cargo cannot see that
//! the link step depends on it (the dependency is undeclared, see aya-rs/aya-template).

fn main() {
    println!("cargo::rerun-if-env-changed=PATH");
    if let Ok(linker) = which::which("bpf-linker") {
        println!("cargo::rerun-if-changed={}", linker.display());
    }
}
