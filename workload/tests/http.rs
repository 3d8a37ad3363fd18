//! The real server on 127.0.0.1:0: responses, every 4xx path, queue bound and 503, metrics,
//! readiness while draining.

use std::time::Duration;

use serde_json::Value;

mod support;
use support::{sample, tryon_form, TestServer};

#[tokio::test]
async fn matrix_returns_result_json() {
    let s = TestServer::start(|_| {}).await;
    let r = s.get("/matrix?size=64&iterations=2&seed=9").await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["backend"], "cpu");
    assert_eq!(v["size"], 64);
    assert_eq!(v["iterations"], 2);
    assert!(v["gflops"].as_f64().unwrap() > 0.0);
    assert!(v["checksum"].as_f64().unwrap().is_finite());
    // Same seed, same checksum: the endpoint computes, it does not make numbers up.
    let again: Value = s
        .get("/matrix?size=64&iterations=2&seed=9")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["checksum"], again["checksum"]);
}

#[tokio::test]
async fn bad_query_parameters_are_4xx_naming_the_field() {
    let s = TestServer::start(|c| {
        c.max_matrix_size = 256;
        c.max_iterations = 5;
        c.max_work_ms = 500;
        c.max_stream_ms = 500;
    })
    .await;
    let cases = [
        ("/matrix?size=abc", 400, "size", "1..=256"),
        ("/matrix?size=0", 400, "size", "1..=256"),
        ("/matrix?size=-1", 400, "size", "1..=256"),
        ("/matrix?size=257", 413, "size", "1..=256"),
        (
            "/matrix?size=99999999999999999999999",
            400,
            "size",
            "1..=256",
        ),
        ("/matrix?iterations=6", 413, "iterations", "1..=5"),
        ("/matrix?iterations=1.5", 400, "iterations", "1..=5"),
        ("/gpu_job?work_ms=0", 400, "work_ms", "1..=500"),
        ("/gpu_job?work_ms=501", 413, "work_ms", "1..=500"),
        ("/gpu_job?work_ms=ten", 400, "work_ms", "1..=500"),
        ("/stream?duration_ms=501", 413, "duration_ms", "1..=500"),
        ("/stream?duration_ms=x", 400, "duration_ms", "1..=500"),
    ];
    for (path, status, field, range) in cases {
        let r = s.get(path).await;
        assert_eq!(r.status().as_u16(), status, "{path}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["field"], field, "{path}: {v}");
        let msg = v["error"].as_str().unwrap();
        assert!(msg.contains(range), "{path}: {msg}");
    }
    let m = s.metrics().await;
    assert_eq!(
        sample(
            &m,
            "workload_requests_total{endpoint=\"matrix\",status=\"413\"}"
        ),
        2.0
    );
}

#[tokio::test]
async fn tryon_returns_png_and_rejects_bad_uploads() {
    let s = TestServer::start(|c| {
        c.max_body_bytes = 200_000;
        c.max_image_dim = 512;
    })
    .await;
    let url = s.url("/tryon");
    let ok = s
        .client
        .post(&url)
        .multipart(tryon_form(support::png(120, 160, 3), support::jpeg(64, 64)))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.headers()["content-type"], "image/png");
    let flops: f64 = ok.headers()["x-flops"].to_str().unwrap().parse().unwrap();
    assert!(flops > 1e9, "{flops}");
    let img = image::load_from_memory(&ok.bytes().await.unwrap()).unwrap();
    assert_eq!((img.width(), img.height()), (192, 256));

    let post = |form: reqwest::multipart::Form| s.client.post(&url).multipart(form).send();
    let expect = |status: u16, field: &'static str| {
        move |r: reqwest::Response| async move {
            assert_eq!(r.status().as_u16(), status, "field {field}");
            let v: Value = r.json().await.unwrap();
            assert_eq!(v["field"], field, "{v}");
        }
    };
    // Missing cloth_image.
    let form = reqwest::multipart::Form::new().part(
        "person_image",
        reqwest::multipart::Part::bytes(support::png(8, 8, 0)),
    );
    expect(400, "cloth_image")(post(form).await.unwrap()).await;
    // Not an image.
    expect(400, "person_image")(
        post(tryon_form(b"hello".to_vec(), support::png(8, 8, 0)))
            .await
            .unwrap(),
    )
    .await;
    // Dimensions over the limit (small file, large canvas).
    expect(413, "cloth_image")(
        post(tryon_form(support::png(8, 8, 0), support::png(600, 10, 0)))
            .await
            .unwrap(),
    )
    .await;
    // Body over the limit.
    let big = vec![0u8; 300_000];
    expect(413, "body")(post(tryon_form(big, support::png(8, 8, 0))).await.unwrap()).await;
    // Not multipart at all.
    let r = s.client.post(&url).body("plain").send().await.unwrap();
    expect(400, "content-type")(r).await;
}

