//! Logs, the scaler's own metrics, and the `/debug/scaledobjects` page: what an operator reads to
//! see why a ScaledObject scaled (or did not).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

use crate::config::LogFormat;
use crate::engine::{Engine, EngineError};
use crate::score::Decision;
use crate::spec::{DeviceRef, SourceSpec};

/// Installs the global tracing subscriber. Safe to call more than once (later calls are no-ops).
pub fn init_logging(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour codes only for a person at a terminal; log collectors get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// The RPCs of the ExternalScaler service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    IsActive,
    StreamIsActive,
    GetMetricSpec,
    GetMetrics,
    StreamMetricSpec,
}

impl Method {
    const ALL: [Method; 5] = [
        Method::IsActive,
        Method::StreamIsActive,
        Method::GetMetricSpec,
        Method::GetMetrics,
        Method::StreamMetricSpec,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Method::IsActive => "IsActive",
            Method::StreamIsActive => "StreamIsActive",
            Method::GetMetricSpec => "GetMetricSpec",
            Method::GetMetrics => "GetMetrics",
            Method::StreamMetricSpec => "StreamMetricSpec",
        }
    }
}

/// gRPC status codes the service returns, as metric labels.
const CODES: [&str; 5] = [
    "OK",
    "InvalidArgument",
    "Unavailable",
    "ResourceExhausted",
    "Internal",
];
/// Upper bounds of the RPC latency histogram, seconds.
const BUCKETS: [f64; 12] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 2.5,
];

/// Lock-free RPC counters and latency histograms, one set per method.
#[derive(Default)]
pub struct RpcMetrics {
    requests: [[AtomicU64; CODES.len()]; Method::ALL.len()],
    buckets: [[AtomicU64; BUCKETS.len()]; Method::ALL.len()],
    count: [AtomicU64; Method::ALL.len()],
    sum_ns: [AtomicU64; Method::ALL.len()],
}

impl RpcMetrics {
    pub fn observe(&self, method: Method, code: tonic::Code, elapsed: Duration) {
        let m = method as usize;
        let c = match code {
            tonic::Code::Ok => 0,
            tonic::Code::InvalidArgument => 1,
            tonic::Code::Unavailable => 2,
            tonic::Code::ResourceExhausted => 3,
            _ => 4,
        };
        self.requests[m][c].fetch_add(1, Ordering::Relaxed);
        let secs = elapsed.as_secs_f64();
        if let Some(b) = BUCKETS.iter().position(|le| secs <= *le) {
            self.buckets[m][b].fetch_add(1, Ordering::Relaxed);
        }
        self.count[m].fetch_add(1, Ordering::Relaxed);
        self.sum_ns[m].fetch_add(elapsed.as_nanos() as u64, Ordering::Relaxed);
    }
}

