//! Pod deletion costs (`podDeletionCost`): which pods a ReplicaSet should remove first when the
//! HPA scales a Deployment down.
//!
//! The ReplicaSet controller deletes not-ready pods first, then those with the lowest
//! `controller.kubernetes.io/pod-deletion-cost`, then the most recently ready. For LLM serving the
//! newest pod is as likely as any to be in the middle of long generations, which are cut when the
//! termination grace period runs out. This scaler reads every pod's requests in service and
//! waiting, so while a scale-down is expected it writes the pods' load rank into that annotation
//! and the least busy go first.
//!
//! Kubernetes asks not to update the annotation on every metric change (each update is a write to
//! the API server and an update event every pod watcher sees). So only the pods about to go are
//! marked (negative costs; every other pod keeps the default 0), a round of writes comes at most
//! every `MIN_INTERVAL_S`, and only pods whose mark changed are written. This module is the pure part (ranking and pacing); the writes are
//! the scrape source's (`sources::scrape::discovery::Discovery::set_deletion_costs`).

use std::collections::{BTreeMap, BTreeSet};

/// The annotation the ReplicaSet controller ranks pods by on scale-down (Kubernetes >= 1.22;
/// an int32, default 0, negative allowed).
pub const ANNOTATION: &str = "controller.kubernetes.io/pod-deletion-cost";

/// Shortest time between two rounds of writes for one ScaledObject. The HPA changes the replica
/// count at most once per sync period (15 s by default), so a ranking fresher than that is never
/// read; it also bounds one object's writes to `3600 / 15 = 240` rounds an hour, each touching
/// only the pods whose mark changed (at most the pods leaving plus those entering the set to go).
pub const MIN_INTERVAL_S: f64 = 15.0;

/// Annotation writes: (pod, cost), None removing the annotation.
pub type Writes = Vec<(String, Option<i32>)>;

/// The replicas KEDA's HPA asks for when the scaler reports `desired` (AverageValue, target 1:
/// `ceil(desired)`), the count the marks are planned against.
pub fn reported_replicas(desired: f64) -> u32 {
    desired.max(0.0).ceil().min(f64::from(u32::MAX)) as u32
}

/// One ready pod's load as its own `/metrics` reported it.
#[derive(Clone, Debug, PartialEq)]
pub struct PodLoad {
    pub pod: String,
    /// Requests in service plus waiting; None when the pod reported neither.
    pub requests: Option<f64>,
    /// KV-cache usage (percent), the tie-break between pods with as many requests.
    pub kv_cache: Option<f64>,
}

impl PodLoad {
    /// The sort key: requests, then KV cache. A pod that reported nothing, or a reading that is
    /// not finite, ranks as the busiest: never spare a pod we know to be idle at the expense of
    /// one we cannot see.
    fn key(&self) -> (f64, f64) {
        let finite = |v: f64| if v.is_finite() { v } else { f64::INFINITY };
        let requests = self.requests.map_or(f64::INFINITY, finite);
        // Whole percent: KV usage moves with every token, and a rank that flips on noise would
        // be written again and again. Without a KV-cache signal there is no tie-break.
        let kv = self.kv_cache.map_or(0.0, |v| finite(v).round());
        (requests, kv)
    }
}

/// The pods' order from least to most busy (ties by name, so the order is stable).
pub fn by_load(pods: &[PodLoad]) -> Vec<&PodLoad> {
    let mut order: Vec<&PodLoad> = pods.iter().collect();
    order.sort_by(|a, b| {
        let (ka, kb) = (a.key(), b.key());
        ka.0.total_cmp(&kb.0)
            .then(ka.1.total_cmp(&kb.1))
            .then(a.pod.cmp(&b.pod))
    });
    order
}

/// The annotation each pod should carry when `remove` pods are about to go: the `remove` least
/// busy get negative costs, the least busy the lowest (`-remove`, then `-remove + 1`, ... `-1`);
/// every other pod carries none (the default, 0). Marking only the pods to go, rather than
/// ranking every pod, keeps the writes to the pods entering or leaving that set: a rank among
/// busy pods that nobody removes changes with every request and is worth no API write.
pub fn marks(pods: &[PodLoad], remove: usize) -> BTreeMap<String, Option<i32>> {
    let remove = remove.min(pods.len());
    by_load(pods)
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            let cost = (i < remove).then(|| i as i32 - remove as i32);
            (p.pod.clone(), cost)
        })
        .collect()
}

