//! Parser for the Prometheus text exposition format (what `/metrics` endpoints serve).
//!
//! Only what a scaler needs: sample lines with labels and values, indexed by metric name. Comments,
//! HELP/TYPE lines and timestamps are skipped. Malformed lines are counted, not fatal, because one
//! exporter's odd line must not blind the scaler to the rest of the scrape.

use std::collections::HashMap;

/// One sample line.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Series {
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A parsed scrape: series grouped by metric name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Exposition {
    metrics: HashMap<String, Vec<Series>>,
    /// Lines that could not be parsed.
    pub malformed: usize,
}

impl Exposition {
    pub fn get(&self, name: &str) -> &[Series] {
        self.metrics.get(name).map(Vec::as_slice).unwrap_or(&[])
    }

    pub fn has(&self, name: &str) -> bool {
        !self.get(name).is_empty()
    }

    pub fn len(&self) -> usize {
        self.metrics.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.metrics.is_empty()
    }
}

/// Parses a whole exposition body.
pub fn parse(text: &str) -> Exposition {
    let mut out = Exposition::default();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match parse_line(line) {
            Some((name, series)) => out.metrics.entry(name).or_default().push(series),
            None => out.malformed += 1,
        }
    }
    out
}

fn parse_line(line: &str) -> Option<(String, Series)> {
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .unwrap_or(line.len());
    let name = &line[..name_end];
    if name.is_empty() {
        return None;
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        let (parsed, remaining) = parse_labels(after)?;
        labels = parsed;
        rest = remaining;
    }
    let mut fields = rest.split_whitespace();
    let value = parse_value(fields.next()?)?;
    // An optional timestamp may follow; anything more is malformed.
    if let Some(ts) = fields.next() {
        ts.parse::<i64>().ok()?;
    }
    if fields.next().is_some() {
        return None;
    }
    Some((name.to_string(), Series { labels, value }))
}

/// Parses `k="v",k2="v2"}` and returns the labels and what follows the closing brace.
fn parse_labels(mut s: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut labels = Vec::new();
    loop {
        s = s.trim_start();
        if let Some(rest) = s.strip_prefix('}') {
            return Some((labels, rest));
        }
        let eq = s.find('=')?;
        let key = s[..eq].trim();
        if key.is_empty() {
            return None;
        }
        s = s[eq + 1..].trim_start().strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '"' => break i,
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                c => value.push(c),
            }
        };
        labels.push((key.to_string(), value));
        s = s[end + 1..].trim_start();
        if let Some(rest) = s.strip_prefix(',') {
            s = rest;
        }
    }
}

fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => s.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_labels_values_and_skips_comments() {
        let e = parse(
            "# HELP q queue\n# TYPE q gauge\nq 3\nq{a=\"x\",b=\"y\\\"z\\n\"} 4.5 1700000000000\n\nh_bucket{le=\"+Inf\"} 7\n",
        );
        assert_eq!(e.get("q").len(), 2);
        assert_eq!(e.get("q")[0].value, 3.0);
        assert_eq!(e.get("q")[1].label("b"), Some("y\"z\n"));
        assert_eq!(e.get("h_bucket")[0].label("le"), Some("+Inf"));
        assert_eq!(e.malformed, 0);
    }

    #[test]
    fn special_values() {
        let e = parse("a NaN\nb +Inf\nc -Inf\nd 1e3\n");
        assert!(e.get("a")[0].value.is_nan());
        assert_eq!(e.get("b")[0].value, f64::INFINITY);
        assert_eq!(e.get("c")[0].value, f64::NEG_INFINITY);
        assert_eq!(e.get("d")[0].value, 1000.0);
    }

    #[test]
    fn malformed_lines_are_counted_not_fatal() {
        let e = parse("good 1\nbad\nworse{a=\"x\" 2\n{a=\"1\"} 3\nx 1 2 3\ny abc\nfine{} 2\n");
        assert_eq!(e.get("good")[0].value, 1.0);
        assert_eq!(e.get("fine")[0].value, 2.0);
        assert_eq!(e.malformed, 5);
    }

    #[test]
    fn reads_the_real_dcgm_exporter_sample() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/dcgm-exporter-sample.prom"
        );
        let Ok(text) = std::fs::read_to_string(path) else {
            panic!("fixture missing at {path}");
        };
        let e = parse(&text);
        assert_eq!(e.malformed, 0);
        let util = e.get("DCGM_FI_DEV_GPU_UTIL");
        assert!(!util.is_empty());
        assert!(util[0].label("UUID").unwrap().starts_with("GPU-"));
        assert!(e.has("DCGM_FI_DEV_FB_USED") && e.has("DCGM_FI_DEV_FB_FREE"));
    }
}
