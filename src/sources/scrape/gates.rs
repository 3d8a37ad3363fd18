//! `podReadinessGate`'s view of a Service's pods: which list the readiness gate in their spec,
//! and what its condition (`crate::deletion::READINESS_GATE`) says.
//!
//! The pods' own conditions are the record of which pods are out of service, not this
//! process's memory: the chart runs two scaler replicas behind one Service and KEDA asks either,
//! so both must see the same pods out and report the same floor, and a restarted scaler must
//! carry on a drain rather than mistake its pods for new ones. A pod watcher per namespace (only
//! where a trigger asks for the gate) keeps that record; writes this process made in the last
//! few seconds overlay it until the watch shows them. Resolving is pure (`view`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;

use super::discovery::{Endpoint, Kept};
use crate::deletion::READINESS_GATE;

/// How long a write of this process stands over what the pod watch shows. A watch event comes
/// within a second in a healthy cluster; past this the watch is the truth again (a write it
/// never shows was undone by someone else, or the pod is gone).
pub const RECENT: Duration = Duration::from_secs(30);

/// The gate's condition on one pod.
#[derive(Clone, Debug, PartialEq)]
pub struct Condition {
    /// True: in service; False: taken out.
    pub serving: bool,
    /// Its `lastTransitionTime`, unix seconds, when set.
    pub since_unix: Option<f64>,
}

/// What the watcher keeps of one pod.
#[derive(Clone, Debug, PartialEq)]
pub struct PodGate {
    /// Its spec lists the gate in `readinessGates`.
    pub gated: bool,
    pub condition: Option<Condition>,
}

impl PodGate {
    pub fn from_api(pod: &Pod) -> PodGate {
        let gated = pod.spec.as_ref().is_some_and(|s| {
            s.readiness_gates
                .iter()
                .flatten()
                .any(|g| g.condition_type == READINESS_GATE)
        });
        let condition = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == READINESS_GATE))
            .map(|c| Condition {
                serving: c.status == "True",
                since_unix: c
                    .last_transition_time
                    .as_ref()
                    .map(|t| t.0.as_millisecond() as f64 / 1000.0),
            });
        PodGate { gated, condition }
    }
}

/// A namespace's pods, as the gate needs them, by name.
#[derive(Clone, Debug, Default)]
pub struct PodGates(HashMap<String, PodGate>);

impl PodGates {
    pub fn get(&self, pod: &str) -> Option<&PodGate> {
        self.0.get(pod)
    }
}

impl FromIterator<(String, PodGate)> for PodGates {
    fn from_iter<I: IntoIterator<Item = (String, PodGate)>>(iter: I) -> Self {
        PodGates(iter.into_iter().collect())
    }
}

impl Kept for PodGates {
    type Object = Pod;
    const KIND: &'static str = "Pod";
    fn keep(&mut self, name: String, object: &Pod) {
        self.0.insert(name, PodGate::from_api(object));
    }
    fn forget(&mut self, name: &str) {
        self.0.remove(name);
    }
    fn count(&self) -> usize {
        self.0.len()
    }
}

/// Gate writes this process made recently, per pod: (serving, when).
#[derive(Clone, Debug, Default)]
pub struct Recent(HashMap<String, (bool, Instant)>);

impl Recent {
    pub fn wrote(&mut self, pod: &str, serving: bool, at: Instant) {
        self.0.insert(pod.to_string(), (serving, at));
    }

    /// The write still standing for `pod` at `now`, and how long ago it was made.
    fn standing(&self, pod: &str, now: Instant) -> Option<(bool, Duration)> {
        let (serving, at) = *self.0.get(pod)?;
        let age = now.saturating_duration_since(at);
        (age < RECENT).then_some((serving, age))
    }

    /// Forgets writes past `RECENT`.
    pub fn prune(&mut self, now: Instant) {
        self.0
            .retain(|_, (_, at)| now.saturating_duration_since(*at) < RECENT);
    }
}

