//! `keda-gpu-sim --ablation`: the suite once per variant of the composite's configuration, each
//! variant a set of `--composite-metadata` overrides and a `--composite-hpa` choice, summarised
//! in one row. It is how the defaults in docs/simulation/README.md were chosen, and it reruns in
//! seconds, so anyone can check the trade each default makes on their own traffic.

use std::fmt::Write;

use super::policy::CompositeHpa;
use super::suite::{self, ScenarioResult, SMOOTH};
use super::{SimError, SimulateArgs};

/// One variant: a name for the table, the overrides (`key=value,...`, as `--composite-metadata`
/// takes them) and the HPA behaviour.
pub struct Variant {
    pub name: &'static str,
    pub metadata: Option<&'static str>,
    pub hpa: CompositeHpa,
}

/// The variants: the default, then one change at a time.
pub const VARIANTS: &[Variant] = &[
    Variant {
        name: "default",
        metadata: None,
        hpa: CompositeHpa::Recommended,
    },
    Variant {
        name: "HPA legacy rule (300 s window)",
        metadata: None,
        hpa: CompositeHpa::Legacy,
    },
    Variant {
        // The previous default (target mode), written out for the suite's B = 8 and 2 s TTFT.
        name: "target mode (the previous default)",
        metadata: Some("ttftObjectiveMs=,attainment=,gpuUtilTarget=70,queueTarget=8,inflightTarget=6,latencyTargetMs=2000,downHalfLifeSeconds=300"),
        hpa: CompositeHpa::Recommended,
    },
    Variant {
        name: "SLO mode at 90 %",
        metadata: Some("attainment=0.9"),
        hpa: CompositeHpa::Recommended,
    },
    Variant {
        name: "SLO mode at 99 %",
        metadata: Some("attainment=0.99"),
        hpa: CompositeHpa::Recommended,
    },
    Variant {
        name: "SLO mode told the batch (inflightTarget 8)",
        metadata: Some("inflightTarget=8"),
        hpa: CompositeHpa::Recommended,
    },
    Variant {
        name: "seasonal floor, 900 s season",
        metadata: Some("forecastPeriodSeconds=900"),
        hpa: CompositeHpa::Recommended,
    },
];

/// A stretch above twice the causal oracle's replicas longer than this counts as holding.
pub const HOLD_S: f64 = 300.0;

/// One variant's summary over the suite, as written to `ablation.json`.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Row {
    pub name: String,
    /// The options that reproduce the variant's suite.
    pub flags: String,
    /// Composite GPU-hours over keda-prometheus's, median over scenarios.
    pub median_vs_keda_prometheus: Option<f64>,
    /// Scenarios where a real policy dominates the composite.
    pub dominated: usize,
    /// Scenarios where the composite held more than twice oracle-coldstart's replicas for longer
    /// than `HOLD_S`.
    pub holding: usize,
    /// Lowest composite SLO attainment over the smooth scenarios.
    pub worst_smooth_slo: f64,
    /// Composite SLO attainment, mean over all scenarios.
    pub mean_slo: f64,
    /// Composite GPU-hours summed over all scenarios.
    pub gpu_hours: f64,
}

/// The options a variant adds to the base command line.
fn flags(v: &Variant) -> String {
    let mut f = String::new();
    if let Some(m) = v.metadata {
        let _ = write!(f, "--composite-metadata {m}");
    }
    if v.hpa == CompositeHpa::Legacy {
        if !f.is_empty() {
            f.push(' ');
        }
        f.push_str("--composite-hpa legacy");
    }
    f
}

/// Summarises one suite's composite results.
pub fn summarise(name: &str, flags: String, s: &suite::Suite) -> Row {
    let composite = |sc: &ScenarioResult| {
        sc.policies
            .iter()
            .find(|p| p.name == "composite")
            .map(|p| (p.gpu_hours, p.slo_attainment))
    };
    let all: Vec<(f64, f64)> = s.scenarios.iter().filter_map(composite).collect();
    let worst_smooth_slo = s
        .scenarios
        .iter()
        .filter(|sc| SMOOTH.contains(&sc.name.as_str()))
        .filter_map(composite)
        .map(|(_, slo)| slo)
        .fold(1.0, f64::min);
    Row {
        name: name.to_string(),
        flags,
        median_vs_keda_prometheus: s.median_composite_vs_keda_prometheus,
        dominated: s
            .scenarios
            .iter()
            .filter(|sc| !sc.dominated_by.is_empty())
            .count(),
        holding: s
            .scenarios
            .iter()
            .filter(|sc| sc.over_twice_coldstart_s > HOLD_S)
            .count(),
        worst_smooth_slo,
        mean_slo: all.iter().map(|c| c.1).sum::<f64>() / all.len().max(1) as f64,
        gpu_hours: all.iter().map(|c| c.0).sum(),
    }
}

