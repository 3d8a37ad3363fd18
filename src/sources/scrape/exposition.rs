//! Parser for the Prometheus text exposition format (what `/metrics` endpoints serve).
//!
//! Only what a scaler needs: sample lines with labels and values, indexed by metric name. Comments,
//! HELP/TYPE lines and timestamps are skipped. Malformed lines are counted, not fatal, because one
//! exporter's odd line must not blind the scaler to the rest of the scrape.
//!
//! A scrape is parsed as it arrives (`Parser`), keeping only the metrics its ScaledObjects read:
//! what the scaler holds of a body is those series, whatever else the endpoint serves, and
//! `Parser` says how many bytes they take so the body budget counts the parsed form, which is
//! many times the text for labelled series. Lines longer than `MAX_LINE` are skipped as
//! malformed, so a body without newlines cannot be held whole either.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// The longest line kept whole while its end is awaited; longer ones are skipped as malformed.
/// Real exposition lines are a few hundred bytes.
pub const MAX_LINE: usize = 16 << 10;

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

    /// Heap bytes this series takes in an `Exposition`, allocator overhead included, or a little
    /// more: its place in the metric's vector (which may be twice the length), its labels'
    /// vector and strings.
    fn cost(&self) -> usize {
        const ALLOCATION: usize = 16;
        let strings: usize = self
            .labels
            .iter()
            .map(|(k, v)| k.capacity() + v.capacity() + 2 * ALLOCATION)
            .sum();
        2 * std::mem::size_of::<Series>()
            + self.labels.capacity() * std::mem::size_of::<(String, String)>()
            + ALLOCATION
            + strings
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
    let mut parser = Parser::new(None);
    crate::sources::budget::Consume::chunk(&mut parser, text.as_bytes());
    crate::sources::budget::Consume::end(&mut parser);
    parser.finish()
}

/// Parses an exposition chunk by chunk (`budget::Consume`), keeping the series of the wanted
/// metric names only (all of them without a list).
pub struct Parser {
    wanted: Option<Arc<HashSet<String>>>,
    /// The start of a line whose end has not arrived yet.
    line: Vec<u8>,
    /// The current line outgrew `MAX_LINE`: skipped up to its end.
    overlong: bool,
    out: Exposition,
}

impl Parser {
    pub fn new(wanted: Option<Arc<HashSet<String>>>) -> Parser {
        Parser {
            wanted,
            line: Vec::new(),
            overlong: false,
            out: Exposition::default(),
        }
    }

    /// What was kept.
    pub fn finish(self) -> Exposition {
        self.out
    }

    /// Parses one whole line; returns the bytes kept.
    fn whole_line(&mut self, bytes: &[u8]) -> usize {
        let text = String::from_utf8_lossy(bytes);
        let line = text.trim();
        if line.is_empty() || line.starts_with('#') {
            return 0;
        }
        if let Some(wanted) = &self.wanted {
            let name = &line[..line
                .find(|c: char| c == '{' || c.is_whitespace())
                .unwrap_or(line.len())];
            if !wanted.contains(name) {
                return 0;
            }
        }
        match parse_line(line) {
            Some((name, mut series)) => {
                for (_, v) in &mut series.labels {
                    v.shrink_to_fit();
                }
                series.labels.shrink_to_fit();
                let mut cost = series.cost();
                let entry = match self.out.metrics.get_mut(&name) {
                    Some(v) => v,
                    None => {
                        cost += name.capacity() + 64;
                        self.out.metrics.entry(name).or_default()
                    }
                };
                entry.push(series);
                cost
            }
            None => {
                self.out.malformed += 1;
                0
            }
        }
    }

    /// Ends the pending line, if any; returns the bytes kept.
    fn end_line(&mut self) -> usize {
        if std::mem::take(&mut self.overlong) {
            self.out.malformed += 1;
            return 0;
        }
        let line = std::mem::take(&mut self.line);
        let kept = self.whole_line(&line);
        // The buffer is reused for the next partial line, at most `MAX_LINE` long.
        self.line = line;
        self.line.clear();
        kept
    }

