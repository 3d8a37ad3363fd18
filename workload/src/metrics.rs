//! Prometheus metrics. The names and meanings are a contract with the scaler, which scrapes
//! `/metrics` with these default names; change them only together with the scaler.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Latency buckets in seconds: fine below a second for /matrix and /tryon, coarse up to the
/// 60 s a long /gpu_job or /stream may take, so p95 is resolvable across that range.
pub const DURATION_BUCKETS: [f64; 18] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 30.0,
    45.0, 60.0,
];

/// Endpoints counted in the request metrics.
pub const ENDPOINTS: [&str; 4] = ["matrix", "tryon", "gpu_job", "stream"];

pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub endpoint: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    pub endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendLabels {
    pub backend: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: String,
    pub backend: String,
    pub device: String,
}

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

pub struct Metrics {
    registry: Registry,
    pub queue_length: Gauge,
    pub inflight: Gauge,
    pub open_streams: Gauge,
    pub requests: Family<RequestLabels, Counter>,
    pub duration: Family<EndpointLabels, Histogram, fn() -> Histogram>,
    /// Time from admission to a compute slot: the latency more replicas lower (the time-to-first-
    /// token surrogate the scaler's latency signal reads).
    pub queue_wait: Histogram,
    pub utilization: Family<BackendLabels, Gauge<f64, AtomicU64>>,
    pub memory_used: Family<BackendLabels, Gauge>,
    pub memory_total: Family<BackendLabels, Gauge>,
    backend: String,
}

impl Metrics {
    pub fn new(backend: &str, device: &str) -> Self {
        let mut registry = Registry::default();
        let queue_length = Gauge::default();
        registry.register(
            "workload_queue_length",
            "Requests admitted and waiting for the compute executor",
            queue_length.clone(),
        );
        let inflight = Gauge::default();
        registry.register(
            "workload_inflight_requests",
            "Requests running on the compute device",
            inflight.clone(),
        );
        let open_streams = Gauge::default();
        registry.register(
            "workload_open_streams",
            "Streaming responses currently holding a connection",
            open_streams.clone(),
        );
        let requests = Family::<RequestLabels, Counter>::default();
        // prometheus-client appends `_total` to counters.
        registry.register(
            "workload_requests",
            "Requests answered, by endpoint and HTTP status",
            requests.clone(),
        );
        let duration = Family::<EndpointLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            duration_histogram as fn() -> Histogram,
        );
        registry.register(
            "workload_request_duration_seconds",
            "Request latency including queueing, by endpoint",
            duration.clone(),
        );
        let queue_wait = duration_histogram();
        registry.register(
            "workload_queue_wait_seconds",
            "Time from admission until the compute executor starts the job",
            queue_wait.clone(),
        );
        let utilization = Family::<BackendLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "workload_accelerator_utilization_percent",
            "Accelerator busy percent: NVML on a GPU; on the CPU backend the share of the last second during which the compute executor ran a job",
            utilization.clone(),
        );
        let memory_used = Family::<BackendLabels, Gauge>::default();
        registry.register(
            "workload_accelerator_memory_used_bytes",
            "Accelerator memory in use (CPU backend: bytes held by compute buffers)",
            memory_used.clone(),
        );
        let memory_total = Family::<BackendLabels, Gauge>::default();
        registry.register(
            "workload_accelerator_memory_total_bytes",
            "Accelerator memory capacity (CPU backend: host memory)",
            memory_total.clone(),
        );
        // Series exist from the first scrape, so rate() and histogram_quantile() see a zero start.
        for endpoint in ENDPOINTS {
            drop(duration.get_or_create(&EndpointLabels {
                endpoint: endpoint.to_string(),
            }));
            drop(requests.get_or_create(&RequestLabels {
                endpoint: endpoint.to_string(),
                status: "200".into(),
            }));
        }
        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").to_string(),
                backend: backend.to_string(),
                device: device.to_string(),
            })
            .set(1);
        registry.register(
            "workload_build_info",
            "Build and backend of this process (always 1)",
            build,
        );
        Self {
            registry,
            queue_length,
            inflight,
            open_streams,
            requests,
            duration,
            queue_wait,
            utilization,
            memory_used,
            memory_total,
            backend: backend.to_string(),
        }
    }

    pub fn observe(&self, endpoint: &str, status: u16, seconds: f64) {
        self.requests
            .get_or_create(&RequestLabels {
                endpoint: endpoint.to_string(),
                status: status.to_string(),
            })
            .inc();
        self.duration
            .get_or_create(&EndpointLabels {
                endpoint: endpoint.to_string(),
            })
            .observe(seconds);
    }

    /// Sets the values sampled at scrape time.
    pub fn set_accelerator(&self, utilization_percent: f64, used_bytes: u64, total_bytes: u64) {
        let labels = BackendLabels {
            backend: self.backend.clone(),
        };
        self.utilization
            .get_or_create(&labels)
            .set(utilization_percent);
        self.memory_used
            .get_or_create(&labels)
            .set(i64::try_from(used_bytes).unwrap_or(i64::MAX));
        self.memory_total
            .get_or_create(&labels)
            .set(i64::try_from(total_bytes).unwrap_or(i64::MAX));
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}
