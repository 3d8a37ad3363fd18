//! PromQL text for the built-in signals, and the escaping that keeps metadata out of its syntax.
//!
//! Pure: no IO. Every value taken from metadata enters a query only through `string_literal` (and
//! `regex_literal` where it sits inside a regex matcher), so a namespace such as
//! `x"} or vector(1) #` is matched literally and cannot add to the query.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use crate::score::DemandModel;
use crate::spec::{MemoryMetrics, MetricRef, MetricSource, SignalSpec};

/// dcgm-exporter's MIG-capable utilisation is a 0-1 ratio; it is scaled to percent.
pub const RATIO_METRICS: &[&str] = &["DCGM_FI_PROF_GR_ENGINE_ACTIVE"];

/// The labels a query groups by and filters on.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Labels {
    pub namespace: String,
    pub pod: String,
}

/// What a signal's query computes, independent of which ScaledObjects share it. Specs whose
/// signals have equal templates (and labels and address) share one query per interval.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Template {
    /// Per-pod gauge: the mean over a pod's series (utilisation) or their sum (quantities). The
    /// first listed metric a pod has is used.
    Gauge { metrics: Vec<String>, mean: bool },
    /// Per-pod mean of 0-1 gauges, as percent.
    Fraction(Vec<String>),
    /// GPU memory in use as a percentage of capacity, per pod.
    Memory(Vec<MemoryKey>),
    /// p95 of a classic histogram over a window, seconds, per pod.
    Latency { base: String, window_s: u64 },
    /// Observations per second of a classic histogram over a window (its `_count` rate), per pod:
    /// the completion rate the backlog model learns the service time from.
    Completions { base: String, window_s: u64 },
    /// Observations per second of a classic histogram between each pod's last two scrapes
    /// (`irate` of its `_count`, the window only bounding how far back they may be), per pod:
    /// SLO mode counts the requests that reached their first token at Prometheus' own scrape
    /// interval, as the scrape source counts them at its own.
    FirstTokens { base: String, window_s: u64 },
    /// Per-bucket observations per second of a classic histogram over a window, per pod and
    /// bucket (`le`): SLO mode reads how many requests met the objective from them.
    Buckets { base: String, window_s: u64 },
    /// A full PromQL query from metadata, run as given.
    Custom(String),
}

/// `MemoryMetrics` in an ordered, hashable form.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MemoryKey {
    UsedTotal(String, String),
    UsedFree(String, String),
}

impl Template {
    /// The template of one signal; `latency_window_s` is the spec's window.
    pub fn of(signal: &SignalSpec, latency_window_s: f64) -> Template {
        match &signal.metrics {
            MetricSource::Gauge(metrics) => Template::Gauge {
                metrics: metrics.clone(),
                mean: signal.model == DemandModel::Utilisation,
            },
            MetricSource::Fraction(metrics) => Template::Fraction(metrics.clone()),
            MetricSource::Memory(choices) => Template::Memory(
                choices
                    .iter()
                    .map(|m| match m {
                        MemoryMetrics::UsedTotal { used, total } => {
                            MemoryKey::UsedTotal(used.clone(), total.clone())
                        }
                        MemoryMetrics::UsedFree { used, free } => {
                            MemoryKey::UsedFree(used.clone(), free.clone())
                        }
                    })
                    .collect(),
            ),
            MetricSource::Histogram(base) => Template::Latency {
                base: base.clone(),
                window_s: latency_window_s.round().max(1.0) as u64,
            },
            MetricSource::Query(q) => Template::Custom(q.clone()),
        }
    }

    /// True when results are grouped by namespace and pod by construction.
    pub fn is_builtin(&self) -> bool {
        !matches!(self, Template::Custom(_))
    }

