//! gRPC server metrics under the names the gRPC ecosystem's dashboards read (go-grpc-prometheus
//! and its successors): `grpc_server_started_total`, `grpc_server_handled_total` and
//! `grpc_server_handling_seconds`, labelled `grpc_type`, `grpc_service`, `grpc_method` (and
//! `grpc_code` on the handled counter). Measured by a tower layer around the whole tonic server,
//! so every RPC of every service (ExternalScaler, health, reflection) is counted the same way.
//!
//! As in go-grpc-prometheus, a call is handled when it ends: a unary call when its status is
//! sent, a stream when it closes. An open StreamIsActive is started but not yet handled, so
//! `started - handled` is the number of open calls. A call the client abandons (reset,
//! disconnect) is handled as `Canceled`.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http_body::{Body, Frame, SizeHint};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use prost::Message as _;
use tonic::codegen::http::{HeaderMap, Request, Response};
use tonic::codegen::{BoxFuture, Service};

/// Upper bounds of `grpc_server_handling_seconds`. The scaler answers from its cache in well
/// under a millisecond, so the buckets start at 100 µs, where go-grpc-prometheus's defaults
/// (5 ms up) would put every call in the first one; the top ones catch the first call of a new
/// ScaledObject (it may wait for a sampling round) and short-lived streams.
pub const HANDLING_BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5, 10.0,
];

/// One RPC of a served service, as labelled.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    /// unary, client_stream, server_stream or bidi_stream.
    pub grpc_type: &'static str,
    /// Fully qualified service name, e.g. `externalscaler.ExternalScaler`.
    pub grpc_service: Arc<str>,
    pub grpc_method: Arc<str>,
}

/// The status a call ended with, as go-grpc's `codes.Code.String()` spells it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    pub grpc_code: &'static str,
}

type HistogramFamily = Family<MethodLabels, Histogram, fn() -> Histogram>;

/// The three gRPC server metrics and the table of methods they may be labelled with.
#[derive(Debug)]
pub struct GrpcMetrics {
    started: Family<MethodLabels, Counter>,
    handled: Family<(MethodLabels, CodeLabel), Counter>,
    handling: HistogramFamily,
    /// `/package.Service/Method` -> labels. Only served methods are counted: the path of a
    /// request is the client's to choose, and must not mint new series.
    methods: HashMap<String, MethodLabels>,
}

impl GrpcMetrics {
    /// Metrics for the services described by these encoded `FileDescriptorSet`s (the ones the
    /// server registers for reflection), each method's series created at zero.
    pub fn new(descriptor_sets: &[&[u8]]) -> Result<Self, prost::DecodeError> {
        let mut methods = HashMap::new();
        for set in descriptor_sets {
            for (path, labels) in methods_of(set)? {
                methods.insert(path, labels);
            }
        }
        let metrics = GrpcMetrics {
            started: Family::default(),
            handled: Family::default(),
            handling: Family::new_with_constructor(|| Histogram::new(HANDLING_BUCKETS)),
            methods,
        };
        // Series exist before the first call, so rate() and alerts on them see a zero, not
        // nothing (go-grpc-prometheus's InitializeMetrics does the same).
        for labels in metrics.methods.values() {
            let _ = metrics.started.get_or_create(labels);
            let _ = metrics.handling.get_or_create(labels);
            let ok = (labels.clone(), CodeLabel { grpc_code: "OK" });
            let _ = metrics.handled.get_or_create(&ok);
        }
        Ok(metrics)
    }

    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "grpc_server_started",
            "Total number of RPCs started on the server.",
            self.started.clone(),
        );
        registry.register(
            "grpc_server_handled",
            "Total number of RPCs completed on the server, regardless of success or failure.",
            self.handled.clone(),
        );
        registry.register_with_unit(
            "grpc_server_handling",
            "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.",
            Unit::Seconds,
            self.handling.clone(),
        );
    }

    /// Starts measuring a call to `path`; None for a path no served service has.
    fn start(self: &Arc<Self>, path: &str) -> Option<Call> {
        let labels = self.methods.get(path)?.clone();
        self.started.get_or_create(&labels).inc();
        Some(Call {
            metrics: self.clone(),
            labels,
            start: Instant::now(),
            done: false,
        })
    }
}

