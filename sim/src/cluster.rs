//! The serving cluster: replicas of one GPU each, a shared FIFO queue at the gateway, cold
//! starts and draining (the request cost model is `cost.rs`). Event-driven between control
//! ticks, so a day of traffic replays in well under a second per policy.

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BinaryHeap, VecDeque};

use super::cost::CostModel;
use super::trace::Request;

/// Latency histogram bucket bounds (seconds), like a typical serving framework's defaults.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.0,
    3.0,
    5.0,
    7.5,
    10.0,
    15.0,
    20.0,
    30.0,
    60.0,
    120.0,
    f64::INFINITY,
];

/// Cluster settings besides the cost model.
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterConfig {
    pub cost: CostModel,
    /// Image pull + model load before a new replica takes traffic.
    pub cold_start_s: f64,
    /// A request still queued this long after arriving is dropped (the client gave up).
    pub timeout_s: f64,
    /// End-to-end latency objective: the headline SLO for requests without token counts, and the
    /// secondary (end-to-end) column for every request.
    pub slo_s: f64,
    /// Time-to-first-token objective (queue wait + prefill) for requests with token counts.
    pub ttft_slo_s: f64,
    /// Time-per-output-token objective (decode time / output tokens) for requests with tokens.
    pub tpot_slo_s: f64,
    /// The pods' `terminationGracePeriodSeconds`: a removed replica finishes what it has for
    /// this long, then is killed and the requests still running are cut (failures).
    pub grace_s: f64,
    /// A reference, not a policy: on scale-down remove the replicas holding the fewest requests
    /// that would outlive the grace period, which needs each request's remaining service time,
    /// something no pod exports. It bounds what any deletion-cost ranking could save.
    pub remove_by_remaining_work: bool,
}

impl ClusterConfig {
    /// Whether a request with this first-token time, decode time per token and end-to-end latency
    /// meets the headline SLO: TTFT and TPOT for token requests, end-to-end latency otherwise.
    /// A hair of tolerance keeps a request served exactly at the objective inside it.
    pub fn meets_slo(&self, r: &Request, ttft: f64, tpot: Option<f64>, latency: f64) -> bool {
        const EPS: f64 = 1e-9;
        match tpot {
            Some(tpot) if r.generated_tokens > 0.0 => {
                ttft <= self.ttft_objective(r) + EPS && tpot <= self.tpot_slo_s + EPS
            }
            _ => latency <= self.slo_s + EPS,
        }
    }

