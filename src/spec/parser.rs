//! The parser: a metadata map in, a `ScalerSpec` or every problem with it out. The source keys
//! are read in `source.rs`, the signals in `signals.rs`; this file holds the rest (scoring and
//! replica settings) and the reading helpers they share.

use std::collections::{BTreeMap, HashMap};

use super::model::SignalSpec;
use super::model::{ParseContext, Problem, ScalerSpec, SpecError};
use super::registry::OBJECTIVE_KEY;
use super::registry::{self, DEFAULT_ACTIVATION, DEFAULT_MAX_REPLICAS, DEFAULT_METRIC_NAME};
use super::validate::{self, is_kubernetes_metric_name};
use crate::score::{Activation, Capacity, ForecastConfig, Limits, ObjectiveConfig, Smoothing};

/// The attainment SLO mode plans for when `attainment` is not set: the share most latency
/// objectives are written at.
pub const DEFAULT_ATTAINMENT: f64 = 0.95;

/// The planning horizon until a discovery source measures one (`coldStartSeconds`): serving
/// engines take one to eight minutes from pod creation to ready (image pull, weights, warm-up);
/// two minutes is the short end of that for a model that fits one GPU. Too short a horizon
/// shortens the window only while the attainment's own minimum (`1 / (1 - a)` samples, 300 s
/// at 95 %) is longer, so the default matters little until the measurement replaces it.
pub const DEFAULT_COLD_START_S: f64 = 120.0;

/// Parses and validates a trigger's metadata map, with no namespace and no server defaults.
pub fn parse(metadata: &HashMap<String, String>) -> Result<ScalerSpec, SpecError> {
    parse_in(ParseContext::default(), metadata)
}

/// Parses and validates a trigger's metadata map for a ScaledObject in `ctx.namespace`.
pub fn parse_in(
    ctx: ParseContext<'_>,
    metadata: &HashMap<String, String>,
) -> Result<ScalerSpec, SpecError> {
    Parser::new(ctx, metadata).run()
}

pub(super) struct Parser<'a> {
    pub(super) ctx: ParseContext<'a>,
    pub(super) values: BTreeMap<String, &'a str>,
    pub(super) problems: Vec<Problem>,
    /// The `source` value, once read ("scrape" when absent).
    pub(super) kind: &'a str,
}

impl<'a> Parser<'a> {
    fn new(ctx: ParseContext<'a>, metadata: &'a HashMap<String, String>) -> Self {
        let (values, problems) = registry::resolve(metadata);
        let kind = values.get("source").map_or("scrape", |v| v.trim());
        Parser {
            ctx,
            values,
            problems,
            kind,
        }
    }

