//! Compiles KEDA's external scaler contract. protoc comes from the protoc-bin-vendored crate so the
//! build never depends on a system install; the descriptor set feeds gRPC server reflection.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; prost-build reads PROTOC from the environment.
    unsafe { std::env::set_var("PROTOC", protoc) };
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("externalscaler_descriptor.bin"))
        .compile_protos(&["proto/externalscaler.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto/externalscaler.proto");
    Ok(())
}