    /// The time-to-first-token objective of one request: `ttft_slo_s`, or twice the request's
    /// unloaded prefill when that is longer. A prompt whose prefill alone takes most of the
    /// objective could not meet it in any batch; like the TPOT objective (twice the unloaded
    /// decode time) it then gets twice its unloaded time, which a full batch costs.
    pub fn ttft_objective(&self, r: &Request) -> f64 {
        let slowdown = self.cost.full_batch_slowdown.max(1.0);
        self.ttft_slo_s.max(slowdown * r.prefill_s)
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Phase {
    Starting {
        ready_at: f64,
    },
    Ready,
    /// Removed: takes no new requests, finishes what it has until the grace period ends at
    /// `until` (then what still runs is cut), and releases its GPU.
    Draining {
        until: f64,
    },
    Gone,
}

/// One replica: one GPU and what it would expose on `/metrics`.
#[derive(Clone, Debug)]
pub struct Replica {
    pub phase: Phase,
    /// When it became ready (the ReplicaSet removes the most recently ready first).
    pub ready_since: f64,
    /// Taken out of service by the scaler (`podReadinessGate`: its readiness gate is False): it
    /// takes no new requests and finishes what it has, is not ready (the ReplicaSet removes it
    /// before any ready pod), and serves again when put back.
    pub held_out: bool,
    pub inflight: u32,
    pub kv_tokens: f64,
    /// Integral of in-flight requests over time (slot-seconds), for utilisation over any window.
    pub slot_seconds: f64,
    last_t: f64,
    /// Cumulative latency histogram: completions per `LATENCY_BUCKETS` bucket (not cumulative
    /// across buckets; the metrics model sums them as Prometheus' `le` series would).
    pub latency_counts: Vec<u64>,
    /// Time-to-first-token histogram, same buckets, observed when the request is admitted: a
    /// serving engine observes it at the first token, which follows admission by the prefill
    /// (well under one scrape interval), not at completion, which follows by the whole
    /// generation. So its `_count` counts requests that started, as the engine's does.
    pub ttft_counts: Vec<u64>,
}

impl Replica {
    fn integrate(&mut self, now: f64) {
        if now > self.last_t {
            self.slot_seconds += self.inflight as f64 * (now - self.last_t);
            self.last_t = now;
        }
    }

    pub fn slot_seconds_at(&self, now: f64) -> f64 {
        self.slot_seconds + self.inflight as f64 * (now - self.last_t).max(0.0)
    }
}

#[derive(Clone, Copy, Debug)]
struct Completion {
    at: f64,
    replica: u32,
    request: Request,
    ttft: f64,
    /// Decode seconds per output token; None without token counts.
    tpot: Option<f64>,
    /// Seconds the request waited in the queue before a replica took it.
    wait: f64,
}

impl PartialEq for Completion {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Completion {}
impl PartialOrd for Completion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Completion {
    fn cmp(&self, other: &Self) -> Ordering {
        self.at
            .total_cmp(&other.at)
            .then(self.replica.cmp(&other.replica))
    }
}

/// Request outcomes over the whole replay.
#[derive(Clone, Debug, Default)]
pub struct Outcomes {
    pub arrived: u64,
    pub completed: u64,
    pub timed_out: u64,
    /// Completed within the headline SLO (TTFT and TPOT, or end-to-end without tokens).
    pub within_slo: u64,
    /// Completed within the end-to-end latency objective.
    pub within_e2e_slo: u64,
    /// Cut on scale-down: still running on a removed replica when its grace period ended.
    pub cut: u64,
    /// Refused on arrival: the queue was full (`CostModel::queue_capacity`).
    pub refused: u64,
    /// Arrived requests whose service time alone, on an idle replica, exceeds the end-to-end
    /// objective: no policy can make them meet it.
    pub e2e_infeasible: u64,
    /// Latency of every completed request, seconds.
    pub latencies: Vec<f32>,
    /// Per completed request (queue wait, service, latency) in seconds, when asked for.
    pub requests: Option<Vec<RequestOutcome>>,
}

/// One completed request, for re-scoring outside the simulator.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct RequestOutcome {
    pub arrived_s: f64,
    pub wait_s: f64,
    pub service_s: f64,
    pub latency_s: f64,
    pub ttft_s: f64,
    pub tpot_s: Option<f64>,
    pub met_slo: bool,
}

/// The cluster state. Time only moves forward through `advance`.
#[derive(Clone, Debug)]
pub struct Cluster {
    cfg: ClusterConfig,
    pub replicas: Vec<Replica>,
    /// Indices of replicas not yet gone, in creation order.
    live: Vec<u32>,
    queue: VecDeque<Request>,
    completions: BinaryHeap<Reverse<Completion>>,
    /// Ready replicas with a free slot, bucketed by in-flight count: dispatch goes to the least
    /// loaded in O(batch) rather than scanning every replica.
    free: Vec<Vec<u32>>,
    free_pos: Vec<u32>,
    pub outcomes: Outcomes,
    now: f64,
    /// Integral of allocated GPUs (starting + ready + draining) over time, GPU-seconds.
    pub gpu_seconds: f64,
    /// The part of `gpu_seconds` spent by removed replicas draining.
    pub drain_gpu_seconds: f64,
    draining: u32,
    /// Integral of requests in the system (queued + in service), request-seconds.
    pub concurrency_seconds: f64,
    total_inflight: u64,
    pub scale_events: u64,
}

impl Cluster {
    pub fn new(cfg: ClusterConfig) -> Self {
        let b = cfg.cost.batch as usize;
        Cluster {
            cfg,
            replicas: Vec::new(),
            live: Vec::new(),
            queue: VecDeque::new(),
            completions: BinaryHeap::new(),
            free: vec![Vec::new(); b],
            free_pos: Vec::new(),
            outcomes: Outcomes::default(),
            now: 0.0,
            gpu_seconds: 0.0,
            drain_gpu_seconds: 0.0,
            draining: 0,
            concurrency_seconds: 0.0,
            total_inflight: 0,
            scale_events: 0,
        }
    }

    pub fn config(&self) -> &ClusterConfig {
        &self.cfg
    }

    pub fn now(&self) -> f64 {
        self.now
    }

    /// Replicas that exist and are not being removed (what the Deployment's spec counts).
    pub fn replicas(&self) -> u32 {
        self.live
            .iter()
            .filter(|&&i| !matches!(self.replicas[i as usize].phase, Phase::Draining { .. }))
            .count() as u32
    }

    pub fn ready(&self) -> u32 {
        self.ready_indices().count() as u32
    }

    pub fn ready_indices(&self) -> impl Iterator<Item = usize> + '_ {
        self.live
            .iter()
            .map(|&i| i as usize)
            .filter(|&i| self.replicas[i].phase == Phase::Ready && !self.replicas[i].held_out)
    }

    /// Replicas serving or taken out of service by the scaler (what it scrapes).
    pub fn scraped_indices(&self) -> impl Iterator<Item = usize> + '_ {
        self.live
            .iter()
            .map(|&i| i as usize)
            .filter(|&i| self.replicas[i].phase == Phase::Ready)
    }

