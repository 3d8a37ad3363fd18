//! The key registry: which metadata keys exist, which source each belongs to, how `<key>FromEnv`
//! and KEDA's own keys are taken, and the hint an unknown key gets. The built-in signals' keys
//! come from their table (`builtin::BUILTINS`).

use std::collections::{BTreeMap, HashMap};

use super::builtin::BUILTINS;
use super::model::Problem;

pub const DEFAULT_METRIC_NAME: &str = "gpu-composite";
pub const DEFAULT_ACTIVATION: f64 = 0.1;
pub const DEFAULT_MAX_REPLICAS: u32 = 100;
pub const MAX_ENDPOINTS: usize = 1000;
pub const DEFAULT_SERVICE_PATH: &str = "/metrics";
pub const DEFAULT_NAMESPACE_LABEL: &str = "namespace";
pub const DEFAULT_POD_LABEL: &str = "pod";
/// The key that turns SLO mode on.
pub const OBJECTIVE_KEY: &str = "ttftObjectiveMs";
/// The key that turns pod deletion costs on (`service` discovery only).
pub const DELETION_COST_KEY: &str = "podDeletionCost";
/// The key that drains pods through their readiness gate before a scale-down.
pub const READINESS_GATE_KEY: &str = "podReadinessGate";
/// The longest drain (`podReadinessGate` only).
pub const DRAIN_TIMEOUT_KEY: &str = "drainTimeoutSeconds";
/// The HPA's scale-down window, as the drain models it (`podReadinessGate` only).
pub const HPA_WINDOW_KEY: &str = "scaleDownWindowSeconds";

/// Keys KEDA itself puts in the metadata map (connection and TLS settings); accepted and ignored.
const KEDA_KEYS: &[&str] = &[
    "scalerAddress",
    "enableTLS",
    "unsafeSsl",
    "caCert",
    "tlsClientCert",
    "tlsClientKey",
];

/// Keys this scaler reads besides the built-in signals' and `extra.<name>.<field>`.
const GENERAL_KEYS: &[&str] = &[
    "source",
    "endpoints",
    "latencyWindowSeconds",
    "drainSeconds",
    "forecastPeriodSeconds",
    "forecastLeadSeconds",
    "upHalfLifeSeconds",
    "downHalfLifeSeconds",
    "panicThreshold",
    "activationThreshold",
    "deactivationThreshold",
    "minReplicas",
    "maxReplicas",
    "metricName",
    "prometheusAddress",
    "namespace",
    "deployment",
    "podSelector",
    "namespaceLabel",
    "podLabel",
    "devices",
    "service",
    "port",
    "path",
    "preset",
    OBJECTIVE_KEY,
    "attainment",
    "coldStartSeconds",
    DELETION_COST_KEY,
    READINESS_GATE_KEY,
    DRAIN_TIMEOUT_KEY,
    HPA_WINDOW_KEY,
];

/// General keys that only mean something with some sources, and those sources. Every built-in
/// signal's query key is also `source=prometheus` only.
const SOURCE_KEYS: &[(&str, &[&str])] = &[
    ("endpoints", &["scrape"]),
    ("prometheusAddress", &["prometheus"]),
    ("namespaceLabel", &["prometheus"]),
    ("podLabel", &["prometheus"]),
    ("namespace", &["prometheus", "nvml"]),
    ("deployment", &["prometheus", "nvml"]),
    ("podSelector", &["prometheus", "nvml"]),
    ("devices", &["nvml"]),
    ("service", &["scrape"]),
    ("port", &["scrape"]),
    ("path", &["scrape"]),
    (DELETION_COST_KEY, &["scrape"]),
    (READINESS_GATE_KEY, &["scrape"]),
    (DRAIN_TIMEOUT_KEY, &["scrape"]),
    (HPA_WINDOW_KEY, &["scrape"]),
    ("preset", &["scrape", "prometheus"]),
];

/// The fields of an extra signal, `extra.<name>.<field>`.
const EXTRA_FIELDS: &[&str] = &["metric", "query", "target", "kind"];

