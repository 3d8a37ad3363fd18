//! The ExternalScaler service over real gRPC on loopback, reading real HTTP /metrics endpoints.

mod support;

use std::time::{Duration, Instant};

use keda_gpu_scaler::proto::GetMetricsRequest;
use keda_gpu_scaler::sources::scrape::exposition::{self, Exposition};
use keda_gpu_scaler::telemetry::grpc::HANDLING_BUCKETS;
use support::*;
use tokio_stream::StreamExt;
use tonic::Code;

const IDLE: &str = "workload_queue_length 0\nworkload_inflight_requests 0\n";

#[tokio::test]
async fn two_endpoints_with_30_waiting_and_target_10_report_6() {
    let a = MetricsEndpoint::start("workload_queue_length 30\n").await;
    let b = MetricsEndpoint::start("workload_queue_length{model=\"x\"} 30\n").await;
    let (running, mut c) = quick_scaler_and_client().await;
    let endpoints = format!("{},{}", a.url, b.url);
    let so = object(
        "llm",
        &[
            ("endpoints", &endpoints),
            ("queueTarget", "10"),
            ("downHalfLifeSeconds", "0"),
        ],
    );

    let spec = c.get_metric_spec(so.clone()).await.unwrap().into_inner();
    assert_eq!(spec.metric_specs.len(), 1);
    #[allow(deprecated)]
    let (name, int_target, float_target) = (
        spec.metric_specs[0].metric_name.clone(),
        spec.metric_specs[0].target_size,
        spec.metric_specs[0].target_size_float,
    );
    assert_eq!(
        (name.as_str(), int_target, float_target),
        ("gpu-composite", 1, 1.0)
    );

    let v = wait_for_value(&mut c, &so, Duration::from_secs(10), |v| {
        (v - 6.0).abs() <= 0.05
    })
    .await;
    assert!((v - 6.0).abs() <= 0.05);
    let resp = c
        .get_metrics(metrics_request(&so))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        resp.metric_values.len(),
        1,
        "exactly one MetricValue: the HPA sums them"
    );
    #[allow(deprecated)]
    let int_value = resp.metric_values[0].metric_value;
    assert_eq!(int_value, 6);
    assert!(c.is_active(so.clone()).await.unwrap().into_inner().result);

    // One endpoint disappears while the other's queue falls to 5: 5 / 10 asks for 0.5 replicas,
    // fewer than the one pod reporting, so this is a scale-down and the missing pod counts as
    // exactly at target (the HPA's rule): 0.5 + 1 = 1.5, not 0.5. downHalfLifeSeconds=0 lets the
    // value settle at once, so the number seen is the rule's and not the smoothing's.
    b.set_down(true);
    a.set("workload_queue_length 5\n");
    let entry = wait_debug(&running, "llm", |e| {
        let queue = &e["decision"]["signals"][0];
        queue["missing"] == 1 && queue["value"] == 5.0
    })
    .await;
    let queue = &entry["decision"]["signals"][0];
    assert_eq!(queue["name"], "queue");
    assert_eq!(queue["reporting"], 1);
    assert_eq!(
        queue["raw_demand"], 1.5,
        "a scrape gap must not collapse the demand: {queue:#}"
    );
    let v = metric_value(&mut c, &so).await;
    assert!(
        (v - 1.5).abs() < 1e-9,
        "KEDA is told what the rule gives: {v}"
    );
    running.stop().await;
}

#[tokio::test]
async fn errors_name_the_problem_with_the_right_code() {
    let a = MetricsEndpoint::start(IDLE).await;
    let (running, mut c) = quick_scaler_and_client().await;

    let bad = object(
        "bad",
        &[
            ("endpoints", &a.url),
            ("queueTarget", "ten"),
            ("colour", "x"),
        ],
    );
    for status in [
        c.get_metric_spec(bad.clone()).await.unwrap_err(),
        c.is_active(bad.clone()).await.unwrap_err(),
        c.get_metrics(metrics_request(&bad)).await.unwrap_err(),
    ] {
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(
            status.message().contains("queueTarget: 'ten'"),
            "{}",
            status.message()
        );
        assert!(
            status.message().contains("colour: unknown key"),
            "{}",
            status.message()
        );
    }
    let err = c.stream_is_active(bad.clone()).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    let good = object("good", &[("endpoints", &a.url), ("queueTarget", "10")]);
    let wrong_name = GetMetricsRequest {
        scaled_object_ref: Some(good.clone()),
        metric_name: "s0-gpu-composite".into(),
    };
    let err = c.get_metrics(wrong_name).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("metricName is 'gpu-composite'"),
        "{}",
        err.message()
    );

    let no_ref = GetMetricsRequest {
        scaled_object_ref: None,
        metric_name: "gpu-composite".into(),
    };
    assert_eq!(
        c.get_metrics(no_ref).await.unwrap_err().code(),
        Code::InvalidArgument
    );

    // The server is still fine after all of that: the good object gets the value its endpoint
    // implies (20 waiting / 10 per replica).
    a.set("workload_queue_length 20\n");
    let v = wait_for_value(&mut c, &good, Duration::from_secs(5), |v| {
        (v - 2.0).abs() < 0.01
    })
    .await;
    assert!((v - 2.0).abs() < 0.01, "{v}");
    running.stop().await;
}

