//! Prometheus Operator objects: a ServiceMonitor scrapes a named port of a rendered Service, and
//! a PrometheusRule's rules are well-formed and read exported metrics. Both fail silently in a
//! cluster: no target, or an alert that can never fire.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Service;

use crate::crds::{PrometheusRule, ServiceMonitor};
use crate::decode::Doc;
use crate::promql;
use crate::workload::selector_matches;

/// The selector matches a rendered Service, and every endpoint's port is a port name of each
/// Service it matches (the operator only scrapes named ports).
pub fn check_service_monitor(
    errs: &mut Vec<String>,
    d: &Doc,
    sm: &ServiceMonitor,
    services: &[&Service],
) {
    let matched: Vec<_> = services
        .iter()
        .filter(|s| {
            selector_matches(
                &sm.spec.selector,
                &s.metadata.labels.clone().unwrap_or_default(),
            )
        })
        .collect();
    if matched.is_empty() {
        errs.push(format!(
            "ServiceMonitor {}: selector matches no Service",
            d.name
        ));
    }
    for ep in &sm.spec.endpoints {
        let Some(port) = &ep.port else { continue };
        for s in &matched {
            let has = s
                .spec
                .iter()
                .flat_map(|sp| sp.ports.iter().flatten())
                .any(|p| p.name.as_deref() == Some(port));
            if !has {
                errs.push(format!(
                    "ServiceMonitor {}: Service {:?} has no port named {port:?}",
                    d.name, s.metadata.name
                ));
            }
        }
    }
}

/// Each rule is an alert or a recording rule (not both, not neither) whose PromQL parses and
/// reads `metrics` when given.
pub fn check_prometheus_rule(
    errs: &mut Vec<String>,
    d: &Doc,
    pr: &PrometheusRule,
    metrics: Option<&BTreeSet<String>>,
) {
    for g in &pr.spec.groups {
        for r in &g.rules {
            let id = format!(
                "PrometheusRule {} rule {}",
                d.name,
                r.alert.clone().or(r.record.clone()).unwrap_or_default()
            );
            if r.alert.is_some() == r.record.is_some() {
                errs.push(format!("{id}: set exactly one of alert/record"));
            }
            if let Err(e) = promql::check(&r.expr, metrics) {
                errs.push(format!("{id}: {e}"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::fixtures::{errors, errors_with_metrics, replace_once, GOOD};

    #[test]
    fn a_service_monitor_on_a_missing_port_or_service_is_reported() {
        let bad = replace_once(
            GOOD,
            "  - port: http\n    path: /metrics",
            "  - port: metrics\n    path: /metrics",
        );
        assert_eq!(
            errors(&bad),
            ["ServiceMonitor llm: Service Some(\"llm-svc\") has no port named \"metrics\""]
        );
        let bad = replace_once(
            GOOD,
            "  selector:\n    matchLabels:\n      team: ml",
            "  selector:\n    matchLabels:\n      team: data",
        );
        assert_eq!(
            errors(&bad),
            ["ServiceMonitor llm: selector matches no Service"]
        );
    }

    #[test]
    fn a_rule_that_is_both_or_neither_alert_and_record_is_reported() {
        let bad = replace_once(
            GOOD,
            "    - alert: LlmDown\n",
            "    - alert: LlmDown\n      record: llm:up\n",
        );
        assert_eq!(
            errors(&bad),
            ["PrometheusRule llm rule LlmDown: set exactly one of alert/record"]
        );
        let bad = replace_once(GOOD, "    - alert: LlmDown\n      expr", "    - expr");
        assert_eq!(
            errors(&bad),
            ["PrometheusRule llm rule : set exactly one of alert/record"]
        );
    }

    #[test]
    fn broken_or_unknown_promql_in_a_rule_is_reported() {
        let bad = replace_once(
            GOOD,
            "expr: up{job=\"llm\"} == 0",
            "expr: up{{job=\"llm\"} == 0",
        );
        let errs = errors(&bad);
        assert!(
            errs.len() == 1
                && errs[0].starts_with("PrometheusRule llm rule LlmDown: PromQL does not parse"),
            "{errs:?}"
        );
        let bad = replace_once(
            GOOD,
            "expr: up{job=\"llm\"} == 0",
            "expr: upp{job=\"llm\"} == 0",
        );
        assert_eq!(
            errors(&bad),
            Vec::<String>::new(),
            "no list: any metric is fine"
        );
        assert_eq!(
            errors_with_metrics(&bad, &["up"]),
            ["PrometheusRule llm rule LlmDown: reads metric(s) nobody exports: [\"upp\"]"]
        );
    }
}
