//! The process's proxy variables do not carry tenant fetches: a proxy resolves the tenant's host
//! itself, where the egress policy's address check cannot see it. The variables are process-wide,
//! so this binary holds a single test and sets them before anything else runs.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[test]
fn a_scaler_under_proxy_variables_fetches_tenant_endpoints_directly() {
    // A proxy on loopback that records every request it gets, bound before the variables point
    // at it (and before any other thread exists, so setting them races with no reader).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy = format!("http://{}", listener.local_addr().unwrap());
    for name in ["HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "ALL_PROXY"] {
        std::env::set_var(name, &proxy);
    }
    for name in ["NO_PROXY", "no_proxy"] {
        std::env::remove_var(name);
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(async move {
            let seen = logging_proxy(listener);
            let endpoint = MetricsEndpoint::start("workload_queue_length 30\n").await;
            // The operator's settings as `serve` loads them: this process's variables, the proxy
            // ones included, with egress.use_proxy_env left at its default.
            let loaded = keda_gpu_scaler::config::Settings::load(None, &[]).unwrap();
            assert!(!loaded.sources.egress.use_proxy_env);
            let mut settings = quick_settings();
            settings.sources.egress.use_proxy_env = loaded.sources.egress.use_proxy_env;
            settings.sources.egress.proxy = loaded.sources.egress.proxy;
            let running = start_scaler(&settings).await;
            let mut c = client(&running).await;
            let so = object(
                "direct",
                &[("endpoints", &endpoint.url), ("queueTarget", "10")],
            );
            c.get_metric_spec(so.clone()).await.unwrap();
            // Through the proxy (502) there would be no value at all.
            wait_for_value(&mut c, &so, Duration::from_secs(10), |v| v > 0.0).await;
            assert!(
                seen.lock().unwrap().is_empty(),
                "the proxy got tenant requests: {:?}",
                seen.lock().unwrap()
            );
            running.stop().await;
        });
}

/// Serves `listener` as a proxy that records each request's first line and answers 502.
fn logging_proxy(listener: std::net::TcpListener) -> Arc<Mutex<Vec<String>>> {
    listener.set_nonblocking(true).unwrap();
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let n = conn.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]);
                log.lock()
                    .unwrap()
                    .push(head.lines().next().unwrap_or_default().to_string());
                let _ = conn
                    .write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n")
                    .await;
            });
        }
    });
    seen
}