#[tokio::test]
async fn stream_is_active_pushes_true_within_one_sampling_interval() {
    let interval = Duration::from_millis(1000);
    let endpoint = MetricsEndpoint::start(IDLE).await;
    let running = start_scaler(&settings(interval, Duration::from_secs(30))).await;
    let mut c = client(&running).await;
    let so = object(
        "push",
        &[("endpoints", &endpoint.url), ("queueTarget", "10")],
    );

    let mut stream = c.stream_is_active(so.clone()).await.unwrap().into_inner();
    let first = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("the current state is sent on open")
        .unwrap()
        .unwrap();
    assert!(!first.result, "idle endpoint: inactive");

    // Let a sampling tick pass so the flip lands at an arbitrary point inside an interval.
    tokio::time::sleep(interval / 3).await;
    endpoint.set("workload_queue_length 25\n");
    let flipped = Instant::now();
    let pushed = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("a push follows the flip")
        .unwrap()
        .unwrap();
    let waited = flipped.elapsed();
    assert!(pushed.result);
    println!(
        "StreamIsActive push arrived {waited:?} after the metrics flipped (interval {interval:?})"
    );
    assert!(
        waited <= interval + Duration::from_millis(500),
        "push took {waited:?}"
    );

    // No repeated `true` while it stays active (each one would reset KEDA's cooldown).
    let again = tokio::time::timeout(interval * 3, stream.next()).await;
    assert!(
        again.is_err(),
        "unexpected push while still active: {again:?}"
    );

    // StreamMetricSpec sends the spec on open and holds the stream.
    let mut specs = c.stream_metric_spec(so.clone()).await.unwrap().into_inner();
    let spec = specs.next().await.unwrap().unwrap();
    assert_eq!(spec.metric_specs[0].metric_name, "gpu-composite");
    assert!(
        tokio::time::timeout(Duration::from_millis(300), specs.next())
            .await
            .is_err()
    );

    // Shutdown ends both streams cleanly instead of hanging the server.
    let stopping = tokio::spawn(running.stop());
    let end = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("stream ends on shutdown");
    assert!(end.is_none() || end.unwrap().is_err());
    tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .expect("stop completes")
        .unwrap();
}

