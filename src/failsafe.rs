//! Numbers that cannot be trusted, turned into the safe answer.
//!
//! A reading that is not finite (a replica reporting `+Inf`), or readings whose sum overflows
//! (two replicas at 1e308), say "more than can be counted", never "nothing". Such values are kept
//! out of the smoothing state (which would stay poisoned) and the decision asks for `maxReplicas`
//! and says why, until the readings are sane again.

use crate::score::Decision;

/// Replaces untrustworthy values with "no reading" and names the signals that had them.
/// `values[signal][pod]` as `Scorer::step` takes them.
pub fn screen(values: &mut [Vec<Option<f64>>], names: &[String]) -> Vec<String> {
    let mut overflowed = Vec::new();
    for (i, pods) in values.iter_mut().enumerate() {
        let sum: f64 = pods.iter().flatten().filter(|v| !v.is_nan()).sum();
        let bad = pods.iter().flatten().any(|v| v.is_infinite()) || sum.is_infinite();
        // NaN alone means "unknown", which the scorer already treats as a missing pod.
        for v in pods.iter_mut() {
            if v.is_some_and(|v| !v.is_finite()) {
                *v = None;
            }
        }
        if bad {
            for v in pods.iter_mut() {
                *v = None;
            }
            overflowed.push(names.get(i).cloned().unwrap_or_else(|| format!("#{i}")));
        }
    }
    overflowed
}

/// The decision raised to `max_replicas` and active: for readings that overflowed, or a demand
/// that came out not finite.
pub fn ask_for_max(mut decision: Decision, max_replicas: f64) -> Decision {
    decision.desired = max_replicas;
    for v in [
        &mut decision.composite_raw,
        &mut decision.composite_smoothed,
    ] {
        if !v.is_finite() {
            *v = max_replicas;
        }
    }
    decision.active = true;
    decision.has_data = true;
    decision.clamped = Some("maxReplicas (a reading or demand was not finite)");
    decision
}

/// True when the decision cannot be reported as it is.
pub fn untrustworthy(decision: &Decision) -> bool {
    !decision.desired.is_finite() || decision.has_data && !decision.composite_smoothed.is_finite()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn infinite_readings_and_overflowing_sums_are_screened_and_named() {
        let names = vec!["queue".to_string(), "gpu_util".to_string()];
        let mut values = vec![
            vec![Some(1e308), Some(1e308)],
            vec![Some(50.0), Some(f64::NAN)],
        ];
        let bad = screen(&mut values, &names);
        assert_eq!(bad, ["queue"]);
        assert_eq!(values[0], [None, None]);
        assert_eq!(values[1], [Some(50.0), None]);

        let mut inf = vec![vec![Some(f64::INFINITY), Some(3.0)]];
        assert_eq!(screen(&mut inf, &names), ["queue"]);
        let mut fine = vec![vec![Some(1.0), Some(2.0)]];
        assert!(screen(&mut fine, &names).is_empty());
    }
}
