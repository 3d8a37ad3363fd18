//! Load generation as a library, so the `loadgen` binary and the scaler's demo drive load the
//! same way: a request kind, an arrival pattern, closed loop (N workers) or open loop (a rate), and
//! a summary with latency percentiles from an HDR histogram.

pub mod trace;

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("at least one --target is required")]
    NoTarget,
    #[error("{0}")]
    Invalid(String),
    #[error("building the HTTP client: {0}")]
    Client(String),
    #[error(transparent)]
    Trace(#[from] trace::TraceError),
}

/// Named scenarios of the `loadgen` CLI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    Matrix,
    Tryon,
    Gpu,
    Stream,
    Burst,
    Ramp,
    Trace,
}

impl FromStr for Scenario {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "matrix" => Self::Matrix,
            "tryon" => Self::Tryon,
            "gpu" => Self::Gpu,
            "stream" => Self::Stream,
            "burst" => Self::Burst,
            "ramp" => Self::Ramp,
            "trace" => Self::Trace,
            other => {
                return Err(format!(
                    "unknown scenario {other:?}; expected matrix, tryon, gpu, stream, burst, ramp or trace"
                ))
            }
        })
    }
}

/// What one request asks of the service.
#[derive(Debug, Clone, PartialEq)]
pub enum RequestKind {
    Matrix { size: usize, iterations: u32 },
    Tryon,
    Gpu { work_ms: u64 },
    Stream { duration_ms: u64 },
}

impl RequestKind {
    pub fn endpoint(&self) -> &'static str {
        match self {
            Self::Matrix { .. } => "matrix",
            Self::Tryon => "tryon",
            Self::Gpu { .. } => "gpu_job",
            Self::Stream { .. } => "stream",
        }
    }
}

/// How arrivals (open loop) or active workers (closed loop) vary over the run.
#[derive(Debug, Clone, PartialEq)]
pub enum Pattern {
    Steady,
    /// Alternating phases: `high` at full load, `low` at `low_fraction` of it.
    Burst {
        high: Duration,
        low: Duration,
        low_fraction: f64,
    },
    /// From near zero to full load linearly over the run.
    Ramp,
    /// Replays these arrival offsets (open loop only).
    Trace {
        arrivals: Vec<Duration>,
    },
}

