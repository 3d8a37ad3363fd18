//! The engine: one entry per ScaledObject, a background sampler, and the cached decisions that
//! RPC handlers answer from.
//!
//! Handlers never wait on IO: they look up (or register) an entry and read its latest decision.
//! The sampler reads every registered spec in one batch per source each interval, scores each
//! entry with `score::Scorer`, and publishes the result on the entry's watch channel, which also
//! feeds the StreamIsActive pushes. What it then writes to pods (deletion-cost marks, readiness
//! gates while pods drain) is in `pods`.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use futures_util::future::{join_all, BoxFuture};
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::{watch, Notify};

use serde::{Deserialize, Serialize};

use crate::deletion::DeletionCosts;
use crate::failsafe;
use crate::intake::Rejections;
use crate::restore;
use crate::score::{Decision, Scorer};
use crate::setting;
use crate::sources::client::ClientError;
use crate::sources::{Readings, SampleRequest, SourceKind, SourceSettings, Sources};
use crate::spec::{self, ParseContext, ScalerSpec, SpecError};

mod pods;

use pods::Draining;

/// How often decisions are written to the state file (and once more on shutdown).
const STATE_SAVE_EVERY: Duration = Duration::from_secs(5);
/// Samplings of new objects under way at once; more registrations wait for one to end, and the
/// next takes every object registered meanwhile.
const FIRST_SAMPLINGS: usize = 8;

/// Notes kept per entry and sampling.
const MAX_NOTES: usize = 20;
/// Bytes kept of one note: room for a hint and the Kubernetes API's own message after it (an
/// RBAC denial names the user, verb, resource and namespace), so 20 notes stay near 10 KiB.
const NOTE_BYTES: usize = 512;

/// Engine tuning: top-level keys of the settings file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EngineSettings {
    /// How often every registered ScaledObject is sampled.
    #[serde(
        serialize_with = "setting::duration_text",
        deserialize_with = "sample_interval"
    )]
    pub sample_interval: Duration,
    /// How long the last good decision is served once sampling stops producing data; at least
    /// `sample_interval` (checked with the other settings that depend on each other).
    #[serde(
        serialize_with = "setting::duration_text",
        deserialize_with = "max_staleness"
    )]
    pub max_staleness: Duration,
    /// An entry nobody asked about for this long is dropped.
    #[serde(
        serialize_with = "setting::duration_text",
        deserialize_with = "entry_ttl"
    )]
    pub entry_ttl: Duration,
    /// Upper bound on registered ScaledObjects, so hostile callers cannot exhaust memory.
    #[serde(deserialize_with = "max_entries")]
    pub max_entries: usize,
    /// Where decisions are kept across restarts (`crate::restore`); None: not kept.
    #[serde(
        deserialize_with = "setting::path",
        skip_serializing_if = "Option::is_none"
    )]
    pub state_file: Option<PathBuf>,
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            sample_interval: Duration::from_secs(2),
            max_staleness: Duration::from_secs(60),
            entry_ttl: Duration::from_secs(600),
            max_entries: 16_384,
            state_file: None,
        }
    }
}

fn sample_interval<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    setting::duration(
        d,
        Duration::from_millis(50)..=Duration::from_secs(300),
        "a duration from 50ms to 300s, such as 2s or 500ms",
    )
}

fn max_staleness<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    setting::duration(
        d,
        Duration::from_millis(100)..=Duration::from_secs(86_400),
        "a duration from 100ms to 24h that is at least sample_interval, such as 60s",
    )
}

fn entry_ttl<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    setting::duration(
        d,
        Duration::from_secs(1)..=Duration::from_secs(7 * 86_400),
        "a duration from 1s to 7d, such as 10m",
    )
}

fn max_entries<'de, D: serde::Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    setting::number(d, 1..=10_000_000, "a whole number from 1 to 10000000")
}

/// What identifies an entry: the ScaledObject and its exact metadata. Editing a trigger's
/// metadata creates a new entry; the old one expires unused.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EntryKey {
    pub namespace: String,
    pub name: String,
    metadata: Vec<(String, String)>,
}

impl EntryKey {
    pub fn new(namespace: String, name: String, metadata: HashMap<String, String>) -> Self {
        let mut metadata: Vec<(String, String)> = metadata.into_iter().collect();
        metadata.sort_unstable();
        EntryKey {
            namespace,
            name,
            metadata,
        }
    }

