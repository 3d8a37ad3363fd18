//! The classic GPU-autoscaling demo load: per iteration 4 matrix products and 8 element-wise
//! operations on float32 N x N matrices.
//!
//! The inputs A and B stay bounded (entries in [-1, 1], products scaled by 1/sqrt(N)), every
//! iteration's result is averaged into an accumulator, and B flips sign each iteration, so the
//! values never overflow however many iterations run and each iteration computes something new.

use std::time::Instant;

use serde::Serialize;

use crate::executor::Cancel;
use crate::gemm::{BackendError, Device, GemmDims};
use crate::rng::SplitMix64;

pub const PRODUCTS_PER_ITERATION: u32 = 4;
pub const ELEMENTWISE_PER_ITERATION: u32 = 8;

/// Floating point operations of `iterations` iterations at size `n`.
pub fn flops(n: usize, iterations: u32) -> f64 {
    let n = n as f64;
    let per_iter = f64::from(PRODUCTS_PER_ITERATION) * 2.0 * n * n * n
        // mul_assign: 1 flop per element, axpby: 3, scale: 1 (see `run`).
        + (3.0 * 1.0 + 4.0 * 3.0 + 1.0) * n * n;
    per_iter * f64::from(iterations)
}

#[derive(Debug, Clone, Serialize)]
pub struct MatrixOutcome {
    pub size: usize,
    pub iterations: u32,
    pub elapsed_ms: f64,
    pub flops: f64,
    pub gflops: f64,
    /// Sum of the accumulator's entries: lets a client check two backends computed the same thing.
    pub checksum: f64,
}

/// Runs the load on `dev` and returns the accumulator downloaded to the host with timing.
pub fn run<D: Device>(
    dev: &D,
    n: usize,
    iterations: u32,
    seed: u64,
) -> Result<(MatrixOutcome, Vec<f32>), BackendError> {
    run_until(dev, n, iterations, seed, &Cancel::never())
}

/// `run`, stopping between iterations once `cancel` is set.
pub fn run_until<D: Device>(
    dev: &D,
    n: usize,
    iterations: u32,
    seed: u64,
    cancel: &Cancel,
) -> Result<(MatrixOutcome, Vec<f32>), BackendError> {
    let len = n * n;
    let mut rng = SplitMix64::new(seed);
    let a = dev.upload(&rng.fill_signed(len))?;
    let mut b = dev.upload(&rng.fill_signed(len))?;
    let mut c = dev.zeros(len)?;
    let mut d = dev.zeros(len)?;
    let mut e = dev.zeros(len)?;
    let mut f = dev.zeros(len)?;
    let mut acc = dev.zeros(len)?;
    dev.synchronize()?;

    let dims = GemmDims::square(n);
    let s = 1.0 / (n as f32).sqrt();
    let avg = 1.0 / iterations.max(1) as f32;
    let start = Instant::now();
    for _ in 0..iterations {
        cancel.check()?;
        dev.gemm(dims, s, &a, &b, 0.0, &mut c)?; // product 1: C = s A B
        dev.gemm(dims, s, &b, &a, 0.0, &mut d)?; // product 2: D = s B A
        dev.mul_assign(&mut c, &d)?; // ew 1: C = C ⊙ D
        dev.axpby(1.0, &a, 1.0, &mut c)?; // ew 2: C = A + C
        dev.axpby(-1.0, &b, 1.0, &mut d)?; // ew 3: D = D - B
        dev.mul_assign(&mut d, &a)?; // ew 4: D = D ⊙ A
        dev.gemm(dims, s, &c, &d, 0.0, &mut e)?; // product 3: E = s C D
        dev.gemm(dims, s, &d, &c, 0.0, &mut f)?; // product 4: F = s D C
        dev.axpby(1.0, &f, 1.0, &mut e)?; // ew 5: E = E + F
        dev.mul_assign(&mut e, &b)?; // ew 6: E = E ⊙ B
        dev.axpby(avg, &e, 1.0, &mut acc)?; // ew 7: acc += E / iterations
        dev.scale(&mut b, -1.0)?; // ew 8: B = -B
    }
    dev.synchronize()?;
    let elapsed = start.elapsed().as_secs_f64();
    let host = dev.download(&acc)?;
    let total = flops(n, iterations);
    let outcome = MatrixOutcome {
        size: n,
        iterations,
        elapsed_ms: elapsed * 1e3,
        flops: total,
        gflops: if elapsed > 0.0 {
            total / elapsed / 1e9
        } else {
            0.0
        },
        checksum: host.iter().map(|&v| f64::from(v)).sum(),
    };
    Ok((outcome, host))
}
