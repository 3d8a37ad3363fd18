//! Test-only checker for what the Helm charts render and what `keda/` ships.
//!
//! `deploy-check k8s [--metrics FILE] FILE...` decodes every YAML document into the typed
//! Kubernetes API struct for its apiVersion/kind (k8s-openapi) and fails on any key the struct
//! does not know: the API server would silently drop such a key (a misspelt `readinessProbe`
//! field, a probe nested one level too deep), so a typo would ship as a missing setting.
//! It then checks the references between objects that the API server does not check but a
//! working install needs (Service selectors and named ports, probes, volume mounts, PDB and
//! NetworkPolicy selectors, ServiceMonitor ports) and the restricted Pod Security profile.
//!
//! `deploy-check promql --metrics FILE DASHBOARD.json...` parses every PromQL expression of a
//! Grafana dashboard and checks each metric it reads is one the project exports.
//!
//! KEDA objects (keda.sh) are validated against KEDA's CRD schemas by the Python test; this tool
//! only accepts them as known kinds.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{bail, Context, Result};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, PodTemplateSpec, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, Role, RoleBinding, RoleRef, Subject,
};
use k8s_openapi::api::scheduling::v1::PriorityClass;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::de::DeserializeOwned;
use serde::Deserialize;

mod crds;

/// One decoded document.
enum Obj {
    Deployment(Box<Deployment>),
    DaemonSet(Box<DaemonSet>),
    Service(Box<Service>),
    Pdb(Box<PodDisruptionBudget>),
    NetPol(Box<NetworkPolicy>),
    ServiceMonitor(Box<crds::ServiceMonitor>),
    PrometheusRule(Box<crds::PrometheusRule>),
    /// A Role (with its namespace) or a ClusterRole (None), by name.
    Role(Option<String>),
    /// A RoleBinding (its namespace) or ClusterRoleBinding (None): what it grants to whom.
    Binding(Option<String>, Box<RoleRef>, Vec<Subject>),
    /// Decoded and field-checked, no cross-object rules.
    Other,
}

struct Doc {
    origin: String,
    kind: String,
    name: String,
    obj: Obj,
}

/// Decode `value` as `T`, collecting every key `T` skipped. serde_ignored sees the keys because
/// k8s-openapi reads unknown keys as `IgnoredAny`.
fn decode_strict<T: DeserializeOwned>(value: serde_yaml::Value) -> Result<T> {
    let mut unknown = Vec::new();
    let decoded: T = serde_ignored::deserialize(value, |path| {
        // serde_ignored writes "?" for Option/newtype layers; drop them for a readable path.
        unknown.push(path.to_string().replace(".?", "").replace("?.", ""))
    })
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    if !unknown.is_empty() {
        bail!("unknown field(s): {}", unknown.join(", "));
    }
    Ok(decoded)
}

