//! Metadata builders shared by the library's unit tests (the integration tests' own are in
//! tests/support, which cannot see test-only library code).

use std::collections::HashMap;

use crate::spec::{parse, parse_in, ParseContext, ScalerSpec, SpecError};

pub(crate) fn meta(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub(crate) fn base(extra: &[(&str, &str)]) -> HashMap<String, String> {
    let mut m = meta(&[
        ("endpoints", "http://127.0.0.1:9000/metrics"),
        ("queueTarget", "10"),
    ]);
    m.extend(meta(extra));
    m
}

#[track_caller]
pub(crate) fn rejects(m: HashMap<String, String>, key: &str, needle: &str) {
    let err = parse(&m).expect_err("metadata should be rejected");
    let p = err
        .problems
        .iter()
        .find(|p| p.key == key)
        .unwrap_or_else(|| panic!("no problem for {key} in: {err}"));
    assert!(
        p.message.contains(needle),
        "problem for {key} should contain {needle:?}: {}",
        p.message
    );
}

pub(crate) fn prom(extra: &[(&str, &str)]) -> Result<ScalerSpec, SpecError> {
    let mut m = meta(&[
        ("source", "prometheus"),
        ("deployment", "llm-server"),
        ("queueTarget", "4"),
    ]);
    m.extend(meta(extra));
    parse_in(
        ParseContext {
            egress: None,
            namespace: "inference",
            prometheus_address: Some("http://prom.monitoring:9090"),
        },
        &m,
    )
}

pub(crate) fn in_ns(pairs: &[(&str, &str)]) -> Result<ScalerSpec, SpecError> {
    parse_in(
        ParseContext {
            namespace: "inference",
            prometheus_address: Some("http://prom:9090"),
            egress: None,
        },
        &meta(pairs),
    )
}

/// Parses in namespace `inference` for a server with no default Prometheus address.
pub(crate) fn in_ns_without_prometheus(
    m: &HashMap<String, String>,
) -> Result<ScalerSpec, SpecError> {
    parse_in(
        ParseContext {
            namespace: "inference",
            prometheus_address: None,
            egress: None,
        },
        m,
    )
}
