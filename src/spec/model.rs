//! The spec's data model: what a parsed trigger is made of, and the error a bad one gets.

use std::fmt;

use super::validate::{is_label_name, is_prometheus_name};
use crate::score::{
    Activation, Capacity, DemandModel, ForecastConfig, Limits, ObjectiveConfig, ScorerConfig,
    SignalRule, Smoothing,
};

/// Where a ScaledObject's numbers come from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum SourceSpec {
    /// Each endpoint is one replica's Prometheus text exposition, fetched directly.
    Scrape { endpoints: Vec<String> },
    /// The endpoints of a Service, discovered from its EndpointSlices and scraped directly.
    Service(ServiceSpec),
    /// PromQL against a Prometheus server, batched with every other ScaledObject.
    Prometheus(PrometheusSpec),
    /// The GPUs of the node the scaler runs on, read through NVML.
    Nvml(NvmlSpec),
}

impl SourceSpec {
    /// The `source` metadata value.
    pub fn kind(&self) -> &'static str {
        match self {
            SourceSpec::Scrape { .. } | SourceSpec::Service(_) => "scrape",
            SourceSpec::Prometheus(_) => "prometheus",
            SourceSpec::Nvml(_) => "nvml",
        }
    }
}

/// `source=scrape` with `service`: a Service in the ScaledObject's own namespace, whose ready
/// endpoints are each one replica.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ServiceSpec {
    pub namespace: String,
    pub name: String,
    /// Which port of the endpoints serves the metrics; None: the Service's only port.
    pub port: Option<PortRef>,
    /// The metrics path, starting with '/'.
    pub path: String,
    /// `podDeletionCost`: rank the Service's pods by load in their deletion-cost annotation while
    /// a scale-down is expected, so the ReplicaSet removes the least busy (`crate::deletion`).
    pub deletion_cost: bool,
    /// `podReadinessGate`: take the pods to remove out of service through their readiness gate
    /// and let them finish before the scale-down (`crate::deletion::Drain`); None when off.
    pub drain: Option<DrainSpec>,
}

/// How `podReadinessGate` drains.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DrainSpec {
    /// `drainTimeoutSeconds`: the longest a pod out of service is waited for.
    pub timeout_s: u32,
    /// `scaleDownWindowSeconds`: the HPA's scale-down stabilisation window, which the drain's
    /// model of the HPA needs to take out only pods it will remove.
    pub hpa_window_s: u32,
}

/// A port by number, or by the name the Service gives it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PortRef {
    Number(u16),
    Name(String),
}

impl fmt::Display for PortRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortRef::Number(n) => write!(f, "{n}"),
            PortRef::Name(n) => f.write_str(n),
        }
    }
}

/// Which pods of a namespace belong to the scaled workload.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PodMatch {
    /// Pods of this Deployment's ReplicaSets: `<deployment>-<hash>-<suffix>`.
    Deployment(String),
    /// A regular expression the whole pod name must match.
    Selector(String),
}

impl PodMatch {
    /// An anchored regular expression (RE2/regex-crate syntax) for the pod name.
    pub fn pattern(&self) -> String {
        match self {
            PodMatch::Deployment(d) => {
                format!("^{}-[a-z0-9]+-[a-z0-9]+$", regex::escape(d))
            }
            PodMatch::Selector(s) => format!("^(?:{s})$"),
        }
    }
}

/// `source=prometheus`: where to query and which series belong to this ScaledObject.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PrometheusSpec {
    /// Base URL of the Prometheus HTTP API, such as `http://prometheus:9090`.
    pub address: String,
    pub namespace: String,
    pub pods: PodMatch,
    /// Label carrying the namespace (`exported_namespace` when Prometheus renamed it).
    pub namespace_label: String,
    /// Label carrying the pod name (`exported_pod` when Prometheus renamed it).
    pub pod_label: String,
}

/// A GPU named in `devices`: its index on the node or its UUID (`GPU-...`, `MIG-...`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum DeviceRef {
    Index(u32),
    Uuid(String),
}

