//! The seven scaling policies, each configured as its source describes it. A policy sees the
//! cluster only through what its real counterpart could read (scrapes, direct GPU readings, the
//! gateway's concurrency) and answers with a replica count; `composite` runs the scaler's own
//! `spec::parse` + `score::Scorer` behind the `keda` and `hpa` models.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::str::FromStr;

use super::cluster::{Cluster, Phase};
use super::hpa::{self, Hpa, HpaState, Metric, Observed, PodMetric, PolicyKind, Rules, Select};
use super::keda::{self, Keda, KedaState};
use super::metrics::Metrics;
use crate::score::{Decision, Scorer};
use crate::spec;

/// Policy names, in report order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PolicyName {
    CpuHpa,
    KedaPrometheus,
    Userscale,
    GpuSteps,
    KnativeKpa,
    Composite,
    Oracle,
}

impl PolicyName {
    pub const ALL: [PolicyName; 7] = [
        PolicyName::CpuHpa,
        PolicyName::KedaPrometheus,
        PolicyName::Userscale,
        PolicyName::GpuSteps,
        PolicyName::KnativeKpa,
        PolicyName::Composite,
        PolicyName::Oracle,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PolicyName::CpuHpa => "cpu-hpa",
            PolicyName::KedaPrometheus => "keda-prometheus",
            PolicyName::Userscale => "userscale",
            PolicyName::GpuSteps => "gpu-steps",
            PolicyName::KnativeKpa => "knative-kpa",
            PolicyName::Composite => "composite",
            PolicyName::Oracle => "oracle",
        }
    }
}

impl fmt::Display for PolicyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PolicyName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        PolicyName::ALL
            .into_iter()
            .find(|p| p.as_str() == s.trim())
            .ok_or_else(|| {
                let names: Vec<&str> = PolicyName::ALL.iter().map(|p| p.as_str()).collect();
                format!(
                    "unknown policy '{}'; expected one of {}",
                    s.trim(),
                    names.join(", ")
                )
            })
    }
}

/// What every policy may know about the service it scales.
#[derive(Clone, Debug, PartialEq)]
pub struct Setup {
    pub max_replicas: u32,
    pub slo_s: f64,
    /// Batch slots per replica (B), the concurrency a replica is built for.
    pub batch: u32,
    /// Seconds between scrapes (Prometheus and the scaler's own sampling).
    pub scrape_s: f64,
}

/// A scaling policy. `control` runs once per simulated second, after the cluster has advanced to
/// `now` and any due scrape was taken; it returns the replica count to set, if it changes anything.
pub trait Policy: Send {
    fn control(&mut self, now: f64, cluster: &Cluster, metrics: &Metrics) -> Option<u32>;
}

/// Phase of the HPA sync and KEDA poll relative to scrapes, so controllers read data that is a few
/// seconds old, as unsynchronised loops do in a cluster.
const HPA_PHASE_S: f64 = 7.0;
const KEDA_PHASE_S: f64 = 3.0;

fn due(now: f64, period: f64, phase: f64) -> bool {
    let k = ((now - phase) / period).round();
    k >= 0.0 && (now - phase - k * period).abs() < 1e-6
}

/// Builds the policy; `oracle_plan` is the oracle's replicas per HPA sync period.
pub fn build(
    name: PolicyName,
    setup: &Setup,
    oracle_plan: &[u32],
) -> Result<Box<dyn Policy>, spec::SpecError> {
    Ok(match name {
        PolicyName::CpuHpa => Box::new(CpuHpa::new(setup)),
        PolicyName::KedaPrometheus => Box::new(KedaPrometheus::new(setup)),
        PolicyName::Userscale => Box::new(Userscale::new(setup)),
        PolicyName::GpuSteps => Box::new(GpuSteps::new(setup)),
        PolicyName::KnativeKpa => Box::new(KnativeKpa::new(setup)),
        PolicyName::Composite => Box::new(Composite::new(setup)?),
        PolicyName::Oracle => Box::new(Oracle {
            plan: oracle_plan.to_vec(),
            last: None,
        }),
    })
}

