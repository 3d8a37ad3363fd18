//! The running scaler: gRPC (ExternalScaler, health, reflection) and HTTP (metrics, debug) on
//! their listeners, the sampler, and a health watchdog, all stopped together.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_stream::wrappers::TcpListenerStream;
use tonic_health::ServingStatus;

use crate::config::Settings;
use crate::engine::Engine;
use crate::proto::external_scaler_server::ExternalScalerServer;
use crate::service::ScalerService;
use crate::telemetry::{self, GrpcMetrics, GrpcMetricsLayer, Metrics};
use crate::tls::{self, ReloadingConfig, TlsError};

/// gRPC service name reported by grpc.health.v1 (besides the empty, whole-server name).
pub const SERVICE_NAME: &str = "externalscaler.ExternalScaler";

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Client(#[from] crate::sources::client::ClientError),
    #[error(transparent)]
    Settings(#[from] crate::config::ConfigError),
}

/// A started scaler. Dropping it does not stop it; call `stop`.
pub struct Running {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub engine: Arc<Engine>,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl Running {
    /// Signals every task to stop and waits (bounded) for them: open streams end, in-flight RPCs
    /// finish, listeners close.
    pub async fn stop(mut self) {
        let _ = self.shutdown.send(true);
        let all = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(Duration::from_secs(10), all)
            .await
            .is_err()
        {
            tracing::warn!("shutdown took longer than 10s; aborting remaining tasks");
            self.tasks.abort_all();
        }
    }
}

#[derive(Clone)]
struct HttpState {
    engine: Arc<Engine>,
    metrics: Arc<Metrics>,
    health: watch::Receiver<bool>,
}

/// Binds both listeners and starts everything.
pub async fn start(settings: &Settings) -> Result<Running, ServerError> {
    // Checked before anything listens, so bad TLS files stop the start with the reason.
    let tls = match settings.tls.files()? {
        Some(files) => Some(Arc::new(ReloadingConfig::load(&files)?)),
        None => None,
    };
    let grpc_listener = bind("gRPC", settings.grpc_addr).await?;
    let http_listener = bind("HTTP", settings.http_addr).await?;
    let grpc_addr = grpc_listener
        .local_addr()
        .expect("bound socket has an address");
    let http_addr = http_listener
        .local_addr()
        .expect("bound socket has an address");

    let engine = Engine::try_new(settings.engine.clone(), &settings.sources)?;
    // Every service the server registers (and describes for reflection) is measured.
    let descriptors = [
        crate::proto::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
    ];
    let grpc_metrics =
        Arc::new(GrpcMetrics::new(&descriptors).expect("the embedded descriptor sets are valid"));
    let scaler_metrics = Arc::new(Metrics::new(engine.clone(), &grpc_metrics));
    let (shutdown, stop) = watch::channel(false);
    let (healthy_tx, healthy) = watch::channel(false);
    let mut tasks = JoinSet::new();

    tasks.spawn(engine.clone().run(stop.clone()));

    let (reporter, health_service) = tonic_health::server::health_reporter();
    tasks.spawn(watchdog(engine.clone(), reporter, healthy_tx, stop.clone()));

    let grpc = grpc_server(
        &engine,
        grpc_metrics,
        health_service,
        &descriptors,
        stop.clone(),
    );
    let mut grpc_stop = stop.clone();
    let grpc_stopped = async move {
        let _ = grpc_stop.wait_for(|s| *s).await;
    };
    let grpc_tls = match &tls {
        None => {
            let served = grpc
                .serve_with_incoming_shutdown(TcpListenerStream::new(grpc_listener), grpc_stopped);
            tasks.spawn(log_failure("gRPC server", served));
            "off"
        }
        Some(tls) => {
            let (incoming, accept_loop) = tls::incoming(grpc_listener, tls.clone(), stop.clone());
            tasks.spawn(accept_loop);
            tasks.spawn(
                tls.clone()
                    .watch(settings.tls.reload_interval, stop.clone()),
            );
            let served = grpc.serve_with_incoming_shutdown(incoming, grpc_stopped);
            tasks.spawn(log_failure("gRPC server", served));
            if tls.requires_client_cert() {
                "mtls"
            } else {
                "tls"
            }
        }
    };

    let app = http_router(engine.clone(), scaler_metrics, healthy, settings.debug_page);
    let mut http_stop = stop.clone();
    tasks.spawn(async move {
        let served = axum::serve(http_listener, app).with_graceful_shutdown(async move {
            let _ = http_stop.wait_for(|s| *s).await;
        });
        if let Err(e) = served.await {
            tracing::error!(error = %e, "HTTP server failed");
        }
    });

    // How tenant fetches leave the pod: with a proxy, the egress policy sees less.
    let egress = &settings.sources.egress;
    let tenant_fetches = egress.proxy_mode();
    if egress.use_proxy_env && !egress.proxy.is_empty() {
        tracing::warn!(%tenant_fetches, "egress.use_proxy_env is on");
    }
    tracing::info!(%grpc_addr, grpc_tls, %http_addr, %tenant_fetches, "keda-gpu-scaler serving");
    Ok(Running {
        grpc_addr,
        http_addr,
        engine,
        shutdown,
        tasks,
    })
}

/// The gRPC services: KEDA's ExternalScaler, health and reflection, measured by `grpc_metrics`,
/// with the keepalive KEDA's long-lived streams need. Serving it is the caller's.
pub fn grpc_server(
    engine: &Arc<Engine>,
    grpc_metrics: Arc<GrpcMetrics>,
    health: tonic_health::pb::health_server::HealthServer<
        impl tonic_health::pb::health_server::Health,
    >,
    descriptors: &[&[u8]],
    stop: watch::Receiver<bool>,
) -> tonic::transport::server::Router<tower_layer::Stack<GrpcMetricsLayer, tower_layer::Identity>> {
    let reflection = || {
        let mut b = tonic_reflection::server::Builder::configure();
        for d in descriptors.iter().take(2) {
            b = b.register_encoded_file_descriptor_set(d);
        }
        b
    };
    let reflection_v1 = reflection()
        .build_v1()
        .expect("the embedded descriptor sets are valid");
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .expect("the embedded descriptor sets are valid");
    tonic::transport::Server::builder()
        // KEDA sends no keepalive pings; ours keep idle StreamIsActive connections from being
        // dropped by NATs and proxies, and find dead peers.
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .tcp_nodelay(true)
        .layer(GrpcMetricsLayer::new(grpc_metrics))
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(ExternalScalerServer::new(ScalerService::new(
            engine.clone(),
            stop,
        )))
}

/// The HTTP routes: `/metrics`, `/healthz`, `/readyz`, and `/debug/scaledobjects` only when
/// the operator turned the debug page on (it shows every tenant's endpoints and notes).
pub fn http_router(
    engine: Arc<Engine>,
    metrics: Arc<Metrics>,
    health: watch::Receiver<bool>,
    debug_page: bool,
) -> axum::Router {
    let mut app = axum::Router::new()
        .route("/metrics", get(metrics_page))
        .route("/healthz", get(|| async { "ok" }));
    if debug_page {
        app = app.route("/debug/scaledobjects", get(debug));
    }
    app.route("/readyz", get(ready)).with_state(HttpState {
        engine,
        metrics,
        health,
    })
}

async fn log_failure<E: std::fmt::Display>(
    what: &'static str,
    served: impl std::future::Future<Output = Result<(), E>>,
) {
    if let Err(e) = served.await {
        tracing::error!(error = %e, "{what} failed");
    }
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { what, addr, source })
}

/// SERVING while the sampler loop is alive (started, and completing rounds); NOT_SERVING once it
/// has missed three rounds (each an interval plus a scrape timeout), so Kubernetes stops routing
/// to a scaler going stale. Tenants' endpoints cannot cause that: every round is bounded by
/// per-object deadlines, and their trouble shows per object (/debug, keda_gpu_scaler_stale).
async fn watchdog(
    engine: Arc<Engine>,
    reporter: tonic_health::server::HealthReporter,
    healthy: watch::Sender<bool>,
    mut stop: watch::Receiver<bool>,
) {
    let settings = engine.settings().clone();
    let round = engine.sources_deadline();
    let limit = (settings.sample_interval + round) * 3;
    let mut ticker = tokio::time::interval(settings.sample_interval.min(Duration::from_secs(1)));
    let mut last: Option<bool> = None;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.wait_for(|s| *s) => break,
        }
        let ok = engine.since_alive().is_some_and(|age| age <= limit);
        if last != Some(ok) {
            let status = if ok {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            reporter.set_service_status("", status).await;
            reporter.set_service_status(SERVICE_NAME, status).await;
            let _ = healthy.send(ok);
            if ok {
                tracing::info!("health: SERVING");
            } else if last.is_some() {
                tracing::warn!(limit = ?limit, "health: NOT_SERVING, the sampler has stalled");
            }
            last = Some(ok);
        }
    }
    reporter
        .set_service_status("", ServingStatus::NotServing)
        .await;
    reporter
        .set_service_status(SERVICE_NAME, ServingStatus::NotServing)
        .await;
}

