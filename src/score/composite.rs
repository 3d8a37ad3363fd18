//! The composite desired capacity from every signal's demand (`demand`), and activation.
//!
//! Every signal is turned into "how many replicas this signal asks for" so that signals with
//! different units can be compared; the composite is the largest smoothed demand. The HPA then only
//! has to compute `ceil(desired / 1)`, which is independent of how many pods run.

use super::demand::{backlog_demand, demand, demand_with, latency_demand, Demand, DemandModel};
use super::ewma::{Ewma, Smoothing};
use super::forecast::{ForecastConfig, Seasonal};
use super::objective::{ObjectiveConfig, ObjectiveInput, ObjectiveView, Planner};

/// One signal of a ScaledObject: its name (for breakdowns), model and target.
#[derive(Clone, Debug, PartialEq)]
pub struct SignalRule {
    pub name: String,
    pub model: DemandModel,
    pub target: f64,
    /// False for a signal SLO mode reads for its planner without a target of the user's: it is
    /// aggregated and shown, but asks for no replicas itself.
    pub asks: bool,
}

/// What the scorer knows about the fleet besides the signals' readings.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct Fleet {
    /// Replicas created but not ready yet: capacity already on its way. None: the source cannot tell.
    pub starting: Option<u32>,
    /// Replicas terminating (draining); they take no new work. None: the source cannot tell.
    pub terminating: Option<u32>,
}

/// Inputs of one step beyond the per-signal readings.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Context {
    /// Requests completed per second by all replicas together over the source's window (from the
    /// replicas' own request counters). With the in-flight gauge it gives the mean service time by
    /// Little's law, which turns a backlog into a drain rate.
    pub completions_per_s: Option<f64>,
    /// Requests that reached their first token per second, all replicas together, over the last
    /// sampling interval only (the increase of the TTFT histogram's `_count` between the last
    /// two readings). With the queue's growth it counts the arrivals of that interval, where
    /// requests in service over the service time only infer them. None where unread.
    pub first_tokens_per_s: Option<f64>,
    pub fleet: Fleet,
    /// Seconds from a pod's first sight not ready to ready, as the source measured it (the
    /// median of the last hour); None where the source cannot see pods start.
    pub cold_start_s: Option<f64>,
    /// SLO mode: the requests that met the time-to-first-token objective and all requests, over
    /// the source's window, from the replicas' TTFT histogram; None in target mode or unread.
    pub ttft_within: Option<Within>,
}

/// Requests within the objective, of all requests, observed over `window_s` seconds (the
/// source's window, or the part of it the source has seen so far).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Within {
    pub within: f64,
    pub total: f64,
    pub window_s: f64,
}

/// The capacity model: what one replica is built for and how fast a backlog must drain.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Capacity {
    /// Requests in service one replica is sized for (the in-flight target); None without one.
    pub concurrency_per_replica: Option<f64>,
    /// Horizon over which a backlog is drained, seconds. About one replica start: capacity asked
    /// for now arrives after a cold start, so a backlog that would drain faster needs no new replica.
    pub drain_s: f64,
    /// Window the source's completion rate is computed over, seconds: requests in service are
    /// averaged over the same window, so Little's law compares like with like.
    pub service_window_s: f64,
}

impl Default for Capacity {
    fn default() -> Self {
        Capacity {
            concurrency_per_replica: None,
            drain_s: 60.0,
            service_window_s: 60.0,
        }
    }
}

/// Replica bounds applied to the composite.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limits {
    pub min_replicas: f64,
    pub max_replicas: f64,
}

/// Activation with hysteresis, in replicas of demand: active once the composite rises above
/// `activate_above`, inactive again only after it falls below `deactivate_below`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Activation {
    pub activate_above: f64,
    pub deactivate_below: f64,
}

/// Everything the scorer needs for one ScaledObject.
#[derive(Clone, Debug, PartialEq)]
pub struct ScorerConfig {
    pub signals: Vec<SignalRule>,
    pub smoothing: Smoothing,
    pub activation: Activation,
    pub limits: Limits,
    pub capacity: Capacity,
    /// Seasonal pre-warm floor; None (the default) turns it off.
    pub forecast: Option<ForecastConfig>,
    /// SLO mode: capacity sized from the stated objective; None is target mode.
    pub objective: Option<ObjectiveConfig>,
}

/// Why one signal asks for what it asks for, at one step.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct SignalDecision {
    pub name: String,
    pub model: DemandModel,
    pub target: f64,
    pub value: Option<f64>,
    pub raw_demand: Option<f64>,
    pub smoothed_demand: Option<f64>,
    pub reporting: usize,
    pub missing: usize,
    /// The panic rule passed the raw demand through unsmoothed at this step.
    pub panicked: bool,
    /// A reading or their sum was infinite: the demand was set to maxReplicas (fail safe).
    pub overflow: bool,
}