fn decode(origin: &str, value: serde_yaml::Value) -> Result<Doc> {
    let api_version = value
        .get("apiVersion")
        .and_then(|v| v.as_str())
        .unwrap_or("")
        .to_string();
    let kind = value
        .get("kind")
        .and_then(|v| v.as_str())
        .unwrap_or("")
        .to_string();
    let name = value
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(|v| v.as_str())
        .unwrap_or("")
        .to_string();
    let obj = match (api_version.as_str(), kind.as_str()) {
        ("apps/v1", "Deployment") => Obj::Deployment(decode_strict(value)?),
        ("apps/v1", "DaemonSet") => Obj::DaemonSet(decode_strict(value)?),
        ("v1", "Service") => Obj::Service(decode_strict(value)?),
        ("policy/v1", "PodDisruptionBudget") => Obj::Pdb(decode_strict(value)?),
        ("networking.k8s.io/v1", "NetworkPolicy") => Obj::NetPol(decode_strict(value)?),
        ("v1", "ConfigMap") => {
            decode_strict::<ConfigMap>(value)?;
            Obj::Other
        }
        ("v1", "Secret") => {
            decode_strict::<Secret>(value)?;
            Obj::Other
        }
        ("v1", "ServiceAccount") => {
            decode_strict::<ServiceAccount>(value)?;
            Obj::Other
        }
        ("rbac.authorization.k8s.io/v1", "Role") => {
            Obj::Role(decode_strict::<Role>(value)?.metadata.namespace)
        }
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => {
            decode_strict::<ClusterRole>(value)?;
            Obj::Role(None)
        }
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => {
            let b: RoleBinding = decode_strict(value)?;
            Obj::Binding(
                b.metadata.namespace,
                Box::new(b.role_ref),
                b.subjects.unwrap_or_default(),
            )
        }
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
            let b: ClusterRoleBinding = decode_strict(value)?;
            Obj::Binding(None, Box::new(b.role_ref), b.subjects.unwrap_or_default())
        }
        ("autoscaling/v2", "HorizontalPodAutoscaler") => {
            decode_strict::<HorizontalPodAutoscaler>(value)?;
            Obj::Other
        }
        ("scheduling.k8s.io/v1", "PriorityClass") => {
            decode_strict::<PriorityClass>(value)?;
            Obj::Other
        }
        ("monitoring.coreos.com/v1", "ServiceMonitor") => {
            Obj::ServiceMonitor(Box::new(crds::strict(value)?))
        }
        ("monitoring.coreos.com/v1", "PrometheusRule") => {
            Obj::PrometheusRule(Box::new(crds::strict(value)?))
        }
        ("cert-manager.io/v1", "Certificate") => {
            crds::strict::<crds::Certificate>(value)?;
            Obj::Other
        }
        // Validated against KEDA's own CRD schemas by scripts/deploy-tests/test_deploy.py; here
        // only the PromQL the scaler will run is parsed.
        ("keda.sh/v1alpha1", "ScaledObject") => {
            check_scaledobject_promql(&value)?;
            Obj::Other
        }
        ("keda.sh/v1alpha1", "TriggerAuthentication") => Obj::Other,
        _ => bail!("no typed check for apiVersion {api_version:?} kind {kind:?}"),
    };
    Ok(Doc {
        origin: origin.to_string(),
        kind,
        name,
        obj,
    })
}

/// Trigger metadata keys holding full PromQL (`gpuUtilQuery`, `extra.<name>.query`, ...) must
/// parse: the scaler would otherwise fail the query at every sample.
fn check_scaledobject_promql(value: &serde_yaml::Value) -> Result<()> {
    let triggers = value
        .get("spec")
        .and_then(|s| s.get("triggers"))
        .and_then(|t| t.as_sequence());
    let mut errs = Vec::new();
    for t in triggers.into_iter().flatten() {
        let ty = t.get("type").and_then(|v| v.as_str()).unwrap_or("");
        if !ty.starts_with("external") {
            continue;
        }
        let Some(meta) = t.get("metadata").and_then(|m| m.as_mapping()) else {
            continue;
        };
        for (k, v) in meta {
            let (Some(k), Some(v)) = (k.as_str(), v.as_str()) else {
                continue;
            };
            if k.ends_with("Query") || (k.starts_with("extra.") && k.ends_with(".query")) {
                if let Err(e) = promql::check(v, None) {
                    errs.push(format!("trigger metadata {k}: {e}"));
                }
            }
        }
    }
    if !errs.is_empty() {
        bail!("{}", errs.join("; "));
    }
    Ok(())
}

fn load(path: &str) -> Result<Vec<Doc>> {
    let text = if path == "-" {
        std::io::read_to_string(std::io::stdin())?
    } else {
        std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?
    };
    let mut docs = Vec::new();
    let mut errors = String::new();
    for (i, de) in serde_yaml::Deserializer::from_str(&text).enumerate() {
        let value = serde_yaml::Value::deserialize(de)
            .with_context(|| format!("{path}: document {i}: not YAML"))?;
        if value.is_null() {
            continue;
        }
        let origin = format!("{path}#{i}");
        match decode(&origin, value) {
            Ok(doc) => docs.push(doc),
            Err(e) => writeln!(errors, "{origin}: {e:#}").unwrap(),
        }
    }
    if !errors.is_empty() {
        bail!("{}", errors.trim_end());
    }
    Ok(docs)
}

// ---------- cross-object rules ----------

fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