/// What one ScaledObject has written and when; paces its writes.
#[derive(Clone, Debug, Default)]
pub struct DeletionCosts {
    /// The cost each pod carries as far as this scaler knows (written and acknowledged).
    written: BTreeMap<String, i32>,
    last_round: Option<f64>,
}

impl DeletionCosts {
    /// The writes to make now (pod, cost; None removes the annotation), given the replicas the
    /// scaler reports and the ready pods' loads. Nothing unless `MIN_INTERVAL_S` has passed
    /// since the last round; then the pods whose mark differs from what they carry: while the
    /// report is below the ready pods (the HPA is about to remove some), the least busy are
    /// marked; once it is not, the marks are taken back, so a later scale-down for another
    /// reason is not steered by an old ranking. Pods no longer ready are forgotten.
    pub fn plan(
        &mut self,
        now: f64,
        reported: u32,
        pods: &[PodLoad],
    ) -> Vec<(String, Option<i32>)> {
        self.written
            .retain(|pod, _| pods.iter().any(|p| &p.pod == pod));
        if self
            .last_round
            .is_some_and(|at| now - at < MIN_INTERVAL_S && now >= at)
        {
            return Vec::new();
        }
        let remove = pods.len().saturating_sub(reported as usize);
        let changes: Writes = marks(pods, remove)
            .into_iter()
            .filter(|(pod, cost)| self.written.get(pod).copied() != *cost)
            .collect();
        if !changes.is_empty() {
            self.last_round = Some(now);
        }
        changes
    }

    /// The writes that make the pods carry `marks`, unpaced (the drain's marks change once per
    /// pod; `Drain::marks`).
    pub fn plan_marks(&mut self, marks: BTreeMap<String, Option<i32>>) -> Writes {
        self.written.retain(|pod, _| marks.contains_key(pod));
        marks
            .into_iter()
            .filter(|(pod, cost)| self.written.get(pod).copied() != *cost)
            .collect()
    }

    /// Records a write the API server acknowledged.
    pub fn written(&mut self, pod: &str, cost: Option<i32>) {
        match cost {
            Some(c) => self.written.insert(pod.to_string(), c),
            None => self.written.remove(pod),
        };
    }

    /// The cost each marked pod carries, as written.
    pub fn costs(&self) -> &BTreeMap<String, i32> {
        &self.written
    }
}

/// The pod condition a Deployment names in `spec.template.spec.readinessGates` to let this
/// scaler take a pod out of its Service before a scale-down (`podReadinessGate`). Kubernetes
/// counts a pod ready only while every gate's condition is True, so the EndpointSlice controller
/// stops routing to a pod whose condition is False, and the ReplicaSet controller removes
/// not-ready pods before any other.
pub const READINESS_GATE: &str = "keda-gpu-scaler/serving";

/// How long a pod taken out of service may drain before the scale-down goes ahead anyway
/// (`drainTimeoutSeconds`' default): Kubernetes' default downscale stabilisation window. An HPA
/// without `behavior` keeps a replica this long after the need for it falls, so waiting for the
/// pods to finish never holds a GPU longer than a ScaledObject without behaviour already does.
pub const DEFAULT_DRAIN_TIMEOUT_S: f64 = 300.0;

/// Kubernetes' default `--horizontal-pod-autoscaler-tolerance`: the HPA leaves the replicas as
/// they are while the metric is within 10 % of its target.
pub const HPA_TOLERANCE: f64 = 0.1;

/// How long a drained pod may wait for the HPA, once the report lets it go, before the drain
/// concludes the HPA will not remove it. With the recommended behaviour (no scale-down window)
/// the HPA acts at its next sync, within 15 s of the report letting the pod go; four syncs
/// without a removal mean something else holds the replicas up (the ScaledObject's
/// `minReplicaCount` above the trigger's `minReplicas`, a scale-down window or a rate policy),
/// and a pod left out of service would be capacity lost for nothing.
pub const LINGER_S: f64 = 60.0;

/// How long the drain takes no pod out after drained pods lingered. Lingering means the HPA
/// keeps replicas for a reason this scaler cannot see (a `minReplicaCount` above the trigger's
/// `minReplicas`, or a scale-down window not declared in `scaleDownWindowSeconds`), and every
/// try reports a floor that an HPA window then holds up for its whole length. An hour keeps
/// that to a small share of the time until the operator fixes what the note names.
pub const STALL_S: f64 = 3600.0;

/// With an HPA scale-down window: how long before the HPA is due to remove pods they are taken
/// out of service. The window keeps replicas serving as a buffer against the load's return,
/// so pods leave it only for its last minute: four HPA syncs, which with a 30 s grace period
/// lets a request run 90 s after the drain begins (a 4,000-token answer at 45 tokens a
/// second) before it could be cut.
pub const DRAIN_LEAD_S: f64 = 60.0;

