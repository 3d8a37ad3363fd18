//! `source=prometheus`: PromQL through prometheus-http-query, batched across ScaledObjects.
//!
//! Each sampling issues one query per (Prometheus address, labels, signal template) for every
//! registered ScaledObject at once, grouped `by (namespace, pod)`, and splits the answer in memory;
//! the number of queries does not grow with the number of ScaledObjects. Queries are evaluated at
//! timestamps on a fixed grid (multiples of the step), so every scaler replica scores the same
//! inputs at the same times; a ScaledObject seen for the first time has its history over a few
//! half-lives read back with one `query_range` per group and replayed, so a replica started later
//! answers like one that never stopped.

pub mod promql;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::stream::{self, StreamExt};
use prometheus_http_query::response::Data;
use prometheus_http_query::Client;
use regex::Regex;

use super::budget::{BodyBudget, BodyError, Share};
use super::{Readings, SampleRequest, SignalReading, Source};
use crate::score::DemandModel;
use crate::setting;
use crate::spec::{PrometheusSpec, ScalerSpec, SourceSpec};
use promql::{Labels, Template};

/// History read back for a new ScaledObject, in multiples of its longest half-life: what is older
/// weighs less than 2^-8 (0.4 %) in the average.
pub const HISTORY_HALF_LIVES: f64 = 8.0;
/// Queries in flight at once.
const CONCURRENCY: usize = 16;

/// Why a query gave no data.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("unreachable: {0}")]
    Unreachable(String),
    #[error("Prometheus rejected the query: {0}")]
    Rejected(String),
    #[error("bad address: {0}")]
    Address(String),
}

/// The Prometheus HTTP API's envelope.
#[derive(serde::Deserialize)]
#[serde(tag = "status", rename_all = "lowercase")]
enum Answer {
    Success {
        data: prometheus_http_query::response::PromqlResult,
    },
    Error {
        #[serde(rename = "errorType", default)]
        error_type: String,
        #[serde(default)]
        error: String,
    },
}

trait ClassifyName {
    fn classify_name(&self) -> &'static str;
}

impl ClassifyName for serde_json::Error {
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "unreadable",
            serde_json::error::Category::Syntax => "not JSON",
            serde_json::error::Category::Data => "unexpected fields",
            serde_json::error::Category::Eof => "cut short",
        }
    }
}

/// The `[prometheus]` section: defaults for `source=prometheus` triggers.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PrometheusConfig {
    /// Used by triggers without `prometheusAddress`; None: such triggers are rejected.
    #[serde(
        serialize_with = "setting::redacted_url",
        deserialize_with = "address",
        skip_serializing_if = "Option::is_none"
    )]
    pub address: Option<String>,
    /// Timeout of each query (connect included).
    #[serde(
        serialize_with = "setting::duration_text",
        deserialize_with = "timeout"
    )]
    pub timeout: Duration,
}

impl Default for PrometheusConfig {
    fn default() -> Self {
        PrometheusConfig {
            address: None,
            timeout: Duration::from_secs(2),
        }
    }
}

fn address<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    setting::parsed(
        d,
        "an http(s) URL such as http://prometheus-operated.monitoring.svc:9090, or empty for none",
        |text| match text.trim() {
            "" => Some(None),
            url => setting::http_url(url).map(Some),
        },
    )
}

fn timeout<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    setting::duration(
        d,
        Duration::from_millis(10)..=Duration::from_secs(60),
        "a duration from 10ms to 60s, such as 2s",
    )
}

/// The Prometheus evaluation grid for a sampling interval: the interval in whole seconds (the
/// HTTP API takes range bounds in seconds), at least 1.
pub fn step(sample_interval: Duration) -> i64 {
    (sample_interval.as_secs_f64().round() as i64).max(1)
}

/// Settings of the source, from `PrometheusConfig` and the sampling interval.
#[derive(Clone, Debug, PartialEq)]
pub struct PrometheusSettings {
    /// Timeout of each HTTP request to Prometheus (connect included).
    pub timeout: Duration,
    /// Grid step: queries are evaluated at multiples of it. Whole seconds, at least 1.
    pub step_s: i64,
    /// Longest history read back for a new ScaledObject.
    pub max_history: Duration,
}

/// One series of a query answer: its labels and (timestamp, value) points.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Series {
    pub labels: HashMap<String, String>,
    pub points: Vec<(i64, f64)>,
}

/// Specs' signals sharing one query.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct GroupKey {
    address: String,
    labels: Labels,
    template: Template,
}

pub struct PrometheusSource {
    settings: PrometheusSettings,
    http: prometheus_http_query::reqwest::Client,
    /// Answers are read through the body budget, under its cap, like scraped bodies.
    budget: BodyBudget,
    clients: Mutex<HashMap<String, Client>>,
    regexes: Mutex<HashMap<String, Arc<Regex>>>,
    /// (namespace, pods, signal) currently without series, so the warning is logged once.
    empty: Mutex<HashSet<(String, String, String)>>,
}

impl PrometheusSource {
    /// `http` carries the timeouts and the egress policy (`sources::client::build`).
    pub fn new(
        settings: PrometheusSettings,
        http: prometheus_http_query::reqwest::Client,
        budget: BodyBudget,
    ) -> Self {
        PrometheusSource {
            settings,
            http,
            budget,
            clients: Mutex::new(HashMap::new()),
            regexes: Mutex::new(HashMap::new()),
            empty: Mutex::new(HashSet::new()),
        }
    }

