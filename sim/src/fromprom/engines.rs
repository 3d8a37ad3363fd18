//! Which of each serving engine's own series `--from-prometheus` reads. Pure data.
//!
//! The names follow the same sources as the scaler's presets (`docs/presets.md` lists the
//! versions): vLLM's `vllm/v1/metrics/loggers.py`, SGLang's `srt/metrics/collector.py`, TGI's
//! router and Triton's metrics with the TensorRT-LLM backend's families. Where an engine renamed a
//! series, the current name comes first and the series read is the first one Prometheus holds for
//! the selector. `None` and empty lists mean the engine exports no such series; the run then says
//! what it does instead.

/// How a mean per request is read.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mean {
    /// A classic histogram (base name, maybe with matchers): its buckets, `_sum` and `_count`.
    /// The unit follows the name, as the scaler reads latency histograms (`_ms`, `_us`).
    Histogram(&'static str),
    /// A counter of the quantity summed over requests, divided by the completion counter.
    Counter(&'static str),
}

/// One engine's series.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Engine {
    pub preset: &'static str,
    /// Counters of finished requests (all finish reasons are summed).
    pub completions: &'static [&'static str],
    /// Prompt tokens per request: histograms first, else a counter (mean only).
    pub prompt_tokens: &'static [Mean],
    pub generation_tokens: &'static [Mean],
    /// Time to first token.
    pub ttft: &'static [Mean],
    /// Time per output token (per token or per request, the mean is what is used).
    pub tpot: &'static [Mean],
    /// Time in prefill (scheduled to first token, no queue wait).
    pub prefill: &'static [Mean],
    /// Time waiting in the engine's queue.
    pub queue: &'static [Mean],
    /// End-to-end time of a request.
    pub e2e: &'static [Mean],
    /// Gauges of requests being served (summed over a replica's series).
    pub running: &'static [&'static str],
    /// The label that names the model, to warn when a selector mixes several.
    pub model_label: Option<&'static str>,
    /// What the run warns about this engine whatever it finds.
    pub note: &'static str,
}

pub const PRESETS: &str = "vllm, sglang, tgi or triton";

/// The engine a `--preset` names.
pub fn engine(preset: &str) -> Option<&'static Engine> {
    ENGINES.iter().find(|e| e.preset == preset)
}

pub const ENGINES: &[Engine] = &[
    // Labels model_name and engine (one series per data-parallel engine); request_success also
    // finished_reason. Token histograms use 1-2-5 buckets up to max_model_len.
    Engine {
        preset: "vllm",
        completions: &["vllm:request_success_total"],
        prompt_tokens: &[
            Mean::Histogram("vllm:request_prompt_tokens"),
            Mean::Counter("vllm:prompt_tokens_total"),
        ],
        generation_tokens: &[
            Mean::Histogram("vllm:request_generation_tokens"),
            Mean::Counter("vllm:generation_tokens_total"),
        ],
        ttft: &[Mean::Histogram("vllm:time_to_first_token_seconds")],
        // Renamed in later releases; the old name is still served for a while.
        tpot: &[
            Mean::Histogram("vllm:inter_token_latency_seconds"),
            Mean::Histogram("vllm:time_per_output_token_seconds"),
        ],
        prefill: &[Mean::Histogram("vllm:request_prefill_time_seconds")],
        queue: &[Mean::Histogram("vllm:request_queue_time_seconds")],
        e2e: &[Mean::Histogram("vllm:e2e_request_latency_seconds")],
        running: &["vllm:num_requests_running"],
        model_label: Some("model_name"),
        note: "",
    },
    // Token histograms only with --collect-tokens-histogram; ITL is per token.
    Engine {
        preset: "sglang",
        completions: &["sglang:num_requests_total"],
        prompt_tokens: &[
            Mean::Histogram("sglang:prompt_tokens_histogram"),
            Mean::Counter("sglang:prompt_tokens_total"),
        ],
        generation_tokens: &[
            Mean::Histogram("sglang:generation_tokens_histogram"),
            Mean::Counter("sglang:generation_tokens_total"),
        ],
        ttft: &[Mean::Histogram("sglang:time_to_first_token_seconds")],
        tpot: &[Mean::Histogram("sglang:inter_token_latency_seconds")],
        prefill: &[],
        queue: &[],
        e2e: &[Mean::Histogram("sglang:e2e_request_latency_seconds")],
        running: &["sglang:num_running_reqs"],
        model_label: Some("model_name"),
        note: "SGLang exports token-length histograms only when started with --collect-tokens-histogram; without them each step's lengths are drawn around the token counters' means",
    },
    // metrics-exporter-prometheus: no labels, no _total suffix; duration histograms in seconds.
    Engine {
        preset: "tgi",
        completions: &["tgi_request_success"],
        prompt_tokens: &[Mean::Histogram("tgi_request_input_length")],
        generation_tokens: &[Mean::Histogram("tgi_request_generated_tokens")],
        ttft: &[],
        tpot: &[Mean::Histogram("tgi_request_mean_time_per_token_duration")],
        prefill: &[],
        queue: &[Mean::Histogram("tgi_request_queue_duration")],
        e2e: &[Mean::Histogram("tgi_request_duration")],
        running: &["tgi_batch_current_size"],
        model_label: None,
        note: "TGI exports no time-to-first-token histogram: prefill time is what remains of the end-to-end time after the queue wait and the decode time",
    },
    // Labels model and version; the TensorRT-LLM backend adds the token-length families (buckets
    // 10, 50, 100, 500, 1000) and the request gauges split by request_type.
    Engine {
        preset: "triton",
        completions: &["nv_inference_request_success"],
        prompt_tokens: &[Mean::Histogram(
            "nv_llm_input_token_len{response_metric_type=\"total_input_tokens\"}",
        )],
        generation_tokens: &[Mean::Histogram(
            "nv_llm_output_token_len{response_metric_type=\"total_output_tokens\"}",
        )],
        ttft: &[Mean::Histogram("nv_inference_first_response_histogram_ms")],
        tpot: &[],
        prefill: &[],
        queue: &[Mean::Counter("nv_inference_queue_duration_us")],
        e2e: &[Mean::Counter("nv_inference_request_duration_us")],
        running: &["nv_trt_llm_request_metrics{request_type=\"active\"}"],
        model_label: Some("model"),
        note: "Triton counts every model of an ensemble: select one with --selector 'model=\"...\"' (the token histograms are the tensorrt_llm model's); its token buckets end at 1000, so longer requests are drawn from a tail fitted to the histograms' sums",
    },
];