/// The replicas the HPA sets when the scaler reports `desired` (AverageValue, target 1) against
/// `current` replicas: `ceil(desired)`, unless the ratio is within the tolerance, and never
/// fewer than one (an HPA's `minReplicas` is at least 1; only KEDA scales to zero, through
/// `IsActive`, which drains nothing). The drain takes out only pods this would remove: a pod
/// out of service that the HPA then keeps would be capacity lost for nothing.
pub fn hpa_replicas(desired: f64, current: u32) -> u32 {
    if current > 0 && (1.0 - desired / f64::from(current)).abs() <= HPA_TOLERANCE {
        current
    } else {
        reported_replicas(desired).max(1)
    }
}

/// What the drain asks for at one step.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DrainStep {
    /// Readiness-gate writes: (pod, serving). False takes the pod out of its Service.
    pub gates: Vec<(String, bool)>,
    /// Pods out of service that have finished (or run out of time): the ones to remove.
    pub drained: BTreeSet<String>,
    /// The fewest replicas to report: every pod still finishing work counts, so the HPA removes
    /// only pods that have nothing left to cut.
    pub floor: u32,
    /// Drained pods waited `LINGER_S` and the HPA did not remove them: they were put back and
    /// no pod is taken out until the time given (the caller says why in the notes).
    pub stalled_until: Option<f64>,
}

impl DrainStep {
    /// A gate or mark write for `pod` failed: it is not known to be out of service, or not
    /// marked to go first, so the report keeps covering it.
    pub fn failed(&mut self, pod: &str) {
        if self.drained.remove(pod) {
            self.floor += 1;
        }
    }

    /// The value to report for a decision of `desired` replicas: the decision itself once every
    /// pod it removes has drained (reporting the whole number instead could fall within the
    /// HPA's tolerance and remove nothing), the floor while some still finish. A `desired` that
    /// is not finite is passed on as it is, for the caller's fail-safe to handle.
    pub fn report(&self, desired: f64) -> f64 {
        let floor = f64::from(self.floor);
        if floor > desired.ceil() {
            floor
        } else {
            desired
        }
    }
}

/// Drain before removal (`podReadinessGate`): when the scaler's decision falls below the pods
/// behind the Service, the least busy are taken out of service (their gate set False) and the
/// scaler keeps reporting them until they have finished what they hold, or until the timeout.
/// Only then does the report fall, the HPA lowers the replicas, and the ReplicaSet removes the
/// not-ready (drained) pods first: nothing is left running for the grace period to cut.
///
/// Readings of requests in service and waiting can say that a pod is empty but not how much
/// work its requests have left (no engine exports that per request); taking the pod out of
/// service first turns the first, which is known, into the second.
#[derive(Clone, Debug, Default)]
pub struct Drain {
    /// Pods out of service, and since when (as acknowledged).
    held: BTreeMap<String, f64>,
    /// When pods were last taken out (rounds are paced like the marks).
    last_round: Option<f64>,
    /// When each drained pod was first let go by the report (the HPA could remove it).
    done: BTreeMap<String, f64>,
    /// No pod is taken out before this time (drained pods lingered; `STALL_S`).
    stalled_until: Option<f64>,
    /// The HPA's scale-down stabilisation window (`scaleDownWindowSeconds`; 0 for the
    /// recommended ScaledObject), and the decisions within it.
    window_s: f64,
    decisions: std::collections::VecDeque<(f64, f64)>,
}

impl Drain {
    /// A drain for an HPA whose scale-down window is `window_s` (0: the recommended
    /// ScaledObject's, which removes at the next sync). With a window, pods are taken out
    /// `DRAIN_LEAD_S` before the HPA is due to remove them and drain while it waits out the
    /// rest: the GPU is held for the window anyway, so the drain costs none, and the report is
    /// left as decided.
    pub fn with_window(window_s: f64) -> Drain {
        Drain {
            window_s: window_s.max(0.0),
            ..Drain::default()
        }
    }

