#![doc = "GPU inference workload for autoscaling experiments; see workload/README.md."]

/// The programs the service runs: matrix load, busy job, try-on load model.
pub mod compute;
/// Service configuration (flags and `WORKLOAD_*` environment variables).
pub mod config;
/// HTTP error type: status codes and JSON bodies naming the offending field.
pub mod error;
/// Bounded admission: K jobs on the device, a bounded queue, busy-time accounting.
pub mod executor;
/// Compute backends (cuBLAS, CPU, naive reference) behind one trait.
pub mod gemm;
/// Prometheus metrics (names are a contract with the scaler).
pub mod metrics;
/// Query parameter parsing with bounds.
pub mod params;
/// The workspace's one seeded generator (SplitMix64): inputs here, traces and arrivals elsewhere.
pub mod rng;
/// Serve until a signal, then drain: the binary's whole lifecycle as one call.
pub mod serve;
/// The HTTP service: routes, handlers, graceful shutdown.
pub mod server;

pub use config::Config;
pub use server::{AppState, Server, StartError};
/// Load generation (scenarios, open/closed loop, HDR latency summary), used by `loadgen`.
pub mod load;

/// Installs ring as the process's rustls provider, once. The scaler in this workspace turns on
/// reqwest's rustls support (without a bundled provider), and reqwest then wants a process-wide
/// provider before it builds any client, plain http included. Safe to call any number of times.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
