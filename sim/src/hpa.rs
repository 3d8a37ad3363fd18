//! The Horizontal Pod Autoscaler's replica calculation, as `kube-controller-manager` runs it every
//! sync period: per-metric proposals (Resource utilisation with ready-pod accounting, External
//! `Value` and `AverageValue`), tolerance, the max across metrics, stabilisation windows and the
//! behaviour rate policies. Pure and clock-free: the caller passes `now`, so the simulator replays
//! it in virtual time and the live demo drives real Deployments with the same code in real time.
//!
//! ```
//! use keda_gpu_sim::hpa::{sync, Hpa, HpaState, Metric, Observed};
//! let hpa = Hpa::new(1, 10); // default behaviour, tolerance 0.1
//! let mut state = HpaState::default();
//! // KEDA reports 7.3 against an AverageValue target of 1 while 3 replicas run.
//! let out = sync(0.0, &hpa, &mut state, &Observed {
//!     current_replicas: 3,
//!     ready_pods: 3,
//!     metrics: vec![Metric::AverageValue { value: Some(7.3), target: 1.0 }],
//! });
//! assert_eq!(out.desired, 7); // ceil(7.3) = 8, but the default scale-up allows +4 per 15 s
//! ```

/// One metric as the HPA reads it at a sync.
#[derive(Clone, Debug, PartialEq)]
pub enum Metric {
    /// Resource utilisation (CPU): one entry per pod of the scale target, percent of request.
    Utilization {
        target_pct: f64,
        pods: Vec<PodMetric>,
    },
    /// External metric, `target.averageValue` (KEDA's default metricType): the proposal is
    /// `ceil(value / target)` whatever the pod count. `None` when the metric could not be read.
    AverageValue { value: Option<f64>, target: f64 },
    /// External metric, `target.value`: `ceil(readyPods x value / target)`.
    Value { value: Option<f64>, target: f64 },
}

/// A pod's reading for a Resource metric.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PodMetric {
    pub ready: bool,
    /// None: the pod is ready but metrics-server has no sample for it yet.
    pub value: Option<f64>,
}

/// What the HPA observes at one sync.
#[derive(Clone, Debug, PartialEq)]
pub struct Observed {
    /// The scale target's `spec.replicas`.
    pub current_replicas: u32,
    /// Pods that are Running and Ready.
    pub ready_pods: u32,
    pub metrics: Vec<Metric>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PolicyKind {
    Pods,
    Percent,
}

/// One `behavior.scaleUp/scaleDown.policies[]` entry.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RatePolicy {
    pub kind: PolicyKind,
    pub value: u32,
    pub period_s: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Select {
    /// The policy allowing the largest change (the default).
    Max,
    /// The policy allowing the smallest change.
    Min,
    Disabled,
}

/// `behavior.scaleUp` or `behavior.scaleDown`.
#[derive(Clone, Debug, PartialEq)]
pub struct Rules {
    pub stabilization_window_s: f64,
    pub select: Select,
    pub policies: Vec<RatePolicy>,
}

impl Rules {
    pub fn new(
        stabilization_window_s: f64,
        select: Select,
        policies: &[(PolicyKind, u32, f64)],
    ) -> Self {
        Rules {
            stabilization_window_s,
            select,
            policies: policies
                .iter()
                .map(|&(kind, value, period_s)| RatePolicy {
                    kind,
                    value,
                    period_s,
                })
                .collect(),
        }
    }

    /// Kubernetes' default scale-up: no window, max(100 %, 4 pods) per 15 s.
    pub fn default_up() -> Self {
        Rules::new(
            0.0,
            Select::Max,
            &[
                (PolicyKind::Percent, 100, 15.0),
                (PolicyKind::Pods, 4, 15.0),
            ],
        )
    }

