//! The HTTP service: routes, handlers, readiness and graceful shutdown.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::multipart::MultipartRejection;
use axum::extract::{DefaultBodyLimit, Multipart, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::compute::{busy, matrix, tryon};
use crate::config::Config;
use crate::error::ApiError;
use crate::executor::{Cancel, Executor};
use crate::gemm::{Backend, BackendError};
use crate::metrics::{Metrics, CONTENT_TYPE};
use crate::params::bounded;
use crate::with_device;

/// Interval between chunks of a /stream response.
pub const STREAM_TICK: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Shared state of all handlers.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    backend: Arc<Backend>,
    executor: Executor,
    metrics: Arc<Metrics>,
    model: Arc<tryon::TryOnModel>,
    draining: watch::Sender<bool>,
}

impl AppState {
    pub fn new(config: Config, backend: Backend) -> Self {
        let kind = backend.kind();
        let metrics = Arc::new(Metrics::new(kind.as_str(), &backend.device_name()));
        let executor = Executor::new(
            config.max_concurrency as usize,
            config.queue_capacity,
            Arc::clone(&metrics),
        );
        Self {
            inner: Arc::new(Inner {
                config,
                backend: Arc::new(backend),
                executor,
                metrics,
                model: Arc::new(tryon::TryOnModel::default()),
                draining: watch::channel(false).0,
            }),
        }
    }

    pub fn backend(&self) -> &Backend {
        &self.inner.backend
    }

    pub fn executor(&self) -> &Executor {
        &self.inner.executor
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Marks the service as draining: /readyz fails and open streams finish early.
    pub fn begin_drain(&self) {
        self.inner.draining.send_replace(true);
    }

    pub fn is_draining(&self) -> bool {
        *self.inner.draining.borrow()
    }

    /// Resolves once draining has begun.
    pub async fn drained(&self) {
        let mut rx = self.inner.draining.subscribe();
        // The sender lives in `self`, so the channel cannot close while we wait.
        let _ = rx.wait_for(|d| *d).await;
    }

    /// Runs a compute job through the bounded executor, mapping admission errors to HTTP.
    async fn compute<T, F>(&self, job: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&Backend, &Cancel) -> T + Send + 'static,
    {
        let backend = Arc::clone(&self.inner.backend);
        self.inner
            .executor
            .run(move |cancel| job(&backend, cancel))
            .await
            .map_err(|e| ApiError::admit(e, self.inner.config.retry_after_secs))
    }
}

/// A bound, ready-to-run service.
pub struct Server {
    state: AppState,
    listener: TcpListener,
}

impl Server {
    /// Opens the backend and binds the listener.
    pub async fn bind(config: Config) -> Result<Self, StartError> {
        let (choice, threads) = (config.backend, config.cpu_threads);
        let backend = tokio::task::spawn_blocking(move || Backend::open(choice, threads))
            .await
            .map_err(|e| BackendError::Unavailable(format!("backend start-up panicked: {e}")))??;
        let listener = TcpListener::bind(config.addr)
            .await
            .map_err(|source| StartError::Bind {
                addr: config.addr,
                source,
            })?;
        tracing::info!(
            backend = %backend.kind(),
            device = %backend.device_name(),
            max_concurrency = config.max_concurrency,
            queue_capacity = config.queue_capacity,
            "compute backend ready"
        );
        Ok(Self {
            state: AppState::new(config, backend),
            listener,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn state(&self) -> AppState {
        self.state.clone()
    }

    /// Serves until `shutdown` resolves, then drains: readiness fails, new connections are still
    /// accepted for `shutdown_delay`, then the listener closes and in-flight requests finish.
    ///
    /// The connection loop is `axum::serve`'s, plus a timer: without one hyper never enforces
    /// its header read timeout, and a client sending a header line every few seconds held a
    /// connection for minutes.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let state = self.state.clone();
        let delay = state.inner.config.shutdown_delay();
        let graceful = async move {
            shutdown.await;
            tracing::info!(?delay, "draining: readiness now fails");
            state.begin_drain();
            tokio::time::sleep(delay).await;
        };
        let mut http = auto::Builder::new(TokioExecutor::new());
        http.http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.state.inner.config.header_timeout());
        let service = TowerToHyperService::new(router(self.state));
        let connections = GracefulShutdown::new();
        tokio::pin!(graceful);
        loop {
            let stream = tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        accept_failed(e).await;
                        continue;
                    }
                },
                _ = &mut graceful => break,
            };
            let conn = http
                .serve_connection_with_upgrades(TokioIo::new(stream), service.clone())
                .into_owned();
            let conn = connections.watch(conn);
            tokio::spawn(async move {
                // A header timeout, a reset or a malformed request: the client's to see.
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
            });
        }
        drop(self.listener);
        connections.shutdown().await;
        Ok(())
    }
}

