//! Per-signal demand in replica units: how one signal's per-pod readings become the replicas it
//! asks for (utilisation, quantity, backlog and latency models), with the HPA's rule for pods
//! that did not report.

/// How a signal's per-pod readings become a demand in replicas.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DemandModel {
    /// A per-pod percentage with a target percentage: demand = sum(value / target).
    Utilisation,
    /// A per-pod count with a target count per replica: demand = total / target.
    Quantity,
    /// A latency that more replicas can lower (queue wait, time to first token) with a target:
    /// while it is above target, the replicas the present load keeps busy times
    /// `min(latency / target, LATENCY_MAX_BOOST)`, else 0. Bounded by load evidence, never by the
    /// pod count, so a latency that replicas cannot lower does not ratchet capacity up.
    Latency,
    /// Requests waiting, drained over a horizon: the concurrency the replicas already serve plus
    /// the extra concurrency that would drain the backlog within `drain_s`, over the concurrency
    /// one replica is built for (see `backlog_demand`).
    Backlog,
}

/// How far above the load evidence a latency signal may push: a latency twice the target or more
/// asks for at most twice the replicas the present load keeps busy.
pub const LATENCY_MAX_BOOST: f64 = 2.0;

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
/// holds at the current pod count. A reading of +inf, or a sum that overflows, gives an infinite
/// demand, which the scorer turns into maxReplicas (never into 0).
pub fn demand(model: DemandModel, target: f64, pods: &[Option<f64>]) -> Demand {
    demand_with(model, target, pods, |sum| sum / target)
}

/// `demand` with the replicas asked for computed by `asked` from the sum of the reporting pods'
/// readings; the missing-pod rule is applied to what it returns.
pub(crate) fn demand_with(
    model: DemandModel,
    target: f64,
    pods: &[Option<f64>],
    asked: impl Fn(f64) -> f64,
) -> Demand {
    // NaN is no reading; +inf is a reading too large to count (kept, so it overflows below).
    let readings: Vec<f64> = pods
        .iter()
        .flatten()
        .filter(|v| !v.is_nan())
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
        DemandModel::Quantity | DemandModel::Backlog => sum,
        DemandModel::Utilisation | DemandModel::Latency => mean,
    };
    let asked = asked(sum);
    let raw = if !asked.is_finite() {
        f64::INFINITY
    } else if missing == 0 {
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

/// Replicas asked for by a backlog of `queued` requests when `inflight` are in service, with mean
/// service time `service_s`, `concurrency` requests per replica and a drain horizon `drain_s`:
///
/// `(inflight + queued x service_s / drain_s) / concurrency`
///
/// By Little's law `inflight / concurrency` is the replicas the arrival rate the fleet serves
/// needs; draining `queued` requests of `service_s` each within `drain_s` needs
/// `queued x service_s / drain_s` more requests in service. Replicas already starting are part of
/// the count the HPA compares this with, so they are credited, not asked for again; and because a
/// backlog drains in `drain_s` rather than in one service time, a queue that builds up during a
/// cold start asks for what will clear it, not one replica per queued batch.
pub fn backlog_demand(
    queued: f64,
    inflight: f64,
    service_s: f64,
    concurrency: f64,
    drain_s: f64,
) -> f64 {
    (inflight + queued * service_s / drain_s) / concurrency
}

/// Replicas asked for by a latency `value` against `target` when the present load keeps `busy`
/// replicas busy: `busy x min(value / target, LATENCY_MAX_BOOST)` above target, else 0.
pub fn latency_demand(value: f64, target: f64, busy: f64) -> f64 {
    if value <= target {
        0.0
    } else {
        busy * (value / target).min(LATENCY_MAX_BOOST)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(values: &[f64]) -> Vec<Option<f64>> {
        values.iter().copied().map(Some).collect()
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
    fn latency_only_pushes_up_and_is_bounded_by_load() {
        assert_eq!(
            latency_demand(1.0, 0.5, 3.0),
            6.0,
            "twice the target doubles"
        );
        assert_eq!(
            latency_demand(10.0, 0.5, 3.0),
            6.0,
            "at most LATENCY_MAX_BOOST"
        );
        assert_eq!(
            latency_demand(0.4, 0.5, 3.0),
            0.0,
            "fast answers ask for nothing"
        );
        assert_eq!(latency_demand(10.0, 0.5, 0.0), 0.0, "no load, no demand");
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
}
