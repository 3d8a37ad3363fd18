//! Memory for response bodies: a cap per body and a budget for what is held at once.
//!
//! Every source reads bodies through `BodyBudget`. A body announced (Content-Length) or grown
//! over its cap is refused at once. What a read keeps (a whole body, or what a streaming parser
//! keeps of it) is counted as it grows, against the ScaledObject's share first (never waiting: an
//! object that outgrows its share fails alone) and then against the budget; the bytes return when
//! what was kept is dropped, at the end of the round. So the scaler holds at most the budget
//! whatever tenants serve.
//!
//! The budget is split so that no tenant can starve another: a quarter of it (less when the body
//! cap needs more room) is kept for floors, and each ScaledObject's first bytes in a round come
//! from its floor, an equal part of that quarter, without waiting; only bytes beyond the floor
//! wait for the rest of the budget. Twelve tenants each serving a body just under the cap can
//! fill the rest all round, and a small healthy body is still read at once from its floor.
//!
//! Chunks in flight are not counted: each lives from the socket read to the parse of it, at most
//! one per fetch slot, as hyper's read buffer bounds them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// `[memory]`: the cap on one response body and the budget for all bodies held at once. The
/// chart derives max_entries from these and its memory limit (docs/deploy.md).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MemoryLimits {
    /// Largest response body read from an endpoint or Prometheus.
    #[serde(deserialize_with = "bytes")]
    pub max_body_bytes: usize,
    /// Bytes of bodies (and what is parsed from them) held at once, all sources together; at
    /// least `max_body_bytes` (checked with the other settings that depend on each other).
    #[serde(deserialize_with = "bytes")]
    pub body_budget_bytes: usize,
}

impl Default for MemoryLimits {
    fn default() -> Self {
        MemoryLimits {
            max_body_bytes: 4 << 20,
            body_budget_bytes: 32 << 20,
        }
    }
}

impl MemoryLimits {
    /// The budget every source reads bodies through.
    pub fn budget(&self) -> BodyBudget {
        BodyBudget::new(self.body_budget_bytes, self.max_body_bytes)
    }
}

fn bytes<'de, D: serde::Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    crate::setting::number(
        d,
        1024..=(1 << 32),
        "a number of bytes from 1024 to 4294967296",
    )
}

/// Why a body was not read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("body larger than {0} bytes")]
    TooLarge(usize),
    #[error("this ScaledObject's share of the scaler's body budget ({0} bytes) is in use")]
    ShareExhausted(usize),
    #[error("timed out")]
    Timeout,
    #[error("reading body: {0}")]
    Read(String),
}

/// The global budget, shared by every source.
#[derive(Clone)]
pub struct BodyBudget {
    /// Bytes kept for the floors of the objects read in a round.
    floors: Arc<Semaphore>,
    floors_total: usize,
    /// The rest: bytes beyond the floors, waited for.
    shared: Arc<Semaphore>,
    shared_total: usize,
    total: usize,
    /// Largest single body.
    pub max_body: usize,
}

/// One ScaledObject's part of the budget for one sampling round.
#[derive(Clone)]
pub struct Share {
    bytes: Arc<Semaphore>,
    size: usize,
    /// Bytes of its floor not yet drawn this round.
    floor_left: Arc<AtomicUsize>,
}

impl Share {
    /// Up to the whole budget, without a floor: for reads that belong to no single object (a
    /// Prometheus query shared by many).
    pub fn whole(budget: &BodyBudget) -> Share {
        Share {
            bytes: Arc::new(Semaphore::new(budget.total)),
            size: budget.total,
            floor_left: Arc::new(AtomicUsize::new(0)),
        }
    }
}

/// What a streamed body is turned into as it arrives (`BodyBudget::stream`).
pub trait Consume {
    /// Takes the next chunk; returns the bytes newly kept because of it.
    fn chunk(&mut self, bytes: &[u8]) -> usize;
    /// The body ended; returns the bytes newly kept.
    fn end(&mut self) -> usize;
}

/// Keeps the whole body.
struct Collect(Vec<u8>);

impl Consume for Collect {
    fn chunk(&mut self, bytes: &[u8]) -> usize {
        self.0.extend_from_slice(bytes);
        bytes.len()
    }

    fn end(&mut self) -> usize {
        0
    }
}

/// A body held in memory, counted against the budget until dropped.
pub struct Body {
    pub bytes: Vec<u8>,
    permits: Held,
}