async fn metrics_page(State(s): State<HttpState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, telemetry::metrics::CONTENT_TYPE)],
        s.metrics.render(),
    )
}

async fn debug(State(s): State<HttpState>) -> impl IntoResponse {
    axum::Json(telemetry::debug_entries(&s.engine))
}

async fn ready(State(s): State<HttpState>) -> impl IntoResponse {
    if *s.health.borrow() {
        (StatusCode::OK, "ready")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "sampler has not completed a recent round",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::EngineSettings;
    use crate::sources::prometheus::PrometheusConfig;
    use crate::sources::SourceSettings;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;

    async fn status(client: &mut HealthClient<tonic::transport::Channel>) -> i32 {
        client
            .check(HealthCheckRequest {
                service: SERVICE_NAME.into(),
            })
            .await
            .map_or(-1, |r| r.into_inner().status)
    }

    /// Health follows the sampler: NOT_SERVING before the first round and again once rounds stop.
    #[tokio::test]
    async fn health_turns_not_serving_when_sampling_stalls() {
        let engine = Engine::new(
            EngineSettings {
                sample_interval: Duration::from_millis(100),
                ..EngineSettings::default()
            },
            &SourceSettings {
                scrape_timeout: Duration::from_millis(50),
                prometheus: PrometheusConfig {
                    timeout: Duration::from_millis(50),
                    ..PrometheusConfig::default()
                },
                ..SourceSettings::default()
            },
        );
        let (reporter, service) = tonic_health::server::health_reporter();
        let (healthy_tx, healthy) = watch::channel(false);
        let (_stop_tx, stop) = watch::channel(false);
        tokio::spawn(watchdog(engine.clone(), reporter, healthy_tx, stop));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );
        let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = HealthClient::new(channel);
        const SERVING: i32 = 1;
        const NOT_SERVING: i32 = 2;

        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(status(&mut client).await, NOT_SERVING, "no round yet");
        assert!(!*healthy.borrow());

        // A round completes (nothing registered: the round itself is what counts).
        engine.sample(false).await;
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert_eq!(status(&mut client).await, SERVING);
        assert!(*healthy.borrow());

        // No more rounds: past three (interval + timeout) the scaler reports itself stalled.
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert_eq!(status(&mut client).await, NOT_SERVING);
        assert!(!*healthy.borrow());
    }

    #[tokio::test]
    async fn the_http_routes_serve_and_the_debug_page_only_when_asked() {
        let engine = Engine::new(EngineSettings::default(), &SourceSettings::default());
        let grpc = GrpcMetrics::new(&[crate::proto::FILE_DESCRIPTOR_SET]).unwrap();
        let metrics = Arc::new(Metrics::new(engine.clone(), &grpc));
        for debug_page in [false, true] {
            let (_tx, health) = watch::channel(true);
            let app = http_router(engine.clone(), metrics.clone(), health, debug_page);
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(async move { axum::serve(listener, app).await });
            let get = |path: &str| reqwest::get(format!("http://{addr}{path}"));
            assert_eq!(get("/healthz").await.unwrap().text().await.unwrap(), "ok");
            assert_eq!(get("/readyz").await.unwrap().status(), 200);
            let m = get("/metrics").await.unwrap().text().await.unwrap();
            assert!(m.contains("keda_gpu_scaler_scaledobjects 0"), "{m}");
            let debug = get("/debug/scaledobjects").await.unwrap().status();
            assert_eq!(debug == 200, debug_page, "{debug}");
        }
    }
}
