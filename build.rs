//! Compiles KEDA's external scaler contract. protoc comes from the protoc-bin-vendored crate so the
//! build never depends on a system install; the descriptor set feeds gRPC server reflection and
//! the gRPC metrics' method table.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; prost-build reads PROTOC from the environment.
    unsafe { std::env::set_var("PROTOC", protoc) };
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        // Prost's codec with the metadata's key count checked before decoding (src/codec.rs).
        .codec_path("crate::codec::IntakeCodec")
        .file_descriptor_set_path(out_dir.join("externalscaler_descriptor.bin"))
        .compile_protos(&["proto/externalscaler.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto/externalscaler.proto");
    // For keda_gpu_scaler_build_info: the compiler cargo runs for this build. Not named with the
    // KEDA_GPU_SCALER_ prefix: cargo also sets it when it runs tests, where the settings loader
    // would take it for a setting.
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = std::process::Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|v| v.split_whitespace().nth(1).map(str::to_string))
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=BUILD_RUSTC_VERSION={version}");
    Ok(())
}
