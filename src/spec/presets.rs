//! Engine presets: which metrics of a serving engine feed queue, in-flight, latency and KV-cache.
//!
//! Pure data, read by the spec parser only, and depending on nothing in it (the built-in signals'
//! defaults are the gpu-workload names defined here). Every name was checked against the engine's own source
//! or documentation (docs/presets.md lists the versions); where an engine renamed a metric, the
//! current name comes first and the previous one after it, and a pod is read from the first one
//! it exposes. Explicit `*Metric` / `*Query` keys override any one of these.

/// What the gpu-workload crate exports, which is also what the built-in signals read when
/// neither a preset nor a key names a series (`spec::DEFAULT_*_METRIC`).
pub const WORKLOAD_QUEUE_METRIC: &str = "workload_queue_length";
pub const WORKLOAD_INFLIGHT_METRIC: &str = "workload_inflight_requests";
/// Queue wait, not request duration: the latency signal must read a latency more replicas can
/// lower (a long request stays long on an idle replica; its wait for a slot does not).
pub const WORKLOAD_LATENCY_METRIC: &str = "workload_queue_wait_seconds";

/// A serving engine whose metrics the scaler knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Preset {
    Vllm,
    Sglang,
    Tgi,
    Triton,
    GpuWorkload,
}

impl Preset {
    /// Every preset, in the order the docs list them.
    pub const ALL: [Preset; 5] = [
        Preset::Vllm,
        Preset::Sglang,
        Preset::Tgi,
        Preset::Triton,
        Preset::GpuWorkload,
    ];
}

/// The metric names one preset sets. Empty lists mean the engine exports no such metric.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PresetMetrics {
    /// Gauges of requests waiting for a slot, summed per pod.
    pub queue: &'static [&'static str],
    /// Gauges of requests being served, summed per pod (every preset has both).
    pub inflight: &'static [&'static str],
    /// A classic histogram of a latency replicas can lower (time to first token, else queue wait).
    pub latency: Option<&'static str>,
    /// Gauges of KV-cache use as a 0-1 fraction, averaged per pod.
    pub kv_cache: &'static [&'static str],
    /// Why `kv_cache` is empty, for the error a `kvCacheTarget` without `kvCacheMetric` gets.
    /// Entries of every list are `spec::MetricRef` text: a name, maybe with label matchers.
    pub kv_cache_missing: &'static str,
}

pub const NAMES: &str = "vllm, sglang, tgi, triton or gpu-workload";

impl Preset {
    pub fn parse(s: &str) -> Option<Preset> {
        Some(match s {
            "vllm" => Preset::Vllm,
            "sglang" => Preset::Sglang,
            "tgi" => Preset::Tgi,
            "triton" => Preset::Triton,
            "gpu-workload" => Preset::GpuWorkload,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Preset::Vllm => "vllm",
            Preset::Sglang => "sglang",
            Preset::Tgi => "tgi",
            Preset::Triton => "triton",
            Preset::GpuWorkload => "gpu-workload",
        }
    }

    pub fn metrics(self) -> &'static PresetMetrics {
        match self {
            // vllm/v1/metrics/loggers.py. Labels model_name and engine (one series per
            // data-parallel engine in the pod). kv_cache_usage_perc replaced gpu_cache_usage_perc
            // in 0.9; both are 0-1 despite the name.
            Preset::Vllm => &PresetMetrics {
                queue: &["vllm:num_requests_waiting"],
                inflight: &["vllm:num_requests_running"],
                latency: Some("vllm:time_to_first_token_seconds"),
                kv_cache: &["vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"],
                kv_cache_missing: "",
            },
            // python/sglang/srt/metrics/collector.py. token_usage is the 0-1 share of the KV
            // token pool in use.
            Preset::Sglang => &PresetMetrics {
                queue: &["sglang:num_queue_reqs"],
                inflight: &["sglang:num_running_reqs"],
                latency: Some("sglang:time_to_first_token_seconds"),
                kv_cache: &["sglang:token_usage"],
                kv_cache_missing: "",
            },
            // router/src/server.rs and backends/v3: no time-to-first-token histogram, so the
            // queue wait (seconds) is the latency replicas can lower. tgi_batch_total_tokens is
            // described but never set, so there is no KV-cache fraction to read.
            Preset::Tgi => &PresetMetrics {
                queue: &["tgi_queue_size"],
                inflight: &["tgi_batch_current_size"],
                latency: Some("tgi_request_queue_duration"),
                kv_cache: &[],
                kv_cache_missing:
                    "TGI exports no KV-cache usage (tgi_batch_total_tokens is never set)",
            },
            // docs/user_guide/metrics.md and the TensorRT-LLM backend's families (one metric
            // split by a label, selected with a matcher). The first-response histogram is in
            // milliseconds and needs --metrics-config histogram_latencies=true. Other backends
            // have only the pending count (queue); in-flight and KV cache are TensorRT-LLM's.
            Preset::Triton => &PresetMetrics {
                queue: &[
                    "nv_trt_llm_request_metrics{request_type=\"waiting\"}",
                    "nv_inference_pending_request_count",
                ],
                inflight: &["nv_trt_llm_request_metrics{request_type=\"active\"}"],
                latency: Some("nv_inference_first_response_histogram_ms"),
                kv_cache: &["nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type=\"fraction\"}"],
                kv_cache_missing: "",
            },
            // The workload crate's own metrics: the names the scaler reads with no preset.
            Preset::GpuWorkload => &PresetMetrics {
                queue: &[WORKLOAD_QUEUE_METRIC],
                inflight: &[WORKLOAD_INFLIGHT_METRIC],
                latency: Some(WORKLOAD_LATENCY_METRIC),
                kv_cache: &[],
                kv_cache_missing: "gpu-workload has no KV cache",
            },
        }
    }
}

