//! SLO mode: capacity sized from the stated objective (time to first token, and the share of
//! requests that must meet it) instead of per-replica targets.
//!
//! Pure and clock-free like the rest of `score/`. The planner keeps a window of the requests in
//! the system (in service + waiting) at each sample, learns what one replica holds and how much
//! of the objective is left for waiting, and answers the smallest capacity at which the requests
//! of that window, replayed through a fluid queue, would have missed the objective no more often
//! than the attainment allows. Why each piece is what it is:
//!
//! - **Demand as an arrival rate, counted.** Where the source counts first tokens (the TTFT
//!   histogram's `_count` between the last two scrapes), the requests that started plus what
//!   the queue gained (less what it lost while draining) are what arrived in that interval.
//!   Otherwise requests in service over the learned service time infer the rate the fleet
//!   serves (Little's law), looser: the service time is averaged over a longer window, and
//!   requests in service lag a burst by a service time. The backlog in sight now is drained
//!   within one horizon (a floor on the answer, with the present rate; a past backlog, long
//!   drained, is not remembered in the window). Without a backlog the present rate is a floor
//!   only on a load rising beyond its noise (`window::Fit::rising`); on a level it is one more
//!   noisy count for the miss budget to judge, or each high count would start a replica, paid
//!   for through its cold start and the HPA's scale-down window. A rate, not a count of
//!   requests in the system, because a replica's service time grows as its batch fills: a
//!   count read at a light load understates what the same arrivals need at full load.
//! - **What one replica serves.** The rate a replica completes while requests wait (it is full)
//!   is the most it serves; the median of those samples is learned. Until one is seen, the
//!   `inflightTarget` over the service time, else the most one replica has been seen to serve.
//! - **The window is the planning horizon.** Capacity asked for now is ready one cold start
//!   later, so the demand to plan for is what the next cold start may bring. The recent past is
//!   the evidence for that: the window spans at least one cold start, and at least `1 / (1 - a)`
//!   samples, the fewest in which a tail of mass `1 - a` is expected to show once at all.
//! - **A miss budget, not a fixed quantile.** A sample's requests miss the objective only if
//!   the capacity is short for long enough that the backlog's wait exceeds what the objective
//!   leaves after the unloaded time to first token (see `miss_fraction`). The capacity is the
//!   smallest whose request-weighted misses over the window are at most `1 - a`: the quantile
//!   follows from the attainment, bursty traffic gets headroom and smooth traffic does not.
//! - **Headroom for what a sample hides.** The fluid plan runs every slot busy at the rate it
//!   plans for; within a sample requests arrive at random, so the requests in the system
//!   fluctuate around the load by its square root. Square-root staffing (Halfin and Whitt)
//!   covers `z(1 - budget)` of that (`sqrt_headroom`), in the slots of a replica seen full
//!   (or `inflightTarget`). Relative to the load it shrinks as the load grows, so a large
//!   smooth fleet holds little; until a replica has been seen full there is none, as the rate
//!   planned with is then what a replica was seen to serve, short of full, and mostly below
//!   what it can (see `replica_rate`).
//! - **... and not twice.** A rate counted over a sample carries the same randomness: a steady
//!   Poisson load reads with a variance of its mean over the sample, and the window's noisiest
//!   sample would be planned for with the square root on top. Where the headroom applies, the
//!   window's samples are first shrunk towards their mean by the share of their variance that
//!   is not counting noise (`denoise`): a steady load plans on its mean, a bursty one keeps its
//!   bursts.
//! - **Capacity goes back when the window does.** No decay: when the last high sample leaves
//!   the window the answer falls at once.
//! - **Unless the bursts recur.** A quiet stretch as long as one that already ended in a burst
//!   is no evidence that the bursts are over: once the last hour has shown two bursts, the
//!   window also spans the longest quiet gap between them and one horizon (`recurrence_s`), so
//!   the capacity the last burst needed is still there when the next one comes. Without a burst
//!   seen twice (smooth load, a single spike) nothing changes.
//! - **A burst seen once is held for its first recurrence.** The recurrence rule needs two
//!   bursts; until then a burst that left the window is planned for only if its coming again,
//!   met with the capacity held, would miss more requests than the hour's budget: then enough is
//!   held that its excess fits (`burst_floor`). The budget grows with the requests served, so
//!   the hold falls as a burst proves rare and goes with it from the hour; smooth load and small
//!   bursts fit the budget and hold nothing, and a window in which nothing arrived holds nothing
//!   either, so an idle service still scales to zero.
//! - **Bursts that keep time are forecast instead.** Where the last hour's bursts start and
//!   end on a period (every start-to-start and end-to-end interval within two samples of it,
//!   `bursts::cycle`) longer than the window, what the same phase of the earlier cycles brought
//!   from now to one horizon and one interval ahead, and the present sample, are the samples
//!   planned for (`same_phase`): capacity goes back between the bursts and is asked for again
//!   in time for the next, instead of held through every gap. The recurrence, the burst floor
//!   and the trend are set aside, and the budget is never widened beyond the one asked for
//!   (the calibration's widening was earned by a plan that held). A burst off the period, or
//!   one overdue, ends the forecast and the rules above apply again: a cycle wrongly read costs
//!   at most the one burst that breaks it. Scheduled jobs keep such periods; conversational
//!   traffic and the code trace never do (none is read there).
//! - **A rising trend is planned ahead.** The window's least-squares slope, where positive, is
//!   carried one cold start forward.
//! - **A falling one is not planned behind.** On a load falling along a line (the evening side
//!   of a daily cycle), the window's oldest samples are its highest, and a window of `1 / (1 -
//!   a)` samples would hold capacity for where the load was minutes ago. Where the slope is
//!   negative beyond its standard error twice over and what the line leaves unexplained is no
//!   more than the samples' counting noise (`Fit::falling_slope`), each sample is moved down to
//!   where the line stands now. Anything else that falls (a burst ending, a step down) leaves more
//!   than noise around a line and keeps the window as it is: that is the shape whose return
//!   the window is there for.
//! - **What was met corrects the model.** The model's readings err (a rate read low, noise read
//!   as demand), and the replicas' TTFT histograms say what the errors cost: the miss budget the
//!   model plans with is scaled by the budget over the misses measured (`calibrate`). Fewer
//!   misses than allowed widen it, more narrow it; it is widened only while the last hour's
//!   misses are under the budget too, so a quiet stretch between bursts does not give away the
//!   capacity the next burst needs. Without enough requests read, it only narrows.
//! - **Misses capacity cannot fix are not counted.** A request that misses the objective while
//!   nothing waits missed by its own size (its prefill alone takes most of the objective); more
//!   replicas would not have helped it. The share of such misses, read at samples where nothing
//!   waited, is taken out of the misses the calibration reads, so the fleet is not grown all
//!   hour against misses it cannot change. It is reported (`quiet_miss_share`).
//!
//! This module holds the planner and its state; the pure pieces it composes live beside it:
//! `queue` (the fluid queue and square-root staffing), `window` (counting noise and the line a
//! window moves along), `bursts` (recurrence, the hold of a burst seen once, and the cycle bursts
//! keep),
//! `calibration` (the miss budget against what was met) and `ready` (the measured cold start).

mod bursts;
mod calibration;
mod queue;
mod ready;
mod window;

use std::collections::VecDeque;