    fn client(&self, address: &str) -> Result<Client, QueryError> {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = clients.get(address) {
            return Ok(c.clone());
        }
        let c = Client::from(self.http.clone(), address)
            .map_err(|e| QueryError::Address(e.to_string()))?;
        clients.insert(address.to_string(), c.clone());
        Ok(c)
    }

    /// Runs one PromQL query through this source's client, timeout and body cap: a range query
    /// over `start..=end` on the settings' step, or an instant query at `end` when they are equal.
    /// For tools outside the engine (the simulator's `--from-prometheus`); the caller checks
    /// `address` against the egress policy first, as the spec parser does.
    pub async fn query(
        &self,
        address: &str,
        query: &str,
        start: i64,
        end: i64,
    ) -> Result<Vec<Series>, QueryError> {
        self.run(address, query, start, end).await
    }

    fn regex(&self, pattern: &str) -> Arc<Regex> {
        let mut cache = self.regexes.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() > 10_000 {
            cache.clear();
        }
        cache
            .entry(pattern.to_string())
            .or_insert_with(|| {
                // The spec parser compiled it already; a failure here matches nothing.
                Arc::new(Regex::new(pattern).unwrap_or_else(|_| Regex::new("$^").expect("valid")))
            })
            .clone()
    }

    /// Runs one query: instant at `end` when `start == end`, else a range on the grid.
    async fn run(
        &self,
        address: &str,
        query: &str,
        start: i64,
        end: i64,
    ) -> Result<Vec<Series>, QueryError> {
        let client = self.client(address)?;
        let timeout_ms = self.settings.timeout.as_millis() as i64;
        let response = if start == end {
            client
                .query(query)
                .at(end)
                .timeout(timeout_ms)
                .post_raw()
                .await
        } else {
            client
                .query_range(query, start, end, self.settings.step_s as f64)
                .timeout(timeout_ms)
                .post_raw()
                .await
        };
        let response = response.map_err(|e| classify(e, self.settings.timeout))?;
        let status = response.status();
        // Prometheus answers errors (400, 422, 503) with a JSON body naming the problem.
        let body = self
            .budget
            .read(response, &Share::whole(&self.budget))
            .await
            .map_err(|e| match e {
                BodyError::Timeout => QueryError::Timeout(self.settings.timeout),
                other => QueryError::Unreachable(other.to_string()),
            })?;
        let data = match serde_json::from_slice::<Answer>(&body.bytes) {
            Ok(Answer::Success { data }) => data.into_inner().0,
            Ok(Answer::Error { error_type, error }) => {
                return Err(QueryError::Rejected(crate::text::bounded(
                    &format!("{error_type}: {error}"),
                    300,
                )))
            }
            // The body is not echoed: it is whatever the address served.
            Err(e) => {
                return Err(QueryError::Unreachable(format!(
                    "HTTP {} with an answer that is not the Prometheus API's JSON ({})",
                    status.as_u16(),
                    e.classify_name()
                )))
            }
        };
        drop(body);
        Ok(match data {
            Data::Vector(v) => v
                .into_iter()
                .map(|iv| {
                    let (labels, sample) = iv.into_inner();
                    Series {
                        labels,
                        points: vec![(sample.timestamp().round() as i64, sample.value())],
                    }
                })
                .collect(),
            Data::Matrix(m) => m
                .into_iter()
                .map(|rv| {
                    let (labels, samples) = rv.into_inner();
                    Series {
                        labels,
                        points: samples
                            .iter()
                            .map(|s| (s.timestamp().round() as i64, s.value()))
                            .collect(),
                    }
                })
                .collect(),
            Data::Scalar(s) => vec![Series {
                labels: HashMap::new(),
                points: vec![(s.timestamp().round() as i64, s.value())],
            }],
        })
    }

    /// The newest grid time whose data Prometheus has surely ingested: one step behind now.
    pub fn grid_now(&self) -> i64 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        grid_time(now, self.settings.step_s)
    }

    /// First grid time to read for a spec whose newest scored time is `last`.
    fn from(&self, spec: &ScalerSpec, last: Option<f64>, end: i64) -> i64 {
        let step = self.settings.step_s;
        let window = history_window(spec, self.settings.max_history).max(step as f64);
        let earliest = end - ((window / step as f64).ceil() as i64) * step;
        match last {
            Some(l) if l.is_finite() => {
                let next = ((l / step as f64).floor() as i64 + 1) * step;
                next.clamp(earliest, end)
            }
            _ => earliest,
        }
    }

    fn note_empty(&self, p: &PrometheusSpec, signal: &str, empty: bool, query: &str) {
        let key = (p.namespace.clone(), p.pods.pattern(), signal.to_string());
        let mut set = self.empty.lock().unwrap_or_else(|e| e.into_inner());
        if empty {
            if set.len() < 100_000 && set.insert(key) {
                tracing::warn!(
                    namespace = %p.namespace,
                    pods = %p.pods.pattern(),
                    signal,
                    query,
                    "query returned no series for these pods; check namespaceLabel/podLabel (exported_namespace, exported_pod when Prometheus renamed them)"
                );
            }
        } else {
            set.remove(&key);
        }
    }
}

