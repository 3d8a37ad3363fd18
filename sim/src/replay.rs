//! The replay loop: one cluster per policy, advanced second by second through the trace, scraped
//! on schedule, and steered by the policy; then the numbers the report needs. Policies replay in
//! parallel threads but each replay is sequential and seeded, so results do not depend on threads.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use keda_gpu_scaler::sources::scrape::histogram::nearest_rank;

use super::cluster::{Cluster, ClusterConfig, Outcomes};
use super::hpa::SYNC_PERIOD_S;
use super::metrics::Metrics;
use super::policy::{self, PolicyName, Setup};
use super::trace::Trace;
use super::SimError;
use keda_gpu_scaler::score::Decision;

/// Everything a replay needs besides the trace.
#[derive(Clone, Debug, PartialEq)]
pub struct SimConfig {
    pub cluster: ClusterConfig,
    pub setup: Setup,
    pub policies: Vec<PolicyName>,
    /// Worker threads (1 = sequential); results are identical for any value.
    pub threads: usize,
    /// Keep every completed request's outcome (`--requests-out`).
    pub record_requests: bool,
    /// Keep the scaler's decision at each of its steps (`--decisions-out`; the composite only).
    pub record_decisions: bool,
}

/// One point of a policy's timeline, every HPA sync period.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Sample {
    pub t: f64,
    pub load_rps: f64,
    pub replicas: u32,
    pub ready: u32,
    pub queue: u32,
    /// p95 of requests completed in the period; null when none completed.
    pub p95_s: Option<f64>,
}

/// The raw result of replaying one policy.
#[derive(Clone, Debug)]
pub struct Run {
    pub name: PolicyName,
    pub outcomes: Outcomes,
    pub gpu_seconds: f64,
    /// The part of `gpu_seconds` spent by removed replicas finishing their requests.
    pub drain_gpu_seconds: f64,
    /// Pod deletion-cost annotations the policy wrote.
    pub deletion_cost_patches: u64,
    /// Readiness-gate condition writes the policy made.
    pub gate_patches: u64,
    pub scaling_events: u64,
    pub replicas_min: u32,
    pub replicas_max: u32,
    pub replicas_mean: f64,
    /// Mean and max over scrapes of the ready replicas' mean GPU utilisation, percent.
    pub gpu_util_mean: f64,
    pub gpu_util_max: f64,
    /// Ready replicas at each simulated second.
    pub ready: Vec<u32>,
    pub timeline: Vec<Sample>,
    /// The scaler's decision at each step it took (empty unless `record_decisions`).
    pub decisions: Vec<Decision>,
}

/// Replicas needed per sync period with perfect foresight: enough batch slots for the highest
/// one-second average of requests in service in that period, if every request started the
/// moment it arrived and ran at full-batch speed. Planning for the period's total work instead
/// lets requests that arrive together queue behind each other, which a bursty trace punishes
/// with missed first-token objectives even under perfect foresight; averaging over a second
/// lets a request wait about that long, well inside the first-token objective.
pub fn required_replicas(trace: &Trace, cfg: &ClusterConfig) -> Vec<u32> {
    required_replicas_at(trace, cfg, 1.0)
}

/// `required_replicas` planned `factor` times as hot: each replica counted as `factor` times its
/// batch slots (above 1, fewer replicas than the one-second peak needs, so requests queue).
/// The iso-SLO sweep replays the oracles this way: the cheapest plan with foresight that reaches
/// 95 % runs hotter than one sized to meet every request.
pub fn required_replicas_at(trace: &Trace, cfg: &ClusterConfig, factor: f64) -> Vec<u32> {
    const BUCKET_S: f64 = 1.0;
    let windows = (trace.duration_s / SYNC_PERIOD_S).ceil().max(1.0) as usize;
    let per_window = (SYNC_PERIOD_S / BUCKET_S) as usize;
    let buckets = windows * per_window;
    let b = cfg.cost.batch;
    // Request-seconds in service per one-second bucket.
    let mut busy = vec![0.0f64; buckets];
    for r in &trace.requests {
        let (start, end) = (r.at, r.at + cfg.cost.service_s(r.work_s, b));
        let mut k = (start / BUCKET_S) as usize;
        while k < buckets && (k as f64) * BUCKET_S < end {
            let lo = start.max(k as f64 * BUCKET_S);
            let hi = end.min((k + 1) as f64 * BUCKET_S);
            busy[k] += (hi - lo).max(0.0);
            k += 1;
        }
    }
    busy.chunks(per_window)
        .map(|c| {
            let peak = c.iter().fold(0.0f64, |m, &x| m.max(x)) / BUCKET_S;
            (peak / (b as f64 * factor) - 1e-9).ceil().max(0.0) as u32
        })
        .collect()
}

