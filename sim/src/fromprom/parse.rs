//! What `--from-prometheus` reads from its command line: the label selector (label matchers only,
//! re-written with the scaler's own PromQL escaping, so no text of it reaches a query unparsed)
//! and times (RFC 3339 or unix seconds), and the timestamp formats it writes. Pure.

use keda_gpu_scaler::sources::prometheus::promql::string_literal;

/// One label matcher of `--selector`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Matcher {
    pub label: String,
    pub op: MatchOp,
    pub value: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatchOp {
    Eq,
    Ne,
    Re,
    NotRe,
}

impl MatchOp {
    fn text(self) -> &'static str {
        match self {
            MatchOp::Eq => "=",
            MatchOp::Ne => "!=",
            MatchOp::Re => "=~",
            MatchOp::NotRe => "!~",
        }
    }
}

const MAX_MATCHERS: usize = 16;
const MAX_VALUE: usize = 1024;

fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && s.len() <= 128
}

/// Parses `label="value",label2=~"regex",...` (optionally inside braces): PromQL label matchers
/// and nothing else. Values are double- or single-quoted with PromQL's escapes. `__name__` is
/// refused (the preset chooses the metrics). The error names what was not accepted.
pub fn parse_selector(text: &str) -> Result<Vec<Matcher>, String> {
    let mut s = text.trim();
    if let Some(inner) = s.strip_prefix('{') {
        s = inner
            .strip_suffix('}')
            .ok_or("an opening '{' without its closing '}'")?
            .trim();
    }
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    let skip_ws = |i: &mut usize| {
        while *i < chars.len() && chars[*i].is_whitespace() {
            *i += 1;
        }
    };
    loop {
        skip_ws(&mut i);
        if i >= chars.len() {
            break;
        }
        let start = i;
        while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
            i += 1;
        }
        let label: String = chars[start..i].iter().collect();
        if !is_label_name(&label) {
            return Err(format!(
                "expected a label name at '{}'; a selector is label matchers such as namespace=\"llm\",model_name=\"m\"",
                chars[start..].iter().take(20).collect::<String>()
            ));
        }
        if label == "__name__" {
            return Err(
                "__name__ is not accepted: --preset chooses the metrics; the selector only narrows their series".into(),
            );
        }
        skip_ws(&mut i);
        let two: String = chars[i..chars.len().min(i + 2)].iter().collect();
        let op = match two.as_str() {
            "=~" => MatchOp::Re,
            "!~" => MatchOp::NotRe,
            "!=" => MatchOp::Ne,
            _ if chars.get(i) == Some(&'=') => MatchOp::Eq,
            _ => return Err(format!("expected =, !=, =~ or !~ after '{label}'")),
        };
        i += if op == MatchOp::Eq { 1 } else { 2 };
        skip_ws(&mut i);
        let quote = match chars.get(i) {
            Some(&q @ ('"' | '\'')) => q,
            _ => {
                return Err(format!(
                    "the value of '{label}' must be a quoted string, such as {label}=\"value\""
                ))
            }
        };
        i += 1;
        let mut value = String::new();
        loop {
            match chars.get(i) {
                None => return Err(format!("the value of '{label}' has no closing quote")),
                Some(&c) if c == quote => {
                    i += 1;
                    break;
                }
                Some('\\') => {
                    let c = match chars.get(i + 1) {
                        Some('n') => '\n',
                        Some('t') => '\t',
                        Some('r') => '\r',
                        Some(&c @ ('\\' | '"' | '\'')) => c,
                        _ => {
                            return Err(format!(
                                "the value of '{label}' has an escape other than \\\\, \\\", \\', \\n, \\t or \\r"
                            ))
                        }
                    };
                    value.push(c);
                    i += 2;
                }
                Some(&c) => {
                    value.push(c);
                    i += 1;
                }
            }
        }
        if value.len() > MAX_VALUE {
            return Err(format!(
                "the value of '{label}' is longer than {MAX_VALUE} bytes"
            ));
        }
        out.push(Matcher { label, op, value });
        if out.len() > MAX_MATCHERS {
            return Err(format!("more than {MAX_MATCHERS} matchers"));
        }
        skip_ws(&mut i);
        match chars.get(i) {
            None => break,
            Some(',') => i += 1,
            Some(c) => {
                return Err(format!(
                    "expected ',' between matchers, found '{c}': only label matchers are accepted, no PromQL"
                ))
            }
        }
    }
    Ok(out)
}

/// The selector of `metric` (a name, or a name with equality matchers as the presets write them)
/// narrowed by `matchers`: `name{a="b",...}`, every value through the scaler's escaping.
pub fn series_selector(metric: &str, suffix: &str, matchers: &[Matcher]) -> String {
    let (name, own) = match keda_gpu_scaler::spec::MetricRef::parse(metric) {
        Some(m) => (m.name, m.labels),
        None => (metric.to_string(), Vec::new()),
    };
    let mut parts: Vec<String> = own
        .iter()
        .map(|(k, v)| format!("{k}={}", string_literal(v)))
        .collect();
    parts.extend(
        matchers
            .iter()
            .map(|m| format!("{}{}{}", m.label, m.op.text(), string_literal(&m.value))),
    );
    if parts.is_empty() {
        format!("{name}{suffix}")
    } else {
        format!("{name}{suffix}{{{}}}", parts.join(","))
    }
}

/// The selector as the user would write it again (for messages and the report).
pub fn selector_text(matchers: &[Matcher]) -> String {
    matchers
        .iter()
        .map(|m| format!("{}{}{}", m.label, m.op.text(), string_literal(&m.value)))
        .collect::<Vec<_>>()
        .join(",")
}

