//! The built-in signals, one table row each: the keys that set them, the series they read when
//! no key names one, and how their target is checked. Adding a built-in signal is adding a row;
//! the key registry, the parser and its messages all read this table.

use super::presets::{
    PresetMetrics, WORKLOAD_INFLIGHT_METRIC, WORKLOAD_LATENCY_METRIC, WORKLOAD_QUEUE_METRIC,
};
use crate::score::DemandModel;

pub const DEFAULT_GPU_UTIL_METRICS: &[&str] = &[
    "workload_accelerator_utilization_percent",
    "DCGM_FI_DEV_GPU_UTIL",
];
/// With no preset and no key naming a series, the signals read what gpu-workload exports.
pub const DEFAULT_QUEUE_METRIC: &str = WORKLOAD_QUEUE_METRIC;
pub const DEFAULT_INFLIGHT_METRIC: &str = WORKLOAD_INFLIGHT_METRIC;
pub const DEFAULT_LATENCY_METRIC: &str = WORKLOAD_LATENCY_METRIC;
/// GPU memory with no `gpuMemory*Metric` key: the workload's used/total pair, else
/// dcgm-exporter's used/free pair (it reports no total).
pub const DEFAULT_GPU_MEMORY_USED_TOTAL: (&str, &str) = (
    "workload_accelerator_memory_used_bytes",
    "workload_accelerator_memory_total_bytes",
);
pub const DEFAULT_GPU_MEMORY_USED_FREE: (&str, &str) =
    ("DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_FB_FREE");

/// One built-in signal.
pub struct Builtin {
    /// Its name in the scorer and in breakdowns (`SignalSpec::name`).
    pub name: &'static str,
    pub model: DemandModel,
    /// The key holding its target; the signal is on only when this key is set.
    pub target_key: &'static str,
    /// The largest target accepted (the smallest is `MIN_TARGET`).
    pub target_max: f64,
    /// What the target counts, as the error for a bad one says it (" (percent)").
    pub target_unit: &'static str,
    /// The target as written, divided by this, is the target the scorer uses (milliseconds to
    /// seconds for latency).
    pub target_divisor: f64,
    /// Which series it reads.
    pub series: Series,
    /// The key holding a full PromQL query that replaces the series (source=prometheus only).
    pub query_key: &'static str,
    /// Read from the GPUs themselves, so source=nvml can serve it, and no preset changes it.
    pub gpu: bool,
}

/// Which series a built-in signal reads, and how they are turned into one number per pod.
pub enum Series {
    /// Gauges, summed per pod or averaged (utilisation).
    Gauge(Metric),
    /// Gauges holding a 0-1 fraction, averaged per pod and read as percent.
    Fraction(Metric),
    /// A classic histogram's base name.
    Histogram(Metric),
    /// GPU memory in use over the total, or over used + free: `used` with exactly one of the
    /// other two keys, else the `DEFAULT_GPU_MEMORY_*` pairs.
    Memory {
        used: &'static str,
        total: &'static str,
        free: &'static str,
    },
}

/// The key naming a signal's series, and the series read when it is not set.
pub struct Metric {
    pub key: &'static str,
    /// Whether the key may carry label matchers (`name{label="value"}`), or only a name.
    pub matchers: bool,
    pub defaults: Defaults,
}

