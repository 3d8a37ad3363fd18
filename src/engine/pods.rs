//! What the engine writes to pods after a sampling: `podDeletionCost` marks (the least busy pods
//! go first on scale-down) and, with `podReadinessGate`, the gate conditions that take pods out
//! of service and put them back while they drain.

use std::sync::Arc;

use futures_util::future::join_all;

use crate::deletion::{Drain, DrainStep, PodLoad};
use crate::score::composite::{INFLIGHT, KV_CACHE, QUEUE};
use crate::score::Decision;
use crate::sources::{Readings, SourceKind};
use crate::spec::{self, ScalerSpec};

use super::{Engine, Entry};

/// How long `podReadinessGate` stays paused after a pod turned out not to list the gate (its
/// traffic would not stop): the pods' template must change, which takes a rollout, so asking
/// again every sampling would only repeat the refusal. Meanwhile the marks still rank the pods.
const GATE_RETRY_S: f64 = 300.0;

/// `podReadinessGate` for one entry: the drain, the step planned with the latest decision
/// (written after that decision is published), and a pause after a pod turned out to have no
/// gate.
pub(super) struct Draining {
    pub(super) drain: Drain,
    pub(super) planned: Option<PlannedDrain>,
    paused_until: Option<f64>,
}

impl Draining {
    /// For a ScaledObject's spec: the drain models its declared HPA window.
    pub(super) fn for_spec(spec: &ScalerSpec) -> Draining {
        let window_s = match &spec.source {
            spec::SourceSpec::Service(spec::ServiceSpec { drain: Some(d), .. }) => {
                f64::from(d.hpa_window_s)
            }
            _ => 0.0,
        };
        Draining {
            drain: Drain::with_window(window_s),
            planned: None,
            paused_until: None,
        }
    }
}

/// A drain step waiting for its writes: the decision's own value, and every pod it ranked.
pub(super) struct PlannedDrain {
    pub(super) step: DrainStep,
    desired: f64,
    pods: Vec<PodLoad>,
}

/// The pod writes one entry asks for after a sampling.
pub(super) enum PodWrites {
    /// `podDeletionCost` alone: annotations.
    Marks(crate::deletion::Writes),
    /// `podReadinessGate`: gate conditions (new pods let in, pods taken out or put back), then
    /// the marks on the drained pods when a step was planned.
    Drain {
        gates: Vec<(String, bool)>,
        planned: Option<PlannedDrain>,
    },
}

impl Engine {
    /// The ready pods' loads as the deletion ranking reads them (requests in service plus
    /// waiting, KV cache), and how many ready pods have no name (they cannot be marked).
    fn pod_loads(entry: &Entry, readings: &Readings) -> (Vec<PodLoad>, u32) {
        // Each signal's readings, found once rather than per pod.
        let column = |name: &str| {
            let k = entry.spec.signals.iter().position(|s| s.name == name)?;
            readings.signals.get(k).map(|r| &r.pods)
        };
        let (inflight, queue, kv) = (column(INFLIGHT), column(QUEUE), column(KV_CACHE));
        let value = |c: Option<&Vec<Option<f64>>>, i: usize| c?.get(i).copied().flatten();
        let pods: Vec<PodLoad> = readings
            .pods
            .iter()
            .enumerate()
            .filter_map(|(i, pod)| {
                let (n, q) = (value(inflight, i), value(queue, i));
                Some(PodLoad {
                    pod: pod.clone()?,
                    requests: (n.is_some() || q.is_some())
                        .then(|| n.unwrap_or(0.0) + q.unwrap_or(0.0)),
                    kv_cache: value(kv, i),
                })
            })
            .collect();
        let unnamed = (readings.pods.len() - pods.len()) as u32;
        (pods, unnamed)
    }

