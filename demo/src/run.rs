//! One live run: the scaler, the replica pool, KEDA + HPA and the load, stepped on the wall clock
//! until the plan ends or the user interrupts. Everything started here is stopped here: the pool
//! drains (and its Drop kills) every replica, the scaler is stopped, the load task is awaited.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::balancer::Balancer;
use super::control::{self, Controller, Reading, Writer};
use super::keda::KedaSide;
use super::load::{self, LoadConfig, Recorder};
use super::plan::Plan;
use super::prometheus::{self as prom, DemoPrometheus};
use super::replicas::{Pool, PoolEvent, ReplicaConfig, ReplicaPhase};
use super::summary::{self, RunSummary, Sample, ScaleEvent, SignalSample};
use super::view::View;
use super::{DemoArgs, DemoError};
use keda_gpu_scaler::config::Settings;
use keda_gpu_scaler::engine::{Engine, EntryKey};
use keda_gpu_sim::hpa::PodMetric;
use keda_gpu_sim::policy::{PolicyName, CPU_HPA_TARGET_PCT};

/// Turns true on SIGINT or SIGTERM.
#[derive(Clone)]
pub struct StopSignal(watch::Receiver<bool>);

impl StopSignal {
    pub fn install() -> StopSignal {
        let (tx, rx) = watch::channel(false);
        tokio::spawn(async move {
            let ctrl_c = async {
                let _ = tokio::signal::ctrl_c().await;
            };
            let term = async {
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(mut s) => {
                        s.recv().await;
                    }
                    Err(_) => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = ctrl_c => {}
                _ = term => {}
            }
            let _ = tx.send(true);
        });
        StopSignal(rx)
    }

    pub fn stopped(&self) -> bool {
        *self.0.borrow()
    }
}

/// Controller loop period; the view and the timeline advance once a second.
const TICK: Duration = Duration::from_millis(250);

pub async fn run_once(
    args: &DemoArgs,
    policy: PolicyName,
    plan: &Plan,
    stop: &StopSignal,
) -> Result<RunSummary, DemoError> {
    let settings = Settings {
        grpc_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        engine: keda_gpu_scaler::engine::EngineSettings {
            sample_interval: Duration::from_secs(1),
            max_staleness: Duration::from_secs(30),
            // Superseded endpoint lists are dropped soon after the replica set changes.
            entry_ttl: Duration::from_secs(20),
            ..Default::default()
        },
        sources: keda_gpu_scaler::sources::SourceSettings {
            scrape_timeout: Duration::from_millis(800),
            // Every replica and Prometheus run on this machine.
            egress: keda_gpu_scaler::egress::EgressPolicy::loopback(),
            ..Default::default()
        },
        ..Settings::default()
    };
    // Started first and dropped last (killed, reaped, storage removed): after the replicas on a
    // normal end, and on an interrupt, an error or a panic alike.
    let mut prometheus = match args.prometheus {
        true => Some(
            DemoPrometheus::start(
                &prom::find_binary(args.prometheus_bin.as_deref())?,
                &args.out.join(format!("prometheus-{policy}.log")),
            )
            .await?,
        ),
        false => None,
    };
    let running = keda_gpu_scaler::server::start(&settings).await?;
    let (program, leading_args) = match &args.workload_bin {
        Some(p) => (p.clone(), Vec::new()),
        None => (
            std::env::current_exe().map_err(|source| DemoError::Io {
                path: "current executable".into(),
                source,
            })?,
            vec!["workload-replica".to_string()],
        ),
    };
    let pool = Pool::new(ReplicaConfig {
        program,
        leading_args,
        max_concurrency: args.replica_concurrency,
        queue_capacity: args.queue_capacity,
        cold_start: Duration::from_secs_f64(args.cold_start),
        drain_timeout: Duration::from_secs(12),
        spare_busy: args.pod_deletion_cost,
        log: Some(args.out.join(format!("replicas-{policy}.log"))),
    });
    let result = drive(
        args,
        policy,
        plan,
        stop,
        &running,
        pool,
        prometheus.as_mut(),
    )
    .await;
    running.stop().await;
    drop(prometheus);
    result
}

