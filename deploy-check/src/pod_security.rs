//! The restricted Pod Security Standard, plus a read-only root filesystem: what a namespace
//! labelled `pod-security.kubernetes.io/enforce: restricted` admits, checked before it refuses.

use crate::workload::Workload;

/// The restricted Pod Security Standard plus a read-only root filesystem.
pub fn check_pod_security(errs: &mut Vec<String>, w: &Workload) {
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
        // Container settings override the pod's.
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

#[cfg(test)]
mod tests {
    use crate::fixtures::{errors, replace_once, GOOD};

    const C: &str = "Deployment llm container server";

    fn assert_reports(bad: &str, msg: &str) {
        let errs = errors(bad);
        assert!(
            errs.iter().any(|e| e == &format!("{C}: {msg}")),
            "{msg:?} not in {errs:?}"
        );
    }

    #[test]
    fn each_relaxed_setting_is_reported() {
        let cases = [
            (
                "allowPrivilegeEscalation: false",
                "allowPrivilegeEscalation: true",
                "allowPrivilegeEscalation must be false",
            ),
            (
                "readOnlyRootFilesystem: true",
                "readOnlyRootFilesystem: false",
                "readOnlyRootFilesystem must be true",
            ),
            (
                "      runAsNonRoot: true\n",
                "      runAsNonRoot: false\n",
                "runAsNonRoot must be true",
            ),
            (
                "      runAsUser: 65532\n",
                "      runAsUser: 0\n",
                "runs as UID 0",
            ),
            (
                "drop: [ALL]",
                "drop: [NET_RAW]",
                "capabilities must drop ALL",
            ),
            (
                "drop: [ALL]",
                "drop: [ALL]\n            add: [SYS_ADMIN]",
                "adds capabilities [\"SYS_ADMIN\"]",
            ),
            (
                "        type: RuntimeDefault\n",
                "        type: Unconfined\n",
                "seccompProfile must be RuntimeDefault or Localhost",
            ),
            (
                "allowPrivilegeEscalation: false",
                "allowPrivilegeEscalation: false\n          privileged: true",
                "privileged",
            ),
        ];
        for (old, new, msg) in cases {
            assert_reports(&replace_once(GOOD, old, new), msg);
        }
    }

    #[test]
    fn net_bind_service_may_be_added() {
        let ok = replace_once(
            GOOD,
            "drop: [ALL]",
            "drop: [ALL]\n            add: [NET_BIND_SERVICE]",
        );
        assert_eq!(errors(&ok), Vec::<String>::new());
    }

    #[test]
    fn host_namespaces_and_host_paths_are_reported() {
        let bad = replace_once(
            GOOD,
            "      volumes:\n",
            "      hostNetwork: true\n      volumes:\n",
        );
        let errs = errors(&bad);
        assert!(
            errs.contains(&"Deployment llm: uses host namespaces".to_string()),
            "{errs:?}"
        );
        let bad = replace_once(
            GOOD,
            "        emptyDir: {}\n",
            "        hostPath: {path: /tmp}\n",
        );
        let errs = errors(&bad);
        assert!(
            errs.contains(&"Deployment llm: volume tmp is a hostPath".to_string()),
            "{errs:?}"
        );
    }
}
