//! keda-gpu-scaler: a KEDA external scaler for GPU inference services.

/// Pure scoring math: EWMA, per-signal demand, composite, activation.
pub mod score;
/// The only parser of trigger metadata: `scalerMetadata` to a validated `ScalerSpec`.
pub mod spec;
/// Signal sources (all IO): direct scrape of replicas' /metrics.
pub mod signals;
