//! `keda-gpu-sim`: replay a trace (or the suite) and print the comparison; the work is in the
//! library, `anyhow` turns its errors into messages here.

use anyhow::Result;
use clap::Parser;

/// Replay a request trace through a KEDA + HPA model and compare scaling policies.
#[derive(Parser, Debug)]
#[command(name = "keda-gpu-sim", version)]
struct Cli {
    #[command(flatten)]
    args: keda_gpu_sim::SimulateArgs,
}

fn main() -> Result<()> {
    let args = Cli::parse().args;
    if args.prom.from_prometheus.is_some() {
        let done = keda_gpu_sim::fromprom::run(&args)?;
        print!("{}", done.summary.markdown);
        if let Some(sweep) = &done.sweep {
            print!("\n{}", keda_gpu_sim::sweep::markdown(sweep));
        }
        println!(
            "\nwrote {}, {}, {} and {}\nopen {}",
            done.rebuild.trace_csv.display(),
            done.rebuild.profile_json.display(),
            done.summary.report_json.display(),
            done.rebuild_json.display(),
            done.summary.report_html.display()
        );
    } else if args.sweep {
        let sweep = keda_gpu_sim::run_sweep(&args)?;
        print!("{}", keda_gpu_sim::sweep::markdown(&sweep));
        println!(
            "\nwrote {}, {} and {} chart(s) sweep-SCENARIO.svg",
            args.out.join("sweep.md").display(),
            args.out.join("sweep.json").display(),
            sweep.scenarios.len()
        );
    } else if args.scale_down {
        let rows = keda_gpu_sim::run_scale_down(&args)?;
        print!("{}", keda_gpu_sim::scaledown::markdown(&rows, args.grace_s));
        println!(
            "\nwrote {} and {}",
            args.out.join("scale-down.md").display(),
            args.out.join("scale-down.json").display()
        );
    } else if args.ablation {
        let rows = keda_gpu_sim::run_ablation(&args)?;
        print!(
            "{}",
            keda_gpu_sim::ablation::markdown(&rows, args.suite_seed)
        );
        println!(
            "\nwrote {} and {}",
            args.out.join("ablation.md").display(),
            args.out.join("ablation.json").display()
        );
    } else if args.suite {
        let suite = keda_gpu_sim::run_suite(&args)?;
        print!("{}", keda_gpu_sim::suite::markdown(&suite));
        println!(
            "\nwrote {} and {}",
            args.out.join("suite.md").display(),
            args.out.join("suite.json").display()
        );
    } else {
        let summary = keda_gpu_sim::run(&args)?;
        print!("{}", summary.markdown);
        println!(
            "\nwrote {}, {} and {}\nopen {}",
            summary.report_json.display(),
            summary.report_md.display(),
            summary.chart_svg.display(),
            summary.report_html.display()
        );
    }
    Ok(())
}
