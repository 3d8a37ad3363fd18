//! Per-signal demand in replica units, the composite desired capacity, and activation.
//!
//! Every signal is turned into "how many replicas this signal asks for" so that signals with
//! different units can be compared; the composite is the largest smoothed demand. The HPA then only
//! has to compute `ceil(desired / 1)`, which is independent of how many pods run.

use super::ewma::{Ewma, Smoothing};

/// How a signal's per-pod readings become a demand in replicas.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DemandModel {
    /// A per-pod percentage with a target percentage: demand = sum(value / target).
    Utilisation,
    /// A per-pod count with a target count per replica: demand = total / target.
    Quantity,
    /// A per-pod p95 with a target: demand = pods x p95 / target, only while p95 is above target,
    /// else 0 (fast responses are no reason to remove replicas).
    Latency,
}

/// One signal of a ScaledObject: its name (for breakdowns), model and target.
#[derive(Clone, Debug, PartialEq)]
pub struct SignalRule {
    pub name: String,
    pub model: DemandModel,
    pub target: f64,
}

/// The demand one sampling of one signal asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Demand {
    /// Replicas asked for; None when no pod reported the signal.
    pub raw: Option<f64>,
    /// Aggregated reading: mean for utilisation and latency, sum for quantities.
    pub value: Option<f64>,
    pub reporting: usize,
    pub missing: usize,
}