    pub fn metadata(&self) -> HashMap<String, String> {
        self.metadata.iter().cloned().collect()
    }
}

/// Errors of the engine's read path; mapped to gRPC codes in `service.rs` only.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("invalid scalerMetadata: {0}")]
    Spec(#[from] SpecError),
    #[error("metric '{asked}' is not served for {object}; its metricName is '{served}'")]
    UnknownMetric {
        object: String,
        asked: String,
        served: String,
    },
    #[error("no data yet for {object}: first sample pending{notes}")]
    Pending { object: String, notes: String },
    #[error("data for {object} is stale: last good sample {age_s:.1}s ago, maxStaleness is {max_s:.1}s{notes}")]
    Stale {
        object: String,
        age_s: f64,
        max_s: f64,
        notes: String,
    },
    #[error("{count} ScaledObjects are registered, the limit is {limit}; raise max_entries or check for a caller creating ScaledObjects in a loop")]
    TooManyEntries { count: usize, limit: usize },
}

/// When a ScaledObject's metadata changes in a way its source says does not change the demand
/// (`Source::continues`: a per-pod endpoint list following the replica set), the new entry
/// continues the most recently used predecessor's smoothing and activation state instead of
/// starting cold.
fn inherited_scoring(
    sources: &Sources,
    entries: &HashMap<EntryKey, Arc<Entry>>,
    key: &EntryKey,
    spec: &ScalerSpec,
) -> Option<Scoring> {
    let kind = SourceKind::of(&spec.source);
    let source = sources.get(kind)?;
    entries
        .values()
        .filter(|e| e.key.namespace == key.namespace && e.key.name == key.name)
        .filter(|e| SourceKind::of(&e.spec.source) == kind && source.continues(&e.spec, spec))
        .max_by_key(|e| e.last_used_ms.load(Ordering::Relaxed))
        .map(|e| e.scoring.lock().unwrap_or_else(|p| p.into_inner()).clone())
}

/// Readings for a spec whose source kind this engine has no source for: nothing, said plainly.
fn unserved(spec: &ScalerSpec) -> Readings {
    Readings {
        signals: vec![Default::default(); spec.signals.len()],
        notes: vec![format!(
            "this scaler reads no source={} ScaledObjects",
            spec.source.kind()
        )],
        failed: true,
        ..Readings::default()
    }
}

/// The published state of one entry.
#[derive(Clone, Debug, Default)]
pub struct EntryState {
    /// The latest decision made with data; kept through gaps until it is too old.
    pub decision: Option<Arc<Decision>>,
    /// Engine time (seconds) of `decision`.
    pub fresh_at: Option<f64>,
    /// What the latest sampling said about missing data.
    pub notes: Vec<String>,
    /// The latest sampling found the source still waiting for its first view of the pods
    /// (`Readings::syncing`): data may come with the next one.
    pub syncing: bool,
    /// Samplings done, with or without data.
    pub samples: u64,
    /// Replicas starting and terminating at the latest sampling, where the source knows them.
    pub starting: Option<u32>,
    pub terminating: Option<u32>,
    /// Pod deletion costs (`podDeletionCost`): annotation writes acknowledged, and requests
    /// refused (a round stops at its first refusal), so far; the latest attempt's error.
    pub deletion_cost_patches: u64,
    pub deletion_cost_failures: u64,
    pub deletion_cost_error: Option<String>,
    /// Readiness-gate conditions (`podReadinessGate`): writes acknowledged and requests
    /// refused so far; the latest attempt's error.
    pub gate_patches: u64,
    pub gate_failures: u64,
    pub gate_error: Option<String>,
}

/// The scorer and the newest source time it has stepped at (it never steps at or before it, so
/// history read back twice is not counted twice).
#[derive(Clone)]
struct Scoring {
    scorer: Scorer,
    stepped_at: Option<f64>,
}