    /// Takes replica `i` out of service (its readiness gate False) or puts it back. Only a
    /// running replica can be; anything else is left as it is.
    pub fn set_held_out(&mut self, i: usize, held_out: bool) {
        if self
            .replicas
            .get(i)
            .is_none_or(|r| r.phase != Phase::Ready || r.held_out == held_out)
        {
            return;
        }
        if held_out {
            self.free_remove(i as u32);
            self.replicas[i].held_out = true;
        } else {
            self.replicas[i].held_out = false;
            self.free_insert(i as u32);
            self.dispatch();
        }
    }

    /// Replicas that exist, including those draining, in creation order.
    pub fn live_indices(&self) -> impl Iterator<Item = usize> + '_ {
        self.live.iter().map(|&i| i as usize)
    }

    /// Starts the replay with `n` replicas already serving (a Deployment that was running before).
    pub fn warm_start(&mut self, n: u32) {
        let cold = self.cfg.cold_start_s;
        self.cfg.cold_start_s = 0.0;
        self.set_replicas(n);
        self.cfg.cold_start_s = cold;
        self.scale_events = 0;
    }

    /// Replicas holding a GPU: starting, ready or draining.
    pub fn allocated(&self) -> u32 {
        self.live.len() as u32
    }

    pub fn queue_len(&self) -> usize {
        self.queue.len()
    }

    pub fn inflight(&self) -> u64 {
        self.total_inflight
    }

    fn integrate(&mut self, t: f64) {
        if t > self.now {
            let dt = t - self.now;
            self.gpu_seconds += self.live.len() as f64 * dt;
            self.drain_gpu_seconds += self.draining as f64 * dt;
            self.concurrency_seconds += (self.total_inflight + self.queue.len() as u64) as f64 * dt;
            self.now = t;
        }
    }

    fn free_insert(&mut self, r: u32) {
        let load = self.replicas[r as usize].inflight as usize;
        let rep = &self.replicas[r as usize];
        if load < self.free.len() && rep.phase == Phase::Ready && !rep.held_out {
            self.free_pos[r as usize] = self.free[load].len() as u32;
            self.free[load].push(r);
        }
    }

    fn free_remove(&mut self, r: u32) {
        let pos = self.free_pos[r as usize];
        if pos == u32::MAX {
            return;
        }
        let load = self.replicas[r as usize].inflight as usize;
        let bucket = &mut self.free[load];
        bucket.swap_remove(pos as usize);
        if let Some(&moved) = bucket.get(pos as usize) {
            self.free_pos[moved as usize] = pos;
        }
        self.free_pos[r as usize] = u32::MAX;
    }

    /// Sets the number of replicas the Deployment asks for. New ones start cold; removal takes
    /// starting replicas first, then the most recently ready ones (as a ReplicaSet does), which
    /// drain.
    pub fn set_replicas(&mut self, target: u32) {
        self.set_replicas_ranked(target, None);
    }

    /// `set_replicas` with pod deletion costs (replica index -> cost; 0 when absent): the
    /// ReplicaSet's ranking removes starting replicas first, then the lowest cost, then the most
    /// recently ready.
    pub fn set_replicas_ranked(&mut self, target: u32, costs: Option<&BTreeMap<usize, i32>>) {
        let now = self.now;
        let current = self.replicas();
        if target != current {
            self.scale_events += 1;
        }
        for _ in current..target {
            let idx = self.replicas.len() as u32;
            let phase = if self.cfg.cold_start_s <= 0.0 {
                Phase::Ready
            } else {
                Phase::Starting {
                    ready_at: now + self.cfg.cold_start_s,
                }
            };
            self.replicas.push(Replica {
                phase,
                ready_since: now,
                held_out: false,
                inflight: 0,
                kv_tokens: 0.0,
                slot_seconds: 0.0,
                last_t: now,
                latency_counts: vec![0; LATENCY_BUCKETS.len()],
                ttft_counts: vec![0; LATENCY_BUCKETS.len()],
            });
            self.free_pos.push(u32::MAX);
            self.live.push(idx);
            self.free_insert(idx);
        }
        let to_remove = current.saturating_sub(target) as usize;
        if to_remove > 0 {
            // The ReplicaSet controller's order: not ready first, then lower deletion cost,
            // then the most recently ready (newest first among equals).
            let until = now + self.cfg.grace_s;
            let outliving = self.cfg.remove_by_remaining_work.then(|| {
                let mut n: BTreeMap<usize, i32> = BTreeMap::new();
                for c in self.completions.iter().filter(|c| c.0.at > until) {
                    *n.entry(c.0.replica as usize).or_default() += 1;
                }
                n
            });
            let cost = |i: usize| match &outliving {
                Some(n) => n.get(&i).copied().unwrap_or(0),
                None => costs.and_then(|c| c.get(&i)).copied().unwrap_or(0),
            };
            let mut order: Vec<usize> = self
                .live
                .iter()
                .map(|&i| i as usize)
                .filter(|&i| !matches!(self.replicas[i].phase, Phase::Draining { .. }))
                .collect();
            order.sort_by(|&a, &b| {
                let (ra, rb) = (&self.replicas[a], &self.replicas[b]);
                // Pending (starting) first, then running but not ready (taken out), then ready.
                let rank = |r: &Replica| match r.phase {
                    Phase::Starting { .. } => 0,
                    _ if r.held_out => 1,
                    _ => 2,
                };
                rank(ra)
                    .cmp(&rank(rb))
                    .then(cost(a).cmp(&cost(b)))
                    .then(rb.ready_since.total_cmp(&ra.ready_since))
                    .then(b.cmp(&a))
            });
            for &i in order.iter().take(to_remove) {
                match self.replicas[i].phase {
                    Phase::Starting { .. } => self.replicas[i].phase = Phase::Gone,
                    Phase::Ready => {
                        self.free_remove(i as u32);
                        let r = &mut self.replicas[i];
                        if r.inflight == 0 {
                            r.phase = Phase::Gone;
                        } else {
                            r.phase = Phase::Draining { until };
                            self.draining += 1;
                        }
                    }
                    _ => {}
                }
            }
        }
        self.live
            .retain(|&i| self.replicas[i as usize].phase != Phase::Gone);
        self.dispatch();
    }

    /// Replays everything up to `until`: readiness, arrivals from `requests[*next..]`, completions.
    pub fn advance(&mut self, until: f64, requests: &[Request], next: &mut usize) {
        let mut became_ready = false;
        for k in 0..self.live.len() {
            let i = self.live[k];
            if let Phase::Starting { ready_at } = self.replicas[i as usize].phase {
                if ready_at <= self.now {
                    self.replicas[i as usize].phase = Phase::Ready;
                    self.replicas[i as usize].ready_since = ready_at;
                    self.replicas[i as usize].last_t = self.now;
                    self.free_insert(i);
                    became_ready = true;
                }
            }
        }
        if became_ready {
            self.dispatch();
        }
        loop {
            let arrival = requests.get(*next).map(|r| r.at).filter(|&t| t < until);
            let completion = self
                .completions
                .peek()
                .map(|c| c.0.at)
                .filter(|&t| t <= until);
            // A grace period that ends before the next arrival and completion kills its replica.
            if let Some((t, i)) = self.next_kill().filter(|&(t, _)| t <= until) {
                if arrival.is_none_or(|a| t <= a) && completion.is_none_or(|c| t < c) {
                    self.kill(t, i);
                    continue;
                }
            }
            match (arrival, completion) {
                (Some(a), Some(c)) if c <= a => self.complete(),
                (_, Some(_)) if arrival.is_none() => self.complete(),
                (Some(a), _) => {
                    let r = requests[*next];
                    *next += 1;
                    self.integrate(a);
                    self.outcomes.arrived += 1;
                    if r.work_s > self.cfg.slo_s {
                        self.outcomes.e2e_infeasible += 1;
                    }
                    if self.queue_full() {
                        self.outcomes.refused += 1;
                        continue;
                    }
                    self.queue.push_back(r);
                    self.dispatch();
                }
                (None, _) => break,
            }
        }
        self.integrate(until);
        self.expire();
    }

    /// Whether an arrival is refused: with a queue capacity per replica, the queue (which holds
    /// requests only while every ready replica's batch is full) already holds that many per
    /// ready replica. With no replica ready nothing can queue, as with per-replica queues.
    fn queue_full(&self) -> bool {
        self.cfg
            .cost
            .queue_capacity
            .is_some_and(|c| self.queue.len() >= c as usize * self.ready() as usize)
    }

    /// The earliest end of a grace period among draining replicas: (time, replica).
    fn next_kill(&self) -> Option<(f64, usize)> {
        if self.draining == 0 {
            return None;
        }
        self.live
            .iter()
            .filter_map(|&i| match self.replicas[i as usize].phase {
                Phase::Draining { until } => Some((until, i as usize)),
                _ => None,
            })
            .min_by(|a, b| a.0.total_cmp(&b.0))
    }

    /// The grace period of replica `i` ends at `t`: the kubelet kills it and what still runs on
    /// it is cut.
    fn kill(&mut self, t: f64, i: usize) {
        self.integrate(t);
        let r = &mut self.replicas[i];
        r.integrate(t);
        let cut = r.inflight;
        r.inflight = 0;
        r.kv_tokens = 0.0;
        r.phase = Phase::Gone;
        self.draining -= 1;
        self.total_inflight -= u64::from(cut);
        self.outcomes.cut += u64::from(cut);
        self.completions.retain(|c| c.0.replica as usize != i);
        self.live.retain(|&k| k as usize != i);
    }

    /// Requests still queued or in service.
    pub fn pending(&self) -> usize {
        self.queue.len() + self.completions.len()
    }

    /// Time of the next completion, if any.
    pub fn next_completion(&self) -> Option<f64> {
        self.completions.peek().map(|c| c.0.at)
    }

    fn expire(&mut self) {
        while let Some(r) = self.queue.front() {
            if self.now - r.at > self.cfg.timeout_s {
                self.queue.pop_front();
                self.outcomes.timed_out += 1;
            } else {
                break;
            }
        }
    }

    fn complete(&mut self) {
        let Some(Reverse(c)) = self.completions.pop() else {
            return;
        };
        self.integrate(c.at);
        let i = c.replica as usize;
        self.free_remove(c.replica);
        let r = &mut self.replicas[i];
        r.integrate(c.at);
        r.inflight -= 1;
        r.kv_tokens = (r.kv_tokens - c.request.kv_tokens).max(0.0);
        self.total_inflight -= 1;
        let latency = c.at - c.request.at;
        r.latency_counts[bucket(latency)] += 1;
        self.outcomes.completed += 1;
        let met = self.cfg.meets_slo(&c.request, c.ttft, c.tpot, latency);
        self.outcomes.within_slo += u64::from(met);
        self.outcomes.within_e2e_slo += u64::from(latency <= self.cfg.slo_s);
        self.outcomes.latencies.push(latency as f32);
        if let Some(log) = &mut self.outcomes.requests {
            log.push(RequestOutcome {
                arrived_s: c.request.at,
                wait_s: c.wait,
                service_s: c.at - c.request.at - c.wait,
                latency_s: latency,
                ttft_s: c.ttft,
                tpot_s: c.tpot,
                met_slo: met,
            });
        }
        if matches!(r.phase, Phase::Draining { .. }) && r.inflight == 0 {
            r.phase = Phase::Gone;
            self.draining -= 1;
            self.live.retain(|&k| k != c.replica);
        } else {
            self.free_insert(c.replica);
        }
        self.dispatch();
    }

    fn dispatch(&mut self) {
        self.expire();
        while !self.queue.is_empty() {
            let Some(load) = self.free.iter().position(|b| !b.is_empty()) else {
                return;
            };
            let r = *self.free[load].last().expect("bucket is not empty");
            let request = self.queue.pop_front().expect("queue is not empty");
            self.free_remove(r);
            let now = self.now;
            let cost = &self.cfg.cost;
            let rep = &mut self.replicas[r as usize];
            rep.integrate(now);
            rep.inflight += 1;
            rep.kv_tokens += request.kv_tokens;
            let service = cost.service_s(request.work_s, rep.inflight);
            // The batch slows prefill and decode alike (fixed at admission, like the service time).
            let slowdown = cost.service_s(1.0, rep.inflight);
            let wait = now - request.at;
            let ttft = wait + request.prefill_s * slowdown;
            let tpot = (request.generated_tokens > 0.0).then(|| {
                (request.work_s - request.prefill_s).max(0.0) * slowdown / request.generated_tokens
            });
            rep.ttft_counts[bucket(ttft)] += 1;
            self.total_inflight += 1;
            self.completions.push(Reverse(Completion {
                at: now + service,
                replica: r,
                request,
                ttft,
                tpot,
                wait,
            }));
            self.free_insert(r);
        }
    }
}

