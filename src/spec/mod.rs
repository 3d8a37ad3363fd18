//! ScalerSpec: a trigger's `scalerMetadata` turned into a typed, validated spec.
//!
//! This is the only place metadata is parsed. Every problem is collected and reported at once,
//! naming the key and what it accepts, so one `kubectl describe` shows everything to fix.
//!
//! - `model`: what a parsed trigger is (`ScalerSpec`, `SourceSpec`, `SignalSpec`...) and the error;
//! - `registry`: which keys exist and where they apply, `<key>FromEnv`, did-you-mean hints;
//! - `builtin`: the built-in signals, one table row each;
//! - `presets`: which metrics each serving engine exports (data; `builtin` reads it, never the
//!   other way);
//! - `parser`, `source`, `signals`: metadata to spec;
//! - `validate`: pure checks of one value.

mod builtin;
mod model;
mod parser;
pub mod presets;
mod registry;
mod signals;
mod source;
mod validate;

pub use builtin::{
    DEFAULT_GPU_UTIL_METRICS, DEFAULT_INFLIGHT_METRIC, DEFAULT_LATENCY_METRIC, DEFAULT_QUEUE_METRIC,
};
pub use model::{
    DeviceRef, DrainSpec, MemoryMetrics, MetricRef, MetricSource, NvmlSpec, ParseContext, PodMatch,
    PortRef, Problem, PrometheusSpec, ScalerSpec, ServiceSpec, SignalSpec, SourceSpec, SpecError,
};
pub use parser::{parse, parse_in};
pub use registry::{
    keys, DEFAULT_ACTIVATION, DEFAULT_MAX_REPLICAS, DEFAULT_METRIC_NAME, DEFAULT_NAMESPACE_LABEL,
    DEFAULT_POD_LABEL, DEFAULT_SERVICE_PATH, DELETION_COST_KEY, DRAIN_TIMEOUT_KEY, HPA_WINDOW_KEY,
    MAX_ENDPOINTS, OBJECTIVE_KEY, READINESS_GATE_KEY,
};
pub use validate::MIN_TARGET;
