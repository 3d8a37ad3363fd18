//! Chaos benchmark: one shared scaler against hostile and careless tenants, every case on
//! loopback, against a scaler binary run as users run it, printing the figures the README's
//! reliability section records.
//!
//! `cargo bench --bench chaos` measures this build's binary; `CHAOS_SCALER_BIN=/path/to/old`
//! measures another (the "before" column: an older binary without the egress settings is run
//! without them). `CHAOS_SHORT=1` is the CI size (smaller loads, a few seconds per case); with
//! it, the properties the scaler promises are checked and a failure exits non-zero.
//! `scripts/chaos.sh` runs both columns. `CHAOS_ONLY=isolation,cpu` runs some cases only (by the
//! names in `main`: isolation, small, churn, budget, parsed, scrape, prometheus, entries, cpu,
//! numbers, egress, restart, identity); `CHAOS_ENTRIES` sets the number of small entries
//! registered.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use axum::body::Body;
use keda_gpu_scaler::proto::external_scaler_client::ExternalScalerClient;
use keda_gpu_scaler::proto::ScaledObjectRef;
use support::{
    black_hole, metrics_request, object_in, serve_router, spawn_serve_binary, MetricsEndpoint,
    ServedBinary,
};
use tonic::transport::Channel;

/// A scaler binary run as users run it, on loopback ports.
struct Scaler {
    served: ServedBinary,
    grpc: String,
    http: String,
}

impl Scaler {
    fn spawn(bin: &str, env: &[(String, String)]) -> Scaler {
        let mut env: Vec<(&str, &str)> =
            env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        env.push(("KEDA_GPU_SCALER_LOG_LEVEL", "info"));
        let served = spawn_serve_binary(bin, &env);
        Scaler {
            grpc: format!("http://{}", served.grpc_addr),
            http: format!("http://{}", served.http_addr),
            served,
        }
    }

    fn pid(&self) -> u32 {
        self.served.process.0.id()
    }

    async fn client(&self) -> ExternalScalerClient<Channel> {
        let channel = Channel::from_shared(self.grpc.clone())
            .unwrap()
            .connect()
            .await
            .unwrap();
        ExternalScalerClient::new(channel).max_decoding_message_size(64 << 20)
    }

    /// (current, peak) resident memory in MiB.
    fn rss_mib(&self) -> (f64, f64) {
        support::rss_mib(self.pid())
    }

    /// CPU seconds used so far (user + system).
    fn cpu_s(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
        let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let f: Vec<f64> = after
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
        // Fields 14 and 15 of stat (utime, stime) are 12 and 13 after the command name.
        (f.get(11).unwrap_or(&0.0) + f.get(12).unwrap_or(&0.0)) / 100.0
    }
}

/// Every tenant here is in one namespace.
fn so(name: &str, pairs: &[(&str, &str)]) -> ScaledObjectRef {
    object_in("team-a", name, pairs)
}

/// A `/metrics` endpoint with a fixed body.
async fn metrics(body: &str) -> String {
    MetricsEndpoint::start(body).await.url
}

/// Streams `total` bytes made of `line` repeated, without holding them.
fn streamed(line: &'static [u8], total: usize, head: &'static [u8], tail: &'static [u8]) -> Body {
    let chunk: Vec<u8> = line.repeat((64 << 10) / line.len());
    let n = total / chunk.len();
    let body = futures_util::stream::iter(
        std::iter::once(head.to_vec())
            .chain(std::iter::repeat_n(chunk, n))
            .chain(std::iter::once(tail.to_vec()))
            .map(Ok::<_, std::io::Error>),
    );
    Body::from_stream(body)
}

async fn get(url: &str) -> Option<(u16, String)> {
    let r = reqwest::get(url).await.ok()?;
    let status = r.status().as_u16();
    Some((status, r.text().await.unwrap_or_default()))
}

fn sample_age(debug: &str, name: &str) -> Option<f64> {
    let doc: serde_json::Value = serde_json::from_str(debug).ok()?;
    doc.as_array()?.iter().find(|e| e["name"] == name)?["sample_age_s"].as_f64()
}

/// The nearest-rank quantile (the rule the simulator and the demo report by); NaN for no samples.
fn quantile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    keda_gpu_scaler::sources::scrape::histogram::nearest_rank(v.len(), q).map_or(f64::NAN, |k| v[k])
}

