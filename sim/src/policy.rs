//! The seven scaling policies, each configured as its source describes it. A policy sees the
//! cluster only through what its real counterpart could read (scrapes, direct GPU readings, the
//! gateway's concurrency) and answers with a replica count; `composite` runs the scaler's own
//! `spec::parse` + `score::Scorer` behind the `keda` and `hpa` models.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::str::FromStr;

use super::cluster::{Cluster, Phase};
use super::hpa::{self, Hpa, HpaState, Metric, Observed, PodMetric, PolicyKind, Rules, Select};
use super::keda::{self, Keda, KedaState};
use super::metrics::Metrics;
use keda_gpu_scaler::deletion::{DeletionCosts, Drain, PodLoad};
use keda_gpu_scaler::score::{Context, Decision, Fleet, ReadyTimer, Scorer, Within};
use keda_gpu_scaler::spec;

/// Policy names, in report order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PolicyName {
    CpuHpa,
    KedaPrometheus,
    Userscale,
    GpuSteps,
    KnativeKpa,
    Wva,
    Composite,
    OracleColdstart,
    Oracle,
}

impl PolicyName {
    pub const ALL: [PolicyName; 9] = [
        PolicyName::CpuHpa,
        PolicyName::KedaPrometheus,
        PolicyName::Userscale,
        PolicyName::GpuSteps,
        PolicyName::KnativeKpa,
        PolicyName::Wva,
        PolicyName::Composite,
        PolicyName::OracleColdstart,
        PolicyName::Oracle,
    ];

    /// The perfect-foresight references, which no real controller can be.
    pub fn is_reference(self) -> bool {
        matches!(self, PolicyName::Oracle | PolicyName::OracleColdstart)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PolicyName::CpuHpa => "cpu-hpa",
            PolicyName::KedaPrometheus => "keda-prometheus",
            PolicyName::Userscale => "userscale",
            PolicyName::GpuSteps => "gpu-steps",
            PolicyName::KnativeKpa => "knative-kpa",
            PolicyName::Wva => "wva",
            PolicyName::Composite => "composite",
            PolicyName::OracleColdstart => "oracle-coldstart",
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
    /// The latency objective a user would configure: time to first token for token traces,
    /// end-to-end latency otherwise.
    pub slo_s: f64,
    /// Whether `slo_s` is a time-to-first-token objective (token traces), so that a policy
    /// comparing a measured latency with it reads the TTFT histogram rather than end-to-end
    /// latency, which for a generation of hundreds of tokens is many times any TTFT objective.
    pub slo_is_ttft: bool,
    /// Seconds from a replica's creation to readiness (the oracle-coldstart plans with it).
    pub cold_start_s: f64,
    /// The composite's ScaledObject `minReplicaCount` (KEDA's default 0: it scales to zero once
    /// the scaler has been inactive for the cooldown). The live demo's replay sets its own.
    pub min_replicas: u32,
    /// Overrides of the composite's trigger metadata (`--composite-metadata`).
    pub composite_overrides: Vec<(String, String)>,
    /// The HPA behaviour the composite's ScaledObject sets.
    pub composite_hpa: CompositeHpa,
    /// Batch slots per replica (B), the concurrency a replica is built for.
    pub batch: u32,
    /// Seconds between scrapes (Prometheus and the scaler's own sampling).
    pub scrape_s: f64,
    /// Multiplies each real policy's capacity knob (its utilisation, queue and concurrency
    /// thresholds; higher = fewer replicas); 1.0 is every policy's default exactly. The oracles
    /// ignore it. `keda-gpu-sim --sweep` replays each policy over `sweep::SWEEP_FACTORS`.
    pub capacity_factor: f64,
}

/// The HPA behaviour of the composite's ScaledObject (`--composite-hpa`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum CompositeHpa {
    /// The recommended ScaledObject (README, `keda/`): `advanced.horizontalPodAutoscalerConfig`
    /// sets `scaleDown.stabilizationWindowSeconds: 0` (100 % per 15 s), Kubernetes' default
    /// scale-up. The scaler's own time-aware EWMA is then the only scale-down stabilisation.
    #[default]
    Recommended,
    /// No `advanced` section: KEDA generates the HPA without `behavior` and Kubernetes applies
    /// its legacy rule (300 s downscale window on top of the scaler's own smoothing).
    Legacy,
}