impl Source for PrometheusSource {
    fn sample<'a>(
        &'a self,
        requests: &'a [SampleRequest],
        _t: f64,
    ) -> BoxFuture<'a, Vec<Readings>> {
        Box::pin(async move {
            let end = self.grid_now();
            // Each spec with the first grid time it still has to read.
            let reads: Vec<(&ScalerSpec, i64)> = requests
                .iter()
                .map(|r| (&*r.spec, self.from(&r.spec, r.last, end)))
                .collect();
            let plan = plan(&reads);
            let keys: Vec<GroupKey> = plan.keys().cloned().collect();
            let mut answers: HashMap<GroupKey, Result<Vec<Series>, QueryError>> =
                stream::iter(plan.into_iter().map(|(key, group)| async move {
                    let query = key.template.build(&key.labels, &group.namespaces);
                    let result = self.run(&key.address, &query, group.from, end).await;
                    if let Err(e) = &result {
                        tracing::warn!(address = %key.address, %query, error = %e, "Prometheus query failed");
                    }
                    (key, result)
                }))
                .buffer_unordered(CONCURRENCY)
                // A round lasts one query timeout: queries still queued then count as timed out,
                // so many slow queries cannot hold every other ScaledObject's samples.
                .take_until(tokio::time::sleep(self.settings.timeout))
                .collect()
                .await;
            for key in keys {
                answers
                    .entry(key)
                    .or_insert(Err(QueryError::Timeout(self.settings.timeout)));
            }
            reads
                .iter()
                .map(|&(spec, from)| self.readings(spec, &answers, from, end))
                .collect()
        })
    }

    fn deadline(&self) -> Duration {
        self.settings.timeout
    }
}

/// What one group of signals needs: the namespaces it covers and the earliest time any of them
/// still has to read.
struct Group {
    namespaces: BTreeSet<String>,
    from: i64,
}

/// The queries that serve every spec, each spec reading from its first grid time on.
fn plan(reads: &[(&ScalerSpec, i64)]) -> BTreeMap<GroupKey, Group> {
    let mut groups: BTreeMap<GroupKey, Group> = BTreeMap::new();
    for &(spec, from) in reads {
        let SourceSpec::Prometheus(p) = &spec.source else {
            continue;
        };
        let keys = spec
            .signals
            .iter()
            .map(|signal| key(p, spec, signal))
            .chain(completions_key(p, spec))
            .chain(first_tokens_key(p, spec))
            .chain(buckets_key(p, spec));
        for k in keys {
            let group = groups.entry(k).or_insert(Group {
                namespaces: BTreeSet::new(),
                from,
            });
            group.namespaces.insert(p.namespace.clone());
            group.from = group.from.min(from);
        }
    }
    groups
}

/// A query over the spec's classic latency histogram, built by `template` from its base name
/// and window; None without one.
fn histogram_key(
    p: &PrometheusSpec,
    spec: &ScalerSpec,
    template: fn(String, u64) -> Template,
) -> Option<GroupKey> {
    let base = spec.signals.iter().find_map(|s| match &s.metrics {
        crate::spec::MetricSource::Histogram(base) => Some(base.clone()),
        _ => None,
    })?;
    Some(GroupKey {
        address: p.address.clone(),
        labels: Labels {
            namespace: p.namespace_label.clone(),
            pod: p.pod_label.clone(),
        },
        template: template(base, spec.latency_window_s.round().max(1.0) as u64),
    })
}

/// The completion-rate query of a spec whose latency signal reads a classic histogram.
fn completions_key(p: &PrometheusSpec, spec: &ScalerSpec) -> Option<GroupKey> {
    histogram_key(p, spec, |base, window_s| Template::Completions {
        base,
        window_s,
    })
}

/// SLO mode's count of first tokens between the last two scrapes. None in target mode or
/// without a classic latency histogram.
fn first_tokens_key(p: &PrometheusSpec, spec: &ScalerSpec) -> Option<GroupKey> {
    spec.objective?;
    histogram_key(p, spec, |base, window_s| Template::FirstTokens {
        base,
        window_s,
    })
}

/// SLO mode's bucket-rate query: how many requests met the objective. None in target mode or
/// without a classic latency histogram.
fn buckets_key(p: &PrometheusSpec, spec: &ScalerSpec) -> Option<GroupKey> {
    spec.objective?;
    histogram_key(p, spec, |base, window_s| Template::Buckets {
        base,
        window_s,
    })
}

/// Requests within the objective of all requests, over the window, of the spec's pods at `t`:
/// the bucket rates summed over pods by bound, read the way `histogram_quantile` reads them.
/// None in target mode, when the query failed, or when it had nothing for these pods.
fn within_at(
    answers: &HashMap<GroupKey, Result<Vec<Series>, QueryError>>,
    p: &PrometheusSpec,
    spec: &ScalerSpec,
    pods: &Regex,
    t: i64,
) -> Option<crate::score::Within> {
    let objective = spec.objective?;
    let key = buckets_key(p, spec)?;
    let Ok(series) = answers.get(&key)? else {
        return None;
    };
    let Template::Buckets { base, window_s } = &key.template else {
        return None;
    };
    let points = series.iter().filter_map(|s| {
        let ns = s.labels.get(&p.namespace_label)?;
        let pod = s.labels.get(&p.pod_label)?;
        if ns != &p.namespace || !pods.is_match(pod) {
            return None;
        }
        let le = match s.labels.get("le")?.as_str() {
            "+Inf" | "Inf" | "inf" => f64::INFINITY,
            other => other.parse::<f64>().ok()?,
        };
        let v = s.points.iter().find(|(at, _)| *at == t)?.1;
        // A rate times the window is the observations in it; NaN and -Inf say nothing.
        v.is_finite().then_some((le, v * *window_s as f64))
    });
    let buckets = crate::sources::scrape::histogram::merge(points);
    let bound = objective.ttft_s / crate::sources::scrape::histogram::unit_seconds(base);
    let (within, total) = crate::sources::scrape::histogram::within(bound, &buckets)?;
    Some(crate::score::Within {
        within,
        total,
        window_s: *window_s as f64,
    })
}

