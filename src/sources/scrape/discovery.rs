//! Kubernetes discovery for `source=scrape` with `service`: the pods behind a Service, from its
//! EndpointSlices.
//!
//! One watcher per namespace, shared by every ScaledObject in it and started when the first one
//! asks, keeps a small copy of the namespace's EndpointSlices (kube-rs's watcher lists, watches,
//! and lists again after a 410 Gone). Resolving a Service to the URLs to scrape and the counts of
//! starting and terminating pods is pure (`resolve`), so it is tested without a cluster.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Patch, PatchParams};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;

use crate::spec::{PortRef, ServiceSpec, MAX_ENDPOINTS};

/// The label EndpointSlice controllers set to the owning Service's name.
const SERVICE_LABEL: &str = "kubernetes.io/service-name";
/// Most namespaces watched at once: each is one list and one open watch on the API server, and
/// the namespaces come from whoever calls the scaler.
pub const MAX_WATCHED_NAMESPACES: usize = 1000;
/// How long a failure to build the Kubernetes client is remembered before trying again.
const CLIENT_RETRY: Duration = Duration::from_secs(30);

/// Discovery settings: the `[kubernetes]` section, where `service` triggers discover their pods.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DiscoverySettings {
    /// Namespaces whose EndpointSlices may be watched, comma-separated; None (blank): any
    /// (needs a ClusterRole).
    #[serde(
        serialize_with = "namespaces::write",
        deserialize_with = "namespaces::read"
    )]
    pub namespaces: Option<BTreeSet<String>>,
    /// A kubeconfig file to use; None: in-cluster configuration, else `KUBECONFIG`.
    #[serde(
        deserialize_with = "crate::setting::path",
        skip_serializing_if = "Option::is_none"
    )]
    pub kubeconfig: Option<PathBuf>,
}

/// `kubernetes.namespaces` as the settings spell it: one comma-separated string.
mod namespaces {
    use std::collections::BTreeSet;

    use crate::setting;

    pub fn read<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Option<BTreeSet<String>>, D::Error> {
        setting::parsed(
            d,
            "comma-separated namespace names (a-z, 0-9, '-'), or empty for any namespace",
            |text| {
                let names = setting::comma_items(text)
                    .map(|ns| super::is_namespace(ns).then(|| ns.to_string()))
                    .collect::<Option<BTreeSet<String>>>()?;
                Some((!names.is_empty()).then_some(names))
            },
        )
    }

    pub fn write<S: serde::Serializer>(
        names: &Option<BTreeSet<String>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        setting::comma_list(names.iter().flatten(), s)
    }
}

/// A namespace name: a DNS label (a-z, 0-9, '-', at most 63 characters).
fn is_namespace(ns: &str) -> bool {
    ns.len() <= 63
        && ns
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && ns.starts_with(|c: char| c.is_ascii_alphanumeric())
        && ns.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// Why a Service could not be resolved to endpoints.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DiscoveryError {
    #[error("namespace {namespace} is not among the namespaces this scaler watches ({allowed}; setting kubernetes.namespaces)")]
    NamespaceNotWatched { namespace: String, allowed: String },
    #[error("no Kubernetes API: {0}")]
    NoClient(String),
    // The hint comes before the API's own message, which can be long: notes are cut at a bound.
    #[error("the scaler is not allowed to list EndpointSlices in namespace {namespace}; grant list and watch on endpointslices.discovery.k8s.io there (chart value discovery.namespaces, or a cluster-wide grant). HTTP 403: {message}")]
    Forbidden { namespace: String, message: String },
    #[error("the scaler is not allowed to list pods in namespace {namespace}, which podReadinessGate reads; grant list and watch on pods there (chart value podReadinessGate.enabled), or remove podReadinessGate. HTTP 403: {message}")]
    PodsForbidden { namespace: String, message: String },
    #[error("EndpointSlice watch in namespace {namespace} failed: {message}")]
    Watch { namespace: String, message: String },
    #[error("{MAX_WATCHED_NAMESPACES} namespaces are watched already; namespace {0} is not (restrict the namespaces with kubernetes.namespaces, or look for a caller inventing them)")]
    TooManyNamespaces(String),
    #[error("waiting for the first EndpointSlice list of namespace {0}")]
    Syncing(String),
    #[error("Service {namespace}/{service} has no EndpointSlices: check that it exists and has a selector")]
    NoSlices { namespace: String, service: String },
    #[error(
        "Service {namespace}/{service} has ports {ports}; set port to the one serving metrics"
    )]
    AmbiguousPort {
        namespace: String,
        service: String,
        ports: String,
    },
    #[error("Service {namespace}/{service} has no port named {port} (its ports: {ports})")]
    NoSuchPort {
        namespace: String,
        service: String,
        port: String,
        ports: String,
    },
}

/// Why pod deletion costs could not be written.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DeletionCostError {
    #[error("the scaler is not allowed to patch pods in namespace {namespace}; grant patch on pods there (chart value podDeletionCost.enabled, with discovery.namespaces), or remove podDeletionCost. HTTP 403: {message}")]
    Forbidden { namespace: String, message: String },
    #[error("writing pod deletion costs failed: {0}")]
    Api(String),
}

