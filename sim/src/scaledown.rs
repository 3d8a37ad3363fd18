//! `keda-gpu-sim --scale-down --suite`: which pods a scale-down removes, and what that costs.
//!
//! Every suite scenario replays the composite three times: as the ReplicaSet chooses by itself
//! (the most recently ready pod first), with `podDeletionCost` (the scaler ranks the pods by load,
//! the least busy go first), and with `podReadinessGate` (the least busy are taken out of service
//! first and removed once they have finished). A removed replica finishes its requests for the termination grace
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
/// The metadata that drains pods through their readiness gate before they go.
pub const READINESS_GATE_OVERRIDES: &str = "service=llm,endpoints=,podReadinessGate=true";

/// One side of the comparison in one scenario.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Side {
    pub gpu_hours: f64,
    pub slo_attainment: f64,
    pub cut: u64,
    pub drain_gpu_hours: f64,
    pub patches_per_hour: f64,
    pub gate_patches_per_hour: f64,
}

impl Side {
    fn of(p: &PolicyReport) -> Side {
        Side {
            gpu_hours: p.gpu_hours,
            slo_attainment: p.slo_attainment,
            cut: p.cut_on_scale_down,
            drain_gpu_hours: p.drain_gpu_hours,
            patches_per_hour: p.deletion_cost_patches_per_hour,
            gate_patches_per_hour: p.readiness_gate_patches_per_hour,
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
    /// With `podReadinessGate`: the least busy taken out of service and removed once done.
    pub drained_first: Side,
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
        // Keys that only mean something with the drain (`drainTimeoutSeconds`,
        // `scaleDownWindowSeconds`) go to the drained replay alone.
        let (common, drain_only) = split_drain_keys(base.composite_metadata.as_deref());
        let off = SimulateArgs {
            policies: Some(PolicyName::Composite.as_str().into()),
            composite_metadata: common.clone(),
            ..suite::scenario_args(base, generator, rate_scale)
        };
        let with_metadata = |extra: &str| {
            let overrides = match &common {
                Some(m) => format!("{m},{extra}"),
                None => extra.to_string(),
            };
            SimulateArgs {
                composite_metadata: Some(overrides),
                ..off.clone()
            }
        };
        let drain_overrides = match &drain_only {
            Some(d) => format!("{READINESS_GATE_OVERRIDES},{d}"),
            None => READINESS_GATE_OVERRIDES.to_string(),
        };
        let (requests, without) = composite(&off, false)?;
        let (_, with) = composite(&with_metadata(DELETION_COST_OVERRIDES), false)?;
        let (_, drained) = composite(&with_metadata(&drain_overrides), false)?;
        let (_, reference) = composite(&off, true)?;
        rows.push(Row {
            name: name.to_string(),
            spec: suite::scenario_spec(base, generator, rate_scale),
            requests,
            newest_first: Side::of(&without),
            least_loaded_first: Side::of(&with),
            drained_first: Side::of(&drained),
            remaining_work_first: Side::of(&reference),
        });
    }
    Ok(rows)
}

/// `key=value,...` overrides split into those for every replay and those only the drain reads.
fn split_drain_keys(metadata: Option<&str>) -> (Option<String>, Option<String>) {
    let drain_keys = [
        keda_gpu_scaler::spec::DRAIN_TIMEOUT_KEY,
        keda_gpu_scaler::spec::HPA_WINDOW_KEY,
    ];
    let (drain, common): (Vec<&str>, Vec<&str>) = metadata
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|kv| !kv.is_empty())
        .partition(|kv| drain_keys.iter().any(|k| kv.split('=').next() == Some(*k)));
    let join = |v: Vec<&str>| (!v.is_empty()).then(|| v.join(","));
    (join(common), join(drain))
}

/// The rows as one Markdown table, with the totals over the scenarios.
pub fn markdown(rows: &[Row], grace_s: f64) -> String {
    let mut md = String::from("# Scale-down: which pods go\n\n");
    let _ = writeln!(
        md,
        "The composite per suite scenario, removing pods as the ReplicaSet does by itself (newest: most recently ready first), with `podDeletionCost` (marked: least loaded first) and with `podReadinessGate` (drained: the least loaded taken out of service, removed once they have finished). Termination grace period {grace_s:.0} s: requests still running when it ends are cut and count as misses.\n"
    );
    let _ = writeln!(
        md,
        "| scenario | requests | cut: newest / marked / drained | fewer cut: marked / drained | cut: reference | GPU-h newest / marked / drained | SLO met newest / marked / drained | draining GPU-h newest / marked | pod writes per hour: marks / gates |"
    );
    let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let fewer = |a: u64, b: u64| {
        if a > 0 {
            format!("{:.0} %", 100.0 * (1.0 - b as f64 / a as f64))
        } else {
            "-".to_string()
        }
    };
    for r in rows {
        let (a, b, c) = (&r.newest_first, &r.least_loaded_first, &r.drained_first);
        let _ = writeln!(
            md,
            "| {} | {} | {} / {} / {} | {} / {} | {} | {:.2} / {:.2} / {:.2} | {:.2} / {:.2} / {:.2} % | {:.3} / {:.3} | {:.0} / {:.0} |",
            r.name,
            r.requests,
            a.cut,
            b.cut,
            c.cut,
            fewer(a.cut, b.cut),
            fewer(a.cut, c.cut),
            r.remaining_work_first.cut,
            a.gpu_hours,
            b.gpu_hours,
            c.gpu_hours,
            100.0 * a.slo_attainment,
            100.0 * b.slo_attainment,
            100.0 * c.slo_attainment,
            a.drain_gpu_hours,
            b.drain_gpu_hours,
            b.patches_per_hour,
            c.patches_per_hour + c.gate_patches_per_hour,
        );
    }
    let sum = |f: &dyn Fn(&Row) -> f64| rows.iter().map(f).sum::<f64>();
    let cut = |f: &dyn Fn(&Row) -> &Side| rows.iter().map(|r| f(r).cut).sum::<u64>();
    let (cut_a, cut_b, cut_c) = (
        cut(&|r| &r.newest_first),
        cut(&|r| &r.least_loaded_first),
        cut(&|r| &r.drained_first),
    );
    let cut_ref: u64 = rows.iter().map(|r| r.remaining_work_first.cut).sum();
    let _ = writeln!(
        md,
        "\nOver all scenarios: {cut_a} requests cut newest first, {cut_b} marked ({} fewer), {cut_c} drained ({} fewer), {cut_ref} by the reference; {:.2} / {:.2} / {:.2} GPU-hours. The reference removes the pods with the fewest requests that would outlive the grace period: it needs each request's remaining time, which no pod exports. Draining needs no such knowledge: a pod out of service tells when it is empty. Pod writes per hour: deletion-cost annotations (at most one round per 15 s per ScaledObject, only for pods whose mark changed) and, with `podReadinessGate`, annotations plus readiness-gate conditions (pods are taken out at most once per 15 s; each is marked once, when it has drained).",
        fewer(cut_a, cut_b),
        fewer(cut_a, cut_c),
        sum(&|r| r.newest_first.gpu_hours),
        sum(&|r| r.least_loaded_first.gpu_hours),
        sum(&|r| r.drained_first.gpu_hours),
    );
    md
}
