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
        }
    }
    Ok(())
}