/// How the capacity model read this step (shown by `explain` and `/debug`).
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct CapacityView {
    /// Mean service time learned from in-flight / completions (Little's law), seconds.
    pub service_s: Option<f64>,
    pub completions_per_s: Option<f64>,
    /// Requests in service and waiting, all replicas together, as read this step.
    pub inflight: Option<f64>,
    pub queued: Option<f64>,
    /// Replicas the present load keeps busy (the latency signal's bound).
    pub busy_replicas: Option<f64>,
    pub fleet: Fleet,
}

/// The outcome of one scoring step: what KEDA is told and why.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Decision {
    /// Time of the step, seconds on the caller's clock.
    pub at: f64,
    /// Desired capacity in replicas after clamping: the number reported to KEDA.
    pub desired: f64,
    /// Largest raw and smoothed demand before clamping.
    pub composite_raw: f64,
    pub composite_smoothed: f64,
    pub active: bool,
    /// The signal whose smoothed demand set `desired`, if any signal had data.
    pub limiting: Option<String>,
    /// Set when the composite was raised to min or lowered to max.
    pub clamped: Option<&'static str>,
    /// False when no signal had a single reporting pod at this step.
    pub has_data: bool,
    pub signals: Vec<SignalDecision>,
    pub capacity: CapacityView,
    /// The seasonal floor at this step, when one is configured and has a season of history.
    pub forecast_floor: Option<f64>,
    /// What SLO mode's planner knew and asked for at this step (SLO mode only).
    pub objective: Option<ObjectiveView>,
}

/// The smoothing and activation state of one ScaledObject. Deterministic: the same readings at the
/// same times give the same decisions, which is what lets the simulator run the server's code.
#[derive(Clone, Debug)]
pub struct Scorer {
    config: ScorerConfig,
    ewmas: Vec<Ewma>,
    active: bool,
    /// When the raw composite last fell below the deactivation threshold (None: it is above).
    quiet_since: Option<f64>,
    /// Requests in service at recent steps (time, count), to average over the completion window.
    inflight_seen: std::collections::VecDeque<(f64, f64)>,
    /// The last service-time estimate, kept through idle periods.
    service_s: Option<f64>,
    /// The desired capacity of the previous step (0 before the first).
    last_desired: f64,
    seasonal: Option<Seasonal>,
    planner: Option<Planner>,
}

impl Scorer {
    pub fn new(config: ScorerConfig) -> Self {
        let ewmas = vec![Ewma::new(); config.signals.len()];
        let seasonal = config.forecast.map(Seasonal::new);
        let planner = config.objective.map(Planner::new);
        Scorer {
            planner,
            config,
            ewmas,
            active: false,
            quiet_since: None,
            inflight_seen: std::collections::VecDeque::new(),
            service_s: None,
            last_desired: 0.0,
            seasonal,
        }
    }

    pub fn config(&self) -> &ScorerConfig {
        &self.config
    }

    pub fn is_active(&self) -> bool {
        self.active
    }

    /// Scores one sampling with no completion counts and no fleet information. `readings[i]` holds
    /// the per-pod values of `config.signals[i]`; a signal with fewer entries than rules is treated
    /// as not reported.
    pub fn step(&mut self, t: f64, readings: &[Vec<Option<f64>>]) -> Decision {
        self.observe(t, readings, &Context::default())
    }

    /// Scores one sampling with what the source knows besides the readings.
    ///
    /// The phases run in this order because each reads what the one before decided: the load
    /// first (the latency signal is bounded by it), then each signal's smoothed vote, then SLO
    /// mode's planner and the seasonal floor (both may only raise the composite), and activation
    /// last, on the composite they leave.
    pub fn observe(&mut self, t: f64, readings: &[Vec<Option<f64>>], ctx: &Context) -> Decision {
        let load = self.read_load(t, readings, ctx);
        let (mut demands, busy) = self.load_demands(readings, &load);
        self.bound_latency(readings, &load, busy, &mut demands);
        let (signals, mut composite) = self.smooth(t, demands);
        let objective = self.plan_objective(t, readings, ctx, &load, &mut composite);
        let forecast_floor = self.apply_forecast(t, &mut composite);
        self.update_activation(t, &composite);
        let (desired, clamped) = clamp(composite.smoothed, self.config.limits);
        self.last_desired = desired;
        Decision {
            at: t,
            desired,
            composite_raw: composite.raw,
            composite_smoothed: composite.smoothed,
            active: self.active,
            limiting: composite.limiting,
            clamped,
            has_data: composite.has_data,
            signals,
            capacity: CapacityView {
                service_s: load.service_s,
                completions_per_s: ctx.completions_per_s,
                inflight: load.inflight,
                queued: load.queued,
                busy_replicas: busy,
                fleet: ctx.fleet,
            },
            forecast_floor,
            objective,
        }
    }

