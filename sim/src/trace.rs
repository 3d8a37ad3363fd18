//! Request traces: the Azure LLM inference CSV, a plain CSV of timestamps (+ optional cost), the
//! built-in generators, and time/rate scaling. Parsing is pure (text in, requests out); only
//! `load_file` touches the file system.

use std::path::Path;

use super::cost::CostModel;
use super::SimError;
use gpu_workload::rng::SplitMix64;

/// One request: when it arrives and what it costs the replica serving it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Request {
    /// Arrival, seconds from the start of the trace.
    pub at: f64,
    /// Service time alone on an idle replica (batch of one), seconds.
    pub work_s: f64,
    /// KV-cache tokens held while in service (context + generated); drives GPU memory.
    pub kv_tokens: f64,
    /// Part of `work_s` before the first token (overhead + prefill); all of it without tokens.
    pub prefill_s: f64,
    /// Output tokens; 0 when the trace has no token counts (the SLO is then end-to-end latency).
    pub generated_tokens: f64,
}

impl Request {
    /// A request of `context` prompt tokens and `generated` output tokens under `cost`.
    pub fn tokens(at: f64, cost: &CostModel, context: f64, generated: f64) -> Request {
        Request {
            at,
            work_s: cost.work_s(context, generated),
            kv_tokens: context + generated,
            prefill_s: cost.work_s(context, 0.0),
            generated_tokens: generated,
        }
    }

    /// A request known only by its service time (plain traces).
    pub fn plain(at: f64, work_s: f64, cost: &CostModel) -> Request {
        Request {
            at,
            work_s,
            kv_tokens: cost.default_context_tokens + cost.default_generated_tokens,
            prefill_s: work_s,
            generated_tokens: 0.0,
        }
    }
}

/// A trace ready to replay: requests sorted by arrival, and the horizon the replay covers.
#[derive(Clone, Debug, PartialEq)]
pub struct Trace {
    pub requests: Vec<Request>,
    pub duration_s: f64,
    /// Where it came from, for the report.
    pub source: String,
}

/// Accepted trace file layouts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TraceFormat {
    /// Decide from the header: `TIMESTAMP,ContextTokens,GeneratedTokens` is Azure, else plain.
    Auto,
    /// Azure LLM inference trace: `TIMESTAMP,ContextTokens,GeneratedTokens`.
    Azure,
    /// `seconds[,cost_seconds]` per line, optional header.
    Plain,
}

fn line_error(line: usize, message: impl Into<String>) -> SimError {
    SimError::Trace {
        line,
        message: message.into(),
    }
}