/// The unit (seconds per unit) of a latency series, from its name, as the scaler reads it.
pub fn unit_seconds(metric: &str) -> f64 {
    let name = metric.split('{').next().unwrap_or(metric);
    let name = name.strip_suffix("_total").unwrap_or(name);
    keda_gpu_scaler::sources::scrape::histogram::unit_seconds(name)
}

/// The metric name of a series reference (without matchers).
pub fn name_of(metric: &str) -> &str {
    metric.split('{').next().unwrap_or(metric)
}

#[cfg(test)]
mod tests {
    use super::*;
    use keda_gpu_scaler::spec::presets::Preset;

    #[test]
    fn every_engine_has_a_completion_counter_and_the_presets_running_gauge() {
        for e in ENGINES {
            assert!(!e.completions.is_empty(), "{}", e.preset);
            let preset = Preset::parse(e.preset).expect("a scaler preset");
            // The running gauge is the scaler preset's in-flight series: one list of names.
            assert_eq!(e.running, preset.metrics().inflight, "{}", e.preset);
            for m in e
                .prompt_tokens
                .iter()
                .chain(e.generation_tokens)
                .chain(e.ttft)
                .chain(e.tpot)
                .chain(e.prefill)
                .chain(e.queue)
                .chain(e.e2e)
            {
                let (Mean::Histogram(n) | Mean::Counter(n)) = m;
                assert!(keda_gpu_scaler::spec::MetricRef::parse(n).is_some(), "{n}");
            }
        }
        assert_eq!(engine("vllm").unwrap().preset, "vllm");
        assert!(engine("gpu-workload").is_none());
        assert_eq!(
            unit_seconds("nv_inference_first_response_histogram_ms"),
            1e-3
        );
        assert_eq!(unit_seconds("nv_inference_request_duration_us"), 1e-6);
        assert_eq!(unit_seconds("vllm:e2e_request_latency_seconds"), 1.0);
    }

    #[test]
    fn the_vllm_names_are_those_of_the_fixture_where_it_has_them() {
        let fixture = include_str!("../../../tests/fixtures/engines/vllm.prom");
        let e = engine("vllm").unwrap();
        for name in [
            e.completions[0],
            e.running[0],
            "vllm:time_to_first_token_seconds_bucket",
            "vllm:e2e_request_latency_seconds_bucket",
            "vllm:request_queue_time_seconds_bucket",
        ] {
            assert!(fixture.contains(&format!("\n{name}{{")), "{name}");
        }
    }
}
