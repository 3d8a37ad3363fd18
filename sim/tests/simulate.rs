//! The simulator end to end through the library: each policy on a step trace behaves as its rules
//! say, replays are deterministic, the composite policy decides what the server's engine decides
//! on the same readings, the Azure trace replays, and bad input gets a clear error.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keda_gpu_scaler::config::Settings;
use keda_gpu_scaler::engine::{Engine, EntryKey};
use keda_gpu_scaler::sources::{
    Readings, SampleRequest, SignalReading, Source, SourceKind, Sources,
};
use keda_gpu_sim::{
    self as sim, cluster::Cluster, metrics::Metrics, policy, policy::Policy as _, PolicyName,
    PolicyReport, Report, SimulateArgs,
};

fn args(out: &std::path::Path) -> SimulateArgs {
    SimulateArgs {
        generator: Some("step:low=2,high=20,at=900".into()),
        duration_s: 2700.0,
        max_replicas: 30,
        seed: 7,
        ..SimulateArgs::with_defaults(out.to_path_buf())
    }
}

fn policy<'a>(r: &'a Report, name: &str) -> &'a PolicyReport {
    r.policies
        .iter()
        .find(|p| p.name == name)
        .unwrap_or_else(|| panic!("{name} missing"))
}

/// Replicas requested at time t (from the timeline).
fn replicas_at(p: &PolicyReport, t: f64) -> u32 {
    p.timeline
        .iter()
        .rev()
        .find(|s| s.t <= t)
        .map_or(0, |s| s.replicas)
}

fn step_report() -> &'static Report {
    static REPORT: std::sync::OnceLock<Report> = std::sync::OnceLock::new();
    REPORT.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        sim::run(&args(dir.path())).unwrap().report
    })
}

#[test]
fn cli_contract_writes_the_three_files_with_the_documented_fields() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = args(dir.path());
    a.policies = Some("composite,oracle".into());
    a.duration_s = 900.0;
    let summary = sim::run(&a).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary.report_json).unwrap()).unwrap();
    let policies = json["policies"].as_array().unwrap();
    assert_eq!(policies.len(), 2);
    for p in policies {
        for key in [
            "name",
            "gpu_hours",
            "slo_attainment",
            "latency_p95_s",
            "latency_p99_s",
            "requests",
            "timed_out",
            "replicas_max",
            "replicas_mean",
            "scaling_events",
            "timeline",
        ] {
            assert!(!p[key].is_null(), "{key} missing in {}", p["name"]);
        }
        let s = p["slo_attainment"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&s));
        let tl = p["timeline"].as_array().unwrap();
        assert_eq!(tl.len(), 60, "one sample per 15 s sync");
        for key in ["t", "load_rps", "replicas", "ready", "queue", "p95_s"] {
            assert!(tl[10].get(key).is_some(), "timeline.{key}");
        }
    }
    let md = std::fs::read_to_string(&summary.report_md).unwrap();
    assert!(md.contains("| composite |") && md.contains("| oracle |"));
    let svg = std::fs::read_to_string(&summary.chart_svg).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert_eq!(svg.matches("GPU-h ").count(), 2, "one panel per policy");
}

#[test]
fn decisions_out_writes_the_composites_decision_at_every_scrape() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = args(dir.path());
    a.policies = Some("composite,cpu-hpa".into());
    a.duration_s = 1800.0;
    a.decisions_out = true;
    let summary = sim::run(&a).unwrap();
    // Only the scaler decides; the baselines write no file.
    assert!(!dir.path().join("decisions-cpu-hpa.jsonl").exists());
    let text = std::fs::read_to_string(dir.path().join("decisions-composite.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 120, "one decision per 15 s scrape");
    let times: Vec<f64> = lines.iter().map(|d| d["at"].as_f64().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[1] - w[0] == 15.0), "{times:?}");
    // SLO mode decides, and says why: the planner's view is in every decision once it has data.
    let late = &lines[100];
    assert_eq!(late["limiting"], "objective");
    let o = &late["objective"];
    for key in [
        "arrivals_per_s",
        "replica_rate",
        "replica_rate_from",
        "window_s",
        "planned_miss_share",
    ] {
        assert!(!o[key].is_null(), "objective.{key} missing: {o}");
    }
    // The step from 2 to 20 req/s at 900 s: what the planner reads follows it.
    let arrivals = |d: &serde_json::Value| d["objective"]["arrivals_per_s"].as_f64().unwrap_or(0.0);
    assert!(arrivals(&lines[40]) < 6.0 && arrivals(&lines[100]) > 12.0);
    // What KEDA was told after the step is what the replay scaled to: the HPA's replicas at the
    // end are the last decisions' desired, rounded up (AverageValue, target 1).
    let report = summary.report;
    let comp = report
        .policies
        .iter()
        .find(|p| p.name == "composite")
        .unwrap();
    let desired = lines.last().unwrap()["desired"].as_f64().unwrap();
    let last = comp.timeline.last().unwrap().replicas as f64;
    assert!(
        (last - desired.ceil()).abs() <= 1.0,
        "{last} replicas for desired {desired}"
    );
}