    pub(super) fn problem(&mut self, key: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            key: key.to_string(),
            message: message.into(),
        });
    }

    pub(super) fn text(&self, key: &str) -> Option<&'a str> {
        self.values.get(key).map(|v| v.trim())
    }

    /// `key`'s value through `check`; None when absent or refused (refused is recorded).
    pub(super) fn read<T>(
        &mut self,
        key: &str,
        check: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        let raw = self.text(key)?;
        check(raw)
            .map_err(|message| self.problem(key, message))
            .ok()
    }

    /// A finite number within [min, max].
    fn number(&mut self, key: &str, min: f64, max: f64, accepted: &str) -> Option<f64> {
        self.read(key, |raw| validate::number(raw, min, max, accepted))
    }

    /// The egress policy's verdict on a URL from `key`, recorded as a problem when refused.
    pub(super) fn egress_allows(&mut self, key: &str, url: &reqwest::Url, shown: &str) -> bool {
        let Some(policy) = self.ctx.egress else {
            return true;
        };
        match policy.check_url(url) {
            Ok(()) => true,
            Err(why) => {
                let shown = crate::text::redact_url(shown);
                self.problem(key, format!("'{shown}' {why}"));
                false
            }
        }
    }

    fn run(mut self) -> Result<ScalerSpec, SpecError> {
        let source = self.source();
        let signals = self.signals();
        let smoothing = self.smoothing();
        let (activation, limits) = self.activation_and_limits();
        let metric_name = self
            .text("metricName")
            .unwrap_or(DEFAULT_METRIC_NAME)
            .to_string();
        if !is_kubernetes_metric_name(&metric_name) {
            self.problem(
                "metricName",
                format!(
                    "'{metric_name}' is not accepted; expected 1-63 characters of a-z, 0-9, '-' or '.', starting and ending with a letter or digit"
                ),
            );
        }
        let latency_window_s = self
            .number(
                "latencyWindowSeconds",
                1.0,
                3600.0,
                "seconds between 1 and 3600",
            )
            .unwrap_or(60.0);
        let drain_s = self
            .number("drainSeconds", 1.0, 86_400.0, "seconds between 1 and 86400")
            .unwrap_or(Capacity::default().drain_s);
        let forecast_period = self.number(
            "forecastPeriodSeconds",
            60.0,
            8.0 * 86_400.0,
            "seconds between 60 and 691200 (a season: 86400 for a day, 604800 for a week)",
        );
        let forecast_lead = self.number(
            "forecastLeadSeconds",
            0.0,
            3600.0,
            "seconds between 0 and 3600",
        );
        if forecast_lead.is_some() && forecast_period.is_none() {
            self.problem(
                "forecastLeadSeconds",
                "only means something with forecastPeriodSeconds, which turns the seasonal floor on",
            );
        }
        let forecast = forecast_period.map(|period_s| ForecastConfig {
            period_s,
            // About two replica starts: capacity for a recurring peak is ready when it comes.
            lead_s: forecast_lead.unwrap_or(120.0),
        });
        let objective = self.objective(&signals);
        if !self.problems.is_empty() {
            return Err(SpecError {
                problems: self.problems,
            });
        }
        Ok(ScalerSpec {
            source: source.expect("source is set when no problem was recorded"),
            signals,
            smoothing,
            activation,
            limits,
            metric_name,
            latency_window_s,
            drain_s,
            forecast,
            objective,
        })
    }

    /// SLO mode's settings: the objective, the attainment and the default horizon.
    fn objective(&mut self, signals: &[SignalSpec]) -> Option<ObjectiveConfig> {
        let ttft_ms = self.number(
            OBJECTIVE_KEY,
            1.0,
            3_600_000.0,
            "milliseconds between 1 and 3600000 (a time-to-first-token objective, e.g. 2000)",
        );
        let attainment = self.number(
            "attainment",
            0.5,
            0.999,
            "a share of requests between 0.5 and 0.999, e.g. 0.95",
        );
        let cold_start_s = self.number(
            "coldStartSeconds",
            0.0,
            3600.0,
            "seconds between 0 and 3600",
        );
        if ttft_ms.is_none() && !self.values.contains_key(OBJECTIVE_KEY) {
            for key in ["attainment", "coldStartSeconds"] {
                if self.values.contains_key(key) {
                    self.problem(
                        key,
                        format!(
                            "only means something with {OBJECTIVE_KEY}, which turns SLO mode on"
                        ),
                    );
                }
            }
            return None;
        }
        if self.kind == "nvml" {
            self.problem(
                OBJECTIVE_KEY,
                "source=nvml reads only GPUs; SLO mode needs the engine's requests in service and waiting (source=scrape or prometheus)",
            );
        }
        Some(ObjectiveConfig {
            ttft_s: ttft_ms? / 1000.0,
            attainment: attainment.unwrap_or(DEFAULT_ATTAINMENT),
            cold_start_s: cold_start_s.unwrap_or(DEFAULT_COLD_START_S),
            concurrency: signals
                .iter()
                .find(|s| s.asks && s.name == crate::score::composite::INFLIGHT)
                .map(|s| s.target),
        })
    }

    fn smoothing(&mut self) -> Smoothing {
        let d = Smoothing::default();
        let day = 86_400.0;
        let up = self.number("upHalfLifeSeconds", 0.0, day, "seconds between 0 and 86400");
        let down = self.number(
            "downHalfLifeSeconds",
            0.0,
            day,
            "seconds between 0 and 86400",
        );
        let panic = self.read("panicThreshold", validate::panic_threshold);
        Smoothing {
            up_half_life_s: up.unwrap_or(d.up_half_life_s),
            down_half_life_s: down.unwrap_or(d.down_half_life_s),
            panic_threshold: panic.unwrap_or(d.panic_threshold),
        }
    }

    fn activation_and_limits(&mut self) -> (Activation, Limits) {
        let on = self
            .number(
                "activationThreshold",
                0.0,
                1e6,
                "a demand in replicas >= 0, e.g. 0.1",
            )
            .unwrap_or(DEFAULT_ACTIVATION);
        let off = match self.number(
            "deactivationThreshold",
            0.0,
            1e6,
            "a demand in replicas >= 0",
        ) {
            Some(off) if off > on => {
                self.problem(
                    "deactivationThreshold",
                    format!("'{off}' is above activationThreshold {on}; it must be <= it (the gap is the hysteresis band)"),
                );
                on
            }
            Some(off) => off,
            None => on / 2.0,
        };
        let min = self.read("minReplicas", validate::replicas).unwrap_or(0);
        let max = self
            .read("maxReplicas", validate::replicas)
            .unwrap_or(DEFAULT_MAX_REPLICAS);
        if max == 0 {
            self.problem(
                "maxReplicas",
                "'0' is not accepted; expected a whole number >= 1",
            );
        } else if min > max {
            self.problem("minReplicas", format!("{min} is above maxReplicas {max}"));
        }
        (
            Activation {
                activate_above: on,
                deactivate_below: off,
            },
            Limits {
                min_replicas: min as f64,
                max_replicas: max as f64,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{base, meta, rejects};
    use crate::spec::*;

    #[test]
    fn minimal_spec_gets_defaults() {
        let spec = parse(&base(&[])).unwrap();
        assert_eq!(spec.metric_name, "gpu-composite");
        assert_eq!(
            spec.source,
            SourceSpec::Scrape {
                endpoints: vec!["http://127.0.0.1:9000/metrics".into()]
            }
        );
        assert_eq!(spec.signals.len(), 1);
        assert_eq!(spec.signals[0].name, "queue");
        assert_eq!(
            spec.signals[0].metrics,
            MetricSource::Gauge(vec!["workload_queue_length".into()])
        );
        assert_eq!(spec.smoothing, Smoothing::default());
        assert_eq!(spec.activation.activate_above, DEFAULT_ACTIVATION);
        assert_eq!(spec.activation.deactivate_below, DEFAULT_ACTIVATION / 2.0);
        assert_eq!(spec.limits.max_replicas, 100.0);
    }

    #[test]
    fn every_bad_value_names_its_key_and_what_is_accepted() {
        let cases: &[(&str, &str, &str)] = &[
            ("queueTarget", "ten", "a number >= 0.001"),
            ("queueTarget", "0", "a number >= 0.001"),
            ("queueTarget", "-3", "a number >= 0.001"),
            ("queueTarget", "NaN", "a number >= 0.001"),
            ("queueTarget", "inf", "a number >= 0.001"),
            ("gpuUtilTarget", "150", "<= 100"),
            ("gpuMemoryTarget", "", "a number >= 0.001"),
            ("inflightTarget", "1e400", "a number >= 0.001"),
            ("queueTarget", "1e-320", "a number >= 0.001"),
            ("latencyTargetMs", "fast", "milliseconds"),
            ("upHalfLifeSeconds", "-1", "seconds between 0 and 86400"),
            ("downHalfLifeSeconds", "1e9", "seconds between 0 and 86400"),
            ("panicThreshold", "0.5", "0 (off) or a factor > 1"),
            ("panicThreshold", "x", "0 (off) or a factor > 1"),
            ("activationThreshold", "-1", "demand in replicas"),
            ("deactivationThreshold", "5", "above activationThreshold"),
            ("minReplicas", "1.5", "whole number"),
            ("minReplicas", "-1", "whole number"),
            ("maxReplicas", "0", ">= 1"),
            ("maxReplicas", "99999999999", "whole number"),
            ("metricName", "GPU Composite", "a-z, 0-9"),
            ("metricName", "-x", "starting and ending"),
            ("queueMetric", "bad name{}", "Prometheus metric name"),
            ("gpuUtilMetric", "1abc", "Prometheus metric name"),
            ("latencyWindowSeconds", "0", "between 1 and 3600"),
            ("source", "kafka", "expected scrape, prometheus or nvml"),
            ("endpoints", "not a url", "http(s) URL"),
            ("endpoints", "ftp://x/metrics", "http(s) URL"),
            ("endpoints", " , ", "at least one"),
        ];
        for (key, value, needle) in cases {
            rejects(base(&[(key, value)]), key, needle);
        }
    }

    #[test]
    fn structural_problems_are_reported() {
        rejects(meta(&[("queueTarget", "1")]), "endpoints", "required");
        rejects(
            meta(&[("endpoints", "http://a/metrics")]),
            "gpuUtilTarget",
            "no signal has a target",
        );
        rejects(
            meta(&[
                ("endpoints", "http://a/metrics"),
                ("latencyTargetMs", "200"),
            ]),
            "latencyTargetMs",
            "cannot be the only signal",
        );
        rejects(
            base(&[("minReplicas", "5"), ("maxReplicas", "2")]),
            "minReplicas",
            "above maxReplicas",
        );
        rejects(
            base(&[("gpuMemoryUsedMetric", "x")]),
            "gpuMemoryUsedMetric",
            "exactly one of",
        );
        let many = (0..1001)
            .map(|i| format!("http://10.0.0.1:{i}/m"))
            .collect::<Vec<_>>()
            .join(",");
        rejects(base(&[("endpoints", &many)]), "endpoints", "at most 1000");
    }

    #[test]
    fn all_problems_are_reported_together() {
        let err = parse(&meta(&[
            ("queueTarget", "x"),
            ("maxReplicas", "y"),
            ("oops", "1"),
        ]))
        .unwrap_err();
        assert!(err.problems.len() >= 4, "{err}");
        let text = err.to_string();
        assert!(
            text.contains("queueTarget: ")
                && text.contains("maxReplicas: ")
                && text.contains("oops: ")
        );
    }

    #[test]
    fn hostile_values_never_panic() {
        let nasty = [
            "",
            " ",
            "\u{0}",
            "💥",
            "1e309",
            "-0",
            "0x10",
            &"9".repeat(10_000),
            "\n",
        ];
        for key in registry::keys().chain(["extra.a.target", "extra..kind", "extra.", "FromEnv"]) {
            for v in nasty {
                let _ = parse(&base(&[(key, v)]));
            }
        }
    }
}
