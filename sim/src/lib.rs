//! `keda-gpu-sim`: replay a request trace through a cluster model, a metrics pipeline
//! and faithful KEDA + HPA models, under seven scaling policies (the composite one runs the
//! server's own `spec` + `score` code), and compare GPU-hours, SLO attainment and reaction time.

pub mod ablation;
pub mod cluster;
pub mod cost;
pub mod fromprom;
pub mod hpa;
pub mod html;
pub mod keda;
pub mod metrics;
pub mod policy;
pub mod replay;
pub mod report;
pub mod scaledown;
pub mod suite;
pub mod svg;
pub mod sweep;
pub mod trace;

use std::path::{Path, PathBuf};

pub use cluster::ClusterConfig;
pub use cost::CostModel;
pub use policy::{PolicyName, Setup};
pub use replay::SimConfig;
pub use report::{PolicyReport, Report};
pub use trace::{Shape, Trace, TraceFormat};

/// Why a simulation could not run. Each names the input at fault and what it accepts.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("trace line {line}: {message}")]
    Trace { line: usize, message: String },
    #[error("--generator: {0}")]
    Generator(String),
    #[error("--policies: {0}")]
    Policy(String),
    #[error("{name}: {message}")]
    Arg { name: &'static str, message: String },
    #[error("--profile {path}: {message}")]
    Profile { path: String, message: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("composite policy metadata rejected by the scaler's parser: {0}")]
    Spec(keda_gpu_scaler::spec::SpecError),
}

/// Parses `--composite-metadata key=value,...`.
pub fn parse_overrides(list: Option<&str>) -> Result<Vec<(String, String)>, SimError> {
    let Some(list) = list else {
        return Ok(Vec::new());
    };
    list.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                Ok((k.trim().to_string(), v.trim().to_string()))
            }
            _ => Err(SimError::Arg {
                name: "--composite-metadata",
                message: format!("'{}' is not accepted; expected key=value", pair.trim()),
            }),
        })
        .collect()
}

