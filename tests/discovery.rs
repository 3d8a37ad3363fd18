//! `source=scrape` with `service`: pods discovered from EndpointSlices served by an in-process
//! Kubernetes API double (tests/support/kube.rs; no API server can run here), scraped over
//! loopback as real vLLM-shaped `/metrics` endpoints on 127.0.0.x.

mod support;

use std::time::{Duration, Instant};

use keda_gpu_scaler::proto::ScaledObjectRef;
use keda_gpu_scaler::server::Running;
use support::engines::{self, VLLM};
use support::kube::{slice, Ep, KubeApi};
use support::*;
use tonic::Code;

const NS: &str = "inference";

/// Pods of one Service: one port, one address each on 127.0.0.2, .3, ...
async fn pods(n: usize, body: &str) -> (u16, Vec<MetricsEndpoint>) {
    for _ in 0..20 {
        let first = MetricsEndpoint::start_at("127.0.0.2:0", body)
            .await
            .unwrap();
        let port: u16 = first
            .url
            .split(':')
            .nth(2)
            .unwrap()
            .split('/')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let mut all = vec![first];
        for i in 1..n {
            match MetricsEndpoint::start_at(&format!("127.0.0.{}:{port}", i + 2), body).await {
                Ok(ep) => all.push(ep),
                Err(_) => break,
            }
        }
        if all.len() == n {
            return (port, all);
        }
    }
    panic!("no port free on 127.0.0.2-{}", n + 1);
}

fn vllm(waiting: f64, kv: f64) -> String {
    let text = engines::set(VLLM, "vllm:num_requests_waiting", waiting);
    let text = engines::set(&text, "vllm:kv_cache_usage_perc", kv);
    engines::set(&text, "vllm:gpu_cache_usage_perc", kv)
}

async fn scaler(api: &KubeApi, namespaces: &[&str]) -> Running {
    let mut s = quick_settings();
    s.sources.kubernetes.kubeconfig = Some(api.kubeconfig.clone());
    // None: any namespace.
    s.sources.kubernetes.namespaces =
        (!namespaces.is_empty()).then(|| namespaces.iter().map(|n| n.to_string()).collect());
    start_scaler(&s).await
}

