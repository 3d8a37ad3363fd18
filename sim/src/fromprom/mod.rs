//! `keda-gpu-sim --from-prometheus URL`: replay a service's own traffic. Range queries read the
//! engine's request completion counter, its prompt and output length histograms, its latency
//! histograms and its running-requests gauge for a label selector and a time range; they become
//! a request trace (the Azure CSV the simulator reads, `--trace-out`) and a cost profile (the
//! `--profile` JSON, `--profile-out`) with the fit's error, and the comparison (and `--sweep`)
//! runs on them as with `--trace FILE --profile FILE`.
//!
//! The queries go through the scaler's own Prometheus client (egress policy, timeouts, body
//! cap); the selector is label matchers only, re-escaped before it reaches a query. What is
//! missing (a series the engine lacks, a gap in the range, a histogram without buckets) is named
//! in a warning or an error, never replaced silently. The pure steps live in `series`,
//! `rebuild` and `fit`; this module and `query` do the IO.

pub mod engines;
pub mod fit;
pub mod parse;
pub mod query;
pub mod rebuild;
pub mod series;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use keda_gpu_scaler::egress::EgressPolicy;

use self::engines::{Engine, Mean};
use self::fit::{Fit, StepObs};
use self::parse::{rfc3339, series_selector, Matcher};
use self::rebuild::Lengths;
use self::series::{Gap, Grid, HistSteps, RawSeries};
use crate::{CostModel, ReportSummary, SimError, SimulateArgs, TraceFormat};

/// The `--from-prometheus` flags (flattened into `SimulateArgs`).
#[derive(Clone, Debug, PartialEq, clap::Args)]
pub struct FromPrometheusArgs {
    /// Rebuild the trace and the cost profile from this Prometheus (an http(s) URL) and run the
    /// comparison on them. Needs --preset and --start; see --selector, --end, --step.
    #[arg(
        long,
        value_name = "URL",
        conflicts_with_all = ["trace", "generator", "suite", "ablation", "profile"],
        requires_all = ["preset", "start"]
    )]
    pub from_prometheus: Option<String>,
    /// The serving engine whose metrics to read: vllm, sglang, tgi or triton.
    #[arg(long, value_name = "ENGINE", requires = "from_prometheus")]
    pub preset: Option<String>,
    /// Label matchers choosing the service's series, e.g. 'namespace="llm",model_name="llama"'
    /// (=, !=, =~, !~; nothing else).
    #[arg(long, value_name = "MATCHERS", requires = "from_prometheus")]
    pub selector: Option<String>,
    /// Start of the range: RFC 3339 (2025-06-01T00:00:00Z) or unix seconds.
    #[arg(long, value_name = "TIME", requires = "from_prometheus")]
    pub start: Option<String>,
    /// End of the range (default: now).
    #[arg(long, value_name = "TIME", requires = "from_prometheus")]
    pub end: Option<String>,
    /// Seconds between range-query points: the trace's arrival rate and length distributions
    /// change once per step.
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    pub step: u32,
    /// Where to write the rebuilt trace (default: OUT/trace.csv).
    #[arg(long, value_name = "FILE", requires = "from_prometheus")]
    pub trace_out: Option<PathBuf>,
    /// Where to write the fitted profile (default: OUT/profile.json).
    #[arg(long, value_name = "FILE", requires = "from_prometheus")]
    pub profile_out: Option<PathBuf>,
    /// Let the client reach loopback (a Prometheus on this machine, or behind kubectl
    /// port-forward): the scaler's egress policy refuses it otherwise.
    #[arg(long, requires = "from_prometheus")]
    pub allow_loopback: bool,
    /// PEM CA bundle trusted for an https Prometheus, besides the system roots.
    #[arg(long, value_name = "FILE", requires = "from_prometheus")]
    pub prometheus_ca_file: Option<PathBuf>,
    /// Timeout of each query, seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 30.0)]
    pub prometheus_timeout_s: f64,
}