/// Reads and parses a trace file.
pub fn load_file(path: &Path, format: TraceFormat, cost: &CostModel) -> Result<Trace, SimError> {
    let text = std::fs::read_to_string(path).map_err(|source| SimError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let mut trace = parse(&text, format, cost)?;
    trace.source = path.display().to_string();
    Ok(trace)
}

/// Parses trace text. Times are re-based so the first request arrives at 0.
pub fn parse(text: &str, format: TraceFormat, cost: &CostModel) -> Result<Trace, SimError> {
    let first = text
        .lines()
        .find(|l| !l.trim().is_empty() && !l.trim().starts_with('#'))
        .unwrap_or("");
    let is_azure_header = first
        .trim()
        .eq_ignore_ascii_case("TIMESTAMP,ContextTokens,GeneratedTokens");
    let format = match format {
        TraceFormat::Auto if is_azure_header => TraceFormat::Azure,
        TraceFormat::Auto => TraceFormat::Plain,
        f => f,
    };
    let mut requests = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let l = raw.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = l.split(',').map(str::trim).collect();
        match format {
            TraceFormat::Azure => {
                if is_azure_header && requests.is_empty() && l.eq_ignore_ascii_case(first.trim()) {
                    continue;
                }
                if fields.len() != 3 {
                    return Err(line_error(
                        line,
                        format!(
                            "expected 3 fields TIMESTAMP,ContextTokens,GeneratedTokens, found {}",
                            fields.len()
                        ),
                    ));
                }
                let at = parse_timestamp(fields[0]).ok_or_else(|| {
                    line_error(
                        line,
                        format!("TIMESTAMP '{}' is not accepted; expected YYYY-MM-DD HH:MM:SS[.fraction]", fields[0]),
                    )
                })?;
                let tokens = |name: &str, v: &str| {
                    v.parse::<u32>().map_err(|_| {
                        line_error(
                            line,
                            format!("{name} '{v}' is not accepted; expected a whole number >= 0"),
                        )
                    })
                };
                let ctx = tokens("ContextTokens", fields[1])?;
                let gen = tokens("GeneratedTokens", fields[2])?;
                requests.push(Request::tokens(at, cost, ctx as f64, gen as f64));
            }
            TraceFormat::Plain | TraceFormat::Auto => {
                let at = match fields[0].parse::<f64>() {
                    Ok(v) => v,
                    // A header is only allowed as the first non-empty line.
                    Err(_) if requests.is_empty() && raw.trim() == first.trim() => continue,
                    Err(_) => {
                        return Err(line_error(
                            line,
                            format!(
                                "timestamp '{}' is not accepted; expected seconds as a number >= 0",
                                fields[0]
                            ),
                        ))
                    }
                };
                if !at.is_finite() || at < 0.0 {
                    return Err(line_error(
                        line,
                        format!(
                            "timestamp '{}' is not accepted; expected seconds as a number >= 0",
                            fields[0]
                        ),
                    ));
                }
                let work_s = match fields.get(1) {
                    None | Some(&"") => cost.default_work_s(),
                    Some(c) => match c.parse::<f64>() {
                        Ok(v) if v.is_finite() && v > 0.0 && v <= 86_400.0 => v,
                        _ => {
                            return Err(line_error(
                                line,
                                format!("cost '{c}' is not accepted; expected service seconds > 0 and <= 86400"),
                            ))
                        }
                    },
                };
                if fields.len() > 2 {
                    return Err(line_error(
                        line,
                        format!(
                            "expected 1 or 2 fields (seconds[,cost_seconds]), found {}",
                            fields.len()
                        ),
                    ));
                }
                requests.push(Request::plain(at, work_s, cost));
            }
        }
    }
    if requests.is_empty() {
        return Err(line_error(0, "the trace holds no requests"));
    }
    requests.sort_by(|a, b| a.at.total_cmp(&b.at));
    let t0 = requests[0].at;
    for r in &mut requests {
        r.at -= t0;
    }
    let duration_s = requests.last().map_or(0.0, |r| r.at) + 1.0;
    Ok(Trace {
        requests,
        duration_s,
        source: String::new(),
    })
}

/// `YYYY-MM-DD HH:MM:SS[.fraction]` to seconds since 1970-01-01, no time zone: the workload's
/// load generator reads the same traces, so both use its parser.
pub fn parse_timestamp(s: &str) -> Option<f64> {
    gpu_workload::load::trace::parse_timestamp(s).ok()
}

/// Replays the trace at another pace and load: timestamps are multiplied by `time_scale`, and each
/// request is kept `rate_scale` times on average (copies land at random points before the next
/// arrival, so the shape of the load is kept without stacking copies on one instant).
pub fn scale(trace: &Trace, rate_scale: f64, time_scale: f64, seed: u64) -> Trace {
    let mut rng = SplitMix64::new(seed ^ 0x5CA1_E000);
    let n = trace.requests.len();
    let mean_gap = trace.duration_s / n.max(1) as f64;
    let mut out = Vec::with_capacity((n as f64 * rate_scale).ceil() as usize + 1);
    for (i, r) in trace.requests.iter().enumerate() {
        let gap = trace
            .requests
            .get(i + 1)
            .map_or(mean_gap, |next| next.at - r.at);
        let whole = rate_scale.floor() as usize;
        let copies = whole + usize::from(rng.uniform() < rate_scale - whole as f64);
        for c in 0..copies {
            let offset = if c == 0 { 0.0 } else { rng.uniform() * gap };
            out.push(Request {
                at: (r.at + offset) * time_scale,
                ..*r
            });
        }
    }
    out.sort_by(|a, b| a.at.total_cmp(&b.at));
    Trace {
        requests: out,
        duration_s: trace.duration_s * time_scale,
        source: trace.source.clone(),
    }
}

