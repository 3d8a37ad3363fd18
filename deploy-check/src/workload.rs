//! Pod templates of Deployments and DaemonSets: the workload's own selector, port names, probe
//! ports, volume mounts and extended resources, then the pod security profile. Also what other
//! objects need to point at a pod template (labels, ports, selector matching).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Container, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::meta::is_dns1123_label;
use crate::pod_security::check_pod_security;

/// A pod template and where it comes from.
pub struct Workload<'a> {
    /// `Deployment NAME`, for messages.
    pub id: String,
    pub namespace: Option<String>,
    pub template: &'a PodTemplateSpec,
}

impl Workload<'_> {
    pub fn labels(&self) -> BTreeMap<String, String> {
        self.template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.clone())
            .unwrap_or_default()
    }
    pub fn containers(&self) -> impl Iterator<Item = &Container> {
        let spec = self.template.spec.as_ref();
        spec.into_iter().flat_map(|s| {
            s.containers
                .iter()
                .chain(s.init_containers.iter().flatten())
        })
    }
    pub fn port_names(&self) -> BTreeSet<String> {
        self.containers()
            .flat_map(|c| c.ports.iter().flatten())
            .filter_map(|p| p.name.clone())
            .collect()
    }
    pub fn port_numbers(&self) -> BTreeSet<i32> {
        self.containers()
            .flat_map(|c| c.ports.iter().flatten())
            .map(|p| p.container_port)
            .collect()
    }
}

/// A LabelSelector (matchLabels and matchExpressions) against a pod template's labels.
pub fn selector_matches(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let eq = sel
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let exprs = sel.match_expressions.iter().flatten().all(|e| {
        let vals = e.values.clone().unwrap_or_default();
        match e.operator.as_str() {
            "In" => labels.get(&e.key).is_some_and(|v| vals.contains(v)),
            "NotIn" => labels.get(&e.key).is_none_or(|v| !vals.contains(v)),
            "Exists" => labels.contains_key(&e.key),
            "DoesNotExist" => !labels.contains_key(&e.key),
            _ => false,
        }
    });
    eq && exprs
}

