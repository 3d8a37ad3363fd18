//! The replica pool: each replica is a real `gpu-workload` process on a loopback port, created
//! after a cold-start delay, ready once its `/readyz` answers, drained with SIGTERM on scale-down,
//! and killed when the pool is dropped (so a panic or an early return leaves no process behind).

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::child;
use super::cpu::CpuMeter;
use super::DemoError;
use keda_gpu_scaler::deletion::{by_load, PodLoad};
use keda_gpu_scaler::sources::scrape::exposition;

/// The pod name of replica `id`, `gpu-workload-<id>`: the `pod` label Prometheus gives its
/// series in `--prometheus` mode.
pub fn pod_name(id: u32) -> String {
    format!("{}-{id}", super::keda::NAME)
}

/// How replicas are started.
#[derive(Clone, Debug)]
pub struct ReplicaConfig {
    /// Program and leading arguments: this binary's hidden `workload-replica` subcommand, or a
    /// `gpu-workload` binary.
    pub program: PathBuf,
    pub leading_args: Vec<String>,
    pub max_concurrency: u32,
    pub queue_capacity: usize,
    /// Seconds from creation until the process is started (image pull + model load).
    pub cold_start: Duration,
    /// How long a draining replica may take before it is killed (its termination grace period).
    pub drain_timeout: Duration,
    /// Remove the least busy ready replica at the last scrape (what `podDeletionCost` asks the
    /// ReplicaSet for) instead of the most recently ready.
    pub spare_busy: bool,
    /// Where the replicas' stderr goes (None: discarded).
    pub log: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplicaPhase {
    /// Created; the process starts when the cold start has passed.
    Pending,
    /// Process running, `/readyz` not yet 200.
    Starting,
    Ready,
    /// SIGTERM sent; finishing in-flight requests.
    Draining,
}

/// What the replica's own `/metrics` said at the last scrape.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct ReplicaMetrics {
    pub utilization_pct: f64,
    pub inflight: f64,
    pub queue: f64,
    /// `workload_requests_total` summed over endpoints and statuses.
    pub requests_total: f64,
}

pub struct Replica {
    pub id: u32,
    pub port: u16,
    pub phase: ReplicaPhase,
    created: Instant,
    draining_since: Option<Instant>,
    child: Option<Child>,
    cpu: Option<CpuMeter>,
    pub metrics: Option<ReplicaMetrics>,
}

impl Replica {
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn metrics_url(&self) -> String {
        format!("http://127.0.0.1:{}/metrics", self.port)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// CPU used over the last `window`, percent of one core.
    pub fn cpu_pct(&self, window: Duration) -> Option<f64> {
        self.cpu.as_ref().and_then(|c| c.percent(window))
    }

    /// Counts towards the Deployment's replicas (not draining).
    pub fn is_live(&self) -> bool {
        self.phase != ReplicaPhase::Draining
    }
}

/// Something that happened to a replica, for the log and the summary.
#[derive(Clone, Debug, PartialEq)]
pub enum PoolEvent {
    Started {
        id: u32,
        pid: u32,
        port: u16,
    },
    Ready {
        id: u32,
        after_s: f64,
    },
    Exited {
        id: u32,
        code: Option<i32>,
        unexpected: bool,
    },
    Killed {
        id: u32,
        /// Requests in service or queued at its last scrape: cut by the kill.
        cut: f64,
    },
}

/// One line per event, for the view's log.
impl std::fmt::Display for PoolEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PoolEvent::Started { id, pid, port } => {
                write!(
                    f,
                    "replica {id} process started (pid {pid}, 127.0.0.1:{port})"
                )
            }
            PoolEvent::Ready { id, after_s } => {
                write!(f, "replica {id} ready after {after_s:.1} s")
            }
            PoolEvent::Exited {
                id,
                code,
                unexpected,
            } => {
                let how = code.map_or("by signal".to_string(), |c| format!("with code {c}"));
                if *unexpected {
                    write!(f, "replica {id} exited unexpectedly {how}")
                } else {
                    write!(f, "replica {id} drained and exited {how}")
                }
            }
            PoolEvent::Killed { id, cut } => write!(
                f,
                "replica {id} killed after its drain timeout, cutting about {cut:.0} requests"
            ),
        }
    }
}

pub struct Pool {
    config: ReplicaConfig,
    pub replicas: Vec<Replica>,
    next_id: u32,
    /// Every process ever started, for the leak check.
    pub pids: Vec<u32>,
    client: reqwest::Client,
}