/// A load shape: request rate (per second) as a function of time.
#[derive(Clone, Debug, PartialEq)]
pub enum Shape {
    Poisson {
        rate: f64,
    },
    Step {
        low: f64,
        high: f64,
        at: f64,
    },
    Ramp {
        low: f64,
        high: f64,
        from: f64,
        to: f64,
    },
    Diurnal {
        mean: f64,
        amplitude: f64,
        period: f64,
    },
    Spike {
        base: f64,
        peak: f64,
        at: f64,
        width: f64,
    },
    OnOff {
        on_rate: f64,
        off_rate: f64,
        on: f64,
        off: f64,
        /// Each burst starts up to this many seconds before or after its place on the period
        /// (the same offsets at every seed): a scheduled job that does not fire on the second.
        jitter: f64,
    },
}

pub const GENERATORS: &str = "poisson, step, ramp, diurnal, spike, onoff";

impl Shape {
    /// Parses `name[:key=value,...]`; defaults are relative to `duration_s`.
    pub fn parse(spec: &str, duration_s: f64) -> Result<Shape, SimError> {
        let (name, params) = spec.split_once(':').unwrap_or((spec, ""));
        let mut kv: Vec<(String, f64)> = Vec::new();
        for part in params.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').ok_or_else(|| {
                SimError::Generator(format!("'{part}' in '{spec}' is not key=value"))
            })?;
            let v: f64 = v
                .trim()
                .parse()
                .ok()
                .filter(|v: &f64| v.is_finite() && *v >= 0.0)
                .ok_or_else(|| {
                    SimError::Generator(format!(
                        "{name}: {k}='{}' is not accepted; expected a number >= 0",
                        v.trim()
                    ))
                })?;
            kv.push((k.trim().to_string(), v));
        }
        let known: &[&str] = match name {
            "poisson" => &["rate"],
            "step" => &["low", "high", "at"],
            "ramp" => &["low", "high", "from", "to"],
            "diurnal" => &["mean", "amplitude", "period"],
            "spike" => &["base", "peak", "at", "width"],
            "onoff" => &["on_rate", "off_rate", "on", "off", "jitter"],
            other => {
                return Err(SimError::Generator(format!(
                    "unknown generator '{other}'; expected one of {GENERATORS}"
                )))
            }
        };
        for (k, _) in &kv {
            if !known.contains(&k.as_str()) {
                return Err(SimError::Generator(format!(
                    "{name}: unknown parameter '{k}'; accepted: {}",
                    known.join(", ")
                )));
            }
        }
        let get = |k: &str, d: f64| kv.iter().find(|(n, _)| n == k).map_or(d, |(_, v)| *v);
        let d = duration_s;
        let shape = match name {
            "poisson" => Shape::Poisson {
                rate: get("rate", 10.0),
            },
            "step" => Shape::Step {
                low: get("low", 5.0),
                high: get("high", 25.0),
                at: get("at", d / 3.0),
            },
            "ramp" => Shape::Ramp {
                low: get("low", 2.0),
                high: get("high", 30.0),
                from: get("from", d * 0.1),
                to: get("to", d * 0.9),
            },
            "diurnal" => Shape::Diurnal {
                mean: get("mean", 10.0),
                amplitude: get("amplitude", 0.8),
                period: get("period", 86_400.0),
            },
            "spike" => Shape::Spike {
                base: get("base", 5.0),
                peak: get("peak", 40.0),
                at: get("at", d / 2.0),
                width: get("width", 120.0),
            },
            _ => Shape::OnOff {
                on_rate: get("on_rate", 20.0),
                off_rate: get("off_rate", 0.0),
                on: get("on", 120.0),
                off: get("off", 480.0),
                jitter: get("jitter", 0.0),
            },
        };
        if let Shape::Diurnal {
            amplitude, period, ..
        } = shape
        {
            if amplitude > 1.0 || period <= 0.0 {
                return Err(SimError::Generator(
                    "diurnal: amplitude must be in 0..=1 and period > 0".into(),
                ));
            }
        }
        if let Shape::Ramp { from, to, .. } = shape {
            if to <= from {
                return Err(SimError::Generator(
                    "ramp: 'to' must be after 'from'".into(),
                ));
            }
        }
        if let Shape::OnOff {
            on, off, jitter, ..
        } = shape
        {
            if on + off <= 0.0 {
                return Err(SimError::Generator("onoff: on + off must be > 0".into()));
            }
            // Wider, and a burst could start before the previous one ended.
            if 2.0 * jitter > off {
                return Err(SimError::Generator(
                    "onoff: jitter must be at most half of off".into(),
                ));
            }
        }
        Ok(shape)
    }

    pub fn rate(&self, t: f64) -> f64 {
        match *self {
            Shape::Poisson { rate } => rate,
            Shape::Step { low, high, at } => {
                if t < at {
                    low
                } else {
                    high
                }
            }
            Shape::Ramp {
                low,
                high,
                from,
                to,
            } => low + (high - low) * ((t - from) / (to - from)).clamp(0.0, 1.0),
            // Lowest at t = 0 (midnight), highest half a period later.
            Shape::Diurnal {
                mean,
                amplitude,
                period,
            } => mean * (1.0 - amplitude * (std::f64::consts::TAU * t / period).cos()),
            Shape::Spike {
                base,
                peak,
                at,
                width,
            } => {
                if t >= at && t < at + width {
                    peak
                } else {
                    base
                }
            }
            Shape::OnOff {
                on_rate,
                off_rate,
                on,
                off,
                jitter,
            } => {
                let period = on + off;
                let k = (t / period).floor();
                // The burst of this period or of a neighbour moved into it by its offset.
                let burst = [k - 1.0, k, k + 1.0].iter().any(|&c| {
                    let start = c * period + jitter * burst_offset(c);
                    t >= start && t < start + on
                });
                if burst {
                    on_rate
                } else {
                    off_rate
                }
            }
        }
    }

    fn max_rate(&self) -> f64 {
        match *self {
            Shape::Poisson { rate } => rate,
            Shape::Step { low, high, .. } | Shape::Ramp { low, high, .. } => low.max(high),
            Shape::Diurnal {
                mean, amplitude, ..
            } => mean * (1.0 + amplitude),
            Shape::Spike { base, peak, .. } => base.max(peak),
            Shape::OnOff {
                on_rate, off_rate, ..
            } => on_rate.max(off_rate),
        }
    }
}

