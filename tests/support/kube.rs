//! An in-process double of the Kubernetes API for EndpointSlices and pods, on loopback.
//!
//! No API server binary can be installed on these machines, so discovery is tested against this:
//! it serves real `discovery.k8s.io/v1` EndpointSlice and `v1` Pod objects the way the API server
//! does (pods' annotations by JSON merge patch, their status conditions by strategic merge patch
//! on the `status` subresource, merged by `type`): a list
//! with its `resourceVersion`, a watch streaming newline-delimited ADDED / MODIFIED / DELETED
//! events after a given resourceVersion, an in-stream `ERROR` with a 410 `Expired` Status when
//! that version was compacted away (the client must list again), and a 403 `Forbidden` Status for
//! namespaces the test denies, worded like the RBAC authorizer's.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc};

#[derive(Default)]
struct ApiState {
    rv: u64,
    /// (namespace, name) -> object.
    slices: BTreeMap<(String, String), Value>,
    /// (resourceVersion, namespace, type, object, resource), oldest first.
    events: Vec<(u64, String, &'static str, Value, &'static str)>,
    /// Pods by (namespace, name), for the pod list and watch.
    pods: BTreeMap<(String, String), Value>,
    /// Namespaces where listing and watching pods is denied.
    pods_forbidden: BTreeSet<String>,
    /// Watches from a resourceVersion below this get 410 Gone.
    oldest: u64,
    forbidden: BTreeSet<String>,
    /// "list <ns>" and "watch <ns> <rv>", in order.
    requests: Vec<String>,
    /// Bumped to end every open watch.
    generation: u64,
    /// Watch streams open now.
    open_watches: usize,
    /// PATCH requests on pods: (namespace, pod, content type, body), in order.
    patches: Vec<(String, String, String, Value)>,
    /// Namespaces where patching pods is denied.
    patch_forbidden: BTreeSet<String>,
    /// Annotations of pods as patched, by (namespace, pod).
    annotations: BTreeMap<(String, String), Value>,
    /// PATCH requests on pods' status: (namespace, pod, content type, body), in order.
    status_patches: Vec<(String, String, String, Value)>,
    /// Namespaces where patching pods/status is denied.
    status_forbidden: BTreeSet<String>,
    /// Pods whose spec lists no readiness gate, by (namespace, pod); every other pod lists the
    /// scaler's.
    ungated: BTreeSet<(String, String)>,
    /// Pods' status conditions as patched, by (namespace, pod) and condition type.
    conditions: BTreeMap<(String, String), BTreeMap<String, Value>>,
}

#[derive(Clone)]
struct Shared {
    state: Arc<Mutex<ApiState>>,
    changed: broadcast::Sender<()>,
}

/// The running double. `kubeconfig` points a kube client at it (no credentials: plain HTTP).
pub struct KubeApi {
    pub url: String,
    pub kubeconfig: std::path::PathBuf,
    shared: Shared,
    _dir: tempfile::TempDir,
}

/// One endpoint of a slice: address, pod name and conditions.
pub struct Ep<'a> {
    pub address: &'a str,
    pub pod: &'a str,
    pub ready: bool,
    pub terminating: bool,
}

impl<'a> Ep<'a> {
    pub fn ready(address: &'a str, pod: &'a str) -> Self {
        Ep {
            address,
            pod,
            ready: true,
            terminating: false,
        }
    }
    pub fn starting(address: &'a str, pod: &'a str) -> Self {
        Ep {
            address,
            pod,
            ready: false,
            terminating: false,
        }
    }
    pub fn terminating(address: &'a str, pod: &'a str) -> Self {
        Ep {
            address,
            pod,
            ready: false,
            terminating: true,
        }
    }
}