/// One Service's pods as the gate sees them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct View {
    /// Pods out of service, and for how many seconds (0 when the time is unknown).
    pub held: BTreeMap<String, f64>,
    /// Pods not ready that list the gate and have no condition yet: to let in.
    pub unapproved: Vec<String>,
}

/// The gate's view of the Service's `endpoints` (terminating ones are ignored): a pod is out of
/// service when its condition (or this process's standing write) says False; a pod not ready,
/// listing the gate and with neither, waits to be let in. A pod the watch has not seen yet is
/// neither: the next sampling will know it.
pub fn view<'a>(
    endpoints: impl IntoIterator<Item = &'a Endpoint>,
    pods: &PodGates,
    recent: &Recent,
    now: Instant,
    now_unix: f64,
) -> View {
    let mut out = View::default();
    let mut seen = BTreeSet::new();
    for e in endpoints {
        let Some(pod) = e.pod.as_deref() else {
            continue;
        };
        if e.terminating || !seen.insert(pod) {
            continue;
        }
        let api = pods.get(pod);
        let state = match recent.standing(pod, now) {
            Some((serving, age)) => Some((serving, age.as_secs_f64())),
            None => api.and_then(|p| p.condition.as_ref()).map(|c| {
                let out_s = c.since_unix.map_or(0.0, |t| (now_unix - t).max(0.0));
                (c.serving, out_s)
            }),
        };
        match state {
            Some((false, out_s)) => {
                out.held.insert(pod.to_string(), out_s);
            }
            None if !e.ready && api.is_some_and(|p| p.gated) => {
                out.unapproved.push(pod.to_string())
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(pod: &str, ready: bool, terminating: bool) -> Endpoint {
        Endpoint {
            address: "10.0.0.1".into(),
            pod: Some(pod.into()),
            ready,
            terminating,
        }
    }

    fn gate(gated: bool, condition: Option<(bool, f64)>) -> PodGate {
        PodGate {
            gated,
            condition: condition.map(|(serving, since)| Condition {
                serving,
                since_unix: Some(since),
            }),
        }
    }

    #[test]
    fn pods_out_come_from_their_condition_and_new_gated_pods_wait_to_be_let_in() {
        let pods: PodGates = [
            ("out".to_string(), gate(true, Some((false, 900.0)))),
            ("in".to_string(), gate(true, Some((true, 100.0)))),
            ("new".to_string(), gate(true, None)),
            ("plain".to_string(), gate(false, None)),
            ("going".to_string(), gate(true, Some((false, 100.0)))),
        ]
        .into_iter()
        .collect();
        let eps = [
            ep("out", false, false),
            ep("in", true, false),
            ep("new", false, false),
            ep("plain", false, false),
            ep("going", false, true),
            ep("unseen", false, false),
        ];
        let now = Instant::now();
        let v = view(&eps, &pods, &Recent::default(), now, 1000.0);
        assert_eq!(v.held, BTreeMap::from([("out".to_string(), 100.0)]));
        assert_eq!(v.unapproved, ["new"]);
    }

    #[test]
    fn a_recent_write_stands_until_the_watch_shows_it_then_the_watch_is_the_truth() {
        let pods: PodGates = [("a".to_string(), gate(true, Some((true, 0.0))))]
            .into_iter()
            .collect();
        let eps = [ep("a", true, false)];
        let t0 = Instant::now();
        let mut recent = Recent::default();
        recent.wrote("a", false, t0);
        let v = view(&eps, &pods, &recent, t0 + Duration::from_secs(2), 0.0);
        assert_eq!(v.held, BTreeMap::from([("a".to_string(), 2.0)]));
        let later = t0 + RECENT;
        assert!(view(&eps, &pods, &recent, later, 0.0).held.is_empty());
        recent.prune(later);
        assert!(recent.0.is_empty());
    }
}