/// Command-line arguments of `keda-gpu-sim`.
#[derive(Clone, Debug, PartialEq, clap::Args)]
pub struct SimulateArgs {
    /// Trace file: the Azure LLM inference CSV (TIMESTAMP,ContextTokens,GeneratedTokens) or a
    /// plain CSV of `seconds[,cost_seconds]`.
    #[arg(
        long,
        value_name = "FILE",
        required_unless_present_any = ["generator", "suite", "ablation", "from_prometheus"],
        conflicts_with_all = ["generator", "suite", "ablation"]
    )]
    pub trace: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = TraceFormat::Auto)]
    pub trace_format: TraceFormat,
    /// Built-in load: NAME[:key=value,...], NAME one of poisson, step, ramp, diurnal, spike, onoff
    /// (e.g. `step:low=5,high=25,at=1200`).
    #[arg(long, value_name = "SPEC", conflicts_with_all = ["suite", "ablation"])]
    pub generator: Option<String>,
    /// Run the fixed panel of scenarios (every generator at two loads, the Azure code trace at two
    /// rate scales, fixed seeds) and write one table, `suite.md` and `suite.json`, under --out.
    #[arg(long, conflicts_with = "ablation")]
    pub suite: bool,
    /// Run the suite once per variant of the composite's configuration (one change at a time from
    /// the default) and write one row per variant, `ablation.md` and `ablation.json`, under --out.
    /// Replaces --composite-metadata and --composite-hpa with each variant's.
    #[arg(long)]
    pub ablation: bool,
    /// The iso-SLO yardstick: replay every real policy at each capacity factor of
    /// `sweep::SWEEP_FACTORS` (the oracles once), and write the GPU-hours each needs to reach
    /// 90, 95 and 99 % SLO attainment, `sweep.md`, `sweep.json` and `sweep-SCENARIO.svg`, under
    /// --out. With --trace, --generator or --suite.
    #[arg(long, conflicts_with = "ablation")]
    pub sweep: bool,
    /// With --suite: replay the composite per scenario without and with `podDeletionCost` (the
    /// ReplicaSet's own choice of pod against least loaded first) and write the requests cut on
    /// scale-down, `scale-down.md` and `scale-down.json`, under --out.
    #[arg(long, requires = "suite", conflicts_with_all = ["ablation", "sweep"])]
    pub scale_down: bool,
    /// The Azure code trace the suite replays.
    #[arg(
        long,
        value_name = "FILE",
        default_value = "traces/AzureLLMInferenceTrace_code.csv"
    )]
    pub suite_trace: PathBuf,
    /// The seed the suite's scenarios are replayed at (with --suite). The committed reports use
    /// the default; another seed replays the same panel with other draws (request sizes, thinning
    /// and copies), which tells a difference between two planners from the luck of one seed.
    #[arg(long, default_value_t = suite::SEED)]
    pub suite_seed: u64,
    /// Length of a generated trace, seconds.
    #[arg(long, default_value_t = 3600.0, allow_negative_numbers = true)]
    pub duration_s: f64,
    /// Multiplies the request rate (copies or thins requests).
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub rate_scale: f64,
    /// Multiplies timestamps (2 = replay at half the pace).
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub time_scale: f64,
    /// Comma-separated policies: cpu-hpa, keda-prometheus, userscale, gpu-steps, knative-kpa,
    /// wva, composite, oracle-coldstart, oracle (default: all).
    #[arg(long, value_name = "LIST")]
    pub policies: Option<String>,
    /// End-to-end latency objective, milliseconds: the headline SLO for traces without token
    /// counts, and the secondary (e2e) column for all.
    #[arg(long, default_value_t = 5000.0, allow_negative_numbers = true)]
    pub slo_ms: f64,
    /// Time-to-first-token objective (queue wait + prefill), milliseconds, for requests with tokens.
    #[arg(long, default_value_t = 2000.0, allow_negative_numbers = true)]
    pub ttft_slo_ms: f64,
    /// Time-per-output-token objective, milliseconds (default: twice the cost model's unloaded
    /// decode time per token).
    #[arg(long, allow_negative_numbers = true)]
    pub tpot_slo_ms: Option<f64>,
    /// Overrides of the composite's trigger metadata, `key=value,...` (an empty value removes the
    /// key), parsed by the scaler's own parser.
    #[arg(long, value_name = "KEY=VALUE,...")]
    pub composite_metadata: Option<String>,
    /// The HPA behaviour the composite's ScaledObject sets: `recommended` (the README's: scale-down
    /// window 0, the scaler's decay stabilises) or `legacy` (no `advanced` section: Kubernetes'
    /// rule for an HPA without behavior).
    #[arg(long, value_enum, default_value_t = policy::CompositeHpa::Recommended)]
    pub composite_hpa: policy::CompositeHpa,
    /// Also write every completed request (arrival, wait, service, latency, TTFT, TPOT, SLO met)
    /// per policy to requests-POLICY.csv under --out.
    #[arg(long)]
    pub requests_out: bool,
    /// Also write the composite's decision at each scrape to decisions-composite.jsonl under
    /// --out, one JSON object a line: the object the scaler's `/debug` endpoint serves (replicas
    /// asked for, the signal that set them, and SLO mode's planner: arrivals, the rate one
    /// replica serves, headroom, window, burst hold, miss budget). Replays the scaler's reasoning
    /// step by step.
    #[arg(long)]
    pub decisions_out: bool,
    /// Seconds from a replica's creation to readiness (image pull + model load).
    #[arg(long, default_value_t = 60.0, allow_negative_numbers = true)]
    pub cold_start_s: f64,
    /// A request still queued this many seconds after arriving is dropped.
    #[arg(long, default_value_t = 60.0, allow_negative_numbers = true)]
    pub timeout_s: f64,
    /// The pods' termination grace period: a replica removed on scale-down finishes its requests
    /// for this long, then what still runs is cut (Kubernetes' default is 30 s).
    #[arg(long, default_value_t = 30.0, allow_negative_numbers = true)]
    pub grace_s: f64,
    #[arg(long, default_value_t = 100)]
    pub max_replicas: u32,
    /// Requests served at once per replica (overrides the profile).
    #[arg(long)]
    pub batch: Option<u32>,
    /// Median output tokens of generated requests (overrides the profile's
    /// `default_generated_tokens`; drawn log-normal around it). Chat services generate hundreds.
    #[arg(long, allow_negative_numbers = true)]
    pub generated_tokens: Option<f64>,
    /// JSON cost profile (fields of `CostModel`, e.g. measured with the workload's loadgen).
    #[arg(long, value_name = "FILE")]
    pub profile: Option<PathBuf>,
    /// Seconds between metric scrapes.
    #[arg(long, default_value_t = 15.0, allow_negative_numbers = true)]
    pub scrape_s: f64,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Output directory for report.json, report.md, report.html and chart.svg (created if
    /// missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// `--from-prometheus URL` and its flags: the trace and profile rebuilt from a Prometheus.
    #[command(flatten)]
    pub prom: fromprom::FromPrometheusArgs,
}

