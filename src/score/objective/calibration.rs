//! The miss budget corrected by what the replicas' time-to-first-token histograms say was met.

use std::collections::VecDeque;

/// Misses expected at the asked attainment in the evidence the calibration reads: 20 put the
/// relative standard error of the measured miss share near `1 / sqrt(20) = 22 %`, enough to
/// tell half the budget from the budget (400 requests at 95 %, 2000 at 99 %).
pub const EVIDENCE_MISSES: f64 = 20.0;

/// The most one reading of the misses moves the budget: by their ratio to it, within a factor of
/// two either way. Misses at zero say only that the budget is not used, not by how much.
pub const CALIBRATION_STEP: f64 = 2.0;

/// The widest miss share the model is told to allow: beyond half it would plan for less than the
/// window's median sample.
pub const MAX_ALLOWED: f64 = 0.5;

/// The narrowest, as a share of the budget asked for: at a tenth the plan is already at the
/// window's highest sample (the model's misses fall to nothing there), and narrowing further
/// changes nothing but how long widening takes again.
pub const MIN_BUDGET_SHARE: f64 = 0.1;

/// The miss budget's calibration: the next `scale` of the budget `allowed`, from `met` (time,
/// requests within the objective, all requests; oldest first), `dt` seconds after the previous
/// step, with the model's plan settling within `settle_s` (its window).
///
/// The misses read are those of the most recent `EVIDENCE_MISSES / allowed` requests; the scale
/// moves toward `allowed / misses` (within `CALIBRATION_STEP` either way), by the whole ratio
/// once per `settle_s` or per the time those requests took to arrive, whichever is longer: a
/// loop faster than the plan it corrects would read the misses of a plan already replaced.
/// Widening needs the last hour's misses under the budget as well: between bursts the recent
/// requests all meet the objective, and widening there would meet the next burst with less.
/// With fewer requests read than the evidence needs, the scale never exceeds 1; a step with no
/// new reading (`dt` 0) leaves it where it is.
pub fn calibrate(
    scale: f64,
    met: &VecDeque<(f64, f64, f64)>,
    allowed: f64,
    dt: f64,
    settle_s: f64,
) -> f64 {
    let allowed = allowed.max(1e-6);
    let evidence = EVIDENCE_MISSES / allowed;
    let Some(&(now, _, _)) = met.back() else {
        return scale.min(1.0);
    };
    let (mut within, mut total, mut since) = (0.0, 0.0, now);
    for &(at, w, n) in met.iter().rev() {
        within += w;
        total += n;
        since = at;
        if total >= evidence {
            break;
        }
    }
    if total < evidence {
        return scale.min(1.0);
    }
    if dt <= 0.0 {
        return scale;
    }
    let recent = ((total - within) / total).clamp(0.0, 1.0);
    let (hour_within, hour_total) = met
        .iter()
        .fold((0.0, 0.0), |(a, b), &(_, w, n)| (a + w, b + n));
    let hour = ((hour_total - hour_within) / hour_total).clamp(0.0, 1.0);
    let missed = if recent > allowed {
        recent
    } else {
        recent.max(hour)
    };
    let ratio = (allowed / missed.max(allowed / CALIBRATION_STEP))
        .clamp(1.0 / CALIBRATION_STEP, CALIBRATION_STEP);
    let span = (now - since).max(dt).max(settle_s);
    let widest = (MAX_ALLOWED / allowed).max(1.0);
    (scale * ratio.powf((dt / span).min(1.0))).clamp(MIN_BUDGET_SHARE, widest)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` readings 15 s apart of `per` requests each, `missed` of them over the objective.
    fn met(n: usize, per: f64, missed: f64) -> VecDeque<(f64, f64, f64)> {
        (0..n)
            .map(|i| (i as f64 * 15.0, per - missed, per))
            .collect()
    }

    #[test]
    fn the_budget_widens_when_misses_stay_under_it_and_narrows_when_they_do_not() {
        // 5 % allowed: the evidence is the last 400 requests.
        let clean = met(40, 20.0, 0.0);
        // Nothing missed: the budget doubles over one settling time, and in proportion within it.
        assert!((calibrate(1.0, &clean, 0.05, 300.0, 300.0) - 2.0).abs() < 1e-12);
        let step = calibrate(1.0, &clean, 0.05, 15.0, 300.0);
        assert!((step - 2f64.powf(0.05)).abs() < 1e-12, "{step}");
        // ... up to half of all requests, never beyond.
        assert!((calibrate(9.0, &clean, 0.05, 300.0, 300.0) - 10.0).abs() < 1e-12);
        // Misses at the budget: nothing moves. Twice the budget: halved.
        assert!((calibrate(3.0, &met(40, 20.0, 1.0), 0.05, 300.0, 300.0) - 3.0).abs() < 1e-12);
        assert!((calibrate(3.0, &met(40, 20.0, 2.0), 0.05, 300.0, 300.0) - 1.5).abs() < 1e-12);
        // ... never below a tenth of the budget.
        assert_eq!(
            calibrate(0.1, &met(40, 20.0, 10.0), 0.05, 300.0, 300.0),
            0.1
        );
    }

    #[test]
    fn without_evidence_or_after_a_bad_hour_the_budget_does_not_widen() {
        // 390 requests read: too few to tell 5 % from nothing. The scale only ever narrows.
        let few = met(39, 10.0, 0.0);
        assert_eq!(calibrate(4.0, &few, 0.05, 300.0, 300.0), 1.0);
        assert_eq!(calibrate(0.5, &few, 0.05, 300.0, 300.0), 0.5);
        assert_eq!(calibrate(2.0, &VecDeque::new(), 0.05, 15.0, 300.0), 1.0);
        // Evidence enough, but nothing new read at this step: the scale stays where it is.
        assert_eq!(calibrate(3.0, &met(40, 20.0, 0.0), 0.05, 0.0, 300.0), 3.0);
        // The last 400 requests all met, but the hour missed 10 %: between bursts, the scale
        // follows the hour (halves), it does not widen.
        let mut bursty = met(40, 20.0, 4.0);
        bursty.extend(
            met(20, 20.0, 0.0)
                .into_iter()
                .map(|(t, w, n)| (t + 600.0, w, n)),
        );
        let hour = calibrate(2.0, &bursty, 0.05, 300.0, 300.0);
        assert!(hour < 2.0, "{hour}");
    }
}
