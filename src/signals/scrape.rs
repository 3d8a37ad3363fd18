//! `source=scrape`: reads each replica's `/metrics` directly, no Prometheus needed.
//!
//! Each endpoint is one replica. Every endpoint named by any ScaledObject is fetched at most once
//! per sampling, with a timeout and a body cap; an endpoint that fails counts as a missing pod.
//! Tenants are isolated from each other: in each round every ScaledObject gets an equal share of
//! the fetch slots and of the body budget, and a deadline (the scrape timeout) after which its
//! unfinished endpoints count as missing. A ScaledObject with a thousand black-holed endpoints
//! thus only makes itself stale. Latency histograms are differenced over a window, so a history
//! of bucket snapshots per endpoint is the only state kept here.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::{join_all, BoxFuture};
use futures_util::stream::{self, StreamExt};
use tokio::sync::{OnceCell, Semaphore};

use super::budget::{BodyBudget, BodyError, Held, Share};
use super::discovery::{DeletionCostError, Discovery, DiscoverySettings};
use super::exposition::{self, Exposition};
use super::histogram::{self, Buckets};
use super::{Readings, SignalReading, Source};
use crate::score::DemandModel;
use crate::spec::{MemoryMetrics, MetricRef, MetricSource, ScalerSpec, SignalSpec, SourceSpec};

/// Endpoints fetched at once by the whole source; each ScaledObject gets an equal share.
pub const CONCURRENCY: usize = 128;

/// Why one endpoint gave no data.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("timed out")]
    Timeout,
    #[error("unreachable: {0}")]
    Connect(String),
    #[error("HTTP status {0}")]
    Status(u16),
    #[error(transparent)]
    Body(#[from] BodyError),
    #[error("not fetched: this ScaledObject's time for the round (the scrape timeout) ran out")]
    Deadline,
}

/// One endpoint's parsed exposition; its body's bytes stay counted against the budget until the
/// round is done with it.
pub struct Scraped {
    expo: Exposition,
    _held: Held,
}

impl std::ops::Deref for Scraped {
    type Target = Exposition;
    fn deref(&self) -> &Exposition {
        &self.expo
    }
}

type Scrapes = HashMap<String, Result<Arc<Scraped>, FetchError>>;
/// Timestamped cumulative bucket counts, oldest first.
type Snapshots = VecDeque<(f64, Buckets)>;
/// This round's fetches by URL, shared by every ScaledObject naming the URL.
type Round = HashMap<String, Arc<OnceCell<Result<Arc<Scraped>, FetchError>>>>;

/// What one spec scrapes this round: fixed endpoints, or a Service's endpoints as discovered.
#[derive(Clone, Debug, Default)]
struct Target {
    urls: Vec<String>,
    /// The pod behind each URL, where discovery knows it.
    pods: Vec<Option<String>>,
    starting: Option<u32>,
    terminating: Option<u32>,
    cold_start_s: Option<f64>,
    /// Why there is nothing to scrape (discovery failed), or a warning about the list.
    note: Option<String>,
    failed: bool,
}

pub struct ScrapeSource {
    client: reqwest::Client,
    discovery: Discovery,
    /// Checked on every discovered URL: anyone who may write EndpointSlices in a namespace can
    /// list any address, and an IP address never reaches the client's policy resolver.
    egress: Arc<crate::egress::EgressPolicy>,
    budget: BodyBudget,
    /// Fetch slots of the whole source.
    slots: Arc<Semaphore>,
    /// Each ScaledObject's time per round.
    deadline: Duration,
    /// Bucket snapshots per (endpoint, histogram base name), oldest first.
    history: Mutex<HashMap<(String, String), Snapshots>>,
}

impl ScrapeSource {
    /// `client` carries the timeouts and the egress policy (`signals::client::build`).
    pub fn new(client: reqwest::Client, budget: BodyBudget, deadline: Duration) -> Self {
        ScrapeSource {
            client,
            budget,
            slots: Arc::new(Semaphore::new(CONCURRENCY)),
            deadline,
            discovery: Discovery::new(DiscoverySettings::default()),
            egress: Arc::new(crate::egress::EgressPolicy::default()),
            history: Mutex::new(HashMap::new()),
        }
    }

