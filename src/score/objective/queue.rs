//! The fluid queue the planner replays its window through, and the square-root staffing on top:
//! how many requests a capacity misses, and the least capacity that misses no more than allowed.

/// Share of one sample's requests that miss the objective when they arrive at `demand` per
/// second and the replicas serve `slots` per second, for `interval_s` seconds, with `budget_s`
/// of waiting allowed. A fluid queue: the backlog grows at `demand - slots`, so a request
/// arriving `tau` seconds into the shortage waits `(demand - slots) tau / slots`.
/// It misses once that exceeds the budget: `tau > budget x slots / (demand - slots)`. A shortage
/// shorter than that is absorbed by the queue; with no slots at all every request misses.
pub fn miss_fraction(demand: f64, slots: f64, budget_s: f64, interval_s: f64) -> f64 {
    if demand <= slots {
        return 0.0;
    }
    if slots <= 0.0 {
        return 1.0;
    }
    let absorbed_s = budget_s * slots / (demand - slots);
    (1.0 - absorbed_s / interval_s).clamp(0.0, 1.0)
}

/// Request-weighted misses over the window with `slots`: each sample weighs as many requests as
/// arrived in it.
pub fn window_misses(demand: &[f64], slots: f64, budget_s: f64, interval_s: f64) -> f64 {
    let total: f64 = demand.iter().sum();
    if total <= 0.0 {
        return 0.0;
    }
    demand
        .iter()
        .map(|&d| d * miss_fraction(d, slots, budget_s, interval_s))
        .sum::<f64>()
        / total
}

/// The fewest slots whose request-weighted misses over the window are at most `allowed`
/// (bisection: misses only fall as slots grow). Never more than the window's highest demand,
/// which misses nothing.
pub fn slots_for(demand: &[f64], allowed: f64, budget_s: f64, interval_s: f64) -> f64 {
    let hi = demand.iter().copied().fold(0.0f64, f64::max);
    if hi <= 0.0 {
        return 0.0;
    }
    let (mut lo, mut hi) = (0.0f64, hi);
    // 40 halvings: far below a hundredth of a slot for any realistic demand.
    for _ in 0..40 {
        let mid = 0.5 * (lo + hi);
        if window_misses(demand, mid, budget_s, interval_s) <= allowed {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    hi
}

/// Square-root staffing (Halfin and Whitt): the requests per second to plan beyond `served`
/// so that no more than `share` of the time a request finds every slot taken, each request
/// holding a slot `hold_s` seconds. The fluid plan runs every slot busy at the rate it plans
/// for, but requests arrive at random within a sample: the requests in the system fluctuate
/// around the load (`served * hold_s` slots) by its square root, as a Poisson count does, and
/// `z(1 - share)` of those fluctuations are covered. The quantile follows the budget, so a
/// calibration that widens the budget shrinks it (to nothing at half the requests).
pub fn sqrt_headroom(served: f64, hold_s: f64, share: f64) -> f64 {
    if !(served > 0.0 && hold_s > 0.0) {
        return 0.0;
    }
    let load = served * hold_s;
    (normal_quantile(1.0 - share).max(0.0) * load.sqrt() / hold_s).max(0.0)
}

/// The standard normal quantile at `p` in (0, 1), by Abramowitz and Stegun's 26.2.23 (absolute
/// error under 4.5e-4, far below what a planned replica count can resolve); 0 at one half.
pub fn normal_quantile(p: f64) -> f64 {
    let p = p.clamp(1e-12, 1.0 - 1e-12);
    let tail = p.min(1.0 - p);
    let w = (-2.0 * tail.ln()).sqrt();
    let z = w
        - (2.515517 + 0.802853 * w + 0.010328 * w * w)
            / (1.0 + 1.432788 * w + 0.189269 * w * w + 0.001308 * w * w * w);
    if p < 0.5 {
        -z
    } else {
        z
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_normal_quantile_matches_its_table() {
        for (p, z) in [(0.5, 0.0), (0.9, 1.2816), (0.95, 1.6449), (0.99, 2.3263)] {
            assert!((normal_quantile(p) - z).abs() < 5e-4, "{p}");
            assert!((normal_quantile(1.0 - p) + z).abs() < 5e-4, "{p}");
        }
        assert!(normal_quantile(0.0).is_finite() && normal_quantile(1.0).is_finite());
    }

    #[test]
    fn square_root_headroom_covers_the_load_s_fluctuation_at_the_budget_s_quantile() {
        // 32 requests/s held 2 s each: 64 slots busy, fluctuating by 8; at 5 % the 1.645 x 8
        // slots more are 6.58 requests/s.
        let h = sqrt_headroom(32.0, 2.0, 0.05);
        assert!((h - 1.6449 * 8.0 / 2.0).abs() < 0.01, "{h}");
        // Relatively less for more load (economies of scale), more for a stricter budget, none
        // at half the requests or with nothing to serve.
        assert!(sqrt_headroom(128.0, 2.0, 0.05) / 128.0 < h / 32.0);
        assert!(sqrt_headroom(32.0, 2.0, 0.01) > h);
        assert_eq!(sqrt_headroom(32.0, 2.0, 0.5), 0.0);
        assert_eq!(sqrt_headroom(0.0, 2.0, 0.05), 0.0);
        assert_eq!(sqrt_headroom(f64::NAN, 2.0, 0.05), 0.0);
    }

    #[test]
    fn a_short_shortage_is_absorbed_and_a_long_one_misses() {
        assert_eq!(miss_fraction(10.0, 10.0, 1.0, 15.0), 0.0);
        // 1 request/s over 10 served: the backlog's wait grows 0.1 s per second; 1.5 s of
        // budget holds the first 15 s.
        assert_eq!(miss_fraction(11.0, 10.0, 1.5, 15.0), 0.0);
        let m = miss_fraction(20.0, 10.0, 1.5, 15.0);
        assert!((m - 0.9).abs() < 1e-12, "{m}");
        assert_eq!(miss_fraction(5.0, 0.0, 1.0, 15.0), 1.0);
    }

    #[test]
    fn the_attainment_sets_how_much_of_the_tail_is_covered() {
        // 19 quiet samples and one burst five times as high.
        let mut d = vec![10.0; 19];
        d.push(50.0);
        // 95 %: the burst holds 50 / 240 of the requests, more than the 5 % allowed: covered.
        let s95 = slots_for(&d, 0.05, 0.0, 15.0);
        assert!(s95 > 40.0, "{s95}");
        // With the burst a small share of requests, it is left to miss.
        let mut d2 = vec![10.0; 99];
        d2.push(30.0);
        let s = slots_for(&d2, 0.05, 0.0, 15.0);
        assert!((s - 10.0).abs() < 0.01, "{s}");
        // Smooth traffic gets no headroom at all: a little less than its rate even, as the
        // queue absorbs a shortfall whose wait stays within the budget for most of a sample
        // (S / (8 - S) x 1 s >= 0.95 x 15 s: S >= 7.47).
        let s = slots_for(&[8.0; 20], 0.05, 1.0, 15.0);
        assert!((s - 7.47).abs() < 0.01, "{s}");
        assert_eq!(slots_for(&[0.0; 5], 0.05, 1.0, 15.0), 0.0);
    }
}
