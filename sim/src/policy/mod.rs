//! The seven scaling policies, each configured as its source describes it. A policy sees the
//! cluster only through what its real counterpart could read (scrapes, direct GPU readings, the
//! gateway's concurrency) and answers with a replica count; `composite` runs the scaler's own
//! `spec::parse` + `score::Scorer` behind the `keda` and `hpa` models.
//!
//! One module per policy (`cpu_hpa`, `keda_prometheus`, `userscale`, `gpu_steps`, `knative`,
//! `wva`, `composite`, and the references in `oracle`); here, what they share: the names, the
//! setup, the `Policy` trait, the phase of the HPA and KEDA loops, and the KEDA-generated HPA
//! that the KEDA-based policies report through.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use super::cluster::{Cluster, Phase};
use super::hpa::{self, Hpa, HpaState, Metric, Observed, PodMetric, PolicyKind, Rules, Select};
use super::keda::{self, Keda, KedaState};
use super::metrics::Metrics;
use keda_gpu_scaler::score::Decision;
use keda_gpu_scaler::spec;

mod composite;
mod cpu_hpa;
mod gpu_steps;
mod keda_prometheus;
mod knative;
mod oracle;
mod userscale;
mod wva;

pub use composite::*;
pub use cpu_hpa::*;
pub use gpu_steps::*;
pub use keda_prometheus::*;
pub use knative::*;
pub use oracle::*;
pub use userscale::*;
pub use wva::*;

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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn names_round_trip_and_unknown_names_list_the_accepted() {
        for p in PolicyName::ALL {
            assert_eq!(p.as_str().parse::<PolicyName>(), Ok(p));
        }
        let e = "hpa".parse::<PolicyName>().unwrap_err();
        assert!(e.contains("'hpa'") && e.contains("knative-kpa"), "{e}");
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
}