#[tokio::test]
async fn serves_the_last_value_while_fresh_then_unavailable_then_recovers() {
    let endpoint = MetricsEndpoint::start("workload_queue_length 40\n").await;
    let staleness = Duration::from_millis(1500);
    let running = start_scaler(&settings(Duration::from_millis(200), staleness)).await;
    let mut c = client(&running).await;
    let so = object(
        "stale",
        &[("endpoints", &endpoint.url), ("queueTarget", "10")],
    );
    wait_for_value(&mut c, &so, Duration::from_secs(5), |v| {
        (v - 4.0).abs() < 0.01
    })
    .await;

    endpoint.set_down(true);
    let down_at = Instant::now();
    // Right after the outage the cached value is served (how fast: the next test, and the
    // getmetrics benchmark).
    let v = metric_value(&mut c, &so).await;
    assert!((v - 4.0).abs() < 0.01, "the cached value: {v}");

    // Past maxStaleness: UNAVAILABLE naming the cause, while GetMetricSpec keeps answering.
    let status = loop {
        match c.get_metrics(metrics_request(&so)).await {
            Err(s) => break s,
            Ok(_) => {
                assert!(
                    down_at.elapsed() < staleness + Duration::from_secs(3),
                    "never went stale"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert!(down_at.elapsed() >= staleness - Duration::from_millis(250));
    assert_stale(&mut c, &so, &status, &["HTTP status 503"]).await;

    endpoint.set_down(false);
    wait_for_value(&mut c, &so, Duration::from_secs(5), |v| {
        (v - 4.0).abs() < 0.01
    })
    .await;
    running.stop().await;
}

#[tokio::test]
async fn answers_from_the_cache_while_a_pod_hangs() {
    let endpoint = MetricsEndpoint::start("workload_queue_length 40\n").await;
    // A scrape of a hung pod lasts the whole scrape timeout; an answer that waited on one would
    // take that long, so half of it is a bound a loaded machine still meets.
    let scrape_timeout = Duration::from_secs(3);
    let mut settings = settings(Duration::from_millis(200), Duration::from_secs(60));
    settings.sources.scrape_timeout = scrape_timeout;
    let running = start_scaler(&settings).await;
    let mut c = client(&running).await;
    let so = object(
        "hung",
        &[("endpoints", &endpoint.url), ("queueTarget", "10")],
    );
    wait_for_value(&mut c, &so, Duration::from_secs(5), |v| {
        (v - 4.0).abs() < 0.01
    })
    .await;

    endpoint.set_delay(Duration::from_secs(3600));
    // Let sampling rounds start and block on the hung pod.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for _ in 0..5 {
        let t = Instant::now();
        let v = metric_value(&mut c, &so).await;
        assert!((v - 4.0).abs() < 0.01, "the cached value: {v}");
        assert!(
            t.elapsed() < scrape_timeout / 2,
            "GetMetrics waited on the hung pod: {:?}",
            t.elapsed()
        );
        assert!(c.is_active(so.clone()).await.unwrap().into_inner().result);
    }
    running.stop().await;
}

#[tokio::test]
async fn health_is_serving_and_metrics_and_debug_explain_decisions() {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;

    let endpoint = MetricsEndpoint::start(
        "workload_queue_length 15\nworkload_accelerator_utilization_percent 35\n",
    )
    .await;
    let running = start_scaler(&quick_settings()).await;
    let mut health = HealthClient::new(channel(running.grpc_addr).await);
    let deadline = Instant::now() + Duration::from_secs(5);
    for service in ["", "externalscaler.ExternalScaler"] {
        loop {
            let s = health
                .check(HealthCheckRequest {
                    service: service.into(),
                })
                .await
                .unwrap()
                .into_inner()
                .status;
            if s == 1 {
                break;
            }
            assert!(Instant::now() < deadline, "health never became SERVING");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    let mut c = client(&running).await;
    let so = object(
        "dbg",
        &[
            ("endpoints", &endpoint.url),
            ("queueTarget", "10"),
            ("gpuUtilTarget", "70"),
        ],
    );
    wait_for_value(&mut c, &so, Duration::from_secs(5), |v| {
        (v - 1.5).abs() < 0.01
    })
    .await;

    let http = format!("http://{}", running.http_addr);
    let metrics = http_text(&format!("{http}/metrics")).await;
    assert!(
        metrics.contains(
            "keda_gpu_scaler_desired_replicas{namespace=\"default\",scaledobject=\"dbg\",metric=\"gpu-composite\"} 1.5"
        ),
        "{metrics}"
    );
    assert!(metrics.contains("signal=\"gpu_util\",stage=\"raw\"} 0.5"));
    // Each signal's reading under the name of its unit: the utilisation (35 %) as a ratio.
    assert!(metrics.contains(
        "keda_gpu_scaler_signal_utilisation_ratio{namespace=\"default\",scaledobject=\"dbg\",metric=\"gpu-composite\",signal=\"gpu_util\"} 0.35\n"
    ), "{metrics}");
    assert!(metrics.contains(
        "keda_gpu_scaler_signal_quantity{namespace=\"default\",scaledobject=\"dbg\",metric=\"gpu-composite\",signal=\"queue\"} 15.0\n"
    ));
    assert!(metrics.contains("grpc_server_handled_total{grpc_type=\"unary\",grpc_service=\"externalscaler.ExternalScaler\",grpc_method=\"GetMetrics\",grpc_code=\"OK\"}"));

    let entry = debug_entry(&running, "dbg").await;
    assert_eq!(entry["name"], "dbg");
    assert_eq!(entry["status"], "ok");
    assert_eq!(entry["decision"]["limiting"], "queue");
    assert_eq!(entry["decision"]["signals"][0]["name"], "gpu_util");
    assert_eq!(
        reqwest::get(format!("{http}/readyz"))
            .await
            .unwrap()
            .status(),
        200
    );
    running.stop().await;
}

/// SLO mode reports what was met: the share of requests whose time to first token was within
/// the objective over the window, read from the replicas' histogram by the scrape source.
#[tokio::test]
async fn slo_mode_reports_the_share_of_requests_that_met_the_objective() {
    let ttft = |within_1s: u64, within_2s: u64, all: u64| {
        format!(
            "workload_inflight_requests 4\nworkload_queue_length 0\n\
             workload_queue_wait_seconds_bucket{{le=\"1\"}} {within_1s}\n\
             workload_queue_wait_seconds_bucket{{le=\"2\"}} {within_2s}\n\
             workload_queue_wait_seconds_bucket{{le=\"+Inf\"}} {all}\n\
             workload_queue_wait_seconds_count {all}\nworkload_queue_wait_seconds_sum 1\n"
        )
    };
    let endpoint = MetricsEndpoint::start(&ttft(10, 10, 10)).await;
    let (running, mut c) = quick_scaler_and_client().await;
    let so = object(
        "slo",
        &[("endpoints", &endpoint.url), ("ttftObjectiveMs", "1500")],
    );
    wait_for_value(&mut c, &so, Duration::from_secs(5), |v| v > 0.0).await;
    // 100 more requests: 60 within 1 s, 30 between 1 and 2 s, 10 slower. Within 1.5 s, read the
    // way histogram_quantile reads a bucket: 60 + 30 x 0.5 = 75 of 100.
    endpoint.set(&ttft(70, 100, 110));
    let deadline = Instant::now() + Duration::from_secs(5);
    let objective = loop {
        let entry = debug_entry(&running, "slo").await;
        let o = entry["decision"]["objective"].clone();
        if o["met_recently_requests"].as_f64() == Some(100.0) {
            break o;
        }
        assert!(Instant::now() < deadline, "never read: {entry}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        objective["met_recently"].as_f64(),
        Some(0.75),
        "{objective}"
    );
    // Read over the part of the 60 s window scraped so far.
    let span = objective["met_recently_s"].as_f64().unwrap();
    assert!(span > 0.0 && span <= 60.0, "{objective}");
    assert!(objective["met_last_hour"].as_f64().is_some(), "{objective}");
    // The histogram's count between the last two scrapes counts the arrivals.
    assert_eq!(objective["arrivals_from"], "counted", "{objective}");
    // Too few requests served with nothing waiting to tell which misses capacity could not
    // fix: none is set aside yet, and /metrics has no "quiet" series.
    assert!(objective["quiet_miss_share"].is_null(), "{objective}");
    let metrics = http_text(&format!("http://{}/metrics", running.http_addr)).await;
    let series = |stage: &str| {
        format!("keda_gpu_scaler_objective_attainment_ratio{{namespace=\"default\",scaledobject=\"slo\",metric=\"gpu-composite\",stage=\"{stage}\"}}")
    };
    assert!(
        metrics.contains(&format!("{} 0.95\n", series("asked"))),
        "{metrics}"
    );
    assert!(
        metrics.contains(&series("window")) && metrics.contains(&series("hour")),
        "{metrics}"
    );
    assert!(!metrics.contains(&series("quiet")), "{metrics}");
    // Too few requests read to correct the model: it plans for what was asked.
    assert!(
        metrics.contains(&format!("{} 0.95\n", series("planned"))),
        "{metrics}"
    );
    running.stop().await;
}

/// The value of the one series of `name` whose labels are exactly `labels`.
#[track_caller]
fn value(parsed: &Exposition, name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<f64> = parsed
        .get(name)
        .iter()
        .filter(|s| {
            s.labels.len() == labels.len() && labels.iter().all(|(k, v)| s.label(k) == Some(*v))
        })
        .map(|s| s.value)
        .collect();
    assert_eq!(found.len(), 1, "{name}{labels:?}: {found:?}");
    found[0]
}

async fn scrape(running: &keda_gpu_scaler::server::Running) -> Exposition {
    let response = reqwest::get(format!("http://{}/metrics", running.http_addr))
        .await
        .unwrap();
    assert_eq!(
        response.headers()["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let text = response.text().await.unwrap();
    assert!(text.ends_with("# EOF\n"), "{text}");
    let parsed = exposition::parse(&text);
    assert_eq!(parsed.malformed, 0, "lines our own parser rejects:\n{text}");
    parsed
}

/// Every RPC is counted by the layer around the server under go-grpc-prometheus's names and
/// labels, with the code it ended with: unary errors (trailers-only), unary successes (status in
/// the trailers), and a server stream, which is handled only when it ends.
#[tokio::test]
async fn grpc_server_metrics_count_each_rpc_with_its_code() {
    let endpoint = MetricsEndpoint::start(IDLE).await;
    let (running, mut c) = quick_scaler_and_client().await;
    let good = object(
        "good",
        &[("endpoints", &endpoint.url), ("queueTarget", "10")],
    );
    let bad = object(
        "bad",
        &[("endpoints", &endpoint.url), ("queueTarget", "ten")],
    );
    c.get_metric_spec(good.clone()).await.unwrap();
    let err = c.get_metric_spec(bad.clone()).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let no_ref = GetMetricsRequest {
        scaled_object_ref: None,
        metric_name: "gpu-composite".into(),
    };
    assert_eq!(
        c.get_metrics(no_ref).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    let mut health =
        tonic_health::pb::health_client::HealthClient::new(channel(running.grpc_addr).await);
    health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap();
    let mut stream = c.stream_is_active(good.clone()).await.unwrap().into_inner();
    tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("the current state is sent on open")
        .unwrap()
        .unwrap();

    const SCALER: &str = "externalscaler.ExternalScaler";
    let unary = |method: &'static str| {
        vec![
            ("grpc_type", "unary"),
            ("grpc_service", SCALER),
            ("grpc_method", method),
        ]
    };
    let with_code = |mut labels: Vec<(&'static str, &'static str)>, code: &'static str| {
        labels.push(("grpc_code", code));
        labels
    };
    let stream_labels = vec![
        ("grpc_type", "server_stream"),
        ("grpc_service", SCALER),
        ("grpc_method", "StreamIsActive"),
    ];

    let m = scrape(&running).await;
    let handled = "grpc_server_handled_total";
    let spec = unary("GetMetricSpec");
    assert_eq!(value(&m, handled, &with_code(spec.clone(), "OK")), 1.0);
    assert_eq!(
        value(&m, handled, &with_code(spec.clone(), "InvalidArgument")),
        1.0
    );
    assert_eq!(value(&m, "grpc_server_started_total", &spec), 2.0);
    let get_metrics = unary("GetMetrics");
    assert_eq!(
        value(
            &m,
            handled,
            &with_code(get_metrics.clone(), "InvalidArgument")
        ),
        1.0
    );
    assert_eq!(
        value(&m, handled, &with_code(get_metrics.clone(), "OK")),
        0.0,
        "series exist from the start"
    );
    // The open stream is started, not handled.
    assert_eq!(value(&m, "grpc_server_started_total", &stream_labels), 1.0);
    let stream_handled: f64 = m
        .get(handled)
        .iter()
        .filter(|s| s.label("grpc_method") == Some("StreamIsActive"))
        .map(|s| s.value)
        .sum();
    assert_eq!(stream_handled, 0.0);

    // The latency histogram: no code label, every bucket, cumulative, +Inf = count.
    let buckets: Vec<(f64, f64)> = m
        .get("grpc_server_handling_seconds_bucket")
        .iter()
        .filter(|s| s.label("grpc_method") == Some("GetMetricSpec"))
        .map(|s| {
            assert_eq!(
                s.labels.len(),
                4,
                "grpc_type, grpc_service, grpc_method, le"
            );
            let le = s.label("le").unwrap();
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap()
            };
            (le, s.value)
        })
        .collect();
    let bounds: Vec<f64> = buckets.iter().map(|b| b.0).collect();
    let mut want = HANDLING_BUCKETS.to_vec();
    want.push(f64::INFINITY);
    assert_eq!(bounds, want);
    assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "{buckets:?}");
    assert_eq!(buckets.last().unwrap().1, 2.0);
    assert_eq!(value(&m, "grpc_server_handling_seconds_count", &spec), 2.0);
    assert!(value(&m, "grpc_server_handling_seconds_sum", &spec) > 0.0);
    // Health checks go through the same layer.
    let health = [
        ("grpc_type", "unary"),
        ("grpc_service", "grpc.health.v1.Health"),
        ("grpc_method", "Check"),
    ];
    assert_eq!(value(&m, "grpc_server_started_total", &health), 1.0);
    assert_eq!(value(&m, handled, &with_code(health.to_vec(), "OK")), 1.0);
    let info = m.get("keda_gpu_scaler_build_info");
    assert_eq!(info.len(), 1);
    assert_eq!(info[0].label("version"), Some(env!("CARGO_PKG_VERSION")));
    assert_eq!(info[0].value, 1.0);

    // The client goes away: the stream is handled, as Canceled.
    drop(stream);
    let deadline = Instant::now() + Duration::from_secs(5);
    let canceled = with_code(stream_labels.clone(), "Canceled");
    loop {
        let m = scrape(&running).await;
        if m.get(handled).iter().any(|s| {
            s.label("grpc_method") == Some("StreamIsActive")
                && s.label("grpc_code") == Some("Canceled")
        }) {
            assert_eq!(value(&m, handled, &canceled), 1.0);
            assert_eq!(
                value(&m, "grpc_server_handling_seconds_count", &stream_labels),
                1.0
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the closed stream was never handled"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    running.stop().await;
}