    /// Requests in service and waiting, the service time they imply, and the replicas on their
    /// way: what the capacity model, the latency bound and the planner all read, so it is read
    /// once. Learning the service time is the one side effect (it averages over a window).
    fn read_load(&mut self, t: f64, readings: &[Vec<Option<f64>>], ctx: &Context) -> Load {
        let inflight = total(&self.config.signals, readings, INFLIGHT);
        let queued = total(&self.config.signals, readings, QUEUE);
        let service_s = self.service_time(t, inflight, ctx.completions_per_s);
        // Replicas on their way: what a discovery source counts, else what this scorer last
        // asked for beyond the pods that report (the HPA may not have followed, so this can
        // only overcount starting pods for a step or two).
        let reporting = self
            .config
            .signals
            .iter()
            .enumerate()
            .filter(|(_, r)| matches!(r.model, DemandModel::Utilisation | DemandModel::Quantity))
            .map(|(i, _)| pods(readings, i).iter().filter(|v| v.is_some()).count())
            .max()
            .unwrap_or(0) as f64;
        let starting = ctx.fleet.starting.map_or_else(
            || (self.last_desired.ceil() - reporting).max(0.0),
            f64::from,
        );
        Load {
            inflight,
            queued,
            service_s,
            starting,
        }
    }

    /// What one signal's readings ask for, latency aside (it is bounded by these, so it is
    /// computed after them, in `bound_latency`).
    fn signal_demand(&self, rule: &SignalRule, pods: &[Option<f64>], load: &Load) -> Demand {
        let capacity = &self.config.capacity;
        match rule.model {
            DemandModel::Latency => Demand::default(),
            DemandModel::Backlog => demand_with(rule.model, rule.target, pods, |q| {
                match (
                    load.inflight,
                    load.service_s,
                    capacity.concurrency_per_replica,
                ) {
                    (Some(n), Some(s), Some(c)) => backlog_demand(q, n, s, c, capacity.drain_s),
                    // Without a service time the backlog can only be read as waiting requests
                    // per replica.
                    _ => q / rule.target,
                }
            }),
            _ => demand(rule.model, rule.target, pods),
        }
    }

    /// Every signal's demand but latency's, and the load evidence: the most replicas the
    /// requests in service keep busy by any utilisation or quantity signal (None: none had a
    /// finite reading).
    fn load_demands(
        &self,
        readings: &[Vec<Option<f64>>],
        load: &Load,
    ) -> (Vec<Demand>, Option<f64>) {
        let signals = &self.config.signals;
        let mut demands: Vec<Demand> = Vec::with_capacity(signals.len());
        let mut busy: Option<f64> = None;
        for (i, rule) in signals.iter().enumerate() {
            let d = self.signal_demand(rule, pods(readings, i), load);
            if matches!(rule.model, DemandModel::Utilisation | DemandModel::Quantity) {
                // Load evidence: the replicas the requests in service keep busy, counting only
                // what the reporting pods carry (no missing-pod floor) and not the backlog, which
                // its own signal drains.
                let reported: Vec<Option<f64>> = pods(readings, i)
                    .iter()
                    .filter(|v| v.is_some_and(|x| !x.is_nan()))
                    .copied()
                    .collect();
                let carried = self.signal_demand(rule, &reported, load).raw;
                if let Some(carried) = carried.filter(|l| l.is_finite()) {
                    busy = Some(busy.map_or(carried, |b: f64| b.max(carried)));
                }
            }
            demands.push(d);
        }
        (demands, busy)
    }

    /// The latency signals' demands: a latency above target asks for up to twice the `busy`
    /// replicas, and only when more replicas could shorten the wait.
    fn bound_latency(
        &self,
        readings: &[Vec<Option<f64>>],
        load: &Load,
        busy: Option<f64>,
        demands: &mut [Demand],
    ) {
        let cfg = &self.config;
        for (i, rule) in cfg.signals.iter().enumerate() {
            if rule.model != DemandModel::Latency {
                continue;
            }
            let d = demand(rule.model, rule.target, pods(readings, i));
            // With nothing waiting, more replicas cannot shorten anyone's wait: a latency
            // above target then comes from the requests themselves (long prompts) or from a
            // window that still remembers a backlog already drained.
            let waiting = load.queued.is_none_or(|q| q > 0.0);
            // While replicas are starting and the backlog model sees the queue and knows the
            // service time, the waiting requests are already counted there, and capacity for
            // them is on its way: voting again on them asked for 3 to 5 times what bursts
            // needed. Otherwise (nothing starting, or the model blind) the latency guards: a
            // wait above target with nothing on its way asks for more.
            let modelled = load.queued.is_some()
                && load.service_s.is_some()
                && cfg.capacity.concurrency_per_replica.is_some();
            let busy = if waiting && !(modelled && load.starting > 0.0) {
                busy.unwrap_or(0.0)
            } else {
                0.0
            };
            demands[i] = Demand {
                raw: d.value.map(|v| latency_demand(v, rule.target, busy)),
                ..d
            };
        }
    }

