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

use std::collections::BTreeMap;

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
}