/// An EndpointSlice as the EndpointSlice controller writes it for Service `service`.
pub fn slice(name: &str, service: &str, ports: &[(&str, u16)], endpoints: &[Ep<'_>]) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "generateName": format!("{service}-"),
            "labels": {
                "kubernetes.io/service-name": service,
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"
            },
            "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": service, "uid": "0b7c6b4e-4e1f-4b0e-9a8c-000000000001", "controller": true, "blockOwnerDeletion": true}]
        },
        "addressType": "IPv4",
        "ports": ports.iter().map(|(n, p)| json!({"name": n, "port": p, "protocol": "TCP"})).collect::<Vec<_>>(),
        "endpoints": endpoints.iter().map(|e| json!({
            "addresses": [e.address],
            "conditions": {"ready": e.ready, "serving": e.ready || e.terminating, "terminating": e.terminating},
            "nodeName": "node-1",
            "targetRef": {"kind": "Pod", "namespace": "inference", "name": e.pod, "uid": format!("uid-{}", e.pod)}
        })).collect::<Vec<_>>()
    })
}

impl KubeApi {
    pub async fn start() -> KubeApi {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (changed, _) = broadcast::channel(1024);
        let shared = Shared {
            state: Arc::new(Mutex::new(ApiState {
                rv: 1000,
                oldest: 0,
                ..ApiState::default()
            })),
            changed,
        };
        let app = axum::Router::new()
            .route(
                "/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices",
                axum::routing::get(endpointslices),
            )
            .route("/api/v1/namespaces/{ns}/pods", axum::routing::get(pods))
            .route(
                "/api/v1/namespaces/{ns}/pods/{name}",
                axum::routing::patch(patch_pod),
            )
            .route(
                "/api/v1/namespaces/{ns}/pods/{name}/status",
                axum::routing::patch(patch_pod_status),
            )
            .with_state(shared.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: double\n  cluster:\n    server: {url}\ncontexts:\n- name: double\n  context:\n    cluster: double\n    user: nobody\ncurrent-context: double\nusers:\n- name: nobody\n  user: {{}}\n"
            ),
        )
        .unwrap();
        KubeApi {
            url,
            kubeconfig,
            shared,
            _dir: dir,
        }
    }

    /// Creates or replaces a slice (ADDED or MODIFIED).
    pub fn apply(&self, namespace: &str, mut object: Value) {
        let mut s = self.shared.state.lock().unwrap();
        s.rv += 1;
        let rv = s.rv;
        object["metadata"]["namespace"] = json!(namespace);
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        object["metadata"]["uid"] = json!(format!("slice-{}", object["metadata"]["name"]));
        let name = object["metadata"]["name"].as_str().unwrap().to_string();
        let kind = if s
            .slices
            .insert((namespace.into(), name), object.clone())
            .is_some()
        {
            "MODIFIED"
        } else {
            "ADDED"
        };
        s.events.push((rv, namespace.into(), kind, object, SLICES));
        drop(s);
        let _ = self.shared.changed.send(());
    }

    pub fn delete(&self, namespace: &str, name: &str) {
        let mut s = self.shared.state.lock().unwrap();
        let Some(mut object) = s.slices.remove(&(namespace.into(), name.into())) else {
            return;
        };
        s.rv += 1;
        let rv = s.rv;
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        s.events
            .push((rv, namespace.into(), "DELETED", object, SLICES));
        drop(s);
        let _ = self.shared.changed.send(());
    }

    /// Denies list and watch in `namespace`, as RBAC does without a Role for it.
    pub fn forbid(&self, namespace: &str) {
        self.shared
            .state
            .lock()
            .unwrap()
            .forbidden
            .insert(namespace.into());
    }

    /// Denies patching pods in `namespace`, as RBAC does without a Role granting it.
    pub fn forbid_patch(&self, namespace: &str) {
        self.shared
            .state
            .lock()
            .unwrap()
            .patch_forbidden
            .insert(namespace.into());
    }

    /// Creates or replaces pod `name` (ADDED or MODIFIED): running, its spec listing the
    /// readiness gate `keda-gpu-scaler/serving` when `gated`, with no condition of that gate.
    pub fn pod(&self, namespace: &str, name: &str, gated: bool) {
        let mut s = self.shared.state.lock().unwrap();
        if !gated {
            s.ungated.insert((namespace.into(), name.into()));
        }
        let object = pod_object(&s, namespace, name);
        emit_pod(&mut s, namespace, name, object);
        drop(s);
        let _ = self.shared.changed.send(());
    }

    /// Denies listing and watching pods in `namespace`.
    pub fn forbid_pods(&self, namespace: &str) {
        self.shared
            .state
            .lock()
            .unwrap()
            .pods_forbidden
            .insert(namespace.into());
    }

    /// Denies patching pods/status in `namespace`.
    pub fn forbid_status_patch(&self, namespace: &str) {
        self.shared
            .state
            .lock()
            .unwrap()
            .status_forbidden
            .insert(namespace.into());
    }

    /// Serves `pod` with no readiness gate in its spec.
    pub fn without_gate(&self, namespace: &str, pod: &str) {
        self.shared
            .state
            .lock()
            .unwrap()
            .ungated
            .insert((namespace.into(), pod.into()));
    }

    /// PATCH requests on pods' status so far: (namespace, pod, content type, body).
    pub fn status_patches(&self) -> Vec<(String, String, String, Value)> {
        self.shared.state.lock().unwrap().status_patches.clone()
    }

    /// The status of condition `kind` on a pod as patched ("True", "False"), if ever.
    pub fn condition(&self, namespace: &str, pod: &str, kind: &str) -> Option<String> {
        let s = self.shared.state.lock().unwrap();
        let c = s
            .conditions
            .get(&(namespace.into(), pod.into()))?
            .get(kind)?;
        c["status"].as_str().map(str::to_string)
    }

    /// PATCH requests on pods so far: (namespace, pod, content type, body).
    pub fn patches(&self) -> Vec<(String, String, String, Value)> {
        self.shared.state.lock().unwrap().patches.clone()
    }

    /// A pod's annotations as patched so far (null when never patched).
    pub fn annotations(&self, namespace: &str, pod: &str) -> Value {
        self.shared
            .state
            .lock()
            .unwrap()
            .annotations
            .get(&(namespace.into(), pod.into()))
            .cloned()
            .unwrap_or(Value::Null)
    }

    /// Forgets every event so far (etcd compaction) and ends every open watch: a client that
    /// watches again from its last resourceVersion gets 410 Gone and must list again.
    pub fn compact_and_drop_watches(&self) {
        let mut s = self.shared.state.lock().unwrap();
        s.oldest = s.rv + 1;
        s.events.clear();
        s.generation += 1;
        drop(s);
        let _ = self.shared.changed.send(());
    }

    /// Watch streams open now (a client that stops watching closes its stream).
    pub fn open_watches(&self) -> usize {
        self.shared.state.lock().unwrap().open_watches
    }

    /// Requests seen so far whose text starts with `prefix` ("list inference", "watch").
    pub fn requests(&self, prefix: &str) -> Vec<String> {
        self.shared
            .state
            .lock()
            .unwrap()
            .requests
            .iter()
            .filter(|r| r.starts_with(prefix))
            .cloned()
            .collect()
    }
}