/// The per-pod values at `t` of one of the spec's histogram-rate queries (`key`), for its pods;
/// None when the query was not run, failed, or had nothing for them then.
fn pods_at(
    answers: &HashMap<GroupKey, Result<Vec<Series>, QueryError>>,
    key: Option<GroupKey>,
    p: &PrometheusSpec,
    pods: &Regex,
    t: i64,
) -> Option<BTreeMap<String, f64>> {
    let Ok(series) = answers.get(&key?)? else {
        return None;
    };
    let split = split_series(series, p, pods, true, DemandModel::Quantity);
    split.pods.get(&t).filter(|m| !m.is_empty()).cloned()
}

/// Completions per second of the spec's pods at `t`, summed; None when the query failed or had
/// no series for them.
fn completions_at(
    answers: &HashMap<GroupKey, Result<Vec<Series>, QueryError>>,
    p: &PrometheusSpec,
    spec: &ScalerSpec,
    pods: &Regex,
    t: i64,
) -> Option<f64> {
    let sum: f64 = pods_at(answers, completions_key(p, spec), p, pods, t)?
        .values()
        .sum();
    sum.is_finite().then_some(sum)
}

/// Requests per second that reached their first token between each pod's last two scrapes,
/// summed over the spec's pods at `t`. None when the query failed or had nothing for them, and
/// when a pod the completion rate counts has no such rate: a pod left out would count its
/// requests as never having arrived, fewer arrivals than there were.
fn first_tokens_at(
    answers: &HashMap<GroupKey, Result<Vec<Series>, QueryError>>,
    p: &PrometheusSpec,
    spec: &ScalerSpec,
    pods: &Regex,
    t: i64,
) -> Option<f64> {
    let counted = pods_at(answers, first_tokens_key(p, spec), p, pods, t)?;
    let completing = pods_at(answers, completions_key(p, spec), p, pods, t);
    if completing.is_some_and(|all| all.keys().any(|pod| !counted.contains_key(pod))) {
        return None;
    }
    let sum: f64 = counted.values().sum();
    (sum.is_finite() && sum >= 0.0).then_some(sum)
}

fn key(p: &PrometheusSpec, spec: &ScalerSpec, signal: &crate::spec::SignalSpec) -> GroupKey {
    let template = Template::of(signal, spec.latency_window_s);
    // A full query does not depend on the labels: identical ones share a query whatever they say.
    let labels = if template.is_builtin() {
        Labels {
            namespace: p.namespace_label.clone(),
            pod: p.pod_label.clone(),
        }
    } else {
        Labels {
            namespace: String::new(),
            pod: String::new(),
        }
    };
    GroupKey {
        address: p.address.clone(),
        labels,
        template,
    }
}

impl PrometheusSource {
    fn readings(
        &self,
        spec: &ScalerSpec,
        answers: &HashMap<GroupKey, Result<Vec<Series>, QueryError>>,
        from: i64,
        end: i64,
    ) -> Readings {
        let SourceSpec::Prometheus(p) = &spec.source else {
            return Readings::default();
        };
        let pods_re = self.regex(&p.pods.pattern());
        let step = self.settings.step_s.max(1);
        let times: Vec<i64> = (0..)
            .map(|k| from + k * step)
            .take_while(|t| *t <= end)
            .collect();
        let mut notes = Vec::new();
        let mut failed = false;
        // Per signal: per time, the pod values (or one aggregate when the query has no pod label).
        let mut split: Vec<Option<SignalSeries>> = Vec::with_capacity(spec.signals.len());
        let mut signal_notes = Vec::with_capacity(spec.signals.len());
        for signal in &spec.signals {
            let k = key(p, spec, signal);
            match answers.get(&k) {
                Some(Ok(series)) => {
                    let s =
                        split_series(series, p, &pods_re, k.template.is_builtin(), signal.model);
                    let not_numbers = s.not_numbers.get(&end).copied().unwrap_or(0);
                    let empty = !s.has_data_at(end) && not_numbers == 0;
                    let query = k
                        .template
                        .build(&k.labels, &BTreeSet::from([p.namespace.clone()]));
                    self.note_empty(p, &signal.name, empty, &query);
                    signal_notes.push(if empty {
                        Some(format!(
                            "query returned no series for {}=\"{}\", {}=~\"{}\" at {end}; if Prometheus renamed the labels set namespaceLabel/podLabel (exported_namespace, exported_pod)",
                            p.namespace_label,
                            p.namespace,
                            p.pod_label,
                            p.pods.pattern()
                        ))
                    } else if not_numbers > 0 {
                        Some(format!(
                            "{not_numbers} series reported NaN or -Inf at {end}, counted as not reporting"
                        ))
                    } else {
                        None
                    });
                    split.push(Some(s));
                }
                Some(Err(e)) => {
                    failed = true;
                    notes.push(format!("prometheus {}: {e}", p.address));
                    signal_notes.push(Some(format!("query failed: {e}")));
                    split.push(None);
                }
                None => {
                    signal_notes.push(None);
                    split.push(None);
                }
            }
        }
        notes.dedup();
        let mut steps: Vec<(f64, Vec<Vec<Option<f64>>>)> = times
            .iter()
            .map(|t| (*t as f64, values_at(spec, &split, *t)))
            .collect();
        let current = steps.pop().map(|(_, v)| v).unwrap_or_default();
        Readings {
            signals: current
                .into_iter()
                .zip(signal_notes)
                .map(|(pods, note)| SignalReading { pods, note })
                .collect(),
            notes,
            at: Some(end as f64),
            earlier: steps,
            context: crate::score::Context {
                completions_per_s: completions_at(answers, p, spec, &pods_re, end),
                first_tokens_per_s: first_tokens_at(answers, p, spec, &pods_re, end),
                ttft_within: within_at(answers, p, spec, &pods_re, end),
                ..Default::default()
            },
            failed,
            syncing: false,
            ..Readings::default()
        }
    }
}

