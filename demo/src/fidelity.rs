//! How far to trust the simulator: a live run replayed through `keda-gpu-sim` under the live
//! run's own conditions, and its replica-seconds and SLO attainment set against the live ones.
//!
//! The replay stretches the demo back to Kubernetes' time: every demo second is `time_scale`
//! simulated seconds, so the simulator's own KEDA and HPA timings (15 s sync, 30 s polling,
//! 300 s cooldown) and the trigger's undivided half-lives are exactly the demo's divided ones.
//! Arrivals are the recorded send times; a request costs the replicas' measured service time;
//! a replica is ready after the measured creation-to-ready time (cold start plus process start);
//! the SLO is the demo's (a request meets it when answered 200 within `slo_ms`, over all sent).

use std::fmt::Write;
use std::path::Path;

use keda_gpu_sim::cluster::ClusterConfig;
use keda_gpu_sim::cost::CostModel;
use keda_gpu_sim::policy::{CompositeHpa, PolicyName, Setup};
use keda_gpu_sim::replay::{self, SimConfig};
use keda_gpu_sim::trace::{Request, Trace};

use super::control;
use super::load::Record;
use super::summary::{self, RunSummary};
use super::DemoError;

/// The bounds: predicted replica-seconds within 15 % of the live run's, SLO attainment
/// within 5 points.
pub const REPLICA_SECONDS_BOUND: f64 = 0.15;
pub const ATTAINMENT_BOUND_POINTS: f64 = 5.0;

/// The demo client's request timeout (`run::run_once`'s `LoadConfig`), wall seconds.
const CLIENT_TIMEOUT_S: f64 = 10.0;
/// A draining replica's grace period (`run::run_once`'s `ReplicaConfig::drain_timeout`).
const DRAIN_TIMEOUT_S: f64 = 12.0;
/// The scaler's sample interval in the demo (`run::run_once`'s `Settings`), wall seconds.
const SAMPLE_INTERVAL_S: f64 = 1.0;

/// What the replay takes from the live run's own measurements, in demo (wall) seconds.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Measured {
    /// Service time of one request: the median latency of successful requests sent in the
    /// plan's quietest phases, where almost none waits.
    pub service_s: f64,
    /// Median seconds from a replica's creation to ready (`--cold-start` plus process start).
    pub ready_after_s: f64,
    /// A replica's CPU, percent of one core, as `[idle, busy]`: `idle + busy x utilisation`,
    /// fitted by least squares to the run's per-second means over the ready replicas (what the
    /// CPU HPA reads), over every second.
    pub cpu_line_all: [f64; 2],
    /// The same fit over the seconds in which the replicas together used under 3/4 of
    /// `node_cpu_cores`, where no replica was short of CPU.
    pub cpu_line_unsaturated: [f64; 2],
    /// The most CPU the replicas used together in any second, cores: what the host left them.
    pub node_cpu_cores: f64,
}

/// What the replay models of the demo's machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Model {
    /// The simulator's cluster as it models any service: one unbounded gateway queue, every
    /// replica with a CPU of its own; the CPU line fitted over every second of the run.
    Cluster,
    /// The cluster plus what the demo's host does: each replica queues `--queue-capacity`
    /// requests and refuses more (503), and the replicas share the cores the host leaves them
    /// (`node_cpu_cores`); the CPU line fitted where they were not short of CPU.
    DemoHost,
}

impl Model {
    pub const ALL: [Model; 2] = [Model::Cluster, Model::DemoHost];

    pub fn as_str(self) -> &'static str {
        match self {
            Model::Cluster => "cluster",
            Model::DemoHost => "demo-host",
        }
    }
}

/// Everything a replay needs: the stretched trace and configuration, and the replicas it starts
/// with.
#[derive(Clone, Debug, PartialEq)]
pub struct Replay {
    pub policy: PolicyName,
    pub model: Model,
    pub time_scale: f64,
    pub measured: Measured,
    pub trace: Trace,
    pub cfg: SimConfig,
    pub initial: u32,
}

