//! `keda-gpu-demo`: the whole autoscaling loop live on one machine. The scaler's gRPC
//! server runs in-process; the demo plays KEDA and the HPA against it over real gRPC with the
//! simulator's models on the wall clock; every replica is a real `gpu-workload` process on a
//! loopback port; a Poisson load generator follows a phase plan through a round-robin balancer.
//! At the end: a summary table (pods, accelerator utilisation, latency, success, scaling events),
//! JSON and an SVG timeline. `--compare` runs the composite policy and the CPU-HPA baseline back
//! to back on the same load.

pub mod balancer;
pub mod child;
pub mod control;
pub mod cpu;
pub mod fidelity;
pub mod keda;
pub mod load;
pub mod plan;
pub mod prometheus;
pub mod replicas;
pub mod run;
pub mod summary;
pub mod view;

use std::path::PathBuf;

pub use plan::{Phase, Plan};
pub use summary::{Comparison, RunSummary};

use keda_gpu_sim::policy::PolicyName;

/// Why the demo could not run; each names the input or resource at fault.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("{name}: {message}")]
    Arg { name: &'static str, message: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("starting a replica with {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("scaler: {0}")]
    Server(#[from] keda_gpu_scaler::server::ServerError),
    #[error("gRPC: {0}")]
    Grpc(String),
    #[error("interrupted")]
    Interrupted,
}

/// Command-line arguments of `keda-gpu-demo`.
#[derive(Clone, Debug, PartialEq, clap::Args)]
pub struct DemoArgs {
    /// Who scales: composite (this scaler behind KEDA + HPA) or cpu-hpa (a plain CPU HPA).
    #[arg(long, default_value = "composite", value_parser = parse_policy)]
    pub policy: PolicyName,
    /// Run composite and cpu-hpa back to back on the same load and print them side by side.
    #[arg(long)]
    pub compare: bool,
    /// Length of one run in seconds; the phase plan is stretched or shrunk to it.
    #[arg(long, default_value_t = 180.0)]
    pub duration: f64,
    /// Load phases, NAME:SECONDS:RATE (requests/s), comma-separated.
    #[arg(long, default_value = plan::DEFAULT_PHASES, conflicts_with = "trace")]
    pub phases: String,
    /// A rate trace instead of phases: CSV `seconds,rate` lines (the last line marks the end).
    #[arg(long, value_name = "FILE")]
    pub trace: Option<PathBuf>,
    /// Output folder for summary JSON and SVG timeline (created if missing).
    #[arg(long, value_name = "DIR", default_value = "results/demo")]
    pub out: PathBuf,
    #[arg(long, default_value_t = 1)]
    pub min_replicas: u32,
    #[arg(long, default_value_t = 6)]
    pub max_replicas: u32,
    /// Seconds from a replica's creation until its process starts (image pull + model load).
    #[arg(long, default_value_t = 3.0)]
    pub cold_start: f64,
    /// Busy time of one request on the replica's executor (`/gpu_job?work_ms=`).
    #[arg(long, default_value_t = 100)]
    pub work_ms: u64,
    /// Requests a replica runs at once (`--max-concurrency`, the scaler's batch size).
    #[arg(long, default_value_t = 1)]
    pub replica_concurrency: u32,
    /// Requests a replica queues before answering 503.
    #[arg(long, default_value_t = 16)]
    pub queue_capacity: usize,
    /// Latency objective, milliseconds (the composite's latency target).
    #[arg(long, default_value_t = 500.0)]
    pub slo_ms: f64,
    /// Divides every KEDA/HPA period, window and cooldown and the scaler's smoothing half-lives
    /// (1 = Kubernetes' real timings; 10 makes a 5-minute cooldown 30 s).
    #[arg(long, default_value_t = 10.0)]
    pub time_scale: f64,
    /// Seed of the Poisson arrivals (the same seed gives the same arrival times).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Use this gpu-workload binary for replicas instead of this program's own copy.
    #[arg(long, value_name = "PATH")]
    pub workload_bin: Option<PathBuf>,
    /// Read the replicas through a real Prometheus on loopback (scraping them every second)
    /// with `source=prometheus`, instead of letting the scaler scrape them directly.
    #[arg(long)]
    pub prometheus: bool,
    /// The Prometheus server binary for `--prometheus` (default: `prometheus` on PATH).
    #[arg(long, value_name = "PATH", requires = "prometheus")]
    pub prometheus_bin: Option<PathBuf>,
    /// After the run (each run with --compare), replay it through the simulator under the same
    /// conditions and print live against predicted replica-seconds and SLO attainment;
    /// writes fidelity.json and fidelity.md under --out.
    #[arg(long)]
    pub fidelity: bool,
    /// No live run: replay the runs recorded in DIR (demo-<policy>.json and
    /// requests-<policy>.csv, for each policy found) and print the same comparison.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["compare", "fidelity"])]
    pub fidelity_from: Option<PathBuf>,
    /// Plain log lines even on a terminal.
    #[arg(long)]
    pub plain: bool,
    /// On scale-down remove the least busy ready replica (what the scaler's `podDeletionCost`
    /// asks of the ReplicaSet) instead of the most recently ready one.
    #[arg(long)]
    pub pod_deletion_cost: bool,
}

fn parse_policy(s: &str) -> Result<PolicyName, String> {
    let p: PolicyName = s.parse()?;
    match p {
        PolicyName::Composite | PolicyName::CpuHpa => Ok(p),
        other => Err(format!(
            "'{other}' runs only in `simulate`; the live demo runs composite and cpu-hpa"
        )),
    }
}

impl DemoArgs {
    fn check(&self) -> Result<Plan, DemoError> {
        let arg = |name, message: String| Err(DemoError::Arg { name, message });
        if !(self.duration.is_finite() && (5.0..=86_400.0).contains(&self.duration)) {
            return arg(
                "--duration",
                format!("{} is not within 5..=86400 seconds", self.duration),
            );
        }
        if self.min_replicas == 0 {
            return arg(
                "--min-replicas",
                "0 is not supported live: with the scrape source nothing reports load while no replica runs".into(),
            );
        }
        if self.max_replicas < self.min_replicas || self.max_replicas > 32 {
            return arg(
                "--max-replicas",
                format!("{} must be within --min-replicas..=32", self.max_replicas),
            );
        }
        if !(self.cold_start.is_finite() && (0.0..=600.0).contains(&self.cold_start)) {
            return arg(
                "--cold-start",
                format!("{} is not within 0..=600 s", self.cold_start),
            );
        }
        if !(1..=60_000).contains(&self.work_ms) {
            return arg(
                "--work-ms",
                format!("{} is not within 1..=60000", self.work_ms),
            );
        }
        if !(1..=64).contains(&self.replica_concurrency) {
            return arg(
                "--replica-concurrency",
                format!("{} is not within 1..=64", self.replica_concurrency),
            );
        }
        if !(self.slo_ms.is_finite() && self.slo_ms >= 1.0) {
            return arg("--slo-ms", format!("{} is not >= 1", self.slo_ms));
        }
        if !(self.time_scale.is_finite() && (1.0..=60.0).contains(&self.time_scale)) {
            return arg(
                "--time-scale",
                format!("{} is not within 1..=60", self.time_scale),
            );
        }
        if self.prometheus {
            prometheus::find_binary(self.prometheus_bin.as_deref())?;
        }
        let plan = match &self.trace {
            Some(path) => Plan::from_trace(path)?,
            None => Plan::parse(&self.phases)?,
        };
        Ok(plan.scaled_to(self.duration))
    }
}

/// What `demo` produced: the live run(s), and their replays with --fidelity.
pub enum Outcome {
    Single(Box<RunSummary>),
    Compare(Box<Comparison>),
    /// `--fidelity-from`: replays of recorded runs only.
    Fidelity(Vec<fidelity::Prediction>),
}

/// Replays each run through the simulator under each `fidelity::Model` and writes
/// fidelity.json and fidelity.md to `out`.
pub fn replay_runs(
    runs: &[RunSummary],
    out: &std::path::Path,
) -> Result<Vec<fidelity::Prediction>, DemoError> {
    let predictions = runs
        .iter()
        .flat_map(|r| fidelity::Model::ALL.map(|m| fidelity::predict(r, &r.records, m)))
        .collect::<Result<Vec<_>, _>>()?;
    fidelity::write(out, &predictions)?;
    Ok(predictions)
}

/// Runs the demo (one policy, or both with `--compare`), writes JSON and SVG under `--out`.
pub async fn demo(args: &DemoArgs) -> Result<Outcome, DemoError> {
    if let Some(dir) = &args.fidelity_from {
        let mut runs = Vec::new();
        for policy in [PolicyName::Composite, PolicyName::CpuHpa] {
            if dir.join(format!("demo-{policy}.json")).exists() {
                runs.push(fidelity::load(dir, policy.as_str())?);
            }
        }
        if runs.is_empty() {
            return Err(DemoError::Arg {
                name: "--fidelity-from",
                message: format!(
                    "{} holds no demo-composite.json or demo-cpu-hpa.json",
                    dir.display()
                ),
            });
        }
        return Ok(Outcome::Fidelity(replay_runs(&runs, dir)?));
    }
    keda_gpu_scaler::sources::client::install_provider();
    let plan = args.check()?;
    std::fs::create_dir_all(&args.out).map_err(|source| DemoError::Io {
        path: args.out.display().to_string(),
        source,
    })?;
    let stop = run::StopSignal::install();
    if args.compare {
        let mut runs = Vec::new();
        for policy in [PolicyName::Composite, PolicyName::CpuHpa] {
            let s = run::run_once(args, policy, &plan, &stop).await?;
            summary::write_run(&args.out, &s)?;
            runs.push(s);
        }
        let cmp = Comparison { runs };
        summary::write_compare(&args.out, &cmp)?;
        Ok(Outcome::Compare(Box::new(cmp)))
    } else {
        let s = run::run_once(args, args.policy, &plan, &stop).await?;
        summary::write_run(&args.out, &s)?;
        Ok(Outcome::Single(Box::new(s)))
    }
}

/// The hidden `workload-replica` subcommand: one replica, serving gpu-workload's own code until
/// SIGTERM (drain) or until the demo that started it is gone.
pub fn replica_main(config: gpu_workload::Config) -> Result<(), gpu_workload::serve::ServeError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let parent = std::os::unix::process::parent_id();
        let orphaned = async move {
            // Belt and braces beside PR_SET_PDEATHSIG: a replica never outlives its demo.
            loop {
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
                if std::os::unix::process::parent_id() != parent {
                    break;
                }
            }
        };
        let shutdown = async move {
            tokio::select! {
                _ = gpu_workload::serve::signal() => {}
                _ = orphaned => {}
            }
        };
        gpu_workload::serve::serve(config, shutdown).await
    })
}
