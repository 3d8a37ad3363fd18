//! The metrics pipeline between the replicas and the autoscalers: a scrape every interval (as
//! Prometheus or a direct scraper would), gauges read at the scrape instant, utilisation averaged
//! over the scrape period, and `histogram_quantile` over `increase(...[window])`. Signals therefore
//! lag the cluster the way they do in production.

use std::collections::VecDeque;

use super::cluster::{Cluster, Phase, LATENCY_BUCKETS};

/// What one replica exposed at one scrape.
#[derive(Clone, Debug, PartialEq)]
pub struct PodSample {
    pub replica: usize,
    /// Share of batch slots busy over the scrape period, percent (an SM-activity style reading:
    /// unlike DCGM's time-busy GPU_UTIL it does not read 100 % with one request in a batch of 8).
    pub gpu_util_pct: f64,
    /// Weights plus KV cache of the requests in flight, percent, at the scrape instant.
    pub gpu_memory_pct: f64,
    /// The share of the KV cache (the memory left after the weights) the requests in flight
    /// hold, percent: vLLM's `kv_cache_usage_perc`, SGLang's `token_usage`, as a percent.
    pub kv_cache_pct: f64,
    /// Host CPU, percent of the pod's request: idle cost plus a share proportional to GPU activity.
    pub cpu_pct: f64,
    pub inflight: f64,
    /// Cumulative completions per latency bucket (Prometheus `_bucket` series, not yet summed by `le`).
    latency_counts: Vec<u64>,
    /// Cumulative time-to-first-token histogram, same buckets.
    ttft_counts: Vec<u64>,
}

/// One scrape of every ready replica and the gateway.
#[derive(Clone, Debug, PartialEq)]
pub struct Scrape {
    pub t: f64,
    pub pods: Vec<PodSample>,
    /// Replicas the scaler took out of service (`podReadinessGate`), which only it scrapes: they
    /// serve no new requests, so no policy's readings include them.
    pub held_out: Vec<PodSample>,
    /// Requests waiting at the gateway (the queue exists even with zero replicas).
    pub queue: f64,
}

impl Scrape {
    pub fn sum(&self, f: impl Fn(&PodSample) -> f64) -> f64 {
        self.pods.iter().map(f).sum()
    }

    /// Mean over pods; None with no pods (an empty PromQL result).
    pub fn mean(&self, f: impl Fn(&PodSample) -> f64) -> Option<f64> {
        (!self.pods.is_empty()).then(|| self.sum(f) / self.pods.len() as f64)
    }

    /// One replica's sample, serving or taken out of service: its counters continue across
    /// both, so a replica put back is not mistaken for a new one counting from zero.
    pub fn pod(&self, replica: usize) -> Option<&PodSample> {
        self.pods
            .iter()
            .chain(&self.held_out)
            .find(|p| p.replica == replica)
    }
}

/// Scrapes the cluster and answers the queries the policies make.
#[derive(Clone, Debug)]
pub struct Metrics {
    pub interval_s: f64,
    /// Scrapes kept for range queries, oldest first.
    history: VecDeque<Scrape>,
    keep_s: f64,
    /// Per replica: (time, slot-seconds) at its previous scrape.
    last_slots: Vec<Option<(f64, f64)>>,
}

impl Metrics {
    /// `keep_s` is the longest range any query will ask for.
    pub fn new(interval_s: f64, keep_s: f64) -> Self {
        Metrics {
            interval_s,
            history: VecDeque::new(),
            keep_s,
            last_slots: Vec::new(),
        }
    }

    pub fn latest(&self) -> Option<&Scrape> {
        self.history.back()
    }

    /// Scrapes taken after `t`, oldest first (a `max_over_time` range).
    pub fn since(&self, t: f64) -> impl Iterator<Item = &Scrape> {
        self.history.iter().filter(move |s| s.t > t)
    }

