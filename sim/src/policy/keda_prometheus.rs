//! KEDA's Prometheus scaler, one trigger per signal (GPU utilisation and memory from
//! dcgm-exporter, the queue, requests in flight, p95 latency), behind KEDA's generated HPA.

use super::{KedaHpa, Policy, Setup};
use crate::cluster::Cluster;
use crate::hpa::{Metric, PolicyKind, Rules, Select};
use crate::keda::Keda;
use crate::metrics::Metrics;

/// Policy 2: Five KEDA Prometheus triggers (AverageValue, KEDA's default): GPU util 70, GPU memory 80,
/// queue 10, in-flight 5 per pod, p95 latency 5 s; up max(100 %, 2 pods) / 30 s, down 50 % / 60 s
/// with a 300 s window; pollingInterval 15 s, cooldown 300 s.
pub struct KedaPrometheus {
    inner: KedaHpa,
    targets: [f64; 5],
}

/// Policy 2's trigger targets: GPU util, GPU memory, queue, in-flight, p95 latency (s).
pub const KEDA_PROMETHEUS_TARGETS: [f64; 5] = [70.0, 80.0, 10.0, 5.0, 5.0];

impl KedaPrometheus {
    pub fn new(setup: &Setup) -> Self {
        let keda = Keda {
            polling_interval_s: 15.0,
            cooldown_period_s: 300.0,
            min_replica_count: 0,
            max_replica_count: setup.max_replicas,
        };
        // The capacity knob: the four non-latency targets; the p95 target is the objective.
        let f = setup.capacity_factor;
        let t = KEDA_PROMETHEUS_TARGETS;
        KedaPrometheus {
            targets: [t[0] * f, t[1] * f, t[2] * f, t[3] * f, t[4]],
            inner: KedaHpa::new(
                keda,
                Some((
                    Rules::new(
                        0.0,
                        Select::Max,
                        &[
                            (PolicyKind::Percent, 100, 30.0),
                            (PolicyKind::Pods, 2, 30.0),
                        ],
                    ),
                    Rules::new(300.0, Select::Max, &[(PolicyKind::Percent, 50, 60.0)]),
                )),
            ),
        }
    }

    /// The five query results; an empty result reads as 0 (KEDA's ignoreNullValues default).
    fn values(metrics: &Metrics) -> [f64; 5] {
        let Some(s) = metrics.latest() else {
            return [0.0; 5];
        };
        [
            s.sum(|p| p.gpu_util_pct),
            s.sum(|p| p.gpu_memory_pct),
            s.queue,
            s.sum(|p| p.inflight),
            metrics.latency_quantile(0.95, 60.0, None).unwrap_or(0.0),
        ]
    }
}

impl Policy for KedaPrometheus {
    fn control(&mut self, now: f64, cluster: &Cluster, metrics: &Metrics) -> Option<u32> {
        let v = Self::values(metrics);
        let targets = self.targets;
        self.inner.control(
            now,
            cluster,
            || v.iter().any(|&x| x > 0.0),
            || {
                targets
                    .iter()
                    .zip(v)
                    .map(|(&target, value)| Metric::AverageValue {
                        value: Some(value),
                        target,
                    })
                    .collect()
            },
        )
    }
}
