//! Bounded admission to the compute device: at most `max_concurrency` jobs run at once, at most
//! `queue_capacity` wait; past that a job is refused at once (the server answers 503 with
//! Retry-After). Jobs run on tokio's blocking pool so compute never stalls the HTTP reactor.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use crate::metrics::Metrics;

/// Window over which the busy fraction is reported (NVML's utilisation uses a similar period).
pub const BUSY_WINDOW: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AdmitError {
    #[error("compute queue is full ({capacity} waiting, {running} running); retry later")]
    QueueFull { capacity: usize, running: usize },
    #[error("compute job failed to complete: {0}")]
    JobPanicked(String),
}

/// Set when the request that submitted a job has gone (its future was dropped: the client
/// disconnected or timed out). Jobs check it between GEMM chunks or model steps and stop, so an
/// abandoned request does not hold the device.
#[derive(Clone, Debug, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    /// A job nobody will cancel (tests, benchmarks, tools).
    pub fn never() -> Cancel {
        Cancel::default()
    }

    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// Err(Cancelled) once cancelled: `cancel.check()?` between steps.
    pub fn check(&self) -> Result<(), crate::gemm::BackendError> {
        if self.is_cancelled() {
            Err(crate::gemm::BackendError::Cancelled)
        } else {
            Ok(())
        }
    }
}

/// Cancels the job when dropped before `done`: the caller's future went away.
struct CancelOnDrop(Option<Cancel>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            c.0.store(true, Ordering::Relaxed);
        }
    }
}

pub struct Executor {
    permits: Arc<Semaphore>,
    max_concurrency: usize,
    queue_capacity: usize,
    queued: AtomicUsize,
    busy: Arc<BusyClock>,
    metrics: Arc<Metrics>,
}

impl Executor {
    pub fn new(max_concurrency: usize, queue_capacity: usize, metrics: Arc<Metrics>) -> Self {
        let max_concurrency = max_concurrency.max(1);
        Self {
            permits: Arc::new(Semaphore::new(max_concurrency)),
            max_concurrency,
            queue_capacity,
            queued: AtomicUsize::new(0),
            busy: Arc::new(BusyClock::default()),
            metrics,
        }
    }

    pub fn max_concurrency(&self) -> usize {
        self.max_concurrency
    }

    pub fn queue_capacity(&self) -> usize {
        self.queue_capacity
    }

    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::SeqCst)
    }

    pub fn running(&self) -> usize {
        self.max_concurrency - self.permits.available_permits()
    }

    /// Percent of the last second during which at least one job ran.
    pub fn busy_percent(&self) -> f64 {
        self.busy.percent(Instant::now(), BUSY_WINDOW)
    }

    /// Admits `job`, waits for a slot, runs it on a blocking thread and returns its result.
    ///
    /// If the caller's future is dropped while the job waits, it leaves the queue; once running,
    /// the job's `Cancel` is set and the job stops at its next check (a kernel in flight
    /// finishes: the device cannot be interrupted mid-kernel).
    pub async fn run<T, F>(&self, job: F) -> Result<T, AdmitError>
    where
        T: Send + 'static,
        F: FnOnce(&Cancel) -> T + Send + 'static,
    {
        let admitted = Instant::now();
        let permit = match Arc::clone(&self.permits).try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                let _waiting = self.enqueue()?;
                Arc::clone(&self.permits)
                    .acquire_owned()
                    .await
                    .expect("executor semaphore is never closed")
            }
        };
        self.metrics
            .queue_wait
            .observe(admitted.elapsed().as_secs_f64());
        let busy = Arc::clone(&self.busy);
        let metrics = Arc::clone(&self.metrics);
        let cancel = Cancel::default();
        let mut on_drop = CancelOnDrop(Some(cancel.clone()));
        let handle = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let _running = RunningGuard::start(busy, metrics);
            job(&cancel)
        });
        let result = handle
            .await
            .map_err(|e| AdmitError::JobPanicked(e.to_string()));
        on_drop.0 = None;
        result
    }

    fn enqueue(&self) -> Result<QueueGuard<'_>, AdmitError> {
        let mut current = self.queued.load(Ordering::SeqCst);
        loop {
            if current >= self.queue_capacity {
                return Err(AdmitError::QueueFull {
                    capacity: self.queue_capacity,
                    running: self.running(),
                });
            }
            match self.queued.compare_exchange(
                current,
                current + 1,
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => break,
                Err(actual) => current = actual,
            }
        }
        self.metrics.queue_length.set(self.queued() as i64);
        Ok(QueueGuard(self))
    }
}

