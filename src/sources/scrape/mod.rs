//! `source=scrape`: reads each replica's `/metrics` directly, no Prometheus needed.
//!
//! Each endpoint is one replica. Every endpoint named by any ScaledObject is fetched at most once
//! per sampling, with a timeout and a body cap; an endpoint that fails counts as a missing pod.
//! Tenants are isolated from each other: in each round every ScaledObject gets an equal share of
//! the fetch slots and of the body budget (with a floor of it that others cannot take), and a
//! deadline (the scrape timeout) after which its unfinished endpoints count as missing. Slots go
//! by standing (`sources/slots.rs`): endpoints that answered fast last time first, then new ones, then
//! slow ones, which never hold more than part of the slots; among equals, every object's first
//! endpoint before anyone's second. A ScaledObject with a thousand black-holed endpoints, or a
//! thousand ScaledObjects with one each, thus only make themselves stale. Bodies are parsed as
//! they arrive, keeping only the metrics the ScaledObjects read. Latency histograms are
//! differenced over a window, so a history of bucket snapshots per endpoint is kept, and each
//! endpoint's standing.

pub mod discovery;
pub mod exposition;
pub mod gates;
pub mod histogram;

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::{join_all, BoxFuture};
use futures_util::stream::{self, StreamExt};
use tokio::sync::OnceCell;

use super::budget::{BodyBudget, BodyError, Held, Share};
use super::slots::{Rank, Slots, Standing, Ticket};
use super::{Readings, SampleRequest, SignalReading, Source};
use crate::score::DemandModel;
use crate::spec::{MemoryMetrics, MetricRef, MetricSource, ScalerSpec, SignalSpec, SourceSpec};
use discovery::{DeletionCostError, Discovery, DiscoveryError, DiscoverySettings, GateError};
use exposition::Exposition;
use histogram::Buckets;

/// Endpoints fetched at once by the whole source; each ScaledObject gets an equal share.
pub const CONCURRENCY: usize = 128;
/// Of those, endpoints not known to answer fast (new or slow) hold at most this many, so fast
/// ones always find a quarter of the slots free.
pub const UNTRUSTED_SLOTS: usize = CONCURRENCY * 3 / 4;
/// And slow ones (timed out, or answered in more than half the timeout) at most this many.
pub const SLOW_SLOTS: usize = CONCURRENCY / 2;
/// An endpoint not named by any ScaledObject sampled for this long is forgotten.
const STANDING_HORIZON_S: f64 = 600.0;
/// Bucket snapshots kept per endpoint and histogram within its latency window: older ones are
/// thinned to a window / `HISTORY_POINTS` spacing, so a window of an hour at a 1 s interval keeps
/// 30 snapshots, not 3,600.
const HISTORY_POINTS: f64 = 30.0;
/// Distinct bucket bounds read from one histogram; one with more is not read (real ones have
/// 10 to 40), so a tenant cannot make every snapshot large.
pub const MAX_BUCKETS: usize = 128;
/// Bytes of bucket snapshots kept, every endpoint together; a snapshot that would go over is not
/// kept (that endpoint's latency is missing until others expire).
const HISTORY_BYTES: usize = 8 << 20;

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

/// What the source remembers of an endpoint between rounds, to hand out fetch slots by.
#[derive(Clone, Copy, Debug)]
struct Record {
    standing: Standing,
    /// Successful fetches in a row.
    streak: u32,
    /// When it was first named (a counter: larger is newer).
    first_seen: u64,
    /// Engine time of the latest sampling that named it.
    seen_at: f64,
}

impl Record {
    /// Its place among the endpoints of its standing (lower first), as the `k`-th endpoint of
    /// its object: fast ones by turn (every object's first endpoint before anyone's second),
    /// then the longest healthy first; new ones newest first, so a flood of new black holes
    /// registered earlier does not stand before a ScaledObject registered now; slow ones that
    /// did answer before those that never do.
    fn rank(&self, k: usize) -> Rank {
        let k = k as u64;
        let veteran = u64::from(u32::MAX - self.streak);
        match self.standing {
            Standing::Fast => (k, veteran),
            Standing::New => (u64::MAX - self.first_seen, k),
            Standing::Slow => (veteran, k),
        }
    }
}

