//! CPU backend: faer's GEMM (blocked, AVX2/AVX-512 micro-kernels) on a dedicated rayon pool, so
//! `--cpu-threads` bounds how many cores one process uses when many share a machine.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use faer::{Accum, MatMut, MatRef, Par};

use super::{check_same_len, BackendError, BackendKind, Device, GemmDims, MemoryInfo};

pub struct CpuDevice {
    pool: rayon::ThreadPool,
    threads: usize,
    /// Bytes held by live compute buffers, reported as accelerator memory in use.
    live_bytes: Arc<AtomicU64>,
    total_bytes: u64,
}

/// A host buffer whose size is counted in the device's memory gauge while it lives.
pub struct CpuBuf {
    data: Vec<f32>,
    live_bytes: Arc<AtomicU64>,
}

impl CpuBuf {
    pub fn as_slice(&self) -> &[f32] {
        &self.data
    }
}

impl Drop for CpuBuf {
    fn drop(&mut self) {
        self.live_bytes.fetch_sub(
            std::mem::size_of_val(self.data.as_slice()) as u64,
            Ordering::Relaxed,
        );
    }
}

impl CpuDevice {
    /// `threads == 0` means one per available core.
    pub fn new(threads: usize) -> Result<Self, BackendError> {
        let threads = if threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            threads
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("gemm-{i}"))
            .build()
            .map_err(|e| BackendError::ThreadPool(e.to_string()))?;
        Ok(Self {
            pool,
            threads,
            live_bytes: Arc::new(AtomicU64::new(0)),
            total_bytes: system_memory_bytes().unwrap_or(0),
        })
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    pub fn memory(&self) -> MemoryInfo {
        MemoryInfo {
            used_bytes: self.live_bytes.load(Ordering::Relaxed),
            total_bytes: self.total_bytes,
        }
    }

    fn par(&self) -> Par {
        match std::num::NonZeroUsize::new(self.threads) {
            Some(n) if n.get() > 1 => Par::Rayon(n),
            _ => Par::Seq,
        }
    }

    fn wrap(&self, data: Vec<f32>) -> CpuBuf {
        self.live_bytes.fetch_add(
            std::mem::size_of_val(data.as_slice()) as u64,
            Ordering::Relaxed,
        );
        CpuBuf {
            data,
            live_bytes: Arc::clone(&self.live_bytes),
        }
    }

    /// Element-wise loops run on the same pool, split in chunks large enough to amortise the
    /// fork/join cost.
    fn zip_apply(&self, y: &mut [f32], x: &[f32], f: impl Fn(&mut f32, f32) + Sync) {
        use rayon::prelude::*;
        const CHUNK: usize = 1 << 15;
        if self.threads <= 1 || y.len() < 2 * CHUNK {
            y.iter_mut().zip(x).for_each(|(y, &x)| f(y, x));
            return;
        }
        self.pool.install(|| {
            y.par_chunks_mut(CHUNK)
                .zip(x.par_chunks(CHUNK))
                .for_each(|(yc, xc)| yc.iter_mut().zip(xc).for_each(|(y, &x)| f(y, x)));
        });
    }
}

/// MemTotal from /proc/meminfo; the CPU backend's "device memory" is host memory.
fn system_memory_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

impl Device for CpuDevice {
    type Buf = CpuBuf;

    fn kind(&self) -> BackendKind {
        BackendKind::Cpu
    }

    fn upload(&self, host: &[f32]) -> Result<CpuBuf, BackendError> {
        Ok(self.wrap(host.to_vec()))
    }

    fn zeros(&self, len: usize) -> Result<CpuBuf, BackendError> {
        Ok(self.wrap(vec![0.0; len]))
    }

    fn download(&self, buf: &CpuBuf) -> Result<Vec<f32>, BackendError> {
        Ok(buf.data.clone())
    }

    fn len(&self, buf: &CpuBuf) -> usize {
        buf.data.len()
    }

    fn gemm(
        &self,
        dims: GemmDims,
        alpha: f32,
        a: &CpuBuf,
        b: &CpuBuf,
        beta: f32,
        c: &mut CpuBuf,
    ) -> Result<(), BackendError> {
        dims.check(a.data.len(), b.data.len(), c.data.len())?;
        // faer accumulates (`Add`) or overwrites (`Replace`); a general beta is a pre-scale.
        let accum = if beta == 0.0 {
            Accum::Replace
        } else {
            if beta != 1.0 {
                c.data.iter_mut().for_each(|v| *v *= beta);
            }
            Accum::Add
        };
        let lhs = MatRef::from_row_major_slice(&a.data, dims.m, dims.k);
        let rhs = MatRef::from_row_major_slice(&b.data, dims.k, dims.n);
        let dst = MatMut::from_row_major_slice_mut(&mut c.data, dims.m, dims.n);
        let par = self.par();
        self.pool
            .install(|| faer::linalg::matmul::matmul(dst, accum, lhs, rhs, alpha, par));
        Ok(())
    }

    fn mul_assign(&self, y: &mut CpuBuf, x: &CpuBuf) -> Result<(), BackendError> {
        check_same_len(y.data.len(), x.data.len())?;
        self.zip_apply(&mut y.data, &x.data, |y, x| *y *= x);
        Ok(())
    }

    fn axpby(&self, alpha: f32, x: &CpuBuf, beta: f32, y: &mut CpuBuf) -> Result<(), BackendError> {
        check_same_len(y.data.len(), x.data.len())?;
        self.zip_apply(&mut y.data, &x.data, |y, x| *y = alpha * x + beta * *y);
        Ok(())
    }

    fn scale(&self, y: &mut CpuBuf, alpha: f32) -> Result<(), BackendError> {
        y.data.iter_mut().for_each(|v| *v *= alpha);
        Ok(())
    }

    fn synchronize(&self) -> Result<(), BackendError> {
        Ok(())
    }
}
