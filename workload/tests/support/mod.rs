//! Shared harness: the real server on 127.0.0.1:0 with the CPU backend, and a client.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use gpu_workload::{AppState, Config, Server};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub struct TestServer {
    pub addr: SocketAddr,
    pub state: AppState,
    pub client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    pub task: JoinHandle<std::io::Result<()>>,
}

impl TestServer {
    pub async fn start(tune: impl FnOnce(&mut Config)) -> Self {
        let mut config = Config::cpu("127.0.0.1:0".parse().unwrap());
        // Small threads so tests running side by side do not oversubscribe the machine.
        config.cpu_threads = 1;
        tune(&mut config);
        let server = Server::bind(config).await.expect("server starts");
        let addr = server.local_addr().unwrap();
        let state = server.state();
        let (stop, rx) = oneshot::channel();
        let task = tokio::spawn(server.run(async {
            let _ = rx.await;
        }));
        gpu_workload::install_tls_provider();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        Self {
            addr,
            state,
            client,
            stop: Some(stop),
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request reaches the server")
    }

    pub async fn metrics(&self) -> String {
        self.get("/metrics").await.text().await.unwrap()
    }

    /// Triggers a graceful shutdown (like SIGTERM).
    pub fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// Value of the first sample line whose name and labels start with `prefix`.
#[track_caller]
pub fn sample(metrics: &str, prefix: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no sample {prefix:?} in:\n{metrics}"))
}

/// A PNG of the given size with a deterministic gradient.
pub fn png(width: u32, height: u32, tint: u8) -> Vec<u8> {
    let img = image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([
            (x * 255 / width.max(1)) as u8,
            (y * 255 / height.max(1)) as u8,
            tint,
        ])
    });
    let mut out = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out
}

pub fn jpeg(width: u32, height: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(width, height, |x, y| image::Rgb([x as u8, y as u8, 128]));
    let mut out = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut out),
        image::ImageFormat::Jpeg,
    )
    .unwrap();
    out
}

pub fn tryon_form(person: Vec<u8>, cloth: Vec<u8>) -> reqwest::multipart::Form {
    reqwest::multipart::Form::new()
        .part(
            "person_image",
            reqwest::multipart::Part::bytes(person).file_name("p.png"),
        )
        .part(
            "cloth_image",
            reqwest::multipart::Part::bytes(cloth).file_name("c.png"),
        )
}
