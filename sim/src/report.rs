//! The report: per-policy numbers with ratios to `oracle` and `composite`, as JSON for tools, a
//! Markdown table for people, and an SVG chart (load and replicas over time, one panel per policy).
//! Pure: strings out; the caller writes the files.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::cost::CostModel;
use super::hpa::SYNC_PERIOD_S;
use super::replay::{percentile, Run, Sample};
use super::svg::{downsample, escape, nice_ceiling};

/// The whole report, as written to `report.json`.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Report {
    pub trace: TraceInfo,
    pub settings: Settings,
    /// The metadata the composite policy ran with (parsed by the server's own `spec::parse`).
    pub composite_metadata: BTreeMap<String, String>,
    /// Start times of the surges the time-to-capacity numbers refer to, seconds.
    pub surges_s: Vec<f64>,
    pub policies: Vec<PolicyReport>,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct TraceInfo {
    pub source: String,
    pub requests: u64,
    pub duration_s: f64,
    pub mean_rps: f64,
    /// Highest arrival rate over one sync period.
    pub peak_rps: f64,
    pub rate_scale: f64,
    pub time_scale: f64,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Settings {
    /// End-to-end latency objective (headline SLO for requests without tokens).
    pub slo_s: f64,
    /// Time-to-first-token and time-per-output-token objectives (headline SLO for token requests).
    pub ttft_slo_s: f64,
    pub tpot_slo_s: f64,
    pub cold_start_s: f64,
    pub timeout_s: f64,
    /// Termination grace period of a removed replica.
    pub grace_s: f64,
    pub scrape_s: f64,
    pub max_replicas: u32,
    pub seed: u64,
    pub cost: CostModel,
}

/// One policy's results.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct PolicyReport {
    pub name: String,
    pub gpu_hours: f64,
    /// Requests completed within the SLO over all requests (timeouts count as misses), 0..1: time
    /// to first token and time per output token for requests with tokens, end-to-end latency for
    /// the others.
    pub slo_attainment: f64,
    /// Requests completed within the end-to-end latency objective over all requests, 0..1.
    pub e2e_slo_attainment: f64,
    /// Share of requests whose service time alone exceeds the end-to-end objective: the most
    /// `e2e_slo_attainment` can reach is one minus this.
    pub e2e_infeasible: f64,
    pub latency_mean_s: f64,
    pub latency_p50_s: f64,
    pub latency_p95_s: f64,
    pub latency_p99_s: f64,
    pub latency_max_s: f64,
    pub requests: u64,
    pub completed: u64,
    pub timed_out: u64,
    /// Requests cut on scale-down: still running on a removed replica when its termination
    /// grace period ended (counted as misses).
    pub cut_on_scale_down: u64,
    /// GPU-hours spent by removed replicas finishing their requests (part of `gpu_hours`).
    pub drain_gpu_hours: f64,
    /// Pod deletion-cost annotations written, per hour of trace (composite with
    /// `podDeletionCost`; 0 for the others).
    pub deletion_cost_patches_per_hour: f64,
    /// Readiness-gate condition writes, per hour of trace (composite with `podReadinessGate`;
    /// absent for the others).
    #[serde(skip_serializing_if = "is_zero")]
    pub readiness_gate_patches_per_hour: f64,
    pub replicas_min: u32,
    pub replicas_max: u32,
    pub replicas_mean: f64,
    pub gpu_util_mean_pct: f64,
    pub gpu_util_max_pct: f64,
    pub scaling_events: u64,
    /// Seconds from each surge's start until ready replicas reached what the surge needs; null for
    /// a surge that never got enough capacity.
    pub time_to_capacity_s: Vec<Option<f64>>,
    pub time_to_capacity_mean_s: Option<f64>,
    pub time_to_capacity_max_s: Option<f64>,
    pub gpu_hours_vs_oracle: Option<f64>,
    pub gpu_hours_vs_oracle_coldstart: Option<f64>,
    pub gpu_hours_vs_composite: Option<f64>,
    pub slo_attainment_vs_composite: Option<f64>,
    pub timeline: Vec<Sample>,
}