    /// Kubernetes' default scale-down: 300 s window, 100 % per 15 s.
    pub fn default_down() -> Self {
        Rules::new(300.0, Select::Max, &[(PolicyKind::Percent, 100, 15.0)])
    }
}

/// An HPA object's spec.
#[derive(Clone, Debug, PartialEq)]
pub struct Hpa {
    pub min_replicas: u32,
    pub max_replicas: u32,
    /// `--horizontal-pod-autoscaler-tolerance`, 0.1 by default.
    pub tolerance: f64,
    pub scale_up: Rules,
    pub scale_down: Rules,
    /// The HPA has no `spec.behavior` (what KEDA generates unless the ScaledObject sets
    /// `advanced.horizontalPodAutoscalerConfig.behavior`): the controller then applies its
    /// pre-behavior rule instead of `scale_up` / `scale_down`: scale-up at most to
    /// max(2 x current, 4) per sync, scale-down to the highest recommendation of the last
    /// `LEGACY_DOWNSCALE_WINDOW_S`, with no rate limit.
    pub legacy: bool,
}

/// `--horizontal-pod-autoscaler-downscale-stabilization`, 5 minutes by default.
pub const LEGACY_DOWNSCALE_WINDOW_S: f64 = 300.0;

/// Sync period of kube-controller-manager's HPA loop (`--horizontal-pod-autoscaler-sync-period`).
pub const SYNC_PERIOD_S: f64 = 15.0;

impl Hpa {
    /// Default behaviour and tolerance.
    pub fn new(min_replicas: u32, max_replicas: u32) -> Self {
        Hpa {
            min_replicas,
            max_replicas,
            tolerance: 0.1,
            scale_up: Rules::default_up(),
            scale_down: Rules::default_down(),
            legacy: false,
        }
    }

    /// An HPA without `spec.behavior`, as KEDA generates it by default.
    pub fn legacy(min_replicas: u32, max_replicas: u32) -> Self {
        Hpa {
            legacy: true,
            ..Hpa::new(min_replicas, max_replicas)
        }
    }
}

/// What the HPA remembers between syncs: recommendations (for stabilisation) and scale events
/// (for rate policies).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HpaState {
    recommendations: Vec<(f64, u32)>,
    up_events: Vec<(f64, u32)>,
    down_events: Vec<(f64, u32)>,
}

/// Result of one sync.
#[derive(Clone, Debug, PartialEq)]
pub struct SyncOutcome {
    /// The replica count the HPA writes to the scale target.
    pub desired: u32,
    /// Each metric's proposal (None: the metric could not be computed).
    pub proposals: Vec<Option<u32>>,
    /// Max across metrics, before stabilisation and rate limits.
    pub recommended: u32,
}

/// One HPA sync at time `now` (seconds, any monotonic clock). Mutates `state` as the controller
/// does and returns the replica count to write. At zero replicas the HPA does nothing (KEDA owns
/// 0 <-> 1).
pub fn sync(now: f64, hpa: &Hpa, state: &mut HpaState, observed: &Observed) -> SyncOutcome {
    let current = observed.current_replicas;
    let proposals: Vec<Option<u32>> = observed
        .metrics
        .iter()
        .map(|m| proposal(m, current, observed.ready_pods, hpa.tolerance))
        .collect();
    let valid: Vec<u32> = proposals.iter().flatten().copied().collect();
    let any_invalid = valid.len() < proposals.len();
    let recommended = match valid.iter().max() {
        None => current,
        // A failed metric blocks scale-down: it might have asked for more.
        Some(&m) if any_invalid && m < current => current,
        Some(&m) => m,
    };
    let desired = if current == 0 && hpa.min_replicas > 0 {
        0
    } else if current > hpa.max_replicas {
        hpa.max_replicas
    } else if current < hpa.min_replicas {
        hpa.min_replicas
    } else if hpa.legacy {
        legacy_normalize(now, hpa, state, current, recommended)
    } else {
        let stabilized = stabilize(now, hpa, state, current, recommended);
        rate_limit(now, hpa, state, current, stabilized)
    };
    if desired != current {
        let events = if desired > current {
            &mut state.up_events
        } else {
            &mut state.down_events
        };
        events.push((now, desired.abs_diff(current)));
    }
    let longest = hpa
        .scale_up
        .policies
        .iter()
        .chain(&hpa.scale_down.policies)
        .map(|p| p.period_s)
        .fold(0.0, f64::max);
    state.up_events.retain(|e| e.0 > now - longest);
    state.down_events.retain(|e| e.0 > now - longest);
    SyncOutcome {
        desired,
        proposals,
        recommended,
    }
}

fn within(ratio: f64, tolerance: f64) -> bool {
    (1.0 - ratio).abs() <= tolerance
}