impl CompositeHpa {
    /// `(scaleUp, scaleDown)` when the ScaledObject sets a behavior; None for the legacy rule.
    pub fn behavior(self) -> Option<(Rules, Rules)> {
        match self {
            CompositeHpa::Recommended => Some((
                Rules::default_up(),
                Rules::new(0.0, Select::Max, &[(PolicyKind::Percent, 100, 15.0)]),
            )),
            CompositeHpa::Legacy => None,
        }
    }
}

/// A scaling policy. `control` runs once per simulated second, after the cluster has advanced to
/// `now` and any due scrape was taken; it returns the replica count to set, if it changes anything.
pub trait Policy: Send {
    fn control(&mut self, now: f64, cluster: &Cluster, metrics: &Metrics) -> Option<u32>;

    /// The pod deletion costs this policy has written (replica index -> cost), which the
    /// ReplicaSet ranks removals by; None for policies that write none.
    fn deletion_costs(&self) -> Option<&BTreeMap<usize, i32>> {
        None
    }

    /// Deletion-cost annotations written so far.
    fn deletion_cost_patches(&self) -> u64 {
        0
    }

    /// The replicas this policy has taken out of service (`podReadinessGate`); None for
    /// policies that take none.
    fn held_out(&self) -> Option<&BTreeSet<usize>> {
        None
    }

    /// Readiness-gate condition writes so far.
    fn gate_patches(&self) -> u64 {
        0
    }

    /// The scaler's last decision, what its `/debug` endpoint serves (the composite only).
    fn last_decision(&self) -> Option<&Decision> {
        None
    }
}

/// Phase of the HPA sync and KEDA poll relative to scrapes, so controllers read data that is a few
/// seconds old, as unsynchronised loops do in a cluster.
const HPA_PHASE_S: f64 = 7.0;
const KEDA_PHASE_S: f64 = 3.0;

fn due(now: f64, period: f64, phase: f64) -> bool {
    let k = ((now - phase) / period).round();
    k >= 0.0 && (now - phase - k * period).abs() < 1e-6
}

/// Builds the policy; `oracle_plan` is the oracle's replicas per HPA sync period (the
/// oracle-coldstart derives its own from it).
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
        PolicyName::Wva => Box::new(Wva::new(setup)),
        PolicyName::Composite => Box::new(Composite::new(setup)?),
        PolicyName::OracleColdstart => Box::new(Oracle {
            plan: coldstart_plan(oracle_plan, setup.cold_start_s),
            last: None,
        }),
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

/// KEDA in front of an HPA: KEDA polls activity, the HPA syncs on the metrics.
struct KedaHpa {
    keda: Keda,
    keda_state: KedaState,
    hpa: Hpa,
    hpa_state: HpaState,
}