impl Default for FromPrometheusArgs {
    fn default() -> Self {
        FromPrometheusArgs {
            from_prometheus: None,
            preset: None,
            selector: None,
            start: None,
            end: None,
            step: 60,
            trace_out: None,
            profile_out: None,
            allow_loopback: false,
            prometheus_ca_file: None,
            prometheus_timeout_s: 30.0,
        }
    }
}

/// Log-space deviation of lengths drawn around a mean when there are no buckets (as the
/// simulator's generators draw them).
const PROMPT_SIGMA: f64 = 1.0;
const OUTPUT_SIGMA: f64 = 0.8;
/// Warn when more than this share of lengths lies above a histogram's top bucket.
const TAIL_WARN: f64 = 0.01;

/// What the run read and rebuilt, as written to `from-prometheus.json`.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Rebuild {
    pub prometheus: String,
    pub preset: String,
    pub selector: String,
    pub start: String,
    pub end: String,
    pub step_s: i64,
    /// The series read, by what they were read for.
    pub series: BTreeMap<String, String>,
    pub requests: u64,
    pub mean_rps: f64,
    pub prompt_tokens_mean: f64,
    pub generated_tokens_mean: f64,
    pub trace_csv: PathBuf,
    pub profile_json: PathBuf,
    pub fit: Fit,
    pub warnings: Vec<String>,
}

/// What `run` wrote.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub rebuild: Rebuild,
    pub summary: ReportSummary,
    pub sweep: Option<crate::sweep::Sweep>,
    pub rebuild_json: PathBuf,
}

fn arg(name: &'static str, message: impl Into<String>) -> SimError {
    SimError::Arg {
        name,
        message: message.into(),
    }
}