/// The service time, creation-to-ready time and CPU profile measured in a live run.
pub fn measure(run: &RunSummary, records: &[Record]) -> Measured {
    let lowest = run
        .plan
        .phases
        .iter()
        .map(|p| p.rate)
        .fold(f64::INFINITY, f64::min);
    let quiet = |t: f64| run.plan.at(t).1.rate <= lowest;
    let ok = |quiet_only: bool| {
        let mut v: Vec<f64> = records
            .iter()
            .filter(|r| r.ok() && (!quiet_only || quiet(r.sent_s)))
            .map(|r| r.latency_s)
            .collect();
        v.sort_by(f64::total_cmp);
        v
    };
    let quiet_ok = ok(true);
    let all_ok = if quiet_ok.is_empty() {
        ok(false)
    } else {
        quiet_ok
    };
    let service_s = median(&all_ok).unwrap_or(run.work_ms as f64 / 1000.0);
    let mut ready = run.ready_after_s.clone();
    ready.sort_by(f64::total_cmp);
    let ready_after_s = median(&ready).unwrap_or(run.cold_start_s);
    // (utilisation 0..1, CPU percent of one core, cores used by all ready replicas together)
    let points: Vec<(f64, f64, f64)> = run
        .timeline
        .iter()
        .filter_map(|s| {
            let (u, c) = (s.util_mean?, s.cpu_mean?);
            Some((u / 100.0, c, c / 100.0 * s.ready as f64))
        })
        .collect();
    let node_cpu_cores = points.iter().map(|p| p.2).fold(0.0, f64::max).max(0.1);
    let line = |below: f64| {
        let xy: Vec<(f64, f64)> = points
            .iter()
            .filter(|p| p.2 < below)
            .map(|p| (p.0, p.1))
            .collect();
        let (a, b) = fit_line(&xy).unwrap_or((0.0, 100.0));
        [a.max(0.0), b.max(0.0)]
    };
    Measured {
        service_s,
        ready_after_s,
        cpu_line_all: line(f64::INFINITY),
        cpu_line_unsaturated: line(0.75 * node_cpu_cores),
        node_cpu_cores,
    }
}

fn median(sorted: &[f64]) -> Option<f64> {
    (!sorted.is_empty()).then(|| sorted[sorted.len() / 2])
}

/// Least-squares `y = a + b x`; None with fewer than two distinct x.
fn fit_line(points: &[(f64, f64)]) -> Option<(f64, f64)> {
    let n = points.len() as f64;
    let (sx, sy) = points
        .iter()
        .fold((0.0, 0.0), |(a, b), &(x, y)| (a + x, b + y));
    let (mx, my) = (sx / n, sy / n);
    let (sxx, sxy) = points.iter().fold((0.0, 0.0), |(a, b), &(x, y)| {
        (a + (x - mx) * (x - mx), b + (x - mx) * (y - my))
    });
    (n >= 2.0 && sxx > 1e-9).then(|| (my - sxy / sxx * mx, sxy / sxx))
}

