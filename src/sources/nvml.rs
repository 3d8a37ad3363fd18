//! `source=nvml`: the GPUs of the node the scaler runs on (a DaemonSet next to the GPUs).
//!
//! The NVML calls (`read_devices`) only collect `DeviceReading`s; `aggregate` turns them into
//! per-replica readings and is pure, so it is tested with recorded readings. Without an NVIDIA
//! driver the source reports itself unavailable, with the reason, on every ScaledObject using it;
//! the server keeps running.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use nvml_wrapper::Nvml;

use super::{Readings, SampleRequest, SignalReading, Source};
use crate::spec::{DeviceRef, MetricSource, NvmlSpec, ScalerSpec, SourceSpec};

/// How often a failed NVML initialisation is retried.
const RETRY_INIT: Duration = Duration::from_secs(30);

/// The pod a GPU process belongs to, when it could be told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    /// From `POD_NAMESPACE` in the process environment (downward API), when set.
    pub namespace: Option<String>,
    /// From `POD_NAME`, else `HOSTNAME` (a pod's hostname is its name).
    pub pod: String,
}

/// One device (a whole GPU, or one MIG instance) at one sampling.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceReading {
    /// Index of the (parent) GPU on the node.
    pub index: u32,
    /// `GPU-...`, or `MIG-...` for a MIG instance.
    pub uuid: String,
    /// UUID of the parent GPU for a MIG instance.
    pub parent_uuid: Option<String>,
    /// Percent busy; None where NVML does not report it (MIG instances).
    pub util_percent: Option<f64>,
    pub memory_used: u64,
    pub memory_total: u64,
    /// Owners of the processes on the device, where they could be told.
    pub owners: Vec<Owner>,
}

/// Why NVML gave nothing.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NvmlError {
    #[error("NVML unavailable (no NVIDIA driver on this node?): {0}")]
    Init(String),
    #[error("NVML read failed: {0}")]
    Read(String),
}

/// Per-replica readings of one spec from the node's devices, plus notes on what was left out.
///
/// A replica is a pod when the spec names pods (its devices are those running a process of that
/// pod), else one device. Utilisation is the mean over a replica's devices; memory is used over
/// total across them.
pub fn aggregate(spec: &ScalerSpec, devices: &[DeviceReading]) -> Readings {
    let SourceSpec::Nvml(n) = &spec.source else {
        return Readings::default();
    };
    let selected: Vec<&DeviceReading> = devices.iter().filter(|d| listed(n, d)).collect();
    let mut notes = Vec::new();
    if selected.is_empty() {
        notes.push(if devices.is_empty() {
            "NVML reports no GPU on this node".to_string()
        } else {
            format!(
                "none of the {} devices on this node matches devices={}",
                devices.len(),
                describe_devices(&n.devices)
            )
        });
    }
    let replicas: Vec<Vec<&DeviceReading>> = match &n.pods {
        None => selected.iter().map(|d| vec![*d]).collect(),
        Some((namespace, pods)) => {
            let re = regex::Regex::new(&pods.pattern()).ok();
            let matches = |o: &Owner| {
                o.namespace.as_ref().is_none_or(|ns| ns == namespace)
                    && re.as_ref().is_some_and(|r| r.is_match(&o.pod))
            };
            let mut by_pod: std::collections::BTreeMap<&str, Vec<&DeviceReading>> =
                Default::default();
            for d in &selected {
                for o in d.owners.iter().filter(|o| matches(o)) {
                    let devs = by_pod.entry(o.pod.as_str()).or_default();
                    if !devs.iter().any(|x| x.uuid == d.uuid) {
                        devs.push(d);
                    }
                }
            }
            if by_pod.is_empty() && !selected.is_empty() {
                notes.push(format!(
                    "no process of a pod matching {} in namespace {namespace} runs on this node's GPUs (owners are read from /proc: the scaler needs hostPID)",
                    pods.pattern()
                ));
            }
            by_pod.into_values().collect()
        }
    };
    let signals = spec
        .signals
        .iter()
        .map(|signal| {
            let pods: Vec<Option<f64>> = replicas
                .iter()
                .map(|devs| match &signal.metrics {
                    MetricSource::Memory(_) => memory_percent(devs),
                    _ => util_percent(devs),
                })
                .collect();
            let note = (!replicas.is_empty() && pods.iter().all(Option::is_none)).then(|| {
                match &signal.metrics {
                    MetricSource::Memory(_) => "NVML reports no memory for these devices".into(),
                    _ => "NVML reports no utilisation for these devices (MIG instances have none: use gpuMemoryTarget, or source=prometheus with DCGM_FI_PROF_GR_ENGINE_ACTIVE)".to_string(),
                }
            });
            SignalReading { pods, note }
        })
        .collect();
    Readings {
        signals,
        notes,
        ..Readings::default()
    }
}