    /// One step: `desired` replicas reported by the decision, `current` the replicas the HPA
    /// counts (the pods below plus those starting), `pods` every pod behind the Service that
    /// this scaler can read (in service and taken out), `timeout_s` the longest drain. Pods are put back at once when the decision rises (capacity is needed now, and a
    /// drained pod serves again without a cold start); pods are taken out at most once per
    /// `MIN_INTERVAL_S`, which bounds the writes of a ScaledObject as the marks are bounded.
    pub fn plan(
        &mut self,
        now: f64,
        desired: f64,
        current: u32,
        pods: &[PodLoad],
        timeout_s: f64,
    ) -> DrainStep {
        self.held
            .retain(|pod, _| pods.iter().any(|p| &p.pod == pod));
        self.done.retain(|pod, _| self.held.contains_key(pod));
        // With a window, what the HPA will act on `DRAIN_LEAD_S` from now: the highest decision
        // of the window's part that will still be in it then (decisions to come assumed no
        // higher; if they are, the pods go back).
        self.decisions.push_back((now, desired));
        let horizon = (self.window_s - DRAIN_LEAD_S).max(0.0);
        while self
            .decisions
            .front()
            .is_some_and(|&(t, _)| t < now - self.window_s)
        {
            self.decisions.pop_front();
        }
        let acted_on = self
            .decisions
            .iter()
            .filter(|&&(t, _)| t >= now - horizon)
            .map(|&(_, d)| d)
            .fold(desired, |a, b| if b > a { b } else { a });
        // Until this drain has seen that much of the window, the HPA may hold recommendations
        // from before it started: nothing is taken out on a guess.
        let seen_window = self
            .decisions
            .front()
            .is_some_and(|&(t, _)| t <= now - horizon);
        // The ReplicaSet removes starting pods before these, so they count against the removal.
        let starting = (current as usize).saturating_sub(pods.len());
        let mut remove = (current.saturating_sub(hpa_replicas(acted_on, current)) as usize)
            .saturating_sub(starting)
            .min(pods.len());
        let lingering: Vec<String> = self
            .done
            .iter()
            .filter(|(_, &since)| now - since >= LINGER_S + DRAIN_LEAD_S.min(self.window_s))
            .map(|(pod, _)| pod.clone())
            .collect();
        if !lingering.is_empty() {
            // The HPA keeps these: put them back, and take none out for a while (nothing else
            // changes in this step).
            self.stalled_until = Some(now + STALL_S);
        }
        let stalled = self.stalled_until.is_some_and(|until| now < until);
        if stalled || !seen_window {
            remove = remove.min(self.held.len());
        }
        let gates: Vec<(String, bool)> = if !lingering.is_empty() {
            lingering.into_iter().map(|p| (p, true)).collect()
        } else if self.held.len() > remove {
            // Put back the pods taken out last: they have drained least.
            let mut latest: Vec<(&String, f64)> = self.held.iter().map(|(p, &t)| (p, t)).collect();
            latest.sort_by(|a, b| b.1.total_cmp(&a.1).then(b.0.cmp(a.0)));
            latest
                .into_iter()
                .take(self.held.len() - remove)
                .map(|(p, _)| (p.clone(), true))
                .collect()
        } else if self.held.len() < remove
            && self
                .last_round
                .is_none_or(|at| now - at >= MIN_INTERVAL_S || now < at)
        {
            self.last_round = Some(now);
            let serving: Vec<PodLoad> = pods
                .iter()
                .filter(|p| !self.held.contains_key(&p.pod))
                .cloned()
                .collect();
            by_load(&serving)
                .into_iter()
                .take(remove - self.held.len())
                .map(|p| (p.pod.clone(), false))
                .collect()
        } else {
            Vec::new()
        };
        // Drained: out of service (or taken out in this step) and holding nothing, or out for
        // the whole timeout. A pod taken out idle is done at once: waiting a step for a reading
        // that cannot be lower would only hold its GPU longer. A pod put back in this step is
        // not drained, whatever it reads.
        let taken_out = gates
            .iter()
            .filter(|(_, serving)| !serving)
            .map(|(p, _)| (p, now));
        let drained: BTreeSet<String> = self
            .held
            .iter()
            .map(|(p, &since)| (p, since))
            .chain(taken_out)
            .filter(|(pod, _)| !gates.iter().any(|(p, serving)| p == *pod && *serving))
            .filter(|(pod, since)| {
                now - since >= timeout_s
                    || pods
                        .iter()
                        .any(|p| &p.pod == *pod && p.requests.is_some_and(|r| r == 0.0))
            })
            .map(|(pod, _)| pod.clone())
            .collect();
        // With a scale-down window the HPA removes the pods only when the window has passed:
        // they drain meanwhile, and a floor in the report would only hold the window's highest
        // value up for another window. Without one, the floor is what holds the HPA back while
        // the drain works; a paused drain (`STALL_S`) holds nothing back.
        let floor = if self.window_s > 0.0 || stalled {
            0
        } else {
            (pods.len() - drained.len()) as u32
        };
        let step = DrainStep {
            gates,
            floor,
            drained,
            stalled_until: self.stalled_until.filter(|&until| now < until),
        };
        // The linger clock runs only while the report lets the HPA remove every drained pod.
        // While others still finish, the floor can sit within the HPA's tolerance (34 of 35
        // pods) and keep them all: a drained pod waiting for its neighbours is not one the HPA
        // keeps, and taking it for one would pause the drain for `STALL_S` and let the next
        // scale-downs cut requests. With a window the report is left as decided, and the HPA
        // acts when the window has passed (`DRAIN_LEAD_S` is added to the wait instead).
        let released = self.window_s > 0.0
            || stalled
            || (current.saturating_sub(hpa_replicas(step.report(desired), current)) as usize)
                .saturating_sub(starting)
                >= step.drained.len();
        if released {
            for pod in &step.drained {
                self.done.entry(pod.clone()).or_insert(now);
            }
        } else {
            self.done.clear();
        }
        step
    }

