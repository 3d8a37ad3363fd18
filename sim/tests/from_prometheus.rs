//! `--from-prometheus` against a real Prometheus: how faithful is the rebuild?
//!
//! The test plays a known service for six hours: arrivals from a known rate (a four-hour wave and
//! a surge), prompt and output lengths from known log-normal distributions, served by three vLLM
//! replicas with a known cost profile (the simulator's own cluster model stands in for the
//! engine). What vLLM would have exported every 30 s (its metric names, label sets and bucket
//! bounds, those of `tests/fixtures/engines/vllm.prom` and vLLM's `loggers.py`, plus the
//! `namespace` and `pod` labels Kubernetes discovery adds; one replica restarts midway, so its
//! counters reset; another service's series sit beside them) is written as OpenMetrics,
//! backfilled into Debian's Prometheus with `promtool tsdb create-blocks-from openmetrics`, and
//! served on loopback. Then `--from-prometheus` rebuilds the trace and the profile at a 60-s
//! step, and the test compares:
//!
//! - requests per minute, rebuilt against generated: within 5 % (summed absolute error over
//!   the summed count), and the total within 1 %;
//! - mean prompt and output lengths within 5 %;
//! - both traces replayed with the true profile: GPU-hours within 5 % and SLO attainment within
//!   one point for every policy, except where the simulator itself moves more than that with what
//!   60-s data cannot tell. Perfect rebuilds (the generated requests, each at a random instant in
//!   its own step with lengths redrawn inside its own buckets) measure that: where their RMS
//!   deviation times `SPREAD_FACTOR` is larger than the bound, it is the bound. The
//!   printed table shows both for every policy.
//! - the fitted profile against the true one (printed).
//!
//! It also checks the errors for a selector matching nothing, an unreachable Prometheus, a
//! loopback address without --allow-loopback and a selector carrying PromQL.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gpu_workload::rng::SplitMix64;
use keda_gpu_sim::cluster::{Cluster, ClusterConfig};
use keda_gpu_sim::fromprom::{self, parse::parse_time, FromPrometheusArgs};
use keda_gpu_sim::trace::Request;
use keda_gpu_sim::{CostModel, Report, SimulateArgs};

/// The range the rebuild reads, and the generated traffic around it.
const HOURS: f64 = 6.0;
const WARMUP_S: f64 = 600.0;
const SCRAPE_S: f64 = 30.0;
const REPLICAS: u32 = 3;
const MODEL: &str = "meta-llama/Llama-3.1-8B-Instruct";
/// Requests per second around which the four-hour wave moves (+-40 %), and the surge's factor.
const BASE_RATE: f64 = 3.0;
const SURGE: f64 = 1.6;
/// Means of the log-normal prompt (sigma 1) and output (sigma 0.8) lengths.
const PROMPT_MEAN: f64 = 1500.0;
const OUTPUT_MEAN: f64 = 180.0;
/// Perfect rebuilds replayed to measure how much the simulator itself moves with what 60-s
/// data cannot tell (see the test).
const PERFECT_REBUILDS: u64 = 6;
/// Where perfect rebuilds themselves move a policy by more than the bounds, the bound is
/// this many times their RMS deviation.
const SPREAD_FACTOR: f64 = 2.5;
/// vLLM's `build_1_2_5_buckets(max_model_len)` for max_model_len 32768.
const TOKEN_BUCKETS: &[f64] = &[
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0, 20000.0,
];
const TTFT_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
];
const TPOT_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
    40.0, 80.0,
];
const LATENCY_BUCKETS: &[f64] = &[
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0,
    480.0, 960.0, 1920.0, 7680.0,
];

fn truth() -> CostModel {
    CostModel {
        overhead_s: 0.03,
        prefill_s_per_token: 0.000_12,
        decode_s_per_token: 0.012,
        batch: 12,
        full_batch_slowdown: 2.0,
        ..CostModel::default()
    }
}

/// Requests per second at `t` seconds into the range: a four-hour wave around 3/s and a
/// 20-minute surge at its crest.
fn rate(t: f64) -> f64 {
    let wave = BASE_RATE * (1.0 + 0.4 * (std::f64::consts::TAU * t / (4.0 * 3600.0)).sin());
    let surge = if (3300.0..4500.0).contains(&t) {
        SURGE
    } else {
        1.0
    };
    wave * surge
}