fn status(code: u16, reason: &str, message: String) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "details": {"group": "discovery.k8s.io", "kind": "endpointslices"},
        "code": code
    })
}

const SLICES: &str = "endpointslices";
const PODS: &str = "pods";

async fn endpointslices(
    State(shared): State<Shared>,
    Path(ns): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    list_watch(shared, ns, q, SLICES).await
}

async fn pods(
    State(shared): State<Shared>,
    Path(ns): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    list_watch(shared, ns, q, PODS).await
}

/// A list or a watch of `resource` (EndpointSlices or pods) in `ns`, as the API server answers.
async fn list_watch(
    shared: Shared,
    ns: String,
    q: BTreeMap<String, String>,
    resource: &'static str,
) -> Response {
    let watch = q.get("watch").is_some_and(|w| w == "true" || w == "1");
    let mut s = shared.state.lock().unwrap();
    let rv: u64 = q
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    // Slices' requests read "list <ns>" and "watch <ns> <rv>"; pods' "list-pods <ns>" ...
    let tag = if resource == PODS { "-pods" } else { "" };
    s.requests.push(if watch {
        format!("watch{tag} {ns} {rv}")
    } else {
        format!("list{tag} {ns}")
    });
    let denied = if resource == PODS {
        s.pods_forbidden.contains(&ns)
    } else {
        s.forbidden.contains(&ns)
    };
    if denied {
        let verb = if watch { "watch" } else { "list" };
        let (full, group) = if resource == PODS {
            ("pods", "")
        } else {
            ("endpointslices.discovery.k8s.io", "discovery.k8s.io")
        };
        let body = status(
            403,
            "Forbidden",
            format!("{full} is forbidden: User \"system:serviceaccount:keda:keda-gpu-scaler\" cannot {verb} resource \"{resource}\" in API group \"{group}\" in the namespace \"{ns}\""),
        );
        return (StatusCode::FORBIDDEN, axum::Json(body)).into_response();
    }
    if !watch {
        let store = if resource == PODS { &s.pods } else { &s.slices };
        let items: Vec<Value> = store
            .iter()
            .filter(|((n, _), _)| n == &ns)
            .map(|(_, v)| v.clone())
            .collect();
        let (api_version, kind) = if resource == PODS {
            ("v1", "PodList")
        } else {
            ("discovery.k8s.io/v1", "EndpointSliceList")
        };
        let body = json!({
            "apiVersion": api_version,
            "kind": kind,
            "metadata": {"resourceVersion": s.rv.to_string()},
            "items": items
        });
        return axum::Json(body).into_response();
    }
    // A watch: events after `rv`, then new ones as they come, until timeoutSeconds (capped so
    // the test's streams end by themselves) or until the test drops every watch.
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .unwrap_or(60)
        .min(60);
    let generation = s.generation;
    let expired = rv < s.oldest;
    drop(s);
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(256);
    let mut changed = shared.changed.subscribe();
    tokio::spawn(async move {
        let line = |kind: &str, object: &Value| {
            Ok(Bytes::from(format!(
                "{}\n",
                json!({"type": kind, "object": object})
            )))
        };
        if expired {
            let gone = status(
                410,
                "Expired",
                format!("too old resource version: {rv} (compacted)"),
            );
            let _ = tx.send(line("ERROR", &gone)).await;
            return;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
        let mut last = rv;
        shared.state.lock().unwrap().open_watches += 1;
        // Counted down however the stream ends.
        struct Open(Arc<Mutex<ApiState>>);
        impl Drop for Open {
            fn drop(&mut self) {
                self.0.lock().unwrap().open_watches -= 1;
            }
        }
        let _open = Open(shared.state.clone());
        loop {
            let (pending, ended) = {
                let s = shared.state.lock().unwrap();
                let pending: Vec<(u64, &'static str, Value)> = s
                    .events
                    .iter()
                    .filter(|(v, n, _, _, r)| *v > last && n == &ns && *r == resource)
                    .map(|(v, _, k, o, _)| (*v, *k, o.clone()))
                    .collect();
                (pending, s.generation != generation)
            };
            if ended {
                return;
            }
            for (v, kind, object) in pending {
                if tx.send(line(kind, &object)).await.is_err() {
                    return;
                }
                last = v;
            }
            tokio::select! {
                _ = changed.recv() => {}
                _ = tokio::time::sleep_until(deadline) => return,
                _ = tx.closed() => return,
            }
        }
    });
    Response::builder()
        .header("content-type", "application/json")
        .body(Body::from_stream(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        ))
        .unwrap()
}

/// A pod PATCH, recorded; merge patches of `metadata.annotations` are applied the way the API
/// server applies a JSON merge patch to a map (a null value removes the key).
async fn patch_pod(
    State(shared): State<Shared>,
    Path((ns, name)): Path<(String, String)>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    let (content_type, patch) = read_patch(&headers, &body);
    let mut s = shared.state.lock().unwrap();
    s.requests.push(format!("patch {ns} {name}"));
    s.patches
        .push((ns.clone(), name.clone(), content_type, patch.clone()));
    if s.patch_forbidden.contains(&ns) {
        let mut body = status(
            403,
            "Forbidden",
            format!("pods \"{name}\" is forbidden: User \"system:serviceaccount:keda:keda-gpu-scaler\" cannot patch resource \"pods\" in API group \"\" in the namespace \"{ns}\""),
        );
        body["details"] = json!({"name": name, "kind": "pods"});
        return (StatusCode::FORBIDDEN, axum::Json(body)).into_response();
    }
    let annotations = s
        .annotations
        .entry((ns.clone(), name.clone()))
        .or_insert_with(|| json!({}));
    if let Some(map) = patch["metadata"]["annotations"].as_object() {
        for (k, v) in map {
            if v.is_null() {
                annotations.as_object_mut().unwrap().remove(k);
            } else {
                annotations[k] = v.clone();
            }
        }
    }
    let pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "annotations": annotations.clone()},
        "spec": {"containers": [{"name": "engine", "image": "vllm/vllm-openai"}]}
    });
    axum::Json(pod).into_response()
}