/// Why a readiness-gate condition could not be written (`podReadinessGate`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GateError {
    #[error("the scaler is not allowed to patch pods/status in namespace {namespace}; grant patch on pods/status there (chart value podReadinessGate.enabled, with discovery.namespaces), or remove podReadinessGate. HTTP 403: {message}")]
    Forbidden { namespace: String, message: String },
    #[error("pod {namespace}/{pod} does not list readinessGates conditionType {gate}, so taking it out of service would not stop its traffic; add it to the pod template (docs/deploy.md), or remove podReadinessGate")]
    NoGate {
        namespace: String,
        pod: String,
        gate: &'static str,
    },
    #[error("writing readiness-gate conditions failed: {0}")]
    Api(String),
}

/// A Service resolved to what to scrape.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Resolved {
    /// One URL per ready endpoint (a replica serving traffic), sorted.
    pub urls: Vec<String>,
    /// The pod behind each of `urls`, where its EndpointSlice names one in the Service's own
    /// namespace.
    pub pods: Vec<Option<String>>,
    /// Endpoints not ready and not terminating: replicas starting (or failing readiness).
    pub starting: u32,
    /// Endpoints terminating: replicas draining, not scraped.
    pub terminating: u32,
    /// Something worth telling the operator (truncation, a broken watch serving old data).
    pub note: Option<String>,
    /// Pods (or addresses, where a slice names no pod) starting and ready, for the cold-start
    /// measurement.
    pub starting_keys: Vec<String>,
    pub ready_keys: Vec<String>,
    /// Median seconds from a pod's first sight not ready to ready over the last hour, as this
    /// scaler watched it; None before it has seen one start.
    pub cold_start_s: Option<f64>,
    /// Pods taken out of service (`podReadinessGate`): (pod, URL, seconds out). Neither
    /// scraped for the signals nor counted as starting, but read to tell when they have
    /// finished.
    pub held: Vec<(String, String, f64)>,
    /// Pods not ready whose readiness-gate condition this scaler has not set yet
    /// (`podReadinessGate`: a pod whose template lists the gate is not ready until it is).
    pub unapproved: Vec<String>,
    /// Why the gate's view is not known (`podReadinessGate` before the namespace's first pod
    /// list, or without the grant to read pods): nothing is drained or let in meanwhile.
    pub gates_unknown: Option<String>,
}

/// What the store keeps of one EndpointSlice.
#[derive(Clone, Debug, PartialEq)]
pub struct Slice {
    pub service: String,
    pub ipv6: bool,
    /// (port name, "" when unnamed; number).
    pub ports: Vec<(String, u16)>,
    pub endpoints: Vec<Endpoint>,
}

/// One endpoint of a slice, with its conditions read the way the API documents them.
#[derive(Clone, Debug, PartialEq)]
pub struct Endpoint {
    pub address: String,
    /// The pod behind it, which identifies it across address families.
    pub pod: Option<String>,
    pub ready: bool,
    pub terminating: bool,
}

impl Slice {
    /// The parts of an EndpointSlice that resolving needs; None for slices of no Service, or of
    /// FQDN addresses.
    pub fn from_api(s: &EndpointSlice) -> Option<Slice> {
        let service = s.metadata.labels.as_ref()?.get(SERVICE_LABEL)?.clone();
        let ipv6 = match s.address_type.as_str() {
            "IPv4" => false,
            "IPv6" => true,
            _ => return None,
        };
        let ports = s
            .ports
            .iter()
            .flatten()
            .filter_map(|p| {
                let port = u16::try_from(p.port?).ok()?;
                Some((p.name.clone().unwrap_or_default(), port))
            })
            .collect();
        let endpoints = s
            .endpoints
            .iter()
            .filter_map(|e| {
                let c = e.conditions.as_ref();
                // Per the API: terminating nil means not terminating; ready nil means unknown,
                // read as ready, and serving (ready regardless of terminating) stands in for it
                // when only serving is set. A terminating endpoint takes no new work whatever
                // serving says (it may still be draining), so it is counted, not scraped.
                let terminating = c.and_then(|c| c.terminating).unwrap_or(false);
                let ready = c.and_then(|c| c.ready.or(c.serving)).unwrap_or(true) && !terminating;
                // A reference into another namespace is not this Service's pod (the deletion
                // cost is written only to pods of the ScaledObject's own namespace).
                let pod = e
                    .target_ref
                    .as_ref()
                    .filter(|r| r.kind.as_deref() == Some("Pod"))
                    .filter(|r| r.namespace.is_none() || r.namespace == s.metadata.namespace)
                    .and_then(|r| r.name.clone());
                Some(Endpoint {
                    address: e.addresses.first()?.clone(),
                    pod,
                    ready,
                    terminating,
                })
            })
            .collect();
        Some(Slice {
            service,
            ipv6,
            ports,
            endpoints,
        })
    }
}

/// A namespace's slices, indexed by Service so resolving one reads only its own slices however
/// many others the namespace holds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Store {
    by_service: HashMap<String, BTreeMap<String, Slice>>,
    /// Slice name -> the Service it was filed under.
    service_of: HashMap<String, String>,
}

