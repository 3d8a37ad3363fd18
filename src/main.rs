#![forbid(unsafe_code)]

fn main() -> anyhow::Result<()> {
    keda_gpu_scaler::cli::main()
}