impl Pool {
    pub fn new(config: ReplicaConfig) -> Self {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(500))
            .build()
            .expect("an HTTP client with only a timeout set always builds");
        Pool {
            config,
            replicas: Vec::new(),
            next_id: 1,
            pids: Vec::new(),
            client,
        }
    }

    /// Replicas counted by the Deployment (pending, starting, ready).
    pub fn live(&self) -> u32 {
        self.replicas.iter().filter(|r| r.is_live()).count() as u32
    }

    pub fn ready(&self) -> u32 {
        self.count(ReplicaPhase::Ready)
    }

    pub fn count(&self, phase: ReplicaPhase) -> u32 {
        self.replicas.iter().filter(|r| r.phase == phase).count() as u32
    }

    pub fn ready_addrs(&self) -> Vec<SocketAddr> {
        self.replicas
            .iter()
            .filter(|r| r.phase == ReplicaPhase::Ready)
            .map(Replica::addr)
            .collect()
    }

    /// The `/metrics` URLs of live replicas, sorted by port: the per-pod endpoint list.
    pub fn live_metrics_urls(&self) -> Vec<String> {
        let mut v: Vec<(u16, String)> = self
            .replicas
            .iter()
            .filter(|r| r.is_live())
            .map(|r| (r.port, r.metrics_url()))
            .collect();
        v.sort();
        v.into_iter().map(|(_, u)| u).collect()
    }

    /// `(pod name, port)` of live replicas: Prometheus's scrape targets in `--prometheus` mode.
    pub fn live_targets(&self) -> Vec<(String, u16)> {
        self.replicas
            .iter()
            .filter(|r| r.is_live())
            .map(|r| (pod_name(r.id), r.port))
            .collect()
    }

    /// Scales to `n` live replicas, as a ReplicaSet does: new ones are created pending; removal
    /// takes pending, then starting, then the newest ready replicas (with `spare_busy`, the least
    /// busy at the last scrape, ranked by the scaler's own `deletion::by_load`), and drains them.
    pub fn scale(&mut self, n: u32) -> Result<(), DemoError> {
        while self.live() < n {
            let port = free_port()?;
            self.replicas.push(Replica {
                id: self.next_id,
                port,
                phase: ReplicaPhase::Pending,
                created: Instant::now(),
                draining_since: None,
                child: None,
                cpu: None,
                metrics: None,
            });
            self.next_id += 1;
        }
        while self.live() > n {
            let rank = |p: ReplicaPhase| match p {
                ReplicaPhase::Pending => 0,
                ReplicaPhase::Starting => 1,
                _ => 2,
            };
            let loads: Vec<PodLoad> = self
                .replicas
                .iter()
                .filter(|r| self.config.spare_busy && r.phase == ReplicaPhase::Ready)
                .map(|r| PodLoad {
                    pod: r.id.to_string(),
                    requests: r.metrics.map(|m| m.inflight + m.queue),
                    kv_cache: None,
                })
                .collect();
            let order: Vec<String> = by_load(&loads).iter().map(|p| p.pod.clone()).collect();
            let busy = |r: &Replica| {
                order
                    .iter()
                    .position(|p| *p == r.id.to_string())
                    .unwrap_or(usize::MAX)
            };
            let victim = self
                .replicas
                .iter()
                .enumerate()
                .filter(|(_, r)| r.is_live())
                .min_by_key(|(_, r)| (rank(r.phase), busy(r), std::cmp::Reverse(r.created)))
                .map(|(i, _)| i)
                .expect("live() > n >= 0 means a live replica exists");
            let r = &mut self.replicas[victim];
            match &r.child {
                None => {
                    self.replicas.remove(victim);
                }
                Some(child) => {
                    terminate(child.id());
                    r.phase = ReplicaPhase::Draining;
                    r.draining_since = Some(Instant::now());
                }
            }
        }
        Ok(())
    }

    /// Advances every replica: starts those whose cold start has passed, marks ready ones, reaps
    /// exited ones and kills drains that overrun. Returns what happened.
    pub async fn tick(&mut self) -> Result<Vec<PoolEvent>, DemoError> {
        let mut events = Vec::new();
        let now = Instant::now();
        for r in &mut self.replicas {
            if r.phase == ReplicaPhase::Pending && now >= r.created + self.config.cold_start {
                let child = spawn(&self.config, r.port)?;
                let pid = child.id();
                self.pids.push(pid);
                r.cpu = Some(CpuMeter::new(pid));
                r.child = Some(child);
                r.phase = ReplicaPhase::Starting;
                events.push(PoolEvent::Started {
                    id: r.id,
                    pid,
                    port: r.port,
                });
            }
        }
        // Readiness probes and metric scrapes, concurrently.
        let probes = self.replicas.iter().map(|r| {
            let client = &self.client;
            let phase = r.phase;
            let port = r.port;
            async move {
                match phase {
                    ReplicaPhase::Starting => {
                        let ok = client
                            .get(format!("http://127.0.0.1:{port}/readyz"))
                            .send()
                            .await
                            .is_ok_and(|r| r.status().is_success());
                        (ok, None)
                    }
                    ReplicaPhase::Ready => (true, scrape(client, port).await),
                    _ => (false, None),
                }
            }
        });
        let results = futures_util::future::join_all(probes).await;
        for (r, (ok, metrics)) in self.replicas.iter_mut().zip(results) {
            if r.phase == ReplicaPhase::Starting && ok {
                r.phase = ReplicaPhase::Ready;
                events.push(PoolEvent::Ready {
                    id: r.id,
                    after_s: r.created.elapsed().as_secs_f64(),
                });
            }
            if r.phase == ReplicaPhase::Ready {
                r.metrics = metrics;
            }
            if let Some(cpu) = &mut r.cpu {
                cpu.sample();
            }
        }
        let drain_timeout = self.config.drain_timeout;
        let mut i = 0;
        while i < self.replicas.len() {
            let r = &mut self.replicas[i];
            let exited = match r.child.as_mut().map(Child::try_wait) {
                Some(Ok(Some(status))) => Some(status.code()),
                Some(Err(_)) => Some(None),
                _ => None,
            };
            if let Some(code) = exited {
                events.push(PoolEvent::Exited {
                    id: r.id,
                    code,
                    unexpected: r.phase != ReplicaPhase::Draining,
                });
                self.replicas.remove(i);
                continue;
            }
            if r.draining_since
                .is_some_and(|t| t.elapsed() > drain_timeout)
            {
                if let Some(mut child) = r.child.take() {
                    let _ = child.kill();
                    let _ = child.wait();
                }
                let cut = r.metrics.map_or(0.0, |m| m.inflight + m.queue);
                events.push(PoolEvent::Killed { id: r.id, cut });
                self.replicas.remove(i);
                continue;
            }
            i += 1;
        }
        Ok(events)
    }

    /// Drains every replica (SIGTERM), waits up to `grace`, then kills what is left.
    pub async fn shutdown(&mut self, grace: Duration) {
        for r in &self.replicas {
            if let Some(c) = &r.child {
                terminate(c.id());
            }
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            self.replicas.retain_mut(|r| match r.child.as_mut() {
                Some(c) => !matches!(c.try_wait(), Ok(Some(_)) | Err(_)),
                None => false,
            });
            if self.replicas.is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.kill_all();
    }

    fn kill_all(&mut self) {
        for r in &mut self.replicas {
            if let Some(mut c) = r.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        self.replicas.clear();
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.kill_all();
    }
}

async fn scrape(client: &reqwest::Client, port: u16) -> Option<ReplicaMetrics> {
    let body = client
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let e = exposition::parse(&body);
    let sum = |name: &str| e.get(name).iter().map(|s| s.value).sum::<f64>();
    Some(ReplicaMetrics {
        utilization_pct: sum("workload_accelerator_utilization_percent"),
        inflight: sum("workload_inflight_requests"),
        queue: sum("workload_queue_length"),
        requests_total: sum("workload_requests_total"),
    })
}

/// A loopback port nobody listens on right now.
fn free_port() -> Result<u16, DemoError> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|source| DemoError::Io {
        path: "127.0.0.1:0".into(),
        source,
    })?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|source| DemoError::Io {
            path: "127.0.0.1:0".into(),
            source,
        })
}

