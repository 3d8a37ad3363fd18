//! ScalerSpec: a trigger's `scalerMetadata` turned into a typed, validated spec.
//!
//! This is the only place metadata is parsed. Every problem is collected and reported at once,
//! naming the key and what it accepts, so one `kubectl describe` shows everything to fix.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use crate::presets::{self, Preset};
use crate::score::{
    Activation, Capacity, DemandModel, ForecastConfig, Limits, ScorerConfig, SignalRule, Smoothing,
};

/// Keys KEDA itself puts in the metadata map (connection and TLS settings); accepted and ignored.
const KEDA_KEYS: &[&str] = &[
    "scalerAddress",
    "enableTLS",
    "unsafeSsl",
    "caCert",
    "tlsClientCert",
    "tlsClientKey",
];

/// Keys this scaler reads, besides `extra.<name>.<field>`.
const KEYS: &[&str] = &[
    "source",
    "endpoints",
    "gpuUtilTarget",
    "gpuMemoryTarget",
    "queueTarget",
    "inflightTarget",
    "latencyTargetMs",
    "gpuUtilMetric",
    "gpuMemoryUsedMetric",
    "gpuMemoryTotalMetric",
    "gpuMemoryFreeMetric",
    "queueMetric",
    "inflightMetric",
    "latencyMetric",
    "latencyWindowSeconds",
    "drainSeconds",
    "forecastPeriodSeconds",
    "forecastLeadSeconds",
    "upHalfLifeSeconds",
    "downHalfLifeSeconds",
    "panicThreshold",
    "activationThreshold",
    "deactivationThreshold",
    "minReplicas",
    "maxReplicas",
    "metricName",
    "prometheusAddress",
    "namespace",
    "deployment",
    "podSelector",
    "namespaceLabel",
    "podLabel",
    "gpuUtilQuery",
    "gpuMemoryQuery",
    "queueQuery",
    "inflightQuery",
    "latencyQuery",
    "devices",
    "service",
    "port",
    "path",
    "preset",
    "kvCacheTarget",
    "kvCacheMetric",
    "kvCacheQuery",
];

/// Keys that only mean something with one source, and the source they need.
const SOURCE_KEYS: &[(&str, &[&str])] = &[
    ("endpoints", &["scrape"]),
    ("prometheusAddress", &["prometheus"]),
    ("namespaceLabel", &["prometheus"]),
    ("podLabel", &["prometheus"]),
    ("gpuUtilQuery", &["prometheus"]),
    ("gpuMemoryQuery", &["prometheus"]),
    ("queueQuery", &["prometheus"]),
    ("inflightQuery", &["prometheus"]),
    ("latencyQuery", &["prometheus"]),
    ("namespace", &["prometheus", "nvml"]),
    ("deployment", &["prometheus", "nvml"]),
    ("podSelector", &["prometheus", "nvml"]),
    ("devices", &["nvml"]),
    ("service", &["scrape"]),
    ("port", &["scrape"]),
    ("path", &["scrape"]),
    ("kvCacheQuery", &["prometheus"]),
    ("preset", &["scrape", "prometheus"]),
];

const EXTRA_FIELDS: &[&str] = &["metric", "query", "target", "kind"];

pub const DEFAULT_METRIC_NAME: &str = "gpu-composite";
pub const DEFAULT_GPU_UTIL_METRICS: &[&str] = &[
    "workload_accelerator_utilization_percent",
    "DCGM_FI_DEV_GPU_UTIL",
];
pub const DEFAULT_QUEUE_METRIC: &str = "workload_queue_length";
pub const DEFAULT_INFLIGHT_METRIC: &str = "workload_inflight_requests";
/// Queue wait, not request duration: the latency signal must read a latency more replicas can
/// lower (a long request stays long on an idle replica; its wait for a slot does not).
pub const DEFAULT_LATENCY_METRIC: &str = "workload_queue_wait_seconds";
pub const MAX_ENDPOINTS: usize = 1000;
pub const DEFAULT_SERVICE_PATH: &str = "/metrics";
/// Longest full PromQL query accepted in metadata.
const MAX_QUERY_LEN: usize = 8192;
pub const DEFAULT_NAMESPACE_LABEL: &str = "namespace";
pub const DEFAULT_POD_LABEL: &str = "pod";

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
            let label_ok = label.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && label.len() <= 128;
            if !label_ok || value.contains(['"', '\\']) || value.len() > 256 {
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
                    .find(|s| s.name == crate::score::composite::INFLIGHT)
                    .map(|s| s.target),
                drain_s: self.drain_s,
                // The sources compute completion rates over the latency window.
                service_window_s: self.latency_window_s,
            },
            forecast: self.forecast,
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

/// Parses and validates a trigger's metadata map, with no namespace and no server defaults.
pub fn parse(metadata: &HashMap<String, String>) -> Result<ScalerSpec, SpecError> {
    parse_in(ParseContext::default(), metadata)
}

/// Parses and validates a trigger's metadata map for a ScaledObject in `ctx.namespace`.
pub fn parse_in(
    ctx: ParseContext<'_>,
    metadata: &HashMap<String, String>,
) -> Result<ScalerSpec, SpecError> {
    Parser::new(ctx, metadata).run()
}

struct Parser<'a> {
    ctx: ParseContext<'a>,
    values: BTreeMap<String, &'a str>,
    problems: Vec<Problem>,
    /// The `source` value, once read ("scrape" when absent).
    kind: &'a str,
}

impl<'a> Parser<'a> {
    fn new(ctx: ParseContext<'a>, metadata: &'a HashMap<String, String>) -> Self {
        let mut problems = Vec::new();
        let mut values = BTreeMap::new();
        // KEDA passes `<key>FromEnv` with the value already resolved from the workload's env.
        let mut keys: Vec<&String> = metadata.keys().collect();
        keys.sort();
        for key in keys {
            let value = metadata[key].as_str();
            let base = key.strip_suffix("FromEnv").unwrap_or(key);
            if KEDA_KEYS.contains(&base) {
                continue;
            }
            if !is_known(base) {
                problems.push(Problem {
                    key: key.clone(),
                    message: unknown_key_message(base),
                });
                continue;
            }
            if values.insert(base.to_string(), value).is_some() {
                problems.push(Problem {
                    key: key.clone(),
                    message: format!("set both as '{base}' and '{base}FromEnv'; keep one"),
                });
            }
        }
        let kind = values.get("source").map_or("scrape", |v| v.trim());
        Parser {
            ctx,
            values,
            problems,
            kind,
        }
    }

