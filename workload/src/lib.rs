#![doc = "GPU inference workload for autoscaling experiments; see workload/README.md."]

/// Compute backends (cuBLAS, CPU, naive reference) behind one trait.
pub mod gemm;
/// The programs the service runs: matrix load, busy job, try-on load model.
pub mod compute;
/// Bounded admission: K jobs on the device, a bounded queue, busy-time accounting.
pub mod executor;
/// Prometheus metrics (names are a contract with the scaler).
pub mod metrics;