/// The simulator's replay of a live run: its arrivals, its replicas' measured costs, its
/// controllers and trigger, every time multiplied by the run's time scale.
pub fn replay_for(run: &RunSummary, records: &[Record], model: Model) -> Result<Replay, DemoError> {
    let policy: PolicyName = run.policy.parse().map_err(|message| DemoError::Arg {
        name: "--fidelity",
        message,
    })?;
    let k = run.time_scale;
    let measured = measure(run, records);
    let work_s = measured.service_s * k;
    let [cpu_idle_pct, cpu_full_batch_pct] = match model {
        Model::Cluster => measured.cpu_line_all,
        Model::DemoHost => measured.cpu_line_unsaturated,
    };
    let host = model == Model::DemoHost;
    let cost = CostModel {
        overhead_s: work_s,
        prefill_s_per_token: 0.0,
        decode_s_per_token: 0.0,
        batch: run.replica_concurrency,
        // Each job is a busy loop of `work_ms` of wall time, however many run at once.
        full_batch_slowdown: 1.0,
        cpu_idle_pct,
        cpu_full_batch_pct,
        queue_capacity: host.then_some(run.queue_capacity as u32),
        node_cpu_cores: host.then_some(measured.node_cpu_cores),
        ..CostModel::default()
    };
    let mut sent: Vec<f64> = records.iter().map(|r| r.sent_s * k).collect();
    sent.sort_by(f64::total_cmp);
    let requests = sent
        .into_iter()
        .map(|at| Request {
            at,
            work_s,
            kv_tokens: 0.0,
            // No prefill: the time-to-first-token histogram is then the queue wait, which is
            // what the demo's trigger reads (`workload_queue_wait_seconds`).
            prefill_s: 0.0,
            generated_tokens: 0.0,
        })
        .collect();
    let slo_s = run.slo_ms / 1000.0 * k;
    // The demo's trigger, with its time constants undivided (the simulator runs at k x).
    let mut overrides: Vec<(String, String)> = vec![
        ("ttftObjectiveMs".into(), String::new()),
        ("attainment".into(), String::new()),
    ];
    let mut metadata: Vec<(String, String)> =
        control::composite_metadata(run.replica_concurrency, slo_s, run.max_replicas, 1.0)
            .into_iter()
            .collect();
    metadata.sort();
    overrides.extend(metadata);
    let cfg = SimConfig {
        cluster: ClusterConfig {
            cost,
            cold_start_s: measured.ready_after_s * k,
            timeout_s: CLIENT_TIMEOUT_S * k,
            slo_s,
            ttft_slo_s: slo_s,
            tpot_slo_s: 1.0,
            grace_s: DRAIN_TIMEOUT_S * k,
            remove_by_remaining_work: false,
        },
        setup: Setup {
            max_replicas: run.max_replicas,
            slo_s,
            slo_is_ttft: false,
            cold_start_s: measured.ready_after_s * k,
            min_replicas: run.min_replicas,
            composite_overrides: overrides,
            composite_hpa: CompositeHpa::Recommended,
            batch: run.replica_concurrency,
            scrape_s: (SAMPLE_INTERVAL_S * k).round().max(1.0),
            capacity_factor: 1.0,
        },
        policies: vec![policy],
        threads: 1,
        record_requests: true,
        record_decisions: false,
    };
    Ok(Replay {
        policy,
        model,
        time_scale: k,
        measured,
        trace: Trace {
            requests,
            duration_s: run.duration_s * k,
            source: format!("keda-gpu-demo {} run, x{k}", run.policy),
        },
        cfg,
        initial: run.min_replicas.max(1),
    })
}

/// Replica-seconds and SLO attainment (0..1) of one run.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Outcome {
    pub replica_seconds: f64,
    pub slo_attainment: f64,
}

/// One phase of the plan, live against predicted.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct PhaseRow {
    pub name: String,
    pub start_s: f64,
    pub requests: usize,
    pub live: Outcome,
    pub predicted: Outcome,
}

/// Replicas over time, live against predicted, every simulated HPA sync period (demo seconds).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Point {
    pub t: f64,
    pub live_replicas: u32,
    pub live_ready: u32,
    pub predicted_replicas: u32,
    pub predicted_ready: u32,
}

/// A live run against its replay.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Prediction {
    pub policy: String,
    pub model: Model,
    pub measured: Measured,
    pub live: Outcome,
    pub predicted: Outcome,
    /// Predicted over live replica-seconds.
    pub replica_seconds_ratio: f64,
    /// Predicted minus live attainment, percentage points.
    pub attainment_diff_points: f64,
    pub within_bounds: bool,
    pub phases: Vec<PhaseRow>,
    pub timeline: Vec<Point>,
}

