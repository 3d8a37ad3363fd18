//! The binary as users run it: check-config, explain, and serve answering grpcurl, then stopping
//! cleanly on SIGTERM with a stream open.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::*;
use tokio_stream::StreamExt;

#[test]
fn check_config_prints_effective_settings_or_the_exact_problem() {
    let (ok, out, _) = run(&["check-config"], &[]);
    assert!(ok);
    assert!(out.contains("grpc_addr = \"0.0.0.0:6000\""), "{out}");
    assert!(out.contains("http_addr = \"0.0.0.0:8080\""), "{out}");
    assert!(out.contains("sample_interval = \"2s\""), "{out}");

    let (ok, out, _) = run(
        &["check-config", "--grpc-addr", "127.0.0.1:7000"],
        &[("KEDA_GPU_SCALER_MAX_STALENESS", "90s")],
    );
    assert!(ok);
    assert!(
        out.contains("grpc_addr = \"127.0.0.1:7000\"") && out.contains("max_staleness = \"90s\"")
    );

    // First, how tenant fetches leave the pod: the proxy variables count only when opted in.
    let proxy = ("HTTPS_PROXY", "http://user:pw@proxy.example:3128");
    let (ok, out, _) = run(&["check-config"], &[proxy]);
    assert!(ok && out.starts_with("# tenant fetches: direct: "), "{out}");
    assert!(out.contains("use_proxy_env = false"), "{out}");
    let opt_in = ("KEDA_GPU_SCALER_EGRESS__USE_PROXY_ENV", "true");
    let (ok, out, _) = run(&["check-config"], &[proxy, opt_in]);
    let first = out.lines().next().unwrap_or_default();
    assert!(
        ok && first.starts_with("# tenant fetches: through a proxy (")
            && first.contains("https: http://user:REDACTED@proxy.example:3128")
            && first.contains("checks only each URL's literal host"),
        "{out}"
    );
    assert!(!out.contains("pw@"), "{out}");

    let (ok, _, err) = run(
        &["check-config"],
        &[("KEDA_GPU_SCALER_SCRAPE_TIMEOUT", "soon")],
    );
    assert!(!ok);
    assert!(
        err.contains("'scrape_timeout' = 'soon'") && err.contains("expected a duration"),
        "{err}"
    );
}

#[test]
fn the_startup_line_says_how_tenant_fetches_leave_the_pod() {
    let proxy = ("HTTP_PROXY", "http://proxy.example:3128");
    let direct = spawn_serve_binary(BIN, &[proxy]);
    assert!(
        direct
            .announced
            .contains("tenant_fetches=direct: HTTP_PROXY, HTTPS_PROXY and ALL_PROXY are ignored"),
        "{}",
        direct.announced
    );
    let opt_in = ("KEDA_GPU_SCALER_EGRESS__USE_PROXY_ENV", "true");
    let proxied = spawn_serve_binary(BIN, &[proxy, opt_in]);
    assert!(
        proxied
            .announced
            .contains("tenant_fetches=through a proxy (http: http://proxy.example:3128")
            && proxied.announced.contains("only each URL's literal host"),
        "{}",
        proxied.announced
    );
}

#[tokio::test]
async fn explain_prints_the_breakdown() {
    let endpoint = MetricsEndpoint::start(
        "workload_queue_length 25\nworkload_accelerator_utilization_percent 90\n",
    )
    .await;
    let url = endpoint.url.clone();
    let (ok, out, err) = tokio::task::spawn_blocking(move || {
        run(
            &[
                "explain",
                &format!("endpoints={url}"),
                "queueTarget=10",
                "gpuUtilTarget=60",
                "maxReplicas=2",
            ],
            LOOPBACK_EGRESS,
        )
    })
    .await
    .unwrap();
    assert!(ok, "{err}");
    assert!(out.contains("queue") && out.contains("2.500"), "{out}");
    assert!(out.contains("gpu_util") && out.contains("1.500"), "{out}");
    assert!(out.contains("set by queue"), "{out}");
    assert!(out.contains("clamped     to 2 by maxReplicas"), "{out}");

    let (ok, _, err) = tokio::task::spawn_blocking(|| {
        run(
            &[
                "explain",
                "endpoints=http://127.0.0.1:1/metrics",
                "queueTarge=1",
            ],
            LOOPBACK_EGRESS,
        )
    })
    .await
    .unwrap();
    assert!(!ok);
    assert!(err.contains("did you mean 'queueTarget'"), "{err}");
}

