//! The KEDA ExternalScaler gRPC service: request -> engine entry -> cached decision -> reply.
//!
//! Thin on purpose: every answer comes from the engine's cache, and this is the one place where
//! library errors become gRPC status codes.

// KEDA reads the deprecated integer fields when the float ones are 0: both are filled on purpose.
#![allow(deprecated)]

use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::engine::{Engine, EngineError, EntryKey};
use crate::proto::external_scaler_server::ExternalScaler;
use crate::proto::{
    GetMetricSpecResponse, GetMetricsRequest, GetMetricsResponse, IsActiveResponse, MetricSpec,
    MetricValue, ScaledObjectRef,
};
use crate::spec::ScalerSpec;
use crate::{intake, text};

/// RPCs are counted and timed around the whole server (`telemetry::grpc`), not here.
pub struct ScalerService {
    engine: Arc<Engine>,
    /// Turns true on shutdown; open streams end when it does.
    shutdown: watch::Receiver<bool>,
}

impl ScalerService {
    pub fn new(engine: Arc<Engine>, shutdown: watch::Receiver<bool>) -> Self {
        ScalerService { engine, shutdown }
    }

    fn answer<T>(
        &self,
        method: &'static str,
        result: Result<T, EngineError>,
    ) -> Result<Response<T>, Status> {
        let result = result.map_err(status);
        if let Err(s) = &result {
            tracing::debug!(method, code = ?s.code(), message = s.message(), "rpc failed");
        }
        result.map(Response::new)
    }
}

/// Maps engine errors to gRPC codes: bad metadata is the caller's to fix (INVALID_ARGUMENT);
/// missing or stale data is UNAVAILABLE so KEDA counts a failure and its `fallback` can engage.
fn status(e: EngineError) -> Status {
    let code = match &e {
        EngineError::Spec(_) | EngineError::UnknownMetric { .. } => tonic::Code::InvalidArgument,
        EngineError::Pending { .. } | EngineError::Stale { .. } => tonic::Code::Unavailable,
        EngineError::TooManyEntries { .. } => tonic::Code::ResourceExhausted,
    };
    // Messages land in KEDA's events: bounded, without control characters.
    Status::new(code, text::bounded(&e.to_string(), text::MAX_MESSAGE))
}

/// The entry key, once the name and namespace are ones Kubernetes would accept and the map is
/// within the size limits (checked before anything else touches them).
fn key(method: &'static str, r: ScaledObjectRef) -> Result<EntryKey, Status> {
    if let Err(e) = intake::check_object(&r.namespace, &r.name) {
        // The text escapes and bounds what it quotes of the name.
        let s = Status::invalid_argument(text::bounded(&e.to_string(), text::MAX_MESSAGE));
        tracing::debug!(method, code = ?s.code(), message = s.message(), "rpc refused");
        return Err(s);
    }
    if let Err(e) = intake::check(&r.scaler_metadata) {
        let s = status(e.into());
        tracing::debug!(method, code = ?s.code(), message = s.message(), "rpc refused");
        return Err(s);
    }
    Ok(EntryKey::new(r.namespace, r.name, r.scaler_metadata))
}

/// The spec KEDA gives the HPA: desired capacity in replicas with target 1, so the default
/// AverageValue metric type yields ceil(desired) replicas whatever the current count.
fn metric_spec(spec: &ScalerSpec) -> GetMetricSpecResponse {
    GetMetricSpecResponse {
        metric_specs: vec![MetricSpec {
            metric_name: spec.metric_name.clone(),
            target_size: 1,
            target_size_float: 1.0,
        }],
    }
}

/// The reported value: KEDA formats with 3 decimals, so round first and let the deprecated
/// integer field carry the same replica count (KEDA reads it when the float is 0).
pub fn metric_value(metric_name: &str, desired: f64) -> MetricValue {
    let value = if desired.is_finite() {
        (desired.max(0.0) * 1000.0).round() / 1000.0
    } else {
        0.0
    };
    MetricValue {
        metric_name: metric_name.to_string(),
        metric_value: value.ceil() as i64,
        metric_value_float: value,
    }
}

#[tonic::async_trait]
impl ExternalScaler for ScalerService {
    async fn is_active(
        &self,
        request: Request<ScaledObjectRef>,
    ) -> Result<Response<IsActiveResponse>, Status> {
        let key = key("IsActive", request.into_inner())?;
        let result = match self.engine.entry(key) {
            Ok(entry) => self.engine.current_or_wait(&entry).await,
            Err(e) => Err(e),
        }
        .map(|d| IsActiveResponse { result: d.active });
        self.answer("IsActive", result)
    }

    type StreamIsActiveStream = ReceiverStream<Result<IsActiveResponse, Status>>;