impl Pattern {
    /// Load level in (0, 1] at `t` into a run of length `total`.
    pub fn level(&self, t: Duration, total: Duration) -> f64 {
        match self {
            Self::Steady | Self::Trace { .. } => 1.0,
            Self::Burst {
                high,
                low,
                low_fraction,
            } => {
                let period = (*high + *low).as_secs_f64().max(1e-3);
                if t.as_secs_f64() % period < high.as_secs_f64() {
                    1.0
                } else {
                    low_fraction.clamp(0.0, 1.0)
                }
            }
            Self::Ramp => (t.as_secs_f64() / total.as_secs_f64().max(1e-3)).clamp(0.02, 1.0),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// N workers, each sends its next request when the previous one finishes.
    Closed { concurrency: usize },
    /// Requests start on a schedule (`rate` per second at full level) whether or not earlier ones
    /// finished; at most `max_outstanding` at once, later arrivals are counted as dropped.
    Open { rate: f64, max_outstanding: usize },
}

#[derive(Debug, Clone)]
pub struct LoadPlan {
    pub scenario: Scenario,
    pub targets: Vec<String>,
    pub request: RequestKind,
    pub pattern: Pattern,
    pub mode: Mode,
    pub duration: Duration,
    pub timeout: Duration,
}

impl LoadPlan {
    pub fn validate(&self) -> Result<(), LoadError> {
        if self.targets.is_empty() {
            return Err(LoadError::NoTarget);
        }
        match self.mode {
            Mode::Closed { concurrency: 0 } => {
                return Err(LoadError::Invalid(
                    "--concurrency must be at least 1".into(),
                ))
            }
            Mode::Open { rate, .. } if !(rate > 0.0 && rate.is_finite()) => {
                return Err(LoadError::Invalid(
                    "--rate must be a positive number of requests per second".into(),
                ))
            }
            Mode::Closed { .. } if matches!(self.pattern, Pattern::Trace { .. }) => {
                return Err(LoadError::Invalid(
                    "the trace scenario replays arrival times: use open loop".into(),
                ))
            }
            _ => {}
        }
        if self.duration.is_zero() {
            return Err(LoadError::Invalid("--duration must be positive".into()));
        }
        Ok(())
    }
}

/// Counters the caller can poll while a run is going (the CLI's progress bar reads these).
#[derive(Debug, Default)]
pub struct LiveStats {
    pub sent: AtomicU64,
    pub ok: AtomicU64,
    pub failed: AtomicU64,
    pub dropped: AtomicU64,
    pub in_flight: AtomicUsize,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LatencySummary {
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub scenario: Scenario,
    pub endpoint: &'static str,
    pub targets: Vec<String>,
    pub elapsed_s: f64,
    /// Requests that completed (any status or transport error).
    pub requests: u64,
    pub ok: u64,
    pub failed: u64,
    /// Open-loop arrivals not sent because `max_outstanding` requests were already open.
    pub dropped: u64,
    pub success_rate: f64,
    /// Successful requests per second.
    pub throughput_rps: f64,
    /// Latency of successful requests.
    pub latency: Option<LatencySummary>,
    /// Responses by HTTP status, and transport failures by kind.
    pub statuses: BTreeMap<String, u64>,
}

impl Summary {
    pub fn render(&self) -> String {
        let mut s = format!(
            "scenario {:?} ({}) against {} target(s) for {:.1}s\n\
             requests {}  ok {}  failed {}  dropped {}  success {:.2}%\n\
             throughput {:.2} req/s\n",
            self.scenario,
            self.endpoint,
            self.targets.len(),
            self.elapsed_s,
            self.requests,
            self.ok,
            self.failed,
            self.dropped,
            self.success_rate * 100.0,
            self.throughput_rps
        );
        match &self.latency {
            Some(l) => s.push_str(&format!(
                "latency ms  p50 {:.1}  p95 {:.1}  p99 {:.1}  max {:.1}  mean {:.1}\n",
                l.p50_ms, l.p95_ms, l.p99_ms, l.max_ms, l.mean_ms
            )),
            None => s.push_str("latency: no successful requests\n"),
        }
        let statuses: Vec<String> = self
            .statuses
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        s.push_str(&format!("statuses {}\n", statuses.join(", ")));
        s
    }
}

struct Shared {
    plan: LoadPlan,
    client: reqwest::Client,
    live: Arc<LiveStats>,
    hist: Mutex<Histogram<u64>>,
    statuses: Mutex<BTreeMap<String, u64>>,
    next_target: AtomicUsize,
    images: (Vec<u8>, Vec<u8>),
}

/// Runs the plan to completion (duration elapsed and open requests finished or timed out).
pub async fn run(plan: LoadPlan, live: Arc<LiveStats>) -> Result<Summary, LoadError> {
    plan.validate()?;
    crate::install_tls_provider();
    let client = reqwest::Client::builder()
        .timeout(plan.timeout)
        .connect_timeout(Duration::from_secs(5))
        .pool_max_idle_per_host(1024)
        .build()
        .map_err(|e| LoadError::Client(e.to_string()))?;
    let images = if plan.request == RequestKind::Tryon {
        (synthetic_png(384, 512, 0), synthetic_png(256, 256, 1))
    } else {
        (Vec::new(), Vec::new())
    };
    let shared = Arc::new(Shared {
        plan: plan.clone(),
        client,
        live: Arc::clone(&live),
        // 1 µs to 1 hour at 3 significant digits.
        hist: Mutex::new(
            Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds"),
        ),
        statuses: Mutex::new(BTreeMap::new()),
        next_target: AtomicUsize::new(0),
        images,
    });
    let start = Instant::now();
    match plan.mode {
        Mode::Closed { concurrency } => closed_loop(&shared, concurrency, start).await,
        Mode::Open {
            rate,
            max_outstanding,
        } => open_loop(&shared, rate, max_outstanding, start).await,
    }
    let elapsed = start.elapsed().as_secs_f64();
    let hist = shared.hist.lock().expect("histogram poisoned");
    let ok = live.ok.load(Ordering::Relaxed);
    let failed = live.failed.load(Ordering::Relaxed);
    let requests = ok + failed;
    let ms = |us: u64| us as f64 / 1e3;
    let statuses = shared.statuses.lock().expect("statuses poisoned").clone();
    let summary = Summary {
        scenario: plan.scenario,
        endpoint: plan.request.endpoint(),
        targets: plan.targets.clone(),
        elapsed_s: elapsed,
        requests,
        ok,
        failed,
        dropped: live.dropped.load(Ordering::Relaxed),
        success_rate: if requests == 0 {
            0.0
        } else {
            ok as f64 / requests as f64
        },
        throughput_rps: ok as f64 / elapsed.max(1e-9),
        latency: (!hist.is_empty()).then(|| LatencySummary {
            p50_ms: ms(hist.value_at_quantile(0.50)),
            p95_ms: ms(hist.value_at_quantile(0.95)),
            p99_ms: ms(hist.value_at_quantile(0.99)),
            max_ms: ms(hist.max()),
            mean_ms: hist.mean() / 1e3,
        }),
        statuses,
    };
    Ok(summary)
}

async fn closed_loop(shared: &Arc<Shared>, concurrency: usize, start: Instant) {
    let total = shared.plan.duration;
    let workers: Vec<_> = (0..concurrency)
        .map(|i| {
            let shared = Arc::clone(shared);
            tokio::spawn(async move {
                loop {
                    let t = start.elapsed();
                    if t >= total {
                        break;
                    }
                    // Worker i works while the pattern's level keeps at least i+1 workers busy.
                    let active =
                        (shared.plan.pattern.level(t, total) * concurrency as f64).ceil() as usize;
                    if i >= active.max(1) {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                    one_request(&shared).await;
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.await;
    }
}

async fn open_loop(shared: &Arc<Shared>, rate: f64, max_outstanding: usize, start: Instant) {
    let total = shared.plan.duration;
    let mut tasks = tokio::task::JoinSet::new();
    let mut offset = Duration::ZERO;
    let mut trace_idx = 0;
    loop {
        // Next arrival time.
        if let Pattern::Trace { arrivals } = &shared.plan.pattern {
            let Some(&a) = arrivals.get(trace_idx) else {
                break;
            };
            trace_idx += 1;
            offset = a;
        }
        if offset >= total {
            break;
        }
        tokio::time::sleep_until(tokio::time::Instant::from_std(start + offset)).await;
        if shared.live.in_flight.load(Ordering::Relaxed) >= max_outstanding {
            shared.live.dropped.fetch_add(1, Ordering::Relaxed);
        } else {
            let shared = Arc::clone(shared);
            tasks.spawn(async move { one_request(&shared).await });
        }
        // Reap finished tasks so the set does not grow with the run's length.
        while tasks.try_join_next().is_some() {}
        if !matches!(shared.plan.pattern, Pattern::Trace { .. }) {
            let level = shared.plan.pattern.level(offset, total);
            offset += Duration::from_secs_f64(1.0 / (rate * level));
        }
    }
    while tasks.join_next().await.is_some() {}
}

async fn one_request(shared: &Shared) {
    let live = &shared.live;
    let i = shared.next_target.fetch_add(1, Ordering::Relaxed);
    let target = shared.plan.targets[i % shared.plan.targets.len()].trim_end_matches('/');
    live.sent.fetch_add(1, Ordering::Relaxed);
    live.in_flight.fetch_add(1, Ordering::Relaxed);
    let start = Instant::now();
    let req = match &shared.plan.request {
        RequestKind::Matrix { size, iterations } => shared.client.get(format!(
            "{target}/matrix?size={size}&iterations={iterations}"
        )),
        RequestKind::Gpu { work_ms } => shared
            .client
            .get(format!("{target}/gpu_job?work_ms={work_ms}")),
        RequestKind::Stream { duration_ms } => shared
            .client
            .get(format!("{target}/stream?duration_ms={duration_ms}")),
        RequestKind::Tryon => {
            let form = reqwest::multipart::Form::new()
                .part(
                    "person_image",
                    reqwest::multipart::Part::bytes(shared.images.0.clone())
                        .file_name("person.png"),
                )
                .part(
                    "cloth_image",
                    reqwest::multipart::Part::bytes(shared.images.1.clone()).file_name("cloth.png"),
                );
            shared
                .client
                .post(format!("{target}/tryon"))
                .multipart(form)
        }
    };
    // The body is read to the end: a request is done when its last byte arrived.
    let outcome = match req.send().await {
        Ok(resp) => {
            let status = resp.status();
            match resp.bytes().await {
                Ok(_) => Ok(status),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    };
    let elapsed_us = start.elapsed().as_micros().max(1) as u64;
    let key = match &outcome {
        Ok(status) => status.as_u16().to_string(),
        Err(e) if e.is_timeout() => "timeout".to_string(),
        Err(e) if e.is_connect() => "connect_error".to_string(),
        Err(_) => "transport_error".to_string(),
    };
    if matches!(outcome, Ok(s) if s.is_success()) {
        live.ok.fetch_add(1, Ordering::Relaxed);
        let _ = shared
            .hist
            .lock()
            .expect("histogram poisoned")
            .record(elapsed_us);
    } else {
        live.failed.fetch_add(1, Ordering::Relaxed);
    }
    *shared
        .statuses
        .lock()
        .expect("statuses poisoned")
        .entry(key)
        .or_default() += 1;
    live.in_flight.fetch_sub(1, Ordering::Relaxed);
}

/// A deterministic test image for the tryon scenario.
pub fn synthetic_png(width: u32, height: u32, variant: u8) -> Vec<u8> {
    let img = image::RgbImage::from_fn(width, height, |x, y| {
        let r = (x * 255 / width.max(1)) as u8;
        let g = (y * 255 / height.max(1)) as u8;
        image::Rgb([
            r ^ variant.wrapping_mul(97),
            g,
            128u8.wrapping_add(variant.wrapping_mul(61)),
        ])
    });
    let mut out = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .expect("encoding a PNG into memory cannot fail");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_and_ramp_levels() {
        let s = Duration::from_secs;
        let burst = Pattern::Burst {
            high: s(2),
            low: s(3),
            low_fraction: 0.25,
        };
        assert_eq!(burst.level(s(1), s(20)), 1.0);
        assert_eq!(burst.level(s(3), s(20)), 0.25);
        assert_eq!(burst.level(Duration::from_millis(5500), s(20)), 1.0);
        assert_eq!(Pattern::Ramp.level(s(5), s(10)), 0.5);
        assert_eq!(Pattern::Ramp.level(s(0), s(10)), 0.02);
        assert_eq!(Pattern::Steady.level(s(3), s(10)), 1.0);
    }
}
