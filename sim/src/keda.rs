//! KEDA's part of scaling a ScaledObject: every polling interval it asks each trigger whether the
//! workload is active, scales 0 -> 1 (or to minReplicaCount) on activity and back to 0 once
//! nothing has been active for cooldownPeriod; between 1 and max the HPA it generated decides.
//! Pure and clock-free like `hpa`, so the live demo can drive real Deployments with it.
//!
//! ```
//! use keda_gpu_sim::keda::{poll, Keda, KedaState};
//! let keda = Keda::default(); // pollingInterval 30 s, cooldownPeriod 300 s, min 0, max 100
//! let mut state = KedaState::default();
//! assert_eq!(poll(0.0, &keda, &mut state, true, 0), Some(1)); // activation
//! assert_eq!(poll(30.0, &keda, &mut state, false, 3), None); // cooling down
//! assert_eq!(poll(300.0, &keda, &mut state, false, 3), Some(0)); // 300 s after last active
//! ```

/// A ScaledObject's KEDA-level settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Keda {
    pub polling_interval_s: f64,
    pub cooldown_period_s: f64,
    pub min_replica_count: u32,
    pub max_replica_count: u32,
}

impl Default for Keda {
    /// KEDA's documented defaults.
    fn default() -> Self {
        Keda {
            polling_interval_s: 30.0,
            cooldown_period_s: 300.0,
            min_replica_count: 0,
            max_replica_count: 100,
        }
    }
}

impl Keda {
    /// The generated HPA's minReplicas: KEDA never lets the HPA go below 1; 0 is its own business.
    pub fn hpa_min_replicas(&self) -> u32 {
        self.min_replica_count.max(1)
    }

    /// Whether a poll is due at `now` given the previous one.
    pub fn poll_due(&self, now: f64, state: &KedaState) -> bool {
        state
            .last_poll
            .is_none_or(|t| now - t >= self.polling_interval_s - 1e-9)
    }
}

/// What KEDA remembers about a ScaledObject (its `status.lastActiveTime`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct KedaState {
    pub last_active: Option<f64>,
    pub last_poll: Option<f64>,
}

/// One polling cycle at `now`: `active` is the OR of the triggers' IsActive. Returns the replica
/// count KEDA writes itself (activation from 0, deactivation to 0, raising to minReplicaCount), or
/// None when the HPA stays in charge.
pub fn poll(
    now: f64,
    keda: &Keda,
    state: &mut KedaState,
    active: bool,
    current: u32,
) -> Option<u32> {
    state.last_poll = Some(now);
    if active {
        state.last_active = Some(now);
        if current == 0 {
            return Some(keda.hpa_min_replicas().min(keda.max_replica_count));
        }
    } else if current > 0 && keda.min_replica_count == 0 {
        // Never active so far counts as cooled down, as in KEDA's scale executor.
        let cooled = state
            .last_active
            .is_none_or(|t| now - t >= keda.cooldown_period_s);
        if cooled {
            return Some(0);
        }
    }
    if current < keda.min_replica_count {
        return Some(keda.min_replica_count);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activation_scales_from_zero_to_the_hpa_minimum() {
        let keda = Keda {
            min_replica_count: 0,
            ..Keda::default()
        };
        let mut s = KedaState::default();
        assert_eq!(
            poll(0.0, &keda, &mut s, false, 0),
            None,
            "inactive at zero stays at zero"
        );
        assert_eq!(poll(30.0, &keda, &mut s, true, 0), Some(1));
        assert_eq!(
            poll(60.0, &keda, &mut s, true, 4),
            None,
            "between 1 and max the HPA decides"
        );
        let keda = Keda {
            min_replica_count: 3,
            ..Keda::default()
        };
        assert_eq!(
            poll(0.0, &keda, &mut KedaState::default(), true, 0),
            Some(3)
        );
        assert_eq!(
            poll(0.0, &keda, &mut KedaState::default(), false, 1),
            Some(3)
        );
    }

    #[test]
    fn cooldown_counts_from_the_last_active_poll() {
        let keda = Keda::default();
        let mut s = KedaState::default();
        assert_eq!(poll(0.0, &keda, &mut s, true, 2), None);
        assert_eq!(poll(100.0, &keda, &mut s, true, 2), None);
        for t in [130.0, 200.0, 399.0] {
            assert_eq!(poll(t, &keda, &mut s, false, 2), None, "t={t}");
        }
        assert_eq!(poll(400.0, &keda, &mut s, false, 2), Some(0));
        // With minReplicaCount > 0 KEDA never scales to zero.
        let keda = Keda {
            min_replica_count: 1,
            ..Keda::default()
        };
        assert_eq!(poll(10_000.0, &keda, &mut s, false, 2), None);
    }

    #[test]
    fn never_active_scales_to_zero_at_once_and_polls_follow_the_interval() {
        let keda = Keda {
            polling_interval_s: 15.0,
            ..Keda::default()
        };
        let mut s = KedaState::default();
        assert!(keda.poll_due(0.0, &s));
        assert_eq!(poll(0.0, &keda, &mut s, false, 1), Some(0));
        assert!(!keda.poll_due(14.0, &s));
        assert!(keda.poll_due(15.0, &s));
    }
}
