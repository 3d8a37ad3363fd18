//! The research numbers of a run (pods, accelerator utilisation, latency, success, scaling
//! events), as a table for people, JSON for tools and an SVG timeline. Building and rendering are
//! pure; `write_*` puts the files under `--out`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

use super::control::Writer;
use super::load::{quantile, Record};
use super::plan::Plan;
use super::{DemoArgs, DemoError};
use keda_gpu_sim::policy::PolicyName;
use keda_gpu_sim::svg::{escape, nice_ceiling};

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SignalSample {
    pub name: String,
    /// The signal's reading (per-pod mean or total, as the scaler aggregates it).
    pub value: Option<f64>,
    /// Smoothed demand in replicas.
    pub demand: Option<f64>,
}

/// One second of the run.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Sample {
    pub t: f64,
    pub phase: String,
    /// Offered load, requests/s.
    pub rate: f64,
    /// Replicas of the Deployment (pending, starting, ready).
    pub replicas: u32,
    pub ready: u32,
    /// The scaler's last GetMetrics answer (desired replicas).
    pub scaler_desired: Option<f64>,
    /// The source of the scaler's current decision (`scrape`, `prometheus`), None before one.
    pub source: Option<String>,
    /// The scaler's last IsActive answer.
    pub active: Option<bool>,
    /// The scaler's own activation state at this second (what the next IsActive will answer).
    pub scaler_active: Option<bool>,
    pub hpa_recommended: Option<u32>,
    pub composite_raw: Option<f64>,
    pub composite_smoothed: Option<f64>,
    pub limiting: Option<String>,
    pub signals: Vec<SignalSample>,
    /// Requests completed per second over the last 5 s, and of those successful.
    pub completed_per_s: f64,
    pub ok_per_s: f64,
    /// p95 latency of successful requests completed in the last 5 s.
    pub p95_ms: Option<f64>,
    /// The ready replicas' own `workload_accelerator_utilization_percent`.
    pub util_mean: Option<f64>,
    pub util_max: Option<f64>,
    /// Ready replicas' CPU from /proc, percent of one core.
    pub cpu_mean: Option<f64>,
    pub inflight: f64,
    pub queue: f64,
    /// Requests the client has open.
    pub outstanding: usize,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ScaleEvent {
    pub t: f64,
    pub from: u32,
    pub to: u32,
    pub by: Writer,
}

/// Everything one run measured (read back by `fidelity` from `demo-<policy>.json`).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RunSummary {
    pub policy: String,
    pub duration_s: f64,
    pub time_scale: f64,
    pub cold_start_s: f64,
    pub work_ms: u64,
    pub slo_ms: f64,
    pub min_replicas: u32,
    pub max_replicas: u32,
    /// Requests a replica runs at once and queues before answering 503.
    #[serde(default = "one")]
    pub replica_concurrency: u32,
    #[serde(default = "default_queue_capacity")]
    pub queue_capacity: usize,
    /// Seed of the arrivals.
    #[serde(default)]
    pub seed: u64,
    pub plan: Plan,
    pub pods_min: u32,
    pub pods_max: u32,
    pub pods_mean: f64,
    pub ready_mean: f64,
    /// Replica-seconds (GPU-seconds on a GPU).
    pub replica_seconds: f64,
    pub util_mean: Option<f64>,
    pub util_max: Option<f64>,
    pub latency_mean_ms: Option<f64>,
    pub latency_p95_ms: Option<f64>,
    pub latency_max_ms: Option<f64>,
    pub requests: usize,
    pub ok: usize,
    pub success_rate: f64,
    /// Requests answered 200 within the SLO, over all requests.
    pub slo_attainment: f64,
    pub scale_ups: usize,
    pub scale_downs: usize,
    pub scaler_desired_max: Option<f64>,
    pub stream_pushes: u32,
    pub trigger_rebuilds: u32,
    pub rpc_errors: u32,
    pub replicas_started: usize,
    /// Seconds from each replica's creation to its first ready `/readyz` (the cold start plus
    /// the process's own start), in the order they became ready.
    #[serde(default)]
    pub ready_after_s: Vec<f64>,
    /// Requests each replica reported in its own `workload_requests_total`, by replica id.
    pub served_by_replica: BTreeMap<u32, f64>,
    /// Requests cut on scale-down: in service or queued (at the last scrape) on replicas killed
    /// when their drain timeout ran out.
    pub requests_cut: f64,
    /// Whether removal spared busy replicas (`--pod-deletion-cost`).
    pub pod_deletion_cost: bool,
    /// Replica processes still present after the run (must be 0).
    pub children_left: usize,
    pub pids: Vec<u32>,
    /// The trigger's source: `scrape`, or `prometheus` with `--prometheus`.
    pub source: String,
    /// The Prometheus process (`--prometheus`); counted in `children_left` if still present.
    pub prometheus_pid: Option<u32>,
    /// Queries Prometheus served (its own `prometheus_http_requests_total{handler=~"/api/v1/query.*"}`).
    pub prometheus_queries: Option<f64>,
    pub events: Vec<ScaleEvent>,
    pub timeline: Vec<Sample>,
    /// Every request as the client saw it; written to `requests-<policy>.csv`, not the JSON.
    #[serde(skip)]
    pub records: Vec<Record>,
}

