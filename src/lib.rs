//! keda-gpu-scaler: a KEDA external scaler for GPU inference services.
//!
//! The production program only: the simulator (`sim/`) and the live demo (`demo/`) are crates of
//! their own that call this library.

#![forbid(unsafe_code)]

/// KEDA's ExternalScaler contract, generated from `proto/externalscaler.proto`.
pub mod proto {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("externalscaler");

    /// Encoded descriptor set of the contract, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/externalscaler_descriptor.bin"));
}

/// `check`: ScaledObject manifests checked offline with the metadata parser.
pub(crate) mod check;
/// Command line: serve, check-config, explain, check.
pub mod cli;
/// The ExternalScaler's gRPC codec: metadata key counts checked on the wire, before decoding.
pub(crate) mod codec;
/// Settings: defaults < file < environment < flags, validated once.
pub mod config;
/// Pod deletion costs on scale-down (`podDeletionCost`): ranking and pacing, pure.
pub mod deletion;
/// Where the scaler may fetch from: the operator's egress policy for tenants' URLs.
pub mod egress;
/// One entry per ScaledObject: sampling loop, cached decisions, staleness, pushes.
pub mod engine;
/// Untrustworthy numbers (infinite, overflowing) turned into the safe answer: maxReplicas.
pub(crate) mod failsafe;
/// Metadata builders for the unit tests.
#[cfg(test)]
pub(crate) mod fixtures;
/// Metadata size limits checked before parsing, and refused maps remembered.
pub(crate) mod intake;
/// Decisions kept across restarts in a small state file, so a restart never reports less.
pub(crate) mod restore;
/// Pure scoring math: EWMA, per-signal demand, composite, activation.
pub mod score;
/// The running server: gRPC + HTTP listeners, sampler, health watchdog, shutdown.
pub mod server;
/// The ExternalScaler gRPC service (thin: spec -> engine -> proto).
pub mod service;
/// How one setting is read from text in every layer: durations, bounded numbers, flags, paths.
pub mod setting;
/// Where numbers come from (all IO), one folder per source: direct scrape of replicas' /metrics
/// (with EndpointSlice discovery), Prometheus, NVML; and their shared HTTP client and body budget.
pub mod sources;
/// The only parser of trigger metadata: `scalerMetadata` to a validated `ScalerSpec`.
pub mod spec;
/// Logging, the scaler's own /metrics and the /debug page.
pub mod telemetry;
/// Tenant and network text made safe for errors, logs and the debug page; URLs' credentials
/// redacted.
pub(crate) mod text;
/// TLS and mTLS for the gRPC listener: certificate files reloaded on change, concurrent handshakes.
pub mod tls;