fn selector_matches(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
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

fn map_matches(sel: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    sel.iter().all(|(k, v)| labels.get(k) == Some(v))
}

struct Workload<'a> {
    id: String,
    namespace: Option<String>,
    template: &'a PodTemplateSpec,
}

impl Workload<'_> {
    fn labels(&self) -> BTreeMap<String, String> {
        self.template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.clone())
            .unwrap_or_default()
    }
    fn containers(&self) -> impl Iterator<Item = &Container> {
        let spec = self.template.spec.as_ref();
        spec.into_iter().flat_map(|s| {
            s.containers
                .iter()
                .chain(s.init_containers.iter().flatten())
        })
    }
    fn port_names(&self) -> BTreeSet<String> {
        self.containers()
            .flat_map(|c| c.ports.iter().flatten())
            .filter_map(|p| p.name.clone())
            .collect()
    }
    fn port_numbers(&self) -> BTreeSet<i32> {
        self.containers()
            .flat_map(|c| c.ports.iter().flatten())
            .map(|p| p.container_port)
            .collect()
    }
}

fn check_port_ref(
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

/// The restricted Pod Security Standard plus a read-only root filesystem.
fn check_pod_security(errs: &mut Vec<String>, w: &Workload) {
    let Some(spec) = w.template.spec.as_ref() else {
        errs.push(format!("{}: pod template has no spec", w.id));
        return;
    };
    let psc = spec.security_context.clone().unwrap_or_default();
    if spec.host_network == Some(true) || spec.host_pid == Some(true) || spec.host_ipc == Some(true)
    {
        errs.push(format!("{}: uses host namespaces", w.id));
    }
    for v in spec.volumes.iter().flatten() {
        if v.host_path.is_some() {
            errs.push(format!("{}: volume {} is a hostPath", w.id, v.name));
        }
    }
    let pod_seccomp = psc.seccomp_profile.as_ref().map(|s| s.type_.clone());
    for c in w.containers() {
        let id = format!("{} container {}", w.id, c.name);
        let sc = c.security_context.clone().unwrap_or_default();
        if sc.allow_privilege_escalation != Some(false) {
            errs.push(format!("{id}: allowPrivilegeEscalation must be false"));
        }
        if sc.privileged == Some(true) {
            errs.push(format!("{id}: privileged"));
        }
        if sc.read_only_root_filesystem != Some(true) {
            errs.push(format!("{id}: readOnlyRootFilesystem must be true"));
        }
        if sc.run_as_non_root.or(psc.run_as_non_root) != Some(true) {
            errs.push(format!("{id}: runAsNonRoot must be true"));
        }
        if sc.run_as_user.or(psc.run_as_user) == Some(0) {
            errs.push(format!("{id}: runs as UID 0"));
        }
        let drops = sc
            .capabilities
            .as_ref()
            .and_then(|c| c.drop.clone())
            .unwrap_or_default();
        if !drops.iter().any(|d| d == "ALL") {
            errs.push(format!("{id}: capabilities must drop ALL"));
        }
        let adds = sc
            .capabilities
            .as_ref()
            .and_then(|c| c.add.clone())
            .unwrap_or_default();
        if adds.iter().any(|a| a != "NET_BIND_SERVICE") {
            errs.push(format!("{id}: adds capabilities {adds:?}"));
        }
        let seccomp = sc
            .seccomp_profile
            .as_ref()
            .map(|s| s.type_.clone())
            .or(pod_seccomp.clone());
        if !matches!(seccomp.as_deref(), Some("RuntimeDefault" | "Localhost")) {
            errs.push(format!(
                "{id}: seccompProfile must be RuntimeDefault or Localhost"
            ));
        }
    }
}

/// Every binding grants a role rendered beside it (a Role in its own namespace, or a
/// ClusterRole), to a ServiceAccount some rendered workload runs as.
fn check_bindings(errs: &mut Vec<String>, docs: &[Doc], workloads: &[Workload]) {
    for d in docs {
        let Obj::Binding(namespace, role_ref, subjects) = &d.obj else {
            continue;
        };
        let found = docs.iter().any(|r| match &r.obj {
            Obj::Role(ns) => {
                r.name == role_ref.name
                    && r.kind == role_ref.kind
                    && (role_ref.kind == "ClusterRole" || ns == namespace)
            }
            _ => false,
        });
        if !found {
            errs.push(format!(
                "{} {}: roleRef {} {} is not rendered{}",
                d.kind,
                d.name,
                role_ref.kind,
                role_ref.name,
                namespace
                    .as_deref()
                    .map(|n| format!(" in namespace {n}"))
                    .unwrap_or_default()
            ));
        }
        if subjects.is_empty() {
            errs.push(format!("{} {}: no subjects", d.kind, d.name));
        }
        for s in subjects.iter().filter(|s| s.kind == "ServiceAccount") {
            let used = workloads.iter().any(|w| {
                let spec = w.template.spec.as_ref();
                spec.and_then(|p| p.service_account_name.as_deref()) == Some(s.name.as_str())
                    && (s.namespace.is_none() || w.namespace == s.namespace)
            });
            if !used {
                errs.push(format!(
                    "{} {}: subject ServiceAccount {}/{} is used by no rendered workload",
                    d.kind,
                    d.name,
                    s.namespace.as_deref().unwrap_or("?"),
                    s.name
                ));
            }
        }
    }
}

fn check_workload(errs: &mut Vec<String>, w: &Workload, selector: &LabelSelector) {
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
        for p in c.ports.iter().flatten() {
            if let Some(n) = &p.name {
                if n.len() > 15 || !is_dns1123_label(n) {
                    errs.push(format!("{id}: port name {n:?} is not an IANA_SVC_NAME"));
                }
            }
        }
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
            if let Some(h) = &p.http_get {
                check_port_ref(
                    errs,
                    &format!("{id} {what} probe"),
                    &h.port,
                    &names,
                    &numbers,
                );
            }
            if let Some(t) = &p.tcp_socket {
                check_port_ref(
                    errs,
                    &format!("{id} {what} probe"),
                    &t.port,
                    &names,
                    &numbers,
                );
            }
            if let Some(g) = &p.grpc {
                check_port_ref(
                    errs,
                    &format!("{id} {what} probe"),
                    &IntOrString::Int(g.port),
                    &names,
                    &numbers,
                );
            }
        }
        for m in c.volume_mounts.iter().flatten() {
            if !volumes.contains(&m.name) {
                errs.push(format!("{id}: volumeMount {:?} has no volume", m.name));
            }
        }
        // Extended resources (GPUs) cannot be overcommitted: a request needs an equal limit.
        if let Some(res) = &c.resources {
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
    }
    check_pod_security(errs, w);
}