/// The offset of on-off burst number `cycle` from its place on the period, in [-1, 1) of the
/// jitter: a fixed draw per burst, so the shape stays a function of time.
fn burst_offset(cycle: f64) -> f64 {
    let mut rng = SplitMix64::new((cycle as i64 as u64) ^ 0x0B57_0FF5);
    2.0 * rng.uniform() - 1.0
}

/// Generates a non-homogeneous Poisson trace by thinning; request sizes are log-normal around the
/// cost model's default context and generated token counts.
pub fn generate(shape: &Shape, duration_s: f64, cost: &CostModel, seed: u64) -> Trace {
    let mut rng = SplitMix64::new(seed);
    let max = shape.max_rate();
    let mut requests = Vec::with_capacity((max * duration_s * 0.6) as usize + 16);
    let mut t = 0.0;
    if max > 0.0 {
        loop {
            t += rng.exponential(max);
            if t >= duration_s {
                break;
            }
            if rng.uniform() * max < shape.rate(t) {
                let ctx = rng
                    .log_normal(cost.default_context_tokens.max(1.0), 1.0)
                    .round();
                let gen = rng
                    .log_normal(cost.default_generated_tokens.max(1.0), 0.8)
                    .round();
                requests.push(Request::tokens(t, cost, ctx, gen));
            }
        }
    }
    Trace {
        requests,
        duration_s,
        source: format!("generator {shape:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cost() -> CostModel {
        CostModel::default()
    }

    #[test]
    fn azure_format_is_parsed_and_rebased() {
        let text = "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03.9799600,4808,10\n2023-11-16 18:17:04.0319600,3180,8\n2023-11-16 18:18:04.0319600,100,0";
        let t = parse(text, TraceFormat::Auto, &cost()).unwrap();
        assert_eq!(t.requests.len(), 3);
        assert_eq!(t.requests[0].at, 0.0);
        assert!((t.requests[1].at - 0.052).abs() < 1e-6);
        assert!((t.requests[2].at - 60.052).abs() < 1e-6);
        assert_eq!(t.requests[0].kv_tokens, 4818.0);
        assert!((t.requests[0].work_s - cost().work_s(4808.0, 10.0)).abs() < 1e-12);
    }

    #[test]
    fn timestamps_cross_midnight_and_month_ends() {
        let a = parse_timestamp("2024-02-29 23:59:59.5").unwrap();
        let b = parse_timestamp("2024-03-01 00:00:00.5").unwrap();
        assert!((b - a - 1.0).abs() < 1e-9);
        assert_eq!(parse_timestamp("1970-01-02 00:00:00"), Some(86_400.0));
        assert_eq!(parse_timestamp("2024-13-01 00:00:00"), None);
    }

    #[test]
    fn bad_lines_name_the_line_and_field() {
        let text = "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:03.9,10,2\n2023-11-16 18:17:04,ten,2";
        let e = parse(text, TraceFormat::Auto, &cost())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("line 3") && e.contains("ContextTokens 'ten'"),
            "{e}"
        );
        let e = parse("seconds,cost\n1.0,0.5\n-2\n", TraceFormat::Plain, &cost())
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 3") && e.contains(">= 0"), "{e}");
        let e = parse("1.0,abc\n", TraceFormat::Plain, &cost())
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 1") && e.contains("cost 'abc'"), "{e}");
        let e = parse("1.0\nfoo\n", TraceFormat::Plain, &cost())
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2"), "{e}");
        assert!(parse("", TraceFormat::Auto, &cost()).is_err());
    }

    #[test]
    fn plain_format_takes_optional_cost_and_sorts() {
        let t = parse("# comment\nt,cost\n5,2.5\n1\n", TraceFormat::Auto, &cost()).unwrap();
        assert_eq!(t.requests.len(), 2);
        assert_eq!(t.requests[0].at, 0.0);
        assert_eq!(t.requests[0].work_s, cost().default_work_s());
        assert_eq!(t.requests[1].at, 4.0);
        assert_eq!(t.requests[1].work_s, 2.5);
    }

    #[test]
    fn generators_follow_their_rate_and_are_deterministic() {
        let step = Shape::parse("step:low=2,high=20,at=1000", 3000.0).unwrap();
        let a = generate(&step, 3000.0, &cost(), 1);
        assert_eq!(a, generate(&step, 3000.0, &cost(), 1));
        assert_ne!(a.requests, generate(&step, 3000.0, &cost(), 2).requests);
        let before = a.requests.iter().filter(|r| r.at < 1000.0).count() as f64;
        let after = a.requests.iter().filter(|r| r.at >= 1000.0).count() as f64;
        assert!((before / 1000.0 - 2.0).abs() < 0.3, "{before}");
        assert!((after / 2000.0 - 20.0).abs() < 1.0, "{after}");
        for spec in [
            "poisson",
            "ramp",
            "diurnal:period=600",
            "spike",
            "onoff:on=10,off=30",
        ] {
            let s = Shape::parse(spec, 600.0).unwrap();
            let t = generate(&s, 600.0, &cost(), 3);
            assert!(!t.requests.is_empty(), "{spec}");
            assert!(t.requests.windows(2).all(|w| w[0].at <= w[1].at));
        }
        let off = Shape::parse("onoff:on_rate=10,off_rate=0,on=10,off=30", 400.0).unwrap();
        let t = generate(&off, 400.0, &cost(), 3);
        assert!(t.requests.iter().all(|r| r.at.rem_euclid(40.0) < 10.0));
        // With jitter each burst keeps its length and starts within the jitter of its place,
        // not all at the same offset, and never overlapping the next.
        let wander =
            Shape::parse("onoff:on_rate=1,off_rate=0,on=100,off=500,jitter=40", 1e5).unwrap();
        let starts: Vec<f64> = (1..150)
            .map(|k| {
                let place = k as f64 * 600.0;
                let from = (place - 41.0) as i64;
                (from..place as i64 + 41)
                    .map(|t| t as f64)
                    .find(|&t| wander.rate(t) > 0.0)
                    .expect("a burst near its place")
            })
            .collect();
        for (k, s) in starts.iter().enumerate() {
            let place = (k + 1) as f64 * 600.0;
            assert!((s - place).abs() <= 40.0, "{k}: {s}");
            assert!(
                wander.rate(s + 99.0) > 0.0 && wander.rate(s + 101.0) == 0.0,
                "{k}"
            );
        }
        let offsets: Vec<i64> = starts
            .iter()
            .enumerate()
            .map(|(k, s)| (s - (k + 1) as f64 * 600.0) as i64)
            .collect();
        assert!(offsets.iter().any(|&o| o < -20) && offsets.iter().any(|&o| o > 20));
        assert!(Shape::parse("onoff:off=60,jitter=31", 600.0).is_err());
    }

    #[test]
    fn bad_generator_specs_are_named() {
        let e = Shape::parse("sine", 60.0).unwrap_err().to_string();
        assert!(e.contains("'sine'") && e.contains("poisson"), "{e}");
        let e = Shape::parse("step:hight=3", 60.0).unwrap_err().to_string();
        assert!(e.contains("'hight'") && e.contains("high"), "{e}");
        let e = Shape::parse("poisson:rate=-1", 60.0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("rate='-1'"), "{e}");
        assert!(Shape::parse("diurnal:amplitude=2", 60.0).is_err());
    }

    #[test]
    fn scaling_changes_rate_and_pace() {
        let s = Shape::parse("poisson:rate=5", 1000.0).unwrap();
        let t = generate(&s, 1000.0, &cost(), 9);
        let n = t.requests.len() as f64;
        let x3 = scale(&t, 3.0, 1.0, 1);
        assert_eq!(x3.requests.len() as f64, 3.0 * n);
        let half = scale(&t, 0.5, 1.0, 1).requests.len() as f64;
        assert!((half / n - 0.5).abs() < 0.05, "{half}");
        let slow = scale(&t, 1.0, 2.0, 1);
        assert_eq!(slow.duration_s, 2000.0);
        assert_eq!(slow.requests.len(), t.requests.len());
        assert!((slow.requests[10].at - 2.0 * t.requests[10].at).abs() < 1e-9);
        assert!(x3.requests.windows(2).all(|w| w[0].at <= w[1].at));
        assert_eq!(x3, scale(&t, 3.0, 1.0, 1));
    }
}
