//! llm-d's Workload Variant Autoscaler: saturation thresholds on KV cache and queue, with its
//! spare-capacity triggers and redistribution check.

use std::collections::BTreeMap;

use super::{due, KedaHpa, Policy, Setup, HPA_PHASE_S};
use crate::cluster::Cluster;
use crate::hpa::Metric;
use crate::keda::Keda;
use crate::metrics::Metrics;

/// Policy 6: llm-d's Workload Variant Autoscaler, saturation analyzer, as its documentation
/// specifies it, for one variant: every 60 s, over each ready replica's peak KV-cache usage and
/// waiting requests of the last minute, replicas with KV usage >= 0.8 or queue >= 5 are
/// saturated; the others' average spare KV (0.8 - usage) and spare queue (5 - queue) trigger a
/// scale-up below 0.1 or 3 (or when every replica is saturated), to ready replicas + 1, so
/// replicas still starting are counted; a scale-down to ready - 1 only when at least two replicas
/// are non-saturated and their load spread over one replica fewer still leaves both spares above
/// the triggers. The target goes to KEDA + HPA as an AverageValue metric, like the composite's.
pub struct Wva {
    target: Option<u32>,
    inner: KedaHpa,
    thresholds: WvaThresholds,
}

/// The saturation analyzer's default configuration.
pub const WVA_KV_THRESHOLD: f64 = 0.8;
pub const WVA_QUEUE_THRESHOLD: f64 = 5.0;
pub const WVA_KV_SPARE_TRIGGER: f64 = 0.1;
pub const WVA_QUEUE_SPARE_TRIGGER: f64 = 3.0;
pub const WVA_LOOP_S: f64 = 60.0;

/// The saturation analyzer's thresholds; `Default` is its documented configuration.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WvaThresholds {
    /// KV-cache usage (0..1) at which a replica is saturated.
    pub kv: f64,
    /// Waiting requests at which a replica is saturated.
    pub queue: f64,
    /// Average spare KV below which to scale up.
    pub kv_spare: f64,
    /// Average spare queue below which to scale up.
    pub queue_spare: f64,
}

impl Default for WvaThresholds {
    fn default() -> Self {
        WvaThresholds {
            kv: WVA_KV_THRESHOLD,
            queue: WVA_QUEUE_THRESHOLD,
            kv_spare: WVA_KV_SPARE_TRIGGER,
            queue_spare: WVA_QUEUE_SPARE_TRIGGER,
        }
    }
}

impl WvaThresholds {
    /// The capacity knob: both saturation thresholds times `factor` (KV capped at 1.0, a full
    /// cache), each spare trigger scaled with its threshold so the analyzer keeps its proportions.
    /// `scaled(1.0)` is the default exactly.
    pub fn scaled(factor: f64) -> Self {
        let kv = (WVA_KV_THRESHOLD * factor).min(1.0);
        WvaThresholds {
            kv,
            queue: WVA_QUEUE_THRESHOLD * factor,
            kv_spare: WVA_KV_SPARE_TRIGGER * (kv / WVA_KV_THRESHOLD),
            queue_spare: WVA_QUEUE_SPARE_TRIGGER * factor,
        }
    }
}

impl Wva {
    pub fn new(setup: &Setup) -> Self {
        let keda = Keda {
            min_replica_count: 1,
            max_replica_count: setup.max_replicas,
            ..Keda::default()
        };
        Wva {
            target: None,
            inner: KedaHpa::new(keda, None),
            thresholds: WvaThresholds::scaled(setup.capacity_factor),
        }
    }

    /// One analyzer loop at the default thresholds.
    pub fn analyze(replicas: &[(f64, f64)]) -> Option<i64> {
        Self::analyze_with(replicas, &WvaThresholds::default())
    }