    fn problem(&mut self, key: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            key: key.to_string(),
            message: message.into(),
        });
    }

    fn text(&self, key: &str) -> Option<&'a str> {
        self.values.get(key).map(|v| v.trim())
    }

    /// A finite number within [min, max]; None when absent or invalid (invalid is recorded).
    fn number(&mut self, key: &str, min: f64, max: f64, accepted: &str) -> Option<f64> {
        let raw = self.text(key)?;
        match raw.parse::<f64>() {
            Ok(v) if v.is_finite() && v >= min && v <= max => Some(v),
            _ => {
                self.problem(key, format!("'{raw}' is not accepted; expected {accepted}"));
                None
            }
        }
    }

    fn positive(&mut self, key: &str, max: f64, unit: &str) -> Option<f64> {
        let accepted = format!("a number >= {MIN_TARGET} and <= {max}{unit}");
        let v = self.number(key, 0.0, max, &accepted)?;
        // A tiny target turns any reading into an infinite demand.
        if v < MIN_TARGET {
            self.problem(key, format!("'{v}' is not accepted; expected {accepted}"));
            return None;
        }
        Some(v)
    }

    /// The egress policy's verdict on a URL from `key`, recorded as a problem when refused.
    fn egress_allows(&mut self, key: &str, url: &reqwest::Url, shown: &str) -> bool {
        let Some(policy) = self.ctx.egress else {
            return true;
        };
        match policy.check_url(url) {
            Ok(()) => true,
            Err(why) => {
                let shown = redact(shown);
                self.problem(key, format!("'{shown}' {why}"));
                false
            }
        }
    }

    fn replicas(&mut self, key: &str) -> Option<u32> {
        let raw = self.text(key)?;
        match raw.parse::<u32>() {
            Ok(v) if v <= 100_000 => Some(v),
            _ => {
                self.problem(
                    key,
                    format!("'{raw}' is not accepted; expected a whole number 0..=100000"),
                );
                None
            }
        }
    }

    fn metric_name(&mut self, key: &str) -> Option<String> {
        let raw = self.text(key)?;
        if is_prometheus_name(raw) {
            Some(raw.to_string())
        } else {
            self.problem(
                key,
                format!(
                    "'{raw}' is not a Prometheus metric name; expected [a-zA-Z_:][a-zA-Z0-9_:]*"
                ),
            );
            None
        }
    }

    fn run(mut self) -> Result<ScalerSpec, SpecError> {
        let source = self.source();
        let signals = self.signals();
        let smoothing = self.smoothing();
        let (activation, limits) = self.activation_and_limits();
        let metric_name = self
            .text("metricName")
            .unwrap_or(DEFAULT_METRIC_NAME)
            .to_string();
        if !is_kubernetes_metric_name(&metric_name) {
            self.problem(
                "metricName",
                format!(
                    "'{metric_name}' is not accepted; expected 1-63 characters of a-z, 0-9, '-' or '.', starting and ending with a letter or digit"
                ),
            );
        }
        let latency_window_s = self
            .number(
                "latencyWindowSeconds",
                1.0,
                3600.0,
                "seconds between 1 and 3600",
            )
            .unwrap_or(60.0);
        let drain_s = self
            .number("drainSeconds", 1.0, 86_400.0, "seconds between 1 and 86400")
            .unwrap_or(Capacity::default().drain_s);
        let forecast_period = self.number(
            "forecastPeriodSeconds",
            60.0,
            8.0 * 86_400.0,
            "seconds between 60 and 691200 (a season: 86400 for a day, 604800 for a week)",
        );
        let forecast_lead = self.number(
            "forecastLeadSeconds",
            0.0,
            3600.0,
            "seconds between 0 and 3600",
        );
        if forecast_lead.is_some() && forecast_period.is_none() {
            self.problem(
                "forecastLeadSeconds",
                "only means something with forecastPeriodSeconds, which turns the seasonal floor on",
            );
        }
        let forecast = forecast_period.map(|period_s| ForecastConfig {
            period_s,
            // About two replica starts: capacity for a recurring peak is ready when it comes.
            lead_s: forecast_lead.unwrap_or(120.0),
        });
        if !self.problems.is_empty() {
            return Err(SpecError {
                problems: self.problems,
            });
        }
        Ok(ScalerSpec {
            source: source.expect("source is set when no problem was recorded"),
            signals,
            smoothing,
            activation,
            limits,
            metric_name,
            latency_window_s,
            drain_s,
            forecast,
        })
    }

    fn source(&mut self) -> Option<SourceSpec> {
        let kind = self.kind;
        if !matches!(kind, "scrape" | "prometheus" | "nvml") {
            self.problem(
                "source",
                format!("'{kind}' is not accepted; expected scrape, prometheus or nvml"),
            );
            return None;
        }
        for (key, sources) in SOURCE_KEYS {
            if self.values.contains_key(*key) && !sources.contains(&kind) {
                self.problem(
                    key,
                    format!(
                        "applies only to source={}; this trigger has source={kind}",
                        sources.join(" or source=")
                    ),
                );
            }
        }
        match kind {
            "prometheus" => self.prometheus_source(),
            "nvml" => self.nvml_source(),
            _ => self.scrape_source(),
        }
    }

    fn scrape_source(&mut self) -> Option<SourceSpec> {
        if self.values.contains_key("service") {
            if self.values.contains_key("endpoints") {
                self.problem(
                    "endpoints",
                    "set either service (discovered pods) or endpoints (fixed URLs), not both",
                );
                return None;
            }
            return self.service_source();
        }
        for key in ["port", "path"] {
            if self.values.contains_key(key) {
                self.problem(
                    key,
                    "applies only with service: the Service whose pods are scraped",
                );
            }
        }
        let Some(raw) = self.text("endpoints") else {
            self.problem(
                "endpoints",
                "required with source=scrape: service (a Service whose pods are scraped) or endpoints (comma-separated http(s) URLs of each replica's /metrics)",
            );
            return None;
        };
        let mut endpoints = Vec::new();
        for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match reqwest::Url::parse(part) {
                Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {
                    if !self.egress_allows("endpoints", &url, part) {
                        return None;
                    }
                    endpoints.push(url.to_string())
                }
                _ => {
                    self.problem(
                        "endpoints",
                        format!(
                            "'{}' is not an http(s) URL like http://10.0.0.7:8000/metrics",
                            redact(part)
                        ),
                    );
                    return None;
                }
            }
        }
        if endpoints.is_empty() {
            self.problem("endpoints", "is empty; expected at least one http(s) URL");
            return None;
        }
        if endpoints.len() > MAX_ENDPOINTS {
            self.problem(
                "endpoints",
                format!(
                    "{} URLs given; at most {MAX_ENDPOINTS} are accepted",
                    endpoints.len()
                ),
            );
            return None;
        }
        endpoints.sort();
        endpoints.dedup();
        Some(SourceSpec::Scrape { endpoints })
    }

    /// `service`, `port` and `path`: a Service in the ScaledObject's namespace, never another.
    fn service_source(&mut self) -> Option<SourceSpec> {
        let name = self.text("service").unwrap_or_default();
        let name_ok = is_dns_label(name) && name.starts_with(|c: char| c.is_ascii_lowercase());
        if !name_ok {
            self.problem(
                "service",
                format!("'{name}' is not a Service name; expected 1-63 characters of a-z, 0-9 or '-', starting with a letter (a Service in the ScaledObject's namespace)"),
            );
        }
        let port = match self.text("port") {
            None => Some(None),
            Some(raw) => match raw.parse::<u16>() {
                Ok(n) if n > 0 => Some(Some(PortRef::Number(n))),
                _ if is_dns_label(raw)
                    && raw.len() <= 15
                    && raw.chars().any(|c| c.is_ascii_lowercase()) =>
                {
                    Some(Some(PortRef::Name(raw.to_string())))
                }
                _ => {
                    self.problem(
                        "port",
                        format!("'{raw}' is not accepted; expected a port number 1-65535 or a Service port name such as http or metrics"),
                    );
                    None
                }
            },
        };
        let path = self.text("path").unwrap_or(DEFAULT_SERVICE_PATH);
        let path_ok = path.starts_with('/')
            && path.len() <= 256
            && path
                .chars()
                .all(|c| c.is_ascii_graphic() && c != '#' && c != '\\');
        if !path_ok {
            self.problem(
                "path",
                format!("'{path}' is not accepted; expected a URL path starting with '/', such as /metrics (printable ASCII, up to 256 characters)"),
            );
        }
        let namespace = match self.ctx.namespace {
            "" => "default",
            ns => ns,
        };
        // The namespace becomes part of an API path: only a real namespace name goes there.
        let namespace_ok = is_dns_label(namespace);
        if !namespace_ok {
            self.problem(
                "service",
                format!("the ScaledObject's namespace '{namespace}' is not a Kubernetes namespace name (a-z, 0-9, '-', up to 63 characters)"),
            );
        }
        (name_ok && path_ok && namespace_ok).then_some(())?;
        Some(SourceSpec::Service(ServiceSpec {
            namespace: namespace.to_string(),
            name: name.to_string(),
            port: port?,
            path: path.to_string(),
        }))
    }

    fn prometheus_source(&mut self) -> Option<SourceSpec> {
        let address = match self
            .text("prometheusAddress")
            .or(self.ctx.prometheus_address)
        {
            None => {
                self.problem(
                    "prometheusAddress",
                    "required with source=prometheus because the scaler has no default (setting prometheus.address): an http(s) URL such as http://prometheus-operated.monitoring.svc:9090",
                );
                None
            }
            Some(raw) => match reqwest::Url::parse(raw) {
                Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {
                    let address = url.to_string().trim_end_matches('/').to_string();
                    let listed = match self.ctx.egress {
                        Some(policy) if self.values.contains_key("prometheusAddress") => {
                            policy.check_prometheus(&address, self.ctx.prometheus_address)
                        }
                        _ => Ok(()),
                    };
                    if let Err(why) = listed {
                        self.problem("prometheusAddress", format!("'{}' {why}", redact(raw)));
                        None
                    } else if self.egress_allows("prometheusAddress", &url, raw) {
                        Some(address)
                    } else {
                        None
                    }
                }
                _ => {
                    self.problem(
                        "prometheusAddress",
                        format!(
                            "'{}' is not an http(s) URL like http://prometheus:9090",
                            redact(raw)
                        ),
                    );
                    None
                }
            },
        };
        let namespace = self.namespace();
        let pods = self.pod_match(true);
        let namespace_label = self
            .label_name("namespaceLabel")
            .unwrap_or(DEFAULT_NAMESPACE_LABEL.into());
        let pod_label = self
            .label_name("podLabel")
            .unwrap_or(DEFAULT_POD_LABEL.into());
        Some(SourceSpec::Prometheus(PrometheusSpec {
            address: address?,
            namespace: namespace?,
            pods: pods?,
            namespace_label,
            pod_label,
        }))
    }

    fn nvml_source(&mut self) -> Option<SourceSpec> {
        let mut devices = Vec::new();
        if let Some(raw) = self.text("devices") {
            for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                if let Ok(i) = part.parse::<u32>() {
                    devices.push(DeviceRef::Index(i));
                } else if (part.starts_with("GPU-") || part.starts_with("MIG-"))
                    && part.len() <= 128
                    && part[4..]
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '/')
                {
                    devices.push(DeviceRef::Uuid(part.to_string()));
                } else {
                    self.problem(
                        "devices",
                        format!("'{part}' is not accepted; expected device indices (0,1) or UUIDs (GPU-..., MIG-...) separated by commas"),
                    );
                    return None;
                }
            }
            if devices.is_empty() {
                self.problem("devices", "is empty; expected device indices or UUIDs");
                return None;
            }
        }
        let pods = if self.text("deployment").is_some() || self.text("podSelector").is_some() {
            let namespace = self.namespace();
            let pods = self.pod_match(false);
            Some((namespace?, pods?))
        } else {
            None
        };
        Some(SourceSpec::Nvml(NvmlSpec { devices, pods }))
    }

    /// `namespace`, else the ScaledObject's own namespace.
    fn namespace(&mut self) -> Option<String> {
        let ns = self
            .text("namespace")
            .unwrap_or(self.ctx.namespace)
            .to_string();
        if ns.is_empty() {
            self.problem(
                "namespace",
                "required: the namespace of the pods (defaults to the ScaledObject's namespace, which was not given)",
            );
            return None;
        }
        if ns.len() > 253 || ns.chars().any(char::is_control) {
            self.problem(
                "namespace",
                "is not accepted; expected a Kubernetes namespace name",
            );
            return None;
        }
        let own = self.ctx.namespace;
        if let Some(policy) = self.ctx.egress {
            if !policy.allow_cross_namespace && !own.is_empty() && ns != own {
                self.problem(
                    "namespace",
                    format!("'{ns}' is another namespace; a ScaledObject reads only its own namespace ('{own}') unless the operator allows cross-namespace reads (setting egress.allow_cross_namespace)"),
                );
                return None;
            }
        }
        // Not restricted further on purpose: it is escaped wherever it enters a query.
        Some(ns)
    }

    fn pod_match(&mut self, required: bool) -> Option<PodMatch> {
        match (self.text("deployment"), self.text("podSelector")) {
            (Some(_), Some(_)) => {
                self.problem(
                    "podSelector",
                    "set either deployment or podSelector, not both",
                );
                None
            }
            (Some(d), None) => {
                if is_dns_subdomain(d) {
                    Some(PodMatch::Deployment(d.to_string()))
                } else {
                    self.problem(
                        "deployment",
                        format!("'{d}' is not a Deployment name; expected lower-case a-z, 0-9, '-' or '.', up to 253 characters"),
                    );
                    None
                }
            }
            (None, Some(s)) => {
                let m = PodMatch::Selector(s.to_string());
                if s.len() > 1024 || regex::Regex::new(&m.pattern()).is_err() {
                    self.problem(
                        "podSelector",
                        format!("'{s}' is not accepted; expected a regular expression (RE2 syntax) for pod names, such as llm-server-.+"),
                    );
                    return None;
                }
                Some(m)
            }
            (None, None) => {
                if required {
                    self.problem(
                        "deployment",
                        "required with source=prometheus: the Deployment whose pods are read (or podSelector, a pod name regex)",
                    );
                }
                None
            }
        }
    }

    fn label_name(&mut self, key: &str) -> Option<String> {
        let raw = self.text(key)?;
        let mut chars = raw.chars();
        let ok = matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
            && raw.len() <= 128;
        if ok {
            Some(raw.to_string())
        } else {
            self.problem(
                key,
                format!("'{raw}' is not a Prometheus label name; expected [a-zA-Z_][a-zA-Z0-9_]*, such as exported_pod"),
            );
            None
        }
    }

    /// A full PromQL override, when given.
    fn query(&mut self, key: &str) -> Option<String> {
        let raw = self.text(key)?;
        if self.ctx.egress.is_some_and(|p| !p.allow_custom_queries) {
            self.problem(
                key,
                "full PromQL from metadata can read any namespace's series, so the operator has not allowed it (setting egress.allow_custom_queries); use the built-in signals with deployment or podSelector",
            );
            return None;
        }
        if raw.is_empty() || raw.len() > MAX_QUERY_LEN || raw.chars().any(|c| c == '\0') {
            self.problem(
                key,
                format!(
                    "is not accepted; expected a PromQL query of 1 to {MAX_QUERY_LEN} characters"
                ),
            );
            return None;
        }
        Some(raw.to_string())
    }

    fn signals(&mut self) -> Vec<SignalSpec> {
        let mut signals = Vec::new();
        let gpu_util_metrics = match self.metric_name("gpuUtilMetric") {
            Some(m) => vec![m],
            None => DEFAULT_GPU_UTIL_METRICS
                .iter()
                .map(|s| s.to_string())
                .collect(),
        };
        let gpu_util_metrics = self
            .query("gpuUtilQuery")
            .map_or(MetricSource::Gauge(gpu_util_metrics), MetricSource::Query);
        if let Some(target) = self.positive("gpuUtilTarget", 100.0, " (percent)") {
            signals.push(SignalSpec {
                name: "gpu_util".into(),
                model: DemandModel::Utilisation,
                target,
                metrics: gpu_util_metrics,
            });
        }
        let memory = MetricSource::Memory(self.memory_metrics());
        let memory = self
            .query("gpuMemoryQuery")
            .map_or(memory, MetricSource::Query);
        if let Some(target) = self.positive("gpuMemoryTarget", 100.0, " (percent)") {
            signals.push(SignalSpec {
                name: "gpu_memory".into(),
                model: DemandModel::Utilisation,
                target,
                metrics: memory,
            });
        }
        if self.kind == "nvml" {
            for key in [
                "queueTarget",
                "inflightTarget",
                "latencyTargetMs",
                "kvCacheTarget",
            ] {
                if self.values.contains_key(key) {
                    self.problem(key, "source=nvml reads only GPUs: use gpuUtilTarget and gpuMemoryTarget, or source=prometheus for application metrics");
                }
            }
        }
        let preset = self.preset();
        let defaults = preset.unwrap_or(Preset::GpuWorkload).metrics();
        let queue = self.gauge_metrics("queueMetric", defaults.queue);
        let queue = self
            .query("queueQuery")
            .map_or(MetricSource::Gauge(queue), MetricSource::Query);
        if let Some(target) = self.positive("queueTarget", 1e9, " (waiting requests per replica)") {
            signals.push(SignalSpec {
                name: "queue".into(),
                model: DemandModel::Backlog,
                target,
                metrics: queue,
            });
        }
        let inflight = self.gauge_metrics("inflightMetric", defaults.inflight);
        let inflight = self
            .query("inflightQuery")
            .map_or(MetricSource::Gauge(inflight), MetricSource::Query);
        if let Some(target) =
            self.positive("inflightTarget", 1e9, " (requests in service per replica)")
        {
            signals.push(SignalSpec {
                name: "inflight".into(),
                model: DemandModel::Quantity,
                target,
                metrics: inflight,
            });
        }
        let kv_cache = self.gauge_metrics("kvCacheMetric", defaults.kv_cache);
        let kv_cache = self
            .query("kvCacheQuery")
            .map_or(MetricSource::Fraction(kv_cache), MetricSource::Query);
        if let Some(target) =
            self.positive("kvCacheTarget", 100.0, " (percent of the KV cache in use)")
        {
            let bad_metric = self.problems.iter().any(|p| p.key == "kvCacheMetric");
            if matches!(&kv_cache, MetricSource::Fraction(m) if m.is_empty()) && !bad_metric {
                let why = match preset {
                    Some(p) => format!(
                        "preset {} sets no KV-cache metric: {}",
                        p.name(),
                        p.metrics().kv_cache_missing
                    ),
                    None => "no preset is set".into(),
                };
                self.problem(
                    "kvCacheTarget",
                    format!("{why}; set preset (vllm or sglang) or kvCacheMetric, a gauge of the 0-1 fraction in use"),
                );
            }
            signals.push(SignalSpec {
                name: "kv_cache".into(),
                model: DemandModel::Utilisation,
                target,
                metrics: kv_cache,
            });
        }
        let latency = self
            .metric_name("latencyMetric")
            .or(defaults.latency.map(String::from))
            .unwrap_or(DEFAULT_LATENCY_METRIC.into());
        let latency = self
            .query("latencyQuery")
            .map_or(MetricSource::Histogram(latency), MetricSource::Query);
        let latency_target = self.positive("latencyTargetMs", 3_600_000.0, " (milliseconds)");
        signals.extend(self.extras());
        if let Some(ms) = latency_target {
            if signals.is_empty() {
                self.problem(
                    "latencyTargetMs",
                    "latency only pushes capacity up, so it cannot be the only signal; add gpuUtilTarget, gpuMemoryTarget, queueTarget, inflightTarget, kvCacheTarget or an extra signal",
                );
            }
            signals.push(SignalSpec {
                name: "latency".into(),
                model: DemandModel::Latency,
                target: ms / 1000.0,
                metrics: latency,
            });
        }
        let any_target_problem = self
            .problems
            .iter()
            .any(|p| p.key.ends_with("Target") || p.key.ends_with("TargetMs"));
        if signals.is_empty() && !any_target_problem {
            self.problem(
                "gpuUtilTarget",
                "no signal has a target; set at least one of gpuUtilTarget, gpuMemoryTarget, queueTarget, inflightTarget, kvCacheTarget, latencyTargetMs or extra.<name>.target",
            );
        }
        signals
    }

    /// `preset`, when set and known.
    fn preset(&mut self) -> Option<Preset> {
        let raw = self.text("preset")?;
        let preset = Preset::parse(raw);
        if preset.is_none() {
            self.problem(
                "preset",
                format!("'{raw}' is not accepted; expected {}", presets::NAMES),
            );
        }
        preset
    }

    /// The metric named by `key` (a name, or a name with label matchers), else the preset's (or
    /// built-in) alternatives.
    fn gauge_metrics(&mut self, key: &str, defaults: &[&str]) -> Vec<String> {
        let Some(raw) = self.text(key) else {
            return defaults.iter().map(|m| m.to_string()).collect();
        };
        if MetricRef::parse(raw).is_some() {
            return vec![raw.to_string()];
        }
        self.problem(
            key,
            format!("'{raw}' is not a Prometheus metric name, optionally with label matchers; expected a name such as vllm:num_requests_waiting or name{{label=\"value\"}}"),
        );
        Vec::new()
    }

    fn memory_metrics(&mut self) -> Vec<MemoryMetrics> {
        let used = self.metric_name("gpuMemoryUsedMetric");
        let total = self.metric_name("gpuMemoryTotalMetric");
        let free = self.metric_name("gpuMemoryFreeMetric");
        match (used, total, free) {
            (None, None, None) => vec![
                MemoryMetrics::UsedTotal {
                    used: "workload_accelerator_memory_used_bytes".into(),
                    total: "workload_accelerator_memory_total_bytes".into(),
                },
                MemoryMetrics::UsedFree {
                    used: "DCGM_FI_DEV_FB_USED".into(),
                    free: "DCGM_FI_DEV_FB_FREE".into(),
                },
            ],
            (Some(used), Some(total), None) => vec![MemoryMetrics::UsedTotal { used, total }],
            (Some(used), None, Some(free)) => vec![MemoryMetrics::UsedFree { used, free }],
            _ => {
                if self.text("gpuMemoryUsedMetric").is_some()
                    || self.text("gpuMemoryTotalMetric").is_some()
                    || self.text("gpuMemoryFreeMetric").is_some()
                {
                    self.problem(
                        "gpuMemoryUsedMetric",
                        "set gpuMemoryUsedMetric together with exactly one of gpuMemoryTotalMetric or gpuMemoryFreeMetric",
                    );
                }
                Vec::new()
            }
        }
    }

    fn extras(&mut self) -> Vec<SignalSpec> {
        let names: Vec<String> = {
            let mut n: Vec<String> = self
                .values
                .keys()
                .filter_map(|k| k.strip_prefix("extra."))
                .filter_map(|rest| rest.rsplit_once('.').map(|(name, _)| name.to_string()))
                .collect();
            n.dedup();
            n
        };
        let mut out = Vec::new();
        for name in names {
            let key = |field: &str| format!("extra.{name}.{field}");
            if !is_extra_name(&name) || BUILTIN_SIGNALS.contains(&name.as_str()) {
                self.problem(
                    &key("target"),
                    format!("extra signal name '{name}' is not accepted; expected 1-32 characters of a-z, 0-9 or '_', not one of {}", BUILTIN_SIGNALS.join(", ")),
                );
                continue;
            }
            let metric = self
                .metric_name(&key("metric"))
                .map(|m| MetricSource::Gauge(vec![m]));
            let query = self.query(&key("query")).map(MetricSource::Query);
            let target = self.positive(&key("target"), 1e12, "");
            let model = match self.text(&key("kind")) {
                Some("utilisation") | Some("utilization") => Some(DemandModel::Utilisation),
                Some("quantity") => Some(DemandModel::Quantity),
                Some(other) => {
                    self.problem(
                        &key("kind"),
                        format!("'{other}' is not accepted; expected utilisation or quantity"),
                    );
                    None
                }
                None => {
                    self.problem(&key("kind"), "required: utilisation (per-pod percentage) or quantity (a count shared by the replicas)");
                    None
                }
            };
            if self.kind == "nvml" {
                self.problem(
                    &key("target"),
                    "extra signals need source=scrape or source=prometheus; source=nvml reads only GPUs",
                );
            }
            let has_metric = self.text(&key("metric")).is_some();
            let has_query = self.text(&key("query")).is_some();
            match (has_metric, has_query) {
                (true, true) => self.problem(
                    &key("query"),
                    "set either extra.<name>.metric or extra.<name>.query, not both",
                ),
                (false, true) if self.kind != "prometheus" => self.problem(
                    &key("query"),
                    "applies only to source=prometheus; with source=scrape use extra.<name>.metric",
                ),
                (false, false) if self.kind == "prometheus" => self.problem(
                    &key("query"),
                    "required: a PromQL query returning one series per pod (or extra.<name>.metric, a metric name)",
                ),
                (false, false) => self.problem(
                    &key("metric"),
                    "required for source=scrape: the Prometheus metric name to read",
                ),
                _ => {}
            }
            let metric = metric.or(query);
            if self.text(&key("target")).is_none() {
                self.problem(&key("target"), "required: the value per replica (quantity) or per-pod percentage (utilisation)");
            }
            if let (Some(metric), Some(target), Some(model)) = (metric, target, model) {
                out.push(SignalSpec {
                    name,
                    model,
                    target,
                    metrics: metric,
                });
            }
        }
        out
    }

    fn smoothing(&mut self) -> Smoothing {
        let d = Smoothing::default();
        let day = 86_400.0;
        let up = self.number("upHalfLifeSeconds", 0.0, day, "seconds between 0 and 86400");
        let down = self.number(
            "downHalfLifeSeconds",
            0.0,
            day,
            "seconds between 0 and 86400",
        );
        let panic = self.number(
            "panicThreshold",
            0.0,
            1000.0,
            "0 (off) or a factor > 1, e.g. 2",
        );
        let panic = match panic {
            Some(p) if p > 0.0 && p <= 1.0 => {
                self.problem(
                    "panicThreshold",
                    format!("'{p}' is not accepted; expected 0 (off) or a factor > 1, e.g. 2"),
                );
                d.panic_threshold
            }
            Some(p) => p,
            None => d.panic_threshold,
        };
        Smoothing {
            up_half_life_s: up.unwrap_or(d.up_half_life_s),
            down_half_life_s: down.unwrap_or(d.down_half_life_s),
            panic_threshold: panic,
        }
    }

    fn activation_and_limits(&mut self) -> (Activation, Limits) {
        let on = self
            .number(
                "activationThreshold",
                0.0,
                1e6,
                "a demand in replicas >= 0, e.g. 0.1",
            )
            .unwrap_or(DEFAULT_ACTIVATION);
        let off = match self.number(
            "deactivationThreshold",
            0.0,
            1e6,
            "a demand in replicas >= 0",
        ) {
            Some(off) if off > on => {
                self.problem(
                    "deactivationThreshold",
                    format!("'{off}' is above activationThreshold {on}; it must be <= it (the gap is the hysteresis band)"),
                );
                on
            }
            Some(off) => off,
            None => on / 2.0,
        };
        let min = self.replicas("minReplicas").unwrap_or(0);
        let max = self.replicas("maxReplicas").unwrap_or(DEFAULT_MAX_REPLICAS);
        if max == 0 {
            self.problem(
                "maxReplicas",
                "'0' is not accepted; expected a whole number >= 1",
            );
        } else if min > max {
            self.problem("minReplicas", format!("{min} is above maxReplicas {max}"));
        }
        (
            Activation {
                activate_above: on,
                deactivate_below: off,
            },
            Limits {
                min_replicas: min as f64,
                max_replicas: max as f64,
            },
        )
    }
}

