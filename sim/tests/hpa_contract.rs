//! The scaler reports its desired capacity as an `AverageValue` external metric with target 1
//! (KEDA's default metricType). These tests feed the values the scaler's own `service` code
//! reports through the simulator's model of the HPA's replica calculator, so a change to either
//! side that breaks the contract fails here.

use keda_gpu_scaler::service::metric_value;
use keda_gpu_sim::hpa::{sync, Hpa, HpaState, Metric, Observed};

/// The proposal the HPA's replica calculator makes for one metric at `current` pods (before
/// stabilisation and rate limits, which are the behaviour policies' business).
fn proposal(metric: Metric, current: u32) -> u32 {
    let observed = Observed {
        current_replicas: current,
        ready_pods: current,
        metrics: vec![metric],
    };
    let outcome = sync(0.0, &Hpa::new(1, 1000), &mut HpaState::default(), &observed);
    outcome.proposals[0].expect("the metric has a value")
}

#[test]
fn average_value_with_target_one_gives_the_desired_count_at_any_pod_count() {
    for current in [1u32, 5, 50] {
        for desired in [0.4, 1.0, 2.3, 3.0, 7.5, 12.0, 42.2, 80.0] {
            let reported = metric_value("gpu-composite", desired);
            let want = desired.ceil() as u32;
            // Within the HPA's 10 % tolerance of the current count, it keeps the count.
            let in_tolerance = ((desired / current as f64) - 1.0).abs() <= 0.1;
            let expected = if in_tolerance { current } else { want };
            let float = Metric::AverageValue {
                value: Some(reported.metric_value_float),
                target: 1.0,
            };
            assert_eq!(
                proposal(float, current),
                expected,
                "current={current}, desired={desired}"
            );
            // The deprecated integer field, which older KEDA versions read, gives the same count.
            #[allow(deprecated)]
            let int = Metric::AverageValue {
                value: Some(reported.metric_value as f64),
                target: 1.0,
            };
            assert_eq!(
                proposal(int, current),
                expected,
                "integer field, desired={desired}"
            );
        }
    }
}

#[test]
fn value_metric_type_would_be_wrong_which_is_why_average_value_is_the_contract() {
    // Desired capacity 8 reported to a Value-type HPA running 5 pods asks for 40.
    let reported = metric_value("gpu-composite", 8.0).metric_value_float;
    let value = Metric::Value {
        value: Some(reported),
        target: 1.0,
    };
    assert_eq!(proposal(value, 5), 40);
    let average = Metric::AverageValue {
        value: Some(reported),
        target: 1.0,
    };
    assert_eq!(proposal(average, 5), 8);
}
