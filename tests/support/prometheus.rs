//! A real Prometheus server on loopback for integration tests, scraping endpoints the test
//! controls, and dcgm-exporter-format bodies built on the recorded sample scrape.

use std::fmt::Write as _;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A scrape job: its name, target URL, and whether the scraped labels win over target labels.
pub struct Job {
    pub name: &'static str,
    pub url: String,
    pub honor_labels: bool,
    /// Target labels; with `honor_labels: false` scraped labels of the same name are renamed
    /// `exported_<name>`, as Kubernetes service discovery does to dcgm-exporter's `pod`.
    pub target_labels: Vec<(&'static str, &'static str)>,
}

impl Job {
    pub fn honoring(name: &'static str, url: &str) -> Job {
        Job {
            name,
            url: url.to_string(),
            honor_labels: true,
            target_labels: Vec::new(),
        }
    }
}

/// A Prometheus process. Killed when dropped.
pub struct Prometheus {
    pub url: String,
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

fn binary() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("prometheus"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "the `prometheus` binary is not on PATH; these tests run a real Prometheus server \
                 (Debian/Ubuntu: apt-get install -y prometheus)"
            )
        })
}

impl Prometheus {
    /// Starts Prometheus on a free loopback port scraping `jobs` every second, and waits until
    /// it is ready.
    pub fn start(jobs: &[Job]) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let mut config = String::from(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n  evaluation_interval: 1s\nscrape_configs:\n",
        );
        for job in jobs {
            let url = reqwest::Url::parse(&job.url).unwrap();
            let _ = write!(
                config,
                "  - job_name: {}\n    honor_labels: {}\n    metrics_path: {}\n    static_configs:\n      - targets: ['{}:{}']\n",
                job.name,
                job.honor_labels,
                url.path(),
                url.host_str().unwrap(),
                url.port().unwrap()
            );
            if !job.target_labels.is_empty() {
                config.push_str("        labels:\n");
                for (k, v) in &job.target_labels {
                    let _ = writeln!(config, "          {k}: '{v}'");
                }
            }
        }
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut p = Prometheus {
            url: format!("http://127.0.0.1:{port}"),
            port,
            dir,
            child: None,
        };
        p.spawn();
        p
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("prometheus.log")).unwrap();
        let child = Command::new(binary())
            .arg(format!(
                "--config.file={}",
                self.dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                self.dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{}", self.port))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus starts");
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let url = format!("{}/-/ready", self.url);
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!(
                    "prometheus exited with {status}: {}",
                    std::fs::read_to_string(self.dir.path().join("prometheus.log"))
                        .unwrap_or_default()
                );
            }
            if blocking_get(&url).is_some_and(|(code, _)| code == 200) {
                return;
            }
            assert!(Instant::now() < deadline, "prometheus not ready in 30s");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kills the server (SIGKILL), keeping its data.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port and data.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// `prometheus_http_requests_total` for one API handler, from Prometheus's own /metrics.
    pub fn http_requests(&self, handler: &str) -> f64 {
        let (_, body) =
            blocking_get(&format!("{}/metrics", self.url)).expect("prometheus /metrics");
        let needle = format!("handler=\"{handler}\"");
        body.lines()
            .filter(|l| l.starts_with("prometheus_http_requests_total{") && l.contains(&needle))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Waits until Prometheus has scraped every job at least `n` times.
    pub fn wait_scraped(&self, n: u32) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (_, body) = blocking_get(&format!(
                "{}/api/v1/query?query=min(count_over_time(up%5B1h%5D))",
                self.url
            ))
            .unwrap_or_default();
            let count = body
                .split("\"value\":[")
                .nth(1)
                .and_then(|r| r.split('"').nth(1))
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0);
            if count >= f64::from(n) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "prometheus did not scrape {n} times in 20s"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A plain HTTP GET on loopback, blocking (for harness code outside the runtime's hot path).
fn blocking_get(url: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let url = reqwest::Url::parse(url).ok()?;
    let addr = format!("{}:{}", url.host_str()?, url.port()?);
    let mut stream =
        std::net::TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_millis(500))
            .ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let path = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    };
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let code = response.split(' ').nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n")?.1.to_string();
    Some((code, body))
}

/// One GPU in a pod, as dcgm-exporter reports it in Kubernetes mode.
pub struct GpuPod<'a> {
    pub namespace: &'a str,
    pub pod: &'a str,
    pub util: f64,
    pub fb_used: f64,
    pub fb_free: f64,
}

const FIXTURE: &str = include_str!("../fixtures/dcgm-exporter-sample.prom");

/// The recorded dcgm-exporter scrape (whose GPUs carry no pod: idle) with a GPU per entry of
/// `pods` added to the utilisation, memory and engine-activity families.
pub fn dcgm(pods: &[GpuPod<'_>]) -> String {
    let mut out = String::new();
    for line in FIXTURE.lines() {
        out.push_str(line);
        out.push('\n');
        let family = [
            "DCGM_FI_DEV_GPU_UTIL{",
            "DCGM_FI_DEV_FB_USED{",
            "DCGM_FI_DEV_FB_FREE{",
            "DCGM_FI_PROF_GR_ENGINE_ACTIVE{",
        ]
        .into_iter()
        .find(|f| line.starts_with(f));
        let Some(family) = family else { continue };
        for (i, p) in pods.iter().enumerate() {
            let value = match family {
                "DCGM_FI_DEV_GPU_UTIL{" => p.util,
                "DCGM_FI_DEV_FB_USED{" => p.fb_used,
                "DCGM_FI_DEV_FB_FREE{" => p.fb_free,
                _ => p.util / 100.0,
            };
            let _ = writeln!(
                out,
                "{family}gpu=\"{n}\",UUID=\"GPU-0000-{n:04}\",device=\"nvidia{n}\",modelName=\"NVIDIA A10G\",Hostname=\"node-1\",namespace=\"{}\",pod=\"{}\",container=\"server\"}} {value}",
                p.namespace,
                p.pod,
                n = i + 1
            );
        }
    }
    out
}
