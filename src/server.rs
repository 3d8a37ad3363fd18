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
use crate::telemetry::{self, RpcMetrics};
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
    rpc: Arc<RpcMetrics>,
    health: watch::Receiver<bool>,
}

/// Binds both listeners and starts everything.
pub async fn start(settings: &Settings) -> Result<Running, ServerError> {
    // Checked before anything listens, so bad TLS files stop the start with the reason.
    let tls = match &settings.tls.files {
        Some(files) => Some(Arc::new(ReloadingConfig::load(files)?)),
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

    let engine = Engine::new(settings.engine());
    let rpc = Arc::new(RpcMetrics::default());
    let (shutdown, stop) = watch::channel(false);
    let (healthy_tx, healthy) = watch::channel(false);
    let mut tasks = JoinSet::new();

    tasks.spawn(engine.clone().run(stop.clone()));

    let (reporter, health_service) = tonic_health::server::health_reporter();
    tasks.spawn(watchdog(engine.clone(), reporter, healthy_tx, stop.clone()));

    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .expect("the embedded descriptor sets are valid");
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .expect("the embedded descriptor sets are valid");
    let scaler = ScalerService::new(engine.clone(), rpc.clone(), stop.clone());

    let mut grpc_stop = stop.clone();
    let grpc = tonic::transport::Server::builder()
        // KEDA sends no keepalive pings; ours keep idle StreamIsActive connections from being
        // dropped by NATs and proxies, and find dead peers.
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .tcp_nodelay(true)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(ExternalScalerServer::new(scaler));
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

    let app = axum::Router::new()
        .route("/metrics", get(metrics))
        .route("/debug/scaledobjects", get(debug))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .with_state(HttpState {
            engine: engine.clone(),
            rpc,
            health: healthy,
        });
    let mut http_stop = stop.clone();
    tasks.spawn(async move {
        let served = axum::serve(http_listener, app).with_graceful_shutdown(async move {
            let _ = http_stop.wait_for(|s| *s).await;
        });
        if let Err(e) = served.await {
            tracing::error!(error = %e, "HTTP server failed");
        }
    });

    tracing::info!(%grpc_addr, grpc_tls, %http_addr, "keda-gpu-scaler serving");
    Ok(Running {
        grpc_addr,
        http_addr,
        engine,
        shutdown,
        tasks,
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

/// SERVING while the sampler completes rounds; NOT_SERVING once it has missed three rounds (each
/// an interval plus a scrape timeout), so Kubernetes stops routing to a scaler going stale.
async fn watchdog(
    engine: Arc<Engine>,
    reporter: tonic_health::server::HealthReporter,
    healthy: watch::Sender<bool>,
    mut stop: watch::Receiver<bool>,
) {
    let settings = engine.settings().clone();
    let limit = (settings.sample_interval + settings.scrape_timeout) * 3;
    let mut ticker = tokio::time::interval(settings.sample_interval.min(Duration::from_secs(1)));
    let mut last: Option<bool> = None;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.wait_for(|s| *s) => break,
        }
        let ok = engine.since_last_round().is_some_and(|age| age <= limit);
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

async fn metrics(State(s): State<HttpState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        telemetry::render_metrics(&s.engine, &s.rpc),
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
