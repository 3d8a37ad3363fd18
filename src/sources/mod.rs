//! Where numbers come from: every source turns a batch of specs into per-pod readings. All IO of
//! the scaler lives under this module; parsing and aggregation helpers beside it stay pure. The
//! engine holds its sources as `Sources`, one `Source` per `SourceKind`.

pub mod budget;
pub mod client;
pub(crate) mod nvml;
pub mod prometheus;
pub mod scrape;
pub(crate) mod slots;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::egress::EgressPolicy;
use crate::spec::{ScalerSpec, SourceSpec};
use budget::{BodyBudget, MemoryLimits};
use client::ClientError;
use nvml::NvmlSource;
use prometheus::{PrometheusConfig, PrometheusSettings, PrometheusSource};
use scrape::discovery::{DeletionCostError, DiscoverySettings, GateError};
use scrape::ScrapeSource;

/// The sources' settings: `scrape_timeout` at the top level of the settings file, and the
/// `[prometheus]`, `[kubernetes]`, `[egress]` and `[memory]` sections.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SourceSettings {
    /// Timeout of each scrape of a pod's `/metrics` (connect included), and of each write of
    /// pod deletion costs.
    #[serde(
        serialize_with = "crate::setting::duration_text",
        deserialize_with = "scrape_timeout"
    )]
    pub scrape_timeout: Duration,
    pub prometheus: PrometheusConfig,
    /// Where `service` triggers find their pods.
    pub kubernetes: DiscoverySettings,
    /// Where tenants' URLs may point, and what they may read (see `crate::egress`).
    pub egress: EgressPolicy,
    /// Response body limits.
    pub memory: MemoryLimits,
}

impl Default for SourceSettings {
    fn default() -> Self {
        SourceSettings {
            scrape_timeout: Duration::from_secs(1),
            prometheus: PrometheusConfig::default(),
            kubernetes: DiscoverySettings::default(),
            egress: EgressPolicy::default(),
            memory: MemoryLimits::default(),
        }
    }
}

fn scrape_timeout<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    crate::setting::duration(
        d,
        Duration::from_millis(10)..=Duration::from_secs(60),
        "a duration from 10ms to 60s, such as 1s",
    )
}

/// One signal's readings at one sampling: a value per known pod (None: that pod gave nothing),
/// and a note when something explains missing data (a series absent everywhere, say).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SignalReading {
    pub pods: Vec<Option<f64>>,
    pub note: Option<String>,
}

/// One ScaledObject's readings: `signals[i]` belongs to `spec.signals[i]`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Readings {
    pub signals: Vec<SignalReading>,
    /// Problems with the source itself (an endpoint timing out), for the decision breakdown.
    pub notes: Vec<String>,
    /// The time these readings describe on the source's own clock (Prometheus evaluation
    /// timestamps, unix seconds); None: the engine's sampling time.
    pub at: Option<f64>,
    /// Readings at earlier times on the source's clock, oldest first, to be scored before this
    /// one: history read back for a new ScaledObject, or a gap filled after an outage.
    pub earlier: Vec<(f64, Vec<Vec<Option<f64>>>)>,
    /// True when a query or read for this spec failed, so the gap should be read again later.
    pub failed: bool,
    /// True while the source still waits for its first view of where to read (service
    /// discovery's first EndpointSlice list of the namespace): the next sampling may have data.
    pub syncing: bool,
    /// What the source knows beyond the signals: completions per second (from the latency
    /// histogram's count) and, for a discovery source, replicas starting and terminating.
    pub context: crate::score::Context,
    /// The pod behind each position of `signals[i].pods`, where the source knows it (service
    /// discovery); empty otherwise.
    pub pods: Vec<Option<String>>,
    /// Pods taken out of service (`podReadinessGate`); they take no new work, so no signal
    /// includes them.
    pub held: Vec<HeldPod>,
    /// Pods not ready whose readiness-gate condition has not been set yet (`podReadinessGate`).
    pub unapproved: Vec<String>,
    /// Why the pods' gate conditions are not known (`podReadinessGate`): nothing is drained
    /// or let in until they are.
    pub gates_unknown: Option<String>,
}

/// A pod taken out of service (`podReadinessGate`), as read.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HeldPod {
    pub pod: String,
    /// Requests in service plus waiting; None when the pod could not be read or exports neither.
    pub requests: Option<f64>,
    /// Seconds since it was taken out, from its condition's transition time (0 when unknown).
    pub out_s: f64,
}

impl Readings {
    /// Per-signal, per-pod values in the shape `score::Scorer::step` takes.
    pub fn values(&self) -> Vec<Vec<Option<f64>>> {
        self.signals.iter().map(|s| s.pods.clone()).collect()
    }
}

