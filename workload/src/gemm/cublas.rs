//! CUDA backend: cuBLAS through cudarc, which loads libcuda and libcublas at run time. The crate
//! therefore builds and its tests run on machines without CUDA; there `open` reports unavailable.
//!
//! cuBLAS is column-major. A row-major matrix is the transpose of the same memory read
//! column-major, so the row-major product `C = A B` is computed as the column-major `C^T = B^T A^T`
//! by swapping the operands and the m/n extents: no data is transposed.

use std::sync::Arc;

use cudarc::cublas::sys::{cublasOperation_t, cublasSideMode_t};
use cudarc::cublas::{result as blas, sys as blas_sys, CudaBlas};
use cudarc::driver::{CudaContext, CudaSlice, CudaStream, DevicePtr, DevicePtrMut};
use nvml_wrapper::Nvml;

use super::{check_same_len, BackendError, BackendKind, Device, GemmDims, MemoryInfo};

pub struct CudaDevice {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    blas: CudaBlas,
    name: String,
    ordinal: u32,
    /// NVML is optional: without it utilisation is unknown but compute still works.
    nvml: Option<Nvml>,
}

fn driver_err(e: impl std::fmt::Display) -> BackendError {
    BackendError::Driver(e.to_string())
}

fn blas_err(e: impl std::fmt::Display) -> BackendError {
    BackendError::Cublas(e.to_string())
}

/// cuBLAS takes 32-bit extents.
fn int(v: usize) -> Result<i32, BackendError> {
    i32::try_from(v)
        .map_err(|_| BackendError::Shape(format!("extent {v} exceeds cuBLAS's i32 range")))
}

/// Whether the CUDA driver and cuBLAS libraries can be loaded on this machine.
pub fn libraries_present() -> bool {
    // SAFETY: these only try to dlopen the libraries and report whether that worked.
    let present = std::panic::catch_unwind(|| unsafe {
        cudarc::driver::sys::is_culib_present() && blas_sys::is_culib_present()
    });
    present.unwrap_or(false)
}

/// The cuBLAS entry points this backend calls. cudarc resolves each one the first time it is
/// called and panics if the library lacks it, so `open` looks them all up first: a library that
/// loads but is not the cuBLAS this was built for (another version, a stub) is reported instead of
/// panicking in the middle of a request.
const CUBLAS_SYMBOLS: &[&str] = &[
    "cublasCreate_v2",
    "cublasDestroy_v2",
    "cublasSetStream_v2",
    "cublasSgemm_v2",
    "cublasSdgmm",
    "cublasSgeam",
    "cublasSscal_v2",
];

/// Enough of the driver API to tell the CUDA driver from another library of the same name; the
/// rest is guarded by the `catch_unwind` in `open`.
const DRIVER_SYMBOLS: &[&str] = &["cuInit", "cuDeviceGet", "cuDevicePrimaryCtxRetain"];

/// The first of `symbols` that `lookup` cannot find, as an error naming `library`.
fn check_symbols(
    library: &'static str,
    symbols: &[&'static str],
    lookup: impl Fn(&str) -> Result<(), String>,
) -> Result<(), BackendError> {
    for symbol in symbols {
        lookup(symbol).map_err(|reason| BackendError::LibraryUnusable {
            library,
            reason: format!("it lacks {symbol} ({reason})"),
        })?;
    }
    Ok(())
}

/// The text of a caught panic.
fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "a panic without a message".into())
}

impl CudaDevice {
    /// Opens GPU `ordinal`. Never panics: missing libraries are `Unavailable`, and libraries that
    /// load but lack what this backend calls, or fail inside cudarc, are `LibraryUnusable`.
    pub fn open(ordinal: usize) -> Result<Self, BackendError> {
        if !libraries_present() {
            return Err(BackendError::Unavailable(
                "libcuda or libcublas could not be loaded (no NVIDIA driver / CUDA libraries)"
                    .into(),
            ));
        }
        // cudarc panics instead of returning an error on a missing symbol and on some driver
        // failures; the whole open (library load, symbol lookup, context and handle) is contained.
        std::panic::catch_unwind(|| Self::open_checked(ordinal)).unwrap_or_else(|panic| {
            Err(BackendError::LibraryUnusable {
                library: "the CUDA libraries",
                reason: format!("opening GPU {ordinal} panicked: {}", panic_text(&*panic)),
            })
        })
    }