/// Demand of one signal from the readings of every known pod (None: that pod did not report).
///
/// Missing pods follow the HPA's rule: they count as 0 when the reporting pods ask for more
/// replicas, and as exactly at target when they ask for fewer, so a scrape gap never causes a
/// scale-down or a flap; if counting them as 0 would turn a scale-up into a scale-down, the demand
/// holds at the current pod count.
pub fn demand(model: DemandModel, target: f64, pods: &[Option<f64>]) -> Demand {
    let readings: Vec<f64> = pods
        .iter()
        .flatten()
        .filter(|v| v.is_finite())
        .map(|v| v.max(0.0))
        .collect();
    let reporting = readings.len();
    let missing = pods.len() - reporting;
    if reporting == 0 || target <= 0.0 || !target.is_finite() {
        return Demand {
            raw: None,
            value: None,
            reporting,
            missing,
        };
    }
    let sum: f64 = readings.iter().sum();
    let mean = sum / reporting as f64;
    let value = match model {
        DemandModel::Quantity => sum,
        DemandModel::Utilisation | DemandModel::Latency => mean,
    };
    if model == DemandModel::Latency && mean <= target {
        return Demand {
            raw: Some(0.0),
            value: Some(value),
            reporting,
            missing,
        };
    }
    let asked = sum / target;
    let raw = if missing == 0 {
        asked
    } else if asked > reporting as f64 {
        asked.max(pods.len() as f64)
    } else {
        asked + missing as f64
    };
    Demand {
        raw: Some(raw),
        value: Some(value),
        reporting,
        missing,
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
}

/// The smoothing and activation state of one ScaledObject. Deterministic: the same readings at the
/// same times give the same decisions, which is what lets the simulator run the server's code.
#[derive(Clone, Debug)]
pub struct Scorer {
    config: ScorerConfig,
    ewmas: Vec<Ewma>,
    active: bool,
}

impl Scorer {
    pub fn new(config: ScorerConfig) -> Self {
        let ewmas = vec![Ewma::new(); config.signals.len()];
        Scorer {
            config,
            ewmas,
            active: false,
        }
    }

    pub fn config(&self) -> &ScorerConfig {
        &self.config
    }

    pub fn is_active(&self) -> bool {
        self.active
    }

    /// Scores one sampling. `readings[i]` holds the per-pod values of `config.signals[i]`; a
    /// signal with fewer entries than rules is treated as not reported.
    pub fn step(&mut self, t: f64, readings: &[Vec<Option<f64>>]) -> Decision {
        let mut signals = Vec::with_capacity(self.config.signals.len());
        let mut composite_raw: Option<f64> = None;
        let mut best: Option<(f64, usize)> = None;
        for (i, rule) in self.config.signals.iter().enumerate() {
            let pods = readings.get(i).map(Vec::as_slice).unwrap_or(&[]);
            let d = demand(rule.model, rule.target, pods);
            let mut panicked = false;
            let smoothed = match d.raw {
                Some(raw) => {
                    let o = self.ewmas[i].observe(raw, t, &self.config.smoothing);
                    panicked = o.panicked;
                    composite_raw = Some(composite_raw.map_or(raw, |c| c.max(raw)));
                    if best.is_none_or(|(b, _)| o.value > b) {
                        best = Some((o.value, i));
                    }
                    Some(o.value)
                }
                // No pod reported: the old average is shown but does not vote.
                None => self.ewmas[i].value(),
            };
            signals.push(SignalDecision {
                name: rule.name.clone(),
                model: rule.model,
                target: rule.target,
                value: d.value,
                raw_demand: d.raw,
                smoothed_demand: smoothed,
                reporting: d.reporting,
                missing: d.missing,
                panicked,
            });
        }

        let has_data = best.is_some();
        let composite_smoothed = best.map_or(0.0, |(v, _)| v);
        let composite_raw = composite_raw.unwrap_or(0.0);
        if has_data {
            let a = self.config.activation;
            if !self.active
                && (composite_raw > a.activate_above || composite_smoothed > a.activate_above)
            {
                self.active = true;
            } else if self.active
                && composite_raw < a.deactivate_below
                && composite_smoothed < a.deactivate_below
            {
                self.active = false;
            }
        }
        let (desired, clamped) = clamp(composite_smoothed, self.config.limits);
        Decision {
            at: t,
            desired,
            composite_raw,
            composite_smoothed,
            active: self.active,
            limiting: best.map(|(_, i)| self.config.signals[i].name.clone()),
            clamped,
            has_data,
            signals,
        }
    }
}

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
        }
    }

    fn rule(name: &str, model: DemandModel, target: f64) -> SignalRule {
        SignalRule {
            name: name.into(),
            model,
            target,
        }
    }

    #[test]
    fn utilisation_demand_is_pods_times_mean_over_target() {
        let d = demand(DemandModel::Utilisation, 50.0, &all(&[100.0, 50.0, 0.0]));
        assert_eq!(d.raw, Some(3.0));
        assert_eq!(d.value, Some(50.0));
    }

    #[test]
    fn quantity_demand_is_total_over_target() {
        let d = demand(DemandModel::Quantity, 10.0, &all(&[30.0, 30.0]));
        assert_eq!(d.raw, Some(6.0));
        assert_eq!(d.value, Some(60.0));
    }

    #[test]
    fn latency_only_pushes_up() {
        let slow = demand(DemandModel::Latency, 0.5, &all(&[1.0, 1.0]));
        assert_eq!(slow.raw, Some(4.0));
        let fast = demand(DemandModel::Latency, 0.5, &all(&[0.1, 0.2]));
        assert_eq!(fast.raw, Some(0.0), "fast responses ask for nothing");
    }

    #[test]
    fn missing_pods_count_as_zero_when_scaling_up() {
        // Two of four pods report 30 queued each, target 10: they ask for 6 > 4 running.
        let pods = vec![Some(30.0), None, Some(30.0), None];
        let d = demand(DemandModel::Quantity, 10.0, &pods);
        assert_eq!(d.raw, Some(6.0));
        assert_eq!((d.reporting, d.missing), (2, 2));
    }

    #[test]
    fn missing_pods_count_at_target_when_scaling_down() {
        // Two of four report idle: without the rule demand would be 0 and scale down.
        let pods = vec![Some(0.0), None, Some(0.0), None];
        assert_eq!(demand(DemandModel::Utilisation, 60.0, &pods).raw, Some(2.0));
    }

    #[test]
    fn missing_pods_hold_when_the_direction_would_flip() {
        // Reporting pods ask for 3 (> 2 reporting) but fewer than the 4 running: hold at 4.
        let pods = vec![Some(90.0), Some(90.0), None, None];
        assert_eq!(demand(DemandModel::Utilisation, 60.0, &pods).raw, Some(4.0));
    }

    #[test]
    fn no_reporting_pod_means_no_vote() {
        let d = demand(DemandModel::Quantity, 10.0, &[None, None]);
        assert_eq!(d.raw, None);
        assert_eq!(d.missing, 2);
        assert_eq!(demand(DemandModel::Quantity, 10.0, &[]).raw, None);
    }

    #[test]
    fn bad_readings_are_ignored_and_negatives_clamped() {
        let pods = vec![Some(f64::NAN), Some(-5.0), Some(20.0)];
        let d = demand(DemandModel::Quantity, 10.0, &pods);
        assert_eq!(d.reporting, 2);
        assert_eq!(
            d.raw,
            Some(2.0 + 1.0),
            "NaN pod counts as missing at target"
        );
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
        c.smoothing = Smoothing {
            up_half_life_s: 30.0,
            down_half_life_s: 30.0,
            panic_threshold: 2.0,
        };
        let mut s = Scorer::new(c);
        s.step(0.0, &[all(&[0.0])]);
        assert!(
            s.step(1.0, &[all(&[1.0])]).active,
            "raw 1.0 activates at once"
        );
        // Raw drops to zero but the average is still near 1: stays active.
        assert!(s.step(2.0, &[all(&[0.0])]).active);
        let mut t = 2.0;
        while s.is_active() {
            t += 5.0;
            s.step(t, &[all(&[0.0])]);
            assert!(t < 200.0, "never deactivated");
        }
        assert!(t > 30.0, "deactivated too early at {t}");
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