    /// Resolves `service` triggers through Kubernetes discovery with these settings, fetching
    /// only the discovered URLs `egress` allows.
    pub fn with_discovery(
        mut self,
        settings: DiscoverySettings,
        egress: Arc<crate::egress::EgressPolicy>,
    ) -> Self {
        self.discovery = Discovery::new(settings);
        self.egress = egress;
        self
    }

    /// A source with a default client, for tests and tools.
    pub fn with_timeout(timeout: Duration) -> Self {
        let client =
            super::client::build(timeout, &Arc::new(crate::egress::EgressPolicy::loopback()))
                .expect("the default client builds");
        ScrapeSource::new(client, BodyBudget::new(64 << 20, 4 << 20), timeout)
    }

    async fn fetch(&self, url: &str, share: &Share) -> Result<Arc<Scraped>, FetchError> {
        let classify = |e: reqwest::Error| {
            if e.is_timeout() {
                FetchError::Timeout
            } else {
                FetchError::Connect(super::client::describe(&e))
            }
        };
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| FetchError::Deadline)?;
        let resp = self.client.get(url).send().await.map_err(classify)?;
        if !resp.status().is_success() {
            return Err(FetchError::Status(resp.status().as_u16()));
        }
        let body = self.budget.read(resp, share).await?;
        let expo = exposition::parse(&String::from_utf8_lossy(&body.bytes));
        Ok(Arc::new(Scraped {
            expo,
            _held: body.into_held(),
        }))
    }

    /// Fetches `url` unless another ScaledObject already did (or is doing) it this round.
    async fn fetch_once(
        &self,
        cell: &OnceCell<Result<Arc<Scraped>, FetchError>>,
        url: &str,
        share: &Share,
    ) {
        cell.get_or_init(|| self.fetch(url, share)).await;
    }

    /// Fetches every spec's endpoints (`targets[i]` for spec i), each spec within its share and
    /// deadline.
    async fn fetch_all(&self, targets: &[Target]) -> Scrapes {
        let round: Round = targets
            .iter()
            .flat_map(|t| t.urls.iter())
            .map(|url| (url.clone(), Arc::new(OnceCell::new())))
            .collect();
        let shares = self.budget.shares(targets.len());
        let slots = (CONCURRENCY / targets.len().max(1)).max(1);
        let mut per_spec = Vec::with_capacity(targets.len());
        for (target, share) in targets.iter().zip(&shares) {
            let fetches: Vec<_> = target
                .urls
                .iter()
                .map(|url| self.fetch_once(&round[url], url, share))
                .collect();
            per_spec.push(async move {
                let all = stream::iter(fetches)
                    .buffer_unordered(slots)
                    .collect::<Vec<()>>();
                let _ = tokio::time::timeout(self.deadline, all).await;
            });
        }
        join_all(per_spec).await;
        round
            .into_iter()
            .map(|(url, cell)| {
                let result = cell.get().cloned().unwrap_or(Err(FetchError::Deadline));
                (url, result)
            })
            .collect()
    }

    /// The shared discovery (its watchers are stopped through `retain`).
    pub fn discovery(&self) -> &Discovery {
        &self.discovery
    }

    async fn target(&self, spec: &ScalerSpec) -> Target {
        match &spec.source {
            SourceSpec::Scrape { endpoints } => Target {
                urls: endpoints.clone(),
                ..Target::default()
            },
            SourceSpec::Service(svc) => match self.discovery.resolve(svc).await {
                Ok(r) => {
                    let mut notes: Vec<String> = r.note.into_iter().collect();
                    let (urls, pods) = r
                        .urls
                        .into_iter()
                        .zip(r.pods)
                        .filter(|(u, _)| {
                            let verdict = reqwest::Url::parse(u)
                                .map_err(|e| e.to_string())
                                .and_then(|url| self.egress.check_url(&url));
                            if let Err(why) = &verdict {
                                notes.push(format!(
                                    "Service {}/{} lists {u}, which {why}; not scraped",
                                    svc.namespace, svc.name
                                ));
                            }
                            verdict.is_ok()
                        })
                        .unzip();
                    Target {
                        urls,
                        pods,
                        starting: Some(r.starting),
                        terminating: Some(r.terminating),
                        cold_start_s: r.cold_start_s,
                        note: (!notes.is_empty()).then(|| notes.join("; ")),
                        failed: false,
                    }
                }
                Err(e) => Target {
                    note: Some(e.to_string()),
                    failed: true,
                    ..Target::default()
                },
            },
            SourceSpec::Prometheus(_) | SourceSpec::Nvml(_) => Target::default(),
        }
    }

    /// Stores this sampling's histogram snapshots and drops those no window needs any more.
    fn record_histograms(
        &self,
        specs: &[Arc<ScalerSpec>],
        targets: &[Target],
        scrapes: &Scrapes,
        t: f64,
    ) {
        let mut history = self.history.lock().unwrap_or_else(|p| p.into_inner());
        let mut longest_window = 0.0f64;
        for (spec, target) in specs.iter().zip(targets) {
            for signal in &spec.signals {
                let MetricSource::Histogram(base) = &signal.metrics else {
                    continue;
                };
                longest_window = longest_window.max(spec.latency_window_s);
                for url in &target.urls {
                    let Some(Ok(expo)) = scrapes.get(url) else {
                        continue;
                    };
                    let key = (url.clone(), base.clone());
                    let snapshots = history.entry(key).or_default();
                    if snapshots.back().is_some_and(|(at, _)| *at >= t) {
                        continue; // Already recorded by another ScaledObject this round.
                    }
                    snapshots.push_back((t, buckets_of(expo, base)));
                    // Keep one snapshot older than the window so a full window can be differenced.
                    while snapshots.len() > 2 && snapshots[1].0 <= t - spec.latency_window_s {
                        snapshots.pop_front();
                    }
                }
            }
        }
        let horizon = 2.0 * longest_window.max(60.0);
        history.retain(|_, s| s.back().is_some_and(|(at, _)| *at >= t - horizon));
    }

    /// The observations `url` made over the window ending now, and the seconds that covers; None
    /// when it was not scraped this round or has no older snapshot.
    fn increase(
        &self,
        url: &str,
        base: &str,
        window_s: f64,
        t: f64,
    ) -> Option<(histogram::Buckets, f64)> {
        let history = self.history.lock().unwrap_or_else(|p| p.into_inner());
        let snapshots = history.get(&(url.to_string(), base.to_string()))?;
        let (now_t, now) = snapshots.back()?;
        if *now_t < t {
            return None; // Not scraped this round.
        }
        // The newest snapshot at least a window old, else the oldest we have.
        let (old_t, old) = snapshots
            .iter()
            .rev()
            .find(|(at, _)| *at <= t - window_s)
            .or_else(|| snapshots.front())?;
        (old_t < now_t).then(|| (histogram::delta(old, now), now_t - old_t))
    }

    /// The p95 of the observations `url` made over the window ending now, if any, in seconds
    /// whatever unit the histogram counts in.
    fn p95(&self, url: &str, base: &str, window_s: f64, t: f64) -> Option<f64> {
        histogram::quantile(0.95, &self.increase(url, base, window_s, t)?.0)
            .map(|q| q * histogram::unit_seconds(base))
    }

    /// Observations per second `url` made over the window ending now (the histogram's `_count`
    /// rate, i.e. completed requests per second), if it was scraped this round.
    fn rate(&self, url: &str, base: &str, window_s: f64, t: f64) -> Option<f64> {
        let (delta, span) = self.increase(url, base, window_s, t)?;
        Some(delta.last()?.1 / span)
    }

    fn readings(&self, spec: &ScalerSpec, target: &Target, scrapes: &Scrapes, t: f64) -> Readings {
        let urls = &target.urls;
        let mut notes: Vec<String> = target.note.iter().cloned().collect();
        for url in urls {
            if let Some(Err(e)) = scrapes.get(url) {
                notes.push(format!("{url}: {e}"));
            }
        }
        let signals = spec
            .signals
            .iter()
            .map(|signal| {
                let pods: Vec<Option<f64>> = urls
                    .iter()
                    .map(|url| match scrapes.get(url) {
                        Some(Ok(expo)) => self.pod_value(signal, url, expo, spec, t),
                        _ => None,
                    })
                    .collect();
                let reachable: Vec<&Exposition> = urls
                    .iter()
                    .filter_map(|u| scrapes.get(u).and_then(|r| r.as_ref().ok()))
                    .map(|s| &s.expo)
                    .collect();
                let note = (!reachable.is_empty()
                    && !reachable.iter().any(|e| exposes(e, &signal.metrics)))
                .then(|| {
                    format!(
                        "no reachable endpoint exposes {}",
                        describe(&signal.metrics)
                    )
                });
                SignalReading { pods, note }
            })
            .collect();
        // Completions per second across the endpoints, from the latency histogram's count: with
        // the in-flight gauge it gives the service time the backlog model drains with. Unknown
        // unless every reachable endpoint reported it.
        let latency = spec.signals.iter().find_map(|s| match &s.metrics {
            MetricSource::Histogram(base) => Some(base),
            _ => None,
        });
        let completions_per_s = latency.and_then(|base| {
            let rates: Vec<Option<f64>> = urls
                .iter()
                .filter(|u| matches!(scrapes.get(*u), Some(Ok(_))))
                .map(|u| self.rate(u, base, spec.latency_window_s, t))
                .collect();
            (!rates.is_empty() && rates.iter().all(Option::is_some))
                .then(|| rates.iter().flatten().sum())
        });
        Readings {
            signals,
            notes,
            failed: target.failed,
            context: crate::score::Context {
                completions_per_s,
                fleet: crate::score::Fleet {
                    starting: target.starting,
                    terminating: target.terminating,
                },
                cold_start_s: target.cold_start_s,
            },
            pods: target.pods.clone(),
            ..Readings::default()
        }
    }

    fn pod_value(
        &self,
        signal: &SignalSpec,
        url: &str,
        expo: &Exposition,
        spec: &ScalerSpec,
        t: f64,
    ) -> Option<f64> {
        match &signal.metrics {
            MetricSource::Gauge(names) => {
                let (metric, series) = first_present(expo, names)?;
                // The same scale as the prometheus source: 0-1 ratios become percent.
                let scale = if super::promql::RATIO_METRICS.contains(&metric.name.as_str()) {
                    100.0
                } else {
                    1.0
                };
                let values: Vec<f64> = series
                    .iter()
                    .map(|s| s.value * scale)
                    .filter(|v| v.is_finite())
                    .collect();
                if values.is_empty() {
                    return None;
                }
                let sum: f64 = values.iter().sum();
                Some(match signal.model {
                    // Several GPUs in one pod: their mean is the pod's utilisation.
                    DemandModel::Utilisation => sum / values.len() as f64,
                    DemandModel::Quantity | DemandModel::Backlog | DemandModel::Latency => sum,
                })
            }
            MetricSource::Fraction(names) => {
                let (_, series) = first_present(expo, names)?;
                let values: Vec<f64> = series
                    .iter()
                    .map(|s| s.value * 100.0)
                    .filter(|v| v.is_finite())
                    .collect();
                // Several engines in one pod (data parallel): their mean is the pod's use.
                (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
            }
            MetricSource::Memory(choices) => choices.iter().find_map(|m| memory_percent(expo, m)),
            MetricSource::Histogram(base) => self.p95(url, base, spec.latency_window_s, t),
            // The spec parser accepts PromQL only with source=prometheus.
            MetricSource::Query(_) => None,
        }
    }
}

