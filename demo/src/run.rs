//! One live run: the scaler, the replica pool, KEDA + HPA and the load, stepped on the wall clock
//! until the plan ends or the user interrupts. Everything started here is stopped here: the pool
//! drains (and its Drop kills) every replica, the scaler is stopped, the load task is awaited.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

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
        sources: keda_gpu_scaler::signals::SourceSettings {
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
    let mut controller = Controller::new(
        policy,
        args.min_replicas,
        args.max_replicas,
        args.time_scale,
    )
    .ok_or_else(|| DemoError::Arg {
        name: "--policy",
        message: format!("{policy} cannot run live"),
    })?;

    // Pre-roll: the Deployment exists with its minimum replicas before the load starts.
    pool.scale(args.min_replicas)?;
    let mut ready_after_s: Vec<f64> = Vec::new();
    let warm_deadline = Instant::now() + Duration::from_secs_f64(args.cold_start + 60.0);
    while pool.ready() < args.min_replicas {
        if stop.stopped() {
            pool.shutdown(Duration::from_secs(5)).await;
            return Err(DemoError::Interrupted);
        }
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

    let metadata = control::composite_metadata(
        args.replica_concurrency,
        args.slo_ms / 1000.0,
        args.max_replicas,
        args.time_scale,
    );
    let mut keda = match prometheus.as_deref() {
        // A pod selector instead of an endpoint list: the trigger never changes.
        Some(p) => {
            let metadata = prom::trigger_metadata(metadata, &p.url());
            let mut keda = KedaSide::connect(running.grpc_addr, metadata).await?;
            keda.build_fixed().await?;
            keda
        }
        None => {
            let mut keda = KedaSide::connect(running.grpc_addr, metadata).await?;
            keda.set_endpoints(pool.live_metrics_urls()).await?;
            keda
        }
    };

    let balancer = Arc::new(Balancer::default());
    balancer.set(pool.ready_addrs());
    let recorder = Arc::new(Recorder::default());
    let start = Instant::now();
    let load = tokio::spawn(load::run(
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

    let cpu_window = Duration::from_secs_f64((15.0 / args.time_scale).max(1.0));
    let mut timeline: Vec<Sample> = Vec::new();
    let mut events: Vec<ScaleEvent> = Vec::new();
    let mut served: BTreeMap<u32, f64> = BTreeMap::new();
    let mut requests_cut = 0.0;
    let mut last_answer: Option<f64> = None;
    let mut last_active: Option<bool> = None;
    let mut last_recommended: Option<u32> = None;
    let mut pushes = 0u32;
    let mut rpc_errors = 0u32;
    let mut next_sample = 1.0;
    let mut interrupted = false;
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if stop.stopped() {
            interrupted = true;
            break;
        }
        let now = start.elapsed().as_secs_f64();
        if now >= plan.duration() {
            break;
        }
        for e in pool.tick().await? {
            match e {
                PoolEvent::Killed { cut, .. } => requests_cut += cut,
                PoolEvent::Ready { after_s, .. } => ready_after_s.push(after_s),
                _ => {}
            }
            view.event(now, &e);
        }
        for r in &pool.replicas {
            if let Some(m) = r.metrics {
                let e = served.entry(r.id).or_default();
                *e = e.max(m.requests_total);
            }
        }
        balancer.set(pool.ready_addrs());
        keda.set_endpoints(pool.live_metrics_urls()).await?;
        if let Some(p) = prometheus.as_deref_mut() {
            p.set_targets(pool.live_targets())?;
        }

        let mut scale_to: Option<(u32, Writer)> = None;
        // A pushed `true` makes KEDA check the ScaledObject at once instead of at the next
        // polling interval (its external-push path).
        let mut pushed = false;
        while let Ok(active) = keda.pushes.try_recv() {
            pushes += 1;
            pushed |= active;
        }
        let plain_hpa_display = controller.keda.is_none() && controller.hpa_due(now);
        if pushed || controller.keda_due(now) || plain_hpa_display {
            match keda.is_active().await {
                Ok(a) => last_active = Some(a),
                Err(_) => rpc_errors += 1,
            }
            let active = pushed || last_active == Some(true);
            if let Some(n) = controller.keda_poll(now, active, pool.live()) {
                let by = if pushed {
                    Writer::KedaPush
                } else {
                    Writer::Keda
                };
                scale_to = Some((n, by));
            }
        }
        if controller.hpa_due(now) {
            let answer = keda.get_metrics().await;
            if answer.is_err() {
                rpc_errors += 1;
            }
            last_answer = answer.as_ref().ok().copied();
            let reading = match policy {
                PolicyName::CpuHpa => Reading::Cpu {
                    target_pct: CPU_HPA_TARGET_PCT,
                    pods: pool
                        .replicas
                        .iter()
                        .filter(|r| r.is_live())
                        .map(|r| {
                            let ready = r.phase == ReplicaPhase::Ready;
                            PodMetric {
                                ready,
                                // CPU request: one core (a replica runs one compute thread).
                                value: if ready { r.cpu_pct(cpu_window) } else { None },
                            }
                        })
                        .collect(),
                },
                _ => Reading::External {
                    value: answer.ok(),
                    target: keda.target,
                },
            };
            let current = scale_to.map_or(pool.live(), |(n, _)| n);
            if let Some(out) = controller.hpa_sync(now, current, pool.ready(), reading) {
                last_recommended = Some(out.recommended);
                if out.desired != current {
                    scale_to = Some((out.desired, Writer::Hpa));
                }
            }
        }
        if let Some((n, by)) = scale_to {
            let from = pool.live();
            if n != from {
                pool.scale(n)?;
                let e = ScaleEvent {
                    t: now,
                    from,
                    to: n,
                    by,
                };
                view.scaled(&e);
                events.push(e);
            }
        }

        if now >= next_sample {
            next_sample += 1.0;
            let sample = sample(
                now,
                plan,
                &pool,
                &running.engine,
                keda.metadata(),
                &recorder,
                last_answer,
                last_active,
                last_recommended,
                cpu_window,
            );
            view.render(&sample, &pool);
            timeline.push(sample);
        }
    }

    // The load ends with the plan; its open requests finish (bounded by their timeout).
    if interrupted {
        load.abort();
    }
    let _ = load.await;
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
        timeline,
        events,
        records: recorder.snapshot(),
        ready_after_s,
        served,
        requests_cut,
        pids,
        children_left: left,
        pushes,
        trigger_rebuilds: keda.rebuilds,
        rpc_errors,
        source: keda
            .metadata()
            .get("source")
            .map_or("scrape", |s| s.as_str())
            .to_string(),
        prometheus_pid,
        prometheus_queries,
    }))
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