    async fn stream_is_active(
        &self,
        request: Request<ScaledObjectRef>,
    ) -> Result<Response<Self::StreamIsActiveStream>, Status> {
        let result = self
            .engine
            .entry(key("StreamIsActive", request.into_inner())?)
            .map(|entry| {
                let mut states = entry.subscribe();
                let mut shutdown = self.shutdown.clone();
                let (tx, rx) = mpsc::channel(4);
                tokio::spawn(async move {
                    let mut last: Option<bool> = None;
                    while !*shutdown.borrow() {
                        let active = states
                            .borrow_and_update()
                            .decision
                            .as_ref()
                            .map(|d| d.active);
                        if let Some(active) = active {
                            // The current state once, then only inactive -> active: each pushed
                            // `true` restarts KEDA's cooldown, and KEDA ignores pushed `false`.
                            let push = last.is_none() || (last == Some(false) && active);
                            if push
                                && tx
                                    .send(Ok(IsActiveResponse { result: active }))
                                    .await
                                    .is_err()
                            {
                                break;
                            }
                            last = Some(active);
                        }
                        tokio::select! {
                            changed = states.changed() => if changed.is_err() { break },
                            _ = shutdown.changed() => {}
                            _ = tx.closed() => break,
                        }
                    }
                });
                ReceiverStream::new(rx)
            });
        self.answer("StreamIsActive", result)
    }

    async fn get_metric_spec(
        &self,
        request: Request<ScaledObjectRef>,
    ) -> Result<Response<GetMetricSpecResponse>, Status> {
        let key = key("GetMetricSpec", request.into_inner())?;
        let result = self.engine.entry(key).map(|entry| metric_spec(&entry.spec));
        self.answer("GetMetricSpec", result)
    }

    async fn get_metrics(
        &self,
        request: Request<GetMetricsRequest>,
    ) -> Result<Response<GetMetricsResponse>, Status> {
        let GetMetricsRequest {
            scaled_object_ref,
            metric_name,
        } = request.into_inner();
        let Some(object) = scaled_object_ref else {
            return Err(Status::invalid_argument("scaledObjectRef is required"));
        };
        let key = key("GetMetrics", object)?;
        let result = match self.engine.entry(key) {
            Err(e) => Err(e),
            Ok(entry) if metric_name != entry.spec.metric_name => Err(EngineError::UnknownMetric {
                object: entry.object(),
                asked: metric_name,
                served: entry.spec.metric_name.clone(),
            }),
            Ok(entry) => {
                self.engine
                    .current_or_wait(&entry)
                    .await
                    .map(|decision| GetMetricsResponse {
                        metric_values: vec![metric_value(
                            &entry.spec.metric_name,
                            decision.desired,
                        )],
                    })
            }
        };
        self.answer("GetMetrics", result)
    }

    type StreamMetricSpecStream = ReceiverStream<Result<GetMetricSpecResponse, Status>>;

    async fn stream_metric_spec(
        &self,
        request: Request<ScaledObjectRef>,
    ) -> Result<Response<Self::StreamMetricSpecStream>, Status> {
        let result = self
            .engine
            .entry(key("StreamMetricSpec", request.into_inner())?)
            .map(|entry| {
                let mut shutdown = self.shutdown.clone();
                let (tx, rx) = mpsc::channel(1);
                tokio::spawn(async move {
                    // The spec is a function of the metadata in the request, so it cannot change
                    // during this stream: send it once and hold the stream (and the entry) open.
                    let _states = entry.subscribe();
                    if tx.send(Ok(metric_spec(&entry.spec))).await.is_err() {
                        return;
                    }
                    tokio::select! {
                        _ = shutdown.wait_for(|stop| *stop) => {}
                        _ = tx.closed() => {}
                    }
                });
                ReceiverStream::new(rx)
            });
        self.answer("StreamMetricSpec", result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // How the HPA reads these values (AverageValue with target 1 is the contract) is tested
    // against the simulator's HPA model in sim/tests/hpa_contract.rs.

    #[test]
    fn metric_values_are_rounded_and_clamped() {
        let v = metric_value("m", 6.0000004);
        assert_eq!((v.metric_value_float, v.metric_value), (6.0, 6));
        let v = metric_value("m", 2.0004);
        assert_eq!((v.metric_value_float, v.metric_value), (2.0, 2));
        let v = metric_value("m", 2.0006);
        assert_eq!((v.metric_value_float, v.metric_value), (2.001, 3));
        for bad in [f64::NAN, f64::INFINITY, -3.0] {
            let v = metric_value("m", bad);
            assert_eq!((v.metric_value_float, v.metric_value), (0.0, 0));
        }
    }
}