/// Renders the Prometheus text exposition of the scaler: per ScaledObject state and RPC metrics.
pub fn render_metrics(engine: &Engine, rpc: &RpcMetrics) -> String {
    let mut out = String::with_capacity(4096);
    let entries = engine.entries();
    let now = engine.now();
    let max_staleness = engine.settings().max_staleness.as_secs_f64();

    header(
        &mut out,
        "keda_gpu_scaler_scaledobjects",
        "gauge",
        "ScaledObjects registered.",
    );
    let _ = writeln!(out, "keda_gpu_scaler_scaledobjects {}", entries.len());
    header(
        &mut out,
        "keda_gpu_scaler_last_sample_timestamp_seconds",
        "gauge",
        "Unix time the sampler last finished a round.",
    );
    let last_round_unix = unix_now()
        - engine
            .since_last_round()
            .map_or(f64::NAN, |d| d.as_secs_f64());
    let _ = writeln!(
        out,
        "keda_gpu_scaler_last_sample_timestamp_seconds {}",
        num(last_round_unix)
    );

    let mut desired = Family::new(
        "keda_gpu_scaler_desired_replicas",
        "gauge",
        "Composite desired capacity after clamps (the value sent to KEDA).",
    );
    let mut active = Family::new(
        "keda_gpu_scaler_active",
        "gauge",
        "1 when IsActive is true.",
    );
    let mut max = Family::new(
        "keda_gpu_scaler_max_replicas",
        "gauge",
        "maxReplicas of the ScaledObject's spec.",
    );
    let mut age = Family::new(
        "keda_gpu_scaler_sample_age_seconds",
        "gauge",
        "Age of the last sample that had data.",
    );
    let mut stale = Family::new(
        "keda_gpu_scaler_stale",
        "gauge",
        "1 when the last good sample is older than max_staleness.",
    );
    let mut demand = Family::new(
        "keda_gpu_scaler_signal_demand_replicas",
        "gauge",
        "Demand of each signal in replicas, raw and smoothed.",
    );
    let mut value = Family::new(
        "keda_gpu_scaler_signal_value",
        "gauge",
        "Aggregated reading of each signal (percent, requests or seconds).",
    );
    let mut replicas = Family::new(
        "keda_gpu_scaler_discovered_replicas",
        "gauge",
        "Endpoints of a service trigger's Service by state: starting (not ready yet) or terminating.",
    );
    // One series per (namespace, ScaledObject, trigger metric), whatever the entries behind it.
    for entry in &engine.current_entries() {
        let ns = &entry.key.namespace;
        let so = &entry.key.name;
        let base = format!(
            "namespace=\"{}\",scaledobject=\"{}\",metric=\"{}\"",
            escape(ns),
            escape(so),
            escape(&entry.spec.metric_name)
        );
        let state = entry.state();
        max.push(&base, entry.spec.limits.max_replicas);
        for (what, n) in [
            ("starting", state.starting),
            ("terminating", state.terminating),
        ] {
            if let Some(n) = n {
                replicas.push(&format!("{base},state=\"{what}\""), f64::from(n));
            }
        }
        let Some(decision) = state.decision else {
            continue;
        };
        let sample_age = state.fresh_at.map_or(f64::NAN, |t| now - t);
        desired.push(&base, decision.desired);
        active.push(&base, f64::from(u8::from(decision.active)));
        age.push(&base, sample_age);
        stale.push(&base, f64::from(u8::from(sample_age > max_staleness)));
        for s in &decision.signals {
            let sig = format!("{base},signal=\"{}\"", escape(&s.name));
            if let Some(v) = s.raw_demand {
                demand.push(&format!("{sig},stage=\"raw\""), v);
            }
            if let Some(v) = s.smoothed_demand {
                demand.push(&format!("{sig},stage=\"smoothed\""), v);
            }
            if let Some(v) = s.value {
                value.push(&sig, v);
            }
        }
    }
    for family in [desired, active, max, age, stale, demand, value, replicas] {
        family.write(&mut out);
    }

    header(
        &mut out,
        "keda_gpu_scaler_rpc_requests_total",
        "counter",
        "ExternalScaler RPCs by method and gRPC code.",
    );
    for m in Method::ALL {
        for (c, code) in CODES.iter().enumerate() {
            let n = rpc.requests[m as usize][c].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "keda_gpu_scaler_rpc_requests_total{{method=\"{}\",code=\"{code}\"}} {n}",
                m.name()
            );
        }
    }
    header(
        &mut out,
        "keda_gpu_scaler_rpc_duration_seconds",
        "histogram",
        "Time to answer an ExternalScaler RPC (streams: time to open).",
    );
    for m in Method::ALL {
        let i = m as usize;
        let mut cumulative = 0;
        for (b, le) in BUCKETS.iter().enumerate() {
            cumulative += rpc.buckets[i][b].load(Ordering::Relaxed);
            let _ = writeln!(out, "keda_gpu_scaler_rpc_duration_seconds_bucket{{method=\"{}\",le=\"{le}\"}} {cumulative}", m.name());
        }
        let count = rpc.count[i].load(Ordering::Relaxed);
        let sum = rpc.sum_ns[i].load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(
            out,
            "keda_gpu_scaler_rpc_duration_seconds_bucket{{method=\"{}\",le=\"+Inf\"}} {count}",
            m.name()
        );
        let _ = writeln!(
            out,
            "keda_gpu_scaler_rpc_duration_seconds_sum{{method=\"{}\"}} {sum}",
            m.name()
        );
        let _ = writeln!(
            out,
            "keda_gpu_scaler_rpc_duration_seconds_count{{method=\"{}\"}} {count}",
            m.name()
        );
    }
    out
}

struct Family {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    lines: String,
}

impl Family {
    fn new(name: &'static str, kind: &'static str, help: &'static str) -> Self {
        Family {
            name,
            kind,
            help,
            lines: String::new(),
        }
    }