/// Runs the suite once per variant on `base`'s other settings. `base.composite_metadata` and
/// `base.composite_hpa` are replaced by each variant's.
pub fn run(base: &SimulateArgs) -> Result<Vec<Row>, SimError> {
    VARIANTS
        .iter()
        .map(|v| {
            let args = SimulateArgs {
                composite_metadata: v.metadata.map(str::to_string),
                composite_hpa: v.hpa,
                ..base.clone()
            };
            Ok(summarise(v.name, flags(v), &suite::run(&args)?))
        })
        .collect()
}

/// The rows as one Markdown table.
pub fn markdown(rows: &[Row], seed: u64) -> String {
    let mut md = String::from("# Composite ablation\n\n");
    let _ = writeln!(
        md,
        "`keda-gpu-sim --suite` once per variant (seed {}, {} scenarios); each variant changes one thing from the default. Columns: composite GPU-hours over keda-prometheus's (median over scenarios), scenarios where a real policy dominates the composite, scenarios where it held more than twice oracle-coldstart's replicas for over {:.0} s, its lowest SLO attainment on the smooth scenarios, its mean SLO attainment and its GPU-hours over all scenarios.\n",
        seed,
        suite::SCENARIOS.len(),
        HOLD_S
    );
    let _ = writeln!(
        md,
        "| variant | options | median x keda-prometheus | dominated | holding > 2x | worst smooth SLO | mean SLO | GPU-h |"
    );
    let _ = writeln!(md, "|---|---|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let median = r
            .median_vs_keda_prometheus
            .map_or("-".into(), |m| format!("{m:.2}"));
        let flags = if r.flags.is_empty() {
            "(none)".to_string()
        } else {
            format!("`{}`", r.flags)
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {:.1} % | {:.1} % | {:.1} |",
            r.name,
            flags,
            median,
            r.dominated,
            r.holding,
            100.0 * r.worst_smooth_slo,
            100.0 * r.mean_slo,
            r.gpu_hours
        );
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::suite::{PolicyRow, Suite};

    fn scenario(name: &str, composite: (f64, f64), other: (f64, f64), held: f64) -> ScenarioResult {
        let row = |n: &str, (g, s): (f64, f64)| PolicyRow {
            name: n.into(),
            gpu_hours: g,
            vs_oracle: None,
            vs_oracle_coldstart: None,
            slo_attainment: s,
            e2e_slo_attainment: s,
        };
        let dominated =
            suite::dominates(&row("keda-prometheus", other), &row("composite", composite));
        ScenarioResult {
            name: name.into(),
            spec: String::new(),
            policies: vec![row("composite", composite), row("keda-prometheus", other)],
            dominated_by: if dominated {
                vec!["keda-prometheus".into()]
            } else {
                vec![]
            },
            over_twice_coldstart_s: held,
        }
    }

    #[test]
    fn a_row_counts_what_its_columns_say() {
        let s = Suite {
            seed: 7,
            scenarios: vec![
                scenario("poisson-low", (2.0, 0.99), (4.0, 0.99), 0.0),
                scenario("ramp-high", (9.0, 0.97), (10.0, 1.0), 600.0),
                scenario("spike-high", (10.0, 0.70), (9.0, 0.80), 301.0),
                scenario("onoff-high", (5.0, 0.60), (20.0, 0.90), 299.0),
            ],
            median_composite_vs_keda_prometheus: Some(0.7),
        };
        let r = summarise("x", String::new(), &s);
        assert_eq!(r.dominated, 1, "only spike-high is dominated");
        assert_eq!(
            r.holding, 2,
            "600 s and 301 s are over {HOLD_S} s, 299 s is not"
        );
        assert_eq!(
            r.worst_smooth_slo, 0.97,
            "the smooth scenarios are poisson-low and ramp-high"
        );
        assert!((r.mean_slo - 0.815).abs() < 1e-12);
        assert_eq!(r.gpu_hours, 26.0);
    }

    #[test]
    fn every_variant_names_the_options_that_reproduce_it() {
        let names: Vec<String> = VARIANTS.iter().map(flags).collect();
        assert_eq!(names[0], "", "the default adds nothing");
        assert_eq!(names[1], "--composite-hpa legacy");
        assert!(names[2].starts_with("--composite-metadata ttftObjectiveMs=,"));
        // Every override goes through the scaler's parser, so a renamed key fails here.
        for v in VARIANTS {
            let overrides = crate::parse_overrides(v.metadata).unwrap();
            let meta = crate::policy::composite_metadata(8, 2.0, 100, 1.0, &overrides);
            let map = meta.into_iter().collect();
            keda_gpu_scaler::spec::parse(&map).unwrap_or_else(|e| panic!("{}: {e}", v.name));
        }
    }
}