impl Source for ScrapeSource {
    fn sample<'a>(
        &'a self,
        specs: &'a [Arc<ScalerSpec>],
        _last: &'a [Option<f64>],
        t: f64,
    ) -> BoxFuture<'a, Vec<Readings>> {
        Box::pin(async move {
            let mut targets = Vec::with_capacity(specs.len());
            for spec in specs {
                targets.push(self.target(spec).await);
            }
            let scrapes = self.fetch_all(&targets).await;
            self.record_histograms(specs, &targets, &scrapes, t);
            specs
                .iter()
                .zip(&targets)
                .map(|(s, target)| self.readings(s, target, &scrapes, t))
                .collect()
        })
    }

    fn deadline(&self) -> Duration {
        self.deadline
    }

    fn set_deletion_costs<'a>(
        &'a self,
        spec: &'a ScalerSpec,
        costs: &'a [(String, Option<i32>)],
    ) -> BoxFuture<'a, Result<crate::deletion::Writes, DeletionCostError>> {
        Box::pin(async move {
            match &spec.source {
                SourceSpec::Service(svc) => self.discovery.set_deletion_costs(svc, costs).await,
                _ => Err(DeletionCostError::Api(
                    "podDeletionCost needs service discovery".into(),
                )),
            }
        })
    }

    /// Watchers serve the namespaces still read through a Service, and no others.
    fn retain(&self, specs: &[Arc<ScalerSpec>]) {
        let namespaces = specs
            .iter()
            .filter_map(|s| match &s.source {
                SourceSpec::Service(svc) => Some(svc.namespace.clone()),
                _ => None,
            })
            .collect();
        self.discovery.retain(&namespaces);
    }

    /// When a ScaledObject's metadata changes only in its endpoint list (a per-pod list following
    /// the replica set), the service's demand did not change because a pod came or went: the new
    /// entry continues the old one's state. Any other change (targets, smoothing, limits) starts
    /// afresh. A Service's endpoints are not in its metadata, so it never needs this.
    fn continues(&self, before: &ScalerSpec, after: &ScalerSpec) -> bool {
        matches!(before.source, SourceSpec::Scrape { .. })
            && matches!(after.source, SourceSpec::Scrape { .. })
            && before.signals == after.signals
            && before.scorer_config() == after.scorer_config()
            && before.latency_window_s == after.latency_window_s
    }
}