use bursts::{burst_floor, burst_threshold, cycle, recurrence_s, same_phase};
use calibration::{calibrate, EVIDENCE_MISSES, MAX_ALLOWED};
use queue::{slots_for, sqrt_headroom};
pub use ready::ReadyTimer;
use window::denoise;

/// Fewest samples in the window before the planner trusts its own answer: with fewer, a window
/// says nothing about variability (one sample has none, and three cannot tell a burst from a
/// level), so the fail-safe fallback decides.
pub const MIN_SAMPLES: usize = 4;

/// How long learned quantities are remembered, seconds: an hour covers several load cycles of
/// an interactive service, and a redeployed model (new batch size) is re-learned within one.
pub const MEMORY_S: f64 = 3600.0;

/// The longest window, seconds: the window grows as `1 / (1 - a)` samples, which would reach
/// hours at 99.9 % and never give capacity back within a working day.
pub const MAX_WINDOW_S: f64 = 1800.0;

/// What the ScaledObject states.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ObjectiveConfig {
    /// Time-to-first-token objective, seconds.
    pub ttft_s: f64,
    /// Share of requests that must meet it, in (0, 1).
    pub attainment: f64,
    /// Seconds from a replica's creation to readiness, used until the source measures it.
    pub cold_start_s: f64,
    /// Requests one replica holds at once, when the user states it (`inflightTarget`); used
    /// until the planner has seen a replica full. None: learned only.
    pub concurrency: Option<f64>,
}

/// One sample's inputs.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ObjectiveInput {
    /// Requests in service, all reporting replicas together.
    pub inflight: Option<f64>,
    /// Requests waiting, all replicas (or the gateway) together.
    pub queued: Option<f64>,
    /// Replicas that reported requests in service.
    pub reporting: usize,
    /// Mean over replicas of their time-to-first-token quantile, seconds.
    pub ttft_s: Option<f64>,
    /// Cold start measured by the source (first sight not ready -> ready), seconds.
    pub cold_start_s: Option<f64>,
    /// Mean service time learned by Little's law, seconds.
    pub service_s: Option<f64>,
    /// Requests completed per second by all replicas over the source's window.
    pub completions_per_s: Option<f64>,
    /// Requests that reached their first token per second over the last interval (`Context`).
    pub first_tokens_per_s: Option<f64>,
    /// Requests that met the objective, of all, over the source's window (the TTFT histogram).
    pub ttft_within: Option<super::composite::Within>,
}

/// What the planner knows and asks for at one step (shown by `explain` and `/debug`).
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct ObjectiveView {
    pub ttft_objective_s: f64,
    pub attainment: f64,
    /// Replicas asked for (before the fail-safe floor and the replica limits).
    pub desired: Option<f64>,
    /// Requests in the system now (in service + waiting).
    pub in_system: Option<f64>,
    /// Arrival rate read at this step (requests per second), backlog drain included.
    pub arrivals_per_s: Option<f64>,
    /// How it was read: "counted" (first tokens over the last interval plus the queue's
    /// growth) or "in service" (requests in service over the service time, Little's law,
    /// where the source does not count first tokens).
    pub arrivals_from: &'static str,
    /// Requests per second one replica serves, as planned with, and where it came from:
    /// "learned" (the median completion rate of replicas seen full while requests waited),
    /// "inflightTarget" (the target over the service time), or "observed" (the most one replica
    /// was seen to serve, requests in service over the service time). "observed" is mostly
    /// below what a replica can serve, as none was seen full, but not a strict bound: with a
    /// batch filled and nothing waiting it reads above it, the service time being averaged
    /// over lighter batches (4.5 req/s against a true 3.8 on the simulator's Poisson 3). It is
    /// planned with only until a replica is first seen full.
    pub replica_rate: Option<f64>,
    pub replica_rate_from: &'static str,
    /// Samples in which the replicas were seen full (the learned rate's evidence).
    pub full_samples: usize,
    /// Requests one full replica held at once (the median over the full samples), when learned.
    pub full_slots: Option<f64>,
    /// Requests per second planned beyond the fluid plan for the arrivals' randomness within a
    /// sample (`sqrt_headroom`); 0 where a full replica is not known.
    pub headroom_per_s: f64,
    /// The share of the window's variance that is the arrivals' counting noise (a Poisson
    /// count's), taken out of the samples before planning because the headroom covers it
    /// (`denoise`); 0 without headroom.
    pub noise_share: f64,
    /// Requests one replica holds at once for the fallback: `inflightTarget`, else the most seen.
    pub fallback_concurrency: f64,
    /// Seconds of the objective left for waiting after the unloaded time to first token.
    pub wait_budget_s: f64,
    /// Unloaded time to first token learned from samples with nothing waiting, and how many.
    pub unloaded_ttft_s: Option<f64>,
    pub unloaded_samples: usize,
    /// Planning horizon and where it came from ("measured" or "coldStartSeconds").
    pub horizon_s: f64,
    pub horizon_from: &'static str,
    pub window_s: f64,
    pub window_samples: usize,
    /// The longest quiet gap between two bursts in the last hour, when bursts recurred: the
    /// window spans it and one horizon.
    pub recurrence_s: Option<f64>,
    /// The period the last hour's bursts keep (`bursts::cycle`), when they keep one: the plan
    /// is then for what the same phase of the earlier cycles brought over the next horizon, and
    /// the window, the recurrence and the burst floor are set aside.
    pub cycle_s: Option<f64>,
    /// Requests per second held so that a recurrence of the last hour's worst stretch of one
    /// horizon, met with no more, would miss no more requests than the hour's budget
    /// (`burst_floor`); 0 when any stretch fits in the budget.
    pub burst_floor_per_s: f64,
    /// Requests per second the present sample holds as a floor (its rate, the trend and the
    /// backlog's drain), and why: "requests waiting" or "rising" (the window's slope beyond
    /// twice its standard error, `window::Fit::rising`). 0 and "" on a level with nothing waiting,
    /// where the present count is one more sample for the miss budget to judge.
    pub present_floor_per_s: f64,
    pub present_floor_from: &'static str,
    /// Requests per second the window's rising trend adds over one horizon.
    pub trend_per_s: f64,
    /// Requests per second per second the load falls along a line (`Fit::falling_slope`; 0 when
    /// it does not): each of the window's samples is lowered to where the line stands now.
    pub falling_per_s2: f64,
    /// False until the window holds `MIN_SAMPLES` and a service time is known: the fail-safe
    /// fallback (requests in the system over what one replica holds) then floors the answer.
    pub trusted: bool,
    /// What the replicas' TTFT histogram says was met: the share of requests within the
    /// objective over the source's window (and how many requests, over how many seconds), and
    /// over the last hour. Reported, not planned with: it shows whether the plan keeps the
    /// promise, which the planner's own model cannot tell.
    pub met_recently: Option<f64>,
    pub met_recently_requests: f64,
    pub met_recently_s: f64,
    pub met_last_hour: Option<f64>,
    pub met_last_hour_requests: f64,
    /// The miss share the model planned with: the budget (`1 - attainment`) as calibrated by
    /// what was met (`calibrate`).
    pub planned_miss_share: f64,
    /// The share of requests that missed the objective while nothing waited (at both ends of
    /// the interval), over the last hour: prompts too long for the objective at any scale. Not
    /// counted against the budget by the calibration. None until enough were read.
    pub quiet_miss_share: Option<f64>,
}

