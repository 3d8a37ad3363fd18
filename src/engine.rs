//! The engine: one entry per ScaledObject, a background sampler, and the cached decisions that
//! RPC handlers answer from.
//!
//! Handlers never wait on IO: they look up (or register) an entry and read its latest decision.
//! The sampler reads every registered spec in one batch per source each interval, scores each
//! entry with `score::Scorer`, and publishes the result on the entry's watch channel, which also
//! feeds the StreamIsActive pushes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::{watch, Notify};

use crate::score::{Decision, Scorer};
use crate::signals::scrape::ScrapeSource;
use crate::signals::{Readings, Source};
use crate::spec::{self, ScalerSpec, SourceSpec, SpecError};

/// Engine tuning, from `Settings`.
#[derive(Clone, Debug, PartialEq)]
pub struct EngineSettings {
    pub sample_interval: Duration,
    pub scrape_timeout: Duration,
    /// How long the last good decision is served once sampling stops producing data.
    pub max_staleness: Duration,
    /// An entry nobody asked about for this long is dropped.
    pub entry_ttl: Duration,
    /// Upper bound on registered ScaledObjects, so hostile callers cannot exhaust memory.
    pub max_entries: usize,
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            sample_interval: Duration::from_secs(2),
            scrape_timeout: Duration::from_secs(1),
            max_staleness: Duration::from_secs(60),
            entry_ttl: Duration::from_secs(600),
            max_entries: 100_000,
        }
    }
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

/// When a ScaledObject's metadata changes only in its endpoint list (a per-pod list following the
/// replica set), the new entry continues the most recently used predecessor's smoothing and
/// activation state instead of starting cold: the service's demand did not change because a pod
/// came or went. Any other change (targets, smoothing, limits) starts afresh.
fn inherited_scorer(
    entries: &HashMap<EntryKey, Arc<Entry>>,
    key: &EntryKey,
    spec: &ScalerSpec,
) -> Option<Scorer> {
    let config = spec.scorer_config();
    entries
        .values()
        .filter(|e| e.key.namespace == key.namespace && e.key.name == key.name)
        .filter(|e| {
            e.spec.signals == spec.signals
                && e.spec.scorer_config() == config
                && e.spec.latency_window_s == spec.latency_window_s
        })
        .max_by_key(|e| e.last_used_ms.load(Ordering::Relaxed))
        .map(|e| e.scorer.lock().unwrap_or_else(|p| p.into_inner()).clone())
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
    /// Samplings done, with or without data.
    pub samples: u64,
}

pub struct Entry {
    pub key: EntryKey,
    pub spec: Arc<ScalerSpec>,
    scorer: Mutex<Scorer>,
    state: watch::Sender<EntryState>,
    last_used_ms: AtomicU64,
}

impl Entry {
    pub fn object(&self) -> String {
        format!("{}/{}", self.key.namespace, self.key.name)
    }

    pub fn state(&self) -> EntryState {
        self.state.borrow().clone()
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
    scrape: ScrapeSource,
    /// Wakes the sampler early so a new ScaledObject gets its first decision at once.
    registered: Notify,
    last_round_ms: AtomicU64,
    rounds: AtomicU64,
}

impl Engine {
    pub fn new(settings: EngineSettings) -> Arc<Self> {
        Arc::new(Engine {
            scrape: ScrapeSource::new(settings.scrape_timeout),
            settings,
            origin: Instant::now(),
            entries: RwLock::new(HashMap::new()),
            registered: Notify::new(),
            last_round_ms: AtomicU64::new(0),
            rounds: AtomicU64::new(0),
        })
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
        let spec = spec::parse(&key.metadata())?;
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
        let scorer = inherited_scorer(&entries, &key, &spec)
            .unwrap_or_else(|| Scorer::new(spec.scorer_config()));
        let entry = Arc::new(Entry {
            scorer: Mutex::new(scorer),
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

    /// Every registered entry, for the debug page and metrics.
    pub fn entries(&self) -> Vec<Arc<Entry>> {
        let mut all: Vec<Arc<Entry>> = self.read_entries().values().cloned().collect();
        all.sort_by(|a, b| (&a.key.namespace, &a.key.name).cmp(&(&b.key.namespace, &b.key.name)));
        all
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

    /// Engine time (seconds) at which the last round finished.
    pub fn last_round_at(&self) -> f64 {
        self.last_round_ms.load(Ordering::Relaxed) as f64 / 1000.0
    }

    /// Runs the sampler until `shutdown` turns true.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut ticker = tokio::time::interval(self.settings.sample_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {
                    self.sample(false).await;
                    self.expire();
                }
                _ = self.registered.notified() => self.sample(true).await,
                _ = shutdown.changed() => break,
            }
        }
    }

    /// One sampling round: all entries, or only those never sampled yet.
    pub async fn sample(&self, only_new: bool) {
        let entries: Vec<Arc<Entry>> = self
            .read_entries()
            .values()
            .filter(|e| !only_new || e.state.borrow().samples == 0)
            .cloned()
            .collect();
        if !entries.is_empty() {
            let t = self.now();
            let specs: Vec<Arc<ScalerSpec>> = entries.iter().map(|e| e.spec.clone()).collect();
            let readings = self.read_sources(&specs, t).await;
            // Score at the time the readings were taken, not when the slowest fetch returned.
            for (entry, readings) in entries.iter().zip(readings) {
                self.score(entry, &readings, t);
            }
        }
        if !only_new {
            self.last_round_ms.store(self.now_ms(), Ordering::Relaxed);
            self.rounds.fetch_add(1, Ordering::Relaxed);
        }
    }

    async fn read_sources(&self, specs: &[Arc<ScalerSpec>], t: f64) -> Vec<Readings> {
        // Every spec is a scrape spec today; other sources batch the same way by kind.
        debug_assert!(specs
            .iter()
            .all(|s| matches!(s.source, SourceSpec::Scrape { .. })));
        self.scrape.sample(specs, t).await
    }

    fn score(&self, entry: &Entry, readings: &Readings, t: f64) {
        let decision = entry
            .scorer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .step(t, &readings.values());
        let mut notes = readings.notes.clone();
        for (spec, reading) in entry.spec.signals.iter().zip(&readings.signals) {
            if let Some(note) = &reading.note {
                notes.push(format!("{}: {note}", spec.name));
            }
        }
        if !notes.is_empty() {
            tracing::debug!(object = %entry.object(), ?notes, "sampling gaps");
        }
        entry.state.send_modify(|state| {
            state.samples += 1;
            state.notes = notes;
            if decision.has_data {
                state.decision = Some(Arc::new(decision));
                state.fresh_at = Some(t);
            }
        });
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
    }
}