    /// Each signal's demand through its EWMA, and the composite: the largest smoothed vote,
    /// named after its signal. A signal no pod reported shows its old average but does not vote.
    fn smooth(&mut self, t: f64, demands: Vec<Demand>) -> (Vec<SignalDecision>, Composite) {
        let cfg = &self.config;
        let max = cfg.limits.max_replicas;
        let mut signals = Vec::with_capacity(cfg.signals.len());
        let mut composite_raw: Option<f64> = None;
        let mut best: Option<(f64, usize)> = None;
        for (i, (rule, mut d)) in cfg.signals.iter().zip(demands).enumerate() {
            if !rule.asks {
                d.raw = None;
            }
            // Fail safe: an infinite demand asks for the most the object may have, never 0.
            let overflow = d.raw.is_some_and(|r| !r.is_finite());
            let raw = d.raw.map(|r| if r.is_finite() { r } else { max });
            let mut panicked = false;
            let smoothed = match raw {
                Some(raw) => {
                    let o = self.ewmas[i].observe(raw, t, &cfg.smoothing);
                    panicked = o.panicked;
                    let value = if overflow { max } else { o.value };
                    composite_raw = Some(composite_raw.map_or(raw, |c| c.max(raw)));
                    if best.is_none_or(|(b, _)| value > b) {
                        best = Some((value, i));
                    }
                    Some(value)
                }
                // No pod reported: the old average is shown but does not vote.
                None => self.ewmas[i].value(),
            };
            signals.push(SignalDecision {
                name: rule.name.clone(),
                model: rule.model,
                target: rule.target,
                value: d.value,
                raw_demand: raw,
                smoothed_demand: smoothed,
                reporting: d.reporting,
                missing: d.missing,
                panicked,
                overflow,
            });
        }
        let composite = Composite {
            raw: composite_raw.unwrap_or(0.0),
            smoothed: best.map_or(0.0, |(v, _)| v),
            limiting: best.map(|(_, i)| cfg.signals[i].name.clone()),
            has_data: best.is_some(),
        };
        (signals, composite)
    }

    /// SLO mode: the planner's answer raises the composite (never lowers it) and, where it
    /// decides, is named `objective`. None in target mode.
    fn plan_objective(
        &mut self,
        t: f64,
        readings: &[Vec<Option<f64>>],
        ctx: &Context,
        load: &Load,
        composite: &mut Composite,
    ) -> Option<ObjectiveView> {
        let cfg = &self.config;
        let planner = self.planner.as_mut()?;
        let latency = cfg
            .signals
            .iter()
            .position(|r| r.model == DemandModel::Latency)
            .and_then(|i| demand(DemandModel::Latency, 1.0, pods(readings, i)).value)
            .filter(|v| v.is_finite());
        let reporting_inflight = cfg
            .signals
            .iter()
            .position(|r| r.name == INFLIGHT)
            .map_or(0, |i| {
                pods(readings, i).iter().filter(|v| v.is_some()).count()
            });
        let view = planner.observe(
            t,
            &ObjectiveInput {
                inflight: load.inflight,
                queued: load.queued,
                reporting: reporting_inflight,
                ttft_s: latency,
                cold_start_s: ctx.cold_start_s,
                service_s: load.service_s,
                completions_per_s: ctx.completions_per_s,
                first_tokens_per_s: ctx.first_tokens_per_s,
                ttft_within: ctx.ttft_within,
            },
        );
        // Until the window holds enough samples, the planner's answer is floored by what
        // target mode would ask at this instant: the requests in the system over what one
        // replica holds (fail safe: too little data never asks for less).
        let fallback = view
            .in_system
            .filter(|_| !view.trusted)
            .map(|n| n / view.fallback_concurrency);
        let asked = match (view.desired, fallback) {
            (Some(d), Some(f)) => Some(d.max(f)),
            (d, f) => d.or(f),
        };
        if let Some(asked) = asked {
            // Not finite: the most the object may have, never 0.
            let asked = if asked.is_finite() {
                asked
            } else {
                cfg.limits.max_replicas
            };
            composite.has_data = true;
            composite.raw = composite.raw.max(asked);
            if asked >= composite.smoothed {
                composite.smoothed = asked;
                composite.limiting = Some("objective".into());
            }
        }
        Some(view)
    }