/// One signal's answer for one spec: per time, per pod, or aggregate values.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SignalSeries {
    pub pods: BTreeMap<i64, BTreeMap<String, f64>>,
    pub aggregate: BTreeMap<i64, f64>,
    /// Points per time that were NaN or -Inf, left out: no reading.
    pub not_numbers: BTreeMap<i64, usize>,
}

impl SignalSeries {
    fn has_data_at(&self, t: i64) -> bool {
        self.pods.get(&t).is_some_and(|p| !p.is_empty()) || self.aggregate.contains_key(&t)
    }
}

/// Whether a point is a reading: a number, or +Inf (more than can be counted, which the scorer
/// turns into maxReplicas). NaN and -Inf say nothing and are left out, as a pod that did not
/// report.
fn counts(v: f64) -> bool {
    v.is_finite() || v == f64::INFINITY
}

/// Keeps the series of this spec's pods. Built-in queries carry the spec's labels by construction;
/// a full query is split by its pod label when it has one (`podLabel`, else `pod`), else its
/// series are one aggregate for the whole workload (summed, or averaged for utilisation).
pub fn split_series(
    series: &[Series],
    p: &PrometheusSpec,
    pods: &Regex,
    builtin: bool,
    model: DemandModel,
) -> SignalSeries {
    let mut out = SignalSeries::default();
    let mut aggregate: BTreeMap<i64, (f64, usize)> = BTreeMap::new();
    for s in series {
        let pod_label = if s.labels.contains_key(&p.pod_label) || builtin {
            &p.pod_label
        } else {
            "pod"
        };
        let ns_label = if builtin || s.labels.contains_key(&p.namespace_label) {
            &p.namespace_label
        } else {
            "namespace"
        };
        match s.labels.get(pod_label) {
            Some(pod) => {
                if s.labels.get(ns_label).is_some_and(|ns| ns != &p.namespace)
                    || (builtin && !s.labels.contains_key(ns_label))
                    || !pods.is_match(pod)
                {
                    continue;
                }
                for (t, v) in &s.points {
                    if counts(*v) {
                        *out.pods
                            .entry(*t)
                            .or_default()
                            .entry(pod.clone())
                            .or_insert(0.0) += v;
                    } else {
                        *out.not_numbers.entry(*t).or_default() += 1;
                    }
                }
            }
            None if !builtin => {
                for (t, v) in &s.points {
                    if counts(*v) {
                        let e = aggregate.entry(*t).or_insert((0.0, 0));
                        e.0 += v;
                        e.1 += 1;
                    } else {
                        *out.not_numbers.entry(*t).or_default() += 1;
                    }
                }
            }
            None => {}
        }
    }
    out.aggregate = aggregate
        .into_iter()
        .map(|(t, (sum, n))| {
            let v = match model {
                DemandModel::Quantity | DemandModel::Backlog => sum,
                DemandModel::Utilisation | DemandModel::Latency => sum / n as f64,
            };
            (t, v)
        })
        .collect();
    out
}

/// The per-signal, per-pod values of one spec at grid time `t`. Pods are those any signal saw at
/// `t`, so a pod missing from one signal counts as a missing reading, and a pod gone from all of
/// them (scaled down) is no longer counted.
fn values_at(spec: &ScalerSpec, split: &[Option<SignalSeries>], t: i64) -> Vec<Vec<Option<f64>>> {
    let pods: BTreeSet<&String> = split
        .iter()
        .flatten()
        .filter_map(|s| s.pods.get(&t))
        .flat_map(|m| m.keys())
        .collect();
    spec.signals
        .iter()
        .zip(split)
        .map(|(signal, s)| match s {
            None => vec![None; pods.len()],
            Some(s) => match s.aggregate.get(&t) {
                // One number for the whole workload: a utilisation stands for each known pod, a
                // quantity or latency is one reading.
                Some(v) if signal.model == DemandModel::Utilisation => {
                    vec![Some(*v); pods.len().max(1)]
                }
                Some(v) => vec![Some(*v)],
                None => {
                    let at = s.pods.get(&t);
                    pods.iter()
                        .map(|pod| at.and_then(|m| m.get(*pod)).copied())
                        .collect()
                }
            },
        })
        .collect()
}

/// The grid time one step behind `now`.
pub fn grid_time(now_unix: f64, step_s: i64) -> i64 {
    let step = step_s.max(1);
    ((now_unix / step as f64).floor() as i64 - 1) * step
}

