//! `demo --prometheus`: a real Prometheus on loopback between the replicas and the scaler. It
//! scrapes every replica each second through a `file_sd_configs` job whose targets file the demo
//! rewrites (temp file + rename) when the replica set changes; each target carries
//! `namespace="demo"` and a stable `pod` name, as Kubernetes service discovery would. The trigger
//! then reads `source=prometheus` with a pod selector that never changes.
//!
//! The process is the demo's child like a replica: its own process group (the terminal's Ctrl-C
//! reaches the demo only), SIGTERM from the kernel if the demo dies, killed and reaped on drop
//! (end of run, interrupt, panic), and its storage folder removed.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::DemoError;

/// Pod names are `gpu-workload-<replica id>` (`replicas::pod_name`); the trigger's
/// `podSelector` matches them all.
pub const POD_SELECTOR: &str = "gpu-workload-[0-9]+";

/// A Prometheus process scraping the demo's replicas.
pub struct DemoPrometheus {
    pub addr: SocketAddr,
    dir: PathBuf,
    child: Option<Child>,
    pid: u32,
    targets: Vec<(String, u16)>,
}

/// The `prometheus` binary: `explicit`, else the first `prometheus` on PATH.
pub fn find_binary(explicit: Option<&Path>) -> Result<PathBuf, DemoError> {
    if let Some(p) = explicit {
        return if p.is_file() {
            Ok(p.to_path_buf())
        } else {
            Err(DemoError::Arg {
                name: "--prometheus-bin",
                message: format!("{} is not a file", p.display()),
            })
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("prometheus"))
        .find(|p| p.is_file())
        .ok_or_else(|| DemoError::Arg {
            name: "--prometheus",
            message: "no `prometheus` binary on PATH; install Debian's prometheus package \
                      (apt-get install prometheus) or pass --prometheus-bin PATH"
                .into(),
        })
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DemoError + '_ {
    move |source| DemoError::Io {
        path: path.display().to_string(),
        source,
    }
}

impl DemoPrometheus {
    /// Starts `binary` on a free loopback port with a fresh storage folder and an empty targets
    /// file, logging to `log`, and waits until it answers `/-/ready`.
    pub async fn start(binary: &Path, log: &Path) -> Result<DemoPrometheus, DemoError> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!(
            "keda-gpu-scaler-demo-prometheus-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let listener = TcpListener::bind("127.0.0.1:0").map_err(io(Path::new("127.0.0.1:0")))?;
        let addr = listener
            .local_addr()
            .map_err(io(Path::new("127.0.0.1:0")))?;
        drop(listener);
        let mut p = DemoPrometheus {
            addr,
            dir,
            child: None,
            pid: 0,
            targets: Vec::new(),
        };
        // From here on, Drop removes the folder (and kills the process) if anything fails.
        p.write_targets()?;
        let config_path = p.dir.join("prometheus.yml");
        std::fs::write(&config_path, config(&p.dir.join("targets.json")))
            .map_err(io(&config_path))?;
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(io(log))?;
        let mut cmd = Command::new(binary);
        cmd.arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                p.dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file);
        super::child::own_group_dying_with_parent(&mut cmd);
        let child = cmd.spawn().map_err(|source| DemoError::Spawn {
            program: binary.display().to_string(),
            source,
        })?;
        p.pid = child.id();
        p.child = Some(child);
        p.wait_ready(log).await?;
        Ok(p)
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    async fn wait_ready(&mut self, log: &Path) -> Result<(), DemoError> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(500))
            .build()
            .expect("an HTTP client with only a timeout set always builds");
        let url = format!("{}/-/ready", self.url());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                return Err(DemoError::Arg {
                    name: "--prometheus",
                    message: format!("prometheus exited with {status}; see {}", log.display()),
                });
            }
            if client
                .get(&url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(DemoError::Arg {
                    name: "--prometheus",
                    message: format!("prometheus not ready within 30 s; see {}", log.display()),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Sets the scraped replicas, `(pod name, port)`; rewrites the targets file when they
    /// changed. Prometheus re-reads it within seconds and marks removed targets' series stale.
    pub fn set_targets(&mut self, mut targets: Vec<(String, u16)>) -> Result<(), DemoError> {
        targets.sort();
        if targets == self.targets {
            return Ok(());
        }
        self.targets = targets;
        self.write_targets()
    }

    fn write_targets(&self) -> Result<(), DemoError> {
        let groups: Vec<serde_json::Value> = self
            .targets
            .iter()
            .map(|(pod, port)| {
                serde_json::json!({
                    "targets": [format!("127.0.0.1:{port}")],
                    "labels": { "namespace": super::keda::NAMESPACE, "pod": pod },
                })
            })
            .collect();
        let text = serde_json::to_string_pretty(&groups).expect("JSON values serialise");
        // Written beside and renamed over: Prometheus never reads a half-written file.
        let tmp = self.dir.join("targets.json.tmp");
        let path = self.dir.join("targets.json");
        std::fs::write(&tmp, text).map_err(io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io(&path))
    }

    /// Queries the scaler made: Prometheus's own count of `/api/v1/query*` requests.
    pub async fn queries_served(&self) -> Option<f64> {
        let body = reqwest::Client::new()
            .get(format!("{}/metrics", self.url()))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        let metrics = keda_gpu_scaler::sources::scrape::exposition::parse(&body);
        Some(
            metrics
                .get("prometheus_http_requests_total")
                .iter()
                .filter(|s| {
                    s.label("handler")
                        .is_some_and(|h| h.starts_with("/api/v1/query"))
                })
                .map(|s| s.value)
                .filter(|v| v.is_finite())
                .sum(),
        )
    }

    /// Kills and reaps the process and removes its storage.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for DemoPrometheus {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The trigger metadata for Prometheus mode: `base` (the scrape mode's targets) read through
/// Prometheus at `url`, for the demo namespace's `gpu-workload-N` pods.
pub fn trigger_metadata(mut base: HashMap<String, String>, url: &str) -> HashMap<String, String> {
    base.remove("endpoints");
    for (k, v) in [
        ("source", "prometheus"),
        ("prometheusAddress", url),
        ("namespace", super::keda::NAMESPACE),
        ("podSelector", POD_SELECTOR),
    ] {
        base.insert(k.into(), v.into());
    }
    // `rate()` over the latency histogram needs two scrapes inside the window.
    if let Some(w) = base.get_mut("latencyWindowSeconds") {
        let s: f64 = w.parse().unwrap_or(0.0);
        *w = format!("{}", s.max(3.0));
    }
    base
}

fn config(targets: &Path) -> String {
    let mut c = String::from(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n  evaluation_interval: 1s\n\
         scrape_configs:\n  - job_name: gpu-workload\n    metrics_path: /metrics\n",
    );
    let _ = write!(
        c,
        "    file_sd_configs:\n      - files: ['{}']\n        refresh_interval: 1s\n",
        targets.display()
    );
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replicas::pod_name;

    #[test]
    fn metadata_parses_as_a_prometheus_trigger_whose_selector_matches_the_pod_names() {
        let mut base = super::super::control::composite_metadata(1, 0.5, 6, 30.0);
        base.insert("endpoints".into(), "http://127.0.0.1:9/metrics".into());
        let m = trigger_metadata(base, "http://127.0.0.1:9090");
        assert!(!m.contains_key("endpoints"));
        let spec = keda_gpu_scaler::spec::parse(&m).unwrap();
        assert_eq!(spec.source.kind(), "prometheus");
        assert_eq!(spec.latency_window_s, 3.0);
        let names: Vec<&str> = spec.signals.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["gpu_util", "queue", "inflight", "latency"]);
        let re = regex::Regex::new(&format!("^(?:{POD_SELECTOR})$")).unwrap();
        assert!(re.is_match(&pod_name(1)) && re.is_match(&pod_name(12)));
    }

    #[test]
    fn the_config_scrapes_every_second_from_the_targets_file() {
        let c = config(Path::new("/tmp/x/targets.json"));
        assert!(c.contains("scrape_interval: 1s"));
        assert!(c.contains("files: ['/tmp/x/targets.json']"));
    }
}
