//! The load generator: open-loop Poisson arrivals at the plan's rate, each a real HTTP
//! `/gpu_job` request sent to the replica the balancer picks. Every request is recorded.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::balancer::Balancer;
use super::plan::Plan;
use gpu_workload::rng::SplitMix64;

/// One request as the client saw it.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Record {
    /// Seconds from the start of the run when it was sent.
    pub sent_s: f64,
    pub latency_s: f64,
    /// HTTP status; 0 when no replica was ready or the connection failed.
    pub status: u16,
}

impl Record {
    pub fn ok(&self) -> bool {
        self.status == 200
    }
}

#[derive(Clone, Debug)]
pub struct LoadConfig {
    pub work_ms: u64,
    pub timeout: Duration,
    /// Requests open at once; later arrivals are counted as dropped (status 0).
    pub max_outstanding: usize,
    pub seed: u64,
}

/// Shared between the generator and the view.
#[derive(Default)]
pub struct Recorder {
    records: Mutex<Vec<Record>>,
    outstanding: AtomicUsize,
}

impl Recorder {
    fn push(&self, r: Record) {
        self.records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(r);
    }

    pub fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::Relaxed)
    }

    pub fn snapshot(&self) -> Vec<Record> {
        self.records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Requests completed in the last `window` seconds before `now`: (sent, ok, p95 latency of
    /// the successful ones).
    pub fn window(&self, now: f64, window: f64) -> (usize, usize, Option<f64>) {
        let records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        let recent: Vec<&Record> = records
            .iter()
            .rev()
            .take_while(|r| r.sent_s >= now - window - 60.0)
            .filter(|r| r.sent_s + r.latency_s >= now - window)
            .collect();
        let mut ok: Vec<f64> = recent
            .iter()
            .filter(|r| r.ok())
            .map(|r| r.latency_s)
            .collect();
        ok.sort_by(f64::total_cmp);
        (recent.len(), ok.len(), quantile(&ok, 0.95))
    }
}

/// Nearest-rank quantile of sorted values (the simulator's rule, so both report alike).
pub fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    keda_gpu_scaler::sources::scrape::histogram::nearest_rank(sorted.len(), q).map(|k| sorted[k])
}

/// Sends the plan's load until it ends, then waits for open requests (bounded by the timeout).
pub async fn run(
    plan: Plan,
    config: LoadConfig,
    balancer: Arc<Balancer>,
    recorder: Arc<Recorder>,
    start: Instant,
) {
    let client = reqwest::Client::builder()
        .timeout(config.timeout)
        .connect_timeout(Duration::from_secs(2))
        .build()
        .expect("an HTTP client with only timeouts set always builds");
    let mut rng = SplitMix64::new(config.seed);
    let end = plan.duration();
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let t = start.elapsed().as_secs_f64();
        if t >= end {
            break;
        }
        let rate = plan.at(t).1.rate;
        // Exponential gaps are memoryless, so a gap longer than a step is redrawn with the rate
        // then in force: arrivals follow the plan's rate changes within a quarter second.
        const STEP: f64 = 0.25;
        let gap = if rate > 0.0 {
            rng.exponential(rate)
        } else {
            f64::INFINITY
        };
        if gap > STEP {
            tokio::time::sleep(Duration::from_secs_f64(STEP)).await;
            continue;
        }
        tokio::time::sleep(Duration::from_secs_f64(gap)).await;
        let sent_s = start.elapsed().as_secs_f64();
        if recorder.outstanding() >= config.max_outstanding {
            recorder.push(Record {
                sent_s,
                latency_s: 0.0,
                status: 0,
            });
            continue;
        }
        let Some(addr) = balancer.pick() else {
            recorder.push(Record {
                sent_s,
                latency_s: 0.0,
                status: 0,
            });
            continue;
        };
        recorder.outstanding.fetch_add(1, Ordering::Relaxed);
        let url = format!("http://{addr}/gpu_job?work_ms={}", config.work_ms);
        let (client, recorder) = (client.clone(), recorder.clone());
        tasks.spawn(async move {
            let sent = Instant::now();
            let status = match client.get(&url).send().await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    // Read the body: the request is complete when the answer is.
                    match resp.bytes().await {
                        Ok(_) => status,
                        Err(_) => 0,
                    }
                }
                Err(_) => 0,
            };
            recorder.push(Record {
                sent_s,
                latency_s: sent.elapsed().as_secs_f64(),
                status,
            });
            recorder.outstanding.fetch_sub(1, Ordering::Relaxed);
        });
        while tasks.try_join_next().is_some() {}
    }
    let drain = async { while tasks.join_next().await.is_some() {} };
    let _ = tokio::time::timeout(config.timeout + Duration::from_secs(1), drain).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_quantiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.95), Some(95.0));
        assert_eq!(quantile(&v, 1.0), Some(100.0));
        assert_eq!(quantile(&[3.0], 0.5), Some(3.0));
        assert_eq!(quantile(&[], 0.5), None);
    }

    #[test]
    fn the_window_counts_requests_that_completed_in_it() {
        let r = Recorder::default();
        for (sent_s, latency_s, status) in [(0.0, 0.5, 200), (8.0, 1.0, 200), (9.0, 0.2, 503)] {
            r.push(Record {
                sent_s,
                latency_s,
                status,
            });
        }
        let (n, ok, p95) = r.window(10.0, 5.0);
        assert_eq!((n, ok, p95), (2, 1, Some(1.0)));
    }
}