fn write(path: &Path, text: &str) -> Result<(), SimError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| SimError::Io {
            path: dir.display().to_string(),
            source,
        })?;
    }
    std::fs::write(path, text).map_err(|source| SimError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// Where one mean comes from, once probed.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Found {
    Histogram { metric: &'static str, buckets: bool },
    Counter(&'static str),
}

/// The validated flags.
struct Plan {
    url: String,
    engine: &'static Engine,
    matchers: Vec<Matcher>,
    grid: Grid,
    trace_out: PathBuf,
    profile_out: PathBuf,
    egress: EgressPolicy,
    timeout: Duration,
}

fn plan(args: &SimulateArgs) -> Result<Plan, SimError> {
    let p = &args.prom;
    let url = p
        .from_prometheus
        .clone()
        .ok_or_else(|| arg("--from-prometheus", "a Prometheus URL is required"))?;
    let preset = p.preset.as_deref().unwrap_or("");
    let engine = engines::engine(preset).ok_or_else(|| {
        arg(
            "--preset",
            format!("'{preset}' is not accepted; expected {}", engines::PRESETS),
        )
    })?;
    let matchers = parse::parse_selector(p.selector.as_deref().unwrap_or(""))
        .map_err(|e| arg("--selector", e))?;
    let start =
        parse::parse_time(p.start.as_deref().unwrap_or("")).map_err(|e| arg("--start", e))?;
    let end = match p.end.as_deref() {
        Some(t) => parse::parse_time(t).map_err(|e| arg("--end", e))?,
        None => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64()),
    };
    if !(1..=86_400).contains(&p.step) {
        return Err(arg(
            "--step",
            format!(
                "'{}' is not accepted; expected whole seconds between 1 and 86400",
                p.step
            ),
        ));
    }
    let step = i64::from(p.step);
    let steps = ((end - start) / step as f64).floor();
    if steps < 1.0 {
        return Err(arg(
            "--end",
            format!(
                "the range {} .. {} is shorter than one --step of {step} s",
                rfc3339(start),
                rfc3339(end)
            ),
        ));
    }
    if steps > 1_000_000.0 {
        return Err(arg(
            "--step",
            format!("{steps} steps over the range; expected at most 1000000 (raise --step)"),
        ));
    }
    if !(p.prometheus_timeout_s.is_finite()
        && p.prometheus_timeout_s > 0.0
        && p.prometheus_timeout_s <= 3600.0)
    {
        return Err(arg(
            "--prometheus-timeout-s",
            format!(
                "'{}' is not accepted; expected seconds > 0 and <= 3600",
                p.prometheus_timeout_s
            ),
        ));
    }
    Ok(Plan {
        url,
        engine,
        matchers,
        grid: Grid {
            start: start.floor() as i64,
            step,
            steps: steps as usize,
        },
        trace_out: p
            .trace_out
            .clone()
            .unwrap_or_else(|| args.out.join("trace.csv")),
        profile_out: p
            .profile_out
            .clone()
            .unwrap_or_else(|| args.out.join("profile.json")),
        egress: EgressPolicy {
            allow_loopback: p.allow_loopback,
            ca_file: p.prometheus_ca_file.clone(),
            // Refused like the scaler refuses it, when the simulator runs in a pod.
            api_server: std::env::var(keda_gpu_scaler::config::API_SERVER_VAR)
                .ok()
                .and_then(|h| h.trim().parse().ok()),
            ..EgressPolicy::default()
        },
        timeout: Duration::from_secs_f64(p.prometheus_timeout_s),
    })
}

/// Reads Prometheus and writes the trace and the profile; returns what it did.
pub fn rebuild(args: &SimulateArgs) -> Result<Rebuild, SimError> {
    rebuild_with(args, true)
}

/// `rebuild`, with or without progress lines on stderr.
pub fn rebuild_with(args: &SimulateArgs, progress: bool) -> Result<Rebuild, SimError> {
    let plan = plan(args)?;
    let mut prom = query::Prom::connect(&plan.url, plan.egress.clone(), plan.timeout, plan.grid)?;
    prom.progress = progress;
    let grid = plan.grid;
    let e = plan.engine;
    let sel = |metric: &str, suffix: &str| series_selector(metric, suffix, &plan.matchers);
    let selector_text = parse::selector_text(&plan.matchers);
    let mut warnings: Vec<String> = Vec::new();
    if plan.matchers.is_empty() {
        warnings.push(format!(
            "no --selector: every series of the {} metrics is read, whatever its namespace and model",
            e.preset
        ));
    }
    if !e.note.is_empty() {
        warnings.push(format!("{}: {}", e.preset, e.note));
    }
    let range_text = format!(
        "{} .. {}",
        rfc3339(grid.start as f64),
        rfc3339(grid.end() as f64)
    );

    // Probe: which of the engine's series the selector has in the range.
    let mut completions = None;
    for &c in e.completions {
        if prom.count(&sel(c, ""))? > 0 {
            completions = Some(c);
            break;
        }
    }
    let Some(completions) = completions else {
        return Err(nothing_matches(&prom, e, &selector_text, &range_text));
    };
    let mut series_read = BTreeMap::new();
    series_read.insert("completions".to_string(), completions.to_string());
    let mut probe = |role: &str, list: &'static [Mean]| -> Result<Option<Found>, SimError> {
        for m in list {
            let found = match *m {
                Mean::Histogram(n) => {
                    if prom.count(&sel(n, "_bucket"))? > 0 {
                        Some(Found::Histogram {
                            metric: n,
                            buckets: true,
                        })
                    } else if prom.count(&sel(n, "_count"))? > 0 {
                        Some(Found::Histogram {
                            metric: n,
                            buckets: false,
                        })
                    } else {
                        None
                    }
                }
                Mean::Counter(n) => (prom.count(&sel(n, ""))? > 0).then_some(Found::Counter(n)),
            };
            if let Some(f) = found {
                let (Found::Histogram { metric: n, .. } | Found::Counter(n)) = f;
                series_read.insert(role.to_string(), n.to_string());
                return Ok(Some(f));
            }
        }
        Ok(None)
    };
    let prompt = probe("prompt tokens", e.prompt_tokens)?;
    let generated = probe("output tokens", e.generation_tokens)?;
    let ttft = probe("time to first token", e.ttft)?;
    let tpot = probe("time per output token", e.tpot)?;
    let prefill = probe("prefill time", e.prefill)?;
    let queue = probe("queue wait", e.queue)?;
    let e2e = probe("end-to-end latency", e.e2e)?;
    let mut running = None;
    for &r in e.running {
        if prom.count(&sel(r, ""))? > 0 {
            running = Some(r);
            series_read.insert("running requests".into(), r.to_string());
            break;
        }
    }
    let lacks = |what: &str, list: &[Mean], then: &str| {
        let names: Vec<&str> = list
            .iter()
            .map(|m| match m {
                Mean::Histogram(n) | Mean::Counter(n) => *n,
            })
            .collect();
        if names.is_empty() {
            format!("{} exports no {what}: {then}", e.preset)
        } else {
            format!(
                "no series of {} match the selector in {range_text}: {then}",
                names.join(" or ")
            )
        }
    };
    for (found, what, list, then) in [
        (
            prompt,
            "prompt length series",
            e.prompt_tokens,
            "every request gets the profile's default_context_tokens",
        ),
        (
            generated,
            "output length series",
            e.generation_tokens,
            "every request gets the profile's default_generated_tokens",
        ),
        (
            e2e,
            "end-to-end latency",
            e.e2e,
            "arrivals are placed when the requests finished, not moved earlier by their latency",
        ),
    ] {
        if found.is_none() {
            warnings.push(lacks(what, list, then));
        }
    }
    for (found, what) in [(prompt, "prompt"), (generated, "output")] {
        match found {
            Some(Found::Counter(n)) => warnings.push(format!(
                "{what} lengths from the counter {n}: only each step's mean is known, lengths are drawn log-normal around it"
            )),
            Some(Found::Histogram { metric, buckets: false }) => warnings.push(format!(
                "histogram {metric} has no _bucket series (only _sum and _count): only each step's mean {what} length is known, lengths are drawn log-normal around it"
            )),
            _ => {}
        }
    }
    for (found, what, list) in [
        (ttft, "time-to-first-token series", e.ttft),
        (tpot, "time-per-output-token series", e.tpot),
        (prefill, "prefill-time series", e.prefill),
        (queue, "queue-wait series", e.queue),
    ] {
        if found.is_none() && !list.is_empty() {
            warnings.push(lacks(what, list, "the profile is fitted without it"));
        }
    }
    if running.is_none() {
        warnings.push(format!(
            "no series of {} match the selector in {range_text}: the batch size is not fitted",
            e.running.join(" or ")
        ));
    }

    // Fetch: every series needed, chunk by chunk.
    let mut queries: Vec<String> = vec![
        sel(completions, ""),
        format!("timestamp({})", sel(completions, "")),
    ];
    let mut index: BTreeMap<&'static str, usize> = BTreeMap::new();
    let roles: [(&'static str, Option<Found>); 7] = [
        ("prompt", prompt),
        ("generated", generated),
        ("ttft", ttft),
        ("tpot", tpot),
        ("prefill", prefill),
        ("queue", queue),
        ("e2e", e2e),
    ];
    for (role, found) in roles {
        index.insert(role, queries.len());
        match found {
            Some(Found::Histogram { metric, buckets }) => {
                queries.push(sel(metric, "_sum"));
                queries.push(sel(metric, "_count"));
                if buckets {
                    queries.push(sel(metric, "_bucket"));
                }
            }
            Some(Found::Counter(n)) => queries.push(sel(n, "")),
            None => {}
        }
    }
    let running_at = queries.len();
    if let Some(r) = running {
        let by = "sum by (namespace, pod, instance)";
        queries.push(format!(
            "{by} (avg_over_time({}[{}s]))",
            sel(r, ""),
            grid.step
        ));
        queries.push(format!(
            "{by} (max_over_time({}[{}s]))",
            sel(r, ""),
            grid.step
        ));
    }
    let answers = prom.ranges(&queries)?;

    // Completions, gaps, and the model check.
    let mut comp = series::counter_total(&answers[0], &grid);
    let stale = series::stale_steps(&answers[1], &grid);
    let gaps = series::gaps(&stale).ok_or_else(|| {
        arg(
            "--from-prometheus",
            format!(
                "{completions} has no samples in {range_text} for the selector: nothing to rebuild"
            ),
        )
    })?;
    let span = |g: &Gap| {
        format!(
            "{} .. {} ({} min)",
            rfc3339(grid.t(g.first) as f64),
            rfc3339(grid.t(g.last + 1) as f64),
            (g.last + 1 - g.first) as i64 * grid.step / 60
        )
    };
    if let Some(g) = gaps.leading {
        warnings.push(format!(
            "no samples of {completions} in {}: the trace starts after it",
            span(&g)
        ));
    }
    if let Some(g) = gaps.trailing {
        warnings.push(format!(
            "no samples of {completions} in {}: the trace ends before it",
            span(&g)
        ));
    }
    for g in gaps.inner.iter().take(10) {
        warnings.push(format!(
            "gap in the range: no samples of {completions} in {}; the requests counted after it are spread evenly over it",
            span(g)
        ));
    }
    if gaps.inner.len() > 10 {
        warnings.push(format!("... and {} more gaps", gaps.inner.len() - 10));
    }
    series::spread_over_gaps(&mut comp, &gaps);
    if let Some(label) = e.model_label {
        let models: std::collections::BTreeSet<&str> = answers[0]
            .iter()
            .filter_map(|s| s.labels.get(label).map(String::as_str))
            .collect();
        if models.len() > 1 {
            let list: Vec<&str> = models.iter().copied().take(5).collect();
            warnings.push(format!(
                "the selector matches {} models ({}): their traffic is summed into one trace; add {label}=\"...\" to --selector to replay one",
                models.len(),
                list.join(", ")
            ));
        }
    }
    let total: f64 = comp.iter().sum();
    if total < 0.5 {
        return Err(arg(
            "--selector",
            format!(
                "{completions}{{{selector_text}}} did not grow in {range_text}: no finished requests to replay"
            ),
        ));
    }

    // Histograms and means per step.
    let hist = |role: &'static str, name: &str, buckets: bool| -> (HistSteps, Vec<String>) {
        let i = index[role];
        let empty: Vec<RawSeries> = Vec::new();
        let b = if buckets { &answers[i + 2] } else { &empty };
        let (mut h, w) = series::histogram_steps(name, b, &answers[i], &answers[i + 1], &grid);
        series::spread_over_gaps(&mut h.sum, &gaps);
        series::spread_over_gaps(&mut h.count, &gaps);
        for j in 0..h.bounds.len() {
            let mut col: Vec<f64> = h.counts.iter().map(|r| r[j]).collect();
            series::spread_over_gaps(&mut col, &gaps);
            for (r, v) in h.counts.iter_mut().zip(col) {
                r[j] = v;
            }
        }
        (h, w)
    };
    let base = CostModel::default();
    let mut lengths =
        |role: &'static str, found: Option<Found>, sigma: f64, default: f64| match found {
            Some(Found::Histogram { metric, buckets }) => {
                let (h, w) = hist(role, metric, buckets);
                warnings.extend(w);
                let l = if buckets {
                    Lengths::from_histogram(&h, sigma)
                } else {
                    let mut means_only = h.clone();
                    means_only.bounds = vec![f64::INFINITY];
                    means_only.counts = h.count.iter().map(|c| vec![*c]).collect();
                    Lengths::from_histogram(&means_only, sigma)
                };
                l.unwrap_or_else(|| {
                    warnings.push(format!(
                        "{metric} observed nothing in the range: lengths are the profile's default"
                    ));
                    Lengths::Fixed(default)
                })
            }
            Some(Found::Counter(_)) => {
                let mut t = series::counter_total(&answers[index[role]], &grid);
                series::spread_over_gaps(&mut t, &gaps);
                Lengths::from_counter(&t, &comp, sigma).unwrap_or(Lengths::Fixed(default))
            }
            None => Lengths::Fixed(default),
        };
    let prompt_l = lengths("prompt", prompt, PROMPT_SIGMA, base.default_context_tokens);
    let generated_l = lengths(
        "generated",
        generated,
        OUTPUT_SIGMA,
        base.default_generated_tokens,
    );
    for (l, what, found) in [
        (&prompt_l, "prompt", prompt),
        (&generated_l, "output", generated),
    ] {
        if l.tail_share() > TAIL_WARN {
            if let Some(Found::Histogram { metric, .. }) = found {
                warnings.push(format!(
                    "{:.1} % of {what} lengths are above the top finite bucket of {metric}: their lengths are drawn from an exponential tail matched to the histogram's mean",
                    100.0 * l.tail_share()
                ));
            }
        }
    }
    let mut means = |role: &'static str, found: Option<Found>| -> Vec<Option<f64>> {
        match found {
            Some(Found::Histogram { metric, buckets }) => {
                let unit = engines::unit_seconds(metric);
                let (h, w) = hist(role, metric, buckets);
                warnings.extend(w);
                (0..grid.steps)
                    .map(|k| h.mean(k).map(|m| m * unit))
                    .collect()
            }
            Some(Found::Counter(n)) => {
                let unit = engines::unit_seconds(n);
                let mut t = series::counter_total(&answers[index[role]], &grid);
                series::spread_over_gaps(&mut t, &gaps);
                t.iter()
                    .zip(&comp)
                    .map(|(s, c)| (*c > 0.0).then(|| s / c * unit))
                    .collect()
            }
            None => vec![None; grid.steps],
        }
    };
    let ttft_m = means("ttft", ttft);
    let tpot_m = means("tpot", tpot);
    let prefill_m = means("prefill", prefill);
    let queue_m = means("queue", queue);
    let e2e_m = means("e2e", e2e);
    let (running_m, peaks) = if running.is_some() {
        let per_step = |answer: &[RawSeries]| -> Vec<Vec<f64>> {
            let mut v = vec![Vec::new(); grid.steps];
            for s in answer {
                for &(t, x) in &s.points {
                    if let Some(k) = grid.index(t).filter(|&k| k > 0) {
                        if x.is_finite() {
                            v[k - 1].push(x);
                        }
                    }
                }
            }
            v
        };
        let avg = per_step(&answers[running_at]);
        let max = per_step(&answers[running_at + 1]);
        (
            avg.iter()
                .map(|v| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64))
                .collect(),
            max.into_iter().flatten().collect(),
        )
    } else {
        (vec![None; grid.steps], Vec::new())
    };

    // The trace.
    let shift: Vec<f64> = e2e_m.iter().map(|m| m.unwrap_or(0.0)).collect();
    let requests = rebuild::build(&grid, &comp, &shift, &prompt_l, &generated_l, args.seed);
    if requests.is_empty() {
        return Err(arg(
            "--selector",
            format!("no finished requests in {range_text}: nothing to replay"),
        ));
    }
    write(&plan.trace_out, &rebuild::azure_csv(&requests))?;

    // The profile.
    let obs: Vec<StepObs> = (0..grid.steps)
        .map(|k| StepObs {
            weight: comp[k],
            prompt: prompt_l.mean_at(k),
            generated: generated_l.mean_at(k),
            ttft: ttft_m[k],
            tpot: tpot_m[k],
            prefill: prefill_m[k],
            queue: queue_m[k],
            e2e: e2e_m[k],
            running: running_m[k],
        })
        .collect();
    let fit = fit::fit(&obs, &peaks, &base);
    let json = serde_json::to_string_pretty(&fit.cost).expect("the profile holds only numbers");
    write(&plan.profile_out, &(json + "\n"))?;
    let n = requests.len() as u64;
    let mean = |f: fn(&rebuild::Rebuilt) -> u32| {
        requests.iter().map(|r| f64::from(f(r))).sum::<f64>() / n as f64
    };
    Ok(Rebuild {
        prometheus: prom.address.clone(),
        preset: e.preset.to_string(),
        selector: selector_text,
        start: rfc3339(grid.start as f64),
        end: rfc3339(grid.end() as f64),
        step_s: grid.step,
        series: series_read,
        requests: n,
        mean_rps: n as f64 / (grid.end() - grid.start) as f64,
        prompt_tokens_mean: mean(|r| r.prompt),
        generated_tokens_mean: mean(|r| r.generated),
        trace_csv: plan.trace_out,
        profile_json: plan.profile_out,
        fit,
        warnings,
    })
}

