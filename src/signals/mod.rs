//! Where numbers come from: every source turns a batch of specs into per-pod readings. All IO of
//! the scaler lives under this module; parsing and aggregation helpers beside it stay pure.

pub mod budget;
pub mod client;
pub mod discovery;
pub mod exposition;
pub mod histogram;
pub mod nvml;
pub mod prometheus;
pub mod promql;
pub mod scrape;

use std::sync::Arc;

use futures_util::future::BoxFuture;

use crate::spec::ScalerSpec;

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
    /// What the source knows beyond the signals: completions per second (from the latency
    /// histogram's count) and, for a discovery source, replicas starting and terminating.
    pub context: crate::score::Context,
}

impl Readings {
    /// Per-signal, per-pod values in the shape `score::Scorer::step` takes.
    pub fn values(&self) -> Vec<Vec<Option<f64>>> {
        self.signals.iter().map(|s| s.pods.clone()).collect()
    }
}

/// A place signals are read from. One call samples a whole batch so that a source can share work
/// between ScaledObjects (one fetch per endpoint, one query per signal kind).
pub trait Source: Send + Sync {
    /// Samples each spec; returns one `Readings` per spec, in order. `t` is the sampling time in
    /// seconds on the engine's clock. `last[i]` is the source time of the newest readings already
    /// scored for `specs[i]` (None for a new ScaledObject); a source that can read history back
    /// returns what lies between as `Readings::earlier`. Must bound its own run time (timeouts on
    /// all IO).
    fn sample<'a>(
        &'a self,
        specs: &'a [Arc<ScalerSpec>],
        last: &'a [Option<f64>],
        t: f64,
    ) -> BoxFuture<'a, Vec<Readings>>;
}