    /// Takes a scrape at the cluster's current time.
    pub fn scrape(&mut self, cluster: &Cluster) {
        let now = cluster.now();
        let cost = &cluster.config().cost;
        let b = cost.batch as f64;
        if self.last_slots.len() < cluster.replicas.len() {
            self.last_slots.resize(cluster.replicas.len(), None);
        }
        let (mut pods, mut held_out) = (Vec::new(), Vec::new());
        for i in cluster.scraped_indices() {
            let r = &cluster.replicas[i];
            let slots = r.slot_seconds_at(now);
            // The first scrape of a pod sees only the in-flight gauge, as an exporter that has just
            // started reports its current reading.
            let util = match self.last_slots[i] {
                Some((t0, s0)) if now > t0 => (slots - s0) / (b * (now - t0)),
                _ => r.inflight as f64 / b,
            }
            .clamp(0.0, 1.0);
            self.last_slots[i] = Some((now, slots));
            let into = if r.held_out { &mut held_out } else { &mut pods };
            into.push(PodSample {
                replica: i,
                gpu_util_pct: 100.0 * util,
                gpu_memory_pct: (cost.memory_base_pct
                    + cost.memory_pct_per_1k_tokens * r.kv_tokens / 1000.0)
                    .min(100.0),
                kv_cache_pct: (100.0 * cost.memory_pct_per_1k_tokens * r.kv_tokens
                    / 1000.0
                    / (100.0 - cost.memory_base_pct).max(1.0))
                .min(100.0),
                cpu_pct: cost.cpu_idle_pct + cost.cpu_full_batch_pct * util,
                inflight: r.inflight as f64,
                latency_counts: r.latency_counts.clone(),
                ttft_counts: r.ttft_counts.clone(),
            });
        }
        // Replicas sharing too few cores each get their share: a reading of one core's percent
        // cannot add up to more than the node has.
        if let Some(cores) = cost.node_cpu_cores {
            let demand = pods.iter().map(|p| p.cpu_pct / 100.0).sum::<f64>();
            if demand > cores {
                for p in &mut pods {
                    p.cpu_pct *= cores / demand;
                }
            }
        }
        for (i, r) in cluster.replicas.iter().enumerate() {
            if !matches!(r.phase, Phase::Ready) {
                self.last_slots[i] = None;
            }
        }
        self.history.push_back(Scrape {
            t: now,
            pods,
            held_out,
            queue: cluster.queue_len() as f64,
        });
        while self
            .history
            .front()
            .is_some_and(|s| s.t < now - self.keep_s - self.interval_s)
        {
            self.history.pop_front();
        }
    }

    /// Per-bucket observations of one histogram over the last `window_s` for one replica (or all
    /// with `None`), like `sum by (le) (increase(x_bucket[window]))` without Prometheus'
    /// extrapolation, and the seconds the difference spans.
    fn increase(
        &self,
        window_s: f64,
        replica: Option<usize>,
        histogram: impl Fn(&PodSample) -> &[u64],
    ) -> Option<(Vec<u64>, f64)> {
        let latest = self.history.back()?;
        let from = latest.t - window_s;
        let oldest = self.history.iter().find(|s| s.t >= from - 1e-9)?;
        let mut total = vec![0u64; LATENCY_BUCKETS.len()];
        let mut seen = false;
        for pod in &latest.pods {
            if replica.is_some_and(|r| r != pod.replica) {
                continue;
            }
            // A pod without an older sample in the range contributes nothing (rate needs two points).
            let Some(old) = oldest.pod(pod.replica) else {
                continue;
            };
            if std::ptr::eq(oldest, latest) {
                continue;
            }
            seen = true;
            for (k, t) in total.iter_mut().enumerate() {
                *t += histogram(pod)[k] - histogram(old)[k];
            }
        }
        seen.then_some((total, latest.t - oldest.t))
    }

    /// `histogram_quantile(q, ...)` of end-to-end latency over the window for the whole service or
    /// one replica; None when nothing completed (Prometheus returns NaN / no data).
    pub fn latency_quantile(&self, q: f64, window_s: f64, replica: Option<usize>) -> Option<f64> {
        quantile(
            q,
            &self.increase(window_s, replica, |p| &p.latency_counts)?.0,
        )
    }

    /// Requests within `bound` seconds to first token and all requests over the window, read
    /// from the buckets the way the scaler reads them (`histogram::within`), and the seconds the
    /// difference spans (less than the window until it has been scraped that long).
    pub fn ttft_within(&self, bound: f64, window_s: f64) -> Option<(f64, f64, f64)> {
        let (counts, span) = self.increase(window_s, None, |p| &p.ttft_counts)?;
        let (within, total) =
            keda_gpu_scaler::sources::scrape::histogram::within(bound, &cumulative(&counts))?;
        Some((within, total, span))
    }

    /// The same for time to first token (vLLM's `time_to_first_token_seconds`).
    pub fn ttft_quantile(&self, q: f64, window_s: f64, replica: Option<usize>) -> Option<f64> {
        quantile(q, &self.increase(window_s, replica, |p| &p.ttft_counts)?.0)
    }

