//! The references: perfect foresight with instant starts, and the same plan started one cold
//! start early.

use super::Policy;
use crate::cluster::Cluster;
use crate::hpa;
use crate::metrics::Metrics;

/// The oracle's plan for a cluster that pays the cold start: a replica needed in period `w` is
/// started `cold_start_s` before, so each period holds the most any period up to one cold start
/// ahead needs (a dip shorter than a cold start is bridged, as restarting would cost as much).
pub fn coldstart_plan(plan: &[u32], cold_start_s: f64) -> Vec<u32> {
    let ahead = (cold_start_s / hpa::SYNC_PERIOD_S).ceil() as usize;
    (0..plan.len())
        .map(|w| {
            plan[w..(w + ahead + 1).min(plan.len())]
                .iter()
                .copied()
                .max()
                .unwrap_or(0)
        })
        .collect()
}

/// Policies 8 and 9: perfect foresight: the replicas each sync period needs at full batch
/// (`oracle`, with no cold start) or that plan started one cold start early (`oracle-coldstart`).
pub struct Oracle {
    pub(super) plan: Vec<u32>,
    pub(super) last: Option<u32>,
}

impl Policy for Oracle {
    fn control(&mut self, now: f64, _: &Cluster, _: &Metrics) -> Option<u32> {
        let w = (now / hpa::SYNC_PERIOD_S).floor() as usize;
        let n = *self.plan.get(w).or(self.plan.last())?;
        (self.last != Some(n)).then(|| {
            self.last = Some(n);
            n
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_coldstart_oracle_starts_replicas_one_cold_start_early() {
        // 15 s periods, 30 s cold start: two periods ahead.
        assert_eq!(
            coldstart_plan(&[1, 1, 1, 5, 5, 1, 1, 1], 30.0),
            vec![1, 5, 5, 5, 5, 1, 1, 1]
        );
        // A dip shorter than a cold start is bridged.
        assert_eq!(
            coldstart_plan(&[4, 1, 4, 1, 1, 1], 30.0),
            vec![4, 4, 4, 1, 1, 1]
        );
        assert_eq!(coldstart_plan(&[3, 2], 0.0), vec![3, 2]);
    }
}
