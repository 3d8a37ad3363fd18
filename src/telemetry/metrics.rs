//! The scaler's own `/metrics`, through prometheus-client: the build, the gRPC server (see
//! `grpc`), and the state of every ScaledObject, read from the engine at each scrape so that a
//! ScaledObject that expires takes its series with it.
//!
//! Every name carries its unit: `_seconds` for times, `_ratio` for 0-1 fractions, `_total` on
//! counters (added by the encoder), and counts of replicas, ScaledObjects or requests say what
//! they count. The exposition is OpenMetrics text, which Prometheus asks for first.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use super::grpc::GrpcMetrics;
use crate::engine::Engine;
use crate::score::DemandModel;

/// What `/metrics` answers with.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Labels of `keda_gpu_scaler_build_info`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    rustc_version: &'static str,
}

/// The registry behind `/metrics`, built once at start.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
}

impl Metrics {
    pub fn new(engine: Arc<Engine>, grpc: &GrpcMetrics) -> Self {
        let mut registry = Registry::default();
        let build: Family<BuildLabels, Gauge> = Family::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
                // Set by build.rs; "unknown" only where a stale build-script output was reused.
                rustc_version: option_env!("BUILD_RUSTC_VERSION").unwrap_or("unknown"),
            })
            .set(1);
        registry.register(
            "keda_gpu_scaler_build_info",
            "Always 1; the labels say which build of the scaler runs.",
            build,
        );
        grpc.register(&mut registry);
        registry.register_collector(Box::new(EngineCollector(engine)));
        Metrics { registry }
    }

    /// The OpenMetrics text exposition (ends with `# EOF`).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8192);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// Per-ScaledObject state, encoded from the engine at each scrape.
struct EngineCollector(Arc<Engine>);

impl std::fmt::Debug for EngineCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EngineCollector")
    }
}