const VLLM_SO: &[(&str, &str)] = &[
    ("service", "llm"),
    ("preset", "vllm"),
    ("queueTarget", "4"),
    ("kvCacheTarget", "80"),
    ("upHalfLifeSeconds", "0"),
    ("downHalfLifeSeconds", "0"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vllm_preset_follows_pods_as_they_appear_become_ready_and_terminate() {
    let api = KubeApi::start().await;
    let (port, eps) = pods(3, &vllm(8.0, 0.5)).await;
    // Pod a serves; b and c are starting (their /metrics answer, but they are not ready).
    api.apply(
        NS,
        slice(
            "llm-x7k2p",
            "llm",
            &[("http", port)],
            &[
                Ep::ready("127.0.0.2", "llm-a"),
                Ep::starting("127.0.0.3", "llm-b"),
                Ep::starting("127.0.0.4", "llm-c"),
            ],
        ),
    );
    // Another Service in the namespace: not ours.
    api.apply(
        NS,
        slice(
            "embed-q8w2z",
            "embed",
            &[("http", port)],
            &[Ep::ready("127.0.0.4", "embed-a")],
        ),
    );
    let running = scaler(&api, &[]).await;
    let mut c = client(&running).await;
    let llm = object_in(NS, "llm", VLLM_SO);

    // Only the ready pod is scraped: 8 waiting / 4 per replica = 2 (kv 50 % / 80 % = 0.625).
    let v = wait_for_value(&mut c, &llm, Duration::from_secs(10), |v| v > 0.0).await;
    assert!((v - 2.0).abs() < 1e-9, "one ready pod with 8 waiting: {v}");
    let e = wait_debug(&running, "llm", |e| e["starting"] == 2).await;
    assert_eq!(e["terminating"], 0, "{e:#}");
    // The counts reach the scorer with the sample (its capacity model credits them).
    assert_eq!(e["decision"]["capacity"]["fleet"]["starting"], 2, "{e:#}");
    let metrics = http_text(&format!("http://{}/metrics", running.http_addr)).await;
    assert!(
        metrics.contains("keda_gpu_scaler_discovered_replicas{namespace=\"inference\",scaledobject=\"llm\",metric=\"gpu-composite\",state=\"starting\"} 2.0\n"),
        "{metrics}"
    );
    assert_eq!(e["status"], "ok");
    let signals = &e["decision"]["signals"];
    assert_eq!(signals[0]["name"], "queue");
    assert_eq!(signals[0]["reporting"], 1, "one pod scraped: {e:#}");
    assert_eq!(signals[1]["name"], "kv_cache");
    assert!(
        (signals[1]["value"].as_f64().unwrap() - 50.0).abs() < 1e-9,
        "{e:#}"
    );
    assert!(
        e["pods"]
            .as_str()
            .unwrap()
            .contains("Service inference/llm"),
        "{e:#}"
    );

    // One watcher for the namespace: one list, one watch so far.
    assert_eq!(
        api.requests("list inference").len(),
        1,
        "{:?}",
        api.requests("")
    );
    assert_eq!(
        api.requests("watch inference").len(),
        1,
        "{:?}",
        api.requests("")
    );

    // explain, as an operator runs it, reads the same Service through the same API (its own
    // process: its own list and watch).
    let kubeconfig = api.kubeconfig.display().to_string();
    let (ok, out, err) = tokio::task::spawn_blocking(move || {
        run(
            &[
                "explain",
                "--namespace",
                NS,
                "service=llm",
                "preset=vllm",
                "queueTarget=4",
            ],
            &[
                ("KEDA_GPU_SCALER_KUBERNETES__KUBECONFIG", &kubeconfig),
                // The pods of this test listen on loopback, which the default policy refuses.
                ("KEDA_GPU_SCALER_EGRESS__ALLOW_LOOPBACK", "true"),
            ],
        )
    })
    .await
    .unwrap();
    assert!(ok, "{err}");
    assert!(
        out.contains("2 starting (not ready yet), 0 terminating"),
        "{out}"
    );
    assert!(out.contains("queue") && out.contains("2.000"), "{out}");

    // b becomes ready with 4 waiting: (8 + 4) / 4 = 3, one still starting.
    eps[1].set(&vllm(4.0, 0.5));
    api.apply(
        NS,
        slice(
            "llm-x7k2p",
            "llm",
            &[("http", port)],
            &[
                Ep::ready("127.0.0.2", "llm-a"),
                Ep::ready("127.0.0.3", "llm-b"),
                Ep::starting("127.0.0.4", "llm-c"),
            ],
        ),
    );
    let v = wait_for_value(&mut c, &llm, Duration::from_secs(10), |v| {
        (v - 3.0).abs() < 1e-9
    })
    .await;
    assert_eq!(v, 3.0);
    let e = wait_debug(&running, "llm", |e| e["starting"] == 1).await;
    assert_eq!(e["decision"]["signals"][0]["reporting"], 2, "{e:#}");

    // a terminates (draining, not scraped), c becomes ready with 0 waiting: (4 + 0) / 4 = 1.
    eps[2].set(&vllm(0.0, 0.1));
    api.apply(
        NS,
        slice(
            "llm-x7k2p",
            "llm",
            &[("http", port)],
            &[
                Ep::terminating("127.0.0.2", "llm-a"),
                Ep::ready("127.0.0.3", "llm-b"),
                Ep::ready("127.0.0.4", "llm-c"),
            ],
        ),
    );
    wait_for_value(&mut c, &llm, Duration::from_secs(10), |v| {
        (v - 1.0).abs() < 1e-9
    })
    .await;
    let e = wait_debug(&running, "llm", |e| e["terminating"] == 1).await;
    assert_eq!(e["starting"], 0, "{e:#}");

    // a is gone from the slice: nothing terminating any more, two pods scraped.
    api.apply(
        NS,
        slice(
            "llm-x7k2p",
            "llm",
            &[("http", port)],
            &[
                Ep::ready("127.0.0.3", "llm-b"),
                Ep::ready("127.0.0.4", "llm-c"),
            ],
        ),
    );
    let e = wait_debug(&running, "llm", |e| e["terminating"] == 0).await;
    assert_eq!(e["decision"]["signals"][0]["reporting"], 2, "{e:#}");

    // A second ScaledObject in the namespace shares the scaler's watcher: no new list or watch.
    let (lists, watches) = (
        api.requests("list inference").len(),
        api.requests("watch inference").len(),
    );
    let other = object_in(
        NS,
        "llm-kv",
        &[
            ("service", "llm"),
            ("preset", "vllm"),
            ("kvCacheTarget", "50"),
        ],
    );
    wait_for_value(&mut c, &other, Duration::from_secs(10), |v| v > 0.0).await;
    assert_eq!(
        api.requests("list inference").len(),
        lists,
        "{:?}",
        api.requests("")
    );
    assert_eq!(
        api.requests("watch inference").len(),
        watches,
        "{:?}",
        api.requests("")
    );

    // The Service goes away: its slices are deleted and the debug page says why data stopped.
    api.delete(NS, "llm-x7k2p");
    let e = wait_debug(&running, "llm", |e| {
        e["notes"].to_string().contains("has no EndpointSlices")
    })
    .await;
    assert!(e["notes"].to_string().contains("inference/llm"), "{e:#}");
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compacted_watch_is_answered_with_a_new_list_that_sees_what_changed_meanwhile() {
    let api = KubeApi::start().await;
    let (port, eps) = pods(2, &vllm(4.0, 0.2)).await;
    api.apply(
        NS,
        slice(
            "llm-1",
            "llm",
            &[("", port)],
            &[Ep::ready("127.0.0.2", "llm-a")],
        ),
    );
    let running = scaler(&api, &[NS]).await;
    let mut c = client(&running).await;
    let llm = object_in(NS, "llm", VLLM_SO);
    wait_for_value(&mut c, &llm, Duration::from_secs(10), |v| {
        (v - 1.0).abs() < 1e-9
    })
    .await;
    assert_eq!(api.requests("list inference").len(), 1);

    // History is compacted and the watch dropped; meanwhile a second pod became ready. The
    // scaler's re-watch gets 410 Gone, lists again, and scrapes both pods.
    api.compact_and_drop_watches();
    eps[1].set(&vllm(8.0, 0.2));
    api.apply(
        NS,
        slice(
            "llm-1",
            "llm",
            &[("", port)],
            &[
                Ep::ready("127.0.0.2", "llm-a"),
                Ep::ready("127.0.0.3", "llm-b"),
            ],
        ),
    );
    wait_for_value(&mut c, &llm, Duration::from_secs(15), |v| {
        (v - 3.0).abs() < 1e-9
    })
    .await;
    assert!(
        api.requests("list inference").len() >= 2,
        "a second list after 410: {:?}",
        api.requests("")
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rbac_denial_and_unwatched_namespaces_are_clear_errors() {
    let api = KubeApi::start().await;
    api.forbid("locked");
    let running = scaler(&api, &["locked", NS]).await;
    let mut c = client(&running).await;

    let locked = object_in("locked", "llm", VLLM_SO);
    let message = wait_error(&mut c, &locked, "403").await;
    assert!(
        message.contains("not allowed to list EndpointSlices in namespace locked")
            && message.contains("cannot list resource \"endpointslices\"")
            && message.contains("grant list and watch"),
        "{message}"
    );

    // A namespace outside kubernetes.namespaces is refused without asking the API.
    let elsewhere = object_in("team-b", "llm", VLLM_SO);
    let message = wait_error(&mut c, &elsewhere, "team-b is not among").await;
    assert!(
        message
            .contains("team-b is not among the namespaces this scaler watches (inference, locked"),
        "{message}"
    );
    assert!(api.requests("list team-b").is_empty());
    running.stop().await;
}

/// Polls GetMetrics until it fails with a message containing `needle`; returns the message.
async fn wait_error(c: &mut Client, o: &ScaledObjectRef, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = c.get_metrics(metrics_request(o)).await.unwrap_err();
        assert_eq!(status.code(), Code::Unavailable);
        if status.message().contains(needle) {
            return status.message().to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in: {}",
            status.message()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

type Client =
    keda_gpu_scaler::proto::external_scaler_client::ExternalScalerClient<tonic::transport::Channel>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_nobody_reads_any_more_is_no_longer_watched() {
    let api = KubeApi::start().await;
    let (port, _eps) = pods(1, &vllm(4.0, 0.2)).await;
    api.apply(
        NS,
        slice(
            "llm-1",
            "llm",
            &[("", port)],
            &[Ep::ready("127.0.0.2", "llm-a")],
        ),
    );
    let mut s = quick_settings();
    s.sources.kubernetes.kubeconfig = Some(api.kubeconfig.clone());
    s.engine.entry_ttl = Duration::from_secs(1);
    let running = start_scaler(&s).await;
    let mut c = client(&running).await;
    wait_for_value(
        &mut c,
        &object_in(NS, "llm", VLLM_SO),
        Duration::from_secs(10),
        |v| v > 0.0,
    )
    .await;
    // The watch opens right after the first list completes.
    let deadline = Instant::now() + Duration::from_secs(10);
    while api.open_watches() != 1 {
        assert!(Instant::now() < deadline, "no watch opened");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // KEDA stops asking (the ScaledObject was deleted): the entry expires after entry_ttl and
    // the namespace's watch is closed with it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while api.open_watches() > 0 {
        assert!(Instant::now() < deadline, "the watch stayed open");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(running.engine.len(), 0);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovered_addresses_the_egress_policy_refuses_are_not_scraped() {
    // Anyone who may write EndpointSlices in a namespace can list any address: a hand-written
    // slice naming the cloud metadata service must not make the scaler fetch it.
    let api = KubeApi::start().await;
    let (port, _eps) = pods(1, &vllm(8.0, 0.2)).await;
    api.apply(
        NS,
        slice(
            "llm-1",
            "llm",
            &[("http", port)],
            &[
                Ep::ready("127.0.0.2", "llm-a"),
                Ep::ready("169.254.169.254", "not-a-pod"),
            ],
        ),
    );
    let running = scaler(&api, &[]).await;
    let mut c = client(&running).await;
    let v = wait_for_value(
        &mut c,
        &object_in(NS, "llm", VLLM_SO),
        Duration::from_secs(10),
        |v| v > 0.0,
    )
    .await;
    assert_eq!(
        v, 2.0,
        "only the pod on loopback (allowed in tests) is read"
    );
    let e = wait_debug(&running, "llm", |e| {
        e["notes"].to_string().contains("169.254.169.254")
    })
    .await;
    let notes = e["notes"].to_string();
    assert!(
        notes.contains("link-local (cloud metadata)") && notes.contains("not scraped"),
        "{e:#}"
    );
    assert_eq!(e["decision"]["signals"][0]["reporting"], 1, "{e:#}");
    assert_eq!(
        e["decision"]["signals"][0]["missing"], 0,
        "a refused address is no replica: {e:#}"
    );
    running.stop().await;
}

/// A vLLM pod with `running` requests in service, `waiting` queued and `kv` of its KV cache used.
fn vllm_load(running: f64, waiting: f64, kv: f64) -> String {
    engines::set(&vllm(waiting, kv), "vllm:num_requests_running", running)
}

const COST_SO: &[(&str, &str)] = &[
    ("service", "llm"),
    ("preset", "vllm"),
    ("inflightTarget", "10"),
    ("queueTarget", "4"),
    ("kvCacheTarget", "80"),
    ("podDeletionCost", "true"),
    ("upHalfLifeSeconds", "0"),
    ("downHalfLifeSeconds", "0"),
];

const ANNOTATION: &str = "controller.kubernetes.io/pod-deletion-cost";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coming_scale_down_ranks_the_services_pods_by_load_and_touches_nothing_else() {
    let api = KubeApi::start().await;
    // Four pods of llm, all busy: 4 x 30 in service / 10 per replica asks for 12 >= 4 ready.
    let (port, eps) = pods(5, &vllm_load(30.0, 0.0, 0.5)).await;
    let mut endpoints = vec![
        Ep::ready("127.0.0.2", "llm-a"),
        Ep::ready("127.0.0.3", "llm-b"),
        Ep::ready("127.0.0.4", "llm-c"),
        Ep::ready("127.0.0.5", "llm-d"),
    ];
    // A fifth endpoint whose reference points into another namespace: scraped, never patched.
    endpoints.push(Ep::ready("127.0.0.6", "llm-elsewhere"));
    let mut llm_slice = slice("llm-x7k2p", "llm", &[("http", port)], &endpoints);
    llm_slice["endpoints"][4]["targetRef"]["namespace"] = "team-b".into();
    api.apply(NS, llm_slice);
    // Another Service's pod in the same namespace.
    api.apply(
        NS,
        slice(
            "embed-q8w2z",
            "embed",
            &[("http", port)],
            &[Ep::ready("127.0.0.6", "embed-a")],
        ),
    );
    let running = scaler(&api, &[]).await;
    let mut c = client(&running).await;
    let llm = object_in(NS, "llm", COST_SO);
    wait_for_value(&mut c, &llm, Duration::from_secs(10), |v| v >= 5.0).await;
    // Several rounds at or above the ready pods: nothing written.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(api.patches().is_empty(), "{:?}", api.patches());

    // Load falls: 21 in service over 10 per replica ask for 3 of the 5 ready, so two go: the
    // two least busy named pods are marked, b (idle, least KV cache) lowest.
    eps[0].set(&vllm_load(8.0, 0.0, 0.2));
    eps[1].set(&vllm_load(0.0, 0.0, 0.1));
    eps[2].set(&vllm_load(12.0, 0.0, 0.3));
    eps[3].set(&vllm_load(1.0, 0.0, 0.3));
    eps[4].set(&vllm_load(0.0, 0.0, 0.0));
    let e = wait_debug(&running, "llm", |e| {
        e["deletion_costs"]
            .as_object()
            .is_some_and(|m| m.len() == 2)
    })
    .await;
    let desired = e["decision"]["desired"].as_f64().unwrap();
    assert!(desired > 2.0 && desired <= 3.0, "{e:#}");
    let costs = &e["deletion_costs"];
    assert_eq!(costs["llm-b"], -2, "idle, least KV cache: {e:#}");
    assert_eq!(costs["llm-d"], -1, "one request: {e:#}");
    let patches = api.patches();
    assert_eq!(patches.len(), 2, "{patches:?}");
    for (ns, pod, content_type, body) in &patches {
        assert_eq!(ns, NS);
        assert!(pod == "llm-b" || pod == "llm-d", "{pod}");
        assert_eq!(content_type, "application/merge-patch+json");
        // Only that annotation: no labels, no spec, no other annotation.
        assert_eq!(
            body,
            &serde_json::json!({"metadata": {"annotations": {ANNOTATION: costs[pod].to_string()}}}),
        );
    }
    assert_eq!(api.annotations(NS, "llm-b")[ANNOTATION], "-2");
    for untouched in ["llm-a", "llm-c", "llm-elsewhere", "embed-a"] {
        assert_eq!(api.annotations(NS, untouched), serde_json::Value::Null);
    }

    // b becomes the busiest: not re-ranked before the pacing interval (15 s) has passed.
    eps[1].set(&vllm_load(9.0, 3.0, 0.9));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(api.patches().len(), 2, "{:?}", api.patches());
    let metrics = http_text(&format!("http://{}/metrics", running.http_addr)).await;
    assert!(
        metrics.contains(&format!(
            "{} 2\n",
            write_series("pod_deletion_cost_patches", "ok")
        )),
        "{metrics}"
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_patch_says_which_rbac_to_grant() {
    let api = KubeApi::start().await;
    api.forbid_patch(NS);
    let (port, _eps) = pods(2, &vllm_load(1.0, 0.0, 0.1)).await;
    api.apply(
        NS,
        slice(
            "llm-1",
            "llm",
            &[("http", port)],
            &[
                Ep::ready("127.0.0.2", "llm-a"),
                Ep::ready("127.0.0.3", "llm-b"),
            ],
        ),
    );
    let running = scaler(&api, &[]).await;
    let mut c = client(&running).await;
    let llm = object_in(NS, "llm", COST_SO);
    wait_for_value(&mut c, &llm, Duration::from_secs(10), |v| v > 0.0).await;
    let e = wait_debug(&running, "llm", |e| {
        e["notes"].to_string().contains("podDeletionCost")
    })
    .await;
    let notes = e["notes"].to_string();
    assert!(
        notes.contains("not allowed to patch pods in namespace inference")
            && notes.contains("grant patch on pods"),
        "{e:#}"
    );
    // The decision is served all the same.
    assert_eq!(e["status"], "ok", "{e:#}");
    let metrics = http_text(&format!("http://{}/metrics", running.http_addr)).await;
    assert!(metrics.contains("result=\"refused\"} 1\n"), "{metrics}");
    running.stop().await;
}

const DRAIN_SO: &[(&str, &str)] = &[
    ("service", "llm"),
    ("preset", "vllm"),
    ("inflightTarget", "10"),
    ("queueTarget", "4"),
    ("kvCacheTarget", "80"),
    ("podReadinessGate", "true"),
    ("upHalfLifeSeconds", "0"),
    ("downHalfLifeSeconds", "0"),
];

const GATE: &str = "keda-gpu-scaler/serving";

/// The Service's slice with pods a-d on 127.0.0.2-5; `out` are not ready (taken out of service,
/// as the EndpointSlice controller lists a pod whose readiness gate is False).
/// The series of the scaler's pod-write counter `name` for the `llm` trigger with `result`.
fn write_series(name: &str, result: &str) -> String {
    format!("keda_gpu_scaler_{name}_total{{namespace=\"inference\",scaledobject=\"llm\",metric=\"gpu-composite\",result=\"{result}\"}}")
}

fn four_pods(port: u16, out: &[&str]) -> serde_json::Value {
    let names = ["llm-a", "llm-b", "llm-c", "llm-d"];
    let addresses = ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"];
    let eps: Vec<Ep> = names
        .iter()
        .zip(addresses)
        .map(|(pod, address)| Ep {
            address,
            pod,
            ready: !out.contains(pod),
            terminating: false,
        })
        .collect();
    slice("llm-x7k2p", "llm", &[("http", port)], &eps)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coming_scale_down_drains_the_least_busy_through_their_readiness_gate() {
    let api = KubeApi::start().await;
    let (port, eps) = pods(4, &vllm_load(30.0, 0.0, 0.1)).await;
    for pod in ["llm-a", "llm-b", "llm-c", "llm-d"] {
        api.pod(NS, pod, true);
    }
    api.apply(NS, four_pods(port, &[]));
    let running = scaler(&api, &[]).await;
    let mut c = client(&running).await;
    let llm = object_in(NS, "llm", DRAIN_SO);
    wait_for_value(&mut c, &llm, Duration::from_secs(10), |v| v >= 4.0).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(
        api.status_patches().is_empty(),
        "{:?}",
        api.status_patches()
    );

    // Load falls to 15 requests over 10 per replica: 2 of the 4 go. b (idle) and d (one
    // request) are taken out; b is done at once, d still works, so 3 are reported.
    eps[0].set(&vllm_load(5.0, 0.0, 0.1));
    eps[1].set(&vllm_load(0.0, 0.0, 0.1));
    eps[2].set(&vllm_load(9.0, 0.0, 0.1));
    eps[3].set(&vllm_load(1.0, 0.0, 0.1));
    let e = wait_debug(&running, "llm", |e| {
        e["draining"].as_object().is_some_and(|m| m.len() == 2)
    })
    .await;
    assert_eq!(e["decision"]["desired"], 3.0, "{e:#}");
    assert!(
        e["decision"]["clamped"]
            .to_string()
            .contains("podReadinessGate"),
        "{e:#}"
    );
    for pod in ["llm-b", "llm-d"] {
        assert_eq!(
            api.condition(NS, pod, GATE).as_deref(),
            Some("False"),
            "{pod}"
        );
    }
    for (ns, pod, content_type, body) in api.status_patches() {
        assert_eq!(ns, NS);
        assert!(pod == "llm-b" || pod == "llm-d", "{pod}");
        assert_eq!(content_type, "application/strategic-merge-patch+json");
        // That one condition and nothing else.
        let conditions = body["status"]["conditions"].as_array().unwrap();
        assert_eq!(conditions.len(), 1, "{body}");
        assert_eq!(conditions[0]["type"], GATE);
        assert_eq!(body.as_object().unwrap().len(), 1, "{body}");
    }
    // b, drained, carries the mark that has the ReplicaSet remove it first.
    let e = wait_debug(&running, "llm", |e| e["deletion_costs"]["llm-b"] == -1).await;
    assert!(e["deletion_costs"].get("llm-d").is_none(), "{e:#}");

    // The EndpointSlice controller lists them not ready: still read, never scraped as signals.
    api.apply(NS, four_pods(port, &["llm-b", "llm-d"]));
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        metric_value(&mut c, &llm).await,
        3.0,
        "d still finishes its request"
    );
    // d finishes: both are done, the decision itself is reported, and d is marked too.
    eps[3].set(&vllm_load(0.0, 0.0, 0.1));
    wait_for_value(&mut c, &llm, Duration::from_secs(10), |v| v < 2.0).await;
    wait_debug(&running, "llm", |e| e["deletion_costs"]["llm-d"] == -1).await;
    assert_eq!(
        api.condition(NS, "llm-a", GATE),
        None,
        "a busy pod is never touched"
    );

    // Load rises again: the pods out of service are put back at once.
    eps[0].set(&vllm_load(30.0, 0.0, 0.1));
    eps[2].set(&vllm_load(30.0, 0.0, 0.1));
    wait_debug(&running, "llm", |e| {
        e["draining"].as_object().is_some_and(|m| m.is_empty())
    })
    .await;
    for pod in ["llm-b", "llm-d"] {
        assert_eq!(
            api.condition(NS, pod, GATE).as_deref(),
            Some("True"),
            "{pod}"
        );
    }
    let metrics = http_text(&format!("http://{}/metrics", running.http_addr)).await;
    assert!(
        metrics.contains(&format!(
            "{} 4\n",
            write_series("pod_readiness_gate_patches", "ok")
        )),
        "{metrics}"
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_pods_are_let_in_and_a_pod_without_the_gate_or_a_403_is_named() {
    let api = KubeApi::start().await;
    api.pod(NS, "llm-a", true);
    api.pod(NS, "llm-b", false);
    api.pod(NS, "llm-c", true);
    let (port, _eps) = pods(3, &vllm_load(0.0, 0.0, 0.1)).await;
    // a busy, b idle, c starting.
    let a =
        MetricsEndpoint::start_at(&format!("127.0.0.9:{port}"), &vllm_load(5.0, 0.0, 0.1)).await;
    let _a = a.unwrap();
    api.apply(
        NS,
        slice(
            "llm-1",
            "llm",
            &[("http", port)],
            &[
                Ep::ready("127.0.0.9", "llm-a"),
                Ep::ready("127.0.0.3", "llm-b"),
                Ep::starting("127.0.0.4", "llm-c"),
            ],
        ),
    );
    let running = scaler(&api, &[]).await;
    let mut c = client(&running).await;
    let llm = object_in(NS, "llm", DRAIN_SO);
    wait_for_value(&mut c, &llm, Duration::from_secs(10), |v| v > 0.0).await;
    // The starting pod is let in at first sight, once.
    let e = wait_debug(&running, "llm", |e| {
        e["notes"]
            .to_string()
            .contains("does not list readinessGates")
    })
    .await;
    assert_eq!(api.condition(NS, "llm-c", GATE).as_deref(), Some("True"));
    let notes = e["notes"].to_string();
    assert!(
        notes.contains("pod inference/llm-b does not list readinessGates conditionType keda-gpu-scaler/serving"),
        "{e:#}"
    );
    // Put back as it was, and not asked again while paused.
    assert_eq!(api.condition(NS, "llm-b", GATE).as_deref(), Some("True"));
    let n = api.status_patches().len();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(api.status_patches().len(), n, "{:?}", api.status_patches());
    assert_eq!(
        api.status_patches()
            .iter()
            .filter(|p| p.1 == "llm-c")
            .count(),
        1
    );
    assert_eq!(e["status"], "ok", "{e:#}");
    running.stop().await;

    // Without RBAC for pods/status: the note says what to grant.
    let api = KubeApi::start().await;
    api.pod(NS, "llm-a", true);
    api.pod(NS, "llm-c", true);
    api.forbid_status_patch(NS);
    let (running, e) = noted(&api, port, "grant patch on pods/status").await;
    let metrics = http_text(&format!("http://{}/metrics", running.http_addr)).await;
    assert!(
        metrics.contains(&write_series("pod_readiness_gate_patches", "refused")),
        "{metrics}"
    );
    assert_eq!(e["status"], "ok", "{e:#}");
    running.stop().await;

    // Without the grant to read pods: nothing is drained or let in, and the note says why.
    let api = KubeApi::start().await;
    api.forbid_pods(NS);
    let (running, _) = noted(&api, port, "grant list and watch on pods").await;
    assert!(api.status_patches().is_empty());
    running.stop().await;
}

/// Pods a (ready, on 127.0.0.9) and c (starting) behind `llm`, a scaler on `api` serving the
/// drain trigger, and its debug entry once the notes say `note`.
async fn noted(api: &KubeApi, port: u16, note: &str) -> (Running, serde_json::Value) {
    api.apply(
        NS,
        slice(
            "llm-1",
            "llm",
            &[("http", port)],
            &[
                Ep::ready("127.0.0.9", "llm-a"),
                Ep::starting("127.0.0.4", "llm-c"),
            ],
        ),
    );
    let running = scaler(api, &[]).await;
    let mut c = client(&running).await;
    let llm = object_in(NS, "llm", DRAIN_SO);
    wait_for_value(&mut c, &llm, Duration::from_secs(10), |v| v > 0.0).await;
    let e = wait_debug(&running, "llm", |e| e["notes"].to_string().contains(note)).await;
    (running, e)
}
