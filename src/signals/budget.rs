//! Memory for response bodies: a cap per body and a budget for all bodies held at once.
//!
//! Every source reads bodies through `BodyBudget::read`. A body announced (Content-Length) or
//! grown over its cap is refused at once; each chunk draws bytes from the ScaledObject's share
//! first (never waiting: an object that outgrows its share fails alone) and then from the global
//! budget. The bytes return to both when the parsed body is dropped, so the bodies and the
//! parsed text held by the scaler at any time stay under the global budget whatever tenants
//! serve.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

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
    global: Arc<Semaphore>,
    total: usize,
    /// Largest single body.
    pub max_body: usize,
}

/// One ScaledObject's part of the budget for one sampling round.
#[derive(Clone)]
pub struct Share {
    bytes: Arc<Semaphore>,
    size: usize,
}

impl Share {
    /// Unlimited within the global budget: for reads that belong to no single object (a
    /// Prometheus query shared by many).
    pub fn whole(budget: &BodyBudget) -> Share {
        Share {
            bytes: Arc::new(Semaphore::new(budget.total)),
            size: budget.total,
        }
    }
}

/// A body held in memory, counted against the budget until dropped.
pub struct Body {
    pub bytes: Vec<u8>,
    permits: Held,
}

/// Bytes counted against the budget. A source keeps this beside what it parsed from a body, so
/// the parsed form stays charged (at the body's size) until the round is done with it.
#[derive(Default)]
pub struct Held {
    _permits: Option<(OwnedSemaphorePermit, OwnedSemaphorePermit)>,
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
        BodyBudget {
            global: Arc::new(Semaphore::new(total)),
            total,
            max_body: max_body.min(total),
        }
    }

    pub fn total(&self) -> usize {
        self.total
    }

    /// Bytes of bodies held now.
    pub fn in_use(&self) -> usize {
        self.total - self.global.available_permits()
    }

    /// Splits the budget between `objects` ScaledObjects reading in one round: each gets an
    /// equal part, and never less than one largest body (then the global budget, waited on,
    /// is what bounds memory).
    pub fn shares(&self, objects: usize) -> Vec<Share> {
        let size = (self.total / objects.max(1)).max(self.max_body);
        (0..objects)
            .map(|_| Share {
                bytes: Arc::new(Semaphore::new(size)),
                size,
            })
            .collect()
    }

    /// Reads `resp`'s body within the cap and the budget. The caller bounds the time (the read
    /// may wait for global budget when shares overlap).
    pub async fn read(
        &self,
        mut resp: reqwest::Response,
        share: &Share,
    ) -> Result<Body, BodyError> {
        let cap = self.max_body;
        if resp.content_length().is_some_and(|n| n > cap as u64) {
            return Err(BodyError::TooLarge(cap));
        }
        let mut bytes = Vec::new();
        let mut held: Option<(OwnedSemaphorePermit, OwnedSemaphorePermit)> = None;
        while let Some(chunk) = resp.chunk().await.map_err(|e| {
            if e.is_timeout() {
                BodyError::Timeout
            } else {
                BodyError::Read(super::client::describe(&e))
            }
        })? {
            if bytes.len() + chunk.len() > cap {
                return Err(BodyError::TooLarge(cap));
            }
            let n = u32::try_from(chunk.len()).map_err(|_| BodyError::TooLarge(cap))?;
            let mine = share
                .bytes
                .clone()
                .try_acquire_many_owned(n)
                .map_err(|_| BodyError::ShareExhausted(share.size))?;
            let global = self
                .global
                .clone()
                .acquire_many_owned(n)
                .await
                .map_err(|_| BodyError::Read("budget closed".into()))?;
            held = Some(match held {
                None => (mine, global),
                Some((mut a, mut b)) => {
                    a.merge(mine);
                    b.merge(global);
                    (a, b)
                }
            });
            bytes.extend_from_slice(&chunk);
        }
        Ok(Body {
            bytes,
            permits: Held { _permits: held },
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
        crate::signals::client::install_provider();
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
        crate::signals::client::install_provider();
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
}