/// The error for a selector that matches no completion counter, with the label sets that exist.
fn nothing_matches(prom: &query::Prom, e: &Engine, selector: &str, range: &str) -> SimError {
    let name = e.completions[0];
    let window = (prom.grid.end() - prom.grid.start).max(1);
    let labels = match e.model_label {
        Some(m) => format!("namespace, {m}, job"),
        None => "namespace, job".into(),
    };
    let seen = prom
        .instant(&format!(
            "group by ({labels}) (last_over_time({}[{window}s]))",
            series_selector(name, "", &[])
        ))
        .unwrap_or_default();
    let mut message = format!(
        "--selector '{selector}' matches no series of {} in {range}",
        e.completions.join(" or ")
    );
    if seen.is_empty() {
        let _ = write!(
            message,
            "; Prometheus holds no {name} at all in that range: is it scraping the {} engine, and is the range right?",
            e.preset
        );
    } else {
        let sets: Vec<String> = seen
            .iter()
            .take(5)
            .map(|s| {
                let l: Vec<String> = s
                    .labels
                    .iter()
                    .map(|(k, v)| format!("{k}=\"{v}\""))
                    .collect();
                format!("{{{}}}", l.join(","))
            })
            .collect();
        let _ = write!(
            message,
            "; series of {name} that exist there: {}{}",
            sets.join(", "),
            if seen.len() > 5 { ", ..." } else { "" }
        );
    }
    arg("--selector", message)
}