fn one() -> u32 {
    1
}

/// What runs recorded before the field existed used (`--queue-capacity`'s default).
fn default_queue_capacity() -> usize {
    16
}

pub struct Inputs<'a> {
    pub args: &'a DemoArgs,
    pub policy: PolicyName,
    pub plan: &'a Plan,
    pub timeline: Vec<Sample>,
    pub events: Vec<ScaleEvent>,
    pub records: Vec<Record>,
    pub ready_after_s: Vec<f64>,
    pub served: BTreeMap<u32, f64>,
    pub requests_cut: f64,
    pub pids: Vec<u32>,
    pub children_left: usize,
    pub pushes: u32,
    pub trigger_rebuilds: u32,
    pub rpc_errors: u32,
    pub source: String,
    pub prometheus_pid: Option<u32>,
    pub prometheus_queries: Option<f64>,
}

fn mean(v: impl Iterator<Item = f64>) -> Option<f64> {
    let (s, n) = v.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    (n > 0).then(|| s / n as f64)
}

pub fn build(i: Inputs) -> RunSummary {
    let tl = &i.timeline;
    let mut lat: Vec<f64> = i
        .records
        .iter()
        .filter(|r| r.ok())
        .map(|r| r.latency_s * 1000.0)
        .collect();
    lat.sort_by(f64::total_cmp);
    let ok = lat.len();
    let requests = i.records.len();
    let slo_s = i.args.slo_ms / 1000.0;
    let within = i
        .records
        .iter()
        .filter(|r| r.ok() && r.latency_s <= slo_s)
        .count();
    let frac = |n: usize| {
        if requests > 0 {
            n as f64 / requests as f64
        } else {
            1.0
        }
    };
    RunSummary {
        policy: i.policy.to_string(),
        duration_s: i.plan.duration(),
        time_scale: i.args.time_scale,
        cold_start_s: i.args.cold_start,
        work_ms: i.args.work_ms,
        slo_ms: i.args.slo_ms,
        min_replicas: i.args.min_replicas,
        max_replicas: i.args.max_replicas,
        replica_concurrency: i.args.replica_concurrency,
        queue_capacity: i.args.queue_capacity,
        seed: i.args.seed,
        plan: i.plan.clone(),
        pods_min: tl.iter().map(|s| s.replicas).min().unwrap_or(0),
        pods_max: tl.iter().map(|s| s.replicas).max().unwrap_or(0),
        pods_mean: mean(tl.iter().map(|s| s.replicas as f64)).unwrap_or(0.0),
        ready_mean: mean(tl.iter().map(|s| s.ready as f64)).unwrap_or(0.0),
        replica_seconds: tl.iter().map(|s| s.replicas as f64).sum(),
        util_mean: mean(tl.iter().filter_map(|s| s.util_mean)),
        util_max: tl.iter().filter_map(|s| s.util_max).reduce(f64::max),
        latency_mean_ms: mean(lat.iter().copied()),
        latency_p95_ms: quantile(&lat, 0.95),
        latency_max_ms: lat.last().copied(),
        requests,
        ok,
        success_rate: frac(ok),
        slo_attainment: frac(within),
        scale_ups: i.events.iter().filter(|e| e.to > e.from).count(),
        scale_downs: i.events.iter().filter(|e| e.to < e.from).count(),
        scaler_desired_max: tl.iter().filter_map(|s| s.scaler_desired).reduce(f64::max),
        stream_pushes: i.pushes,
        trigger_rebuilds: i.trigger_rebuilds,
        rpc_errors: i.rpc_errors,
        replicas_started: i.pids.len(),
        ready_after_s: i.ready_after_s,
        served_by_replica: i.served,
        requests_cut: i.requests_cut,
        pod_deletion_cost: i.args.pod_deletion_cost,
        children_left: i.children_left,
        source: i.source,
        prometheus_pid: i.prometheus_pid,
        prometheus_queries: i.prometheus_queries,
        pids: i.pids,
        events: i.events,
        timeline: i.timeline,
        records: i.records,
    }
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("-".into(), |x| format!("{x:.digits$}"))
}

