//! The load plan: phases of constant request rate (idle, burst, sustained, idle by default) or a
//! rate trace, stretched or shrunk to the requested duration.

use std::path::Path;

use super::DemoError;

/// One phase: `rate` requests per second for `secs` seconds.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Phase {
    pub name: String,
    pub secs: f64,
    pub rate: f64,
}

/// Phases back to back from t = 0.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Plan {
    pub phases: Vec<Phase>,
}

/// The default plan (180 s): quiet, a burst well above one replica's capacity, a sustained
/// middle level, then quiet long enough for the scale-down windows to pass.
pub const DEFAULT_PHASES: &str = "idle:20:1,burst:55:30,sustained:45:14,idle:60:1";

/// Largest accepted rate, requests per second (every request is a real HTTP call).
const MAX_RATE: f64 = 2000.0;

impl Plan {
    /// `name:seconds:rate,...`.
    pub fn parse(spec: &str) -> Result<Plan, DemoError> {
        let bad = |part: &str, why: &str| DemoError::Arg {
            name: "--phases",
            message: format!("'{part}' {why}; expected NAME:SECONDS:RATE, e.g. burst:60:30"),
        };
        let mut phases = Vec::new();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let fields: Vec<&str> = part.split(':').collect();
            let [name, secs, rate] = fields[..] else {
                return Err(bad(part, "does not have three fields"));
            };
            let secs: f64 = secs
                .parse()
                .map_err(|_| bad(part, "has a duration that is not a number"))?;
            let rate: f64 = rate
                .parse()
                .map_err(|_| bad(part, "has a rate that is not a number"))?;
            if !(secs.is_finite() && secs > 0.0 && secs <= 86_400.0) {
                return Err(bad(part, "needs 0 < SECONDS <= 86400"));
            }
            if !(rate.is_finite() && (0.0..=MAX_RATE).contains(&rate)) {
                return Err(bad(part, &format!("needs 0 <= RATE <= {MAX_RATE}")));
            }
            if name.is_empty() || name.len() > 32 {
                return Err(bad(part, "needs a name of 1-32 characters"));
            }
            phases.push(Phase {
                name: name.to_string(),
                secs,
                rate,
            });
        }
        if phases.is_empty() {
            return Err(bad(spec, "has no phase"));
        }
        Ok(Plan { phases })
    }

    /// A rate trace: CSV lines `seconds,rate` (rate from that second until the next line), with
    /// an optional header; `#` starts a comment.
    pub fn from_trace(path: &Path) -> Result<Plan, DemoError> {
        let text = std::fs::read_to_string(path).map_err(|source| DemoError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse_trace(&text).map_err(|(line, message)| DemoError::Arg {
            name: "--trace",
            message: format!("{} line {line}: {message}", path.display()),
        })
    }

    fn parse_trace(text: &str) -> Result<Plan, (usize, String)> {
        let mut points: Vec<(f64, f64)> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let mut fields = line.split(',').map(str::trim);
            let (Some(t), Some(r), None) = (fields.next(), fields.next(), fields.next()) else {
                return Err((i + 1, format!("'{line}' is not SECONDS,RATE")));
            };
            let (Ok(t), Ok(r)) = (t.parse::<f64>(), r.parse::<f64>()) else {
                if points.is_empty() && i == 0 {
                    continue; // header
                }
                return Err((i + 1, format!("'{line}' is not two numbers")));
            };
            let last = points.last().map_or(-1.0, |p| p.0);
            if !(t.is_finite() && t > last && t <= 86_400.0) {
                return Err((i + 1, format!("time {t} must increase and be <= 86400")));
            }
            if !(r.is_finite() && (0.0..=MAX_RATE).contains(&r)) {
                return Err((i + 1, format!("rate {r} must be within 0..={MAX_RATE}")));
            }
            points.push((t, r));
        }
        if points.len() < 2 {
            return Err((
                0,
                "needs at least two lines (the last one marks the end)".into(),
            ));
        }
        let phases = points
            .windows(2)
            .map(|w| Phase {
                name: format!("trace@{}s", w[0].0),
                secs: w[1].0 - w[0].0,
                rate: w[0].1,
            })
            .collect();
        Ok(Plan { phases })
    }

    pub fn duration(&self) -> f64 {
        self.phases.iter().map(|p| p.secs).sum()
    }

    /// The same phases, every one stretched by `total / duration()`.
    pub fn scaled_to(&self, total: f64) -> Plan {
        let k = total / self.duration();
        Plan {
            phases: self
                .phases
                .iter()
                .map(|p| Phase {
                    secs: p.secs * k,
                    ..p.clone()
                })
                .collect(),
        }
    }

    /// The phase running at `t` (the last one after the end).
    pub fn at(&self, t: f64) -> (usize, &Phase) {
        let mut start = 0.0;
        for (i, p) in self.phases.iter().enumerate() {
            if t < start + p.secs {
                return (i, p);
            }
            start += p.secs;
        }
        let last = self.phases.len() - 1;
        (last, &self.phases[last])
    }

    /// Start time of each phase.
    pub fn starts(&self) -> Vec<f64> {
        self.phases
            .iter()
            .scan(0.0, |t, p| {
                let s = *t;
                *t += p.secs;
                Some(s)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_plan_parses_and_scales_proportionally() {
        let plan = Plan::parse(DEFAULT_PHASES).unwrap();
        assert_eq!(plan.duration(), 180.0);
        let short = plan.scaled_to(36.0);
        assert!((short.duration() - 36.0).abs() < 1e-9);
        assert!((short.phases[1].secs - 11.0).abs() < 1e-9);
        assert_eq!(short.phases[1].rate, 30.0);
        assert_eq!(short.at(3.9).1.name, "idle");
        assert_eq!(short.at(3.9).0, 0);
        assert_eq!(short.at(4.0).1.name, "burst");
        assert_eq!(short.at(1000.0).0, 3);
        assert_eq!(short.starts(), vec![0.0, 4.0, 15.0, 24.0]);
    }

    #[test]
    fn bad_phases_name_the_part_at_fault() {
        for (spec, needle) in [
            ("idle:20", "three fields"),
            ("idle:x:1", "not a number"),
            ("idle:0:1", "0 < SECONDS"),
            ("idle:10:-1", "RATE"),
            ("", "no phase"),
        ] {
            let e = Plan::parse(spec).unwrap_err().to_string();
            assert!(e.contains(needle) && e.contains("--phases"), "{spec}: {e}");
        }
    }

    #[test]
    fn trace_lines_become_phases_until_the_last_timestamp() {
        let plan = Plan::parse_trace("seconds,rate\n0,1\n10,20 # burst\n\n25,2\n40,0\n").unwrap();
        let got: Vec<(f64, f64)> = plan.phases.iter().map(|p| (p.secs, p.rate)).collect();
        assert_eq!(got, vec![(10.0, 1.0), (15.0, 20.0), (15.0, 2.0)]);
        assert_eq!(Plan::parse_trace("0,1\n0,2\n").unwrap_err().0, 2);
        assert_eq!(Plan::parse_trace("0,1\n").unwrap_err().0, 0);
        assert_eq!(Plan::parse_trace("0,1\n5,a\n").unwrap_err().0, 2);
    }
}