/// As `axum::serve`: a peer that went away before it was accepted is nothing; anything else
/// (out of file descriptors, above all) is logged and retried after a pause.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accepting a connection failed");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

pub fn router(state: AppState) -> Router {
    let body_limit = state.inner.config.max_body_bytes;
    Router::new()
        .route("/matrix", get(matrix_handler))
        .route("/gpu_job", get(gpu_job_handler))
        .route("/stream", get(stream_handler))
        .route(
            "/tryon",
            post(tryon_handler)
                .layer(DefaultBodyLimit::max(body_limit))
                .layer(axum::middleware::from_fn_with_state(
                    state.clone(),
                    refuse_announced_oversize,
                )),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_handler))
        .with_state(state)
}

/// Records the request in the metrics and turns the result into a response.
fn finish<R: IntoResponse>(
    state: &AppState,
    endpoint: &str,
    start: Instant,
    result: Result<R, ApiError>,
) -> Response {
    let resp = match result {
        Ok(r) => r.into_response(),
        Err(e) => e.into_response(),
    };
    state.metrics().observe(
        endpoint,
        resp.status().as_u16(),
        start.elapsed().as_secs_f64(),
    );
    resp
}

#[derive(Serialize)]
struct MatrixResponse {
    backend: &'static str,
    device: String,
    #[serde(flatten)]
    outcome: matrix::MatrixOutcome,
    /// Time from arrival to the end of compute, including time in the queue.
    total_ms: f64,
}

async fn matrix_handler(
    State(state): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let start = Instant::now();
    let result = async {
        let cfg = &state.inner.config;
        let size = bounded(
            &q,
            "size",
            512usize.min(cfg.max_matrix_size),
            1,
            cfg.max_matrix_size,
        )?;
        let iterations = bounded(&q, "iterations", 1u32, 1, cfg.max_iterations)?;
        let seed = bounded(&q, "seed", 42u64, 0, u64::MAX)?;
        let (outcome, _) = state
            .compute(
                move |b, c| with_device!(b, d => matrix::run_until(d, size, iterations, seed, c)),
            )
            .await??;
        Ok(Json(MatrixResponse {
            backend: state.backend().kind().as_str(),
            device: state.backend().device_name(),
            outcome,
            total_ms: start.elapsed().as_secs_f64() * 1e3,
        }))
    }
    .await;
    finish(&state, "matrix", start, result)
}

#[derive(Serialize)]
struct BusyResponse {
    backend: &'static str,
    #[serde(flatten)]
    outcome: busy::BusyOutcome,
    total_ms: f64,
}

async fn gpu_job_handler(
    State(state): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let start = Instant::now();
    let result = async {
        let cfg = &state.inner.config;
        let work_ms = bounded(&q, "work_ms", 100u64.min(cfg.max_work_ms), 1, cfg.max_work_ms)?;
        let outcome = state
            .compute(move |b, c| with_device!(b, d => busy::run_until(d, Duration::from_millis(work_ms), work_ms, c)))
            .await??;
        Ok(Json(BusyResponse {
            backend: state.backend().kind().as_str(),
            outcome,
            total_ms: start.elapsed().as_secs_f64() * 1e3,
        }))
    }
    .await;
    finish(&state, "gpu_job", start, result)
}

/// Refuses a body whose announced length is over the limit before reading any of it, instead of
/// reading up to the limit (or holding the connection while a client trickles 10 GB).
async fn refuse_announced_oversize(
    State(state): State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let max = state.inner.config.max_body_bytes;
    let announced = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match announced {
        Some(n) if n > max as u64 => {
            let mut resp = ApiError::TooLarge {
                field: "body",
                message: format!("request body of {n} bytes announced; at most {max} are accepted"),
            }
            .into_response();
            // The unread body makes the connection unusable: say so.
            resp.headers_mut().insert(
                header::CONNECTION,
                header::HeaderValue::from_static("close"),
            );
            resp
        }
        _ => next.run(request).await,
    }
}