/// The planner's state for one ScaledObject.
#[derive(Clone, Debug)]
pub struct Planner {
    config: ObjectiveConfig,
    /// (time, arrival rate) over the window.
    samples: VecDeque<(f64, f64)>,
    /// (time, arrival rate) over `MEMORY_S`, for the bursts' recurrence.
    history: VecDeque<(f64, f64)>,
    /// (time, rate per replica, requests in service per replica when read) at samples where
    /// requests waited: replicas were full, and held as many requests as they have slots.
    full: VecDeque<(f64, f64, Option<f64>)>,
    /// (time, mean per-replica time to first token) at samples where nothing waited.
    unloaded: VecDeque<(f64, f64)>,
    /// (time, rate per replica) at every sample with load.
    observed_rate: VecDeque<(f64, f64)>,
    /// (time, requests within the objective, all requests) new at each sample: each reading's
    /// window counts in proportion to the part of it since the previous sample, so overlapping
    /// windows are not counted twice.
    met: VecDeque<(f64, f64, f64)>,
    /// The same, at samples where nothing waited at either end of the interval.
    quiet_met: VecDeque<(f64, f64, f64)>,
    /// (time, requests in service per replica) at every sample with load.
    observed_inflight: VecDeque<(f64, f64)>,
    /// The previous sample: (time, requests waiting).
    last: Option<(f64, Option<f64>)>,
    /// Interval between samples, seconds, as last seen.
    interval_s: f64,
    /// The calibration: what the miss budget is multiplied by (`calibrate`).
    budget_scale: f64,
}

impl Planner {
    pub fn new(config: ObjectiveConfig) -> Self {
        Planner {
            config,
            samples: VecDeque::new(),
            history: VecDeque::new(),
            full: VecDeque::new(),
            unloaded: VecDeque::new(),
            observed_rate: VecDeque::new(),
            met: VecDeque::new(),
            quiet_met: VecDeque::new(),
            observed_inflight: VecDeque::new(),
            last: None,
            interval_s: 15.0,
            budget_scale: 1.0,
        }
    }

    pub fn config(&self) -> &ObjectiveConfig {
        &self.config
    }

    /// The window: at least one horizon and `1 / (1 - a)` sampling intervals, at most
    /// `MAX_WINDOW_S`.
    pub fn window_s(&self, horizon_s: f64) -> f64 {
        let tail = self.interval_s / (1.0 - self.config.attainment).max(1e-6);
        horizon_s.max(tail).min(MAX_WINDOW_S)
    }