/// Finds a tool on PATH; like the scaler's Prometheus tests, a missing one fails with the
/// command that installs it (scripts/test.sh installs it in CI).
fn tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{name}` is not on PATH; this test backfills and queries a real Prometheus \
                 (Debian/Ubuntu: apt-get install -y prometheus, which ships promtool)"
            )
        })
}

/// One generated request.
#[derive(Clone, Copy)]
struct Gen {
    /// Seconds from the start of the generated traffic (the range starts WARMUP_S later).
    at: f64,
    prompt: u32,
    output: u32,
}

/// One request's prompt and output lengths, from the known distributions.
fn lengths(rng: &mut SplitMix64) -> (u32, u32) {
    let prompt = rng
        .log_normal(PROMPT_MEAN, 1.0)
        .round()
        .clamp(1.0, 32_000.0) as u32;
    let output = rng.log_normal(OUTPUT_MEAN, 0.8).round().clamp(1.0, 4000.0) as u32;
    (prompt, output)
}

/// A length drawn from the known distribution (mean, sigma) inside the token bucket that holds
/// `x`: what a rebuild cannot know about `x`.
fn in_bucket(rng: &mut SplitMix64, x: u32, mean: f64, sigma: f64) -> u32 {
    let x = f64::from(x);
    let j = TOKEN_BUCKETS.partition_point(|&b| b < x);
    let lo = if j == 0 { 0.0 } else { TOKEN_BUCKETS[j - 1] };
    let hi = TOKEN_BUCKETS.get(j).copied().unwrap_or(f64::INFINITY);
    for _ in 0..10_000 {
        let v = rng.log_normal(mean, sigma).round().max(1.0);
        if v > lo && v <= hi {
            return v as u32;
        }
    }
    x as u32
}

fn generate(seed: u64) -> Vec<Gen> {
    let mut rng = SplitMix64::new(seed);
    let end = WARMUP_S + HOURS * 3600.0;
    let max = BASE_RATE * 1.4 * SURGE;
    let mut t = 0.0;
    let mut out = Vec::new();
    loop {
        t += rng.exponential(max);
        if t >= end {
            break;
        }
        if rng.uniform() * max < rate(t - WARMUP_S) {
            let (prompt, output) = lengths(&mut rng);
            out.push(Gen {
                at: t,
                prompt,
                output,
            });
        }
    }
    out
}

/// A classic histogram's cumulative state.
#[derive(Clone, Default)]
struct Hist {
    buckets: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Hist {
    fn new(bounds: &[f64]) -> Hist {
        Hist {
            buckets: vec![0; bounds.len()],
            ..Hist::default()
        }
    }

    fn observe(&mut self, bounds: &[f64], v: f64, times: u64) {
        for (b, le) in self.buckets.iter_mut().zip(bounds) {
            if v <= *le {
                *b += times;
            }
        }
        self.sum += v * times as f64;
        self.count += times;
    }
}

/// What one replica exports.
#[derive(Clone)]
struct Pod {
    success_stop: u64,
    success_length: u64,
    hists: Vec<Hist>,
}

/// The vLLM histograms the test exports: name, bounds.
const HISTS: &[(&str, &[f64])] = &[
    ("vllm:request_prompt_tokens", TOKEN_BUCKETS),
    ("vllm:request_generation_tokens", TOKEN_BUCKETS),
    ("vllm:time_to_first_token_seconds", TTFT_BUCKETS),
    ("vllm:time_per_output_token_seconds", TPOT_BUCKETS),
    ("vllm:e2e_request_latency_seconds", LATENCY_BUCKETS),
    ("vllm:request_queue_time_seconds", LATENCY_BUCKETS),
    ("vllm:request_prefill_time_seconds", LATENCY_BUCKETS),
    ("vllm:request_decode_time_seconds", LATENCY_BUCKETS),
];

impl Pod {
    fn new() -> Pod {
        Pod {
            success_stop: 0,
            success_length: 0,
            hists: HISTS.iter().map(|(_, b)| Hist::new(b)).collect(),
        }
    }
}

/// Series values per scrape, keyed by the exposition line's name and labels, grouped by family.
#[derive(Default)]
struct Exposition {
    /// family -> (type, series text -> values per scrape)
    families: BTreeMap<String, (&'static str, BTreeMap<String, Vec<f64>>)>,
}

impl Exposition {
    fn set(&mut self, family: &str, kind: &'static str, series: String, scrape: usize, v: f64) {
        let values = self
            .families
            .entry(family.to_string())
            .or_insert((kind, BTreeMap::new()))
            .1
            .entry(series)
            .or_default();
        values.resize(scrape, f64::NAN);
        values.push(v);
    }

    fn write(&self, path: &Path, times: &[f64]) {
        let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
        for (family, (kind, series)) in &self.families {
            writeln!(f, "# TYPE {family} {kind}").unwrap();
            for (s, values) in series {
                for (v, t) in values.iter().zip(times) {
                    if v.is_finite() {
                        writeln!(f, "{s} {v} {t:.0}").unwrap();
                    }
                }
            }
        }
        writeln!(f, "# EOF").unwrap();
    }
}

fn le(b: f64) -> String {
    if b.is_infinite() {
        "+Inf".into()
    } else {
        format!("{b:?}")
    }
}

/// Plays the service: returns the requests that arrived in the range (absolute times) and the
/// OpenMetrics file's path.
fn play(dir: &Path, t0: f64) -> (Vec<(f64, u32, u32)>, PathBuf) {
    let generated = generate(42);
    let sim0 = t0 - WARMUP_S;
    let cost = truth();
    let requests: Vec<Request> = generated
        .iter()
        .map(|g| Request::tokens(g.at, &cost, g.prompt as f64, g.output as f64))
        .collect();
    let by_arrival: HashMap<u64, Gen> = generated.iter().map(|g| (g.at.to_bits(), *g)).collect();
    let mut cluster = Cluster::new(ClusterConfig {
        cost: cost.clone(),
        cold_start_s: 0.0,
        timeout_s: 1e9,
        slo_s: 10.0,
        ttft_slo_s: 2.0,
        tpot_slo_s: 2.0 * cost.decode_s_per_token,
        grace_s: f64::INFINITY,
        remove_by_remaining_work: false,
    });
    cluster.outcomes.requests = Some(Vec::new());
    cluster.warm_start(REPLICAS);
    let mut pods: Vec<Pod> = (0..REPLICAS).map(|_| Pod::new()).collect();
    // Pod 1 restarts two hours into the range: its counters start again from zero.
    let restart_at = WARMUP_S + 2.0 * 3600.0;
    let mut restarted: Option<Pod> = None;
    let mut expo = Exposition::default();
    let mut times = Vec::new();
    let mut next = 0usize;
    let end = WARMUP_S + HOURS * 3600.0 + 300.0;
    let mut scrape = 0usize;
    let mut t = SCRAPE_S;
    let mut rng = SplitMix64::new(7);
    while t <= end {
        // The restart falls just after the previous scrape: what pod 1 exports from here on
        // counts from zero, and nothing it served is lost between the two.
        if t >= restart_at && restarted.is_none() {
            restarted = Some(pods[1].clone());
        }
        cluster.advance(t, &requests, &mut next);
        let done = std::mem::take(cluster.outcomes.requests.as_mut().unwrap());
        for o in done {
            let g = by_arrival[&o.arrived_s.to_bits()];
            let pod = &mut pods[(rng.next_u64() % u64::from(REPLICAS)) as usize];
            if g.output >= 4000 {
                pod.success_length += 1;
            } else {
                pod.success_stop += 1;
            }
            let prefill = o.ttft_s - o.wait_s;
            let decode = (o.service_s - prefill).max(0.0);
            let tpot = o.tpot_s.unwrap_or(0.0);
            let values = [
                (g.prompt as f64, 1),
                (g.output as f64, 1),
                (o.ttft_s, 1),
                (tpot, u64::from(g.output.saturating_sub(1))),
                (o.latency_s, 1),
                (o.wait_s, 1),
                (prefill, 1),
                (decode, 1),
            ];
            for ((h, (_, bounds)), (v, n)) in pod.hists.iter_mut().zip(HISTS).zip(values) {
                if n > 0 {
                    h.observe(bounds, v, n);
                }
            }
        }
        let inflight: Vec<u32> = cluster
            .ready_indices()
            .map(|i| cluster.replicas[i].inflight)
            .collect();
        for (p, pod) in pods.iter().enumerate() {
            // What the pod exports: since its (re)start.
            let zero = Pod::new();
            let since = if p == 1 {
                restarted.as_ref().unwrap_or(&zero)
            } else {
                &zero
            };
            let labels =
                format!("engine=\"0\",model_name=\"{MODEL}\",namespace=\"llm\",pod=\"vllm-{p}\"");
            for (reason, now, before) in [
                ("stop", pod.success_stop, since.success_stop),
                ("length", pod.success_length, since.success_length),
                ("abort", 0, 0),
            ] {
                expo.set(
                    "vllm:request_success",
                    "counter",
                    format!("vllm:request_success_total{{{labels},finished_reason=\"{reason}\"}}"),
                    scrape,
                    (now - before) as f64,
                );
            }
            for (j, (name, bounds)) in HISTS.iter().enumerate() {
                let (h, b) = (&pod.hists[j], &since.hists[j]);
                for (k, bound) in bounds.iter().chain([&f64::INFINITY]).enumerate() {
                    let v = if bound.is_infinite() {
                        h.count - b.count
                    } else {
                        h.buckets[k] - b.buckets[k]
                    };
                    expo.set(
                        name,
                        "histogram",
                        format!("{name}_bucket{{{labels},le=\"{}\"}}", le(*bound)),
                        scrape,
                        v as f64,
                    );
                }
                expo.set(
                    name,
                    "histogram",
                    format!("{name}_sum{{{labels}}}"),
                    scrape,
                    h.sum - b.sum,
                );
                expo.set(
                    name,
                    "histogram",
                    format!("{name}_count{{{labels}}}"),
                    scrape,
                    (h.count - b.count) as f64,
                );
            }
            expo.set(
                "vllm:num_requests_running",
                "gauge",
                format!("vllm:num_requests_running{{{labels}}}"),
                scrape,
                f64::from(inflight.get(p).copied().unwrap_or(0)),
            );
        }
        // Another service in another namespace, which the selector must leave out, and whose
        // series are broken on purpose: two pods at 15 requests a scrape whose prompt
        // histograms have different buckets (other-1 has no le="+Inf"), no output histogram,
        // and a 10-minute hole in everything three hours into the range.
        let hole = (WARMUP_S + 3.0 * 3600.0..WARMUP_S + 3.0 * 3600.0 + 600.0).contains(&t);
        if !hole {
            for (pod, bounds) in [
                ("other-0", &[100.0, 500.0, 1000.0][..]),
                ("other-1", &[500.0][..]),
            ] {
                let labels =
                    format!("engine=\"0\",model_name=\"other\",namespace=\"other\",pod=\"{pod}\"");
                let n = (scrape * 15) as f64;
                expo.set(
                    "vllm:request_success",
                    "counter",
                    format!("vllm:request_success_total{{{labels},finished_reason=\"stop\"}}"),
                    scrape,
                    n,
                );
                let name = "vllm:request_prompt_tokens";
                for b in bounds {
                    // Every prompt is 400 tokens.
                    let v = if *b >= 400.0 { n } else { 0.0 };
                    expo.set(
                        name,
                        "histogram",
                        format!("{name}_bucket{{{labels},le=\"{}\"}}", le(*b)),
                        scrape,
                        v,
                    );
                }
                if pod == "other-0" {
                    expo.set(
                        name,
                        "histogram",
                        format!("{name}_bucket{{{labels},le=\"+Inf\"}}"),
                        scrape,
                        n,
                    );
                }
                expo.set(
                    name,
                    "histogram",
                    format!("{name}_sum{{{labels}}}"),
                    scrape,
                    400.0 * n,
                );
                expo.set(
                    name,
                    "histogram",
                    format!("{name}_count{{{labels}}}"),
                    scrape,
                    n,
                );
            }
        }
        times.push(sim0 + t);
        scrape += 1;
        t += SCRAPE_S;
    }
    assert_eq!(cluster.outcomes.timed_out, 0);
    let file = dir.join("vllm.om");
    expo.write(&file, &times);
    let in_range = generated
        .iter()
        .filter(|g| g.at >= WARMUP_S && g.at < WARMUP_S + HOURS * 3600.0)
        .map(|g| (sim0 + g.at, g.prompt, g.output))
        .collect();
    (in_range, file)
}

/// A Prometheus serving a backfilled TSDB on loopback; killed when dropped.
struct Prometheus {
    url: String,
    child: Child,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn get(addr: &str, path: &str) -> Option<(u16, String)> {
    use std::io::Read;
    let mut stream =
        std::net::TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_millis(500))
            .ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let code = response.split(' ').nth(1)?.parse().ok()?;
    Some((code, response.split_once("\r\n\r\n")?.1.to_string()))
}

fn backfill_and_serve(dir: &Path, file: &Path) -> Prometheus {
    let data = dir.join("data");
    let began = Instant::now();
    let out = Command::new(tool("promtool"))
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(file)
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "promtool failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("backfill: {:.1} s", began.elapsed().as_secs_f64());
    std::fs::write(
        dir.join("prometheus.yml"),
        "global:\n  scrape_interval: 1m\n",
    )
    .unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
    let child = Command::new(tool("prometheus"))
        .arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!("--storage.tsdb.path={}", data.display()))
        .arg("--storage.tsdb.retention.time=100y")
        .arg(format!("--web.listen-address={addr}"))
        .arg("--log.level=warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("prometheus starts");
    let mut p = Prometheus {
        url: format!("http://{addr}"),
        child,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = p.child.try_wait().unwrap() {
            panic!(
                "prometheus exited with {status}: {}",
                std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default()
            );
        }
        if get(&addr, "/-/ready").is_some_and(|(code, _)| code == 200) {
            break;
        }
        assert!(Instant::now() < deadline, "prometheus not ready in 60 s");
        std::thread::sleep(Duration::from_millis(200));
    }
    p
}

fn args(out: &Path, url: &str, selector: &str, t0: f64) -> SimulateArgs {
    SimulateArgs {
        prom: FromPrometheusArgs {
            from_prometheus: Some(url.to_string()),
            preset: Some("vllm".into()),
            selector: Some(selector.into()),
            start: Some(format!("{t0}")),
            end: Some(format!("{}", t0 + HOURS * 3600.0)),
            step: 60,
            allow_loopback: true,
            ..FromPrometheusArgs::default()
        },
        ..SimulateArgs::with_defaults(out.to_path_buf())
    }
}

fn csv_requests(path: &Path) -> Vec<(f64, u32, u32)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (
                keda_gpu_sim::trace::parse_timestamp(f[0]).unwrap(),
                f[1].parse().unwrap(),
                f[2].parse().unwrap(),
            )
        })
        .collect()
}

fn write_csv(path: &Path, requests: &[(f64, u32, u32)]) {
    let mut s = String::from("TIMESTAMP,ContextTokens,GeneratedTokens\n");
    for (t, p, o) in requests {
        let _ = writeln!(s, "{},{p},{o}", fromprom::parse::azure_timestamp(*t));
    }
    std::fs::write(path, s).unwrap();
}

fn replay(trace: &Path, profile: &Path, out: &Path) -> Report {
    let a = SimulateArgs {
        trace: Some(trace.to_path_buf()),
        profile: Some(profile.to_path_buf()),
        ..SimulateArgs::with_defaults(out.to_path_buf())
    };
    let (trace, cfg, rs, ts, seed) = keda_gpu_sim::prepare(&a).unwrap();
    keda_gpu_sim::simulate(&trace, &cfg, rs, ts, seed).unwrap()
}

#[test]
fn the_rebuild_from_a_backfilled_prometheus_is_faithful() {
    let began = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let t0 = parse_time("2025-06-02T00:00:00Z").unwrap();
    let (generated, file) = play(dir.path(), t0);
    eprintln!(
        "generated {} requests in range, OpenMetrics {:.1} MB, {:.1} s",
        generated.len(),
        std::fs::metadata(&file).unwrap().len() as f64 / 1e6,
        began.elapsed().as_secs_f64()
    );
    let prom = backfill_and_serve(dir.path(), &file);

    // Bad input first: each gets a clear error.
    let bad = |a: SimulateArgs| fromprom::rebuild_with(&a, false).unwrap_err().to_string();
    let out = dir.path().join("out");
    let e = bad(args(&out, &prom.url, "namespace=\"nope\"", t0));
    assert!(
        e.contains("matches no series of vllm:request_success_total")
            && e.contains("namespace=\"llm\""),
        "{e}"
    );
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let e = bad(args(
        &out,
        &format!("http://{closed}"),
        "namespace=\"llm\"",
        t0,
    ));
    assert!(e.contains("did not answer"), "{e}");
    let mut refused = args(&out, &prom.url, "namespace=\"llm\"", t0);
    refused.prom.allow_loopback = false;
    let e = bad(refused);
    assert!(e.contains("--allow-loopback"), "{e}");
    let e = bad(args(&out, &prom.url, "namespace=\"llm\"} or vector(1", t0));
    assert!(e.starts_with("--selector"), "{e}");

    // Broken series: each flaw named in a warning, and no request lost to the hole.
    let other = fromprom::rebuild_with(
        &args(
            &dir.path().join("other"),
            &prom.url,
            "namespace=\"other\"",
            t0,
        ),
        false,
    )
    .unwrap();
    let w = other.warnings.join("\n");
    for flaw in [
        "gap in the range: no samples of vllm:request_success_total in 2025-06-02T03:00:00Z .. 2025-06-02T03:09:00Z (9 min)",
        "has no le=\"+Inf\" bucket; its _count stands in",
        "do not all have the same buckets; le=100,1000",
        "no series of vllm:request_generation_tokens or vllm:generation_tokens_total match",
        "no series of vllm:num_requests_running match",
    ] {
        assert!(w.contains(flaw), "{flaw}\n{w}");
    }
    assert_eq!(other.requests, 30 * 720);
    assert!(
        (other.prompt_tokens_mean - 400.0).abs() < 60.0,
        "{}",
        other.prompt_tokens_mean
    );

    // The rebuild and the comparison on it, as `--from-prometheus` runs them.
    let selector = format!("namespace=\"llm\",model_name=\"{MODEL}\"");
    let done = fromprom::run(&args(&out, &prom.url, &selector, t0)).unwrap();
    let r = &done.rebuild;
    assert!(
        r.warnings.iter().all(|w| !w.contains("gap")),
        "{:?}",
        r.warnings
    );
    assert_eq!(
        r.series["time per output token"],
        "vllm:time_per_output_token_seconds"
    );
    let rebuilt = csv_requests(&r.trace_csv);
    let page = std::fs::read_to_string(&done.summary.report_html).unwrap();
    for part in [
        "<h2 id=\"from-prometheus\">Rebuilt from Prometheus</h2>",
        "data-field=\"decode_s_per_token\"",
        "data-field=\"rebuilt_requests\"",
        "<svg",
    ] {
        assert!(page.contains(part), "report.html lacks {part}");
    }
    assert!(out.join("from-prometheus.json").is_file());

    // Requests per minute.
    let minutes = (HOURS * 60.0) as usize;
    let per_minute = |rs: &[(f64, u32, u32)]| {
        let mut m = vec![0.0f64; minutes];
        for (t, ..) in rs {
            let k = ((t - t0) / 60.0).floor();
            if k >= 0.0 && (k as usize) < minutes {
                m[k as usize] += 1.0;
            }
        }
        m
    };
    let (g, b) = (per_minute(&generated), per_minute(&rebuilt));
    let abs: f64 = g.iter().zip(&b).map(|(x, y)| (x - y).abs()).sum();
    let total_g: f64 = g.iter().sum();
    let total_b: f64 = b.iter().sum();
    let minute_error = abs / total_g;
    let total_error = (total_b - total_g).abs() / total_g;
    let mean = |rs: &[(f64, u32, u32)], f: fn(&(f64, u32, u32)) -> u32| {
        rs.iter().map(|r| f64::from(f(r))).sum::<f64>() / rs.len() as f64
    };
    let prompt_error = mean(&rebuilt, |r| r.1) / mean(&generated, |r| r.1) - 1.0;
    let output_error = mean(&rebuilt, |r| r.2) / mean(&generated, |r| r.2) - 1.0;
    eprintln!(
        "requests: generated {total_g}, rebuilt {total_b} ({:+.2} %); per-minute error {:.2} %; mean prompt {:.0} vs {:.0} ({:+.2} %), mean output {:.0} vs {:.0} ({:+.2} %)",
        100.0 * (total_b / total_g - 1.0),
        100.0 * minute_error,
        mean(&rebuilt, |r| r.1),
        mean(&generated, |r| r.1),
        100.0 * prompt_error,
        mean(&rebuilt, |r| r.2),
        mean(&generated, |r| r.2),
        100.0 * output_error
    );
    assert!(minute_error <= 0.05, "per-minute error {minute_error}");
    assert!(total_error <= 0.01, "total error {total_error}");
    assert!(prompt_error.abs() <= 0.05 && output_error.abs() <= 0.05);

    // Both traces through the simulator with the true profile, and beside them perfect
    // rebuilds: the generated requests themselves, each moved to a random time within its own
    // 60-s step and given lengths drawn afresh inside its own buckets (from the true
    // distributions). Per step, Prometheus holds the count and the bucket counts, never the
    // order, the instants or where in a bucket a length lies, so that is the most any rebuild
    // from it can know; how far such traces move a policy is the simulator's own sensitivity to
    // what the data cannot tell.
    let generated_csv = dir.path().join("generated.csv");
    write_csv(&generated_csv, &generated);
    let truth_json = dir.path().join("truth.json");
    std::fs::write(&truth_json, serde_json::to_string(&truth()).unwrap()).unwrap();
    let a = replay(&generated_csv, &truth_json, &dir.path().join("a"));
    let b = replay(&r.trace_csv, &truth_json, &dir.path().join("b"));
    let perfect: Vec<Report> = (1..=PERFECT_REBUILDS)
        .map(|seed| {
            let mut rng = SplitMix64::new(seed);
            let mut v: Vec<(f64, u32, u32)> = generated
                .iter()
                .map(|g| {
                    let k = ((g.0 - t0) / 60.0).floor();
                    let p = in_bucket(&mut rng, g.1, PROMPT_MEAN, 1.0);
                    let o = in_bucket(&mut rng, g.2, OUTPUT_MEAN, 0.8);
                    (t0 + (k + rng.uniform()) * 60.0, p, o)
                })
                .collect();
            v.sort_by(|x, y| x.0.total_cmp(&y.0));
            let path = dir.path().join(format!("perfect-{seed}.csv"));
            write_csv(&path, &v);
            replay(
                &path,
                &truth_json,
                &dir.path().join(format!("perfect-{seed}")),
            )
        })
        .collect();
    let fitted = &done.summary.report;
    eprintln!("| policy | GPU-h generated | rebuilt | diff | perfect rebuilds: RMS diff | bound | SLO met generated | rebuilt | diff (points) | perfect rebuilds: RMS diff | bound | GPU-h / SLO met, rebuilt with the fitted profile |");
    eprintln!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut failures = Vec::new();
    for (k, (pa, pb)) in a.policies.iter().zip(&b.policies).enumerate() {
        assert_eq!(pa.name, pb.name);
        let pf = fitted.policies.iter().find(|p| p.name == pa.name).unwrap();
        let dg = 100.0 * (pb.gpu_hours / pa.gpu_hours - 1.0);
        let ds = 100.0 * (pb.slo_attainment - pa.slo_attainment);
        let rms = |f: &dyn Fn(&Report) -> f64| {
            (perfect.iter().map(|r| f(r).powi(2)).sum::<f64>() / perfect.len() as f64).sqrt()
        };
        let spread_g = rms(&|r| 100.0 * (r.policies[k].gpu_hours / pa.gpu_hours - 1.0));
        let spread_s = rms(&|r| 100.0 * (r.policies[k].slo_attainment - pa.slo_attainment));
        // The bounds (5 %, one point), or the perfect rebuilds' spread where the
        // simulator itself moves more than that.
        let bound_g = (SPREAD_FACTOR * spread_g).max(5.0);
        let bound_s = (SPREAD_FACTOR * spread_s).max(1.0);
        eprintln!(
            "| {} | {:.2} | {:.2} | {dg:+.2} % | {spread_g:.2} % | {bound_g:.1} % | {:.2} % | {:.2} % | {ds:+.2} | {spread_s:.2} | {bound_s:.2} | {:.2} / {:.2} % |",
            pa.name,
            pa.gpu_hours,
            pb.gpu_hours,
            100.0 * pa.slo_attainment,
            100.0 * pb.slo_attainment,
            pf.gpu_hours,
            100.0 * pf.slo_attainment
        );
        if dg.abs() > bound_g || ds.abs() > bound_s {
            failures.push(format!(
                "{}: GPU-hours {dg:+.2} % (bound {bound_g:.1} %), attainment {ds:+.2} points (bound {bound_s:.2})",
                pa.name
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");

    // The fitted profile against the truth.
    let c = &r.fit.cost;
    let t = truth();
    eprintln!(
        "fitted: overhead {:.4} (true {}), prefill {:.6} (true {}), decode {:.5} (true {}), slowdown {:.2} (true {}), batch {} (true {})",
        c.overhead_s,
        t.overhead_s,
        c.prefill_s_per_token,
        t.prefill_s_per_token,
        c.decode_s_per_token,
        t.decode_s_per_token,
        c.full_batch_slowdown,
        t.full_batch_slowdown,
        c.batch,
        t.batch
    );
    eprintln!("total {:.1} s", began.elapsed().as_secs_f64());
}