    /// Requests that reached their first token per second, all replicas, over the window: the
    /// time-to-first-token histogram's count (`sum(rate(x_count[window]))`), the histogram the
    /// scaler's latency signal reads and so the counter it takes the request rate from. Each
    /// pod's rate over the part of the window it was scraped in, so a replica that became ready
    /// inside the window counts from its start (its counter began at zero) instead of being left
    /// out. None before two scrapes.
    pub fn first_tokens_per_s(&self, window_s: f64) -> Option<f64> {
        let latest = self.history.back()?;
        let from = latest.t - window_s;
        let count = |p: &PodSample| p.ttft_counts.iter().sum::<u64>() as f64;
        let mut total = 0.0;
        let mut seen = false;
        for pod in &latest.pods {
            let oldest = self
                .history
                .iter()
                .filter(|s| s.t >= from - 1e-9 && s.t < latest.t)
                .find_map(|s| s.pod(pod.replica).map(|old| (s.t, count(old))));
            let (t0, c0) = match oldest {
                Some(o) => o,
                // First scrape of a new replica: its counter started at zero within one interval.
                None => (latest.t - self.interval_s, 0.0),
            };
            if latest.t > t0 {
                total += (count(pod) - c0).max(0.0) / (latest.t - t0);
                seen = true;
            }
        }
        (seen && self.history.len() > 1).then_some(total)
    }
}

/// Prometheus' `histogram_quantile` on per-bucket (non-cumulative) counts: the scaler's own
/// implementation (`sources::scrape::histogram`), on the cumulative buckets Prometheus would expose.
pub fn quantile(q: f64, counts: &[u64]) -> Option<f64> {
    keda_gpu_scaler::sources::scrape::histogram::quantile(q, &cumulative(counts))
}

/// Per-bucket counts as the cumulative `le` buckets Prometheus would expose.
fn cumulative(counts: &[u64]) -> keda_gpu_scaler::sources::scrape::histogram::Buckets {
    let mut total = 0u64;
    LATENCY_BUCKETS
        .iter()
        .zip(counts)
        .map(|(&le, &c)| {
            total += c;
            (le, total as f64)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::ClusterConfig;
    use crate::cost::CostModel;
    use crate::trace::Request;

    #[test]
    fn quantile_interpolates_like_prometheus() {
        let mut counts = vec![0u64; LATENCY_BUCKETS.len()];
        // 100 observations in (1, 2]: p95 is 95 % of the way through that bucket.
        counts[5] = 100;
        assert!((quantile(0.95, &counts).unwrap() - 1.95).abs() < 1e-9);
        counts[15] = 1000;
        assert_eq!(quantile(0.95, &counts), Some(120.0));
        assert_eq!(quantile(0.5, &vec![0; LATENCY_BUCKETS.len()]), None);
    }

    #[test]
    fn scrapes_lag_and_average_over_the_period() {
        let cfg = ClusterConfig {
            cost: CostModel {
                overhead_s: 10.0,
                prefill_s_per_token: 0.0,
                decode_s_per_token: 0.0,
                batch: 4,
                full_batch_slowdown: 1.0,
                ..CostModel::default()
            },
            cold_start_s: 0.0,
            timeout_s: 100.0,
            slo_s: 5.0,
            ttft_slo_s: 2.0,
            tpot_slo_s: 0.05,
            grace_s: f64::INFINITY,
            remove_by_remaining_work: false,
        };
        let mut c = Cluster::new(cfg);
        c.set_replicas(1);
        let reqs: Vec<Request> = (0..2)
            .map(|i| Request {
                at: 5.0 + i as f64,
                work_s: 20.0,
                kv_tokens: 1000.0,
                prefill_s: 20.0,
                generated_tokens: 0.0,
            })
            .collect();
        let mut m = Metrics::new(15.0, 60.0);
        let mut next = 0;
        m.scrape(&c);
        c.advance(15.0, &reqs, &mut next);
        m.scrape(&c);
        let s = m.latest().unwrap();
        // Slots busy since the first scrape: 10 s + 9 s of 4 x 15 slot-seconds.
        assert!((s.pods[0].gpu_util_pct - 100.0 * 19.0 / 60.0).abs() < 1e-9);
        assert_eq!(s.pods[0].inflight, 2.0);
        assert!((s.pods[0].gpu_memory_pct - 46.0).abs() < 1e-9);
        assert_eq!(
            m.latency_quantile(0.95, 60.0, None),
            None,
            "nothing finished yet"
        );
        c.advance(30.0, &reqs, &mut next);
        m.scrape(&c);
        // Both took 20 s: in the (15, 20] bucket.
        let p = m.latency_quantile(0.5, 60.0, Some(0)).unwrap();
        assert!(p > 15.0 && p <= 20.0, "{p}");
        assert_eq!(m.latency_quantile(0.5, 60.0, Some(7)), None);
    }
}