/// The first of `refs` (metric names, maybe with label matchers) that has a series in `expo`,
/// with its matching series.
fn first_present<'a>(
    expo: &'a Exposition,
    refs: &[String],
) -> Option<(MetricRef, Vec<&'a exposition::Series>)> {
    refs.iter().find_map(|r| {
        let metric = MetricRef::parse(r)?;
        let series: Vec<&exposition::Series> = expo
            .get(&metric.name)
            .iter()
            .filter(|s| metric.matches(|k| s.label(k)))
            .collect();
        (!series.is_empty()).then_some((metric, series))
    })
}

fn sum_of(expo: &Exposition, name: &str) -> Option<f64> {
    let series = expo.get(name);
    let values = series.iter().map(|s| s.value).filter(|v| v.is_finite());
    (!series.is_empty()).then(|| values.sum())
}

/// Memory in use as a percentage of capacity, summed over the pod's devices.
fn memory_percent(expo: &Exposition, metrics: &MemoryMetrics) -> Option<f64> {
    let (used, capacity) = match metrics {
        MemoryMetrics::UsedTotal { used, total } => (sum_of(expo, used)?, sum_of(expo, total)?),
        MemoryMetrics::UsedFree { used, free } => {
            let used = sum_of(expo, used)?;
            (used, used + sum_of(expo, free)?)
        }
    };
    (capacity > 0.0).then(|| (used / capacity * 100.0).clamp(0.0, 100.0))
}