#[test]
fn same_inputs_and_seed_give_identical_output_and_another_seed_differs() {
    let d1 = tempfile::tempdir().unwrap();
    let d2 = tempfile::tempdir().unwrap();
    let d3 = tempfile::tempdir().unwrap();
    let mut a = args(d1.path());
    a.duration_s = 1200.0;
    a.policies = Some("composite,keda-prometheus,knative-kpa".into());
    sim::run(&a).unwrap();
    a.out = d2.path().to_path_buf();
    sim::run(&a).unwrap();
    a.out = d3.path().to_path_buf();
    a.seed = 8;
    sim::run(&a).unwrap();
    for f in ["report.json", "report.md", "chart.svg"] {
        let one = std::fs::read(d1.path().join(f)).unwrap();
        assert_eq!(one, std::fs::read(d2.path().join(f)).unwrap(), "{f}");
    }
    assert_ne!(
        std::fs::read(d1.path().join("report.json")).unwrap(),
        std::fs::read(d3.path().join("report.json")).unwrap()
    );
}

#[test]
fn every_policy_scales_up_for_the_step_and_the_oracle_meets_the_slo() {
    let r = step_report();
    let oracle = policy(r, "oracle");
    for p in &r.policies {
        let before = replicas_at(p, 880.0);
        let after = p
            .timeline
            .iter()
            .filter(|s| s.t >= 1200.0)
            .map(|s| s.replicas)
            .max()
            .unwrap();
        if p.name == "userscale" {
            // Its 200 ms latency threshold is below any LLM request's service time, so its rule
            // (+2 per 30 s while latency is over) takes it to the maximum before the step.
            assert_eq!(before, 30, "userscale");
            assert_eq!(after, 30, "userscale");
        } else {
            assert!(after > before, "{}: {before} -> {after}", p.name);
        }
        // The oracle plans for the SLO with perfect foresight: a policy may be cheaper, but not
        // cheaper and better at once.
        assert!(
            p.gpu_hours >= oracle.gpu_hours * 0.999 || p.slo_attainment < oracle.slo_attainment,
            "{} is cheaper than the oracle and meets the SLO as often",
            p.name
        );
        assert_eq!(p.requests, oracle.requests);
        assert!(p.completed + p.timed_out <= p.requests);
    }
    // The oracle has no cold start and perfect foresight: it has capacity when the step lands.
    assert!(
        oracle
            .time_to_capacity_s
            .iter()
            .all(|t| t.is_some_and(|t| t <= 15.0)),
        "{:?}",
        oracle.time_to_capacity_s
    );
    assert!(oracle.slo_attainment >= 0.99, "{}", oracle.slo_attainment);
}

#[test]
fn hpa_based_policies_move_in_sync_periods_and_respect_their_rates() {
    let r = step_report();
    for name in ["cpu-hpa", "keda-prometheus", "composite"] {
        let p = policy(r, name);
        for w in p.timeline.windows(2) {
            let (a, b) = (w[0].replicas as i64, w[1].replicas as i64);
            match name {
                // max(100 %, 5 pods) per 10 s: at most two steps per 15 s sample.
                "cpu-hpa" => assert!(b <= (a * 4).max(a + 10).max(a * 2 + 5), "{name} {a}->{b}"),
                // max(100 %, 2 pods) per 30 s.
                // (From zero KEDA's activation to 1 and an HPA sync can fall in one sample.)
                "keda-prometheus" => assert!(b <= (2 * a).max(a + 2).max(3), "{name} {a}->{b}"),
                // Kubernetes default: max(100 %, 4 pods) per 15 s.
                _ => assert!(b <= (2 * a).max(a + 4).max(5), "{name} {a}->{b}"),
            }
        }
    }
    // keda-prometheus: scale-down needs a 300 s window, so it never drops within 5 minutes of
    // the step.
    let kp = policy(r, "keda-prometheus");
    let at_peak = replicas_at(kp, 1200.0);
    assert!(replicas_at(kp, 1300.0) >= at_peak);
}

