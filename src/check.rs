//! `check`: ScaledObject manifests checked offline with the server's own metadata parser.
//!
//! Reads YAML (one or many documents), finds the `external` / `external-push` triggers whose
//! `scalerAddress` points at this scaler, and reports every problem `spec::parse_in` finds, plus
//! the few ScaledObject settings that decide whether such a trigger can work at all.

use std::collections::HashMap;
use std::fmt;

use serde::Deserialize;

use crate::spec::{self, MetricSource, ParseContext, ServiceSpec, SourceSpec};

/// Where a trigger sits, for messages: `ScaledObject inference/llm, trigger 0 (gpu)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TriggerRef {
    pub document: usize,
    pub namespace: String,
    pub name: String,
    pub index: usize,
    pub trigger: Option<String>,
}

impl fmt::Display for TriggerRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "document {}, ScaledObject {}/{}, trigger {}",
            self.document, self.namespace, self.name, self.index
        )?;
        if let Some(t) = &self.trigger {
            write!(f, " ({t})")?;
        }
        Ok(())
    }
}

/// One problem in a manifest: where, which key, what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub at: Option<TriggerRef>,
    pub key: String,
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.at {
            Some(at) => write!(f, "{at}: {}: {}", self.key, self.message),
            None => write!(f, "{}: {}", self.key, self.message),
        }
    }
}

/// What checking one file found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Triggers that point at this scaler and were parsed.
    pub triggers: Vec<TriggerRef>,
    pub problems: Vec<Finding>,
    /// What is worth knowing but not wrong (the check still passes).
    pub notes: Vec<Finding>,
}

/// How to recognise and parse this scaler's triggers.
#[derive(Clone, Debug)]
pub struct CheckOptions {
    /// A trigger is this scaler's when its scalerAddress contains this.
    pub address_contains: String,
    /// The server's default Prometheus address, for `source=prometheus` without one.
    pub prometheus_address: Option<String>,
    /// The server's egress policy (what tenants may read: custom queries, other namespaces).
    pub egress: crate::egress::EgressPolicy,
}

#[derive(Deserialize)]
struct Doc {
    kind: Option<String>,
    #[serde(default)]
    metadata: Meta,
    spec: Option<SoSpec>,
}