impl Store {
    /// Adds or replaces slice `name`; None (a slice of no Service) removes it.
    pub fn apply(&mut self, name: String, slice: Option<Slice>) {
        self.remove(&name);
        if let Some(slice) = slice {
            self.service_of.insert(name.clone(), slice.service.clone());
            self.by_service
                .entry(slice.service.clone())
                .or_default()
                .insert(name, slice);
        }
    }

    pub fn remove(&mut self, name: &str) {
        if let Some(service) = self.service_of.remove(name) {
            if let Some(slices) = self.by_service.get_mut(&service) {
                slices.remove(name);
                if slices.is_empty() {
                    self.by_service.remove(&service);
                }
            }
        }
    }

    /// The slices of Service `service`.
    pub fn service(&self, service: &str) -> impl Iterator<Item = &Slice> {
        self.by_service
            .get(service)
            .into_iter()
            .flat_map(|s| s.values())
    }

    pub fn len(&self) -> usize {
        self.service_of.len()
    }

    pub fn is_empty(&self) -> bool {
        self.service_of.is_empty()
    }
}

/// The URLs and counts for `svc` from a namespace's slices. An endpoint listed twice (a dual-stack
/// Service has an IPv4 and an IPv6 slice, and slices overlap while they are rewritten) counts
/// once: by its pod where known, preferring its IPv4 address.
pub fn resolve<'a>(
    svc: &ServiceSpec,
    slices: impl IntoIterator<Item = &'a Slice>,
    held: &BTreeMap<String, f64>,
) -> Result<Resolved, DiscoveryError> {
    let mut by_key: BTreeMap<String, (&Endpoint, bool, u16)> = BTreeMap::new();
    let mut any = false;
    for slice in slices.into_iter().filter(|s| s.service == svc.name) {
        any = true;
        if slice.endpoints.is_empty() {
            continue; // A Service scaled to zero has a slice with no ports and no endpoints.
        }
        let port = slice_port(svc, slice)?;
        for e in &slice.endpoints {
            let key = e.pod.clone().unwrap_or_else(|| e.address.clone());
            let replace = match by_key.get(&key) {
                None => true,
                Some((_, was_v6, _)) => *was_v6 && !slice.ipv6,
            };
            if replace {
                by_key.insert(key, (e, slice.ipv6, port));
            }
        }
    }
    if !any {
        return Err(DiscoveryError::NoSlices {
            namespace: svc.namespace.clone(),
            service: svc.name.clone(),
        });
    }
    let mut out = Resolved::default();
    let mut ready: Vec<(String, Option<String>)> = Vec::new();
    for (key, (e, ipv6, port)) in &by_key {
        let url = || {
            let host = if *ipv6 {
                format!("[{}]", e.address)
            } else {
                e.address.clone()
            };
            format!("http://{host}:{port}{}", svc.path)
        };
        let ours = e.pod.as_ref().and_then(|p| Some((p, *held.get(p)?)));
        if e.terminating {
            out.terminating += 1;
        } else if let Some((pod, out_s)) = ours {
            // Out of service by its condition: even while its slice still lists it ready (the
            // EndpointSlice controller follows within moments), it takes no new work.
            out.held.push((pod.clone(), url(), out_s));
        } else if !e.ready {
            out.starting += 1;
            out.starting_keys.push(key.clone());
        } else {
            out.ready_keys.push(key.clone());
            ready.push((url(), e.pod.clone()));
        }
    }
    out.held.truncate(MAX_ENDPOINTS);
    ready.sort();
    if ready.len() > MAX_ENDPOINTS {
        out.note = Some(format!(
            "Service {}/{} has {} ready endpoints; only the first {MAX_ENDPOINTS} are scraped",
            svc.namespace,
            svc.name,
            ready.len()
        ));
        ready.truncate(MAX_ENDPOINTS);
    }
    (out.urls, out.pods) = ready.into_iter().unzip();
    Ok(out)
}

