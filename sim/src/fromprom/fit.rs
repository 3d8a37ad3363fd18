//! The cost profile fitted from per-step means: the simulator's `CostModel` says a request costs
//! `overhead + prefill * prompt + decode * output` seconds alone, and a request admitted into a
//! batch already holding `b` others runs `1 + c * b` times slower, `c = (slowdown - 1) / (batch -
//! 1)`. Per step the engine's histograms give the mean prefill time, time per output token and
//! prompt length, and the running gauge the mean batch: time per output token against the batch
//! gives the decode cost and `c`, prefill time (divided by the batch factor) against the prompt
//! length gives the overhead and the prefill cost. Each fit reports its weighted RMS error per
//! step, and the whole profile is checked against the measured end-to-end latency. Pure.

use crate::cost::CostModel;

/// One step's measured means (None where the engine has no such series or nothing finished).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StepObs {
    /// Requests finished in the step: the weight of its means.
    pub weight: f64,
    pub prompt: Option<f64>,
    pub generated: Option<f64>,
    pub ttft: Option<f64>,
    pub tpot: Option<f64>,
    pub prefill: Option<f64>,
    pub queue: Option<f64>,
    pub e2e: Option<f64>,
    /// Requests in service per replica, averaged over the step.
    pub running: Option<f64>,
}

/// One fitted quantity, as the run prints it.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct FitLine {
    pub quantity: String,
    pub value: String,
    /// The series and method it came from.
    pub from: String,
    /// Steps the fit used.
    pub steps: usize,
    /// Weighted RMS of the per-step relative error of the fitted relation, percent.
    pub rms_error_pct: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Fit {
    pub cost: CostModel,
    pub lines: Vec<FitLine>,
    /// Per-step mean end-to-end latency predicted by the fitted profile (queue wait plus the
    /// batch-slowed service time) against the measured one: weighted RMS relative error, percent.
    pub e2e_rms_error_pct: Option<f64>,
    pub warnings: Vec<String>,
}

