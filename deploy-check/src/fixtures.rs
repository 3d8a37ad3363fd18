//! A small manifest that passes every check, for the unit tests to break one thing at a time
//! (as scripts/deploy-tests/test_deploy.py does with the rendered charts).

use std::collections::BTreeSet;

use crate::{cross, decode};

/// A Deployment with the objects that point at it: Service, PDB, NetworkPolicy, RBAC,
/// ServiceMonitor and PrometheusRule. The Deployment comes first, so `replace_once` of a text it
/// shares with a later object changes the Deployment.
pub const GOOD: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: llm
  namespace: inference
  labels:
    team: ml
spec:
  replicas: 2
  selector:
    matchLabels:
      app: llm
  template:
    metadata:
      labels:
        app: llm
    spec:
      serviceAccountName: llm
      securityContext:
        runAsNonRoot: true
        runAsUser: 65532
        seccompProfile:
          type: RuntimeDefault
      containers:
      - name: server
        image: llm:1
        ports:
        - name: http
          containerPort: 8080
        - name: grpc
          containerPort: 9000
        readinessProbe:
          httpGet:
            path: /readyz
            port: http
        livenessProbe:
          grpc:
            port: 9000
        resources:
          requests:
            nvidia.com/gpu: 1
          limits:
            nvidia.com/gpu: 1
        securityContext:
          allowPrivilegeEscalation: false
          readOnlyRootFilesystem: true
          capabilities:
            drop: [ALL]
        volumeMounts:
        - name: tmp
          mountPath: /tmp
      volumes:
      - name: tmp
        emptyDir: {}
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: llm
  namespace: inference
---
apiVersion: v1
kind: Service
metadata:
  name: llm-svc
  namespace: inference
  labels:
    team: ml
spec:
  selector:
    app: llm
  ports:
  - name: http
    port: 80
    targetPort: http
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: llm
  namespace: inference
spec:
  selector:
    matchLabels:
      app: llm
  maxUnavailable: 1
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: llm
  namespace: inference
spec:
  podSelector:
    matchLabels:
      app: llm
  ingress:
  - ports:
    - port: http
      protocol: TCP
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: llm-reader
  namespace: inference
rules:
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: llm-reader
  namespace: inference
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: llm-reader
subjects:
- kind: ServiceAccount
  name: llm
  namespace: inference
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: llm-nodes
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: llm-nodes
subjects:
- kind: ServiceAccount
  name: llm
  namespace: inference
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: llm-nodes
rules:
- apiGroups: [""]
  resources: [nodes]
  verbs: [get]
---
apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata:
  name: llm
  namespace: inference
spec:
  selector:
    matchLabels:
      team: ml
  endpoints:
  - port: http
    path: /metrics
---
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: llm
  namespace: inference
spec:
  groups:
  - name: llm
    rules:
    - alert: LlmDown
      expr: up{job="llm"} == 0
      for: 30m
      labels:
        severity: warning
"#;

/// `text` with the first `old` replaced; panics when `old` is not there, so a fixture edit
/// cannot turn a negative test into a test of the good manifest.
#[track_caller]
pub fn replace_once(text: &str, old: &str, new: &str) -> String {
    assert!(text.contains(old), "{old:?} is not in the fixture");
    text.replacen(old, new, 1)
}

/// The cross-object problems of a manifest that decodes.
#[track_caller]
pub fn errors(text: &str) -> Vec<String> {
    let docs = decode::parse("t.yaml", text).expect("the manifest decodes");
    cross::check(&docs, None)
}

/// Asserts that the manifest's cross-object problems include one containing `msg`.
#[track_caller]
pub fn assert_reports(bad: &str, msg: &str) {
    let errs = errors(bad);
    assert!(
        errs.iter().any(|e| e.contains(msg)),
        "{msg:?} not in {errs:?}"
    );
}

/// As `errors`, with PromQL checked against these exported metrics.
#[track_caller]
pub fn errors_with_metrics(text: &str, metrics: &[&str]) -> Vec<String> {
    let docs = decode::parse("t.yaml", text).expect("the manifest decodes");
    let known: BTreeSet<String> = metrics.iter().map(|m| m.to_string()).collect();
    cross::check(&docs, Some(&known))
}

#[test]
fn the_good_manifest_passes_every_check() {
    assert_eq!(errors(GOOD), Vec::<String>::new());
    assert_eq!(errors_with_metrics(GOOD, &["up"]), Vec::<String>::new());
}