    /// One analyzer loop over per-replica (KV usage 0..1, waiting requests); `None` keeps the
    /// previous target.
    pub fn analyze_with(replicas: &[(f64, f64)], t: &WvaThresholds) -> Option<i64> {
        let ready = replicas.len() as i64;
        if ready == 0 {
            return None;
        }
        let free: Vec<&(f64, f64)> = replicas
            .iter()
            .filter(|(kv, q)| *kv < t.kv && *q < t.queue)
            .collect();
        let n = free.len() as f64;
        if free.is_empty() {
            return Some(ready + 1);
        }
        let kv_load: f64 = free.iter().map(|r| r.0).sum();
        let q_load: f64 = free.iter().map(|r| r.1).sum();
        let spare_kv = t.kv - kv_load / n;
        let spare_q = t.queue - q_load / n;
        if spare_kv < t.kv_spare || spare_q < t.queue_spare {
            return Some(ready + 1);
        }
        if free.len() >= 2 {
            let kv_after = t.kv - kv_load / (n - 1.0);
            let q_after = t.queue - q_load / (n - 1.0);
            if kv_after >= t.kv_spare && q_after >= t.queue_spare {
                return Some(ready - 1);
            }
        }
        None
    }
}

impl Policy for Wva {
    fn control(&mut self, now: f64, cluster: &Cluster, metrics: &Metrics) -> Option<u32> {
        if due(now, WVA_LOOP_S, HPA_PHASE_S + 1.0) {
            let mut peak: BTreeMap<usize, (f64, f64)> = BTreeMap::new();
            let ready: Vec<usize> = metrics
                .latest()
                .map(|s| s.pods.iter().map(|p| p.replica).collect())
                .unwrap_or_default();
            for s in metrics.since(now - WVA_LOOP_S) {
                // vLLM queues per replica; the simulated gateway's shared queue is split evenly.
                let q = s.queue / s.pods.len().max(1) as f64;
                for p in s.pods.iter().filter(|p| ready.contains(&p.replica)) {
                    let kv = p.kv_cache_pct / 100.0;
                    let e = peak.entry(p.replica).or_insert((0.0, 0.0));
                    *e = (e.0.max(kv), e.1.max(q));
                }
            }
            let per_replica: Vec<(f64, f64)> = peak.into_values().collect();
            // Scale-up is blocked while replicas are pending (the analyzer's cascade guard).
            let pending = cluster.replicas() > cluster.ready();
            match Self::analyze_with(&per_replica, &self.thresholds) {
                Some(t) if t > per_replica.len() as i64 && pending => {}
                Some(t) => self.target = Some(t.max(1) as u32),
                None => {}
            }
            if self.target.is_none() {
                self.target = Some(cluster.replicas().max(1));
            }
        }
        let target = self.target.map(f64::from);
        self.inner.control(
            now,
            cluster,
            || true,
            || {
                vec![Metric::AverageValue {
                    value: target,
                    target: 1.0,
                }]
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wva_scales_on_spare_capacity_and_checks_redistribution_before_removing() {
        // Plenty of spare KV and queue: remove one if the load fits on one replica fewer.
        assert_eq!(Wva::analyze(&[(0.2, 0.0), (0.2, 0.0), (0.2, 0.0)]), Some(2));
        // Average spare KV 0.8 - 0.75 < 0.1: add one to the ready count.
        assert_eq!(Wva::analyze(&[(0.75, 0.0), (0.75, 0.0)]), Some(3));
        // Queue spare 5 - 2.5 < 3: add one.
        assert_eq!(Wva::analyze(&[(0.1, 2.5)]), Some(2));
        // Every replica saturated (KV >= 0.8): add one.
        assert_eq!(Wva::analyze(&[(0.85, 0.0), (0.9, 6.0)]), Some(3));
        // Spare now, but not after spreading 2 x 0.4 over one replica: hold.
        assert_eq!(Wva::analyze(&[(0.4, 0.0), (0.4, 0.0)]), None);
        // A single non-saturated replica is never removed.
        assert_eq!(Wva::analyze(&[(0.0, 0.0)]), None);
        assert_eq!(Wva::analyze(&[]), None);
    }
}
