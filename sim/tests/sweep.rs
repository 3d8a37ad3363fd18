//! `keda-gpu-sim --sweep` end to end: the factor-1 point of every policy is its plain run
//! exactly, the sweep writes its three outputs, and the capacity factor moves a policy's cost.

use keda_gpu_sim::{self as sim, sweep, SimulateArgs};

fn args(out: &std::path::Path) -> SimulateArgs {
    SimulateArgs {
        generator: Some("step:low=2,high=10,at=300".into()),
        duration_s: 900.0,
        seed: 7,
        ..SimulateArgs::with_defaults(out.to_path_buf())
    }
}

/// Tags balance: every `<x ...>` is closed by `</x>` in order (`<x .../>` closes itself).
fn tags_balance(xml: &str) -> bool {
    let mut open: Vec<String> = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find('<') {
        let Some(j) = rest[i..].find('>') else {
            return false;
        };
        let tag = &rest[i + 1..i + j];
        rest = &rest[i + j + 1..];
        if let Some(name) = tag.strip_prefix('/') {
            if open.pop().as_deref() != Some(name.trim()) {
                return false;
            }
        } else if !tag.ends_with('/') {
            let name = tag.split_whitespace().next().unwrap_or("");
            open.push(name.to_string());
        }
    }
    open.is_empty()
}

#[test]
fn sweep_writes_its_outputs_and_factor_one_is_the_plain_run_exactly() {
    let plain_dir = tempfile::tempdir().unwrap();
    let plain = sim::run(&args(plain_dir.path())).unwrap().report;
    // The command line itself, as a user runs it.
    let dir = tempfile::tempdir().unwrap();
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_keda-gpu-sim"))
        .args([
            "--sweep",
            "--generator",
            "step:low=2,high=10,at=300",
            "--duration-s",
            "900",
            "--seed",
            "7",
            "--out",
        ])
        .arg(dir.path())
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("sweep.json")).unwrap())
            .unwrap();
    let lib_dir = tempfile::tempdir().unwrap();
    let result = sim::run_sweep(&SimulateArgs {
        sweep: true,
        ..args(lib_dir.path())
    })
    .unwrap();
    assert!(
        std::fs::read(dir.path().join("sweep.json")).unwrap()
            == std::fs::read(lib_dir.path().join("sweep.json")).unwrap(),
        "the command line writes what the library computes"
    );
    assert_eq!(result.scenarios.len(), 1);
    let s = &result.scenarios[0];
    assert_eq!(s.name, "step");
    assert_eq!(s.curves.len(), plain.policies.len());
    for (c, p) in s.curves.iter().zip(&plain.policies) {
        assert_eq!(c.policy, p.name);
        assert_eq!(
            (c.default.gpu_hours, c.default.slo_attainment),
            (p.gpu_hours, p.slo_attainment),
            "{}: the factor-1 point is the default run",
            p.name
        );
        let n = if c.reference {
            sweep::REFERENCE_FACTORS.len()
        } else {
            sweep::SWEEP_FACTORS.len()
        };
        assert_eq!(c.points.len(), n, "{}", c.policy);
    }

    let md = std::fs::read_to_string(dir.path().join("sweep.md")).unwrap();
    assert!(md.contains("| composite |") && md.contains("| oracle (reference) |"));
    assert!(md.contains("GPU-h at 95 %"));
    assert!(md.contains("## SLO mode: asked against landed"));
    let slo_mode = &json["scenarios"][0]["slo_mode"];
    assert_eq!(slo_mode["asked_95"]["asked"], 0.95);
    assert_eq!(slo_mode["asked_99"]["asked"], 0.99);
    // The step scenario is not one of the suite's smooth ones: 99 % is not judged there.
    assert_eq!(slo_mode["asked_99"]["judged"], false);
    // With one scenario the median is that scenario's oracle-coldstart over its cheapest
    // baseline at 95 %.
    let oracle_curve = s
        .curves
        .iter()
        .find(|c| c.policy == "oracle-coldstart")
        .unwrap();
    let oracle = oracle_curve.default.gpu_hours;
    let expected = s.at_95.baseline_gpu_hours.map(|b| oracle / b);
    assert!(expected.is_some(), "a baseline reaches 95 % on the step");
    assert_eq!(result.median_oracle_coldstart_vs_baseline_at_95, expected);
    // Planned hotter, the oracle reaches 95 % for no more than its default plan costs, and the
    // work floor lies below both.
    let hot = oracle_curve.gpu_hours_at_95.unwrap();
    assert!(hot <= oracle, "{hot} > {oracle}");
    let b = s.at_95.baseline_gpu_hours.unwrap();
    assert_eq!(
        result.median_oracle_coldstart_at_95_vs_baseline,
        Some(hot / b)
    );
    assert!(s.work_floor_at_95 > 0.0 && s.work_floor_at_95 < hot);
    assert_eq!(
        result.median_work_floor_vs_baseline_at_95,
        Some(s.work_floor_at_95 / b)
    );
    assert!(md.contains("The room the yardstick leaves: oracle-coldstart"));
    let curves = json["scenarios"][0]["curves"].as_array().unwrap();
    for c in curves {
        for key in ["policy", "points", "envelope", "default", "gpu_hours_at_95"] {
            assert!(c.get(key).is_some(), "{key} missing in {}", c["policy"]);
        }
    }
    let svg = std::fs::read_to_string(dir.path().join("sweep-step.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert!(tags_balance(&svg), "unbalanced tags in the SVG");
    assert_eq!(
        svg.matches("<polyline").count(),
        s.curves.len(),
        "one polyline per policy"
    );
    assert_eq!(
        svg.matches("stroke-dasharray=\"5 3\"/>").count(),
        2 * s.curves.iter().filter(|c| c.reference).count(),
        "the oracles dashed, in the plot and the legend"
    );
}

#[test]
fn a_higher_capacity_factor_costs_keda_prometheus_no_more() {
    let dir = tempfile::tempdir().unwrap();
    let result = sim::run_sweep(&SimulateArgs {
        sweep: true,
        generator: Some("step:low=5,high=40,at=300".into()),
        policies: Some("keda-prometheus".into()),
        ..args(dir.path())
    })
    .unwrap();
    let c = &result.scenarios[0].curves[0];
    let at = |f: f64| c.points.iter().find(|p| p.factor == f).unwrap();
    assert!(
        at(2.0).gpu_hours <= at(0.4).gpu_hours,
        "{:?} against {:?}",
        at(2.0),
        at(0.4)
    );
    assert!(
        at(2.0).gpu_hours < at(0.4).gpu_hours,
        "the knob changes something"
    );
}