fn ceil_u32(x: f64) -> u32 {
    if x.is_finite() && x > 0.0 {
        x.ceil().min(u32::MAX as f64) as u32
    } else {
        0
    }
}

/// One metric's replica proposal (replica_calculator.go).
fn proposal(metric: &Metric, current: u32, ready_pods: u32, tolerance: f64) -> Option<u32> {
    match metric {
        Metric::AverageValue { value, target } => {
            let value = (*value)?;
            if *target <= 0.0 {
                return None;
            }
            let ratio = value / (target * current as f64);
            if current > 0 && within(ratio, tolerance) {
                Some(current)
            } else {
                Some(ceil_u32(value / target))
            }
        }
        Metric::Value { value, target } => {
            let value = (*value)?;
            if *target <= 0.0 {
                return None;
            }
            let ratio = value / target;
            if current == 0 {
                Some(ceil_u32(ratio))
            } else if within(ratio, tolerance) {
                Some(current)
            } else {
                Some(ceil_u32(ratio * ready_pods as f64))
            }
        }
        Metric::Utilization { target_pct, pods } => {
            utilization_proposal(*target_pct, pods, current, tolerance)
        }
    }
}

fn utilization_proposal(
    target: f64,
    pods: &[PodMetric],
    current: u32,
    tolerance: f64,
) -> Option<u32> {
    let measured: Vec<f64> = pods
        .iter()
        .filter(|p| p.ready)
        .filter_map(|p| p.value)
        .collect();
    let missing = pods.iter().filter(|p| p.ready && p.value.is_none()).count();
    let unready = pods.iter().filter(|p| !p.ready).count();
    if measured.is_empty() || target <= 0.0 {
        // "did not receive metrics for any ready pods": the metric fails this sync.
        return None;
    }
    let ratio = measured.iter().sum::<f64>() / measured.len() as f64 / target;
    let scale_up_with_unready = unready > 0 && ratio > 1.0;
    if !scale_up_with_unready && missing == 0 {
        if within(ratio, tolerance) {
            return Some(current);
        }
        return Some(ceil_u32(ratio * measured.len() as f64));
    }
    // Be conservative: pods without metrics count as at target when scaling down and as idle when
    // scaling up; unready pods count as idle when scaling up.
    let mut sum: f64 = measured.iter().sum();
    let mut n = measured.len();
    if missing > 0 {
        if ratio < 1.0 {
            sum += target * missing as f64;
        }
        n += missing;
    }
    if scale_up_with_unready {
        n += unready;
    }
    let new_ratio = sum / n as f64 / target;
    if within(new_ratio, tolerance)
        || (ratio > 1.0 && new_ratio < 1.0)
        || (ratio < 1.0 && new_ratio > 1.0)
    {
        return Some(current);
    }
    let replicas = ceil_u32(new_ratio * n as f64);
    if (new_ratio < 1.0 && replicas > current) || (new_ratio > 1.0 && replicas < current) {
        return Some(current);
    }
    Some(replicas)
}

/// Scale-up takes the lowest recommendation in its window, scale-down the highest in its own.
fn stabilize(now: f64, hpa: &Hpa, state: &mut HpaState, current: u32, recommended: u32) -> u32 {
    let up_cutoff = now - hpa.scale_up.stabilization_window_s;
    let down_cutoff = now - hpa.scale_down.stabilization_window_s;
    let mut up = recommended;
    let mut down = recommended;
    for &(t, r) in &state.recommendations {
        if t > up_cutoff {
            up = up.min(r);
        }
        if t > down_cutoff {
            down = down.max(r);
        }
    }
    let mut result = current;
    if result < up {
        result = up;
    }
    if result > down {
        result = down;
    }
    let keep = up_cutoff.min(down_cutoff);
    state.recommendations.retain(|&(t, _)| t > keep);
    state.recommendations.push((now, recommended));
    result
}