/// Pods the HPA sees (not terminating): readiness and the latest scraped CPU.
fn cpu_pods(cluster: &Cluster, metrics: &Metrics) -> Vec<PodMetric> {
    let scrape = metrics.latest();
    cluster
        .live_indices()
        .filter_map(|i| match cluster.replicas[i].phase {
            Phase::Starting { .. } => Some(PodMetric {
                ready: false,
                value: None,
            }),
            Phase::Ready => Some(PodMetric {
                ready: true,
                value: scrape.and_then(|s| s.pod(i)).map(|p| p.cpu_pct),
            }),
            _ => None,
        })
        .collect()
}

/// Policy 1: Plain HPA on CPU utilisation, target 40 %; up max(100 %, 5 pods) / 10 s; down
/// min(50 %, 2 pods) / 30 s with a 30 s window.
pub struct CpuHpa {
    hpa: Hpa,
    state: HpaState,
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
    }
}

impl CpuHpa {
    pub fn new(setup: &Setup) -> Self {
        CpuHpa {
            hpa: cpu_hpa(setup.max_replicas),
            state: HpaState::default(),
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
                target_pct: CPU_HPA_TARGET_PCT,
                pods: cpu_pods(cluster, metrics),
            }],
        };
        Some(hpa::sync(now, &self.hpa, &mut self.state, &observed).desired)
    }
}

/// KEDA in front of an HPA: KEDA polls activity, the HPA syncs on the metrics.
struct KedaHpa {
    keda: Keda,
    keda_state: KedaState,
    hpa: Hpa,
    hpa_state: HpaState,
}

impl KedaHpa {
    fn new(keda: Keda, scale_up: Rules, scale_down: Rules) -> Self {
        KedaHpa {
            keda,
            // The replay starts on a service that was already running and active: without this,
            // KEDA would treat "never active" as cooled down and scale to zero on its first poll.
            keda_state: KedaState {
                last_active: Some(0.0),
                last_poll: None,
            },
            hpa: Hpa {
                min_replicas: keda.hpa_min_replicas(),
                max_replicas: keda.max_replica_count,
                tolerance: 0.1,
                scale_up,
                scale_down,
            },
            hpa_state: HpaState::default(),
        }
    }

    fn control(
        &mut self,
        now: f64,
        cluster: &Cluster,
        active: impl FnOnce() -> bool,
        metrics: impl FnOnce() -> Vec<Metric>,
    ) -> Option<u32> {
        let mut current = cluster.replicas();
        let mut set = None;
        if due(now, self.keda.polling_interval_s, KEDA_PHASE_S) {
            if let Some(n) = keda::poll(now, &self.keda, &mut self.keda_state, active(), current) {
                current = n;
                set = Some(n);
            }
        }
        if due(now, hpa::SYNC_PERIOD_S, HPA_PHASE_S) && current > 0 {
            let observed = Observed {
                current_replicas: current,
                ready_pods: cluster.ready(),
                metrics: metrics(),
            };
            set = Some(hpa::sync(now, &self.hpa, &mut self.hpa_state, &observed).desired);
        }
        set
    }
}

/// Policy 2: Five KEDA Prometheus triggers (AverageValue, KEDA's default): GPU util 70, GPU memory 80,
/// queue 10, in-flight 5 per pod, p95 latency 5 s; up max(100 %, 2 pods) / 30 s, down 50 % / 60 s
/// with a 300 s window; pollingInterval 15 s, cooldown 300 s.
pub struct KedaPrometheus {
    inner: KedaHpa,
}

