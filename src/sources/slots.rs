//! Fetch slots handed out by standing, not by arrival.
//!
//! The scrape source fetches a bounded number of endpoints at once, every ScaledObject together.
//! Slots taken first come, first served go to whoever is polled first in a round (hash-map
//! order): 300 objects with one black-holed endpoint each then hold every slot for a whole
//! timeout while a healthy object waits out its deadline. Here a freed slot goes to the
//! best-placed waiter, and endpoints that have not shown themselves fast hold only part of the
//! slots:
//!
//! - `Fast` (answered within half the timeout last time): admitted while any slot is free;
//! - `New` (never tried) and `Slow` (timed out, or answered late): at most `untrusted` slots
//!   together, `Slow` ones at most `slow`,
//!
//! so fast endpoints always find `total - untrusted` slots that no black hole can take. Within a
//! standing the waiter with the lowest rank goes first; the caller ranks (`scrape/mod.rs`). While
//! paused (a round queueing its first fetches), nothing is handed out, so the first fetches of a
//! round are ordered by rank too, not by who asked first.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

/// What an endpoint showed the last time it was fetched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Standing {
    /// Answered (or failed at once) within half the timeout.
    Fast,
    /// Not tried yet.
    New,
    /// Timed out, was cut off by its object's deadline, or answered late.
    Slow,
}

impl Standing {
    fn index(self) -> usize {
        match self {
            Standing::Fast => 0,
            Standing::New => 1,
            Standing::Slow => 2,
        }
    }

    fn untrusted(self) -> bool {
        self != Standing::Fast
    }
}

/// Order within a standing: lower first.
pub type Rank = (u64, u64);

/// The slot pool.
#[derive(Clone)]
pub struct Slots {
    inner: Arc<Inner>,
}

struct Inner {
    total: usize,
    untrusted: usize,
    slow: usize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    busy: usize,
    untrusted_busy: usize,
    slow_busy: usize,
    paused: usize,
    /// Arrival order, to break ties in rank.
    seq: u64,
    waiting: [BinaryHeap<Waiter>; 3],
}

struct Waiter {
    rank: Rank,
    seq: u64,
    tx: oneshot::Sender<Slot>,
}

impl PartialEq for Waiter {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Waiter {}

impl PartialOrd for Waiter {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Waiter {
    /// The heap pops the greatest: the lowest rank, then the earliest arrival.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.rank, other.seq).cmp(&(self.rank, self.seq))
    }
}

/// One slot, returned to the pool when dropped.
pub struct Slot {
    inner: Option<Arc<Inner>>,
    standing: Standing,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take() {
            let mut state = inner.lock();
            state.give_back(self.standing);
            inner.dispatch(&mut state);
        }
    }
}

/// A place in the queue for a slot (`Slots::ticket`).
pub struct Ticket(oneshot::Receiver<Slot>);

impl std::future::Future for Ticket {
    type Output = Option<Slot>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Slot>> {
        std::pin::Pin::new(&mut self.0).poll(cx).map(Result::ok)
    }
}

/// Holds every hand-out until dropped (see `Slots::pause`).
pub struct Paused {
    inner: Arc<Inner>,
}

impl Drop for Paused {
    fn drop(&mut self) {
        let mut state = self.inner.lock();
        state.paused -= 1;
        self.inner.dispatch(&mut state);
    }
}

impl State {
    fn admits(&self, standing: Standing, inner: &Inner) -> bool {
        match standing {
            Standing::Fast => true,
            Standing::New => self.untrusted_busy < inner.untrusted,
            Standing::Slow => self.untrusted_busy < inner.untrusted && self.slow_busy < inner.slow,
        }
    }

    fn take(&mut self, standing: Standing) {
        self.busy += 1;
        self.untrusted_busy += usize::from(standing.untrusted());
        self.slow_busy += usize::from(standing == Standing::Slow);
    }

    fn give_back(&mut self, standing: Standing) {
        self.busy -= 1;
        self.untrusted_busy -= usize::from(standing.untrusted());
        self.slow_busy -= usize::from(standing == Standing::Slow);
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hands free slots to the best admissible waiters.
    fn dispatch(self: &Arc<Self>, state: &mut State) {
        if state.paused > 0 {
            return;
        }
        'free: while state.busy < self.total {
            for standing in [Standing::Fast, Standing::New, Standing::Slow] {
                if !state.admits(standing, self) {
                    continue;
                }
                while let Some(waiter) = state.waiting[standing.index()].pop() {
                    state.take(standing);
                    let slot = Slot {
                        inner: Some(self.clone()),
                        standing,
                    };
                    match waiter.tx.send(slot) {
                        Ok(()) => continue 'free,
                        // The waiter gave up (its object's deadline): not a hand-out.
                        Err(mut slot) => {
                            slot.inner = None;
                            state.give_back(standing);
                        }
                    }
                }
            }
            break;
        }
    }
}

