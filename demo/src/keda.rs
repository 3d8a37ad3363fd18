//! The demo's KEDA: a ScaledObject talking to the scaler over real gRPC, as KEDA's external
//! scaler client does: GetMetricSpec when the trigger is (re)built, IsActive each polling
//! interval, GetMetrics when the HPA asks, and a StreamIsActive subscription (external-push) whose
//! pushed `true` triggers an immediate activation check.

#![allow(deprecated)]

use std::collections::HashMap;
use std::net::SocketAddr;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use super::DemoError;
use keda_gpu_scaler::proto::external_scaler_client::ExternalScalerClient;
use keda_gpu_scaler::proto::{GetMetricsRequest, ScaledObjectRef};

pub const NAMESPACE: &str = "demo";
pub const NAME: &str = "gpu-workload";

pub struct KedaSide {
    client: ExternalScalerClient<Channel>,
    base: HashMap<String, String>,
    endpoints: Vec<String>,
    /// From GetMetricSpec.
    pub metric_name: String,
    pub target: f64,
    stream: Option<JoinHandle<()>>,
    pushes_tx: mpsc::UnboundedSender<bool>,
    /// What StreamIsActive pushed, in order.
    pub pushes: mpsc::UnboundedReceiver<bool>,
    /// Times the trigger was rebuilt with a new endpoint list.
    pub rebuilds: u32,
    /// The metadata carries no endpoint list (`source=prometheus`): built once, never rebuilt.
    fixed: bool,
}

impl KedaSide {
    pub async fn connect(
        addr: SocketAddr,
        base: HashMap<String, String>,
    ) -> Result<KedaSide, DemoError> {
        let channel = Channel::from_shared(format!("http://{addr}"))
            .expect("a socket address makes a valid URI")
            .connect()
            .await
            .map_err(|e| DemoError::Grpc(format!("connecting to the scaler at {addr}: {e}")))?;
        let (pushes_tx, pushes) = mpsc::unbounded_channel();
        Ok(KedaSide {
            client: ExternalScalerClient::new(channel),
            base,
            endpoints: Vec::new(),
            metric_name: String::new(),
            target: 1.0,
            stream: None,
            pushes_tx,
            pushes,
            rebuilds: 0,
            fixed: false,
        })
    }

    /// The trigger's current metadata (with the endpoint list).
    pub fn metadata(&self) -> HashMap<String, String> {
        self.object().scaler_metadata
    }

    fn object(&self) -> ScaledObjectRef {
        let mut metadata = self.base.clone();
        if !self.fixed {
            metadata.insert("endpoints".into(), self.endpoints.join(","));
        }
        ScaledObjectRef {
            name: NAME.into(),
            namespace: NAMESPACE.into(),
            scaler_metadata: metadata,
        }
    }

    /// Sets the trigger's endpoint list (one URL per pod). When it changed, the trigger is rebuilt
    /// as KEDA rebuilds a scaler after a ScaledObject edit: GetMetricSpec, and a new
    /// StreamIsActive subscription replacing the old one.
    pub async fn set_endpoints(&mut self, endpoints: Vec<String>) -> Result<(), DemoError> {
        if self.fixed || endpoints == self.endpoints || endpoints.is_empty() {
            return Ok(());
        }
        self.endpoints = endpoints;
        self.build().await
    }

    /// Builds the trigger once with metadata that never changes (no endpoint list, as with
    /// `source=prometheus` and a pod selector); later `set_endpoints` calls do nothing.
    pub async fn build_fixed(&mut self) -> Result<(), DemoError> {
        self.fixed = true;
        self.build().await
    }

    /// GetMetricSpec and a fresh StreamIsActive subscription, as KEDA (re)builds a scaler.
    async fn build(&mut self) -> Result<(), DemoError> {
        self.rebuilds += 1;
        let spec = self
            .client
            .get_metric_spec(self.object())
            .await
            .map_err(|s| DemoError::Grpc(format!("GetMetricSpec: {}", s.message())))?
            .into_inner();
        let first = spec
            .metric_specs
            .first()
            .ok_or_else(|| DemoError::Grpc("GetMetricSpec returned no metric".into()))?;
        self.metric_name = first.metric_name.clone();
        self.target = if first.target_size_float > 0.0 {
            first.target_size_float
        } else {
            first.target_size as f64
        };
        if let Some(old) = self.stream.take() {
            old.abort();
        }
        let mut client = self.client.clone();
        let object = self.object();
        let tx = self.pushes_tx.clone();
        self.stream = Some(tokio::spawn(async move {
            let Ok(resp) = client.stream_is_active(object).await else {
                return;
            };
            let mut stream = resp.into_inner();
            while let Ok(Some(msg)) = stream.message().await {
                if tx.send(msg.result).is_err() {
                    break;
                }
            }
        }));
        Ok(())
    }

    pub async fn is_active(&mut self) -> Result<bool, tonic::Status> {
        Ok(self
            .client
            .is_active(self.object())
            .await?
            .into_inner()
            .result)
    }

    /// The metric value KEDA hands the HPA.
    pub async fn get_metrics(&mut self) -> Result<f64, tonic::Status> {
        let resp = self
            .client
            .get_metrics(GetMetricsRequest {
                scaled_object_ref: Some(self.object()),
                metric_name: self.metric_name.clone(),
            })
            .await?
            .into_inner();
        let v = resp
            .metric_values
            .first()
            .ok_or_else(|| tonic::Status::internal("GetMetrics returned no value"))?;
        Ok(if v.metric_value_float != 0.0 {
            v.metric_value_float
        } else {
            v.metric_value as f64
        })
    }
}

impl Drop for KedaSide {
    fn drop(&mut self) {
        if let Some(s) = self.stream.take() {
            s.abort();
        }
    }
}
