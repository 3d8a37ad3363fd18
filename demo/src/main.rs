//! `keda-gpu-demo`: the whole loop live on this machine. The work is in the library; `anyhow`
//! turns its errors into messages here.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use keda_gpu_demo::{DemoArgs, Outcome};
use keda_gpu_scaler::config::LogFormat;
use keda_gpu_scaler::telemetry;

/// Run the whole loop live on this machine: the scaler, KEDA + HPA over real gRPC, real
/// gpu-workload replica processes and load; prints a summary table, writes JSON and SVG.
#[derive(Parser, Debug)]
#[command(
    name = "keda-gpu-demo",
    version,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    replica: Option<Hidden>,
    #[command(flatten)]
    args: DemoArgs,
}

#[derive(Subcommand, Debug)]
enum Hidden {
    /// One demo replica: gpu-workload's server in this process (started by the demo itself).
    #[command(hide = true)]
    WorkloadReplica(gpu_workload::Config),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    keda_gpu_scaler::sources::client::install_provider();
    if let Some(Hidden::WorkloadReplica(config)) = cli.replica {
        telemetry::init_logging(LogFormat::Text, "warn");
        return Ok(keda_gpu_demo::replica_main(config)?);
    }
    let args = cli.args;
    telemetry::init_logging(LogFormat::Text, "error");
    let outcome = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(keda_gpu_demo::demo(&args))?;
    match outcome {
        Outcome::Single(s) => {
            print!("\n{}", keda_gpu_demo::summary::table(&s));
            println!(
                "\nwrote {} and {}",
                args.out.join(format!("demo-{}.json", s.policy)).display(),
                args.out.join(format!("demo-{}.svg", s.policy)).display()
            );
            if s.children_left > 0 {
                bail!(
                    "{} replica processes were still present after the run",
                    s.children_left
                );
            }
            if args.fidelity {
                let p = keda_gpu_demo::replay_runs(std::slice::from_ref(&*s), &args.out)?;
                print_fidelity(&p, &args.out)?;
            }
        }
        Outcome::Compare(c) => {
            print!("\n{}", keda_gpu_demo::summary::compare_table(&c));
            println!(
                "\nwrote {}, {} and the per-run demo-<policy>.json/.svg",
                args.out.join("compare.json").display(),
                args.out.join("compare.svg").display()
            );
            if c.runs.iter().any(|r| r.children_left > 0) {
                bail!("replica processes were still present after the run");
            }
            if args.fidelity {
                let p = keda_gpu_demo::replay_runs(&c.runs, &args.out)?;
                print_fidelity(&p, &args.out)?;
            }
        }
        Outcome::Fidelity(p) => {
            let dir = args.fidelity_from.as_deref().unwrap_or(&args.out);
            print_fidelity(&p, dir)?;
        }
    }
    Ok(())
}

/// Prints the comparison; an error when the demo-host model misses a run by more than the bounds.
fn print_fidelity(p: &[keda_gpu_demo::fidelity::Prediction], dir: &std::path::Path) -> Result<()> {
    println!(
        "\nthe simulator's prediction of the live run (same arrivals, measured costs, time x scale):\n{}{}",
        keda_gpu_demo::fidelity::table(p),
        keda_gpu_demo::fidelity::details(p)
    );
    println!(
        "wrote {} and {}",
        dir.join("fidelity.json").display(),
        dir.join("fidelity.md").display()
    );
    let missed: Vec<&str> = p
        .iter()
        .filter(|p| p.model == keda_gpu_demo::fidelity::Model::DemoHost && !p.within_bounds)
        .map(|p| p.policy.as_str())
        .collect();
    if !missed.is_empty() {
        bail!(
            "the simulator (demo-host model) missed the live {} run by more than 15 % of replica-seconds or 5 points of SLO attainment",
            missed.join(" and ")
        );
    }
    Ok(())
}