/// Endpoint standings, and the counter that orders first sightings.
#[derive(Default)]
struct Standings {
    by_url: HashMap<String, Record>,
    seen: u64,
}

/// One endpoint's parsed exposition (the metrics its ScaledObjects read); its size stays counted
/// against the budget until the round is done with it.
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

/// Bucket snapshots per (endpoint, histogram base name), and the bytes they take.
#[derive(Default)]
struct History {
    by_key: HashMap<(String, String), Snapshots>,
    bytes: usize,
}

/// Heap bytes of one snapshot, about.
fn snapshot_bytes(buckets: &Buckets) -> usize {
    std::mem::size_of::<(f64, Buckets)>() + 16 + buckets.capacity() * 16
}

fn snapshots_bytes(snapshots: &Snapshots) -> usize {
    snapshots.iter().map(|(_, b)| snapshot_bytes(b)).sum()
}

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
    /// Discovery has not listed the Service's namespace yet (`DiscoveryError::Syncing`).
    syncing: bool,
    /// Pods out of service (`podReadinessGate`) and their URLs: fetched after `urls`, read only
    /// for their requests.
    held: Vec<(String, String, f64)>,
    unapproved: Vec<String>,
    gates_unknown: Option<String>,
}

impl Target {
    /// Every URL to fetch: the ready endpoints', then the pods' out of service.
    fn fetched(&self) -> impl Iterator<Item = &String> {
        self.urls
            .iter()
            .chain(self.held.iter().map(|(_, url, _)| url))
    }
}

pub struct ScrapeSource {
    fetcher: Fetcher,
    discovery: Discovery,
    /// Checked on every discovered URL: anyone who may write EndpointSlices in a namespace can
    /// list any address, and an IP address never reaches the client's policy resolver.
    egress: Arc<crate::egress::EgressPolicy>,
    /// Fetch slots of the whole source, handed out by standing.
    slots: Slots,
    /// ScaledObjects registered for this source (from `retain`), which share the body floors.
    registered: AtomicUsize,
    /// Each ScaledObject's time per round.
    deadline: Duration,
    /// Bucket snapshots per (endpoint, histogram base name), oldest first.
    history: Mutex<History>,
}

/// What a fetch needs, cloned into a task of its own: hundreds of fetches polled by one task
/// would share its cooperative budget, so that a fetch whose answer had arrived could go unpolled
/// until its object's deadline cut it, and parsing would use one worker thread.
#[derive(Clone)]
struct Fetcher {
    client: reqwest::Client,
    budget: BodyBudget,
    standings: Arc<Mutex<Standings>>,
    /// The scrape timeout.
    timeout: Duration,
}

/// One fetch under way: records how the endpoint did when it ends, or when it is cut off.
struct Attempt<'a> {
    fetcher: &'a Fetcher,
    url: &'a str,
    started: Instant,
    done: bool,
}

impl Attempt<'_> {
    fn finish(mut self, result: &Result<Arc<Scraped>, FetchError>) {
        self.done = true;
        let fast = self.started.elapsed() <= self.fetcher.timeout / 2;
        let (standing, ok) = match result {
            Ok(_) => (if fast { Standing::Fast } else { Standing::Slow }, true),
            Err(FetchError::Timeout | FetchError::Body(BodyError::Timeout)) => {
                (Standing::Slow, false)
            }
            Err(_) => (if fast { Standing::Fast } else { Standing::Slow }, false),
        };
        self.fetcher.record(self.url, standing, ok);
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if !self.done {
            // Cut off by its object's deadline while under way.
            self.fetcher.record(self.url, Standing::Slow, false);
        }
    }
}

/// A fetch running as a task of its own, aborted when whoever waits for it gives up (its
/// object's deadline).
struct Task(tokio::task::JoinHandle<Result<Arc<Scraped>, FetchError>>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Future for Task {
    type Output = Result<Arc<Scraped>, FetchError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0)
            .poll(cx)
            .map(|joined| joined.unwrap_or(Err(FetchError::Deadline)))
    }
}