pub const DEFAULT_ACTIVATION: f64 = 0.1;
/// Smallest target accepted: below it any reading is an overflowing demand.
pub const MIN_TARGET: f64 = 1e-3;

/// A URL as it may be shown back: userinfo replaced, so a password never reaches an error.
fn redact(raw: &str) -> String {
    match reqwest::Url::parse(raw) {
        Ok(mut url) if !url.username().is_empty() || url.password().is_some() => {
            let _ = url.set_username("redacted");
            let _ = url.set_password(None);
            url.to_string()
        }
        Ok(_) => raw.to_string(),
        // Not a URL, but it may still hold "user:password@".
        Err(_) => match (raw.find("//"), raw.rfind('@')) {
            (Some(start), Some(at)) if start < at => {
                format!("{}//redacted@{}", &raw[..start], &raw[at + 1..])
            }
            (None, Some(at)) => format!("redacted@{}", &raw[at + 1..]),
            _ => raw.to_string(),
        },
    }
}
pub const DEFAULT_MAX_REPLICAS: u32 = 100;
const BUILTIN_SIGNALS: &[&str] = &[
    "gpu_util",
    "gpu_memory",
    "queue",
    "inflight",
    "kv_cache",
    "latency",
];

fn is_known(key: &str) -> bool {
    if KEYS.contains(&key) {
        return true;
    }
    match key.strip_prefix("extra.").and_then(|r| r.rsplit_once('.')) {
        Some((name, field)) => !name.is_empty() && EXTRA_FIELDS.contains(&field),
        None => false,
    }
}