impl SimulateArgs {
    /// The command line's defaults with output to `out` and no input chosen yet (set `trace`,
    /// `generator` or `suite`).
    pub fn with_defaults(out: PathBuf) -> Self {
        SimulateArgs {
            trace: None,
            trace_format: TraceFormat::Auto,
            generator: None,
            suite: false,
            ablation: false,
            sweep: false,
            scale_down: false,
            suite_trace: PathBuf::from("traces/AzureLLMInferenceTrace_code.csv"),
            suite_seed: suite::SEED,
            duration_s: 3600.0,
            rate_scale: 1.0,
            time_scale: 1.0,
            policies: None,
            slo_ms: 5000.0,
            ttft_slo_ms: 2000.0,
            tpot_slo_ms: None,
            composite_metadata: None,
            composite_hpa: policy::CompositeHpa::Recommended,
            requests_out: false,
            decisions_out: false,
            cold_start_s: 60.0,
            timeout_s: 60.0,
            grace_s: 30.0,
            max_replicas: 100,
            batch: None,
            generated_tokens: None,
            profile: None,
            scrape_s: 15.0,
            seed: 1,
            out,
            prom: fromprom::FromPrometheusArgs::default(),
        }
    }
}

/// What `run` wrote.
#[derive(Clone, Debug, PartialEq)]
pub struct ReportSummary {
    pub report_json: PathBuf,
    pub report_md: PathBuf,
    pub chart_svg: PathBuf,
    /// The report as one self-contained page (`html::page`).
    pub report_html: PathBuf,
    /// The Markdown report, for printing.
    pub markdown: String,
    pub report: Report,
}

fn check(name: &'static str, v: f64, lo: f64, hi: f64, what: &str) -> Result<f64, SimError> {
    if v.is_finite() && v >= lo && v <= hi {
        Ok(v)
    } else {
        Err(SimError::Arg {
            name,
            message: format!("'{v}' is not accepted; expected {what}"),
        })
    }
}

/// Parses `--policies`; None means all seven.
pub fn parse_policies(list: Option<&str>) -> Result<Vec<PolicyName>, SimError> {
    let Some(list) = list else {
        return Ok(PolicyName::ALL.to_vec());
    };
    let mut out = Vec::new();
    for part in list.split(',').filter(|p| !p.trim().is_empty()) {
        let p: PolicyName = part.parse().map_err(SimError::Policy)?;
        if !out.contains(&p) {
            out.push(p);
        }
    }
    if out.is_empty() {
        return Err(SimError::Policy(
            "empty list; expected one or more policy names".into(),
        ));
    }
    out.sort();
    Ok(out)
}

