//! This scaler: the server's `spec::parse` and `score::Scorer` behind the `keda` and `hpa` models.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::{KedaHpa, Policy, Setup};
use crate::cluster::{Cluster, Phase};
use crate::hpa::Metric;
use crate::keda::Keda;
use crate::metrics::Metrics;
use keda_gpu_scaler::deletion::{DeletionCosts, Drain, PodLoad};
use keda_gpu_scaler::score::{Context, Decision, Fleet, ReadyTimer, Scorer, Within};
use keda_gpu_scaler::spec;

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

#[cfg(test)]
mod tests {
    use super::*;

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