impl KedaPrometheus {
    pub fn new(setup: &Setup) -> Self {
        let keda = Keda {
            polling_interval_s: 15.0,
            cooldown_period_s: 300.0,
            min_replica_count: 0,
            max_replica_count: setup.max_replicas,
        };
        KedaPrometheus {
            inner: KedaHpa::new(
                keda,
                Rules::new(
                    0.0,
                    Select::Max,
                    &[
                        (PolicyKind::Percent, 100, 30.0),
                        (PolicyKind::Pods, 2, 30.0),
                    ],
                ),
                Rules::new(300.0, Select::Max, &[(PolicyKind::Percent, 50, 60.0)]),
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
        const TARGETS: [f64; 5] = [70.0, 80.0, 10.0, 5.0, 5.0];
        let v = Self::values(metrics);
        self.inner.control(
            now,
            cluster,
            || v.iter().any(|&x| x > 0.0),
            || {
                TARGETS
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

/// Policy 3: A direct controller: EWMA (alpha 0.6) of active users (requests in flight), CPU, GPU and p95
/// latency against 10 users per pod, 50 %, 60 % and 200 ms; the max of the signals, at most +2 / -1
/// replicas per step, 30 s cooldown after a change. Runs at each scrape.
pub struct Userscale {
    ewma: [Option<f64>; 4],
    last_change: Option<f64>,
    max: u32,
}

impl Userscale {
    pub fn new(setup: &Setup) -> Self {
        Userscale {
            ewma: [None; 4],
            last_change: None,
            max: setup.max_replicas,
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
        let proposals = [
            users.map(|u| u / 10.0),
            cpu.map(|c| n * c / 50.0),
            gpu.map(|g| n * g / 60.0),
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

/// Policy 4: Step rules every 3 s: GPU > 80 % +3, > 60 % +2, > 50 % +1, < 20 % with p95 under the SLO -1.
pub struct GpuSteps {
    gpu: DirectGpu,
    slo_s: f64,
    max: u32,
}

impl GpuSteps {
    pub fn new(setup: &Setup) -> Self {
        GpuSteps {
            gpu: DirectGpu::default(),
            slo_s: setup.slo_s,
            max: setup.max_replicas,
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
        let low_latency = metrics
            .latency_quantile(0.95, 60.0, None)
            .is_none_or(|p| p <= self.slo_s);
        let step = if util > 80.0 {
            3
        } else if util > 60.0 {
            2
        } else if util > 50.0 {
            1
        } else if util < 20.0 && low_latency {
            -1
        } else {
            0
        };
        let next = (current + step).clamp(1, self.max as i64) as u32;
        (next as i64 != current).then_some(next)
    }
}

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
            target: 0.7 * setup.batch as f64,
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

/// The trigger metadata the composite policy runs with: what a user would write for a service of
/// batch size B and latency SLO S. `endpoints` is required by the parser; the simulator supplies
/// the readings itself.
pub fn composite_metadata(batch: u32, slo_s: f64, max_replicas: u32) -> HashMap<String, String> {
    let b = batch as f64;
    [
        (
            "endpoints",
            "http://replica.simulated:8000/metrics".to_string(),
        ),
        // Busy batch slots: leave 30 % headroom for bursts.
        ("gpuUtilTarget", "70".to_string()),
        // One full batch waiting per replica is as much queueing as a user accepts.
        ("queueTarget", format!("{}", b)),
        // Three quarters of the batch in service per replica.
        ("inflightTarget", format!("{}", (0.75 * b).max(1.0))),
        // The SLO itself: latency above it always asks for more.
        ("latencyTargetMs", format!("{}", (slo_s * 1000.0).round())),
        ("maxReplicas", max_replicas.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// Policy 6: This scaler: `spec::parse` of the default metadata, the server's `Scorer` stepped at each
/// sample with per-pod readings in the spec's signal order, reported to KEDA as desired capacity
/// (AverageValue, target 1) and IsActive, with KEDA's and the HPA's defaults.
pub struct Composite {
    scorer: Scorer,
    signals: Vec<String>,
    latency_window_s: f64,
    last: Option<Decision>,
    inner: KedaHpa,
}

impl Composite {
    pub fn new(setup: &Setup) -> Result<Self, spec::SpecError> {
        let spec = spec::parse(&composite_metadata(
            setup.batch,
            setup.slo_s,
            setup.max_replicas,
        ))?;
        let keda = Keda {
            max_replica_count: setup.max_replicas,
            ..Keda::default()
        };
        Ok(Composite {
            scorer: Scorer::new(spec.scorer_config()),
            signals: spec.signals.iter().map(|s| s.name.clone()).collect(),
            latency_window_s: spec.latency_window_s,
            last: None,
            inner: KedaHpa::new(keda, Rules::default_up(), Rules::default_down()),
        })
    }

    /// The last decision the scorer made (what `/debug` would show).
    pub fn last_decision(&self) -> Option<&Decision> {
        self.last.as_ref()
    }

    /// Readings per signal, per ready pod, as the scraper would hand them to the scorer.
    pub fn readings(
        signals: &[String],
        metrics: &Metrics,
        latency_window_s: f64,
    ) -> Vec<Vec<Option<f64>>> {
        let Some(s) = metrics.latest() else {
            return vec![Vec::new(); signals.len()];
        };
        signals
            .iter()
            .map(|name| match name.as_str() {
                "gpu_util" => s.pods.iter().map(|p| Some(p.gpu_util_pct)).collect(),
                "gpu_memory" => s.pods.iter().map(|p| Some(p.gpu_memory_pct)).collect(),
                // The gateway exposes the shared queue as one series, present even at zero replicas.
                "queue" => vec![Some(s.queue)],
                "inflight" => s.pods.iter().map(|p| Some(p.inflight)).collect(),
                "latency" => s
                    .pods
                    .iter()
                    .map(|p| metrics.latency_quantile(0.95, latency_window_s, Some(p.replica)))
                    .collect(),
                _ => s.pods.iter().map(|_| None).collect(),
            })
            .collect()
    }
}

impl Policy for Composite {
    fn control(&mut self, now: f64, cluster: &Cluster, metrics: &Metrics) -> Option<u32> {
        if metrics.latest().is_some_and(|s| s.t == now) {
            let readings = Self::readings(&self.signals, metrics, self.latency_window_s);
            self.last = Some(self.scorer.step(now, &readings));
        }
        let decision = self.last.as_ref();
        let active = decision.is_some_and(|d| d.active);
        let desired = decision.map(|d| d.desired);
        self.inner.control(
            now,
            cluster,
            || active,
            || {
                vec![Metric::AverageValue {
                    value: desired,
                    target: 1.0,
                }]
            },
        )
    }
}

/// Policy 7: Perfect foresight, no cold start: the replicas each sync period needs at full batch.
pub struct Oracle {
    plan: Vec<u32>,
    last: Option<u32>,
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
    fn names_round_trip_and_unknown_names_list_the_accepted() {
        for p in PolicyName::ALL {
            assert_eq!(p.as_str().parse::<PolicyName>(), Ok(p));
        }
        let e = "hpa".parse::<PolicyName>().unwrap_err();
        assert!(e.contains("'hpa'") && e.contains("knative-kpa"), "{e}");
    }

    #[test]
    fn phases_and_periods() {
        assert!(due(7.0, 15.0, 7.0) && due(22.0, 15.0, 7.0) && !due(15.0, 15.0, 7.0));
        assert!(!due(3.0, 15.0, 7.0));
        assert!(due(0.0, 3.0, 0.0) && due(3.0, 3.0, 0.0) && !due(4.0, 3.0, 0.0));
    }

    #[test]
    fn composite_metadata_parses_with_the_servers_parser() {
        let spec = spec::parse(&composite_metadata(8, 5.0, 40)).unwrap();
        let names: Vec<&str> = spec.signals.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["gpu_util", "queue", "inflight", "latency"]);
        assert_eq!(spec.signals[2].target, 6.0);
        assert_eq!(spec.signals[3].target, 5.0);
        assert_eq!(spec.limits.max_replicas, 40.0);
    }
}