/// The methods of the services in one encoded `FileDescriptorSet`, by request path.
fn methods_of(encoded: &[u8]) -> Result<Vec<(String, MethodLabels)>, prost::DecodeError> {
    let set = prost_types::FileDescriptorSet::decode(encoded)?;
    let mut out = Vec::new();
    for file in &set.file {
        for service in &file.service {
            let name = match file.package() {
                "" => service.name().to_string(),
                package => format!("{package}.{}", service.name()),
            };
            let grpc_service: Arc<str> = name.as_str().into();
            for method in &service.method {
                let grpc_type = match (method.client_streaming(), method.server_streaming()) {
                    (false, false) => "unary",
                    (true, false) => "client_stream",
                    (false, true) => "server_stream",
                    (true, true) => "bidi_stream",
                };
                out.push((
                    format!("/{name}/{}", method.name()),
                    MethodLabels {
                        grpc_type,
                        grpc_service: grpc_service.clone(),
                        grpc_method: method.name().into(),
                    },
                ));
            }
        }
    }
    Ok(out)
}

/// One call being measured. Recorded once: with the status it ended with, or as `Canceled`
/// when dropped before that (the client went away, the server shut the stream).
struct Call {
    metrics: Arc<GrpcMetrics>,
    labels: MethodLabels,
    start: Instant,
    done: bool,
}

impl Call {
    fn finish(&mut self, code: tonic::Code) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let m = &self.metrics;
        m.handling
            .get_or_create(&self.labels)
            .observe(self.start.elapsed().as_secs_f64());
        m.handled
            .get_or_create(&(
                self.labels.clone(),
                CodeLabel {
                    grpc_code: code_name(code),
                },
            ))
            .inc();
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.finish(tonic::Code::Cancelled);
    }
}

/// The status in `grpc-status`, if the map has one.
fn status_in(headers: &HeaderMap) -> Option<tonic::Code> {
    headers
        .get("grpc-status")
        .map(|v| tonic::Code::from_bytes(v.as_bytes()))
}

/// go-grpc's names for the codes (`codes.Code.String()`), which dashboards and alerts match on;
/// tonic's Debug names differ (`Ok`, `Cancelled`).
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "Canceled",
        Unknown => "Unknown",
        InvalidArgument => "InvalidArgument",
        DeadlineExceeded => "DeadlineExceeded",
        NotFound => "NotFound",
        AlreadyExists => "AlreadyExists",
        PermissionDenied => "PermissionDenied",
        ResourceExhausted => "ResourceExhausted",
        FailedPrecondition => "FailedPrecondition",
        Aborted => "Aborted",
        OutOfRange => "OutOfRange",
        Unimplemented => "Unimplemented",
        Internal => "Internal",
        Unavailable => "Unavailable",
        DataLoss => "DataLoss",
        Unauthenticated => "Unauthenticated",
    }
}

/// Tower layer for `tonic::transport::Server::layer`.
#[derive(Clone)]
pub struct GrpcMetricsLayer {
    metrics: Arc<GrpcMetrics>,
}

impl GrpcMetricsLayer {
    pub fn new(metrics: Arc<GrpcMetrics>) -> Self {
        GrpcMetricsLayer { metrics }
    }
}

impl<S> tower_layer::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetricsService {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

#[derive(Clone)]
pub struct GrpcMetricsService<S> {
    inner: S,
    metrics: Arc<GrpcMetrics>,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for GrpcMetricsService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: 'static,
{
    type Response = Response<MeteredBody<ResBody>>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let call = self.metrics.start(request.uri().path());
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            let mut call = call;
            // An error answered at once travels in the headers ("trailers-only"); anything else
            // ends with the status in the trailers, after the last message.
            if let (Some(code), Some(c)) = (status_in(response.headers()), call.as_mut()) {
                c.finish(code);
                call = None;
            }
            Ok(response.map(|inner| MeteredBody { inner, call }))
        })
    }
}