/// The rebuild as text for the terminal: what was read, the fit and the warnings.
pub fn text(r: &Rebuild) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "Rebuilt from {} ({}, selector {{{}}}, {} .. {}, step {} s): {} requests, {:.3} req/s, mean prompt {:.0} tokens, mean output {:.0} tokens.",
        r.prometheus, r.preset, r.selector, r.start, r.end, r.step_s, r.requests, r.mean_rps,
        r.prompt_tokens_mean, r.generated_tokens_mean
    );
    let _ = writeln!(t, "\nFitted profile ({}):\n", r.profile_json.display());
    let _ = writeln!(
        t,
        "| quantity | value | from | steps | RMS error per step |"
    );
    let _ = writeln!(t, "|---|---:|---|---:|---:|");
    for l in &r.fit.lines {
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} | {} |",
            l.quantity,
            l.value,
            l.from,
            l.steps,
            l.rms_error_pct.map_or("-".into(), |e| format!("{e:.1} %"))
        );
    }
    match r.fit.e2e_rms_error_pct {
        Some(e) => {
            let _ = writeln!(
                t,
                "\nEnd-to-end latency per step predicted by the profile against the measured: {e:.1} % RMS error."
            );
        }
        None => {
            let _ = writeln!(t, "\nNo end-to-end latency to check the profile against.");
        }
    }
    let all: Vec<&String> = r.warnings.iter().chain(&r.fit.warnings).collect();
    if !all.is_empty() {
        let _ = writeln!(t, "\nWarnings:");
        for w in all {
            let _ = writeln!(t, "- {w}");
        }
    }
    t
}