    /// Records one sample and answers the replicas the objective needs.
    pub fn observe(&mut self, t: f64, input: &ObjectiveInput) -> ObjectiveView {
        let previous = self.last.filter(|(at, _)| t > *at);
        if let Some((at, _)) = previous {
            self.interval_s = (t - at).clamp(1.0, 300.0);
        }
        self.last = Some((t, input.queued.filter(|q| q.is_finite())));
        let cfg = self.config;
        let (horizon_s, horizon_from) = match input.cold_start_s.filter(|v| v.is_finite()) {
            Some(h) => (h.clamp(0.0, 3600.0), "measured"),
            None => (cfg.cold_start_s, "coldStartSeconds"),
        };
        let within = input.ttft_within.filter(|w| {
            w.within.is_finite() && w.total.is_finite() && w.total > 0.0 && w.window_s > 0.0
        });
        if let Some(w) = within {
            let new = match previous {
                Some((at, _)) => ((t - at) / w.window_s).min(1.0),
                None => 1.0,
            };
            self.met.push_back((t, w.within * new, w.total * new));
            let quiet = |q: Option<f64>| q.is_some_and(|q| q.is_finite() && q < 1.0);
            if quiet(input.queued) && previous.is_some_and(|(_, q)| quiet(q)) {
                self.quiet_met.push_back((t, w.within * new, w.total * new));
            }
        }
        forget(&mut self.quiet_met, t - MEMORY_S, |r| r.0);
        forget(&mut self.met, t - MEMORY_S, |r| r.0);
        let (hour_within, hour_total) = self
            .met
            .iter()
            .fold((0.0, 0.0), |(a, b), &(_, w, n)| (a + w, b + n));
        let allowed = 1.0 - cfg.attainment;
        let (quiet_within, quiet_total) = self
            .quiet_met
            .iter()
            .fold((0.0, 0.0), |(a, b), &(_, w, n)| (a + w, b + n));
        // Requests that missed while nothing waited missed by their own size (a prompt whose
        // prefill takes most of the objective), and more replicas would not have helped them:
        // their share is taken out of the misses the calibration reads, or a fleet would be
        // grown all hour against misses it cannot change. Until enough quiet requests were
        // read to tell (the calibration's own evidence), every miss counts.
        let quiet_miss_share = (quiet_total >= EVIDENCE_MISSES / allowed.max(1e-6))
            .then(|| ((quiet_total - quiet_within) / quiet_total).clamp(0.0, 1.0));
        let structural = quiet_miss_share.unwrap_or(0.0);
        let capacity_met: VecDeque<(f64, f64, f64)> = self
            .met
            .iter()
            .map(|&(at, w, n)| (at, (w + structural * n).min(n), n))
            .collect();
        self.budget_scale = calibrate(
            self.budget_scale,
            &capacity_met,
            allowed,
            // Only a reading new at this step moves the scale: stale evidence says nothing new.
            match (previous, within) {
                (Some((at, _)), Some(_)) => t - at,
                _ => 0.0,
            },
            self.window_s(horizon_s),
        );
        let planned_miss_share = (allowed * self.budget_scale).min(MAX_ALLOWED);
        let unreadable = |v: Option<f64>| v.is_some_and(|v| !v.is_finite());
        let overflow = unreadable(input.inflight) || unreadable(input.queued);
        let inflight = input.inflight.filter(|v| v.is_finite()).map(|v| v.max(0.0));
        let queued = input.queued.filter(|v| v.is_finite()).map(|v| v.max(0.0));
        let in_system = match (inflight, queued) {
            (None, None) => None,
            (n, q) => Some(n.unwrap_or(0.0) + q.unwrap_or(0.0)),
        };
        let pods = input.reporting as f64;
        let service_s = input.service_s.filter(|s| s.is_finite() && *s > 0.0);
        let waiting = queued.is_some_and(|q| q >= 1.0);
        // The rate the fleet serves (Little's law), what a growing queue adds, and the backlog
        // drained within one horizon (capacity asked for now is ready then).
        // With no replica reporting (scaled to zero) but a queue in sight, nothing is served:
        // what arrives is what the queue gains, and the fleet must be woken for it.
        let serving = inflight.or(queued.map(|_| 0.0));
        let service_for_rate = match serving {
            Some(n) if n <= 0.0 => Some(service_s.unwrap_or(1.0)),
            _ => service_s,
        };
        // The backlog's drain is kept apart: it is asked for now, but a sample that remembers it
        // would keep asking for a backlog long drained.
        let drain_now = queued.unwrap_or(0.0) / horizon_s.max(self.interval_s);
        // What the queue gained since the last sample, per second; negative while it drains.
        let grew = match previous {
            Some((at, Some(q0))) => (queued.unwrap_or(0.0) - q0) / (t - at),
            _ => 0.0,
        };
        // Arrivals counted where the source counts first tokens: every request that arrived
        // either started or is still waiting, so what arrived is what started plus what the
        // queue gained (conservation). Signed: while a backlog drains, what started includes
        // the requests that arrived before (counted then, as the queue's gain), and a gain
        // clipped at zero would count them twice: once as they queued and again as they
        // started, a sample as high as the burst plus its backlog, which the window and the
        // hour's burst memory would then hold capacity for. A queue that shrinks without its
        // requests starting (given up on, or a pod gone with its queue) reads one sample low;
        // the window's other samples decide, and a backlog still in sight is drained whatever
        // the sample says. Requests in service over the service time infer the same thing more
        // loosely: the service time is averaged over a longer window, and the in-service count
        // lags a burst by a service time.
        let counted = input
            .first_tokens_per_s
            .filter(|f| f.is_finite() && *f >= 0.0);
        let rate = match (counted, serving, service_for_rate) {
            (Some(f), _, _) => Some(f),
            (None, Some(n), Some(s)) => Some(n / s),
            _ => None,
        }
        .map(|started| (started + grew).max(0.0));
        let arrivals = rate.map(|r| r + drain_now);
        if let (Some(n), Some(s)) = (inflight, service_s) {
            if pods > 0.0 && n > 0.0 {
                self.observed_rate.push_back((t, n / s / pods));
            }
        }
        // Replicas full (requests waited): what they completed is the most they serve. The
        // completion rate itself, not requests in service over the service time: the service
        // time is averaged over a window that reaches back to lighter batches, which are faster.
        let completions = input
            .completions_per_s
            .filter(|c| c.is_finite() && *c > 0.0);
        if let (Some(c), true) = (completions, waiting && pods > 0.0) {
            let slots = inflight.filter(|n| *n > 0.0).map(|n| n / pods);
            self.full.push_back((t, c / pods, slots));
        }
        if let Some(n) = inflight.filter(|n| *n > 0.0 && pods > 0.0) {
            self.observed_inflight.push_back((t, n / pods));
        }
        if let Some(ttft) = input.ttft_s.filter(|v| v.is_finite() && *v >= 0.0) {
            if !waiting && queued.is_some() {
                self.unloaded.push_back((t, ttft));
            }
        }
        if let Some(a) = rate {
            self.samples.push_back((t, a));
            self.history.push_back((t, a));
        }
        forget(&mut self.history, t - MEMORY_S, |r| r.0);
        let threshold = burst_threshold(&self.history);
        let recurrence_s =
            threshold.and_then(|h| recurrence_s(&self.history, h, self.interval_s, horizon_s));
        let window_s = match recurrence_s {
            Some(gap) => self
                .window_s(horizon_s)
                .max((gap + horizon_s).min(MAX_WINDOW_S)),
            None => self.window_s(horizon_s),
        };
        // Bursts that keep a period are forecast from the same phase of the earlier cycles, from
        // now to one horizon and one interval ahead (capacity asked for now is ready a horizon
        // after the HPA acts on it, up to one interval later) with the cycle's margin either
        // side, and the present sample: held while the phase brought bursts and asked for again
        // that long before it does, instead of held through every gap. A period within the
        // window is held by the window already, and starts and ends that flicker about the
        // threshold (a load crossing it slowly) repeat at a sample or two: only a period longer
        // than the window is a cycle to forecast.
        let cycle = threshold
            .and_then(|h| cycle(&self.history, h, self.interval_s, t))
            .filter(|c| c.period_s > self.window_s(horizon_s));
        let forecast = cycle.and_then(|c| {
            let mut f = same_phase(&self.history, c, t, horizon_s + self.interval_s);
            // At least one earlier phase seen whole, or the forecast knows nothing yet.
            let whole = ((horizon_s + 2.0 * c.margin_s) / self.interval_s).floor() as usize;
            (f.len() >= whole.max(1)).then(|| {
                f.extend(rate);
                f
            })
        });
        let cycle_s = forecast.as_ref().and(cycle.map(|c| c.period_s));
        // A forecast is planned with the budget asked for, never wider: the calibration widens
        // it on the evidence of a plan that held every burst's capacity through the gaps, which
        // says nothing of one that gives it back between them and must meet each burst on time.
        let planned_miss_share = match forecast {
            Some(_) => planned_miss_share.min(allowed),
            None => planned_miss_share,
        };
        for (q, keep) in [
            (&mut self.samples, window_s),
            (&mut self.unloaded, MEMORY_S),
            (&mut self.observed_rate, MEMORY_S),
            (&mut self.observed_inflight, MEMORY_S),
        ] {
            forget(q, t - keep, |r| r.0);
        }

        // What one replica serves. The median of the full samples: one read while a pod was
        // leaving (completions of more pods over fewer) must not raise it.
        forget(&mut self.full, t - MEMORY_S, |r| r.0);
        let learned = median(self.full.iter().map(|&(_, v, _)| v).collect());
        let (replica_rate, replica_rate_from) = match (learned, cfg.concurrency, service_s) {
            (Some(r), _, _) => (Some(r), "learned"),
            (None, Some(c), Some(s)) => (Some(c / s), "inflightTarget"),
            _ => (max_of(&self.observed_rate), "observed"),
        };
        let fallback_concurrency = cfg
            .concurrency
            .unwrap_or_else(|| max_of(&self.observed_inflight).unwrap_or(1.0))
            .max(1.0);
        // The unloaded time to first token: the median of the samples with nothing waiting (the
        // median, because a quantile per replica already holds the long prompts' tail).
        let unloaded_ttft = median(self.unloaded.iter().map(|&(_, v)| v).collect());
        // What the objective leaves for waiting. Until the unloaded time is known, half the
        // objective: a smaller budget asks for more replicas, never fewer.
        let wait_budget_s = match unloaded_ttft {
            Some(u) => (cfg.ttft_s - u).max(0.0),
            None => cfg.ttft_s / 2.0,
        };
        // How long a full replica holds a request: its slots over its rate, where a full replica
        // is known (seen full, or `inflightTarget` over the service time). A rate only observed
        // is mostly below what a replica serves, so a plan with it mostly holds headroom
        // already, and its slots are unknown: no square-root headroom then.
        let full_slots = median(self.full.iter().filter_map(|&(_, _, n)| n).collect());
        let hold_s = match (replica_rate_from, replica_rate) {
            ("learned", Some(r)) if r > 0.0 => full_slots.map(|c| c / r),
            ("inflightTarget", _) => service_s,
            _ => None,
        }
        .filter(|h| h.is_finite() && *h > 0.0);
        // The window's line, fitted once: its trend, its fall and its rise are read from it.
        let line = window::fit(&self.samples);
        let trend_per_s = match (&forecast, &line) {
            (None, Some(l)) => l.positive_slope() * horizon_s,
            _ => 0.0,
        };
        let mut falling_per_s2 = 0.0;
        let trusted = self.samples.len() >= MIN_SAMPLES && service_s.is_some();
        let mut headroom_per_s = 0.0;
        // A window in which nothing arrived is an idle service: it may go to zero (KEDA's
        // activation and cooldown decide), and a burst met from zero is what a service that
        // allows zero replicas has chosen. The hold is for a fleet still serving.
        let idle = self.samples.iter().all(|&(_, v)| v <= 0.0);
        let burst_floor_per_s = if idle || forecast.is_some() {
            0.0
        } else {
            burst_floor(
                &self.history.iter().map(|&(_, v)| v).collect::<Vec<f64>>(),
                allowed,
                horizon_s,
                self.interval_s,
            )
        };
        let mut noise_share = 0.0;
        let mut present_floor_per_s = 0.0;
        let mut present_floor_from = "";
        // The span over which one sample's rate was counted: the interval where first tokens
        // are counted; the service time where requests in service infer it (a count of
        // requests in service is a Poisson count of the arrivals over one service time).
        let noise_horizon_s = match counted {
            Some(_) => Some(self.interval_s),
            None => service_s,
        };
        let desired = if overflow {
            Some(f64::INFINITY)
        } else {
            match replica_rate.filter(|r| *r > 0.0) {
                Some(r) if !self.samples.is_empty() => {
                    let rates: Vec<f64> = match &forecast {
                        Some(f) => f.clone(),
                        None => self.samples.iter().map(|&(_, v)| v).collect(),
                    };
                    // Where the headroom covers the arrivals' randomness, the window's spread
                    // is stripped of it first: counted twice, a smooth load would be planned
                    // for its noisiest sample and the square root on top.
                    let rates = match (hold_s, noise_horizon_s) {
                        (Some(_), Some(tau)) => {
                            let (rates, share) = denoise(&rates, tau);
                            noise_share = share;
                            rates
                        }
                        _ => rates,
                    };
                    let demand: Vec<f64> = if forecast.is_some() {
                        // The forecast is already where the load will be: no trend, no line.
                        rates.iter().map(|v| v.max(0.0)).collect()
                    } else {
                        if let (Some(tau), Some(l)) = (noise_horizon_s, &line) {
                            falling_per_s2 = l.falling_slope(tau);
                        }
                        rates
                            .iter()
                            .zip(&self.samples)
                            .map(|(v, &(at, _))| {
                                (v + trend_per_s - falling_per_s2 * (t - at)).max(0.0)
                            })
                            .collect()
                    };
                    // The present sample is a floor, not one more sample the miss budget could
                    // skip, only where it says more than the window's others: a backlog in
                    // sight (drained within the horizon whatever the window says), or a load
                    // rising beyond its noise (`rising`: the newest sample is then the best
                    // evidence of what comes, and a budget that skipped it would lag a ramp).
                    // Otherwise it is one more count of a level, as noisy as the rest: a floor
                    // at it would scale a steady load up at each high count, each time paying
                    // for a replica through its cold start and the HPA's scale-down window
                    // (five minutes by default).
                    present_floor_from = if waiting {
                        "requests waiting"
                    } else if line.as_ref().is_some_and(|l| l.rising()) {
                        "rising"
                    } else {
                        ""
                    };
                    present_floor_per_s = match rate {
                        Some(r) if !present_floor_from.is_empty() => r + trend_per_s + drain_now,
                        _ => 0.0,
                    };
                    let served =
                        slots_for(&demand, planned_miss_share, wait_budget_s, self.interval_s)
                            .max(burst_floor_per_s);
                    headroom_per_s =
                        hold_s.map_or(0.0, |h| sqrt_headroom(served, h, planned_miss_share));
                    Some((served + headroom_per_s).max(present_floor_per_s) / r)
                }
                _ => None,
            }
        };
        ObjectiveView {
            ttft_objective_s: cfg.ttft_s,
            attainment: cfg.attainment,
            desired,
            in_system,
            arrivals_per_s: arrivals,
            arrivals_from: match (rate, counted) {
                (None, _) => "",
                (Some(_), Some(_)) => "counted",
                (Some(_), None) => "in service",
            },
            replica_rate,
            replica_rate_from,
            full_samples: self.full.len(),
            full_slots: full_slots.filter(|_| replica_rate_from == "learned"),
            headroom_per_s,
            noise_share,
            fallback_concurrency,
            wait_budget_s,
            unloaded_ttft_s: unloaded_ttft,
            unloaded_samples: self.unloaded.len(),
            horizon_s,
            horizon_from,
            window_s,
            window_samples: self.samples.len(),
            recurrence_s,
            cycle_s,
            burst_floor_per_s,
            present_floor_per_s,
            present_floor_from,
            trend_per_s,
            falling_per_s2,
            trusted,
            met_recently: within.map(|w| (w.within / w.total).clamp(0.0, 1.0)),
            met_recently_requests: within.map_or(0.0, |w| w.total),
            met_recently_s: within.map_or(0.0, |w| w.window_s),
            met_last_hour: (hour_total > 0.0).then(|| (hour_within / hour_total).clamp(0.0, 1.0)),
            met_last_hour_requests: hour_total,
            planned_miss_share,
            quiet_miss_share,
        }
    }
}