/// A response body that records its call when the trailers (with the final status) go out.
pub struct MeteredBody<B> {
    inner: B,
    call: Option<Call>,
}

impl<B: Body + Unpin> Body for MeteredBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Some(call) = this.call.as_mut() {
            match &polled {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(trailers) = frame.trailers_ref() {
                        call.finish(status_in(trailers).unwrap_or(tonic::Code::Unknown));
                    }
                }
                Poll::Ready(Some(Err(_))) | Poll::Ready(None) => call.finish(tonic::Code::Unknown),
                Poll::Pending => {}
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics() -> GrpcMetrics {
        GrpcMetrics::new(&[
            crate::proto::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
        ])
        .unwrap()
    }

    #[test]
    fn the_method_table_comes_from_the_descriptors() {
        let m = metrics();
        let get = |p: &str| m.methods.get(p).cloned();
        let is_active = get("/externalscaler.ExternalScaler/IsActive").unwrap();
        assert_eq!(is_active.grpc_type, "unary");
        assert_eq!(&*is_active.grpc_service, "externalscaler.ExternalScaler");
        assert_eq!(&*is_active.grpc_method, "IsActive");
        assert_eq!(
            get("/externalscaler.ExternalScaler/StreamIsActive")
                .unwrap()
                .grpc_type,
            "server_stream"
        );
        assert_eq!(
            get("/grpc.health.v1.Health/Watch").unwrap().grpc_type,
            "server_stream"
        );
        assert_eq!(m.methods.len(), 5 + 2);
        assert!(get("/externalscaler.ExternalScaler/Nope").is_none());
    }

    #[test]
    fn unknown_paths_mint_no_series() {
        let m = Arc::new(metrics());
        assert!(m.start("/attacker.Chosen/Name").is_none());
        let mut text = String::new();
        let mut registry = Registry::default();
        m.register(&mut registry);
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(!text.contains("attacker"));
    }

    #[test]
    fn a_call_is_recorded_once_and_a_dropped_one_as_canceled() {
        let m = Arc::new(metrics());
        let mut call = m
            .start("/externalscaler.ExternalScaler/GetMetrics")
            .unwrap();
        call.finish(tonic::Code::NotFound);
        call.finish(tonic::Code::Ok);
        drop(call);
        drop(
            m.start("/externalscaler.ExternalScaler/StreamIsActive")
                .unwrap(),
        );
        let mut registry = Registry::default();
        m.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        let line = |method: &str, kind: &str, code: &str| {
            format!("grpc_server_handled_total{{grpc_type=\"{kind}\",grpc_service=\"externalscaler.ExternalScaler\",grpc_method=\"{method}\",grpc_code=\"{code}\"}} 1\n")
        };
        assert!(
            text.contains(&line("GetMetrics", "unary", "NotFound")),
            "{text}"
        );
        assert!(text.contains(&line("StreamIsActive", "server_stream", "Canceled")));
        assert!(text.contains("grpc_server_handled_total{grpc_type=\"unary\",grpc_service=\"externalscaler.ExternalScaler\",grpc_method=\"GetMetrics\",grpc_code=\"OK\"} 0\n"));
        assert!(text.contains("grpc_server_handling_seconds_count{grpc_type=\"unary\",grpc_service=\"externalscaler.ExternalScaler\",grpc_method=\"GetMetrics\"} 1\n"));
    }

    #[test]
    fn code_names_are_go_grpc_names() {
        assert_eq!(code_name(tonic::Code::Ok), "OK");
        assert_eq!(code_name(tonic::Code::Cancelled), "Canceled");
        assert_eq!(code_name(tonic::Code::from_i32(5)), "NotFound");
    }
}