/// The series a signal reads when its metric key is not set.
pub enum Defaults {
    /// The same names whatever the preset.
    Fixed(&'static [&'static str]),
    /// The preset's names (gpu-workload's when no preset is set); the first one a pod exposes
    /// is read.
    Preset {
        names: fn(&'static PresetMetrics) -> &'static [&'static str],
        /// Where some preset names none: why it does not, and what to set instead. Presets
        /// name series for every other signal (the presets' tests check it).
        none: Option<NoSeries>,
    },
}

/// What a target without a series is told.
pub struct NoSeries {
    /// What the preset lacks, as in "preset tgi sets no KV-cache metric".
    pub what: &'static str,
    /// The preset's own reason.
    pub why: fn(&'static PresetMetrics) -> &'static str,
    pub fix: &'static str,
}

/// Every built-in signal, in the order signals are read and reported (GPU signals first: they
/// need no preset). A signal with the latency model only raises capacity, so it is added after
/// every other signal, extras included, and cannot be the only one.
pub const BUILTINS: &[Builtin] = &[
    Builtin {
        name: "gpu_util",
        model: DemandModel::Utilisation,
        target_key: "gpuUtilTarget",
        target_max: 100.0,
        target_unit: " (percent)",
        target_divisor: 1.0,
        series: Series::Gauge(Metric {
            key: "gpuUtilMetric",
            matchers: false,
            defaults: Defaults::Fixed(DEFAULT_GPU_UTIL_METRICS),
        }),
        query_key: "gpuUtilQuery",
        gpu: true,
    },
    Builtin {
        name: "gpu_memory",
        model: DemandModel::Utilisation,
        target_key: "gpuMemoryTarget",
        target_max: 100.0,
        target_unit: " (percent)",
        target_divisor: 1.0,
        series: Series::Memory {
            used: "gpuMemoryUsedMetric",
            total: "gpuMemoryTotalMetric",
            free: "gpuMemoryFreeMetric",
        },
        query_key: "gpuMemoryQuery",
        gpu: true,
    },
    Builtin {
        name: crate::score::composite::QUEUE,
        model: DemandModel::Backlog,
        target_key: "queueTarget",
        target_max: 1e9,
        target_unit: " (waiting requests per replica)",
        target_divisor: 1.0,
        series: Series::Gauge(Metric {
            key: "queueMetric",
            matchers: true,
            defaults: Defaults::Preset {
                names: |m| m.queue,
                none: None,
            },
        }),
        query_key: "queueQuery",
        gpu: false,
    },
    Builtin {
        name: crate::score::composite::INFLIGHT,
        model: DemandModel::Quantity,
        target_key: "inflightTarget",
        target_max: 1e9,
        target_unit: " (requests in service per replica)",
        target_divisor: 1.0,
        series: Series::Gauge(Metric {
            key: "inflightMetric",
            matchers: true,
            defaults: Defaults::Preset {
                names: |m| m.inflight,
                none: None,
            },
        }),
        query_key: "inflightQuery",
        gpu: false,
    },
    Builtin {
        name: "kv_cache",
        model: DemandModel::Utilisation,
        target_key: "kvCacheTarget",
        target_max: 100.0,
        target_unit: " (percent of the KV cache in use)",
        target_divisor: 1.0,
        series: Series::Fraction(Metric {
            key: "kvCacheMetric",
            matchers: true,
            defaults: Defaults::Preset {
                names: |m| m.kv_cache,
                none: Some(NoSeries {
                    what: "KV-cache",
                    why: |m| m.kv_cache_missing,
                    fix: "set preset (vllm or sglang) or kvCacheMetric, a gauge of the 0-1 fraction in use",
                }),
            },
        }),
        query_key: "kvCacheQuery",
        gpu: false,
    },
    Builtin {
        name: "latency",
        model: DemandModel::Latency,
        target_key: "latencyTargetMs",
        target_max: 3_600_000.0,
        target_unit: " (milliseconds)",
        target_divisor: 1000.0,
        series: Series::Histogram(Metric {
            key: "latencyMetric",
            matchers: false,
            defaults: Defaults::Preset {
                names: |m| m.latency.as_slice(),
                none: None,
            },
        }),
        query_key: "latencyQuery",
        gpu: false,
    },
];

impl Builtin {
    /// Every key this signal reads: target, metric key(s), query.
    pub fn keys(&self) -> impl Iterator<Item = &'static str> {
        let metrics = match &self.series {
            Series::Gauge(m) | Series::Fraction(m) | Series::Histogram(m) => vec![m.key],
            Series::Memory { used, total, free } => vec![*used, *total, *free],
        };
        std::iter::once(self.target_key)
            .chain(metrics)
            .chain(std::iter::once(self.query_key))
    }

    /// Whether it only raises capacity, so it is added last and cannot stand alone.
    pub fn only_raises(&self) -> bool {
        self.model == DemandModel::Latency
    }
}

/// The target keys of the signals matching `pick`, in table order.
pub fn target_keys(pick: impl Fn(&Builtin) -> bool) -> Vec<&'static str> {
    BUILTINS
        .iter()
        .filter(|b| pick(b))
        .map(|b| b.target_key)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::presets::Preset;

    #[test]
    fn names_and_keys_are_unique_and_every_preset_names_each_series() {
        let mut keys: Vec<&str> = BUILTINS.iter().flat_map(Builtin::keys).collect();
        let n = keys.len();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), n, "a key is in two rows");
        let mut names: Vec<&str> = BUILTINS.iter().map(|b| b.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), BUILTINS.len());
        for b in BUILTINS {
            let (Series::Gauge(m) | Series::Fraction(m) | Series::Histogram(m)) = &b.series else {
                continue;
            };
            let Defaults::Preset { names, none } = &m.defaults else {
                continue;
            };
            for p in Preset::ALL {
                let listed = names(p.metrics());
                match none {
                    None => assert!(!listed.is_empty(), "{p:?} names no series for {}", b.name),
                    Some(none) => {
                        assert_eq!(listed.is_empty(), !(none.why)(p.metrics()).is_empty())
                    }
                }
            }
        }
    }
}
