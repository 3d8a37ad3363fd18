//! The IO of `--from-prometheus`: queries through the scaler's own Prometheus source (its HTTP
//! client with the egress policy, timeouts and body cap), range queries cut into chunks of the
//! grid, one progress line per chunk on stderr.

use std::sync::Arc;
use std::time::Duration;

use keda_gpu_scaler::egress::EgressPolicy;
use keda_gpu_scaler::sources::budget::MemoryLimits;
use keda_gpu_scaler::sources::client;
use keda_gpu_scaler::sources::prometheus::{PrometheusSettings, PrometheusSource, QueryError};

use super::parse::rfc3339;
use super::series::{merge, Grid, RawSeries};
use crate::SimError;

/// Grid points per range query at most (Prometheus refuses more than 11 000 per series).
pub const CHUNK_STEPS: usize = 720;

/// A Prometheus reachable under the egress policy, and the grid its range queries run on.
pub struct Prom {
    source: PrometheusSource,
    rt: tokio::runtime::Runtime,
    pub address: String,
    pub grid: Grid,
    timeout: Duration,
    pub chunk_steps: usize,
    /// Progress lines go to stderr.
    pub progress: bool,
}

fn arg(name: &'static str, message: String) -> SimError {
    SimError::Arg { name, message }
}

impl Prom {
    /// Checks `url` against `egress` (as the scaler checks `prometheusAddress`) and builds the
    /// client the scaler would build.
    pub fn connect(
        url: &str,
        egress: EgressPolicy,
        timeout: Duration,
        grid: Grid,
    ) -> Result<Prom, SimError> {
        let parsed = url::Url::parse(url.trim()).map_err(|e| {
            arg(
                "--from-prometheus",
                format!("'{url}' is not a URL ({e}); expected http(s)://host:port"),
            )
        })?;
        if let Err(why) = egress.check_url(&parsed) {
            let hint = if why.contains("allow_loopback") {
                "; pass --allow-loopback to read a Prometheus on this machine (such as one behind kubectl port-forward)"
            } else {
                ""
            };
            return Err(arg("--from-prometheus", format!("'{url}' {why}{hint}")));
        }
        let egress = Arc::new(egress);
        let http = client::build(timeout, &egress)
            .map_err(|e| arg("--prometheus-ca-file", e.to_string()))?;
        let source = PrometheusSource::new(
            PrometheusSettings {
                timeout,
                step_s: grid.step,
                max_history: Duration::ZERO,
            },
            http,
            MemoryLimits::default().budget(),
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| arg("--from-prometheus", format!("async runtime: {e}")))?;
        Ok(Prom {
            source,
            rt,
            address: parsed.as_str().trim_end_matches('/').to_string(),
            grid,
            timeout,
            chunk_steps: CHUNK_STEPS,
            progress: true,
        })
    }

    fn describe(&self, query: &str, e: &QueryError) -> SimError {
        let why = match e {
            QueryError::Unreachable(_) | QueryError::Timeout(_) => format!(
                "Prometheus at {} did not answer: {e} (check the URL, that it is reachable from here, and --prometheus-timeout-s)",
                self.address
            ),
            QueryError::Rejected(_) => {
                format!("Prometheus at {} refused `{query}`: {e}", self.address)
            }
            QueryError::Address(_) => format!("{}: {e}", self.address),
        };
        arg("--from-prometheus", why)
    }

    fn raw(&self, query: &str, start: i64, end: i64) -> Result<Vec<RawSeries>, QueryError> {
        let answer = self
            .rt
            .block_on(self.source.query(&self.address, query, start, end))?;
        Ok(answer
            .into_iter()
            // Series of one query are told apart by their labels; `__name__` (which differs
            // between a histogram's _bucket and _count) is not one of them.
            .map(|s| RawSeries {
                labels: s
                    .labels
                    .into_iter()
                    .filter(|(k, _)| k != "__name__")
                    .collect(),
                points: s.points,
            })
            .collect())
    }

    /// An instant query at the grid's end.
    pub fn instant(&self, query: &str) -> Result<Vec<RawSeries>, SimError> {
        let end = self.grid.end();
        self.raw(query, end, end)
            .map_err(|e| self.describe(query, &e))
    }

    /// How many series `selector` has anywhere in the range.
    pub fn count(&self, selector: &str) -> Result<usize, SimError> {
        let window = (self.grid.end() - self.grid.start).max(1);
        let q = format!("count(last_over_time({selector}[{window}s]))");
        Ok(self
            .instant(&q)?
            .first()
            .and_then(|s| s.points.first())
            .map_or(0, |p| p.1 as usize))
    }

    /// Range query over grid points `k0..=k1`, halving the span when the answer is over the body
    /// cap.
    fn range_part(&self, query: &str, k0: usize, k1: usize) -> Result<Vec<RawSeries>, SimError> {
        match self.raw(query, self.grid.t(k0), self.grid.t(k1)) {
            Ok(s) => Ok(s),
            Err(QueryError::Unreachable(m)) if m.contains("larger than") && k1 > k0 + 1 => {
                let mid = k0 + (k1 - k0) / 2;
                let mut a = self.range_part(query, k0, mid)?;
                a.extend(self.range_part(query, mid, k1)?);
                Ok(a)
            }
            Err(QueryError::Unreachable(m)) if m.contains("larger than") => Err(arg(
                "--selector",
                format!(
                    "the answer to `{query}` over one step is {m}: narrow --selector to fewer series"
                ),
            )),
            Err(e) => Err(self.describe(query, &e)),
        }
    }

    /// Runs every query over the whole grid, chunk by chunk, printing a line per chunk.
    pub fn ranges(&self, queries: &[String]) -> Result<Vec<Vec<RawSeries>>, SimError> {
        let chunks: Vec<(usize, usize)> = (0..self.grid.steps.max(1))
            .step_by(self.chunk_steps.max(1))
            .map(|k0| (k0, (k0 + self.chunk_steps).min(self.grid.steps)))
            .collect();
        let mut parts: Vec<Vec<RawSeries>> = vec![Vec::new(); queries.len()];
        for (i, &(k0, k1)) in chunks.iter().enumerate() {
            let began = std::time::Instant::now();
            let mut points = 0usize;
            for (q, part) in queries.iter().zip(parts.iter_mut()) {
                let got = self.range_part(q, k0, k1)?;
                points += got.iter().map(|s| s.points.len()).sum::<usize>();
                part.extend(got);
            }
            if self.progress {
                eprintln!(
                    "from-prometheus: chunk {}/{} {} .. {}: {} queries, {points} points, {:.1} s",
                    i + 1,
                    chunks.len(),
                    rfc3339(self.grid.t(k0) as f64),
                    rfc3339(self.grid.t(k1) as f64),
                    queries.len(),
                    began.elapsed().as_secs_f64()
                );
            }
        }
        Ok(parts.into_iter().map(merge).collect())
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}
