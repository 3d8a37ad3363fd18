//! `loadgen`: drives load at one or more gpu-workload targets and prints a latency summary.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use gpu_workload::load::{self, LiveStats, LoadPlan, Mode, Pattern, RequestKind, Scenario};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Debug, Parser)]
#[command(name = "loadgen", version, about = "Load generator for gpu-workload")]
struct Args {
    /// matrix | tryon | gpu | stream (steady load of that request), burst | ramp | trace (patterns).
    #[arg(long, default_value = "matrix")]
    scenario: Scenario,
    /// Base URL of a workload; repeat to spread requests round-robin.
    #[arg(long = "target", default_value = "http://127.0.0.1:8000")]
    targets: Vec<String>,
    /// Closed loop: this many workers, each waits for its previous response.
    #[arg(long, conflicts_with = "rate")]
    concurrency: Option<usize>,
    /// Open loop: requests per second at full load, regardless of responses.
    #[arg(long)]
    rate: Option<f64>,
    /// Run length in seconds.
    #[arg(long, default_value_t = 30.0)]
    duration: f64,
    /// Write the summary as JSON to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Request used by burst, ramp and trace: matrix | tryon | gpu | stream.
    #[arg(long, default_value = "gpu")]
    request: Scenario,
    /// /matrix size and iterations.
    #[arg(long, default_value_t = 512)]
    size: usize,
    #[arg(long, default_value_t = 1)]
    iterations: u32,
    /// /gpu_job work per request, ms.
    #[arg(long, default_value_t = 100)]
    work_ms: u64,
    /// /stream hold time per request, ms.
    #[arg(long, default_value_t = 1000)]
    stream_ms: u64,
    /// burst: seconds at full load, seconds at low load, and the low load's fraction.
    #[arg(long, default_value_t = 10.0)]
    high_secs: f64,
    #[arg(long, default_value_t = 10.0)]
    low_secs: f64,
    #[arg(long, default_value_t = 0.1)]
    low_fraction: f64,
    /// trace: CSV with a TIMESTAMP column (Azure LLM inference trace format).
    #[arg(long)]
    trace_file: Option<std::path::PathBuf>,
    /// trace: replay this many times faster than recorded.
    #[arg(long, default_value_t = 1.0)]
    trace_speedup: f64,
    /// Per-request timeout in seconds.
    #[arg(long, default_value_t = 120.0)]
    timeout: f64,
    /// Open loop: most requests open at once; later arrivals are dropped and counted.
    #[arg(long, default_value_t = 1024)]
    max_outstanding: usize,
    /// No progress bar (for logs and CI).
    #[arg(long)]
    quiet: bool,
}

fn request_of(s: Scenario, a: &Args) -> anyhow::Result<RequestKind> {
    Ok(match s {
        Scenario::Matrix => RequestKind::Matrix {
            size: a.size,
            iterations: a.iterations,
        },
        Scenario::Tryon => RequestKind::Tryon,
        Scenario::Gpu => RequestKind::Gpu { work_ms: a.work_ms },
        Scenario::Stream => RequestKind::Stream {
            duration_ms: a.stream_ms,
        },
        other => anyhow::bail!("--request must be matrix, tryon, gpu or stream, not {other:?}"),
    })
}

fn secs(v: f64, flag: &str) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(v)
        .with_context(|| format!("{flag} must be a non-negative number of seconds"))
}

fn plan(a: &Args) -> anyhow::Result<LoadPlan> {
    let (request, pattern) = match a.scenario {
        s @ (Scenario::Matrix | Scenario::Tryon | Scenario::Gpu | Scenario::Stream) => {
            (request_of(s, a)?, Pattern::Steady)
        }
        Scenario::Burst => (
            request_of(a.request, a)?,
            Pattern::Burst {
                high: secs(a.high_secs, "--high-secs")?,
                low: secs(a.low_secs, "--low-secs")?,
                low_fraction: a.low_fraction,
            },
        ),
        Scenario::Ramp => (request_of(a.request, a)?, Pattern::Ramp),
        Scenario::Trace => {
            let path = a
                .trace_file
                .as_ref()
                .context("the trace scenario needs --trace-file")?;
            let file =
                std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
            let arrivals = load::trace::arrivals(std::io::BufReader::new(file), a.trace_speedup)?;
            (request_of(a.request, a)?, Pattern::Trace { arrivals })
        }
    };
    let mode = match (a.concurrency, a.rate) {
        (_, Some(rate)) => Mode::Open {
            rate,
            max_outstanding: a.max_outstanding,
        },
        // Trace replay is open loop by nature; the rate is unused there.
        _ if a.scenario == Scenario::Trace => Mode::Open {
            rate: 1.0,
            max_outstanding: a.max_outstanding,
        },
        (c, None) => Mode::Closed {
            concurrency: c.unwrap_or(4),
        },
    };
    Ok(LoadPlan {
        scenario: a.scenario,
        targets: a.targets.clone(),
        request,
        pattern,
        mode,
        duration: secs(a.duration, "--duration")?,
        timeout: secs(a.timeout, "--timeout")?,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let plan = plan(&args)?;
    plan.validate()?;
    let live = Arc::new(LiveStats::default());
    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        let ticks = (plan.duration.as_millis() / 100).max(1) as u64;
        ProgressBar::new(ticks).with_style(
            ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {msg}")
                .expect("valid template")
                .progress_chars("=> "),
        )
    };
    let ticker = {
        let (bar, live) = (bar.clone(), Arc::clone(&live));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tick.tick().await;
                bar.inc(1);
                bar.set_message(format!(
                    "sent {} ok {} failed {} dropped {} open {}",
                    live.sent.load(Ordering::Relaxed),
                    live.ok.load(Ordering::Relaxed),
                    live.failed.load(Ordering::Relaxed),
                    live.dropped.load(Ordering::Relaxed),
                    live.in_flight.load(Ordering::Relaxed),
                ));
            }
        })
    };
    let summary = load::run(plan, live).await?;
    ticker.abort();
    bar.finish_and_clear();
    print!("{}", summary.render());
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&summary)?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