/// Bytes counted against the budget. A source keeps this beside what it kept of a body, so
/// that stays charged until the round is done with it.
#[derive(Default)]
pub struct Held {
    share: Option<OwnedSemaphorePermit>,
    floor: Option<OwnedSemaphorePermit>,
    shared: Option<OwnedSemaphorePermit>,
}

fn merge(into: &mut Option<OwnedSemaphorePermit>, more: OwnedSemaphorePermit) {
    match into {
        Some(p) => p.merge(more),
        None => *into = Some(more),
    }
}

impl Body {
    /// Frees the bytes but keeps them counted, for whatever was parsed from them.
    pub fn into_held(self) -> Held {
        self.permits
    }
}

impl BodyBudget {
    pub fn new(total: usize, max_body: usize) -> Self {
        let total = total.clamp(1, Semaphore::MAX_PERMITS);
        let max_body = max_body.min(total);
        // Floors take a quarter, never so much that a largest body no longer fits beside them.
        let floors_total = (total / 4).min(total - max_body);
        let shared_total = total - floors_total;
        BodyBudget {
            floors: Arc::new(Semaphore::new(floors_total)),
            floors_total,
            shared: Arc::new(Semaphore::new(shared_total)),
            shared_total,
            total,
            max_body,
        }
    }

    pub fn total(&self) -> usize {
        self.total
    }

    /// Bytes held now.
    pub fn in_use(&self) -> usize {
        self.floors_total - self.floors.available_permits() + self.shared_total
            - self.shared.available_permits()
    }

    /// Splits the budget between `objects` ScaledObjects reading in one round: see
    /// `shares_among`, with no others registered.
    pub fn shares(&self, objects: usize) -> Vec<Share> {
        self.shares_among(objects, objects)
    }

    /// Shares for `objects` ScaledObjects reading in one round, of `registered` that may read
    /// in rounds that overlap it (new objects are read in rounds of their own). Each may hold an
    /// equal part of the budget and never less than one largest body (then waiting for the
    /// budget is what bounds memory); its floor, drawn without waiting, is an equal part of the
    /// floors among them all.
    pub fn shares_among(&self, objects: usize, registered: usize) -> Vec<Share> {
        let size = (self.total / objects.max(1)).max(self.max_body);
        let floor = self.floors_total / objects.max(registered).max(1);
        (0..objects)
            .map(|_| Share {
                bytes: Arc::new(Semaphore::new(size)),
                size,
                floor_left: Arc::new(AtomicUsize::new(floor)),
            })
            .collect()
    }