/// Weighted least squares y = a + b x: (a, b, standard error of b).
fn wls(points: &[(f64, f64, f64)]) -> Option<(f64, f64, f64)> {
    let w: f64 = points.iter().map(|p| p.2).sum();
    let w2: f64 = points.iter().map(|p| p.2 * p.2).sum();
    if points.len() < 5 || w <= 0.0 {
        return None;
    }
    let mx = points.iter().map(|p| p.2 * p.0).sum::<f64>() / w;
    let my = points.iter().map(|p| p.2 * p.1).sum::<f64>() / w;
    let sxx: f64 = points.iter().map(|p| p.2 * (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| p.2 * (p.0 - mx) * (p.1 - my)).sum();
    // The spread of x must be real, not rounding: 2 % of its mean at least.
    if sxx <= 0.0 || (sxx / w).sqrt() < 0.02 * mx.abs().max(1e-12) {
        return None;
    }
    let b = sxy / sxx;
    let a = my - b * mx;
    let n_eff = w * w / w2;
    if n_eff <= 2.0 {
        return None;
    }
    let res: f64 = points
        .iter()
        .map(|p| p.2 * (p.1 - a - b * p.0).powi(2))
        .sum::<f64>()
        / w;
    let se = (res / (sxx / w) / (n_eff - 2.0)).sqrt();
    Some((a, b, se))
}

/// Weighted RMS of the relative error of `predict` against each (x, y, w), percent.
fn rms_pct(points: &[(f64, f64, f64)], predict: impl Fn(f64) -> f64) -> Option<f64> {
    let mut w = 0.0;
    let mut e = 0.0;
    for &(x, y, wt) in points {
        if y > 0.0 {
            e += wt * ((predict(x) - y) / y).powi(2);
            w += wt;
        }
    }
    (w > 0.0).then(|| 100.0 * (e / w).sqrt())
}

/// The `q` quantile (nearest rank) of `xs`.
pub fn quantile(xs: &[f64], q: f64) -> Option<f64> {
    let mut v: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    let i = keda_gpu_scaler::sources::scrape::histogram::nearest_rank(v.len(), q)?;
    Some(v[i])
}

/// Which series give the prefill time per step.
#[derive(Clone, Copy)]
enum PrefillFrom {
    Histogram,
    FirstTokenLessQueue,
    FirstToken,
    /// End-to-end time less the queue wait and the decode time (TGI).
    Remainder,
}

/// Quantile of the per-replica running gauge taken as the batch size.
pub const BATCH_QUANTILE: f64 = 0.99;

/// Fits the profile from `obs` (one per step) and `peaks` (per replica and step, the most
/// requests in service), starting from `base` for what the data cannot tell.
pub fn fit(obs: &[StepObs], peaks: &[f64], base: &CostModel) -> Fit {
    let mut cost = base.clone();
    let mut lines = Vec::new();
    let mut warnings = Vec::new();
    let used = |o: &&StepObs| o.weight > 0.0;

    // Batch: a high percentile of the running gauge per replica.
    match quantile(peaks, BATCH_QUANTILE) {
        Some(b) if b >= 0.5 => {
            cost.batch = (b.round() as u32).clamp(1, 4096);
            lines.push(FitLine {
                quantity: "batch".into(),
                value: cost.batch.to_string(),
                from: format!(
                    "p{:.0} of the requests in service per replica (most per step)",
                    100.0 * BATCH_QUANTILE
                ),
                steps: peaks.len(),
                rms_error_pct: None,
            });
            if cost.batch == 1 {
                warnings.push("the running gauge never showed more than one request per replica: batch 1 (if the engine batches more, the range never loaded it)".into());
            }
        }
        _ => warnings.push(format!(
            "no running-requests gauge with data: batch stays {} (set --batch to override)",
            cost.batch
        )),
    }
    let bm1 = cost.batch.saturating_sub(1).max(1) as f64;

    // Decode: time per output token against the mean batch.
    let tpot_of = |o: &StepObs| {
        o.tpot.or_else(|| match (o.e2e, o.ttft, o.generated) {
            (Some(e), Some(t), Some(g)) if g > 1.0 && e > t => Some((e - t) / g),
            _ => None,
        })
    };
    let tpot_from = if obs.iter().any(|o| o.tpot.is_some()) {
        "time per output token histogram"
    } else {
        "(end-to-end - time to first token) / output tokens"
    };
    let pts: Vec<(f64, f64, f64)> = obs
        .iter()
        .filter(used)
        .filter_map(|o| Some((o.running.unwrap_or(0.0), tpot_of(o)?, o.weight)))
        .filter(|p| p.1 > 0.0)
        .collect();
    let default_c = (base.full_batch_slowdown - 1.0) / bm1;
    let mut c = default_c;
    if pts.is_empty() {
        warnings.push(format!(
            "no time per output token (nor end-to-end and first-token times): decode stays {} s/token",
            cost.decode_s_per_token
        ));
    } else {
        let (d, how) = match wls(&pts) {
            Some((a, b, _)) if a > 0.0 && b >= 0.0 => {
                c = b / a;
                (a, "against the mean batch (intercept: batch of one)")
            }
            _ => {
                let d = pts.iter().map(|p| p.2 * p.1).sum::<f64>()
                    / pts.iter().map(|p| p.2 * (1.0 + c * p.0)).sum::<f64>();
                warnings.push(format!(
                    "the batch hardly varied (or did not slow decoding): the slowdown of a full batch stays {} and only the decode cost is fitted",
                    base.full_batch_slowdown
                ));
                (d, "with the default batch slowdown")
            }
        };
        cost.decode_s_per_token = d;
        cost.full_batch_slowdown = if cost.batch > 1 {
            (1.0 + c * bm1).clamp(1.0, 20.0)
        } else {
            base.full_batch_slowdown
        };
        c = (cost.full_batch_slowdown - 1.0) / bm1;
        let cc = c;
        lines.push(FitLine {
            quantity: "decode_s_per_token".into(),
            value: format!("{d:.6}"),
            from: format!("{tpot_from}, {how}"),
            steps: pts.len(),
            rms_error_pct: rms_pct(&pts, |r| d * (1.0 + cc * r)),
        });
        lines.push(FitLine {
            quantity: "full_batch_slowdown".into(),
            value: format!("{:.3}", cost.full_batch_slowdown),
            from: "slope of time per output token over the mean batch".into(),
            steps: pts.len(),
            rms_error_pct: None,
        });
    }

    // Prefill: prefill time (without the batch factor) against the prompt length.
    let source = if obs.iter().any(|o| o.prefill.is_some()) {
        PrefillFrom::Histogram
    } else if obs.iter().any(|o| o.ttft.is_some() && o.queue.is_some()) {
        PrefillFrom::FirstTokenLessQueue
    } else if obs.iter().any(|o| o.ttft.is_some()) {
        warnings.push("no queue-wait series: prefill is fitted from the time to first token, queue wait included, so it is an upper bound".into());
        PrefillFrom::FirstToken
    } else {
        PrefillFrom::Remainder
    };
    let prefill_of = |o: &StepObs| match source {
        PrefillFrom::Histogram => o.prefill,
        PrefillFrom::FirstTokenLessQueue => Some(o.ttft? - o.queue?),
        PrefillFrom::FirstToken => o.ttft,
        PrefillFrom::Remainder => {
            Some(o.e2e? - o.queue.unwrap_or(0.0) - tpot_of(o)? * o.generated?)
        }
    };
    let prefill_from = match source {
        PrefillFrom::Histogram => "prefill time histogram",
        PrefillFrom::FirstTokenLessQueue => "time to first token - queue wait",
        PrefillFrom::FirstToken => "time to first token",
        PrefillFrom::Remainder => "end-to-end - queue wait - decode",
    };
    let factor = |o: &StepObs| 1.0 + c * o.running.unwrap_or(0.0);
    let pts: Vec<(f64, f64, f64)> = obs
        .iter()
        .filter(used)
        .filter_map(|o| Some((o.prompt?, prefill_of(o)? / factor(o), o.weight)))
        .filter(|p| p.1 > 0.0 && p.0 > 0.0)
        .collect();
    if pts.is_empty() {
        warnings.push(format!(
            "no prefill or first-token times with prompt lengths: prefill stays {} s/token and overhead {} s",
            cost.prefill_s_per_token, cost.overhead_s
        ));
    } else {
        let (o, p, how) = match wls(&pts) {
            Some((a, b, se)) if a >= 0.0 && b > 0.0 && se < 0.25 * b => {
                (a, b, "against the mean prompt length")
            }
            _ => {
                let p = pts.iter().map(|p| p.2 * p.1).sum::<f64>()
                    / pts.iter().map(|p| p.2 * p.0).sum::<f64>();
                (
                    0.0,
                    p,
                    "through the origin (the mean prompt length hardly varied between steps, so the fixed overhead cannot be told apart)",
                )
            }
        };
        cost.overhead_s = o;
        cost.prefill_s_per_token = p;
        lines.push(FitLine {
            quantity: "prefill_s_per_token".into(),
            value: format!("{p:.8}"),
            from: format!("{prefill_from} / batch factor, {how}"),
            steps: pts.len(),
            rms_error_pct: rms_pct(&pts, |x| o + p * x),
        });
        lines.push(FitLine {
            quantity: "overhead_s".into(),
            value: format!("{o:.4}"),
            from: "intercept of the prefill fit".into(),
            steps: pts.len(),
            rms_error_pct: None,
        });
    }

    // Request sizes for generators and plain traces: the range's means.
    let mean = |f: fn(&StepObs) -> Option<f64>| {
        let (s, w) = obs
            .iter()
            .filter(used)
            .filter_map(|o| Some((f(o)? * o.weight, o.weight)))
            .fold((0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1));
        (w > 0.0).then(|| s / w)
    };
    if let Some(m) = mean(|o| o.prompt) {
        cost.default_context_tokens = m.round().max(1.0);
    }
    if let Some(m) = mean(|o| o.generated) {
        cost.default_generated_tokens = m.round().max(1.0);
    }

    // The whole profile against the measured end-to-end latency.
    let e2e_pts: Vec<(f64, f64, f64)> = obs
        .iter()
        .filter(used)
        .filter_map(|o| {
            let work = cost.overhead_s
                + cost.prefill_s_per_token * o.prompt?
                + cost.decode_s_per_token * o.generated?;
            let predicted = o.queue.unwrap_or(0.0) + factor(o) * work;
            Some((predicted, o.e2e?, o.weight))
        })
        .collect();
    let e2e_rms_error_pct = rms_pct(&e2e_pts, |predicted| predicted);
    Fit {
        cost,
        lines,
        e2e_rms_error_pct,
        warnings,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gpu_workload::rng::SplitMix64;

    /// Steps generated from a known profile, with some noise.
    fn steps(truth: &CostModel, noise: f64) -> (Vec<StepObs>, Vec<f64>) {
        let mut rng = SplitMix64::new(5);
        let c = (truth.full_batch_slowdown - 1.0) / (truth.batch - 1) as f64;
        let mut obs = Vec::new();
        let mut peaks = Vec::new();
        for k in 0..200 {
            let running = 1.0 + 10.0 * (k as f64 / 30.0).sin().abs();
            let prompt = 1500.0 * (1.0 + 0.2 * rng.normal());
            let generated = 200.0 * (1.0 + 0.2 * rng.normal());
            let f = 1.0 + c * running;
            let jitter = |rng: &mut SplitMix64| 1.0 + noise * rng.normal();
            let prefill =
                f * (truth.overhead_s + truth.prefill_s_per_token * prompt) * jitter(&mut rng);
            let tpot = f * truth.decode_s_per_token * jitter(&mut rng);
            let queue = 0.1;
            obs.push(StepObs {
                weight: 100.0,
                prompt: Some(prompt),
                generated: Some(generated),
                ttft: Some(queue + prefill),
                tpot: Some(tpot),
                prefill: Some(prefill),
                queue: Some(queue),
                e2e: Some(queue + prefill + tpot * generated),
                running: Some(running),
            });
            peaks.push((running * 1.6).min(truth.batch as f64));
        }
        (obs, peaks)
    }

    #[test]
    fn a_known_profile_is_recovered() {
        let truth = CostModel {
            overhead_s: 0.03,
            prefill_s_per_token: 0.000_2,
            decode_s_per_token: 0.015,
            batch: 16,
            full_batch_slowdown: 2.0,
            ..CostModel::default()
        };
        let (obs, peaks) = steps(&truth, 0.01);
        let fit = fit(&obs, &peaks, &CostModel::default());
        let c = &fit.cost;
        assert_eq!(c.batch, 16);
        let close = |a: f64, b: f64, tol: f64| (a - b).abs() / b < tol;
        assert!(close(c.decode_s_per_token, 0.015, 0.02), "{c:?}");
        assert!(close(c.full_batch_slowdown, 2.0, 0.05), "{c:?}");
        assert!(close(c.prefill_s_per_token, 0.000_2, 0.05), "{c:?}");
        assert!((c.overhead_s - 0.03).abs() < 0.03, "{c:?}");
        assert!((c.default_context_tokens - 1500.0).abs() < 50.0, "{c:?}");
        let e = fit.e2e_rms_error_pct.unwrap();
        assert!(e < 3.0, "{e}");
        let decode = fit
            .lines
            .iter()
            .find(|l| l.quantity == "decode_s_per_token")
            .unwrap();
        assert!(decode.rms_error_pct.unwrap() < 3.0, "{decode:?}");
        assert!(fit.warnings.is_empty(), "{:?}", fit.warnings);
    }

    #[test]
    fn what_is_missing_keeps_the_default_and_says_so() {
        let obs = vec![
            StepObs {
                weight: 10.0,
                ..StepObs::default()
            };
            20
        ];
        let base = CostModel::default();
        let fit = fit(&obs, &[], &base);
        assert_eq!(fit.cost, base);
        assert_eq!(fit.warnings.len(), 3, "{:?}", fit.warnings);
        assert!(fit.warnings[0].contains("running-requests gauge"));
        assert_eq!(fit.e2e_rms_error_pct, None);
        // A constant batch: only the decode cost is fitted.
        let truth = CostModel::default();
        let (mut obs, peaks) = steps(&truth, 0.0);
        for o in &mut obs {
            o.tpot = Some(0.03);
            o.running = Some(4.0);
        }
        let fit = super::fit(&obs, &peaks, &truth);
        assert_eq!(fit.cost.full_batch_slowdown, truth.full_batch_slowdown);
        assert!(
            fit.warnings.iter().any(|w| w.contains("hardly varied")),
            "{:?}",
            fit.warnings
        );
        assert_eq!(quantile(&[3.0, 1.0, 2.0], 0.5), Some(2.0));
    }
}