/// Surge starts: periods needing at least 1.5x and 2 more replicas than the mean of the previous
/// five minutes, at most one per five minutes.
pub fn surges(required: &[u32]) -> Vec<usize> {
    let look = (300.0 / SYNC_PERIOD_S) as usize;
    let mut out: Vec<usize> = Vec::new();
    for w in look..required.len() {
        let base = required[w - look..w].iter().sum::<u32>() as f64 / look as f64;
        let need = required[w] as f64;
        if need >= 1.5 * base && need >= base + 2.0 && out.last().is_none_or(|&s| w - s >= look) {
            out.push(w);
        }
    }
    out
}

/// Seconds from `start_s` until `ready[t] >= need`, if it happens.
fn time_to_capacity(ready: &[u32], start_s: usize, need: u32) -> Option<f64> {
    ready[start_s.min(ready.len())..]
        .iter()
        .position(|&r| r >= need)
        .map(|k| k as f64)
}

fn share(part: u64, all: u64, empty: f64) -> f64 {
    if all > 0 {
        part as f64 / all as f64
    } else {
        empty
    }
}

fn ratio(a: f64, b: Option<f64>) -> Option<f64> {
    b.filter(|&b| b > 0.0).map(|b| a / b)
}

/// A run's two headline numbers, `(gpu_hours, slo_attainment)`, exactly as its report states
/// them.
pub fn headline(run: &Run) -> (f64, f64) {
    let o = &run.outcomes;
    (
        run.gpu_seconds / 3600.0,
        share(o.within_slo, o.arrived, 1.0),
    )
}

/// Builds the per-policy reports (consumes the runs' latency vectors).
pub fn policy_reports(
    runs: Vec<Run>,
    required: &[u32],
    surge_windows: &[usize],
) -> Vec<PolicyReport> {
    let mut scratch = Vec::new();
    let mut out: Vec<PolicyReport> = runs
        .into_iter()
        .map(|run| {
            let o = &run.outcomes;
            let lat = &o.latencies;
            let q = |scratch: &mut Vec<f32>, q| percentile(scratch, lat, q).unwrap_or(0.0);
            let ttc: Vec<Option<f64>> = surge_windows
                .iter()
                .map(|&w| {
                    time_to_capacity(&run.ready, (w as f64 * SYNC_PERIOD_S) as usize, required[w])
                })
                .collect();
            let met: Vec<f64> = ttc.iter().flatten().copied().collect();
            let (gpu_hours, slo_attainment) = headline(&run);
            PolicyReport {
                name: run.name.to_string(),
                gpu_hours,
                slo_attainment,
                e2e_slo_attainment: share(o.within_e2e_slo, o.arrived, 1.0),
                e2e_infeasible: share(o.e2e_infeasible, o.arrived, 0.0),
                latency_mean_s: if lat.is_empty() {
                    0.0
                } else {
                    lat.iter().map(|&x| x as f64).sum::<f64>() / lat.len() as f64
                },
                latency_p50_s: q(&mut scratch, 0.5),
                latency_p95_s: q(&mut scratch, 0.95),
                latency_p99_s: q(&mut scratch, 0.99),
                latency_max_s: lat.iter().fold(0.0f32, |a, &b| a.max(b)) as f64,
                requests: o.arrived,
                completed: o.completed,
                timed_out: o.timed_out,
                cut_on_scale_down: o.cut,
                drain_gpu_hours: run.drain_gpu_seconds / 3600.0,
                deletion_cost_patches_per_hour: run.deletion_cost_patches as f64 * 3600.0
                    / (run.ready.len().saturating_sub(1).max(1)) as f64,
                readiness_gate_patches_per_hour: run.gate_patches as f64 * 3600.0
                    / (run.ready.len().saturating_sub(1).max(1)) as f64,
                replicas_min: run.replicas_min,
                replicas_max: run.replicas_max,
                replicas_mean: run.replicas_mean,
                gpu_util_mean_pct: run.gpu_util_mean,
                gpu_util_max_pct: run.gpu_util_max,
                scaling_events: run.scaling_events,
                time_to_capacity_mean_s: (!met.is_empty())
                    .then(|| met.iter().sum::<f64>() / met.len() as f64),
                time_to_capacity_max_s: if met.len() == ttc.len() && !met.is_empty() {
                    met.iter().copied().reduce(f64::max)
                } else {
                    None
                },
                time_to_capacity_s: ttc,
                gpu_hours_vs_oracle: None,
                gpu_hours_vs_oracle_coldstart: None,
                gpu_hours_vs_composite: None,
                slo_attainment_vs_composite: None,
                timeline: run.timeline,
            }
        })
        .collect();
    let find = |name: &str, out: &[PolicyReport]| {
        out.iter()
            .find(|p| p.name == name)
            .map(|p| (p.gpu_hours, p.slo_attainment))
    };
    let oracle = find("oracle", &out);
    let oracle_coldstart = find("oracle-coldstart", &out);
    let composite = find("composite", &out);
    for p in &mut out {
        p.gpu_hours_vs_oracle = ratio(p.gpu_hours, oracle.map(|o| o.0));
        p.gpu_hours_vs_oracle_coldstart = ratio(p.gpu_hours, oracle_coldstart.map(|o| o.0));
        p.gpu_hours_vs_composite = ratio(p.gpu_hours, composite.map(|c| c.0));
        p.slo_attainment_vs_composite = ratio(p.slo_attainment, composite.map(|c| c.1));
    }
    out
}

