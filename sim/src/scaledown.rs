//! `keda-gpu-sim --scale-down --suite`: which pods a scale-down removes, and what that costs.
//!
//! Every suite scenario replays the composite twice: as the ReplicaSet chooses by itself (the
//! most recently ready pod first) and with `podDeletionCost` (the scaler ranks the pods by load,
//! the least busy go first). A removed replica finishes its requests for the termination grace
//! period (`--grace-s`), then what still runs is cut; the table counts the cut requests, the GPU
//! time spent draining, and the annotation writes the ranking cost. A third replay is a reference
//! no scaler can reach: the ReplicaSet removing the pods with the fewest requests that would
//! outlive the grace period, which needs each request's remaining time. It shows how much of the
//! cutting a ranking from the pods' own load readings can avoid and how much only that
//! knowledge could.

use std::fmt::Write;

use super::policy::PolicyName;
use super::report::PolicyReport;
use super::suite::{self, SCENARIOS};
use super::{SimError, SimulateArgs};

/// The metadata that turns the feature on: `podDeletionCost` needs `service` discovery.
pub const DELETION_COST_OVERRIDES: &str = "service=llm,endpoints=,podDeletionCost=true";

/// One side of the comparison in one scenario.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Side {
    pub gpu_hours: f64,
    pub slo_attainment: f64,
    pub cut: u64,
    pub drain_gpu_hours: f64,
    pub patches_per_hour: f64,
}

impl Side {
    fn of(p: &PolicyReport) -> Side {
        Side {
            gpu_hours: p.gpu_hours,
            slo_attainment: p.slo_attainment,
            cut: p.cut_on_scale_down,
            drain_gpu_hours: p.drain_gpu_hours,
            patches_per_hour: p.deletion_cost_patches_per_hour,
        }
    }
}

/// One scenario's row, as written to `scale-down.json`.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Row {
    pub name: String,
    pub spec: String,
    pub requests: u64,
    /// The ReplicaSet's own choice: most recently ready first.
    pub newest_first: Side,
    /// With `podDeletionCost`: least loaded first.
    pub least_loaded_first: Side,
    /// The reference: fewest requests that would outlive the grace period first.
    pub remaining_work_first: Side,
}

impl Row {
    /// The share of cut requests the ranking saves; None when none were cut without it.
    pub fn fewer_cut(&self) -> Option<f64> {
        (self.newest_first.cut > 0)
            .then(|| 1.0 - self.least_loaded_first.cut as f64 / self.newest_first.cut as f64)
    }
}

/// Runs the suite's scenarios through the composite without and with pod deletion costs.
pub fn run(base: &SimulateArgs) -> Result<Vec<Row>, SimError> {
    let composite =
        |args: &SimulateArgs, by_remaining_work: bool| -> Result<(u64, PolicyReport), SimError> {
            let (trace, mut cfg, rate_scale, time_scale, seed) = super::prepare(args)?;
            cfg.cluster.remove_by_remaining_work = by_remaining_work;
            let report = super::simulate(&trace, &cfg, rate_scale, time_scale, seed)?;
            let p = report
                .policies
                .into_iter()
                .find(|p| p.name == PolicyName::Composite.as_str())
                .expect("the composite was replayed");
            Ok((p.requests, p))
        };
    let mut rows = Vec::new();
    for &(name, generator, rate_scale) in SCENARIOS {
        let off = SimulateArgs {
            policies: Some(PolicyName::Composite.as_str().into()),
            ..suite::scenario_args(base, generator, rate_scale)
        };
        let overrides = match &base.composite_metadata {
            Some(m) if !m.trim().is_empty() => format!("{m},{DELETION_COST_OVERRIDES}"),
            _ => DELETION_COST_OVERRIDES.to_string(),
        };
        let on = SimulateArgs {
            composite_metadata: Some(overrides),
            ..off.clone()
        };
        let (requests, without) = composite(&off, false)?;
        let (_, with) = composite(&on, false)?;
        let (_, reference) = composite(&off, true)?;
        rows.push(Row {
            name: name.to_string(),
            spec: suite::scenario_spec(base, generator, rate_scale),
            requests,
            newest_first: Side::of(&without),
            least_loaded_first: Side::of(&with),
            remaining_work_first: Side::of(&reference),
        });
    }
    Ok(rows)
}

/// The rows as one Markdown table, with the totals over the scenarios that cut requests.
pub fn markdown(rows: &[Row], grace_s: f64) -> String {
    let mut md = String::from("# Scale-down: which pods go\n\n");
    let _ = writeln!(
        md,
        "The composite per suite scenario, removing pods as the ReplicaSet does by itself (most recently ready first) and with `podDeletionCost` (least loaded first). Termination grace period {grace_s:.0} s: requests still running when it ends are cut and count as misses.\n"
    );
    let _ = writeln!(
        md,
        "| scenario | requests | cut: newest first | cut: least loaded first | fewer cut | cut: reference | GPU-h newest / least loaded | SLO met newest / least loaded | draining GPU-h newest / least loaded | patches per hour |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let (a, b) = (&r.newest_first, &r.least_loaded_first);
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {:.2} / {:.2} | {:.2} % / {:.2} % | {:.3} / {:.3} | {:.0} |",
            r.name,
            r.requests,
            a.cut,
            b.cut,
            r.fewer_cut()
                .map_or("-".to_string(), |f| format!("{:.0} %", 100.0 * f)),
            r.remaining_work_first.cut,
            a.gpu_hours,
            b.gpu_hours,
            100.0 * a.slo_attainment,
            100.0 * b.slo_attainment,
            a.drain_gpu_hours,
            b.drain_gpu_hours,
            b.patches_per_hour,
        );
    }
    let (cut_a, cut_b): (u64, u64) = rows.iter().fold((0, 0), |(x, y), r| {
        (x + r.newest_first.cut, y + r.least_loaded_first.cut)
    });
    let cut_ref: u64 = rows.iter().map(|r| r.remaining_work_first.cut).sum();
    let (gpu_a, gpu_b): (f64, f64) = rows.iter().fold((0.0, 0.0), |(x, y), r| {
        (
            x + r.newest_first.gpu_hours,
            y + r.least_loaded_first.gpu_hours,
        )
    });
    let _ = writeln!(
        md,
        "\nOver all scenarios: {cut_a} requests cut newest first, {cut_b} least loaded first{}, {cut_ref} by the reference; {gpu_a:.2} against {gpu_b:.2} GPU-hours. The reference removes the pods with the fewest requests that would outlive the grace period: it needs each request's remaining time, which no pod exports, and bounds what any ranking could save. Patches per hour: annotation writes, at most one round per 15 s per ScaledObject and only for pods whose mark changed.",
        if cut_a > 0 {
            format!(
                " ({:.0} % fewer)",
                100.0 * (1.0 - cut_b as f64 / cut_a as f64)
            )
        } else {
            String::new()
        }
    );
    md
}