/// A pod status PATCH, recorded; a strategic merge patch of `status.conditions` is applied the
/// way the API server merges that list (by `type`). The answer is the pod, whose spec lists the
/// readiness gate `keda-gpu-scaler/serving` unless the test said otherwise.
async fn patch_pod_status(
    State(shared): State<Shared>,
    Path((ns, name)): Path<(String, String)>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    let (content_type, patch) = read_patch(&headers, &body);
    let mut s = shared.state.lock().unwrap();
    s.requests.push(format!("patch-status {ns} {name}"));
    s.status_patches.push((
        ns.clone(),
        name.clone(),
        content_type.clone(),
        patch.clone(),
    ));
    if s.status_forbidden.contains(&ns) {
        let mut body = status(
            403,
            "Forbidden",
            format!("pods \"{name}\" is forbidden: User \"system:serviceaccount:keda:keda-gpu-scaler\" cannot patch resource \"pods/status\" in API group \"\" in the namespace \"{ns}\""),
        );
        body["details"] = json!({"name": name, "kind": "pods"});
        return (StatusCode::FORBIDDEN, axum::Json(body)).into_response();
    }
    if content_type != "application/strategic-merge-patch+json" {
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            axum::Json(status(
                415,
                "UnsupportedMediaType",
                format!("{content_type} is not supported here"),
            )),
        )
            .into_response();
    }
    if !s.pods.contains_key(&(ns.clone(), name.clone())) {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(status(
                404,
                "NotFound",
                format!("pods \"{name}\" not found"),
            )),
        )
            .into_response();
    }
    let conditions = s.conditions.entry((ns.clone(), name.clone())).or_default();
    for c in patch["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if let Some(kind) = c["type"].as_str() {
            conditions.insert(kind.to_string(), c.clone());
        }
    }
    let pod = pod_object(&s, &ns, &name);
    emit_pod(&mut s, &ns, &name, pod.clone());
    drop(s);
    let _ = shared.changed.send(());
    axum::Json(pod).into_response()
}

