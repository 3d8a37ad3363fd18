//! `source=prometheus` against a real Prometheus server on loopback, scraping dcgm-exporter and
//! workload metrics served by the test. Needs the `prometheus` binary on PATH.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use keda_gpu_scaler::proto::ScaledObjectRef;
use keda_gpu_scaler::server::Running;
use support::prometheus::{dcgm, GpuPod, Job, Prometheus};
use support::*;
use tonic::Code;

const NS: &str = "inference";

fn gpu<'a>(pod: &'a str, util: f64, used: f64, free: f64) -> GpuPod<'a> {
    GpuPod {
        namespace: NS,
        pod,
        util,
        fb_used: used,
        fb_free: free,
    }
}

async fn scaler(prom: &Prometheus, interval: Duration, staleness: Duration) -> Running {
    let mut s = settings(interval, staleness);
    s.sources.prometheus.address = Some(prom.url.clone());
    s.sources.prometheus.timeout = Duration::from_millis(500);
    // These tests build queries from hostile namespaces and full PromQL, which the default
    // egress policy refuses before any query (tests/isolation.rs checks that refusal).
    s.sources.egress.allow_cross_namespace = true;
    s.sources.egress.allow_custom_queries = true;
    start_scaler(&s).await
}

/// Metadata reading deployment `llm` in `inference` with no smoothing, plus `extra`.
fn meta<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut m = vec![
        ("source", "prometheus"),
        ("deployment", "llm"),
        ("upHalfLifeSeconds", "0"),
        ("downHalfLifeSeconds", "0"),
    ];
    m.extend_from_slice(extra);
    m
}

async fn error_of(c: &mut Client, o: &ScaledObjectRef) -> tonic::Status {
    c.get_metrics(metrics_request(o)).await.unwrap_err()
}

type Client =
    keda_gpu_scaler::proto::external_scaler_client::ExternalScalerClient<tonic::transport::Channel>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_follow_the_served_numbers_and_memory_is_used_over_used_plus_free() {
    let dcgm_ep = MetricsEndpoint::start(&dcgm(&[
        gpu("llm-5d8f7-aaaaa", 60.0, 3000.0, 1000.0),
        gpu("llm-5d8f7-bbbbb", 80.0, 1000.0, 3000.0),
        // Another deployment in the namespace: not ours.
        gpu("llm-canary-5d8f7-ccccc", 100.0, 4000.0, 0.0),
    ]))
    .await;
    let app = MetricsEndpoint::start(
        "workload_queue_length{namespace=\"inference\",pod=\"llm-5d8f7-aaaaa\"} 12\nworkload_queue_length{namespace=\"inference\",pod=\"llm-5d8f7-bbbbb\"} 8\nworkload_active_users{namespace=\"inference\",pod=\"llm-5d8f7-aaaaa\"} 30\n",
    )
    .await;
    let prom = Prometheus::start(&[
        Job::honoring("dcgm", &dcgm_ep.url),
        Job::honoring("app", &app.url),
    ]);
    let running = scaler(&prom, Duration::from_secs(1), Duration::from_secs(30)).await;
    let mut c = client(&running).await;

    // Memory: (75 % + 25 %) / 2 pods = 50 % against target 50 -> 2 replicas. USED / FREE would
    // give (300 % + 33 %) / 2 -> 6.67.
    let memory = object_in(NS, "memory", &meta(&[("gpuMemoryTarget", "50")]));
    let v = wait_for_value(&mut c, &memory, Duration::from_secs(20), |v| v > 0.0).await;
    assert!((v - 2.0).abs() < 0.01, "memory demand {v}, want 2.0");

    // Utilisation: mean 70 % on 2 pods against 35 % -> 4 replicas.
    let util = object_in(NS, "util", &meta(&[("gpuUtilTarget", "35")]));
    let v = wait_for_value(&mut c, &util, Duration::from_secs(20), |v| v > 0.0).await;
    assert!((v - 4.0).abs() < 0.01, "util demand {v}, want 4.0");

    // Queue: 20 waiting against 4 per replica -> 5. An extra signal from a full query: 30
    // active users against 10 per replica -> 3; the composite is the larger.
    let queue = object_in(
        NS,
        "queue",
        &meta(&[
            ("queueTarget", "4"),
            (
                "extra.users.query",
                "sum by (pod) (workload_active_users{namespace=\"inference\"})",
            ),
            ("extra.users.target", "10"),
            ("extra.users.kind", "quantity"),
        ]),
    );
    let v = wait_for_value(&mut c, &queue, Duration::from_secs(20), |v| v > 0.0).await;
    assert!((v - 5.0).abs() < 0.01, "queue demand {v}, want 5.0");

    // The served numbers change; the answers follow after Prometheus scrapes them.
    dcgm_ep.set(&dcgm(&[
        gpu("llm-5d8f7-aaaaa", 14.0, 1000.0, 3000.0),
        gpu("llm-5d8f7-bbbbb", 14.0, 1000.0, 3000.0),
    ]));
    app.set("workload_queue_length{namespace=\"inference\",pod=\"llm-5d8f7-aaaaa\"} 1\nworkload_active_users{namespace=\"inference\",pod=\"llm-5d8f7-aaaaa\"} 70\n");
    // Util 14 % on 2 pods / 35 % = 0.8; memory 25 % / 50 % x 2 = 1; queue 1/4 on one pod with
    // the other missing... users 70 / 10 = 7 wins.
    let v = wait_for_value(&mut c, &util, Duration::from_secs(20), |v| {
        (v - 0.8).abs() < 0.01
    })
    .await;
    assert!((v - 0.8).abs() < 0.01);
    wait_for_value(&mut c, &memory, Duration::from_secs(20), |v| {
        (v - 1.0).abs() < 0.01
    })
    .await;
    wait_for_value(&mut c, &queue, Duration::from_secs(20), |v| {
        (v - 7.0).abs() < 0.01
    })
    .await;
    running.stop().await;
}

