//! Generates the Rust types and tonic stubs for `boxlite/v1/guest.proto`, plus a file
//! descriptor set for gRPC reflection. protoc comes vendored so no system package is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY-free: build scripts are single threaded; PROTOC is read by prost-build below.
    unsafe { std::env::set_var("PROTOC", protoc) };
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("guest_descriptor.bin"))
        .compile_protos(&["boxlite/v1/guest.proto"], &["."])?;
    println!("cargo:rerun-if-changed=boxlite/v1/guest.proto");
    Ok(())
}