/// The controller's rule for an HPA without `behavior` (`normalizeDesiredReplicas` and
/// `convertDesiredReplicasWithRules`): the highest recommendation of the downscale window, then
/// clamped to [minReplicas, min(maxReplicas, max(2 x current, 4))].
fn legacy_normalize(
    now: f64,
    hpa: &Hpa,
    state: &mut HpaState,
    current: u32,
    recommended: u32,
) -> u32 {
    let cutoff = now - LEGACY_DOWNSCALE_WINDOW_S;
    state.recommendations.retain(|&(t, _)| t > cutoff);
    let stabilized = state
        .recommendations
        .iter()
        .map(|&(_, r)| r)
        .fold(recommended, u32::max);
    state.recommendations.push((now, recommended));
    let scale_up_limit = current.saturating_mul(2).max(4);
    stabilized
        .min(hpa.max_replicas.min(scale_up_limit))
        .max(hpa.min_replicas)
}

fn changed_in(events: &[(f64, u32)], now: f64, period_s: f64) -> i64 {
    events
        .iter()
        .filter(|e| e.0 > now - period_s)
        .map(|e| e.1 as i64)
        .sum()
}

fn scale_up_limit(now: f64, state: &HpaState, current: u32, rules: &Rules) -> i64 {
    if rules.select == Select::Disabled || rules.policies.is_empty() {
        return current as i64;
    }
    let mut result: Option<i64> = None;
    for p in &rules.policies {
        let start = current as i64 - changed_in(&state.up_events, now, p.period_s)
            + changed_in(&state.down_events, now, p.period_s);
        let proposed = match p.kind {
            PolicyKind::Pods => start + p.value as i64,
            PolicyKind::Percent => (start as f64 * (1.0 + p.value as f64 / 100.0)).ceil() as i64,
        };
        result = Some(match (result, rules.select) {
            (None, _) => proposed,
            (Some(r), Select::Min) => r.min(proposed),
            (Some(r), _) => r.max(proposed),
        });
    }
    result.unwrap_or(current as i64)
}

fn scale_down_limit(now: f64, state: &HpaState, current: u32, rules: &Rules) -> i64 {
    if rules.select == Select::Disabled || rules.policies.is_empty() {
        return current as i64;
    }
    let mut result: Option<i64> = None;
    for p in &rules.policies {
        let start = current as i64 + changed_in(&state.down_events, now, p.period_s)
            - changed_in(&state.up_events, now, p.period_s);
        let proposed = match p.kind {
            PolicyKind::Pods => start - p.value as i64,
            // Truncation, as the controller's int32 conversion does.
            PolicyKind::Percent => (start as f64 * (1.0 - p.value as f64 / 100.0)) as i64,
        };
        // For scale-down "Max" means the largest change, i.e. the fewest replicas.
        result = Some(match (result, rules.select) {
            (None, _) => proposed,
            (Some(r), Select::Min) => r.max(proposed),
            (Some(r), _) => r.min(proposed),
        });
    }
    result.unwrap_or(current as i64)
}