    /// `podReadinessGate`: plans this sampling's drain step and raises `decision` to cover the
    /// pods still finishing (`crate::deletion::Drain`). Runs before the decision is published,
    /// so KEDA never reads a value that would remove a pod still at work; the step's writes
    /// follow in `write_pod_writes`.
    pub(super) fn plan_drain(entry: &Entry, readings: &Readings, t: f64, decision: &mut Decision) {
        let spec::SourceSpec::Service(svc) = &entry.spec.source else {
            return;
        };
        let Some(drain_spec) = svc.drain else {
            return;
        };
        let mut draining = entry.draining.lock().unwrap_or_else(|p| p.into_inner());
        draining.planned = None;
        if readings.gates_unknown.is_some() {
            return;
        }
        draining
            .drain
            .sync(t, readings.held.iter().map(|h| (h.pod.clone(), h.out_s)));
        if draining.paused_until.is_some_and(|until| t < until) || !decision.desired.is_finite() {
            return;
        }
        let (mut pods, unnamed) = Self::pod_loads(entry, readings);
        pods.extend(readings.held.iter().map(|h| PodLoad {
            pod: h.pod.clone(),
            requests: h.requests,
            kv_cache: None,
        }));
        let starting = readings.context.fleet.starting.unwrap_or(0);
        let current = pods.len() as u32 + unnamed + starting;
        let mut step = draining.drain.plan(
            t,
            decision.desired,
            current,
            &pods,
            f64::from(drain_spec.timeout_s),
        );
        // Unnamed pods cannot be taken out, but the report covers them like any pod at work.
        step.floor += unnamed;
        let desired = decision.desired;
        let reported = step.report(desired);
        if reported > desired {
            decision.desired = reported;
            decision.clamped = Some("podReadinessGate (pods out of service still finishing)");
        }
        draining.planned = Some(PlannedDrain {
            step,
            desired,
            pods,
        });
    }

    /// The pod writes `entry` asks for now: with `podReadinessGate`, the planned drain step
    /// (new pods let in, pods taken out or put back, then marks on the drained); with
    /// `podDeletionCost` alone, marks on the least busy pods while the decision reports fewer
    /// replicas than the pods scraped ready, taken back once it does not (`crate::deletion`).
    pub(super) fn pod_writes(
        &self,
        entry: &Entry,
        readings: &Readings,
        t: f64,
    ) -> Option<PodWrites> {
        let spec::SourceSpec::Service(svc) = &entry.spec.source else {
            return None;
        };
        if svc.drain.is_some() {
            let planned = entry
                .draining
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .planned
                .take();
            if planned.is_some() || !readings.unapproved.is_empty() {
                // New pods first: with the gate in their template they are not ready until
                // this scaler lets them in.
                let gates: Vec<(String, bool)> = readings
                    .unapproved
                    .iter()
                    .map(|p| (p.clone(), true))
                    .chain(planned.iter().flat_map(|p| p.step.gates.iter().cloned()))
                    .collect();
                return Some(PodWrites::Drain { gates, planned });
            }
        }
        if !svc.deletion_cost || readings.pods.is_empty() {
            return None;
        }
        let decision = entry.state.borrow().decision.clone()?;
        if !decision.desired.is_finite() || readings.failed {
            return None;
        }
        let (pods, unnamed) = Self::pod_loads(entry, readings);
        // Ready pods without a name cannot be marked; they count among those staying, so as many
        // go as the HPA will remove.
        let reported = crate::deletion::reported_replicas(decision.desired);
        let reported = reported.saturating_sub(unnamed);
        let writes = entry
            .deletion
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .plan(t, reported, &pods);
        (!writes.is_empty()).then_some(PodWrites::Marks(writes))
    }

    /// Writes every entry's planned pod writes at once, each call bounded by the scrape
    /// source's deadline (the scrape timeout); records what was acknowledged so a refused write
    /// is planned again.
    pub(super) async fn write_pod_writes(&self, writes: Vec<(Arc<Entry>, PodWrites)>, t: f64) {
        let Some(source) = self.sources.get(SourceKind::Scrape) else {
            return;
        };
        let calls = writes.into_iter().map(|(entry, w)| async move {
            match w {
                PodWrites::Marks(costs) => Self::write_marks(&**source, &entry, &costs).await,
                PodWrites::Drain { gates, planned } => {
                    Self::write_drain(&**source, &entry, &gates, planned, t).await
                }
            }
        });
        join_all(calls).await;
    }