/// Replays a live run under `model` and sets the prediction against it.
pub fn predict(
    run: &RunSummary,
    records: &[Record],
    model: Model,
) -> Result<Prediction, DemoError> {
    let r = replay_for(run, records, model)?;
    let k = r.time_scale;
    let sim = replay::replay_one(&r.trace, &r.cfg, r.policy, &[], r.initial).map_err(|e| {
        DemoError::Arg {
            name: "--fidelity",
            message: e.to_string(),
        }
    })?;
    let horizon = r.trace.duration_s.ceil().max(1.0);
    let o = &sim.outcomes;
    let predicted = Outcome {
        replica_seconds: sim.replicas_mean * horizon / k,
        slo_attainment: share(o.within_slo as usize, o.arrived as usize),
    };
    let live = Outcome {
        replica_seconds: run.replica_seconds,
        slo_attainment: run.slo_attainment,
    };
    let replica_seconds_ratio = predicted.replica_seconds / live.replica_seconds.max(1e-9);
    let attainment_diff_points = 100.0 * (predicted.slo_attainment - live.slo_attainment);
    let within_bounds = (replica_seconds_ratio - 1.0).abs() <= REPLICA_SECONDS_BOUND
        && attainment_diff_points.abs() <= ATTAINMENT_BOUND_POINTS;

    let live_at = |t: f64| {
        run.timeline
            .iter()
            .min_by(|a, b| (a.t - t).abs().total_cmp(&(b.t - t).abs()))
    };
    let timeline: Vec<Point> = sim
        .timeline
        .iter()
        .map(|s| {
            let t = s.t / k;
            let l = live_at(t);
            Point {
                t,
                live_replicas: l.map_or(0, |l| l.replicas),
                live_ready: l.map_or(0, |l| l.ready),
                predicted_replicas: s.replicas,
                predicted_ready: s.ready,
            }
        })
        .collect();

    let starts = run.plan.starts();
    let met: Vec<f64> = o
        .requests
        .iter()
        .flatten()
        .filter(|q| q.met_slo)
        .map(|q| q.arrived_s / k)
        .collect();
    let phases = run
        .plan
        .phases
        .iter()
        .zip(&starts)
        .map(|(p, &start)| {
            let end = start + p.secs;
            let inside = |t: f64| t >= start && t < end;
            let sent: Vec<&Record> = records.iter().filter(|q| inside(q.sent_s)).collect();
            let live_met = sent
                .iter()
                .filter(|q| q.ok() && q.latency_s <= run.slo_ms / 1000.0)
                .count();
            let predicted_met = met.iter().filter(|&&t| inside(t)).count();
            let live_rs: f64 = run
                .timeline
                .iter()
                .filter(|s| inside(s.t - 0.5))
                .map(|s| s.replicas as f64)
                .sum();
            // The simulator's timeline has one point per 15 simulated seconds.
            let period = keda_gpu_sim::hpa::SYNC_PERIOD_S / k;
            let predicted_rs: f64 = sim
                .timeline
                .iter()
                .filter(|s| inside(s.t / k - period / 2.0))
                .map(|s| s.replicas as f64 * period)
                .sum();
            PhaseRow {
                name: p.name.clone(),
                start_s: start,
                requests: sent.len(),
                live: Outcome {
                    replica_seconds: live_rs,
                    slo_attainment: share(live_met, sent.len()),
                },
                predicted: Outcome {
                    replica_seconds: predicted_rs,
                    slo_attainment: share(predicted_met, sent.len()),
                },
            }
        })
        .collect();
    Ok(Prediction {
        policy: run.policy.clone(),
        model,
        measured: r.measured,
        live,
        predicted,
        replica_seconds_ratio,
        attainment_diff_points,
        within_bounds,
        phases,
        timeline,
    })
}

fn share(n: usize, of: usize) -> f64 {
    if of == 0 {
        1.0
    } else {
        n as f64 / of as f64
    }
}

/// Reads `demo-<policy>.json` and `requests-<policy>.csv` from `dir`.
pub fn load(dir: &Path, policy: &str) -> Result<RunSummary, DemoError> {
    let read = |name: String| {
        let path = dir.join(name);
        std::fs::read_to_string(&path)
            .map_err(|source| DemoError::Io {
                path: path.display().to_string(),
                source,
            })
            .map(|text| (path, text))
    };
    let (path, text) = read(format!("demo-{policy}.json"))?;
    let mut run: RunSummary = serde_json::from_str(&text).map_err(|e| DemoError::Arg {
        name: "--fidelity-from",
        message: format!("{}: {e}", path.display()),
    })?;
    let (path, text) = read(format!("requests-{policy}.csv"))?;
    run.records = summary::parse_requests_csv(&text).map_err(|e| DemoError::Arg {
        name: "--fidelity-from",
        message: format!("{}: {e}", path.display()),
    })?;
    Ok(run)
}

/// The live-against-predicted table, one row per run and model.
pub fn table(predictions: &[Prediction]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| policy | model | replica-seconds live / predicted | ratio | SLO attainment live / predicted | difference (points) | within 15 % and 5 points |"
    );
    let _ = writeln!(out, "| --- | --- | ---: | ---: | ---: | ---: | --- |");
    for p in predictions {
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} / {:.0} | {:.3} | {:.2} / {:.2} % | {:+.2} | {} |",
            p.policy,
            p.model.as_str(),
            p.live.replica_seconds,
            p.predicted.replica_seconds,
            p.replica_seconds_ratio,
            100.0 * p.live.slo_attainment,
            100.0 * p.predicted.slo_attainment,
            p.attainment_diff_points,
            if p.within_bounds { "yes" } else { "no" }
        );
    }
    out
}