    fn push(&mut self, labels: &str, v: f64) {
        let _ = writeln!(self.lines, "{}{{{labels}}} {}", self.name, num(v));
    }

    fn write(self, out: &mut String) {
        header(out, self.name, self.kind, self.help);
        out.push_str(&self.lines);
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn num(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        v.to_string()
    }
}

/// Escapes a label value for the text exposition format.
pub fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// One ScaledObject on the debug page: its spec in brief and why its decision is what it is.
#[derive(Serialize)]
pub struct DebugEntry {
    pub namespace: String,
    pub name: String,
    pub metric_name: String,
    pub source: String,
    /// Where it reads: endpoint URLs (scrape), the Prometheus address, or NVML devices.
    pub endpoints: Vec<String>,
    /// Which pods count, as a label selector with an anchored pod-name regex.
    pub pods: Option<String>,
    /// The PromQL each signal runs (prometheus source), in signal order.
    pub queries: Vec<String>,
    /// "ok", "pending" or "stale": what GetMetrics would answer now.
    pub status: &'static str,
    /// The error GetMetrics would return, if any.
    pub error: Option<String>,
    pub sample_age_s: Option<f64>,
    pub samples: u64,
    /// Replicas starting (endpoints not ready) at the latest sampling; null when the source
    /// cannot know (fixed endpoints, Prometheus, NVML).
    pub starting: Option<u32>,
    /// Replicas terminating (endpoints draining) at the latest sampling; null when unknown.
    pub terminating: Option<u32>,
    pub notes: Vec<String>,
    pub decision: Option<Decision>,
}

/// The `/debug/scaledobjects` document.
pub fn debug_entries(engine: &Engine) -> Vec<DebugEntry> {
    let now = engine.now();
    engine
        .entries()
        .into_iter()
        .map(|entry| {
            let state = entry.state();
            let (status, error) = match engine.current(&entry) {
                Ok(_) => ("ok", None),
                Err(e @ EngineError::Pending { .. }) => ("pending", Some(e.to_string())),
                Err(e) => ("stale", Some(e.to_string())),
            };
            let source = entry.spec.source.kind().to_string();
            let (endpoints, pods) = match &entry.spec.source {
                SourceSpec::Scrape { endpoints } => (endpoints.clone(), None),
                SourceSpec::Service(svc) => (
                    Vec::new(),
                    Some(format!(
                        "ready endpoints of Service {}/{}, port {}, path {}",
                        svc.namespace,
                        svc.name,
                        svc.port
                            .as_ref()
                            .map_or("(its only one)".to_string(), |p| p.to_string()),
                        svc.path
                    )),
                ),
                SourceSpec::Prometheus(p) => (
                    vec![p.address.clone()],
                    Some(format!(
                        "{}=\"{}\", {}=~\"{}\"",
                        p.namespace_label,
                        p.namespace,
                        p.pod_label,
                        p.pods.pattern()
                    )),
                ),
                SourceSpec::Nvml(n) => (
                    n.devices
                        .iter()
                        .map(|d| match d {
                            DeviceRef::Index(i) => format!("device {i}"),
                            DeviceRef::Uuid(u) => u.clone(),
                        })
                        .collect(),
                    n.pods
                        .as_ref()
                        .map(|(ns, m)| format!("namespace=\"{ns}\", pod=~\"{}\"", m.pattern())),
                ),
            };
            let queries = crate::signals::prometheus::describe_queries(&entry.spec);
            DebugEntry {
                namespace: entry.key.namespace.clone(),
                name: entry.key.name.clone(),
                metric_name: entry.spec.metric_name.clone(),
                source,
                endpoints,
                pods,
                queries,
                status,
                error,
                sample_age_s: state.fresh_at.map(|t| now - t),
                samples: state.samples,
                starting: state.starting,
                terminating: state.terminating,
                notes: state.notes,
                decision: state.decision.map(|d| (*d).clone()),
            }
        })
        .collect()
}

/// The human-readable breakdown `explain` prints.
pub fn explain_text(
    spec: &crate::spec::ScalerSpec,
    decision: Option<&Decision>,
    notes: &[String],
    starting: Option<u32>,
    terminating: Option<u32>,
) -> String {
    let mut out = String::new();
    let fmt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3}"));
    let _ = writeln!(
        out,
        "metric {}  (report AverageValue, target 1)",
        spec.metric_name
    );
    let _ = writeln!(
        out,
        "{:<12} {:>10} {:>10} {:>7} {:>10} {:>10}",
        "signal", "value", "target", "pods", "raw", "smoothed"
    );
    match decision {
        Some(d) => {
            for s in &d.signals {
                let target = match s.model {
                    crate::score::DemandModel::Latency => s.target * 1000.0,
                    _ => s.target,
                };
                let value = s.value.map(|v| match s.model {
                    crate::score::DemandModel::Latency => v * 1000.0,
                    _ => v,
                });
                let _ = writeln!(
                    out,
                    "{:<12} {:>10} {:>10} {:>7} {:>10} {:>10}{}",
                    s.name,
                    fmt(value),
                    format!("{target}"),
                    format!("{}/{}", s.reporting, s.reporting + s.missing),
                    fmt(s.raw_demand),
                    fmt(s.smoothed_demand),
                    if s.overflow {
                        "  (overflow: asks for maxReplicas)"
                    } else if s.panicked {
                        "  (surge: passed through)"
                    } else {
                        ""
                    }
                );
            }
            let c = &d.capacity;
            if c.service_s.is_some() || c.busy_replicas.is_some() {
                let _ = writeln!(
                    out,
                    "capacity    service {} s (in flight {} / completions {}/s), busy {} replicas, drain {} s",
                    fmt(c.service_s),
                    fmt(c.inflight),
                    fmt(c.completions_per_s),
                    fmt(c.busy_replicas),
                    spec.drain_s
                );
            }
            if let Some(starting) = c.fleet.starting {
                let _ = writeln!(
                    out,
                    "fleet       {starting} starting (credited: capacity on its way), {} terminating",
                    c.fleet.terminating.map_or("?".to_string(), |t| t.to_string())
                );
            }
            let limiting = d.limiting.as_deref().unwrap_or("none");
            let _ = writeln!(
                out,
                "composite   {:.3} replicas, set by {limiting}",
                d.composite_smoothed
            );
            if let Some(bound) = d.clamped {
                let _ = writeln!(out, "clamped     to {} by {bound}", d.desired);
            }
            let _ = writeln!(
                out,
                "desired     {:.3} -> the HPA asks for {} replicas (ceil)",
                d.desired,
                d.desired.ceil()
            );
            let _ = writeln!(
                out,
                "active      {} (activates above {}, deactivates below {})",
                d.active, spec.activation.activate_above, spec.activation.deactivate_below
            );
        }
        None => {
            for s in &spec.signals {
                let _ = writeln!(out, "{:<12} {:>10}", s.name, "no data");
            }
            let _ = writeln!(
                out,
                "no signal had data: GetMetrics and IsActive would answer UNAVAILABLE"
            );
        }
    }
    if starting.is_some() || terminating.is_some() {
        let count = |v: Option<u32>| v.map_or("-".to_string(), |v| v.to_string());
        let _ = writeln!(
            out,
            "replicas    {} starting (not ready yet), {} terminating (draining); ready ones are scraped",
            count(starting),
            count(terminating)
        );
    }
    for note in notes {
        let _ = writeln!(out, "note        {note}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn rpc_metrics_count_by_method_and_code() {
        let m = RpcMetrics::default();
        m.observe(
            Method::GetMetrics,
            tonic::Code::Ok,
            Duration::from_micros(30),
        );
        m.observe(
            Method::GetMetrics,
            tonic::Code::Unavailable,
            Duration::from_millis(3),
        );
        let engine = Engine::new(Default::default());
        let text = render_metrics(&engine, &m);
        assert!(text
            .contains("keda_gpu_scaler_rpc_requests_total{method=\"GetMetrics\",code=\"OK\"} 1"));
        assert!(text.contains(
            "keda_gpu_scaler_rpc_requests_total{method=\"GetMetrics\",code=\"Unavailable\"} 1"
        ));
        assert!(text.contains(
            "keda_gpu_scaler_rpc_duration_seconds_bucket{method=\"GetMetrics\",le=\"0.00005\"} 1"
        ));
        assert!(
            text.contains("keda_gpu_scaler_rpc_duration_seconds_count{method=\"GetMetrics\"} 2")
        );
        // What we render must parse with our own exposition parser, line for line.
        let parsed = crate::signals::exposition::parse(&text);
        assert_eq!(parsed.malformed, 0);
    }
}