    /// The seasonal floor, when one is configured: it raises the composite (named `forecast`)
    /// to what last season needed now. Returns the floor for the breakdown.
    fn apply_forecast(&mut self, t: f64, composite: &mut Composite) -> Option<f64> {
        let max = self.config.limits.max_replicas;
        let seasonal = self.seasonal.as_mut()?;
        // The floor reads last season's demand, so it is recorded before the floor is applied
        // (a floor that fed itself would never come down).
        if composite.has_data {
            seasonal.record(t, composite.raw.min(max));
        }
        let floor = seasonal.floor(t);
        if let Some(floor) = floor.filter(|f| *f > composite.smoothed) {
            composite.smoothed = floor;
            composite.limiting = Some("forecast".into());
        }
        floor
    }

    /// IsActive with hysteresis: on above `activate_above` (raw or smoothed), off only when the
    /// raw composite is below `deactivate_below` and the smoothed one is too, or has been quiet
    /// for a down half-life. A step without data changes nothing (missing data never flaps).
    fn update_activation(&mut self, t: f64, composite: &Composite) {
        if !composite.has_data {
            return;
        }
        let cfg = &self.config;
        let a = cfg.activation;
        if composite.raw >= a.deactivate_below {
            self.quiet_since = None;
        } else if self.quiet_since.is_none() {
            self.quiet_since = Some(t);
        }
        // Quiet for a whole down half-life: the smoothed tail of the last burst (which a long
        // half-life keeps above the threshold for many half-lives) is no reason to stay
        // active; KEDA's cooldownPeriod then still waits before 1 -> 0.
        let quiet_long = self
            .quiet_since
            .is_some_and(|q| t - q >= cfg.smoothing.down_half_life_s);
        if !self.active
            && (composite.raw > a.activate_above || composite.smoothed > a.activate_above)
        {
            self.active = true;
        } else if self.active
            && composite.raw < a.deactivate_below
            && (composite.smoothed < a.deactivate_below || quiet_long)
        {
            self.active = false;
        }
    }

    /// Mean service time by Little's law: requests in service averaged over the window the
    /// completion rate covers, over that rate. The same window on both sides matters: at the
    /// start of a burst the in-flight gauge jumps at once while completions over the window still
    /// include the quiet time before it, and their plain ratio would read a service time many
    /// times too long. Below one completion in ten minutes (an idle service) the ratio says
    /// nothing new, so the last estimate is kept; None until some request has completed.
    fn service_time(
        &mut self,
        t: f64,
        inflight: Option<f64>,
        completions: Option<f64>,
    ) -> Option<f64> {
        let window = self.config.capacity.service_window_s.max(0.0);
        if let Some(n) = inflight {
            self.inflight_seen.push_back((t, n));
        }
        while self
            .inflight_seen
            .front()
            .is_some_and(|&(at, _)| at <= t - window && self.inflight_seen.len() > 1)
        {
            self.inflight_seen.pop_front();
        }
        let c = completions.filter(|c| c.is_finite() && *c > 1.0 / 600.0);
        if let (Some(c), false) = (c, self.inflight_seen.is_empty()) {
            let mean = self.inflight_seen.iter().map(|&(_, n)| n).sum::<f64>()
                / self.inflight_seen.len() as f64;
            if mean > 0.0 {
                self.service_s = Some((mean / c).clamp(1e-3, 3600.0));
            }
        }
        self.service_s
    }
}

/// What one step's readings say about load (`Scorer::read_load`).
struct Load {
    /// Requests in service and waiting, all pods together (None: no such signal, or not finite).
    inflight: Option<f64>,
    queued: Option<f64>,
    /// Mean service time, seconds (`Scorer::service_time`).
    service_s: Option<f64>,
    /// Replicas on their way.
    starting: f64,
}

/// The composite as the phases of `Scorer::observe` leave it.
struct Composite {
    /// The largest raw demand (0 without data).
    raw: f64,
    /// The largest smoothed demand, before clamping (0 without data).
    smoothed: f64,
    /// What set `smoothed`: a signal's name, `objective` or `forecast`.
    limiting: Option<String>,
    has_data: bool,
}

/// The per-pod readings of signal `i`; none when the source sent fewer lists than rules.
fn pods(readings: &[Vec<Option<f64>>], i: usize) -> &[Option<f64>] {
    readings.get(i).map(Vec::as_slice).unwrap_or(&[])
}