/// Label values written as given by the encoder, which does not escape: names of Kubernetes
/// objects are safe, but metric and signal names come from tenants' metadata.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Labels of one (namespace, ScaledObject, trigger metric) series, with optional extras.
type Labels = Vec<(&'static str, String)>;

/// One gauge (or counter) family, collected before it is written.
struct GaugeFamily {
    name: &'static str,
    help: &'static str,
    unit: Option<Unit>,
    series: Vec<(Labels, f64)>,
    counter: bool,
}

impl GaugeFamily {
    fn new(name: &'static str, unit: Option<Unit>, help: &'static str) -> Self {
        GaugeFamily {
            name,
            help,
            unit,
            series: Vec::new(),
            counter: false,
        }
    }

    /// A counter family; the encoder adds `_total`.
    fn counter(name: &'static str, help: &'static str) -> Self {
        GaugeFamily {
            counter: true,
            ..GaugeFamily::new(name, None, help)
        }
    }

    fn push(&mut self, labels: Labels, value: f64) {
        self.series.push((labels, value));
    }

    fn encode(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let kind = if self.counter {
            MetricType::Counter
        } else {
            MetricType::Gauge
        };
        let mut metric =
            encoder.encode_descriptor(self.name, self.help, self.unit.as_ref(), kind)?;
        if self.counter {
            for (labels, value) in &self.series {
                let family = metric.encode_family(labels)?;
                // Counts of events: written as integers.
                ConstCounter::new(*value as u64).encode(family)?;
            }
            return Ok(());
        }
        // A family's label set, even an empty one, is written in braces: `name{} 1`.
        if let [(labels, value)] = self.series.as_slice() {
            if labels.is_empty() {
                return ConstGauge::new(*value).encode(metric);
            }
        }
        for (labels, value) in &self.series {
            let family = metric.encode_family(labels)?;
            ConstGauge::new(*value).encode(family)?;
        }
        Ok(())
    }
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl Collector for EngineCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let engine = &self.0;
        let now = engine.now();
        let max_staleness = engine.settings().max_staleness.as_secs_f64();

        let mut objects = GaugeFamily::new(
            "keda_gpu_scaler_scaledobjects",
            None,
            "ScaledObjects registered.",
        );
        objects.push(Vec::new(), engine.len() as f64);
        let mut last_round = GaugeFamily::new(
            "keda_gpu_scaler_last_sample_timestamp",
            Some(Unit::Seconds),
            "Unix time the sampler last finished a round.",
        );
        if let Some(age) = engine.since_last_round() {
            last_round.push(Vec::new(), unix_now() - age.as_secs_f64());
        }
        let mut desired = GaugeFamily::new(
            "keda_gpu_scaler_desired_replicas",
            None,
            "Composite desired capacity after clamps (the value sent to KEDA).",
        );
        let mut active =
            GaugeFamily::new("keda_gpu_scaler_active", None, "1 when IsActive is true.");
        let mut max = GaugeFamily::new(
            "keda_gpu_scaler_max_replicas",
            None,
            "maxReplicas of the ScaledObject's spec.",
        );
        let mut age = GaugeFamily::new(
            "keda_gpu_scaler_sample_age",
            Some(Unit::Seconds),
            "Age of the last sample that had data.",
        );
        let mut stale = GaugeFamily::new(
            "keda_gpu_scaler_stale",
            None,
            "1 when the last good sample is older than max_staleness.",
        );
        let mut demand = GaugeFamily::new(
            "keda_gpu_scaler_signal_demand_replicas",
            None,
            "Demand of each signal in replicas, raw and smoothed.",
        );
        let mut utilisation = GaugeFamily::new(
            "keda_gpu_scaler_signal_utilisation",
            Some(Unit::Other("ratio".into())),
            "Mean reading of each utilisation signal (GPU, GPU memory, KV cache, utilisation extras), 0-1.",
        );
        let mut quantity = GaugeFamily::new(
            "keda_gpu_scaler_signal_quantity",
            None,
            "Total of each quantity signal over the replicas: requests waiting or in service, or an extra signal's count.",
        );
        let mut latency = GaugeFamily::new(
            "keda_gpu_scaler_signal_latency",
            Some(Unit::Seconds),
            "Mean reading of each latency signal.",
        );
        let mut replicas = GaugeFamily::new(
            "keda_gpu_scaler_discovered_replicas",
            None,
            "Endpoints of a service trigger's Service by state: starting (not ready yet) or terminating.",
        );
        let mut attainment = GaugeFamily::new(
            "keda_gpu_scaler_objective_attainment",
            Some(Unit::Other("ratio".into())),
            "SLO mode: the share of requests asked to meet the time-to-first-token objective (stage=asked), the share the model planned for after correcting by what was met (stage=planned), and the share that met it by the replicas' TTFT histogram over the source's window (stage=window) and the last hour (stage=hour), and over the last hour's requests served while nothing waited (stage=quiet: those that missed, missed by their own size, and the correction does not count them).",
        );
        let mut deletion_cost = GaugeFamily::counter(
            "keda_gpu_scaler_pod_deletion_cost_patches",
            "Pod deletion-cost annotations written (podDeletionCost), by result: ok, or refused by the API server.",
        );
        let mut gates = GaugeFamily::counter(
            "keda_gpu_scaler_pod_readiness_gate_patches",
            "Pod readiness-gate conditions written (podReadinessGate: new pods let in, pods taken out of service before a scale-down or put back), by result: ok, or refused by the API server.",
        );
        // One series per (namespace, ScaledObject, trigger metric), whatever the entries behind it.
        for entry in &engine.current_entries() {
            let base: Labels = vec![
                ("namespace", escape(&entry.key.namespace)),
                ("scaledobject", escape(&entry.key.name)),
                ("metric", escape(&entry.spec.metric_name)),
            ];
            let with = |extra: &[(&'static str, &str)]| {
                let mut l = base.clone();
                l.extend(extra.iter().map(|(k, v)| (*k, escape(v))));
                l
            };
            let state = entry.state();
            max.push(base.clone(), entry.spec.limits.max_replicas);
            for (what, n) in [
                ("starting", state.starting),
                ("terminating", state.terminating),
            ] {
                if let Some(n) = n {
                    replicas.push(with(&[("state", what)]), f64::from(n));
                }
            }
            if matches!(&entry.spec.source, crate::spec::SourceSpec::Service(s) if s.deletion_cost)
            {
                for (result, n) in [
                    ("ok", state.deletion_cost_patches),
                    ("refused", state.deletion_cost_failures),
                ] {
                    deletion_cost.push(with(&[("result", result)]), n as f64);
                }
            }
            if matches!(&entry.spec.source, crate::spec::SourceSpec::Service(s) if s.drain.is_some())
            {
                for (result, n) in [("ok", state.gate_patches), ("refused", state.gate_failures)] {
                    gates.push(with(&[("result", result)]), n as f64);
                }
            }
            let Some(decision) = state.decision else {
                continue;
            };
            let sample_age = state.fresh_at.map_or(f64::NAN, |t| now - t);
            desired.push(base.clone(), decision.desired);
            active.push(base.clone(), f64::from(u8::from(decision.active)));
            age.push(base.clone(), sample_age);
            stale.push(
                base.clone(),
                f64::from(u8::from(sample_age > max_staleness)),
            );
            if let Some(o) = &decision.objective {
                for (stage, v) in [
                    ("asked", Some(o.attainment)),
                    ("planned", Some(1.0 - o.planned_miss_share)),
                    ("window", o.met_recently),
                    ("hour", o.met_last_hour),
                    ("quiet", o.quiet_miss_share.map(|q| 1.0 - q)),
                ] {
                    if let Some(v) = v {
                        attainment.push(with(&[("stage", stage)]), v);
                    }
                }
            }
            for s in &decision.signals {
                if let Some(v) = s.raw_demand {
                    demand.push(with(&[("signal", &s.name), ("stage", "raw")]), v);
                }
                if let Some(v) = s.smoothed_demand {
                    demand.push(with(&[("signal", &s.name), ("stage", "smoothed")]), v);
                }
                if let Some(v) = s.value {
                    let labels = with(&[("signal", &s.name)]);
                    match s.model {
                        // Utilisation signals read percentages; the metric is in base units.
                        DemandModel::Utilisation => utilisation.push(labels, v / 100.0),
                        DemandModel::Latency => latency.push(labels, v),
                        DemandModel::Quantity | DemandModel::Backlog => quantity.push(labels, v),
                    }
                }
            }
        }
        for family in [
            objects,
            last_round,
            desired,
            active,
            max,
            age,
            stale,
            demand,
            utilisation,
            quantity,
            latency,
            replicas,
            attainment,
            deletion_cost,
            gates,
        ] {
            family.encode(&mut encoder)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::scrape::exposition;

    fn metrics() -> (Metrics, Arc<GrpcMetrics>) {
        let grpc = Arc::new(GrpcMetrics::new(&[crate::proto::FILE_DESCRIPTOR_SET]).unwrap());
        let engine = Engine::new(Default::default(), &Default::default());
        (Metrics::new(engine, &grpc), grpc)
    }

    #[test]
    fn build_info_is_one_with_the_version() {
        let text = metrics().0.render();
        let parsed = exposition::parse(&text);
        let info = parsed.get("keda_gpu_scaler_build_info");
        assert_eq!(info.len(), 1, "{text}");
        assert_eq!(info[0].value, 1.0);
        assert_eq!(info[0].label("version"), Some(env!("CARGO_PKG_VERSION")));
        let rustc = info[0].label("rustc_version").unwrap();
        assert!(rustc == "unknown" || rustc.starts_with("1."), "{rustc}");
    }

    #[test]
    fn the_exposition_is_openmetrics_that_our_parser_reads_whole() {
        let text = metrics().0.render();
        assert!(text.ends_with("# EOF\n"));
        assert!(text.contains("# TYPE keda_gpu_scaler_sample_age_seconds gauge\n"));
        assert!(text.contains("# UNIT keda_gpu_scaler_sample_age_seconds seconds\n"));
        assert!(text.contains("# TYPE grpc_server_handled counter\n"));
        assert!(text.contains("keda_gpu_scaler_scaledobjects 0"));
        let parsed = exposition::parse(&text);
        assert_eq!(parsed.malformed, 0, "{text}");
        assert!(parsed.has("grpc_server_started_total"));
        assert!(parsed.has("grpc_server_handling_seconds_bucket"));
    }

    /// The names Prometheus stores for each family the exposition declares: a counter's samples
    /// end in `_total`, a histogram's in `_bucket`, `_sum` and `_count`.
    fn sample_names(text: &str) -> Vec<String> {
        let mut names = Vec::new();
        for line in text.lines() {
            let Some(rest) = line.strip_prefix("# TYPE ") else {
                continue;
            };
            let (name, kind) = rest.split_once(' ').unwrap();
            match kind {
                "counter" => names.push(format!("{name}_total")),
                "histogram" => {
                    names.extend(["bucket", "sum", "count"].map(|s| format!("{name}_{s}")))
                }
                _ => names.push(name.to_string()),
            }
        }
        names
    }

    /// The deploy checks refuse a dashboard or alert that reads a name nobody exports, from
    /// this list: it must be what the scaler exports, no more and no less.
    #[test]
    fn the_deploy_checks_list_of_scaler_metrics_is_what_the_scaler_exports() {
        let known = include_str!("../../scripts/deploy-tests/known-metrics.txt");
        let section = known
            .split("\n\n")
            .find(|s| s.starts_with("# keda-gpu-scaler "))
            .expect("the scaler's section");
        let mut listed: Vec<&str> = section.lines().filter(|l| !l.starts_with('#')).collect();
        listed.sort_unstable();
        let text = metrics().0.render();
        let mut exported = sample_names(&text);
        exported.sort_unstable();
        assert_eq!(listed, exported);
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