/// Every key this scaler reads, besides `extra.<name>.<field>`.
pub fn keys() -> impl Iterator<Item = &'static str> {
    GENERAL_KEYS
        .iter()
        .copied()
        .chain(BUILTINS.iter().flat_map(|b| b.keys()))
}

/// Keys that apply only to some sources, with those sources.
pub(super) fn source_keys() -> impl Iterator<Item = (&'static str, &'static [&'static str])> {
    const PROMETHEUS: &[&str] = &["prometheus"];
    SOURCE_KEYS
        .iter()
        .copied()
        .chain(BUILTINS.iter().map(|b| (b.query_key, PROMETHEUS)))
}

/// The metadata as the parser reads it: keys without `FromEnv`, KEDA's keys dropped, unknown
/// keys and a key given both ways reported.
pub(super) fn resolve(
    metadata: &HashMap<String, String>,
) -> (BTreeMap<String, &str>, Vec<Problem>) {
    let mut problems = Vec::new();
    let mut values = BTreeMap::new();
    // KEDA passes `<key>FromEnv` with the value already resolved from the workload's env.
    let mut keys: Vec<&String> = metadata.keys().collect();
    keys.sort();
    for key in keys {
        let value = metadata[key].as_str();
        let base = key.strip_suffix("FromEnv").unwrap_or(key);
        if KEDA_KEYS.contains(&base) {
            continue;
        }
        if !is_known(base) {
            problems.push(Problem {
                key: key.clone(),
                message: unknown_key_message(base),
            });
            continue;
        }
        if values.insert(base.to_string(), value).is_some() {
            problems.push(Problem {
                key: key.clone(),
                message: format!("set both as '{base}' and '{base}FromEnv'; keep one"),
            });
        }
    }
    (values, problems)
}

/// The name and field of an `extra.<name>.<field>` key.
pub(super) fn extra_key(key: &str) -> Option<(&str, &str)> {
    key.strip_prefix("extra.")?.rsplit_once('.')
}

fn is_known(key: &str) -> bool {
    if keys().any(|k| k == key) {
        return true;
    }
    match extra_key(key) {
        Some((name, field)) => !name.is_empty() && EXTRA_FIELDS.contains(&field),
        None => false,
    }
}

fn unknown_key_message(key: &str) -> String {
    let best = keys()
        .chain(KEDA_KEYS.iter().copied())
        .map(|k| {
            (
                strsim::levenshtein(&key.to_lowercase(), &k.to_lowercase()),
                k,
            )
        })
        .min();
    match best {
        Some((d, k)) if d <= 3 || k.to_lowercase() == key.to_lowercase() => {
            format!("unknown key; did you mean '{k}'?")
        }
        _ if key.starts_with("extra.") => {
            "unknown key; extra signals take extra.<name>.metric (or .query), extra.<name>.target and extra.<name>.kind".into()
        }
        _ => format!(
            "unknown key; accepted keys: {}",
            keys().collect::<Vec<_>>().join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{base, rejects};
    use crate::spec::parse;

    #[test]
    fn unknown_keys_get_a_hint() {
        rejects(
            base(&[("queueTarge", "5")]),
            "queueTarge",
            "did you mean 'queueTarget'",
        );
        rejects(
            base(&[("gpuutiltarget", "5")]),
            "gpuutiltarget",
            "did you mean 'gpuUtilTarget'",
        );
        rejects(base(&[("colour", "blue")]), "colour", "accepted keys:");
    }

    #[test]
    fn every_key_is_listed_once_and_source_bound_keys_exist() {
        let mut all: Vec<&str> = keys().collect();
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n, "a key is listed twice");
        for (key, _) in source_keys() {
            assert!(is_known(key), "{key}");
        }
        for k in KEDA_KEYS {
            assert!(!is_known(k), "{k} is KEDA's");
        }
    }

    #[test]
    fn from_env_keys_are_read_and_conflicts_rejected() {
        let spec = parse(&base(&[("gpuUtilTargetFromEnv", "65")])).unwrap();
        assert_eq!(spec.signals[0].target, 65.0);
        rejects(
            base(&[("queueTargetFromEnv", "5")]),
            "queueTargetFromEnv",
            "keep one",
        );
    }
}