#[tokio::test]
async fn queue_bound_gives_503_with_retry_after() {
    let s = TestServer::start(|c| {
        c.max_concurrency = 1;
        c.queue_capacity = 2;
        c.retry_after_secs = 3;
    })
    .await;
    // 1 running + 2 queued fit; the rest of 8 simultaneous requests must be refused at once.
    let reqs = (0..8).map(|_| {
        let c = s.client.clone();
        let url = s.url("/gpu_job?work_ms=400");
        tokio::spawn(async move { c.get(url).send().await.unwrap() })
    });
    let mut ok = 0;
    let mut refused = 0;
    for h in reqs.collect::<Vec<_>>() {
        let r = h.await.unwrap();
        match r.status().as_u16() {
            200 => ok += 1,
            503 => {
                assert_eq!(r.headers()["retry-after"], "3");
                let v: Value = r.json().await.unwrap();
                assert!(
                    v["error"].as_str().unwrap().contains("queue is full"),
                    "{v}"
                );
                refused += 1;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!((ok, refused), (3, 5));
    let m = s.metrics().await;
    assert_eq!(
        sample(
            &m,
            "workload_requests_total{endpoint=\"gpu_job\",status=\"503\"}"
        ),
        5.0
    );
    assert_eq!(sample(&m, "workload_queue_length "), 0.0);
}

#[tokio::test]
async fn metrics_move_while_requests_run() {
    let s = TestServer::start(|c| {
        c.max_concurrency = 1;
        c.queue_capacity = 4;
    })
    .await;
    let before = s.metrics().await;
    assert!(before.contains("# TYPE workload_request_duration_seconds histogram"));
    assert!(before.contains("workload_build_info{"));
    assert_eq!(sample(&before, "workload_inflight_requests "), 0.0);
    assert_eq!(
        sample(
            &before,
            "workload_accelerator_utilization_percent{backend=\"cpu\"}"
        ),
        0.0
    );
    assert!(
        sample(
            &before,
            "workload_accelerator_memory_total_bytes{backend=\"cpu\"}"
        ) > 0.0
    );

    let jobs: Vec<_> = (0..3)
        .map(|_| {
            let c = s.client.clone();
            let url = s.url("/gpu_job?work_ms=700");
            tokio::spawn(async move { c.get(url).send().await.unwrap().status() })
        })
        .collect();
    // Poll (bounded) until one job runs and two wait.
    let mut seen = None;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let m = s.metrics().await;
        if sample(&m, "workload_inflight_requests ") == 1.0
            && sample(&m, "workload_queue_length ") == 2.0
        {
            seen = Some(m);
            break;
        }
    }
    let during = seen.expect("never saw 1 in flight and 2 queued");
    assert!(
        sample(
            &during,
            "workload_accelerator_memory_used_bytes{backend=\"cpu\"}"
        ) > 0.0
    );
    // A full window later the executor has been busy all along (jobs run back to back).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let busy = sample(
        &s.metrics().await,
        "workload_accelerator_utilization_percent{backend=\"cpu\"}",
    );
    assert!(busy > 80.0, "executor busy {busy}%");
    for j in jobs {
        assert_eq!(j.await.unwrap(), 200);
    }
    let after = s.metrics().await;
    assert_eq!(
        sample(
            &after,
            "workload_requests_total{endpoint=\"gpu_job\",status=\"200\"}"
        ),
        3.0
    );
    assert_eq!(
        sample(
            &after,
            "workload_request_duration_seconds_count{endpoint=\"gpu_job\"}"
        ),
        3.0
    );
    // The third job waited for two others: total latency sum is at least 0.7 + 1.4 + 2.1 s.
    assert!(
        sample(
            &after,
            "workload_request_duration_seconds_sum{endpoint=\"gpu_job\"}"
        ) >= 4.2
    );
    assert_eq!(
        sample(
            &after,
            "workload_request_duration_seconds_bucket{le=\"0.5\",endpoint=\"gpu_job\"}"
        ),
        0.0
    );
    assert_eq!(sample(&after, "workload_inflight_requests "), 0.0);
    assert_eq!(
        sample(
            &after,
            "workload_accelerator_memory_used_bytes{backend=\"cpu\"}"
        ),
        0.0
    );
}

#[tokio::test]
async fn stream_holds_the_connection_and_drain_finishes_it() {
    let mut s = TestServer::start(|_| {}).await;
    let start = std::time::Instant::now();
    let body = s.get("/stream?duration_ms=350").await.text().await.unwrap();
    assert!(start.elapsed() >= Duration::from_millis(350));
    let lines: Vec<Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.len() >= 4, "{body}");
    assert_eq!(lines.last().unwrap()["done"], true);

    assert_eq!(s.get("/readyz").await.status(), 200);
    assert_eq!(s.get("/healthz").await.status(), 200);
    // A long stream and a compute job in flight when shutdown begins.
    let mut long = s.get("/stream?duration_ms=60000").await;
    let job = {
        let c = s.client.clone();
        let url = s.url("/gpu_job?work_ms=500");
        tokio::spawn(async move { c.get(url).send().await.unwrap() })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    s.stop();
    s.state.drained().await;
    assert!(s.state.is_draining());
    // The stream ends early with a final chunk; the job completes with 200.
    let mut last = String::new();
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(5), long.chunk())
        .await
        .unwrap()
        .unwrap()
    {
        last = String::from_utf8(chunk.to_vec()).unwrap();
    }
    assert!(last.contains("\"done\":true"), "{last}");
    assert_eq!(job.await.unwrap().status(), 200);
    tokio::time::timeout(Duration::from_secs(5), s.task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn readyz_fails_during_the_shutdown_delay() {
    let mut s = TestServer::start(|c| c.shutdown_delay_ms = 1500).await;
    assert_eq!(s.get("/readyz").await.status(), 200);
    s.stop();
    s.state.drained().await;
    let r = s.get("/readyz").await;
    assert_eq!(r.status(), 503);
    assert_eq!(r.text().await.unwrap(), "draining");
    // Still serving during the delay.
    assert_eq!(s.get("/matrix?size=8").await.status(), 200);
}

#[tokio::test]
async fn an_abandoned_request_stops_its_work_and_frees_the_executor() {
    let s = TestServer::start(|c| c.max_concurrency = 1).await;
    // A client that gives up after 300 ms on a 20 s job.
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let gone = impatient.get(s.url("/gpu_job?work_ms=20000")).send().await;
    assert!(gone.is_err(), "the client timed out");
    // The next request gets the executor within a moment, not after 20 s.
    let start = std::time::Instant::now();
    let r = s.get("/gpu_job?work_ms=50").await;
    assert_eq!(r.status(), 200);
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "the abandoned job was stopped: next request took {:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn a_body_announced_over_the_limit_is_refused_at_once_and_slow_bodies_time_out() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = TestServer::start(|c| {
        c.max_body_bytes = 1 << 20;
        c.body_timeout_ms = 500;
    })
    .await;
    let request = |length: u64| {
        format!(
            "POST /tryon HTTP/1.1\r\nhost: x\r\ncontent-type: multipart/form-data; boundary=b\r\ncontent-length: {length}\r\n\r\n--b\r\n"
        )
    };
    // 10 GB announced, a few bytes sent: 413 without waiting for the rest.
    let mut conn = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    conn.write_all(request(10_000_000_000).as_bytes())
        .await
        .unwrap();
    let mut head = vec![0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(2), conn.read(&mut head))
        .await
        .expect("answered at once")
        .unwrap();
    let head = String::from_utf8_lossy(&head[..n]);
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");

    // Within the limit but never finished: refused once the body timeout passes.
    let mut conn = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    conn.write_all(request(500_000).as_bytes()).await.unwrap();
    let mut head = vec![0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut head))
        .await
        .expect("answered after the body timeout")
        .unwrap();
    let head = String::from_utf8_lossy(&head[..n]);
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    assert!(head.contains("not received within 500 ms"), "{head}");
}