impl KedaHpa {
    /// `behavior: None` is KEDA's default (no `advanced.horizontalPodAutoscalerConfig`): the HPA
    /// then has no behavior and Kubernetes applies its legacy rule.
    fn new(keda: Keda, behavior: Option<(Rules, Rules)>) -> Self {
        let legacy = behavior.is_none();
        let (scale_up, scale_down) =
            behavior.unwrap_or((Rules::default_up(), Rules::default_down()));
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
                legacy,
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

/// The trigger metadata the composite policy runs with: what a user would write for a service
/// with latency objective S (time to first token where the service has tokens) in SLO mode at
/// 95 %, then the capacity knob and `overrides` on top. Nothing about the replicas is given: the
/// planner learns what one holds and measures the cold start. `endpoints` is required by the
/// parser; the simulator supplies the readings.
pub fn composite_metadata(
    _batch: u32,
    slo_s: f64,
    max_replicas: u32,
    capacity_factor: f64,
    overrides: &[(String, String)],
) -> BTreeMap<String, String> {
    let mut m: BTreeMap<String, String> = [
        (
            "endpoints",
            "http://replica.simulated:8000/metrics".to_string(),
        ),
        ("ttftObjectiveMs", format!("{}", (slo_s * 1000.0).round())),
        ("attainment", format!("{DEFAULT_ATTAINMENT}")),
        ("maxReplicas", max_replicas.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let knob = composite_knob(capacity_factor);
    for (k, v) in knob.iter().chain(overrides) {
        if v.is_empty() {
            m.remove(k);
        } else {
            m.insert(k.clone(), v.clone());
        }
    }
    m
}

/// The attainment the default composite asks for.
pub const DEFAULT_ATTAINMENT: f64 = 0.95;

/// The composite's capacity knob: the metadata overrides that scale its capacity by `factor`
/// (higher = fewer replicas), applied by `composite_metadata` before the user's
/// `--composite-metadata` overrides (so those still win). The one place that says which of the
/// composite's settings `--sweep` moves.
///
/// In SLO mode the knob is the miss budget: `attainment = 1 - (1 - 0.95) x factor`, so factor 2
/// asks for 90 %, 0.2 for 99 %. At `factor == 1` it returns nothing, so the default metadata is
/// exactly what `composite_metadata` writes without a knob.
pub fn composite_knob(factor: f64) -> Vec<(String, String)> {
    if factor == 1.0 {
        return Vec::new();
    }
    vec![(
        "attainment".to_string(),
        format!("{}", composite_attainment(factor)),
    )]
}

/// The attainment the composite asks for at capacity factor `factor` (see `composite_knob`),
/// to four decimals: the metadata a user would write, and no float noise in the report.
pub fn composite_attainment(factor: f64) -> f64 {
    let a = (1.0 - (1.0 - DEFAULT_ATTAINMENT) * factor).clamp(0.5, 0.999);
    (a * 10_000.0).round() / 10_000.0
}

/// Policy 7: This scaler: `spec::parse` of the default metadata, the server's `Scorer` stepped at
/// each sample with per-pod readings in the spec's signal order plus the completion rate and the
/// starting replicas (what a discovery source knows), reported to KEDA as desired capacity
/// (AverageValue, target 1) and IsActive, with KEDA's defaults: no `advanced` section, so the HPA
/// has no behavior and runs Kubernetes' legacy rule.
pub struct Composite {
    scorer: Scorer,
    signals: Vec<String>,
    latency_window_s: f64,
    /// SLO mode's time-to-first-token objective, seconds (what the histogram is read against).
    ttft_objective_s: Option<f64>,
    last: Option<Decision>,
    last_context: Option<Context>,
    /// Cold starts as a discovery source measures them (first sight not ready -> ready).
    ready_timer: ReadyTimer,
    inner: KedaHpa,
    /// `podDeletionCost`: the scaler's own ranking and pacing, and the costs written by replica
    /// (acknowledged at once: the API server's latency is milliseconds against 15 s scrapes).
    deletion: Option<DeletionCosts>,
    deletion_costs: BTreeMap<usize, i32>,
    deletion_patches: u64,
    /// `podReadinessGate`: the drain and its longest wait; the replicas out of service; the
    /// fewest replicas to report while they finish; gate writes.
    drain: Option<(Drain, f64)>,
    held: BTreeSet<usize>,
    reported: f64,
    gate_patches: u64,
    /// Replicas whose gate condition was set True when first seen (a pod with the readiness
    /// gate is not ready until it is), one write each.
    approved: BTreeSet<usize>,
}

impl Composite {
    pub fn new(setup: &Setup) -> Result<Self, spec::SpecError> {
        let metadata: HashMap<String, String> = composite_metadata(
            setup.batch,
            setup.slo_s,
            setup.max_replicas,
            setup.capacity_factor,
            &setup.composite_overrides,
        )
        .into_iter()
        .collect();
        let spec = spec::parse(&metadata)?;
        let keda = Keda {
            min_replica_count: setup.min_replicas,
            max_replica_count: setup.max_replicas,
            ..Keda::default()
        };
        Ok(Composite {
            scorer: Scorer::new(spec.scorer_config()),
            signals: spec.signals.iter().map(|s| s.name.clone()).collect(),
            latency_window_s: spec.latency_window_s,
            ttft_objective_s: spec.objective.map(|o| o.ttft_s),
            last: None,
            last_context: None,
            ready_timer: ReadyTimer::default(),
            inner: KedaHpa::new(keda, setup.composite_hpa.behavior()),
            deletion: matches!(&spec.source, spec::SourceSpec::Service(s) if s.deletion_cost)
                .then(DeletionCosts::default),
            deletion_costs: BTreeMap::new(),
            deletion_patches: 0,
            drain: match &spec.source {
                spec::SourceSpec::Service(s) => s.drain.map(|d| {
                    (
                        Drain::with_window(f64::from(d.hpa_window_s)),
                        f64::from(d.timeout_s),
                    )
                }),
                _ => None,
            },
            held: BTreeSet::new(),
            reported: 0.0,
            gate_patches: 0,
            approved: BTreeSet::new(),
        })
    }

    /// What the scorer was given besides the readings at its last step.
    pub fn last_context(&self) -> Option<&Context> {
        self.last_context.as_ref()
    }

    /// Readings per signal, per ready pod, as the scraper would hand them to the scorer. The
    /// latency signal reads time to first token, the latency more replicas can lower.
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
                    .map(|p| metrics.ttft_quantile(0.95, latency_window_s, Some(p.replica)))
                    .collect(),
                _ => s.pods.iter().map(|_| None).collect(),
            })
            .collect()
    }

    /// What a discovery source adds: the completion rate and the replicas still starting.
    pub fn context(cluster: &Cluster, metrics: &Metrics, latency_window_s: f64) -> Context {
        let starting = cluster
            .live_indices()
            .filter(|&i| matches!(cluster.replicas[i].phase, Phase::Starting { .. }))
            .count() as u32;
        let terminating = cluster.allocated() - cluster.replicas();
        Context {
            completions_per_s: metrics.first_tokens_per_s(latency_window_s),
            first_tokens_per_s: metrics.first_tokens_per_s(metrics.interval_s),
            fleet: Fleet {
                starting: Some(starting),
                terminating: Some(terminating),
            },
            cold_start_s: None,
            ttft_within: None,
        }
    }

    /// `podDeletionCost` as the scaler runs it: when the decision reports fewer replicas than
    /// the ready pods scraped, mark the least busy by requests in service (the gateway holds the
    /// queue, so no pod has its own) with GPU memory (weights + KV cache) as the tie-break.
    fn write_deletion_costs(
        &mut self,
        now: f64,
        decision: &Decision,
        cluster: &Cluster,
        metrics: &Metrics,
    ) {
        let (Some(deletion), Some(scrape)) = (self.deletion.as_mut(), metrics.latest()) else {
            return;
        };
        let pods: Vec<PodLoad> = scrape
            .pods
            .iter()
            .map(|p| PodLoad {
                pod: p.replica.to_string(),
                requests: Some(p.inflight),
                kv_cache: Some(p.gpu_memory_pct),
            })
            .collect();
        let reported = keda_gpu_scaler::deletion::reported_replicas(decision.desired);
        let writes = match self.drain.as_mut() {
            // Draining: the pods out of service are scraped too; the drained ones are marked.
            Some((drain, timeout_s)) => {
                let mut all = pods.clone();
                all.extend(scrape.held_out.iter().map(|p| PodLoad {
                    pod: p.replica.to_string(),
                    requests: Some(p.inflight),
                    kv_cache: Some(p.gpu_memory_pct),
                }));
                // Every new pod is let in once, at first sight, as the scaler does.
                for i in cluster.live_indices() {
                    if self.approved.insert(i) {
                        self.gate_patches += 1;
                    }
                }
                let current = cluster.replicas();
                let step = drain.plan(now, decision.desired, current, &all, *timeout_s);
                for (pod, serving) in &step.gates {
                    drain.written(now, pod, *serving);
                    self.gate_patches += 1;
                }
                self.held = drain.held().keys().filter_map(|p| p.parse().ok()).collect();
                self.reported = step.report(decision.desired);
                deletion.plan_marks(Drain::marks(&step, &all))
            }
            None => deletion.plan(now, reported, &pods),
        };
        for (pod, cost) in writes {
            deletion.written(&pod, cost);
            self.deletion_patches += 1;
        }
        self.deletion_costs = deletion
            .costs()
            .iter()
            .filter_map(|(pod, &cost)| Some((pod.parse().ok()?, cost)))
            .collect();
    }

    /// Feeds the cold-start measurement the pods a discovery source would list now.
    fn watch_pods(&mut self, now: f64, cluster: &Cluster) -> Option<f64> {
        let (mut starting, mut ready) = (Vec::new(), Vec::new());
        for i in cluster.live_indices() {
            match cluster.replicas[i].phase {
                Phase::Starting { .. } => starting.push(i.to_string()),
                Phase::Ready => ready.push(i.to_string()),
                _ => {}
            }
        }
        self.ready_timer.observe(
            now,
            starting.iter().map(String::as_str),
            ready.iter().map(String::as_str),
        );
        self.ready_timer.cold_start_s()
    }
}

impl Policy for Composite {
    fn control(&mut self, now: f64, cluster: &Cluster, metrics: &Metrics) -> Option<u32> {
        if metrics.latest().is_some_and(|s| s.t == now) {
            let readings = Self::readings(&self.signals, metrics, self.latency_window_s);
            let ctx = Context {
                cold_start_s: self.watch_pods(now, cluster),
                // What the replicas' TTFT histograms say was met, as the scrape source reads it.
                ttft_within: self.ttft_objective_s.and_then(|bound| {
                    let (within, total, window_s) =
                        metrics.ttft_within(bound, self.latency_window_s)?;
                    Some(Within {
                        within,
                        total,
                        window_s,
                    })
                }),
                ..Self::context(cluster, metrics, self.latency_window_s)
            };
            let decision = self.scorer.observe(now, &readings, &ctx);
            self.write_deletion_costs(now, &decision, cluster, metrics);
            self.last = Some(decision);
            self.last_context = Some(ctx);
        }
        let decision = self.last.as_ref();
        let active = decision.is_some_and(|d| d.active);
        // While pods drain, the report covers them: the HPA removes only pods that are done.
        let desired = decision.map(|d| match self.drain {
            Some(_) => self.reported,
            None => d.desired,
        });
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

    fn deletion_costs(&self) -> Option<&BTreeMap<usize, i32>> {
        self.deletion.as_ref().map(|_| &self.deletion_costs)
    }

    fn deletion_cost_patches(&self) -> u64 {
        self.deletion_patches
    }

    fn held_out(&self) -> Option<&BTreeSet<usize>> {
        self.drain.as_ref().map(|_| &self.held)
    }

    fn last_decision(&self) -> Option<&Decision> {
        self.last.as_ref()
    }

    fn gate_patches(&self) -> u64 {
        self.gate_patches
    }
}

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