    /// The query for every namespace in `namespaces` at once, grouped `by (namespace, pod)`.
    pub fn build(&self, labels: &Labels, namespaces: &BTreeSet<String>) -> String {
        let sel = selector(labels, namespaces);
        let by = format!("{}, {}", labels.namespace, labels.pod);
        match self {
            Template::Custom(q) => q.clone(),
            Template::Gauge { metrics, mean } => {
                let agg = if *mean { "avg" } else { "sum" };
                alternatives(metrics.iter().filter_map(|m| {
                    let (name, sel) = series(m, labels, namespaces)?;
                    let scale = if RATIO_METRICS.contains(&name.as_str()) {
                        "100 * "
                    } else {
                        ""
                    };
                    Some(format!("{scale}{agg} by ({by}) ({name}{sel})"))
                }))
            }
            Template::Fraction(metrics) => alternatives(metrics.iter().filter_map(|m| {
                let (name, sel) = series(m, labels, namespaces)?;
                Some(format!("100 * avg by ({by}) ({name}{sel})"))
            })),
            Template::Memory(choices) => alternatives(choices.iter().map(|c| match c {
                MemoryKey::UsedTotal(used, total) => format!(
                    "100 * sum by ({by}) ({used}{sel}) / sum by ({by}) ({total}{sel})"
                ),
                MemoryKey::UsedFree(used, free) => format!(
                    "100 * sum by ({by}) ({used}{sel}) / (sum by ({by}) ({used}{sel}) + sum by ({by}) ({free}{sel}))"
                ),
            })),
            Template::Latency { base, window_s } => {
                let q = format!(
                    "histogram_quantile(0.95, sum by ({by}, le) (rate({base}_bucket{sel}[{window_s}s])))"
                );
                // Answers are in seconds whatever unit the histogram counts in.
                let unit = crate::sources::scrape::histogram::unit_seconds(base);
                if unit < 1.0 {
                    format!("{unit} * {q}")
                } else {
                    q
                }
            }
            Template::Completions { base, window_s } => {
                format!("sum by ({by}) (rate({base}_count{sel}[{window_s}s]))")
            }
            Template::FirstTokens { base, window_s } => {
                format!("sum by ({by}) (irate({base}_count{sel}[{window_s}s]))")
            }
            Template::Buckets { base, window_s } => {
                format!("sum by ({by}, le) (rate({base}_bucket{sel}[{window_s}s]))")
            }
        }
    }
}

/// A metric reference (name, maybe with label matchers) as a name and the selector that adds its
/// matchers, escaped, to the namespace and pod ones. None for text the spec parser would refuse.
fn series(
    reference: &str,
    labels: &Labels,
    namespaces: &BTreeSet<String>,
) -> Option<(String, String)> {
    let m = MetricRef::parse(reference)?;
    let sel = selector(labels, namespaces);
    let extra: String = m
        .labels
        .iter()
        .map(|(k, v)| format!(", {k}={}", string_literal(v)))
        .collect();
    let sel = format!("{}{extra}}}", sel.strip_suffix('}').unwrap_or(&sel));
    Some((m.name, sel))
}

/// `(a) or (b)`: PromQL's `or` keeps a pod's series from the first alternative that has one.
fn alternatives(parts: impl Iterator<Item = String>) -> String {
    let parts: Vec<String> = parts.collect();
    if parts.len() == 1 {
        return parts.into_iter().next().unwrap_or_default();
    }
    parts
        .iter()
        .map(|p| format!("({p})"))
        .collect::<Vec<_>>()
        .join(" or ")
}

/// `{namespace=~"a|b", pod!=""}`: the namespaces as literal regex alternatives. Idle GPUs carry
/// `pod=""` in dcgm-exporter and belong to nobody.
pub fn selector(labels: &Labels, namespaces: &BTreeSet<String>) -> String {
    let alternation = namespaces
        .iter()
        .map(|n| regex_literal(n))
        .collect::<Vec<_>>()
        .join("|");
    format!(
        "{{{}=~{}, {}!=\"\"}}",
        labels.namespace,
        string_literal(&alternation),
        labels.pod
    )
}