/// Drops the records of `q` (oldest first) taken at or before `before`, by their time `at`.
fn forget<T>(q: &mut VecDeque<T>, before: f64, at: impl Fn(&T) -> f64) {
    while q.front().is_some_and(|r| at(r) <= before) {
        q.pop_front();
    }
}

fn max_of(q: &VecDeque<(f64, f64)>) -> Option<f64> {
    q.iter().map(|&(_, v)| v).reduce(f64::max)
}

fn median(mut xs: Vec<f64>) -> Option<f64> {
    if xs.is_empty() {
        return None;
    }
    xs.sort_by(f64::total_cmp);
    Some(xs[xs.len() / 2])
}

/// Test samples every 15 s: `rate(i)` plus a deterministic wobble of `amplitude` (alternating
/// sign), the way a count over 15 s scatters about its level. Shared by the planner's tests and
/// `window`'s.
#[cfg(test)]
fn series(n: usize, amplitude: f64, rate: impl Fn(usize) -> f64) -> VecDeque<(f64, f64)> {
    (0..n)
        .map(|i| {
            let sign = if i % 2 == 0 { 1.0 } else { -1.0 };
            (i as f64 * 15.0, rate(i) + sign * amplitude)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> ObjectiveConfig {
        ObjectiveConfig {
            ttft_s: 2.0,
            attainment: 0.95,
            cold_start_s: 60.0,
            concurrency: Some(6.0),
        }
    }

    /// A sample of `pods` replicas with `inflight` in service, `queued` waiting, a service time
    /// of 2 s and completions of `inflight / 2` per second.
    fn input(inflight: f64, queued: f64, pods: usize, ttft: f64) -> ObjectiveInput {
        ObjectiveInput {
            inflight: Some(inflight),
            queued: Some(queued),
            reporting: pods,
            ttft_s: Some(ttft),
            cold_start_s: None,
            service_s: Some(2.0),
            completions_per_s: Some(inflight / 2.0),
            first_tokens_per_s: None,
            ttft_within: None,
        }
    }

    #[test]
    fn counted_first_tokens_read_the_arrivals_and_headroom_needs_a_full_replica() {
        let mut p = Planner::new(ObjectiveConfig {
            concurrency: None,
            ..cfg()
        });
        // Requests in service say 3 requests/s (6 over 2 s), but 9 started per second: 9
        // arrived per second, with nothing waiting.
        p.observe(0.0, &input(6.0, 0.0, 1, 0.3));
        let v = p.observe(
            15.0,
            &ObjectiveInput {
                first_tokens_per_s: Some(9.0),
                ..input(6.0, 0.0, 1, 0.3)
            },
        );
        assert_eq!(v.arrivals_from, "counted");
        assert_eq!(v.arrivals_per_s, Some(9.0));
        // A count that is not a number is not read: requests in service decide.
        let v = p.observe(
            30.0,
            &ObjectiveInput {
                first_tokens_per_s: Some(f64::NAN),
                ..input(6.0, 0.0, 1, 0.3)
            },
        );
        assert_eq!(v.arrivals_from, "in service");
        assert_eq!(v.arrivals_per_s, Some(3.0));
        // No replica seen full and no inflightTarget: the rate is only observed, no headroom.
        assert_eq!(v.replica_rate_from, "observed");
        assert_eq!((v.headroom_per_s, v.full_slots), (0.0, None));
        // Seen full (requests waited) with 8 in service each: 8 slots, and headroom follows.
        // The queue grew by 3 over 15 s: what started and what it gained arrived.
        let v = p.observe(
            45.0,
            &ObjectiveInput {
                first_tokens_per_s: Some(8.0),
                ..input(16.0, 3.0, 2, 2.5)
            },
        );
        assert_eq!(v.arrivals_per_s, Some(8.0 + 3.0 / 15.0 + 3.0 / 60.0));
        assert_eq!(v.replica_rate_from, "learned");
        assert_eq!(v.full_slots, Some(8.0));
        assert!(v.headroom_per_s > 0.0, "{v:?}");
        // With headroom, the window's spread is stripped of counting noise: three counted
        // samples of 9, 3 and 8.25 req/s spread far more than a count over 15 s would (the
        // arrivals moved), so most of the spread is kept, but not all.
        assert!(v.noise_share > 0.0 && v.noise_share < 0.5, "{v:?}");
    }

    #[test]
    fn a_load_falling_along_a_line_is_planned_where_it_is_not_where_it_was() {
        // 50 minutes at 40 req/s, then counted arrivals falling by 0.5 per sample, replicas
        // learned full at 8 req/s each: the plan follows the line down instead of holding the
        // window's oldest, and highest, samples. (The long plateau makes the hour's budget
        // large enough that the early stretch need not be held: `burst_floor` stays out.)
        let mut p = Planner::new(cfg());
        let mut last = ObjectiveView::default();
        let load = series(240, 1.0, |i| 40.0 - 0.5 * i.saturating_sub(200) as f64);
        for (i, &(t, rate)) in load.iter().enumerate() {
            let waited = if i == 0 { 2.0 } else { 0.0 };
            last = p.observe(
                t,
                &ObjectiveInput {
                    first_tokens_per_s: Some(rate),
                    completions_per_s: Some(8.0 * 6.0),
                    ..input(48.0, waited, 6, 0.3)
                },
            );
        }
        assert!((last.falling_per_s2 - 0.5 / 15.0).abs() < 0.005, "{last:?}");
        assert_eq!(last.burst_floor_per_s, 0.0, "{last:?}");
        // Now at 20.5 req/s; the window (20 samples, 300 s) began at 30. Planned with the
        // window as read, about 27 req/s; lowered to the line, about the level now.
        let planned = last.desired.unwrap() * last.replica_rate.unwrap() - last.headroom_per_s;
        assert!(planned < 23.0, "{planned} req/s planned: {last:?}");
    }

    #[test]
    fn the_planner_falls_back_until_it_has_a_window_then_learns_what_a_replica_serves() {
        let mut p = Planner::new(cfg());
        let v = p.observe(0.0, &input(12.0, 0.0, 2, 0.4));
        assert!(!v.trusted);
        // inflightTarget 6 over 2 s: 3 requests per second per replica until one is seen full.
        assert_eq!(v.replica_rate_from, "inflightTarget");
        assert_eq!(v.replica_rate, Some(3.0));
        assert_eq!(v.fallback_concurrency, 6.0);
        assert_eq!(v.wait_budget_s, 1.6);
        // Replicas full at 8 while requests wait: 4 requests per second each is learned.
        for (i, t) in [15.0, 30.0, 45.0].into_iter().enumerate() {
            let v = p.observe(t, &input(16.0, 4.0 + i as f64, 2, 3.0));
            assert_eq!(v.replica_rate, Some(4.0));
            assert_eq!(v.replica_rate_from, "learned");
        }
        let v = p.observe(60.0, &input(16.0, 0.0, 2, 0.5));
        assert!(v.trusted);
        assert_eq!(v.full_samples, 3);
        // About 8 requests per second served, plus the backlog's drain and the rising trend
        // carried one horizon ahead, and the square-root headroom of 16 busy slots (1.645 x 4
        // slots held 2 s: 3.3 requests/s), over 4 per replica: about three replicas.
        let d = v.desired.unwrap();
        assert!(d > 2.8 && d < 3.2, "{v:?}");
        assert!((v.headroom_per_s - 1.6449 * 2.0).abs() < 0.3, "{v:?}");
        // The window is 1 / (1 - 0.95) = 20 intervals of 15 s.
        assert!((v.window_s - 300.0).abs() < 1e-9);
    }

    #[test]
    fn capacity_goes_back_when_the_burst_leaves_the_window() {
        // 50 minutes at 3 requests per second, then one sample's burst: its coming again would
        // miss about as many requests as 5 % of the hour's, so next to no floor holds it
        // (`burst_floor`).
        let mut p = Planner::new(cfg());
        for i in 0..200 {
            p.observe(i as f64 * 15.0, &input(6.0, 0.0, 1, 0.3));
        }
        let burst = p.observe(3000.0, &input(48.0, 30.0, 6, 2.5));
        let held = p.observe(3015.0, &input(6.0, 0.0, 6, 0.3));
        assert!(
            held.desired.unwrap() >= burst.desired.unwrap() * 0.5,
            "{held:?}"
        );
        let mut last = held;
        for i in 202..225 {
            last = p.observe(i as f64 * 15.0, &input(6.0, 0.0, 6, 0.3));
        }
        assert!(last.burst_floor_per_s < 0.1, "{last:?}");
        assert!(last.desired.unwrap() < 1.5, "{last:?}");
    }

    /// Bursts of 300 s every 900 s: once one quiet gap has ended in a burst, the capacity of the
    /// last burst is held through the next gap; a single burst only while its coming again
    /// would miss more than the hour's budget.
    #[test]
    fn recurring_bursts_hold_capacity_through_the_gap_and_a_single_one_while_it_could_break_the_budget(
    ) {
        let on = |i: usize| (i * 15) % 900 < 300;
        // Bursts of 48 in service on 6 replicas (24 requests per second over 2 s, 3 a replica)
        // between quiet stretches of `quiet` in service on one.
        let run = |bursts: usize, quiet: f64| {
            let mut p = Planner::new(cfg());
            let mut answers = Vec::new();
            for i in 0..240 {
                let busy = on(i) && i * 15 < bursts * 900;
                let load = if busy {
                    input(48.0, 0.0, 6, 0.3)
                } else {
                    input(quiet, 0.0, 1, 0.3)
                };
                answers.push((i * 15, p.observe(i as f64 * 15.0, &load)));
            }
            answers
        };
        let recurring = run(4, 2.0);
        // In the quiet stretch before the third burst (t = 1620 s), the second burst is held.
        let (_, v) = &recurring[1620 / 15];
        let gap = v.recurrence_s.expect("two bursts seen");
        assert!((585.0..=615.0).contains(&gap), "{v:?}");
        assert!(v.window_s >= gap + v.horizon_s - 1e-9, "{v:?}");
        // 24 requests per second, 3 per replica: 8 replicas.
        assert!(v.desired.unwrap() >= 6.0, "held: {v:?}");
        // One burst on a quiet stream of 1 request per second: met again with one replica it
        // would miss (24 - 1) x 60 requests, more than 5 % of all the hour has seen: held
        // (less its share of the budget) long after it left the window, and more loosely as
        // the hour's requests grow.
        let single = run(1, 2.0);
        let (_, early) = &single[780 / 15];
        let (_, late) = &single[1620 / 15];
        assert_eq!(late.recurrence_s, None);
        assert!(late.window_s < 400.0, "the burst left the window: {late:?}");
        assert!(late.burst_floor_per_s > 15.0, "{late:?}");
        assert!(late.desired.unwrap() >= 5.0, "{late:?}");
        assert!(
            early.burst_floor_per_s > late.burst_floor_per_s,
            "{early:?} {late:?}"
        );
        // The same burst with nothing between: once nothing arrives in the window the service
        // is idle, holds nothing, and may go to zero.
        let idle = run(1, 0.0);
        let (_, v) = &idle[1620 / 15];
        assert_eq!(v.burst_floor_per_s, 0.0, "{v:?}");
        assert!(v.desired.unwrap() < 0.5, "{v:?}");
        // The same burst on 12 requests per second: the hour's budget covers most of its
        // recurrence, the floor is below the quiet load, and capacity goes back to it.
        let busy_stream = run(1, 24.0);
        let (_, v) = &busy_stream[1620 / 15];
        assert!(v.burst_floor_per_s < 12.0, "{v:?}");
        assert!(v.desired.unwrap() < 6.0, "{v:?}");
    }

    /// The same bursts every 900 s, four of them: once two starts and three ends have kept the
    /// period, the capacity goes back between bursts and is asked for again one horizon (and one
    /// interval, and the margin) before the next is due.
    #[test]
    fn bursts_that_keep_a_period_are_released_between_and_asked_for_before_they_come() {
        let mut p = Planner::new(cfg());
        let mut answers = Vec::new();
        for i in 0..240 {
            let load = if (i * 15) % 900 < 300 {
                input(48.0, 0.0, 6, 0.3)
            } else {
                input(2.0, 0.0, 1, 0.3)
            };
            answers.push(p.observe(i as f64 * 15.0, &load));
        }
        let at = |t: usize| &answers[t / 15];
        // Before the third start only one start was seen: held through the gap, as before.
        assert_eq!(at(1620).cycle_s, None);
        assert!(at(1620).desired.unwrap() >= 6.0, "{:?}", at(1620));
        // 180 s before the fourth start (2700 s): released to the quiet load (one request per
        // second, a third of a replica), with no burst floor.
        let quiet = at(2520);
        assert_eq!(quiet.cycle_s, Some(900.0), "{quiet:?}");
        assert_eq!(quiet.burst_floor_per_s, 0.0);
        assert!(quiet.desired.unwrap() < 1.0, "{quiet:?}");
        // 60 s before it (within the 60 s horizon, a 15 s interval and the 45 s margin of it),
        // the burst is asked for, planned with no more than the asked budget; and held while it
        // lasts.
        for t in [2640, 2760, 2940] {
            let v = at(t);
            assert!(v.desired.unwrap() >= 6.0, "{t}: {v:?}");
            assert!(v.planned_miss_share <= 0.05 + 1e-12, "{t}: {v:?}");
        }
        // Given back once the burst and the horizon after it are past.
        assert!(at(3300).desired.unwrap() < 1.0, "{:?}", at(3300));
    }

    #[test]
    fn a_burst_is_held_while_its_recurrence_would_miss_more_than_the_budget() {
        // A steady 10 requests per second: any minute of it fits in 5 % of the hour.
        assert_eq!(burst_floor(&[10.0; 240], 0.05, 60.0, 15.0), 0.0);
        // One minute at 30 among 2: 8880 requests, 444 allowed to miss; met again with
        // 30 - 444 / 60 = 22.6 per second, the minute misses exactly the budget.
        let mut h = vec![2.0; 236];
        h.splice(100..100, [30.0; 4]);
        let f = burst_floor(&h, 0.05, 60.0, 15.0);
        assert!((f - 22.6).abs() < 0.05, "{f}");
        // A looser budget or a longer quiet stretch holds less; a longer horizon more.
        assert!(burst_floor(&h, 0.1, 60.0, 15.0) < f);
        let mut longer = h.clone();
        longer.extend([2.0; 200]);
        assert!(burst_floor(&longer, 0.05, 60.0, 15.0) < f);
        // A horizon longer than the burst holds what it held; a burst as long as the horizon,
        // more.
        assert!((burst_floor(&h, 0.05, 120.0, 15.0) - f).abs() < 1e-9);
        let mut two = vec![2.0; 232];
        two.splice(100..100, [30.0; 8]);
        assert!(burst_floor(&two, 0.05, 120.0, 15.0) > burst_floor(&two, 0.05, 60.0, 15.0));
        // Nothing to judge: nothing held.
        assert_eq!(burst_floor(&[], 0.05, 60.0, 15.0), 0.0);
        assert_eq!(burst_floor(&h, 0.05, 60.0, 0.0), 0.0);
        assert_eq!(burst_floor(&h, 0.05, 60.0, f64::NAN), 0.0);
    }

    #[test]
    fn a_draining_backlog_is_not_counted_as_arrivals_twice() {
        let mut p = Planner::new(cfg());
        let counted = |f: f64, queued: f64| ObjectiveInput {
            first_tokens_per_s: Some(f),
            ..input(8.0, queued, 1, 0.3)
        };
        p.observe(0.0, &counted(4.0, 0.0));
        // 10 requests/s arrive, 4 start and the queue gains 90 over 15 s: 10 arrived.
        let v = p.observe(15.0, &counted(4.0, 90.0));
        assert_eq!(v.arrivals_per_s, Some(4.0 + 6.0 + 90.0 / 60.0));
        // New capacity starts 12 a second and empties the queue: 6 of those had arrived
        // before (and were counted then), so 6 arrived, not 12.
        let v = p.observe(30.0, &counted(12.0, 0.0));
        assert_eq!(v.arrivals_per_s, Some(6.0));
        // More leaving the queue than started (requests given up on) is no negative arrival.
        p.observe(45.0, &counted(0.0, 60.0));
        let v = p.observe(60.0, &counted(1.0, 0.0));
        assert_eq!(v.arrivals_per_s, Some(0.0));
    }

    #[test]
    fn a_backlog_in_sight_is_drained_within_the_horizon() {
        // A standing backlog of 600 (not growing: 3 requests per second arrive and are served)
        // is drained within the 60 s horizon: 3 + 10 per second, whatever the window says.
        let mut p = Planner::new(cfg());
        let mut v = p.observe(0.0, &input(6.0, 600.0, 1, 2.5));
        for i in 1..20 {
            v = p.observe(i as f64 * 15.0, &input(6.0, 600.0, 1, 2.5));
        }
        let rate = v.replica_rate.unwrap();
        assert!(
            v.desired.unwrap() * rate >= 3.0 + 600.0 / 60.0 - 1e-6,
            "{v:?}"
        );
        // Drained: the window remembers arrivals, not the backlog.
        let v = p.observe(300.0, &input(6.0, 0.0, 1, 0.3));
        assert!(v.desired.unwrap() * rate < 3.0 + 600.0 / 60.0, "{v:?}");
    }

    #[test]
    fn the_present_sample_is_a_floor_only_with_a_backlog_in_sight_or_a_rise() {
        // A steady 4 requests per second (8 in service over 2 s) counted with a wobble of 0.5,
        // then one high count of 5 with nothing waiting: one sample of a level, which the miss
        // budget may absorb, not a floor.
        let level = |i: usize| if i.is_multiple_of(2) { 9.0 } else { 7.0 };
        let planned = |last: ObjectiveInput| {
            let mut p = Planner::new(ObjectiveConfig {
                concurrency: None,
                ..cfg()
            });
            for i in 0..19 {
                p.observe(i as f64 * 15.0, &input(level(i), 0.0, 2, 0.3));
            }
            let v = p.observe(19.0 * 15.0, &last);
            (v.desired.unwrap() * v.replica_rate.unwrap(), v)
        };
        let (quiet, v) = planned(input(10.0, 0.0, 2, 0.3));
        assert!(quiet < 5.0, "{quiet}");
        assert_eq!((v.present_floor_per_s, v.present_floor_from), (0.0, ""));
        // The same count with a request waiting: a backlog in sight, so the present is a floor.
        let (waiting, v) = planned(input(10.0, 1.0, 2, 0.3));
        assert!(waiting >= 5.0, "{waiting}");
        assert_eq!(v.present_floor_from, "requests waiting");
        assert!(v.present_floor_per_s >= 5.0, "{v:?}");
        // And a load rising beyond its noise (2 to 5 requests per second over the window) is
        // planned for at least where it stands now, with nothing waiting.
        let mut p = Planner::new(ObjectiveConfig {
            concurrency: None,
            ..cfg()
        });
        let mut v = p.observe(0.0, &input(4.0, 0.0, 2, 0.3));
        for i in 1..20usize {
            let inflight =
                4.0 + 6.0 * i as f64 / 19.0 + if i.is_multiple_of(2) { 0.5 } else { -0.5 };
            v = p.observe(i as f64 * 15.0, &input(inflight, 0.0, 2, 0.3));
        }
        let rising = v.desired.unwrap() * v.replica_rate.unwrap();
        let now = v.arrivals_per_s.unwrap();
        assert!(rising >= now + v.trend_per_s - 1e-9, "{rising} {v:?}");
        assert_eq!(v.present_floor_from, "rising");
    }

    #[test]
    fn what_was_met_is_reported_and_overlapping_windows_count_once() {
        use crate::score::Within;
        let mut p = Planner::new(cfg());
        let read = |within: f64, total: f64| ObjectiveInput {
            ttft_within: Some(Within {
                within,
                total,
                window_s: 60.0,
            }),
            ..input(4.0, 0.0, 1, 0.3)
        };
        // The first reading counts whole: 120 requests in its 60 s window, 114 met.
        let v = p.observe(0.0, &read(114.0, 120.0));
        assert_eq!(v.met_recently, Some(0.95));
        assert_eq!((v.met_recently_requests, v.met_recently_s), (120.0, 60.0));
        assert_eq!(v.met_last_hour_requests, 120.0);
        // Each later one every 15 s adds a quarter of its window: 60 of the 240 requests.
        let v = p.observe(15.0, &read(120.0, 240.0));
        assert_eq!(v.met_recently, Some(0.5));
        assert_eq!(v.met_last_hour_requests, 180.0);
        let hour = v.met_last_hour.unwrap();
        assert!((hour - (114.0 + 30.0) / 180.0).abs() < 1e-12, "{hour}");
        // Nothing read, or nothing completed: nothing reported and nothing counted.
        let v = p.observe(30.0, &read(0.0, 0.0));
        assert_eq!(v.met_recently, None);
        assert_eq!(v.met_last_hour_requests, 180.0);
        let v = p.observe(45.0, &read(f64::NAN, 10.0));
        assert_eq!(v.met_recently, None);
        // An hour later the first readings are forgotten.
        let v = p.observe(3615.0, &read(60.0, 60.0));
        assert_eq!(v.met_last_hour_requests, 60.0);
        assert_eq!(v.met_last_hour, Some(1.0));
    }

    #[test]
    fn the_planner_plans_with_the_calibrated_budget() {
        use crate::score::Within;
        // The same load (8 to 10 in service on three replicas) read with a TTFT histogram that
        // says every request met the objective, and read without one.
        let run = |histogram: bool| {
            let mut p = Planner::new(cfg());
            let mut views = Vec::new();
            // Ending on the lightest sample: the current reading is a floor under any plan.
            for i in 0..118 {
                let load = input(8.0 + (i % 3) as f64, 0.0, 3, 0.3);
                let read = ObjectiveInput {
                    ttft_within: histogram.then_some(Within {
                        within: 240.0,
                        total: 240.0,
                        window_s: 60.0,
                    }),
                    ..load
                };
                views.push(p.observe(i as f64 * 15.0, &read));
            }
            views
        };
        let (met, unread) = (run(true), run(false));
        // The first reading (240 requests) is too little evidence: the budget is as asked.
        assert!((met[0].planned_miss_share - 0.05).abs() < 1e-12);
        // Half an hour of nothing missed: the model may miss up to half, and asks for less than
        // the same model without the histogram, which keeps the budget as asked.
        let (m, u) = (met.last().unwrap(), unread.last().unwrap());
        assert!((m.planned_miss_share - MAX_ALLOWED).abs() < 1e-9, "{m:?}");
        assert!((u.planned_miss_share - 0.05).abs() < 1e-12);
        assert!(m.desired.unwrap() < u.desired.unwrap(), "{m:?} {u:?}");
    }

    #[test]
    fn misses_with_nothing_waiting_are_not_counted_against_the_budget() {
        use crate::score::Within;
        // 8 % of requests miss (over the 5 % budget), with nothing waiting or with a queue.
        let run = |queued: f64| {
            let mut p = Planner::new(cfg());
            let mut last = None;
            for i in 0..118 {
                let read = ObjectiveInput {
                    ttft_within: Some(Within {
                        within: 220.8,
                        total: 240.0,
                        window_s: 60.0,
                    }),
                    ..input(8.0 + (i % 3) as f64, queued, 3, 0.3)
                };
                last = Some(p.observe(i as f64 * 15.0, &read));
            }
            last.unwrap()
        };
        // Nothing waited: those requests missed by their own size. Their share is reported
        // and the capacity's misses are nil: the budget widens as if all had met it.
        let quiet = run(0.0);
        assert!(
            (quiet.quiet_miss_share.unwrap() - 0.08).abs() < 1e-9,
            "{quiet:?}"
        );
        assert!(
            (quiet.planned_miss_share - MAX_ALLOWED).abs() < 1e-9,
            "{quiet:?}"
        );
        // Requests waited: the misses are the capacity's, and the budget narrows.
        let busy = run(2.0);
        assert_eq!(busy.quiet_miss_share, None);
        assert!(busy.planned_miss_share < 0.05, "{busy:?}");
    }

    #[test]
    fn unreadable_numbers_never_lower_the_answer() {
        let mut p = Planner::new(cfg());
        let v = p.observe(0.0, &input(f64::NAN, 0.0, 1, 0.3));
        assert_eq!(v.desired, Some(f64::INFINITY));
        let v = p.observe(15.0, &input(f64::INFINITY, 0.0, 1, 0.3));
        assert_eq!(v.desired, Some(f64::INFINITY));
        let v = p.observe(30.0, &ObjectiveInput::default());
        assert_eq!(v.desired, None);
        assert!(!v.trusted);
    }

    #[test]
    fn a_measured_cold_start_sets_the_horizon() {
        let mut p = Planner::new(ObjectiveConfig {
            attainment: 0.5,
            ..cfg()
        });
        let v = p.observe(
            0.0,
            &ObjectiveInput {
                cold_start_s: Some(240.0),
                ..input(4.0, 0.0, 1, 0.3)
            },
        );
        assert_eq!((v.horizon_s, v.horizon_from), (240.0, "measured"));
        assert_eq!(v.window_s, 240.0);
    }
}
