//! `simulate --suite`: a fixed panel of scenarios (every generator at a low and a high load, the
//! Azure code trace at two rate scales, fixed seeds) through every policy, summarised in one
//! table: GPU-hours against both oracles, SLO attainment, and whether the composite is on the
//! Pareto front (GPU-hours down, SLO attainment up) with SLO ties within half a point.

use std::fmt::Write;
use std::path::Path;

use super::policy::PolicyName;
use super::report::Report;
use super::{SimError, SimulateArgs};

/// SLO attainment differences below this are ties when checking the Pareto front (half a point).
pub const SLO_TIE: f64 = 0.005;

/// The panel: (scenario name, generator spec or None for the trace, rate scale).
pub const SCENARIOS: &[(&str, Option<&str>, f64)] = &[
    ("poisson-low", Some("poisson:rate=3"), 1.0),
    ("poisson-high", Some("poisson:rate=30"), 1.0),
    ("step-low", Some("step:low=2,high=10,at=1200"), 1.0),
    ("step-high", Some("step:low=5,high=40,at=1200"), 1.0),
    ("ramp-low", Some("ramp:low=1,high=10,from=600,to=3000"), 1.0),
    (
        "ramp-high",
        Some("ramp:low=5,high=50,from=600,to=3000"),
        1.0,
    ),
    (
        "diurnal-low",
        Some("diurnal:mean=3,amplitude=0.8,period=3600"),
        1.0,
    ),
    (
        "diurnal-high",
        Some("diurnal:mean=25,amplitude=0.8,period=3600"),
        1.0,
    ),
    (
        "spike-low",
        Some("spike:base=2,peak=20,at=1800,width=300"),
        1.0,
    ),
    (
        "spike-high",
        Some("spike:base=10,peak=80,at=1800,width=300"),
        1.0,
    ),
    (
        "onoff-low",
        Some("onoff:on_rate=8,off_rate=0.5,on=300,off=600"),
        1.0,
    ),
    (
        "onoff-high",
        Some("onoff:on_rate=40,off_rate=2,on=300,off=600"),
        1.0,
    ),
    ("azure-code-x1", None, 1.0),
    ("azure-code-x4", None, 4.0),
];

/// Scenarios whose load changes smoothly; the composite should be close to the causal oracle here.
pub const SMOOTH: &[&str] = &[
    "poisson-low",
    "poisson-high",
    "ramp-low",
    "ramp-high",
    "diurnal-low",
    "diurnal-high",
];

/// Seed of every scenario, so the suite is reproducible byte for byte.
pub const SEED: u64 = 7;

/// One scenario's outcome, as written to `suite.json`.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ScenarioResult {
    pub name: String,
    pub spec: String,
    pub policies: Vec<PolicyRow>,
    /// Real policies that dominate the composite (cheaper or equal, and not worse by a tie).
    pub dominated_by: Vec<String>,
    /// Longest time the composite held more than twice oracle-coldstart's replicas, seconds.
    pub over_twice_coldstart_s: f64,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct PolicyRow {
    pub name: String,
    pub gpu_hours: f64,
    pub vs_oracle: Option<f64>,
    pub vs_oracle_coldstart: Option<f64>,
    pub slo_attainment: f64,
    pub e2e_slo_attainment: f64,
}

/// The whole suite, as written to `suite.json`.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Suite {
    /// The seed the scenarios were replayed at (`--suite-seed`); in the table's heading, not in
    /// the JSON, whose committed copies predate it.
    #[serde(skip)]
    pub seed: u64,
    pub scenarios: Vec<ScenarioResult>,
    /// Composite GPU-hours over keda-prometheus's, median over scenarios.
    pub median_composite_vs_keda_prometheus: Option<f64>,
}

/// Whether `p` dominates `c`: no more GPU-hours and no worse SLO (beyond a tie), and better in one.
pub fn dominates(p: &PolicyRow, c: &PolicyRow) -> bool {
    p.gpu_hours <= c.gpu_hours
        && p.slo_attainment >= c.slo_attainment - SLO_TIE
        && (p.gpu_hours < c.gpu_hours || p.slo_attainment > c.slo_attainment + SLO_TIE)
}