#[derive(Deserialize, Default)]
struct Meta {
    name: Option<String>,
    namespace: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SoSpec {
    min_replica_count: Option<i64>,
    #[serde(default)]
    triggers: Vec<Trigger>,
    advanced: Option<serde_yaml::Value>,
}

impl SoSpec {
    /// The scale-down stabilisation window of the HPA KEDA generates: the ScaledObject's
    /// `advanced.horizontalPodAutoscalerConfig.behavior.scaleDown.stabilizationWindowSeconds`,
    /// else Kubernetes' default (300 s).
    fn hpa_scale_down_window_s(&self) -> i64 {
        self.advanced
            .as_ref()
            .and_then(|a| {
                a["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]
                    ["stabilizationWindowSeconds"]
                    .as_i64()
            })
            .unwrap_or(300)
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Trigger {
    #[serde(rename = "type")]
    kind: Option<String>,
    name: Option<String>,
    metric_type: Option<String>,
    #[serde(default)]
    metadata: HashMap<String, serde_yaml::Value>,
}

/// Checks every ScaledObject in `text`.
pub fn check_text(text: &str, options: &CheckOptions) -> Report {
    let mut report = Report::default();
    for (i, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let value = match serde_yaml::Value::deserialize(document) {
            Ok(v) => v,
            Err(e) => {
                report.problems.push(Finding {
                    at: None,
                    key: "yaml".into(),
                    message: format!("document {i}: {e}"),
                });
                // A syntax error ends the stream: later documents cannot be read.
                break;
            }
        };
        if value.is_null() {
            continue;
        }
        let doc: Doc = match serde_yaml::from_value(value) {
            Ok(d) => d,
            Err(e) => {
                report.problems.push(Finding {
                    at: None,
                    key: "yaml".into(),
                    message: format!("document {i}: not a Kubernetes object: {e}"),
                });
                continue;
            }
        };
        if doc.kind.as_deref() != Some("ScaledObject") {
            continue;
        }
        check_scaled_object(i, doc, options, &mut report);
    }
    report
}

fn check_scaled_object(document: usize, doc: Doc, options: &CheckOptions, report: &mut Report) {
    // kubectl's default namespace when the manifest names none.
    let namespace = doc.metadata.namespace.unwrap_or_else(|| "default".into());
    let name = doc.metadata.name.unwrap_or_default();
    let Some(so) = doc.spec else { return };
    // Another trigger (a cron floor, a queue scaler) can wake a workload at zero replicas.
    let others_can_wake = so.triggers.len() > 1;
    let hpa_window_s = so.hpa_scale_down_window_s();
    for (index, t) in so.triggers.into_iter().enumerate() {
        let ours = matches!(t.kind.as_deref(), Some("external" | "external-push"))
            && t.metadata
                .get("scalerAddress")
                .and_then(|v| v.as_str())
                .is_some_and(|a| a.contains(&options.address_contains));
        if !ours {
            continue;
        }
        let at = TriggerRef {
            document,
            namespace: namespace.clone(),
            name: name.clone(),
            index,
            trigger: t.name.clone(),
        };
        let mut problem = |key: &str, message: String| {
            report.problems.push(Finding {
                at: Some(at.clone()),
                key: key.to_string(),
                message,
            })
        };
        if let Some(mt) = t.metric_type.as_deref().filter(|m| *m != "AverageValue") {
            problem(
                "metricType",
                format!("'{mt}' is not accepted; the scaler reports desired replicas with target 1, which only AverageValue (the default) turns into that many replicas"),
            );
        }
        let mut metadata = HashMap::new();
        for (k, v) in &t.metadata {
            match v.as_str() {
                Some(s) => {
                    metadata.insert(k.clone(), s.to_string());
                }
                None => problem(
                    k,
                    "KEDA accepts only string values in trigger metadata; quote it".into(),
                ),
            }
        }
        let ctx = ParseContext {
            namespace: &namespace,
            prometheus_address: options.prometheus_address.as_deref(),
            egress: Some(&options.egress),
        };
        let mut note = None;
        match spec::parse_in(ctx, &metadata) {
            Ok(spec) => {
                note = objective_inside_a_bucket(&spec);
                // Signals read from the scaled pods themselves vanish with them: at zero
                // replicas such a trigger has no data and can never activate. A full PromQL
                // query or fixed endpoints may read something that outlives the pods.
                let from_pods = match &spec.source {
                    SourceSpec::Service(_) => Some("scrapes the Service's own pods"),
                    SourceSpec::Prometheus(_)
                        if spec
                            .signals
                            .iter()
                            .all(|s| !matches!(s.metrics, MetricSource::Query(_))) =>
                    {
                        Some("reads only the pods' own series from Prometheus")
                    }
                    _ => None,
                };
                // The drain models the HPA: a window or a replica floor it does not know of
                // would leave drained pods out of service for nothing.
                if let SourceSpec::Service(ServiceSpec {
                    drain: Some(drain), ..
                }) = &spec.source
                {
                    let window = hpa_window_s;
                    if i64::from(drain.hpa_window_s) != window {
                        problem(
                            "scaleDownWindowSeconds",
                            format!("is {} but the HPA's scale-down window is {window} s (advanced.horizontalPodAutoscalerConfig.behavior.scaleDown.stabilizationWindowSeconds, 300 when unset): podReadinessGate must know it; set scaleDownWindowSeconds: \"{window}\", or the window to 0 as the recommended ScaledObject does", drain.hpa_window_s),
                        );
                    }
                    let min = so.min_replica_count.unwrap_or(0).max(1);
                    if (spec.limits.min_replicas as i64).max(1) < min {
                        problem(
                            "minReplicas",
                            format!("is {} but minReplicaCount is {min}: podReadinessGate would take out pods the HPA keeps; set minReplicas: \"{min}\"", spec.limits.min_replicas),
                        );
                    }
                }
                let at_zero = so.min_replica_count.unwrap_or(0) < 1 && !others_can_wake;
                if let Some(what) = from_pods.filter(|_| at_zero) {
                    problem(
                        "minReplicaCount",
                        format!("is 0 (KEDA's default) but the trigger {what}: at zero replicas there is nothing to read, so it never activates; set minReplicaCount >= 1, or scale from zero on a signal that exists without pods (a *Query on a gateway's metric, or endpoints of a gateway's queue)"),
                    );
                }
            }
            Err(e) => {
                for p in e.problems {
                    problem(&p.key, p.message);
                }
            }
        }
        if let Some(message) = note {
            report.notes.push(Finding {
                at: Some(at.clone()),
                key: spec::OBJECTIVE_KEY.to_string(),
                message,
            });
        }
        report.triggers.push(at);
    }
}

/// SLO mode reads the share of requests within the objective from the latency histogram's
/// cumulative buckets, linearly inside the bucket that holds it: an objective on a bucket bound
/// is counted, one inside a bucket is a guess that counts the bucket's upper part as misses
/// whatever the requests' times, and the calibration then plans for misses that did not
/// happen. Said where the preset's histogram has known bounds; None otherwise.
fn objective_inside_a_bucket(spec: &spec::ScalerSpec) -> Option<String> {
    let objective = spec.objective?;
    let metric = spec.signals.iter().find_map(|s| match &s.metrics {
        MetricSource::Histogram(name) if s.name == "latency" => Some(name.as_str()),
        _ => None,
    })?;
    let bounds = spec::presets::histogram_bounds(metric)?;
    let unit_s = crate::sources::scrape::histogram::unit_seconds(metric);
    let at = objective.ttft_s / unit_s;
    if bounds.iter().any(|b| (b - at).abs() <= 1e-9 * b.max(1.0)) {
        return None;
    }
    let ms = |b: f64| format!("{}", (b * unit_s * 1e6).round() / 1e3);
    let lower = bounds.iter().copied().rfind(|b| *b < at);
    let upper = bounds.iter().copied().find(|b| *b > at);
    Some(match (lower, upper) {
        (Some(l), Some(u)) => format!(
            "{} ms lies inside {metric}'s ({}, {}] ms bucket, so the attainment is read by interpolation, counting {:.0} % of that bucket's requests as misses whatever their times; {} or {} ms is read exactly",
            ms(at),
            ms(l),
            ms(u),
            100.0 * (u - at) / (u - l),
            ms(l),
            ms(u)
        ),
        (None, Some(u)) => format!(
            "{} ms lies below {metric}'s lowest bucket bound ({} ms), so the attainment is read by interpolation from zero; {} ms is read exactly",
            ms(at),
            ms(u),
            ms(u)
        ),
        (Some(l), None) => format!(
            "{} ms lies above {metric}'s highest bucket bound ({} ms), so every request beyond that bound is read as a miss; {} ms is read exactly",
            ms(at),
            ms(l),
            ms(l)
        ),
        (None, None) => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> CheckOptions {
        CheckOptions {
            address_contains: "keda-gpu-scaler".into(),
            prometheus_address: Some("http://prometheus:9090".into()),
            egress: crate::egress::EgressPolicy::default(),
        }
    }

    const GOOD: &str = r#"
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: llm, namespace: inference}
spec:
  scaleTargetRef: {name: llm}
  minReplicaCount: 1
  triggers:
    - type: external
      metadata:
        scalerAddress: keda-gpu-scaler.keda:9443
        service: llm
        preset: vllm
        queueTarget: "4"
    - type: cron
      metadata: {timezone: UTC, start: "0 8 * * *", end: "0 9 * * *", desiredReplicas: "1"}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: x}
"#;

    #[test]
    fn a_good_manifest_has_one_trigger_and_no_problem() {
        let r = check_text(GOOD, &options());
        assert_eq!(r.problems, []);
        assert_eq!(r.triggers.len(), 1);
        assert_eq!(r.triggers[0].namespace, "inference");
    }

    #[test]
    fn an_objective_inside_a_histogram_bucket_is_noted_not_failed() {
        let slo = |preset: &str, ms: &str| {
            GOOD.replace("preset: vllm", &format!("preset: {preset}"))
                .replace("queueTarget: \"4\"", &format!("ttftObjectiveMs: \"{ms}\""))
        };
        // vLLM's TTFT buckets go from 1 s to 2.5 s: 2000 ms is interpolated, a third of the
        // bucket read as misses.
        let r = check_text(&slo("vllm", "2000"), &options());
        assert_eq!(r.problems, []);
        assert_eq!(r.notes.len(), 1, "{:?}", r.notes);
        let note = r.notes[0].to_string();
        assert!(
            note.contains("ttftObjectiveMs: 2000 ms lies inside"),
            "{note}"
        );
        assert!(
            note.contains("(1000, 2500] ms") && note.contains("33 %"),
            "{note}"
        );
        // On a bound, below the lowest and above the highest.
        assert_eq!(check_text(&slo("vllm", "2500"), &options()).notes, []);
        assert_eq!(check_text(&slo("sglang", "2000"), &options()).notes, []);
        let low = check_text(&slo("sglang", "50"), &options()).notes;
        assert!(
            low[0].message.contains("lowest bucket bound (100 ms)"),
            "{low:?}"
        );
        let high = check_text(&slo("triton", "6000"), &options()).notes;
        assert!(
            high[0].message.contains("highest bucket bound (5000 ms)"),
            "{high:?}"
        );
        // Bounds unknown (TGI's, a metric of the user's) or target mode: nothing to say.
        assert_eq!(check_text(&slo("tgi", "2000"), &options()).notes, []);
        assert_eq!(check_text(GOOD, &options()).notes, []);
    }

    #[test]
    fn every_problem_is_named_with_its_place() {
        let bad = GOOD
            .replace(
                "queueTarget: \"4\"",
                "queueTarge: \"4\"\n        kvCacheTarget: 80",
            )
            .replace("minReplicaCount: 1", "minReplicaCount: 0")
            .replace(
                "- type: external\n",
                "- type: external\n      metricType: Value\n",
            );
        let r = check_text(&bad, &options());
        let text: Vec<String> = r.problems.iter().map(|p| p.to_string()).collect();
        let has = |needle: &str| text.iter().any(|t| t.contains(needle));
        assert!(has("ScaledObject inference/llm, trigger 0: queueTarge: unknown key; did you mean 'queueTarget'?"), "{text:#?}");
        assert!(
            has("kvCacheTarget: KEDA accepts only string values"),
            "{text:#?}"
        );
        assert!(has("metricType: 'Value' is not accepted"), "{text:#?}");
    }

    #[test]
    fn zero_replicas_need_a_signal_that_outlives_the_pods() {
        // The cron trigger can wake the workload: zero is fine with it.
        let with_cron = GOOD.replace("minReplicaCount: 1", "minReplicaCount: 0");
        assert_eq!(check_text(&with_cron, &options()).problems, []);
        let alone = with_cron.replace(
            "    - type: cron\n      metadata: {timezone: UTC, start: \"0 8 * * *\", end: \"0 9 * * *\", desiredReplicas: \"1\"}\n",
            "",
        );
        let r = check_text(&alone, &options());
        assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
        assert!(
            r.problems[0].to_string().contains("minReplicaCount: is 0")
                && r.problems[0]
                    .message
                    .contains("scrapes the Service's own pods"),
            "{:?}",
            r.problems
        );
        // Prometheus on the pods' own series: the same; fixed endpoints (a gateway) may not be.
        let prom = alone.replace(
            "service: llm",
            "source: prometheus\n        deployment: llm",
        );
        let r = check_text(&prom, &options());
        assert!(
            r.problems[0]
                .message
                .contains("reads only the pods' own series"),
            "{:?}",
            r.problems
        );
        let gateway = alone.replace(
            "service: llm",
            "endpoints: http://gateway.inference:8000/metrics",
        );
        assert_eq!(check_text(&gateway, &options()).problems, []);
    }

    #[test]
    fn the_servers_egress_policy_applies() {
        let prom = GOOD.replace(
            "service: llm",
            "source: prometheus\n        deployment: llm\n        queueQuery: sum(gateway_queue)",
        );
        let r = check_text(&prom, &options());
        assert!(
            r.problems[0]
                .message
                .contains("egress.allow_custom_queries"),
            "{:?}",
            r.problems
        );
        let mut allowing = options();
        allowing.egress.allow_custom_queries = true;
        assert_eq!(check_text(&prom, &allowing).problems, []);
    }

    #[test]
    fn other_scalers_and_broken_yaml() {
        let other = GOOD.replace("keda-gpu-scaler.keda:9443", "other-scaler:9090");
        let r = check_text(&other, &options());
        assert_eq!((r.triggers.len(), r.problems.len()), (0, 0));
        let r = check_text("a: [\n", &options());
        assert_eq!(r.problems[0].key, "yaml");
    }

    #[test]
    fn the_drain_is_checked_against_the_hpas_window_and_replica_floor() {
        let drain = GOOD.replace(
            "queueTarget: \"4\"",
            "queueTarget: \"4\"\n        podReadinessGate: \"true\"",
        );
        // KEDA's default: no behavior, so Kubernetes' 300 s window.
        let r = check_text(&drain, &options());
        assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
        assert!(r.problems[0]
            .to_string()
            .contains("scaleDownWindowSeconds: is 0 but the HPA's scale-down window is 300 s"));
        let declared = drain.replace(
            "podReadinessGate: \"true\"",
            "podReadinessGate: \"true\"\n        scaleDownWindowSeconds: \"300\"",
        );
        assert!(check_text(&declared, &options()).problems.is_empty());
        let recommended = drain.replace(
            "  minReplicaCount: 1\n",
            "  minReplicaCount: 3\n  advanced:\n    horizontalPodAutoscalerConfig:\n      behavior:\n        scaleDown: {stabilizationWindowSeconds: 0}\n",
        );
        let r = check_text(&recommended, &options());
        assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
        assert!(r.problems[0]
            .to_string()
            .contains("minReplicas: is 0 but minReplicaCount is 3"));
    }
}
