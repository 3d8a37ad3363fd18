//! Compute backends behind one trait: [`Device`] is the small set of BLAS-style kernels the
//! programs (`crate::compute`) are written against, so the same program runs on cuBLAS, on the
//! CPU, or on the naive reference used by the tests.

pub mod cpu;
pub mod cublas;
pub mod reference;

use std::fmt;
use std::str::FromStr;

/// Errors raised by a compute backend.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("CUDA backend unavailable: {0}")]
    Unavailable(String),
    /// A CUDA library loaded but cannot be used: it lacks an entry point this backend calls
    /// (another version, a stub), or cudarc panicked while opening the device.
    #[error("CUDA backend unusable: {library} loaded, but {reason}")]
    LibraryUnusable {
        library: &'static str,
        reason: String,
    },
    #[error("CUDA driver error: {0}")]
    Driver(String),
    #[error("cuBLAS error: {0}")]
    Cublas(String),
    #[error("shape mismatch: {0}")]
    Shape(String),
    #[error("could not start CPU thread pool: {0}")]
    ThreadPool(String),
    #[error("stopped: the request that asked for this work has gone")]
    Cancelled,
}

/// Which backend the operator asked for at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendChoice {
    Auto,
    Cuda,
    Cpu,
}

impl FromStr for BackendChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "cuda" => Ok(Self::Cuda),
            "cpu" => Ok(Self::Cpu),
            other => Err(format!(
                "unknown backend {other:?}; expected auto, cuda or cpu"
            )),
        }
    }
}

/// The backend actually running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    Cuda,
    Cpu,
    Reference,
}

impl BackendKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cuda => "cuda",
            Self::Cpu => "cpu",
            Self::Reference => "reference",
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Dimensions of `C(m x n) = A(m x k) * B(k x n)`; every matrix is row-major and contiguous.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GemmDims {
    pub m: usize,
    pub n: usize,
    pub k: usize,
}

impl GemmDims {
    pub fn square(n: usize) -> Self {
        Self { m: n, n, k: n }
    }

    /// Floating point operations of one product (a multiply and an add per inner step).
    pub fn flops(self) -> f64 {
        2.0 * self.m as f64 * self.n as f64 * self.k as f64
    }

    pub(crate) fn check(self, a: usize, b: usize, c: usize) -> Result<(), BackendError> {
        if a != self.m * self.k || b != self.k * self.n || c != self.m * self.n {
            return Err(BackendError::Shape(format!(
                "gemm {self:?} got buffers of {a}, {b} and {c} elements"
            )));
        }
        Ok(())
    }
}

/// Device memory as the metrics report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryInfo {
    pub used_bytes: u64,
    pub total_bytes: u64,
}

/// BLAS-style kernels on device-resident f32 buffers.
///
/// Element-wise operations are expressed as kernels cuBLAS has (scal, geam, dgmm) so the CUDA
/// backend needs no runtime kernel compiler.
pub trait Device: Send + Sync + 'static {
    type Buf: Send;

    fn kind(&self) -> BackendKind;
    fn upload(&self, host: &[f32]) -> Result<Self::Buf, BackendError>;
    fn zeros(&self, len: usize) -> Result<Self::Buf, BackendError>;
    fn download(&self, buf: &Self::Buf) -> Result<Vec<f32>, BackendError>;
    fn len(&self, buf: &Self::Buf) -> usize;
    /// `c = alpha * a * b + beta * c` (row-major).
    #[allow(clippy::too_many_arguments)]
    fn gemm(
        &self,
        dims: GemmDims,
        alpha: f32,
        a: &Self::Buf,
        b: &Self::Buf,
        beta: f32,
        c: &mut Self::Buf,
    ) -> Result<(), BackendError>;
    /// `y = y ⊙ x` (Hadamard product).
    fn mul_assign(&self, y: &mut Self::Buf, x: &Self::Buf) -> Result<(), BackendError>;
    /// `y = alpha * x + beta * y`.
    fn axpby(
        &self,
        alpha: f32,
        x: &Self::Buf,
        beta: f32,
        y: &mut Self::Buf,
    ) -> Result<(), BackendError>;
    /// `y = alpha * y`.
    fn scale(&self, y: &mut Self::Buf, alpha: f32) -> Result<(), BackendError>;
    /// Waits until queued kernels have finished (a no-op on synchronous backends).
    fn synchronize(&self) -> Result<(), BackendError>;

    /// Convenience for host-resident operands: upload, multiply, download into `c`.
    fn gemm_host(
        &self,
        dims: GemmDims,
        a: &[f32],
        b: &[f32],
        c: &mut [f32],
    ) -> Result<(), BackendError> {
        dims.check(a.len(), b.len(), c.len())?;
        let da = self.upload(a)?;
        let db = self.upload(b)?;
        let mut dc = self.zeros(c.len())?;
        self.gemm(dims, 1.0, &da, &db, 0.0, &mut dc)?;
        let out = self.download(&dc)?;
        c.copy_from_slice(&out);
        Ok(())
    }
}

pub(crate) fn check_same_len(x: usize, y: usize) -> Result<(), BackendError> {
    if x != y {
        return Err(BackendError::Shape(format!(
            "element-wise op on {x} and {y} elements"
        )));
    }
    Ok(())
}

/// The backend chosen at start. Programs are generic over [`Device`]; this enum is the one place
/// that dispatches to the concrete type.
pub enum Backend {
    Cpu(cpu::CpuDevice),
    // Boxed: NVML's function table makes the CUDA device large.
    Cuda(Box<cublas::CudaDevice>),
}

/// Runs `$body` with `$d` bound to the concrete device inside a [`Backend`].
#[macro_export]
macro_rules! with_device {
    ($backend:expr, $d:ident => $body:expr) => {
        match $backend {
            $crate::gemm::Backend::Cpu($d) => $body,
            $crate::gemm::Backend::Cuda($d) => {
                let $d = &**$d;
                $body
            }
        }
    };
}

impl Backend {
    /// Opens the requested backend. `auto` tries CUDA and falls back to the CPU, logging why.
    pub fn open(choice: BackendChoice, cpu_threads: usize) -> Result<Self, BackendError> {
        match choice {
            BackendChoice::Cpu => Ok(Self::Cpu(cpu::CpuDevice::new(cpu_threads)?)),
            BackendChoice::Cuda => Ok(Self::Cuda(Box::new(cublas::CudaDevice::open(0)?))),
            BackendChoice::Auto => match cublas::CudaDevice::open(0) {
                Ok(dev) => Ok(Self::Cuda(Box::new(dev))),
                Err(reason) => {
                    tracing::warn!(%reason, "no usable GPU, falling back to the CPU backend");
                    Ok(Self::Cpu(cpu::CpuDevice::new(cpu_threads)?))
                }
            },
        }
    }

    pub fn kind(&self) -> BackendKind {
        with_device!(self, d => d.kind())
    }

    /// Human-readable device name for logs and JSON responses.
    pub fn device_name(&self) -> String {
        match self {
            Self::Cpu(d) => format!("cpu ({} threads)", d.threads()),
            Self::Cuda(d) => d.name().to_string(),
        }
    }

    /// Utilisation in percent as NVML reports it (GPU), or `None` when the executor measures it.
    pub fn hardware_utilization(&self) -> Option<f64> {
        match self {
            Self::Cpu(_) => None,
            Self::Cuda(d) => d.utilization_percent(),
        }
    }

    pub fn memory(&self) -> MemoryInfo {
        match self {
            Self::Cpu(d) => d.memory(),
            Self::Cuda(d) => d.memory(),
        }
    }
}
