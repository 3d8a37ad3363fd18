//! GetMetrics throughput and latency with 10,000 registered ScaledObjects, against an empty tonic
//! handler measured in the same run on the same machine with the same clients.
//!
//! Prints RPC/s, p50 and p99 for both servers and their ratio; asserts nothing (machines are
//! noisy: compare the ratio, not absolute numbers). Run with `cargo bench --bench getmetrics`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use keda_gpu_scaler::config::Settings;
use keda_gpu_scaler::proto::external_scaler_client::ExternalScalerClient;
use keda_gpu_scaler::proto::external_scaler_server::{ExternalScaler, ExternalScalerServer};
use keda_gpu_scaler::proto::*;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

const OBJECTS: usize = 10_000;
const CLIENTS: usize = 4;
const ROUND: Duration = Duration::from_secs(4);
const ROUNDS: usize = 3;

/// The baseline: answers GetMetrics with a constant, touching nothing.
struct Empty;

#[tonic::async_trait]
impl ExternalScaler for Empty {
    async fn is_active(
        &self,
        _: Request<ScaledObjectRef>,
    ) -> Result<Response<IsActiveResponse>, Status> {
        Ok(Response::new(IsActiveResponse { result: true }))
    }
    type StreamIsActiveStream = ReceiverStream<Result<IsActiveResponse, Status>>;
    async fn stream_is_active(
        &self,
        _: Request<ScaledObjectRef>,
    ) -> Result<Response<Self::StreamIsActiveStream>, Status> {
        Err(Status::unimplemented("baseline"))
    }
    async fn get_metric_spec(
        &self,
        _: Request<ScaledObjectRef>,
    ) -> Result<Response<GetMetricSpecResponse>, Status> {
        Err(Status::unimplemented("baseline"))
    }
    #[allow(deprecated)]
    async fn get_metrics(
        &self,
        r: Request<GetMetricsRequest>,
    ) -> Result<Response<GetMetricsResponse>, Status> {
        Ok(Response::new(GetMetricsResponse {
            metric_values: vec![MetricValue {
                metric_name: r.into_inner().metric_name,
                metric_value: 3,
                metric_value_float: 3.0,
            }],
        }))
    }
    type StreamMetricSpecStream = ReceiverStream<Result<GetMetricSpecResponse, Status>>;
    async fn stream_metric_spec(
        &self,
        _: Request<ScaledObjectRef>,
    ) -> Result<Response<Self::StreamMetricSpecStream>, Status> {
        Err(Status::unimplemented("baseline"))
    }
}

fn object(i: usize, endpoint: &str) -> ScaledObjectRef {
    let metadata: HashMap<String, String> = [
        ("scalerAddress", "keda-gpu-scaler.keda:9443"),
        ("endpoints", endpoint),
        ("queueTarget", "10"),
        ("gpuUtilTarget", "70"),
        ("latencyTargetMs", "500"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    ScaledObjectRef {
        name: format!("inference-{i}"),
        namespace: format!("team-{}", i % 50),
        scaler_metadata: metadata,
    }
}

async fn connect(addr: SocketAddr) -> ExternalScalerClient<Channel> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    ExternalScalerClient::new(channel)
}

struct Figures {
    rps: f64,
    p50_us: f64,
    p99_us: f64,
    errors: usize,
}

/// CLIENTS concurrent clients, each on its own connection, calling GetMetrics back to back over
/// the registered objects for ROUND.
async fn drive(addr: SocketAddr, objects: &[ScaledObjectRef]) -> Figures {
    let mut tasks = Vec::new();
    let start = Instant::now();
    for c in 0..CLIENTS {
        let mut client = connect(addr).await;
        let requests: Vec<GetMetricsRequest> = objects
            .iter()
            .skip(c)
            .step_by(CLIENTS)
            .map(|o| GetMetricsRequest {
                scaled_object_ref: Some(o.clone()),
                metric_name: "gpu-composite".into(),
            })
            .collect();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(200_000);
            let mut errors = 0;
            let deadline = Instant::now() + ROUND;
            let mut i = 0;
            while Instant::now() < deadline {
                let req = requests[i % requests.len()].clone();
                i += 1;
                let t = Instant::now();
                if client.get_metrics(req).await.is_err() {
                    errors += 1;
                }
                latencies.push(t.elapsed().as_nanos() as u64);
            }
            (latencies, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.unwrap();
        all.extend(l);
        errors += e;
    }
    let elapsed = start.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)] as f64 / 1000.0;
    Figures {
        rps: all.len() as f64 / elapsed,
        p50_us: pct(0.50),
        p99_us: pct(0.99),
        errors,
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // One replica's /metrics, shared by every ScaledObject (the sampler fetches it once).
        let metrics = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let metrics_addr = metrics.local_addr().unwrap();
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(|| async { "workload_queue_length 25\nworkload_accelerator_utilization_percent 60\n" }),
        );
        tokio::spawn(async move { axum::serve(metrics, app).await });
        let endpoint = format!("http://{metrics_addr}/metrics");

        let mut settings = Settings {
            grpc_addr: "127.0.0.1:0".parse().unwrap(),
            http_addr: "127.0.0.1:0".parse().unwrap(),
            log_level: "warn".into(),
            ..Settings::default()
        };
        settings.sources.egress = keda_gpu_scaler::egress::EgressPolicy::loopback();
        let scaler = keda_gpu_scaler::server::start(&settings).await.unwrap();

        let empty = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let empty_addr = empty.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .tcp_nodelay(true)
                .add_service(ExternalScalerServer::new(Empty))
                .serve_with_incoming(TcpListenerStream::new(empty)),
        );

        let objects: Vec<ScaledObjectRef> = (0..OBJECTS).map(|i| object(i, &endpoint)).collect();
        let registering = Instant::now();
        let mut client = connect(scaler.grpc_addr).await;
        for o in &objects {
            client.get_metric_spec(o.clone()).await.unwrap();
        }
        // Every object answers once the sampler has scored it.
        for o in &objects {
            let req = GetMetricsRequest {
                scaled_object_ref: Some(o.clone()),
                metric_name: "gpu-composite".into(),
            };
            while client.get_metrics(req.clone()).await.is_err() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        println!(
            "registered and sampled {} ScaledObjects in {:.2}s",
            scaler.engine.len(),
            registering.elapsed().as_secs_f64()
        );

        println!("{CLIENTS} concurrent clients, {} s per round, rounds alternate", ROUND.as_secs());
        println!("{:<10} {:>5} {:>10} {:>9} {:>9} {:>7}", "server", "round", "RPC/s", "p50 us", "p99 us", "errors");
        let (mut best_base, mut best_scaler) = (0.0f64, 0.0f64);
        let mut scaler_p99 = Vec::new();
        for round in 1..=ROUNDS {
            for (name, addr) in [("empty", empty_addr), ("scaler", scaler.grpc_addr)] {
                let f = drive(addr, &objects).await;
                println!("{name:<10} {round:>5} {:>10.0} {:>9.1} {:>9.1} {:>7}", f.rps, f.p50_us, f.p99_us, f.errors);
                if name == "empty" {
                    best_base = best_base.max(f.rps);
                } else {
                    best_scaler = best_scaler.max(f.rps);
                    scaler_p99.push(f.p99_us);
                }
            }
        }
        scaler_p99.sort_by(f64::total_cmp);
        println!(
            "ratio scaler/empty (best round each): {:.3}  (target >= 0.8); scaler p99 median of rounds: {:.1} us (target < 1000)",
            best_scaler / best_base,
            scaler_p99[scaler_p99.len() / 2]
        );
        scaler.stop().await;
    });
}