/// Pod `name` as the API serves it now: its spec's readiness gate (unless the test removed
/// it) and the conditions patched so far.
fn pod_object(s: &ApiState, ns: &str, name: &str) -> Value {
    let key = (ns.to_string(), name.to_string());
    let gates = if s.ungated.contains(&key) {
        json!([])
    } else {
        json!([{"conditionType": "keda-gpu-scaler/serving"}])
    };
    let listed: Vec<Value> = s
        .conditions
        .get(&key)
        .map(|c| c.values().cloned().collect())
        .unwrap_or_default();
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "uid": format!("pod-{name}")},
        "spec": {
            "containers": [{"name": "engine", "image": "vllm/vllm-openai"}],
            "readinessGates": gates
        },
        "status": {"phase": "Running", "conditions": listed}
    })
}

/// Stores pod `name` and records its ADDED or MODIFIED event.
fn emit_pod(s: &mut ApiState, ns: &str, name: &str, mut object: Value) {
    s.rv += 1;
    let rv = s.rv;
    object["metadata"]["resourceVersion"] = json!(rv.to_string());
    let kind = if s
        .pods
        .insert((ns.into(), name.into()), object.clone())
        .is_some()
    {
        "MODIFIED"
    } else {
        "ADDED"
    };
    s.events.push((rv, ns.into(), kind, object, PODS));
}

/// A PATCH request's content type and JSON body (null when the body is not JSON).
fn read_patch(headers: &axum::http::HeaderMap, body: &Bytes) -> (String, Value) {
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    (
        content_type,
        serde_json::from_slice(body).unwrap_or(Value::Null),
    )
}