/// A PromQL double-quoted string whose value is exactly `value`.
pub fn string_literal(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A regular expression (RE2, as Prometheus uses) matching exactly `value`.
pub fn regex_literal(value: &str) -> String {
    // regex::escape only adds backslashes before ASCII punctuation, which RE2 reads as literal.
    regex::escape(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> Labels {
        Labels {
            namespace: "namespace".into(),
            pod: "pod".into(),
        }
    }

    fn ns(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn label_matchers_of_a_metric_reference_join_the_selector() {
        let t = Template::Gauge {
            metrics: vec![
                "nv_trt_llm_request_metrics{request_type=\"waiting\"}".into(),
                "nv_inference_pending_request_count".into(),
            ],
            mean: false,
        };
        assert_eq!(
            t.build(&labels(), &ns(&["inference"])),
            "(sum by (namespace, pod) (nv_trt_llm_request_metrics{namespace=~\"inference\", pod!=\"\", request_type=\"waiting\"})) or (sum by (namespace, pod) (nv_inference_pending_request_count{namespace=~\"inference\", pod!=\"\"}))"
        );
        let f = Template::Fraction(vec!["kv{kv_cache_block_type=\"fraction\"}".into()]);
        assert_eq!(
            f.build(&labels(), &ns(&["a"])),
            "100 * avg by (namespace, pod) (kv{namespace=~\"a\", pod!=\"\", kv_cache_block_type=\"fraction\"})"
        );
    }

    #[test]
    fn gpu_util_is_averaged_per_pod_for_all_namespaces_in_one_query() {
        let t = Template::Gauge {
            metrics: vec!["DCGM_FI_DEV_GPU_UTIL".into()],
            mean: true,
        };
        assert_eq!(
            t.build(&labels(), &ns(&["team-b", "team-a"])),
            "avg by (namespace, pod) (DCGM_FI_DEV_GPU_UTIL{namespace=~\"team\\\\-a|team\\\\-b\", pod!=\"\"})"
        );
    }

    #[test]
    fn engine_active_is_scaled_to_percent_and_alternatives_are_ored() {
        let t = Template::Gauge {
            metrics: vec![
                "DCGM_FI_PROF_GR_ENGINE_ACTIVE".into(),
                "DCGM_FI_DEV_GPU_UTIL".into(),
            ],
            mean: true,
        };
        let q = t.build(&labels(), &ns(&["a"]));
        assert!(
            q.starts_with("(100 * avg by (namespace, pod) (DCGM_FI_PROF_GR_ENGINE_ACTIVE{")
                && q.contains(") or (avg by (namespace, pod) (DCGM_FI_DEV_GPU_UTIL{"),
            "{q}"
        );
    }

    #[test]
    fn memory_is_used_over_used_plus_free_never_used_over_free() {
        let t = Template::Memory(vec![MemoryKey::UsedFree("U".into(), "F".into())]);
        let q = t.build(&labels(), &ns(&["a"]));
        let sel = "{namespace=~\"a\", pod!=\"\"}";
        assert_eq!(
            q,
            format!("100 * sum by (namespace, pod) (U{sel}) / (sum by (namespace, pod) (U{sel}) + sum by (namespace, pod) (F{sel}))")
        );
    }

    #[test]
    fn renamed_labels_are_used_for_grouping_and_filtering() {
        let l = Labels {
            namespace: "exported_namespace".into(),
            pod: "exported_pod".into(),
        };
        let q = Template::Latency {
            base: "h".into(),
            window_s: 30,
        }
        .build(&l, &ns(&["x"]));
        assert_eq!(q, "histogram_quantile(0.95, sum by (exported_namespace, exported_pod, le) (rate(h_bucket{exported_namespace=~\"x\", exported_pod!=\"\"}[30s])))");
    }

    #[test]
    fn bucket_rates_are_kept_per_pod_and_bound() {
        let q = Template::Buckets {
            base: "h".into(),
            window_s: 60,
        }
        .build(&labels(), &ns(&["a"]));
        assert_eq!(
            q,
            "sum by (namespace, pod, le) (rate(h_bucket{namespace=~\"a\", pod!=\"\"}[60s]))"
        );
    }

    #[test]
    fn hostile_values_stay_inside_the_string() {
        let hostile = "x\"} or vector(1) or up{a=\"\\\n";
        let q = selector(&labels(), &ns(&[hostile]));
        // The value decodes back to the literal regex of the hostile text, and nothing follows.
        let inner = q
            .strip_prefix("{namespace=~")
            .and_then(|r| r.strip_suffix(", pod!=\"\"}"))
            .unwrap();
        assert_eq!(decode(inner), regex::escape(hostile));
        let re = regex::Regex::new(&format!("^(?:{})$", decode(inner))).unwrap();
        assert!(re.is_match(hostile) && !re.is_match("x"));
        assert_eq!(string_literal("a\u{1}b"), "\"a\\u0001b\"");
    }

    /// Reads a double-quoted PromQL string back the way Prometheus's lexer does (the escapes
    /// `string_literal` writes), and insists the whole input is one string.
    fn decode(quoted: &str) -> String {
        let body = quoted.strip_prefix('"').and_then(|r| r.strip_suffix('"'));
        let body = body.expect("one quoted string");
        let mut out = String::new();
        let mut chars = body.chars();
        while let Some(c) = chars.next() {
            match c {
                '"' => panic!("unescaped quote ends the string early: {quoted}"),
                '\\' => match chars.next() {
                    Some('n') => out.push('\n'),
                    Some('r') => out.push('\r'),
                    Some('t') => out.push('\t'),
                    Some('u') => {
                        let hex: String = chars.by_ref().take(4).collect();
                        out.push(char::from_u32(u32::from_str_radix(&hex, 16).unwrap()).unwrap())
                    }
                    Some(c) => out.push(c),
                    None => panic!("dangling backslash"),
                },
                c => out.push(c),
            }
        }
        out
    }
}