async fn tryon_handler(
    State(state): State<AppState>,
    multipart: Result<Multipart, MultipartRejection>,
) -> Response {
    let start = Instant::now();
    let result = async {
        let mut multipart = multipart.map_err(|e| ApiError::BadRequest {
            field: "content-type",
            message: format!("expected multipart/form-data with person_image and cloth_image: {e}"),
        })?;
        let max_body = state.inner.config.max_body_bytes;
        let body_timeout = Duration::from_millis(state.inner.config.body_timeout_ms);
        let mut person: Option<Bytes> = None;
        let mut cloth: Option<Bytes> = None;
        let read = async {
            loop {
                let field = multipart
                    .next_field()
                    .await
                    .map_err(|e| multipart_error(e, max_body))?;
                let Some(field) = field else { break };
                let slot = match field.name() {
                    Some("person_image") => &mut person,
                    Some("cloth_image") => &mut cloth,
                    // Other form fields are ignored, but still read so the body limit applies.
                    _ => {
                        field
                            .bytes()
                            .await
                            .map_err(|e| multipart_error(e, max_body))?;
                        continue;
                    }
                };
                *slot = Some(
                    field
                        .bytes()
                        .await
                        .map_err(|e| multipart_error(e, max_body))?,
                );
            }
            Ok::<(), ApiError>(())
        };
        tokio::time::timeout(body_timeout, read)
            .await
            .map_err(|_| ApiError::BadRequest {
                field: "body",
                message: format!(
                    "request body not received within {} ms",
                    body_timeout.as_millis()
                ),
            })??;
        let missing = |field| ApiError::BadRequest {
            field,
            message:
                "missing multipart field; send person_image and cloth_image as PNG or JPEG files"
                    .into(),
        };
        let person = person.ok_or_else(|| missing("person_image"))?;
        let cloth = cloth.ok_or_else(|| missing("cloth_image"))?;
        let limits = tryon::ImageLimits {
            max_width: state.inner.config.max_image_dim,
            max_height: state.inner.config.max_image_dim,
        };
        let model = Arc::clone(&state.inner.model);
        let outcome = state
            .compute(
                move |b, c| with_device!(b, d => model.run_until(d, &person, &cloth, limits, c)),
            )
            .await??;
        let mut resp = (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "image/png")],
            outcome.png,
        )
            .into_response();
        let h = resp.headers_mut();
        h.insert(
            "x-backend",
            HeaderValue::from_static(state.backend().kind().as_str()),
        );
        h.insert("x-flops", HeaderValue::from(outcome.flops as u64));
        h.insert(
            "x-compute-ms",
            HeaderValue::from_str(&format!("{:.3}", outcome.elapsed_ms))
                .expect("a number is a valid header"),
        );
        Ok(resp)
    }
    .await;
    finish(&state, "tryon", start, result)
}

fn multipart_error(e: axum::extract::multipart::MultipartError, max_body: usize) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::TooLarge {
            field: "body",
            message: format!("request body exceeds the accepted {max_body} bytes"),
        }
    } else {
        ApiError::BadRequest {
            field: "body",
            message: format!("malformed multipart body: {}", e.body_text()),
        }
    }
}

/// Counts the stream in the metrics when it ends, however it ends (finished, drained, or the
/// client went away).
struct StreamGuard {
    state: AppState,
    start: Instant,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let m = self.state.metrics();
        m.open_streams.dec();
        m.observe("stream", 200, self.start.elapsed().as_secs_f64());
    }
}

async fn stream_handler(
    State(state): State<AppState>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let start = Instant::now();
    let max = state.inner.config.max_stream_ms;
    let duration_ms = match bounded(&q, "duration_ms", 1000u64.min(max), 1, max) {
        Ok(v) => v,
        Err(e) => return finish::<Response>(&state, "stream", start, Err(e)),
    };
    state.metrics().open_streams.inc();
    let guard = StreamGuard {
        state: state.clone(),
        start,
    };
    let deadline = tokio::time::Instant::from_std(start) + Duration::from_millis(duration_ms);
    let draining = state.inner.draining.subscribe();
    let chunks = futures_util::stream::unfold(
        (guard, draining, 0u64, false),
        move |(guard, mut draining, seq, done)| async move {
            if done {
                return None;
            }
            let now = tokio::time::Instant::now();
            let next = (now + STREAM_TICK).min(deadline);
            let mut last = next >= deadline;
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {}
                _ = draining.wait_for(|d| *d) => last = true,
            }
            let elapsed_ms = guard.start.elapsed().as_millis() as u64;
            let line = format!("{{\"seq\":{seq},\"elapsed_ms\":{elapsed_ms},\"done\":{last}}}\n");
            Some((
                Ok::<_, std::convert::Infallible>(Bytes::from(line)),
                (guard, draining, seq + 1, last),
            ))
        },
    );
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(chunks),
    )
        .into_response()
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining").into_response()
    } else {
        (StatusCode::OK, "ready").into_response()
    }
}

async fn metrics_handler(State(state): State<AppState>) -> Response {
    let backend = Arc::clone(&state.inner.backend);
    // NVML calls block briefly; keep them off the reactor.
    let sampled =
        tokio::task::spawn_blocking(move || (backend.hardware_utilization(), backend.memory()))
            .await;
    let (hw_util, memory) = match sampled {
        Ok(v) => v,
        Err(e) => {
            return ApiError::Internal(format!("sampling the device failed: {e}")).into_response()
        }
    };
    let util = hw_util.unwrap_or_else(|| state.executor().busy_percent());
    state
        .metrics()
        .set_accelerator(util, memory.used_bytes, memory.total_bytes);
    (
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        state.metrics().encode(),
    )
        .into_response()
}
