//! Parsing the signals: each built-in signal's row of `builtin::BUILTINS`, then the extra signals
//! (`extra.<name>.<field>`).

use super::builtin::{self, Builtin, Defaults, Metric, Series, BUILTINS};
use super::builtin::{DEFAULT_GPU_MEMORY_USED_FREE, DEFAULT_GPU_MEMORY_USED_TOTAL};
use super::model::{MemoryMetrics, MetricSource, SignalSpec};
use super::parser::Parser;
use super::presets::{self, Preset};
use super::registry;
use super::validate::{self, is_extra_name};
use crate::score::DemandModel;

/// The built-in signals SLO mode's planner reads: requests in service and waiting, and the time
/// to first token (the preset's latency histogram).
const OBJECTIVE_READS: &[&str] = &["queue", "inflight", "latency"];

impl Parser<'_> {
    pub(super) fn signals(&mut self) -> Vec<SignalSpec> {
        let mut read = Vec::new();
        // GPU signals first: they read the GPUs, which no preset changes.
        for b in BUILTINS.iter().filter(|b| b.gpu) {
            read.extend(self.builtin(b, None).map(|s| (b, s)));
        }
        if self.kind == "nvml" {
            let gpu_targets = builtin::target_keys(|b| b.gpu).join(" and ");
            for key in builtin::target_keys(|b| !b.gpu) {
                if self.values.contains_key(key) {
                    self.problem(key, format!("source=nvml reads only GPUs: use {gpu_targets}, or source=prometheus for application metrics"));
                }
            }
        }
        let preset = self.preset();
        let slo = self.values.contains_key(super::registry::OBJECTIVE_KEY);
        for b in BUILTINS.iter().filter(|b| !b.gpu) {
            let signal = match self.builtin(b, preset) {
                // SLO mode's planner reads requests in service and waiting, and time to first
                // token, whether or not the user also gives them a target.
                None if slo && OBJECTIVE_READS.contains(&b.name) && !self.target_refused(b) => {
                    self.observed(b, preset)
                }
                s => s,
            };
            read.extend(signal.map(|s| (b, s)));
        }
        // Signals that only raise capacity go last, after the extras, and need another signal.
        let (raising, read): (Vec<_>, Vec<_>) =
            read.into_iter().partition(|(b, _)| b.only_raises());
        let mut signals: Vec<SignalSpec> = read.into_iter().map(|(_, s)| s).collect();
        signals.extend(self.extras());
        let alone = !signals.iter().any(|s| s.asks) && !slo;
        for (b, s) in raising {
            if alone {
                let others = builtin::target_keys(|b| !b.only_raises()).join(", ");
                self.problem(
                    b.target_key,
                    format!("{} only pushes capacity up, so it cannot be the only signal; add {others} or an extra signal", b.name),
                );
            }
            signals.push(s);
        }
        let any_target_problem = self
            .problems
            .iter()
            .any(|p| p.key.ends_with("Target") || p.key.ends_with("TargetMs"));
        if signals.is_empty() && !any_target_problem && !slo {
            let targets = builtin::target_keys(|_| true);
            self.problem(
                targets[0],
                format!(
                    "no signal has a target; set at least one of {} or extra.<name>.target",
                    targets.join(", ")
                ),
            );
        }
        signals
    }

    /// Whether the signal's target key is set (refused or not).
    fn target_refused(&self, b: &Builtin) -> bool {
        self.values.contains_key(b.target_key)
    }

    /// A built-in signal SLO mode reads without a target: aggregated and shown, asks nothing.
    fn observed(&mut self, b: &Builtin, preset: Option<Preset>) -> Option<SignalSpec> {
        let metrics = self.series(b, preset);
        if let Series::Gauge(m) | Series::Fraction(m) | Series::Histogram(m) = &b.series {
            self.check_named(b, m, &metrics, preset);
        }
        Some(SignalSpec {
            name: b.name.into(),
            model: b.model,
            target: 1.0,
            metrics,
            asks: false,
        })
    }

    /// The series (or query) a built-in signal reads.
    fn series(&mut self, b: &Builtin, preset: Option<Preset>) -> MetricSource {
        let series = match &b.series {
            Series::Gauge(m) => MetricSource::Gauge(self.metric_names(m, preset)),
            Series::Fraction(m) => MetricSource::Fraction(self.metric_names(m, preset)),
            Series::Histogram(m) => {
                let names = self.metric_names(m, preset);
                MetricSource::Histogram(names.into_iter().next().unwrap_or_default())
            }
            Series::Memory { used, total, free } => {
                MetricSource::Memory(self.memory_metrics(used, total, free))
            }
        };
        self.query(b.query_key).map_or(series, MetricSource::Query)
    }

    /// One built-in signal: its series (or query) and, when its target is set, the signal.
    fn builtin(&mut self, b: &Builtin, preset: Option<Preset>) -> Option<SignalSpec> {
        let metrics = self.series(b, preset);
        let target = self.read(b.target_key, |raw| {
            validate::target(raw, b.target_max, b.target_unit)
        })?;
        if let Series::Gauge(m) | Series::Fraction(m) | Series::Histogram(m) = &b.series {
            self.check_named(b, m, &metrics, preset);
        }
        Some(SignalSpec {
            name: b.name.into(),
            model: b.model,
            target: target / b.target_divisor,
            metrics,
            asks: true,
        })
    }

    /// The series named by the signal's metric key, else the preset's (or fixed) defaults.
    fn metric_names(&mut self, m: &Metric, preset: Option<Preset>) -> Vec<String> {
        if self.text(m.key).is_none() {
            let names = match &m.defaults {
                Defaults::Fixed(names) => names,
                Defaults::Preset { names, .. } => {
                    names(preset.unwrap_or(Preset::GpuWorkload).metrics())
                }
            };
            return names.iter().map(|n| n.to_string()).collect();
        }
        let check = if m.matchers {
            validate::metric_ref
        } else {
            validate::metric_name
        };
        self.read(m.key, check).into_iter().collect()
    }

    /// A signal that is on must read something: where the preset names no series and no key
    /// does, say why and what to set.
    fn check_named(
        &mut self,
        b: &Builtin,
        m: &Metric,
        metrics: &MetricSource,
        preset: Option<Preset>,
    ) {
        let unnamed = match metrics {
            MetricSource::Gauge(names) | MetricSource::Fraction(names) => names.is_empty(),
            MetricSource::Histogram(name) => name.is_empty(),
            _ => false,
        };
        // A bad metric key has its own problem already.
        if !unnamed || self.text(m.key).is_some() {
            return;
        }
        let Defaults::Preset {
            none: Some(none), ..
        } = &m.defaults
        else {
            return;
        };
        let why = match preset {
            Some(p) => format!(
                "preset {} sets no {} metric: {}",
                p.name(),
                none.what,
                (none.why)(p.metrics())
            ),
            None => "no preset is set".into(),
        };
        self.problem(b.target_key, format!("{why}; {}", none.fix));
    }

    /// `preset`, when set and known.
    fn preset(&mut self) -> Option<Preset> {
        self.read("preset", |raw| {
            Preset::parse(raw)
                .ok_or_else(|| format!("'{raw}' is not accepted; expected {}", presets::NAMES))
        })
    }

    /// A full PromQL override, when given.
    fn query(&mut self, key: &str) -> Option<String> {
        self.text(key)?;
        if self.ctx.egress.is_some_and(|p| !p.allow_custom_queries) {
            self.problem(
                key,
                "full PromQL from metadata can read any namespace's series, so the operator has not allowed it (setting egress.allow_custom_queries); use the built-in signals with deployment or podSelector",
            );
            return None;
        }
        self.read(key, validate::query)
    }

    /// The GPU memory series: `used_key` with exactly one of the others, else both default pairs.
    fn memory_metrics(
        &mut self,
        used_key: &str,
        total_key: &str,
        free_key: &str,
    ) -> Vec<MemoryMetrics> {
        let used = self.read(used_key, validate::metric_name);
        let total = self.read(total_key, validate::metric_name);
        let free = self.read(free_key, validate::metric_name);
        match (used, total, free) {
            (None, None, None) => {
                let ((used, total), (used_dcgm, free)) =
                    (DEFAULT_GPU_MEMORY_USED_TOTAL, DEFAULT_GPU_MEMORY_USED_FREE);
                vec![
                    MemoryMetrics::UsedTotal {
                        used: used.into(),
                        total: total.into(),
                    },
                    MemoryMetrics::UsedFree {
                        used: used_dcgm.into(),
                        free: free.into(),
                    },
                ]
            }
            (Some(used), Some(total), None) => vec![MemoryMetrics::UsedTotal { used, total }],
            (Some(used), None, Some(free)) => vec![MemoryMetrics::UsedFree { used, free }],
            _ => {
                if [used_key, total_key, free_key]
                    .iter()
                    .any(|k| self.text(k).is_some())
                {
                    self.problem(
                        used_key,
                        format!(
                            "set {used_key} together with exactly one of {total_key} or {free_key}"
                        ),
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
                .filter_map(|k| registry::extra_key(k))
                .map(|(name, _)| name.to_string())
                .collect();
            n.dedup();
            n
        };
        let mut out = Vec::new();
        for name in names {
            let key = |field: &str| format!("extra.{name}.{field}");
            if !is_extra_name(&name) || BUILTINS.iter().any(|b| b.name == name) {
                self.problem(
                    &key("target"),
                    format!("extra signal name '{name}' is not accepted; expected 1-32 characters of a-z, 0-9 or '_', not one of {}", builtin_names()),
                );
                continue;
            }
            let metric = self
                .read(&key("metric"), validate::metric_name)
                .map(|m| MetricSource::Gauge(vec![m]));
            let query = self.query(&key("query")).map(MetricSource::Query);
            let target = self.read(&key("target"), |raw| validate::target(raw, 1e12, ""));
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
                    asks: true,
                });
            }
        }
        out
    }
}

fn builtin_names() -> String {
    BUILTINS
        .iter()
        .map(|b| b.name)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{base, in_ns, rejects};
    use crate::spec::*;

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
}