/// One run after the scaler and the pool exist: pre-roll, KEDA's trigger, the load, the loop,
/// the summary. Each phase is a function below; this one only says their order.
async fn drive(
    args: &DemoArgs,
    policy: PolicyName,
    plan: &Plan,
    stop: &StopSignal,
    running: &keda_gpu_scaler::server::Running,
    mut pool: Pool,
    mut prometheus: Option<&mut DemoPrometheus>,
) -> Result<RunSummary, DemoError> {
    let mut view = View::new(args.plain, policy, plan.duration());
    let controller = Controller::new(
        policy,
        args.min_replicas,
        args.max_replicas,
        args.time_scale,
    )
    .ok_or_else(|| DemoError::Arg {
        name: "--policy",
        message: format!("{policy} cannot run live"),
    })?;
    let ready_after_s = pre_roll(
        args,
        policy,
        stop,
        &mut pool,
        &mut view,
        prometheus.as_deref_mut(),
    )
    .await?;
    let keda = connect_keda(args, running, &pool, prometheus.as_deref()).await?;
    let load = Load::start(args, plan, &pool);
    let mut live = Live {
        args,
        policy,
        plan,
        running,
        pool,
        prometheus,
        view,
        controller,
        keda,
        load,
        cpu_window: Duration::from_secs_f64((15.0 / args.time_scale).max(1.0)),
        last: Last::default(),
        tally: Tally {
            ready_after_s,
            ..Tally::default()
        },
        next_sample: 1.0,
    };
    let interrupted = live.run(stop).await?;
    live.finish(interrupted).await
}