fn check_meta(errs: &mut Vec<String>, d: &Doc, meta: Option<&ObjectMeta>) {
    let Some(meta) = meta else { return };
    let name = meta.name.clone().unwrap_or_default();
    let ok = if d.kind == "Service" {
        is_dns1123_label(&name)
    } else {
        is_dns1123_subdomain(&name)
    };
    if !ok {
        errs.push(format!("{} {}: invalid name {name:?}", d.kind, d.origin));
    }
    for (k, v) in meta.labels.iter().flatten() {
        let valid_v = v.len() <= 63
            && v.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            && (v.is_empty()
                || (v.as_bytes()[0].is_ascii_alphanumeric()
                    && v.as_bytes()[v.len() - 1].is_ascii_alphanumeric()));
        if !valid_v {
            errs.push(format!(
                "{} {}: label {k}={v:?} is not a valid label value",
                d.kind, d.name
            ));
        }
    }
}

fn cross_check(docs: &[Doc], metrics: Option<&BTreeSet<String>>) -> Vec<String> {
    let mut errs = Vec::new();
    let mut workloads = Vec::new();
    for d in docs {
        match &d.obj {
            Obj::Deployment(x) => {
                check_meta(&mut errs, d, Some(&x.metadata));
                if let Some(s) = &x.spec {
                    let w = Workload {
                        id: format!("Deployment {}", d.name),
                        namespace: x.metadata.namespace.clone(),
                        template: &s.template,
                    };
                    check_workload(&mut errs, &w, &s.selector);
                    workloads.push(w);
                }
            }
            Obj::DaemonSet(x) => {
                check_meta(&mut errs, d, Some(&x.metadata));
                if let Some(s) = &x.spec {
                    let w = Workload {
                        id: format!("DaemonSet {}", d.name),
                        namespace: x.metadata.namespace.clone(),
                        template: &s.template,
                    };
                    check_workload(&mut errs, &w, &s.selector);
                    workloads.push(w);
                }
            }
            _ => {}
        }
    }
    let same_ns = |a: &Option<String>, b: &Option<String>| a.is_none() || b.is_none() || a == b;
    check_bindings(&mut errs, docs, &workloads);
    let mut services = Vec::new();
    for d in docs {
        match &d.obj {
            Obj::Service(s) => {
                check_meta(&mut errs, d, Some(&s.metadata));
                services.push(s);
                let spec = s.spec.clone().unwrap_or_default();
                let Some(sel) = spec.selector.filter(|m| !m.is_empty()) else {
                    continue;
                };
                let backends: Vec<_> = workloads
                    .iter()
                    .filter(|w| {
                        same_ns(&w.namespace, &s.metadata.namespace)
                            && map_matches(&sel, &w.labels())
                    })
                    .collect();
                if backends.is_empty() {
                    errs.push(format!(
                        "Service {}: selector {sel:?} matches no pod template",
                        d.name
                    ));
                    continue;
                }
                for p in spec.ports.iter().flatten() {
                    let target = p.target_port.clone().unwrap_or(IntOrString::Int(p.port));
                    for w in &backends {
                        check_port_ref(
                            &mut errs,
                            &format!("Service {} port {:?} -> {}", d.name, p.name, w.id),
                            &target,
                            &w.port_names(),
                            &w.port_numbers(),
                        );
                    }
                }
            }
            Obj::Pdb(p) => {
                check_meta(&mut errs, d, Some(&p.metadata));
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
            Obj::NetPol(n) => {
                check_meta(&mut errs, d, Some(&n.metadata));
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
                                    &mut errs,
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
            _ => {}
        }
    }
    for d in docs {
        match &d.obj {
            Obj::ServiceMonitor(sm) => {
                check_meta(&mut errs, d, Some(&sm.metadata));
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
            Obj::PrometheusRule(pr) => {
                check_meta(&mut errs, d, Some(&pr.metadata));
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
            _ => {}
        }
    }
    errs
}

mod promql {
    use std::collections::BTreeSet;

    use promql_parser::parser::{self, Expr};
    use promql_parser::util::{walk_expr, ExprVisitor};

    struct Names(BTreeSet<String>);

    impl ExprVisitor for Names {
        type Error = String;
        fn pre_visit(&mut self, e: &Expr) -> Result<bool, String> {
            let vs = match e {
                Expr::VectorSelector(vs) => vs,
                Expr::MatrixSelector(ms) => &ms.vs,
                _ => return Ok(true),
            };
            match &vs.name {
                Some(n) => {
                    self.0.insert(n.clone());
                }
                None => return Err("selector without a metric name".into()),
            }
            Ok(true)
        }
    }

    /// Metric names read by `expr`.
    pub fn metric_names(expr: &str) -> Result<BTreeSet<String>, String> {
        let ast = parser::parse(expr).map_err(|e| format!("PromQL does not parse: {e}: {expr}"))?;
        let mut v = Names(BTreeSet::new());
        walk_expr(&mut v, &ast)?;
        Ok(v.0)
    }

    pub fn check(expr: &str, known: Option<&BTreeSet<String>>) -> Result<(), String> {
        let names = metric_names(expr)?;
        if let Some(known) = known {
            let unknown: Vec<_> = names.iter().filter(|n| !known.contains(*n)).collect();
            if !unknown.is_empty() {
                return Err(format!("reads metric(s) nobody exports: {unknown:?}"));
            }
        }
        Ok(())
    }

    /// Replace Grafana's template variables by values of the right PromQL type.
    pub fn expand_grafana(expr: &str) -> String {
        let mut s = expr
            .replace("$__rate_interval", "5m")
            .replace("$__interval", "1m")
            .replace("$__range", "1h");
        for var in ["${datasource}", "$datasource"] {
            s = s.replace(var, "ds");
        }
        // Remaining $name / ${name} are label-value variables inside regex matchers.
        let re_var = |s: &str| {
            let mut out = String::new();
            let b = s.as_bytes();
            let mut i = 0;
            while i < b.len() {
                if b[i] == b'$' {
                    let mut j = i + 1;
                    let braced = j < b.len() && b[j] == b'{';
                    if braced {
                        j += 1;
                    }
                    let start = j;
                    while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
                        j += 1;
                    }
                    if j > start {
                        if braced && j < b.len() && b[j] == b'}' {
                            j += 1;
                        }
                        out.push_str("var");
                        i = j;
                        continue;
                    }
                }
                out.push(b[i] as char);
                i += 1;
            }
            out
        };
        re_var(&s)
    }
}

fn check_dashboard(path: &Path, known: &BTreeSet<String>) -> Result<usize> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
    let mut exprs = Vec::new();
    fn collect(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    if k == "expr" {
                        if let Some(s) = v.as_str() {
                            out.push(s.to_string());
                        }
                    } else {
                        collect(v, out);
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| collect(v, out)),
            _ => {}
        }
    }
    collect(&json["panels"], &mut exprs);
    if exprs.is_empty() {
        bail!("{}: no PromQL expressions found", path.display());
    }
    let mut errs = Vec::new();
    for e in &exprs {
        if let Err(msg) = promql::check(&promql::expand_grafana(e), Some(known)) {
            errs.push(msg);
        }
    }
    // Templating queries: label_values(metric{...}, label) must name a known metric.
    for v in json["templating"]["list"].as_array().into_iter().flatten() {
        if let Some(q) = v["query"]["query"].as_str().or(v["query"].as_str()) {
            if let Some(inner) = q.strip_prefix("label_values(") {
                let selector = inner.rsplit_once(',').map(|(a, _)| a).unwrap_or(inner);
                if let Err(msg) = promql::check(&promql::expand_grafana(selector), Some(known)) {
                    errs.push(format!("variable {}: {msg}", v["name"]));
                }
            }
        }
    }
    // Panel ids must be unique or Grafana mixes up panel state.
    let mut ids = BTreeSet::new();
    for p in json["panels"].as_array().into_iter().flatten() {
        if let Some(id) = p["id"].as_i64() {
            if !ids.insert(id) {
                errs.push(format!("duplicate panel id {id}"));
            }
        }
    }
    if !errs.is_empty() {
        bail!("{}:\n  {}", path.display(), errs.join("\n  "));
    }
    Ok(exprs.len())
}

fn read_metrics(path: &str) -> Result<BTreeSet<String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    Ok(text
        .lines()
        .map(|l| l.split('#').next().unwrap().trim())
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect())
}