fn listed(n: &NvmlSpec, d: &DeviceReading) -> bool {
    n.devices.is_empty()
        || n.devices.iter().any(|r| match r {
            DeviceRef::Index(i) => *i == d.index,
            DeviceRef::Uuid(u) => *u == d.uuid || d.parent_uuid.as_ref() == Some(u),
        })
}

fn describe_devices(devices: &[DeviceRef]) -> String {
    devices
        .iter()
        .map(|d| match d {
            DeviceRef::Index(i) => i.to_string(),
            DeviceRef::Uuid(u) => u.clone(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn util_percent(devs: &[&DeviceReading]) -> Option<f64> {
    let v: Vec<f64> = devs.iter().filter_map(|d| d.util_percent).collect();
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

fn memory_percent(devs: &[&DeviceReading]) -> Option<f64> {
    let used: u64 = devs.iter().map(|d| d.memory_used).sum();
    let total: u64 = devs.iter().map(|d| d.memory_total).sum();
    (total > 0).then(|| (used as f64 / total as f64 * 100.0).clamp(0.0, 100.0))
}

/// The owner named by a process environment (`/proc/<pid>/environ`: NUL-separated `K=V`).
pub fn owner_from_environ(environ: &[u8]) -> Option<Owner> {
    let mut pod_name = None;
    let mut hostname = None;
    let mut namespace = None;
    for entry in environ.split(|b| *b == 0) {
        let entry = String::from_utf8_lossy(entry);
        if let Some((k, v)) = entry.split_once('=') {
            match k {
                "POD_NAME" if !v.is_empty() => pod_name = Some(v.to_string()),
                "HOSTNAME" if !v.is_empty() => hostname = Some(v.to_string()),
                "POD_NAMESPACE" if !v.is_empty() => namespace = Some(v.to_string()),
                _ => {}
            }
        }
    }
    Some(Owner {
        namespace,
        pod: pod_name.or(hostname)?,
    })
}

fn owner_of(pid: u32) -> Option<Owner> {
    owner_from_environ(&std::fs::read(format!("/proc/{pid}/environ")).ok()?)
}

/// Reads every device (MIG instances instead of their parent when MIG is on). NVML calls block.
fn read_devices(nvml: &Nvml) -> Result<Vec<DeviceReading>, NvmlError> {
    let read = |e: nvml_wrapper::error::NvmlError| NvmlError::Read(e.to_string());
    let mut out = Vec::new();
    for index in 0..nvml.device_count().map_err(read)? {
        let gpu = nvml.device_by_index(index).map_err(read)?;
        let uuid = gpu.uuid().map_err(read)?;
        let mig = gpu.mig_mode().is_ok_and(|m| m.current == 1);
        let owners = |d: &nvml_wrapper::Device<'_>| -> Vec<Owner> {
            let mut procs = d.running_compute_processes().unwrap_or_default();
            procs.extend(d.running_graphics_processes().unwrap_or_default());
            procs.iter().filter_map(|p| owner_of(p.pid)).collect()
        };
        if mig {
            let count = gpu.mig_device_count().unwrap_or(0);
            for i in 0..count {
                let Ok(m) = gpu.mig_device_by_index(i) else {
                    continue;
                };
                let Ok(mem) = m.memory_info() else { continue };
                out.push(DeviceReading {
                    index,
                    uuid: m.uuid().unwrap_or_else(|_| format!("{uuid}/mig{i}")),
                    parent_uuid: Some(uuid.clone()),
                    util_percent: m.utilization_rates().ok().map(|u| f64::from(u.gpu)),
                    memory_used: mem.used,
                    memory_total: mem.total,
                    owners: owners(&m),
                });
            }
        } else {
            let mem = gpu.memory_info().map_err(read)?;
            out.push(DeviceReading {
                index,
                uuid: uuid.clone(),
                parent_uuid: None,
                util_percent: gpu.utilization_rates().ok().map(|u| f64::from(u.gpu)),
                memory_used: mem.used,
                memory_total: mem.total,
                owners: owners(&gpu),
            });
        }
    }
    Ok(out)
}

enum Handle {
    Ready(Arc<Nvml>),
    Failed { reason: String, at: Instant },
    Untried,
}

pub struct NvmlSource {
    handle: Mutex<Handle>,
}

impl Default for NvmlSource {
    fn default() -> Self {
        NvmlSource {
            handle: Mutex::new(Handle::Untried),
        }
    }
}

impl NvmlSource {
    /// NVML, initialised on first use and retried now and then after a failure.
    fn nvml(&self) -> Result<Arc<Nvml>, NvmlError> {
        let mut handle = self.handle.lock().unwrap_or_else(|p| p.into_inner());
        match &*handle {
            Handle::Ready(n) => return Ok(n.clone()),
            Handle::Failed { reason, at } if at.elapsed() < RETRY_INIT => {
                return Err(NvmlError::Init(reason.clone()))
            }
            _ => {}
        }
        match Nvml::init() {
            Ok(n) => {
                let n = Arc::new(n);
                *handle = Handle::Ready(n.clone());
                tracing::info!("NVML initialised");
                Ok(n)
            }
            Err(e) => {
                let reason = e.to_string();
                tracing::warn!(%reason, "NVML unavailable; source=nvml ScaledObjects get no data");
                *handle = Handle::Failed {
                    reason: reason.clone(),
                    at: Instant::now(),
                };
                Err(NvmlError::Init(reason))
            }
        }
    }

    /// Reads the node's devices, or says why it cannot.
    pub async fn devices(&self) -> Result<Vec<DeviceReading>, NvmlError> {
        let nvml = self.nvml()?;
        tokio::task::spawn_blocking(move || read_devices(&nvml))
            .await
            .map_err(|e| NvmlError::Read(e.to_string()))?
    }
}

impl Source for NvmlSource {
    fn sample<'a>(
        &'a self,
        requests: &'a [SampleRequest],
        _t: f64,
    ) -> BoxFuture<'a, Vec<Readings>> {
        Box::pin(async move {
            if requests.is_empty() {
                return Vec::new();
            }
            match self.devices().await {
                Ok(devices) => requests
                    .iter()
                    .map(|r| aggregate(&r.spec, &devices))
                    .collect(),
                Err(e) => requests
                    .iter()
                    .map(|r| Readings {
                        signals: vec![SignalReading::default(); r.spec.signals.len()],
                        notes: vec![e.to_string()],
                        failed: true,
                        ..Readings::default()
                    })
                    .collect(),
            }
        })
    }

    /// Local reads wait on no network; the engine's margin covers them.
    fn deadline(&self) -> Duration {
        Duration::ZERO
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{in_ns_without_prometheus, meta};

    fn spec(pairs: &[(&str, &str)]) -> ScalerSpec {
        let mut m = meta(&[("source", "nvml")]);
        m.extend(meta(pairs));
        in_ns_without_prometheus(&m).unwrap()
    }

    fn owner(ns: Option<&str>, pod: &str) -> Owner {
        Owner {
            namespace: ns.map(str::to_string),
            pod: pod.into(),
        }
    }

    /// Recorded from a node with two A10G GPUs and one A100 split into two MIG instances.
    fn node() -> Vec<DeviceReading> {
        let gib = 1u64 << 30;
        vec![
            DeviceReading {
                index: 0,
                uuid: "GPU-aaaa".into(),
                parent_uuid: None,
                util_percent: Some(90.0),
                memory_used: 18 * gib,
                memory_total: 24 * gib,
                owners: vec![owner(Some("inference"), "llm-5d8f7-x2x9k")],
            },
            DeviceReading {
                index: 1,
                uuid: "GPU-bbbb".into(),
                parent_uuid: None,
                util_percent: Some(30.0),
                memory_used: 6 * gib,
                memory_total: 24 * gib,
                owners: vec![owner(None, "llm-5d8f7-q7w2p")],
            },
            DeviceReading {
                index: 2,
                uuid: "MIG-1111".into(),
                parent_uuid: Some("GPU-cccc".into()),
                util_percent: None,
                memory_used: 10 * gib,
                memory_total: 20 * gib,
                owners: vec![owner(Some("other"), "llm-5d8f7-zzzzz")],
            },
            DeviceReading {
                index: 2,
                uuid: "MIG-2222".into(),
                parent_uuid: Some("GPU-cccc".into()),
                util_percent: None,
                memory_used: 5 * gib,
                memory_total: 20 * gib,
                owners: vec![],
            },
        ]
    }

    #[test]
    fn every_device_is_a_replica_without_a_pod_filter() {
        let s = spec(&[("gpuUtilTarget", "60"), ("gpuMemoryTarget", "50")]);
        let r = aggregate(&s, &node());
        assert_eq!(r.signals[0].pods, vec![Some(90.0), Some(30.0), None, None]);
        assert_eq!(
            r.signals[1].pods,
            vec![Some(75.0), Some(25.0), Some(50.0), Some(25.0)]
        );
        assert!(r.notes.is_empty(), "{:?}", r.notes);
    }

    #[test]
    fn pods_own_the_devices_their_processes_run_on() {
        let s = spec(&[
            ("deployment", "llm"),
            ("gpuUtilTarget", "60"),
            ("gpuMemoryTarget", "50"),
        ]);
        let r = aggregate(&s, &node());
        // Two pods of the deployment in this namespace (one without POD_NAMESPACE); the third is
        // in another namespace and the idle MIG instance belongs to nobody.
        assert_eq!(r.signals[0].pods, vec![Some(30.0), Some(90.0)]);
        assert_eq!(r.signals[1].pods, vec![Some(25.0), Some(75.0)]);
    }

    #[test]
    fn listed_devices_by_index_or_uuid_and_mig_parents() {
        let s = spec(&[("devices", "1,GPU-cccc"), ("gpuMemoryTarget", "50")]);
        let r = aggregate(&s, &node());
        assert_eq!(r.signals[0].pods, vec![Some(25.0), Some(50.0), Some(25.0)]);
        let mig_only = spec(&[("devices", "MIG-2222"), ("gpuUtilTarget", "50")]);
        let r = aggregate(&mig_only, &node());
        assert_eq!(r.signals[0].pods, vec![None]);
        assert!(r.signals[0].note.as_deref().unwrap().contains("MIG"));
        let none = spec(&[("devices", "7"), ("gpuUtilTarget", "50")]);
        let r = aggregate(&none, &node());
        assert!(
            r.notes[0].contains("none of the 4 devices"),
            "{:?}",
            r.notes
        );
        assert!(r.signals[0].pods.is_empty());
    }

    #[test]
    fn owners_come_from_the_downward_api_or_the_hostname() {
        let env = b"PATH=/bin\0HOSTNAME=llm-5d8f7-x2x9k\0POD_NAMESPACE=inference\0";
        assert_eq!(
            owner_from_environ(env),
            Some(owner(Some("inference"), "llm-5d8f7-x2x9k"))
        );
        let env = b"HOSTNAME=h\0POD_NAME=llm-1-2\0";
        assert_eq!(owner_from_environ(env), Some(owner(None, "llm-1-2")));
        assert_eq!(owner_from_environ(b"PATH=/bin\0"), None);
    }

    #[tokio::test]
    async fn without_a_driver_the_source_says_so_instead_of_failing() {
        if Nvml::init().is_ok() {
            // A machine with a driver: the source must read devices instead.
            assert!(NvmlSource::default().devices().await.is_ok());
            return;
        }
        let source = NvmlSource::default();
        let s = SampleRequest {
            spec: Arc::new(spec(&[("gpuUtilTarget", "50")])),
            last: None,
        };
        let r = source.sample(std::slice::from_ref(&s), 0.0).await;
        assert_eq!(r.len(), 1);
        assert!(r[0].failed);
        assert!(
            r[0].notes[0].contains("NVML unavailable"),
            "{:?}",
            r[0].notes
        );
        assert_eq!(r[0].signals.len(), 1);
        // Asking again does not retry at once, and still answers.
        let again = source.sample(&[s], 1.0).await;
        assert_eq!(again[0].notes, r[0].notes);
    }
}