    #[test]
    fn the_capacity_knobs_are_the_defaults_at_one() {
        assert_eq!(WvaThresholds::scaled(1.0), WvaThresholds::default());
        let double = WvaThresholds::scaled(2.0);
        assert_eq!(
            (double.kv, double.queue),
            (1.0, 10.0),
            "KV capped at a full cache"
        );
        assert_eq!(double.queue_spare, 6.0);
        assert!(
            (double.kv_spare - 0.125).abs() < 1e-12,
            "spare KV scales with the capped KV"
        );
        // Twice the queue threshold: a queue of 6 no longer saturates or triggers a scale-up.
        assert_eq!(Wva::analyze(&[(0.1, 6.0)]), Some(2));
        assert_eq!(Wva::analyze_with(&[(0.1, 2.5)], &double), None);

        assert!(composite_knob(1.0).is_empty());
        assert_eq!(
            composite_metadata(8, 2.0, 100, 1.0, &[]),
            composite_metadata(8, 2.0, 100, 1.0, &composite_knob(1.0))
        );
        // The knob scales the miss budget: 2 x 5 % = 90 %, 0.2 x 5 % = 99 %.
        assert_eq!(
            composite_metadata(8, 2.0, 100, 2.0, &[])["attainment"],
            "0.9"
        );
        assert_eq!(
            composite_metadata(8, 2.0, 100, 0.2, &[])["attainment"],
            "0.99"
        );
        // The user's overrides still win over the knob.
        let over = [("attainment".to_string(), "0.97".to_string())];
        assert_eq!(
            composite_metadata(8, 2.0, 100, 2.0, &over)["attainment"],
            "0.97"
        );
        for f in [2.0, 1.6, 1.3, 0.85, 0.7, 0.55, 0.4] {
            let m: HashMap<String, String> = composite_metadata(8, 2.0, 100, f, &[])
                .into_iter()
                .collect();
            spec::parse(&m).unwrap_or_else(|e| panic!("factor {f}: {e}"));
        }
    }

    #[test]
    fn phases_and_periods() {
        assert!(due(7.0, 15.0, 7.0) && due(22.0, 15.0, 7.0) && !due(15.0, 15.0, 7.0));
        assert!(!due(3.0, 15.0, 7.0));
        assert!(due(0.0, 3.0, 0.0) && due(3.0, 3.0, 0.0) && !due(4.0, 3.0, 0.0));
    }

    #[test]
    fn composite_metadata_parses_with_the_servers_parser() {
        let m: HashMap<String, String> = composite_metadata(8, 5.0, 40, 1.0, &[])
            .into_iter()
            .collect();
        let spec = spec::parse(&m).unwrap();
        let names: Vec<&str> = spec.signals.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["queue", "inflight", "latency"]);
        assert!(spec.signals.iter().all(|s| !s.asks), "SLO mode alone");
        let objective = spec.objective.unwrap();
        assert_eq!((objective.ttft_s, objective.attainment), (5.0, 0.95));
        assert_eq!(objective.concurrency, None, "learned, not given");
        assert_eq!(spec.limits.max_replicas, 40.0);
    }
}
