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
//! the API server and an update event every pod watcher sees). So: nothing is written while the
//! reported capacity covers the ready pods; a round of writes at most every `MIN_INTERVAL_S`; and
//! only pods whose rank changed. This module is the pure part (ranking and pacing); the writes are
//! the scrape source's (`signals::discovery::Discovery::set_deletion_costs`).

use std::collections::BTreeMap;

/// The annotation the ReplicaSet controller ranks pods by on scale-down (Kubernetes >= 1.22).
pub const ANNOTATION: &str = "controller.kubernetes.io/pod-deletion-cost";

/// Shortest time between two rounds of writes for one ScaledObject. The HPA changes the replica
/// count at most once per sync period (15 s by default), so a ranking fresher than that is never
/// read; it also bounds one object's writes to `3600 / 15 = 240` rounds an hour, each touching
/// only the pods whose rank changed.
pub const MIN_INTERVAL_S: f64 = 15.0;

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

/// Each pod's deletion cost: 1 for the least busy, one more per distinct busier load (pods
/// equally busy share a cost, so the ReplicaSet's own order, most recently ready first, decides
/// between them and idle pods are not rewritten as they trade places). Costs start at 1 so a pod
/// the ranking has not reached yet (the annotation's default, 0: a pod that just became ready and
/// has no readings) still goes before every ranked one, as the ReplicaSet would choose anyway.
pub fn ranking(pods: &[PodLoad]) -> BTreeMap<String, i32> {
    let mut order: Vec<&PodLoad> = pods.iter().collect();
    order.sort_by(|a, b| {
        let (ka, kb) = (a.key(), b.key());
        ka.0.total_cmp(&kb.0)
            .then(ka.1.total_cmp(&kb.1))
            .then(a.pod.cmp(&b.pod))
    });
    let mut costs = BTreeMap::new();
    let mut cost = 0i32;
    let mut previous: Option<(f64, f64)> = None;
    for p in order {
        let key = p.key();
        if previous != Some(key) {
            cost = cost.saturating_add(1);
            previous = Some(key);
        }
        costs.insert(p.pod.clone(), cost);
    }
    costs
}

/// What one ScaledObject has written and when; paces its writes.
#[derive(Clone, Debug, Default)]
pub struct DeletionCosts {
    /// The cost each pod carries as far as this scaler knows (written and acknowledged).
    written: BTreeMap<String, i32>,
    last_round: Option<f64>,
}

impl DeletionCosts {
    /// The writes to make now (pod, cost), given the replicas the scaler reports and the ready
    /// pods' loads: none unless the report is below the ready pods (the HPA is about to remove
    /// some) and `MIN_INTERVAL_S` has passed since the last round; then only the pods whose cost
    /// differs from what they carry. Pods no longer ready are forgotten.
    pub fn plan(&mut self, now: f64, reported: u32, pods: &[PodLoad]) -> Vec<(String, i32)> {
        self.written
            .retain(|pod, _| pods.iter().any(|p| &p.pod == pod));
        let ready = pods.len();
        if (reported as usize) >= ready {
            return Vec::new();
        }
        if self
            .last_round
            .is_some_and(|at| now - at < MIN_INTERVAL_S && now >= at)
        {
            return Vec::new();
        }
        let changes: Vec<(String, i32)> = ranking(pods)
            .into_iter()
            .filter(|(pod, cost)| self.written.get(pod) != Some(cost))
            .collect();
        if !changes.is_empty() {
            self.last_round = Some(now);
        }
        changes
    }

    /// Records a write the API server acknowledged.
    pub fn written(&mut self, pod: &str, cost: i32) {
        self.written.insert(pod.to_string(), cost);
    }

    /// The cost each pod carries, as written.
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

    fn apply(c: &mut DeletionCosts, writes: &[(String, i32)]) {
        for (p, cost) in writes {
            c.written(p, *cost);
        }
    }

    #[test]
    fn the_least_busy_get_the_lowest_cost_and_kv_cache_breaks_ties() {
        let costs = ranking(&[
            pod("a", 9.0, 50.0),
            pod("b", 0.0, 0.0),
            pod("c", 3.0, 70.0),
            pod("d", 3.0, 20.0),
            pod("e", 0.0, 0.2),
        ]);
        assert_eq!(costs["b"], 1);
        assert_eq!(costs["e"], 1, "equally idle pods share a cost");
        assert_eq!(costs["d"], 2);
        assert_eq!(costs["c"], 3);
        assert_eq!(costs["a"], 4);
    }

    #[test]
    fn a_pod_that_reported_nothing_or_not_finite_ranks_busiest() {
        let mut blind = pod("blind", 0.0, 0.0);
        blind.requests = None;
        let costs = ranking(&[
            pod("busy", 30.0, 90.0),
            blind,
            pod("nan", f64::NAN, 0.0),
            pod("idle", 0.0, 0.0),
        ]);
        assert_eq!(costs["idle"], 1);
        assert_eq!(costs["busy"], 2);
        assert!(costs["blind"] > costs["busy"] && costs["nan"] > costs["busy"]);
    }

    #[test]
    fn nothing_is_written_while_the_report_covers_the_ready_pods() {
        let mut c = DeletionCosts::default();
        let pods = [pod("a", 5.0, 0.0), pod("b", 1.0, 0.0)];
        assert!(c.plan(0.0, 2, &pods).is_empty());
        assert!(c.plan(15.0, 3, &pods).is_empty());
        let writes = c.plan(30.0, 1, &pods);
        assert_eq!(writes, vec![("a".into(), 2), ("b".into(), 1)]);
    }

    #[test]
    fn rounds_are_paced_and_only_changed_ranks_are_written() {
        let mut c = DeletionCosts::default();
        let mut pods = vec![pod("a", 0.0, 0.0), pod("b", 2.0, 0.0), pod("c", 4.0, 0.0)];
        let first = c.plan(100.0, 2, &pods);
        assert_eq!(first.len(), 3);
        apply(&mut c, &first);
        // "a" becomes the busiest at once: re-ranked no sooner than the interval allows.
        pods[0].requests = Some(9.0);
        assert!(c.plan(101.0, 2, &pods).is_empty());
        assert!(c.plan(114.9, 2, &pods).is_empty());
        let second = c.plan(115.0, 2, &pods);
        assert_eq!(
            second,
            vec![("a".into(), 3), ("b".into(), 1), ("c".into(), 2)]
        );
        apply(&mut c, &second);
        // Loads that keep the order change nothing.
        pods[1].requests = Some(3.0);
        assert!(c.plan(200.0, 2, &pods).is_empty());
    }

    #[test]
    fn a_failed_write_is_tried_again_and_gone_pods_are_forgotten() {
        let mut c = DeletionCosts::default();
        let pods = vec![pod("a", 0.0, 0.0), pod("b", 2.0, 0.0)];
        let writes = c.plan(0.0, 1, &pods);
        c.written("a", 1); // "b" failed
        assert_eq!(c.plan(15.0, 1, &pods), vec![("b".into(), 2)]);
        c.written("b", 2);
        assert!(c.plan(30.0, 1, &pods[..1]).is_empty());
        assert_eq!(c.costs().len(), 1, "b is gone: {writes:?}");
    }
}
