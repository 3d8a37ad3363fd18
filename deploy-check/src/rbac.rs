//! RoleBindings and ClusterRoleBindings: each grants a role rendered beside it, to a
//! ServiceAccount a rendered workload runs as. A binding to a role that is not there grants
//! nothing, and the scaler finds out at its first API call.

use crate::decode::{Doc, Obj};
use crate::workload::Workload;

/// Every binding grants a role rendered beside it (a Role in its own namespace, or a
/// ClusterRole), to a ServiceAccount some rendered workload runs as.
pub fn check_bindings(errs: &mut Vec<String>, docs: &[Doc], workloads: &[Workload]) {
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

#[cfg(test)]
mod tests {
    use crate::fixtures::{errors, replace_once, GOOD};

    #[test]
    fn a_binding_to_a_role_in_another_namespace_is_reported() {
        let bad = replace_once(
            GOOD,
            "kind: Role\nmetadata:\n  name: llm-reader\n  namespace: inference",
            "kind: Role\nmetadata:\n  name: llm-reader\n  namespace: other",
        );
        let errs = errors(&bad);
        assert_eq!(
            errs,
            ["RoleBinding llm-reader: roleRef Role llm-reader is not rendered in namespace inference"]
        );
    }

    #[test]
    fn a_binding_to_a_missing_cluster_role_is_reported() {
        let bad = replace_once(
            GOOD,
            "  kind: ClusterRole\n  name: llm-nodes",
            "  kind: ClusterRole\n  name: llm-node",
        );
        let errs = errors(&bad);
        assert_eq!(
            errs,
            ["ClusterRoleBinding llm-nodes: roleRef ClusterRole llm-node is not rendered"]
        );
    }

    #[test]
    fn a_subject_no_workload_runs_as_is_reported() {
        let bad = replace_once(GOOD, "- kind: ServiceAccount\n  name: llm\n  namespace: inference\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding", "- kind: ServiceAccount\n  name: lm\n  namespace: inference\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding");
        let errs = errors(&bad);
        assert_eq!(
            errs,
            ["RoleBinding llm-reader: subject ServiceAccount inference/lm is used by no rendered workload"]
        );
    }

    #[test]
    fn a_binding_without_subjects_is_reported() {
        let bad = replace_once(GOOD, "subjects:\n- kind: ServiceAccount\n  name: llm\n  namespace: inference\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding", "subjects: []\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding");
        assert_eq!(errors(&bad), ["RoleBinding llm-reader: no subjects"]);
    }
}