/// `source=nvml`: which of the node's GPUs count.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct NvmlSpec {
    /// Devices to read; empty means every device (narrowed by `pods` when set).
    pub devices: Vec<DeviceRef>,
    /// Only devices running a process of these pods, where the driver reports the owner.
    pub pods: Option<(String, PodMatch)>,
}

/// What a parse knows besides the metadata: the ScaledObject's namespace and server defaults.
#[derive(Clone, Copy, Debug, Default)]
pub struct ParseContext<'a> {
    /// The ScaledObject's namespace; the default for `namespace`.
    pub namespace: &'a str,
    /// The server-wide Prometheus address (setting `prometheus.address`), if any.
    pub prometheus_address: Option<&'a str>,
    /// Where the server may fetch from, and what tenants may read; None only for offline
    /// checks that fetch nothing.
    pub egress: Option<&'a crate::egress::EgressPolicy>,
}

/// How GPU memory in use is turned into a percentage.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum MemoryMetrics {
    /// used / total x 100.
    UsedTotal { used: String, total: String },
    /// used / (used + free) x 100, as dcgm-exporter reports no total.
    UsedFree { used: String, free: String },
}

/// A metric name, optionally narrowed to series whose labels equal given values:
/// `vllm:num_requests_waiting` or `nv_trt_llm_request_metrics{request_type="active"}`. Engines
/// that export one family split by a label (Triton's TensorRT-LLM backend) need the second form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricRef {
    pub name: String,
    /// (label, value) pairs a series must carry, sorted.
    pub labels: Vec<(String, String)>,
}

impl MetricRef {
    /// Parses `name` or `name{label="value",...}` (at most 8 matchers; values without `"` or
    /// `\\`). None when it is neither.
    pub fn parse(text: &str) -> Option<MetricRef> {
        let (name, rest) = match text.split_once('{') {
            None => (text, None),
            Some((name, rest)) => (name, Some(rest.strip_suffix('}')?)),
        };
        if !is_prometheus_name(name) {
            return None;
        }
        let mut labels = Vec::new();
        for part in rest.iter().flat_map(|r| r.split(',')).map(str::trim) {
            if part.is_empty() {
                continue;
            }
            let (label, value) = part.split_once('=')?;
            let label = label.trim();
            let value = value.trim().strip_prefix('"')?.strip_suffix('"')?;
            if !is_label_name(label) || value.contains(['"', '\\']) || value.len() > 256 {
                return None;
            }
            labels.push((label.to_string(), value.to_string()));
        }
        if labels.len() > 8 {
            return None;
        }
        labels.sort();
        Some(MetricRef {
            name: name.to_string(),
            labels,
        })
    }

    /// True when a series with these labels belongs to this reference.
    pub fn matches<'a>(&self, mut label: impl FnMut(&str) -> Option<&'a str>) -> bool {
        self.labels
            .iter()
            .all(|(k, v)| label(k) == Some(v.as_str()))
    }
}

/// Which series carry a signal; the first alternative present in a scrape is used.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum MetricSource {
    /// Gauges summed per pod (queue, in-flight) or averaged per pod (utilisation). Each entry is
    /// a `MetricRef` in text form (a name, or a name with label matchers).
    Gauge(Vec<String>),
    Memory(Vec<MemoryMetrics>),
    /// Gauges holding a 0-1 fraction (KV-cache use), averaged per pod and read as percent.
    Fraction(Vec<String>),
    /// A classic histogram (base name, `_bucket` series); p95 over the latency window. The unit
    /// follows the name's suffix (`_ms`, `_us`, else seconds); see `histogram::unit_seconds`.
    Histogram(String),
    /// A full PromQL query from metadata (`source=prometheus` only), used as given.
    Query(String),
}

/// One signal of a ScaledObject.
#[derive(Clone, Debug, PartialEq)]
pub struct SignalSpec {
    /// `gpu_util`, `gpu_memory`, `queue`, `inflight`, `latency`, or an extra signal's name.
    pub name: String,
    pub model: DemandModel,
    pub target: f64,
    pub metrics: MetricSource,
    /// False for a signal SLO mode reads without a target of the user's (see `SignalRule`).
    pub asks: bool,
}

