//! keda-gpu-scaler: a KEDA external scaler for GPU inference services.

/// Pure scoring math: EWMA, per-signal demand, composite, activation.
pub mod score;
/// Trace replay through cluster, metrics, KEDA and HPA models to compare scaling policies.
pub mod sim;
/// The only parser of trigger metadata: `scalerMetadata` to a validated `ScalerSpec`.
pub mod spec;
