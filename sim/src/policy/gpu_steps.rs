//! A direct controller on GPU utilisation read from the node (NVML), stepping replicas by
//! thresholds.

use std::collections::HashMap;

use super::{due, Policy, Setup};
use crate::cluster::Cluster;
use crate::metrics::Metrics;

/// Mean GPU utilisation of ready replicas since the previous reading, read directly (NVML-style).
#[derive(Default)]
struct DirectGpu {
    last: HashMap<usize, (f64, f64)>,
}

impl DirectGpu {
    fn read(&mut self, now: f64, cluster: &Cluster) -> Option<f64> {
        let b = cluster.config().cost.batch as f64;
        let mut sum = 0.0;
        let mut n = 0;
        let mut seen = HashMap::new();
        for i in cluster.ready_indices() {
            let slots = cluster.replicas[i].slot_seconds_at(now);
            if let Some(&(t0, s0)) = self.last.get(&i) {
                if now > t0 {
                    sum += ((slots - s0) / (b * (now - t0))).clamp(0.0, 1.0);
                    n += 1;
                }
            }
            seen.insert(i, (now, slots));
        }
        self.last = seen;
        (n > 0).then(|| 100.0 * sum / n as f64)
    }
}

/// Policy 4: Step rules every 3 s: GPU > 80 % +3, > 60 % +2, > 50 % +1, < 20 % with p95 under the SLO -1
/// (p95 of time to first token against the TTFT objective on token traces, of end-to-end latency
/// otherwise).
pub struct GpuSteps {
    gpu: DirectGpu,
    slo_s: f64,
    slo_is_ttft: bool,
    max: u32,
    /// Utilisation above which to add 3, 2, 1 replicas, and below which to remove one.
    steps: [f64; 4],
}

/// Policy 4's utilisation thresholds, percent: +3, +2, +1 above, -1 below.
pub const GPU_STEPS_THRESHOLDS_PCT: [f64; 4] = [80.0, 60.0, 50.0, 20.0];

/// The most a scaled gpu-steps threshold may be. Utilisation (busy batch slots) never exceeds
/// 100 %, so a step at or above it would never fire and the policy could not scale up at all;
/// 95 % still fires on a nearly full batch. Thresholds capped together keep their order (the
/// largest step wins a tie).
pub const GPU_STEPS_CAP_PCT: f64 = 95.0;

impl GpuSteps {
    pub fn new(setup: &Setup) -> Self {
        GpuSteps {
            gpu: DirectGpu::default(),
            slo_s: setup.slo_s,
            slo_is_ttft: setup.slo_is_ttft,
            max: setup.max_replicas,
            steps: GPU_STEPS_THRESHOLDS_PCT
                .map(|t| (t * setup.capacity_factor).min(GPU_STEPS_CAP_PCT)),
        }
    }
}

impl Policy for GpuSteps {
    fn control(&mut self, now: f64, cluster: &Cluster, metrics: &Metrics) -> Option<u32> {
        if !due(now, 3.0, 0.0) {
            return None;
        }
        let util = self.gpu.read(now, cluster)?;
        let current = cluster.replicas() as i64;
        let p95 = if self.slo_is_ttft {
            metrics.ttft_quantile(0.95, 60.0, None)
        } else {
            metrics.latency_quantile(0.95, 60.0, None)
        };
        let low_latency = p95.is_none_or(|p| p <= self.slo_s);
        let [up3, up2, up1, down] = self.steps;
        let step = if util > up3 {
            3
        } else if util > up2 {
            2
        } else if util > up1 {
            1
        } else if util < down && low_latency {
            -1
        } else {
            0
        };
        let next = (current + step).clamp(1, self.max as i64) as u32;
        (next as i64 != current).then_some(next)
    }
}