/// A validated trigger: where to read, what to read, and how to score it.
#[derive(Clone, Debug, PartialEq)]
pub struct ScalerSpec {
    pub source: SourceSpec,
    pub signals: Vec<SignalSpec>,
    pub smoothing: Smoothing,
    pub activation: Activation,
    pub limits: Limits,
    pub metric_name: String,
    /// Window over which latency histograms are differenced, seconds.
    pub latency_window_s: f64,
    /// Horizon over which the queue signal's backlog is drained, seconds.
    pub drain_s: f64,
    /// Seasonal pre-warm floor (off unless `forecastPeriodSeconds` is set).
    pub forecast: Option<ForecastConfig>,
    /// SLO mode (`ttftObjectiveMs`): capacity sized from the objective; None is target mode.
    pub objective: Option<ObjectiveConfig>,
}

impl ScalerSpec {
    pub fn scorer_config(&self) -> ScorerConfig {
        ScorerConfig {
            signals: self
                .signals
                .iter()
                .map(|s| SignalRule {
                    name: s.name.clone(),
                    model: s.model,
                    target: s.target,
                    asks: s.asks,
                })
                .collect(),
            smoothing: self.smoothing,
            activation: self.activation,
            limits: self.limits,
            capacity: Capacity {
                // The in-flight target is the concurrency one replica is sized for.
                concurrency_per_replica: self
                    .signals
                    .iter()
                    .find(|s| s.asks && s.name == crate::score::composite::INFLIGHT)
                    .map(|s| s.target),
                drain_s: self.drain_s,
                // The sources compute completion rates over the latency window.
                service_window_s: self.latency_window_s,
            },
            forecast: self.forecast,
            objective: self.objective,
        }
    }
}

/// One thing wrong with the metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

/// All problems found in one metadata map.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct SpecError {
    pub problems: Vec<Problem>,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            // Messages quote tenants' values: bounded and without control characters.
            write!(
                f,
                "{}: {}",
                crate::text::bounded(&p.key, 100),
                crate::text::bounded(&p.message, 300)
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::in_ns;

    #[test]
    fn metric_references_take_equality_matchers_and_nothing_else() {
        let m =
            MetricRef::parse("nv_trt_llm_request_metrics{request_type=\"active\", model = \"x\"}")
                .unwrap();
        assert_eq!(m.name, "nv_trt_llm_request_metrics");
        assert_eq!(
            m.labels,
            [
                ("model".to_string(), "x".to_string()),
                ("request_type".to_string(), "active".to_string())
            ]
        );
        assert!(m.matches(|k| match k {
            "model" => Some("x"),
            "request_type" => Some("active"),
            _ => None,
        }));
        assert!(!m.matches(|k| (k == "model").then_some("x")));
        assert_eq!(MetricRef::parse("up").unwrap().labels, []);
        for bad in [
            "up{a=~\"x\"}",
            "up{a!=\"x\"}",
            "up{a=\"x\\\"} or vector(1) #\"}",
            "up{a=x}",
            "up{1a=\"x\"}",
            "up{a=\"x\"",
            "up}",
            "{a=\"x\"}",
            "up{a=\"1\",b=\"2\",c=\"3\",d=\"4\",e=\"5\",f=\"6\",g=\"7\",h=\"8\",i=\"9\"}",
        ] {
            assert_eq!(MetricRef::parse(bad), None, "{bad}");
        }
        let spec = in_ns(&[
            ("service", "llm"),
            ("queueTarget", "4"),
            (
                "queueMetric",
                "vllm:num_requests_waiting{model_name=\"llama\"}",
            ),
        ])
        .unwrap();
        assert_eq!(
            spec.signals[0].metrics,
            MetricSource::Gauge(vec![
                "vllm:num_requests_waiting{model_name=\"llama\"}".into()
            ])
        );
        let err = in_ns(&[
            ("service", "llm"),
            ("queueTarget", "4"),
            ("queueMetric", "q{a=~\".*\"}"),
        ])
        .unwrap_err();
        assert_eq!(err.problems.len(), 1, "{err}");
        assert!(err.to_string().contains("queueMetric: 'q{a=~\".*\"}' is not a Prometheus metric name, optionally with label matchers"), "{err}");
    }
}