/// (label, value) rows of the summary table.
fn rows(s: &RunSummary) -> Vec<(&'static str, String)> {
    vec![
        (
            "pods min / max / mean",
            format!("{} / {} / {:.2}", s.pods_min, s.pods_max, s.pods_mean),
        ),
        ("replica-seconds", format!("{:.0}", s.replica_seconds)),
        (
            "accelerator util mean / max (%)",
            format!("{} / {}", opt(s.util_mean, 1), opt(s.util_max, 1)),
        ),
        (
            "latency mean / p95 / max (ms)",
            format!(
                "{} / {} / {}",
                opt(s.latency_mean_ms, 0),
                opt(s.latency_p95_ms, 0),
                opt(s.latency_max_ms, 0)
            ),
        ),
        ("requests / ok", format!("{} / {}", s.requests, s.ok)),
        ("success rate", format!("{:.2} %", 100.0 * s.success_rate)),
        (
            "within SLO",
            format!("{:.2} % (<= {:.0} ms)", 100.0 * s.slo_attainment, s.slo_ms),
        ),
        (
            "scaling events (up / down)",
            format!(
                "{} ({} / {})",
                s.scale_ups + s.scale_downs,
                s.scale_ups,
                s.scale_downs
            ),
        ),
        (
            "requests cut on scale-down",
            format!(
                "{:.0} ({})",
                s.requests_cut,
                if s.pod_deletion_cost {
                    "least busy removed first"
                } else {
                    "newest removed first"
                }
            ),
        ),
        ("scaler desired max", opt(s.scaler_desired_max, 2)),
        (
            "scaler source",
            match s.prometheus_queries {
                Some(q) => format!("{} ({q:.0} queries)", s.source),
                None => s.source.clone(),
            },
        ),
        (
            "replica processes started / left",
            format!("{} / {}", s.replicas_started, s.children_left),
        ),
    ]
}

/// The end-of-run table.
pub fn table(s: &RunSummary) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "demo summary: policy {}, {:.0} s, time scale {}x, cold start {} s, {} ms per request",
        s.policy, s.duration_s, s.time_scale, s.cold_start_s, s.work_ms
    );
    let _ = writeln!(out, "| metric | {} |", s.policy);
    let _ = writeln!(out, "| --- | --- |");
    for (k, v) in rows(s) {
        let _ = writeln!(out, "| {k} | {v} |");
    }
    out
}

/// Both runs of `--compare`.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Comparison {
    pub runs: Vec<RunSummary>,
}

pub fn compare_table(c: &Comparison) -> String {
    let mut out = String::new();
    let names: Vec<&str> = c.runs.iter().map(|r| r.policy.as_str()).collect();
    if let Some(first) = c.runs.first() {
        let _ = writeln!(
            out,
            "demo --compare: same load ({:.0} s, seed-identical arrivals), time scale {}x",
            first.duration_s, first.time_scale
        );
    }
    let _ = writeln!(out, "| metric | {} |", names.join(" | "));
    let _ = writeln!(out, "| --- |{}", " --- |".repeat(names.len()));
    let per_run: Vec<Vec<(&str, String)>> = c.runs.iter().map(rows).collect();
    if let Some(first) = per_run.first() {
        for (i, (label, _)) in first.iter().enumerate() {
            let vals: Vec<&str> = per_run.iter().map(|r| r[i].1.as_str()).collect();
            let _ = writeln!(out, "| {label} | {} |", vals.join(" | "));
        }
    }
    out
}