/// The kinds of source a ScaledObject can name. Each kind is served by one `Source` value, which
/// samples every ScaledObject of that kind together.
///
/// Adding a source: a variant here, its arm in `of`, and its line in `Sources::real`; the engine
/// names no source.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SourceKind {
    /// Pods' own `/metrics`, at fixed endpoints or a Service's discovered ones.
    Scrape,
    /// PromQL against a Prometheus server.
    Prometheus,
    /// The local node's GPUs through NVML.
    Nvml,
}

impl SourceKind {
    /// The kind that serves a spec's source.
    pub fn of(spec: &SourceSpec) -> SourceKind {
        match spec {
            SourceSpec::Scrape { .. } | SourceSpec::Service(_) => SourceKind::Scrape,
            SourceSpec::Prometheus(_) => SourceKind::Prometheus,
            SourceSpec::Nvml(_) => SourceKind::Nvml,
        }
    }
}

/// What a sampling asks of a source for one ScaledObject.
#[derive(Clone, Debug)]
pub struct SampleRequest {
    pub spec: Arc<ScalerSpec>,
    /// The source time of the newest readings already scored for it; None for a new
    /// ScaledObject.
    pub last: Option<f64>,
}

/// A place signals are read from. One call samples a whole batch so that a source can share work
/// between ScaledObjects (one fetch per endpoint, one query per signal kind).
pub trait Source: Send + Sync {
    /// Samples each request's spec; returns one `Readings` per request, in order (the engine
    /// passes them oldest registered first). `t` is the sampling time in seconds on the engine's
    /// clock. A source that can read history back returns what lies between a request's `last`
    /// and now as `Readings::earlier`. Must bound its own run time (timeouts on all IO), by about
    /// `deadline`.
    fn sample<'a>(&'a self, requests: &'a [SampleRequest], t: f64) -> BoxFuture<'a, Vec<Readings>>;

    /// About the longest one `sample` call waits on IO. A new ScaledObject's first answer waits
    /// this long (plus a margin) for its first sample.
    fn deadline(&self) -> Duration;

    /// Drops what the source keeps for ScaledObjects no longer registered (watchers, caches);
    /// `specs` are those of its kind still registered.
    fn retain(&self, _specs: &[Arc<ScalerSpec>]) {}

    /// Whether a ScaledObject whose metadata changed from `before` to `after` continues the
    /// predecessor's smoothing and activation state instead of starting cold. Only a source that
    /// cannot read history back needs this, and only for edits that do not change the demand.
    fn continues(&self, _before: &ScalerSpec, _after: &ScalerSpec) -> bool {
        false
    }

    /// Writes pod deletion costs (`podDeletionCost`) to the pods of `spec`'s Service; returns
    /// those written. Only a source that discovers pods can.
    fn set_deletion_costs<'a>(
        &'a self,
        _spec: &'a ScalerSpec,
        _costs: &'a [(String, Option<i32>)],
    ) -> BoxFuture<'a, Result<crate::deletion::Writes, DeletionCostError>> {
        Box::pin(async {
            Err(DeletionCostError::Api(
                "this source does not discover pods".into(),
            ))
        })
    }

    /// Sets readiness-gate conditions (`podReadinessGate`) on the pods of `spec`'s Service:
    /// (pod, serving); returns those written. Only a source that discovers pods can.
    fn set_gates<'a>(
        &'a self,
        _spec: &'a ScalerSpec,
        _gates: &'a [(String, bool)],
    ) -> BoxFuture<'a, Result<Vec<(String, bool)>, GateError>> {
        Box::pin(async { Err(GateError::Api("this source does not discover pods".into())) })
    }
}

/// The sources an engine reads from, one per kind, injected at construction, and what
/// ScaledObjects may ask of them.
#[derive(Clone, Default)]
pub struct Sources {
    by_kind: BTreeMap<SourceKind, Arc<dyn Source>>,
    /// The body budget the sources read through, when they share one (for `/metrics`).
    budget: Option<BodyBudget>,
    /// Where tenants' URLs may point: checked when a ScaledObject's metadata is parsed (and by
    /// the real sources' clients on every address they connect to).
    egress: EgressPolicy,
    /// The server's Prometheus, for `source=prometheus` triggers that name none.
    prometheus_address: Option<String>,
}