/// The latency histogram's bucket (per-bucket index into `LATENCY_BUCKETS`) of `x` seconds.
fn bucket(x: f64) -> usize {
    LATENCY_BUCKETS
        .partition_point(|&le| le < x)
        .min(LATENCY_BUCKETS.len() - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(cold: f64) -> ClusterConfig {
        ClusterConfig {
            cost: CostModel {
                overhead_s: 1.0,
                prefill_s_per_token: 0.0,
                decode_s_per_token: 0.0,
                batch: 2,
                full_batch_slowdown: 2.0,
                ..CostModel::default()
            },
            cold_start_s: cold,
            timeout_s: 30.0,
            slo_s: 1.5,
            ttft_slo_s: 2.0,
            tpot_slo_s: 0.05,
            grace_s: f64::INFINITY,
            remove_by_remaining_work: false,
        }
    }

    fn req(at: f64) -> Request {
        Request {
            at,
            work_s: 1.0,
            kv_tokens: 1000.0,
            prefill_s: 1.0,
            generated_tokens: 0.0,
        }
    }

    #[test]
    fn batching_slows_requests_and_the_queue_waits_for_a_slot() {
        let mut c = Cluster::new(cfg(0.0));
        c.set_replicas(1);
        let reqs = [req(0.0), req(0.0), req(0.0)];
        let mut next = 0;
        c.advance(10.0, &reqs, &mut next);
        // First alone: 1 s. Second joins a batch of 2: 2 s. Third waits for the first (1 s), then
        // runs as the second of a batch: 2 s, done at 3 s.
        let mut l = c.outcomes.latencies.clone();
        l.sort_by(f32::total_cmp);
        assert_eq!(l, vec![1.0, 2.0, 3.0]);
        assert_eq!(c.outcomes.within_slo, 1);
        assert!((c.replicas[0].slot_seconds_at(10.0) - 5.0).abs() < 1e-9);
        assert!((c.gpu_seconds - 10.0).abs() < 1e-9);
    }

    #[test]
    fn time_to_first_token_is_observed_when_a_request_starts_not_when_it_ends() {
        let mut c = Cluster::new(cfg(0.0));
        c.set_replicas(1);
        let reqs = [req(0.0), req(0.0), req(0.0)];
        let mut next = 0;
        // At 0.5 s two requests are in service (a batch of two) and one waits: the two that
        // started are in the TTFT histogram, nothing is in the end-to-end one yet.
        c.advance(0.5, &reqs, &mut next);
        let sum = |v: &[u64]| v.iter().sum::<u64>();
        assert_eq!(sum(&c.replicas[0].ttft_counts), 2);
        assert_eq!(sum(&c.replicas[0].latency_counts), 0);
        c.advance(10.0, &reqs, &mut next);
        assert_eq!(sum(&c.replicas[0].ttft_counts), 3);
        assert_eq!(sum(&c.replicas[0].latency_counts), 3);
    }

    #[test]
    fn slo_counts_first_token_and_time_per_token_for_token_requests() {
        // Batch 2, a full batch runs at half speed. Each request: 0.5 s of prefill, 10 tokens of
        // 25 ms. TTFT SLO 1.5 s, TPOT SLO 50 ms, end-to-end SLO 1.5 s.
        let mut cfg = cfg(0.0);
        cfg.ttft_slo_s = 1.5;
        cfg.tpot_slo_s = 0.05;
        let mut c = Cluster::new(cfg);
        c.outcomes.requests = Some(Vec::new());
        c.set_replicas(1);
        let r = |at: f64| Request {
            at,
            work_s: 0.75,
            kv_tokens: 100.0,
            prefill_s: 0.5,
            generated_tokens: 10.0,
        };
        let reqs = [r(0.0), r(0.0), r(0.0)];
        let mut next = 0;
        c.advance(10.0, &reqs, &mut next);
        let mut log = c.outcomes.requests.clone().unwrap();
        log.sort_by(|a, b| a.latency_s.total_cmp(&b.latency_s));
        // Alone: TTFT 0.5, TPOT 25 ms, done at 0.75. Second of a batch: TTFT 1.0, TPOT 50 ms (at
        // the objective: met), done at 1.5. Third waits 0.75 s for the first, then runs as the
        // second of a batch: TTFT 0.75 + 1.0 = 1.75 > 1.5 (missed), done at 2.25.
        let got: Vec<(f64, f64, f64, bool)> = log
            .iter()
            .map(|o| (o.wait_s, o.ttft_s, o.tpot_s.unwrap(), o.met_slo))
            .collect();
        let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
        let want = [
            (0.0, 0.5, 0.025, true),
            (0.0, 1.0, 0.05, true),
            (0.75, 1.75, 0.05, false),
        ];
        for (g, w) in got.iter().zip(want) {
            assert!(
                close(g.0, w.0) && close(g.1, w.1) && close(g.2, w.2) && g.3 == w.3,
                "{got:?}"
            );
        }
        assert_eq!(c.outcomes.within_slo, 2);
        // End to end: 0.75 and 1.5 are within 1.5 s, 2.25 is not; none is infeasible alone.
        assert_eq!(c.outcomes.within_e2e_slo, 2);
        assert_eq!(c.outcomes.e2e_infeasible, 0);
        // A request whose service alone exceeds the end-to-end objective is counted as such.
        let long = [Request {
            at: 20.0,
            work_s: 2.0,
            kv_tokens: 1.0,
            prefill_s: 0.1,
            generated_tokens: 76.0,
        }];
        let mut next = 0;
        c.advance(30.0, &long, &mut next);
        assert_eq!(c.outcomes.e2e_infeasible, 1);
        assert_eq!(c.outcomes.within_e2e_slo, 2);
        assert_eq!(c.outcomes.within_slo, 3, "TTFT 0.1 s, TPOT 25 ms: met");
    }

    #[test]
    fn timed_out_requests_are_misses() {
        let mut c = Cluster::new(cfg(60.0));
        c.set_replicas(1);
        let reqs = [req(0.0)];
        let mut next = 0;
        for t in 1..=40 {
            c.advance(t as f64, &reqs, &mut next);
        }
        assert_eq!((c.outcomes.arrived, c.outcomes.timed_out), (1, 1));
        assert_eq!(c.outcomes.within_slo, 0);
    }

    #[test]
    fn cold_start_delays_traffic_and_timeouts_drop_waiting_requests() {
        let mut c = Cluster::new(cfg(60.0));
        c.set_replicas(1);
        let reqs = [req(0.0), req(40.0)];
        let mut next = 0;
        for t in 1..=70 {
            c.advance(t as f64, &reqs, &mut next);
        }
        // The first waited 30 s+ and gave up; the second started at 60 s, done at 61 s.
        assert_eq!(c.outcomes.timed_out, 1);
        assert_eq!(c.outcomes.latencies, vec![21.0]);
    }

    #[test]
    fn removal_takes_starting_first_and_ready_ones_drain() {
        let mut c = Cluster::new(cfg(0.0));
        c.set_replicas(2);
        let reqs = [req(0.0), req(0.0), req(0.0), req(0.0)];
        let mut next = 0;
        c.advance(0.5, &reqs, &mut next);
        assert_eq!(c.inflight(), 4);
        c.set_replicas(1);
        assert_eq!(c.replicas(), 1);
        assert_eq!(c.allocated(), 2, "the removed replica drains");
        c.advance(5.0, &reqs, &mut next);
        assert_eq!(c.allocated(), 1);
        assert_eq!(c.outcomes.completed, 4);
        let mut c = Cluster::new(cfg(60.0));
        c.set_replicas(3);
        c.set_replicas(1);
        assert_eq!(c.allocated(), 1);
        assert_eq!(c.scale_events, 2);
    }

    #[test]
    fn the_grace_period_cuts_what_still_runs_and_deletion_costs_pick_the_pod() {
        let long = |at: f64| Request {
            work_s: 100.0,
            ..req(at)
        };
        // Two ready replicas, one long request on replica 1 (the newest), replica 0 idle.
        let mut cfg = cfg(0.0);
        cfg.grace_s = 30.0;
        let mut c = Cluster::new(cfg.clone());
        c.set_replicas(1);
        c.set_replicas(2);
        let mut next = 0;
        let reqs = [long(0.0)];
        c.advance(1.0, &reqs, &mut next);
        let busy = c
            .live_indices()
            .find(|&i| c.replicas[i].inflight == 1)
            .unwrap();
        assert_eq!(
            busy, 1,
            "dispatch takes the last free replica of the least loaded"
        );
        // Newest ready first: the busy replica drains, and is killed 30 s later.
        c.set_replicas(1);
        assert_eq!(c.allocated(), 2);
        c.advance(30.5, &reqs, &mut next);
        assert_eq!(c.allocated(), 2, "still draining at 30.5 s");
        c.advance(31.5, &reqs, &mut next);
        assert_eq!((c.allocated(), c.outcomes.cut, c.inflight()), (1, 1, 0));
        assert!((c.drain_gpu_seconds - 30.0).abs() < 1e-9);
        c.advance(200.0, &reqs, &mut next);
        assert_eq!(c.outcomes.completed, 0, "a cut request never completes");

        // A lower deletion cost on the idle replica: it goes at once, nothing is cut.
        let mut c = Cluster::new(cfg);
        c.set_replicas(1);
        c.set_replicas(2);
        let mut next = 0;
        c.advance(1.0, &reqs, &mut next);
        let costs: BTreeMap<usize, i32> = [(0, -1)].into();
        c.set_replicas_ranked(1, Some(&costs));
        assert_eq!(c.allocated(), 1);
        c.advance(200.0, &reqs, &mut next);
        assert_eq!((c.outcomes.cut, c.outcomes.completed), (0, 1));
    }

    #[test]
    fn a_replica_taken_out_of_service_takes_no_new_requests_and_goes_first() {
        let long = |at: f64| Request {
            work_s: 100.0,
            ..req(at)
        };
        let mut cfg = cfg(0.0);
        cfg.grace_s = 30.0;
        let mut c = Cluster::new(cfg);
        c.set_replicas(3);
        let mut next = 0;
        let reqs = [long(0.0), long(2.0), long(3.0)];
        c.advance(1.0, &reqs, &mut next);
        let busy = c
            .live_indices()
            .find(|&i| c.replicas[i].inflight == 1)
            .unwrap();
        c.set_held_out(busy, true);
        assert_eq!(c.ready(), 2, "out of service is not ready");
        assert_eq!(c.scraped_indices().count(), 3, "but still scraped");
        c.advance(4.0, &reqs, &mut next);
        assert_eq!(c.replicas[busy].inflight, 1, "no new request went to it");
        // It finishes; removal takes it before the ready replicas however new they are.
        c.advance(150.0, &reqs, &mut next);
        assert_eq!(c.replicas[busy].inflight, 0);
        c.set_replicas(2);
        assert_eq!(c.replicas[busy].phase, Phase::Gone);
        assert_eq!(c.outcomes.cut, 0);
        // Put back, a replica serves again at once.
        let other = c.ready_indices().next().unwrap();
        c.set_held_out(other, true);
        c.set_held_out(other, false);
        assert_eq!(c.ready(), 2);
    }

    #[test]
    fn the_reference_removal_keeps_the_replica_whose_request_would_outlive_the_grace() {
        let long = |at: f64| Request {
            work_s: 100.0,
            ..req(at)
        };
        // The long request lands on replica 1 (the newest), a short one on replica 0: both hold
        // one request, so neither the ReplicaSet's order nor a count tells them apart.
        let mut cfg = cfg(0.0);
        cfg.grace_s = 30.0;
        cfg.remove_by_remaining_work = true;
        let mut c = Cluster::new(cfg);
        c.set_replicas(1);
        c.set_replicas(2);
        let reqs = [long(0.0), req(0.0)];
        let mut next = 0;
        c.advance(0.5, &reqs, &mut next);
        assert_eq!((c.replicas[0].inflight, c.replicas[1].inflight), (1, 1));
        c.set_replicas(1);
        assert_eq!(
            c.replicas[1].phase,
            Phase::Ready,
            "the long request's replica stays"
        );
        c.advance(200.0, &reqs, &mut next);
        assert_eq!((c.outcomes.cut, c.outcomes.completed), (0, 2));
    }
}