fn write(path: &Path, text: &str) -> Result<(), DemoError> {
    std::fs::write(path, text).map_err(|source| DemoError::Io {
        path: path.display().to_string(),
        source,
    })
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string_pretty(v).expect("summaries serialise")
}

/// `demo-<policy>.json`, `requests-<policy>.csv` and `demo-<policy>.svg`.
pub fn write_run(dir: &Path, s: &RunSummary) -> Result<(), DemoError> {
    write(&dir.join(format!("demo-{}.json", s.policy)), &json(s))?;
    write(
        &dir.join(format!("requests-{}.csv", s.policy)),
        &requests_csv(&s.records),
    )?;
    write(
        &dir.join(format!("demo-{}.svg", s.policy)),
        &svg(std::slice::from_ref(s)),
    )
}

/// Every request, one line each: `sent_s,latency_s,status` (status 0: no replica ready or
/// the connection failed), in the order they completed.
pub fn requests_csv(records: &[Record]) -> String {
    let mut out = String::from("sent_s,latency_s,status\n");
    for r in records {
        let _ = writeln!(out, "{:.6},{:.6},{}", r.sent_s, r.latency_s, r.status);
    }
    out
}

/// Reads `requests_csv`'s format back.
pub fn parse_requests_csv(text: &str) -> Result<Vec<Record>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || (i == 0 && line.starts_with("sent_s")) {
            continue;
        }
        let f: Vec<&str> = line.split(',').collect();
        let parsed = match f[..] {
            [s, l, st] => s
                .parse::<f64>()
                .ok()
                .zip(l.parse::<f64>().ok())
                .zip(st.parse::<u16>().ok()),
            _ => None,
        };
        let Some(((sent_s, latency_s), status)) = parsed else {
            return Err(format!(
                "line {}: '{line}' is not sent_s,latency_s,status",
                i + 1
            ));
        };
        out.push(Record {
            sent_s,
            latency_s,
            status,
        });
    }
    Ok(out)
}

/// `compare.json` (the table's numbers, timelines in the per-run files) and `compare.svg`.
pub fn write_compare(dir: &Path, c: &Comparison) -> Result<(), DemoError> {
    let slim: Vec<serde_json::Value> = c
        .runs
        .iter()
        .map(|r| {
            let mut v = serde_json::to_value(r).expect("summaries serialise");
            if let Some(o) = v.as_object_mut() {
                o.remove("timeline");
            }
            v
        })
        .collect();
    write(
        &dir.join("compare.json"),
        &json(&serde_json::json!({ "runs": slim })),
    )?;
    write(&dir.join("compare.svg"), &svg(&c.runs))
}

const COLORS: [&str; 4] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"];