    /// Takes the pods out of service as the API shows them (pod, seconds out): the pods' own
    /// conditions are the record, shared by every scaler replica and kept across restarts.
    pub fn sync(&mut self, now: f64, held: impl IntoIterator<Item = (String, f64)>) {
        self.held = held
            .into_iter()
            .map(|(pod, out_s)| (pod, now - out_s.max(0.0)))
            .collect();
    }

    /// Records a gate write the API server acknowledged.
    pub fn written(&mut self, now: f64, pod: &str, serving: bool) {
        if serving {
            self.held.remove(pod);
            self.done.remove(pod);
        } else {
            self.held.entry(pod.to_string()).or_insert(now);
        }
    }

    /// The pods out of service, and since when.
    pub fn held(&self) -> &BTreeMap<String, f64> {
        &self.held
    }

    /// The deletion costs that make the ReplicaSet remove the drained pods before those still
    /// draining (all of them are not ready, which it removes first): -1 on each drained pod,
    /// none on any other. A pod's mark changes once, when it has drained, so these writes need
    /// no pacing of their own.
    pub fn marks(step: &DrainStep, pods: &[PodLoad]) -> BTreeMap<String, Option<i32>> {
        pods.iter()
            .map(|p| (p.pod.clone(), step.drained.contains(&p.pod).then_some(-1)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, requests: f64, kv: f64) -> PodLoad {
        PodLoad {
            pod: name.into(),
            requests: Some(requests),
            kv_cache: Some(kv),
        }
    }

    fn apply(c: &mut DeletionCosts, writes: &[(String, Option<i32>)]) {
        for (p, cost) in writes {
            c.written(p, *cost);
        }
    }

    fn names(pods: &[&PodLoad]) -> Vec<String> {
        pods.iter().map(|p| p.pod.clone()).collect()
    }

    #[test]
    fn pods_are_ordered_by_requests_then_kv_cache() {
        let pods = [
            pod("a", 9.0, 50.0),
            pod("b", 0.0, 0.0),
            pod("c", 3.0, 70.0),
            pod("d", 3.0, 20.0),
            pod("e", 0.0, 0.2),
        ];
        assert_eq!(names(&by_load(&pods)), ["b", "e", "d", "c", "a"]);
    }

    #[test]
    fn a_pod_that_reported_nothing_or_not_finite_ranks_busiest() {
        let mut blind = pod("blind", 0.0, 0.0);
        blind.requests = None;
        let pods = [
            pod("busy", 30.0, 90.0),
            blind,
            pod("nan", f64::NAN, 0.0),
            pod("idle", 0.0, 0.0),
        ];
        let order = names(&by_load(&pods));
        assert_eq!(&order[..2], ["idle", "busy"]);
    }

    #[test]
    fn only_the_pods_to_go_are_marked_the_least_busy_lowest() {
        let pods = [
            pod("a", 5.0, 0.0),
            pod("b", 1.0, 0.0),
            pod("c", 0.0, 0.0),
            pod("d", 7.0, 0.0),
        ];
        let m = marks(&pods, 2);
        assert_eq!(m["c"], Some(-2));
        assert_eq!(m["b"], Some(-1));
        assert_eq!((m["a"], m["d"]), (None, None));
        assert!(marks(&pods, 0).values().all(Option::is_none));
        assert_eq!(marks(&pods, 9).values().flatten().count(), 4);
    }

    #[test]
    fn nothing_is_written_while_the_report_covers_the_ready_pods() {
        let mut c = DeletionCosts::default();
        let pods = [pod("a", 5.0, 0.0), pod("b", 1.0, 0.0)];
        assert!(c.plan(0.0, 2, &pods).is_empty());
        assert!(c.plan(15.0, 3, &pods).is_empty());
        assert_eq!(c.plan(30.0, 1, &pods), vec![("b".into(), Some(-1))]);
    }

    #[test]
    fn rounds_are_paced_marks_follow_the_load_and_are_taken_back() {
        let mut c = DeletionCosts::default();
        let mut pods = vec![pod("a", 0.0, 0.0), pod("b", 2.0, 0.0), pod("c", 4.0, 0.0)];
        let first = c.plan(100.0, 2, &pods);
        assert_eq!(first, vec![("a".into(), Some(-1))]);
        apply(&mut c, &first);
        // "a" becomes the busiest at once: re-ranked no sooner than the interval allows.
        pods[0].requests = Some(9.0);
        assert!(c.plan(101.0, 2, &pods).is_empty());
        assert!(c.plan(114.9, 2, &pods).is_empty());
        let second = c.plan(115.0, 2, &pods);
        assert_eq!(second, vec![("a".into(), None), ("b".into(), Some(-1))]);
        apply(&mut c, &second);
        // Loads that keep the order change nothing.
        pods[2].requests = Some(3.0);
        assert!(c.plan(200.0, 2, &pods).is_empty());
        // No scale-down expected any more: the mark is taken back.
        assert_eq!(c.plan(300.0, 3, &pods), vec![("b".into(), None)]);
    }

    #[test]
    fn a_failed_write_is_tried_again_and_gone_pods_are_forgotten() {
        let mut c = DeletionCosts::default();
        let pods = vec![pod("a", 0.0, 0.0), pod("b", 2.0, 0.0), pod("c", 3.0, 0.0)];
        let writes = c.plan(0.0, 1, &pods);
        assert_eq!(writes, vec![("a".into(), Some(-2)), ("b".into(), Some(-1))]);
        c.written("a", Some(-2)); // "b" failed
        assert_eq!(c.plan(15.0, 1, &pods), vec![("b".into(), Some(-1))]);
        c.written("b", Some(-1));
        // b and c are gone; a alone is not to be removed any more.
        assert_eq!(c.plan(30.0, 1, &pods[..1]), vec![("a".into(), None)]);
        assert_eq!(c.costs().len(), 1, "b is forgotten");
    }

    fn held(d: &Drain) -> Vec<String> {
        d.held().keys().cloned().collect()
    }

    fn apply_gates(d: &mut Drain, now: f64, step: &DrainStep) {
        for (p, serving) in &step.gates {
            d.written(now, p, *serving);
        }
    }

    #[test]
    fn the_hpa_model_keeps_the_replicas_within_its_tolerance_and_never_goes_below_one() {
        assert_eq!(hpa_replicas(12.5, 14), 13, "0.89 of current: the HPA acts");
        assert_eq!(
            hpa_replicas(13.0, 14),
            14,
            "0.93 of current: within the tolerance"
        );
        assert_eq!(hpa_replicas(0.0, 4), 1);
        assert_eq!(hpa_replicas(7.0, 0), 7);
    }

    #[test]
    fn the_least_busy_are_taken_out_and_the_report_covers_them_until_they_are_done() {
        let mut d = Drain::default();
        let mut pods = vec![
            pod("a", 6.0, 0.0),
            pod("b", 2.0, 0.0),
            pod("c", 1.0, 0.0),
            pod("d", 5.0, 0.0),
        ];
        // The decision falls from 4 to 2: the two least busy go out of service.
        let step = d.plan(0.0, 2.0, 4, &pods, 300.0);
        assert_eq!(step.gates, vec![("c".into(), false), ("b".into(), false)]);
        assert!(step.drained.is_empty());
        assert_eq!((step.floor, step.report(2.0)), (4, 4.0));
        apply_gates(&mut d, 0.0, &step);
        // One has finished: the report lets one go, and the mark picks the finished one.
        pods[2].requests = Some(0.0);
        let step = d.plan(15.0, 2.0, 4, &pods, 300.0);
        assert!(step.gates.is_empty());
        assert_eq!((step.floor, step.report(2.0)), (3, 3.0));
        let marks = Drain::marks(&step, &pods);
        assert_eq!(marks["c"], Some(-1));
        assert_eq!(marks["b"], None);
        // Both finished: the decision itself is reported, as it was computed.
        pods[1].requests = Some(0.0);
        let step = d.plan(30.0, 1.6, 4, &pods, 300.0);
        assert_eq!(step.report(1.6), 1.6);
        assert_eq!(held(&d), ["b", "c"]);
    }

    #[test]
    fn an_idle_pod_taken_out_is_done_at_once_and_a_busy_one_at_the_timeout() {
        let mut d = Drain::default();
        let pods = [
            pod("idle", 0.0, 0.0),
            pod("busy", 3.0, 0.0),
            pod("x", 9.0, 0.0),
        ];
        let step = d.plan(0.0, 1.0, 3, &pods, 30.0);
        assert_eq!(step.drained.len(), 1, "{step:?}");
        assert_eq!(step.floor, 2);
        apply_gates(&mut d, 0.0, &step);
        assert_eq!(d.plan(29.0, 1.0, 3, &pods, 30.0).floor, 2);
        assert_eq!(d.plan(30.0, 1.0, 3, &pods, 30.0).floor, 1);
    }

    #[test]
    fn pods_are_put_back_at_once_when_the_decision_rises_latest_first() {
        let mut d = Drain::default();
        let pods = [
            pod("a", 1.0, 0.0),
            pod("b", 2.0, 0.0),
            pod("c", 3.0, 0.0),
            pod("d", 9.0, 0.0),
        ];
        let step = d.plan(0.0, 3.0, 4, &pods, 300.0);
        assert_eq!(step.gates, vec![("a".into(), false)]);
        apply_gates(&mut d, 0.0, &step);
        // Rounds that take pods out are paced...
        assert!(d.plan(5.0, 2.0, 4, &pods, 300.0).gates.is_empty());
        let step = d.plan(15.0, 2.0, 4, &pods, 300.0);
        assert_eq!(step.gates, vec![("b".into(), false)]);
        apply_gates(&mut d, 15.0, &step);
        // ... putting back is not: the last taken out goes back first.
        let step = d.plan(16.0, 3.0, 4, &pods, 300.0);
        assert_eq!(step.gates, vec![("b".into(), true)]);
        assert!(!step.drained.contains("b"));
        apply_gates(&mut d, 16.0, &step);
        assert_eq!(held(&d), ["a"]);
    }

    #[test]
    fn nothing_is_taken_out_within_the_tolerance_below_one_or_for_starting_pods() {
        let mut d = Drain::default();
        let pods: Vec<PodLoad> = (0..14)
            .map(|i| pod(&format!("p{i:02}"), 1.0, 0.0))
            .collect();
        assert!(d.plan(0.0, 13.0, 14, &pods, 300.0).gates.is_empty());
        let one = [pod("only", 0.0, 0.0)];
        assert!(d.plan(0.0, 0.0, 1, &one, 300.0).gates.is_empty());
        // 2 pods read, 2 more starting, the decision 2: the ReplicaSet removes the starting.
        let two = [pod("a", 0.0, 0.0), pod("b", 0.0, 0.0)];
        assert!(d.plan(0.0, 2.0, 4, &two, 300.0).gates.is_empty());
    }

    #[test]
    fn a_pod_that_reports_nothing_is_not_drained_and_a_failed_write_keeps_it_covered() {
        let mut d = Drain::default();
        let mut blind = pod("blind", 0.0, 0.0);
        blind.requests = None;
        let pods = [blind, pod("z", 5.0, 0.0), pod("idle", 0.0, 0.0)];
        let mut step = d.plan(0.0, 1.0, 3, &pods, 300.0);
        assert_eq!(step.drained.len(), 1, "only the idle pod: {step:?}");
        assert!(step.drained.contains("idle"));
        step.failed("idle");
        assert_eq!((step.floor, step.report(1.0)), (3, 3.0));
        let not_finite = step.report(f64::NAN);
        assert!(not_finite.is_nan(), "left for the fail-safe to handle");
    }

    #[test]
    fn drained_pods_the_hpa_keeps_are_put_back_and_the_drain_pauses() {
        let mut d = Drain::default();
        let pods = [pod("a", 0.0, 0.0), pod("b", 4.0, 0.0), pod("c", 6.0, 0.0)];
        // The decision lets one go; a is idle, so drained at once and the report lets it go.
        let step = d.plan(0.0, 1.6, 3, &pods, 300.0);
        assert_eq!(step.gates, vec![("a".into(), false)]);
        apply_gates(&mut d, 0.0, &step);
        assert_eq!(d.plan(30.0, 1.6, 3, &pods, 300.0).report(1.6), 1.6);
        // A minute on and the pod is still there: the HPA keeps it (a minReplicaCount of 3).
        let step = d.plan(60.0, 1.6, 3, &pods, 300.0);
        assert_eq!(step.gates, vec![("a".into(), true)]);
        assert_eq!(step.stalled_until, Some(60.0 + STALL_S));
        apply_gates(&mut d, 60.0, &step);
        // Nothing is taken out while stalled, then the drain resumes.
        assert!(d.plan(100.0, 1.6, 3, &pods, 300.0).gates.is_empty());
        let step = d.plan(60.0 + STALL_S, 1.6, 3, &pods, 300.0);
        assert_eq!(step.gates, vec![("a".into(), false)]);
        assert_eq!(step.stalled_until, None);
    }

    #[test]
    fn a_drained_pod_waiting_for_the_others_within_the_tolerance_is_not_taken_as_kept() {
        let mut d = Drain::default();
        // 20 pods, the decision 16: the four least busy go out; one is idle, three are busy.
        let mut pods: Vec<PodLoad> = (0..20)
            .map(|i| {
                pod(
                    &format!("p{i:02}"),
                    if i < 4 { f64::from(i) } else { 8.0 },
                    0.0,
                )
            })
            .collect();
        let step = d.plan(0.0, 16.0, 20, &pods, 300.0);
        assert_eq!(step.gates.len(), 4, "{step:?}");
        apply_gates(&mut d, 0.0, &step);
        // The idle one is drained, but the report (19 of 20) is within the HPA's tolerance and
        // removes nothing while the others finish: however long that takes, nothing lingers.
        for k in 1..=8 {
            let t = 15.0 * f64::from(k);
            let step = d.plan(t, 16.0, 20, &pods, 300.0);
            assert_eq!((step.floor, step.report(16.0)), (19, 19.0), "at {t} s");
            assert!(step.gates.is_empty(), "at {t} s: {step:?}");
            assert_eq!(step.stalled_until, None, "at {t} s");
        }
        // All four finish at 135 s: the report lets them go. Kept a minute longer by the HPA,
        // they are put back and the drain pauses, as before.
        for p in pods.iter_mut().take(4) {
            p.requests = Some(0.0);
        }
        assert_eq!(d.plan(135.0, 16.0, 20, &pods, 300.0).report(16.0), 16.0);
        assert_eq!(d.plan(180.0, 16.0, 20, &pods, 300.0).stalled_until, None);
        let step = d.plan(195.0, 16.0, 20, &pods, 300.0);
        assert_eq!(step.gates.len(), 4, "{step:?}");
        assert_eq!(step.stalled_until, Some(195.0 + STALL_S));
    }

    #[test]
    fn with_an_hpa_window_pods_go_out_a_lead_before_the_hpa_acts_and_the_report_is_left_alone() {
        let mut d = Drain::with_window(300.0);
        let pods = [
            pod("a", 0.0, 0.0),
            pod("b", 2.0, 0.0),
            pod("c", 5.0, 0.0),
            pod("d", 9.0, 0.0),
        ];
        // Sampled every 15 s: 4 until 100 s, then 2. The HPA's window holds the 4 of 90 s
        // until 390 s; the pods go out DRAIN_LEAD_S before, and the report is never raised.
        let mut out = None;
        for k in 0..=30 {
            let t = 15.0 * f64::from(k);
            let desired = if t < 100.0 { 4.0 } else { 2.0 };
            let step = d.plan(t, desired, 4, &pods, 300.0);
            assert_eq!(step.report(desired), desired, "at {t} s");
            if !step.gates.is_empty() && out.is_none() {
                out = Some((t, step.gates.clone()));
            }
        }
        let (t, gates) = out.expect("pods went out");
        // The 4 of 90 s leaves the HPA's window after 390 s, so the HPA acts at its first sync
        // after that; the pods go out at the first sampling within DRAIN_LEAD_S of it.
        assert_eq!(t, 345.0);
        assert_eq!(gates, vec![("a".into(), false), ("b".into(), false)]);
    }

    #[test]
    fn with_an_hpa_window_nothing_goes_out_before_the_drain_has_seen_the_window() {
        let mut d = Drain::with_window(300.0);
        let pods = [pod("a", 0.0, 0.0), pod("b", 2.0, 0.0)];
        // Just started: the HPA may hold recommendations from before.
        assert!(d.plan(15.0, 0.5, 2, &pods, 300.0).gates.is_empty());
        assert!(d.plan(250.0, 0.5, 2, &pods, 300.0).gates.is_empty());
        assert_eq!(d.plan(255.0, 0.5, 2, &pods, 300.0).gates.len(), 1);
    }
}