fn opt(x: Option<f64>, digits: usize) -> String {
    x.map_or("-".into(), |v| format!("{v:.digits$}"))
}

/// The Markdown report: settings, then one row per policy.
pub fn markdown(report: &Report) -> String {
    let t = &report.trace;
    let s = &report.settings;
    let mut md = String::new();
    let _ = writeln!(md, "# Simulation report\n");
    let _ = writeln!(
        md,
        "Trace `{}`: {} requests over {:.0} s (mean {:.2} req/s, peak {:.2} req/s per {:.0} s; rate x{}, time x{}).  ",
        t.source, t.requests, t.duration_s, t.mean_rps, t.peak_rps, SYNC_PERIOD_S, t.rate_scale, t.time_scale
    );
    let _ = writeln!(
        md,
        "SLO: time to first token <= {:.0} ms and time per output token <= {:.0} ms (requests with tokens), end-to-end <= {:.0} ms (others and the e2e column); cold start {:.0} s, queue timeout {:.0} s, scrape {:.0} s, batch {}, max {} replicas, seed {}.\n",
        s.ttft_slo_s * 1000.0, s.tpot_slo_s * 1000.0, s.slo_s * 1000.0, s.cold_start_s, s.timeout_s, s.scrape_s, s.cost.batch, s.max_replicas, s.seed
    );
    let _ = writeln!(md, "| policy | GPU-h | vs oracle | vs oracle-coldstart | vs composite | SLO met | SLO vs composite | e2e SLO met (infeasible) | p50 s | p95 s | p99 s | max s | requests | timed out | cut on scale-down | replicas min/mean/max | GPU util mean/max % | scaling events | surge to capacity mean/max s |");
    let _ = writeln!(
        md,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for p in &report.policies {
        let unmet = p.time_to_capacity_s.iter().filter(|x| x.is_none()).count();
        let surge = if p.time_to_capacity_s.is_empty() {
            "no surges".to_string()
        } else if unmet > 0 {
            format!(
                "{} / never for {unmet} of {}",
                opt(p.time_to_capacity_mean_s, 0),
                p.time_to_capacity_s.len()
            )
        } else {
            format!(
                "{} / {}",
                opt(p.time_to_capacity_mean_s, 0),
                opt(p.time_to_capacity_max_s, 0)
            )
        };
        let _ = writeln!(
            md,
            "| {} | {:.2} | {} | {} | {} | {:.2} % | {} | {:.2} % ({:.1} %) | {:.2} | {:.2} | {:.2} | {:.1} | {} | {} | {} | {}/{:.1}/{} | {:.0}/{:.0} | {} | {} |",
            p.name, p.gpu_hours, opt(p.gpu_hours_vs_oracle, 2), opt(p.gpu_hours_vs_oracle_coldstart, 2),
            opt(p.gpu_hours_vs_composite, 2),
            100.0 * p.slo_attainment, opt(p.slo_attainment_vs_composite, 3),
            100.0 * p.e2e_slo_attainment, 100.0 * p.e2e_infeasible,
            p.latency_p50_s, p.latency_p95_s, p.latency_p99_s, p.latency_max_s,
            p.requests, p.timed_out, p.cut_on_scale_down, p.replicas_min, p.replicas_mean, p.replicas_max,
            p.gpu_util_mean_pct, p.gpu_util_max_pct, p.scaling_events, surge
        );
    }
    let _ = writeln!(
        md,
        "\nSLO met: share of all requests completed within the SLO (timeouts count as misses); e2e SLO met: the same for end-to-end latency, with the share of requests whose service time alone exceeds it in brackets. GPU-h counts every replica holding a GPU (starting, ready, draining) up to the end of the trace. Cut on scale-down: requests still running on a removed replica when its termination grace period ({:.0} s) ended, counted as misses. Surges ({} found): periods needing 1.5x and 2 more replicas than the previous five minutes; time until ready replicas reached the surge's need.",
        s.grace_s,
        report.surges_s.len()
    );
    md
}

/// The chart: per policy, load (grey area, right axis) and replicas (blue: requested, green:
/// ready) against the oracle's replicas (dashed), all panels on one time axis and one replica scale.
pub fn svg(report: &Report) -> String {
    const W: f64 = 1000.0;
    const PH: f64 = 150.0;
    const LEFT: f64 = 60.0;
    const RIGHT: f64 = 60.0;
    const TOP: f64 = 50.0;
    const GAP: f64 = 34.0;
    let n = report.policies.len().max(1) as f64;
    let height = TOP + n * (PH + GAP) + 30.0;
    let duration = report.trace.duration_s.max(1.0);
    let max_rep = nice_ceiling(
        report
            .policies
            .iter()
            .map(|p| p.replicas_max as f64)
            .fold(1.0, f64::max),
    );
    let load: Vec<(f64, f64)> = report.policies.first().map_or(Vec::new(), |p| {
        p.timeline.iter().map(|s| (s.t, s.load_rps)).collect()
    });
    let max_load = nice_ceiling(load.iter().map(|p| p.1).fold(0.0, f64::max));
    let oracle: Option<Vec<(f64, f64)>> =
        report
            .policies
            .iter()
            .find(|p| p.name == "oracle")
            .map(|p| {
                p.timeline
                    .iter()
                    .map(|s| (s.t, s.replicas as f64))
                    .collect()
            });
    let x = |t: f64| LEFT + (W - LEFT - RIGHT) * t / duration;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{height:.0}" viewBox="0 0 {W} {height:.0}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{LEFT}" y="20" font-size="14" font-weight="bold">Replicas over time per policy: {}</text>"#,
        escape(&report.trace.source)
    );
    let _ = writeln!(
        out,
        r##"<text x="{LEFT}" y="38" fill="#444">grey: load (req/s, right axis, max {max_load})   blue: replicas requested   green: replicas ready   dashed red: oracle</text>"##
    );
    let hours = duration > 7200.0;
    for (k, p) in report.policies.iter().enumerate() {
        let top = TOP + k as f64 * (PH + GAP) + 16.0;
        let bottom = top + PH;
        let yr = |r: f64| bottom - PH * r / max_rep;
        let yl = |l: f64| bottom - PH * l / max_load;
        let _ = writeln!(
            out,
            r##"<text x="{LEFT}" y="{:.1}" font-weight="bold">{}  <tspan font-weight="normal" fill="#444">GPU-h {:.2}, SLO met {:.2} %, p95 {:.2} s, replicas max {}</tspan></text>"##,
            top - 4.0,
            escape(&p.name),
            p.gpu_hours,
            100.0 * p.slo_attainment,
            p.latency_p95_s,
            p.replicas_max
        );
        let _ = writeln!(
            out,
            r##"<rect x="{LEFT}" y="{top:.1}" width="{:.1}" height="{PH}" fill="none" stroke="#bbb"/>"##,
            W - LEFT - RIGHT
        );
        // Load as a filled area.
        let pts = downsample(&load, 600);
        let mut d = format!("M{:.1},{:.1}", x(0.0), bottom);
        for (t, l) in &pts {
            let _ = write!(d, " L{:.1},{:.1}", x(*t), yl(*l));
        }
        let _ = write!(
            d,
            " L{:.1},{:.1} Z",
            x(pts.last().map_or(0.0, |p| p.0)),
            bottom
        );
        let _ = writeln!(out, r##"<path d="{d}" fill="#ddd" stroke="none"/>"##);
        let line = |series: Vec<(f64, f64)>, style: &str, out: &mut String| {
            let pts = downsample(&series, 600);
            let mut d = String::new();
            let mut prev: Option<f64> = None;
            for (t, r) in pts {
                match prev {
                    None => {
                        let _ = write!(d, "M{:.1},{:.1}", x(t), yr(r));
                    }
                    Some(pr) => {
                        let _ = write!(d, " L{:.1},{:.1} L{:.1},{:.1}", x(t), yr(pr), x(t), yr(r));
                    }
                }
                prev = Some(r);
            }
            let _ = writeln!(out, r#"<path d="{d}" fill="none" {style}/>"#);
        };
        if let Some(o) = &oracle {
            line(
                o.clone(),
                r##"stroke="#d33" stroke-width="1" stroke-dasharray="4 3""##,
                &mut out,
            );
        }
        line(
            p.timeline
                .iter()
                .map(|s| (s.t, s.replicas as f64))
                .collect(),
            r##"stroke="#1f6fd1" stroke-width="1.4""##,
            &mut out,
        );
        line(
            p.timeline.iter().map(|s| (s.t, s.ready as f64)).collect(),
            r##"stroke="#2a9d3a" stroke-width="1""##,
            &mut out,
        );
        // Axes labels: replicas on the left, load on the right.
        let _ = writeln!(
            out,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="end">{max_rep}</text><text x="{:.1}" y="{:.1}" text-anchor="end">0</text><text x="{:.1}" y="{:.1}" text-anchor="end" fill="#444">replicas</text>"##,
            LEFT - 4.0,
            top + 10.0,
            LEFT - 4.0,
            bottom,
            LEFT - 4.0,
            top + PH / 2.0
        );
        let _ = writeln!(
            out,
            r##"<text x="{:.1}" y="{:.1}" fill="#777">{max_load} req/s</text>"##,
            W - RIGHT + 4.0,
            top + 10.0
        );
        // Time ticks.
        let step = if hours {
            3600.0 * (duration / 3600.0 / 12.0).ceil()
        } else {
            60.0 * (duration / 60.0 / 12.0).ceil().max(1.0)
        };
        let mut t = 0.0;
        while t <= duration + 1e-9 {
            let label = if hours {
                format!("{:.0} h", t / 3600.0)
            } else {
                format!("{:.0} min", t / 60.0)
            };
            let _ = writeln!(
                out,
                r##"<line x1="{0:.1}" x2="{0:.1}" y1="{1:.1}" y2="{2:.1}" stroke="#bbb"/><text x="{0:.1}" y="{3:.1}" text-anchor="middle" fill="#444">{label}</text>"##,
                x(t),
                bottom,
                bottom + 4.0,
                bottom + 15.0
            );
            t += step;
        }
    }
    out.push_str("</svg>\n");
    out
}

/// Serde's test for fields written only when they happened.
fn is_zero(x: &f64) -> bool {
    *x == 0.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn surges_need_a_jump_over_the_previous_five_minutes() {
        let mut req = vec![2u32; 40];
        req[25] = 3; // +50 % but only +1 replica: not a surge
        req[30] = 6;
        req[31] = 6;
        assert_eq!(surges(&req), vec![30]);
        assert_eq!(time_to_capacity(&[1, 1, 2, 3, 6, 6], 1, 3), Some(2.0));
        assert_eq!(time_to_capacity(&[1, 1], 0, 3), None);
    }

    #[test]
    fn nice_axes_and_downsampling_keep_peaks() {
        assert_eq!(nice_ceiling(7.0), 10.0);
        assert_eq!(nice_ceiling(21.0), 25.0);
        let xs: Vec<(f64, f64)> = (0..1000)
            .map(|i| (i as f64, if i == 501 { 99.0 } else { 1.0 }))
            .collect();
        let d = downsample(&xs, 100);
        assert!(d.len() <= 100);
        assert!(d.iter().any(|p| p.1 == 99.0));
    }
}