    fn pending(&mut self, bytes: &[u8]) {
        if self.overlong {
            return;
        }
        if self.line.len() + bytes.len() > MAX_LINE {
            self.overlong = true;
            self.line = Vec::new();
        } else {
            self.line.extend_from_slice(bytes);
        }
    }
}

impl crate::sources::budget::Consume for Parser {
    fn chunk(&mut self, mut bytes: &[u8]) -> usize {
        let mut kept = 0;
        while let Some(i) = bytes.iter().position(|b| *b == b'\n') {
            let (head, tail) = (&bytes[..i], &bytes[i + 1..]);
            if self.line.is_empty() && !self.overlong {
                kept += self.whole_line(head);
            } else {
                self.pending(head);
                kept += self.end_line();
            }
            bytes = tail;
        }
        self.pending(bytes);
        kept
    }

    fn end(&mut self) -> usize {
        if self.line.is_empty() && !self.overlong {
            return 0;
        }
        self.end_line()
    }
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

    use crate::sources::budget::Consume;

    /// `text` fed to a parser for `wanted` in chunks of `size` bytes: what it kept, and the
    /// bytes it said it kept.
    fn streamed(text: &str, wanted: Option<&[&str]>, size: usize) -> (Exposition, usize) {
        let wanted = wanted.map(|w| Arc::new(w.iter().map(|n| n.to_string()).collect()));
        let mut parser = Parser::new(wanted);
        let mut kept = 0;
        for chunk in text.as_bytes().chunks(size) {
            kept += parser.chunk(chunk);
        }
        kept += parser.end();
        (parser.finish(), kept)
    }

    #[test]
    fn a_body_parsed_in_chunks_is_the_body_parsed_whole() {
        let text = "# HELP q queue\nq{a=\"x\",b=\"y\\\"z\"} 4.5 1700000000000\r\nbad\nh_bucket{le=\"+Inf\"} 7\nlast 1";
        let whole = parse(text);
        assert_eq!(whole.len(), 3);
        for size in [1, 2, 3, 7, 64] {
            assert_eq!(streamed(text, None, size).0, whole, "chunks of {size}");
        }
    }

    #[test]
    fn only_the_wanted_metrics_are_kept_and_their_size_is_counted() {
        let mut text = String::new();
        for i in 0..1000 {
            text.push_str(&format!(
                "other{{pod=\"p\",i=\"{i}\"}} 1\nwanted{{i=\"{i}\"}} 2\n"
            ));
        }
        let (kept, bytes) = streamed(&text, Some(&["wanted"]), 4096);
        assert_eq!((kept.get("wanted").len(), kept.len()), (1000, 1000));
        assert!(!kept.has("other"));
        // At least what the series take: the series, its label vector and two strings each.
        let floor = 1000 * (std::mem::size_of::<Series>() + 48 + 2);
        assert!(bytes >= floor, "{bytes} < {floor}");
        assert_eq!(streamed(&text, Some(&[]), 4096), (Exposition::default(), 0));
    }

    #[test]
    fn a_line_longer_than_the_limit_is_skipped_without_being_held() {
        let long = format!("wanted{{a=\"{}\"}} 1\nwanted 2\n", "x".repeat(MAX_LINE));
        let (kept, _) = streamed(&long, Some(&["wanted"]), 1000);
        assert_eq!(kept.get("wanted").len(), 1);
        assert_eq!(kept.get("wanted")[0].value, 2.0);
        assert_eq!(kept.malformed, 1);
        let mut parser = Parser::new(None);
        parser.chunk(long.as_bytes().split_at(MAX_LINE + 10).0);
        assert!(
            parser.line.capacity() <= MAX_LINE,
            "{}",
            parser.line.capacity()
        );
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