/// The rebuild as a section of `report.html`.
pub fn section(r: &Rebuild) -> crate::html::Section {
    use crate::html::{escape, table, td};
    let mut h = String::new();
    let _ = writeln!(
        h,
        "<p>Prometheus <code>{}</code>, preset <code>{}</code>, selector <code>{{{}}}</code>, {} .. {}, step {} s: <span data-field=\"rebuilt_requests\" data-value=\"{}\">{}</span> requests ({:.3} req/s), mean prompt {:.0} tokens, mean output {:.0} tokens. Trace <code>{}</code>, profile <code>{}</code>.</p>",
        escape(&r.prometheus),
        escape(&r.preset),
        escape(&r.selector),
        r.start,
        r.end,
        r.step_s,
        r.requests,
        r.requests,
        r.mean_rps,
        r.prompt_tokens_mean,
        r.generated_tokens_mean,
        escape(&r.trace_csv.display().to_string()),
        escape(&r.profile_json.display().to_string())
    );
    let rows: Vec<Vec<String>> = r
        .series
        .iter()
        .map(|(k, v)| vec![td(&escape(k)), td(&format!("<code>{}</code>", escape(v)))])
        .collect();
    h.push_str(&table(&["read for", "series"], &rows));
    let rows: Vec<Vec<String>> = r
        .fit
        .lines
        .iter()
        .map(|l| {
            vec![
                td(&escape(&l.quantity)),
                format!(
                    "<td data-field=\"{}\" data-value=\"{}\">{}</td>",
                    escape(&l.quantity),
                    escape(&l.value),
                    escape(&l.value)
                ),
                td(&escape(&l.from)),
                td(&l.steps.to_string()),
                td(&l.rms_error_pct.map_or("-".into(), |e| format!("{e:.1} %"))),
            ]
        })
        .collect();
    h.push_str(&table(
        &["quantity", "value", "from", "steps", "RMS error per step"],
        &rows,
    ));
    if let Some(e) = r.fit.e2e_rms_error_pct {
        let _ = writeln!(
            h,
            "<p>End-to-end latency per step predicted by the fitted profile against the measured: <span data-field=\"e2e_rms_error_pct\" data-value=\"{e}\">{e:.1} %</span> RMS error.</p>"
        );
    }
    let all: Vec<&String> = r.warnings.iter().chain(&r.fit.warnings).collect();
    if !all.is_empty() {
        h.push_str("<ul class=\"warn\">\n");
        for w in all {
            let _ = writeln!(h, "<li>{}</li>", escape(w));
        }
        h.push_str("</ul>\n");
    }
    crate::html::Section {
        id: "from-prometheus".into(),
        title: "Rebuilt from Prometheus".into(),
        html: h,
    }
}