/// Per phase of each run and model: requests, replica-seconds and attainment, live against
/// predicted; and what was measured.
pub fn details(predictions: &[Prediction]) -> String {
    let mut out = String::new();
    for p in predictions {
        let m = &p.measured;
        let _ = writeln!(
            out,
            "\n{} ({}): service {:.1} ms, creation to ready {:.2} s, CPU {:.1} % + {:.1} % x utilisation (all seconds) or {:.1} % + {:.1} % (unsaturated), replicas' cores at most {:.2}",
            p.policy,
            p.model.as_str(),
            1000.0 * m.service_s,
            m.ready_after_s,
            m.cpu_line_all[0],
            m.cpu_line_all[1],
            m.cpu_line_unsaturated[0],
            m.cpu_line_unsaturated[1],
            m.node_cpu_cores
        );
        let _ = writeln!(
            out,
            "| phase | from (s) | requests | replica-s live / predicted | SLO live / predicted |"
        );
        let _ = writeln!(out, "| --- | ---: | ---: | ---: | ---: |");
        for r in &p.phases {
            let _ = writeln!(
                out,
                "| {} | {:.0} | {} | {:.0} / {:.0} | {:.1} / {:.1} % |",
                r.name,
                r.start_s,
                r.requests,
                r.live.replica_seconds,
                r.predicted.replica_seconds,
                100.0 * r.live.slo_attainment,
                100.0 * r.predicted.slo_attainment
            );
        }
    }
    out
}