fn rate_limit(now: f64, hpa: &Hpa, state: &HpaState, current: u32, desired: u32) -> u32 {
    if desired > current {
        let limit = scale_up_limit(now, state, current, &hpa.scale_up).max(current as i64);
        let allowed = (hpa.max_replicas as i64).min(limit);
        (desired as i64).min(allowed) as u32
    } else if desired < current {
        let limit = scale_down_limit(now, state, current, &hpa.scale_down).min(current as i64);
        let allowed = (hpa.min_replicas as i64).max(limit);
        (desired as i64).max(allowed) as u32
    } else {
        desired
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(current: u32, metrics: Vec<Metric>) -> Observed {
        Observed {
            current_replicas: current,
            ready_pods: current,
            metrics,
        }
    }

    fn value(v: f64, target: f64) -> Metric {
        Metric::Value {
            value: Some(v),
            target,
        }
    }

    fn no_limits(min: u32, max: u32) -> Hpa {
        Hpa {
            scale_up: Rules::new(0.0, Select::Max, &[(PolicyKind::Percent, 10_000, 15.0)]),
            scale_down: Rules::new(0.0, Select::Max, &[(PolicyKind::Percent, 100, 15.0)]),
            ..Hpa::new(min, max)
        }
    }

    fn cpu(values: &[Option<f64>], unready: usize) -> Vec<PodMetric> {
        let mut pods: Vec<PodMetric> = values
            .iter()
            .map(|&value| PodMetric { ready: true, value })
            .collect();
        pods.extend((0..unready).map(|_| PodMetric {
            ready: false,
            value: None,
        }));
        pods
    }

    /// Docs, "Algorithm details": 200m current vs 100m desired doubles; 50m halves; 1.05 is inside
    /// the tolerance.
    #[test]
    fn docs_ratio_examples() {
        let hpa = no_limits(1, 100);
        let run = |current, v| {
            sync(
                0.0,
                &hpa,
                &mut HpaState::default(),
                &obs(current, vec![value(v, 100.0)]),
            )
            .desired
        };
        assert_eq!(run(4, 200.0), 8);
        assert_eq!(run(4, 50.0), 2);
        assert_eq!(run(4, 105.0), 4);
        assert_eq!(run(4, 111.0), 5, "ceil(4 x 1.11)");
    }

    /// AverageValue ignores the pod count: desired = ceil(value / target) (what KEDA relies on).
    #[test]
    fn average_value_ignores_pod_count() {
        let hpa = no_limits(1, 100);
        for current in [1, 3, 9] {
            let o = sync(
                0.0,
                &hpa,
                &mut HpaState::default(),
                &obs(
                    current,
                    vec![Metric::AverageValue {
                        value: Some(6.2),
                        target: 1.0,
                    }],
                ),
            );
            assert_eq!(o.proposals, vec![Some(7)], "{current} replicas");
        }
        // 6.2 / (1 x 6) = 1.03: within tolerance, keep 6.
        let o = sync(
            0.0,
            &hpa,
            &mut HpaState::default(),
            &obs(
                6,
                vec![Metric::AverageValue {
                    value: Some(6.2),
                    target: 1.0,
                }],
            ),
        );
        assert_eq!(o.desired, 6);
    }

    /// Docs: "the HPA takes the largest proposal"; a failed metric blocks scale-down only.
    #[test]
    fn max_across_metrics_and_failed_metrics() {
        let hpa = no_limits(1, 100);
        let o = sync(
            0.0,
            &hpa,
            &mut HpaState::default(),
            &obs(4, vec![value(50.0, 100.0), value(300.0, 100.0)]),
        );
        assert_eq!(
            (o.proposals.clone(), o.desired),
            (vec![Some(2), Some(12)], 12)
        );
        let failed = Metric::Value {
            value: None,
            target: 1.0,
        };
        let o = sync(
            0.0,
            &hpa,
            &mut HpaState::default(),
            &obs(4, vec![value(50.0, 100.0), failed.clone()]),
        );
        assert_eq!(o.desired, 4, "no scale-down while a metric is unknown");
        let o = sync(
            0.0,
            &hpa,
            &mut HpaState::default(),
            &obs(4, vec![value(200.0, 100.0), failed]),
        );
        assert_eq!(o.desired, 8, "scale-up still happens");
    }

    /// Docs: missing metrics count as 100 % of target on scale-down and 0 % on scale-up; unready
    /// pods count as 0 % on scale-up, and a recomputed ratio that flips direction means no change.
    #[test]
    fn ready_pod_accounting() {
        let hpa = no_limits(1, 100);
        let run = |pods: Vec<PodMetric>| {
            let current = pods.len() as u32;
            let o = Observed {
                current_replicas: current,
                ready_pods: current,
                metrics: vec![Metric::Utilization {
                    target_pct: 50.0,
                    pods,
                }],
            };
            sync(0.0, &hpa, &mut HpaState::default(), &o).desired
        };
        // All measured: mean 100 % vs 50 % -> ceil(2 x 2) = 4.
        assert_eq!(run(cpu(&[Some(100.0), Some(100.0)], 0)), 4);
        // Two unready pods count as 0 %: mean 50 % -> at target -> keep 4.
        assert_eq!(run(cpu(&[Some(100.0), Some(100.0)], 2)), 4);
        // Two at 150 % and one unready: (300 + 0) / 3 = 100 % -> ceil(2 x 3) = 6.
        assert_eq!(run(cpu(&[Some(150.0), Some(150.0)], 1)), 6);
        // Scale-down with a missing pod: (10 + 10 + 50) / 3 = 23.3 % -> ceil(0.467 x 3) = 2.
        assert_eq!(run(cpu(&[Some(10.0), Some(10.0), None], 0)), 2);
        // Scale-up with a missing pod counted as 0: (60 + 0) / 2 = 30 % < 50 % flips -> keep 2.
        assert_eq!(run(cpu(&[Some(60.0), None], 0)), 2);
        // No ready pod has metrics: the metric fails and the HPA keeps the count.
        assert_eq!(run(cpu(&[None], 1)), 2);
    }

    /// Docs, "Scaling Policies": Pods 4 / 60 s and Percent 10 / 60 s, selectPolicy Max: with 80
    /// replicas heading to 10, the first step removes 8 (10 %), the next from 72 removes 8 again
    /// (72 x 0.9 = 64.8, truncated to 64), and at 40 or fewer the 4-pod policy allows more.
    #[test]
    fn docs_scale_down_policies_example() {
        let hpa = Hpa {
            scale_down: Rules::new(
                0.0,
                Select::Max,
                &[(PolicyKind::Pods, 4, 60.0), (PolicyKind::Percent, 10, 60.0)],
            ),
            ..no_limits(1, 100)
        };
        let mut state = HpaState::default();
        let step = |state: &mut HpaState, now: f64, current: u32| {
            sync(
                now,
                &hpa,
                state,
                &obs(
                    current,
                    vec![Metric::AverageValue {
                        value: Some(10.0),
                        target: 1.0,
                    }],
                ),
            )
            .desired
        };
        assert_eq!(step(&mut state, 0.0, 80), 72);
        // Within the same 60 s period nothing more is allowed.
        assert_eq!(step(&mut state, 15.0, 72), 72);
        assert_eq!(step(&mut state, 60.0, 72), 64);
        let mut state = HpaState::default();
        assert_eq!(step(&mut state, 0.0, 40), 36, "max(4 pods, 10 % = 4) -> 4");
        let mut state = HpaState::default();
        assert_eq!(step(&mut state, 0.0, 30), 26, "4 pods beats 10 % = 3");
    }

    /// selectPolicy Min picks the policy with the smallest change; Disabled forbids the direction.
    #[test]
    fn select_policy_min_and_disabled() {
        let hpa = Hpa {
            scale_down: Rules::new(
                0.0,
                Select::Min,
                &[(PolicyKind::Pods, 4, 60.0), (PolicyKind::Percent, 10, 60.0)],
            ),
            scale_up: Rules::new(0.0, Select::Disabled, &[]),
            ..no_limits(1, 100)
        };
        let o = sync(
            0.0,
            &hpa,
            &mut HpaState::default(),
            &obs(
                80,
                vec![Metric::AverageValue {
                    value: Some(10.0),
                    target: 1.0,
                }],
            ),
        );
        assert_eq!(o.desired, 76, "min(4 pods, 8 pods) -> 4");
        let o = sync(
            0.0,
            &hpa,
            &mut HpaState::default(),
            &obs(
                5,
                vec![Metric::AverageValue {
                    value: Some(10.0),
                    target: 1.0,
                }],
            ),
        );
        assert_eq!(o.desired, 5);
    }

    /// Default scale-up: max(100 %, 4 pods) per 15 s, so 1 -> 5 -> 10 -> 20.
    #[test]
    fn default_scale_up_rate() {
        let hpa = Hpa::new(1, 100);
        let mut state = HpaState::default();
        let mut current = 1;
        let mut seen = Vec::new();
        for k in 0..3 {
            current = sync(
                k as f64 * 15.0,
                &hpa,
                &mut state,
                &obs(
                    current,
                    vec![Metric::AverageValue {
                        value: Some(50.0),
                        target: 1.0,
                    }],
                ),
            )
            .desired;
            seen.push(current);
        }
        assert_eq!(seen, vec![5, 10, 20]);
    }

    /// Docs, "Stabilization window": with the default 300 s scale-down window the highest
    /// recommendation of the last five minutes wins, so a dip does not remove replicas.
    #[test]
    fn scale_down_stabilization_window() {
        let hpa = Hpa::new(1, 100);
        let mut state = HpaState::default();
        let av = |v| {
            vec![Metric::AverageValue {
                value: Some(v),
                target: 1.0,
            }]
        };
        assert_eq!(sync(0.0, &hpa, &mut state, &obs(8, av(8.0))).desired, 8);
        assert_eq!(sync(15.0, &hpa, &mut state, &obs(8, av(3.0))).desired, 8);
        assert_eq!(sync(299.0, &hpa, &mut state, &obs(8, av(3.0))).desired, 8);
        // At 300 s the 8 from t=0 has left the window; the highest left is 3.
        assert_eq!(sync(300.0, &hpa, &mut state, &obs(8, av(3.0))).desired, 3);
    }

    /// A scale-up window takes the lowest recommendation in it (rejects a one-sync spike).
    #[test]
    fn scale_up_stabilization_window() {
        let hpa = Hpa {
            scale_up: Rules::new(60.0, Select::Max, &[(PolicyKind::Percent, 1000, 15.0)]),
            ..Hpa::new(1, 100)
        };
        let mut state = HpaState::default();
        let av = |v| {
            vec![Metric::AverageValue {
                value: Some(v),
                target: 1.0,
            }]
        };
        assert_eq!(sync(0.0, &hpa, &mut state, &obs(2, av(2.0))).desired, 2);
        assert_eq!(sync(15.0, &hpa, &mut state, &obs(2, av(9.0))).desired, 2);
        assert_eq!(sync(75.0, &hpa, &mut state, &obs(2, av(9.0))).desired, 9);
    }

    /// min/max bound the result, and the HPA leaves a scaled-to-zero target alone.
    #[test]
    fn bounds_and_zero() {
        let hpa = no_limits(2, 6);
        let run = |current, v| {
            sync(
                0.0,
                &hpa,
                &mut HpaState::default(),
                &obs(
                    current,
                    vec![Metric::AverageValue {
                        value: Some(v),
                        target: 1.0,
                    }],
                ),
            )
            .desired
        };
        assert_eq!(run(4, 50.0), 6);
        assert_eq!(run(4, 0.0), 2);
        assert_eq!(run(9, 9.0), 6);
        assert_eq!(run(0, 9.0), 0);
        assert_eq!(run(1, 1.0), 2);
    }

    fn avg(v: f64) -> Metric {
        Metric::AverageValue {
            value: Some(v),
            target: 1.0,
        }
    }

    #[test]
    fn legacy_scale_up_is_limited_to_double_or_four() {
        // Kubernetes without behavior: scaleUpLimit = max(2 x current, 4) per sync.
        let hpa = Hpa::legacy(1, 100);
        let mut st = HpaState::default();
        assert_eq!(
            sync(0.0, &hpa, &mut st, &obs(1, vec![avg(50.0)])).desired,
            4
        );
        assert_eq!(
            sync(15.0, &hpa, &mut st, &obs(3, vec![avg(50.0)])).desired,
            6
        );
        assert_eq!(
            sync(30.0, &hpa, &mut st, &obs(30, vec![avg(50.0)])).desired,
            50
        );
        // The v2 default allows more from 1 replica: max(100 %, 4 pods) = 5.
        let v2 = Hpa::new(1, 100);
        let mut st = HpaState::default();
        assert_eq!(sync(0.0, &v2, &mut st, &obs(1, vec![avg(50.0)])).desired, 5);
    }

    #[test]
    fn legacy_scale_down_waits_for_the_window_then_has_no_rate_limit() {
        let hpa = Hpa::legacy(1, 100);
        let mut st = HpaState::default();
        assert_eq!(
            sync(0.0, &hpa, &mut st, &obs(20, vec![avg(20.0)])).desired,
            20
        );
        // The load falls to 2: the highest recommendation of the last 300 s (20) holds.
        assert_eq!(
            sync(15.0, &hpa, &mut st, &obs(20, vec![avg(2.0)])).desired,
            20
        );
        assert_eq!(
            sync(299.0, &hpa, &mut st, &obs(20, vec![avg(2.0)])).desired,
            20
        );
        // Once the 20 is older than 300 s, all the way down in one sync (v2 default: 100 %/15 s
        // would allow the same; a Percent 50 policy would not).
        assert_eq!(
            sync(301.0, &hpa, &mut st, &obs(20, vec![avg(2.0)])).desired,
            2
        );
        // minReplicas still holds.
        let mut st = HpaState::default();
        let hpa = Hpa::legacy(3, 100);
        assert_eq!(sync(0.0, &hpa, &mut st, &obs(5, vec![avg(0.5)])).desired, 3);
    }
}
