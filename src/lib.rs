//! keda-gpu-scaler: a KEDA external scaler for GPU inference services.

/// KEDA's ExternalScaler contract, generated from `proto/externalscaler.proto`.
pub mod proto {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("externalscaler");

    /// Encoded descriptor set of the contract, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/externalscaler_descriptor.bin"));
}

/// Pure scoring math: EWMA, per-signal demand, composite, activation.
pub mod score;
/// The only parser of trigger metadata: `scalerMetadata` to a validated `ScalerSpec`.
pub mod spec;
/// Signal sources (all IO): direct scrape of replicas' /metrics.
pub mod signals;
/// One entry per ScaledObject: sampling loop, cached decisions, staleness, pushes.
pub mod engine;
/// Settings: defaults < file < environment < flags, validated once.
pub mod config;
/// Logging, the scaler's own /metrics and the /debug page.
pub mod telemetry;
/// The ExternalScaler gRPC service (thin: spec -> engine -> proto).
pub mod service;
/// The running server: gRPC + HTTP listeners, sampler, health watchdog, shutdown.
pub mod server;
/// Command line: serve, check-config, explain.
pub mod cli;