impl Sources {
    /// The production sources, sampled every `sample_interval`; they share one body budget.
    /// Fails only when an HTTP client cannot be built (an unreadable `egress.ca_file`).
    pub fn real(
        settings: &SourceSettings,
        sample_interval: Duration,
    ) -> Result<Sources, ClientError> {
        let egress = Arc::new(settings.egress.clone());
        let budget = settings.memory.budget();
        let scrape = ScrapeSource::new(
            client::build(settings.scrape_timeout, &egress)?,
            budget.clone(),
            settings.scrape_timeout,
        )
        .with_discovery(settings.kubernetes.clone(), egress.clone());
        let prometheus = PrometheusSource::new(
            PrometheusSettings {
                timeout: settings.prometheus.timeout,
                step_s: prometheus::step(sample_interval),
                max_history: Duration::from_secs(3600),
            },
            client::build(settings.prometheus.timeout, &egress)?,
            budget.clone(),
        );
        let mut sources = Sources::default()
            .with(SourceKind::Scrape, Arc::new(scrape))
            .with(SourceKind::Prometheus, Arc::new(prometheus))
            .with(SourceKind::Nvml, Arc::new(NvmlSource::default()))
            .with_budget(budget)
            .with_egress(settings.egress.clone());
        sources.prometheus_address = settings.prometheus.address.clone();
        Ok(sources)
    }

    /// These sources, with ScaledObjects' URLs checked against `egress` when parsed.
    pub fn with_egress(mut self, egress: EgressPolicy) -> Self {
        self.egress = egress;
        self
    }

    pub fn egress(&self) -> &EgressPolicy {
        &self.egress
    }

    pub fn prometheus_address(&self) -> Option<&str> {
        self.prometheus_address.as_deref()
    }

    /// These sources, with `source` serving `kind` (replacing any before it).
    pub fn with(mut self, kind: SourceKind, source: Arc<dyn Source>) -> Self {
        self.by_kind.insert(kind, source);
        self
    }

    /// These sources, reporting `budget` as the bytes of bodies they hold.
    pub fn with_budget(mut self, budget: BodyBudget) -> Self {
        self.budget = Some(budget);
        self
    }

    pub fn get(&self, kind: SourceKind) -> Option<&Arc<dyn Source>> {
        self.by_kind.get(&kind)
    }

    /// Every kind served, in a fixed order.
    pub fn iter(&self) -> impl Iterator<Item = (SourceKind, &Arc<dyn Source>)> {
        self.by_kind.iter().map(|(k, s)| (*k, s))
    }

    /// The longest `Source::deadline` of all; zero without sources.
    pub fn deadline(&self) -> Duration {
        self.by_kind
            .values()
            .map(|s| s.deadline())
            .max()
            .unwrap_or_default()
    }

    /// Bytes of response bodies the sources hold now (0 when they share no budget).
    pub fn body_bytes_in_use(&self) -> usize {
        self.budget.as_ref().map_or(0, BodyBudget::in_use)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    fn kind_of(pairs: &[(&str, &str)]) -> SourceKind {
        SourceKind::of(&crate::fixtures::in_ns(pairs).unwrap().source)
    }

    #[test]
    fn every_source_a_scaled_object_can_name_has_a_production_source() {
        let sources = Sources::real(&SourceSettings::default(), Duration::from_secs(2)).unwrap();
        let cases = [
            (
                vec![
                    ("endpoints", "http://llm-0.llm:8000/metrics"),
                    ("queueTarget", "4"),
                ],
                SourceKind::Scrape,
            ),
            // A Service's endpoints are scraped by the same source, which discovers them.
            (
                vec![("service", "llm"), ("queueTarget", "4")],
                SourceKind::Scrape,
            ),
            (
                vec![
                    ("source", "prometheus"),
                    ("deployment", "llm"),
                    ("queueTarget", "4"),
                ],
                SourceKind::Prometheus,
            ),
            (
                vec![("source", "nvml"), ("gpuUtilTarget", "80")],
                SourceKind::Nvml,
            ),
        ];
        for (metadata, kind) in cases {
            assert_eq!(kind_of(&metadata), kind, "{metadata:?}");
            assert!(sources.get(kind).is_some(), "{kind:?} has no source");
        }
    }

    #[test]
    fn the_first_answer_waits_for_the_slowest_source() {
        let settings = SourceSettings {
            scrape_timeout: Duration::from_millis(700),
            prometheus: PrometheusConfig {
                timeout: Duration::from_millis(1500),
                ..Default::default()
            },
            ..SourceSettings::default()
        };
        let sources = Sources::real(&settings, Duration::from_secs(2)).unwrap();
        assert_eq!(sources.deadline(), Duration::from_millis(1500));
        assert_eq!(Sources::default().deadline(), Duration::ZERO);
    }
}
