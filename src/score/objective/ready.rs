//! The cold start as a discovery source sees it: a pod's first sight not ready to ready.

use std::collections::VecDeque;

use super::{forget, median, MEMORY_S};

/// Measures cold starts the way a discovery source sees them: from the first sample in which a
/// pod is seen not ready to the first in which it is ready. Pods first seen ready (there before
/// the scaler) say nothing and are not counted.
#[derive(Clone, Debug, Default)]
pub struct ReadyTimer {
    unready_since: std::collections::BTreeMap<String, f64>,
    seen_ready: std::collections::BTreeSet<String>,
    measured: VecDeque<(f64, f64)>,
}

impl ReadyTimer {
    /// Records which pods are starting and which are ready at `t`.
    pub fn observe<'a>(
        &mut self,
        t: f64,
        starting: impl IntoIterator<Item = &'a str>,
        ready: impl IntoIterator<Item = &'a str>,
    ) {
        for p in starting {
            if !self.seen_ready.contains(p) {
                self.unready_since.entry(p.to_string()).or_insert(t);
            }
        }
        let ready: std::collections::BTreeSet<String> =
            ready.into_iter().map(str::to_string).collect();
        for p in &ready {
            if let Some(since) = self.unready_since.remove(p) {
                self.measured.push_back((t, t - since));
            }
        }
        // Forget pods that left, so the maps hold only the live fleet.
        self.unready_since
            .retain(|p, since| ready.contains(p) || t - *since < MEMORY_S);
        self.seen_ready = ready;
        forget(&mut self.measured, t - MEMORY_S, |r| r.0);
    }

    /// The median measured cold start of the last hour; None before the first.
    pub fn cold_start_s(&self) -> Option<f64> {
        median(self.measured.iter().map(|&(_, v)| v).collect())
    }

    pub fn measured(&self) -> usize {
        self.measured.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ready_timer_measures_not_ready_to_ready() {
        let mut r = ReadyTimer::default();
        r.observe(0.0, ["a"], ["old"]);
        r.observe(15.0, ["a", "b"], ["old"]);
        r.observe(75.0, ["b"], ["old", "a"]);
        r.observe(150.0, [], ["old", "a", "b"]);
        assert_eq!(r.measured(), 2);
        // 75 and 135: the median of two is the higher.
        assert_eq!(r.cold_start_s(), Some(135.0));
        // A pod that was ready and fails readiness later is not a cold start.
        r.observe(165.0, ["a"], ["old", "b"]);
        r.observe(180.0, [], ["old", "a", "b"]);
        assert_eq!(r.measured(), 2);
    }
}