/// `--from-prometheus`: rebuild, print the rebuild, then the comparison (and `--sweep`) on the
/// rebuilt trace and profile, with `report.html` holding both and `from-prometheus.json` the
/// rebuild.
pub fn run(args: &SimulateArgs) -> Result<Outcome, SimError> {
    let rebuild = rebuild(args)?;
    eprint!("{}", text(&rebuild));
    let sim_args = SimulateArgs {
        trace: Some(rebuild.trace_csv.clone()),
        trace_format: TraceFormat::Azure,
        profile: Some(rebuild.profile_json.clone()),
        prom: FromPrometheusArgs::default(),
        ..args.clone()
    };
    eprintln!(
        "from-prometheus: replaying {} requests under each policy{}",
        rebuild.requests,
        if args.sweep { " (and the sweep)" } else { "" }
    );
    let sweep = if args.sweep {
        Some(crate::run_sweep(&sim_args)?)
    } else {
        None
    };
    let summary = crate::run(&sim_args)?;
    let html = crate::html::page(&summary.report, sweep.as_ref(), &[section(&rebuild)]);
    write(&summary.report_html, &html)?;
    let rebuild_json = args.out.join("from-prometheus.json");
    let json =
        serde_json::to_string_pretty(&rebuild).expect("the rebuild holds only numbers and strings");
    write(&rebuild_json, &(json + "\n"))?;
    Ok(Outcome {
        rebuild,
        summary,
        sweep,
        rebuild_json,
    })
}
