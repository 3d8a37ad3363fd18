//! Service configuration: every flag also reads a `WORKLOAD_*` environment variable, so the same
//! binary is configured by a Helm chart or by the scaler's demo command.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;

use crate::gemm::BackendChoice;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "gpu-workload",
    version,
    about = "GPU inference workload: cuBLAS/CPU matrix and try-on style service"
)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "WORKLOAD_ADDR", default_value = "0.0.0.0:8000")]
    pub addr: SocketAddr,
    /// Compute backend: auto (CUDA if usable, else CPU), cuda, or cpu.
    #[arg(long, env = "WORKLOAD_BACKEND", default_value = "auto")]
    pub backend: BackendChoice,
    /// Requests allowed on the device at once (K).
    #[arg(long, env = "WORKLOAD_MAX_CONCURRENCY", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub max_concurrency: u32,
    /// Requests allowed to wait for the device; beyond this, 503 with Retry-After.
    #[arg(long, env = "WORKLOAD_QUEUE_CAPACITY", default_value_t = 32)]
    pub queue_capacity: usize,
    /// Threads of the CPU backend's GEMM pool (0 = one per core).
    #[arg(long, env = "WORKLOAD_CPU_THREADS", default_value_t = 0)]
    pub cpu_threads: usize,
    /// Largest N accepted by /matrix.
    #[arg(long, env = "WORKLOAD_MAX_MATRIX_SIZE", default_value_t = 4096)]
    pub max_matrix_size: usize,
    /// Largest iteration count accepted by /matrix.
    #[arg(long, env = "WORKLOAD_MAX_ITERATIONS", default_value_t = 100)]
    pub max_iterations: u32,
    /// Longest work_ms accepted by /gpu_job.
    #[arg(long, env = "WORKLOAD_MAX_WORK_MS", default_value_t = 60_000)]
    pub max_work_ms: u64,
    /// Longest duration_ms accepted by /stream.
    #[arg(long, env = "WORKLOAD_MAX_STREAM_MS", default_value_t = 300_000)]
    pub max_stream_ms: u64,
    /// Largest request body accepted by /tryon, in bytes.
    #[arg(long, env = "WORKLOAD_MAX_BODY_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Largest uploaded image width and height, in pixels.
    #[arg(long, env = "WORKLOAD_MAX_IMAGE_DIM", default_value_t = 4096)]
    pub max_image_dim: u32,
    /// Seconds a client is told to wait (Retry-After) when the queue is full.
    #[arg(long, env = "WORKLOAD_RETRY_AFTER_SECS", default_value_t = 1)]
    pub retry_after_secs: u64,
    /// After SIGTERM, keep serving (readyz failing) this long so load balancers notice.
    #[arg(long, env = "WORKLOAD_SHUTDOWN_DELAY_MS", default_value_t = 0)]
    pub shutdown_delay_ms: u64,
    /// After that, wait at most this long for in-flight requests before exiting.
    #[arg(long, env = "WORKLOAD_SHUTDOWN_TIMEOUT_SECS", default_value_t = 30)]
    pub shutdown_timeout_secs: u64,
    /// Longest time to receive a request body (/tryon), in milliseconds: a client sending
    /// slowly, or announcing more than it sends, does not hold the connection longer.
    #[arg(long, env = "WORKLOAD_BODY_TIMEOUT_MS", default_value_t = 30_000)]
    pub body_timeout_ms: u64,
    /// Longest time to receive a request's headers, in milliseconds, counted from when the
    /// server starts waiting for them (so it also closes keep-alive connections idle that long):
    /// a client trickling header lines does not hold a connection longer. Real clients send
    /// their headers in one write; 10 s covers a slow link many times over.
    #[arg(long, env = "WORKLOAD_HEADER_TIMEOUT_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub header_timeout_ms: u64,
    /// Log as JSON lines instead of text.
    #[arg(long, env = "WORKLOAD_LOG_JSON", default_value_t = false)]
    pub log_json: bool,
}

impl Config {
    /// Defaults with the given listen address and the CPU backend (what tests and demos use).
    pub fn cpu(addr: SocketAddr) -> Self {
        let mut c = Self::parse_from(["gpu-workload"]);
        c.addr = addr;
        c.backend = BackendChoice::Cpu;
        c
    }

    pub fn shutdown_delay(&self) -> Duration {
        Duration::from_millis(self.shutdown_delay_ms)
    }

    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.shutdown_timeout_secs)
    }

    pub fn header_timeout(&self) -> Duration {
        Duration::from_millis(self.header_timeout_ms)
    }
}