impl Fetcher {
    /// Fetches and parses `url`, keeping the `wanted` metrics, once `ticket` gives it a slot.
    async fn fetch(
        self,
        url: String,
        share: Share,
        wanted: Arc<HashSet<String>>,
        standing: Standing,
        ticket: Ticket,
    ) -> Result<Arc<Scraped>, FetchError> {
        let _slot = ticket.await.ok_or(FetchError::Deadline)?;
        let attempt = Attempt {
            fetcher: &self,
            url: &url,
            started: Instant::now(),
            done: false,
        };
        // A first try holds its slot at most half the timeout: a flood of new black holes frees
        // their slots that often for a new healthy object (ranked first among new ones), which
        // still has the other half of its time. An endpoint slower than that answers from its
        // second round on, as a slow one, with the whole timeout.
        let budget = match standing {
            Standing::New => self.timeout / 2,
            Standing::Fast | Standing::Slow => self.timeout,
        };
        let result = self.fetch_now(&url, &share, &wanted, budget).await;
        attempt.finish(&result);
        result
    }

    async fn fetch_now(
        &self,
        url: &str,
        share: &Share,
        wanted: &Arc<HashSet<String>>,
        budget: Duration,
    ) -> Result<Arc<Scraped>, FetchError> {
        let classify = |e: reqwest::Error| {
            if e.is_timeout() {
                FetchError::Timeout
            } else {
                FetchError::Connect(super::client::describe(&e))
            }
        };
        let resp = self
            .client
            .get(url)
            .timeout(budget)
            .send()
            .await
            .map_err(classify)?;
        if !resp.status().is_success() {
            return Err(FetchError::Status(resp.status().as_u16()));
        }
        let mut parser = exposition::Parser::new(Some(wanted.clone()));
        let held = self.budget.stream(resp, share, &mut parser).await?;
        Ok(Arc::new(Scraped {
            expo: parser.finish(),
            _held: held,
        }))
    }

    /// Notes how `url` did: its standing for the next round, and its streak.
    fn record(&self, url: &str, standing: Standing, ok: bool) {
        let mut standings = self.standings.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = standings.by_url.get_mut(url) {
            r.standing = standing;
            r.streak = if ok { r.streak.saturating_add(1) } else { 0 };
        }
    }
}