/// `fidelity.json` (every prediction with its timeline) and `fidelity.md` (the tables).
pub fn write(dir: &Path, predictions: &[Prediction]) -> Result<(), DemoError> {
    let io = |path: std::path::PathBuf, text: String| {
        std::fs::write(&path, text).map_err(|source| DemoError::Io {
            path: path.display().to_string(),
            source,
        })
    };
    let json = serde_json::to_string_pretty(predictions).expect("predictions serialise");
    io(dir.join("fidelity.json"), json + "\n")?;
    io(
        dir.join("fidelity.md"),
        format!("{}{}", table(predictions), details(predictions)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A recorded 20-second cpu-hpa run (`keda-gpu-demo --policy cpu-hpa --duration 20`).
    fn recorded() -> RunSummary {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/short-cpu-hpa");
        load(&dir, "cpu-hpa").unwrap()
    }

    #[test]
    fn a_recorded_run_loads_with_its_requests() {
        let run = recorded();
        assert_eq!(run.policy, "cpu-hpa");
        assert_eq!(run.records.len(), run.requests);
        assert_eq!((run.time_scale, run.queue_capacity), (10.0, 16));
        assert_eq!(run.ready_after_s.len(), run.replicas_started);
        // What the demo writes reads back as it was (the requests go to their own CSV).
        let json = serde_json::to_string(&run).unwrap();
        let back: RunSummary = serde_json::from_str(&json).unwrap();
        assert_eq!(back.records, Vec::new());
        assert_eq!(
            back,
            RunSummary {
                records: Vec::new(),
                ..run.clone()
            }
        );
        let e = load(Path::new("/nonexistent"), "cpu-hpa").unwrap_err();
        assert!(e.to_string().contains("demo-cpu-hpa.json"), "{e}");
    }

    #[test]
    fn the_replay_is_the_run_stretched_by_its_time_scale() {
        let run = recorded();
        let r = replay_for(&run, &run.records, Model::DemoHost).unwrap();
        let m = &r.measured;
        assert_eq!(r.policy, PolicyName::CpuHpa);
        // Every recorded arrival, in order, at ten times its time.
        let mut sent: Vec<f64> = run.records.iter().map(|q| q.sent_s).collect();
        sent.sort_by(f64::total_cmp);
        assert_eq!(r.trace.requests.len(), sent.len());
        for (q, s) in r.trace.requests.iter().zip(&sent) {
            assert_eq!(q.at, s * 10.0);
            assert_eq!((q.work_s, q.prefill_s), (m.service_s * 10.0, 0.0));
        }
        assert_eq!(r.trace.duration_s, 200.0);
        // The median creation-to-ready time of the four replicas, stretched.
        assert_eq!(m.ready_after_s, 3.499453231);
        let c = &r.cfg.cluster;
        assert_eq!(c.cold_start_s, m.ready_after_s * 10.0);
        assert_eq!((c.slo_s, c.timeout_s, c.grace_s), (5.0, 100.0, 120.0));
        assert_eq!((c.cost.batch, c.cost.full_batch_slowdown), (1, 1.0));
        assert_eq!(c.cost.queue_capacity, Some(16));
        assert_eq!(c.cost.node_cpu_cores, Some(m.node_cpu_cores));
        assert_eq!(c.cost.cpu_full_batch_pct, m.cpu_line_unsaturated[1]);
        let s = &r.cfg.setup;
        assert_eq!((s.min_replicas, s.max_replicas, s.scrape_s), (1, 6, 10.0));
        assert_eq!(r.initial, 1);
        // The plain cluster: no queue limit, no shared cores, the CPU line over every second.
        let plain = replay_for(&run, &run.records, Model::Cluster).unwrap();
        let cost = &plain.cfg.cluster.cost;
        assert_eq!((cost.queue_capacity, cost.node_cpu_cores), (None, None));
        assert_eq!(cost.cpu_full_batch_pct, m.cpu_line_all[1]);
        assert_eq!(plain.trace, r.trace);
    }

    #[test]
    fn the_replayed_trigger_is_the_demos_with_its_times_undivided() {
        let run = recorded();
        let r = replay_for(&run, &run.records, Model::DemoHost).unwrap();
        let s = &r.cfg.setup;
        let sim: std::collections::HashMap<String, String> =
            keda_gpu_sim::policy::composite_metadata(
                s.batch,
                s.slo_s,
                s.max_replicas,
                s.capacity_factor,
                &s.composite_overrides,
            )
            .into_iter()
            .collect();
        let mut live = control::composite_metadata(1, 0.5, 6, 10.0);
        live.insert("endpoints".into(), sim["endpoints"].clone());
        let (sim, live) = (
            keda_gpu_scaler::spec::parse(&sim).unwrap(),
            keda_gpu_scaler::spec::parse(&live).unwrap(),
        );
        assert!(
            sim.objective.is_none() && live.objective.is_none(),
            "target mode"
        );
        assert_eq!(sim.signals.len(), live.signals.len());
        assert_eq!(
            sim.smoothing.up_half_life_s,
            10.0 * live.smoothing.up_half_life_s
        );
        assert_eq!(
            sim.smoothing.down_half_life_s,
            10.0 * live.smoothing.down_half_life_s
        );
        assert_eq!(sim.latency_window_s, 10.0 * live.latency_window_s);
        assert_eq!(sim.limits, live.limits);
    }

    #[test]
    fn the_service_time_is_the_quiet_median_and_the_cpu_line_a_least_squares_fit() {
        let run = recorded();
        let m = measure(&run, &run.records);
        // 100 ms of work plus the HTTP round trip.
        assert!((0.1..0.15).contains(&m.service_s), "{m:?}");
        assert!(m.node_cpu_cores > 0.0 && m.node_cpu_cores <= 2.5, "{m:?}");
        let (a, b) = fit_line(&[(0.0, 2.0), (0.5, 42.0), (1.0, 82.0)]).unwrap();
        assert!((a - 2.0).abs() < 1e-9 && (b - 80.0).abs() < 1e-9);
        assert_eq!(fit_line(&[(0.5, 1.0), (0.5, 2.0)]), None);
    }

    #[test]
    fn a_prediction_is_deterministic_and_accounts_for_every_request() {
        let run = recorded();
        let p = predict(&run, &run.records, Model::DemoHost).unwrap();
        assert_eq!(p, predict(&run, &run.records, Model::DemoHost).unwrap());
        assert_eq!(p.live.replica_seconds, run.replica_seconds);
        assert!((0.0..=1.0).contains(&p.predicted.slo_attainment));
        assert!(p.predicted.replica_seconds >= 20.0, "{p:?}");
        let requests: usize = p.phases.iter().map(|r| r.requests).sum();
        assert_eq!(requests, run.records.len());
        assert_eq!(
            p.within_bounds,
            (p.replica_seconds_ratio - 1.0).abs() <= 0.15 && p.attainment_diff_points.abs() <= 5.0
        );
        let t = table(&[p]);
        assert!(t.contains("| cpu-hpa | demo-host |"), "{t}");
    }
}