impl Slots {
    /// `total` slots; endpoints not known to be fast hold at most `untrusted` of them, slow ones
    /// at most `slow`.
    pub fn new(total: usize, untrusted: usize, slow: usize) -> Slots {
        let total = total.max(1);
        Slots {
            inner: Arc::new(Inner {
                total,
                untrusted: untrusted.min(total),
                slow: slow.min(untrusted).min(total),
                state: Mutex::new(State::default()),
            }),
        }
    }

    /// A slot for an endpoint of this standing, when its turn comes; None only if the pool is
    /// gone. (The scraper queues with `ticket`; the tests wait here.)
    #[cfg(test)]
    pub async fn acquire(&self, standing: Standing, rank: Rank) -> Option<Slot> {
        self.ticket(standing, rank).await
    }

    /// Queues for a slot now (not when first polled, as `acquire` does); the ticket resolves to
    /// the slot when its turn comes. Dropping it gives up the place.
    pub fn ticket(&self, standing: Standing, rank: Rank) -> Ticket {
        let mut state = self.inner.lock();
        let (tx, rx) = oneshot::channel();
        state.seq += 1;
        let seq = state.seq;
        state.waiting[standing.index()].push(Waiter { rank, seq, tx });
        self.inner.dispatch(&mut state);
        Ticket(rx)
    }

    /// Hands nothing out until the guard is dropped: a round queues its first fetches, all of
    /// them, before the best of them are served.
    pub fn pause(&self) -> Paused {
        self.inner.lock().paused += 1;
        Paused {
            inner: self.inner.clone(),
        }
    }

    /// Slots in use now.
    #[cfg(test)]
    pub fn busy(&self) -> usize {
        self.inner.lock().busy
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Starts a waiter for a slot; the returned receiver gets its slot.
    fn ask(slots: &Slots, standing: Standing, rank: Rank) -> oneshot::Receiver<Slot> {
        let (tx, rx) = oneshot::channel();
        let slots = slots.clone();
        tokio::spawn(async move {
            if let Some(slot) = slots.acquire(standing, rank).await {
                let _ = tx.send(slot);
            }
        });
        rx
    }

    async fn settle() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    #[tokio::test]
    async fn untrusted_endpoints_never_take_the_slots_kept_for_fast_ones() {
        let slots = Slots::new(4, 3, 2);
        let mut held = Vec::new();
        for _ in 0..5 {
            held.push(ask(&slots, Standing::Slow, (0, 0)));
        }
        settle().await;
        assert_eq!(slots.busy(), 2, "slow ones hold at most 2");
        for _ in 0..5 {
            held.push(ask(&slots, Standing::New, (0, 0)));
        }
        settle().await;
        assert_eq!(slots.busy(), 3, "new and slow together at most 3");
        let mut fast = ask(&slots, Standing::Fast, (9, 9));
        settle().await;
        assert!(
            fast.try_recv().is_ok(),
            "the fourth slot is a fast endpoint's"
        );
    }

    #[tokio::test]
    async fn a_paused_pool_serves_by_standing_and_rank_not_arrival() {
        let slots = Slots::new(1, 1, 1);
        let paused = slots.pause();
        let mut slow = ask(&slots, Standing::Slow, (0, 0));
        let mut late = ask(&slots, Standing::Fast, (1, 0));
        let mut early = ask(&slots, Standing::Fast, (0, 5));
        settle().await;
        assert_eq!(slots.busy(), 0);
        drop(paused);
        settle().await;
        let first = early
            .try_recv()
            .expect("the lowest-ranked fast endpoint goes first");
        assert!(late.try_recv().is_err() && slow.try_recv().is_err());
        drop(first);
        settle().await;
        let second = late.try_recv().expect("then the other fast one");
        drop(second);
        settle().await;
        assert!(slow.try_recv().is_ok(), "slow ones last");
    }

    #[tokio::test]
    async fn a_waiter_that_gave_up_does_not_keep_a_slot() {
        let slots = Slots::new(1, 1, 1);
        let held = slots.acquire(Standing::Fast, (0, 0)).await.unwrap();
        let gone = tokio::spawn({
            let slots = slots.clone();
            async move { slots.acquire(Standing::Fast, (0, 0)).await }
        });
        settle().await;
        gone.abort();
        settle().await;
        drop(held);
        assert_eq!(slots.busy(), 0);
        assert!(slots.acquire(Standing::New, (0, 0)).await.is_some());
    }
}