fn slice_port(svc: &ServiceSpec, slice: &Slice) -> Result<u16, DiscoveryError> {
    let names = || {
        slice
            .ports
            .iter()
            .map(|(n, p)| {
                if n.is_empty() {
                    p.to_string()
                } else {
                    format!("{n} ({p})")
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    match &svc.port {
        // A number is the pod's port, whether or not the Service forwards it (metrics often sit
        // on a port of their own); the address is still one of this Service's pods.
        Some(PortRef::Number(n)) => Ok(*n),
        Some(PortRef::Name(name)) => slice
            .ports
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, p)| *p)
            .ok_or_else(|| DiscoveryError::NoSuchPort {
                namespace: svc.namespace.clone(),
                service: svc.name.clone(),
                port: name.clone(),
                ports: names(),
            }),
        None => match slice.ports.as_slice() {
            [(_, p)] => Ok(*p),
            _ => Err(DiscoveryError::AmbiguousPort {
                namespace: svc.namespace.clone(),
                service: svc.name.clone(),
                ports: if slice.ports.is_empty() {
                    "none".into()
                } else {
                    names()
                },
            }),
        },
    }
}

/// What a namespace watcher keeps of the objects it lists (EndpointSlices; pods for
/// `podReadinessGate`): only the parts resolving needs, by object name.
pub(super) trait Kept: Default + Send + Sync + 'static {
    type Object: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static;
    /// The kind, for logs and errors ("EndpointSlice", "Pod").
    const KIND: &'static str;
    fn keep(&mut self, name: String, object: &Self::Object);
    fn forget(&mut self, name: &str);
    fn count(&self) -> usize;
}

impl Kept for Store {
    type Object = EndpointSlice;
    const KIND: &'static str = "EndpointSlice";
    fn keep(&mut self, name: String, object: &EndpointSlice) {
        self.apply(name, Slice::from_api(object));
    }
    fn forget(&mut self, name: &str) {
        self.remove(name);
    }
    fn count(&self) -> usize {
        self.len()
    }
}

/// The state one namespace's watcher publishes.
#[derive(Default)]
pub(super) struct NamespaceState<S> {
    /// What the watcher keeps, once the first list completed.
    pub(super) items: RwLock<S>,
    pub(super) synced: RwLock<bool>,
    /// The latest watch failure, cleared by the next event that succeeds.
    pub(super) error: RwLock<Option<DiscoveryError>>,
}

struct Watch<S> {
    state: Arc<NamespaceState<S>>,
    task: tokio::task::AbortHandle,
}

/// The shared watchers and the Kubernetes client they use, both created on first need.
pub struct Discovery {
    settings: DiscoverySettings,
    client: tokio::sync::Mutex<Option<(Instant, Result<kube::Client, String>)>>,
    watches: Mutex<HashMap<String, Watch<Store>>>,
    /// Pod watchers, only in namespaces with a `podReadinessGate` trigger.
    pod_watches: Mutex<HashMap<String, Watch<super::gates::PodGates>>>,
    /// Cold starts measured per Service ("namespace/name"), for SLO mode's planning horizon.
    ready_timers: Mutex<HashMap<String, crate::score::ReadyTimer>>,
    /// Readiness-gate writes this process made recently, per namespace (`podReadinessGate`).
    recent_gates: Mutex<HashMap<String, super::gates::Recent>>,
    started: Instant,
}

impl Discovery {
    pub fn new(settings: DiscoverySettings) -> Self {
        Discovery {
            settings,
            client: tokio::sync::Mutex::new(None),
            watches: Mutex::new(HashMap::new()),
            pod_watches: Mutex::new(HashMap::new()),
            ready_timers: Mutex::new(HashMap::new()),
            recent_gates: Mutex::new(HashMap::new()),
            started: Instant::now(),
        }
    }

    /// The endpoints of `svc` as the namespace's watcher last saw them; starts that watcher on
    /// first use.
    pub async fn resolve(&self, svc: &ServiceSpec) -> Result<Resolved, DiscoveryError> {
        if let Some(allowed) = &self.settings.namespaces {
            if !allowed.contains(&svc.namespace) {
                return Err(DiscoveryError::NamespaceNotWatched {
                    namespace: svc.namespace.clone(),
                    allowed: allowed.iter().cloned().collect::<Vec<_>>().join(", "),
                });
            }
        }
        let state = self.watch(&svc.namespace).await?;
        let synced = *state.synced.read().unwrap_or_else(|p| p.into_inner());
        let error = state
            .error
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if !synced {
            return Err(error.unwrap_or_else(|| DiscoveryError::Syncing(svc.namespace.clone())));
        }
        let view = match svc.drain {
            Some(_) => Some(self.gate_view(svc, &state).await),
            None => None,
        };
        let slices = state.items.read().unwrap_or_else(|p| p.into_inner());
        let key = format!("{}/{}", svc.namespace, svc.name);
        let mut resolved = match view {
            Some(Ok(v)) => Resolved {
                unapproved: v.unapproved,
                ..resolve(svc, slices.service(&svc.name), &v.held)?
            },
            view => Resolved {
                gates_unknown: view.and_then(Result::err),
                ..resolve(svc, slices.service(&svc.name), &BTreeMap::new())?
            },
        };
        if let Some(e) = error {
            // The last list still stands; say that it may be old.
            resolved.note = Some(format!("{e}; serving the last EndpointSlices seen"));
        }
        let now = self.started.elapsed().as_secs_f64();
        let mut timers = self.ready_timers.lock().unwrap_or_else(|p| p.into_inner());
        let timer = timers.entry(key).or_default();
        timer.observe(
            now,
            resolved.starting_keys.iter().map(String::as_str),
            resolved.ready_keys.iter().map(String::as_str),
        );
        resolved.cold_start_s = timer.cold_start_s();
        Ok(resolved)
    }

    /// Writes each pod's deletion cost (`crate::deletion`) into its annotation, or removes it
    /// (None): a JSON merge patch of that one annotation, on pods of `svc`'s namespace that the Service's EndpointSlices
    /// list now (a name from anywhere else is refused without a request). Returns the pods
    /// written; stops at the first refusal, since the next pod would be refused the same way.
    pub async fn set_deletion_costs(
        &self,
        svc: &ServiceSpec,
        costs: &[(String, Option<i32>)],
    ) -> Result<crate::deletion::Writes, DeletionCostError> {
        let Some((listed, api)) = self
            .listed_pods_api(svc)
            .await
            .map_err(DeletionCostError::Api)?
        else {
            return Ok(Vec::new());
        };
        let mut written = Vec::new();
        for (pod, cost) in costs.iter().filter(|(pod, _)| listed.contains(pod)) {
            // A merge patch of the one annotation; null removes it.
            let patch = serde_json::json!({
                "metadata": {"annotations": {crate::deletion::ANNOTATION: cost.map(|c| c.to_string())}}
            });
            match api
                .patch(pod, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => written.push((pod.clone(), *cost)),
                Err(kube::Error::Api(s)) if s.code == 403 => {
                    return Err(DeletionCostError::Forbidden {
                        namespace: svc.namespace.clone(),
                        message: crate::text::bounded(&s.message, 300),
                    })
                }
                // Deleted since the slices were read: nothing to rank.
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => {
                    return Err(DeletionCostError::Api(crate::text::bounded(
                        &e.to_string(),
                        300,
                    )))
                }
            }
        }
        Ok(written)
    }

    /// The gate's view of `svc`'s pods (`crate::sources::scrape::gates::view`), or why it is
    /// not known yet.
    async fn gate_view(
        &self,
        svc: &ServiceSpec,
        slices: &NamespaceState<Store>,
    ) -> Result<super::gates::View, String> {
        let state = self
            .watch_pods(&svc.namespace)
            .await
            .map_err(|e| e.to_string())?;
        let synced = *state.synced.read().unwrap_or_else(|p| p.into_inner());
        if !synced {
            let error = state
                .error
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            return Err(error.map_or_else(
                || {
                    format!(
                        "waiting for the first pod list of namespace {}",
                        svc.namespace
                    )
                },
                |e| e.to_string(),
            ));
        }
        let pods = state.items.read().unwrap_or_else(|p| p.into_inner());
        let slices = slices.items.read().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let mut recent = self.recent_gates.lock().unwrap_or_else(|p| p.into_inner());
        let recent = recent.entry(svc.namespace.clone()).or_default();
        recent.prune(now);
        let unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        Ok(super::gates::view(
            slices.service(&svc.name).flat_map(|s| s.endpoints.iter()),
            &pods,
            recent,
            now,
            unix,
        ))
    }

    /// Sets each pod's readiness-gate condition (`crate::deletion::READINESS_GATE`): False
    /// takes it out of its Service, True lets it in. A strategic merge patch of that one
    /// condition on the pod's status, on pods of `svc`'s namespace that the Service's
    /// EndpointSlices list now (any other name is refused without a request). A pod taken out
    /// must list the gate in its spec, or its traffic would not stop: that is refused
    /// (`GateError::NoGate`) and the pod is let in again. Returns the writes acknowledged;
    /// stops at the first refusal.
    pub async fn set_gates(
        &self,
        svc: &ServiceSpec,
        gates: &[(String, bool)],
    ) -> Result<Vec<(String, bool)>, GateError> {
        let Some((listed, api)) = self.listed_pods_api(svc).await.map_err(GateError::Api)? else {
            return Ok(Vec::new());
        };
        let mut written = Vec::new();
        for (pod, serving) in gates.iter().filter(|(pod, _)| listed.contains(pod)) {
            let patch = gate_patch(*serving);
            let result = api
                .patch_status(pod, &PatchParams::default(), &Patch::Strategic(&patch))
                .await;
            match result {
                Ok(p) => {
                    let gated = p.spec.as_ref().is_some_and(|s| {
                        s.readiness_gates
                            .iter()
                            .flatten()
                            .any(|g| g.condition_type == crate::deletion::READINESS_GATE)
                    });
                    if !serving && !gated {
                        // The condition means nothing to this pod: put it back as it was.
                        let _ = api
                            .patch_status(
                                pod,
                                &PatchParams::default(),
                                &Patch::Strategic(&gate_patch(true)),
                            )
                            .await;
                        return Err(GateError::NoGate {
                            namespace: svc.namespace.clone(),
                            pod: pod.clone(),
                            gate: crate::deletion::READINESS_GATE,
                        });
                    }
                    self.recent_gates
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .entry(svc.namespace.clone())
                        .or_default()
                        .wrote(pod, *serving, Instant::now());
                    written.push((pod.clone(), *serving));
                }
                Err(kube::Error::Api(s)) if s.code == 403 => {
                    return Err(GateError::Forbidden {
                        namespace: svc.namespace.clone(),
                        message: crate::text::bounded(&s.message, 300),
                    })
                }
                // Deleted since the slices were read.
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(GateError::Api(crate::text::bounded(&e.to_string(), 300))),
            }
        }
        Ok(written)
    }

    /// The pods of `svc` that may be written to (those its EndpointSlices list now) and the pod
    /// API of its namespace; None when it lists none, so nothing is asked of the API server.
    async fn listed_pods_api(
        &self,
        svc: &ServiceSpec,
    ) -> Result<Option<(BTreeSet<String>, kube::Api<Pod>)>, String> {
        let listed = self.listed_pods(svc);
        if listed.is_empty() {
            return Ok(None);
        }
        let client = self.client().await.map_err(|e| e.to_string())?;
        Ok(Some((
            listed,
            kube::Api::namespaced(client, &svc.namespace),
        )))
    }

    /// The pods `svc`'s EndpointSlices list now (none before its namespace is watched).
    fn listed_pods(&self, svc: &ServiceSpec) -> BTreeSet<String> {
        let state = self
            .watches
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&svc.namespace)
            .map(|w| w.state.clone());
        let Some(state) = state else {
            return BTreeSet::new();
        };
        let slices = state.items.read().unwrap_or_else(|p| p.into_inner());
        slices
            .service(&svc.name)
            .flat_map(|s| s.endpoints.iter())
            .filter_map(|e| e.pod.clone())
            .collect()
    }

    /// Stops the watchers of namespaces no ScaledObject reads any more.
    pub fn retain(&self, namespaces: &BTreeSet<String>) {
        let mut watches = self.watches.lock().unwrap_or_else(|p| p.into_inner());
        self.ready_timers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|key, _| {
                key.split('/')
                    .next()
                    .is_some_and(|ns| namespaces.contains(ns))
            });
        watches.retain(|ns, w| {
            let keep = namespaces.contains(ns);
            if !keep {
                w.task.abort();
                tracing::info!(namespace = %ns, "stopped EndpointSlice watch");
            }
            keep
        });
        self.pod_watches
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|ns, w| {
                let keep = namespaces.contains(ns);
                if !keep {
                    w.task.abort();
                }
                keep
            });
    }

    /// Namespaces watched now.
    pub fn watched(&self) -> Vec<String> {
        let watches = self.watches.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<String> = watches.keys().cloned().collect();
        v.sort();
        v
    }

    async fn watch(&self, namespace: &str) -> Result<Arc<NamespaceState<Store>>, DiscoveryError> {
        self.watch_in(&self.watches, namespace).await
    }

    /// The pods of `namespace` as its pod watcher last saw them (`podReadinessGate`); starts
    /// that watcher on first use.
    pub(super) async fn watch_pods(
        &self,
        namespace: &str,
    ) -> Result<Arc<NamespaceState<super::gates::PodGates>>, DiscoveryError> {
        self.watch_in(&self.pod_watches, namespace).await
    }

    async fn watch_in<S: Kept>(
        &self,
        map: &Mutex<HashMap<String, Watch<S>>>,
        namespace: &str,
    ) -> Result<Arc<NamespaceState<S>>, DiscoveryError> {
        if let Some(w) = map.lock().unwrap_or_else(|p| p.into_inner()).get(namespace) {
            return Ok(w.state.clone());
        }
        let client = self.client().await?;
        let mut watches = map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(w) = watches.get(namespace) {
            return Ok(w.state.clone());
        }
        if watches.len() >= MAX_WATCHED_NAMESPACES {
            return Err(DiscoveryError::TooManyNamespaces(namespace.to_string()));
        }
        let state = Arc::new(NamespaceState::<S>::default());
        let task = tokio::spawn(run_watch(client, namespace.to_string(), state.clone()));
        tracing::info!(namespace, kind = S::KIND, "started watch");
        watches.insert(
            namespace.to_string(),
            Watch {
                state: state.clone(),
                task: task.abort_handle(),
            },
        );
        Ok(state)
    }

    async fn client(&self) -> Result<kube::Client, DiscoveryError> {
        let mut cached = self.client.lock().await;
        if let Some((at, result)) = &*cached {
            if result.is_ok() || at.elapsed() < CLIENT_RETRY {
                return result.clone().map_err(DiscoveryError::NoClient);
            }
        }
        let result = build_client(&self.settings).await;
        if let Err(e) = &result {
            tracing::warn!(error = %e, "no Kubernetes API for service discovery");
        }
        *cached = Some((Instant::now(), result.clone()));
        result.map_err(DiscoveryError::NoClient)
    }
}