    fn open_checked(ordinal: usize) -> Result<Self, BackendError> {
        // SAFETY: culib() loads the library (present, checked above) and get() only looks a name
        // up; nothing found here is called before the whole list is known to exist.
        let blas_lib = unsafe { blas_sys::culib() };
        check_symbols("libcublas", CUBLAS_SYMBOLS, |name| {
            unsafe { blas_lib.get::<*const ()>(name.as_bytes()) }
                .map(drop)
                .map_err(|e| e.to_string())
        })?;
        // SAFETY: as above, for the driver library.
        let driver_lib = unsafe { cudarc::driver::sys::culib() };
        check_symbols("libcuda", DRIVER_SYMBOLS, |name| {
            unsafe { driver_lib.get::<*const ()>(name.as_bytes()) }
                .map(drop)
                .map_err(|e| e.to_string())
        })?;
        let ctx = CudaContext::new(ordinal).map_err(|e| {
            BackendError::Unavailable(format!("CUDA context for GPU {ordinal}: {e}"))
        })?;
        let stream = ctx.default_stream();
        let blas = CudaBlas::new(Arc::clone(&stream)).map_err(blas_err)?;
        let name = ctx.name().unwrap_or_else(|_| format!("cuda:{ordinal}"));
        let nvml = match Nvml::init() {
            Ok(n) => Some(n),
            Err(e) => {
                tracing::warn!(error = %e, "NVML unavailable; GPU utilisation will not be reported");
                None
            }
        };
        Ok(Self {
            ctx,
            stream,
            blas,
            name,
            ordinal: ordinal as u32,
            nvml,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// NVML's "percent of time over the last sample period during which a kernel ran".
    pub fn utilization_percent(&self) -> Option<f64> {
        let nvml = self.nvml.as_ref()?;
        let dev = nvml.device_by_index(self.ordinal).ok()?;
        dev.utilization_rates().ok().map(|u| f64::from(u.gpu))
    }

    pub fn memory(&self) -> MemoryInfo {
        if let Some(info) = self
            .nvml
            .as_ref()
            .and_then(|n| n.device_by_index(self.ordinal).ok())
            .and_then(|d| d.memory_info().ok())
        {
            return MemoryInfo {
                used_bytes: info.used,
                total_bytes: info.total,
            };
        }
        match self.ctx.mem_get_info() {
            Ok((free, total)) => MemoryInfo {
                used_bytes: (total - free) as u64,
                total_bytes: total as u64,
            },
            Err(_) => MemoryInfo {
                used_bytes: 0,
                total_bytes: 0,
            },
        }
    }

    fn handle(&self) -> blas_sys::cublasHandle_t {
        *self.blas.handle()
    }
}

impl Device for CudaDevice {
    type Buf = CudaSlice<f32>;

    fn kind(&self) -> BackendKind {
        BackendKind::Cuda
    }

    fn upload(&self, host: &[f32]) -> Result<CudaSlice<f32>, BackendError> {
        self.stream.clone_htod(host).map_err(driver_err)
    }

    fn zeros(&self, len: usize) -> Result<CudaSlice<f32>, BackendError> {
        self.stream.alloc_zeros::<f32>(len).map_err(driver_err)
    }

    fn download(&self, buf: &CudaSlice<f32>) -> Result<Vec<f32>, BackendError> {
        self.stream.clone_dtoh(buf).map_err(driver_err)
    }

    fn len(&self, buf: &CudaSlice<f32>) -> usize {
        buf.len()
    }

    fn gemm(
        &self,
        dims: GemmDims,
        alpha: f32,
        a: &CudaSlice<f32>,
        b: &CudaSlice<f32>,
        beta: f32,
        c: &mut CudaSlice<f32>,
    ) -> Result<(), BackendError> {
        dims.check(a.len(), b.len(), c.len())?;
        let (m, n, k) = (int(dims.m)?, int(dims.n)?, int(dims.k)?);
        let (pa, _ga) = a.device_ptr(&self.stream);
        let (pb, _gb) = b.device_ptr(&self.stream);
        let (pc, _gc) = c.device_ptr_mut(&self.stream);
        // SAFETY: extents were checked against the buffer lengths above; the guards keep the
        // buffers alive and ordered on this stream while the kernel is queued.
        unsafe {
            blas::sgemm(
                self.handle(),
                cublasOperation_t::CUBLAS_OP_N,
                cublasOperation_t::CUBLAS_OP_N,
                n,
                m,
                k,
                &alpha,
                pb as *const f32,
                n,
                pa as *const f32,
                k,
                &beta,
                pc as *mut f32,
                n,
            )
        }
        .map_err(blas_err)
    }

    fn mul_assign(&self, y: &mut CudaSlice<f32>, x: &CudaSlice<f32>) -> Result<(), BackendError> {
        check_same_len(y.len(), x.len())?;
        let len = int(y.len())?;
        let (px, _gx) = x.device_ptr(&self.stream);
        let (py, _gy) = y.device_ptr_mut(&self.stream);
        // A Hadamard product is diag(x) * y with y viewed as a (len x 1) matrix; dgmm allows the
        // output to alias the input when the leading dimensions match.
        // SAFETY: both buffers hold `len` elements (checked above).
        unsafe {
            blas_sys::cublasSdgmm(
                self.handle(),
                cublasSideMode_t::CUBLAS_SIDE_LEFT,
                len,
                1,
                py as *const f32,
                len,
                px as *const f32,
                1,
                py as *mut f32,
                len,
            )
        }
        .result()
        .map_err(blas_err)
    }

    fn axpby(
        &self,
        alpha: f32,
        x: &CudaSlice<f32>,
        beta: f32,
        y: &mut CudaSlice<f32>,
    ) -> Result<(), BackendError> {
        check_same_len(y.len(), x.len())?;
        let len = int(y.len())?;
        let (px, _gx) = x.device_ptr(&self.stream);
        let (py, _gy) = y.device_ptr_mut(&self.stream);
        // geam with C aliasing B is cuBLAS's documented in-place mode.
        // SAFETY: both buffers hold `len` elements (checked above).
        unsafe {
            blas_sys::cublasSgeam(
                self.handle(),
                cublasOperation_t::CUBLAS_OP_N,
                cublasOperation_t::CUBLAS_OP_N,
                len,
                1,
                &alpha,
                px as *const f32,
                len,
                &beta,
                py as *const f32,
                len,
                py as *mut f32,
                len,
            )
        }
        .result()
        .map_err(blas_err)
    }

    fn scale(&self, y: &mut CudaSlice<f32>, alpha: f32) -> Result<(), BackendError> {
        let len = int(y.len())?;
        let (py, _gy) = y.device_ptr_mut(&self.stream);
        // SAFETY: `len` is the buffer's own length.
        unsafe { blas_sys::cublasSscal_v2(self.handle(), len, &alpha, py as *mut f32, 1) }
            .result()
            .map_err(blas_err)
    }

    fn synchronize(&self) -> Result<(), BackendError> {
        self.stream.synchronize().map_err(driver_err)
    }
}