fn buckets_of(expo: &Exposition, base: &str) -> Buckets {
    let series = expo.get(&format!("{base}_bucket"));
    histogram::merge(series.iter().filter_map(|s| {
        let le = s.label("le")?;
        let le = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse().ok()?
        };
        Some((le, s.value))
    }))
}

fn exposes(expo: &Exposition, metrics: &MetricSource) -> bool {
    match metrics {
        MetricSource::Gauge(names) | MetricSource::Fraction(names) => {
            first_present(expo, names).is_some()
        }
        MetricSource::Memory(choices) => choices.iter().any(|m| memory_percent(expo, m).is_some()),
        MetricSource::Histogram(base) => expo.has(&format!("{base}_bucket")),
        MetricSource::Query(_) => false,
    }
}

fn describe(metrics: &MetricSource) -> String {
    match metrics {
        MetricSource::Gauge(names) | MetricSource::Fraction(names) => names.join(" or "),
        MetricSource::Memory(choices) => choices
            .iter()
            .map(|m| match m {
                MemoryMetrics::UsedTotal { used, total } => format!("{used} with {total}"),
                MemoryMetrics::UsedFree { used, free } => format!("{used} with {free}"),
            })
            .collect::<Vec<_>>()
            .join(" or "),
        MetricSource::Histogram(base) => format!("{base}_bucket"),
        MetricSource::Query(q) => q.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dcgm_memory_is_used_over_used_plus_free() {
        let expo = exposition::parse("DCGM_FI_DEV_FB_USED{gpu=\"0\"} 3000\nDCGM_FI_DEV_FB_FREE{gpu=\"0\"} 1000\nDCGM_FI_DEV_FB_USED{gpu=\"1\"} 1000\nDCGM_FI_DEV_FB_FREE{gpu=\"1\"} 3000\n");
        let m = MemoryMetrics::UsedFree {
            used: "DCGM_FI_DEV_FB_USED".into(),
            free: "DCGM_FI_DEV_FB_FREE".into(),
        };
        assert_eq!(memory_percent(&expo, &m), Some(50.0));
    }

    #[test]
    fn engine_active_ratio_is_read_as_percent_like_gpu_util() {
        let mut m = crate::fixtures::meta(&[
            ("endpoints", "http://127.0.0.1:9/metrics"),
            ("gpuUtilTarget", "50"),
            ("gpuUtilMetric", "DCGM_FI_PROF_GR_ENGINE_ACTIVE"),
        ]);
        let spec = crate::spec::parse(&m).unwrap();
        let expo = exposition::parse(
            "DCGM_FI_PROF_GR_ENGINE_ACTIVE{GPU_I_ID=\"1\"} 0.5\nDCGM_FI_PROF_GR_ENGINE_ACTIVE{GPU_I_ID=\"2\"} 0.7\n",
        );
        let source = ScrapeSource::with_timeout(std::time::Duration::from_secs(1));
        let v = source.pod_value(
            &spec.signals[0],
            "http://127.0.0.1:9/metrics",
            &expo,
            &spec,
            0.0,
        );
        assert!((v.unwrap() - 60.0).abs() < 1e-9, "{v:?}");

        m.insert("gpuUtilMetric".into(), "DCGM_FI_DEV_GPU_UTIL".into());
        let spec = crate::spec::parse(&m).unwrap();
        let expo = exposition::parse("DCGM_FI_DEV_GPU_UTIL 60\n");
        let v = source.pod_value(
            &spec.signals[0],
            "http://127.0.0.1:9/metrics",
            &expo,
            &spec,
            0.0,
        );
        assert_eq!(v, Some(60.0));
    }

    #[test]
    fn memory_needs_both_series_and_capacity() {
        let m = MemoryMetrics::UsedTotal {
            used: "u".into(),
            total: "t".into(),
        };
        assert_eq!(memory_percent(&exposition::parse("u 5\n"), &m), None);
        assert_eq!(memory_percent(&exposition::parse("u 5\nt 0\n"), &m), None);
        assert_eq!(
            memory_percent(&exposition::parse("u 5\nt 20\n"), &m),
            Some(25.0)
        );
    }

    #[test]
    fn histogram_buckets_merge_across_label_sets() {
        let expo = exposition::parse(
            "h_bucket{endpoint=\"a\",le=\"0.5\"} 2\nh_bucket{endpoint=\"a\",le=\"+Inf\"} 3\nh_bucket{endpoint=\"b\",le=\"0.5\"} 1\nh_bucket{endpoint=\"b\",le=\"+Inf\"} 4\nh_bucket{le=\"bogus\"} 9\n",
        );
        assert_eq!(
            buckets_of(&expo, "h"),
            vec![(0.5, 3.0), (f64::INFINITY, 7.0)]
        );
    }
}