impl Drop for Discovery {
    fn drop(&mut self) {
        for w in self
            .pod_watches
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .values()
        {
            w.task.abort();
        }
        for w in self
            .watches
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .values()
        {
            w.task.abort();
        }
    }
}

/// The strategic merge patch that sets the readiness-gate condition (merged by `type` into the
/// pod's `status.conditions`, leaving the kubelet's own conditions alone).
fn gate_patch(serving: bool) -> serde_json::Value {
    let (status, reason, message) = if serving {
        ("True", "Serving", "in service (keda-gpu-scaler)")
    } else {
        (
            "False",
            "DrainingForScaleDown",
            "taken out of service by keda-gpu-scaler to finish its requests before a scale-down",
        )
    };
    serde_json::json!({"status": {"conditions": [{
        "type": crate::deletion::READINESS_GATE,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": k8s_openapi::jiff::Timestamp::now().round(k8s_openapi::jiff::Unit::Second).map(|t| t.to_string()).ok(),
    }]}})
}

async fn build_client(settings: &DiscoverySettings) -> Result<kube::Client, String> {
    let config = match &settings.kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| format!("kubeconfig {}: {e}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| format!("kubeconfig {}: {e}", path.display()))?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| format!("neither in-cluster configuration nor a kubeconfig: {e}"))?,
    };
    kube::Client::try_from(config).map_err(|e| e.to_string())
}

