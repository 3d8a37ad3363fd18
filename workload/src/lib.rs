#![doc = "GPU inference workload for autoscaling experiments; see workload/README.md."]

/// Compute backends (cuBLAS, CPU, naive reference) behind one trait.
pub mod gemm;