    /// Writes a drain step: the gates, then the marks on the pods known to be drained. A pod
    /// whose taking out was not acknowledged stays covered by the report, which is raised
    /// again at once if the published one counted it done.
    async fn write_drain(
        source: &dyn crate::sources::Source,
        entry: &Entry,
        gates: &[(String, bool)],
        planned: Option<PlannedDrain>,
        t: f64,
    ) {
        let done = if gates.is_empty() {
            Ok(Vec::new())
        } else {
            tokio::time::timeout(source.deadline(), source.set_gates(&entry.spec, gates))
                .await
                .unwrap_or_else(|_| {
                    Err(crate::sources::scrape::discovery::GateError::Api(
                        "timed out".into(),
                    ))
                })
        };
        let (done, error) = match done {
            Ok(done) => (done, None),
            Err(e) => {
                if matches!(
                    e,
                    crate::sources::scrape::discovery::GateError::NoGate { .. }
                ) {
                    let mut draining = entry.draining.lock().unwrap_or_else(|p| p.into_inner());
                    draining.paused_until = Some(t + GATE_RETRY_S);
                }
                (Vec::new(), Some(e.to_string()))
            }
        };
        {
            let mut draining = entry.draining.lock().unwrap_or_else(|p| p.into_inner());
            for (pod, serving) in &done {
                draining.drain.written(t, pod, *serving);
            }
        }
        if let Some(e) = &error {
            tracing::warn!(object = %entry.object(), error = %e, "readiness gates");
        }
        entry.state.send_modify(|state| {
            state.gate_patches += done.len() as u64;
            state.gate_failures += u64::from(error.is_some());
            state.gate_error = error;
        });
        let Some(mut planned) = planned else {
            return;
        };
        let before = planned.step.report(planned.desired);
        for (pod, serving) in planned.step.gates.clone() {
            if !serving && !done.contains(&(pod.clone(), false)) {
                planned.step.failed(&pod);
            }
        }
        let after = planned.step.report(planned.desired);
        if after > before {
            entry.state.send_modify(|state| {
                if let Some(d) = state.decision.as_mut() {
                    let mut raised = (**d).clone();
                    raised.desired = raised.desired.max(after);
                    raised.clamped = Some("podReadinessGate (pods out of service still finishing)");
                    *d = Arc::new(raised);
                }
            });
        }
        let marks = entry
            .deletion
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .plan_marks(Drain::marks(&planned.step, &planned.pods));
        if !marks.is_empty() {
            Self::write_marks(source, entry, &marks).await;
        }
    }

    /// Writes deletion-cost annotations and records the outcome.
    async fn write_marks(
        source: &dyn crate::sources::Source,
        entry: &Entry,
        costs: &crate::deletion::Writes,
    ) {
        let result = tokio::time::timeout(
            source.deadline(),
            source.set_deletion_costs(&entry.spec, costs),
        )
        .await
        .unwrap_or_else(|_| {
            Err(crate::sources::scrape::discovery::DeletionCostError::Api(
                "timed out".into(),
            ))
        });
        let mut deletion = entry.deletion.lock().unwrap_or_else(|p| p.into_inner());
        let (done, error) = match result {
            Ok(done) => (done, None),
            Err(e) => (Vec::new(), Some(e.to_string())),
        };
        for (pod, cost) in &done {
            deletion.written(pod, *cost);
        }
        drop(deletion);
        if let Some(e) = &error {
            tracing::warn!(object = %entry.object(), error = %e, "pod deletion costs");
        } else {
            tracing::debug!(object = %entry.object(), pods = done.len(), "pod deletion costs written");
        }
        entry.state.send_modify(|state| {
            state.deletion_cost_patches += done.len() as u64;
            // One refused request: the writes stop at the first refusal.
            state.deletion_cost_failures += u64::from(error.is_some());
            // The latest attempt's verdict: a later success clears an old refusal.
            state.deletion_cost_error = error;
        });
    }
}