/// Longest stretch (seconds) where `a`'s replicas exceed twice `b`'s, on their common timeline.
fn longest_over_twice(report: &Report, a: &str, b: &str) -> f64 {
    let find = |n: &str| report.policies.iter().find(|p| p.name == n);
    let (Some(a), Some(b)) = (find(a), find(b)) else {
        return 0.0;
    };
    let (mut run, mut best, mut prev) = (0.0f64, 0.0f64, 0.0f64);
    for (x, y) in a.timeline.iter().zip(&b.timeline) {
        let dt = x.t - prev;
        prev = x.t;
        if x.replicas > 2 * y.replicas.max(1) {
            run += dt;
            best = best.max(run);
        } else {
            run = 0.0;
        }
    }
    best
}

fn row(report: &Report, name: &str) -> Option<PolicyRow> {
    report
        .policies
        .iter()
        .find(|p| p.name == name)
        .map(|p| PolicyRow {
            name: p.name.clone(),
            gpu_hours: p.gpu_hours,
            vs_oracle: p.gpu_hours_vs_oracle,
            vs_oracle_coldstart: p.gpu_hours_vs_oracle_coldstart,
            slo_attainment: p.slo_attainment,
            e2e_slo_attainment: p.e2e_slo_attainment,
        })
}

/// Summarises one scenario's report.
pub fn summarise(name: &str, spec: &str, report: &Report) -> ScenarioResult {
    let policies: Vec<PolicyRow> = report
        .policies
        .iter()
        .filter_map(|p| row(report, &p.name))
        .collect();
    let composite = row(report, "composite");
    let dominated_by = composite
        .as_ref()
        .map(|c| {
            policies
                .iter()
                .filter(|p| {
                    p.name != "composite"
                        && !p
                            .name
                            .parse::<PolicyName>()
                            .is_ok_and(PolicyName::is_reference)
                        && dominates(p, c)
                })
                .map(|p| p.name.clone())
                .collect()
        })
        .unwrap_or_default();
    ScenarioResult {
        name: name.to_string(),
        spec: spec.to_string(),
        policies,
        dominated_by,
        over_twice_coldstart_s: longest_over_twice(report, "composite", "oracle-coldstart"),
    }
}

fn median(mut xs: Vec<f64>) -> Option<f64> {
    if xs.is_empty() {
        return None;
    }
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    Some(if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    })
}

/// One scenario's command line: `base`'s other settings (SLOs, cold start, overrides...) with
/// the scenario's load, one hour and the suite's seed.
pub fn scenario_args(
    base: &SimulateArgs,
    generator: Option<&str>,
    rate_scale: f64,
) -> SimulateArgs {
    SimulateArgs {
        trace: generator.is_none().then(|| base.suite_trace.clone()),
        generator: generator.map(str::to_string),
        suite: false,
        duration_s: 3600.0,
        rate_scale,
        seed: base.suite_seed,
        policies: base.policies.clone(),
        ..base.clone()
    }
}

/// How the tables name a scenario's load: its generator, or the trace file and rate scale.
pub fn scenario_spec(base: &SimulateArgs, generator: Option<&str>, rate_scale: f64) -> String {
    match generator {
        Some(g) => g.to_string(),
        None => format!("{} x{rate_scale}", display_name(&base.suite_trace)),
    }
}

/// Runs every scenario with `base`'s other settings (SLOs, cold start, overrides...).
pub fn run(base: &SimulateArgs) -> Result<Suite, SimError> {
    let mut scenarios = Vec::new();
    for &(name, generator, rate_scale) in SCENARIOS {
        let args = scenario_args(base, generator, rate_scale);
        let (trace, cfg, rate_scale, time_scale, seed) = super::prepare(&args)?;
        let report = super::simulate(&trace, &cfg, rate_scale, time_scale, seed)?;
        let spec = scenario_spec(base, generator, rate_scale);
        scenarios.push(summarise(name, &spec, &report));
    }
    let ratios: Vec<f64> = scenarios
        .iter()
        .filter_map(|s| {
            let find = |n: &str| s.policies.iter().find(|p| p.name == n);
            Some(find("composite")?.gpu_hours / find("keda-prometheus")?.gpu_hours)
        })
        .collect();
    Ok(Suite {
        seed: base.suite_seed,
        scenarios,
        median_composite_vs_keda_prometheus: median(ratios),
    })
}

