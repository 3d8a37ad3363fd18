//! The load generator against the real server, and the trace reader on the shipped trace.

use std::sync::Arc;
use std::time::Duration;

use gpu_workload::load::{self, LiveStats, LoadPlan, Mode, Pattern, RequestKind, Scenario};

mod support;
use support::{sample, TestServer};

fn plan(
    targets: Vec<String>,
    request: RequestKind,
    pattern: Pattern,
    mode: Mode,
    secs: f64,
) -> LoadPlan {
    LoadPlan {
        scenario: Scenario::Gpu,
        targets,
        request,
        pattern,
        mode,
        duration: Duration::from_secs_f64(secs),
        timeout: Duration::from_secs(10),
    }
}

#[tokio::test]
async fn closed_loop_counts_match_the_servers() {
    let a = TestServer::start(|c| c.max_concurrency = 2).await;
    let b = TestServer::start(|c| c.max_concurrency = 2).await;
    let p = plan(
        vec![a.url(""), b.url("")],
        RequestKind::Gpu { work_ms: 20 },
        Pattern::Steady,
        Mode::Closed { concurrency: 2 },
        1.0,
    );
    let s = load::run(p, Arc::new(LiveStats::default())).await.unwrap();
    assert!(s.ok >= 10, "{s:?}");
    assert_eq!(s.failed, 0);
    assert_eq!(s.success_rate, 1.0);
    let l = s.latency.clone().unwrap();
    assert!(
        l.p50_ms >= 20.0 && l.p50_ms <= l.p95_ms && l.p95_ms <= l.p99_ms && l.p99_ms <= l.max_ms,
        "{l:?}"
    );
    // Every request the generator counted reached one of the two servers, round-robin.
    let served: f64 = [&a, &b]
        .iter()
        .map(|srv| async move {
            sample(
                &srv.metrics().await,
                "workload_requests_total{endpoint=\"gpu_job\",status=\"200\"}",
            )
        })
        .collect::<futures_util::future::JoinAll<_>>()
        .await
        .into_iter()
        .sum();
    assert_eq!(served as u64, s.ok);
    assert!(s.render().contains("p99"));
}

#[tokio::test]
async fn open_loop_overload_shows_503s() {
    let s = TestServer::start(|c| {
        c.max_concurrency = 1;
        c.queue_capacity = 1;
    })
    .await;
    let p = plan(
        vec![s.url("")],
        RequestKind::Gpu { work_ms: 100 },
        Pattern::Steady,
        Mode::Open {
            rate: 50.0,
            max_outstanding: 4,
        },
        1.0,
    );
    let sum = load::run(p, Arc::new(LiveStats::default())).await.unwrap();
    assert!(sum.statuses.get("503").copied().unwrap_or(0) > 0, "{sum:?}");
    assert!(
        sum.ok >= 5 && sum.ok <= 15,
        "about 10 jobs of 100 ms fit in 1 s: {sum:?}"
    );
    assert!(sum.success_rate < 1.0);
}

#[tokio::test]
async fn trace_replay_sends_one_request_per_arrival() {
    let s = TestServer::start(|_| {}).await;
    let csv = "TIMESTAMP,ContextTokens,GeneratedTokens\n\
               2023-11-16 18:17:03.0,1,1\n2023-11-16 18:17:03.5,1,1\n\
               2023-11-16 18:17:04.0,1,1\n2023-11-16 18:17:09.0,1,1\n";
    // 4x speed-up: arrivals at 0, 125, 250 and 1500 ms; a 1 s run replays the first three.
    let arrivals = load::trace::arrivals(csv.as_bytes(), 4.0).unwrap();
    let p = plan(
        vec![s.url("")],
        RequestKind::Matrix {
            size: 16,
            iterations: 1,
        },
        Pattern::Trace { arrivals },
        Mode::Open {
            rate: 1.0,
            max_outstanding: 16,
        },
        1.0,
    );
    let sum = load::run(p, Arc::new(LiveStats::default())).await.unwrap();
    assert_eq!((sum.requests, sum.ok), (3, 3), "{sum:?}");
}

#[test]
fn shipped_trace_parses() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../traces/AzureLLMInferenceTrace_code.csv"
    );
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let arrivals = load::trace::arrivals(std::io::BufReader::new(file), 1.0).unwrap();
    assert_eq!(arrivals.len(), 8819, "the trace README says 8,819 requests");
    let span = arrivals.last().unwrap().as_secs_f64();
    assert!(
        (3000.0..=3700.0).contains(&span),
        "about one hour, got {span}"
    );
    assert!(arrivals.windows(2).all(|w| w[0] <= w[1]));
}

#[test]
fn invalid_plans_are_rejected() {
    let base = plan(
        vec![],
        RequestKind::Tryon,
        Pattern::Steady,
        Mode::Closed { concurrency: 1 },
        1.0,
    );
    assert!(base
        .validate()
        .unwrap_err()
        .to_string()
        .contains("--target"));
    let mut p = base.clone();
    p.targets = vec!["http://127.0.0.1:1".into()];
    p.mode = Mode::Open {
        rate: 0.0,
        max_outstanding: 1,
    };
    assert!(p.validate().unwrap_err().to_string().contains("--rate"));
    p.mode = Mode::Closed { concurrency: 1 };
    p.pattern = Pattern::Trace { arrivals: vec![] };
    assert!(p.validate().unwrap_err().to_string().contains("open loop"));
}