/// The Deployment exists with its minimum replicas before the load starts, so the run's time
/// zero is the first request and not a cold start. Returns each replica's time to ready.
async fn pre_roll(
    args: &DemoArgs,
    policy: PolicyName,
    stop: &StopSignal,
    pool: &mut Pool,
    view: &mut View,
    mut prometheus: Option<&mut DemoPrometheus>,
) -> Result<Vec<f64>, DemoError> {
    pool.scale(args.min_replicas)?;
    let mut ready_after_s: Vec<f64> = Vec::new();
    let warm_deadline = Instant::now() + Duration::from_secs_f64(args.cold_start + 60.0);
    while pool.ready() < args.min_replicas {
        if stop.stopped() {
            pool.shutdown(Duration::from_secs(5)).await;
            return Err(DemoError::Interrupted);
        }
        // A replica that never answers /readyz (a wrong --workload-bin, say) must not hang the
        // demo; its log says why.
        if Instant::now() > warm_deadline {
            return Err(DemoError::Arg {
                name: "--workload-bin",
                message: format!(
                    "no replica became ready within {:.0} s; see {}",
                    args.cold_start + 60.0,
                    args.out.join(format!("replicas-{policy}.log")).display()
                ),
            });
        }
        for e in pool.tick().await? {
            if let PoolEvent::Ready { after_s, .. } = e {
                ready_after_s.push(after_s);
            }
            view.event(0.0, &e);
        }
        if let Some(p) = prometheus.as_deref_mut() {
            p.set_targets(pool.live_targets())?;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(ready_after_s)
}

/// KEDA's side of the ScaledObject, built once the first replicas are ready: with the scrape
/// source the trigger lists their endpoints (and is rebuilt as they change); through Prometheus
/// it names a pod selector instead and never changes.
async fn connect_keda(
    args: &DemoArgs,
    running: &keda_gpu_scaler::server::Running,
    pool: &Pool,
    prometheus: Option<&DemoPrometheus>,
) -> Result<KedaSide, DemoError> {
    let metadata = control::composite_metadata(
        args.replica_concurrency,
        args.slo_ms / 1000.0,
        args.max_replicas,
        args.time_scale,
    );
    match prometheus {
        Some(p) => {
            let metadata = prom::trigger_metadata(metadata, &p.url());
            let mut keda = KedaSide::connect(running.grpc_addr, metadata).await?;
            keda.build_fixed().await?;
            Ok(keda)
        }
        None => {
            let mut keda = KedaSide::connect(running.grpc_addr, metadata).await?;
            keda.set_endpoints(pool.live_metrics_urls()).await?;
            Ok(keda)
        }
    }
}

/// The load generator and what it shares with the loop: the balancer (which replicas take
/// traffic), the recorder (every request's outcome) and `start`, the run's time zero.
struct Load {
    balancer: Arc<Balancer>,
    recorder: Arc<Recorder>,
    start: Instant,
    task: JoinHandle<()>,
}

impl Load {
    /// Starts the plan's arrivals against the ready replicas; the clock starts with them.
    fn start(args: &DemoArgs, plan: &Plan, pool: &Pool) -> Load {
        let balancer = Arc::new(Balancer::default());
        balancer.set(pool.ready_addrs());
        let recorder = Arc::new(Recorder::default());
        let start = Instant::now();
        let task = tokio::spawn(load::run(
            plan.clone(),
            LoadConfig {
                work_ms: args.work_ms,
                timeout: Duration::from_secs(10),
                max_outstanding: 512,
                seed: args.seed,
            },
            balancer.clone(),
            recorder.clone(),
            start,
        ));
        Load {
            balancer,
            recorder,
            start,
            task,
        }
    }
}

/// What the scaler, KEDA and the HPA said last: kept between their polls for the timeline.
#[derive(Default)]
struct Last {
    answer: Option<f64>,
    active: Option<bool>,
    recommended: Option<u32>,
}

/// Counted during the run for the summary (besides the recorder's requests).
#[derive(Default)]
struct Tally {
    timeline: Vec<Sample>,
    events: Vec<ScaleEvent>,
    /// Each replica's highest `requests_total`: what it served even after it is gone.
    served: BTreeMap<u32, f64>,
    requests_cut: f64,
    ready_after_s: Vec<f64>,
    pushes: u32,
    rpc_errors: u32,
}

/// The run while the load plays: everything the loop steps each tick.
struct Live<'a> {
    args: &'a DemoArgs,
    policy: PolicyName,
    plan: &'a Plan,
    running: &'a keda_gpu_scaler::server::Running,
    pool: Pool,
    prometheus: Option<&'a mut DemoPrometheus>,
    view: View,
    controller: Controller,
    keda: KedaSide,
    load: Load,
    /// The CPU HPA's averaging window (metrics-server's 15 s, scaled).
    cpu_window: Duration,
    last: Last,
    tally: Tally,
    next_sample: f64,
}

impl Live<'_> {
    /// Steps every TICK until the plan ends (`Ok(false)`) or a stop signal (`Ok(true)`). Each
    /// tick runs in a cluster's order: the replica set changes, then KEDA and the HPA look at it,
    /// then their decision is applied; once a second the timeline gets a sample.
    async fn run(&mut self, stop: &StopSignal) -> Result<bool, DemoError> {
        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            if stop.stopped() {
                return Ok(true);
            }
            let now = self.load.start.elapsed().as_secs_f64();
            if now >= self.plan.duration() {
                return Ok(false);
            }
            self.step_pool(now).await?;
            let scale_to = self.keda_poll(now).await;
            let scale_to = self.hpa_sync(now, scale_to).await;
            self.scale(now, scale_to)?;
            if now >= self.next_sample {
                self.next_sample += 1.0;
                self.record(now);
            }
        }
    }

    /// Replicas start, become ready, drain and exit; the balancer, KEDA's endpoint list and
    /// Prometheus's targets follow, as a Service, KEDA and service discovery would.
    async fn step_pool(&mut self, now: f64) -> Result<(), DemoError> {
        for e in self.pool.tick().await? {
            match e {
                PoolEvent::Killed { cut, .. } => self.tally.requests_cut += cut,
                PoolEvent::Ready { after_s, .. } => self.tally.ready_after_s.push(after_s),
                _ => {}
            }
            self.view.event(now, &e);
        }
        for r in &self.pool.replicas {
            if let Some(m) = r.metrics {
                let e = self.tally.served.entry(r.id).or_default();
                *e = e.max(m.requests_total);
            }
        }
        self.load.balancer.set(self.pool.ready_addrs());
        self.keda
            .set_endpoints(self.pool.live_metrics_urls())
            .await?;
        if let Some(p) = self.prometheus.as_deref_mut() {
            p.set_targets(self.pool.live_targets())?;
        }
        Ok(())
    }

    /// KEDA's activation check when its polling interval is due or the scaler pushed. A pushed
    /// `true` makes KEDA check the ScaledObject at once instead of at the next polling interval
    /// (its external-push path). Without KEDA (cpu-hpa) IsActive is still asked at each HPA sync,
    /// only for the display. A failed call counts as an RPC error and keeps the last answer.
    async fn keda_poll(&mut self, now: f64) -> Option<(u32, Writer)> {
        let mut pushed = false;
        while let Ok(active) = self.keda.pushes.try_recv() {
            self.tally.pushes += 1;
            pushed |= active;
        }
        let plain_hpa_display = self.controller.keda.is_none() && self.controller.hpa_due(now);
        if !(pushed || self.controller.keda_due(now) || plain_hpa_display) {
            return None;
        }
        match self.keda.is_active().await {
            Ok(a) => self.last.active = Some(a),
            Err(_) => self.tally.rpc_errors += 1,
        }
        let active = pushed || self.last.active == Some(true);
        let n = self.controller.keda_poll(now, active, self.pool.live())?;
        let by = if pushed {
            Writer::KedaPush
        } else {
            Writer::Keda
        };
        Some((n, by))
    }

    /// The HPA's sync when due, on top of what KEDA just wrote (`scale_to`): the scaler's
    /// GetMetrics answer for the composite, the replicas' CPU for the cpu-hpa baseline. Returns
    /// the replica count to write, if any.
    async fn hpa_sync(
        &mut self,
        now: f64,
        mut scale_to: Option<(u32, Writer)>,
    ) -> Option<(u32, Writer)> {
        if !self.controller.hpa_due(now) {
            return scale_to;
        }
        let answer = self.keda.get_metrics().await;
        if answer.is_err() {
            self.tally.rpc_errors += 1;
        }
        self.last.answer = answer.as_ref().ok().copied();
        let reading = match self.policy {
            PolicyName::CpuHpa => Reading::Cpu {
                target_pct: CPU_HPA_TARGET_PCT,
                pods: self
                    .pool
                    .replicas
                    .iter()
                    .filter(|r| r.is_live())
                    .map(|r| {
                        let ready = r.phase == ReplicaPhase::Ready;
                        PodMetric {
                            ready,
                            // CPU request: one core (a replica runs one compute thread).
                            value: if ready {
                                r.cpu_pct(self.cpu_window)
                            } else {
                                None
                            },
                        }
                    })
                    .collect(),
            },
            _ => Reading::External {
                value: answer.ok(),
                target: self.keda.target,
            },
        };
        let current = scale_to.map_or(self.pool.live(), |(n, _)| n);
        if let Some(out) = self
            .controller
            .hpa_sync(now, current, self.pool.ready(), reading)
        {
            self.last.recommended = Some(out.recommended);
            if out.desired != current {
                scale_to = Some((out.desired, Writer::Hpa));
            }
        }
        scale_to
    }

    /// Writes the replica count as the ReplicaSet would take it; a write that changes nothing
    /// is not an event.
    fn scale(&mut self, now: f64, scale_to: Option<(u32, Writer)>) -> Result<(), DemoError> {
        let Some((n, by)) = scale_to else {
            return Ok(());
        };
        let from = self.pool.live();
        if n != from {
            self.pool.scale(n)?;
            let e = ScaleEvent {
                t: now,
                from,
                to: n,
                by,
            };
            self.view.scaled(&e);
            self.tally.events.push(e);
        }
        Ok(())
    }

    /// One timeline sample, shown and kept.
    fn record(&mut self, now: f64) {
        let sample = sample(
            now,
            self.plan,
            &self.pool,
            &self.running.engine,
            self.keda.metadata(),
            &self.load.recorder,
            self.last.answer,
            self.last.active,
            self.last.recommended,
            self.cpu_window,
        );
        self.view.render(&sample, &self.pool);
        self.tally.timeline.push(sample);
    }

    /// Stops everything this run started, then builds the summary (unless interrupted). The
    /// load ends with the plan and its open requests finish (bounded by their timeout); on an
    /// interrupt they are cut. Leftover processes are counted after the pool and Prometheus are
    /// stopped, so the summary can say none survived.
    async fn finish(self, interrupted: bool) -> Result<RunSummary, DemoError> {
        let Live {
            args,
            policy,
            plan,
            mut pool,
            prometheus,
            keda,
            load,
            tally,
            ..
        } = self;
        if interrupted {
            load.task.abort();
        }
        let _ = load.task.await;
        pool.shutdown(Duration::from_secs(5)).await;
        let pids = pool.pids.clone();
        drop(pool);
        if interrupted {
            return Err(DemoError::Interrupted);
        }
        let (prometheus_pid, prometheus_queries) = match prometheus {
            Some(p) => {
                let queries = p.queries_served().await;
                p.stop();
                (Some(p.pid()), queries)
            }
            None => (None, None),
        };
        let left = pids
            .iter()
            .chain(&prometheus_pid)
            .filter(|p| process_exists(**p))
            .count();
        Ok(summary::build(summary::Inputs {
            args,
            policy,
            plan,
            timeline: tally.timeline,
            events: tally.events,
            records: load.recorder.snapshot(),
            ready_after_s: tally.ready_after_s,
            served: tally.served,
            requests_cut: tally.requests_cut,
            pids,
            children_left: left,
            pushes: tally.pushes,
            trigger_rebuilds: keda.rebuilds,
            rpc_errors: tally.rpc_errors,
            source: keda
                .metadata()
                .get("source")
                .map_or("scrape", |s| s.as_str())
                .to_string(),
            prometheus_pid,
            prometheus_queries,
        }))
    }
}

