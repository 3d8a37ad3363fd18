//! Serving-engine `/metrics` fixtures (tests/fixtures/engines) and a way to change one value.

pub const VLLM: &str = include_str!("../fixtures/engines/vllm.prom");
pub const SGLANG: &str = include_str!("../fixtures/engines/sglang.prom");
pub const TGI: &str = include_str!("../fixtures/engines/tgi.prom");
pub const TRITON: &str = include_str!("../fixtures/engines/triton.prom");

/// `text` with the value of every sample of `metric` (a metric name, optionally followed by the
/// start of its labels such as `nv_inference_pending_request_count{model="tensorrt_llm"`) set to
/// `value`. Panics if no sample matched, so a renamed fixture cannot make a test vacuous.
#[track_caller]
pub fn set(text: &str, metric: &str, value: f64) -> String {
    let mut hit = false;
    let out: Vec<String> = text
        .lines()
        .map(|line| {
            let matches = !line.starts_with('#')
                && line.starts_with(metric)
                && line[metric.len()..].starts_with(['{', ' ', ',']);
            if matches {
                hit = true;
                let (series, _) = line.rsplit_once(' ').expect("a sample line has a value");
                format!("{series} {value}")
            } else {
                line.to_string()
            }
        })
        .collect();
    assert!(hit, "no sample of {metric} in the fixture");
    out.join("\n") + "\n"
}

/// `text` with every `_bucket`, `_count` and `_sum` sample of histogram `base` multiplied by
/// `factor`: the same distribution observed again, as a running engine's counters grow.
#[track_caller]
pub fn grow(text: &str, base: &str, factor: f64) -> String {
    let mut hit = false;
    let out: Vec<String> = text
        .lines()
        .map(|line| {
            let series = ["_bucket", "_count", "_sum"].iter().any(|s| {
                let name = format!("{base}{s}");
                line.starts_with(&name) && line[name.len()..].starts_with(['{', ' '])
            });
            match line.rsplit_once(' ') {
                Some((labels, value)) if series => {
                    hit = true;
                    let v: f64 = value.parse().expect("a numeric sample value");
                    format!("{labels} {}", v * factor)
                }
                _ => line.to_string(),
            }
        })
        .collect();
    assert!(hit, "no sample of histogram {base} in the fixture");
    out.join("\n") + "\n"
}