/// SLO mode reads what was met from the bucket rates Prometheus computes: of every ten requests
/// the pods serve, six start within 1 s, three within 2 s, one later; within 1.5 s is 7.5. And it
/// counts the arrivals from the histogram's `_count`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slo_mode_reads_what_was_met_from_the_ttft_buckets() {
    let body = |n: u64| {
        let pod = "namespace=\"inference\",pod=\"llm-5d8f7-aaaaa\"";
        format!(
            "workload_inflight_requests{{{pod}}} 4\n\
             workload_queue_wait_seconds_bucket{{{pod},le=\"1\"}} {}\n\
             workload_queue_wait_seconds_bucket{{{pod},le=\"2\"}} {}\n\
             workload_queue_wait_seconds_bucket{{{pod},le=\"+Inf\"}} {}\n\
             workload_queue_wait_seconds_count{{{pod}}} {}\n",
            6 * n,
            9 * n,
            10 * n,
            10 * n
        )
    };
    let app = MetricsEndpoint::start(&body(0)).await;
    // The counters grow by ten requests every 250 ms, for at most 30 s.
    let feeder = app.clone();
    let feed = tokio::spawn(async move {
        for n in 1..=120u64 {
            tokio::time::sleep(Duration::from_millis(250)).await;
            feeder.set(&body(n));
        }
    });
    let prom = Prometheus::start(&[Job::honoring("app", &app.url)]);
    let running = scaler(&prom, Duration::from_secs(1), Duration::from_secs(30)).await;
    let mut c = client(&running).await;
    let so = object_in(NS, "slo", &meta(&[("ttftObjectiveMs", "1500")]));
    let _ = c.get_metrics(metrics_request(&so)).await;
    let deadline = Instant::now() + Duration::from_secs(25);
    let met = loop {
        let entry = debug_entry(&running, "slo").await;
        if let Some(m) = entry["decision"]["objective"]["met_recently"].as_f64() {
            break m;
        }
        assert!(Instant::now() < deadline, "never read: {entry}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!((met - 0.75).abs() < 1e-6, "met {met}, want 0.75");
    // The arrivals are counted from the `_count` between the pod's last two scrapes (`irate`):
    // 40 requests a second, give or take the 10 a scrape can fall either side of.
    let objective = loop {
        let entry = debug_entry(&running, "slo").await;
        let o = entry["decision"]["objective"].clone();
        if o["arrivals_from"] == "counted" {
            break o;
        }
        assert!(Instant::now() < deadline, "never counted: {entry}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let arrivals = objective["arrivals_per_s"].as_f64().unwrap();
    assert!((20.0..=60.0).contains(&arrivals), "{objective}");
    feed.abort();
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renamed_labels_need_namespace_label_and_no_series_is_said_not_zero() {
    let dcgm_ep = MetricsEndpoint::start(&dcgm(&[
        gpu("llm-5d8f7-aaaaa", 90.0, 1.0, 1.0),
        gpu("llm-5d8f7-bbbbb", 30.0, 1.0, 1.0),
    ]))
    .await;
    // Scraped like Kubernetes service discovery does: the exporter's own pod labels clash with
    // the target's and become exported_namespace / exported_pod.
    let prom = Prometheus::start(&[Job {
        name: "dcgm",
        url: dcgm_ep.url.clone(),
        honor_labels: false,
        target_labels: vec![
            ("namespace", "gpu-operator"),
            ("pod", "dcgm-exporter-x7k2p"),
        ],
    }]);
    let running = scaler(&prom, Duration::from_secs(1), Duration::from_secs(30)).await;
    let mut c = client(&running).await;

    let renamed = object_in(
        NS,
        "renamed",
        &meta(&[
            ("gpuUtilTarget", "60"),
            ("namespaceLabel", "exported_namespace"),
            ("podLabel", "exported_pod"),
        ]),
    );
    let v = wait_for_value(&mut c, &renamed, Duration::from_secs(20), |v| v > 0.0).await;
    assert!((v - 2.0).abs() < 0.01, "2 pods x 60 % / 60 % = 2, got {v}");

    let plain = object_in(NS, "plain", &meta(&[("gpuUtilTarget", "60")]));
    // Same data, default labels: nothing matches, and the answer says why instead of 0.
    c.get_metric_spec(plain.clone()).await.unwrap();
    prom.wait_scraped(3);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let err = error_of(&mut c, &plain).await;
    assert_eq!(err.code(), Code::Unavailable);
    assert!(
        err.message().contains("no series") && err.message().contains("namespaceLabel"),
        "{}",
        err.message()
    );
    // GetMetricSpec keeps answering.
    assert!(c.get_metric_spec(plain.clone()).await.is_ok());
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_scaled_objects_cost_one_query_per_signal_kind_per_interval() {
    let names: Vec<String> = (0..100).map(|i| format!("svc{i}")).collect();
    let pods: Vec<String> = names.iter().map(|n| format!("{n}-5d8f7-aaaaa")).collect();
    let gpus: Vec<GpuPod> = pods
        .iter()
        .enumerate()
        .map(|(i, p)| gpu(p, (i % 10) as f64 * 10.0 + 5.0, 1000.0, 3000.0))
        .collect();
    let dcgm_ep = MetricsEndpoint::start(&dcgm(&gpus)).await;
    let app_body: String = pods
        .iter()
        .enumerate()
        .map(|(i, p)| format!("workload_queue_length{{namespace=\"inference\",pod=\"{p}\"}} {i}\n"))
        .collect();
    let app = MetricsEndpoint::start(&app_body).await;
    let prom = Prometheus::start(&[
        Job::honoring("dcgm", &dcgm_ep.url),
        Job::honoring("app", &app.url),
    ]);
    let running = scaler(&prom, Duration::from_secs(1), Duration::from_secs(30)).await;
    let mut c = client(&running).await;
    let objects: Vec<ScaledObjectRef> = names
        .iter()
        .map(|n| {
            object_in(
                NS,
                n,
                &[
                    ("source", "prometheus"),
                    ("deployment", n),
                    ("gpuUtilTarget", "50"),
                    ("gpuMemoryTarget", "80"),
                    ("queueTarget", "1"),
                ],
            )
        })
        .collect();
    for o in &objects {
        c.get_metric_spec(o.clone()).await.unwrap();
    }
    prom.wait_scraped(2);
    for (i, o) in objects.iter().enumerate() {
        // svc<i> has i waiting at 1 per replica; one pod at ((i % 10) x 10 + 5) % GPU against
        // 50 %, and 25 % memory against 80 %.
        let util = ((i % 10) as f64 * 10.0 + 5.0) / 50.0;
        let want = (i as f64).max(util).max(25.0 / 80.0);
        wait_for_value(&mut c, o, Duration::from_secs(20), |v| {
            (v - want).abs() < 0.01
        })
        .await;
    }

    let queries = prom.http_requests("/api/v1/query");
    let ranges = prom.http_requests("/api/v1/query_range");
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let elapsed = started.elapsed().as_secs_f64();
    let d_queries = prom.http_requests("/api/v1/query") - queries;
    let d_ranges = prom.http_requests("/api/v1/query_range") - ranges;
    let intervals = elapsed.ceil() + 1.0;
    // Three signal kinds (utilisation, memory, queue): three queries per interval, whatever
    // the number of ScaledObjects (per-object queries would be 300 per interval).
    assert!(
        d_queries + d_ranges <= 3.0 * intervals,
        "{d_queries} instant + {d_ranges} range queries in {elapsed:.1}s ({intervals} intervals)"
    );
    assert!(
        d_queries + d_ranges >= 3.0 * (elapsed.floor() - 1.0),
        "sampling stopped: {d_queries} + {d_ranges}"
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_started_much_later_agrees_from_its_first_interval() {
    let app = MetricsEndpoint::start("").await;
    let body = |q: f64| {
        format!("workload_queue_length{{namespace=\"inference\",pod=\"llm-5d8f7-aaaaa\"}} {q}\nworkload_queue_length{{namespace=\"inference\",pod=\"llm-5d8f7-bbbbb\"}} 4\n")
    };
    app.set(&body(10.0));
    let prom = Prometheus::start(&[Job::honoring("app", &app.url)]);
    // The load moves every 700 ms through a fixed pseudo-random walk.
    let feeder = {
        let app = app.clone();
        tokio::spawn(async move {
            let mut x: u64 = 7;
            loop {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                app.set(&body(((x >> 33) % 60) as f64 + 1.0));
                tokio::time::sleep(Duration::from_millis(700)).await;
            }
        })
    };
    // Half-life 2 s: history of 8 half-lives is 16 s; the second replica starts 22 s later, so
    // its history window begins long after the first replica's first sample.
    let o = object_in(
        NS,
        "llm",
        &[
            ("source", "prometheus"),
            ("deployment", "llm"),
            ("queueTarget", "2"),
            ("upHalfLifeSeconds", "2"),
            ("downHalfLifeSeconds", "2"),
            ("panicThreshold", "0"),
        ],
    );
    let a = scaler(&prom, Duration::from_secs(1), Duration::from_secs(30)).await;
    let mut ca = client(&a).await;
    wait_for_value(&mut ca, &o, Duration::from_secs(20), |v| v > 0.0).await;
    let first_a = Instant::now();
    let record_a = record(&a);
    tokio::time::sleep(Duration::from_secs(22).saturating_sub(first_a.elapsed())).await;

    let b = scaler(&prom, Duration::from_secs(1), Duration::from_secs(30)).await;
    let mut cb = client(&b).await;
    let record_b = record(&b);
    wait_for_value(&mut cb, &o, Duration::from_secs(20), |v| v > 0.0).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    feeder.abort();

    let seen_a = record_a.lock().unwrap().clone();
    let seen_b = record_b.lock().unwrap().clone();
    let (first_at, first_b) = seen_b
        .iter()
        .next()
        .map(|(k, v)| (*k, *v))
        .expect("b decided");
    // History mattered: a fresh average would have started at the raw demand.
    assert!(
        (first_b.1 - first_b.0).abs() > 0.05 * first_b.0.max(0.1),
        "the smoothed value equals the raw one ({first_b:?}): the test input is too flat to show anything"
    );
    let mut compared = 0;
    for (at, (_, b_value)) in &seen_b {
        if let Some((_, a_value)) = seen_a.get(at) {
            let diff = (a_value - b_value).abs() / a_value.abs().max(1e-9);
            assert!(
                diff <= 0.01,
                "at {at}: replica A {a_value}, replica B {b_value} ({:.2} %)",
                diff * 100.0
            );
            compared += 1;
        }
    }
    assert!(
        seen_a.contains_key(&first_at),
        "A has no decision at B's first time {first_at}"
    );
    assert!(compared >= 4, "only {compared} common grid times");
    a.stop().await;
    b.stop().await;
}

/// Every decision the (single) entry of `running` publishes: grid time -> (raw, smoothed).
fn record(running: &Running) -> Arc<std::sync::Mutex<BTreeMap<i64, (f64, f64)>>> {
    let seen = Arc::new(std::sync::Mutex::new(BTreeMap::new()));
    let engine = running.engine.clone();
    let out = seen.clone();
    tokio::spawn(async move {
        let entry = loop {
            if let Some(e) = engine.entries().into_iter().next() {
                break e;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let mut rx = entry.subscribe();
        loop {
            if let Some(d) = rx.borrow_and_update().decision.clone() {
                out.lock()
                    .unwrap()
                    .insert(d.at.round() as i64, (d.composite_raw, d.composite_smoothed));
            }
            if rx.changed().await.is_err() {
                break;
            }
        }
    });
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_prometheus_is_served_stale_then_unavailable_then_recovers() {
    let app = MetricsEndpoint::start(
        "workload_queue_length{namespace=\"inference\",pod=\"llm-5d8f7-aaaaa\"} 9\n",
    )
    .await;
    let mut prom = Prometheus::start(&[Job::honoring("app", &app.url)]);
    let staleness = Duration::from_secs(3);
    let running = scaler(&prom, Duration::from_secs(1), staleness).await;
    let mut c = client(&running).await;
    let o = object_in(NS, "llm", &meta(&[("queueTarget", "3")]));
    wait_for_value(&mut c, &o, Duration::from_secs(20), |v| {
        (v - 3.0).abs() < 0.01
    })
    .await;

    prom.kill();
    let killed = Instant::now();
    // Until maxStaleness the last good value comes back (answered from the cache: no query can
    // succeed; the cache's speed is what tests/grpc.rs checks against a hung pod).
    while killed.elapsed() < staleness - Duration::from_millis(800) {
        let r = c
            .get_metrics(metrics_request(&o))
            .await
            .expect("stale value served");
        assert_eq!(r.into_inner().metric_values[0].metric_value_float, 3.0);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Then UNAVAILABLE with the reason, so KEDA's fallback engages; the spec still answers.
    let deadline = Instant::now() + Duration::from_secs(10);
    let err = loop {
        let r = c.get_metrics(metrics_request(&o)).await;
        match r {
            Err(e) => break e,
            Ok(_) => assert!(Instant::now() < deadline, "never turned stale"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_stale(&mut c, &o, &err, &["prometheus"]).await;

    // Prometheus comes back with new numbers; the same scaler picks them up.
    app.set("workload_queue_length{namespace=\"inference\",pod=\"llm-5d8f7-aaaaa\"} 15\n");
    prom.restart();
    wait_for_value(&mut c, &o, Duration::from_secs(20), |v| {
        (v - 5.0).abs() < 0.01
    })
    .await;
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_namespace_cannot_change_the_query() {
    let app = MetricsEndpoint::start(
        "workload_queue_length{namespace=\"inference\",pod=\"llm-5d8f7-aaaaa\"} 8\n",
    )
    .await;
    let prom = Prometheus::start(&[Job::honoring("app", &app.url)]);
    let running = scaler(&prom, Duration::from_secs(1), Duration::from_secs(30)).await;
    let mut c = client(&running).await;
    let honest = object_in(NS, "honest", &meta(&[("queueTarget", "2")]));
    // Unescaped, this would select every namespace and add a constant 1000-deep queue.
    let hostile_ns = "inference|.*\"} or vector(1000) or x{a=\"";
    let hostile = object_in(
        NS,
        "hostile",
        &meta(&[("queueTarget", "2"), ("namespace", hostile_ns)]),
    );
    c.get_metric_spec(hostile.clone()).await.unwrap();
    let v = wait_for_value(&mut c, &honest, Duration::from_secs(20), |v| v > 0.0).await;
    assert!(
        (v - 4.0).abs() < 0.01,
        "the batch shared with the hostile value still works: {v}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let err = error_of(&mut c, &hostile).await;
    assert_eq!(err.code(), Code::Unavailable);
    assert!(err.message().contains("no series"), "{}", err.message());
    assert!(
        !err.message().contains("rejected"),
        "the query must stay valid: {}",
        err.message()
    );
    // The debug page shows the escaped query, the hostile text confined to one string.
    let debug = keda_gpu_scaler::telemetry::debug_entries(&running.engine);
    let entry = debug.iter().find(|e| e.name == "hostile").unwrap();
    assert_eq!(
        entry.queries[0],
        "sum by (namespace, pod) (workload_queue_length{namespace=~\"inference\\\\|\\\\.\\\\*\\\"\\\\} or vector\\\\(1000\\\\) or x\\\\{a=\\\"\", pod!=\"\"})"
    );
    running.stop().await;
}

/// An instant query's result: each series' labels and value.
async fn query(prom: &Prometheus, q: &str) -> Vec<(serde_json::Value, f64)> {
    let body: serde_json::Value = reqwest::Client::new()
        .get(format!("{}/api/v1/query", prom.url))
        .query(&[("query", q)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["status"], "success", "{q}: {body}");
    body["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let v = r["value"][1].as_str().unwrap().parse().unwrap();
            (r["metric"].clone(), v)
        })
        .collect()
}

/// Prometheus itself scrapes the scaler's /metrics: the exposition parses whole (a line it
/// rejects fails the scrape, `up` 0), and the gRPC series arrive under the names and labels the
/// ecosystem's dashboards query.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_scalers_own_metrics() {
    let endpoint = MetricsEndpoint::start("workload_queue_length 5\n").await;
    let (running, mut c) = quick_scaler_and_client().await;
    let good = object(
        "good",
        &[("endpoints", &endpoint.url), ("queueTarget", "10")],
    );
    let bad = object(
        "bad",
        &[("endpoints", &endpoint.url), ("queueTarget", "ten")],
    );
    wait_for_value(&mut c, &good, Duration::from_secs(5), |v| v > 0.0).await;
    c.get_metric_spec(good).await.unwrap();
    assert_eq!(
        c.get_metric_spec(bad).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    let prom = Prometheus::start(&[Job::honoring(
        "scaler",
        &format!("http://{}/metrics", running.http_addr),
    )]);
    prom.wait_scraped(1);

    let targets: serde_json::Value = reqwest::get(format!("{}/api/v1/targets", prom.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let target = &targets["data"]["activeTargets"][0];
    assert_eq!(target["health"], "up", "{target}");
    assert_eq!(target["lastError"], "", "{target}");
    assert_eq!(query(&prom, "up{job=\"scaler\"}").await[0].1, 1.0);

    let handled = query(
        &prom,
        "grpc_server_handled_total{grpc_type=\"unary\",grpc_service=\"externalscaler.ExternalScaler\",grpc_method=\"GetMetricSpec\"}",
    )
    .await;
    let by_code: BTreeMap<String, f64> = handled
        .iter()
        .map(|(m, v)| (m["grpc_code"].as_str().unwrap().to_string(), *v))
        .collect();
    assert_eq!(by_code.get("InvalidArgument"), Some(&1.0), "{handled:?}");
    assert_eq!(by_code.get("OK"), Some(&1.0), "{handled:?}");
    // The dashboards' latency query works as written.
    let p99 = query(
        &prom,
        "histogram_quantile(0.99, sum by (grpc_method, le) (grpc_server_handling_seconds_bucket{grpc_method=\"GetMetrics\"}))",
    )
    .await;
    assert_eq!(p99.len(), 1, "{p99:?}");
    assert!(p99[0].1 > 0.0, "{p99:?}");
    let info = query(&prom, "keda_gpu_scaler_build_info").await;
    assert_eq!(info.len(), 1);
    assert_eq!(info[0].0["version"], env!("CARGO_PKG_VERSION"));
    let demand = query(
        &prom,
        "keda_gpu_scaler_signal_quantity{scaledobject=\"good\"}",
    )
    .await;
    assert_eq!(demand.len(), 1, "{demand:?}");
    assert_eq!(demand[0].1, 5.0);
    running.stop().await;
}