/// The sum over pods of the signal called `name`, when the object has one and the sum is finite.
fn total(signals: &[SignalRule], readings: &[Vec<Option<f64>>], name: &str) -> Option<f64> {
    let i = signals.iter().position(|r| r.name == name)?;
    let d = demand(DemandModel::Quantity, 1.0, pods(readings, i));
    d.value.filter(|v| v.is_finite())
}

/// Names of the built-in signals the capacity model reads.
pub const INFLIGHT: &str = "inflight";
pub const QUEUE: &str = "queue";
/// The KV-cache signal: the tie-break of pod deletion costs (`crate::deletion`).
pub const KV_CACHE: &str = "kv_cache";

fn clamp(value: f64, limits: Limits) -> (f64, Option<&'static str>) {
    if value < limits.min_replicas {
        (limits.min_replicas, Some("minReplicas"))
    } else if value > limits.max_replicas {
        (limits.max_replicas, Some("maxReplicas"))
    } else {
        (value, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(values: &[f64]) -> Vec<Option<f64>> {
        values.iter().copied().map(Some).collect()
    }

    fn config(signals: Vec<SignalRule>) -> ScorerConfig {
        ScorerConfig {
            signals,
            smoothing: Smoothing {
                up_half_life_s: 0.0,
                down_half_life_s: 0.0,
                panic_threshold: 0.0,
            },
            activation: Activation {
                activate_above: 0.5,
                deactivate_below: 0.2,
            },
            limits: Limits {
                min_replicas: 0.0,
                max_replicas: 100.0,
            },
            capacity: Capacity::default(),
            forecast: None,
            objective: None,
        }
    }

    fn rule(name: &str, model: DemandModel, target: f64) -> SignalRule {
        SignalRule {
            asks: true,
            name: name.into(),
            model,
            target,
        }
    }

    fn capacity_config() -> ScorerConfig {
        let mut c = config(vec![
            rule("queue", DemandModel::Backlog, 8.0),
            rule("inflight", DemandModel::Quantity, 6.0),
            rule("latency", DemandModel::Latency, 2.0),
        ]);
        c.capacity = Capacity {
            concurrency_per_replica: Some(6.0),
            drain_s: 60.0,
            service_window_s: 0.0,
        };
        c
    }

    #[test]
    fn latency_above_target_with_idle_replicas_does_not_raise_demand() {
        // Ten replicas, one request in service on each of two, nothing queued, but a p95 time to
        // first token far above target (long prompts): the old rule asked for 10 x 8 / 2 = 40.
        let mut s = Scorer::new(capacity_config());
        let mut inflight = vec![Some(0.0); 10];
        inflight[0] = Some(1.0);
        inflight[1] = Some(1.0);
        let ctx = Context {
            completions_per_s: Some(1.0),
            ..Context::default()
        };
        let mut d = None;
        for t in 0..20 {
            d = Some(s.observe(
                t as f64 * 15.0,
                &[all(&[0.0]), inflight.clone(), vec![Some(8.0); 10]],
                &ctx,
            ));
        }
        let d = d.unwrap();
        assert_eq!(d.capacity.busy_replicas, Some(2.0 / 6.0));
        assert_eq!(d.signals[2].raw_demand, Some(0.0), "nothing waits: no vote");
        assert!(
            d.desired < 1.0,
            "ten idle replicas are not a reason for more: {d:?}"
        );
        // One request waiting while two replicas start: the backlog model sees it, knows the
        // service time and capacity is on its way, so the latency does not count it again.
        let starting = Context {
            fleet: Fleet {
                starting: Some(2),
                terminating: Some(0),
            },
            ..ctx
        };
        let pods = [all(&[1.0]), inflight.clone(), vec![Some(8.0); 10]];
        let d = s.observe(400.0, &pods, &starting);
        assert_eq!(d.signals[2].raw_demand, Some(0.0));
        // Nothing starting: the wait above target asks for at most twice the busy replicas.
        let none = Context {
            fleet: Fleet {
                starting: Some(0),
                terminating: Some(0),
            },
            ..ctx
        };
        let d = s.observe(415.0, &pods, &none);
        let latency = d.signals[2].raw_demand.unwrap();
        assert!((latency - 2.0 * 2.0 / 6.0).abs() < 1e-9, "{latency}");
        // Without a service time the backlog model is blind: the latency guards, asking for at
        // most twice the busy replicas.
        let mut blind = Scorer::new(capacity_config());
        let d = blind.step(0.0, &[all(&[1.0]), inflight, vec![Some(8.0); 10]]);
        let latency = d.signals[2].raw_demand.unwrap();
        assert!((latency - 2.0 * 2.0 / 6.0).abs() < 1e-9, "{latency}");
        assert!(d.desired < 1.0, "{d:?}");
    }

    #[test]
    fn the_seasonal_floor_pre_warms_and_says_so() {
        let mut c = config(vec![rule("queue", DemandModel::Quantity, 1.0)]);
        c.forecast = Some(ForecastConfig {
            period_s: 600.0,
            lead_s: 60.0,
        });
        let mut s = Scorer::new(c);
        // A burst of 8 from 300 s to 400 s, then quiet; no floor during the first season.
        for t in (0..600).step_by(15) {
            let q = if (300..400).contains(&t) { 8.0 } else { 0.0 };
            let d = s.step(t as f64, &[all(&[q])]);
            assert_eq!(d.forecast_floor, None, "t={t}");
        }
        // One season later, 60 s before the burst recurs, the floor asks for it.
        let d = s.step(825.0, &[all(&[0.0])]);
        assert_eq!(d.forecast_floor, Some(0.0));
        let d = s.step(855.0, &[all(&[0.0])]);
        assert_eq!((d.desired, d.limiting.as_deref()), (8.0, Some("forecast")));
        assert!(d.active, "the floor activates a scaled-to-zero object");
        // Off by default.
        let mut off = Scorer::new(config(vec![rule("queue", DemandModel::Quantity, 1.0)]));
        assert_eq!(off.step(0.0, &[all(&[1.0])]).forecast_floor, None);
    }

    #[test]
    fn a_long_quiet_period_deactivates_despite_a_slow_decay() {
        let mut c = config(vec![rule("queue", DemandModel::Quantity, 1.0)]);
        c.smoothing = Smoothing {
            up_half_life_s: 0.0,
            down_half_life_s: 300.0,
            panic_threshold: 2.0,
        };
        let mut s = Scorer::new(c);
        assert!(s.step(0.0, &[all(&[20.0])]).active);
        // Quiet from 10 s; 280 s later the average is still ~10: active.
        assert!(s.step(10.0, &[all(&[0.0])]).active);
        assert!(s.step(290.0, &[all(&[0.0])]).active);
        let d = s.step(310.0, &[all(&[0.0])]);
        assert!(d.composite_smoothed > 1.0 && !d.active, "{d:?}");
        // Any demand above the threshold resets the quiet clock.
        assert!(s.step(320.0, &[all(&[1.0])]).active);
        assert!(s.step(330.0, &[all(&[0.0])]).active);
    }

    #[test]
    fn a_backlog_with_replicas_starting_asks_for_the_drain_model_only() {
        // Four ready replicas, each with a full batch of 8 in service (32), 2 s per request
        // (16 completions per second), 1200 requests queued while twelve more replicas start.
        let mut s = Scorer::new(capacity_config());
        let ctx = Context {
            completions_per_s: Some(16.0),
            fleet: Fleet {
                starting: Some(12),
                terminating: Some(0),
            },
            ..Context::default()
        };
        let d = s.observe(0.0, &[all(&[1200.0]), all(&[8.0; 4]), vec![None; 4]], &ctx);
        let drain = backlog_demand(1200.0, 32.0, 2.0, 6.0, 60.0);
        assert!((drain - (32.0 + 40.0) / 6.0).abs() < 1e-9);
        assert_eq!(d.capacity.service_s, Some(2.0));
        assert_eq!(d.signals[0].raw_demand, Some(drain));
        assert_eq!(d.desired, drain, "12 replicas, not 1200 / 8 = 150");
        assert_eq!(d.capacity.fleet.starting, Some(12));
    }

    #[test]
    fn a_backlog_without_service_time_reads_waiting_requests_per_replica() {
        let mut s = Scorer::new(capacity_config());
        let d = s.step(0.0, &[all(&[40.0]), vec![], vec![]]);
        assert_eq!(d.signals[0].raw_demand, Some(5.0));
        assert_eq!(d.capacity.service_s, None);
    }

    #[test]
    fn service_time_survives_an_idle_period() {
        let mut c = capacity_config();
        c.capacity.service_window_s = 60.0;
        let mut s = Scorer::new(c);
        let busy = Context {
            completions_per_s: Some(4.0),
            ..Context::default()
        };
        let idle = Context {
            completions_per_s: Some(0.0),
            ..Context::default()
        };
        s.observe(0.0, &[all(&[0.0]), all(&[6.0, 6.0]), vec![]], &busy);
        for t in 1..100 {
            s.observe(
                t as f64 * 15.0,
                &[all(&[0.0]), all(&[0.0, 0.0]), vec![]],
                &idle,
            );
        }
        let d = s.observe(1500.0, &[all(&[0.0]), all(&[0.0, 0.0]), vec![]], &idle);
        let st = d.capacity.service_s.unwrap();
        assert!((st - 3.0).abs() < 1e-6, "{st}");
    }

    #[test]
    fn an_overflowing_reading_asks_for_max_replicas() {
        let mut s = Scorer::new(config(vec![rule("inflight", DemandModel::Quantity, 1e-3)]));
        let d = s.step(0.0, &[all(&[1e308, 1e308])]);
        assert!(d.signals[0].overflow);
        assert_eq!(d.desired, 100.0);
        assert!(d.active);
        let d = s.step(1.0, &[all(&[f64::INFINITY])]);
        assert_eq!(d.desired, 100.0);
        let d = s.step(2.0, &[vec![Some(f64::NAN)]]);
        assert!(!d.signals[0].overflow, "NaN is no reading, not an overflow");
    }

    #[test]
    fn composite_is_the_largest_demand_and_names_it() {
        let mut s = Scorer::new(config(vec![
            rule("gpu_util", DemandModel::Utilisation, 70.0),
            rule("queue", DemandModel::Quantity, 10.0),
        ]));
        let d = s.step(0.0, &[all(&[35.0, 35.0]), all(&[25.0, 25.0])]);
        assert_eq!(d.desired, 5.0);
        assert_eq!(d.limiting.as_deref(), Some("queue"));
        assert!(d.active);
    }

    #[test]
    fn clamps_to_limits_and_says_so() {
        let mut c = config(vec![rule("queue", DemandModel::Quantity, 1.0)]);
        c.limits = Limits {
            min_replicas: 2.0,
            max_replicas: 8.0,
        };
        let mut s = Scorer::new(c);
        let high = s.step(0.0, &[all(&[50.0])]);
        assert_eq!((high.desired, high.clamped), (8.0, Some("maxReplicas")));
        let low = s.step(1.0, &[all(&[0.0])]);
        assert_eq!((low.desired, low.clamped), (2.0, Some("minReplicas")));
    }

    #[test]
    fn activation_has_hysteresis() {
        let mut s = Scorer::new(config(vec![rule("queue", DemandModel::Quantity, 10.0)]));
        let mut at = |t: f64, q: f64| s.step(t, &[all(&[q])]).active;
        assert!(!at(0.0, 4.0), "0.4 replicas is below activate_above 0.5");
        assert!(at(1.0, 6.0), "0.6 activates");
        assert!(at(2.0, 3.0), "0.3 is inside the band: stays active");
        assert!(!at(3.0, 1.0), "0.1 is below deactivate_below 0.2");
        assert!(!at(4.0, 3.0), "0.3 is inside the band: stays inactive");
    }

    #[test]
    fn activation_rises_on_raw_but_falls_only_on_smoothed() {
        let mut c = config(vec![rule("queue", DemandModel::Quantity, 1.0)]);
        // No panic pass-through: the average alone would take many seconds to cross 0.5, so
        // only the raw branch can activate at once.
        c.smoothing = Smoothing {
            up_half_life_s: 30.0,
            down_half_life_s: 30.0,
            panic_threshold: 0.0,
        };
        let mut s = Scorer::new(c);
        s.step(0.0, &[all(&[0.0])]);
        let d = s.step(1.0, &[all(&[1.0])]);
        assert!(d.composite_smoothed < 0.1, "{}", d.composite_smoothed);
        assert!(d.active, "raw 1.0 activates at once");
        // The average climbs towards 1 over a few half-lives.
        for t in 2..=150 {
            s.step(t as f64, &[all(&[1.0])]);
        }
        // Raw drops to zero but the average is still near 1: stays active.
        assert!(s.step(151.0, &[all(&[0.0])]).active);
        let mut t = 151.0;
        while s.is_active() {
            t += 5.0;
            s.step(t, &[all(&[0.0])]);
            assert!(t < 400.0, "never deactivated");
        }
        // From ~1 to below 0.2 takes log2(5) = 2.3 half-lives (70 s), or one quiet half-life.
        assert!(t > 151.0 + 25.0, "deactivated too early at {t}");
    }

    #[test]
    fn a_signal_without_data_does_not_vote() {
        let mut s = Scorer::new(config(vec![
            rule("gpu_util", DemandModel::Utilisation, 50.0),
            rule("queue", DemandModel::Quantity, 10.0),
        ]));
        s.step(0.0, &[all(&[100.0]), all(&[50.0])]);
        let d = s.step(1.0, &[all(&[100.0]), vec![None]]);
        assert_eq!(d.desired, 2.0, "old queue demand of 5 must not vote");
        assert_eq!(
            d.signals[1].smoothed_demand,
            Some(5.0),
            "but it is still shown"
        );
        let none = s.step(2.0, &[vec![None], vec![None]]);
        assert!(!none.has_data);
        assert!(none.active, "activation does not change without data");
    }
}
