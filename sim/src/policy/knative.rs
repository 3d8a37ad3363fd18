//! Knative's KPA: concurrency per pod from the activator, with its stable and panic windows.

use std::collections::VecDeque;

use super::{due, Policy, Setup};
use crate::cluster::Cluster;
use crate::metrics::Metrics;

/// Policy 5: Knative's KPA: every 2 s, concurrency averaged over a 60 s stable and a 6 s panic window,
/// target 70 % of the per-replica concurrency B, panic at 200 %, max scale-up rate 1000, max
/// scale-down rate 2. Scales to zero like Knative's default.
pub struct KnativeKpa {
    samples: VecDeque<(f64, f64)>,
    last: Option<(f64, f64)>,
    panic_since: Option<f64>,
    max_panic: u32,
    target: f64,
    max: u32,
}

impl KnativeKpa {
    pub fn new(setup: &Setup) -> Self {
        KnativeKpa {
            samples: VecDeque::new(),
            last: None,
            panic_since: None,
            max_panic: 0,
            // The capacity knob: the per-replica concurrency target.
            target: 0.7 * setup.batch as f64 * setup.capacity_factor,
            max: setup.max_replicas,
        }
    }

    fn mean_since(&self, from: f64) -> f64 {
        let xs: Vec<f64> = self
            .samples
            .iter()
            .filter(|s| s.0 > from)
            .map(|s| s.1)
            .collect();
        if xs.is_empty() {
            0.0
        } else {
            xs.iter().sum::<f64>() / xs.len() as f64
        }
    }
}

impl Policy for KnativeKpa {
    fn control(&mut self, now: f64, cluster: &Cluster, _: &Metrics) -> Option<u32> {
        // Concurrency as the activator and queue-proxies see it, averaged over each second.
        let integral = cluster.concurrency_seconds;
        if let Some((t0, i0)) = self.last {
            if now > t0 {
                self.samples.push_back((now, (integral - i0) / (now - t0)));
            }
        }
        self.last = Some((now, integral));
        while self.samples.front().is_some_and(|s| s.0 <= now - 60.0) {
            self.samples.pop_front();
        }
        if !due(now, 2.0, 0.0) {
            return None;
        }
        let ready = cluster.ready().max(1) as f64;
        let stable = self.mean_since(now - 60.0) / self.target;
        let panic = self.mean_since(now - 6.0) / self.target;
        let max_up = (1000.0 * ready).ceil();
        let max_down = (ready / 2.0).floor();
        let clampr = |d: f64| d.ceil().clamp(max_down, max_up).min(self.max as f64) as u32;
        if panic / ready >= 2.0 {
            self.panic_since = Some(now);
        } else if self.panic_since.is_some_and(|t| now - t >= 60.0) {
            self.panic_since = None;
            self.max_panic = 0;
        }
        let desired = if self.panic_since.is_some() {
            // In panic mode Knative never scales down.
            let d = clampr(panic).max(self.max_panic).max(cluster.replicas());
            self.max_panic = d;
            d
        } else {
            clampr(stable)
        };
        (desired != cluster.replicas()).then_some(desired)
    }
}
