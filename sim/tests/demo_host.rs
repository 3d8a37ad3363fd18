//! The two things of the live demo's host the simulator models on request (the demo's fidelity
//! replay turns them on; every other run leaves them off): a queue capacity per replica beyond
//! which arrivals are refused, and CPU cores the replicas share.

use keda_gpu_sim::cluster::{Cluster, ClusterConfig};
use keda_gpu_sim::cost::CostModel;
use keda_gpu_sim::metrics::Metrics;
use keda_gpu_sim::trace::Request;

fn config(cost: CostModel) -> ClusterConfig {
    ClusterConfig {
        cost: CostModel {
            overhead_s: 1.0,
            prefill_s_per_token: 0.0,
            decode_s_per_token: 0.0,
            batch: 1,
            full_batch_slowdown: 1.0,
            cpu_idle_pct: 0.0,
            cpu_full_batch_pct: 100.0,
            ..cost
        },
        cold_start_s: 0.0,
        timeout_s: 100.0,
        slo_s: 10.0,
        ttft_slo_s: 10.0,
        tpot_slo_s: 1.0,
        grace_s: 30.0,
        remove_by_remaining_work: false,
    }
}

fn at(t: f64) -> Request {
    Request {
        at: t,
        work_s: 1.0,
        kv_tokens: 0.0,
        prefill_s: 0.0,
        generated_tokens: 0.0,
    }
}

#[test]
fn a_full_queue_refuses_arrivals_at_once_and_they_are_misses() {
    let requests: Vec<Request> = (0..5).map(|_| at(0.5)).collect();
    let run = |queue_capacity| {
        let mut c = Cluster::new(config(CostModel {
            queue_capacity,
            ..CostModel::default()
        }));
        c.set_replicas(1);
        let mut next = 0;
        c.advance(20.0, &requests, &mut next);
        c.outcomes
    };
    // One in service, two queued, two refused.
    let o = run(Some(2));
    assert_eq!((o.arrived, o.completed, o.refused), (5, 3, 2));
    assert_eq!(o.within_slo, 3);
    // Unbounded (the default): all five wait their turn.
    let o = run(None);
    assert_eq!((o.completed, o.refused), (5, 0));
}

#[test]
fn with_no_replica_ready_nothing_can_queue() {
    let mut cfg = config(CostModel {
        queue_capacity: Some(16),
        ..CostModel::default()
    });
    cfg.cold_start_s = 5.0;
    let mut c = Cluster::new(cfg);
    c.set_replicas(1);
    let requests = [at(1.0), at(6.0)];
    let mut next = 0;
    // Readiness is checked at each step, once a simulated second as the replay steps.
    for t in 1..=20 {
        c.advance(t as f64, &requests, &mut next);
    }
    assert_eq!((c.outcomes.refused, c.outcomes.completed), (1, 1));
}

#[test]
fn replicas_short_of_cores_each_read_their_share() {
    // Four requests busy for the whole scrape period, one per replica.
    let requests: Vec<Request> = (0..4)
        .map(|_| Request {
            work_s: 100.0,
            ..at(0.0)
        })
        .collect();
    let scrape = |node_cpu_cores| {
        let mut c = Cluster::new(config(CostModel {
            node_cpu_cores,
            ..CostModel::default()
        }));
        c.set_replicas(4);
        let mut m = Metrics::new(10.0, 60.0);
        m.scrape(&c);
        let mut next = 0;
        c.advance(10.0, &requests, &mut next);
        m.scrape(&c);
        let s = m.latest().unwrap();
        s.pods.iter().map(|p| p.cpu_pct).collect::<Vec<f64>>()
    };
    // Four busy replicas want four cores; two are there.
    assert_eq!(scrape(Some(2.0)), vec![50.0; 4]);
    assert_eq!(scrape(Some(8.0)), vec![100.0; 4]);
    assert_eq!(scrape(None), vec![100.0; 4]);
}

#[test]
fn the_default_cost_model_writes_neither_option_and_bad_values_are_named() {
    // Committed reports and profiles stay byte for byte what they were.
    let json = serde_json::to_string(&CostModel::default()).unwrap();
    assert!(
        !json.contains("queue_capacity") && !json.contains("node_cpu_cores"),
        "{json}"
    );
    let read: CostModel =
        serde_json::from_str(r#"{"queue_capacity": 16, "node_cpu_cores": 1.9}"#).unwrap();
    assert_eq!(
        (read.queue_capacity, read.node_cpu_cores),
        (Some(16), Some(1.9))
    );
    let bad = CostModel {
        node_cpu_cores: Some(0.0),
        ..CostModel::default()
    };
    assert!(bad.validate().unwrap_err().contains("node_cpu_cores"));
}
