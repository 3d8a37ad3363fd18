//! Numbers that cannot be trusted, turned into the safe answer.
//!
//! A reading that is not finite (a replica reporting `+Inf`), or readings whose sum overflows
//! (two replicas at 1e308), say "more than can be counted", never "nothing": the scorer gives
//! such a signal `maxReplicas` and flags it. This is the engine's last line behind it: a decision
//! whose desired count still comes out not finite is raised to `maxReplicas`, active, and says
//! why; it is never reported as 0.

use crate::score::Decision;

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
    use crate::score::Scorer;

    #[test]
    fn a_decision_that_is_not_finite_asks_for_max_replicas() {
        let metadata = crate::fixtures::meta(&[
            ("endpoints", "http://10.0.0.7:8000/metrics"),
            ("queueTarget", "1"),
            ("maxReplicas", "40"),
        ]);
        let mut scorer = Scorer::new(crate::spec::parse(&metadata).unwrap().scorer_config());
        let mut d = scorer.step(1.0, &[vec![Some(3.0)]]);
        assert!(!untrustworthy(&d));
        d.desired = f64::NAN;
        assert!(untrustworthy(&d));
        let safe = ask_for_max(d, 40.0);
        assert_eq!((safe.desired, safe.active), (40.0, true));
        assert!(safe.clamped.unwrap().contains("not finite"));
    }
}