/// The oracle's plan: each period gets what it and the next period need (work arriving near the
/// end of a period is served in the next).
pub fn oracle_plan(required: &[u32]) -> Vec<u32> {
    (0..required.len())
        .map(|w| required[w].max(required.get(w + 1).copied().unwrap_or(0)))
        .collect()
}

/// The oracle's plan for the trace and the replicas every replay starts with (the plan's first
/// period, at least one).
pub fn plan_and_initial(trace: &Trace, cfg: &ClusterConfig) -> (Vec<u32>, u32) {
    let plan = oracle_plan(&required_replicas(trace, cfg));
    let initial = plan.first().copied().unwrap_or(1).max(1);
    (plan, initial)
}

/// `f(0)`, ..., `f(n - 1)` on up to `threads` worker threads, each taking the next index as it
/// finishes one; the results in index order. With `f` deterministic, the results do not depend
/// on `threads`.
pub fn parallel<R: Send>(n: usize, threads: usize, f: impl Fn(usize) -> R + Sync) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<R>>> = Mutex::new((0..n).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..threads.clamp(1, n.max(1)) {
            scope.spawn(|| loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                if k >= n {
                    break;
                }
                let r = f(k);
                results
                    .lock()
                    .expect("no worker panics while holding the lock")[k] = Some(r);
            });
        }
    });
    results
        .into_inner()
        .expect("threads have finished")
        .into_iter()
        .map(|r| r.expect("every index was run"))
        .collect()
}

/// Replays every configured policy over the trace.
pub fn replay_all(trace: &Trace, cfg: &SimConfig) -> Result<Vec<Run>, SimError> {
    let (plan, initial) = plan_and_initial(trace, &cfg.cluster);
    parallel(cfg.policies.len(), cfg.threads, |k| {
        replay_one(trace, cfg, cfg.policies[k], &plan, initial)
    })
    .into_iter()
    .collect()
}

/// Replays one policy. Controllers run until the end of the trace; afterwards requests still
/// queued or in service finish (or time out) on what is left, and GPU time is counted up to the
/// end of the trace only, so every policy is charged for the same horizon.
pub fn replay_one(
    trace: &Trace,
    cfg: &SimConfig,
    name: PolicyName,
    plan: &[u32],
    initial: u32,
) -> Result<Run, SimError> {
    let mut cluster_cfg = cfg.cluster.clone();
    if name == PolicyName::Oracle {
        cluster_cfg.cold_start_s = 0.0;
    }
    let mut cluster = Cluster::new(cluster_cfg);
    if cfg.record_requests {
        cluster.outcomes.requests = Some(Vec::new());
    }
    cluster.warm_start(initial.min(cfg.setup.max_replicas));
    let mut policy = policy::build(name, &cfg.setup, plan).map_err(SimError::Spec)?;
    let mut metrics = Metrics::new(cfg.setup.scrape_s, 300.0);
    metrics.scrape(&cluster);
    let reqs = &trace.requests;
    let horizon = trace.duration_s.ceil().max(1.0) as u64;
    let scrape_every = cfg.setup.scrape_s.round().max(1.0) as u64;
    let sample_every = SYNC_PERIOD_S as u64;
    let mut next = 0usize;
    let mut ready = Vec::with_capacity(horizon as usize + 1);
    ready.push(cluster.ready());
    let (mut rmin, mut rmax, mut rsum) = (u32::MAX, 0u32, 0u64);
    let (mut util_sum, mut util_n, mut util_max) = (0.0, 0u64, 0.0f64);
    let mut timeline = Vec::with_capacity((horizon / sample_every) as usize + 1);
    let (mut sample_next, mut sample_lat) = (0usize, 0usize);
    let mut scratch: Vec<f32> = Vec::new();
    let mut decisions = Vec::new();
    for tick in 1..=horizon {
        let now = tick as f64;
        cluster.advance(now, reqs, &mut next);
        if tick % scrape_every == 0 {
            metrics.scrape(&cluster);
            if let Some(u) = metrics.latest().and_then(|s| s.mean(|p| p.gpu_util_pct)) {
                util_sum += u;
                util_n += 1;
                util_max = util_max.max(u);
            }
        }
        let n = policy.control(now, &cluster, &metrics);
        if cfg.record_decisions {
            // A new decision is one taken at this second: the scaler steps once per scrape.
            if let Some(d) = policy.last_decision().filter(|d| d.at == now) {
                decisions.push(d.clone());
            }
        }
        if let Some(held) = policy.held_out() {
            let live: Vec<usize> = cluster.live_indices().collect();
            for i in live {
                cluster.set_held_out(i, held.contains(&i));
            }
        }
        if let Some(n) = n {
            cluster.set_replicas_ranked(n.min(cfg.setup.max_replicas), policy.deletion_costs());
        }
        let replicas = cluster.replicas();
        rmin = rmin.min(replicas);
        rmax = rmax.max(replicas);
        rsum += replicas as u64;
        ready.push(cluster.ready());
        if tick % sample_every == 0 {
            let lat = &cluster.outcomes.latencies[sample_lat..];
            let p95_s = percentile(&mut scratch, lat, 0.95);
            timeline.push(Sample {
                t: now,
                load_rps: (next - sample_next) as f64 / SYNC_PERIOD_S,
                replicas,
                ready: cluster.ready(),
                queue: cluster.queue_len() as u32,
                p95_s,
            });
            sample_next = next;
            sample_lat = cluster.outcomes.latencies.len();
        }
    }
    let gpu_seconds = cluster.gpu_seconds;
    let drain_gpu_seconds = cluster.drain_gpu_seconds;
    let mut t = horizon as f64;
    let limit = t + cfg.cluster.timeout_s + 86_400.0;
    while (cluster.pending() > 0 || next < reqs.len()) && t < limit {
        // Jump straight to the next completion; step a second at a time only to expire the queue.
        t = cluster
            .next_completion()
            .map_or(t + 1.0, |c| c.max(t + 1e-9))
            .min(t + 1.0);
        cluster.advance(t, reqs, &mut next);
    }
    Ok(Run {
        name,
        outcomes: cluster.outcomes,
        gpu_seconds,
        drain_gpu_seconds,
        deletion_cost_patches: policy.deletion_cost_patches(),
        gate_patches: policy.gate_patches(),
        scaling_events: cluster.scale_events,
        replicas_min: rmin,
        replicas_max: rmax,
        replicas_mean: rsum as f64 / horizon as f64,
        gpu_util_mean: if util_n > 0 {
            util_sum / util_n as f64
        } else {
            0.0
        },
        gpu_util_max: util_max,
        ready,
        timeline,
        decisions,
    })
}