struct Run {
    bin: String,
    short: bool,
    /// The binary has the egress, memory and state settings.
    modern: bool,
    failures: Vec<String>,
}

impl Run {
    fn env(&self) -> Vec<(String, String)> {
        let mut env = Vec::new();
        if self.modern {
            env.push((
                "KEDA_GPU_SCALER_EGRESS__ALLOW_LOOPBACK".into(),
                "true".into(),
            ));
            env.push((
                "KEDA_GPU_SCALER_EGRESS__PROMETHEUS_ADDRESSES".into(),
                "*".into(),
            ));
            env.push(("KEDA_GPU_SCALER_DEBUG_PAGE".into(), "true".into()));
        }
        env
    }

    fn report(&self, case: &str, figures: &str) {
        println!("{case:<34} {figures}");
    }

    /// In the short (CI) run, a promise the scaler makes; recorded, not panicked on.
    fn check(&mut self, ok: bool, what: &str) {
        if self.short && self.modern && !ok {
            println!("    FAILED: {what}");
            self.failures.push(what.to_string());
        }
    }
}

async fn isolation(run: &mut Run) {
    let (objects, endpoints, secs) = if run.short {
        (5, 200, 6)
    } else {
        (5, 1000, 20)
    };
    let scaler = Scaler::spawn(&run.bin, &run.env());
    let mut c = scaler.client().await;
    let hole = black_hole().await;
    let healthy_url = metrics("workload_queue_length 20\n").await;
    let healthy = so(
        "healthy",
        &[("endpoints", &healthy_url), ("queueTarget", "10")],
    );
    for i in 0..objects {
        let list: Vec<String> = (0..endpoints)
            .map(|j| format!("{hole}/o{i}/e{j}"))
            .collect();
        let hostile = so(
            &format!("hostile-{i}"),
            &[("endpoints", &list.join(",")), ("queueTarget", "1")],
        );
        let _ = c.get_metric_spec(hostile).await;
    }
    let _ = c.get_metric_spec(healthy.clone()).await;
    // Let it settle past the first rounds, then measure.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let until = Instant::now() + Duration::from_secs(secs);
    let (mut lat, mut errors, mut ages, mut not_ready, mut probes) =
        (Vec::new(), 0, Vec::new(), 0, 0);
    while Instant::now() < until {
        let t = Instant::now();
        match c.get_metrics(metrics_request(&healthy)).await {
            Ok(_) => lat.push(t.elapsed().as_secs_f64() * 1e3),
            Err(_) => errors += 1,
        }
        probes += 1;
        if get(&format!("{}/readyz", scaler.http)).await.map(|r| r.0) != Some(200) {
            not_ready += 1;
        }
        if let Some((_, d)) = get(&format!("{}/debug/scaledobjects", scaler.http)).await {
            ages.push(sample_age(&d, "healthy").unwrap_or(f64::INFINITY));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let max_age = ages.iter().cloned().fold(0.0, f64::max);
    let p99 = quantile(&mut lat, 0.99);
    run.report(
        &format!("isolation {objects}x{endpoints} black holes"),
        &format!(
            "healthy: max sample age {max_age:.1}s, GetMetrics p99 {p99:.2}ms, {errors}/{probes} errors; /readyz not 200: {not_ready}/{probes}"
        ),
    );
    run.check(not_ready == 0, "/readyz stays 200 under hostile tenants");
    run.check(errors == 0, "the healthy object keeps answering");
    run.check(max_age < 4.0, "healthy samples under two intervals old");
}

/// Asks for each of `healthy` every 50 ms for `secs`, and reads their sample ages from the debug
/// page every 250 ms (it lists every object: read more often, it loads the machine serving the
/// healthy endpoints): (GetMetrics errors, calls, the oldest healthy sample seen).
async fn watch_healthy(
    scaler: &Scaler,
    healthy: &[ScaledObjectRef],
    secs: u64,
) -> (usize, usize, f64) {
    let mut c = scaler.client().await;
    let until = Instant::now() + Duration::from_secs(secs);
    let (mut errors, mut calls, mut max_age) = (0, 0, 0.0f64);
    let mut page_at = Instant::now();
    while Instant::now() < until {
        for o in healthy {
            calls += 1;
            if c.get_metrics(metrics_request(o)).await.is_err() {
                errors += 1;
            }
        }
        if page_at.elapsed() >= Duration::from_millis(250) {
            page_at = Instant::now();
            if let Some((_, d)) = get(&format!("{}/debug/scaledobjects", scaler.http)).await {
                let doc: serde_json::Value = serde_json::from_str(&d).unwrap_or_default();
                let entries = doc.as_array().map(Vec::as_slice).unwrap_or_default();
                for o in healthy {
                    let age = entries
                        .iter()
                        .find(|e| e["name"] == o.name.as_str())
                        .and_then(|e| e["sample_age_s"].as_f64());
                    max_age = max_age.max(age.unwrap_or(f64::INFINITY));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (errors, calls, max_age)
}

/// Three healthy objects, each with an endpoint of its own answering after `delay`.
async fn healthy_objects(delay: Duration) -> Vec<ScaledObjectRef> {
    let mut out = Vec::new();
    for i in 0..3 {
        let endpoint = MetricsEndpoint::start("workload_queue_length 20\n").await;
        endpoint.set_delay(delay);
        out.push(so(
            &format!("healthy-{i}"),
            &[("endpoints", &endpoint.url), ("queueTarget", "10")],
        ));
    }
    out
}

async fn many_small(run: &mut Run) {
    let sizes: &[usize] = if run.short { &[300] } else { &[300, 1000] };
    for &n in sizes {
        let scaler = Scaler::spawn(&run.bin, &run.env());
        let mut c = scaler.client().await;
        let hole = black_hole().await;
        for i in 0..n {
            let o = so(
                &format!("hostile-{i}"),
                &[("endpoints", &format!("{hole}/o{i}")), ("queueTarget", "1")],
            );
            let _ = c.get_metric_spec(o).await;
        }
        let healthy = healthy_objects(Duration::ZERO).await;
        for o in &healthy {
            let _ = c.get_metric_spec(o.clone()).await;
        }
        // Measured from the first answer on: every call counts.
        let (errors, calls, max_age) =
            watch_healthy(&scaler, &healthy, if run.short { 8 } else { 20 }).await;
        run.report(
            &format!("isolation {n}x1 black holes"),
            &format!("3 healthy: {errors}/{calls} GetMetrics failed, max sample age {max_age:.1}s"),
        );
        run.check(
            errors == 0,
            "healthy objects answer beside many small hostile ones",
        );
        run.check(max_age < 4.0, "healthy samples under two intervals old");
    }
}

async fn churn(run: &mut Run) {
    let scaler = Scaler::spawn(&run.bin, &run.env());
    let mut c = scaler.client().await;
    let healthy = healthy_objects(Duration::ZERO).await;
    for o in &healthy {
        let _ = c.get_metric_spec(o.clone()).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let hole = black_hole().await;
    let secs = if run.short { 8 } else { 20 };
    let registering = tokio::spawn(async move {
        let until = Instant::now() + Duration::from_secs(secs);
        let mut i = 0;
        while Instant::now() < until {
            let o = so(
                &format!("churn-{i}"),
                &[("endpoints", &format!("{hole}/c{i}")), ("queueTarget", "1")],
            );
            let _ = c.get_metric_spec(o).await;
            i += 1;
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        i
    });
    let (errors, calls, max_age) = watch_healthy(&scaler, &healthy, secs).await;
    let registered = registering.await.unwrap_or(0);
    run.report(
        "churn: a black hole per 0.3 s",
        &format!("{registered} registered; 3 healthy: {errors}/{calls} GetMetrics failed, max sample age {max_age:.1}s"),
    );
    run.check(
        errors == 0,
        "healthy objects answer through registration churn",
    );
    run.check(
        max_age < 4.0,
        "healthy samples under two intervals old through churn",
    );
}

/// A loopback server streaming, at every `/metrics?...`, a body of `mib` MiB less 100 kB made of
/// series of the metric the objects read with eight labels each (parsed, many times the text).
async fn labelled_bodies() -> String {
    serve_router(axum::Router::new().route(
        "/metrics",
        axum::routing::get(|| async {
            streamed(
                b"workload_queue_length{a=\"1\",b=\"2\",c=\"3\",d=\"4\",e=\"5\",f=\"6\",g=\"7\",h=\"8\"} 1\n",
                (4 << 20) - 100_000,
                b"",
                b"",
            )
        }),
    ))
    .await
}

async fn body_budget(run: &mut Run) {
    let scaler = Scaler::spawn(&run.bin, &run.env());
    let mut c = scaler.client().await;
    let base = labelled_bodies().await;
    for i in 0..12 {
        let o = so(
            &format!("big-{i}"),
            &[
                ("endpoints", &format!("{base}/metrics?{i}")),
                ("queueTarget", "1"),
            ],
        );
        let _ = c.get_metric_spec(o).await;
    }
    let healthy = healthy_objects(Duration::from_millis(200)).await;
    for o in &healthy {
        let _ = c.get_metric_spec(o.clone()).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (errors, calls, max_age) =
        watch_healthy(&scaler, &healthy, if run.short { 6 } else { 20 }).await;
    let (_, peak) = scaler.rss_mib();
    run.report(
        "budget: 12 x 3.9 MiB bodies",
        &format!("3 healthy at 200 ms: {errors}/{calls} GetMetrics failed, max sample age {max_age:.1}s; peak RSS {peak:.0} MiB"),
    );
    run.check(
        errors == 0,
        "a small body is read beside bodies holding the budget",
    );
}

async fn parsed_memory(run: &mut Run) {
    let scaler = Scaler::spawn(&run.bin, &run.env());
    let mut c = scaler.client().await;
    let base = labelled_bodies().await;
    for i in 0..8 {
        let o = so(
            &format!("labelled-{i}"),
            &[
                ("endpoints", &format!("{base}/metrics?{i}")),
                ("queueTarget", "1"),
            ],
        );
        let _ = c.get_metric_spec(o).await;
    }
    tokio::time::sleep(Duration::from_secs(if run.short { 8 } else { 16 })).await;
    let (_, peak) = scaler.rss_mib();
    run.report(
        "memory: 8 x 3.9 MiB labelled",
        &format!("peak RSS {peak:.0} MiB"),
    );
    run.check(
        peak < 256.0,
        "RSS under the chart's 256 MiB with bodies of labelled series",
    );
}

async fn scrape_bodies(run: &mut Run) {
    let (n, mib) = if run.short { (16, 15) } else { (64, 15) };
    let scaler = Scaler::spawn(&run.bin, &run.env());
    let mut c = scaler.client().await;
    let base = serve_router(axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || async move {
            streamed(
                b"workload_queue_length{pod=\"p\",i=\"0123456789\"} 1\n",
                mib << 20,
                b"",
                b"",
            )
        }),
    ))
    .await;
    let list: Vec<String> = (0..n).map(|i| format!("{base}/metrics?{i}")).collect();
    let _ = c
        .get_metric_spec(so(
            "big",
            &[("endpoints", &list.join(",")), ("queueTarget", "1")],
        ))
        .await;
    tokio::time::sleep(Duration::from_secs(if run.short { 6 } else { 12 })).await;
    let (_, peak) = scaler.rss_mib();
    run.report(
        &format!("memory: {n} endpoints x {mib} MiB"),
        &format!("peak RSS {peak:.0} MiB"),
    );
    run.check(
        peak < 256.0,
        "RSS under the chart's 256 MiB with huge scrape bodies",
    );
}

async fn prometheus_body(run: &mut Run) {
    let mib = if run.short { 60 } else { 300 };
    let head: &'static [u8] =
        b"{\"status\":\"success\",\"data\":{\"resultType\":\"vector\",\"result\":[";
    let line: &'static [u8] =
        b"{\"metric\":{\"namespace\":\"team-a\",\"pod\":\"llm-5d8f7-aaaaa\"},\"value\":[1,\"1\"]},";
    let tail: &'static [u8] = b"{\"metric\":{},\"value\":[1,\"1\"]}]}}";
    let base = serve_router(axum::Router::new().route(
        "/api/v1/query",
        axum::routing::post(move || async move {
            (
                [("content-type", "application/json")],
                streamed(line, mib << 20, head, tail),
            )
        }),
    ))
    .await;
    let mut env = run.env();
    env.push(("KEDA_GPU_SCALER_PROMETHEUS__ADDRESS".into(), base.clone()));
    env.push(("KEDA_GPU_SCALER_PROMETHEUS__TIMEOUT".into(), "10s".into()));
    let scaler = Scaler::spawn(&run.bin, &env);
    let mut c = scaler.client().await;
    let o = so(
        "prom",
        &[
            ("source", "prometheus"),
            ("deployment", "llm"),
            ("queueTarget", "1"),
        ],
    );
    let _ = c.get_metric_spec(o).await;
    tokio::time::sleep(Duration::from_secs(if run.short { 8 } else { 20 })).await;
    let (_, peak) = scaler.rss_mib();
    run.report(
        &format!("memory: {mib} MB Prometheus answer"),
        &format!("peak RSS {peak:.0} MiB"),
    );
    run.check(
        peak < 256.0,
        "RSS under 256 MiB with a huge Prometheus answer",
    );
}

async fn entries(run: &mut Run) {
    let scaler = Scaler::spawn(&run.bin, &run.env());
    let mut c = scaler.client().await;
    let url = metrics("workload_queue_length 3\n").await;
    let (base, _) = scaler.rss_mib();
    // 1 MB in KEDA's ignored caCert key.
    let ca = "A".repeat(1 << 20);
    let n_ca = if run.short { 20 } else { 50 };
    let mut accepted = 0;
    for i in 0..n_ca {
        let o = so(
            &format!("ca-{i}"),
            &[("endpoints", &url), ("queueTarget", "1"), ("caCert", &ca)],
        );
        accepted += c.get_metric_spec(o).await.is_ok() as usize;
    }
    let (after_ca, _) = scaler.rss_mib();
    run.report(
        "memory: 1 MB caCert per entry",
        &format!(
            "{accepted}/{n_ca} accepted, {:.2} MiB per entry",
            (after_ca - base) / n_ca as f64
        ),
    );
    run.check(accepted == 0, "1 MB of metadata is refused");

    // Small entries up to the binary's entry cap (or 100k).
    let cap = std::env::var("CHAOS_ENTRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if run.short { 5_000 } else { 100_000 });
    let url2 = url.clone();
    let start_rss = scaler.rss_mib().0;
    let mut ok = 0usize;
    let mut refused = 0usize;
    let tasks: Vec<_> = (0..8)
        .map(|w| {
            let mut c = c.clone();
            let url = url2.clone();
            tokio::spawn(async move {
                let (mut ok, mut refused) = (0, 0);
                for i in (w..cap).step_by(8) {
                    let o = so(
                        &format!("small-{i}"),
                        &[("endpoints", &url), ("queueTarget", "1")],
                    );
                    match c.get_metric_spec(o).await {
                        Ok(_) => ok += 1,
                        Err(_) => refused += 1,
                    }
                }
                (ok, refused)
            })
        })
        .collect();
    for t in tasks {
        let (o, r) = t.await.unwrap();
        ok += o;
        refused += r;
    }
    tokio::time::sleep(Duration::from_secs(if run.short { 4 } else { 8 })).await;
    let (rss, peak) = scaler.rss_mib();
    run.report(
        &format!("memory: {cap} small entries"),
        &format!(
            "{ok} registered ({refused} refused at the cap), RSS {rss:.0} MiB (peak {peak:.0}), {:.1} KiB per entry",
            (rss - start_rss) * 1024.0 / ok.max(1) as f64
        ),
    );
    run.check(peak < 256.0, "RSS under 256 MiB at the default entry cap");
}

async fn cpu(run: &mut Run) {
    let scaler = Scaler::spawn(&run.bin, &run.env());
    let mut c = scaler.client().await;
    let url = metrics("workload_queue_length 20\n").await;
    let other = so("other", &[("endpoints", &url), ("queueTarget", "10")]);
    let _ = c.get_metric_spec(other.clone()).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut map: HashMap<String, String> = (0..10_000)
        .map(|i| (format!("unknownKey{i:05}"), "x".into()))
        .collect();
    map.insert("queueTarget".into(), "1".into());
    map.insert("endpoints".into(), url.clone());
    let hostile = ScaledObjectRef {
        name: "keys".into(),
        namespace: "team-b".into(),
        scaler_metadata: map,
    };
    let calls = if run.short { 40 } else { 200 };
    // The hostile tenant on its own connection: what is measured is the server, not HTTP/2
    // head-of-line blocking behind 149 KB messages on a shared one.
    let hammer = {
        let mut c = scaler.client().await;
        tokio::spawn(async move {
            for _ in 0..calls {
                let _ = c.get_metric_spec(hostile.clone()).await;
            }
        })
    };
    let cpu0 = scaler.cpu_s();
    let mut lat = Vec::new();
    while !hammer.is_finished() {
        let t = Instant::now();
        let _ = c.get_metrics(metrics_request(&other)).await;
        lat.push(t.elapsed().as_secs_f64() * 1e3);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let per_call_ms = (scaler.cpu_s() - cpu0) * 1e3 / calls as f64;
    let p99 = quantile(&mut lat, 0.99);
    run.report(
        "cpu: 10,000 unknown keys",
        &format!("{per_call_ms:.2} ms CPU per call; another tenant's GetMetrics p99 {p99:.2} ms"),
    );
}

async fn numbers(run: &mut Run) {
    let scaler = Scaler::spawn(&run.bin, &run.env());
    let mut c = scaler.client().await;
    let a = metrics("workload_queue_length 1e308\n").await;
    let b = metrics("workload_queue_length 1e308\n").await;
    let o = so(
        "overflow",
        &[
            ("endpoints", &format!("{a},{b}")),
            ("queueTarget", "10"),
            ("maxReplicas", "40"),
        ],
    );
    let _ = c.get_metric_spec(o.clone()).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let v = c
        .get_metrics(metrics_request(&o))
        .await
        .map(|r| r.into_inner().metric_values[0].metric_value_float);
    let active = c.is_active(o).await.map(|r| r.into_inner().result);
    run.report(
        "numbers: two replicas at 1e308",
        &format!("GetMetrics {v:?}, IsActive {active:?} (maxReplicas 40)"),
    );
    run.check(
        v.as_ref().ok() == Some(&40.0),
        "overflow asks for maxReplicas",
    );
    let inf = metrics("workload_queue_length +Inf\n").await;
    let five = metrics("workload_queue_length 50\n").await;
    let nan = metrics("workload_queue_length NaN\n").await;
    let mut answers = Vec::new();
    for (name, endpoints) in [
        ("inf-alone", inf.clone()),
        ("inf-beside", format!("{inf},{five}")),
        ("nan-beside", format!("{nan},{five}")),
    ] {
        let o = so(
            name,
            &[
                ("endpoints", &endpoints),
                ("queueTarget", "10"),
                ("maxReplicas", "40"),
            ],
        );
        let _ = c.get_metric_spec(o.clone()).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        answers.push(
            c.get_metrics(metrics_request(&o))
                .await
                .map(|r| r.into_inner().metric_values[0].metric_value_float)
                .map_err(|e| e.code()),
        );
    }
    run.report(
        "numbers: +Inf; +Inf, 50; NaN, 50",
        &format!("GetMetrics {answers:?} (maxReplicas 40, target 10)"),
    );
    run.check(
        answers[..2].iter().all(|a| a == &Ok(40.0)),
        "+Inf asks for maxReplicas",
    );
    let one = metrics("workload_queue_length 1\n").await;
    let tiny = so("tiny", &[("endpoints", &one), ("queueTarget", "1e-320")]);
    let r = c.get_metric_spec(tiny).await;
    run.report(
        "numbers: queueTarget 1e-320",
        &r.map_or_else(|e| format!("{:?}", e.code()), |_| "accepted".into()),
    );
}

async fn egress(run: &mut Run) {
    // The default policy (loopback refused too): only the metadata is sent, nothing is fetched.
    let scaler = Scaler::spawn(&run.bin, &[]);
    let mut c = scaler.client().await;
    let mut accepted = Vec::new();
    let ssrf = [
        "http://169.254.169.254/latest/meta-data/",
        "http://2852039166/",
        "http://0xa9fea9fe/",
        "http://[::ffff:169.254.169.254]/",
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://[fd20:ce::254]/computeMetadata/v1/",
        "http://100.100.100.200/latest/meta-data/",
        "http://[64:ff9b::a9fe:a9fe]/latest/meta-data/",
        "http://[64:ff9b:1::7f00:1]:9100/metrics",
        "http://[2002:a9fe:a9fe::1]/latest/meta-data/",
        "http://127.0.0.1:9100/metrics",
        "https://kubernetes.default.svc/api",
    ];
    for url in ssrf {
        if c.get_metric_spec(so("ssrf", &[("endpoints", url), ("queueTarget", "1")]))
            .await
            .is_ok()
        {
            accepted.push(url);
        }
    }
    let creds = c
        .get_metrics(metrics_request(&so(
            "creds",
            &[
                ("endpoints", "http://admin:hunter2@10.255.255.1:1/metrics"),
                ("queueTarget", "1"),
            ],
        )))
        .await
        .err()
        .map(|e| e.message().contains("hunter2"));
    let cross = c
        .get_metric_spec(so(
            "cross",
            &[
                ("source", "prometheus"),
                ("prometheusAddress", "http://prometheus:9090"),
                ("deployment", "llm"),
                ("namespace", "team-b"),
                ("queueTarget", "1"),
            ],
        ))
        .await
        .is_ok();
    run.report(
        "egress: metadata/loopback/API URLs",
        &format!("{} of {} accepted {accepted:?}; password echoed: {creds:?}; cross-namespace read accepted: {cross}", accepted.len(), ssrf.len()),
    );
    run.check(accepted.is_empty(), "SSRF targets refused by default");
    run.check(creds != Some(true), "URL credentials never echoed");
    run.check(!cross, "cross-namespace reads refused by default");
    drop(scaler);

    // A redirect to another port, with loopback allowed.
    let scaler = Scaler::spawn(&run.bin, &run.env());
    let mut c = scaler.client().await;
    let target = metrics("workload_queue_length 50\n").await;
    let base = serve_router(axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let t = target.clone();
            async move { axum::response::Redirect::temporary(&t) }
        }),
    ))
    .await;
    let o = so(
        "redirect",
        &[
            ("endpoints", &format!("{base}/metrics")),
            ("queueTarget", "10"),
        ],
    );
    let _ = c.get_metric_spec(o.clone()).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let v = c
        .get_metrics(metrics_request(&o))
        .await
        .map(|r| r.into_inner().metric_values[0].metric_value_float);
    let followed = v.as_ref().is_ok_and(|v| *v > 0.0);
    run.report(
        "egress: redirect to another port",
        &format!("followed: {followed} ({:?})", v.map_err(|e| e.code())),
    );
    run.check(!followed, "redirects are not followed");
}

async fn first_contact_and_restart(run: &mut Run) {
    let dir = std::env::temp_dir().join(format!("chaos-state-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let mut env = run.env();
    env.push(("KEDA_GPU_SCALER_SAMPLE_INTERVAL".into(), "1s".into()));
    if run.modern {
        env.push((
            "KEDA_GPU_SCALER_STATE_FILE".into(),
            dir.join("state.json").display().to_string(),
        ));
    }
    let endpoint = MetricsEndpoint::start("workload_queue_length 178\n").await;
    let url = endpoint.url.clone();
    let o = so(
        "llm",
        &[
            ("endpoints", &url),
            ("queueTarget", "10"),
            ("downHalfLifeSeconds", "120"),
        ],
    );

    let scaler = Scaler::spawn(&run.bin, &env);
    let mut c = scaler.client().await;
    let _ = c.get_metric_spec(o.clone()).await;
    let first = c.get_metrics(metrics_request(&o)).await;
    run.report(
        "first GetMetrics after GetMetricSpec",
        &format!(
            "{:?}",
            first
                .as_ref()
                .map(|r| r.get_ref().metric_values[0].metric_value_float)
                .map_err(|e| e.code())
        ),
    );
    run.check(first.is_ok(), "a new object's first GetMetrics succeeds");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = c
        .get_metrics(metrics_request(&o))
        .await
        .map(|r| r.into_inner().metric_values[0].metric_value_float)
        .unwrap_or(f64::NAN);
    // Graceful stop, as Kubernetes does.
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(scaler.pid() as i32, libc::SIGTERM) };
    std::thread::sleep(Duration::from_secs(2));
    drop(scaler);

    endpoint.set("workload_queue_length 0\n");
    let scaler = Scaler::spawn(&run.bin, &env);
    let mut c = scaler.client().await;
    let _ = c.get_metric_spec(o.clone()).await;
    let (mut lowest, mut inactive, mut errors) = (f64::INFINITY, 0, 0);
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        match c.get_metrics(metrics_request(&o)).await {
            Ok(r) => lowest = lowest.min(r.into_inner().metric_values[0].metric_value_float),
            Err(_) => errors += 1,
        }
        if c.is_active(o.clone())
            .await
            .is_ok_and(|r| !r.into_inner().result)
        {
            inactive += 1;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    run.report(
        "restart: object decaying from 17.8",
        &format!("before {before:.1}; after restart lowest {lowest:.1}, inactive answers {inactive}, errors {errors}"),
    );
    run.check(
        lowest >= before * 0.9 && inactive == 0,
        "a restart never reports less or inactive",
    );
    let _ = std::fs::remove_dir_all(&dir);
}

async fn duplicates(run: &mut Run) {
    let scaler = Scaler::spawn(&run.bin, &run.env());
    let mut c = scaler.client().await;
    let url = metrics("workload_queue_length 20\n").await;
    for target in ["10", "5"] {
        let o = so("edited", &[("endpoints", &url), ("queueTarget", target)]);
        let _ = c.get_metric_spec(o.clone()).await;
        let _ = c.get_metrics(metrics_request(&o)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let text = get(&format!("{}/metrics", scaler.http))
        .await
        .map(|r| r.1)
        .unwrap_or_default();
    let n = text
        .lines()
        .filter(|l| l.starts_with("keda_gpu_scaler_desired_replicas{"))
        .count();
    run.report(
        "identity: one edited ScaledObject",
        &format!("{n} desired_replicas series"),
    );
    run.check(n == 1, "one series per ScaledObject and metric");
}

fn main() {
    let bin = std::env::var("CHAOS_SCALER_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_keda-gpu-scaler").to_string());
    let short = std::env::var("CHAOS_SHORT").is_ok_and(|v| v == "1");
    let config = std::process::Command::new(&bin)
        .arg("check-config")
        .output()
        .expect("binary runs");
    let modern = String::from_utf8_lossy(&config.stdout).contains("[egress]");
    keda_gpu_scaler::sources::client::install_provider();
    let mut run = Run {
        bin: bin.clone(),
        short,
        modern,
        failures: Vec::new(),
    };
    println!(
        "chaos benchmark: {bin} ({}, {})",
        if modern {
            "with egress settings"
        } else {
            "older binary"
        },
        if short { "short" } else { "full" }
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    // CHAOS_ONLY=isolation,cpu runs only those cases.
    let only = std::env::var("CHAOS_ONLY").unwrap_or_default();
    let wanted = |case: &str| only.is_empty() || only.split(',').any(|c| c.trim() == case);
    // Each case by the name CHAOS_ONLY takes, in the order they run.
    type Case = for<'a> fn(&'a mut Run) -> Pin<Box<dyn Future<Output = ()> + 'a>>;
    let cases: [(&str, Case); 13] = [
        ("isolation", |r| Box::pin(isolation(r))),
        ("small", |r| Box::pin(many_small(r))),
        ("churn", |r| Box::pin(churn(r))),
        ("budget", |r| Box::pin(body_budget(r))),
        ("parsed", |r| Box::pin(parsed_memory(r))),
        ("scrape", |r| Box::pin(scrape_bodies(r))),
        ("prometheus", |r| Box::pin(prometheus_body(r))),
        ("entries", |r| Box::pin(entries(r))),
        ("cpu", |r| Box::pin(cpu(r))),
        ("numbers", |r| Box::pin(numbers(r))),
        ("egress", |r| Box::pin(egress(r))),
        ("restart", |r| Box::pin(first_contact_and_restart(r))),
        ("identity", |r| Box::pin(duplicates(r))),
    ];
    rt.block_on(async {
        for (name, case) in cases {
            if wanted(name) {
                case(&mut run).await;
            }
        }
    });
    if !run.failures.is_empty() {
        eprintln!(
            "chaos: {} promise(s) broken: {:?}",
            run.failures.len(),
            run.failures
        );
        std::process::exit(1);
    }
}
