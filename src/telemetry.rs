//! Logs, the scaler's own metrics, and the `/debug/scaledobjects` page: what an operator reads to
//! see why a ScaledObject scaled (or did not).

pub mod grpc;
pub mod metrics;

pub use grpc::{GrpcMetrics, GrpcMetricsLayer};
pub use metrics::Metrics;

use std::fmt::Write as _;

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
    /// The deletion cost each pod carries as this scaler wrote it (`podDeletionCost`); null when
    /// the ScaledObject does not ask for them.
    pub deletion_costs: Option<std::collections::BTreeMap<String, i32>>,
    /// Pods taken out of service before a scale-down (`podReadinessGate`) and for how many
    /// seconds; null when the ScaledObject does not ask for it.
    pub draining: Option<std::collections::BTreeMap<String, f64>>,
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
            let queries = crate::sources::prometheus::describe_queries(&entry.spec);
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
                deletion_costs: entry.deletion_costs(),
                draining: entry.draining().map(|held| {
                    held.into_iter()
                        .map(|(p, since)| (p, now - since))
                        .collect()
                }),
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
            if let Some(o) = &d.objective {
                let _ = writeln!(
                    out,
                    "objective   TTFT <= {:.0} ms for {:.1} % of requests: {} replicas{}",
                    o.ttft_objective_s * 1000.0,
                    100.0 * o.attainment,
                    fmt(o.desired),
                    if o.trusted {
                        ""
                    } else {
                        "  (too few samples: the fallback floor decides)"
                    }
                );
                let _ = writeln!(
                    out,
                    "  learned   one replica serves {} req/s ({}, {} samples full), unloaded TTFT {} s ({} samples), {} s of the objective left for waiting",
                    fmt(o.replica_rate),
                    o.replica_rate_from,
                    o.full_samples,
                    fmt(o.unloaded_ttft_s),
                    o.unloaded_samples,
                    fmt(Some(o.wait_budget_s)),
                );
                if let Some(met) = o.met_recently {
                    let _ = writeln!(
                        out,
                        "  met       {:.1} % of {:.0} requests within the objective over the last {:.0} s{}",
                        100.0 * met,
                        o.met_recently_requests,
                        o.met_recently_s,
                        o.met_last_hour.map_or(String::new(), |h| format!(
                            ", {:.1} % of about {:.0} over the last hour",
                            100.0 * h,
                            o.met_last_hour_requests
                        )),
                    );
                }
                let _ = writeln!(
                    out,
                    "  planned   arrivals {} req/s{}, horizon {:.0} s ({}), window {:.0} s ({} samples){}, trend +{:.3} req/s{}",
                    fmt(o.arrivals_per_s),
                    if o.arrivals_from.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", o.arrivals_from)
                    },
                    o.horizon_s,
                    o.horizon_from,
                    o.window_s,
                    o.window_samples,
                    match (o.cycle_s, o.recurrence_s) {
                        (Some(p), _) => format!(
                            ", forecast from the same phase of the earlier cycles of bursts every {p:.0} s"
                        ),
                        (None, Some(g)) =>
                            format!(", held through a {g:.0} s gap between recurring bursts"),
                        (None, None) => String::new(),
                    },
                    o.trend_per_s,
                    if o.falling_per_s2 > 0.0 {
                        format!(
                            ", falling {:.3} req/s per minute along a line (older samples lowered to it)",
                            60.0 * o.falling_per_s2
                        )
                    } else {
                        String::new()
                    },
                );
                let _ = writeln!(
                    out,
                    "  headroom  {}",
                    match o.full_slots {
                        _ if o.headroom_per_s > 0.0 => format!(
                            "+{:.2} req/s for arrivals' randomness within a sample (square root of the load, {}); {:.0} % of the window's spread was that randomness, taken out of its samples",
                            o.headroom_per_s,
                            o.full_slots.map_or("inflightTarget slots".to_string(), |slots| format!(
                                "{slots:.1} slots per full replica"
                            )),
                            100.0 * o.noise_share
                        ),
                        _ if o.replica_rate_from == "observed" => "none: no replica seen full yet, so the rate planned with is what one was seen to serve, mostly below what it can".to_string(),
                        _ => "none: no load to plan for".to_string(),
                    }
                );
                let _ = writeln!(
                    out,
                    "  floor     {}",
                    if o.burst_floor_per_s > 0.0 {
                        format!(
                            "{:.2} req/s held: the last hour's worst {:.0} s stretch, if it came again, would miss more than the hour's budget of requests",
                            o.burst_floor_per_s, o.horizon_s
                        )
                    } else {
                        "none: no stretch of the last hour would miss more than its budget if it came again".to_string()
                    }
                );
                let _ = writeln!(
                    out,
                    "  present   {}",
                    match o.present_floor_from {
                        _ if o.desired.is_none() => "none: nothing planned yet".to_string(),
                        "" => "no floor: a level with nothing waiting, the present count is one more sample for the budget".to_string(),
                        why => format!(
                            "{:.2} req/s held as a floor ({why}): the present rate with the trend and the backlog drained within the horizon",
                            o.present_floor_per_s
                        ),
                    }
                );
                let _ = writeln!(
                    out,
                    "  budget    planned for {:.1} % of requests over the objective ({:.1} % asked{}){}",
                    100.0 * o.planned_miss_share,
                    100.0 * (1.0 - o.attainment),
                    if o.planned_miss_share > 1.0 - o.attainment + 1e-9 {
                        ": what was met allows more"
                    } else if o.planned_miss_share < 1.0 - o.attainment - 1e-9 {
                        ": more was missed than allowed"
                    } else {
                        ""
                    },
                    o.quiet_miss_share.filter(|q| *q > 0.0).map_or(String::new(), |q| format!(
                        "; {:.1} % missed with nothing waiting (too long for the objective at any scale), not counted",
                        100.0 * q
                    )),
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