#[tokio::test]
async fn explain_in_slo_mode_says_what_was_learned_and_what_decides_until_then() {
    let endpoint =
        MetricsEndpoint::start("workload_queue_length 4\nworkload_inflight_requests 6\n").await;
    let url = endpoint.url.clone();
    let (ok, out, err) = tokio::task::spawn_blocking(move || {
        run(
            &[
                "explain",
                &format!("endpoints={url}"),
                "ttftObjectiveMs=2000",
                "attainment=0.95",
            ],
            LOOPBACK_EGRESS,
        )
    })
    .await
    .unwrap();
    assert!(ok, "{err}");
    assert!(
        out.contains("objective   TTFT <= 2000 ms for 95.0 % of requests"),
        "{out}"
    );
    // One sample: the planner says it is not trusted yet, and how much it has learned.
    assert!(
        out.contains("too few samples: the fallback floor decides"),
        "{out}"
    );
    assert!(out.contains("  learned   one replica serves"), "{out}");
    assert!(out.contains("horizon 120 s (coldStartSeconds)"), "{out}");
    // No replica seen full: no square-root headroom, and the explanation says why.
    assert!(out.contains("  headroom  none"), "{out}");
    // The burst floor and the budget are explained, whatever they hold after one sample.
    assert!(out.contains("\n  floor     "), "{out}");
    assert!(out.contains("\n  present   "), "{out}");
    assert!(out.contains("\n  budget    planned for 5.0 %"), "{out}");
}

// Multi-threaded: the test blocks on grpcurl while the metrics endpoint must keep answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_answers_grpcurl_and_stops_on_sigterm() {
    let endpoint = MetricsEndpoint::start("workload_queue_length 20\n").await;
    let (mut child, grpc_addr) = spawn_serve(&[("KEDA_GPU_SCALER_SAMPLE_INTERVAL", "200ms")]);

    let listed = grpcurl(&["-plaintext", &grpc_addr, "list"]);
    assert!(
        listed.contains("externalscaler.ExternalScaler")
            && listed.contains("grpc.health.v1.Health"),
        "{listed}"
    );
    let described = grpcurl(&[
        "-plaintext",
        &grpc_addr,
        "describe",
        "externalscaler.ExternalScaler",
    ]);
    assert!(
        described.contains("rpc StreamIsActive") && described.contains("rpc StreamMetricSpec"),
        "{described}"
    );

    let so = format!(
        r#"{{"name":"g","namespace":"ns","scalerMetadata":{{"endpoints":"{}","queueTarget":"10"}}}}"#,
        endpoint.url
    );
    let req = format!(r#"{{"scaledObjectRef":{so},"metricName":"gpu-composite"}}"#);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = Command::new("grpcurl")
            .args([
                "-plaintext",
                "-d",
                &req,
                &grpc_addr,
                "externalscaler.ExternalScaler/GetMetrics",
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        if out.status.success() && text.contains("\"metricValueFloat\": 2") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "grpcurl GetMetrics never returned 2: {text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let health = grpcurl(&["-plaintext", &grpc_addr, "grpc.health.v1.Health/Check"]);
    assert!(health.contains("SERVING"), "{health}");

    // A KEDA-like external-push subscription stays open until the server stops.
    let mut client = keda_gpu_scaler::proto::external_scaler_client::ExternalScalerClient::new(
        channel(grpc_addr.parse().unwrap()).await,
    );
    let mut stream = client
        .stream_is_active(object(
            "g",
            &[("endpoints", &endpoint.url), ("queueTarget", "10")],
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(stream.next().await.unwrap().unwrap().result);

    let killed = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let stopped = Instant::now();
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(10),
            "server did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "graceful exit, got {status}");
    let end = tokio::time::timeout(Duration::from_secs(2), stream.next())
        .await
        .expect("stream ended");
    assert!(end.is_none() || end.unwrap().is_err());
}

#[test]
fn check_passes_the_shipped_examples_and_fails_a_typo_naming_the_key() {
    let keda = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("keda");
    let mut files: Vec<String> = std::fs::read_dir(&keda)
        .unwrap()
        .map(|e| e.unwrap().path().display().to_string())
        .filter(|p| p.ends_with(".yaml"))
        .collect();
    files.sort();
    let mut args = vec!["check"];
    args.extend(files.iter().map(String::as_str));
    let (ok, out, err) = run(&args, &[]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("0 problems"), "{out}");
    let checked: usize = out
        .split("checked ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(checked >= 7, "every example trigger is checked: {out}");

    // The README's headline ScaledObject passes the same check.
    let readme =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
            .unwrap();
    let headline = readme
        .split("```yaml\n")
        .skip(1)
        .filter_map(|b| b.split("```").next())
        .find(|b| b.contains("kind: ScaledObject"))
        .expect("README has a ScaledObject example");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("readme.yaml");
    std::fs::write(&path, headline).unwrap();
    let (ok, out, err) = run(&["check", &path.display().to_string()], &[]);
    assert!(
        ok && out.contains("checked 1 keda-gpu-scaler triggers"),
        "{out}{err}"
    );

    let bad = dir.path().join("bad.yaml");
    let vllm = std::fs::read_to_string(keda.join("scaledobject-vllm.yaml")).unwrap();
    std::fs::write(
        &bad,
        vllm.replace("attainment:", "attainmnet:")
            .replace("minReplicaCount: 1", "minReplicaCount: 0"),
    )
    .unwrap();
    let (ok, out, _) = run(&["check", &bad.display().to_string()], &[]);
    assert!(!ok, "a typo must fail: {out}");
    assert!(
        out.contains("ScaledObject inference/llm, trigger 0 (vllm): attainmnet: unknown key; did you mean 'attainment'?"),
        "{out}"
    );
    assert!(
        out.contains("1 problems"),
        "one problem (the spec did not parse, so replicas are not judged): {out}"
    );
}