#[test]
fn step_rules_of_the_direct_controllers() {
    let r = step_report();
    // userscale: at most +2 per step with a 30 s cooldown: +2 per 30 s at best.
    let us = policy(r, "userscale");
    for w in us.timeline.windows(3) {
        assert!(
            w[2].replicas as i64 - w[0].replicas as i64 <= 2,
            "userscale rose faster than +2 / 30 s"
        );
        assert!(
            w[0].replicas as i64 - w[2].replicas as i64 <= 1,
            "userscale fell faster than -1 / 30 s"
        );
    }
    // gpu-steps: at most +3 every 3 s, -1 every 3 s.
    let gs = policy(r, "gpu-steps");
    for w in gs.timeline.windows(2) {
        assert!(w[1].replicas as i64 - w[0].replicas as i64 <= 15);
        assert!(w[0].replicas as i64 - w[1].replicas as i64 <= 5);
    }
    // knative-kpa: it sees the step within its 6 s panic window (a 2 s tick), so every surge has
    // capacity one cold start (60 s) plus those few seconds later, and never "never".
    let kpa = policy(r, "knative-kpa");
    assert!(!kpa.time_to_capacity_s.is_empty());
    for t in &kpa.time_to_capacity_s {
        let t = t.expect("knative-kpa reaches every surge's capacity");
        assert!((60.0..=75.0).contains(&t), "{t} s to capacity");
    }
}

/// Hands the engine whatever the simulator measured last, as a real source would hand it what it
/// read: the readings at the simulated time, with the simulator's context (completions, starting).
struct Replayed(Mutex<Readings>);

impl Source for Replayed {
    fn sample<'a>(
        &'a self,
        requests: &'a [SampleRequest],
        _t: f64,
    ) -> Pin<Box<dyn Future<Output = Vec<Readings>> + Send + 'a>> {
        let readings = self.0.lock().unwrap().clone();
        Box::pin(async move { vec![readings; requests.len()] })
    }

    fn deadline(&self) -> Duration {
        Duration::ZERO
    }
}

