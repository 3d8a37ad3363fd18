//! A round-robin balancer over the ready replicas (what a Service's endpoints give a client).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::RwLock;

#[derive(Default)]
pub struct Balancer {
    targets: RwLock<Vec<SocketAddr>>,
    next: AtomicUsize,
}

impl Balancer {
    /// Replaces the target set (called whenever readiness changes).
    pub fn set(&self, targets: Vec<SocketAddr>) {
        *self.targets.write().unwrap_or_else(|p| p.into_inner()) = targets;
    }

    /// The next target in turn; None when no replica is ready.
    pub fn pick(&self) -> Option<SocketAddr> {
        let targets = self.targets.read().unwrap_or_else(|p| p.into_inner());
        if targets.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        Some(targets[i % targets.len()])
    }

    pub fn len(&self) -> usize {
        self.targets.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turns_go_round_every_target_evenly() {
        let b = Balancer::default();
        assert_eq!(b.pick(), None);
        let addrs: Vec<SocketAddr> = (1..=3)
            .map(|p| SocketAddr::from(([127, 0, 0, 1], 8000 + p)))
            .collect();
        b.set(addrs.clone());
        let mut counts = [0; 3];
        for _ in 0..30 {
            let a = b.pick().unwrap();
            counts[addrs.iter().position(|x| *x == a).unwrap()] += 1;
        }
        assert_eq!(counts, [10, 10, 10]);
        b.set(addrs[..1].to_vec());
        assert_eq!(b.pick(), Some(addrs[0]));
        assert_eq!(b.len(), 1);
    }
}