fn process_exists(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[allow(clippy::too_many_arguments)]
fn sample(
    now: f64,
    plan: &Plan,
    pool: &Pool,
    engine: &Engine,
    metadata: HashMap<String, String>,
    recorder: &Recorder,
    answer: Option<f64>,
    active: Option<bool>,
    recommended: Option<u32>,
    cpu_window: Duration,
) -> Sample {
    // The scaler's decision for the trigger as KEDA currently sends it (what
    // /debug/scaledobjects shows); superseded endpoint lists linger until their TTL.
    let entry = engine
        .entry(EntryKey::new(
            super::keda::NAMESPACE.into(),
            super::keda::NAME.into(),
            metadata,
        ))
        .ok();
    let decision = entry.as_ref().and_then(|e| e.state().decision);
    let (n_window, ok_window, p95) = recorder.window(now, 5.0);
    let ready: Vec<_> = pool
        .replicas
        .iter()
        .filter(|r| r.phase == ReplicaPhase::Ready)
        .collect();
    let utils: Vec<f64> = ready
        .iter()
        .filter_map(|r| r.metrics.map(|m| m.utilization_pct))
        .collect();
    let cpus: Vec<f64> = ready.iter().filter_map(|r| r.cpu_pct(cpu_window)).collect();
    let mean = |v: &[f64]| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
    Sample {
        t: (now * 10.0).round() / 10.0,
        phase: plan.at(now).1.name.clone(),
        rate: plan.at(now).1.rate,
        replicas: pool.live(),
        ready: pool.ready(),
        scaler_desired: answer,
        source: entry
            .as_ref()
            .filter(|_| decision.is_some())
            .map(|e| e.spec.source.kind().to_string()),
        active,
        scaler_active: decision.as_ref().map(|d| d.active),
        hpa_recommended: recommended,
        composite_raw: decision.as_ref().map(|d| d.composite_raw),
        composite_smoothed: decision.as_ref().map(|d| d.composite_smoothed),
        limiting: decision.as_ref().and_then(|d| d.limiting.clone()),
        signals: decision
            .as_ref()
            .map(|d| {
                d.signals
                    .iter()
                    .map(|s| SignalSample {
                        name: s.name.clone(),
                        value: s.value,
                        demand: s.smoothed_demand,
                    })
                    .collect()
            })
            .unwrap_or_default(),
        completed_per_s: n_window as f64 / 5.0,
        ok_per_s: ok_window as f64 / 5.0,
        p95_ms: p95.map(|s| s * 1000.0),
        util_mean: mean(&utils),
        util_max: utils.iter().copied().reduce(f64::max),
        cpu_mean: mean(&cpus),
        inflight: ready
            .iter()
            .filter_map(|r| r.metrics.map(|m| m.inflight))
            .sum(),
        queue: ready
            .iter()
            .filter_map(|r| r.metrics.map(|m| m.queue))
            .sum(),
        outstanding: recorder.outstanding(),
    }
}