    /// Counts `n` more bytes kept by `share`'s object into `held`: its share or fail, its floor
    /// while it lasts, then the rest of the budget, waited for.
    async fn charge(&self, share: &Share, n: usize, held: &mut Held) -> Result<(), BodyError> {
        if n == 0 {
            return Ok(());
        }
        let count = u32::try_from(n).map_err(|_| BodyError::ShareExhausted(share.size))?;
        let mine = share
            .bytes
            .clone()
            .try_acquire_many_owned(count)
            .map_err(|_| BodyError::ShareExhausted(share.size))?;
        merge(&mut held.share, mine);
        let want = share
            .floor_left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                Some(left - left.min(n))
            })
            .map_or(0, |left| left.min(n));
        let mut from_floor = 0;
        if want > 0 {
            // Another round running beside this one may have drawn the floors: then wait.
            match self.floors.clone().try_acquire_many_owned(want as u32) {
                Ok(p) => {
                    merge(&mut held.floor, p);
                    from_floor = want;
                }
                Err(_) => {
                    share.floor_left.fetch_add(want, Ordering::Relaxed);
                }
            }
        }
        let rest = n - from_floor;
        if rest > 0 {
            if rest > self.shared_total {
                return Err(BodyError::ShareExhausted(share.size));
            }
            let p = self
                .shared
                .clone()
                .acquire_many_owned(rest as u32)
                .await
                .map_err(|_| BodyError::Read("budget closed".into()))?;
            merge(&mut held.shared, p);
        }
        Ok(())
    }

    /// Streams `resp`'s body into `into` within the cap, counting what it keeps against `share`
    /// and the budget. The caller bounds the time (counting may wait for the budget).
    pub async fn stream(
        &self,
        mut resp: reqwest::Response,
        share: &Share,
        into: &mut impl Consume,
    ) -> Result<Held, BodyError> {
        let cap = self.max_body;
        if resp.content_length().is_some_and(|n| n > cap as u64) {
            return Err(BodyError::TooLarge(cap));
        }
        let mut read = 0usize;
        let mut held = Held::default();
        while let Some(chunk) = resp.chunk().await.map_err(|e| {
            if e.is_timeout() {
                BodyError::Timeout
            } else {
                BodyError::Read(super::client::describe(&e))
            }
        })? {
            read += chunk.len();
            if read > cap {
                return Err(BodyError::TooLarge(cap));
            }
            let kept = into.chunk(&chunk);
            drop(chunk);
            self.charge(share, kept, &mut held).await?;
        }
        let kept = into.end();
        self.charge(share, kept, &mut held).await?;
        Ok(held)
    }

    /// Reads `resp`'s whole body within the cap and the budget. The caller bounds the time (the
    /// read may wait for the budget when shares overlap).
    pub async fn read(&self, resp: reqwest::Response, share: &Share) -> Result<Body, BodyError> {
        let mut body = Collect(Vec::new());
        let permits = self.stream(resp, share, &mut body).await?;
        Ok(Body {
            bytes: body.0,
            permits,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn serve(body: Vec<u8>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().route(
            "/",
            axum::routing::get(move || {
                let body = body.clone();
                async move { body }
            }),
        );
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        format!("http://{addr}/")
    }

    #[tokio::test]
    async fn bodies_over_the_cap_are_refused_and_held_bytes_are_counted_until_dropped() {
        let budget = BodyBudget::new(1 << 20, 64 << 10);
        crate::sources::client::install_provider();
        let client = reqwest::Client::new();
        let share = &budget.shares(1)[0];
        let big = serve(vec![b'x'; 100 << 10]).await;
        let resp = client.get(&big).send().await.unwrap();
        assert_eq!(
            budget.read(resp, share).await.err(),
            Some(BodyError::TooLarge(64 << 10))
        );
        assert_eq!(budget.in_use(), 0, "a refused body returns its bytes");

        let small = serve(vec![b'x'; 10 << 10]).await;
        let resp = client.get(&small).send().await.unwrap();
        let body = budget.read(resp, share).await.unwrap();
        assert_eq!(body.bytes.len(), 10 << 10);
        assert_eq!(budget.in_use(), 10 << 10);
        drop(body);
        assert_eq!(budget.in_use(), 0);
    }

    #[tokio::test]
    async fn an_object_over_its_share_fails_alone() {
        let budget = BodyBudget::new(128 << 10, 32 << 10);
        let shares = budget.shares(4);
        crate::sources::client::install_provider();
        let client = reqwest::Client::new();
        let url = serve(vec![b'x'; 20 << 10]).await;
        let first = budget
            .read(client.get(&url).send().await.unwrap(), &shares[0])
            .await
            .unwrap();
        let second = budget
            .read(client.get(&url).send().await.unwrap(), &shares[0])
            .await;
        assert!(matches!(second, Err(BodyError::ShareExhausted(_))));
        let other = budget
            .read(client.get(&url).send().await.unwrap(), &shares[1])
            .await;
        assert!(other.is_ok(), "another object's share is untouched");
        drop(first);
    }

    #[tokio::test]
    async fn a_small_body_is_read_from_its_floor_while_others_hold_the_rest() {
        let budget = BodyBudget::new(1 << 20, 256 << 10);
        let shares = budget.shares_among(4, 4);
        // Others hold everything beyond the floors (a Prometheus answer, say).
        let mut others = Held::default();
        budget
            .charge(&Share::whole(&budget), 768 << 10, &mut others)
            .await
            .unwrap();
        let quick = std::time::Duration::from_millis(50);
        // Each of four objects has a quarter of a quarter as its floor: 64 KiB, no waiting.
        let mut mine = Held::default();
        let small = budget.charge(&shares[0], 60 << 10, &mut mine);
        assert!(tokio::time::timeout(quick, small).await.unwrap().is_ok());
        // Beyond its floor it waits for the others (what it drew of the floor stays drawn).
        let more = budget.charge(&shares[0], 10 << 10, &mut mine);
        assert!(tokio::time::timeout(quick, more).await.is_err());
        assert_eq!(budget.in_use(), (768 + 64) << 10);
        drop((mine, others));
        assert_eq!(budget.in_use(), 0);
    }

    #[test]
    fn floors_leave_room_for_a_largest_body() {
        let budget = BodyBudget::new(4 << 20, 4 << 20);
        assert_eq!((budget.floors_total, budget.shared_total), (0, 4 << 20));
        let budget = BodyBudget::new(32 << 20, 4 << 20);
        assert_eq!(
            (budget.floors_total, budget.shared_total),
            (8 << 20, 24 << 20)
        );
    }
}
