//! Objects that select pod templates: Services (and the ports they forward to), PodDisruption
//! Budgets and NetworkPolicies. A selector that matches nothing is accepted by the API server and
//! does nothing, which is how a Service ends up with no endpoints.

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::decode::Doc;
use crate::workload::{check_port_ref, map_matches, selector_matches, Workload};

/// Namespaces match, or one side leaves it to the release namespace.
fn same_ns(a: &Option<String>, b: &Option<String>) -> bool {
    a.is_none() || b.is_none() || a == b
}

/// A Service's selector matches a pod template in its namespace, and every port's targetPort is
/// one that template declares. A Service without a selector (endpoints managed by hand) is left
/// alone.
pub fn check_service(errs: &mut Vec<String>, d: &Doc, s: &Service, workloads: &[Workload]) {
    let spec = s.spec.clone().unwrap_or_default();
    let Some(sel) = spec.selector.filter(|m| !m.is_empty()) else {
        return;
    };
    let backends: Vec<_> = workloads
        .iter()
        .filter(|w| same_ns(&w.namespace, &s.metadata.namespace) && map_matches(&sel, &w.labels()))
        .collect();
    if backends.is_empty() {
        errs.push(format!(
            "Service {}: selector {sel:?} matches no pod template",
            d.name
        ));
        return;
    }
    for p in spec.ports.iter().flatten() {
        let target = p.target_port.clone().unwrap_or(IntOrString::Int(p.port));
        for w in &backends {
            check_port_ref(
                errs,
                &format!("Service {} port {:?} -> {}", d.name, p.name, w.id),
                &target,
                &w.port_names(),
                &w.port_numbers(),
            );
        }
    }
}

/// Exactly one of minAvailable/maxUnavailable (the API refuses both), and a selector that
/// protects some pod template.
pub fn check_pdb(errs: &mut Vec<String>, d: &Doc, p: &PodDisruptionBudget, workloads: &[Workload]) {
    let spec = p.spec.clone().unwrap_or_default();
    if spec.min_available.is_some() == spec.max_unavailable.is_some() {
        errs.push(format!(
            "PodDisruptionBudget {}: set exactly one of minAvailable/maxUnavailable",
            d.name
        ));
    }
    let sel = spec.selector.unwrap_or_default();
    if !workloads
        .iter()
        .any(|w| selector_matches(&sel, &w.labels()))
    {
        errs.push(format!(
            "PodDisruptionBudget {}: selector matches no pod template",
            d.name
        ));
    }
}

/// The podSelector matches some pod template, and each ingress port is one it declares: a
/// NetworkPolicy opening the wrong port blocks the right one.
pub fn check_network_policy(
    errs: &mut Vec<String>,
    d: &Doc,
    n: &NetworkPolicy,
    workloads: &[Workload],
) {
    let spec = n.spec.clone().unwrap_or_default();
    let sel = spec.pod_selector.unwrap_or_default();
    let targets: Vec<_> = workloads
        .iter()
        .filter(|w| selector_matches(&sel, &w.labels()))
        .collect();
    if targets.is_empty() {
        errs.push(format!(
            "NetworkPolicy {}: podSelector matches no pod template",
            d.name
        ));
    }
    for rule in spec.ingress.iter().flatten() {
        for p in rule.ports.iter().flatten() {
            if let Some(port) = &p.port {
                for w in &targets {
                    check_port_ref(
                        errs,
                        &format!("NetworkPolicy {} -> {}", d.name, w.id),
                        port,
                        &w.port_names(),
                        &w.port_numbers(),
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::fixtures::{assert_reports, replace_once, GOOD};

    #[test]
    fn a_service_selecting_no_pods_is_reported() {
        let bad = replace_once(
            GOOD,
            "  selector:\n    app: llm\n",
            "  selector:\n    app: lm\n",
        );
        assert_reports(
            &bad,
            "Service llm-svc: selector {\"app\": \"lm\"} matches no pod template",
        );
    }

    #[test]
    fn a_service_in_another_namespace_selects_nothing() {
        let bad = replace_once(
            GOOD,
            "name: llm-svc\n  namespace: inference",
            "name: llm-svc\n  namespace: other",
        );
        assert_reports(&bad, "Service llm-svc: selector");
    }

    #[test]
    fn a_service_targeting_a_missing_port_is_reported() {
        let bad = replace_once(GOOD, "targetPort: http", "targetPort: htp");
        assert_reports(
            &bad,
            "Service llm-svc port Some(\"http\") -> Deployment llm: named port \"htp\" is not a container port",
        );
        // With no targetPort the port itself is the target.
        let bad = replace_once(GOOD, "    targetPort: http\n", "");
        assert_reports(&bad, "port 80 is not a container port");
    }

    #[test]
    fn a_pdb_with_both_bounds_or_no_pods_is_reported() {
        let bad = replace_once(
            GOOD,
            "  maxUnavailable: 1\n",
            "  maxUnavailable: 1\n  minAvailable: 1\n",
        );
        assert_reports(
            &bad,
            "PodDisruptionBudget llm: set exactly one of minAvailable/maxUnavailable",
        );
        let bad = replace_once(GOOD, "  maxUnavailable: 1\n", "");
        assert_reports(&bad, "set exactly one of minAvailable/maxUnavailable");
        let bad = replace_once(
            GOOD,
            "      app: llm\n  maxUnavailable",
            "      app: lm\n  maxUnavailable",
        );
        assert_reports(
            &bad,
            "PodDisruptionBudget llm: selector matches no pod template",
        );
    }

    #[test]
    fn a_network_policy_on_no_pods_or_a_missing_port_is_reported() {
        let bad = replace_once(
            GOOD,
            "  podSelector:\n    matchLabels:\n      app: llm",
            "  podSelector:\n    matchLabels:\n      app: lm",
        );
        assert_reports(
            &bad,
            "NetworkPolicy llm: podSelector matches no pod template",
        );
        let bad = replace_once(
            GOOD,
            "    - port: http\n      protocol: TCP",
            "    - port: 8081\n      protocol: TCP",
        );
        assert_reports(
            &bad,
            "NetworkPolicy llm -> Deployment llm: port 8081 is not a container port",
        );
    }
}