/// Seconds since 1970 from unix seconds (`1717200000`, `1717200000.5`) or RFC 3339
/// (`2024-06-01T00:00:00Z`, `2024-06-01T02:00:00+02:00`, fractions allowed).
pub fn parse_time(text: &str) -> Result<f64, String> {
    let s = text.trim();
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return s
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .ok_or_else(|| format!("'{s}' is not a number of seconds"));
    }
    let bad = || {
        format!("'{s}' is not accepted; expected RFC 3339 (2024-06-01T00:00:00Z) or unix seconds")
    };
    if s.len() < 20 || !matches!(s.as_bytes()[10], b'T' | b't' | b' ') {
        return Err(bad());
    }
    let (offset_s, body) = if let Some(b) = s.strip_suffix(['Z', 'z']) {
        (0.0, b)
    } else {
        let at = s.len().checked_sub(6).ok_or_else(bad)?;
        let (b, off) = s.split_at(at);
        let sign = match off.as_bytes()[0] {
            b'+' => 1.0,
            b'-' => -1.0,
            _ => return Err(bad()),
        };
        let (h, m) = off[1..].split_once(':').ok_or_else(bad)?;
        let h: f64 = h.parse().map_err(|_| bad())?;
        let m: f64 = m.parse().map_err(|_| bad())?;
        (sign * (h * 3600.0 + m * 60.0), b)
    };
    let local = format!("{} {}", &body[..10], &body[11..]);
    let t = crate::trace::parse_timestamp(&local).ok_or_else(bad)?;
    Ok(t - offset_s)
}

/// (year, month, day) of a day count since 1970-01-01 (Howard Hinnant's civil_from_days).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn split(t: f64) -> (i64, i64, i64, i64, i64, i64, f64) {
    let whole = t.floor();
    let frac = t - whole;
    let secs = whole as i64;
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    (y, mo, d, sod / 3600, sod % 3600 / 60, sod % 60, frac)
}

/// `2024-06-01T00:00:00Z` (whole seconds).
pub fn rfc3339(t: f64) -> String {
    let (y, mo, d, h, mi, s, _) = split(t.round());
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

/// The Azure trace's `YYYY-MM-DD HH:MM:SS.fffffff` (UTC, 100 ns).
pub fn azure_timestamp(t: f64) -> String {
    let ticks = (t * 1e7).round() as i64;
    let (y, mo, d, h, mi, s, _) = split(ticks.div_euclid(10_000_000) as f64);
    format!(
        "{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}.{:07}",
        ticks.rem_euclid(10_000_000)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_are_label_matchers_only() {
        let m = parse_selector(r#"namespace="llm", model_name=~'llama.*',pod!="x\"y",  a!~"b""#)
            .unwrap();
        assert_eq!(m.len(), 4);
        assert_eq!(m[1].op, MatchOp::Re);
        assert_eq!(m[1].value, "llama.*");
        assert_eq!(m[2].value, "x\"y");
        assert_eq!(parse_selector("{namespace=\"a\"}").unwrap().len(), 1);
        assert!(parse_selector("").unwrap().is_empty());
        for bad in [
            r#"namespace="a"} or vector(1) #"#,
            r#"namespace="a" or up"#,
            r#"sum(x)"#,
            r#"namespace=a"#,
            r#"__name__="up""#,
            r#"namespace="a"#,
            r#"1abc="x""#,
            r#"namespace=="a""#,
            r#"a="\x""#,
        ] {
            assert!(parse_selector(bad).is_err(), "{bad}");
        }
        let e = parse_selector(r#"namespace="a" or up"#).unwrap_err();
        assert!(e.contains("no PromQL"), "{e}");
    }

    #[test]
    fn selectors_are_rewritten_with_escaping() {
        let m = parse_selector(r#"namespace="a\"b",model_name=~"x|y""#).unwrap();
        assert_eq!(
            series_selector("vllm:request_success_total", "", &m),
            r#"vllm:request_success_total{namespace="a\"b",model_name=~"x|y"}"#
        );
        assert_eq!(
            series_selector(
                "nv_llm_input_token_len{response_metric_type=\"total_input_tokens\"}",
                "_bucket",
                &m[..1]
            ),
            r#"nv_llm_input_token_len_bucket{response_metric_type="total_input_tokens",namespace="a\"b"}"#
        );
        assert_eq!(series_selector("up", "", &[]), "up");
        assert_eq!(selector_text(&m), r#"namespace="a\"b",model_name=~"x|y""#);
    }

    #[test]
    fn times_in_both_forms_and_back() {
        assert_eq!(parse_time("1717200000").unwrap(), 1_717_200_000.0);
        assert_eq!(parse_time("2024-06-01T00:00:00Z").unwrap(), 1_717_200_000.0);
        assert_eq!(
            parse_time("2024-06-01T02:00:00+02:00").unwrap(),
            1_717_200_000.0
        );
        assert_eq!(
            parse_time("2024-05-31T23:30:00-00:30").unwrap(),
            1_717_200_000.0
        );
        assert_eq!(
            parse_time("2024-06-01 00:00:00.5Z").unwrap(),
            1_717_200_000.5
        );
        for bad in [
            "yesterday",
            "2024-06-01",
            "2024-06-01T00:00:00",
            "-5",
            "2024-13-01T00:00:00Z",
        ] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
        assert_eq!(rfc3339(1_717_200_000.0), "2024-06-01T00:00:00Z");
        assert_eq!(rfc3339(951_868_799.0), "2000-02-29T23:59:59Z");
        assert_eq!(
            azure_timestamp(1_717_200_000.25),
            "2024-06-01 00:00:00.2500000"
        );
        let t = 1_717_203_723.123_456_7;
        let back = crate::trace::parse_timestamp(&azure_timestamp(t)).unwrap();
        assert!((back - t).abs() < 1e-6);
    }
}