#[tokio::test]
async fn a_client_trickling_headers_is_disconnected_after_the_header_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = TestServer::start(|c| c.header_timeout_ms = 500).await;
    // One header line every 200 ms, never the blank line that ends them.
    let (mut read, mut write) = tokio::net::TcpStream::connect(s.addr)
        .await
        .unwrap()
        .into_split();
    let trickle = tokio::spawn(async move {
        write.write_all(b"GET /healthz HTTP/1.1\r\n").await?;
        for i in 0.. {
            tokio::time::sleep(Duration::from_millis(200)).await;
            write
                .write_all(format!("x-line-{i}: 1\r\n").as_bytes())
                .await?;
        }
        Ok::<_, std::io::Error>(())
    });
    let start = std::time::Instant::now();
    let mut answer = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), read.read_to_end(&mut answer)).await;
    assert!(
        closed.is_ok(),
        "the connection was still open after 10 s of trickled headers"
    );
    let held = start.elapsed();
    assert!(
        held >= Duration::from_millis(400) && held < Duration::from_secs(5),
        "held {held:?}"
    );
    // Closed, perhaps with a 408, never served.
    let answer = String::from_utf8_lossy(&answer);
    assert!(!answer.contains(" 200 "), "{answer}");
    trickle.abort();

    // A client that sends its headers at once is served as before.
    assert_eq!(s.get("/healthz").await.status(), 200);
}