/// Leaves the queue when the job gets a slot or its request is dropped.
struct QueueGuard<'a>(&'a Executor);

impl Drop for QueueGuard<'_> {
    fn drop(&mut self) {
        let now = self.0.queued.fetch_sub(1, Ordering::SeqCst) - 1;
        self.0.metrics.queue_length.set(now as i64);
    }
}

struct RunningGuard {
    busy: Arc<BusyClock>,
    metrics: Arc<Metrics>,
}

impl RunningGuard {
    fn start(busy: Arc<BusyClock>, metrics: Arc<Metrics>) -> Self {
        busy.enter(Instant::now());
        metrics.inflight.inc();
        Self { busy, metrics }
    }
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.metrics.inflight.dec();
        self.busy.leave(Instant::now());
    }
}

/// Tracks when at least one job was running, to report a busy fraction with the same meaning as
/// NVML's GPU utilisation ("time during which one or more kernels was executing").
#[derive(Default)]
pub struct BusyClock {
    inner: Mutex<BusyState>,
}

#[derive(Default)]
struct BusyState {
    active: usize,
    since: Option<Instant>,
    /// Closed busy intervals, oldest first; pruned to the window.
    done: VecDeque<(Instant, Instant)>,
}

impl BusyClock {
    pub fn enter(&self, now: Instant) {
        let mut s = self.inner.lock().expect("busy clock poisoned");
        if s.active == 0 {
            s.since = Some(now);
        }
        s.active += 1;
    }

    pub fn leave(&self, now: Instant) {
        let mut s = self.inner.lock().expect("busy clock poisoned");
        s.active = s.active.saturating_sub(1);
        if s.active == 0 {
            if let Some(start) = s.since.take() {
                s.done.push_back((start, now));
            }
        }
        // Bounded memory: intervals that ended before the longest window we report are useless.
        while s
            .done
            .front()
            .is_some_and(|&(_, end)| now.duration_since(end) > BUSY_WINDOW * 2)
        {
            s.done.pop_front();
        }
    }

    /// Busy percent over `[now - window, now]`.
    pub fn percent(&self, now: Instant, window: Duration) -> f64 {
        let s = self.inner.lock().expect("busy clock poisoned");
        let from = now.checked_sub(window).unwrap_or(now);
        let overlap = |start: Instant, end: Instant| {
            let a = start.max(from);
            let b = end.min(now);
            b.saturating_duration_since(a)
        };
        let mut busy: Duration = s.done.iter().map(|&(a, b)| overlap(a, b)).sum();
        if let Some(start) = s.since {
            busy += overlap(start, now);
        }
        (busy.as_secs_f64() / window.as_secs_f64() * 100.0).clamp(0.0, 100.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_clock_reports_fraction_of_window() {
        let clock = BusyClock::default();
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        // Two overlapping jobs 100..400 ms and 300..500 ms: busy 400 ms of the window.
        clock.enter(t0 + ms(100));
        clock.enter(t0 + ms(300));
        clock.leave(t0 + ms(400));
        clock.leave(t0 + ms(500));
        let p = clock.percent(t0 + ms(1000), BUSY_WINDOW);
        assert!((p - 40.0).abs() < 1e-6, "{p}");
        // A job still running counts up to `now`.
        clock.enter(t0 + ms(900));
        let p = clock.percent(t0 + ms(1000), BUSY_WINDOW);
        assert!((p - 50.0).abs() < 1e-6, "{p}");
        // Later, the old intervals slide out of the window.
        clock.leave(t0 + ms(1000));
        let p = clock.percent(t0 + ms(1950), BUSY_WINDOW);
        assert!((p - 5.0).abs() < 1e-6, "{p}");
    }
}