fn display_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into(),
    )
}

/// The suite as one Markdown table: a row per scenario, a cell per policy.
pub fn markdown(suite: &Suite) -> String {
    let mut md = String::from("# Simulation suite\n\n");
    let names: Vec<String> = suite
        .scenarios
        .first()
        .map(|s| s.policies.iter().map(|p| p.name.clone()).collect())
        .unwrap_or_default();
    let _ = writeln!(
        md,
        "Each cell: GPU-hours (x oracle, x oracle-coldstart) / SLO attainment. Seed {}, one hour per scenario.\n",
        suite.seed
    );
    let _ = write!(md, "| scenario |");
    for n in &names {
        let _ = write!(md, " {n} |");
    }
    let _ = writeln!(
        md,
        " composite on front | composite > 2x oracle-coldstart |"
    );
    let _ = write!(md, "|---|");
    for _ in &names {
        let _ = write!(md, "---:|");
    }
    let _ = writeln!(md, "---|---:|");
    for s in &suite.scenarios {
        let _ = write!(md, "| {} |", s.name);
        for n in &names {
            match s.policies.iter().find(|p| &p.name == n) {
                Some(p) => {
                    let x = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.1}"));
                    let _ = write!(
                        md,
                        " {:.1} ({}, {}) / {:.1} % |",
                        p.gpu_hours,
                        x(p.vs_oracle),
                        x(p.vs_oracle_coldstart),
                        100.0 * p.slo_attainment
                    );
                }
                None => {
                    let _ = write!(md, " - |");
                }
            }
        }
        let front = if s.dominated_by.is_empty() {
            "yes".to_string()
        } else {
            format!("no: {}", s.dominated_by.join(", "))
        };
        let _ = writeln!(md, " {front} | {:.0} s |", s.over_twice_coldstart_s);
    }
    if let Some(m) = suite.median_composite_vs_keda_prometheus {
        let _ = writeln!(
            md,
            "\nMedian composite GPU-hours over keda-prometheus's: {m:.2}."
        );
    }
    let _ = writeln!(
        md,
        "\nOn the front: no real policy has no more GPU-hours and an SLO attainment at most {:.1} points lower while being cheaper or more than {:.1} points better. Last column: longest time the composite held more than twice the replicas oracle-coldstart held.",
        100.0 * SLO_TIE,
        100.0 * SLO_TIE
    );
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(name: &str, gpu_hours: f64, slo: f64) -> PolicyRow {
        PolicyRow {
            name: name.into(),
            gpu_hours,
            vs_oracle: None,
            vs_oracle_coldstart: None,
            slo_attainment: slo,
            e2e_slo_attainment: slo,
        }
    }

    #[test]
    fn domination_treats_half_a_point_as_a_tie() {
        let c = r("composite", 10.0, 0.95);
        assert!(dominates(&r("a", 9.0, 0.95), &c), "cheaper, same SLO");
        assert!(
            dominates(&r("a", 9.0, 0.946), &c),
            "cheaper, SLO within a tie"
        );
        assert!(
            !dominates(&r("a", 9.0, 0.94), &c),
            "cheaper but a point worse"
        );
        assert!(
            dominates(&r("a", 10.0, 0.96), &c),
            "same cost, a point better"
        );
        assert!(!dominates(&r("a", 10.0, 0.954), &c), "same cost, SLO a tie");
        assert!(
            !dominates(&r("a", 11.0, 0.99), &c),
            "better SLO at a higher cost"
        );
    }

    #[test]
    fn median_of_even_and_odd() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(vec![]), None);
    }
}