fn spawn(config: &ReplicaConfig, port: u16) -> Result<Child, DemoError> {
    let mut cmd = Command::new(&config.program);
    cmd.args(&config.leading_args)
        .arg("--addr")
        .arg(format!("127.0.0.1:{port}"))
        .args(["--backend", "cpu", "--cpu-threads", "1"])
        .arg("--max-concurrency")
        .arg(config.max_concurrency.to_string())
        .arg("--queue-capacity")
        .arg(config.queue_capacity.to_string())
        // Keep accepting briefly after SIGTERM: the balancer may have picked this replica just before.
        .args([
            "--shutdown-delay-ms",
            "500",
            "--shutdown-timeout-secs",
            "10",
        ])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    match &config.log {
        Some(path) => {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|source| DemoError::Io {
                    path: path.display().to_string(),
                    source,
                })?;
            cmd.stderr(f);
        }
        None => {
            cmd.stderr(Stdio::null());
        }
    }
    child::own_group_dying_with_parent(&mut cmd);
    cmd.spawn().map_err(|source| DemoError::Spawn {
        program: config.program.display().to_string(),
        source,
    })
}

/// SIGTERM: the workload stops accepting, finishes in-flight requests and exits.
fn terminate(pid: u32) {
    #[cfg(unix)]
    // SAFETY: kill(2) with a pid we spawned and have not reaped.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGTERM);
    }
    #[cfg(not(unix))]
    let _ = pid;
}