fn unknown_key_message(key: &str) -> String {
    let best = KEYS
        .iter()
        .chain(KEDA_KEYS)
        .map(|k| {
            (
                strsim::levenshtein(&key.to_lowercase(), &k.to_lowercase()),
                *k,
            )
        })
        .min();
    match best {
        Some((d, k)) if d <= 3 || k.to_lowercase() == key.to_lowercase() => {
            format!("unknown key; did you mean '{k}'?")
        }
        _ if key.starts_with("extra.") => {
            "unknown key; extra signals take extra.<name>.metric (or .query), extra.<name>.target and extra.<name>.kind".into()
        }
        _ => format!("unknown key; accepted keys: {}", KEYS.join(", ")),
    }
}

fn is_prometheus_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
        && s.len() <= 200
}

fn is_kubernetes_metric_name(s: &str) -> bool {
    let ok_edge =
        |c: Option<char>| matches!(c, Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit());
    !s.is_empty()
        && s.len() <= 63
        && ok_edge(s.chars().next())
        && ok_edge(s.chars().last())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
}

fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// An RFC 1123 label: what Kubernetes accepts as a Service or port name.
fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

fn is_extra_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn base(extra: &[(&str, &str)]) -> HashMap<String, String> {
        let mut m = meta(&[
            ("endpoints", "http://127.0.0.1:9000/metrics"),
            ("queueTarget", "10"),
        ]);
        m.extend(meta(extra));
        m
    }

    #[track_caller]
    fn rejects(m: HashMap<String, String>, key: &str, needle: &str) {
        let err = parse(&m).expect_err("metadata should be rejected");
        let p = err
            .problems
            .iter()
            .find(|p| p.key == key)
            .unwrap_or_else(|| panic!("no problem for {key} in: {err}"));
        assert!(
            p.message.contains(needle),
            "problem for {key} should contain {needle:?}: {}",
            p.message
        );
    }

    #[test]
    fn minimal_spec_gets_defaults() {
        let spec = parse(&base(&[])).unwrap();
        assert_eq!(spec.metric_name, "gpu-composite");
        assert_eq!(
            spec.source,
            SourceSpec::Scrape {
                endpoints: vec!["http://127.0.0.1:9000/metrics".into()]
            }
        );
        assert_eq!(spec.signals.len(), 1);
        assert_eq!(spec.signals[0].name, "queue");
        assert_eq!(
            spec.signals[0].metrics,
            MetricSource::Gauge(vec!["workload_queue_length".into()])
        );
        assert_eq!(spec.smoothing, Smoothing::default());
        assert_eq!(spec.activation.activate_above, DEFAULT_ACTIVATION);
        assert_eq!(spec.activation.deactivate_below, DEFAULT_ACTIVATION / 2.0);
        assert_eq!(spec.limits.max_replicas, 100.0);
    }

    #[test]
    fn every_builtin_signal_and_override_is_read() {
        let spec = parse(&base(&[
            ("gpuUtilTarget", "70"),
            ("gpuUtilMetric", "DCGM_FI_DEV_GPU_UTIL"),
            ("gpuMemoryTarget", "80"),
            ("gpuMemoryUsedMetric", "DCGM_FI_DEV_FB_USED"),
            ("gpuMemoryFreeMetric", "DCGM_FI_DEV_FB_FREE"),
            ("inflightTarget", "4"),
            ("inflightMetric", "vllm:num_requests_running"),
            ("latencyTargetMs", "500"),
            ("latencyMetric", "http_duration_seconds"),
            ("queueMetric", "vllm:num_requests_waiting"),
            ("upHalfLifeSeconds", "5"),
            ("downHalfLifeSeconds", "120"),
            ("panicThreshold", "3"),
            ("activationThreshold", "0.5"),
            ("deactivationThreshold", "0.1"),
            ("minReplicas", "1"),
            ("maxReplicas", "20"),
            ("metricName", "llm-capacity"),
            ("scalerAddress", "scaler:9443"),
            ("enableTLS", "false"),
        ]))
        .unwrap();
        let names: Vec<&str> = spec.signals.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            ["gpu_util", "gpu_memory", "queue", "inflight", "latency"]
        );
        assert_eq!(
            spec.signals[4].target, 0.5,
            "latency target is kept in seconds"
        );
        assert_eq!(
            spec.signals[1].metrics,
            MetricSource::Memory(vec![MemoryMetrics::UsedFree {
                used: "DCGM_FI_DEV_FB_USED".into(),
                free: "DCGM_FI_DEV_FB_FREE".into()
            }])
        );
        assert_eq!(
            spec.signals[3].metrics,
            MetricSource::Gauge(vec!["vllm:num_requests_running".into()])
        );
        assert_eq!(spec.smoothing.panic_threshold, 3.0);
        assert_eq!(
            (spec.limits.min_replicas, spec.limits.max_replicas),
            (1.0, 20.0)
        );
        assert_eq!(spec.metric_name, "llm-capacity");
    }

    #[test]
    fn from_env_keys_are_read_and_conflicts_rejected() {
        let spec = parse(&base(&[("gpuUtilTargetFromEnv", "65")])).unwrap();
        assert_eq!(spec.signals[0].target, 65.0);
        rejects(
            base(&[("queueTargetFromEnv", "5")]),
            "queueTargetFromEnv",
            "keep one",
        );
    }

    #[test]
    fn extra_signals_enter_the_spec() {
        let spec = parse(&base(&[
            ("extra.cpu.metric", "process_cpu_percent"),
            ("extra.cpu.target", "60"),
            ("extra.cpu.kind", "utilisation"),
        ]))
        .unwrap();
        let cpu = spec.signals.iter().find(|s| s.name == "cpu").unwrap();
        assert_eq!(cpu.model, DemandModel::Utilisation);
        assert_eq!(cpu.target, 60.0);
        rejects(
            base(&[("extra.cpu.metric", "x"), ("extra.cpu.target", "1")]),
            "extra.cpu.kind",
            "required",
        );
        rejects(
            base(&[
                ("extra.cpu.metric", "x"),
                ("extra.cpu.target", "1"),
                ("extra.cpu.kind", "mean"),
            ]),
            "extra.cpu.kind",
            "utilisation or quantity",
        );
        rejects(
            base(&[
                ("extra.queue.metric", "x"),
                ("extra.queue.target", "1"),
                ("extra.queue.kind", "quantity"),
            ]),
            "extra.queue.target",
            "not one of",
        );
        rejects(
            base(&[("extra.cpu.colour", "x")]),
            "extra.cpu.colour",
            "extra.<name>.metric",
        );
    }

    #[test]
    fn unknown_keys_get_a_hint() {
        rejects(
            base(&[("queueTarge", "5")]),
            "queueTarge",
            "did you mean 'queueTarget'",
        );
        rejects(
            base(&[("gpuutiltarget", "5")]),
            "gpuutiltarget",
            "did you mean 'gpuUtilTarget'",
        );
        rejects(base(&[("colour", "blue")]), "colour", "accepted keys:");
    }

    #[test]
    fn every_bad_value_names_its_key_and_what_is_accepted() {
        let cases: &[(&str, &str, &str)] = &[
            ("queueTarget", "ten", "a number >= 0.001"),
            ("queueTarget", "0", "a number >= 0.001"),
            ("queueTarget", "-3", "a number >= 0.001"),
            ("queueTarget", "NaN", "a number >= 0.001"),
            ("queueTarget", "inf", "a number >= 0.001"),
            ("gpuUtilTarget", "150", "<= 100"),
            ("gpuMemoryTarget", "", "a number >= 0.001"),
            ("inflightTarget", "1e400", "a number >= 0.001"),
            ("queueTarget", "1e-320", "a number >= 0.001"),
            ("latencyTargetMs", "fast", "milliseconds"),
            ("upHalfLifeSeconds", "-1", "seconds between 0 and 86400"),
            ("downHalfLifeSeconds", "1e9", "seconds between 0 and 86400"),
            ("panicThreshold", "0.5", "0 (off) or a factor > 1"),
            ("panicThreshold", "x", "0 (off) or a factor > 1"),
            ("activationThreshold", "-1", "demand in replicas"),
            ("deactivationThreshold", "5", "above activationThreshold"),
            ("minReplicas", "1.5", "whole number"),
            ("minReplicas", "-1", "whole number"),
            ("maxReplicas", "0", ">= 1"),
            ("maxReplicas", "99999999999", "whole number"),
            ("metricName", "GPU Composite", "a-z, 0-9"),
            ("metricName", "-x", "starting and ending"),
            ("queueMetric", "bad name{}", "Prometheus metric name"),
            ("gpuUtilMetric", "1abc", "Prometheus metric name"),
            ("latencyWindowSeconds", "0", "between 1 and 3600"),
            ("source", "kafka", "expected scrape, prometheus or nvml"),
            ("endpoints", "not a url", "http(s) URL"),
            ("endpoints", "ftp://x/metrics", "http(s) URL"),
            ("endpoints", " , ", "at least one"),
        ];
        for (key, value, needle) in cases {
            rejects(base(&[(key, value)]), key, needle);
        }
    }

    #[test]
    fn structural_problems_are_reported() {
        rejects(meta(&[("queueTarget", "1")]), "endpoints", "required");
        rejects(
            meta(&[("endpoints", "http://a/metrics")]),
            "gpuUtilTarget",
            "no signal has a target",
        );
        rejects(
            meta(&[
                ("endpoints", "http://a/metrics"),
                ("latencyTargetMs", "200"),
            ]),
            "latencyTargetMs",
            "cannot be the only signal",
        );
        rejects(
            base(&[("minReplicas", "5"), ("maxReplicas", "2")]),
            "minReplicas",
            "above maxReplicas",
        );
        rejects(
            base(&[("gpuMemoryUsedMetric", "x")]),
            "gpuMemoryUsedMetric",
            "exactly one of",
        );
        let many = (0..1001)
            .map(|i| format!("http://10.0.0.1:{i}/m"))
            .collect::<Vec<_>>()
            .join(",");
        rejects(base(&[("endpoints", &many)]), "endpoints", "at most 1000");
    }

    #[test]
    fn all_problems_are_reported_together() {
        let err = parse(&meta(&[
            ("queueTarget", "x"),
            ("maxReplicas", "y"),
            ("oops", "1"),
        ]))
        .unwrap_err();
        assert!(err.problems.len() >= 4, "{err}");
        let text = err.to_string();
        assert!(
            text.contains("queueTarget: ")
                && text.contains("maxReplicas: ")
                && text.contains("oops: ")
        );
    }

    fn prom(extra: &[(&str, &str)]) -> Result<ScalerSpec, SpecError> {
        let mut m = meta(&[
            ("source", "prometheus"),
            ("deployment", "llm-server"),
            ("queueTarget", "4"),
        ]);
        m.extend(meta(extra));
        parse_in(
            ParseContext {
                egress: None,
                namespace: "inference",
                prometheus_address: Some("http://prom.monitoring:9090"),
            },
            &m,
        )
    }

    #[test]
    fn prometheus_source_defaults_to_the_scaled_object_namespace_and_server_address() {
        let spec = prom(&[]).unwrap();
        let SourceSpec::Prometheus(p) = &spec.source else {
            panic!("{:?}", spec.source)
        };
        assert_eq!(p.address, "http://prom.monitoring:9090");
        assert_eq!(p.namespace, "inference");
        assert_eq!(
            (p.namespace_label.as_str(), p.pod_label.as_str()),
            ("namespace", "pod")
        );
        let re = regex::Regex::new(&p.pods.pattern()).unwrap();
        assert!(re.is_match("llm-server-5d8f7c9b4-x2x9k"));
        assert!(!re.is_match("llm-server-canary-5d8f7c9b4-x2x9k"));
        assert!(!re.is_match("xllm-server-5d8f7c9b4-x2x9k"));

        let spec = prom(&[
            ("prometheusAddress", "http://other:9090/"),
            ("namespace", "team-a"),
            ("deployment", ""),
            ("podSelector", "vllm-.+"),
            ("namespaceLabel", "exported_namespace"),
            ("podLabel", "exported_pod"),
            ("gpuUtilTarget", "70"),
            ("gpuUtilQuery", "avg by (pod) (x)"),
            (
                "extra.cpu.query",
                "sum by (pod) (rate(container_cpu_usage_seconds_total[1m])) * 100",
            ),
            ("extra.cpu.target", "80"),
            ("extra.cpu.kind", "utilisation"),
        ]);
        // deployment="" counts as set: both given is a problem.
        assert!(spec.is_err());
        let spec = parse_in(
            ParseContext {
                egress: None,
                namespace: "inference",
                prometheus_address: None,
            },
            &meta(&[
                ("source", "prometheus"),
                ("prometheusAddress", "http://other:9090/"),
                ("namespace", "team-a"),
                ("podSelector", "vllm-.+"),
                ("namespaceLabel", "exported_namespace"),
                ("podLabel", "exported_pod"),
                ("gpuUtilTarget", "70"),
                ("gpuUtilQuery", "avg by (pod) (x)"),
                ("extra.cpu.query", "sum by (pod) (rate(c[1m])) * 100"),
                ("extra.cpu.target", "80"),
                ("extra.cpu.kind", "utilisation"),
            ]),
        )
        .unwrap();
        let SourceSpec::Prometheus(p) = &spec.source else {
            panic!()
        };
        assert_eq!(p.address, "http://other:9090");
        assert_eq!(p.namespace, "team-a");
        assert_eq!(p.pods, PodMatch::Selector("vllm-.+".into()));
        assert_eq!(p.pod_label, "exported_pod");
        assert_eq!(
            spec.signals[0].metrics,
            MetricSource::Query("avg by (pod) (x)".into())
        );
        assert_eq!(
            spec.signals[1].metrics,
            MetricSource::Query("sum by (pod) (rate(c[1m])) * 100".into())
        );
    }

    #[test]
    fn source_specific_keys_are_checked() {
        let err = |r: Result<ScalerSpec, SpecError>| r.unwrap_err().to_string();
        assert!(err(prom(&[("podSelector", "x")])).contains("either deployment or podSelector"));
        assert!(err(prom(&[("deployment", "Bad_Name")])).contains("not a Deployment name"));
        assert!(err(prom(&[("deployment", "x"), ("podSelector", "(")])).contains("podSelector"));
        assert!(err(prom(&[("namespaceLabel", "exported-namespace")])).contains("label name"));
        assert!(err(prom(&[("prometheusAddress", "prom:9090")])).contains("http(s) URL"));
        assert!(err(prom(&[("endpoints", "http://a/m")])).contains("applies only to source=scrape"));
        assert!(err(prom(&[("devices", "0")])).contains("applies only to source=nvml"));
        assert!(err(prom(&[
            ("extra.u.metric", "m"),
            ("extra.u.query", "q"),
            ("extra.u.target", "1"),
            ("extra.u.kind", "quantity")
        ]))
        .contains("not both"));
        // No address anywhere.
        let none = parse_in(
            ParseContext {
                egress: None,
                namespace: "inference",
                prometheus_address: None,
            },
            &meta(&[
                ("source", "prometheus"),
                ("deployment", "x"),
                ("queueTarget", "1"),
            ]),
        );
        assert!(err(none).contains("prometheusAddress: required"));
        // Scrape triggers cannot carry PromQL.
        rejects(
            base(&[("queueQuery", "sum(x)")]),
            "queueQuery",
            "applies only to source=prometheus",
        );
        rejects(
            base(&[
                ("extra.u.query", "sum(x)"),
                ("extra.u.target", "1"),
                ("extra.u.kind", "quantity"),
            ]),
            "extra.u.query",
            "applies only to source=prometheus",
        );
    }

    #[test]
    fn nvml_source_reads_devices_and_only_gpu_signals() {
        let nvml = |extra: &[(&str, &str)]| {
            let mut m = meta(&[("source", "nvml"), ("gpuUtilTarget", "60")]);
            m.extend(meta(extra));
            parse_in(
                ParseContext {
                    egress: None,
                    namespace: "inference",
                    prometheus_address: None,
                },
                &m,
            )
        };
        let spec = nvml(&[("devices", "0, GPU-20c56d28-0da5, MIG-1/2")]).unwrap();
        assert_eq!(
            spec.source,
            SourceSpec::Nvml(NvmlSpec {
                devices: vec![
                    DeviceRef::Index(0),
                    DeviceRef::Uuid("GPU-20c56d28-0da5".into()),
                    DeviceRef::Uuid("MIG-1/2".into())
                ],
                pods: None
            })
        );
        let spec = nvml(&[("deployment", "llm")]).unwrap();
        assert!(
            matches!(&spec.source, SourceSpec::Nvml(n) if n.pods.as_ref().is_some_and(|(ns, _)| ns == "inference"))
        );
        assert!(nvml(&[("devices", "gpu0")])
            .unwrap_err()
            .to_string()
            .contains("device indices"));
        assert!(nvml(&[("queueTarget", "3")])
            .unwrap_err()
            .to_string()
            .contains("reads only GPUs"));
    }

    fn in_ns(pairs: &[(&str, &str)]) -> Result<ScalerSpec, SpecError> {
        parse_in(
            ParseContext {
                namespace: "inference",
                prometheus_address: Some("http://prom:9090"),
                egress: None,
            },
            &meta(pairs),
        )
    }

    #[test]
    fn a_service_is_looked_up_in_the_scaled_objects_own_namespace() {
        let spec = in_ns(&[("service", "llm"), ("queueTarget", "4")]).unwrap();
        assert_eq!(
            spec.source,
            SourceSpec::Service(ServiceSpec {
                namespace: "inference".into(),
                name: "llm".into(),
                port: None,
                path: "/metrics".into(),
            })
        );
        assert_eq!(spec.source.kind(), "scrape");
        let spec = in_ns(&[
            ("service", "llm"),
            ("port", "metrics"),
            ("path", "/v2/metrics"),
            ("queueTarget", "4"),
        ])
        .unwrap();
        let SourceSpec::Service(svc) = &spec.source else {
            panic!()
        };
        assert_eq!(svc.port, Some(PortRef::Name("metrics".into())));
        assert_eq!(svc.path, "/v2/metrics");
        let spec = in_ns(&[("service", "llm"), ("port", "8002"), ("queueTarget", "4")]).unwrap();
        assert!(
            matches!(&spec.source, SourceSpec::Service(s) if s.port == Some(PortRef::Number(8002)))
        );

        let err = |pairs: &[(&str, &str)]| in_ns(pairs).unwrap_err().to_string();
        assert!(err(&[("service", "LLM"), ("queueTarget", "4")])
            .contains("service: 'LLM' is not a Service name"));
        assert!(err(&[("service", "a.b"), ("queueTarget", "4")]).contains("not a Service name"));
        assert!(
            err(&[("service", "llm"), ("port", "0"), ("queueTarget", "4")])
                .contains("port: '0' is not accepted")
        );
        assert!(
            err(&[("service", "llm"), ("port", "http_1"), ("queueTarget", "4")])
                .contains("port number 1-65535")
        );
        assert!(err(&[
            ("service", "llm"),
            ("path", "metrics"),
            ("queueTarget", "4")
        ])
        .contains("path: 'metrics' is not accepted"));
        assert!(
            err(&[("service", "llm"), ("path", "/a b"), ("queueTarget", "4")]).contains("path:")
        );
        assert!(err(&[
            ("service", "llm"),
            ("endpoints", "http://a/m"),
            ("queueTarget", "4")
        ])
        .contains("either service"));
        assert!(err(&[
            ("endpoints", "http://a/m"),
            ("port", "80"),
            ("queueTarget", "4")
        ])
        .contains("port: applies only with service"));
        // Another namespace cannot be named: `namespace` is not a scrape key.
        assert!(err(&[
            ("service", "llm"),
            ("namespace", "team-b"),
            ("queueTarget", "4")
        ])
        .contains("namespace: applies only to source=prometheus"));
        assert!(err(&[
            ("source", "prometheus"),
            ("deployment", "x"),
            ("service", "llm"),
            ("queueTarget", "4")
        ])
        .contains("service: applies only to source=scrape"));
    }

    #[test]
    fn presets_set_metrics_and_explicit_keys_override_them() {
        let spec = in_ns(&[
            ("service", "llm"),
            ("preset", "vllm"),
            ("queueTarget", "4"),
            ("inflightTarget", "32"),
            ("kvCacheTarget", "85"),
            ("latencyTargetMs", "1500"),
        ])
        .unwrap();
        let by = |name: &str| {
            spec.signals
                .iter()
                .find(|s| s.name == name)
                .unwrap()
                .metrics
                .clone()
        };
        assert_eq!(
            by("queue"),
            MetricSource::Gauge(vec!["vllm:num_requests_waiting".into()])
        );
        assert_eq!(
            by("inflight"),
            MetricSource::Gauge(vec!["vllm:num_requests_running".into()])
        );
        assert_eq!(
            by("kv_cache"),
            MetricSource::Fraction(vec![
                "vllm:kv_cache_usage_perc".into(),
                "vllm:gpu_cache_usage_perc".into()
            ])
        );
        assert_eq!(
            by("latency"),
            MetricSource::Histogram("vllm:time_to_first_token_seconds".into())
        );

        let spec = in_ns(&[
            ("service", "llm"),
            ("preset", "sglang"),
            ("queueTarget", "4"),
            ("queueMetric", "my_queue"),
        ])
        .unwrap();
        assert_eq!(
            spec.signals[0].metrics,
            MetricSource::Gauge(vec!["my_queue".into()])
        );

        // Prometheus: the same names, and the *Query keys override.
        let spec = in_ns(&[
            ("source", "prometheus"),
            ("deployment", "triton"),
            ("preset", "triton"),
            ("queueTarget", "4"),
            ("kvCacheTarget", "80"),
            ("kvCacheQuery", "100 * sum by (pod) (x)"),
        ])
        .unwrap();
        assert_eq!(
            spec.signals[0].metrics,
            MetricSource::Gauge(vec![
                "nv_trt_llm_request_metrics{request_type=\"waiting\"}".into(),
                "nv_inference_pending_request_count".into()
            ])
        );
        assert_eq!(
            spec.signals[1].metrics,
            MetricSource::Query("100 * sum by (pod) (x)".into())
        );

        let err = |pairs: &[(&str, &str)]| in_ns(pairs).unwrap_err().to_string();
        assert!(err(&[
            ("service", "llm"),
            ("preset", "ollama"),
            ("queueTarget", "4")
        ])
        .contains(
            "preset: 'ollama' is not accepted; expected vllm, sglang, tgi, triton or gpu-workload"
        ));
        assert!(err(&[
            ("service", "llm"),
            ("preset", "tgi"),
            ("kvCacheTarget", "80")
        ])
        .contains("kvCacheTarget: preset tgi sets no KV-cache metric"));
        assert!(err(&[("service", "llm"), ("kvCacheTarget", "80")]).contains("no preset is set"));
        assert!(err(&[
            ("source", "nvml"),
            ("preset", "vllm"),
            ("gpuUtilTarget", "50")
        ])
        .contains("preset: applies only to source=scrape or source=prometheus"));
        assert!(err(&[
            ("service", "llm"),
            ("kvCacheTarget", "120"),
            ("kvCacheMetric", "x")
        ])
        .contains("<= 100"));
        // A custom 0-1 gauge is accepted without a preset.
        let spec = in_ns(&[
            ("service", "llm"),
            ("kvCacheTarget", "80"),
            ("kvCacheMetric", "my_kv_fraction"),
        ])
        .unwrap();
        assert_eq!(
            spec.signals[0].metrics,
            MetricSource::Fraction(vec!["my_kv_fraction".into()])
        );
    }

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

    #[test]
    fn hostile_values_never_panic() {
        let nasty = [
            "",
            " ",
            "\u{0}",
            "💥",
            "1e309",
            "-0",
            "0x10",
            &"9".repeat(10_000),
            "\n",
        ];
        for key in KEYS
            .iter()
            .chain(["extra.a.target", "extra..kind", "extra.", "FromEnv"].iter())
        {
            for v in nasty {
                let _ = parse(&base(&[(key, v)]));
            }
        }
    }
}