/// The trace and configuration the arguments describe; reads the trace and profile files.
pub fn prepare(args: &SimulateArgs) -> Result<(Trace, SimConfig, f64, f64, u64), SimError> {
    let rate_scale = check(
        "--rate-scale",
        args.rate_scale,
        1e-6,
        1000.0,
        "a factor > 0 and <= 1000",
    )?;
    let time_scale = check(
        "--time-scale",
        args.time_scale,
        1e-6,
        1000.0,
        "a factor > 0 and <= 1000",
    )?;
    let slo_s = check(
        "--slo-ms",
        args.slo_ms,
        1.0,
        3_600_000.0,
        "milliseconds between 1 and 3600000",
    )? / 1000.0;
    let ttft_slo_s = check(
        "--ttft-slo-ms",
        args.ttft_slo_ms,
        1.0,
        3_600_000.0,
        "milliseconds between 1 and 3600000",
    )? / 1000.0;
    let composite_overrides = parse_overrides(args.composite_metadata.as_deref())?;
    let cold_start_s = check(
        "--cold-start-s",
        args.cold_start_s,
        0.0,
        3600.0,
        "seconds between 0 and 3600",
    )?;
    let timeout_s = check(
        "--timeout-s",
        args.timeout_s,
        0.001,
        86_400.0,
        "seconds > 0 and <= 86400",
    )?;
    let grace_s = check(
        "--grace-s",
        args.grace_s,
        0.0,
        86_400.0,
        "seconds between 0 and 86400",
    )?;
    let scrape_s = check(
        "--scrape-s",
        args.scrape_s,
        1.0,
        300.0,
        "whole seconds between 1 and 300",
    )?
    .round();
    let duration_s = check(
        "--duration-s",
        args.duration_s,
        1.0,
        30.0 * 86_400.0,
        "seconds between 1 and 2592000",
    )?;
    if args.max_replicas == 0 || args.max_replicas > 10_000 {
        return Err(SimError::Arg {
            name: "--max-replicas",
            message: format!(
                "'{}' is not accepted; expected 1..=10000",
                args.max_replicas
            ),
        });
    }
    let mut cost = match &args.profile {
        None => CostModel::default(),
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|source| SimError::Io {
                path: path.display().to_string(),
                source,
            })?;
            serde_json::from_str(&text).map_err(|e| SimError::Profile {
                path: path.display().to_string(),
                message: e.to_string(),
            })?
        }
    };
    if let Some(b) = args.batch {
        cost.batch = b;
    }
    if let Some(n) = args.generated_tokens {
        cost.default_generated_tokens = check(
            "--generated-tokens",
            n,
            1.0,
            100_000.0,
            "tokens between 1 and 100000",
        )?;
    }
    let tpot_slo_s = match args.tpot_slo_ms {
        Some(ms) => {
            check(
                "--tpot-slo-ms",
                ms,
                0.001,
                60_000.0,
                "milliseconds > 0 and <= 60000",
            )? / 1000.0
        }
        // Twice the unloaded decode time: what a full batch costs in the cost model's default.
        None => 2.0 * cost.decode_s_per_token,
    };
    cost.validate()
        .map_err(|message| match (&args.profile, args.batch) {
            (_, Some(_)) if message.starts_with("batch") => SimError::Arg {
                name: "--batch",
                message,
            },
            (Some(p), _) => SimError::Profile {
                path: p.display().to_string(),
                message,
            },
            (None, _) => SimError::Arg {
                name: "--batch",
                message,
            },
        })?;
    let policies = parse_policies(args.policies.as_deref())?;
    let base = match (&args.trace, &args.generator) {
        (Some(path), None) => trace::load_file(path, args.trace_format, &cost)?,
        (None, Some(spec)) => trace::generate(
            &Shape::parse(spec, duration_s)?,
            duration_s,
            &cost,
            args.seed,
        ),
        _ => {
            return Err(SimError::Arg {
                name: "--trace",
                message: "give exactly one of --trace FILE or --generator NAME".into(),
            })
        }
    };
    let trace = if rate_scale != 1.0 || time_scale != 1.0 {
        trace::scale(&base, rate_scale, time_scale, args.seed)
    } else {
        base
    };
    let batch = cost.batch;
    // Policies are configured on the objective a user would state: time to first token when the
    // service streams tokens, end-to-end latency otherwise.
    let has_tokens = trace.requests.iter().any(|r| r.generated_tokens > 0.0);
    let cfg = SimConfig {
        cluster: ClusterConfig {
            cost,
            cold_start_s,
            timeout_s,
            slo_s,
            ttft_slo_s,
            tpot_slo_s,
            grace_s,
            remove_by_remaining_work: false,
        },
        setup: Setup {
            max_replicas: args.max_replicas,
            slo_s: if has_tokens { ttft_slo_s } else { slo_s },
            slo_is_ttft: has_tokens,
            cold_start_s,
            min_replicas: 0,
            composite_overrides,
            composite_hpa: args.composite_hpa,
            batch,
            scrape_s,
            capacity_factor: 1.0,
        },
        record_requests: args.requests_out,
        record_decisions: args.decisions_out,
        policies,
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    Ok((trace, cfg, rate_scale, time_scale, args.seed))
}

/// Replays the trace under every configured policy and builds the report (pure: no file IO).
pub fn simulate(
    trace: &Trace,
    cfg: &SimConfig,
    rate_scale: f64,
    time_scale: f64,
    seed: u64,
) -> Result<Report, SimError> {
    Ok(simulate_with_logs(trace, cfg, rate_scale, time_scale, seed)?.0)
}