/// Timeline: offered load and replicas (with the scaler's answer) on top, p95 latency below, one
/// line per run in each; phase boundaries as dashed lines.
pub fn svg(runs: &[RunSummary]) -> String {
    let (w, h, left, right) = (900.0, 560.0, 60.0, 20.0);
    let panels = [(40.0, 250.0), (330.0, 190.0)];
    let pw = w - left - right;
    let t_max = runs.iter().map(|r| r.duration_s).fold(1.0, f64::max);
    let x = |t: f64| left + pw * t / t_max;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let title = runs
        .iter()
        .map(|r| r.policy.as_str())
        .collect::<Vec<_>>()
        .join(" vs ");
    let _ = writeln!(
        out,
        r#"<text x="{left}" y="22" font-size="15">keda-gpu-demo: {}</text>"#,
        escape(&title)
    );
    let pods_max = nice_ceiling(
        runs.iter()
            .map(|r| r.pods_max as f64)
            .chain(runs.iter().filter_map(|r| r.scaler_desired_max))
            .fold(1.0, f64::max),
    );
    let rate_max = nice_ceiling(
        runs.iter()
            .flat_map(|r| r.plan.phases.iter().map(|p| p.rate))
            .fold(1.0, f64::max),
    );
    let p95_max = nice_ceiling(
        runs.iter()
            .flat_map(|r| r.timeline.iter().filter_map(|s| s.p95_ms))
            .fold(1.0, f64::max),
    );
    for (i, &(top, ph)) in panels.iter().enumerate() {
        let (label, max) = if i == 0 {
            ("replicas", pods_max)
        } else {
            ("p95 latency (ms)", p95_max)
        };
        let _ = writeln!(
            out,
            r##"<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>"##
        );
        for k in 0..=4 {
            let v = max * k as f64 / 4.0;
            let y = top + ph - ph * k as f64 / 4.0;
            let _ = writeln!(
                out,
                r##"<line x1="{left}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#eee"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
                left + pw,
                left - 4.0,
                y + 4.0,
                if v.fract() == 0.0 {
                    format!("{v:.0}")
                } else {
                    format!("{v:.1}")
                }
            );
        }
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" >{label}</text>"#,
            left + 4.0,
            top + 14.0
        );
        if let Some(r) = runs.first() {
            for (s, p) in r.plan.starts().iter().zip(&r.plan.phases) {
                let _ = writeln!(
                    out,
                    r##"<line x1="{0:.1}" x2="{0:.1}" y1="{top}" y2="{1}" stroke="#bbb" stroke-dasharray="4 3"/><text x="{2:.1}" y="{3}" fill="#777">{4}</text>"##,
                    x(*s),
                    top + ph,
                    x(*s) + 3.0,
                    top + ph - 4.0,
                    escape(&p.name)
                );
            }
        }
        if i == 0 {
            // Offered load, scaled to the replica axis (right-hand labels).
            if let Some(r) = runs.first() {
                let mut pts = String::new();
                for s in &r.timeline {
                    let _ = write!(
                        pts,
                        "{:.1},{:.1} ",
                        x(s.t),
                        top + ph - ph * s.rate / rate_max
                    );
                }
                let _ = writeln!(
                    out,
                    r##"<polyline points="{pts}" fill="none" stroke="#bbb" stroke-width="6" opacity="0.6"/><text x="{}" y="{}" text-anchor="end" fill="#888">load (grey band, max {rate_max:.0} req/s)</text>"##,
                    left + pw - 4.0,
                    top + 14.0
                );
            }
        }
        for (j, r) in runs.iter().enumerate() {
            let color = COLORS[j % COLORS.len()];
            let mut pts = String::new();
            let mut desired = String::new();
            for s in &r.timeline {
                let v = if i == 0 {
                    Some(s.replicas as f64)
                } else {
                    s.p95_ms
                };
                if let Some(v) = v {
                    let _ = write!(
                        pts,
                        "{:.1},{:.1} ",
                        x(s.t),
                        top + ph - ph * (v / max).min(1.0)
                    );
                }
                if i == 0 {
                    if let Some(d) = s.scaler_desired {
                        let _ = write!(
                            desired,
                            "{:.1},{:.1} ",
                            x(s.t),
                            top + ph - ph * (d / max).min(1.0)
                        );
                    }
                }
            }
            let _ = writeln!(
                out,
                r#"<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="2"/>"#
            );
            if i == 0 && r.policy == "composite" && !desired.is_empty() {
                let _ = writeln!(
                    out,
                    r#"<polyline points="{desired}" fill="none" stroke="{color}" stroke-width="1" stroke-dasharray="3 2"/>"#
                );
            }
            let _ = writeln!(
                out,
                r#"<text x="{}" y="{}" fill="{color}">{}{}</text>"#,
                left + 140.0 * j as f64,
                h - 12.0,
                escape(&r.policy),
                if r.policy == "composite" {
                    " (dashed: scaler's GetMetrics answer)"
                } else {
                    ""
                }
            );
        }
    }
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" text-anchor="end">seconds</text></svg>"#,
        left + pw,
        panels[1].0 + panels[1].1 + 16.0
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_read_back_from_their_csv() {
        let records = vec![
            Record {
                sent_s: 0.25,
                latency_s: 0.101,
                status: 200,
            },
            Record {
                sent_s: 1.5,
                latency_s: 0.0,
                status: 0,
            },
        ];
        let csv = requests_csv(&records);
        assert_eq!(parse_requests_csv(&csv).unwrap(), records);
        let e = parse_requests_csv("sent_s,latency_s,status\n1,2\n").unwrap_err();
        assert!(e.starts_with("line 2:"), "{e}");
    }
}