/// How much history a new ScaledObject reads back: a few of its longest half-lives.
pub fn history_window(spec: &ScalerSpec, cap: Duration) -> f64 {
    let h = spec
        .smoothing
        .up_half_life_s
        .max(spec.smoothing.down_half_life_s);
    (HISTORY_HALF_LIVES * h).min(cap.as_secs_f64())
}

fn classify(e: prometheus_http_query::Error, timeout: Duration) -> QueryError {
    match e {
        prometheus_http_query::Error::Prometheus(p) => QueryError::Rejected(p.to_string()),
        prometheus_http_query::Error::ParseUrl(u) => QueryError::Address(u.to_string()),
        other => {
            let cause = std::error::Error::source(&other)
                .and_then(|s| s.downcast_ref::<prometheus_http_query::reqwest::Error>());
            if cause.is_some_and(|r| r.is_timeout()) || other.to_string().contains("timed out") {
                QueryError::Timeout(timeout)
            } else {
                // The address is named by the caller; the cause is described without it.
                QueryError::Unreachable(
                    cause.map_or_else(|| other.to_string(), super::client::describe),
                )
            }
        }
    }
}

/// The query each signal of `spec` runs (for the debug page), alone in its batch.
pub fn describe_queries(spec: &ScalerSpec) -> Vec<String> {
    let SourceSpec::Prometheus(p) = &spec.source else {
        return Vec::new();
    };
    spec.signals
        .iter()
        .map(|signal| key(p, spec, signal))
        .chain(completions_key(p, spec))
        .chain(first_tokens_key(p, spec))
        .chain(buckets_key(p, spec))
        .map(|k| {
            k.template
                .build(&k.labels, &BTreeSet::from([p.namespace.clone()]))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{in_ns_without_prometheus, meta};

    fn spec(pairs: &[(&str, &str)]) -> ScalerSpec {
        let mut m = meta(&[
            ("source", "prometheus"),
            ("prometheusAddress", "http://127.0.0.1:9090"),
            ("deployment", "llm"),
        ]);
        m.extend(meta(pairs));
        in_ns_without_prometheus(&m).unwrap()
    }

    fn series(labels: &[(&str, &str)], points: &[(i64, f64)]) -> Series {
        Series {
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            points: points.to_vec(),
        }
    }

    fn prom(s: &ScalerSpec) -> &PrometheusSpec {
        match &s.source {
            SourceSpec::Prometheus(p) => p,
            _ => unreachable!(),
        }
    }

    #[test]
    fn a_hundred_specs_share_one_query_per_signal_kind() {
        let specs: Vec<Arc<ScalerSpec>> = (0..100)
            .map(|i| {
                let ns = format!("team-{}", i % 7);
                let dep = format!("llm-{i}");
                Arc::new(spec(&[
                    ("namespace", &ns),
                    ("deployment", &dep),
                    ("gpuUtilTarget", "70"),
                    ("gpuMemoryTarget", "80"),
                    ("queueTarget", "4"),
                    ("latencyTargetMs", "500"),
                ]))
            })
            .collect();
        // Four signals plus the latency histogram's completion rate, one query each.
        let reads: Vec<(&ScalerSpec, i64)> = specs.iter().map(|s| (&**s, 0)).collect();
        let groups = plan(&reads);
        assert_eq!(groups.len(), 5);
        assert!(groups.keys().any(|k| matches!(
            &k.template,
            Template::Completions { base, window_s: 60 } if base == crate::spec::DEFAULT_LATENCY_METRIC
        )));
        assert!(groups.values().all(|g| g.namespaces.len() == 7));
        // Identical full queries are deduplicated; different windows are different queries.
        let mut more = specs.clone();
        more.push(Arc::new(spec(&[
            ("queueQuery", "sum by (pod) (q)"),
            ("queueTarget", "1"),
        ])));
        more.push(Arc::new(spec(&[
            ("deployment", "other"),
            ("queueQuery", "sum by (pod) (q)"),
            ("queueTarget", "2"),
        ])));
        more.push(Arc::new(spec(&[
            ("latencyWindowSeconds", "30"),
            ("queueTarget", "1"),
            ("latencyTargetMs", "500"),
        ])));
        // ... and the 30 s window's latency and completion queries.
        let reads: Vec<(&ScalerSpec, i64)> = more.iter().map(|s| (&**s, 0)).collect();
        assert_eq!(plan(&reads).len(), 8);
    }

    #[test]
    fn the_completion_rate_sums_the_specs_pods_at_the_newest_time() {
        let s = spec(&[("queueTarget", "4"), ("latencyTargetMs", "500")]);
        let p = prom(&s);
        let re = Regex::new(&p.pods.pattern()).unwrap();
        let k = completions_key(p, &s).unwrap();
        let query = k
            .template
            .build(&k.labels, &BTreeSet::from([p.namespace.clone()]));
        assert!(
            query.starts_with("sum by (namespace, pod) (rate(workload_queue_wait_seconds_count{"),
            "{query}"
        );
        let pod = |name: &str, v: f64| {
            series(
                &[("namespace", &p.namespace), ("pod", name)],
                &[(100, 1.0), (115, v)],
            )
        };
        let answers = HashMap::from([(
            k,
            Ok(vec![
                pod("llm-5d8f7b9c4-abcde", 2.5),
                pod("llm-5d8f7b9c4-fghij", 1.5),
            ]),
        )]);
        assert_eq!(completions_at(&answers, p, &s, &re, 115), Some(4.0));
        assert_eq!(
            completions_at(&answers, p, &s, &re, 130),
            None,
            "no point then"
        );
        let without_latency = spec(&[("queueTarget", "4")]);
        assert!(completions_key(prom(&without_latency), &without_latency).is_none());
    }

    /// The query a group key runs for the spec's namespace.
    fn built(k: &GroupKey, p: &PrometheusSpec) -> String {
        k.template
            .build(&k.labels, &BTreeSet::from([p.namespace.clone()]))
    }

    #[test]
    fn slo_mode_counts_first_tokens_between_each_pods_last_two_scrapes() {
        let s = spec(&[("ttftObjectiveMs", "1500")]);
        let p = prom(&s);
        let re = Regex::new(&p.pods.pattern()).unwrap();
        let k = first_tokens_key(p, &s).expect("SLO mode counts first tokens");
        let query = built(&k, p);
        assert!(
            query.starts_with("sum by (namespace, pod) (irate(") && query.contains("_count{"),
            "{query}"
        );
        assert!(describe_queries(&s).contains(&query));
        let pod =
            |name: &str, v: f64| series(&[("namespace", &p.namespace), ("pod", name)], &[(115, v)]);
        let (a, b) = ("llm-5d8f7b9c4-abcde", "llm-5d8f7b9c4-fghij");
        let completions = completions_key(p, &s).unwrap();
        let answers = |counted: Vec<Series>| {
            HashMap::from([
                (k.clone(), Ok(counted)),
                (completions.clone(), Ok(vec![pod(a, 1.0), pod(b, 1.0)])),
            ])
        };
        // Both pods counted: their rates add up.
        let both = answers(vec![pod(a, 3.0), pod(b, 1.5)]);
        assert_eq!(first_tokens_at(&both, p, &s, &re, 115), Some(4.5));
        // A pod the completion rate sees but whose count is missing (one scrape so far, or a
        // series gone): not counted at all, rather than counted as fewer arrivals.
        let one = answers(vec![pod(a, 3.0)]);
        assert_eq!(first_tokens_at(&one, p, &s, &re, 115), None);
        assert_eq!(
            first_tokens_at(&both, p, &s, &re, 130),
            None,
            "no point then"
        );
        let target_mode = spec(&[("queueTarget", "4"), ("latencyTargetMs", "500")]);
        assert!(first_tokens_key(prom(&target_mode), &target_mode).is_none());
    }

    #[test]
    fn slo_mode_reads_what_was_met_from_the_bucket_rates_of_its_pods() {
        let s = spec(&[("ttftObjectiveMs", "1500")]);
        let p = prom(&s);
        let re = Regex::new(&p.pods.pattern()).unwrap();
        let k = buckets_key(p, &s).expect("SLO mode asks for bucket rates");
        let query = built(&k, p);
        assert!(
            query.starts_with("sum by (namespace, pod, le) (rate("),
            "{query}"
        );
        assert!(describe_queries(&s).contains(&query));
        // Two pods, per second over the 60 s window: 1 within 1 s, 0.5 more within 2 s, 1/6 slower.
        let bucket = |pod: &str, le: &str, v: f64| {
            series(
                &[("namespace", &p.namespace), ("pod", pod), ("le", le)],
                &[(115, v)],
            )
        };
        let mut rows = Vec::new();
        for pod in ["llm-5d8f7b9c4-abcde", "llm-5d8f7b9c4-fghij"] {
            rows.push(bucket(pod, "1", 0.5));
            rows.push(bucket(pod, "2", 0.75));
            rows.push(bucket(pod, "+Inf", 1.0 / 1.2));
        }
        // Another namespace's pod never counts.
        rows.push(series(
            &[
                ("namespace", "other"),
                ("pod", "llm-5d8f7b9c4-zzzzz"),
                ("le", "+Inf"),
            ],
            &[(115, 100.0)],
        ));
        let answers = HashMap::from([(k, Ok(rows))]);
        let w = within_at(&answers, p, &s, &re, 115).unwrap();
        // 100 requests over the window: 60 within 1 s, 90 within 2 s; 1.5 s reads 75.
        assert!(
            (w.total - 100.0).abs() < 1e-9 && (w.within - 75.0).abs() < 1e-9,
            "{w:?}"
        );
        assert_eq!(w.window_s, 60.0);
        assert_eq!(within_at(&answers, p, &s, &re, 130), None, "no point then");
        let target_mode = spec(&[("queueTarget", "4"), ("latencyTargetMs", "500")]);
        assert!(buckets_key(prom(&target_mode), &target_mode).is_none());
    }

    #[test]
    fn series_are_split_by_namespace_and_deployment_pods() {
        let s = spec(&[("queueTarget", "4")]);
        let p = prom(&s);
        let re = Regex::new(&p.pods.pattern()).unwrap();
        let got = split_series(
            &[
                series(
                    &[("namespace", "inference"), ("pod", "llm-7d9f-abcde")],
                    &[(10, 3.0)],
                ),
                series(
                    &[("namespace", "inference"), ("pod", "llm-7d9f-xyz12")],
                    &[(10, 5.0)],
                ),
                // Another deployment whose name starts the same, another namespace, a NaN.
                series(
                    &[("namespace", "inference"), ("pod", "llm-canary-7d9f-abcde")],
                    &[(10, 9.0)],
                ),
                series(
                    &[("namespace", "other"), ("pod", "llm-7d9f-abcde")],
                    &[(10, 9.0)],
                ),
                series(
                    &[("namespace", "inference"), ("pod", "llm-1-2")],
                    &[(10, f64::NAN)],
                ),
            ],
            p,
            &re,
            true,
            DemandModel::Quantity,
        );
        assert_eq!(
            got.pods[&10],
            BTreeMap::from([
                ("llm-7d9f-abcde".to_string(), 3.0),
                ("llm-7d9f-xyz12".to_string(), 5.0)
            ])
        );
    }

    #[test]
    fn a_full_query_without_pod_label_is_one_aggregate() {
        let s = spec(&[
            ("gpuUtilTarget", "50"),
            ("gpuUtilQuery", "avg(x)"),
            ("queueTarget", "10"),
        ]);
        let p = prom(&s);
        let re = Regex::new(&p.pods.pattern()).unwrap();
        let util = split_series(
            &[series(&[], &[(5, 80.0)])],
            p,
            &re,
            false,
            DemandModel::Utilisation,
        );
        let queue = split_series(
            &[
                series(
                    &[("namespace", "inference"), ("pod", "llm-a-b")],
                    &[(5, 10.0)],
                ),
                series(
                    &[("namespace", "inference"), ("pod", "llm-a-c")],
                    &[(5, 20.0)],
                ),
            ],
            p,
            &re,
            true,
            DemandModel::Quantity,
        );
        let v = values_at(&s, &[Some(util), Some(queue)], 5);
        // The aggregate utilisation stands for each of the two pods the queue query saw.
        assert_eq!(v[0], vec![Some(80.0), Some(80.0)]);
        assert_eq!(v[1], vec![Some(10.0), Some(20.0)]);
    }

    #[test]
    fn a_pod_missing_from_one_signal_is_a_missing_reading() {
        let s = spec(&[("gpuUtilTarget", "50"), ("queueTarget", "10")]);
        let mut util = SignalSeries::default();
        util.pods
            .insert(1, BTreeMap::from([("a".to_string(), 40.0)]));
        let mut queue = SignalSeries::default();
        queue.pods.insert(
            1,
            BTreeMap::from([("a".to_string(), 1.0), ("b".to_string(), 2.0)]),
        );
        let v = values_at(&s, &[Some(util), Some(queue)], 1);
        assert_eq!(v[0], vec![Some(40.0), None]);
        assert_eq!(v[1], vec![Some(1.0), Some(2.0)]);
        assert_eq!(
            values_at(&s, &[None, None], 1),
            vec![Vec::<Option<f64>>::new(); 2]
        );
    }

    #[test]
    fn the_grid_is_one_step_behind_and_history_covers_half_lives() {
        assert_eq!(grid_time(1000.7, 2), 998);
        assert_eq!(grid_time(1001.0, 2), 998);
        assert_eq!(grid_time(1002.0, 2), 1000);
        let s = spec(&[
            ("queueTarget", "1"),
            ("upHalfLifeSeconds", "5"),
            ("downHalfLifeSeconds", "30"),
        ]);
        assert_eq!(history_window(&s, Duration::from_secs(3600)), 240.0);
        assert_eq!(history_window(&s, Duration::from_secs(60)), 60.0);
        crate::sources::client::install_provider();
        let source = PrometheusSource::new(
            PrometheusSettings {
                timeout: Duration::from_secs(1),
                step_s: 2,
                max_history: Duration::from_secs(3600),
            },
            prometheus_http_query::reqwest::Client::new(),
            BodyBudget::new(1 << 20, 1 << 20),
        );
        assert_eq!(source.from(&s, None, 1000), 760);
        assert_eq!(source.from(&s, Some(996.0), 1000), 998);
        assert_eq!(source.from(&s, Some(1000.0), 1000), 1000);
        assert_eq!(
            source.from(&s, Some(10.0), 1000),
            760,
            "a long gap reads one window"
        );
    }

    #[test]
    fn infinity_is_a_reading_and_nan_is_counted_as_none() {
        let s = spec(&[("queueTarget", "4")]);
        let p = prom(&s);
        let pods = Regex::new(&p.pods.pattern()).unwrap();
        let answer = vec![
            series(
                &[("namespace", "inference"), ("pod", "llm-7d9f-aaaaa")],
                &[(10, f64::INFINITY)],
            ),
            series(
                &[("namespace", "inference"), ("pod", "llm-7d9f-bbbbb")],
                &[(10, 3.0)],
            ),
            series(
                &[("namespace", "inference"), ("pod", "llm-7d9f-ccccc")],
                &[(10, f64::NAN)],
            ),
            series(
                &[("namespace", "inference"), ("pod", "llm-7d9f-ddddd")],
                &[(10, f64::NEG_INFINITY)],
            ),
        ];
        let split = split_series(&answer, p, &pods, true, DemandModel::Quantity);
        let at = &split.pods[&10];
        assert_eq!(at.get("llm-7d9f-aaaaa"), Some(&f64::INFINITY));
        assert_eq!(at.get("llm-7d9f-bbbbb"), Some(&3.0));
        assert!(!at.contains_key("llm-7d9f-ccccc") && !at.contains_key("llm-7d9f-ddddd"));
        assert_eq!(split.not_numbers.get(&10), Some(&2));
    }
}
