//! Engine presets read `/metrics` bodies shaped like vLLM's, SGLang's, TGI's and Triton's
//! (tests/fixtures/engines), through the real scrape path and through a real Prometheus.

mod support;

use std::time::{Duration, Instant};

use keda_gpu_scaler::proto::ScaledObjectRef;
use keda_gpu_scaler::server::Running;
use serde_json::Value;
use support::engines::{self, SGLANG, TGI, TRITON, VLLM};
use support::prometheus::{Job, Prometheus};
use support::*;

struct Engine {
    preset: &'static str,
    /// The fixture body, as its engine would serve it.
    body: String,
    /// The latency histogram the preset reads, grown between scrapes so it has a p95.
    histogram: &'static str,
    targets: &'static [(&'static str, &'static str)],
    /// Expected value per signal: totals per pod, percent, and p95 seconds from the fixture's
    /// buckets (worked out by hand with histogram_quantile's interpolation).
    expect: &'static [(&'static str, f64)],
}

/// A target for every signal the engines export (latency high enough never to bind).
const EVERY_TARGET: &[(&str, &str)] = &[
    ("queueTarget", "1"),
    ("inflightTarget", "1"),
    ("kvCacheTarget", "50"),
    ("latencyTargetMs", "100000"),
];

fn engines() -> Vec<Engine> {
    let old_vllm: String = VLLM
        .lines()
        .filter(|l| !l.contains("vllm:kv_cache_usage_perc"))
        .map(|l| format!("{l}\n"))
        .collect();
    vec![
        Engine {
            preset: "vllm",
            body: VLLM.to_string(),
            histogram: "vllm:time_to_first_token_seconds",
            targets: EVERY_TARGET,
            // TTFT: rank 0.95 x 1038 = 986.1 in (0.25, 0.5]: 0.25 + 0.25 x 86.1 / 110.
            expect: &[
                ("queue", 3.0),
                ("inflight", 12.0),
                ("kv_cache", 42.0),
                ("latency", 0.445_681_818),
            ],
        },
        // A vLLM from before the rename exports only vllm:gpu_cache_usage_perc.
        Engine {
            preset: "vllm",
            body: engines::set(&old_vllm, "vllm:gpu_cache_usage_perc", 0.66),
            histogram: "vllm:time_to_first_token_seconds",
            targets: &[("kvCacheTarget", "50")],
            expect: &[("kv_cache", 66.0)],
        },
        Engine {
            preset: "sglang",
            body: SGLANG.to_string(),
            histogram: "sglang:time_to_first_token_seconds",
            targets: EVERY_TARGET,
            // rank 864.5 in (0.4, 0.6]: 0.4 + 0.2 x 64.5 / 80.
            expect: &[
                ("queue", 2.0),
                ("inflight", 10.0),
                ("kv_cache", 55.0),
                ("latency", 0.56125),
            ],
        },
        Engine {
            preset: "tgi",
            body: TGI.to_string(),
            histogram: "tgi_request_queue_duration",
            targets: &[
                ("queueTarget", "1"),
                ("inflightTarget", "1"),
                ("latencyTargetMs", "100000"),
            ],
            // rank 2080.5 in TGI's geometric buckets (0.748, 1.122]: 0.979 s.
            expect: &[
                ("queue", 5.0),
                ("inflight", 16.0),
                ("latency", 0.979_046_851),
            ],
        },
        Engine {
            preset: "triton",
            body: TRITON.to_string(),
            histogram: "nv_inference_first_response_histogram_ms",
            targets: EVERY_TARGET,
            // The TensorRT-LLM families, selected by label: waiting 5, active 14, KV fraction
            // 0.775; first response in ms: rank 4864 in (500, 2000]: 500 + 1500 x 64 / 310 =
            // 809.677 ms.
            expect: &[
                ("queue", 5.0),
                ("inflight", 14.0),
                ("kv_cache", 77.5),
                ("latency", 0.809_677_419),
            ],
        },
        // A Triton serving another backend has only the pending count: the queue falls back to it.
        Engine {
            preset: "triton",
            body: TRITON
                .lines()
                .filter(|l| !l.contains("nv_trt_llm_request_metrics"))
                .map(|l| format!("{l}\n"))
                .collect(),
            histogram: "nv_inference_first_response_histogram_ms",
            targets: &[("queueTarget", "1")],
            expect: &[("queue", 6.0)],
        },
    ]
}

fn signal_value(entry: &Value, name: &str) -> Option<f64> {
    entry["decision"]["signals"]
        .as_array()?
        .iter()
        .find(|s| s["name"] == name)?["value"]
        .as_f64()
}

