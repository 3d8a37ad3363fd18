//! `/gpu_job`: keeps the device busy for about the requested time with real GEMM kernels.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::executor::Cancel;
use crate::gemm::{BackendError, BackendKind, Device, GemmDims};
use crate::rng::SplitMix64;

/// Matrix size per kernel: large enough to be efficient, small enough that the job overshoots the
/// requested time by at most one kernel (about 1 ms on either backend).
pub fn kernel_size(kind: BackendKind) -> usize {
    match kind {
        BackendKind::Cuda => 2048,
        _ => 256,
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct BusyOutcome {
    pub work_ms: u64,
    pub elapsed_ms: f64,
    pub kernels: u64,
    pub gflops: f64,
}

pub fn run<D: Device>(dev: &D, work: Duration, seed: u64) -> Result<BusyOutcome, BackendError> {
    run_until(dev, work, seed, &Cancel::never())
}

/// `run`, stopping between kernel batches once `cancel` is set.
pub fn run_until<D: Device>(
    dev: &D,
    work: Duration,
    seed: u64,
    cancel: &Cancel,
) -> Result<BusyOutcome, BackendError> {
    let n = kernel_size(dev.kind());
    let dims = GemmDims::square(n);
    let mut rng = SplitMix64::new(seed);
    let a = dev.upload(&rng.fill_signed(n * n))?;
    let b = dev.upload(&rng.fill_signed(n * n))?;
    let mut c = dev.zeros(n * n)?;
    let start = Instant::now();
    let mut kernels = 0u64;
    // Queue a few kernels between synchronisations so the GPU never idles waiting for the host.
    const BATCH: u64 = 4;
    while start.elapsed() < work {
        cancel.check()?;
        for _ in 0..BATCH {
            dev.gemm(dims, 1.0, &a, &b, 0.5, &mut c)?;
        }
        dev.synchronize()?;
        kernels += BATCH;
    }
    let elapsed = start.elapsed().as_secs_f64();
    Ok(BusyOutcome {
        work_ms: work.as_millis() as u64,
        elapsed_ms: elapsed * 1e3,
        kernels,
        gflops: kernels as f64 * dims.flops() / elapsed.max(1e-9) / 1e9,
    })
}