/// A plain label map selector (a Service's) against a pod template's labels.
pub fn map_matches(sel: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    sel.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// A port reference (by name or number) names a port a container declares.
pub fn check_port_ref(
    errs: &mut Vec<String>,
    what: &str,
    port: &IntOrString,
    names: &BTreeSet<String>,
    numbers: &BTreeSet<i32>,
) {
    match port {
        IntOrString::String(n) if !names.contains(n) => errs.push(format!(
            "{what}: named port {n:?} is not a container port (have {names:?})"
        )),
        IntOrString::Int(n) if !numbers.contains(n) => errs.push(format!(
            "{what}: port {n} is not a container port (have {numbers:?})"
        )),
        _ => {}
    }
}

pub fn check_workload(errs: &mut Vec<String>, w: &Workload, selector: &LabelSelector) {
    if !selector_matches(selector, &w.labels()) {
        errs.push(format!(
            "{}: spec.selector does not match the pod template labels",
            w.id
        ));
    }
    let names = w.port_names();
    let numbers = w.port_numbers();
    let volumes: BTreeSet<String> = w
        .template
        .spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .map(|v| v.name.clone())
        .collect();
    for c in w.containers() {
        let id = format!("{} container {}", w.id, c.name);
        check_port_names(errs, &id, c);
        check_probes(errs, &id, c, &names, &numbers);
        for m in c.volume_mounts.iter().flatten() {
            if !volumes.contains(&m.name) {
                errs.push(format!("{id}: volumeMount {:?} has no volume", m.name));
            }
        }
        check_extended_resources(errs, &id, c);
    }
    check_pod_security(errs, w);
}

/// Port names are IANA_SVC_NAMEs: the API server refuses others.
fn check_port_names(errs: &mut Vec<String>, id: &str, c: &Container) {
    for p in c.ports.iter().flatten() {
        if let Some(n) = &p.name {
            if n.len() > 15 || !is_dns1123_label(n) {
                errs.push(format!("{id}: port name {n:?} is not an IANA_SVC_NAME"));
            }
        }
    }
}

/// Each probe has exactly one handler, on a port the pod declares: a probe on a port nobody
/// listens on fails forever and the pod never becomes ready (or restarts in a loop).
fn check_probes(
    errs: &mut Vec<String>,
    id: &str,
    c: &Container,
    names: &BTreeSet<String>,
    numbers: &BTreeSet<i32>,
) {
    let probes = [
        ("liveness", &c.liveness_probe),
        ("readiness", &c.readiness_probe),
        ("startup", &c.startup_probe),
    ];
    for (what, probe) in probes {
        let Some(p) = probe else { continue };
        let handlers = [
            p.http_get.is_some(),
            p.grpc.is_some(),
            p.tcp_socket.is_some(),
            p.exec.is_some(),
        ];
        if handlers.iter().filter(|h| **h).count() != 1 {
            errs.push(format!("{id}: {what} probe needs exactly one handler"));
        }
        let what = format!("{id} {what} probe");
        if let Some(h) = &p.http_get {
            check_port_ref(errs, &what, &h.port, names, numbers);
        }
        if let Some(t) = &p.tcp_socket {
            check_port_ref(errs, &what, &t.port, names, numbers);
        }
        if let Some(g) = &p.grpc {
            check_port_ref(errs, &what, &IntOrString::Int(g.port), names, numbers);
        }
    }
}

/// Extended resources (GPUs) cannot be overcommitted: a request needs an equal limit.
fn check_extended_resources(errs: &mut Vec<String>, id: &str, c: &Container) {
    let Some(res) = &c.resources else { return };
    for (k, v) in res.requests.iter().flatten() {
        if k.contains('/') && !k.starts_with("kubernetes.io/") {
            let lim = res.limits.as_ref().and_then(|l| l.get(k));
            if lim != Some(v) {
                errs.push(format!(
                    "{id}: extended resource {k} request needs an equal limit"
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{assert_reports, replace_once, GOOD};

    #[test]
    fn a_selector_that_misses_its_own_pods_is_reported() {
        assert_reports(
            &replace_once(
                GOOD,
                "    matchLabels:\n      app: llm\n",
                "    matchLabels:\n      app: lm\n",
            ),
            "Deployment llm: spec.selector does not match the pod template labels",
        );
    }

    #[test]
    fn a_probe_on_an_undeclared_port_is_reported() {
        assert_reports(
            &replace_once(GOOD, "port: http\n", "port: htp\n"),
            "Deployment llm container server readiness probe: named port \"htp\" is not a container port",
        );
        assert_reports(
            &replace_once(GOOD, "port: 9000\n", "port: 9001\n"),
            "Deployment llm container server liveness probe: port 9001 is not a container port",
        );
    }

    #[test]
    fn a_probe_with_two_handlers_is_reported() {
        assert_reports(
            &replace_once(
                GOOD,
                "          grpc:\n",
                "          tcpSocket:\n            port: 9000\n          grpc:\n",
            ),
            "liveness probe needs exactly one handler",
        );
    }

    #[test]
    fn a_long_port_name_is_reported() {
        let bad = GOOD.replace("name: http\n", "name: http-metrics-port\n");
        assert_reports(
            &bad,
            "port name \"http-metrics-port\" is not an IANA_SVC_NAME",
        );
    }

    #[test]
    fn a_mount_without_its_volume_is_reported() {
        assert_reports(
            &replace_once(
                GOOD,
                "        - name: tmp\n          mountPath",
                "        - name: cache\n          mountPath",
            ),
            "volumeMount \"cache\" has no volume",
        );
    }

    #[test]
    fn a_gpu_request_without_an_equal_limit_is_reported() {
        assert_reports(
            &replace_once(
                GOOD,
                "            nvidia.com/gpu: 1\n          limits",
                "            nvidia.com/gpu: 2\n          limits",
            ),
            "extended resource nvidia.com/gpu request needs an equal limit",
        );
    }

    #[test]
    fn selectors_match_labels_and_expressions() {
        let labels: BTreeMap<String, String> = [("app".into(), "llm".into())].into();
        let sel = |yaml: &str| -> LabelSelector { serde_yaml::from_str(yaml).unwrap() };
        assert!(selector_matches(&sel("matchLabels: {app: llm}"), &labels));
        assert!(!selector_matches(&sel("matchLabels: {app: x}"), &labels));
        let expr = |op: &str, values: &str| {
            sel(&format!(
                "matchExpressions: [{{key: app, operator: {op}, values: {values}}}]"
            ))
        };
        assert!(selector_matches(&expr("In", "[llm, x]"), &labels));
        assert!(!selector_matches(&expr("NotIn", "[llm]"), &labels));
        assert!(selector_matches(&expr("Exists", "[]"), &labels));
        assert!(!selector_matches(&expr("DoesNotExist", "[]"), &labels));
        assert!(!selector_matches(&expr("Bogus", "[]"), &labels));
        assert!(map_matches(&[("app".into(), "llm".into())].into(), &labels));
        assert!(!map_matches(&[("tier".into(), "x".into())].into(), &labels));
    }
}