pub struct Entry {
    pub key: EntryKey,
    pub spec: Arc<ScalerSpec>,
    scoring: Mutex<Scoring>,
    state: watch::Sender<EntryState>,
    last_used_ms: AtomicU64,
    /// The metadata's stable hash (`restore::metadata_hash`), taken once at registration: the
    /// state file names the entry by it on every save.
    metadata_hash: u64,
    /// The decision saved before a restart, a floor until the fresh smoothing reaches it.
    restored: Mutex<Option<restore::Saved>>,
    /// What `podDeletionCost` wrote to the Service's pods, and when (unused without it).
    deletion: Mutex<DeletionCosts>,
    /// `podReadinessGate`'s drain (unused without it).
    draining: Mutex<Draining>,
    /// A sampling of new objects took this one: the first sample is under way.
    first_claimed: AtomicBool,
    /// Registration order: sources see entries oldest first, and rank what they first see in
    /// a round by it (the newest object's new endpoints are tried first).
    seq: u64,
}

impl Entry {
    pub fn object(&self) -> String {
        format!("{}/{}", self.key.namespace, self.key.name)
    }

    pub fn state(&self) -> EntryState {
        self.state.borrow().clone()
    }

    /// The deletion costs written to the Service's pods, when the spec asks for them.
    pub fn deletion_costs(&self) -> Option<BTreeMap<String, i32>> {
        matches!(&self.spec.source, spec::SourceSpec::Service(s) if s.deletion_cost).then(|| {
            self.deletion
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .costs()
                .clone()
        })
    }

    /// The pods taken out of service (`podReadinessGate`) and since when (engine seconds).
    pub fn draining(&self) -> Option<BTreeMap<String, f64>> {
        matches!(&self.spec.source, spec::SourceSpec::Service(s) if s.drain.is_some()).then(|| {
            self.draining
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .drain
                .held()
                .clone()
        })
    }

    /// A receiver that sees every new state; holding one keeps the entry registered.
    pub fn subscribe(&self) -> watch::Receiver<EntryState> {
        self.state.subscribe()
    }
}

pub struct Engine {
    settings: EngineSettings,
    origin: Instant,
    entries: RwLock<HashMap<EntryKey, Arc<Entry>>>,
    sources: Sources,
    /// Wakes the sampler early so a new ScaledObject gets its first decision at once.
    registered: Notify,
    last_round_ms: AtomicU64,
    /// Entries registered so far, for `Entry::seq`.
    registrations: AtomicU64,
    rounds: AtomicU64,
    /// When the sampler loop last showed it was alive (started, or finished a round), plus one.
    alive_ms: AtomicU64,
    /// Metadata maps already refused, so a bad map is not parsed again on every call.
    rejected: Rejections,
    /// Decisions read from the state file at start, taken by entries as they register.
    saved: Mutex<HashMap<(String, String, u64), restore::Saved>>,
}

impl Engine {
    /// An engine with these settings and the production sources. Panics only when the HTTP
    /// client cannot be built, which `try_new` reports instead (an unreadable `egress.ca_file`).
    pub fn new(settings: EngineSettings, sources: &SourceSettings) -> Arc<Self> {
        Engine::try_new(settings, sources).expect("the HTTP client builds")
    }

    /// An engine with these settings and the production sources (`Sources::real`).
    pub fn try_new(
        settings: EngineSettings,
        sources: &SourceSettings,
    ) -> Result<Arc<Self>, ClientError> {
        let sources = Sources::real(sources, settings.sample_interval)?;
        Ok(Engine::with_sources(settings, sources))
    }

    /// An engine reading from these sources; a ScaledObject whose source kind has none gets no
    /// data and says so.
    pub fn with_sources(settings: EngineSettings, sources: Sources) -> Arc<Self> {
        let saved = settings
            .state_file
            .as_deref()
            .map(restore::load)
            .unwrap_or_default();
        Arc::new(Engine {
            sources,
            settings,
            origin: Instant::now(),
            entries: RwLock::new(HashMap::new()),
            registered: Notify::new(),
            last_round_ms: AtomicU64::new(0),
            registrations: AtomicU64::new(0),
            rounds: AtomicU64::new(0),
            alive_ms: AtomicU64::new(0),
            rejected: Rejections::default(),
            saved: Mutex::new(saved),
        })
    }

    /// About the longest one sampling round waits on IO (`Sources::deadline`).
    pub fn sources_deadline(&self) -> Duration {
        self.sources.deadline()
    }

    /// Bytes of response bodies held now (for the chaos benchmark and /metrics).
    pub fn body_bytes_in_use(&self) -> usize {
        self.sources.body_bytes_in_use()
    }

    pub fn settings(&self) -> &EngineSettings {
        &self.settings
    }

    /// Seconds since the engine started: the clock `score` runs on.
    pub fn now(&self) -> f64 {
        self.origin.elapsed().as_secs_f64()
    }