/// The bucket bounds an engine's latency histogram is exported with, in the histogram's own
/// unit (`_ms`: milliseconds, else seconds), for the presets' time-to-first-token histograms
/// whose bounds are fixed in the engine's code (the fixtures in `tests/fixtures/engines/` hold
/// them). None for other metrics: their bounds are not known here.
pub fn histogram_bounds(metric: &str) -> Option<&'static [f64]> {
    match metric {
        "vllm:time_to_first_token_seconds" => Some(&[
            0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
            10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
        ]),
        "sglang:time_to_first_token_seconds" => Some(&[
            0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 2.0, 4.0, 6.0, 8.0, 10.0, 20.0, 40.0, 60.0, 80.0, 100.0,
            200.0, 400.0,
        ]),
        // Triton's default first-response buckets; `--metrics-config` can change them.
        "nv_inference_first_response_histogram_ms" => Some(&[100.0, 500.0, 2000.0, 5000.0]),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_bounds_are_the_engines_exported_buckets() {
        let fixtures =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/engines");
        for (file, metric) in [
            ("vllm.prom", "vllm:time_to_first_token_seconds"),
            ("sglang.prom", "sglang:time_to_first_token_seconds"),
            ("triton.prom", "nv_inference_first_response_histogram_ms"),
        ] {
            let text = std::fs::read_to_string(fixtures.join(file)).unwrap();
            let prefix = format!("{metric}_bucket{{");
            let mut exported: Vec<f64> = text
                .lines()
                .filter(|l| l.starts_with(&prefix))
                .filter_map(|l| l.split("le=\"").nth(1)?.split('"').next()?.parse().ok())
                .filter(|v: &f64| v.is_finite())
                .collect();
            exported.sort_by(f64::total_cmp);
            exported.dedup();
            assert_eq!(
                histogram_bounds(metric).unwrap(),
                exported.as_slice(),
                "{file}"
            );
        }
        assert_eq!(histogram_bounds("tgi_request_queue_duration"), None);
    }

    #[test]
    fn every_preset_round_trips_and_names_valid_metrics() {
        for p in Preset::ALL {
            assert_eq!(Preset::parse(p.name()), Some(p));
            assert!(NAMES.contains(p.name()));
            let m = p.metrics();
            assert!(!m.queue.is_empty() && !m.inflight.is_empty(), "{p:?}");
            assert_eq!(m.kv_cache.is_empty(), !m.kv_cache_missing.is_empty());
            for name in m.queue.iter().chain(m.inflight).chain(m.kv_cache) {
                assert!(crate::spec::MetricRef::parse(name).is_some(), "{name}");
            }
        }
        assert_eq!(Preset::parse("VLLM"), None);
    }
}