#[tokio::test]
async fn composite_decides_what_the_servers_engine_decides_on_the_same_readings() {
    // The simulator's composite policy must be the server: the same metadata, registered with the
    // server's engine (its parser, its entry, its scoring, its fail-safe), fed the readings the
    // simulator builds, gives the very decision the policy made at every scrape.
    let setup = policy::Setup {
        max_replicas: 30,
        slo_s: 5.0,
        slo_is_ttft: false,
        cold_start_s: 0.0,
        min_replicas: 0,
        composite_overrides: Vec::new(),
        composite_hpa: Default::default(),
        batch: 8,
        scrape_s: 15.0,
        capacity_factor: 1.0,
    };
    let replayed = Arc::new(Replayed(Mutex::new(Readings::default())));
    let engine = Engine::with_sources(
        Settings::default().engine,
        Sources::default().with(SourceKind::Scrape, replayed.clone()),
    );
    let metadata = policy::composite_metadata(8, 5.0, 30, 1.0, &[])
        .into_iter()
        .collect();
    let entry = engine
        .entry(EntryKey::new("sim".into(), "composite".into(), metadata))
        .unwrap();
    let spec = entry.spec.clone();
    let mut simulated = policy::Composite::new(&setup).unwrap();
    let cfg = sim::ClusterConfig {
        cost: sim::CostModel::default(),
        cold_start_s: 0.0,
        timeout_s: 60.0,
        slo_s: 5.0,
        ttft_slo_s: 2.0,
        tpot_slo_s: 0.05,
        grace_s: f64::INFINITY,
        remove_by_remaining_work: false,
    };
    let mut cluster = Cluster::new(cfg);
    cluster.warm_start(2);
    let shape = sim::Shape::parse("poisson:rate=12", 300.0).unwrap();
    let trace = sim::trace::generate(&shape, 300.0, &sim::CostModel::default(), 3);
    let mut metrics = Metrics::new(15.0, 300.0);
    let names: Vec<String> = spec.signals.iter().map(|s| s.name.clone()).collect();
    let (mut next, mut compared) = (0, 0);
    for tick in 1..=300u32 {
        let now = tick as f64;
        cluster.advance(now, &trace.requests, &mut next);
        if tick % 15 != 0 {
            continue;
        }
        metrics.scrape(&cluster);
        use sim::policy::Policy;
        let _ = simulated.control(now, &cluster, &metrics);
        let values = policy::Composite::readings(&names, &metrics, spec.latency_window_s);
        *replayed.0.lock().unwrap() = Readings {
            signals: values
                .into_iter()
                .map(|pods| SignalReading { pods, note: None })
                .collect(),
            at: Some(now),
            context: *simulated.last_context().expect("the composite sampled"),
            ..Readings::default()
        };
        engine.sample(false).await;
        let served = entry.state().decision.expect("the engine decided");
        assert_eq!(simulated.last_decision(), Some(&*served), "t={now}");
        compared += 1;
    }
    assert_eq!(compared, 20);
    let d = simulated.last_decision().unwrap();
    assert!(
        d.has_data && d.desired > 1.0,
        "12 req/s needs more than one replica: {d:?}"
    );
    assert_eq!(
        d.signals.len(),
        3,
        "SLO mode reads queue, in-flight and TTFT"
    );
    // What was met, as the planner reads it from the TTFT histograms, against the requests the
    // cluster completed: the 12 req/s of the last 5 minutes, about 3600 (the first window less).
    let o = d.objective.unwrap();
    let completed = cluster.outcomes.completed as f64;
    assert!(
        (o.met_last_hour_requests - completed).abs() < 0.1 * completed,
        "{} requests counted, {completed} completed",
        o.met_last_hour_requests
    );
    assert!(o.met_recently.is_some_and(|m| (0.0..=1.0).contains(&m)));
}

#[test]
fn keda_activation_and_cooldown_in_a_replay() {
    // Bursts of 60 s every 15 min: composite and keda-prometheus scale to zero after the 300 s
    // cooldown and come back on the next burst.
    let dir = tempfile::tempdir().unwrap();
    let mut a = args(dir.path());
    a.generator = Some("onoff:on_rate=10,off_rate=0,on=60,off=840".into());
    a.duration_s = 2700.0;
    a.policies = Some("composite,keda-prometheus".into());
    let r = sim::run(&a).unwrap().report;
    let p = policy(&r, "composite");
    assert_eq!(p.replicas_min, 0, "composite never reached zero");
    // Zero only after the cooldown: not within 300 s of a burst's end (60 s, 960 s, ...), give or
    // take the 30 s polling interval.
    for s in &p.timeline {
        let since_burst_end = (s.t - 60.0).rem_euclid(900.0);
        if s.replicas == 0 {
            assert!(
                since_burst_end >= 300.0,
                "at zero {since_burst_end} s after a burst"
            );
        }
    }
    // Each burst activates it again.
    assert!(replicas_at(p, 900.0 + 75.0) >= 1 && replicas_at(p, 1800.0 + 75.0) >= 1);
    // keda-prometheus's GPU-memory trigger reads the weights' memory even when idle, and with
    // activationThreshold 0 that keeps it active: it never scales to zero.
    let kp = policy(&r, "keda-prometheus");
    assert!(kp.replicas_min >= 1, "{}", kp.replicas_min);
}

