//! The CPU HPA: Kubernetes' HorizontalPodAutoscaler on the pods' CPU utilisation, the default a
//! platform already has.

use super::{cpu_pods, due, Policy, Setup, HPA_PHASE_S};
use crate::cluster::Cluster;
use crate::hpa::{self, Hpa, HpaState, Metric, Observed, PolicyKind, Rules, Select};
use crate::metrics::Metrics;

/// Policy 1: Plain HPA on CPU utilisation, target 40 %; up max(100 %, 5 pods) / 10 s; down
/// min(50 %, 2 pods) / 30 s with a 30 s window.
pub struct CpuHpa {
    hpa: Hpa,
    state: HpaState,
    target_pct: f64,
}

/// Policy 1's CPU utilisation target, percent of the pods' CPU request.
pub const CPU_HPA_TARGET_PCT: f64 = 40.0;

/// Policy 1's HPA object (also what the live demo's `cpu-hpa` runs).
pub fn cpu_hpa(max_replicas: u32) -> Hpa {
    Hpa {
        min_replicas: 1,
        max_replicas,
        tolerance: 0.1,
        scale_up: Rules::new(
            0.0,
            Select::Max,
            &[
                (PolicyKind::Percent, 100, 10.0),
                (PolicyKind::Pods, 5, 10.0),
            ],
        ),
        scale_down: Rules::new(
            30.0,
            Select::Min,
            &[(PolicyKind::Percent, 50, 30.0), (PolicyKind::Pods, 2, 30.0)],
        ),
        legacy: false,
    }
}

impl CpuHpa {
    pub fn new(setup: &Setup) -> Self {
        CpuHpa {
            hpa: cpu_hpa(setup.max_replicas),
            state: HpaState::default(),
            // The capacity knob: the CPU target.
            target_pct: CPU_HPA_TARGET_PCT * setup.capacity_factor,
        }
    }
}

impl Policy for CpuHpa {
    fn control(&mut self, now: f64, cluster: &Cluster, metrics: &Metrics) -> Option<u32> {
        if !due(now, hpa::SYNC_PERIOD_S, HPA_PHASE_S) {
            return None;
        }
        let observed = Observed {
            current_replicas: cluster.replicas(),
            ready_pods: cluster.ready(),
            metrics: vec![Metric::Utilization {
                target_pct: self.target_pct,
                pods: cpu_pods(cluster, metrics),
            }],
        };
        Some(hpa::sync(now, &self.hpa, &mut self.state, &observed).desired)
    }
}
