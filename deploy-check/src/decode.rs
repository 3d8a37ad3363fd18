//! YAML documents decoded into the typed Kubernetes struct for their apiVersion/kind, with every
//! key the struct does not know reported: the API server would drop such a key silently, so a
//! typo would ship as a missing setting.

use std::fmt::Write as _;

use anyhow::{bail, Context, Result};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, Role, RoleBinding, RoleRef, Subject,
};
use k8s_openapi::api::scheduling::v1::PriorityClass;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::{crds, promql};

/// One decoded document.
pub enum Obj {
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

pub struct Doc {
    /// `FILE#INDEX`, for messages about the document as a whole.
    pub origin: String,
    pub kind: String,
    pub name: String,
    pub obj: Obj,
}

/// Decode `value` as `T`, collecting every key `T` skipped. serde_ignored sees the keys because
/// k8s-openapi reads unknown keys as `IgnoredAny`.
pub fn decode_strict<T: DeserializeOwned>(value: serde_yaml::Value) -> Result<T> {
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

fn text_at<'a>(value: &'a serde_yaml::Value, path: &[&str]) -> &'a str {
    path.iter()
        .try_fold(value, |v, k| v.get(k))
        .and_then(|v| v.as_str())
        .unwrap_or("")
}

/// One document; an apiVersion/kind without a typed struct here is an error, so a chart cannot
/// render an object nothing checks.
pub fn decode(origin: &str, value: serde_yaml::Value) -> Result<Doc> {
    let api_version = text_at(&value, &["apiVersion"]).to_string();
    let kind = text_at(&value, &["kind"]).to_string();
    let name = text_at(&value, &["metadata", "name"]).to_string();
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
            promql::check_scaledobject(&value)?;
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

/// Every document of a file (`-`: standard input).
pub fn load(path: &str) -> Result<Vec<Doc>> {
    let text = if path == "-" {
        std::io::read_to_string(std::io::stdin())?
    } else {
        std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?
    };
    parse(path, &text)
}

/// Every document of `text`, or every document's problem at once (one a line, `path#index:`).
/// Empty documents (a template that rendered nothing) are skipped.
pub fn parse(path: &str, text: &str) -> Result<Vec<Doc>> {
    let mut docs = Vec::new();
    let mut errors = String::new();
    for (i, de) in serde_yaml::Deserializer::from_str(text).enumerate() {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{replace_once, GOOD};

    fn error(text: &str) -> String {
        match parse("t.yaml", text) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(e) => format!("{e:#}"),
        }
    }

    #[test]
    fn the_good_manifest_decodes_every_document() {
        let docs = parse("t.yaml", GOOD).unwrap();
        let kinds: Vec<&str> = docs.iter().map(|d| d.kind.as_str()).collect();
        assert!(kinds.contains(&"Deployment") && kinds.contains(&"PrometheusRule"));
        assert_eq!(docs[0].origin, "t.yaml#0");
    }

    #[test]
    fn a_misspelt_field_is_named_with_its_path() {
        let bad = replace_once(GOOD, "readinessProbe:", "readinesProbe:");
        let e = error(&bad);
        assert!(
            e.contains("unknown field(s): spec.template.spec.containers.0.readinesProbe"),
            "{e}"
        );
    }

    #[test]
    fn a_field_of_the_wrong_type_is_rejected() {
        let e = error(&replace_once(GOOD, "replicas: 2", "replicas: two"));
        assert!(
            e.contains("invalid type: string \"two\", expected i32"),
            "{e}"
        );
    }

    #[test]
    fn a_kind_without_a_typed_check_is_rejected() {
        let e = error(&replace_once(
            GOOD,
            "apiVersion: policy/v1",
            "apiVersion: policy/v1beta1",
        ));
        assert!(
            e.contains("no typed check for apiVersion \"policy/v1beta1\""),
            "{e}"
        );
    }

    #[test]
    fn every_bad_document_is_reported_with_its_origin() {
        let bad = replace_once(GOOD, "readinessProbe:", "readinesProbe:");
        let bad = replace_once(&bad, "apiVersion: policy/v1", "apiVersion: policy/v1beta1");
        let e = error(&bad);
        assert_eq!(e.lines().count(), 2, "{e}");
        assert!(e.lines().all(|l| l.starts_with("t.yaml#")), "{e}");
    }

    #[test]
    fn a_crd_field_the_subset_does_not_list_is_rejected() {
        let e = error(&replace_once(
            GOOD,
            "      labels:\n        severity",
            "      label:\n        severity",
        ));
        assert!(e.contains("unknown field `label`"), "{e}");
        let e = error(&replace_once(GOOD, "for: 30m", "for: 30 minutes"));
        assert!(e.contains("is not a Prometheus duration"), "{e}");
    }

    #[test]
    fn a_scaledobject_query_that_does_not_parse_is_rejected() {
        let so = "apiVersion: keda.sh/v1alpha1\nkind: ScaledObject\nmetadata: {name: llm}\n\
                  spec:\n  triggers:\n  - type: external\n    metadata:\n      QUERY\n";
        assert!(parse("so.yaml", &so.replace("QUERY", "gpuUtilQuery: avg(up)")).is_ok());
        let e = error(&so.replace("QUERY", "gpuUtilQuery: avg(up"));
        assert!(
            e.contains("trigger metadata gpuUtilQuery: PromQL does not parse"),
            "{e}"
        );
        // Only this scaler's triggers carry its query keys.
        let other = so
            .replace("type: external", "type: prometheus")
            .replace("QUERY", "gpuUtilQuery: avg(up");
        assert!(parse("so.yaml", &other).is_ok());
    }
}