impl ScrapeSource {
    /// `client` carries the timeouts and the egress policy (`sources::client::build`).
    pub fn new(client: reqwest::Client, budget: BodyBudget, deadline: Duration) -> Self {
        ScrapeSource {
            fetcher: Fetcher {
                client,
                budget,
                standings: Arc::new(Mutex::new(Standings::default())),
                timeout: deadline,
            },
            slots: Slots::new(CONCURRENCY, UNTRUSTED_SLOTS, SLOW_SLOTS),
            registered: AtomicUsize::new(0),
            deadline,
            discovery: Discovery::new(DiscoverySettings::default()),
            egress: Arc::new(crate::egress::EgressPolicy::default()),
            history: Mutex::new(History::default()),
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

    /// Each spec's endpoints' standings and ranks for this round (`targets[i]` for spec i);
    /// endpoints seen for the first time are `New`, and those no spec named for a while are
    /// forgotten.
    fn standings(&self, targets: &[Target], t: f64) -> Vec<Vec<(Standing, Rank)>> {
        let mut standings = self
            .fetcher
            .standings
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let Standings { by_url, seen } = &mut *standings;
        let out = targets
            .iter()
            .map(|target| {
                // An object's endpoints first seen together share their sighting (specs come
                // oldest registered first), and go by turn among themselves.
                let sighting = *seen + 1;
                let ranked = target
                    .fetched()
                    .enumerate()
                    .map(|(k, url)| {
                        let record = by_url.entry(url.clone()).or_insert_with(|| Record {
                            standing: Standing::New,
                            streak: 0,
                            first_seen: sighting,
                            seen_at: t,
                        });
                        record.seen_at = record.seen_at.max(t);
                        (record.standing, record.rank(k))
                    })
                    .collect();
                *seen = sighting;
                ranked
            })
            .collect();
        by_url.retain(|_, r| r.seen_at >= t - STANDING_HORIZON_S);
        out
    }

    /// Fetches every spec's endpoints (`targets[i]` for spec i), each spec within its share and
    /// deadline, the metrics its signals read (`wanted[i]`) kept.
    async fn fetch_all(&self, targets: &[Target], wanted: &[HashSet<String>], t: f64) -> Scrapes {
        type Cell = OnceCell<Result<Arc<Scraped>, FetchError>>;
        // Per URL: this round's fetch, and the metrics any spec naming it reads.
        let mut round: HashMap<&str, (Arc<Cell>, HashSet<String>)> = HashMap::new();
        for (target, names) in targets.iter().zip(wanted) {
            for url in target.fetched() {
                let (_, all) = round.entry(url).or_default();
                all.extend(names.iter().cloned());
            }
        }
        let round: HashMap<&str, (Arc<Cell>, Arc<HashSet<String>>)> = round
            .into_iter()
            .map(|(url, (cell, names))| (url, (cell, Arc::new(names))))
            .collect();
        let standings = self.standings(targets, t);
        let registered = self.registered.load(Ordering::Relaxed);
        let shares = self.fetcher.budget.shares_among(targets.len(), registered);
        let slots = (CONCURRENCY / targets.len().max(1)).max(1);
        let mut per_spec = Vec::with_capacity(targets.len());
        for ((target, share), standings) in targets.iter().zip(&shares).zip(standings) {
            let round = &round;
            let fetches: Vec<_> = target
                .fetched()
                .zip(standings)
                .map(move |(url, (standing, rank))| async move {
                    let (cell, names) = &round[url.as_str()];
                    cell.get_or_init(|| {
                        // In the queue at once: the round's first fetches all queue while
                        // hand-outs are paused.
                        let ticket = self.slots.ticket(standing, rank);
                        Task(tokio::spawn(self.fetcher.clone().fetch(
                            url.clone(),
                            share.clone(),
                            names.clone(),
                            standing,
                            ticket,
                        )))
                    })
                    .await;
                })
                .collect();
            per_spec.push(async move {
                let all = stream::iter(fetches)
                    .buffer_unordered(slots)
                    .collect::<Vec<()>>();
                let _ = tokio::time::timeout(self.deadline, all).await;
            });
        }
        // Every spec queues its first fetches before any slot is handed out, so the first ones
        // go by standing and rank too, not by which spec was polled first.
        // Unconstrained: this task only waits for the fetch tasks, and a cooperative budget spent
        // on hundreds of them must not keep it from seeing a fetch end before a deadline.
        let mut all = std::pin::pin!(join_all(per_spec));
        let mut paused = Some(self.slots.pause());
        tokio::task::unconstrained(std::future::poll_fn(|cx| {
            let polled = all.as_mut().poll(cx);
            paused = None;
            polled
        }))
        .await;
        round
            .iter()
            .map(|(url, (cell, _))| {
                let result = cell.get().cloned().unwrap_or(Err(FetchError::Deadline));
                (url.to_string(), result)
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
                    let mut allowed = |u: &str| {
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
                    };
                    let (urls, pods) = r
                        .urls
                        .into_iter()
                        .zip(r.pods)
                        .filter(|(u, _)| allowed(u))
                        .unzip();
                    let held = r.held.into_iter().filter(|(_, u, _)| allowed(u)).collect();
                    if let Some(why) = &r.gates_unknown {
                        notes.push(format!(
                            "podReadinessGate: {why}; no pod is drained or let in until then"
                        ));
                    }
                    Target {
                        urls,
                        pods,
                        starting: Some(r.starting),
                        terminating: Some(r.terminating),
                        cold_start_s: r.cold_start_s,
                        note: (!notes.is_empty()).then(|| notes.join("; ")),
                        failed: false,
                        syncing: false,
                        held,
                        unapproved: r.unapproved,
                        gates_unknown: r.gates_unknown,
                    }
                }
                Err(e) => Target {
                    syncing: matches!(e, DiscoveryError::Syncing(_)),
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
        requests: &[SampleRequest],
        targets: &[Target],
        scrapes: &Scrapes,
        t: f64,
    ) {
        let mut history = self.history.lock().unwrap_or_else(|p| p.into_inner());
        let History { by_key, bytes } = &mut *history;
        let mut longest_window = 0.0f64;
        for (SampleRequest { spec, .. }, target) in requests.iter().zip(targets) {
            for signal in &spec.signals {
                let MetricSource::Histogram(base) = &signal.metrics else {
                    continue;
                };
                let window = spec.latency_window_s;
                longest_window = longest_window.max(window);
                for url in &target.urls {
                    let Some(Ok(expo)) = scrapes.get(url) else {
                        continue;
                    };
                    let key = (url.clone(), base.clone());
                    if by_key
                        .get(&key)
                        .and_then(|s| s.back())
                        .is_some_and(|(at, _)| *at >= t)
                    {
                        continue; // Already recorded by another ScaledObject this round.
                    }
                    let buckets = buckets_of(expo, base);
                    if *bytes + snapshot_bytes(&buckets) > HISTORY_BYTES {
                        continue;
                    }
                    let snapshots = by_key.entry(key).or_default();
                    *bytes -= snapshots_bytes(snapshots);
                    snapshots.push_back((t, buckets));
                    // Keep one snapshot older than the window so a full window can be
                    // differenced, and the ones within it spaced a window / HISTORY_POINTS apart
                    // (the newest always kept).
                    while snapshots.len() > 2 && snapshots[1].0 <= t - window {
                        snapshots.pop_front();
                    }
                    let n = snapshots.len();
                    if n >= 3 && snapshots[n - 2].0 - snapshots[n - 3].0 < window / HISTORY_POINTS {
                        snapshots.remove(n - 2);
                    }
                    *bytes += snapshots_bytes(snapshots);
                }
            }
        }
        let horizon = 2.0 * longest_window.max(60.0);
        by_key.retain(|_, s| {
            let keep = s.back().is_some_and(|(at, _)| *at >= t - horizon);
            if !keep {
                *bytes -= snapshots_bytes(s);
            }
            keep
        });
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
        // The newest snapshot at least a window old, else the oldest we have.
        self.increase_from(url, base, t, |snapshots, _| {
            snapshots
                .iter()
                .rev()
                .find(|(at, _)| *at <= t - window_s)
                .or_else(|| snapshots.front())
        })
    }

    /// The observations `url` made since its previous scrape, and the seconds between the two;
    /// None when it was not scraped this round or has no earlier snapshot.
    fn last_increase(&self, url: &str, base: &str, t: f64) -> Option<(histogram::Buckets, f64)> {
        self.increase_from(url, base, t, |snapshots, now_t| {
            snapshots.iter().rev().find(|(at, _)| *at < now_t)
        })
    }

    /// The observations `url` made between the snapshot `older` picks (given all of them and the
    /// newest one's time) and its newest, which must be from this round (`t`).
    fn increase_from(
        &self,
        url: &str,
        base: &str,
        t: f64,
        older: impl for<'a> FnOnce(&'a Snapshots, f64) -> Option<&'a (f64, Buckets)>,
    ) -> Option<(histogram::Buckets, f64)> {
        let history = self.history.lock().unwrap_or_else(|p| p.into_inner());
        let snapshots = history.by_key.get(&(url.to_string(), base.to_string()))?;
        let (now_t, now) = snapshots.back()?;
        if *now_t < t {
            return None; // Not scraped this round.
        }
        let (old_t, old) = older(snapshots, *now_t)?;
        (old_t < now_t).then(|| (histogram::delta(old, now), now_t - old_t))
    }

    /// The p95 of the observations `url` made over the window ending now, if any, in seconds
    /// whatever unit the histogram counts in.
    fn p95(&self, url: &str, base: &str, window_s: f64, t: f64) -> Option<f64> {
        histogram::quantile(0.95, &self.increase(url, base, window_s, t)?.0)
            .map(|q| q * histogram::unit_seconds(base))
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
                // +Inf is a reading too large to count: kept, so the scorer asks for maxReplicas.
                // NaN (or -Inf) says nothing: that pod counts as one that did not report, which
                // never lowers the demand (README, "Fail safe"), and the note names it.
                let mut not_numbers = Vec::new();
                let pods: Vec<Option<f64>> = urls
                    .iter()
                    .map(|url| match scrapes.get(url) {
                        Some(Ok(expo)) => match self.pod_value(signal, url, expo, spec, t) {
                            Some(v) if v.is_nan() || v == f64::NEG_INFINITY => {
                                not_numbers.push(url.as_str());
                                None
                            }
                            v => v,
                        },
                        _ => None,
                    })
                    .collect();
                let reachable: Vec<&Exposition> = urls
                    .iter()
                    .filter_map(|u| scrapes.get(u).and_then(|r| r.as_ref().ok()))
                    .map(|s| &s.expo)
                    .collect();
                let absent = (!reachable.is_empty()
                    && !reachable.iter().any(|e| exposes(e, &signal.metrics)))
                .then(|| {
                    format!(
                        "no reachable endpoint exposes {}",
                        describe(&signal.metrics)
                    )
                });
                let nan = (!not_numbers.is_empty()).then(|| {
                    format!(
                        "{} reported NaN or -Inf for {}, counted as not reporting{}",
                        not_numbers[..not_numbers.len().min(3)].join(", "),
                        describe(&signal.metrics),
                        match not_numbers.len() {
                            n if n > 3 => format!(" (and {} more)", n - 3),
                            _ => String::new(),
                        }
                    )
                });
                let note = match (absent, nan) {
                    (Some(a), Some(b)) => Some(format!("{a}; {b}")),
                    (a, b) => a.or(b),
                };
                SignalReading { pods, note }
            })
            .collect();
        // The latency histogram's increase over the window at every reachable endpoint, read
        // once for the two things it gives; both are unknown unless every reachable endpoint
        // reported it.
        let latency = spec.signals.iter().find_map(|s| match &s.metrics {
            MetricSource::Histogram(base) => Some(base),
            _ => None,
        });
        let increases: Option<Vec<(histogram::Buckets, f64)>> = latency.and_then(|base| {
            let all: Option<Vec<_>> = urls
                .iter()
                .filter(|u| matches!(scrapes.get(*u), Some(Ok(_))))
                .map(|u| self.increase(u, base, spec.latency_window_s, t))
                .collect();
            all.filter(|v| !v.is_empty())
        });
        // Completions per second across the endpoints (each one's `_count` over its span): with
        // the in-flight gauge it gives the service time the backlog model drains with.
        let completions_per_s = increases.as_ref().and_then(|all| {
            all.iter()
                .map(|(delta, span)| Some(delta.last()?.1 / span))
                .sum::<Option<f64>>()
        });
        // Requests that started per second over the last interval only: each endpoint's
        // `_count` between its last two scrapes. Unknown unless every listed endpoint was read
        // at both: one left out would count its requests as never having arrived.
        let first_tokens_per_s = latency.and_then(|base| {
            urls.iter()
                .map(|u| match scrapes.get(u) {
                    Some(Ok(_)) => {
                        let (delta, span) = self.last_increase(u, base, t)?;
                        Some(delta.last()?.1 / span)
                    }
                    _ => None,
                })
                .sum::<Option<f64>>()
                .filter(|_| !urls.is_empty())
        });
        // SLO mode: what the replicas' TTFT histograms say was met over the window, all
        // endpoints' buckets summed (like `sum by (le)`), over the longest span read (a window
        // not yet scraped for its whole length covers less).
        let ttft_within =
            latency
                .zip(spec.objective)
                .zip(increases)
                .and_then(|((base, objective), all)| {
                    let span = all.iter().map(|(_, s)| *s).fold(0.0, f64::max);
                    let merged = histogram::merge(all.into_iter().flat_map(|(b, _)| b));
                    let bound = objective.ttft_s / histogram::unit_seconds(base);
                    let (within, total) = histogram::within(bound, &merged)?;
                    Some(crate::score::Within {
                        within,
                        total,
                        window_s: span,
                    })
                });
        // Pods out of service: requests in service plus waiting, from the same signals the
        // deletion ranking reads; None when the pod could not be read or exports neither.
        let requests = |url: &str| {
            let Some(Ok(page)) = scrapes.get(url) else {
                return None;
            };
            let read = |name: &str| {
                let signal = spec.signals.iter().find(|s| s.name == name)?;
                self.pod_value(signal, url, page, spec, t)
                    .filter(|v| v.is_finite())
            };
            let (n, q) = (
                read(crate::score::composite::INFLIGHT),
                read(crate::score::composite::QUEUE),
            );
            (n.is_some() || q.is_some()).then(|| n.unwrap_or(0.0) + q.unwrap_or(0.0))
        };
        let held = target
            .held
            .iter()
            .map(|(pod, url, out_s)| super::HeldPod {
                pod: pod.clone(),
                requests: requests(url),
                out_s: *out_s,
            })
            .collect();
        Readings {
            signals,
            notes,
            held,
            unapproved: target.unapproved.clone(),
            gates_unknown: target.gates_unknown.clone(),
            failed: target.failed,
            syncing: target.syncing,
            context: crate::score::Context {
                completions_per_s,
                first_tokens_per_s,
                ttft_within,
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
                let scale =
                    if super::prometheus::promql::RATIO_METRICS.contains(&metric.name.as_str()) {
                        100.0
                    } else {
                        1.0
                    };
                // Several GPUs in one pod: their mean is the pod's utilisation.
                let mean = signal.model == DemandModel::Utilisation;
                combine(series.iter().map(|s| s.value * scale), mean)
            }
            MetricSource::Fraction(names) => {
                let (_, series) = first_present(expo, names)?;
                // Several engines in one pod (data parallel): their mean is the pod's use.
                combine(series.iter().map(|s| s.value * 100.0), true)
            }
            MetricSource::Memory(choices) => choices.iter().find_map(|m| memory_percent(expo, m)),
            MetricSource::Histogram(base) => self.p95(url, base, spec.latency_window_s, t),
            // The spec parser accepts PromQL only with source=prometheus.
            MetricSource::Query(_) => None,
        }
    }
}

impl Source for ScrapeSource {
    fn sample<'a>(&'a self, requests: &'a [SampleRequest], t: f64) -> BoxFuture<'a, Vec<Readings>> {
        Box::pin(async move {
            let mut targets = Vec::with_capacity(requests.len());
            for r in requests {
                targets.push(self.target(&r.spec).await);
            }
            let wanted: Vec<HashSet<String>> = requests.iter().map(|r| wanted(&r.spec)).collect();
            let scrapes = self.fetch_all(&targets, &wanted, t).await;
            self.record_histograms(requests, &targets, &scrapes, t);
            requests
                .iter()
                .zip(&targets)
                .map(|(r, target)| self.readings(&r.spec, target, &scrapes, t))
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

    /// Watchers serve the namespaces still read through a Service, and no others; the body
    /// floors are shared among the objects still registered.
    fn set_gates<'a>(
        &'a self,
        spec: &'a ScalerSpec,
        gates: &'a [(String, bool)],
    ) -> BoxFuture<'a, Result<Vec<(String, bool)>, GateError>> {
        Box::pin(async move {
            match &spec.source {
                SourceSpec::Service(svc) => self.discovery.set_gates(svc, gates).await,
                _ => Err(GateError::Api(
                    "podReadinessGate needs service discovery".into(),
                )),
            }
        })
    }

    fn retain(&self, specs: &[Arc<ScalerSpec>]) {
        self.registered.store(specs.len(), Ordering::Relaxed);
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

/// The metric names `spec`'s signals read: all a scrape keeps of a body.
fn wanted(spec: &ScalerSpec) -> HashSet<String> {
    let mut names = HashSet::new();
    for signal in &spec.signals {
        match &signal.metrics {
            MetricSource::Gauge(refs) | MetricSource::Fraction(refs) => {
                names.extend(
                    refs.iter()
                        .filter_map(|r| MetricRef::parse(r))
                        .map(|m| m.name),
                );
            }
            MetricSource::Memory(choices) => {
                for choice in choices {
                    let (a, b) = match choice {
                        MemoryMetrics::UsedTotal { used, total } => (used, total),
                        MemoryMetrics::UsedFree { used, free } => (used, free),
                    };
                    names.extend([a.clone(), b.clone()]);
                }
            }
            MetricSource::Histogram(base) => {
                names.insert(format!("{base}_bucket"));
            }
            MetricSource::Query(_) => {}
        }
    }
    names
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

/// One pod's reading from its series (several GPUs or engines): their sum, or mean. Any +Inf
/// makes it +Inf (more than can be counted); else any NaN or -Inf makes it NaN (no reading).
/// None without series.
fn combine(values: impl Iterator<Item = f64>, mean: bool) -> Option<f64> {
    let (mut sum, mut n, mut infinite, mut not_number) = (0.0, 0usize, false, false);
    for v in values {
        n += 1;
        if v == f64::INFINITY {
            infinite = true;
        } else if !v.is_finite() {
            not_number = true;
        } else {
            sum += v;
        }
    }
    if n == 0 {
        return None;
    }
    Some(if infinite {
        f64::INFINITY
    } else if not_number {
        f64::NAN
    } else if mean {
        sum / n as f64
    } else {
        sum
    })
}

fn sum_of(expo: &Exposition, name: &str) -> Option<f64> {
    combine(expo.get(name).iter().map(|s| s.value), false)
}

/// Memory in use as a percentage of capacity, summed over the pod's devices; +Inf when the use is
/// +Inf, NaN when another count is not a number.
fn memory_percent(expo: &Exposition, metrics: &MemoryMetrics) -> Option<f64> {
    let (used, capacity) = match metrics {
        MemoryMetrics::UsedTotal { used, total } => (sum_of(expo, used)?, sum_of(expo, total)?),
        MemoryMetrics::UsedFree { used, free } => {
            let used = sum_of(expo, used)?;
            (used, used + sum_of(expo, free)?)
        }
    };
    if used == f64::INFINITY {
        return Some(f64::INFINITY);
    }
    if !used.is_finite() || !capacity.is_finite() {
        return Some(f64::NAN);
    }
    (capacity > 0.0).then(|| (used / capacity * 100.0).clamp(0.0, 100.0))
}

/// The histogram's cumulative buckets, merged across label sets; empty (not read) when it has
/// more than `MAX_BUCKETS` distinct bounds.
fn buckets_of(expo: &Exposition, base: &str) -> Buckets {
    let series = expo.get(&format!("{base}_bucket"));
    let buckets = histogram::merge(series.iter().filter_map(|s| {
        let le = s.label("le")?;
        let le = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse().ok()?
        };
        Some((le, s.value))
    }));
    if buckets.len() > MAX_BUCKETS {
        return Buckets::new();
    }
    buckets
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

    #[test]
    fn infinity_outweighs_nan_and_nan_outweighs_numbers() {
        let inf = f64::INFINITY;
        let c = |v: &[f64], mean| combine(v.iter().copied(), mean);
        assert_eq!(c(&[1.0, 3.0], false), Some(4.0));
        assert_eq!(c(&[1.0, 3.0], true), Some(2.0));
        assert_eq!(c(&[1.0, inf], true), Some(inf));
        assert_eq!(c(&[f64::NAN, inf, f64::NEG_INFINITY], false), Some(inf));
        assert!(c(&[1.0, f64::NAN], false).unwrap().is_nan());
        assert!(c(&[1.0, f64::NEG_INFINITY], true).unwrap().is_nan());
        assert_eq!(c(&[], false), None);
        let m = MemoryMetrics::UsedFree {
            used: "u".into(),
            free: "f".into(),
        };
        let memory = |text: &str| memory_percent(&exposition::parse(text), &m);
        assert_eq!(memory("u +Inf\nf 5\n"), Some(inf));
        assert!(memory("u 5\nf NaN\n").unwrap().is_nan());
        assert!(
            memory("u 5\nf +Inf\n").unwrap().is_nan(),
            "no capacity to divide by"
        );
    }

    #[test]
    fn only_the_metrics_signals_read_are_wanted() {
        let spec = crate::fixtures::in_ns(&[
            ("endpoints", "http://127.0.0.1:9/metrics"),
            ("queueTarget", "4"),
            ("queueMetric", "q{model=\"a\"}"),
            ("gpuMemoryTarget", "80"),
            ("latencyTargetMs", "500"),
        ])
        .unwrap();
        let names = wanted(&spec);
        assert!(names.contains("q"), "{names:?}");
        assert!(names.contains("DCGM_FI_DEV_FB_USED"), "{names:?}");
        assert!(names
            .iter()
            .any(|n| n.ends_with("_bucket") && n.starts_with(crate::spec::DEFAULT_LATENCY_METRIC)));
        assert!(!names.iter().any(|n| n.contains('{')), "{names:?}");
    }

    #[test]
    fn histograms_with_too_many_bounds_are_not_read() {
        let mut text = String::new();
        for i in 0..=MAX_BUCKETS {
            text.push_str(&format!("h_bucket{{le=\"{i}\"}} {i}\n"));
        }
        text.push_str("h_bucket{le=\"+Inf\"} 1000\n");
        assert!(buckets_of(&exposition::parse(&text), "h").is_empty());
    }
}