#[test]
fn azure_code_trace_replays_at_a_load_that_needs_several_replicas() {
    let path = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .join("traces/AzureLLMInferenceTrace_code.csv");
    assert!(
        path.exists(),
        "{} is part of the repository",
        path.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let mut a = args(dir.path());
    a.generator = None;
    a.trace = Some(path);
    a.rate_scale = 8.0;
    a.policies = Some("composite,oracle".into());
    let r = sim::run(&a).unwrap().report;
    assert_eq!(r.trace.requests, 8 * 8819);
    let oracle = policy(&r, "oracle");
    assert!(oracle.replicas_max >= 4, "{}", oracle.replicas_max);
    let c = policy(&r, "composite");
    assert!(c.gpu_hours_vs_oracle.unwrap() >= 1.0);
}

#[test]
fn bad_input_gets_an_error_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    type Edit = Box<dyn Fn(&mut SimulateArgs)>;
    let cases: Vec<(Edit, &str)> = vec![
        (
            Box::new(|a| a.rate_scale = -2.0),
            "--rate-scale: '-2' is not accepted",
        ),
        (Box::new(|a| a.time_scale = 0.0), "--time-scale"),
        (
            Box::new(|a| a.policies = Some("composite,hpa".into())),
            "unknown policy 'hpa'",
        ),
        (
            Box::new(|a| a.generator = Some("sawtooth".into())),
            "unknown generator 'sawtooth'",
        ),
        (Box::new(|a| a.slo_ms = f64::NAN), "--slo-ms"),
        (Box::new(|a| a.batch = Some(0)), "--batch"),
        (Box::new(|a| a.max_replicas = 0), "--max-replicas"),
    ];
    for (edit, want) in cases {
        let mut a = args(dir.path());
        edit(&mut a);
        let e = sim::run(&a).unwrap_err().to_string();
        assert!(e.contains(want), "{e:?} lacks {want:?}");
    }
    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03.98,10,2\n2023-11-16 18:17:04,10\n").unwrap();
    let mut a = args(dir.path());
    a.generator = None;
    a.trace = Some(bad);
    let e = sim::run(&a).unwrap_err().to_string();
    assert!(
        e.contains("trace line 3") && e.contains("expected 3 fields"),
        "{e}"
    );
    a.trace = Some(dir.path().join("missing.csv"));
    assert!(sim::run(&a)
        .unwrap_err()
        .to_string()
        .contains("missing.csv"));
    let profile = dir.path().join("profile.json");
    std::fs::write(&profile, r#"{"decode_s_per_tokn": 0.02}"#).unwrap();
    let mut a = args(dir.path());
    a.profile = Some(profile);
    let e = sim::run(&a).unwrap_err().to_string();
    assert!(
        e.contains("--profile") && e.contains("decode_s_per_tokn"),
        "{e}"
    );
    assert_eq!(
        sim::parse_policies(Some("oracle,composite")).unwrap(),
        vec![PolicyName::Composite, PolicyName::Oracle]
    );
}

/// The committed reference runs are what the simulator produces today (docs cannot drift).
/// Regenerate with the commands in docs/simulation/README.md.
#[test]
fn committed_reference_reports_are_reproduced() {
    let root = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    std::env::set_current_dir(&root).unwrap();
    let trace = PathBuf::from("traces/AzureLLMInferenceTrace_code.csv");
    let dir = tempfile::tempdir().unwrap();
    let mut step = args(dir.path());
    step.generator = Some("step:low=5,high=40,at=1200".into());
    step.duration_s = 3600.0;
    step.max_replicas = 100;
    let mut azure = args(dir.path());
    azure.generator = None;
    azure.trace = Some(trace);
    azure.rate_scale = 4.0;
    azure.max_replicas = 100;
    let runs = vec![(step, "step-5-to-40"), (azure, "azure-code-x4")];
    for (a, name) in runs {
        let summary = sim::run(&a).unwrap();
        let committed =
            std::fs::read_to_string(root.join("docs/simulation").join(name).join("report.md"))
                .unwrap();
        assert_eq!(
            summary.markdown, committed,
            "docs/simulation/{name}/report.md is stale"
        );
    }
}

/// The committed suite and ablation tables (docs/simulation/suite, docs/simulation/ablation) are
/// what `keda-gpu-sim --suite` and `--ablation` write today, byte for byte. The longest test here
/// (about two minutes unoptimised): it is what keeps the docs' tables honest.
#[test]
fn committed_suite_and_ablation_are_reproduced() {
    let root = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    std::env::set_current_dir(&root).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let base = SimulateArgs::with_defaults(dir.path().to_path_buf());
    sim::run_suite(&SimulateArgs {
        suite: true,
        ..base.clone()
    })
    .unwrap();
    sim::run_ablation(&SimulateArgs {
        ablation: true,
        ..base
    })
    .unwrap();
    for (folder, file) in [
        ("suite", "suite.md"),
        ("suite", "suite.json"),
        ("ablation", "ablation.md"),
        ("ablation", "ablation.json"),
    ] {
        let committed = root.join("docs/simulation").join(folder).join(file);
        let committed = std::fs::read_to_string(&committed).unwrap();
        let fresh = std::fs::read_to_string(dir.path().join(file)).unwrap();
        assert!(
            fresh == committed,
            "docs/simulation/{folder}/{file} is stale: rerun `keda-gpu-sim --{folder} --out docs/simulation/{folder}`"
        );
    }
}

/// The oracles are the references every policy is measured against: with perfect foresight they
/// must meet the SLO on every generator at default settings, or the metric or the oracle is wrong.
#[test]
fn the_oracles_meet_the_slo_on_every_generator() {
    for &(name, generator, _) in sim::suite::SCENARIOS {
        let Some(generator) = generator else {
            continue;
        };
        let dir = tempfile::tempdir().unwrap();
        let mut a = args(dir.path());
        a.generator = Some(generator.to_string());
        a.duration_s = 1800.0;
        a.max_replicas = 100;
        a.policies = Some("oracle,oracle-coldstart".into());
        let r = sim::run(&a).unwrap().report;
        for p in &r.policies {
            assert!(
                p.slo_attainment >= 0.99,
                "{name}: {} meets the SLO for only {:.2} %",
                p.name,
                100.0 * p.slo_attainment
            );
            assert_eq!(p.timed_out, 0, "{name}: {}", p.name);
        }
        // Paying the cold start costs GPU-hours, never SLO.
        assert!(policy(&r, "oracle-coldstart").gpu_hours >= policy(&r, "oracle").gpu_hours);
    }
}

/// `--composite-metadata` reaches the scaler's parser: a typo is refused naming the key, and an
/// override changes the composite's decisions.
#[test]
fn composite_metadata_overrides_go_through_the_parser() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = args(dir.path());
    a.duration_s = 1500.0;
    a.policies = Some("composite".into());
    a.composite_metadata = Some("queueTarjet=3".into());
    let e = sim::run(&a).unwrap_err().to_string();
    assert!(
        e.contains("queueTarjet") && e.contains("queueTarget"),
        "{e}"
    );
    a.composite_metadata = Some("novalue".into());
    let e = sim::run(&a).unwrap_err().to_string();
    assert!(
        e.contains("--composite-metadata") && e.contains("key=value"),
        "{e}"
    );
    a.composite_metadata = None;
    let base = sim::run(&a).unwrap().report;
    a.composite_metadata = Some("maxReplicas=2".into());
    let capped = sim::run(&a).unwrap().report;
    assert_eq!(capped.composite_metadata["maxReplicas"], "2");
    assert!(policy(&capped, "composite").replicas_max <= 2);
    assert!(policy(&base, "composite").replicas_max > 2);
}