/// Per policy, every completed request's outcome (empty unless `cfg.record_requests`) and the
/// scaler's decisions (empty unless `cfg.record_decisions`; always empty for the policies other
/// than the composite, which make none).
pub type ReplayLogs = Vec<(
    PolicyName,
    Vec<cluster::RequestOutcome>,
    Vec<keda_gpu_scaler::score::Decision>,
)>;

/// `simulate`, also returning what the replays recorded (`ReplayLogs`).
pub fn simulate_with_logs(
    trace: &Trace,
    cfg: &SimConfig,
    rate_scale: f64,
    time_scale: f64,
    seed: u64,
) -> Result<(Report, ReplayLogs), SimError> {
    let required = replay::required_replicas(trace, &cfg.cluster);
    let surge_windows = report::surges(&required);
    let mut runs = replay::replay_all(trace, cfg)?;
    let logs: ReplayLogs = runs
        .iter_mut()
        .map(|r| {
            (
                r.name,
                r.outcomes.requests.take().unwrap_or_default(),
                std::mem::take(&mut r.decisions),
            )
        })
        .collect();
    let n = trace.requests.len();
    let mut per_window = vec![0u64; required.len()];
    let last = per_window.len() - 1;
    for r in &trace.requests {
        per_window[((r.at / hpa::SYNC_PERIOD_S) as usize).min(last)] += 1;
    }
    let report = Report {
        trace: report::TraceInfo {
            source: trace.source.clone(),
            requests: n as u64,
            duration_s: trace.duration_s,
            mean_rps: n as f64 / trace.duration_s,
            peak_rps: per_window.iter().copied().max().unwrap_or(0) as f64 / hpa::SYNC_PERIOD_S,
            rate_scale,
            time_scale,
        },
        settings: report::Settings {
            slo_s: cfg.cluster.slo_s,
            ttft_slo_s: cfg.cluster.ttft_slo_s,
            tpot_slo_s: cfg.cluster.tpot_slo_s,
            cold_start_s: cfg.cluster.cold_start_s,
            timeout_s: cfg.cluster.timeout_s,
            grace_s: cfg.cluster.grace_s,
            scrape_s: cfg.setup.scrape_s,
            max_replicas: cfg.setup.max_replicas,
            seed,
            cost: cfg.cluster.cost.clone(),
        },
        composite_metadata: policy::composite_metadata(
            cfg.setup.batch,
            cfg.setup.slo_s,
            cfg.setup.max_replicas,
            cfg.setup.capacity_factor,
            &cfg.setup.composite_overrides,
        ),
        surges_s: surge_windows
            .iter()
            .map(|&w| w as f64 * hpa::SYNC_PERIOD_S)
            .collect(),
        policies: report::policy_reports(runs, &required, &surge_windows),
    };
    Ok((report, logs))
}