/// Waits until every engine's ScaledObject reports every expected value, or panics with the
/// debug page after `within`.
async fn expect_values(running: &Running, engines: &[Engine], within: Duration, tolerance: f64) {
    let deadline = Instant::now() + within;
    loop {
        let page = debug_page(&format!("http://{}", running.http_addr)).await;
        let mut missing = Vec::new();
        for (i, e) in engines.iter().enumerate() {
            let entry = page.iter().find(|d| d["name"] == format!("so-{i}"));
            for (signal, want) in e.expect {
                let got = entry.and_then(|d| signal_value(d, signal));
                if !got.is_some_and(|g| (g - want).abs() <= tolerance) {
                    missing.push(format!(
                        "{} #{i} {signal}: want {want}, got {got:?}",
                        e.preset
                    ));
                }
            }
        }
        if missing.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "values not reached: {missing:#?}\n{:#}",
            Value::Array(page)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn register(running: &Running, objects: &[ScaledObjectRef]) {
    let mut c = client(running).await;
    for o in objects {
        // The first call registers the ScaledObject; its answer does not matter yet.
        let _ = c.get_metrics(metrics_request(o)).await;
    }
}

fn metadata(e: &Engine, source: &[(&'static str, String)]) -> Vec<(String, String)> {
    let mut m: Vec<(String, String)> = vec![
        ("preset".into(), e.preset.into()),
        ("upHalfLifeSeconds".into(), "0".into()),
        ("downHalfLifeSeconds".into(), "0".into()),
    ];
    m.extend(source.iter().map(|(k, v)| (k.to_string(), v.clone())));
    m.extend(
        e.targets
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string())),
    );
    m
}

fn scaled_object(i: usize, namespace: &str, metadata: &[(String, String)]) -> ScaledObjectRef {
    let pairs: Vec<(&str, &str)> = metadata
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let mut o = object(&format!("so-{i}"), &pairs);
    o.namespace = namespace.into();
    o
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presets_read_each_engines_metrics_through_the_scrape_path() {
    let engines = engines();
    let mut endpoints = Vec::new();
    for e in &engines {
        endpoints.push(MetricsEndpoint::start(&e.body).await);
    }
    let running = start_scaler(&quick_settings()).await;
    let objects: Vec<ScaledObjectRef> = engines
        .iter()
        .zip(&endpoints)
        .enumerate()
        .map(|(i, (e, ep))| {
            scaled_object(i, "default", &metadata(e, &[("endpoints", ep.url.clone())]))
        })
        .collect();
    register(&running, &objects).await;
    // Let a few histogram snapshots land, then the engines serve the same distribution again.
    tokio::time::sleep(Duration::from_millis(600)).await;
    for (e, ep) in engines.iter().zip(&endpoints) {
        ep.set(&engines::grow(&e.body, e.histogram, 2.0));
    }
    expect_values(&running, &engines, Duration::from_secs(10), 1e-6).await;
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presets_read_each_engines_metrics_through_prometheus() {
    let engines = engines();
    let mut endpoints = Vec::new();
    for e in &engines {
        endpoints.push(MetricsEndpoint::start(&e.body).await);
    }
    // Each engine's pod is scraped the way Kubernetes service discovery labels it.
    const PODS: [&str; 6] = [
        "vllm-5d8f7c9b4-aaaaa",
        "vllmold-5d8f7c9b4-aaaaa",
        "sglang-5d8f7c9b4-aaaaa",
        "tgi-5d8f7c9b4-aaaaa",
        "triton-5d8f7c9b4-aaaaa",
        "tritonpy-5d8f7c9b4-aaaaa",
    ];
    const JOBS: [&str; 6] = ["vllm", "vllmold", "sglang", "tgi", "triton", "tritonpy"];
    let jobs: Vec<Job> = endpoints
        .iter()
        .enumerate()
        .map(|(i, ep)| Job {
            name: JOBS[i],
            url: ep.url.clone(),
            honor_labels: false,
            target_labels: vec![("namespace", "inference"), ("pod", PODS[i])],
        })
        .collect();
    let prom = Prometheus::start(&jobs);
    let mut s = settings(Duration::from_secs(1), Duration::from_secs(30));
    s.sources.prometheus.address = Some(prom.url.clone());
    s.sources.prometheus.timeout = Duration::from_millis(500);
    let running = start_scaler(&s).await;
    let objects: Vec<ScaledObjectRef> = engines
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let source = [
                ("source", "prometheus".to_string()),
                ("deployment", JOBS[i].to_string()),
                ("latencyWindowSeconds", "30".to_string()),
            ];
            scaled_object(i, "inference", &metadata(e, &source))
        })
        .collect();
    register(&running, &objects).await;
    prom.wait_scraped(2);
    for (e, ep) in engines.iter().zip(&endpoints) {
        ep.set(&engines::grow(&e.body, e.histogram, 2.0));
    }
    expect_values(&running, &engines, Duration::from_secs(30), 1e-3).await;
    running.stop().await;
}