/// The committed scale-down table (docs/simulation/scale-down) is what
/// `keda-gpu-sim --suite --scale-down --generated-tokens 400` writes today, and the composite
/// with `podDeletionCost` writes annotations only where it removes pods.
#[test]
fn committed_scale_down_table_is_reproduced() {
    let root = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    std::env::set_current_dir(&root).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let args = SimulateArgs {
        suite: true,
        scale_down: true,
        generated_tokens: Some(400.0),
        ..SimulateArgs::with_defaults(dir.path().to_path_buf())
    };
    let rows = sim::run_scale_down(&args).unwrap();
    for file in ["scale-down.md", "scale-down.json"] {
        let committed =
            std::fs::read_to_string(root.join("docs/simulation/scale-down").join(file)).unwrap();
        let fresh = std::fs::read_to_string(dir.path().join(file)).unwrap();
        assert!(
            fresh == committed,
            "docs/simulation/scale-down/{file} is stale: rerun the command in docs/simulation/README.md"
        );
    }
    for r in &rows {
        assert_eq!(r.newest_first.patches_per_hour, 0.0, "{}", r.name);
        // By construction: at most one round per 15 s, each at most every pod.
        assert!(
            r.least_loaded_first.patches_per_hour <= 240.0 * 100.0,
            "{}",
            r.name
        );
    }
    assert!(rows
        .iter()
        .any(|r| r.least_loaded_first.patches_per_hour > 0.0));
    // Draining first cuts at least 80 % fewer than the ReplicaSet's own choice.
    let cut = |f: fn(&sim::scaledown::Row) -> u64| rows.iter().map(f).sum::<u64>();
    let (newest, drained) = (cut(|r| r.newest_first.cut), cut(|r| r.drained_first.cut));
    assert!(newest > 0 && drained * 5 <= newest, "{newest} -> {drained}");
}
