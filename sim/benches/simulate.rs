//! Wall time of `simulate` on a 24-hour, 50 req/s synthetic trace through all seven policies,
//! against the 60 s budget and against a baseline measured in the same run (generating the trace
//! and walking it once); the suite; and a `--sweep` of one suite scenario against one plain run of
//! the same scenario, measured in the same run. Prints; asserts nothing.

use std::time::Instant;

use keda_gpu_sim::{self as sim, ClusterConfig, CostModel, PolicyName, Setup, SimConfig};

fn main() {
    let duration_s = 86_400.0;
    let cost = CostModel::default();
    let shape = sim::Shape::parse("poisson:rate=50", duration_s).expect("valid generator");

    let t0 = Instant::now();
    let trace = sim::trace::generate(&shape, duration_s, &cost, 1);
    let work: f64 = trace.requests.iter().map(|r| r.work_s).sum();
    let baseline = t0.elapsed().as_secs_f64();

    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cfg = SimConfig {
        cluster: ClusterConfig {
            cost: cost.clone(),
            cold_start_s: 60.0,
            timeout_s: 60.0,
            slo_s: 5.0,
            ttft_slo_s: 2.0,
            tpot_slo_s: 2.0 * cost.decode_s_per_token,
            grace_s: f64::INFINITY,
            remove_by_remaining_work: false,
        },
        setup: Setup {
            max_replicas: 100,
            slo_s: 2.0,
            slo_is_ttft: true,
            cold_start_s: 60.0,
            min_replicas: 0,
            composite_overrides: Vec::new(),
            composite_hpa: Default::default(),
            batch: cost.batch,
            scrape_s: 15.0,
            capacity_factor: 1.0,
        },
        policies: PolicyName::ALL.to_vec(),
        threads,
        record_requests: false,
        record_decisions: false,
    };
    let t1 = Instant::now();
    let report = sim::simulate(&trace, &cfg, 1.0, 1.0, 1).expect("simulation runs");
    let json = serde_json::to_string(&report).expect("serialises");
    let md = sim::report::markdown(&report);
    let svg = sim::report::svg(&report);
    let wall = t1.elapsed().as_secs_f64();

    println!(
        "trace: {} requests over 24 h ({:.0} s of work), {threads} threads",
        trace.requests.len(),
        work
    );
    println!("baseline (generate + walk the trace): {baseline:.3} s");
    println!(
        "simulate, 9 policies + report ({} B json, {} B md, {} B svg): {wall:.3} s",
        json.len(),
        md.len(),
        svg.len()
    );
    println!("ratio to baseline: {:.1}x", wall / baseline);
    println!(
        "ratio to the 60 s budget: {:.3} ({})",
        wall / 60.0,
        if wall < 60.0 { "within" } else { "OVER" }
    );
    for p in &report.policies {
        println!(
            "  {:<16} GPU-h {:>8.1}  SLO {:>6.2} %  p95 {:>6.2} s",
            p.name,
            p.gpu_hours,
            100.0 * p.slo_attainment,
            p.latency_p95_s
        );
    }

    // The suite: 14 one-hour scenarios through all nine policies, as `simulate --suite` runs it.
    let dir = std::env::temp_dir().join(format!("kgs-suite-bench-{}", std::process::id()));
    let args = sim::SimulateArgs {
        suite: true,
        suite_trace: std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
            .join("traces/AzureLLMInferenceTrace_code.csv"),
        ..sim::SimulateArgs::with_defaults(dir.clone())
    };
    let t2 = Instant::now();
    let suite = sim::run_suite(&args).expect("suite runs");
    let suite_wall = t2.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "suite: {} scenarios x 9 policies: {suite_wall:.3} s; ratio to baseline {:.1}x; ratio to the 60 s budget {:.3} ({})",
        suite.scenarios.len(),
        suite_wall / baseline,
        suite_wall / 60.0,
        if suite_wall < 60.0 { "within" } else { "OVER" }
    );

    // A sweep of one suite scenario (7 real policies x 10 factors + 2 oracles x 7) against one plain
    // run of it (9 replays), both on the same trace and threads.
    let scenario = sim::SimulateArgs {
        generator: Some("step:low=5,high=40,at=1200".into()),
        seed: sim::suite::SEED,
        ..sim::SimulateArgs::with_defaults(std::env::temp_dir())
    };
    let (trace, cfg, ..) = sim::prepare(&scenario).expect("valid scenario");
    let t3 = Instant::now();
    sim::simulate(&trace, &cfg, 1.0, 1.0, sim::suite::SEED).expect("simulation runs");
    let plain_wall = t3.elapsed().as_secs_f64();
    let t4 = Instant::now();
    let sweep = sim::sweep::sweep_scenario("step-high", "step", &trace, &cfg).expect("sweep runs");
    let sweep_wall = t4.elapsed().as_secs_f64();
    let replays: usize = sweep.curves.iter().map(|c| c.points.len()).sum();
    println!(
        "sweep of step-high ({replays} replays): {sweep_wall:.3} s; plain run (9 replays): {plain_wall:.3} s; ratio {:.1}x",
        sweep_wall / plain_wall
    );
}