/// Keeps `state` equal to the namespace's objects of `S`'s kind until aborted. kube-rs's
/// watcher lists, then watches from the list's resourceVersion, and starts over with a new list
/// when the API answers 410 Gone; errors back off (up to 30 s between tries) rather than spin.
async fn run_watch<S: Kept>(
    client: kube::Client,
    namespace: String,
    state: Arc<NamespaceState<S>>,
) {
    let api: kube::Api<S::Object> = kube::Api::namespaced(client, &namespace);
    let stream = watcher::watcher(api, watcher::Config::default()).default_backoff();
    futures_util::pin_mut!(stream);
    // Objects of a list in progress: the store is replaced whole when it completes, so a reader
    // never sees half a list.
    let mut listing: Option<S> = None;
    let set_error = |e: Option<DiscoveryError>| {
        *state.error.write().unwrap_or_else(|p| p.into_inner()) = e;
    };
    let name = |o: &S::Object| kube::Resource::meta(o).name.clone().unwrap_or_default();
    while let Some(event) = stream.next().await {
        match event {
            Ok(Event::Init) => listing = Some(S::default()),
            Ok(Event::InitApply(o)) => {
                if let Some(listing) = listing.as_mut() {
                    listing.keep(name(&o), &o);
                }
            }
            Ok(Event::InitDone) => {
                let items = listing.take().unwrap_or_default();
                tracing::debug!(namespace = %namespace, kind = S::KIND, count = items.count(), "listed");
                *state.items.write().unwrap_or_else(|p| p.into_inner()) = items;
                *state.synced.write().unwrap_or_else(|p| p.into_inner()) = true;
                set_error(None);
            }
            Ok(Event::Apply(o)) => {
                state
                    .items
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .keep(name(&o), &o);
                set_error(None);
            }
            Ok(Event::Delete(o)) => {
                state
                    .items
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .forget(&name(&o));
                set_error(None);
            }
            Err(e) => {
                let e = classify(&namespace, S::KIND, &e);
                tracing::warn!(namespace = %namespace, kind = S::KIND, error = %e, "watch");
                set_error(Some(e));
            }
        }
    }
}