fn write(path: &Path, text: &str) -> Result<(), SimError> {
    std::fs::write(path, text).map_err(|source| SimError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// `keda-gpu-sim`: prepare, replay, and write `report.json`, `report.md`, `chart.svg` and
/// `report.html`.
pub fn run(args: &SimulateArgs) -> Result<ReportSummary, SimError> {
    let (trace, cfg, rate_scale, time_scale, seed) = prepare(args)?;
    let (report, logs) = simulate_with_logs(&trace, &cfg, rate_scale, time_scale, seed)?;
    std::fs::create_dir_all(&args.out).map_err(|source| SimError::Io {
        path: args.out.display().to_string(),
        source,
    })?;
    if args.requests_out {
        for (name, requests, _) in &logs {
            let mut csv =
                String::from("arrived_s,wait_s,service_s,latency_s,ttft_s,tpot_s,met_slo\n");
            for r in requests {
                csv.push_str(&format!(
                    "{:.3},{:.3},{:.3},{:.3},{:.3},{},{}\n",
                    r.arrived_s,
                    r.wait_s,
                    r.service_s,
                    r.latency_s,
                    r.ttft_s,
                    r.tpot_s.map_or(String::new(), |t| format!("{t:.5}")),
                    u8::from(r.met_slo)
                ));
            }
            write(&args.out.join(format!("requests-{name}.csv")), &csv)?;
        }
    }
    if args.decisions_out {
        for (name, _, decisions) in logs.iter().filter(|(_, _, d)| !d.is_empty()) {
            let mut lines = String::new();
            for d in decisions {
                // serde_json writes a non-finite number as null, so every line parses.
                lines.push_str(&serde_json::to_string(d).expect("a decision serialises"));
                lines.push('\n');
            }
            write(&args.out.join(format!("decisions-{name}.jsonl")), &lines)?;
        }
    }
    let report_json = args.out.join("report.json");
    let report_md = args.out.join("report.md");
    let chart_svg = args.out.join("chart.svg");
    let report_html = args.out.join("report.html");
    let json = serde_json::to_string_pretty(&report)
        .expect("the report holds only finite numbers and strings");
    let markdown = report::markdown(&report);
    write(&report_json, &(json + "\n"))?;
    write(&report_md, &markdown)?;
    write(&chart_svg, &report::svg(&report))?;
    write(&report_html, &html::page(&report, None, &[]))?;
    Ok(ReportSummary {
        report_json,
        report_md,
        chart_svg,
        report_html,
        markdown,
        report,
    })
}

/// Writes `NAME.json` (pretty, one trailing newline) and `NAME.md` under `out`, creating it.
fn write_tables(
    out: &Path,
    name: &str,
    value: &impl serde::Serialize,
    markdown: &str,
) -> Result<(), SimError> {
    std::fs::create_dir_all(out).map_err(|source| SimError::Io {
        path: out.display().to_string(),
        source,
    })?;
    let json = serde_json::to_string_pretty(value)
        .expect("the tables hold only finite numbers and strings");
    write(&out.join(format!("{name}.json")), &(json + "\n"))?;
    write(&out.join(format!("{name}.md")), markdown)
}

/// `keda-gpu-sim --suite`: runs the panel and writes `suite.md` and `suite.json`.
pub fn run_suite(args: &SimulateArgs) -> Result<suite::Suite, SimError> {
    let result = suite::run(args)?;
    write_tables(&args.out, "suite", &result, &suite::markdown(&result))?;
    Ok(result)
}

/// `keda-gpu-sim --scale-down --suite`: the composite without and with pod deletion costs,
/// written to `scale-down.md` and `scale-down.json`.
pub fn run_scale_down(args: &SimulateArgs) -> Result<Vec<scaledown::Row>, SimError> {
    let rows = scaledown::run(args)?;
    let md = scaledown::markdown(&rows, args.grace_s);
    write_tables(&args.out, "scale-down", &rows, &md)?;
    Ok(rows)
}

/// `keda-gpu-sim --ablation`: the suite per variant, written to `ablation.md` and `ablation.json`.
pub fn run_ablation(args: &SimulateArgs) -> Result<Vec<ablation::Row>, SimError> {
    let rows = ablation::run(args)?;
    write_tables(
        &args.out,
        "ablation",
        &rows,
        &ablation::markdown(&rows, args.suite_seed),
    )?;
    Ok(rows)
}

/// `keda-gpu-sim --sweep`: the cost-attainment curves of the scenario (or of every suite
/// scenario, with `--suite`), written to `sweep.md`, `sweep.json` and one
/// `sweep-SCENARIO.svg` per scenario.
pub fn run_sweep(args: &SimulateArgs) -> Result<sweep::Sweep, SimError> {
    let result = sweep::run(args)?;
    std::fs::create_dir_all(&args.out).map_err(|source| SimError::Io {
        path: args.out.display().to_string(),
        source,
    })?;
    let json = serde_json::to_string_pretty(&result)
        .expect("the sweep holds only finite numbers and strings");
    write(&args.out.join("sweep.json"), &(json + "\n"))?;
    write(&args.out.join("sweep.md"), &sweep::markdown(&result))?;
    for s in &result.scenarios {
        write(
            &args.out.join(format!("sweep-{}.svg", s.name)),
            &sweep::svg(s),
        )?;
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: SimulateArgs,
    }

    #[test]
    fn with_defaults_is_what_the_command_line_gives() {
        let cli = Cli::try_parse_from(["simulate", "--out", "o", "--suite"]).unwrap();
        assert_eq!(
            cli.args,
            SimulateArgs {
                suite: true,
                ..SimulateArgs::with_defaults("o".into())
            }
        );
    }
}
