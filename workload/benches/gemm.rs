//! CPU GEMM throughput beside numpy (OpenBLAS) measured in the same run.
//!
//! `cargo bench -p gpu-workload --bench gemm` (needs `python3` with numpy for the baseline).
//! Prints GFLOP/s at 512, 1024 and 2048 and the ratio faer / numpy. Each figure is the best of
//! several timed repetitions after a warm-up, for both sides alike.

use std::process::Command;
use std::time::Instant;

use gpu_workload::gemm::cpu::CpuDevice;
use gpu_workload::gemm::{Device, GemmDims};
use gpu_workload::rng::SplitMix64;

const SIZES: [usize; 3] = [512, 1024, 2048];

fn reps(n: usize) -> usize {
    match n {
        0..=512 => 30,
        513..=1024 => 10,
        _ => 4,
    }
}

fn faer_gflops(dev: &CpuDevice, n: usize) -> f64 {
    let mut rng = SplitMix64::new(n as u64);
    let a = dev.upload(&rng.fill_signed(n * n)).expect("upload");
    let b = dev.upload(&rng.fill_signed(n * n)).expect("upload");
    let mut c = dev.zeros(n * n).expect("alloc");
    let dims = GemmDims::square(n);
    dev.gemm(dims, 1.0, &a, &b, 0.0, &mut c).expect("warm-up");
    let mut best = f64::INFINITY;
    for _ in 0..reps(n) {
        let t = Instant::now();
        dev.gemm(dims, 1.0, &a, &b, 0.0, &mut c).expect("gemm");
        best = best.min(t.elapsed().as_secs_f64());
    }
    dims.flops() / best / 1e9
}

/// numpy's float32 matmul timed the same way, in a child python.
fn numpy_gflops(n: usize) -> Result<f64, String> {
    let script = format!(
        "import numpy as np, time\n\
         n={n}; r={reps}\n\
         rng=np.random.default_rng(0)\n\
         a=rng.uniform(-1,1,(n,n)).astype(np.float32); b=rng.uniform(-1,1,(n,n)).astype(np.float32)\n\
         c=a@b\n\
         best=float('inf')\n\
         for _ in range(r):\n\
         \x20   t=time.perf_counter(); c=a@b; best=min(best,time.perf_counter()-t)\n\
         print(2*n**3/best/1e9)\n",
        reps = reps(n)
    );
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        // Site-wide OpenBLAS tuning variables would skew the baseline; let it detect the CPU.
        .env_remove("OPENBLAS_CORETYPE")
        .env_remove("OPENBLAS_L2_SIZE")
        .output()
        .map_err(|e| format!("python3 not runnable: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .map_err(|e| format!("unexpected numpy output: {e}"))
}

fn main() {
    let threads: usize = std::env::var("GEMM_BENCH_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let dev = CpuDevice::new(threads).expect("thread pool");
    println!(
        "CPU GEMM f32, {} threads (faer) vs numpy/OpenBLAS, best of N",
        dev.threads()
    );
    println!(
        "{:>6} {:>14} {:>14} {:>8}",
        "size", "faer GFLOP/s", "numpy GFLOP/s", "ratio"
    );
    for n in SIZES {
        let ours = faer_gflops(&dev, n);
        match numpy_gflops(n) {
            Ok(base) => println!("{n:>6} {ours:>14.1} {base:>14.1} {:>7.2}x", ours / base),
            Err(e) => println!("{n:>6} {ours:>14.1} {:>14} {:>8}  ({e})", "n/a", "-"),
        }
    }
}
