//! A fixed fleet sized by the user for the peak: no autoscaling.

use super::{Policy, Setup};
use crate::cluster::Cluster;
use crate::metrics::Metrics;

/// Policy 3: A direct controller: EWMA (alpha 0.6) of active users (requests in flight), CPU, GPU and p95
/// latency against 10 users per pod, 50 %, 60 % and 200 ms; the max of the signals, at most +2 / -1
/// replicas per step, 30 s cooldown after a change. Runs at each scrape.
pub struct Userscale {
    ewma: [Option<f64>; 4],
    last_change: Option<f64>,
    max: u32,
    /// Users per pod, CPU % and GPU %, times the capacity factor (the latency stays).
    thresholds: [f64; 3],
}

impl Userscale {
    pub fn new(setup: &Setup) -> Self {
        let f = setup.capacity_factor;
        Userscale {
            ewma: [None; 4],
            last_change: None,
            max: setup.max_replicas,
            thresholds: [10.0 * f, 50.0 * f, 60.0 * f],
        }
    }
}

impl Policy for Userscale {
    fn control(&mut self, now: f64, cluster: &Cluster, metrics: &Metrics) -> Option<u32> {
        let s = metrics.latest().filter(|s| s.t == now)?;
        let raw = [
            Some(s.sum(|p| p.inflight)),
            s.mean(|p| p.cpu_pct),
            s.mean(|p| p.gpu_util_pct),
            metrics.latency_quantile(0.95, 60.0, None),
        ];
        for (e, r) in self.ewma.iter_mut().zip(raw) {
            if let Some(r) = r {
                *e = Some(e.map_or(r, |prev| 0.6 * r + 0.4 * prev));
            }
        }
        if self.last_change.is_some_and(|t| now - t < 30.0) {
            return None;
        }
        let n = cluster.replicas().max(1) as f64;
        let [users, cpu, gpu, latency] = self.ewma;
        let [per_user, per_cpu, per_gpu] = self.thresholds;
        let proposals = [
            users.map(|u| u / per_user),
            cpu.map(|c| n * c / per_cpu),
            gpu.map(|g| n * g / per_gpu),
            latency.map(|l| n * l / 0.2),
        ];
        let want = proposals
            .iter()
            .flatten()
            .fold(0.0f64, |a, &b| a.max(b))
            .ceil() as i64;
        let current = cluster.replicas() as i64;
        let next = want
            .clamp(current - 1, current + 2)
            .clamp(1, self.max as i64) as u32;
        if next as i64 != current {
            self.last_change = Some(now);
            return Some(next);
        }
        None
    }
}