/// A watcher error as the operator should read it: RBAC denials say what to grant.
fn classify(namespace: &str, kind: &str, e: &watcher::Error) -> DiscoveryError {
    let status = match e {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s))
        | watcher::Error::WatchError(s) => Some(s),
        _ => None,
    };
    match status {
        Some(s) if s.code == 403 && kind == "Pod" => DiscoveryError::PodsForbidden {
            namespace: namespace.to_string(),
            message: s.message.clone(),
        },
        Some(s) if s.code == 403 => DiscoveryError::Forbidden {
            namespace: namespace.to_string(),
            message: s.message.clone(),
        },
        _ => DiscoveryError::Watch {
            namespace: namespace.to_string(),
            message: match kind {
                "Pod" => format!("(pods) {e}"),
                _ => e.to_string(),
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(address: &str, pod: &str, ready: bool, terminating: bool) -> Endpoint {
        Endpoint {
            address: address.into(),
            pod: Some(pod.into()),
            ready,
            terminating,
        }
    }

    fn svc(port: Option<PortRef>) -> ServiceSpec {
        ServiceSpec {
            namespace: "inference".into(),
            name: "llm".into(),
            port,
            path: "/metrics".into(),
            deletion_cost: false,
            drain: None,
        }
    }

    fn slice(service: &str, ipv6: bool, ports: &[(&str, u16)], endpoints: Vec<Endpoint>) -> Slice {
        Slice {
            service: service.into(),
            ipv6,
            ports: ports.iter().map(|(n, p)| (n.to_string(), *p)).collect(),
            endpoints,
        }
    }

    #[test]
    fn ready_endpoints_are_scraped_and_the_others_counted() {
        let slices = [
            slice(
                "llm",
                false,
                &[("http", 8000)],
                vec![
                    ep("10.0.0.2", "llm-a", true, false),
                    ep("10.0.0.3", "llm-b", false, false),
                    ep("10.0.0.4", "llm-c", false, true),
                ],
            ),
            slice(
                "other",
                false,
                &[("http", 9000)],
                vec![ep("10.0.0.9", "x", true, false)],
            ),
        ];
        let r = resolve(&svc(None), &slices, &BTreeMap::new()).unwrap();
        assert_eq!(r.urls, ["http://10.0.0.2:8000/metrics"]);
        assert_eq!((r.starting, r.terminating), (1, 1));
        // Pods out of service (`podReadinessGate`) are read apart, even while still listed
        // ready, and count neither as serving nor as starting.
        let held = BTreeMap::from([("llm-a".to_string(), 12.0), ("llm-b".to_string(), 3.0)]);
        let r = resolve(&svc(None), &slices, &held).unwrap();
        assert!(r.urls.is_empty());
        assert_eq!((r.starting, r.terminating), (0, 1));
        assert_eq!(
            r.held,
            [
                (
                    "llm-a".to_string(),
                    "http://10.0.0.2:8000/metrics".to_string(),
                    12.0
                ),
                (
                    "llm-b".to_string(),
                    "http://10.0.0.3:8000/metrics".to_string(),
                    3.0
                ),
            ]
        );
    }

    #[test]
    fn dual_stack_counts_each_pod_once_on_ipv4() {
        let slices = [
            slice(
                "llm",
                true,
                &[("", 8000)],
                vec![ep("fd00::2", "llm-a", true, false)],
            ),
            slice(
                "llm",
                false,
                &[("", 8000)],
                vec![ep("10.0.0.2", "llm-a", true, false)],
            ),
            slice(
                "llm",
                true,
                &[("", 8000)],
                vec![ep("fd00::3", "llm-b", true, false)],
            ),
        ];
        let r = resolve(&svc(None), &slices, &BTreeMap::new()).unwrap();
        assert_eq!(
            r.urls,
            [
                "http://10.0.0.2:8000/metrics",
                "http://[fd00::3]:8000/metrics"
            ]
        );
    }

    #[test]
    fn ports_are_chosen_by_name_number_or_uniqueness() {
        let slices = [slice(
            "llm",
            false,
            &[("http", 8000), ("metrics", 8002)],
            vec![ep("10.0.0.2", "llm-a", true, false)],
        )];
        let by_name = resolve(
            &svc(Some(PortRef::Name("metrics".into()))),
            &slices,
            &BTreeMap::new(),
        )
        .unwrap();
        assert_eq!(by_name.urls, ["http://10.0.0.2:8002/metrics"]);
        let by_number =
            resolve(&svc(Some(PortRef::Number(9400))), &slices, &BTreeMap::new()).unwrap();
        assert_eq!(by_number.urls, ["http://10.0.0.2:9400/metrics"]);
        let err = resolve(&svc(None), &slices, &BTreeMap::new()).unwrap_err();
        assert!(
            err.to_string().contains("http (8000), metrics (8002)"),
            "{err}"
        );
        let err = resolve(
            &svc(Some(PortRef::Name("grpc".into()))),
            &slices,
            &BTreeMap::new(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("no port named grpc"), "{err}");
    }

    #[test]
    fn a_missing_service_and_an_empty_one_differ() {
        let err = resolve(&svc(None), &[], &BTreeMap::new()).unwrap_err();
        assert!(matches!(err, DiscoveryError::NoSlices { .. }), "{err}");
        let empty = [slice("llm", false, &[], vec![])];
        assert_eq!(
            resolve(&svc(None), &empty, &BTreeMap::new()).unwrap(),
            Resolved::default()
        );
    }

    #[test]
    fn the_store_files_slices_under_their_service_and_forgets_them() {
        let mut store = Store::default();
        let a = slice(
            "llm",
            false,
            &[("", 80)],
            vec![ep("10.0.0.2", "a", true, false)],
        );
        store.apply("llm-1".into(), Some(a.clone()));
        store.apply("embed-1".into(), Some(slice("embed", false, &[], vec![])));
        assert_eq!(store.service("llm").collect::<Vec<_>>(), [&a]);
        // A slice moved to another Service (or losing its label) leaves the old one.
        store.apply("llm-1".into(), Some(slice("chat", false, &[], vec![])));
        assert_eq!(store.service("llm").count(), 0);
        store.apply("chat-x".into(), None);
        store.remove("llm-1");
        store.remove("embed-1");
        assert!(store.is_empty() && store.by_service.is_empty(), "{store:?}");
    }

    #[test]
    fn api_slices_are_read_with_the_documented_condition_defaults() {
        let s: EndpointSlice = serde_json::from_value(serde_json::json!({
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {"name": "llm-abc", "labels": {"kubernetes.io/service-name": "llm"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8000, "protocol": "TCP"}],
            "endpoints": [
                {"addresses": ["10.0.0.2"], "targetRef": {"kind": "Pod", "name": "llm-a"}},
                {"addresses": ["10.0.0.3"], "conditions": {"ready": false, "serving": true, "terminating": true}},
                {"addresses": ["10.0.0.4"], "conditions": {"serving": false}},
                {"addresses": []}
            ]
        }))
        .unwrap();
        let slice = Slice::from_api(&s).unwrap();
        assert_eq!(slice.ports, [("http".to_string(), 8000)]);
        assert_eq!(
            slice.endpoints,
            [
                ep("10.0.0.2", "llm-a", true, false),
                Endpoint {
                    address: "10.0.0.3".into(),
                    pod: None,
                    ready: false,
                    terminating: true
                },
                Endpoint {
                    address: "10.0.0.4".into(),
                    pod: None,
                    ready: false,
                    terminating: false
                }
            ]
        );
        let mut fqdn = s.clone();
        fqdn.address_type = "FQDN".into();
        assert_eq!(Slice::from_api(&fqdn), None);
    }
}
