//! Validators: pure checks of one metadata value. Each returns the value it accepts, or the
//! message the key gets (quoting the value and saying what is accepted); the parser names the key.

use super::model::{DeviceRef, MetricRef, PodMatch, PortRef};

/// Smallest target accepted: below it any reading is an overflowing demand.
pub const MIN_TARGET: f64 = 1e-3;
/// Longest full PromQL query accepted in metadata.
const MAX_QUERY_LEN: usize = 8192;

/// A finite number within [min, max].
pub(super) fn number(raw: &str, min: f64, max: f64, accepted: &str) -> Result<f64, String> {
    match raw.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= min && v <= max => Ok(v),
        _ => Err(format!("'{raw}' is not accepted; expected {accepted}")),
    }
}

/// A signal's target: a number in [MIN_TARGET, max], `unit` naming what it counts.
pub(super) fn target(raw: &str, max: f64, unit: &str) -> Result<f64, String> {
    let accepted = format!("a number >= {MIN_TARGET} and <= {max}{unit}");
    let v = number(raw, 0.0, max, &accepted)?;
    // A tiny target turns any reading into an infinite demand.
    if v < MIN_TARGET {
        return Err(format!("'{v}' is not accepted; expected {accepted}"));
    }
    Ok(v)
}

/// `panicThreshold`: 0 turns the panic rule off; otherwise a factor above 1.
pub(super) fn panic_threshold(raw: &str) -> Result<f64, String> {
    let accepted = "0 (off) or a factor > 1, e.g. 2";
    match number(raw, 0.0, 1000.0, accepted)? {
        p if p > 0.0 && p <= 1.0 => Err(format!("'{p}' is not accepted; expected {accepted}")),
        p => Ok(p),
    }
}

pub(super) fn replicas(raw: &str) -> Result<u32, String> {
    match raw.parse::<u32>() {
        Ok(v) if v <= 100_000 => Ok(v),
        _ => Err(format!(
            "'{raw}' is not accepted; expected a whole number 0..=100000"
        )),
    }
}

/// A bare Prometheus metric name.
pub(super) fn metric_name(raw: &str) -> Result<String, String> {
    if is_prometheus_name(raw) {
        Ok(raw.to_string())
    } else {
        Err(format!(
            "'{raw}' is not a Prometheus metric name; expected [a-zA-Z_:][a-zA-Z0-9_:]*"
        ))
    }
}

/// A metric name, optionally with label matchers (`MetricRef` text), kept as written.
pub(super) fn metric_ref(raw: &str) -> Result<String, String> {
    match MetricRef::parse(raw) {
        Some(_) => Ok(raw.to_string()),
        None => Err(format!("'{raw}' is not a Prometheus metric name, optionally with label matchers; expected a name such as vllm:num_requests_waiting or name{{label=\"value\"}}")),
    }
}

pub(super) fn label_name(raw: &str) -> Result<String, String> {
    if is_label_name(raw) {
        Ok(raw.to_string())
    } else {
        Err(format!("'{raw}' is not a Prometheus label name; expected [a-zA-Z_][a-zA-Z0-9_]*, such as exported_pod"))
    }
}

/// The text of a full PromQL query (whether one may be given at all is the egress policy's call).
pub(super) fn query(raw: &str) -> Result<String, String> {
    if raw.is_empty() || raw.len() > MAX_QUERY_LEN || raw.chars().any(|c| c == '\0') {
        return Err(format!(
            "is not accepted; expected a PromQL query of 1 to {MAX_QUERY_LEN} characters"
        ));
    }
    Ok(raw.to_string())
}

/// An absolute http(s) URL with a host; None for anything else.
pub(super) fn http_url(raw: &str) -> Option<reqwest::Url> {
    reqwest::Url::parse(raw)
        .ok()
        .filter(|url| matches!(url.scheme(), "http" | "https") && url.host().is_some())
}

/// `port`: a number, or the name a Service gives the port.
/// `true` or `false`, as YAML and KEDA's own boolean keys spell them.
pub(super) fn boolean(raw: &str) -> Result<bool, String> {
    match raw {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!(
            "'{}' is not accepted; expected true or false",
            crate::text::redact_url(raw)
        )),
    }
}

pub(super) fn port(raw: &str) -> Result<PortRef, String> {
    match raw.parse::<u16>() {
        Ok(n) if n > 0 => Ok(PortRef::Number(n)),
        _ if is_dns_label(raw) && raw.len() <= 15 && raw.chars().any(|c| c.is_ascii_lowercase()) => {
            Ok(PortRef::Name(raw.to_string()))
        }
        _ => Err(format!("'{raw}' is not accepted; expected a port number 1-65535 or a Service port name such as http or metrics")),
    }
}

/// `path`: the metrics path on each endpoint.
pub(super) fn url_path(raw: &str) -> Result<(), String> {
    let ok = raw.starts_with('/')
        && raw.len() <= 256
        && raw
            .chars()
            .all(|c| c.is_ascii_graphic() && c != '#' && c != '\\');
    if ok {
        Ok(())
    } else {
        Err(format!("'{raw}' is not accepted; expected a URL path starting with '/', such as /metrics (printable ASCII, up to 256 characters)"))
    }
}

/// One entry of `devices`: an index, or a GPU or MIG UUID.
pub(super) fn device(raw: &str) -> Result<DeviceRef, String> {
    if let Ok(i) = raw.parse::<u32>() {
        return Ok(DeviceRef::Index(i));
    }
    let uuid = (raw.starts_with("GPU-") || raw.starts_with("MIG-"))
        && raw.len() <= 128
        && raw[4..]
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '/');
    if uuid {
        Ok(DeviceRef::Uuid(raw.to_string()))
    } else {
        Err(format!("'{raw}' is not accepted; expected device indices (0,1) or UUIDs (GPU-..., MIG-...) separated by commas"))
    }
}

pub(super) fn deployment(raw: &str) -> Result<PodMatch, String> {
    if is_dns_subdomain(raw) {
        Ok(PodMatch::Deployment(raw.to_string()))
    } else {
        Err(format!("'{raw}' is not a Deployment name; expected lower-case a-z, 0-9, '-' or '.', up to 253 characters"))
    }
}

pub(super) fn pod_selector(raw: &str) -> Result<PodMatch, String> {
    let m = PodMatch::Selector(raw.to_string());
    if raw.len() > 1024 || regex::Regex::new(&m.pattern()).is_err() {
        return Err(format!("'{raw}' is not accepted; expected a regular expression (RE2 syntax) for pod names, such as llm-server-.+"));
    }
    Ok(m)
}

pub(super) fn is_prometheus_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
        && s.len() <= 200
}

/// A Prometheus label name, such as `exported_pod`.
pub(super) fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && s.len() <= 128
}

pub(super) fn is_kubernetes_metric_name(s: &str) -> bool {
    let ok_edge =
        |c: Option<char>| matches!(c, Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit());
    !s.is_empty()
        && s.len() <= 63
        && ok_edge(s.chars().next())
        && ok_edge(s.chars().last())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
}

/// A Deployment name: lower-case RFC 1123 labels joined by dots, up to 253 characters.
fn is_dns_subdomain(s: &str) -> bool {
    is_dns_name(s, 253, true)
}

/// An RFC 1123 label: what Kubernetes accepts as a Service or port name.
pub(super) fn is_dns_label(s: &str) -> bool {
    is_dns_name(s, 63, false)
}

fn is_dns_name(s: &str, max_len: usize, dots: bool) -> bool {
    !s.is_empty()
        && s.len() <= max_len
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || (dots && c == '.'))
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

pub(super) fn is_extra_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}