fn run() -> Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() {
        bail!("usage: deploy-check k8s [--metrics FILE] FILE... | deploy-check promql --metrics FILE DASHBOARD.json...");
    }
    let cmd = args.remove(0);
    let mut metrics = None;
    if let Some(i) = args.iter().position(|a| a == "--metrics") {
        let path = args.get(i + 1).context("--metrics needs a file")?.clone();
        metrics = Some(read_metrics(&path)?);
        args.drain(i..=i + 1);
    }
    if args.is_empty() {
        bail!("no input files");
    }
    match cmd.as_str() {
        "k8s" => {
            let mut all = Vec::new();
            let mut errs = Vec::new();
            for f in &args {
                match load(f) {
                    Ok(d) => all.extend(d),
                    Err(e) => errs.push(format!("{e:#}")),
                }
            }
            errs.extend(cross_check(&all, metrics.as_ref()));
            if !errs.is_empty() {
                bail!("{}", errs.join("\n"));
            }
            println!("ok: {} objects", all.len());
        }
        "promql" => {
            let known = metrics.context("promql needs --metrics")?;
            for f in &args {
                let n = check_dashboard(Path::new(f), &known)?;
                println!("ok: {f}: {n} expressions");
            }
        }
        other => bail!("unknown command {other:?}"),
    }
    Ok(())
}

fn main() {
    if let Err(e) = run() {
        eprintln!("{e:#}");
        std::process::exit(1);
    }
}