/// The q-quantile (nearest rank) of `xs`, using `scratch` to avoid reordering the input.
pub fn percentile(scratch: &mut Vec<f32>, xs: &[f32], q: f64) -> Option<f64> {
    let k = nearest_rank(xs.len(), q)?;
    scratch.clear();
    scratch.extend_from_slice(xs);
    let (_, v, _) = scratch.select_nth_unstable_by(k, f32::total_cmp);
    Some(*v as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let xs: Vec<f32> = (1..=100).map(|x| x as f32).collect();
        let mut s = Vec::new();
        assert_eq!(percentile(&mut s, &xs, 0.95), Some(95.0));
        assert_eq!(percentile(&mut s, &xs, 0.5), Some(50.0));
        assert_eq!(percentile(&mut s, &xs, 1.0), Some(100.0));
        assert_eq!(percentile(&mut s, &[], 0.5), None);
    }

    #[test]
    fn a_hotter_plan_counts_each_replica_as_more_slots() {
        let cost = crate::cost::CostModel::default();
        let cfg = ClusterConfig {
            cost: cost.clone(),
            cold_start_s: 60.0,
            timeout_s: 60.0,
            slo_s: 5.0,
            ttft_slo_s: 2.0,
            tpot_slo_s: 0.05,
            grace_s: 30.0,
            remove_by_remaining_work: false,
        };
        // 17 requests of 4 s at once: 17 slots busy for the first second.
        let trace = Trace {
            requests: (0..17)
                .map(|_| crate::trace::Request::plain(0.0, 4.0, &cost))
                .collect(),
            duration_s: 30.0,
            source: "test".into(),
        };
        assert_eq!(required_replicas(&trace, &cfg)[0], 3);
        assert_eq!(required_replicas_at(&trace, &cfg, 1.0)[0], 3);
        assert_eq!(required_replicas_at(&trace, &cfg, 1.1)[0], 2, "17 / 8.8");
        assert_eq!(required_replicas_at(&trace, &cfg, 2.0)[0], 2, "17 / 16");
        assert_eq!(required_replicas_at(&trace, &cfg, 2.2)[0], 1);
    }

    #[test]
    fn oracle_plan_covers_the_next_period() {
        assert_eq!(oracle_plan(&[1, 3, 2, 0, 0]), vec![3, 3, 2, 0, 0]);
    }
}