    fn now_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }

    /// The entry for this ScaledObject, registering it on first sight.
    pub fn entry(&self, key: EntryKey) -> Result<Arc<Entry>, EngineError> {
        let now = self.now_ms();
        if let Some(entry) = self.read_entries().get(&key) {
            entry.last_used_ms.store(now, Ordering::Relaxed);
            return Ok(entry.clone());
        }
        // A map refused before is refused again without parsing it.
        let hash = self.rejected.hash(&key);
        if let Some(e) = self.rejected.get(hash) {
            return Err(e.into());
        }
        let ctx = ParseContext {
            namespace: &key.namespace,
            prometheus_address: self.sources.prometheus_address(),
            egress: Some(self.sources.egress()),
        };
        let spec = spec::parse_in(ctx, &key.metadata()).inspect_err(|e| {
            self.rejected.remember(hash, e);
        })?;
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        if let Some(entry) = entries.get(&key) {
            return Ok(entry.clone());
        }
        if entries.len() >= self.settings.max_entries {
            return Err(EngineError::TooManyEntries {
                count: entries.len(),
                limit: self.settings.max_entries,
            });
        }
        let scoring =
            inherited_scoring(&self.sources, &entries, &key, &spec).unwrap_or_else(|| Scoring {
                scorer: Scorer::new(spec.scorer_config()),
                stepped_at: None,
            });
        let metadata_hash = restore::metadata_hash(&key.metadata);
        let restored = self
            .saved
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(key.namespace.clone(), key.name.clone(), metadata_hash));
        let entry = Arc::new(Entry {
            metadata_hash,
            restored: Mutex::new(restored),
            deletion: Mutex::new(DeletionCosts::default()),
            draining: Mutex::new(Draining::for_spec(&spec)),
            first_claimed: AtomicBool::new(false),
            seq: self.registrations.fetch_add(1, Ordering::Relaxed),
            scoring: Mutex::new(scoring),
            spec: Arc::new(spec),
            state: watch::Sender::new(EntryState::default()),
            last_used_ms: AtomicU64::new(now),
            key: key.clone(),
        });
        entries.insert(key, entry.clone());
        drop(entries);
        tracing::info!(object = %entry.object(), signals = entry.spec.signals.len(), "registered ScaledObject");
        self.registered.notify_one();
        Ok(entry)
    }

    /// The decision to answer with, or why there is none worth answering with.
    pub fn current(&self, entry: &Entry) -> Result<Arc<Decision>, EngineError> {
        let state = entry.state.borrow();
        let notes = || {
            if state.notes.is_empty() {
                String::new()
            } else {
                format!(" ({})", state.notes.join("; "))
            }
        };
        let (Some(decision), Some(fresh_at)) = (&state.decision, state.fresh_at) else {
            return Err(EngineError::Pending {
                object: entry.object(),
                notes: notes(),
            });
        };
        let age_s = self.now() - fresh_at;
        let max_s = self.settings.max_staleness.as_secs_f64();
        if age_s > max_s {
            return Err(EngineError::Stale {
                object: entry.object(),
                age_s,
                max_s,
                notes: notes(),
            });
        }
        Ok(decision.clone())
    }

    /// Like `current`, but a new entry's first answer waits (bounded by the sources' longest
    /// deadline) for its first sample instead of failing: KEDA asks right after GetMetricSpec
    /// registered it, and counts an error as a scaler failure.
    pub async fn current_or_wait(&self, entry: &Entry) -> Result<Arc<Decision>, EngineError> {
        if entry.state.borrow().samples == 0 {
            let wait = self.sources.deadline() + Duration::from_millis(500);
            let mut states = entry.subscribe();
            let _ = tokio::time::timeout(wait, states.wait_for(|s| s.samples > 0)).await;
        }
        self.current(entry)
    }

    /// Every registered entry, for the debug page and metrics.
    pub fn entries(&self) -> Vec<Arc<Entry>> {
        let mut all: Vec<Arc<Entry>> = self.read_entries().values().cloned().collect();
        all.sort_by(|a, b| (&a.key.namespace, &a.key.name).cmp(&(&b.key.namespace, &b.key.name)));
        all
    }

    /// One entry per (namespace, ScaledObject, trigger metric): the most recently asked about.
    /// An edited trigger leaves its old entry behind until it expires, and two entries must not
    /// export two series with the same labels.
    pub fn current_entries(&self) -> Vec<Arc<Entry>> {
        let mut newest: HashMap<(&str, &str, &str), Arc<Entry>> = HashMap::new();
        let all = self.entries();
        for e in &all {
            let k = (
                e.key.namespace.as_str(),
                e.key.name.as_str(),
                e.spec.metric_name.as_str(),
            );
            let used = e.last_used_ms.load(Ordering::Relaxed);
            match newest.get(&k) {
                Some(kept) if kept.last_used_ms.load(Ordering::Relaxed) >= used => {}
                _ => {
                    newest.insert(k, e.clone());
                }
            }
        }
        let mut out: Vec<Arc<Entry>> = newest.into_values().collect();
        out.sort_by(|a, b| {
            (&a.key.namespace, &a.key.name, &a.spec.metric_name).cmp(&(
                &b.key.namespace,
                &b.key.name,
                &b.spec.metric_name,
            ))
        });
        out
    }

    pub fn len(&self) -> usize {
        self.read_entries().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn read_entries(&self) -> std::sync::RwLockReadGuard<'_, HashMap<EntryKey, Arc<Entry>>> {
        self.entries.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Time since the sampler last finished a round; None before the first round.
    pub fn since_last_round(&self) -> Option<Duration> {
        (self.rounds.load(Ordering::Relaxed) > 0).then(|| {
            let last = self.last_round_ms.load(Ordering::Relaxed);
            Duration::from_millis(self.now_ms().saturating_sub(last))
        })
    }

    /// Time since the sampler loop last showed it is alive: started, or finished a round. Rounds
    /// are bounded (every fetch and query has a deadline), so this is the scaler's own health,
    /// whatever tenants' endpoints do.
    pub fn since_alive(&self) -> Option<Duration> {
        let alive = self.alive_ms.load(Ordering::Relaxed);
        (alive > 0).then(|| Duration::from_millis(self.now_ms().saturating_sub(alive - 1)))
    }

    fn mark_alive(&self) {
        self.alive_ms.store(self.now_ms() + 1, Ordering::Relaxed);
    }

    /// Engine time (seconds) at which the last round finished.
    pub fn last_round_at(&self) -> f64 {
        self.last_round_ms.load(Ordering::Relaxed) as f64 / 1000.0
    }

    /// Runs the sampler until `shutdown` turns true.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        // Ticks sit half an interval after multiples of the interval on the wall clock, so that
        // replicas sample the same Prometheus grid point each round.
        let period = self.settings.sample_interval;
        let now_unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let phase = Duration::from_nanos(
            ((now_unix.as_nanos() + period.as_nanos() / 2) % period.as_nanos().max(1)) as u64,
        );
        let start = tokio::time::Instant::now() + period.saturating_sub(phase);
        let mut ticker = tokio::time::interval_at(start, period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut saved_at = Instant::now();
        self.mark_alive();
        // The round in progress, and samplings of new objects beside it: a new object is sampled
        // at once, alone, without waiting for the round and without holding it up (registration
        // churn of black-holed objects would otherwise delay every round by their timeouts).
        let mut round: Option<BoxFuture<'_, ()>> = None;
        let mut newcomers = FuturesUnordered::new();
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                () = async { round.as_mut().expect("guarded").await }, if round.is_some() => {
                    round = None;
                    self.expire();
                    if saved_at.elapsed() >= STATE_SAVE_EVERY {
                        self.save_state();
                        saved_at = Instant::now();
                    }
                }
                _ = ticker.tick(), if round.is_none() => {
                    round = Some(Box::pin(self.sample(false)));
                }
                Some(()) = newcomers.next(), if !newcomers.is_empty() => {}
                _ = self.registered.notified(), if newcomers.len() < FIRST_SAMPLINGS => {
                    newcomers.push(self.sample(true));
                }
            }
        }
        self.save_state();
    }

    /// One sampling round: all entries (but those whose first sample is under way), or only
    /// those never sampled, each taken by one such sampling.
    pub async fn sample(&self, only_new: bool) {
        let mut entries: Vec<Arc<Entry>> = self
            .read_entries()
            .values()
            .filter(|e| {
                let first = e.state.borrow().samples == 0;
                if only_new {
                    first && !e.first_claimed.swap(true, Ordering::AcqRel)
                } else {
                    !(first && e.first_claimed.load(Ordering::Acquire))
                }
            })
            .cloned()
            .collect();
        entries.sort_unstable_by_key(|e| e.seq);
        if !entries.is_empty() {
            let t = self.now();
            let readings = self.read_sources(&entries, t).await;
            // Score at the time the readings were taken, not when the slowest fetch returned.
            let mut writes = Vec::new();
            for (entry, readings) in entries.iter().zip(readings) {
                self.score(entry, &readings, t);
                if let Some(w) = self.pod_writes(entry, &readings, t) {
                    writes.push((entry.clone(), w));
                }
            }
            // After every decision is published: KEDA's answers never wait on these writes.
            self.write_pod_writes(writes, t).await;
        }
        if !only_new {
            self.last_round_ms.store(self.now_ms(), Ordering::Relaxed);
            self.rounds.fetch_add(1, Ordering::Relaxed);
        }
        self.mark_alive();
    }

    /// Reads every entry from its source, one batch per source kind, all sources at once.
    async fn read_sources(&self, entries: &[Arc<Entry>], t: f64) -> Vec<Readings> {
        /// The entries of one kind: their places in `entries`, and what is asked for each.
        #[derive(Default)]
        struct Batch {
            idx: Vec<usize>,
            requests: Vec<SampleRequest>,
        }
        let mut batches: BTreeMap<SourceKind, Batch> = BTreeMap::new();
        for (i, e) in entries.iter().enumerate() {
            let batch = batches.entry(SourceKind::of(&e.spec.source)).or_default();
            batch.idx.push(i);
            batch.requests.push(SampleRequest {
                spec: e.spec.clone(),
                last: e
                    .scoring
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .stepped_at,
            });
        }
        let read = batches.iter().map(|(kind, batch)| async move {
            match self.sources.get(*kind) {
                Some(source) => source.sample(&batch.requests, t).await,
                None => batch.requests.iter().map(|r| unserved(&r.spec)).collect(),
            }
        });
        let answers = join_all(read).await;
        let mut out = vec![Readings::default(); entries.len()];
        for (batch, readings) in batches.values().zip(answers) {
            for (&i, r) in batch.idx.iter().zip(readings) {
                out[i] = r;
            }
        }
        out
    }

    fn score(&self, entry: &Entry, readings: &Readings, t: f64) {
        let any_data = readings
            .signals
            .iter()
            .any(|s| s.pods.iter().any(Option::is_some));
        let mut overflowed = Vec::new();
        let decision = {
            let mut scoring = entry.scoring.lock().unwrap_or_else(|p| p.into_inner());
            let after = |at: f64, stepped: Option<f64>| stepped.is_none_or(|s| at > s);
            for (at, values) in &readings.earlier {
                if after(*at, scoring.stepped_at) {
                    scoring.scorer.step(*at, values);
                    scoring.stepped_at = Some(*at);
                }
            }
            let at = readings.at.unwrap_or(t);
            // A failed read with nothing in it is not a step: the gap is read back on recovery.
            if (readings.failed && !any_data) || !after(at, scoring.stepped_at) {
                None
            } else {
                scoring.stepped_at = Some(at);
                // The context carries replicas already starting (capacity on its way) and the
                // completion rate. The scorer turns a reading too large to count into maxReplicas for its signal
                // (and says so); a decision that still comes out not finite asks for the most.
                let d = scoring
                    .scorer
                    .observe(at, &readings.values(), &readings.context);
                overflowed = d
                    .signals
                    .iter()
                    .filter(|s| s.overflow)
                    .map(|s| s.name.clone())
                    .collect();
                Some(if failsafe::untrustworthy(&d) {
                    failsafe::ask_for_max(d, entry.spec.limits.max_replicas)
                } else {
                    d
                })
            }
        };
        let decision = decision.map(|mut d| {
            self.apply_restored(entry, &mut d);
            if !readings.failed {
                Self::plan_drain(entry, readings, t, &mut d);
            }
            d
        });
        let mut notes = readings.notes.clone();
        for name in &overflowed {
            notes.push(format!(
                "{name}: a reading was not finite or the readings' sum overflowed; asking for maxReplicas"
            ));
        }
        for (spec, reading) in entry.spec.signals.iter().zip(&readings.signals) {
            if let Some(note) = &reading.note {
                notes.push(format!("{}: {note}", spec.name));
            }
        }
        if let Some(e) = &entry.state.borrow().deletion_cost_error {
            notes.push(format!("podDeletionCost: {e}"));
        }
        if let Some(e) = &entry.state.borrow().gate_error {
            notes.push(format!("podReadinessGate: {e}"));
        }
        if let Some(until) = entry
            .draining
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .planned
            .as_ref()
            .and_then(|p| p.step.stalled_until)
        {
            notes.push(format!(
                "podReadinessGate: drained pods were not removed within {:.0} s (is the ScaledObject's minReplicaCount above the trigger's minReplicas, or does its HPA have a scale-down window or rate policy?); they are back in service and none is taken out for {:.0} s",
                crate::deletion::LINGER_S,
                (until - t).max(0.0)
            ));
        }
        // Notes carry endpoint errors: a thousand failing endpoints give a bounded list.
        if notes.len() > MAX_NOTES {
            let more = notes.len() - MAX_NOTES;
            notes.truncate(MAX_NOTES);
            notes.push(format!("... and {more} more"));
        }
        for note in &mut notes {
            *note = crate::text::bounded(note, NOTE_BYTES);
        }
        if !notes.is_empty() {
            tracing::debug!(object = %entry.object(), ?notes, "sampling gaps");
        }
        entry.state.send_modify(|state| {
            state.samples += 1;
            state.notes = notes;
            state.syncing = readings.syncing;
            state.starting = readings.context.fleet.starting;
            state.terminating = readings.context.fleet.terminating;
            if let Some(decision) = decision.filter(|d| d.has_data) {
                state.decision = Some(Arc::new(decision));
                state.fresh_at = Some(t);
            }
        });
    }

    /// Holds a decision at the one saved before a restart, decayed, until the fresh smoothing
    /// catches up (see `crate::restore`).
    fn apply_restored(&self, entry: &Entry, decision: &mut Decision) {
        let mut restored = entry.restored.lock().unwrap_or_else(|p| p.into_inner());
        let Some(saved) = restored.as_ref() else {
            return;
        };
        let spec = &entry.spec;
        let held = decision.has_data
            && restore::floor(saved, spec.smoothing.down_half_life_s, restore::unix_now())
                .is_some_and(|floor| {
                    restore::apply(
                        decision,
                        floor,
                        saved.active,
                        spec.activation.deactivate_below,
                        spec.limits.max_replicas,
                    )
                });
        if !held && decision.has_data {
            *restored = None;
        }
    }

    /// Writes every object's current decision to the state file, if one is set.
    pub fn save_state(&self) {
        let Some(path) = &self.settings.state_file else {
            return;
        };
        let now = self.now();
        let unix = restore::unix_now();
        let objects: Vec<restore::Saved> = self
            .current_entries()
            .iter()
            .filter_map(|e| {
                let state = e.state.borrow();
                let d = state.decision.as_ref()?;
                Some(restore::Saved {
                    namespace: e.key.namespace.clone(),
                    name: e.key.name.clone(),
                    metadata: e.metadata_hash,
                    desired: d.desired,
                    active: d.active,
                    at: unix - (now - state.fresh_at?),
                })
            })
            .collect();
        if let Err(e) = restore::save(path, objects) {
            tracing::warn!(path = %path.display(), error = %e, "cannot write the state file");
        }
    }

    /// Drops entries unused for longer than the TTL, unless a stream still watches them.
    fn expire(&self) {
        let now = self.now_ms();
        let ttl = self.settings.entry_ttl.as_millis() as u64;
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        entries.retain(|_, e| {
            let keep = e.state.receiver_count() > 0
                || now.saturating_sub(e.last_used_ms.load(Ordering::Relaxed)) <= ttl;
            if !keep {
                tracing::info!(object = %e.object(), "dropped unused ScaledObject");
            }
            keep
        });
        let mut kept: BTreeMap<SourceKind, Vec<Arc<ScalerSpec>>> = BTreeMap::new();
        for e in entries.values() {
            kept.entry(SourceKind::of(&e.spec.source))
                .or_default()
                .push(e.spec.clone());
        }
        drop(entries);
        // Every source hears, even one left with no ScaledObjects, so it can let go of all.
        for (kind, source) in self.sources.iter() {
            source.retain(kept.get(&kind).map_or(&[], Vec::as_slice));
        }
    }
}

#[cfg(test)]
mod tests;
